"""Which remote ICE candidates the server may be made to send to, and how many.

Every remote candidate makes aioice send STUN checks to its address, from the server. A caller
who lists candidates at addresses of the server's own neighbourhood (its loopback, its private
network, multicast groups, mDNS names resolved on its LAN) turns the gateway into a prober of
places the caller cannot reach itself. ``CandidatePolicy`` keeps only addresses the server
could legitimately reach a caller at, judged by the server's *own* ICE addresses: loopback
candidates only when the server offers loopback itself (a caller on the same machine),
private ranges only when the server has an address in that same range (or the operator
allows them for a LAN deployment). Signaling applies it to the offer's SDP and to trickled
candidates before aiortc sees either.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from aiortc import RTCIceCandidate

from voicegate import netaddr
from voicegate.media.ice.host_addresses import offered_addresses
from voicegate.media.ice.host_candidates import announced_address

__all__ = [
    "MAX_REMOTE_CANDIDATES",
    "CandidatePolicy",
    "candidate_key",
    "candidate_policy",
    "own_addresses",
]

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
    found = offered_addresses()
    announced = announced_address()
    if announced:
        found.append(announced)
    return tuple(found)


def candidate_policy(allow_private: bool = False, allow_mdns: bool = False) -> CandidatePolicy:
    """The policy for this process's ICE addresses as configured now."""
    return CandidatePolicy(own_addresses(), allow_private, allow_mdns)


def candidate_key(candidate: RTCIceCandidate) -> tuple[str, int, str]:
    """What makes two remote candidates the same to aioice: the transport address."""
    return candidate.ip.lower(), candidate.port, candidate.protocol.lower()
