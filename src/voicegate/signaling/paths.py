"""One path per request: a path that decodes to something other than what it routes as is refused.

aiohttp matches routes on the path as sent (``/api%2Foffer`` is not ``/api/offer``) while
``request.path`` and a forwarded URL carry the decoded form. A path whose two readings differ
in their segments would be routed, rate-limited and checked as one thing and handled as another
(``/x/..%2Fmetrics`` reaching a worker's ``/metrics``). So every layer that routes (the
supervisor, each worker, a single process) first refuses, with a 400 JSON answer, any path with
an encoded slash or backslash, a NUL or other control character, a dot segment (``.``/``..``,
encoded or not) or an empty segment; what remains means the same thing encoded and decoded, and
is forwarded exactly as it was received.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from voicegate.signaling.errors import Handler, json_error

__all__ = ["one_path", "path_problem"]

_ENCODED_SEPARATOR: Final = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f\\]")


def path_problem(raw_path: str, path: str) -> str | None:
    """Why this path (as sent, and decoded) is refused; None when both read the same."""
    raw = raw_path.split("?", 1)[0]
    if _ENCODED_SEPARATOR.search(raw):
        return "encoded slash, backslash or NUL in the path"
    if _CONTROL.search(path):
        return "control character or backslash in the path"
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments):
        return "dot segment (. or ..) in the path"
    if "" in segments[:-1]:
        return "empty segment (//) in the path"
    return None


@web.middleware
async def one_path(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: nothing routes, counts or forwards a path that reads two ways."""
    problem = path_problem(request.raw_path, request.path)
    if problem is not None:
        return json_error(400, f"invalid request path: {problem}")
    return await handler(request)
