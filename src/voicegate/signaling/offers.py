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

from voicegate.agents.catalog import Agent, AgentCatalog
from voicegate.backends.base import BackendError
from voicegate.call import CallInfo, CallObserver, OfferError, PeerOptions, PeerSession
from voicegate.config import ServeConfig
from voicegate.media import ice
from voicegate.signaling import access, auth
from voicegate.signaling.admission import RETRY_AFTER_S
from voicegate.signaling.calls import CALL_COUNTED, CALL_SEQ_HEADER, StoredCall
from voicegate.signaling.errors import ApiError
from voicegate.signaling.keys import (
    ADMISSION,
    AGENTS,
    BACKEND,
    CALL_LOG,
    CANDIDATES,
    CLAIMS,
    CONFIG,
    COUNTERS,
    GATE,
    METRICS,
    RECORDER,
    SESSIONS,
)
from voicegate.signaling.middleware import client_address
from voicegate.signaling.requests import CandidatesRequest, OfferRequest, json_object
from voicegate.signaling.turn import TurnConfig

__all__ = [
    "bound_claims",
    "choose_agent",
    "delete_session",
    "ice_servers",
    "list_agents",
    "patch_offer",
    "post_offer",
    "subject_of",
    "turn_config",
]

log = structlog.get_logger(__name__)

OFFER_TIMEOUT: Final = 20.0
_BACKEND_REFUSALS: Final = {
    "access_denied": "the model service refused the request",
    "throttled": "the model service is busy; retry later",
    "validation": "the model service refused the call's set-up",
    "local_model_unavailable": "the speech model is not available on this server",
}
"""What a caller is told when the backend cannot start a call: the kind, never the service's
own text (account ids, role names, model ids), which goes to the log only."""


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
    """ICE servers for a browser that wants relay candidates before it makes its offer. TURN
    credentials carry the token's subject and expire no later than the token."""
    claims = request.get(CLAIMS)
    servers = turn_config(request.app[CONFIG]).browser_servers(
        f"web-{uuid.uuid4().hex[:16]}",
        subject=claims.sub if claims is not None else None,
        not_after=claims.exp if claims is not None else None,
    )
    return web.json_response({"iceServers": servers})


async def list_agents(request: web.Request) -> web.Response:
    """``GET /api/agents``: the agents a caller may choose (a token naming an agent sees only
    that one). Names, descriptions, voices and tool names only: never prompts or URLs."""
    app = request.app
    listing = app[AGENTS].listing(app[BACKEND].name)
    claims = request.get(CLAIMS)
    if claims is not None and claims.agent is not None:
        listing["agents"] = [a for a in listing["agents"] if a["name"] == claims.agent]
        listing["default_agent"] = claims.agent
    return web.json_response(listing)


def choose_agent(
    catalog: AgentCatalog, asked: str | None, claims: auth.Claims | None, current: str | None
) -> Agent:
    """The agent of this offer. A restart or adoption keeps its call's agent (``current``);
    a new call gets the one it names, else its token's, else the server's default. A token
    naming an agent allows only that one (403 for another); an unknown name is a 404."""
    bound = claims.agent if claims is not None else None
    if current is not None and catalog.get(current) is not None:
        if asked is not None and asked != current:
            raise ApiError(
                409, f"this call talks to agent {current!r}; a restart keeps it", reason="agent"
            )
        name = current
    else:
        name = asked or bound or catalog.default
    if bound is not None and name != bound:
        raise ApiError(
            403,
            f"this token may call only agent {bound!r}",
            reason="agent_not_allowed",
        )
    agent = catalog.get(name)
    if agent is None:
        raise ApiError(
            404,
            f"no agent named {name!r} on this server (see GET /api/agents)",
            reason="unknown_agent",
        )
    return agent


def _check_caller(request: web.Request, offer: OfferRequest) -> None:
    """What the caller's token allows this offer: an access token starts new calls only, a
    call's session token only restarts its own call while that call is live."""
    claims = request.get(CLAIMS)
    if claims is None:
        return
    if claims.pc is None:
        if offer.pc_id is not None:
            bound_claims(request, offer.pc_id)  # an access token touches no existing call
        return
    if not offer.restart or offer.pc_id is None:
        raise ApiError(
            403,
            "a call's session_token cannot start calls; it can only restart its own call "
            "(restart_pc: true with its pc_id) or hang it up",
            reason="session_token",
        )
    bound_claims(request, offer.pc_id)


