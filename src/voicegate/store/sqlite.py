"""The embedded call history: one SQLite file (stdlib ``sqlite3``), the default store.

Each call is written from a worker thread, never on the event loop. WAL mode and a busy timeout
let several worker processes of one node share the file. Writes are upserts: the record written
when a call starts is replaced by the whole record when it ends.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from voicegate.store.history import CallPage, CallQuery, encode_cursor, row_values
from voicegate.store.record import CallRecord

__all__ = ["SqliteHistory"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    ended REAL,
    agent TEXT NOT NULL DEFAULT '',
    subject TEXT,
    end_reason TEXT NOT NULL DEFAULT '',
    reason_kind TEXT NOT NULL DEFAULT '',
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started DESC, call_id DESC);
CREATE INDEX IF NOT EXISTS calls_agent ON calls (agent, started DESC);
"""


class SqliteHistory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(SCHEMA)
            self.path.chmod(0o600)  # transcripts: the operator's eyes only
            self._db = db
        return self._db

    def _run(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            db = self._connect()
            with db:
                return db.execute(sql, params).fetchall()

    async def open(self) -> None:
        await asyncio.to_thread(self._run, "SELECT 1")

    async def save(self, record: CallRecord) -> None:
        values = row_values(record)
        values["record"] = json.dumps(record.to_json(), ensure_ascii=False)
        await asyncio.to_thread(
            self._run,
            "INSERT INTO calls (call_id, started, ended, agent, subject, end_reason, reason_kind,"
            " record) VALUES (:call_id, :started, :ended, :agent, :subject, :end_reason,"
            " :reason_kind, :record) ON CONFLICT (call_id) DO UPDATE SET started=excluded.started,"
            " ended=excluded.ended, agent=excluded.agent, subject=excluded.subject,"
            " end_reason=excluded.end_reason, reason_kind=excluded.reason_kind,"
            " record=excluded.record",
            values,
        )

    async def get(self, call_id: str) -> CallRecord | None:
        rows = await asyncio.to_thread(
            self._run, "SELECT record FROM calls WHERE call_id = ?", (call_id,)
        )
        return CallRecord.from_json(json.loads(rows[0][0])) if rows else None

    async def list(self, query: CallQuery) -> CallPage:
        where: list[str] = []
        params: list[Any] = []
        if query.agent is not None:
            where.append("agent = ?")
            params.append(query.agent)
        if query.end_reason is not None:
            column = "end_reason" if ":" in query.end_reason else "reason_kind"
            where.append(f"{column} = ?")
            params.append(query.end_reason)
        if query.since is not None:
            where.append("started >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("started < ?")
            params.append(query.until)
        if query.cursor is not None:
            where.append("(started < ? OR (started = ? AND call_id < ?))")
            params += [query.cursor[0], query.cursor[0], query.cursor[1]]
        sql = "SELECT started, call_id, record FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC, call_id DESC LIMIT ?"
        params.append(query.limit + 1)
        rows = await asyncio.to_thread(self._run, sql, params)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        records = [CallRecord.from_json(json.loads(r[2])) for r in rows]
        cursor = encode_cursor(rows[-1][0], rows[-1][1]) if more and rows else None
        return CallPage(records, cursor)

    async def purge(self, before: float) -> int:
        def delete() -> int:
            with self._lock:
                db = self._connect()
                with db:
                    return db.execute("DELETE FROM calls WHERE started < ?", (before,)).rowcount

        return await asyncio.to_thread(delete)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)
