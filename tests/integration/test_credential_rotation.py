"""Calls live through credential rotation: a model stream keeps the identity it was opened with
(Bedrock checks every event against the key that signed the request), new streams take the
current one, and a call renews onto fresh keys before its stream's keys expire.

Credentials come from boto3's real providers: the container-credentials provider against a
local endpoint that rotates keys every couple of seconds (as ECS task roles and EKS Pod Identity
do, faster), and assume-role style refreshable credentials. The stand-in accepts every issued
key for a request (``--credentials-file``), and still refuses an event signed with a key other
than its stream's.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from voicegate.backends.bedrock import BedrockBackend, BedrockSettings
from voicegate.conversation import (
    ContinuationSettings,
    Conversation,
    ConversationError,
    ConversationEvent,
    ConversationSettings,
    SessionContinued,
    default_tools,
)
from voicegate.standin import StandIn
from voicegate.standin.sigv4 import Credentials

ROTATE_S = 2.0
"""A new key is issued this often."""
LIFETIME_S = 16.0
"""Each key expires this long after it was issued."""
MARGIN_S = 6.0
"""The call renews this long before its stream's key expires."""


class Rotation:
    """Keys indexed by time: key n is issued at start + n * ROTATE_S."""

    def __init__(self, count: int = 64) -> None:
        self.start = time.time()
        self.keys = [
            Credentials(f"ASIAROTATING{n:08d}", f"secret-{n}-rotating-test-key", f"token-{n}")
            for n in range(count)
        ]
        self.served: set[str] = set()

    def current(self) -> tuple[Credentials, datetime]:
        n = min(int((time.time() - self.start) / ROTATE_S), len(self.keys) - 1)
        issued = self.start + n * ROTATE_S
        self.served.add(self.keys[n].access_key)
        return self.keys[n], datetime.fromtimestamp(issued + LIFETIME_S, UTC)


