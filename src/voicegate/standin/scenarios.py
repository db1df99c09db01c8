"""The scripted brain's scenarios: what a test asks the stand-in to do in one session.

A scenario is named in the system prompt (``scenario:<name>[:<arg>...]``), because the system
prompt is the one knob every client, including the real SDK driven by production code, already
controls. See docs/standin.md for the catalogue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from voicegate.standin.errors import EXCEPTIONS

SCENARIO_RE: Final = re.compile(r"scenario:([a-z_]+(?::[A-Za-z0-9_.\-]+)*)")

SCENARIOS: Final = frozenset({"reply", "barge_in", "tool", "reset", "exception", "silent"})
DEFAULT_EXCEPTION_AFTER: Final = 3
"""Audio chunks received before an ``exception:<kind>`` scenario raises."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed ``scenario:<name>[:<arg>...]``; ``greet`` replies as soon as audio starts."""

    name: str = "reply"
    greet: bool = False
    tool: str | None = None
    exception: str | None = None
    after_chunks: int = DEFAULT_EXCEPTION_AFTER
    once: bool = False
    """Fail (reset, exception) only in a session without replayed history, i.e. the first
    stream of a call: the recovered stream then carries on (the recovery tests)."""
    reset: bool = False
    """``tool`` scenario: reset the stream right after the toolUse, before its result."""

    @classmethod
    def parse(cls, spec: str) -> Scenario:
        """Parse ``reply``, ``reply:greet``, ``tool:calculate``, ``exception:throttling:5``..."""
        name, *args = spec.split(":")
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} (one of {sorted(SCENARIOS)})")
        greet = "greet" in args
        once = "once" in args
        reset = name == "tool" and "reset" in args
        args = [a for a in args if a not in ("greet", "once") and not (reset and a == "reset")]
        if name == "exception":
            if not args or args[0] not in EXCEPTIONS:
                raise ValueError(f"exception scenario needs one of {sorted(EXCEPTIONS)}")
            after = int(args[1]) if len(args) > 1 else DEFAULT_EXCEPTION_AFTER
            if after < 0:
                raise ValueError("exception scenario chunk count must be >= 0")
            return cls(name, greet, exception=args[0], after_chunks=after, once=once)
        if name == "tool":
            return cls(name, greet, tool=args[0] if args else None, once=once, reset=reset)
        if args:
            raise ValueError(f"scenario {name!r} takes no arguments besides greet and once")
        return cls(name, greet, once=once)

    @property
    def label(self) -> str:
        parts = [self.name]
        if self.exception:
            parts += [self.exception, str(self.after_chunks)]
        if self.tool:
            parts.append(self.tool)
        if self.reset:
            parts.append("reset")
        if self.greet:
            parts.append("greet")
        if self.once:
            parts.append("once")
        return ":".join(parts)


def scenario_from_prompt(system_prompt: str, default: Scenario) -> Scenario:
    """The scenario named in the system prompt (``scenario:<spec>``), else ``default``."""
    match = SCENARIO_RE.search(system_prompt)
    if match is None:
        return default
    return Scenario.parse(match.group(1))


__all__ = ["SCENARIOS", "Scenario", "scenario_from_prompt"]
