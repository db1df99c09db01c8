"""The chaos run: faults against live calls, each several times, and what happened to the calls.

    PYTHONPATH=src .venv/bin/python -m benchmarks.chaos [--runs 3] [--calls 2] [--only F]  # ~8 min
    make chaos

Two nodes (``serve`` processes, echo brain) share a real ``redis-server``; each run has a fresh
cluster and ``--calls`` aiortc callers on node A, each with one turn in its history. The callers
do what the page does: a caller whose server went silent re-offers (``restart_pc``, same pc_id)
at once (the page's own noticing, ~0.6 s, is measured by benchmarks/scenarios/page_failover.py),
and a caller told to move (drain) moves.

Faults on 127.0.0.1: ``kill -9`` of A; SIGSTOP of A while its callers move, then SIGCONT (A's
stale copies must close); Redis restarted empty (records must be rebuilt); Redis frozen
(SIGSTOP, connections hang as on a cut link); drain (SIGTERM) of A; kill -9 of one worker of A
(``--workers 2``; its callers re-offer to A the moment their audio stops, the sibling worker's
calls must not pause); a rolling restart (SIGTERM of A, A started again, then the same for B,
under live calls); offer bursts (``2 x --calls`` concurrent offers to A with ``--workers 2``,
which must split within one of even, and to A when each node has room for half of them).

Partitions, with the nodes and Redis in network namespaces of their own (root, nftables; the
callers on the cluster network, cluster_netns.py): A cut from B (its callers move to B, which
must not wait for A past its forward timeout); A cut from Redis (the calls stay and their
records are right after healing); A cut from everything (its callers move to B; A, healed,
must close its superseded copies).

Per call: kept (still delivering audio at the end, on the node that should hold it), gap (from
the moment the caller re-offers or the fault hits it, to audio again; 0 when it never paused),
record right (owned by the node holding it), history kept (its first turn still in the record).
Per run: double holders (calls held by two nodes at once, and for how long after the fault
ended, until the stale copies closed). The run exits 1 when a call was lost or a record is
wrong.

Results: benchmarks/results/chaos.json (git commit, dirty flag, load averages); the table goes
between the ``chaos`` markers of docs/cluster.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from tests.support import cluster_netns as cn
from tests.support.cluster import (
    SECRET,
    Node,
    node_args,
    open_state,
    receiving,
    redis_server,
    serve_node,
    start_call,
    token,
)

from benchmarks.harness import provenance, results
from benchmarks.harness.results import RESULTS
from voicegate.signaling import auth
from voicegate.testing.client import CallClient

ROOT = Path(__file__).resolve().parents[2]
OUT = RESULTS / "chaos.json"
DOC = ROOT / "docs" / "cluster.md"
MARK = "chaos"
ECHO = ("--backend", "echo")
WORKERS2 = ("--workers", "2")
CUT_S = 5.0
SETTLE_S = 15.0
"""How long the stale copies may take to close after a fault ended before the run counts them."""


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """The monotonic time ``check`` first held (Redis and /healthz have no event to wait on)."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                break
            await asyncio.sleep(0.05)
    return time.monotonic()


