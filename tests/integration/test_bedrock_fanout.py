"""Fan-out: a bounded number of calls per HTTP/2 connection to Bedrock (``calls_per_connection``),
so one GOAWAY or lost connection ends only that many calls' streams; the real SDK on voicegate's
asyncio transport against the stand-in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from voicegate.backends.bedrock import BedrockBackend, BedrockSettings
from voicegate.standin import StandIn


@pytest.mark.parametrize(("per_connection", "connections"), [(2, 3), (5, 1)])
async def test_calls_spread_over_connections(
    clean_aws_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    per_connection: int,
    connections: int,
) -> None:
    async with StandIn("scripted", cert_dir=tmp_path / "certs") as s:
        for name, value in s.client_env().items():
            monkeypatch.setenv(name, value)
        settings = BedrockSettings(transport="asyncio", calls_per_connection=per_connection)
        backend = BedrockBackend(settings)
        streams = []
        try:
            for _ in range(5):
                streams.append(await backend.open())
            async with asyncio.timeout(10):
                # The stand-in has no event for an accepted request; its session list is it.
                while len(s.sessions) < 5:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert len(s._connections) == connections
        finally:
            for stream in streams:
                await stream.close()
            await backend.aclose()


def test_calls_per_connection_validated() -> None:
    assert BedrockSettings(calls_per_connection=20).validate() == []
    for bad in (0, 101, True):
        (problem,) = BedrockSettings(calls_per_connection=bad).validate()
        assert "calls_per_connection" in problem
