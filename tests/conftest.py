"""Shared test fixtures: spoken WAVs, a clean AWS environment, the Bedrock stand-in, the
event-loop guard on every test. Helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import require_tool
from tests.support.loop_guard import loop_guard, pytest_collection_modifyitems  # noqa: F401
from voicegate.media import ice

# Imported here, once, so that no test pays for importing aiortc's codecs inside its running loop.
from voicegate.media import patch as _aiortc_patch  # noqa: F401

# Tests never probe the EC2 instance metadata service: all their traffic stays on loopback.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# The embedded call history of every server a test starts goes to a throwaway directory.
os.environ.setdefault("VOICEGATE_STATE_DIR", tempfile.mkdtemp(prefix="vg-state-"))


@pytest.fixture(autouse=True, scope="session")
def _loopback_ice() -> None:
    # Everything in the tests talks over 127.0.0.1 only.
    ice.configure_host_addresses(["127.0.0.1"])


@pytest.fixture(scope="session")
def espeak() -> str:
    return require_tool("espeak-ng")


@pytest.fixture(scope="session")
def speech_wav(espeak: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Speak ``text`` with espeak-ng into a WAV (0.3 s lead-in, 1.2 s of trailing silence)."""
    cache: dict[str, Path] = {}

    def make(text: str) -> Path:
        if text in cache:
            return cache[text]
        out = tmp_path_factory.mktemp("wav") / "speech.wav"
        raw = out.with_suffix(".raw.wav")
        subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
        import wave

        import numpy as np

        with wave.open(str(raw), "rb") as w:
            rate = w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        pad_a = np.zeros(int(0.3 * rate), dtype=np.int16)
        pad_b = np.zeros(int(1.2 * rate), dtype=np.int16)
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(np.concatenate([pad_a, data, pad_b]).tobytes())
        cache[text] = out
        return out

    return make


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ambient AWS configuration: empty config files, no env keys, no IMDS probing."""
    for name in (
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "aws-config"
    creds = tmp_path / "aws-credentials"
    config.write_text("")
    creds.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return config


BEDROCK_TRANSPORTS = ("asyncio", "crt")


@pytest.fixture(params=BEDROCK_TRANSPORTS)
def bedrock_transport(request: pytest.FixtureRequest) -> str:
    """The SDK transport under test: every test of the real Bedrock path runs on both."""
    return str(request.param)


@pytest.fixture
async def standin(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bedrock_transport: str
) -> AsyncIterator[Any]:
    """A scripted Bedrock stand-in, with the environment pointing the real SDK at it (once per
    transport). Test modules that need another brain or limit define their own ``standin``."""
    from voicegate.standin import StandIn

    async with StandIn("scripted", cert_dir=tmp_path / "certs") as s:
        for name, value in s.client_env().items():
            monkeypatch.setenv(name, value)
        yield s


if os.environ.get("VOICEGATE_TEST_LOOP") == "uvloop":
    # `VOICEGATE_TEST_LOOP=uvloop pytest ...` runs the async tests on uvloop (`serve --loop`).
    def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--standin-quirks",
        default="",
        help="run every Bedrock stand-in with these --quirks (comma-separated, or 'all')",
    )


def pytest_configure(config: pytest.Config) -> None:
    quirks = config.getoption("--standin-quirks", default="")
    if quirks:
        from voicegate.standin import server
        from voicegate.standin.quirks import parse_quirks

        server.DEFAULT_QUIRKS = parse_quirks(quirks)