def _check_still_live(request: web.Request, offer: OfferRequest, adoptable: bool) -> None:
    """A session token restarts its call only while that call lives: here, or (in a cluster)
    as a call another node kept and this one can adopt."""
    claims = request.get(CLAIMS)
    if claims is None or claims.pc is None:
        return
    if offer.pc_id not in request.app[SESSIONS] and not adoptable:
        raise ApiError(
            403,
            "this call has ended, so its session_token can no longer restart it; start a new "
            "call with an access token",
            reason="call_ended",
        )


def _filter_candidates(request: web.Request, sdp: str) -> ice.FilteredSdp:
    filtered = ice.filter_sdp(sdp, request.app[CANDIDATES])
    if len(filtered.keys) > ice.MAX_REMOTE_CANDIDATES:
        raise ApiError(
            400,
            f"the offer names {len(filtered.keys)} ICE candidates; at most "
            f"{ice.MAX_REMOTE_CANDIDATES} per call (offer and PATCHes together)",
            reason="too_many_candidates",
        )
    if filtered.ignored:
        log.info("candidates_ignored", candidates=[f"{a}: {r}" for a, r in filtered.ignored])
    return filtered


def _refuse_new_call(app: web.Application, status: int, message: str, **extra: Any) -> ApiError:
    app[COUNTERS]["calls_refused"] += 1
    return ApiError(status, message, **extra)


def _check_capacity(request: web.Request, live_restart: bool) -> str | None:
    """Refuse a new call the server or the caller's subject has no room for; returns the
    subject key the new call will count against (None in open dev mode)."""
    app = request.app
    if app[GATE].draining:
        raise _refuse_new_call(
            app, 503, "voicegate is shutting down and takes no new calls", retry_after=RETRY_AFTER_S
        )
    if live_restart:  # a call in progress reconnecting is never refused for load
        return None
    calls = app[SESSIONS]
    refusal = app[ADMISSION].decide(len(calls))
    if refusal is not None:
        extra = {} if refusal.loop_lag_ms is None else {"loop_lag_ms": refusal.loop_lag_ms}
        raise _refuse_new_call(
            app,
            503,
            refusal.message,
            reason=refusal.reason,
            retry_after=refusal.retry_after,
            **extra,
        )
    claims = request.get(CLAIMS)
    if claims is None:
        return None
    subject = access.subject_key(claims, auth.bearer(request.headers.get("Authorization")))
    limit = app[CONFIG].max_calls_per_subject
    if limit and calls.held_by(subject) >= limit:
        raise _refuse_new_call(
            app,
            429,
            f"this token's subject already holds {limit} live calls (the server's limit per "
            "subject); hang one up first",
            reason="subject_limit",
            retry_after=RETRY_AFTER_S,
        )
    return subject


async def _check_subject_in_cluster(request: web.Request) -> None:
    """``--max-calls-per-subject`` over the whole cluster, not just this process: the calls the
    subject holds on every node (the directory's count; unknown while Redis is down, when the
    local count above is all there is)."""
    app = request.app
    limit = app[CONFIG].max_calls_per_subject
    store = app[SESSIONS].store
    claims = request.get(CLAIMS)
    # The store knows calls by the token's ``sub`` (a token without one is its own subject,
    # and such a token's calls are few: the local count holds them).
    if not limit or store is None or claims is None or claims.sub is None:
        return
    held = await store.subject_calls(claims.sub)
    if held is not None and held >= limit:
        raise _refuse_new_call(
            app,
            429,
            f"this token's subject already holds {limit} live calls in the cluster (the "
            "server's limit per subject); hang one up first",
            reason="subject_limit",
            retry_after=RETRY_AFTER_S,
        )


PENDING_RETRY_AFTER_S: Final = 2
"""Seconds a caller refused for pending offers waits: honest calls connect within about one."""


def _check_pending(request: web.Request, subject: str | None) -> str:
    """Refuse a new call while too many answered calls have not connected (a flood of offers
    that never complete ICE would otherwise hold every slot until ``--connect-timeout``);
    returns the key the call's offer counts against until it connects."""
    app = request.app
    config = app[CONFIG]
    key = subject if subject is not None else f"address:{client_address(request)}"
    total, mine = app[SESSIONS].pending(key)
    if config.max_pending_offers and total >= config.max_pending_offers:
        log.warning("offer_refused_pending", pending=total, limit=config.max_pending_offers)
        raise _refuse_new_call(
            app,
            503,
            f"{total} calls on this server are still connecting (its limit of "
            f"{config.max_pending_offers}); retry shortly",
            reason="pending_offers",
            retry_after=PENDING_RETRY_AFTER_S,
        )
    if config.max_pending_per_subject and mine >= config.max_pending_per_subject:
        log.warning("offer_refused_pending_subject", pending=mine)
        raise _refuse_new_call(
            app,
            429,
            f"this caller already has {mine} calls still connecting (the server's limit per "
            "caller); let them connect or hang them up first",
            reason="pending_per_subject",
            retry_after=PENDING_RETRY_AFTER_S,
        )
    return key


