"""The gateways under test, each started fresh in its own process pinned to CPU 0.

- ``voicegate``: ``voicegate serve --backend bedrock`` (the real BedrockBackend);
- ``patched`` / ``stock``: ``stock_gateway.py`` with and without voicegate's aiortc patches;
- ``pipecat``: ``pipecat_peer/pipecat_bot.py`` in Pipecat's own virtualenv.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness.procs import GATEWAY_CPU, PY, Sampler, env, free_port, wait_port
from benchmarks.harness.provenance import ROOT
from benchmarks.systems import pipecat

KINDS = ("voicegate", "patched", "stock", "pipecat")
STOCK_KINDS = ("patched", "stock")
"""The gateways run from systems/stock_gateway.py: no model hop, so on the turns workload they
run the turns rules in process (``--brain turns``) instead of asking the stand-in."""


def gateway_cmd(kind: str, port: int, extra: list[str]) -> list[str]:
    if kind == "voicegate":
        return [PY, "-m", "voicegate", "serve", "--backend", "bedrock", "--port", str(port), *extra]
    stock = [PY, "-m", "benchmarks.systems.stock_gateway"]
    if kind == "patched":  # the stock gateway's code with voicegate's aiortc patches
        return [*stock, "--patched", "--port", str(port), *extra]
    if kind == "stock":
        return [*stock, "--port", str(port), *extra]
    if kind == "pipecat":
        return [str(pipecat.PYTHON), str(pipecat.BOT), "--port", str(port)]
    raise ValueError(kind)


@contextlib.contextmanager
def gateway(
    kind: str, standin_env: dict[str, Any], tmp: Path, extra: list[str] | None = None
) -> Iterator[tuple[str, Sampler]]:
    """A fresh gateway on CPU 0 (its URL and CPU/RSS sampler). voicegate runs with the offer
    rate limit, the per-address connection cap, the pending-offer caps and loop-lag shedding
    off: one load client makes every offer, and capacity is measured against the latency
    budget, not against a shedding threshold."""
    port = free_port()
    full = {k: str(v) for k, v in standin_env.items() if k != "think_ms"}
    full = {**env(), **full}
    # Every simulated caller comes from 127.0.0.1: the per-address caps are off too.
    full.update(
        VOICEGATE_MAX_SESSIONS="400",
        VOICEGATE_OFFER_RATE="0",
        VOICEGATE_MAX_LOOP_LAG_MS="0",
        VOICEGATE_MAX_CONNECTIONS_PER_IP="0",
        # The calls still connecting: the load client ramps up to 20 a second from one address.
        VOICEGATE_MAX_PENDING_OFFERS="0",
        VOICEGATE_MAX_PENDING_PER_SUBJECT="0",
    )
    if kind == "pipecat":
        full.pop("PYTHONPATH", None)
    log = open(tmp / f"{kind}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        ["taskset", "-c", GATEWAY_CPU, *gateway_cmd(kind, port, extra or [])],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full,
        cwd=ROOT,
    )
    sampler = Sampler(proc.pid)
    try:
        wait_port(port, proc)
        sampler.start()
        yield f"http://127.0.0.1:{port}", sampler
    finally:
        sampler.stop()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


__all__ = ["KINDS", "STOCK_KINDS", "gateway", "gateway_cmd"]
