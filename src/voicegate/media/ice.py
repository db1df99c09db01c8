"""Which local addresses aiortc offers as ICE host candidates: voicegate's one aioice patch.

aioice has no API to choose host-candidate addresses (aiortc/aioice#2, open since 2018): it
enumerates every interface and always leaves out 127.0.0.1. That is wrong for voicegate twice
over. A voicegate bound to 127.0.0.1 must be callable from the same machine even where loopback
is the only interface, and such a server should offer *only* loopback, never the machine's other
addresses. So the module function aioice calls is replaced by one that returns the configured list
(or aioice's own enumeration when nothing is configured). The patch is process-wide, as aioice's
lookup is, and is applied once at start-up by ``configure_host_addresses``.

Below it: the UDP port range and announced address (``configure_media``), and which *remote*
candidates the server may be made to send to (``CandidatePolicy``), judged by these same own
addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aioice.ice
import aioice.turn
import structlog
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from voicegate import netaddr
from voicegate.netaddr import is_loopback_host

log = structlog.get_logger(__name__)

_original: Final[Callable[[bool, bool], list[str]]] = aioice.ice.get_host_addresses
_configured: list[str] | None = None


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _configured is None:
        return _original(use_ipv4, use_ipv6)
    out: list[str] = []
    for address in _configured:
        version = ipaddress.ip_address(address).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            out.append(address)
    return out


def configure_host_addresses(addresses: Sequence[str] | None) -> None:
    """Offer exactly these addresses as host candidates (None: aioice's own enumeration)."""
    global _configured
    if addresses is not None:
        for address in addresses:
            ipaddress.ip_address(address)  # ValueError for anything that is not an IP
    _configured = list(addresses) if addresses is not None else None
    aioice.ice.get_host_addresses = _host_addresses


def default_host_addresses(bind_host: str) -> list[str] | None:
    """Loopback-only for a server bound to loopback; otherwise every interface (None)."""
    if is_loopback_host(bind_host):
        return ["::1"] if bind_host == "::1" else ["127.0.0.1"]
    return None


# -- UDP port range and announced address ----------------------------------------------------
#
# aioice binds every host candidate to a random OS port (``local_addr=(address, 0)``) and has no
# option for a range (aiortc/aioice#47, PR #112 unmerged), so firewalls and containers would have
# to open all of UDP. It also cannot announce an address other than the one bound, which a
# server behind a 1:1 NAT (a cloud VM with an elastic IP) needs. ``configure_media`` replaces
# ``Connection.get_component_candidates`` with one that binds host candidates inside the
# configured range (cycling through it, skipping ports in use) and, when an announced address
# is set, advertises that address (same port: a 1:1 NAT keeps ports) instead of the bound one.
# STUN and TURN gathering stay aioice's own.

_original_gather: Final = aioice.ice.Connection.get_component_candidates
_port_range: tuple[int, int] | None = None
_announced: str | None = None
_cursor = 0


class PortRangeExhausted(OSError):
    pass


def configure_media(port_range: tuple[int, int] | None, announced: str | None) -> None:
    """Bind host candidates within ``port_range`` and announce ``announced`` (None: off)."""
    global _port_range, _announced
    if announced:
        ipaddress.ip_address(announced)
    _port_range = port_range
    _announced = announced or None
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]


async def _bind(connection: aioice.ice.Connection, address: str) -> Any:
    """A datagram endpoint on ``address`` at a free port of the range."""
    global _cursor
    assert _port_range is not None
    first, last = _port_range
    size = last - first + 1
    loop = asyncio.get_running_loop()
    for _ in range(size):
        port = first + _cursor % size
        _cursor += 1
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(connection), local_addr=(address, port)
            )
        except OSError:
            continue
        return protocol
    raise PortRangeExhausted(f"no free UDP port in {first}-{last} on {address}")


async def _get_component_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
) -> list[Candidate]:
    if _port_range is None and _announced is None:
        result: list[Candidate] = await _original_gather(self, component, addresses, timeout)
        return result
    candidates: list[Candidate] = []
    protocols = []
    for address in addresses:
        if _port_range is not None:
            try:
                protocol = await _bind(self, address)
            except PortRangeExhausted as exc:
                log.warning("ice_port_range_exhausted", error=str(exc))
                continue
        else:
            loop = asyncio.get_running_loop()
            try:
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice.ice.StunProtocol(self), local_addr=(address, 0)
                )
            except OSError:
                continue
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        shown = _announced if _announced and _same_family(_announced, host) else host
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", shown),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=shown,
            port=port,
            type="host",
        )
        candidates.append(protocol.local_candidate)
        protocols.append(protocol)
    self._protocols += protocols
    # STUN/TURN: aioice's own code, with no host addresses left for it to bind.
    candidates += await _original_gather(self, component, [], timeout)
    return candidates


