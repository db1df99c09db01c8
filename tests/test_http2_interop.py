"""The asyncio HTTP/2 client (Bedrock's default transport) against peers other than our stand-in.

Debian's ``nghttpd`` (nghttp2, C) covers bodies far past both flow-control windows in both
directions, more concurrent streams than the server allows (so a second connection), a server
that answers before the upload ends, and a server that stops reading (SIGSTOP: writes block on
flow control with bounded memory, then the keepalive PING times the connection out). nghttpd
has no graceful GOAWAY (SIGTERM just closes), no way to reset a stream with an error mid-body
and never PINGs, so those cases use the small raw h2 server in ``tests/h2_util.py``.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.components import require
from tests.support.h2 import Certs, Nghttpd, RawH2Server, chunks, make_certs, pattern
from voicegate.backends.bedrock.http2 import (
    ConnectFailed,
    H2Pool,
    H2Settings,
    HTTP2Timeout,
    StreamRefused,
    StreamReset,
    default_ssl_context,
)
from voicegate.backends.bedrock.transport import AsyncioHTTP2Client

HANG_GUARD = 20.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("h2certs"))


@pytest.fixture
def nghttpd_path() -> str:
    path = shutil.which("nghttpd")
    require(path is not None, "nghttpd is not installed (apt-get install nghttp2-server)")
    assert path is not None
    return path


@pytest.fixture
async def nghttpd(
    request: pytest.FixtureRequest, certs: Certs, tmp_path: Path, nghttpd_path: str
) -> AsyncIterator[Nghttpd]:
    server = Nghttpd(certs, tmp_path, *request.param)
    try:
        await server.wait_listening()
        yield server
    finally:
        server.stop()


def _pool(certs: Certs, **settings: float | int | None) -> H2Pool:
    return H2Pool(H2Settings(**settings), default_ssl_context(str(certs.ca_file)))  # type: ignore[arg-type]


def _headers(port: int, path: str, method: str = "POST") -> list[tuple[str, str]]:
    return [
        (":method", method),
        (":scheme", "https"),
        (":authority", f"127.0.0.1:{port}"),
        (":path", path),
    ]


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait for a state the client reaches on its own (bounded by the caller's timeout)."""
    while not predicate():  # noqa: ASYNC110 - a test probe, not the audio path
        await asyncio.sleep(0.01)


ECHO_SMALL_WINDOWS = ("--echo-upload", "-w", "16", "-W", "16")


@pytest.mark.parametrize("nghttpd", [ECHO_SMALL_WINDOWS], indirect=True)
async def test_bodies_far_past_both_windows_arrive_intact(nghttpd: Nghttpd, certs: Certs) -> None:
    # 4 MiB up against nghttpd's 64 KiB windows, 4 MiB back against our own 64 KiB windows:
    # this only finishes when both sides' WINDOW_UPDATEs work.
    pool = _pool(certs, stream_window=65535, connection_window=65535)
    try:
        async with asyncio.timeout(HANG_GUARD):
            stream = await pool.open_stream(
                "https",
                "127.0.0.1",
                nghttpd.port,
                _headers(nghttpd.port, "/echo"),
                chunks(256, 16384),
            )
            status, headers = await stream.response()
            body = await stream.read()
        assert status == 200 and ("nghttpd-response", "echo") in headers
        assert len(body) == 256 * 16384 and body == pattern(0, len(body))
        assert stream.finished and stream.error is None
        assert len(pool.connections()) == 1
    finally:
        await pool.close()


@pytest.mark.parametrize("nghttpd", [("--echo-upload", "-m", "2")], indirect=True)
async def test_more_streams_than_the_server_allows_open_more_connections(
    nghttpd: Nghttpd, certs: Certs
) -> None:
    pool = _pool(certs)
    gate = asyncio.Event()
    try:
        async with asyncio.timeout(HANG_GUARD):
            streams = [
                await pool.open_stream(
                    "https",
                    "127.0.0.1",
                    nghttpd.port,
                    _headers(nghttpd.port, f"/s{i}"),
                    chunks(8, 1000 + i, gate),
                )
                for i in range(5)
            ]
            conns = pool.connections()
            assert len(conns) == 3  # SETTINGS_MAX_CONCURRENT_STREAMS 2: 2 + 2 + 1
            assert sorted(len(c.streams) for c in conns) == [1, 2, 2]
            gate.set()
            for i, stream in enumerate(streams):
                assert (await stream.response())[0] == 200
                assert await stream.read() == pattern(0, 8 * (1000 + i))
            # Freed slots are reused: no fourth connection.
            again = await pool.open_stream(
                "https", "127.0.0.1", nghttpd.port, _headers(nghttpd.port, "/again"), b"x"
            )
            assert await again.read() == b"x"
            assert len(pool.connections()) == 3
    finally:
        await pool.close()


