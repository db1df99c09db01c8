"""The agents of a running server: built once at start, asked per call for settings and tools.

An ``Agent`` is an ``AgentDef`` resolved against the server's flags (an empty prompt, voice,
greeting or endpointing in the file means "the flag's"), with its file-declared tools (HTTP and
Python) made once. A call gets ``registry(agent, pc_id)``: those tools plus, at that moment, the
tools of the agent's MCP servers and its knowledge search, bound to the call (so an HTTP tool
tells the team's service which call and agent asks).

MCP servers and knowledge sources are run by their own modules; they plug in here through two
small protocols (``McpTools``, ``KnowledgeTools``) given to ``plug``. MCP tools are read per call
because a server's list can change while voicegate runs (``notifications/tools/list_changed``).

Without ``--agents`` the server's flags make one implicit agent, ``default``, whose tools are the
registry ``create_app`` was given (the clock and calculator unless a caller passed others).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from voicegate.agents.http_tool import SessionSource, http_tool
from voicegate.agents.python_tool import load_function
from voicegate.agents.spec import AgentDef, AgentsSpec, ToolDef
from voicegate.conversation import ConversationSettings
from voicegate.conversation.tools import Tool, ToolContext, ToolRegistry

__all__ = ["IMPLICIT_AGENT", "Agent", "AgentCatalog", "KnowledgeTools", "McpTools"]

log = structlog.get_logger(__name__)

IMPLICIT_AGENT: Final = "default"


class McpTools(Protocol):
    """What the MCP hub gives an agent: the current tools of one ``[mcp_servers.NAME]``
    (already filtered by that server's allow-list; a server that is down answers errors)."""

    def tools(self, server: str) -> list[Tool]: ...


class KnowledgeTools(Protocol):
    """What the knowledge module gives an agent: one ``search_knowledge`` tool searching the
    named ``[knowledge.NAME]`` sources."""

    def search_tool(self, names: Sequence[str]) -> Tool: ...


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    description: str
    settings: ConversationSettings
    max_call_seconds: float
    webhook_url: tuple[str, ...]
    definition: AgentDef
    tools: tuple[Tool, ...]
    """The file-declared tools (HTTP, Python), in the agent's order."""


class AgentCatalog:
    def __init__(
        self,
        spec: AgentsSpec,
        settings: ConversationSettings,
        max_call_seconds: float,
        *,
        base: Path | None = None,
        implicit_tools: ToolRegistry | None = None,
    ) -> None:
        """``settings`` and ``max_call_seconds`` are the server's flags, which an agent's
        empty fields fall back to; ``base`` is the agents file's folder (Python tools)."""
        self.spec = spec
        self.sessions = SessionSource()
        self.mcp: McpTools | None = None
        self.knowledge: KnowledgeTools | None = None
        made = {name: self._tool(tool, base) for name, tool in spec.tools.items()}
        self.agents: dict[str, Agent] = {}
        for name, d in spec.agents.items():
            tools = (
                tuple(implicit_tools.tools())
                if implicit_tools is not None and name == IMPLICIT_AGENT
                else tuple(made[t] for t in d.tools)
            )
            self.agents[name] = Agent(
                name,
                d.description,
                dataclasses.replace(
                    settings,
                    system_prompt=d.system_prompt or settings.system_prompt,
                    voice_id=d.voice or settings.voice_id,
                    greeting=d.greeting or settings.greeting,
                    endpointing_sensitivity=d.endpointing or settings.endpointing_sensitivity,
                ),
                min(d.max_call_seconds, max_call_seconds)
                if d.max_call_seconds
                else max_call_seconds,
                d.webhook_url,
                d,
                tools,
            )

    @classmethod
    def implicit(
        cls, settings: ConversationSettings, max_call_seconds: float, tools: ToolRegistry
    ) -> AgentCatalog:
        """The one agent the server's flags make when there is no agents file."""
        spec = AgentsSpec(IMPLICIT_AGENT, {IMPLICIT_AGENT: AgentDef(IMPLICIT_AGENT)})
        return cls(spec, settings, max_call_seconds, implicit_tools=tools)

    def _tool(self, tool: ToolDef, base: Path | None) -> Tool:
        if tool.http is not None:
            return http_tool(tool, self.sessions)
        return Tool(
            tool.name,
            tool.description,
            tool.parameters,
            load_function(tool.python, base),
            timeout=tool.timeout_s,
            filler_after=tool.filler_after_s,
            filler=tool.filler,
        )

    # -- the seam for MCP servers and knowledge ------------------------------------------------

    def plug(self, *, mcp: McpTools | None = None, knowledge: KnowledgeTools | None = None) -> None:
        """Give the catalog the running MCP hub and/or knowledge module (at app start, before
        the first call). Agents naming servers or knowledge without them get no such tools,
        logged once here."""
        if mcp is not None:
            self.mcp = mcp
        if knowledge is not None:
            self.knowledge = knowledge
        for agent in self.agents.values():
            if agent.definition.mcp_servers and self.mcp is None:
                log.warning("agent_mcp_unavailable", agent=agent.name)
            if agent.definition.knowledge and self.knowledge is None:
                log.warning("agent_knowledge_unavailable", agent=agent.name)

    # -- per call ------------------------------------------------------------------------------

    @property
    def default(self) -> str:
        return self.spec.default_agent

    def get(self, name: str) -> Agent | None:
        return self.agents.get(name)

    def all_tools(self, agent: Agent) -> list[Tool]:
        """The agent's tools now: its own, its MCP servers', its knowledge search."""
        tools = list(agent.tools)
        if self.mcp is not None:
            for server in agent.definition.mcp_servers:
                tools += self.mcp.tools(server)
        if self.knowledge is not None and agent.definition.knowledge:
            tools.append(self.knowledge.search_tool(agent.definition.knowledge))
        return tools

    def registry(self, agent: Agent, pc_id: str) -> ToolRegistry:
        """A registry of ``agent``'s tools bound to call ``pc_id``. A tool whose name another
        already took is skipped (logged): the model must see each name once."""
        registry = ToolRegistry(ToolContext(pc_id, agent.name))
        for tool in self.all_tools(agent):
            if tool.name in registry:
                log.warning("agent_tool_name_taken", agent=agent.name, tool=tool.name)
                continue
            registry.add(tool)
        return registry

    def listing(self, backend: str) -> dict[str, Any]:
        """``GET /api/agents``: names, descriptions, voices, tool names and descriptions and
        knowledge names - never prompts, URLs or headers."""
        return {
            "default_agent": self.default,
            "backend": backend,
            "agents": [
                {
                    "name": agent.name,
                    "description": agent.description,
                    "voice": agent.settings.voice_id,
                    "tools": [
                        {"name": t.name, "description": t.description}
                        for t in self.all_tools(agent)
                    ],
                    "knowledge": list(agent.definition.knowledge),
                }
                for agent in self.agents.values()
            ],
        }

    async def close(self) -> None:
        await self.sessions.close()
