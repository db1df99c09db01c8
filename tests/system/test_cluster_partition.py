"""Network partitions between real nodes: each node and Redis in a network namespace of its own
(tests/support/cluster_netns.py), a link cut by nftables rules inside node A's namespace
(packets dropped, not refused: connections hang as on a cut link). Real aiortc callers on the
cluster network, the echo brain.

1. A cut from B while A's caller moves to B (A still reaches its caller and Redis, so its
   heartbeat is alive): B, unable to open a connection to A, stops waiting for it well before
   the page gives up, adopts the call (fenced), and A, learning it from Redis, closes its copy.
2. A cut from everything while its caller moves to B: B sees A's heartbeats stop and adopts;
   healed, A closes its superseded copy at once and leaves the record alone.
3. A cut from Redis alone for 5 s while its caller stays: the call's audio never stops, B
   adopts nothing, and healed, the record is A's at the same epoch.

Needs root, iproute2, nftables and redis-server: missing in CI fails, elsewhere skips.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aredis

from tests.support.cluster import Node, receiving, start_call
from tests.support.cluster_netns import (
    BRIDGE_IP,
    EDGE_CLUSTER_IP,
    NODE_IPS,
    LoopIn,
    Topology,
    echo_cluster,
    heal,
    partition,
)
from tests.support.cluster_records import record_where
from voicegate.media import ice
from voicegate.testing.client import CallClient

pytestmark = [pytest.mark.timeout(180)]

REDIS_CUT_S = 5.0
"""As long as the chaos suite's Redis cut, ten times a Redis operation's timeout: every
heartbeat and record write A tries meanwhile fails."""


def page_request_timeout_s() -> float:
    """The page's own limit on one HTTP request (web/http.js): a caller waits no longer."""
    text = (Path(__file__).parents[2] / "web" / "http.js").read_text()
    match = re.search(r"HTTP_TIMEOUT_MS = (\d+)", text)
    assert match is not None
    return int(match.group(1)) / 1000


async def owned_by(r: aredis.Redis, pc_id: str, node: str) -> None:
    """Until the call's record names ``node`` with the conversation's first exchange in it."""
    await record_where(r, pc_id, node, messages=2)


async def sessions_of(node: Node, count: int) -> None:
    while True:  # the node's call count, asked until it is ``count``
        if (await node.json("/healthz"))["sessions"] == count:
            return
        await asyncio.sleep(0.1)


async def move_across(topo: Topology, nodes: dict[str, Node], cut: Sequence[str] | None) -> None:
    """A's caller moves to B while A is cut off from ``cut`` (None: from everything)."""
    a, b = nodes["a"], nodes["b"]
    r = aredis.Redis.from_url(topo.redis_url, decode_responses=True)
    old = await start_call(a.url)
    moved: CallClient | None = None
    try:
        async with asyncio.timeout(90):
            await owned_by(r, old.pc_id, "node-a")
            partition(topo, "a", cut)
            try:
                moved = CallClient(b.url, token=old.session_token)
                async with asyncio.timeout(page_request_timeout_s()):
                    await moved.connect(restart_of=old.pc_id)
                assert await receiving(moved)
                await owned_by(r, old.pc_id, "node-b")
                if cut is not None:  # A still reaches Redis: it stands down while cut off
                    await sessions_of(a, 0)
            finally:
                heal(topo, "a")
            await sessions_of(a, 0)
            assert await receiving(moved), "the adopted call stopped"
            await owned_by(r, old.pc_id, "node-b")  # A left the record alone
            assert (await b.json("/healthz"))["sessions"] == 1
        if cut is not None:
            # A's heartbeat went on: B gave up on the forward because it could not connect.
            assert '"forward_abandoned_owner_unreachable"' in b.log.read_text()
        for node in (a, b):
            assert '"status": 500' not in node.log.read_text()
    finally:
        await old.close()
        if moved is not None:
            await moved.close()
        await r.aclose()


async def stay_through_a_redis_cut(topo: Topology, nodes: dict[str, Node]) -> None:
    """A's caller stays on A while A cannot reach Redis for REDIS_CUT_S."""
    a, b = nodes["a"], nodes["b"]
    r = aredis.Redis.from_url(topo.redis_url, decode_responses=True)
    call = await start_call(a.url)
    try:
        async with asyncio.timeout(90):
            await owned_by(r, call.pc_id, "node-a")
            epoch = (await r.hgetall(f"vg:call:{call.pc_id}"))["epoch"]
            partition(topo, "a", [BRIDGE_IP])
            try:
                # The whole cut long the call's audio keeps coming, and nobody takes it over.
                frames = round(REDIS_CUT_S / 0.020)
                assert await receiving(call, frames, REDIS_CUT_S + 5), "audio stopped in the cut"
                assert (await a.json("/healthz"))["sessions"] == 1
                assert (await b.json("/healthz"))["sessions"] == 0
            finally:
                heal(topo, "a")
            assert await receiving(call)
            # The record is A's still, at the same epoch, with the conversation A kept meanwhile.
            await owned_by(r, call.pc_id, "node-a")
            assert (await r.hgetall(f"vg:call:{call.pc_id}"))["epoch"] == epoch
            assert (await b.json("/healthz"))["sessions"] == 0
        for node in (a, b):
            assert '"status": 500' not in node.log.read_text()
    finally:
        await call.close()
        await r.aclose()


async def run_on_edge(
    tmp_path: Path, scenario: Callable[[Topology, dict[str, Node]], Awaitable[None]]
) -> None:
    async with echo_cluster(tmp_path) as (topo, nodes):
        edge = LoopIn(topo.ns("edge"))
        # The caller offers its address on the cluster network (the tests' default: loopback).
        ice.configure_host_addresses([EDGE_CLUSTER_IP])
        try:
            await edge.run(scenario(topo, nodes))
        finally:
            ice.configure_host_addresses(["127.0.0.1"])
            edge.stop()


async def test_a_call_moving_across_a_node_partition_is_adopted_and_the_owner_stands_down(
    tmp_path: Path,
) -> None:
    await run_on_edge(tmp_path, lambda topo, nodes: move_across(topo, nodes, [NODE_IPS["b"]]))


async def test_a_call_whose_node_is_cut_off_from_everything_moves_and_the_healed_node_yields(
    tmp_path: Path,
) -> None:
    await run_on_edge(tmp_path, lambda topo, nodes: move_across(topo, nodes, None))


async def test_a_call_stays_on_its_node_while_the_node_is_cut_off_from_redis(
    tmp_path: Path,
) -> None:
    await run_on_edge(tmp_path, stay_through_a_redis_cut)
