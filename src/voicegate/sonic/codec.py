"""Nova Sonic events to and from their JSON form (``{"event": {"<name>": {...}}}``).

``encode_input``/``decode_output`` are the client side (the Bedrock backend); ``decode_input``/
``encode_output`` are the model side (the stand-in), which validates strictly, the way Bedrock
does. Audio is base64 only here, at the JSON edge; the dataclasses carry raw PCM bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

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
    TextContentStart,
    TextInput,
    TextOutput,
    ToolResult,
    ToolResultContentStart,
    ToolUse,
    UsageEvent,
)


class SonicProtocolError(ValueError):
    """A JSON event does not follow the Nova Sonic schema."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str) -> bytes:
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


def decode_output(obj: Any) -> OutputEvent | None:
    """Parse one Nova Sonic output event; None for event kinds voicegate does not use."""
    name, body = event_body(obj)
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
                opt_str(body, "contentId"), ctype, role_of(body, name), _stage(body), rate, ids
            )
        case "textOutput":
            return TextOutput(
                opt_str(body, "contentId"), role_of(body, name), opt_str(body, "content"), ids
            )
        case "audioOutput":
            return AudioOutput(opt_str(body, "contentId"), unb64(body.get("content"), name), ids)
        case "toolUse":
            return ToolUse(
                opt_str(body, "contentId"),
                req_str(body, "toolName", name),
                req_str(body, "toolUseId", name),
                opt_str(body, "content") or "{}",
                ids,
            )
        case "contentEnd":
            ctype = body.get("type")
            reason = body.get("stopReason")
            if ctype not in ("TEXT", "AUDIO", "TOOL") or reason not in STOP_REASONS:
                raise SonicProtocolError("contentEnd needs a valid type and stopReason")
            return OutputContentEnd(opt_str(body, "contentId"), ctype, reason, ids)
        case "completionEnd":
            return CompletionEnd(opt_str(body, "stopReason") or "END_TURN", ids)
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
