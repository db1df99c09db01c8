"""The production backend: Amazon Nova Sonic over Bedrock's InvokeModelWithBidirectionalStream.

This module is the only place that touches ``aws-sdk-bedrock-runtime`` (pinned to 0.12.0, whose
API broke between releases), so SDK churn stays local. What it does, and why:

* One ``AsyncBedrockRuntimeClient`` per process, with the awscrt transport forced to HTTP/2:
  the SDK's default aiohttp transport cannot do duplex streams at all, and CRT over HTTP/1.1
  would buffer the whole (endless) request body before sending anything.
* Credentials come from boto3's full chain through ``BotocoreIdentityResolver``
  (see ``bedrock_credentials``), so SSO, assume-role and web identity work and are refreshed.
* Each call is a ``BedrockStream``. One receive task per stream owns liveness: the moment it
  sees the stream end or fail, sends stop being accepted and the SDK's request body is
  abandoned. This matters because SDK 0.12 has three traps on a reset stream (see
  ../shared/reference/nova-sonic.md section 6.6): ``receive()`` reports a reset as a clean end,
  ``send()`` accepts 16 more chunks and then blocks forever, and ``input_stream.close()``
  blocks forever ignoring cancellation. Every await on the network here has a timeout.
* Bedrock's modelled exceptions become the typed errors of ``voicegate.backends.base``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import re
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import structlog

from voicegate.backends.base import (
    AccessDenied,
    BackendError,
    InternalServerError,
    ModelStreamError,
    ModelTimeout,
    ServiceUnavailable,
    StreamLost,
    Throttled,
    ValidationFailed,
)
from voicegate.backends.bedrock.credentials import (
    BotocoreIdentityResolver,
    CredentialsUnavailable,
    credentials_status,
    load_botocore_credentials,
)
from voicegate.backends.bedrock.transport import DEFAULT_TRANSPORT, transport_problem
from voicegate.sonic import events as sonic

__all__ = [
    "DEFAULT_MODEL_ID",
    "NOVA_SONIC_V1_MODEL_ID",
    "BedrockBackend",
    "BedrockSettings",
    "BedrockStream",
    "StreamStats",
    "credentials_status",
    "default_region",
    "map_error",
]

log = structlog.get_logger(__name__)

DEFAULT_MODEL_ID: Final = "amazon.nova-2-sonic-v1:0"
NOVA_SONIC_V1_MODEL_ID: Final = "amazon.nova-sonic-v1:0"
DEFAULT_REGION: Final = "us-east-1"

_BASE_MODELS: Final = frozenset({DEFAULT_MODEL_ID, NOVA_SONIC_V1_MODEL_ID})
_PROFILE_PREFIXES: Final = frozenset({"us", "eu", "apac", "global", "jp", "au", "ca", "us-gov"})
_MODEL_ARN: Final = re.compile(
    r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]+:(\d{12})?:"
    r"(inference-profile|application-inference-profile|provisioned-model|foundation-model)/\S+$"
)
_REGION: Final = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_MAX_TIMEOUT: Final = 120.0

MAX_QUEUED_OUTPUT: Final = 1024
"""Decoded output events waiting for the consumer; when full the receive task waits, which
back-pressures Bedrock through HTTP/2 flow control rather than dropping anything."""

_TRANSIENT_VALIDATION: Final = ("system instability", "internalerrorcode=531")
"""ValidationException messages that are Bedrock-side hiccups, not bad input (retry)."""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def default_region() -> str:
    """AWS_REGION, AWS_DEFAULT_REGION, the boto3 profile's region, else us-east-1."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    try:
        import boto3

        region = boto3.Session().region_name
    except Exception:  # a broken ~/.aws/config must not stop settings from being built
        region = None
    return region or DEFAULT_REGION


