"""RTVI ``send-text``: typed text from the data channel reaches the conversation, bounded.

The call layer's part is tested here: what it passes to ``Conversation.send_text`` (recorded at
that entry point, so the test does not depend on what a brain does with text), and that bad or
too many messages are answered with errors on the data channel while the call carries on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.call.inbound import MAX_TYPED_TEXTS
from voicegate.call.rtvi import MAX_TEXT_CHARS
from voicegate.conversation import Conversation
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient


def _send(client: CallClient, type_: str, data: Any, id_: str | None = None) -> str:
    id_ = id_ or uuid.uuid4().hex[:8]
    message = {"label": "rtvi-ai", "type": type_, "id": id_, "data": data}
    client._channel.send(json.dumps(message))  # the page's data channel, as the page sends
    return id_


def _text(content: Any, **options: Any) -> dict[str, Any]:
    return {
        "content": content,
        "options": {"run_immediately": True, "audio_response": True, **options},
    }


class Entry:
    """Stands at ``Conversation.send_text``: keeps what arrives; ``gate`` holds each call."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.changed = asyncio.Condition()
        self.gate = asyncio.Event()
        self.gate.set()

    def method(self) -> Any:
        async def send_text(conversation: Conversation, text: str) -> None:
            assert isinstance(conversation, Conversation)
            self.texts.append(text)
            async with self.changed:
                self.changed.notify_all()
            await self.gate.wait()

        return send_text

    async def count(self, n: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.texts) >= n)


async def _error(client: CallClient, id_: str) -> dict[str, Any]:
    msg = await client.wait_for("error", 10, lambda m: m.get("id") == id_)
    assert msg["data"]["fatal"] is False and msg["data"]["kind"] == "send_text"
    return msg


async def test_typed_text_reaches_the_conversation(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = Entry()
    monkeypatch.setattr(Conversation, "send_text", entry.method(), raising=False)
    async with running_server(EchoBackend()) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(40):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                _send(client, "send-text", _text("  what time is it?  "))
                await entry.count(1)
                assert entry.texts == ["what time is it?"]

                # Bad messages: an error each, with the request's id; nothing reaches the model.
                too_long = _send(client, "send-text", _text("x" * (MAX_TEXT_CHARS + 1)))
                assert str(MAX_TEXT_CHARS) in (await _error(client, too_long))["data"]["message"]
                for data in (
                    _text(""),
                    _text("   "),
                    _text(42),
                    {"text": "no content field"},
                    "not an object",
                    _text("hi", run_immediately="yes"),
                    {"content": "hi", "options": ["not", "an", "object"]},
                ):
                    await _error(client, _send(client, "send-text", data))
                exactly = "y" * MAX_TEXT_CHARS
                _send(client, "send-text", _text(exactly))

                # A flood while the model is busy with the last text: at most MAX_TYPED_TEXTS
                # wait, in order; the rest are refused, each with its id.
                entry.gate.clear()
                await entry.count(2)
                flood = [_send(client, "send-text", _text(f"flood {i}")) for i in range(15)]
                await _error(client, flood[-1])
                entry.gate.set()
                await entry.count(2 + MAX_TYPED_TEXTS)
                await asyncio.sleep(0.2)  # nothing more arrives
                assert len(entry.texts) == 2 + MAX_TYPED_TEXTS
                refused = {m.get("id") for m in client.of_type("error")} & set(flood)
                assert refused == set(flood[MAX_TYPED_TEXTS:])
                assert entry.texts[1] == exactly
                assert entry.texts[2:] == [f"flood {i}" for i in range(MAX_TYPED_TEXTS)]

                # The call is alive and well.
                ready = _send(client, "client-ready", {"version": "1.0.0"})
                await client.wait_for("bot-ready", 10, lambda m: m.get("id") == ready)
                assert not app[SESSIONS][client.pc_id].closed.is_set()
                assert await client.hangup() == 204
        finally:
            await client.close()


async def test_without_a_send_text_entry_point_the_page_is_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(Conversation, "send_text", raising=False)
    async with running_server(EchoBackend()) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(30):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                msg = await _error(client, _send(client, "send-text", _text("hello")))
                assert "not supported" in msg["data"]["message"]
                assert not app[SESSIONS][client.pc_id].closed.is_set()
                assert await client.hangup() == 204
        finally:
            await client.close()
