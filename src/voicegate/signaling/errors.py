"""How the HTTP face says no: every refusal is JSON ``{"error": "...", ...}`` with a 4xx/5xx
status, raised anywhere as ``ApiError`` and rendered once by the ``errors_as_json`` middleware,
so no handler builds error responses by hand and no refusal leaks a traceback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["ApiError", "Handler", "json_error"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """``extra`` become JSON fields, except ``retry_after``, which becomes the header."""
    headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else None
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


class ApiError(Exception):
    """A refusal with its status, message and extra JSON fields (see ``json_error``)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
