"""Pipecat's own JavaScript client (client-js + small-webrtc-transport, from npm) against voicegate.

The packages are installed by ``make setup-test`` from tests/browser/pipecat/package-lock.json and
bundled here with their pinned esbuild into one file; the test serves that file and a small page
(tests/browser/pipecat/page.html) on voicegate's own origin through Playwright's routing, so
nothing comes from a CDN and the calls are same-origin. The page records every client callback in
``window.pc``; the server is a real voicegate with the offline brain, whose answer to "what time
is it" goes through its real ``get_current_time`` tool.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    BOT_RMS_FLOOR,
    CONNECT_TIMEOUT_MS,
    TURN_TIMEOUT_MS,
    Server,
    chromium,
    make_speech_wav,
    require_browser,
    running_server,
)
from tests.support.components import missing

pytestmark = [pytest.mark.browser, pytest.mark.local, pytest.mark.timeout(400)]

PIPECAT = Path(__file__).resolve().parent / "pipecat"
SPOKEN = "Hello, what time is it?"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """client-js and small-webrtc-transport as one browser script (the global ``Pipecat``)."""
    esbuild = PIPECAT / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        missing("Pipecat's JS client is not installed (make setup-test runs npm ci for it)")
    out = tmp_path_factory.mktemp("pipecat") / "pipecat.js"
    subprocess.run(
        [str(esbuild), "entry.js", "--bundle", "--format=iife", "--global-name=Pipecat",
         f"--outfile={out}", "--log-level=warning"],
        cwd=PIPECAT,
        check=True,
        timeout=120,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_browser()
    return make_speech_wav(tmp_path_factory.mktemp("speech"), SPOKEN)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    require_browser()
    async with running_server("local", tmp_path) as srv:
        yield srv


async def wait_pc(page: Any, expression: str, timeout_ms: int, what: str, server: Server) -> None:
    """Wait for ``expression`` over the page's ``pc`` record, failing with a snapshot of it."""
    try:
        async with asyncio.timeout(timeout_ms / 1000 + 5):
            await page.wait_for_function(expression, timeout=timeout_ms, polling=100)
    except Exception as exc:  # Playwright's TimeoutError or ours; both mean the same here
        async with asyncio.timeout(10):
            snapshot = await page.evaluate("() => JSON.stringify(window.pc)")
        raise AssertionError(
            f"timed out waiting for {what}: {type(exc).__name__}\npc: {snapshot[:6000]}\n"
            f"server log:\n{server.log_tail()}"
        ) from None


async def evaluate(page: Any, expression: str) -> Any:
    async with asyncio.timeout(30):
        return await page.evaluate(expression)


async def test_pipecat_client_js_talks_to_voicegate(
    server: Server, spoken_wav: Path, bundle: Path
) -> None:
    script = await asyncio.to_thread(bundle.read_bytes)
    html = await asyncio.to_thread((PIPECAT / "page.html").read_bytes)
    async with chromium(spoken_wav) as ctx:

        async def serve(route: Any) -> None:
            if route.request.url.endswith("/pipecat.js"):
                await route.fulfill(body=script, content_type="text/javascript")
            else:
                await route.fulfill(body=html, content_type="text/html")

        await ctx.route(f"{server.base}/pipecat-test/**", serve)
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        async with asyncio.timeout(30):
            await page.goto(f"{server.base}/pipecat-test/index.html", timeout=30_000)

        # connect() resolves on bot-ready; the version voicegate negotiated is 2.x.
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_MS / 1000 + 10):
                outcome = await page.evaluate("connectBot()")
        except TimeoutError:
            outcome = "timed out"
        assert outcome == "connected", f"{outcome}\n{console}\n{server.log_tail()}"
        ready = await evaluate(page, "pc.ready")
        assert ready["version"].startswith("2."), ready
        assert await server.sessions() == 1

        # The spoken question: a user transcript, the tool call, the spoken answer, its audio.
        await wait_pc(page, "pc.user.length > 0", TURN_TIMEOUT_MS, "a user transcript", server)
        await wait_pc(
            page, "pc.calls.stopped.length > 0", TURN_TIMEOUT_MS, "the tool call's end", server
        )
        await wait_pc(
            page, "pc.output.some(o => o.spoken)", TURN_TIMEOUT_MS, "a spoken bot-output", server
        )
        await wait_pc(page, f"pc.botPeak > {BOT_RMS_FLOOR}", TURN_TIMEOUT_MS, "bot audio", server)
        await wait_pc(
            page, "(pc.counts.llmStopped || 0) >= 1", TURN_TIMEOUT_MS, "bot-llm-stopped", server
        )
        first = await evaluate(page, "pc")
        assert "time" in " ".join(first["user"]).lower(), first["user"]
        started, progress, stopped = (first["calls"][k] for k in ("started", "progress", "stopped"))
        assert [c["function_name"] for c in started] == ["get_current_time"], started
        assert progress[0]["function_name"] == "get_current_time", progress
        assert progress[0]["tool_call_id"] == stopped[0]["tool_call_id"], (progress, stopped)
        assert stopped[0]["result"] is not None and not stopped[0]["cancelled"], stopped
        spoken = [o for o in first["output"] if o["spoken"]]
        assert re.search(r"\d", spoken[0]["text"]), spoken
        assert spoken[0]["aggregated_by"] == "sentence", spoken
        for name in ("llmStarted", "ttsStarted", "ttsStopped", "botStartedSpeaking"):
            assert first["counts"].get(name, 0) >= 1, (name, first["counts"])
        # Metrics in Pipecat's shape: ttfb and processing per turn, characters per answer.
        kinds = {k for m in first["metrics"] for k in m}
        assert {"ttfb", "processing", "characters"} <= kinds, first["metrics"]
        ttfb = next(m["ttfb"][0] for m in first["metrics"] if "ttfb" in m)
        assert ttfb["processor"] == "local" and ttfb["value"] > 0, ttfb
        assert first["errors"] == [], first["errors"]

        # Typed text gets a spoken bot-output of its own.
        answered = len(spoken)
        await evaluate(page, "client.sendText('Hello there.')")
        await wait_pc(
            page,
            f"pc.output.filter(o => o.spoken).length > {answered}",
            TURN_TIMEOUT_MS,
            "a bot-output for sendText",
            server,
        )

        # A client request is answered (server-response), an unknown one refused (error-response).
        about = await evaluate(page, "client.sendClientRequest('about', {})")
        assert about["backend"] == "local" and about["version"] == ready["version"], about
        refused = await evaluate(
            page,
            "client.sendClientRequest('no-such-request', {}).then(() => 'resolved',"
            " (e) => e.data.error)",
        )
        assert "no-such-request" in refused, refused

        # disconnectBot(): the bot leaves, the client ends up disconnected, the call is gone.
        await evaluate(page, "client.disconnectBot()")
        await wait_pc(page, "pc.disconnected", 20_000, "the client's onDisconnected", server)
        assert (await evaluate(page, "pc.state")) == "disconnected"
        await server.wait_sessions(0)

        warnings = [c for c in console if c.startswith(("warning", "error"))]
        assert not [w for w in warnings if "version" in w.lower()], warnings
        assert not [w for w in warnings if "deprecated" in w.lower()], warnings
