"""Capacity: every system climbs the same ladder of N concurrent calls.

A system stops at the first step where most runs no longer keep real time (a failed call, or a
call receiving under 49.5 frames/s). Capacity is the largest N up to which every step met the
budget in most of its runs; CPU and memory per call are the slope of a straight line through
every run's (N, figure), i.e. the growth per added call, not one sample divided by N.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from benchmarks.scenarios.gateway_runs import RUNS, Mode, configuration, one_run

BUDGET = {"rtt_p95_ms": 80.0, "fps_min": 49.5, "markers_lost": 0, "calls_failed": 0}
SATURATED_CPU = 90.0
"""A step whose gateway used more than this % of its core is left out of the CPU slope."""


def real_time(run: dict[str, Any]) -> bool:
    s = run.get("summary")
    if not s:
        return False
    return bool(s["calls_failed"] == 0 and (s["fps_min"] or 0) >= BUDGET["fps_min"])


def passes(run: dict[str, Any]) -> bool:
    s = run.get("summary")
    if not s:
        return False
    p95 = s["rtt_ms"]["p95"]
    return (
        s["calls_failed"] <= BUDGET["calls_failed"]
        and p95 is not None
        and p95 <= BUDGET["rtt_p95_ms"]
        and (s["fps_min"] or 0) >= BUDGET["fps_min"]
        and s.get("markers_lost", 0) <= BUDGET["markers_lost"]
    )


def _slope(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    if len({n for n, _ in points}) < 2:
        return None
    slope, intercept = np.polyfit([n for n, _ in points], [v for _, v in points], 1)
    return round(float(slope), 2), round(float(intercept), 1)


def capacity(steps: dict[str, Any]) -> dict[str, Any]:
    """Capacity within the budget, and CPU / RSS as the slope over N (growth per added call)."""
    ladder = sorted(int(n) for n in steps)
    missed = [n for n in ladder if not steps[str(n)]["passes"]]
    within = [n for n in ladder if not missed or n < missed[0]]
    live = [n for n in ladder if steps[str(n)].get("real_time", True)]
    lost = [n for n in ladder if not steps[str(n)].get("real_time", True)]
    cpu: list[tuple[int, float]] = []
    rss: list[tuple[int, float]] = []
    for n, step in steps.items():
        agg = step["agg"]
        saturated = agg.get("cpu_percent", {}).get("median", 0) > SATURATED_CPU
        for run in step["runs"]:
            g = run.get("gateway", {})
            if "cpu_percent" in g and not saturated:
                cpu.append((int(n), g["cpu_percent"]))
            if "rss_mb" in g and run["summary"]["calls_ok"] == int(n):
                rss.append((int(n), g["rss_mb"]))
    cpu_fit, rss_fit = _slope(cpu), _slope(rss)
    return {
        "capacity": max(within) if within else None,
        "first_miss": missed[0] if missed else None,
        "real_time_up_to": max(n for n in live if not lost or n < lost[0]) if live else None,
        "real_time_lost_at": lost[0] if lost else None,
        "ladder_top": ladder[-1] if ladder else None,
        "cpu_per_call_percent": cpu_fit[0] if cpu_fit else None,
        "cpu_intercept_percent": cpu_fit[1] if cpu_fit else None,
        "rss_per_call_mb": rss_fit[0] if rss_fit else None,
        "rss_intercept_mb": rss_fit[1] if rss_fit else None,
        "cpu_points": cpu,
        "rss_points": rss,
    }


def ladder(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in kinds:
        steps: dict[str, Any] = {}
        for n in mode.steps:
            result = configuration(
                f"capacity {kind} N={n}", functools.partial(one_run, kind, n, mode.capacity_s)
            )
            result["passed_runs"] = sum(passes(r) for r in result["runs"])
            result["passes"] = result["passed_runs"] * 2 > RUNS
            result["real_time"] = sum(real_time(r) for r in result["runs"]) * 2 > RUNS
            steps[str(n)] = result
            if not result["real_time"]:
                break  # the same rule for every system: stop once real time is lost
        out[kind] = {"steps": steps, **capacity(steps)}
    return out


__all__ = ["BUDGET", "SATURATED_CPU", "capacity", "ladder", "passes", "real_time"]
