"""What users scrape stays what it was: the metric families of a real ``voicegate serve`` (one
process and ``--workers 2``), fresh and after one echo call, have the names, types, label names
and HELP kept in tests/golden/; and on a fresh node, before any call, every metric the Grafana
dashboard or an alert rule reads is there, counters and histograms at zero, with the label
values the expressions select.

The scrapes are read by the strict text-format reader of tests/metrics_names.py, independent of
the prometheus_client the server renders with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.deploy import DEPLOY, dashboard_exprs, one, promql_metrics
from tests.support.metrics_names import (
    SINGLE,
    WORKERS,
    Family,
    golden,
    lines,
    one_call,
    read,
    scrape,
    serving,
)
from voicegate.testing.client import load_wav

CONTINUOUS = {
    "voicegate_process_cpu_seconds_total",
    "voicegate_event_loop_lag_seconds",
    "voicegate_gc_pause_seconds",
}
"""Counters and histograms that move with no call at all (CPU time, the event-loop probe,
garbage collections)."""
SET_BY_PROMETHEUS = {"job", "instance", "namespace", "pod"}


def _expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "voicegate.json").read_text())
    rules = one("PrometheusRule", "voicegate")
    alerts = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    return [*dashboard_exprs(dashboard), *alerts]


def _selected() -> list[tuple[str, dict[str, str]]]:
    """(metric, exact label matchers) of every selector of the dashboard and the alerts."""
    out = []
    for expr in _expressions():
        for m in re.finditer(r"\b(voicegate_\w+)\s*(?:\{([^}]*)\})?", expr):
            matchers = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', m[2] or ""))
            out.append((m[1], {k: v for k, v in matchers.items() if k not in SET_BY_PROMETHEUS}))
    return out


def _family(families: dict[str, Family], name: str) -> Family:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    family = families.get(name) or families.get(base)
    assert family is not None, f"{name} is not on /metrics"
    return family


def _check_fresh(text: str, workers: bool) -> None:
    families = read(text)
    wanted = {n for e in _expressions() for n in promql_metrics(e)} - {"up"}
    assert {"voicegate_conversation_recoveries_total", "voicegate_workers"} <= wanted
    for name in sorted(wanted):
        if name.startswith("voicegate_worker") and not workers:
            continue  # a node of one process has no workers to count
        family = _family(families, name)
        assert family.samples, f"{name}: declared but no series on a fresh node"
        if family.type in ("counter", "histogram") and family.name not in CONTINUOUS:
            moved = {k: v for k, v in family.samples.items() if v != 0}
            assert not moved, f"{name} is not at zero before any call: {moved}"
    for name, matchers in _selected():
        if name.startswith("voicegate_worker") and not workers:
            continue
        family = _family(families, name)
        found = [labels for sname, labels in family.samples if sname == name]
        assert any(set(matchers.items()) <= labels for labels in found), (
            f"no series {name}{matchers} on a fresh node"
        )


@pytest.mark.parametrize(
    ("args", "kept"),
    [(("--workers", "1"), SINGLE), (("--workers", "2"), WORKERS)],
    ids=["one-process", "workers-2"],
)
async def test_metric_names_and_labels_are_kept_and_dashboards_have_data_from_the_start(
    args: tuple[str, ...], kept: Path, speech_wav: Callable[[str], Path]
) -> None:
    pcm = load_wav(speech_wav("checking the metric names of a live gateway"))
    async with serving(*args) as url:
        fresh = await scrape(url)
        _check_fresh(fresh, workers=args[1] != "1")
        assert lines(read(fresh)) == golden(kept)
        await one_call(url, pcm)
        after = await scrape(url)
    assert lines(read(after)) == golden(kept)
    turns = read(after)["voicegate_turn_latency_seconds"].samples
    answered = sum(
        v
        for (name, labels), v in turns.items()
        if name == "voicegate_turn_latency_seconds_count" and ("stage", "total") in labels
    )
    assert answered == 1  # the call was counted, once, wherever it ran
