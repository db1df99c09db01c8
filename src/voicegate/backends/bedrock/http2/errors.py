"""Errors of the asyncio HTTP/2 client, each saying whether a retry on a new stream may help.

They are plain exceptions (no SDK types) so the client stays usable on its own; the Bedrock
transport lets them through to the SDK, which wraps them, and voicegate's error mapping turns
them into ``StreamLost``.
"""

from __future__ import annotations

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "HTTP2Error",
    "HTTP2Timeout",
    "StreamRefused",
    "StreamReset",
]


class HTTP2Error(Exception):
    """Anything that ends a stream or a connection of this client."""

    retryable = True


class ConnectFailed(HTTP2Error):
    """TCP, TLS or HTTP/2 set-up failed (refused, certificate, no h2 in ALPN, ...)."""


class HTTP2Timeout(HTTP2Error, TimeoutError):
    """Connecting, or waiting for a keepalive PING's answer, took too long."""


class ConnectionLost(HTTP2Error):
    """The connection closed or failed while the stream was open."""


class StreamReset(HTTP2Error):
    """The peer (or this client, on the application's behalf) reset the stream."""

    def __init__(self, message: str, code: int, *, remote: bool) -> None:
        super().__init__(message)
        self.code = code
        self.remote = remote


class StreamRefused(HTTP2Error):
    """The server never processed the stream (GOAWAY below its id, or REFUSED_STREAM):
    the same request may be sent again on another connection."""
