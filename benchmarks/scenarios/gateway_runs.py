"""What every gateway scenario of the suite is made of: fresh runs of one configuration.

A run is a new stand-in and a new gateway, one ``voicegate loadtest`` against it; a
configuration is RUNS such runs, summed up per figure as the median across runs with the
min-max beside it (:func:`aggregate`).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import procs
from benchmarks.harness.provenance import load_avg
from benchmarks.harness.standin import benchmark_standin
from benchmarks.systems.gateways import STOCK_KINDS, gateway

RUNS = 3
CALLS = 3


@dataclass
class Mode:
    name: str
    latency_s: float
    losses: tuple[float, ...]
    peer_losses: tuple[float, ...]
    turns_s: float
    capacity_s: float
    steps: tuple[int, ...]
    long_s: float
    soak_s: float


SHORT = Mode("short", 8, (0.05,), (), 13, 6, (3, 6, 12), 0, 0)
FULL = Mode(
    "full", 20, (0.01, 0.05, 0.10), (0.05,), 25, 12, (3, 6, 10, 15, 20, 30, 40, 60), 45, 600
)

METRICS = {
    "rtt_p50": ("summary", "rtt_ms", "p50"),
    "rtt_p95": ("summary", "rtt_ms", "p95"),
    "rtt_p99": ("summary", "rtt_ms", "p99"),
    "turn_p50": ("summary", "turn_ms", "p50"),
    "turn_p95": ("summary", "turn_ms", "p95"),
    "gateway_p50": ("summary", "gateway_ms", "p50"),
    "gateway_p95": ("summary", "gateway_ms", "p95"),
    "fps_min": ("summary", "fps_min"),
    "markers_lost": ("summary", "markers_lost"),
    "turns_unanswered": ("summary", "turns_unanswered"),
    "calls_failed": ("summary", "calls_failed"),
    "connect_p50": ("summary", "connect_ms", "p50"),
    "loss_percent": ("summary", "loss_percent"),
    "cpu_percent": ("gateway", "cpu_percent"),
    "rss_mb": ("gateway", "rss_mb"),
    "in_p50": ("one_way", "in_p50"),
    "out_p50": ("one_way", "out_p50"),
}
"""Each figure a table shows: its path in a run's record."""


def _get(run: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = run
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: median, min and max across the runs that produced it."""
    out: dict[str, Any] = {"runs_ok": sum(1 for r in runs if "summary" in r)}
    for name, path in METRICS.items():
        values = [v for r in runs if (v := _get(r, path)) is not None]
        if values:
            out[name] = {
                "median": round(float(statistics.median(values)), 1),
                "min": round(float(min(values)), 1),
                "max": round(float(max(values)), 1),
            }
    loads = [r["load_avg_after"][0] for r in runs if "load_avg_after" in r]
    if loads:
        out["load_1min"] = {"min": min(loads), "max": max(loads)}
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        out["errors"] = errors
    return out


def one_way(doc: dict[str, Any], marks: list[float]) -> dict[str, Any]:
    """Split each marker round trip at the stand-in's detection of that marker (same clock)."""
    t0 = doc["meta"]["window_monotonic"][0]
    ins: list[float] = []
    for call in doc["calls"]:
        for at, rtt in zip(call.get("rtt_at_s", []), call.get("rtt_ms", []), strict=True):
            sent = t0 + at
            arrived = next((m for m in marks if sent < m < sent + rtt / 1000), None)
            if arrived is not None:
                ins.append((arrived - sent) * 1000)
    rtts = [ms for c in doc["calls"] for ms in c.get("rtt_ms", [])]
    if not ins or not rtts:
        return {}
    in_p50 = float(np.percentile(ins, 50))
    return {"in_p50": round(in_p50, 1), "out_p50": round(float(np.median(rtts)) - in_p50, 1)}


def one_run(
    kind: str,
    calls: int,
    seconds: float,
    brain: str = "echo",
    workload: str = "markers",
    gateway_args: tuple[str, ...] = (),
    **impair: float,
) -> dict[str, Any]:
    """A fresh stand-in and gateway, one loadtest; the run's summary, gateway CPU/RSS over the
    measured window, one-way split (markers), load average after.

    The stock gateways have no model hop: on the turns workload they answer with the stand-in's
    turns rules run in their own process, at the same defaults as the stand-in's turns brain (one
    owner: voicegate.standin.scripted_turns), so the think time subtracted is the same."""
    extra = ["--brain", "turns"] if kind in STOCK_KINDS and brain == "turns" else []
    extra += gateway_args
    with tempfile.TemporaryDirectory(prefix=f"vgbench-{kind}-") as name:
        tmp = Path(name)
        with (
            benchmark_standin(tmp, brain) as (info, marks_file),
            gateway(kind, info, tmp, extra) as (url, sampler),
        ):
            think = info.get("think_ms") if workload == "turns" else None
            ramp = 20 if calls <= 20 else 10
            doc = procs.loadtest(
                url, tmp / "load.json", calls, seconds, workload=workload, think_ms=think,
                warmup=1.5, ramp=ramp, **impair,
            )  # fmt: skip
            t0, t1 = doc["meta"]["window_monotonic"]
            window = sampler.window(t0, t1)
        marks = json.loads(marks_file.read_text()) if marks_file.exists() else []
        run: dict[str, Any] = {
            "summary": doc["summary"],
            "gateway": window,
            "one_way": one_way(doc, marks) if workload == "markers" else {},
            "load_avg_after": load_avg(),
        }
        if doc["summary"]["calls_ok"] == 0:
            run["gateway_log_tail"] = (tmp / f"{kind}.log").read_text()[-1500:]
        return run


def configuration(label: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """RUNS runs of one configuration (a run that crashes is recorded, never fatal)."""
    runs = []
    for i in range(RUNS):
        print(f"  {label}: run {i + 1}/{RUNS} ...", flush=True)
        try:
            runs.append(make())
        except Exception as exc:
            runs.append({"error": f"{type(exc).__name__}: {exc}"})
    return {"runs": runs, "agg": aggregate(runs)}


__all__ = [
    "CALLS",
    "FULL",
    "METRICS",
    "RUNS",
    "SHORT",
    "Mode",
    "aggregate",
    "configuration",
    "one_run",
    "one_way",
]
