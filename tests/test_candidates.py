"""Remote ICE candidates cannot make the server probe its own neighbourhood.

A real aiortc caller lists, beside its own candidates, candidates at a private address of this
machine (with a UDP socket listening there), at loopback (another listening socket: the
control), and at link-local, multicast, unspecified and mDNS addresses. The server on loopback
checks the loopback one (its own ICE addresses are loopback) and sends not one packet to the
private one, unless --allow-private-candidates; the rest never reach aioice. Offer and PATCH
together name at most 32 candidates, and PATCH is rate-limited like offers.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from tests.support.components import require
from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.media import ice
from voicegate.media.ice import CandidatePolicy
from voicegate.netaddr import PRIVATE_NETWORKS
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient

TOP = 2147483647  # above every real candidate's priority: these pairs are checked first


@pytest.mark.parametrize(
    ("host", "own", "allowed"),
    [
        ("203.0.113.5", ("127.0.0.1",), True),
        ("127.0.0.1", ("127.0.0.1",), True),
        ("127.0.0.1", ("198.51.100.7",), False),
        ("::1", ("198.51.100.7",), False),
        ("::ffff:127.0.0.1", ("198.51.100.7",), False),
        ("10.1.2.3", ("127.0.0.1",), False),
        ("10.1.2.3", ("10.9.9.9",), True),  # the server's own network
        ("192.168.1.4", ("10.9.9.9",), False),
        ("100.64.0.9", ("127.0.0.1",), False),
        ("fd00::9", ("::1",), False),
        ("169.254.1.1", ("169.254.9.9",), False),
        ("fe80::1", ("127.0.0.1",), False),
        ("224.0.0.251", ("127.0.0.1",), False),
        ("ff02::fb", ("127.0.0.1",), False),
        ("0.0.0.0", ("127.0.0.1",), False),
        ("0.1.2.3", ("127.0.0.1",), False),
        ("::", ("127.0.0.1",), False),
        ("255.255.255.255", ("127.0.0.1",), False),
        ("240.0.0.1", ("127.0.0.1",), False),
        ("abc.local", ("127.0.0.1",), False),
        ("example.com", ("127.0.0.1",), False),
    ],
)
def test_policy(host: str, own: tuple[str, ...], allowed: bool) -> None:
    assert (CandidatePolicy(own).refusal(host) is None) is allowed


def test_policy_flags() -> None:
    assert CandidatePolicy(("127.0.0.1",), allow_private=True).refusal("10.1.2.3") is None
    assert CandidatePolicy(("127.0.0.1",), allow_mdns=True).refusal("abc.local") is None
    assert CandidatePolicy(("127.0.0.1",), allow_private=True).refusal("169.254.1.1")


def _private_address() -> str:
    """An address of this machine in a private range (the prober's target)."""
    for address in ice._original(True, True):
        if any(ipaddress.ip_address(address) in n for n in PRIVATE_NETWORKS):
            return str(address)
    require(False, "this machine has no address in a private range to listen on")
    raise AssertionError


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets = 0
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets += 1
        self.arrived.set()


@asynccontextmanager
async def sink(host: str) -> AsyncIterator[tuple[Sink, int]]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Sink, local_addr=(host, 0)
    )
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def _inject(sdp: str, lines: list[str]) -> str:
    """``lines`` added to the first media section, before its first candidate; without
    end-of-candidates, so that trickled ones still count (as from a browser)."""
    out: list[str] = []
    done = False
    for line in sdp.splitlines():
        if not done and line.startswith("a=candidate:"):
            out += lines
            done = True
        if line != "a=end-of-candidates":
            out.append(line)
    assert done
    return "\r\n".join(out) + "\r\n"


def _candidate(n: int, host: str, port: int) -> str:
    return f"a=candidate:{n} 1 udp {TOP - n} {host} {port} typ host"


async def _offer(url: str, client: CallClient, extra: list[str]) -> dict[str, Any]:
    client.pc.addTrack(client.mic)
    await client.pc.setLocalDescription(await client.pc.createOffer())
    sdp = _inject(client.pc.localDescription.sdp, extra)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/offer", json={"sdp": sdp, "type": "offer"}) as r:
            answer: dict[str, Any] = await r.json()
            assert r.status == 200, answer
    client.pc_id = answer["pc_id"]
    await client.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return answer


def _remote_hosts(app: Any, pc_id: str) -> set[str]:
    transport = app[SESSIONS][pc_id].pc.getTransceivers()[0].receiver.transport.transport
    return {c.ip for c in transport.getRemoteCandidates()}


DROPPED = ["169.254.10.10", "224.0.0.251", "0.0.0.0", "fe80::1", "4bd2c3a0-5c1e.local"]


