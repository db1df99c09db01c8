"""A wire-true stand-in for Bedrock's ``InvokeModelWithBidirectionalStream``: the listener.

Bedrock cannot be reached from tests or from a user without AWS, yet the production path (the
real SDK, its CRT HTTP/2 transport, SigV4 event signing, event-stream framing, base64-in-JSON)
is exactly what must be exercised. So the stand-in speaks that protocol for real: HTTP/2 over TLS
(ALPN ``h2``, ``h2.py``), the seed and chained event signatures verified (``sigv4.py``,
``event_chain.py``), every event decoded down to Nova Sonic JSON and checked (``session.py``),
and answers produced by a *brain* (``brains.py``). This module owns the TLS listener and the
routing of each request.

What it refuses, and how (chosen to look like Bedrock to the SDK):

* before the stream: an HTTP status, ``x-amzn-errortype`` and JSON ``{"message"}``; a bad
  signature or unknown key is 403 ``AccessDeniedException`` (the AWS code, e.g.
  ``InvalidSignatureException``, is in the message and in ``x-amzn-standin-error-code``), an
  unknown model 404 ``ResourceNotFoundException``, too many sessions 429 ``ThrottlingException``.
* during the stream: an exception event (``:message-type exception``) then END_STREAM; a broken
  signature chain or malformed event is a ``validationException`` (``errors.py``).

Bounded everywhere: HTTP/2 flow control is honoured in both directions (input is acknowledged
only after it was processed, output waits for the client's window), envelopes are capped, the
brain's output queue is bounded, and idle streams time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import unquote

import structlog
from aiohttp import web

from voicegate.agents.knowledge_local import LocalIndex
from voicegate.sonic.models import MODELS, STREAM_LIMIT_S, known_model, model_of
from voicegate.standin.certs import ensure_certs, server_context
from voicegate.standin.event_chain import EventVerifier
from voicegate.standin.factories import BrainFactory, make_factory
from voicegate.standin.h2 import EVENTSTREAM, Connection
from voicegate.standin.quirks import OPENS_PER_MINUTE
from voicegate.standin.records import MAX_SESSION_RECORDS, Rejection, SessionRecord
from voicegate.standin.retrieve import http1_context, retrieve_app
from voicegate.standin.session import Session
from voicegate.standin.sigv4 import (
    Credentials,
    SignatureError,
    parse_authorization,
    verify_request,
)

log = structlog.get_logger(__name__)

TEST_ACCESS_KEY: Final = "AKIDVOICEGATESTANDIN"
TEST_SECRET_KEY: Final = "voicegate-standin-test-secret-key-not-for-aws"
"""The key pair the stand-in verifies against when AWS_ACCESS_KEY_ID/SECRET are not set."""

PATH_RE: Final = re.compile(r"/model/([^/]+)/invoke-with-bidirectional-stream")
DEFAULT_REGION: Final = "us-east-1"
DEFAULT_SESSION_LIMIT: Final = STREAM_LIMIT_S
"""Bedrock ends a bidirectional stream after 8 minutes (ModelTimeoutException)."""
DEFAULT_IDLE_TIMEOUT: Final = 60.0
"""No input (no audio, once audio streams) for this long ends a session, as Bedrock's
"Timed out waiting for input events" does (reported between ~55 s and ~175 s)."""


def credentials_from_env() -> Credentials:
    """The key pair to verify against: the environment's when set, else the test keys."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    return Credentials(TEST_ACCESS_KEY, TEST_SECRET_KEY)


