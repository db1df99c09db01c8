"""Gateway CPU per call, the full Bedrock path against the media path alone, in the same run.

``voicegate`` (``serve --backend bedrock``: media path, conversation, the SDK's model hop to the
stand-in) and ``patched`` (the stock gateway with voicegate's aiortc patches and no model hop)
take turns at the same N, round after round, so drift on a shared machine hits both alike. Each
run is a fresh stand-in and gateway (``gateway_runs.one_run``, markers through the echo brain);
the figure is the gateway process's CPU over the measured window divided by N, with the run's
latency and real-time figures beside it. The ratio column pairs the two systems of one round.

Results: benchmarks/results/paired-cpu.json (with the provenance header) and the ``paired-cpu``
block of benchmarks/README.md (``benchmarks/report/paired_cpu.py``).

Usage::

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.paired_cpu [--calls 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import provenance, results
from benchmarks.report import paired_cpu as report
from benchmarks.report.blocks import BENCH_README, replace_block
from benchmarks.scenarios.gateway_runs import one_run

OUT = "paired-cpu.json"
KINDS = ("voicegate", "patched")


def _one(kind: str, calls: int, seconds: float) -> dict[str, Any]:
    try:
        run = one_run(kind, calls, seconds)
    except Exception as exc:  # counted in the results, never fatal
        return {"error": f"{type(exc).__name__}: {str(exc)[-400:]}"}
    summary, gateway = run["summary"], run["gateway"]
    cpu = gateway.get("cpu_percent")
    return {
        "cpu_percent": cpu,
        "cpu_percent_per_call": round(cpu / calls, 3) if cpu is not None else None,
        "rss_mb": gateway.get("rss_mb"),
        "rtt_p95_ms": (summary.get("rtt_ms") or {}).get("p95"),
        "fps_min": summary.get("fps_min"),
        "calls_failed": summary.get("calls_failed"),
        "failures": summary.get("failures"),
        "markers_lost": summary.get("markers_lost"),
        "load_avg_after": run["load_avg_after"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0, help="measured window per run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    meta = provenance.start()
    began = time.monotonic()
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        row: dict[str, Any] = {"round": i}
        for kind in KINDS:
            row[kind] = _one(kind, args.calls, args.seconds)
            print(f"round {i + 1}/{args.rounds} {kind}: {row[kind]}", flush=True)
        rounds.append(row)
    doc = {
        "meta": provenance.finish(meta)
        | {
            "calls": args.calls,
            "rounds": len(rounds),
            "seconds": args.seconds,
            "kinds": list(KINDS),
            "elapsed_s": round(time.monotonic() - began, 1),
        },
        "rounds": rounds,
        "summary": report.summarise(rounds, list(KINDS)),
    }
    text = report.table(doc)
    print("\n" + text)
    results.write(args.out or results.RESULTS / OUT, doc)
    if args.out is None:
        replace_block(BENCH_README, report.NAME, text)


__all__ = ["KINDS", "OUT", "main"]
