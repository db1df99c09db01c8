"""Cluster measurements: failover time, calls lost in a rolling restart, workers vs one process.

    PYTHONPATH=src .venv/bin/python -m benchmarks.cluster_failover   # ~6 minutes, needs root

(a) **Failover**: the network-namespace cluster of tests/cluster_netns.py (nodes with their own
addresses, Redis on the cluster network, coturn the only way in, a relay-only caller, the Bedrock
stand-in through the real SDK). One turn on node A, ``kill -9`` of A, the caller's reconnect
(``restart_pc``) to node B at once, its next turn sent the moment B's ``bot-ready`` arrives.
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

(c) **Workers** (benchmarks/cluster_capacity.py): ``voicegate serve --backend bedrock`` (a
fresh stand-in, echo brain) with ``--workers 1`` and ``--workers 2``, K concurrent calls from
``voicegate loadtest`` (marker round trip). The machine has 2 cores: the load client cannot
be pinned apart from two workers, so client, stand-in and server share both cores; the
server's CPU (all its processes) per call and the RTT p50/p95 and frames per second at each K
are reported, not a capacity figure from an isolated server.

Results: benchmarks/results/cluster-failover.json (with git commit, dirty flag, load average);
the summary goes between the ``cluster-failover`` markers of benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "benchmarks" / "README.md"
OUT = ROOT / "benchmarks" / "results" / "cluster-failover.json"
START, END = "<!-- cluster-failover:start -->", "<!-- cluster-failover:end -->"


def _git() -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    return {"commit": run("rev-parse", "HEAD").strip(), "dirty": bool(run("status", "--porcelain"))}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


# -- (a) failover in the namespace cluster ----------------------------------------------------


async def failover(tries: int, workdir: Path) -> dict[str, Any]:
    from tests.support.cluster import token
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

    from voicegate.standin import StandIn
    from voicegate.testing.client import load_wav

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
    for key in ("kill_to_bot_audio_s", "kill_to_turn_sent_s", "turn_to_bot_audio_s"):
        values = [r[key] for r in rows]
        out[key] = {"p50": _pct(values, 50), "max": max(values) if values else None}
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
        from tests.support.cluster import SECRET, start_call

        from voicegate.signaling import auth

        tok = auth.mint(SECRET, 600, subject=self.subject)
        self.client = await start_call(await self.pick(), tok)
        self.task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        from voicegate.testing.client import CallClient

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
    from tests.support.cluster import free_port, receiving, redis_server, serve_node, tone

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


# -- report ------------------------------------------------------------------------------------


def _readme(results: dict[str, Any]) -> None:
    a, b, c = (results.get(k, {}).get("result") for k in ("failover", "rolling", "workers"))
    loads = {k: results[k]["load"] for k in ("failover", "rolling", "workers") if k in results}
    lines = [START, "", "Cluster (`benchmarks/cluster_failover.py`; "
             "per part its commit and 1-min load average before -> after: "
             + ", ".join(f"{k} {results[k]['git']['commit'][:9]}"
                         f"{' dirty' if results[k]['git']['dirty'] else ''} "
                         f"{v[0][0]} -> {v[1][0]}" for k, v in loads.items()) + "):",
             ""]  # fmt: skip
    if a:
        k, s, t = a["kill_to_bot_audio_s"], a["kill_to_turn_sent_s"], a["turn_to_bot_audio_s"]
        lines.append(
            f"- failover, {len(a['tries'])} tries (nodes in namespaces, relay-only caller, "
            f"stand-in): kill -9 -> first bot audio p50 {k['p50']} s, max {k['max']} s; of it "
            f"kill -> next turn sent (reconnect) p50 {s['p50']} s / max {s['max']} s, and "
            f"turn ({a['speech_s']} s of speech) -> bot audio p50 {t['p50']} s / max {t['max']} s"
        )
    if b:
        lines.append(
            f"- rolling restart of 2 nodes x {b['calls'] // 2} calls: {b['lost']} of "
            f"{b['calls']} calls lost; " + ", ".join(
                f"node {s['node']} exit {s['exit_code']} after {s['drain_s']} s" for s in b["steps"]
            )
        )  # fmt: skip
    if c:
        lines += ["", "| workers | calls | refused | server CPU % of a core | per call "
                  "| RTT p50 / p95 ms | min fps |", "|" + " --- |" * 7]  # fmt: skip
        lines += [f"| {r['workers']} | {r['calls']} | {r['refused']} | "
                  f"{r['server_cpu_pct_of_core']} | {r['server_cpu_pct_per_call']} | "
                  f"{r['rtt_p50_ms']:.0f} / {r['rtt_p95_ms']:.0f} | {r['fps_min']} |"
                  for r in c]  # fmt: skip
        lines.append(
            "\nLoad client, stand-in and server share both cores (2-core machine, other work "
            "running: see the load average); RTT is the load client's marker round trip "
            "through the stand-in's echo brain. The per-address offer rate limit is off "
            "(one load client address); refusals are the node's own admission."
        )
    lines += ["", END]
    text = README.read_text()
    block = "\n".join(lines)
    if START in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n## Cluster\n\n" + block + "\n"
    README.write_text(text)


async def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--calls-per-node", type=int, default=5)
    parser.add_argument("--load-calls", default="10,20,30")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--only", choices=("failover", "rolling", "workers"))
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(OUT.read_text()) if args.only and OUT.exists() else {}
    results.update(git=_git(), load_before=_load())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        counts = [int(x) for x in args.load_calls.split(",")]
        for name in ("failover", "rolling", "workers"):
            if args.only in (None, name):
                d = work / name
                d.mkdir()
                load0 = _load()
                data: Any
                if name == "failover":
                    data = await failover(args.tries, d)
                elif name == "rolling":
                    data = await rolling(args.calls_per_node, d)
                else:
                    from benchmarks.cluster_capacity import workers

                    data = await workers(counts, args.seconds, d)
                # --only reruns one part: each part keeps its own commit and load average.
                results[name] = {"result": data, "git": _git(), "load": [load0, _load()]}
    results["load_after"] = _load()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    _readme(results)
    print(json.dumps({k: v for k, v in results.items() if k != "failover"}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
