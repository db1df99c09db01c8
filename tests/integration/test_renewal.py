"""Stream renewal past the model's session limit.

The long test is a whole call through the production path (aiortc peer -> voicegate -> the real
AWS SDK -> the stand-in with a 15 s session limit) that runs for over a minute; the others drive
the conversation layer against small in-process brains.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.conversation import Listener, OneBackend, Recorder
from tests.support.server import running_server
from tests.support.standin import scripted_without_failures
from voicegate.backends.base import BackendStream
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.backends.inprocess import InProcessStream
from voicegate.conversation import (
    Conversation,
    ConversationEvent,
    ConversationSettings,
    SessionContinued,
)
from voicegate.conversation.continuation import ContinuationSettings
from voicegate.conversation.tools import default_tools
from voicegate.media.playout import MAX_LATE
from voicegate.signaling.app import SESSIONS
from voicegate.sonic import AudioInput, TextContentStart
from voicegate.standin import StandIn
from voicegate.testing.client import CallClient, load_wav

HEARD = re.compile(r"stand-in heard ([0-9.]+) s of speech")


@pytest.fixture
async def standin(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bedrock_transport: str
) -> AsyncIterator[StandIn]:
    # Irregular output (--standin-quirks) yes; injected stream failures no: this module
    # measures renewals' own seamlessness (zero recoveries), recovery is test_reconnect's.
    async with scripted_without_failures(tmp_path / "certs", monkeypatch, session_limit=15) as s:
        yield s


def _backend(transport: str) -> BedrockBackend:
    return BedrockBackend(
        BedrockSettings(
            region="us-east-1", send_timeout=3.0, close_timeout=1.0, transport=transport
        )
    )


async def test_a_call_outlives_four_model_streams_without_losing_a_word(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str
) -> None:
    speech = load_wav(speech_wav("hello, can you hear me"))
    utterances = 12
    async with running_server(
        _backend(bedrock_transport),
        system_prompt="scenario:reply",
        renew_after=7.0,
        renew_force_after=5.0,
    ) as (url, app):
        client = CallClient(url)
        loop = asyncio.get_running_loop()
        handovers: list[float] = []
        frames: list[tuple[float, bool]] = []
        try:
            async with asyncio.timeout(150):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                session = app[SESSIONS][client.pc_id]
                conv = session.conversation
                real_on_event, real_take = session.on_event, session.playout._take

                def on_event(event: ConversationEvent) -> None:
                    if isinstance(event, SessionContinued):
                        handovers.append(loop.time())
                    real_on_event(event)

                def take() -> Any:
                    pcm = real_take()
                    frames.append((loop.time(), pcm is not None))
                    return pcm

                session.on_event = on_event  # type: ignore[method-assign]
                session.playout._take = take  # type: ignore[method-assign]
                t_start = loop.time()
                for i in range(utterances):
                    client.mic.play(speech)
                    if i == 5:
                        # A renewal forced while the user is mid-sentence: the new stream must
                        # hear the whole sentence, the old one must not transcribe half of it.
                        await asyncio.sleep(0.9)
                        await conv.renew(force=True)
                    await client.wait_for(
                        "bot-transcription", 20, lambda m, n=i: _count(client, m) == n + 1
                    )
                    await asyncio.sleep(1.5)
                # Then silence: renewals happen while nobody speaks, too.
                await asyncio.sleep(max(0.0, 62 - (loop.time() - t_start)))
                assert conv.stats.renewals >= 4
                await asyncio.sleep(0.5)
            stats = conv.stats
            user = [m["data"]["text"] for m in client.of_type("user-transcription")]
            heard = [float(HEARD.search(t).group(1)) for t in user if HEARD.search(t)]  # type: ignore[union-attr]
            # Every sentence transcribed exactly once, each one whole (the first one, before any
            # renewal, is the reference).
            assert len(user) == len(heard) == utterances, user
            assert all(abs(h - heard[0]) <= 0.25 for h in heard), heard
            assert len(_replies(client)) == utterances
            assert not client.of_type("error")
            renewals = [
                m["data"]
                for m in client.of_type("server-message")
                if m["data"]["kind"] == "renewal"
            ]
            assert len(renewals) == stats.renewals >= 4
            assert any(r["forced"] and r["replayed_ms"] > 0 for r in renewals)
            assert stats.recoveries == 0 and not stats.failures
            assert stats.history_bytes_replayed > 0
            # Each Bedrock stream was renewed before the stand-in's limit ended it.
            assert all(
                r.closed_in_order() or r.outcome == "open" for r in list(standin.sessions)
            ), [r.outcome for r in standin.sessions]
            assert len(standin.sessions) >= stats.renewals + 1

            # The outbound track kept its pace across every handover: within 0.5 s of each one
            # it handed out a frame for every 20 ms slot (no stall, no re-anchored clock), and no
            # frame came later than one frame beyond pacing. A loaded test machine stalls the
            # loop now and then wherever the call is, so each handover window is held to the
            # worst 1 s window away from any handover (a quiet machine: the strict bound).
            def gaps(lo: float, hi: float) -> list[float]:
                times = [t for t, _ in frames if lo <= t <= hi]
                return [b - a for a, b in zip(times, times[1:], strict=False)]

            def missing(near: list[float]) -> float:
                return sum(near) / 0.020 - len(near)  # 20 ms slots without a frame

            windows = [(at - 0.5, at + 0.5) for at in handovers]
            quiet_windows = [
                (lo, lo + 1.0)
                for lo in itertools.takewhile(
                    lambda t: t + 1.0 <= frames[-1][0],
                    itertools.count(frames[0][0], 1.0),
                )
                if not any(lo <= hi2 and lo + 1.0 >= lo2 for lo2, hi2 in windows)
            ]
            assert quiet_windows, "the call had no second away from a handover"
            worst = [gaps(lo, hi) for lo, hi in quiet_windows]
            # (plus one frame: on a loaded machine the worst stall may fall in either window)
            allowed_gap = max(0.040 + 0.005, *(max(g) for g in worst if g)) + 0.020
            allowed_missing = max(0.0, *(missing(g) for g in worst)) + 2
            for lo, hi in windows:
                near = gaps(lo, hi)
                assert missing(near) <= allowed_missing, (missing(near), allowed_missing)
                assert max(near) <= allowed_gap, (max(near), allowed_gap)
            if max(max(g) for g in worst if g) < MAX_LATE:
                # No stall away from the handovers, so none may have re-anchored the clock.
                assert session.playout.resyncs == 0
            print(
                f"renewals={stats.renewals} forced={stats.renewals_forced} "
                f"gaps_ms={list(stats.handover_gaps_ms)} prepare_ms={list(stats.prepare_ms)} "
                f"max_frame_gap_near={max(max(gaps(lo, hi)) for lo, hi in windows):.3f} "
                f"allowed={allowed_gap:.3f} resyncs={session.playout.resyncs}"
            )
            assert await client.hangup() == 204
        finally:
            await client.close()


def _replies(client: CallClient) -> list[dict[str, Any]]:
    """The final texts that end a reply: one per turn, however many texts (audio contents)
    the model says it in (the stand-in's replies end "This is reply N.")."""
    return [m for m in client.of_type("bot-transcription") if "reply" in m["data"]["text"]]


def _count(client: CallClient, _msg: dict[str, Any]) -> int:
    return len(_replies(client))


# -- the conversation layer against in-process brains ------------------------------------------


class Counting(Recorder):
    """Echoes every history block it was given as an ASSISTANT text (so a test can see it)."""

    async def on_audio_start(self) -> None:
        await self.emit_text("ASSISTANT", f"history={len(self.history)}")


class Streams:
    name = "test"
    input_rate = 16000

    def __init__(self) -> None:
        self.opened: list[Recorder] = []

    async def open(self) -> BackendStream:
        stream = Counting()
        self.opened.append(stream)
        return stream

    def credentials_expiration(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


def _settings(**overrides: Any) -> ConversationSettings:
    return ConversationSettings(continuation=ContinuationSettings(**overrides))


async def test_renewal_by_age_replays_history_and_closes_the_old_stream_in_order() -> None:
    backend = Streams()
    listener = Listener()
    conv = Conversation(backend, _settings(renew_after_s=0.4), default_tools(), listener)
    conv.memory.remember("ASSISTANT", "greeting first")  # dropped: history must start with USER
    conv.memory.remember("USER", "what time is it")
    conv.memory.remember("ASSISTANT", "noon")
    await conv.start()
    try:
        event = await listener.wait(SessionContinued)
        assert isinstance(event, SessionContinued)
        assert event.kind == "renewal" and event.reason == "age" and not event.forced
        old, new = backend.opened[0], backend.opened[1]
        # The first stream's own words ("history=0") joined the history before the renewal.
        assert new.history == [("USER", "what time is it"), ("ASSISTANT", "noon history=0")]
        assert event.history_messages == 2
        assert event.history_bytes == sum(len(t.encode()) for _, t in new.history)
        texts = [e for e in new.inputs if isinstance(e, TextContentStart) and e.role != "SYSTEM"]
        assert texts and not any(e.interactive for e in texts)  # never re-answered
        await old.until(lambda s: s.closed)  # closed in the background, in order
        assert old._closed
        names = [type(e).__name__ for e in old.inputs[-3:]]
        assert names == ["ContentEnd", "PromptEnd", "SessionEnd"]
        # User audio now flows to the new stream only.
        sent_old = sum(isinstance(e, AudioInput) for e in old.inputs)
        sent_new = sum(isinstance(e, AudioInput) for e in new.inputs)
        await new.until(lambda s: sum(isinstance(e, AudioInput) for e in s.inputs) >= sent_new + 5)
        assert sum(isinstance(e, AudioInput) for e in old.inputs) == sent_old
        assert sum(isinstance(e, AudioInput) for e in new.inputs) > 0
        assert conv.stats.renewals >= 1 and conv.stats.handover_gaps_ms
    finally:
        await conv.close()
    assert all(s._closed for s in backend.opened)


class Busy(InProcessStream):
    """An assistant turn that never ends: no natural point ever comes."""

    async def on_audio_start(self) -> None:
        self.spawn(self._talk())

    async def _talk(self) -> None:
        cid = await self.begin_audio()
        while True:
            await self.emit_audio(cid, bytes(960))
            await asyncio.sleep(0.02)


async def test_without_a_natural_point_the_renewal_is_forced() -> None:
    class Backend:
        name = "test"
        input_rate = 16000

        async def open(self) -> BackendStream:
            return Busy()

        def credentials_expiration(self) -> None:
            return None

        async def aclose(self) -> None:
            pass

    listener = Listener()
    conv = Conversation(
        Backend(), _settings(renew_after_s=0.3, force_after_s=0.5), default_tools(), listener
    )
    await conv.start()
    try:
        event = await listener.wait(SessionContinued)
        assert isinstance(event, SessionContinued) and event.forced
        assert conv.stats.renewals_forced == 1
    finally:
        await conv.close()


async def test_renewal_never_cuts_into_a_tool_call() -> None:
    conv = Conversation(OneBackend(Recorder()), _settings(), default_tools(), Listener())
    await conv.start()
    try:
        leg = conv.legs.live
        assert leg is not None
        conv.memory.replay.quiet_samples = 16000
        assert conv.renewal.natural_point(leg)
        leg.running_tools = 1
        assert not conv.renewal.natural_point(leg)
        leg.running_tools = 0
        conv.turn.speculative_open = 1  # the assistant is still speaking its turn
        assert not conv.renewal.natural_point(leg)
    finally:
        await conv.close()


async def test_renewal_comes_before_temporary_credentials_expire() -> None:
    class Expiring(Streams):
        expiration = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=300)

        def credentials_expiration(self) -> dt.datetime | None:
            return self.expiration

    conv = Conversation(Expiring(), _settings(renew_after_s=360), default_tools(), Listener())
    await conv.start()
    try:
        leg = conv.legs.live
        assert leg is not None and leg.ready_at is not None
        due, reason = conv.renewal.due(leg)
        assert reason == "credentials"
        assert 300 - 180 - 5 <= due - leg.ready_at <= 300 - 180  # 3 minutes of margin
        Expiring.expiration = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
        due, reason = conv.renewal.due(leg)
        assert due - leg.ready_at == pytest.approx(60.0)  # never a renewal storm
    finally:
        await conv.close()


def test_options_reach_the_conversation_and_are_validated() -> None:
    from voicegate.config import ConfigError, resolve
    from voicegate.signaling.app import conversation_settings

    env = {"VOICEGATE_RENEW_AFTER": "300", "VOICEGATE_RECOVERY_ATTEMPTS": "5"}
    c = conversation_settings(resolve(None, env=env)).continuation
    assert (c.renew_after_s, c.force_after_s, c.recovery_attempts) == (300.0, 60.0, 5)
    for bad in (
        {"VOICEGATE_RENEW_AFTER": "480"},  # Bedrock would end the stream first
        {"VOICEGATE_RENEW_AFTER": "400", "VOICEGATE_RENEW_FORCE_AFTER": "100"},
        {"VOICEGATE_RECOVERY_ATTEMPTS": "-1"},
        {"VOICEGATE_RECONNECT_GRACE": "9999"},
    ):
        with pytest.raises(ConfigError):
            resolve(None, env=bad)
