"""Which local addresses aiortc offers as ICE host candidates: an aioice patch.

aioice has no API to choose host-candidate addresses (aiortc/aioice#2, open since 2018): it
enumerates every interface and always leaves out 127.0.0.1. That is wrong for voicegate twice
over. A voicegate bound to 127.0.0.1 must be callable from the same machine even where loopback
is the only interface, and such a server should offer *only* loopback, never the machine's other
addresses. So the module function aioice calls is replaced by one that returns the configured list
(or aioice's own enumeration when nothing is configured). The patch is process-wide, as aioice's
lookup is, and is applied once at start-up by ``configure_host_addresses``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Final

import aioice.ice

from voicegate.netaddr import is_loopback_host

__all__ = ["configure_host_addresses", "default_host_addresses", "offered_addresses"]

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


def offered_addresses() -> list[str]:
    """The addresses host candidates are gathered on now: the configured ones, else every
    interface's (IPv4 and IPv6)."""
    return list(_configured) if _configured is not None else _original(True, True)
