"""``voicegate serve --workers 2``: one node, a supervisor and two worker processes.

Real processes, real aiortc callers: new calls are spread over both workers; ``/healthz`` and
``/metrics`` describe the whole node; a worker killed with SIGKILL takes only its own calls
down (counted as ended with the reason ``worker-died``), the other worker's calls go on, and
the supervisor starts the worker again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from tests.support.cluster import SECRET, Node, receiving, serve_node, start_call
from tests.support.metrics_names import sample
from voicegate.signaling import auth


async def settled(node: Node, sessions: int) -> Any:
    """/healthz once the supervisor's next poll of its workers counted ``sessions`` calls."""
    for _ in range(50):
        health = await node.json("/healthz")
        if health["sessions"] == sessions:
            break
        await asyncio.sleep(0.1)
    return health


async def test_two_workers_spread_calls_and_survive_one_worker_death(tmp_path: Path) -> None:
    # One token for all four calls: the per-subject limit (3 a node) is not what is tested.
    args = ("--workers", "2", "--backend", "echo", "--port", "0", "--max-calls-per-subject", "0")
    async with serve_node(tmp_path, *args) as node:
        clients = []
        try:
            async with asyncio.timeout(120):
                for _ in range(4):
                    clients.append(await start_call(node.url))
                    # Counted once as soon as it is answered, whenever the supervisor's last
                    # poll of that worker happened.
                    health = await node.json("/healthz")
                    assert health["sessions"] == len(clients), health
                health = await settled(node, 4)
                per_worker = [w["sessions"] for w in health["workers"]]
                assert health["sessions"] == 4 and sorted(per_worker) == [2, 2], health
                metrics = await node.text("/metrics")
                assert sample(metrics, "voicegate_calls_active", worker="0") == 2
                assert sample(metrics, "voicegate_calls_active", worker="1") == 2
                assert metrics.count("# TYPE voicegate_calls_active ") == 1
                victim = health["workers"][0]
                os.kill(victim["pid"], signal.SIGKILL)
                alive = [await receiving(c, timeout=8) for c in clients]
                # Only the killed worker's two calls stopped; the other two carry on.
                assert alive.count(True) == 2, alive
                for _ in range(200):
                    health = await node.json("/healthz")
                    w0 = health["workers"][0]
                    if w0["alive"] and w0["restarts"] == 1:
                        break
                    await asyncio.sleep(0.1)
                assert w0["alive"] and w0["restarts"] == 1 and w0["pid"] != victim["pid"], w0
                metrics = await node.text("/metrics")
                lost = sample(
                    metrics,
                    "voicegate_calls_ended_total",
                    worker="supervisor",
                    reason="worker-died",
                )
                assert lost == 2
                # The restarted worker takes new calls again; the survivors still run.
                clients.append(await start_call(node.url))
                health = await node.json("/healthz")
                assert health["workers"][0]["sessions"] >= 1, health
                for c, ok in zip(clients, [*alive, True], strict=True):
                    if ok:
                        assert await receiving(c), "a surviving call stopped"
                        assert not c.of_type("error")
        finally:
            for c in clients:
                await c.close()


async def test_a_burst_of_offers_is_split_evenly_between_the_workers(tmp_path: Path) -> None:
    # Offers that arrive while others are still negotiating must not all see the same "least
    # loaded" worker: each counts against its worker from the moment it is picked.
    args = ("--workers", "2", "--backend", "echo", "--port", "0")
    async with serve_node(tmp_path, *args) as node:
        clients: list[Any] = []
        try:
            async with asyncio.timeout(90):
                tokens = [auth.mint(SECRET, 600, subject=f"caller-{i}") for i in range(5)]
                started = await asyncio.gather(
                    *(start_call(node.url, t) for t in tokens), return_exceptions=True
                )
                clients = [c for c in started if not isinstance(c, BaseException)]
                assert len(clients) == 5, started
                health = await settled(node, 5)
                per_worker = sorted(w["sessions"] for w in health["workers"])
                print(f"5 concurrent offers per worker: {per_worker}")
                assert per_worker == [2, 3], health
        finally:
            for c in clients:
                await c.close()


async def test_one_worker_runs_without_a_supervisor(tmp_path: Path) -> None:
    async with serve_node(tmp_path, "--workers", "1", "--backend", "echo", "--port", "0") as node:
        health = await node.json("/healthz")
        assert "workers" not in health and health["ready"] is True


def test_cluster_options_are_validated_and_split_between_workers() -> None:
    from voicegate.cluster.workers import worker_env
    from voicegate.config import ConfigError, resolve, worker_count

    env = {"VOICEGATE_WORKERS": "3", "VOICEGATE_RTC_PORTS": "40000-40299"}
    config = resolve(None, env=env)
    assert worker_count(config) == 3 and config.node_id  # the host name by default
    shares = [worker_env(config, i, 3)["VOICEGATE_RTC_PORTS"] for i in range(3)]
    assert shares == ["40000-40099", "40100-40199", "40200-40299"]
    assert worker_env(config, 0, 3)["VOICEGATE_MAX_SESSIONS"] == "7"  # ceil(20 / 3)
    assert worker_count(resolve(None, env={})) >= 1  # auto: one per usable core
    bad = {
        "VOICEGATE_WORKERS": "0",
        "VOICEGATE_CLUSTER_REDIS": "http://x",
        "VOICEGATE_NODE_URL": "nope",
        "VOICEGATE_NODE_ID": "a b",
    }
    try:
        resolve(None, env=bad)
    except ConfigError as exc:
        text = "\n".join(exc.problems)
        assert "VOICEGATE_WORKERS" in text and "cluster_redis" in text
        assert "node_url" in text and "node_id" in text
    else:
        raise AssertionError("bad cluster options were accepted")
