"""The Nova Sonic event codecs: round trips, the wire shapes Bedrock expects, validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicegate import sonic
from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    AudioOutput,
    CompletionEnd,
    CompletionStart,
    ContentEnd,
    Ids,
    OutputContentEnd,
    OutputContentStart,
    PromptEnd,
    PromptStart,
    SessionEnd,
    SessionStart,
    SonicProtocolError,
    TextContentStart,
    TextInput,
    TextOutput,
    ToolResult,
    ToolResultContentStart,
    ToolSpec,
    ToolUse,
    UsageEvent,
)

TOOL = ToolSpec("get_current_time", "time", {"type": "object", "properties": {}})
INPUTS: list[sonic.InputEvent] = [
    SessionStart(1024, 0.9, 0.7, "HIGH"),
    SessionStart(),
    PromptStart("p", "tiffany", 24000, (TOOL,)),
    PromptStart("p"),
    TextContentStart("p", "c", "SYSTEM", False),
    AudioContentStart("p", "a", 16000),
    ToolResultContentStart("p", "t", "use-1"),
    TextInput("p", "c", "hello"),
    AudioInput("p", "a", b"\x01\x00\xff\x7f"),
    ToolResult("p", "t", '{"ok": true}'),
    ContentEnd("p", "c"),
    PromptEnd("p"),
    SessionEnd(),
]
IDS = Ids("s", "p", "c")
OUTPUTS: list[sonic.OutputEvent] = [
    CompletionStart(IDS),
    OutputContentStart("x", "TEXT", "USER", "FINAL", ids=IDS),
    OutputContentStart("x", "AUDIO", "ASSISTANT", None, 24000, IDS),
    OutputContentStart("x", "TOOL", "TOOL", None, ids=IDS),
    TextOutput("x", "ASSISTANT", "hi", IDS),
    AudioOutput("x", b"\x00\x01" * 10, IDS),
    ToolUse("x", "get_current_time", "u1", "{}", IDS),
    OutputContentEnd("x", "AUDIO", "INTERRUPTED", IDS),
    CompletionEnd("END_TURN", IDS),
    UsageEvent(1, 2, 3, {"delta": {}}, IDS),
]


@pytest.mark.parametrize("event", INPUTS, ids=lambda e: type(e).__name__)
def test_input_round_trip(event: sonic.InputEvent) -> None:
    wire = json.loads(sonic.dumps(sonic.encode_input(event)))
    assert sonic.decode_input(wire) == event


@pytest.mark.parametrize("event", OUTPUTS, ids=lambda e: type(e).__name__)
def test_output_round_trip(event: sonic.OutputEvent) -> None:
    wire = json.loads(sonic.dumps(sonic.encode_output(event)))
    assert sonic.decode_output(wire) == event


def test_wire_shapes_match_nova_sonic() -> None:
    prompt = sonic.encode_input(PromptStart("p", "matthew", 24000, (TOOL,)))["event"]["promptStart"]
    assert prompt["audioOutputConfiguration"]["sampleRateHertz"] == 24000
    schema = prompt["toolConfiguration"]["tools"][0]["toolSpec"]["inputSchema"]["json"]
    assert isinstance(schema, str) and json.loads(schema)["type"] == "object"
    audio = sonic.encode_input(AudioInput("p", "a", b"\x00\x01"))["event"]["audioInput"]
    assert audio["content"] == "AAE="
    start = sonic.encode_input(AudioContentStart("p", "a"))["event"]["contentStart"]
    assert start["audioInputConfiguration"]["encoding"] == "base64"
    assert start["interactive"] is True and start["role"] == "USER"
    text = sonic.encode_output(OutputContentStart("x", "TEXT", "ASSISTANT", "SPECULATIVE"))
    extra = text["event"]["contentStart"]["additionalModelFields"]
    assert json.loads(extra) == {"generationStage": "SPECULATIVE"}


BAD_INPUTS: list[Any] = [
    None,
    [],
    {"event": {}},
    {"event": {"a": {}, "b": {}}},
    {"event": {"nope": {}}},
    {"event": {"promptStart": {"promptName": "p"}}},
    {
        "event": {
            "promptStart": {
                "promptName": "p",
                "audioOutputConfiguration": {"sampleRateHertz": 44100},
            }
        }
    },
    {"event": {"sessionStart": {"inferenceConfiguration": {"topP": 2}}}},
    {"event": {"sessionStart": {"turnDetectionConfiguration": {"endpointingSensitivity": "X"}}}},
    {"event": {"contentStart": {"promptName": "p", "contentName": "c", "type": "VIDEO"}}},
    {
        "event": {
            "contentStart": {"promptName": "p", "contentName": "c", "type": "TEXT", "role": "BOT"}
        }
    },
    {"event": {"audioInput": {"promptName": "p", "contentName": "c", "content": "!!"}}},
    {"event": {"textInput": {"promptName": "p", "contentName": "c", "content": 5}}},
    {"event": {"contentEnd": {"promptName": "p"}}},
]


@pytest.mark.parametrize("obj", BAD_INPUTS)
def test_invalid_inputs_are_refused(obj: Any) -> None:
    with pytest.raises(SonicProtocolError):
        sonic.decode_input(obj)


@given(st.binary(max_size=4096).filter(lambda b: len(b) % 2 == 0), st.text(max_size=40))
def test_audio_and_text_round_trip_any_payload(pcm: bytes, text: str) -> None:
    assert sonic.decode_input(sonic.encode_input(AudioInput("p", "a", pcm))) == AudioInput(
        "p", "a", pcm
    )
    assert sonic.decode_input(sonic.encode_input(TextInput("p", "c", text))) == TextInput(
        "p", "c", text
    )


def test_interruption_marker() -> None:
    assert sonic.is_interruption_marker('{ "interrupted" : true }')
    assert sonic.is_interruption_marker('{"interrupted":true}')
    assert not sonic.is_interruption_marker("interrupted")


def test_unknown_output_events_are_skipped() -> None:
    assert sonic.decode_output({"event": {"somethingNew": {}}}) is None
