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
from collections.abc import Callable

import structlog

from voicegate.backends.base import BackendError, StreamLost, ValidationFailed
from voicegate.conversation.continuation import ContinuationSettings
from voicegate.conversation.events import ConversationStats, SessionContinued
from voicegate.conversation.legs import SETUP_TIMEOUT, Leg, Legs, Lifecycle
from voicegate.conversation.memory import CallMemory

log = structlog.get_logger(__name__)

LostTools = Callable[[Leg, str], None]
"""Tells the dialogue that the tool calls a leg asked for can no longer be answered on it."""


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
        self.recovering = False
        """A replacement is being set up: renewal waits, failures of the probation leg count as
        attempts."""
        self._attempts_used = 0

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
        self.stats.failures[exc.kind] += 1
        if not exc.retryable or self.settings.recovery_attempts <= 0:
            self.life.fatal(exc)
            return
        self.recovering = True
        self.life.spawn(self._recover(leg, exc), name="recovery")

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
        log.warning("stream_failed_recovering", kind=exc.kind, error=exc.message, leg=failed.number)
        ready_at = failed.ready_at if failed.ready_at is not None else failed.opened_at
        if failed_at - ready_at >= c.healthy_after_s:
            self._attempts_used = 0
        self.lost_tools(failed, f"the model stream failed ({exc.kind})")
        await legs.drop(failed)
        last: BackendError = exc
        attempt = 0
        try:
            while self._attempts_used < c.recovery_attempts:
                if attempt:
                    await asyncio.sleep(c.recovery_backoff_s * 2 ** (attempt - 1))
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
                    if not last.retryable:
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
                        exc.kind,
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
            self.life.changed.set()
        self.stats.recovery_give_ups += 1
        log.error("recovery_failed", kind=exc.kind, last=last.message, attempts=attempt)
        self.life.fatal(
            exc,
            f"the speech service failed ({exc.message}) and reconnecting did not work "
            f"({last.message})",
        )
