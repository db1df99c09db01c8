"""The HTTP surface under attack: slow and numerous connections, TURN credentials that outlive
their token, leaky backend errors, page headers, secrets passed as files, open metrics."""

from __future__ import annotations

import asyncio
import html.parser
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from tests.support.browser import free_port
from tests.support.server import running_server
from voicegate.backends.base import AccessDenied, BackendStream
from voicegate.backends.echo import EchoBackend
from voicegate.config import ConfigError, resolve
from voicegate.signaling import auth
from voicegate.testing.client import CallClient

SECRET = "http-secret-0123456789abcdef"
TURN_SECRET = "turn-secret-0123456789"
REPO = Path(__file__).resolve().parents[2]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- finding 7: slow clients and connections per address --------------------------------------


async def _closed_after(port: int, chunks: list[bytes], gap: float) -> float:
    """Send ``chunks`` ``gap`` seconds apart; seconds until the server closed on us."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(65536), gap)
            except TimeoutError:
                continue
            assert not data.startswith(b"HTTP/1.1 2"), data[:200]
            return time.monotonic() - start
        data = await asyncio.wait_for(reader.read(65536), 30)
        assert not data.startswith(b"HTTP/1.1 2"), data[:200]
        return time.monotonic() - start
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - start
    finally:
        writer.close()


async def test_incomplete_requests_are_closed_after_the_request_timeout() -> None:
    async with running_server(EchoBackend(), request_timeout=1.0) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        # Headers that never end, sent at once or one byte every 0.3 s (slowloris).
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
        assert await _closed_after(port, [head], 0.5) < 5
        drip = [bytes([b]) for b in head + b"a" * 40]
        assert await _closed_after(port, drip, 0.3) < 5  # well before the 13 s of dripping
        # A body that never arrives: 408 (or closed) within the deadline, never a handler stuck.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n{"
        )
        answer = await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
        # A normal request on a fresh connection still works.
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as r:
            assert r.status == 200


async def test_connections_per_address_are_bounded() -> None:
    async with running_server(EchoBackend(), max_connections_per_ip=4) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answer = await asyncio.wait_for(reader.read(), 5)  # refused and closed at once
            writer.close()
            assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
            assert b"connection_limit" in answer
            held.pop()[1].close()
            await asyncio.sleep(0.2)  # let the server see the close; no audio path here
            async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as r:
                assert r.status == 200
        finally:
            for _, w in held:
                w.close()


# -- finding 5: /api/ice-servers is rate-limited; TURN credentials die with the token -----------


async def test_ice_servers_are_rate_limited() -> None:
    async with running_server(EchoBackend(), offer_rate=1, offer_burst=3) as (url, _):
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(4):
                async with http.get(f"{url}/api/ice-servers") as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        assert int(r.headers["Retry-After"]) >= 1
                        assert (await r.json())["reason"] == "rate_limited"
            assert statuses == [200, 200, 200, 429]


async def test_turn_credentials_carry_the_subject_and_expire_with_the_token() -> None:
    server = running_server(
        EchoBackend(),
        auth_secret=SECRET,
        turn_urls=("turn:127.0.0.1:3478",),
        turn_secret=TURN_SECRET,
        turn_ttl=3600,
    )
    token = auth.mint(SECRET, 120, subject="alice")
    expires = auth.verify(SECRET, token).exp
    async with server as (url, _), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/ice-servers", headers=bearer(token)) as r:
            entry = (await r.json())["iceServers"][0]
        expiry, _, name = entry["username"].partition(":")
        assert name == "alice" and time.time() < int(expiry) <= expires
        call = CallClient(url, token=token)
        try:
            answer = await call.connect()
            session_exp = auth.verify(SECRET, answer["session_token"]).exp
            expiry, _, name = answer["iceServers"][0]["username"].partition(":")
            assert name == "alice" and int(expiry) <= session_exp
        finally:
            await call.close()


# -- finding 10: the caller gets a kind, the log gets the service's words ---------------------


class _Refusing:
    name = "refusing"
    input_rate = 16000
    TEXT = (
        "User: arn:aws:iam::123456789012:user/voicegate is not authorized to perform: "
        "bedrock:InvokeModelWithBidirectionalStream on resource: arn:aws:bedrock:us-east-1::"
        "foundation-model/amazon.nova-2-sonic-v1:0"
    )

    async def open(self) -> BackendStream:
        raise AccessDenied(self.TEXT)

    async def aclose(self) -> None:
        pass


async def test_backend_errors_reach_the_caller_only_as_a_kind() -> None:
    with structlog.testing.capture_logs() as logs:
        async with running_server(_Refusing()) as (url, _):
            call = CallClient(url)
            try:
                with pytest.raises(RuntimeError, match="502") as err:
                    await call.connect()
            finally:
                await call.close()
    text = str(err.value)
    assert "'kind': 'access_denied'" in text and "refused the request" in text
    for secret in ("123456789012", "arn:", "InvokeModel", "nova-2-sonic"):
        assert secret not in text
    logged = [e for e in logs if e["event"] == "backend_refused_call"]
    assert logged and logged[0]["error"] == _Refusing.TEXT


# -- finding 9: page headers ------------------------------------------------------------------


class _Inline(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag} {n}=" for n in names if n == "style" or n.startswith("on")]


def test_the_page_has_no_inline_script_or_style() -> None:
    for name in ("index.html",):
        parser = _Inline()
        parser.feed((REPO / "web" / name).read_text())
        assert parser.found == [], (name, parser.found)


async def test_pages_carry_referrer_policy_and_a_strict_csp() -> None:
    async with running_server(EchoBackend()) as (url, _), aiohttp.ClientSession() as http:
        for path in ("/", "/static/app.js", "/static/style.css", "/static/nope.js"):
            async with http.get(url + path) as r:
                assert r.headers["Referrer-Policy"] == "no-referrer", path
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                csp = r.headers["Content-Security-Policy"]
                for directive in (
                    "default-src 'self'",
                    "script-src 'self'",
                    "connect-src 'self'",
                    "media-src 'self' blob:",
                    "frame-ancestors 'none'",
                ):
                    assert directive in csp, (path, csp)
                assert "unsafe" not in csp
        async with http.get(f"{url}/api/ice-servers") as r:
            assert r.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_the_page_works_under_its_csp(tmp_path: Path) -> None:
    """Debian chromium enforcing the policy: the call connects, no violation is reported."""
    from tests.support.browser import chromium, require_browser
    from tests.support.browser import running_server as serve_process

    require_browser()
    async with serve_process("echo", tmp_path) as server, chromium(None, bypass_csp=False) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        async with asyncio.timeout(60):
            await page.goto(f"{server.base}/?raw=1")
            await page.click("#connect")
            state: dict[str, Any] = {}
            while not (state.get("connected") and state.get("ready")):
                # page.evaluate is not subject to the page's CSP (wait_for_function is).
                state = await page.evaluate(
                    "() => ({connected: vg.connected, ready: vg.botReady, errors: vg.errors})"
                )
                assert not state["errors"], state
                await asyncio.sleep(0.1)
            await page.click("#hangup")
        await server.wait_sessions(0)
    violations = [c for c in console if "Content Security Policy" in c or "Refused to" in c]
    assert violations == [], violations


# -- finding 12: secrets from files, protected metrics -------------------------------------


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    auth_file, turn_file = tmp_path / "auth", tmp_path / "turn"
    auth_file.write_text(SECRET + "\n")
    turn_file.write_text(TURN_SECRET)
    env = {
        "VOICEGATE_AUTH_SECRET_FILE": str(auth_file),
        "VOICEGATE_TURN_SECRET_FILE": str(turn_file),
        "VOICEGATE_TURN_URLS": "turn:127.0.0.1:3478",
    }
    config = resolve(None, env=env)
    assert config.auth_secret == SECRET and config.turn_secret == TURN_SECRET
    assert SECRET not in repr(config) and TURN_SECRET not in repr(config)
    for bad, needle in (
        ({"VOICEGATE_AUTH_SECRET": SECRET}, "not both"),
        ({"VOICEGATE_AUTH_SECRET_FILE": str(tmp_path / "missing")}, "cannot be read"),
    ):
        with pytest.raises(ConfigError, match=needle):
            resolve(None, env={**env, **bad})


async def test_metrics_behind_a_token_and_on_their_own_listener() -> None:
    token = "metrics-token-0123456789"
    async with running_server(EchoBackend(), metrics_token=token) as (url, _):
        async with aiohttp.ClientSession() as http:
            for headers in ({}, bearer("wrong-token-0123456789"), {"Authorization": token}):
                async with http.get(f"{url}/metrics", headers=headers) as r:
                    assert r.status == 401 and (await r.json())["reason"] == "metrics_token"
            async with http.get(f"{url}/metrics", headers=bearer(token)) as r:
                assert r.status == 200 and "voicegate_calls_active" in await r.text()
    port = free_port()
    async with running_server(EchoBackend(), metrics_port=port) as (url, _):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as r:
                assert r.status == 404 and "metrics-port" in (await r.json())["error"]
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 200 and "voicegate_calls_active" in await r.text()
            async with http.get(f"http://127.0.0.1:{port}/api/ice-servers") as r:
                assert r.status == 404  # the metrics listener serves nothing else
