"""A Nova Sonic session simulated inside the process: the base of every in-process brain.

The echo brain, the embedded offline brain and the stand-in's scripted brain are subclasses.
This class owns what they share: the session grammar (sessionStart, promptStart, text blocks
before audio, one audio content, tool results, orderly close) checked the way Bedrock checks it,
the output queue (bounded), and helpers that emit correctly shaped output sequences.

A grammar violation does not raise from ``send``: like Bedrock, it arrives as an error on the
output side (``events()`` raises ValidationFailed) and the session is over.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from voicegate.backends.base import BackendError, StreamLost, ValidationFailed
from voicegate.sonic import (
    INTERRUPTED_MARKER,
    AudioContentStart,
    AudioInput,
    AudioOutput,
    CompletionEnd,
    CompletionStart,
    ContentEnd,
    Ids,
    InputEvent,
    OutputContentEnd,
    OutputContentStart,
    OutputEvent,
    PromptEnd,
    PromptStart,
    Role,
    SessionEnd,
    SessionStart,
    StopReason,
    TextContentStart,
    TextInput,
    TextOutput,
    ToolResult,
    ToolResultContentStart,
    ToolSpec,
    ToolUse,
)

log = structlog.get_logger(__name__)

MAX_USER_TEXTS_KEPT: Final = 32
MAX_QUEUED_OUTPUT: Final = 4096
"""Output events waiting for the consumer; a brain that outruns it waits (backpressure)."""


class _End:
    pass


_END: Final = _End()


@dataclass(slots=True)
class _OpenContent:
    name: str
    kind: str  # "TEXT" | "AUDIO" | "TOOL"
    role: Role
    interactive: bool = False
    tool_use_id: str = ""
    parts: list[str] = field(default_factory=list)


class InProcessStream:
    """Base class for brains. Subclasses override the ``on_*`` hooks and use ``emit_*``."""

    def __init__(self) -> None:
        self.session_id = str(uuid.uuid4())
        self.session: SessionStart | None = None
        self.prompt: PromptStart | None = None
        self.tools: dict[str, ToolSpec] = {}
        self.system_prompt = ""
        self.history: list[tuple[Role, str]] = []
        self.user_texts: deque[str] = deque(maxlen=MAX_USER_TEXTS_KEPT)
        """Interactive USER texts received (typed input, a greeting, a re-sent turn)."""
        self.audio_started = False
        self.completion_id = ""
        self._contents: dict[str, _OpenContent] = {}
        self._out: asyncio.Queue[OutputEvent | BackendError | _End] = asyncio.Queue(
            MAX_QUEUED_OUTPUT
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished = False
        self._closed = False

    # -- the BackendStream interface ------------------------------------------------------

    async def send(self, event: InputEvent) -> None:
        if self._closed:
            raise StreamLost("the session is closed")
        if self._finished:
            return  # like Bedrock after an error: input is ignored
        try:
            await self._accept(event)
        except ValidationFailed as exc:
            await self.fail(exc)

    async def events(self) -> AsyncIterator[OutputEvent]:
        while True:
            item = await self._out.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BackendError):
                raise item
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.on_close()
        except Exception:  # a brain's cleanup must not break teardown
            log.exception("brain_close_failed")
        self._finish_nowait()

    # -- hooks for brains -------------------------------------------------------------------

    async def on_audio_start(self) -> None:
        """The audio content opened: system prompt, history and tools are known."""

    async def on_audio(self, pcm: bytes) -> None:
        """One chunk of user audio (16-bit mono at the audio content's rate)."""

    async def on_text(self, role: Role, text: str, interactive: bool) -> None:
        """A complete text block from the client (history, or Nova 2 cross-modal input)."""

    async def on_tool_result(self, tool_use_id: str, content: str) -> None:
        """The client answered a toolUse."""

    async def on_session_end(self) -> None:
        """The client sent sessionEnd (after promptEnd)."""

    async def on_close(self) -> None:
        """The stream is being released."""

    # -- helpers for brains ----------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a brain task that is cancelled when the stream closes; errors end the stream."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("brain_task_failed", error=repr(exc))
            err = exc if isinstance(exc, BackendError) else StreamLost(f"brain failed: {exc!r}")
            self._fail_nowait(err)

    @property
    def ids(self) -> Ids:
        return Ids(
            self.session_id, self.prompt.prompt_name if self.prompt else "", self.completion_id
        )

    @property
    def output_rate(self) -> int:
        return self.prompt.output_sample_rate if self.prompt else 24000

    async def emit(self, event: OutputEvent) -> None:
        if not self._finished:
            await self._out.put(event)

    async def begin_completion(self) -> None:
        if not self.completion_id:
            self.completion_id = str(uuid.uuid4())
            await self.emit(CompletionStart(self.ids))

    async def end_completion(self, stop_reason: str = "END_TURN") -> None:
        if self.completion_id:
            await self.emit(CompletionEnd(stop_reason, self.ids))
            self.completion_id = ""

    async def emit_text(
        self,
        role: Role,
        text: str,
        stage: str = "FINAL",
        stop_reason: StopReason = "END_TURN",
    ) -> None:
        await self.begin_completion()
        cid = str(uuid.uuid4())
        await self.emit(OutputContentStart(cid, "TEXT", role, stage, ids=self.ids))
        await self.emit(TextOutput(cid, role, text, self.ids))
        await self.emit(OutputContentEnd(cid, "TEXT", stop_reason, self.ids))

    async def begin_audio(self) -> str:
        await self.begin_completion()
        cid = str(uuid.uuid4())
        await self.emit(
            OutputContentStart(cid, "AUDIO", "ASSISTANT", None, self.output_rate, self.ids)
        )
        return cid

    async def emit_audio(self, content_id: str, pcm: bytes) -> None:
        await self.emit(AudioOutput(content_id, pcm, self.ids))

    async def end_audio(self, content_id: str, stop_reason: StopReason = "END_TURN") -> None:
        await self.emit(OutputContentEnd(content_id, "AUDIO", stop_reason, self.ids))

    async def emit_tool_use(self, tool_name: str, arguments: dict[str, Any]) -> str:
        await self.begin_completion()
        cid = str(uuid.uuid4())
        tool_use_id = str(uuid.uuid4())
        await self.emit(OutputContentStart(cid, "TOOL", "TOOL", None, ids=self.ids))
        await self.emit(ToolUse(cid, tool_name, tool_use_id, json.dumps(arguments), self.ids))
        await self.emit(OutputContentEnd(cid, "TOOL", "TOOL_USE", self.ids))
        return tool_use_id

    async def emit_interrupted(self, audio_content_id: str | None = None) -> None:
        """Nova Sonic's barge-in signals: the marker text and INTERRUPTED stop reasons."""
        await self.begin_completion()
        cid = str(uuid.uuid4())
        await self.emit(OutputContentStart(cid, "TEXT", "ASSISTANT", "FINAL", ids=self.ids))
        await self.emit(TextOutput(cid, "ASSISTANT", INTERRUPTED_MARKER, self.ids))
        await self.emit(OutputContentEnd(cid, "TEXT", "INTERRUPTED", self.ids))
        if audio_content_id is not None:
            await self.end_audio(audio_content_id, "INTERRUPTED")

    async def fail(self, error: BackendError) -> None:
        self._fail_nowait(error)

    def _fail_nowait(self, error: BackendError) -> None:
        if self._finished:
            return
        self._finished = True
        _force_put(self._out, error)

    async def finish(self) -> None:
        """End the output stream in order (what Bedrock does after sessionEnd)."""
        self._finish_nowait()

    def _finish_nowait(self) -> None:
        if self._finished:
            return
        self._finished = True
        _force_put(self._out, _END)

    # -- grammar ---------------------------------------------------------------------------

    async def _accept(self, event: InputEvent) -> None:
        match event:
            case SessionStart():
                if self.session is not None:
                    raise ValidationFailed("sessionStart may only be sent once")
                self.session = event
            case PromptStart():
                if self.session is None:
                    raise ValidationFailed("promptStart must follow sessionStart")
                if self.prompt is not None:
                    raise ValidationFailed("only one prompt per session is supported")
                self.prompt = event
                self.tools = {t.name: t for t in event.tools}
            case TextContentStart() | AudioContentStart() | ToolResultContentStart():
                self._check_prompt(event.prompt_name)
                if event.content_name in self._contents:
                    raise ValidationFailed(f"content {event.content_name!r} is already open")
                if isinstance(event, TextContentStart):
                    if any(c.kind == "TEXT" for c in self._contents.values()):
                        raise ValidationFailed("a text content is already open")
                    self._contents[event.content_name] = _OpenContent(
                        event.content_name, "TEXT", event.role, event.interactive
                    )
                elif isinstance(event, AudioContentStart):
                    if self.audio_started:
                        raise ValidationFailed("only one audio content per prompt is supported")
                    self.audio_started = True
                    self._contents[event.content_name] = _OpenContent(
                        event.content_name, "AUDIO", event.role
                    )
                    await self.on_audio_start()
                else:
                    self._contents[event.content_name] = _OpenContent(
                        event.content_name, "TOOL", "TOOL", tool_use_id=event.tool_use_id
                    )
            case TextInput() | ToolResult():
                content = self._content(event.prompt_name, event.content_name)
                expected = "TEXT" if isinstance(event, TextInput) else "TOOL"
                if content.kind != expected:
                    raise ValidationFailed(
                        f"{type(event).__name__} sent into a {content.kind} content"
                    )
                content.parts.append(event.content)
            case AudioInput():
                content = self._content(event.prompt_name, event.content_name)
                if content.kind != "AUDIO":
                    raise ValidationFailed("audioInput sent into a non-audio content")
                if any(c.kind == "TEXT" and not c.interactive for c in self._contents.values()):
                    raise ValidationFailed(
                        "Chat history should be sent completely before streaming audio."
                    )
                if len(event.content) % 2:
                    raise ValidationFailed("audioInput must hold whole 16-bit samples")
                await self.on_audio(event.content)
            case ContentEnd():
                content = self._content(event.prompt_name, event.content_name)
                del self._contents[event.content_name]
                text = "".join(content.parts)
                if content.kind == "TEXT":
                    if content.role == "SYSTEM":
                        self.system_prompt = text
                    elif not self.audio_started and not content.interactive:
                        self.history.append((content.role, text))
                    elif content.interactive and content.role == "USER":
                        self.user_texts.append(text)
                    await self.on_text(content.role, text, content.interactive)
                elif content.kind == "TOOL":
                    await self.on_tool_result(content.tool_use_id, text)
            case PromptEnd():
                self._check_prompt(event.prompt_name)
                if self._contents:
                    raise ValidationFailed("promptEnd sent while contents are still open")
            case SessionEnd():
                await self.on_session_end()
                await self.finish()

    def _check_prompt(self, prompt_name: str) -> None:
        if self.prompt is None:
            raise ValidationFailed("content sent before promptStart")
        if prompt_name != self.prompt.prompt_name:
            raise ValidationFailed(f"unknown promptName {prompt_name!r}")

    def _content(self, prompt_name: str, content_name: str) -> _OpenContent:
        self._check_prompt(prompt_name)
        content = self._contents.get(content_name)
        if content is None:
            raise ValidationFailed(f"content {content_name!r} is not open")
        return content


def _force_put(queue: asyncio.Queue[Any], item: Any) -> None:
    """Put a terminal item even into a full queue: the oldest output gives way, and is counted."""
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
            log.warning("output_dropped_at_end")