async def post_offer(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    offer = OfferRequest.parse(await json_object(request, config.request_timeout))
    if offer.record and RECORDER not in app:
        raise ApiError(400, "recording is not enabled on this server (see --record-dir)")
    _check_caller(request, offer)
    filtered = _filter_candidates(request, offer.sdp)
    pc_id = offer.pc_id
    calls = app[SESSIONS]
    live_restart = pc_id is not None and pc_id in calls
    # A restart of a call this process does not have: another node's (it died or drains).
    stored = (
        await calls.store.adopt(pc_id)
        if pc_id is not None and not live_restart and offer.restart and calls.store is not None
        else None
    )
    _check_still_live(request, offer, adoptable=stored is not None)
    ended = calls.ended(pc_id) if pc_id is not None and offer.restart and stored is None else None
    if ended is not None:
        raise ApiError(
            410,
            f"the call {pc_id} has ended ({ended}); start a new call with an offer without pc_id",
            reason="call_ended",
        )
    if live_restart and not offer.restart:
        raise ApiError(
            409,
            "this pc_id has a live call; renegotiation is not supported, "
            "send restart_pc: true to replace the connection",
        )
    current = (
        calls[pc_id].options.info.agent
        if live_restart and pc_id is not None
        else (stored.agent if stored is not None else None)
    )
    agent = choose_agent(app[AGENTS], offer.agent, request.get(CLAIMS), current or None)
    if not offer.restart:  # an adoption is a call the subject holds (the directory counts it)
        # The one check that waits (on Redis) comes first: nothing may wait between the
        # capacity check and ``calls.add``, or a burst of offers all pass it before any counts.
        await _check_subject_in_cluster(request)
    subject = _check_capacity(request, live_restart)
    pending_key = _check_pending(request, subject) if not offer.restart else None
    new_id = pc_id if pc_id is not None and offer.restart else f"pc-{uuid.uuid4().hex}"
    if live_restart:
        subject = calls.subject(new_id)
    turn = turn_config(config)
    recording = (
        app[RECORDER].start_call(new_id, asyncio.get_running_loop().time) if offer.record else None
    )
    claims = request.get(CLAIMS)
    call_limit = agent.max_call_seconds
    if claims is not None:
        if claims.mcs is not None:
            call_limit = min(call_limit, claims.mcs)
        if claims.pc is not None:  # a restart never outlives the call's own token
            call_limit = min(call_limit, max(1.0, claims.exp - auth.SESSION_GRACE_S - time.time()))
    # The conversation (model stream, history) survives the reconnect.
    kept = await calls.detach(new_id) if live_restart else None
    settings = agent.settings
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
        app[AGENTS].registry(agent, new_id),
        PeerOptions(
            ice_servers=tuple(turn.server_servers(new_id)),
            relay_only=config.relay_only,
            max_call_seconds=call_limit,
            idle_timeout=config.idle_timeout,
            # metrics, recording and the call log (history, webhooks, traces) observe the
            # call's events
            observers=_observers(app, recording),
            info=CallInfo(
                subject=subject_of(claims, stored),
                agent=agent.name,
                backend=app[BACKEND].name,
                adopted=stored is not None,
                recorded=recording is not None,
            ),
            reconnect_grace=config.reconnect_grace,
            connect_timeout=config.connect_timeout,
        ),
        on_closed=calls.forget,
        conversation=kept,
    )
    if stored is not None:
        session.conversation.seed(stored.history)
    seq = calls.add(session, subject, filtered.keys, pending_key)  # counted against limits now
    request[CALL_COUNTED] = True
    answer = await _accept(app, session, filtered.sdp, agent.name)
    if calls.store is not None:
        calls.store.call_started(session, claims.sub if claims is not None else None)
    app[COUNTERS]["calls_total"] += 1
    result: dict[str, Any] = {
        "sdp": answer.sdp,
        "type": answer.type,
        "pc_id": new_id,
        "recording": offer.record,
        # A restart that carried the conversation on (this process's live call, or one adopted
        # from the cluster's store); False when the pc_id started afresh (e.g. a restarted
        # server no longer had it), so the page can tell the user the history is gone.
        "resumed": kept is not None or stored is not None,
        "ignored_candidates": [{"address": a, "reason": r} for a, r in filtered.ignored],
    }
    session_exp: float | None = None
    if claims is not None:
        # The one credential that can hang up or restart this call, and nothing else.
        if claims.pc is not None:
            result["session_token"] = auth.bearer(request.headers.get("Authorization"))
            session_exp = claims.exp
        else:
            lifetime = call_limit + auth.SESSION_GRACE_S
            result["session_token"] = auth.mint(
                config.auth_secret,
                lifetime,
                subject=claims.sub,
                max_call_seconds=claims.mcs,
                pc_id=new_id,
                audience=config.token_audience or None,
            )
            session_exp = time.time() + lifetime
        log.info("call_admitted", pc_id=new_id, subject=claims.sub, agent=agent.name)
    result["iceServers"] = turn.browser_servers(
        new_id, subject=claims.sub if claims is not None else None, not_after=session_exp
    )
    return web.json_response(result, headers={CALL_SEQ_HEADER: str(seq)})


