"""AWS credentials for the Bedrock backend: boto3's full chain, bridged into the Smithy SDK.

Why a bridge: the Smithy-based ``aws-sdk-bedrock-runtime`` builds its own identity chain, but it
only covers environment variables, shared files, ``credential_process``, the container endpoint
and IMDS; SSO, assume-role and web identity need modules it does not ship. botocore has covered
every source for a decade (and handles refresh of temporary credentials), so voicegate resolves
credentials with boto3 and hands them to the SDK through its ``IdentityResolver`` interface.

The SDK asks the resolver for an identity on *every* event it signs (about 31 times a second
per call with 32 ms audio chunks). A stream's events must be signed with the key its request was
signed with (the chain is seeded by the request's signature, and Bedrock checks every event
against it), so each stream is pinned to the identity it was opened with: ``signing_as`` makes
the resolver return that identity for the sends of that stream, whatever has been refreshed
since. New streams take the current identity, refreshed first when it is near expiry, and a
conversation renews onto a fresh stream before its stream's identity expires.

botocore's refresh is blocking (it may call STS, SSO or the instance metadata service) and
therefore always runs in a worker thread: in the background while the current keys still have
``advisory_margin`` left, awaited once they are inside ``mandatory_margin`` of expiry or when a
new stream is opened inside ``advisory_margin``.

Secrets never reach a log line or an exception message from this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from smithy_aws_core.identity import AWSCredentialsIdentity, AWSIdentityProperties
from smithy_core.exceptions import SmithyIdentityError

__all__ = [
    "BotocoreIdentityResolver",
    "CHAIN_DESCRIPTION",
    "CredentialsUnavailable",
    "DEFAULT_ADVISORY_MARGIN",
    "DEFAULT_MANDATORY_MARGIN",
    "RETRY_BACKOFF",
    "credentials_status",
    "load_botocore_credentials",
    "signing_as",
]

log = structlog.get_logger(__name__)

CHAIN_DESCRIPTION: Final = (
    "environment variables, AWS_PROFILE / shared config and credentials files, SSO, "
    "assume-role, web identity, credential_process, container and instance metadata"
)

DEFAULT_ADVISORY_MARGIN: Final = 300.0
"""Seconds before expiry at which a background refresh starts (current keys still used)."""

DEFAULT_MANDATORY_MARGIN: Final = 60.0
"""Seconds before expiry inside which signing waits for fresh keys."""

RETRY_BACKOFF: Final = 15.0
"""Seconds between background refresh attempts that did not extend the expiry."""


_STREAM_IDENTITY: contextvars.ContextVar[AWSCredentialsIdentity | None] = contextvars.ContextVar(
    "voicegate_stream_identity", default=None
)
"""The identity of the stream whose request or events are being signed in this context."""


@contextlib.contextmanager
def signing_as(identity: AWSCredentialsIdentity | None) -> Iterator[None]:
    """Within this block (and tasks started in it) the resolver hands the SDK ``identity``:
    the sends of one stream sign with the key that stream was opened with."""
    token = _STREAM_IDENTITY.set(identity)
    try:
        yield
    finally:
        _STREAM_IDENTITY.reset(token)


class CredentialsUnavailable(Exception):
    """No usable AWS credentials. The message names the chain, never a secret."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def load_botocore_credentials(profile: str | None = None) -> Any:
    """botocore credentials from boto3's full chain (blocking: may touch files or the network).

    Returns the botocore ``Credentials`` object (refreshable when temporary), or raises
    CredentialsUnavailable with a human reason.
    """
    import boto3
    import botocore.exceptions

    try:
        session = boto3.Session(profile_name=profile)
        credentials = session.get_credentials()
    except botocore.exceptions.ProfileNotFound as exc:
        raise CredentialsUnavailable(f"AWS profile not found: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise CredentialsUnavailable(
            f"resolving AWS credentials failed: {type(exc).__name__}: {exc}"
        ) from None
    if credentials is None:
        raise CredentialsUnavailable(f"no AWS credentials found (looked in: {CHAIN_DESCRIPTION})")
    return credentials


def credentials_status(profile: str | None = None) -> tuple[bool, str]:
    """Whether AWS credentials resolve through boto3's chain, and a human reason.

    Used by ``--backend auto`` to choose between Bedrock and the offline brain. Blocking: on a
    machine without credentials boto3 also probes the instance metadata service (about a
    second). The reason names where the credentials came from (``env``, ``sso``,
    ``assume-role``, ...), never the keys.
    """
    try:
        credentials = load_botocore_credentials(profile)
    except CredentialsUnavailable as exc:
        return False, str(exc)
    method = getattr(credentials, "method", None) or "unknown source"
    try:
        frozen = credentials.get_frozen_credentials()
    except Exception as exc:  # botocore raises many types while refreshing (SSO, STS, IMDS)
        return False, f"AWS credentials from {method} could not be loaded: {type(exc).__name__}"
    if not frozen.access_key or not frozen.secret_key:
        return False, f"AWS credentials from {method} are incomplete"
    kind = "temporary" if frozen.token else "long-term"
    return True, f"AWS credentials found through boto3 ({method}, {kind})"


