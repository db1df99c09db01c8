"""The page's own security and its newer features, in real Debian Chromium.

Every page load here goes through a Playwright route that adds
``Content-Security-Policy: default-src 'self'`` to the page's document (whatever the server
itself sends), so the page is checked against the strictest policy a deployment may put in
front of it: no inline script or style, no eval, nothing from another origin. Chromium reports
every refusal as a ``securitypolicyviolation`` event, which an init script collects.

Under that policy: a whole spoken call; the access token taken from the URL fragment and never
seen in any request's URL or Referer; typed text leaving on the data channel as RTVI
``send-text``; and a server's request to move (``server-message`` ``reconnect``) answered by the
page's automatic reconnect on the same ``pc_id``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    BOT_LINE,
    CONNECT_TIMEOUT_MS,
    TURN_TIMEOUT_MS,
    USER_LINE,
    Server,
    chromium,
    make_speech_wav,
    require_browser,
    running_server,
)
from tests.support.strict_page import (
    assert_policy_held,
    connected,
    hang_up,
    strict_page,
    wait_js,
)
from voicegate.signaling import auth

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SPOKEN = "Hello, what time is it?"
AUTH_SECRET = "browser-page-auth-secret-5Tq9w"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_browser()
    return make_speech_wav(tmp_path_factory.mktemp("speech"), SPOKEN)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    require_browser()
    async with running_server("echo", tmp_path) as srv:
        yield srv


async def test_spoken_call_under_strict_csp(server: Server, spoken_wav: Path) -> None:
    """The whole call (modules, stylesheet, icon, fetch, WebRTC, WebAudio) needs nothing the
    policy refuses."""
    async with chromium(spoken_wav, bypass_csp=False) as ctx:
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


@pytest.mark.parametrize("where", ["fragment", "query"])
async def test_token_never_travels_in_a_url_or_referer(
    tmp_path: Path, spoken_wav: Path, where: str
) -> None:
    """``#token=`` authorises the call while no request carries the token in its URL or Referer.

    The older ``?token=`` still works but has been sent with the page request itself (that one
    request is the documented cost); every request after it is clean, and the address bar loses
    the token either way.
    """
    require_browser()
    token = auth.mint(AUTH_SECRET, 300, subject="page-test")
    env = {"VOICEGATE_AUTH_SECRET": AUTH_SECRET}
    async with (
        running_server("echo", tmp_path, env=env) as server,
        chromium(spoken_wav, bypass_csp=False) as ctx,
    ):
        seen: list[tuple[str, str, dict[str, str]]] = []
        pending: list[asyncio.Task[None]] = []

        async def record(request: Any) -> None:
            seen.append((request.method, request.url, await request.all_headers()))

        ctx.on("request", lambda r: pending.append(asyncio.ensure_future(record(r))))
        url = f"{server.base}/?raw=1#token={token}"
        if where == "query":
            url = f"{server.base}/?raw=1&token={token}"
        page, console = await strict_page(ctx, url)
        async with asyncio.timeout(10):
            address = await page.evaluate("location.href")
        assert token not in address and "token" not in address, address
        assert address == f"{server.base}/?raw=1", address
        await connected(page, server)
        await hang_up(page, server)
        await assert_policy_held(page, console)
        async with asyncio.timeout(10):
            await asyncio.gather(*pending)

    api = [(m, u, h) for m, u, h in seen if "/api/" in u]
    assert {m for m, _, _ in api} >= {"GET", "POST", "DELETE"}, [(m, u) for m, u, _ in seen]
    # The access token went only where it belongs: the Authorization header of API requests.
    assert any(h.get("authorization") == f"Bearer {token}" for _, _, h in api), api
    first, *rest = seen
    assert first[1].startswith(f"{server.base}/?raw=1"), first[1]
    if where == "query":
        assert token in first[1]  # the page request itself: why the fragment is the way
    else:
        rest = seen
    for method, request_url, headers in rest:
        assert token not in request_url, (method, request_url)
        assert token not in headers.get("referer", ""), (method, request_url, headers)


async def test_typed_text_goes_out_as_rtvi_send_text(server: Server, spoken_wav: Path) -> None:
    """Enter in the text box sends ``send-text`` on the data channel, with exactly the RTVI
    shape, and the text appears in the transcript as the user's."""
    text = "What is the weather like on Mars?"
    async with chromium(spoken_wav, bypass_csp=False) as ctx:
        page, console = await strict_page(ctx, f"{server.base}/?raw=1")
        assert await page.is_disabled("#say-text", timeout=10_000)
        await connected(page, server)
        await wait_js(page, "!document.querySelector('#say-text').disabled", 10_000, "box", server)
        async with asyncio.timeout(10):
            before = await page.evaluate(DC_MESSAGES_SENT)
            await page.fill("#say-text", f"  {text} ", timeout=10_000)
            await page.press("#say-text", "Enter", timeout=10_000)
        await wait_js(
            page, "window.__sent.some(s => s.includes('send-text'))", 10_000, "send", server
        )
        async with asyncio.timeout(10):
            sent = [json.loads(s) for s in await page.evaluate("window.__sent")]
            box = await page.input_value("#say-text", timeout=10_000)
            lines = await page.evaluate("vg.transcript.map(e => [e.role, e.text, e.final])")
        messages = [m for m in sent if m["type"] == "send-text"]
        assert len(messages) == 1, sent
        message = messages[0]
        assert set(message) == {"label", "type", "id", "data"}, message
        assert message["label"] == "rtvi-ai" and UUID.fullmatch(message["id"]), message
        assert message["data"] == {
            "content": text,
            "options": {"run_immediately": True, "audio_response": True},
        }, message
        assert box == ""
        assert ["user", text, True] in lines, lines
        # It left the browser: the channel's own statistics count one more message sent.
        await wait_js(
            page, f"({DC_MESSAGES_SENT})().then(n => n > {before})", 10_000, "stats", server
        )
        # An empty box sends nothing.
        async with asyncio.timeout(10):
            await page.press("#say-text", "Enter", timeout=10_000)
            assert await page.evaluate("window.__sent.length") == len(sent)
        await hang_up(page, server)
        assert await page.is_disabled("#say-text", timeout=10_000)
        await assert_policy_held(page, console)


