"""Health and telemetry: ``/healthz`` (liveness), ``/readyz`` (readiness for a load balancer)
and ``/metrics`` (Prometheus text). They start nothing and show counts, never call ids, content
or secrets. ``/metrics`` can be closed further: ``--metrics-token`` requires a bearer token for
it, ``--metrics-port`` moves it to its own listener (``create_metrics_app``), e.g. on loopback
or a private interface only."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from voicegate import __version__
from voicegate.observability.metrics import CONTENT_TYPE
from voicegate.signaling.errors import ApiError
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
from voicegate.signaling.middleware import errors_as_json
from voicegate.signaling.subjects import SUBJECTS_IN_HEALTH, counts

__all__ = [
    "METRICS_HANDLER",
    "MetricsHandler",
    "check_metrics_token",
    "create_metrics_app",
    "healthz",
    "metrics",
    "metrics_elsewhere",
    "readyz",
]


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    extra = {}
    if app.get(SUBJECTS_IN_HEALTH):
        extra["subjects"] = counts(app[CONFIG].auth_secret, app[SESSIONS].subjects())
    return web.json_response(
        extra
        | {
            "status": "ok",
            "version": __version__,
            "backend": app[BACKEND].name,
            "sessions": len(app[SESSIONS]),
            "max_sessions": app[CONFIG].max_sessions,
            "uptime_s": round(time.monotonic() - app[STARTED], 1),
            "calls_total": app[COUNTERS]["calls_total"],
            "calls_registered": app[SESSIONS].registered,
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


MetricsHandler = Callable[[web.Request], Awaitable[web.Response]]
METRICS_HANDLER: Final[web.AppKey[MetricsHandler]] = web.AppKey("metrics_handler")
"""An app whose /metrics is not its own GatewayMetrics (a node's supervisor) names it here."""


def check_metrics_token(request: web.Request) -> None:
    """401 unless the request carries the server's ``--metrics-token`` (when one is set)."""
    token = request.app[CONFIG].metrics_token
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(
                401,
                "/metrics needs Authorization: Bearer <the server's --metrics-token>",
                reason="metrics_token",
            )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition: counts, never call ids or content. Behind
    ``--metrics-token`` when one is set (docs/observability.md)."""
    check_metrics_token(request)
    text = request.app[METRICS].render()
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def metrics_elsewhere(request: web.Request) -> web.Response:
    raise ApiError(404, "/metrics is served on the separate metrics listener (--metrics-port)")


def create_metrics_app(main: web.Application) -> web.Application:
    """An app serving only ``/metrics`` of the ``main`` app, for its own listener."""
    app = web.Application(client_max_size=1024, middlewares=[errors_as_json])
    app[CONFIG] = main[CONFIG]
    if METRICS_HANDLER in main:
        app.router.add_get("/metrics", main[METRICS_HANDLER])
    else:
        app[METRICS] = main[METRICS]
        app.router.add_get("/metrics", metrics)
    return app
