"""Mouth-to-ear latency in a real browser: marker tones in Chromium's fake microphone, heard back.

Headless Debian chromium's fake microphone plays the load tester's signal (espeak-ng speech with
a 2.5 kHz marker tone once a second, ``voicegate.testing.signals``), looped. The brain echoes, so
every marker comes back in the bot's audio. The page's measuring mode (``/?raw=1&measure=1``,
``web/measure.js``) runs an AudioWorklet on the microphone stream and on the played (remote)
stream and timestamps each marker's onset on the AudioContext clock; a bot onset minus the
latest microphone onset before it is one mouth-to-ear sample. It includes everything between
the microphone capture and the audio handed to the speaker: Opus both ways, the network stacks,
the gateway, the model hop, the browser's own jitter buffer (NetEq) and decoder. It excludes the
sound card's own buffer (``AudioContext.outputLatency``, recorded; headless reports 0).

Systems, each called by the same headless Chromium with the same fake microphone:

- ``voicegate``: ``voicegate serve --backend bedrock`` (the real AWS SDK, HTTP/2 + TLS) against
  the Bedrock stand-in's ``echo`` brain (zero think time), voicegate's own page.
- ``pipecat (SmallWebRTC server, voicegate's measuring page as client)``: Pipecat 1.14's
  development runner with its SmallWebRTC transport and AWS Nova Sonic service
  (``pipecat_bot.py``) on its own echo stand-in, called by the very same page and measuring
  code, served by a small front that passes its plain ``POST /api/offer`` signaling to Pipecat
  (``pipecat_m2e.py``). The client side is identical for both systems; only the server differs.
- ``pipecat (its own prebuilt web client)``: tried, not measured where it cannot call: its
  SmallWebRTC client needs Daily's call-machine bundle from Daily's CDN (``pipecat_m2e.py``);
  the row gives the reason.

The page gets the microphone without echo cancellation, noise suppression and gain control
(``?raw=1``), so the markers reach both servers alike. Each system gets one warm-up call, not
counted; then the systems take turns call by call (voicegate, Pipecat, voicegate, ...), so
both see the same machine load over the run.

Usage::

    .venv/bin/python -m benchmarks.mouth_to_ear [--runs 5] [--seconds 15] [--peers pipecat]

Results: ``benchmarks/results/mouth-to-ear.json`` and a table in benchmarks/README.md between
the ``mouth-to-ear`` markers. ``tests/test_browser_measure.py`` runs the voicegate part once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.browser import CHROMIUM, Server, chromium, running_server

from benchmarks import pipecat_m2e
from benchmarks.browser_connect import standin
from voicegate.testing.signals import speech, with_markers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "mouth-to-ear.json"
README = ROOT / "benchmarks" / "README.md"
BLOCK = ("<!-- mouth-to-ear:start -->", "<!-- mouth-to-ear:end -->")
RATE = 48000
MIC_SECONDS = 30.0  # the WAV's length; Chromium loops it
CONNECT_TIMEOUT_S = 30.0
VOICEGATE = "voicegate"
PIPECAT_PAGE = "pipecat (SmallWebRTC server, voicegate's measuring page as client)"
PIPECAT_OWN = "pipecat (its own prebuilt web client)"

# What the page's state looks like to the benchmark (plain data, through page.evaluate, which
# the page's Content-Security-Policy does not restrict).
READ_PAGE = "() => ({m: vg.measure, connected: vg.connected, errors: vg.errors})"


def make_mic_wav(path: Path, seconds: float = MIC_SECONDS) -> Path:
    """The load tester's signal (speech, a marker tone every second) as a 48 kHz mono WAV."""
    signal, _ = with_markers(speech(RATE, seconds), RATE)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(signal.tobytes())
    return path


def echo_standin(workdir: Path) -> contextlib.AbstractContextManager[dict[str, str]]:
    """``voicegate standin --brain echo`` as a subprocess; yields the environment it prints for
    clients (endpoint, CA file, keys)."""
    return standin(workdir, ("--brain", "echo"))


@contextlib.asynccontextmanager
async def voicegate_on_echo(workdir: Path) -> AsyncIterator[Server]:
    """voicegate's real ``bedrock`` backend in front of the stand-in's echo brain."""
    with contextlib.ExitStack() as helpers:
        env = await asyncio.to_thread(helpers.enter_context, echo_standin(workdir))
        try:
            async with running_server("bedrock", workdir, env=env) as srv:
                yield srv
        finally:
            await asyncio.to_thread(helpers.close)


