"""Who may do what, tried as an attacker on loopback would: a call's session token cannot start
calls or revive an ended one; open dev mode serves only requests made on this machine (no
proxy, no foreign Host, so no DNS rebinding); one subject holds only so many calls; tokens that
live too long or are meant for another audience are refused; non-finite numbers and wide-open
settings without a secret are configuration errors. Every refusal is JSON with a reason."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import pytest

from tests.support.refusals import bearer, refusal
from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.cli import main
from voicegate.config import ConfigError, resolve
from voicegate.signaling import auth
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient

SECRET = "security-secret-0123456789abcdef"
OFFER = {"sdp": "v=0\r\n", "type": "offer"}


# -- finding 1: a session token restarts or ends its own live call, nothing else -----------------


async def test_a_session_token_cannot_start_a_call() -> None:
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, app):
        call = CallClient(url, token=auth.mint(SECRET, 60, subject="alice"))
        try:
            async with asyncio.timeout(30), aiohttp.ClientSession() as http:
                await call.connect()
                session_token = call.session_token or ""
                for extra in ({}, {"pc_id": call.pc_id}, {"pc_id": "pc-new"}):
                    async with http.post(
                        f"{url}/api/offer", json={**OFFER, **extra}, headers=bearer(session_token)
                    ) as r:
                        if extra.get("pc_id") == "pc-new":
                            assert r.status == 403  # another call's id: not this token's
                        else:
                            body = await refusal(r, 403, "session_token")
                            assert "cannot start calls" in body["error"]
                # A real offer with the session token and no restart: refused the same way.
                stranger = CallClient(url, token=session_token)
                with pytest.raises(RuntimeError, match="403"):
                    await stranger.connect()
                await stranger.close()
                assert set(app[SESSIONS]) == {call.pc_id}
        finally:
            await call.close()


async def test_a_session_token_cannot_restart_a_call_that_ended() -> None:
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, app):
        first = CallClient(url, token=auth.mint(SECRET, 60))
        again = CallClient(url, token=None)
        try:
            async with asyncio.timeout(30):
                await first.connect()
                again.token = first.session_token
                assert await first.hangup() == 204
                assert not app[SESSIONS]
                with pytest.raises(RuntimeError, match="403") as err:
                    await again.connect(restart_of=first.pc_id)
                assert "call_ended" in str(err.value)
                assert await first.hangup() == 404  # nothing left to end
                assert not app[SESSIONS]
        finally:
            await first.close()
            await again.close()


async def test_a_session_token_cannot_revive_a_call_that_timed_out() -> None:
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, app):
        first = CallClient(url, token=auth.mint(SECRET, 60, max_call_seconds=1.0))
        again = CallClient(url)
        try:
            async with asyncio.timeout(30):
                await first.connect()
                session = app[SESSIONS][first.pc_id]
                await session.closed.wait()
                assert session.close_reason == "max-duration"
                again.token = first.session_token
                with pytest.raises(RuntimeError, match="403"):
                    await again.connect(restart_of=first.pc_id)
                assert not app[SESSIONS]
        finally:
            await first.close()
            await again.close()


# -- finding 2: open dev mode is for requests made on this machine only ------------------------


async def test_open_mode_refuses_proxied_and_foreign_host_requests() -> None:
    async with running_server(EchoBackend()) as (url, _):
        port = url.rsplit(":", 1)[1]
        async with aiohttp.ClientSession() as http:
            for headers in (
                {},
                {"Host": f"localhost:{port}"},
                {"Host": f"[::1]:{port}"},
                {"Host": "127.0.0.1"},
            ):
                async with http.get(f"{url}/api/ice-servers", headers=headers) as r:
                    assert r.status == 200, headers
            for headers, needle in (
                ({"Host": f"evil.example:{port}"}, "Host"),
                ({"Host": "127.0.0.1.nip.io"}, "Host"),
                ({"X-Forwarded-For": "203.0.113.9"}, "proxy"),
                ({"X-Forwarded-Host": "127.0.0.1"}, "proxy"),
                ({"Forwarded": "for=203.0.113.9"}, "proxy"),
            ):
                for method, path in (("GET", "/api/ice-servers"), ("POST", "/api/offer")):
                    async with http.request(method, url + path, json=OFFER, headers=headers) as r:
                        body = await refusal(r, 401, "not_local")
                        assert needle in body["error"] and "--auth-secret" in body["error"]
            # Health and the page stay open; they start nothing.
            async with http.get(f"{url}/healthz", headers={"Host": "evil.example"}) as r:
                assert r.status == 200


async def test_a_non_loopback_server_without_a_secret_serves_no_one() -> None:
    # validate() refuses this configuration; an app built anyway still lets no one in.
    async with running_server(EchoBackend(), host="0.0.0.0") as (url, app):
        async with aiohttp.ClientSession() as http, http.post(f"{url}/api/offer", json=OFFER) as r:
            body = await refusal(r, 401, "not_local")
            assert "not on loopback" in body["error"]
        assert not app[SESSIONS]


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_dns_rebinding_text_plain_offers_are_refused() -> None:
    """A page on rebind.example whose name now resolves to 127.0.0.1 posts a 'simple' request
    (text/plain, no preflight): its Host and Origin are its own name, so it is not local."""
    client = CallClient("http://unused")
    client.pc.addTrack(client.mic)
    await client.pc.setLocalDescription(await client.pc.createOffer())
    body = json.dumps({"sdp": client.pc.localDescription.sdp, "type": "offer"}).encode()
    await client.close()
    async with running_server(EchoBackend()) as (url, app):
        port = int(url.rsplit(":", 1)[1])
        cases = [
            (f"rebind.example:{port}", f"http://rebind.example:{port}", 401, "not_local"),
            (f"127.0.0.1:{port}", "http://rebind.example", 403, None),  # foreign origin
            (f"127.0.0.1:{port}", None, 415, None),  # local, but not declared JSON
        ]
        for host, origin, status, reason in cases:
            lines = [
                "POST /api/offer HTTP/1.1",
                f"Host: {host}",
                "Content-Type: text/plain;charset=UTF-8",
                f"Content-Length: {len(body)}",
                "Connection: close",
            ]
            if origin:
                lines.append(f"Origin: {origin}")
            got, answer = await _raw(port, "\r\n".join(lines).encode() + b"\r\n\r\n" + body)
            assert got == status, (host, origin, answer)
            assert reason is None or answer["reason"] == reason
        assert not app[SESSIONS]


async def test_api_bodies_must_be_declared_json() -> None:
    async with running_server(EchoBackend()) as (url, _), aiohttp.ClientSession() as http:
        for method in ("POST", "PATCH"):
            for data, kind in ((json.dumps(OFFER), "text/plain"), ("a=b", None)):
                headers = {"Content-Type": kind} if kind else {}
                async with http.request(
                    method, f"{url}/api/offer", data=data, headers=headers
                ) as r:
                    assert r.status == 415
                    assert "application/json" in (await r.json())["error"]


def test_wide_open_settings_without_a_secret_are_configuration_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"VOICEGATE_ALLOWED_ORIGINS": "*", "VOICEGATE_TRUST_FORWARDED_FOR": "true"}
    with pytest.raises(ConfigError) as err:
        resolve(None, env=env)
    text = "\n".join(err.value.problems)
    assert "--allowed-origin '*'" in text and "--trust-forwarded-for" in text
    resolve(None, env={**env, "VOICEGATE_AUTH_SECRET": SECRET})
    assert main(["serve", "--allowed-origin", "*", "--trust-forwarded-for"]) == 2
    assert "--auth-secret" in capsys.readouterr().err


# -- finding 3: one subject holds at most --max-calls-per-subject live calls ---------------------


async def test_one_subject_holds_a_bounded_number_of_calls() -> None:
    async with running_server(EchoBackend(), auth_secret=SECRET, max_calls_per_subject=2) as (
        url,
        app,
    ):
        alice = auth.mint(SECRET, 120, subject="alice")
        calls = [CallClient(url, token=alice) for _ in range(2)]
        extra: list[CallClient] = []
        try:
            async with asyncio.timeout(40), aiohttp.ClientSession() as http:
                for call in calls:
                    await call.connect()
                # A fresh token for the same subject is the same subject.
                for token in (alice, auth.mint(SECRET, 120, subject="alice")):
                    async with http.post(
                        f"{url}/api/offer", json=OFFER, headers=bearer(token)
                    ) as r:
                        body = await refusal(r, 429, "subject_limit")
                        assert "2 live calls" in body["error"] and int(r.headers["Retry-After"]) > 0
                # Restarting a live call is not a new call.
                restart = CallClient(url, token=calls[0].session_token)
                extra.append(restart)
                await restart.connect(restart_of=calls[0].pc_id)
                bob = CallClient(url, token=auth.mint(SECRET, 120, subject="bob"))
                extra.append(bob)
                await bob.connect()
                assert len(app[SESSIONS]) == 3
                assert await calls[1].hangup() == 204
                again = CallClient(url, token=alice)
                extra.append(again)
                await again.connect()
        finally:
            for call in calls + extra:
                await call.close()


# -- finding 8: token lifetime and audience ---------------------------------------------------


def _signed(payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"vg1.{body}.{auth._signature(SECRET, f'vg1.{body}')}"


async def test_long_lived_and_wrong_audience_tokens_are_refused() -> None:
    now = int(time.time())
    server = running_server(
        EchoBackend(), auth_secret=SECRET, max_token_ttl=3600, token_audience="vg-prod"
    )
    cases = [
        (_signed({"exp": now + 7200, "iat": now, "aud": "vg-prod"}), "too_long"),
        (_signed({"exp": now + 7200, "aud": "vg-prod"}), "too_long"),  # no iat: judged from now
        (_signed({"exp": now + 600, "iat": now - 86400, "aud": "vg-prod"}), "too_long"),
        (auth.mint(SECRET, 600), "wrong_audience"),
        (auth.mint(SECRET, 600, audience="vg-staging"), "wrong_audience"),
    ]
    async with server as (url, _), aiohttp.ClientSession() as http:
        for token, reason in cases:
            async with http.get(f"{url}/api/ice-servers", headers=bearer(token)) as r:
                await refusal(r, 401, reason)
        good = auth.mint(SECRET, 600, audience="vg-prod")
        async with http.get(f"{url}/api/ice-servers", headers=bearer(good)) as r:
            assert r.status == 200
        call = CallClient(url, token=good)
        try:
            async with asyncio.timeout(20):
                await call.connect()
                assert auth.verify(SECRET, call.session_token or "").aud == "vg-prod"
                assert await call.hangup() == 204  # the session token passes the same checks
        finally:
            await call.close()


def test_token_command_mints_an_audience(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--secret", SECRET, "--audience", "vg-prod", "--format", "vg1"]) == 0
    assert auth.verify(SECRET, capsys.readouterr().out.strip(), audience="vg-prod").aud == "vg-prod"
    for bad in (["--ttl", "inf"], ["--ttl", "nan"], ["--max-call-seconds", "inf"]):
        assert main(["token", "--secret", SECRET, *bad]) == 2


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
def test_numbers_must_be_finite(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", f"--max-call-seconds={value}"]) == 2
    assert "finite number" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="finite number"):
        resolve(None, env={"VOICEGATE_IDLE_TIMEOUT": value})
