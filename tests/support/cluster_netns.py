"""A cluster as pods would have it: nodes in network namespaces of their own, with their own
addresses, Redis on the cluster network, coturn as the only public way in.

    cli 10.202.2.2 ─ veth ─ 10.202.2.1 edge 10.201.0.2 ─┐ br0 10.201.0.1 (net: redis-server)
                      (edge's public 10.202.0.1 on lo) ├─ 10.201.0.11 node-a
                                                       └─ 10.201.0.12 node-b

``net`` holds the cluster network's bridge and Redis; each node has one veth on it. ``edge``
is on the bridge too and holds the public address: coturn listens and relays there, and the
test's own TCP forwarder there is the load balancer (one port per node, so the test chooses
where a request lands, as a load balancer's health checks would after a node dies). ``edge``
does not forward packets, and the caller has a route to the public address only: no UDP path
exists between the caller and any node except through coturn.

The Bedrock stand-in stays in the test's own process on 127.0.0.1: each node reaches it at
127.0.0.1 of its own namespace through a TCP tunnel whose listening socket the test made inside
that namespace (the egress a pod has), so the stand-in's certificate for 127.0.0.1 is valid.

The caller runs on an event loop in a thread that entered ``cli`` (sockets made there stay
there), so the test drives it with ordinary coroutines. Only addresses inside these namespaces
are used. Needs root and iproute2: missing in CI fails, elsewhere skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np

from tests.support.cluster import Node, open_state, serve_node
from tests.support.components import missing
from tests.support.netns import exec_in, ip, socket_in
from voicegate.audio.levels import rms
from voicegate.testing.client import CallClient

T = TypeVar("T")

PUBLIC_IP = "10.202.0.1"  # the edge's public address (coturn, load balancer)
CLI_IP, CLI_GW = "10.202.2.2", "10.202.2.1"
BRIDGE_IP, EDGE_CLUSTER_IP = "10.201.0.1", "10.201.0.2"
NODE_IPS = {"a": "10.201.0.11", "b": "10.201.0.12"}
NODE_PORT = 8080
REDIS_PORT = 6379
# Off loopback redis-server refuses clients without a password (protected mode), as it should.
REDIS_PASSWORD = "cluster-netns-redis-pw"
LB_PORTS = {"a": 8081, "b": 8082}  # edge port -> that node's HTTP
TAG = "vgcx"


@dataclass(frozen=True)
class Topology:
    tag: str

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    @property
    def redis_url(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@{BRIDGE_IP}:{REDIS_PORT}/0"

    def lb_url(self, node: str) -> str:
        return f"http://{PUBLIC_IP}:{LB_PORTS[node]}"


def _remove_orphans() -> None:
    listing = ip("netns", "list", check=False).stdout
    for name, pid in re.findall(rf"(?m)^({TAG}(\d+)-\w+)\b", listing):
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            ip("netns", "del", name, check=False)
        except PermissionError:
            pass  # alive, someone else's


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    """The five namespaces, wired; all deleted afterwards, whatever happened."""
    if shutil.which("ip") is None:
        missing("iproute2 is not installed (apt-get install iproute2)")
    _remove_orphans()
    topo = Topology(f"{TAG}{os.getpid()}")
    roles = ("net", "edge", "a", "b", "cli")
    created: list[str] = []
    try:
        for role in roles:
            done = ip("netns", "add", topo.ns(role), check=False)
            if done.returncode != 0:
                missing(f"cannot create a network namespace ({done.stderr.strip()}); needs root")
            created.append(topo.ns(role))
        net, edge, cli = topo.ns("net"), topo.ns("edge"), topo.ns("cli")
        ip("-n", net, "link", "add", "br0", "type", "bridge")
        # veths are created straight inside the namespaces: no name on the host is touched.
        for port, role in (("p-edge", "edge"), ("p-a", "a"), ("p-b", "b")):
            ip("link", "add", port, "netns", net, "type", "veth",
               "peer", "name", "eth0", "netns", topo.ns(role))  # fmt: skip
            ip("-n", net, "link", "set", port, "master", "br0", "up")
        ip("link", "add", "to-cli", "netns", edge, "type", "veth",
           "peer", "name", "eth0", "netns", cli)  # fmt: skip
        script = {
            net: ["link set lo up", f"addr add {BRIDGE_IP}/24 dev br0", "link set br0 up"],
            edge: [
                "link set lo up",
                f"addr add {PUBLIC_IP}/32 dev lo",
                f"addr add {EDGE_CLUSTER_IP}/24 dev eth0",
                "link set eth0 up",
                f"addr add {CLI_GW}/24 dev to-cli",
                "link set to-cli up",
            ],
            cli: [
                "link set lo up",
                f"addr add {CLI_IP}/24 dev eth0",
                "link set eth0 up",
                f"route add {PUBLIC_IP}/32 via {CLI_GW}",
            ],
        }
        for role, address in NODE_IPS.items():
            script[topo.ns(role)] = [
                "link set lo up",
                f"addr add {address}/24 dev eth0",
                "link set eth0 up",
                f"route add {PUBLIC_IP}/32 via {EDGE_CLUSTER_IP}",
            ]
        for ns, commands in script.items():
            for command in commands:
                ip("-n", ns, *command.split())
        subprocess.run(
            [*exec_in(edge), "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"],
            check=True,
            timeout=15,
        )
        yield topo
    finally:
        for ns in reversed(created):
            ip("netns", "del", ns, check=False)


# -- TCP plumbing: the load balancer on the edge, the tunnels to the stand-in ----------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def _listener_in(ns: str, host: str, port: int) -> socket.socket:
    sock = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def forward(
    listen_ns: str, listen: tuple[str, int], target_ns: str | None, target: tuple[str, int]
) -> AsyncIterator[None]:
    """Accept in ``listen_ns`` at ``listen``, connect from ``target_ns`` (None: the test's own
    namespace) to ``target``; bytes both ways. Bounded: 10 s to connect."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                if target_ns is None:
                    r2, w2 = await asyncio.open_connection(*target)
                else:
                    out = socket_in(target_ns, socket.AF_INET, socket.SOCK_STREAM)
                    out.setblocking(False)
                    await asyncio.get_running_loop().sock_connect(out, target)
                    r2, w2 = await asyncio.open_connection(sock=out)
        except (OSError, TimeoutError):
            w.close()
            return
        await asyncio.gather(_pipe(r, w2), _pipe(r2, w))

    server = await asyncio.start_server(handle, sock=_listener_in(listen_ns, *listen))
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await server.wait_closed()


