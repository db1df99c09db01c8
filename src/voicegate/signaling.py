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
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from voicegate import __version__
from voicegate.backends.base import Backend, BackendError
from voicegate.config import ServeConfig
from voicegate.conversation import DEFAULT_SYSTEM_PROMPT, ConversationSettings
from voicegate.peer import OfferError, PeerOptions, PeerSession
from voicegate.tools import ToolRegistry, default_tools
from voicegate.turn import TurnConfig

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
        }
    )


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
    if not sdp.startswith("v=0"):
        raise ApiError(400, "field 'sdp' is not an SDP offer (it must start with v=0)")
    sessions = app[SESSIONS]
    if pc_id is not None and pc_id in sessions:
        if not restart:
            raise ApiError(
                409,
                "this pc_id has a live call; renegotiation is not supported, "
                "send restart_pc: true to replace the connection",
            )
        await sessions[pc_id].close("restart")
    config = app[CONFIG]
    if len(sessions) >= config.max_sessions:
        app[COUNTERS]["calls_refused"] += 1
        raise ApiError(
            503,
            f"voicegate is at its limit of {config.max_sessions} concurrent calls; retry later",
            retry_after=RETRY_AFTER_S,
        )
    new_id = pc_id if pc_id is not None and restart else f"pc-{uuid.uuid4().hex}"
    turn = turn_config(config)
    session = PeerSession(
        new_id,
        app[BACKEND],
        app[SETTINGS],
        app[TOOLS],
        PeerOptions(
            ice_servers=tuple(turn.server_servers(new_id)),
            relay_only=config.relay_only,
            max_call_seconds=config.max_call_seconds,
        ),
        on_closed=lambda s: _forget(sessions, s),
    )
    sessions[new_id] = session  # counted against the limit from now on
    try:
        async with asyncio.timeout(OFFER_TIMEOUT):
            answer = await session.accept(RTCSessionDescription(sdp=sdp, type="offer"))
    except OfferError as exc:
        await session.close("bad-offer")
        raise ApiError(400, str(exc)) from None
    except BackendError as exc:
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
    return web.json_response(
        {
            "sdp": answer.sdp,
            "type": answer.type,
            "pc_id": new_id,
            "iceServers": turn.browser_servers(new_id),
        }
    )


def _forget(sessions: dict[str, PeerSession], session: PeerSession) -> None:
    if sessions.get(session.pc_id) is session:
        del sessions[session.pc_id]


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
    session = request.app[SESSIONS].get(pc_id)
    if session is None:
        raise ApiError(404, f"no call with pc_id {pc_id!r}")
    await session.close("hangup")
    return web.Response(status=204)


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
    )


def create_app(
    config: ServeConfig,
    backend: Backend,
    tools: ToolRegistry | None = None,
    settings: ConversationSettings | None = None,
) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[errors_as_json])
    app[CONFIG] = config
    app[BACKEND] = backend
    app[TOOLS] = tools if tools is not None else default_tools()
    app[SETTINGS] = settings if settings is not None else conversation_settings(config)
    app[SESSIONS] = {}
    app[STARTED] = time.monotonic()
    app[COUNTERS] = {"calls_total": 0, "calls_refused": 0}
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/ice-servers", ice_servers)
    app.router.add_post("/api/offer", post_offer)
    app.router.add_patch("/api/offer", patch_offer)
    app.router.add_delete("/api/sessions/{pc_id}", delete_session)
    app.router.add_get("/static/{path:.+}", static_file)
    app.on_shutdown.append(_shutdown)
    return app
