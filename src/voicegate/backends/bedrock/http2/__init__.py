"""A small asyncio HTTP/2 client (h2 + the event loop's TLS) for long duplex streams.

It exists for the Bedrock transport (``voicegate.backends.bedrock.transport``) but knows nothing
of the SDK: ``H2Pool.open_stream`` sends a request whose body streams from an async iterable
while the response streams back. ``pool`` keeps connections per origin, ``connection`` runs one
HTTP/2 connection, ``stream`` one exchange, ``errors`` says what can go wrong.
"""

from voicegate.backends.bedrock.http2.errors import (
    ConnectFailed,
    ConnectionLost,
    HTTP2Error,
    HTTP2Timeout,
    StreamRefused,
    StreamReset,
)
from voicegate.backends.bedrock.http2.pool import H2Pool, H2Settings, default_ssl_context
from voicegate.backends.bedrock.http2.stream import H2Stream

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "H2Pool",
    "H2Settings",
    "H2Stream",
    "HTTP2Error",
    "HTTP2Timeout",
    "StreamRefused",
    "StreamReset",
    "default_ssl_context",
]
