"""One model stream after another: the legs of a call's conversation.

Nova Sonic ends a stream after ~8 minutes and streams die (resets, throttling, transient
validation errors), so one call is a sequence of *legs*, one stream each. ``Legs`` owns a leg's
life: opening it (session setup without audio), taking it live (history, the audio content, an
interactive user text if any, the replayed user audio), and retiring and closing it in order.
Replacing a failed leg (``recovery``), planned renewal (``renewal``) and the dialogue
(``dialogue``) use it; what is replayed to a new leg is ``memory``'s. docs/renewal.md has the
details.

Sends that must not interleave (a text block and the audio chunks around it) go to the stream
in one ``send_all``: the stream serialises its senders (for Bedrock, whose event signatures are
chained, that is the one send lock), so nothing here knows about signing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from voicegate.backends.base import Backend, BackendError, BackendStream, StreamLost
from voicegate.conversation.continuation import cap_bytes
from voicegate.conversation.events import (
    ConversationEnded,
    ConversationError,
    ConversationListener,
    ConversationSettings,
    ConversationStats,
    Tokens,
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

__all__ = [
    "CLOSE_TIMEOUT",
    "Content",
    "Leg",
    "LegHooks",
    "Legs",
    "Lifecycle",
    "REPLAY_EVENT_S",
    "REPLAY_MAX_DELAY_S",
    "REPLAY_PACE",
    "replay_pace",
    "SETUP_TIMEOUT",
    "TEXT_PART_BYTES",
    "TurnState",
    "USER_TEXT_MAX_BYTES",
    "split_text",
]

log = structlog.get_logger(__name__)

SETUP_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0
REPLAY_EVENT_S: Final = 0.128
"""Replayed user audio goes in 128 ms events (see ``Legs.go_live``)."""
REPLAY_PACE: Final = 4.0
"""Replayed audio is sent at most this many times faster than real time (``replay_pace``)."""
REPLAY_MAX_DELAY_S: Final = 0.5
"""The most a paced replay may hold back the audio the caller speaks meanwhile: a longer replay
is sent proportionally faster (``replay_pace``)."""
TEXT_PART_BYTES: Final = 1000
"""Nova Sonic takes at most ~1 KB per textInput; longer interactive text is split."""
USER_TEXT_MAX_BYTES: Final = 4000
"""Typed text and a re-sent turn are cut to this (with a mark)."""


def split_text(
    text: str, limit: int = TEXT_PART_BYTES, cap: int | None = USER_TEXT_MAX_BYTES
) -> list[str]:
    """``text`` (cut to ``cap`` bytes unless None) in pieces of at most ``limit`` UTF-8 bytes,
    split on character boundaries: AWS's chat-history page says one textInput may hold at most
    1 KB and longer text goes in several textInputs of the same content."""
    raw = (text if cap is None else cap_bytes(text, cap)).encode()
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


@dataclass(slots=True)
class TurnState:
    """The dialogue's view of the current assistant turn; renewal reads it to find natural
    points."""

    speculative_open: int = 0
    """SPECULATIVE assistant texts whose FINAL text has not come yet: the turn is under way."""
    reply_expected_at: float | None = None
    """Loop time of the last final user turn not answered yet (None: no answer expected)."""
    interrupted: bool = False
    audio_seen: bool = False
    speaking: bool = False
    """An assistant turn's audio has started and the turn has not ended (its audio contents
    may be several, ended with PARTIAL_TURN but the last)."""
    ended: bool = False
    """A turn ended since the last completionEnd (which then counts no second one)."""

    def reset(self) -> None:
        self.speculative_open = 0
        self.interrupted = False
        self.audio_seen = False
        self.speaking = False
        self.ended = False


def replay_pace(seconds: float) -> float:
    """How many times faster than real time ``seconds`` of replayed audio are sent.

    AWS's input guidance is real-time streaming, but at exactly real time the caller's live
    audio would stay ``seconds`` behind for the rest of the stream. At ``pace`` P the replay
    holds live audio back by at most ``seconds / P`` (the backlog then drains at P - 1 seconds
    of audio per second): at least ``REPLAY_PACE``, faster for a replay that would otherwise
    hold it back more than ``REPLAY_MAX_DELAY_S``."""
    return max(REPLAY_PACE, seconds / REPLAY_MAX_DELAY_S)


class Leg:
    """One model stream of the call, with the state that belongs to that stream only."""

    def __init__(self, number: int, stream: BackendStream, opened_at: float) -> None:
        self.number = number
        self.stream = stream
        self.opened_at = opened_at
        self.ready_at: float | None = None  # audio content open: the leg is live
        self.last_output_at = opened_at
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
        self.history_sent = 0
        """History messages sent to this stream: if it is refused before any output, the call
        carries on with a shorter history (``Recovery``)."""
        self.output_seen = False
        self.usage_totals = Tokens()
        """The stream's running token totals as last reported (they restart on every stream)."""
        self.backlog: deque[bytes] = deque()
        """User audio waiting for its paced turn: the replay, then what the caller said while
        it was being sent (``Legs.pace_replay``). Empty when audio goes out as it comes."""
        self.caught_up = asyncio.Event()
        """Set while no paced replay is under way (the backlog sent, or there was none)."""
        self.caught_up.set()
        self.preload: asyncio.Task[None] | None = None
        self.preloaded: tuple[int, list[tuple[Role, str]]] | None = None
        """(history version, history) already sent to this prepared leg."""


