"""Nova Sonic's event vocabulary as typed dataclasses (their JSON form is ``codec``'s).

Every backend (Bedrock, the embedded offline brain, the echo brain, the stand-in's scripted
brain) speaks exactly these events, so the conversation layer above is identical whichever is in
use, and the Bedrock backend is only a transport: ``codec`` turns these dataclasses into the JSON
that Bedrock expects and Bedrock's JSON back into dataclasses.

Audio is carried as raw little-endian PCM ``bytes`` inside the dataclasses; base64 only happens
at the JSON edge, so in-process backends never pay for it.

The schema is Nova Sonic's input and output event schema as verified on the wire (docs/protocol.md
and the stand-in, docs/standin.md, describe what voicegate sends and accepts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from voicegate.sonic.models import DEFAULT_VOICE

__all__ = [
    "tool_choice_json",
    "tool_choice_problem",
    "AudioContentStart",
    "AudioInput",
    "AudioOutput",
    "CompletionEnd",
    "CompletionStart",
    "ContentEnd",
    "ContentType",
    "ENDPOINTING",
    "INPUT_SAMPLE_RATE",
    "INTERRUPTED_MARKER",
    "Ids",
    "InputEvent",
    "OUTPUT_SAMPLE_RATE",
    "OutputContentEnd",
    "OutputContentStart",
    "OutputEvent",
    "PromptEnd",
    "PromptStart",
    "ROLES",
    "Role",
    "STOP_REASONS",
    "SessionEnd",
    "SessionStart",
    "StopReason",
    "TextContentStart",
    "TextInput",
    "TextOutput",
    "ToolResult",
    "ToolResultContentStart",
    "ToolSpec",
    "ToolUse",
    "UsageEvent",
    "is_interruption_marker",
]

INTERRUPTED_MARKER: Final = '{ "interrupted" : true }'
"""The literal text Nova Sonic puts in a textOutput when the user barges in."""

INPUT_SAMPLE_RATE: Final = 16000
OUTPUT_SAMPLE_RATE: Final = 24000

Role = Literal["SYSTEM", "USER", "ASSISTANT", "TOOL", "SYSTEM_SPEECH"]
ContentType = Literal["TEXT", "AUDIO", "TOOL"]
StopReason = Literal["PARTIAL_TURN", "END_TURN", "INTERRUPTED", "TOOL_USE"]

ROLES: Final = frozenset({"SYSTEM", "USER", "ASSISTANT", "TOOL", "SYSTEM_SPEECH"})
STOP_REASONS: Final = frozenset({"PARTIAL_TURN", "END_TURN", "INTERRUPTED", "TOOL_USE"})
ENDPOINTING: Final = frozenset({"HIGH", "MEDIUM", "LOW"})


def is_interruption_marker(text: str) -> bool:
    """True for the barge-in marker text, tolerant of whitespace differences."""
    return "".join(text.split()) == '{"interrupted":true}'


# --------------------------------------------------------------------------------------------
# Input events (client -> model)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionStart:
    max_tokens: int = 1024
    top_p: float = 0.9
    temperature: float = 0.7
    endpointing_sensitivity: str | None = None  # Nova 2 only: HIGH | MEDIUM | LOW


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PromptStart:
    prompt_name: str
    voice_id: str = DEFAULT_VOICE
    output_sample_rate: int = OUTPUT_SAMPLE_RATE
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = ""
    """``toolConfiguration.toolChoice``: "" (not sent: the model's default, auto), ``auto``,
    ``any`` (at least one tool first) or ``tool:NAME`` (that tool first); see
    ``tool_choice_problem``."""


def tool_choice_problem(choice: str, tool_names: Sequence[str] | None = None) -> str | None:
    """Why ``choice`` is not a usable ``PromptStart.tool_choice`` for these tools (None: the
    form only), or None."""
    if choice in ("", "auto", "any"):
        return None
    kind, _, name = choice.partition(":")
    if kind != "tool" or not name:
        return f"tool choice {choice!r} must be auto, any or tool:NAME"
    if tool_names is not None and name not in tool_names:
        return f"tool choice {choice!r} names no configured tool ({', '.join(tool_names)})"
    return None


def tool_choice_json(choice: str) -> dict[str, Any] | None:
    """The toolChoice object Nova Sonic documents ({"auto": {}}, {"any": {}},
    {"tool": {"name": ...}}), or None when nothing is to be sent."""
    if not choice:
        return None
    if choice in ("auto", "any"):
        return {choice: {}}
    return {"tool": {"name": choice.partition(":")[2]}}


@dataclass(frozen=True, slots=True)
class TextContentStart:
    prompt_name: str
    content_name: str
    role: Role
    interactive: bool = False


@dataclass(frozen=True, slots=True)
class AudioContentStart:
    prompt_name: str
    content_name: str
    sample_rate: int = INPUT_SAMPLE_RATE
    role: Role = "USER"


@dataclass(frozen=True, slots=True)
class ToolResultContentStart:
    prompt_name: str
    content_name: str
    tool_use_id: str


@dataclass(frozen=True, slots=True)
class TextInput:
    prompt_name: str
    content_name: str
    content: str


@dataclass(frozen=True, slots=True)
class AudioInput:
    prompt_name: str
    content_name: str
    content: bytes  # 16-bit little-endian mono PCM at the content's sample rate


@dataclass(frozen=True, slots=True)
class ToolResult:
    prompt_name: str
    content_name: str
    content: str


@dataclass(frozen=True, slots=True)
class ContentEnd:
    prompt_name: str
    content_name: str


@dataclass(frozen=True, slots=True)
class PromptEnd:
    prompt_name: str


@dataclass(frozen=True, slots=True)
class SessionEnd:
    pass


InputEvent = (
    SessionStart
    | PromptStart
    | TextContentStart
    | AudioContentStart
    | ToolResultContentStart
    | TextInput
    | AudioInput
    | ToolResult
    | ContentEnd
    | PromptEnd
    | SessionEnd
)


# --------------------------------------------------------------------------------------------
# Output events (model -> client)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ids:
    """Identifiers Nova Sonic puts on every output event."""

    session_id: str = ""
    prompt_name: str = ""
    completion_id: str = ""


@dataclass(frozen=True, slots=True)
class CompletionStart:
    ids: Ids = field(default_factory=Ids)


@dataclass(frozen=True, slots=True)
class OutputContentStart:
    content_id: str
    type: ContentType
    role: Role
    generation_stage: str | None = None  # "SPECULATIVE" | "FINAL" for TEXT
    sample_rate: int = OUTPUT_SAMPLE_RATE  # for AUDIO
    ids: Ids = field(default_factory=Ids)


@dataclass(frozen=True, slots=True)
class TextOutput:
    content_id: str
    role: Role
    content: str
    ids: Ids = field(default_factory=Ids)


@dataclass(frozen=True, slots=True)
class AudioOutput:
    content_id: str
    content: bytes  # 16-bit little-endian mono PCM at the prompt's output rate
    ids: Ids = field(default_factory=Ids)


@dataclass(frozen=True, slots=True)
class ToolUse:
    content_id: str
    tool_name: str
    tool_use_id: str
    content: str  # JSON text of the arguments
    ids: Ids = field(default_factory=Ids)


@dataclass(frozen=True, slots=True)
class OutputContentEnd:
    content_id: str
    type: ContentType
    stop_reason: StopReason
    ids: Ids = field(default_factory=Ids)


@dataclass(frozen=True, slots=True)
class CompletionEnd:
    stop_reason: str = "END_TURN"
    ids: Ids = field(default_factory=Ids)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    input_tokens: int
    output_tokens: int
    total_tokens: int
    details: dict[str, Any] = field(default_factory=dict)
    ids: Ids = field(default_factory=Ids)


OutputEvent = (
    CompletionStart
    | OutputContentStart
    | TextOutput
    | AudioOutput
    | ToolUse
    | OutputContentEnd
    | CompletionEnd
    | UsageEvent
)
