"""One owner per call, under faults: two real nodes, a real ``redis-server``, real aiortc callers.

Each call's record carries an epoch that only an adoption increases; every write of a node is
conditional on its epoch. A node that stalls (SIGSTOP) while the other adopts its call must, on
waking, neither rewrite nor delete the record, and must close its stale copy at once. A record
lost with Redis (restarted empty) is written again by the node holding the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from pathlib import Path

import redis.asyncio as aredis

from tests.support.cluster import (
    Node,
    history_saved,
    node_args,
    receiving,
    redis_server,
    serve_node,
    start_call,
    two_nodes,
)
from tests.support.cluster_records import ECHO, record_where, redis_client
from voicegate.testing.client import CallClient


async def until_gone(r: aredis.Redis, key: str) -> None:
    while True:  # a key's expiry has no event to wait on
        if not await r.exists(key):
            return
        await asyncio.sleep(0.05)


async def until_present(r: aredis.Redis, key: str) -> None:
    while True:  # a heartbeat's key, asked until the node wrote it
        if await r.exists(key):
            return
        await asyncio.sleep(0.05)


async def sessions_of(node: Node, count: int) -> None:
    while True:  # the node's call count, asked until it is ``count``
        if (await node.json("/healthz"))["sessions"] == count:
            return
        await asyncio.sleep(0.1)


def typed(text: str) -> str:
    return json.dumps(
        {
            "label": "rtvi-ai",
            "type": "send-text",
            "id": "t1",
            "data": {"content": text, "options": {"run_immediately": True}},
        }
    )


async def test_a_node_woken_from_a_stall_closes_its_superseded_copy_and_keeps_the_record(
    tmp_path: Path,
) -> None:
    async with two_nodes(tmp_path, ECHO, ECHO) as (redis_url, a, b), redis_client(redis_url) as r:
        old = await start_call(a.url)
        moved: CallClient | None = None
        stopped = False
        try:
            async with asyncio.timeout(60):
                await record_where(r, old.pc_id, "node-a", 1)
                os.kill(a.proc.pid, signal.SIGSTOP)
                stopped = True
                await until_gone(r, "vg:node:node-a")  # A's heartbeat expired: B adopts
                moved = CallClient(b.url, token=old.session_token)
                await moved.connect(restart_of=old.pc_id)
                assert await receiving(moved)
                await record_where(r, old.pc_id, "node-b", 2)
                # Something for A's stale copy to do on waking (it lands in A's socket buffer):
                # a turn whose transcript A would save over B's record.
                old._channel.send(typed("are you still there"))
                os.kill(a.proc.pid, signal.SIGCONT)
                stopped = False
                # A learns its copy was superseded and closes it, while its caller's old
                # connection is still open.
                await sessions_of(a, 0)
                rec = await record_where(r, old.pc_id, "node-b", 2)
                await old.close()
                assert await receiving(moved), "the adopted call stopped"
                assert await r.hget(f"vg:call:{old.pc_id}", "owner") == rec["owner"]
                assert (await b.json("/healthz"))["sessions"] == 1
            assert '"call_superseded"' in a.log.read_text()
        finally:
            if stopped:
                os.kill(a.proc.pid, signal.SIGCONT)
            await old.close()
            if moved is not None:
                await moved.close()


async def test_a_node_with_workers_adopts_a_call_whose_owner_died_inside_its_heartbeat_ttl(
    tmp_path: Path,
) -> None:
    # B runs a supervisor: the owner's heartbeat is still in Redis, so B forwards the restart to
    # the dead owner first; the refused forward must end in an adoption here, not in its 503.
    async with two_nodes(tmp_path, ECHO, (*ECHO, "--workers", "2")) as (redis_url, a, b):
        client = await start_call(a.url)
        moved: CallClient | None = None
        try:
            async with asyncio.timeout(60), redis_client(redis_url) as r:
                await record_where(r, client.pc_id, "node-a", 1)
                a.kill()
                moved = CallClient(b.url, token=client.session_token)
                await moved.connect(restart_of=client.pc_id)
                assert moved.pc_id == client.pc_id
                assert await receiving(moved)
                await record_where(r, client.pc_id, "node-b", 2)
            assert '"forward_failed"' in b.log.read_text()  # it did try the dead owner first
        finally:
            await client.close()
            if moved is not None:
                await moved.close()


async def test_records_lost_with_redis_are_rebuilt_and_the_call_still_moves(
    tmp_path: Path,
) -> None:
    # Redis restarted empty: the node holding a quiet call writes its record again (owner,
    # epoch, state), so the call is still adopted when that node dies afterwards.
    async with redis_server(tmp_path) as redis_url:
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        async with (
            serve_node(tmp_path, *node_args(redis_url, "node-a", *ECHO), name="a") as a,
            serve_node(tmp_path, *node_args(redis_url, "node-b", *ECHO), name="b") as b,
        ):
            client = await start_call(a.url)
            moved: CallClient | None = None
            try:
                async with asyncio.timeout(60), redis_client(redis_url) as r:
                    # The call's one turn (start_call's tone) is saved: it is quiet from now.
                    await history_saved(redis_url, client.pc_id, 2)
                    with contextlib.suppress(Exception):
                        await r.shutdown(nosave=True)
                    async with redis_server(tmp_path, port=port):
                        assert not await r.exists(f"vg:call:{client.pc_id}")  # empty indeed
                        await record_where(r, client.pc_id, "node-a", 1)
                        await until_present(r, "vg:node:node-b")
                        a.kill()
                        await until_gone(r, "vg:node:node-a")
                        moved = CallClient(b.url, token=client.session_token)
                        await moved.connect(restart_of=client.pc_id)
                        assert await receiving(moved)
                        await record_where(r, client.pc_id, "node-b", 2)
                assert '"call_record_rebuilt"' in a.log.read_text()
            finally:
                await client.close()
                if moved is not None:
                    await moved.close()


def page_request_timeout_s() -> float:
    """The page's own limit on one HTTP request (web/http.js): a caller waits no longer."""
    text = (Path(__file__).parents[2] / "web" / "http.js").read_text()
    match = re.search(r"HTTP_TIMEOUT_MS = (\d+)", text)
    assert match is not None
    return int(match.group(1)) / 1000


