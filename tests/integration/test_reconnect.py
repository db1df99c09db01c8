"""Recovery from model stream failures and from the browser's connection dropping.

Everything is real: an aiortc peer -> voicegate -> the real AWS SDK -> the stand-in, whose
scripted brain kills its stream mid-reply or mid-tool-call (``:once``: only the first stream of
the call, so the reconnected one carries on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import running_server
from tests.support.standin import client_texts
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.signaling.app import SESSIONS
from voicegate.standin import StandIn
from voicegate.testing.client import CallClient, load_wav


def _backend(transport: str) -> BedrockBackend:
    return BedrockBackend(
        BedrockSettings(
            region="us-east-1",
            send_timeout=3.0,
            close_timeout=1.0,
            open_timeout=3.0,
            transport=transport,
        )
    )


def _kinds(client: CallClient, kind: str) -> list[dict[str, Any]]:
    return [m["data"] for m in client.of_type("server-message") if m["data"].get("kind") == kind]


async def test_stream_reset_mid_reply_recovers_and_resends_the_unanswered_turn(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str
) -> None:
    speech = load_wav(speech_wav("hello, can you hear me"))
    async with running_server(_backend(bedrock_transport), system_prompt="scenario:reset:once") as (
        url,
        app,
    ):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                conv = app[SESSIONS][client.pc_id].conversation
                client.mic.play(speech)
                await client.wait_for("bot-llm-text", 15)  # the reply started, then the reset
                await client.wait_for(
                    "server-message", 15, lambda m: m["data"].get("kind") == "recovery"
                )
                client.mic.play(speech)
                await client.wait_for("bot-transcription", 20)  # a whole reply this time
            assert not client.of_type("error")
            (recovery,) = _kinds(client, "recovery")
            assert recovery["reason"] == "stream_lost" and recovery["stream"] == 2
            assert conv.stats.recoveries == 1 and conv.stats.failures == {"stream_lost": 1}
            assert len(client.of_type("user-transcription")) == 2
            first, second = list(standin.sessions)[:2]
            assert first.outcome == "reset"
            # The turn the reset cut off was re-sent to the new stream as interactive USER text
            # right after its audio content opened (the model answers it), not buried in the
            # non-interactive history (where the model would wait for the user to repeat it).
            heard = client.of_type("user-transcription")[0]["data"]["text"]
            texts = client_texts(second)
            assert ("USER", True, heard, True) in texts
            assert not any(text == heard and not interactive for _, interactive, text, _ in texts)
            names = second.input_names()
            audio = names.index("audioInput")
            assert names[audio - 4 : audio] == [
                "contentStart",  # AUDIO
                "contentStart",  # TEXT, USER, interactive
                "textInput",
                "contentEnd",
            ]
            assert conv.stats.turns_resent == 1
            assert await client.hangup() == 204
        finally:
            await client.close()


async def test_stream_reset_mid_tool_call_answers_the_call_and_carries_on(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str
) -> None:
    speech = load_wav(speech_wav("what time is it"))
    prompt = "scenario:tool:get_current_time:reset:once"
    async with running_server(_backend(bedrock_transport), system_prompt=prompt) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                client.mic.play(speech)
                await client.wait_for("llm-function-call", 15)
                await client.wait_for(
                    "server-message", 15, lambda m: m["data"].get("kind") == "recovery"
                )
                client.mic.play(speech)
                done = await client.wait_for(
                    "bot-transcription", 20, lambda m: "tool returned" in m["data"]["text"]
                )
            assert "get_current_time" in done["data"]["text"]
            calls = [m["data"]["tool_call_id"] for m in client.of_type("llm-function-call")]
            results = [m["tool_call_id"] for m in _kinds(client, "tool-result")]
            assert len(calls) == 2 and sorted(calls) == sorted(results)  # none left dangling
            assert not client.of_type("error")
            assert standin.sessions[0].outcome == "reset"
        finally:
            await client.close()


async def test_when_every_reconnect_is_refused_the_call_ends_with_an_error(
    standin: StandIn, bedrock_transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream fails after ~1.3 s of audio with a retryable error, and from then on the
    # service throttles every new stream (429 ThrottlingException before the stream opens).
    # Throttling gets its own, longer budget (6 attempts), backed off over milliseconds here.
    import functools

    from voicegate.conversation import ContinuationSettings
    from voicegate.signaling import app as signaling_app

    fast = functools.partial(
        ContinuationSettings, throttle_backoff_s=0.05, throttle_backoff_max_s=0.1
    )
    monkeypatch.setattr(signaling_app, "ContinuationSettings", fast)
    prompt = "scenario:exception:service_unavailable:40"
    async with running_server(_backend(bedrock_transport), system_prompt=prompt) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(40):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                await client.wait_frames(10, 5)  # the first stream is up and hearing audio
                standin.max_sessions = 0
                session = app[SESSIONS][client.pc_id]
                conv = session.conversation
                await client.wait_for("error", 20)
                await session.closed.wait()
            busy, error = client.of_type("error")
            # The page is told the assistant is busy while throttled, then that it gave up.
            assert busy["data"]["kind"] == "throttled" and busy["data"]["fatal"] is False
            assert error["data"]["fatal"] is True
            assert error["data"]["kind"] == "service_unavailable"
            assert "reconnecting did not work" in error["data"]["message"]
            assert "throttling" in error["data"]["message"].lower()
            assert not _kinds(client, "recovery")
            assert conv.stats.recovery_give_ups == 1 and conv.stats.recovery_attempts == 6
            assert conv.stats.failures == {"service_unavailable": 1}
            assert conv.end_reason == "error:service_unavailable"
            assert not app[SESSIONS] and not conv.legs.open_legs and not conv.life.tasks
            assert [r.status for r in standin.rejections] == [429] * 6
        finally:
            await client.close()


async def _drop(client: CallClient) -> None:
    """The client's network vanishes: ICE stops without a DTLS close_notify, as when a laptop
    lid closes or Wi-Fi hands over to cellular (a deliberate close would end the call)."""
    client.mic.stop()
    for transceiver in client.pc.getTransceivers():
        await transceiver.sender.transport.transport.stop()


async def test_browser_reconnect_within_the_grace_period_keeps_the_conversation(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str
) -> None:
    speech = load_wav(speech_wav("hello, can you hear me"))
    async with running_server(_backend(bedrock_transport), system_prompt="scenario:reply") as (
        url,
        app,
    ):
        first, second = CallClient(url), CallClient(url)
        try:
            async with asyncio.timeout(60):
                await first.connect()
                await first.wait_for("bot-ready", 10)
                pc_id = first.pc_id
                old = app[SESSIONS][pc_id]
                conv = old.conversation
                first.mic.play(speech)
                await first.wait_for("bot-transcription", 20)
                await _drop(first)
                answer = await second.connect(restart_of=pc_id)
                assert answer["pc_id"] == pc_id
                await second.wait_for("bot-ready", 10)
                await old.closed.wait()
                new = app[SESSIONS][pc_id]
                assert new is not old and new.conversation is conv and not conv.ended.is_set()
                second.mic.play(speech)
                await second.wait_for("bot-transcription", 20)
                await second.wait_for("bot-stopped-speaking", 10)
            assert second.audio.speech_seconds(300) >= 0.6  # the reply reached the new peer
            assert [role for role, _ in conv.stats.history] == ["USER", "ASSISTANT"] * 2
            assert len(standin.sessions) == 1  # the same model stream all along
            assert await second.hangup() == 204
            assert not app[SESSIONS] and conv.ended.is_set()
        finally:
            await first.close()
            await second.close()


async def test_after_the_grace_period_the_call_is_freed(
    standin: StandIn, bedrock_transport: str
) -> None:
    async with running_server(
        _backend(bedrock_transport), system_prompt="scenario:reply", reconnect_grace=1.0
    ) as (
        url,
        app,
    ):
        client = CallClient(url)
        try:
            async with asyncio.timeout(30):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                await client.wait_frames(25, 5)
                session = app[SESSIONS][client.pc_id]
                await _drop(client)
                await session.closed.wait()  # stall noticed (5 s), then the 1 s grace
                record = standin.sessions[-1]
                await record.closed.wait()
            assert session.close_reason == "connection-stalled"
            assert session.conversation.ended.is_set() and not session.conversation.legs.open_legs
            assert not app[SESSIONS]
            assert record.outcome == "completed"  # the model stream was closed in order
        finally:
            await client.close()
