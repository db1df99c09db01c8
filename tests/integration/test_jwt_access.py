"""JWT access tokens against a real server: minted by PyJWT (voicegate verifies with another
library), signed with the auth secret, with keys from a PEM file, and with keys from a JWKS an
identity provider (a real aiohttp server on loopback) serves and rotates.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.cluster.workers import worker_env
from voicegate.config import resolve
from voicegate.signaling import auth, jwt_access
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient

SECRET = "jwt-integration-secret-0123456789"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OFFER = {"sdp": "v=0\r\n", "type": "offer"}


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _claims(ttl: int = 300, **extra: Any) -> dict[str, Any]:
    """Claims every server of these tests accepts (the audience only matters where one is
    configured) but for what ``extra`` changes."""
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + ttl, "aud": "voice", **extra}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _status(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, str | None]:
    """The status of /api/ice-servers with ``token`` and, for a 401, its JSON reason."""
    async with http.get(f"{url}/api/ice-servers", headers=_bearer(token)) as r:
        if r.status != 401:
            return r.status, None
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        body = await r.json()
        assert isinstance(body["error"], str) and body["auth_required"] is True
        return r.status, str(body["reason"])


async def test_hs256_jwt_from_pyjwt_starts_a_call() -> None:
    token = jwt.encode(_claims(agent="default"), SECRET, algorithm="HS256")
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, app):
        async with aiohttp.ClientSession() as http:
            assert await _status(http, url, token) == (200, None)
        client = CallClient(url, token=token)
        try:
            async with asyncio.timeout(30):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                # The call's own credential stays voicegate's, bound to this call.
                session = auth.verify(SECRET, client.session_token or "")
                assert session.pc == client.pc_id and session.sub == "alice"
                assert await client.hangup() == 204
                assert not app[SESSIONS]
        finally:
            await client.close()


async def test_refusals_over_http(tmp_path: Path) -> None:
    (tmp_path / "keys.pem").write_text(_pem(RSA_KEY))
    now = int(time.time())
    hs = "HS256"
    cases = {
        "alg none": (jwt.encode(_claims(), None, algorithm="none"), "wrong_algorithm"),
        "HS512": (jwt.encode(_claims(), SECRET * 2, algorithm="HS512"), "wrong_algorithm"),
        "confusion": (
            _hs256_with(_pem(RSA_KEY).encode(), _claims()),
            "forged",
        ),
        "no exp": (
            jwt.encode({"sub": "a", "iat": now, "aud": "voice"}, SECRET, algorithm=hs),
            "malformed",
        ),
        "expired": (jwt.encode(_claims(ttl=-5), SECRET, algorithm=hs), "expired"),
        "too long": (jwt.encode(_claims(ttl=3600), SECRET, algorithm=hs), "too_long"),
        "wrong aud": (jwt.encode(_claims(aud="other"), SECRET, algorithm=hs), "wrong_audience"),
        "other key": (
            jwt.encode(_claims(aud="voice"), rsa.generate_private_key(65537, 2048), "RS256"),
            "forged",
        ),
        "not yet": (jwt.encode(_claims(nbf=now + 900, aud="voice"), SECRET, hs), "not_yet_valid"),
    }
    async with running_server(
        EchoBackend(),
        auth_secret=SECRET,
        jwt_public_key_file=str(tmp_path / "keys.pem"),
        max_token_ttl=600.0,
        token_audience="voice",
    ) as (url, app):
        async with aiohttp.ClientSession() as http:
            for name, (token, reason) in cases.items():
                assert await _status(http, url, token) == (401, reason), name
                async with http.post(f"{url}/api/offer", json=OFFER, headers=_bearer(token)) as r:
                    assert r.status == 401 and (await r.json())["reason"] == reason, name
            good = jwt.encode(_claims(aud="voice"), RSA_KEY, algorithm="RS256")
            assert await _status(http, url, good) == (200, None)
        assert app[SESSIONS] == {}


def _hs256_with(key: bytes, claims: dict[str, Any]) -> str:
    """HS256 "signed" with a public key; PyJWT itself refuses to make one."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signed = f"{b64(b'{"alg":"HS256","typ":"JWT"}')}.{b64(json.dumps(claims).encode())}"
    return f"{signed}.{b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())}"


