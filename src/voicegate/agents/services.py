"""The running parts behind the agents file: the MCP hub and the knowledge sources.

They are started once per process when the app starts (MCP servers are spawned or connected,
local knowledge folders indexed off the event loop) and plugged into the ``AgentCatalog``, which
builds each call's tools from them; they are stopped when the app stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import structlog

from voicegate.agents.catalog import AgentCatalog
from voicegate.agents.knowledge import KnowledgeSource, knowledge_tool, open_knowledge
from voicegate.agents.mcp import McpHub
from voicegate.conversation.tools import Tool

__all__ = ["AgentServices", "KnowledgeLibrary"]

log = structlog.get_logger(__name__)


class KnowledgeLibrary:
    """Every ``[knowledge.*]`` source of the file; an agent's tool searches its own list."""

    def __init__(self, sources: Mapping[str, KnowledgeSource]) -> None:
        self._sources = dict(sources)

    def search_tool(self, names: Sequence[str]) -> Tool:
        return knowledge_tool([self._sources[n] for n in names if n in self._sources])


class AgentServices:
    """Starts what the catalog's file declares and plugs it in; ``close`` stops it."""

    def __init__(self, catalog: AgentCatalog) -> None:
        self._catalog = catalog
        self.hub: McpHub | None = None

    async def start(self) -> None:
        spec = self._catalog.spec
        knowledge: KnowledgeLibrary | None = None
        if spec.knowledge:
            # Indexing folders (and building boto3 clients) blocks: never on the loop.
            sources = await asyncio.to_thread(open_knowledge, spec.knowledge)
            knowledge = KnowledgeLibrary(sources)
        if spec.mcp_servers:
            self.hub = McpHub(spec.mcp_servers)
            # Bounded: a server that does not come up keeps retrying in the background.
            await self.hub.start()
        if knowledge is not None or self.hub is not None:
            self._catalog.plug(mcp=self.hub, knowledge=knowledge)
            log.info(
                "agent_services_started",
                mcp_servers=list(spec.mcp_servers),
                knowledge=list(spec.knowledge),
            )

    async def close(self) -> None:
        if self.hub is not None:
            await self.hub.close()
            self.hub = None
