"""The one interface every speech backend implements, and its typed errors.

A backend opens *streams*; one stream is one Nova Sonic session: the conversation sends
``sonic`` input events into it and iterates its output events. Bedrock, the embedded offline
brain and the echo brain all look the same from above, so the conversation layer never knows
which one it talks to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol

from voicegate.sonic import InputEvent, OutputEvent

__all__ = [
    "AccessDenied",
    "Backend",
    "BackendError",
    "BackendStream",
    "BackendUnavailable",
    "CredentialsRejected",
    "InternalServerError",
    "ModelStreamError",
    "ModelTimeout",
    "QuotaExceeded",
    "ServiceUnavailable",
    "StreamLost",
    "Throttled",
    "ValidationFailed",
]


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here (a missing extra, missing credentials)."""


class BackendError(Exception):
    """A failure of the speech backend. ``kind`` is a stable label for metrics and the browser."""

    kind = "backend_error"
    retryable = False

    def __init__(self, message: str, cause: BackendError | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause
        """What killed the stream, when this error only reports that it is gone (a send to a
        stream that died of throttling raises StreamLost with the Throttled as cause)."""

    @property
    def reason(self) -> BackendError:
        """The error a retry decision is made on: the cause when there is one."""
        return self.cause.reason if self.cause is not None else self


class ModelTimeout(BackendError):
    """The session hit its time limit (Bedrock: ModelTimeoutException, about 8 minutes)."""

    kind = "model_timeout"
    retryable = True


class Throttled(BackendError):
    """ThrottlingException: the account's rate is exceeded; retried after a longer, jittered
    backoff (AWS: "retry the request" with exponential backoff)."""

    kind = "throttled"
    retryable = True


class QuotaExceeded(BackendError):
    """ServiceQuotaExceededException: a quota is used up (AWS: request an increase); retrying
    at once cannot help, so a call is not retried on it."""

    kind = "quota_exceeded"


class ServiceUnavailable(BackendError):
    kind = "service_unavailable"
    retryable = True


class InternalServerError(BackendError):
    kind = "internal_server_error"
    retryable = True


class ModelStreamError(BackendError):
    kind = "model_stream_error"
    retryable = True


class ValidationFailed(BackendError):
    """The backend refused an event. Some Bedrock messages here are transient (code 531)."""

    kind = "validation"


class AccessDenied(BackendError):
    kind = "access_denied"


class CredentialsRejected(BackendError):
    """Bedrock refused the keys a stream signs with: an event signature that does not match the
    request's key, or a session token that expired. A new stream (current keys) may work."""

    kind = "credentials"
    retryable = True


class StreamLost(BackendError):
    """The stream ended without an orderly close (reset, connection loss, send timeout)."""

    kind = "stream_lost"
    retryable = True


class BackendStream(Protocol):
    """One open session with a speech model."""

    async def send(self, event: InputEvent) -> None:
        """Send one input event. Raises BackendError (StreamLost once the stream is dead)."""
        ...

    async def send_all(self, events: Sequence[InputEvent]) -> None:
        """Send events back to back: no event of a concurrent sender lands between them. The
        stream owns the one lock its senders share (Bedrock's event signatures are chained, so
        there signing and writing must also happen in order)."""
        ...

    def events(self) -> AsyncIterator[OutputEvent]:
        """Output events in order. Ends on an orderly close; raises BackendError on failure."""
        ...

    async def close(self) -> None:
        """Release the stream. Never hangs, never raises."""
        ...

    def credentials_expiration(self) -> datetime | None:
        """When the credentials this stream's events are signed with expire (None: they do
        not, or the backend needs none). A stream keeps the identity it was opened with, so a
        conversation renews onto a new stream before then."""
        ...


class Backend(Protocol):
    """A factory of streams; one instance per process, shared by all calls."""

    name: str
    input_rate: int
    """Sample rate of the caller audio its streams take (audioInputConfiguration): Bedrock's is
    configured (``--model-input-rate``), the in-process brains take 16 kHz."""

    async def open(self) -> BackendStream:
        """Open a new session stream. Raises BackendError when that is impossible."""
        ...

    def credentials_expiration(self) -> datetime | None:
        """When the credentials that sign this backend's streams expire (timezone-aware, or
        naive meaning UTC); None when they do not, or the backend needs none. A conversation
        moves to a new stream before then."""
        ...

    async def aclose(self) -> None:
        """Release process-wide resources (models, connection pools)."""
        ...
