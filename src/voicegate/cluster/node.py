"""This process as a member of a cluster (``--cluster-redis``): the call store that keeps each
call's owner and conversation state in the directory and adopts calls of other nodes, the
request routing of a single-process node, its heartbeat, and drain that moves calls.

A worker of a supervised node gets the call store only: its supervisor routes and beats for the
whole node. Everything here degrades to a single node when Redis is down: calls stay, new
offers are served here, nothing answers 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Final

import structlog
from aiohttp import web

from voicegate.call.session import PeerSession
from voicegate.cluster import state
from voicegate.cluster.directory import Directory
from voicegate.cluster.router import NodeRouter, Placement, peek_call
from voicegate.config import ServeConfig
from voicegate.signaling.calls import StoredCall
from voicegate.signaling.errors import Handler
from voicegate.signaling.keys import ADMISSION, CALL_LOG, CONFIG, GATE, SESSIONS

__all__ = ["CLUSTER", "ClusterNode", "join_cluster", "move_calls", "start_cluster"]

log = structlog.get_logger(__name__)

MAX_ADOPTED_KEPT: Final = 10_000
RECONNECT: Final = json.dumps(
    {"label": "rtvi-ai", "type": "server-message", "data": {"type": "reconnect", "reason": "drain"}}
)
"""Asks the page to move its call (it reconnects with ``restart_pc``, same pc_id)."""


class ClusterNode:
    """The ``CallStore`` of one process, and (front process only) its router."""

    def __init__(self, app: web.Application, config: ServeConfig, worker: int | None) -> None:
        self.app = app
        self.config = config
        self.worker = worker
        self.directory = Directory(config.cluster_redis, config.node_id, worker or 0)
        self.router: NodeRouter | None = None
        self._subjects: dict[str, str | None] = {}
        self._saving: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._adopted_from: dict[str, tuple[str, int] | None] = {}
        """Adopted calls -> the owner their record named when this process took them."""

    # -- CallStore ---------------------------------------------------------------------------

    def call_started(self, session: PeerSession, subject: str | None) -> None:
        pc_id = session.pc_id
        self._subjects[pc_id] = subject
        session.conversation.on_history = lambda: self._save_soon(pc_id)
        self._save_soon(pc_id)

    def call_ended(self, session: PeerSession) -> None:
        pc_id = session.pc_id
        self._subjects.pop(pc_id, None)
        self._dirty.discard(pc_id)
        task = self._saving.pop(pc_id, None)
        if task is not None:
            task.cancel()
        self._spawn(self.directory.release(pc_id))

    async def adopt(self, pc_id: str) -> StoredCall | None:
        text = await self.directory.state(pc_id)
        stored = state.decode(text) if text else None
        if stored is not None:
            self._adopted_from[pc_id] = await self.directory.owner(pc_id)
            while len(self._adopted_from) > MAX_ADOPTED_KEPT:
                self._adopted_from.pop(next(iter(self._adopted_from)))
            log.info("call_adopted", pc_id=pc_id, history_messages=len(stored.history))
        return stored

    async def still_ours(self, pc_id: str) -> bool:
        """Whether a call that ended here ended for good: not when another node holds its
        record by now (the call moved there; that node reports its end). The node this process
        adopted the call from does not count: a call that ends before this process's own claim
        reached the directory still names it."""
        previous = self._adopted_from.pop(pc_id, None)
        owner = await self.directory.owner(pc_id)
        return (
            owner is None or owner == (self.config.node_id, self.worker or 0) or owner == previous
        )

    # -- keeping state -----------------------------------------------------------------------

    def _save_soon(self, pc_id: str) -> None:
        """One save in flight per call; changes meanwhile are saved right after it."""
        if pc_id in self._saving:
            self._dirty.add(pc_id)
            return
        task = asyncio.get_running_loop().create_task(self._save(pc_id))
        self._saving[pc_id] = task
        task.add_done_callback(lambda _t: self._saved(pc_id, _t))

    def _saved(self, pc_id: str, task: asyncio.Task[None]) -> None:
        if self._saving.get(pc_id) is task:
            del self._saving[pc_id]
        if pc_id in self._dirty:
            self._dirty.discard(pc_id)
            self._save_soon(pc_id)

    async def _save(self, pc_id: str) -> None:
        session = self.app[SESSIONS].get(pc_id)
        if session is None:
            return
        ttl = self.config.max_call_seconds + self.config.reconnect_grace
        text = state.encode(session.conversation, self._subjects.get(pc_id))
        await self.directory.claim(pc_id, ttl)
        await self.directory.save_state(pc_id, text, ttl)

    async def save_all(self) -> None:
        pc_ids = list(self.app[SESSIONS].keys())
        await asyncio.gather(*(self._save(pc_id) for pc_id in pc_ids))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- routing (single-process node) -------------------------------------------------------

    def placement(self) -> Placement:
        app = self.app
        calls = len(app[SESSIONS])
        draining = app[GATE].draining
        return Placement(
            calls=calls,
            capacity=app[CONFIG].max_sessions,
            lag_ms=app[ADMISSION].monitor.lag_ms,
            ready=not draining and calls < app[CONFIG].max_sessions,
            draining=draining,
        )

    async def aclose(self) -> None:
        for task in list(self._saving.values()) + list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._saving.values(), *self._tasks, return_exceptions=True)
        if self.router is not None:
            await self.router.aclose()
        await self.directory.aclose()


CLUSTER: Final = web.AppKey("cluster", ClusterNode)


def _call_route(request: web.Request) -> bool:
    path, method = request.path, request.method
    return (path == "/api/offer" and method in ("POST", "PATCH")) or (
        path.startswith("/api/sessions/") and method == "DELETE"
    )


@web.middleware
async def route_calls(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Innermost (after access checks): a request for a call another node owns goes there."""
    node = request.app[CLUSTER]
    if node.router is None or not _call_route(request):
        return await handler(request)
    body = await request.read() if request.method != "DELETE" else b""
    if request.method == "DELETE":
        pc_id: str | None = request.match_info.get("pc_id")
        restart = False
    else:
        pc_id, restart = peek_call(body)
    calls = request.app[SESSIONS]
    owned = pc_id is not None and pc_id in calls
    p = node.placement()
    can_take = request.method == "POST" and p.ready
    url = await node.router.route(request, pc_id, restart, owned=owned, can_take=can_take)
    if url is None:
        return await handler(request)
    response = await node.router.forward(request, body, url)
    if response.status == 503 and restart and not owned and not p.draining:
        # The owner did not answer: it is dead even if its heartbeat has not expired yet.
        return await handler(request)
    return response


