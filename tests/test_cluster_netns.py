"""Two nodes as pods would run: each in a network namespace of its own with its own address,
Redis on the cluster network, coturn as the public relay, a relay-only caller.

The node holding the call is killed (-9) mid-conversation; the caller reconnects (``restart_pc``,
same pc_id, its session token) through the load balancer to the other node, which adopts the
call; the next turn is answered, and the Bedrock stand-in (the real SDK talking to it) shows the
history replayed into the adopting node's model stream. tests/cluster_netns.py draws the
topology. Needs root, iproute2, redis-server and coturn: missing in CI fails, elsewhere skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.cluster_netns import (
    LB_PORTS,
    NODE_IPS,
    NODE_PORT,
    PUBLIC_IP,
    LoopIn,
    Topology,
    forward,
    redis_cli,
    redis_in,
    topology,
    wait_registered,
)
from tests.cluster_util import Node, serve_node, token
from tests.coturn_util import require_coturn, running_coturn
from tests.netns_util import exec_in, socket_in
from voicegate.audio.levels import rms
from voicegate.testing.client import CallClient, load_wav

pytestmark = [pytest.mark.timeout(240), pytest.mark.bedrock]

TURN_SECRET = "cluster-netns-turn-secret-7Rw"


def node_args(topo: Topology, name: str, turn_port: int) -> tuple[str, ...]:
    address = NODE_IPS[name]
    return (
        "--host", address, "--port", str(NODE_PORT),
        "--cluster-redis", topo.redis_url,
        "--node-id", f"node-{name}",
        "--node-url", f"http://{address}:{NODE_PORT}",
        "--workers", "1",
        "--backend", "bedrock", "--system-prompt", "scenario:reply",
        "--relay-only", "--turn-url", f"turn:{PUBLIC_IP}:{turn_port}?transport=udp",
    )  # fmt: skip


@pytest.fixture
def relay_net(tmp_path: Path) -> Iterator[tuple[Topology, int]]:
    """The namespaces, and coturn on the edge's public address (its port)."""
    require_coturn()
    with topology() as topo:
        edge = topo.ns("edge")
        with running_coturn(
            tmp_path,
            TURN_SECRET,
            listen_ips=(PUBLIC_IP,),
            relay_ip=PUBLIC_IP,
            prefix=exec_in(edge),
            make_socket=lambda: socket_in(edge),
        ) as turn:
            yield topo, turn.port


@contextlib.asynccontextmanager
async def cluster(
    topo: Topology, turn_port: int, workdir: Path, standin: Any
) -> AsyncIterator[dict[str, Node]]:
    """Redis, the two nodes (each with its tunnel to the stand-in) and the load balancer."""
    env = {
        **standin.client_env(),
        "AWS_EC2_METADATA_DISABLED": "true",
        "VOICEGATE_TURN_SECRET": TURN_SECRET,
    }
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env[name] = os.environ[name]
    edge = topo.ns("edge")
    loopback = ("127.0.0.1", standin.port)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(redis_in(topo, workdir))
        nodes: dict[str, Node] = {}
        for name, address in NODE_IPS.items():
            ns = topo.ns(name)
            await stack.enter_async_context(forward(ns, loopback, None, loopback))
            lb = (PUBLIC_IP, LB_PORTS[name])
            await stack.enter_async_context(forward(edge, lb, edge, (address, NODE_PORT)))
            args = node_args(topo, name, turn_port)
            nodes[name] = await stack.enter_async_context(
                serve_node(workdir, *args, name=name, env=env, prefix=exec_in(ns))
            )
        await wait_registered(topo, "node-a", "node-b")
        yield nodes


async def history_saved(topo: Topology, pc_id: str, messages: int) -> list[Any]:
    async with asyncio.timeout(10):
        while True:
            text = await redis_cli(topo, "HGET", f"vg:call:{pc_id}", "state")
            if text and len(history := json.loads(text)["history"]) >= messages:
                return list(history)
            await asyncio.sleep(0.1)  # Redis has no event to wait on


