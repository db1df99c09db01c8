"""Secrets and endpoints: what the stand-in and ``serve`` print about AWS credentials and hosts.

* ``voicegate standin`` verifies signatures with the keys in its environment; it must never
  print or log the secret key or session token it took from there (only its own documented test
  key is printed, so a user can paste it).
* ``voicegate serve --backend bedrock`` says, at start, which Bedrock endpoint calls go to, and
  warns when that is not an AWS host (``*.amazonaws.com``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.support.sdk_call import AUDIO as MIC
from tests.support.sdk_call import Call, P
from voicegate import sonic as sonic

pytestmark = pytest.mark.bedrock

from aws_sdk_bedrock_runtime import models as m  # noqa: E402
from aws_sdk_bedrock_runtime.client import AsyncBedrockRuntimeClient  # noqa: E402
from aws_sdk_bedrock_runtime.config import AsyncBedrockRuntimeConfig  # noqa: E402
from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
SECRET = "wJalrXUtnFEMI-standin-secret-from-the-environment-7f3a"
TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token-from-the-environment-91c2"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra)
    return env


async def _session(values: dict[str, str], secret: str, token: str | None) -> Call:
    """One whole session through the real SDK, signed with ``secret``."""
    config = await AsyncBedrockRuntimeConfig.resolve(
        region=values["AWS_REGION"],
        endpoint_uri=values["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"],
        transport=AWSCRTHTTPClient(client_config=AWSCRTHTTPClientConfig(force_http_2=True)),
        aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret,
        aws_session_token=token,
    )
    stream = await AsyncBedrockRuntimeClient(config=config).invoke_model_with_bidirectional_stream(
        m.InvokeModelWithBidirectionalStreamOperationInput(model_id="amazon.nova-2-sonic-v1:0")
    )
    call = Call(stream)
    try:
        await call.start()
    except Exception as exc:
        call.error = exc
        await call.abort()
        return call
    events: list[sonic.InputEvent] = [
        sonic.SessionStart(),
        sonic.PromptStart(P),
        sonic.TextContentStart(P, "sys", "SYSTEM"),
        sonic.TextInput(P, "sys", "scenario:reply:greet"),
        sonic.ContentEnd(P, "sys"),
        sonic.AudioContentStart(P, MIC),
        sonic.AudioInput(P, MIC, bytes(1024)),
    ]
    for event in events:
        await call.send(event)
    await call.wait_for(lambda e: isinstance(e, sonic.CompletionEnd))
    await call.finish()
    return call


async def test_standin_never_prints_secrets_from_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(
        AWS_ACCESS_KEY_ID="ASIAFROMTHEENVIRONMENT",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_SESSION_TOKEN=TOKEN,
    )
    err_log = tmp_path / "stderr.log"
    with err_log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "voicegate",
            "standin",
            "--port",
            "0",
            "--cert-dir",
            str(tmp_path / "certs"),
            "--log-level",
            "debug",
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=env,
        )
    printed: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while not printed or not printed[-1].startswith("# voicegate stand-in ready"):
                line = (await proc.stdout.readline()).decode()
                assert line, f"the stand-in exited: {err_log.read_text()[-2000:]}"
                printed.append(line.rstrip("\n"))
        values = dict(line.split("=", 1) for line in printed if "=" in line)
        monkeypatch.setenv("SSL_CERT_FILE", values["SSL_CERT_FILE"])
        async with asyncio.timeout(60):
            # A good session (the secret and token sign it), then refused ones.
            good = await _session(values, SECRET, TOKEN)
            wrong_secret = await _session(values, "not-the-secret", TOKEN)
            wrong_token = await _session(values, SECRET, "not-the-token")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            rest, _ = await proc.communicate()
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert good.error is None and good.of(sonic.AudioOutput)
    assert isinstance(wrong_secret.error, m.AccessDeniedException)
    assert isinstance(wrong_token.error, m.AccessDeniedException)
    stdout = "\n".join(printed) + rest.decode()
    stderr = err_log.read_text()
    assert "standin_session" in stderr and "standin_rejected" in stderr  # it did log
    assert values["AWS_ACCESS_KEY_ID"] == "ASIAFROMTHEENVIRONMENT"
    assert "AWS_SECRET_ACCESS_KEY" not in values and "AWS_SESSION_TOKEN" not in values
    assert any("not printed" in line for line in printed)
    for text in (stdout, stderr):
        assert SECRET not in text and TOKEN not in text
        # Nor recognisable pieces of them.
        assert SECRET[:16] not in text and TOKEN[:16] not in text


def test_standin_prints_its_own_test_key(tmp_path: Path) -> None:
    from voicegate.standin import TEST_SECRET_KEY, StandIn
    from voicegate.standin.cli import printable_env

    s = StandIn("scripted", tmp_path)
    s.credentials = type(s.credentials)(s.credentials.access_key, TEST_SECRET_KEY)
    assert f"AWS_SECRET_ACCESS_KEY={TEST_SECRET_KEY}" in printable_env(s)


# -- serve: which endpoint, and a warning when it is not AWS ---------------------------------


def _logged(settings: Any) -> list[dict[str, Any]]:
    from voicegate.backends.bedrock import BedrockBackend

    with structlog.testing.capture_logs() as logs:
        BedrockBackend(settings)
    return [e for e in logs if e["event"].startswith("bedrock_endpoint")]


def test_backend_logs_the_aws_endpoint_it_uses(clean_aws_env: Path) -> None:
    from voicegate.backends.bedrock import BedrockSettings

    logs = _logged(BedrockSettings(region="eu-central-1"))
    assert [(e["event"], e["log_level"]) for e in logs] == [("bedrock_endpoint", "info")]
    assert logs[0]["endpoint"] == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert logs[0]["source"] == "regional default"


@pytest.mark.parametrize(
    ("endpoint", "aws"),
    [
        ("https://bedrock-runtime.us-west-2.amazonaws.com", True),
        ("https://bedrock-runtime.cn-north-1.amazonaws.com.cn", True),
        ("https://127.0.0.1:8443", False),
        ("https://bedrock-runtime.us-east-1.amazonaws.com.evil.example", False),
        ("https://amazonaws.com.attacker.net", False),
    ],
)
def test_backend_warns_when_the_endpoint_is_not_aws(
    clean_aws_env: Path, endpoint: str, aws: bool
) -> None:
    from voicegate.backends.bedrock import BedrockSettings

    logs = _logged(BedrockSettings(region="us-east-1", endpoint=endpoint))
    assert logs[0]["event"] == "bedrock_endpoint" and logs[0]["endpoint"] == endpoint
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert bool(warnings) is not aws
    if warnings:
        assert warnings[0]["event"] == "bedrock_endpoint_not_aws"


async def test_serve_announces_the_endpoint_from_the_environment(tmp_path: Path) -> None:
    env = _env(
        AWS_ACCESS_KEY_ID="AKIDSERVETEST",
        AWS_SECRET_ACCESS_KEY="serve-test-secret",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL_BEDROCK_RUNTIME="https://127.0.0.1:9",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        VOICEGATE_AUTH_SECRET="serve-endpoint-test-secret-0123456789",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicegate",
        "serve",
        "--backend",
        "bedrock",
        "--port",
        "0",
        "--workers",
        "1",
        "--log-format",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while "listening on" not in (line := (await proc.stdout.readline()).decode()):
                assert line, "voicegate serve exited early"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [json.loads(x) for x in err.decode().splitlines() if x.startswith("{")]
    (info,) = [x for x in lines if x.get("event") == "bedrock_endpoint"]
    (warning,) = [x for x in lines if x.get("event") == "bedrock_endpoint_not_aws"]
    assert info["endpoint"] == warning["endpoint"] == "https://127.0.0.1:9"
    assert info["source"] == "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"
    assert warning["level"] == "warning"
    assert "serve-test-secret" not in err.decode()
