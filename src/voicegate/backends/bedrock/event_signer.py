"""The chained SigV4 event signature, computed with less Python per event than the SDK's.

Every input event of a Nova Sonic stream (about 30 a second per call) is signed: SHA-256 of the
``:date`` header and of the framed message, then an HMAC chain over the day, region, service
and the string to sign. The SDK's ``AsyncEventSigner`` derives the signing key from the secret
(four HMACs) for every event, copies its properties, formats the date with ``strftime`` and
encodes the one-header block through a generic header encoder. The key depends only on the
secret, the UTC day, the region and the service, so ``ChainedEventSigner`` derives it once per
(identity, day), builds the ``:date`` header bytes directly and frames the signed message with its
header block encoded once; what it signs and sends is the SDK's
algorithm byte for byte (``tests/unit/test_event_signer.py`` compares the two, chain included).

It is plugged in through the SDK's public extension point, an auth scheme
(``AsyncBedrockRuntimeConfig.auth_schemes``): ``ChainedSigV4AuthScheme`` is the SDK's SigV4
scheme with only its ``event_signer`` replaced, so request signing is untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from binascii import hexlify
from collections.abc import Callable
from datetime import UTC, datetime
from struct import pack
from typing import Any, Final
from zlib import crc32

from aws_sdk_signers import SigV4SigningProperties
from smithy_aws_core.auth.sigv4 import SigV4AuthScheme
from smithy_aws_core.identity import AWSCredentialsIdentity
from smithy_aws_event_stream.events import (
    MAX_HEADERS_LENGTH,
    MAX_PAYLOAD_LENGTH,
    EventHeaderEncoder,
    EventMessage,
)

__all__ = ["ChainedEventSigner", "ChainedSigV4AuthScheme"]

_DATE_HEADER: Final = b"\x05:date\x08"
"""``:date`` as an event-stream header: name length, name, type 8 (timestamp, int64 ms)."""

_MAX_HEADER_BLOCKS: Final = 8
"""Distinct header sets kept encoded (a stream sends one or two kinds of event)."""

_ALGORITHM: Final = "AWS4-HMAC-SHA256-PAYLOAD"
_EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class ChainedEventSigner:
    """Signs one stream's events in order, each signature chained to the one before.

    Implements the SDK's ``EventSigner`` protocol (``sign`` and ``sign_empty``). One instance
    per stream, like the SDK's: the chain is the stream's.
    """

    def __init__(
        self, *, initial_signature: bytes, now: Callable[[], datetime] | None = None
    ) -> None:
        self._prior = initial_signature
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = asyncio.Lock()
        self._finalized = False
        # (secret, day, region, service) -> signing key: one entry in practice; a rotated
        # identity or a new UTC day replaces it.
        self._key_for: tuple[str, str, str, str] | None = None
        self._key = b""
        self._header_blocks: dict[tuple[tuple[str, Any], ...], bytes] = {}

    async def sign(
        self,
        *,
        event: EventMessage,
        identity: AWSCredentialsIdentity,
        properties: SigV4SigningProperties,
    ) -> EventMessage:
        return await self._sign(event, self._frame(event), identity, properties, final=False)

    def _frame(self, event: EventMessage) -> bytes:
        """``event.encode()``, with the header block (the same three headers on every audio
        event) encoded once per distinct set instead of through the generic encoder each time."""
        headers = event.headers
        if not all(type(v) is str for v in headers.values()):
            return event.encode()
        key = tuple(headers.items())
        block = self._header_blocks.get(key)
        if block is None:
            encoder = EventHeaderEncoder()
            encoder.encode_headers(headers)
            block = encoder.get_result()
            if len(self._header_blocks) < _MAX_HEADER_BLOCKS:
                self._header_blocks[key] = block
        payload = event.payload
        if len(block) > MAX_HEADERS_LENGTH or len(payload) > MAX_PAYLOAD_LENGTH:
            return event.encode()  # the SDK's encoder raises its own errors for these
        prelude = pack("!II", len(block) + len(payload) + 16, len(block))
        prelude_crc = crc32(prelude)
        body = pack("!I", prelude_crc) + block + payload
        return prelude + body + pack("!I", crc32(body, prelude_crc))

    async def sign_empty(
        self,
        *,
        event: EventMessage,
        identity: AWSCredentialsIdentity,
        properties: SigV4SigningProperties,
    ) -> EventMessage:
        """The final empty frame that closes the chain (no event may be signed after it)."""
        if event.headers or event.payload:
            raise ValueError("sign_empty requires an event with no headers and no payload")
        return await self._sign(event, b"", identity, properties, final=True)

    def _signing_key(self, secret: str, day: str, region: str, service: str) -> bytes:
        wanted = (secret, day, region, service)
        if self._key_for != wanted:
            k = _hmac(b"AWS4" + secret.encode(), day.encode())
            k = _hmac(k, region.encode())
            k = _hmac(k, service.encode())
            self._key = _hmac(k, b"aws4_request")
            self._key_for = wanted
        return self._key

    async def _sign(
        self,
        event: EventMessage,
        payload: bytes,
        identity: AWSCredentialsIdentity,
        properties: SigV4SigningProperties,
        *,
        final: bool,
    ) -> EventMessage:
        async with self._lock:
            if self._finalized:
                raise RuntimeError("the final empty event was signed: the chain is closed")
            date = self._now()
            timestamp = properties.get("date") or (
                f"{date.year:04d}{date.month:02d}{date.day:02d}T"
                f"{date.hour:02d}{date.minute:02d}{date.second:02d}Z"
            )
            region, service = properties["region"], properties["service"]
            day = timestamp[:8]
            headers = _DATE_HEADER + pack("!q", int(date.timestamp() * 1000))
            string_to_sign = (
                f"{_ALGORITHM}\n{timestamp}\n{day}/{region}/{service}/aws4_request\n"
                f"{self._prior.decode()}\n{hashlib.sha256(headers).hexdigest()}\n"
                f"{hashlib.sha256(payload).hexdigest() if payload else _EMPTY_SHA256}"
            )
            key = self._signing_key(identity.secret_access_key, day, region, service)
            signature = _hmac(key, string_to_sign.encode())
            event.headers = {":date": date, ":chunk-signature": signature}
            event.payload = payload
            self._prior = hexlify(signature)
            if final:
                self._finalized = True
        return event


class ChainedSigV4AuthScheme(SigV4AuthScheme):
    """The SDK's SigV4 scheme, its event signer swapped for ``ChainedEventSigner``."""

    def event_signer(self, *, request: Any) -> ChainedEventSigner:
        # The chain starts from the request's own signature, as the SDK's scheme does.
        auth = request.fields["Authorization"].as_string()
        signature = re.split("Signature=", auth)[-1]
        return ChainedEventSigner(initial_signature=signature.encode())
