"""The session grammar every in-process brain shares (``voicegate.backends.grammar``).

The stand-in's SDK tests (tests/integration/test_standin_rules.py) cover each rule on the wire;
these check what only the in-process path can show: the same refusals reach a caller of the echo
brain, an event after sessionEnd raises from ``send`` (the output already ended), and the history
the grammar hands to brains.
"""

from __future__ import annotations

import pytest

from voicegate import sonic as s
from voicegate.backends.base import ValidationFailed
from voicegate.backends.echo import EchoBackend
from voicegate.backends.grammar import SessionGrammar

P = "p"
SETUP: list[s.InputEvent] = [
    s.SessionStart(),
    s.PromptStart(P),
    s.TextContentStart(P, "sys", "SYSTEM"),
    s.TextInput(P, "sys", "be brief"),
    s.ContentEnd(P, "sys"),
]
CLOSE: list[s.InputEvent] = [s.ContentEnd(P, "mic"), s.PromptEnd(P), s.SessionEnd()]


def _grammar(*events: s.InputEvent) -> SessionGrammar:
    grammar = SessionGrammar()
    for event in events:
        grammar.accept(event)
    return grammar


def _history(*pairs: tuple[s.Role, str]) -> list[s.InputEvent]:
    out: list[s.InputEvent] = []
    for i, (role, text) in enumerate(pairs):
        out += [
            s.TextContentStart(P, f"h{i}", role),
            s.TextInput(P, f"h{i}", text),
            s.ContentEnd(P, f"h{i}"),
        ]
    return out


def test_history_and_system_prompt_are_collected() -> None:
    grammar = _grammar(*SETUP, *_history(("USER", "hi"), ("ASSISTANT", "hello")))
    assert grammar.system_prompt == "be brief"
    assert grammar.history == [("USER", "hi"), ("ASSISTANT", "hello")]


@pytest.mark.parametrize(
    ("events", "fragment"),
    [
        ([*SETUP, *_history(("TOOL", "x"))], "must have role USER or ASSISTANT"),
        ([*SETUP, s.AudioContentStart(P, "mic", role="ASSISTANT")], "must have role USER"),
        ([*SETUP, s.AudioContentStart(P, "mic"), s.AudioInput(P, "mic", b"")], "whole 16-bit"),
        (
            [*SETUP, s.AudioContentStart(P, "mic"), s.ToolResultContentStart(P, "t", "u")],
            "does not match a toolUse",
        ),
        ([s.SessionEnd()], "the first event must be sessionStart"),
    ],
)
def test_refusals_are_bedrock_shaped(events: list[s.InputEvent], fragment: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        _grammar(*events)
    assert fragment in info.value.message
    assert info.value.message.startswith(("Invalid input request: ", "Tool Response parsing"))


def test_a_tool_result_must_be_a_json_object() -> None:
    grammar = _grammar(*SETUP, s.AudioContentStart(P, "mic"))
    grammar.tool_use_issued("use-1")
    grammar.accept(s.ToolResultContentStart(P, "t", "use-1"))
    with pytest.raises(ValidationFailed, match="Tool Response parsing error"):
        grammar.accept(s.ToolResult(P, "t", '"a string"'))


async def test_the_echo_brain_enforces_the_same_grammar() -> None:
    backend = EchoBackend()
    stream = await backend.open()
    try:
        for event in [s.SessionStart(), s.PromptStart(P), s.AudioContentStart(P, "mic")]:
            await stream.send(event)
        with pytest.raises(ValidationFailed, match="system prompt must come before"):
            async for _ in stream.events():
                pass
    finally:
        await stream.close()
        await backend.aclose()


async def test_after_sessionEnd_send_itself_refuses() -> None:
    backend = EchoBackend()
    stream = await backend.open()
    try:
        for event in [*SETUP, s.AudioContentStart(P, "mic"), *CLOSE]:
            await stream.send(event)
        _ = [e async for e in stream.events()]  # ends in order
        with pytest.raises(ValidationFailed, match="no event may follow sessionEnd"):
            await stream.send(s.AudioInput(P, "mic", bytes(2)))
    finally:
        await stream.close()
        await backend.aclose()
