"""The tool registry: sync and async tools, errors and timeouts become error results."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from voicegate.conversation.tools import Tool, ToolRegistry, calculate, default_tools
from voicegate.sonic import filler_instruction, filler_of


async def test_example_tools() -> None:
    reg = default_tools()
    assert {s.name for s in reg.specs()} == {"get_current_time", "calculate"}
    text, ok = await reg.run("get_current_time", '{"timezone": "UTC"}')
    assert ok and json.loads(text)["timezone"] == "UTC"
    text, ok = await reg.run("calculate", '{"expression": "(2 + 3) * 4 ** 2"}')
    assert ok and json.loads(text)["result"] == 80


async def test_failures_become_error_results() -> None:
    reg = default_tools()

    async def slow() -> str:
        await asyncio.sleep(10)
        return "late"

    def blocking() -> str:
        time.sleep(0.2)
        return "done"

    reg.add(Tool("slow", "", {"type": "object"}, slow, timeout=0.05))
    reg.add(Tool("blocking", "", {"type": "object"}, blocking, timeout=5))
    cases = {
        ("nope", "{}"): "unknown tool",
        ("calculate", "not json"): "not valid JSON",
        ("calculate", "[1]"): "JSON object",
        ("calculate", '{"expression": "__import__(\\"os\\")"}'): "failed",
        ("calculate", '{"wrong": 1}'): "bad arguments",
        ("get_current_time", '{"timezone": "Mars/Olympus"}'): "unknown timezone",
        ("slow", "{}"): "did not finish",
    }
    for (name, args), needle in cases.items():
        text, ok = await reg.run(name, args)
        assert not ok and needle in json.loads(text)["error"], (name, text)
    # A blocking tool runs in a thread: the loop keeps turning meanwhile.
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    text, ok = await reg.run("blocking", "{}")
    task.cancel()
    assert ok and json.loads(text) == {"result": "done"} and ticks >= 5


def test_registration_rules() -> None:
    reg = ToolRegistry()
    with pytest.raises(ValueError):
        reg.add(Tool("Bad-Name", "", {"type": "object"}, lambda: 1))
    with pytest.raises(ValueError):
        reg.add(Tool("ok_name", "", {"type": "string"}, lambda: 1))

    @reg.tool(description="adds")
    def add(a: int, b: int) -> int:
        return a + b

    assert "add" in reg


def test_calculate_refuses_huge_powers() -> None:
    with pytest.raises(ValueError):
        calculate("9 ** 999999")


async def test_results_are_always_json_objects() -> None:
    """Nova Sonic closes the stream on a tool result that is not a JSON object."""
    reg = ToolRegistry()
    values: list[object] = [42, "text", [1, 2], None, True, {"already": "object"}, {1: "a"}]
    for i, value in enumerate(values):
        reg.add(Tool(f"t{i}", "", {"type": "object"}, lambda v=value: v))
    reg.add(Tool("odd", "", {"type": "object"}, lambda: {(1, 2): "tuple key"}))
    results = []
    for i in range(len(values)):
        text, ok = await reg.run(f"t{i}", "{}")
        assert ok
        results.append(json.loads(text))
    assert results == [
        {"result": 42},
        {"result": "text"},
        {"result": [1, 2]},
        {"result": None},
        {"result": True},
        {"already": "object"},
        {"1": "a"},
    ]
    text, ok = await reg.run("odd", "{}")
    assert ok and isinstance(json.loads(text), dict)


async def test_a_tool_may_receive_its_call_context() -> None:
    from voicegate.conversation.tools import ToolContext, ToolFailed

    seen: list[tuple[ToolContext, dict[str, object]]] = []

    def lookup(context: ToolContext, **arguments: object) -> dict[str, str]:
        seen.append((context, arguments))
        return {"ok": "yes"}

    def refuses() -> None:
        raise ToolFailed("the order service is closed today")

    reg = ToolRegistry(ToolContext("pc-7", "support"))
    reg.add(Tool("lookup", "", {"type": "object"}, lookup, wants_context=True))
    reg.add(Tool("refuses", "", {"type": "object"}, refuses))
    text, ok = await reg.run("lookup", '{"order_id": "A1"}')
    assert ok and json.loads(text) == {"ok": "yes"}
    assert seen == [(ToolContext("pc-7", "support"), {"order_id": "A1"})]
    # ToolFailed's message is what the model hears, as it is.
    text, ok = await reg.run("refuses", "{}")
    assert not ok and json.loads(text) == {"error": "the order service is closed today"}
    # Tools that do not ask for the context are called as before.
    text, ok = await default_tools().run("calculate", '{"expression": "1 + 1"}')
    assert ok and json.loads(text)["result"] == 2


def test_a_tool_gets_a_filler_only_with_a_positive_delay_and_a_text() -> None:
    def noop() -> dict[str, str]:
        return {}

    tools = ToolRegistry()
    empty = {"type": "object", "properties": {}}
    tools.add(Tool("slow", "d", empty, noop, filler_after=1.5, filler="Hold on."))
    tools.add(Tool("never", "d", empty, noop, filler_after=0, filler="Hold on."))
    tools.add(Tool("plain", "d", empty, noop))
    assert tools.filler("slow") == (1.5, "Hold on.")
    assert tools.filler("never") is None and tools.filler("plain") is None
    assert tools.filler("unknown") is None
    assert filler_of(filler_instruction("Hold on.")) == "Hold on."
    assert filler_of("Hold on.") is None and filler_of(filler_instruction("  ")) is None
