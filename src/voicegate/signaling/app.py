"""The HTTP side of voicegate: signaling routes, the web page, health.

Request and response shapes of ``/api/offer`` match Pipecat's SmallWebRTC runner (``pc_id``,
``restart_pc``, ``PATCH`` for trickle candidates), so Pipecat's JS client can talk to voicegate.
Every error is JSON ``{"error": "..."}`` with a 4xx status that says what was wrong; bad input to
one request never touches another call.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from voicegate import __version__
from voicegate.backends.base import Backend, BackendError
from voicegate.call.session import OfferError, PeerOptions, PeerSession
from voicegate.config import ServeConfig, is_loopback
from voicegate.conversation import DEFAULT_SYSTEM_PROMPT, ConversationSettings
from voicegate.conversation.continuation import ContinuationSettings
from voicegate.conversation.tools import ToolRegistry, default_tools
from voicegate.media import audio, ice
from voicegate.media import patch as rtcpatch
from voicegate.observability.metrics import CONTENT_TYPE, GatewayMetrics
from voicegate.observability.recording import Recorder, RecordingOptions
from voicegate.signaling import auth
from voicegate.signaling.admission import Admission, LagMonitor  # issue 5
from voicegate.signaling.ratelimit import RateLimiter
from voicegate.signaling.turn import TurnConfig

log = structlog.get_logger(__name__)

OFFER_TIMEOUT: Final = 20.0
MAX_CANDIDATES: Final = 64
RETRY_AFTER_S: Final = 5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else None
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


_REASONS: Final = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


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


CONFIG: Final = web.AppKey("config", ServeConfig)
SESSIONS: Final = web.AppKey("sessions", dict[str, PeerSession])
BACKEND: Final = web.AppKey("backend", Backend)
TOOLS: Final = web.AppKey("tools", ToolRegistry)
SETTINGS: Final = web.AppKey("settings", ConversationSettings)
STARTED: Final = web.AppKey("started", float)
COUNTERS: Final = web.AppKey("counters", dict[str, int])
METRICS: Final = web.AppKey("metrics", GatewayMetrics)  # issue 7
RECORDER: Final = web.AppKey("recorder", Recorder)  # issue 7; absent unless configured
LAG_TASK: Final = web.AppKey("lag_task", asyncio.Task[None])
ADMISSION: Final = web.AppKey("admission", Admission)  # issue 5: max calls + loop lag


# -- access control (issue 7) ------------------------------------------------------------------


@dataclass(slots=True)
class Gate:
    """Who may come in: whether tokens are needed, the offer rate limit, and the drain flag."""

    auth_required: bool
    limiter: RateLimiter
    draining: bool = False


GATE: Final = web.AppKey("gate", Gate)
CLAIMS: Final = web.RequestKey("claims", auth.Claims)
SESSION_GRACE_S: Final = 60
"""A per-call token outlives its call's maximum length by this much, so hang-up still works."""
_CORS_METHODS: Final = "GET, POST, PATCH, DELETE"
_CORS_HEADERS: Final = "Authorization, Content-Type"


