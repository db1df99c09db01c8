"""The mouth-to-ear benchmark's front for Pipecat (``benchmarks.pipecat_m2e.page_front``).

It is what makes the Pipecat figure comparable: the browser must get voicegate's page exactly as
voicegate serves it (its Content-Security-Policy included, which is what lets the measuring
worklet load as 'self'), while the page's signaling must reach Pipecat's runner unchanged.
Behaviours: the page and its static files come from voicegate's server with its headers;
``/api/ice-servers`` is an empty list; ``POST /api/offer`` and any other ``/api/`` request reach
the runner with their method, body and content type, and the runner's status and body come back.
No browser and no Pipecat here: two loopback aiohttp apps stand in for voicegate and the runner.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from benchmarks.pipecat_m2e import page_front

from tests.support.browser import REPO
from voicegate.signaling.middleware import PAGE_POLICY

WEB = REPO / "web"


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[str, str, list[tuple[str, str, str, bytes]]]]:
    """A page server that answers like voicegate's (files of web/, the page policy) and a
    runner that records every request it gets."""
    seen: list[tuple[str, str, str, bytes]] = []

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("path", "index.html")
        res = web.FileResponse(Path(WEB) / name)
        res.headers["Content-Security-Policy"] = PAGE_POLICY
        return res

    async def runner_api(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.method, request.path, request.content_type, body))
        if request.method == "POST" and request.path == "/api/offer":
            offer = json.loads(body)
            return web.json_response({"sdp": "answer", "type": "answer", "pc_id": offer["type"]})
        return web.json_response({"detail": "Not Found"}, status=404)

    page_app = web.Application()
    page_app.router.add_get("/", page)
    page_app.router.add_get("/static/{path:.+}", page)
    runner_app = web.Application()
    runner_app.router.add_route("*", "/{path:.*}", runner_api)
    page_runner, page_base = await _serve(page_app)
    pipecat_runner, runner_base = await _serve(runner_app)
    try:
        yield page_base, runner_base, seen
    finally:
        await page_runner.cleanup()
        await pipecat_runner.cleanup()


async def test_front_serves_voicegates_page_and_passes_signaling_to_the_runner(
    upstreams: tuple[str, str, list[tuple[str, str, str, bytes]]],
) -> None:
    page_base, runner_base, seen = upstreams
    async with page_front(runner_base, page_base) as front, aiohttp.ClientSession() as http:
        async with http.get(f"{front}/?raw=1&measure=1") as res:
            assert res.status == 200
            assert res.headers["Content-Security-Policy"] == PAGE_POLICY
            assert await res.read() == (WEB / "index.html").read_bytes()
        async with http.get(f"{front}/static/measure-worklet.js") as res:
            assert res.status == 200
            assert res.headers["Content-Security-Policy"] == PAGE_POLICY
            assert await res.read() == (WEB / "measure-worklet.js").read_bytes()
        async with http.get(f"{front}/api/ice-servers") as res:
            assert await res.json() == {"iceServers": []}

        offer = {"sdp": "v=0", "type": "offer"}
        async with http.post(f"{front}/api/offer", json=offer) as res:
            assert res.status == 200
            assert await res.json() == {"sdp": "answer", "type": "answer", "pc_id": "offer"}
        async with http.delete(f"{front}/api/sessions/abc") as res:
            assert res.status == 404

    assert seen[0] == ("POST", "/api/offer", "application/json", json.dumps(offer).encode())
    assert seen[1][:2] == ("DELETE", "/api/sessions/abc")
    assert len(seen) == 2  # the page and ice-servers never reach the runner
