"""Two voicegate nodes and a real ``redis-server``: forwarding, adoption, drain, Redis outage.

Nodes are separate ``voicegate serve`` processes on 127.0.0.1 with their own ports (not network
namespaces: docs/cluster.md says what that leaves untested). Callers are real aiortc peers; the
model is the echo brain, or the Bedrock stand-in through the real SDK where the test needs to
see what the model was told.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aredis

from tests.support.cluster import (
    SECRET,
    Node,
    follow_drain,
    history_saved,
    node_args,
    receiving,
    redis_server,
    serve_node,
    start_call,
    token,
    two_nodes,
)
from voicegate.signaling import auth
from voicegate.testing.client import CallClient, load_wav


async def active_calls(node: Node) -> int:
    for line in (await node.text("/metrics")).splitlines():
        if line.startswith("voicegate_calls_active"):
            return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError("no voicegate_calls_active in /metrics")


async def test_offer_to_a_full_node_lands_on_the_other_and_requests_follow_the_call(
    tmp_path: Path,
) -> None:
    async with two_nodes(
        tmp_path, ("--backend", "echo", "--max-sessions", "1"), ("--backend", "echo")
    ) as (_, a, b):
        first = await start_call(a.url)
        second = None
        try:
            async with asyncio.timeout(60):
                second = await start_call(a.url)  # A is full: B takes it
                assert await active_calls(a) == 1 and await active_calls(b) == 1
                assert (await b.json("/healthz"))["sessions"] == 1
                # PATCH and DELETE sent to A for B's call reach B.
                auth = {"Authorization": f"Bearer {second.session_token}"}
                async with aiohttp.ClientSession() as http:
                    body = {"pc_id": second.pc_id, "candidates": []}
                    async with http.patch(f"{a.url}/api/offer", json=body, headers=auth) as r:
                        assert r.status == 200, await r.text()
                    wrong = {"pc_id": "pc-nobody", "candidates": []}
                    async with http.patch(f"{a.url}/api/offer", json=wrong, headers=auth) as r:
                        assert r.status == 403  # the token is bound to its own call
                assert await second.hangup() == 204  # second.base_url is A's
                assert await active_calls(b) == 0 and await active_calls(a) == 1
                assert await receiving(first)
        finally:
            await first.close()
            if second is not None:
                await second.close()


async def test_a_burst_of_offers_fills_one_node_to_its_limit_and_the_rest_goes_to_the_other(
    tmp_path: Path,
) -> None:
    # Offers arriving while others still negotiate on A count against A from the moment A
    # takes them: A neither exceeds its limit nor refuses what B has room for.
    room = ("--backend", "echo", "--max-sessions", "2")
    async with two_nodes(tmp_path, room, room) as (_, a, b):
        calls: list[Any] = []
        try:
            async with asyncio.timeout(90):
                tokens = [auth.mint(SECRET, 600, subject=f"burst-{i}") for i in range(4)]
                started = await asyncio.gather(
                    *(start_call(a.url, t) for t in tokens), return_exceptions=True
                )
                calls = [c for c in started if isinstance(c, CallClient)]
                assert len(calls) == 4, started
                held = [await active_calls(a), await active_calls(b)]
                assert held == [2, 2], held
                assert all([await receiving(c) for c in calls])
        finally:
            for c in calls:
                await c.close()


@pytest.mark.bedrock
async def test_a_call_whose_node_dies_is_adopted_with_its_history(
    tmp_path: Path, standin: Any, speech_wav: Callable[[str], Path]
) -> None:
    speech = load_wav(speech_wav("hello, can you hear me"))
    env = {**standin.client_env(), "AWS_EC2_METADATA_DISABLED": "true"}
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env[name] = os.environ[name]
    args = ("--backend", "bedrock", "--system-prompt", "scenario:reply")
    async with two_nodes(tmp_path, args, args, env=env) as (redis_url, a, b):
        client = await start_call(a.url)
        moved: CallClient | None = None
        try:
            async with asyncio.timeout(90):
                client.mic.play(speech)
                said = (await client.wait_for("bot-transcription", 20))["data"]["text"]
                state = await history_saved(redis_url, client.pc_id, 2)
                assert state["history"][-1] == ["ASSISTANT", said]
                streams_before = len(standin.sessions)
                killed = time.monotonic()
                a.kill()
                # The page's automatic reconnect (restart_pc, same pc_id, its session token),
                # here to the surviving node.
                moved = CallClient(b.url, token=client.session_token)
                await moved.connect(restart_of=client.pc_id)
                assert moved.pc_id == client.pc_id
                answered = time.monotonic() - killed
                await moved.wait_for("bot-ready", 10)
                moved.mic.play(speech)
                await moved.wait_for("bot-transcription", 20)
                heard_again = time.monotonic() - killed
            adopted = list(standin.sessions)[streams_before:]
            assert adopted, "node B opened no model stream"
            texts = [e["textInput"]["content"] for e in adopted[0].events if "textInput" in e]
            assert said in " ".join(texts), texts  # the bot knows what it said before
            names = adopted[0].input_names()
            assert names.index("textInput", 2) < names.index("audioInput")
            assert not moved.of_type("error")
            print(f"node death -> restart answered {answered:.2f} s, reply {heard_again:.2f} s")
        finally:
            await client.close()
            if moved is not None:
                await moved.close()


async def test_sigterm_moves_every_call_to_the_other_node_and_exits_0(tmp_path: Path) -> None:
    echo = ("--backend", "echo", "--drain-timeout", "20")
    async with two_nodes(tmp_path, echo, echo) as (_, a, b):
        clients = [await start_call(a.url) for _ in range(3)]
        moved: list[CallClient] = []
        try:
            async with asyncio.timeout(90):
                a.proc.send_signal(signal.SIGTERM)
                for c in clients:
                    # To the same address: node A forwards it.
                    moved.append(await follow_drain(c, a.url))
                assert await a.proc.wait() == 0
                for new in moved:
                    await new.wait_for("bot-ready", 10)
                    new.mic.play(load_tone())
                    assert await receiving(new), "a moved call does not deliver audio"
                    assert not new.of_type("error")
                assert (await b.json("/healthz"))["sessions"] == 3
            assert '"drain_moving_calls"' in a.log.read_text()
        finally:
            for c in clients + moved:
                await c.close()


async def test_a_rolling_restart_moves_a_call_off_each_node_in_turn_and_keeps_its_history(
    tmp_path: Path,
) -> None:
    """A, then B, drained with SIGTERM and started again (what a Deployment's rolling update
    does): the call moves to the other node each time, ends up on the restarted A, and the
    conversation it had is still in its record."""
    echo = ("--backend", "echo", "--drain-timeout", "20")
    async with redis_server(tmp_path) as redis_url, contextlib.AsyncExitStack() as stack:
        args = {n: node_args(redis_url, f"node-{n}", *echo) for n in ("a", "b")}
        nodes = {n: await stack.enter_async_context(serve_node(tmp_path, *args[n], name=n))
                 for n in ("a", "b")}  # fmt: skip
        clients = [await start_call(nodes["a"].url)]
        try:
            async with asyncio.timeout(120):
                pc_id = clients[0].pc_id
                before = (await history_saved(redis_url, pc_id, 2))["history"]
                for name, other in (("a", "b"), ("b", "a")):
                    nodes[name].proc.send_signal(signal.SIGTERM)
                    # The balancer sends the page's new connection to the node still serving.
                    new = await follow_drain(clients[-1], nodes[other].url)
                    clients.append(new)
                    assert await nodes[name].proc.wait() == 0
                    await new.wait_for("bot-ready", 10)
                    new.mic.play(load_tone())
                    assert await receiving(new), f"the call stopped when {name} was drained"
                    assert (await nodes[other].json("/healthz"))["sessions"] == 1
                    assert '"drain_moving_calls"' in nodes[name].log.read_text()
                    # Started again, on the same address and node id.
                    nodes[name] = await stack.enter_async_context(
                        serve_node(tmp_path, *args[name], name=f"{name}-2")
                    )
                    await history_saved(redis_url, pc_id, len(before))
                assert clients[-1].pc_id == pc_id and not clients[-1].of_type("error")
                state = await history_saved(redis_url, pc_id, len(before))
                assert state["history"][: len(before)] == before
                assert (await nodes["a"].json("/healthz"))["sessions"] == 1
                assert (await nodes["b"].json("/healthz"))["sessions"] == 0
            for name in ("a", "b", "a-2", "b-2"):
                assert '"status": 500' not in (tmp_path / f"{name}.log").read_text(), name
        finally:
            for c in clients:
                await c.close()


def load_tone() -> Any:
    from tests.support.cluster import tone

    return tone(0.3)


async def test_redis_outage_keeps_calls_and_serves_offers_locally(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis_url:
        args = node_args(redis_url, "solo", "--backend", "echo")
        async with serve_node(tmp_path, *args, name="solo") as node:
            first = await start_call(node.url)
            late: CallClient | None = None
            try:
                async with asyncio.timeout(60):
                    r = aredis.Redis.from_url(redis_url)
                    with contextlib.suppress(Exception):
                        await r.shutdown(nosave=True)
                    await r.aclose()
                    assert await receiving(first)
                    late = await start_call(node.url, token())
                    async with aiohttp.ClientSession() as http:
                        async with http.get(f"{node.url}/readyz") as resp:
                            assert resp.status == 200
                        auth = {"Authorization": f"Bearer {late.session_token}"}
                        body = {"pc_id": late.pc_id, "candidates": []}
                        async with http.patch(
                            f"{node.url}/api/offer", json=body, headers=auth
                        ) as resp:
                            assert resp.status == 200
                    assert await late.hangup() == 204
                    assert await first.hangup() == 204
                assert '"cluster_directory_down"' in node.log.read_text()
                assert '"status": 500' not in node.log.read_text()
            finally:
                await first.close()
                if late is not None:
                    await late.close()