def load_credentials_file(path: str | os.PathLike[str]) -> list[Credentials]:
    """The key set of ``--credentials-file``: a JSON list of objects with ``access_key_id``,
    ``secret_access_key`` and an optional ``session_token``. Raises ValueError naming what is
    wrong (never a secret)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of key objects")
    keys: list[Credentials] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: entry {i} is not an object")
        key, secret = item.get("access_key_id"), item.get("secret_access_key")
        token = item.get("session_token")
        if not isinstance(key, str) or not key or not isinstance(secret, str) or not secret:
            raise ValueError(f"{path}: entry {i} needs access_key_id and secret_access_key")
        if token is not None and not isinstance(token, str):
            raise ValueError(f"{path}: entry {i}: session_token must be a string")
        unknown = set(item) - {"access_key_id", "secret_access_key", "session_token"}
        if unknown:
            raise ValueError(f"{path}: entry {i}: unknown fields {sorted(unknown)}")
        keys.append(Credentials(key, secret, token or None))
    return keys


DEFAULT_QUIRKS: frozenset[str] = frozenset()
"""Quirks of a StandIn built without ``quirks`` (the test suite's ``--standin-quirks``)."""


class StandIn:
    """The stand-in as an async context manager (binds ``port`` 0 by default)::

    async with StandIn(brain="scripted", cert_dir=tmp_path) as s:
        s.endpoint, s.ca_file, s.access_key, s.secret_key, s.sessions
    """

    def __init__(
        self,
        brain: str = "scripted",
        cert_dir: str | os.PathLike[str] = ".",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        session_limit: float | None = DEFAULT_SESSION_LIMIT,
        credentials: Credentials | None = None,
        scenario: str = "reply",
        max_sessions: int = 64,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        factory: BrainFactory | None = None,
        accepted: Sequence[Credentials] = (),
        quirks: Iterable[str] | None = None,
        knowledge: Mapping[str, str | os.PathLike[str]] | None = None,
    ) -> None:
        """``accepted``: more key pairs a request may be signed with (rotating credentials);
        a stream's events must still be signed with the key its request was. ``quirks``: the
        irregular behaviours of ``--quirks`` (None: ``DEFAULT_QUIRKS``, which the test suite's
        ``--standin-quirks`` sets). ``knowledge``: knowledge base ids and the folders their
        Retrieve answers come from (served on ``retrieve_endpoint``, its own HTTPS/1.1
        listener)."""
        self.brain = brain
        self.cert_dir = Path(cert_dir)
        self.host = host
        self.port = port
        self.region = region
        self.session_limit = session_limit
        self.credentials = credentials or (accepted[0] if accepted else credentials_from_env())
        self.key_set: dict[str, Credentials] = {self.credentials.access_key: self.credentials}
        self.key_set.update((c.access_key, c) for c in accepted)
        self.quirks = frozenset(DEFAULT_QUIRKS if quirks is None else quirks)
        self.opens: deque[float] = deque()
        """Loop times of the stream opens of the last minute (``throttle-opens``)."""
        self.sessions_started = 0
        self.scenario = scenario
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.factory: BrainFactory = factory or make_factory(brain, scenario)
        self.sessions: deque[SessionRecord] = deque(maxlen=MAX_SESSION_RECORDS)
        self.rejections: deque[Rejection] = deque(maxlen=MAX_SESSION_RECORDS)
        self.active_sessions = 0
        self._accepted = asyncio.Event()
        self.ca_file = Path()
        self._server: asyncio.Server | None = None
        self.knowledge = {kb: LocalIndex(folder) for kb, folder in (knowledge or {}).items()}
        self.retrieve_port = 0
        self._retrieve_runner: web.AppRunner | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def access_key(self) -> str:
        return self.credentials.access_key

    @property
    def secret_key(self) -> str:
        return self.credentials.secret_key

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def retrieve_endpoint(self) -> str:
        """The Knowledge Bases Retrieve endpoint (``bedrock-agent-runtime``), when served."""
        return f"https://{self.host}:{self.retrieve_port}" if self.retrieve_port else ""

    async def session(self, index: int = 0) -> SessionRecord:
        """The record of the ``index``-th accepted stream, once it is accepted (a caller that
        opened a stream learns of the stand-in's side without polling; the caller bounds the
        wait). Counts from the oldest record kept."""
        while len(self.sessions) <= index:
            self._accepted.clear()
            await self._accepted.wait()
        return self.sessions[index]

    def client_env(self, region: str | None = None) -> dict[str, str]:
        """Environment variables that point the real SDK (or voicegate) at this stand-in.

        ``region`` defaults to the stand-in's own: another one is refused (credential scope).
        """
        region = region or self.region
        env = {
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.endpoint,
            "SSL_CERT_FILE": str(self.ca_file),
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": region,
        }
        if self.retrieve_port:
            # botocore's service-specific endpoint variable for bedrock-agent-runtime.
            env["AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME"] = self.retrieve_endpoint
        if self.credentials.session_token:
            env["AWS_SESSION_TOKEN"] = self.credentials.session_token
        return env

    async def start(self) -> None:
        await self.factory.warm()
        paths = ensure_certs(self.cert_dir)
        self.ca_file = paths.ca_file
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self.port,
            ssl=server_context(paths),
            ssl_handshake_timeout=10.0,
            limit=256 * 1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("standin_listening", endpoint=self.endpoint, brain=self.factory.name)
        if self.knowledge:
            app = retrieve_app(self.knowledge, self._credentials_for, self.region)
            self._retrieve_runner = web.AppRunner(app, access_log=None)
            await self._retrieve_runner.setup()
            site = web.TCPSite(
                self._retrieve_runner,
                self.host,
                0,
                ssl_context=http1_context(server_context(paths)),
            )
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.Server)
            self.retrieve_port = server.sockets[0].getsockname()[1]
            log.info("standin_retrieve_listening", endpoint=self.retrieve_endpoint)

    async def stop(self) -> None:
        if self._retrieve_runner is not None:
            await self._retrieve_runner.cleanup()
            self._retrieve_runner = None
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
            self._server = None
        await self.factory.aclose()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- routing ----------------------------------------------------------------------------

    async def route(
        self, cx: Connection, stream_id: int, pseudo: dict[str, str], headers: dict[str, str]
    ) -> None:
        """Check one request like Bedrock (operation, signature, model, content type, capacity)
        and either refuse it or open its session."""
        full_path = pseudo.get(":path", "")
        path, _, query = full_path.partition("?")
        match = PATH_RE.fullmatch(path)
        if pseudo.get(":method") != "POST" or match is None:
            cx.reject(stream_id, 404, "UnknownOperationException", "Unknown operation", path)
            return
        credentials = self._credentials_for(headers)
        try:
            seed = verify_request(credentials, "POST", path, query, headers, region=self.region)
        except SignatureError as exc:
            cx.reject(stream_id, 403, "AccessDeniedException", exc.message, path, code=exc.code)
            return
        model_id = unquote(match.group(1))
        if not known_model(model_id):
            cx.reject(
                stream_id,
                404,
                "ResourceNotFoundException",
                "Could not resolve the foundation model from the provided model identifier.",
                path,
            )
            return
        if headers.get("content-type", EVENTSTREAM).split(";")[0].strip() != EVENTSTREAM:
            cx.reject(
                stream_id, 400, "ValidationException", f"Content-Type must be {EVENTSTREAM}", path
            )
            return
        if "throttle-opens" in self.quirks and self._opens_exceeded():
            cx.reject(
                stream_id,
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
                path,
            )
            return
        if self.active_sessions >= self.max_sessions:
            cx.reject(
                stream_id,
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
                path,
            )
            return
        try:
            brain = await self.factory.open()
        except Exception as exc:
            log.exception("standin_brain_open_failed")
            cx.reject(stream_id, 500, "InternalServerException", f"brain: {exc}", path)
            return
        brain.quirks = self.quirks
        brain.async_tools = model_of(model_id).nova2
        self.sessions_started += 1
        request_id = str(uuid.uuid4())
        record = SessionRecord(
            request_id=request_id,
            model_id=model_id,
            region=seed.region,
            access_key=seed.access_key,
            session_token=seed.session_token is not None,
            brain=self.factory.name,
        )
        self.sessions.append(record)
        self._accepted.set()
        verifier = EventVerifier(credentials.secret_key, seed)
        cx.accept(Session(cx, stream_id, record, brain, verifier), request_id)
        log.info("standin_session", stream=stream_id, model=model_id, request_id=request_id)

    def _opens_exceeded(self) -> bool:
        """``throttle-opens``: Bedrock's quotas are per minute; more opens than
        OPENS_PER_MINUTE within one are throttled."""
        now = asyncio.get_running_loop().time()
        while self.opens and now - self.opens[0] > 60.0:
            self.opens.popleft()
        if len(self.opens) >= OPENS_PER_MINUTE:
            return True
        self.opens.append(now)
        return False

    def _credentials_for(self, headers: Mapping[str, str]) -> Credentials:
        """The key pair of the access key the request names (unknown: the main pair, which
        ``verify_request`` then refuses as AWS does)."""
        try:
            access_key = parse_authorization(headers.get("authorization", "")).access_key
        except SignatureError:
            return self.credentials
        return self.key_set.get(access_key, self.credentials)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The connection runs in its own task so stop() can cancel it: CPython 3.12.1 logs a
        # spurious error when start_server's own handler task is cancelled
        # (python/cpython#113538, fixed in 3.12.2).
        task = asyncio.get_running_loop().create_task(Connection(self, reader, writer).run())
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        await asyncio.wait({task})


__all__ = [
    "MODELS",
    "TEST_ACCESS_KEY",
    "TEST_SECRET_KEY",
    "StandIn",
    "credentials_from_env",
    "load_credentials_file",
    "known_model",
]
