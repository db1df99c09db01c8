"""Model chunk length (``--model-chunk-ms``): CPU of the Bedrock hop against the caller's turn.

A longer chunk means fewer model events a second (50 at 20 ms, 31 at 32 ms, 25 at 40 ms), each
costing the SDK's JSON wrap, framing and SigV4 signature, but the caller's last words wait up to
one chunk longer before they leave for the model. Both sides are measured in the same run,
chunk lengths interleaved so drift on a shared machine hits them alike:

* CPU ms per call-second of the Bedrock client at ``--calls`` calls (``bedrock_cpu``'s worker:
  real ``BedrockBackend`` calls to the stand-in's echo brain);
* the caller's turn latency (end of speech to first answer audio, less the brain's think time:
  ``gateway_ms``) through a real voicegate (``serve --backend bedrock``) and the stand-in's turns
  brain, ``gateway_runs.CALLS`` callers.

Each figure is the median of the runs with its min-max. Results: benchmarks/results/
chunk_sizes.json (with the provenance header), or ``--out``.

Usage::

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.chunk_sizes [--runs 3] [--chunks 20 32 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import provenance, results
from benchmarks.harness.standin import cli_standin
from benchmarks.scenarios import bedrock_cpu
from benchmarks.scenarios.gateway_runs import CALLS, one_run

OUT = "chunk_sizes.json"


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def _cpu(chunk_ms: int, calls: int, seconds: float) -> float:
    args = argparse.Namespace(seconds=seconds, chunk_ms=chunk_ms, src=None)
    with (
        tempfile.TemporaryDirectory() as workdir,
        cli_standin(Path(workdir), ("--brain", "echo")) as env,
    ):
        run = bedrock_cpu.run_worker(env, "asyncio", "asyncio", calls, args)
    return float(run["cpu_ms_per_call_s"])


def _turn(chunk_ms: int, seconds: float) -> float | None:
    run = one_run(
        "voicegate",
        CALLS,
        seconds,
        brain="turns",
        workload="turns",
        gateway_args=("--model-chunk-ms", str(chunk_ms)),
    )
    gateway = run["summary"].get("gateway_ms") or {}
    p50 = gateway.get("p50")
    return float(p50) if p50 is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=[20, 32, 40])
    parser.add_argument("--calls", type=int, default=20, help="calls for the CPU figure")
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    parser.add_argument("--turn-seconds", type=float, default=13.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    meta = provenance.start()
    cpu: dict[int, list[float]] = {ms: [] for ms in args.chunks}
    turn: dict[int, list[float]] = {ms: [] for ms in args.chunks}
    for run in range(args.runs):
        for ms in args.chunks:
            cpu[ms].append(_cpu(ms, args.calls, args.cpu_seconds))
            t = _turn(ms, args.turn_seconds)
            if t is not None:
                turn[ms].append(t)
            print(
                f"run {run + 1}/{args.runs} chunk {ms} ms: {cpu[ms][-1]:.1f} CPU ms/call-s, "
                f"turn gateway p50 {t if t is not None else 'n/a'} ms",
                flush=True,
            )
    table: list[dict[str, Any]] = [
        {
            "chunk_ms": ms,
            "cpu_ms_per_call_s": _spread(cpu[ms]),
            "turn_gateway_ms_p50": _spread(turn[ms]) if turn[ms] else None,
        }
        for ms in args.chunks
    ]
    for row in table:
        print(row)
    doc = {
        "meta": provenance.finish(meta)
        | {"runs": args.runs, "calls": args.calls, "turn_calls": CALLS},
        "table": table,
    }
    results.write(args.out or results.RESULTS / OUT, doc)


__all__ = ["main"]
