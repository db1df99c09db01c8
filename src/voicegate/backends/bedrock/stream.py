"""One Nova Sonic session over one HTTP/2 stream of the AWS SDK: ``BedrockStream``.

One receive task per stream owns liveness: the moment it sees the stream end or fail, sends stop
being accepted and the SDK's request body is abandoned. This matters because SDK 0.12 has three
traps on a reset stream (docs/bedrock.md): ``receive()`` reports a reset as a clean end,
``send()`` accepts 16 more chunks and then blocks forever, and ``input_stream.close()`` blocks
forever ignoring cancellation. Every await on the network here has a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import structlog

from voicegate import sonic
from voicegate.backends.base import BackendError, ModelStreamError, StreamLost
from voicegate.backends.bedrock.credentials import signing_as
from voicegate.backends.bedrock.errors import map_error
from voicegate.backends.bedrock.settings import BedrockSettings

if TYPE_CHECKING:
    from smithy_aws_core.identity import AWSCredentialsIdentity

log = structlog.get_logger(__name__)

MAX_QUEUED_OUTPUT: Final = 1024
"""Decoded output events waiting for the consumer; when full the receive task waits, which
back-pressures Bedrock through HTTP/2 flow control rather than dropping anything."""


TIMED_EVERY: Final = 16
"""One event in this many has its steps timed (``StreamStats``); the first always is."""


@dataclass(slots=True)
class StreamStats:
    """Per-stream counters; CPU fields are thread CPU seconds spent on this stream's events.

    ``encode_cpu_s`` is voicegate's JSON + base64 of the Nova event. ``sdk_send_cpu_s`` is the
    SDK's part of a send: wrapping that JSON in another JSON + base64 layer, event-stream
    framing, SHA-256 of the payload and the chained SigV4 event signature (approximate: it is
    measured across an await that normally does not yield). ``decode_cpu_s`` covers JSON and
    base64 decoding of output events; the SDK's own receive-side framing is not included.

    Each is an estimate from one event in ``TIMED_EVERY`` (scaled up): reading a thread's CPU
    clock is a system call, and timing every step of every event cost four of them per event,
    more than the templated encode it measures.
    """

    events_sent: int = 0
    audio_bytes_sent: int = 0
    payload_bytes_sent: int = 0
    events_received: int = 0
    audio_bytes_received: int = 0
    encode_cpu_s: float = 0.0
    sdk_send_cpu_s: float = 0.0
    decode_cpu_s: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.encode_cpu_s + self.sdk_send_cpu_s + self.decode_cpu_s


@dataclass(frozen=True, slots=True)
class _Terminal:
    error: BackendError | None


class BedrockStream:
    """One Nova Sonic session over one HTTP/2 stream. Implements ``BackendStream``."""

    def __init__(
        self,
        sdk_stream: Any,
        settings: BedrockSettings,
        stream_id: str,
        identity: AWSCredentialsIdentity | None = None,
    ) -> None:
        self._sdk = sdk_stream
        self.identity = identity
        """The identity the request was signed with: every event of the stream is signed with
        it too (``signing_as``), however often the process's credentials rotate meanwhile."""
        self._settings = settings
        self.stream_id = stream_id
        self.stats = StreamStats()
        self._encodes = self._sends = self._decodes = 0  # for TIMED_EVERY
        self._queue: asyncio.Queue[sonic.OutputEvent | _Terminal] = asyncio.Queue(MAX_QUEUED_OUTPUT)
        self._final: _Terminal | None = None
        self._send_lock = asyncio.Lock()
        self._dead: BackendError | None = None
        self._session_end_sent = False
        self._dropped_contents: set[str] = set()
        """SYSTEM_SPEECH contents left out for a model without the role (their names)."""
        self._input_closed = False
        self._closed = False
        self._pump_task: asyncio.Task[None] | None = None
        self._abandon_task: asyncio.Task[None] | None = None
        self._receiver: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the receive task (it owns liveness even before events() is iterated)."""
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(
                self._pump(), name=f"bedrock-receive-{self.stream_id}"
            )

    def credentials_expiration(self) -> datetime | None:
        """When the keys this stream signs with expire (None: long-term keys)."""
        return self.identity.expiration if self.identity is not None else None

    @property
    def alive(self) -> bool:
        return self._dead is None and not self._closed

    @property
    def error(self) -> BackendError | None:
        """Why the stream died, once it has."""
        return self._dead

    # -- sending ----------------------------------------------------------------------------

    async def send(self, event: sonic.InputEvent) -> None:
        """Encode and send one event, within ``send_timeout``; StreamLost once dead."""
        await self.send_all((event,))

    async def send_all(self, events: Sequence[sonic.InputEvent]) -> None:
        """Encode and send events back to back, within ``send_timeout``; StreamLost once dead.

        The stream's one send lock is held across them: each event's signature chains on the
        previous one, so signing and writing must happen in the same order for every task, and
        a block (a text content, a tool result) must not have another sender's audio inside.
        """
        self._check_sendable()
        events = self._supported(events)
        if not events:
            return
        encoded = [self._encode(event) for event in events]
        in_sdk = False
        try:
            async with asyncio.timeout(self._settings.send_timeout):
                async with self._send_lock:
                    for event, payload, chunk in encoded:
                        self._check_sendable()
                        in_sdk = True
                        timed = self._sends % TIMED_EVERY == 0
                        self._sends += 1
                        t2 = time.thread_time() if timed else 0.0
                        with signing_as(self.identity):
                            await self._sdk.input_stream.send(chunk)
                        if timed:
                            self.stats.sdk_send_cpu_s += (time.thread_time() - t2) * TIMED_EVERY
                        in_sdk = False
                        self._sent(event, payload)
        except TimeoutError:
            why = (
                "stream reset or network stuck"
                if self._receiver is not None
                else "Bedrock has not answered the request yet: connection or TLS setup"
            )
            err = StreamLost(
                f"sending to Bedrock stalled for {self._settings.send_timeout:g}s ({why})"
            )
            await self._die(err)
            raise err from None
        except asyncio.CancelledError:
            if in_sdk:
                # Cancelled between signing and writing: the signature chain is broken.
                self._die_soon(StreamLost("a send was cancelled mid-write"))
            raise
        except BackendError:
            raise
        except Exception as exc:
            cause = self._dead or map_error(exc)
            lost = (
                cause
                if isinstance(cause, StreamLost)
                else StreamLost(f"send failed: {cause.message}")
            )
            await self._die(lost)
            raise lost from exc
        if self._session_end_sent:
            # Nothing may follow sessionEnd: half-close now so Bedrock sees END_STREAM and
            # can finish the response even if our caller waits for events() before close().
            await self._close_input()

    def _supported(self, events: Sequence[sonic.InputEvent]) -> Sequence[sonic.InputEvent]:
        """Without the events of a SYSTEM_SPEECH content when the model is not Nova 2: Nova
        Sonic v1 documents no such role and would refuse the session for it."""
        if self._settings.is_nova2:
            return events
        kept: list[sonic.InputEvent] = []
        for event in events:
            if isinstance(event, sonic.TextContentStart) and event.role == "SYSTEM_SPEECH":
                self._dropped_contents.add(event.content_name)
                log.info("bedrock_system_speech_dropped", model=self._settings.model_id)
            elif isinstance(event, sonic.TextContentStart) and _is_filler(event, events):
                # Nova Sonic v1 waits for a tool's result and takes no text mid-turn: a slow
                # tool's filler instruction is for Nova 2 only.
                self._dropped_contents.add(event.content_name)
                log.info("bedrock_tool_filler_dropped", model=self._settings.model_id)
            elif isinstance(event, (sonic.TextInput, sonic.ContentEnd)) and (
                event.content_name in self._dropped_contents
            ):
                continue
            else:
                kept.append(event)
        return kept

    def _encode(self, event: sonic.InputEvent) -> tuple[sonic.InputEvent, bytes, Any]:
        timed = self._encodes % TIMED_EVERY == 0
        self._encodes += 1
        t0 = time.thread_time() if timed else 0.0
        if (
            isinstance(event, sonic.SessionStart)
            and event.endpointing_sensitivity is not None
            and not self._settings.is_nova2
        ):
            # Nova Sonic v1 documents no turnDetectionConfiguration: Bedrock refuses the
            # unknown field, so v1 sessions go without it.
            log.info("bedrock_endpointing_dropped", model=self._settings.model_id)
            event = dataclasses.replace(event, endpointing_sensitivity=None)
        if isinstance(event, sonic.AudioInput):
            payload = sonic.audio_input_payload(event)  # 30 a second: the templated fast path
        else:
            payload = sonic.dumps(sonic.encode_input(event))
        chunk = _input_chunk(payload)
        if timed:
            self.stats.encode_cpu_s += (time.thread_time() - t0) * TIMED_EVERY
        return event, payload, chunk

    def _sent(self, event: sonic.InputEvent, payload: bytes) -> None:
        self.stats.events_sent += 1
        self.stats.payload_bytes_sent += len(payload)
        if isinstance(event, sonic.AudioInput):
            self.stats.audio_bytes_sent += len(event.content)
        elif isinstance(event, sonic.SessionEnd):
            self._session_end_sent = True

    def _check_sendable(self) -> None:
        if self._dead is not None:
            raise StreamLost(f"Bedrock stream is gone: {self._dead.message}", cause=self._dead)
        if self._closed or self._input_closed:
            raise StreamLost("Bedrock stream is closed for sending")

    # -- receiving --------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[sonic.OutputEvent]:
        """Decoded output events; ends after an orderly session end, else raises."""
        while True:
            if self._final is not None and self._queue.empty():
                if self._final.error is not None:
                    raise self._final.error
                return
            item = await self._queue.get()
            if isinstance(item, _Terminal):
                self._final = item
                continue
            yield item

    async def _pump(self) -> None:
        terminal: BackendError | None = None
        try:
            _, receiver = await self._sdk.await_output()
            self._receiver = receiver
            while True:
                item = await receiver.receive()
                if item is None:
                    if not self._session_end_sent and not self._closed:
                        # SDK 0.12 reports an RST_STREAM exactly like a clean end, so an end
                        # the client did not ask for (sessionEnd) is a lost stream.
                        terminal = StreamLost(
                            "Bedrock ended the stream before the session was closed "
                            "(stream reset or connection lost)"
                        )
                    break
                data = getattr(getattr(item, "value", None), "bytes_", None)
                if not isinstance(data, bytes | bytearray):
                    continue  # an event variant this SDK version does not know
                event = self._decode(bytes(data))
                if event is not None:
                    await self._queue.put(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            terminal = map_error(exc)
            if self._closed and self._dead is None:
                # The caller closed the stream: what Bedrock says about a session it was told
                # to abandon (e.g. that no sessionEnd came) is not the caller's failure.
                log.debug("bedrock_error_after_close", stream=self.stream_id, kind=terminal.kind)
                terminal = None
        if terminal is not None:
            await self._die(terminal)
        else:
            self._input_closed = True
        await self._queue.put(_Terminal(terminal))

    def _decode(self, data: bytes) -> sonic.OutputEvent | None:
        timed = self._decodes % TIMED_EVERY == 0
        self._decodes += 1
        t0 = time.thread_time() if timed else 0.0
        try:
            event = sonic.decode_output(json.loads(data))
        except (ValueError, sonic.SonicProtocolError) as exc:
            raise ModelStreamError(f"Bedrock sent an unreadable event: {exc}") from exc
        finally:
            if timed:
                self.stats.decode_cpu_s += (time.thread_time() - t0) * TIMED_EVERY
        if event is not None:
            self.stats.events_received += 1
            if isinstance(event, sonic.AudioOutput):
                self.stats.audio_bytes_received += len(event.content)
        return event

    # -- teardown ---------------------------------------------------------------------------

    async def _die(self, err: BackendError) -> None:
        """Record the stream as dead and release anything blocked on its request body."""
        if self._dead is None:
            self._dead = err
            log.info("bedrock_stream_lost", stream=self.stream_id, kind=err.kind, error=err.message)
        await self._abandon_input()

    def _die_soon(self, err: BackendError) -> None:
        if self._dead is None:
            self._dead = err
        if self._abandon_task is None:
            self._abandon_task = asyncio.create_task(self._abandon_input())

    async def _abandon_input(self) -> None:
        """Drop the request body without flushing, so nothing waits on a dead stream.

        Workaround for SDK 0.12 on a reset stream (docs/bedrock.md, "The SDK's traps"; the
        close-path CRT trap reported as aws/aws-sdk-python#13): the publisher's body provider
        flushes on close by default (smithy-lang/smithy-python#338), and a dead HTTP/2 stream
        never drains it, so ``send()`` blocks after 16 chunks and ``input_stream.close()``
        blocks forever, even when cancelled. Closing the provider with ``flush=False`` (a
        private attribute, ``_writer``) wakes every waiter; later writes fail fast instead.
        """
        writer = getattr(self._sdk.input_stream, "_writer", None)
        close = getattr(writer, "close", None)
        if close is None:
            return
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(self._settings.close_timeout):
                await close(flush=False)

    async def _close_input(self) -> None:
        """Orderly half-close: signed empty end frame + END_STREAM, within close_timeout."""
        if self._input_closed:
            return
        self._input_closed = True
        try:
            async with asyncio.timeout(self._settings.close_timeout):
                async with self._send_lock:
                    with signing_as(self.identity):
                        await self._sdk.input_stream.close()
        except TimeoutError:
            await self._die(StreamLost("closing the Bedrock request stream timed out"))
        except asyncio.CancelledError:
            self._die_soon(StreamLost("closing the Bedrock request stream was cancelled"))
            raise
        except Exception as exc:
            # After an abandoned body the SDK raises "closed provider" here: harmless.
            if self._dead is None:
                log.debug("bedrock_input_close_failed", stream=self.stream_id, error=repr(exc))

    async def close(self) -> None:
        """Release the stream. Never hangs (bounded by about 3x close_timeout), never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._close_quietly()
        except asyncio.CancelledError:
            await self._abandon_input()
            raise
        except Exception as exc:  # close() must never raise
            log.warning("bedrock_stream_close_error", stream=self.stream_id, error=repr(exc))

    async def _close_quietly(self) -> None:
        if self._dead is not None:
            await self._abandon_input()
        elif not self._input_closed:
            await self._close_input()
        # Buffered output is of no use after close; dropping it also unblocks a receive task
        # waiting for queue space.
        self._drain()
        # Give Bedrock a moment to finish the response after our END_STREAM, so the receive
        # task ends on its own instead of being cancelled inside CRT (aws/aws-sdk-python#13).
        pump = self._pump_task
        if pump is not None and not pump.done():
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(self._settings.close_timeout):
                    await asyncio.shield(pump)
        if pump is not None and not pump.done():
            await self._abandon_input()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(self._settings.close_timeout):
                    await pump
        if self._abandon_task is not None:
            with contextlib.suppress(Exception):
                await self._abandon_task
        receiver = self._receiver
        if receiver is not None:
            with contextlib.suppress(Exception, TimeoutError, concurrent.futures.InvalidStateError):
                async with asyncio.timeout(self._settings.close_timeout):
                    await receiver.close()
        # Wake a consumer still waiting in events() with the stream's outcome.
        self._drain()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(self._final or _Terminal(self._dead))

    def _drain(self) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Terminal) and self._final is None:
                self._final = item


def _input_chunk(payload: bytes) -> Any:
    from aws_sdk_bedrock_runtime.models import (
        BidirectionalInputPayloadPart,
        InvokeModelWithBidirectionalStreamInputChunk,
    )

    return InvokeModelWithBidirectionalStreamInputChunk(
        value=BidirectionalInputPayloadPart(bytes_=payload)
    )


__all__ = ["MAX_QUEUED_OUTPUT", "TIMED_EVERY", "BedrockStream", "StreamStats"]


def _is_filler(start: sonic.TextContentStart, events: Sequence[sonic.InputEvent]) -> bool:
    """A USER text content of this batch that is a slow tool's filler instruction (the
    conversation sends a content's events in one batch)."""
    if start.role != "USER":
        return False
    return any(
        isinstance(e, sonic.TextInput)
        and e.content_name == start.content_name
        and sonic.filler_of(e.content) is not None
        for e in events
    )
