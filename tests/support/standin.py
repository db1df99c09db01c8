"""What the Bedrock stand-in received, read back from its session records."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voicegate.standin import StandIn, server
from voicegate.standin.quirks import FAILURE_QUIRKS


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


@contextlib.asynccontextmanager
async def scripted_without_failures(
    cert_dir: Path, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> AsyncIterator[StandIn]:
    """The scripted stand-in with the run's irregular output (--standin-quirks) but none of its
    injected stream failures, the SDK's environment pointed at it: a stream ends only when the
    call or ``options`` (``StandIn``'s own: a session limit, a stream bound) end it, so its
    records hold exactly what the conversation sent."""
    quirks = server.DEFAULT_QUIRKS - FAILURE_QUIRKS
    async with StandIn("scripted", cert_dir=cert_dir, quirks=quirks, **options) as s:
        for name, value in s.client_env().items():
            monkeypatch.setenv(name, value)
        yield s
