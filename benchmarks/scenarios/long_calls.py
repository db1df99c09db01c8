"""Long calls: latency over time across model-stream renewals, and what a renewal costs.

    python -m benchmarks.long_calls [--seconds 45] [--runs 3] [--calls 3]
        [--variants echo,echo-live,turns] [--session-limit 15] [--renew-after 8]

The stand-in ends every model stream after ``--session-limit`` seconds (as Bedrock does at ~8
minutes) and voicegate renews its stream after ``--renew-after`` seconds (at a natural point, or
forced ``--renew-force-after`` seconds later), so a short call crosses several renewals. Each
variant is ``--runs`` fresh runs of ``--calls`` calls:

- ``echo``: markers through the per-chunk echo brain. Continuous speech never gives a natural
  point, so every renewal is forced mid-speech, and the audio voicegate replays into the new
  stream (the user's speech since the last final transcript; the echo brain makes none) is
  echoed a second time;
- ``echo-live``: the same, with an echo that does not answer audio arriving in a burst ahead of
  real time (the replay), to separate the echo's double answer from the gateway's own cost;
- ``control``: ``echo`` without renewals (no session limit, renewal after 400 s): what the same
  machine does to the same calls meanwhile, so that a bump a renewal did not cause is seen;
- ``turns``: turns through the turns brain, which answers each turn once and sends a USER
  transcript as Nova Sonic does: the conversation a renewal is built for;
- ``turns-slow``: the same with a brain that takes 1 s from the end of a turn to its answer
  (300 ms end-of-turn silence + 700 ms think, closer to a real model), longer than the 0.5 s of
  user silence voicegate takes for a natural renewal point.

Runs are interleaved (run 1 of every variant, then run 2...) so that a shared machine's load
falls on every variant alike.

Prints and writes benchmarks/results/long-calls.json and long-calls.png: per renewal, the audio
replayed, the handover gap, the RTT before, its peak after and how long it took to drain back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import procs, provenance, results
from benchmarks.harness.results import RESULTS
from benchmarks.harness.standin import benchmark_standin
from benchmarks.report import long_calls as report
from benchmarks.report import plots
from benchmarks.report.blocks import BENCH_README, replace_block
from benchmarks.systems.gateways import gateway
from voicegate.testing.signals import percentiles

BRAINS = {
    "echo": "echo",
    "echo-live": "echo-live",
    "control": "echo",
    "turns": "turns",
    "turns-slow": "turns",
}
THINK_S = {"turns-slow": 0.7}
VARIANTS = ("echo", "echo-live", "control", "turns")
"""What the full benchmark runs; ``turns-slow`` on request (--variants)."""


def one_run(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vgbench-long-") as name:
        tmp = Path(name)
        control = variant == "control"
        extra = ["--renew-after", str(400 if control else args.renew_after)]
        extra += ["--renew-force-after", str(args.renew_force_after)]
        limit = None if control else args.session_limit
        with (
            benchmark_standin(tmp, BRAINS[variant], limit, THINK_S.get(variant, 0.2)) as (info, _),
            gateway("voicegate", info, tmp, extra) as (url, _),
        ):
            workload = "turns" if variant.startswith("turns") else "markers"
            think = info.get("think_ms") if workload == "turns" else None
            return procs.loadtest(
                url, tmp / "load.json", args.calls, args.seconds, workload=workload,
                think_ms=think, warmup=1.0, ramp=5,
            )  # fmt: skip


def renewals(call: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    """Per renewal seen by this call: what was replayed, and the latency around it."""
    key = "rtt" if workload == "markers" else "turn"
    series = list(zip(call.get(f"{key}_at_s", []), call.get(f"{key}_ms", []), strict=True))
    out = []
    for event in call.get("server_events", []):
        if event.get("kind") not in ("renewal", "recovery"):
            continue
        at = event["at_s"]
        before = [ms for t, ms in series if at - 4.0 <= t < at - 0.5]
        after = [(t, ms) for t, ms in series if at - 0.5 <= t <= at + 8.0]
        base = statistics.median(before) if before else None
        peak = max((ms for _, ms in after), default=None)
        drained = None
        if base is not None and after:
            late = [t for t, ms in after if ms > base + 20.0]
            drained = round(max(late) - at, 2) if late else 0.0
        out.append(
            {
                "kind": event["kind"],
                "at_s": at,
                "forced": event.get("forced"),
                "gap_ms": event.get("gap_ms"),
                "replayed_ms": event.get("replayed_ms"),
                "rtt_before_ms": base,
                "rtt_peak_after_ms": peak,
                "excess_ms": round(peak - base, 1) if peak is not None and base else None,
                "drained_after_s": drained,
            }
        )
    return out


def _median(values: list[Any]) -> float | None:
    """The median of the values there are (None for none), as every percentile: one decimal."""
    p50: float | None = percentiles([v for v in values if v is not None])["p50"]
    return p50


def replayed_turns(call: dict[str, Any]) -> list[float]:
    """Answer times of the turns that a renewal replayed: the last turn that ended within 6 s
    before a renewal which replayed audio (its answer was pending when the stream changed)."""
    turns = list(zip(call.get("turn_at_s", []), call.get("turn_ms", []), strict=True))
    out = []
    for event in call.get("server_events", []):
        if event.get("kind") == "renewal" and (event.get("replayed_ms") or 0) > 0:
            before = [ms for t, ms in turns if 0 < event["at_s"] - t < 6.0]
            if before:
                out.append(before[-1])
    return out


def bumps(call: dict[str, Any], threshold_ms: float = 100.0) -> int:
    """Markers whose round trip exceeds the call's median by ``threshold_ms``."""
    rtts = call.get("rtt_ms", [])
    if not rtts:
        return 0
    base = statistics.median(rtts)
    return sum(1 for ms in rtts if ms > base + threshold_ms)


