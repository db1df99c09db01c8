"""``--model-input-rate``: a whole call streams caller audio to Bedrock at the configured rate.

Real parts throughout: an aiortc peer -> voicegate (--backend bedrock, the real
aws-sdk-bedrock-runtime over HTTP/2 + TLS) -> the stand-in, whose session record says what rate
the audio content declared and how much audio arrived, and whose scripted brain measures the
speech it heard in audio time at that rate (so a rate declared wrongly would stretch it).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from tests.support.server import running_server
from tests.support.standin import scripted_without_failures
from voicegate.audio.chunks import model_chunk_seconds
from voicegate.audio.levels import rms
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
from voicegate.media import patch as rtcpatch
from voicegate.signaling.app import SESSIONS
from voicegate.standin import StandIn
from voicegate.standin.brains import SPEECH_RMS
from voicegate.testing.client import RATE, CallClient, load_wav

HEARD = re.compile(r"stand-in heard ([0-9.]+) s of speech")
FRAME_S = 0.02


def _voiced_span_s(speech: np.ndarray) -> float:
    """First to last voiced 20 ms frame of ``speech`` (at the caller's rate), by the stand-in's
    own speech rule: what its brain reports hearing when it reads the rate right."""
    step = round(RATE * FRAME_S)
    voiced = [
        i
        for i in range(0, len(speech) - step + 1, step)
        if rms(speech[i : i + step].astype("<i2").tobytes()) >= SPEECH_RMS
    ]
    return (voiced[-1] - voiced[0] + step) / RATE


@pytest.fixture
async def standin(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bedrock_transport: str
) -> AsyncIterator[StandIn]:
    # Irregular output (--standin-quirks) yes; injected stream failures no: one stream per
    # call, so the record's audio is exactly what the conversation sent.
    async with scripted_without_failures(tmp_path / "certs", monkeypatch) as s:
        yield s


@pytest.mark.parametrize("rate", [8000, 24000])
async def test_a_call_streams_caller_audio_at_the_configured_rate(
    standin: StandIn, speech_wav: Callable[[str], Path], bedrock_transport: str, rate: int
) -> None:
    speech = load_wav(speech_wav("hello, can you hear me"))
    spoken_s = _voiced_span_s(speech)
    backend = BedrockBackend(
        BedrockSettings(
            region="us-east-1",
            send_timeout=3.0,
            close_timeout=1.0,
            transport=bedrock_transport,
            input_rate=rate,
        )
    )
    async with running_server(backend, system_prompt="Be brief. scenario:reply") as (url, app):
        client = CallClient(url)
        try:
            async with asyncio.timeout(40):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                session = app[SESSIONS][client.pc_id]
                conv = session.conversation
                assert conv.input_rate == rate
                # Opus is decoded natively at 24 kHz for a 24 kHz model, else at 16 kHz.
                assert rtcpatch.settings().decode_rate == max(16000, rate)
                client.mic.play(speech)
                user = await client.wait_for("user-transcription", 15)
                await client.wait_for("bot-started-speaking", 5)
                await client.wait_for("bot-stopped-speaking", 10)
            assert client.audio.speech_seconds(300) >= 0.6  # the stand-in's 1 s reply
            assert await client.hangup() == 204
        finally:
            await client.close()
        record = standin.sessions[-1]
        async with asyncio.timeout(10):
            await record.closed.wait()
    # The audio content declared the configured rate, and the brain, counting audio time at
    # that rate, heard as much speech as was spoken (a wrong rate would scale it by 2/3 or 2).
    assert record.audio_rate == rate
    (heard,) = HEARD.findall(user["data"]["text"])
    assert abs(float(heard) - spoken_s) < 0.15, (heard, spoken_s)
    # Every caller chunk is --model-chunk-ms long at the rate, and the stand-in got exactly the
    # chunks the conversation sent: `rate` samples per second of audio.
    chunk_bytes = round(rate * model_chunk_seconds()) * 2
    sizes = Counter(size for _, size in record.audio_arrivals)
    assert set(sizes) == {chunk_bytes}, sizes
    sent = conv.stats.audio_chunks_sent + conv.stats.silence_chunks_sent
    assert record.audio_chunks == sent and conv.stats.streams_opened == 1
    assert record.audio_bytes == sent * chunk_bytes
    assert record.audio_seconds == pytest.approx(sent * model_chunk_seconds())
    # And those chunks are the caller's audio: one per 20 ms frame received (the resampler's
    # filter delay holds back at most a frame or two at the start).
    assert 0 <= session.stats["frames_in"] - session.stats["chunks_out"] <= 2
    assert record.closed_in_order()
