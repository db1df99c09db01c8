"""A bounded outgoing queue for one call's data channel.

aiortc queues whatever ``RTCDataChannel.send`` is given until the peer's SCTP acknowledges it,
without a bound: a caller that stops acknowledging (while still sending requests that are
answered) grows the worker's memory until the call ends, and past it. Here at most
``HIGH_WATER_BYTES`` wait in aiortc's queue (its ``bufferedAmount``); further messages wait in
this queue, at most ``MAX_HELD_BYTES``. Beyond that the oldest non-essential message (anything
but ``bot-ready`` and ``error``) is dropped, and counted; a channel still over its bound
``OVERFLOW_END_S`` after the first drop means a peer that does not read, and the call is ended
(``on_overflow``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final

from aiortc.rtcdatachannel import RTCDataChannel

__all__ = ["HIGH_WATER_BYTES", "MAX_HELD_BYTES", "OVERFLOW_END_S", "ChannelQueue"]

HIGH_WATER_BYTES: Final = 64 * 1024
"""Bytes let into aiortc's own queue; more waits here until it drains below half of this."""
MAX_HELD_BYTES: Final = 256 * 1024
"""Bytes held here, beyond which the oldest non-essential messages are dropped."""
OVERFLOW_END_S: Final = 10.0
"""A channel over its bound this long after it first dropped a message ends the call."""
_ESSENTIAL: Final = ('"type":"bot-ready"', '"type":"error"')


def _essential(text: str) -> bool:
    head = text[:64]  # rtvi.message() writes label, then type, first
    return any(marker in head for marker in _ESSENTIAL)


class ChannelQueue:
    def __init__(
        self,
        channel: RTCDataChannel,
        on_drop: Callable[[], None],
        on_overflow: Callable[[], None],
    ) -> None:
        self.channel = channel
        self._held: deque[str] = deque()
        self._held_bytes = 0
        self._on_drop = on_drop
        self._on_overflow = on_overflow
        self._over_since: float | None = None
        self._overflowed = False
        channel.bufferedAmountLowThreshold = HIGH_WATER_BYTES // 2
        channel.on("bufferedamountlow", self._drain)

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def send(self, text: str) -> None:
        if self.channel.readyState != "open":
            return
        if not self._held and self.channel.bufferedAmount < HIGH_WATER_BYTES:
            self.channel.send(text)
            return
        self._held.append(text)
        self._held_bytes += len(text)
        while self._held_bytes > MAX_HELD_BYTES and self._held:
            self._drop_one()
        self._check_overflow()

    def _drop_one(self) -> None:
        victim = next((m for m in self._held if not _essential(m)), self._held[0])
        self._held.remove(victim)
        self._held_bytes -= len(victim)
        self._on_drop()
        if self._over_since is None:
            self._over_since = time.monotonic()

    def _check_overflow(self) -> None:
        since = self._over_since
        if since is None or self._overflowed or time.monotonic() - since < OVERFLOW_END_S:
            return
        self._overflowed = True
        self._held.clear()
        self._held_bytes = 0
        self._on_overflow()

    def _drain(self) -> None:
        while (
            self._held
            and self.channel.readyState == "open"
            and self.channel.bufferedAmount < HIGH_WATER_BYTES
        ):
            text = self._held.popleft()
            self._held_bytes -= len(text)
            self.channel.send(text)
        if not self._held:
            self._over_since = None  # drained: the peer reads again
