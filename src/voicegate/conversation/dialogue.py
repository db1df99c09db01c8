"""One call's conversation with a speech model, independent of WebRTC.

The conversation opens a backend stream, sets the session up (sessionStart, promptStart with the
tools, system prompt, history, the one long-lived audio content), streams the user's audio into it
continuously, and turns the model's output into three things for whoever owns the call: audio to
play, a flush when the user barges in, and typed events (transcripts, tool calls, errors, usage).

Rules it keeps, each learned the hard way by other integrations (../shared/reference/nova-sonic.md):
- The model must hear audio without gaps, silence included; if the caller stops supplying audio
  (muted track, network stall) the conversation sends silence on its own clock.
- All sends go through one lock: SigV4 event signatures are chained, so sends must not interleave.
- Barge-in is handled here, the moment either signal arrives (the interruption marker text or an
  INTERRUPTED stop reason), once per assistant turn; audio still arriving for an interrupted
  content is dropped; the marker never reaches transcripts.
- Every toolUse gets a toolResult, error results included, so the stream never dangles.

One call outlives any one model stream (Nova Sonic ends a stream after ~8 minutes, and streams
die): the conversation is a sequence of *legs*, one stream each. Before a leg gets old the next
one is opened in the background and takes over at a natural point (renewal); a leg that fails
is replaced with bounded retries (recovery). Both replay the shaped history and the user's
not-yet-transcribed audio (``continuation``), so the owner of the call sees one continuous
conversation and only a ``SessionContinued`` event. docs/renewal.md has the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import structlog

from voicegate.backends.base import Backend, BackendError, BackendStream, StreamLost
from voicegate.conversation.continuation import (
    ContinuationSettings,
    ReplayBuffer,
    history_bytes,
    shape_history,
)
from voicegate.conversation.tools import ToolRegistry
from voicegate.media.audio import model_chunk_seconds
from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    CompletionEnd,
    ContentEnd,
    InputEvent,
    OutputContentEnd,
    OutputContentStart,
    OutputEvent,
    PromptEnd,
    PromptStart,
    Role,
    SessionEnd,
    SessionStart,
    TextContentStart,
    TextInput,
    TextOutput,
    ToolResult,
    ToolResultContentStart,
    ToolUse,
    UsageEvent,
    is_interruption_marker,
)
from voicegate.sonic import AudioOutput as SonicAudioOutput

log = structlog.get_logger(__name__)

CHUNK_SAMPLES: Final = 512
INPUT_RATE: Final = 16000
CHUNK_SECONDS: Final = CHUNK_SAMPLES / INPUT_RATE
SILENCE_AFTER: Final = 0.1
"""Seconds without caller audio after which the conversation fills in silence itself."""
SEND_QUEUE_CHUNKS: Final = 64
"""About 2 s of user audio may wait for a slow backend; beyond that chunks are dropped, counted."""
SETUP_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0
MAX_TOOL_TASKS: Final = 4
MAX_HISTORY: Final = 200
REPLAY_CHUNKS_PER_EVENT: Final = 4
MAX_GAPS_KEPT: Final = 100
REPLY_EXPECTED_S: Final = 10.0
"""After a final user transcript the model is expected to answer within this; a renewal waits
for that answer (not to cut it off), but not forever."""

DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a friendly, concise voice assistant. Keep answers to one or two short sentences. "
    "Use the tools you have when they help."
)


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    voice_id: str = "matthew"
    max_tokens: int = 1024
    top_p: float = 0.9
    temperature: float = 0.7
    endpointing_sensitivity: str | None = None
    output_rate: int = 24000
    continuation: ContinuationSettings = field(default_factory=ContinuationSettings)


# -- events for the owner of the call --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserTranscript:
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class BotText:
    text: str
    final: bool  # False: speculative (what the model is about to say)


@dataclass(frozen=True, slots=True)
class BotAudioStarted:
    """The first audio of an assistant turn arrived from the model (loop time)."""

    at: float


@dataclass(frozen=True, slots=True)
class BotInterrupted:
    dropped_samples: int = 0


@dataclass(frozen=True, slots=True)
class BotTurnDone:
    """The model finished producing this turn (its audio may still be playing)."""


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    name: str
    tool_use_id: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    name: str
    tool_use_id: str
    ok: bool
    result: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class ConversationError:
    kind: str
    message: str
    fatal: bool


@dataclass(frozen=True, slots=True)
class ConversationEnded:
    reason: str


@dataclass(frozen=True, slots=True)
class SessionContinued:
    """The conversation moved to a new model stream (planned renewal or recovery)."""

    kind: Literal["renewal", "recovery"]
    reason: str  # renewal: "age" | "credentials" | "requested"; recovery: the failure's kind
    leg: int  # 1 for the first stream of the call
    gap_ms: float  # renewal: old stream's last use -> new one live; recovery: failure -> live
    forced: bool = False  # renewal without a natural point
    attempts: int = 1
    history_messages: int = 0
    history_bytes: int = 0
    replayed_ms: float = 0.0  # user audio replayed to the new stream


ConversationEvent = (
    UserTranscript
    | BotText
    | BotAudioStarted
    | BotInterrupted
    | BotTurnDone
    | ToolCallStarted
    | ToolCallFinished
    | Usage
    | ConversationError
    | ConversationEnded
    | SessionContinued
)


class ConversationListener(Protocol):
    def on_audio(self, pcm: bytes) -> None:
        """Assistant audio, mono s16 at the settings' output rate."""

    def on_flush(self) -> int:
        """Drop all queued assistant audio now (barge-in); return the samples dropped."""
        ...

    def on_event(self, event: ConversationEvent) -> None: ...


