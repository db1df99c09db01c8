"""Pipecat's side of benchmarks/mouth_to_ear.py, called from the same browser two ways.

The server is always the same: Pipecat 1.14's development runner (``pipecat_runner_bot.py``, in
.bench/pipecat) with the SmallWebRTC transport and the AWS Nova Sonic service of
``pipecat_bot.py``, on its own Bedrock stand-in running the ``echo`` brain.

1. **voicegate's measuring page as the client** (``page_front``), the measured row. A tiny
   HTTP front in the benchmark process, on its own loopback port, serves the page, its modules
   and its AudioWorklet exactly as voicegate serves them (fetched from the voicegate server
   measured alongside, Content-Security-Policy and other headers included) and passes every
   other ``/api/`` request unchanged to Pipecat's runner. So the page's ``POST /api/offer`` is
   answered by Pipecat: that endpoint speaks the same plain signaling as voicegate's (``{sdp,
   type, pc_id?, restart_pc?}`` in, ``{sdp, type, pc_id}`` out: Pipecat's
   ``SmallWebRTCRequest``), and the page's data channel speaks RTVI, which is Pipecat's own.
   Only signaling passes the front; the media flows between Chromium and Pipecat's aiortc
   directly. The page's ``GET /api/ice-servers`` (Pipecat has no such route) is answered with
   an empty list: the runner runs without ``--ice-servers``, so neither peer has any, as on
   voicegate's side. Its hang-up ``DELETE /api/sessions/{pc_id}`` has no route in the runner
   (404); the page then closes its peer connection, which ends the bot. So both systems are
   measured by the identical client: same browser, fake microphone, getUserMedia constraints,
   peer connection set-up, jitter buffer and worklet. (Playwright's request interception
   cannot stand in for the front: Chromium fetches an AudioWorklet's module outside it.)

2. **Pipecat's own prebuilt web client** (``own_client``), tried and reported. The runner
   serves the ``pipecat-ai-prebuilt`` wheel's built client at ``/client/`` (no npm build). Its
   SmallWebRTC transport, however, gets the microphone through Daily's media manager
   (daily-js), which downloads Daily's "call machine" bundle from Daily's CDN when the page
   initialises its devices; the bundle ships in no registry package (daily-js on npm only names
   its URL). Where that CDN cannot be reached, device set-up never finishes and Connect sends no
   offer at all; ``own_client`` checks for that offer and says what the page failed to load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from tests.support.browser import free_port

from benchmarks.browser_connect import standin
from benchmarks.procs import BENCH_VENV, PIPECAT, ROOT, ensure_pipecat
from benchmarks.run import pipecat_settings

OFFER_WAIT_S = 20.0
BOOT_TIMEOUT_S = 60.0
# The runner has no session count to wait on (voicegate's /healthz has one); after the page
# closed its peer connection, this gives the bot's pipeline time to wind down before the next
# call, so a teardown never overlaps the next system's measurement.
TEARDOWN_S = 2.0


class Unavailable(Exception):
    """Pipecat cannot be measured this way on this machine (the message says why)."""


def versions() -> dict[str, Any]:
    """What the Pipecat rows ran: the pinned package and the bot's latency settings."""
    return {"package": PIPECAT, "settings": pipecat_settings()}


@contextlib.contextmanager
def _runner_proc(
    workdir: Path, env: dict[str, str], port: int
) -> Iterator[subprocess.Popen[bytes]]:
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


@contextlib.asynccontextmanager
async def running(workdir: Path) -> AsyncIterator[str]:
    """Pipecat's runner on its own echo stand-in; yields its base URL. ``Unavailable`` when the
    benchmark's Pipecat virtualenv cannot be set up or the runner does not come up."""
    why = await asyncio.to_thread(ensure_pipecat)
    if why:
        raise Unavailable(why)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack = contextlib.ExitStack()
    try:
        env = await asyncio.to_thread(
            stack.enter_context, standin(workdir / "pipecat", ("--brain", "echo"))
        )
        proc = stack.enter_context(_runner_proc(workdir, env, port))
        await _wait_up(f"{base}/client/", proc)
        yield base
    finally:
        await asyncio.to_thread(stack.close)  # stopping processes blocks; not on the loop


# Headers of voicegate's page responses that describe the connection, not the file: the front
# sets its own.
_HOP_HEADERS = frozenset(
    {"connection", "content-encoding", "content-length", "date", "keep-alive", "server",
     "transfer-encoding"}
)  # fmt: skip


@contextlib.asynccontextmanager
async def page_front(runner_base: str, page_base: str) -> AsyncIterator[str]:
    """voicegate's page (as ``page_base`` serves it) with Pipecat's runner behind its
    ``/api/``; yields the front's base URL. See the module's notes."""
    from aiohttp import ClientSession, web

    async with ClientSession() as http:

        async def page_file(request: web.Request) -> web.Response:
            async with http.get(f"{page_base}{request.path_qs}") as res:
                body = await res.read()
                keep = {k: v for k, v in res.headers.items() if k.lower() not in _HOP_HEADERS}
                return web.Response(status=res.status, body=body, headers=keep)

        async def ice_servers(request: web.Request) -> web.Response:
            return web.json_response({"iceServers": []})

        async def to_runner(request: web.Request) -> web.Response:
            headers = {}
            if request.content_type:
                headers["Content-Type"] = request.content_type
            async with http.request(
                request.method,
                f"{runner_base}{request.path_qs}",
                data=await request.read(),
                headers=headers,
            ) as res:
                return web.Response(
                    status=res.status, body=await res.read(), content_type=res.content_type
                )

        app = web.Application()
        app.router.add_get("/", page_file)
        app.router.add_get("/static/{path:.+}", page_file)
        app.router.add_get("/api/ice-servers", ice_servers)
        app.router.add_route("*", "/api/{path:.+}", to_runner)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


async def own_client(ctx: Any, runner_base: str) -> str:
    """Why Pipecat's own prebuilt client is not measured here: Connect is pressed and the
    runner watched for an offer; the reason names what the page failed to load."""
    page = await ctx.new_page()
    failed: list[str] = []
    offered = asyncio.Event()
    page.on("requestfailed", lambda r: failed.append(r.url.split("?")[0]))
    page.on("request", lambda r: offered.set() if "/api/offer" in r.url else None)
    try:
        await page.goto(f"{runner_base}/client/", timeout=30_000)
        await page.click("[data-slot=connect-button]", timeout=15_000)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OFFER_WAIT_S):
                await offered.wait()
    finally:
        await page.close()
    if not offered.is_set():
        hosts = sorted({u.split("/")[2] for u in failed if "://" in u and "127.0.0.1" not in u})
        return (
            f"Pipecat's prebuilt client sent no offer within {OFFER_WAIT_S:.0f} s of Connect: its "
            "SmallWebRTC transport sets up the microphone through daily-js, which loads Daily's "
            f"call-machine bundle from a CDN at run time (failed: {', '.join(hosts) or 'none'})"
        )
    return (
        "Pipecat's prebuilt client started a call, but measuring inside its page is not "
        "implemented (see the row measured with voicegate's page)"
    )
