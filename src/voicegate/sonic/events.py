"""Nova Sonic's event vocabulary as typed dataclasses, with JSON codecs.

Every backend (Bedrock, the embedded offline brain, the echo brain, the stand-in's scripted
brain) speaks exactly these events, so the conversation layer above is identical whichever is in
use, and the Bedrock backend is only a transport: it turns these dataclasses into the JSON that
Bedrock expects (``encode_input``) and Bedrock's JSON back into dataclasses (``decode_output``).

Audio is carried as raw little-endian PCM ``bytes`` inside the dataclasses; base64 only happens
at the JSON edge, so in-process backends never pay for it.

The schema follows ../shared/reference/nova-sonic.md section 3 (as verified on the wire).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

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
OUTPUT_RATES: Final = frozenset({8000, 16000, 24000})


class SonicProtocolError(ValueError):
    """A JSON event does not follow the Nova Sonic schema."""


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
    voice_id: str = "matthew"
    output_sample_rate: int = OUTPUT_SAMPLE_RATE
    tools: tuple[ToolSpec, ...] = ()


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


# --------------------------------------------------------------------------------------------
# JSON codecs
# --------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise SonicProtocolError(f"{what}.content must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SonicProtocolError(f"{what}.content is not valid base64") from exc


def encode_input(event: InputEvent) -> dict[str, Any]:
    """The Nova Sonic JSON object (``{"event": {...}}``) for an input event."""
    body: dict[str, Any]
    match event:
        case SessionStart():
            body = {
                "sessionStart": {
                    "inferenceConfiguration": {
                        "maxTokens": event.max_tokens,
                        "topP": event.top_p,
                        "temperature": event.temperature,
                    }
                }
            }
            if event.endpointing_sensitivity is not None:
                body["sessionStart"]["turnDetectionConfiguration"] = {
                    "endpointingSensitivity": event.endpointing_sensitivity
                }
        case PromptStart():
            prompt: dict[str, Any] = {
                "promptName": event.prompt_name,
                "textOutputConfiguration": {"mediaType": "text/plain"},
                "audioOutputConfiguration": {
                    "mediaType": "audio/lpcm",
                    "sampleRateHertz": event.output_sample_rate,
                    "sampleSizeBits": 16,
                    "channelCount": 1,
                    "voiceId": event.voice_id,
                    "encoding": "base64",
                    "audioType": "SPEECH",
                },
            }
            if event.tools:
                prompt["toolUseOutputConfiguration"] = {"mediaType": "application/json"}
                prompt["toolConfiguration"] = {
                    "tools": [
                        {
                            "toolSpec": {
                                "name": t.name,
                                "description": t.description,
                                # Nova Sonic wants the JSON schema as a *string*.
                                "inputSchema": {"json": json.dumps(t.input_schema)},
                            }
                        }
                        for t in event.tools
                    ]
                }
            body = {"promptStart": prompt}
        case TextContentStart():
            body = {
                "contentStart": {
                    "promptName": event.prompt_name,
                    "contentName": event.content_name,
                    "type": "TEXT",
                    "interactive": event.interactive,
                    "role": event.role,
                    "textInputConfiguration": {"mediaType": "text/plain"},
                }
            }
        case AudioContentStart():
            body = {
                "contentStart": {
                    "promptName": event.prompt_name,
                    "contentName": event.content_name,
                    "type": "AUDIO",
                    "interactive": True,
                    "role": event.role,
                    "audioInputConfiguration": {
                        "mediaType": "audio/lpcm",
                        "sampleRateHertz": event.sample_rate,
                        "sampleSizeBits": 16,
                        "channelCount": 1,
                        "audioType": "SPEECH",
                        "encoding": "base64",
                    },
                }
            }
        case ToolResultContentStart():
            body = {
                "contentStart": {
                    "promptName": event.prompt_name,
                    "contentName": event.content_name,
                    "interactive": False,
                    "type": "TOOL",
                    "role": "TOOL",
                    "toolResultInputConfiguration": {
                        "toolUseId": event.tool_use_id,
                        "type": "TEXT",
                        "textInputConfiguration": {"mediaType": "text/plain"},
                    },
                }
            }
        case TextInput():
            body = {
                "textInput": {
                    "promptName": event.prompt_name,
                    "contentName": event.content_name,
                    "content": event.content,
                }
            }
        case AudioInput():
            body = {
                "audioInput": {
                    "promptName": event.prompt_name,
                    "contentName": event.content_name,
                    "content": _b64(event.content),
                }
            }
        case ToolResult():
            body = {
                "toolResult": {
                    "promptName": event.prompt_name,
                    "contentName": event.content_name,
                    "content": event.content,
                }
            }
        case ContentEnd():
            body = {
                "contentEnd": {"promptName": event.prompt_name, "contentName": event.content_name}
            }
        case PromptEnd():
            body = {"promptEnd": {"promptName": event.prompt_name}}
        case SessionEnd():
            body = {"sessionEnd": {}}
    return {"event": body}


def _event_body(obj: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), dict):
        raise SonicProtocolError('an event must be a JSON object {"event": {"<name>": {...}}}')
    inner = obj["event"]
    if len(inner) != 1:
        raise SonicProtocolError("an event object must hold exactly one event")
    ((name, body),) = inner.items()
    if not isinstance(body, dict):
        raise SonicProtocolError(f"{name} must be a JSON object")
    return name, body


def _str(body: dict[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise SonicProtocolError(f"{what}.{key} is required and must be a non-empty string")
    return value


def _opt_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    return value if isinstance(value, str) else ""


def _role(body: dict[str, Any], what: str) -> Role:
    role = body.get("role")
    if role not in ROLES:
        raise SonicProtocolError(f"{what}.role must be one of {sorted(ROLES)}")
    return role  # type: ignore[no-any-return]


def _num(body: dict[str, Any], key: str, what: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SonicProtocolError(f"{what}.{key} must be a number")
    return float(value)


def decode_input(obj: Any) -> InputEvent:
    """Parse and validate one Nova Sonic input event (used by the stand-in)."""
    name, body = _event_body(obj)
    match name:
        case "sessionStart":
            inf = body.get("inferenceConfiguration", {})
            if not isinstance(inf, dict):
                raise SonicProtocolError("sessionStart.inferenceConfiguration must be an object")
            max_tokens = _num(inf, "maxTokens", "inferenceConfiguration", 1024)
            top_p = _num(inf, "topP", "inferenceConfiguration", 0.9)
            temperature = _num(inf, "temperature", "inferenceConfiguration", 0.7)
            if not (0 <= top_p <= 1 and 0 <= temperature <= 1 and max_tokens >= 1):
                raise SonicProtocolError("inferenceConfiguration values out of range")
            sens: str | None = None
            turn = body.get("turnDetectionConfiguration")
            if turn is not None:
                if not isinstance(turn, dict) or turn.get("endpointingSensitivity") not in (
                    ENDPOINTING
                ):
                    raise SonicProtocolError(
                        "turnDetectionConfiguration.endpointingSensitivity must be HIGH, MEDIUM "
                        "or LOW"
                    )
                sens = turn["endpointingSensitivity"]
            return SessionStart(int(max_tokens), top_p, temperature, sens)
        case "promptStart":
            prompt_name = _str(body, "promptName", name)
            audio = body.get("audioOutputConfiguration")
            if not isinstance(audio, dict):
                raise SonicProtocolError("promptStart.audioOutputConfiguration is required")
            rate = audio.get("sampleRateHertz")
            if rate not in OUTPUT_RATES:
                rates = sorted(OUTPUT_RATES)
                raise SonicProtocolError(
                    f"audioOutputConfiguration.sampleRateHertz must be one of {rates}"
                )
            if audio.get("sampleSizeBits", 16) != 16 or audio.get("channelCount", 1) != 1:
                raise SonicProtocolError("audio output must be 16-bit mono")
            voice = audio.get("voiceId", "matthew")
            if not isinstance(voice, str):
                raise SonicProtocolError("audioOutputConfiguration.voiceId must be a string")
            tools: list[ToolSpec] = []
            tool_cfg = body.get("toolConfiguration")
            if tool_cfg is not None:
                if not isinstance(tool_cfg, dict) or not isinstance(tool_cfg.get("tools"), list):
                    raise SonicProtocolError("toolConfiguration.tools must be a list")
                for entry in tool_cfg["tools"]:
                    spec = entry.get("toolSpec") if isinstance(entry, dict) else None
                    if not isinstance(spec, dict):
                        raise SonicProtocolError("each tool needs a toolSpec object")
                    schema_holder = spec.get("inputSchema")
                    if not isinstance(schema_holder, dict) or not isinstance(
                        schema_holder.get("json"), str
                    ):
                        raise SonicProtocolError("toolSpec.inputSchema.json must be a JSON string")
                    try:
                        schema = json.loads(schema_holder["json"])
                    except json.JSONDecodeError as exc:
                        raise SonicProtocolError("toolSpec.inputSchema.json is not JSON") from exc
                    tools.append(
                        ToolSpec(
                            _str(spec, "name", "toolSpec"),
                            _opt_str(spec, "description"),
                            schema if isinstance(schema, dict) else {},
                        )
                    )
            return PromptStart(prompt_name, voice, int(rate), tuple(tools))
        case "contentStart":
            prompt_name = _str(body, "promptName", name)
            content_name = _str(body, "contentName", name)
            ctype = body.get("type")
            if ctype == "TEXT":
                interactive = body.get("interactive", False)
                if not isinstance(interactive, bool):
                    raise SonicProtocolError("contentStart.interactive must be a boolean")
                return TextContentStart(prompt_name, content_name, _role(body, name), interactive)
            if ctype == "AUDIO":
                cfg = body.get("audioInputConfiguration")
                if not isinstance(cfg, dict):
                    raise SonicProtocolError("contentStart.audioInputConfiguration is required")
                if cfg.get("sampleRateHertz") not in (8000, 16000, 24000):
                    raise SonicProtocolError(
                        "audioInputConfiguration.sampleRateHertz must be 8000, 16000 or 24000"
                    )
                if cfg.get("sampleSizeBits") != 16 or cfg.get("channelCount") != 1:
                    raise SonicProtocolError("audio input must be 16-bit mono")
                if cfg.get("mediaType") != "audio/lpcm" or cfg.get("encoding") != "base64":
                    raise SonicProtocolError("audio input must be audio/lpcm, base64")
                return AudioContentStart(
                    prompt_name, content_name, int(cfg["sampleRateHertz"]), _role(body, name)
                )
            if ctype == "TOOL":
                cfg = body.get("toolResultInputConfiguration")
                if not isinstance(cfg, dict):
                    raise SonicProtocolError(
                        "contentStart.toolResultInputConfiguration is required"
                    )
                return ToolResultContentStart(
                    prompt_name,
                    content_name,
                    _str(cfg, "toolUseId", "toolResultInputConfiguration"),
                )
            raise SonicProtocolError("contentStart.type must be TEXT, AUDIO or TOOL")
        case "textInput":
            content = body.get("content")
            if not isinstance(content, str):
                raise SonicProtocolError("textInput.content must be a string")
            return TextInput(
                _str(body, "promptName", name), _str(body, "contentName", name), content
            )
        case "audioInput":
            return AudioInput(
                _str(body, "promptName", name),
                _str(body, "contentName", name),
                _unb64(body.get("content"), name),
            )
        case "toolResult":
            content = body.get("content")
            if not isinstance(content, str):
                raise SonicProtocolError("toolResult.content must be a string")
            return ToolResult(
                _str(body, "promptName", name), _str(body, "contentName", name), content
            )
        case "contentEnd":
            return ContentEnd(_str(body, "promptName", name), _str(body, "contentName", name))
        case "promptEnd":
            return PromptEnd(_str(body, "promptName", name))
        case "sessionEnd":
            return SessionEnd()
    raise SonicProtocolError(f"unknown input event {name!r}")


def _ids_json(ids: Ids) -> dict[str, Any]:
    return {
        "sessionId": ids.session_id,
        "promptName": ids.prompt_name,
        "completionId": ids.completion_id,
    }


def encode_output(event: OutputEvent) -> dict[str, Any]:
    """The Nova Sonic JSON object for an output event (used by the stand-in)."""
    body: dict[str, Any] = _ids_json(event.ids)
    name: str
    match event:
        case CompletionStart():
            name = "completionStart"
        case OutputContentStart():
            name = "contentStart"
            body.update(contentId=event.content_id, type=event.type, role=event.role)
            if event.type == "TEXT":
                body["textOutputConfiguration"] = {"mediaType": "text/plain"}
                if event.generation_stage is not None:
                    body["additionalModelFields"] = json.dumps(
                        {"generationStage": event.generation_stage}
                    )
            elif event.type == "AUDIO":
                body["audioOutputConfiguration"] = {
                    "mediaType": "audio/lpcm",
                    "sampleRateHertz": event.sample_rate,
                    "sampleSizeBits": 16,
                    "channelCount": 1,
                    "encoding": "base64",
                    "audioType": "SPEECH",
                }
            else:
                body["toolUseOutputConfiguration"] = {"mediaType": "application/json"}
        case TextOutput():
            name = "textOutput"
            body.update(contentId=event.content_id, role=event.role, content=event.content)
        case AudioOutput():
            name = "audioOutput"
            body.update(contentId=event.content_id, content=_b64(event.content))
        case ToolUse():
            name = "toolUse"
            body.update(
                contentId=event.content_id,
                toolName=event.tool_name,
                toolUseId=event.tool_use_id,
                content=event.content,
            )
        case OutputContentEnd():
            name = "contentEnd"
            body.update(contentId=event.content_id, type=event.type, stopReason=event.stop_reason)
        case CompletionEnd():
            name = "completionEnd"
            body["stopReason"] = event.stop_reason
        case UsageEvent():
            name = "usageEvent"
            body.update(
                details=event.details,
                totalInputTokens=event.input_tokens,
                totalOutputTokens=event.output_tokens,
                totalTokens=event.total_tokens,
            )
    return {"event": {name: body}}


def _ids(body: dict[str, Any]) -> Ids:
    return Ids(
        _opt_str(body, "sessionId"), _opt_str(body, "promptName"), _opt_str(body, "completionId")
    )


def _stage(body: dict[str, Any]) -> str | None:
    extra = body.get("additionalModelFields")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            return None
    if isinstance(extra, dict):
        stage = extra.get("generationStage")
        return stage if isinstance(stage, str) else None
    return None


def decode_output(obj: Any) -> OutputEvent | None:
    """Parse one Nova Sonic output event; None for event kinds voicegate does not use."""
    name, body = _event_body(obj)
    ids = _ids(body)
    match name:
        case "completionStart":
            return CompletionStart(ids)
        case "contentStart":
            ctype = body.get("type")
            if ctype not in ("TEXT", "AUDIO", "TOOL"):
                raise SonicProtocolError("contentStart.type must be TEXT, AUDIO or TOOL")
            rate = OUTPUT_SAMPLE_RATE
            audio = body.get("audioOutputConfiguration")
            if isinstance(audio, dict) and isinstance(audio.get("sampleRateHertz"), int):
                rate = audio["sampleRateHertz"]
            return OutputContentStart(
                _opt_str(body, "contentId"), ctype, _role(body, name), _stage(body), rate, ids
            )
        case "textOutput":
            return TextOutput(
                _opt_str(body, "contentId"), _role(body, name), _opt_str(body, "content"), ids
            )
        case "audioOutput":
            return AudioOutput(_opt_str(body, "contentId"), _unb64(body.get("content"), name), ids)
        case "toolUse":
            return ToolUse(
                _opt_str(body, "contentId"),
                _str(body, "toolName", name),
                _str(body, "toolUseId", name),
                _opt_str(body, "content") or "{}",
                ids,
            )
        case "contentEnd":
            ctype = body.get("type")
            reason = body.get("stopReason")
            if ctype not in ("TEXT", "AUDIO", "TOOL") or reason not in STOP_REASONS:
                raise SonicProtocolError("contentEnd needs a valid type and stopReason")
            return OutputContentEnd(_opt_str(body, "contentId"), ctype, reason, ids)
        case "completionEnd":
            return CompletionEnd(_opt_str(body, "stopReason") or "END_TURN", ids)
        case "usageEvent":

            def _int(key: str) -> int:
                value = body.get(key, 0)
                return value if isinstance(value, int) else 0

            details = body.get("details")
            return UsageEvent(
                _int("totalInputTokens"),
                _int("totalOutputTokens"),
                _int("totalTokens"),
                details if isinstance(details, dict) else {},
                ids,
            )
    return None


def dumps(obj: dict[str, Any]) -> bytes:
    """Compact JSON bytes, the form sent on the wire."""
    return json.dumps(obj, separators=(",", ":")).encode()
