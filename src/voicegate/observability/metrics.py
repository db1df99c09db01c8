"""The gateway's metrics for ``GET /metrics``: what they count, and the call observer feeding them.

The metrics are prometheus-client's, on a ``CollectorRegistry`` of this app's own (no
process-global state: each server, and each test server in one process, has its own numbers);
``exposition.py`` bounds their label sets and renders the text. Observing is a dict update on
the event loop; figures that are owned elsewhere (the call count, process RSS, fds, threads,
the conversations' stats) are read only when scraped, by ``_ReadAtScrape``. Calls feed the
metrics as a ``CallObserver`` (``on_call_event``): signaling registers ``GatewayMetrics`` on
every call it creates, and the call publishes its start, end, turn latencies, RTP samples,
barge-ins and errors.

Every series a dashboard or alert reads exists from the start, at zero: counters and histograms
are declared with the label values voicegate knows (``REASONS``, ``error_kinds()``, ...), and the
conversation counters with every numeric field of ``ConversationStats``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from voicegate.backends.base import BackendError
from voicegate.call.events import CallEnded, CallEvent, CallStarted, RtpStats, TurnLatency
from voicegate.conversation import (
    BotInterrupted,
    ConversationError,
    ConversationStats,
    ToolCallFinished,
    Usage,
)
from voicegate.media.rtp_stats import RtpSample
from voicegate.observability.exposition import (
    CONTENT_TYPE,
    MAX_SERIES,
    Counter,
    Histogram,
    render,
)
from voicegate.observability.process import asyncio_tasks, cpu_seconds, open_fds, rss_bytes

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "error_kinds", "failures_by_kind", "numeric_fields"]

LATENCY_BUCKETS: Final = (
    0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip
PLAYOUT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.5, 1.0)
JITTER_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)
RTT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
LOSS_BUCKETS: Final = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LAG_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
GC_GENERATIONS: Final = ("0", "1", "2")
_NAME_OK: Final = re.compile(r"[^a-zA-Z0-9_]")

# The label values declared at zero (docs/observability.md lists them); others still appear
# when they happen.
STATUSES: Final = ("200", "400", "401", "403", "413", "429", "502", "503", "504")
REASONS: Final = (
    "hangup", "client-disconnect", "connection-closed", "connection-failed", "connect-timeout",
    "max-duration", "idle", "shutdown", "restart", "error",
)  # fmt: skip
STAGES: Final = ("total", "model", "playout")
DIRECTIONS: Final = ("inbound", "outbound")
HANDOVERS: Final = ("renewal", "recovery")
STREAMS: Final = ("user", "bot")
RESULTS: Final = ("ok", "failed")
WEBHOOK_EVENTS: Final = ("call.started", "call.ended", "call.failed")
WEBHOOK_RESULTS: Final = ("delivered", "retried", "gave_up", "rejected", "dropped")


def error_kinds() -> tuple[str, ...]:
    """Every ``BackendError.kind`` (the labels of backend errors and stream failures)."""
    kinds: set[str] = set()
    todo: list[type[BackendError]] = [BackendError]
    while todo:
        cls = todo.pop()
        kinds.add(cls.kind)
        todo += cls.__subclasses__()
    return tuple(sorted(kinds))


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
        self.registry = CollectorRegistry()
        reg = self.registry
        self._closed_stats: dict[str, float] = dict.fromkeys(
            numeric_fields(ConversationStats()), 0.0
        )
        self._closed_failures: dict[str, float] = dict.fromkeys(error_kinds(), 0.0)
        self._live_stats: Callable[[], Iterable[object]] = list
        self._rtp_last: dict[str, _RtpTotals] = {}
        self._accepted: set[str] = set()
        Gauge("voicegate_calls_active", "calls in progress", registry=reg).set_function(
            lambda: float(active_calls())
        )
        # Accepted and refused calls are counted where the decision is made (signaling's
        # COUNTERS, also shown by /healthz); they are read at scrape time so there is one
        # source of truth.
        reg.register(_ReadAtScrape(self, counters))
        kinds = [(k,) for k in error_kinds()]
        self.offers = Counter(
            reg,
            "voicegate_offers_total",
            "POST /api/offer responses, by HTTP status",
            ["status"],
            [(s,) for s in STATUSES],
        )
        self.calls_ended = Counter(
            reg,
            "voicegate_calls_ended_total",
            "calls ended, by reason",
            ["reason"],
            [(r,) for r in REASONS],
        )
        self.call_duration = Histogram(
            reg,
            "voicegate_call_duration_seconds",
            "length of ended calls",
            (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
        )
        self.turn_latency = Histogram(
            reg,
            "voicegate_turn_latency_seconds",
            "per turn: user stopped speaking -> first model audio (stage=model), -> first audio "
            "frame handed to the RTP sender (stage=total); stage=playout is the difference",
            LATENCY_BUCKETS,
            ["stage"],
            [(s,) for s in STAGES],
        )
        self.playout_latency = Histogram(
            reg,
            "voicegate_turn_playout_seconds",
            "per turn: first model audio -> first audio frame handed to the RTP sender",
            PLAYOUT_BUCKETS,
        )
        self.barge_ins = Counter(reg, "voicegate_barge_ins_total", "user interruptions of the bot")
        # By agent: the names come from the agents file, so the label set stays bounded.
        self.agent_calls = Counter(
            reg, "voicegate_agent_calls_total", "calls started, by agent", ["agent"]
        )
        self.agent_calls_ended = Counter(
            reg,
            "voicegate_agent_calls_ended_total",
            "calls ended, by agent and reason",
            ["agent", "reason"],
        )
        self.agent_tool_calls = Counter(
            reg,
            "voicegate_agent_tool_calls_total",
            "tool calls, by agent and result (ok, error)",
            ["agent", "result"],
        )
        self._agents: dict[str, str] = {}
        """The agent of each accepted call, for the by-agent counters."""
        self.model_tokens = Counter(
            reg,
            "voicegate_model_tokens_total",
            "speech model tokens (usageEvent deltas), by direction (input|output) and modality "
            "(speech|text)",
            ["direction", "modality"],
            [(d, m) for d in ("input", "output") for m in ("speech", "text")],
        )
        self.backend_errors = Counter(
            reg,
            "voicegate_backend_errors_total",
            "speech backend (Bedrock) errors, by kind, at call start and during calls",
            ["kind"],
            kinds,
        )
        self.handover_gap = Histogram(
            reg,
            "voicegate_handover_gap_seconds",
            "model stream handovers of ended calls: old stream's last use -> new stream live "
            "(kind=renewal), or failure noticed -> new stream live (kind=recovery)",
            (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            ["kind"],
            [(k,) for k in HANDOVERS],
        )
        self.rtp_jitter = Histogram(
            reg,
            "voicegate_rtp_jitter_seconds",
            "interarrival jitter per call sample: direction=inbound as voicegate measures the "
            "browser's stream, direction=outbound as the browser reports voicegate's (RTCP RR)",
            JITTER_BUCKETS,
            ["direction"],
            [(d,) for d in DIRECTIONS],
        )
        self.rtp_rtt = Histogram(
            reg,
            "voicegate_rtp_rtt_seconds",
            "round-trip time from RTCP, per call sample",
            RTT_BUCKETS,
        )
        self.rtp_fraction_lost = Histogram(
            reg,
            "voicegate_rtp_fraction_lost",
            "fraction of voicegate's packets the browser reports lost (RTCP RR), per call sample",
            LOSS_BUCKETS,
        )
        self.rtp_packets = Counter(
            reg,
            "voicegate_rtp_packets_total",
            "RTP audio packets received (inbound) and sent (outbound)",
            ["direction"],
            [(d,) for d in DIRECTIONS],
        )
        self.rtp_lost = Counter(
            reg,
            "voicegate_rtp_packets_lost_total",
            "RTP audio packets lost: inbound as voicegate counts, outbound as RTCP reports",
            ["direction"],
            [(d,) for d in DIRECTIONS],
        )
        self.loop_lag = Histogram(
            reg,
            "voicegate_event_loop_lag_seconds",
            "how late a short sleep on the event loop wakes up (admission control's probe)",
            LAG_BUCKETS,
        )
        self.gc_pause = Histogram(
            reg,
            "voicegate_gc_pause_seconds",
            "how long each cyclic garbage collection stopped the process, by generation "
            "(2 is a full one; start-up objects are frozen out of them)",
            LAG_BUCKETS,
            ["generation"],
            [(g,) for g in GC_GENERATIONS],
        )
        self.loop_lag_last = Gauge(
            "voicegate_event_loop_lag_last_seconds",
            "the most recent event-loop lag probe",
            registry=reg,
        )
        self.recording_dropped = Counter(
            reg,
            "voicegate_recording_dropped_total",
            "recording chunks dropped because the writer fell behind, by stream",
            ["stream"],
            [(s,) for s in STREAMS],
        )
        self.recording_uploads = Counter(
            reg,
            "voicegate_recording_uploads_total",
            "recording uploads, by result",
            ["result"],
            [(r,) for r in RESULTS],
        )
        self.webhooks = Counter(
            reg,
            "voicegate_webhooks_total",
            "webhook deliveries by event and result (delivered, retried, gave_up, rejected, "
            "dropped)",
            ["event", "result"],
            [(e, r) for e in WEBHOOK_EVENTS for r in WEBHOOK_RESULTS],
        )
        for name, help_text, read in (
            ("voicegate_process_resident_memory_bytes", "RSS", rss_bytes),
            ("voicegate_process_open_fds", "open file descriptors", open_fds),
            ("voicegate_process_threads", "Python threads", threading.active_count),
            ("voicegate_asyncio_tasks", "asyncio tasks on the event loop", asyncio_tasks),
        ):
            Gauge(name, help_text, registry=reg).set_function(read)

    # -- the call observer ---------------------------------------------------------------------

    wants_audio = False  # CallObserver: no per-frame audio events for the metrics

    def on_call_event(self, call_id: str, event: CallEvent) -> None:
        match event:
            case CallStarted():
                self.call_started(call_id)
                agent = event.info.agent or "default"
                self._agents[call_id] = agent
                if not event.restart:
                    self.agent_calls.inc(agent=agent)
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
            case ToolCallFinished():
                self.agent_tool_calls.inc(
                    agent=self._agents.get(call_id, "default"),
                    result="ok" if event.ok else "error",
                )
            case ConversationError():
                self.backend_errors.inc(kind=event.kind)
            case Usage():
                for (direction, modality), n in event.delta.by_label().items():
                    if n:
                        self.model_tokens.inc(n, direction=direction, modality=modality)
            case _:
                pass

    # -- hooks ---------------------------------------------------------------------------------

    def agents(self, names: Iterable[str]) -> None:
        """The server's agents: their by-agent series are present at zero from the start, so
        a rate over them is defined before an agent's first call."""
        for name in names:
            self.agent_calls.inc(0, agent=name)
            for result in ("ok", "error"):
                self.agent_tool_calls.inc(0, agent=name, result=result)
            for reason in REASONS:
                self.agent_calls_ended.inc(0, agent=name, reason=reason)

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
        self.agent_calls_ended.inc(
            agent=self._agents.pop(call_id, "default"), reason=reason.split(":", 1)[0] or "unknown"
        )
        self.call_duration.observe(seconds)
        for name, value in numeric_fields(stats).items():
            self._closed_stats[name] = self._closed_stats.get(name, 0.0) + value
        for kind, count in failures_by_kind(stats).items():
            if kind not in self._closed_failures and len(self._closed_failures) >= MAX_SERIES:
                kind = "other"
            self._closed_failures[kind] = self._closed_failures.get(kind, 0.0) + count
        for field_name, kind in (("handover_gaps_ms", "renewal"), ("recovery_gaps_ms", "recovery")):
            for gap_ms in _floats(getattr(stats, field_name, ())):
                self.handover_gap.observe(gap_ms / 1000.0, kind=kind)

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        """One garbage collection (``gcpolicy.PauseWatch`` times them)."""
        self.gc_pause.observe(seconds, generation=str(generation))

    def observe_loop_lag(self, lag_s: float) -> None:
        """One event-loop lag probe (signaling's admission monitor runs the probe)."""
        self.loop_lag.observe(lag_s)
        self.loop_lag_last.set(lag_s)

    # -- exposition ------------------------------------------------------------------------------

    def conversation_totals(self) -> dict[str, float]:
        """``ConversationStats`` numeric fields summed over ended and live calls."""
        totals = dict(self._closed_stats)
        for stats in self._live_stats():
            for name, value in numeric_fields(stats).items():
                totals[name] = totals.get(name, 0.0) + value
        return totals

    def stream_failures(self) -> dict[str, float]:
        """Mid-call stream failures by kind over ended and live calls."""
        totals = dict(self._closed_failures)
        for stats in self._live_stats():
            for kind, count in failures_by_kind(stats).items():
                if kind not in totals and len(totals) >= MAX_SERIES:
                    kind = "other"
                totals[kind] = totals.get(kind, 0.0) + count
        return totals

    def render(self) -> str:
        return render(self.registry)

    def sample(self, name: str, **labels: str) -> float:
        """One sample's value as /metrics shows it (0 if absent): for checks and tests."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class _ReadAtScrape:
    """Counters whose numbers are owned elsewhere, read when /metrics is scraped: accepted and
    refused calls (signaling's counters), CPU time, and the conversations' stats."""

    def __init__(self, metrics: GatewayMetrics, counters: Callable[[], Mapping[str, int]]) -> None:
        self._metrics = metrics
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        counts = self._counters()
        yield CounterMetricFamily(
            "voicegate_calls_total", "calls accepted", value=counts.get("calls_total", 0)
        )
        yield CounterMetricFamily(
            "voicegate_calls_refused_total",
            "offers refused for capacity, rate limit or shutdown (503/429)",
            value=counts.get("calls_refused", 0),
        )
        yield CounterMetricFamily(
            "voicegate_process_cpu_seconds_total",
            "CPU time of this process, user + system, all threads",
            value=cpu_seconds(),
        )
        for name, value in sorted(self._metrics.conversation_totals().items()):
            yield CounterMetricFamily(
                f"voicegate_conversation_{name}_total",
                f"sum of ConversationStats.{name} over all calls (live and ended)",
                value=value,
            )
        failures = CounterMetricFamily(
            "voicegate_stream_failures_total",
            "model streams that failed mid-call, by BackendError kind (live and ended calls)",
            labels=["kind"],
        )
        for kind, count in sorted(self._metrics.stream_failures().items()):
            failures.add_metric([kind], count)
        yield failures


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