class Run:
    """One fault against one fresh cluster: nodes ``a`` and ``b`` (``start`` brings one back
    after it exited), the callers, and where each call should be."""

    def __init__(
        self,
        redis_url: str,
        nodes: dict[str, Node],
        start: Callable[[str], Awaitable[Node]],
        topo: cn.Topology | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.r = aredis.Redis.from_url(redis_url, decode_responses=True)
        self.nodes = nodes
        self.start = start
        self.topo = topo
        self.current: dict[str, CallClient] = {}  # pc_id -> the caller's live connection
        self.holder: dict[str, str] = {}  # pc_id -> the node that should hold it
        self.gaps: dict[str, list[float]] = {}
        self.clients: list[CallClient] = []
        self.calls_per_run = 0
        self.extra: dict[str, Any] = {}

    @property
    def a(self) -> Node:
        return self.nodes["a"]

    @property
    def b(self) -> Node:
        return self.nodes["b"]

    def add(self, call: CallClient, node: str) -> None:
        self.clients.append(call)
        self.current[call.pc_id] = call
        self.holder[call.pc_id] = node

    async def owner(self, pc_id: str) -> str | None:
        with contextlib.suppress(Exception):
            text = await self.r.hget(f"vg:call:{pc_id}", "owner")
            return str(json.loads(text)["node"]) if text else None
        return None

    async def history(self, pc_id: str) -> int:
        with contextlib.suppress(Exception):
            sealed = await self.r.hget(f"vg:call:{pc_id}", "state")
            text = open_state(pc_id, str(sealed) if sealed else None)
            return len(json.loads(text)["history"]) if text else 0
        return 0

    async def move(self, pc_id: str, t0: float, to: str = "b", close_old: bool = False) -> None:
        """The caller re-offers to node ``to``; its gap is from ``t0`` until audio again."""
        old = self.current[pc_id]
        new = CallClient(self.nodes[to].url, token=old.session_token)
        self.clients.append(new)
        self.current[pc_id] = new
        self.holder[pc_id] = to
        await new.connect(restart_of=pc_id)
        if await receiving(new, frames=5, timeout=10):
            self.gaps.setdefault(pc_id, []).append(time.monotonic() - t0)
        if close_old:
            await old.close()  # the page closes its old connection once moved

    async def stays(self) -> None:
        """The calls stay where they are: gap 0 when they kept delivering audio throughout."""
        for pc_id, call in self.current.items():
            if await receiving(call, frames=10, timeout=5):
                self.gaps.setdefault(pc_id, []).append(0.0)

    async def sessions(self) -> int:
        """Calls held by the nodes that answer (a dead or cut-off one holds none it could
        serve)."""
        total = 0
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    total += int((await node.json("/healthz"))["sessions"])
        return total

    async def aclose(self) -> None:
        for c in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 10)
        await self.r.aclose()


async def _sessions(node: Node, n: int) -> bool:
    return bool((await node.json("/healthz"))["sessions"] == n)


async def _registered(r: aredis.Redis, *names: str) -> bool:
    return bool(await r.exists(*(f"vg:node:node-{n}" for n in names)) == len(names))


async def _records(r: aredis.Redis, pcs: list[str]) -> bool:
    for pc_id in pcs:
        if not await r.hget(f"vg:call:{pc_id}", "state"):
            return False
    return True


async def _stale_closed(run: Run, since: float) -> None:
    """A's superseded copies closed: how long after ``since`` (the fault's end) A held none."""
    done = await until(lambda: _sessions(run.a, 0), SETTLE_S)
    run.extra["double_holders_s"] = round(done - since, 3)


# -- faults on 127.0.0.1 -----------------------------------------------------------------------


async def kill9(run: Run) -> None:
    t0 = time.monotonic()
    run.a.kill()
    await asyncio.gather(*(run.move(pc, t0) for pc in list(run.current)))


async def sigstop(run: Run) -> None:
    t0 = time.monotonic()
    os.kill(run.a.proc.pid, signal.SIGSTOP)
    try:
        # The callers re-offer at once: B forwards to A (its heartbeat still alive), stops
        # waiting when A misses its heartbeats or at its forward timeout, then adopts (fenced).
        await asyncio.gather(*(run.move(pc, t0) for pc in list(run.current)))
    finally:
        os.kill(run.a.proc.pid, signal.SIGCONT)
    await _stale_closed(run, time.monotonic())


async def redis_restart(run: Run) -> None:
    t0 = time.monotonic()
    port = int(run.redis_url.rsplit(":", 1)[1].split("/")[0])
    with contextlib.suppress(Exception):
        await run.r.shutdown(nosave=True)
    work = Path(run.a.log).parent
    async with redis_server(work, port=port):
        await run.r.aclose()
        run.r = aredis.Redis.from_url(run.redis_url, decode_responses=True)
        back = await until(lambda: _records(run.r, list(run.current)), 15)
        run.extra["records_rebuilt_s"] = round(back - t0, 3)
        await run.stays()
        await finish(run)


