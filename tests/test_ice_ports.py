"""Media host candidates inside a configured UDP port range, and an announced address for a
server behind 1:1 NAT (ice.configure_media; aioice has neither, aiortc/aioice#47)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.config import ServeConfig, validate
from voicegate.media import ice
from voicegate.testing.client import CallClient


def _free_range(size: int) -> tuple[int, int]:
    """A run of ``size`` UDP ports that are free right now."""
    for start in range(42000, 60000, 97):
        socks = []
        try:
            for port in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return start, start + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@pytest.fixture
def media_config() -> Iterator[None]:
    yield
    ice.configure_media(None, None)


def _candidates(sdp: str) -> list[list[str]]:
    return [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def _gather() -> tuple[RTCPeerConnection, list[list[str]]]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, _candidates(pc.localDescription.sdp)


async def test_host_candidates_bind_inside_the_range_and_it_can_run_out(media_config: None) -> None:
    low, high = _free_range(3)
    ice.configure_media((low, high), None)
    pcs = []
    try:
        ports = []
        for _ in range(3):
            pc, cands = await _gather()
            pcs.append(pc)
            assert len(cands) == 1
            ports.append(int(cands[0][5]))
        assert sorted(ports) == [low, low + 1, high]
        pc, cands = await _gather()  # every port of the range is taken
        pcs.append(pc)
        assert cands == []
        await pcs[0].close()
        pc, cands = await _gather()  # a port came back
        pcs.append(pc)
        assert [int(c[5]) for c in cands] == [ports[0]]
    finally:
        for pc in pcs:
            await pc.close()


async def test_announced_address_replaces_the_bound_one(media_config: None) -> None:
    ice.configure_media(None, "203.0.113.7")
    pc, cands = await _gather()
    try:
        assert [(c[4], c[7]) for c in cands] == [("203.0.113.7", "host")]
        assert 1024 <= int(cands[0][5]) <= 65535
    finally:
        await pc.close()


async def test_a_call_through_the_port_range(media_config: None) -> None:
    low, high = _free_range(4)
    async with running_server(EchoBackend(), rtc_ports=f"{low}-{high}") as (url, _):
        client = CallClient(url)
        try:
            async with asyncio.timeout(20):
                answer = await client.connect()
                ports = [int(c[5]) for c in _candidates(answer["sdp"])]
                assert ports and all(low <= p <= high for p in ports)
                await client.wait_frames(25, 10)  # media flows through the ranged port
        finally:
            await client.close()


def test_config_validates_the_media_options() -> None:
    base = ServeConfig(web_dir="web")
    assert not [p for p in validate(base) if "rtc_ports" in p or "announced" in p]
    bad = ServeConfig(
        web_dir="web",
        rtc_ports="50000-40000",
        announced_address="nat",
        max_loop_lag_ms=-1,
        model_chunk_ms=30,
    )
    problems = " ".join(validate(bad))
    assert "rtc_ports" in problems and "announced_address" in problems
    assert "max_loop_lag_ms" in problems and "model_chunk_ms" in problems
    assert ice.parse_port_range("40000-40999") == (40000, 40999)
    for text in ("40000", "80-90", "a-b", "5000-70000"):
        with pytest.raises(ValueError):
            ice.parse_port_range(text)