def _same_family(a: str, b: str) -> bool:
    return ipaddress.ip_address(a).version == ipaddress.ip_address(b).version


# -- remote candidates: which addresses the server may be made to send to ---------------------
#
# Every remote candidate makes aioice send STUN checks to its address, from the server. A caller
# who lists candidates at addresses of the server's own neighbourhood (its loopback, its private
# network, multicast groups, mDNS names resolved on its LAN) turns the gateway into a prober of
# places the caller cannot reach itself. ``CandidatePolicy`` keeps only addresses the server
# could legitimately reach a caller at, judged by the server's *own* ICE addresses: loopback
# candidates only when the server offers loopback itself (a caller on the same machine),
# private ranges only when the server has an address in that same range (or the operator
# allows them for a LAN deployment). Signaling applies it to the offer's SDP and to trickled
# candidates before aiortc sees either.

MAX_REMOTE_CANDIDATES: Final = 32
"""Distinct remote candidates one connection may name (offer and trickle together)."""


@dataclass(frozen=True, slots=True)
class CandidatePolicy:
    own_addresses: tuple[str, ...] = ()
    allow_private: bool = False
    allow_mdns: bool = False

    def refusal(self, host: str) -> str | None:
        """Why a remote candidate at ``host`` is ignored, or None to use it."""
        if host.lower().endswith(".local"):
            if self.allow_mdns:
                return None
            return "an mDNS (.local) name; the server resolves none (--allow-mdns-candidates)"
        address = netaddr.ip(host)
        if address is None:
            return "not an IP address"
        own = [a for a in (netaddr.ip(o) for o in self.own_addresses) if a is not None]
        if address.is_unspecified or address in _THIS_NETWORK:
            return "an unspecified address"
        if address.is_multicast:
            return "a multicast address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_loopback:
            if any(a.is_loopback for a in own):
                return None
            return "a loopback address, and the server's ICE addresses are not loopback"
        if (address.version == 4 and address.is_reserved) or address == _BROADCAST:
            return "a reserved address"
        for network in netaddr.PRIVATE_NETWORKS:
            if address in network:
                if self.allow_private or any(a in network for a in own):
                    return None
                return (
                    f"a private address ({network}) in no network of the server's "
                    "(--allow-private-candidates for LAN deployments)"
                )
        return None


_THIS_NETWORK: Final = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST: Final = ipaddress.ip_address("255.255.255.255")


def own_addresses() -> tuple[str, ...]:
    """The addresses this process offers as ICE host candidates (configured, else every
    interface's), plus the announced one."""
    found = list(_configured) if _configured is not None else _original(True, True)
    if _announced:
        found.append(_announced)
    return tuple(found)


def candidate_policy(allow_private: bool = False, allow_mdns: bool = False) -> CandidatePolicy:
    """The policy for this process's ICE addresses as configured now."""
    return CandidatePolicy(own_addresses(), allow_private, allow_mdns)


def candidate_key(candidate: RTCIceCandidate) -> tuple[str, int, str]:
    """What makes two remote candidates the same to aioice: the transport address."""
    return candidate.ip.lower(), candidate.port, candidate.protocol.lower()


@dataclass(frozen=True, slots=True)
class FilteredSdp:
    sdp: str
    keys: frozenset[tuple[str, int, str]]
    """Every distinct candidate the SDP named, used or not (they count against the limit)."""
    ignored: tuple[tuple[str, str], ...]
    """(address, reason) of each candidate left out."""


def filter_sdp(sdp: str, policy: CandidatePolicy) -> FilteredSdp:
    """``sdp`` without the ``a=candidate`` lines ``policy`` refuses. Lines that do not parse
    are left for aiortc's own parser to refuse."""
    lines = sdp.splitlines(keepends=True)
    kept: list[str] = []
    keys: set[tuple[str, int, str]] = set()
    ignored: dict[tuple[str, int, str], tuple[str, str]] = {}
    for line in lines:
        if line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line.strip().removeprefix("a=candidate:"))
            except (ValueError, IndexError, KeyError, AssertionError):
                kept.append(line)
                continue
            key = candidate_key(candidate)
            keys.add(key)
            reason = policy.refusal(candidate.ip)
            if reason is not None:
                ignored[key] = (candidate.ip, reason)
                continue
        kept.append(line)
    return FilteredSdp("".join(kept), frozenset(keys), tuple(ignored.values()))