@dataclass(frozen=True, slots=True)
class BedrockSettings:
    """Where and how to reach Nova Sonic. ``validate()`` before use; values are not coerced."""

    region: str = field(default_factory=default_region)
    model_id: str = DEFAULT_MODEL_ID
    endpoint: str | None = None
    """None: the SDK's choice (AWS_ENDPOINT_URL_BEDROCK_RUNTIME, AWS_ENDPOINT_URL, the config
    file's ``services`` section, else the regional endpoint)."""
    profile: str | None = None
    """A shared-config profile for boto3 (None: AWS_PROFILE or the default chain)."""
    send_timeout: float = 5.0
    """Seconds one send may take before the stream is declared lost. A healthy send does not
    wait at all; it blocks only when 16 chunks are stuck in the SDK's buffer."""
    open_timeout: float = 10.0
    """Seconds to resolve credentials and start the HTTP/2 request."""
    close_timeout: float = 2.0
    """Seconds an orderly close may take before the stream is abandoned."""
    transport: str = DEFAULT_TRANSPORT
    """The SDK's HTTP/2 transport: ``asyncio`` (voicegate's, on the event loop) or ``crt``."""

    def validate(self) -> list[str]:
        """Human-readable problems with these settings; empty when they are usable."""
        errors: list[str] = []
        if not _REGION.match(self.region):
            errors.append(f"region {self.region!r} is not an AWS region name (e.g. us-east-1)")
        if not _valid_model_id(self.model_id):
            errors.append(
                f"model id {self.model_id!r} is not a Nova Sonic model: use "
                f"{DEFAULT_MODEL_ID} (Nova 2 Sonic, default) or {NOVA_SONIC_V1_MODEL_ID} "
                "(v1), optionally with a cross-region prefix such as 'us.' or 'global.', or an "
                "inference-profile ARN"
            )
        endpoint = self.endpoint
        source = "endpoint"
        if endpoint is None:
            for name in ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"):
                if os.environ.get(name):
                    endpoint, source = os.environ[name], name
                    break
        if endpoint is not None:
            problem = _endpoint_problem(endpoint)
            if problem:
                errors.append(f"{source} {endpoint!r}: {problem}")
        transport = transport_problem(self.transport)
        if transport:
            errors.append(transport)
        for name in ("send_timeout", "open_timeout", "close_timeout"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not 0 < value <= _MAX_TIMEOUT
            ):
                errors.append(f"{name} must be a number of seconds in (0, {_MAX_TIMEOUT:g}]")
        return errors

    @property
    def is_nova2(self) -> bool:
        """True for Nova 2 Sonic (endpointing sensitivity, SYSTEM_SPEECH, async tools)."""
        return "nova-2-sonic" in self.model_id

    def describe(self) -> str:
        """One line for logs and the CLI: where calls go (never credentials)."""
        return f"{self.model_id} in {self.region} via {self.effective_endpoint()}"

    def effective_endpoint(self) -> str:
        if self.endpoint:
            return self.endpoint
        for name in ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"):
            if os.environ.get(name):
                return os.environ[name]
        return f"https://bedrock-runtime.{self.region}.amazonaws.com"


def _valid_model_id(model_id: str) -> bool:
    if model_id in _BASE_MODELS:
        return True
    prefix, _, base = model_id.partition(".")
    if prefix in _PROFILE_PREFIXES and base in _BASE_MODELS:
        return True
    return bool(_MODEL_ARN.match(model_id)) and "sonic" in model_id


