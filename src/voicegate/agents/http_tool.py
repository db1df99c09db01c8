"""HTTP tools: a ``[tools.NAME]`` with ``http = { url = ... }`` is answered by the team's service.

voicegate POSTs ``{"tool": NAME, "arguments": {...}, "call_id": PC_ID, "agent": NAME}``; a 2xx
answer whose body is a JSON object is the result. With ``secret_file`` the request carries the
Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) over the
exact body bytes, so the service verifies it with any Standard Webhooks library.

Whatever goes wrong - a timeout, a refused connection, a non-2xx status, a body that is not JSON,
not an object, or larger than ``max_response_bytes`` (read bounded: a huge answer is never held
in memory) - becomes a ``ToolFailed`` with a short sentence the model can say to the caller. The
call never fails for a tool; the details (URL, status) go to the log, not to the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog

from voicegate.agents.spec import ToolDef
from voicegate.conversation.tools import Tool, ToolContext, ToolFailed
from voicegate.signing import parse_secrets, signed_headers

__all__ = ["HttpTool", "http_tool"]

log = structlog.get_logger(__name__)

TIMEOUT_MARGIN_S: Final = 1.0
"""The registry's own time limit runs this much past the HTTP timeout, so the HTTP tool's
clearer "did not answer in time" is what the model hears."""


class HttpTool:
    """The callable behind one HTTP tool; shares the catalog's client session."""

    def __init__(self, tool: ToolDef, session: SessionSource) -> None:
        if tool.http is None:
            raise ValueError(f"tool {tool.name!r} is not an HTTP tool")
        self.name = tool.name
        self.http = tool.http
        self._session = session
        self._keys = (
            parse_secrets(Path(tool.http.secret_file).read_text(encoding="utf-8"))
            if tool.http.secret_file
            else []
        )

    async def __call__(self, context: ToolContext, **arguments: Any) -> dict[str, Any]:
        body = json.dumps(
            {
                "tool": self.name,
                "arguments": arguments,
                "call_id": context.pc_id,
                "agent": context.agent,
            },
            separators=(",", ":"),
        ).encode()
        headers = {"content-type": "application/json", "user-agent": "voicegate-tools"}
        headers.update(self.http.headers)
        if self._keys:
            headers.update(signed_headers(self._keys, body))
        where = {"tool": self.name, "pc_id": context.pc_id, "agent": context.agent}
        try:
            async with self._session.get().post(
                self.http.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.http.timeout_s),
                allow_redirects=False,
            ) as response:
                if not 200 <= response.status < 300:
                    log.warning("http_tool_status", status=response.status, **where)
                    raise ToolFailed(
                        f"the {self.name} service answered with an error (HTTP {response.status})"
                    )
                limit = self.http.max_response_bytes
                raw = await response.content.read(limit + 1)
        except TimeoutError:
            log.warning("http_tool_timeout", timeout_s=self.http.timeout_s, **where)
            raise ToolFailed(
                f"the {self.name} service did not answer within {self.http.timeout_s:g} seconds"
            ) from None
        except aiohttp.ClientError as exc:
            log.warning("http_tool_unreachable", error=repr(exc), **where)
            raise ToolFailed(f"the {self.name} service could not be reached") from None
        if len(raw) > limit:
            log.warning("http_tool_oversized", limit=limit, **where)
            raise ToolFailed(f"the {self.name} service answered with more than {limit} bytes")
        try:
            result = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("http_tool_not_json", **where)
            raise ToolFailed(f"the {self.name} service sent an answer that was not JSON") from None
        if not isinstance(result, dict):
            log.warning("http_tool_not_object", **where)
            raise ToolFailed(f"the {self.name} service sent an answer that was not a JSON object")
        return result


class SessionSource:
    """One aiohttp client session for every HTTP tool, made on first use (inside the running
    loop) and closed with the app."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), raise_for_status=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def http_tool(tool: ToolDef, session: SessionSource) -> Tool:
    """The registry ``Tool`` for an HTTP ``ToolDef``."""
    assert tool.http is not None
    runner = HttpTool(tool, session)

    async def call(context: ToolContext, **arguments: Any) -> dict[str, Any]:
        return await runner(context, **arguments)

    return Tool(
        tool.name,
        tool.description,
        tool.parameters,
        call,
        timeout=max(tool.timeout_s, tool.http.timeout_s + TIMEOUT_MARGIN_S),
        wants_context=True,
        filler_after=tool.filler_after_s,
        filler=tool.filler,
    )
