"""Connect times with a real browser, direct (host) vs through a real coturn relay.

Headless Debian chromium loads voicegate's page and presses Connect; the page's own
``vg.timing`` marks (``performance.now()``) give, per call:

* ``offer->connected``: the offer POST leaving the page to RTCPeerConnection ``connected``
  (signaling round trip, voicegate's answer, ICE checks, DTLS);
* ``click->first audio``: the Connect click to the first 50 ms meter tick where the bot's
  WebAudio RMS exceeds 0.01 (microphone, ICE gathering incl. the TURN allocation, the offer, the
  model session, the greeting's first audio through voicegate's playout and Chromium's jitter
  buffer). The meter ticks every 50 ms, so this has 50 ms resolution.

The brain is the Bedrock stand-in's ``reply:greet`` scenario (it speaks as soon as audio
arrives) behind the real ``bedrock`` backend, so the bot speaks first without any user turn.
Modes: ``host`` (page defaults; a host pair on loopback), ``relay`` (``?relay=1``: Chromium only
uses its TURN allocation) and ``relay-both`` (``?relay=1`` and ``voicegate --relay-only``).
Everything runs on 127.0.0.1, so these are the protocol's costs, not a network's latency.
One warm-up call per voicegate process comes first (printed as ``cold``, not counted).

Usage::

    .venv/bin/python -m benchmarks.browser_connect [--runs 10]

``tests/test_browser_turn.py`` runs it once per mode (``--runs 1``) so it cannot rot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from tests.support.browser import Server, chromium, running_server
from tests.support.coturn import running_coturn

SECRET = "bench-turn-secret-0b3f"
MODES = {"host": ("", False), "relay": ("&relay=1", False), "relay-both": ("&relay=1", True)}


ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def standin(
    workdir: Path, args: tuple[str, ...] = ("--scenario", "reply:greet")
) -> Iterator[dict[str, str]]:
    """``voicegate standin ARGS`` as a subprocess; yields the environment it prints for clients
    (endpoint, CA file, keys)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicegate", "standin", "--port", "0",
         "--cert-dir", str(workdir / "certs"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    found: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("# voicegate stand-in ready"):
                break
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                found[key] = value
        else:
            raise RuntimeError("the stand-in exited before it was ready")
        yield found
    finally:
        proc.terminate()
        proc.wait(15)


@contextlib.asynccontextmanager
async def server(
    workdir: Path, turn_port: int, relay_only: bool, env: dict[str, str]
) -> AsyncIterator[Server]:
    """voicegate on the real ``bedrock`` backend, pointed at the stand-in by ``env``."""
    args = ["--turn-url", f"turn:127.0.0.1:{turn_port}?transport=udp"]
    if relay_only:
        args.append("--relay-only")
    async with running_server(
        "bedrock", workdir, args, env={**env, "VOICEGATE_TURN_SECRET": SECRET}
    ) as srv:
        yield srv


async def one_call(ctx: Any, srv: Server, query: str) -> dict[str, Any]:
    page = await ctx.new_page()
    try:
        async with asyncio.timeout(60):
            await page.goto(f"{srv.base}/?raw=1{query}", timeout=30_000)
            await page.click("#connect", timeout=10_000)
            await page.wait_for_function(
                "vg.timing.firstBotAudio && vg.stats.localCandidateType || vg.errors.length",
                timeout=45_000,
                polling=50,
            )
            got: dict[str, Any] = await page.evaluate(
                "() => ({t: vg.timing, pair: [vg.stats.localCandidateType,"
                " vg.stats.remoteCandidateType], errors: vg.errors})"
            )
            await page.click("#hangup", timeout=10_000)
        await srv.wait_sessions(0)
    finally:
        await page.close()
    if got["errors"]:
        raise RuntimeError(f"call failed: {got['errors']}")
    t = got["t"]
    return {
        "offer_connected_ms": t["connected"] - t["offerSent"],
        "click_audio_ms": t["firstBotAudio"] - t["click"],
        "click_connected_ms": t["connected"] - t["click"],
        "pair": got["pair"],
    }


def summary(values: list[float]) -> str:
    return f"p50 {statistics.median(values):6.0f}  max {max(values):6.0f}"


async def measure(runs: int) -> dict[str, list[dict[str, Any]]]:
    """``runs`` calls per mode (after one warm-up call per voicegate process)."""
    with tempfile.TemporaryDirectory(prefix="vg-bench-") as tmp:
        workdir = Path(tmp)
        # The stand-in and coturn are separate processes whose start and stop wait on them:
        # that waiting happens in a thread, so the loop that carries the calls never stalls.
        helpers = contextlib.ExitStack()
        try:
            env = await asyncio.to_thread(helpers.enter_context, standin(workdir))
            relay = await asyncio.to_thread(helpers.enter_context, running_coturn(workdir, SECRET))
            results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            async with (
                server(workdir, relay.port, False, env) as plain,
                server(workdir, relay.port, True, env) as relay_only,
                chromium(None) as ctx,
            ):
                # Warm-up: the first call of each voicegate process also pays for its first
                # model connection (TLS to the stand-in); shown, not counted.
                for name, srv, query in (
                    ("host", plain, ""),
                    ("relay-both", relay_only, "&relay=1"),
                ):
                    print(f"cold {name:10} {json.dumps(await one_call(ctx, srv, query))}")
                for i in range(runs):
                    for mode, (query, server_relay) in MODES.items():
                        srv = relay_only if server_relay else plain
                        r = await one_call(ctx, srv, query)
                        results[mode].append(r)
                        print(f"run {i} {mode:10} {json.dumps(r)}", flush=True)
        finally:
            await asyncio.to_thread(helpers.close)
    return results


def report(results: dict[str, list[dict[str, Any]]]) -> None:
    runs = min(len(rows) for rows in results.values())
    print(f"\n{runs} calls per mode (ms)")
    for mode, rows in results.items():
        pairs = sorted({"/".join(map(str, r["pair"])) for r in rows})
        print(
            f"{mode:10} offer->connected {summary([r['offer_connected_ms'] for r in rows])}"
            f" | click->connected {summary([r['click_connected_ms'] for r in rows])}"
            f" | click->first bot audio {summary([r['click_audio_ms'] for r in rows])}"
            f" | pair {', '.join(pairs)}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    report(asyncio.run(measure(parser.parse_args().runs)))
