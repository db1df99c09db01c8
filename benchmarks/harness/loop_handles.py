"""Event-loop wake-ups, counted: every callback the asyncio loop runs, by what it runs.

Each time the loop runs a callback (a task step after its future resolved, a socket read, a
timer) is one wake-up of Python code. Counting them per model event says whether the receive
path hands over what arrived together in one go (one task step for a burst) or pays a task
switch per event. Counting wraps ``asyncio.Handle._run``, so it costs CPU itself: a worker that
counts reports no CPU figure worth comparing.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import collections
from collections.abc import Callable
from typing import Any

_counts: collections.Counter[str] = collections.Counter()
_installed: list[Callable[[asyncio.Handle], Any]] = []


def _name(callback: Any) -> str:
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return "task " + str(getattr(coro, "__qualname__", type(coro).__name__))
    return str(getattr(callback, "__qualname__", type(callback).__name__))


def install() -> None:
    """Start counting in this process (once; from then on for its lifetime)."""
    if _installed:
        return
    original = asyncio.events.Handle._run
    _installed.append(original)

    def run(self: asyncio.Handle) -> Any:
        _counts[_name(getattr(self, "_callback", None))] += 1
        return original(self)

    asyncio.events.Handle._run = run  # type: ignore[method-assign]


def snapshot() -> collections.Counter[str]:
    return collections.Counter(_counts)


def per_event(
    before: collections.Counter[str], after: collections.Counter[str], events: float, top: int = 8
) -> dict[str, Any]:
    """Callbacks run between two snapshots per event: in all, and for the busiest kinds."""
    diff = after - before
    n = max(events, 1.0)
    return {
        "all": round(sum(diff.values()) / n, 3),
        "by_callback": {name: round(count / n, 3) for name, count in diff.most_common(top)},
    }


__all__ = ["install", "per_event", "snapshot"]