def summarize(variant: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    workload = "turns" if variant.startswith("turns") else "markers"
    events = [r for d in docs for c in d["calls"] for r in renewals(c, workload)]
    key = "rtt_ms" if workload == "markers" else "turn_ms"
    calls = [c for d in docs for c in d["calls"]]
    measured = sum(len(c.get(key, [])) for c in calls)
    return {
        "variant": variant,
        "workload": workload,
        "runs": len(docs),
        "calls_failed": sum(d["summary"]["calls_failed"] for d in docs),
        "renewals": len(events),
        "forced": sum(1 for e in events if e["forced"]),
        "replayed_ms_median": _median([e["replayed_ms"] for e in events]),
        "replayed_ms_max": max((e["replayed_ms"] or 0 for e in events), default=None),
        "gap_ms_median": _median([e["gap_ms"] for e in events]),
        "latency_p50_per_run": [d["summary"][key]["p50"] for d in docs],
        "latency_p95_per_run": [d["summary"][key]["p95"] for d in docs],
        "before_ms_median": _median([e["rtt_before_ms"] for e in events]),
        "excess_ms_median": _median([e["excess_ms"] for e in events]),
        "excess_ms_max": max((e["excess_ms"] or 0 for e in events), default=None),
        "drained_after_s_median": _median([e["drained_after_s"] for e in events]),
        "markers_lost": sum(d["summary"].get("markers_lost", 0) for d in docs),
        "markers_sent": sum(c.get("markers_sent", 0) for c in calls),
        "markers_heard": sum(c.get("markers_heard", 0) for c in calls),
        "turns_unanswered": sum(d["summary"].get("turns_unanswered", 0) for d in docs),
        "renewals_replaying": sum(1 for e in events if (e["replayed_ms"] or 0) > 0),
        "replayed_turn_answer_ms": _median([ms for c in calls for ms in replayed_turns(c)])
        if workload == "turns"
        else None,
        "answer_ms_median": _median([ms for c in calls for ms in c.get("turn_ms", [])])
        if workload == "turns"
        else None,
        "late_share_percent": round(100 * sum(bumps(c) for c in calls) / measured, 1)
        if measured and workload == "markers"
        else None,
        "load_1min_after_runs": [d["meta"]["load_avg_after"][0] for d in docs],
        "events": events,
    }


def interleaved(variants: list[str], args: argparse.Namespace) -> dict[str, list[Any]]:
    """Run 1 of every variant, then run 2...: a shared machine's load falls on all alike."""
    runs: dict[str, list[Any]] = {v: [] for v in variants}
    for i in range(args.runs):
        for variant in variants:
            print(f"  long calls: {variant} run {i + 1}/{args.runs} ...", flush=True)
            runs[variant].append(one_run(variant, args))
    return runs


def render(name: str = "long-calls") -> None:
    """Redraw results/NAME.png and the NAME block of benchmarks/README.md from NAME.json."""
    doc = results.load(f"{name}.json")
    plots.long_calls(doc, RESULTS / f"{name}.png")
    replace_block(BENCH_README, name, report.block(doc, name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--session-limit", type=float, default=15.0)
    parser.add_argument("--renew-after", type=float, default=8.0)
    parser.add_argument("--renew-force-after", type=float, default=2.0)
    parser.add_argument("--name", default="long-calls", help="results/NAME.json and NAME.png")
    parser.add_argument(
        "--render", action="store_true", help="only redraw NAME.png and its README block"
    )
    args = parser.parse_args()
    if args.render:
        render(args.name)
        return
    variants = [v for v in args.variants.split(",") if v]
    doc: dict[str, Any] = {
        "meta": provenance.start(),
        "settings": vars(args),
        "variants": variants,
        "runs": {},
        "summary": {},
    }
    doc["runs"] = interleaved(variants, args)
    for variant in variants:
        doc["summary"][variant] = summarize(variant, doc["runs"][variant])
    provenance.finish(doc["meta"])
    results.write(RESULTS / f"{args.name}.json", doc)
    render(args.name)
    for s in doc["summary"].values():
        print(json.dumps({k: v for k, v in s.items() if k != "events"}))


__all__ = [
    "BRAINS",
    "VARIANTS",
    "interleaved",
    "main",
    "one_run",
    "render",
    "renewals",
    "replayed_turns",
    "summarize",
]
