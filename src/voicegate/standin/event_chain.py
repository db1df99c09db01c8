"""The chain of per-event signatures on Bedrock's bidirectional stream: each envelope's
signature covers its ``:date``, its payload and the previous signature (the request's seed
signature for the first), so events can be neither reordered, dropped nor replayed. The rules are
in ``sigv4``'s docstring; this module signs (for tests and benchmarks) and verifies (for the
stand-in) one envelope after another.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from voicegate.standin.eventstream import Message, encode_header, encode_message
from voicegate.standin.sigv4 import (
    EVENT_ALGORITHM,
    MISMATCH_MESSAGE,
    TIME_FORMAT,
    Credentials,
    SeedVerified,
    SignatureError,
    signing_key,
)

__all__ = ["EventSigner", "EventVerifier", "event_signature"]


def event_signature(
    secret_key: str,
    region: str,
    service: str,
    previous_hex: str,
    date: datetime,
    payload: bytes,
) -> bytes:
    """The 32-byte signature of one envelope whose ``:date`` is ``date``."""
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    amz_date = date.astimezone(UTC).strftime(TIME_FORMAT)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    date_header = encode_header(":date", date)
    to_sign = "\n".join(
        (
            EVENT_ALGORITHM,
            amz_date,
            scope,
            previous_hex,
            hashlib.sha256(date_header).hexdigest(),
            hashlib.sha256(payload).hexdigest(),
        )
    )
    key = signing_key(secret_key, amz_date[:8], region, service)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).digest()


class EventSigner:
    """Sign envelopes in a chain, as a client does (for tests and benchmarks)."""

    def __init__(
        self, credentials: Credentials, region: str, seed_signature: str, service: str = "bedrock"
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self.previous = seed_signature

    def sign(self, payload: bytes, date: datetime | None = None) -> bytes:
        """The encoded envelope carrying ``payload`` (an encoded inner message, or b"")."""
        date = date or datetime.now(UTC)
        # :date travels with millisecond precision; sign exactly what is sent.
        date = date.replace(microsecond=date.microsecond // 1000 * 1000)
        sig = event_signature(
            self.credentials.secret_key, self.region, self.service, self.previous, date, payload
        )
        self.previous = sig.hex()
        return encode_message({":date": date, ":chunk-signature": sig}, payload)


class EventVerifier:
    """Check a client's envelopes in order; the first failure poisons the chain."""

    def __init__(self, secret_key: str, seed: SeedVerified) -> None:
        self.secret_key = secret_key
        self.region = seed.region
        self.service = seed.service
        self.previous = seed.signature
        self.verified = 0
        self.ended = False
        self._broken = False

    def verify(self, envelope: Message) -> bytes:
        """The envelope's payload if its signature continues the chain; else SignatureError.

        An empty payload is the signed end frame: nothing may follow it.
        """
        if self._broken:
            raise SignatureError("InvalidSignatureException", "the signature chain is broken")
        if self.ended:
            self._broken = True
            raise SignatureError("InvalidSignatureException", "event after the end frame")
        date = envelope.headers.get(":date")
        sig = envelope.headers.get(":chunk-signature")
        if (
            not isinstance(date, datetime)
            or not isinstance(sig, bytes)
            or len(envelope.headers) != 2
        ):
            self._broken = True
            raise SignatureError(
                "InvalidSignatureException",
                "an event envelope needs exactly :date and :chunk-signature headers",
            )
        expected = event_signature(
            self.secret_key, self.region, self.service, self.previous, date, envelope.payload
        )
        if not hmac.compare_digest(expected, sig):
            self._broken = True
            raise SignatureError("InvalidSignatureException", MISMATCH_MESSAGE)
        self.previous = expected.hex()
        self.verified += 1
        if not envelope.payload:
            self.ended = True
        return envelope.payload
