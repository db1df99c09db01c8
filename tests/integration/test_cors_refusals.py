"""Cross-origin refusals a web developer can understand: from an allowed origin every JSON
refusal (4xx included) carries ``Access-Control-Allow-Origin``, so the page can read the reason;
a refused origin gets the reason in its JSON body (browsers hide it from the page) and the
server logs a warning naming the origin and ``--allowed-origin``. Real HTTP requests with
``Origin`` headers against the real app; Chromium's view is tests/browser/test_browser_page_ux.py.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import structlog
from aiohttp import ClientSession

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.signaling import auth

APP = "https://app.example.com"
SECRET = "cors-refusal-secret-0123456789abcdef"
BAD_OFFER = {"sdp": "v=0", "type": "offer"}


async def _status_and_cors(
    http: ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, str | None, Any]:
    async with http.request(method, url, **kw) as r:
        body = await r.json()
        return r.status, r.headers.get("Access-Control-Allow-Origin"), body


async def test_refusals_to_an_allowed_origin_are_readable() -> None:
    token = auth.mint(SECRET, 300, subject="cors-test")
    server = running_server(
        EchoBackend(), allowed_origins=(APP,), auth_secret=SECRET, max_body_bytes=4096
    )
    async with server as (url, _), aiohttp.ClientSession() as http:
        origin = {"Origin": APP}
        bearer = {**origin, "Authorization": f"Bearer {token}"}
        cases = [
            # no token on a server that needs one
            ("GET", f"{url}/api/ice-servers", {"headers": origin}, 401),
            # an access token touching a call it does not hold
            ("DELETE", f"{url}/api/sessions/pc-nope", {"headers": bearer}, 403),
            ("POST", f"{url}/api/offer", {"headers": bearer, "json": BAD_OFFER}, 400),
            ("GET", f"{url}/api/nope", {"headers": bearer}, 404),
            ("PUT", f"{url}/api/offer", {"headers": bearer}, 405),
            ("POST", f"{url}/api/offer", {"headers": bearer, "json": {"sdp": "x" * 9000}}, 413),
        ]
        for method, target, kw, expected in cases:
            status, allow, body = await _status_and_cors(http, method, target, **kw)
            assert (status, allow) == (expected, APP), (method, target, status, body)
            assert isinstance(body.get("error"), str) and body["error"], body


async def test_a_refused_origin_is_told_why_and_logged() -> None:
    evil = "https://evil.example"
    async with running_server(EchoBackend(), allowed_origins=(APP,)) as (url, _):
        async with aiohttp.ClientSession() as http:
            with structlog.testing.capture_logs() as logs:
                status, allow, body = await _status_and_cors(
                    http, "POST", f"{url}/api/offer", headers={"Origin": evil}, json=BAD_OFFER
                )
                async with http.options(
                    f"{url}/api/offer",
                    headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
                ) as r:
                    preflight = (r.status, r.headers.get("Access-Control-Allow-Origin"))
    assert (status, allow) == (403, None)  # the origin is trusted with no answer
    assert preflight == (403, None)
    assert body["reason"] == "origin_not_allowed" and body["origin"] == evil, body
    assert "--allowed-origin" in body["error"] and evil in body["error"], body
    warned = [e for e in logs if e["event"] == "cross_origin_refused"]
    assert len(warned) == 2, logs
    for entry in warned:
        assert entry["log_level"] == "warning"
        assert entry["origin"] == evil and "--allowed-origin" in entry["fix"], entry
