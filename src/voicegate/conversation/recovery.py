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

import structlog

from voicegate.backends.base import Backend, BackendError, StreamLost
from voicegate.conversation.continuation import shape_history
from voicegate.conversation.events import (
    ConversationListener,
    ConversationSettings,
    SessionContinued,
)
from voicegate.conversation.legs import SETUP_TIMEOUT, Leg, Legs
from voicegate.conversation.tools import ToolRegistry
from voicegate.sonic import Role

log = structlog.get_logger(__name__)


class Recovery(Legs):
    """Legs that are replaced when they fail; renewal and the dialogue are built on it."""

    def __init__(
        self,
        backend: Backend,
        settings: ConversationSettings,
        tools: ToolRegistry,
        listener: ConversationListener,
    ) -> None:
        super().__init__(backend, settings, tools, listener)
        self._unanswered = False
        """The newest user turn (spoken or typed) got no final answer yet: the dialogue keeps
        this, a recovery re-sends that turn."""

    def _leg_failed(self, leg: Leg, exc: BackendError) -> None:
        if leg.dead and leg is not self._leg:
            return
        was_live = leg is self._leg and not leg.retired
        leg.dead = True
        if self.ended.is_set():
            return
        if self._closing:
            if was_live:
                self._finish("closed")
            return
        if leg is self._next:
            self._next = None
            self.stats.prepare_failures += 1
            log.warning("prepared_stream_failed", kind=exc.kind, error=exc.message)
            self._spawn(self._drop_leg(leg))
            return
        if not was_live:
            self._spawn(self._drop_leg(leg))
            return
        # From here on user audio only goes into the replay buffer, for the next leg.
        self._leg = None
        leg.retired = True
        leg.error = exc
        leg.failed.set()
        if self._recovering:
            return  # a leg still on probation: the recovery loop counts it as an attempt
        self.stats.failures[exc.kind] += 1
        if not exc.retryable or self._cont.recovery_attempts <= 0:
            self._fatal(exc)
            return
        self._recovering = True
        self._spawn(self._recover(leg, exc), name="recovery")

    async def _recover(self, failed: Leg, exc: BackendError) -> None:
        """Replace a failed live leg: bounded attempts with backoff; the prepared next leg, if
        there is one, is tried first (it is already open)."""
        loop = asyncio.get_running_loop()
        c = self._cont
        failed_at = loop.time()
        log.warning("stream_failed_recovering", kind=exc.kind, error=exc.message, leg=failed.number)
        ready_at = failed.ready_at if failed.ready_at is not None else failed.opened_at
        if failed_at - ready_at >= c.healthy_after_s:
            self._attempts_used = 0
        self._answer_lost_tools(failed, f"the model stream failed ({exc.kind})")
        await self._drop_leg(failed)
        last: BackendError = exc
        attempt = 0
        try:
            while self._attempts_used < c.recovery_attempts:
                if attempt:
                    await asyncio.sleep(c.recovery_backoff_s * 2 ** (attempt - 1))
                attempt += 1
                self._attempts_used += 1
                self.stats.recovery_attempts += 1
                leg = self._next
                self._next = None
                if leg is not None and (
                    leg.dead
                    or not self._usable_preload(leg)
                    # Its history holds the unanswered turn, which is to be re-sent instead.
                    or (self._unanswered and leg.preload is not None)
                ):
                    self._retire(leg)  # mid-preload or stale history: never send it twice
                    leg = None
                try:
                    async with asyncio.timeout(SETUP_TIMEOUT):
                        if leg is None:
                            leg = await self._open_leg()
                        history, audio, resend = self._recovery_payload()
                        to_send = history
                        if leg.preloaded is not None:
                            history, to_send = leg.preloaded[1], []
                        await self._go_live(leg, to_send, audio, resend)
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
                        if self._leg is leg:
                            self._leg = None
                        await self._drop_leg(leg)
                    if not last.retryable:
                        break
                    continue
                gap = (ready - failed_at) * 1000
                size, replayed = self._account(history, audio)
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
                self.listener.on_event(
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
            self._recovering = False
            self._leg_changed.set()
        self.stats.recovery_give_ups += 1
        log.error("recovery_failed", kind=exc.kind, last=last.message, attempts=attempt)
        self._fatal(
            exc,
            f"the speech service failed ({exc.message}) and reconnecting did not work "
            f"({last.message})",
        )

    def _recovery_payload(self) -> tuple[list[tuple[Role, str]], list[bytes], str | None]:
        """What a replacement leg is given: the shaped history and the replay, as for a
        renewal, except for a user turn the failed leg never answered. That one is taken out of
        the history and returned to be re-sent as interactive USER text once the audio content
        is open (as Pipecat and LiveKit do): as non-interactive history the model would stay
        silent until the user repeated it."""
        past = self.stats.history
        last = next((i for i in range(len(past) - 1, -1, -1) if past[i][0] == "USER"), None)
        if not self._unanswered or last is None:
            history, audio = self._continuation_payload()
            return history, audio, None
        c = self._cont
        history = shape_history(
            past[:last] + past[last + 1 :],
            c.history_max_messages,
            c.history_max_message_bytes,
            c.history_max_bytes,
        )
        return history, self._replay.replay(), past[last][1]
