"""Model usage: Nova Sonic's usageEvent deltas summed over every stream of a call (its running
totals restart on each stream), split by direction and modality, to the page (RTVI ``metrics``)
and to /metrics (``voicegate_model_tokens_total{direction,modality}``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from voicegate.backends.base import BackendStream
from voicegate.backends.inprocess import InProcessStream
from voicegate.call.rtvi import conversation_message
from voicegate.conversation import (
    Conversation,
    ConversationEvent,
    ConversationSettings,
    SessionContinued,
    Tokens,
    Usage,
    default_tools,
)
from voicegate.observability.metrics import GatewayMetrics
from voicegate.sonic import UsageEvent


def _usage(delta: tuple[int, int, int, int] | None, total: tuple[int, int, int, int]) -> Any:
    def part(v: tuple[int, int, int, int]) -> dict[str, Any]:
        return {
            "input": {"speechTokens": v[0], "textTokens": v[1]},
            "output": {"speechTokens": v[2], "textTokens": v[3]},
        }

    details: dict[str, Any] = {"total": part(total)}
    if delta is not None:
        details["delta"] = part(delta)
    return UsageEvent(total[0] + total[1], total[2] + total[3], sum(total), details)


class Counting(InProcessStream):
    """Reports usage twice per stream, mid-turn, with running totals that start at zero on
    every stream (as Bedrock's do)."""

    def __init__(self, with_delta: bool) -> None:
        super().__init__()
        self.with_delta = with_delta

    async def on_audio_start(self) -> None:
        d = None if not self.with_delta else (10, 1, 20, 2)
        await self.emit(_usage(d, (10, 1, 20, 2)))
        await self.emit(_usage(None if d is None else (5, 0, 7, 1), (15, 1, 27, 3)))


class Backend:
    name = "test"
    input_rate = 16000

    def __init__(self, with_delta: bool) -> None:
        self.with_delta = with_delta

    async def open(self) -> BackendStream:
        return Counting(self.with_delta)

    def credentials_expiration(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


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

    async def until(self, done: Any) -> None:
        async with asyncio.timeout(5):
            while not done():
                self.changed.clear()
                await self.changed.wait()


async def _two_streams(with_delta: bool) -> tuple[Conversation, list[Usage]]:
    listener = Listener()
    conv = Conversation(Backend(with_delta), ConversationSettings(), default_tools(), listener)
    await conv.start()
    try:
        usages = lambda: [e for e in listener.events if isinstance(e, Usage)]  # noqa: E731
        await listener.until(lambda: len(usages()) == 2)
        await conv.renew()
        await listener.until(lambda: len(usages()) == 4)
        assert any(isinstance(e, SessionContinued) for e in listener.events)
    finally:
        await conv.close()
    return conv, usages()


async def test_usage_is_the_sum_of_deltas_over_every_stream_of_the_call() -> None:
    for with_delta in (True, False):  # without a delta: the growth of the stream's totals
        conv, usages = await _two_streams(with_delta)
        assert [u.input_tokens for u in usages] == [11, 16, 27, 32]  # never drops back
        assert [u.delta for u in usages][:2] == [Tokens(10, 1, 20, 2), Tokens(5, 0, 7, 1)]
        assert usages[-1].split == Tokens(30, 2, 54, 6) == conv.stats.tokens
        assert usages[-1].total_tokens == 92 and usages[-1].output_tokens == 60


def test_usage_reaches_the_page_split_by_modality() -> None:
    event = Usage(32, 60, 92, Tokens(30, 2, 54, 6), Tokens(5, 0, 7, 1))
    msg = json.loads(conversation_message(event, "user") or "{}")
    assert msg["type"] == "metrics"
    assert msg["data"]["usage"] == {
        "input_tokens": 32,
        "output_tokens": 60,
        "total_tokens": 92,
        "input_speech_tokens": 30,
        "input_text_tokens": 2,
        "output_speech_tokens": 54,
        "output_text_tokens": 6,
    }


def test_model_tokens_counter_adds_the_deltas() -> None:
    metrics = GatewayMetrics()
    metrics.on_call_event("a", Usage(16, 30, 46, Tokens(15, 1, 27, 3), Tokens(15, 1, 27, 3)))
    metrics.on_call_event("b", Usage(5, 8, 13, Tokens(5, 0, 7, 1), Tokens(5, 0, 7, 1)))
    text = metrics.render()
    want = {
        ("input", "speech"): 20,
        ("input", "text"): 1,
        ("output", "speech"): 34,
        ("output", "text"): 4,
    }
    for (direction, modality), n in want.items():
        line = f'voicegate_model_tokens_total{{direction="{direction}",modality="{modality}"}}'
        assert any(
            row.startswith(line) and float(row.split()[-1]) == n for row in text.splitlines()
        ), (line, n)
    assert "# TYPE voicegate_model_tokens_total counter" in text