async def test_a_restart_forwarded_to_a_stalled_owner_is_adopted_before_the_page_gives_up(
    tmp_path: Path,
) -> None:
    # A is stalled but its heartbeat has not expired: B forwards the restart to A, gives up on
    # it as soon as A misses its heartbeats, adopts the call itself; when A wakes (and acts on
    # the forwarded request still in its socket buffer, or drops it when past its deadline),
    # A's copy stands down.
    async with two_nodes(tmp_path, ECHO, ECHO) as (redis_url, a, b), redis_client(redis_url) as r:
        old = await start_call(a.url)
        moved: CallClient | None = None
        stopped = False
        try:
            async with asyncio.timeout(60):
                await record_where(r, old.pc_id, "node-a", 1)
                os.kill(a.proc.pid, signal.SIGSTOP)
                stopped = True
                moved = CallClient(b.url, token=old.session_token)
                # The page aborts a request after this long; the caller must be answered.
                async with asyncio.timeout(page_request_timeout_s()):
                    await moved.connect(restart_of=old.pc_id)
                assert await receiving(moved)
                await record_where(r, old.pc_id, "node-b", 2)
                os.kill(a.proc.pid, signal.SIGCONT)
                stopped = False
                await sessions_of(a, 0)
                await old.close()
                assert await receiving(moved), "the adopted call stopped"
                await record_where(r, old.pc_id, "node-b", 2)
                assert (await b.json("/healthz"))["sessions"] == 1
            # B stopped waiting when A's heartbeats stopped, before its forward timeout.
            assert '"forward_abandoned_owner_stalled"' in b.log.read_text()
        finally:
            if stopped:
                os.kill(a.proc.pid, signal.SIGCONT)
            await old.close()
            if moved is not None:
                await moved.close()
