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

from voicegate.backends.base import BackendError
from voicegate.conversation.continuation import ContinuationSettings
from voicegate.conversation.events import ConversationStats, SessionContinued
from voicegate.conversation.legs import SETUP_TIMEOUT, Leg, Legs, Lifecycle, TurnState
from voicegate.conversation.memory import CallMemory
from voicegate.conversation.recovery import LostTools, Recovery

__all__ = [
    "REPLY_EXPECTED_S",
    "Renewal",
    "TURN_QUIET_S",
]

log = structlog.get_logger(__name__)

TURN_QUIET_S: Final = 2.0
"""A turn under way whose stream has sent nothing for this long is taken as over: the model
produces faster than real time, so a live turn is never that quiet (a tool call open is
tracked on its own)."""
REPLY_EXPECTED_S: Final = 10.0
"""After a final user transcript the model is expected to answer within this; a renewal waits
for that answer (not to cut it off), but not forever."""


class Renewal:
    """Prepares the next leg when the live one gets old (or its credentials near expiry) and
    hands over to it at a natural point; the sender calls ``step`` and ``hand_over``."""

    def __init__(
        self,
        legs: Legs,
        memory: CallMemory,
        settings: ContinuationSettings,
        stats: ConversationStats,
        life: Lifecycle,
        recovery: Recovery,
        turn: TurnState,
        lost_tools: LostTools,
    ) -> None:
        self.legs = legs
        self.memory = memory
        self.settings = settings
        self.stats = stats
        self.life = life
        self.recovery = recovery
        self.turn = turn
        self.lost_tools = lost_tools
        self.wanted = False
        """A prepared leg waits for the sender to hand over to it."""
        self.forced = False
        self.reason = "age"
        self._request = asyncio.Event()

    async def renew(self, force: bool = True) -> None:
        """Move to a new stream now (at the next natural point unless ``force``) and return
        once the new stream is live. For operators and tests; renewal by age is automatic."""
        leg = self.legs.live
        self.reason = "requested"
        self.forced = self.forced or force
        self._request.set()
        while not self.life.ended.is_set() and (self.legs.live is leg or self.legs.live is None):
            self.life.changed.clear()
            await self.life.changed.wait()

    def due(self, leg: Leg) -> tuple[float, str]:
        """Loop time at which ``leg`` should be renewed, and why."""
        c = self.settings
        base = leg.ready_at if leg.ready_at is not None else leg.opened_at
        due, reason = base + c.renew_after_s, "age"
        # The stream signs with the identity it was opened with until it ends: its expiry
        # counts (the backend's is what a new stream would get).
        expiration = leg.stream.credentials_expiration()
        if expiration is None:
            expiration = self.legs.backend.credentials_expiration()
        if expiration is not None:
            if expiration.tzinfo is None:
                expiration = expiration.replace(tzinfo=dt.UTC)
            left = (expiration - dt.datetime.now(dt.UTC)).total_seconds() - c.credential_margin_s
            # Never sooner than renew_min_age_s into a leg: a refresh that does not extend
            # the expiry must not turn into a renewal storm.
            at = max(asyncio.get_running_loop().time() + left, base + c.renew_min_age_s)
            if at < due:
                due, reason = at, "credentials"
        return due, reason

    async def run(self) -> None:
        """Prepare the next leg when the live one gets old (or on request), then let the
        sender hand over at a natural point, or force it when none comes in time."""
        loop = asyncio.get_running_loop()
        c = self.settings
        while True:
            leg = self.legs.live
            if leg is None or self.recovery.recovering:
                self.life.changed.clear()
                await self.life.changed.wait()
                continue
            due, reason = self.due(leg)
            if not self._request.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - loop.time())):
                        await self._request.wait()
            if self.legs.live is not leg:
                continue  # replaced meanwhile (recovery)
            if self._request.is_set():
                self._request.clear()
                force_at = loop.time() + (0.0 if self.forced else c.force_after_s)
            else:
                self.reason = reason
                force_at = due + c.force_after_s
            backoff = c.recovery_backoff_s
            while self.legs.live is leg and not self.life.closing:
                if self.legs.next is None or self.legs.next.dead:
                    started = loop.time()
                    try:
                        async with asyncio.timeout(SETUP_TIMEOUT):
                            self.legs.next = await self.legs.open()
                    except (BackendError, TimeoutError) as exc:
                        self.stats.prepare_failures += 1
                        log.warning("renewal_prepare_failed", error=str(exc))
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    self.stats.prepare_ms.append((loop.time() - started) * 1000)
                    self.wanted = True
                prepared = self.legs.next
                assert prepared is not None
                wake = min(force_at, prepared.opened_at + c.prepared_max_idle_s)
                if self.forced:
                    wake = loop.time() + 1.0  # the sender hands over at its next chunk
                self.life.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, wake - loop.time())):
                        await self.life.changed.wait()
                if self.legs.live is not leg:
                    break
                if loop.time() >= force_at:
                    self.forced = True
                elif self.legs.next is prepared and loop.time() >= wake:
                    # Unused for too long: a fresh one, so the handover never meets a stream
                    # the service has given up on.
                    self.legs.next = None
                    self.legs.retire(prepared)
            self.wanted = False
            self.forced = False
            orphan = self.legs.next
            if orphan is not None and orphan is not self.legs.live:
                # Prepared for a leg that a recovery replaced meanwhile: it would sit idle.
                self.legs.next = None
                self.legs.retire(orphan)

    def natural_point(self, leg: Leg, quiet: bool = True) -> bool:
        """No assistant turn under way or expected, no tool call open, the user quiet."""
        if leg.pending_tools or leg.running_tools:
            return False
        loop = asyncio.get_running_loop()
        under_way = self.turn.speculative_open or self.turn.speaking
        if under_way and loop.time() - leg.last_output_at < TURN_QUIET_S:
            # An assistant turn is under way (its final text or its last audio content, after
            # a PARTIAL_TURN end, has not come). Not forever: no completionEnd is promised per
            # turn, so a turn whose end never came must not block every natural point.
            return False
        if any(c.role == "ASSISTANT" for c in leg.contents.values()):
            return False
        expected = self.turn.reply_expected_at
        if expected is not None and loop.time() - expected < REPLY_EXPECTED_S:
            return False
        if not quiet:
            return True
        # The user stopped, but the model has not said what it heard yet (its transcript and
        # answer may be on the way): moving now would drop that answer and replay the turn to a
        # new stream. Such speech leaves the window after replay_max_s, so this waits no longer.
        if self.memory.replay.untranscribed:
            return False
        return self.memory.replay.quiet_s >= self.settings.natural_quiet_s

    async def _preload(self, leg: Leg) -> None:
        """Phase one of a planned handover, while the old leg is still live: send the next leg
        the history. Phase two (the switch) then only needs the audio content and the replay,
        so the gap stays a few events long however long the history is."""
        version = self.memory.version
        history, _ = self.memory.payload()
        try:
            await self.legs.send_history(leg, history)
        except BackendError as exc:
            self.recovery.leg_failed(leg, exc)
            return
        leg.preloaded = (version, history)

    def step(self, leg: Leg, new: Leg) -> bool:
        """Decide, between two chunks, whether the sender hands over now."""
        if new.preloaded is None:
            if new.preload is None and (self.forced or self.natural_point(leg)):
                new.preload = asyncio.get_running_loop().create_task(self._preload(new))
                self.life.tasks.add(new.preload)
                new.preload.add_done_callback(self.life.tasks.discard)
            return False
        if new.preloaded[0] != self.memory.version:
            # A turn completed meanwhile: the preloaded history is stale. A fresh leg is
            # prepared (the renewal loop wakes up) and preloaded at the next natural point.
            self.legs.next = None
            self.legs.retire(new)
            self.life.changed.set()
            return False
        # The user may have started talking meanwhile: the replay carries that.
        return self.forced or self.natural_point(leg, quiet=False)

    async def hand_over(self, old: Leg, new: Leg) -> None:
        """Runs in the sender: the old leg gets no more audio from here on."""
        loop = asyncio.get_running_loop()
        if new.preload is not None and not new.preload.done():
            await new.preload  # a forced handover during phase one: never interleave blocks
        switched = loop.time()
        forced = self.forced and not self.natural_point(old)
        self.legs.next = None
        self.wanted = False
        old.retired = True
        self.lost_tools(old, "the model stream was renewed")
        history, audio = self.memory.payload()
        to_send = history
        if new.preloaded is not None and new.preloaded[0] == self.memory.version:
            history, to_send = new.preloaded[1], []
        try:
            await self.legs.go_live(new, to_send, audio)
        except BackendError as exc:
            # The prepared leg broke at the last moment: the old one is intact, keep it.
            old.retired = False
            self.stats.prepare_failures += 1
            log.warning("renewal_handover_failed", error=exc.message)
            self.life.spawn(self.legs.drop(new))
            return
        self.legs.retire(old)
        gap = (loop.time() - switched) * 1000
        size, replayed = self.memory.account(history, audio)
        self.stats.renewals += 1
        self.stats.renewals_forced += int(forced)
        self.stats.handover_gaps_ms.append(gap)
        self.stats.handover_gap_ms_total += gap
        log.info(
            "stream_renewed",
            leg=new.number,
            reason=self.reason,
            forced=forced,
            gap_ms=round(gap, 1),
            history_bytes=size,
            replayed_ms=round(replayed),
        )
        self.life.listener.on_event(
            SessionContinued(
                "renewal",
                self.reason,
                new.number,
                round(gap, 1),
                forced=forced,
                history_messages=len(history),
                history_bytes=size,
                replayed_ms=round(replayed, 1),
            )
        )
        self.reason = "age"
