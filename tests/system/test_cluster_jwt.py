"""JWT access tokens on a node of several workers: ``voicegate serve --workers 2`` with a public
key file and a JWKS (a real aiohttp server on loopback); each worker verifies with the keys it
was configured with, and ``--check-config`` lists every key problem at once (exit 2).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.cluster import SECRET, serve_node, start_call

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _claims() -> dict[str, object]:
    now = int(time.time())
    return {"sub": "cluster-jwt", "iat": now, "exp": now + 600}


async def test_workers_verify_pem_and_jwks_tokens(tmp_path: Path) -> None:
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "keys.pem").write_bytes(pem)
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True)

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": [{**jwk, "kid": "ec-1", "use": "sig"}]})

    idp = web.Application()
    idp.router.add_get("/jwks", jwks)
    runner = web.AppRunner(idp)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    jwks_url = f"http://127.0.0.1:{runner.addresses[0][1]}/jwks"
    args = ("--workers", "2", "--backend", "echo", "--port", "0", "--offer-rate", "0")
    env = {
        "VOICEGATE_JWT_PUBLIC_KEY_FILE": str(tmp_path / "keys.pem"),
        "VOICEGATE_JWKS_URL": jwks_url,
    }
    try:
        async with serve_node(tmp_path, *args, env=env) as node:
            rs = jwt.encode(_claims(), RSA_KEY, "RS256")
            es = jwt.encode(_claims(), EC_KEY, "ES256", headers={"kid": "ec-1"})
            hs = jwt.encode(_claims(), SECRET, "HS256")
            forged = jwt.encode(_claims(), rsa.generate_private_key(65537, 2048), "RS256")
            async with aiohttp.ClientSession() as http:
                # Enough requests that both workers answer some of each.
                for token, status in ((rs, 200), (es, 200), (hs, 200), (forged, 401)) * 4:
                    headers = {"Authorization": f"Bearer {token}"}
                    async with http.get(f"{node.url}/api/ice-servers", headers=headers) as r:
                        assert r.status == status, await r.text()
            calls = []
            try:
                async with asyncio.timeout(90):
                    for token in (rs, es):
                        calls.append(await start_call(node.url, token))
                    assert all(c.session_token for c in calls)
                    for c in calls:
                        assert await c.hangup() == 204
            finally:
                for c in calls:
                    await c.close()
    finally:
        await runner.cleanup()


def test_check_config_lists_every_key_problem(tmp_path: Path) -> None:
    (tmp_path / "weak.pem").write_bytes(
        rsa.generate_private_key(65537, 1024)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    run = subprocess.run(
        [sys.executable, "-m", "voicegate", "serve", "--check-config"]
        + ["--jwt-public-key-file", str(tmp_path / "weak.pem")]
        + ["--jwks-url", "http://idp.example/jwks"],
        env={**os.environ, "VOICEGATE_AUTH_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    out = run.stdout + run.stderr
    assert "1024 bits" in out and "jwks_url" in out
