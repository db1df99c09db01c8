"""The Nova Sonic event codecs: round trips, the wire shapes Bedrock expects, validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

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
    codec,
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


# -- the client side is tolerant of a growing output schema -----------------------------------


@pytest.fixture
def fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own once-per-process log memory."""
    monkeypatch.setattr(codec, "_reported", set())


def _tolerated(logs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (e["problem"], e["where"], e["detail"])
        for e in logs
        if e["event"] == "sonic_output_tolerated"
    ]


@pytest.mark.parametrize("event", OUTPUTS, ids=lambda e: type(e).__name__)
def test_unknown_output_fields_are_ignored(event: sonic.OutputEvent, fresh_reports: None) -> None:
    wire = json.loads(sonic.dumps(sonic.encode_output(event)))
    ((name, body),) = wire["event"].items()
    body["someNova3Field"] = {"nested": [1, 2]}
    body["reasoning"] = "x"
    with capture_logs() as logs:
        assert sonic.decode_output(wire) == event
    assert sorted(_tolerated(logs)) == [
        ("unknown field", name, "reasoning"),
        ("unknown field", name, "someNova3Field"),
    ]


def test_a_surprise_is_logged_once_per_kind_not_per_event(fresh_reports: None) -> None:
    audio = json.loads(sonic.dumps(sonic.encode_output(AudioOutput("x", b"\x00\x01", IDS))))
    audio["event"]["audioOutput"]["newField"] = 1
    with capture_logs() as logs:
        for _ in range(50):  # a second of audio events
            assert isinstance(sonic.decode_output(audio), AudioOutput)
        for _ in range(3):
            assert sonic.decode_output({"event": {"somethingNew": {"a": 1}}}) is None
        end = {"contentId": "x", "type": "AUDIO", "stopReason": "MAX_TOKENS"}
        for _ in range(3):
            assert sonic.decode_output({"event": {"contentEnd": end}}) is not None
    assert _tolerated(logs) == [
        ("unknown field", "audioOutput", "newField"),
        ("unknown event", "somethingNew", ""),
        ("unknown value", "contentEnd.stopReason", "MAX_TOKENS"),
    ]


def test_bounded_log_memory(fresh_reports: None) -> None:
    with capture_logs() as logs:
        for i in range(codec.MAX_REPORTED + 50):
            sonic.decode_output({"event": {"completionStart": {f"f{i}": 1}}})
    assert len(_tolerated(logs)) == codec.MAX_REPORTED == len(codec._reported)


def test_unknown_enum_values_do_not_kill_the_stream(fresh_reports: None) -> None:
    def out(name: str, **body: Any) -> sonic.OutputEvent | None:
        return sonic.decode_output({"event": {name: body}})

    # A role voicegate does not know, or none (the Nova 2 schema omits textOutput's role in
    # places): the model's output, read as ASSISTANT.
    assert out("textOutput", contentId="x", content="hi") == TextOutput("x", "ASSISTANT", "hi")
    assert out("textOutput", contentId="x", role="NARRATOR", content="hi") == TextOutput(
        "x", "ASSISTANT", "hi"
    )
    start = out("contentStart", contentId="x", type="AUDIO", role="NARRATOR")
    assert start == OutputContentStart("x", "AUDIO", "ASSISTANT", None)
    # An unknown stop reason is a normal end; an unknown content type drops only that event.
    assert out("contentEnd", contentId="x", type="TEXT", stopReason="MAX_TOKENS") == (
        OutputContentEnd("x", "TEXT", "END_TURN")
    )
    assert out("contentEnd", contentId="x", type="TEXT") == OutputContentEnd(
        "x", "TEXT", "END_TURN"
    )
    assert out("contentStart", contentId="x", type="IMAGE", role="ASSISTANT") is None
    assert out("contentStart", contentId="x", role="ASSISTANT") is None
    assert out("contentEnd", contentId="x", type="IMAGE", stopReason="END_TURN") is None
    assert out("completionEnd", stopReason="SOMETHING_NEW") == CompletionEnd("SOMETHING_NEW")


@pytest.mark.parametrize(
    "obj",
    [
        None,
        {"event": {}},
        {"event": {"a": {}, "b": {}}},
        {"event": {"audioOutput": {"contentId": "x", "content": "!!"}}},
        {"event": {"toolUse": {"contentId": "x", "toolUseId": "u", "content": "{}"}}},
    ],
)
def test_corrupt_output_is_still_an_error(obj: Any) -> None:
    with pytest.raises(SonicProtocolError):
        sonic.decode_output(obj)


def _tool_use(content: Any) -> ToolUse:
    body = {"contentId": "x", "toolName": "weather", "toolUseId": "u1", "content": content}
    event = sonic.decode_output({"event": {"toolUse": body}})
    assert isinstance(event, ToolUse)
    return event


def test_double_encoded_tool_arguments_are_decoded() -> None:
    args = {"city": "Paris", "days": 2, "units": ["C"]}
    once = json.dumps(args)
    assert json.loads(_tool_use(once).content) == args
    twice = json.dumps(once)  # a JSON string whose value is the JSON text
    assert isinstance(json.loads(twice), str)
    assert json.loads(_tool_use(twice).content) == args
    assert json.loads(_tool_use(json.dumps(twice)).content) == args  # three layers
    assert json.loads(_tool_use(args).content) == args  # an object instead of a string
    # What is not double-encoded JSON passes through as it came, for the tool layer to judge.
    assert _tool_use('"just words"').content == '"just words"'
    assert _tool_use("not json").content == "not json"
    assert _tool_use("").content == "{}"
    assert _tool_use(None).content == "{}"
    deep = once
    for _ in range(10):
        deep = json.dumps(deep)
    assert _tool_use(deep).content.startswith('"')  # peeling is bounded (MAX_JSON_LAYERS)


def test_the_package_face_exports_every_public_name() -> None:
    import voicegate.sonic.model_codec as model_codec
    from voicegate import sonic as events

    for name in sonic.__all__:
        assert getattr(sonic, name) is not None
    public = {n for n in vars(events) if not n.startswith("_") and n[0].isupper()}
    public -= {"Any", "Final", "Literal"}
    assert public <= set(sonic.__all__)
    assert {"decode_input", "encode_output"} <= set(sonic.__all__)
    assert sonic.decode_input is model_codec.decode_input


@pytest.mark.parametrize(
    ("prompt", "content", "pcm"),
    [
        ("p", "audio", b"\x01\x02" * 512),
        ('quote"d\\name', "ünïcode ☃", b""),
        ("p", "c", bytes(range(256)) * 3 + b"\x00"),
    ],
)
def test_the_audio_input_template_is_the_json_encoding_byte_for_byte(
    prompt: str, content: str, pcm: bytes
) -> None:
    event = sonic.AudioInput(prompt, content, pcm)
    assert sonic.audio_input_payload(event) == sonic.dumps(sonic.encode_input(event))
    # The cached halves are those of this (prompt, content), not of the one before.
    other = sonic.AudioInput(prompt + "x", content, pcm)
    assert sonic.audio_input_payload(other) == sonic.dumps(sonic.encode_input(other))


@pytest.mark.parametrize("bad", ["AAA", "AA=A", "A@AA", "A===", "AA\nAA"])
def test_output_audio_that_is_not_strict_base64_is_refused(bad: str) -> None:
    event = {"event": {"audioOutput": {"contentId": "c", "content": bad}}}
    with pytest.raises(sonic.SonicProtocolError):
        sonic.decode_output(event)
