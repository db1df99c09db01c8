"""One bidirectional stream = one Bedrock session: input verified and decoded, output framed.

The input task reads the client's DATA, splits it into signed envelopes, checks each envelope's
chained SigV4 signature, unwraps the inner ``chunk`` message down to the Nova Sonic JSON event and
hands it to the brain. The output task frames what the brain emits (or the error it ends with)
the way Bedrock does. Input is acknowledged to HTTP/2 flow control only after it was processed,
so a client cannot make the stand-in buffer without bound.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import TYPE_CHECKING, Final

import structlog
from h2.errors import ErrorCodes

from voicegate.backends.base import (
    BackendError,
    InternalServerError,
    ModelTimeout,
    ValidationFailed,
)
from voicegate.backends.inprocess import InProcessStream
from voicegate.sonic.events import (
    AudioInput,
    AudioOutput,
    InputEvent,
    OutputEvent,
    SonicProtocolError,
    decode_input,
    encode_output,
)
from voicegate.standin.errors import (
    IDLE_MESSAGE,
    TIMEOUT_MESSAGE,
    ResetStream,
    exception_message,
    exception_type,
)
from voicegate.standin.eventstream import (
    EventStreamError,
    MessageDecoder,
    decode_message,
    encode_message,
)
from voicegate.standin.records import SessionRecord
from voicegate.standin.sigv4 import EventVerifier, SignatureError

if TYPE_CHECKING:
    from voicegate.standin.h2 import Connection

log = structlog.get_logger(__name__)

MAX_EVENT_BYTES: Final = 1_000_000
"""Bedrock's limit on one event's ``bytes`` blob (the Nova Sonic JSON)."""
MAX_ENVELOPE_BYTES: Final = 1_400_000
"""Largest signed envelope accepted: a maximal event, base64'd, in JSON, framed twice."""


class StreamGone(Exception):
    """The client reset the stream or the connection went away."""


def event_message(event: OutputEvent) -> bytes:
    """One output event as Bedrock frames it: JSON ``{"bytes": base64(Nova JSON)}``."""
    nova = json.dumps(encode_output(event), separators=(",", ":")).encode()
    body = b'{"bytes":"' + base64.b64encode(nova) + b'"}'
    return encode_message(
        {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"},
        body,
    )


class Session:
    def __init__(
        self,
        cx: Connection,
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
        except StreamGone:
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


__all__ = ["MAX_ENVELOPE_BYTES", "MAX_EVENT_BYTES", "Session", "StreamGone", "event_message"]
