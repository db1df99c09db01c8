"""One bidirectional stream = one Bedrock session: input verified and decoded, output framed.

The input task reads the client's DATA, splits it into signed envelopes, checks each envelope's
chained SigV4 signature, unwraps the inner ``chunk`` message down to the Nova Sonic JSON event,
checks it against the documented schema (``schema.py``) and hands it to the brain, whose
grammar checks the order. The output task frames what the brain emits (or the error it ends
with) the way Bedrock does. Input is acknowledged to HTTP/2 flow control only after it was
processed, so a client cannot make the stand-in buffer without bound.

A session ends well only in order: audio contentEnd, promptEnd, sessionEnd, then the client's
end of input. The output's END_STREAM waits for that end of input, so an event sent after
sessionEnd is still answered with a ValidationException; an input that ends without sessionEnd
is one too. Once audio streams, no audio for ``idle_timeout`` ends the session like Bedrock's
"Timed out waiting for input events".
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
from voicegate.backends.grammar import invalid
from voicegate.backends.inprocess import InProcessStream
from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    AudioOutput,
    InputEvent,
    OutputEvent,
    encode_output,
)
from voicegate.standin.errors import (
    IDLE_MESSAGE,
    TIMEOUT_MESSAGE,
    ResetStream,
    exception_message,
    exception_type,
)
from voicegate.standin.event_chain import EventVerifier
from voicegate.standin.eventstream import (
    EventStreamError,
    MessageDecoder,
    decode_message,
    encode_message,
)
from voicegate.standin.quirks import TRANSIENT_AFTER_S, TRANSIENT_EVERY, TRANSIENT_MESSAGES
from voicegate.standin.records import SessionRecord
from voicegate.standin.schema import SchemaError, decode
from voicegate.standin.sigv4 import SignatureError

if TYPE_CHECKING:
    from voicegate.standin.h2 import Connection

log = structlog.get_logger(__name__)

MAX_EVENT_BYTES: Final = 1_000_000
"""Bedrock's limit on one event's ``bytes`` blob (the Nova Sonic JSON)."""
MAX_ENVELOPE_BYTES: Final = 1_400_000
"""Largest signed envelope accepted: a maximal event, base64'd, in JSON, framed twice."""


NO_SESSION_END: Final = (
    "the input stream ended before sessionEnd (close a session with the audio contentEnd, "
    "promptEnd and sessionEnd)"
)


class StreamGone(Exception):
    """The client reset the stream or the connection went away."""


