"""The Bedrock stand-in driven by the real AWS SDK (aws_sdk_bedrock_runtime 0.12, CRT over h2).

Every SDK test runs inside ``asyncio.timeout``; after a server reset the SDK's writer is closed
without flushing (docs/bedrock.md, "The SDK's traps"), since its ``close()`` would otherwise
hang forever.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)

from tests.support.sdk_call import AUDIO, CHUNK, SILENCE, Call, P, tone
from voicegate import sonic
from voicegate.audio.resample import LinearResampler
from voicegate.backends.inprocess import MAX_QUEUED_OUTPUT
from voicegate.standin import StandIn
from voicegate.standin.event_chain import EventSigner
from voicegate.standin.eventstream import Message, MessageDecoder, encode_message
from voicegate.standin.sigv4 import (
    STREAMING_PAYLOAD,
    Credentials,
    parse_authorization,
    sign_request,
)

pytestmark = pytest.mark.bedrock

from aws_sdk_bedrock_runtime import models as m  # noqa: E402
from aws_sdk_bedrock_runtime.client import AsyncBedrockRuntimeClient  # noqa: E402
from aws_sdk_bedrock_runtime.config import AsyncBedrockRuntimeConfig  # noqa: E402
from smithy_aws_core.identity import AWSCredentialsIdentity  # noqa: E402
from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig  # noqa: E402

NOVA2 = "amazon.nova-2-sonic-v1:0"
TIMEOUT = 30


Opener = Callable[..., Awaitable[Call]]


@pytest.fixture
async def standin(tmp_path: Path) -> AsyncIterator[StandIn]:
    async with StandIn("scripted", tmp_path / "certs") as s:
        yield s


def make_opener(s: StandIn, monkeypatch: pytest.MonkeyPatch) -> Opener:
    # The CRT transport reads the trust store when it is created (docs/bedrock.md).
    monkeypatch.setenv("SSL_CERT_FILE", str(s.ca_file))

    async def open_call(
        model_id: str = NOVA2,
        secret: str | None = None,
        access_key: str | None = None,
        resolver: Any = None,
        session_token: str | None = None,
    ) -> Call:
        overrides: dict[str, Any] = {
            "region": "us-east-1",
            "endpoint_uri": s.endpoint,
            "transport": AWSCRTHTTPClient(client_config=AWSCRTHTTPClientConfig(force_http_2=True)),
        }
        if resolver is not None:
            overrides["aws_credentials_identity_resolver"] = resolver
        else:
            overrides["aws_access_key_id"] = access_key or s.access_key
            overrides["aws_secret_access_key"] = secret or s.secret_key
            if session_token is not None:
                overrides["aws_session_token"] = session_token
        config = await AsyncBedrockRuntimeConfig.resolve(**overrides)
        client = AsyncBedrockRuntimeClient(config=config)
        stream = await client.invoke_model_with_bidirectional_stream(
            m.InvokeModelWithBidirectionalStreamOperationInput(model_id=model_id)
        )
        return Call(stream)

    return open_call


@pytest.fixture
def open_call(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> Opener:
    return make_opener(standin, monkeypatch)


# --------------------------------------------------------------------------------------------
# Conversation
# --------------------------------------------------------------------------------------------


async def test_full_session_two_turns(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        await call.setup("You are terse. scenario:reply")
        await call.start()
        for turn in (1, 2):
            await call.utterance()
            await call.wait_for(
                lambda e: isinstance(e, sonic.CompletionEnd) and e.stop_reason == "END_TURN",
                nth=turn,
            )
            assert len(call.of(sonic.CompletionEnd)) == turn
            await call.audio(SILENCE, 3)
        await call.finish()

    assert call.error is None
    users = call.texts("USER")
    assert len(users) == 2 and all("s of speech" in u for u in users)
    starts = call.of(sonic.OutputContentStart)
    stages = [(s.role, s.generation_stage) for s in starts if s.type == "TEXT"]
    assert stages == [("USER", "FINAL"), ("ASSISTANT", "SPECULATIVE"), ("ASSISTANT", "FINAL")] * 2
    assert call.texts("ASSISTANT")[0] == call.texts("ASSISTANT")[1]  # speculative == final
    audio = b"".join(e.content for e in call.of(sonic.AudioOutput))
    assert len(audio) == 2 * 2 * 24000  # two replies of 1 s of 24 kHz s16le
    assert np.abs(np.frombuffer(audio, "<i2")).max() > 1000  # not silence
    assert {s.sample_rate for s in starts if s.type == "AUDIO"} == {24000}
    assert len(call.of(sonic.UsageEvent)) == 2

    record = standin.sessions[0]
    async with asyncio.timeout(5):
        await record.closed.wait()
    assert record.closed_in_order()  # contentEnd, promptEnd, sessionEnd, end frame, END_STREAM
    assert record.model_id == NOVA2 and record.region == "us-east-1"
    assert record.end_frame  # SDK 0.12 signs an empty end frame
    assert record.signatures_verified == record.envelopes > 0
    assert record.audio_chunks == 2 * 22 + 3 * 2
    assert record.audio_bytes == record.audio_chunks * 2 * CHUNK
    assert record.input_names() == [
        "sessionStart",
        "promptStart",
        "contentStart",
        "textInput",
        "contentEnd",
        "contentStart",
        "audioInput",
        "contentEnd",
        "promptEnd",
        "sessionEnd",
    ]
    assert record.events[6]["audioInput"]["chunks"] == record.audio_chunks
    assert record.scenario == "reply"
    assert record.output_counts["AudioOutput"] == len(call.of(sonic.AudioOutput))


async def test_greet_replies_without_speech(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call(model_id="us.amazon.nova-sonic-v1:0")
        await call.setup("scenario:reply:greet")
        await call.start()
        await call.audio(SILENCE)
        await call.wait_for(lambda e: isinstance(e, sonic.CompletionEnd))
        await call.finish()
    assert call.of(sonic.AudioOutput)
    assert standin.sessions[0].model_id == "us.amazon.nova-sonic-v1:0"


async def test_silence_gets_no_reply(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call(model_id="global.amazon.nova-2-sonic-v1:0")
        await call.setup("scenario:reply")
        await call.start()
        await call.audio(SILENCE, 30)
        await call.finish()
    assert call.events == [] and call.error is None


async def test_session_token_is_signed_and_accepted(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call(session_token="FQoGZXIvYXdzEXAMPLETOKEN")
        await call.setup("scenario:reply:greet")
        await call.start()
        await call.audio(SILENCE)
        await call.wait_for(lambda e: isinstance(e, sonic.CompletionEnd))
        await call.finish()
    assert standin.sessions[0].session_token


async def test_barge_in(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        await call.setup("scenario:barge_in")
        await call.start()
        await call.utterance()
        await call.wait_for(lambda e: isinstance(e, sonic.AudioOutput))
        await call.audio(SILENCE, 5)
        before = len(call.of(sonic.AudioOutput))
        await call.audio(tone(), 3)  # the user talks over the reply
        marker = await call.wait_for(
            lambda e: isinstance(e, sonic.TextOutput) and sonic.is_interruption_marker(e.content)
        )
        end = await call.wait_for(
            lambda e: isinstance(e, sonic.OutputContentEnd) and e.type == "AUDIO"
        )
        interrupted = await call.wait_for(
            lambda e: isinstance(e, sonic.OutputContentEnd) and e.stop_reason == "INTERRUPTED"
        )
        await call.audio(SILENCE, 12)  # ... finishes the new utterance, which is answered
        await call.wait_for(
            lambda e: isinstance(e, sonic.OutputContentStart) and e.type == "AUDIO", nth=2
        )
        await call.finish()

    assert isinstance(marker, sonic.TextOutput) and marker.role == "ASSISTANT"
    # Nova 2's order: the AUDIO content ends as END_TURN, then the marker text's contentEnd
    # says INTERRUPTED.
    assert isinstance(end, sonic.OutputContentEnd) and end.stop_reason == "END_TURN"
    assert isinstance(interrupted, sonic.OutputContentEnd) and interrupted.type == "TEXT"
    assert call.events.index(end) < call.events.index(marker) < call.events.index(interrupted)
    first_reply = call.events[: call.events.index(end)]
    audio_s = sum(len(e.content) for e in first_reply if isinstance(e, sonic.AudioOutput)) / 48000
    assert before > 0
    assert audio_s < 3.0  # paced by the user's audio: far from the 10 s the reply would last
    assert call.of(sonic.CompletionEnd)[0].stop_reason == "INTERRUPTED"


async def test_tool_round_trip(standin: StandIn, open_call: Opener) -> None:
    tools = (
        sonic.ToolSpec("get_current_time", "Current time", {"type": "object", "properties": {}}),
    )
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        await call.setup("scenario:tool", tools)
        await call.start()
        await call.utterance()
        use = await call.wait_for(lambda e: isinstance(e, sonic.ToolUse))
        assert isinstance(use, sonic.ToolUse) and use.tool_name == "get_current_time"
        assert json.loads(use.content) == {"timezone": "UTC"}
        result = json.dumps({"time": "12:34 UTC"})
        await call.send(sonic.ToolResultContentStart(P, "tool-1", use.tool_use_id))
        await call.send(sonic.ToolResult(P, "tool-1", result))
        await call.send(sonic.ContentEnd(P, "tool-1"))
        await call.audio(SILENCE, 2)
        await call.wait_for(lambda e: isinstance(e, sonic.CompletionEnd))
        await call.finish()
    tool_end = [e for e in call.of(sonic.OutputContentEnd) if e.type == "TOOL"]
    assert [e.stop_reason for e in tool_end] == ["TOOL_USE"]
    assert any("12:34 UTC" in t for t in call.texts("ASSISTANT"))
    assert call.of(sonic.AudioOutput)


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


async def _refused(call: Call) -> BaseException:
    try:
        with pytest.raises(Exception) as info:
            await call.start()
    finally:
        await call.abort()
    return info.value


async def test_wrong_secret_is_refused(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call(secret="not-the-secret")
        error = await _refused(call)
    assert isinstance(error, m.AccessDeniedException)
    assert "signature we calculated does not match" in str(error)
    assert standin.sessions == type(standin.sessions)()
    assert standin.rejections[0].status == 403


async def test_unknown_access_key_is_refused(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call(access_key="AKIDSOMEONEELSE")
        error = await _refused(call)
    assert isinstance(error, m.AccessDeniedException)
    assert "security token" in str(error)


async def test_unknown_model_is_not_found(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call(model_id="amazon.titan-text-v1")
        error = await _refused(call)
    assert isinstance(error, m.ResourceNotFoundException)
    assert standin.rejections[0].status == 404


class _RotatingResolver:
    """Correct credentials for the request, a different secret from event ``n`` on: the
    SDK re-resolves the identity per event, so this breaks the signature chain mid-stream."""

    def __init__(self, standin: StandIn, good: int) -> None:
        self.standin = standin
        self.calls = 0
        self.good = good

    async def get_identity(self, *, properties: Any) -> AWSCredentialsIdentity:
        self.calls += 1
        secret = self.standin.secret_key if self.calls <= self.good else "rotated-secret"
        return AWSCredentialsIdentity(
            access_key_id=self.standin.access_key, secret_access_key=secret
        )


async def test_broken_chain_is_refused_mid_stream(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        # call 1 signs the request, calls 2-4 the first three events, then the key changes.
        call = await open_call(resolver=_RotatingResolver(standin, good=4))
        try:
            await call.setup("scenario:reply")
            await call.start()
            await call.audio(SILENCE, 3)
            await call.ended.wait()
        finally:
            await call.abort()
    assert isinstance(call.error, m.ValidationException)
    assert "signature" in str(call.error)
    record = standin.sessions[0]
    assert record.signatures_verified == 3
    assert record.outcome == "exception:validationException"


EXCEPTIONS = {
    "validation": m.ValidationException,
    "throttling": m.ThrottlingException,
    "model_timeout": m.ModelTimeoutException,
    "internal_server": m.InternalServerException,
    "service_unavailable": m.ServiceUnavailableException,
    "model_stream_error": m.ModelStreamErrorException,
}


@pytest.mark.parametrize("kind", sorted(EXCEPTIONS))
async def test_exception_scenarios(standin: StandIn, open_call: Opener, kind: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        try:
            await call.setup(f"scenario:exception:{kind}:4")
            await call.start()
            await call.audio(SILENCE, 4)
            await call.ended.wait()
            # Bedrock ignores input after an exception: sending still succeeds.
            await call.audio(SILENCE, 2)
        finally:
            await call.abort()
    assert type(call.error) is EXCEPTIONS[kind]
    assert standin.sessions[0].audio_chunks >= 4
    if kind == "model_stream_error":
        assert call.error.original_status_code == 500  # type: ignore[attr-defined]


async def test_grammar_violation_is_a_validation_exception(
    standin: StandIn, open_call: Opener
) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        try:
            await call.send(sonic.SessionStart())
            await call.send(sonic.AudioInput(P, AUDIO, SILENCE))  # before promptStart
            await call.start()
            await call.ended.wait()
        finally:
            await call.abort()
    assert isinstance(call.error, m.ValidationException)


async def test_unknown_scenario_is_a_validation_exception(
    standin: StandIn, open_call: Opener
) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        try:
            await call.setup("scenario:nonsense")
            await call.start()
            await call.ended.wait()
        finally:
            await call.abort()
    assert isinstance(call.error, m.ValidationException)
    assert "unknown scenario 'nonsense'" in str(call.error)


async def test_malformed_event_is_a_validation_exception(
    standin: StandIn, open_call: Opener
) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        try:
            await call.send(sonic.SessionStart())
            bad = sonic.encode_input(sonic.PromptStart(P))
            bad["event"]["promptStart"]["audioOutputConfiguration"]["sampleRateHertz"] = 44100
            await call.send_bytes(json.dumps(bad).encode())
            await call.start()
            await call.ended.wait()
        finally:
            await call.abort()
    assert isinstance(call.error, m.ValidationException)
    assert "sampleRateHertz" in str(call.error)


async def test_oversized_event_is_refused(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        try:
            await call.send(sonic.SessionStart())
            await call.send_bytes(b" " * 1_000_001)
            await call.start()
            await call.ended.wait()
        finally:
            await call.abort()
    assert isinstance(call.error, m.ValidationException)
    assert "1000000" in str(call.error)


# --------------------------------------------------------------------------------------------
# Stream death, limits
# --------------------------------------------------------------------------------------------


async def test_reset_ends_the_stream(standin: StandIn, open_call: Opener) -> None:
    async with asyncio.timeout(TIMEOUT):
        call = await open_call()
        try:
            await call.setup("scenario:reset")
            await call.start()
            await call.utterance()
            await call.ended.wait()
        finally:
            await call.abort()
    # SDK 0.12 reports RST_STREAM like a clean end (docs/bedrock.md): no completionEnd came.
    assert call.of(sonic.AudioOutput) or call.error is not None
    assert not call.of(sonic.CompletionEnd)
    assert standin.sessions[0].outcome == "reset"


async def test_session_limit_is_a_model_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with StandIn("scripted", tmp_path, session_limit=0.5) as s:
        open_call = make_opener(s, monkeypatch)
        async with asyncio.timeout(TIMEOUT):
            call = await open_call()
            try:
                await call.setup("scenario:reply")
                await call.start()
                ended = asyncio.create_task(call.ended.wait())
                while not ended.done():  # keep streaming audio in real time, as a client does
                    await call.audio(SILENCE)
                    await asyncio.wait({ended}, timeout=0.032)
            finally:
                await call.abort()
    assert isinstance(call.error, m.ModelTimeoutException)
    assert "Model has timed out" in str(call.error)


async def test_idle_stream_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with StandIn("scripted", tmp_path, idle_timeout=0.5) as s:
        open_call = make_opener(s, monkeypatch)
        async with asyncio.timeout(TIMEOUT):
            call = await open_call()
            try:
                await call.send(sonic.SessionStart())
                await call.start()
                await call.ended.wait()
            finally:
                await call.abort()
    assert isinstance(call.error, m.ModelTimeoutException)
    assert "Timed out waiting for input" in str(call.error)


async def test_concurrent_sessions_are_independent(standin: StandIn, open_call: Opener) -> None:
    async def one(i: int) -> Call:
        call = await open_call()
        await call.setup(f"session {i} scenario:reply")
        await call.start()
        await call.utterance()
        await call.wait_for(lambda e: isinstance(e, sonic.CompletionEnd))
        await call.finish()
        return call

    async with asyncio.timeout(TIMEOUT):
        calls = await asyncio.gather(*(one(i) for i in range(4)))
    assert all(c.error is None and len(c.of(sonic.CompletionEnd)) == 1 for c in calls)
    assert len(standin.sessions) == 4
    assert len({r.request_id for r in standin.sessions}) == 4
    assert all(r.closed_in_order() for r in standin.sessions)
    assert standin.active_sessions == 0


async def test_max_sessions_throttles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with StandIn("scripted", tmp_path, max_sessions=1) as s:
        open_call = make_opener(s, monkeypatch)
        async with asyncio.timeout(TIMEOUT):
            first = await open_call()
            await first.setup("scenario:reply")
            await first.start()
            second = await open_call()
            error = await _refused(second)
            await first.finish()
    assert isinstance(error, m.ThrottlingException)


# --------------------------------------------------------------------------------------------
# Echo brain
# --------------------------------------------------------------------------------------------


async def test_echo_returns_each_chunk_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with StandIn("echo", tmp_path) as s:
        open_call = make_opener(s, monkeypatch)
        sent = [tone(freq=200.0 + 50 * i) for i in range(6)]
        async with asyncio.timeout(TIMEOUT):
            call = await open_call()
            await call.setup("anything")
            await call.start()
            for i, pcm in enumerate(sent, start=1):
                await call.audio(pcm)
                # each chunk is answered before the next one is sent: no turn-taking
                await call.wait_for(lambda e: isinstance(e, sonic.AudioOutput), nth=i)
            await call.finish()
    outs = call.of(sonic.AudioOutput)
    assert len(outs) == len(sent)
    resampler = LinearResampler(16000, 24000)
    for pcm, out in zip(sent, outs, strict=True):
        assert out.content == resampler.process(pcm)
        assert len(out.content) == 2 * CHUNK * 3 // 2
    kinds = [type(e).__name__ for e in call.events]
    assert kinds[:2] == ["CompletionStart", "OutputContentStart"]
    assert kinds[-2:] == ["OutputContentEnd", "CompletionEnd"]


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_cli_prints_endpoint_ca_and_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ACCESS_KEY_ID"] = "AKIDFROMENV"
    env["AWS_SECRET_ACCESS_KEY"] = "secret-from-env"
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicegate", "standin", "--port", "0", "--cert-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        values: dict[str, str] = {}
        for line in proc.stdout:
            if line.startswith("#"):
                break
            key, _, value = line.strip().partition("=")
            values[key] = value
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert values["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"].startswith("https://127.0.0.1:")
    assert not values["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"].endswith(":0")
    ca = Path(values["SSL_CERT_FILE"])
    assert ca.is_absolute() and ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert values["AWS_ACCESS_KEY_ID"] == "AKIDFROMENV"
    # A secret taken from the environment is never printed (the user has it already).
    assert "AWS_SECRET_ACCESS_KEY" not in values


def test_default_keys_are_the_documented_test_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    s = StandIn("scripted", tmp_path)
    assert s.credentials == Credentials(
        "AKIDVOICEGATESTANDIN", "voicegate-standin-test-secret-key-not-for-aws"
    )


# --------------------------------------------------------------------------------------------
# A raw HTTP/2 client, for what the SDK cannot be made to do
# --------------------------------------------------------------------------------------------

WIRE_PATH = "/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"


def inner_message(event: sonic.InputEvent) -> bytes:
    nova = json.dumps(sonic.encode_input(event)).encode()
    return encode_message(
        {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"},
        json.dumps({"bytes": base64.b64encode(nova).decode()}).encode(),
    )


class RawClient:
    """h2 on asyncio + TLS, signing with voicegate.sigv4 (forged frames, flow-control stalls,
    the SDK 0.4 way of ending a stream)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.status: dict[int, dict[str, str]] = {}
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.unacked: dict[int, int] = {}
        self.auto_ack = True
        self.closed = False
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, s: StandIn, alpn: tuple[str, ...] = ("h2",)) -> RawClient:
        ctx = ssl.create_default_context(cafile=str(s.ca_file))
        ctx.set_alpn_protocols(list(alpn))
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port, ssl=ctx)
        client = cls(reader, writer)
        client.h2.initiate_connection()
        client.flush()
        client._task = asyncio.create_task(client._pump())
        return client

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)

    async def _pump(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.h2.receive_data(data):
                    self._on(event)
                self.flush()
                self.changed.set()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.closed = True
            self.changed.set()

    def _on(self, event: object) -> None:
        match event:
            case ResponseReceived():
                self.status[event.stream_id] = dict(event.headers or [])  # type: ignore[arg-type]
            case DataReceived():
                self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
                if self.auto_ack:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                else:
                    self.unacked[event.stream_id] = (
                        self.unacked.get(event.stream_id, 0) + event.flow_controlled_length
                    )
                if event.stream_ended is not None:
                    self.ended.add(event.stream_id)
            case StreamEnded():
                self.ended.add(event.stream_id)
            case StreamReset():
                self.resets[event.stream_id] = event.error_code
                self.ended.add(event.stream_id)
            case ConnectionTerminated():
                self.closed = True

    def ack_all(self) -> None:
        self.auto_ack = True
        for sid, n in self.unacked.items():
            self.h2.acknowledge_received_data(n, sid)
        self.unacked.clear()
        self.flush()

    async def until(self, cond: Callable[[], bool], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                if self.closed:
                    raise AssertionError("connection closed")
                self.changed.clear()
                await self.changed.wait()

    def open(
        self, s: StandIn, path: str = WIRE_PATH, secret: str | None = None
    ) -> tuple[int, EventSigner]:
        creds = Credentials(s.access_key, secret or s.secret_key)
        headers = {
            "content-type": "application/vnd.amazon.eventstream",
            "host": f"127.0.0.1:{s.port}",
            "x-amz-content-sha256": STREAMING_PAYLOAD,
            "x-amz-date": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        }
        authorization = sign_request(creds, "POST", path, "", headers, "us-east-1")
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            sid,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", headers.pop("host")),
                (":path", path + "?"),
                *headers.items(),
                ("authorization", authorization),
            ],
        )
        self.flush()
        seed = parse_authorization(authorization).signature
        return sid, EventSigner(creds, "us-east-1", seed)

    async def send(self, sid: int, data: bytes, end: bool = False) -> None:
        """Send within the server's flow-control window (waits for WINDOW_UPDATE)."""
        view = memoryview(data)
        while view:
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                await self.until(lambda: self.h2.local_flow_control_window(sid) > 0)
                continue
            self.h2.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.h2.end_stream(sid)
            self.flush()
        await self.writer.drain()

    def messages(self, sid: int) -> list[Message]:
        return MessageDecoder().feed(bytes(self.data.get(sid, b"")))

    def outputs(self, sid: int) -> list[sonic.OutputEvent]:
        return [
            sonic.decode_output(json.loads(base64.b64decode(json.loads(m.payload)["bytes"])))
            for m in self.messages(sid)
            if m.text(":message-type") == "event"
        ]

    async def close(self) -> None:
        self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


