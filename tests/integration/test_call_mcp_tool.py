"""On the Bedrock path (real SDK, stand-in ``scenario:tool:NAME``), a call whose registry holds
an MCP tool calls the real MCP server and speaks its result."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.server import running_server
from voicegate.agents.mcp import McpHub
from voicegate.agents.spec import McpServerDef
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.conversation.tools import ToolRegistry
from voicegate.standin import StandIn
from voicegate.testing.client import CallClient, load_wav

pytestmark = pytest.mark.bedrock

ROOT = Path(__file__).resolve().parents[2]


async def test_bedrock_call_speaks_an_mcp_tool_result(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str
) -> None:
    spec = McpServerDef(
        name="tickets",
        command=(sys.executable, "-m", "tests.support.mcp_servers", "stdio"),
        env=(("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "src")])),),
        cwd=str(ROOT),
    )
    hub = McpHub({"tickets": spec}, start_timeout=60)
    await hub.start()
    try:
        assert hub.connected("tickets")
        registry = ToolRegistry()
        for tool in hub.tools("tickets"):
            registry.add(tool)
        backend = BedrockBackend(BedrockSettings(region="us-east-1", transport=bedrock_transport))
        speech = load_wav(speech_wav("who are you"))
        prompt = "scenario:tool:whoami"
        async with running_server(backend, tools=registry, system_prompt=prompt) as (url, _app):
            client = CallClient(url)
            try:
                async with asyncio.timeout(60):
                    await client.connect()
                    await client.wait_for("bot-ready", 10)
                    client.mic.play(speech)
                    call = await client.wait_for("llm-function-call", 20)
                    assert call["data"]["function_name"] == "whoami"
                    said = await client.wait_for(
                        "bot-transcription", 20, lambda m: "tool returned" in m["data"]["text"]
                    )
                    await client.wait_for("bot-stopped-speaking", 20)
                assert '"pid"' in said["data"]["text"]
                assert not client.of_type("error")
                assert await client.hangup() == 204
            finally:
                await client.close()
    finally:
        await hub.close()
