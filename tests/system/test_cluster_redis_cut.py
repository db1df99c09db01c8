"""Call requests while a node is cut off from Redis: two real nodes, a real ``redis-server``
frozen with SIGSTOP (connections hang as on a cut link, no reset), real aiortc callers.

A trickle (PATCH) or hang-up (DELETE) must not be lost: the node serves its own calls, routes
another node's call by the owner it last saw, answers 503 JSON with Retry-After when it knows
none, and a call hung up during the cut has its record marked ended once Redis answers again
(otherwise another node would adopt a call its caller already left).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import aiohttp
import redis.asyncio as aredis

from tests.support.cluster import start_call, token, two_nodes
from tests.support.cluster_records import ECHO, record_where, redis_client
from voicegate.testing.client import CallClient


def bearer(tok: str | None) -> dict[str, str]:
    assert tok is not None
    return {"Authorization": f"Bearer {tok}"}


async def patch(http: aiohttp.ClientSession, url: str, call: CallClient) -> int:
    body = {"pc_id": call.pc_id, "candidates": []}
    async with http.patch(f"{url}/api/offer", json=body, headers=bearer(call.session_token)) as r:
        return r.status


async def ended(r: aredis.Redis, pc_id: str) -> None:
    while True:  # a record's tombstone has no event to wait on
        if await r.hget(f"vg:call:{pc_id}", "ended"):
            return
        await asyncio.sleep(0.05)


async def test_trickle_and_hangup_during_a_redis_cut_are_served_routed_or_refused_retryably(
    tmp_path: Path,
) -> None:
    async with two_nodes(tmp_path, ECHO, ECHO) as (redis_url, a, b), redis_client(redis_url) as r:
        on_b = await start_call(b.url)
        on_a = await start_call(a.url)
        stopped: int | None = None
        try:
            async with asyncio.timeout(60), aiohttp.ClientSession() as http:
                await record_where(r, on_b.pc_id, "node-b", 1)
                await record_where(r, on_a.pc_id, "node-a", 1)
                assert await patch(http, a.url, on_b) == 200  # A looks the owner up: B
                stopped = int((await r.info("server"))["process_id"])
                os.kill(stopped, signal.SIGSTOP)
                # A's own call: served here; B's call: routed by the owner A last saw.
                assert await patch(http, a.url, on_a) == 200
                assert await patch(http, a.url, on_b) == 200
                # A call A never saw: it may be anywhere, so a retryable refusal, not a 404.
                body = {"pc_id": "pc-never-seen", "candidates": []}
                async with http.patch(
                    f"{a.url}/api/offer", json=body, headers=bearer(token())
                ) as resp:
                    assert resp.status == 503
                    assert resp.headers["Retry-After"] == "1"
                    assert (await resp.json())["reason"] == "directory_unreachable"
                for call in (on_a, on_b):
                    async with http.delete(
                        f"{a.url}/api/sessions/{call.pc_id}", headers=bearer(call.session_token)
                    ) as resp:
                        assert resp.status == 204
                os.kill(stopped, signal.SIGCONT)
                stopped = None
                # Both hang-ups reach the records once Redis answers: no call left adoptable.
                await ended(r, on_a.pc_id)
                await ended(r, on_b.pc_id)
                assert not await r.hexists(f"vg:call:{on_a.pc_id}", "state")
            for node in (a, b):
                assert '"status": 500' not in node.log.read_text()
            assert '"routed_by_last_known_owner"' in a.log.read_text()
        finally:
            if stopped is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stopped, signal.SIGCONT)
            await on_a.close()
            await on_b.close()
