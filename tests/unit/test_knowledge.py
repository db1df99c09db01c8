"""Local knowledge: passages, SQLite FTS5 ranking (BM25), re-index on change, the tool."""

from __future__ import annotations

import json
import os
from pathlib import Path

from voicegate.agents.knowledge import knowledge_tool, open_knowledge
from voicegate.agents.knowledge_local import LocalIndex, fts_query, split_passages
from voicegate.agents.spec import KnowledgeDef
from voicegate.conversation.tools import ToolRegistry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kb"


def test_passages_are_a_few_sentences() -> None:
    text = "# Title\n\nOne. Two. Three. Four.\n\n- item five\n"
    assert split_passages(text) == ["Title", "One. Two. Three.", "Four.", "item five"]


def test_query_drops_question_words_and_quotes_terms() -> None:
    assert fts_query("What is the refund policy?") == '"refund" OR "policy"'
    assert fts_query('is "it" -- OR NEAR(') == '"near"'
    assert fts_query("what is it") == ""


def test_bm25_ranks_the_matching_passage_first(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("Refunds are paid within five days. Refunds need a receipt.")
    (tmp_path / "b.txt").write_text("Shipping is free over fifty euros. Refunds exist.")
    (tmp_path / "ignored.pdf").write_text("refunds refunds refunds")
    index = LocalIndex(tmp_path)
    best = index.search("how are refunds paid with a receipt", limit=2)
    assert [p.source for p in best] == ["a.md", "b.txt"]
    assert best[0].score > best[1].score
    assert index.search("weather in Paris") == []


def test_reindexes_when_a_file_changes(tmp_path: Path) -> None:
    doc = tmp_path / "faq.md"
    doc.write_text("The office opens at nine.")
    index = LocalIndex(tmp_path)
    assert index.search("office")[0].text == "The office opens at nine."
    assert not index.refresh()  # nothing changed: no rebuild
    doc.write_text("The office opens at ten on Mondays.")
    os.utime(doc, ns=(doc.stat().st_atime_ns, doc.stat().st_mtime_ns + 1_000_000_000))
    assert index.search("office")[0].text == "The office opens at ten on Mondays."
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.txt").write_text("Parking is behind the building.")
    assert index.search("parking")[0].source == "sub/new.txt"
    doc.unlink()
    assert index.search("office") == []


def test_oversized_files_are_skipped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("word " * 300_000)
    (tmp_path / "small.txt").write_text("A small word.")
    index = LocalIndex(tmp_path)
    assert [p.source for p in index.search("word")] == ["small.txt"]
    assert index.skipped == 1


async def test_search_knowledge_tool_over_the_examples() -> None:
    sources = open_knowledge({"handbook": KnowledgeDef(name="handbook", path=str(EXAMPLES))})
    registry = ToolRegistry()
    registry.add(knowledge_tool(list(sources.values())))
    text, ok = await registry.run("search_knowledge", json.dumps({"query": "refund gift cards"}))
    assert ok
    passages = json.loads(text)["passages"]
    assert passages[0]["source"] == "refunds.md"
    assert "Gift cards" in passages[0]["text"]
    assert passages[0]["knowledge"] == "handbook"
    nothing = json.loads((await registry.run("search_knowledge", '{"query": "xyzzy"}'))[0])
    assert nothing["passages"] == [] and "note" in nothing
    empty = json.loads((await registry.run("search_knowledge", '{"query": "  "}'))[0])
    assert "error" in empty
