"""A whole call with the embedded offline brain: spoken words in, a spoken answer out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.components import require
from tests.support.server import running_server
from voicegate.backends.base import Backend
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient, load_wav

pytestmark = pytest.mark.local


@pytest.fixture
async def local_backend() -> AsyncIterator[Backend]:
    try:
        from voicegate.backends.local import LocalBackend

        backend = LocalBackend()
        await backend.warm()
    except ImportError as exc:  # pragma: no cover - depends on the machine
        require(False, f"the local extra is not installed: {exc}")
        raise
    yield backend
    await backend.aclose()


async def test_local_call_transcribes_calls_the_time_tool_and_speaks(
    local_backend: Backend, speech_wav: Callable[[str], Path]
) -> None:
    speech = load_wav(speech_wav("Hello. What time is it?"))
    async with running_server(local_backend) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                t0 = asyncio.get_running_loop().time()
                client.mic.play(speech)
                user = await client.wait_for("user-transcription", 30)
                assert "time" in user["data"]["text"].lower()
                call = await client.wait_for("llm-function-call", 15)
                assert call["data"]["function_name"] == "get_current_time"
                bot = await client.wait_for("bot-transcription", 20)
                assert any(ch.isdigit() for ch in bot["data"]["text"])
                await client.wait_for("bot-started-speaking", 10)
                latency = await client.wait_for(
                    "server-message", 10, lambda m: m["data"].get("kind") == "turn-latency"
                )
                await client.wait_for("bot-stopped-speaking", 20)
            assert client.audio.rms_after(t0) > 100
            assert client.audio.speech_seconds(300) > 0.5
            print(f"local turn latency {latency['data']}")
            assert await client.hangup() == 204
            assert not app[SESSIONS]
        finally:
            await client.close()
