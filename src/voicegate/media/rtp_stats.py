"""One call's RTP figures, digested from aiortc's ``getStats()`` report, sampled periodically.

Owned by media because it reads nothing but aiortc's statistics: the call samples them every
``RTP_SAMPLE_INTERVAL`` seconds (``sample_every``) and publishes the digest; the page's debug
panel and the metrics read it. Imports no other voicegate package, so media stays a leaf.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from aiortc import RTCPeerConnection

__all__ = ["OPUS_CLOCK", "RTP_SAMPLE_INTERVAL", "RtpSample", "rtp_sample", "sample_every"]

RTP_SAMPLE_INTERVAL: Final = 5.0
"""Seconds between per-call ``getStats()`` samples (RTCP reports arrive about every 5 s anyway)."""
OPUS_CLOCK: Final = 48000


@dataclass(slots=True)
class RtpSample:
    """One call's RTP figures from aiortc's ``getStats()`` (RTCP-derived where noted).

    ``inbound_*``: the browser's stream as voicegate receives it. ``outbound_*``: voicegate's
    stream as the browser reports it in RTCP receiver reports (None until the first report)."""

    inbound_packets: int = 0
    inbound_lost: int = 0
    inbound_jitter_s: float | None = None
    outbound_packets_sent: int = 0
    outbound_lost: int | None = None
    outbound_fraction_lost: float | None = None
    outbound_jitter_s: float | None = None
    rtt_s: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)


def rtp_sample(report: Iterable[object]) -> RtpSample:
    """Digest an aiortc ``RTCStatsReport``'s values (audio only) into one ``RtpSample``.

    aiortc reports jitter in RTP timestamp units (Opus: 48 kHz clock) and RTT in seconds."""
    sample = RtpSample()
    for stats in report:
        kind = getattr(stats, "kind", "audio")
        if kind != "audio":
            continue
        match getattr(stats, "type", ""):
            case "inbound-rtp":
                sample.inbound_packets += int(getattr(stats, "packetsReceived", 0) or 0)
                sample.inbound_lost += max(0, int(getattr(stats, "packetsLost", 0) or 0))
                jitter = getattr(stats, "jitter", None)
                if jitter is not None:
                    sample.inbound_jitter_s = float(jitter) / OPUS_CLOCK
            case "outbound-rtp":
                sample.outbound_packets_sent += int(getattr(stats, "packetsSent", 0) or 0)
            case "remote-inbound-rtp":
                lost = getattr(stats, "packetsLost", None)
                if lost is not None:
                    sample.outbound_lost = max(0, int(lost))
                fraction = getattr(stats, "fractionLost", None)
                if fraction is not None:
                    # RTCP carries it as an 8-bit fixed-point fraction (0-255).
                    value = float(fraction)
                    sample.outbound_fraction_lost = value / 256 if value > 1 else value
                jitter = getattr(stats, "jitter", None)
                if jitter is not None:
                    sample.outbound_jitter_s = float(jitter) / OPUS_CLOCK
                rtt = getattr(stats, "roundTripTime", None)
                if rtt is not None and rtt >= 0:
                    sample.rtt_s = float(rtt)
    return sample


async def sample_every(
    pc: RTCPeerConnection, interval: float, on_sample: Callable[[RtpSample], None]
) -> None:
    """Every ``interval`` seconds, digest ``pc.getStats()`` and hand the sample on; returns when
    the transport is gone (cancel to stop earlier)."""
    while True:
        await asyncio.sleep(interval)
        try:
            report = await pc.getStats()
        except Exception:  # a transport torn down under us: the call is ending
            return
        on_sample(rtp_sample(report.values()))
