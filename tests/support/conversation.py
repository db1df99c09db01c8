"""The conversation layer's counterparts in a test: a listener that keeps what the caller would
get, a brain that records every input event, and a backend that hands out one given stream."""

from __future__ import annotations

import asyncio

from voicegate.backends.base import BackendStream
from voicegate.backends.inprocess import InProcessStream
from voicegate.conversation import ConversationEvent
from voicegate.sonic import InputEvent


class Listener:
    def __init__(self) -> None:
        self.audio = bytearray()
        self.flushes = 0
        self.events: list[ConversationEvent] = []
        self.changed = asyncio.Event()

    def on_audio(self, pcm: bytes) -> None:
        self.audio += pcm

    def on_flush(self) -> int:
        self.flushes += 1
        dropped = len(self.audio) // 2
        self.audio.clear()
        return dropped

    def on_event(self, event: ConversationEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait(self, kind: type, timeout: float = 5.0) -> ConversationEvent:
        async with asyncio.timeout(timeout):
            while True:
                for e in self.events:
                    if isinstance(e, kind):
                        return e
                self.changed.clear()
                await self.changed.wait()


class Recorder(InProcessStream):
    """Keeps every input event (grammar is checked by the base class)."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[InputEvent] = []
        self.audio_chunks = 0

    async def send(self, event: InputEvent) -> None:
        self.inputs.append(event)
        await super().send(event)

    async def on_audio(self, pcm: bytes) -> None:
        self.audio_chunks += 1


class OneBackend:
    name = "test"

    def __init__(self, stream: InProcessStream) -> None:
        self.stream = stream

    async def open(self) -> BackendStream:
        return self.stream

    def credentials_expiration(self) -> None:
        return None

    async def aclose(self) -> None:
        pass
