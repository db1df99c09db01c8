"""The production backend: Amazon Nova Sonic over Bedrock's InvokeModelWithBidirectionalStream.

This package is the only place that touches ``aws-sdk-bedrock-runtime`` (pinned to 0.12.0, whose
API broke between releases), so SDK churn stays local. This module owns the SDK client:

* One ``AsyncBedrockRuntimeClient`` per process, with the awscrt transport forced to HTTP/2:
  the SDK's default aiohttp transport cannot do duplex streams at all, and CRT over HTTP/1.1
  would buffer the whole (endless) request body before sending anything.
* Credentials come from boto3's full chain through ``BotocoreIdentityResolver``
  (see ``credentials.py``), so SSO, assume-role and web identity work and are refreshed.
* Each call is a ``BedrockStream`` (``stream.py``); Bedrock's modelled exceptions become the
  typed errors of ``voicegate.backends.base`` (``errors.py``); where calls go is
  ``BedrockSettings`` (``settings.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from datetime import datetime
from typing import Any

import structlog

from voicegate.backends.base import AccessDenied, BackendError, StreamLost
from voicegate.backends.bedrock.credentials import (
    BotocoreIdentityResolver,
    CredentialsUnavailable,
    credentials_status,
    load_botocore_credentials,
    signing_as,
)
from voicegate.backends.bedrock.errors import map_error
from voicegate.backends.bedrock.event_signer import ChainedSigV4AuthScheme
from voicegate.backends.bedrock.settings import (
    DEFAULT_MODEL_ID,
    NOVA_SONIC_V1_MODEL_ID,
    BedrockSettings,
    default_region,
)
from voicegate.backends.bedrock.stream import BedrockStream, StreamStats

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


class BedrockBackend:
    """Opens Nova Sonic sessions on Bedrock. One instance (one SDK client) per process."""

    name = "bedrock"

    def __init__(self, settings: BedrockSettings | None = None, *, credentials: Any = None) -> None:
        """``credentials``: a botocore ``Credentials`` object; None resolves boto3's chain."""
        self.settings = settings or BedrockSettings()
        errors = self.settings.validate()
        if errors:
            raise ValueError("invalid Bedrock settings: " + "; ".join(errors))
        self.input_rate = self.settings.input_rate
        """The rate the conversation streams caller audio at (``--model-input-rate``)."""
        self.settings.announce()
        self._credentials = credentials
        self._resolver: BotocoreIdentityResolver | None = None
        self._client: Any = None
        self._setup_lock = asyncio.Lock()
        self._streams: weakref.WeakSet[BedrockStream] = weakref.WeakSet()
        self._closed = False

    @property
    def resolver(self) -> BotocoreIdentityResolver | None:
        return self._resolver

    def credentials_expiration(self) -> datetime | None:
        """When the keys a new stream would be signed with expire (None: long-term keys or not
        resolved yet). An open stream keeps the keys it was opened with: its own
        ``credentials_expiration`` is what its renewal is timed by."""
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
                # The stream keeps this identity for its whole life: its request and every
                # event are signed with it (the SDK's request task inherits the context).
                identity = await resolver.for_new_stream()
                with signing_as(identity):
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
        stream = BedrockStream(sdk_stream, self.settings, uuid.uuid4().hex[:12], identity)
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


def _transport(kind: str = "crt", calls_per_connection: int | None = None) -> Any:
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
        from voicegate.backends.bedrock.http2 import H2Settings
        from voicegate.backends.bedrock.transport import AsyncioHTTP2Client

        if calls_per_connection is None:
            return AsyncioHTTP2Client()
        return AsyncioHTTP2Client(
            settings=H2Settings(max_streams_per_connection=calls_per_connection)
        )
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

    transport = _transport(settings.transport, settings.calls_per_connection)
    overrides: dict[str, Any] = {
        "region": settings.region,
        "transport": transport,
        "aws_credentials_identity_resolver": resolver,
        "user_agent_extra": "voicegate",
    }
    if settings.endpoint:
        overrides["endpoint_uri"] = settings.endpoint
    config = await AsyncBedrockRuntimeConfig.resolve(profile=settings.profile, **overrides)
    # Same SigV4 scheme, a cheaper per-event signer (event_signer.py says why).
    config.set_auth_scheme(ChainedSigV4AuthScheme(service="bedrock"))
    return AsyncBedrockRuntimeClient(config=config)
