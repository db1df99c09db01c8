"""The HTTP transport under aws-sdk-bedrock-runtime: ``asyncio`` (default) or ``crt``.

The SDK keeps serialisation, SigV4 (seed and per-event signatures) and event-stream framing;
only the bytes' way to Bedrock changes. ``crt`` is smithy-http's awscrt client: every event
crosses between CRT's native threads and the event loop, each way. ``asyncio`` is
``AsyncioHTTP2Client``: smithy-http's ``HTTPClient`` interface (duplex-capable, so the SDK's
``DuplexClientTransport`` check passes) over voicegate's own HTTP/2 client
(``voicegate.backends.bedrock.http2``: h2 + the loop's TLS), so a call's events are written and
read by the event loop itself.

Two behaviours differ from CRT on purpose. A reset stream is an error on the response body
(the SDK raises it from ``receive()``), not a clean end. And when a stream dies while the SDK
still has request events buffered, its request body (smithy's ``AsyncBytesProvider``) is
closed without flushing, so pending and later ``send()`` calls fail at once instead of
blocking on a stream nobody drains (the trap described in ``client.py``).

Nothing here imports the SDK or h2 at module level: ``client.py`` reads the constants even when
the ``bedrock`` extra is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from voicegate.backends.bedrock.http2 import H2Pool, H2Settings, H2Stream

__all__ = [
    "DEFAULT_TRANSPORT",
    "TRANSPORTS",
    "AsyncioHTTP2Client",
    "AsyncioHTTP2Response",
    "transport_problem",
]

TRANSPORTS: Final = ("asyncio", "crt")
DEFAULT_TRANSPORT: Final = "asyncio"

_HOP_BY_HOP: Final = frozenset(
    {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)


def transport_problem(name: str) -> str | None:
    """Why ``name`` is not a usable transport choice, or None."""
    if name not in TRANSPORTS:
        return f"transport {name!r} must be one of {', '.join(TRANSPORTS)}"
    return None


class AsyncioHTTP2Response:
    """smithy-http ``HTTPResponse``: status and headers now, the body as it streams.

    ``body`` is the stream itself: it has an async ``read(size)`` (which the SDK's event
    decoder calls directly, four reads per event, without re-buffering) and is also an async
    iterable of chunks. Closing it resets the stream unless it already finished.
    """

    __slots__ = ("_fields", "_status", "_stream")

    def __init__(self, status: int, fields: Any, stream: H2Stream) -> None:
        self._status = status
        self._fields = fields
        self._stream = stream

    @property
    def status(self) -> int:
        return self._status

    @property
    def fields(self) -> Any:
        return self._fields

    @property
    def reason(self) -> str | None:
        return None  # HTTP/2 has no reason phrase

    @property
    def body(self) -> H2Stream:
        return self._stream

    async def consume_body_async(self) -> bytes:
        return await self._stream.read()

    def consume_body(self) -> bytes:
        raise RuntimeError("an HTTP/2 response body can only be read asynchronously")

    def __repr__(self) -> str:
        return f"AsyncioHTTP2Response(status={self._status}, fields={self._fields!r}, body=...)"


class AsyncioHTTP2Client:
    """smithy-http ``HTTPClient`` over pooled asyncio HTTP/2 connections (see module doc).

    The pool is created on first use, on the running loop: the SDK deep-copies its config, and
    so this object, once per client, and a copy must not share loop-bound state.
    """

    SUPPORTS_DUPLEX_STREAMING: Final = True

    def __init__(
        self,
        *,
        client_config: Any = None,
        settings: H2Settings | None = None,
        ssl_context: Any = None,
    ) -> None:
        from voicegate.backends.bedrock.http2 import HTTP2Timeout

        self.TIMEOUT_EXCEPTIONS: tuple[type[Exception], ...] = (HTTP2Timeout,)
        self._client_config = client_config
        self._settings = settings
        self._ssl_context = ssl_context
        self._pool: H2Pool | None = None
        self._closed = False

    @property
    def pool(self) -> H2Pool:
        if self._pool is None:
            from voicegate.backends.bedrock.http2 import H2Pool

            self._pool = H2Pool(self._settings, self._ssl_context)
        return self._pool

    async def send(self, request: Any, *, request_config: Any = None) -> AsyncioHTTP2Response:
        """Start the request (headers now, body streaming from its own task) and return as
        soon as the response status and headers arrive."""
        from smithy_http import Field, Fields

        from voicegate.backends.bedrock.http2 import ConnectionLost

        if self._closed:
            raise ConnectionLost("cannot send a request after the HTTP client was closed")
        uri = request.destination
        headers, authority = _request_headers(request, uri)
        path = uri.path or "/"
        if uri.query is not None:
            path = f"{path}?{uri.query}"
        pseudo = [
            (":method", request.method),
            (":scheme", uri.scheme),
            (":authority", authority),
            (":path", path),
        ]
        body = request.body
        stream = await self.pool.open_stream(
            uri.scheme, uri.host, uri.port, pseudo + headers, body, _abandon_body(body)
        )
        _write_through(body, stream)
        try:
            status, response_headers = await stream.response()
        except BaseException:
            stream.release()
            raise
        fields = Fields()
        for name, value in response_headers:
            if name in fields:
                fields[name].add(value)
            else:
                fields[name] = Field(name=name, values=[value], kind="header")
        return AsyncioHTTP2Response(status, fields, stream)

    async def close(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> AsyncioHTTP2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncioHTTP2Client:
        return AsyncioHTTP2Client(
            client_config=copy.deepcopy(self._client_config, memo),
            settings=self._settings,
            ssl_context=self._ssl_context,
        )


def _request_headers(request: Any, uri: Any) -> tuple[list[tuple[str, str]], str]:
    """Regular headers (lower case, no connection-specific ones) and the :authority."""
    headers: list[tuple[str, str]] = []
    authority = ""
    have_accept = False
    for fld in request.fields.entries.values():
        if fld.kind != "header":
            continue
        name = fld.name.lower()
        if name == "host" and fld.values:
            authority = fld.values[0]
        if name in _HOP_BY_HOP:
            continue
        have_accept = have_accept or name == "accept"
        for value in fld.values:
            headers.append((name, value))
    if not have_accept:
        headers.append(("accept", "*/*"))  # what the CRT transport adds, for the same requests
    if not authority:
        host = f"[{uri.host}]" if ":" in uri.host else uri.host
        authority = host if uri.port is None else f"{host}:{uri.port}"
    return headers, authority


def _write_through(body: Any, stream: H2Stream) -> None:
    """Let the SDK's event writes go straight to the stream.

    The SDK writes each signed event into smithy's ``AsyncBytesProvider`` (the request body),
    whose reader (the stream's pump task) is woken to take it: one task wake-up per event. When
    nothing is queued in the provider and the stream can send at once, the event is written
    as a DATA frame from the SDK's own ``write`` call instead; otherwise it takes the queue as
    before, so order and back-pressure are unchanged. ``_data`` / ``_closing`` are private to
    smithy-core 0.9 (pinned): if they are missing, nothing is changed.
    """
    queue = getattr(body, "_data", None)
    queued_write = getattr(body, "write", None)
    if queue is None or queued_write is None or not hasattr(body, "_closing"):
        return

    async def write(data: bytes) -> None:
        if not queue and not body._closing and not body.closed and stream.write_now(data):
            return
        await queued_write(data)

    body.write = write


def _abandon_body(body: Any) -> Any:
    """What to do with the request body when its stream dies before the body ended: close
    smithy's AsyncBytesProvider without flushing, so the SDK's writers fail fast."""
    close = getattr(body, "close", None)
    if close is None or not hasattr(body, "write"):
        return None

    def abandon(_exc: BaseException) -> None:
        task = asyncio.get_running_loop().create_task(_close_quietly(close))
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    return abandon


_pending: set[asyncio.Task[None]] = set()


async def _close_quietly(close: Any) -> None:
    # Already closed, or not the provider we know: nothing more to do.
    with contextlib.suppress(Exception):
        await close(flush=False)
