"""What the owner of a call exchanges with its conversation: settings in; events, audio and
counters out.

The call layer (``voicegate.call``) builds a ``ConversationSettings``, implements
``ConversationListener`` and reads ``ConversationStats``; nothing here knows about WebRTC or
about which backend is behind the conversation. Kept apart from the dialogue logic so the call
layer and /metrics depend on these small, stable shapes only.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from voicegate.conversation.continuation import ContinuationSettings
from voicegate.sonic import Role
from voicegate.sonic.models import DEFAULT_VOICE

MAX_HISTORY: Final = 200
MAX_GAPS_KEPT: Final = 100

DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a friendly, concise voice assistant. Keep answers to one or two short sentences. "
    "Use the tools you have when they help."
)


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    voice_id: str = DEFAULT_VOICE
    max_tokens: int = 1024
    top_p: float = 0.9
    temperature: float = 0.7
    endpointing_sensitivity: str | None = None
    tool_choice: str = ""
    """How the model picks tools (``auto``, ``any``, ``tool:NAME``; "" sends none, the
    model's default auto); checked against the tools at start (``tool_choice_problem``)."""
    speech_prompt: str = ""
    """Nova 2's SYSTEM_SPEECH prompt: how the assistant speaks and transcribes (e.g. the script
    Hindi is transcribed in), sent right after the system prompt; left out for Nova 1."""
    output_rate: int = 24000
    greeting: str = ""
    """When set, sent as an interactive USER text as soon as a call starts, so the assistant
    speaks first (Nova 2's documented way); e.g. "Greet the caller and offer your help"."""
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
class ToolFiller:
    """A tool ran past its ``filler_after``: the caller is being told to wait (``text``)."""

    name: str
    tool_use_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    name: str
    tool_use_id: str
    ok: bool
    result: str


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts split as Nova Sonic reports them (usageEvent ``details``)."""

    input_speech: int = 0
    input_text: int = 0
    output_speech: int = 0
    output_text: int = 0

    @property
    def input(self) -> int:
        return self.input_speech + self.input_text

    @property
    def output(self) -> int:
        return self.output_speech + self.output_text

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input_speech + other.input_speech,
            self.input_text + other.input_text,
            self.output_speech + other.output_speech,
            self.output_text + other.output_text,
        )

    def by_label(self) -> dict[tuple[str, str], int]:
        """{(direction, modality): count}, the labels of ``voicegate_model_tokens_total``."""
        return {
            ("input", "speech"): self.input_speech,
            ("input", "text"): self.input_text,
            ("output", "speech"): self.output_speech,
            ("output", "text"): self.output_text,
        }


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens used by the call so far: the model's per-event deltas summed over every stream of
    the call (each stream's own totals restart at zero), and ``delta``, what this event added."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    split: Tokens = Tokens()
    delta: Tokens = Tokens()


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
    | ToolFiller
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
class ConversationStats:
    """Counters of one call; the field names are read by /metrics (documented in
    docs/renewal.md), so they are kept stable."""

    audio_chunks_sent: int = 0
    silence_chunks_sent: int = 0
    audio_chunks_dropped: int = 0
    tool_calls: int = 0
    tool_fillers: int = 0
    """Tool calls slow enough that the caller heard a filler (at most one per call)."""
    tool_results_late: int = 0
    """Tool results whose stream a renewal replaced, told to the new stream to say."""
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
    data_channel_messages_dropped: int = 0
    """Messages to the browser dropped because its data channel was not read (call.outqueue)."""
    audio_chunks_replayed: int = 0
    stale_events_dropped: int = 0
    """Output of retired streams after a handover, ignored."""
    user_texts_sent: int = 0
    """Typed user messages sent to the model (``Conversation.send_text``)."""
    user_texts_rate_limited: int = 0
    """Typed user messages refused for the per-call rate (call.inbound.TypedText)."""
    turns_resent: int = 0
    """Unanswered user turns re-sent as interactive text after a recovery."""
    history_refusals: int = 0
    """Histories the model refused at renewal, recovery or adoption: the call carried on with a
    shorter one (then none)."""
    tokens: Tokens = Tokens()
    """Model tokens of the call: usageEvent deltas summed over every stream, split by
    direction and modality (not an int: /metrics exports it as voicegate_model_tokens_total)."""
