"""One call's record as the call history keeps it and webhooks send it.

A plain, JSON-shaped value (no WebRTC, no model types) so the store, the webhooks, the API and the
inspector page all read the same fields. Everything in it is bounded: the number of transcript
entries, turns and tool calls, and the length of every text, so one long or hostile call cannot
grow a record (or a webhook body) without limit; what was cut is counted in ``truncated``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "MAX_ENTRIES",
    "MAX_TEXT",
    "CallRecord",
    "RecordKind",
    "clip",
    "iso",
]

RecordKind = Literal["call.started", "call.ended", "call.failed"]
"""The moments a record is handed on (the webhook event types)."""

MAX_ENTRIES: Final = 2000
"""Transcript entries, turns, tool calls, events each: beyond, entries are counted, not kept."""
MAX_TEXT: Final = 4000
"""Characters of one transcript text, tool argument or tool result."""


def iso(wall: float) -> str:
    """A wall-clock time as RFC 3339 UTC with milliseconds (what webhooks and the API show)."""
    moment = dt.datetime.fromtimestamp(wall, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


@dataclass(slots=True)
class CallRecord:
    """What happened in one call. ``started`` and ``ended`` are wall-clock seconds; each entry's
    ``t`` is seconds from the start (the timeline the inspector draws), ``at`` the same moment
    as an RFC 3339 time."""

    call_id: str
    started: float
    agent: str = ""
    subject: str | None = None
    backend: str = ""
    adopted: bool = False
    """The call came over from another node (its ``call.started`` was sent there)."""
    ended: float | None = None
    end_reason: str = ""
    transcript: list[dict[str, Any]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    continuations: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    recording: str | None = None
    truncated: int = 0
    """Entries not kept because a list was full."""

    @property
    def duration_s(self) -> float | None:
        return None if self.ended is None else round(max(0.0, self.ended - self.started), 3)

    def moment(self, wall: float) -> dict[str, Any]:
        return {"t": round(max(0.0, wall - self.started), 3), "at": iso(wall)}

    def append(self, entries: list[dict[str, Any]], entry: dict[str, Any]) -> bool:
        if len(entries) >= MAX_ENTRIES:
            self.truncated += 1
            return False
        entries.append(entry)
        return True

    def summary(self) -> dict[str, Any]:
        """The fields a list of calls shows (no transcript)."""
        return {
            "call_id": self.call_id,
            "agent": self.agent,
            "subject": self.subject,
            "backend": self.backend,
            "started_at": iso(self.started),
            "ended_at": None if self.ended is None else iso(self.ended),
            "duration_s": self.duration_s,
            "end_reason": self.end_reason,
            "turns": len(self.turns),
            "barge_ins": len(self.barge_ins),
            "tool_calls": len(self.tool_calls),
            "errors": len(self.errors),
            "recording": self.recording,
        }

    def to_json(self) -> dict[str, Any]:
        """The whole record (webhook ``call.ended`` data, ``GET /api/calls/{call_id}``)."""
        data = self.summary()
        data.update(
            adopted=self.adopted,
            transcript=list(self.transcript),
            turn_latency=list(self.turns),
            barge_in_events=list(self.barge_ins),
            tool_call_events=list(self.tool_calls),
            continuations=list(self.continuations),
            error_events=list(self.errors),
            usage=dict(self.usage),
            truncated=self.truncated,
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallRecord:
        """Read back what ``to_json`` wrote (the store keeps that JSON)."""
        started = _wall(data.get("started_at")) or 0.0
        ended = _wall(data.get("ended_at"))
        return cls(
            call_id=str(data.get("call_id", "")),
            started=started,
            agent=str(data.get("agent") or ""),
            subject=data.get("subject") if isinstance(data.get("subject"), str) else None,
            backend=str(data.get("backend") or ""),
            adopted=bool(data.get("adopted", False)),
            ended=ended,
            end_reason=str(data.get("end_reason") or ""),
            transcript=list(data.get("transcript") or []),
            turns=list(data.get("turn_latency") or []),
            barge_ins=list(data.get("barge_in_events") or []),
            tool_calls=list(data.get("tool_call_events") or []),
            continuations=list(data.get("continuations") or []),
            errors=list(data.get("error_events") or []),
            usage=dict(data.get("usage") or {}),
            recording=data.get("recording") if isinstance(data.get("recording"), str) else None,
            truncated=int(data.get("truncated") or 0),
        )

    def without_text(self) -> CallRecord:
        """The record with no transcript text and no tool arguments or results (the store's
        ``--call-store-text none``): timings and counts stay."""
        return dataclasses.replace(
            self,
            transcript=[{**e, "text": ""} for e in self.transcript],
            tool_calls=[{**e, "arguments": "", "result": ""} for e in self.tool_calls],
        )


def _wall(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