# -- Partitions: packets dropped inside a node's namespace ----------------------------------

CUT_TABLE = "vgcut"


def partition(topo: Topology, node: str, peers: Sequence[str] | None) -> None:
    """Drop every packet between ``node``'s namespace and ``peers`` (addresses), or all its
    traffic on the cluster network when ``peers`` is None. Dropped, not refused: connections
    hang as on a cut link. ``heal`` removes it. Needs nftables: missing in CI fails."""
    if shutil.which("nft") is None:
        missing("nftables is not installed (apt-get install nftables)")
    if peers is None:
        into, out = ['iifname "eth0" drop'], ['oifname "eth0" drop']
    else:
        into, out = [f"ip saddr {p} drop" for p in peers], [f"ip daddr {p} drop" for p in peers]
    script = "\n".join(
        [
            f"table inet {CUT_TABLE} {{",
            "  chain cut_in { type filter hook input priority 0; policy accept; }",
            "  chain cut_out { type filter hook output priority 0; policy accept; }",
            "}",
            *(f"add rule inet {CUT_TABLE} cut_in {r}" for r in into),
            *(f"add rule inet {CUT_TABLE} cut_out {r}" for r in out),
        ]
    )
    subprocess.run(
        [*exec_in(topo.ns(node)), "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        capture_output=True,
        timeout=15,
    )


def heal(topo: Topology, node: str) -> None:
    subprocess.run(
        [*exec_in(topo.ns(node)), "nft", "delete", "table", "inet", CUT_TABLE],
        check=False,
        capture_output=True,
        timeout=15,
    )


# -- Redis on the cluster network --------------------------------------------------------------


async def redis_cli(topo: Topology, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *exec_in(topo.ns("net")), "redis-cli", "-h", BRIDGE_IP, "-p", str(REDIS_PORT),
        "-a", REDIS_PASSWORD, "--no-auth-warning", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode().strip()


@contextlib.asynccontextmanager
async def redis_in(topo: Topology, workdir: Path) -> AsyncIterator[str]:
    for exe in ("redis-server", "redis-cli"):
        if shutil.which(exe) is None:
            missing(f"{exe} is not installed (apt-get install redis-server)")
    proc = await asyncio.create_subprocess_exec(
        *exec_in(topo.ns("net")), "redis-server", "--port", str(REDIS_PORT), "--bind", BRIDGE_IP,
        "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(workdir),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _until(lambda: redis_cli(topo, "PING"), "PONG", 10, "redis-server never answered")
        yield topo.redis_url
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _until(ask: Callable[[], Awaitable[str]], want: str, seconds: float, why: str) -> None:
    """Redis has no event to wait on for another process's start or heartbeat: ask, bounded."""
    async with asyncio.timeout(seconds):
        for _ in range(int(seconds * 10)):
            if await ask() == want:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(why)


async def wait_registered(topo: Topology, *node_ids: str) -> None:
    keys = [f"vg:node:{n}" for n in node_ids]
    await _until(
        lambda: redis_cli(topo, "EXISTS", *keys),
        str(len(keys)),
        20,
        f"not all of {keys} registered",
    )


# -- An event loop inside a namespace ----------------------------------------------------------


class LoopIn:
    """An asyncio loop running in a thread that entered namespace ``ns``: every socket it makes
    (aiohttp, aioice, TURN) is in ``ns``. ``run`` awaits a coroutine there from another loop."""

    def __init__(self, ns: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._entered = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(ns,), daemon=True)
        self._thread.start()
        self._entered.wait(10)
        if self._error is not None:
            raise self._error

    def _main(self, ns: str) -> None:
        try:
            with open(f"/run/netns/{ns}") as target:
                os.setns(target.fileno(), os.CLONE_NEWNET)
        except BaseException as exc:  # reported to the constructor
            self._error = exc
            self._entered.set()
            return
        self._entered.set()
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


# -- The two-node relay cluster the failover test and its benchmark run ----------------------

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


@contextlib.asynccontextmanager
async def echo_cluster(workdir: Path) -> AsyncIterator[tuple[Topology, dict[str, Node]]]:
    """The topology, Redis and the two nodes (echo brain, no relay): for callers on the
    cluster network (the ``edge`` namespace, host candidates) and links cut with
    ``partition``."""
    with topology() as topo:
        async with redis_in(topo, workdir), contextlib.AsyncExitStack() as stack:
            nodes: dict[str, Node] = {}
            for name, address in NODE_IPS.items():
                args = (
                    "--host", address, "--port", str(NODE_PORT),
                    "--cluster-redis", topo.redis_url, "--node-id", f"node-{name}",
                    "--node-url", f"http://{address}:{NODE_PORT}", "--workers", "1",
                    "--backend", "echo",
                )  # fmt: skip
                nodes[name] = await stack.enter_async_context(
                    serve_node(workdir, *args, name=name, prefix=exec_in(topo.ns(name)))
                )
            await wait_registered(topo, "node-a", "node-b")
            yield topo, nodes


async def history_saved(topo: Topology, pc_id: str, messages: int) -> list[Any]:
    async with asyncio.timeout(10):
        while True:
            text = open_state(pc_id, await redis_cli(topo, "HGET", f"vg:call:{pc_id}", "state"))
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
