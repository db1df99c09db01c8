"""``--max-calls-per-subject`` is the node's limit, not each worker's.

The attack: with a limit of 1 and ``--workers 2``, one subject opens two calls at once (the
supervisor spreads offers over the workers, each of which counted only its own calls: both got
200). Now the supervisor sums the workers' counts (and the offers still in flight): the second
call is refused with 429 ``subject_limit``; another subject is not affected; once the first call
hangs up, the subject may call again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.cluster import SECRET, free_port, serve_node, two_nodes
from voicegate.signaling import auth
from voicegate.testing.client import CallClient, OfferRefused

pytestmark = [pytest.mark.timeout(180)]


async def _call(url: str, subject: str) -> CallClient:
    client = CallClient(url, token=auth.mint(SECRET, 600, subject=subject))
    try:
        await client.connect()
    except BaseException:
        await client.close()
        raise
    return client


async def test_one_subject_cannot_hold_a_call_per_worker(tmp_path: Path) -> None:
    port = free_port()
    args = (
        "--backend", "echo", "--port", str(port), "--workers", "2",
        "--max-calls-per-subject", "1",
    )  # fmt: skip
    async with serve_node(tmp_path, *args) as node:
        first = await _call(node.url, "alice")
        other: CallClient | None = None
        try:
            with pytest.raises(OfferRefused) as refused:
                await (await _call(node.url, "alice")).close()
            assert refused.value.status == 429
            assert "subject" in str(refused.value)
            other = await _call(node.url, "bob")  # another subject has its own room
            workers = (await node.json("/healthz"))["workers"]
            assert sorted(w["sessions"] for w in workers) == [1, 1]  # one call on each
        finally:
            if other is not None:
                await other.hangup()
                await other.close()
            await first.hangup()
            await first.close()
        async with asyncio.timeout(20):
            while (await node.json("/healthz"))["sessions"]:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # the workers' next reports: nothing has an event
        again = await _call(node.url, "alice")
        await again.hangup()
        await again.close()


async def test_one_subject_cannot_hold_a_call_per_node(tmp_path: Path) -> None:
    """With Redis, the limit is the cluster's: a subject at its limit on node A is refused on
    node B (and on B's other worker); after the hang-up it may call on B."""
    limit = ("--max-calls-per-subject", "1")
    async with two_nodes(tmp_path, limit, (*limit, "--workers", "2")) as (_, a, b):
        first = await _call(a.url, "alice")
        try:
            with pytest.raises(OfferRefused) as refused:
                await (await _call(b.url, "alice")).close()
            assert refused.value.status == 429 and "cluster" in str(refused.value)
            other = await _call(b.url, "bob")
            await other.hangup()
            await other.close()
        finally:
            await first.hangup()
            await first.close()
        async with asyncio.timeout(20):
            while True:  # the end reaches Redis soon after the hang-up: nothing to wait on
                try:
                    again = await _call(b.url, "alice")
                    break
                except OfferRefused:
                    await asyncio.sleep(0.1)
        await again.hangup()
        await again.close()
