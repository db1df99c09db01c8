"""The Bedrock backend: settings, error mapping, the boto3 credential bridge, and the real SDK
(aws-sdk-bedrock-runtime 0.12) against the wire-true stand-in, over both transports (voicegate's
asyncio HTTP/2 client and CRT): every test that opens a stream runs once per transport."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aws_sdk_bedrock_runtime  # noqa: F401  (installed by make test; missing = failure)
import pytest
from aws_sdk_bedrock_runtime import models as m  # noqa: E402
from botocore.credentials import Credentials, RefreshableCredentials  # noqa: E402
from smithy_aws_event_stream.exceptions import UnmodeledEventError  # noqa: E402
from smithy_core.exceptions import SmithyError, SmithyIdentityError  # noqa: E402

from voicegate.backends import base  # noqa: E402
from voicegate.backends.bedrock.client import (  # noqa: E402
    DEFAULT_MODEL_ID,
    BedrockBackend,
    BedrockSettings,
    default_region,
    map_error,
)
from voicegate.backends.bedrock.credentials import (  # noqa: E402
    BotocoreIdentityResolver,
    credentials_status,
)

pytestmark = pytest.mark.bedrock

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "model_id", ["amazon.titan-text-v1", "xx.amazon.nova-2-sonic-v1:0", "amazon.nova-3-sonic-v1:0"]
)
def test_an_undocumented_model_id_is_used_with_a_warning(model_id: str) -> None:
    # Models released after this code must stay usable: a warning, not a refusal.
    settings = BedrockSettings(region="us-east-1", model_id=model_id)
    assert settings.validate() == []
    assert any("not a documented Nova Sonic model" in w for w in settings.warnings())


def test_a_region_the_model_is_not_offered_in_warns() -> None:
    assert BedrockSettings(region="us-west-2").warnings() == []
    warned = BedrockSettings(region="eu-west-1").warnings()
    assert len(warned) == 1 and "eu-west-1" in warned[0] and "us-east-1" in warned[0]
    assert BedrockSettings(region="us-west-2", model_id="amazon.nova-sonic-v1:0").warnings()


def test_nova2_detection() -> None:
    assert BedrockSettings(region="us-east-1").is_nova2
    assert BedrockSettings(region="us-east-1", model_id="global.amazon.nova-2-sonic-v1:0").is_nova2
    assert not BedrockSettings(region="us-east-1", model_id="amazon.nova-sonic-v1:0").is_nova2


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"model_id": ""}, "empty or has white space"),
        ({"model_id": "amazon.nova-2-sonic-v1:0 "}, "empty or has white space"),
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


def test_transport_and_loop_choices(clean_aws_env: Path) -> None:
    from voicegate.backends import make_backend
    from voicegate.cli import loop_factory
    from voicegate.config import ConfigError, resolve

    assert BedrockSettings(region="us-east-1").transport == "asyncio"
    (error,) = BedrockSettings(region="us-east-1", transport="curl").validate()
    assert "transport 'curl' must be one of asyncio, crt" in error
    conf = resolve(None, env={"VOICEGATE_BEDROCK_TRANSPORT": "crt", "VOICEGATE_LOOP": "auto"})
    assert (conf.bedrock_transport, conf.loop) == ("crt", "auto")
    with pytest.raises(ConfigError, match="VOICEGATE_BEDROCK_TRANSPORT"):
        resolve(None, env={"VOICEGATE_BEDROCK_TRANSPORT": "curl"})
    with pytest.raises(ConfigError, match="VOICEGATE_LOOP"):
        resolve(None, env={"VOICEGATE_LOOP": "trio"})
    backend, _ = make_backend("bedrock", transport="crt")
    assert isinstance(backend, BedrockBackend) and backend.settings.transport == "crt"
    assert loop_factory("asyncio") is None
    import uvloop

    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("auto") is uvloop.new_event_loop


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
        (m.ServiceQuotaExceededException(message="quota"), base.QuotaExceeded, False),
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


# --------------------------------------------------------------------------------------------
# The real SDK against the stand-in
# --------------------------------------------------------------------------------------------

import voicegate.standin.server as standin_server  # noqa: E402
from voicegate.conversation.tools import default_tools  # noqa: E402
from voicegate.sonic import (  # noqa: E402
    INTERRUPTED_MARKER,
    AudioContentStart,
    AudioInput,
    AudioOutput,
    CompletionEnd,
    ContentEnd,
    OutputContentEnd,
    OutputContentStart,
    OutputEvent,
    PromptEnd,
    PromptStart,
    SessionEnd,
    SessionStart,
    TextContentStart,
    TextInput,
    TextOutput,
    ToolResult,
    ToolResultContentStart,
    ToolUse,
    UsageEvent,
)

StandIn = standin_server.StandIn
CHUNK = 1024  # 32 ms of 16 kHz s16le, what the conversation layer sends
SILENCE = b"\0" * CHUNK
HANG_GUARD = 15.0
"""Seconds after which a test declares a hang; never a speed assertion."""


def _speech(seconds: float) -> list[bytes]:
    from voicegate.standin.reply_audio import speech_like

    pcm = speech_like(16000, seconds)
    return [pcm[i : i + CHUNK].ljust(CHUNK, b"\0") for i in range(0, len(pcm), CHUNK)]


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("standin-certs")


def _point_at(s: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s.client_env().items():
        monkeypatch.setenv(name, value)


def _settings(**kwargs: Any) -> BedrockSettings:
    values: dict[str, Any] = {
        "region": "us-east-1",
        "send_timeout": 3.0,
        "open_timeout": 10.0,
        "close_timeout": 1.0,
    }
    values.update(kwargs)
    return BedrockSettings(**values)


class Call:
    """Drives one stream like the conversation layer and records every output event."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.events: list[OutputEvent] = []
        self.error: BaseException | None = None
        self.ended = False
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._consume())
        self.sent_audio = 0

    async def _consume(self) -> None:
        try:
            async for event in self.stream.events():
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        except base.BackendError as exc:
            self.error = exc
        finally:
            async with self._changed:
                self.ended = True
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[OutputEvent]], bool]) -> None:
        async with asyncio.timeout(HANG_GUARD), self._changed:
            await self._changed.wait_for(lambda: predicate(self.events) or self.ended)
        assert predicate(self.events), f"stream ended first: {self.error!r}"

    async def wait_end(self) -> None:
        async with asyncio.timeout(HANG_GUARD):
            await self._task

    async def start(self, scenario: str, tools: Any = ()) -> None:
        await self.stream.send(SessionStart(endpointing_sensitivity="MEDIUM"))
        await self.stream.send(PromptStart("p", tools=tuple(tools)))
        await self.stream.send(TextContentStart("p", "sys", "SYSTEM"))
        await self.stream.send(TextInput("p", "sys", f"You are a test. scenario:{scenario}"))
        await self.stream.send(ContentEnd("p", "sys"))
        await self.stream.send(AudioContentStart("p", "mic"))

    async def audio(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            await self.stream.send(AudioInput("p", "mic", chunk))
            self.sent_audio += len(chunk)

    async def finish(self) -> None:
        await self.stream.send(ContentEnd("p", "mic"))
        await self.stream.send(PromptEnd("p"))
        await self.stream.send(SessionEnd())

    def texts(self, role: str) -> list[str]:
        return [e.content for e in self.events if isinstance(e, TextOutput) and e.role == role]

    def audio_out(self) -> int:
        return sum(len(e.content) for e in self.events if isinstance(e, AudioOutput))


@pytest.fixture
async def standin(
    cert_dir: Path, clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, bedrock_transport: str
) -> AsyncIterator[Any]:
    # These tests check the exact shape of regular output on the wire (one audio content, one
    # completion per turn), so they keep the stand-in regular under --standin-quirks; how the
    # call path copes with irregular output is test_standin_quirks.py's.
    async with StandIn(brain="scripted", cert_dir=cert_dir, quirks=()) as s:
        _point_at(s, monkeypatch)
        yield s


@pytest.fixture
async def backend(standin: Any, bedrock_transport: str) -> AsyncIterator[BedrockBackend]:
    b = BedrockBackend(_settings(transport=bedrock_transport))
    try:
        yield b
    finally:
        async with asyncio.timeout(HANG_GUARD):
            await b.aclose()


async def _open(backend: BedrockBackend) -> Call:
    async with asyncio.timeout(HANG_GUARD):
        return Call(await backend.open())


async def test_full_conversation(standin: Any, backend: BedrockBackend) -> None:
    call = await _open(backend)
    await call.start("reply")
    await call.audio(_speech(0.4) + [SILENCE] * 12)
    await call.wait_for(lambda evs: any(isinstance(e, CompletionEnd) for e in evs))
    await call.finish()
    await call.wait_end()
    assert call.error is None

    user = call.texts("USER")
    assistant = call.texts("ASSISTANT")
    assert len(user) == 1 and "heard" in user[0]
    assert len(assistant) == 2  # speculative, then final
    assert all("Hello from the voicegate stand-in" in t for t in assistant)
    stages = [e.generation_stage for e in call.events if isinstance(e, OutputContentStart)]
    assert "SPECULATIVE" in stages and "FINAL" in stages
    assert call.audio_out() == 48000  # one second of 24 kHz s16le
    audio_ends = [e for e in call.events if isinstance(e, OutputContentEnd) and e.type == "AUDIO"]
    assert [e.stop_reason for e in audio_ends] == ["END_TURN"]
    assert any(isinstance(e, UsageEvent) and e.total_tokens > 0 for e in call.events)

    stats = call.stream.stats
    assert stats.audio_bytes_sent == call.sent_audio
    assert stats.events_sent == 6 + call.sent_audio // CHUNK + 3
    assert stats.audio_bytes_received == 48000
    assert stats.events_received == len(call.events)
    assert stats.sdk_send_cpu_s > 0 and stats.encode_cpu_s > 0

    (record,) = standin.sessions
    assert record.closed_in_order()  # contentEnd, promptEnd, sessionEnd, end frame, END_STREAM
    assert record.audio_bytes == call.sent_audio
    # Every event's chained SigV4 signature checked, then the signed empty end frame.
    assert record.signatures_verified == record.envelopes == stats.events_sent + 1
    assert record.end_frame and record.client_ended
    assert record.input_names()[:5] == [
        "sessionStart",
        "promptStart",
        "contentStart",
        "textInput",
        "contentEnd",
    ]
    async with asyncio.timeout(HANG_GUARD):
        await call.stream.close()
        assert [e async for e in call.stream.events()] == []
    with pytest.raises(base.StreamLost):
        await call.stream.send(AudioInput("p", "mic", SILENCE))


async def test_barge_in_signals_arrive(standin: Any, backend: BedrockBackend) -> None:
    call = await _open(backend)
    await call.start("barge_in")
    await call.audio(_speech(0.3) + [SILENCE] * 12)
    await call.wait_for(lambda evs: any(isinstance(e, AudioOutput) for e in evs))
    await call.audio(_speech(0.2))
    await call.wait_for(lambda evs: any(isinstance(e, CompletionEnd) for e in evs))
    assert INTERRUPTED_MARKER in call.texts("ASSISTANT")
    stops = [(e.type, e.stop_reason) for e in call.events if isinstance(e, OutputContentEnd)]
    # Nova 2's order: the AUDIO content ends as END_TURN, then the TEXT says INTERRUPTED.
    assert stops[-2:] == [("AUDIO", "END_TURN"), ("TEXT", "INTERRUPTED")]
    ends = [e for e in call.events if isinstance(e, CompletionEnd)]
    assert ends[-1].stop_reason == "INTERRUPTED"
    assert 0 < call.audio_out() < 10 * 48000  # the 10 s reply was cut short
    await call.finish()
    await call.wait_end()
    assert call.error is None


async def test_tool_round_trip(standin: Any, backend: BedrockBackend) -> None:
    tools = default_tools()
    call = await _open(backend)
    await call.start("tool:calculate", tools.specs())
    await call.audio(_speech(0.3) + [SILENCE] * 12)
    await call.wait_for(lambda evs: any(isinstance(e, ToolUse) for e in evs))
    (use,) = [e for e in call.events if isinstance(e, ToolUse)]
    assert use.tool_name == "calculate"
    result, ok = await tools.run(use.tool_name, use.content)
    assert ok and "42" in result
    await call.stream.send(ToolResultContentStart("p", "tool-1", use.tool_use_id))
    await call.stream.send(ToolResult("p", "tool-1", result))
    await call.stream.send(ContentEnd("p", "tool-1"))
    await call.wait_for(lambda evs: any(isinstance(e, CompletionEnd) for e in evs))
    final = call.texts("ASSISTANT")[-1]
    assert "calculate" in final and "42" in final
    await call.finish()
    await call.wait_end()
    assert call.error is None
    (record,) = standin.sessions
    assert "toolResult" in record.input_names()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("validation", base.ValidationFailed),
        ("throttling", base.Throttled),
        ("model_timeout", base.ModelTimeout),
        ("internal_server", base.InternalServerError),
        ("service_unavailable", base.ServiceUnavailable),
        ("model_stream_error", base.ModelStreamError),
    ],
)
async def test_modelled_exceptions_become_typed_errors(
    standin: Any, backend: BedrockBackend, kind: str, expected: type[base.BackendError]
) -> None:
    from voicegate.standin.errors import EXCEPTIONS

    call = await _open(backend)
    await call.start(f"exception:{kind}:2")
    await call.audio([SILENCE] * 3)
    await call.wait_end()
    assert type(call.error) is expected
    assert EXCEPTIONS[kind][1] in str(call.error)
    assert call.stream.error is call.error
    # The stream is known dead: sends fail at once instead of filling the SDK's buffer.
    async with asyncio.timeout(HANG_GUARD):
        for _ in range(40):
            with pytest.raises(base.StreamLost):
                await call.stream.send(AudioInput("p", "mic", SILENCE))
        await call.stream.close()


