"""The words voicegate sends the model when a tool is slow, and how a brain recognises them:
the filler while it runs, and its result when the stream that asked for it is gone.

Nova 2 keeps the conversation going while a tool runs and takes interactive USER text at any
time (cross-modal input); that is the documented way to make it speak mid-wait, so a filler is
such a text: an instruction to say the configured sentence. Bedrock's model follows it; the
in-process brains (offline and stand-in) read the sentence back out of it and speak it, so the
three behave alike on the same wire.

A result can also outlive the stream that asked for it: a renewal forced while a slow tool runs
moves the call to a stream that never saw the toolUse, and Bedrock refuses a toolResult for an
id it does not know. The result then goes to the new stream as interactive USER text too, an
instruction to tell the caller, or it would wait in the history until the caller spoke again.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "FILLER_PREFIX",
    "LATE_RESULT_PREFIX",
    "filler_instruction",
    "filler_of",
    "late_result_instruction",
    "late_result_of",
]

FILLER_PREFIX: Final = (
    "(A tool you called is still running. Do not answer yet; say only this to the caller, "
    "in these words:) "
)


def filler_instruction(filler: str) -> str:
    """The interactive USER text that asks the model to say ``filler`` now."""
    return FILLER_PREFIX + filler


def filler_of(text: str) -> str | None:
    """The sentence a filler instruction asks to say, or None for any other text."""
    if not text.startswith(FILLER_PREFIX):
        return None
    return text[len(FILLER_PREFIX) :].strip() or None


LATE_RESULT_PREFIX: Final = (
    "(A tool you called before the conversation moved to this session has finished. Tell the "
    "caller now what it found. The tool "
)
_RETURNED: Final = " returned:) "


def late_result_instruction(tool: str, result: str) -> str:
    """The interactive USER text that gives the model the result of ``tool``, asked for on a
    stream since replaced, and asks it to tell the caller."""
    return f"{LATE_RESULT_PREFIX}{tool}{_RETURNED}{result}"


def late_result_of(text: str) -> tuple[str, str] | None:
    """(tool, result) of a late result instruction, or None for any other text."""
    if not text.startswith(LATE_RESULT_PREFIX):
        return None
    tool, found, result = text[len(LATE_RESULT_PREFIX) :].partition(_RETURNED)
    return (tool, result) if found and tool else None
