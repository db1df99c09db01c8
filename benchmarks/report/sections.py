"""The suite report's longer sections (capacity, long calls, soak), the summary table of the
top-level README.md and the sizing block of docs/deploy.md."""

from __future__ import annotations

from typing import Any

from benchmarks.harness.provenance import Provenance, read
from benchmarks.report.cells import cell, cells, load_range, number

LABELS = {
    "voicegate": "voicegate (full Bedrock path: SDK + stand-in)",
    "patched": "stock gateway + voicegate's aiortc patches (no model hop)",
    "stock": "stock gateway, stock aiortc (no model hop)",
    "pipecat": "Pipecat SmallWebRTC + Nova Sonic service",
}


def _why(step: dict[str, Any]) -> str:
    agg = step["agg"]
    parts = []
    if agg.get("calls_failed", {}).get("median", 0):
        parts.append(f"calls failed {cell(agg, 'calls_failed')}")
    if (agg.get("rtt_p95", {}).get("median") or 0) > 80:
        parts.append(f"RTT p95 {cell(agg, 'rtt_p95')}")
    if (agg.get("fps_min", {}).get("median") or 50) < 49.5:
        parts.append(f"fps {cell(agg, 'fps_min')}")
    if agg.get("markers_lost", {}).get("max", 0):
        parts.append(f"lost {cell(agg, 'markers_lost')}")
    return ", ".join(parts) or f"{step['passed_runs']} of {len(step['runs'])} runs in budget"


def at_least(c: dict[str, Any], key: str, miss_key: str) -> str:
    """N, or ">= N" when the ladder ended without a miss, or "none" below its first step."""
    value = c.get(key)
    if value is None:
        return "none"
    if c.get(miss_key) is None and value == c.get("ladder_top"):
        return f">= {value}"
    return str(value)