async def test_reset_stream_is_lost_not_ended_and_never_hangs(
    standin: Any, backend: BedrockBackend
) -> None:
    call = await _open(backend)
    await call.start("reset")
    await call.audio(_speech(0.3) + [SILENCE] * 12)
    await call.wait_end()
    # SDK 0.12 reports the RST_STREAM as a clean end; the backend knows better.
    assert isinstance(call.error, base.StreamLost)
    assert call.error.retryable
    assert call.audio_out() > 0
    (record,) = standin.sessions
    assert record.outcome == "reset"
    # Far more than the SDK's 16-chunk buffer: without the workaround the 17th send blocks.
    async with asyncio.timeout(HANG_GUARD):
        for _ in range(40):
            with pytest.raises(base.StreamLost):
                await call.stream.send(AudioInput("p", "mic", SILENCE))
        await call.stream.close()
        with pytest.raises(base.StreamLost):  # the recorded failure, again
            [e async for e in call.stream.events()]


async def test_close_right_after_a_reset_returns(standin: Any, backend: BedrockBackend) -> None:
    call = await _open(backend)
    await call.start("reset")
    await call.audio(_speech(0.3) + [SILENCE] * 12)
    await call.wait_for(lambda evs: any(isinstance(e, AudioOutput) for e in evs))
    async with asyncio.timeout(HANG_GUARD):
        await call.stream.close()
        await call.wait_end()


