"""One client HTTP/2 connection on the event loop's own transport (TLS via ``ssl``).

An ``asyncio.Protocol`` around an ``h2`` state machine. Everything happens in the loop's
callbacks: frames are parsed in ``data_received`` and handed to the streams synchronously, and
whatever h2 wants to send is written to the transport right away (its buffer coalesces what
the socket cannot take at once). No threads, no task per frame. The connection

* answers PINGs (h2 does) and, with ``keepalive``, sends its own when nothing arrived for a
  while with streams open, failing the connection if no answer comes in time;
* on GOAWAY takes no new streams, fails the streams the server never processed with the
  retryable ``StreamRefused`` and lets the others finish, then closes;
* turns RST_STREAM into an error on that stream only;
* stops stream writers while the transport's buffer is above its high-water mark, so a
  server that stops reading cannot make memory grow;
* closes itself after ``idle_timeout`` without streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings

from voicegate.backends.bedrock.http2 import errors
from voicegate.backends.bedrock.http2.stream import H2Stream

if TYPE_CHECKING:
    from voicegate.backends.bedrock.http2.pool import H2Settings

__all__ = ["H2ClientConnection"]

_MAX_STREAM_ID = 2**31 - 1


class _GracefulH2(H2Connection):
    """h2's connection state machine closes outright on a received GOAWAY, forbidding the
    streams the server still serves from sending or receiving anything (python-hyper/h2#1181).
    RFC 9113 6.8 lets them finish, so the connection is put back to open right after the
    frame; this client opens no new stream once ``going_away`` is set."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = ConnectionState.CLIENT_OPEN
        return result


class H2ClientConnection(asyncio.Protocol):
    """Client side of one HTTP/2 connection; ``open_stream`` starts a request on it."""

    def __init__(
        self,
        settings: H2Settings,
        authority: str,
        on_change: Callable[[H2ClientConnection], None],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.settings = settings
        self.authority = authority
        self.stream_window = settings.stream_window
        self._on_change = on_change
        self._h2 = _GracefulH2(H2Configuration(client_side=True, header_encoding="utf-8"))
        self._transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.blocked: set[H2Stream] = set()
        self.paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.closed = False
        self.going_away = False
        self._error: errors.HTTP2Error | None = None
        self._last_rx = self.loop.time()
        self._idle_since: float | None = self.loop.time()
        self._ping_deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._dispatch: dict[type, Callable[[Any], None]] = {
            DataReceived: self._on_data,
            ResponseReceived: self._on_response,
            StreamEnded: self._on_stream_ended,
            WindowUpdated: self._on_window,
            StreamReset: self._on_reset,
            RemoteSettingsChanged: self._on_settings,
            PingAckReceived: self._on_ping_ack,
            ConnectionTerminated: self._on_goaway,
        }

    # -- capacity ----------------------------------------------------------------------------

    @property
    def max_streams(self) -> int:
        peer = self._h2.remote_settings.max_concurrent_streams
        return min(peer, self.settings.max_streams_per_connection)

    @property
    def usable(self) -> bool:
        """Ready, not closing, and with room (and stream ids) for another stream."""
        if not self.ready.done() or self.closed or self.going_away:
            return False
        return (
            len(self.streams) < self.max_streams
            and (self._h2.highest_outbound_stream_id or 0) < _MAX_STREAM_ID - 2
        )

    def alpn(self) -> str | None:
        """The protocol TLS negotiated (None without TLS)."""
        if self._transport is None:
            return None
        ssl_object = self._transport.get_extra_info("ssl_object")
        return ssl_object.selected_alpn_protocol() if ssl_object is not None else None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        h2 = self._h2
        # Initial values, not local_settings.update(): h2 would send the old values in the
        # preface yet apply the new ones when the server acknowledges, so the server would
        # keep the 64 KiB default window while this side waits for half of a bigger one.
        h2.local_settings = Settings(
            client=True,
            initial_values={
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: self.settings.stream_window,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.settings.max_header_list_size,
            },
        )
        h2.initiate_connection()
        extra = self.settings.connection_window - h2.inbound_flow_control_window
        if extra > 0:
            h2.increment_flow_control_window(extra)
        self._flush()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        self._last_rx = self.loop.time()
        try:
            events = self._h2.receive_data(data)
        except H2Error as exc:
            self._abort(errors.ConnectionLost(f"HTTP/2 protocol error from the server: {exc}"))
            return
        dispatch = self._dispatch
        for event in events:
            handler = dispatch.get(type(event))
            if handler is not None:
                handler(event)
        self._flush()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost fails what is left

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._error is None:
            why = f": {exc}" if exc else ""
            self._error = errors.ConnectionLost(f"the HTTP/2 connection closed{why}")
        if not self.ready.done():
            self.ready.set_exception(self._error)
            self.ready.exception()  # the pool reports it; never "never retrieved"
        for stream in list(self.streams.values()):
            stream.fail(self._error)
        self.streams.clear()
        self._wake_drain()
        self._on_change(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_drain()

    async def drained(self) -> None:
        if not self.paused or self.closed:
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- streams ---------------------------------------------------------------------------

    def open_stream(
        self,
        headers: list[tuple[str, str]],
        body: Any,
        on_fail: Callable[[BaseException], None] | None = None,
    ) -> H2Stream:
        """Send HEADERS now and start the request body; the caller checked ``usable``."""
        h2 = self._h2
        stream_id = h2.get_next_available_stream_id()
        stream = H2Stream(self, stream_id, on_fail)
        end = body is None or body == b""
        h2.send_headers(stream_id, headers, end_stream=end)
        self.streams[stream_id] = stream
        self._idle_since = None
        self._flush()
        if end:
            stream._local_ended = True
        else:
            stream.start_body(body)
        return stream

    def sendable(self, stream_id: int, size: int) -> int:
        if self.closed:
            raise self._error or errors.ConnectionLost("the HTTP/2 connection is closed")
        window = self._h2.local_flow_control_window(stream_id)
        return min(size, window, self._h2.max_outbound_frame_size)

    def send_data(self, stream_id: int, data: bytes) -> None:
        self._h2.send_data(stream_id, data)
        self._flush()

    def end_request(self, stream: H2Stream) -> None:
        if self.closed:
            return
        self._h2.end_stream(stream.stream_id)
        self._flush()
        if stream.finished:
            self._forget(stream)

    def ack(self, stream_id: int, size: int) -> None:
        if self.closed:
            return
        self._h2.acknowledge_received_data(size, stream_id)
        self._flush()

    def reset(self, stream: H2Stream, code: int, why: str) -> None:
        if not self.closed and stream.stream_id in self.streams:
            with contextlib.suppress(H2Error):  # already closed in h2's view
                self._h2.reset_stream(stream.stream_id, code)
            self._flush()
        self._forget(stream)
        stream.fail(errors.StreamReset(why, code, remote=False))

    def _forget(self, stream: H2Stream) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self.blocked.discard(stream)
        if not self.streams:
            self._idle_since = self.loop.time()
            if self.going_away:
                self.close()
        self._on_change(self)

    # -- frames -----------------------------------------------------------------------------

    def _on_data(self, event: Any) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:  # reset by us meanwhile: only the connection window matters
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        stream.on_data(event.data, event.flow_controlled_length)
        if event.stream_ended is not None:
            self._on_stream_ended(event.stream_ended)

    def _on_response(self, event: Any) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.on_headers(event.headers)
            if event.stream_ended is not None:
                self._on_stream_ended(event.stream_ended)

    def _on_stream_ended(self, event: Any) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None and not stream._eof:
            stream.on_end()
            if stream.finished:
                self._forget(stream)

    def _on_window(self, event: Any) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_window()
        else:
            for stream in list(self.blocked):
                stream.on_window()

    def _on_reset(self, event: Any) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        self._forget(stream)
        code = int(event.error_code)
        name = _code_name(code)
        if code == ErrorCodes.REFUSED_STREAM:
            stream.fail(errors.StreamRefused(f"the server refused the stream ({name})"))
        elif code == ErrorCodes.NO_ERROR and stream._eof:
            # A complete response, then "stop sending": the request body is not needed.
            stream._local_ended = True
        else:
            why = f"the server reset the stream ({name})"
            stream.fail(errors.StreamReset(why, code, remote=True))

    def _on_settings(self, event: Any) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            for stream in list(self.blocked):
                stream.on_window()
        self._on_change(self)

    def _on_ping_ack(self, event: Any) -> None:
        self._ping_deadline = None

    def _on_goaway(self, event: Any) -> None:
        self.going_away = True
        last = event.last_stream_id if event.last_stream_id is not None else _MAX_STREAM_ID
        name = _code_name(int(event.error_code))
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last:
                self._forget(stream)
                stream.fail(errors.StreamRefused(f"the server is going away ({name})"))
        if not self.ready.done():
            self.ready.set_exception(errors.ConnectFailed(f"the server sent GOAWAY ({name})"))
        if not self.streams:
            self.close()
        self._on_change(self)

    # -- output, timers, teardown ---------------------------------------------------------

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self.closed:
            self._transport.write(data)

    def _arm_timer(self) -> None:
        settings = self.settings
        period = min(settings.idle_timeout, settings.keepalive_interval or settings.idle_timeout)
        self._timer = self.loop.call_later(max(0.05, period / 4), self._tick)

    def _tick(self) -> None:
        if self.closed:
            return
        now = self.loop.time()
        settings = self.settings
        if self._ping_deadline is not None and now >= self._ping_deadline:
            self._abort(
                errors.HTTP2Timeout(
                    f"the server did not answer a PING within {settings.keepalive_timeout:g}s"
                )
            )
            return
        if self._idle_since is not None and now - self._idle_since >= settings.idle_timeout:
            self.close()
            return
        interval = settings.keepalive_interval
        if (
            interval
            and self.streams
            and self._ping_deadline is None
            and now - self._last_rx >= interval
        ):
            self._h2.ping(b"vgkeepal")
            self._flush()
            self._ping_deadline = now + settings.keepalive_timeout
        self._arm_timer()

    def close(self) -> None:
        """Orderly close: GOAWAY, then the socket (streams still open are failed)."""
        if self.closed:
            return
        self.going_away = True
        try:
            self._h2.close_connection()
            self._flush()
        except H2Error:
            pass
        if self._transport is not None:
            self._transport.close()
        else:
            self.connection_lost(None)

    def _abort(self, exc: errors.HTTP2Error) -> None:
        if self._error is None:
            self._error = exc
        self.going_away = True
        if self._transport is not None:
            self._transport.abort()
        else:
            self.connection_lost(None)


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error code {code}"
