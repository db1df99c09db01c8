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
  node; with no such node (or no Redis) it stays and is refused here like today.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
import structlog
from aiohttp import web

from voicegate.cluster.directory import HEARTBEAT_S, Directory, NodeInfo
from voicegate.cluster.hop import HopGuard
from voicegate.cluster.proxy import ForwardError, forward
from voicegate.config import ServeConfig

__all__ = ["NodeRouter", "Placement", "peek_call"]

log = structlog.get_logger(__name__)

FORWARD_TIMEOUT: Final = 30.0


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


class NodeRouter:
    def __init__(
        self, config: ServeConfig, url: str, placement: Callable[[], Placement], worker: int = 0
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.url = url
        self.placement = placement
        self.directory = Directory(config.cluster_redis, config.node_id, worker)
        self._client: aiohttp.ClientSession | None = None
        self._beat: asyncio.Task[None] | None = None
        self.hop = HopGuard(config)

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

    async def _least_loaded_other(self) -> NodeInfo | None:
        others = [n for n in await self.directory.nodes() if n.id != self.node_id and n.can_take()]
        if not others:
            return None
        return min(others, key=lambda n: (n.calls / max(n.capacity, 1), n.lag_ms))

    async def route(
        self, request: web.Request, pc_id: str | None, restart: bool, *, owned: bool, can_take: bool
    ) -> str | None:
        """The URL of the node to forward to, or None to handle the request here."""
        if await self.hop.arrived(request):  # another node routed it (signed, checked)
            return None
        draining = self.placement().draining
        if pc_id is not None and owned:
            if not (draining and restart):
                return None
            other = await self._least_loaded_other()
            return other.url if other is not None else None
        if pc_id is not None:
            owner = await self.directory.owner(pc_id)
            if owner is not None and owner[0] != self.node_id:
                node = await self.directory.node(owner[0])
                if node is not None and not (restart and node.draining):
                    return node.url
            if not restart and request.method != "POST":
                return None  # PATCH/DELETE of a call nobody has: answered 404 here
        if can_take:
            return None
        other = await self._least_loaded_other()
        return other.url if other is not None else None

    async def forward(self, request: web.Request, body: bytes, url: str) -> web.StreamResponse:
        assert self._client is not None
        try:
            return await forward(
                self._client,
                url,
                request,
                body,
                timeout=FORWARD_TIMEOUT,
                headers=self.hop.outgoing(request, body, self.node_id),
            )
        except ForwardError:
            from voicegate.signaling.errors import json_error

            return json_error(
                503,
                "the node that should handle this request is unreachable; retry",
                retry_after=1,
            )

    async def aclose(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        await self.directory.leave(self.node_id)
        await self.directory.aclose()
        if self._client is not None:
            await self._client.close()
