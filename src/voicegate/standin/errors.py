"""The errors the stand-in reports the way Bedrock reports them.

A brain (or the stand-in itself) raises one of voicegate's typed ``BackendError`` classes; the
server turns it into Bedrock's modelled exception event (``:message-type exception`` with the
``:exception-type`` the SDK maps to ``aws_sdk_bedrock_runtime.models.ValidationException`` and so
on, payload ``{"message": ...}``), so the real SDK raises exactly what it would raise against
Bedrock. The messages are Bedrock's own wording where it is known.
"""

from __future__ import annotations

import json
from typing import Any, Final

from voicegate.backends.base import (
    BackendError,
    InternalServerError,
    ModelStreamError,
    ModelTimeout,
    ServiceUnavailable,
    Throttled,
    ValidationFailed,
)
from voicegate.standin.eventstream import Message

TIMEOUT_MESSAGE: Final = "Model has timed out in processing the request. Try your request again."
IDLE_MESSAGE: Final = "Timed out waiting for input events"


class ResetStream(BackendError):
    """Raised by a brain to make the server reset the HTTP/2 stream (RST_STREAM) mid-call."""

    kind = "reset"


EXCEPTION_TYPES: Final[tuple[tuple[type[BackendError], str], ...]] = (
    (ValidationFailed, "validationException"),
    (Throttled, "throttlingException"),
    (ModelTimeout, "modelTimeoutException"),
    (ServiceUnavailable, "serviceUnavailableException"),
    (ModelStreamError, "modelStreamErrorException"),
    (InternalServerError, "internalServerException"),
)

EXCEPTIONS: Final[dict[str, tuple[type[BackendError], str]]] = {
    "validation": (
        ValidationFailed,
        "Invalid input request, please fix your input and try again.",
    ),
    "throttling": (Throttled, "Too many requests, please wait before trying again."),
    "model_timeout": (ModelTimeout, TIMEOUT_MESSAGE),
    "internal_server": (
        InternalServerError,
        "The system encountered an unexpected error during processing. Try your request again.",
    ),
    "service_unavailable": (
        ServiceUnavailable,
        "The service is temporarily unable to handle the request. Try again later.",
    ),
    "model_stream_error": (
        ModelStreamError,
        "An error occurred while streaming the response. Retry your request.",
    ),
}
"""Scenario ``exception:<kind>`` -> the error the brain raises and Bedrock's message for it."""


def exception_type(error: BackendError) -> str:
    """The ``:exception-type`` Bedrock would send for a brain's error."""
    for cls, name in EXCEPTION_TYPES:
        if isinstance(error, cls):
            return name
    return "internalServerException"


def exception_message(error: BackendError) -> Message:
    payload: dict[str, Any] = {"message": error.message}
    if isinstance(error, ModelStreamError):
        payload.update(originalStatusCode=500, originalMessage=error.message)
    return Message(
        {
            ":message-type": "exception",
            ":exception-type": exception_type(error),
            ":content-type": "application/json",
        },
        json.dumps(payload).encode(),
    )


__all__ = [
    "EXCEPTIONS",
    "EXCEPTION_TYPES",
    "IDLE_MESSAGE",
    "TIMEOUT_MESSAGE",
    "ResetStream",
    "exception_message",
    "exception_type",
]
