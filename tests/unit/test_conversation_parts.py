"""The parts a ``Conversation`` is built from, each on its own: ``CallMemory``, ``Legs``,
``Lifecycle``, ``Recovery`` and ``Renewal``, against small in-process streams."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from voicegate.backends.base import AccessDenied, BackendStream, Throttled
from voicegate.backends.inprocess import InProcessStream
from voicegate.conversation import (
    ContinuationSettings,
    ConversationEnded,
    ConversationError,
    ConversationEvent,
    ConversationSettings,
    ConversationStats,
    SessionContinued,
)
from voicegate.conversation.legs import (
    REPLAY_MAX_DELAY_S,
    REPLAY_PACE,
    Leg,
    Legs,
    Lifecycle,
    TurnState,
    replay_pace,
)
from voicegate.conversation.memory import CallMemory
from voicegate.conversation.recovery import Recovery
from voicegate.conversation.renewal import Renewal
from voicegate.conversation.tools import default_tools
from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    ContentEnd,
    InputEvent,
    PromptEnd,
    PromptStart,
    SessionEnd,
    SessionStart,
    TextContentStart,
    TextInput,
)


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

    async def wait(self, kind: type) -> ConversationEvent:
        async with asyncio.timeout(5):
            while True:
                for e in self.events:
                    if isinstance(e, kind):
                        return e
                self.changed.clear()
                await self.changed.wait()


class Recorder(InProcessStream):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[InputEvent] = []

    async def send(self, event: InputEvent) -> None:
        self.inputs.append(event)
        await super().send(event)
        await asyncio.sleep(0)  # let a concurrent sender try to get in between


class Backend:
    name = "test"
    input_rate = 16000

    def __init__(self, expiration: dt.datetime | None = None) -> None:
        self.opened: list[Recorder] = []
        self.expiration = expiration
        self.refuse: Exception | None = None

    async def open(self) -> BackendStream:
        if self.refuse is not None:
            raise self.refuse
        stream = Recorder()
        self.opened.append(stream)
        return stream

    def credentials_expiration(self) -> dt.datetime | None:
        return self.expiration

    async def aclose(self) -> None:
        pass


class Hooks:
    def __init__(self) -> None:
        self.opened: list[Leg] = []
        self.live: list[Leg] = []

    def leg_opened(self, leg: Leg) -> None:
        self.opened.append(leg)

    def leg_went_live(self, leg: Leg) -> None:
        self.live.append(leg)


def _parts(
    backend: Backend, **continuation: float
) -> tuple[Legs, CallMemory, Lifecycle, Recovery, Renewal, TurnState, Hooks, Listener]:
    c = ContinuationSettings(**continuation)  # type: ignore[arg-type]
    stats = ConversationStats()
    listener = Listener()
    life = Lifecycle(listener)
    hooks = Hooks()
    legs = Legs(backend, ConversationSettings(continuation=c), default_tools(), stats, life, hooks)
    memory = CallMemory(c, stats)
    lost: list[Leg] = []
    recovery = Recovery(legs, memory, c, stats, life, lambda leg, why: lost.append(leg))
    turn = TurnState()
    renewal = Renewal(legs, memory, c, stats, life, recovery, turn, lambda leg, why: None)
    return legs, memory, life, recovery, renewal, turn, hooks, listener


# -- CallMemory ----------------------------------------------------------------------------------


def test_memory_merges_neighbours_versions_changes_and_tells_its_observer() -> None:
    memory = CallMemory(ContinuationSettings(), ConversationStats())
    told: list[int] = []
    memory.on_history = lambda: told.append(memory.version)
    memory.remember("USER", "hello")
    memory.remember("USER", "there")
    memory.remember("ASSISTANT", "hi")
    assert memory.history == [("USER", "hello there"), ("ASSISTANT", "hi")]
    assert told == [1, 2, 3]


def test_memory_takes_an_unanswered_turn_out_of_the_history_to_resend_it() -> None:
    memory = CallMemory(ContinuationSettings(), ConversationStats())
    memory.remember("USER", "what time is it")
    memory.remember("ASSISTANT", "noon")
    memory.remember("USER", "and the date")
    history, audio, resend = memory.recovery_payload()
    assert resend is None  # nobody said it was unanswered
    memory.unanswered = True
    history, audio, resend = memory.recovery_payload()
    assert history == [("USER", "what time is it"), ("ASSISTANT", "noon")]
    assert resend == "and the date" and audio == []
    size, ms = memory.account(history, [bytes(3200)])
    assert size == len("what time is itnoon") and ms == 100.0


# -- Lifecycle -----------------------------------------------------------------------------------


async def test_lifecycle_reports_one_end_and_a_fatal_error_before_it() -> None:
    listener = Listener()
    life = Lifecycle(listener)
    life.fatal(AccessDenied("no keys"))
    life.finish("hangup")
    assert [type(e) for e in listener.events] == [ConversationError, ConversationEnded]
    assert life.end_reason == "error:access_denied" and life.changed.is_set()


# -- Legs ----------------------------------------------------------------------------------------


async def test_legs_open_set_up_go_live_and_close_in_order() -> None:
    backend = Backend()
    legs, *_, hooks, _ = _parts(backend)
    leg = await legs.open()
    assert hooks.opened == [leg] and legs.live is None
    await legs.go_live(leg, [("USER", "hi"), ("ASSISTANT", "hello")], [bytes(5000)])
    assert legs.live is leg and hooks.live == [leg] and leg.ready_at is not None
    async with asyncio.timeout(5):
        await leg.caught_up.wait()  # the replay is paced in the background
    inputs = backend.opened[0].inputs
    kinds = [type(e) for e in inputs]
    assert kinds[:2] == [SessionStart, PromptStart]
    assert kinds.index(AudioContentStart) > kinds.index(TextInput)
    assert [len(e.content) for e in inputs if isinstance(e, AudioInput)] == [4096, 904]
    await legs.close(leg)
    assert [type(e) for e in inputs[-3:]] == [ContentEnd, PromptEnd, SessionEnd]
    assert leg.dead and not legs.open_legs


def test_the_replay_pace_bounds_what_it_holds_back() -> None:
    assert replay_pace(0.3) == REPLAY_PACE
    for seconds in (0.3, 1.0, 2.0, 8.0):
        assert seconds / replay_pace(seconds) <= REPLAY_MAX_DELAY_S + 1e-9


async def test_audio_spoken_during_a_paced_replay_follows_it_in_order() -> None:
    backend = Backend()
    legs, *_ = _parts(backend)
    leg = await legs.open()
    replay = [bytes([n]) * 640 for n in range(1, 21)]  # 0.4 s, in 20 ms chunks
    await legs.go_live(leg, [], replay)
    assert legs.live is leg and not leg.caught_up.is_set()
    live = [bytes([100 + n]) * 640 for n in range(5)]
    for pcm in live:
        assert legs.take_audio(leg, pcm)  # queued behind the replay, not sent past it
    async with asyncio.timeout(5):
        await leg.caught_up.wait()
    assert not legs.take_audio(leg, b"\x00" * 640)  # caught up: audio goes out as it comes
    sent = b"".join(e.content for e in backend.opened[0].inputs if isinstance(e, AudioInput))
    assert sent == b"".join(replay + live)


async def test_a_block_is_never_split_by_a_concurrent_sender() -> None:
    backend = Backend()
    legs, *_ = _parts(backend)
    leg = await legs.open()
    await legs.go_live(leg, [], [])

    async def audio() -> None:
        for _ in range(20):
            await legs.send(leg, legs.audio(bytes(640)))

    await asyncio.gather(audio(), legs.send(leg, *legs.user_text_block("x" * 3000)), audio())
    inputs = backend.opened[0].inputs
    start = next(
        i for i, e in enumerate(inputs) if isinstance(e, TextContentStart) and e.interactive
    )
    block = inputs[start : start + 5]
    assert [type(e) for e in block] == [
        TextContentStart,
        TextInput,
        TextInput,
        TextInput,
        ContentEnd,
    ]


# -- Recovery ------------------------------------------------------------------------------------


async def test_recovery_replaces_a_failed_live_leg_with_history_and_reports_it() -> None:
    backend = Backend()
    legs, memory, life, recovery, _, _, _, listener = _parts(backend, recovery_confirm_s=0.05)
    memory.remember("USER", "hi")
    memory.remember("ASSISTANT", "hello")
    leg = await legs.open()
    await legs.go_live(leg, [], [])
    recovery.leg_failed(leg, Throttled("slow down"))
    assert legs.live is None and recovery.recovering
    event = await listener.wait(SessionContinued)
    assert isinstance(event, SessionContinued)
    assert (event.kind, event.reason, event.leg, event.history_messages) == (
        "recovery",
        "throttled",
        2,
        2,
    )
    assert legs.live is not None and legs.live.number == 2 and not recovery.recovering
    await asyncio.gather(*life.tasks, return_exceptions=True)


async def test_recovery_ends_the_call_on_a_failure_it_cannot_retry() -> None:
    backend = Backend()
    legs, _, life, recovery, *_, listener = _parts(backend)
    leg = await legs.open()
    await legs.go_live(leg, [], [])
    recovery.leg_failed(leg, AccessDenied("denied"))
    assert life.ended.is_set() and life.end_reason == "error:access_denied"
    assert len(backend.opened) == 1


# -- Renewal -------------------------------------------------------------------------------------


async def test_renewal_finds_natural_points_from_the_turn_and_the_user() -> None:
    backend = Backend()
    legs, memory, _, _, renewal, turn, _, _ = _parts(backend)
    leg = await legs.open()
    await legs.go_live(leg, [], [])
    memory.replay.add(bytes(16000))  # a second of silence: the user is quiet
    assert renewal.natural_point(leg)
    turn.speculative_open = 1
    assert not renewal.natural_point(leg)
    turn.speculative_open = 0
    turn.reply_expected_at = asyncio.get_running_loop().time()
    assert not renewal.natural_point(leg) and renewal.natural_point(leg, quiet=True) is False
    turn.reply_expected_at = None
    memory.replay.add(b"\x00\x40" * 1600)  # the user speaks
    assert not renewal.natural_point(leg) and renewal.natural_point(leg, quiet=False)


async def test_renewal_is_due_by_age_or_before_the_credentials_expire() -> None:
    backend = Backend()
    legs, _, _, _, renewal, *_ = _parts(backend, renew_after_s=360)
    leg = await legs.open()
    await legs.go_live(leg, [], [])
    assert leg.ready_at is not None
    due, reason = renewal.due(leg)
    assert reason == "age" and due - leg.ready_at == pytest.approx(360)
    backend.expiration = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=300)
    due, reason = renewal.due(leg)
    assert reason == "credentials" and due - leg.ready_at == pytest.approx(120, abs=5)


def test_recovery_after_a_lost_connection_is_spread() -> None:
    """Calls that lost a shared connection wait a random delay up to recovery_spread_s before
    their first reconnect (not all in the same instant); other failures do not wait."""
    import random

    from voicegate.backends.base import StreamLost, ValidationFailed
    from voicegate.conversation import ContinuationSettings
    from voicegate.conversation.recovery import RetryPolicy

    policy = RetryPolicy(ContinuationSettings(recovery_spread_s=0.5), random.Random(7))
    delays = [policy.spread(StreamLost("GOAWAY")) for _ in range(50)]
    assert all(0 <= d <= 0.5 for d in delays) and len(set(delays)) == 50
    assert max(delays) - min(delays) > 0.25
    assert policy.spread(ValidationFailed("bad")) == 0.0
