"""The conversation layer's counterparts in a test: a listener that keeps what the caller would
get, a brain that records every input event, and a backend that hands out one given stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Self

from voicegate.backends.base import BackendStream
from voicegate.backends.inprocess import InProcessStream
from voicegate.conversation import BotText, ConversationEvent
from voicegate.sonic import InputEvent


class Listener:
    def __init__(self) -> None:
        self.audio = bytearray()
        self.flushes = 0
        self.events: list[ConversationEvent] = []
        self.changed = asyncio.Event()

    def on_audio(self, pcm: bytes) -> None:
        self.audio += pcm
        self.changed.set()

    def on_flush(self) -> int:
        self.flushes += 1
        dropped = len(self.audio) // 2
        self.audio.clear()
        self.changed.set()
        return dropped

    def on_event(self, event: ConversationEvent) -> None:
        self.events.append(event)
        self.changed.set()

    def of(self, kind: type) -> list[Any]:
        """The events of one kind so far, in order."""
        return [e for e in self.events if isinstance(e, kind)]

    def finals(self) -> list[str]:
        """The assistant's final texts so far."""
        return [e.text for e in self.of(BotText) if e.final]

    async def wait(self, kind: type, timeout: float = 5.0) -> ConversationEvent:
        async with asyncio.timeout(timeout):
            while True:
                for e in self.events:
                    if isinstance(e, kind):
                        return e
                self.changed.clear()
                await self.changed.wait()

    async def until(self, done: Callable[[Self], bool], timeout: float = 5.0) -> None:
        """Return once ``done(self)`` holds, checked after each audio chunk, flush or event."""
        async with asyncio.timeout(timeout):
            while not done(self):
                self.changed.clear()
                await self.changed.wait()


class Recorder(InProcessStream):
    """Keeps every input event (grammar is checked by the base class); a test waits on
    ``until`` for what it expects to arrive instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[InputEvent] = []
        self.audio_chunks = 0
        self.changed = asyncio.Event()
        """Set after every input event is handled, and when the stream is closed."""

    async def send(self, event: InputEvent) -> None:
        self.inputs.append(event)
        try:
            await super().send(event)
        finally:
            self.changed.set()

    async def on_audio(self, pcm: bytes) -> None:
        self.audio_chunks += 1

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self.changed.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def until(self, done: Callable[[Self], bool], timeout: float = 5.0) -> None:
        """Return once ``done(self)`` holds, checked after each input event (fails on timeout)."""
        async with asyncio.timeout(timeout):
            while not done(self):
                self.changed.clear()
                await self.changed.wait()


class OneBackend:
    name = "test"
    input_rate = 16000

    def __init__(self, stream: InProcessStream) -> None:
        self.stream = stream

    async def open(self) -> BackendStream:
        return self.stream

    def credentials_expiration(self) -> None:
        return None

    async def aclose(self) -> None:
        pass