def _observers(app: web.Application, recording: CallObserver | None) -> tuple[CallObserver, ...]:
    chosen: list[CallObserver] = [app[METRICS]]
    if recording is not None:
        chosen.append(recording)
    call_log = app.get(CALL_LOG)
    if call_log is not None:
        chosen.append(call_log)
    return tuple(chosen)


def subject_of(claims: auth.Claims | None, stored: StoredCall | None) -> str | None:
    if claims is not None and claims.sub is not None:
        return claims.sub
    return stored.subject if stored is not None else None


async def _accept(
    app: web.Application, session: PeerSession, sdp: str, agent: str
) -> RTCSessionDescription:
    """Negotiate ``session``; on any failure close it and refuse with what went wrong."""
    try:
        # Every task the call starts (conversation, backend, media) inherits this context, so
        # each of their log lines carries the call id and its agent.
        with structlog.contextvars.bound_contextvars(pc_id=session.pc_id, agent=agent):
            async with asyncio.timeout(OFFER_TIMEOUT):
                return await session.accept(RTCSessionDescription(sdp=sdp, type="offer"))
    except OfferError as exc:
        await session.close("bad-offer")
        raise ApiError(400, str(exc)) from None
    except BackendError as exc:
        app[METRICS].backend_errors.inc(kind=exc.kind)
        log.warning("backend_refused_call", pc_id=session.pc_id, kind=exc.kind, error=exc.message)
        await session.close("backend-failed")
        message = _BACKEND_REFUSALS.get(
            exc.kind, "the model service could not start the call; retry later"
        )
        extra = {"retry_after": RETRY_AFTER_S} if exc.retryable else {}
        raise ApiError(502, message, kind=exc.kind, **extra) from None
    except TimeoutError:
        await session.close("offer-timeout")
        raise ApiError(504, "setting up the call took too long") from None
    except BaseException:
        await session.close("offer-failed")
        raise


async def patch_offer(request: web.Request) -> web.Response:
    """Trickled candidates: each checked like the offer's, all counted against the call."""
    app = request.app
    patch = CandidatesRequest.parse(await json_object(request, app[CONFIG].request_timeout))
    bound_claims(request, patch.pc_id)
    session = app[SESSIONS].get(patch.pc_id)
    if session is None:
        raise ApiError(404, f"no call with pc_id {patch.pc_id!r}")
    policy = app[CANDIDATES]
    keys = {ice.candidate_key(c) for c in patch.candidates}
    total = app[SESSIONS].add_candidates(patch.pc_id, keys, ice.MAX_REMOTE_CANDIDATES)
    if total > ice.MAX_REMOTE_CANDIDATES:
        raise ApiError(
            400,
            f"this call would have {total} ICE candidates; at most "
            f"{ice.MAX_REMOTE_CANDIDATES} per call (offer and PATCHes together)",
            reason="too_many_candidates",
        )
    kept, ignored = [], []
    for candidate in patch.candidates:
        reason = policy.refusal(candidate.ip)
        if reason is None:
            kept.append(candidate)
        else:
            ignored.append({"address": candidate.ip, "reason": reason})
    if ignored:
        log.info("candidates_ignored", pc_id=patch.pc_id, candidates=ignored)
    try:
        await session.add_candidates(kept)
    except (ValueError, KeyError) as exc:
        raise ApiError(400, f"candidate rejected: {exc}") from None
    return web.json_response({"status": "success", "ignored": ignored})


async def delete_session(request: web.Request) -> web.Response:
    pc_id = request.match_info["pc_id"]
    bound_claims(request, pc_id)
    session = request.app[SESSIONS].get(pc_id)
    if session is None:
        raise ApiError(404, f"no call with pc_id {pc_id!r}")
    await session.close("hangup")
    return web.Response(status=204)
