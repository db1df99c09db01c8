"""Logs: JSON lines bound to the call id; no audio, secrets or (by default) transcript text."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.support.server import running_server
from voicegate import logs
from voicegate.backends.echo import EchoBackend
from voicegate.testing.client import CallClient, load_wav

APP_EVENTS = {"open_dev_mode"}
"""Lines about the server, not a call."""


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("json", "info", transcripts=False, stream=stream, cache=False)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def test_redactor_keeps_secrets_audio_and_transcripts_out() -> None:
    event: dict[str, Any] = {
        "event": "x",
        "auth_secret": "s3cr3t-value",
        "Authorization": "Bearer abc",
        "headers": {"X-Amz-Security-Token": "sectokvalue", "accept": "json"},
        "audio": b"\x00\x01" * 500,
        "text": "my account number is 1234",
        "chunk": "A" * 5000,
        "turns": 3,
        "session_token": "eyJ.abc.def",
        "AWS_SECRET_ACCESS_KEY": "wJalr",
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }
    out = logs.Redactor(transcripts=False)(None, "info", dict(event))
    flat = json.dumps(out)
    for leaked in ("s3cr3t", "abc", "sectokvalue", "1234", "A" * 1001, "eyJ", "wJalr"):
        assert leaked not in flat
    assert out["audio"] == "<1000 bytes>"
    assert out["text"] == "<25 chars>"
    assert out["headers"]["accept"] == "json"
    assert out["turns"] == 3
    assert out["usage"] == {"input_tokens": 12, "output_tokens": 7}  # counts, not secrets
    opted_in = logs.Redactor(transcripts=True)(None, "info", dict(event))
    assert opted_in["text"] == "my account number is 1234"
    assert opted_in["auth_secret"] == "[redacted]"  # secrets stay out regardless


async def test_call_lines_carry_the_call_id_and_no_transcript(
    log_stream: io.StringIO, speech_wav: Callable[[str], Path]
) -> None:
    speech = load_wav(speech_wav("my secret word is pineapple"))
    async with running_server(EchoBackend()) as (url, _app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(30):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                client.mic.play(speech)
                user = await client.wait_for("user-transcription", 15)
                await client.wait_for("bot-transcription", 15)
                assert await client.hangup() == 204
        finally:
            await client.close()
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    assert {"connection_state", "transcript", "call_closing", "call_closed"} <= events
    for line in lines:
        assert {"event", "level", "timestamp"} <= set(line)
        if line["event"] not in APP_EVENTS:
            assert line.get("pc_id") == client.pc_id, line
    transcripts = [line for line in lines if line["event"] == "transcript"]
    assert {t["role"] for t in transcripts} == {"user", "assistant"}
    text = user["data"]["text"]
    assert all(t["text"].endswith("chars>") for t in transcripts)
    assert text not in log_stream.getvalue()
