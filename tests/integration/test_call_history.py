"""The call history: records kept in SQLite (embedded) and a real PostgreSQL, listed and read
through the admin API after real calls; refusals are JSON and never leak a call to a caller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.postgres import postgres_server
from tests.support.server import running_server
from tests.support.spoken_call import spoken_call
from voicegate.backends.echo import EchoBackend
from voicegate.signaling import auth
from voicegate.signaling.keys import CALL_LOG
from voicegate.store import CallHistory, CallQuery, CallRecord, HistoryWriter, open_history
from voicegate.testing.client import load_wav

SECRET = "s" * 40
ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store the history supports (PostgreSQL started once, outside the event loop)."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'calls.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def history(store_url: str) -> AsyncIterator[CallHistory]:
    store = open_history(store_url)
    assert store is not None
    if store_url.startswith("postgresql:"):  # one database for the module: start empty
        await store.purge(time.time() + 10**9)
    try:
        yield store
    finally:
        await store.aclose()


def record(call_id: str, started: float, agent: str = "", reason: str = "hangup") -> CallRecord:
    rec = CallRecord(call_id=call_id, started=started, agent=agent, ended=started + 5)
    rec.end_reason = reason
    rec.transcript.append({"t": 1.0, "at": "x", "role": "user", "text": f"hello {call_id}"})
    rec.tool_calls.append({"name": "clock", "arguments": '{"tz":"UTC"}', "result": "12:00"})
    return rec


async def test_records_round_trip_filter_and_page(history: CallHistory) -> None:
    base = time.time() - 1000
    for i in range(7):
        agent = "sales" if i % 2 else "support"
        reason = "error:throttled" if i == 3 else "hangup"
        await history.save(record(f"pc-{i}", base + i, agent, reason))
    got = await history.get("pc-3")
    assert got is not None and got.end_reason == "error:throttled"
    assert got.transcript[0]["text"] == "hello pc-3"
    assert await history.get("pc-nope") is None
    # Newest first, three a page, nothing repeated or skipped.
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = await history.list(CallQuery(limit=3, cursor=cursor))
        seen += [r.call_id for r in page.calls]
        if page.next_cursor is None:
            break
        from voicegate.store import decode_cursor

        cursor = decode_cursor(page.next_cursor)
    assert seen == [f"pc-{i}" for i in reversed(range(7))]
    sales = await history.list(CallQuery(agent="sales"))
    assert [r.call_id for r in sales.calls] == ["pc-5", "pc-3", "pc-1"]
    errors = await history.list(CallQuery(end_reason="error"))
    assert [r.call_id for r in errors.calls] == ["pc-3"]
    window = await history.list(CallQuery(since=base + 2, until=base + 4))
    assert [r.call_id for r in window.calls] == ["pc-3", "pc-2"]
    # An upsert replaces the call's row (the start record, then the whole one).
    await history.save(record("pc-0", base, "support", "idle"))
    again = await history.get("pc-0")
    assert again is not None and again.end_reason == "idle"
    assert await history.purge(base + 3) == 3
    assert await history.get("pc-2") is None and await history.get("pc-3") is not None


async def test_no_text_keeps_timings_only(history: CallHistory) -> None:
    writer = HistoryWriter(history, keep_text=False)
    await writer.deliver("call.ended", record("pc-quiet", time.time()))
    got = await history.get("pc-quiet")
    assert got is not None
    assert got.transcript[0]["text"] == "" and got.transcript[0]["t"] == 1.0
    assert got.tool_calls[0]["arguments"] == "" and got.tool_calls[0]["name"] == "clock"


async def test_retention_deletes_old_calls(history: CallHistory) -> None:
    await history.save(record("pc-old", time.time() - 40 * 86400))
    await history.save(record("pc-new", time.time() - 86400))
    assert await HistoryWriter(history, retention_days=30).purge_once() == 1
    assert await history.get("pc-old") is None and await history.get("pc-new") is not None


def token_file(tmp_path: Path, text: str = ADMIN) -> str:
    path = tmp_path / "admin-token"
    path.write_text(text + "\n")
    return str(path)


async def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def test_a_real_call_is_listed_and_inspected(
    store_url: str, speech_wav: Callable[[str], Path], tmp_path: Path
) -> None:
    url_of_store = store_url
    speech = load_wav(speech_wav("hello there, this is a test of the call history"))
    async with running_server(
        EchoBackend(),
        auth_secret=SECRET,
        admin_token_file=token_file(tmp_path),
        call_store=url_of_store,
        redact=("digits",),
    ) as (url, app):
        caller = auth.mint(SECRET, 600, subject="alice")
        pc_id = await spoken_call(url, speech, caller)
        await app[CALL_LOG].flush()
        status, body = await _get(f"{url}/api/calls?limit=5", ADMIN)
        assert status == 200
        assert body["calls"][0]["call_id"] == pc_id
        assert body["calls"][0]["subject"] == "alice"
        assert body["calls"][0]["end_reason"] == "hangup"
        status, detail = await _get(f"{url}/api/calls/{pc_id}", ADMIN)
        assert status == 200
        assert detail["transcript"][0]["role"] == "user"
        # "(echo turn 1: 3.6 s of speech)": the digit rule leaves no run of four digits,
        # and the turn's latency split is there.
        assert "echo turn" in detail["transcript"][0]["text"]
        assert detail["turn_latency"][0]["total_ms"] > 0
        # Refusals: no token, a caller's own token, a wrong token -> 401; bad filters -> 400;
        # an unknown call -> 404. All JSON.
        for token in (None, caller, "wrong-token-but-long-enough"):
            status, refusal = await _get(f"{url}/api/calls", token)
            assert status == 401 and "admin token" in refusal["error"]
            status, refusal = await _get(f"{url}/api/calls/{pc_id}", token)
            assert status == 401 and pc_id not in str(refusal)
        for query in (
            "limit=0",
            "limit=x",
            "since=yesterday",
            "colour=red",
            "cursor=%%%",
            "agent=" + "a" * 100,
            "since=2026-12-02T00:00:00Z&until=2026-12-01",
        ):
            status, refusal = await _get(f"{url}/api/calls?{query}", ADMIN)
            assert status == 400 and refusal["error"], query
        status, refusal = await _get(f"{url}/api/calls/pc-0000", ADMIN)
        assert status == 404 and "no call" in refusal["error"]
        status, refusal = await _get(f"{url}/api/calls/..%2F..%2Fetc", ADMIN)
        assert status in (400, 404) and "error" in refusal


async def test_without_an_admin_token_the_api_is_local_dev_only(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'calls.db'}"
    async with running_server(EchoBackend(), call_store=store) as (url, _app):
        status, body = await _get(f"{url}/api/calls")
        assert status == 200 and body == {"calls": []}
    async with running_server(EchoBackend(), call_store=store, auth_secret=SECRET) as (url, _a):
        status, body = await _get(f"{url}/api/calls", auth.mint(SECRET, 600, subject="bob"))
        assert status == 403 and "admin-token-file" in body["error"]
    async with running_server(EchoBackend(), call_store="none") as (url, _app):
        status, body = await _get(f"{url}/api/calls")
        assert status == 404 and "no call history" in body["error"]


async def test_two_servers_write_one_postgres(
    postgres_url: str, speech_wav: Callable[[str], Path], tmp_path: Path
) -> None:
    speech = load_wav(speech_wav("hello there, this is a test of the call history"))
    history = open_history(postgres_url)
    assert history is not None
    await history.purge(time.time() + 10**9)
    async with (
        running_server(EchoBackend(), call_store=postgres_url, node_id="a") as (url_a, app_a),
        running_server(EchoBackend(), call_store=postgres_url, node_id="b") as (url_b, app_b),
    ):
        ids = await asyncio.gather(spoken_call(url_a, speech), spoken_call(url_b, speech))
        await app_a[CALL_LOG].flush()
        await app_b[CALL_LOG].flush()
        for url in (url_a, url_b):
            status, body = await _get(f"{url}/api/calls")
            assert status == 200
            assert sorted(c["call_id"] for c in body["calls"]) == sorted(ids)
    await history.aclose()