@dataclass(slots=True)
class _Content:
    type: str
    role: Role
    stage: str | None


@dataclass(slots=True)
class ConversationStats:
    """Counters of one call; the field names are read by /metrics (documented in
    docs/renewal.md), so they are kept stable."""

    audio_chunks_sent: int = 0
    silence_chunks_sent: int = 0
    audio_chunks_dropped: int = 0
    tool_calls: int = 0
    barge_ins: int = 0
    turns: int = 0
    history: list[tuple[Role, str]] = field(default_factory=list)
    streams_opened: int = 0
    renewals: int = 0
    renewals_forced: int = 0
    recoveries: int = 0
    recovery_attempts: int = 0
    recovery_give_ups: int = 0
    prepare_failures: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    """Stream failures by BackendError kind (stream_lost, model_timeout, throttled, ...)."""
    handover_gaps_ms: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_GAPS_KEPT))
    """Renewal handover gaps, newest last: old stream's last use -> new stream live."""
    recovery_gaps_ms: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_GAPS_KEPT))
    """Recovery gaps: the failure noticed -> new stream live (includes backoff)."""
    handover_gap_ms_total: float = 0.0
    """Sum of all renewal gaps (additive, for /metrics: average = total / renewals)."""
    recovery_gap_ms_total: float = 0.0
    prepare_ms: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_GAPS_KEPT))
    """Background opening of the next stream (not part of any gap)."""
    history_bytes_replayed: int = 0
    history_messages_replayed: int = 0
    audio_chunks_replayed: int = 0
    stale_events_dropped: int = 0
    """Output of retired streams after a handover, ignored."""


class _Leg:
    """One model stream of the call, with the state that belongs to that stream only."""

    def __init__(self, number: int, stream: BackendStream, opened_at: float) -> None:
        self.number = number
        self.stream = stream
        self.opened_at = opened_at
        self.ready_at: float | None = None  # audio content open: the leg is live
        self.last_output_at = opened_at
        self.send_lock = asyncio.Lock()  # SigV4 event signatures are chained per stream
        self.contents: dict[str, _Content] = {}
        self.pending_tools: dict[str, ToolUse] = {}
        self.running_tools = 0
        self.interrupted_audio: set[str] = set()
        self.dead = False  # failed, or closed by us
        self.error: BackendError | None = None  # why it failed
        self.failed = asyncio.Event()
        self.retired = False  # no longer the live leg; its output is ignored
        self.preload: asyncio.Task[None] | None = None
        self.preloaded: tuple[int, list[tuple[Role, str]]] | None = None
        """(history version, history) already sent to this prepared leg."""


