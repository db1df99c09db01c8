"""History replayed to a new model stream, within AWS's documented sizes (chat-history page:
one textInput at most 1 KB, longer text split over several textInputs of the same content; the
whole history at most 40 KB), and a history the service refuses is not the end of the call."""

from __future__ import annotations

import asyncio
from typing import Any

from voicegate.backends.base import BackendStream, ValidationFailed
from voicegate.backends.inprocess import InProcessStream
from voicegate.conversation import (
    Conversation,
    ConversationError,
    ConversationEvent,
    ConversationSettings,
    SessionContinued,
    default_tools,
)
from voicegate.sonic import InputEvent, TextContentStart, TextInput


class Listener:
    def __init__(self) -> None:
        self.events: list[ConversationEvent] = []
        self.changed = asyncio.Event()

    def on_audio(self, pcm: bytes) -> None:
        pass

    def on_flush(self) -> int:
        return 0

    def on_event(self, event: ConversationEvent) -> None:
        self.events.append(event)
        self.changed.set()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, done: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()


class Picky(InProcessStream):
    """Refuses, like Bedrock would (after the events were taken), a history of more than
    ``limit`` messages."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.inputs: list[InputEvent] = []

    async def send(self, event: InputEvent) -> None:
        self.inputs.append(event)
        await super().send(event)
        if len(self.history) > self.limit:
            await self.fail(ValidationFailed("Invalid input request"))


class Backend:
    name = "test"
    input_rate = 16000

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self.opened: list[Picky] = []

    async def open(self) -> BackendStream:
        stream = Picky(self.limit)
        self.opened.append(stream)
        return stream

    def credentials_expiration(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


async def test_a_long_message_is_split_over_textinputs_not_cut() -> None:
    long = " ".join(f"word{i}" for i in range(600))  # about 4.7 KB
    backend = Backend()
    conv = Conversation(backend, ConversationSettings(), default_tools(), Listener())
    conv.memory.remember("USER", "tell me a long story")
    conv.memory.remember("ASSISTANT", long)
    await conv.start()
    try:
        await conv.renew()
    finally:
        await conv.close()
    new = backend.opened[1]
    assert new.history == [("USER", "tell me a long story"), ("ASSISTANT", long)]
    start = next(
        i
        for i, e in enumerate(new.inputs)
        if isinstance(e, TextContentStart) and e.role == "ASSISTANT"
    )
    parts = [e for e in new.inputs[start + 1 :] if isinstance(e, TextInput)][:5]
    assert len(parts) == 5 and all(len(p.content.encode()) <= 1000 for p in parts)
    assert "".join(p.content for p in parts) == long


async def test_a_refused_history_is_shortened_then_dropped_and_the_call_carries_on() -> None:
    backend = Backend(limit=0)  # this "service" takes no history at all
    listener = Listener()
    conv = Conversation(backend, ConversationSettings(), default_tools(), listener)
    conv.seed([("USER", f"q{i}") if i % 2 == 0 else ("ASSISTANT", f"a{i}") for i in range(6)])
    await conv.start()  # an adopted call: its first stream gets the history
    try:
        await listener.until(
            lambda: listener.of(SessionContinued) or listener.of(ConversationError)
        )
        assert not listener.of(ConversationError)
        # Six messages refused, then the newest two (halved, from a USER message), then none.
        assert conv.stats.history_refusals == 2
        assert [bool(s.history) for s in backend.opened] == [True, True, False]
        assert conv.legs.live is not None
    finally:
        await conv.close()
    assert not listener.of(ConversationError)
