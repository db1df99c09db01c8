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
from collections.abc import Iterable
from typing import Final

import structlog

from voicegate.backends.base import Backend, BackendError, StreamLost
from voicegate.conversation.continuation import cap_bytes
from voicegate.conversation.events import (
    MAX_HISTORY,
    BotAudioStarted,
    BotInterrupted,
    BotText,
    BotTurnDone,
    ConversationListener,
    ConversationSettings,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
    UserTranscript,
)
from voicegate.conversation.legs import (
    CLOSE_TIMEOUT,
    SETUP_TIMEOUT,
    USER_TEXT_MAX_BYTES,
    Content,
    Leg,
)
from voicegate.conversation.renewal import Renewal
from voicegate.conversation.tools import ToolRegistry
from voicegate.sonic import (
    AudioInput,
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
    is_interruption_marker,
)
from voicegate.sonic import AudioOutput as SonicAudioOutput
from voicegate.sonic.events import INPUT_SAMPLE_RATE

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


class Conversation(Renewal):
    """The conversation of one call; the call layer holds it and is its listener."""

    def __init__(
        self,
        backend: Backend,
        settings: ConversationSettings,
        tools: ToolRegistry,
        listener: ConversationListener,
    ) -> None:
        super().__init__(backend, settings, tools, listener)
        self._audio_q: asyncio.Queue[bytes] = asyncio.Queue(
            max(1, round(SEND_QUEUE_S / self._chunk_s))
        )
        self._tool_sem = asyncio.Semaphore(MAX_TOOL_TASKS)
        self._turn_interrupted = False
        self._turn_audio_seen = False
        self._reply_expected_at: float | None = None
        self._speculative_open = 0
        self._seeded = False
        """``seed`` gave this conversation another node's history: the first stream replays it."""
        self._typed: deque[str] = deque(maxlen=MAX_TYPED_KEPT)
        """Typed texts recently sent, so a model's echo of one is not a second user turn."""

    # -- lifecycle ---------------------------------------------------------------------------

    def seed(self, history: Iterable[tuple[Role, str]]) -> None:
        """Before ``start``: the history of a call adopted from another node; the first stream
        gets it replayed like a renewal would (the bot knows what was said before)."""
        self.stats.history = list(history)[-MAX_HISTORY:]
        self._history_version += 1
        self._seeded = True

    async def start(self) -> None:
        """Open the stream and set the session up. Raises BackendError if that fails."""
        history = self.shaped_history() if self._seeded else []
        # An adopted call has been greeted already; only a new one hears the greeting.
        greeting = None if history else (self.settings.greeting.strip() or None)
        async with asyncio.timeout(SETUP_TIMEOUT):
            leg = await self._open_leg()
            try:
                await self._go_live(leg, history, [], greeting)
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

    async def send_text(self, text: str) -> None:
        """Typed user input in a live call (RTVI ``send-text``): the model gets it as an
        interactive USER text while the audio content stays open, and answers by voice and
        text as it would answer speech. The text is reported as a final ``UserTranscript``
        and kept in the history; sent while the stream is being replaced, it reaches the
        replacement. Blank text is ignored; text beyond 4000 bytes is cut."""
        text = " ".join(text.split())
        if not text or self._closing or self.ended.is_set():
            return
        text = cap_bytes(text, USER_TEXT_MAX_BYTES)
        self.stats.user_texts_sent += 1
        self.listener.on_event(UserTranscript(text, True))
        self._remember("USER", text)
        self._unanswered = True
        self._reply_expected_at = asyncio.get_running_loop().time()
        self._typed.append(_normalized(text))
        leg = self._leg
        if leg is not None and leg.retired and not leg.dead:
            # A renewal is switching streams this moment: the new one is to answer it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HANDOVER_WAIT_S):
                    while self._leg is leg and leg.retired:
                        self._leg_changed.clear()
                        await self._leg_changed.wait()
            leg = self._leg
        if leg is None or leg.dead:
            return  # recovering: the new stream gets it re-sent as an unanswered turn
        try:
            await self._send_block(leg, self._user_text_block(text))
        except BackendError as exc:
            self._leg_failed(leg, exc)

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

    def _leg_went_live(self) -> None:
        self._turn_interrupted = False
        self._turn_audio_seen = False
        self._speculative_open = 0

    def _answer_lost_tools(self, leg: Leg, why: str) -> None:
        """Tool calls the old leg asked for and can no longer take a result for: the browser
        gets an error result, the history notes it, nothing stays open."""
        for use in leg.pending_tools.values():
            self.stats.tool_calls += 1
            self.listener.on_event(ToolCallFinished(use.tool_name, use.tool_use_id, False, why))
            self._remember("ASSISTANT", f"(The {use.tool_name} tool call was cut off: {why}.)")
        leg.pending_tools.clear()

    # -- sending ---------------------------------------------------------------------------

    async def _sender_loop(self) -> None:
        """Forward caller audio to the live leg; fill silence on our own clock when the caller
        goes quiet; hand over to a prepared leg between two chunks."""
        silence = bytes(round(self._chunk_s * INPUT_SAMPLE_RATE) * 2)
        fill = max(1, round(SILENCE_AFTER / self._chunk_s))
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

    async def _receive_loop(self, leg: Leg) -> None:
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

    def _handle(self, leg: Leg, event: OutputEvent) -> None:
        match event:
            case OutputContentStart():
                leg.contents[event.content_id] = Content(
                    event.type, event.role, event.generation_stage
                )
                if event.role == "ASSISTANT":
                    self._reply_expected_at = None
                    if event.type == "TEXT" and event.generation_stage == "SPECULATIVE":
                        self._speculative_open += 1
                if event.type == "AUDIO" and event.role == "ASSISTANT":
                    leg.turn_audio.add(event.content_id)
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
                leg.turn_audio.clear()
                self._speculative_open = 0
                self.stats.turns += 1
                self.listener.on_event(BotTurnDone())
            case UsageEvent():
                self.listener.on_event(
                    Usage(event.input_tokens, event.output_tokens, event.total_tokens)
                )
            case _:
                pass

    def _on_text(self, leg: Leg, event: TextOutput) -> None:
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
            if _normalized(text) in self._typed:
                # The model's echo of typed text (reported and remembered when it was sent).
                if final:
                    self._typed.remove(_normalized(text))
                return
            self.listener.on_event(UserTranscript(text, final))
            if final:
                self._remember("USER", text)
                self._unanswered = True
                # What the live leg heard is in the history now; never replay it as audio.
                self._replay.commit()
                self._reply_expected_at = asyncio.get_running_loop().time()
        elif role == "ASSISTANT":
            final = stage != "SPECULATIVE"
            self.listener.on_event(BotText(text, final))
            if final:
                self._remember("ASSISTANT", text)
                self._unanswered = False

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

    def _barge_in(self, leg: Leg, audio_content_id: str | None) -> None:
        # Drop whatever audio of the current assistant turn is still open or still to come.
        for cid, content in leg.contents.items():
            if content.type == "AUDIO" and content.role == "ASSISTANT":
                leg.interrupted_audio.add(cid)
        leg.interrupted_audio |= leg.turn_audio
        if audio_content_id is not None:
            leg.interrupted_audio.add(audio_content_id)
        self._speculative_open = 0
        if self._turn_interrupted:
            return
        self._turn_interrupted = True
        dropped = self.listener.on_flush()
        self.stats.barge_ins += 1
        self.listener.on_event(BotInterrupted(dropped))

    async def _run_tool(self, leg: Leg, use: ToolUse) -> None:
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
        block: list[InputEvent] = [
            ToolResultContentStart(self.prompt_name, name, use.tool_use_id),
            ToolResult(self.prompt_name, name, result),
            ContentEnd(self.prompt_name, name),
        ]
        try:
            await self._send_block(leg, block)
        except BackendError as exc:
            self._leg_failed(leg, exc)


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())