@pytest.mark.parametrize("nghttpd", [("--early-response",)], indirect=True)
async def test_an_answer_before_the_upload_ends_stops_the_upload(
    nghttpd: Nghttpd, certs: Certs
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100000):
            sent += 1
            yield b"y" * 4096
            await asyncio.sleep(0.001)

    pool = _pool(certs)
    try:
        async with asyncio.timeout(HANG_GUARD):
            stream = await pool.open_stream(
                "https", "127.0.0.1", nghttpd.port, _headers(nghttpd.port, "/missing"), endless()
            )
            # With --early-response nghttpd answers without waiting for the request body.
            assert (await stream.response())[0] == 404
            assert b"404" in await stream.read()
            await asyncio.sleep(0.3)
        # nghttpd answered and reset the stream with NO_ERROR: a success, and the rest of the
        # upload was never sent.
        assert stream.finished and stream.error is None
        assert sent < 1000
        assert not any(c.streams for c in pool.connections())
    finally:
        await pool.close()


@pytest.mark.parametrize("nghttpd", [ECHO_SMALL_WINDOWS], indirect=True)
async def test_a_server_that_stops_reading_blocks_writes_then_times_out(
    nghttpd: Nghttpd, certs: Certs
) -> None:
    yielded = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal yielded
        while True:
            yielded += 4096
            yield b"z" * 4096

    pool = _pool(certs, keepalive_interval=0.8, keepalive_timeout=0.5)
    try:
        async with asyncio.timeout(HANG_GUARD):
            stream = await pool.open_stream(
                "https", "127.0.0.1", nghttpd.port, _headers(nghttpd.port, "/up"), endless()
            )
            await asyncio.sleep(0.3)  # uploading at full speed
            nghttpd.pause()
            (conn,) = pool.connections()
            await asyncio.sleep(0.3)  # WINDOW_UPDATEs nghttpd sent before it stopped land
            stalled_at = yielded
            assert stream in conn.blocked  # waiting for flow-control window
            await asyncio.sleep(0.3)
            # Nothing more is taken from the body, and memory stays bounded.
            assert yielded == stalled_at
            assert conn._transport is not None
            assert conn._transport.get_write_buffer_size() <= 65535 + 16384
            with pytest.raises(HTTP2Timeout, match="PING"):
                await stream.response()
            assert conn.closed and stream.finished
            nghttpd.resume()
            fresh = await pool.open_stream(
                "https", "127.0.0.1", nghttpd.port, _headers(nghttpd.port, "/up"), b"after"
            )
            assert await fresh.read() == b"after"
    finally:
        await pool.close()


async def test_goaway_lets_processed_streams_finish_and_moves_new_ones(
    certs: Certs,
) -> None:
    async with RawH2Server(certs) as server:
        pool = _pool(certs)
        gate_a, gate_b = asyncio.Event(), asyncio.Event()
        try:
            async with asyncio.timeout(HANG_GUARD):
                a = await pool.open_stream(
                    "https",
                    "127.0.0.1",
                    server.port,
                    _headers(server.port, "/a"),
                    chunks(4, 100, gate_a),
                )
                b = await pool.open_stream(
                    "https",
                    "127.0.0.1",
                    server.port,
                    _headers(server.port, "/b"),
                    chunks(4, 100, gate_b),
                )
                first = await server.connection(0)
                await first.until(lambda: len(first.received) == 2)
                first.respond(a.stream_id)
                first.goaway(last_stream_id=a.stream_id)
                with pytest.raises(StreamRefused):
                    await b.response()
                assert (await a.response())[0] == 200
                # A new stream goes to a new connection while the old one finishes its work.
                c = await pool.open_stream(
                    "https", "127.0.0.1", server.port, _headers(server.port, "/c"), b"c"
                )
                second = await server.connection(1)
                await second.until(lambda: c.stream_id in second.ended)
                assert len(pool.connections()) == 2
                gate_a.set()
                await first.until(lambda: a.stream_id in first.ended)
                assert first.received[a.stream_id] == 400
                first.finish(a.stream_id, b"done")
                assert await a.read() == b"done"
                assert a.error is None
                # The drained connection closes itself.
                await _until(lambda: len(pool.connections()) == 1)
        finally:
            await pool.close()


