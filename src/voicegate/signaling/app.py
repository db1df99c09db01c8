"""The signaling application: ``create_app`` wires state, middlewares and routes; ``drain``
is graceful shutdown, step one.

Request and response shapes of ``/api/offer`` match Pipecat's SmallWebRTC runner (``pc_id``,
``restart_pc``, ``PATCH`` for trickle candidates), so Pipecat's JS client can talk to voicegate.
Every error is JSON ``{"error": "..."}`` with a 4xx status that says what was wrong; bad input to
one request never touches another call. Process-wide media set-up is not done here but by
whoever owns the process (``voicegate.media.configure``).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import structlog
from aiohttp import web

from voicegate import __version__
from voicegate.agents.catalog import AgentCatalog
from voicegate.agents.file import load_agents
from voicegate.agents.services import AgentServices
from voicegate.backends.base import Backend
from voicegate.config import ServeConfig
from voicegate.conversation import DEFAULT_SYSTEM_PROMPT, ConversationSettings
from voicegate.conversation.continuation import ContinuationSettings
from voicegate.conversation.tools import ToolRegistry, default_tools
from voicegate.gcpolicy import PauseWatch
from voicegate.media import ice
from voicegate.observability.calllog import CallLog, CallSink
from voicegate.observability.metrics import GatewayMetrics
from voicegate.observability.recording import Recorder, RecordingOptions
from voicegate.observability.tracing import CallTracer, tracing_enabled
from voicegate.observability.webhooks import WebhookSender
from voicegate.privacy import Redaction
from voicegate.signaling import health, history, offers, pages
from voicegate.signaling.admission import Admission, LagMonitor
from voicegate.signaling.calls import CallRegistry
from voicegate.signaling.keys import (
    ADMIN_TOKEN,
    ADMISSION,
    AGENT_SERVICES,
    AGENTS,
    BACKEND,
    CALL_HISTORY,
    CALL_LOG,
    CANDIDATES,
    CONFIG,
    COUNTERS,
    GATE,
    GC_WATCH,
    HISTORY_WRITER,
    METRICS,
    RECORDER,
    SESSIONS,
    SETTINGS,
    STARTED,
    TOOLS,
    TRACER,
    WEBHOOKS,
    Gate,
)
from voicegate.signaling.middleware import (
    access_control,
    count_offers,
    errors_as_json,
    security_headers,
)
from voicegate.signaling.paths import one_path
from voicegate.signing import parse_secrets
from voicegate.sonic.events import tool_choice_problem
from voicegate.store import HistoryWriter, open_history

__all__ = [
    "ADMISSION",
    "METRICS",
    "SESSIONS",
    "conversation_settings",
    "create_app",
    "drain",
]

log = structlog.get_logger(__name__)


def conversation_settings(config: ServeConfig) -> ConversationSettings:
    return ConversationSettings(
        system_prompt=config.system_prompt or DEFAULT_SYSTEM_PROMPT,
        speech_prompt=config.system_speech,
        tool_choice=config.tool_choice,
        voice_id=config.voice,
        endpointing_sensitivity=config.endpointing or None,
        greeting=config.greeting,
        continuation=ContinuationSettings(
            renew_after_s=config.renew_after,
            force_after_s=config.renew_force_after,
            recovery_attempts=config.recovery_attempts,
        ),
    )


def create_app(
    config: ServeConfig,
    backend: Backend,
    tools: ToolRegistry | None = None,
    settings: ConversationSettings | None = None,
) -> web.Application:
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[one_path, count_offers, access_control, errors_as_json],
    )
    app[CONFIG] = config
    app[BACKEND] = backend
    app[TOOLS] = tools if tools is not None else default_tools()
    app[SETTINGS] = settings if settings is not None else conversation_settings(config)
    # The tools are known only here (the configuration check saw the form of the choice).
    if problem := tool_choice_problem(app[SETTINGS].tool_choice, app[TOOLS].names()):
        raise ValueError(problem)
    app[AGENTS] = _agents(config, app[SETTINGS], app[TOOLS])
    app[STARTED] = time.monotonic()
    app[COUNTERS] = {"calls_total": 0, "calls_refused": 0}
    counters = app[COUNTERS]
    calls = CallRegistry()
    metrics = GatewayMetrics(lambda: len(calls), lambda: counters)
    metrics.live_stats(lambda: [s.conversation.stats for s in calls.values()])
    metrics.agents(app[AGENTS].agents)
    app[SESSIONS] = calls
    app[METRICS] = metrics
    app[GC_WATCH] = PauseWatch(metrics.observe_gc_pause)
    recording = RecordingOptions(
        config.record_dir, config.record_s3_bucket, config.record_s3_prefix
    )
    if recording.enabled:
        app[RECORDER] = Recorder(recording, metrics)
    _call_records(app, config, recording)
    app[GATE] = Gate.for_rate(config.offer_rate, config.offer_burst)
    app[CANDIDATES] = ice.candidate_policy(
        config.allow_private_candidates, config.allow_mdns_candidates
    )
    if not config.auth_secret:
        log.warning(
            "open_dev_mode",
            note="no auth secret: signaling needs no token, and serves only requests made on "
            "this machine (loopback, no proxy); set --auth-secret before exposing voicegate",
        )
    # One loop probe for the process: admission decides on it, metrics report it.
    monitor = LagMonitor(on_sample=metrics.observe_loop_lag)
    app[ADMISSION] = Admission(config.max_sessions, config.max_loop_lag_ms, monitor)
    _routes(app.router, separate_metrics=bool(config.metrics_port))
    app.on_response_prepare.append(security_headers)
    app.on_startup.append(_start)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


def _agents(
    config: ServeConfig, settings: ConversationSettings, tools: ToolRegistry
) -> AgentCatalog:
    """The agents of the file (checked whole at start, so this cannot fail on a config that
    passed ``resolve``), or the one agent the flags make."""
    if not config.agents:
        return AgentCatalog.implicit(settings, config.max_call_seconds, tools)
    spec = load_agents(config.agents)
    base = Path(config.agents).resolve().parent
    catalog = AgentCatalog(spec, settings, config.max_call_seconds, base=base)
    log.info(
        "agents_loaded", file=config.agents, agents=list(spec.agents), default=spec.default_agent
    )
    return catalog


def _routes(router: web.UrlDispatcher, separate_metrics: bool) -> None:
    router.add_get("/", pages.index)
    router.add_get("/static/{path:.+}", pages.static_file)
    router.add_get("/healthz", health.healthz)
    router.add_get("/readyz", health.readyz)
    router.add_get("/metrics", health.metrics_elsewhere if separate_metrics else health.metrics)
    router.add_get("/api/ice-servers", offers.ice_servers)
    router.add_get("/api/agents", offers.list_agents)
    router.add_post("/api/offer", offers.post_offer)
    router.add_patch("/api/offer", offers.patch_offer)
    router.add_delete("/api/sessions/{pc_id}", offers.delete_session)
    router.add_get("/api/calls", history.list_calls)
    router.add_get("/api/calls/{call_id}", history.call_detail)
    router.add_get("/api/calls/{call_id}/audio/{stream}", history.call_audio)
    router.add_get("/calls", history.calls_page)


def _call_records(app: web.Application, config: ServeConfig, recording: RecordingOptions) -> None:
    """Who hears of each call's record: the call history, webhooks and traces. One ``CallLog``
    builds the records for all of them, off the audio path."""
    sinks: list[CallSink] = []
    store = open_history(config.call_store)
    if store is not None:
        app[CALL_HISTORY] = store
        app[HISTORY_WRITER] = HistoryWriter(
            store,
            keep_text=config.call_store_text != "none",
            retention_days=config.call_retention_days,
        )
        sinks.append(app[HISTORY_WRITER])
    agent_hooks = {a.name: a.webhook_url for a in app[AGENTS].agents.values() if a.webhook_url}
    if config.webhook_url or agent_hooks:
        keys = parse_secrets(Path(config.webhook_secret_file).read_text(encoding="utf-8"))
        app[WEBHOOKS] = WebhookSender(
            config.webhook_url,
            keys,
            agent_urls=agent_hooks,
            timeout_s=config.webhook_timeout,
            retry_seconds=config.webhook_retry_seconds,
            on_result=lambda event, result: app[METRICS].webhooks.inc(event=event, result=result),
        )
        sinks.append(app[WEBHOOKS])
    if tracing_enabled(os.environ):
        app[TRACER] = CallTracer(service_version=__version__)
        sinks.append(app[TRACER])
    if config.admin_token_file:
        app[ADMIN_TOKEN] = Path(config.admin_token_file).read_text(encoding="utf-8").strip()
    if sinks:
        app[CALL_LOG] = CallLog(
            sinks,
            Redaction.from_rules(config.redact),
            recording_location=recording.location,
        )


async def _start(app: web.Application) -> None:
    app[ADMISSION].monitor.start()
    app[GC_WATCH].start()
    services = AgentServices(app[AGENTS])
    app[AGENT_SERVICES] = services
    await services.start()
    writer = app.get(HISTORY_WRITER)
    if writer is not None:
        writer.start()


async def _shutdown(app: web.Application) -> None:
    await app[SESSIONS].close_all("shutdown")
    await app[BACKEND].aclose()


async def _cleanup(app: web.Application) -> None:
    await app[ADMISSION].monitor.stop()
    app[GC_WATCH].stop()
    services = app.get(AGENT_SERVICES)
    if services is not None:
        await services.close()
    recorder = app.get(RECORDER)
    if recorder is not None:
        await recorder.aclose()
    call_log = app.get(CALL_LOG)
    if call_log is not None:
        await call_log.aclose()
    webhooks = app.get(WEBHOOKS)
    if webhooks is not None:
        await webhooks.aclose()
    writer = app.get(HISTORY_WRITER)
    if writer is not None:
        await writer.aclose()
    tracer = app.get(TRACER)
    if tracer is not None:
        await tracer.aclose()
    await app[AGENTS].close()


async def drain(app: web.Application, timeout: float, cut: asyncio.Event | None = None) -> int:
    """Graceful shutdown, step one: take no new calls (readiness goes false), let the running
    ones finish for up to ``timeout`` seconds (or until ``cut`` is set, e.g. a second signal),
    then end the rest with a message to the browser. Returns how many calls were ended."""
    app[GATE].draining = True
    return await app[SESSIONS].drain(timeout, cut)
