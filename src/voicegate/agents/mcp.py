"""MCP servers as tools: stdio servers voicegate starts and supervises, Streamable HTTP servers.

One supervisor task per server keeps a connection (the official ``mcp`` SDK's ``Client``) and
the server's current tool list. A stdio server that exits is restarted with exponential backoff;
an HTTP server whose connection drops is reconnected the same way. Meanwhile its tools stay
offered (the model keeps its plan) and answer an error result the model can speak about: a tool
never raises into a call. ``start()`` waits a bounded time for every server's first attempt, so
a bad server delays the start by at most ``start_timeout`` and is then retried in the background.

MCP tool names are free-form; voicegate's are ``[a-z][a-z0-9_]{0,63}``, so each name is mapped
(lowercased, other characters to ``_``) and the original name is what is sent to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import httpx2
import mcp.types as mcp_types
import structlog
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost

from voicegate.agents.spec import McpServerDef
from voicegate.conversation.tools import Tool

__all__ = ["MAX_TOOLS_PER_SERVER", "McpHub", "mcp_tool_name"]

log = structlog.get_logger(__name__)

MAX_TOOLS_PER_SERVER: Final = 128
_MAX_LIST_PAGES: Final = 16
_STDERR_LINE_BYTES: Final = 2048
# Lines of a server's stderr logged per connection; the rest are counted, not logged, so a
# chatty server cannot flood voicegate's log.
_STDERR_LINES_PER_RUN: Final = 1000
_CLOSE_TIMEOUT_S: Final = 5.0
# JSON-RPC errors a live server answers with (bad arguments, unknown tool): no reconnect.
_LIVE_PEER_ERRORS: Final = frozenset(
    {mcp_types.INVALID_PARAMS, mcp_types.METHOD_NOT_FOUND, mcp_types.INVALID_REQUEST}
)
_VALID: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def mcp_tool_name(name: str) -> str:
    """voicegate's name for an MCP tool: ``getTicket`` -> ``getticket``, ``a.b-c`` -> ``a_b_c``.

    Empty when nothing usable remains (such a tool is skipped, with a log line).
    """
    mapped = re.sub(r"[^a-z0-9_]", "_", name.lower())[:64]
    if mapped and not mapped[0].isalpha():
        mapped = ("t_" + mapped)[:64]
    return mapped if _VALID.match(mapped) else ""


@dataclass(slots=True)
class _Server:
    """The live state of one server: its connection (while up) and its last known tools."""

    spec: McpServerDef
    client: Client | None = None
    tools: list[Tool] = field(default_factory=list)
    generation: int = 0
    last_error: str = ""
    attempted: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    relist_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stderr_dropped: int = 0


class McpHub:
    """Every configured MCP server, connected and supervised for the life of the process."""

    def __init__(
        self,
        servers: Mapping[str, McpServerDef],
        *,
        start_timeout: float = 15.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self._servers = {name: _Server(spec) for name, spec in servers.items()}
        self._start_timeout = start_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._closing = False

    async def start(self) -> None:
        """Start every supervisor; wait (at most ``start_timeout``) for each first attempt."""
        for name, server in self._servers.items():
            if server.task is None:
                server.task = asyncio.create_task(self._supervise(server), name=f"mcp-{name}")
        waits = [asyncio.create_task(s.attempted.wait()) for s in self._servers.values()]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=self._start_timeout)
        for task in pending:
            task.cancel()
        for name, server in self._servers.items():
            if server.client is None:
                log.warning(
                    "mcp_server_not_ready",
                    server=name,
                    error=server.last_error or f"no answer within {self._start_timeout:g} s",
                    retrying=True,
                )

    async def close(self) -> None:
        """Stop every supervisor (and with it every stdio server process)."""
        self._closing = True
        tasks = [s.task for s in self._servers.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def names(self) -> list[str]:
        return list(self._servers)

    def tools(self, server_name: str) -> list[Tool]:
        """The server's current tools, filtered by its allow-list (last known while it is down)."""
        return list(self._servers[server_name].tools)

    def connected(self, server_name: str) -> bool:
        return self._servers[server_name].client is not None

    def generation(self, server_name: str) -> int:
        """How many times the server has been connected (a restart increments it)."""
        return self._servers[server_name].generation

    async def wait_connected(self, server_name: str, *, after_generation: int = 0) -> None:
        """Return once the server is connected with a generation above ``after_generation``."""
        server = self._servers[server_name]
        async with server.changed:
            await server.changed.wait_for(
                lambda: server.client is not None and server.generation > after_generation
            )

    async def wait_tools(self, server_name: str, predicate: Any) -> None:
        """Return once ``predicate(names of the server's tools)`` holds."""
        server = self._servers[server_name]
        async with server.changed:
            await server.changed.wait_for(lambda: predicate({t.name for t in server.tools}))

    # -- supervision ------------------------------------------------------------------------

    async def _supervise(self, server: _Server) -> None:
        delay = self._backoff_initial
        name = server.spec.name
        while not self._closing:
            connected_before = server.generation
            try:
                await self._run_once(server)
                reason = "connection lost"
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing or (task is not None and task.cancelling()):
                    raise
                # A cancellation from inside the SDK's own task groups (its transport ending),
                # not close(): a lost connection like any other.
                reason = "connection cancelled"
            except BaseException as exc:  # noqa: BLE001 - a server must never stop the supervisor
                reason = _describe(exc)
            server.last_error = reason
            await self._set_client(server, None)
            server.attempted.set()
            if self._closing:  # close() may have run while this task awaited
                return  # type: ignore[unreachable]
            if server.generation > connected_before:
                delay = self._backoff_initial
            log.warning("mcp_server_down", server=name, error=reason, retry_in_s=round(delay, 3))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def _run_once(self, server: _Server) -> None:
        spec = server.spec
        server.lost.clear()
        stderr_task: asyncio.Task[None] | None = None
        errlog: TextIO | None = None
        if spec.command:
            read_fd, write_fd = os.pipe()
            errlog = os.fdopen(write_fd, "w")
            stderr_task = asyncio.create_task(self._pump_stderr(server, read_fd))
            params = StdioServerParameters(
                command=spec.command[0],
                args=list(spec.command[1:]),
                env=dict(spec.env) or None,
                cwd=spec.cwd or None,
            )
            client = Client(
                stdio_client(params, errlog=errlog),
                cache=None,
                read_timeout_seconds=spec.timeout_s,
                message_handler=self._message_handler(server),
            )
            # The SDK passes errlog straight to the child: voicegate reads the other end.
            client_cm: Any = _with_errlog(client, errlog)
        else:
            http = httpx2.AsyncClient(
                headers=dict(spec.headers), timeout=httpx2.Timeout(spec.timeout_s, read=300.0)
            )
            client = Client(
                _http_transport(spec.url, http),
                cache=None,
                read_timeout_seconds=spec.timeout_s,
                message_handler=self._message_handler(server),
            )
            client_cm = _closing_http(client, http)
        try:
            async with asyncio.timeout(spec.connect_timeout_s):
                entered = await client_cm.__aenter__()
        except BaseException:
            if stderr_task is not None:
                stderr_task.cancel()
            raise
        try:
            if errlog is not None:
                errlog.close()  # the child holds its own copy; EOF then means it exited
            await self._relist(server, entered)
            await self._set_client(server, entered)
            log.info(
                "mcp_server_connected",
                server=spec.name,
                protocol=entered.protocol_version,
                tools=[t.name for t in server.tools],
                generation=server.generation,
            )
            watchers: list[asyncio.Task[Any]] = [asyncio.create_task(server.lost.wait())]
            if stderr_task is not None:
                watchers.append(stderr_task)
            watchers.append(asyncio.create_task(self._listen(server, entered)))
            try:
                await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in watchers:
                    if task is not stderr_task:
                        task.cancel()
                for task in watchers:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        log.info(
                            "mcp_watch_ended",
                            server=spec.name,
                            error=_describe(task.exception() or RuntimeError()),
                        )
        finally:
            await self._set_client(server, None)
            # Bounded: a transport winding down against a dead peer must not stall the restart.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await client_cm.__aexit__(None, None, None)
            if stderr_task is not None:
                stderr_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await stderr_task

    async def _listen(self, server: _Server, client: Client) -> None:
        """Re-list the tools whenever the server says they changed.

        2026-era servers send the change on a ``subscriptions/listen`` stream; earlier ones
        send ``notifications/tools/list_changed`` unasked (``_message_handler`` sets
        ``relist_wanted``). Returns when the stream is lost (the connection is then redone).
        """
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    await self._relist(server, client)
            return
        except (ListenNotSupportedError, MCPError):
            pass
        except SubscriptionLost:
            return
        while True:
            await server.relist_wanted.wait()
            server.relist_wanted.clear()
            await self._relist(server, client)

    def _message_handler(self, server: _Server) -> Any:
        async def handle(message: Any) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                server.relist_wanted.set()

        return handle

    async def _relist(self, server: _Server, client: Client) -> None:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None or len(listed) >= MAX_TOOLS_PER_SERVER:
                break
        server.tools = self._convert(server, listed)
        async with server.changed:
            server.changed.notify_all()

    def _convert(self, server: _Server, listed: list[mcp_types.Tool]) -> list[Tool]:
        allow = set(server.spec.tools)
        tools: list[Tool] = []
        seen: set[str] = set()
        for remote in listed[:MAX_TOOLS_PER_SERVER]:
            if allow and remote.name not in allow:
                continue
            local = mcp_tool_name(remote.name)
            if not local or local in seen:
                log.warning(
                    "mcp_tool_skipped",
                    server=server.spec.name,
                    tool=remote.name,
                    why="no usable name" if not local else f"name {local!r} taken",
                )
                continue
            seen.add(local)
            schema = dict(remote.input_schema or {})
            if schema.get("type") != "object":
                schema = {"type": "object", "properties": {}}
            tools.append(
                Tool(
                    local,
                    remote.description or remote.title or remote.name,
                    schema,
                    self._caller(server, remote.name),
                    # The call bounds itself (an error result); this timeout is a backstop.
                    server.spec.timeout_s + 1.0,
                )
            )
        return tools

    def _caller(self, server: _Server, remote_name: str) -> Any:
        async def call(**arguments: Any) -> dict[str, Any]:
            client = server.client
            name = server.spec.name
            if client is None:
                return {"error": f"the {name} service is unavailable right now, try again later"}
            try:
                async with asyncio.timeout(server.spec.timeout_s):
                    result = await client.call_tool(remote_name, arguments)
            except TimeoutError:
                return {"error": f"{remote_name} did not answer within {server.spec.timeout_s:g} s"}
            except MCPError as exc:
                if exc.code not in _LIVE_PEER_ERRORS:
                    server.lost.set()  # the transport, not the tool: reconnect
                return {"error": f"{remote_name} failed: {exc}"}
            except Exception as exc:
                server.lost.set()
                return {"error": f"{remote_name} failed: {_describe(exc)}"}
            return _result_value(result)

        return call

    async def _set_client(self, server: _Server, client: Client | None) -> None:
        if client is not None:
            server.generation += 1
            server.attempted.set()
        server.client = client
        async with server.changed:
            server.changed.notify_all()

    async def _pump_stderr(self, server: _Server, read_fd: int) -> None:
        """Log the server's stderr line by line (bounded); return at EOF (the server exited)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_STDERR_LINE_BYTES)
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        logged = 0
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # a line over the limit: drop what is buffered
                    line = b"<line too long>\n"
                    with contextlib.suppress(Exception):
                        await reader.read(_STDERR_LINE_BYTES)
                if not line:
                    return
                if logged < _STDERR_LINES_PER_RUN:
                    logged += 1
                    text = line.decode(errors="replace").rstrip()
                    log.info("mcp_server_stderr", server=server.spec.name, line=text)
                else:
                    server.stderr_dropped += 1
        finally:
            transport.close()


def _result_value(result: mcp_types.CallToolResult) -> dict[str, Any]:
    """An MCP tool result as a JSON object for the model."""
    texts = [c.text for c in result.content if isinstance(c, mcp_types.TextContent)]
    others = [c.type for c in result.content if not isinstance(c, mcp_types.TextContent)]
    text = "\n".join(texts)
    if result.is_error:
        return {"error": text or "the tool failed"}
    if result.structured_content is not None:
        return dict(result.structured_content)
    if len(texts) == 1:
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if isinstance(value, dict):
                return value
    value_out: dict[str, Any] = {"result": text}
    if others:
        value_out["omitted_content"] = others
    return value_out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _http_transport(url: str, http: httpx2.AsyncClient) -> Any:
    from mcp.client.streamable_http import streamable_http_client

    return streamable_http_client(url, http_client=http)


class _with_errlog:
    """The client's context, closing voicegate's copy of the stderr pipe if it never starts."""

    def __init__(self, client: Client, errlog: TextIO) -> None:
        self._client = client
        self._errlog = errlog

    async def __aenter__(self) -> Client:
        try:
            return await self._client.__aenter__()
        except BaseException:
            self._errlog.close()
            raise

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.__aexit__(*exc)


class _closing_http:
    """The client's context plus the HTTP client it owns."""

    def __init__(self, client: Client, http: httpx2.AsyncClient) -> None:
        self._client = client
        self._http = http

    async def __aenter__(self) -> Client:
        try:
            return await self._client.__aenter__()
        except BaseException:
            await self._http.aclose()
            raise

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._client.__aexit__(*exc)
        finally:
            await self._http.aclose()
