"""CPU and memory of the Bedrock path per call, for each SDK transport (asyncio, crt).

Real calls through ``BedrockBackend`` (aws-sdk-bedrock-runtime 0.12: SigV4 per event, event-
stream framing, TLS + HTTP/2) to the stand-in's ``echo`` brain, which runs in its own process so
only the client's CPU is counted. Each call sends the conversation's real opening sequence,
then audio chunks (20 ms by default, as ``--model-chunk-ms 20`` sends them) paced in real time,
and consumes the echoed 24 kHz audio: ~50 events a second each way.

Every (transport, N, run) is a fresh worker process (with a fresh stand-in), so each measures
its own peak RSS; runs are interleaved so drift on a shared machine hits both transports
alike. Reported:

* CPU ms per call-second: the worker's process CPU (all threads, CRT's included) during the
  calls, divided by N x seconds; median and min-max over the runs.
* peak RSS growth per added call: the least-squares slope of the workers' peak RSS over N.

The results go to ``benchmarks/results/bedrock_cpu.json`` (under the provenance header every
results file has) and the table between the ``bedrock-cpu`` markers of ``benchmarks/README.md``.

Usage::

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.bedrock_cpu [--seconds 20] [--calls 1 4 16 20]
        [--runs 3] [--transports asyncio crt] [--loops asyncio uvloop] [--no-readme]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import loop_handles, provenance, results
from benchmarks.harness.provenance import ROOT
from benchmarks.harness.results import RESULTS
from benchmarks.harness.standin import cli_standin
from benchmarks.report import bedrock_cpu as report
from benchmarks.report.blocks import BENCH_README, replace_block
from benchmarks.scenarios.bedrock_micro import AUDIO, PROMPT, micro, pcm
from voicegate import sonic
from voicegate.backends.bedrock import BedrockBackend, BedrockSettings

OUT = RESULTS / "bedrock_cpu.json"


# --------------------------------------------------------------------------------------------
# worker: one (transport, N) in this process
# --------------------------------------------------------------------------------------------


async def _one_call(backend: Any, seconds: float, chunk_s: float, start_at: float) -> Any:
    loop = asyncio.get_running_loop()
    stream = await backend.open()
    received = 0

    async def consume() -> None:
        nonlocal received
        async for event in stream.events():
            if isinstance(event, sonic.AudioOutput):
                received += len(event.content)

    consumer = asyncio.create_task(consume())
    samples = round(chunk_s * 16000)
    try:
        await stream.send(sonic.SessionStart())
        await stream.send(sonic.PromptStart(PROMPT))
        await stream.send(sonic.TextContentStart(PROMPT, "sys", "SYSTEM"))
        await stream.send(sonic.TextInput(PROMPT, "sys", "You are a benchmark."))
        await stream.send(sonic.ContentEnd(PROMPT, "sys"))
        await stream.send(sonic.AudioContentStart(PROMPT, AUDIO))
        chunk = pcm(samples)
        chunks = round(seconds / chunk_s)
        for i in range(chunks):
            # Real-time pacing: each chunk leaves at its own deadline (no drift accumulates).
            delay = start_at + i * chunk_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await stream.send(sonic.AudioInput(PROMPT, AUDIO, chunk))
        await stream.send(sonic.ContentEnd(PROMPT, AUDIO))
        await stream.send(sonic.PromptEnd(PROMPT))
        await stream.send(sonic.SessionEnd())
        async with asyncio.timeout(10):
            await consumer
    finally:
        consumer.cancel()
        await stream.close()
    expected = chunks * samples * 2 * 3 // 2
    if received < expected * 0.95:
        raise RuntimeError(f"echo returned {received} of ~{expected} audio bytes")
    return stream


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per kind of thread of this process (Linux /proc): CRT's vs Python's."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = "crt_threads" if name.startswith("Aws") else "python_threads"
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


async def measure(transport: str, calls: int, seconds: float, chunk_s: float) -> dict[str, Any]:
    backend = BedrockBackend(BedrockSettings(region="us-east-1", transport=transport))
    loop = asyncio.get_running_loop()
    try:
        # Warm up: client set-up, credentials, TLS connection, imports.
        await _one_call(backend, 0.5, chunk_s, loop.time())
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start_at = loop.time() + 0.2
        handles0 = loop_handles.snapshot()
        cpu0, threads0, wall0 = time.process_time(), _thread_cpu(), time.perf_counter()
        streams = await asyncio.gather(
            *(
                _one_call(backend, seconds, chunk_s, start_at + i * chunk_s / calls)
                for i in range(calls)
            )
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        threads = {k: v - threads0.get(k, 0.0) for k, v in _thread_cpu().items()}
        handles = loop_handles.snapshot()
    finally:
        await backend.aclose()
    call_s = calls * seconds
    return {
        "transport": transport,
        "calls": calls,
        "seconds": seconds,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ms_per_call_s": 1000 * cpu / call_s,
        "thread_cpu_ms_per_call_s": {k: 1000 * v / call_s for k, v in sorted(threads.items())},
        "events_sent_per_call_s": sum(s.stats.events_sent for s in streams) / call_s,
        "events_received_per_call_s": sum(s.stats.events_received for s in streams) / call_s,
        # The stream's own per-step thread-CPU clocks (StreamStats), per event of that step.
        "step_us_per_event": _steps(streams),
        "rss_before_mb": rss_before / 1024,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # Empty unless the worker counts (--count-handles): the loop's callbacks per event.
        "loop_handles_per_received_event": loop_handles.per_event(
            handles0, handles, sum(s.stats.events_received for s in streams)
        )
        if sum(handles.values())
        else {},
    }


def _worker(args: argparse.Namespace) -> None:
    """One (transport, N) in this process, pointed at the stand-in by its environment."""
    if args.count_handles:
        loop_handles.install()
    coro = measure(args.transport, args.calls[0], args.seconds, args.chunk_ms / 1000)
    if args.loop == "uvloop":  # an optional extra: imported only when asked for
        uvloop = importlib.import_module("uvloop")
        result = asyncio.run(coro, loop_factory=uvloop.new_event_loop)
    else:
        result = asyncio.run(coro)
    result["loop"] = args.loop
    print("RESULT " + json.dumps(result), flush=True)


def _steps(streams: list[Any]) -> dict[str, float]:
    sent = sum(s.stats.events_sent for s in streams) or 1
    received = sum(s.stats.events_received for s in streams) or 1
    return {
        "voicegate encode": 1e6 * sum(s.stats.encode_cpu_s for s in streams) / sent,
        "SDK send (serialize, sign, frame, write)": 1e6
        * sum(s.stats.sdk_send_cpu_s for s in streams)
        / sent,
        "voicegate decode": 1e6 * sum(s.stats.decode_cpu_s for s in streams) / received,
    }


# --------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------


def run_worker(standin: dict[str, str], transport: str, loop: str, calls: int, args: Any) -> Any:
    cmd = [sys.executable, "-m", "benchmarks.bedrock_cpu", "--worker", "--transport", transport]
    cmd += ["--loop", loop, "--calls", str(calls), "--seconds", str(args.seconds)]
    cmd += ["--chunk-ms", str(args.chunk_ms)]
    if getattr(args, "count_handles", False):
        cmd += ["--count-handles"]
    env = {k: v for k, v in os.environ.items() if k != "AWS_SESSION_TOKEN"} | standin
    src = str(args.src) if getattr(args, "src", None) else str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"worker failed: {out.stderr[-2000:]}")


def _run_one(transport: str, loop: str, calls: int, args: Any) -> Any:
    """One worker against its own fresh stand-in (the stand-in keeps a record of every session,
    so one shared for a whole run would slow down as the records pile up)."""
    with (
        tempfile.TemporaryDirectory() as workdir,
        cli_standin(Path(workdir), ("--brain", "echo")) as env,
    ):
        return run_worker(env, transport, loop, calls, args)


def _slope(points: list[tuple[float, float]]) -> float:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else float("nan")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    variants = sorted({(r["transport"], r["loop"]) for r in runs})
    table: list[dict[str, Any]] = []
    slopes: dict[str, float] = {}
    for transport, loop in variants:
        mine = [r for r in runs if (r["transport"], r["loop"]) == (transport, loop)]
        name = transport if loop == "asyncio" else f"{transport} + {loop}"
        slopes[name] = _slope([(r["calls"], r["rss_peak_mb"]) for r in mine])
        for calls in sorted({r["calls"] for r in mine}):
            cpu = [r["cpu_ms_per_call_s"] for r in mine if r["calls"] == calls]
            table.append(
                {
                    "variant": name,
                    "calls": calls,
                    "runs": len(cpu),
                    "cpu_ms_per_call_s_median": statistics.median(cpu),
                    "cpu_ms_per_call_s_min": min(cpu),
                    "cpu_ms_per_call_s_max": max(cpu),
                }
            )
    # The same run and N measured back to back: the fairest comparison on a shared machine.
    ratios: dict[str, list[float]] = {}
    by_key = {(r["run"], r["calls"], r["transport"], r["loop"]): r for r in runs}
    for (run, calls, transport, loop), r in by_key.items():
        other = by_key.get((run, calls, "crt", loop))
        if transport == "asyncio" and other is not None:
            name = "asyncio / crt" if loop == "asyncio" else f"asyncio / crt, both on {loop}"
            ratios.setdefault(name, []).append(r["cpu_ms_per_call_s"] / other["cpu_ms_per_call_s"])
    return {"table": table, "rss_mb_per_added_call": slopes, "paired_cpu_ratios": ratios}


def _handles_note(run: dict[str, Any]) -> str:
    handles = run.get("loop_handles_per_received_event") or {}
    if not handles:
        return ""
    kinds = ", ".join(f"{k} {v:.2f}" for k, v in handles["by_callback"].items())
    return f"; loop callbacks per received event {handles['all']:.2f} ({kinds})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio seconds per call")
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 4, 16, 20])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-ms", type=int, default=20, help="audio per event (20 or 32)")
    parser.add_argument("--transports", nargs="+", default=["asyncio", "crt"])
    parser.add_argument("--loops", nargs="+", default=["asyncio"], help="asyncio and/or uvloop")
    parser.add_argument("--micro-n", type=int, default=5000, help="0: skip the micro step")
    parser.add_argument(
        "--no-readme",
        action="store_true",
        help="print only: do not rewrite README.md nor results/bedrock_cpu.json",
    )
    parser.add_argument(
        "--render", action="store_true", help="rewrite README.md from the saved results only"
    )  # the saved file is only read
    parser.add_argument(
        "--src", type=Path, help="the voicegate tree measured (default this checkout's src)"
    )
    parser.add_argument(
        "--count-handles",
        action="store_true",
        help="count the event loop's callbacks per received event (costs CPU: a diagnostic)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--transport", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.render:  # the README section from the saved results (no new measurement)
        replace_block(BENCH_README, report.NAME, report.table(results.load(OUT)))
        return
    meta = provenance.start()  # the code measured: taken before anything is written
    micro_us = asyncio.run(micro(args.micro_n)) if args.micro_n else {}
    for name, value in micro_us.items():
        print(f"{name:60s} {value:8.1f} us/event")
    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for run in range(args.runs):
        for calls in args.calls:
            for transport in args.transports:
                for loop in args.loops:
                    try:
                        r = _run_one(transport, loop, calls, args)
                    except RuntimeError as exc:
                        # Counted, not fatal: a failed call is a result too.
                        failures.append(
                            {
                                "run": run,
                                "transport": transport,
                                "loop": loop,
                                "calls": calls,
                                "error": str(exc)[-600:],
                            }
                        )
                        print(f"run {run} {transport} {loop} N={calls}: FAILED", flush=True)
                        continue
                    r["run"] = run
                    runs.append(r)
                    print(
                        f"run {run} {transport:7s} {loop:7s} N={calls:2d}: "
                        f"{r['cpu_ms_per_call_s']:6.1f} CPU ms/call-s, "
                        f"peak RSS {r['rss_peak_mb']:.0f} MB; us/event "
                        + ", ".join(f"{k} {v:.1f}" for k, v in r["step_us_per_event"].items())
                        + _handles_note(r),
                        flush=True,
                    )
    result = {
        "meta": provenance.finish(meta) | {"seconds": args.seconds, "chunk_ms": args.chunk_ms},
        "micro_us_per_event": micro_us,
        "runs": runs,
        "failures": failures,
        "summary": summarise(runs),
    }
    text = report.table(result)
    print("\n" + text)
    if not args.no_readme:
        results.write(OUT, result)
        replace_block(BENCH_README, report.NAME, text)


__all__ = ["main", "measure", "run_worker", "summarise"]
