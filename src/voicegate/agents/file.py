"""The agents file: TOML (stdlib ``tomllib``) read into an ``AgentsSpec``, every problem listed.

The parser never stops at the first mistake: a team fixing a file wants the whole list, the way
``voicegate serve --check-config`` reports every flag at once. Unknown keys are problems too (a
misspelt ``sytem_prompt`` would otherwise silently give an agent no prompt). Relative paths
(``secret_file``, knowledge ``path``, an MCP server's ``cwd``) are relative to the file's own
folder, so a file and its neighbours move together.

Python tools (``python = "module:function"``) are imported here, at start, so a missing module
or a name that is not callable stops the start instead of the first call that needs it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from voicegate.agents.python_tool import load_function
from voicegate.agents.spec import (
    DEFAULT_FILLER,
    DEFAULT_FILLER_AFTER_S,
    AgentDef,
    AgentsSpec,
    HttpToolDef,
    KnowledgeDef,
    McpServerDef,
    ToolDef,
)
from voicegate.signing import parse_secrets
from voicegate.sonic import ENDPOINTING

__all__ = ["NAME_PATTERN", "AgentsFileError", "load_agents", "parse_agents", "parse_file"]

NAME_PATTERN: Final = re.compile(r"^[a-z0-9_-]{1,32}$")
"""Names of agents, MCP servers and knowledge sources (bounded: they become metric labels)."""
TOOL_NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""Tool names as the model sees them (the same rule as ``ToolRegistry``)."""
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_PROMPT_BYTES: Final = 40_000

_TOP: Final = frozenset({"default_agent", "agents", "tools", "mcp_servers", "knowledge"})
_AGENT: Final = frozenset(
    {
        "description",
        "system_prompt",
        "voice",
        "greeting",
        "endpointing",
        "max_call_seconds",
        "tools",
        "mcp_servers",
        "knowledge",
        "webhook_url",
    }
)
_TOOL: Final = frozenset(
    {"description", "parameters", "http", "python", "timeout_s", "filler_after_s", "filler"}
)
MAX_FILLER_BYTES: Final = 200
_HTTP: Final = frozenset({"url", "timeout_s", "headers", "secret_file", "max_response_bytes"})
_MCP: Final = frozenset(
    {"command", "url", "env", "cwd", "headers", "tools", "timeout_s", "connect_timeout_s"}
)
_KNOWLEDGE: Final = frozenset(
    {"path", "knowledge_base_id", "region", "endpoint_url", "max_results", "ca_bundle"}
)


class AgentsFileError(ValueError):
    """The agents file has problems; ``problems`` lists every one."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.problems = problems


def load_agents(path: str) -> AgentsSpec:
    """Read and check the agents file at ``path``; raises ``AgentsFileError`` listing every
    problem (each prefixed with ``agents file``)."""
    spec, problems = parse_file(path)
    if spec is None or problems:
        raise AgentsFileError(path, problems)
    return spec


def parse_file(path: str) -> tuple[AgentsSpec | None, list[str]]:
    """The spec of the file at ``path`` and the problems found (the spec is None when the file
    cannot be read or parsed at all)."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        return None, [f"agents file {path!r} cannot be read: {exc.strerror or exc}"]
    if len(raw) > MAX_FILE_BYTES:
        return None, [f"agents file {path!r} is larger than {MAX_FILE_BYTES} bytes"]
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, [f"agents file {path!r} is not UTF-8 text"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"agents file {path!r} is not valid TOML: {exc}"]
    return parse_agents(data, file.resolve().parent)


def parse_agents(data: Mapping[str, Any], base: Path) -> tuple[AgentsSpec | None, list[str]]:
    """The spec of already-parsed TOML ``data`` (paths relative to ``base``) and every
    problem found."""
    p = _Problems()
    p.unknown(data, _TOP, "the file")
    tools = {
        name: tool
        for name, table in p.tables(data, "tools").items()
        if (tool := _tool(p, name, table, base)) is not None
    }
    servers = {
        name: server
        for name, table in p.tables(data, "mcp_servers").items()
        if (server := _mcp(p, name, table, base)) is not None
    }
    knowledge = {
        name: source
        for name, table in p.tables(data, "knowledge").items()
        if (source := _knowledge(p, name, table, base)) is not None
    }
    declared = p.tables(data, "agents")
    agents = {
        name: _agent(p, name, table, tools, servers, knowledge) for name, table in declared.items()
    }
    if not agents and isinstance(data.get("agents", {}), dict) and not data.get("agents"):
        p.add("the file declares no [agents.NAME]")
    default = data.get("default_agent")
    if default is None:
        if len(agents) > 1:
            p.add("default_agent is missing (the agent of a call that names none)")
        default = next(iter(agents), "")
    elif not isinstance(default, str):
        p.add("default_agent must be a string")
        default = ""
    elif default not in agents and default not in data.get("agents", {}):
        p.add(f"default_agent {default!r} is not an agent of the file")
    problems = [f"agents file: {problem}" for problem in p.problems]
    return AgentsSpec(default, agents, tools, servers, knowledge), problems


