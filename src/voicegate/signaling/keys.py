"""The typed keys under which one signaling application keeps its state (aiohttp AppKey), and
the small ``Gate`` record of who may come in. Every module of the package reads state through
these keys, so one app's state is in one place and tests can reach it the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import web

from voicegate.agents.catalog import AgentCatalog
from voicegate.agents.services import AgentServices
from voicegate.backends.base import Backend
from voicegate.config import ServeConfig
from voicegate.conversation import ConversationSettings
from voicegate.conversation.tools import ToolRegistry
from voicegate.gcpolicy import PauseWatch
from voicegate.media.ice import CandidatePolicy
from voicegate.observability.calllog import CallLog
from voicegate.observability.metrics import GatewayMetrics
from voicegate.observability.recording import Recorder
from voicegate.observability.tracing import CallTracer
from voicegate.observability.webhooks import WebhookSender
from voicegate.signaling import auth
from voicegate.signaling.admission import Admission
from voicegate.signaling.calls import CallRegistry
from voicegate.signaling.ratelimit import RateLimiter
from voicegate.store import CallHistory, HistoryWriter

__all__ = [
    "ADMIN_TOKEN",
    "ADMISSION",
    "AGENTS",
    "AGENT_SERVICES",
    "BACKEND",
    "CALL_HISTORY",
    "CALL_LOG",
    "CANDIDATES",
    "CLAIMS",
    "CONFIG",
    "COUNTERS",
    "GATE",
    "Gate",
    "HISTORY_WRITER",
    "METRICS",
    "RECORDER",
    "SESSIONS",
    "SETTINGS",
    "STARTED",
    "TOOLS",
    "TRACER",
    "WEBHOOKS",
]


@dataclass(slots=True)
class Gate:
    """Who may come in: the per-address rate limits (call offers, trickled candidates, ICE
    server credentials; each its own bucket, same rate) and the drain flag."""

    offers: RateLimiter
    patches: RateLimiter
    ice_servers: RateLimiter
    draining: bool = False

    @classmethod
    def for_rate(cls, per_minute: float, burst: int) -> Gate:
        return cls(
            RateLimiter(per_minute, burst),
            RateLimiter(per_minute, burst),
            RateLimiter(per_minute, burst),
        )


CONFIG: Final = web.AppKey("config", ServeConfig)
SESSIONS: Final = web.AppKey("sessions", CallRegistry)
"""The live calls by pc_id (a read-only mapping; the registry alone changes it)."""
BACKEND: Final = web.AppKey("backend", Backend)
TOOLS: Final = web.AppKey("tools", ToolRegistry)
AGENTS: Final = web.AppKey("agents", AgentCatalog)
AGENT_SERVICES: Final = web.AppKey("agent_services", AgentServices)
"""The server's agents (from --agents, or the one the flags make); per call: settings, tools."""
SETTINGS: Final = web.AppKey("settings", ConversationSettings)
STARTED: Final = web.AppKey("started", float)
COUNTERS: Final = web.AppKey("counters", dict[str, int])
METRICS: Final = web.AppKey("metrics", GatewayMetrics)
GC_WATCH: Final = web.AppKey("gc_watch", PauseWatch)
"""Times every garbage collection for ``voicegate_gc_pause_seconds`` while the app runs."""
RECORDER: Final = web.AppKey("recorder", Recorder)
"""Absent unless a recording destination is configured."""
ADMISSION: Final = web.AppKey("admission", Admission)
GATE: Final = web.AppKey("gate", Gate)
CANDIDATES: Final = web.AppKey("candidates", CandidatePolicy)
"""Which remote ICE candidates the server may be made to send to."""
CLAIMS: Final = web.RequestKey("claims", auth.Claims)
"""The verified token claims of a request (absent in open dev mode)."""
CALL_LOG: Final = web.AppKey("call_log", CallLog)
"""Absent when no call record goes anywhere (no webhooks, no history, no traces)."""
CALL_HISTORY: Final = web.AppKey("call_history", CallHistory)
"""Absent with ``--call-store none``."""
ADMIN_TOKEN: Final = web.AppKey("admin_token", str)
"""The bearer token of the operator's API (``--admin-token-file``); absent when not set."""
HISTORY_WRITER: Final = web.AppKey("history_writer", HistoryWriter)
WEBHOOKS: Final = web.AppKey("webhooks", WebhookSender)
"""Absent without ``--webhook-url``."""
TRACER: Final = web.AppKey("tracer", CallTracer)
"""Absent unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