async def redis_cut(run: Run) -> None:
    t0 = time.monotonic()
    pid = int((await run.r.info("server"))["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        await run.stays()  # media never waits on Redis
        await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - t0)))
    finally:
        os.kill(pid, signal.SIGCONT)


async def _drain(run: Run, name: str, to: str) -> int:
    """SIGTERM of node ``name``: every caller it holds is told to move, moves to ``to`` and
    closes its old connection; the node's exit code."""
    node = run.nodes[name]
    pcs = [pc for pc, held in run.holder.items() if held == name]
    t0 = time.monotonic()
    waits = [
        run.current[pc].wait_for(
            "server-message", 30, lambda m: m["data"].get("type") == "reconnect"
        )
        for pc in pcs
    ]
    node.proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*waits)
    await asyncio.gather(*(run.move(pc, t0, to=to, close_old=True) for pc in pcs))
    return await asyncio.wait_for(node.proc.wait(), 40)


async def drain(run: Run) -> None:
    run.extra["exit_code"] = [await _drain(run, "a", "b")]


async def rolling_restart(run: Run) -> None:
    """Each node in turn: SIGTERM (its callers move to the other), then started again."""
    codes = []
    for name, other in (("a", "b"), ("b", "a")):
        codes.append(await _drain(run, name, other))
        run.nodes[name] = await run.start(name)
        await until(lambda: _registered(run.r, "a", "b"), 15)
    run.extra["exit_code"] = codes


async def worker_kill(run: Run) -> None:
    """kill -9 of A's first worker: its callers re-offer to A when their audio stops (the gap
    counts from there, as for the other faults); the other worker's callers must not pause."""
    per_worker: list[int] = []

    async def spread() -> bool:
        nonlocal per_worker
        health = await run.a.json("/healthz")
        per_worker = [w["sessions"] for w in health["workers"]]
        return bool(health["sessions"] == len(run.current))

    await until(spread, 10)
    victim = (await run.a.json("/healthz"))["workers"][0]
    run.extra["split"] = per_worker
    t_kill = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    stopped = await asyncio.gather(
        *(receiving(c, frames=5, timeout=1.0) for c in run.current.values())
    )
    silent = [pc for pc, ok in zip(list(run.current), stopped, strict=True) if not ok]
    t0 = time.monotonic()
    await asyncio.gather(*(run.move(pc, t0, to="a") for pc in silent))
    pause = 0.0
    for pc, call in run.current.items():
        if pc in silent:
            continue
        times = [t_kill, *(t for t in call.audio.arrival if t >= t_kill)]
        pause = max([pause, *(b - a for a, b in zip(times, times[1:], strict=False))])
        run.gaps.setdefault(pc, []).append(0.0)
    run.extra["worker_calls"] = len(silent)
    run.extra["sibling_pause_s"] = round(pause, 3)


def _subject_token(i: int) -> str:
    return auth.mint(SECRET, 600, subject=f"chaos-burst-{i}")


async def _burst(run: Run, n: int) -> list[CallClient]:
    started = await asyncio.gather(
        *(start_call(run.a.url, _subject_token(i)) for i in range(n)), return_exceptions=True
    )
    calls = [c for c in started if isinstance(c, CallClient)]
    run.extra["refused"] = n - len(calls)
    return calls


async def burst_workers(run: Run) -> None:
    """``n`` concurrent offers to A (``--workers 2``): each worker must get n/2 (within one)."""
    n = 2 * run.calls_per_run
    calls = await _burst(run, n)
    for c in calls:
        run.add(c, "a")
    split: list[int] = []

    async def counted() -> bool:
        nonlocal split
        health = await run.a.json("/healthz")
        split = sorted(w["sessions"] for w in health["workers"])
        return bool(health["sessions"] == len(calls))

    await until(counted, 10)
    run.extra["split"] = split
    await run.stays()