class _Problems:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def unknown(self, table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
        for key in table:
            if key not in known:
                self.add(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")

    def tables(self, data: Mapping[str, Any], section: str) -> dict[str, dict[str, Any]]:
        value = data.get(section, {})
        if not isinstance(value, dict):
            self.add(f"{section} must be a table of [{section}.NAME]")
            return {}
        pattern = TOOL_NAME_PATTERN if section == "tools" else NAME_PATTERN
        rule = "[a-z][a-z0-9_]{0,63}" if section == "tools" else "[a-z0-9_-]{1,32}"
        found = {}
        for name, table in value.items():
            if not pattern.match(name):
                self.add(f"[{section}.{name}]: the name must match {rule}")
            elif not isinstance(table, dict):
                self.add(f"{section}.{name} must be a table")
            else:
                found[name] = table
        return found

    def text(self, table: Mapping[str, Any], key: str, where: str, limit: int = 4000) -> str:
        value = table.get(key, "")
        if not isinstance(value, str):
            self.add(f"{where}: {key} must be a string")
            return ""
        if len(value.encode()) > limit:
            self.add(f"{where}: {key} is longer than {limit} bytes")
        return value

    def number(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        default: float,
        low: float,
        high: float,
    ) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.add(f"{where}: {key} must be a number")
            return default
        if not low <= value <= high:
            self.add(f"{where}: {key} {value} must be between {low:g} and {high:g}")
        return float(value)

    def names(self, table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(f"{where}: {key} must be a list of strings")
            return ()
        return tuple(value)

    def pairs(self, table: Mapping[str, Any], key: str, where: str) -> tuple[tuple[str, str], ...]:
        value = table.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.add(f"{where}: {key} must be a table of strings")
            return ()
        return tuple(value.items())

    def url(self, url: str, where: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.add(f"{where}: url {url[:100]!r} is not an http(s) URL")

    def path(self, value: str, base: Path) -> str:
        return str(base / value) if value and not Path(value).is_absolute() else value


def _tool(p: _Problems, name: str, table: dict[str, Any], base: Path) -> ToolDef | None:
    where = f"[tools.{name}]"
    p.unknown(table, _TOOL, where)
    description = p.text(table, "description", where)
    if not description.strip():
        p.add(f"{where}: description is missing (the model reads it to know when to call)")
    parameters = table.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        p.add(f'{where}: parameters must be a JSON schema with type = "object"')
        parameters = {"type": "object", "properties": {}}
    elif "properties" in parameters and not isinstance(parameters["properties"], dict):
        p.add(f"{where}: parameters.properties must be a table")
    timeout = p.number(table, "timeout_s", where, 10.0, 0.1, 300)
    filler_after = p.number(table, "filler_after_s", where, DEFAULT_FILLER_AFTER_S, 0, 300)
    filler = p.text(table, "filler", where, MAX_FILLER_BYTES) if "filler" in table else ""
    filler = " ".join(filler.split())
    if "filler" in table and not filler:
        p.add(f"{where}: filler must not be blank (set filler_after_s = 0 for none)")
    filler = filler or DEFAULT_FILLER
    http, python = table.get("http"), table.get("python")
    if (http is None) == (python is None):
        p.add(f'{where}: give exactly one of http = {{ url = ... }} or python = "module:function"')
        return None
    if python is not None:
        if not isinstance(python, str):
            p.add(f'{where}: python must be "module:function"')
            return None
        try:
            load_function(python, base)
        except ValueError as exc:
            p.add(f"{where}: {exc}")
        return ToolDef(
            name,
            description,
            parameters,
            python=python,
            timeout_s=timeout,
            filler_after_s=filler_after,
            filler=filler,
        )
    if not isinstance(http, dict):
        p.add(f"{where}: http must be a table with a url")
        return None
    return ToolDef(
        name,
        description,
        parameters,
        http=_http(p, where, http, base),
        timeout_s=timeout,
        filler_after_s=filler_after,
        filler=filler,
    )


def _http(p: _Problems, where: str, table: dict[str, Any], base: Path) -> HttpToolDef:
    where = f"{where} http"
    p.unknown(table, _HTTP, where)
    url = p.text(table, "url", where)
    if not url:
        p.add(f"{where}: url is missing")
    else:
        p.url(url, where)
    secret_file = p.path(p.text(table, "secret_file", where), base)
    if secret_file:
        _check_secret(p, where, secret_file)
    headers = p.pairs(table, "headers", where)
    for header, _ in headers:
        if header.lower().startswith("webhook-") or header.lower() == "content-type":
            p.add(f"{where}: header {header!r} is set by voicegate")
    return HttpToolDef(
        url,
        p.number(table, "timeout_s", where, 5.0, 0.1, 300),
        headers,
        secret_file,
        int(p.number(table, "max_response_bytes", where, 64 * 1024, 1, 1024 * 1024)),
    )


def _check_secret(p: _Problems, where: str, path: str) -> None:
    try:
        parse_secrets(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        p.add(f"{where}: secret_file {path!r} cannot be read: {exc.strerror or exc}")
    except UnicodeDecodeError:
        p.add(f"{where}: secret_file {path!r} is not UTF-8 text")
    except ValueError as exc:
        p.add(f"{where}: secret_file {path!r}: {exc}")


def _mcp(p: _Problems, name: str, table: dict[str, Any], base: Path) -> McpServerDef | None:
    where = f"[mcp_servers.{name}]"
    p.unknown(table, _MCP, where)
    command = table.get("command")
    url = table.get("url")
    if (command is None) == (url is None):
        p.add(f"{where}: give exactly one of command = [...] (stdio) or url = ... (HTTP)")
    if command is not None and (
        not isinstance(command, list)
        or not command
        or not all(isinstance(part, str) and part for part in command)
    ):
        p.add(f"{where}: command must be a non-empty list of strings")
        command = None
    if url is not None:
        if isinstance(url, str):
            p.url(url, where)
        else:
            p.add(f"{where}: url must be a string")
            url = None
    cwd = p.path(p.text(table, "cwd", where), base)
    if cwd and not Path(cwd).is_dir():
        p.add(f"{where}: cwd {cwd!r} is not a folder")
    return McpServerDef(
        name,
        command=tuple(command or ()),
        url=url or "",
        env=p.pairs(table, "env", where),
        cwd=cwd or (str(base) if command else ""),
        headers=p.pairs(table, "headers", where),
        tools=p.names(table, "tools", where),
        timeout_s=p.number(table, "timeout_s", where, 10.0, 0.1, 300),
        connect_timeout_s=p.number(table, "connect_timeout_s", where, 30.0, 0.1, 300),
    )


def _ca_bundle(p: _Problems, table: dict[str, Any], where: str, base: Path) -> str:
    """A private CA for a Knowledge Base endpoint (relative to the file's folder); must exist."""
    text = p.text(table, "ca_bundle", where)
    if not text:
        return ""
    path = (base / text).resolve()
    if not path.is_file():
        p.add(f"{where}.ca_bundle {text!r} is not a readable file")
    return str(path)


def _knowledge(p: _Problems, name: str, table: dict[str, Any], base: Path) -> KnowledgeDef | None:
    where = f"[knowledge.{name}]"
    p.unknown(table, _KNOWLEDGE, where)
    path = p.path(p.text(table, "path", where), base)
    kb_id = p.text(table, "knowledge_base_id", where)
    if bool(path) == bool(kb_id):
        p.add(f"{where}: give exactly one of path (a local folder) or knowledge_base_id")
    if path and not Path(path).is_dir():
        p.add(f"{where}: path {path!r} is not a folder")
    if kb_id and not re.fullmatch(r"[0-9A-Za-z]{10}", kb_id):
        p.add(f"{where}: knowledge_base_id {kb_id!r} must be 10 letters or digits")
    endpoint = p.text(table, "endpoint_url", where)
    if endpoint:
        p.url(endpoint, where)
    return KnowledgeDef(
        name,
        path=path,
        knowledge_base_id=kb_id,
        region=p.text(table, "region", where),
        endpoint_url=endpoint,
        max_results=int(p.number(table, "max_results", where, 3, 1, 20)),
        ca_bundle=_ca_bundle(p, table, where, base),
    )


def _agent(
    p: _Problems,
    name: str,
    table: dict[str, Any],
    tools: Mapping[str, ToolDef],
    servers: Mapping[str, McpServerDef],
    knowledge: Mapping[str, KnowledgeDef],
) -> AgentDef:
    where = f"[agents.{name}]"
    p.unknown(table, _AGENT, where)

    def refs(key: str, known: Mapping[str, object], section: str) -> tuple[str, ...]:
        names = p.names(table, key, where)
        for ref in names:
            if ref not in known:
                p.add(f"{where}: {key} names {ref!r}, which is not a [{section}.NAME] of the file")
        return names

    endpointing = p.text(table, "endpointing", where)
    if endpointing and endpointing not in ENDPOINTING:
        p.add(f"{where}: endpointing {endpointing!r} must be HIGH, MEDIUM or LOW")
    voice = p.text(table, "voice", where)
    if voice and not voice.isidentifier():
        p.add(f"{where}: voice {voice!r} is not a valid voice id")
    hooks = table.get("webhook_url", [])
    if isinstance(hooks, str):
        hooks = [hooks]
    if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
        p.add(f"{where}: webhook_url must be a URL or a list of URLs")
        hooks = []
    for hook in hooks:
        p.url(hook, f"{where} webhook_url")
    max_call = (
        p.number(table, "max_call_seconds", where, 0.0, 1, 24 * 3600)
        if "max_call_seconds" in table
        else 0.0
    )
    return AgentDef(
        name,
        description=p.text(table, "description", where, 400),
        system_prompt=p.text(table, "system_prompt", where, MAX_PROMPT_BYTES),
        voice=voice,
        greeting=p.text(table, "greeting", where),
        endpointing=endpointing,
        max_call_seconds=max_call,
        tools=refs("tools", tools, "tools"),
        mcp_servers=refs("mcp_servers", servers, "mcp_servers"),
        knowledge=refs("knowledge", knowledge, "knowledge"),
        webhook_url=tuple(hooks),
    )
