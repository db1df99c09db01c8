"""One HTTP/2 request/response exchange: the streamed request body going out while the
response body comes in (full duplex), both under HTTP/2 flow control.

Why it looks like this: a Nova Sonic call sends and receives ~25-50 small events a second for
minutes, so the per-event path is kept short. A request chunk becomes one DATA frame written to
the socket from the writer's own task (no queue, no task per event); response bytes are handed
to the reader without copying whole frames, and receive window is given back to the server in
batches when the reader has consumed it (h2 emits WINDOW_UPDATE at half a window). The
connection (``connection.py``) calls the ``on_*`` methods synchronously from ``data_received``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any

from voicegate.backends.bedrock.http2.errors import ConnectionLost, HTTP2Error

if TYPE_CHECKING:
    from voicegate.backends.bedrock.http2.connection import H2ClientConnection

__all__ = ["H2Stream"]

CANCEL = 0x8
_READ_SIZE = 64 * 1024


class H2Stream:
    """A client stream: ``response()`` waits for the status and headers, ``read()`` takes
    response bytes, the request body is pumped by one task per stream."""

    __slots__ = (
        "_ack_eager",
        "_buf",
        "_conn",
        "_eof",
        "_error",
        "_headers_waiter",
        "_local_ended",
        "_on_fail",
        "_pos",
        "_pump",
        "_reader",
        "_unacked",
        "_window_waiter",
        "_writing",
        "headers",
        "status",
        "stream_id",
    )

    def __init__(
        self,
        conn: H2ClientConnection,
        stream_id: int,
        on_fail: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._headers_waiter: asyncio.Future[None] = conn.loop.create_future()
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._error: HTTP2Error | None = None
        self._reader: asyncio.Future[None] | None = None
        self._window_waiter: asyncio.Future[None] | None = None
        self._unacked = 0
        self._ack_eager = max(16 * 1024, conn.stream_window // 4)
        self._local_ended = False
        self._writing = False
        self._pump: asyncio.Task[None] | None = None
        self._on_fail = on_fail

    # -- state --------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Both directions are done (or the stream failed)."""
        return self._error is not None or (self._eof and self._local_ended)

    @property
    def error(self) -> HTTP2Error | None:
        return self._error

    # -- called by the connection (synchronously, from data_received) -------------------------

    def on_headers(self, headers: list[tuple[str, str]]) -> None:
        for name, value in headers:
            if name == ":status":
                self.status = int(value)
            else:
                self.headers.append((name, value))
        if not self._headers_waiter.done():
            self._headers_waiter.set_result(None)

    def on_data(self, data: bytes, flow_controlled: int) -> None:
        if flow_controlled > len(data):  # padding: nobody reads it, give it back at once
            self._conn.ack(self.stream_id, flow_controlled - len(data))
        if self._pos >= len(self._buf):
            self._buf, self._pos = data, 0  # the common case: no copy at all
        else:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        self._wake_reader()

    def on_end(self) -> None:
        self._eof = True
        if not self._headers_waiter.done():
            self._headers_waiter.set_exception(
                ConnectionLost("the server ended the stream without a response")
            )
        self._wake_reader()

    def on_window(self) -> None:
        waiter = self._window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: HTTP2Error) -> None:
        """The stream is over with an error: wake every waiter with it (once)."""
        if self._error is not None:
            return
        self._error = exc
        waiter = self._headers_waiter
        if not waiter.done():
            waiter.set_exception(exc)
        self._wake_reader()
        self.on_window()
        on_fail, self._on_fail = self._on_fail, None
        if on_fail is not None and not self._local_ended:
            on_fail(exc)

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    # -- response ---------------------------------------------------------------------------

    async def response(self) -> tuple[int, list[tuple[str, str]]]:
        """Wait for the response status and headers."""
        await self._headers_waiter
        return self.status, self.headers

    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the response body (all of it for -1); b"" at its end.

        Bytes that arrived before a reset are still delivered whole; a read that cannot be
        completed because the stream failed raises the stream's error.
        """
        if size < 0:
            return b"".join([chunk async for chunk in self])
        while True:
            avail = len(self._buf) - self._pos
            if size <= avail:
                return self._take(size)
            if self._error is not None:
                raise self._error
            if self._eof:
                return self._take(avail)
            await self._more()

    async def _more(self) -> None:
        """Wait for more response bytes (or the end), giving the window back first."""
        self._ack()
        reader = self._conn.loop.create_future()
        self._reader = reader
        try:
            await reader
        finally:
            self._reader = None

    def _take(self, size: int) -> bytes:
        pos = self._pos
        end = pos + size
        if end == len(self._buf):
            # The last of the buffer (often all of one frame: then no copy at all).
            data = self._buf if pos == 0 else self._buf[pos:]
            self._buf, self._pos = b"", 0
        else:
            data = self._buf[pos:end]
            self._pos = end
        self._unacked += size
        if self._unacked >= self._ack_eager:
            self._ack()
        return data

    def _ack(self) -> None:
        if self._unacked:
            self._conn.ack(self.stream_id, self._unacked)
            self._unacked = 0

    def __aiter__(self) -> H2Stream:
        return self

    async def __anext__(self) -> bytes:
        """Whatever has arrived, as soon as anything has."""
        while self._pos >= len(self._buf):
            if self._error is not None:
                raise self._error
            if self._eof:
                raise StopAsyncIteration
            await self._more()
        return self._take(len(self._buf) - self._pos)

    async def close(self) -> None:
        """Done with the response: reset the stream unless it already finished."""
        self.release()

    def release(self) -> None:
        if not self.finished:
            self._conn.reset(self, CANCEL, "the client closed the stream")
        # Unread bytes still count against the connection window: hand them back.
        self._unacked += len(self._buf) - self._pos
        self._buf, self._pos = b"", 0
        self._ack()

    # -- request ----------------------------------------------------------------------------

    def start_body(self, body: Any) -> None:
        """Send ``body`` (bytes, an async iterable of bytes, or an object with ``read``)
        from one task, ending the request with END_STREAM when it is exhausted."""
        self._pump = self._conn.loop.create_task(self._send_body(body))
        self._pump.add_done_callback(_pump_done)

    def write_now(self, data: bytes) -> bool:
        """Send ``data`` as one DATA frame at once if nothing is queued ahead of it and the
        windows and socket allow; False: use ``write``. Lets a body's producer skip the hop
        through the pump task (one loop wake-up less per chunk)."""
        if self._error is not None:
            raise self._error
        conn = self._conn
        if self._writing or self._local_ended or conn.paused:
            return False
        if conn.sendable(self.stream_id, len(data)) < len(data):
            return False
        conn.send_data(self.stream_id, data)
        return True

    async def write(self, data: bytes) -> None:
        """One chunk of the request body as DATA frames, waiting for flow-control window and
        for the socket to drain (so memory stays bounded when the server stops reading)."""
        self._writing = True
        try:
            await self._write(data)
        finally:
            self._writing = False

    async def _write(self, data: bytes) -> None:
        conn = self._conn
        while data:
            if self._error is not None:
                raise self._error
            n = conn.sendable(self.stream_id, len(data))
            if n <= 0:
                waiter = conn.loop.create_future()
                self._window_waiter = waiter
                conn.blocked.add(self)
                try:
                    await waiter
                finally:
                    self._window_waiter = None
                    conn.blocked.discard(self)
                continue
            if n >= len(data):
                conn.send_data(self.stream_id, data)
                data = b""
            else:
                conn.send_data(self.stream_id, data[:n])
                data = data[n:]
            if conn.paused:
                await conn.drained()

    def end_request(self) -> None:
        if self._local_ended or self._error is not None:
            return
        self._local_ended = True
        self._conn.end_request(self)

    async def _send_body(self, body: Any) -> None:
        try:
            if isinstance(body, bytes | bytearray | memoryview):
                await self.write(bytes(body))
            elif isinstance(body, AsyncIterable):
                async for chunk in body:
                    await self.write(chunk if type(chunk) is bytes else bytes(chunk))
            elif iscoroutinefunction(getattr(body, "read", None)):
                while chunk := await body.read(_READ_SIZE):
                    await self.write(bytes(chunk))
            elif body is not None:
                while chunk := body.read(_READ_SIZE):
                    await self.write(bytes(chunk))
            self.end_request()
        except HTTP2Error:
            pass  # the stream failed; its reader gets the error
        except asyncio.CancelledError:
            if not self.finished:
                self._conn.reset(self, CANCEL, "sending the request body was cancelled")
            raise
        except Exception as exc:
            if not self.finished:
                self._conn.reset(self, CANCEL, f"the request body failed: {exc!r}")


def _pump_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: failures are reported through the stream
