"""The cluster directory in Redis: which nodes are alive and how loaded, which node owns each
call, and each call's stored conversation state.

Keys (all under ``vg:``, all expiring, so a dead node or an ended call cleans itself up):

- ``vg:node:<node_id>``: JSON {url, calls, capacity, lag_ms, ready, draining}, rewritten by the
  node's heartbeat every ``HEARTBEAT_S`` with a ``NODE_TTL_S`` expiry: a node that stops
  beating is dead to the others within a few seconds.
- ``vg:nodes``: the set of node ids ever registered (members without a node key are pruned).
- ``vg:call:<pc_id>``: a hash, ``owner`` = JSON {node, worker}, ``epoch`` = how many times the
  call changed hands (1 at its start), ``state`` = the call's conversation state
  (``cluster.state``), expiring after the call's longest possible life; ``ended`` marks a call
  that ended (a tombstone, kept ``TOMBSTONE_TTL_S``, so a stale copy cannot bring it back).

Redis being down never breaks a call or a request: every operation catches the client's errors,
logs the outage once, and answers "unknown" (None/False/empty), so the node keeps its calls and
serves new offers locally.

Ownership is fenced by the epoch. Adopting a call increments it atomically (a Lua script) and
makes the adopter the owner; every later write (saving state, ending the call) carries the
writer's epoch and is applied only while the record's epoch is not higher. So a node that stalled
(SIGSTOP, a long pause) or was cut off while another node adopted its call can never rewrite or
delete that call's record: its write is refused, which is how it learns its copy was superseded
and closes it. A record missing altogether (Redis restarted empty) is written again by its owner,
with its epoch, on the owner's next check (``epochs``).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Final

import structlog

from voicegate.cluster.redis_conn import RedisOptions

__all__ = ["Directory", "NodeInfo"]

log = structlog.get_logger(__name__)

HEARTBEAT_S: Final = 1.0
NODE_TTL_S: Final = 3
CALL_TTL_SLACK_S: Final = 600
OP_TIMEOUT_S: Final = 0.5
"""Socket timeout of every Redis operation: a request waits at most this long on a dead Redis."""
TOMBSTONE_TTL_S: Final = 600
"""How long an ended call's record says so: a copy stalled longer than this may rewrite it."""
_SAVE: Final = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local mine = tonumber(ARGV[1])
if cur > mine then return 0 end
if cur == mine and redis.call('HEXISTS', KEYS[1], 'ended') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'owner', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
"""Write the owner (and state) at epoch ARGV[1] unless a higher epoch owns the call: 1 when
written, 0 when this copy was superseded."""
_ADOPT: Final = """
if redis.call('HEXISTS', KEYS[1], 'ended') == 1 then return false end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {epoch, state}
"""
"""Take a live call over: {new epoch, state}, or nil when there is none (ended, unknown)."""
_RELEASE: Final = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '-1')
if cur ~= tonumber(ARGV[1]) then return 0 end
redis.call('HDEL', KEYS[1], 'state')
redis.call('HSET', KEYS[1], 'ended', '1')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
"""The call ended at its owner (epoch ARGV[1]): leave a tombstone; a non-owner changes nothing."""


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

    def __init__(
        self, url: str, node_id: str, worker: int = 0, options: RedisOptions | None = None
    ) -> None:
        import redis.asyncio as aredis

        self.node_id = node_id
        self.worker = worker
        options = options or RedisOptions()
        self._seal = options.seal
        self._redis = aredis.Redis.from_url(
            url,
            socket_timeout=OP_TIMEOUT_S,
            socket_connect_timeout=OP_TIMEOUT_S,
            health_check_interval=0,
            decode_responses=True,
            **options.client_kwargs(),
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
        record = asdict(info) | {"at": time.time()}
        data = self._tag("node", info.id, record)
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
            info = self._node_info(node_id, text)
            if info is not None:
                out.append(info)
        if len(gone) > 16:  # long-dead members; a node that comes back re-adds itself
            await self._do("prune", self._redis.srem("vg:nodes", *gone))
        return out

    async def node(self, node_id: str) -> NodeInfo | None:
        text = await self._do("node", self._redis.get(f"vg:node:{node_id}"))
        if not text:
            return None
        return self._node_info(node_id, text)

    # -- calls -------------------------------------------------------------------------------

    def _owner_json(self, pc_id: str) -> str:
        return self._tag("owner", pc_id, {"node": self.node_id, "worker": self.worker})

    async def claim(self, pc_id: str, epoch: int, state: str, ttl_s: float) -> bool | None:
        """This process owns ``pc_id`` at ``epoch``, with conversation ``state`` ("" keeps the
        stored one). False: a higher epoch owns it (this copy was superseded); None: Redis is
        down."""
        result = await self._do(
            "claim",
            self._redis.eval(
                _SAVE,
                1,
                f"vg:call:{pc_id}",
                str(epoch),
                self._owner_json(pc_id),
                self._seal.seal(pc_id, state) if self._seal is not None and state else state,
                str(int(ttl_s) + CALL_TTL_SLACK_S),
            ),
        )
        return None if result is None else bool(result)

    async def adopt(self, pc_id: str, ttl_s: float) -> tuple[int, str] | None:
        """Take ``pc_id`` over from whoever had it: (the new epoch, its stored state), or None
        when it is not a live call (ended, unknown, or Redis down)."""
        ttl = str(int(ttl_s) + CALL_TTL_SLACK_S)
        result = await self._do(
            "adopt",
            self._redis.eval(_ADOPT, 1, f"vg:call:{pc_id}", self._owner_json(pc_id), ttl),
        )
        if not isinstance(result, list) or len(result) != 2:
            return None
        state = str(result[1])
        if self._seal is not None:
            opened = self._seal.open(pc_id, state)
            if opened is None:
                return None  # planted state: adopted by nobody
            state = opened
        return int(result[0]), state

    async def epochs(self, pc_ids: list[str]) -> list[int | None] | None:
        """The stored epoch of each call (None: no record, or an ended one); None when Redis is
        down. One round trip, however many calls."""
        if not pc_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for pc_id in pc_ids:
            pipe.hmget(f"vg:call:{pc_id}", ["epoch", "ended"])
        rows = await self._do("epochs", pipe.execute())
        if rows is None:
            return None
        out: list[int | None] = []
        for epoch, ended in rows:
            try:
                out.append(None if epoch is None or ended else int(epoch))
            except ValueError:
                out.append(None)
        return out

    async def owner(self, pc_id: str) -> tuple[str, int] | None:
        """The node and worker that own a live call (None: ended, unknown, Redis down)."""
        row = await self._do("owner", self._redis.hmget(f"vg:call:{pc_id}", ["owner", "ended"]))
        if not row or not row[0] or row[1]:
            return None
        try:
            data = self._check("owner", pc_id, row[0])
            if data is None:
                return None
            return str(data["node"]), int(data["worker"])
        except (ValueError, KeyError, TypeError):
            return None

    async def release(self, pc_id: str, epoch: int) -> bool | None:
        """The call ended here: mark its record ended, unless a higher epoch owns it by now
        (it moved). True when marked; None when Redis is down."""
        result = await self._do(
            "release",
            self._redis.eval(_RELEASE, 1, f"vg:call:{pc_id}", str(epoch), str(TOMBSTONE_TTL_S)),
        )
        return None if result is None else bool(result)

    # -- calls per token subject, cluster-wide (--max-calls-per-subject) ---------------------

    async def subject_add(self, subject: str, pc_id: str, ttl_s: float) -> None:
        """``vg:subject:<digest>``: a sorted set of the subject's live calls, each scored by
        when it can be over at the latest, so a call whose node died drops out by itself."""
        key = f"vg:subject:{subject}"
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(key, {pc_id: time.time() + ttl_s})
        pipe.expire(key, int(ttl_s) + CALL_TTL_SLACK_S)
        await self._do("subject_add", pipe.execute())

    async def subject_remove(self, subject: str, pc_id: str) -> None:
        await self._do("subject_remove", self._redis.zrem(f"vg:subject:{subject}", pc_id))

    async def subject_calls(self, subject: str) -> int | None:
        """The subject's live calls in the cluster; None when Redis is down."""
        key = f"vg:subject:{subject}"
        pipe = self._redis.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", time.time())
        pipe.zcard(key)
        result = await self._do("subject_calls", pipe.execute())
        return None if result is None else int(result[1])

    # -- authenticated records (cluster.record_mac) ------------------------------------------

    @property
    def refused(self) -> int:
        """Records read here that did not verify."""
        return 0 if self._seal is None else self._seal.refused

    def _tag(self, kind: str, name: str, data: dict[str, Any]) -> str:
        return json.dumps(data) if self._seal is None else self._seal.tag(kind, name, data)

    def _check(self, kind: str, name: str, text: str) -> dict[str, Any] | None:
        if self._seal is not None:
            return self._seal.check(kind, name, text)
        data = json.loads(text)
        return data if isinstance(data, dict) else None

    def _node_info(self, node_id: str, text: str) -> NodeInfo | None:
        try:
            data = self._check("node", node_id, text)
            if data is None or data.get("id") != node_id:
                return None
            return NodeInfo(**data)
        except (ValueError, TypeError):
            return None

    async def aclose(self) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()
