"""Pooled HTTP/2 connections per (scheme, host, port), shared by every stream of a process.

Streams are multiplexed over as few connections as the server's SETTINGS_MAX_CONCURRENT_STREAMS
(and ``max_streams_per_connection``) allow: a new connection is opened only when every existing
one is full or going away, and concurrent callers wait for a connection that is already being
opened instead of each opening their own. TLS is the event loop's own (``ssl``), with ALPN h2;
trust comes from the system store (which honours SSL_CERT_FILE / SSL_CERT_DIR, as the stand-in's
tests use) plus certifi's bundle when it is installed and no override is set.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voicegate.backends.bedrock.http2 import errors
from voicegate.backends.bedrock.http2.connection import H2ClientConnection
from voicegate.backends.bedrock.http2.stream import H2Stream

__all__ = ["H2Pool", "H2Settings", "default_ssl_context"]

Origin = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class H2Settings:
    """Limits and timeouts of the client (seconds, bytes)."""

    connect_timeout: float = 10.0
    """TCP connect + TLS handshake + the server's first SETTINGS."""
    idle_timeout: float = 60.0
    """A connection without streams for this long is closed."""
    keepalive_interval: float | None = 20.0
    """PING a connection with open streams when nothing arrived for this long (None: never)."""
    keepalive_timeout: float = 10.0
    """The connection is lost when a keepalive PING is not answered within this."""
    stream_window: int = 1 << 20
    """Receive window per stream: the most response bytes buffered for an unread stream."""
    connection_window: int = 16 << 20
    max_streams_per_connection: int = 100
    max_connections_per_origin: int = 32
    max_header_list_size: int = 64 * 1024


def default_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verifying TLS client context offering only h2."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if ca_file is None and not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")):
        try:
            import certifi

            ctx.load_verify_locations(cafile=certifi.where())
        except (ImportError, OSError):
            pass  # the system store alone
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    return ctx


class H2Pool:
    """Opens streams on pooled connections. Bound to the running loop on first use."""

    def __init__(
        self,
        settings: H2Settings | None = None,
        ssl_context: Callable[[], ssl.SSLContext] | ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings or H2Settings()
        self._ssl_source = ssl_context
        self._ssl: ssl.SSLContext | None = None
        self._conns: dict[Origin, list[H2ClientConnection]] = {}
        self._connecting: dict[Origin, asyncio.Task[H2ClientConnection]] = {}
        self._changed: asyncio.Event | None = None
        self._closed = False

    def connections(self, origin: Origin | None = None) -> list[H2ClientConnection]:
        """Open connections (for one origin, or all): for tests and metrics."""
        if origin is not None:
            return list(self._conns.get(origin, ()))
        return [c for conns in self._conns.values() for c in conns]

    async def open_stream(
        self,
        scheme: str,
        host: str,
        port: int | None,
        headers: list[tuple[str, str]],
        body: Any,
        on_fail: Callable[[BaseException], None] | None = None,
    ) -> H2Stream:
        """Send the request headers on a pooled connection and start streaming ``body``."""
        if self._closed:
            raise errors.ConnectionLost("the HTTP/2 client is closed")
        if scheme not in ("https", "http"):
            raise errors.ConnectFailed(f"unsupported URL scheme {scheme!r}")
        origin = (scheme, host, port or (443 if scheme == "https" else 80))
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                conn = await self._acquire(origin)
        except TimeoutError:
            raise errors.HTTP2Timeout(
                f"no HTTP/2 connection to {host}:{origin[2]} within "
                f"{self.settings.connect_timeout:g}s"
            ) from None
        return conn.open_stream(headers, body, on_fail)

    async def _acquire(self, origin: Origin) -> H2ClientConnection:
        while True:
            conns = self._conns.get(origin, [])
            for conn in conns:
                if conn.usable:
                    return conn
            pending = self._connecting.get(origin)
            if pending is None and len(conns) < self.settings.max_connections_per_origin:
                pending = asyncio.get_running_loop().create_task(self._connect(origin))
                self._connecting[origin] = pending
                pending.add_done_callback(lambda t: self._connected(origin, t))
            if pending is not None:
                # Shielded: a caller that gives up must not abort a connection others wait for.
                conn = await asyncio.shield(pending)
                if conn.usable:
                    return conn
                continue
            changed = self._event()
            changed.clear()
            await changed.wait()

    def _connected(self, origin: Origin, task: asyncio.Task[H2ClientConnection]) -> None:
        self._connecting.pop(origin, None)
        if not task.cancelled():
            task.exception()  # retrieved here; every waiter gets it through the shield

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _on_change(self, conn: H2ClientConnection) -> None:
        if conn.closed:
            origin_conns = [c for c in self._conns.values() if conn in c]
            for conns in origin_conns:
                conns.remove(conn)
        if self._changed is not None:
            self._changed.set()

    async def _connect(self, origin: Origin) -> H2ClientConnection:
        timeout = self.settings.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._connect_now(origin)
        except TimeoutError:
            raise errors.HTTP2Timeout(
                f"connecting to {origin[1]}:{origin[2]} took more than {timeout:g}s"
            ) from None

    async def _connect_now(self, origin: Origin) -> H2ClientConnection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        authority = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
        ssl_ctx = self._ssl_context() if scheme == "https" else None
        try:
            _, conn = await loop.create_connection(
                lambda: H2ClientConnection(self.settings, authority, self._on_change),
                host,
                port,
                ssl=ssl_ctx,
                server_hostname=host if ssl_ctx is not None else None,
                ssl_handshake_timeout=self.settings.connect_timeout if ssl_ctx else None,
            )
        except ssl.SSLCertVerificationError as exc:
            raise errors.ConnectFailed(
                f"TLS with {host}:{port} failed: {exc.verify_message or exc} (is the endpoint's "
                "certificate trusted? see SSL_CERT_FILE)"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise errors.ConnectFailed(f"could not connect to {host}:{port}: {exc}") from exc
        if ssl_ctx is not None:
            alpn = conn.alpn()
            if alpn != "h2":
                conn.close()
                raise errors.ConnectFailed(
                    f"{host}:{port} did not negotiate HTTP/2 over TLS (ALPN {alpn!r})"
                )
        try:
            await conn.ready  # the server's SETTINGS: its stream limit is known before use
        except asyncio.CancelledError:
            conn.close()
            raise
        if self._closed:
            conn.close()
            raise errors.ConnectionLost("the HTTP/2 client is closed")
        self._conns.setdefault(origin, []).append(conn)
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            source = self._ssl_source
            if isinstance(source, ssl.SSLContext):
                self._ssl = source
            elif source is not None:
                self._ssl = source()
            else:
                self._ssl = default_ssl_context()
        return self._ssl

    async def close(self) -> None:
        """Close every connection (open streams fail with ConnectionLost)."""
        self._closed = True
        for task in list(self._connecting.values()):
            task.cancel()
        conns = self.connections()
        self._conns.clear()
        for conn in conns:
            conn.close()
        if self._changed is not None:
            self._changed.set()
        await asyncio.sleep(0)  # let the transports run their close callbacks
