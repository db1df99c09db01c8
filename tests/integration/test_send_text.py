"""RTVI ``send-text``: typed text from the data channel reaches the conversation, bounded.

The call layer's part is tested here: what it passes to ``Conversation.send_text`` (recorded at
that entry point, so the test does not depend on what a brain does with text), and that bad or
too many messages are answered with errors on the data channel while the call carries on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.server import running_server
from tests.support.typed_text import Entry, send_rtvi, text_data
from voicegate.backends.echo import EchoBackend
from voicegate.call.inbound import MAX_TYPED_TEXTS
from voicegate.call.rtvi import MAX_TEXT_CHARS
from voicegate.conversation import Conversation
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient


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
                send_rtvi(client, "send-text", text_data("  what time is it?  "))
                await entry.count(1)
                assert entry.texts == ["what time is it?"]

                # Bad messages: an error each, with the request's id; nothing reaches the model.
                too_long = send_rtvi(client, "send-text", text_data("x" * (MAX_TEXT_CHARS + 1)))
                assert str(MAX_TEXT_CHARS) in (await _error(client, too_long))["data"]["message"]
                for data in (
                    text_data(""),
                    text_data("   "),
                    text_data(42),
                    {"text": "no content field"},
                    "not an object",
                    text_data("hi", run_immediately="yes"),
                    {"content": "hi", "options": ["not", "an", "object"]},
                ):
                    await _error(client, send_rtvi(client, "send-text", data))
                exactly = "y" * MAX_TEXT_CHARS
                send_rtvi(client, "send-text", text_data(exactly))

                # A flood while the model is busy with the last text: at most MAX_TYPED_TEXTS
                # wait, in order; the rest are refused, each with its id.
                entry.gate.clear()
                await entry.count(2)
                flood = [send_rtvi(client, "send-text", text_data(f"flood {i}")) for i in range(15)]
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
                ready = send_rtvi(client, "client-ready", {"version": "1.0.0"})
                await client.wait_for("bot-ready", 10, lambda m: m.get("id") == ready)
                assert not app[SESSIONS][client.pc_id].closed.is_set()
                assert await client.hangup() == 204
        finally:
            await client.close()


async def test_a_text_the_conversation_refuses_is_told_to_the_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuse(conversation: Conversation, text: str) -> None:
        raise RuntimeError("the model stream is gone")

    monkeypatch.setattr(Conversation, "send_text", refuse)
    async with running_server(EchoBackend()) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(30):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                msg = await _error(client, send_rtvi(client, "send-text", text_data("hello")))
                assert "could not be sent" in msg["data"]["message"]
                assert not app[SESSIONS][client.pc_id].closed.is_set()
                assert await client.hangup() == 204
        finally:
            await client.close()
