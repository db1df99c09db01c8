"""/metrics of a node with several workers: each worker's own exposition, parsed with
prometheus-client's parser, every sample labelled with where it came from (``worker="0"``),
plus the supervisor's own figures (``worker="supervisor"``), re-exposed by a collector on the
supervisor's registry, so one scrape describes all the node's processes.

Per worker, not summed: that is what a node's /metrics has always shown (the dashboard sums
across them with ``sum()``), and the supervisor's own ``voicegate_calls_ended_total
{reason="worker-died"}`` joins the workers' family of that name. Families come out in the order
they first appear (worker 0's, then worker 1's, ..., then the supervisor's), each once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from voicegate.cluster.workers import Worker
from voicegate.observability.exposition import render

__all__ = ["NodeMetrics"]

SUPERVISOR = "supervisor"


def _labelled(families: Iterable[Metric], worker: str) -> Iterator[Metric]:
    for family in families:
        out = Metric(family.name, family.documentation, family.type, family.unit)
        for s in family.samples:
            out.add_sample(s.name, {"worker": worker, **s.labels}, s.value, s.timestamp)
        yield out


def _own(workers: Sequence[Worker]) -> list[Metric]:
    """The supervisor's figures: workers alive and ready, restarts, calls lost with a worker."""
    state = GaugeMetricFamily(
        "voicegate_workers", "worker processes of this node, by state", labels=["state"]
    )
    state.add_metric(["alive"], sum(w.alive for w in workers))
    state.add_metric(["ready"], sum(w.alive and w.ready for w in workers))
    restarts = CounterMetricFamily(
        "voicegate_worker_restarts_total", "workers restarted after they died", labels=["of"]
    )
    for w in workers:
        restarts.add_metric([str(w.index)], w.restarts)
    lost = CounterMetricFamily(
        "voicegate_calls_ended_total", "calls ended, by reason", labels=["reason"]
    )
    lost.add_metric(["worker-died"], sum(w.calls_lost for w in workers))
    return [state, restarts, lost]


class NodeMetrics:
    """The collector of a supervisor's registry; ``render`` takes the workers' texts of one
    scrape (an unreadable one is left out, as a worker that did not answer)."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self._workers = workers
        self._scraped: list[tuple[str, list[Metric]]] = []
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        sources = [*self._scraped, (SUPERVISOR, _own(self._workers))]
        for worker, families in sources:
            for family in _labelled(families, worker):
                into = merged.setdefault(family.name, family)
                if into is not family:
                    into.samples += family.samples
        yield from merged.values()

    def render(self, texts: Iterable[tuple[int, str]]) -> str:
        """``texts``: (worker index, its /metrics text) pairs."""
        scraped = []
        for index, text in texts:
            try:
                scraped.append((str(index), list(text_string_to_metric_families(text))))
            except ValueError:
                continue
        self._scraped = scraped
        try:
            return render(self.registry)
        finally:
            self._scraped = []
