"""The call API: start or restart a call (``POST /api/offer``), trickle its ICE candidates
(``PATCH /api/offer``), hang it up (``DELETE /api/sessions/{pc_id}``), and the ICE servers a
browser asks for before its offer (``GET /api/ice-servers``).

Request shapes are checked by ``signaling.requests``; who may do what was settled by the access
middleware (``CLAIMS``); here each handler decides only what its call needs: admission, the
call's time limit, its per-call token, and turning a failed set-up into a clear refusal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any, Final

import structlog
from aiohttp import web
from aiortc import RTCSessionDescription

from voicegate.backends.base import BackendError
from voicegate.call import OfferError, PeerOptions, PeerSession
from voicegate.config import ServeConfig
from voicegate.signaling import auth
from voicegate.signaling.admission import RETRY_AFTER_S
from voicegate.signaling.errors import ApiError
from voicegate.signaling.keys import (
    ADMISSION,
    BACKEND,
    CLAIMS,
    CONFIG,
    COUNTERS,
    GATE,
    METRICS,
    RECORDER,
    SESSIONS,
    SETTINGS,
    TOOLS,
)
from voicegate.signaling.requests import CandidatesRequest, OfferRequest, json_object
from voicegate.signaling.turn import TurnConfig

log = structlog.get_logger(__name__)

OFFER_TIMEOUT: Final = 20.0
SESSION_GRACE_S: Final = 60
"""A per-call token outlives its call's maximum length by this much, so hang-up still works."""


def turn_config(config: ServeConfig) -> TurnConfig:
    return TurnConfig(config.turn_urls, config.turn_secret, config.turn_ttl)


def bound_claims(request: web.Request, pc_id: str) -> auth.Claims | None:
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


async def ice_servers(request: web.Request) -> web.Response:
    """ICE servers for a browser that wants relay candidates before it makes its offer."""
    session = f"web-{uuid.uuid4().hex[:16]}"
    return web.json_response(
        {"iceServers": turn_config(request.app[CONFIG]).browser_servers(session)}
    )


async def post_offer(request: web.Request) -> web.Response:
    app = request.app
    offer = OfferRequest.parse(await json_object(request))
    pc_id = offer.pc_id
    if offer.record and RECORDER not in app:
        raise ApiError(400, "recording is not enabled on this server (see --record-dir)")
    claims = request.get(CLAIMS)
    if claims is not None and (claims.pc is not None or pc_id is not None):
        if pc_id is None:
            raise ApiError(403, "a call's session_token cannot start other calls")
        bound_claims(request, pc_id)
    if app[GATE].draining:
        app[COUNTERS]["calls_refused"] += 1
        raise ApiError(
            503, "voicegate is shutting down and takes no new calls", retry_after=RETRY_AFTER_S
        )
    calls = app[SESSIONS]
    live_restart = pc_id is not None and pc_id in calls
    if live_restart and not offer.restart:
        raise ApiError(
            409,
            "this pc_id has a live call; renegotiation is not supported, "
            "send restart_pc: true to replace the connection",
        )
    config = app[CONFIG]
    # A call in progress reconnecting is not a new call; it is never refused for load.
    refusal = None if live_restart else app[ADMISSION].decide(len(calls))
    if refusal is not None:
        app[COUNTERS]["calls_refused"] += 1
        extra = {} if refusal.loop_lag_ms is None else {"loop_lag_ms": refusal.loop_lag_ms}
        raise ApiError(
            503, refusal.message, reason=refusal.reason, retry_after=refusal.retry_after, **extra
        )
    new_id = pc_id if pc_id is not None and offer.restart else f"pc-{uuid.uuid4().hex}"
    turn = turn_config(config)
    recording = (
        app[RECORDER].start_call(new_id, asyncio.get_running_loop().time) if offer.record else None
    )
    call_limit = config.max_call_seconds
    if claims is not None:
        if claims.mcs is not None:
            call_limit = min(call_limit, claims.mcs)
        if claims.pc is not None:  # a restart never outlives the call's own token
            call_limit = min(call_limit, max(1.0, claims.exp - SESSION_GRACE_S - time.time()))
    # The conversation (model stream, history) survives the reconnect.
    kept = await calls.detach(new_id) if live_restart else None
    # A restart of a call this process does not have: another node's (it died or drains).
    stored = (
        await calls.store.adopt(new_id)
        if kept is None and offer.restart and calls.store is not None
        else None
    )
    settings = app[SETTINGS]
    if stored is not None:
        settings = dataclasses.replace(
            settings,
            system_prompt=stored.system_prompt or settings.system_prompt,
            voice_id=stored.voice_id or settings.voice_id,
        )
    session = PeerSession(
        new_id,
        app[BACKEND],
        settings,
        app[TOOLS],
        PeerOptions(
            ice_servers=tuple(turn.server_servers(new_id)),
            relay_only=config.relay_only,
            max_call_seconds=call_limit,
            idle_timeout=config.idle_timeout,
            # metrics and recording observe the call's events
            observers=(app[METRICS],) if recording is None else (app[METRICS], recording),
            reconnect_grace=config.reconnect_grace,
            connect_timeout=config.connect_timeout,
        ),
        on_closed=calls.forget,
        conversation=kept,
    )
    if stored is not None:
        session.conversation.seed(stored.history)
    calls.add(session)  # counted against the limit from now on
    answer = await _accept(app, session, offer.sdp)
    if calls.store is not None:
        calls.store.call_started(session, claims.sub if claims is not None else None)
    app[COUNTERS]["calls_total"] += 1
    result: dict[str, Any] = {
        "sdp": answer.sdp,
        "type": answer.type,
        "pc_id": new_id,
        "iceServers": turn.browser_servers(new_id),
        "recording": offer.record,
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


async def _accept(app: web.Application, session: PeerSession, sdp: str) -> RTCSessionDescription:
    """Negotiate ``session``; on any failure close it and refuse with what went wrong."""
    try:
        # Every task the call starts (conversation, backend, media) inherits this context, so
        # each of their log lines carries the call id.
        with structlog.contextvars.bound_contextvars(pc_id=session.pc_id):
            async with asyncio.timeout(OFFER_TIMEOUT):
                return await session.accept(RTCSessionDescription(sdp=sdp, type="offer"))
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


async def patch_offer(request: web.Request) -> web.Response:
    patch = CandidatesRequest.parse(await json_object(request))
    bound_claims(request, patch.pc_id)
    session = request.app[SESSIONS].get(patch.pc_id)
    if session is None:
        raise ApiError(404, f"no call with pc_id {patch.pc_id!r}")
    try:
        await session.add_candidates(list(patch.candidates))
    except (ValueError, KeyError) as exc:
        raise ApiError(400, f"candidate rejected: {exc}") from None
    return web.json_response({"status": "success"})


async def delete_session(request: web.Request) -> web.Response:
    pc_id = request.match_info["pc_id"]
    bound_claims(request, pc_id)
    session = request.app[SESSIONS].get(pc_id)
    if session is None:
        raise ApiError(404, f"no call with pc_id {pc_id!r}")
    await session.close("hangup")
    return web.Response(status=204)
