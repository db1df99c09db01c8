"""The garbage-collection policy: what is frozen is out of collections until thawed, and every
collection is reported while a watch runs (and none after it stops)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from voicegate import gcpolicy
from voicegate.observability.metrics import GatewayMetrics


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def thawed() -> Iterator[None]:
    gcpolicy.thaw()
    yield
    gcpolicy.thaw()


def test_a_frozen_cycle_is_not_collected_until_thawed(thawed: None) -> None:
    frozen = _Cycle()
    gone_before = weakref.ref(frozen)
    assert gcpolicy.freeze() >= 1
    assert not any(o is frozen for o in gc.get_objects())
    del frozen
    later = _Cycle()
    gone_after = weakref.ref(later)
    del later
    gc.collect()
    # Made after the freeze: collected. Alive at the freeze: kept by every collection.
    assert gone_after() is None
    assert gone_before() is not None
    gcpolicy.thaw()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone_before() is None


def test_the_watch_reports_every_collection_while_it_runs() -> None:
    pauses: list[tuple[int, float]] = []
    watch = gcpolicy.PauseWatch(lambda generation, seconds: pauses.append((generation, seconds)))
    watch.start()
    watch.start()  # once only, however often started
    try:
        gc.collect(0)
        gc.collect()
    finally:
        watch.stop()
    assert [g for g, _ in pauses][-2:] == [0, 2]
    assert all(s >= 0 for _, s in pauses)
    seen = len(pauses)
    gc.collect()
    watch.stop()  # a second stop is harmless
    assert len(pauses) == seen


def test_pauses_are_a_histogram_by_generation() -> None:
    metrics = GatewayMetrics()
    watch = gcpolicy.PauseWatch(metrics.observe_gc_pause)
    watch.start()
    try:
        gc.collect()
    finally:
        watch.stop()
    samples = {
        (s.name, s.labels.get("generation")): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name.startswith("voicegate_gc_pause_seconds")
    }
    assert samples[("voicegate_gc_pause_seconds_count", "2")] >= 1
    assert ("voicegate_gc_pause_seconds_count", "0") in samples  # at zero until one runs
