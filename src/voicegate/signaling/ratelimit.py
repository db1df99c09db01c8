"""Per-client-address rate limit on call offers.

Every accepted offer can open a Bedrock stream, which costs money, so one address may only start
so many per minute. A token bucket per address: ``burst`` offers at once, refilled at
``per_minute``. Memory is bounded: at most ``max_clients`` buckets are kept, least recently used
first out, and IPv6 addresses are keyed by their /64 so one host cannot mint fresh buckets by
walking its own prefix.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

__all__ = ["MAX_CLIENTS", "RateLimiter", "client_key"]

MAX_CLIENTS: Final = 10_000


def client_key(address: str) -> str:
    """The bucket an address counts against: itself for IPv4, its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimiter:
    """``check(address)`` returns 0.0 and spends one offer, or the seconds until one is free."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(burst, 1))
        self.max_clients = max_clients
        self._clock = clock
        # key -> (tokens, time of last update)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, address: str) -> float:
        if not self.enabled:
            return 0.0
        key = client_key(address)
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # most recently used at the end
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> int:
        """Whole seconds for a Retry-After header (never 0 for a refused request)."""
        return max(1, math.ceil(wait))
