"""A minimal receiver of voicegate's webhooks: verifies each event with the standardwebhooks
package (pip install standardwebhooks aiohttp), de-duplicates on webhook-id, prints the event.

    python examples/webhook_receiver.py whsec_...   # listens on 127.0.0.1:9000/hooks
    voicegate serve --webhook-url http://127.0.0.1:9000/hooks --webhook-secret-file SECRET_FILE

Answer 2xx quickly (queue the work): voicegate retries a timeout or a 5xx with the same id.
"""

from __future__ import annotations

import json
import sys

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

verifier = Webhook(sys.argv[1] if len(sys.argv) > 1 else "")
seen: set[str] = set()


async def hooks(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        event = verifier.verify(body, dict(request.headers))
    except WebhookVerificationError:
        return web.json_response({"error": "bad signature"}, status=400)
    msg_id = request.headers["webhook-id"]
    if msg_id in seen:
        return web.json_response({"ok": True, "duplicate": True})
    seen.add(msg_id)
    data = event["data"]
    print(event["type"], data["call_id"], data.get("end_reason", ""), flush=True)
    for line in data.get("transcript", []):
        print(f"  {line['at']} {line['role']}: {line['text']}", flush=True)
    if event["type"] == "call.ended":
        print(json.dumps(data.get("turn_latency", []))[:500], flush=True)
    return web.json_response({"ok": True})


if __name__ == "__main__":
    app = web.Application()
    app.router.add_post("/hooks", hooks)
    web.run_app(app, host="127.0.0.1", port=9000)
