"""Which address a request comes from, when reverse proxies stand in front.

``X-Forwarded-For`` is a list every proxy appends the address it saw to; anyone may send it,
so only entries a trusted hop appended mean anything. Two settings, which combine:

- ``--trusted-proxies CIDR`` (repeatable): the header is honoured only when the TCP peer is in
  one of those networks, and the client is the rightmost entry that is *not* a trusted proxy
  (every entry to its right was appended by a proxy of ours; everything to its left is the
  client's own word). A direct caller, not in the list, is its TCP address whatever it sends.
- ``--trust-forwarded-for`` alone (no list): the last entry, from any peer - right only when
  nothing can reach the server except through the proxy. With ``--trusted-proxies`` given it
  adds nothing: the list decides.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from voicegate.netaddr import IPNetwork, ip

__all__ = ["ProxyTrust", "proxy_trust"]


class ProxyTrust:
    """``client(peer, forwarded_for)``: the address a request counts against."""

    def __init__(self, trust_forwarded_for: bool, trusted_proxies: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in trusted_proxies
        )
        self.trust_any = trust_forwarded_for and not self.networks

    def trusted(self, address: str) -> bool:
        parsed = ip(address)
        return parsed is not None and any(
            parsed.version == n.version and parsed in n for n in self.networks
        )

    def client(self, peer: str | None, forwarded_for: str) -> str:
        peer = peer or "unknown"
        if self.trust_any:
            last = forwarded_for.rsplit(",", 1)[-1].strip()
            return last or peer
        if not self.networks or not self.trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",")]
        for hop in reversed(hops):
            if not hop:
                continue
            if ip(hop) is None:
                return peer  # a trusted proxy never writes this: count the request to the hop
            if not self.trusted(hop):
                return hop
        first = next((h for h in hops if h), "")
        return first or peer  # every hop is ours: the leftmost is as far as the list goes


@functools.lru_cache(maxsize=8)
def proxy_trust(trust_forwarded_for: bool, trusted_proxies: tuple[str, ...]) -> ProxyTrust:
    """The ``ProxyTrust`` of a configuration, parsed once (configurations are few and frozen)."""
    return ProxyTrust(trust_forwarded_for, trusted_proxies)
