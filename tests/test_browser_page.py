"""The page under a strict Content-Security-Policy, in real Debian Chromium.

Every page load here goes through a Playwright route that adds
``Content-Security-Policy: default-src 'self'`` to the page's document (whatever the server
itself sends), so the page is checked against the strictest policy a deployment may put in
front of it: no inline script or style, no eval, nothing from another origin. Chromium reports
every refusal as a ``securitypolicyviolation`` event, which an init script collects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_util import Server, chromium, make_speech_wav, require_browser, running_server
from tests.test_browser import BOT_LINE, CONNECT_TIMEOUT_MS, TURN_TIMEOUT_MS, USER_LINE

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CSP = "default-src 'self'"
SPOKEN = "Hello. What time is it?"

# Runs before the page's own scripts (and is not subject to the page's policy).
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_browser()
    return make_speech_wav(tmp_path_factory.mktemp("speech"), SPOKEN)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    require_browser()
    async with running_server("echo", tmp_path) as srv:
        yield srv


async def wait_js(page: Any, expression: str, timeout_ms: int, what: str, server: Server) -> None:
    """Polls ``expression`` with page.evaluate. Playwright's wait_for_function cannot be used
    here: it compiles its predicate with eval inside the page, which the policy refuses."""
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            while True:
                if await page.evaluate(expression):
                    return
                await asyncio.sleep(0.1)  # the test polls the browser's state, no audio path
    except TimeoutError:
        async with asyncio.timeout(10):
            snapshot = await page.evaluate(
                "() => ({state: vg.state, connected: vg.connected, errors: vg.errors,"
                " transcript: vg.transcript, events: vg.events.map(e => e.type)})"
            )
        raise AssertionError(
            f"timed out waiting for {what}\npage: {snapshot}\nserver log:\n{server.log_tail()}"
        ) from None


async def strict_page(ctx: Any, url: str) -> tuple[Any, list[str]]:
    """Opens ``url`` with the strict policy on its document; the page and its console log.

    The route is removed once the page has loaded: Playwright's interception sends every request
    through this process, which would delay the page's API requests against its peer
    connection's own traffic (a DELETE would then lose its race with the closing connection)."""
    page = ctx.pages[0] if ctx.pages else await ctx.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))

    async def with_csp(route: Any) -> None:
        response = await route.fetch()
        headers = {**response.headers, "content-security-policy": CSP}
        await route.fulfill(response=response, headers=headers)

    document = url.split("#")[0]
    async with asyncio.timeout(30):
        await page.add_init_script(WATCH_CSP)
        await page.route(document, with_csp)
        await page.goto(url, timeout=30_000)
        await page.unroute(document, with_csp)
    return page, console


async def assert_policy_held(page: Any, console: list[str]) -> None:
    """The policy was really in force, and the page never tripped it."""
    assert not [c for c in console if c.startswith("error")], console
    # An inline script added now must be refused (Playwright's own evaluate is exempt from the
    # page's policy, so the probe has to be a script element the page itself would run).
    async with asyncio.timeout(10):
        ran = await page.evaluate(
            """() => { const s = document.createElement("script");
                       s.textContent = "window.__inlineRan = true";
                       document.head.append(s); return window.__inlineRan === true; }"""
        )
        violations: list[str] = await page.evaluate("window.__csp")
    assert ran is False, "the test's Content-Security-Policy is not in force"
    probe = [v for v in violations if v.startswith("script-src-elem inline")]
    assert len(probe) == 1, violations
    assert [v for v in violations if v not in probe] == [], violations


async def test_spoken_call_under_strict_csp(server: Server, spoken_wav: Path) -> None:
    """The whole call (modules, stylesheet, icon, fetch, WebRTC, WebAudio) needs nothing the
    policy refuses."""
    async with chromium(spoken_wav) as ctx:
        page, console = await strict_page(ctx, f"{server.base}/?raw=1")
        assert (await page.text_content("#state", timeout=10_000)) == "idle"
        async with asyncio.timeout(10):
            styled = await page.evaluate(
                "getComputedStyle(document.querySelector('#connect')).borderRadius"
            )
        assert styled != "0px", "style.css did not apply"
        async with asyncio.timeout(10):
            await page.click("#connect", timeout=10_000)
        await wait_js(page, "vg.connected && vg.botReady", CONNECT_TIMEOUT_MS, "connect", server)
        await wait_js(
            page,
            f"document.querySelector({USER_LINE!r})?.textContent.trim()"
            f" && document.querySelector({BOT_LINE!r})?.textContent.trim()",
            TURN_TIMEOUT_MS,
            "a user and a bot transcript line",
            server,
        )
        await wait_js(page, "vg.state === 'listening'", TURN_TIMEOUT_MS, "end of bot turn", server)
        async with asyncio.timeout(10):
            await page.click("#hangup", timeout=10_000)
        await wait_js(page, "vg.lastHangupStatus === 204", 15_000, "DELETE answer", server)
        await server.wait_sessions(0)
        await assert_policy_held(page, console)
