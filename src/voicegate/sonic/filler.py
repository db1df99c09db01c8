"""The words voicegate sends the model when a tool is slow, and how a brain recognises them.

Nova 2 keeps the conversation going while a tool runs and takes interactive USER text at any
time (cross-modal input); that is the documented way to make it speak mid-wait, so a filler is
such a text: an instruction to say the configured sentence. Bedrock's model follows it; the
in-process brains (offline and stand-in) read the sentence back out of it and speak it, so the
three behave alike on the same wire.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FILLER_PREFIX", "filler_instruction", "filler_of"]

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
