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

The results go to ``benchmarks/results/bedrock_cpu.json`` (with the git commit and whether the
tree was dirty) and the table between the ``bedrock-cpu`` markers of ``benchmarks/README.md``.

Usage::

    PYTHONPATH=src .venv/bin/python -m benchmarks.bedrock_cpu [--seconds 20] [--calls 1 4 16 20]
        [--runs 3] [--transports asyncio crt] [--loops asyncio uvloop] [--no-readme]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bedrock_micro import AUDIO, PROMPT, micro, pcm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


# --------------------------------------------------------------------------------------------
# worker: one (transport, N) in this process
# --------------------------------------------------------------------------------------------


async def _one_call(backend: Any, seconds: float, chunk_s: float, start_at: float) -> Any:
    from voicegate import sonic

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
    from voicegate.backends.bedrock import BedrockBackend, BedrockSettings

    backend = BedrockBackend(BedrockSettings(region="us-east-1", transport=transport))
    loop = asyncio.get_running_loop()
    try:
        # Warm up: client set-up, credentials, TLS connection, imports.
        await _one_call(backend, 0.5, chunk_s, loop.time())
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start_at = loop.time() + 0.2
        cpu0, threads0, wall0 = time.process_time(), _thread_cpu(), time.perf_counter()
        streams = await asyncio.gather(
            *(
                _one_call(backend, seconds, chunk_s, start_at + i * chunk_s / calls)
                for i in range(calls)
            )
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        threads = {k: v - threads0.get(k, 0.0) for k, v in _thread_cpu().items()}
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
        "rss_before_mb": rss_before / 1024,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _worker(args: argparse.Namespace) -> None:
    standin = json.loads(os.environ["BEDROCK_CPU_STANDIN"])
    os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = standin["endpoint"]
    os.environ["SSL_CERT_FILE"] = standin["ca_file"]
    os.environ["AWS_ACCESS_KEY_ID"] = standin["access_key"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = standin["secret_key"]
    os.environ.pop("AWS_SESSION_TOKEN", None)
    coro = measure(args.transport, args.calls[0], args.seconds, args.chunk_ms / 1000)
    if args.loop == "uvloop":
        import uvloop

        result = asyncio.run(coro, loop_factory=uvloop.new_event_loop)
    else:
        result = asyncio.run(coro)
    result["loop"] = args.loop
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------


def start_standin(cert_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run the echo stand-in in a child process; returns it and its connection details."""
    code = (
        "import asyncio, json, sys\n"
        "from voicegate.standin.server import StandIn\n"
        "async def main():\n"
        f"    async with StandIn(brain='echo', cert_dir={str(cert_dir)!r}) as s:\n"
        "        print('STANDIN', json.dumps({'endpoint': s.endpoint, 'ca_file': str(s.ca_file),\n"
        "                          'access_key': s.access_key, 'secret_key': s.secret_key}),\n"
        "              flush=True)\n"
        "        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    for _ in range(100):  # its log lines share stdout; the details are marked
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("STANDIN "):
            return proc, json.loads(line.removeprefix("STANDIN "))
    proc.kill()
    raise RuntimeError("the stand-in did not start")


def _run_worker(standin: dict[str, str], transport: str, loop: str, calls: int, args: Any) -> Any:
    cmd = [sys.executable, "-m", "benchmarks.bedrock_cpu", "--worker", "--transport", transport]
    cmd += ["--loop", loop, "--calls", str(calls), "--seconds", str(args.seconds)]
    cmd += ["--chunk-ms", str(args.chunk_ms)]
    env = {**os.environ, "BEDROCK_CPU_STANDIN": json.dumps(standin)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"worker failed: {out.stderr[-2000:]}")


def _run_one(transport: str, loop: str, calls: int, args: Any) -> Any:
    """One worker against its own fresh stand-in (the stand-in keeps a record of every session,
    so one shared for a whole run would slow down as the records pile up)."""
    with tempfile.TemporaryDirectory() as cert_dir:
        proc, standin = start_standin(Path(cert_dir))
        try:
            return _run_worker(standin, transport, loop, calls, args)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _git() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout

    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip()),
    }


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


def render(result: dict[str, Any]) -> str:
    meta, summary = result["meta"], result["summary"]
    dirty = " (dirty tree)" if meta["git"]["dirty"] else ""
    lines = [
        f"Run {meta['started']} to {meta['ended']}, commit `{meta['git']['commit'][:12]}`{dirty}, "
        f"{meta['seconds']:g} s calls, {meta['chunk_ms']} ms chunks, load average before "
        f"{meta['load_before']} / after {meta['load_after']}, {meta['machine']}. "
        "Generated by `benchmarks/bedrock_cpu.py`; raw: `results/bedrock_cpu.json`.",
        "",
        "| transport | calls | CPU ms per call-second: median (min-max) | % of a core per call |",
        "|---|---|---|---|",
    ]
    for row in summary["table"]:
        med = row["cpu_ms_per_call_s_median"]
        lines.append(
            f"| {row['variant']} | {row['calls']} | {med:.1f} ({row['cpu_ms_per_call_s_min']:.1f}"
            f"-{row['cpu_ms_per_call_s_max']:.1f}), {row['runs']} runs | {med / 10:.2f} |"
        )
    lines.append("")
    for f in result["failures"]:
        lines.append(
            f"- failed: {f['transport']} ({f['loop']} loop) N={f['calls']} in run {f['run']}: "
            + f["error"].strip().splitlines()[-1][:200]
        )
    for name, values in summary.get("paired_cpu_ratios", {}).items():
        lines.append(
            f"- CPU {name}, same run and N back to back: median {statistics.median(values):.2f} "
            f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} pairs)"
        )
    for name, slope in summary["rss_mb_per_added_call"].items():
        lines.append(f"- peak RSS growth per added call, {name}: {slope:.2f} MB (slope over N)")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = ROOT / "benchmarks" / "README.md"
    start, end = "<!-- bedrock-cpu:start -->", "<!-- bedrock-cpu:end -->"
    body = readme.read_text()
    if start not in body:
        body += f"\n{start}\n{end}\n"
    head, rest = body.split(start, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


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
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--transport", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.render:
        # Re-render the README section from the saved results (no new measurement).
        saved = json.loads((RESULTS / "bedrock_cpu.json").read_text())
        saved["summary"] = summarise(saved["runs"])
        (RESULTS / "bedrock_cpu.json").write_text(json.dumps(saved, indent=1) + "\n")
        write_readme(render(saved))
        return
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    git = _git()  # the code measured: taken before anything is written
    load_before = [round(x, 2) for x in os.getloadavg()]
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
                        f"peak RSS {r['rss_peak_mb']:.0f} MB",
                        flush=True,
                    )
    result = {
        "meta": {
            "started": started,
            "ended": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": git,
            "seconds": args.seconds,
            "chunk_ms": args.chunk_ms,
            "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}",
        },
        "micro_us_per_event": micro_us,
        "runs": runs,
        "failures": failures,
        "summary": summarise(runs),
    }
    text = render(result)
    print("\n" + text)
    if not args.no_readme:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bedrock_cpu.json").write_text(json.dumps(result, indent=1) + "\n")
        write_readme(text)


if __name__ == "__main__":
    main()
