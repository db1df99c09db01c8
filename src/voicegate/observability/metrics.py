"""The gateway's metrics for ``GET /metrics``: what they count, and the call observer feeding them.

Everything here is cheap and synchronous: observing is a dict update on the event loop; process
figures (RSS, fds, threads) are read from /proc only when scraped (``process.py``); the text
format is rendered by ``exposition.py``. Calls feed the metrics as a ``CallObserver``
(``on_call_event``): signaling registers ``GatewayMetrics`` on every call it creates, and the
call publishes its start, end, turn latencies, RTP samples, barge-ins and errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from voicegate.call.events import CallEnded, CallEvent, CallStarted, RtpStats, TurnLatency
from voicegate.conversation import BotInterrupted, ConversationError, Usage
from voicegate.media.rtp_stats import RtpSample
from voicegate.observability.exposition import CONTENT_TYPE, Counter, Gauge, Histogram, Metric
from voicegate.observability.process import asyncio_tasks, cpu_seconds, open_fds, rss_bytes

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "failures_by_kind", "numeric_fields"]

LATENCY_BUCKETS: Final = (
    0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip
PLAYOUT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.5, 1.0)
JITTER_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)
RTT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
LOSS_BUCKETS: Final = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LAG_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_NAME_OK: Final = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(slots=True)
class _RtpTotals:
    inbound_packets: int = 0
    inbound_lost: int = 0
    outbound_packets: int = 0
    outbound_lost: int = 0


# -- the gateway's metrics ---------------------------------------------------------------------


class GatewayMetrics:
    """Every metric ``/metrics`` shows; a ``CallObserver`` of every call, plus the hooks
    signaling calls (offers by status, backend errors at call start, live stats).

    Per-call conversation counters (barge-ins, tool calls, dropped chunks, and whatever other
    integer fields ``ConversationStats`` grows, such as renewals) are read by field name without
    knowing them in advance: live calls are summed at scrape time, closed calls are folded into
    a running total when they end, so the exported counters never go down."""

    def __init__(
        self,
        active_calls: Callable[[], int] = lambda: 0,
        counters: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._closed_stats: dict[str, float] = {}
        self._live_stats: Callable[[], Iterable[object]] = list
        self._rtp_last: dict[str, _RtpTotals] = {}
        self._accepted: set[str] = set()
        self.calls_active = Gauge(
            "voicegate_calls_active", "calls in progress", read=lambda: float(active_calls())
        )
        # Accepted and refused calls are counted where the decision is made (signaling's
        # COUNTERS, also shown by /healthz); they are read here so there is one source of truth.
        self.calls_total = Counter(
            "voicegate_calls_total",
            "calls accepted",
            read=lambda: float(counters().get("calls_total", 0)),
        )
        self.calls_refused = Counter(
            "voicegate_calls_refused_total",
            "offers refused for capacity, rate limit or shutdown (503/429)",
            read=lambda: float(counters().get("calls_refused", 0)),
        )
        self.offers = Counter(
            "voicegate_offers_total", "POST /api/offer responses, by HTTP status", ["status"]
        )
        self.calls_ended = Counter(
            "voicegate_calls_ended_total", "calls ended, by reason", ["reason"]
        )
        self.call_duration = Histogram(
            "voicegate_call_duration_seconds",
            "length of ended calls",
            (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
        )
        self.turn_latency = Histogram(
            "voicegate_turn_latency_seconds",
            "per turn: user stopped speaking -> first model audio (stage=model), -> first audio "
            "frame handed to the RTP sender (stage=total); stage=playout is the difference",
            LATENCY_BUCKETS,
            ["stage"],
        )
        self.playout_latency = Histogram(
            "voicegate_turn_playout_seconds",
            "per turn: first model audio -> first audio frame handed to the RTP sender",
            PLAYOUT_BUCKETS,
        )
        self.barge_ins = Counter("voicegate_barge_ins_total", "user interruptions of the bot")
        self.model_tokens = Counter(
            "voicegate_model_tokens_total",
            "speech model tokens (usageEvent deltas), by direction (input|output) and modality "
            "(speech|text)",
            ["direction", "modality"],
        )
        self.backend_errors = Counter(
            "voicegate_backend_errors_total",
            "speech backend (Bedrock) errors, by kind, at call start and during calls",
            ["kind"],
        )
        # Issue 4: model-stream failures by kind and the renewal/recovery handover gaps. Ended
        # calls are folded in at call end; live calls' failures are summed at scrape time.
        self._closed_failures: dict[str, float] = {}
        self.handover_gap = Histogram(
            "voicegate_handover_gap_seconds",
            "model stream handovers of ended calls: old stream's last use -> new stream live "
            "(kind=renewal), or failure noticed -> new stream live (kind=recovery)",
            (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            ["kind"],
        )
        self.rtp_jitter = Histogram(
            "voicegate_rtp_jitter_seconds",
            "interarrival jitter per call sample: direction=inbound as voicegate measures the "
            "browser's stream, direction=outbound as the browser reports voicegate's (RTCP RR)",
            JITTER_BUCKETS,
            ["direction"],
        )
        self.rtp_rtt = Histogram(
            "voicegate_rtp_rtt_seconds", "round-trip time from RTCP, per call sample", RTT_BUCKETS
        )
        self.rtp_fraction_lost = Histogram(
            "voicegate_rtp_fraction_lost",
            "fraction of voicegate's packets the browser reports lost (RTCP RR), per call sample",
            LOSS_BUCKETS,
        )
        self.rtp_packets = Counter(
            "voicegate_rtp_packets_total",
            "RTP audio packets received (inbound) and sent (outbound)",
            ["direction"],
        )
        self.rtp_lost = Counter(
            "voicegate_rtp_packets_lost_total",
            "RTP audio packets lost: inbound as voicegate counts, outbound as RTCP reports",
            ["direction"],
        )
        self.loop_lag = Histogram(
            "voicegate_event_loop_lag_seconds",
            "how late a short sleep on the event loop wakes up (admission control's probe)",
            LAG_BUCKETS,
        )
        self.loop_lag_last = Gauge(
            "voicegate_event_loop_lag_last_seconds", "the most recent event-loop lag probe"
        )
        self.recording_dropped = Counter(
            "voicegate_recording_dropped_total",
            "recording chunks dropped because the writer fell behind, by stream",
            ["stream"],
        )
        self.recording_uploads = Counter(
            "voicegate_recording_uploads_total", "recording uploads, by result", ["result"]
        )
        self._process = [
            Gauge("voicegate_process_resident_memory_bytes", "RSS", read=lambda: rss_bytes()),
            Counter(
                "voicegate_process_cpu_seconds_total",
                "CPU time of this process, user + system, all threads",
                read=cpu_seconds,
            ),
            Gauge("voicegate_process_open_fds", "open file descriptors", read=lambda: open_fds()),
            Gauge(
                "voicegate_process_threads",
                "Python threads",
                read=lambda: threading.active_count(),
            ),
            Gauge(
                "voicegate_asyncio_tasks",
                "asyncio tasks on the event loop",
                read=lambda: asyncio_tasks(),
            ),
        ]

    # -- the call observer ---------------------------------------------------------------------

    wants_audio = False  # CallObserver: no per-frame audio events for the metrics

    def on_call_event(self, call_id: str, event: CallEvent) -> None:
        match event:
            case CallStarted():
                self.call_started(call_id)
            case CallEnded():
                # A replaced connection (restart_pc) hands its conversation and cumulative
                # stats to the call's next connection; that one's end counts the call, once.
                if not event.handed_over:
                    self.call_ended(call_id, event.reason, event.seconds, event.stats)
            case TurnLatency():
                self.observe_turn(event.total_s, event.model_s)
            case RtpStats():
                self.observe_rtp(call_id, event.sample)
            case BotInterrupted():
                self.barge_ins.inc()
            case ConversationError():
                self.backend_errors.inc(kind=event.kind)
            case Usage():
                for (direction, modality), n in event.delta.by_label().items():
                    if n:
                        self.model_tokens.inc(n, direction=direction, modality=modality)
            case _:
                pass

    # -- hooks ---------------------------------------------------------------------------------

    def live_stats(self, read: Callable[[], Iterable[object]]) -> None:
        """Where to find the ``ConversationStats`` of the calls in progress."""
        self._live_stats = read

    def observe_turn(self, total_s: float, model_s: float | None) -> None:
        self.turn_latency.observe(total_s, stage="total")
        if model_s is not None:
            self.turn_latency.observe(model_s, stage="model")
            self.turn_latency.observe(max(0.0, total_s - model_s), stage="playout")
            self.playout_latency.observe(max(0.0, total_s - model_s))

    def observe_rtp(self, call_id: str, sample: RtpSample) -> None:
        """Record one sample of a call; packet counters advance by the change since its last."""
        if sample.inbound_jitter_s is not None:
            self.rtp_jitter.observe(sample.inbound_jitter_s, direction="inbound")
        if sample.outbound_jitter_s is not None:
            self.rtp_jitter.observe(sample.outbound_jitter_s, direction="outbound")
        if sample.rtt_s is not None:
            self.rtp_rtt.observe(sample.rtt_s)
        if sample.outbound_fraction_lost is not None:
            self.rtp_fraction_lost.observe(sample.outbound_fraction_lost)
        last = self._rtp_last.setdefault(call_id, _RtpTotals())
        if (
            sample.inbound_packets < last.inbound_packets
            or sample.outbound_packets_sent < last.outbound_packets
        ):
            last = _RtpTotals()  # packet counts fell: a restarted call's new connection
        now = _RtpTotals(
            sample.inbound_packets,
            sample.inbound_lost,
            sample.outbound_packets_sent,
            sample.outbound_lost or 0,
        )
        self.rtp_packets.inc(
            max(0, now.inbound_packets - last.inbound_packets), direction="inbound"
        )
        self.rtp_packets.inc(
            max(0, now.outbound_packets - last.outbound_packets), direction="outbound"
        )
        self.rtp_lost.inc(max(0, now.inbound_lost - last.inbound_lost), direction="inbound")
        self.rtp_lost.inc(max(0, now.outbound_lost - last.outbound_lost), direction="outbound")
        self._rtp_last[call_id] = _RtpTotals(
            max(now.inbound_packets, last.inbound_packets),
            max(now.inbound_lost, last.inbound_lost),
            max(now.outbound_packets, last.outbound_packets),
            max(now.outbound_lost, last.outbound_lost),
        )

    def call_started(self, call_id: str) -> None:
        """The offer was answered: from now on the call's end is counted."""
        self._accepted.add(call_id)

    def call_ended(self, call_id: str, reason: str, seconds: float, stats: object) -> None:
        self._rtp_last.pop(call_id, None)
        if call_id not in self._accepted:
            return  # a refused offer's teardown, not a call
        self._accepted.discard(call_id)
        self.calls_ended.inc(reason=reason.split(":", 1)[0] or "unknown")
        self.call_duration.observe(seconds)
        for name, value in numeric_fields(stats).items():
            self._closed_stats[name] = self._closed_stats.get(name, 0.0) + value
        for kind, count in failures_by_kind(stats).items():
            self._closed_failures[kind] = self._closed_failures.get(kind, 0.0) + count
        for field_name, kind in (("handover_gaps_ms", "renewal"), ("recovery_gaps_ms", "recovery")):
            for gap_ms in _floats(getattr(stats, field_name, ())):
                self.handover_gap.observe(gap_ms / 1000.0, kind=kind)

    def observe_loop_lag(self, lag_s: float) -> None:
        """One event-loop lag probe (signaling's admission monitor runs the probe)."""
        self.loop_lag.observe(lag_s)
        self.loop_lag_last.set(lag_s)

    # -- exposition ------------------------------------------------------------------------------

    def _conversation_counters(self) -> list[Counter]:
        totals = dict(self._closed_stats)
        for stats in self._live_stats():
            for name, value in numeric_fields(stats).items():
                totals[name] = totals.get(name, 0.0) + value
        counters = []
        for name, value in sorted(totals.items()):
            counter = Counter(
                f"voicegate_conversation_{name}_total",
                f"sum of ConversationStats.{name} over all calls (live and ended)",
            )
            counter.inc(value)
            counters.append(counter)
        return counters

    def _stream_failures(self) -> Counter:
        totals = dict(self._closed_failures)
        for stats in self._live_stats():
            for kind, count in failures_by_kind(stats).items():
                totals[kind] = totals.get(kind, 0.0) + count
        counter = Counter(
            "voicegate_stream_failures_total",
            "model streams that failed mid-call, by BackendError kind (live and ended calls)",
            ["kind"],
        )
        for kind, count in sorted(totals.items()):
            counter.inc(count, kind=kind)
        return counter

    def metrics(self) -> list[Metric]:
        return [
            self.calls_active,
            self.calls_total,
            self.calls_refused,
            self.offers,
            self.calls_ended,
            self.call_duration,
            self.turn_latency,
            self.playout_latency,
            self.barge_ins,
            self.model_tokens,
            self.backend_errors,
            self.rtp_jitter,
            self.rtp_rtt,
            self.rtp_fraction_lost,
            self.rtp_packets,
            self.rtp_lost,
            self.loop_lag,
            self.loop_lag_last,
            self.recording_dropped,
            self.recording_uploads,
            *self._process,
            *self._conversation_counters(),
            self._stream_failures(),
            self.handover_gap,
        ]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics():
            lines += metric.header()
            lines += metric.samples()
        return "\n".join(lines) + "\n"


def numeric_fields(stats: object) -> dict[str, float]:
    """The non-negative int/float fields of a stats object, by sanitised name.

    Read defensively: other work adds fields to ``ConversationStats`` (renewals, recoveries);
    whatever is numeric is exported, anything else (history, lists) is ignored."""
    items: list[tuple[str, object]] = []
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        items = [(f.name, getattr(stats, f.name, None)) for f in dataclasses.fields(stats)]
    else:
        with contextlib.suppress(TypeError):
            items = list(vars(stats).items())
    out: dict[str, float] = {}
    for name, value in items:
        if name.startswith("_") or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
            out[_NAME_OK.sub("_", name)] = float(value)
    return out


def failures_by_kind(stats: object) -> dict[str, float]:
    """``ConversationStats.failures`` (a Counter by kind), read defensively."""
    raw = getattr(stats, "failures", None)
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, float] = {}
    for kind, count in raw.items():
        if isinstance(kind, str) and isinstance(count, (int, float)) and count > 0:
            out[kind[:64]] = float(count)
    return out


def _floats(values: object) -> list[float]:
    if not isinstance(values, Iterable):
        return []
    return [float(v) for v in values if isinstance(v, (int, float)) and v >= 0]