async def test_rs256_and_es256_from_a_public_key_file(tmp_path: Path) -> None:
    (tmp_path / "keys.pem").write_text(_pem(RSA_KEY) + _pem(EC_KEY))
    async with running_server(
        EchoBackend(), auth_secret=SECRET, jwt_public_key_file=str(tmp_path / "keys.pem")
    ) as (url, app):
        async with aiohttp.ClientSession() as http:
            for key, alg in ((RSA_KEY, "RS256"), (EC_KEY, "ES256")):
                token = jwt.encode(_claims(), key, algorithm=alg, headers={"kid": "idp-key"})
                assert await _status(http, url, token) == (200, None), alg
                async with http.post(f"{url}/api/offer", json=OFFER, headers=_bearer(token)) as r:
                    assert r.status == 400, alg  # past the gate, refused for its content
            # HS256 with the secret and vg1 tokens keep working next to the keys.
            assert await _status(http, url, jwt.encode(_claims(), SECRET, "HS256")) == (200, None)
            assert await _status(http, url, auth.mint(SECRET, 60)) == (200, None)
        assert app[SESSIONS] == {}


class IdentityProvider:
    """A JWKS endpoint on loopback whose keys the test rotates, counting every fetch."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        self.body: bytes | None = None
        self.stall = asyncio.Event()
        self.stalling = False
        self.url = ""

    def publish(self, kid: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        else:
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.keys = {kid: {**jwk, "kid": kid, "use": "sig"}}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.fetches += 1
        if self.stalling:
            await self.stall.wait()
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        return web.json_response({"keys": list(self.keys.values())})


@asynccontextmanager
async def identity_provider() -> AsyncIterator[IdentityProvider]:
    idp = IdentityProvider()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", idp.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    idp.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    try:
        yield idp
    finally:
        idp.stall.set()
        await runner.cleanup()


async def test_jwks_keys_and_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    async with identity_provider() as idp:
        idp.publish("k1", RSA_KEY)
        async with running_server(
            EchoBackend(), auth_secret=SECRET, jwks_url=idp.url, offer_rate=0.0
        ) as (
            url,
            _,
        ):
            async with aiohttp.ClientSession() as http:
                first = jwt.encode(_claims(), RSA_KEY, "RS256", headers={"kid": "k1"})
                assert await _status(http, url, first) == (200, None)
                assert await _status(http, url, first) == (200, None)
                assert idp.fetches == 1  # cached
                # A flood of made-up kids costs the provider nothing more: rate-limited.
                for n in range(20):
                    made_up = jwt.encode(_claims(), RSA_KEY, "RS256", headers={"kid": f"x{n}"})
                    assert await _status(http, url, made_up) == (401, "unknown_key")
                assert idp.fetches == 1
                # The provider rotates to an ES256 key; once the refresh window has passed,
                # the new kid is fetched at its first use, and the old key is gone.
                idp.publish("k2", EC_KEY)
                monkeypatch.setattr(jwt_access, "JWKS_MIN_REFRESH_S", 0.0)
                second = jwt.encode(_claims(), EC_KEY, "ES256", headers={"kid": "k2"})
                assert await _status(http, url, second) == (200, None)
                assert idp.fetches == 2
                monkeypatch.setattr(jwt_access, "JWKS_MIN_REFRESH_S", 3600.0)
                assert await _status(http, url, first) == (401, "unknown_key")
                # A token whose header says RS256 under the EC key's kid matches nothing.
                swapped = jwt.encode(_claims(), RSA_KEY, "RS256", headers={"kid": "k2"})
                assert (await _status(http, url, swapped))[1] in ("wrong_key", "forged")


async def test_a_bad_jwks_never_hangs_or_breaks_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jwt_access, "JWKS_MIN_REFRESH_S", 0.0)
    monkeypatch.setattr(jwt_access, "JWKS_FETCH_TIMEOUT_S", 0.5)
    async with identity_provider() as idp:
        token = jwt.encode(_claims(), RSA_KEY, "RS256", headers={"kid": "k1"})
        async with running_server(
            EchoBackend(), auth_secret=SECRET, jwks_url=idp.url, offer_rate=0.0
        ) as (
            url,
            _,
        ):
            async with aiohttp.ClientSession() as http:
                idp.body = b'{"keys": [' + b'{"kty":"RSA"},' * 40_000 + b"{}]}"  # > 256 KiB
                assert await _status(http, url, token) == (401, "unknown_key")
                idp.body = b"<html>not json</html>"
                assert await _status(http, url, token) == (401, "unknown_key")
                idp.body = None
                idp.stalling = True  # a provider that never answers: bounded by the timeout
                async with asyncio.timeout(20):
                    assert await _status(http, url, token) == (401, "unknown_key")
                idp.stalling = False
                idp.publish("k1", RSA_KEY)
                assert await _status(http, url, token) == (200, None)
                async with http.get(f"{url}/healthz") as r:
                    assert r.status == 200
                # Keys that could not be refreshed for too long are no longer honoured.
                idp.body = b"not json"
                monkeypatch.setattr(jwt_access, "JWKS_MAX_AGE_S", 0.0)
                monkeypatch.setattr(jwt_access, "JWKS_TTL_S", 0.0)
                assert await _status(http, url, token) == (401, "unknown_key")


def test_token_command_mints_a_jwt_pyjwt_verifies() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "voicegate", "token", "--agent", "x", "--subject", "bob"]
        + ["--ttl", "120", "--audience", "voice", "--max-call-seconds", "30"],
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
    claims = jwt.decode(
        lines[0], SECRET, algorithms=["HS256"], audience="voice", options={"require": ["exp"]}
    )
    assert (claims["agent"], claims["sub"], claims["max_call_seconds"]) == ("x", "bob", 30)
    assert claims["exp"] - claims["iat"] == 120
    assert jwt.get_unverified_header(lines[0])["alg"] == "HS256"
    refused = subprocess.run(
        [sys.executable, "-m", "voicegate", "token", "--agent", "x", "--format", "vg1"],
        env={"VOICEGATE_AUTH_SECRET": SECRET, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "agent" in refused.stderr


def test_workers_get_the_key_configuration(tmp_path: Path) -> None:
    (tmp_path / "keys.pem").write_text(_pem(EC_KEY))
    config = resolve(
        None,
        env={
            "VOICEGATE_AUTH_SECRET": SECRET,
            "VOICEGATE_JWT_PUBLIC_KEY_FILE": str(tmp_path / "keys.pem"),
            "VOICEGATE_JWKS_URL": "https://idp.example/jwks",
        },
    )
    env = worker_env(config, 0, 2)
    assert env["VOICEGATE_JWT_PUBLIC_KEY_FILE"] == str(tmp_path / "keys.pem")
    assert env["VOICEGATE_JWKS_URL"] == "https://idp.example/jwks"
    # Public keys are no secret; the auth secret still travels only by stdin.
    assert SECRET not in json.dumps(env)


async def test_the_minting_examples_make_tokens_the_server_takes() -> None:
    """examples/mint_token.py (PyJWT) and examples/mint_token.mjs (Node.js, jose) as a team's
    backend would run them: their tokens start nothing but pass the server's gate."""
    import shutil

    from tests.support.components import require

    examples = Path(__file__).parents[2] / "examples"
    node = shutil.which("node")
    require(node is not None, "node is not installed (apt-get install nodejs)")
    require((examples / "node_modules" / "jose").is_dir(), "examples/node_modules/jose missing")
    env = {**os.environ, "VOICEGATE_AUTH_SECRET": SECRET}
    tokens = {}
    for name, command in (
        ("python", [sys.executable, str(examples / "mint_token.py"), "user-7", "support"]),
        ("node", [str(node), str(examples / "mint_token.mjs"), "user-7", "support"]),
    ):
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        tokens[name] = out.decode().strip()
        claims = jwt.decode(tokens[name], SECRET, algorithms=["HS256"])
        assert (claims["sub"], claims["agent"]) == ("user-7", "support"), name
    async with running_server(EchoBackend(), auth_secret=SECRET) as (url, _):
        async with aiohttp.ClientSession() as http:
            for name, token in tokens.items():
                assert await _status(http, url, token) == (200, None), name
