"""The chaos run: faults against live calls, each several times, and what happened to the calls.

    PYTHONPATH=src .venv/bin/python -m benchmarks.chaos [--runs 3] [--calls 2]   # ~3 minutes
    make chaos

Two nodes (processes on 127.0.0.1, echo brain, ``--workers 1``) share a real ``redis-server``;
each run has a fresh cluster and ``--calls`` aiortc callers on node A, each with one turn in its
history. The callers do what the page does: a caller whose server went silent re-offers
(``restart_pc``, same pc_id) to the other node at once (the page's own noticing, ~0.6 s, is
measured by benchmarks/scenarios/page_failover.py), and a caller told to move (drain) moves.

Faults: ``kill -9`` of A; SIGSTOP of A while its callers move, then SIGCONT (A's stale copies
must close; how long they lingered after waking is "double holders"); Redis
restarted empty (records must be rebuilt); Redis frozen (SIGSTOP, connections hang as on a cut
link) for 5 s; drain (SIGTERM) of A. Per call: kept (still delivering audio at the end, on the
node that should hold it), recovery (from the fault to the call delivering audio again; 0 when
it never paused), its record (present, owned by the node holding it, history kept).

Results: benchmarks/results/chaos.json (git commit, dirty flag, load averages); the table goes
between the ``chaos`` markers of docs/cluster.md. Network partitions between nodes (network
namespaces, root) are not part of this run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from tests.support.cluster import (
    Node,
    history_saved,
    node_args,
    receiving,
    redis_server,
    serve_node,
    start_call,
    token,
)

from benchmarks.harness import provenance, results
from benchmarks.harness.results import RESULTS
from voicegate.testing.client import CallClient

ROOT = Path(__file__).resolve().parents[2]
OUT = RESULTS / "chaos.json"
DOC = ROOT / "docs" / "cluster.md"
MARK = "chaos"
ECHO = ("--backend", "echo")
CUT_S = 5.0


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """The monotonic time ``check`` first held (Redis and /healthz have no event to wait on)."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                break
            await asyncio.sleep(0.05)
    return time.monotonic()


class Run:
    """One fault against one fresh cluster."""

    def __init__(self, work: Path, redis_url: str, a: Node, b: Node) -> None:
        self.work = work
        self.redis_url = redis_url
        self.r = aredis.Redis.from_url(redis_url, decode_responses=True)
        self.a = a
        self.b = b
        self.calls: list[CallClient] = []
        self.moved: dict[str, CallClient] = {}
        self.recovered: dict[str, float] = {}
        self.extra: dict[str, Any] = {}

    async def owner(self, pc_id: str) -> str | None:
        with contextlib.suppress(Exception):
            text = await self.r.hget(f"vg:call:{pc_id}", "owner")
            return str(json.loads(text)["node"]) if text else None
        return None

    async def move(self, call: CallClient, t0: float) -> None:
        """The caller re-offers to B; recovery is until the moved call delivers audio."""
        new = CallClient(self.b.url, token=call.session_token)
        self.moved[call.pc_id] = new
        await new.connect(restart_of=call.pc_id)
        if await receiving(new, frames=5, timeout=10):
            self.recovered[call.pc_id] = time.monotonic() - t0

    async def stays(self, t0: float) -> None:
        """The calls stay on A: recovery 0 when they kept delivering audio throughout."""
        for call in self.calls:
            if await receiving(call, frames=10, timeout=5):
                self.recovered[call.pc_id] = 0.0

    async def alive(self, pc_id: str) -> bool:
        holder = self.moved.get(pc_id) or next(c for c in self.calls if c.pc_id == pc_id)
        return await receiving(holder, frames=10, timeout=5)

    async def aclose(self) -> None:
        for c in [*self.calls, *self.moved.values()]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 10)
        await self.r.aclose()


async def kill9(run: Run) -> None:
    t0 = time.monotonic()
    run.a.kill()
    await asyncio.gather(*(run.move(c, t0) for c in run.calls))


