"""A whole call over loopback: a real aiortc peer talks to voicegate's echo backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.testing.client import CallClient, load_wav


async def test_echo_call_round_trip(speech_wav: Callable[[str], Path]) -> None:
    speech = load_wav(speech_wav("hello there, this is a test of the echo path"))
    async with running_server(EchoBackend()) as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(30):
                answer = await client.connect()
                assert answer["type"] == "answer"
                assert answer["pc_id"].startswith("pc-")
                await client.wait_for("bot-ready", 10)
                t_speak = asyncio.get_running_loop().time()
                client.mic.play(speech)
                await client.wait_for("user-started-speaking", 10)
                await client.wait_for("user-stopped-speaking", 15)
                user = await client.wait_for("user-transcription", 15)
                assert "echo turn 1" in user["data"]["text"]
                assert user["data"]["final"] is True
                await client.wait_for("bot-started-speaking", 10)
                await client.wait_for("bot-stopped-speaking", 20)
                bot = await client.wait_for("bot-transcription", 5)
                assert bot["data"]["text"]
                latency = await client.wait_for(
                    "server-message", 5, lambda m: m["data"].get("kind") == "turn-latency"
                )
                assert latency["data"]["total_ms"] > 0
            # The echo comes back with real energy, about as long as what was said.
            spoken_s = float(np.count_nonzero(np.abs(speech) > 1000)) / 48000
            assert client.audio.rms_after(t_speak) > 300
            assert client.audio.speech_seconds() > 0.5 * spoken_s
            assert await client.hangup() == 204
            assert app_sessions(app) == 0
        finally:
            await client.close()


def app_sessions(app: object) -> int:
    from voicegate.signaling.app import SESSIONS

    return len(app[SESSIONS])  # type: ignore[index]
