"""A wire-true stand-in for Bedrock's ``InvokeModelWithBidirectionalStream``.

Bedrock cannot be reached from tests or from a user without AWS, yet the production path (the
real SDK, its CRT HTTP/2 transport, SigV4 event signing, event-stream framing, base64-in-JSON)
is exactly what must be exercised. So this server speaks that protocol for real: HTTP/2 over TLS
(ALPN ``h2``) with the ``h2`` state machine on asyncio, the seed and chained event signatures
verified, every event decoded down to Nova Sonic JSON and checked, and answers produced by a
*brain* (``brains.py``).

What it refuses, and how (chosen to look like Bedrock to the SDK):

* before the stream: an HTTP status, ``x-amzn-errortype`` and JSON ``{"message"}``; a bad
  signature or unknown key is 403 ``AccessDeniedException`` (the AWS code, e.g.
  ``InvalidSignatureException``, is in the message and in ``x-amzn-standin-error-code``), an
  unknown model 404 ``ResourceNotFoundException``, too many sessions 429 ``ThrottlingException``.
* during the stream: an exception event (``:message-type exception``) then END_STREAM; a broken
  signature chain or malformed event is a ``validationException``.

Bounded everywhere: HTTP/2 flow control is honoured in both directions (input is acknowledged
only after it was processed, output waits for the client's window), envelopes are capped, the
brain's output queue is bounded, and idle streams time out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import ssl
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import unquote

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

from voicegate.backends.base import (
    BackendError,
    InternalServerError,
    ModelStreamError,
    ModelTimeout,
    ServiceUnavailable,
    Throttled,
    ValidationFailed,
)
from voicegate.backends.inprocess import InProcessStream
from voicegate.sonic import (
    AudioInput,
    AudioOutput,
    InputEvent,
    OutputEvent,
    SonicProtocolError,
    decode_input,
    encode_output,
)
from voicegate.standin.brains import BrainFactory, ResetStream, make_factory
from voicegate.standin.certs import ensure_certs, server_context
from voicegate.standin.eventstream import (
    EventStreamError,
    Message,
    MessageDecoder,
    decode_message,
    encode_message,
)
from voicegate.standin.sigv4 import (
    Credentials,
    EventVerifier,
    SeedVerified,
    SignatureError,
    verify_request,
)

log = structlog.get_logger(__name__)

TEST_ACCESS_KEY: Final = "AKIDVOICEGATESTANDIN"
TEST_SECRET_KEY: Final = "voicegate-standin-test-secret-key-not-for-aws"
"""The key pair the stand-in verifies against when AWS_ACCESS_KEY_ID/SECRET are not set."""

MODELS: Final = frozenset({"amazon.nova-sonic-v1:0", "amazon.nova-2-sonic-v1:0"})
PROFILE_PREFIXES: Final = ("", "us.", "global.")
PATH_RE: Final = re.compile(r"/model/([^/]+)/invoke-with-bidirectional-stream")
EVENTSTREAM: Final = "application/vnd.amazon.eventstream"

MAX_EVENT_BYTES: Final = 1_000_000
"""Bedrock's limit on one event's ``bytes`` blob (the Nova Sonic JSON)."""
MAX_ENVELOPE_BYTES: Final = 1_400_000
"""Largest signed envelope accepted: a maximal event, base64'd, in JSON, framed twice."""
MAX_LOGGED_EVENTS: Final = 2000
MAX_LOGGED_STRING: Final = 1024
MAX_SESSION_RECORDS: Final = 1000
DEFAULT_WINDOW: Final = 65535
STREAM_WINDOW: Final = 256 * 1024
CONNECTION_WINDOW: Final = 1024 * 1024
MAX_STREAMS_PER_CONNECTION: Final = 100
MAX_HEADER_LIST_SIZE: Final = 64 * 1024
TIMEOUT_MESSAGE: Final = "Model has timed out in processing the request. Try your request again."
IDLE_MESSAGE: Final = "Timed out waiting for input events"

_EXCEPTION_TYPES: Final[tuple[tuple[type[BackendError], str], ...]] = (
    (ValidationFailed, "validationException"),
    (Throttled, "throttlingException"),
    (ModelTimeout, "modelTimeoutException"),
    (ServiceUnavailable, "serviceUnavailableException"),
    (ModelStreamError, "modelStreamErrorException"),
    (InternalServerError, "internalServerException"),
)