async def measure_call(
    page: Any, url: str, seconds: float, connect: str = "() => vg.connect()"
) -> dict[str, Any]:
    """Loads ``url``, connects, listens for ``seconds`` once connected, returns ``vg.measure``
    (plus the page's errors). The caller hangs up."""
    await page.goto(url, timeout=30_000)
    await page.evaluate(connect)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        got: dict[str, Any] = await page.evaluate(READ_PAGE)
        if got["connected"] or got["errors"]:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"no connection within {CONNECT_TIMEOUT_S} s: {got}")
        await asyncio.sleep(0.1)  # the benchmark polls the browser's state, not an audio path
    await asyncio.sleep(seconds)  # the call runs; the worklets collect onsets meanwhile
    got = await page.evaluate(READ_PAGE)
    if got["errors"] or not got["m"] or got["m"]["errors"]:
        raise RuntimeError(f"call failed: {got['errors'] or got['m']}")
    result: dict[str, Any] = got["m"]
    return result


# One measured call in the shared browser context: ``vg.measure`` of that call, hung up.
Call = Callable[[Any], Awaitable[dict[str, Any]]]


async def voicegate_call(ctx: Any, srv: Server, seconds: float) -> dict[str, Any]:
    page = await ctx.new_page()
    try:
        m = await measure_call(page, f"{srv.base}/?raw=1&measure=1", seconds)
        await page.evaluate("() => vg.hangup()")
        await srv.wait_sessions(0)
    finally:
        await page.close()
    return m


async def pipecat_page_call(ctx: Any, front_base: str, seconds: float) -> dict[str, Any]:
    """voicegate's measuring page calling Pipecat's runner through ``pipecat_m2e.page_front``."""
    page = await ctx.new_page()
    try:
        m = await measure_call(page, f"{front_base}/?raw=1&measure=1", seconds)
        await page.evaluate("() => vg.hangup()")
        await asyncio.sleep(pipecat_m2e.TEARDOWN_S)  # no session count to wait on there
    finally:
        await page.close()
    return m


