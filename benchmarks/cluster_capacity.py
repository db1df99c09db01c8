"""Part (c) of benchmarks/cluster_failover.py: ``--workers 1`` against ``--workers 2``.

Each server gets a fresh Bedrock stand-in (echo brain, zero think time, as benchmarks/run.py
starts it); ``voicegate loadtest`` offers K concurrent calls and measures the marker round
trip. The server's CPU is summed over its whole process tree (the supervisor and its workers).
The per-address offer rate limit is off: the load client is one address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks.cluster_failover import ROOT, _load


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every process below it (the supervisor and its workers)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            parent[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in cpu:
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += cpu[pid]
    return total


@contextlib.asynccontextmanager
async def _plain_node(workdir: Path, extra_env: dict[str, str], *args: str) -> AsyncIterator[Any]:
    """``voicegate serve`` on loopback without a signaling secret (the load client sends no
    token), in its own process group; the group is killed afterwards."""
    from tests.support.cluster import Node

    env = {
        k: v
        for k, v in os.environ.items()
        if k != "VOICEGATE_AUTH_SECRET" and not k.startswith("AWS_")
    }
    env.update(extra_env, AWS_EC2_METADATA_DISABLED="true")
    log = workdir / f"serve-{'-'.join(args)}.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicegate", "serve", *args,
            stdout=asyncio.subprocess.PIPE, stderr=err, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(90):
            while "listening on" not in (line := (await proc.stdout.readline()).decode()):
                assert line, log.read_text()[-2000:]
        yield Node(line.rsplit(" ", 1)[1].strip(), proc, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def workers(counts: list[int], seconds: float, workdir: Path) -> list[dict[str, Any]]:
    from benchmarks.run import standin

    rows = []
    for n_workers in (1, 2):
        args = ("--backend", "bedrock", "--workers", str(n_workers), "--max-sessions", "200",
                "--offer-rate", "0")  # fmt: skip
        (workdir / f"standin{n_workers}").mkdir()
        # A fresh stand-in (echo brain, zero think time) per server, as benchmarks/run.py does.
        with standin(workdir / f"standin{n_workers}") as (model_env, _):
            async with _plain_node(workdir, model_env, *args) as node:
                await asyncio.sleep(3)
                for calls in counts:
                    rows.append(await _load_run(node, n_workers, calls, seconds, workdir))
                    print(f"workers: {rows[-1]}", flush=True)
    return rows


async def _load_run(
    node: Any, n_workers: int, calls: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    """``voicegate loadtest`` (markers) against the node; the node's whole process tree's CPU
    over the loadtest's measured window (its ``window_monotonic``, the same clock as ours)."""
    out = workdir / f"load-w{n_workers}-{calls}.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicegate", "loadtest", node.url,
        "--calls", str(calls), "--duration", str(seconds), "--json", str(out),
        stdout=asyncio.subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    samples: list[tuple[float, float]] = []
    while proc.returncode is None:
        samples.append((time.monotonic(), _tree_cpu(node.proc.pid)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):  # a CPU sample every half second, not an audio path
                await proc.wait()
    data = json.loads(out.read_text())
    t0, t1 = data["meta"]["window_monotonic"]
    inside = [s for s in samples if t0 <= s[0] <= t1] or samples
    (a_t, a_cpu), (b_t, b_cpu) = inside[0], inside[-1]
    window = b_t - a_t or float("nan")
    cpu = b_cpu - a_cpu
    summary = data["summary"]
    ok = summary["calls_ok"]
    return {
        "workers": n_workers, "calls": calls, "refused": summary["calls_failed"],
        "server_cpu_pct_of_core": round(100 * cpu / window, 1),
        "server_cpu_pct_per_call": round(100 * cpu / window / max(1, ok), 2),
        "rtt_p50_ms": summary["rtt_ms"]["p50"], "rtt_p95_ms": summary["rtt_ms"]["p95"],
        "fps_min": summary["fps_min"], "load": _load(),
    }  # fmt: skip
