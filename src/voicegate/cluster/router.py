"""Node-level routing in a cluster: whether a request is handled on this node or forwarded to
the node that owns its call, or (for a new offer this node cannot take) to the least-loaded
ready node. The same rules serve a single-process node (as a middleware of its signaling app,
``cluster.node``) and a node with workers (``cluster.supervisor``).

Rules, in order:
- a request another node already forwarded (``FORWARDED_BY``) is handled here: no loops;
- a call this node owns is handled here, unless this node drains and the request is a
  ``restart_pc`` (the page moving the call): then a ready node takes it and adopts the call;
- a call another live, non-draining node owns goes there;
- a ``restart_pc`` for a call whose node is dead or draining is adopted here when this node can
  take calls, else by the least-loaded ready node;
- a new offer stays here while this node can take calls, else goes to the least-loaded ready
  node; with no such node (or no Redis) it stays and is refused here like today;
- a trickle (PATCH) or hang-up (DELETE) of a call this node does not hold, while Redis is out
  of reach, goes to the node this node last saw owning it; with none known it is refused 503
  with Retry-After (the page retries), never a 404 that would drop the candidates or the
  hang-up silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp import web

from voicegate.cluster.directory import HEARTBEAT_S, Directory, NodeInfo
from voicegate.cluster.hop import HopGuard
from voicegate.cluster.proxy import FORWARDED_BY, ForwardError, forward
from voicegate.cluster.redis_conn import RedisOptions
from voicegate.config import ServeConfig
from voicegate.signaling.access import prepare

__all__ = ["NodeRouter", "Placement", "late_forward", "peek_call"]

log = structlog.get_logger(__name__)

FORWARD_TIMEOUT: Final = 4.0
"""How long a node waits for the node it forwards to: well under the page's 10 s request
timeout, so that on a timeout (owner stalled or cut off) this node can still adopt the call and
answer the page in time. The adoption is fenced: the slow owner stands down when it learns."""
FORWARD_DEADLINE: Final = "X-Voicegate-Forward-Deadline"
"""Wall-clock time (Unix seconds) after which nobody waits for a forwarded request's answer: a
request delivered later (it sat in a partitioned link's buffers) is dropped, never acted on."""
CLOCK_SKEW_S: Final = 1.0
KNOWN_OWNERS: Final = 4096
"""Calls whose owner's URL a node remembers from its last directory look-ups (oldest dropped):
what it routes a call's requests by while Redis is out of reach."""
STALL_S: Final = 1.5 * HEARTBEAT_S
"""A node that published no new heartbeat for this long while this node waited on a restart
forwarded to it is stalled (stopped, or cut off from Redis and so most likely from everyone):
this node stops waiting and adopts the call (fenced) instead of waiting ``FORWARD_TIMEOUT``.
A live node beats every ``HEARTBEAT_S``; one merely slow loses the call it would have kept,
which moves, nothing worse."""
PROBE_S: Final = 1.5
"""How long a new TCP connection to the owner a restart is forwarded to may take: past it, the
path to the owner is cut (or the owner's host is gone), whatever its heartbeat says, and this
node adopts the call (fenced) instead of waiting ``FORWARD_TIMEOUT``. A live owner's kernel
answers a connection at once even while its process is busy or stopped, so only the network
fails this; 1.5 s leaves room for one lost SYN (Linux resends it after 1 s). The heartbeat
cannot tell this case: an owner cut off from this node alone still reaches Redis."""
_OWNER: Final = "voicegate.cluster.restart_owner"
"""Request key: the node id a restart is forwarded to as its call's owner (watched meanwhile)."""
_PLACED: Final = "voicegate.cluster.placed"
"""Request key: the node this request's offer was counted against when it was picked."""


@dataclass(frozen=True, slots=True)
class Placement:
    """This node's load, as published in its heartbeat."""

    calls: int
    capacity: int
    lag_ms: float
    ready: bool
    draining: bool


def peek_call(body: bytes) -> tuple[str | None, bool]:
    """(pc_id, restart_pc) of a call API body, or (None, False) when it has none or is not
    JSON (the handler that finally gets it answers the 400)."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None, False
    if not isinstance(data, dict):
        return None, False
    pc_id = data.get("pc_id")
    if not isinstance(pc_id, str) or not 0 < len(pc_id) <= 128:
        return None, False
    return pc_id, data.get("restart_pc") is True


async def _unreachable(url: str) -> None:
    """Returns when a new TCP connection to the node at ``url`` is not made within
    ``PROBE_S`` (refused or unanswered); never returns when it is (the owner is reachable, so
    only its answer or its heartbeat decides)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(PROBE_S):
            _, writer = await asyncio.open_connection(parts.hostname, port)
    except (OSError, TimeoutError):
        return
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    await asyncio.Event().wait()


def late_forward() -> web.Response:
    """The answer to a forwarded request that came too late (``NodeRouter.too_late``)."""
    from voicegate.signaling.errors import json_error

    log.warning("forward_too_late_dropped")
    return json_error(504, "this forwarded request arrived after its deadline; it was dropped")


class NodeRouter:
    def __init__(
        self, config: ServeConfig, url: str, placement: Callable[[], Placement], worker: int = 0
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.url = url
        self.placement = placement
        self.directory = Directory(
            config.cluster_redis, config.node_id, worker, RedisOptions.for_node(config)
        )
        self._client: aiohttp.ClientSession | None = None
        self._beat: asyncio.Task[None] | None = None
        self.hop = HopGuard(config)
        self._placed: dict[str, list[float]] = {}
        """node id -> until when each offer this node sent there counts against it: forever
        while it is in flight, then until that node's own heartbeat has surely counted it."""
        self._known: OrderedDict[str, str] = OrderedDict()
        """pc_id -> URL of the node last seen owning it (``KNOWN_OWNERS`` at most)."""
        self.unroutable = 0
        """Requests refused 503 because Redis was out of reach and no owner was known."""

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(auto_decompress=False)
        await self.publish()
        self._beat = asyncio.create_task(self._heartbeat(), name="cluster-heartbeat")

    async def publish(self) -> None:
        p = self.placement()
        await self.directory.heartbeat(
            NodeInfo(self.node_id, self.url, p.calls, p.capacity, p.lag_ms, p.ready, p.draining)
        )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await self.publish()

    def _in_flight(self, node_id: str) -> int:
        now = time.monotonic()
        until = [t for t in self._placed.get(node_id, ()) if t > now]
        if until:
            self._placed[node_id] = until
        else:
            self._placed.pop(node_id, None)
        return len(until)

    async def _least_loaded_other(self, request: web.Request | None = None) -> NodeInfo | None:
        """The ready node with the most room, the offers this node sent it lately counted; the
        pick is counted against it at once (``request`` then remembers it for ``forward``)."""
        loads = [
            (n, n.calls + self._in_flight(n.id))
            for n in await self.directory.nodes()
            if n.id != self.node_id and n.can_take()
        ]
        loads = [(n, calls) for n, calls in loads if calls < n.capacity]
        if not loads:
            return None
        node, _ = min(loads, key=lambda nc: (nc[1] / max(nc[0].capacity, 1), nc[0].lag_ms))
        if request is not None:
            self._placed.setdefault(node.id, []).append(math.inf)
            request[_PLACED] = node.id
        return node

    @staticmethod
    def too_late(request: web.Request) -> bool:
        """A forwarded request that arrives after its sender stopped waiting (and adopted the
        call itself, or told the page to retry): acting on it would take the call back."""
        text = request.headers.get(FORWARD_DEADLINE)
        if FORWARDED_BY not in request.headers or text is None:
            return False
        try:
            deadline = float(text)
        except ValueError:
            return False
        return time.time() > deadline + CLOCK_SKEW_S

    async def route(
        self, request: web.Request, pc_id: str | None, restart: bool, *, owned: bool, can_take: bool
    ) -> str | None:
        """The URL of the node to forward to, or None to handle the request here; raises a
        503 ``ApiError`` for a call request it cannot route (``_last_known``)."""
        if await self.hop.arrived(request):  # another node routed it (signed, checked)
            return None
        draining = self.placement().draining
        if pc_id is not None and owned:
            if not (draining and restart):
                return None
            other = await self._least_loaded_other(request)
            return other.url if other is not None else None
        if pc_id is not None:
            owner = await self.directory.owner(pc_id)
            if owner is not None and owner[0] != self.node_id:
                node = await self.directory.node(owner[0])
                if node is not None:
                    self._remember(pc_id, node.url)
                if node is not None and not (restart and node.draining):
                    if restart:
                        request[_OWNER] = node.id
                    return node.url
            if not restart and request.method != "POST":
                if owner is None and not self.directory.up:
                    return self._last_known(pc_id)
                return None  # PATCH/DELETE of a call nobody has: answered 404 here
        if can_take:
            return None
        other = await self._least_loaded_other(request)
        return other.url if other is not None else None

    def _remember(self, pc_id: str, url: str) -> None:
        self._known[pc_id] = url
        self._known.move_to_end(pc_id)
        while len(self._known) > KNOWN_OWNERS:
            self._known.popitem(last=False)

    def _last_known(self, pc_id: str) -> str:
        """Where a call's request goes while Redis is out of reach: the node last seen owning
        it, else a retryable refusal (the call may be anywhere; guessing would lose it)."""
        url = self._known.get(pc_id)
        if url is not None:
            log.info("routed_by_last_known_owner", pc_id=pc_id, url=url)
            return url
        from voicegate.signaling.errors import ApiError

        self.unroutable += 1
        log.warning("call_request_unroutable", pc_id=pc_id)
        raise ApiError(
            503,
            "the cluster directory is out of reach and this node does not hold the call; retry",
            reason="directory_unreachable",
            retry_after=1,
        )

    async def forward(self, request: web.Request, body: bytes, url: str) -> web.StreamResponse:
        assert self._client is not None
        placed = request.get(_PLACED)
        answered = False
        await prepare(request, self.config)  # the hop checks the token: JWKS keys first
        try:
            sending = forward(
                self._client,
                url,
                request,
                body,
                timeout=FORWARD_TIMEOUT,
                headers={
                    **self.hop.outgoing(request, body, self.node_id),
                    FORWARD_DEADLINE: f"{time.time() + FORWARD_TIMEOUT:.3f}",
                },
            )
            owner = request.get(_OWNER)
            response = await (
                sending if owner is None else self._unless_stalled(sending, owner, url)
            )
            answered = response.status == 200
            return response
        except ForwardError:
            from voicegate.signaling.errors import json_error

            return json_error(
                503,
                "the node that should handle this request is unreachable; retry",
                retry_after=1,
            )
        finally:
            if placed is not None:
                self._settle(placed, answered)

    async def _unless_stalled(
        self, sending: Coroutine[Any, Any, web.StreamResponse], node_id: str, url: str
    ) -> web.StreamResponse:
        """The owner's answer, or ``ForwardError`` as soon as the owner misses its heartbeats
        (a stalled node answers nothing until its forward timeout) or cannot be connected to
        (the path to it is cut: its heartbeat may go on)."""
        task = asyncio.ensure_future(sending)
        stalled = asyncio.ensure_future(self._stalled(node_id))
        cut = asyncio.ensure_future(_unreachable(url))
        try:
            await asyncio.wait({task, stalled, cut}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            if cut.done():
                log.warning("forward_abandoned_owner_unreachable", node=node_id, probe_s=PROBE_S)
                raise ForwardError(f"no connection to {node_id} within {PROBE_S} s")
            log.warning("forward_abandoned_owner_stalled", node=node_id, stall_s=STALL_S)
            raise ForwardError(f"{node_id} published no heartbeat for {STALL_S} s")
        finally:
            for t in (task, stalled, cut):
                t.cancel()
            await asyncio.gather(task, stalled, cut, return_exceptions=True)

    async def _stalled(self, node_id: str) -> None:
        """Returns once ``node_id`` published no new heartbeat for ``STALL_S`` (or its heartbeat
        expired); never while Redis itself is out of reach (then nothing is known)."""
        seen_at: float | None = None
        since = time.monotonic()
        while True:
            info = await self.directory.node(node_id)
            now = time.monotonic()
            if info is None and self.directory.up:
                return
            if info is not None and info.at != seen_at:
                seen_at, since = info.at, now
            elif now - since > STALL_S:
                if self.directory.up:
                    return
                since = now
            await asyncio.sleep(HEARTBEAT_S / 4)  # Redis has no event for a missed heartbeat

    def _settle(self, node_id: str, answered: bool) -> None:
        """An offer sent to ``node_id`` finished: a refused one stops counting at once, an
        answered one until the node's heartbeat includes it."""
        marks = self._placed.get(node_id)
        if not marks or math.inf not in marks:
            return
        marks.remove(math.inf)
        if answered:
            marks.append(time.monotonic() + 2 * HEARTBEAT_S)

    async def aclose(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        await self.directory.leave(self.node_id)
        await self.directory.aclose()
        if self._client is not None:
            await self._client.close()
