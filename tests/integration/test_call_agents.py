"""Calls to agents from an agents file, through the production Bedrock path (the real AWS SDK
against the stand-in, a real aiortc caller): the agent's system prompt drives a tool call
(``scenario:tool:order_status``), voicegate POSTs it signed to a real aiohttp tool service, and
the result is spoken and in the transcript. A failing tool leaves the call going on. The agent
is chosen in the offer, listed by ``GET /api/agents``, refused when unknown, and named in the
call's info, its record and its webhooks."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.support.receivers import Receiver, receiving
from tests.support.server import running_server
from tests.support.tool_server import ToolServer, tool_server
from voicegate.agents.catalog import AgentCatalog
from voicegate.agents.file import load_agents
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.backends.echo import EchoBackend
from voicegate.conversation import ConversationSettings
from voicegate.signaling import auth
from voicegate.signaling.errors import ApiError
from voicegate.signaling.keys import SESSIONS
from voicegate.signaling.offers import choose_agent
from voicegate.standin import StandIn
from voicegate.testing.client import CallClient, OfferRefused, load_wav

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def agents_file(tmp_path: Path, tool_url: str, hook: str = "", timeout_s: float = 5) -> str:
    (tmp_path / "tool.secret").write_text(SECRET + "\n")
    hook_line = f'webhook_url = "{hook}"' if hook else ""
    path = tmp_path / "agents.toml"
    path.write_text(
        f"""
default_agent = "sales"

[agents.sales]
description = "Sales"
system_prompt = "scenario:reply"
tools = []

[agents.support]
description = "Order help"
system_prompt = "Help with orders. scenario:tool:order_status"
voice = "tiffany"
tools = ["order_status"]
{hook_line}

[tools.order_status]
description = "Look up the status of the caller's order."
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string" }} }} }}