class Listener:
    def __init__(self) -> None:
        self.events: list[ConversationEvent] = []
        self.changed = asyncio.Event()

    def on_audio(self, pcm: bytes) -> None:
        pass

    def on_flush(self) -> int:
        return 0

    def on_event(self, event: ConversationEvent) -> None:
        self.events.append(event)
        self.changed.set()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, done: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def container_endpoint(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rotation]:
    """ECS/EKS-style credentials endpoint on loopback, found by botocore through
    AWS_CONTAINER_CREDENTIALS_FULL_URI."""
    rotation = Rotation()

    async def credentials(request: web.Request) -> web.Response:
        key, expires = rotation.current()
        return web.json_response(
            {
                "AccessKeyId": key.access_key,
                "SecretAccessKey": key.secret_key,
                "Token": key.session_token,
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    app = web.Application()
    app.router.add_get("/creds", credentials)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/creds")
    try:
        yield rotation
    finally:
        await runner.cleanup()


def _assume_role_credentials(rotation: Rotation) -> Any:
    """botocore's refreshable credentials as assume-role builds them, refreshed from the
    rotation (each refresh gets the key of the moment)."""
    from botocore.credentials import RefreshableCredentials

    def refresh() -> dict[str, str]:
        key, expires = rotation.current()
        return {
            "access_key": key.access_key,
            "secret_key": key.secret_key,
            "token": key.session_token or "",
            "expiry_time": expires.isoformat(),
        }

    return RefreshableCredentials.create_from_metadata(refresh(), refresh, "assume-role")


@pytest.mark.parametrize("provider", ["container", "assume-role"])
async def test_a_call_lives_through_key_rotations_and_renews_before_its_keys_expire(
    container_endpoint: Rotation,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    bedrock_transport: str,
    provider: str,
) -> None:
    rotation = container_endpoint
    async with StandIn("scripted", cert_dir=tmp_path / "certs", accepted=rotation.keys) as s:
        monkeypatch.setenv("SSL_CERT_FILE", str(s.ca_file))
        credentials = None if provider == "container" else _assume_role_credentials(rotation)
        backend = BedrockBackend(
            BedrockSettings(
                region="us-east-1",
                endpoint=s.endpoint,
                transport=bedrock_transport,
                send_timeout=3.0,
                open_timeout=10.0,
                close_timeout=1.0,
            ),
            credentials=credentials,  # None: boto3's chain finds the container provider
        )
        listener = Listener()
        settings = ConversationSettings(
            continuation=ContinuationSettings(credential_margin_s=MARGIN_S, renew_min_age_s=1.0)
        )
        conv = Conversation(backend, settings, default_tools(), listener)
        try:
            await conv.start()
            # Rotations happen every ROTATE_S; the first stream's key expires LIFETIME_S after
            # it was issued, so a renewal for credentials comes within that.
            await listener.until(
                lambda: conv.stats.renewals >= 2 or listener.of(ConversationError), 3 * LIFETIME_S
            )
            assert not listener.of(ConversationError), listener.of(ConversationError)
            renewals = listener.of(SessionContinued)
            assert [e.kind for e in renewals] == ["renewal", "renewal"]
            assert {e.reason for e in renewals} == {"credentials"} and not renewals[0].forced
            assert conv.stats.recoveries == 0 and not conv.stats.failures
        finally:
            await conv.close()
            await backend.aclose()
        assert not listener.of(ConversationError) and conv.end_reason == "closed"
        # Keys rotated under every stream, yet each stream's events verified against its own.
        rotated = rotation.current()[0].access_key
        assert rotation.keys.index(next(k for k in rotation.keys if k.access_key == rotated)) >= 4
        records = list(s.sessions)
        # Each stream was opened with the key of its moment: three streams, three keys.
        assert len(records) == 3 and len({r.access_key for r in records}) == 3
        assert all(r.signatures_verified == r.envelopes > 0 for r in records)


async def test_an_event_signed_with_another_key_than_the_streams_is_refused(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Both keys are accepted for a request, but a stream seeded by one refuses events signed
    with the other (as Bedrock does): what the per-stream identity protects against."""
    from smithy_aws_core.identity import AWSCredentialsIdentity

    from voicegate.backends.bedrock.credentials import signing_as
    from voicegate.sonic import AudioInput

    first, second = (
        Credentials("AKIAFIRSTKEY0000", "first-secret"),
        Credentials("AKIASECONDKEY000", "second-secret"),
    )
    async with StandIn("scripted", cert_dir=tmp_path / "certs", accepted=[first, second]) as s:
        monkeypatch.setenv("SSL_CERT_FILE", str(s.ca_file))
        from botocore.credentials import Credentials as BotoCredentials

        backend = BedrockBackend(
            BedrockSettings(region="us-east-1", endpoint=s.endpoint, send_timeout=3.0),
            credentials=BotoCredentials(first.access_key, first.secret_key),
        )
        conv_listener = Listener()
        conv = Conversation(backend, ConversationSettings(), default_tools(), conv_listener)
        try:
            await conv.start()
            leg = conv.legs.live
            assert leg is not None
            other = AWSCredentialsIdentity(
                access_key_id=second.access_key, secret_access_key=second.secret_key
            )
            stream: Any = leg.stream
            stream.identity = other  # as today's shared resolver did after a rotation
            with signing_as(other):
                await stream.send(AudioInput(conv.prompt_name, "x", bytes(640)))
            # Reported as a credentials failure (not bad input), and recovered from: the new
            # stream signs with the current key again.
            await conv_listener.until(lambda: conv_listener.of(SessionContinued), 10)
            (event,) = conv_listener.of(SessionContinued)
            assert (event.kind, event.reason) == ("recovery", "credentials")
            assert conv.stats.failures == {"credentials": 1}
            assert not conv_listener.of(ConversationError)
        finally:
            await conv.close()
            await backend.aclose()
        first_record, second_record = s.sessions
        assert first_record.access_key == second_record.access_key == first.access_key
        assert first_record.signatures_verified < first_record.envelopes


def test_credential_refusals_are_their_own_kind() -> None:
    from voicegate.backends.base import AccessDenied, CredentialsRejected, ValidationFailed
    from voicegate.backends.bedrock.errors import map_error

    class ValidationException(Exception):  # noqa: N818 - the SDK's name
        pass

    class ExpiredTokenException(Exception):  # noqa: N818
        pass

    class AccessDeniedException(Exception):  # noqa: N818
        pass

    sig = map_error(ValidationException("InvalidSignatureException: The request signature ..."))
    assert isinstance(sig, CredentialsRejected) and sig.kind == "credentials" and sig.retryable
    assert isinstance(map_error(ExpiredTokenException("expired")), CredentialsRejected)
    assert type(map_error(ValidationException("bad field"))) is ValidationFailed
    assert type(map_error(AccessDeniedException("no model access"))) is AccessDenied


def test_standin_credentials_file_is_validated(tmp_path: Path) -> None:
    from voicegate.standin.server import load_credentials_file

    good = tmp_path / "keys.json"
    good.write_text(
        json.dumps(
            [
                {"access_key_id": "AKIAONE", "secret_access_key": "s1"},
                {"access_key_id": "ASIATWO", "secret_access_key": "s2", "session_token": "t"},
            ]
        )
    )
    assert load_credentials_file(good) == [
        Credentials("AKIAONE", "s1"),
        Credentials("ASIATWO", "s2", "t"),
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"access_key_id": "AKIA"}]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicegate",
            "standin",
            "--cert-dir",
            str(tmp_path / "c"),
            "--port",
            "0",
            "--credentials-file",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "secret_access_key" in done.stderr
