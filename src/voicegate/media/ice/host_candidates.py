"""Where ICE host candidates bind and which address they announce: an aioice patch.

aioice binds every host candidate to a random OS port (``local_addr=(address, 0)``) and has no
option for a range (aiortc/aioice#47, PR #112 unmerged), so firewalls and containers would have
to open all of UDP. It also cannot announce an address other than the one bound, which a
server behind a 1:1 NAT (a cloud VM with an elastic IP) needs. ``configure_host_candidates``
replaces ``Connection.get_component_candidates`` with one that binds host candidates inside the
configured range (cycling through it, skipping ports in use) and, when an announced address
is set, advertises that address (same port: a 1:1 NAT keeps ports) instead of the bound one.
STUN and TURN gathering stay aioice's own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, Final

import aioice.ice
import aioice.turn
import structlog
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

__all__ = ["PortRangeExhausted", "announced_address", "configure_host_candidates"]

log = structlog.get_logger(__name__)

_original_gather: Final = aioice.ice.Connection.get_component_candidates
_port_range: tuple[int, int] | None = None
_announced: str | None = None
_cursor = 0


class PortRangeExhausted(OSError):
    """Every port of the range is in use on an address: that address gets no host candidate."""


def announced_address() -> str | None:
    """The address announced instead of the bound one (a 1:1 NAT), or None."""
    return _announced


def configure_host_candidates(port_range: tuple[int, int] | None, announced: str | None) -> None:
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
