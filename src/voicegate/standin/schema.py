"""The stand-in's own reading of Nova Sonic input events: every field checked against AWS's docs.

Bedrock validates each event's JSON against a schema before the model sees it: an unknown or
misspelled field, a missing configuration block, a wrong type or a value outside its documented
set is a ValidationException, worded like Bedrock's ("Malformed input request: #/...: extraneous
key [x] is not permitted, please reformat your input and try again."). This module does the
same, independently of the client's codec in ``voicegate.sonic`` (which must never be what the
stand-in checks the client against), and returns the event as a ``sonic`` dataclass for the
brain. The rules and their sources are listed in docs/standin.md.

The session grammar (order, history, tool results) is checked afterwards, on the dataclasses, by
``voicegate.backends.grammar``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    ContentEnd,
    InputEvent,
    PromptEnd,
    PromptStart,
    SessionEnd,
    SessionStart,
    TextContentStart,
    TextInput,
    ToolResult,
    ToolResultContentStart,
    ToolSpec,
)
from voicegate.sonic.models import OUTPUT_RATES, Model, model_of

TOOL_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""Bedrock's ToolSpecification name constraint (pattern and 1-64 characters)."""


class SchemaError(ValueError):
    """An event does not match the documented schema; ``str()`` is Bedrock-shaped."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(
            f"Malformed input request: {path}: {problem}, please reformat your input and try again."
        )


# --------------------------------------------------------------------------------------------
# A small declarative schema: just enough JSON Schema for Nova Sonic's events
# --------------------------------------------------------------------------------------------

Check = Callable[[Any, str], None]


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "JSONArray"
    if isinstance(value, dict):
        return "JSONObject"
    return "Null"


def string(min_length: int = 1, pattern: re.Pattern[str] | None = None) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise SchemaError(path, f"expected type: String, found: {_type_name(value)}")
        if len(value) < min_length:
            raise SchemaError(path, f"expected minLength: {min_length}, actual: {len(value)}")
        if pattern is not None and not pattern.match(value):
            raise SchemaError(path, f"string [{value}] does not match pattern {pattern.pattern}")

    return check


def number(minimum: float, maximum: float | None = None, integer: bool = False) -> Check:
    kind = "Integer" if integer else "Number"

    def check(value: Any, path: str) -> None:
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            raise SchemaError(path, f"expected type: {kind}, found: {_type_name(value)}")
        if value < minimum:
            raise SchemaError(path, f"{value} is not greater or equal to {minimum:g}")
        if maximum is not None and value > maximum:
            raise SchemaError(path, f"{value} is not less or equal to {maximum:g}")

    return check


def boolean() -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise SchemaError(path, f"expected type: Boolean, found: {_type_name(value)}")

    return check


def one_of(*values: Any) -> Check:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or value not in values:
            raise SchemaError(path, f"{json.dumps(value)} is not a valid enum value")

    return check


@dataclass(frozen=True, slots=True)
class Obj:
    """A JSON object with exactly these keys (required ones must be present)."""

    required: Mapping[str, Check | Obj | Arr] = field(default_factory=dict)
    optional: Mapping[str, Check | Obj | Arr] = field(default_factory=dict)

    def __call__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected type: JSONObject, found: {_type_name(value)}")
        for key in value:
            if key not in self.required and key not in self.optional:
                raise SchemaError(path, f"extraneous key [{key}] is not permitted")
        for key in self.required:
            if key not in value:
                raise SchemaError(path, f"required key [{key}] not found")
        for key, item in value.items():
            (self.required.get(key) or self.optional[key])(item, f"{path}/{key}")


@dataclass(frozen=True, slots=True)
class Arr:
    item: Check | Obj
    min_items: int = 0

    def __call__(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(path, f"expected type: JSONArray, found: {_type_name(value)}")
        if len(value) < self.min_items:
            raise SchemaError(path, f"expected minimum item count: {self.min_items}")
        for i, item in enumerate(value):
            self.item(item, f"{path}/{i}")


# --------------------------------------------------------------------------------------------
# Nova Sonic's input events (Nova 2 user guide: "Handling input events with the bidirectional
# API"; v1 user guide: "Handling input events"; tool use: "Tool configuration")
# --------------------------------------------------------------------------------------------

TEXT_PLAIN: Final = Obj({"mediaType": one_of("text/plain")})
NAMES: Final = {"promptName": string(), "contentName": string()}


def session_start(model: Model) -> Obj:
    inference = Obj(
        {},
        {
            "maxTokens": number(1, integer=True),
            "topP": number(0, 1),
            "temperature": number(0, 1),
        },
    )
    optional: dict[str, Check | Obj | Arr] = {}
    if model.nova2:
        optional["turnDetectionConfiguration"] = Obj(
            {"endpointingSensitivity": one_of("HIGH", "MEDIUM", "LOW")}
        )
    return Obj({"inferenceConfiguration": inference}, optional)


def prompt_start(model: Model) -> Obj:
    audio_out = Obj(
        {
            "mediaType": one_of("audio/lpcm"),
            "sampleRateHertz": one_of(*OUTPUT_RATES),
            "sampleSizeBits": one_of(16),
            "channelCount": one_of(1),
            "voiceId": one_of(*sorted(model.voices)),
            "encoding": one_of("base64"),
            "audioType": one_of("SPEECH"),
        }
    )
    tool = Obj(
        {
            "toolSpec": Obj(
                {
                    "name": string(pattern=TOOL_NAME),
                    "description": string(),
                    "inputSchema": Obj({"json": string()}),
                }
            )
        }
    )
    choice = Obj({}, {"auto": Obj(), "any": Obj(), "tool": Obj({"name": string()})})
    return Obj(
        {
            "promptName": string(),
            "textOutputConfiguration": TEXT_PLAIN,
            "audioOutputConfiguration": audio_out,
        },
        {
            "toolUseOutputConfiguration": Obj({"mediaType": one_of("application/json")}),
            "toolConfiguration": Obj({"tools": Arr(tool, 1)}, {"toolChoice": choice}),
        },
    )


def content_start(model: Model, ctype: Any) -> Obj:
    common = {**NAMES, "type": one_of("TEXT", "AUDIO", "TOOL"), "role": one_of(*model.roles)}
    common["interactive"] = boolean()
    if ctype == "AUDIO":
        audio_in = Obj(
            {
                "mediaType": one_of("audio/lpcm"),
                "sampleRateHertz": one_of(*model.input_rates),
                "sampleSizeBits": one_of(16),
                "channelCount": one_of(1),
                "audioType": one_of("SPEECH"),
                "encoding": one_of("base64"),
            }
        )
        return Obj({**common, "audioInputConfiguration": audio_in})
    if ctype == "TOOL":
        result = Obj(
            {"toolUseId": string(), "type": one_of("TEXT"), "textInputConfiguration": TEXT_PLAIN}
        )
        return Obj({**common, "toolResultInputConfiguration": result})
    return Obj({**common, "textInputConfiguration": TEXT_PLAIN})


CONTENT: Final = Obj({**NAMES, "content": string(min_length=0)})
AUDIO: Final = Obj({**NAMES, "content": string()})
CONTENT_END: Final = Obj(NAMES)
PROMPT_END: Final = Obj({"promptName": string()})
SESSION_END: Final = Obj()
EVENTS: Final = (
    "sessionStart",
    "promptStart",
    "contentStart",
    "textInput",
    "audioInput",
    "toolResult",
    "contentEnd",
    "promptEnd",
    "sessionEnd",
)


def decode(obj: Any, model_id: str) -> tuple[str, InputEvent]:
    """Check one input event (the parsed JSON) and return its name and dataclass."""
    model = model_of(model_id)
    if not isinstance(obj, dict):
        raise SchemaError("#", f"expected type: JSONObject, found: {_type_name(obj)}")
    Obj({"event": Obj({}, dict.fromkeys(EVENTS, _any))})(obj, "#")
    events = obj["event"]
    if len(events) != 1:
        raise SchemaError("#/event", f"expected exactly one event, found: {len(events)}")
    ((name, body),) = events.items()
    path = f"#/event/{name}"
    match name:
        case "sessionStart":
            session_start(model)(body, path)
            inf = body["inferenceConfiguration"]
            turn = body.get("turnDetectionConfiguration")
            return name, SessionStart(
                inf.get("maxTokens", 1024),
                inf.get("topP", 0.9),
                inf.get("temperature", 0.7),
                turn["endpointingSensitivity"] if turn else None,
            )
        case "promptStart":
            prompt_start(model)(body, path)
            return name, _prompt(body, path)
        case "contentStart":
            if not isinstance(body, dict):
                raise SchemaError(path, f"expected type: JSONObject, found: {_type_name(body)}")
            if "type" not in body:
                raise SchemaError(path, "required key [type] not found")
            one_of("TEXT", "AUDIO", "TOOL")(body["type"], f"{path}/type")
            content_start(model, body["type"])(body, path)
            return name, _content_start(body, path)
        case "textInput":
            CONTENT(body, path)
            return name, TextInput(body["promptName"], body["contentName"], body["content"])
        case "audioInput":
            AUDIO(body, path)
            try:
                pcm = base64.b64decode(body["content"], validate=True)
            except (binascii.Error, ValueError):
                raise SchemaError(f"{path}/content", "is not valid base64") from None
            return name, AudioInput(body["promptName"], body["contentName"], pcm)
        case "toolResult":
            CONTENT(body, path)
            return name, ToolResult(body["promptName"], body["contentName"], body["content"])
        case "contentEnd":
            CONTENT_END(body, path)
            return name, ContentEnd(body["promptName"], body["contentName"])
        case "promptEnd":
            PROMPT_END(body, path)
            return name, PromptEnd(body["promptName"])
    SESSION_END(body, path)
    return name, SessionEnd()


def _any(value: Any, path: str) -> None:
    """Event bodies are checked per event, after the envelope."""


def _prompt(body: dict[str, Any], path: str) -> PromptStart:
    audio = body["audioOutputConfiguration"]
    tools: list[ToolSpec] = []
    config = body.get("toolConfiguration")
    if config is not None:
        if "toolUseOutputConfiguration" not in body:
            raise SchemaError(path, "required key [toolUseOutputConfiguration] not found")
        for i, entry in enumerate(config["tools"]):
            spec = entry["toolSpec"]
            where = f"{path}/toolConfiguration/tools/{i}/toolSpec"
            try:
                schema = json.loads(spec["inputSchema"]["json"])
            except (ValueError, RecursionError):
                raise SchemaError(f"{where}/inputSchema/json", "is not valid JSON") from None
            if not isinstance(schema, dict):
                raise SchemaError(f"{where}/inputSchema/json", "must hold a JSON object")
            if any(t.name == spec["name"] for t in tools):
                raise SchemaError(f"{where}/name", f"duplicate tool name [{spec['name']}]")
            tools.append(ToolSpec(spec["name"], spec["description"], schema))
        choice = config.get("toolChoice", {"auto": {}})
        where = f"{path}/toolConfiguration/toolChoice"
        if len(choice) != 1:
            raise SchemaError(where, "expected exactly one of [auto, any, tool]")
        chosen = choice.get("tool")
        if chosen is not None and all(t.name != chosen["name"] for t in tools):
            raise SchemaError(f"{where}/tool/name", f"[{chosen['name']}] is not a configured tool")
    choice = ""
    if config:
        picked = config.get("toolChoice", {})
        choice = "tool:" + picked["tool"]["name"] if "tool" in picked else next(iter(picked), "")
    return PromptStart(
        body["promptName"], audio["voiceId"], audio["sampleRateHertz"], tuple(tools), choice
    )


def _content_start(body: dict[str, Any], path: str) -> InputEvent:
    prompt, name, role = body["promptName"], body["contentName"], body["role"]
    interactive = body["interactive"]
    match body["type"]:
        case "AUDIO":
            if role != "USER":
                raise SchemaError(f"{path}/role", f"an AUDIO content must be USER, not {role}")
            if not interactive:
                raise SchemaError(f"{path}/interactive", "an AUDIO content must be interactive")
            rate = body["audioInputConfiguration"]["sampleRateHertz"]
            return AudioContentStart(prompt, name, rate, "USER")
        case "TOOL":
            if role != "TOOL":
                raise SchemaError(f"{path}/role", f"a TOOL content must be TOOL, not {role}")
            if interactive:
                raise SchemaError(f"{path}/interactive", "a TOOL content is not interactive")
            use = body["toolResultInputConfiguration"]["toolUseId"]
            return ToolResultContentStart(prompt, name, use)
    if role == "TOOL":
        raise SchemaError(f"{path}/role", "role TOOL is only for TOOL contents")
    return TextContentStart(prompt, name, role, interactive)


__all__ = ["SchemaError", "decode"]