class WireError(ValueError):
    """The inner message around a Nova Sonic event is malformed."""


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
        self.input_over = asyncio.Event()
        """The client's input ended (or was refused): the output may end now."""
        self.late_error: BackendError | None = None
        """A refusal that came after the brain's output ended in order (after sessionEnd)."""
        self.last_audio = 0.0

    def start(self, session_limit: float | None) -> None:
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self._input()))
        self.tasks.append(loop.create_task(self._output()))
        if session_limit is not None:
            self.tasks.append(loop.create_task(self._limit(session_limit)))
        server = self.cx.server
        if "transient-errors" in server.quirks and server.sessions_started % TRANSIENT_EVERY == 0:
            message = TRANSIENT_MESSAGES[server.sessions_started // TRANSIENT_EVERY % 3]
            self.tasks.append(loop.create_task(self._transient(message)))
        for task in self.tasks[:2]:
            task.add_done_callback(self._side_done)

    # -- input ------------------------------------------------------------------------------

    def _side_done(self, _task: asyncio.Task[None]) -> None:
        if all(t.done() for t in self.tasks[:2]):
            self.record.closed.set()

    async def _input(self) -> None:
        try:
            await self._read_input()
        finally:
            self.input_over.set()

    def _idle_left(self) -> float:
        """Seconds of silence left: no audio once it streams, no event at all before."""
        idle = self.cx.server.idle_timeout
        grammar = self.brain.grammar
        if grammar.audio_started and not grammar.audio_ended:
            return max(0.0, self.last_audio + idle - asyncio.get_running_loop().time())
        return idle

    async def _read_input(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._idle_left()):
                    item = await self.inbound.get()
            except TimeoutError:
                if self.output_done:
                    # The client never closed its side after we finished: release the stream.
                    self.cx.reset(self.stream_id, ErrorCodes.NO_ERROR)
                    return
                # The API reference's ModelTimeoutException ("processing time exceeded the
                # model timeout length") is what a stream without input gets.
                await self._refuse(ModelTimeout(IDLE_MESSAGE))
                self.last_audio = asyncio.get_running_loop().time()  # wait a full idle again
                continue
            if item is None:
                self.record.client_ended = True
                if not self.refused:
                    if not self.decoder.at_boundary():
                        await self._refuse(ValidationFailed("Invalid event bytes: truncated"))
                    elif not self.brain.ended_in_order:
                        await self._refuse(invalid(NO_SESSION_END))
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
            except (EventStreamError, WireError, SchemaError) as exc:
                await self._refuse(ValidationFailed(str(exc)))
                return
            if isinstance(event, AudioInput | AudioContentStart):
                self.last_audio = asyncio.get_running_loop().time()
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
            raise WireError(
                "expected an event message of type chunk, got "
                f"{inner.text(':message-type')}/{inner.text(':event-type')}"
            )
        ctype = inner.text(":content-type")
        if ctype is not None and ctype != "application/json":
            raise WireError(f"unsupported :content-type {ctype}")
        try:
            wrapper = json.loads(inner.payload)
        except (ValueError, RecursionError) as exc:
            raise WireError("the chunk payload is not JSON") from exc
        blob = wrapper.get("bytes") if isinstance(wrapper, dict) else None
        if not isinstance(blob, str):
            raise WireError('the chunk payload must be {"bytes": "<base64>"}')
        if len(blob) > (MAX_EVENT_BYTES + 2) // 3 * 4:
            raise WireError(f"an event may hold at most {MAX_EVENT_BYTES} bytes")
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WireError("the chunk bytes are not valid base64") from exc
        if len(raw) > MAX_EVENT_BYTES:
            raise WireError(f"an event may hold at most {MAX_EVENT_BYTES} bytes")
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise WireError("the event is not JSON") from exc
        name, event = decode(obj, self.record.model_id)
        self.record._log(name, obj["event"][name])
        if isinstance(event, AudioInput):
            self.record.audio_chunks += 1
            self.record.audio_bytes += len(event.content)
            arrived = asyncio.get_running_loop().time()
            self.record.audio_arrivals.append((arrived, len(event.content)))
        elif isinstance(event, AudioContentStart):
            self.record.audio_rate = event.sample_rate
        return event

    async def _refuse(self, error: BackendError) -> None:
        """Stop processing input and end the output with ``error`` (after what is queued)."""
        if self.refused:
            return
        self.refused = True
        self.record.error = error.message
        log.info("standin_refused", stream=self.stream_id, error=error.message)
        if self.brain.ended_in_order:
            self.late_error = error  # the brain's output is over; the session reports it
            self.input_over.set()
        else:
            await self.brain.fail(error)

    async def _transient(self, message: str) -> None:
        """``--quirks transient-errors``: a Bedrock-side failure of a long session, reported
        as a ValidationException (as pipecat#3387 and LiveKit's client saw)."""
        await asyncio.sleep(TRANSIENT_AFTER_S)
        if not self.output_done:
            await self._refuse(ValidationFailed(message))

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
                # Ended in order (sessionEnd): END_STREAM once the client's input is over too.
                await self.input_over.wait()
                if self.late_error is not None:
                    raise self.late_error
                await self.cx.send_data(self, b"", end_stream=True)
                record.outcome = "completed" if self.brain.ended_in_order else "ended"
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
