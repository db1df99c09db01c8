"""GET /metrics: the exposition format, and that real calls move the right numbers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
)
from prometheus_client import CollectorRegistry, Gauge

from tests.support.metrics import parse, scrape, value
from tests.support.server import running_server
from voicegate.backends.base import BackendStream, ServiceUnavailable, Throttled
from voicegate.backends.echo import EchoBackend
from voicegate.backends.inprocess import InProcessStream
from voicegate.call import session as peer
from voicegate.media.rtp_stats import RtpSample, rtp_sample
from voicegate.observability.exposition import MAX_SERIES, Counter, Histogram, render
from voicegate.observability.metrics import GatewayMetrics
from voicegate.testing.client import CallClient, load_wav

# -- the format ------------------------------------------------------------------------------


def test_exposition_format_counters_gauges_histograms() -> None:
    registry = CollectorRegistry()
    c = Counter(registry, "x_total", "things", ["kind"], known=[("declared",)])
    c.inc(kind='we"ird\\\nvalue')
    c.inc(2, kind="plain")
    with pytest.raises(ValueError):
        c.inc(-1, kind="plain")
    with pytest.raises(ValueError):
        c.inc(other="label")
    Gauge("y", "level", registry=registry).set_function(lambda: 2.5)
    h = Histogram(registry, "z_seconds", "latency", (0.1, 1.0), ["stage"])
    for v in (0.05, 0.5, 0.5, 7.0):
        h.observe(v, stage="total")
    h.observe(float("nan"), stage="total")  # ignored, never poisons the sum
    text = render(registry)
    assert "_created" not in text  # /metrics never had OpenMetrics' created series
    s = parse(text)
    assert value(s, "x_total", kind='we\\"ird\\\\\\nvalue') == 1
    assert value(s, "x_total", kind="plain") == 2
    assert ("x_total", frozenset({("kind", "declared")})) in s  # declared: there at zero
    assert value(s, "y") == 2.5
    assert value(s, "z_seconds_bucket", stage="total", le="0.1") == 1
    assert value(s, "z_seconds_bucket", stage="total", le="1.0") == 3
    assert value(s, "z_seconds_bucket", stage="total", le="+Inf") == 4
    assert value(s, "z_seconds_sum", stage="total") == pytest.approx(8.05)


def test_label_sets_are_bounded() -> None:
    registry = CollectorRegistry()
    c = Counter(registry, "many_total", "one series per kind", ["kind"])
    for i in range(MAX_SERIES * 3):
        c.inc(kind=f"k{i}")
    s = parse(render(registry))
    series = {labels: v for (name, labels), v in s.items() if name == "many_total"}
    assert len(series) == MAX_SERIES + 1
    assert value(s, "many_total", kind="other") == MAX_SERIES * 2
    assert sum(series.values()) == MAX_SERIES * 3  # nothing is lost, only folded


def test_apps_do_not_share_numbers() -> None:
    """One registry per app: two servers in one process count apart."""
    a, b = GatewayMetrics(), GatewayMetrics()
    a.offers.inc(status="200")
    assert a.sample("voicegate_offers_total", status="200") == 1
    assert b.sample("voicegate_offers_total", status="200") == 0


def test_rtp_sample_from_aiortc_stats_objects() -> None:
    from datetime import datetime

    now = datetime.now()
    report = [
        RTCInboundRtpStreamStats(
            timestamp=now, type="inbound-rtp", id="i", ssrc=1, kind="audio", transportId="t",
            packetsReceived=500, packetsLost=3, jitter=480,
        ),
        RTCOutboundRtpStreamStats(
            timestamp=now, type="outbound-rtp", id="o", ssrc=2, kind="audio", transportId="t",
            packetsSent=490, bytesSent=1, trackId="x",
        ),
        RTCRemoteInboundRtpStreamStats(
            timestamp=now, type="remote-inbound-rtp", id="r", ssrc=2, kind="audio",
            transportId="t", packetsReceived=480, packetsLost=10, jitter=96,
            roundTripTime=0.042, fractionLost=64,
        ),
    ]  # fmt: skip
    sample = rtp_sample(report)
    assert sample.inbound_packets == 500 and sample.inbound_lost == 3
    assert sample.inbound_jitter_s == pytest.approx(0.01)
    assert sample.outbound_packets_sent == 490 and sample.outbound_lost == 10
    assert sample.outbound_jitter_s == pytest.approx(0.002)
    assert sample.rtt_s == pytest.approx(0.042)
    assert sample.outbound_fraction_lost == pytest.approx(0.25)

    m = GatewayMetrics()
    m.observe_rtp("a", sample)
    m.observe_rtp("a", sample)  # same totals again: counters do not double
    later = RtpSample(inbound_packets=600, inbound_lost=2, outbound_packets_sent=590)
    m.observe_rtp("a", later)  # a lost count going down (duplicates) never makes counters fall
    restarted = RtpSample(inbound_packets=50, outbound_packets_sent=40)
    m.observe_rtp("a", restarted)  # same call id, new connection: its packets count from 0
    s = parse(m.render())
    assert value(s, "voicegate_rtp_packets_total", direction="inbound") == 650
    assert value(s, "voicegate_rtp_packets_lost_total", direction="inbound") == 3
    assert value(s, "voicegate_rtp_packets_lost_total", direction="outbound") == 10
    assert value(s, "voicegate_rtp_rtt_seconds_count") == 2


def test_conversation_stats_are_read_defensively() -> None:
    from dataclasses import dataclass, field

    @dataclass
    class Stats:  # what another issue may add: new ints are exported, the rest ignored
        barge_ins: int = 1
        renewals: int = 2
        handover_gap_ms: float = 12.5
        history: list[str] = field(default_factory=list)
        closing: bool = True
        weird: object = None

    live = [Stats()]
    m = GatewayMetrics()
    m.live_stats(lambda: live)
    m.call_started("c1")
    m.call_ended("c1", "error:throttled", 12.0, Stats(renewals=5))
    m.call_ended("never-accepted", "bad-offer", 0.1, Stats(renewals=100))
    s = parse(m.render())
    assert value(s, "voicegate_conversation_renewals_total") == 7
    assert value(s, "voicegate_conversation_barge_ins_total") == 2
    assert value(s, "voicegate_conversation_handover_gap_ms_total") == 25
    for ignored in ("history", "closing", "weird"):
        assert not any(name == f"voicegate_conversation_{ignored}_total" for name, _ in s)
    assert value(s, "voicegate_calls_ended_total", reason="error") == 1
    assert value(s, "voicegate_call_duration_seconds_count") == 1


# -- real calls ----------------------------------------------------------------------------


async def test_a_call_moves_the_metrics(
    speech_wav: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer, "RTP_SAMPLE_INTERVAL", 0.5)
    speech = load_wav(speech_wav("hello there, how are the metrics today"))
    async with running_server(EchoBackend()) as (url, _app):
        before = await scrape(url)
        assert value(before, "voicegate_calls_active") == 0
        assert value(before, "voicegate_process_resident_memory_bytes") > 10_000_000
        assert value(before, "voicegate_process_open_fds") > 0
        client = CallClient(url)
        try:
            async with asyncio.timeout(40):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                client.mic.play(speech)
                await client.wait_for(
                    "server-message", 20, lambda m: m["data"].get("kind") == "turn-latency"
                )
                # RTCP needs a sender report out and a receiver report back before RTT exists.
                stats = await client.wait_for(
                    "server-message",
                    15,
                    lambda m: (
                        m["data"].get("kind") == "rtp-stats"
                        and m["data"].get("rtt_s") is not None
                        and (m["data"].get("inbound_packets") or 0) > 50
                    ),
                )
                during = await scrape(url)
            assert stats["data"]["inbound_packets"] > 50
            assert stats["data"]["inbound_jitter_s"] is not None
            assert value(during, "voicegate_calls_active") == 1
            assert value(during, "voicegate_calls_total") == 1
            for stage in ("total", "model", "playout"):
                assert value(during, "voicegate_turn_latency_seconds_count", stage=stage) == 1
            total = value(during, "voicegate_turn_latency_seconds_sum", stage="total")
            model = value(during, "voicegate_turn_latency_seconds_sum", stage="model")
            assert 0 < model <= total < 10
            assert value(during, "voicegate_rtp_packets_total", direction="inbound") > 50
            assert value(during, "voicegate_rtp_packets_total", direction="outbound") > 50
            assert value(during, "voicegate_rtp_jitter_seconds_count", direction="inbound") >= 1
            assert value(during, "voicegate_rtp_rtt_seconds_count") >= 1
            assert 0 < value(during, "voicegate_rtp_rtt_seconds_sum") < 1  # loopback
            assert value(during, "voicegate_event_loop_lag_seconds_count") >= 1
            # A call allocates enough for the collector to run on its own: every run is timed.
            assert value(during, "voicegate_gc_pause_seconds_count", generation="0") >= 1
            assert value(during, "voicegate_conversation_audio_chunks_sent_total") > 0
            assert await client.hangup() == 204
        finally:
            await client.close()
        after = await scrape(url)
        assert value(after, "voicegate_calls_active") == 0
        assert value(after, "voicegate_calls_ended_total", reason="hangup") == 1
        assert value(after, "voicegate_offers_total", status="200") == 1
        assert value(after, "voicegate_call_duration_seconds_count") == 1
        # Counters of ended calls are kept, not lost with the call.
        sent = value(after, "voicegate_conversation_audio_chunks_sent_total")
        assert sent >= value(during, "voicegate_conversation_audio_chunks_sent_total")


class _BargeThenFail(InProcessStream):
    """Talks, is interrupted (Nova Sonic's barge-in signals), then the service throttles."""

    async def on_audio_start(self) -> None:
        self.spawn(self._script())

    async def _script(self) -> None:
        await asyncio.sleep(0.3)
        cid = await self.begin_audio()
        tone = (8000 * np.sin(np.arange(24000) * 2 * np.pi * 440 / 24000)).astype(np.int16)
        await self.emit_audio(cid, tone.tobytes())
        await asyncio.sleep(0.3)
        await self.emit_interrupted(cid)
        await self.end_completion("INTERRUPTED")
        await asyncio.sleep(0.2)
        await self.fail(Throttled("Too many requests"))


class _ScriptedBackend:
    name = "scripted"
    input_rate = 16000

    def __init__(self, fail_open: bool = False) -> None:
        self.fail_open = fail_open
        self.opened = 0

    async def open(self) -> BackendStream:
        self.opened += 1
        if self.fail_open:
            raise ServiceUnavailable("the model is not available right now")
        if self.opened > 1:  # reconnect attempts after the failure are throttled too
            raise Throttled("Too many requests")
        return _BargeThenFail()

    def credentials_expiration(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


async def test_barge_ins_and_backend_errors_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    from voicegate.conversation import ContinuationSettings
    from voicegate.signaling import app as signaling_app

    # Throttled reconnects are backed off over seconds by default; milliseconds here.
    fast = functools.partial(
        ContinuationSettings, throttle_backoff_s=0.02, throttle_backoff_max_s=0.05
    )
    monkeypatch.setattr(signaling_app, "ContinuationSettings", fast)
    async with running_server(_ScriptedBackend()) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(30):
                await client.connect()
                await client.wait_for("bot-interrupted", 10)
                await client.wait_for("error", 10)
                from voicegate.signaling.app import SESSIONS

                for session in list(app[SESSIONS].values()):
                    await session.closed.wait()
        finally:
            await client.close()
        s = await scrape(url)
        assert value(s, "voicegate_barge_ins_total") == 1
        assert value(s, "voicegate_conversation_barge_ins_total") == 1
        # The caller was told the assistant is busy (non-fatal), then that the call failed.
        assert value(s, "voicegate_backend_errors_total", kind="throttled") == 2
        assert value(s, "voicegate_calls_ended_total", reason="error") == 1
        # Only the bot's first audio was measured; an interrupted turn has no second sample.
        assert value(s, "voicegate_turn_latency_seconds_count", stage="total") <= 1

    async with running_server(_ScriptedBackend(fail_open=True)) as (url, _app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(20):
                with pytest.raises(RuntimeError, match="502"):
                    await client.connect()
        finally:
            await client.close()
        s = await scrape(url)
        assert value(s, "voicegate_backend_errors_total", kind="service_unavailable") == 1
        assert value(s, "voicegate_offers_total", status="502") == 1
        assert value(s, "voicegate_calls_total") == 0
        assert value(s, "voicegate_calls_ended_total", reason="backend-failed") == 0


async def test_refusals_are_counted_by_status() -> None:
    async with running_server(EchoBackend(), max_sessions=1) as (url, _app):
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(10):
                async with http.post(
                    f"{url}/api/offer",
                    data=b"{not json",
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    assert resp.status == 400
        client = CallClient(url)
        second = CallClient(url)
        try:
            async with asyncio.timeout(20):
                await client.connect()
                with pytest.raises(RuntimeError, match="503"):
                    await second.connect()
        finally:
            await second.close()
            await client.close()
        s = await scrape(url)
        assert value(s, "voicegate_offers_total", status="400") == 1
        assert value(s, "voicegate_offers_total", status="503") == 1
        assert value(s, "voicegate_offers_total", status="200") == 1
        assert value(s, "voicegate_calls_refused_total") == 1


def test_stream_failures_and_handover_gaps_are_exported() -> None:
    from voicegate.conversation import ConversationStats
    from voicegate.observability.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    stats = ConversationStats()
    stats.failures["stream_lost"] += 2
    stats.failures["throttled"] += 1
    stats.handover_gaps_ms.extend([0.6, 3.0])
    stats.recovery_gaps_ms.append(120.0)
    stats.renewals = 2
    metrics.call_started("pc-1")
    metrics.call_ended("pc-1", "hangup", 30.0, stats)
    s = parse(metrics.render())
    assert value(s, "voicegate_stream_failures_total", kind="stream_lost") == 2
    assert value(s, "voicegate_stream_failures_total", kind="throttled") == 1
    assert value(s, "voicegate_handover_gap_seconds_count", kind="renewal") == 2
    assert value(s, "voicegate_handover_gap_seconds_count", kind="recovery") == 1
    assert value(s, "voicegate_conversation_renewals_total") == 2
