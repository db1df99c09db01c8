"""TURN: minted credentials, and calls relayed through a real coturn on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCIceServer

from tests.support.coturn import running_coturn
from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.signaling.turn import TurnConfig, mint, quota_name
from voicegate.testing.client import CallClient

SECRET = "test-turn-secret-Zq8"
REPO = Path(__file__).resolve().parents[1]


def test_mint_matches_the_rest_api_scheme() -> None:
    username, credential = mint(SECRET, "pc-1", 600, now=1_000_000)
    assert username == "1000600:pc-1"
    expected = hmac.new(SECRET.encode(), b"1000600:pc-1", hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected


def test_browser_credentials_name_the_subject_and_end_with_the_token() -> None:
    """``<expiry>:<subject>`` so coturn's user-quota counts per user (tests/test_turn_prod.py
    measures that); the expiry is the TTL but never later than ``not_after``."""
    cfg = TurnConfig(("turn:t.example:3478",), SECRET, 3600)
    now = time.time()
    entry = cfg.browser_servers("pc-1", subject="user-42", not_after=now + 300)[0]
    expiry, who = entry["username"].split(":", 1)
    assert who == "user-42" and now + 299 <= int(expiry) <= now + 300
    digest = hmac.new(SECRET.encode(), entry["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(entry["credential"]) == digest
    # A later not_after leaves the TTL in charge; no subject names the session.
    entry = cfg.browser_servers("pc-1", not_after=now + 86400)[0]
    expiry, who = entry["username"].split(":", 1)
    assert who == "pc-1" and now + 3599 <= int(expiry) <= now + 3600
    # Subjects coturn's log should not carry verbatim become a digest, the same every time.
    odd = [cfg.browser_servers(f"pc-{i}", subject="Mallory \n<x>")[0] for i in range(2)]
    names = {e["username"].split(":", 1)[1] for e in odd}
    assert len(names) == 1 and re.fullmatch(r"sub-[0-9a-f]{24}", names.pop())
    assert quota_name("a" * 65).startswith("sub-") and quota_name("a.b@c-d+e_f") == "a.b@c-d+e_f"


def test_server_gets_one_udp_turn_url_browser_gets_all() -> None:
    urls = (
        "turns:t.example:5349?transport=tcp",
        "turn:t.example:3478?transport=tcp",
        "turn:t.example:3478?transport=udp",
        "stun:t.example:3478",
    )
    cfg = TurnConfig(urls, SECRET, 900)
    server = cfg.server_servers("pc-1")
    assert [s.urls for s in server] == ["stun:t.example:3478", "turn:t.example:3478?transport=udp"]
    assert server[1].username is not None and server[1].username.endswith(":server-pc-1")
    browser = cfg.browser_servers("pc-1")
    assert browser[0]["urls"] == list(urls)
    expiry = int(browser[0]["username"].split(":")[0])
    assert 0 < expiry - time.time() <= 900
    assert SECRET not in json.dumps(browser) and SECRET not in repr(cfg)


async def test_ice_servers_route_and_offer_carry_credentials_not_the_secret() -> None:
    async with running_server(
        EchoBackend(), turn_urls=("turn:127.0.0.1:3478",), turn_secret=SECRET
    ) as (url, _):
        async with aiohttp.ClientSession() as http, http.get(f"{url}/api/ice-servers") as resp:
            text = await resp.text()
        assert SECRET not in text
        entry = json.loads(text)["iceServers"][0]
        assert entry["urls"] == ["turn:127.0.0.1:3478"]
        assert re.fullmatch(r"\d+:web-[0-9a-f]+", entry["username"])
        client = CallClient(url)
        try:
            async with asyncio.timeout(20):
                answer = await client.connect()
            assert SECRET not in json.dumps(answer)
            assert answer["iceServers"][0]["username"].endswith(":" + answer["pc_id"])
        finally:
            await client.close()


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[int]:
    """A real coturn on 127.0.0.1 with the repository's dev config and a free port."""
    with running_coturn(tmp_path, SECRET) as server:
        yield server.port


@contextlib.asynccontextmanager
async def _relay_server(port: int) -> AsyncIterator[str]:
    async with running_server(
        EchoBackend(),
        turn_urls=(f"turn:127.0.0.1:{port}?transport=udp",),
        turn_secret=SECRET,
        relay_only=True,
    ) as (url, _):
        yield url


async def test_call_through_coturn_relay_only_on_both_sides(coturn: int) -> None:
    async with _relay_server(coturn) as url:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/api/ice-servers") as resp:
            servers = CallClient.ice_servers_from_json((await resp.json())["iceServers"])
        client = CallClient(url, ice_servers=servers, relay_only=True)
        try:
            async with asyncio.timeout(30):
                t0 = time.monotonic()
                answer = await client.connect()
                assert "typ relay" in answer["sdp"] and "typ host" not in answer["sdp"]
                await client.wait_for("bot-ready", 15)
                connect_ms = (time.monotonic() - t0) * 1000
                await client.wait_frames(25, 5)
            assert client.selected_candidate_types() == ("relay", "relay")
            print(f"relay connect {connect_ms:.0f} ms")
        finally:
            await client.close()


async def test_wrong_credentials_do_not_connect(coturn: int) -> None:
    async with _relay_server(coturn) as url:
        bad = [RTCIceServer(f"turn:127.0.0.1:{coturn}", username="1:x", credential="wrong")]
        client = CallClient(url, ice_servers=bad, relay_only=True)
        try:
            async with asyncio.timeout(30):
                # No relay candidate can be allocated, so the offer has none and ICE fails.
                with contextlib.suppress(RuntimeError):
                    await client.connect()
                assert "typ relay" not in client.pc.localDescription.sdp
                with pytest.raises(TimeoutError):
                    await client.wait_for("bot-ready", 5)
            assert client.pc.connectionState != "connected"
        finally:
            await client.close()


async def test_expired_credentials_do_not_connect(coturn: int) -> None:
    async with _relay_server(coturn) as url:
        username, credential = mint(SECRET, "late", -60)
        expired = [
            RTCIceServer(f"turn:127.0.0.1:{coturn}", username=username, credential=credential)
        ]
        client = CallClient(url, ice_servers=expired, relay_only=True)
        try:
            async with asyncio.timeout(30):
                with contextlib.suppress(RuntimeError):
                    await client.connect()
                assert "typ relay" not in client.pc.localDescription.sdp
        finally:
            await client.close()