def _same_origin(request: web.Request, origin: str) -> bool:
    from urllib.parse import urlsplit

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
    if request.app[CONFIG].trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last  # the address our own proxy saw; earlier entries are the client's word
    return request.remote or "unknown"


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
            return json_error(
                403,
                "cross-origin requests from this origin are not allowed "
                "(the server's --allowed-origin list)",
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


async def _admit(
    request: web.Request, handler: Handler, gate: Gate, config: ServeConfig
) -> web.StreamResponse:
    if request.method == "POST" and request.path == "/api/offer":
        wait = gate.limiter.check(client_address(request))
        if wait > 0:
            request.app[COUNTERS]["calls_refused"] += 1
            seconds = RateLimiter.retry_after(wait)
            return json_error(
                429,
                f"too many call offers from your address; retry in {seconds} s",
                retry_after=seconds,
            )
    if gate.auth_required:
        try:
            if not config.auth_secret:
                raise auth.AuthError("unconfigured", "this server has no auth secret configured")
            token = auth.bearer(request.headers.get("Authorization"))
            request[CLAIMS] = auth.verify(config.auth_secret, token)
        except auth.AuthError as exc:
            response = json_error(401, exc.message, reason=exc.reason, auth_required=True)
            response.headers["WWW-Authenticate"] = 'Bearer realm="voicegate"'
            return response
    return await handler(request)


def _bound_claims(request: web.Request, pc_id: str) -> auth.Claims | None:
    """The caller's claims if it may touch call ``pc_id`` (None in open dev mode). Only the
    per-call token handed out with that call's answer may: checked before the call is even
    looked up, so a stranger cannot learn which calls exist."""
    claims = request.get(CLAIMS)
    if claims is not None and claims.pc != pc_id:
        raise ApiError(
            403,
            "this token does not belong to that call; use the session_token returned with the "
            "call's answer",
        )
    return claims


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # enforces client_max_size -> 413
    if not raw:
        raise ApiError(400, "the request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def turn_config(config: ServeConfig) -> TurnConfig:
    return TurnConfig(config.turn_urls, config.turn_secret, config.turn_ttl)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(Path(request.app[CONFIG].web_dir) / "index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    """Files of web/ under /static/. aiohttp's own static route answers a missing file with a
    non-JSON 404 from inside the response, where no middleware can see it, hence this."""
    target = await asyncio.to_thread(
        _locate, request.app[CONFIG].web_dir, request.match_info["path"]
    )
    if target is None:
        raise ApiError(404, f"no file {request.path}")
    return web.FileResponse(target)


def _locate(web_dir: str, relative: str) -> Path | None:
    root = Path(web_dir).resolve()
    target = (root / relative).resolve()
    return target if target.is_relative_to(root) and target.is_file() else None


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "backend": app[BACKEND].name,
            "sessions": len(app[SESSIONS]),
            "max_sessions": app[CONFIG].max_sessions,
            "uptime_s": round(time.monotonic() - app[STARTED], 1),
            "calls_total": app[COUNTERS]["calls_total"],
            "loop_lag_ms": round(app[ADMISSION].monitor.lag_ms, 1),  # issue 5
        }
    )


async def readyz(request: web.Request) -> web.Response:
    """Readiness for a load balancer: false while draining or full, so new calls go elsewhere."""
    app = request.app
    if app[GATE].draining:
        return web.json_response(
            {"ready": False, "error": "voicegate is shutting down (draining calls)"}, status=503
        )
    if len(app[SESSIONS]) >= app[CONFIG].max_sessions:
        return web.json_response(
            {"ready": False, "error": "voicegate is at its concurrent call limit"}, status=503
        )
    return web.json_response({"ready": True})


async def ice_servers(request: web.Request) -> web.Response:
    """ICE servers for a browser that wants relay candidates before it makes its offer."""
    session = f"web-{uuid.uuid4().hex[:16]}"
    return web.json_response(
        {"iceServers": turn_config(request.app[CONFIG]).browser_servers(session)}
    )


async def post_offer(request: web.Request) -> web.Response:
    app = request.app
    body = await _json_object(request)
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ApiError(400, "field 'sdp' is required and must be a non-empty string")
    if body.get("type") != "offer":
        raise ApiError(400, "field 'type' must be \"offer\"")
    pc_id = body.get("pc_id")
    if pc_id is not None and (not isinstance(pc_id, str) or not 0 < len(pc_id) <= 128):
        raise ApiError(400, "field 'pc_id' must be a string of 1-128 characters")
    restart = body.get("restart_pc", False)
    if restart is not None and not isinstance(restart, bool):
        raise ApiError(400, "field 'restart_pc' must be a boolean")
    record = body.get("record", False)  # issue 7: per-call recording consent
    if not isinstance(record, bool):
        raise ApiError(400, "field 'record' must be a boolean")
    if record and RECORDER not in app:
        raise ApiError(400, "recording is not enabled on this server (see --record-dir)")
    if not sdp.startswith("v=0"):
        raise ApiError(400, "field 'sdp' is not an SDP offer (it must start with v=0)")
    claims = request.get(CLAIMS)
    if claims is not None and (claims.pc is not None or pc_id is not None):
        if pc_id is None:
            raise ApiError(403, "a call's session_token cannot start other calls")
        _bound_claims(request, pc_id)
    if app[GATE].draining:
        app[COUNTERS]["calls_refused"] += 1
        raise ApiError(
            503, "voicegate is shutting down and takes no new calls", retry_after=RETRY_AFTER_S
        )
    sessions = app[SESSIONS]
    live_restart = pc_id is not None and pc_id in sessions
    if live_restart and not restart:
        raise ApiError(
            409,
            "this pc_id has a live call; renegotiation is not supported, "
            "send restart_pc: true to replace the connection",
        )
    config = app[CONFIG]
    # issue 4: a call in progress reconnecting is not a new call; it is never refused for load.
    refusal = None if live_restart else app[ADMISSION].decide(len(sessions))  # issue 5
    if refusal is not None:
        app[COUNTERS]["calls_refused"] += 1
        extra = {} if refusal.loop_lag_ms is None else {"loop_lag_ms": refusal.loop_lag_ms}
        raise ApiError(
            503, refusal.message, reason=refusal.reason, retry_after=refusal.retry_after, **extra
        )
    new_id = pc_id if pc_id is not None and restart else f"pc-{uuid.uuid4().hex}"
    turn = turn_config(config)
    recording = (
        app[RECORDER].start_call(new_id, asyncio.get_running_loop().time) if record else None
    )
    call_limit = config.max_call_seconds
    if claims is not None:
        if claims.mcs is not None:
            call_limit = min(call_limit, claims.mcs)
        if claims.pc is not None:  # a restart never outlives the call's own token
            call_limit = min(call_limit, max(1.0, claims.exp - SESSION_GRACE_S - time.time()))
    # issue 4: the conversation (model stream, history) survives the reconnect.
    previous = sessions.get(new_id) if live_restart else None
    kept = await previous.detach() if previous is not None else None
    session = PeerSession(
        new_id,
        app[BACKEND],
        app[SETTINGS],
        app[TOOLS],
        PeerOptions(
            ice_servers=tuple(turn.server_servers(new_id)),
            relay_only=config.relay_only,
            max_call_seconds=call_limit,
            idle_timeout=config.idle_timeout,
            metrics=app[METRICS],
            recording=recording,
            reconnect_grace=config.reconnect_grace,
        ),
        on_closed=lambda s: _forget(sessions, s, app[METRICS]),
        conversation=kept,
    )
    sessions[new_id] = session  # counted against the limit from now on
    try:
        # issue 7: every task the call starts (conversation, backend, media) inherits this
        # context, so each of their log lines carries the call id.
        with structlog.contextvars.bound_contextvars(pc_id=new_id):
            async with asyncio.timeout(OFFER_TIMEOUT):
                answer = await session.accept(RTCSessionDescription(sdp=sdp, type="offer"))
    except OfferError as exc:
        await session.close("bad-offer")
        raise ApiError(400, str(exc)) from None
    except BackendError as exc:
        app[METRICS].backend_errors.inc(kind=exc.kind)
        await session.close("backend-failed")
        raise ApiError(
            502, f"the speech backend could not start the call: {exc.message}", kind=exc.kind
        ) from None
    except TimeoutError:
        await session.close("offer-timeout")
        raise ApiError(504, "setting up the call took too long") from None
    except BaseException:
        await session.close("offer-failed")
        raise
    app[COUNTERS]["calls_total"] += 1
    app[METRICS].call_started(new_id)
    result: dict[str, Any] = {
        "sdp": answer.sdp,
        "type": answer.type,
        "pc_id": new_id,
        "iceServers": turn.browser_servers(new_id),
        "recording": record,
    }
    if claims is not None:
        # The one credential that can hang up or restart this call, and nothing else.
        result["session_token"] = (
            request.headers["Authorization"].split(None, 1)[1].strip()
            if claims.pc is not None
            else auth.mint(
                config.auth_secret,
                call_limit + SESSION_GRACE_S,
                subject=claims.sub,
                max_call_seconds=claims.mcs,
                pc_id=new_id,
            )
        )
        log.info("call_admitted", pc_id=new_id, subject=claims.sub)
    return web.json_response(result)


def _forget(
    sessions: dict[str, PeerSession], session: PeerSession, metrics: GatewayMetrics | None = None
) -> None:
    if sessions.get(session.pc_id) is session:
        del sessions[session.pc_id]
    # issue 4: a restart hands the conversation (and its cumulative stats) to the next
    # connection of the same call; that one's end counts the call, once.
    if metrics is not None and session.close_reason != "restart":
        seconds = time.monotonic() - session.created
        metrics.call_ended(session.pc_id, session.close_reason, seconds, session.conversation.stats)


async def patch_offer(request: web.Request) -> web.Response:
    body = await _json_object(request)
    pc_id = body.get("pc_id")
    if not isinstance(pc_id, str) or not pc_id:
        raise ApiError(400, "field 'pc_id' is required and must be a string")
    raw = body.get("candidates")
    if not isinstance(raw, list) or len(raw) > MAX_CANDIDATES:
        raise ApiError(400, f"field 'candidates' must be a list of at most {MAX_CANDIDATES}")
    candidates = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ApiError(400, f"candidates[{i}] must be an object")
        text = item.get("candidate")
        mid = item.get("sdp_mid", item.get("sdpMid"))
        index = item.get("sdp_mline_index", item.get("sdpMLineIndex"))
        if not isinstance(text, str):
            raise ApiError(400, f"candidates[{i}].candidate must be a string")
        if not text.strip():
            continue  # an empty candidate marks the end of gathering
        if mid is not None and not isinstance(mid, str):
            raise ApiError(400, f"candidates[{i}].sdp_mid must be a string")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise ApiError(400, f"candidates[{i}].sdp_mline_index must be an integer")
        try:
            candidate = candidate_from_sdp(text.removeprefix("candidate:"))
        except (ValueError, IndexError, KeyError, AssertionError):  # aiortc asserts on junk
            raise ApiError(400, f"candidates[{i}].candidate is not an ICE candidate") from None
        candidate.sdpMid = mid
        candidate.sdpMLineIndex = index
        candidates.append(candidate)
    _bound_claims(request, pc_id)
    session = request.app[SESSIONS].get(pc_id)
    if session is None:
        raise ApiError(404, f"no call with pc_id {pc_id!r}")
    try:
        await session.add_candidates(candidates)
    except (ValueError, KeyError) as exc:
        raise ApiError(400, f"candidate rejected: {exc}") from None
    return web.json_response({"status": "success"})


async def delete_session(request: web.Request) -> web.Response:
    pc_id = request.match_info["pc_id"]
    _bound_claims(request, pc_id)
    session = request.app[SESSIONS].get(pc_id)
    if session is None:
        raise ApiError(404, f"no call with pc_id {pc_id!r}")
    await session.close("hangup")
    return web.Response(status=204)


# -- observability (issue 7) -----------------------------------------------------------------


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition. Open like /healthz: it shows counts, never call ids or
    content; keep it off the public listener (docs/observability.md)."""
    text = request.app[METRICS].render()
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


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


async def _start_observability(app: web.Application) -> None:
    app[LAG_TASK] = asyncio.get_running_loop().create_task(app[METRICS].watch_loop_lag())


async def _stop_observability(app: web.Application) -> None:
    task = app.get(LAG_TASK)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    recorder = app.get(RECORDER)
    if recorder is not None:
        await recorder.aclose()


async def drain(app: web.Application, timeout: float, cut: asyncio.Event | None = None) -> int:
    """Graceful shutdown, step one: take no new calls (readiness goes false), let the running
    ones finish for up to ``timeout`` seconds (or until ``cut`` is set, e.g. a second signal),
    then end the rest with a message to the browser. Returns how many calls were ended."""
    app[GATE].draining = True
    sessions = app[SESSIONS]
    log.info("draining", calls=len(sessions), timeout_s=timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    cut_wait = asyncio.ensure_future((cut or asyncio.Event()).wait())
    try:
        while sessions and not cut_wait.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            waits = [asyncio.ensure_future(s.closed.wait()) for s in sessions.values()]
            try:
                await asyncio.wait(
                    [*waits, cut_wait], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waits:
                    w.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
    finally:
        cut_wait.cancel()
        await asyncio.gather(cut_wait, return_exceptions=True)
    left = list(sessions.values())
    if left:
        log.info("draining_ends_calls", calls=len(left))
        await asyncio.gather(
            *(s.end("the server is shutting down", "shutdown", "shutdown") for s in left),
            return_exceptions=True,
        )
    return len(left)


async def _shutdown(app: web.Application) -> None:
    sessions = list(app[SESSIONS].values())
    if sessions:
        await asyncio.gather(*(s.close("shutdown") for s in sessions), return_exceptions=True)
    await app[BACKEND].aclose()


def conversation_settings(config: ServeConfig) -> ConversationSettings:
    return ConversationSettings(
        system_prompt=config.system_prompt or DEFAULT_SYSTEM_PROMPT,
        voice_id=config.voice,
        endpointing_sensitivity=config.endpointing or None,
        greeting=config.greeting,
        continuation=ContinuationSettings(  # issue 4
            renew_after_s=config.renew_after,
            force_after_s=config.renew_force_after,
            recovery_attempts=config.recovery_attempts,
        ),
    )


def create_app(
    config: ServeConfig,
    backend: Backend,
    tools: ToolRegistry | None = None,
    settings: ConversationSettings | None = None,
) -> web.Application:
    # issue 5: voicegate's aiortc media path and media ports (idempotent, process-wide)
    rtcpatch.apply()
    ice.configure_media(ice.parse_port_range(config.rtc_ports), config.announced_address or None)
    audio.configure_chunks(config.model_chunk_ms)
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[count_offers, access_control, errors_as_json],
    )
    app[CONFIG] = config
    app[BACKEND] = backend
    app[TOOLS] = tools if tools is not None else default_tools()
    app[SETTINGS] = settings if settings is not None else conversation_settings(config)
    app[SESSIONS] = {}
    app[STARTED] = time.monotonic()
    app[COUNTERS] = {"calls_total": 0, "calls_refused": 0}
    sessions: dict[str, PeerSession] = app[SESSIONS]
    counters = app[COUNTERS]
    app[METRICS] = GatewayMetrics(lambda: len(sessions), lambda: counters)
    app[METRICS].live_stats(lambda: [s.conversation.stats for s in sessions.values()])
    recording = RecordingOptions(
        config.record_dir, config.record_s3_bucket, config.record_s3_prefix
    )
    if recording.enabled:
        app[RECORDER] = Recorder(recording, app[METRICS])
    auth_required = bool(config.auth_secret) or not is_loopback(config.host)
    app[GATE] = Gate(auth_required, RateLimiter(config.offer_rate, config.offer_burst))
    if not auth_required:
        log.warning(
            "open_dev_mode",
            note="no auth secret and listening on loopback: signaling needs no token; "
            "set --auth-secret before exposing voicegate",
        )
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/ice-servers", ice_servers)
    app.router.add_post("/api/offer", post_offer)
    app.router.add_patch("/api/offer", patch_offer)
    app.router.add_delete("/api/sessions/{pc_id}", delete_session)
    app.router.add_get("/static/{path:.+}", static_file)
    app.on_shutdown.append(_shutdown)
    app.on_startup.append(_start_observability)
    app.on_cleanup.append(_stop_observability)
    app[ADMISSION] = Admission(config.max_sessions, config.max_loop_lag_ms, LagMonitor())
    app.on_startup.append(_start_admission)
    app.on_cleanup.append(_stop_admission)
    return app


async def _start_admission(app: web.Application) -> None:
    """issue 5: the loop-lag probe behind admission control."""
    app[ADMISSION].monitor.start()


async def _stop_admission(app: web.Application) -> None:
    await app[ADMISSION].monitor.stop()
