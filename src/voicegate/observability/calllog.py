"""Each call's record, built from its events, and handed to whoever keeps or sends it.

``CallLog`` is a call observer like the metrics: it never slows a call down. On the event loop it
only appends to the call's in-memory record (bounded, see ``voicegate.store.record``); when a call
starts or ends it puts the record on a bounded queue, and one task hands queued records to the
sinks (webhooks, the call history, traces) off the audio path. A sink that fails is logged and
counted; the others still get the record.

Which events go out:
- ``call.started``: a call was answered here for the first time (not a reconnect of a call this
  process already runs, and not a call adopted from another node: its start was sent there).
- ``call.ended``: once per started call, whatever the reason, by the process that held it last.
  A connection replaced by a reconnect is not an end, and in a cluster a call whose record another
  node has taken over (it moved or was adopted there) is not ended here: ``still_ours`` says so.
- ``call.failed``: a call that could not be set up (the model refused it, negotiation failed) or
  that ended on an error (``error:*``, ``connection-failed``, ``connect-timeout``); such a call,
  if it had started, also gets its ``call.ended``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import structlog

from voicegate.call.events import CallEnded, CallEvent, CallStarted, TurnLatency
from voicegate.conversation import (
    BotInterrupted,
    BotText,
    ConversationError,
    SessionContinued,
    ToolCallFinished,
    ToolCallStarted,
    ToolFiller,
    Usage,
    UserTranscript,
)
from voicegate.privacy import Redaction
from voicegate.store.record import CallRecord, RecordKind, clip

__all__ = ["FAILED_REASONS", "CallLog", "CallSink"]

log = structlog.get_logger(__name__)

MAX_QUEUED: Final = 1000
"""Records waiting for the sinks; beyond (sinks far behind), new ones are dropped and counted."""
FAILED_REASONS: Final = (
    "error:",
    "backend-failed",
    "connection-failed",
    "connect-timeout",
    "offer-timeout",
    "offer-failed",
    "bad-offer",
)
"""End reasons that mean the call failed (prefixes)."""
NOT_STARTED: Final = ("bad-offer",)
"""Refusals of malformed offers: the caller's mistake, answered 400, never a call."""


class CallSink(Protocol):
    """Where finished records go. Runs off the audio path; may await; must not raise for long:
    its exceptions are logged and counted, never passed to the call."""

    async def deliver(self, kind: RecordKind, record: CallRecord) -> None: ...


@dataclass(slots=True)
class _Live:
    record: CallRecord
    tools: dict[str, dict[str, object]]