@pytest.fixture
async def raw(standin: StandIn) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(standin)
    try:
        yield client
    finally:
        await client.close()


SETUP: list[sonic.InputEvent] = [
    sonic.SessionStart(),
    sonic.PromptStart(P),
    sonic.TextContentStart(P, "system", "SYSTEM"),
    sonic.TextInput(P, "system", "scenario:reply"),
    sonic.ContentEnd(P, "system"),
    sonic.AudioContentStart(P, AUDIO),
]
END: list[sonic.InputEvent] = [sonic.ContentEnd(P, AUDIO), sonic.PromptEnd(P), sonic.SessionEnd()]


def exception_of(client: RawClient, sid: int) -> tuple[str | None, str]:
    last = client.messages(sid)[-1]
    assert last.text(":message-type") == "exception", last
    return last.text(":exception-type"), json.loads(last.payload)["message"]


async def test_raw_corrupted_frame_is_refused(standin: StandIn, raw: RawClient) -> None:
    sid, signer = raw.open(standin)
    frame = bytearray(signer.sign(inner_message(sonic.SessionStart())))
    frame[-10] ^= 0x40
    await raw.send(sid, bytes(frame))
    await raw.until(lambda: sid in raw.ended)
    kind, message = exception_of(raw, sid)
    assert kind == "validationException" and "CRC" in message
    assert raw.status[sid][":status"] == "200"


