"""HTTP/2 peers for the asyncio client's interop tests: Debian's ``nghttpd`` (an independent C
server) and, for what nghttpd cannot be made to do (a graceful GOAWAY, RST_STREAM with an error
mid-body, PING from the server), a small raw server on the ``h2`` library driven by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
)


@dataclass
class Certs:
    ca: trustme.CA
    ca_file: Path
    key_file: Path
    cert_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        ctx.set_alpn_protocols(["h2"])
        return ctx


def make_certs(directory: Path) -> Certs:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = Certs(ca, directory / "ca.pem", directory / "key.pem", directory / "cert.pem")
    ca.cert_pem.write_to_path(str(paths.ca_file))
    cert.private_key_pem.write_to_path(str(paths.key_file))
    cert.cert_chain_pems[0].write_to_path(str(paths.cert_file))
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nghttpd:
    """``nghttpd`` on 127.0.0.1 with the given options, stopped on exit."""

    def __init__(self, certs: Certs, docroot: Path, *options: str) -> None:
        self.port = free_port()
        path = shutil.which("nghttpd")
        assert path is not None
        self.proc = subprocess.Popen(
            [path, "-a", "127.0.0.1", "-d", str(docroot), *options, str(self.port)]
            + [str(certs.key_file), str(certs.cert_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    async def wait_listening(self) -> None:
        async with asyncio.timeout(10):
            while True:
                assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                return

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class ServerConn:
    """One connection of the raw server, driven from the test."""

    h2: H2Connection
    writer: asyncio.StreamWriter
    received: dict[int, int] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    resets: dict[int, int] = field(default_factory=dict)
    ping_acks: int = 0
    requests: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def respond(self, stream_id: int, body: bytes = b"", end: bool = False) -> None:
        self.h2.send_headers(stream_id, [(":status", "200")], end_stream=end and not body)
        if body:
            self.h2.send_data(stream_id, body, end_stream=end)
        self.flush()

    def finish(self, stream_id: int, body: bytes) -> None:
        self.h2.send_data(stream_id, body, end_stream=True)
        self.flush()

    def goaway(self, last_stream_id: int) -> None:
        """A graceful GOAWAY: streams up to ``last_stream_id`` may still finish. h2 closes its
        state machine on sending one (python-hyper/h2#1181), so it is reopened here."""
        self.h2.close_connection(last_stream_id=last_stream_id)
        self.h2.state_machine.state = ConnectionState.SERVER_OPEN
        self.flush()

    def reset(self, stream_id: int, code: int) -> None:
        self.h2.reset_stream(stream_id, code)
        self.flush()

    def ping(self) -> None:
        self.h2.ping(b"srvping!")
        self.flush()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


class RawH2Server:
    """Accepts TLS + h2 connections and records what clients do; the test decides the rest."""

    def __init__(self, certs: Certs) -> None:
        self._ctx = certs.server_context()
        self.connections: list[ServerConn] = []
        self.accepted = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawH2Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.connections:
            conn.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def connection(self, index: int) -> ServerConn:
        async with asyncio.timeout(10):
            while len(self.connections) <= index:
                self.accepted.clear()
                await self.accepted.wait()
        return self.connections[index]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConn(H2Connection(H2Configuration(client_side=False)), writer)
        conn.h2.initiate_connection()
        conn.flush()
        self.connections.append(conn)
        self.accepted.set()
        while data := await reader.read(65536):
            for event in conn.h2.receive_data(data):
                _record(conn, event)
            conn.flush()
            conn.changed.set()
        conn.changed.set()


def _record(conn: ServerConn, event: Any) -> None:
    if isinstance(event, RequestReceived):
        conn.received[event.stream_id] = 0
        conn.requests.put_nowait(event.stream_id)
    elif isinstance(event, DataReceived):
        conn.received[event.stream_id] = conn.received.get(event.stream_id, 0) + len(event.data)
        if event.flow_controlled_length:
            conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    elif isinstance(event, StreamEnded):
        conn.ended.add(event.stream_id)
    elif isinstance(event, StreamReset):
        conn.resets[event.stream_id] = int(event.error_code)
    elif isinstance(event, PingAckReceived):
        conn.ping_acks += 1
    elif isinstance(event, ConnectionTerminated):
        pass


async def chunks(count: int, size: int, gate: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    """``count`` chunks of ``size`` bytes (byte i % 251 of the whole body is i % 251)."""
    if gate is not None:
        await gate.wait()
    for i in range(count):
        yield pattern(i * size, size)


_BASE = bytes(range(251))


def pattern(offset: int, size: int) -> bytes:
    start = offset % 251
    return (_BASE * (size // 251 + 2))[start : start + size]
