"""Prometheus text exposition, written by hand: counters, gauges and histograms with labels.

Why by hand: the handful of metric types voicegate needs (counters, gauges, histograms with a few
fixed labels) fit in a page, and a self-rendered registry has no process-global state, so every
app (and every test server in one process) has its own numbers. Observing is a dict update on the
event loop.

Label values come from voicegate's own code (error kinds, close reasons, latency stages), never
from a request; still, each metric keeps at most ``MAX_SERIES`` label sets and folds the rest into
``other`` so a bug cannot grow memory without bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "LabelValues", "MAX_SERIES", "Metric"]

MAX_SERIES: Final = 64
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)

    def _key(self, labels: dict[str, str], known: Mapping[LabelValues, object]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        key = tuple(str(labels[n]) for n in self.labelnames)
        if key not in known and len(known) >= MAX_SERIES:
            key = tuple("other" for _ in self.labelnames)
        return key

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class _Valued(Metric):
    """One number per label set, or one read from a callback at scrape time."""

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        read: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}
        self._read = read

    def samples(self) -> list[str]:
        if self._read is not None:
            return [f"{self.name} {_fmt(self._read())}"]
        return [
            f"{self.name}{_labels(self.labelnames, k)} {_fmt(v)}"
            for k, v in sorted(self._values.items())
        ]


class Counter(_Valued):
    """A monotonically growing count; ``inc`` with a negative amount is refused."""

    kind = "counter"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        read: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name, help_text, labelnames, read)
        if not self.labelnames:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels, self._values)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(labels[n] for n in self.labelnames), 0.0)


class Gauge(_Valued):
    """A value that goes up and down, set directly or read from a callback at scrape time."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        self._values[self._key(labels, self._values)] = value


@dataclass(slots=True)
class _HistogramState:
    counts: list[int]
    total: float = 0.0
    count: int = 0


class Histogram(Metric):
    """Cumulative buckets, ``_sum`` and ``_count`` per label set (Prometheus semantics)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))
        self._states: dict[LabelValues, _HistogramState] = {}

    def observe(self, value: float, **labels: str) -> None:
        if math.isnan(value):
            return
        key = self._key(labels, self._states)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _HistogramState([0] * len(self.buckets))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                state.counts[i] += 1
                break
        state.total += value
        state.count += 1

    def count(self, **labels: str) -> int:
        state = self._states.get(tuple(labels[n] for n in self.labelnames))
        return 0 if state is None else state.count

    def samples(self) -> list[str]:
        lines: list[str] = []
        for key, state in sorted(self._states.items()):
            cumulative = 0
            for bound, n in zip(self.buckets, state.counts, strict=True):
                cumulative += n
                le = _labels(self.labelnames, key, f'le="{_fmt(bound)}"')
                lines.append(f"{self.name}_bucket{le} {cumulative}")
            inf = _labels(self.labelnames, key, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{inf} {state.count}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_fmt(state.total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {state.count}")
        return lines