async def burst_nodes(run: Run) -> None:
    """``n`` concurrent offers to A where each node has room for n/2: B takes the rest."""
    n = 2 * run.calls_per_run
    calls = await _burst(run, n)
    owners: list[str | None] = []

    async def owned() -> bool:
        nonlocal owners
        owners = [await run.owner(c.pc_id) for c in calls]
        return None not in owners

    with contextlib.suppress(TimeoutError):
        await until(owned, 10)
    for c, owner in zip(calls, owners, strict=True):
        run.add(c, "b" if owner == "node-b" else "a")
    held = list(run.holder.values())
    run.extra["split"] = sorted([held.count("a"), held.count("b")])
    await run.stays()


# -- partitions (network namespaces) -----------------------------------------------------------


async def partition_nodes(run: Run) -> None:
    """A and B cannot reach each other; A's callers move to B (A still answers them and Redis):
    B must give up forwarding to A in time and adopt, and A close its superseded copies."""
    assert run.topo is not None
    cn.partition(run.topo, "a", [cn.NODE_IPS["b"]])
    try:
        t0 = time.monotonic()
        await asyncio.gather(*(run.move(pc, t0) for pc in list(run.current)))
        await _stale_closed(run, time.monotonic())  # while still cut off from B
    finally:
        cn.heal(run.topo, "a")


async def partition_redis(run: Run) -> None:
    """A cannot reach Redis for ``CUT_S``: its calls stay; their records are right afterwards."""
    assert run.topo is not None
    t0 = time.monotonic()
    cn.partition(run.topo, "a", [cn.BRIDGE_IP])
    try:
        await run.stays()
        await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - t0)))
    finally:
        cn.heal(run.topo, "a")
    await until(lambda: _registered(run.r, "a", "b"), 15)


async def partition_all(run: Run) -> None:
    """A cut from everything (callers, B, Redis): its callers move to B; healed after all moved
    (at least ``CUT_S``), A must close its superseded copies."""
    assert run.topo is not None
    t0 = time.monotonic()
    cn.partition(run.topo, "a", None)
    try:
        await asyncio.gather(*(run.move(pc, t0) for pc in list(run.current)))
        await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - t0)))
    finally:
        cn.heal(run.topo, "a")
    await _stale_closed(run, time.monotonic())


# -- the verdict -------------------------------------------------------------------------------


async def finish(run: Run) -> None:
    """Per call: kept, record owned by the node holding it, history kept; per run: how long
    two nodes held a call after the fault ended."""
    expected = len(run.current)
    checked = time.monotonic()
    copies = await run.sessions()
    if copies > expected:
        with contextlib.suppress(TimeoutError):
            await until(lambda: _copies(run, expected), SETTLE_S)
            copies = expected
        if copies == expected:
            run.extra.setdefault("double_holders_s", round(time.monotonic() - checked, 3))
    run.extra.setdefault("double_holders_s", 0.0)
    run.extra["extra_copies"] = max(0, copies - expected)
    rows = []
    for pc_id, call in run.current.items():
        kept = await receiving(call, frames=10, timeout=5)
        with contextlib.suppress(TimeoutError):
            await until(functools.partial(_has_history, run, pc_id), 5)
        history = await run.history(pc_id)
        owner = await run.owner(pc_id)
        gaps = run.gaps.get(pc_id)
        rows.append(
            {
                "kept": kept,
                "recovery_s": round(max(gaps), 3) if gaps else None,
                "record_ok": owner == f"node-{run.holder[pc_id]}",
                "history_ok": history >= 2,
            }
        )
    run.extra["calls"] = rows


async def _copies(run: Run, expected: int) -> bool:
    return await run.sessions() <= expected


@dataclass(frozen=True)
class Fault:
    label: str
    act: Callable[[Run], Awaitable[None]]
    a_extra: tuple[str, ...] = ()
    b_extra: tuple[str, ...] = ()
    calls: bool = True
    """Callers on A before the fault (a burst brings its own)."""
    netns: bool = False


