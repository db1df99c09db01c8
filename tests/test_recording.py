"""Opt-in call recording: complete, playable, time-aligned files, locally and in S3 (moto)."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from tests.support.components import require
from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.observability import recording
from voicegate.observability.metrics import GatewayMetrics
from voicegate.observability.recording import Recorder, RecordingOptions
from voicegate.signaling.app import METRICS, SESSIONS
from voicegate.testing.client import CallClient, load_wav

WINDOW_S = 0.02


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        assert data.size == w.getnframes()  # the header matches the data: the file is complete
    return rate, data


def decoded_samples(path: Path) -> int:
    """Decode with FFmpeg (through PyAV), as a media player would."""
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def loud_windows(rate: int, data: np.ndarray, threshold: float = 500.0) -> np.ndarray:
    """Start times (s) of the 20 ms windows whose RMS is above ``threshold``."""
    n = int(rate * WINDOW_S)
    frames = data[: data.size // n * n].reshape(-1, n).astype(np.float64)
    rms = np.sqrt((frames * frames).mean(axis=1))
    return np.flatnonzero(rms > threshold) * WINDOW_S


def _recording_of(session: Any) -> recording.CallRecording | None:
    """The call's recording: one of the observers signaling registered on it."""
    found = [o for o in session.observers if isinstance(o, recording.CallRecording)]
    assert len(found) <= 1
    return found[0] if found else None


async def _recorded_call(url: str, speech: np.ndarray, app: Any) -> recording.CallRecording:
    client = CallClient(url)
    client.offer_fields = {"record": True}
    try:
        async with asyncio.timeout(40):
            answer = await client.connect()
            assert answer["recording"] is True
            call = _recording_of(app[SESSIONS][client.pc_id])
            assert call is not None
            await client.wait_for("bot-ready", 10)
            client.mic.play(speech)
            await client.wait_for("bot-started-speaking", 20)
            await client.wait_for("bot-stopped-speaking", 20)
            assert await client.hangup() == 204
            await asyncio.to_thread(call.finished.wait, 20)
            assert call.finished.is_set()
    finally:
        await client.close()
    return call


def check_call_files(directory: Path, spoken_s: float) -> None:
    meta = json.loads((directory / "call.json").read_text())
    assert meta["dropped_chunks"] == {"user": 0, "bot": 0, "transcript": 0}
    rate_u, user = read_wav(directory / "user.wav")
    rate_b, bot = read_wav(directory / "bot.wav")
    assert (rate_u, rate_b) == (16000, 24000)
    duration = meta["duration_s"]
    # Both streams cover the call from its start to its end, on one clock.
    assert abs(user.size / rate_u - duration) < 1.0
    assert abs(bot.size / rate_b - duration) < 1.0
    assert meta["user"]["seconds"] == pytest.approx(user.size / rate_u, abs=0.01)
    assert decoded_samples(directory / "user.wav") == user.size
    assert decoded_samples(directory / "bot.wav") == bot.size
    heard = loud_windows(rate_u, user)
    said = loud_windows(rate_b, bot)
    # Real energy in both: the user's speech as the model heard it, the echo as it went out.
    assert heard.size * WINDOW_S > 0.5 * spoken_s
    assert said.size * WINDOW_S > 0.5 * spoken_s
    # Aligned in time: the echo starts after the user began and ends after the user stopped.
    assert said[0] > heard[0] + 0.3
    assert said[-1] > heard[-1]
    # ... and the echo lasts as long as what was said (nothing stretched, nothing lost).
    assert abs((said[-1] - said[0]) - (heard[-1] - heard[0])) < 0.5
    lines = [json.loads(x) for x in (directory / "transcript.jsonl").read_text().splitlines()]
    user_lines = [x for x in lines if x["type"] == "user"]
    bot_lines = [x for x in lines if x["type"] == "assistant"]
    assert user_lines and "echo turn 1" in user_lines[0]["text"]
    assert bot_lines and bot_lines[0]["t"] >= user_lines[0]["t"]
    assert all(0 <= x["t"] <= duration + 0.1 for x in lines)


async def test_recording_to_a_directory(speech_wav: Callable[[str], Path], tmp_path: Path) -> None:
    speech = load_wav(speech_wav("one two three four five, please record this"))
    spoken_s = float(np.count_nonzero(np.abs(speech) > 1000)) / 48000
    async with running_server(EchoBackend(), record_dir=str(tmp_path / "rec")) as (url, app):
        call = await _recorded_call(url, speech, app)
        assert call.result.directory == tmp_path / "rec" / call.call_id
        check_call_files(call.result.directory, spoken_s)
        # A call that does not ask is not recorded.
        plain = CallClient(url)
        try:
            async with asyncio.timeout(20):
                answer = await plain.connect()
                assert answer["recording"] is False
                assert _recording_of(app[SESSIONS][plain.pc_id]) is None
                assert await plain.hangup() == 204
        finally:
            await plain.close()
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == [call.call_id]
    # People's voices: only the server's user may list or read them, whatever the umask.
    assert stat.S_IMODE((tmp_path / "rec").stat().st_mode) == 0o700
    assert stat.S_IMODE(call.result.directory.stat().st_mode) == 0o700
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in call.result.directory.iterdir()}
    assert modes == {
        "user.wav": 0o600,
        "bot.wav": 0o600,
        "transcript.jsonl": 0o600,
        "call.json": 0o600,
    }


def test_recording_options_are_validated(tmp_path: Path) -> None:
    from voicegate.config import ConfigError, resolve

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    env = {"VOICEGATE_RECORD_S3_BUCKET": "Bad_Bucket", "VOICEGATE_RECORD_DIR": str(not_a_dir)}
    with pytest.raises(ConfigError) as err:
        resolve(None, env=env)
    assert any("record_s3_bucket" in p for p in err.value.problems)
    assert any("record_dir" in p for p in err.value.problems)
    ok = resolve(None, env={"VOICEGATE_RECORD_S3_BUCKET": "my-recordings.eu"})
    assert ok.record_s3_bucket == "my-recordings.eu" and ok.record_s3_prefix == "voicegate/"