class Lifecycle:
    """Whether the call is closing or over, its background tasks, and the one event everybody
    waits on when the live leg changes."""

    def __init__(self, listener: ConversationListener) -> None:
        self.listener = listener
        self.closing = False
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.changed = asyncio.Event()
        """Set when the live leg changes (or the call ends); waiters clear it first."""
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def fatal(self, exc: BackendError, message: str | None = None) -> None:
        """End the call with an error the caller is told about."""
        if self.ended.is_set():
            return
        log.warning("conversation_failed", kind=exc.kind, error=message or exc.message)
        self.listener.on_event(ConversationError(exc.kind, message or exc.message, fatal=True))
        self.finish(f"error:{exc.kind}")

    def finish(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self.changed.set()
        self.listener.on_event(ConversationEnded(reason))


class LegHooks(Protocol):
    """What the dialogue does when a leg opens or goes live."""

    def leg_opened(self, leg: Leg) -> None:
        """Start consuming the new leg's output."""

    def leg_went_live(self, leg: Leg) -> None:
        """``leg`` carries the conversation now: reset per-turn state."""

    def leg_failed(self, leg: Leg, exc: BackendError) -> None:
        """A send to ``leg`` that nobody awaits (the paced replay) raised."""


class Legs:
    """The model streams of one call: the live one, a prepared next one, and those closing."""

    def __init__(
        self,
        backend: Backend,
        settings: ConversationSettings,
        tools: ToolRegistry,
        stats: ConversationStats,
        life: Lifecycle,
        hooks: LegHooks,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.tools = tools
        self.stats = stats
        self.life = life
        self.hooks = hooks
        self.input_rate = backend.input_rate
        """audioInputConfiguration's sampleRateHertz: the rate the backend takes."""
        self.prompt_name = str(uuid.uuid4())
        self.audio_content = str(uuid.uuid4())
        self.live: Leg | None = None
        """The live leg: user audio goes here, its output counts."""
        self.next: Leg | None = None
        """Prepared in the background for a renewal."""
        self.open_legs: set[Leg] = set()
        """Every leg not closed yet."""
        self._count = 0

    async def open(self) -> Leg:
        """Open a stream and send the session setup (no audio content yet)."""
        s = self.settings
        stream = await self.backend.open()
        self._count += 1
        self.stats.streams_opened += 1
        leg = Leg(self._count, stream, asyncio.get_running_loop().time())
        self.open_legs.add(leg)
        try:
            await self.send(
                leg,
                SessionStart(s.max_tokens, s.top_p, s.temperature, s.endpointing_sensitivity),
                PromptStart(
                    self.prompt_name, s.voice_id, s.output_rate, self.tools.specs(), s.tool_choice
                ),
                *self.text_block("SYSTEM", s.system_prompt),
                *(self.text_block("SYSTEM_SPEECH", s.speech_prompt) if s.speech_prompt else ()),
            )
        except BaseException:
            await self.drop(leg)
            raise
        self.hooks.leg_opened(leg)
        return leg

    async def send_history(self, leg: Leg, history: Sequence[tuple[Role, str]]) -> None:
        for role, text in history:
            await self.send(leg, *self.text_block(role, text))
        leg.history_sent = max(leg.history_sent, len(history))

    async def go_live(
        self,
        leg: Leg,
        history: Sequence[tuple[Role, str]],
        audio: Sequence[bytes],
        user_text: str | None = None,
    ) -> None:
        """History, the audio content, ``user_text`` as an interactive USER turn (a greeting
        instruction, an unanswered turn re-sent) and the replayed user audio; then the leg is
        live."""
        await self.send_history(leg, history)
        await self.send(
            leg, AudioContentStart(self.prompt_name, self.audio_content, self.input_rate)
        )
        if user_text:
            await self.send(leg, *self.user_text_block(user_text))
        # Replayed audio goes in 128 ms events: fewer events (each one signed and queued
        # through the SDK's small buffer) than caller chunks. It is paced, not sent in one
        # burst: AWS asks for audio "streamed in real-time as they're captured"; see
        # ``replay_pace`` for why not at exactly real time.
        replay = b"".join(audio)
        step = round(REPLAY_EVENT_S * self.input_rate) * 2
        leg.backlog.extend(replay[i : i + step] for i in range(0, len(replay), step))
        leg.ready_at = asyncio.get_running_loop().time()
        self.live = leg
        self.hooks.leg_went_live(leg)
        self.life.changed.set()
        if leg.backlog:
            leg.caught_up.clear()
            pace = replay_pace(len(replay) / 2 / self.input_rate)
            self.life.spawn(self.pace_replay(leg, pace), name="replay")

    async def pace_replay(self, leg: Leg, pace: float) -> None:
        """Send ``leg``'s backlog ``pace`` times faster than real time; the caller's new audio
        joins the backlog meanwhile (``take_audio``), so everything stays in order.

        Each event is due when the audio before it has had its share of time at the pace, on a
        clock started with the replay: a loop running late (or a slow send) never slows the
        pace below ``pace``, so the backlog always drains; what a stall held back then goes
        out at once (bounded by the stall), the rest at the pace."""
        loop = asyncio.get_running_loop()
        rate = self.input_rate
        log.debug("replay_paced", leg=leg.number, events=len(leg.backlog), pace=round(pace, 1))
        started = loop.time()
        sent_s = 0.0
        try:
            while leg.backlog and not (leg.dead or leg.retired):
                pcm = leg.backlog.popleft()
                try:
                    await self.send(leg, self.audio(pcm))
                except BackendError as exc:
                    leg.backlog.clear()
                    self.hooks.leg_failed(leg, exc)
                    return
                sent_s += len(pcm) / 2 / rate
                wait = started + sent_s / pace - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
        finally:
            leg.backlog.clear()
            leg.caught_up.set()

    def take_audio(self, leg: Leg, pcm: bytes) -> bool:
        """Queue ``pcm`` behind a replay still being paced to ``leg``; False when there is none
        and the audio is to be sent now."""
        if not leg.backlog:
            return False
        leg.backlog.append(pcm)
        return True

    def retire(self, leg: Leg) -> None:
        """Close a leg that is no longer live in order, in the background."""
        leg.retired = True
        self.life.spawn(self.close(leg))

    async def close(self, leg: Leg) -> None:
        """End the leg's session in order (bounded), then release it."""
        leg.backlog.clear()  # no paced audio after the audio content's end
        if not leg.dead:
            with contextlib.suppress(BackendError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.send(leg, *self.closing_events(leg))
        await self.drop(leg)

    def closing_events(self, leg: Leg) -> list[InputEvent]:
        events: list[InputEvent] = []
        if leg.ready_at is not None:
            events.append(ContentEnd(self.prompt_name, self.audio_content))
        return [*events, PromptEnd(self.prompt_name), SessionEnd()]

    async def drop(self, leg: Leg) -> None:
        """Release the leg's stream without an orderly end."""
        leg.dead = True
        self.open_legs.discard(leg)
        if self.next is leg:
            self.next = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await leg.stream.close()

    def usable_preload(self, leg: Leg, version: int) -> bool:
        """A prepared leg can go live: no history sent yet, or the current one completely."""
        if leg.preload is None:
            return True
        return leg.preloaded is not None and leg.preloaded[0] == version

    # -- sending -----------------------------------------------------------------------------

    def audio(self, pcm: bytes) -> AudioInput:
        return AudioInput(self.prompt_name, self.audio_content, pcm)

    def text_block(self, role: Role, text: str) -> list[InputEvent]:
        """A non-interactive text content (system prompt, a history message), its text in
        textInputs of at most ~1 KB each (never cut: the history's budget is shaped before)."""
        name = str(uuid.uuid4())
        return [
            TextContentStart(self.prompt_name, name, role, interactive=False),
            *(TextInput(self.prompt_name, name, part) for part in split_text(text, cap=None)),
            ContentEnd(self.prompt_name, name),
        ]

    def user_text_block(self, text: str) -> list[InputEvent]:
        """Text the model is to answer now, like speech (Nova 2 cross-modal input): an
        interactive USER content, opened while the audio content stays open, in textInput
        events of at most ~1 KB each."""
        name = str(uuid.uuid4())
        return [
            TextContentStart(self.prompt_name, name, "USER", interactive=True),
            *(TextInput(self.prompt_name, name, part) for part in split_text(text)),
            ContentEnd(self.prompt_name, name),
        ]

    async def send(self, leg: Leg, *events: InputEvent) -> None:
        """Send events back to back: no other sender's event lands between them."""
        await leg.stream.send_all(events)

    async def send_live(self, *events: InputEvent) -> None:
        """Send to the live leg."""
        leg = self.live
        if leg is None:
            raise StreamLost("no stream")
        await self.send(leg, *events)
