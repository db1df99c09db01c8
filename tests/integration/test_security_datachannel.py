"""A caller that stops reading its data channel, attacked with a real aiortc peer.

The caller's SCTP stops taking data (its DATA chunks are ignored, so nothing it is sent is ever
acknowledged) while it keeps sending ``client-ready`` requests, each answered with a
``bot-ready``. Without a bound aiortc would queue every answer for ever. The call's queue holds
at most its bound (``call.outqueue``), drops and counts the excess
(``voicegate_conversation_data_channel_messages_dropped_total``), and ends the call that stays
over the bound. A 60,000-character request id is never echoed back.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.call import outqueue
from voicegate.signaling.app import SESSIONS
from voicegate.signaling.keys import METRICS
from voicegate.testing.client import CallClient

pytestmark = [pytest.mark.timeout(120)]


def _ready(client: CallClient, id_: str) -> None:
    message = {"label": "rtvi-ai", "type": "client-ready", "id": id_, "data": {}}
    client._channel.send(json.dumps(message))


async def _ignore(_chunk: Any) -> None:
    """The caller's SCTP taking no more data: nothing sent to it is acknowledged."""


async def test_a_caller_that_stops_reading_is_bounded_counted_and_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outqueue, "OVERFLOW_END_S", 1.0)
    async with running_server(EchoBackend()) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(90):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                huge = "i" * 60_000
                _ready(client, huge)
                answer = await client.wait_for("bot-ready", 10, lambda m: m.get("id") != huge)
                assert len(json.dumps(answer)) < 1000  # the id was not echoed
                assert not [m for m in client.of_type("bot-ready") if m.get("id") == huge]
                session = app[SESSIONS][client.pc_id]
                client.pc.sctp._receive_data_chunk = _ignore  # type: ignore[method-assign]
                queue = session._outbox._queue
                assert queue is not None
                channel = queue.channel
                worst_held = worst_buffered = 0
                sent = 0
                while not session.closed.is_set() and sent < 200_000:
                    _ready(client, uuid.uuid4().hex)
                    sent += 1
                    if sent % 50 == 0:
                        await asyncio.sleep(0.01)  # let both ends run
                    worst_held = max(worst_held, queue.held_bytes)
                    worst_buffered = max(worst_buffered, channel.bufferedAmount)
                await asyncio.wait_for(session.closed.wait(), 10)
        finally:
            await client.close()
        assert session.close_reason == "data-channel-overflow"
        assert worst_held <= outqueue.MAX_HELD_BYTES
        assert worst_buffered <= outqueue.HIGH_WATER_BYTES + 1000  # one message past the mark
        assert session.messages_dropped > 0
        metrics = app[METRICS].render()
        (line,) = [
            ln
            for ln in metrics.splitlines()
            if ln.startswith("voicegate_conversation_data_channel_messages_dropped_total")
        ]
        assert float(line.rsplit(" ", 1)[1]) >= session.messages_dropped
