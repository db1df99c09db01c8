"""A folder of .md/.txt files searched with SQLite FTS5 (BM25), re-indexed when files change.

Files are cut into passages of a few sentences, each kept with its source file, so an answer
can be spoken as is and say where it came from. The index lives in memory; every search first
compares the folder's (path, size, mtime) list with the indexed one, which is a directory walk,
not a read, and rebuilds only when it differs. Searches run in a worker thread (the tool
registry runs sync tools there), never on the event loop. Sizes are bounded: files, bytes per
file, passages, so a folder pointed at the wrong place cannot eat the server's memory.

Only the standard library: the stand-in serves its Retrieve API from the same index.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["LocalIndex", "Passage", "fts_query", "split_passages"]

SUFFIXES: Final = (".md", ".txt", ".markdown")
MAX_FILES: Final = 2000
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_PASSAGES: Final = 50_000
SENTENCES_PER_PASSAGE: Final = 3
MAX_PASSAGE_CHARS: Final = 600

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that say "this is a question" rather than what it is about: left out of the search so
# a question matches on its subject.
_STOPWORDS: Final = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "should",
        "tell",
        "the",
        "to",
        "us",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "about",
        "be",
        "have",
        "has",
        "there",
        "this",
        "that",
        "these",
        "those",
        "any",
    ]
)


@dataclass(frozen=True, slots=True)
class Passage:
    text: str
    source: str
    score: float


def split_passages(text: str) -> list[str]:
    """Paragraphs cut into runs of a few sentences (markdown markers dropped)."""
    passages: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [re.sub(r"^\s*(#+|[-*+]|\d+[.)])\s+", "", ln).strip() for ln in block.splitlines()]
        paragraph = " ".join(ln for ln in lines if ln)
        if not paragraph:
            continue
        sentences = [s for s in _SENTENCE_END.split(paragraph) if s]
        run: list[str] = []
        for sentence in sentences:
            run.append(sentence)
            joined = " ".join(run)
            if len(run) >= SENTENCES_PER_PASSAGE or len(joined) >= MAX_PASSAGE_CHARS:
                passages.append(joined[:MAX_PASSAGE_CHARS])
                run = []
        if run:
            passages.append(" ".join(run)[:MAX_PASSAGE_CHARS])
    return passages


def fts_query(question: str) -> str:
    """An FTS5 MATCH expression for free text: its words, quoted, ORed (empty: nothing to ask)."""
    words = [w.lower() for w in _WORD.findall(question)]
    terms = [w for w in words if w not in _STOPWORDS] or []
    unique = list(dict.fromkeys(terms))[:32]
    return " OR ".join(f'"{w}"' for w in unique)


class LocalIndex:
    """One folder's passages in an in-memory FTS5 table."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        # porter: "take" finds "takes", as a spoken question rarely uses the document's form.
        self._db.execute(
            "CREATE VIRTUAL TABLE passages USING fts5("
            "text, source UNINDEXED, tokenize='porter unicode61')"
        )
        self._lock = threading.Lock()
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None
        self.skipped = 0  # files over the bounds, counted (and left out)
        self.builds = 0

    def refresh(self) -> bool:
        """Re-index when the folder's files changed. Returns True when it rebuilt."""
        with self._lock:
            files = self._scan()
            fingerprint = tuple((str(p), size, mtime) for p, size, mtime in files)
            if fingerprint == self._fingerprint:
                return False
            self._rebuild(files)
            self._fingerprint = fingerprint
            return True

    def search(self, question: str, limit: int = 3) -> list[Passage]:
        """The best passages for ``question`` (BM25, best first); re-indexes first if needed."""
        self.refresh()
        match = fts_query(question)
        if not match:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT text, source, bm25(passages) AS rank FROM passages "
                "WHERE passages MATCH ? ORDER BY rank LIMIT ?",
                (match, max(1, min(limit, 20))),
            ).fetchall()
        # bm25() is lower-is-better and negative; a score reads better the other way round.
        return [Passage(text, source, -float(rank)) for text, source, rank in rows]

    def _scan(self) -> list[tuple[Path, int, int]]:
        found: list[tuple[Path, int, int]] = []
        skipped = 0
        for root, dirs, names in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if not name.lower().endswith(SUFFIXES) or name.startswith("."):
                    continue
                path = Path(root) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                if st.st_size > MAX_FILE_BYTES or len(found) >= MAX_FILES:
                    skipped += 1
                    continue
                found.append((path, st.st_size, st.st_mtime_ns))
        self.skipped = skipped
        return found

    def _rebuild(self, files: list[tuple[Path, int, int]]) -> None:
        rows: list[tuple[str, str]] = []
        for path, _size, _mtime in files:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            source = path.relative_to(self.folder).as_posix()
            for passage in split_passages(text):
                if len(rows) >= MAX_PASSAGES:
                    self.skipped += 1
                    break
                rows.append((passage, source))
        with self._db:
            self._db.execute("DELETE FROM passages")
            self._db.executemany("INSERT INTO passages (text, source) VALUES (?, ?)", rows)
        self.builds += 1

    def close(self) -> None:
        self._db.close()