def _endpoint_problem(endpoint: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme != "https":
        return (
            "must be an https:// URL: the bidirectional stream needs HTTP/2, which the AWS CRT "
            "transport only negotiates over TLS"
        )
    if not parts.hostname:
        return "has no host"
    if port is not None and not 0 < port < 65536:
        return "has an invalid port"
    return None


# --------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(exc) or type(exc).__name__


def map_error(exc: BaseException) -> BackendError:
    """The typed voicegate error for anything the SDK, CRT or the stream can raise."""
    if isinstance(exc, BackendError):
        return exc
    name = type(exc).__name__
    message = _message(exc)
    match name:
        case "AccessDeniedException":
            return AccessDenied(f"Bedrock denied access: {message}")
        case "ValidationException":
            err = ValidationFailed(f"Bedrock refused the request: {message}")
            if any(marker in message.lower() for marker in _TRANSIENT_VALIDATION):
                # Bedrock reports its own stream failures this way (RST_STREAM code 531,
                # "System instability detected"): not bad input, a restart fixes it.
                err.retryable = True
            return err
        case "ResourceNotFoundException":
            return ValidationFailed(f"Bedrock model or endpoint not found: {message}")
        case "ConflictException":
            return ValidationFailed(f"Bedrock refused the request: {message}")
        case "ModelTimeoutException":
            return ModelTimeout(f"Bedrock session timed out: {message}")
        case "ThrottlingException" | "ServiceQuotaExceededException":
            return Throttled(f"Bedrock is throttling: {message}")
        case "ServiceUnavailableException" | "ModelNotReadyException":
            return ServiceUnavailable(f"Bedrock is unavailable: {message}")
        case "InternalServerException":
            return InternalServerError(f"Bedrock internal error: {message}")
        case "ModelStreamErrorException" | "ModelErrorException":
            return ModelStreamError(f"Bedrock model stream error: {message}")
        case "UnmodeledEventError":
            code = getattr(exc, "code", "?")
            return StreamLost(f"Bedrock sent an unmodelled error ({code}): {message}")
        case "SmithyIdentityError":
            return AccessDenied(f"AWS credentials unusable: {message}")
        case "ClientTimeoutError":
            return StreamLost(f"timed out talking to Bedrock: {message}")
        case "AwsCrtError":
            crt = getattr(exc, "name", name)
            hint = ""
            if "TLS" in str(crt):
                hint = " (is the endpoint's certificate trusted? see SSL_CERT_FILE)"
            return StreamLost(f"transport error {crt}: {getattr(exc, 'message', '')}{hint}")
        case "CredentialsUnavailable":
            return AccessDenied(message)
    if isinstance(exc, concurrent.futures.InvalidStateError):
        # CRT completing a future that was cancelled during close (aws/aws-sdk-python#13).
        return StreamLost("Bedrock stream closed during teardown")
    cause = exc.__cause__
    if cause is not None and cause is not exc and name in ("SmithyError", "OSError"):
        # The SDK wraps transport failures: SmithyError(e) for the request, OSError("Failed
        # to read/write stream") for the event stream. The cause says what happened.
        inner = map_error(cause)
        if isinstance(inner, StreamLost):
            return StreamLost(f"{message}: {inner.message}")
        return inner
    if getattr(exc, "fault", None) == "server":
        return InternalServerError(f"Bedrock error {name}: {message}")
    if name.endswith("Exception") and hasattr(exc, "fault"):
        return BackendError(f"Bedrock error {name}: {message}")
    return StreamLost(f"Bedrock stream failed: {name}: {message}")


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamStats:
    """Per-stream counters; CPU fields are thread CPU seconds spent on this stream's events.

    ``encode_cpu_s`` is voicegate's JSON + base64 of the Nova event. ``sdk_send_cpu_s`` is the
    SDK's part of a send: wrapping that JSON in another JSON + base64 layer, event-stream
    framing, SHA-256 of the payload and the chained SigV4 event signature (approximate: it is
    measured across an await that normally does not yield). ``decode_cpu_s`` covers JSON and
    base64 decoding of output events; the SDK's own receive-side framing is not included.
    """

    events_sent: int = 0
    audio_bytes_sent: int = 0
    payload_bytes_sent: int = 0
    events_received: int = 0
    audio_bytes_received: int = 0
    encode_cpu_s: float = 0.0
    sdk_send_cpu_s: float = 0.0
    decode_cpu_s: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.encode_cpu_s + self.sdk_send_cpu_s + self.decode_cpu_s


@dataclass(frozen=True, slots=True)
class _Terminal:
    error: BackendError | None


class BedrockStream:
    """One Nova Sonic session over one HTTP/2 stream. Implements ``BackendStream``."""

    def __init__(self, sdk_stream: Any, settings: BedrockSettings, stream_id: str) -> None:
        self._sdk = sdk_stream
        self._settings = settings
        self.stream_id = stream_id
        self.stats = StreamStats()
        self._queue: asyncio.Queue[sonic.OutputEvent | _Terminal] = asyncio.Queue(MAX_QUEUED_OUTPUT)
        self._final: _Terminal | None = None
        self._send_lock = asyncio.Lock()
        self._dead: BackendError | None = None
        self._session_end_sent = False
        self._input_closed = False
        self._closed = False
        self._pump_task: asyncio.Task[None] | None = None
        self._abandon_task: asyncio.Task[None] | None = None
        self._receiver: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the receive task (it owns liveness even before events() is iterated)."""
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(
                self._pump(), name=f"bedrock-receive-{self.stream_id}"
            )

    @property
    def alive(self) -> bool:
        return self._dead is None and not self._closed

    @property
    def error(self) -> BackendError | None:
        """Why the stream died, once it has."""
        return self._dead

    # -- sending ----------------------------------------------------------------------------

    async def send(self, event: sonic.InputEvent) -> None:
        """Encode and send one event, within ``send_timeout``; StreamLost once dead."""
        self._check_sendable()
        t0 = time.thread_time()
        payload = sonic.dumps(sonic.encode_input(event))
        chunk = _input_chunk(payload)
        t1 = time.thread_time()
        self.stats.encode_cpu_s += t1 - t0
        in_sdk = False
        try:
            async with asyncio.timeout(self._settings.send_timeout):
                async with self._send_lock:
                    # Sends are serialised: each event's signature chains on the previous one,
                    # so signing and writing must happen in the same order for every task.
                    self._check_sendable()
                    in_sdk = True
                    t2 = time.thread_time()
                    await self._sdk.input_stream.send(chunk)
                    self.stats.sdk_send_cpu_s += time.thread_time() - t2
                    in_sdk = False
        except TimeoutError:
            why = (
                "stream reset or network stuck"
                if self._receiver is not None
                else "Bedrock has not answered the request yet: connection or TLS setup"
            )
            err = StreamLost(
                f"sending to Bedrock stalled for {self._settings.send_timeout:g}s ({why})"
            )
            await self._die(err)
            raise err from None
        except asyncio.CancelledError:
            if in_sdk:
                # Cancelled between signing and writing: the signature chain is broken.
                self._die_soon(StreamLost("a send was cancelled mid-write"))
            raise
        except BackendError:
            raise
        except Exception as exc:
            cause = self._dead or map_error(exc)
            lost = (
                cause
                if isinstance(cause, StreamLost)
                else StreamLost(f"send failed: {cause.message}")
            )
            await self._die(lost)
            raise lost from exc
        self.stats.events_sent += 1
        self.stats.payload_bytes_sent += len(payload)
        if isinstance(event, sonic.AudioInput):
            self.stats.audio_bytes_sent += len(event.content)
        elif isinstance(event, sonic.SessionEnd):
            self._session_end_sent = True
            # Nothing may follow sessionEnd: half-close now so Bedrock sees END_STREAM and
            # can finish the response even if our caller waits for events() before close().
            await self._close_input()

    def _check_sendable(self) -> None:
        if self._dead is not None:
            raise StreamLost(f"Bedrock stream is gone: {self._dead.message}")
        if self._closed or self._input_closed:
            raise StreamLost("Bedrock stream is closed for sending")

    # -- receiving --------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[sonic.OutputEvent]:
        """Decoded output events; ends after an orderly session end, else raises."""
        while True:
            if self._final is not None and self._queue.empty():
                if self._final.error is not None:
                    raise self._final.error
                return
            item = await self._queue.get()
            if isinstance(item, _Terminal):
                self._final = item
                continue
            yield item

    async def _pump(self) -> None:
        terminal: BackendError | None = None
        try:
            _, receiver = await self._sdk.await_output()
            self._receiver = receiver
            while True:
                item = await receiver.receive()
                if item is None:
                    if not self._session_end_sent and not self._closed:
                        # SDK 0.12 reports an RST_STREAM exactly like a clean end, so an end
                        # the client did not ask for (sessionEnd) is a lost stream.
                        terminal = StreamLost(
                            "Bedrock ended the stream before the session was closed "
                            "(stream reset or connection lost)"
                        )
                    break
                data = getattr(getattr(item, "value", None), "bytes_", None)
                if not isinstance(data, bytes | bytearray):
                    continue  # an event variant this SDK version does not know
                event = self._decode(bytes(data))
                if event is not None:
                    await self._queue.put(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            terminal = map_error(exc)
        if terminal is not None:
            await self._die(terminal)
        else:
            self._input_closed = True
        await self._queue.put(_Terminal(terminal))

    def _decode(self, data: bytes) -> sonic.OutputEvent | None:
        t0 = time.thread_time()
        try:
            event = sonic.decode_output(json.loads(data))
        except (ValueError, sonic.SonicProtocolError) as exc:
            raise ModelStreamError(f"Bedrock sent an unreadable event: {exc}") from exc
        finally:
            self.stats.decode_cpu_s += time.thread_time() - t0
        if event is not None:
            self.stats.events_received += 1
            if isinstance(event, sonic.AudioOutput):
                self.stats.audio_bytes_received += len(event.content)
        return event

    # -- teardown ---------------------------------------------------------------------------

    async def _die(self, err: BackendError) -> None:
        """Record the stream as dead and release anything blocked on its request body."""
        if self._dead is None:
            self._dead = err
            log.info("bedrock_stream_lost", stream=self.stream_id, kind=err.kind, error=err.message)
        await self._abandon_input()

    def _die_soon(self, err: BackendError) -> None:
        if self._dead is None:
            self._dead = err
        if self._abandon_task is None:
            self._abandon_task = asyncio.create_task(self._abandon_input())

    async def _abandon_input(self) -> None:
        """Drop the request body without flushing, so nothing waits on a dead stream.

        Workaround for SDK 0.12 on a reset stream (../shared/reference/nova-sonic.md 6.6, the
        close-path CRT trap reported as aws/aws-sdk-python#13): the publisher's body provider
        flushes on close by default (smithy-lang/smithy-python#338), and a dead HTTP/2 stream
        never drains it, so ``send()`` blocks after 16 chunks and ``input_stream.close()``
        blocks forever, even when cancelled. Closing the provider with ``flush=False`` (a
        private attribute, ``_writer``) wakes every waiter; later writes fail fast instead.
        """
        writer = getattr(self._sdk.input_stream, "_writer", None)
        close = getattr(writer, "close", None)
        if close is None:
            return
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(self._settings.close_timeout):
                await close(flush=False)

    async def _close_input(self) -> None:
        """Orderly half-close: signed empty end frame + END_STREAM, within close_timeout."""
        if self._input_closed:
            return
        self._input_closed = True
        try:
            async with asyncio.timeout(self._settings.close_timeout):
                async with self._send_lock:
                    await self._sdk.input_stream.close()
        except TimeoutError:
            await self._die(StreamLost("closing the Bedrock request stream timed out"))
        except asyncio.CancelledError:
            self._die_soon(StreamLost("closing the Bedrock request stream was cancelled"))
            raise
        except Exception as exc:
            # After an abandoned body the SDK raises "closed provider" here: harmless.
            if self._dead is None:
                log.debug("bedrock_input_close_failed", stream=self.stream_id, error=repr(exc))

    async def close(self) -> None:
        """Release the stream. Never hangs (bounded by about 3x close_timeout), never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._close_quietly()
        except asyncio.CancelledError:
            await self._abandon_input()
            raise
        except Exception as exc:  # close() must never raise
            log.warning("bedrock_stream_close_error", stream=self.stream_id, error=repr(exc))

    async def _close_quietly(self) -> None:
        if self._dead is not None:
            await self._abandon_input()
        elif not self._input_closed:
            await self._close_input()
        # Buffered output is of no use after close; dropping it also unblocks a receive task
        # waiting for queue space.
        self._drain()
        # Give Bedrock a moment to finish the response after our END_STREAM, so the receive
        # task ends on its own instead of being cancelled inside CRT (aws/aws-sdk-python#13).
        pump = self._pump_task
        if pump is not None and not pump.done():
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(self._settings.close_timeout):
                    await asyncio.shield(pump)
        if pump is not None and not pump.done():
            await self._abandon_input()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(self._settings.close_timeout):
                    await pump
        if self._abandon_task is not None:
            with contextlib.suppress(Exception):
                await self._abandon_task
        receiver = self._receiver
        if receiver is not None:
            with contextlib.suppress(Exception, TimeoutError, concurrent.futures.InvalidStateError):
                async with asyncio.timeout(self._settings.close_timeout):
                    await receiver.close()
        # Wake a consumer still waiting in events() with the stream's outcome.
        self._drain()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(self._final or _Terminal(self._dead))

    def _drain(self) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Terminal) and self._final is None:
                self._final = item


def _input_chunk(payload: bytes) -> Any:
    from aws_sdk_bedrock_runtime.models import (
        BidirectionalInputPayloadPart,
        InvokeModelWithBidirectionalStreamInputChunk,
    )

    return InvokeModelWithBidirectionalStreamInputChunk(
        value=BidirectionalInputPayloadPart(bytes_=payload)
    )


# --------------------------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------------------------


class BedrockBackend:
    """Opens Nova Sonic sessions on Bedrock. One instance (one SDK client) per process."""

    name = "bedrock"

    def __init__(self, settings: BedrockSettings | None = None, *, credentials: Any = None) -> None:
        """``credentials``: a botocore ``Credentials`` object; None resolves boto3's chain."""
        self.settings = settings or BedrockSettings()
        errors = self.settings.validate()
        if errors:
            raise ValueError("invalid Bedrock settings: " + "; ".join(errors))
        self._credentials = credentials
        self._resolver: BotocoreIdentityResolver | None = None
        self._client: Any = None
        self._setup_lock = asyncio.Lock()
        self._streams: weakref.WeakSet[BedrockStream] = weakref.WeakSet()
        self._closed = False

    @property
    def resolver(self) -> BotocoreIdentityResolver | None:
        return self._resolver

    @property
    def credentials_expiration(self) -> datetime | None:
        """When the signing keys expire (None: long-term keys or not resolved yet).

        Session renewal can use it to start the next session before expiry: whether Bedrock
        accepts event signatures made with rotated keys mid-stream is unverified.
        """
        return self._resolver.expiration if self._resolver is not None else None

    async def _ensure_client(self) -> tuple[Any, BotocoreIdentityResolver]:
        async with self._setup_lock:
            if self._closed:
                raise StreamLost("the Bedrock backend is closed")
            if self._client is not None and self._resolver is not None:
                return self._client, self._resolver
            credentials = self._credentials
            if credentials is None:
                try:
                    credentials = await asyncio.to_thread(
                        load_botocore_credentials, self.settings.profile
                    )
                except CredentialsUnavailable as exc:
                    raise AccessDenied(str(exc)) from None
            resolver = BotocoreIdentityResolver(credentials)
            client = await _make_client(self.settings, resolver)
            self._client, self._resolver = client, resolver
            log.info(
                "bedrock_client_ready",
                target=self.settings.describe(),
                credentials=resolver.method,
            )
            return client, resolver

    async def open(self) -> BedrockStream:
        """Open one session stream. Raises AccessDenied, StreamLost, ... (BackendError)."""
        from aws_sdk_bedrock_runtime.models import (
            InvokeModelWithBidirectionalStreamOperationInput,
        )

        timeout = self.settings.open_timeout
        try:
            async with asyncio.timeout(timeout):
                client, resolver = await self._ensure_client()
                # Resolve the identity first: if the SDK's own resolution fails inside the
                # request, duplex_stream() never returns (its request future is never set).
                await resolver.get_identity(properties={})
                sdk_stream = await client.invoke_model_with_bidirectional_stream(
                    InvokeModelWithBidirectionalStreamOperationInput(
                        model_id=self.settings.model_id
                    )
                )
        except TimeoutError:
            raise StreamLost(
                f"could not open a Bedrock stream within {timeout:g}s "
                f"({self.settings.effective_endpoint()})"
            ) from None
        except BackendError:
            raise
        except Exception as exc:
            raise map_error(exc) from exc
        stream = BedrockStream(sdk_stream, self.settings, uuid.uuid4().hex[:12])
        stream.start()
        self._streams.add(stream)
        return stream

    async def aclose(self) -> None:
        """Close every open stream and the SDK client (its pooled HTTP/2 connections)."""
        async with self._setup_lock:
            if self._closed:
                return
            self._closed = True
            client, self._client = self._client, None
        streams = list(self._streams)
        if streams:
            await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
        if client is not None:
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(self.settings.close_timeout):
                    await client.close()


def _retrieve_writer_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("bedrock_request_body_writer_ended", error=repr(task.exception()))


def _transport(kind: str = "crt") -> Any:
    """The SDK's transport: ``asyncio`` (see transport.py), else the CRT HTTP client.

    The CRT one is forced to HTTP/2 and also reaps CRT's request-body writer task.

    Workaround: when Bedrock ends or resets a stream while the request body is still open,
    awscrt's per-stream writer task fails with AWS_ERROR_HTTP_STREAM_HAS_COMPLETED and nobody
    retrieves the exception, so asyncio logs "Task exception was never retrieved" for every such
    call (the dead-stream family of aws/aws-sdk-python#13). We attach a done-callback that
    consumes it. ``_await_response`` and ``__deepcopy__`` are private/dunder hooks of
    smithy-http 0.6; the SDK deep-copies its config (and so the transport) once per client.
    """
    if kind == "asyncio":
        from voicegate.backends.bedrock.transport import AsyncioHTTP2Client

        return AsyncioHTTP2Client()
    from copy import deepcopy

    from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig, AWSCRTHTTPResponse

    class ObservedCRTHTTPClient(AWSCRTHTTPClient):
        async def _await_response(self, stream: Any) -> AWSCRTHTTPResponse:
            writer = getattr(stream, "_writer", None)
            if isinstance(writer, asyncio.Task):
                writer.add_done_callback(_retrieve_writer_result)
            return await super()._await_response(stream)

        def __deepcopy__(self, memo: Any) -> ObservedCRTHTTPClient:
            return ObservedCRTHTTPClient(
                eventloop=self._eventloop, client_config=deepcopy(self._config)
            )

    # The CRT transport reads its trust store (SSL_CERT_FILE / SSL_CERT_DIR) when built.
    return ObservedCRTHTTPClient(client_config=AWSCRTHTTPClientConfig(force_http_2=True))


async def _make_client(settings: BedrockSettings, resolver: BotocoreIdentityResolver) -> Any:
    from aws_sdk_bedrock_runtime.client import AsyncBedrockRuntimeClient
    from aws_sdk_bedrock_runtime.config import AsyncBedrockRuntimeConfig

    transport = _transport(settings.transport)
    overrides: dict[str, Any] = {
        "region": settings.region,
        "transport": transport,
        "aws_credentials_identity_resolver": resolver,
        "user_agent_extra": "voicegate",
    }
    if settings.endpoint:
        overrides["endpoint_uri"] = settings.endpoint
    config = await AsyncBedrockRuntimeConfig.resolve(profile=settings.profile, **overrides)
    return AsyncBedrockRuntimeClient(config=config)