def _chunk(body: bytes, message_type: str = "event") -> bytes:
    return encode_message(
        {
            ":message-type": message_type,
            ":event-type": "chunk",
            ":content-type": "application/json",
        },
        body,
    )


@pytest.mark.parametrize(
    "inner, why",
    [
        (_chunk(b"not json"), "not JSON"),
        (_chunk(b'{"nobytes": 1}'), '{"bytes"'),
        (_chunk(b'{"bytes": "***"}'), "base64"),
        (_chunk(b'{"bytes": "' + base64.b64encode(b"[" * 100000) + b'"}'), "not JSON"),
        (
            _chunk(b'{"bytes": "' + base64.b64encode(b'{"event": {"x": {}}}') + b'"}'),
            "extraneous key [x]",
        ),
        (_chunk(b"{}", message_type="error"), "expected an event"),
        (b"\x00\x01", "shorter than"),
    ],
    ids=["not-json", "no-bytes", "bad-base64", "deep-json", "unknown-event", "error-type", "short"],
)
async def test_raw_malformed_events_are_refused(
    standin: StandIn, raw: RawClient, inner: bytes, why: str
) -> None:
    sid, signer = raw.open(standin)
    await raw.send(sid, signer.sign(inner))
    await raw.until(lambda: sid in raw.ended)
    kind, message = exception_of(raw, sid)
    assert kind == "validationException" and why in message
    assert standin.sessions[0].signatures_verified == 1