async def sigstop(run: Run) -> None:
    t0 = time.monotonic()
    os.kill(run.a.proc.pid, signal.SIGSTOP)
    try:
        # The callers re-offer at once: B forwards to A (its heartbeat still alive), waits its
        # forward timeout, then adopts (fenced).
        await asyncio.gather(*(run.move(c, t0) for c in run.calls))
    finally:
        os.kill(run.a.proc.pid, signal.SIGCONT)
    woke = time.monotonic()
    done = await until(lambda: _sessions(run.a, 0), 15)
    run.extra["double_holders_s"] = round(done - woke, 3)


async def redis_restart(run: Run) -> None:
    t0 = time.monotonic()
    port = int(run.redis_url.rsplit(":", 1)[1].split("/")[0])
    with contextlib.suppress(Exception):
        await run.r.shutdown(nosave=True)
    async with redis_server(run.work, port=port):
        await run.r.aclose()
        run.r = aredis.Redis.from_url(run.redis_url, decode_responses=True)
        pcs = [c.pc_id for c in run.calls]
        back = await until(lambda: _records(run.r, pcs), 15)
        run.extra["records_rebuilt_s"] = round(back - t0, 3)
        await run.stays(t0)
        await finish(run)


async def redis_cut(run: Run) -> None:
    t0 = time.monotonic()
    pid = int((await run.r.info("server"))["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        await run.stays(t0)  # media never waits on Redis
        await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - t0)))
    finally:
        os.kill(pid, signal.SIGCONT)


async def drain(run: Run) -> None:
    t0 = time.monotonic()
    waits = [
        c.wait_for("server-message", 30, lambda m: m["data"].get("type") == "reconnect")
        for c in run.calls
    ]
    run.a.proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*waits)
    await asyncio.gather(*(run.move(c, t0) for c in run.calls))
    for c in run.calls:
        await c.close()  # the page closes its old connection once moved
    run.extra["exit_code"] = await asyncio.wait_for(run.a.proc.wait(), 40)


async def _gone(r: aredis.Redis, key: str) -> bool:
    return not await r.exists(key)


async def _sessions(node: Node, n: int) -> bool:
    return bool((await node.json("/healthz"))["sessions"] == n)


async def _records(r: aredis.Redis, pcs: list[str]) -> bool:
    for pc_id in pcs:
        if not await r.hget(f"vg:call:{pc_id}", "state"):
            return False
    return True


async def finish(run: Run) -> None:
    """Per call: kept, and its record names the node holding it with the history kept."""
    rows = []
    for call in run.calls:
        holder = "node-b" if call.pc_id in run.moved else "node-a"
        kept = await run.alive(call.pc_id)
        record_ok = False
        with contextlib.suppress(Exception):
            state = await asyncio.wait_for(history_saved(run.redis_url, call.pc_id, 2), 5)
            record_ok = await run.owner(call.pc_id) == holder and len(state["history"]) >= 2
        rows.append(
            {
                "kept": kept,
                "recovery_s": round(run.recovered[call.pc_id], 3)
                if call.pc_id in run.recovered
                else None,
                "record_ok": record_ok,
            }
        )
    run.extra["calls"] = rows


FAULTS: dict[str, tuple[str, Callable[[Run], Awaitable[None]]]] = {
    "kill9": ("kill -9 of the node holding the calls", kill9),
    "sigstop": ("SIGSTOP of that node while its callers move, then SIGCONT", sigstop),
    "redis_restart": ("Redis restarted empty", redis_restart),
    "redis_cut": (f"Redis frozen (SIGSTOP) for {CUT_S:.0f} s", redis_cut),
    "drain": ("drain (SIGTERM) of the node holding the calls", drain),
}


async def one(work: Path, fault: str, calls: int) -> dict[str, Any]:
    async with redis_server(work) as redis_url:
        async with (
            serve_node(work, *node_args(redis_url, "node-a", *ECHO), name=f"{fault}-a") as a,
            serve_node(work, *node_args(redis_url, "node-b", *ECHO), name=f"{fault}-b") as b,
        ):
            run = Run(work, redis_url, a, b)
            try:
                await until(lambda: _both(run.r), 10)
                for _ in range(calls):
                    run.calls.append(await start_call(a.url, token()))
                for c in run.calls:
                    await history_saved(redis_url, c.pc_id, 2)
                async with asyncio.timeout(90):
                    await FAULTS[fault][1](run)
                    if "calls" not in run.extra:
                        await finish(run)
                return run.extra
            finally:
                await run.aclose()


