"""SigV4 as Bedrock's bidirectional stream uses it: the seed request signature and the chain of
per-event signatures. Verification for the stand-in, and a signer so tests can forge frames.

Why our own code: the stand-in must check what the real SDK sends against an implementation that
shares nothing with it, so a signing regression in the client (or in our use of it) fails a test
instead of failing in production against real Bedrock.

The rules (AWS's SigV4 documentation for event streams, verified on the wire against SDK 0.12;
docs/standin.md):

* The credential scope is ``DATE/REGION/bedrock/aws4_request``: the service must be ``bedrock``
  and the region the endpoint's (``bedrock-runtime.REGION.amazonaws.com``).
* The HTTP request is signed with payload hash ``STREAMING-AWS4-HMAC-SHA256-EVENTS``. Its canonical
  URI is the wire path percent-encoded *again* (``%3A`` becomes ``%253A``), as for every non-S3
  service.
* Each event travels in an envelope with headers ``:date`` (timestamp) and ``:chunk-signature``
  (32 raw bytes) whose payload is the encoded inner message. Its signature is an HMAC with the
  SigV4 key of the ``:date`` day over ``AWS4-HMAC-SHA256-PAYLOAD``, the ``:date`` as
  ``YYYYMMDDTHHMMSSZ``, the scope, the previous signature in hex (the seed signature for the first
  event), the SHA-256 of the encoded ``:date`` header and the SHA-256 of the payload. Events can
  therefore be neither reordered, dropped nor replayed.
* The end of input may be a signed envelope with an empty payload (SDK 0.12); older SDKs only
  close the HTTP/2 stream.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final
from urllib.parse import parse_qsl, quote

__all__ = [
    "STREAMING_PAYLOAD",
    "Authorization",
    "Credentials",
    "SeedVerified",
    "SignatureError",
    "canonical_request",
    "canonical_uri",
    "parse_authorization",
    "sign_request",
    "signing_key",
    "string_to_sign",
    "verify_request",
]

ALGORITHM: Final = "AWS4-HMAC-SHA256"
EVENT_ALGORITHM: Final = "AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD: Final = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
TIME_FORMAT: Final = "%Y%m%dT%H%M%SZ"
DEFAULT_MAX_SKEW: Final = timedelta(minutes=5)
"""AWS refuses requests whose x-amz-date is further than this from its clock."""


class SignatureError(Exception):
    """A signature check failed. ``code`` is the AWS error code a real service would use."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


MISMATCH_MESSAGE: Final = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parsed ``Authorization`` header."""

    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str  # hex

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True, slots=True)
class SeedVerified:
    """What a verified request establishes: who signed, where, and the chain's first link."""

    access_key: str
    region: str
    service: str
    amz_date: str
    signature: str  # hex, the first "previous signature" of the event chain
    session_token: str | None


# --------------------------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived SigV4 key (cached: the stand-in derives it once per day per session)."""
    k = hmac.new(("AWS4" + secret_key).encode(), date.encode(), hashlib.sha256).digest()
    k = hmac.new(k, region.encode(), hashlib.sha256).digest()
    k = hmac.new(k, service.encode(), hashlib.sha256).digest()
    return hmac.new(k, b"aws4_request", hashlib.sha256).digest()


def canonical_uri(path: str) -> str:
    """Percent-encode the (already encoded) wire path once more, keeping the slashes."""
    return quote(path or "/", safe="/")


