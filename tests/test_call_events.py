"""Calls publish typed events to their observers; metrics and recording are such observers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.call import (
    BotAudio,
    CallClosing,
    CallEnded,
    CallEvent,
    CallStarted,
    TurnLatency,
    UserAudio,
)
from voicegate.conversation import BotText, ConversationStats, UserTranscript
from voicegate.observability.metrics import GatewayMetrics
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient, load_wav


class Spy:
    """Keeps every event it hears, in order."""

    def __init__(self, wants_audio: bool = True) -> None:
        self.wants_audio = wants_audio
        self.events: list[CallEvent] = []
        self.call_ids: set[str] = set()

    def on_call_event(self, call_id: str, event: CallEvent) -> None:
        self.call_ids.add(call_id)
        self.events.append(event)

    def of(self, kind: type) -> list[CallEvent]:
        return [e for e in self.events if isinstance(e, kind)]


class Broken:
    wants_audio = True

    def __init__(self) -> None:
        self.calls = 0

    def on_call_event(self, call_id: str, event: CallEvent) -> None:
        self.calls += 1
        raise RuntimeError("an observer with a bug")


async def test_observers_hear_the_call_and_a_broken_one_is_dropped(
    speech_wav: Callable[[str], Path],
) -> None:
    speech = load_wav(speech_wav("hello there, who is listening to this call"))
    async with running_server(EchoBackend()) as (url, app):
        client = CallClient(url)
        spy, quiet, broken = Spy(), Spy(wants_audio=False), Broken()
        try:
            async with asyncio.timeout(40):
                await client.connect()
                session = app[SESSIONS][client.pc_id]
                for observer in (broken, spy, quiet):
                    session.observers.add(observer)
                await client.wait_for("bot-ready", 10)
                client.mic.play(speech)
                await client.wait_for("bot-stopped-speaking", 20)
                assert await client.hangup() == 204
        finally:
            await client.close()
    # The broken observer raised once and heard nothing more; the call went on regardless.
    assert broken.calls == 1
    assert spy.call_ids == {client.pc_id}
    assert spy.of(UserAudio) and spy.of(BotAudio)
    assert not quiet.of(UserAudio) and not quiet.of(BotAudio)  # audio only when asked for
    user_pcm = sum(len(e.pcm) for e in spy.of(UserAudio) if isinstance(e, UserAudio))
    assert user_pcm / 2 / 16000 > 1.0  # 16 kHz mono s16: the whole utterance went by
    assert [e for e in spy.of(UserTranscript) if isinstance(e, UserTranscript) and e.final]
    assert [e for e in spy.of(BotText) if isinstance(e, BotText) and e.final]
    latencies = spy.of(TurnLatency)
    assert len(latencies) == 1
    for observer in (spy, quiet):
        closing, ended = observer.of(CallClosing), observer.of(CallEnded)
        assert len(closing) == 1 and len(ended) == 1
        assert observer.events[-1] == ended[0]  # always last
        assert observer.events.index(closing[0]) < observer.events.index(ended[0])
        assert isinstance(ended[0], CallEnded) and ended[0].reason == "hangup"
        assert not ended[0].handed_over and ended[0].seconds > 0
    # Nothing audio-like after the call closed.
    after = spy.events[spy.events.index(spy.of(CallClosing)[0]) :]
    assert not [e for e in after if isinstance(e, UserAudio | BotAudio)]


def test_metrics_count_a_call_once_across_a_reconnect() -> None:
    metrics = GatewayMetrics()
    stats = ConversationStats(turns=3)
    metrics.on_call_event("pc-1", CallStarted())
    metrics.on_call_event("pc-1", CallEnded("restart", 4.0, stats, handed_over=True))
    assert metrics.calls_ended.value(reason="restart") == 0
    metrics.on_call_event("pc-1", CallStarted(restart=True))
    metrics.on_call_event("pc-1", TurnLatency(0.5, 0.3))
    metrics.on_call_event("pc-1", CallEnded("hangup", 9.0, stats))
    metrics.on_call_event("never-started", CallEnded("bad-offer", 0.1, stats))
    assert metrics.calls_ended.value(reason="hangup") == 1
    assert metrics.calls_ended.value(reason="bad-offer") == 0
    assert metrics.turn_latency.count(stage="playout") == 1
    assert "voicegate_conversation_turns_total 3" in metrics.render()