async def _both(r: aredis.Redis) -> bool:
    return bool(await r.exists("vg:node:node-a", "vg:node:node-b") == 2)


def summarize(fault: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [c for r in runs if "calls" in r for c in r["calls"]]
    total = sum(len(r.get("calls", [])) for r in runs) + sum(1 for r in runs if "error" in r)
    rec = [c["recovery_s"] for c in rows if c["recovery_s"] is not None]
    out: dict[str, Any] = {
        "fault": FAULTS[fault][0],
        "runs": len(runs),
        "calls": total,
        "kept": sum(1 for c in rows if c["kept"]),
        "records_ok": sum(1 for c in rows if c["record_ok"]),
        "errors": [r["error"] for r in runs if "error" in r],
    }
    if rec:
        out["recovery_s"] = {
            "median": round(statistics.median(rec), 3),
            "min": round(min(rec), 3),
            "max": round(max(rec), 3),
        }
    for key in ("double_holders_s", "records_rebuilt_s", "exit_code"):
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = values
    return out


def table(doc: dict[str, Any]) -> str:
    meta = provenance.read(doc)
    lines = [
        f"{doc['runs_per_fault']} runs per fault, {doc['calls_per_run']} calls each "
        f"({meta.hardware}, load {meta.load_before} before, commit {meta.commit[:10]}"
        f"{' dirty' if meta.dirty else ''}; `make chaos` writes this table). The callers "
        "re-offer the moment the fault happens: the page first notices a dead server "
        "(about 0.7 s, benchmarks/scenarios/page_failover.py).",
        "",
        "| fault | calls kept | gap at the caller (audio lost), median (min-max) "
        "| records right | other |",
        "|---|---|---|---|---|",
    ]
    for s in doc["faults"].values():
        rec = s.get("recovery_s")
        rec_text = f"{rec['median']} s ({rec['min']}-{rec['max']})" if rec else "-"
        other = []
        if "double_holders_s" in s:
            other.append(f"stale copies closed {max(s['double_holders_s'])} s after waking (max)")
        if "records_rebuilt_s" in s:
            other.append(f"records rebuilt within {max(s['records_rebuilt_s'])} s")
        if "exit_code" in s:
            other.append(f"exit codes {s['exit_code']}")
        if s["errors"]:
            other.append(f"{len(s['errors'])} runs failed: {s['errors'][0][:80]}")
        lines.append(
            f"| {s['fault']} | {s['kept']}/{s['calls']} | {rec_text} | "
            f"{s['records_ok']}/{s['calls']} | {'; '.join(other) or '-'} |"
        )
    return "\n".join(lines)


def replace_block(path: Path, text: str) -> None:
    begin, end = f"<!-- {MARK} -->", f"<!-- /{MARK} -->"
    body = path.read_text()
    block = f"{begin}\n{text}\n{end}"
    if begin in body and end in body:
        head, rest = body.split(begin, 1)
        body = head + block + rest.split(end, 1)[1]
    else:
        body = body.rstrip("\n") + f"\n\n## Chaos run\n\n{block}\n"
    path.write_text(body)


async def measure() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--only", choices=tuple(FAULTS))
    args = parser.parse_args()
    meta = provenance.start()
    faults: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fault in FAULTS:
            if args.only not in (None, fault):
                continue
            runs: list[dict[str, Any]] = []
            for i in range(args.runs):
                work = Path(tmp) / f"{fault}{i}"
                work.mkdir()
                try:
                    runs.append(await one(work, fault, args.calls))
                except Exception as exc:  # a failed run is a result: it goes in the table
                    runs.append({"error": f"{type(exc).__name__}: {exc}"[:300]})
                print(fault, json.dumps(runs[-1]), flush=True)
            faults[fault] = summarize(fault, runs)
    doc = {
        "runs_per_fault": args.runs,
        "calls_per_run": args.calls,
        "faults": faults,
        "note": "2 shared cores, other work running during the measurement: see load_avg",
        "meta": provenance.finish(meta),
    }
    results.write(OUT, doc)
    replace_block(DOC, table(doc))
    print(table(doc))


def main() -> None:
    asyncio.run(measure())


__all__ = ["main"]
