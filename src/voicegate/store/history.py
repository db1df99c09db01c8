"""The call history's interface and what every store shares: queries, pages, the store URL.

A store keeps one row per call: the record as JSON plus the columns a list is filtered and
ordered by (start time, agent, end reason). ``sqlite:`` (embedded, the default: nothing to run) and
``postgresql://`` (several nodes write one store) implement it. Lists are newest first and paged
by a keyset cursor (the last row's start time and id), so a page never repeats or skips a call
while new calls arrive.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from voicegate.store.record import CallRecord

__all__ = [
    "MAX_LIMIT",
    "CallHistory",
    "CallPage",
    "CallQuery",
    "default_sqlite_path",
    "decode_cursor",
    "encode_cursor",
]

MAX_LIMIT: Final = 200
DEFAULT_LIMIT: Final = 50


@dataclass(frozen=True, slots=True)
class CallQuery:
    agent: str | None = None
    end_reason: str | None = None
    """An end reason, or its kind before a colon (``error`` matches ``error:throttled``)."""
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT
    cursor: tuple[float, str] | None = None
    """Calls older than this (start time, call id): the next page."""


@dataclass(frozen=True, slots=True)
class CallPage:
    calls: list[CallRecord]
    next_cursor: str | None


class CallHistory(Protocol):
    """Where records are kept. Every method runs off the event loop's critical path (a thread
    for SQLite, asyncio for PostgreSQL)."""

    async def save(self, record: CallRecord) -> None: ...

    async def get(self, call_id: str) -> CallRecord | None: ...

    async def list(self, query: CallQuery) -> CallPage: ...

    async def purge(self, before: float) -> int:
        """Delete calls that started before ``before`` (wall clock); returns how many."""
        ...

    async def aclose(self) -> None: ...


def encode_cursor(started: float, call_id: str) -> str:
    return base64.urlsafe_b64encode(f"{started!r}|{call_id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, str]:
    """Raises ValueError for anything ``encode_cursor`` did not write."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        started, call_id = raw.split("|", 1)
        return float(started), call_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor this server gave out") from None


def default_sqlite_path() -> Path:
    """Where the embedded store lives unless told: ``$VOICEGATE_STATE_DIR``, else the XDG state
    directory (``~/.local/state/voicegate``)."""
    base = os.environ.get("VOICEGATE_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "voicegate"
    )
    return Path(base) / "calls.sqlite3"


def row_values(record: CallRecord) -> dict[str, Any]:
    """The columns of a record's row (both stores)."""
    return {
        "call_id": record.call_id,
        "started": record.started,
        "ended": record.ended,
        "agent": record.agent,
        "subject": record.subject,
        "end_reason": record.end_reason,
        "reason_kind": record.end_reason.split(":", 1)[0],
    }
