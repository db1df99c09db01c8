"""The layers every request passes, outermost first: ``count_offers`` (the final status of
every offer, for metrics), ``access_control`` (CORS, rate limits, bearer tokens or open dev
mode for /api/: ``signaling.access``) and ``errors_as_json`` (every refusal as a JSON body);
and ``security_headers``, added to every response as it is sent.

Access is decided here, before any handler runs, for every spelling of an /api/ path; handlers
then read the verified claims from ``CLAIMS`` and only decide which call a token may touch.
"""

from __future__ import annotations

import asyncio
from typing import Final
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from voicegate.config import ServeConfig
from voicegate.signaling import auth
from voicegate.signaling.access import authenticate, prepare
from voicegate.signaling.errors import ApiError, Handler, json_error
from voicegate.signaling.history import admin_refusal, is_admin_path
from voicegate.signaling.keys import CLAIMS, CONFIG, COUNTERS, GATE, METRICS, Gate
from voicegate.signaling.proxies import proxy_trust
from voicegate.signaling.ratelimit import RateLimiter

__all__ = [
    "PAGE_POLICY",
    "access_control",
    "client_address",
    "count_offers",
    "errors_as_json",
    "rate_limited",
    "security_headers",
]

log = structlog.get_logger(__name__)

_REASONS: Final = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}
_CORS_METHODS: Final = "GET, POST, PATCH, DELETE"
_CORS_HEADERS: Final = "Authorization, Content-Type"


@web.middleware
async def count_offers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: sees the final status of every offer, whichever layer answered it."""
    if request.path != "/api/offer" or request.method != "POST":
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[METRICS].offers.inc(status=str(status))


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.message, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if not (request.path.startswith("/api/") or exc.status in _REASONS):
            raise
        message = _REASONS.get(exc.status, exc.reason or "request failed").lower()
        if exc.status == 405:
            allowed = exc.headers.get("Allow", "")
            message = f"method {request.method} not allowed here; allowed: {allowed}"
        elif exc.status == 413:
            limit = request.app[CONFIG].max_body_bytes
            message = f"request body too large (limit {limit} bytes)"
        elif exc.status == 404:
            message = f"no route for {request.path}"
        response = json_error(exc.status, message)
        for header in ("Allow", "Retry-After"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request_failed", path=request.path, method=request.method)
        return json_error(500, "internal error; see the server log")


# -- access: CORS, rate limit, tokens ------------------------------------------------------------


def _same_origin(request: web.Request, origin: str) -> bool:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == request.host.lower()


def _cors_headers(config: ServeConfig, origin: str) -> dict[str, str] | None:
    if "*" in config.allowed_origins:
        return {"Access-Control-Allow-Origin": "*"}
    if origin in config.allowed_origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return None


def client_address(request: web.Request) -> str:
    """The address a request counts against (``signaling.proxies`` says whose word counts)."""
    config = request.app[CONFIG]
    trust = proxy_trust(config.trust_forwarded_for, config.trusted_proxies)
    return trust.client(request.remote, request.headers.get("X-Forwarded-For", ""))


@web.middleware
async def access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS, the offer rate limit and bearer tokens for everything under /api/. The page, its
    files, /healthz and /readyz stay open: they start nothing and reveal no secret."""
    resource = request.match_info.route.resource
    routed_to_api = resource is not None and resource.canonical.startswith("/api/")
    if not (request.path.startswith("/api/") or routed_to_api):  # both: no spelling slips by
        return await handler(request)
    app = request.app
    config, gate = app[CONFIG], app[GATE]
    origin = request.headers.get("Origin")
    cors: dict[str, str] = {}
    if origin is not None and not _same_origin(request, origin):
        allowed = _cors_headers(config, origin)
        if allowed is None:
            # The browser hides this refusal's body from the page (no CORS headers: the origin
            # is not trusted with any answer), so the log is where its developer can see why.
            log.warning(
                "cross_origin_refused",
                origin=origin[:200],
                path=request.path,
                method=request.method,
                fix="add the origin with --allowed-origin (VOICEGATE_ALLOWED_ORIGINS)",
            )
            return json_error(
                403,
                f"cross-origin requests from {origin[:200]!r} are not allowed; the server must "
                "list that origin with --allowed-origin",
                reason="origin_not_allowed",
                origin=origin[:200],
            )
        cors = allowed
        if request.method == "OPTIONS":
            return web.Response(
                status=204,
                headers={
                    **cors,
                    "Access-Control-Allow-Methods": _CORS_METHODS,
                    "Access-Control-Allow-Headers": _CORS_HEADERS,
                    "Access-Control-Max-Age": "600",
                },
            )
    try:
        response = await _admit(request, handler, gate, config)
    except web.HTTPException as exc:
        exc.headers.update(cors)
        raise
    response.headers.update(cors)
    return response


_LIMITS: Final = {
    ("POST", "/api/offer"): ("offers", "call offers"),
    ("PATCH", "/api/offer"): ("patches", "candidate updates"),
    ("GET", "/api/ice-servers"): ("ice_servers", "ICE server requests"),
}


def _limiter(request: web.Request, gate: Gate) -> tuple[RateLimiter, str] | None:
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    found = _LIMITS.get((request.method, path))
    if found is None:
        return None
    attribute, what = found
    limiter: RateLimiter = getattr(gate, attribute)
    return limiter, what


def rate_limited(request: web.Request, limiter: RateLimiter, what: str) -> web.Response | None:
    """The 429 (with Retry-After) when the caller's address is over ``limiter``'s rate for
    ``what``; None when it may go on. Also the first hop's check on a node of several workers."""
    wait = limiter.check(client_address(request))
    if wait <= 0:
        return None
    seconds = RateLimiter.retry_after(wait)
    return json_error(
        429,
        f"too many {what} from your address; retry in {seconds} s",
        reason="rate_limited",
        retry_after=seconds,
    )


async def _admit(
    request: web.Request, handler: Handler, gate: Gate, config: ServeConfig
) -> web.StreamResponse:
    limited = _limiter(request, gate)
    if limited is not None:
        limiter, what = limited
        refused = rate_limited(request, limiter, what)
        if refused is not None:
            if limiter is gate.offers:
                request.app[COUNTERS]["calls_refused"] += 1
            return refused
    resource = request.match_info.route.resource
    if is_admin_path(request.path) or (resource is not None and is_admin_path(resource.canonical)):
        # The operator's API: its own token, never a caller's (signaling.history).
        refused = admin_refusal(request)
        return refused if refused is not None else await handler(request)
    await prepare(request, config)
    try:
        claims = authenticate(request, config)
    except auth.AuthError as exc:
        log.info("request_refused", reason=exc.reason, path=request.path)
        response = json_error(401, exc.message, reason=exc.reason, auth_required=True)
        response.headers["WWW-Authenticate"] = 'Bearer realm="voicegate"'
        return response
    if claims is not None:
        request[CLAIMS] = claims
    return await handler(request)


# -- headers of every response --------------------------------------------------------------------

PAGE_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The page runs only its own files: no inline script or style, no other origin to talk to, no
framing. web/index.html keeps to that (tests/integration/test_web_page.py checks it)."""


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the page's address (and any token in it) never goes out as a
    Referer, nothing is sniffed into another type, and pages carry their content policy."""
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if not request.path.startswith("/api/"):
        response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
