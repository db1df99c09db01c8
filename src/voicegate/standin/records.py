"""What the stand-in remembers about each stream, so tests can assert on what really arrived.

One ``SessionRecord`` per accepted stream (the decoded input events, signature counts, output
counts, how it ended) and one ``Rejection`` per request refused before its stream opened. Both
are bounded: long strings are clipped, consecutive audio chunks collapse into one entry, and the
server keeps only the latest records.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

MAX_LOGGED_EVENTS: Final = 2000
MAX_LOGGED_STRING: Final = 1024
MAX_SESSION_RECORDS: Final = 1000
MAX_AUDIO_ARRIVALS: Final = 6000
"""Audio chunks whose arrival is kept per session (two minutes of 20 ms chunks)."""


@dataclass(slots=True)
class SessionRecord:
    """One accepted stream: what arrived, what was verified, what went out, how it ended."""

    request_id: str
    model_id: str
    region: str
    access_key: str
    session_token: bool
    brain: str
    scenario: str | None = None
    envelopes: int = 0
    signatures_verified: int = 0
    end_frame: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    """Decoded Nova input events in order; audio content replaced by a byte count and
    consecutive audioInput events collapsed into one entry with a chunk count."""
    events_dropped: int = 0
    event_counts: Counter[str] = field(default_factory=Counter)
    audio_chunks: int = 0
    audio_bytes: int = 0
    audio_rate: int = 0
    """The audio content's sampleRateHertz, as the client declared it (0: none opened)."""
    audio_arrivals: deque[tuple[float, int]] = field(
        default_factory=lambda: deque(maxlen=MAX_AUDIO_ARRIVALS)
    )
    """(loop time, bytes) of each audioInput as it arrived, newest last: how the client paced
    its audio (AWS asks for real time)."""
    output_counts: Counter[str] = field(default_factory=Counter)
    output_audio_bytes: int = 0
    outcome: str = "open"
    """open | completed (closed in order: ..., promptEnd, sessionEnd, end of input) |
    exception:<type> | reset | client_reset | connection_lost | ended (a brain ended its output
    without the client's sessionEnd)"""
    error: str | None = None
    client_ended: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the output side ended (END_STREAM, exception, reset or loss)."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when both sides are over (the client's input ended too, or the stream died)."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set as each input event arrives, so a waiter (``until``) need not poll."""

    @property
    def audio_seconds(self) -> float:
        """Audio received, in seconds at the declared rate."""
        return self.audio_bytes / 2 / self.audio_rate if self.audio_rate else 0.0

    def input_names(self) -> list[str]:
        return [next(iter(e)) for e in self.events]

    async def until(self, done: Callable[[SessionRecord], bool]) -> None:
        """Return once ``done(self)`` holds, checked as each input event arrives; the caller
        bounds the wait (``asyncio.timeout``)."""
        while not done(self):
            self.arrived.clear()
            await self.arrived.wait()

    def closed_in_order(self) -> bool:
        """The client closed the session the documented way: its last events were contentEnd,
        promptEnd and sessionEnd, its input ended (with SDK 0.12's signed empty end frame),
        and the stand-in answered with a clean end of stream."""
        return (
            self.input_names()[-3:] == ["contentEnd", "promptEnd", "sessionEnd"]
            and self.end_frame
            and self.client_ended
            and self.outcome == "completed"
        )

    def _log(self, name: str, body: dict[str, Any]) -> None:
        self.event_counts[name] += 1
        self.arrived.set()
        if name == "audioInput":
            last = self.events[-1] if self.events else None
            if last is not None and "audioInput" in last:
                last["audioInput"]["chunks"] += 1
                return
            body = {
                "promptName": body.get("promptName"),
                "contentName": body.get("contentName"),
                "chunks": 1,
            }
        if len(self.events) >= MAX_LOGGED_EVENTS:
            self.events_dropped += 1
            return
        self.events.append({name: _clip(body)})


def _clip(value: Any) -> Any:
    """A copy with long strings cut, so a session's log stays small whatever is sent."""
    if isinstance(value, str) and len(value) > MAX_LOGGED_STRING:
        return value[:MAX_LOGGED_STRING] + f"...({len(value)} chars)"
    if isinstance(value, dict):
        return {k: _clip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request refused before the stream opened."""

    status: int
    error_type: str
    message: str
    path: str


__all__ = ["MAX_AUDIO_ARRIVALS", "MAX_SESSION_RECORDS", "Rejection", "SessionRecord"]
