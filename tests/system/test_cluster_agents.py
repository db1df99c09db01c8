"""The agent of a call survives its node: two ``voicegate serve`` nodes with the same agents
file and a real ``redis-server``; the call's stored state names its agent, and the node that
adopts the call runs it as that agent (its by-agent metrics count the call's end)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.cluster import history_saved, token, two_nodes
from voicegate.testing.client import CallClient, load_wav

AGENTS = """
default_agent = "sales"
[agents.sales]
system_prompt = "scenario:reply"
[agents.support]
description = "Order help"
system_prompt = "Help with orders. scenario:reply"
"""


async def test_an_adopted_call_keeps_its_agent(
    tmp_path: Path, standin: Any, speech_wav: Callable[[str], Path]
) -> None:
    speech = load_wav(speech_wav("hello, can you hear me"))
    env = {**standin.client_env(), "AWS_EC2_METADATA_DISABLED": "true"}
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env[name] = os.environ[name]
    (tmp_path / "agents.toml").write_text(AGENTS)
    args = ("--backend", "bedrock", "--agents", str(tmp_path / "agents.toml"))
    async with two_nodes(tmp_path, args, args, env=env) as (redis_url, a, b):
        client = CallClient(a.url, token=token())
        client.offer_fields = {"agent": "support"}
        moved: CallClient | None = None
        try:
            async with asyncio.timeout(90):
                await client.connect()
                await client.wait_for("bot-ready", 15)
                client.mic.play(speech)
                await client.wait_for("bot-transcription", 20)
                state = await history_saved(redis_url, client.pc_id, 2)
                assert state["agent"] == "support"
                a.kill()
                moved = CallClient(b.url, token=client.session_token)
                await moved.connect(restart_of=client.pc_id)
                await moved.wait_for("bot-ready", 10)
                assert await moved.hangup() == 204
                ended = 'voicegate_agent_calls_ended_total{agent="support",reason="hangup"} 1.0'
                for _ in range(100):  # the end is counted as the call closes
                    if ended in await b.text("/metrics"):
                        break
                    await asyncio.sleep(0.05)
                assert ended in await b.text("/metrics")
        finally:
            await client.close()
            if moved is not None:
                await moved.close()