async def test_raw_forged_link_breaks_the_chain(standin: StandIn, raw: RawClient) -> None:
    sid, signer = raw.open(standin)
    await raw.send(sid, signer.sign(inner_message(SETUP[0])))
    forger = EventSigner(signer.credentials, "us-east-1", signer.previous)
    forger.previous = "00" * 32  # a valid signature, but not chained to the previous event
    await raw.send(sid, forger.sign(inner_message(SETUP[1])))
    await raw.until(lambda: sid in raw.ended)
    kind, message = exception_of(raw, sid)
    assert kind == "validationException" and "InvalidSignatureException" in message
    record = standin.sessions[0]
    assert record.signatures_verified == 1 and record.envelopes == 2


async def test_raw_end_without_end_frame_like_sdk_0_4(standin: StandIn, raw: RawClient) -> None:
    sid, signer = raw.open(standin)
    for event in SETUP:
        await raw.send(sid, signer.sign(inner_message(event)))
    for _ in range(3):
        await raw.send(sid, signer.sign(inner_message(sonic.AudioInput(P, AUDIO, SILENCE))))
    for event in END:
        await raw.send(sid, signer.sign(inner_message(event)))
    await raw.send(sid, b"", end=True)  # END_STREAM, no signed empty frame
    await raw.until(lambda: sid in raw.ended)
    record = standin.sessions[0]
    async with asyncio.timeout(5):
        await record.closed.wait()
    # Closed in order although SDK 0.4 signs no empty end frame (END_STREAM only).
    assert record.input_names()[-3:] == ["contentEnd", "promptEnd", "sessionEnd"]
    assert record.outcome == "completed" and not record.end_frame and record.client_ended
    assert record.signatures_verified == len(SETUP) + 3 + len(END)
    assert sid not in raw.resets