[tools.order_status.http]
url = "{tool_url}"
timeout_s = {timeout_s}
secret_file = "tool.secret"
"""
    )
    return str(path)


def _bedrock(transport: str) -> BedrockBackend:
    return BedrockBackend(
        BedrockSettings(
            region="us-east-1", send_timeout=3.0, close_timeout=1.0, transport=transport
        )
    )


async def test_an_agent_calls_its_http_tool_and_speaks_the_result(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str, tmp_path: Path
) -> None:
    speech = load_wav(speech_wav("where is my order"))
    tools, receiver = ToolServer(SECRET), Receiver()
    hook_secret = tmp_path / "hook.secret"
    hook_secret.write_text(SECRET + "\n")
    async with (
        tool_server(tools) as base,
        receiving(receiver) as hook,
        running_server(
            _bedrock(bedrock_transport),
            agents=agents_file(tmp_path, f"{base}/ok", hook),
            webhook_secret_file=str(hook_secret),
        ) as (url, app),
    ):
        client = CallClient(url)
        client.offer_fields = {"agent": "support"}
        try:
            async with asyncio.timeout(60):
                await client.connect()
                assert app[SESSIONS][client.pc_id].options.info.agent == "support"
                await client.wait_for("bot-ready", 10)
                client.mic.play(speech)
                said = await client.wait_for(
                    "bot-transcription", 30, lambda m: "shipped" in m["data"]["text"]
                )
                await tools.wait_requests(1)
            assert "order_status tool returned" in said["data"]["text"]
            assert tools.verified == 1  # signed, and verified by standardwebhooks
            assert tools.requests[0]["call_id"] == client.pc_id
            assert tools.requests[0]["agent"] == "support"
            assert tools.requests[0]["tool"] == "order_status"
            assert await client.hangup() == 204
            # The agent's own webhook hears of the call, with the agent in its record.
            await receiver.wait(lambda events: any(e["type"] == "call.ended" for e in events))
            ended = next(e for e in receiver.events() if e["type"] == "call.ended")
            assert ended["data"]["agent"] == "support"
            async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
                metrics = await resp.text()
            assert 'voicegate_agent_calls_total{agent="support"} 1.0' in metrics
            assert 'voicegate_agent_calls_total{agent="sales"} 0.0' in metrics
            assert 'voicegate_agent_tool_calls_total{agent="support",result="ok"} 1.0' in metrics
            assert (
                'voicegate_agent_calls_ended_total{agent="support",reason="hangup"} 1.0' in metrics
            )
        finally:
            await client.close()
        # The model stream was set up with the agent's prompt, voice and tool.
        seen = json.dumps(standin.sessions[-1].events)
        assert "tiffany" in seen and "order_status" in seen and "Help with orders" in seen


@pytest.mark.parametrize("kind", ["slow", "500"])
async def test_a_failing_tool_leaves_the_call_going_on(
    standin: StandIn,
    speech_wav: Callable[[str], Path],
    bedrock_transport: str,
    tmp_path: Path,
    kind: str,
) -> None:
    speech = load_wav(speech_wav("where is my order"))
    tools = ToolServer(SECRET)
    async with (
        tool_server(tools) as base,
        running_server(
            _bedrock(bedrock_transport),
            agents=agents_file(tmp_path, f"{base}/{kind}", timeout_s=0.5),
        ) as (url, app),
    ):
        client = CallClient(url)
        client.offer_fields = {"agent": "support"}
        try:
            async with asyncio.timeout(60):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                for turn in (1, 2):  # the failure is spoken, and the next turn is answered
                    client.mic.play(speech)
                    said = await client.wait_for(
                        "bot-transcription", 30, lambda m: "error" in m["data"]["text"]
                    )
                    assert "order_status service" in said["data"]["text"]
                    await tools.wait_requests(turn)
                    await client.wait_for("bot-stopped-speaking", 15)
            assert client.pc_id in app[SESSIONS]
            assert await client.hangup() == 204
        finally:
            await client.close()


async def test_agents_listing_and_unknown_agents(tmp_path: Path) -> None:
    async with running_server(
        EchoBackend(), agents=agents_file(tmp_path, "http://h.internal/t")
    ) as (
        url,
        app,
    ):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/agents") as resp:
                assert resp.status == 200
                listing = await resp.json()
        assert listing == {
            "default_agent": "sales",
            "backend": "echo",
            "agents": [
                {
                    "name": "sales",
                    "description": "Sales",
                    "voice": ConversationSettings().voice_id,
                    "tools": [],
                    "knowledge": [],
                },
                {
                    "name": "support",
                    "description": "Order help",
                    "voice": "tiffany",
                    "tools": [
                        {
                            "name": "order_status",
                            "description": "Look up the status of the caller's order.",
                        }
                    ],
                    "knowledge": [],
                },
            ],
        }
        assert "scenario" not in json.dumps(listing) and "h.internal" not in json.dumps(listing)
        for agent, status in (("nobody", 404), ("Not A Name", 400), (7, 400)):
            client = CallClient(url)
            client.offer_fields = {"agent": agent}
            try:
                with pytest.raises(OfferRefused) as refused:
                    await client.connect()
                assert refused.value.status == status
            finally:
                await client.close()
        assert not app[SESSIONS]
        # No agent named: the default one.
        client = CallClient(url)
        try:
            await client.connect()
            assert app[SESSIONS][client.pc_id].options.info.agent == "sales"
            assert await client.hangup() == 204
        finally:
            await client.close()


def test_a_token_naming_an_agent_allows_only_that_one(tmp_path: Path) -> None:
    spec = load_agents(agents_file(tmp_path, "http://h.internal/t"))
    catalog = AgentCatalog(spec, ConversationSettings(), 3600, base=tmp_path)
    bound = auth.Claims(exp=2_000_000_000, agent="support")
    assert choose_agent(catalog, None, bound, None).name == "support"  # the token's agent
    assert choose_agent(catalog, "support", bound, None).name == "support"
    with pytest.raises(ApiError) as refused:
        choose_agent(catalog, "sales", bound, None)
    assert refused.value.status == 403 and refused.value.extra["reason"] == "agent_not_allowed"
    assert choose_agent(catalog, None, auth.Claims(exp=2_000_000_000), None).name == "sales"
    # A restart keeps the call's agent.
    assert choose_agent(catalog, None, None, "support").name == "support"
    with pytest.raises(ApiError) as refused:
        choose_agent(catalog, "sales", None, "support")
    assert refused.value.status == 409


async def test_a_jwt_naming_an_agent_sees_and_calls_only_that_agent(tmp_path: Path) -> None:
    secret = "agents-jwt-secret-0123456789abcdef"
    now = int(time.time())
    token = jwt.encode(  # minted by PyJWT, as a team's backend would
        {"sub": "carol", "iat": now, "exp": now + 300, "agent": "support"},
        secret,
        algorithm="HS256",
    )
    async with running_server(
        EchoBackend(), agents=agents_file(tmp_path, "http://h.internal/t"), auth_secret=secret
    ) as (url, app):
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{url}/api/agents", headers=headers) as resp:
                assert resp.status == 200
                names = [a["name"] for a in (await resp.json())["agents"]]
        assert names == ["support"]
        refused_client = CallClient(url, token=token)
        refused_client.offer_fields = {"agent": "sales"}
        try:
            with pytest.raises(OfferRefused) as refused:
                await refused_client.connect()
            assert refused.value.status == 403
        finally:
            await refused_client.close()
        assert not app[SESSIONS]
        client = CallClient(url, token=token)  # no agent named: the token's
        try:
            await client.connect()
            assert app[SESSIONS][client.pc_id].options.info.agent == "support"
            assert await client.hangup() == 204
        finally:
            await client.close()
