"""Soak: many short calls, one after another and many at once; does the server give it all back?

Each call is a real aiortc peer on loopback talking to voicegate's echo backend: it connects,
waits for ``bot-ready``, speaks a short tone, waits for a few frames of the answer and hangs up
(half by ``DELETE``, half by just closing its peer connection, so both teardown paths run).
Before and after, with every call closed and garbage collected, it takes the process's RSS,
asyncio tasks, threads and open file descriptors. Server and callers share one process, so the
figures include the callers' side too (the stricter measure: a leak on either side shows).

Threads are reported two ways: the event loop's default executor (``asyncio_*`` threads; aiortc
encodes there) is a shared pool that grows lazily up to a fixed bound, so it is warmed up first
and counted apart; every other thread (aiortc's one decoder thread per receiver, recording
writers) must be back to the baseline exactly.

The test suite runs a short version (tests/test_soak.py); for the long one::

    .venv/bin/python -m benchmarks.soak --sequential 500 --batches 25 --batch-size 20

The full suite's soak (:func:`rss_soak`) is another measure: one gateway in its own process,
10 calls for ten minutes from ``voicegate loadtest``, its RSS sampled as it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from benchmarks.harness import procs
from benchmarks.harness.standin import benchmark_standin
from benchmarks.systems.gateways import gateway
from voicegate import logs, media
from voicegate.backends.echo import EchoBackend
from voicegate.config import ServeConfig, media_setup, resolve
from voicegate.media import ice
from voicegate.observability.process import open_fds, rss_bytes
from voicegate.signaling.app import SESSIONS, create_app
from voicegate.testing.client import CallClient

TONE = (8000 * np.sin(np.arange(int(48000 * 0.3)) * 2 * np.pi * 300 / 48000)).astype(np.int16)
CALL_TIMEOUT = 30.0
SNAPSHOTS: list[Any] = []


def _trace_snapshot() -> None:
    if tracemalloc.is_tracing():
        SNAPSHOTS.append(tracemalloc.take_snapshot())


@dataclass
class Snapshot:
    rss_mb: float
    tasks: int
    call_threads: list[str]
    executor_threads: int
    fds: int

    @staticmethod
    def take() -> Snapshot:
        names = [t.name for t in threading.enumerate()]
        return Snapshot(
            rss_mb=round(rss_bytes() / 2**20, 2),
            tasks=len(asyncio.all_tasks()),
            call_threads=sorted(n for n in names if not n.startswith("asyncio_")),
            executor_threads=sum(n.startswith("asyncio_") for n in names),
            fds=open_fds(),
        )


@dataclass
class SoakReport:
    calls: int
    sequential: int
    concurrent: int
    batch_size: int
    seconds: float
    baseline: Snapshot
    after: Snapshot
    peak_rss_mb: float
    peak_threads: int
    peak_calls: int
    rss_per_call_kb: float
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.asynccontextmanager
async def echo_server(**overrides: Any) -> AsyncIterator[tuple[str, web.Application]]:
    """A voicegate server with the echo backend on 127.0.0.1 (an ephemeral port)."""
    base = resolve(None, env={})
    values = {f: getattr(base, f) for f in ServeConfig.__dataclass_fields__}
    values.update(overrides, port=0)
    config = ServeConfig(**values)
    media.configure(media_setup(config))
    app = create_app(config, EchoBackend())
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()


async def one_call(url: str, hangup_by_delete: bool) -> None:
    client = CallClient(url)
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            await client.connect()
            await client.wait_for("bot-ready", 10)
            client.mic.play(TONE)
            await client.wait_frames(5, 10)
            if hangup_by_delete:
                status = await client.hangup()
                if status != 204:
                    raise RuntimeError(f"hang-up answered {status}")
    finally:
        await client.close()


async def settle(app: web.Application, timeout: float = 20.0) -> None:
    """Wait until every call is closed, then let callbacks run and collect garbage."""
    async with asyncio.timeout(timeout):
        while app[SESSIONS]:
            for session in list(app[SESSIONS].values()):
                await session.closed.wait()
            await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0.05)
        gc.collect()


async def soak(
    url: str,
    app: web.Application,
    sequential: int,
    batches: int,
    batch_size: int,
    warmup: int = 5,
) -> SoakReport:
    """Warm up, take the baseline, run the calls, settle, take the after figures."""
    for i in range(warmup):
        await one_call(url, i % 2 == 0)
    # One concurrent batch first: the shared executor reaches its working size.
    await asyncio.gather(*(one_call(url, i % 2 == 0) for i in range(batch_size)))
    await settle(app)
    _trace_snapshot()
    baseline = Snapshot.take()
    peaks = {"rss_mb": baseline.rss_mb, "threads": 0.0, "calls": 0.0}

    async def sample_peaks() -> None:
        while True:
            peaks["rss_mb"] = max(peaks["rss_mb"], rss_bytes() / 2**20)
            peaks["threads"] = max(peaks["threads"], threading.active_count())
            peaks["calls"] = max(peaks["calls"], len(app[SESSIONS]))
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample_peaks())
    failures: list[str] = []
    started = time.monotonic()
    try:
        for i in range(sequential):
            try:
                await one_call(url, i % 2 == 0)
            except Exception as exc:
                failures.append(f"sequential {i}: {exc!r}")
        await settle(app)  # calls ended by the caller alone close when the server notices
        for b in range(batches):
            results = await asyncio.gather(
                *(one_call(url, i % 2 == 0) for i in range(batch_size)), return_exceptions=True
            )
            failures += [f"batch {b}: {r!r}" for r in results if isinstance(r, BaseException)]
            await settle(app)
        seconds = time.monotonic() - started
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    await settle(app)
    after = Snapshot.take()
    _trace_snapshot()
    calls = sequential + batches * batch_size
    return SoakReport(
        calls=calls,
        sequential=sequential,
        concurrent=batches * batch_size,
        batch_size=batch_size,
        seconds=round(seconds, 1),
        baseline=baseline,
        after=after,
        peak_rss_mb=round(peaks["rss_mb"], 2),
        peak_threads=int(peaks["threads"]),
        peak_calls=int(peaks["calls"]),
        rss_per_call_kb=round((after.rss_mb - baseline.rss_mb) * 1024 / max(1, calls), 2),
        failures=failures,
    )


async def _main(args: argparse.Namespace) -> SoakReport:
    ice.configure_host_addresses(["127.0.0.1"])
    limits = {
        "max_sessions": max(20, args.batch_size),
        "offer_rate": 0,
        "max_loop_lag_ms": 0,
        "max_pending_per_subject": 0,  # one load client makes every offer
        "max_pending_offers": 0,
    }
    async with echo_server(**limits) as (url, app):
        return await soak(url, app, args.sequential, args.batches, args.batch_size)


def _top_growth(before: Any, after: Any, limit: int = 12) -> list[str]:
    stats = after.compare_to(before, "lineno")
    return [str(s) for s in stats[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also list the source lines whose allocations grew most (slow)",
    )
    args = parser.parse_args()
    logs.configure("json", "warning")  # a thousand calls' info lines would drown the figures
    if args.tracemalloc:
        tracemalloc.start(1)
        SNAPSHOTS.clear()
    report = asyncio.run(_main(args))
    result = report.as_dict()
    if args.tracemalloc and len(SNAPSHOTS) == 2:
        result["tracemalloc_top_growth"] = _top_growth(*SNAPSHOTS)
    print(json.dumps(result, indent=1))


def rss_soak(seconds: float) -> dict[str, Any]:
    """The suite's soak: voicegate with 10 calls for ``seconds``; its RSS must stay flat."""
    with tempfile.TemporaryDirectory(prefix="vgbench-soak-") as name:
        tmp = Path(name)
        with (
            benchmark_standin(tmp) as (info, _),
            gateway("voicegate", info, tmp) as (url, sampler),
        ):
            doc = procs.loadtest(url, tmp / "load.json", 10, seconds, warmup=1.5)
            samples = list(sampler.samples)
    t0 = samples[0][0] if samples else 0.0
    rss = [(round(t - t0), round(mb, 1)) for t, _, mb in samples[:: round(10 / procs.SAMPLE_S)]]
    steady = [mb for t, mb in rss if t >= 60]
    return {
        "summary": doc["summary"],
        "rss_samples": rss,
        "rss_growth_mb_after_first_minute": round(steady[-1] - steady[0], 1) if steady else None,
    }


__all__ = [
    "Snapshot",
    "SoakReport",
    "echo_server",
    "main",
    "one_call",
    "rss_soak",
    "settle",
    "soak",
]
