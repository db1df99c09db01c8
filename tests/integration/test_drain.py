"""Graceful shutdown of a real ``python -m voicegate serve`` process on SIGTERM.

Readiness goes false and new offers are refused at once, while the running call goes on; a call
that ends by itself lets the process exit before the drain timeout; at the drain timeout the
remaining calls get a ``shutdown`` error message and the process exits 0. With the Bedrock
backend, every stream the stand-in saw is closed: nothing keeps costing money after exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from voicegate.standin import StandIn
from voicegate.testing.client import CallClient

SECRET = "drain-test-secret-0123456789"


@asynccontextmanager
async def serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process, Path]]:
    log = tmp_path / "serve.log"
    full_env = {**os.environ, **(env or {}), "VOICEGATE_AUTH_SECRET": SECRET}
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "voicegate",
            "serve",
            "--port",
            "0",
            "--log-format",
            "json",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=full_env,
        )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"voicegate serve exited early: {log.read_text()[-2000:]}"
                if "listening on" in line:
                    url = line.rsplit(" ", 1)[1].strip()
                    break
        yield url, proc, log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(48000 * seconds)) / 48000
    return (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)


async def _token(url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicegate",
        "token",
        "--ttl",
        "600",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "VOICEGATE_AUTH_SECRET": SECRET},
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode().strip()


async def _wait_not_ready(http: aiohttp.ClientSession, url: str) -> dict[str, object]:
    """Signal delivery is asynchronous: readiness flips within a few tries."""
    for _ in range(100):
        async with http.get(f"{url}/readyz") as r:
            if r.status == 503:
                body: dict[str, object] = await r.json()
                return body
        await asyncio.sleep(0.05)
    raise AssertionError("/readyz never went 503 after SIGTERM")


async def _start_call(url: str, token: str) -> CallClient:
    client = CallClient(url, token=token)
    await client.connect()
    await client.wait_for("bot-ready", 10)
    client.mic.play(_tone(0.3))
    await client.wait_frames(10, 5)
    return client


async def test_sigterm_drains_then_ends_calls_and_exits_0(tmp_path: Path) -> None:
    async with serve(tmp_path, "--backend", "echo", "--drain-timeout", "3") as (url, proc, log):
        token = await _token(url)
        client = await _start_call(url, token)
        try:
            async with asyncio.timeout(60), aiohttp.ClientSession() as http:
                async with http.get(f"{url}/readyz") as r:
                    assert r.status == 200
                proc.send_signal(signal.SIGTERM)
                body = await _wait_not_ready(http, url)
                assert body["ready"] is False and "shutting down" in str(body["error"])
                late = CallClient(url, token=token)
                try:
                    with pytest.raises(RuntimeError, match="503.*shutting down"):
                        await late.connect()
                finally:
                    await late.close()
                async with http.get(f"{url}/healthz") as r:
                    assert r.status == 200  # still alive, just not taking calls
                    assert (await r.json())["sessions"] == 1
                # The running call goes on through the drain.
                await client.wait_frames(50, 5)
                assert client.pc.connectionState == "connected"
                assert not client.of_type("error")
                msg = await client.wait_for("error", 15)
                assert msg["data"]["kind"] == "shutdown" and msg["data"]["fatal"] is True
                assert await proc.wait() == 0
        finally:
            await client.close()
    text = log.read_text()
    assert '"draining"' in text and '"calls_ended": 1' in text
    assert SECRET not in text and token not in text


async def test_calls_that_end_let_the_process_exit_early(tmp_path: Path) -> None:
    # A drain timeout far beyond the test's own timeouts: exiting proves the drain saw the end.
    args = ("--backend", "echo", "--drain-timeout", "600")
    async with serve(tmp_path, *args) as (url, proc, log):
        client = await _start_call(url, await _token(url))
        try:
            async with asyncio.timeout(30), aiohttp.ClientSession() as http:
                proc.send_signal(signal.SIGTERM)
                await _wait_not_ready(http, url)
                await client.wait_frames(25, 5)
                assert await client.hangup() == 204
                assert await proc.wait() == 0
                assert not client.of_type("error")
        finally:
            await client.close()


@pytest.mark.bedrock
async def test_no_bedrock_stream_outlives_the_process(tmp_path: Path, clean_aws_env: Path) -> None:
    async with StandIn("scripted", cert_dir=tmp_path / "certs") as standin:
        env = {**standin.client_env(), "AWS_EC2_METADATA_DISABLED": "true"}
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env[name] = os.environ[name]
        args = ("--backend", "bedrock", "--drain-timeout", "2", "--system-prompt", "scenario:reply")
        async with serve(tmp_path, *args, env=env) as (url, proc, _):
            token = await _token(url)
            calls = [await _start_call(url, token) for _ in range(2)]
            try:
                async with asyncio.timeout(60):
                    assert standin.active_sessions >= 2
                    proc.send_signal(signal.SIGTERM)
                    for call in calls:
                        msg = await call.wait_for("error", 15)
                        assert msg["data"]["kind"] == "shutdown"
                    assert await proc.wait() == 0
            finally:
                for call in calls:
                    await call.close()
        async with asyncio.timeout(10):
            for record in standin.sessions:
                await record.closed.wait()
        assert len(standin.sessions) >= 2
        assert standin.active_sessions == 0
        # Closed in order (sessionEnd sent), not dropped with the process's connection.
        assert [r.outcome for r in standin.sessions] == ["completed"] * len(standin.sessions)
