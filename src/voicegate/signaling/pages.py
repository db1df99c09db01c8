"""The bundled web page: ``/`` and the files of web/ under ``/static/``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from voicegate.signaling.errors import ApiError
from voicegate.signaling.keys import CONFIG

__all__ = [
    "index",
    "static_file",
]


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(Path(request.app[CONFIG].web_dir) / "index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    """Files of web/ under /static/. aiohttp's own static route answers a missing file with a
    non-JSON 404 from inside the response, where no middleware can see it, hence this."""
    target = await asyncio.to_thread(
        _locate, request.app[CONFIG].web_dir, request.match_info["path"]
    )
    if target is None:
        raise ApiError(404, f"no file {request.path}")
    return web.FileResponse(target)


def _locate(web_dir: str, relative: str) -> Path | None:
    root = Path(web_dir).resolve()
    try:
        target = (root / relative).resolve()
        return target if target.is_relative_to(root) and target.is_file() else None
    except (ValueError, OSError):  # a NUL byte, a name too long: no such file
        return None