async def test_reset_mid_body_fails_only_that_stream(certs: Certs) -> None:
    async with RawH2Server(certs) as server:
        pool = _pool(certs)
        abandoned: list[BaseException] = []
        try:
            async with asyncio.timeout(HANG_GUARD):
                a = await pool.open_stream(
                    "https",
                    "127.0.0.1",
                    server.port,
                    _headers(server.port, "/a"),
                    chunks(1000, 1000, asyncio.Event()),
                    abandoned.append,
                )
                b = await pool.open_stream(
                    "https", "127.0.0.1", server.port, _headers(server.port, "/b"), chunks(3, 10)
                )
                conn = await server.connection(0)
                await conn.until(lambda: b.stream_id in conn.ended)
                conn.respond(a.stream_id, b"partial")
                conn.respond(b.stream_id)
                assert await a.read(7) == b"partial"  # what came before the reset is kept
                conn.reset(a.stream_id, 2)  # INTERNAL_ERROR
                with pytest.raises(StreamReset, match="INTERNAL_ERROR") as info:
                    await a.read(1)
                assert info.value.remote and info.value.code == 2
                assert len(abandoned) == 1  # the owner of the body was told at once
                conn.finish(b.stream_id, b"fine")
                assert await b.read() == b"fine" and b.error is None
                assert len(pool.connections()) == 1
        finally:
            await pool.close()


async def test_server_pings_are_answered_and_quiet_streams_kept_alive(certs: Certs) -> None:
    async with RawH2Server(certs) as server:
        pool = _pool(certs, keepalive_interval=0.2, keepalive_timeout=2.0)
        try:
            async with asyncio.timeout(HANG_GUARD):
                stream = await pool.open_stream(
                    "https",
                    "127.0.0.1",
                    server.port,
                    _headers(server.port, "/q"),
                    chunks(1, 1, asyncio.Event()),
                )
                conn = await server.connection(0)
                conn.ping()
                await conn.until(lambda: conn.ping_acks == 1)
                await asyncio.sleep(1.0)  # quiet: our keepalive PINGs are answered by h2
                assert not pool.connections()[0].closed and stream.error is None
        finally:
            await pool.close()


async def test_connect_and_idle_timeouts(certs: Certs) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts TCP, never speaks TLS

    tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    pool = _pool(certs, connect_timeout=0.3)
    try:
        async with asyncio.timeout(HANG_GUARD):
            with pytest.raises(HTTP2Timeout):
                await pool.open_stream("https", "127.0.0.1", port, _headers(port, "/"), b"")
    finally:
        await pool.close()
        tcp.close()
    async with RawH2Server(certs) as server:
        pool = _pool(certs, idle_timeout=0.3)
        try:
            async with asyncio.timeout(HANG_GUARD):
                stream = await pool.open_stream(
                    "https", "127.0.0.1", server.port, _headers(server.port, "/"), b"x"
                )
                conn = await server.connection(0)
                await conn.until(lambda: stream.stream_id in conn.ended)
                conn.respond(stream.stream_id, b"ok", end=True)
                assert await stream.read() == b"ok"
                await _until(lambda: not pool.connections())  # closed after 0.3 s idle
        finally:
            await pool.close()


async def test_untrusted_certificate_and_missing_h2_fail_at_once(
    certs: Certs, tmp_path: Path
) -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    other = make_certs(tmp_path)  # a CA the client does not trust
    untrusted = await asyncio.start_server(idle, "127.0.0.1", 0, ssl=other.server_context())
    http11 = certs.server_context()
    http11.set_alpn_protocols(["http/1.1"])
    no_h2 = await asyncio.start_server(idle, "127.0.0.1", 0, ssl=http11)
    pool = _pool(certs)
    try:
        async with asyncio.timeout(HANG_GUARD):
            port = untrusted.sockets[0].getsockname()[1]
            with pytest.raises(
                ConnectFailed, match="TLS with .* failed: .*certificate.*SSL_CERT_FILE"
            ):
                await pool.open_stream("https", "127.0.0.1", port, _headers(port, "/"), b"")
            port = no_h2.sockets[0].getsockname()[1]
            with pytest.raises(ConnectFailed, match="did not negotiate HTTP/2"):
                await pool.open_stream("https", "127.0.0.1", port, _headers(port, "/"), b"")
    finally:
        await pool.close()
        untrusted.close()
        no_h2.close()


def test_the_sdk_copy_of_the_transport_shares_no_loop_state() -> None:
    client = AsyncioHTTP2Client()
    assert client.SUPPORTS_DUPLEX_STREAMING is True
    assert issubclass(client.TIMEOUT_EXCEPTIONS[0], TimeoutError)
    copied = copy.deepcopy(client)
    assert copied is not client and copied._pool is None