class CallLog:
    """A ``CallObserver`` of every call; ``sinks`` receive each record as it starts and ends."""

    wants_audio = False

    def __init__(
        self,
        sinks: Sequence[CallSink],
        redaction: Redaction | None = None,
        recording_location: Callable[[str], str | None] = lambda _call_id: None,
        still_ours: Callable[[str], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sinks = list(sinks)
        self._redaction = redaction or Redaction()
        self._recording_location = recording_location
        self.still_ours = still_ours
        self._clock = clock
        self._live: dict[str, _Live] = {}
        self._queue: asyncio.Queue[tuple[RecordKind, CallRecord]] = asyncio.Queue(MAX_QUEUED)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sink_failures = 0
        self.delivered = 0

    # -- the call observer (event loop, never blocks) ---------------------------------------------

    def on_call_event(self, call_id: str, event: CallEvent) -> None:
        if isinstance(event, CallStarted):
            self._started(call_id, event)
            return
        if isinstance(event, CallEnded):
            self._ended(call_id, event)
            return
        live = self._live.get(call_id)
        if live is None:
            return
        record, now = live.record, self._clock()
        match event:
            case UserTranscript(final=True):
                self._say(record, "user", event.text, now)
            case BotText(final=True):
                self._say(record, "assistant", event.text, now)
            case BotInterrupted():
                record.append(record.barge_ins, record.moment(now))
            case TurnLatency():
                model_ms = None if event.model_s is None else round(event.model_s * 1000, 1)
                total_ms = round(event.total_s * 1000, 1)
                turn = {
                    **record.moment(now),
                    "total_ms": total_ms,
                    "model_ms": model_ms,
                    "playout_ms": None if model_ms is None else round(total_ms - model_ms, 1),
                    "speech_end_t": round(max(0.0, now - event.total_s - record.started), 3),
                }
                record.append(record.turns, turn)
            case ToolCallStarted():
                entry: dict[str, object] = {
                    **record.moment(now),
                    "name": event.name,
                    "tool_use_id": event.tool_use_id,
                    "arguments": self._text(event.arguments),
                    "ok": None,
                    "result": "",
                    "ms": None,
                }
                if record.append(record.tool_calls, entry):
                    live.tools[event.tool_use_id] = entry
            case ToolFiller():
                running = live.tools.get(event.tool_use_id)
                if running is not None:
                    running["filler"] = self._text(event.text)
            case ToolCallFinished():
                started = live.tools.pop(event.tool_use_id, None)
                if started is not None:
                    started["ok"] = event.ok
                    started["result"] = self._text(event.result)
                    t0 = started.get("t")
                    if isinstance(t0, float | int):
                        started["ms"] = round((now - record.started - t0) * 1000, 1)
            case SessionContinued():
                record.append(
                    record.continuations,
                    {
                        **record.moment(now),
                        "kind": event.kind,
                        "reason": event.reason,
                        "leg": event.leg,
                        "gap_ms": round(event.gap_ms, 1),
                        "forced": event.forced,
                        "attempts": event.attempts,
                    },
                )
            case ConversationError():
                record.append(
                    record.errors,
                    {
                        **record.moment(now),
                        "kind": event.kind,
                        "message": clip(event.message),
                        "fatal": event.fatal,
                    },
                )
            case Usage():
                # Totals so far; the largest seen is the call's (a new model stream's counts
                # start again, and are added on top of what the call already had).
                record.usage = {
                    "input_tokens": max(record.usage.get("input_tokens", 0), event.input_tokens),
                    "output_tokens": max(record.usage.get("output_tokens", 0), event.output_tokens),
                    "total_tokens": max(record.usage.get("total_tokens", 0), event.total_tokens),
                }
            case _:
                pass

    def _started(self, call_id: str, event: CallStarted) -> None:
        if call_id in self._live:
            return  # a reconnect: the call goes on in its record
        info = event.info
        record = CallRecord(
            call_id=call_id,
            started=info.started_at or self._clock(),
            agent=info.agent,
            subject=info.subject,
            backend=info.backend,
            adopted=info.adopted,
            recording=self._recording_location(call_id) if info.recorded else None,
        )
        self._live[call_id] = _Live(record, {})
        if not info.adopted and not event.restart:
            # A copy: the live record goes on changing while this one waits for the sinks.
            self._put("call.started", copy.deepcopy(record))

    def _ended(self, call_id: str, event: CallEnded) -> None:
        if event.handed_over:
            return  # the connection was replaced; the call goes on
        live = self._live.pop(call_id, None)
        reason = event.reason
        failed = reason.startswith(FAILED_REASONS) and not reason.startswith(NOT_STARTED)
        if live is None:
            if failed:  # refused while being set up: never started
                record = CallRecord(call_id=call_id, started=self._clock() - event.seconds)
                record.ended, record.end_reason = self._clock(), reason
                self._put("call.failed", record)
            return
        record = live.record
        record.ended, record.end_reason = self._clock(), reason
        if failed:
            self._put("call.failed", record)
        self._put("call.ended", record)

    def _say(self, record: CallRecord, role: str, text: str, now: float) -> None:
        if text.strip():
            record.append(
                record.transcript, {**record.moment(now), "role": role, "text": self._text(text)}
            )

    def _text(self, text: str) -> str:
        return clip(self._redaction.apply(text)) if self._redaction else clip(text)

    # -- delivery (off the audio path) ----------------------------------------------------------

    def _put(self, kind: RecordKind, record: CallRecord) -> None:
        try:
            self._queue.put_nowait((kind, record))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("call_record_dropped", pc_id=record.call_id, kind=kind, queued=MAX_QUEUED)
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            kind, record = await self._queue.get()
            try:
                await self._deliver(kind, record)
            finally:
                self._queue.task_done()

    async def _deliver(self, kind: RecordKind, record: CallRecord) -> None:
        if kind == "call.ended" and self.still_ours is not None:
            try:
                ours = await self.still_ours(record.call_id)
            except Exception:
                ours = True  # the directory is down: better a record than none
            if not ours:
                log.info("call_record_moved", pc_id=record.call_id)
                return
        for sink in self.sinks:
            try:
                await sink.deliver(kind, record)
                self.delivered += 1
            except Exception:
                self.sink_failures += 1
                log.exception("call_sink_failed", sink=type(sink).__name__, kind=kind)

    async def flush(self) -> None:
        """Wait until every queued record reached the sinks (shutdown; tests)."""
        if self._task is not None:
            await self._queue.join()

    async def aclose(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
