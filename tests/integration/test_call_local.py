"""A whole call with the embedded offline brain: spoken words in, a spoken answer out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.components import require
from tests.support.server import running_server
from tests.support.tool_server import ToolServer, tool_server
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


async def test_a_slow_time_tool_gets_the_filler_spoken_by_the_offline_brain(
    local_backend: Backend, speech_wav: Callable[[str], Path], tmp_path: Path
) -> None:
    """The offline brain's get_current_time is an HTTP service that holds its answer until the
    filler has been heard: the brain's TTS says the filler, then the time."""
    filler = "Hold on, I am looking at the clock."
    agents = tmp_path / "agents.toml"
    agents.write_text(
        f"""
default_agent = "clock"

[agents.clock]
tools = ["get_current_time"]

[tools.get_current_time]
description = "The current time."
filler_after_s = 0.3
filler = "{filler}"
http = {{ url = "TOOL_URL/slow-clock", timeout_s = 30 }}
"""
    )
    speech = load_wav(speech_wav("Hello. What time is it?"))
    tools = ToolServer()
    async with tool_server(tools) as base:
        agents.write_text(agents.read_text().replace("TOOL_URL", base))
        async with running_server(local_backend, agents=str(agents)) as (url, app):
            client = CallClient(url)
            try:
                async with asyncio.timeout(90):
                    await client.connect()
                    await client.wait_for("bot-ready", 10)
                    client.mic.play(speech)
                    await tools.wait_requests(1, timeout=60)
                    await client.wait_for(
                        "bot-transcription", 30, lambda m: filler in m["data"]["text"]
                    )
                    tools.release.set()
                    await client.wait_for(
                        "bot-transcription", 30, lambda m: "noon" in m["data"]["text"]
                    )
                said = [m["data"]["text"] for m in client.of_type("bot-transcription")]
                assert sum(filler in t for t in said) == 1
                assert [filler in t for t in said].index(True) < ["noon" in t for t in said].index(
                    True
                )
                assert app[SESSIONS][client.pc_id].conversation.stats.tool_fillers == 1
                assert await client.hangup() == 204
            finally:
                await client.close()
