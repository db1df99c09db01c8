"""Recovery: replacing a conversation's live model stream when it fails.

A stream that dies (reset, throttling, a transient validation error, the session limit) is
replaced with bounded, backed-off attempts; the prepared next leg of a renewal, if there is one,
is tried first. The replacement gets the shaped history and the user's untranscribed audio, and a
user turn the failed stream never answered is re-sent as interactive text so the model answers
it. A replacement counts only once it survived a moment (Bedrock refuses streams after opening
them). Failures that cannot be retried, or too many attempts, end the call with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

import structlog

from voicegate.backends.base import BackendError, StreamLost, Throttled, ValidationFailed
from voicegate.conversation.continuation import ContinuationSettings
from voicegate.conversation.events import ConversationError, ConversationStats, SessionContinued
from voicegate.conversation.legs import SETUP_TIMEOUT, Leg, Legs, Lifecycle
from voicegate.conversation.memory import CallMemory

__all__ = [
    "BUSY_MESSAGE",
    "LostTools",
    "Recovery",
    "RetryPolicy",
]

log = structlog.get_logger(__name__)

LostTools = Callable[[Leg, str], None]
"""Tells the dialogue that the tool calls a leg asked for can no longer be answered on it."""


BUSY_MESSAGE = "The assistant is busy right now; trying again."


class RetryPolicy:
    """When and how long to wait before opening another stream, per AWS's error guidance
    (docs/bedrock.md, "Retry policy"): throttling is retried with exponential backoff and
    jitter over seconds (bounded); other retryable failures (stream loss, internal and
    transient errors) quickly; everything else (validation, access, quota) not at all."""

    def __init__(self, settings: ContinuationSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()

    def attempts(self, exc: BackendError) -> int:
        """How many attempts a failure like ``exc`` gets in all."""
        c = self.settings
        if isinstance(exc.reason, Throttled):
            return max(c.recovery_attempts, c.throttle_attempts)
        return c.recovery_attempts

    def retryable(self, exc: BackendError) -> bool:
        return exc.retryable and exc.reason.retryable

    def delay(self, exc: BackendError, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed so far)."""
        c = self.settings
        if isinstance(exc.reason, Throttled):
            # "Equal jitter": at least half the exponential step, so calls throttled together
            # spread out but none retries at once (AWS Architecture Blog, "Exponential Backoff
            # And Jitter").
            step = min(c.throttle_backoff_max_s, c.throttle_backoff_s * 2.0 ** (attempt - 1))
            return step / 2 + self._rng.uniform(0, step / 2)
        return c.recovery_backoff_s * 2.0 ** (attempt - 1)

    def spread(self, exc: BackendError) -> float:
        """Seconds to wait before the first reconnect: a stream lost (with its connection,
        which other calls shared) waits "full jitter" up to ``recovery_spread_s``; anything
        else not at all."""
        if isinstance(exc.reason, StreamLost):
            return self._rng.uniform(0, self.settings.recovery_spread_s)
        return 0.0


