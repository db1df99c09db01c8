"""A call's conversation state as the cluster stores it: enough for another node to adopt the
call (the shaped history renewal replays, the settings the call runs with, who the call's token
was for), bounded to ``MAX_STATE_BYTES`` and versioned.

No audio is kept: the adopting node's first model stream gets the history as text, exactly like
a renewal; what the caller says after the move is heard by the new stream directly.
"""

from __future__ import annotations

import json
from typing import Any, Final

from voicegate.conversation.dialogue import Conversation
from voicegate.signaling.calls import StoredCall

__all__ = ["MAX_STATE_BYTES", "decode", "encode"]

MAX_STATE_BYTES: Final = 64 * 1024
VERSION: Final = 1
MAX_PROMPT_BYTES: Final = 40_000


def encode(conversation: Conversation, subject: str | None, agent: str = "") -> str:
    """The stored form of ``conversation``: never more than ``MAX_STATE_BYTES``."""
    settings = conversation.settings
    history = conversation.shaped_history()
    prompt = settings.system_prompt
    data: dict[str, Any] = {
        "v": VERSION,
        "history": history,
        "voice_id": settings.voice_id,
        "system_prompt": prompt if len(prompt.encode()) <= MAX_PROMPT_BYTES else None,
        "subject": subject,
        "agent": agent,
    }
    text = json.dumps(data, separators=(",", ":"))
    while len(text.encode()) > MAX_STATE_BYTES and data["history"]:
        data["history"] = data["history"][2:]  # oldest exchange first
        text = json.dumps(data, separators=(",", ":"))
    return text


def decode(text: str) -> StoredCall | None:
    """The stored call, or None when ``text`` is not a state this version understands."""
    if len(text.encode()) > MAX_STATE_BYTES:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        return None
    history = []
    for item in data.get("history") or []:
        if (
            isinstance(item, list)
            and len(item) == 2
            and item[0] in ("USER", "ASSISTANT")
            and isinstance(item[1], str)
        ):
            history.append((item[0], item[1]))
    prompt, voice, subject = data.get("system_prompt"), data.get("voice_id"), data.get("subject")
    agent = data.get("agent")
    return StoredCall(
        history=history,
        system_prompt=prompt if isinstance(prompt, str) else None,
        voice_id=voice if isinstance(voice, str) and voice.isidentifier() else None,
        subject=subject if isinstance(subject, str) else None,
        agent=agent if isinstance(agent, str) and agent else None,
    )
