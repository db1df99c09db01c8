"""Typed bodies of the call API, parsed and checked in one place.

Handlers receive an ``OfferRequest`` or a ``CandidatesRequest`` whose fields already have the
right types and bounds; every shape problem becomes a 400 with a message naming the field, here
and nowhere else. The field names follow Pipecat's SmallWebRTC runner (``pc_id``,
``restart_pc``, ``sdp_mid``/``sdpMid``), so Pipecat's JS client can talk to voicegate.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from voicegate.agents.file import NAME_PATTERN
from voicegate.signaling.errors import ApiError

MAX_CANDIDATES: Final = 64
"""Candidates one PATCH may carry."""
MAX_PC_ID_CHARS: Final = 128


async def json_object(request: web.Request, timeout: float) -> dict[str, Any]:
    """The request body as a JSON object: declared as JSON (415 otherwise: a form or text/plain
    body is what a cross-site page can send without asking), complete within ``timeout``
    seconds (408) and no larger than client_max_size (aiohttp: 413)."""
    if request.content_type != "application/json":
        declared = request.headers.get("Content-Type", "none")
        raise ApiError(
            415,
            f"the request body must be JSON sent as Content-Type: application/json "
            f"(got {declared[:100]!r})",
        )
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s") from None
    if not raw:
        raise ApiError(400, "the request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


@dataclass(frozen=True, slots=True)
class OfferRequest:
    """``POST /api/offer``: a new call, or (``restart`` with ``pc_id``) a new connection for a
    call whose connection dropped."""

    sdp: str
    pc_id: str | None = None
    restart: bool = False
    record: bool = False
    agent: str | None = None
    """The agent the caller asks for (None: the token's, else the server's default)."""

    @classmethod
    def parse(cls, body: dict[str, Any]) -> OfferRequest:
        sdp = body.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            raise ApiError(400, "field 'sdp' is required and must be a non-empty string")
        if body.get("type") != "offer":
            raise ApiError(400, "field 'type' must be \"offer\"")
        pc_id = body.get("pc_id")
        if pc_id is not None and (
            not isinstance(pc_id, str) or not 0 < len(pc_id) <= MAX_PC_ID_CHARS
        ):
            raise ApiError(400, f"field 'pc_id' must be a string of 1-{MAX_PC_ID_CHARS} characters")
        restart = body.get("restart_pc", False)
        if restart is not None and not isinstance(restart, bool):
            raise ApiError(400, "field 'restart_pc' must be a boolean")
        record = body.get("record", False)  # per-call recording consent
        if not isinstance(record, bool):
            raise ApiError(400, "field 'record' must be a boolean")
        agent = body.get("agent")
        nested = body.get("requestData")
        if agent is None and isinstance(nested, dict):
            # Pipecat's SmallWebRTCTransport sends the app's own fields (its webrtcRequestParams
            # requestData) nested under "requestData" of the offer body.
            agent = nested.get("agent")
        if agent is not None and (not isinstance(agent, str) or not NAME_PATTERN.match(agent)):
            raise ApiError(
                400, "field 'agent' must be an agent name ([a-z0-9_-]{1,32})", reason="bad_agent"
            )
        if not sdp.startswith("v=0"):
            raise ApiError(400, "field 'sdp' is not an SDP offer (it must start with v=0)")
        return cls(sdp=sdp, pc_id=pc_id, restart=bool(restart), record=record, agent=agent)


@dataclass(frozen=True, slots=True)
class CandidatesRequest:
    """``PATCH /api/offer``: trickled ICE candidates for a live call. An empty candidate
    (end of gathering) is accepted and left out."""

    pc_id: str
    candidates: tuple[RTCIceCandidate, ...]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> CandidatesRequest:
        pc_id = body.get("pc_id")
        if not isinstance(pc_id, str) or not pc_id:
            raise ApiError(400, "field 'pc_id' is required and must be a string")
        raw = body.get("candidates")
        if not isinstance(raw, list) or len(raw) > MAX_CANDIDATES:
            raise ApiError(400, f"field 'candidates' must be a list of at most {MAX_CANDIDATES}")
        candidates = []
        for i, item in enumerate(raw):
            candidate = _candidate(i, item)
            if candidate is not None:
                candidates.append(candidate)
        return cls(pc_id=pc_id, candidates=tuple(candidates))


def _candidate(i: int, item: Any) -> RTCIceCandidate | None:
    if not isinstance(item, dict):
        raise ApiError(400, f"candidates[{i}] must be an object")
    text = item.get("candidate")
    mid = item.get("sdp_mid", item.get("sdpMid"))
    index = item.get("sdp_mline_index", item.get("sdpMLineIndex"))
    if not isinstance(text, str):
        raise ApiError(400, f"candidates[{i}].candidate must be a string")
    if not text.strip():
        return None  # an empty candidate marks the end of gathering
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
    return candidate
