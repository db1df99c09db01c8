"""The node-to-node hop, authenticated: a request one node forwards to another carries an HMAC
signature the receiver checks before it treats the request as already routed.

``FORWARDED_BY`` tells the receiving node to handle a request itself (no loops), and so to adopt
a restarted call it does not own. Anyone could send that header; signed, only a node can. The
signature is HMAC-SHA256 over the method, the path exactly as sent (query included), the time,
the sending node's id and the body's SHA-256, with a key only the nodes hold: derived from the
auth secret every node of a cluster already shares (they verify the same tokens), so there is
nothing new to deploy. A hop older than ``MAX_SKEW_S`` or a signature seen before (a replay) is
refused with 403 JSON, as is an unsigned or wrongly signed one. The sender checks the caller's
token before it forwards anything, so no node relays a request it would not itself accept.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from typing import Final

from aiohttp import web

from voicegate.cluster.proxy import FORWARDED_BY, HOP_SIGNATURE, HOP_TIME
from voicegate.config import ServeConfig
from voicegate.signaling import auth
from voicegate.signaling.access import authenticate
from voicegate.signaling.errors import ApiError

__all__ = ["MAX_SKEW_S", "HopGuard"]

MAX_SKEW_S: Final = 30.0
"""A hop is accepted this long after it was signed (and this far ahead: clock skew)."""
_SEEN_MAX: Final = 50_000
_CONTEXT: Final = b"voicegate node-to-node hop v1"


def _message(method: str, path: str, stamp: str, node: str, body: bytes) -> bytes:
    head = "\n".join((method.upper(), path, stamp, node)).encode()
    return head + b"\n" + hashlib.sha256(body).digest()


class HopGuard:
    """Signs what this node forwards; checks what other nodes forwarded to it."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._key = hmac.new(config.auth_secret.encode(), _CONTEXT, hashlib.sha256).digest()
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _sign(self, method: str, path: str, stamp: str, node: str, body: bytes) -> str:
        return hmac.new(self._key, _message(method, path, stamp, node, body), "sha256").hexdigest()

    def outgoing(self, request: web.Request, body: bytes, node_id: str) -> dict[str, str]:
        """The hop's headers; first the caller's token is checked (AuthError -> 401)."""
        try:
            authenticate(request, self.config)
        except auth.AuthError as exc:
            raise ApiError(401, exc.message, reason=exc.reason, auth_required=True) from None
        stamp = f"{time.time():.3f}"
        signature = self._sign(request.method, request.raw_path, stamp, node_id, body)
        return {FORWARDED_BY: node_id, HOP_TIME: stamp, HOP_SIGNATURE: signature}

    async def arrived(self, request: web.Request) -> bool:
        """Whether another node forwarded ``request`` (verified); 403 ApiError for a claim that
        does not verify."""
        node = request.headers.get(FORWARDED_BY)
        if node is None:
            return False
        stamp = request.headers.get(HOP_TIME, "")
        given = request.headers.get(HOP_SIGNATURE, "")
        body = await request.read()
        expected = self._sign(request.method, request.raw_path, stamp, node, body)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(403, "a forwarded request must carry a valid node signature")
        try:
            age = time.time() - float(stamp)
        except ValueError:
            age = MAX_SKEW_S + 1
        if abs(age) > MAX_SKEW_S:
            raise ApiError(403, "a forwarded request's signature is too old (or too new)")
        self._forget_before(time.monotonic() - 2 * MAX_SKEW_S)
        if given in self._seen:
            raise ApiError(403, "a forwarded request was replayed")
        self._seen[given] = time.monotonic()
        while len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def _forget_before(self, limit: float) -> None:
        while self._seen:
            first, when = next(iter(self._seen.items()))
            if when >= limit:
                return
            del self._seen[first]