# -- The caller's side, run on the loop inside the caller's namespace --------------------------


async def ice_servers(base: str, tok: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {tok}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/ice-servers", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            return list((await resp.json())["iceServers"])


def relay_caller(base: str, servers: list[dict[str, Any]], tok: str | None) -> CallClient:
    return CallClient(
        base, ice_servers=CallClient.ice_servers_from_json(servers), relay_only=True, token=tok
    )


async def first_turn(client: CallClient, speech: np.ndarray) -> str:
    await client.connect()
    await client.wait_for("bot-ready", 20)
    client.mic.play(speech)
    return str((await client.wait_for("bot-transcription", 30))["data"]["text"])


async def reconnect_and_talk(
    moved: CallClient, pc_id: str, speech: np.ndarray
) -> tuple[float, float]:
    """The page's automatic reconnect, then the caller's next turn at once: when that turn
    started and when the first bot audio frame after it arrived (monotonic clock)."""
    await moved.connect(restart_of=pc_id)
    await moved.wait_for("bot-ready", 20)
    sent = time.monotonic()
    moved.mic.play(speech)
    await moved.wait_for("bot-transcription", 30)
    async with asyncio.timeout(15):
        while (heard := first_bot_audio(moved, sent)) is None:
            await moved.wait_frames(1, 15)
    return sent, heard


def first_bot_audio(client: CallClient, after: float, threshold: float = 500.0) -> float | None:
    """Arrival of the first received frame after ``after`` louder than ``threshold`` RMS."""
    for frame, arrival in zip(client.audio.frames, client.audio.arrival, strict=True):
        if arrival >= after and rms(frame) > threshold:
            return arrival
    return None


async def test_killed_node_call_moves_to_the_other_node_through_the_relay(
    tmp_path: Path,
    relay_net: tuple[Topology, int],
    standin: Any,
    speech_wav: Callable[[str], Path],
) -> None:
    topo, turn_port = relay_net
    speech = load_wav(speech_wav("hello, can you hear me"))
    caller = LoopIn(topo.ns("cli"))
    first: CallClient | None = None
    moved: CallClient | None = None
    try:
        async with asyncio.timeout(150), cluster(topo, turn_port, tmp_path, standin) as nodes:
            tok = token()
            servers = await caller.run(ice_servers(topo.lb_url("a"), tok))
            first = relay_caller(topo.lb_url("a"), servers, tok)
            said = await caller.run(first_turn(first, speech))
            assert first.selected_candidate_types() == ("relay", "relay")
            history = await history_saved(topo, first.pc_id, 2)
            assert history[-1] == ["ASSISTANT", said]
            streams_before = len(standin.sessions)

            killed = time.monotonic()
            nodes["a"].kill()
            # The load balancer now sends the page to the node that is alive.
            moved = relay_caller(topo.lb_url("b"), servers, first.session_token)
            sent, heard = await caller.run(reconnect_and_talk(moved, first.pc_id, speech))
            assert moved.pc_id == first.pc_id
            assert moved.selected_candidate_types() == ("relay", "relay")
            assert not moved.of_type("error"), moved.of_type("error")
            assert "adopt" in nodes["b"].log.read_text()

        adopted = list(standin.sessions)[streams_before:]
        assert adopted, "node B opened no model stream"
        texts = [e["textInput"]["content"] for e in adopted[0].events if "textInput" in e]
        assert said in " ".join(texts), texts  # the history was replayed to the model
        names = adopted[0].input_names()
        assert names.index("textInput", 2) < names.index("audioInput")
        print(
            f"netns cluster: kill -9 -> reconnect+turn sent {sent - killed:.2f} s, "
            f"-> first bot audio {heard - killed:.2f} s "
            f"(speech {len(speech) / 48000:.2f} s of it)"
        )
    finally:
        for client in (first, moved):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(caller.run(client.close()), 10)
        caller.stop()
