"""JWT access tokens (RFC 7519), next to voicegate's own ``vg1.`` tokens.

A team's backend mints them with any JWT library (HS256 with the server's auth secret), or its
identity provider signs them (RS256 / ES256) and voicegate verifies them against the operator's
public keys (``--jwt-public-key-file``) or the provider's JWKS (``--jwks-url``). The key decides
the algorithm, never the token: the secret verifies HS256 only, an RSA key RS256 only, a P-256
key ES256 only, so ``alg: none`` and algorithm confusion (an HS256 token "signed" with a public
key) have nothing to match and are refused.

Claims: ``exp`` (required), ``sub``, ``iat``, ``nbf``, ``aud`` (a string or a list; checked when
the server has ``--token-audience``), ``agent`` (the one agent the token may call) and
``max_call_seconds`` (voicegate's cap on the calls the token starts; ``mcs`` in ``vg1.``). The
per-call session token voicegate returns with each answer stays a ``vg1.`` token: only voicegate
mints and reads it, so a JWT naming a call (``pc``) is refused.

The JWKS is fetched with a bounded size and time, kept for ``JWKS_TTL_S``, and fetched again
when a token names a key the cached set lacks (the provider rotated), at most once per
``JWKS_MIN_REFRESH_S``, so a flood of made-up key ids cannot turn voicegate into a load on the
provider. A request waits for at most one bounded fetch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from voicegate.config import ServeConfig
from voicegate.config_checks import MAX_TTL_S, MIN_SECRET_CHARS
from voicegate.jwtkeys import PublicKey, keys_from_jwks, keys_from_pem
from voicegate.signaling.auth import (
    MAX_AUDIENCE_CHARS,
    MAX_SUBJECT_CHARS,
    MAX_TOKEN_CHARS,
    VERSION,
    AuthError,
    Claims,
)

__all__ = [
    "AGENT_NAME",
    "JWKS_FETCH_TIMEOUT_S",
    "JWKS_MAX_AGE_S",
    "JWKS_MIN_REFRESH_S",
    "JWKS_TTL_S",
    "LEEWAY_S",
    "MAX_JWKS_BYTES",
    "Keyring",
    "is_jwt",
    "keyring_for",
    "mint",
]

log = structlog.get_logger("voicegate.auth")

LEEWAY_S: Final = 30
"""Clock skew forgiven on ``nbf`` and ``iat`` (an identity provider's clock is not ours)."""
JWKS_TTL_S: Final = 300.0
JWKS_MIN_REFRESH_S: Final = 30.0
JWKS_MAX_AGE_S: Final = 3600.0
"""Keys of a JWKS that could not be fetched again for this long are dropped: a provider that
withdrew a key must not see it honoured forever because its endpoint is unreachable."""
JWKS_FETCH_TIMEOUT_S: Final = 5.0
MAX_JWKS_BYTES: Final = 256 * 1024
AGENT_NAME: Final = re.compile(r"[a-z0-9_-]{1,32}")
_SELF_KEYED: Final = ("jku", "x5u", "jwk", "x5c")
"""Header fields by which a token brings or points at its own key: never trusted."""


def is_jwt(token: str) -> bool:
    """Whether ``token`` is to be read as a JWT (anything not in voicegate's own format)."""
    return not token.startswith(VERSION + ".")


def _segment(text: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def _header(token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise AuthError("malformed", "the access token is malformed")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise AuthError("malformed", "the access token is not a JWT (header.payload.signature)")
    header = _segment(parts[0])
    if not isinstance(header, dict):
        raise AuthError("malformed", "the access token's JWT header is malformed")
    # Other header fields (an identity provider's x5t, say) are ignored, as RFC 7515 asks,
    # unless the token declares them critical: voicegate understands no extension.
    if "crit" in header:
        raise AuthError("malformed", "the access token's JWT header has critical extensions")
    if any(name in header for name in _SELF_KEYED):
        # A key carried or pointed at by the token itself proves nothing.
        raise AuthError("wrong_key", "the access token names its own key; it is not trusted")
    return header


class Keyring:
    """The keys one server verifies JWTs with, and its JWKS cache."""

    def __init__(
        self, secret: str, static: list[PublicKey], jwks_url: str = "", *, audience: str = ""
    ) -> None:
        self._secret = OctKey.import_key(secret) if secret else None
        self._static = static
        self.jwks_url = jwks_url
        self.audience = audience
        self._jwks: dict[str, PublicKey] = {}
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._lock = asyncio.Lock()
        self.fetches = 0

    @classmethod
    def from_config(cls, config: ServeConfig) -> Keyring:
        static: list[PublicKey] = []
        if config.jwt_public_key_file:
            static = keys_from_pem(Path(config.jwt_public_key_file).read_text(encoding="utf-8"))
        return cls(config.auth_secret, static, config.jwks_url, audience=config.token_audience)

    # -- the JWKS ---------------------------------------------------------------------------

    def _wants_fetch(self, kid: object, now: float) -> bool:
        if not self.jwks_url:
            return False
        stale = now - self._fetched_at > JWKS_TTL_S
        unknown = isinstance(kid, str) and kid not in self._jwks
        return (stale or unknown) and now - self._attempted_at >= JWKS_MIN_REFRESH_S

    async def prepare(self, token: str) -> None:
        """Fetch the JWKS first if ``token`` needs a key the cache lacks (or the cache is old);
        never raises, never waits longer than one bounded fetch."""
        if not self.jwks_url or not is_jwt(token):
            return
        try:
            kid = _header(token).get("kid")
        except AuthError:
            return  # refused by verify with its reason
        if not self._wants_fetch(kid, time.monotonic()):
            return
        async with self._lock:
            if self._wants_fetch(kid, time.monotonic()):  # another request may have done it
                await self.refresh()

    async def refresh(self) -> None:
        """One bounded fetch of the JWKS; on failure the keys already held stay."""
        self._attempted_at = time.monotonic()
        self.fetches += 1
        timeout = aiohttp.ClientTimeout(total=JWKS_FETCH_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(
                    self.jwks_url, allow_redirects=False, headers={"Accept": "application/json"}
                ) as response,
            ):
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = await response.content.read(MAX_JWKS_BYTES + 1)
                while len(body) <= MAX_JWKS_BYTES and not response.content.at_eof():
                    more = await response.content.read(MAX_JWKS_BYTES + 1 - len(body))
                    if not more:
                        break
                    body += more
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
            keys, skipped = keys_from_jwks(body)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("jwks_fetch_failed", url=self.jwks_url, error=str(exc)[:200])
            return
        self._jwks = {k.kid: k for k in keys}
        self._fetched_at = time.monotonic()
        log.info("jwks_fetched", url=self.jwks_url, keys=len(keys), skipped=skipped[:10])

    # -- verification -----------------------------------------------------------------------

    def _candidates(self, header: dict[str, Any]) -> Sequence[OctKey | PublicKey]:
        alg, kid = header.get("alg"), header.get("kid")
        if alg == "HS256":
            if self._secret is None:
                raise AuthError("wrong_algorithm", "this server accepts no HS256 tokens")
            return [self._secret]
        if alg not in ("RS256", "ES256"):
            raise AuthError(
                "wrong_algorithm",
                f"the access token's algorithm ({str(alg)[:16]}) is not accepted: use HS256, "
                "RS256 or ES256",
            )
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed", "the access token's kid is malformed")
        if self._jwks and time.monotonic() - self._fetched_at > JWKS_MAX_AGE_S:
            log.warning("jwks_expired", url=self.jwks_url, max_age_s=JWKS_MAX_AGE_S)
            self._jwks = {}
        if kid is not None and kid in self._jwks:
            found = self._jwks[kid]
            return [found] if found.algorithm == alg else []
        static = [k for k in self._static if k.algorithm == alg]
        named = [k for k in static if k.kid == kid]
        if named:
            return named
        if kid is None and self.jwks_url:
            static += [k for k in self._jwks.values() if k.algorithm == alg]
        if kid is not None and not static:
            raise AuthError("unknown_key", "the access token's key (kid) is not known here")
        return static

    def verify(self, token: str, *, now: float | None = None) -> Claims:
        """The claims of a JWT signed by one of this server's keys, or AuthError."""
        header = _header(token)
        keys = self._candidates(header)
        if not keys:
            raise AuthError("wrong_key", "no key of this server verifies this access token")
        alg = str(header["alg"])
        payload: Any = None
        for key in keys:
            raw = key if isinstance(key, OctKey) else key.key
            try:
                payload = jwt.decode(token, raw, algorithms=[alg]).claims
                break
            except JoseError:
                continue
            except (ValueError, TypeError):
                raise AuthError("malformed", "the access token is malformed") from None
        if payload is None:
            raise AuthError("forged", "the access token's signature is not valid")
        return self._claims(payload, time.time() if now is None else now)

    def _claims(self, payload: Any, now: float) -> Claims:
        def bad(what: str) -> AuthError:
            return AuthError("malformed", f"the access token's {what} is malformed")

        def number(name: str) -> int | None:
            value = payload.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(f"claim {name}")
            if not math.isfinite(value):
                raise bad(f"claim {name}")
            return int(value)

        if not isinstance(payload, dict):
            raise bad("payload")
        if "pc" in payload:
            raise AuthError(
                "malformed", "a JWT cannot name a call (claim pc): use the call's session_token"
            )
        if "mcs" in payload:
            raise AuthError("malformed", "in a JWT the call length cap is claim max_call_seconds")
        exp, iat, nbf = number("exp"), number("iat"), number("nbf")
        if exp is None:
            raise AuthError("malformed", "the access token has no expiry (claim exp)")
        if exp <= now:
            raise AuthError("expired", "the access token has expired; get a fresh one")
        if nbf is not None and nbf > now + LEEWAY_S:
            raise AuthError("not_yet_valid", "the access token is not valid yet (claim nbf)")
        if iat is not None and iat > now + LEEWAY_S:
            raise AuthError("malformed", "the access token was issued in the future (claim iat)")
        sub, agent, mcs = payload.get("sub"), payload.get("agent"), payload.get("max_call_seconds")
        if sub is not None and (not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUBJECT_CHARS):
            raise bad("subject")
        if agent is not None and (not isinstance(agent, str) or not AGENT_NAME.fullmatch(agent)):
            raise bad("agent")
        if mcs is not None and (
            isinstance(mcs, bool)
            or not isinstance(mcs, int | float)
            or not math.isfinite(mcs)
            or mcs <= 0
        ):
            raise bad("call length limit")
        aud = payload.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if aud is not None and (
            not isinstance(audiences, list)
            or not all(isinstance(a, str) and len(a) <= MAX_AUDIENCE_CHARS for a in audiences)
        ):
            raise bad("audience")
        if self.audience and self.audience not in (audiences or []):
            raise AuthError(
                "wrong_audience", "the access token was minted for another audience (claim aud)"
            )
        return Claims(
            exp=exp,
            iat=iat,
            sub=sub,
            mcs=None if mcs is None else float(mcs),
            aud=self.audience or (audiences[0] if audiences else None),
            agent=agent,
        )


_KEYRINGS: dict[tuple[str, str, str, str], Keyring] = {}


def keyring_for(config: ServeConfig) -> Keyring:
    """The process's one keyring for this configuration (the JWKS cache is shared by every
    request, and by the apps of one process)."""
    key = (config.auth_secret, config.jwt_public_key_file, config.jwks_url, config.token_audience)
    found = _KEYRINGS.get(key)
    if found is None:
        found = _KEYRINGS[key] = Keyring.from_config(config)
    return found


def mint(
    secret: str,
    ttl: float,
    *,
    subject: str | None = None,
    agent: str | None = None,
    max_call_seconds: float | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 JWT valid for ``ttl`` seconds (``voicegate token``)."""
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
    if agent is not None and not AGENT_NAME.fullmatch(agent):
        raise ValueError("agent must match [a-z0-9_-]{1,32}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iat": issued, "nbf": issued, "exp": issued + int(ttl)}
    for name, value in (
        ("sub", subject),
        ("agent", agent),
        ("max_call_seconds", max_call_seconds),
        ("aud", audience),
    ):
        if value is not None:
            claims[name] = value
    return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, OctKey.import_key(secret))
