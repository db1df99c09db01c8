"""Short-lived signed access tokens for signaling.

An app backend that already knows its user mints a token with the shared secret (``voicegate
token`` or the few lines in docs/security.md) and hands it to the page; the page sends it as
``Authorization: Bearer <token>``. voicegate needs no user database and no call back to the app:
the HMAC proves the token came from someone holding the secret, ``exp`` bounds how long a leaked
token is worth anything, and per-token claims (``mcs``) let the app cap what one user may spend.

Format (all parts base64url without padding)::

    vg1.<payload JSON>.<HMAC-SHA256(secret, "vg1." + payload part)>

Payload claims: ``exp`` (expiry, Unix seconds, required), ``iat`` (issued at), ``sub`` (who the
app says this is; logged, and the key of the per-subject call limit), ``mcs`` (maximum call
seconds for calls this token starts), ``aud`` (the audience, checked when the server has one
configured) and ``pc`` (the one call this token may touch: set on the per-call token voicegate
returns with each answer, so one caller can never hang up or restart another's call).

The server also refuses tokens that live longer than it allows (``check_lifetime``): a leaked
token is worth something only until it expires, so no one may mint one that never does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Final

from voicegate.config_checks import MAX_TTL_S, MIN_SECRET_CHARS

__all__ = [
    "AuthError",
    "Claims",
    "MAX_AUDIENCE_CHARS",
    "MAX_SUBJECT_CHARS",
    "MAX_TOKEN_CHARS",
    "SESSION_GRACE_S",
    "VERSION",
    "bearer",
    "check_lifetime",
    "fingerprint",
    "mint",
    "verify",
]

VERSION: Final = "vg1"
MAX_TOKEN_CHARS: Final = 2048
"""Longer Authorization values are refused before any decoding or hashing work."""
MAX_SUBJECT_CHARS: Final = 128
MAX_AUDIENCE_CHARS: Final = 256
SESSION_GRACE_S: Final = 60
"""A per-call token outlives its call's maximum length by this much, so hang-up still works."""


class AuthError(Exception):
    """A token was refused. ``reason`` is a stable code (missing, malformed, forged, expired,
    too_long, wrong_audience, not_local); the message says what to do about it and never
    echoes the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Claims:
    exp: int
    iat: int | None = None
    sub: str | None = None
    mcs: float | None = None
    pc: str | None = None
    aud: str | None = None
    agent: str | None = None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, signed_part: str) -> str:
    digest = hmac.new(secret.encode(), signed_part.encode("ascii"), hashlib.sha256).digest()
    return _b64encode(digest)


def mint(
    secret: str,
    ttl: float,
    *,
    subject: str | None = None,
    max_call_seconds: float | None = None,
    pc_id: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """A token valid for ``ttl`` seconds from ``now``."""
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"the secret must have at least {MIN_SECRET_CHARS} characters")
    if not (math.isfinite(ttl) and 0 < ttl <= MAX_TTL_S):
        raise ValueError(f"ttl must be between 1 and {MAX_TTL_S} seconds")
    if subject is not None and not 0 < len(subject) <= MAX_SUBJECT_CHARS:
        raise ValueError(f"subject must have 1-{MAX_SUBJECT_CHARS} characters")
    if max_call_seconds is not None and not (
        math.isfinite(max_call_seconds) and max_call_seconds > 0
    ):
        raise ValueError("max_call_seconds must be a positive number")
    if audience is not None and not 0 < len(audience) <= MAX_AUDIENCE_CHARS:
        raise ValueError(f"audience must have 1-{MAX_AUDIENCE_CHARS} characters")
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"exp": issued + int(ttl), "iat": issued}
    if subject is not None:
        payload["sub"] = subject
    if max_call_seconds is not None:
        payload["mcs"] = max_call_seconds
    if pc_id is not None:
        payload["pc"] = pc_id
    if audience is not None:
        payload["aud"] = audience
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    signed = f"{VERSION}.{body}"
    return f"{signed}.{_signature(secret, signed)}"


def verify(
    secret: str, token: str, now: float | None = None, *, audience: str | None = None
) -> Claims:
    """The token's claims, or AuthError. The signature is checked (in constant time) before the
    payload is even decoded, so a forger learns nothing from which error comes back. With an
    ``audience``, only tokens minted for it pass."""
    if not token:
        raise AuthError("missing", "no access token")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise AuthError("malformed", "the access token is malformed")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not parts[1] or not parts[2]:
        raise AuthError("malformed", "the access token is malformed")
    signed = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_signature(secret, signed), parts[2]):
        raise AuthError("forged", "the access token's signature is not valid")
    try:
        payload = json.loads(_b64decode(parts[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise AuthError("malformed", "the access token's payload is malformed") from None
    claims = _claims(payload)
    if claims.exp <= (time.time() if now is None else now):
        raise AuthError("expired", "the access token has expired; get a fresh one")
    if audience is not None and claims.aud != audience:
        raise AuthError(
            "wrong_audience", "the access token was minted for another audience (claim aud)"
        )
    return claims


def check_lifetime(claims: Claims, max_ttl: float, now: float | None = None) -> None:
    """AuthError unless the token lives at most ``max_ttl`` seconds, both from its issue time
    and from now (a token without ``iat`` is judged from now)."""
    now = time.time() if now is None else now
    lifetime = max(claims.exp - now, claims.exp - claims.iat if claims.iat is not None else 0)
    if lifetime > max_ttl + 1:  # one second: iat and exp are whole seconds
        raise AuthError(
            "too_long",
            f"the access token is valid for longer than this server allows ({max_ttl:.0f} s, "
            "--max-token-ttl); mint shorter-lived tokens",
        )


def _claims(payload: Any) -> Claims:
    """Claims from a payload that carried a valid signature; shapes are still checked because a
    holder of the secret may have typed the payload by hand."""

    def bad(what: str) -> AuthError:
        return AuthError("malformed", f"the access token's {what} is malformed")

    if not isinstance(payload, dict):
        raise bad("payload")
    exp, iat = payload.get("exp"), payload.get("iat")
    sub, mcs, pc, aud = (
        payload.get("sub"),
        payload.get("mcs"),
        payload.get("pc"),
        payload.get("aud"),
    )
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise bad("expiry")
    if iat is not None and (not isinstance(iat, int) or isinstance(iat, bool)):
        raise bad("issue time")
    if sub is not None and (not isinstance(sub, str) or len(sub) > MAX_SUBJECT_CHARS):
        raise bad("subject")
    if mcs is not None and (
        not isinstance(mcs, int | float)
        or isinstance(mcs, bool)
        or not math.isfinite(mcs)
        or not mcs > 0
    ):
        raise bad("call length limit")
    if pc is not None and not isinstance(pc, str):
        raise bad("call binding")
    if aud is not None and (not isinstance(aud, str) or len(aud) > MAX_AUDIENCE_CHARS):
        raise bad("audience")
    return Claims(
        exp=exp, iat=iat, sub=sub, mcs=None if mcs is None else float(mcs), pc=pc, aud=aud
    )


def fingerprint(token: str) -> str:
    """A short stable name for a token (never the token itself, which is a credential)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or AuthError."""
    if header is None:
        raise AuthError(
            "missing", "this server needs an access token: Authorization: Bearer <token>"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("malformed", "the Authorization header must be 'Bearer <token>'")
    return token.strip()
