"""The process's garbage-collection policy: what is alive after start-up is frozen, and every
collection is timed.

CPython's cyclic collector stops the whole process while it walks the objects it tracks, and a
full (generation 2) collection walks all of them. A serving process holds a few hundred thousand
(the AWS SDK's service model, aiortc, numpy, av, the stand-in and test caller in a test process),
so a full collection during a call took 117-141 ms here: six or seven 20 ms audio frames that
every call on the process misses at once. Full collections come when many objects survive, which
is what opening a new model stream does, so they met stream renewals in particular.

Nearly all of those objects are made at start-up and live as long as the process. ``freeze``
collects once and then moves every survivor into the permanent generation (``gc.freeze``), which
no collection walks again; the collections left walk only what calls made since. Reference
counting still frees frozen objects that stop being used; only frozen cycles would stay, and
start-up objects do not become garbage.

``PauseWatch`` times every collection through ``gc.callbacks``, so the pauses are a metric
(``voicegate_gc_pause_seconds``) rather than a guess.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PauseWatch", "freeze", "thaw"]


def freeze() -> int:
    """Collect, then exclude every object alive now from later collections; returns how many
    objects the permanent generation holds. Called by whoever owns the process once its
    start-up is done (modules imported, backend warmed, app built), before it serves: the
    collection itself stops the process as long as a full one does."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw() -> None:
    """Give frozen objects back to the collector: for a process (a test run) that builds and
    drops servers, so the garbage of one is not kept for good by the next one's ``freeze``."""
    gc.unfreeze()


class PauseWatch:
    """Calls ``on_pause(generation, seconds)`` after every collection the interpreter runs.

    The callback runs inside the collection's stop, so it only records; ``stop`` must be called
    (``gc.callbacks`` is process-wide and would keep this object, and what it calls, alive)."""

    def __init__(self, on_pause: Callable[[int, float], None]) -> None:
        self._on_pause = on_pause
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._on_pause(int(info["generation"]), time.perf_counter() - self._started)
            self._started = 0.0

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
