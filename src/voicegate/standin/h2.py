"""One TLS connection speaking HTTP/2 (the ``h2`` state machine on asyncio), as Bedrock does.

The connection reads frames, hands each new request to the server's router, feeds each stream's
DATA to its ``Session`` and writes what the sessions send, always within the peer's flow-control
windows. Only ALPN ``h2`` is served: the SDK's CRT transport needs HTTP/2 for the duplex stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from typing import TYPE_CHECKING, Any, Final

import structlog
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes

from voicegate.standin.quirks import GOAWAY_AFTER_S
from voicegate.standin.records import Rejection
from voicegate.standin.session import Session, StreamGone

if TYPE_CHECKING:
    from voicegate.standin.server import StandIn

log = structlog.get_logger(__name__)

DEFAULT_WINDOW: Final = 65535
STREAM_WINDOW: Final = 256 * 1024
CONNECTION_WINDOW: Final = 1024 * 1024
MAX_STREAMS_PER_CONNECTION: Final = 100
MAX_HEADER_LIST_SIZE: Final = 64 * 1024
EVENTSTREAM: Final = "application/vnd.amazon.eventstream"


class Connection:
    def __init__(
        self, server: StandIn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.sessions: dict[int, Session] = {}
        self.closed = False

    async def run(self) -> None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            log.info("standin_refused_connection", reason="ALPN h2 not negotiated")
            self.writer.close()
            return
        self.h2.local_settings.update(
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS_PER_CONNECTION,
                SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            }
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW)
        try:
            await self.flush()
            opened = asyncio.get_running_loop().time()
            while not self.closed:
                timeout = None if self.sessions else self.server.idle_timeout
                goaway_at = None
                if "goaway" in self.server.quirks and self.sessions:
                    # --quirks goaway: a long-lived connection is sent GOAWAY (as load
                    # balancers and deployments do); every stream on it is gone.
                    goaway_at = opened + GOAWAY_AFTER_S
                    left = max(0.0, goaway_at - asyncio.get_running_loop().time())
                    timeout = left if timeout is None else min(timeout, left)
                try:
                    async with asyncio.timeout(timeout):
                        data = await self.reader.read(65536)
                except TimeoutError:
                    if goaway_at is not None and asyncio.get_running_loop().time() >= goaway_at:
                        log.info("standin_goaway", streams=len(self.sessions))
                    self.h2.close_connection()
                    await self.flush()
                    break
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except ProtocolError as exc:
                    log.info("standin_protocol_error", error=str(exc))
                    await self.flush()
                    break
                for event in events:
                    await self._handle(event)
                await self.flush()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            if not self.closed and not self.writer.is_closing():
                # Going away (server stop): tell the client, best effort.
                with contextlib.suppress(Exception):
                    self.h2.close_connection()
                    self.writer.write(self.h2.data_to_send())
            self.closed = True
            for session in list(self.sessions.values()):
                session.abort("connection_lost")
            tasks = [t for s in self.sessions.values() for t in s.tasks]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self.writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.writer.wait_closed()

    async def _handle(self, event: object) -> None:
        match event:
            case RequestReceived():
                await self._request(event.stream_id, event.headers or [])
                if event.stream_ended is not None:
                    self._client_end(event.stream_id)
            case DataReceived():
                session = self.sessions.get(event.stream_id)
                if session is not None and not session.gone:
                    session.inbound.put_nowait((event.data, event.flow_controlled_length))
                else:
                    self.ack(event.stream_id, event.flow_controlled_length)
                if event.stream_ended is not None:
                    self._client_end(event.stream_id)
            case StreamEnded():
                self._client_end(event.stream_id)
            case StreamReset():
                session = self.sessions.pop(event.stream_id, None)
                if session is not None:
                    session.abort("client_reset")
            case WindowUpdated():
                if event.stream_id == 0:
                    for session in self.sessions.values():
                        session.window.set()
                elif (session := self.sessions.get(event.stream_id)) is not None:
                    session.window.set()
            case RemoteSettingsChanged():
                for session in self.sessions.values():
                    session.window.set()
            case ConnectionTerminated():
                self.closed = True

    def _client_end(self, stream_id: int) -> None:
        session = self.sessions.get(stream_id)
        if session is not None:
            session.inbound.put_nowait(None)

    async def _request(self, stream_id: int, raw_headers: Any) -> None:
        pseudo: dict[str, str] = {}
        headers: dict[str, str] = {}
        for name, value in raw_headers:
            name = name.decode() if isinstance(name, bytes) else str(name)
            value = value.decode() if isinstance(value, bytes) else str(value)
            if name.startswith(":"):
                pseudo[name] = value
            else:
                key = name.lower()
                headers[key] = f"{headers[key]},{value}" if key in headers else value
        if "host" not in headers and ":authority" in pseudo:
            headers["host"] = pseudo[":authority"]
        await self.server.route(self, stream_id, pseudo, headers)

    def accept(self, session: Session, request_id: str) -> None:
        """Answer 200 and start the session (its input and output tasks)."""
        stream_id = session.stream_id
        self.sessions[stream_id] = session
        self.server.active_sessions += 1
        self.h2.send_headers(
            stream_id,
            [
                (":status", "200"),
                ("content-type", EVENTSTREAM),
                ("x-amzn-requestid", request_id),
            ],
        )
        # Widen the stream's receive window with an explicit WINDOW_UPDATE rather than
        # SETTINGS_INITIAL_WINDOW_SIZE: a stream opened before the client saw our SETTINGS
        # stalled at 64 KiB with the CRT client while h2 believed the window was larger.
        self.h2.increment_flow_control_window(STREAM_WINDOW - DEFAULT_WINDOW, stream_id)
        session.start(self.server.session_limit)
        session.tasks[1].add_done_callback(lambda _t: self._session_output_done(session))

    def _session_output_done(self, session: Session) -> None:
        self.server.active_sessions -= 1
        if session.tasks[0].done() and self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]
        else:
            session.tasks[0].add_done_callback(lambda _t: self._forget(session))

    def _forget(self, session: Session) -> None:
        if self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]

    def reject(
        self,
        stream_id: int,
        status: int,
        error_type: str,
        message: str,
        path: str,
        code: str | None = None,
    ) -> None:
        """Refuse a request before its stream opens, the way Bedrock does (HTTP status,
        ``x-amzn-errortype`` and a JSON ``{"message"}`` body)."""
        body = json.dumps({"message": message}).encode()
        headers = [
            (":status", str(status)),
            ("content-type", "application/json"),
            ("x-amzn-errortype", error_type),
            ("x-amzn-requestid", str(uuid.uuid4())),
            ("content-length", str(len(body))),
        ]
        if code is not None:
            headers.append(("x-amzn-standin-error-code", code))
        self.server.rejections.append(Rejection(status, error_type, message, path))
        log.info("standin_rejected", status=status, error_type=error_type, message=message)
        self.h2.send_headers(stream_id, headers)
        self.h2.send_data(stream_id, body, end_stream=True)

    # -- I/O helpers --------------------------------------------------------------------------

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)
            await self.writer.drain()

    def ack(self, stream_id: int, flow: int) -> None:
        if self.closed or flow == 0:
            return
        try:
            self.h2.acknowledge_received_data(flow, stream_id)
        except H2Error:
            return
        self._flush_soon()

    def reset(self, stream_id: int, code: ErrorCodes) -> None:
        if self.closed:
            return
        with contextlib.suppress(H2Error):
            self.h2.reset_stream(stream_id, code)
        self._flush_soon()

    def _flush_soon(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def send_data(self, session: Session, data: bytes, end_stream: bool = False) -> None:
        """Send within the client's flow-control windows, waiting for WINDOW_UPDATEs."""
        view = memoryview(data)
        sid = session.stream_id
        while True:
            if session.gone or self.closed:
                raise StreamGone()
            if not view:
                if end_stream:
                    try:
                        self.h2.end_stream(sid)
                    except H2Error as exc:
                        raise StreamGone() from exc
                    await self._drain()
                return
            try:
                window = self.h2.local_flow_control_window(sid)
            except H2Error as exc:
                raise StreamGone() from exc
            if window <= 0:
                session.window.clear()
                await session.window.wait()
                continue
            n = min(window, self.h2.max_outbound_frame_size, len(view))
            last = end_stream and n == len(view)
            try:
                self.h2.send_data(sid, bytes(view[:n]), end_stream=last)
            except H2Error as exc:
                raise StreamGone() from exc
            view = view[n:]
            await self._drain()
            if last:
                return

    async def _drain(self) -> None:
        try:
            await self.flush()
        except (ConnectionError, OSError) as exc:
            raise StreamGone() from exc


__all__ = ["EVENTSTREAM", "Connection"]
