"""Model chunk length (``--model-chunk-ms``): CPU of the Bedrock hop against the caller's turn.

A longer chunk means fewer model events a second (50 at 20 ms, 31 at 32 ms, 25 at 40 ms), each
costing the SDK's JSON wrap, framing and SigV4 signature, but the caller's last words wait up to
one chunk longer before they leave for the model. Both sides are measured in the same round,
chunk lengths interleaved so drift on a shared machine hits them alike, and every chunk length
gets the same rounds (a round is all of them, or none):

* CPU ms per call-second of the Bedrock client at ``--calls`` calls (``bedrock_cpu``'s worker:
  real ``BedrockBackend`` calls to the stand-in's echo brain);
* the caller's turn latency (end of speech to first answer audio, less the brain's think time:
  ``gateway_ms``) through a real voicegate (``serve --backend bedrock``) and the stand-in's turns
  brain, ``--turn-calls`` callers, with that gateway's own CPU per call beside it.

Runtime is bounded: no round starts once the rounds so far say it would end after
``--budget-s`` (at least one round always runs), and every process has its own timeout. A
failed measurement is recorded in the results, never fatal. Each figure is the median of the
rounds with its min-max; the paired columns compare each chunk length with the first one
(20 ms) within the same round. Results: benchmarks/results/chunk-sizes.json (with the
provenance header: commit, dirty flag, load average) and the ``chunk-sizes`` block of
benchmarks/README.md (``benchmarks/report/chunk_sizes.py``).

Usage::

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.chunk_sizes [--rounds 4] [--chunks 20 32 40]
        [--budget-s 900] [--no-readme]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import provenance, results
from benchmarks.harness.provenance import load_avg
from benchmarks.harness.standin import cli_standin
from benchmarks.report import chunk_sizes as report
from benchmarks.report.blocks import BENCH_README, replace_block
from benchmarks.scenarios import bedrock_cpu
from benchmarks.scenarios.gateway_runs import CALLS, one_run

OUT = "chunk-sizes.json"


def _cpu(chunk_ms: int, calls: int, seconds: float) -> dict[str, Any]:
    args = argparse.Namespace(seconds=seconds, chunk_ms=chunk_ms, src=None)
    with (
        tempfile.TemporaryDirectory() as workdir,
        cli_standin(Path(workdir), ("--brain", "echo")) as env,
    ):
        run = bedrock_cpu.run_worker(env, "asyncio", "asyncio", calls, args)
    return {
        "cpu_ms_per_call_s": round(float(run["cpu_ms_per_call_s"]), 2),
        "events_sent_per_call_s": round(float(run["events_sent_per_call_s"]), 1),
        "events_received_per_call_s": round(float(run["events_received_per_call_s"]), 1),
        "load_avg_after": load_avg(),
    }


def _turn(chunk_ms: int, calls: int, seconds: float) -> dict[str, Any]:
    run = one_run(
        "voicegate",
        calls,
        seconds,
        brain="turns",
        workload="turns",
        gateway_args=("--model-chunk-ms", str(chunk_ms)),
    )
    summary = run["summary"]
    gateway = summary.get("gateway_ms") or {}
    cpu = run["gateway"].get("cpu_percent")
    return {
        "gateway_ms_p50": gateway.get("p50"),
        "gateway_ms_p95": gateway.get("p95"),
        "turns": summary.get("turns"),
        "turns_unanswered": summary.get("turns_unanswered"),
        "calls_failed": summary.get("calls_failed"),
        "gateway_cpu_percent_per_call": round(cpu / calls, 2) if cpu is not None else None,
        "load_avg_after": run["load_avg_after"],
    }


def _attempt(what: str, measure: Any, *args: Any) -> dict[str, Any]:
    try:
        return dict(measure(*args))
    except Exception as exc:  # counted in the results, never fatal
        print(f"  {what} failed: {exc!r}"[:400], flush=True)
        return {"error": f"{type(exc).__name__}: {str(exc)[-400:]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="at most this many rounds")
    parser.add_argument("--chunks", type=int, nargs="+", default=[20, 32, 40])
    parser.add_argument("--calls", type=int, default=20, help="calls for the CPU figure")
    parser.add_argument("--turn-calls", type=int, default=CALLS, help="callers of a turn run")
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    parser.add_argument("--turn-seconds", type=float, default=25.0)
    parser.add_argument("--budget-s", type=float, default=900.0, help="no round starts past it")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README block")
    args = parser.parse_args()
    meta = provenance.start()
    began = time.monotonic()
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        elapsed = time.monotonic() - began
        if rounds and elapsed + elapsed / len(rounds) > args.budget_s:
            print(f"stopping after {len(rounds)} rounds: the next would pass the budget")
            break
        row: dict[str, Any] = {"round": i, "chunks": {}}
        for ms in args.chunks:
            cpu = _attempt(f"CPU {ms} ms", _cpu, ms, args.calls, args.cpu_seconds)
            turn = _attempt(f"turns {ms} ms", _turn, ms, args.turn_calls, args.turn_seconds)
            row["chunks"][str(ms)] = {"cpu": cpu, "turn": turn}
            print(
                f"round {i + 1}/{args.rounds} chunk {ms} ms: "
                f"{cpu.get('cpu_ms_per_call_s', 'n/a')} CPU ms/call-s, turn gateway p50 "
                f"{turn.get('gateway_ms_p50', 'n/a')} ms p95 {turn.get('gateway_ms_p95', 'n/a')}"
                f" ms ({turn.get('turns', 0)} turns), load {load_avg()[0]}",
                flush=True,
            )
        rounds.append(row)
    doc = {
        "meta": provenance.finish(meta)
        | {
            "chunks": args.chunks,
            "rounds": len(rounds),
            "calls": args.calls,
            "cpu_seconds": args.cpu_seconds,
            "turn_calls": args.turn_calls,
            "turn_seconds": args.turn_seconds,
            "budget_s": args.budget_s,
            "elapsed_s": round(time.monotonic() - began, 1),
        },
        "rounds": rounds,
        "summary": report.summarise(rounds, args.chunks),
    }
    text = report.table(doc)
    print("\n" + text)
    results.write(args.out or results.RESULTS / OUT, doc)
    if not args.no_readme and args.out is None:
        replace_block(BENCH_README, report.NAME, text)


__all__ = ["OUT", "main"]
