"""What the Bedrock stand-in received, read back from its session records."""

from __future__ import annotations

from typing import Any


def client_texts(record: Any) -> list[tuple[str, bool, str, bool]]:
    """(role, interactive, text, sent after the audio content started) of every TEXT content
    a stand-in session received, in order."""
    opened: dict[str, list[Any]] = {}
    out: list[tuple[str, bool, str, bool]] = []
    audio = False
    for event in record.events:
        ((name, body),) = event.items()
        content = body.get("contentName")
        if name == "contentStart" and body.get("type") == "AUDIO":
            audio = True
        elif name == "contentStart" and body.get("type") == "TEXT":
            opened[content] = [body["role"], body["interactive"], "", audio]
        elif name == "textInput" and content in opened:
            opened[content][2] += body["content"]
        elif name == "contentEnd" and content in opened:
            role, interactive, text, after = opened.pop(content)
            out.append((role, interactive, text, after))
    return out
