"""Retry policy per AWS's error guidance: the first stream is retried too, throttling is backed
off with jitter over seconds (bounded) while the caller is told the assistant is busy, quota and
validation errors are not retried blindly, and "Tool Response parsing error" is recovered."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from tests.support.standin import scripted_without_failures
from voicegate.backends.base import (
    BackendStream,
    QuotaExceeded,
    StreamLost,
    Throttled,
    ValidationFailed,
)
from voicegate.backends.bedrock import BedrockBackend, BedrockSettings
from voicegate.backends.inprocess import InProcessStream
from voicegate.conversation import (
    ContinuationSettings,
    Conversation,
    ConversationError,
    ConversationEvent,
    ConversationSettings,
    SessionContinued,
    default_tools,
)
from voicegate.conversation.recovery import BUSY_MESSAGE, RetryPolicy


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

    async def until(self, done: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()


def test_throttling_backs_off_with_jitter_over_seconds_and_is_bounded() -> None:
    policy = RetryPolicy(ContinuationSettings(), random.Random(7))
    throttled = Throttled("Too many requests")
    delays = [policy.delay(throttled, n) for n in range(1, 7)]
    steps = [1, 2, 4, 8, 10, 10]
    assert all(s / 2 <= d <= s for d, s in zip(delays, steps, strict=True)), delays
    assert policy.attempts(throttled) == 6
    # A send to a stream that died of throttling reports StreamLost: its cause decides.
    lost = StreamLost("Bedrock stream is gone", cause=throttled)
    assert policy.delay(lost, 1) >= 0.5 and policy.attempts(lost) == 6
    assert [policy.delay(StreamLost("reset"), n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert not policy.retryable(QuotaExceeded("quota")) and not policy.retryable(
        ValidationFailed("bad field")
    )


def test_quota_and_tool_response_parsing_errors_are_classified() -> None:
    from voicegate.backends.bedrock.errors import map_error

    class ServiceQuotaExceededException(Exception):  # noqa: N818 - the SDK's name
        pass

    class ValidationException(Exception):  # noqa: N818
        pass

    quota = map_error(ServiceQuotaExceededException("quota"))
    assert isinstance(quota, QuotaExceeded) and not quota.retryable
    parsing = map_error(ValidationException("Tool Response parsing error"))
    assert isinstance(parsing, ValidationFailed) and parsing.retryable
    bytes_ = map_error(ValidationException("Invalid event bytes"))
    assert bytes_.retryable


class Busy:
    """Refuses the first ``refusals`` opens like a throttled account, then serves."""

    name = "test"

    input_rate = 16000

    def __init__(self, refusals: int, error: Any = None) -> None:
        self.refusals = refusals
        self.error = error or Throttled("Too many requests, please wait before trying again.")
        self.opens = 0

    async def open(self) -> BackendStream:
        self.opens += 1
        if self.opens <= self.refusals:
            raise self.error
        return InProcessStream()

    def credentials_expiration(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


def _fast(**kw: Any) -> ConversationSettings:
    return ConversationSettings(
        continuation=ContinuationSettings(throttle_backoff_s=0.02, throttle_backoff_max_s=0.1, **kw)
    )


async def test_a_throttled_first_stream_is_retried_and_the_caller_told_it_is_busy() -> None:
    listener = Listener()
    backend = Busy(refusals=3)
    conv = Conversation(backend, _fast(), default_tools(), listener)
    await conv.start()
    try:
        assert backend.opens == 4 and conv.legs.live is not None
        (busy,) = listener.of(ConversationError)
        assert (busy.kind, busy.message, busy.fatal) == ("throttled", BUSY_MESSAGE, False)
        assert conv.stats.failures["throttled"] == 3
    finally:
        await conv.close()


async def test_a_first_stream_is_not_retried_on_a_quota_or_beyond_the_bound() -> None:
    conv = Conversation(Busy(1, QuotaExceeded("quota")), _fast(), default_tools(), Listener())
    with pytest.raises(QuotaExceeded):
        await conv.start()
    backend = Busy(refusals=100)
    conv = Conversation(backend, _fast(), default_tools(), Listener())
    with pytest.raises(Throttled):
        await conv.start()
    assert backend.opens == 6


class DiesThrottled(InProcessStream):
    async def on_audio_start(self) -> None:
        await self.fail(Throttled("Too many requests"))


async def test_a_live_stream_throttled_recovers_after_a_jittered_backoff() -> None:
    class Backend(Busy):
        async def open(self) -> BackendStream:
            self.opens += 1
            if self.opens == 1:
                return DiesThrottled()
            if self.opens <= 4:
                raise self.error
            return InProcessStream()

    listener = Listener()
    backend = Backend(0)
    conv = Conversation(backend, _fast(recovery_attempts=3), default_tools(), listener)
    await conv.start()
    try:
        await listener.until(lambda: listener.of(SessionContinued))
        (event,) = listener.of(SessionContinued)
        # Four attempts (more than recovery_attempts): throttling has its own, longer budget.
        assert (event.kind, event.reason, event.attempts) == ("recovery", "throttled", 4)
        assert [e.fatal for e in listener.of(ConversationError)] == [False]
    finally:
        await conv.close()


async def test_a_first_stream_the_standin_throttles_is_retried_through_the_sdk(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bedrock_transport: str
) -> None:
    """The stand-in's 429 ThrottlingException at capacity: the second call waits (told the
    assistant is busy) and gets its stream once the first call hangs up."""
    # Irregular output yes; injected stream failures (--standin-quirks) no: a GOAWAY or a
    # transient error on the first call's stream would free the one slot for the second call
    # and leave the first one throttled instead, which is not what this test is about.
    async with scripted_without_failures(tmp_path / "certs", monkeypatch, max_sessions=1) as s:
        backend = BedrockBackend(
            BedrockSettings(region="us-east-1", transport=bedrock_transport, send_timeout=3.0)
        )
        # Backoff long enough (about 3 s in all) for the first call to hang up meanwhile.
        patient = ConversationSettings(
            continuation=ContinuationSettings(throttle_backoff_s=0.3, throttle_backoff_max_s=2.0)
        )
        first = Conversation(backend, patient, default_tools(), Listener())
        listener = Listener()
        second = Conversation(backend, patient, default_tools(), listener)
        try:
            await first.start()
            # With the CRT transport start() returns once the request is sent, before the
            # stand-in has taken the stream: the second call must not race the first for the
            # one slot.
            async with asyncio.timeout(10):
                await s.session(0)
            assert s.active_sessions == 1
            starting = asyncio.ensure_future(second.start())
            await listener.until(lambda: listener.of(ConversationError))
            (busy,) = listener.of(ConversationError)
            assert busy.kind == "throttled" and not busy.fatal
            await first.close()
            async with asyncio.timeout(15):
                await starting
            await listener.until(lambda: second.legs.live is not None and s.active_sessions == 1)
            assert not [e for e in listener.of(ConversationError) if e.fatal]
        finally:
            await first.close()
            await second.close()
            await backend.aclose()
