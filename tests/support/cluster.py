"""Helpers of the cluster tests: real ``voicegate serve`` nodes as processes (each in its own
process group, so a node with workers dies as a whole), a real ``redis-server``, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import redis.asyncio as aredis

from tests.support.components import require
from voicegate.cluster.record_mac import RecordSeal
from voicegate.cluster.redis_conn import RedisOptions
from voicegate.signaling import auth
from voicegate.testing.client import CallClient

SECRET = "cluster-test-secret-0123456789"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def open_state(pc_id: str, sealed: str | None) -> str | None:
    """A call's stored state as the nodes read it (sealed with ``SECRET``: cluster.record_mac)."""
    return RecordSeal(SECRET).open(pc_id, sealed) if sealed else None


def node_seal() -> RedisOptions:
    """What a node of these tests writes Redis with: records sealed with its auth secret."""
    return RedisOptions(seal=RecordSeal(SECRET))


def token(ttl: float = 600) -> str:
    return auth.mint(SECRET, ttl, subject="cluster-test")


def tone(seconds: float, hz: float = 300) -> np.ndarray:
    t = np.arange(int(48000 * seconds)) / 48000
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@dataclass
class Node:
    url: str
    proc: asyncio.subprocess.Process
    log: Path

    def kill(self) -> None:
        """kill -9 of the node and all its workers (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def json(self, path: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as r:
            return await r.json()

    async def text(self, path: str) -> str:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as r:
            return await r.text()


@contextlib.asynccontextmanager
async def serve_node(
    tmp_path: Path,
    *args: str,
    name: str = "node",
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> AsyncIterator[Node]:
    """``prefix`` wraps the command, e.g. ``ip netns exec NS`` (which execs: same pid)."""
    log = tmp_path / f"{name}.log"
    full_env = {**os.environ, **(env or {}), "VOICEGATE_AUTH_SECRET": SECRET}
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            "voicegate",
            "serve",
            "--log-format",
            "json",
            "--max-loop-lag-ms",
            "0",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=full_env,
            start_new_session=True,
        )
    node: Node | None = None
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(90):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"voicegate serve exited early: {log.read_text()[-3000:]}"
                if "listening on" in line:
                    node = Node(line.rsplit(" ", 1)[1].strip(), proc, log)
                    break
        drain_stdout = asyncio.ensure_future(_drain(proc))
        yield node
        drain_stdout.cancel()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass


@contextlib.asynccontextmanager
async def redis_server(
    tmp_path: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    extra: Sequence[str] = (),
    tls: bool = False,
) -> AsyncIterator[str]:
    """A fresh, empty ``redis-server`` (``port``: the one a previous one had, to restart it;
    ``extra``: more arguments, e.g. ``--requirepass``; ``tls``: the port speaks TLS only, the
    certificate arguments being in ``extra``)."""
    exe = shutil.which("redis-server")
    require(exe is not None, "redis-server is not installed (apt-get install redis-server)")
    assert exe is not None
    port = port or free_port(host)
    ports = ("--port", "0", "--tls-port", str(port)) if tls else ("--port", str(port))
    proc = await asyncio.create_subprocess_exec(
        exe,
        *ports,
        *extra,
        "--bind",
        host,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, w = await asyncio.open_connection(host, port)
                    w.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        yield f"{'rediss' if tls else 'redis'}://{host}:{port}/0"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def start_call(url: str, tok: str | None = None) -> CallClient:
    client = CallClient(url, token=tok or token())
    await client.connect()
    await client.wait_for("bot-ready", 15)
    client.mic.play(tone(0.3))
    await client.wait_frames(10, 10)
    return client


async def follow_drain(call: CallClient, url: str) -> CallClient:
    """What the page does when its node drains: on the node's ``reconnect`` message (reason
    ``drain``), a new connection for the same call to ``url``, then the old one closes."""
    msg = await call.wait_for("server-message", 10, lambda m: m["data"].get("type") == "reconnect")
    assert msg["data"] == {"type": "reconnect", "reason": "drain"}
    new = CallClient(url, token=call.session_token)
    try:
        await new.connect(restart_of=call.pc_id)
    except BaseException:
        await new.close()
        raise
    await call.pc.close()
    return new


async def receiving(client: CallClient, frames: int = 25, timeout: float = 5.0) -> bool:
    """Whether the call still delivers audio frames (the gateway paces them continuously)."""
    try:
        await client.wait_frames(frames, timeout)
    except TimeoutError:
        return False
    return True


def node_args(redis_url: str, name: str, *extra: str) -> tuple[str, ...]:
    port = free_port()
    return (
        "--port", str(port),
        "--cluster-redis", redis_url,
        "--node-id", name,
        "--node-url", f"http://127.0.0.1:{port}",
        "--workers", "1",
        *extra,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def two_nodes(
    tmp_path: Path, a_extra: tuple[str, ...] = (), b_extra: tuple[str, ...] = (), **kw: Any
) -> AsyncIterator[tuple[str, Node, Node]]:
    async with redis_server(tmp_path) as redis_url:
        async with (
            serve_node(tmp_path, *node_args(redis_url, "node-a", *a_extra), name="a", **kw) as a,
            serve_node(tmp_path, *node_args(redis_url, "node-b", *b_extra), name="b", **kw) as b,
        ):
            await _both_registered(redis_url)
            yield redis_url, a, b


async def _both_registered(redis_url: str) -> None:
    r = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with asyncio.timeout(10):
            # Redis has no event to wait on: ask until both heartbeats are there.
            for _ in range(200):
                if await r.exists("vg:node:node-a", "vg:node:node-b") == 2:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the nodes never registered")
    finally:
        await r.aclose()


async def history_saved(redis_url: str, pc_id: str, messages: int) -> dict[str, Any]:
    """The call's stored state once it holds ``messages`` history messages."""
    r = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with asyncio.timeout(10):
            while True:
                sealed = await r.hget(f"vg:call:{pc_id}", "state")
                text = open_state(pc_id, str(sealed) if sealed else None)
                if text and len(json.loads(text)["history"]) >= messages:
                    return dict(json.loads(text))
                await asyncio.sleep(0.05)
    finally:
        await r.aclose()


@contextlib.asynccontextmanager
async def balancer(backends: Callable[[], list[int]]) -> AsyncIterator[str]:
    """127.0.0.1:<port> forwarding each connection to the first backend port that accepts."""

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            w.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for port in backends():
            try:
                async with asyncio.timeout(5):
                    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            except (OSError, TimeoutError):
                continue
            await asyncio.gather(pipe(r, w2), pipe(r2, w))
            return
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
