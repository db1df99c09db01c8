"""A real MCP server written with the ``mcp`` SDK, run as a subprocess: stdio or Streamable HTTP.

``python -m tests.support.mcp_servers stdio`` speaks MCP on stdin/stdout (as voicegate starts
it); ``... http PORT`` serves Streamable HTTP on 127.0.0.1:PORT/mcp through uvicorn. Its tools:
``lookupTicket`` (a camelCase name voicegate maps), ``slow`` (sleeps past any sane timeout),
``fail`` (an MCP error result), ``add_tool`` (adds ``extra_tool`` and says the list changed),
``whoami`` (the process id, so a test can kill it) and ``secret`` (for allow-list tests).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

TICKETS = {"T-100": "open: printer on fire", "T-200": "closed: password reset"}


def build() -> MCPServer[Any]:
    app: MCPServer[Any] = MCPServer("tickets-test")

    @app.tool(name="lookupTicket", description="Look up a support ticket by its id.")
    def lookup_ticket(ticket_id: str) -> dict[str, str]:
        print(f"lookup {ticket_id}", file=sys.stderr, flush=True)
        return {"ticket_id": ticket_id, "status": TICKETS.get(ticket_id, "unknown ticket")}

    @app.tool(description="Never answers in time.")
    async def slow() -> str:
        await asyncio.sleep(3600)
        return "late"

    @app.tool(description="Always fails.")
    def fail() -> str:
        raise ToolError("the ticket database is down")

    @app.tool(description="The server's process id.")
    def whoami() -> dict[str, int]:
        return {"pid": os.getpid()}

    @app.tool(description="Not for the model.")
    def secret() -> str:
        return "hidden"

    @app.tool(description="Adds a tool and announces it.")
    async def add_tool(ctx: Context) -> str:
        def extra_tool() -> dict[str, str]:
            return {"extra": "yes"}

        app.add_tool(extra_tool, name="extra_tool", description="Added at run time.")
        await ctx.notify_tools_changed()
        return "added"

    return app


def main() -> None:
    mode = sys.argv[1]
    app = build()
    print(f"tickets-test starting ({mode})", file=sys.stderr, flush=True)
    if mode == "stdio":
        app.run("stdio")
    else:
        import uvicorn

        port = int(sys.argv[2])
        asgi: Any = app.streamable_http_app()
        token = os.environ.get("MCP_TEST_TOKEN", "")
        if token:
            asgi = _require_bearer(asgi, token)
        uvicorn.run(asgi, host="127.0.0.1", port=port, log_level="info", access_log=False)


def _require_bearer(inner: Any, token: str) -> Any:
    """Refuse requests without ``Authorization: Bearer TOKEN`` (the client's headers are used)."""
    expected = f"Bearer {token}".encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await inner(scope, receive, send)

    return app


if __name__ == "__main__":
    main()
