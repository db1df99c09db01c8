"""Admission control: refuse a new call before the calls already running would degrade.

Every call's media runs on the one event loop, so the loop's lateness *is* the media path's
health: once a loop iteration takes longer than a 20 ms frame, every call falls behind together
and nothing catches up (the capacity runs in benchmarks/ show it). ``LagMonitor`` probes the
loop with a short sleep and keeps the recent lateness; it is the process's one loop probe and
also feeds the lag that ``/metrics`` and ``/healthz`` report. ``Admission.decide`` turns it,
with the configured call limit, into a refusal the HTTP layer answers with 503, Retry-After and
a JSON reason. The limit by count protects memory and the model account; the lag limit protects
the calls when the machine is slower or busier than the count assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Admission",
    "LagMonitor",
    "MIN_SAMPLES",
    "PROBE_INTERVAL",
    "RETRY_AFTER_S",
    "Refusal",
    "WINDOW",
]

PROBE_INTERVAL: Final = 0.05
WINDOW: Final = 40
"""Probes kept: the last two seconds."""
RETRY_AFTER_S: Final = 5
"""Seconds a refused caller is told to wait (503 at capacity, while draining or overloaded)."""
MIN_SAMPLES: Final = 5


class LagMonitor:
    """How late the event loop wakes from a ``PROBE_INTERVAL`` sleep, over the last ``WINDOW``
    probes. ``lag_ms`` is their median: a GC pause or one slow call set-up (a few late probes)
    does not close the door, a loop that is late most of the time does. An overloaded loop also
    probes less often, so its window fills with late samples only. ``on_sample`` gets every
    probe's lateness in seconds (the metrics' histogram)."""

    def __init__(
        self,
        interval: float = PROBE_INTERVAL,
        window: int = WINDOW,
        on_sample: Callable[[float], None] | None = None,
    ) -> None:
        self.interval = interval
        self.on_sample = on_sample
        self._samples: deque[float] = deque(maxlen=window)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lag-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.observe(max(0.0, loop.time() - start - self.interval))

    def observe(self, lag_s: float) -> None:
        self._samples.append(lag_s * 1000)
        if self.on_sample is not None:
            self.on_sample(lag_s)

    @property
    def lag_ms(self) -> float:
        if len(self._samples) < MIN_SAMPLES:
            return 0.0
        ordered = sorted(self._samples)
        return ordered[len(ordered) // 2]

    @property
    def max_ms(self) -> float:
        return max(self._samples, default=0.0)


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # "max_sessions" | "loop_lag"
    message: str
    retry_after: int = RETRY_AFTER_S
    loop_lag_ms: float | None = None


class Admission:
    """Whether one more call may start now."""

    def __init__(self, max_sessions: int, max_loop_lag_ms: float, monitor: LagMonitor) -> None:
        self.max_sessions = max_sessions
        self.max_loop_lag_ms = max_loop_lag_ms
        self.monitor = monitor
        self.refused: dict[str, int] = {"max_sessions": 0, "loop_lag": 0}

    def decide(self, sessions: int) -> Refusal | None:
        refusal = self._decide(sessions)
        if refusal is not None:
            self.refused[refusal.reason] += 1
        return refusal

    def _decide(self, sessions: int) -> Refusal | None:
        if sessions >= self.max_sessions:
            return Refusal(
                "max_sessions",
                f"voicegate is at its limit of {self.max_sessions} concurrent calls; retry later",
            )
        lag = self.monitor.lag_ms
        # With no call in progress there is nothing to protect, and the lag is then the
        # set-up and tear-down of calls (DTLS handshakes, GC), which a new call does not hurt.
        if sessions > 0 and self.max_loop_lag_ms > 0 and lag > self.max_loop_lag_ms:
            return Refusal(
                "loop_lag",
                f"voicegate is overloaded (event loop {lag:.0f} ms late, limit "
                f"{self.max_loop_lag_ms:.0f} ms); the calls in progress come first, retry later",
                loop_lag_ms=round(lag, 1),
            )
        return None
