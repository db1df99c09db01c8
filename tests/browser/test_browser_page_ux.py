"""The page explains itself, in real Debian Chromium at phone (390 px) and desktop (1280 px)
width, under the strict policy of tests/support/strict_page.py. Screenshots of each state go to the
test's directory, and also to ``$VOICEGATE_TEST_ARTIFACTS`` when set (CI keeps that folder).

Checked: who answers (backend, agent, abilities) is on the page; the "Press Connect" hint goes
while a call runs; Mute disables the microphone track the peer connection sends; each call
gets a separator with its time in the transcript; a new call starts with an empty debug panel
and no old error; the server's RTP samples fold into one updating line of the event log;
nothing runs off the side and the text box's placeholder fits; the error of a drained server
goes once the server is back; a reconnect that lands on a fresh conversation (the server was
killed and restarted) says so; a page on another origin reads the server's CORS refusals.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.browser import (
    Server,
    chromium,
    free_port,
    make_speech_wav,
    require_browser,
    running_server,
)
from tests.support.strict_page import connected, hang_up, strict_page, wait_js

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

WIDTHS = ((390, 844), (1280, 900))


@pytest.fixture(scope="module")
def hello_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_browser()
    return make_speech_wav(tmp_path_factory.mktemp("speech"), "Hello there.")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    require_browser()
    async with running_server("echo", tmp_path) as srv:
        yield srv


def _message(type_: str, data: dict[str, Any]) -> str:
    return json.dumps({"label": "rtvi-ai", "type": type_, "id": "t1", "data": data})


RTP = _message("server-message", {"kind": "rtp-stats", "inbound_jitter_s": 0.004, "rtt_s": 0.01})
LATENCY = _message("server-message", {"kind": "turn-latency", "total_ms": 321})

# The placeholder's rendered width against the box's content width, in the box's own font.
PLACEHOLDER_FITS = """() => {
  const box = document.querySelector('#say-text');
  const cs = getComputedStyle(box);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = `${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
  const room = box.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  return ctx.measureText(box.placeholder).width <= room;
}"""

SENDER_TRACK = """() => {
  const pc = window.__pcs[window.__pcs.length - 1];
  const sender = pc.getSenders().find(s => s.track && s.track.kind === 'audio');
  return sender ? sender.track.enabled : null;
}"""


async def _no_overflow(page: Any, width: int) -> None:
    async with asyncio.timeout(10):
        scroll = await page.evaluate("document.documentElement.scrollWidth")
        fits = await page.evaluate(PLACEHOLDER_FITS)
    assert scroll <= width, (width, scroll)
    assert fits, f"the text box's placeholder is cut at {width} px"


async def _shot(page: Any, path: Path) -> None:
    async with asyncio.timeout(30):
        await page.screenshot(path=str(path), full_page=True)
    await asyncio.to_thread(_keep, path)


def _keep(path: Path) -> None:
    keep = os.environ.get("VOICEGATE_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def _shots(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("page-*.png"))


async def test_page_explains_itself_at_phone_and_desktop_width(
    server: Server, hello_wav: Path, tmp_path: Path
) -> None:
    async with chromium(hello_wav, bypass_csp=False) as ctx:
        for width, height in WIDTHS:
            page, _ = await strict_page(ctx, f"{server.base}/?raw=1")
            async with asyncio.timeout(10):
                await page.set_viewport_size({"width": width, "height": height})
            await wait_js(
                page,
                "document.querySelector('#agent-summary').textContent.includes('echo')",
                10_000,
                "the backend named on the page",
                server,
            )
            async with asyncio.timeout(10):
                assert await page.is_visible("#hint")
                assert await page.is_disabled("#mute")
            await _no_overflow(page, width)
            await _shot(page, tmp_path / f"page-idle-{width}.png")

            # First call: an old error and a turn latency that must not outlive it.
            await connected(page, server)
            async with asyncio.timeout(10):
                assert not await page.is_visible("#hint")
                await page.evaluate("raw => vg.receive(raw)", LATENCY)
                await page.evaluate(
                    "raw => vg.receive(raw)", _message("error", {"message": "a passing problem"})
                )
                assert await page.is_visible("#error")
                for _ in range(3):
                    await page.evaluate("raw => vg.receive(raw)", RTP)
                rows = await page.locator("#events li", has_text="rtp-stats").count()
                folded = await page.text_content("#events-stats")
            assert rows == 0
            assert folded is not None and "3 samples" in folded, folded

            # Mute: the track the connection sends is disabled, and the button says so.
            async with asyncio.timeout(10):
                assert await page.evaluate(SENDER_TRACK) is True
                await page.click("#mute")
                muted = await page.evaluate(SENDER_TRACK)
                pressed = await page.get_attribute("#mute", "aria-pressed")
                label = await page.text_content("#mute")
                state = await page.text_content("#state")
            assert (muted, pressed, label) == (False, "true", "Unmute"), (muted, pressed, label)
            await _shot(page, tmp_path / f"page-muted-{width}.png")
            async with asyncio.timeout(10):
                await page.click("#mute")
                assert await page.evaluate(SENDER_TRACK) is True
                assert await page.get_attribute("#mute", "aria-pressed") == "false"
            assert state is not None
            await hang_up(page, server)
            async with asyncio.timeout(10):
                assert await page.is_visible("#hint")
                assert await page.is_disabled("#mute")

            # Second call: its own separator, no old error, an empty debug panel.
            await connected(page, server)
            async with asyncio.timeout(10):
                separators = await page.locator("#transcript .separator").all_text_contents()
                latency = await page.text_content("#stat-latency")
                error_shown = await page.is_visible("#error")
                session = await page.text_content("#stat-session")
                pc_id = await page.evaluate("vg.pcId")
                folded_now = await page.is_visible("#events-stats")
            assert [s.split(" · ")[0] for s in separators] == ["Call 1", "Call 2"], separators
            assert all(" · " in s for s in separators), separators
            assert latency == "–" and not error_shown and not folded_now
            assert session == pc_id
            await _no_overflow(page, width)
            await _shot(page, tmp_path / f"page-call-{width}.png")
            await hang_up(page, server)
            async with asyncio.timeout(10):
                await page.close()
    assert await asyncio.to_thread(_shots, tmp_path) == sorted(
        f"page-{what}-{w}.png" for what in ("idle", "muted", "call") for w, _ in WIDTHS
    )


async def test_a_drained_servers_error_goes_once_it_is_back(
    tmp_path: Path, hello_wav: Path
) -> None:
    """SIGTERM with a call up: the drain ends the call with "shutting down"; the red error stays
    while the server is away and goes (with a note) once a server answers again on that port."""
    require_browser()
    env = {"VOICEGATE_DRAIN_TIMEOUT": "1"}
    async with running_server("echo", tmp_path, env=env) as server:
        async with chromium(hello_wav, bypass_csp=False) as ctx:
            page, _ = await strict_page(ctx, f"{server.base}/?raw=1")
            await connected(page, server)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            await wait_js(
                page,
                "vg.state === 'idle' && vg.errors.some(e => e.includes('shutting down'))",
                30_000,
                "the drain's error",
                server,
            )
            async with asyncio.timeout(30):
                await asyncio.to_thread(server.proc.wait)
                assert await page.is_visible("#error")
                await server.start()  # the same port again
            await wait_js(
                page,
                "document.querySelector('#error').hidden"
                " && vg.notices.some(n => n.includes('back'))",
                60_000,
                "the error cleared once the server is back",
                server,
            )
            await _shot(page, tmp_path / "page-server-back.png")


async def test_a_reconnect_onto_a_fresh_conversation_says_so(
    tmp_path: Path, hello_wav: Path
) -> None:
    """The server is killed (no drain) and started again: the page re-offers the same pc_id,
    the new server starts afresh (``resumed: false``) and the page tells the user."""
    require_browser()
    async with running_server("echo", tmp_path) as server:
        async with chromium(hello_wav, bypass_csp=False) as ctx:
            page, _ = await strict_page(ctx, f"{server.base}/?raw=1")
            await connected(page, server)
            assert server.proc is not None
            server.proc.kill()
            async with asyncio.timeout(30):
                await asyncio.to_thread(server.proc.wait)
                await server.start()
            await wait_js(
                page,
                "vg.reconnects === 1 && vg.resumed === false && vg.connected",
                90_000,
                "a reconnect onto the restarted server",
                server,
            )
            async with asyncio.timeout(10):
                notice = await page.text_content("#notice")
                separators = await page.locator("#transcript .separator").all_text_contents()
            assert notice is not None and "new conversation" in notice, notice
            assert separators[-1].startswith("New conversation"), separators
            await _shot(page, tmp_path / "page-new-conversation.png")
            await hang_up(page, server)


async def _other_origin() -> tuple[web.AppRunner, int]:
    """A second loopback site: a blank page on another port, i.e. another origin."""
    app = web.Application()

    async def blank(_: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>app</title>", content_type="text/html")

    app.router.add_get("/", blank)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


FETCH = """async (url) => {
  try {
    const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                body: JSON.stringify({sdp: 'v=0', type: 'offer'})});
    return {status: r.status, body: await r.json()};
  } catch (e) { return {thrown: String(e)}; }
}"""


async def test_a_page_on_another_origin_reads_the_refusal(tmp_path: Path) -> None:
    """Allowed origin (127.0.0.1 on another port): the 400's JSON reason is readable from
    JavaScript. Refused origin (localhost on that port): the browser hides everything ("Failed
    to fetch"), and the server's log names the origin and --allowed-origin."""
    require_browser()
    runner, port = await _other_origin()
    try:
        allowed = f"http://127.0.0.1:{port}"
        args = ["--allowed-origin", allowed]
        async with running_server("echo", tmp_path, args) as server, chromium(None) as ctx:
            page = await ctx.new_page()
            async with asyncio.timeout(30):
                await page.goto(f"{allowed}/")
                ok = await page.evaluate(FETCH, f"{server.base}/api/offer")
                await page.goto(f"http://localhost:{port}/")
                refused = await page.evaluate(FETCH, f"{server.base}/api/offer")
            assert ok["status"] == 400 and isinstance(ok["body"]["error"], str), ok
            assert "thrown" in refused and "fetch" in refused["thrown"].lower(), refused
            log = server.log_tail(20_000)
            assert "cross_origin_refused" in log and f"http://localhost:{port}" in log, log
            assert "--allowed-origin" in log
    finally:
        await runner.cleanup()


AGENTS = """
default_agent = "sales"

[agents.sales]
description = "Plans and prices"

[agents.support]
description = "Order help"
voice = "tiffany"
tools = ["clock"]
knowledge = ["handbook"]

[tools.clock]
description = "Tell the time anywhere."
python = "voicegate.conversation.tools:get_current_time"

[knowledge.handbook]
path = "kb/"
"""


async def test_the_agent_chooser_sends_the_agent(tmp_path: Path, hello_wav: Path) -> None:
    """``#agent=support`` preselects that agent, its abilities are listed, and its offer names
    it; choosing another agent rewrites the fragment and the next offer names that one."""
    require_browser()
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "refunds.md").write_text("Refunds take five days.\n")
    (tmp_path / "agents.toml").write_text(AGENTS)
    args = ["--agents", str(tmp_path / "agents.toml")]
    async with (
        running_server("echo", tmp_path, args) as server,
        chromium(hello_wav, bypass_csp=False) as ctx,
    ):
        offers: list[Any] = []
        ctx.on(
            "request",
            lambda r: (
                offers.append(r.post_data_json)
                if r.method == "POST" and r.url.endswith("/api/offer")
                else None
            ),
        )
        page, console = await strict_page(ctx, f"{server.base}/?raw=1#agent=support")
        async with asyncio.timeout(10):
            await page.set_viewport_size({"width": 390, "height": 844})
        await wait_js(page, "vg.agents !== null", 10_000, "the agents list", server)
        async with asyncio.timeout(10):
            chosen = await page.input_value("#agent")
            summary = await page.text_content("#agent-summary")
            abilities = await page.locator("#agent-abilities li").all_text_contents()
            options = await page.locator("#agent option").count()
        assert chosen == "support" and options == 2, (chosen, options)
        assert summary is not None and "Order help" in summary and "echo" in summary, summary
        assert any("Tell the time" in a for a in abilities), abilities
        assert any("handbook" in a for a in abilities), abilities
        await _no_overflow(page, 390)
        await _shot(page, tmp_path / "page-agents-390.png")
        await connected(page, server)
        async with asyncio.timeout(10):
            assert await page.is_disabled("#agent")  # fixed for the call
        await hang_up(page, server)
        async with asyncio.timeout(10):
            await page.select_option("#agent", "sales")
            address = await page.evaluate("location.hash")
        assert address == "#agent=sales", address
        await connected(page, server)
        await hang_up(page, server)
        assert [o.get("agent") for o in offers] == ["support", "sales"], offers
        assert not [c for c in console if c.startswith("error")], console