def exception_type(error: BackendError) -> str:
    """The ``:exception-type`` Bedrock would send for a brain's error."""
    for cls, name in _EXCEPTION_TYPES:
        if isinstance(error, cls):
            return name
    return "internalServerException"


def exception_message(error: BackendError) -> Message:
    payload: dict[str, Any] = {"message": error.message}
    if isinstance(error, ModelStreamError):
        payload.update(originalStatusCode=500, originalMessage=error.message)
    return Message(
        {
            ":message-type": "exception",
            ":exception-type": exception_type(error),
            ":content-type": "application/json",
        },
        json.dumps(payload).encode(),
    )


def event_message(event: OutputEvent) -> bytes:
    """One output event as Bedrock frames it: JSON ``{"bytes": base64(Nova JSON)}``."""
    nova = json.dumps(encode_output(event), separators=(",", ":")).encode()
    body = b'{"bytes":"' + base64.b64encode(nova) + b'"}'
    return encode_message(
        {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"},
        body,
    )


def known_model(model_id: str) -> bool:
    return any(model_id.startswith(p) and model_id[len(p) :] in MODELS for p in PROFILE_PREFIXES)


def credentials_from_env() -> Credentials:
    """The key pair to verify against: the environment's when set, else the test keys."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    return Credentials(TEST_ACCESS_KEY, TEST_SECRET_KEY)


# --------------------------------------------------------------------------------------------
# What the server saw, for tests
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SessionRecord:
    """One accepted stream: what arrived, what was verified, what went out, how it ended."""

    request_id: str
    model_id: str
    region: str
    access_key: str
    session_token: bool
    brain: str
    scenario: str | None = None
    envelopes: int = 0
    signatures_verified: int = 0
    end_frame: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    """Decoded Nova input events in order; audio content replaced by a byte count and
    consecutive audioInput events collapsed into one entry with a chunk count."""
    events_dropped: int = 0
    event_counts: Counter[str] = field(default_factory=Counter)
    audio_chunks: int = 0
    audio_bytes: int = 0
    output_counts: Counter[str] = field(default_factory=Counter)
    output_audio_bytes: int = 0
    outcome: str = "open"
    """open | completed | exception:<type> | reset | client_reset | connection_lost"""
    error: str | None = None
    client_ended: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the output side ended (END_STREAM, exception, reset or loss)."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when both sides are over (the client's input ended too, or the stream died)."""

    def input_names(self) -> list[str]:
        return [next(iter(e)) for e in self.events]

    def _log(self, name: str, body: dict[str, Any]) -> None:
        self.event_counts[name] += 1
        if name == "audioInput":
            last = self.events[-1] if self.events else None
            if last is not None and "audioInput" in last:
                last["audioInput"]["chunks"] += 1
                return
            body = {
                "promptName": body.get("promptName"),
                "contentName": body.get("contentName"),
                "chunks": 1,
            }
        if len(self.events) >= MAX_LOGGED_EVENTS:
            self.events_dropped += 1
            return
        self.events.append({name: _clip(body)})


def _clip(value: Any) -> Any:
    """A copy with long strings cut, so a session's log stays small whatever is sent."""
    if isinstance(value, str) and len(value) > MAX_LOGGED_STRING:
        return value[:MAX_LOGGED_STRING] + f"...({len(value)} chars)"
    if isinstance(value, dict):
        return {k: _clip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request refused before the stream opened."""

    status: int
    error_type: str
    message: str
    path: str


class _StreamGone(Exception):
    """The client reset the stream or the connection went away."""


# --------------------------------------------------------------------------------------------
# One HTTP/2 stream = one Bedrock session
# --------------------------------------------------------------------------------------------


class _Session:
    def __init__(
        self,
        cx: _Connection,
        stream_id: int,
        record: SessionRecord,
        brain: InProcessStream,
        verifier: EventVerifier,
    ) -> None:
        self.cx = cx
        self.stream_id = stream_id
        self.record = record
        self.brain = brain
        self.verifier = verifier
        self.decoder = MessageDecoder(MAX_ENVELOPE_BYTES)
        self.inbound: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self.window = asyncio.Event()
        self.refused = False  # input is drained but no longer processed (after an input error)
        self.output_done = False
        self.gone = False
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, session_limit: float | None) -> None:
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self._input()))
        self.tasks.append(loop.create_task(self._output()))
        if session_limit is not None:
            self.tasks.append(loop.create_task(self._limit(session_limit)))
        for task in self.tasks[:2]:
            task.add_done_callback(self._side_done)

    # -- input ------------------------------------------------------------------------------

    def _side_done(self, _task: asyncio.Task[None]) -> None:
        if all(t.done() for t in self.tasks[:2]):
            self.record.closed.set()

    async def _input(self) -> None:
        idle = self.cx.server.idle_timeout
        while True:
            try:
                async with asyncio.timeout(idle):
                    item = await self.inbound.get()
            except TimeoutError:
                if self.output_done:
                    # The client never closed its side after we finished: release the stream.
                    self.cx.reset(self.stream_id, ErrorCodes.NO_ERROR)
                    return
                await self._refuse(ValidationFailed(IDLE_MESSAGE))
                continue
            if item is None:
                self.record.client_ended = True
                if not self.refused:
                    if not self.decoder.at_boundary():
                        await self._refuse(ValidationFailed("Invalid event bytes: truncated"))
                    else:
                        await self.brain.finish()
                return
            data, flow = item
            if not self.refused:
                try:
                    await self._process(data)
                except Exception as exc:  # a stand-in bug must end the stream, not hang it
                    log.exception("standin_input_failed", stream=self.stream_id)
                    await self._refuse(InternalServerError(f"stand-in error: {exc!r}"))
            self.cx.ack(self.stream_id, flow)

    async def _process(self, data: bytes) -> None:
        try:
            envelopes = self.decoder.feed(data)
        except EventStreamError as exc:
            await self._refuse(ValidationFailed(f"Invalid event bytes: {exc}"))
            return
        for envelope in envelopes:
            self.record.envelopes += 1
            try:
                payload = self.verifier.verify(envelope)
            except SignatureError as exc:
                await self._refuse(ValidationFailed(f"{exc.code}: {exc.message}"))
                return
            finally:
                self.record.signatures_verified = self.verifier.verified
            if not payload:
                self.record.end_frame = True
                continue
            try:
                event = self._unwrap(payload)
            except (EventStreamError, SonicProtocolError) as exc:
                await self._refuse(ValidationFailed(str(exc)))
                return
            if self.output_done:
                continue  # like Bedrock after the end of its output: input is ignored
            try:
                await self.brain.send(event)
            except BackendError as exc:
                await self._refuse(exc)
                return

    def _unwrap(self, payload: bytes) -> InputEvent:
        inner = decode_message(payload, MAX_ENVELOPE_BYTES)
        if inner.text(":message-type") != "event" or inner.text(":event-type") != "chunk":
            raise SonicProtocolError(
                "expected an event message of type chunk, got "
                f"{inner.text(':message-type')}/{inner.text(':event-type')}"
            )
        ctype = inner.text(":content-type")
        if ctype is not None and ctype != "application/json":
            raise SonicProtocolError(f"unsupported :content-type {ctype}")
        try:
            wrapper = json.loads(inner.payload)
        except (ValueError, RecursionError) as exc:
            raise SonicProtocolError("the chunk payload is not JSON") from exc
        blob = wrapper.get("bytes") if isinstance(wrapper, dict) else None
        if not isinstance(blob, str):
            raise SonicProtocolError('the chunk payload must be {"bytes": "<base64>"}')
        if len(blob) > (MAX_EVENT_BYTES + 2) // 3 * 4:
            raise SonicProtocolError(f"an event may hold at most {MAX_EVENT_BYTES} bytes")
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SonicProtocolError("the chunk bytes are not valid base64") from exc
        if len(raw) > MAX_EVENT_BYTES:
            raise SonicProtocolError(f"an event may hold at most {MAX_EVENT_BYTES} bytes")
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise SonicProtocolError("the event is not JSON") from exc
        event = decode_input(obj)
        name, body = next(iter(obj["event"].items()))
        self.record._log(name, body)
        if isinstance(event, AudioInput):
            self.record.audio_chunks += 1
            self.record.audio_bytes += len(event.content)
        return event

    async def _refuse(self, error: BackendError) -> None:
        """Stop processing input and end the output with ``error`` (after what is queued)."""
        if self.refused:
            return
        self.refused = True
        self.record.error = error.message
        log.info("standin_refused", stream=self.stream_id, error=error.message)
        await self.brain.fail(error)

    async def _limit(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not self.output_done:
            await self.brain.fail(ModelTimeout(TIMEOUT_MESSAGE))

    # -- output -----------------------------------------------------------------------------

    async def _output(self) -> None:
        record = self.record
        try:
            try:
                async for event in self.brain.events():
                    record.output_counts[type(event).__name__] += 1
                    if isinstance(event, AudioOutput):
                        record.output_audio_bytes += len(event.content)
                    await self.cx.send_data(self, event_message(event))
                await self.cx.send_data(self, b"", end_stream=True)
                record.outcome = "completed"
            except ResetStream as exc:
                record.outcome = "reset"
                record.error = exc.message
                self.cx.reset(self.stream_id, ErrorCodes.INTERNAL_ERROR)
                self.gone = True
                self.tasks[0].cancel()  # nothing more will arrive on a reset stream
            except BackendError as exc:
                record.outcome = f"exception:{exception_type(exc)}"
                record.error = exc.message
                await self.cx.send_data(self, exception_message(exc).encode(), end_stream=True)
        except _StreamGone:
            pass
        finally:
            self.output_done = True
            for task in self.tasks[2:]:
                task.cancel()  # the session-limit timer has nothing left to end
            record.scenario = getattr(getattr(self.brain, "scenario", None), "label", None)
            await self.brain.close()
            record.done.set()

    # -- teardown ---------------------------------------------------------------------------

    def abort(self, outcome: str) -> None:
        """The client reset the stream or the connection died: stop everything now."""
        self.gone = True
        self.window.set()
        if self.record.outcome == "open":
            self.record.outcome = outcome
        for task in self.tasks:
            task.cancel()


# --------------------------------------------------------------------------------------------
# One TLS connection
# --------------------------------------------------------------------------------------------


class _Connection:
    def __init__(
        self, server: StandIn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.sessions: dict[int, _Session] = {}
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
            while not self.closed:
                timeout = None if self.sessions else self.server.idle_timeout
                try:
                    async with asyncio.timeout(timeout):
                        data = await self.reader.read(65536)
                except TimeoutError:
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
        full_path = pseudo.get(":path", "")
        path, _, query = full_path.partition("?")
        server = self.server
        match = PATH_RE.fullmatch(path)
        if pseudo.get(":method") != "POST" or match is None:
            self._reject(stream_id, 404, "UnknownOperationException", "Unknown operation", path)
            return
        try:
            seed = verify_request(server.credentials, "POST", path, query, headers)
        except SignatureError as exc:
            self._reject(stream_id, 403, "AccessDeniedException", exc.message, path, code=exc.code)
            return
        model_id = unquote(match.group(1))
        if not known_model(model_id):
            self._reject(
                stream_id,
                404,
                "ResourceNotFoundException",
                "Could not resolve the foundation model from the provided model identifier.",
                path,
            )
            return
        if headers.get("content-type", EVENTSTREAM).split(";")[0].strip() != EVENTSTREAM:
            self._reject(
                stream_id, 400, "ValidationException", f"Content-Type must be {EVENTSTREAM}", path
            )
            return
        if server.active_sessions >= server.max_sessions:
            self._reject(
                stream_id,
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
                path,
            )
            return
        try:
            brain = await server.factory.open()
        except Exception as exc:
            log.exception("standin_brain_open_failed")
            self._reject(stream_id, 500, "InternalServerException", f"brain: {exc}", path)
            return
        request_id = str(uuid.uuid4())
        record = SessionRecord(
            request_id=request_id,
            model_id=model_id,
            region=seed.region,
            access_key=seed.access_key,
            session_token=seed.session_token is not None,
            brain=server.factory.name,
        )
        server.sessions.append(record)
        session = _Session(
            self, stream_id, record, brain, EventVerifier(server.credentials.secret_key, seed)
        )
        self.sessions[stream_id] = session
        server.active_sessions += 1
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
        session.start(server.session_limit)
        session.tasks[1].add_done_callback(lambda _t: self._session_output_done(session))
        log.info("standin_session", stream=stream_id, model=model_id, request_id=request_id)

    def _session_output_done(self, session: _Session) -> None:
        self.server.active_sessions -= 1
        if session.tasks[0].done() and self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]
        else:
            session.tasks[0].add_done_callback(lambda _t: self._forget(session))

    def _forget(self, session: _Session) -> None:
        if self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]

    def _reject(
        self,
        stream_id: int,
        status: int,
        error_type: str,
        message: str,
        path: str,
        code: str | None = None,
    ) -> None:
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

    async def send_data(self, session: _Session, data: bytes, end_stream: bool = False) -> None:
        """Send within the client's flow-control windows, waiting for WINDOW_UPDATEs."""
        view = memoryview(data)
        sid = session.stream_id
        while True:
            if session.gone or self.closed:
                raise _StreamGone()
            if not view:
                if end_stream:
                    try:
                        self.h2.end_stream(sid)
                    except H2Error as exc:
                        raise _StreamGone() from exc
                    await self._drain()
                return
            try:
                window = self.h2.local_flow_control_window(sid)
            except H2Error as exc:
                raise _StreamGone() from exc
            if window <= 0:
                session.window.clear()
                await session.window.wait()
                continue
            n = min(window, self.h2.max_outbound_frame_size, len(view))
            last = end_stream and n == len(view)
            try:
                self.h2.send_data(sid, bytes(view[:n]), end_stream=last)
            except H2Error as exc:
                raise _StreamGone() from exc
            view = view[n:]
            await self._drain()
            if last:
                return

    async def _drain(self) -> None:
        try:
            await self.flush()
        except (ConnectionError, OSError) as exc:
            raise _StreamGone() from exc


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class StandIn:
    """The stand-in as an async context manager (binds ``port`` 0 by default)::

    async with StandIn(brain="scripted", cert_dir=tmp_path) as s:
        s.endpoint, s.ca_file, s.access_key, s.secret_key, s.sessions
    """

    def __init__(
        self,
        brain: str = "scripted",
        cert_dir: str | os.PathLike[str] = ".",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        session_limit: float | None = None,
        credentials: Credentials | None = None,
        scenario: str = "reply",
        max_sessions: int = 64,
        idle_timeout: float = 60.0,
        factory: BrainFactory | None = None,
    ) -> None:
        self.brain = brain
        self.cert_dir = Path(cert_dir)
        self.host = host
        self.port = port
        self.session_limit = session_limit
        self.credentials = credentials or credentials_from_env()
        self.scenario = scenario
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.factory: BrainFactory = factory or make_factory(brain, scenario)
        self.sessions: deque[SessionRecord] = deque(maxlen=MAX_SESSION_RECORDS)
        self.rejections: deque[Rejection] = deque(maxlen=MAX_SESSION_RECORDS)
        self.active_sessions = 0
        self.ca_file = Path()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def access_key(self) -> str:
        return self.credentials.access_key

    @property
    def secret_key(self) -> str:
        return self.credentials.secret_key

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}"

    def client_env(self, region: str = "us-east-1") -> dict[str, str]:
        """Environment variables that point the real SDK (or voicegate) at this stand-in."""
        env = {
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.endpoint,
            "SSL_CERT_FILE": str(self.ca_file),
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": region,
        }
        if self.credentials.session_token:
            env["AWS_SESSION_TOKEN"] = self.credentials.session_token
        return env

    async def start(self) -> None:
        await self.factory.warm()
        paths = ensure_certs(self.cert_dir)
        self.ca_file = paths.ca_file
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self.port,
            ssl=server_context(paths),
            ssl_handshake_timeout=10.0,
            limit=256 * 1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("standin_listening", endpoint=self.endpoint, brain=self.factory.name)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
            self._server = None
        await self.factory.aclose()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The connection runs in its own task so stop() can cancel it: CPython 3.12.1 logs a
        # spurious error when start_server's own handler task is cancelled
        # (python/cpython#113538, fixed in 3.12.2).
        task = asyncio.get_running_loop().create_task(_Connection(self, reader, writer).run())
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        await asyncio.wait({task})


__all__ = [
    "MODELS",
    "TEST_ACCESS_KEY",
    "TEST_SECRET_KEY",
    "Rejection",
    "SeedVerified",
    "SessionRecord",
    "StandIn",
    "credentials_from_env",
    "event_message",
    "exception_message",
    "known_model",
]
