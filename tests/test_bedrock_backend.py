"""The Bedrock backend: settings, error mapping, the boto3 credential bridge, and the real SDK
(aws-sdk-bedrock-runtime 0.12 over CRT HTTP/2) against the wire-true stand-in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aws_sdk_bedrock_runtime")

from aws_sdk_bedrock_runtime import models as m  # noqa: E402
from botocore.credentials import Credentials, RefreshableCredentials  # noqa: E402
from smithy_aws_event_stream.exceptions import UnmodeledEventError  # noqa: E402
from smithy_core.exceptions import SmithyError, SmithyIdentityError  # noqa: E402

from voicegate.backends import base  # noqa: E402
from voicegate.backends.bedrock import (  # noqa: E402
    DEFAULT_MODEL_ID,
    BedrockBackend,
    BedrockSettings,
    default_region,
    map_error,
)
from voicegate.backends.bedrock_credentials import (  # noqa: E402
    BotocoreIdentityResolver,
    credentials_status,
)

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


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


def test_region_default_order(clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_region() == "us-east-1"
    clean_aws_env.write_text("[default]\nregion = ap-northeast-1\n")
    assert default_region() == "ap-northeast-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert default_region() == "us-west-2"
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    assert default_region() == "eu-north-1"
    assert BedrockSettings().region == "eu-north-1"


@pytest.mark.parametrize(
    "model_id",
    [
        DEFAULT_MODEL_ID,
        "amazon.nova-sonic-v1:0",
        "us.amazon.nova-2-sonic-v1:0",
        "global.amazon.nova-2-sonic-v1:0",
        "us.amazon.nova-sonic-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-2-sonic-v1:0",
    ],
)
def test_model_ids_accepted(model_id: str) -> None:
    assert BedrockSettings(region="us-east-1", model_id=model_id).validate() == []


def test_nova2_detection() -> None:
    assert BedrockSettings(region="us-east-1").is_nova2
    assert BedrockSettings(region="us-east-1", model_id="global.amazon.nova-2-sonic-v1:0").is_nova2
    assert not BedrockSettings(region="us-east-1", model_id="amazon.nova-sonic-v1:0").is_nova2


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"model_id": "amazon.titan-text-v1"}, "not a Nova Sonic model"),
        ({"model_id": "xx.amazon.nova-2-sonic-v1:0"}, "not a Nova Sonic model"),
        ({"model_id": "amazon.nova-2-sonic-v1"}, "not a Nova Sonic model"),
        ({"region": "us_east_1"}, "not an AWS region"),
        ({"region": ""}, "not an AWS region"),
        ({"endpoint": "http://127.0.0.1:8443"}, "must be an https:// URL"),
        ({"endpoint": "https://"}, "has no host"),
        ({"endpoint": "https://127.0.0.1:99999"}, "not a URL"),
        ({"send_timeout": 0}, "send_timeout"),
        ({"open_timeout": -1.0}, "open_timeout"),
        ({"close_timeout": float("nan")}, "close_timeout"),
        ({"send_timeout": 1e9}, "send_timeout"),
        ({"send_timeout": True}, "send_timeout"),
    ],
)
def test_invalid_settings_are_explained(kwargs: dict[str, Any], fragment: str) -> None:
    settings = BedrockSettings(**{"region": "us-east-1", **kwargs})
    errors = settings.validate()
    assert len(errors) == 1
    assert fragment in errors[0]
    with pytest.raises(ValueError, match="invalid Bedrock settings"):
        BedrockBackend(settings)


def test_endpoint_from_environment_is_checked(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:8443")
    settings = BedrockSettings(region="us-east-1")
    (error,) = settings.validate()
    assert "AWS_ENDPOINT_URL_BEDROCK_RUNTIME" in error and "https" in error
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "https://127.0.0.1:8443")
    assert settings.validate() == []
    assert settings.effective_endpoint() == "https://127.0.0.1:8443"
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
    assert settings.effective_endpoint() == "https://bedrock-runtime.us-east-1.amazonaws.com"


# --------------------------------------------------------------------------------------------
# Error mapping (real SDK exception classes)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected", "retryable"),
    [
        (m.AccessDeniedException(message="no"), base.AccessDenied, False),
        (m.ValidationException(message="Invalid input request"), base.ValidationFailed, False),
        (
            m.ValidationException(message="System instability detected. Please retry."),
            base.ValidationFailed,
            True,
        ),
        (
            m.ValidationException(
                message="InternalErrorCode=531::RST_STREAM closed stream. HTTP/2 error code: "
                "NO_ERROR"
            ),
            base.ValidationFailed,
            True,
        ),
        (m.ModelTimeoutException(message="timed out"), base.ModelTimeout, True),
        (m.ThrottlingException(message="slow down"), base.Throttled, True),
        (m.ServiceQuotaExceededException(message="quota"), base.Throttled, True),
        (m.ServiceUnavailableException(message="down"), base.ServiceUnavailable, True),
        (m.ModelNotReadyException(message="warming"), base.ServiceUnavailable, True),
        (m.InternalServerException(message="oops"), base.InternalServerError, True),
        (m.ModelStreamErrorException(message="bad"), base.ModelStreamError, True),
        (m.ModelErrorException(message="bad"), base.ModelStreamError, True),
        (m.ResourceNotFoundException(message="no model"), base.ValidationFailed, False),
        (UnmodeledEventError("InternalFailure", "boom"), base.StreamLost, True),
        (SmithyIdentityError("no creds"), base.AccessDenied, False),
        (RuntimeError("surprise"), base.StreamLost, True),
    ],
)
def test_error_mapping(exc: Exception, expected: type[base.BackendError], retryable: bool) -> None:
    err = map_error(exc)
    assert type(err) is expected
    assert err.retryable is retryable
    assert err.message


def test_wrapped_transport_errors_are_unwrapped() -> None:
    from awscrt.exceptions import AwsCrtError

    crt = AwsCrtError(1029, "AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE", "TLS negotiation failed")
    wrapped = SmithyError(crt)
    wrapped.__cause__ = crt
    err = map_error(wrapped)
    assert isinstance(err, base.StreamLost)
    assert "AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE" in err.message
    assert "SSL_CERT_FILE" in err.message
    denied = OSError("Failed to read from stream.")
    denied.__cause__ = m.AccessDeniedException(message="nope")
    assert isinstance(map_error(denied), base.AccessDenied)


# --------------------------------------------------------------------------------------------
# Credentials: boto3's chain bridged into the SDK's identity resolver
# --------------------------------------------------------------------------------------------


async def test_static_credentials_are_snapshotted_once() -> None:
    resolver = BotocoreIdentityResolver(Credentials("AKIDSTATIC", SECRET, method="env"))
    first = await resolver.get_identity(properties={})
    second = await resolver.get_identity(properties={})
    assert first is second
    assert (first.access_key_id, first.secret_access_key) == ("AKIDSTATIC", SECRET)
    assert first.session_token is None and first.expiration is None
    assert resolver.refreshes == 1
    assert resolver.method == "env"
    await resolver.invalidate()
    await resolver.get_identity(properties={})
    assert resolver.refreshes == 2


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def _refreshable(clock: _Clock, lifetime: timedelta) -> tuple[Any, list[int], Callable[[], None]]:
    """botocore RefreshableCredentials whose refresh records the thread it ran in."""
    threads: list[int] = []
    state = {"n": 1, "fail": False}

    def refresh() -> dict[str, str]:
        threads.append(threading.get_ident())
        if state["fail"]:
            raise RuntimeError(f"STS unreachable (secret {SECRET} must not leak)")
        state["n"] += 1
        return {
            "access_key": f"ASIA{state['n']}",
            "secret_key": f"{SECRET}{state['n']}",
            "token": f"token{state['n']}",
            "expiry_time": (clock.now + lifetime).isoformat(),
        }

    creds = RefreshableCredentials(
        "ASIA1",
        f"{SECRET}1",
        "token1",
        clock.now + lifetime,
        refresh,
        "assume-role",
        time_fetcher=clock,
    )

    def fail() -> None:
        state["fail"] = True

    return creds, threads, fail


async def test_refreshable_credentials_refresh_before_expiry_off_the_loop() -> None:
    clock = _Clock()
    creds, threads, _ = _refreshable(clock, timedelta(hours=1))
    resolver = BotocoreIdentityResolver(creds, clock=clock)
    first = await resolver.get_identity(properties={})
    assert first.access_key_id == "ASIA1"
    assert first.session_token == "token1"
    assert first.expiration == clock.now + timedelta(hours=1)
    assert threads == []

    # Inside the advisory window: the current keys are returned at once, a refresh starts in
    # a worker thread, and later signatures use the new keys.
    clock.now += timedelta(minutes=56)
    during = await resolver.get_identity(properties={})
    assert during.access_key_id == "ASIA1"
    async with asyncio.timeout(5):
        await resolver.settle()
    assert resolver.refreshes == 2
    after = await resolver.get_identity(properties={})
    assert after.access_key_id == "ASIA2"
    assert after.secret_access_key == f"{SECRET}2"
    assert after.expiration == clock.now + timedelta(hours=1)
    assert threads and threading.get_ident() not in threads

    # Inside the mandatory window the signer waits for fresh keys.
    clock.now += timedelta(minutes=59, seconds=30)
    fresh = await resolver.get_identity(properties={})
    assert fresh.access_key_id == "ASIA3"
    assert resolver.expiration == clock.now + timedelta(hours=1)


async def test_failed_mandatory_refresh_is_an_error_without_secrets() -> None:
    clock = _Clock()
    creds, _, fail = _refreshable(clock, timedelta(hours=1))
    resolver = BotocoreIdentityResolver(creds, clock=clock)
    await resolver.get_identity(properties={})
    fail()
    clock.now += timedelta(minutes=59, seconds=45)
    with pytest.raises(SmithyIdentityError) as info:
        await resolver.get_identity(properties={})
    assert SECRET not in str(info.value)
    assert "assume-role" in str(info.value)
    assert isinstance(map_error(info.value), base.AccessDenied)


def test_credentials_status_reports_source_not_secret(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok, reason = credentials_status()
    assert not ok
    assert "no AWS credentials" in reason
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENVEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    ok, reason = credentials_status()
    assert ok
    assert "env" in reason
    assert SECRET not in reason and "AKIDENVEXAMPLE" not in reason


def test_credentials_status_reads_profiles(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "aws-credentials").write_text(
        f"[work]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = {SECRET}\n"
    )
    assert not credentials_status()[0]
    ok, reason = credentials_status("work")
    assert ok and "shared-credentials-file" in reason
    monkeypatch.setenv("AWS_PROFILE", "work")
    assert credentials_status()[0]
    ok, reason = credentials_status("missing")
    assert not ok and "profile" in reason


async def test_open_without_credentials_is_access_denied(clean_aws_env: Path) -> None:
    backend = BedrockBackend(BedrockSettings(region="us-east-1", open_timeout=5))
    try:
        async with asyncio.timeout(15):
            with pytest.raises(base.AccessDenied, match="no AWS credentials"):
                await backend.open()
    finally:
        await backend.aclose()
