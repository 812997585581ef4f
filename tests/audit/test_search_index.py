"""Full-text search finds every event, including one recorded a moment ago: the
store indexes events off the recording path (when its writer is idle), and a
search covers what the index does not hold yet (proxy/audit/search.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import proxy.store.sqlite as sqlite_store
from adapters.model import EventKind, TrajectoryEvent
from proxy.audit.queries import SessionQuery, session_page
from proxy.audit.search import FTS_DDL, index_pending, indexed_upto, latest_event
from proxy.store.base import CallRecord, NewCall
from proxy.store.sqlite import SqliteStore


def _new(session_id: str, *events: TrajectoryEvent) -> NewCall:
    call = CallRecord(id=f"call-{session_id}-{time.perf_counter_ns()}", session_id=session_id, api="chat", path="/",
                      model="m", stream=False, started=time.time(), latency_ms=1.0, status=200, resolved_by="header")
    return NewCall(call=call, events=list(events), nodes=())


def _user(text: str) -> TrajectoryEvent:
    return TrajectoryEvent(kind=EventKind.USER, text=text)


def _reader(path: str) -> sqlite3.Connection:
    """A connection like the audit views' (proxy/audit/reader.py): read-only, of its own."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only=1")
    return conn


def search(conn: sqlite3.Connection, text: str) -> list[str]:
    return sorted(row.session.id for row in session_page(conn, SessionQuery(text=text)).rows)


async def _caught_up(path: str) -> None:
    conn = _reader(path)
    try:
        for _ in range(500):
            if indexed_upto(conn) == latest_event(conn):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the store's writer did not index the new events")
    finally:
        conn.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "search.db")
    await s.open()
    yield s
    await s.close()


async def test_a_search_right_after_a_call_finds_it(store: SqliteStore) -> None:
    conn = _reader(store.path)
    try:
        for i in range(40):  # each search follows its call at once, indexed or not
            await store.record_call(_new(f"s{i}", _user("an ordinary turn"), _user(f"the launch code is zebra{i}")))
            assert search(conn, f"launch code is zebra{i}") == [f"s{i}"]
        assert len(search(conn, "an ordinary turn")) == 40
    finally:
        conn.close()


async def test_search_covers_events_not_indexed_yet(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await store.record_call(_new("old", _user("Café Crème, the old roast")))
    await _caught_up(store.path)
    monkeypatch.setattr(sqlite_store, "index_pending", lambda conn, limit=0: (indexed_upto(conn), 0))  # writer stalls
    await store.record_call(_new("new", _user("CAFE creme -- the new roast"),
                                 TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="send_email",
                                                 arguments={"to": "ops@example.com"}, tool_call_id="c1")))
    conn = _reader(store.path)
    try:
        assert indexed_upto(conn) < latest_event(conn)  # the new events are not in the index
        # the same tokenizer either way: case, accents and punctuation do not matter
        assert search(conn, "cafe crème") == ["new", "old"]
        assert search(conn, "new roast") == ["new"] and search(conn, "old roast") == ["old"]
        assert search(conn, "send_email") == ["new"] and search(conn, "ops@example.com") == ["new"]  # tools, arguments
        assert search(conn, "roast the") == []  # a phrase, in order
        monkeypatch.undo()
        await store.record_call(_new("later", _user("a later turn")))  # the writer goes on indexing
        await _caught_up(store.path)
        assert search(conn, "cafe creme") == ["new", "old"] and search(conn, "later turn") == ["later"]
    finally:
        conn.close()


async def test_a_v2_store_migrates_and_keeps_its_index(tmp_path: Path) -> None:
    """Schema 2 indexed events with a trigger as they were inserted; schema 3 drops it
    and keeps what was indexed."""
    path = tmp_path / "v2.db"
    first = SqliteStore(path)
    await first.open()
    await first.record_call(_new("before", _user("recorded by version two")))
    await _caught_up(first.path)  # as the trigger had: everything indexed before the downgrade below
    await first.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(  # what schema 2 had, as AUDIT_INDEXES created it then
        "CREATE TRIGGER audit_events_fts AFTER INSERT ON events BEGIN INSERT INTO events_fts (rowid, body) VALUES"
        " (new.rowid, coalesce(new.text, '') || ' ' || coalesce(new.tool_name, '') || ' ' || coalesce(new.arguments, ''));"
        " END"
    )
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.execute("INSERT INTO events (session_id, seq, kind, text, time) VALUES ('before', 1, 'user', 'indexed by trigger', 0)")
    conn.close()

    store = SqliteStore(path)
    await store.open()
    try:
        await store.record_call(_new("after", _user("recorded by version three")))
        conn = _reader(store.path)
        try:
            from proxy.store.base import SCHEMA_VERSION

            assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'audit_events_fts'").fetchone()[0] == 0
            assert search(conn, "recorded by version") == ["after", "before"]
            assert search(conn, "indexed by trigger") == ["before"]
            await _caught_up(store.path)
            assert search(conn, "recorded by version") == ["after", "before"]
            assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'indexed'").fetchone()[0] == 1
        finally:
            conn.close()
    finally:
        await store.close()


def test_index_pending_indexes_in_rowid_order_and_resumes(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "bulk.db", isolation_level=None)
    conn.execute("CREATE TABLE events (session_id TEXT, seq INT, kind TEXT, text TEXT, tool_name TEXT, arguments TEXT)")
    for ddl in FTS_DDL:
        conn.execute(ddl)
    conn.executemany("INSERT INTO events (session_id, seq, kind, text) VALUES (?, ?, 'user', ?)",
                     [(f"s{i % 7}", i, f"word{i}") for i in range(25)])
    marks = []
    while True:
        mark, left = index_pending(conn, limit=10)
        marks.append((mark, left))
        if not left:
            break
    assert marks == [(10, 15), (20, 5), (25, 0)]
    assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'word24'").fetchone()[0] == 1
    conn.close()


async def test_the_writer_outlives_a_failure_of_search_indexing(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexing is work no caller waits for: when it fails (here: the first time it
    looks for new events after a write), the calls after it are still recorded."""
    real = sqlite_store.latest_event
    failures = []

    def failing_once(conn: sqlite3.Connection) -> int:
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("disk I/O error")
        return real(conn)

    monkeypatch.setattr(sqlite_store, "latest_event", failing_once)
    for i in range(3):
        await asyncio.wait_for(store.record_call(_new(f"after-failure-{i}", _user(f"call {i}"))), timeout=5)
    assert failures and store._thread is not None and store._thread.is_alive()
    assert (await store.get_session("after-failure-2")) is not None
