"""A team's HTTP tool service on loopback: it verifies each request's Standard Webhooks signature
with the ``standardwebhooks`` package (a library voicegate does not use to sign), records the
request, and answers in one of the ways a real service can go wrong."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook


class ToolServer:
    """``/ok`` answers ``{"status": "shipped", ...}``; ``/slow`` never answers in time; ``/500``,
    ``/text``, ``/list`` and ``/huge`` answer an error status, non-JSON, a JSON array and a body
    larger than any tool accepts; ``/slow-clock`` answers like ``get_current_time`` once
    ``release`` is set. ``verified`` counts requests whose signature checked out."""

    def __init__(self, secret: str | None = None) -> None:
        self.webhook = Webhook(secret) if secret else None
        self.requests: list[dict[str, Any]] = []
        self.verified = 0
        self.arrived = asyncio.Condition()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.webhook is not None:
            self.webhook.verify(body, dict(request.headers))  # raises: a 500 the test sees
            self.verified += 1
        payload = json.loads(body)
        async with self.arrived:
            self.requests.append(payload)
            self.arrived.notify_all()
        kind = request.match_info["kind"]
        if kind in ("slow", "slow-clock"):
            await self.release.wait()
        if kind == "slow-clock":  # a get_current_time service, answering once released
            return web.json_response({"spoken": "twelve noon", "timezone": "Etc/UTC"})
        if kind == "500":
            return web.json_response({"oops": True}, status=500)
        if kind == "text":
            return web.Response(text="<html>hello</html>", content_type="text/html")
        if kind == "list":
            return web.json_response([1, 2, 3])
        if kind == "huge":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(64):  # 4 MiB, streamed: the tool stops reading after its limit
                await response.write(b"x" * 65536)
            return response
        order = payload["arguments"].get("order_id", "?")
        return web.json_response({"order_id": order, "status": "shipped", "eta": "Tuesday"})

    async def wait_requests(self, count: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.requests) >= count)


@asynccontextmanager
async def tool_server(server: ToolServer) -> AsyncIterator[str]:
    """Serve ``server`` on 127.0.0.1; yields its base URL (append ``/ok``, ``/500`` ...)."""
    app = web.Application()
    app.router.add_post("/{kind}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.release.set()
        await runner.cleanup()
