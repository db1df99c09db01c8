"""Forwarding one HTTP request to another process (a worker of this node) or another node, and
its answer back, unchanged.

Signaling requests are small JSON bodies and answers, so the body is read whole (already bounded
by the receiving app's ``client_max_size``) and forwarded with the original method, path, query
and headers, ``Host`` included: the receiver then makes the same same-origin and token decisions
as if the browser had reached it directly. ``FORWARDED_BY`` marks a request one node already
routed, so the next node handles it locally and a request never travels in circles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict

__all__ = ["FORWARDED_BY", "INTERNAL", "WORKER_KEY", "ForwardError", "forward"]

log = structlog.get_logger(__name__)

FORWARDED_BY: Final = "X-Voicegate-Forwarded-By"
"""Set on a request another node of the cluster forwarded: the receiver routes no further."""
WORKER_KEY: Final = "X-Voicegate-Worker-Key"
"""The per-start secret a supervisor adds to what it sends its workers, which require it."""
HOP_TIME: Final = "X-Voicegate-Hop-Time"
HOP_SIGNATURE: Final = "X-Voicegate-Hop-Signature"
"""A node-to-node hop's signature and its time (``cluster.hop``)."""
INTERNAL: Final = frozenset(h.lower() for h in (FORWARDED_BY, WORKER_KEY, HOP_TIME, HOP_SIGNATURE))
"""Headers only voicegate itself sets: a client's copies are never passed on (each hop sets its
own, after checking the ones it received)."""
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)


class ForwardError(Exception):
    """The receiver could not be reached or did not answer in time."""


def _copy(headers: Mapping[str, str], drop: frozenset[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


async def forward(
    client: aiohttp.ClientSession,
    base_url: str,
    request: web.Request,
    body: bytes,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """``request`` (whose body was ``body``) sent to ``base_url``; its answer as a Response.
    Raises ForwardError when the receiver is unreachable or too slow."""
    out = _copy(request.headers, _HOP_BY_HOP | INTERNAL)
    for name, value in (headers or {}).items():
        out[name] = value
    # The path exactly as received (and as routed and limited here: ``signaling.paths`` refused
    # any that decodes to something else), not aiohttp's decoded form.
    url = base_url.rstrip("/") + request.raw_path
    try:
        async with client.request(
            request.method,
            url,
            data=body if body else None,
            headers=out,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            payload = await resp.read()
            answer = web.Response(status=resp.status, body=payload)
            answer.headers.update(_copy(resp.headers, _HOP_BY_HOP | {"date", "server"}))
            return answer
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.info("forward_failed", url=base_url, path=request.path, error=repr(exc))
        raise ForwardError(str(exc) or type(exc).__name__) from None
