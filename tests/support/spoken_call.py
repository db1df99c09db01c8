"""One whole spoken call: connect, say something, wait for the answer to end, hang up."""

from __future__ import annotations

import asyncio
from typing import Any

from voicegate.testing.client import CallClient


async def spoken_call(url: str, speech: Any, token: str | None = None) -> str:
    """The call's pc_id, after a real aiortc caller said ``speech`` and heard the answer."""
    client = CallClient(url, token=token)
    try:
        async with asyncio.timeout(40):
            answer = await client.connect()
            await client.wait_for("bot-ready", 10)
            client.mic.play(speech)
            await client.wait_for("user-transcription", 15, lambda m: m["data"]["final"])
            await client.wait_for("bot-stopped-speaking", 20)
            assert await client.hangup() == 204
        return str(answer["pc_id"])
    finally:
        await client.close()
