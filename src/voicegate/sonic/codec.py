"""Nova Sonic events to and from their JSON form (``{"event": {"<name>": {...}}}``), client side.

``encode_input`` writes what the Bedrock backend sends; ``decode_output`` reads what the model
sends back. The model side (the stand-in's strict parser) is ``model_codec``. Audio is base64
only here, at the JSON edge; the dataclasses carry raw PCM bytes.

Output parsing is tolerant, because the model's schema grows (Nova 2 added fields and values
that v1 never sent) and one surprising event must not end a call: unknown event kinds, unknown
fields and unknown enum values are ignored, each logged once per process (not once per event:
audio events arrive 25-50 times a second), and a field a consumer cannot do without (a
contentStart's ``type``) drops just that event. Tool arguments that arrive double-encoded (a
JSON string holding the JSON text) are peeled to the JSON text. What stays an error: an event
that is not ``{"event": {"<name>": {...}}}``, audio that is not base64, a toolUse without its
name or id: corrupt data, not schema growth.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final

import structlog

from voicegate.sonic.events import (
    OUTPUT_SAMPLE_RATE,
    ROLES,
    STOP_REASONS,
    AudioContentStart,
    AudioInput,
    AudioOutput,
    CompletionEnd,
    CompletionStart,
    ContentEnd,
    ContentType,
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
    ToolUse,
    UsageEvent,
    tool_choice_json,
)

__all__ = [
    "CONTENT_TYPES",
    "MAX_JSON_LAYERS",
    "MAX_REPORTED",
    "OUTPUT_FIELDS",
    "SonicProtocolError",
    "audio_input_payload",
    "b64",
    "decode_output",
    "dumps",
    "encode_input",
    "event_body",
    "opt_str",
    "req_str",
    "role_of",
    "tool_arguments",
    "unb64",
]

log = structlog.get_logger(__name__)

CONTENT_TYPES: Final = frozenset({"TEXT", "AUDIO", "TOOL"})
MAX_REPORTED: Final = 256
"""Distinct tolerated surprises logged per process; beyond that they are ignored silently, so
a misbehaving peer cannot flood the log."""
MAX_JSON_LAYERS: Final = 3
"""How many layers of JSON-in-a-JSON-string are peeled off tool arguments."""
_IDS: Final = frozenset({"sessionId", "promptName", "completionId"})
OUTPUT_FIELDS: Final[dict[str, frozenset[str]]] = {
    "completionStart": _IDS,
    "contentStart": _IDS
    | {
        "contentId",
        "type",
        "role",
        "additionalModelFields",
        "textOutputConfiguration",
        "audioOutputConfiguration",
        "toolUseOutputConfiguration",
    },
    "textOutput": _IDS | {"contentId", "role", "content"},
    "audioOutput": _IDS | {"contentId", "content"},
    "toolUse": _IDS | {"contentId", "toolName", "toolUseId", "content"},
    "contentEnd": _IDS | {"contentId", "type", "stopReason"},
    "completionEnd": _IDS | {"stopReason"},
    "usageEvent": _IDS | {"details", "totalInputTokens", "totalOutputTokens", "totalTokens"},
}
"""The fields voicegate reads (or knowingly skips) in each output event it parses."""

_reported: set[tuple[str, str, str]] = set()


class SonicProtocolError(ValueError):
    """A JSON event does not follow the Nova Sonic schema."""


def _report(problem: str, where: str, detail: str = "") -> None:
    """Log a tolerated surprise in the model's output once per (problem, where, detail)."""
    key = (problem, where, detail[:64])
    if key in _reported or len(_reported) >= MAX_REPORTED:
        return
    _reported.add(key)
    log.warning("sonic_output_tolerated", problem=problem, where=where, detail=key[2])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise SonicProtocolError(f"{what}.content must be a base64 string")
    try:
        # strict_mode refuses what b64decode(validate=True) refuses (characters outside the
        # alphabet, bad padding) without its extra regex pass over the whole string: a third
        # of the cost of every output audio event.
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise SonicProtocolError(f"{what}.content is not valid base64") from exc


_AUDIO_PREFIXES: dict[tuple[str, str], bytes] = {}
_MAX_AUDIO_PREFIXES: Final = 256
_AUDIO_SUFFIX: Final = b'"}}}'


def audio_input_payload(event: AudioInput) -> bytes:
    """``dumps(encode_input(event))`` for an audio chunk, byte for byte, without building the
    dict or running json.dumps over the base64 text: the JSON around the audio is the same for
    every chunk of a content, so it is encoded once per (prompt, content) and the base64 goes
    straight between its two halves (base64 needs no JSON escaping)."""
    key = (event.prompt_name, event.content_name)
    prefix = _AUDIO_PREFIXES.get(key)
    if prefix is None:
        prefix = (
            b'{"event":{"audioInput":{"promptName":'
            + json.dumps(event.prompt_name).encode()
            + b',"contentName":'
            + json.dumps(event.content_name).encode()
            + b',"content":"'
        )
        if len(_AUDIO_PREFIXES) >= _MAX_AUDIO_PREFIXES:
            _AUDIO_PREFIXES.clear()  # one entry per live audio content; a cheap bound
        _AUDIO_PREFIXES[key] = prefix
    return prefix + base64.b64encode(event.content) + _AUDIO_SUFFIX


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
                choice = tool_choice_json(event.tool_choice)
                if choice is not None:
                    prompt["toolConfiguration"]["toolChoice"] = choice
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
                    "content": b64(event.content),
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


