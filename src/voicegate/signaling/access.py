"""Who is asking: the verified token of an API request, or open dev mode for a request that is
truly local.

Without ``--auth-secret`` voicegate serves its API without tokens, but only to requests made on
this machine: the server listens on loopback, the Host header names loopback (a page on
``evil.example`` that rebinds its DNS name to 127.0.0.1 still sends ``Host: evil.example``),
and no proxy forwarded the request (``Forwarded``/``X-Forwarded-*``: a proxy on this machine
would otherwise make every visitor local). Anything else is refused with a 401 that says why.
With a secret every API request needs a token (voicegate's own ``vg1.`` or a JWT:
signaling.jwt_access), and the token's lifetime and audience are checked against the server's
limits, not only its signature and expiry.
"""

from __future__ import annotations

from aiohttp import web

from voicegate.config import ServeConfig
from voicegate.netaddr import host_header_is_loopback, is_loopback_host
from voicegate.signaling import auth, jwt_access

__all__ = [
    "authenticate",
    "local_refusal",
    "prepare",
    "subject_key",
]


def local_refusal(request: web.Request, config: ServeConfig) -> str | None:
    """Why ``request`` is not a request made on this machine (None: it is)."""
    if not is_loopback_host(config.host):
        return f"this server listens on {config.host}, not on loopback"
    if request.remote and not is_loopback_host(request.remote):
        return "the request came from another machine"
    if any(name == "forwarded" or name.startswith("x-forwarded-") for name in _names(request)):
        return "the request came through a proxy (it has Forwarded or X-Forwarded-* headers)"
    host = request.headers.get("Host")
    if not host_header_is_loopback(host):
        shown = "none" if host is None else repr(host[:100])
        return f"its Host header ({shown}) is not loopback (127.0.0.1, localhost or [::1])"
    return None


def _names(request: web.Request) -> list[str]:
    return [name.lower() for name in request.headers]


def authenticate(request: web.Request, config: ServeConfig) -> auth.Claims | None:
    """The request's verified claims, None in open dev mode, or AuthError."""
    if not config.auth_secret:
        why = local_refusal(request, config)
        if why is None:
            return None
        raise auth.AuthError(
            "not_local",
            f"a token is required: {why}. This server has no auth secret, so it serves only "
            "requests made on this machine; configure --auth-secret (or --auth-secret-file) "
            "and send Authorization: Bearer <token>",
        )
    token = auth.bearer(request.headers.get("Authorization"))
    if jwt_access.is_jwt(token):
        claims = jwt_access.keyring_for(config).verify(token)
    else:
        claims = auth.verify(config.auth_secret, token, audience=config.token_audience or None)
    # A call's own session token is minted by the server for that call's length; access
    # tokens are minted by the app, and live no longer than the operator allows.
    limit = (
        config.max_token_ttl
        if claims.pc is None
        else config.max_call_seconds + auth.SESSION_GRACE_S
    )
    auth.check_lifetime(claims, limit)
    return claims


async def prepare(request: web.Request, config: ServeConfig) -> None:
    """Before ``authenticate``: a JWT signed with a key the JWKS cache lacks gets one bounded
    fetch of the identity provider's JWKS (so key rotation needs no restart)."""
    if not config.jwks_url:
        return
    header = request.headers.get("Authorization")
    try:
        token = auth.bearer(header)
    except auth.AuthError:
        return
    await jwt_access.keyring_for(config).prepare(token)


def subject_key(claims: auth.Claims, token: str) -> str:
    """Whose calls these are, for the per-subject limit: the token's subject, or for a token
    without one, the token itself (each such token is its own subject)."""
    if claims.sub is not None:
        return f"sub:{claims.sub}"
    return f"token:{auth.fingerprint(token)}"