def join_cluster(app: web.Application, config: ServeConfig, worker: int | None) -> ClusterNode:
    """Before the app starts: keep calls in the directory; route requests when this process is
    the node's front (no supervisor)."""
    node = ClusterNode(app, config, worker)
    app[CLUSTER] = node
    app[SESSIONS].store = node
    call_log = app.get(CALL_LOG)
    if call_log is not None:
        call_log.still_ours = node.still_ours
    if worker is None:
        app.middlewares.append(route_calls)

    async def close(_: web.Application) -> None:
        await node.aclose()

    app.on_cleanup.append(close)
    return node


async def start_cluster(app: web.Application, url: str) -> None:
    """Once listening: register the node and start its heartbeat (front process only)."""
    node = app[CLUSTER]
    if node.worker is None:
        node.router = NodeRouter(node.config, url, node.placement)
        await node.router.start()


async def move_calls(app: web.Application, timeout: float, cut: asyncio.Event | None) -> int:
    """Drain, step zero: turn unready, save every call's state, and ask each browser to move
    its call to another node (the ``reconnect`` server-message). Only when some other node can
    take calls; the usual drain then waits for the calls to leave. Returns calls asked."""
    node = app[CLUSTER]
    app[GATE].draining = True
    if node.router is not None:
        await node.router.publish()
    others = [
        n for n in await node.directory.nodes() if n.id != node.config.node_id and n.can_take()
    ]
    sessions = list(app[SESSIONS].values())
    if not others or not sessions:
        log.info("drain_no_move", calls=len(sessions), other_nodes=len(others))
        return 0
    with contextlib.suppress(Exception):
        await node.save_all()
    for session in sessions:
        session.send_message(RECONNECT)
    log.info("drain_moving_calls", calls=len(sessions), other_nodes=len(others))
    return len(sessions)
