"""Tools the model may call: a registry of Python functions with JSON-schema parameters.

A tool is a plain function (sync or async) taking keyword arguments and returning something
JSON-serialisable. The registry sends the specs in promptStart and runs a toolUse: blocking
functions run in a worker thread so the event loop (and every call's audio) never waits, every
run has a timeout, and a failing or slow tool yields an error *result* the model can speak about,
never a dead stream.

Adding a tool::

    registry = default_tools()

    @registry.tool(
        description="Look up an order's status by id.",
        parameters={"type": "object", "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"]},
    )
    async def order_status(order_id: str) -> dict[str, str]:
        return {"order_id": order_id, "status": "shipped"}

A tool that needs to know which call asks (an HTTP tool tells the team's service the call id and
the agent) is a ``Tool`` with ``wants_context=True``: it is called as ``func(context, **args)``
with the ``ToolContext`` its registry was made with (one registry per call); other tools are
called exactly as before. A tool raising ``ToolFailed`` has its message reported to the model as
it is (``{"error": message}``), for failures worth saying in the caller's words.
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import inspect
import json
import operator
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voicegate.sonic import ToolSpec

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_RESULT_BYTES",
    "Tool",
    "ToolContext",
    "ToolFailed",
    "ToolFunc",
    "ToolRegistry",
    "calculate",
    "default_tools",
    "get_current_time",
]

ToolFunc = Callable[..., Any]

DEFAULT_TIMEOUT: Final = 10.0
MAX_RESULT_BYTES: Final = 64 * 1024
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Which call runs a tool: its ``pc_id`` and the agent it talks to ("" when unknown)."""

    pc_id: str = ""
    agent: str = ""


class ToolFailed(Exception):
    """A tool's own failure, said to the model as it is (no "the tool failed:" prefix)."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    func: ToolFunc
    timeout: float = DEFAULT_TIMEOUT
    wants_context: bool = False
    """Call ``func(context, **arguments)`` with the registry's ``ToolContext``."""
    filler_after: float = 0.0
    """Seconds a call may run before the caller hears ``filler`` (0: never)."""
    filler: str = ""

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)


class ToolRegistry:
    def __init__(self, context: ToolContext | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self.context = context or ToolContext()

    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def add(self, tool: Tool) -> None:
        if not _NAME.match(tool.name):
            raise ValueError(f"tool name {tool.name!r} must be snake_case (a-z, 0-9, _)")
        if tool.parameters.get("type") != "object":
            raise ValueError(f"tool {tool.name!r}: parameters must be a JSON schema of type object")
        self._tools[tool.name] = tool

    def tool(
        self,
        *,
        description: str,
        parameters: dict[str, Any] | None = None,
        name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Callable[[ToolFunc], ToolFunc]:
        """Decorator form of ``add``."""

        def register(func: ToolFunc) -> ToolFunc:
            self.add(
                Tool(
                    name or func.__name__,
                    description,
                    parameters or {"type": "object", "properties": {}},
                    func,
                    timeout,
                )
            )
            return func

        return register

    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(t.spec for t in self._tools.values())

    def names(self) -> list[str]:
        return list(self._tools)

    def filler(self, name: str) -> tuple[float, str] | None:
        """(seconds, sentence) after which a call of ``name`` gets a filler; None: never."""
        tool = self._tools.get(name)
        if tool is None or tool.filler_after <= 0 or not tool.filler:
            return None
        return tool.filler_after, tool.filler

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    async def run(self, name: str, arguments_json: str) -> tuple[str, bool]:
        """Run one tool call. Returns (result JSON object text, ok). Never raises."""
        tool = self._tools.get(name)
        if tool is None:
            return _error(f"unknown tool {name!r}"), False
        try:
            args = json.loads(arguments_json or "{}")
        except json.JSONDecodeError:
            return _error("the tool arguments were not valid JSON"), False
        if not isinstance(args, dict):
            return _error("the tool arguments must be a JSON object"), False
        lead = (self.context,) if tool.wants_context else ()
        try:
            if inspect.iscoroutinefunction(tool.func):
                pending: Awaitable[Any] = tool.func(*lead, **args)
            else:
                pending = asyncio.to_thread(tool.func, *lead, **args)
            result = await asyncio.wait_for(pending, tool.timeout)
        except TimeoutError:
            return _error(f"the tool {name!r} did not finish within {tool.timeout:g} s"), False
        except ToolFailed as exc:
            return _error(str(exc)), False
        except TypeError as exc:
            return _error(f"bad arguments for {name!r}: {exc}"), False
        except Exception as exc:
            return _error(f"the tool {name!r} failed: {exc}"), False
        if not isinstance(result, dict):
            # Nova Sonic takes a tool result only as a JSON object ("Tool Response parsing
            # error" otherwise): wrap anything else.
            result = {"result": result}
        try:
            text = json.dumps(result, default=str)
        except (TypeError, ValueError):
            text = json.dumps({"result": str(result)})
        if len(text.encode()) > MAX_RESULT_BYTES:
            return _error(f"the tool {name!r} returned more than {MAX_RESULT_BYTES} bytes"), False
        return text, True


def _error(message: str) -> str:
    return json.dumps({"error": message})


# ---------------------------------------------------------------------------------------------
# Example tools
# ---------------------------------------------------------------------------------------------


def get_current_time(timezone: str = "UTC") -> dict[str, str]:
    """The current local time in an IANA timezone."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {timezone!r}") from exc
    now = dt.datetime.now(zone)
    return {
        "timezone": timezone,
        "time": now.strftime("%H:%M"),
        "spoken": now.strftime("%-I:%M %p").replace("AM", "a.m.").replace("PM", "p.m."),
        "date": now.strftime("%A, %B %-d, %Y"),
    }


_OPS: Final[dict[type, Callable[..., Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculate(expression: str) -> dict[str, Any]:
    """Evaluate arithmetic (+ - * / ** % and parentheses) without eval()."""
    if len(expression) > 200:
        raise ValueError("expression too long")

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return float(_OPS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](ev(node.operand)))
        raise ValueError("only numbers and + - * / ** % ( ) are allowed")

    value = ev(ast.parse(expression, mode="eval"))
    return {"expression": expression, "result": int(value) if value.is_integer() else value}


def default_tools() -> ToolRegistry:
    """The registry voicegate ships with: the two example tools."""
    registry = ToolRegistry()
    registry.add(
        Tool(
            "get_current_time",
            "Get the current time. Use it whenever the user asks what time or date it is.",
            {
                "type": "object",
                "properties": {
                    "timezone": {
                        "type": "string",
                        "description": "IANA timezone name, for example Europe/Berlin",
                    }
                },
            },
            get_current_time,
        )
    )
    registry.add(
        Tool(
            "calculate",
            "Evaluate an arithmetic expression exactly.",
            {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
            calculate,
        )
    )
    return registry
