"""A whole call through the production Bedrock path: a real aiortc peer -> voicegate
(--backend bedrock, the real aws-sdk-bedrock-runtime over HTTP/2 + TLS) -> the stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.server import running_server
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.signaling.app import SESSIONS
from voicegate.standin import StandIn
from voicegate.testing.client import CallClient, load_wav


def _backend(transport: str) -> BedrockBackend:
    return BedrockBackend(
        BedrockSettings(
            region="us-east-1", send_timeout=3.0, close_timeout=1.0, transport=transport
        )
    )


async def test_call_through_bedrock_backend_and_standin(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str
) -> None:
    speech = load_wav(speech_wav("hello, can you hear me"))
    async with running_server(
        _backend(bedrock_transport), system_prompt="Be brief. scenario:reply"
    ) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(40):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                t0 = asyncio.get_running_loop().time()
                client.mic.play(speech)
                user = await client.wait_for("user-transcription", 15)
                assert "stand-in heard" in user["data"]["text"]
                await client.wait_for("bot-llm-text", 5)
                await client.wait_for("bot-started-speaking", 5)
                await client.wait_for("bot-transcription", 10)
                await client.wait_for("bot-stopped-speaking", 10)
                await client.wait_for("metrics", 5)
            assert client.audio.rms_after(t0) > 100
            assert client.audio.speech_seconds(300) >= 0.6  # the stand-in's 1 s reply
            assert await client.hangup() == 204
            assert not app[SESSIONS]
        finally:
            await client.close()
        record = standin.sessions[-1]
        async with asyncio.timeout(10):
            await record.closed.wait()
        # Every event was signed in an unbroken chain, and the session was closed in order.
        assert record.signatures_verified == record.envelopes
        assert record.closed_in_order()
        names = record.input_names()
        assert names[:4] == ["sessionStart", "promptStart", "contentStart", "textInput"]
        assert names[-3:] == ["contentEnd", "promptEnd", "sessionEnd"]


async def test_barge_in_silences_the_outbound_track_within_one_frame(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str
) -> None:
    speech = load_wav(speech_wav("tell me a long story please"))
    interrupt = load_wav(speech_wav("stop"))
    async with running_server(_backend(bedrock_transport), system_prompt="scenario:barge_in") as (
        url,
        app,
    ):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                session = app[SESSIONS][client.pc_id]
                loop = asyncio.get_running_loop()
                taken: list[tuple[float, bool]] = []
                flushed: list[float] = []
                real_take, real_flush = session.playout._take, session.on_flush

                def take() -> Any:
                    pcm = real_take()
                    taken.append((loop.time(), pcm is not None))
                    return pcm

                def flush() -> int:
                    flushed.append(loop.time())
                    return real_flush()

                session.playout._take = take  # type: ignore[method-assign]
                session.on_flush = flush  # type: ignore[method-assign]
                session.conversation.listener = session
                client.mic.play(speech)
                await client.wait_for("bot-started-speaking", 20)
                await asyncio.sleep(1.0)  # the 10 s reply is playing
                client.mic.play(interrupt)
                msg = await client.wait_for("bot-interrupted", 10)
                assert msg["data"]["dropped_ms"] >= 200  # the stand-in runs 0.5 s ahead of playback
                await client.wait_for(
                    "bot-stopped-speaking", 5, lambda m: m["data"].get("interrupted") is True
                )
                await asyncio.sleep(0.3)
            assert len(flushed) == 1
            before = [audio for t, audio in taken if t < flushed[0]]
            after = [audio for t, audio in taken if flushed[0] <= t < flushed[0] + 0.25]
            assert before[-10:] == [True] * 10  # it was speaking right up to the signal
            assert len(after) >= 10 and not any(after)  # the very next frame was silence
        finally:
            await client.close()
