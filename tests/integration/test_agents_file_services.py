"""An agents file with an MCP server and a knowledge folder, served for real: the MCP server is
started by voicegate itself at app start, and a call to the agent reaches both its MCP tool (on
the Bedrock path, real SDK and stand-in) and its knowledge (the offline brain answers a typed
question from the folder)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.components import require
from tests.support.server import running_server
from voicegate.backends.base import Backend
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.signaling.keys import AGENT_SERVICES
from voicegate.standin import StandIn
from voicegate.testing.client import CallClient, load_wav

ROOT = Path(__file__).resolve().parents[2]


def _agents_file(tmp_path: Path, prompt: str) -> str:
    pythonpath = os.pathsep.join([str(ROOT), str(ROOT / "src")])
    text = f"""
default_agent = "helpdesk"

[agents.helpdesk]
description = "Tickets and the handbook"
system_prompt = "{prompt}"
mcp_servers = ["tickets"]
knowledge = ["handbook"]

[mcp_servers.tickets]
command = [{json.dumps(sys.executable)}, "-m", "tests.support.mcp_servers", "stdio"]
cwd = {json.dumps(str(ROOT))}
env = {{ PYTHONPATH = {json.dumps(pythonpath)} }}
tools = ["whoami", "lookup_ticket"]

[knowledge.handbook]
path = {json.dumps(str(ROOT / "examples" / "kb"))}
"""
    path = tmp_path / "agents.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.bedrock
async def test_an_agents_mcp_server_is_started_by_voicegate_and_its_tool_is_spoken(
    tmp_path: Path, standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str
) -> None:
    backend = BedrockBackend(BedrockSettings(region="us-east-1", transport=bedrock_transport))
    speech = load_wav(speech_wav("who are you"))
    agents = _agents_file(tmp_path, "scenario:tool:whoami")
    async with running_server(backend, agents=agents) as (url, app):
        hub = app[AGENT_SERVICES].hub
        assert hub is not None and hub.connected("tickets")
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
            assert '"pid"' in said["data"]["text"]
            assert not client.of_type("error")
            assert await client.hangup() == 204
        finally:
            await client.close()
    assert app[AGENT_SERVICES].hub is None  # stopped with the app


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


@pytest.mark.local
async def test_an_agents_knowledge_answers_a_typed_question(
    tmp_path: Path, local_backend: Backend
) -> None:
    async with running_server(local_backend, agents=_agents_file(tmp_path, "")) as (url, _app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                message = {
                    "label": "rtvi-ai",
                    "type": "send-text",
                    "id": uuid.uuid4().hex[:8],
                    "data": {"content": "Can I get a refund for gift cards?"},
                }
                client._channel.send(json.dumps(message))  # as the page sends it
                call = await client.wait_for("llm-function-call", 15)
                assert call["data"]["function_name"] == "search_knowledge"
                await client.wait_for(
                    "bot-transcription",
                    20,
                    lambda m: "gift card" in str(m["data"].get("text", "")).lower(),
                )
            assert await client.hangup() == 204
        finally:
            await client.close()