async def test_raw_end_without_session_end_is_refused(standin: StandIn, raw: RawClient) -> None:
    sid, signer = raw.open(standin)
    for event in SETUP:
        await raw.send(sid, signer.sign(inner_message(event)))
    await raw.send(sid, b"", end=True)  # no contentEnd, promptEnd, sessionEnd
    await raw.until(lambda: sid in raw.ended)
    kind, message = exception_of(raw, sid)
    assert kind == "validationException" and "before sessionEnd" in message
    record = standin.sessions[0]
    assert record.outcome == "exception:validationException" and not record.closed_in_order()


async def test_raw_truncated_frame_at_end_is_refused(standin: StandIn, raw: RawClient) -> None:
    sid, signer = raw.open(standin)
    frame = signer.sign(inner_message(SETUP[0]))
    await raw.send(sid, frame[:-3], end=True)
    await raw.until(lambda: sid in raw.ended)
    assert exception_of(raw, sid) == ("validationException", "Invalid event bytes: truncated")


@pytest.mark.parametrize(
    "path", ["/model/amazon.nova-2-sonic-v1%3A0/invoke", "/model/x/converse-stream", "/"]
)
async def test_raw_unknown_operation(standin: StandIn, raw: RawClient, path: str) -> None:
    sid, _ = raw.open(standin, path=path)
    await raw.until(lambda: sid in raw.ended)
    assert raw.status[sid][":status"] == "404"
    assert raw.status[sid]["x-amzn-errortype"] == "UnknownOperationException"


