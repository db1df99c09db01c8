"""The node-to-node hop, attacked: real ``voicegate serve`` nodes with a real redis-server.

- A client that sends ``X-Voicegate-Forwarded-By`` itself (so that a node adopts a call another
  node still runs: two paid model streams for one call) is refused with 403 JSON, unsigned or
  wrongly signed, by a single process and by a supervisor alike.
- A node forwards nothing for a caller without a valid token: a DELETE for a call whose owner
  record names some other address (here a listener of the test's own, standing in for whatever
  internal service a poisoned record could name) is answered 401 and never leaves the node.
- What a node does forward carries a signature the receiver verifies (a real ``HopGuard`` in the
  test's listener, keyed like every node); the same request sent again is refused as a replay.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.cluster import (
    SECRET,
    free_port,
    node_seal,
    redis_server,
    serve_node,
    token,
)
from voicegate.cluster.directory import Directory, NodeInfo
from voicegate.cluster.hop import HopGuard
from voicegate.config import ServeConfig
from voicegate.signaling.errors import ApiError, json_error

pytestmark = [pytest.mark.timeout(180)]

RESTART = {"sdp": "v=0\r\n", "type": "offer", "pc_id": "someone-elses-call", "restart_pc": True}


def node_args(redis_url: str, port: int, workers: str) -> tuple[str, ...]:
    return (
        "--backend", "echo",
        "--port", str(port),
        "--cluster-redis", redis_url,
        "--node-id", "node-a",
        "--node-url", f"http://127.0.0.1:{port}",
        "--workers", workers,
    )  # fmt: skip


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_client_sent_forwarded_by_is_refused(tmp_path: Path, workers: str) -> None:
    async with redis_server(tmp_path) as redis_url:
        port = free_port()
        async with serve_node(tmp_path, *node_args(redis_url, port, workers)) as node:
            forged = [
                {"X-Voicegate-Forwarded-By": "node-b"},
                {
                    "X-Voicegate-Forwarded-By": "node-b",
                    "X-Voicegate-Hop-Time": "1",
                    "X-Voicegate-Hop-Signature": "00" * 32,
                },
            ]
            async with aiohttp.ClientSession() as http:
                for headers in forged:
                    sent = {**headers, "Authorization": f"Bearer {token()}"}
                    async with http.post(
                        node.url + "/api/offer", json=RESTART, headers=sent
                    ) as resp:
                        assert resp.status == 403, resp.status
                        assert "signature" in (await resp.json())["error"]


@pytest.fixture
async def listener() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """Stands in for what a poisoned owner record names: records every request it gets and
    checks the hop signature as a node would."""
    guard = HopGuard(ServeConfig(auth_secret=SECRET))
    seen: list[dict[str, Any]] = []

    async def any_request(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        try:
            verified = await guard.arrived(request)
        except ApiError as exc:
            return json_error(exc.status, exc.message)
        return web.json_response({"verified": verified})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_request)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_no_forwarding_without_a_token_and_hops_are_signed(
    tmp_path: Path, workers: str, listener: tuple[str, list[dict[str, Any]]]
) -> None:
    target, seen = listener
    async with redis_server(tmp_path) as redis_url:
        directory = Directory(redis_url, "elsewhere", options=node_seal())  # a node's key
        try:
            await directory.claim("victim-call", 0, "", 600)
            port = free_port()
            async with serve_node(tmp_path, *node_args(redis_url, port, workers)) as node:
                # Written now: a heartbeat expires within seconds.
                await directory.heartbeat(NodeInfo("elsewhere", target, 0, 10))
                async with aiohttp.ClientSession() as http:
                    url = node.url + "/api/sessions/victim-call"
                    async with http.delete(url) as resp:
                        assert resp.status == 401, resp.status
                        assert (await resp.json())["auth_required"] is True
                    assert seen == []  # nothing left the node
                    auth = {"Authorization": f"Bearer {token()}"}
                    async with http.delete(url, headers=auth) as resp:
                        assert resp.status == 200, await resp.text()
                        assert await resp.json() == {"verified": True}
                (hop,) = seen
                assert hop["X-Voicegate-Forwarded-By"] == "node-a"
                # The same hop sent again (a replay by whoever saw it): refused.
                replay = {k: v for k, v in hop.items() if k.lower() not in ("host",)}
                async with (
                    aiohttp.ClientSession() as http,
                    http.delete(target + "/api/sessions/victim-call", headers=replay) as resp,
                ):
                    assert resp.status == 403
                    assert "replayed" in json.loads(await resp.text())["error"]
        finally:
            await directory.aclose()


async def test_hop_signature_covers_method_path_and_body(
    listener: tuple[str, list[dict[str, Any]]],
) -> None:
    """A signed hop's headers moved onto another method, path or body: refused."""
    target, _ = listener
    sender = HopGuard(ServeConfig(auth_secret=SECRET))
    headers: dict[str, str] = {}

    async def sign(request: web.Request) -> web.StreamResponse:
        headers.update(sender.outgoing(request, await request.read(), "node-a"))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/offer", sign)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {token()}"}
            body = b'{"sdp": "v=0", "type": "offer"}'
            async with http.post(
                f"http://127.0.0.1:{port}/api/offer", data=body, headers=auth
            ) as resp:
                assert resp.status == 200
            for method, path, sent in [
                ("POST", "/api/offer", b'{"sdp": "v=1", "type": "offer"}'),
                ("PATCH", "/api/offer", body),
                ("POST", "/api/offer?x=1", body),
            ]:
                async with http.request(method, target + path, data=sent, headers=headers) as r:
                    assert r.status == 403, (method, path)
            async with http.post(target + "/api/offer", data=body, headers=headers) as r:
                assert r.status == 200  # the hop as signed
    finally:
        await runner.cleanup()
