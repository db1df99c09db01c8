"""The supervisor of a node with several workers: it owns the public HTTP port and sends each
request to the worker that should have it.

A new offer goes to the least-loaded ready worker (active calls, then event-loop lag); every
request that names a call (``PATCH /api/offer``, ``restart_pc``, ``DELETE /api/sessions/...``)
goes to the worker that owns it, learnt from the offer's answer. When the owner is gone (it died,
or drains) a ``restart_pc`` goes to another worker, which adopts the call. ``/healthz``,
``/readyz`` and ``/metrics`` describe the whole node, workers labelled. With a cluster directory
(``--cluster-redis``) the ``NodeRouter`` may send a request to another node instead.

Access checks (tokens, CORS) stay in the workers, which see the original headers; the offer
rate limit is applied here, because only the supervisor sees the client's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from typing import Final

import aiohttp
import structlog
from aiohttp import web

from voicegate import __version__
from voicegate.cluster.node_metrics import NodeMetrics
from voicegate.cluster.proxy import ForwardError, forward
from voicegate.cluster.router import NodeRouter, Placement, late_forward, peek_call
from voicegate.cluster.subject_limit import NodeSubjects
from voicegate.cluster.workers import Worker, WorkerPool
from voicegate.config import ServeConfig
from voicegate.observability.exposition import CONTENT_TYPE
from voicegate.signaling.admission import RETRY_AFTER_S
from voicegate.signaling.calls import CALL_SEQ_HEADER
from voicegate.signaling.errors import ApiError
from voicegate.signaling.health import METRICS_HANDLER, check_metrics_token, metrics_elsewhere
from voicegate.signaling.keys import CONFIG, Gate
from voicegate.signaling.listener import serve
from voicegate.signaling.middleware import errors_as_json, rate_limited
from voicegate.signaling.paths import one_path

__all__ = ["Supervisor", "run_supervisor"]

log = structlog.get_logger(__name__)

FORWARD_TIMEOUT: Final = 30.0
"""A worker answers an offer within its own 20 s set-up limit; this only catches a hung one."""
MAX_OWNERS: Final = 100_000
SUPERVISOR: Final = web.AppKey("supervisor", object)


class Supervisor:
    def __init__(self, config: ServeConfig, count: int) -> None:
        self.config = config
        self.pool = WorkerPool(config, count)
        self.pool.lost_listeners.append(self._worker_lost)
        # Workers see every request from loopback, so the per-address limits (offers, trickled
        # candidates, ICE credentials) are applied here, at the first hop, as one process would.
        self.gate = Gate.for_rate(config.offer_rate, config.offer_burst)
        self.owners: dict[str, tuple[int, int]] = {}
        """pc_id -> (worker index, that worker's incarnation) from the offers' answers."""
        self.draining = False
        self.started = time.monotonic()
        self.router: NodeRouter | None = None
        self.node_metrics = NodeMetrics(self.pool.workers)
        self.subjects = NodeSubjects(config)
        """--max-calls-per-subject over all the workers (``cluster.subject_limit``)."""

    # -- which worker ------------------------------------------------------------------------

    def owner(self, pc_id: str) -> Worker | None:
        """The live worker that owns ``pc_id``, if it is still the same process."""
        entry = self.owners.get(pc_id)
        if entry is None:
            return None
        w = self.pool.workers[entry[0]]
        return w if w.alive and w.restarts == entry[1] else None

    def _worker_lost(self, w: Worker) -> None:
        for pc_id in [p for p, (i, n) in self.owners.items() if i == w.index and n == w.restarts]:
            del self.owners[pc_id]

    def _remember(self, pc_id: str, w: Worker) -> None:
        if len(self.owners) >= MAX_OWNERS:  # oldest first: dicts keep insertion order
            del self.owners[next(iter(self.owners))]
        self.owners.pop(pc_id, None)
        self.owners[pc_id] = (w.index, w.restarts)

    def _calls(self) -> int:
        return sum(w.sessions + w.pending for w in self.pool.workers if w.alive)

    def _has_room(self) -> bool:
        """Whether this node takes one more call: not draining, under --max-sessions, and a
        ready worker with room."""
        return (
            not self.draining
            and self._calls() < self.config.max_sessions
            and self.pool.pick() is not None
        )

    def placement(self) -> Placement:
        """This node's load as the cluster directory sees it."""
        alive = [w for w in self.pool.workers if w.alive]
        return Placement(
            calls=sum(w.sessions for w in alive),
            capacity=sum(max(w.max_sessions, 1) for w in alive),
            lag_ms=max((w.lag_ms for w in alive), default=0.0),
            ready=self._has_room(),
            draining=self.draining,
        )

    # -- handlers ----------------------------------------------------------------------------

    async def offer(self, request: web.Request) -> web.StreamResponse:
        if self.router is not None and self.router.too_late(request):
            return late_forward()
        body = await request.read()
        pc_id, restart = peek_call(body)
        refused = rate_limited(
            request,
            self.gate.offers if request.method == "POST" else self.gate.patches,
            "call offers" if request.method == "POST" else "candidate updates",
        )
        if refused is not None:
            return refused
        owner = self.owner(pc_id) if pc_id else None
        if request.method == "POST":
            target = owner
            if restart and owner is not None and owner.draining:
                target = None  # the owner drains: another worker adopts the call
            if self.router is not None:
                remote = await self.router.route(
                    request,
                    pc_id,
                    restart,
                    owned=target is not None,
                    can_take=self._has_room(),
                )
                if remote is not None:
                    response = await self.router.forward(request, body, remote)
                    if not self._adopt_here(response, restart, owned=target is not None):
                        return response
            if target is None and self.draining:
                # No other node took it: a draining node starts no call, as one process would.
                raise ApiError(
                    503, "voicegate is shutting down (draining calls); retry", retry_after=5
                )
            if target is None and self._calls() >= self.config.max_sessions:
                # --max-sessions is the node's limit: the workers' shares round up, so the
                # supervisor, which sees them all, keeps the total.
                raise ApiError(
                    503,
                    f"voicegate is at its limit of {self.config.max_sessions} concurrent calls; "
                    "retry later",
                    reason="max_sessions",
                    retry_after=RETRY_AFTER_S,
                )
            if target is not None:
                return await self._to_worker(request, body, target, learn=True)
            picked = self.pool.pick(exclude=owner.index if owner is not None else None)
            if restart:  # an adoption: the worker decides, as for a live restart
                return await self._place(request, body, picked or self.pool.any_alive())
            with self.subjects.new_call(request, self.pool.workers) as placed:
                chosen = picked or self.pool.any_alive()
                response = await self._place(request, body, chosen)
                placed.answered(chosen, response)
                return response
        # PATCH: trickled candidates for a call
        if owner is None and self.router is not None and pc_id:
            remote = await self.router.route(request, pc_id, False, owned=False, can_take=False)
            if remote is not None:
                return await self.router.forward(request, body, remote)
        return await self._to_worker(request, body, owner or self.pool.any_alive())

    async def delete(self, request: web.Request) -> web.StreamResponse:
        if self.router is not None and self.router.too_late(request):
            return late_forward()
        pc_id = request.match_info["pc_id"]
        owner = self.owner(pc_id)
        if owner is None and self.router is not None:
            remote = await self.router.route(request, pc_id, False, owned=False, can_take=False)
            if remote is not None:
                return await self.router.forward(request, b"", remote)
        return await self._to_worker(request, b"", owner or self.pool.any_alive())

    async def passthrough(self, request: web.Request) -> web.StreamResponse:
        """The page, its files, ICE servers: any live worker answers the same."""
        if request.method == "GET" and request.path == "/api/ice-servers":
            refused = rate_limited(request, self.gate.ice_servers, "ICE server requests")
            if refused is not None:
                return refused
        return await self._to_worker(request, await request.read(), self.pool.any_alive())

    def _adopt_here(self, response: web.StreamResponse, restart: bool, *, owned: bool) -> bool:
        """Whether a forwarded ``restart_pc`` that failed is adopted by a worker here instead:
        the owner did not answer, so it is dead even if its heartbeat has not expired yet (what
        a single-process node does; the adoption is fenced, so the old owner stands down)."""
        return response.status == 503 and restart and not owned and not self.draining

    async def _place(
        self, request: web.Request, body: bytes, w: Worker | None
    ) -> web.StreamResponse:
        """A new call (or an adoption) sent to the worker just picked, counted against it from
        this moment until it answers: offers arriving meanwhile see it loaded and go elsewhere."""
        if w is None:
            return await self._to_worker(request, body, w, learn=True)
        w.pending += 1
        try:
            return await self._to_worker(request, body, w, learn=True)
        finally:
            w.pending -= 1

    async def _to_worker(
        self, request: web.Request, body: bytes, w: Worker | None, learn: bool = False
    ) -> web.StreamResponse:
        if w is None:
            raise ApiError(503, "no worker of this node is running; retry later", retry_after=5)
        try:
            response = await forward(
                self.pool.client, w.url, request, body, timeout=FORWARD_TIMEOUT
            )
        except ForwardError:
            raise ApiError(
                503, "the worker handling this request went away; retry", retry_after=1
            ) from None
        if learn and response.status == 200 and response.body is not None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                answer = json.loads(bytes(response.body))  # type: ignore[arg-type]
                pc_id = answer.get("pc_id")
                if isinstance(pc_id, str):
                    # A new call counts at once; a restart on the worker that already holds the
                    # call replaces it, it adds none.
                    if self.owner(pc_id) is not w:
                        w.call_answered(_call_seq(response))
                    self._remember(pc_id, w)
        response.headers.popall(CALL_SEQ_HEADER, None)  # between worker and supervisor only
        return response

    # -- health of the whole node ------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        workers = self.pool.workers
        alive = [w for w in workers if w.alive]
        return web.json_response(
            {
                "status": "ok" if alive else "degraded",
                "version": __version__,
                "backend": next((w.backend for w in workers if w.backend), ""),
                "sessions": sum(w.sessions for w in alive),
                "max_sessions": self.config.max_sessions,
                "uptime_s": round(time.monotonic() - self.started, 1),
                "calls_total": sum(w.calls_total for w in workers),
                "loop_lag_ms": round(max((w.lag_ms for w in alive), default=0.0), 1),
                "ready": self.placement().ready,
                "draining": self.draining,
                "node_id": self.config.node_id,
                "workers": [w.as_dict() for w in workers],
            }
        )

    async def readyz(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response(
                {"ready": False, "error": "voicegate is shutting down (draining calls)"},
                status=503,
            )
        if self.pool.pick() is None:
            return web.json_response(
                {"ready": False, "error": "no worker of this node can take a call now"},
                status=503,
            )
        return web.json_response({"ready": True})

    async def metrics(self, request: web.Request) -> web.Response:
        check_metrics_token(request)
        token = self.config.metrics_token
        auth = {"Authorization": f"Bearer {token}"} if token else {}

        async def one(w: Worker) -> tuple[int, str] | None:
            try:
                async with self.pool.client.get(
                    w.url + "/metrics", timeout=aiohttp.ClientTimeout(total=2.0), headers=auth
                ) as resp:
                    if resp.status != 200:
                        raise ValueError(f"status {resp.status}")
                    return w.index, (await resp.read()).decode()
            except Exception as exc:  # a worker that cannot answer leaves only its series out
                log.warning("worker_metrics_unavailable", worker=w.index, error=repr(exc))
                return None

        texts = [t for t in await asyncio.gather(*(one(w) for w in self.pool.workers)) if t]
        body = self.node_metrics.render(texts)
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


def create_supervisor_app(sup: Supervisor) -> web.Application:
    app = web.Application(
        client_max_size=sup.config.max_body_bytes, middlewares=[one_path, errors_as_json]
    )
    app[CONFIG] = sup.config
    app[SUPERVISOR] = sup
    r = app.router
    r.add_get("/healthz", sup.healthz)
    r.add_get("/readyz", sup.readyz)
    app[METRICS_HANDLER] = sup.metrics
    r.add_get("/metrics", metrics_elsewhere if sup.config.metrics_port else sup.metrics)
    r.add_post("/api/offer", sup.offer)
    r.add_patch("/api/offer", sup.offer)
    r.add_delete("/api/sessions/{pc_id}", sup.delete)
    r.add_route("*", "/{tail:.*}", sup.passthrough)
    return app


async def run_supervisor(config: ServeConfig, count: int) -> int:
    """Run a node of ``count`` workers until SIGTERM/SIGINT; 0 after a clean drain."""
    sup = Supervisor(config, count)
    from voicegate.cluster.workers import StartFailed

    try:
        await sup.pool.start()
    except StartFailed as exc:
        print(f"voicegate: {exc}", flush=True)
        return exc.code if exc.code and exc.code > 0 else 1
    app = create_supervisor_app(sup)
    # The public listener: the same request timeout and per-address connection bound as a
    # single process (and the separate /metrics listener when one is configured).
    listener = await serve(app, config)
    url = listener.url
    if config.cluster_redis:
        sup.router = NodeRouter(config, config.node_url or url, sup.placement)
        await sup.router.start()
    log.info("listening", url=url, workers=count, node_id=config.node_id)
    print(f"voicegate {__version__} listening on {url}", flush=True)
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1:  # a second signal cuts the workers' drain short
            sup.pool.signal_all(signal.SIGTERM)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    log.info("shutting_down", drain_timeout_s=config.drain_timeout)
    sup.draining = True
    if sup.router is not None:
        await sup.router.publish()
    sup.pool.stopping = True
    sup.pool.signal_all(signal.SIGTERM)
    # The workers drain (their calls move or end); requests keep being routed meanwhile.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(config.drain_timeout + 15):
            await sup.pool.wait_all()
    await sup.pool.kill_all()
    if sup.router is not None:
        await sup.router.aclose()
    await listener.close()
    await sup.pool.aclose()
    log.info("drained")
    return 0


def _call_seq(response: web.StreamResponse) -> int | None:
    value = response.headers.get(CALL_SEQ_HEADER, "")
    return int(value) if value.isdigit() else None
