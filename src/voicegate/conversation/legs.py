"""One model stream after another: the legs of a call's conversation.

Nova Sonic ends a stream after ~8 minutes and streams die (resets, throttling, transient
validation errors), so one call is a sequence of *legs*, one stream each. This module owns a
leg's life: opening it (session setup without audio), taking it live (history, the audio content,
an interactive user text if any, the replayed user audio), and retiring and closing it in order.
Replacing a failed leg (``recovery``), planned renewal (``renewal``) and the dialogue
(``dialogue``) build on it; what is replayed to a new leg is ``continuation``'s.
docs/renewal.md has the details.

All sends to one leg go through its lock: SigV4 event signatures are chained per stream, so
sends must not interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import structlog

from voicegate.audio.chunks import model_chunk_seconds
from voicegate.backends.base import Backend, BackendError, BackendStream, StreamLost
from voicegate.conversation.continuation import (
    ReplayBuffer,
    cap_bytes,
    history_bytes,
    shape_history,
)
from voicegate.conversation.events import (
    ConversationEnded,
    ConversationError,
    ConversationListener,
    ConversationSettings,
    ConversationStats,
)
from voicegate.conversation.tools import ToolRegistry
from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    ContentEnd,
    InputEvent,
    PromptEnd,
    PromptStart,
    Role,
    SessionEnd,
    SessionStart,
    TextContentStart,
    TextInput,
    ToolUse,
)
from voicegate.sonic.events import INPUT_SAMPLE_RATE

log = structlog.get_logger(__name__)

SETUP_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0
REPLAY_EVENT_BYTES: Final = 4096
"""Replayed user audio goes in 128 ms events (see ``_go_live``)."""
TEXT_PART_BYTES: Final = 1000
"""Nova Sonic takes at most ~1 KB per textInput; longer interactive text is split."""
USER_TEXT_MAX_BYTES: Final = 4000
"""Typed text and a re-sent turn are cut to this (with a mark)."""


def split_text(text: str, limit: int = TEXT_PART_BYTES) -> list[str]:
    """``text`` (cut to USER_TEXT_MAX_BYTES) in pieces of at most ``limit`` UTF-8 bytes, split
    on character boundaries."""
    raw = cap_bytes(text, USER_TEXT_MAX_BYTES).encode()
    parts: list[str] = []
    while raw:
        part = raw[:limit].decode(errors="ignore")  # a split character waits for the next
        parts.append(part)
        raw = raw[len(part.encode()) :]
    return parts


@dataclass(slots=True)
class Content:
    """An output content the model has open on a leg."""

    type: str
    role: Role
    stage: str | None


class Leg:
    """One model stream of the call, with the state that belongs to that stream only."""

    def __init__(self, number: int, stream: BackendStream, opened_at: float) -> None:
        self.number = number
        self.stream = stream
        self.opened_at = opened_at
        self.ready_at: float | None = None  # audio content open: the leg is live
        self.last_output_at = opened_at
        self.send_lock = asyncio.Lock()  # SigV4 event signatures are chained per stream
        self.contents: dict[str, Content] = {}
        self.pending_tools: dict[str, ToolUse] = {}
        self.running_tools = 0
        self.interrupted_audio: set[str] = set()
        self.turn_audio: set[str] = set()
        """ASSISTANT audio contents of the current completion, open or already ended: Nova 2
        ends the AUDIO content (END_TURN) before it signals the interruption."""
        self.dead = False  # failed, or closed by us
        self.error: BackendError | None = None  # why it failed
        self.failed = asyncio.Event()
        self.retired = False  # no longer the live leg; its output is ignored
        self.preload: asyncio.Task[None] | None = None
        self.preloaded: tuple[int, list[tuple[Role, str]]] | None = None
        """(history version, history) already sent to this prepared leg."""


class Legs:
    """The stream side of a conversation; ``Conversation`` is built on it."""

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
        self._leg: Leg | None = None  # the live leg: user audio goes here, its output counts
        self._next: Leg | None = None  # prepared in the background for a renewal
        self._legs: set[Leg] = set()  # every leg not closed yet
        self._leg_count = 0
        self._chunk_s = model_chunk_seconds()
        """Length of the user audio chunks: the caller's (audio.configure_chunks, 20 ms by
        default) and the silence filled in; one length, so the replay buffer's bound is a
        duration whatever is fed."""
        self._replay = ReplayBuffer(c.replay_max_s, c.replay_preroll_s, INPUT_SAMPLE_RATE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._leg_changed = asyncio.Event()
        self._recovering = False
        self._history_version = 0
        self._attempts_used = 0
        self._closing = False
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.on_history: Callable[[], None] | None = None
        """Told after every change of ``stats.history`` (the cluster keeps a copy elsewhere)."""

    # -- hooks the dialogue implements -------------------------------------------------------

    async def _receive_loop(self, leg: Leg) -> None:
        """Consume the leg's output events until it ends or fails."""
        raise NotImplementedError

    def _leg_went_live(self) -> None:
        """A new leg carries the conversation now: reset per-turn state."""
        raise NotImplementedError

    def _answer_lost_tools(self, leg: Leg, why: str) -> None:
        """Tool calls ``leg`` asked for can no longer be answered on it."""
        raise NotImplementedError

    # -- legs --------------------------------------------------------------------------------

    async def _open_leg(self) -> Leg:
        """Open a stream and send the session setup (no audio content yet)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        stream = await self.backend.open()
        self._leg_count += 1
        self.stats.streams_opened += 1
        leg = Leg(self._leg_count, stream, loop.time())
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
        self,
        leg: Leg,
        history: list[tuple[Role, str]],
        audio: list[bytes],
        user_text: str | None = None,
    ) -> None:
        """History, the audio content, ``user_text`` as an interactive USER turn (a greeting
        instruction, an unanswered turn re-sent) and the replayed user audio; then the leg is
        live."""
        for role, text in history:
            for event in self._text_block(role, text):
                await self._send_to(leg, event)
        await self._send_to(
            leg, AudioContentStart(self.prompt_name, self.audio_content, INPUT_SAMPLE_RATE)
        )
        if user_text:
            await self._send_block(leg, self._user_text_block(user_text))
        # Replayed audio goes in 128 ms events: fewer events (each one signed and queued
        # through the SDK's small buffer) than caller chunks make the switch shorter.
        replay = b"".join(audio)
        for i in range(0, len(replay), REPLAY_EVENT_BYTES):
            pcm = replay[i : i + REPLAY_EVENT_BYTES]
            await self._send_to(leg, AudioInput(self.prompt_name, self.audio_content, pcm))
        leg.ready_at = asyncio.get_running_loop().time()
        self._leg = leg
        self._leg_went_live()
        self._leg_changed.set()

    def shaped_history(self) -> list[tuple[Role, str]]:
        """The history as the next model stream would get it (Nova Sonic's limits applied):
        what renewal and recovery replay, and what a cluster keeps for adopting the call."""
        c = self._cont
        return shape_history(
            self.stats.history,
            c.history_max_messages,
            c.history_max_message_bytes,
            c.history_max_bytes,
        )

    def _continuation_payload(self) -> tuple[list[tuple[Role, str]], list[bytes]]:
        return self.shaped_history(), self._replay.replay()

    def _account(self, history: list[tuple[Role, str]], audio: list[bytes]) -> tuple[int, float]:
        size = history_bytes(history)
        self.stats.history_bytes_replayed += size
        self.stats.history_messages_replayed += len(history)
        self.stats.audio_chunks_replayed += len(audio)
        return size, sum(len(a) for a in audio) / 2 / INPUT_SAMPLE_RATE * 1000

    def _retire(self, leg: Leg) -> None:
        """Close a leg that is no longer live in order, in the background."""
        leg.retired = True
        self._spawn(self._close_leg(leg))

    async def _close_leg(self, leg: Leg) -> None:
        if not leg.dead:
            with contextlib.suppress(BackendError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    if leg.ready_at is not None:
                        await self._send_to(leg, ContentEnd(self.prompt_name, self.audio_content))
                    await self._send_to(leg, PromptEnd(self.prompt_name))
                    await self._send_to(leg, SessionEnd())
        await self._drop_leg(leg)

    async def _drop_leg(self, leg: Leg) -> None:
        leg.dead = True
        self._legs.discard(leg)
        if self._next is leg:
            self._next = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await leg.stream.close()

    def _usable_preload(self, leg: Leg) -> bool:
        """A prepared leg can go live: no history sent yet, or the current one completely."""
        if leg.preload is None:
            return True
        return leg.preloaded is not None and leg.preloaded[0] == self._history_version

    # -- sending -----------------------------------------------------------------------------

    def _text_block(self, role: Role, text: str) -> list[InputEvent]:
        name = str(uuid.uuid4())
        return [
            TextContentStart(self.prompt_name, name, role, interactive=False),
            TextInput(self.prompt_name, name, text),
            ContentEnd(self.prompt_name, name),
        ]

    def _user_text_block(self, text: str) -> list[InputEvent]:
        """Text the model is to answer now, like speech (Nova 2 cross-modal input): an
        interactive USER content, opened while the audio content stays open, in textInput
        events of at most ~1 KB each."""
        name = str(uuid.uuid4())
        return [
            TextContentStart(self.prompt_name, name, "USER", interactive=True),
            *(TextInput(self.prompt_name, name, part) for part in split_text(text)),
            ContentEnd(self.prompt_name, name),
        ]

    async def _send_block(self, leg: Leg, events: list[InputEvent]) -> None:
        """Send events back to back: no audio chunk of the sender lands inside the block."""
        async with leg.send_lock:
            for event in events:
                await leg.stream.send(event)

    async def _send(self, event: InputEvent) -> None:
        """Send to the live leg."""
        leg = self._leg
        if leg is None:
            raise StreamLost("no stream")
        await self._send_to(leg, event)

    async def _send_to(self, leg: Leg, event: InputEvent) -> None:
        async with leg.send_lock:
            await leg.stream.send(event)

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
