"""``resumed`` in the offer's answer: whether a restart (``restart_pc``) carried the call's
conversation on. A page reconnecting after its server restarted lands on a pc_id the server no
longer has; the answer says ``resumed: false`` so the page can tell the user the history is gone."""

from __future__ import annotations

import asyncio
import uuid

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient


async def test_resumed_says_whether_the_conversation_carried_on() -> None:
    async with running_server(EchoBackend()) as (url, app):
        first, again, stranger = CallClient(url), CallClient(url), CallClient(url)
        try:
            async with asyncio.timeout(60):
                answer = await first.connect()
                await first.wait_for("bot-ready", 10)
                assert answer["resumed"] is False  # a new call
                conversation = app[SESSIONS][first.pc_id].conversation
                moved = await again.connect(restart_of=first.pc_id)
                assert moved["pc_id"] == first.pc_id and moved["resumed"] is True
                await again.wait_for("bot-ready", 10)
                assert app[SESSIONS][first.pc_id].conversation is conversation
                # What a restarted server sees: a restart of a pc_id it never had.
                unknown = f"pc-{uuid.uuid4().hex}"
                fresh = await stranger.connect(restart_of=unknown)
                assert fresh["pc_id"] == unknown and fresh["resumed"] is False
                await stranger.wait_for("bot-ready", 10)
                assert await again.hangup() == 204
                assert await stranger.hangup() == 204
        finally:
            for c in (first, again, stranger):
                await c.close()
