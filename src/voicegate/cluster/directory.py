"""The cluster directory in Redis: which nodes are alive and how loaded, which node owns each
call, and each call's stored conversation state.

Keys (all under ``vg:``, all expiring, so a dead node or an ended call cleans itself up):

- ``vg:node:<node_id>``: JSON {url, calls, capacity, lag_ms, ready, draining}, rewritten by the
  node's heartbeat every ``HEARTBEAT_S`` with a ``NODE_TTL_S`` expiry: a node that stops
  beating is dead to the others within a few seconds.
- ``vg:nodes``: the set of node ids ever registered (members without a node key are pruned).
- ``vg:call:<pc_id>``: a hash, ``owner`` = JSON {node, worker}, ``state`` = the call's
  conversation state (``cluster.state``), expiring after the call's longest possible life.

Redis being down never breaks a call or a request: every operation catches the client's errors,
logs the outage once, and answers "unknown" (None/False/empty), so the node keeps its calls and
serves new offers locally. There is no consensus here and none is needed: an owner record is
written by the one process that has the call, and a stale one is corrected by the next write.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Final

import structlog

__all__ = ["Directory", "NodeInfo"]

log = structlog.get_logger(__name__)

HEARTBEAT_S: Final = 1.0
NODE_TTL_S: Final = 3
CALL_TTL_SLACK_S: Final = 600
OP_TIMEOUT_S: Final = 0.5
"""Socket timeout of every Redis operation: a request waits at most this long on a dead Redis."""
_RELEASE: Final = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return 0 end
local o = cjson.decode(owner)
if o['node'] == ARGV[1] and o['worker'] == tonumber(ARGV[2]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    id: str
    url: str
    calls: int = 0
    capacity: int = 0
    lag_ms: float = 0.0
    ready: bool = True
    draining: bool = False
    at: float = 0.0

    def can_take(self) -> bool:
        return self.ready and not self.draining and self.calls < self.capacity


class Directory:
    """One process's connection to the cluster directory (redis-py's asyncio client)."""

    def __init__(self, url: str, node_id: str, worker: int = 0) -> None:
        import redis.asyncio as aredis

        self.node_id = node_id
        self.worker = worker
        self._redis = aredis.Redis.from_url(
            url,
            socket_timeout=OP_TIMEOUT_S,
            socket_connect_timeout=OP_TIMEOUT_S,
            health_check_interval=0,
            decode_responses=True,
        )
        self.up = True

    def _failed(self, what: str, exc: BaseException) -> None:
        if self.up:
            log.warning("cluster_directory_down", op=what, error=repr(exc))
        self.up = False

    def _ok(self) -> None:
        if not self.up:
            log.info("cluster_directory_back")
        self.up = True

    async def _do(self, what: str, coro: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            result = await coro
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(what, exc)
            return None
        self._ok()
        return result

    # -- nodes -------------------------------------------------------------------------------

    async def heartbeat(self, info: NodeInfo) -> None:
        data = json.dumps(asdict(info) | {"at": time.time()})
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(f"vg:node:{info.id}", data, ex=NODE_TTL_S)
        pipe.sadd("vg:nodes", info.id)
        await self._do("heartbeat", pipe.execute())

    async def leave(self, node_id: str) -> None:
        await self._do("leave", self._redis.delete(f"vg:node:{node_id}"))

    async def nodes(self) -> list[NodeInfo]:
        """Every node with a live heartbeat (this one included)."""
        ids = await self._do("nodes", self._redis.smembers("vg:nodes"))
        if not ids:
            return []
        ids = sorted(ids)
        raw = await self._do("nodes", self._redis.mget([f"vg:node:{i}" for i in ids]))
        if raw is None:
            return []
        out: list[NodeInfo] = []
        gone = []
        for node_id, text in zip(ids, raw, strict=True):
            if text is None:
                gone.append(node_id)
                continue
            try:
                out.append(NodeInfo(**json.loads(text)))
            except (ValueError, TypeError):
                continue
        if len(gone) > 16:  # long-dead members; a node that comes back re-adds itself
            await self._do("prune", self._redis.srem("vg:nodes", *gone))
        return out

    async def node(self, node_id: str) -> NodeInfo | None:
        text = await self._do("node", self._redis.get(f"vg:node:{node_id}"))
        if not text:
            return None
        try:
            return NodeInfo(**json.loads(text))
        except (ValueError, TypeError):
            return None

    # -- calls -------------------------------------------------------------------------------

    async def claim(self, pc_id: str, ttl_s: float) -> None:
        """This process owns ``pc_id`` from now on."""
        owner = json.dumps({"node": self.node_id, "worker": self.worker})
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(f"vg:call:{pc_id}", "owner", owner)
        pipe.expire(f"vg:call:{pc_id}", int(ttl_s) + CALL_TTL_SLACK_S)
        await self._do("claim", pipe.execute())

    async def save_state(self, pc_id: str, state: str, ttl_s: float) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(f"vg:call:{pc_id}", mapping={"state": state})
        pipe.expire(f"vg:call:{pc_id}", int(ttl_s) + CALL_TTL_SLACK_S)
        await self._do("save_state", pipe.execute())

    async def owner(self, pc_id: str) -> tuple[str, int] | None:
        text = await self._do("owner", self._redis.hget(f"vg:call:{pc_id}", "owner"))
        if not text:
            return None
        try:
            data = json.loads(text)
            return str(data["node"]), int(data["worker"])
        except (ValueError, KeyError, TypeError):
            return None

    async def state(self, pc_id: str) -> str | None:
        text = await self._do("state", self._redis.hget(f"vg:call:{pc_id}", "state"))
        return str(text) if text else None

    async def release(self, pc_id: str) -> None:
        """The call ended here: forget it, unless another node owns it by now (it moved)."""
        await self._do(
            "release",
            self._redis.eval(_RELEASE, 1, f"vg:call:{pc_id}", self.node_id, str(self.worker)),
        )

    async def aclose(self) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()