def event_body(obj: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), dict):
        raise SonicProtocolError('an event must be a JSON object {"event": {"<name>": {...}}}')
    inner = obj["event"]
    if len(inner) != 1:
        raise SonicProtocolError("an event object must hold exactly one event")
    ((name, body),) = inner.items()
    if not isinstance(body, dict):
        raise SonicProtocolError(f"{name} must be a JSON object")
    return name, body


def req_str(body: dict[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise SonicProtocolError(f"{what}.{key} is required and must be a non-empty string")
    return value


def opt_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    return value if isinstance(value, str) else ""


def role_of(body: dict[str, Any], what: str) -> Role:
    role = body.get("role")
    if role not in ROLES:
        raise SonicProtocolError(f"{what}.role must be one of {sorted(ROLES)}")
    return role  # type: ignore[no-any-return]


def _ids(body: dict[str, Any]) -> Ids:
    return Ids(
        opt_str(body, "sessionId"), opt_str(body, "promptName"), opt_str(body, "completionId")
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


def _output_role(body: dict[str, Any], name: str) -> Role:
    """The role of an output event; a missing or unknown one is read as ASSISTANT (all output
    is the model's; the Nova 2 schema omits a textOutput's role in places, and the conversation
    takes a text's role from its contentStart anyway)."""
    role = body.get("role")
    if role in ROLES:
        return role  # type: ignore[no-any-return]
    _report("missing" if role is None else "unknown value", f"{name}.role", str(role))
    return "ASSISTANT"


def _content_type(body: dict[str, Any], name: str) -> ContentType | None:
    ctype = body.get("type")
    if ctype in CONTENT_TYPES:
        return ctype  # type: ignore[no-any-return]
    _report("missing" if ctype is None else "unknown value", f"{name}.type", str(ctype))
    return None


def _stop_reason(body: dict[str, Any], name: str) -> StopReason:
    reason = body.get("stopReason")
    if reason in STOP_REASONS:
        return reason  # type: ignore[no-any-return]
    _report("missing" if reason is None else "unknown value", f"{name}.stopReason", str(reason))
    return "END_TURN"


def tool_arguments(content: Any) -> str:
    """A toolUse's arguments as JSON text: double-encoded ones (a JSON string whose value is
    the JSON text, seen from Nova 2) are peeled, an object sent as such is serialized, and
    anything else is passed on as it came (the tool layer reports what it cannot parse)."""
    if isinstance(content, dict | list):
        return json.dumps(content)
    if not isinstance(content, str) or not content:
        return "{}"
    text = content
    for _ in range(MAX_JSON_LAYERS):
        try:
            value = json.loads(text)
            if not isinstance(value, str):
                break
            json.loads(value)  # peel only a string that is itself JSON, not a plain string
        except (ValueError, RecursionError):
            break
        text = value
    return text


def decode_output(obj: Any) -> OutputEvent | None:
    """Parse one Nova Sonic output event; None for one voicegate does not use or cannot place
    (an unknown kind, or a content of an unknown type). See the module docstring."""
    name, body = event_body(obj)
    known = OUTPUT_FIELDS.get(name)
    if known is None:
        _report("unknown event", name)
        return None
    if not known.issuperset(body):
        for key in sorted(body.keys() - known):
            _report("unknown field", name, key)
    ids = _ids(body)
    match name:
        case "completionStart":
            return CompletionStart(ids)
        case "contentStart":
            ctype = _content_type(body, name)
            if ctype is None:
                return None
            rate = OUTPUT_SAMPLE_RATE
            audio = body.get("audioOutputConfiguration")
            if isinstance(audio, dict) and isinstance(audio.get("sampleRateHertz"), int):
                rate = audio["sampleRateHertz"]
            return OutputContentStart(
                opt_str(body, "contentId"), ctype, _output_role(body, name), _stage(body), rate, ids
            )
        case "textOutput":
            return TextOutput(
                opt_str(body, "contentId"), _output_role(body, name), opt_str(body, "content"), ids
            )
        case "audioOutput":
            return AudioOutput(opt_str(body, "contentId"), unb64(body.get("content"), name), ids)
        case "toolUse":
            return ToolUse(
                opt_str(body, "contentId"),
                req_str(body, "toolName", name),
                req_str(body, "toolUseId", name),
                tool_arguments(body.get("content")),
                ids,
            )
        case "contentEnd":
            ctype = _content_type(body, name)
            if ctype is None:
                return None
            return OutputContentEnd(
                opt_str(body, "contentId"), ctype, _stop_reason(body, name), ids
            )
        case "completionEnd":
            return CompletionEnd(opt_str(body, "stopReason") or "END_TURN", ids)
        case _:  # usageEvent

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


def dumps(obj: dict[str, Any]) -> bytes:
    """Compact JSON bytes, the form sent on the wire."""
    return json.dumps(obj, separators=(",", ":")).encode()
