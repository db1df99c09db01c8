"""What the system tests read of a cluster's call records in its real ``redis-server``: a
client for the test, and a wait for the record to name its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aredis

from tests.support.cluster import open_state

__all__ = ["ECHO", "record_where", "redis_client"]

ECHO = ("--backend", "echo")


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[aredis.Redis]:
    r = aredis.Redis.from_url(url, decode_responses=True)
    try:
        yield r
    finally:
        await r.aclose()


async def record_where(
    r: aredis.Redis, pc_id: str, node: str, epoch: int | None = None, messages: int = 0
) -> dict[str, Any]:
    """The call's record once it names ``node`` as owner (at ``epoch``, unless None) with a
    conversation state of at least ``messages`` history messages (Redis has no event to wait
    on: ask until it does)."""
    while True:
        rec = await r.hgetall(f"vg:call:{pc_id}")
        if (
            rec.get("owner")
            and json.loads(rec["owner"])["node"] == node
            and (epoch is None or rec.get("epoch") == str(epoch))
            and rec.get("state")
            and _messages(pc_id, rec["state"]) >= messages
        ):
            return dict(rec)
        await asyncio.sleep(0.05)


def _messages(pc_id: str, sealed: str) -> int:
    text = open_state(pc_id, sealed)
    return -1 if text is None else len(json.loads(text)["history"])
