"""Offers that never connect hold a slot only within bounds: per server (``--max-pending-offers``,
503) and per caller (``--max-pending-per-subject``, 429), both with Retry-After and counted as
refused calls; a call counts as pending only until its media connects, and slots come back when
never-connected calls reach ``--connect-timeout``. Real aiortc peers against the real app."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection

from tests.support.refusals import bearer, refusal
from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.signaling import auth
from voicegate.signaling.app import SESSIONS
from voicegate.signaling.keys import COUNTERS
from voicegate.testing.client import CallClient

SECRET = "pending-offers-secret-0123456789abcd"


async def unreachable_offer() -> dict[str, str]:
    """A real offer with no ICE candidate: the server answers it, and it can never connect
    (what a flood of offers from callers that never complete ICE looks like)."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("rtvi-ai")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    lines = [ln for ln in sdp.split("\r\n") if not ln.startswith(("a=candidate", "a=end-of-c"))]
    return {"sdp": "\r\n".join(lines), "type": "offer"}


async def post(http: aiohttp.ClientSession, url: str, offer: Any, tok: str) -> int:
    async with http.post(f"{url}/api/offer", json=offer, headers=bearer(tok)) as r:
        return r.status


async def no_pending(app: Any) -> None:
    while True:  # the registry has no event for it: ask until so
        if not app[SESSIONS].pending()[0]:
            return
        await asyncio.sleep(0.05)


async def test_offers_that_never_connect_are_bounded_per_caller_and_per_server() -> None:
    async with running_server(
        EchoBackend(),
        auth_secret=SECRET,
        max_calls_per_subject=0,
        max_pending_offers=3,
        max_pending_per_subject=2,
        connect_timeout=2.0,
    ) as (url, app):
        bob = CallClient(url, token=auth.mint(SECRET, 120, subject="bob"))
        carol = CallClient(url, token=auth.mint(SECRET, 120, subject="carol"))
        try:
            async with asyncio.timeout(40), aiohttp.ClientSession() as http:
                await bob.connect()
                await bob.wait_connected(10)
                await no_pending(app)  # a call stops being pending when its media connects
                offer = await unreachable_offer()
                mallory = auth.mint(SECRET, 120, subject="mallory")
                assert await post(http, url, offer, mallory) == 200
                assert await post(http, url, offer, mallory) == 200
                refused = app[COUNTERS]["calls_refused"]
                async with http.post(f"{url}/api/offer", json=offer, headers=bearer(mallory)) as r:
                    await refusal(r, 429, "pending_per_subject")
                    assert int(r.headers["Retry-After"]) > 0
                eve = auth.mint(SECRET, 120, subject="eve")
                assert await post(http, url, offer, eve) == 200
                async with http.post(
                    f"{url}/api/offer", json=offer, headers=bearer(carol.token or "")
                ) as r:
                    await refusal(r, 503, "pending_offers")
                    assert int(r.headers["Retry-After"]) > 0
                assert app[COUNTERS]["calls_refused"] == refused + 2
                # The never-connected calls end at --connect-timeout: the slots come back.
                await no_pending(app)
                await carol.connect()
                await carol.wait_connected(10)
                assert len(app[SESSIONS]) == 2
        finally:
            await bob.close()
            await carol.close()