async def test_wrong_secret_is_access_denied(
    standin: Any, monkeypatch: pytest.MonkeyPatch, bedrock_transport: str
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-the-stand-in-knows")
    backend = BedrockBackend(_settings(transport=bedrock_transport))
    try:
        call = await _open(backend)
        await call.start("reply")
        await call.wait_end()
        assert isinstance(call.error, base.AccessDenied)
        assert not call.error.retryable
        assert "not-the-secret" not in str(call.error)
        with pytest.raises(base.StreamLost):
            await call.stream.send(AudioInput("p", "mic", SILENCE))
        assert [r.status for r in standin.rejections] == [403]
        assert not standin.sessions
    finally:
        async with asyncio.timeout(HANG_GUARD):
            await backend.aclose()


async def test_session_limit_is_model_timeout(
    cert_dir: Path, clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, bedrock_transport: str
) -> None:
    async with StandIn(brain="scripted", cert_dir=cert_dir, session_limit=0.3) as s:
        _point_at(s, monkeypatch)
        backend = BedrockBackend(_settings(transport=bedrock_transport))
        try:
            call = await _open(backend)
            await call.start("silent")
            await call.audio([SILENCE] * 3)
            await call.wait_end()
            assert isinstance(call.error, base.ModelTimeout)
            assert call.error.retryable
        finally:
            await backend.aclose()


async def test_closing_mid_session_ends_events_quietly(
    standin: Any, backend: BedrockBackend
) -> None:
    call = await _open(backend)
    await call.start("silent")
    await call.audio([SILENCE] * 5)
    async with asyncio.timeout(HANG_GUARD):
        await call.stream.close()
        await call.wait_end()
    assert call.error is None
    assert standin.sessions[0].client_ended


async def test_concurrent_calls_share_one_client(standin: Any, backend: BedrockBackend) -> None:
    calls = [await _open(backend) for _ in range(3)]
    for call in calls:
        await call.start("reply:greet")
    for call in calls:
        await call.wait_for(lambda evs: any(isinstance(e, CompletionEnd) for e in evs))
        await call.finish()
    for call in calls:
        await call.wait_end()
        assert call.error is None
        assert call.audio_out() == 48000
    assert len(standin.sessions) == 3
    assert all(r.closed_in_order() for r in standin.sessions)


async def test_unreachable_endpoint_is_stream_lost(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, bedrock_transport: str
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    backend = BedrockBackend(
        _settings(endpoint=f"https://127.0.0.1:{port}", transport=bedrock_transport)
    )
    try:
        call = await _open(backend)
        await call.wait_end()
        assert isinstance(call.error, base.StreamLost)
        expected = {"crt": "AWS_IO_SOCKET", "asyncio": f"could not connect to 127.0.0.1:{port}"}
        assert expected[bedrock_transport] in str(call.error)
        async with asyncio.timeout(HANG_GUARD):
            for _ in range(20):
                with pytest.raises(base.StreamLost):
                    await call.stream.send(AudioInput("p", "mic", SILENCE))
    finally:
        async with asyncio.timeout(HANG_GUARD):
            await backend.aclose()


async def test_long_audio_stream_keeps_flowing(standin: Any, backend: BedrockBackend) -> None:
    """Minutes-long calls send far more than one HTTP/2 window of audio (~2 KB per event)."""
    call = await _open(backend)
    await call.start("silent")
    await call.audio([SILENCE] * 250)  # 8 s of audio, ~500 KB on the wire
    await call.finish()
    await call.wait_end()
    assert call.error is None
    (record,) = standin.sessions
    assert record.audio_chunks == 250
    assert record.signatures_verified == record.envelopes


async def test_temporary_credentials_from_botocore_sign_the_stream(
    cert_dir: Path, clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, bedrock_transport: str
) -> None:
    """Refreshable (assume-role style) credentials with a session token, through the bridge."""
    from voicegate.standin.sigv4 import Credentials as ServerCredentials

    server_creds = ServerCredentials("ASIATEMPORARY", SECRET, "session-token-123")
    # Regular output (see the standin fixture): the turn is waited for by its completionEnd.
    async with StandIn(
        brain="scripted", cert_dir=cert_dir, credentials=server_creds, quirks=()
    ) as s:
        _point_at(s, monkeypatch)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)  # only the explicit credentials may work
        clock = _Clock()
        expiry = datetime.now(UTC) + timedelta(hours=1)
        creds = RefreshableCredentials(
            "ASIATEMPORARY",
            SECRET,
            "session-token-123",
            expiry,
            lambda: {},
            "assume-role",
            time_fetcher=clock,
        )
        backend = BedrockBackend(_settings(transport=bedrock_transport), credentials=creds)
        try:
            call = await _open(backend)
            await call.start("reply:greet")
            await call.wait_for(lambda evs: any(isinstance(e, CompletionEnd) for e in evs))
            await call.finish()
            await call.wait_end()
            assert call.error is None
            assert backend.credentials_expiration() == expiry
        finally:
            await backend.aclose()
        (record,) = s.sessions
        assert record.session_token and record.access_key == "ASIATEMPORARY"
        assert record.signatures_verified == record.envelopes


async def test_many_streams_sending_flat_out_share_one_connection(
    cert_dir: Path, clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, bedrock_transport: str
) -> None:
    """Twenty calls sending 32 ms chunks (``--model-chunk-ms 32``) as fast as flow control lets
    them, on one shared connection: sending is held back only by the stand-in's pace (its
    WINDOW_UPDATEs and the socket), never stalled, and every chunk is echoed."""
    calls, chunks = 20, 150
    async with StandIn(brain="echo", cert_dir=cert_dir) as s:
        _point_at(s, monkeypatch)
        # Flat out, each stream's close (its last events, then the end frame) queues behind
        # the other streams' backlog on the one connection; on a loaded machine that took
        # over the suite's 1 s close bound. Real calls send in real time and have no backlog.
        backend = BedrockBackend(_settings(transport=bedrock_transport, close_timeout=5.0))
        try:
            opened = [await _open(backend) for _ in range(calls)]

            async def talk(call: Call) -> None:
                await call.start("echo")
                await call.audio([SILENCE] * chunks)
                await call.finish()
                await call.wait_end()

            async with asyncio.timeout(4 * HANG_GUARD):
                await asyncio.gather(*(talk(c) for c in opened))
        finally:
            await backend.aclose()
    for call in opened:
        assert call.error is None
        assert call.audio_out() == chunks * CHUNK * 3 // 2  # 16 kHz in, 24 kHz echoed
    assert all(r.audio_chunks == chunks for r in s.sessions)
