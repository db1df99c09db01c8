"""Listening sockets for the signaling app (and the optional separate metrics listener), with
two protections aiohttp's own sites lack:

- **Slow clients.** aiohttp 3.14 has no request-header timeout; its ``keepalive_timeout`` does,
  however, run from the moment a connection opens and closes it if no complete request has
  arrived by then (web_protocol ``_process_keepalive``: the timer is not pushed back by bytes
  that trickle in). Set to ``--request-timeout`` it is both the header deadline and the idle
  keep-alive limit; the API reads bodies under the same deadline (``signaling.requests``).
- **Connections per address.** ``ConnectionGuard`` wraps each connection's protocol and counts
  open connections by client address (IPv6 by /64, as the rate limits do); one over
  ``--max-connections-per-ip`` gets a JSON 429 and is closed before aiohttp parses anything.
  Behind a reverse proxy every connection comes from the proxy: raise the limit or set 0.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from voicegate.config import ServeConfig
from voicegate.signaling.health import create_metrics_app
from voicegate.signaling.ratelimit import client_key

__all__ = ["ConnectionGuard", "GuardedSite", "Listener", "runner_options", "serve", "url_of"]

log = structlog.get_logger(__name__)


class ConnectionGuard:
    """Counts live connections per client address; refuses those over ``limit`` (0: none)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()
        self.refused = 0

    def wrap(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        return _Guarded(self, inner)

    def admit(self, key: str) -> bool:
        if self.limit and self.open[key] >= self.limit:
            self.refused += 1
            return False
        self.open[key] += 1
        return True

    def release(self, key: str) -> None:
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]


def _refusal(limit: int) -> bytes:
    body = json.dumps(
        {
            "error": f"too many open connections from your address (limit {limit}); "
            "close some and retry",
            "reason": "connection_limit",
        }
    ).encode()
    head = (
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
        f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, entered only if the guard admits its address."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        key = client_key(str(peer[0])) if isinstance(peer, tuple) and peer else "unknown"
        if not self.guard.admit(key):
            log.warning("connection_refused", reason="connection_limit", client=key)
            assert isinstance(transport, asyncio.Transport)
            transport.write(_refusal(self.guard.limit))
            transport.close()
            return
        self.key = key
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.key is None:
            return
        self.guard.release(self.key)
        self.key = None
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.key is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.key is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass a ``ConnectionGuard`` first."""

    __slots__ = ("_host", "_port", "guard")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard):
        super().__init__(runner)
        self._host = host
        self._port = port
        self.guard = guard

    @property
    def name(self) -> str:
        return url_of(self._host, self.port)

    @property
    def port(self) -> int:
        if self._server is not None and getattr(self._server, "sockets", None):
            return int(self._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self.guard.wrap(server()),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(slots=True)
class Listener:
    """The running listeners of one signaling app; ``close()`` stops them and runs the app's
    shutdown and cleanup (drain first, with ``signaling.app.drain``)."""

    url: str
    port: int
    site: GuardedSite
    runners: list[web.AppRunner]
    metrics_url: str | None = None

    async def close(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()


def runner_options(config: ServeConfig) -> dict[str, Any]:
    """AppRunner keywords: no access log (structlog has ours), the request deadline."""
    return {
        "access_log": None,
        "handle_signals": False,
        "keepalive_timeout": config.request_timeout,
    }


async def serve(
    app: web.Application, config: ServeConfig, host: str | None = None, port: int | None = None
) -> Listener:
    """Listen for ``app`` on ``host``:``port`` (default: the configuration's), and for
    ``/metrics`` on ``--metrics-host``:``--metrics-port`` when one is configured."""
    runners: list[web.AppRunner] = []
    try:
        runner = web.AppRunner(app, **runner_options(config))
        await runner.setup()
        runners.append(runner)
        guard = ConnectionGuard(config.max_connections_per_ip)
        bind = config.host if host is None else host
        site = GuardedSite(runner, bind, config.port if port is None else port, guard)
        await site.start()
        listener = Listener(url_of(bind, site.port), site.port, site, runners)
        if config.metrics_port:
            metrics = web.AppRunner(create_metrics_app(app), **runner_options(config))
            await metrics.setup()
            runners.append(metrics)
            metrics_site = GuardedSite(
                metrics,
                config.metrics_host,
                config.metrics_port,
                ConnectionGuard(config.max_connections_per_ip),
            )
            await metrics_site.start()
            listener.metrics_url = url_of(config.metrics_host, metrics_site.port)
        return listener
    except BaseException:
        for started in reversed(runners):
            await started.cleanup()
        raise
