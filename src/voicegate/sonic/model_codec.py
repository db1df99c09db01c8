"""The model's side of Nova Sonic's JSON: input events parsed as strictly as Bedrock parses
them, output events encoded as Bedrock sends them.

The stand-in is built on this (so a client mistake fails there the way it fails on Bedrock), and
the codec tests use it for round trips. The client side (``codec``) is the mirror image.
"""

from __future__ import annotations

import json
from typing import Any

from voicegate.sonic.codec import (
    SonicProtocolError,
    b64,
    event_body,
    opt_str,
    req_str,
    role_of,
    unb64,
)
from voicegate.sonic.events import (
    ENDPOINTING,
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
    SessionEnd,
    SessionStart,
    TextContentStart,
    TextInput,
    TextOutput,
    ToolResult,
    ToolResultContentStart,
    ToolSpec,
    ToolUse,
    UsageEvent,
)
from voicegate.sonic.models import DEFAULT_VOICE, OUTPUT_RATES

__all__ = ["decode_input", "encode_output"]


def _num(body: dict[str, Any], key: str, what: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SonicProtocolError(f"{what}.{key} must be a number")
    return float(value)


def decode_input(obj: Any) -> InputEvent:
    """Parse and validate one Nova Sonic input event (used by the stand-in)."""
    name, body = event_body(obj)
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
            prompt_name = req_str(body, "promptName", name)
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
            voice = audio.get("voiceId", DEFAULT_VOICE)
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
                            req_str(spec, "name", "toolSpec"),
                            opt_str(spec, "description"),
                            schema if isinstance(schema, dict) else {},
                        )
                    )
            return PromptStart(prompt_name, voice, int(rate), tuple(tools))
        case "contentStart":
            prompt_name = req_str(body, "promptName", name)
            content_name = req_str(body, "contentName", name)
            ctype = body.get("type")
            if ctype == "TEXT":
                interactive = body.get("interactive", False)
                if not isinstance(interactive, bool):
                    raise SonicProtocolError("contentStart.interactive must be a boolean")
                return TextContentStart(prompt_name, content_name, role_of(body, name), interactive)
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
                    prompt_name, content_name, int(cfg["sampleRateHertz"]), role_of(body, name)
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
                    req_str(cfg, "toolUseId", "toolResultInputConfiguration"),
                )
            raise SonicProtocolError("contentStart.type must be TEXT, AUDIO or TOOL")
        case "textInput":
            content = body.get("content")
            if not isinstance(content, str):
                raise SonicProtocolError("textInput.content must be a string")
            return TextInput(
                req_str(body, "promptName", name), req_str(body, "contentName", name), content
            )
        case "audioInput":
            return AudioInput(
                req_str(body, "promptName", name),
                req_str(body, "contentName", name),
                unb64(body.get("content"), name),
            )
        case "toolResult":
            content = body.get("content")
            if not isinstance(content, str):
                raise SonicProtocolError("toolResult.content must be a string")
            return ToolResult(
                req_str(body, "promptName", name), req_str(body, "contentName", name), content
            )
        case "contentEnd":
            return ContentEnd(req_str(body, "promptName", name), req_str(body, "contentName", name))
        case "promptEnd":
            return PromptEnd(req_str(body, "promptName", name))
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
            body.update(contentId=event.content_id, content=b64(event.content))
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
