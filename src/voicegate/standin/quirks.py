"""``voicegate standin --quirks LIST``: output and failures Bedrock's documentation allows and
real accounts show, which a well-behaved stand-in would never produce. Off by default; ``all``
turns every one on. Each quirk's source is in docs/standin.md ("Quirks")."""

from __future__ import annotations

from typing import Final

QUIRKS: Final = (
    "audio-contents",
    "partial-turn",
    "usage-mid-turn",
    "one-completion",
    "transient-errors",
    "goaway",
    "throttle-opens",
)
"""audio-contents: a reply's audio in several contents, each with its own text; partial-turn: an
AUDIO contentEnd with PARTIAL_TURN, the turn going on in the next content; usage-mid-turn: a
usageEvent (with deltas) in the middle of a turn; one-completion: one completionStart at the
first output and one completionEnd at the session's end, not one per turn; transient-errors: a
long session now and then ends with a Bedrock-side ValidationException (531, "Invalid event
bytes", "System instability"); goaway: a long-lived connection is sent GOAWAY; throttle-opens:
more than ``OPENS_PER_MINUTE`` stream opens in a minute get ThrottlingException."""

FAILURE_QUIRKS: Final = frozenset({"transient-errors", "goaway", "throttle-opens"})
"""The quirks that fail streams (the others only change the shape of the output): a test that
measures something other than recovery (a renewal's seamlessness) leaves these out."""

OPENS_PER_MINUTE: Final = 40
TRANSIENT_AFTER_S: Final = 20.0
"""A session this old may fail with a transient error (every ``TRANSIENT_EVERY``-th session)."""
TRANSIENT_EVERY: Final = 3
TRANSIENT_MESSAGES: Final = (
    "The system encountered an unexpected error during processing. Try your request again. "
    "(InternalErrorCode=531)",
    "Invalid event bytes",
    "System instability detected. Please try again.",
)
GOAWAY_AFTER_S: Final = 45.0
"""A connection carrying streams for this long is sent GOAWAY."""


def parse_quirks(text: str) -> frozenset[str]:
    """``a,b`` or ``all`` (blank: none); ValueError naming the unknown ones."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if "all" in names:
        return frozenset(QUIRKS)
    unknown = sorted(names - set(QUIRKS))
    if unknown:
        raise ValueError(f"unknown quirks {unknown}; known: {', '.join(QUIRKS)}, all")
    return frozenset(names)


__all__ = ["FAILURE_QUIRKS", "QUIRKS", "parse_quirks"]
