"""``search_knowledge(query)``: the tool of every agent with knowledge.

Each ``[knowledge.NAME]`` becomes a source: a local folder (``knowledge_local.LocalIndex``,
SQLite FTS5) or an Amazon Bedrock Knowledge Base (the Retrieve API through boto3's
``bedrock-agent-runtime``). One agent's tool searches all of its sources and returns the best
passages, each with its source, as ``{"passages": [{"text", "source", "score", "knowledge"}]}``.
The tool is a plain function, so the registry runs it in a worker thread: SQLite and boto3
block, the event loop never does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import structlog

from voicegate.agents.knowledge_local import LocalIndex, Passage
from voicegate.agents.spec import KnowledgeDef
from voicegate.backends.speech.policy import KNOWLEDGE_TOOL
from voicegate.conversation.tools import Tool

__all__ = [
    "SEARCH_KNOWLEDGE",
    "BedrockKnowledge",
    "KnowledgeSource",
    "LocalKnowledge",
    "knowledge_tool",
    "open_knowledge",
]

log = structlog.get_logger(__name__)

SEARCH_KNOWLEDGE: Final = KNOWLEDGE_TOOL
MAX_QUERY_CHARS: Final = 1000


class KnowledgeSource(Protocol):
    name: str
    max_results: int

    def search(self, query: str, limit: int) -> list[Passage]: ...


class LocalKnowledge:
    """A folder, indexed at construction and re-indexed when its files change."""

    def __init__(self, spec: KnowledgeDef) -> None:
        self.name = spec.name
        self.max_results = spec.max_results
        self.index = LocalIndex(spec.path)
        self.index.refresh()
        log.info(
            "knowledge_indexed", knowledge=spec.name, path=spec.path, skipped=self.index.skipped
        )

    def search(self, query: str, limit: int) -> list[Passage]:
        return self.index.search(query, limit)


class BedrockKnowledge:
    """An Amazon Bedrock Knowledge Base, searched with Retrieve (credentials: default chain)."""

    def __init__(self, spec: KnowledgeDef) -> None:
        import boto3

        self.name = spec.name
        self.max_results = spec.max_results
        self.knowledge_base_id = spec.knowledge_base_id
        kwargs: dict[str, Any] = {}
        if spec.region:
            kwargs["region_name"] = spec.region
        if spec.endpoint_url:
            kwargs["endpoint_url"] = spec.endpoint_url
        if spec.ca_bundle:
            kwargs["verify"] = spec.ca_bundle
        self._client = boto3.client("bedrock-agent-runtime", **kwargs)

    def search(self, query: str, limit: int) -> list[Passage]:
        answer = self._client.retrieve(
            knowledgeBaseId=self.knowledge_base_id,
            retrievalQuery={"text": query},
            retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": limit}},
        )
        passages: list[Passage] = []
        for item in answer.get("retrievalResults", [])[:limit]:
            text = str(item.get("content", {}).get("text", ""))
            location = item.get("location", {})
            source = _location_name(location)
            passages.append(Passage(text, source, float(item.get("score", 0.0))))
        return passages


def _location_name(location: Mapping[str, Any]) -> str:
    for key, field in (
        ("s3Location", "uri"),
        ("webLocation", "url"),
        ("confluenceLocation", "url"),
        ("sharePointLocation", "url"),
        ("salesforceLocation", "url"),
        ("customDocumentLocation", "id"),
    ):
        value = location.get(key, {}).get(field)
        if value:
            return str(value)
    return str(location.get("type", ""))


def open_knowledge(specs: Mapping[str, KnowledgeDef]) -> dict[str, KnowledgeSource]:
    """Every ``[knowledge.*]`` as a source (local folders are indexed here, at start)."""
    sources: dict[str, KnowledgeSource] = {}
    for name, spec in specs.items():
        if spec.knowledge_base_id:
            sources[name] = BedrockKnowledge(spec)
        else:
            sources[name] = LocalKnowledge(spec)
    return sources


def knowledge_tool(sources: Sequence[KnowledgeSource], *, timeout: float = 10.0) -> Tool:
    """The ``search_knowledge`` tool over ``sources`` (an agent's ``knowledge`` list)."""
    chosen = list(sources)

    def search_knowledge(query: str) -> dict[str, Any]:
        query = query.strip()[:MAX_QUERY_CHARS]
        if not query:
            return {"error": "the query is empty"}
        found: list[tuple[Passage, str]] = []
        errors: list[str] = []
        for source in chosen:
            try:
                found.extend((p, source.name) for p in source.search(query, source.max_results))
            except Exception as exc:
                log.warning("knowledge_search_failed", knowledge=source.name, error=str(exc))
                errors.append(f"{source.name}: {type(exc).__name__}")
        found.sort(key=lambda pair: pair[0].score, reverse=True)
        limit = max((s.max_results for s in chosen), default=3)
        result: dict[str, Any] = {
            "passages": [
                {"text": p.text, "source": p.source, "score": p.score, "knowledge": name}
                for p, name in found[:limit]
            ]
        }
        if errors and not found:
            return {"error": "the knowledge search failed (" + "; ".join(errors) + ")"}
        if not found:
            result["note"] = "nothing in the knowledge matches"
        return result

    return Tool(
        SEARCH_KNOWLEDGE,
        "Search the organisation's documents (policies, handbooks, FAQs). Use it for any "
        "question about them and answer from the passages it returns.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "The question, in plain words"}
            },
            "required": ["query"],
        },
        search_knowledge,
        timeout,
    )
