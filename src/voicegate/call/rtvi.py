"""Data-channel messages in Pipecat's RTVI shape, so RTVI client SDKs understand voicegate.

Every message is ``{"label": "rtvi-ai", "type": ..., "id": ..., "data": {...}}``. The full list,
with voicegate's additions, is documented in docs/protocol.md.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Final

LABEL: Final = "rtvi-ai"
PROTOCOL_VERSION: Final = "1.0.0"


def message(type_: str, data: dict[str, Any] | None = None, id_: str | None = None) -> str:
    return json.dumps(
        {"label": LABEL, "type": type_, "id": id_ or uuid.uuid4().hex[:12], "data": data or {}},
        separators=(",", ":"),
    )


def bot_ready(request_id: str | None, backend: str) -> str:
    return message(
        "bot-ready",
        {"version": PROTOCOL_VERSION, "about": {"library": "voicegate", "backend": backend}},
        request_id,
    )


def user_transcription(text: str, final: bool, user_id: str) -> str:
    return message(
        "user-transcription",
        {
            "text": text,
            "final": final,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "user_id": user_id,
        },
    )


def error(text: str, fatal: bool, kind: str = "error") -> str:
    return message("error", {"message": text, "fatal": fatal, "kind": kind})


def server_message(kind: str, **fields: Any) -> str:
    return message("server-message", {"kind": kind, **fields})


def parse(raw: str | bytes) -> dict[str, Any] | None:
    """A client message, or None for anything that is not an RTVI JSON object (pings, junk)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            return None
    if len(raw) > 65536:
        return None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return None
    return obj
