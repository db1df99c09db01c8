"""What kind of network address a host string names, for the few places that must know:
whether the server listens on loopback only (open dev mode, default ICE addresses), whether a
request's Host header names this machine, and which private range an address falls in (ICE
candidate filtering). One definition, imported by configuration, signaling and media alike; it
imports nothing of voicegate, so every layer may use it."""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = [
    "PRIVATE_NETWORKS",
    "IPAddress",
    "IPNetwork",
    "host_header_is_loopback",
    "ip",
    "is_loopback_host",
    "network",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PRIVATE_NETWORKS: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
"""RFC 1918, carrier-grade NAT (RFC 6598) and IPv6 unique local addresses: reachable only
inside one site, so a stranger's candidate there points at the server's own neighbours."""

_HOST_HEADER: Final = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]@/\s]+))(?::\d{1,5})?$"
)


def ip(host: str) -> IPAddress | None:
    """``host`` as an IP address (an IPv4-mapped IPv6 address as its IPv4 one), else None."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def network(text: str) -> str:
    """A CIDR (or a bare address, a /32 or /128) in its canonical spelling; ValueError for
    anything else. Host bits are dropped (``10.1.2.3/8`` is ``10.0.0.0/8``)."""
    return str(ipaddress.ip_network(text.strip(), strict=False))


network.__name__ = "CIDR network (e.g. 10.0.0.0/8 or 192.0.2.7)"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and any loopback IP address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    address = ip(host)
    return address is not None and address.is_loopback


def host_header_is_loopback(value: str | None) -> bool:
    """True when an HTTP Host header names this machine by a loopback name: ``127.0.0.1``,
    ``localhost`` or ``[::1]``, each optionally with a port. Anything else, including a name
    that merely resolves to loopback (DNS rebinding), is not."""
    if not value:
        return False
    match = _HOST_HEADER.match(value.strip())
    if match is None:
        return False
    return is_loopback_host(match.group("v6") or match.group("name"))
