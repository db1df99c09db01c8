"""The Bedrock stand-in for benchmarks, in its own process, with the brain a workload needs:

- ``echo`` (markers): every chunk straight back, zero think time; it also notes when each marker
  tone reaches it, for one-way latencies;
- ``echo-live`` (the long-call experiment, scenarios/long_calls.py): the same echo, except for
  audio that arrives in a burst well ahead of real time, i.e. what a gateway replays into a
  renewed stream; an echo answers that audio a second time, a model does not answer twice;
- ``turns`` (turns): the stand-in's turns brain (standin/scripted_turns.py): each turn answered
  once, ``--end-silence`` + ``--think`` seconds after it ends, with the turn played back.

    python -m benchmarks.systems.standin_proc --cert-dir DIR --marks FILE [--brain turns]
        [--session-limit S]

Prints one ``STANDIN {json}`` line (endpoint, CA file, keys; plus ``think_ms`` for turns) once
listening; runs until its standard input closes, then writes the marker arrival times
(``time.monotonic()``, the same clock as every other process's event loop) to FILE as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from voicegate.standin.brains import EchoBrain
from voicegate.standin.factories import BrainFactory
from voicegate.standin.scripted_turns import END_SILENCE_S, THINK_S, TurnsFactory
from voicegate.standin.server import StandIn
from voicegate.testing.signals import Detector

MARKS: list[float] = []


class MarkerEcho(EchoBrain):
    def __init__(self) -> None:
        super().__init__()
        self._detector = Detector(16000, on_marker=MARKS)

    async def on_audio(self, pcm: bytes) -> None:
        self._detector.push(np.frombuffer(pcm, dtype=np.int16), time.monotonic())
        await super().on_audio(pcm)


BURST_GAP_S = 0.015
"""Chunks closer together than this arrive back to back (live audio comes every 20 ms)."""
AHEAD_S = 0.1
"""Audio this far ahead of the wall clock since the last paced chunk is a replayed burst."""


LIVE_CHUNK_MAX_S = 0.05
"""voicegate sends live audio one 20 ms chunk per event and replays in events of 4 chunks."""


class LiveEcho(MarkerEcho):
    """Echoes live audio only. Replayed audio is consumed without an echo: an event carrying
    more than LIVE_CHUNK_MAX_S of audio, or a chunk that arrives back to back with the previous
    one while the audio received since the last paced chunk runs more than AHEAD_S ahead of the
    wall clock. Live jitter (two or three packets at once) stays under AHEAD_S and is echoed.
    An experiment, not a model of Nova Sonic; speech that reached the gateway during the
    handover itself travels in the replay, so its markers are not echoed either."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped_s = 0.0
        self._last = 0.0
        self._anchor = 0.0  # wall time of the last paced chunk
        self._since = 0.0  # audio seconds received since then

    async def on_audio(self, pcm: bytes) -> None:
        now = time.monotonic()
        seconds = len(pcm) / 2 / 16000
        if now - self._last >= BURST_GAP_S:
            self._anchor, self._since = now, 0.0
        self._last = now
        self._since += seconds
        if seconds > LIVE_CHUNK_MAX_S or self._since - (now - self._anchor) > AHEAD_S:
            self.skipped_s += seconds
            self._detector.push(np.frombuffer(pcm, dtype=np.int16), now)
            return
        await super().on_audio(pcm)


class MarkerEchoFactory:
    name = "echo"

    def __init__(self, live_only: bool = False) -> None:
        self.live_only = live_only

    async def open(self) -> MarkerEcho:
        return LiveEcho() if self.live_only else MarkerEcho()

    async def warm(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def main(args: argparse.Namespace) -> None:
    factory: BrainFactory
    extra: dict[str, Any] = {}
    if args.brain == "turns":
        turns = TurnsFactory(args.end_silence, args.think)
        factory, extra["think_ms"] = turns, turns.think_ms
    else:
        factory = MarkerEchoFactory(live_only=args.brain == "echo-live")
    async with StandIn(
        "echo" if args.brain == "echo-live" else args.brain,
        cert_dir=args.cert_dir,
        factory=factory,
        max_sessions=512,
        session_limit=args.session_limit,
    ) as s:
        print("STANDIN " + json.dumps(s.client_env() | extra), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.to_thread(args.marks.write_text, json.dumps(MARKS))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--marks", type=Path, required=True)
    parser.add_argument("--brain", choices=("echo", "echo-live", "turns"), default="echo")
    parser.add_argument("--session-limit", type=float, default=None)
    parser.add_argument("--end-silence", type=float, default=END_SILENCE_S)
    parser.add_argument("--think", type=float, default=THINK_S)
    asyncio.run(main(parser.parse_args()))
