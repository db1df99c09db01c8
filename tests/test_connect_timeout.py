"""Calls that never connect hold no slots: the connect timeout, and offers sending no audio."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.support.metrics import scrape, value
from tests.support.server import running_server
from voicegate.backends.base import BackendStream
from voicegate.backends.echo import EchoBackend, EchoStream
from voicegate.call.sdp import OfferError, check_offer
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient


class _TrackedStream(EchoStream):
    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()

    async def close(self) -> None:
        self.closed.set()
        await super().close()


class TrackedEcho(EchoBackend):
    """The echo brain, keeping each model stream it opens to see whether it was closed."""

    def __init__(self) -> None:
        self.streams: list[_TrackedStream] = []

    async def open(self) -> BackendStream:
        stream = _TrackedStream()
        self.streams.append(stream)
        return stream


async def _offer(direction: str = "sendrecv", strip_candidates: bool = False) -> str:
    """A real aiortc offer with a microphone-like audio section and the RTVI data channel."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction=direction)
        pc.createDataChannel("rtvi")
        await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
    finally:
        await pc.close()
    if strip_candidates:
        # No candidate to check against and nobody who will apply the answer: ICE never starts.
        sdp = re.sub(r"a=(candidate:[^\r\n]*|end-of-candidates)\r\n", "", sdp)
        assert "a=candidate" not in sdp
    return sdp


async def _post(http: aiohttp.ClientSession, url: str, sdp: str) -> tuple[int, Any]:
    async with asyncio.timeout(20):
        async with http.post(f"{url}/api/offer", json={"sdp": sdp, "type": "offer"}) as resp:
            return resp.status, await resp.json()


async def test_a_call_that_never_connects_is_freed_with_its_model_stream() -> None:
    backend = TrackedEcho()
    async with (
        running_server(backend, connect_timeout=1.0, max_sessions=1) as (url, app),
        aiohttp.ClientSession() as http,
    ):
        status, answer = await _post(http, url, await _offer(strip_candidates=True))
        assert status == 200, answer
        session = app[SESSIONS][answer["pc_id"]]
        assert len(backend.streams) == 1 and not backend.streams[0].closed.is_set()
        async with asyncio.timeout(10):
            await session.closed.wait()
            await backend.streams[0].closed.wait()
        assert session.close_reason == "connect-timeout"
        assert session.conversation.ended.is_set()
        assert answer["pc_id"] not in app[SESSIONS]
        s = await scrape(url)
        assert value(s, "voicegate_calls_ended_total", reason="connect-timeout") == 1
        assert value(s, "voicegate_calls_active") == 0
        # The only slot is free again: a real call gets in, connects and is not cut off.
        client = CallClient(url)
        try:
            async with asyncio.timeout(30):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                live = app[SESSIONS][client.pc_id]
                await asyncio.sleep(1.5)  # longer than the connect timeout
                assert not live.closed.is_set()
                assert await client.hangup() == 204
        finally:
            await client.close()
        s = await scrape(url)
        assert value(s, "voicegate_calls_ended_total", reason="connect-timeout") == 1
        assert value(s, "voicegate_calls_ended_total", reason="hangup") == 1


@pytest.mark.parametrize("direction", ["recvonly", "inactive"])
async def test_an_offer_that_sends_no_audio_is_refused(direction: str) -> None:
    backend = TrackedEcho()
    async with running_server(backend) as (url, app), aiohttp.ClientSession() as http:
        status, body = await _post(http, url, await _offer(direction))
        assert status == 400
        assert direction in body["error"] and "sendrecv or sendonly" in body["error"]
        assert not app[SESSIONS] and not backend.streams  # no slot, no model stream
        s = await scrape(url)
        assert value(s, "voicegate_offers_total", status="400") == 1


async def test_a_sendonly_offer_is_a_call() -> None:
    async with (
        running_server(TrackedEcho()) as (url, app),
        aiohttp.ClientSession() as http,
    ):
        status, answer = await _post(http, url, await _offer("sendonly"))
        assert status == 200, answer
        assert "a=recvonly" in answer["sdp"]
        await app[SESSIONS][answer["pc_id"]].close("hangup")


async def test_session_level_direction_is_inherited() -> None:
    sdp = await _offer()
    check_offer(sdp)
    # The same offer with its direction moved to the session level (RFC 4566 6): still checked.
    body = sdp.replace("a=sendrecv\r\n", "")
    head, sep, media = body.partition("m=")
    with pytest.raises(OfferError, match="recvonly"):
        check_offer(head + "a=recvonly\r\n" + sep + media)
    check_offer(head + "a=sendonly\r\n" + sep + media)


def test_connect_timeout_option() -> None:
    from voicegate.config import ConfigError, resolve

    assert resolve(None, env={}).connect_timeout == 15.0
    assert resolve(None, env={"VOICEGATE_CONNECT_TIMEOUT": "2.5"}).connect_timeout == 2.5
    for bad in ("0", "1000", "soon"):
        with pytest.raises(ConfigError) as err:
            resolve(None, env={"VOICEGATE_CONNECT_TIMEOUT": bad})
        assert any("connect" in p.lower() for p in err.value.problems)
