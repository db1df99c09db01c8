"""Health and telemetry: ``/healthz`` (liveness), ``/readyz`` (readiness for a load balancer)
and ``/metrics`` (Prometheus text). They start nothing and show counts, never call ids, content
or secrets."""

from __future__ import annotations

import time

from aiohttp import web

from voicegate import __version__
from voicegate.observability.metrics import CONTENT_TYPE
from voicegate.signaling.keys import (
    ADMISSION,
    BACKEND,
    CONFIG,
    COUNTERS,
    GATE,
    METRICS,
    SESSIONS,
    STARTED,
)


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "backend": app[BACKEND].name,
            "sessions": len(app[SESSIONS]),
            "max_sessions": app[CONFIG].max_sessions,
            "uptime_s": round(time.monotonic() - app[STARTED], 1),
            "calls_total": app[COUNTERS]["calls_total"],
            "loop_lag_ms": round(app[ADMISSION].monitor.lag_ms, 1),
            "ready": _ready(app) is None,
            "draining": app[GATE].draining,
        }
    )


async def readyz(request: web.Request) -> web.Response:
    """Readiness for a load balancer: false while draining or full, so new calls go elsewhere."""
    problem = _ready(request.app)
    if problem is not None:
        return web.json_response({"ready": False, "error": problem}, status=503)
    return web.json_response({"ready": True})


def _ready(app: web.Application) -> str | None:
    """Why this process takes no new call now, or None."""
    if app[GATE].draining:
        return "voicegate is shutting down (draining calls)"
    if len(app[SESSIONS]) >= app[CONFIG].max_sessions:
        return "voicegate is at its concurrent call limit"
    return None


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition. Open like /healthz: it shows counts, never call ids or
    content; keep it off the public listener (docs/observability.md)."""
    text = request.app[METRICS].render()
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})