@pytest.mark.parametrize("allow_private", [False, True], ids=["default", "allow-private"])
async def test_no_packet_goes_to_refused_candidates(allow_private: bool) -> None:
    private = _private_address()
    try:
        async with (
            running_server(
                EchoBackend(),
                ice_addresses=("127.0.0.1", "::1"),  # a loopback server with both families
                allow_private_candidates=allow_private,
            ) as (url, app),
            sink(private) as (private_sink, private_port),
            sink("127.0.0.1") as (control, control_port),
        ):
            client = CallClient(url)
            try:
                extra = [
                    _candidate(1, private, private_port),
                    _candidate(2, "127.0.0.1", control_port),
                ]
                extra += [_candidate(3 + i, host, 9) for i, host in enumerate(DROPPED)]
                async with asyncio.timeout(30):
                    answer = await _offer(url, client, extra)
                    await client.wait_for("bot-ready", 15)
                    ignored = {c["address"]: c["reason"] for c in answer["ignored_candidates"]}
                    expected = set(DROPPED) | (set() if allow_private else {private})
                    assert set(ignored) == expected, ignored
                    assert "private" in ignored.get(private, "private")
                    assert "mDNS" in ignored["4bd2c3a0-5c1e.local"]
                    remote = _remote_hosts(app, client.pc_id)
                    assert "127.0.0.1" in remote and not remote & set(DROPPED)
                    if allow_private:
                        await private_sink.arrived.wait()  # the same test sees probes arrive
                    else:
                        await control.arrived.wait()  # checks did run, first to the control
                        await asyncio.sleep(0.5)  # a wait for packets that must not come
                        assert private_sink.packets == 0
                        assert private not in remote
                    # Trickled candidates pass the same filter.
                    patch = {
                        "pc_id": client.pc_id,
                        "candidates": [
                            {"candidate": _candidate(20, private, 9)[2:], "sdp_mid": "0"},
                            {"candidate": _candidate(21, "abc.local", 9)[2:], "sdp_mid": "0"},
                            {"candidate": _candidate(22, "203.0.113.8", 9)[2:], "sdp_mid": "0"},
                        ],
                    }
                    async with aiohttp.ClientSession() as http:
                        async with http.patch(f"{url}/api/offer", json=patch) as r:
                            assert r.status == 200
                            ignored = {c["address"] for c in (await r.json())["ignored"]}
                    assert ignored == ({"abc.local"} if allow_private else {"abc.local", private})
                    assert "203.0.113.8" in _remote_hosts(app, client.pc_id)
            finally:
                await client.close()
    finally:
        ice.configure_host_addresses(["127.0.0.1"])


async def test_at_most_32_candidates_per_call() -> None:
    async with running_server(EchoBackend()) as (url, app):
        many = [_candidate(i, f"198.51.100.{i}", 9) for i in range(1, 34)]
        client = CallClient(url)
        try:
            with pytest.raises(AssertionError, match="too_many_candidates"):
                await _offer(url, client, many)
            assert not app[SESSIONS]
        finally:
            await client.close()
        client = CallClient(url)
        try:
            async with asyncio.timeout(20), aiohttp.ClientSession() as http:
                await _offer(url, client, many[:20])  # plus the caller's own
                own = len(ice.filter_sdp(client.pc.localDescription.sdp, CandidatePolicy()).keys)
                room = 32 - 20 - own

                def patch(first: int, count: int) -> dict[str, Any]:
                    lines = [
                        _candidate(i, f"203.0.113.{i}", 9)[2:] for i in range(first, first + count)
                    ]
                    return {
                        "pc_id": client.pc_id,
                        "candidates": [{"candidate": c, "sdp_mid": "0"} for c in lines],
                    }

                async with http.patch(f"{url}/api/offer", json=patch(1, room)) as r:
                    assert r.status == 200
                async with http.patch(f"{url}/api/offer", json=patch(1, room)) as r:
                    assert r.status == 200  # the same candidates again: nothing new
                async with http.patch(f"{url}/api/offer", json=patch(100, 1)) as r:
                    assert r.status == 400
                    assert (await r.json())["reason"] == "too_many_candidates"
                assert "203.0.113.100" not in _remote_hosts(app, client.pc_id)
        finally:
            await client.close()


async def test_patch_is_rate_limited_like_offers() -> None:
    async with running_server(EchoBackend(), offer_rate=1, offer_burst=2) as (url, _):
        body = {"pc_id": "pc-none", "candidates": []}
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(3):
                async with http.patch(f"{url}/api/offer", json=body) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        assert int(r.headers["Retry-After"]) >= 1
                        assert (await r.json())["reason"] == "rate_limited"
            assert statuses == [404, 404, 429]
            # Offers have their own bucket.
            async with http.post(f"{url}/api/offer", json={"sdp": "x", "type": "offer"}) as r:
                assert r.status == 400
