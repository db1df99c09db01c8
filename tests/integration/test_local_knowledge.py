"""The offline brain answers questions from a knowledge folder: typed and spoken, real calls."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.components import require
from tests.support.server import running_server
from voicegate.agents.knowledge import knowledge_tool, open_knowledge
from voicegate.agents.spec import KnowledgeDef
from voicegate.backends.base import Backend
from voicegate.conversation.tools import ToolRegistry, default_tools
from voicegate.testing.client import CallClient, load_wav

pytestmark = pytest.mark.local

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kb"


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


def _tools() -> ToolRegistry:
    registry = default_tools()
    sources = open_knowledge({"handbook": KnowledgeDef(name="handbook", path=str(EXAMPLES))})
    registry.add(knowledge_tool(list(sources.values())))
    return registry


def _bot_says(fragment: str) -> Callable[[dict[str, object]], bool]:
    def check(message: dict[str, object]) -> bool:
        data = message["data"]
        return isinstance(data, dict) and fragment.lower() in str(data.get("text", "")).lower()

    return check


async def test_typed_question_is_answered_from_the_knowledge(local_backend: Backend) -> None:
    async with running_server(local_backend, tools=_tools()) as (url, _app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                t0 = asyncio.get_running_loop().time()
                message = {
                    "label": "rtvi-ai",
                    "type": "send-text",
                    "id": uuid.uuid4().hex[:8],
                    "data": {
                        "content": "Can I get a refund for gift cards?",
                        "options": {"run_immediately": True, "audio_response": True},
                    },
                }
                client._channel.send(json.dumps(message))  # as the page sends it
                call = await client.wait_for("llm-function-call", 15)
                assert call["data"]["function_name"] == "search_knowledge"
                await client.wait_for("bot-transcription", 20, _bot_says("gift cards"))
                await client.wait_for("bot-stopped-speaking", 30)
            assert client.audio.rms_after(t0) > 100
            assert await client.hangup() == 204
        finally:
            await client.close()


async def test_spoken_question_is_answered_from_the_knowledge(
    local_backend: Backend, speech_wav: Callable[[str], Path]
) -> None:
    speech = load_wav(speech_wav("How long does standard shipping take?"))
    async with running_server(local_backend, tools=_tools()) as (url, _app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(90):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                t0 = asyncio.get_running_loop().time()
                client.mic.play(speech)
                user = await client.wait_for("user-transcription", 30, lambda m: m["data"]["final"])
                assert "shipping" in user["data"]["text"].lower()
                call = await client.wait_for("llm-function-call", 15)
                assert call["data"]["function_name"] == "search_knowledge"
                await client.wait_for("bot-transcription", 20, _bot_says("business days"))
                await client.wait_for("bot-stopped-speaking", 30)
            assert client.audio.rms_after(t0) > 100
            assert await client.hangup() == 204
        finally:
            await client.close()


async def test_a_question_the_knowledge_does_not_cover_is_quoted(local_backend: Backend) -> None:
    async with running_server(local_backend, tools=_tools()) as (url, _app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                message = {
                    "label": "rtvi-ai",
                    "type": "send-text",
                    "id": uuid.uuid4().hex[:8],
                    "data": {"content": "Who painted the Mona Lisa?", "options": {}},
                }
                client._channel.send(json.dumps(message))
                await client.wait_for("bot-transcription", 20, _bot_says("You said"))
            assert await client.hangup() == 204
        finally:
            await client.close()