# The last peer connection's data-channel messagesSent (an async function expression).
DC_MESSAGES_SENT = """async () => {
  const report = await window.__pcs[window.__pcs.length - 1].getStats();
  let n = 0;
  report.forEach((s) => { if (s.type === "data-channel") n += s.messagesSent; });
  return n;
}"""


async def test_server_request_to_move_reconnects_the_same_call(
    server: Server, spoken_wav: Path
) -> None:
    """``server-message`` ``{"type": "reconnect", "reason": "drain"}``: the page re-offers with
    ``restart_pc`` on the same ``pc_id`` while its connection is still healthy; the server moves
    the call onto the new connection (one session all along), the old connection is closed.

    The message is fed through ``vg.receive``, the data channel's own handler, because the
    server only sends it while it drains."""
    move: dict[str, Any] = {"label": "rtvi-ai", "type": "server-message", "id": "m1"}
    move["data"] = {"type": "reconnect", "reason": "drain"}
    async with chromium(spoken_wav, bypass_csp=False) as ctx:
        page, console = await strict_page(ctx, f"{server.base}/?raw=1")
        await connected(page, server)
        async with asyncio.timeout(10):
            pc_id = await page.evaluate("vg.pcId")
            await page.evaluate("raw => vg.receive(raw)", json.dumps(move))
        await wait_js(
            page,
            "vg.reconnects === 1 && vg.connected && vg.state === 'listening'"
            " && window.__pcs.length === 2 && window.__pcs[1].connectionState === 'connected'",
            CONNECT_TIMEOUT_MS,
            "the move to a new connection",
            server,
        )
        # The new data channel said client-ready again and the server answered on it.
        await wait_js(
            page, "vg.events.filter(e => e.type === 'bot-ready').length === 2", 10_000, "", server
        )
        async with asyncio.timeout(10):
            state = await page.evaluate(
                "() => ({pcId: vg.pcId, moves: vg.moveRequests, errors: vg.errors,"
                " old: window.__pcs[0].connectionState,"
                " readies: window.__sent.filter(s => s.includes('client-ready')).length})"
            )
        assert state == {
            "pcId": pc_id,
            "moves": 1,
            "errors": [],
            "old": "closed",
            "readies": 2,
        }, state
        assert await server.sessions() == 1
        await hang_up(page, server)
        await assert_policy_held(page, console)
