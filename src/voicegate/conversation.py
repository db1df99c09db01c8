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
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog

from voicegate.backends.base import Backend, BackendError, BackendStream, StreamLost
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
from voicegate.tools import ToolRegistry

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
    audio_chunks_sent: int = 0
    silence_chunks_sent: int = 0
    audio_chunks_dropped: int = 0
    tool_calls: int = 0
    barge_ins: int = 0
    turns: int = 0
    history: list[tuple[Role, str]] = field(default_factory=list)


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
        self._stream: BackendStream | None = None
        self._send_lock = asyncio.Lock()
        self._audio_q: asyncio.Queue[bytes] = asyncio.Queue(SEND_QUEUE_CHUNKS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._contents: dict[str, _Content] = {}
        self._pending_tools: dict[str, ToolUse] = {}
        self._tool_sem = asyncio.Semaphore(MAX_TOOL_TASKS)
        self._interrupted_audio: set[str] = set()
        self._turn_interrupted = False
        self._turn_audio_seen = False
        self._closing = False
        self.ended = asyncio.Event()
        self.end_reason = ""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the stream and set the session up. Raises BackendError if that fails."""
        s = self.settings
        async with asyncio.timeout(SETUP_TIMEOUT):
            self._stream = await self.backend.open()
            try:
                setup: list[InputEvent] = [
                    SessionStart(s.max_tokens, s.top_p, s.temperature, s.endpointing_sensitivity),
                    PromptStart(self.prompt_name, s.voice_id, s.output_rate, self.tools.specs()),
                    *self._text_block("SYSTEM", s.system_prompt),
                    AudioContentStart(self.prompt_name, self.audio_content, INPUT_RATE),
                ]
                for event in setup:
                    await self._send(event)
            except BaseException:
                await self._stream.close()
                raise
        self._spawn(self._receive_loop(self._stream))
        self._spawn(self._sender_loop(), name="sender")

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

    async def close(self, reason: str = "hangup") -> None:
        """End the session in order (audio contentEnd, promptEnd, sessionEnd), then release
        the stream. Bounded in time whatever state the backend is in."""
        if self._closing:
            await self.ended.wait()
            return
        self._closing = True
        stream = self._stream
        for task in list(self._tasks):
            if task.get_name() == "sender":
                task.cancel()
        if stream is not None and not self.ended.is_set():
            with contextlib.suppress(BackendError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._send(ContentEnd(self.prompt_name, self.audio_content))
                    await self._send(PromptEnd(self.prompt_name))
                    await self._send(SessionEnd())
            # Give the model a moment to finish its output in order, then stop waiting.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.shield(self.ended.wait())
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if stream is not None:
            await stream.close()
        self._finish(reason)

    # -- sending -----------------------------------------------------------------------------

    def _text_block(self, role: Role, text: str) -> list[InputEvent]:
        name = str(uuid.uuid4())
        return [
            TextContentStart(self.prompt_name, name, role, interactive=False),
            TextInput(self.prompt_name, name, text),
            ContentEnd(self.prompt_name, name),
        ]

    async def _send(self, event: InputEvent) -> None:
        stream = self._stream
        if stream is None:
            raise StreamLost("no stream")
        async with self._send_lock:
            await stream.send(event)

    async def _sender_loop(self) -> None:
        """Forward caller audio; fill silence on our own clock when the caller goes quiet."""
        silence = bytes(CHUNK_SAMPLES * 2)
        try:
            while True:
                try:
                    async with asyncio.timeout(SILENCE_AFTER):
                        pcm = await self._audio_q.get()
                except TimeoutError:
                    # About SILENCE_AFTER seconds passed with no audio: send that much silence.
                    for _ in range(round(SILENCE_AFTER / CHUNK_SECONDS)):
                        await self._send(AudioInput(self.prompt_name, self.audio_content, silence))
                        self.stats.silence_chunks_sent += 1
                    continue
                await self._send(AudioInput(self.prompt_name, self.audio_content, pcm))
                self.stats.audio_chunks_sent += 1
        except BackendError as exc:
            self._fail(exc)

    # -- receiving ---------------------------------------------------------------------------

    async def _receive_loop(self, stream: BackendStream) -> None:
        try:
            async for event in stream.events():
                self._handle(event)
        except BackendError as exc:
            self._fail(exc)
            return
        except Exception as exc:  # a bug below us must not leave the call hanging silently
            log.exception("receive_loop_failed")
            self._fail(StreamLost(f"unexpected error: {exc!r}"))
            return
        if not self._closing:
            self._fail(StreamLost("the model ended the session unexpectedly"))
        else:
            self._finish("closed")

    def _handle(self, event: OutputEvent) -> None:
        match event:
            case OutputContentStart():
                self._contents[event.content_id] = _Content(
                    event.type, event.role, event.generation_stage
                )
                if event.type == "AUDIO" and event.role == "ASSISTANT":
                    self._turn_interrupted = False
                    self._turn_audio_seen = False
            case TextOutput():
                self._on_text(event)
            case SonicAudioOutput():
                if event.content_id in self._interrupted_audio:
                    return
                if not self._turn_audio_seen:
                    self._turn_audio_seen = True
                    self.listener.on_event(BotAudioStarted(asyncio.get_running_loop().time()))
                self.listener.on_audio(event.content)
            case ToolUse():
                self._pending_tools[event.content_id] = event
                self.listener.on_event(
                    ToolCallStarted(event.tool_name, event.tool_use_id, event.content)
                )
            case OutputContentEnd():
                content = self._contents.pop(event.content_id, None)
                if event.stop_reason == "INTERRUPTED":
                    self._barge_in(event.content_id if event.type == "AUDIO" else None)
                elif event.type == "AUDIO" and content is not None and content.role == "ASSISTANT":
                    self.listener.on_event(BotTurnDone())
                if event.type == "TOOL":
                    use = self._pending_tools.pop(event.content_id, None)
                    if use is not None:
                        self._spawn(self._run_tool(use))
            case CompletionEnd():
                self._interrupted_audio.clear()
                self.stats.turns += 1
                self.listener.on_event(BotTurnDone())
            case UsageEvent():
                self.listener.on_event(
                    Usage(event.input_tokens, event.output_tokens, event.total_tokens)
                )
            case _:
                pass

    def _on_text(self, event: TextOutput) -> None:
        if is_interruption_marker(event.content):
            self._barge_in(None)
            return
        content = self._contents.get(event.content_id)
        role = content.role if content is not None else event.role
        stage = content.stage if content is not None else "FINAL"
        text = event.content.strip()
        if not text:
            return  # empty user transcripts caused spurious interruptions elsewhere
        if role == "USER":
            final = stage != "SPECULATIVE"
            self.listener.on_event(UserTranscript(text, final))
            if final:
                self._remember("USER", text)
        elif role == "ASSISTANT":
            final = stage != "SPECULATIVE"
            self.listener.on_event(BotText(text, final))
            if final:
                self._remember("ASSISTANT", text)

    def _remember(self, role: Role, text: str) -> None:
        history = self.stats.history
        if history and history[-1][0] == role:
            history[-1] = (role, f"{history[-1][1]} {text}")
        else:
            history.append((role, text))
        if len(history) > 200:
            del history[:-200]

    def _barge_in(self, audio_content_id: str | None) -> None:
        # Drop whatever audio of the current assistant turn is still open or still to come.
        for cid, content in self._contents.items():
            if content.type == "AUDIO" and content.role == "ASSISTANT":
                self._interrupted_audio.add(cid)
        if audio_content_id is not None:
            self._interrupted_audio.add(audio_content_id)
        if self._turn_interrupted:
            return
        self._turn_interrupted = True
        dropped = self.listener.on_flush()
        self.stats.barge_ins += 1
        self.listener.on_event(BotInterrupted(dropped))

    async def _run_tool(self, use: ToolUse) -> None:
        async with self._tool_sem:
            result, ok = await self.tools.run(use.tool_name, use.content)
        self.stats.tool_calls += 1
        self.listener.on_event(ToolCallFinished(use.tool_name, use.tool_use_id, ok, result))
        name = str(uuid.uuid4())
        try:
            await self._send(ToolResultContentStart(self.prompt_name, name, use.tool_use_id))
            await self._send(ToolResult(self.prompt_name, name, result))
            await self._send(ContentEnd(self.prompt_name, name))
        except BackendError as exc:
            self._fail(exc)

    # -- ending ------------------------------------------------------------------------------

    def _fail(self, exc: BackendError) -> None:
        if self.ended.is_set():
            return
        if self._closing:
            self._finish("closed")
            return
        log.warning("conversation_failed", kind=exc.kind, error=exc.message)
        self.listener.on_event(ConversationError(exc.kind, exc.message, fatal=True))
        self._finish(f"error:{exc.kind}")

    def _finish(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self.listener.on_event(ConversationEnded(reason))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
