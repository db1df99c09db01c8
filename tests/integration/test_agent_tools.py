"""HTTP and Python tools from the agents file, run against a real aiohttp tool service on
loopback: the request names the tool, arguments, call and agent and is signed (verified by the
``standardwebhooks`` package); every way the service can fail becomes an error result the model
can speak about, never an exception."""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import pytest

from tests.support.tool_server import ToolServer, tool_server
from voicegate.agents.catalog import AgentCatalog
from voicegate.agents.file import load_agents
from voicegate.conversation.events import ConversationSettings

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def catalog_for(tmp_path: Path, base: str, kind: str = "ok", timeout_s: float = 5) -> AgentCatalog:
    (tmp_path / "tool.secret").write_text(SECRET + "\n")
    (tmp_path / "agents.toml").write_text(
        f"""
default_agent = "support"
[agents.support]
description = "Order help"
tools = ["order_status", "clock"]
[tools.order_status]
description = "Look up an order."
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string" }} }} }}
[tools.order_status.http]
url = "{base}/{kind}"
timeout_s = {timeout_s}
secret_file = "tool.secret"
max_response_bytes = 1024
[tools.clock]
description = "The time."
python = "voicegate.conversation.tools:get_current_time"
"""
    )
    spec = load_agents(str(tmp_path / "agents.toml"))
    return AgentCatalog(spec, ConversationSettings(), 3600, base=tmp_path)


async def test_http_tool_posts_signed_json_and_returns_the_object(tmp_path: Path) -> None:
    server = ToolServer(SECRET)
    async with tool_server(server) as base:
        catalog = catalog_for(tmp_path, base)
        agent = catalog.get("support")
        assert agent is not None
        registry = catalog.registry(agent, "pc-123")
        try:
            text, ok = await registry.run("order_status", '{"order_id": "A17"}')
            clock, clock_ok = await registry.run("get_current_time", '{"timezone": "UTC"}')
        finally:
            await catalog.close()
    assert ok, text
    assert json.loads(text) == {"order_id": "A17", "status": "shipped", "eta": "Tuesday"}
    assert server.verified == 1
    assert server.requests == [
        {
            "tool": "order_status",
            "arguments": {"order_id": "A17"},
            "call_id": "pc-123",
            "agent": "support",
        }
    ]
    assert not clock_ok and "unknown tool" in clock  # the Python tool keeps its file name
    assert "clock" in registry


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("500", "answered with an error (HTTP 500)"),
        ("text", "sent an answer that was not JSON"),
        ("list", "sent an answer that was not a JSON object"),
        ("huge", "answered with more than 1024 bytes"),
        ("slow", "did not answer within 0.3 seconds"),
    ],
)
async def test_each_failure_is_an_error_result(tmp_path: Path, kind: str, said: str) -> None:
    server = ToolServer(SECRET)
    async with tool_server(server) as base:
        catalog = catalog_for(tmp_path, base, kind, timeout_s=0.3)
        agent = catalog.get("support")
        assert agent is not None
        try:
            text, ok = await catalog.registry(agent, "pc-1").run("order_status", "{}")
        finally:
            await catalog.close()
    assert not ok
    assert json.loads(text) == {"error": f"the order_status service {said}"}
    assert server.verified == 1


async def test_a_refused_connection_is_an_error_result(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    catalog = catalog_for(tmp_path, f"http://127.0.0.1:{port}")
    agent = catalog.get("support")
    assert agent is not None
    try:
        text, ok = await catalog.registry(agent, "pc-1").run("order_status", "{}")
    finally:
        await catalog.close()
    assert not ok
    assert json.loads(text) == {"error": "the order_status service could not be reached"}


def test_the_listing_never_shows_prompts_or_urls(tmp_path: Path) -> None:
    catalog = catalog_for(tmp_path, "http://secret-host.internal:9")
    listing = catalog.listing("echo")
    assert listing == {
        "default_agent": "support",
        "backend": "echo",
        "agents": [
            {
                "name": "support",
                "description": "Order help",
                "voice": ConversationSettings().voice_id,
                "tools": [
                    {"name": "order_status", "description": "Look up an order."},
                    {"name": "clock", "description": "The time."},
                ],
                "knowledge": [],
            }
        ],
    }
    assert "secret-host" not in json.dumps(listing)