async def interleaved(
    ctx: Any, systems: dict[str, Call], runs: int
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """A warm-up call per system (the first TLS connection to the model, the first peer
    connection), then ``runs`` rounds of one call per system, so a change in the machine's load
    during the run falls on every system alike. A system whose call fails is dropped from later
    rounds with the reason; the others carry on."""
    calls: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    failed: dict[str, str] = {}
    for i in range(runs + 1):
        for name, one in systems.items():
            if name in failed:
                continue
            label = "warm-up" if i == 0 else f"call {i}"
            try:
                m = await one(ctx)
            except Exception as exc:  # any failure of one system must not cost the others
                failed[name] = f"{label} failed: {exc}"
                print(f"{name} {label}: FAILED {exc}", flush=True)
                continue
            print(f"{name} {label}: {brief(m)}", flush=True)
            if i:
                calls[name].append(m)
    return calls, failed


def brief(m: dict[str, Any]) -> str:
    ms = m["mouthToEarMs"]
    if not ms:
        return f"no round trip (mic onsets {len(m['micOnsets'])}, bot {len(m['botOnsets'])})"
    return (
        f"{len(ms)} markers, median {statistics.median(ms):.1f} ms, "
        f"{min(ms):.1f}-{max(ms):.1f} (mic onsets {len(m['micOnsets'])})"
    )


def summarize(calls: list[dict[str, Any]]) -> dict[str, Any]:
    values = [v for c in calls for v in c["mouthToEarMs"]]
    per_call = [statistics.median(c["mouthToEarMs"]) for c in calls if c["mouthToEarMs"]]
    if not values:
        return {"n": 0, "calls": len(calls)}
    p95 = sorted(values)[math.ceil(0.95 * len(values)) - 1]  # nearest rank
    return {
        "n": len(values),
        "calls": len(calls),
        "median_ms": round(statistics.median(values), 1),
        "p95_ms": round(p95, 1),
        "min_ms": round(min(values), 1),
        "max_ms": round(max(values), 1),
        "per_call_median_ms": [round(v, 1) for v in per_call],
        "output_latency_ms": calls[0].get("outputLatencyMs"),
        "sample_rate": calls[0].get("sampleRate"),
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def chromium_version() -> str:
    out = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pipecat_line(meta: dict[str, Any]) -> list[str]:
    """What the Pipecat rows ran, so the figure can be reproduced: package and bot settings."""
    pipecat = meta.get("pipecat")
    if not pipecat:
        return []
    settings = ", ".join(f"{k}={v}" for k, v in pipecat.get("settings", {}).items())
    return ["", f"Pipecat: `{pipecat['package']}`; bot settings: {settings or 'unknown'}."]


def table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"Run {meta['started_utc']}, commit `{meta['commit'][:10]}`"
        f"{' (dirty tree)' if meta['dirty'] else ''}, {meta['chromium']}, {meta['machine']}, "
        f"load average before {meta['load_avg_before']} / after {meta['load_avg_after']}. "
        "Raw: `results/mouth-to-ear.json`.",
        *pipecat_line(meta),
        "",
        "| system | mouth-to-ear median ms | min-max ms | p95 ms | N markers (calls) |",
        "|---|---|---|---|---|",
    ]
    for name, s in results["systems"].items():
        if "error" in s:
            lines.append(f"| {name} | not run: {s['error']} | | | |")
        elif not s.get("n"):
            lines.append(f"| {name} | no marker came back | | | 0 ({s.get('calls', 0)}) |")
        else:
            lines.append(
                f"| {name} | {s['median_ms']} | {s['min_ms']}-{s['max_ms']} | {s['p95_ms']} | "
                f"{s['n']} ({s['calls']}) |"
            )
    return "\n".join(lines)


def write_readme(text: str) -> None:
    """Rewrites only the block between this benchmark's own markers."""
    start, end = BLOCK
    body = README.read_text()
    if start not in body:
        body = body.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, rest = body.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else "\n"
    README.write_text(f"{head}{start}\n{text}\n{end}{tail}")


async def run(runs: int, seconds: float, peers: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **git_state(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "chromium": chromium_version(),
        "runs": runs,
        "seconds_per_call": seconds,
        "order": "one warm-up call per system, then each round calls every system once, in "
        "the order of systems",
        "load_avg_before": load_avg(),
    }
    systems: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vg-m2e-") as tmp:
        workdir = Path(tmp)
        wav = make_mic_wav(workdir / "markers.wav")
        async with (
            chromium(wav, loop_mic=True, bypass_csp=False) as ctx,
            voicegate_on_echo(workdir) as srv,
            contextlib.AsyncExitStack() as stack,
        ):
            measured: dict[str, Call] = {VOICEGATE: lambda c: voicegate_call(c, srv, seconds)}
            runner_base: str | None = None
            pipecat_error = ""
            if "pipecat" in peers:
                try:
                    runner_base = await stack.enter_async_context(pipecat_m2e.running(workdir))
                except pipecat_m2e.Unavailable as exc:
                    pipecat_error = str(exc)
                else:
                    meta["pipecat"] = await asyncio.to_thread(pipecat_m2e.versions)
                    front = await stack.enter_async_context(
                        pipecat_m2e.page_front(runner_base, srv.base)
                    )
                    measured[PIPECAT_PAGE] = lambda c: pipecat_page_call(c, front, seconds)
            calls, failed = await interleaved(ctx, measured, runs)
            for name in measured:
                systems[name] = (
                    {"error": failed[name]} if name in failed else summarize(calls[name])
                )
                raw[name] = calls[name]
            if runner_base is not None:
                try:
                    pipecat_error = await pipecat_m2e.own_client(ctx, runner_base)
                except Exception as exc:  # a changed prebuilt UI: say so, keep the other rows
                    pipecat_error = f"could not drive Pipecat's prebuilt client: {exc}"
            elif pipecat_error:
                systems[PIPECAT_PAGE] = {"error": pipecat_error}
            if pipecat_error:
                systems[PIPECAT_OWN] = {"error": pipecat_error}
    meta["load_avg_after"] = load_avg()
    return {"meta": meta, "systems": systems, "raw": raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="counted calls per system")
    parser.add_argument("--seconds", type=float, default=15.0, help="listening time per call")
    parser.add_argument("--peers", default="pipecat", help="comma-separated: pipecat or empty")
    parser.add_argument("--no-readme", action="store_true", help="do not touch README.md")
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    results = asyncio.run(run(args.runs, args.seconds, peers))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    text = table(results)
    print("\n" + text)
    if not args.no_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
