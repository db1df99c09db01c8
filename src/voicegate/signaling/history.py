"""The call history over HTTP: ``GET /api/calls``, ``GET /api/calls/{call_id}`` and the
inspector page ``/calls``.

The API is the operator's, not the callers': it answers only the admin token
(``--admin-token-file``, ``Authorization: Bearer <token>``). A caller's access or session token
never opens it, whatever it is signed with, so no caller sees another call. Without an admin
token the API is open only in open dev mode (no ``--auth-secret``: requests made on this machine),
and refused otherwise. The page itself holds no data; it asks the API with the token the user
types in (kept in the tab's sessionStorage only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import re
from pathlib import Path
from typing import Final

from aiohttp import web

from voicegate.signaling import auth
from voicegate.signaling.access import local_refusal
from voicegate.signaling.errors import ApiError, json_error
from voicegate.signaling.keys import ADMIN_TOKEN, CALL_HISTORY, CONFIG
from voicegate.store import MAX_LIMIT, CallHistory, CallQuery, decode_cursor

__all__ = [
    "admin_refusal",
    "call_audio",
    "call_detail",
    "calls_page",
    "is_admin_path",
    "list_calls",
]

FILTERS: Final = frozenset({"agent", "end_reason", "since", "until", "limit", "cursor"})
_NAME: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_CALL_ID: Final = re.compile(r"[A-Za-z0-9_\-]{1,100}")


def is_admin_path(path: str) -> bool:
    return path == "/api/calls" or path.startswith("/api/calls/")


def admin_refusal(request: web.Request) -> web.Response | None:
    """The 401/403 for a request that may not read the call history (None: it may)."""
    config = request.app[CONFIG]
    expected = request.app.get(ADMIN_TOKEN, "")
    if expected:
        try:
            token = auth.bearer(request.headers.get("Authorization"))
        except auth.AuthError:
            token = ""
        if token and hmac.compare_digest(token.encode(), expected.encode()):
            return None
        response = json_error(
            401,
            "the call history needs the admin token (Authorization: Bearer <token> with the "
            "token in the server's --admin-token-file)",
            reason="admin_token_required",
            auth_required=True,
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="voicegate-admin"'
        return response
    if config.auth_secret:
        return json_error(
            403,
            "the call history API is off: this server has no --admin-token-file",
            reason="admin_api_off",
        )
    why = local_refusal(request, config)
    if why is None:
        return None
    return json_error(401, f"the call history is served only on this machine: {why}")


def _history(request: web.Request) -> CallHistory:
    history = request.app.get(CALL_HISTORY)
    if history is None:
        raise ApiError(404, "this server keeps no call history (--call-store none)")
    return history


def _time(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, f"{name}: {text[:40]!r} is not an RFC 3339 time or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_query(request: web.Request) -> CallQuery:
    params = request.query
    unknown = sorted(set(params) - FILTERS)
    if unknown:
        raise ApiError(
            400,
            f"unknown filter {unknown[0][:40]!r}; filters: {', '.join(sorted(FILTERS))}",
        )
    for key in params:
        if len(params.getall(key)) > 1:
            raise ApiError(400, f"{key} given more than once")
    agent = params.get("agent")
    reason = params.get("end_reason")
    for name, value in (("agent", agent), ("end_reason", reason)):
        if value is not None and not _NAME.fullmatch(value):
            raise ApiError(400, f"{name}: up to 64 letters, digits and _.:-")
    limit_text = params.get("limit", "50")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise ApiError(400, f"limit: a whole number from 1 to {MAX_LIMIT}")
    cursor = None
    if "cursor" in params:
        try:
            cursor = decode_cursor(params["cursor"])
        except ValueError as exc:
            raise ApiError(400, f"cursor: {exc}") from None
    since = _time("since", params["since"]) if "since" in params else None
    until = _time("until", params["until"]) if "until" in params else None
    if since is not None and until is not None and since > until:
        raise ApiError(400, "since is after until")
    return CallQuery(
        agent=agent,
        end_reason=reason,
        since=since,
        until=until,
        limit=int(limit_text),
        cursor=cursor,
    )


async def list_calls(request: web.Request) -> web.Response:
    """Newest first; ``next_cursor`` (absent on the last page) fetches the next page."""
    query = parse_query(request)
    page = await _history(request).list(query)
    body: dict[str, object] = {"calls": [record.summary() for record in page.calls]}
    if page.next_cursor is not None:
        body["next_cursor"] = page.next_cursor
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def call_detail(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    if not _CALL_ID.fullmatch(call_id):
        raise ApiError(400, "a call id is up to 100 letters, digits, _ and -")
    record = await _history(request).get(call_id)
    if record is None:
        raise ApiError(404, f"no call {call_id} in the history")
    return web.json_response(record.to_json(), headers={"Cache-Control": "no-store"})


async def call_audio(request: web.Request) -> web.StreamResponse:
    """A recorded call's ``user.wav`` or ``bot.wav`` from the recording directory (recordings
    that went to S3 are fetched from there). The inspector plays them."""
    call_id, stream = request.match_info["call_id"], request.match_info["stream"]
    if not _CALL_ID.fullmatch(call_id) or stream not in ("user", "bot"):
        raise ApiError(400, "a recording is /api/calls/{call_id}/audio/user or .../bot")
    record = await _history(request).get(call_id)
    if record is None:
        raise ApiError(404, f"no call {call_id} in the history")
    directory = request.app[CONFIG].record_dir
    if not record.recording or not directory or record.recording.startswith("s3://"):
        raise ApiError(404, f"call {call_id} has no recording on this server")
    target = await asyncio.to_thread(_recorded_file, directory, call_id, stream)
    if target is None:
        raise ApiError(404, f"call {call_id} has no {stream}.wav (yet)")
    return web.FileResponse(target, headers={"Cache-Control": "no-store"})


def _recorded_file(directory: str, call_id: str, stream: str) -> Path | None:
    root = Path(directory).resolve()
    target = (root / call_id / f"{stream}.wav").resolve()
    return target if target.is_relative_to(root) and target.is_file() else None


async def calls_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(Path(request.app[CONFIG].web_dir) / "calls.html")