async def test_record_flag_is_checked() -> None:
    async with running_server(EchoBackend()) as (url, _app):
        async with aiohttp.ClientSession() as http:
            for flag, needle in (("yes", "boolean"), (True, "not enabled")):
                body = {"sdp": "v=0\r\n", "type": "offer", "record": flag}
                async with asyncio.timeout(10):
                    async with http.post(f"{url}/api/offer", json=body) as resp:
                        assert resp.status == 400
                        assert needle in (await resp.json())["error"]


def test_drops_are_counted_and_become_silence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that falls behind costs chunks, never the call: each drop is counted (call.json,
    metrics) and its place is filled with silence, so the timeline stays right."""
    monkeypatch.setattr(recording, "MAX_QUEUED", 4)
    gate = threading.Event()
    original = Recorder._open_files

    def slow_open(self: Recorder, call: recording.CallRecording) -> Any:
        gate.wait(10)  # the disk is slow right now
        return original(self, call)

    monkeypatch.setattr(Recorder, "_open_files", slow_open)
    metrics = GatewayMetrics()
    rec = Recorder(RecordingOptions(directory=str(tmp_path)), metrics)
    now = [100.0]
    call = rec.start_call("drops", clock=lambda: now[0])
    chunk = (np.full(320, 3000, dtype=np.int16)).tobytes()  # 20 ms at 16 kHz
    time.sleep(0.05)  # let the writer pick up the open (and block in it)
    for _ in range(10):
        call.user(chunk)
    gate.set()
    deadline = time.monotonic() + 5
    while rec._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(2):
        call.user(chunk)
    call.close()
    assert call.finished.wait(10)
    assert call.dropped["user"] == 6
    assert metrics.recording_dropped.value(stream="user") == 6
    meta = json.loads((tmp_path / "drops" / "call.json").read_text())
    assert meta["dropped_chunks"]["user"] == 6
    rate, data = read_wav(tmp_path / "drops" / "user.wav")
    assert data.size == 12 * 320  # nothing shifted: 4 kept, 6 silent, 2 kept
    assert np.all(data[: 4 * 320] == 3000)
    assert np.all(data[4 * 320 : 10 * 320] == 0)
    assert np.all(data[10 * 320 :] == 3000)
    asyncio.run(rec.aclose())


# -- S3 through moto's server mode -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def moto_s3(clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        require(False, "moto[server] is not installed (pip install -e '.[dev]')")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        for name, value in {
            "AWS_ENDPOINT_URL_S3": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _FlakyS3:
    """The real (moto) client, but the first part upload fails once, like a network blip."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.failures = 0

    def upload_part(self, **kwargs: Any) -> Any:
        if self.failures == 0:
            self.failures += 1
            raise ConnectionError("connection reset by peer")
        return self._client.upload_part(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_recording_to_s3_multipart_with_retry(
    moto_s3: str,
    speech_wav: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    # boto3 builds clients (reading botocore's endpoint data) and calls S3 synchronously:
    # blocking work, done off the loop that carries the call.
    s3 = await asyncio.to_thread(boto3.session.Session().client, "s3")
    await asyncio.to_thread(s3.create_bucket, Bucket="vg-recordings")
    flaky = _FlakyS3(await asyncio.to_thread(recording._default_s3_client))
    monkeypatch.setattr(recording, "_default_s3_client", lambda: flaky)
    monkeypatch.setattr(recording, "UPLOAD_BACKOFF", 0.05)
    speech = load_wav(speech_wav("one two three four five, please record this"))
    spoken_s = float(np.count_nonzero(np.abs(speech) > 1000)) / 48000
    overrides = {"record_s3_bucket": "vg-recordings", "record_s3_prefix": "calls/"}
    async with running_server(EchoBackend(), **overrides) as (url, app):
        call = await _recorded_call(url, speech, app)
        assert call.result.upload_error == ""
        assert app[METRICS].recording_uploads.value(result="ok") == 1
    assert flaky.failures == 1  # the blip happened and the upload was retried
    prefix = f"calls/{call.call_id}/"
    assert sorted(call.result.s3_keys) == sorted(prefix + n for n in recording.FILES)
    assert call.result.directory is None  # the local staging copy is gone after the upload
    listed = s3.list_objects_v2(Bucket="vg-recordings", Prefix=prefix)
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(call.result.s3_keys)
    head = s3.head_object(Bucket="vg-recordings", Key=prefix + "user.wav")
    assert head["ETag"].strip('"').endswith("-1")  # written by a multipart upload
    out = tmp_path / "downloaded"
    out.mkdir()
    for name in recording.FILES:
        s3.download_file("vg-recordings", prefix + name, str(out / name))
    check_call_files(out, spoken_s)


async def test_failed_upload_keeps_the_files(
    moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recording, "UPLOAD_BACKOFF", 0.01)
    metrics = GatewayMetrics()
    options = RecordingOptions(directory=str(tmp_path), s3_bucket="no-such-bucket")
    rec = Recorder(options, metrics)
    call = rec.start_call("c1")
    call.user(np.zeros(1600, dtype=np.int16).tobytes())
    call.close()
    assert await asyncio.to_thread(call.finished.wait, 30)
    assert "NoSuchBucket" in call.result.upload_error
    assert metrics.recording_uploads.value(result="failed") == 1
    assert (tmp_path / "c1" / "user.wav").is_file()  # nothing lost: kept for a later upload
    await rec.aclose()