async def test_raw_wrong_secret_gets_403_with_aws_code(standin: StandIn, raw: RawClient) -> None:
    sid, _ = raw.open(standin, secret="wrong")
    await raw.until(lambda: sid in raw.ended)
    headers = raw.status[sid]
    assert headers[":status"] == "403"
    assert headers["x-amzn-errortype"] == "AccessDeniedException"
    assert headers["x-amzn-standin-error-code"] == "InvalidSignatureException"
    assert "signature" in json.loads(bytes(raw.data[sid]))["message"]


async def test_http1_client_is_refused(standin: StandIn) -> None:
    client = await RawClient.connect(standin, alpn=("http/1.1",))
    try:
        await client.until(lambda: client.closed, timeout=10)
    except AssertionError:
        pass  # "connection closed" is what we want
    finally:
        await client.close()
    assert client.closed and not client.status


async def test_slow_reader_is_bounded_by_flow_control(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that stops reading: the server sends at most its window, then stops taking
    input once the brain's bounded queue is full; nothing grows without bound. Reading again
    lets everything through."""
    total = MAX_QUEUED_OUTPUT + 600
    async with StandIn("echo", tmp_path) as s:
        client = await RawClient.connect(s)
        try:
            client.auto_ack = False
            sid, signer = client.open(s)
            for event in SETUP:
                await client.send(sid, signer.sign(inner_message(event)))
            chunk = 0
            frame = inner_message(sonic.AudioInput(P, AUDIO, tone()))
            # Send until the server stops granting window (its input is no longer consumed).
            while chunk < total:
                if client.h2.local_flow_control_window(sid) < 4096:
                    try:
                        await client.until(
                            lambda: client.h2.local_flow_control_window(sid) >= 4096, timeout=2
                        )
                    except TimeoutError:
                        break
                await client.send(sid, signer.sign(frame))
                chunk += 1
            stalled_at = chunk
            record = s.sessions[0]
            received = len(client.data.get(sid, b""))
            assert stalled_at < total, "the server kept reading although nobody read its output"
            assert received <= 65535  # the client's initial window, never acknowledged
            assert record.audio_chunks <= MAX_QUEUED_OUTPUT + 64
            # Read again: everything flows, every chunk is echoed.
            client.ack_all()
            for _ in range(total - stalled_at):
                await client.send(sid, signer.sign(frame))
            for event in END:
                await client.send(sid, signer.sign(inner_message(event)))
            await client.send(sid, signer.sign(b""), end=True)
            await client.until(lambda: sid in client.ended, timeout=60)
            audio = [e for e in client.outputs(sid) if isinstance(e, sonic.AudioOutput)]
            assert len(audio) == total
            assert record.closed_in_order()
        finally:
            await client.close()


# --------------------------------------------------------------------------------------------
# The embedded offline brain behind the stand-in
# --------------------------------------------------------------------------------------------


@pytest.mark.local
async def test_local_brain_answers_real_speech(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicegate.standin.factories import BrainUnavailable

    try:
        from voicegate.backends.speech.models import load_models

        # Model loading and synthesis are blocking work: keep them off the loop.
        speech = await asyncio.to_thread(lambda: load_models().tts.synthesize("Hello.", 16000))
        standin = StandIn("local", tmp_path)
        await standin.start()
    except (ImportError, BrainUnavailable) as exc:
        from tests.support.components import require

        require(False, f"local brain unavailable: {exc}")
        raise
    try:
        open_call = make_opener(standin, monkeypatch)
        pcm = SILENCE * 10 + speech + SILENCE * 40
        pcm += bytes(-len(pcm) % (2 * CHUNK))
        async with asyncio.timeout(120):
            call = await open_call()
            await call.setup("You are a helpful assistant.")
            await call.start()
            for i in range(0, len(pcm), 2 * CHUNK):
                await call.audio(pcm[i : i + 2 * CHUNK])
            done = asyncio.create_task(call.wait_for(lambda e: isinstance(e, sonic.CompletionEnd)))
            while not done.done():  # keep the audio clock running, as a real client does
                await call.audio(SILENCE)
                await asyncio.wait({done}, timeout=0.032)
            await call.finish()
    finally:
        await standin.stop()
    assert any("hello" in t.lower() for t in call.texts("USER"))
    assert call.of(sonic.AudioOutput)
    assert standin.sessions[0].closed_in_order()
