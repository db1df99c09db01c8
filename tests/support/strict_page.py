"""The page under the strictest policy a deployment may put in front of it, for the browser
tests: ``Content-Security-Policy: default-src 'self'`` added to the page's document by a
Playwright route, every refusal collected from ``securitypolicyviolation`` events, every peer
connection and data-channel string kept for the test, and waits that work without eval.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.browser import CONNECT_TIMEOUT_MS, Server

__all__ = [
    "CSP",
    "assert_policy_held",
    "connected",
    "hang_up",
    "strict_page",
    "wait_js",
]

CSP = "default-src 'self'"
# Runs before the page's own scripts (and is not subject to the page's policy).
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""

# Keeps every peer connection the page makes and every string it sends on a data channel (the
# real send still runs: a closed channel still throws).
INSTRUMENT = """
window.__pcs = [];
window.__sent = [];
const NativePC = window.RTCPeerConnection;
window.RTCPeerConnection = class extends NativePC {
  constructor(...args) { super(...args); window.__pcs.push(this); }
};
const nativeSend = RTCDataChannel.prototype.send;
RTCDataChannel.prototype.send = function (data) {
  nativeSend.call(this, data);
  window.__sent.push(String(data));
};
"""


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
        await page.add_init_script(WATCH_CSP + INSTRUMENT)
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


async def connected(page: Any, server: Server) -> None:
    async with asyncio.timeout(10):
        await page.click("#connect", timeout=10_000)
    await wait_js(page, "vg.connected && vg.botReady", CONNECT_TIMEOUT_MS, "connect", server)


async def hang_up(page: Any, server: Server) -> None:
    async with asyncio.timeout(10):
        await page.click("#hangup", timeout=10_000)
    await wait_js(page, "vg.lastHangupStatus === 204", 15_000, "DELETE answer", server)
    await server.wait_sessions(0)
