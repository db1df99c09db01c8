"""Turn events that follow Nova Sonic's documented output, not one stand-in's habits: an AUDIO
contentEnd with PARTIAL_TURN is not the end of a turn, one turn may have several audio contents,
usageEvents come mid-turn, and completionEnd is not promised per turn (it may come once, at the
session's end), so neither turn counting nor renewal's natural points may depend on it."""

from __future__ import annotations

import asyncio
from typing import Any

from voicegate.backends.base import BackendStream
from voicegate.backends.inprocess import InProcessStream
from voicegate.conversation import (
    BotAudioStarted,
    BotText,
    BotTurnDone,
    Conversation,
    ConversationEvent,
    ConversationSettings,
    SessionContinued,
    default_tools,
)
from voicegate.sonic import UsageEvent


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


class Irregular(InProcessStream):
    """Two turns in one completion that never ends; each turn speaks in two audio contents, the
    first ended with PARTIAL_TURN, with a usageEvent between them."""

    def __init__(self, turns: int = 2, final: bool = True) -> None:
        super().__init__()
        self.turns = turns
        self.final = final

    async def on_audio_start(self) -> None:
        self.spawn(self._talk())

    async def _talk(self) -> None:
        for n in range(self.turns):
            await self.emit_text("ASSISTANT", f"turn {n}", stage="SPECULATIVE")
            first = await self.begin_audio()
            await self.emit_audio(first, bytes(960))
            await self.end_audio(first, "PARTIAL_TURN")
            await self.emit(UsageEvent(5, 5, 10, {}, self.ids))
            second = await self.begin_audio()
            await self.emit_audio(second, bytes(960))
            await self.end_audio(second, "END_TURN")
            if self.final:
                await self.emit_text("ASSISTANT", f"turn {n}", stage="FINAL")
        # No completionEnd: AWS does not promise one per turn.


class Backend:
    name = "test"
    input_rate = 16000

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    async def open(self) -> BackendStream:
        return Irregular(**self.kwargs)

    def credentials_expiration(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


async def test_a_turn_ends_once_after_its_last_audio_content_not_at_partial_turn() -> None:
    listener = Listener()
    conv = Conversation(Backend(), ConversationSettings(), default_tools(), listener)
    await conv.start()
    try:
        await listener.until(lambda: len(listener.of(BotText)) == 4)
        kinds = [
            type(e).__name__
            for e in listener.events
            if isinstance(e, BotAudioStarted | BotTurnDone)
        ]
        # One start and one end per turn, though each turn had two audio contents.
        assert kinds == ["BotAudioStarted", "BotTurnDone"] * 2
        assert conv.stats.turns == 2
    finally:
        await conv.close()


async def test_renewal_finds_a_natural_point_without_any_completion_end() -> None:
    """A speculative text whose final never comes, and no completionEnd ever: the renewal still
    happens at a natural point once the stream has gone quiet, instead of being forced."""
    listener = Listener()
    conv = Conversation(
        Backend(turns=1, final=False), ConversationSettings(), default_tools(), listener
    )
    await conv.start()
    try:
        await listener.until(lambda: len(listener.of(BotTurnDone)) == 1)
        async with asyncio.timeout(10):
            await conv.renew(force=False)
        (event,) = listener.of(SessionContinued)
        assert event.kind == "renewal" and not event.forced
        assert conv.stats.renewals_forced == 0
    finally:
        await conv.close()