class BotocoreIdentityResolver:
    """The SDK's credentials ``IdentityResolver``, backed by a botocore ``Credentials`` object.

    Implements ``smithy_core.aio.interfaces.identity.IdentityResolver[AWSCredentialsIdentity,
    AWSIdentityProperties]`` structurally. Static credentials are snapshotted once; refreshable
    ones (SSO, assume-role, web identity, container, instance) carry their expiry into the
    identity, and are refreshed by botocore's ``RefreshableCredentials`` before they expire.
    """

    def __init__(
        self,
        credentials: Any,
        *,
        advisory_margin: float = DEFAULT_ADVISORY_MARGIN,
        mandatory_margin: float = DEFAULT_MANDATORY_MARGIN,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not 0 <= mandatory_margin <= advisory_margin:
            raise ValueError("need 0 <= mandatory_margin <= advisory_margin")
        self._credentials = credentials
        self._advisory = advisory_margin
        self._mandatory = mandatory_margin
        self._clock = clock
        self._identity: AWSCredentialsIdentity | None = None
        self._refresh_task: asyncio.Future[AWSCredentialsIdentity] | None = None
        self._next_background_try = 0.0
        self.refreshes = 0
        """How many snapshots were taken from botocore (observability and tests)."""

    @property
    def method(self) -> str:
        """Where botocore found the credentials (``env``, ``sso``, ``assume-role``...)."""
        return str(getattr(self._credentials, "method", None) or "unknown")

    @property
    def expiration(self) -> datetime | None:
        """Expiry of the keys currently handed to the signer (None: long-term keys)."""
        return self._identity.expiration if self._identity is not None else None

    async def get_identity(self, *, properties: AWSIdentityProperties) -> AWSCredentialsIdentity:
        """The identity of the stream being signed (``signing_as``), else the current one;
        refreshes (off the event loop) when expiry approaches."""
        pinned = _STREAM_IDENTITY.get()
        if pinned is not None:
            return pinned
        return await self.current()

    async def for_new_stream(self) -> AWSCredentialsIdentity:
        """The identity a new stream is opened (and pinned) with: the current one, refreshed
        first when it is inside ``advisory_margin`` of expiry, so a stream opened to replace an
        expiring one does not get the same keys again."""
        identity = self._identity
        if identity is not None and self._remaining(identity) <= self._advisory:
            with contextlib.suppress(SmithyIdentityError):
                await self._refresh()
        return await self.current()

    async def current(self) -> AWSCredentialsIdentity:
        """The current identity; refreshes (off the event loop) when expiry approaches."""
        identity = self._identity
        if identity is not None:
            remaining = self._remaining(identity)
            if remaining > self._advisory:
                return identity
            if remaining > self._mandatory:
                self._refresh_in_background()
                return identity
        return await self._refresh()

    async def settle(self) -> None:
        """Wait for an in-flight background refresh to finish (shutdown and tests)."""
        task = self._refresh_task
        if task is not None and not task.done():
            await asyncio.wait([task])

    async def invalidate(self) -> None:
        """Forget the cached identity; the next signature re-reads botocore."""
        self._identity = None

    def _remaining(self, identity: AWSCredentialsIdentity) -> float:
        if identity.expiration is None:
            return float("inf")
        return (identity.expiration - self._clock()).total_seconds()

    def _refresh_in_background(self) -> None:
        now = time.monotonic()
        if now < self._next_background_try:
            return
        if self._refresh_task is not None and not self._refresh_task.done():
            return
        self._next_background_try = now + RETRY_BACKOFF
        task = self._start_refresh()
        task.add_done_callback(_log_background_failure)

    def _start_refresh(self) -> asyncio.Future[AWSCredentialsIdentity]:
        task = self._refresh_task
        if task is None or task.done():
            task = asyncio.ensure_future(asyncio.to_thread(self._snapshot))
            self._refresh_task = task
        return task

    async def _refresh(self) -> AWSCredentialsIdentity:
        # shield: a send() timing out must not cancel a refresh other signers are waiting on.
        identity = await asyncio.shield(self._start_refresh())
        if self._remaining(identity) <= 0:
            raise SmithyIdentityError(
                f"AWS credentials from {self.method} expired and could not be refreshed"
            )
        return identity

    def _snapshot(self) -> AWSCredentialsIdentity:
        """Runs in a worker thread: botocore may block on STS/SSO/IMDS while refreshing."""
        try:
            frozen = self._credentials.get_frozen_credentials()
        except Exception as exc:
            # botocore's refresh errors do not carry secrets, but keep only the type to be safe.
            raise SmithyIdentityError(
                f"refreshing AWS credentials from {self.method} failed: {type(exc).__name__}"
            ) from None
        if not frozen.access_key or not frozen.secret_key:
            raise SmithyIdentityError(f"AWS credentials from {self.method} are incomplete")
        # botocore keeps the expiry of refreshable credentials only in this private attribute
        # (no public accessor exists); static credentials have none.
        expiry = getattr(self._credentials, "_expiry_time", None)
        identity = AWSCredentialsIdentity(
            access_key_id=frozen.access_key,
            secret_access_key=frozen.secret_key,
            session_token=frozen.token or None,
            expiration=expiry if isinstance(expiry, datetime) else None,
            account_id=getattr(frozen, "account_id", None) or None,
        )
        self._identity = identity
        self.refreshes += 1
        return identity


def _log_background_failure(task: asyncio.Future[AWSCredentialsIdentity]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        # The message is built by _snapshot and holds no secret.
        log.warning("aws_credentials_refresh_failed", error=str(exc))
