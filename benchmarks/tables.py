"""The benchmark's arithmetic and its words: figures across runs, capacity and per-call slopes,
the one-way split, plots, and the tables written into benchmarks/README.md and README.md (the
only writer of those marked blocks)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SATURATED_CPU = 90.0
"""A step whose gateway used more than this % of its core is left out of the CPU slope."""
BUSY_LOAD = 1.5
"""A 1-minute load average above this (2 CPUs) before or during a run means a shared machine."""

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


# -- words ------------------------------------------------------------------------------------


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:g}" if isinstance(v, float | int) else str(v)


def cell(agg: dict[str, Any], name: str) -> str:
    """``median (min–max)`` across runs; just the median when all runs agree."""
    m = agg.get(name)
    if not m:
        return "–"
    if m["min"] == m["max"]:
        return _f(m["median"])
    return f"{_f(m['median'])} ({_f(m['min'])}–{_f(m['max'])})"


def _load(agg: dict[str, Any]) -> str:
    la = agg.get("load_1min")
    return f"{la['min']:g}–{la['max']:g}" if la else "–"


def _rows(section: dict[str, Any], columns: list[str]) -> list[str]:
    rows = []
    for label, conf in section.items():
        agg = conf["agg"]
        rows.append(
            f"| {label} | {agg['runs_ok']} | "
            + " | ".join(cell(agg, c) for c in columns)
            + f" | {_load(agg)} |"
        )
    return rows


def _header(title: str, columns: list[str]) -> list[str]:
    return [
        f"| {title} | runs | " + " | ".join(columns) + " | load 1-min |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]


def _meta_lines(results: dict[str, Any], name: str, made: list[str]) -> list[str]:
    meta = results["meta"]
    s = meta["settings"]
    v = meta.get("versions", {})
    dirty = f"dirty ({len(meta['git_dirty_files'])} files)" if meta["git_dirty"] else "clean"
    lines = [
        f"Run: {meta['mode']}, {meta['started_utc']} to {meta.get('finished_utc', '?')}, commit "
        f"`{meta['git_commit'][:10]}` ({dirty}), {meta['cpu_model']}, {meta['cpus']} CPUs, "
        f"{meta['platform']}. Load average before {meta['load_avg_before']}, after "
        f"{meta.get('load_avg_after')}. Raw: `results/{name}`"
        + (f"; plots: {', '.join(f'`results/{m}`' for m in made)}" if made else "")
        + ".",
        "",
        f"Every configuration: {s['runs']} fresh runs of {s['calls']} calls (capacity: N calls); "
        "cells are the median across runs with the min–max in brackets. voicegate side: "
        f"aiortc {v.get('aiortc')}, aws-sdk-bedrock-runtime {v.get('aws-sdk-bedrock-runtime')}, "
        f"awscrt {v.get('awscrt')}, Python {v.get('python')}.",
    ]
    if meta.get("parts"):
        changed = meta.get("parts_changed_files") or []
        code = (
            "their commits differ only in result files"
            if not changed
            else "their commits differ, besides result files, in "
            + ", ".join(f"`{f}`" for f in changed)
        )
        lines += [
            "",
            f"Run in {len(meta['parts'])} parts, one after the other ({code}): "
            + "; ".join(
                f"{_part_scenarios(p)} at `{p['git_commit'][:10]}`"
                f"{' (dirty)' if p['git_dirty'] else ''}, {p['started_utc']} to "
                f"{p['finished_utc']}, load {p['load_avg_before'][0]:g} before"
                for p in meta["parts"]
            )
            + ".",
        ]
    if "pipecat_venv" in meta and meta["pipecat_venv"]:
        pv = meta["pipecat_venv"]
        lines += [
            "",
            f"Pipecat: pipecat-ai {pv.get('pipecat-ai')} (aiortc {pv.get('aiortc')}, "
            f"aws-sdk-bedrock-runtime {pv.get('aws-sdk-bedrock-runtime')}), settings "
            f"{meta.get('pipecat_settings')}.",
        ]
    if "pipecat_unavailable" in meta:
        lines += ["", f"Pipecat not run: {meta['pipecat_unavailable']}"]
    busy = _busy(results)
    if busy:
        lines += ["", f"**The machine was shared during this run** ({busy}): other processes "
                  "competed for the 2 CPUs, so absolute latencies and CPU figures are upper "
                  "bounds and capacities lower bounds; systems were measured in the same "
                  "conditions, one after another."]  # fmt: skip
    return lines


def _part_scenarios(part: dict[str, Any]) -> str:
    """What a part of a combined run gave the tables, and what of it a later part replaced."""
    replaced = part.get("replaced") or []
    kept = [s for s in part["scenarios"] if s not in replaced]
    text = ", ".join(kept) if kept else "nothing kept"
    if replaced:
        text += f" ({', '.join(replaced)} measured too, replaced by a later part)"
    return text


def _busy(results: dict[str, Any]) -> str:
    """Whether other work shared the machine: the load before the run, and after each 3-call
    configuration. The capacity ladder, long calls and soak are left out: they load both CPUs
    by design (40 calls make a 1-minute load of 3-5 on their own), so their load says nothing
    about anyone else."""
    meta = results["meta"]
    loads = [meta["load_avg_before"][0]]
    for section in ("latency", "loss", "turns"):
        for conf in results.get(section, {}).values():
            la = conf["agg"].get("load_1min")
            if la:
                loads.append(la["max"])
    worst = max(loads)
    if meta["load_avg_before"][0] > BUSY_LOAD or worst > 2 * BUSY_LOAD:
        return f"1-minute load average {meta['load_avg_before'][0]:g} before, up to {worst:g}"
    return ""


def report(results: dict[str, Any], name: str, made: list[str]) -> str:
    from benchmarks.sections import capacity_lines, long_lines, soak_lines

    lines = _meta_lines(results, name, made)
    lat_cols = ["RTT p50 ms", "p95", "p99", "in p50", "out p50", "fps min", "lost", "connect ms"]
    lat_keys = ["rtt_p50", "rtt_p95", "rtt_p99", "in_p50", "out_p50", "fps_min",
                "markers_lost", "connect_p50"]  # fmt: skip
    if results.get("latency"):
        lines += ["", "**Marker round trip** (echo brain, zero think time):", ""]
        lines += _header("system", lat_cols) + _rows(results["latency"], lat_keys)
    if results.get("loss"):
        lines += ["", "**Under loss** (the caller's own RTP, both ways, seeded):", ""]
        lines += _header("system", lat_cols[:3] + ["fps min", "lost"])
        lines += _rows(
            results["loss"], ["rtt_p50", "rtt_p95", "rtt_p99", "fps_min", "markers_lost"]
        )
    if results.get("turns"):
        lines += [
            "",
            "**Turns** (speech end at the caller -> first answer audio at the caller; turns "
            "brain: 300 ms end-of-turn silence + 200 ms think = 500 ms; voicegate and Pipecat "
            "ask the stand-in's turns brain over the model hop, the stock gateways, which have "
            "no model hop, run the same brain in their own process, so their figure is aiortc's "
            "media path both ways and the pacing, nothing else):",
            "",
        ]
        cols = ["speech end -> answer p50 ms", "p95", "minus think p50", "p95", "unanswered"]
        keys = ["turn_p50", "turn_p95", "gateway_p50", "gateway_p95", "turns_unanswered"]
        lines += _header("system", cols) + _rows(results["turns"], keys)
    lines += capacity_lines(results)
    lines += long_lines(results)
    lines += soak_lines(results)
    for scenario, error in results.get("errors", {}).items():
        lines += ["", f"**{scenario}: not measured**, the scenario failed: `{error}`"]
    return "\n".join(lines)


def replace_block(path: Path, start: str, end: str, text: str) -> None:
    body = path.read_text() if path.exists() else f"{start}\n{end}\n"
    if start not in body:
        body += f"\n{start}\n{end}\n"
    head, rest = body.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def write_readmes(results: dict[str, Any], text: str, name: str, publish: bool) -> None:
    """The README blocks. A run on a shared machine (see BUSY_LOAD) is not published there
    unless ``publish``: the blocks then say so, and where the raw figures are."""
    from benchmarks.sections import sizing, summary

    busy = _busy(results)
    short = summary(results)
    deploy = sizing(results)
    if busy and not publish:
        meta = results["meta"]
        text = short = deploy = (
            f"Not published: the last run ({meta['mode']}, {meta['started_utc']}, commit "
            f"`{meta['git_commit'][:10]}`) was on a shared machine ({busy}), where other "
            "processes' load moves latencies by hundreds of ms between runs. Its raw figures are "
            f"in `benchmarks/results/{name}`; run `make bench` on a quiet machine to publish "
            "(`python -m benchmarks.run --publish` publishes anyway, marked as shared)."
        )
    replace_block(
        ROOT / "benchmarks" / "README.md", "<!-- results:start -->", "<!-- results:end -->", text
    )
    replace_block(
        ROOT / "README.md", "<!-- bench-summary:start -->", "<!-- bench-summary:end -->", short
    )
    if results.get("capacity"):  # the sizing guide quotes the capacity ladder, nothing else
        replace_block(
            ROOT / "docs" / "deploy.md", "<!-- sizing:start -->", "<!-- sizing:end -->", deploy
        )


def plots(results: dict[str, Any], out: Path) -> list[str]:
    from benchmarks.sections import plots as draw

    return draw(results, out)
