"""A Nova Sonic session simulated inside the process: the base of every in-process brain.

The echo brain, the embedded offline brain and the stand-in's scripted brain are subclasses.
This class owns what they share: the session grammar (``grammar.py``: order, roles, history
rules, tool results, orderly close) checked the way Bedrock checks it, the output queue
(bounded), and helpers that emit correctly shaped output sequences, in Nova 2's order.

A grammar violation does not raise from ``send``: like Bedrock, it arrives as an error on the
output side (``events()`` raises ValidationFailed) and the session is over. Only an event sent
after sessionEnd, when the output has already ended in order, raises from ``send``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Sequence
from datetime import datetime
from typing import Any, Final

import structlog

from voicegate.backends.base import BackendError, StreamLost, ValidationFailed
from voicegate.backends.grammar import OpenContent, SessionGrammar
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
    PromptStart,
    Role,
    SessionEnd,
    SessionStart,
    StopReason,
    TextOutput,
    ToolSpec,
    ToolUse,
)

__all__ = ["InProcessStream", "MAX_QUEUED_OUTPUT", "MAX_USER_TEXTS_KEPT"]

log = structlog.get_logger(__name__)

MAX_USER_TEXTS_KEPT: Final = 32
MAX_QUEUED_OUTPUT: Final = 4096
"""Output events waiting for the consumer; a brain that outruns it waits (backpressure)."""


class _End:
    pass


_END: Final = _End()


class InProcessStream:
    """Base class for brains. Subclasses override the ``on_*`` hooks and use ``emit_*``."""

    def __init__(self) -> None:
        self.session_id = str(uuid.uuid4())
        self.grammar = SessionGrammar()
        self.tools: dict[str, ToolSpec] = {}
        self.user_texts: deque[str] = deque(maxlen=MAX_USER_TEXTS_KEPT)
        """Interactive USER texts received (typed input, a greeting, a re-sent turn)."""
        self.completion_id = ""
        self._out: asyncio.Queue[OutputEvent | BackendError | _End] = asyncio.Queue(
            MAX_QUEUED_OUTPUT
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished = False
        self._closed = False
        self._send_lock = asyncio.Lock()
        self.quirks: frozenset[str] = frozenset()
        """The stand-in's ``--quirks`` (names in ``voicegate.standin.quirks``)."""
        self.async_tools = False
        """Nova 2's asynchronous tool calling: the model goes on listening and answering while
        a tool result is pending, and speaks the result when it arrives (set by the stand-in
        for Nova 2 model ids; Nova 1 waits for the result)."""

    # -- the BackendStream interface ------------------------------------------------------

    @property
    def session(self) -> SessionStart | None:
        return self.grammar.session

    @property
    def prompt(self) -> PromptStart | None:
        return self.grammar.prompt

    @property
    def system_prompt(self) -> str:
        return self.grammar.system_prompt or ""

    @property
    def history(self) -> list[tuple[Role, str]]:
        """The chat history the client sent before the audio content (role, text)."""
        return self.grammar.history

    @property
    def audio_started(self) -> bool:
        return self.grammar.audio_started

    @property
    def input_rate(self) -> int:
        """Sample rate of the user audio ``on_audio`` gets (the audio content's; 0 before)."""
        return self.grammar.audio_rate

    @property
    def ended_in_order(self) -> bool:
        """The client closed the session in order (sessionEnd after promptEnd)."""
        return self.grammar.session_ended

    async def send(self, event: InputEvent) -> None:
        if self._closed:
            raise StreamLost("the session is closed")
        if self._finished and not self.ended_in_order:
            return  # like Bedrock after an error: input is ignored
        try:
            content = self.grammar.accept(event)
        except ValidationFailed as exc:
            if self._finished:
                raise  # the output already ended in order: nothing left to carry the error
            await self.fail(exc)
            return
        try:
            await self._dispatch(event, content)
        except ValidationFailed as exc:
            await self.fail(exc)

    def credentials_expiration(self) -> datetime | None:
        return None  # nothing is signed in-process

    async def send_all(self, events: Sequence[InputEvent]) -> None:
        """Send events back to back (``send`` may await a brain's hook in between)."""
        async with self._send_lock:
            for event in events:
                await self.send(event)

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
        if "one-completion" in self.quirks:
            return  # one completion for the whole session: ended at the session's end
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
        self.grammar.tool_use_issued(tool_use_id)
        await self.emit(OutputContentStart(cid, "TOOL", "TOOL", None, ids=self.ids))
        await self.emit(ToolUse(cid, tool_name, tool_use_id, json.dumps(arguments), self.ids))
        await self.emit(OutputContentEnd(cid, "TOOL", "TOOL_USE", self.ids))
        return tool_use_id

    async def emit_interrupted(self, audio_content_id: str | None = None) -> None:
        """Nova 2's barge-in, in its order: the assistant's AUDIO content ends as END_TURN
        first, then an ASSISTANT text with the ``{ "interrupted" : true }`` marker whose
        contentEnd carries stopReason INTERRUPTED (the signal clients act on)."""
        await self.begin_completion()
        if audio_content_id is not None:
            await self.end_audio(audio_content_id, "END_TURN")
        cid = str(uuid.uuid4())
        await self.emit(OutputContentStart(cid, "TEXT", "ASSISTANT", "FINAL", ids=self.ids))
        await self.emit(TextOutput(cid, "ASSISTANT", INTERRUPTED_MARKER, self.ids))
        await self.emit(OutputContentEnd(cid, "TEXT", "INTERRUPTED", self.ids))

    async def fail(self, error: BackendError) -> None:
        self._fail_nowait(error)

    def _fail_nowait(self, error: BackendError) -> None:
        if self._finished:
            return
        self._finished = True
        _force_put(self._out, error)

    async def finish(self) -> None:
        """End the output stream in order (what Bedrock does after sessionEnd)."""
        if self.completion_id and "one-completion" in self.quirks and not self._finished:
            await self.emit(CompletionEnd("END_TURN", self.ids))
            self.completion_id = ""
        self._finish_nowait()

    def _finish_nowait(self) -> None:
        if self._finished:
            return
        self._finished = True
        _force_put(self._out, _END)

    # -- dispatch to the brain's hooks -----------------------------------------------------

    async def _dispatch(self, event: InputEvent, closed: OpenContent | None) -> None:
        """Run the brain's hooks for an event the grammar accepted."""
        match event:
            case PromptStart():
                self.tools = {t.name: t for t in event.tools}
            case AudioContentStart():
                await self.on_audio_start()
            case AudioInput():
                await self.on_audio(event.content)
            case ContentEnd() if closed is not None:
                text = "".join(closed.parts)
                if closed.kind == "TEXT":
                    if closed.interactive and closed.role == "USER" and self.audio_started:
                        self.user_texts.append(text)
                    await self.on_text(closed.role, text, closed.interactive)
                elif closed.kind == "TOOL":
                    await self.on_tool_result(closed.tool_use_id, text)
            case SessionEnd():
                await self.on_session_end()
                await self.finish()
            case _:
                pass


def _force_put(queue: asyncio.Queue[Any], item: Any) -> None:
    """Put a terminal item even into a full queue: the oldest output gives way, and is counted."""
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
            log.warning("output_dropped_at_end")
