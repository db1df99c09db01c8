"""A tiny HTTP tool for voicegate's agents: answers ``order_status`` from a dict, and refuses
any request whose Standard Webhooks signature does not verify (pip install aiohttp
standardwebhooks).

    python examples/order_tool.py examples/tool.secret   # listens on 127.0.0.1:9100/order
    voicegate serve --agents examples/agents.toml

voicegate POSTs ``{"tool": NAME, "arguments": {...}, "call_id": PC_ID, "agent": NAME}``; any
JSON object answered with a 2xx status is the tool's result, which the model speaks about.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ORDERS = {
    "a17": {"status": "shipped", "carrier": "DHL", "arrives": "Tuesday"},
    "b42": {"status": "being packed", "arrives": "Friday"},
}


def make_app(secret: str) -> web.Application:
    """The tool service; ``secret`` is the first line of voicegate's ``secret_file``."""
    verifier = Webhook(secret)

    async def order(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            call = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            return web.json_response({"error": "bad signature"}, status=401)
        order_id = str(call["arguments"].get("order_id", "")).strip().lower().replace(" ", "")
        print(call["agent"], call["call_id"], call["tool"], order_id, flush=True)
        found = ORDERS.get(order_id)
        if found is None:
            return web.json_response({"found": False, "note": f"no order {order_id!r}"})
        return web.json_response({"found": True, "order_id": order_id, **found})

    app = web.Application()
    app.router.add_post("/order", order)
    return app


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/tool.secret")
    web.run_app(make_app(path.read_text().split()[0]), host="127.0.0.1", port=9100)
