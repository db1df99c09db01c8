"""Bedrock's failures as voicegate's typed errors (``voicegate.backends.base``).

Anything the SDK, the CRT transport or the stream can raise goes through ``map_error``, so the
conversation layer only ever sees ``BackendError`` subclasses with a stable ``kind`` and a
``retryable`` flag; secrets never appear in the messages (they are built from the exception's
message, which the SDK never fills with credentials).
"""

from __future__ import annotations

import concurrent.futures
from typing import Final

from voicegate.backends.base import (
    AccessDenied,
    BackendError,
    CredentialsRejected,
    InternalServerError,
    ModelStreamError,
    ModelTimeout,
    QuotaExceeded,
    ServiceUnavailable,
    StreamLost,
    Throttled,
    ValidationFailed,
)

_CREDENTIAL_MARKERS: Final = (
    "invalidsignatureexception",
    "signature we calculated does not match",
    "expiredtoken",
    "security token included in the request is expired",
)
"""Messages of a stream's keys refused mid-stream: an event signed with another key than the
request's (rotated credentials), or an expired session token."""

_TRANSIENT_VALIDATION: Final = (
    "system instability",
    "internalerrorcode=531",
    "invalid event bytes",
    "tool response parsing error",
)
"""ValidationException messages that are Bedrock-side hiccups, not bad input: a new stream (with
the history) carries on. "Tool Response parsing error" ends the stream after a tool result the
model could not read; LiveKit's client restarts the session on it, and so does voicegate (the
tool call is reported as cut off)."""


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
        case "ValidationException" if any(m in message.lower() for m in _CREDENTIAL_MARKERS):
            return CredentialsRejected(f"Bedrock refused the stream's credentials: {message}")
        case "ExpiredTokenException":
            return CredentialsRejected(f"the stream's AWS session token expired: {message}")
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
        case "ThrottlingException":
            return Throttled(f"Bedrock is throttling: {message}")
        case "ServiceQuotaExceededException":
            return QuotaExceeded(f"Bedrock quota exceeded: {message}")
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


__all__ = ["map_error"]