def capacity_lines(results: dict[str, Any]) -> list[str]:
    cap = results.get("capacity")
    if not cap:
        return []
    steps = results["meta"]["settings"]["steps"]
    lines = [
        "",
        f"**Capacity** (the same ladder N = {', '.join(map(str, steps))} for every system, "
        "stopping where most runs of a step no longer keep real time; budget: no failed call, "
        "RTT p95 <= 80 ms, >= 49.5 frames/s for every call, no lost marker, met by most runs of "
        "every step up to N; per added call = slope of a line through every run's (N, figure), "
        "leaving out steps above 90 % of the gateway's core):",
        "",
        "| system | capacity within budget | first miss | keeps real time up to | CPU % of a "
        "core per added call | RSS MB per added call |",
        "|---|---|---|---|---|---|",
    ]
    for kind, c in cap.items():
        miss = c["first_miss"]
        why = f"N={miss}: {_why(c['steps'][str(miss)])}" if miss else "none"
        lines.append(
            f"| {LABELS.get(kind, kind)} | {at_least(c, 'capacity', 'first_miss')} | {why} | "
            f"{at_least(c, 'real_time_up_to', 'real_time_lost_at')} | "
            f"{number(c['cpu_per_call_percent'])} | {number(c['rss_per_call_mb'])} |"
        )
    lines += [
        "",
        "| system, N | runs in budget | RTT p50 ms | p95 | fps min | lost | gateway CPU % "
        "| RSS MB | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, c in cap.items():
        for n, step in c["steps"].items():
            agg = step["agg"]
            figures = cells(agg, "rtt_p50", "rtt_p95", "fps_min", "markers_lost", "cpu_percent")
            lines.append(
                f"| {kind} N={n} | {_in_budget(step)} | {figures} | {cell(agg, 'rss_mb')} | "
                f"{load_range(agg)} |"
            )
    return lines


def long_lines(results: dict[str, Any]) -> list[str]:
    long = results.get("long")
    if not long:
        return []
    summaries = {k: v for k, v in long.items() if k != "settings"}
    return ["", *long_table(summaries, long["settings"], "long-calls")]


def long_table(summaries: dict[str, Any], st: dict[str, Any], name: str) -> list[str]:
    """The long-call table: per brain, renewals, replay, gap and what latency did around them."""
    lines = [
        f"**Long calls across stream renewals** (stand-in ends streams after "
        f"{st['session_limit']:g} s, voicegate renews after {st['renew_after']:g} s, forced "
        f"{st['renew_force_after']:g} s later; {st['runs']} interleaved runs x {st['calls']} "
        f"calls x {st['seconds']:g} s; medians over all renewals; curves: `results/{name}.png`):",
        "",
        "| brain | renewals (forced, replaying) | audio replayed ms (max) | handover gap ms | "
        "p50 / p95 per run ms | excess after a renewal ms (max) | drained after s | late "
        "markers % | markers sent / heard | answer ms: all turns / turns a renewal replayed "
        "| lost / unanswered | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in ("echo", "echo-live", "control", "turns", "turns-slow"):
        s = summaries.get(variant)
        if not s:
            continue
        lost = s["markers_lost"] if s["workload"] == "markers" else s["turns_unanswered"]
        heard = f"{s['markers_sent']} / {s['markers_heard']}" if s["markers_sent"] else "–"
        loads = s.get("load_1min_after_runs") or []
        load = f"{number(min(loads))}–{number(max(loads))}" if loads else "–"
        answers = (
            f"{number(s.get('answer_ms_median'))} / {number(s.get('replayed_turn_answer_ms'))}"
            if s["workload"] == "turns"
            else "–"
        )
        per_run = ", ".join(
            f"{number(a)} / {number(b)}"
            for a, b in zip(s["latency_p50_per_run"], s["latency_p95_per_run"], strict=True)
        )
        lines.append(
            f"| {variant} | {s['renewals']} ({s['forced']}, {s.get('renewals_replaying', '–')}) "
            f"| {number(s['replayed_ms_median'])} "
            f"({number(s['replayed_ms_max'])}) | {number(s['gap_ms_median'])} | {per_run} "
            f"| {number(s['excess_ms_median'])} ({number(s['excess_ms_max'])}) | "
            f"{number(s['drained_after_s_median'])} | {number(s.get('late_share_percent'))} | "
            f"{heard} | {answers} | {lost} | {load} |"
        )
    return lines


def commit_label(run: Provenance) -> str:
    """The run's commit as the tables quote it, marked when the tree was dirty."""
    return f"`{run.commit[:10]}`{' (dirty tree)' if run.dirty else ''}"


def _in_budget(step: dict[str, Any]) -> str:
    """A capacity step's runs within the budget, of all its runs."""
    return f"{step['passed_runs']}/{len(step['runs'])}"


def _soak_ends(soak: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The first and last (seconds, RSS MB) samples of the soak."""
    return soak["rss_samples"][0], soak["rss_samples"][-1]


def soak_lines(results: dict[str, Any]) -> list[str]:
    soak = results.get("soak")
    if not soak or not soak.get("rss_samples"):
        return []
    (t0, mb0), (t1, mb1) = _soak_ends(soak)
    return [
        "",
        f"**Soak** (one run: {soak['summary']['calls']} calls for {t1} s): RSS {mb0} MB at "
        f"{t0} s, {mb1} MB at {t1} s; growth after the first minute "
        f"{soak['rss_growth_mb_after_first_minute']} MB; calls failed "
        f"{soak['summary']['calls_failed']}.",
    ]


def summary(results: dict[str, Any]) -> str:
    """The short table in the top-level README.md."""
    meta, run = results["meta"], read(results)
    lat, turns, cap = (results.get(k, {}) for k in ("latency", "turns", "capacity"))
    lines = [
        f"{meta['mode'].capitalize()} run {run.started_utc}, commit "
        f"{commit_label(run)}"
        + (f" (in {len(meta['parts'])} parts)" if meta.get("parts") else "")
        + f", {run.cpu_model}, load average {(run.load_before or [0])[0]:g} before / "
        f"{(run.load_after or [0])[0]:g} after. Median of "
        f"{meta['settings']['runs']} runs x {meta['settings']['calls']} calls (min–max); "
        "details and method: [benchmarks/README.md](benchmarks/README.md#results).",
        "",
        "| | marker RTT p50 / p99 ms | speech end -> answer, minus 500 ms think, ms | "
        "capacity (RTT p95 <= 80 ms) | CPU % of a core per added call |",
        "|---|---|---|---|---|",
    ]
    for kind, label in LABELS.items():
        if kind not in lat and kind not in cap:
            continue
        agg = lat.get(kind, {}).get("agg", {})
        t = turns.get(kind, {}).get("agg", {})
        c = cap.get(kind, {})
        lines.append(
            f"| {label} | {cell(agg, 'rtt_p50')} / {cell(agg, 'rtt_p99')} | "
            f"{cell(t, 'gateway_p50') if t else '–'} | "
            f"{at_least(c, 'capacity', 'first_miss') if c else '–'} | "
            f"{number(c.get('cpu_per_call_percent'))} |"
        )
    return "\n".join(lines)


def sizing(results: dict[str, Any]) -> str:
    """voicegate's own capacity ladder, for the sizing section of docs/deploy.md."""
    meta, run = results["meta"], read(results)
    c = results.get("capacity", {}).get("voicegate")
    if not c:
        return "No capacity ladder in the last benchmark run (`make bench-full` measures one)."
    soak = results.get("soak") or {}
    lines = [
        f"From `make {'bench' if meta['mode'] == 'short' else 'bench-full'}` "
        f"({run.started_utc}, commit "
        f"{commit_label(run)}, "
        f"{run.cpu_model}, load average {(run.load_before or [0])[0]:g} before): one voicegate "
        "process pinned to one core, calls on the real Bedrock path (aws-sdk-bedrock-runtime, "
        "SigV4 per event, HTTP/2 + TLS) to the stand-in's echo brain, the load client and the "
        "stand-in on the other core. Median of "
        f"{meta['settings']['runs']} runs per N, min-max in brackets; CPU in % of one core.",
        "",
        "| calls on one core | runs in budget | gateway CPU % | RTT p50 ms | RTT p95 ms | "
        "frames/s min | markers lost | RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, step in c["steps"].items():
        agg = step["agg"]
        figures = cells(agg, "cpu_percent", "rtt_p50", "rtt_p95", "fps_min", "markers_lost")
        lines.append(f"| {n} | {_in_budget(step)} | {figures} | {cell(agg, 'rss_mb')} |")
    lines += [
        "",
        f"Capacity within the budget (RTT p95 <= 80 ms, >= 49.5 frames/s, no lost marker): "
        f"**{at_least(c, 'capacity', 'first_miss')} calls per core**; real time kept up to "
        f"{at_least(c, 'real_time_up_to', 'real_time_lost_at')}. Per added call: "
        f"{number(c['cpu_per_call_percent'])} % of a core, {number(c['rss_per_call_mb'])} MB RSS.",
    ]
    if soak.get("rss_samples"):
        (t0, mb0), (t1, mb1) = _soak_ends(soak)
        lines.append(
            f"Soak: {soak['summary']['calls']} calls for {t1} s in one process, RSS {mb0} MB at "
            f"{t0} s and {mb1} MB at {t1} s."
        )
    return "\n".join(lines)


__all__ = [
    "LABELS",
    "at_least",
    "capacity_lines",
    "commit_label",
    "long_lines",
    "long_table",
    "sizing",
    "soak_lines",
    "summary",
]
