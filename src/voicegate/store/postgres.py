"""The call history in PostgreSQL (``--call-store postgresql://...``): one store for every node
of a cluster, so the history and the inspector show every call wherever it ran.

psycopg 3's asyncio connection, one per process, behind a lock (a few writes per call need no
pool); a lost connection is opened again on the next use. The record is a JSONB column beside the
columns lists are filtered by. The table is created when missing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from voicegate.store.history import CallPage, CallQuery, encode_cursor, row_values
from voicegate.store.record import CallRecord

__all__ = ["PostgresHistory"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS voicegate_calls (
    call_id TEXT PRIMARY KEY,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    agent TEXT NOT NULL DEFAULT '',
    subject TEXT,
    end_reason TEXT NOT NULL DEFAULT '',
    reason_kind TEXT NOT NULL DEFAULT '',
    record JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS voicegate_calls_started
    ON voicegate_calls (started DESC, call_id DESC);
CREATE INDEX IF NOT EXISTS voicegate_calls_agent ON voicegate_calls (agent, started DESC);
"""


class PostgresHistory:
    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = asyncio.Lock()
        self._db: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._db is None or self._db.closed:
            db = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=10
            )
            # Several nodes may start at once: one creates the table, the others wait for it.
            async with db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock(7201)")
                await db.execute(SCHEMA)
            self._db = db
        return self._db

    async def _fetch(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        async with self._lock:
            for attempt in (1, 2):
                db = await self._connection()
                try:
                    cursor = await db.execute(sql, params)
                    return await cursor.fetchall() if cursor.description else []
                except psycopg.OperationalError:
                    await db.close()
                    self._db = None
                    if attempt == 2:
                        raise
            return []

    async def open(self) -> None:
        await self._fetch("SELECT 1")

    async def save(self, record: CallRecord) -> None:
        values = row_values(record)
        values["record"] = Jsonb(record.to_json())
        await self._fetch(
            "INSERT INTO voicegate_calls (call_id, started, ended, agent, subject, end_reason,"
            " reason_kind, record) VALUES (%(call_id)s, %(started)s, %(ended)s, %(agent)s,"
            " %(subject)s, %(end_reason)s, %(reason_kind)s, %(record)s)"
            " ON CONFLICT (call_id) DO UPDATE SET started=EXCLUDED.started,"
            " ended=EXCLUDED.ended, agent=EXCLUDED.agent, subject=EXCLUDED.subject,"
            " end_reason=EXCLUDED.end_reason, reason_kind=EXCLUDED.reason_kind,"
            " record=EXCLUDED.record",
            values,
        )

    async def get(self, call_id: str) -> CallRecord | None:
        rows = await self._fetch(
            "SELECT record FROM voicegate_calls WHERE call_id = %s", (call_id,)
        )
        return CallRecord.from_json(_json(rows[0][0])) if rows else None

    async def list(self, query: CallQuery) -> CallPage:
        where: list[str] = []
        params: list[Any] = []
        if query.agent is not None:
            where.append("agent = %s")
            params.append(query.agent)
        if query.end_reason is not None:
            column = "end_reason" if ":" in query.end_reason else "reason_kind"
            where.append(f"{column} = %s")
            params.append(query.end_reason)
        if query.since is not None:
            where.append("started >= %s")
            params.append(query.since)
        if query.until is not None:
            where.append("started < %s")
            params.append(query.until)
        if query.cursor is not None:
            where.append("(started, call_id) < (%s, %s)")
            params += [query.cursor[0], query.cursor[1]]
        sql = "SELECT started, call_id, record FROM voicegate_calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC, call_id DESC LIMIT %s"
        params.append(query.limit + 1)
        rows = await self._fetch(sql, params)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        records = [CallRecord.from_json(_json(r[2])) for r in rows]
        cursor = encode_cursor(rows[-1][0], rows[-1][1]) if more and rows else None
        return CallPage(records, cursor)

    async def purge(self, before: float) -> int:
        async with self._lock:
            db = await self._connection()
            cursor = await db.execute("DELETE FROM voicegate_calls WHERE started < %s", (before,))
            return cursor.rowcount

    async def aclose(self) -> None:
        async with self._lock:
            if self._db is not None:
                await self._db.close()
                self._db = None


def _json(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else dict(json.loads(value))
