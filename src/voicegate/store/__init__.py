"""The call history: every call's record (transcript, per-turn latency, tool calls, renewals,
errors, usage), kept in SQLite (embedded, the default) or PostgreSQL (a cluster's one store).

``open_history`` reads ``--call-store``; ``HistoryWriter`` is the sink that writes records as
calls start and end (off the audio path) and deletes calls past ``--call-retention-days``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

import structlog

from voicegate.store.history import (
    MAX_LIMIT,
    CallHistory,
    CallPage,
    CallQuery,
    decode_cursor,
    default_sqlite_path,
    encode_cursor,
)
from voicegate.store.record import CallRecord, RecordKind, iso

__all__ = [
    "MAX_LIMIT",
    "CallHistory",
    "CallPage",
    "CallQuery",
    "CallRecord",
    "HistoryWriter",
    "RecordKind",
    "check_store_url",
    "decode_cursor",
    "encode_cursor",
    "iso",
    "open_history",
]

log = structlog.get_logger(__name__)

PURGE_EVERY_S: Final = 3600.0


def check_store_url(url: str) -> str:
    """``--call-store``: ``none``, ``sqlite`` (the default file), ``sqlite:PATH``, or a
    ``postgresql://`` / ``postgres://`` URL. Raises ValueError otherwise."""
    text = url.strip()
    if text in ("none", "sqlite") or text.startswith(("postgresql://", "postgres://")):
        return text
    if text.startswith("sqlite:") and len(text) > len("sqlite:"):
        return text
    raise ValueError(url)


check_store_url.__name__ = "call store (none, sqlite, sqlite:PATH or postgresql://...)"


def open_history(url: str) -> CallHistory | None:
    """The store ``url`` names (None for ``none``); opened lazily, on first use."""
    text = check_store_url(url)
    if text == "none":
        return None
    if text.startswith(("postgresql://", "postgres://")):
        from voicegate.store.postgres import PostgresHistory

        return PostgresHistory(text)
    from voicegate.store.sqlite import SqliteHistory

    path = default_sqlite_path() if text == "sqlite" else text[len("sqlite:") :]
    return SqliteHistory(path)


class HistoryWriter:
    """A ``CallSink`` writing each record to the history; ``keep_text=False`` keeps timings and
    counts but no transcript text, tool arguments or results."""

    def __init__(self, history: CallHistory, keep_text: bool = True, retention_days: float = 0):
        self.history = history
        self.keep_text = keep_text
        self.retention_days = retention_days
        self.failures = 0
        self._purger: asyncio.Task[None] | None = None

    async def deliver(self, kind: RecordKind, record: CallRecord) -> None:
        try:
            await self.history.save(record if self.keep_text else record.without_text())
        except Exception as exc:
            self.failures += 1
            log.warning("call_store_write_failed", pc_id=record.call_id, error=str(exc)[:200])

    def start(self) -> None:
        if self.retention_days > 0 and self._purger is None:
            self._purger = asyncio.get_running_loop().create_task(self._purge_loop())

    async def purge_once(self) -> int:
        before = time.time() - self.retention_days * 86400
        removed = await self.history.purge(before)
        if removed:
            log.info("call_store_purged", calls=removed, retention_days=self.retention_days)
        return removed

    async def _purge_loop(self) -> None:
        while True:
            try:
                await self.purge_once()
            except Exception as exc:
                log.warning("call_store_purge_failed", error=str(exc)[:200])
            await asyncio.sleep(PURGE_EVERY_S)

    async def aclose(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        await self.history.aclose()
