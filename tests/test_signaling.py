"""Bad input on every route gets a clear JSON 4xx, never a 500 or a traceback, and never
disturbs a call that is already running."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.testing.client import CallClient

VALID_CANDIDATE = "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host"
JSON = {"Content-Type": "application/json"}


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert resp.content_type == "application/json", await resp.text()
    body = await resp.json()
    assert isinstance(body, dict)
    return body


BAD_OFFERS: list[tuple[Any, int, str]] = [
    (b"", 400, "empty"),
    (b"not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"type": "offer"}', 400, "'sdp'"),
    (b'{"sdp": 5, "type": "offer"}', 400, "'sdp'"),
    (b'{"sdp": "v=0\\r\\n", "type": "answer"}', 400, "'type'"),
    (b'{"sdp": "hello", "type": "offer"}', 400, "v=0"),
    (b'{"sdp": "v=0\\r\\n", "type": "offer", "pc_id": 7}', 400, "'pc_id'"),
    (b'{"sdp": "v=0\\r\\n", "type": "offer", "restart_pc": "yes"}', 400, "'restart_pc'"),
    (
        b'{"sdp": "v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\ns=-\\r\\nt=0 0\\r\\n", "type": "offer"}',
        400,
        "audio",
    ),
    (b'{"sdp": "v=0\\r\\ngarbage\\r\\nm=audio\\r\\n", "type": "offer"}', 400, "SDP"),
]


@pytest.mark.parametrize(("body", "status", "needle"), BAD_OFFERS)
async def test_bad_offers(body: bytes, status: int, needle: str) -> None:
    async with running_server(EchoBackend()) as (url, app), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/offer", data=body, headers=JSON) as resp:
            assert resp.status == status
            assert needle in (await _json(resp))["error"]
        async with http.get(f"{url}/healthz") as resp:
            assert (await resp.json())["sessions"] == 0


async def test_video_only_offer_is_refused() -> None:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    async with running_server(EchoBackend()) as (url, _), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/offer", json={"sdp": sdp, "type": "offer"}) as resp:
            assert resp.status == 400
            assert "audio" in (await _json(resp))["error"]


async def test_body_limit_413() -> None:
    server = running_server(EchoBackend(), max_body_bytes=4096)
    big = b'{"sdp": "' + b"a" * 10000 + b'", "type": "offer"}'
    async with server as (url, _), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/offer", data=big, headers=JSON) as resp:
            assert resp.status == 413
            assert "4096" in (await _json(resp))["error"]


async def test_wrong_methods_and_unknown_routes() -> None:
    async with running_server(EchoBackend()) as (url, _), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/offer") as resp:
            assert resp.status == 405
            body = await _json(resp)
            assert "POST" in body["error"] and "GET" in body["error"]
            assert "POST" in resp.headers["Allow"]
        async with http.put(f"{url}/healthz") as resp:
            assert resp.status == 405
            await _json(resp)
        async with http.post(f"{url}/api/sessions/x") as resp:
            assert resp.status == 405
            await _json(resp)
        for path in ("/nope", "/api/nope", "/static/nope.js", "/static/../pyproject.toml"):
            async with http.get(f"{url}{path}") as resp:
                assert resp.status in (403, 404), path
                if resp.status == 404:
                    assert "error" in await _json(resp)


async def test_unknown_sessions() -> None:
    async with running_server(EchoBackend()) as (url, _), aiohttp.ClientSession() as http:
        async with http.delete(f"{url}/api/sessions/pc-unknown") as resp:
            assert resp.status == 404
            assert "pc-unknown" in (await _json(resp))["error"]
        patch = {
            "pc_id": "pc-unknown",
            "candidates": [{"candidate": VALID_CANDIDATE, "sdp_mid": "0", "sdp_mline_index": 0}],
        }
        async with http.patch(f"{url}/api/offer", json=patch) as resp:
            assert resp.status == 404
            await _json(resp)


BAD_PATCHES: list[Any] = [
    {},
    {"pc_id": 3, "candidates": []},
    {"pc_id": "x"},
    {"pc_id": "x", "candidates": "no"},
    {"pc_id": "x", "candidates": [1]},
    {"pc_id": "x", "candidates": [{"candidate": 5}]},
    {"pc_id": "x", "candidates": [{"candidate": "garbage", "sdp_mid": "0"}]},
    {"pc_id": "x", "candidates": [{"candidate": VALID_CANDIDATE, "sdp_mid": 0}]},
    {"pc_id": "x", "candidates": [{"candidate": VALID_CANDIDATE, "sdp_mline_index": "0"}]},
    {"pc_id": "x", "candidates": [{"candidate": VALID_CANDIDATE}] * 100},
]


@pytest.mark.parametrize("body", BAD_PATCHES)
async def test_bad_patches(body: Any) -> None:
    async with running_server(EchoBackend()) as (url, _), aiohttp.ClientSession() as http:
        async with http.patch(f"{url}/api/offer", json=body) as resp:
            assert resp.status == 400
            assert (await _json(resp))["error"]


async def test_static_page_and_health() -> None:
    async with running_server(EchoBackend()) as (url, _), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/") as resp:
            assert resp.status == 200
            assert "<html" in (await resp.text()).lower()
        async with http.get(f"{url}/healthz") as resp:
            body = await _json(resp)
            assert body["status"] == "ok" and body["backend"] == "echo"
        async with http.get(f"{url}/api/ice-servers") as resp:
            assert (await _json(resp)) == {"iceServers": []}


async def test_session_limit_503_then_recovers() -> None:
    async with running_server(EchoBackend(), max_sessions=1) as (url, _):
        first, second = CallClient(url), CallClient(url)
        try:
            async with asyncio.timeout(20):
                await first.connect()
                with pytest.raises(RuntimeError, match="503"):
                    await second.connect()
                async with aiohttp.ClientSession() as http:
                    pc = CallClient(url)
                    pc.pc.addTrack(pc.mic)
                    await pc.pc.setLocalDescription(await pc.pc.createOffer())
                    body = {"sdp": pc.pc.localDescription.sdp, "type": "offer"}
                    async with http.post(f"{url}/api/offer", json=body) as resp:
                        assert resp.status == 503
                        assert resp.headers["Retry-After"].isdigit()
                        assert "limit" in (await _json(resp))["error"]
                    await pc.close()
                assert await first.hangup() == 204
                third = CallClient(url)
                await third.connect()
                await third.hangup()
                await third.close()
        finally:
            await first.close()
            await second.close()


async def test_bad_requests_do_not_disturb_a_live_call() -> None:
    async with running_server(EchoBackend()) as (url, _):
        client = CallClient(url)
        try:
            async with asyncio.timeout(30):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                async with aiohttp.ClientSession() as http:
                    for body, _, _ in BAD_OFFERS:
                        async with http.post(f"{url}/api/offer", data=body, headers=JSON) as resp:
                            assert resp.status == 400
                    live = {"sdp": "v=0\r\n", "type": "offer", "pc_id": client.pc_id}
                    async with http.post(f"{url}/api/offer", json=live) as resp:
                        assert resp.status == 409
                await client.wait_frames(25, 2)  # still receiving ~50 frames/s
                assert client.pc.connectionState == "connected"
        finally:
            await client.close()
