"""The declared shape of agents, tools, MCP servers and knowledge sources.

These are plain frozen values with no behaviour, so the parser, the tool runners and the
knowledge indexes can each be written and tested against one agreed shape. Names of agents are
``[a-z0-9_-]{1,32}`` (they become metric labels, so the set is bounded by the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "AgentDef",
    "AgentsSpec",
    "HttpToolDef",
    "KnowledgeDef",
    "McpServerDef",
    "DEFAULT_FILLER",
    "DEFAULT_FILLER_AFTER_S",
    "ToolDef",
]

DEFAULT_FILLER_AFTER_S: Final = 2.0
DEFAULT_FILLER: Final = "One moment, I'm looking that up."


@dataclass(frozen=True, slots=True)
class HttpToolDef:
    """A tool answered by POSTing JSON to ``url``; signed like webhooks when ``secret_file``."""

    url: str
    timeout_s: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()
    secret_file: str = ""
    max_response_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class ToolDef:
    """One ``[tools.NAME]`` entry: exactly one of ``http`` or ``python`` (``module:function``)."""

    name: str
    description: str
    parameters: dict[str, Any]
    http: HttpToolDef | None = None
    python: str = ""
    timeout_s: float = 10.0
    filler_after_s: float = DEFAULT_FILLER_AFTER_S
    """Seconds a call may run before the caller hears ``filler`` (0: never)."""
    filler: str = DEFAULT_FILLER


@dataclass(frozen=True, slots=True)
class McpServerDef:
    """One ``[mcp_servers.NAME]``: a stdio ``command`` voicegate starts, or a Streamable HTTP
    ``url``. ``tools`` is an allow-list of the server's tool names (empty: every tool).
    ``timeout_s`` bounds each tool call, ``connect_timeout_s`` each (re)connection."""

    name: str
    command: tuple[str, ...] = ()
    url: str = ""
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    tools: tuple[str, ...] = ()
    timeout_s: float = 10.0
    connect_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class KnowledgeDef:
    """One ``[knowledge.NAME]``: a local folder of .md/.txt (``path``) or an Amazon Bedrock
    Knowledge Base (``knowledge_base_id``, searched with the Retrieve API)."""

    name: str
    path: str = ""
    knowledge_base_id: str = ""
    region: str = ""
    endpoint_url: str = ""
    max_results: int = 3
    ca_bundle: str = ""  # a CA file for endpoint_url's TLS (a private endpoint, the stand-in)


@dataclass(frozen=True, slots=True)
class AgentDef:
    """One ``[agents.NAME]``. Empty strings and zeros mean "the server's flag decides"."""

    name: str
    description: str = ""
    system_prompt: str = ""
    voice: str = ""
    greeting: str = ""
    endpointing: str = ""
    max_call_seconds: float = 0.0
    tools: tuple[str, ...] = ()
    mcp_servers: tuple[str, ...] = ()
    knowledge: tuple[str, ...] = ()
    webhook_url: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentsSpec:
    """The whole agents file, validated: every name an agent refers to exists."""

    default_agent: str
    agents: dict[str, AgentDef] = field(default_factory=dict)
    tools: dict[str, ToolDef] = field(default_factory=dict)
    mcp_servers: dict[str, McpServerDef] = field(default_factory=dict)
    knowledge: dict[str, KnowledgeDef] = field(default_factory=dict)