class Recovery:
    """Replaces the live leg when it fails; ``leg_failed`` is where every failure is reported."""

    def __init__(
        self,
        legs: Legs,
        memory: CallMemory,
        settings: ContinuationSettings,
        stats: ConversationStats,
        life: Lifecycle,
        lost_tools: LostTools,
    ) -> None:
        self.legs = legs
        self.memory = memory
        self.settings = settings
        self.stats = stats
        self.life = life
        self.lost_tools = lost_tools
        self.policy = RetryPolicy(settings)
        self.recovering = False
        """A replacement is being set up: renewal waits, failures of the probation leg count as
        attempts."""
        self._attempts_used = 0
        self._told_busy = False

    def leg_failed(self, leg: Leg, exc: BackendError) -> None:
        """``leg`` failed (a send or its output raised): drop it, and replace it if it was the
        live one and the failure can be retried."""
        legs = self.legs
        if leg.dead and leg is not legs.live:
            return
        if self._history_refused(leg, exc):
            log.warning(
                "history_refused",
                messages=leg.history_sent,
                now_at_most=self.memory.max_messages,
                error=exc.message,
            )
            self.stats.history_refusals += 1
            exc = StreamLost(f"the model refused the call's history: {exc.message}")
        was_live = leg is legs.live and not leg.retired
        leg.dead = True
        if self.life.ended.is_set():
            return
        if self.life.closing:
            if was_live:
                self.life.finish("closed")
            return
        if leg is legs.next:
            legs.next = None
            self.stats.prepare_failures += 1
            log.warning("prepared_stream_failed", kind=exc.kind, error=exc.message)
            self.life.spawn(legs.drop(leg))
            return
        if not was_live:
            self.life.spawn(legs.drop(leg))
            return
        # From here on user audio only goes into the replay buffer, for the next leg.
        legs.live = None
        leg.retired = True
        leg.error = exc
        leg.failed.set()
        if self.recovering:
            return  # a leg still on probation: the recovery loop counts it as an attempt
        self.stats.failures[exc.reason.kind] += 1
        if not self.policy.retryable(exc) or self.policy.attempts(exc) <= 0:
            self.life.fatal(exc.reason, exc.message)
            return
        self.recovering = True
        self.life.spawn(self._recover(leg, exc), name="recovery")

    async def wait_before_retry(self, exc: BackendError, attempt: int) -> None:
        """Back off before another attempt; when the service throttles, the caller is told the
        assistant is busy (once per episode) instead of hearing unexplained silence."""
        if isinstance(exc.reason, Throttled) and not self._told_busy:
            self._told_busy = True
            self.life.listener.on_event(ConversationError("throttled", BUSY_MESSAGE, fatal=False))
        await asyncio.sleep(self.policy.delay(exc, attempt))

    def _history_refused(self, leg: Leg, exc: BackendError) -> bool:
        """A stream that got history and failed with a validation error before any output:
        taken as a refused history (AWS documents its size limits, not the error they give),
        so the call carries on with a shorter one, then none, instead of ending."""
        return (
            isinstance(exc, ValidationFailed)
            and not exc.retryable
            and leg.history_sent > 0
            and not leg.output_seen
            and self.memory.refused(leg.history_sent)
        )

    async def _recover(self, failed: Leg, exc: BackendError) -> None:
        """Replace a failed live leg: bounded attempts with backoff; the prepared next leg, if
        there is one, is tried first (it is already open)."""
        loop = asyncio.get_running_loop()
        c = self.settings
        legs = self.legs
        failed_at = loop.time()
        log.warning(
            "stream_failed_recovering", kind=exc.reason.kind, error=exc.message, leg=failed.number
        )
        ready_at = failed.ready_at if failed.ready_at is not None else failed.opened_at
        if failed_at - ready_at >= c.healthy_after_s:
            self._attempts_used = 0
        self.lost_tools(failed, f"the model stream failed ({exc.kind})")
        await legs.drop(failed)
        last: BackendError = exc
        attempt = 0
        try:
            while self._attempts_used < self.policy.attempts(last):
                if attempt:
                    await self.wait_before_retry(last, attempt)
                elif isinstance(exc.reason, Throttled):
                    await self.wait_before_retry(exc, 1)
                elif spread := self.policy.spread(exc):
                    await asyncio.sleep(spread)
                attempt += 1
                self._attempts_used += 1
                self.stats.recovery_attempts += 1
                leg = legs.next
                legs.next = None
                if leg is not None and (
                    leg.dead
                    or not legs.usable_preload(leg, self.memory.version)
                    # Its history holds the unanswered turn, which is to be re-sent instead.
                    or (self.memory.unanswered and leg.preload is not None)
                ):
                    legs.retire(leg)  # mid-preload or stale history: never send it twice
                    leg = None
                try:
                    async with asyncio.timeout(SETUP_TIMEOUT):
                        if leg is None:
                            leg = await legs.open()
                        history, audio, resend = self.memory.recovery_payload()
                        to_send = history
                        if leg.preloaded is not None:
                            history, to_send = leg.preloaded[1], []
                        await legs.go_live(leg, to_send, audio, resend)
                    ready = loop.time()
                    # Bedrock refuses a stream (throttling, quota, access) only after it was
                    # opened: the leg is live at once, but counts as recovered only if it
                    # survives a moment. Audio sent meanwhile is still in the replay buffer.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(c.recovery_confirm_s):
                            await leg.failed.wait()
                    if leg.error is not None:
                        raise leg.error
                except (BackendError, TimeoutError) as err:
                    last = err if isinstance(err, BackendError) else StreamLost("setup timed out")
                    log.warning("recovery_attempt_failed", attempt=attempt, error=str(last))
                    if leg is not None:
                        if legs.live is leg:
                            legs.live = None
                        await legs.drop(leg)
                    if not self.policy.retryable(last):
                        break
                    continue
                gap = (ready - failed_at) * 1000
                size, replayed = self.memory.account(history, audio)
                self.stats.recoveries += 1
                self.stats.recovery_gaps_ms.append(gap)
                self.stats.recovery_gap_ms_total += gap
                self.stats.turns_resent += int(resend is not None)
                log.info(
                    "stream_recovered",
                    leg=leg.number,
                    attempts=attempt,
                    gap_ms=round(gap),
                    turn_resent=resend is not None,
                )
                self.life.listener.on_event(
                    SessionContinued(
                        "recovery",
                        exc.reason.kind,
                        leg.number,
                        round(gap, 1),
                        attempts=attempt,
                        history_messages=len(history),
                        history_bytes=size,
                        replayed_ms=round(replayed, 1),
                    )
                )
                return
        finally:
            self.recovering = False
            self._told_busy = False
            self.life.changed.set()
        self.stats.recovery_give_ups += 1
        log.error("recovery_failed", kind=exc.kind, last=last.message, attempts=attempt)
        self.life.fatal(
            exc,
            f"the speech service failed ({exc.message}) and reconnecting did not work "
            f"({last.message})",
        )
