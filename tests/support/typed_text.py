"""Typed text as the page sends it over the data channel, and a stand-in for the conversation's
``send_text`` that keeps what arrives (the tests of typed text and of its rate limit share it)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from voicegate.conversation import Conversation
from voicegate.testing.client import CallClient


def send_rtvi(client: CallClient, type_: str, data: Any, id_: str | None = None) -> str:
    """Send one RTVI message on the call's data channel; its id."""
    id_ = id_ or uuid.uuid4().hex[:8]
    message = {"label": "rtvi-ai", "type": type_, "id": id_, "data": data}
    client._channel.send(json.dumps(message))  # the page's data channel, as the page sends
    return id_


def text_data(content: Any, **options: Any) -> dict[str, Any]:
    """A ``send-text`` message's data."""
    return {
        "content": content,
        "options": {"run_immediately": True, "audio_response": True, **options},
    }


class Entry:
    """Stands at ``Conversation.send_text``: keeps what arrives; ``gate`` holds each call."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.changed = asyncio.Condition()
        self.gate = asyncio.Event()
        self.gate.set()

    def method(self) -> Any:
        async def send_text(conversation: Conversation, text: str) -> None:
            assert isinstance(conversation, Conversation)
            self.texts.append(text)
            async with self.changed:
                self.changed.notify_all()
            await self.gate.wait()

        return send_text

    async def count(self, n: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.texts) >= n)
