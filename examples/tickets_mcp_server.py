"""A tiny MCP server a voicegate agent can use: support tickets, written with the ``mcp`` SDK.

voicegate starts it itself (stdio) from an agents file::

    [mcp_servers.tickets]
    command = ["python", "examples/tickets_mcp_server.py"]

or run it as a Streamable HTTP server (``python examples/tickets_mcp_server.py http 8765``) and
point voicegate at it with ``url = "http://127.0.0.1:8765/mcp"``.
"""

from __future__ import annotations

import sys
from typing import Any

from mcp.server.mcpserver import MCPServer

TICKETS: dict[str, dict[str, str]] = {
    "1001": {"status": "open", "summary": "The printer on floor two is jammed."},
    "1002": {"status": "waiting for the customer", "summary": "Password reset link expired."},
    "1003": {"status": "closed", "summary": "New laptop delivered."},
}

app: MCPServer[Any] = MCPServer("tickets")


@app.tool(description="Look up a support ticket by its number and say its status.")
def ticket_status(ticket_id: str) -> dict[str, str]:
    ticket = TICKETS.get(ticket_id.strip().lstrip("#"))
    if ticket is None:
        return {"ticket_id": ticket_id, "status": "unknown: no ticket has this number"}
    return {"ticket_id": ticket_id, **ticket}


@app.tool(description="Open a new support ticket with a one-sentence summary.")
def open_ticket(summary: str) -> dict[str, str]:
    ticket_id = str(1001 + len(TICKETS))
    TICKETS[ticket_id] = {"status": "open", "summary": summary[:200]}
    # Diagnostics go to stderr: voicegate logs them line by line (stdout is the protocol).
    print(f"opened ticket {ticket_id}", file=sys.stderr, flush=True)
    return {"ticket_id": ticket_id, "status": "open"}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        import uvicorn

        uvicorn.run(app.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run("stdio")