def canonical_query(query: str) -> str:
    pairs = [
        (quote(k, safe=""), quote(v, safe="")) for k, v in parse_qsl(query, keep_blank_values=True)
    ]
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """SigV4's canonical request. ``headers`` keys must be lower case."""
    lines = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed_headers)
    return "\n".join(
        (
            method,
            canonical_uri(path),
            canonical_query(query),
            lines,
            ";".join(signed_headers),
            payload_hash,
        )
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def parse_authorization(value: str) -> Authorization:
    """Parse ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("IncompleteSignatureException", f"Unsupported algorithm {algorithm}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, val = part.strip().partition("=")
        if eq:
            fields[key] = val
    try:
        credential = fields["Credential"]
        signed = fields["SignedHeaders"]
        signature = fields["Signature"]
    except KeyError as exc:
        raise SignatureError(
            "IncompleteSignatureException",
            f"Authorization header requires '{exc.args[0]}' parameter.",
        ) from exc
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise SignatureError("IncompleteSignatureException", "Credential is malformed")
    signed_headers = tuple(signed.split(";"))
    if list(signed_headers) != sorted(signed_headers) or "" in signed_headers:
        raise SignatureError("IncompleteSignatureException", "SignedHeaders must be sorted")
    if len(signature) != 64 or any(c not in "0123456789abcdef" for c in signature):
        raise SignatureError("IncompleteSignatureException", "Signature must be 64 hex digits")
    return Authorization(parts[0], parts[1], parts[2], parts[3], signed_headers, signature)


# --------------------------------------------------------------------------------------------
# The seed (HTTP request) signature
# --------------------------------------------------------------------------------------------


def sign_request(
    credentials: Credentials,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    region: str,
    service: str = "bedrock",
    payload_hash: str = STREAMING_PAYLOAD,
) -> str:
    """The ``Authorization`` value for a request (for tests; signs every given header).

    ``headers`` must be lower-case and already include ``host`` and ``x-amz-date``.
    """
    amz_date = headers["x-amz-date"]
    signed = tuple(sorted(headers))
    auth = Authorization(credentials.access_key, amz_date[:8], region, service, signed, "")
    canonical = canonical_request(method, path, query, headers, signed, payload_hash)
    key = signing_key(credentials.secret_key, auth.date, region, service)
    signature = hmac.new(
        key, string_to_sign(amz_date, auth.scope, canonical).encode(), hashlib.sha256
    ).hexdigest()
    return (
        f"{ALGORITHM} Credential={credentials.access_key}/{auth.scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )


def verify_request(
    credentials: Credentials,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    service: str = "bedrock",
    now: datetime | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    region: str | None = None,
    body: bytes | None = None,
) -> SeedVerified:
    """Check the seed signature of a bidirectional-stream request (or, with ``body``, of a
    plain request whose payload is signed by its SHA-256, as botocore signs Retrieve).

    ``headers`` are lower case, with ``host`` filled in from ``:authority`` for HTTP/2.
    ``credentials.session_token``, when set, must match; when None any token is accepted (the
    stand-in has no STS), but it must be signed like every other header. ``region``, when set,
    is the endpoint's region: a credential scoped to another one is refused, as AWS does.
    """
    value = headers.get("authorization")
    if not value:
        raise SignatureError("MissingAuthenticationTokenException", "Missing Authentication Token")
    auth = parse_authorization(value)
    if auth.access_key != credentials.access_key:
        raise SignatureError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if auth.service != service:
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{service}'.",
        )
    if region is not None and auth.region != region:
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region, not '{auth.region}'.",
        )
    payload_hash = STREAMING_PAYLOAD if body is None else hashlib.sha256(body).hexdigest()
    required = (
        {"host", "x-amz-date"}
        if body is not None
        else {"host", "x-amz-date"} | {"x-amz-content-sha256"}
    )
    token = headers.get("x-amz-security-token")
    if token is not None:
        required.add("x-amz-security-token")
        if credentials.session_token is not None and not hmac.compare_digest(
            token, credentials.session_token
        ):
            raise SignatureError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
    missing = sorted(required - set(auth.signed_headers))
    if missing:
        raise SignatureError(
            "InvalidSignatureException", f"Headers {missing} must be signed for this request."
        )
    absent = [h for h in auth.signed_headers if h not in headers]
    if absent:
        raise SignatureError("InvalidSignatureException", f"Signed headers {absent} are missing.")
    if body is None and headers["x-amz-content-sha256"] != STREAMING_PAYLOAD:
        raise SignatureError(
            "InvalidSignatureException",
            f"This operation requires x-amz-content-sha256: {STREAMING_PAYLOAD}",
        )
    if body is not None and headers.get("x-amz-content-sha256", payload_hash) != payload_hash:
        raise SignatureError("InvalidSignatureException", "x-amz-content-sha256 does not match")
    amz_date = headers["x-amz-date"]
    try:
        when = datetime.strptime(amz_date, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise SignatureError("IncompleteSignatureException", "x-amz-date is malformed") from exc
    if amz_date[:8] != auth.date:
        raise SignatureError(
            "InvalidSignatureException", "Credential date does not match x-amz-date."
        )
    now = now or datetime.now(UTC)
    if abs(now - when) > max_skew:
        raise SignatureError(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than the allowed window "
            f"(server time {now.strftime(TIME_FORMAT)}).",
        )
    canonical = canonical_request(method, path, query, headers, auth.signed_headers, payload_hash)
    key = signing_key(credentials.secret_key, auth.date, auth.region, auth.service)
    expected = hmac.new(
        key, string_to_sign(amz_date, auth.scope, canonical).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, auth.signature):
        raise SignatureError("InvalidSignatureException", MISMATCH_MESSAGE)
    return SeedVerified(auth.access_key, auth.region, auth.service, amz_date, auth.signature, token)
