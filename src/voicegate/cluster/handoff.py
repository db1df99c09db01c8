"""What a supervisor hands each worker it starts, beyond its environment: the secrets, and a
per-start key the worker then requires on every request.

A process's environment is readable as ``/proc/PID/environ`` by anything running as the same
user (and is inherited by whatever it starts), so secrets never go there: the supervisor writes
one JSON line to the worker's stdin, which the worker reads before it resolves its
configuration, and closes the pipe. The worker key makes the worker's loopback port useless to
any other process on the machine (under the hostNetwork DaemonSet, every process of the node):
the supervisor's client adds ``WORKER_KEY`` to what it sends, the worker refuses anything
without it (403 JSON), so offers cannot bypass the supervisor's rate limits and session cap.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import IO, Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from voicegate.cluster.proxy import WORKER_KEY
from voicegate.config import OPTIONS, ServeConfig, env_name
from voicegate.signaling.errors import Handler, json_error

__all__ = ["SECRET_OPTIONS", "new_worker_key", "receive", "send_line", "supervisor_only"]

SECRET_OPTIONS: Final = frozenset({"auth_secret", "turn_secret", "metrics_token", "cluster_redis"})
"""Options that may hold a secret (a Redis URL may carry a password): never in a worker's env."""
_MAX_LINE: Final = 1 << 20


def new_worker_key() -> str:
    return secrets.token_urlsafe(32)


def send_line(config: ServeConfig, worker_key: str) -> bytes:
    """The line written to a worker's stdin."""
    values = {o.name: str(getattr(config, o.name)) for o in OPTIONS if o.name in SECRET_OPTIONS}
    return json.dumps({"options": values, "worker_key": worker_key}).encode() + b"\n"


def receive(stream: IO[bytes]) -> tuple[dict[str, str], str]:
    """In the worker: the secret options (as ``VOICEGATE_*`` names, to resolve the configuration
    with, in memory only) and the worker key, from the supervisor's line on stdin."""
    data = json.loads(stream.readline(_MAX_LINE) or b"{}")
    options = data.get("options", {}) if isinstance(data, dict) else {}
    names = {o.name: env_name(o) for o in OPTIONS}
    env = {names[k]: str(v) for k, v in options.items() if k in names and k in SECRET_OPTIONS}
    key = data.get("worker_key", "") if isinstance(data, dict) else ""
    return env, str(key)


def supervisor_only(worker_key: str) -> Middleware:
    """Refuses every request that does not carry this worker's key."""
    expected = worker_key.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(WORKER_KEY, "").encode()
        if not hmac.compare_digest(given, expected):
            return json_error(403, "this port serves only the node's supervisor")
        return await handler(request)

    return check