class Conversation:
    def __init__(
        self,
        backend: Backend,
        settings: ConversationSettings,
        tools: ToolRegistry,
        listener: ConversationListener,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.tools = tools
        self.listener = listener
        self.stats = ConversationStats()
        self.prompt_name = str(uuid.uuid4())
        self.audio_content = str(uuid.uuid4())
        c = settings.continuation
        self._cont = c
        self._leg: _Leg | None = None  # the live leg: user audio goes here, its output counts
        self._next: _Leg | None = None  # prepared in the background for a renewal
        self._legs: set[_Leg] = set()  # every leg not closed yet
        self._leg_count = 0
        # issue 5: caller chunks are as long as audio.configure_chunks says (20 ms default).
        self._replay = ReplayBuffer(model_chunk_seconds(), c.replay_max_s, c.replay_preroll_s)
        self._audio_q: asyncio.Queue[bytes] = asyncio.Queue(SEND_QUEUE_CHUNKS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tool_sem = asyncio.Semaphore(MAX_TOOL_TASKS)
        self._turn_interrupted = False
        self._turn_audio_seen = False
        self._reply_expected_at: float | None = None
        self._speculative_open = 0
        self._renew_wanted = False
        self._renew_forced = False
        self._renew_reason = "age"
        self._renew_request = asyncio.Event()
        self._leg_changed = asyncio.Event()
        self._recovering = False
        self._history_version = 0
        self._attempts_used = 0
        self._closing = False
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.on_history: Callable[[], None] | None = None
        """Told after every change of ``stats.history`` (the cluster keeps a copy elsewhere)."""

    # -- lifecycle ---------------------------------------------------------------------------

    def seed(self, history: Iterable[tuple[Role, str]]) -> None:
        """Before ``start``: the history of a call adopted from another node; the first stream
        gets it replayed like a renewal would (the bot knows what was said before)."""
        self.stats.history = list(history)[-MAX_HISTORY:]
        self._history_version += 1

    async def start(self) -> None:
        """Open the stream and set the session up. Raises BackendError if that fails."""
        history = self._continuation_payload()[0] if self.stats.history else []
        async with asyncio.timeout(SETUP_TIMEOUT):
            leg = await self._open_leg()
            try:
                await self._go_live(leg, history, [])
                if history:
                    self._account(history, [])
            except BaseException:
                await self._drop_leg(leg)
                raise
        self._spawn(self._sender_loop(), name="sender")
        self._spawn(self._renewal_loop(), name="renewal")

    def send_audio(self, pcm: bytes) -> None:
        """Queue one chunk of user audio (16 kHz mono s16). Never blocks the media path."""
        if self._closing:
            return
        try:
            self._audio_q.put_nowait(pcm)
        except asyncio.QueueFull:
            self.stats.audio_chunks_dropped += 1
            if self.stats.audio_chunks_dropped in (1, 100, 1000):
                log.warning("user_audio_dropped", dropped=self.stats.audio_chunks_dropped)

    async def renew(self, force: bool = True) -> None:
        """Move to a new stream now (at the next natural point unless ``force``) and return
        once the new stream is live. For operators and tests; renewal by age is automatic."""
        leg = self._leg
        self._renew_reason = "requested"
        self._renew_forced = self._renew_forced or force
        self._renew_request.set()
        while not self.ended.is_set() and (self._leg is leg or self._leg is None):
            self._leg_changed.clear()
            await self._leg_changed.wait()

    async def close(self, reason: str = "hangup") -> None:
        """End the session in order (audio contentEnd, promptEnd, sessionEnd), then release
        every stream. Bounded in time whatever state the backend is in."""
        if self._closing:
            await self.ended.wait()
            return
        self._closing = True
        leg = self._leg
        for task in list(self._tasks):
            if task.get_name() in ("sender", "renewal", "recovery"):
                task.cancel()
        if leg is not None and not leg.dead and not self.ended.is_set():
            with contextlib.suppress(BackendError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._send_to(leg, ContentEnd(self.prompt_name, self.audio_content))
                    await self._send_to(leg, PromptEnd(self.prompt_name))
                    await self._send_to(leg, SessionEnd())
            # Give the model a moment to finish its output in order, then stop waiting.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.shield(self.ended.wait())
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        legs = list(self._legs)
        if legs:
            await asyncio.gather(*(self._drop_leg(x) for x in legs), return_exceptions=True)
        self._finish(reason)

    # -- legs --------------------------------------------------------------------------------

    async def _open_leg(self) -> _Leg:
        """Open a stream and send the session setup (no audio content yet)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        stream = await self.backend.open()
        self._leg_count += 1
        self.stats.streams_opened += 1
        leg = _Leg(self._leg_count, stream, loop.time())
        self._legs.add(leg)
        try:
            setup: list[InputEvent] = [
                SessionStart(s.max_tokens, s.top_p, s.temperature, s.endpointing_sensitivity),
                PromptStart(self.prompt_name, s.voice_id, s.output_rate, self.tools.specs()),
                *self._text_block("SYSTEM", s.system_prompt),
            ]
            for event in setup:
                await self._send_to(leg, event)
        except BaseException:
            await self._drop_leg(leg)
            raise
        self._spawn(self._receive_loop(leg))
        return leg

    async def _go_live(
        self, leg: _Leg, history: list[tuple[Role, str]], audio: list[bytes]
    ) -> None:
        """History, the audio content and the replayed user audio, then the leg is live."""
        for role, text in history:
            for event in self._text_block(role, text):
                await self._send_to(leg, event)
        await self._send_to(
            leg, AudioContentStart(self.prompt_name, self.audio_content, INPUT_RATE)
        )
        # Replayed audio goes in 128 ms events: a quarter of the events (each one signed and
        # queued through the SDK's small buffer) makes the switch correspondingly shorter.
        for i in range(0, len(audio), REPLAY_CHUNKS_PER_EVENT):
            pcm = b"".join(audio[i : i + REPLAY_CHUNKS_PER_EVENT])
            await self._send_to(leg, AudioInput(self.prompt_name, self.audio_content, pcm))
        leg.ready_at = asyncio.get_running_loop().time()
        self._leg = leg
        self._turn_interrupted = False
        self._turn_audio_seen = False
        self._speculative_open = 0
        self._leg_changed.set()

    def _continuation_payload(self) -> tuple[list[tuple[Role, str]], list[bytes]]:
        c = self._cont
        history = shape_history(
            self.stats.history,
            c.history_max_messages,
            c.history_max_message_bytes,
            c.history_max_bytes,
        )
        return history, self._replay.replay()

    def _account(self, history: list[tuple[Role, str]], audio: list[bytes]) -> tuple[int, float]:
        size = history_bytes(history)
        self.stats.history_bytes_replayed += size
        self.stats.history_messages_replayed += len(history)
        self.stats.audio_chunks_replayed += len(audio)
        return size, sum(len(a) for a in audio) / 2 / INPUT_RATE * 1000  # issue 5: any size

    def _retire(self, leg: _Leg) -> None:
        """Close a leg that is no longer live in order, in the background."""
        leg.retired = True
        self._spawn(self._close_leg(leg))

    async def _close_leg(self, leg: _Leg) -> None:
        if not leg.dead:
            with contextlib.suppress(BackendError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    if leg.ready_at is not None:
                        await self._send_to(leg, ContentEnd(self.prompt_name, self.audio_content))
                    await self._send_to(leg, PromptEnd(self.prompt_name))
                    await self._send_to(leg, SessionEnd())
        await self._drop_leg(leg)

    async def _drop_leg(self, leg: _Leg) -> None:
        leg.dead = True
        self._legs.discard(leg)
        if self._next is leg:
            self._next = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await leg.stream.close()

    # -- renewal -----------------------------------------------------------------------------

    def _renew_due(self, leg: _Leg) -> tuple[float, str]:
        """Loop time at which ``leg`` should be renewed, and why."""
        c = self._cont
        base = leg.ready_at if leg.ready_at is not None else leg.opened_at
        due, reason = base + c.renew_after_s, "age"
        expiration = getattr(self.backend, "credentials_expiration", None)
        if isinstance(expiration, dt.datetime):
            if expiration.tzinfo is None:
                expiration = expiration.replace(tzinfo=dt.UTC)
            left = (expiration - dt.datetime.now(dt.UTC)).total_seconds() - c.credential_margin_s
            # Never sooner than a minute into a leg: a refresh that does not extend the
            # expiry must not turn into a renewal storm.
            at = max(asyncio.get_running_loop().time() + left, base + 60.0)
            if at < due:
                due, reason = at, "credentials"
        return due, reason

    async def _renewal_loop(self) -> None:
        """Prepare the next leg when the live one gets old (or on request), then let the
        sender hand over at a natural point, or force it when none comes in time."""
        loop = asyncio.get_running_loop()
        c = self._cont
        while True:
            leg = self._leg
            if leg is None or self._recovering:
                self._leg_changed.clear()
                await self._leg_changed.wait()
                continue
            due, reason = self._renew_due(leg)
            if not self._renew_request.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - loop.time())):
                        await self._renew_request.wait()
            if self._leg is not leg:
                continue  # replaced meanwhile (recovery)
            if self._renew_request.is_set():
                self._renew_request.clear()
                force_at = loop.time() + (0.0 if self._renew_forced else c.force_after_s)
            else:
                self._renew_reason = reason
                force_at = due + c.force_after_s
            backoff = c.recovery_backoff_s
            while self._leg is leg and not self._closing:
                if self._next is None or self._next.dead:
                    started = loop.time()
                    try:
                        async with asyncio.timeout(SETUP_TIMEOUT):
                            self._next = await self._open_leg()
                    except (BackendError, TimeoutError) as exc:
                        self.stats.prepare_failures += 1
                        log.warning("renewal_prepare_failed", error=str(exc))
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    self.stats.prepare_ms.append((loop.time() - started) * 1000)
                    self._renew_wanted = True
                prepared = self._next
                assert prepared is not None
                wake = min(force_at, prepared.opened_at + c.prepared_max_idle_s)
                if self._renew_forced:
                    wake = loop.time() + 1.0  # the sender hands over at its next chunk
                self._leg_changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, wake - loop.time())):
                        await self._leg_changed.wait()
                if self._leg is not leg:
                    break
                if loop.time() >= force_at:
                    self._renew_forced = True
                elif self._next is prepared and loop.time() >= wake:
                    # Unused for too long: a fresh one, so the handover never meets a stream
                    # the service has given up on.
                    self._next = None
                    self._retire(prepared)
            self._renew_wanted = False
            self._renew_forced = False
            orphan = self._next
            if orphan is not None and orphan is not self._leg:
                # Prepared for a leg that a recovery replaced meanwhile: it would sit idle.
                self._next = None
                self._retire(orphan)

    def _natural_point(self, leg: _Leg, quiet: bool = True) -> bool:
        """No assistant turn under way or expected, no tool call open, the user quiet."""
        if leg.pending_tools or leg.running_tools or self._speculative_open:
            return False
        if any(c.role == "ASSISTANT" for c in leg.contents.values()):
            return False
        expected = self._reply_expected_at
        if expected is not None and asyncio.get_running_loop().time() - expected < REPLY_EXPECTED_S:
            return False
        return not quiet or self._replay.quiet_s >= self._cont.natural_quiet_s

    async def _preload(self, leg: _Leg) -> None:
        """Phase one of a planned handover, while the old leg is still live: send the next leg
        the history. Phase two (the switch) then only needs the audio content and the replay,
        so the gap stays a few events long however long the history is."""
        version = self._history_version
        history, _ = self._continuation_payload()
        try:
            for role, text in history:
                for event in self._text_block(role, text):
                    await self._send_to(leg, event)
        except BackendError as exc:
            self._leg_failed(leg, exc)
            return
        leg.preloaded = (version, history)

    def _usable_preload(self, leg: _Leg) -> bool:
        """A prepared leg can go live: no history sent yet, or the current one completely."""
        if leg.preload is None:
            return True
        return leg.preloaded is not None and leg.preloaded[0] == self._history_version

    def _renewal_step(self, leg: _Leg, new: _Leg) -> bool:
        """Decide, between two chunks, whether the sender hands over now."""
        if new.preloaded is None:
            if new.preload is None and (self._renew_forced or self._natural_point(leg)):
                new.preload = asyncio.get_running_loop().create_task(self._preload(new))
                self._tasks.add(new.preload)
                new.preload.add_done_callback(self._tasks.discard)
            return False
        if new.preloaded[0] != self._history_version:
            # A turn completed meanwhile: the preloaded history is stale. A fresh leg is
            # prepared (the renewal loop wakes up) and preloaded at the next natural point.
            self._next = None
            self._retire(new)
            self._leg_changed.set()
            return False
        # The user may have started talking meanwhile: the replay carries that.
        return self._renew_forced or self._natural_point(leg, quiet=False)

    async def _hand_over(self, old: _Leg, new: _Leg) -> None:
        """Runs in the sender: the old leg gets no more audio from here on."""
        loop = asyncio.get_running_loop()
        if new.preload is not None and not new.preload.done():
            await new.preload  # a forced handover during phase one: never interleave blocks
        switched = loop.time()
        forced = self._renew_forced and not self._natural_point(old)
        self._next = None
        self._renew_wanted = False
        old.retired = True
        self._answer_lost_tools(old, "the model stream was renewed")
        history, audio = self._continuation_payload()
        to_send = history
        if new.preloaded is not None and new.preloaded[0] == self._history_version:
            history, to_send = new.preloaded[1], []
        try:
            await self._go_live(new, to_send, audio)
        except BackendError as exc:
            # The prepared leg broke at the last moment: the old one is intact, keep it.
            old.retired = False
            self.stats.prepare_failures += 1
            log.warning("renewal_handover_failed", error=exc.message)
            self._spawn(self._drop_leg(new))
            return
        self._retire(old)
        gap = (loop.time() - switched) * 1000
        size, replayed = self._account(history, audio)
        self.stats.renewals += 1
        self.stats.renewals_forced += int(forced)
        self.stats.handover_gaps_ms.append(gap)
        self.stats.handover_gap_ms_total += gap
        log.info(
            "stream_renewed",
            leg=new.number,
            reason=self._renew_reason,
            forced=forced,
            gap_ms=round(gap, 1),
            history_bytes=size,
            replayed_ms=round(replayed),
        )
        self.listener.on_event(
            SessionContinued(
                "renewal",
                self._renew_reason,
                new.number,
                round(gap, 1),
                forced=forced,
                history_messages=len(history),
                history_bytes=size,
                replayed_ms=round(replayed, 1),
            )
        )
        self._renew_reason = "age"

    # -- recovery ----------------------------------------------------------------------------

    def _leg_failed(self, leg: _Leg, exc: BackendError) -> None:
        if leg.dead and leg is not self._leg:
            return
        was_live = leg is self._leg and not leg.retired
        leg.dead = True
        if self.ended.is_set():
            return
        if self._closing:
            if was_live:
                self._finish("closed")
            return
        if leg is self._next:
            self._next = None
            self.stats.prepare_failures += 1
            log.warning("prepared_stream_failed", kind=exc.kind, error=exc.message)
            self._spawn(self._drop_leg(leg))
            return
        if not was_live:
            self._spawn(self._drop_leg(leg))
            return
        # From here on user audio only goes into the replay buffer, for the next leg.
        self._leg = None
        leg.retired = True
        leg.error = exc
        leg.failed.set()
        if self._recovering:
            return  # a leg still on probation: the recovery loop counts it as an attempt
        self.stats.failures[exc.kind] += 1
        if not exc.retryable or self._cont.recovery_attempts <= 0:
            self._fatal(exc)
            return
        # From here on user audio only goes into the replay buffer, for the next leg.
        self._leg = None
        leg.retired = True
        self._recovering = True
        self._spawn(self._recover(leg, exc), name="recovery")

    async def _recover(self, failed: _Leg, exc: BackendError) -> None:
        """Replace a failed live leg: bounded attempts with backoff; the prepared next leg, if
        there is one, is tried first (it is already open)."""
        loop = asyncio.get_running_loop()
        c = self._cont
        failed_at = loop.time()
        log.warning("stream_failed_recovering", kind=exc.kind, error=exc.message, leg=failed.number)
        ready_at = failed.ready_at if failed.ready_at is not None else failed.opened_at
        if failed_at - ready_at >= c.healthy_after_s:
            self._attempts_used = 0
        self._answer_lost_tools(failed, f"the model stream failed ({exc.kind})")
        await self._drop_leg(failed)
        last: BackendError = exc
        attempt = 0
        try:
            while self._attempts_used < c.recovery_attempts:
                if attempt:
                    await asyncio.sleep(c.recovery_backoff_s * 2 ** (attempt - 1))
                attempt += 1
                self._attempts_used += 1
                self.stats.recovery_attempts += 1
                leg = self._next
                self._next = None
                if leg is not None and (leg.dead or not self._usable_preload(leg)):
                    self._retire(leg)  # mid-preload or stale history: never send it twice
                    leg = None
                try:
                    async with asyncio.timeout(SETUP_TIMEOUT):
                        if leg is None:
                            leg = await self._open_leg()
                        history, audio = self._continuation_payload()
                        to_send = history
                        if leg.preloaded is not None:
                            history, to_send = leg.preloaded[1], []
                        await self._go_live(leg, to_send, audio)
                    ready = loop.time()
                    # Bedrock refuses a stream (throttling, quota, access) only after it was
                    # opened: the leg is live at once, but counts as recovered only if it
                    # survives a moment. Audio sent meanwhile is still in the replay buffer.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(c.recovery_confirm_s):
                            await leg.failed.wait()
                    if leg.error is not None:
                        raise leg.error
                except (BackendError, TimeoutError) as err:
                    last = err if isinstance(err, BackendError) else StreamLost("setup timed out")
                    log.warning("recovery_attempt_failed", attempt=attempt, error=str(last))
                    if leg is not None:
                        if self._leg is leg:
                            self._leg = None
                        await self._drop_leg(leg)
                    if not last.retryable:
                        break
                    continue
                gap = (ready - failed_at) * 1000
                size, replayed = self._account(history, audio)
                self.stats.recoveries += 1
                self.stats.recovery_gaps_ms.append(gap)
                self.stats.recovery_gap_ms_total += gap
                log.info("stream_recovered", leg=leg.number, attempts=attempt, gap_ms=round(gap))
                self.listener.on_event(
                    SessionContinued(
                        "recovery",
                        exc.kind,
                        leg.number,
                        round(gap, 1),
                        attempts=attempt,
                        history_messages=len(history),
                        history_bytes=size,
                        replayed_ms=round(replayed, 1),
                    )
                )
                return
        finally:
            self._recovering = False
            self._leg_changed.set()
        self.stats.recovery_give_ups += 1
        log.error("recovery_failed", kind=exc.kind, last=last.message, attempts=attempt)
        self._fatal(
            exc,
            f"the speech service failed ({exc.message}) and reconnecting did not work "
            f"({last.message})",
        )

    def _answer_lost_tools(self, leg: _Leg, why: str) -> None:
        """Tool calls the old leg asked for and can no longer take a result for: the browser
        gets an error result, the history notes it, nothing stays open."""
        for use in leg.pending_tools.values():
            self.stats.tool_calls += 1
            self.listener.on_event(ToolCallFinished(use.tool_name, use.tool_use_id, False, why))
            self._remember("ASSISTANT", f"(The {use.tool_name} tool call was cut off: {why}.)")
        leg.pending_tools.clear()

    # -- sending -----------------------------------------------------------------------------

    def _text_block(self, role: Role, text: str) -> list[InputEvent]:
        name = str(uuid.uuid4())
        return [
            TextContentStart(self.prompt_name, name, role, interactive=False),
            TextInput(self.prompt_name, name, text),
            ContentEnd(self.prompt_name, name),
        ]

    async def _send(self, event: InputEvent) -> None:
        """Send to the live leg."""
        leg = self._leg
        if leg is None:
            raise StreamLost("no stream")
        await self._send_to(leg, event)

    async def _send_to(self, leg: _Leg, event: InputEvent) -> None:
        async with leg.send_lock:
            await leg.stream.send(event)

    async def _sender_loop(self) -> None:
        """Forward caller audio to the live leg; fill silence on our own clock when the caller
        goes quiet; hand over to a prepared leg between two chunks."""
        silence = bytes(CHUNK_SAMPLES * 2)
        fill = round(SILENCE_AFTER / CHUNK_SECONDS)
        while True:
            try:
                async with asyncio.timeout(SILENCE_AFTER):
                    chunks = [(await self._audio_q.get(), False)]
            except TimeoutError:
                # About SILENCE_AFTER seconds passed with no audio: send that much silence.
                chunks = [(silence, True)] * fill
            for pcm, filled in chunks:
                self._replay.add(pcm)
                leg = self._leg
                if leg is None or leg.dead:
                    continue  # recovering: the replay buffer keeps it for the next leg
                new = self._next
                if (
                    self._renew_wanted
                    and new is not None
                    and not new.dead
                    and self._renewal_step(leg, new)
                ):
                    await self._hand_over(leg, new)  # replays this chunk too
                    continue
                try:
                    await self._send_to(leg, AudioInput(self.prompt_name, self.audio_content, pcm))
                except BackendError as exc:
                    self._leg_failed(leg, exc)
                    continue
                if filled:
                    self.stats.silence_chunks_sent += 1
                else:
                    self.stats.audio_chunks_sent += 1

    # -- receiving ---------------------------------------------------------------------------

    async def _receive_loop(self, leg: _Leg) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for event in leg.stream.events():
                leg.last_output_at = loop.time()
                if leg is self._leg and not leg.retired:
                    self._handle(leg, event)
                else:
                    self.stats.stale_events_dropped += 1
        except BackendError as exc:
            self._leg_failed(leg, exc)
            return
        except Exception as exc:  # a bug below us must not leave the call hanging silently
            log.exception("receive_loop_failed")
            self._leg_failed(leg, StreamLost(f"unexpected error: {exc!r}"))
            return
        if leg.retired or leg.dead:
            return
        if self._closing and leg is self._leg:
            self._finish("closed")
            return
        self._leg_failed(leg, StreamLost("the model ended the session unexpectedly"))

    def _handle(self, leg: _Leg, event: OutputEvent) -> None:
        match event:
            case OutputContentStart():
                leg.contents[event.content_id] = _Content(
                    event.type, event.role, event.generation_stage
                )
                if event.role == "ASSISTANT":
                    self._reply_expected_at = None
                    if event.type == "TEXT" and event.generation_stage == "SPECULATIVE":
                        self._speculative_open += 1
                if event.type == "AUDIO" and event.role == "ASSISTANT":
                    self._turn_interrupted = False
                    self._turn_audio_seen = False
            case TextOutput():
                self._on_text(leg, event)
            case SonicAudioOutput():
                if event.content_id in leg.interrupted_audio:
                    return
                if not self._turn_audio_seen:
                    self._turn_audio_seen = True
                    self.listener.on_event(BotAudioStarted(asyncio.get_running_loop().time()))
                self.listener.on_audio(event.content)
            case ToolUse():
                self._reply_expected_at = None
                leg.pending_tools[event.content_id] = event
                self.listener.on_event(
                    ToolCallStarted(event.tool_name, event.tool_use_id, event.content)
                )
            case OutputContentEnd():
                content = leg.contents.pop(event.content_id, None)
                if event.stop_reason == "INTERRUPTED":
                    self._barge_in(leg, event.content_id if event.type == "AUDIO" else None)
                elif event.type == "AUDIO" and content is not None and content.role == "ASSISTANT":
                    self.listener.on_event(BotTurnDone())
                if event.type == "TOOL":
                    use = leg.pending_tools.pop(event.content_id, None)
                    if use is not None:
                        leg.running_tools += 1
                        self._spawn(self._run_tool(leg, use))
            case CompletionEnd():
                leg.interrupted_audio.clear()
                self._speculative_open = 0
                self.stats.turns += 1
                self.listener.on_event(BotTurnDone())
            case UsageEvent():
                self.listener.on_event(
                    Usage(event.input_tokens, event.output_tokens, event.total_tokens)
                )
            case _:
                pass

    def _on_text(self, leg: _Leg, event: TextOutput) -> None:
        if is_interruption_marker(event.content):
            self._barge_in(leg, None)
            return
        content = leg.contents.get(event.content_id)
        role = content.role if content is not None else event.role
        stage = content.stage if content is not None else "FINAL"
        text = event.content.strip()
        if role == "ASSISTANT" and stage != "SPECULATIVE" and self._speculative_open:
            self._speculative_open -= 1  # the final text of a speculative one: turn complete
        if not text:
            return  # empty user transcripts caused spurious interruptions elsewhere
        if role == "USER":
            final = stage != "SPECULATIVE"
            self.listener.on_event(UserTranscript(text, final))
            if final:
                self._remember("USER", text)
                # What the live leg heard is in the history now; never replay it as audio.
                self._replay.commit()
                self._reply_expected_at = asyncio.get_running_loop().time()
        elif role == "ASSISTANT":
            final = stage != "SPECULATIVE"
            self.listener.on_event(BotText(text, final))
            if final:
                self._remember("ASSISTANT", text)

    def _remember(self, role: Role, text: str) -> None:
        self._history_version += 1
        history = self.stats.history
        if history and history[-1][0] == role:
            history[-1] = (role, f"{history[-1][1]} {text}")
        else:
            history.append((role, text))
        if len(history) > MAX_HISTORY:
            del history[:-MAX_HISTORY]
        if self.on_history is not None:
            self.on_history()

    def _barge_in(self, leg: _Leg, audio_content_id: str | None) -> None:
        # Drop whatever audio of the current assistant turn is still open or still to come.
        for cid, content in leg.contents.items():
            if content.type == "AUDIO" and content.role == "ASSISTANT":
                leg.interrupted_audio.add(cid)
        if audio_content_id is not None:
            leg.interrupted_audio.add(audio_content_id)
        self._speculative_open = 0
        if self._turn_interrupted:
            return
        self._turn_interrupted = True
        dropped = self.listener.on_flush()
        self.stats.barge_ins += 1
        self.listener.on_event(BotInterrupted(dropped))

    async def _run_tool(self, leg: _Leg, use: ToolUse) -> None:
        try:
            async with self._tool_sem:
                result, ok = await self.tools.run(use.tool_name, use.content)
        finally:
            leg.running_tools -= 1
        self.stats.tool_calls += 1
        self.listener.on_event(ToolCallFinished(use.tool_name, use.tool_use_id, ok, result))
        if leg.dead or leg.retired or leg is not self._leg:
            # The stream that asked is gone; its successor never saw the toolUse. Keep the
            # outcome in the history so the model knows it on the next stream.
            self._remember("ASSISTANT", f"(The {use.tool_name} tool returned: {result})")
            return
        name = str(uuid.uuid4())
        try:
            await self._send_to(
                leg, ToolResultContentStart(self.prompt_name, name, use.tool_use_id)
            )
            await self._send_to(leg, ToolResult(self.prompt_name, name, result))
            await self._send_to(leg, ContentEnd(self.prompt_name, name))
        except BackendError as exc:
            self._leg_failed(leg, exc)

    # -- ending ------------------------------------------------------------------------------

    def _fatal(self, exc: BackendError, message: str | None = None) -> None:
        if self.ended.is_set():
            return
        log.warning("conversation_failed", kind=exc.kind, error=message or exc.message)
        self.listener.on_event(ConversationError(exc.kind, message or exc.message, fatal=True))
        self._finish(f"error:{exc.kind}")

    def _finish(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self._leg_changed.set()
        self.listener.on_event(ConversationEnded(reason))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
