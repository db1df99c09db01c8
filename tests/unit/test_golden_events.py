"""Golden input events taken from AWS's documentation (tests/golden/*.json), checked two ways.

1. voicegate's encoder (``voicegate.sonic``) produces, for every event it sends, the documented
   structure: the same keys at every level, the same JSON types, and values inside the
   documented enums.
2. The stand-in's decoder (``voicegate.standin.schema``, its own code) accepts each documented
   event and refuses it once a required key is missing, an unknown key is added or an enum
   value leaves its documented set. The stand-in is checked against the documentation, never
   against the client's encoder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from voicegate import sonic as sonic
from voicegate.standin.schema import SchemaError, decode

GOLDEN = Path(__file__).parents[1] / "golden"
NOVA2 = "amazon.nova-2-sonic-v1:0"
NOVA1 = "amazon.nova-sonic-v1:0"
TOOL = sonic.ToolSpec(
    "get_current_time",
    "Get the current time in a timezone.",
    {"type": "object", "properties": {"timezone": {"type": "string"}}},
)
P = "7f9e2f4c-1b5a-4c8e-9d1f-2a6b3c4d5e6f"

ENCODED: dict[str, sonic.InputEvent] = {
    "session_start": sonic.SessionStart(1024, 0.9, 0.7, "MEDIUM"),
    "prompt_start": sonic.PromptStart(P, "matthew", 24000, (TOOL,)),
    "content_start_text": sonic.TextContentStart(P, "sys", "SYSTEM", interactive=False),
    "content_start_audio": sonic.AudioContentStart(P, "mic", 16000),
    "content_start_tool": sonic.ToolResultContentStart(P, "tool", "use-1"),
    "text_input": sonic.TextInput(P, "sys", "You are terse."),
    "audio_input": sonic.AudioInput(P, "mic", bytes(1024)),
    "tool_result": sonic.ToolResult(P, "tool", '{"time": "12:34"}'),
    "content_end": sonic.ContentEnd(P, "mic"),
    "prompt_end": sonic.PromptEnd(P),
    "session_end": sonic.SessionEnd(),
}
"""What voicegate sends for each golden fixture (the conversation layer's events)."""

DECODED: dict[str, type] = {
    "session_start": sonic.SessionStart,
    "prompt_start": sonic.PromptStart,
    "content_start_text": sonic.TextContentStart,
    "content_start_audio": sonic.AudioContentStart,
    "content_start_tool": sonic.ToolResultContentStart,
    "text_input": sonic.TextInput,
    "audio_input": sonic.AudioInput,
    "tool_result": sonic.ToolResult,
    "content_end": sonic.ContentEnd,
    "prompt_end": sonic.PromptEnd,
    "session_end": sonic.SessionEnd,
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    return data


NAMES = sorted(p.stem for p in GOLDEN.glob("*.json"))


def test_every_event_voicegate_sends_has_a_fixture() -> None:
    assert NAMES == sorted(ENCODED) == sorted(DECODED)
    sent = {type(e) for e in ENCODED.values()}
    assert sent == set(sonic.InputEvent.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", NAMES)
def test_fixture_records_its_documentation_source(name: str) -> None:
    fixture = load(name)
    assert fixture["source"], name
    for source in fixture["source"]:
        assert source["url"].startswith("https://docs.aws.amazon.com/nova/latest/")
        assert "Amazon Nova" in source["title"]
    assert fixture["section"]


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return type(value).__name__


def _same_shape(actual: Any, golden: Any, path: str, enums: dict[str, list[Any]]) -> None:
    if isinstance(golden, dict):
        assert isinstance(actual, dict), path
        assert set(actual) == set(golden), (path, sorted(actual), sorted(golden))
        for key in golden:
            _same_shape(actual[key], golden[key], f"{path}/{key}", enums)
    elif isinstance(golden, list):
        assert isinstance(actual, list) and actual, path
        for item in actual:
            _same_shape(item, golden[0], f"{path}/0", enums)
    else:
        kinds = {_json_type(actual), _json_type(golden)}
        assert len(kinds) == 1 or kinds == {"integer", "number"}, (path, actual, golden)
    if path in enums:
        assert actual in enums[path], (path, actual, enums[path])


def _drop(event: dict[str, Any], path: str) -> None:
    *parents, last = path.strip("/").split("/")
    node = event
    for part in parents:
        node = node[part]
    del node[last]


@pytest.mark.parametrize("name", NAMES)
def test_voicegate_encoder_matches_the_documented_structure(name: str) -> None:
    fixture = load(name)
    encoded = sonic.encode_input(ENCODED[name])
    _same_shape(encoded, fixture["event"], "", fixture["enums"])
    # The stand-in's reading of the documentation accepts what voicegate sends.
    decode(json.loads(sonic.dumps(encoded)), NOVA2)


def test_without_optional_blocks_the_encoder_omits_them_entirely() -> None:
    for name, event in (
        ("session_start", sonic.SessionStart()),
        ("prompt_start", sonic.PromptStart(P)),
    ):
        fixture = load(name)
        golden = copy.deepcopy(fixture["event"])
        for path in fixture["optional"]:
            if path.count("/") == 3:  # whole blocks, not the inference fields voicegate sends
                _drop(golden, path)
        _same_shape(sonic.encode_input(event), golden, "", fixture["enums"])


def test_tool_input_schema_travels_as_a_json_string() -> None:
    spec = sonic.encode_input(ENCODED["prompt_start"])["event"]["promptStart"]
    schema = spec["toolConfiguration"]["tools"][0]["toolSpec"]["inputSchema"]["json"]
    assert isinstance(schema, str) and json.loads(schema) == TOOL.input_schema


# -- the stand-in's decoder against the same fixtures ---------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_standin_decoder_accepts_the_documented_event(name: str) -> None:
    event_name, event = decode(load(name)["event"], NOVA2)
    assert isinstance(event, DECODED[name])
    assert event_name == next(iter(load(name)["event"]["event"]))


def _objects(node: Any, path: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    found = [path]
    for key, value in node.items():
        found += _objects(value, f"{path}/{key}")
        if isinstance(value, list):
            for i, item in enumerate(value):
                found += _objects(item, f"{path}/{key}/{i}")
    return found


def _keys(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append(f"{path}/{key}")
            found += _keys(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _keys(item, f"{path}/{i}")
    return found


def _node(event: dict[str, Any], path: str) -> Any:
    node: Any = event
    for part in [p for p in path.split("/") if p]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _mutations(name: str) -> list[tuple[str, dict[str, Any], str]]:
    fixture = load(name)
    golden = fixture["event"]
    cases: list[tuple[str, dict[str, Any], str]] = []
    for path in _objects(golden):
        bad = copy.deepcopy(golden)
        _node(bad, path)["unexpectedField"] = 1
        cases.append((f"extra{path or '/'}", bad, "extraneous key [unexpectedField]"))
    for path in _keys(golden):
        if path in ("/event", f"/event/{next(iter(golden['event']))}"):
            continue
        if any(path == o or path.startswith(o + "/") for o in fixture["optional"]):
            continue
        bad = copy.deepcopy(golden)
        _drop(bad, path)
        cases.append((f"missing{path}", bad, f"required key [{path.rsplit('/', 1)[1]}]"))
    for path, values in fixture["enums"].items():
        bad = copy.deepcopy(golden)
        *parents, last = path.strip("/").split("/")
        if all(isinstance(v, bool) for v in values):
            # A documented flag (AUDIO is interactive, TOOL is not): the other value is refused.
            _node(bad, "/".join(parents))[last] = not values[0]
            cases.append((f"flag{path}", bad, f"{path.replace('/event', '#/event')}:"))
            continue
        _node(bad, "/".join(parents))[last] = "NOT_DOCUMENTED"
        cases.append((f"enum{path}", bad, "is not a valid enum value"))
    return cases


MUTATIONS = [(name, *case) for name in NAMES for case in _mutations(name)]


@pytest.mark.parametrize(
    ("name", "case", "bad", "fragment"), MUTATIONS, ids=[f"{m[0]}:{m[1]}" for m in MUTATIONS]
)
def test_standin_decoder_refuses_each_departure(
    name: str, case: str, bad: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SchemaError) as info:
        decode(bad, NOVA2)
    message = str(info.value)
    assert fragment in message, message
    assert message.startswith("Malformed input request: #")
    assert message.endswith("please reformat your input and try again.")


def test_mutations_cover_every_fixture() -> None:
    assert {m[0] for m in MUTATIONS} == set(NAMES)
    assert len(MUTATIONS) > 100


def test_nova_sonic_v1_has_its_own_vocabulary() -> None:
    start = load("session_start")["event"]
    with pytest.raises(SchemaError, match=r"extraneous key \[turnDetectionConfiguration\]"):
        decode(start, NOVA1)
    prompt = copy.deepcopy(load("prompt_start")["event"])
    audio = prompt["event"]["promptStart"]["audioOutputConfiguration"]
    audio["voiceId"] = "greta"  # v1's German voice, replaced by tina in Nova 2
    decode(prompt, NOVA1)
    with pytest.raises(SchemaError, match="greta"):
        decode(prompt, NOVA2)
    audio["voiceId"] = "tina"
    decode(prompt, NOVA2)
    with pytest.raises(SchemaError, match="tina"):
        decode(prompt, NOVA1)
