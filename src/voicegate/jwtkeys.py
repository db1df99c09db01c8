"""Public keys that verify JWT access tokens an identity provider signs: read from PEM text (the
operator's ``--jwt-public-key-file``) or from a JWKS document (RFC 7517, ``--jwks-url``).

Only keys that can verify voicegate's accepted algorithms are kept: RSA (RS256, at least 2048
bits, so a weak key cannot be planted) and EC P-256 (ES256). Everything else in a JWKS is
skipped and named, so one odd key an identity provider publishes does not take the others down.
This sits at the bottom of the house so that config checks (at start) and the verifier in
signaling read keys the same way.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from typing import Any, Final

from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, RSAKey

__all__ = [
    "ALGORITHM_OF_KEY",
    "MAX_JWKS_KEYS",
    "MIN_RSA_BITS",
    "PublicKey",
    "keys_from_jwks",
    "keys_from_pem",
]

MIN_RSA_BITS: Final = 2048
MAX_JWKS_KEYS: Final = 50
"""More keys than any identity provider publishes at once (they rotate a handful)."""
ALGORITHM_OF_KEY: Final = {"RSA": "RS256", "EC": "ES256"}
"""The one algorithm each kind of key verifies: the key decides, never the token's header."""

_PEM_BLOCK: Final = re.compile(
    r"-----BEGIN PUBLIC KEY-----[A-Za-z0-9+/=\s]+?-----END PUBLIC KEY-----"
)


@dataclass(frozen=True, slots=True)
class PublicKey:
    key: RSAKey | ECKey
    algorithm: str
    kid: str
    """The JWKS's ``kid``; for a PEM key its RFC 7638 thumbprint (a token may name either)."""


def _import(data: str | dict[str, Any], kind: str | None) -> object:
    # A weak key is refused below with a reason the operator sees; the library's own warning
    # would only repeat it in the log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return JWKRegistry.import_key(data, kind)


def _checked(key: object, kid: str | None) -> PublicKey:
    if isinstance(key, RSAKey):
        if key.is_private:
            raise ValueError("a private RSA key was given where only public keys belong")
        bits = key.raw_value.key_size
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {bits} bits: use at least {MIN_RSA_BITS}")
        return PublicKey(key, "RS256", kid or key.thumbprint())
    if isinstance(key, ECKey):
        if key.is_private:
            raise ValueError("a private EC key was given where only public keys belong")
        if key.curve_name != "P-256":
            raise ValueError(f"EC key on curve {key.curve_name}: ES256 needs P-256")
        return PublicKey(key, "ES256", kid or key.thumbprint())
    raise ValueError("only RSA (RS256) and EC P-256 (ES256) public keys are accepted")


def keys_from_pem(text: str) -> list[PublicKey]:
    """Every ``PUBLIC KEY`` block of ``text`` (several: rotation by adding the next key before
    the identity provider uses it), or ValueError saying which block is wrong."""
    blocks = _PEM_BLOCK.findall(text)
    if not blocks:
        raise ValueError("no '-----BEGIN PUBLIC KEY-----' block found")
    keys: list[PublicKey] = []
    for number, block in enumerate(blocks, 1):
        keys.append(_from_pem_block(block, number))
    return keys


def _from_pem_block(block: str, number: int) -> PublicKey:
    if "PRIVATE" in block:
        raise ValueError(f"key {number}: a private key was given where only public keys belong")
    for kind in ("RSA", "EC"):
        try:
            key = _import(block, kind)
        except (JoseError, ValueError, TypeError):
            continue
        try:
            return _checked(key, None)
        except ValueError as exc:
            raise ValueError(f"key {number}: {exc}") from None
    raise ValueError(f"key {number}: not an RSA or EC public key")


def keys_from_jwks(body: bytes) -> tuple[list[PublicKey], list[str]]:
    """The usable keys of a JWKS document and what was skipped (and why); ValueError when the
    document itself is not a JWKS."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the JWKS is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no 'keys' list")
    keys: list[PublicKey] = []
    skipped: list[str] = []
    for entry in entries[:MAX_JWKS_KEYS]:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(kid, str) or not 0 < len(kid) <= 256:
            skipped.append("a key without a kid")
            continue
        if entry.get("use", "sig") != "sig" or entry.get("kty") not in ALGORITHM_OF_KEY:
            skipped.append(f"{kid[:64]}: not a signing RSA or EC key")
            continue
        declared = entry.get("alg")
        if declared is not None and declared != ALGORITHM_OF_KEY[str(entry["kty"])]:
            skipped.append(f"{kid[:64]}: algorithm {str(declared)[:16]} is not accepted")
            continue
        try:
            keys.append(_checked(_import(entry, None), kid))
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            skipped.append(f"{kid[:64]}: {exc}")
    if len(entries) > MAX_JWKS_KEYS:
        skipped.append(f"{len(entries) - MAX_JWKS_KEYS} keys over the limit of {MAX_JWKS_KEYS}")
    return keys, skipped