FAULTS: dict[str, Fault] = {
    "kill9": Fault("kill -9 of the node holding the calls", kill9),
    "sigstop": Fault("SIGSTOP of that node while its callers move, then SIGCONT", sigstop),
    "redis_restart": Fault("Redis restarted empty", redis_restart),
    "redis_cut": Fault(f"Redis frozen (SIGSTOP) for {CUT_S:.0f} s", redis_cut),
    "drain": Fault("drain (SIGTERM) of the node holding the calls", drain),
    "worker_kill": Fault("kill -9 of one worker of that node (`--workers 2`)", worker_kill,
                         a_extra=WORKERS2),
    "rolling_restart": Fault("rolling restart (SIGTERM, start again) of A then B", rolling_restart),
    "burst_workers": Fault("offer burst (2 x calls at once) to `--workers 2`", burst_workers,
                           a_extra=WORKERS2, calls=False),
    "burst_nodes": Fault("offer burst (2 x calls at once) to A, each node room for half",
                         burst_nodes, calls=False),
    "partition_nodes": Fault("partition A-B while A's callers move to B", partition_nodes,
                             netns=True),
    "partition_redis": Fault(f"partition A-Redis for {CUT_S:.0f} s", partition_redis,
                             netns=True),
    "partition_all": Fault("partition of A from everything, its callers move to B",
                           partition_all, netns=True),
}  # fmt: skip


async def _exercise(run: Run, fault: str, calls: int) -> dict[str, Any]:
    spec = FAULTS[fault]
    try:
        await until(lambda: _registered(run.r, "a", "b"), 20)
        if spec.calls:
            for _ in range(calls):
                run.add(await start_call(run.a.url, token()), "a")
            await until(lambda: _all_history(run), 10)
        run.calls_per_run = calls
        async with asyncio.timeout(120):
            await spec.act(run)
            if "calls" not in run.extra:
                await finish(run)
        return run.extra
    finally:
        await run.aclose()


async def _has_history(run: Run, pc_id: str) -> bool:
    return await run.history(pc_id) >= 2


async def _all_history(run: Run) -> bool:
    return all([await run.history(pc) >= 2 for pc in run.current])


def _room(fault: str, calls: int) -> tuple[str, ...]:
    return ("--max-sessions", str(calls)) if fault == "burst_nodes" else ()


async def one(work: Path, fault: str, calls: int) -> dict[str, Any]:
    if FAULTS[fault].netns:
        return await one_netns(work, fault, calls)
    spec = FAULTS[fault]
    extra = {"a": (*ECHO, *spec.a_extra, *_room(fault, calls)),
             "b": (*ECHO, *spec.b_extra, *_room(fault, calls))}  # fmt: skip
    async with redis_server(work) as redis_url, contextlib.AsyncExitStack() as stack:
        args = {n: node_args(redis_url, f"node-{n}", *extra[n]) for n in ("a", "b")}
        starts = {"a": 0, "b": 0}

        async def start(name: str) -> Node:
            starts[name] += 1
            return await stack.enter_async_context(
                serve_node(work, *_last(args[name]), name=f"{fault}-{name}{starts[name]}")
            )

        nodes = {n: await start(n) for n in ("a", "b")}
        return await _exercise(Run(redis_url, nodes, start), fault, calls)


def _last(args: tuple[str, ...]) -> tuple[str, ...]:
    """``--workers`` given twice: the last one wins (node_args says 1)."""
    if args.count("--workers") < 2:
        return args
    i = args.index("--workers")
    return (*args[:i], *args[i + 2 :])


async def one_netns(work: Path, fault: str, calls: int) -> dict[str, Any]:
    async with cn.echo_cluster(work) as (topo, nodes):
        edge = cn.LoopIn(topo.ns("edge"))
        try:

            async def no_restart(name: str) -> Node:
                raise NotImplementedError("no node restarts in the partition runs")

            async def inside() -> dict[str, Any]:
                return await _exercise(Run(topo.redis_url, nodes, no_restart, topo), fault, calls)

            return await edge.run(inside())
        finally:
            edge.stop()


