"""Audio replayed to a recovered stream is paced, not sent in one burst.

AWS's input guidance (Nova 2 user guide, "Input events", audio streaming) is audio "streamed in
real-time as they're captured". A stream that fails while the caller speaks leaves speech the
model never transcribed; the new stream gets it replayed. Real parts: an aiortc peer ->
voicegate -> the real AWS SDK -> the stand-in, whose session record keeps when each audioInput
arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.server import running_server
from tests.support.standin import scripted_without_failures
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.conversation.legs import REPLAY_EVENT_S, replay_pace
from voicegate.signaling.app import SESSIONS
from voicegate.standin import StandIn
from voicegate.testing.client import CallClient, load_wav

FAIL_AFTER_CHUNKS = 110
"""The first stream fails after 2.2 s of caller audio, while the caller is still talking. The
scenario fails every stream after that many audio events; the recovered one gets its replay in
128 ms events, then ~1.9 s of live audio before it fails in turn, which is time enough."""


@pytest.fixture
async def standin(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bedrock_transport: str
) -> AsyncIterator[StandIn]:
    # No injected failures beyond the scenario's: the second session is the recovered one.
    async with scripted_without_failures(tmp_path / "certs", monkeypatch) as s:
        yield s


def _recoveries(client: CallClient) -> list[dict[str, Any]]:
    return [
        m["data"] for m in client.of_type("server-message") if m["data"].get("kind") == "recovery"
    ]


async def test_replayed_speech_reaches_the_new_stream_paced_not_in_a_burst(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str
) -> None:
    words = load_wav(speech_wav("tell me a long story about the sea and the ships on it"))
    backend = BedrockBackend(
        BedrockSettings(
            region="us-east-1", send_timeout=3.0, close_timeout=1.0, transport=bedrock_transport
        )
    )
    prompt = f"scenario:exception:internal_server:{FAIL_AFTER_CHUNKS}"
    async with running_server(backend, system_prompt=prompt) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                rate = app[SESSIONS][client.pc_id].conversation.input_rate
                client.mic.play(np.concatenate([words, words]))
                await client.wait_for(
                    "server-message", 20, lambda m: m["data"].get("kind") == "recovery"
                )
                second = await standin.session(1)
                # The replay, then live audio: wait until the stand-in has it all and a little
                # more (the scenario fails this stream too, after FAIL_AFTER_CHUNKS events).
                await second.until(lambda r: r.audio_seconds >= replayed_s(client) + 0.2)
            assert await client.hangup() == 204
        finally:
            await client.close()
    first = standin.sessions[0]
    assert first.outcome.startswith("exception")
    recovery = _recoveries(client)[0]
    assert recovery["reason"] == "internal_server_error" and recovery["stream"] == 2
    replay_s = replayed_s(client)
    assert replay_s >= 1.0  # the caller was mid-sentence: a real replay, not a pre-roll
    # The replay's events, in arrival order (the first audio of the new stream; 128 ms each).
    event_bytes = round(REPLAY_EVENT_S * rate) * 2
    arrivals = list(second.audio_arrivals)
    count = -(-round(replay_s * rate * 2) // event_bytes)
    replay = arrivals[:count]
    assert all(size == event_bytes for _, size in replay[:-1])
    # A burst puts all of it on the wire within milliseconds; paced, the audio before the last
    # event takes its share of time at the pace (half of it here, for the machine's jitter).
    ahead_s = sum(size for _, size in replay[:-1]) / 2 / rate
    span = replay[-1][0] - replay[0][0]
    assert span >= ahead_s / replay_pace(replay_s) / 2, (span, ahead_s, replay_pace(replay_s))


def replayed_s(client: CallClient) -> float:
    recoveries = _recoveries(client)
    return float(recoveries[0]["replayed_ms"]) / 1000 if recoveries else 0.0
