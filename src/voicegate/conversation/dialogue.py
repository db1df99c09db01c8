"""One call's conversation with a speech model, independent of WebRTC.

The conversation opens a backend stream, sets the session up (sessionStart, promptStart with the
tools, system prompt, history, the one long-lived audio content), streams the user's audio into it
continuously, and turns the model's output into three things for whoever owns the call: audio to
play, a flush when the user barges in, and typed events (transcripts, tool calls, errors, usage;
``events``).

Rules it keeps, each learned the hard way by other integrations (docs/renewal.md, docs/bedrock.md):
- The model must hear audio without gaps, silence included; if the caller stops supplying audio
  (muted track, network stall) the conversation sends silence on its own clock, in chunks as
  long as the caller's.
- Barge-in is handled here, the moment either signal arrives (the interruption marker text or an
  INTERRUPTED stop reason), once per assistant turn; audio still arriving for an interrupted
  content is dropped; the marker never reaches transcripts.
- Every toolUse gets a toolResult (always a JSON object), error results included, so the stream
  never dangles.
- Typed text (``send_text``) and the optional greeting instruction go to the model as
  interactive USER text while the audio content stays open (Nova 2 cross-modal input); the
  model answers them by voice and text like speech.

One call outlives any one model stream: the streams ("legs", ``legs``) are renewed before they
get old (``renewal``) and replaced when they fail (``recovery``), so the owner of the call sees
one continuous conversation and only a ``SessionContinued`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

import structlog

from voicegate.audio.chunks import model_chunk_seconds
from voicegate.backends.base import Backend, BackendError, StreamLost
from voicegate.conversation.continuation import cap_bytes
from voicegate.conversation.events import (
    BotAudioStarted,
    BotInterrupted,
    BotText,
    BotTurnDone,
    ConversationListener,
    ConversationSettings,
    ConversationStats,
    Tokens,
    ToolCallFinished,
    ToolCallStarted,
    ToolFiller,
    Usage,
    UserTranscript,
)
from voicegate.conversation.legs import (
    CLOSE_TIMEOUT,
    SETUP_TIMEOUT,
    USER_TEXT_MAX_BYTES,
    Content,
    Leg,
    Legs,
    Lifecycle,
    TurnState,
)
from voicegate.conversation.memory import CallMemory, History
from voicegate.conversation.recovery import Recovery
from voicegate.conversation.renewal import Renewal
from voicegate.conversation.tools import ToolRegistry
from voicegate.sonic import AudioOutput as SonicAudioOutput
from voicegate.sonic import (
    CompletionEnd,
    ContentEnd,
    InputEvent,
    OutputContentEnd,
    OutputContentStart,
    OutputEvent,
    PromptEnd,
    Role,
    SessionEnd,
    TextOutput,
    ToolResult,
    ToolResultContentStart,
    ToolUse,
    UsageEvent,
    filler_instruction,
    is_interruption_marker,
    late_result_instruction,
)

__all__ = [
    "Conversation",
    "HANDOVER_WAIT_S",
    "MAX_TOOL_TASKS",
    "MAX_TYPED_KEPT",
    "SEND_QUEUE_S",
    "SILENCE_AFTER",
]

log = structlog.get_logger(__name__)

SILENCE_AFTER: Final = 0.1
"""Seconds without caller audio after which the conversation fills in silence itself."""
SEND_QUEUE_S: Final = 2.0
"""User audio that may wait for a slow backend; beyond that chunks are dropped, counted."""
MAX_TOOL_TASKS: Final = 4
MAX_TYPED_KEPT: Final = 4
HANDOVER_WAIT_S: Final = 1.0


class Conversation:
    """The conversation of one call; the call layer holds it and is its listener.

    Built from parts with small interfaces: ``legs`` (the model streams), ``memory`` (history,
    replay, the unanswered turn), ``recovery`` (replacing a failed stream), ``renewal`` (moving
    to a fresh one) and ``turn`` (the assistant turn in progress); this class is the dialogue:
    the sender, the receiver and the turn logic."""

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
        c = settings.continuation
        self.input_rate = backend.input_rate
        """Sample rate of the user audio ``send_audio`` takes: the backend's."""
        self.life = Lifecycle(listener)
        self.memory = CallMemory(c, self.stats, self.input_rate)
        self.legs = Legs(backend, settings, tools, self.stats, self.life, self)
        self.recovery = Recovery(
            self.legs, self.memory, c, self.stats, self.life, self._answer_lost_tools
        )
        self.turn = TurnState()
        self.renewal = Renewal(
            self.legs,
            self.memory,
            c,
            self.stats,
            self.life,
            self.recovery,
            self.turn,
            self._answer_lost_tools,
        )
        self._chunk_s = model_chunk_seconds()
        """Length of the user audio chunks: the caller's (audio.configure_chunks, 20 ms by
        default) and the silence filled in; one length, so the replay buffer's bound is a
        duration whatever is fed."""
        self._audio_q: asyncio.Queue[bytes] = asyncio.Queue(
            max(1, round(SEND_QUEUE_S / self._chunk_s))
        )
        self._tool_sem = asyncio.Semaphore(MAX_TOOL_TASKS)
        self._seeded = False
        """``seed`` gave this conversation another node's history: the first stream replays it."""
        self._typed: deque[str] = deque(maxlen=MAX_TYPED_KEPT)
        """Typed texts recently sent, so a model's echo of one is not a second user turn."""

    # -- what the owner of the call reads ----------------------------------------------------

    @property
    def prompt_name(self) -> str:
        return self.legs.prompt_name

    @property
    def ended(self) -> asyncio.Event:
        return self.life.ended

    @property
    def end_reason(self) -> str:
        return self.life.end_reason

    @property
    def on_history(self) -> Callable[[], None] | None:
        """Told after every change of ``stats.history`` (the cluster keeps a copy elsewhere)."""
        return self.memory.on_history

    @on_history.setter
    def on_history(self, callback: Callable[[], None] | None) -> None:
        self.memory.on_history = callback

    def shaped_history(self) -> History:
        """The history as the next model stream would get it (Nova Sonic's limits applied):
        what renewal and recovery replay, and what a cluster keeps for adopting the call."""
        return self.memory.shaped()

    async def renew(self, force: bool = True) -> None:
        """Move to a new stream now (at the next natural point unless ``force``) and return
        once the new stream is live. For operators and tests; renewal by age is automatic."""
        await self.renewal.renew(force)

    # -- lifecycle ---------------------------------------------------------------------------

    def seed(self, history: Iterable[tuple[Role, str]]) -> None:
        """Before ``start``: the history of a call adopted from another node; the first stream
        gets it replayed like a renewal would (the bot knows what was said before)."""
        self.memory.seed(history)
        self._seeded = True

    async def start(self) -> None:
        """Open the stream and set the session up. Raises BackendError if that fails."""
        history = self.shaped_history() if self._seeded else []
        # An adopted call has been greeted already; only a new one hears the greeting.
        greeting = None if history else (self.settings.greeting.strip() or None)
        attempt = 0
        while True:
            try:
                await self._first_leg(history, greeting)
                break
            except BackendError as exc:
                # The first stream is retried like any other (AWS: retry throttling with
                # backoff, transient failures at once), so a busy moment is not a failed call.
                attempt += 1
                policy = self.recovery.policy
                if not policy.retryable(exc) or attempt >= policy.attempts(exc):
                    raise
                log.warning("first_stream_failed_retrying", kind=exc.reason.kind, attempt=attempt)
                self.stats.failures[exc.reason.kind] += 1
                await self.recovery.wait_before_retry(exc, attempt)
        self.life.spawn(self._sender_loop(), name="sender")
        self.life.spawn(self.renewal.run(), name="renewal")

    async def _first_leg(self, history: History, greeting: str | None) -> None:
        async with asyncio.timeout(SETUP_TIMEOUT):
            leg = await self.legs.open()
            try:
                await self.legs.go_live(leg, history, [], greeting)
                if history:
                    self.memory.account(history, [])
            except BaseException:
                await self.legs.drop(leg)
                raise

    def send_audio(self, pcm: bytes) -> None:
        """Queue one chunk of user audio (16 kHz mono s16). Never blocks the media path."""
        if self.life.closing:
            return
        try:
            self._audio_q.put_nowait(pcm)
        except asyncio.QueueFull:
            self.stats.audio_chunks_dropped += 1
            if self.stats.audio_chunks_dropped in (1, 100, 1000):
                log.warning("user_audio_dropped", dropped=self.stats.audio_chunks_dropped)

    async def send_text(self, text: str) -> None:
        """Typed user input in a live call (RTVI ``send-text``): the model gets it as an
        interactive USER text while the audio content stays open, and answers by voice and
        text as it would answer speech. The text is reported as a final ``UserTranscript``
        and kept in the history; sent while the stream is being replaced, it reaches the
        replacement. Blank text is ignored; text beyond 4000 bytes is cut."""
        text = " ".join(text.split())
        if not text or self.life.closing or self.life.ended.is_set():
            return
        text = cap_bytes(text, USER_TEXT_MAX_BYTES)
        self.stats.user_texts_sent += 1
        self.listener.on_event(UserTranscript(text, True))
        self.memory.remember("USER", text)
        self.memory.unanswered = True
        self.turn.reply_expected_at = asyncio.get_running_loop().time()
        self._typed.append(_normalized(text))
        leg = await self._live_after_handover()
        if leg is None or leg.dead:
            return  # recovering: the new stream gets it re-sent as an unanswered turn
        await self._send_user_text(leg, text)

    async def _send_user_text(self, leg: Leg, text: str) -> None:
        """``text`` to ``leg`` as interactive USER text (typed text, a filler, a late result);
        a send that fails is that leg's failure, for recovery to handle."""
        try:
            await self.legs.send(leg, *self.legs.user_text_block(text))
        except BackendError as exc:
            self.recovery.leg_failed(leg, exc)

    async def _live_after_handover(self) -> Leg | None:
        """The live leg, once a renewal switching streams this moment is done (bounded): text
        for the model goes to the stream that will answer it, not the one being retired."""
        leg = self.legs.live
        if leg is not None and leg.retired and not leg.dead:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HANDOVER_WAIT_S):
                    while self.legs.live is leg and leg.retired:
                        self.life.changed.clear()
                        await self.life.changed.wait()
            leg = self.legs.live
        return leg

    async def close(self, reason: str = "hangup") -> None:
        """End the session in order (audio contentEnd, promptEnd, sessionEnd), then release
        every stream. Bounded in time whatever state the backend is in."""
        if self.life.closing:
            await self.life.ended.wait()
            return
        self.life.closing = True
        leg = self.legs.live
        for task in list(self.life.tasks):
            if task.get_name() in ("sender", "renewal", "recovery"):
                task.cancel()
        if leg is not None and not leg.dead and not self.life.ended.is_set():
            with contextlib.suppress(BackendError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.legs.send(
                        leg,
                        ContentEnd(self.prompt_name, self.legs.audio_content),
                        PromptEnd(self.prompt_name),
                        SessionEnd(),
                    )
            # Give the model a moment to finish its output in order, then stop waiting.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.shield(self.life.ended.wait())
        tasks = list(self.life.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        legs = list(self.legs.open_legs)
        if legs:
            await asyncio.gather(*(self.legs.drop(x) for x in legs), return_exceptions=True)
        self.life.finish(reason)

    # -- LegHooks -----------------------------------------------------------------------------

    def leg_opened(self, leg: Leg) -> None:
        self.life.spawn(self._receive_loop(leg))

    def leg_went_live(self, leg: Leg) -> None:
        self.turn.reset()

    def leg_failed(self, leg: Leg, exc: BackendError) -> None:
        self.recovery.leg_failed(leg, exc)

    def _answer_lost_tools(self, leg: Leg, why: str) -> None:
        """Tool calls the old leg asked for and can no longer take a result for: the browser
        gets an error result, the history notes it, nothing stays open."""
        for use in leg.pending_tools.values():
            self.stats.tool_calls += 1
            self.listener.on_event(ToolCallFinished(use.tool_name, use.tool_use_id, False, why))
            self.memory.remember(
                "ASSISTANT", f"(The {use.tool_name} tool call was cut off: {why}.)"
            )
        leg.pending_tools.clear()

    # -- sending ---------------------------------------------------------------------------

    async def _sender_loop(self) -> None:
        """Forward caller audio to the live leg; fill silence on our own clock when the caller
        goes quiet; hand over to a prepared leg between two chunks."""
        silence = bytes(round(self._chunk_s * self.input_rate) * 2)
        fill = max(1, round(SILENCE_AFTER / self._chunk_s))
        while True:
            try:
                async with asyncio.timeout(SILENCE_AFTER):
                    chunks = [(await self._audio_q.get(), False)]
            except TimeoutError:
                # About SILENCE_AFTER seconds passed with no audio: send that much silence.
                chunks = [(silence, True)] * fill
            for pcm, filled in chunks:
                self.memory.replay.add(pcm)
                leg = self.legs.live
                if leg is None or leg.dead:
                    continue  # recovering: the replay buffer keeps it for the next leg
                if self.legs.take_audio(leg, pcm):  # behind a replay still being paced
                    self._count_sent(filled)
                    continue
                new = self.legs.next
                if (
                    self.renewal.wanted
                    and new is not None
                    and not new.dead
                    and self.renewal.step(leg, new)
                ):
                    await self.renewal.hand_over(leg, new)  # replays this chunk too
                    continue
                try:
                    await self.legs.send(leg, self.legs.audio(pcm))
                except BackendError as exc:
                    self.recovery.leg_failed(leg, exc)
                    continue
                self._count_sent(filled)

    def _count_sent(self, filled: bool) -> None:
        if filled:
            self.stats.silence_chunks_sent += 1
        else:
            self.stats.audio_chunks_sent += 1

    # -- receiving ---------------------------------------------------------------------------

    async def _receive_loop(self, leg: Leg) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for event in leg.stream.events():
                leg.last_output_at = loop.time()
                leg.output_seen = True
                if leg is self.legs.live and not leg.retired:
                    self._handle(leg, event)
                else:
                    self.stats.stale_events_dropped += 1
        except BackendError as exc:
            self.recovery.leg_failed(leg, exc)
            return
        except Exception as exc:  # a bug below us must not leave the call hanging silently
            log.exception("receive_loop_failed")
            self.recovery.leg_failed(leg, StreamLost(f"unexpected error: {exc!r}"))
            return
        if leg.retired or leg.dead:
            return
        if self.life.closing and leg is self.legs.live:
            self.life.finish("closed")
            return
        self.recovery.leg_failed(leg, StreamLost("the model ended the session unexpectedly"))

    def _handle(self, leg: Leg, event: OutputEvent) -> None:
        match event:
            case OutputContentStart():
                leg.contents[event.content_id] = Content(
                    event.type, event.role, event.generation_stage
                )
                if event.role == "ASSISTANT":
                    self.turn.reply_expected_at = None
                    if event.type == "TEXT" and event.generation_stage == "SPECULATIVE":
                        self.turn.speculative_open += 1
                if event.type == "AUDIO" and event.role == "ASSISTANT":
                    leg.turn_audio.add(event.content_id)
                    if not self.turn.speaking:
                        # The first audio content of a turn; a turn may have several (OUT2:
                        # an AUDIO contentEnd with PARTIAL_TURN is followed by more).
                        self.turn.speaking = True
                        self.turn.interrupted = False
                        self.turn.audio_seen = False
            case TextOutput():
                self._on_text(leg, event)
            case SonicAudioOutput():
                if event.content_id in leg.interrupted_audio:
                    return
                if not self.turn.audio_seen:
                    self.turn.audio_seen = True
                    self.listener.on_event(BotAudioStarted(asyncio.get_running_loop().time()))
                self.listener.on_audio(event.content)
            case ToolUse():
                self.turn.reply_expected_at = None
                leg.pending_tools[event.content_id] = event
                self.listener.on_event(
                    ToolCallStarted(event.tool_name, event.tool_use_id, event.content)
                )
            case OutputContentEnd():
                content = leg.contents.pop(event.content_id, None)
                if event.stop_reason == "INTERRUPTED":
                    self._barge_in(leg, event.content_id if event.type == "AUDIO" else None)
                elif (
                    event.type == "AUDIO"
                    and content is not None
                    and content.role == "ASSISTANT"
                    and event.stop_reason != "PARTIAL_TURN"
                ):
                    self._end_turn(leg)
                if event.type == "TOOL":
                    use = leg.pending_tools.pop(event.content_id, None)
                    if use is not None:
                        leg.running_tools += 1
                        self.life.spawn(self._run_tool(leg, use))
            case CompletionEnd():
                # AWS shows completionEnd after a turn but does not promise one per turn (it
                # may come once, at the session's end): turns end on their audio's END_TURN;
                # this only ends a turn whose end never came, or counts an audio-less one.
                if self.turn.speaking or not self.turn.ended:
                    self._end_turn(leg)
                leg.interrupted_audio.clear()
                leg.turn_audio.clear()
                self.turn.speculative_open = 0
                self.turn.ended = False
            case UsageEvent():
                self._on_usage(leg, event)
            case _:
                pass

    def _end_turn(self, leg: Leg) -> None:
        """The assistant's turn is over (its audio ended with END_TURN, it was interrupted, or
        a completionEnd came without either)."""
        self.turn.speaking = False
        self.turn.ended = True
        self.turn.audio_seen = False
        self.stats.turns += 1
        self.listener.on_event(BotTurnDone())

    def _on_usage(self, leg: Leg, event: UsageEvent) -> None:
        """Nova Sonic's usageEvent carries a delta and the stream's running totals (which
        restart on every stream); the call's counts are the deltas summed (as Pipecat's and
        LiveKit's clients read them). Without a delta, the growth of the stream's totals."""
        totals = _tokens(event.details.get("total")) or Tokens(
            input_speech=event.input_tokens, output_speech=event.output_tokens
        )
        delta = _tokens(event.details.get("delta"))
        if delta is None:
            prev = leg.usage_totals
            delta = Tokens(
                *(
                    max(0, now - before)
                    for now, before in zip(_fields(totals), _fields(prev), strict=True)
                )
            )
        leg.usage_totals = totals
        self.stats.tokens = self.stats.tokens + delta
        call = self.stats.tokens
        self.listener.on_event(
            Usage(call.input, call.output, call.input + call.output, call, delta)
        )

    def _on_text(self, leg: Leg, event: TextOutput) -> None:
        if is_interruption_marker(event.content):
            self._barge_in(leg, None)
            return
        content = leg.contents.get(event.content_id)
        role = content.role if content is not None else event.role
        stage = content.stage if content is not None else "FINAL"
        text = event.content.strip()
        if role == "ASSISTANT" and stage != "SPECULATIVE" and self.turn.speculative_open:
            self.turn.speculative_open -= 1  # the final text of a speculative one: turn complete
        if not text:
            return  # empty user transcripts caused spurious interruptions elsewhere
        if role == "USER":
            final = stage != "SPECULATIVE"
            if _normalized(text) in self._typed:
                # The model's echo of typed text (reported and remembered when it was sent).
                if final:
                    self._typed.remove(_normalized(text))
                return
            self.listener.on_event(UserTranscript(text, final))
            if final:
                self.memory.remember("USER", text)
                self.memory.unanswered = True
                # What the live leg heard is in the history now; never replay it as audio.
                self.memory.replay.commit()
                self.turn.reply_expected_at = asyncio.get_running_loop().time()
        elif role == "ASSISTANT":
            final = stage != "SPECULATIVE"
            self.listener.on_event(BotText(text, final))
            if final:
                self.memory.remember("ASSISTANT", text)
                self.memory.unanswered = False

    def _barge_in(self, leg: Leg, audio_content_id: str | None) -> None:
        # Drop whatever audio of the current assistant turn is still open or still to come.
        for cid, content in leg.contents.items():
            if content.type == "AUDIO" and content.role == "ASSISTANT":
                leg.interrupted_audio.add(cid)
        leg.interrupted_audio |= leg.turn_audio
        if audio_content_id is not None:
            leg.interrupted_audio.add(audio_content_id)
        self.turn.speculative_open = 0
        if self.turn.interrupted:
            return
        self.turn.interrupted = True
        dropped = self.listener.on_flush()
        self.stats.barge_ins += 1
        self.listener.on_event(BotInterrupted(dropped))
        if self.turn.speaking:
            self._end_turn(leg)

    async def _run_tool(self, leg: Leg, use: ToolUse) -> None:
        try:
            async with self._tool_sem:
                running = asyncio.ensure_future(self.tools.run(use.tool_name, use.content))
                try:
                    filler = self.tools.filler(use.tool_name)
                    if filler is not None:
                        # A timer on the call itself: a tool done in time gets no filler.
                        done, _ = await asyncio.wait({running}, timeout=filler[0])
                        if not done:
                            await self._say_filler(leg, use, filler[1])
                    result, ok = await running
                finally:
                    running.cancel()  # only matters when this task itself is cancelled
        finally:
            leg.running_tools -= 1
        self.stats.tool_calls += 1
        self.listener.on_event(ToolCallFinished(use.tool_name, use.tool_use_id, ok, result))
        if leg.dead or leg.retired or leg is not self.legs.live:
            # The stream that asked is gone; its successor never saw the toolUse. Keep the
            # outcome in the history so the model knows it on the next stream.
            self.memory.remember("ASSISTANT", f"(The {use.tool_name} tool returned: {result})")
            if leg.error is None:
                # Renewed away, not failed: nobody asks the new stream the question again (a
                # recovery re-sends the unanswered turn, and the tool is asked for anew), so
                # it is told the result and says it.
                await self._tell_late_result(use, result)
            return
        name = str(uuid.uuid4())
        block: list[InputEvent] = [
            ToolResultContentStart(self.prompt_name, name, use.tool_use_id),
            ToolResult(self.prompt_name, name, result),
            ContentEnd(self.prompt_name, name),
        ]
        try:
            await self.legs.send(leg, *block)
        except BackendError as exc:
            self.recovery.leg_failed(leg, exc)

    async def _tell_late_result(self, use: ToolUse, result: str) -> None:
        """Give a result whose stream a renewal replaced to the live stream, as an interactive
        instruction (``sonic.late_result_instruction``); not the user's words, so neither
        reported nor kept in the history (which has the result already)."""
        leg = await self._live_after_handover()
        if leg is None or leg.dead or self.life.closing or self.life.ended.is_set():
            return  # recovering, or ending: the history has it for whatever comes next
        self.stats.tool_results_late += 1
        instruction = late_result_instruction(use.tool_name, result)
        self._typed.append(_normalized(instruction))  # drop the model's echo of it
        await self._send_user_text(leg, instruction)

    async def _say_filler(self, leg: Leg, use: ToolUse, filler: str) -> None:
        """Once per slow tool call: ask the stream that called it to tell the caller to wait
        (an interactive instruction, see ``sonic.filler``), unless the call is ending or that
        stream is gone. Not the user's words, so neither reported nor kept in the history."""
        if self.life.closing or self.life.ended.is_set():
            return
        if leg.dead or leg.retired or leg is not self.legs.live:
            return
        self.stats.tool_fillers += 1
        self.listener.on_event(ToolFiller(use.tool_name, use.tool_use_id, filler))
        instruction = filler_instruction(filler)
        self._typed.append(_normalized(instruction))  # drop the model's echo of it
        await self._send_user_text(leg, instruction)


def _tokens(part: object) -> Tokens | None:
    """``{"input": {"speechTokens", "textTokens"}, "output": {...}}`` of usageEvent details."""
    if not isinstance(part, dict):
        return None

    def count(direction: str, key: str) -> int:
        side = part.get(direction)
        value = side.get(key, 0) if isinstance(side, dict) else 0
        return value if isinstance(value, int) and value >= 0 else 0

    return Tokens(
        count("input", "speechTokens"),
        count("input", "textTokens"),
        count("output", "speechTokens"),
        count("output", "textTokens"),
    )


def _fields(tokens: Tokens) -> tuple[int, int, int, int]:
    return tokens.input_speech, tokens.input_text, tokens.output_speech, tokens.output_text


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())