def summarize(fault: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [c for r in runs if "calls" in r for c in r["calls"]]
    total = sum(len(r.get("calls", [])) for r in runs) + sum(1 for r in runs if "error" in r)
    rec = [c["recovery_s"] for c in rows if c["recovery_s"] is not None]
    out: dict[str, Any] = {
        "fault": FAULTS[fault].label,
        "runs": len(runs),
        "calls": total,
        "kept": sum(1 for c in rows if c["kept"]),
        "records_ok": sum(1 for c in rows if c["record_ok"]),
        "history_ok": sum(1 for c in rows if c.get("history_ok")),
        "errors": [r["error"] for r in runs if "error" in r],
    }
    if rec:
        out["recovery_s"] = {
            "median": round(statistics.median(rec), 3),
            "min": round(min(rec), 3),
            "max": round(max(rec), 3),
        }
    for key in (
        "double_holders_s",
        "extra_copies",
        "records_rebuilt_s",
        "exit_code",
        "split",
        "refused",
        "worker_calls",
        "sibling_pause_s",
    ):
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = values
    return out


def failed(s: dict[str, Any]) -> bool:
    """A lost call, a wrong record, lost history or a failed run."""
    return bool(
        s["errors"]
        or s["kept"] < s["calls"]
        or s["records_ok"] < s["calls"]
        or s["history_ok"] < s["calls"]
        or any(s.get("extra_copies", []))
    )


def table(doc: dict[str, Any]) -> str:
    meta = provenance.read(doc)
    lines = [
        f"{doc['runs_per_fault']} runs per fault, {doc['calls_per_run']} calls each "
        f"({meta.hardware}, load {meta.load_before} before, {meta.load_after} after, commit "
        f"{meta.commit[:10]}{' dirty' if meta.dirty else ''}; `make chaos` writes this table). "
        "The callers re-offer the moment the fault happens: the page first notices a dead "
        "server (about 0.7 s, benchmarks/scenarios/page_failover.py). Double holders: how long "
        "after the fault ended a call was still held by a node that no longer owns it (max).",
        "",
        "| fault | calls kept | gap at the caller (audio lost), median (min-max) "
        "| records right | history kept | double holders | other |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in doc["faults"].values():
        rec = s.get("recovery_s")
        rec_text = f"{rec['median']} s ({rec['min']}-{rec['max']})" if rec else "-"
        doubles = "-"
        if "double_holders_s" in s:
            doubles = f"{max(s['double_holders_s'])} s"
        if any(s.get("extra_copies", [])):
            doubles += f", {max(s['extra_copies'])} copies left"
        other = []
        if "records_rebuilt_s" in s:
            other.append(f"records rebuilt within {max(s['records_rebuilt_s'])} s")
        if "exit_code" in s:
            other.append(f"exit codes {s['exit_code']}")
        if "split" in s:
            other.append(f"split {s['split']}")
        if any(s.get("refused", [])):
            other.append(f"{sum(s['refused'])} offers refused")
        if "sibling_pause_s" in s:
            other.append(
                f"calls of the killed worker {s.get('worker_calls')}; the other worker's calls "
                f"paused at most {max(s['sibling_pause_s'])} s"
            )
        if s["errors"]:
            other.append(f"{len(s['errors'])} runs failed: {s['errors'][0][:80]}")
        lines.append(
            f"| {s['fault']} | {s['kept']}/{s['calls']} | {rec_text} | "
            f"{s['records_ok']}/{s['calls']} | {s['history_ok']}/{s['calls']} | {doubles} | "
            f"{'; '.join(other) or '-'} |"
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
    parser.add_argument("--only", choices=tuple(FAULTS), action="append")
    args = parser.parse_args()
    meta = provenance.start()
    faults: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fault in FAULTS:
            if args.only and fault not in args.only:
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
    if args.only:  # a partial run is for trying a fault: the committed table has them all
        print(json.dumps(faults, indent=1))
    else:
        results.write(OUT, doc)
        replace_block(DOC, table(doc))
    print(table(doc))
    if any(failed(s) for s in faults.values()):
        sys.exit(1)


def main() -> None:
    asyncio.run(measure())


__all__ = ["main"]
