"""Access tokens: the maths, the ``voicegate token`` command, and signaling behind them.

Missing, malformed, expired and forged tokens are refused with a JSON 401; a call's own
session_token is the only credential that can touch that call; the per-token call-length claim
is enforced; the open dev mode is loopback-only and says so; the secret never appears in a repr,
and AWS credentials from the server's environment never appear in anything a browser receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import structlog

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.cli import main
from voicegate.config import ConfigError, resolve
from voicegate.signaling import auth, jwt_access
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient

SECRET = "test-secret-0123456789abcdef"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- token maths ---------------------------------------------------------------------------------


def test_roundtrip_with_claims() -> None:
    token = auth.mint(SECRET, 60, subject="alice", max_call_seconds=90, now=1000)
    claims = auth.verify(SECRET, token, now=1010)
    assert claims == auth.Claims(exp=1060, iat=1000, sub="alice", mcs=90.0, pc=None)
    assert token.startswith("vg1.") and token.count(".") == 2
    assert SECRET not in token


def test_expired_token_is_refused() -> None:
    token = auth.mint(SECRET, 60, now=1000)
    auth.verify(SECRET, token, now=1059)
    for now in (1060, 5000):
        with pytest.raises(auth.AuthError) as err:
            auth.verify(SECRET, token, now=now)
        assert err.value.reason == "expired"


def _forgeries() -> list[str]:
    good = auth.mint(SECRET, 60)
    head, body, sig = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["exp"] += 10_000
    longer = _b64(json.dumps(payload).encode())
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    return [
        f"{head}.{longer}.{sig}",  # payload changed, old signature
        f"{head}.{body}.{flipped}",  # signature altered
        auth.mint("another-secret-0123456789", 60),  # signed with a different secret
        f"{head}.{body}.{sig[:10]}",  # truncated signature
        f"{head}.!!!!.{sig}",  # garbage payload: still a signature error, not a decode error
    ]


@pytest.mark.parametrize("token", _forgeries())
def test_forged_tokens_are_refused(token: str) -> None:
    with pytest.raises(auth.AuthError) as err:
        auth.verify(SECRET, token)
    assert err.value.reason == "forged"


def _signed(payload: Any) -> str:
    body = _b64(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    return f"vg1.{body}.{auth._signature(SECRET, f'vg1.{body}')}"


MALFORMED = [
    "",
    "abc",
    "vg1.abc",
    "vg2.abc.def",
    "vg1..sig",
    "vg1.a.b.c",
    "vg1.é.x",
    "vg1." + "a" * 3000 + ".x",
    _signed(b"not json"),
    _signed([1, 2]),
    _signed({"exp": "tomorrow"}),
    _signed({"exp": True}),
    _signed({"exp": 9999999999, "sub": 5}),
    _signed({"exp": 9999999999, "mcs": -1}),
    _signed({"exp": 9999999999, "mcs": "long"}),
    _signed({"exp": 9999999999, "pc": 1}),
    _signed({"iat": 5}),
]


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(auth.AuthError) as err:
        auth.verify(SECRET, token)
    assert err.value.reason in ("missing", "malformed")


def test_bearer_header_parsing() -> None:
    assert auth.bearer("Bearer abc") == "abc"
    assert auth.bearer("bearer  abc ") == "abc"
    for bad in ("abc", "Basic abc", "Bearer", "Bearer   "):
        with pytest.raises(auth.AuthError):
            auth.bearer(bad)
    with pytest.raises(auth.AuthError) as err:
        auth.bearer(None)
    assert err.value.reason == "missing"


def test_mint_checks_its_inputs() -> None:
    with pytest.raises(ValueError):
        auth.mint("short", 60)
    with pytest.raises(ValueError):
        auth.mint(SECRET, 0)
    with pytest.raises(ValueError):
        auth.mint(SECRET, 60, subject="x" * 500)
    with pytest.raises(ValueError):
        auth.mint(SECRET, 60, max_call_seconds=0)


# -- the token command and configuration ---------------------------------------------------------


def test_token_command_prints_one_token_alone() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "voicegate", "token", "--ttl", "120", "--subject", "bob"]
        + ["--max-call-seconds", "45", "--format", "vg1"],
        env={
            "VOICEGATE_AUTH_SECRET": SECRET,
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = run.stdout.splitlines()
    assert len(lines) == 1
    claims = auth.verify(SECRET, lines[0])
    assert claims.sub == "bob" and claims.mcs == 45.0
    assert 110 <= claims.exp - time.time() <= 121


def test_token_command_needs_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VOICEGATE_AUTH_SECRET", raising=False)
    assert main(["token"]) == 2
    assert main(["token", "--secret", "short"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "secret" in out.err
    assert main(["token", "--secret", SECRET, "--format", "vg1"]) == 0
    auth.verify(SECRET, capsys.readouterr().out.strip())


def test_exposed_host_needs_a_secret_and_the_secret_is_never_shown() -> None:
    with pytest.raises(ConfigError, match="auth-secret"):
        resolve(None, env={"VOICEGATE_HOST": "0.0.0.0"})
    with pytest.raises(ConfigError, match="at least 16"):
        resolve(None, env={"VOICEGATE_AUTH_SECRET": "short"})
    config = resolve(None, env={"VOICEGATE_HOST": "0.0.0.0", "VOICEGATE_AUTH_SECRET": SECRET})
    assert config.auth_secret == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config)
    with pytest.raises(ConfigError, match="origin"):
        resolve(None, env={"VOICEGATE_ALLOWED_ORIGINS": "example.com"})


async def test_open_dev_mode_is_announced() -> None:
    with structlog.testing.capture_logs() as logs:
        async with running_server(EchoBackend()):
            pass
        async with running_server(EchoBackend(), auth_secret=SECRET):
            pass
    assert [e["event"] for e in logs].count("open_dev_mode") == 1


# -- signaling behind tokens ---------------------------------------------------------------------


async def _error(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert isinstance(body.get("error"), str) and body["error"]
    return dict(body)


async def test_signaling_refuses_bad_tokens() -> None:
    expired = auth.mint(SECRET, 60, now=time.time() - 120)
    cases = [
        ({}, "missing"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed"),
        ({"Authorization": "Bearer nonsense"}, "malformed"),
        ({"Authorization": f"Bearer {expired}"}, "expired"),
        ({"Authorization": f"Bearer {_forgeries()[0]}"}, "forged"),
    ]
    body = {"sdp": "v=0\r\n", "type": "offer"}
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, app):
        async with aiohttp.ClientSession() as http:
            for headers, reason in cases:
                for method, path in (("POST", "/api/offer"), ("GET", "/api/ice-servers")):
                    async with http.request(method, url + path, json=body, headers=headers) as r:
                        assert r.status == 401, (headers, path)
                        err = await _error(r)
                        assert err["reason"] == reason and err["auth_required"] is True
                        assert r.headers["WWW-Authenticate"].startswith("Bearer")
            # Liveness, readiness and the page stay open.
            for path in ("/healthz", "/readyz", "/", "/static/app.js"):
                async with http.get(url + path) as r:
                    assert r.status == 200, path
            good = {"Authorization": f"Bearer {auth.mint(SECRET, 60)}"}
            async with http.get(f"{url}/api/ice-servers", headers=good) as r:
                assert r.status == 200
            async with http.post(f"{url}/api/offer", json=body, headers=good) as r:
                assert r.status == 400  # past the gate, refused for its content
        assert app[SESSIONS] == {}


async def test_a_token_cannot_touch_another_call() -> None:
    token = auth.mint(SECRET, 60, subject="alice")
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, app):
        a, b = CallClient(url, token=token), CallClient(url, token=token)
        try:
            async with asyncio.timeout(30):
                await a.connect()
                await b.connect()
                assert a.session_token and b.session_token
                assert a.session_token != b.session_token
                assert auth.verify(SECRET, a.session_token).pc == a.pc_id
                assert auth.verify(SECRET, a.session_token).sub == "alice"
                async with aiohttp.ClientSession() as http:

                    def bearer(t: str) -> dict[str, str]:
                        return {"Authorization": f"Bearer {t}"}

                    candidate = {
                        "pc_id": b.pc_id,
                        "candidates": [{"candidate": "", "sdp_mid": "0"}],
                    }
                    attempts: list[tuple[str, str, Any, str]] = [
                        ("DELETE", f"/api/sessions/{b.pc_id}", None, a.session_token),
                        ("DELETE", f"/api/sessions/{b.pc_id}", None, token),
                        ("DELETE", "/api/sessions/pc-unknown", None, a.session_token),
                        ("PATCH", "/api/offer", candidate, a.session_token),
                        ("PATCH", "/api/offer", candidate, token),
                        (
                            "POST",
                            "/api/offer",
                            {"sdp": "v=0\r\n", "type": "offer", "pc_id": b.pc_id},
                            a.session_token,
                        ),
                        (
                            "POST",
                            "/api/offer",
                            {"sdp": "v=0\r\n", "type": "offer", "pc_id": b.pc_id},
                            token,
                        ),
                        # A session token is no access token: it cannot start other calls.
                        (
                            "POST",
                            "/api/offer",
                            {"sdp": "v=0\r\n", "type": "offer"},
                            b.session_token,
                        ),
                    ]
                    for method, path, body, cred in attempts:
                        async with http.request(
                            method, url + path, json=body, headers=bearer(cred)
                        ) as r:
                            assert r.status == 403, (method, path)
                            assert "token" in (await _error(r))["error"]
                    assert set(app[SESSIONS]) == {a.pc_id, b.pc_id}
                    async with http.patch(
                        f"{url}/api/offer", json=candidate, headers=bearer(b.session_token)
                    ) as r:
                        assert r.status == 200
                assert await b.hangup() == 204
                assert await a.hangup() == 204
                assert app[SESSIONS] == {}
        finally:
            await a.close()
            await b.close()


async def test_a_call_restarts_with_its_own_session_token() -> None:
    """Reconnect after a network change under auth: the call's session_token is the
    credential, and the restarted call keeps that token (and so its expiry)."""
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, app):
        first = CallClient(url, token=auth.mint(SECRET, 60))
        second: CallClient | None = None
        try:
            async with asyncio.timeout(30):
                await first.connect()
                await first.wait_for("bot-ready", 10)
                second = CallClient(url, token=first.session_token)
                answer = await second.connect(restart_of=first.pc_id)
                assert answer["pc_id"] == first.pc_id
                assert answer["session_token"] == first.session_token
                await second.wait_for("bot-ready", 10)
                assert await second.hangup() == 204
                assert not app[SESSIONS]
        finally:
            await first.close()
            if second is not None:
                await second.close()


async def test_token_call_length_claim_ends_the_call() -> None:
    token = auth.mint(SECRET, 60, max_call_seconds=1.5)
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, app):
        client = CallClient(url, token=token)
        try:
            async with asyncio.timeout(20):
                await client.connect()
                assert auth.verify(SECRET, client.session_token or "").mcs == 1.5
                session = app[SESSIONS][client.pc_id]
                msg = await client.wait_for("error", 10)
                assert msg["data"]["kind"] == "max_duration" and msg["data"]["fatal"] is True
                await session.closed.wait()
                assert session.close_reason == "max-duration"
                assert not app[SESSIONS]
        finally:
            await client.close()


async def test_aws_credentials_never_reach_the_browser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AWS WebRTC sample ships keys in its bundle; voicegate must never hand them out, in
    any HTTP response or in any data-channel message."""
    key_id, secret_key = "AKIAVOICEGATETEST0001", "voicegate/secret+TESTKEY/0123456789abcdef"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "VOICEGATESESSIONTOKENTEST")
    needles = [key_id, secret_key, "VOICEGATESESSIONTOKENTEST", SECRET]
    seen: list[str] = []
    token = auth.mint(SECRET, 60)
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, _):
        client = CallClient(url, token=token)
        try:
            async with asyncio.timeout(30), aiohttp.ClientSession() as http:
                hdr = {"Authorization": f"Bearer {token}"}
                for method, path in [
                    ("GET", "/"),
                    ("GET", "/static/app.js"),
                    ("GET", "/static/index.html"),
                    ("GET", "/healthz"),
                    ("GET", "/readyz"),
                    ("GET", "/api/ice-servers"),
                    ("GET", "/metrics"),
                    ("POST", "/api/offer"),
                    ("GET", "/nope"),
                ]:
                    for headers in (hdr, {}):
                        async with http.request(method, url + path, headers=headers) as r:
                            seen.append(str(r.headers) + (await r.read()).decode("latin-1"))
                answer = await client.connect()
                seen.append(json.dumps(answer))
                await client.wait_for("bot-ready", 10)
                tone = (8000 * np.sin(np.arange(48000 * 0.3) * 0.04)).astype(np.int16)
                client.mic.play(tone)
                await client.wait_frames(10, 5)
                seen.extend(json.dumps(m) for m in client.messages)
                await client.hangup()
        finally:
            await client.close()
    assert len(seen) > 15
    for text in seen:
        for needle in needles:
            assert needle not in text


