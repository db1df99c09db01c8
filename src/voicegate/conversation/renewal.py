"""Planned renewal: moving a conversation to a fresh model stream before the old one ends.

Before a leg gets old (Nova Sonic ends a stream at ~8 minutes) or its temporary credentials
expire, the next leg is opened in the background. It takes over at a natural point (no assistant
turn under way or expected, no tool call open, the user quiet) in two phases: the history is sent
to it while the old leg is still live (preload), then, between two user audio chunks, the sender
switches (audio content and replayed audio only, so the gap stays a few events long). Without a
natural point in time the handover is forced. docs/renewal.md has the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Final

import structlog

from voicegate.backends.base import Backend, BackendError
from voicegate.conversation.events import (
    ConversationListener,
    ConversationSettings,
    SessionContinued,
)
from voicegate.conversation.legs import SETUP_TIMEOUT, Leg
from voicegate.conversation.recovery import Recovery
from voicegate.conversation.tools import ToolRegistry

log = structlog.get_logger(__name__)

REPLY_EXPECTED_S: Final = 10.0
"""After a final user transcript the model is expected to answer within this; a renewal waits
for that answer (not to cut it off), but not forever."""


class Renewal(Recovery):
    """Legs with recovery and planned renewal; ``Conversation`` is built on it."""

    # Turn state owned by the dialogue, read here to find natural points.
    _speculative_open: int
    _reply_expected_at: float | None

    def __init__(
        self,
        backend: Backend,
        settings: ConversationSettings,
        tools: ToolRegistry,
        listener: ConversationListener,
    ) -> None:
        super().__init__(backend, settings, tools, listener)
        self._renew_wanted = False
        self._renew_forced = False
        self._renew_reason = "age"
        self._renew_request = asyncio.Event()

    async def renew(self, force: bool = True) -> None:
        """Move to a new stream now (at the next natural point unless ``force``) and return
        once the new stream is live. For operators and tests; renewal by age is automatic."""
        leg = self._leg
        self._renew_reason = "requested"
        self._renew_forced = self._renew_forced or force
        self._renew_request.set()
        while not self.ended.is_set() and (self._leg is leg or self._leg is None):
            self._leg_changed.clear()
            await self._leg_changed.wait()

    def _renew_due(self, leg: Leg) -> tuple[float, str]:
        """Loop time at which ``leg`` should be renewed, and why."""
        c = self._cont
        base = leg.ready_at if leg.ready_at is not None else leg.opened_at
        due, reason = base + c.renew_after_s, "age"
        expiration = self.backend.credentials_expiration()
        if expiration is not None:
            if expiration.tzinfo is None:
                expiration = expiration.replace(tzinfo=dt.UTC)
            left = (expiration - dt.datetime.now(dt.UTC)).total_seconds() - c.credential_margin_s
            # Never sooner than a minute into a leg: a refresh that does not extend the
            # expiry must not turn into a renewal storm.
            at = max(asyncio.get_running_loop().time() + left, base + 60.0)
            if at < due:
                due, reason = at, "credentials"
        return due, reason

    async def _renewal_loop(self) -> None:
        """Prepare the next leg when the live one gets old (or on request), then let the
        sender hand over at a natural point, or force it when none comes in time."""
        loop = asyncio.get_running_loop()
        c = self._cont
        while True:
            leg = self._leg
            if leg is None or self._recovering:
                self._leg_changed.clear()
                await self._leg_changed.wait()
                continue
            due, reason = self._renew_due(leg)
            if not self._renew_request.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - loop.time())):
                        await self._renew_request.wait()
            if self._leg is not leg:
                continue  # replaced meanwhile (recovery)
            if self._renew_request.is_set():
                self._renew_request.clear()
                force_at = loop.time() + (0.0 if self._renew_forced else c.force_after_s)
            else:
                self._renew_reason = reason
                force_at = due + c.force_after_s
            backoff = c.recovery_backoff_s
            while self._leg is leg and not self._closing:
                if self._next is None or self._next.dead:
                    started = loop.time()
                    try:
                        async with asyncio.timeout(SETUP_TIMEOUT):
                            self._next = await self._open_leg()
                    except (BackendError, TimeoutError) as exc:
                        self.stats.prepare_failures += 1
                        log.warning("renewal_prepare_failed", error=str(exc))
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    self.stats.prepare_ms.append((loop.time() - started) * 1000)
                    self._renew_wanted = True
                prepared = self._next
                assert prepared is not None
                wake = min(force_at, prepared.opened_at + c.prepared_max_idle_s)
                if self._renew_forced:
                    wake = loop.time() + 1.0  # the sender hands over at its next chunk
                self._leg_changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, wake - loop.time())):
                        await self._leg_changed.wait()
                if self._leg is not leg:
                    break
                if loop.time() >= force_at:
                    self._renew_forced = True
                elif self._next is prepared and loop.time() >= wake:
                    # Unused for too long: a fresh one, so the handover never meets a stream
                    # the service has given up on.
                    self._next = None
                    self._retire(prepared)
            self._renew_wanted = False
            self._renew_forced = False
            orphan = self._next
            if orphan is not None and orphan is not self._leg:
                # Prepared for a leg that a recovery replaced meanwhile: it would sit idle.
                self._next = None
                self._retire(orphan)

    def _natural_point(self, leg: Leg, quiet: bool = True) -> bool:
        """No assistant turn under way or expected, no tool call open, the user quiet."""
        if leg.pending_tools or leg.running_tools or self._speculative_open:
            return False
        if any(c.role == "ASSISTANT" for c in leg.contents.values()):
            return False
        expected = self._reply_expected_at
        if expected is not None and asyncio.get_running_loop().time() - expected < REPLY_EXPECTED_S:
            return False
        if not quiet:
            return True
        # The user stopped, but the model has not said what it heard yet (its transcript and
        # answer may be on the way): moving now would drop that answer and replay the turn to a
        # new stream. Such speech leaves the window after replay_max_s, so this waits no longer.
        if self._replay.untranscribed:
            return False
        return self._replay.quiet_s >= self._cont.natural_quiet_s

    async def _preload(self, leg: Leg) -> None:
        """Phase one of a planned handover, while the old leg is still live: send the next leg
        the history. Phase two (the switch) then only needs the audio content and the replay,
        so the gap stays a few events long however long the history is."""
        version = self._history_version
        history, _ = self._continuation_payload()
        try:
            for role, text in history:
                for event in self._text_block(role, text):
                    await self._send_to(leg, event)
        except BackendError as exc:
            self._leg_failed(leg, exc)
            return
        leg.preloaded = (version, history)

    def _renewal_step(self, leg: Leg, new: Leg) -> bool:
        """Decide, between two chunks, whether the sender hands over now."""
        if new.preloaded is None:
            if new.preload is None and (self._renew_forced or self._natural_point(leg)):
                new.preload = asyncio.get_running_loop().create_task(self._preload(new))
                self._tasks.add(new.preload)
                new.preload.add_done_callback(self._tasks.discard)
            return False
        if new.preloaded[0] != self._history_version:
            # A turn completed meanwhile: the preloaded history is stale. A fresh leg is
            # prepared (the renewal loop wakes up) and preloaded at the next natural point.
            self._next = None
            self._retire(new)
            self._leg_changed.set()
            return False
        # The user may have started talking meanwhile: the replay carries that.
        return self._renew_forced or self._natural_point(leg, quiet=False)

    async def _hand_over(self, old: Leg, new: Leg) -> None:
        """Runs in the sender: the old leg gets no more audio from here on."""
        loop = asyncio.get_running_loop()
        if new.preload is not None and not new.preload.done():
            await new.preload  # a forced handover during phase one: never interleave blocks
        switched = loop.time()
        forced = self._renew_forced and not self._natural_point(old)
        self._next = None
        self._renew_wanted = False
        old.retired = True
        self._answer_lost_tools(old, "the model stream was renewed")
        history, audio = self._continuation_payload()
        to_send = history
        if new.preloaded is not None and new.preloaded[0] == self._history_version:
            history, to_send = new.preloaded[1], []
        try:
            await self._go_live(new, to_send, audio)
        except BackendError as exc:
            # The prepared leg broke at the last moment: the old one is intact, keep it.
            old.retired = False
            self.stats.prepare_failures += 1
            log.warning("renewal_handover_failed", error=exc.message)
            self._spawn(self._drop_leg(new))
            return
        self._retire(old)
        gap = (loop.time() - switched) * 1000
        size, replayed = self._account(history, audio)
        self.stats.renewals += 1
        self.stats.renewals_forced += int(forced)
        self.stats.handover_gaps_ms.append(gap)
        self.stats.handover_gap_ms_total += gap
        log.info(
            "stream_renewed",
            leg=new.number,
            reason=self._renew_reason,
            forced=forced,
            gap_ms=round(gap, 1),
            history_bytes=size,
            replayed_ms=round(replayed),
        )
        self.listener.on_event(
            SessionContinued(
                "renewal",
                self._renew_reason,
                new.number,
                round(gap, 1),
                forced=forced,
                history_messages=len(history),
                history_bytes=size,
                replayed_ms=round(replayed, 1),
            )
        )
        self._renew_reason = "age"
