"""A lossy, jittery link at the load-test caller's own socket, for machines without ``netem``.

Drops and delays this process's RTP (never RTCP) in both directions at aiortc's DTLS transport,
from a seeded random generator, so a run is repeatable. Process-wide: every peer connection of
the process shares the link, so a load test with impairment must not share its process with the
gateway under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport


def _is_rtcp(data: bytes) -> bool:
    return len(data) > 1 and 192 <= data[1] <= 223


def impair(loss: float, jitter_ms: float, delay_ms: float = 0.0, seed: int = 5) -> None:
    """Drop ``loss`` (0-1) of RTP packets each way and delay the rest by ``delay_ms`` plus a
    uniform 0-``jitter_ms``. Nothing changes when all three are zero."""
    if loss <= 0 and jitter_ms <= 0 and delay_ms <= 0:
        return
    rng = random.Random(seed)
    pending: set[asyncio.Future[Any]] = set()  # delayed packets in flight (kept referenced)
    send, handle = RTCDtlsTransport._send_rtp, RTCDtlsTransport._handle_rtp_data

    def keep(future: asyncio.Future[Any]) -> None:
        pending.add(future)
        future.add_done_callback(pending.discard)

    def later(coro: Any) -> None:
        wait = (delay_ms + rng.uniform(0, jitter_ms)) / 1000
        if wait <= 0:
            keep(asyncio.ensure_future(coro))
            return

        async def run() -> None:
            await asyncio.sleep(wait)
            with contextlib.suppress(Exception):
                await coro

        keep(asyncio.ensure_future(run()))

    async def send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
        if _is_rtcp(data):
            await send(self, data)
        elif rng.random() >= loss:
            later(send(self, data))

    async def handle_rtp(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int) -> None:
        if _is_rtcp(data):
            await handle(self, data, arrival_time_ms)
        elif rng.random() >= loss:
            later(handle(self, data, arrival_time_ms))

    RTCDtlsTransport._send_rtp = send_rtp  # type: ignore[method-assign]
    RTCDtlsTransport._handle_rtp_data = handle_rtp  # type: ignore[method-assign]
