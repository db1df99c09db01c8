"""Limits with clear JSON errors: the per-address offer rate limit (429 + Retry-After, bounded
memory), CORS (same origin by default, configurable allow list), readiness at capacity, and the
idle timeout that ends a call nobody speaks in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.config import ConfigError, resolve
from voicegate.signaling import auth
from voicegate.signaling.app import SESSIONS
from voicegate.signaling.ratelimit import RateLimiter, client_key
from voicegate.testing.client import CallClient, load_wav

BAD_OFFER: dict[str, Any] = {"sdp": "hello", "type": "offer"}
SECRET = "limits-secret-0123456789abcdef"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)
    assert [limiter.check("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.check("10.0.0.1")
    assert 9.9 < wait <= 10.0  # one offer per 10 s
    assert RateLimiter.retry_after(wait) == 10
    assert limiter.check("10.0.0.2") == 0.0  # other addresses are not affected
    clock.now = 10.0
    assert limiter.check("10.0.0.1") == 0.0
    assert limiter.check("10.0.0.1") > 0
    clock.now = 1000.0  # a long pause refills up to the burst, no further
    assert [limiter.check("10.0.0.1") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_memory_is_bounded() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, max_clients=100)
    for i in range(5000):
        limiter.check(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(limiter) == 100
    assert limiter.check("10.0.19.135") > 0  # among the most recent: still limited


def test_ipv6_hosts_share_their_64() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert client_key("unix-socket") == "unix-socket"
    limiter = RateLimiter(per_minute=1, burst=1)
    assert limiter.check("2001:db8::1") == 0.0
    assert limiter.check("2001:db8::2") > 0


def test_zero_rate_disables_the_limit() -> None:
    limiter = RateLimiter(per_minute=0, burst=1)
    assert all(limiter.check("10.0.0.1") == 0.0 for _ in range(100))
    assert len(limiter) == 0


async def test_offer_rate_limit_answers_429_with_retry_after() -> None:
    async with running_server(EchoBackend(), offer_rate=1, offer_burst=2) as (url, app):
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(f"{url}/api/offer", json=BAD_OFFER) as r:
                    assert r.status == 400
            async with http.post(f"{url}/api/offer", json=BAD_OFFER) as r:
                assert r.status == 429
                body = await r.json()
                assert "too many" in body["error"]
                assert 1 <= int(r.headers["Retry-After"]) <= 60
            # Only offers are limited: the rest of the API and health keep answering.
            for path in ("/api/ice-servers", "/healthz", "/readyz"):
                async with http.get(url + path) as r:
                    assert r.status == 200


async def test_forwarded_for_is_used_only_when_trusted() -> None:
    # Forwarded requests need a token (open dev mode serves only local ones), and trusting
    # X-Forwarded-For needs an auth secret.
    token = {"Authorization": f"Bearer {auth.mint(SECRET, 60)}"}
    for trusted, statuses in ((False, [400, 429]), (True, [400, 400])):
        server = running_server(
            EchoBackend(),
            offer_rate=1,
            offer_burst=1,
            trust_forwarded_for=trusted,
            auth_secret=SECRET,
        )
        async with server as (url, _), aiohttp.ClientSession() as http:
            got = []
            for client in ("203.0.113.1", "203.0.113.2"):
                headers = {"X-Forwarded-For": f"198.51.100.9, {client}", **token}
                async with http.post(f"{url}/api/offer", json=BAD_OFFER, headers=headers) as r:
                    got.append(r.status)
            assert got == statuses


async def test_cors_is_same_origin_unless_allowed() -> None:
    async with running_server(EchoBackend()) as (url, _), aiohttp.ClientSession() as http:
        host = url.removeprefix("http://")
        # Same origin (what the bundled page sends): fine, and no CORS headers needed.
        async with http.get(f"{url}/api/ice-servers", headers={"Origin": url}) as r:
            assert r.status == 200
            assert "Access-Control-Allow-Origin" not in r.headers
        async with http.get(
            f"{url}/api/ice-servers", headers={"Origin": f"https://{host}"}
        ) as r:  # TLS-terminating proxy in front: same host, other scheme
            assert r.status == 200
        for origin in ("https://evil.example", "null", "http://127.0.0.1:1"):
            async with http.post(
                f"{url}/api/offer", json=BAD_OFFER, headers={"Origin": origin}
            ) as r:
                assert r.status == 403, origin
                assert "origin" in (await r.json())["error"]
            async with http.options(
                f"{url}/api/offer",
                headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            ) as r:
                assert r.status == 403
        async with http.get(f"{url}/", headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 200  # the page itself is public


async def test_cors_allow_list() -> None:
    app_origin = "https://app.example.com"
    server = running_server(EchoBackend(), allowed_origins=(app_origin,))
    async with server as (url, _), aiohttp.ClientSession() as http:
        preflight = {
            "Origin": app_origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        async with http.options(f"{url}/api/offer", headers=preflight) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == app_origin
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        async with http.post(
            f"{url}/api/offer", json=BAD_OFFER, headers={"Origin": app_origin}
        ) as r:
            assert r.status == 400  # errors carry CORS headers too, so the page can read them
            assert r.headers["Access-Control-Allow-Origin"] == app_origin
        async with http.get(f"{url}/api/nope", headers={"Origin": app_origin}) as r:
            assert r.status == 404
            assert r.headers["Access-Control-Allow-Origin"] == app_origin
        async with http.get(
            f"{url}/api/ice-servers", headers={"Origin": "https://other.example.com"}
        ) as r:
            assert r.status == 403
    async with running_server(EchoBackend(), allowed_origins=("*",)) as (url, _):
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{url}/api/ice-servers", headers={"Origin": "https://any.example"}
            ) as r:
                assert r.status == 200
                assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_readiness_follows_capacity() -> None:
    async with running_server(EchoBackend(), max_sessions=1) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(20), aiohttp.ClientSession() as http:
                async with http.get(f"{url}/readyz") as r:
                    assert r.status == 200 and await r.json() == {"ready": True}
                await client.connect()
                async with http.get(f"{url}/readyz") as r:
                    assert r.status == 503
                    body = await r.json()
                    assert body["ready"] is False and "limit" in body["error"]
                async with http.get(f"{url}/healthz") as r:
                    assert r.status == 200  # liveness is not readiness
                assert await client.hangup() == 204
                async with http.get(f"{url}/readyz") as r:
                    assert r.status == 200
        finally:
            await client.close()


async def test_idle_call_is_ended_with_a_message(speech_wav: Callable[[str], Path]) -> None:
    speech = load_wav(speech_wav("hello there, this call is still in use, please keep it open"))
    async with running_server(EchoBackend(), idle_timeout=1.5) as (url, app):
        talker, silent = CallClient(url), CallClient(url)
        try:
            async with asyncio.timeout(40):
                await silent.connect()
                await talker.connect()
                session = app[SESSIONS][silent.pc_id]
                talker.mic.play(speech)  # speech, then the echo of it: activity past the timeout
                msg = await silent.wait_for("error", 10)
                assert msg["data"]["kind"] == "idle" and msg["data"]["fatal"] is True
                assert "without speech" in msg["data"]["message"]
                await session.closed.wait()
                assert session.close_reason == "idle"
                assert talker.pc_id in app[SESSIONS]
                assert not talker.of_type("error")
                # Once it falls silent too, the talker's call ends the same way.
                await talker.wait_for("bot-stopped-speaking", 20)
                assert (await talker.wait_for("error", 10))["data"]["kind"] == "idle"
        finally:
            await silent.close()
            await talker.close()


def test_limit_options_are_validated_together() -> None:
    env = {
        "VOICEGATE_OFFER_RATE": "-1",
        "VOICEGATE_OFFER_BURST": "0",
        "VOICEGATE_IDLE_TIMEOUT": "0.5",
        "VOICEGATE_DRAIN_TIMEOUT": "7200",
        "VOICEGATE_ALLOWED_ORIGINS": "https://ok.example,ftp://bad.example,https://x.example/path",
    }
    with pytest.raises(ConfigError) as err:
        resolve(None, env=env)
    text = "\n".join(err.value.problems)
    for needle in ("offer_rate", "offer_burst", "idle_timeout", "drain_timeout", "ftp://", "/path"):
        assert needle in text
    assert "ok.example" not in text
    good = resolve(
        None,
        env={
            "VOICEGATE_IDLE_TIMEOUT": "0",
            "VOICEGATE_ALLOWED_ORIGINS": "*",
            "VOICEGATE_AUTH_SECRET": SECRET,
        },
    )
    assert good.idle_timeout == 0 and good.allowed_origins == ("*",)
