"""Pipecat's side of benchmarks/mouth_to_ear.py: its own prebuilt web client in the same browser.

Pipecat's development runner (``pipecat_runner_bot.py``, in .bench/pipecat) serves the
``pipecat-ai-prebuilt`` wheel's built client at ``/client/``: no npm build is needed. Its
SmallWebRTC transport, however, gets the microphone through Daily's media manager (daily-js),
which downloads Daily's "call machine" bundle from Daily's CDN when the page initialises its
devices; the bundle ships in no registry package (daily-js on npm only names its URL). Where
that CDN cannot be reached, device set-up never finishes and Connect sends no offer at all.

``calls`` therefore first checks that the client really starts a call (an offer reaches the
runner after Connect); when it does not, it raises ``Unavailable`` with what the page failed to
load, which the benchmark reports instead of a number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.browser_util import free_port

from benchmarks.mouth_to_ear import ROOT, echo_standin
from benchmarks.run import BENCH_VENV, ensure_pipecat

OFFER_WAIT_S = 20.0
BOOT_TIMEOUT_S = 60.0


class Unavailable(Exception):
    """Pipecat's client cannot make a call on this machine (the message says why)."""


@contextlib.contextmanager
def runner(workdir: Path, env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    full = {**os.environ, **env}
    full.pop("PYTHONPATH", None)  # Pipecat's own virtualenv, never voicegate's code
    log = (workdir / "pipecat-runner.log").open("wb")
    proc = subprocess.Popen(
        [str(BENCH_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "pipecat_runner_bot.py"),
         "-t", "webrtc", "--host", "127.0.0.1", "--port", str(port)],
        env=full, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT / "benchmarks",
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
        log.close()


async def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    import aiohttp

    async with asyncio.timeout(BOOT_TIMEOUT_S), aiohttp.ClientSession() as http:
        while True:
            if proc.poll() is not None:
                raise Unavailable(f"Pipecat's runner exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as res:
                    if res.status == 200:
                        return
            await asyncio.sleep(0.3)  # start-up of another process, not an audio path


async def calls(ctx: Any, workdir: Path, runs: int, seconds: float) -> list[dict[str, Any]]:
    why = await asyncio.to_thread(ensure_pipecat)
    if why:
        raise Unavailable(why)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        env = await asyncio.to_thread(stack.enter_context, echo_standin(workdir / "pipecat"))
        proc = stack.enter_context(runner(workdir, env, port))
        await _wait_up(f"{base}/client/", proc)
        page = await ctx.new_page()
        failed: list[str] = []
        offered = asyncio.Event()
        page.on("requestfailed", lambda r: failed.append(r.url.split("?")[0]))
        page.on("request", lambda r: offered.set() if "/api/offer" in r.url else None)
        try:
            await page.goto(f"{base}/client/", timeout=30_000)
            await page.click("[data-slot=connect-button]", timeout=15_000)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OFFER_WAIT_S):
                    await offered.wait()
        finally:
            await page.close()
    if not offered.is_set():
        hosts = sorted({u.split("/")[2] for u in failed if "://" in u and "127.0.0.1" not in u})
        raise Unavailable(
            f"Pipecat's prebuilt client sent no offer within {OFFER_WAIT_S:.0f} s of Connect: its "
            "SmallWebRTC transport sets up the microphone through daily-js, which loads Daily's "
            f"call-machine bundle from a CDN at run time (failed: {', '.join(hosts) or 'none'})"
        )
    raise Unavailable(
        "Pipecat's client started a call, but measuring it (the page's measuring modules "
        "injected into Pipecat's page) is not implemented yet"
    )
