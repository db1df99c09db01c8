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
from voicegate.cluster.directory import HEARTBEAT_S, Directory
from voicegate.cluster.redis_conn import RedisOptions
from voicegate.cluster.router import NodeRouter, Placement, late_forward, peek_call
from voicegate.config import ServeConfig
from voicegate.signaling.calls import CALL_COUNTED, StoredCall
from voicegate.signaling.errors import Handler
from voicegate.signaling.keys import ADMISSION, CALL_LOG, CONFIG, GATE, SESSIONS
from voicegate.signaling.subjects import digest

__all__ = ["CLUSTER", "ClusterNode", "join_cluster", "move_calls", "start_cluster"]

log = structlog.get_logger(__name__)

RECONNECT: Final = json.dumps(
    {"label": "rtvi-ai", "type": "server-message", "data": {"type": "reconnect", "reason": "drain"}}
)
"""Asks the page to move its call (it reconnects with ``restart_pc``, same pc_id)."""
MAX_UNRELEASED: Final = 10000
"""Ended calls whose release waits for Redis to answer; a release beyond it is dropped (logged)
and its record expires on its own TTL."""
SUPERSEDED: Final = "superseded"
"""Close reason of a copy of a call that another process adopted meanwhile."""


class ClusterNode:
    """The ``CallStore`` of one process, and (front process only) its router."""

    def __init__(self, app: web.Application, config: ServeConfig, worker: int | None) -> None:
        self.app = app
        self.config = config
        self.worker = worker
        self.directory = Directory(
            config.cluster_redis, config.node_id, worker or 0, RedisOptions.for_node(config)
        )
        self.router: NodeRouter | None = None
        self._subjects: dict[str, str | None] = {}
        self._saving: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.placing: dict[int, web.Request] = {}
        """Offers this node took that its registry does not count yet (``CALL_COUNTED``)."""
        self._epochs: dict[str, int] = {}
        """pc_id -> the epoch this process holds the call at (1 for a call started here)."""
        self._fence: asyncio.Task[None] | None = None
        self._unreleased: dict[str, int] = {}
        """pc_id -> epoch of a call that ended here while Redis was out of reach: its record is
        marked ended once Redis answers again, so no node adopts a call that was hung up."""

    # -- CallStore ---------------------------------------------------------------------------

    def call_started(self, session: PeerSession, subject: str | None) -> None:
        pc_id = session.pc_id
        self._subjects[pc_id] = subject
        if subject is not None:
            self._spawn(self.directory.subject_add(self._digest(subject), pc_id, self._ttl()))
        self._epochs.setdefault(pc_id, 1)  # an adopted call has its epoch from ``adopt``
        session.conversation.on_history = lambda: self._save_soon(pc_id)
        self._save_soon(pc_id)

    def call_ended(self, session: PeerSession) -> None:
        pc_id = session.pc_id
        subject = self._subjects.pop(pc_id, None)
        if subject is not None and session.close_reason != SUPERSEDED:  # moved: still live
            self._spawn(self.directory.subject_remove(self._digest(subject), pc_id))
        self._dirty.discard(pc_id)
        epoch = self._epochs.pop(pc_id, None)
        task = self._saving.pop(pc_id, None)
        if task is not None:
            task.cancel()
        if epoch is not None and session.close_reason != SUPERSEDED:
            self._spawn(self._release(pc_id, epoch))

    async def _release(self, pc_id: str, epoch: int) -> bool:
        """Mark the call's record ended; False (kept for ``check_calls``) while Redis is out
        of reach."""
        if await self.directory.release(pc_id, epoch) is None:
            if pc_id in self._unreleased or len(self._unreleased) < MAX_UNRELEASED:
                self._unreleased[pc_id] = epoch
            else:
                log.warning("call_release_dropped", pc_id=pc_id, epoch=epoch)
            return False
        self._unreleased.pop(pc_id, None)
        return True

    def _digest(self, subject: str) -> str:
        return digest(self.config.auth_secret, subject)

    async def subject_calls(self, subject: str) -> int | None:
        return await self.directory.subject_calls(self._digest(subject))

    async def adopt(self, pc_id: str) -> StoredCall | None:
        taken = await self.directory.adopt(pc_id, self._ttl())
        if taken is None:
            return None
        epoch, text = taken
        stored = state.decode(text)
        if stored is not None:
            self._epochs[pc_id] = epoch
            log.info("call_adopted", pc_id=pc_id, epoch=epoch, history_messages=len(stored.history))
        return stored

    async def still_ours(self, pc_id: str) -> bool:
        """Whether a call that ended here ended for good: not when another node holds its
        record by now (the call moved there, fenced at a higher epoch; that node reports its
        end)."""
        owner = await self.directory.owner(pc_id)
        return owner is None or owner == (self.config.node_id, self.worker or 0)

    # -- fencing -----------------------------------------------------------------------------

    def _superseded(self, pc_id: str, epoch: int) -> None:
        """Another process adopted this call (at a higher epoch) while this one stalled or was
        cut off: close this copy and its model stream now, leaving the record alone."""
        session = self.app[SESSIONS].get(pc_id)
        if session is None or self._epochs.get(pc_id) != epoch:
            return
        self._epochs.pop(pc_id, None)
        log.warning("call_superseded", pc_id=pc_id, epoch=epoch)
        self._spawn(session.close(SUPERSEDED))

    async def check_calls(self) -> None:
        """One round trip: every call held here still at its epoch? A superseded copy closes;
        a record Redis lost (restarted empty) is written again with the call's state."""
        held = [(p, e) for p, e in self._epochs.items() if p in self.app[SESSIONS]]
        stored = await self.directory.epochs([p for p, _ in held])
        if stored is None:
            return  # Redis down: keep every call, check again on the next beat
        for pc_id, epoch in list(self._unreleased.items()):
            if pc_id in self.app[SESSIONS]:  # restarted here meanwhile: live again
                self._unreleased.pop(pc_id, None)
                continue
            log.info("call_release_retried", pc_id=pc_id, epoch=epoch)
            if not await self._release(pc_id, epoch):
                break  # still out of reach: the next beat tries again
        for (pc_id, epoch), current in zip(held, stored, strict=True):
            if current is None:
                log.info("call_record_rebuilt", pc_id=pc_id, epoch=epoch)
                self._save_soon(pc_id)
            elif current > epoch:
                self._superseded(pc_id, epoch)

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await self.check_calls()

    def start(self) -> None:
        self._fence = asyncio.get_running_loop().create_task(
            self._check_loop(), name="cluster-fence"
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

    def _ttl(self) -> float:
        return self.config.max_call_seconds + self.config.reconnect_grace

    async def _save(self, pc_id: str) -> None:
        session = self.app[SESSIONS].get(pc_id)
        epoch = self._epochs.get(pc_id)
        if session is None or epoch is None:
            return
        text = state.encode(
            session.conversation, self._subjects.get(pc_id), session.options.info.agent
        )
        if await self.directory.claim(pc_id, epoch, text, self._ttl()) is False:
            self._superseded(pc_id, epoch)

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
        arriving = sum(1 for r in self.placing.values() if not r.get(CALL_COUNTED))
        calls = len(app[SESSIONS]) + arriving
        draining = app[GATE].draining
        return Placement(
            calls=calls,
            capacity=app[CONFIG].max_sessions,
            lag_ms=app[ADMISSION].monitor.lag_ms,
            ready=not draining and calls < app[CONFIG].max_sessions,
            draining=draining,
        )

    async def aclose(self) -> None:
        if self._fence is not None:
            self._fence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fence
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
    if node.router.too_late(request):
        return late_forward()
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
        if not (request.method == "POST" and can_take and not owned):
            return await handler(request)
        # Counted from the moment it is placed here: offers arriving while it negotiates see
        # this node as loaded and may go to another one.
        node.placing[id(request)] = request
        try:
            return await handler(request)
        finally:
            del node.placing[id(request)]
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
    node.start()
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
