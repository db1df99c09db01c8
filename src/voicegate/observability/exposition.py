"""What voicegate adds to prometheus-client: bounded label sets, series declared at zero, one
registry per app and its text exposition.

Every app (and every test server in one process) builds its own ``CollectorRegistry``, so no
number is shared through the library's process-global default registry. Label values come from
voicegate's own code (error kinds, close reasons, latency stages), never from a request; still,
each labelled metric keeps at most ``MAX_SERIES`` label sets and folds the rest into ``other``
so a bug cannot grow memory without bound. The values a dashboard or an alert selects are
declared up front (``known``), so their series exist at zero from the start and ``rate()`` and
alerts work on a node that has not had the event yet.

The exposition is the text format 0.0.4 as prometheus-client renders it, without the
OpenMetrics ``_created`` series, which /metrics never had.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client import Counter as _Counter
from prometheus_client import Histogram as _Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "MAX_SERIES", "Counter", "Histogram", "render"]

MAX_SERIES: Final = 64
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4


class _Series:
    """The label sets one metric has had, at most ``MAX_SERIES`` (then ``other``)."""

    def __init__(self, name: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.labelnames = tuple(labelnames)
        self._seen: set[tuple[str, ...]] = set()

    def key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        key = tuple(str(labels[n]) for n in self.labelnames)
        if key not in self._seen:
            if len(self._seen) >= MAX_SERIES:
                key = tuple("other" for _ in self.labelnames)
            self._seen.add(key)
        return key


class Counter:
    """A prometheus-client counter with bounded label sets, ``known`` ones present at zero."""

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        known: Iterable[Sequence[str]] = (),
    ) -> None:
        self._metric = _Counter(name, help_text, labelnames, registry=registry)
        self._series = _Series(name, labelnames)
        for values in known:
            self._child(dict(zip(self._series.labelnames, values, strict=True)))

    def _child(self, labels: Mapping[str, str]) -> _Counter:
        if not self._series.labelnames:
            return self._metric
        return self._metric.labels(*self._series.key(labels))

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Refuses a negative amount (a counter only goes up) and unknown label names."""
        self._child(labels).inc(amount)


class Histogram:
    """A prometheus-client histogram with bounded label sets, ``known`` ones present at zero;
    a NaN observation is ignored, so it never poisons ``_sum``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help_text: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
        known: Iterable[Sequence[str]] = (),
    ) -> None:
        self._metric = _Histogram(name, help_text, labelnames, registry=registry, buckets=buckets)
        self._series = _Series(name, labelnames)
        for values in known:
            self._child(dict(zip(self._series.labelnames, values, strict=True)))

    def _child(self, labels: Mapping[str, str]) -> _Histogram:
        if not self._series.labelnames:
            return self._metric
        return self._metric.labels(*self._series.key(labels))

    def observe(self, value: float, **labels: str) -> None:
        if math.isnan(value):
            return
        self._child(labels).observe(value)


class _WithoutCreated:
    """The families of a registry less the ``_created`` samples prometheus-client adds (one
    setting of the library would drop them, but for the whole process)."""

    def __init__(self, registry: Collector) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            created = family.name + "_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


def render(registry: Collector) -> str:
    """The text exposition (format 0.0.4) of ``registry``."""
    return generate_latest(_WithoutCreated(registry)).decode()
