"""Webhooks in a cluster: each call's events are sent once, by the node that holds the call. A
call adopted after its node died gets its ``call.ended`` from the adopting node; a call that a
draining node moved away is ended by the node it moved to, not by the one it left."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from tests.support.cluster import history_saved, start_call, two_nodes
from tests.support.receivers import Receiver, receiving
from voicegate.testing.client import CallClient

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def hook_args(tmp_path: Path, hook: str) -> tuple[str, ...]:
    secret = tmp_path / "whsec"
    secret.write_text(SECRET)
    return (
        "--backend", "echo", "--drain-timeout", "20", "--call-store", "none",
        "--webhook-url", hook, "--webhook-secret-file", str(secret),
    )  # fmt: skip


def sent(receiver: Receiver) -> list[tuple[str, str, bool]]:
    verifier = Webhook(SECRET)
    out = []
    for headers, body in receiver.got:
        event = verifier.verify(body, headers)
        out.append((event["type"], event["data"]["call_id"], bool(event["data"].get("adopted"))))
    return out


async def test_a_call_adopted_after_its_node_died_is_ended_once(tmp_path: Path) -> None:
    receiver = Receiver()
    async with receiving(receiver) as hook:
        args = hook_args(tmp_path, hook)
        async with two_nodes(tmp_path, args, args) as (redis_url, a, b):
            client = await start_call(a.url)
            moved: CallClient | None = None
            try:
                await receiver.wait(lambda ev: [e["type"] for e in ev] == ["call.started"])
                await history_saved(redis_url, client.pc_id, 0)
                a.kill()
                moved = CallClient(b.url, token=client.session_token)
                async with asyncio.timeout(30):
                    await moved.connect(restart_of=client.pc_id)
                    await moved.wait_for("bot-ready", 10)
                    assert await moved.hangup() == 204
                    await receiver.wait(lambda ev: len(ev) >= 2)
            finally:
                await client.close()
                if moved is not None:
                    await moved.close()
    assert sent(receiver) == [
        ("call.started", client.pc_id, False),
        ("call.ended", client.pc_id, True),
    ]
    ended = json.loads(receiver.got[-1][1])["data"]
    assert ended["end_reason"] == "hangup"


async def test_a_call_moved_by_a_drain_is_ended_by_its_new_node(tmp_path: Path) -> None:
    receiver = Receiver()
    async with receiving(receiver) as hook:
        args = hook_args(tmp_path, hook)
        async with two_nodes(tmp_path, args, args) as (_redis_url, a, b):
            client = await start_call(a.url)
            moved: CallClient | None = None
            try:
                async with asyncio.timeout(60):
                    a.proc.send_signal(signal.SIGTERM)
                    await client.wait_for(
                        "server-message", 10, lambda m: m["data"].get("type") == "reconnect"
                    )
                    moved = CallClient(a.url, token=client.session_token)
                    await moved.connect(restart_of=client.pc_id)
                    await client.pc.close()
                    assert await a.proc.wait() == 0  # node A is done, and said all it had
                    await moved.wait_for("bot-ready", 10)
                    moved.base_url = b.url  # A is gone: the load balancer sends the page to B
                    assert await moved.hangup() == 204
                    await receiver.wait(lambda ev: len(ev) >= 2)
            finally:
                await client.close()
                if moved is not None:
                    await moved.close()
    assert sent(receiver) == [
        ("call.started", client.pc_id, False),
        ("call.ended", client.pc_id, True),
    ]
