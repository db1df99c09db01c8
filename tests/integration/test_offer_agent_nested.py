"""The agent of a call named the way Pipecat's SmallWebRTCTransport can send it: its
``webrtcRequestParams.requestData`` arrives nested under ``"requestData"`` in the offer body
(the transport owns the top-level fields). A top-level ``"agent"`` wins over the nested one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient, OfferRefused

AGENTS = """
default_agent = "sales"
[agents.sales]
description = "Plans and prices"
[agents.support]
description = "Order help"
"""


async def test_a_nested_request_data_agent_picks_the_agent(tmp_path: Path) -> None:
    (tmp_path / "agents.toml").write_text(AGENTS)
    async with running_server(EchoBackend(), agents=str(tmp_path / "agents.toml")) as (url, app):
        cases = [
            ({"requestData": {"agent": "support"}}, "support"),
            ({"agent": "sales", "requestData": {"agent": "support"}}, "sales"),
            ({"requestData": {"other": 1}}, "sales"),
        ]
        for fields, expected in cases:
            client = CallClient(url)
            client.offer_fields = fields
            try:
                async with asyncio.timeout(30):
                    await client.connect()
                    assert app[SESSIONS][client.pc_id].options.info.agent == expected, fields
                    assert await client.hangup() == 204
            finally:
                await client.close()
        bad = CallClient(url)
        bad.offer_fields = {"requestData": {"agent": "Not A Name"}}
        try:
            with pytest.raises(OfferRefused) as refused:
                await bad.connect()
        finally:
            await bad.close()
        assert refused.value.status == 400