def test_the_documented_python_minting_snippet_works() -> None:
    """docs/security.md shows app backends how to mint tokens; that code must stay right."""
    import re

    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(snippets) == 2  # a JWT with PyJWT, then the vg1 format by hand
    minted = []
    for snippet in snippets:
        namespace: dict[str, Any] = {}
        exec(snippet, namespace)
        minted.append(namespace["voicegate_token"](SECRET, "user-42", ttl=300))
    jwt_token, vg1_token = minted
    claims = jwt_access.Keyring(SECRET, []).verify(jwt_token)
    assert claims.sub == "user-42" and claims.exp - int(time.time()) in range(295, 301)
    assert auth.verify(SECRET, vg1_token).sub == "user-42"


@pytest.mark.browser
@pytest.mark.timeout(180)
async def test_the_page_sends_its_token(tmp_path: Path) -> None:
    """Debian chromium, the real page: with ?token= the call connects and hangs up (204, so the
    session token was used); the token leaves the address bar; without one the 401 is explained."""
    from tests.support.browser import chromium, require_browser, wait_js
    from tests.support.browser import running_server as serve_process

    require_browser()
    env = {"VOICEGATE_AUTH_SECRET": SECRET}
    async with serve_process("echo", tmp_path, env=env) as server, chromium(None) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        async with asyncio.timeout(30):
            await page.goto(f"{server.base}/?raw=1&token={auth.mint(SECRET, 300)}")
            assert "token" not in page.url and "raw=1" in page.url
            await page.click("#connect", timeout=10_000)
        await wait_js(page, "vg.connected && vg.botReady", 30_000, "a connected call", server)
        async with asyncio.timeout(10):
            await page.evaluate("vg.hangup()")
        await wait_js(page, "vg.lastHangupStatus !== null", 15_000, "the DELETE answer", server)
        async with asyncio.timeout(10):
            assert await page.evaluate("vg.lastHangupStatus") == 204
            await page.goto(f"{server.base}/?raw=1")
            await page.click("#connect", timeout=10_000)
        await wait_js(page, "vg.errors.length > 0", 20_000, "an error message", server)
        async with asyncio.timeout(10):
            error = await page.text_content("#error", timeout=10_000)
        assert error is not None and "401" in error and "access token" in error, error
        await server.wait_sessions(0)


SPELLINGS = [
    "/api/ice-servers",
    "//api/ice-servers",
    "/x/../api/ice-servers",
    "/static/../api/ice-servers",
    "/%61pi/ice-servers",
    "/./api/ice-servers",
    "/api/./ice-servers",
    "/api%2Fice-servers",
    "/API/ice-servers",
    "/api/ice-servers/",
    "/api/ice-servers?token=x",
    "/healthz/../api/ice-servers",
]


async def test_no_path_spelling_slips_past_the_token_check() -> None:
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        for path in SPELLINGS:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                status = int((await reader.read()).split(b" ", 2)[1])
                writer.close()
                await writer.wait_closed()
            # 400: refused as a malformed path before any route is matched (one spelling per
            # resource); 401/404: matched, and the token check came first.
            assert status in (400, 401, 404), (path, status)
