"""Handover gap of stream renewals and recoveries, through the real SDK.

    .venv/bin/python -m benchmarks.renewal_gap [--renewals 20] [--history 12]

The stand-in runs in its own process (``voicegate standin``, scripted brain, scenario ``reply``),
so its signature checks do not compete with the conversation for the event loop the way they do
in the tests. One ``Conversation`` is fed real-time audio (32 ms chunks of silence) and renewed
``--renewals`` times: every other time at a natural point (after the reply to a voiced burst),
the others forced while the user is talking, so that the replay path is measured too; then it
recovers once from a killed stream. Prints the gaps (ms from the old stream's last live audio to
the new stream live) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.standin import cli_standin
from voicegate.audio.chunks import CHUNK_SAMPLES
from voicegate.backends.base import StreamLost
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings, BedrockStream
from voicegate.conversation import (
    Conversation,
    ConversationEvent,
    ConversationSettings,
    default_tools,
)
from voicegate.sonic.events import INPUT_SAMPLE_RATE as MODEL_INPUT_RATE


class Sink:
    def on_audio(self, pcm: bytes) -> None:
        pass

    def on_flush(self) -> int:
        return 0

    def on_event(self, event: ConversationEvent) -> None:
        pass


async def _feed(conv: Conversation, stop: asyncio.Event, voiced: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    t = np.arange(CHUNK_SAMPLES)
    voice = (4000 * np.sin(2 * np.pi * 180 * t / 16000)).astype("<i2").tobytes()
    silence = bytes(CHUNK_SAMPLES * 2)
    start, n = loop.time(), 0
    while not stop.is_set():
        conv.send_audio(voice if voiced.is_set() else silence)
        n += 1
        await asyncio.sleep(max(0.0, start + n * CHUNK_SAMPLES / MODEL_INPUT_RATE - loop.time()))


async def measure(renewals: int, history: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as helpers:
        # Starting and stopping the stand-in's process waits on it: in a thread, off the loop.
        args = ("--brain", "scripted", "--scenario", "reply", "--log-level", "warning")
        standin = cli_standin(Path(workdir), args)
        env = await asyncio.to_thread(helpers.enter_context, standin)
        os.environ.update(env)
        backend = BedrockBackend(BedrockSettings(region=env.get("AWS_REGION", "us-east-1")))
        conv = Conversation(backend, ConversationSettings(), default_tools(), Sink())
        conv.seed(
            [
                turn
                for i in range(history)
                for turn in (
                    ("USER", f"question number {i}, about something or other"),
                    ("ASSISTANT", f"answer number {i}, which is a sentence long"),
                )
            ]
        )
        stop, voiced = asyncio.Event(), asyncio.Event()
        try:
            await conv.start()
            feeder = asyncio.ensure_future(_feed(conv, stop, voiced))
            for i in range(renewals):
                await asyncio.sleep(0.8)
                if i % 2:
                    voiced.set()  # the user is talking: the switch replays their audio
                    await asyncio.sleep(0.5)
                    await conv.renew(force=True)
                    voiced.clear()
                else:
                    await conv.renew(force=False)
            # The live stream dies (as after a network loss): the next send notices it.
            leg = conv.legs.live
            if leg is not None and isinstance(leg.stream, BedrockStream):
                await leg.stream._die(StreamLost("benchmark: stream killed"))
            await asyncio.sleep(2.0)
            stop.set()
            await feeder
        finally:
            await conv.close()
            await backend.aclose()
            await asyncio.to_thread(helpers.close)
    s = conv.stats
    gaps = list(s.handover_gaps_ms)
    natural, replayed = gaps[0::2], gaps[1::2]
    return {
        "renewals": s.renewals,
        "natural_gap_ms": _summary(natural),
        "with_replay_gap_ms": _summary(replayed),
        "prepare_ms": _summary(list(s.prepare_ms)),
        "recovery_gap_ms": [round(g, 1) for g in s.recovery_gaps_ms],
        "history_bytes_per_renewal": s.history_bytes_replayed // max(1, s.renewals),
        "audio_chunks_replayed": s.audio_chunks_replayed,
    }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--renewals", type=int, default=20)
    parser.add_argument("--history", type=int, default=12, help="history turns to replay")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.renewals, args.history)), indent=2))


__all__ = ["main", "measure"]
