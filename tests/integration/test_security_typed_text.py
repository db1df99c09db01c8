"""Typed text is rate-limited per call: a caller scripting ``send-text`` cannot run up the
model bill. The attack: one call sends texts as fast as it can; past the burst every text is
refused with an error that carries its id, counted in
``voicegate_conversation_user_texts_rate_limited_total``, and the call goes on. The bucket's
clock is held still so the test decides when it refills."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.server import running_server
from tests.support.typed_text import Entry, send_rtvi, text_data
from voicegate.backends.echo import EchoBackend
from voicegate.call import inbound
from voicegate.call.inbound import TYPED_TEXT_BURST, TYPED_TEXT_PER_MINUTE
from voicegate.conversation import Conversation
from voicegate.signaling.app import SESSIONS
from voicegate.signaling.keys import METRICS
from voicegate.testing.client import CallClient


async def _one(client: CallClient, entry: Entry, content: str) -> bool:
    """Send a text and wait for its fate: True if the conversation got it, False if refused."""
    before = len(entry.texts)
    id_ = send_rtvi(client, "send-text", text_data(content))
    arrived = asyncio.ensure_future(entry.count(before + 1))
    refused = asyncio.ensure_future(client.wait_for("error", 10, lambda m: m.get("id") == id_))
    done, pending = await asyncio.wait({arrived, refused}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if refused in done:
        msg: dict[str, Any] = refused.result()
        assert msg["data"]["kind"] == "send_text" and msg["data"]["fatal"] is False
        assert "too many typed messages" in msg["data"]["message"]
        return False
    return True


async def test_a_typed_text_flood_is_refused_past_the_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = Entry()
    monkeypatch.setattr(Conversation, "send_text", entry.method(), raising=False)
    now = [1000.0]
    monkeypatch.setattr(inbound, "_now", lambda: now[0])
    async with running_server(EchoBackend()) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                fates = [
                    await _one(client, entry, f"text {i}") for i in range(TYPED_TEXT_BURST + 6)
                ]
                assert fates == [True] * TYPED_TEXT_BURST + [False] * 6
                assert entry.texts == [f"text {i}" for i in range(TYPED_TEXT_BURST)]
                session = app[SESSIONS][client.pc_id]
                assert session.conversation.stats.user_texts_rate_limited == 6

                # Sustained: one more text per 60 / TYPED_TEXT_PER_MINUTE seconds, not more.
                now[0] += 60.0 / TYPED_TEXT_PER_MINUTE
                assert await _one(client, entry, "after the refill")
                assert not await _one(client, entry, "one too many")
                assert session.conversation.stats.user_texts_rate_limited == 7

                # The counter is on /metrics, and the call goes on.
                (line,) = [
                    ln
                    for ln in app[METRICS].render().splitlines()
                    if ln.startswith("voicegate_conversation_user_texts_rate_limited_total")
                ]
                assert float(line.rsplit(" ", 1)[1]) == 7
                ready = send_rtvi(client, "client-ready", {"version": "1.0.0"})
                await client.wait_for("bot-ready", 10, lambda m: m.get("id") == ready)
                assert not session.closed.is_set()
                assert await client.hangup() == 204
        finally:
            await client.close()
