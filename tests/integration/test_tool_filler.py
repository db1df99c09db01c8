"""A slow tool's filler, through the production Bedrock path (the real AWS SDK against the
stand-in playing Nova 2, a real aiortc caller, a real HTTP tool service on loopback): while the
tool has not answered after ``filler_after_s`` the caller hears the agent's filler, once, then
the result; a tool that answers in time gets none. The tool service holds its answer until the
test releases it, so "slow" is an event, not a guess about timing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.conversation import Listener
from tests.support.server import running_server
from tests.support.tool_server import ToolServer, tool_server
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.conversation import (
    Conversation,
    ConversationSettings,
    ToolCallFinished,
    ToolFiller,
    ToolRegistry,
)
from voicegate.conversation.tools import Tool
from voicegate.signaling.keys import SESSIONS
from voicegate.sonic import FILLER_PREFIX
from voicegate.standin import StandIn
from voicegate.testing.client import CallClient, load_wav

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
FILLER = "Hold on, I am checking your order."


def agents_file(tmp_path: Path, tool_url: str, filler_after_s: float, timeout_s: float = 30) -> str:
    (tmp_path / "tool.secret").write_text(SECRET + "\n")
    path = tmp_path / "agents.toml"
    path.write_text(
        f"""
default_agent = "support"

[agents.support]
system_prompt = "Help with orders. scenario:tool:order_status"
tools = ["order_status"]

[tools.order_status]
description = "Look up the status of the caller's order."
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string" }} }} }}
filler_after_s = {filler_after_s}
filler = "{FILLER}"

[tools.order_status.http]
url = "{tool_url}"
timeout_s = {timeout_s}
secret_file = "tool.secret"
"""
    )
    return str(path)


def _bedrock(transport: str) -> BedrockBackend:
    return BedrockBackend(
        BedrockSettings(
            region="us-east-1", send_timeout=3.0, close_timeout=1.0, transport=transport
        )
    )


def _said(client: CallClient) -> list[str]:
    return [str(m["data"]["text"]) for m in client.of_type("bot-transcription")]


async def test_a_slow_tool_gets_one_filler_before_its_result(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str, tmp_path: Path
) -> None:
    speech = load_wav(speech_wav("where is my order"))
    tools = ToolServer(SECRET)
    async with (
        tool_server(tools) as base,
        running_server(
            _bedrock(bedrock_transport), agents=agents_file(tmp_path, f"{base}/slow", 0.2)
        ) as (url, app),
    ):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                client.mic.play(speech)
                await tools.wait_requests(1)
                await client.wait_for(
                    "bot-transcription", 30, lambda m: FILLER in m["data"]["text"]
                )
                filler = await client.wait_for(
                    "server-message", 5, lambda m: m["data"]["kind"] == "tool-filler"
                )
                tools.release.set()  # the tool answers only now
                await client.wait_for(
                    "bot-transcription", 30, lambda m: "shipped" in m["data"]["text"]
                )
            said = _said(client)
            first_filler = next(i for i, t in enumerate(said) if FILLER in t)
            result = next(i for i, t in enumerate(said) if "shipped" in t)
            assert first_filler < result
            assert sum(FILLER in t for t in said) == 1
            assert filler["data"]["function_name"] == "order_status"
            assert filler["data"]["text"] == FILLER
            stats = app[SESSIONS][client.pc_id].conversation.stats
            assert stats.tool_fillers == 1 and stats.tool_calls == 1
            # The instruction is voicegate's, not the caller's: never a user transcript.
            assert not any(
                "still running" in str(m["data"]["text"])
                for m in client.of_type("user-transcription")
            )
            assert await client.hangup() == 204
        finally:
            await client.close()


async def test_a_tool_that_answers_in_time_gets_no_filler(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str, tmp_path: Path
) -> None:
    speech = load_wav(speech_wav("where is my order"))
    tools = ToolServer(SECRET)
    async with (
        tool_server(tools) as base,
        running_server(
            _bedrock(bedrock_transport), agents=agents_file(tmp_path, f"{base}/ok", 30)
        ) as (url, app),
    ):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                client.mic.play(speech)
                await client.wait_for(
                    "bot-transcription", 30, lambda m: "shipped" in m["data"]["text"]
                )
            assert not any(FILLER in t for t in _said(client))
            assert not [
                m for m in client.of_type("server-message") if m["data"]["kind"] == "tool-filler"
            ]
            assert app[SESSIONS][client.pc_id].conversation.stats.tool_fillers == 0
            assert await client.hangup() == 204
        finally:
            await client.close()


async def test_filler_after_s_zero_means_never(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str, tmp_path: Path
) -> None:
    """The tool never answers and times out after 1 s: any positive delay below that would
    have brought a filler; 0 brings none, only the timeout's error."""
    speech = load_wav(speech_wav("where is my order"))
    tools = ToolServer(SECRET)
    async with (
        tool_server(tools) as base,
        running_server(
            _bedrock(bedrock_transport),
            agents=agents_file(tmp_path, f"{base}/slow", 0, timeout_s=1),
        ) as (url, app),
    ):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                client.mic.play(speech)
                await client.wait_for(
                    "bot-transcription", 30, lambda m: "did not answer" in m["data"]["text"]
                )
            assert not any(FILLER in t for t in _said(client))
            assert app[SESSIONS][client.pc_id].conversation.stats.tool_fillers == 0
            assert await client.hangup() == 204
        finally:
            await client.close()


@pytest.mark.parametrize("model_id", ["amazon.nova-2-sonic-v1:0", "amazon.nova-sonic-v1:0"])
async def test_only_nova_2_streams_get_the_filler_instruction(
    clean_aws_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    bedrock_transport: str,
    model_id: str,
) -> None:
    """Nova 2 takes interactive text while a tool runs and says the filler; Nova Sonic v1 waits
    for the result, so its stream never carries the instruction (the event is still there)."""
    release = asyncio.Event()

    async def lookup() -> dict[str, str]:
        await release.wait()
        return {"answer": "found"}

    tools = ToolRegistry()
    tools.add(
        Tool(
            "slow_lookup",
            "Looks something up slowly.",
            {"type": "object", "properties": {}},
            lookup,
            timeout=30.0,
            filler_after=0.1,
            filler=FILLER,
        )
    )
    async with StandIn("scripted", cert_dir=tmp_path / "certs") as standin:
        for name, value in standin.client_env().items():
            monkeypatch.setenv(name, value)
        backend = BedrockBackend(BedrockSettings(transport=bedrock_transport, model_id=model_id))
        listener = Listener()
        settings = ConversationSettings(system_prompt="scenario:tool:slow_lookup:greet")
        conv = Conversation(backend, settings, tools, listener)
        try:
            await conv.start()
            await listener.until(
                lambda _: any(isinstance(e, ToolFiller) for e in listener.events), 20.0
            )
            nova2 = "nova-2" in model_id
            if nova2:
                await listener.until(lambda _: any(FILLER in t for t in listener.finals()), 20.0)
            release.set()
            await listener.until(lambda _: any("found" in t for t in listener.finals()), 20.0)
            assert any(isinstance(e, ToolCallFinished) for e in listener.events)
            assert conv.stats.tool_fillers == 1
            sent = json.dumps(standin.sessions[-1].events)
            assert (json.dumps(FILLER_PREFIX)[1:-1] in sent) is nova2
            assert any(FILLER in t for t in listener.finals()) is nova2
        finally:
            release.set()
            await conv.close()
            await backend.aclose()
