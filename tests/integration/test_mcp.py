"""MCP servers as tools, against real servers written with the ``mcp`` SDK (stdio and HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import free_port
from voicegate.agents.mcp import McpHub, mcp_tool_name
from voicegate.agents.spec import McpServerDef
from voicegate.conversation.tools import ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
STDIO = ("python", "-m", "tests.support.mcp_servers", "stdio")


def _stdio(**kw: object) -> McpServerDef:
    command = (sys.executable, *STDIO[1:])
    env = (("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "src")])),)
    return McpServerDef(name="tickets", command=command, env=env, cwd=str(ROOT), **kw)  # type: ignore[arg-type]


async def _run(registry: ToolRegistry, name: str, args: dict[str, object]) -> dict[str, object]:
    text, _ok = await registry.run(name, json.dumps(args))
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


def _registry(hub: McpHub, server: str) -> ToolRegistry:
    registry = ToolRegistry()
    for tool in hub.tools(server):
        registry.add(tool)
    return registry


@pytest.fixture
async def stdio_hub() -> AsyncIterator[McpHub]:
    hub = McpHub({"tickets": _stdio(timeout_s=3.0)}, start_timeout=30, backoff_initial=0.05)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.close()


def test_tool_names_map_to_voicegate_rule() -> None:
    assert mcp_tool_name("lookupTicket") == "lookupticket"
    assert mcp_tool_name("tickets.search-all") == "tickets_search_all"
    assert mcp_tool_name("9lives") == "t_9lives"
    assert mcp_tool_name("") == ""
    assert len(mcp_tool_name("x" * 100)) == 64


async def test_stdio_tools_are_discovered_and_called(stdio_hub: McpHub) -> None:
    assert stdio_hub.connected("tickets")
    names = {t.name for t in stdio_hub.tools("tickets")}
    assert {"lookupticket", "slow", "fail", "whoami", "add_tool", "secret"} <= names
    registry = _registry(stdio_hub, "tickets")
    result = await _run(registry, "lookupticket", {"ticket_id": "T-100"})
    assert result == {"ticket_id": "T-100", "status": "open: printer on fire"}


async def test_stdio_failures_are_error_results(stdio_hub: McpHub) -> None:
    registry = _registry(stdio_hub, "tickets")
    failed = await _run(registry, "fail", {})
    assert "the ticket database is down" in str(failed["error"])
    slow = await _run(registry, "slow", {})
    assert "did not answer within 3 s" in str(slow["error"])
    # The connection survives both: the next call works.
    assert (await _run(registry, "lookupticket", {"ticket_id": "T-200"}))["status"] == (
        "closed: password reset"
    )


async def test_allow_list_filters_tools() -> None:
    hub = McpHub({"tickets": _stdio(tools=("lookupTicket", "whoami"))}, start_timeout=30)
    await hub.start()
    try:
        assert sorted(t.name for t in hub.tools("tickets")) == ["lookupticket", "whoami"]
    finally:
        await hub.close()


async def test_list_changed_relists(stdio_hub: McpHub) -> None:
    registry = _registry(stdio_hub, "tickets")
    assert "extra_tool" not in {t.name for t in stdio_hub.tools("tickets")}
    assert (await _run(registry, "add_tool", {})) == {"result": "added"}
    await asyncio.wait_for(stdio_hub.wait_tools("tickets", lambda names: "extra_tool" in names), 30)
    registry = _registry(stdio_hub, "tickets")
    assert await _run(registry, "extra_tool", {}) == {"extra": "yes"}


async def test_crashed_stdio_server_is_restarted(stdio_hub: McpHub) -> None:
    registry = _registry(stdio_hub, "tickets")
    pid = (await _run(registry, "whoami", {}))["pid"]
    assert isinstance(pid, int)
    generation = stdio_hub.generation("tickets")
    os.kill(pid, signal.SIGKILL)
    # Until it is back, its tools answer an error (and the old tool objects stay valid).
    down = await _run(registry, "lookupticket", {"ticket_id": "T-100"})
    assert "error" in down, down
    await asyncio.wait_for(stdio_hub.wait_connected("tickets", after_generation=generation), 60)
    new_pid = (await _run(registry, "whoami", {}))["pid"]
    assert new_pid != pid
    assert (await _run(registry, "lookupticket", {"ticket_id": "T-100"}))["status"] == (
        "open: printer on fire"
    )


async def test_down_server_answers_errors_and_start_is_bounded() -> None:
    bad = McpServerDef(name="broken", command=(sys.executable, "-c", "import sys; sys.exit(3)"))
    hub = McpHub({"broken": bad}, start_timeout=20, backoff_initial=0.05)
    await hub.start()  # returns after the first failed attempt, retrying in the background
    try:
        assert not hub.connected("broken")
        assert hub.tools("broken") == []
    finally:
        await hub.close()


def _start_http(port: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}", MCP_TEST_TOKEN="s3cret")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mcp_servers", "http", str(port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    # uvicorn says so on stderr once it listens; reading it is waiting for the thing itself.
    for line in proc.stderr:
        if "Uvicorn running" in line or "Application startup complete" in line:
            break
        if proc.poll() is not None:
            pytest.fail("the MCP HTTP server did not start")
    return proc


@pytest.fixture
def http_port() -> Iterator[tuple[int, list[subprocess.Popen[str]]]]:
    port = free_port()
    procs = [_start_http(port)]
    try:
        yield port, procs
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def http_server(http_port: tuple[int, list[subprocess.Popen[str]]]) -> str:
    return f"http://127.0.0.1:{http_port[0]}/mcp"


async def test_streamable_http_server_restart_reconnects(
    http_port: tuple[int, list[subprocess.Popen[str]]],
) -> None:
    port, procs = http_port
    spec = McpServerDef(
        name="remote",
        url=f"http://127.0.0.1:{port}/mcp",
        headers=(("Authorization", "Bearer s3cret"),),
    )
    hub = McpHub({"remote": spec}, start_timeout=30, backoff_initial=0.05, backoff_max=0.5)
    await hub.start()
    try:
        registry = _registry(hub, "remote")
        generation = hub.generation("remote")
        procs[0].kill()
        procs[0].wait(10)
        down = await _run(registry, "lookupticket", {"ticket_id": "T-100"})
        assert "error" in down, down
        procs.append(await asyncio.to_thread(_start_http, port))
        await asyncio.wait_for(hub.wait_connected("remote", after_generation=generation), 60)
        back = await _run(registry, "lookupticket", {"ticket_id": "T-100"})
        assert back["status"] == "open: printer on fire"
    finally:
        await hub.close()


async def test_streamable_http_server_with_headers(http_server: str) -> None:
    spec = McpServerDef(
        name="remote", url=http_server, headers=(("Authorization", "Bearer s3cret"),)
    )
    hub = McpHub({"remote": spec}, start_timeout=30)
    await hub.start()
    try:
        assert hub.connected("remote")
        registry = _registry(hub, "remote")
        result = await _run(registry, "lookupticket", {"ticket_id": "T-200"})
        assert result["status"] == "closed: password reset"
        assert (await _run(registry, "add_tool", {})) == {"result": "added"}
        await asyncio.wait_for(hub.wait_tools("remote", lambda n: "extra_tool" in n), 30)
    finally:
        await hub.close()


async def test_streamable_http_bad_token_is_not_connected(http_server: str) -> None:
    spec = McpServerDef(name="remote", url=http_server, headers=(("Authorization", "Bearer no"),))
    hub = McpHub({"remote": spec}, start_timeout=30, backoff_initial=1)
    await hub.start()
    try:
        assert not hub.connected("remote")
    finally:
        await hub.close()
