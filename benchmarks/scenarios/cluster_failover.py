"""Cluster measurements: failover time, calls lost in a rolling restart, workers vs one process.

    PYTHONPATH=src .venv/bin/python -m benchmarks.cluster_failover   # ~6 minutes, needs root

(a) **Failover**: the network-namespace cluster of tests/support/cluster_netns.py (nodes with
their own addresses, Redis on the cluster network, coturn the only way in, a relay-only caller,
the Bedrock stand-in through the real SDK). One turn on node A, ``kill -9`` of A, the caller's
reconnect (``restart_pc``) to node B at once, its next turn sent the moment B's ``bot-ready``
arrives.
Measured from the kill to the first bot audio frame (RMS > 500) received after that turn was
sent: this **includes** the caller speaking the turn until the model's end of turn; the time
from the kill to the turn being sent (reconnect alone) and from the turn to the bot's audio are
given separately. The caller reconnects at once: a page first has to notice the dead connection
(ICE consent, seconds), which is not in these numbers. A fresh cluster per try.

(b) **Rolling restart**: two nodes on 127.0.0.1 (echo brain), 5 calls each, callers that behave
like the page (on the drain ``server-message`` they ``restart_pc`` through a load balancer that
picks a ready node, then close the old connection). SIGTERM A, wait for it to exit 0 and for its
calls to have moved, start it again; the same for B. A call is lost when its reconnect failed or
it no longer delivers audio at the end.

(c) **Workers** (scenarios/cluster_capacity.py): ``voicegate serve --backend bedrock`` (a
fresh stand-in, echo brain) with ``--workers 1`` and ``--workers 2``, K concurrent calls from
``voicegate loadtest`` (marker round trip). The machine has 2 cores: the load client cannot
be pinned apart from two workers, so client, stand-in and server share both cores; the
server's CPU (all its processes) per call and the RTT p50/p95 and frames per second at each K
are reported, not a capacity figure from an isolated server.

Results: benchmarks/results/cluster-failover.json (the run's provenance, and each part's own:
``--only`` reruns one part and keeps the others); the summary goes between the
``cluster-failover`` markers of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tests.support.cluster import (
    SECRET,
    free_port,
    receiving,
    redis_server,
    serve_node,
    start_call,
    token,
    tone,
)
from tests.support.cluster_netns import (
    PUBLIC_IP,
    TURN_SECRET,
    LoopIn,
    cluster,
    first_turn,
    history_saved,
    ice_servers,
    reconnect_and_talk,
    relay_caller,
    topology,
)
from tests.support.coturn import running_coturn
from tests.support.netns import exec_in, socket_in

from benchmarks.harness import provenance, results
from benchmarks.harness.results import RESULTS
from benchmarks.report import cluster as report
from benchmarks.report.blocks import BENCH_README, replace_block
from benchmarks.scenarios.cluster_capacity import workers
from voicegate.signaling import auth
from voicegate.standin import StandIn
from voicegate.testing.client import CallClient, load_wav
from voicegate.testing.signals import percentiles

OUT = RESULTS / "cluster-failover.json"


# -- (a) failover in the namespace cluster ----------------------------------------------------


async def failover(tries: int, workdir: Path) -> dict[str, Any]:
    wav = workdir / "speech.wav"
    espeak = await asyncio.create_subprocess_exec(
        "espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), "hello, can you hear me"
    )  # fmt: skip
    assert await espeak.wait() == 0
    speech = load_wav(wav)
    speech = np.concatenate([np.zeros(14400, np.int16), speech, np.zeros(57600, np.int16)])
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        (workdir / name).write_text("")
        os.environ[name] = str(workdir / name)
    rows: list[dict[str, float]] = []
    with topology() as topo:
        edge = topo.ns("edge")
        with running_coturn(
            workdir, TURN_SECRET, listen_ips=(PUBLIC_IP,), relay_ip=PUBLIC_IP,
            prefix=exec_in(edge), make_socket=lambda: socket_in(edge),
        ) as turn:  # fmt: skip
            async with StandIn("scripted", cert_dir=workdir / "certs") as standin:
                for i in range(tries):
                    trydir = workdir / f"try{i}"
                    trydir.mkdir()
                    caller = LoopIn(topo.ns("cli"))
                    clients: list[Any] = []
                    try:
                        async with (
                            asyncio.timeout(120),
                            cluster(topo, turn.port, trydir, standin) as nodes,
                        ):
                            tok = token()
                            servers = await caller.run(ice_servers(topo.lb_url("a"), tok))
                            first = relay_caller(topo.lb_url("a"), servers, tok)
                            clients.append(first)
                            await caller.run(first_turn(first, speech))
                            await history_saved(topo, first.pc_id, 2)
                            killed = time.monotonic()
                            nodes["a"].kill()
                            moved = relay_caller(topo.lb_url("b"), servers, first.session_token)
                            clients.append(moved)
                            sent, heard = await caller.run(
                                reconnect_and_talk(moved, first.pc_id, speech)
                            )
                            rows.append({
                                "kill_to_bot_audio_s": round(heard - killed, 3),
                                "kill_to_turn_sent_s": round(sent - killed, 3),
                                "turn_to_bot_audio_s": round(heard - sent, 3),
                            })  # fmt: skip
                            print(f"failover try {i}: {rows[-1]}", flush=True)
                    finally:
                        for c in clients:
                            with contextlib.suppress(Exception):
                                await asyncio.wait_for(caller.run(c.close()), 10)
                        caller.stop()
    out: dict[str, Any] = {
        "tries": rows,
        "speech_s": round(len(speech) / 48000, 2),
        "definition": "kill -9 -> first bot audio frame after the next turn, which is sent "
        "right after bot-ready on the new connection (includes speaking that turn)",
    }
    for figure in report.FAILOVER_FIGURES:
        out[f"{figure}_ms"] = percentiles([1000 * r[f"{figure}_s"] for r in rows])
    return out


# -- (b) rolling restart on loopback ----------------------------------------------------------


class PageCall:
    """A caller that follows the drain message the way web/app.js does."""

    def __init__(self, pick: Any, subject: str) -> None:
        self.pick = pick
        self.subject = subject  # one user per call: the per-subject call limit is 3
        self.client: Any = None
        self.moves = 0
        self.failed: str | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        tok = auth.mint(SECRET, 600, subject=self.subject)
        self.client = await start_call(await self.pick(), tok)
        self.task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        while True:
            old = self.client
            await old.wait_for(
                "server-message", 3600, lambda m: m["data"].get("type") == "reconnect"
            )
            new = CallClient(await self.pick(), token=old.session_token)
            try:
                async with asyncio.timeout(20):
                    await new.connect(restart_of=old.pc_id)
                    await new.wait_for("bot-ready", 15)
            except Exception as exc:  # a lost call: recorded, counted
                self.failed = f"{type(exc).__name__}: {exc}"
                await new.close()
                return
            self.client = new
            self.moves += 1
            await old.close()


async def rolling(calls_per_node: int, workdir: Path) -> dict[str, Any]:
    ports = {"a": free_port(), "b": free_port()}
    urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    ready: dict[str, bool] = {"a": True, "b": True}

    async def pick() -> str:  # the load balancer: any node whose /readyz says 200
        live = [n for n in ready if ready[n]]
        return urls[random.choice(live)]

    async with redis_server(workdir) as redis_url:

        def node(name: str, run: int) -> Any:
            args = ("--port", str(ports[name]), "--cluster-redis", redis_url,
                    "--node-id", f"node-{name}", "--node-url", urls[name], "--workers", "1",
                    "--backend", "echo", "--drain-timeout", "30")  # fmt: skip
            return serve_node(workdir, *args, name=f"{name}{run}")

        calls: list[PageCall] = []
        steps: list[dict[str, Any]] = []
        async with contextlib.AsyncExitStack() as stack:
            nodes = {n: await stack.enter_async_context(node(n, 0)) for n in ("a", "b")}
            await asyncio.sleep(2)  # both heartbeats in Redis
            for i in range(2 * calls_per_node):
                ready["a"], ready["b"] = i % 2 == 0, i % 2 == 1  # 5 on each node
                call = PageCall(pick, f"page-{i}")
                await call.start()
                calls.append(call)
            ready["a"] = ready["b"] = True
            for run, name in enumerate(("a", "b"), start=1):
                t0 = time.monotonic()
                ready[name] = False  # readyz turns 503 on SIGTERM; the balancer stops sending
                nodes[name].proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(nodes[name].proc.wait(), 60)
                drained = time.monotonic() - t0
                nodes[name] = await stack.enter_async_context(node(name, run))
                ready[name] = True
                await asyncio.sleep(2)  # its heartbeat back in Redis
                steps.append({"node": name, "exit_code": code, "drain_s": round(drained, 2)})
                print(f"rolling: {steps[-1]}", flush=True)
            lost = 0
            for call in calls:
                call.client.mic.play(tone(0.3))
                if call.failed or not await receiving(call.client):
                    lost += 1
            result = {
                "calls": len(calls),
                "lost": lost,
                "moves": [c.moves for c in calls],
                "failures": [c.failed for c in calls if c.failed],
                "steps": steps,
            }
            for call in calls:
                if call.task:
                    call.task.cancel()
                await call.client.close()
    return result


async def measure() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--calls-per-node", type=int, default=5)
    parser.add_argument("--load-calls", default="10,20,30")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--only", choices=("failover", "rolling", "workers"))
    args = parser.parse_args()
    doc: dict[str, Any] = results.load(OUT) if args.only and OUT.exists() else {}
    for legacy in ("git", "load_before", "load_after"):  # a header written before the schema
        doc.pop(legacy, None)
    doc["meta"] = provenance.start()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        counts = [int(x) for x in args.load_calls.split(",")]
        for name in ("failover", "rolling", "workers"):
            if args.only in (None, name):
                d = work / name
                d.mkdir()
                part = provenance.start()
                data: Any
                if name == "failover":
                    data = await failover(args.tries, d)
                elif name == "rolling":
                    data = await rolling(args.calls_per_node, d)
                else:
                    data = await workers(counts, args.seconds, d)
                # --only reruns one part: each part keeps its own provenance.
                doc[name] = {"result": data, "meta": provenance.finish(part)}
    provenance.finish(doc["meta"])
    results.write(OUT, doc)
    replace_block(BENCH_README, report.NAME, report.block(doc), heading=report.HEADING)
    print(json.dumps({k: v for k, v in doc.items() if k != "failover"}, indent=1))


def main() -> None:
    asyncio.run(measure())


__all__ = ["PageCall", "failover", "main", "rolling"]
