"""The SQLite store's schema and its migrations: each version is a function, run
in order inside one write transaction (so two processes opening an old store
migrate it once), and ``meta.schema_version`` records the last."""

from __future__ import annotations

import sqlite3
from typing import Callable
from urllib.parse import quote

import sqlite_utils

from proxy.audit.indexes import AUDIT_INDEXES
from proxy.audit.search import FTS_DDL
from proxy.store.base import SCHEMA_VERSION

_MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {}


def _migration(version: int) -> Callable[[Callable[[sqlite_utils.Database], None]], Callable[[sqlite_utils.Database], None]]:
    def register(fn: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite_utils.Database], None]:
        _MIGRATIONS[version] = fn
        return fn

    return register


@_migration(1)
def _schema_v1(db: sqlite_utils.Database) -> None:
    db["sessions"].create(
        {
            "id": str, "parent_id": str, "root_id": str, "depth": int, "started": float,
            "last_call": float, "calls": int, "events": int, "next_seq": int,
            "status": str, "labels": str, "counters": str, "head": str,
        },
        pk="id",
    )
    db["calls"].create(
        {
            "id": str, "session_id": str, "api": str, "path": str, "model": str, "stream": int,
            "started": float, "latency_ms": float, "status": int, "resolved_by": str,
            "error": str, "input_tokens": int, "output_tokens": int, "response_id": str,
        },
        pk="id",
    )
    db["events"].create(
        {
            "session_id": str, "seq": int, "call_id": str, "kind": str, "role": str, "text": str,
            "tool_name": str, "arguments": str, "tool_call_id": str, "labels": str,
            "hash": str, "time": float,
        },
        pk=("session_id", "seq"),
    )
    # The history tree: node = hash(parent node, event hash). A session owns the
    # nodes its calls walked through; identical prefixes in two sessions are two rows.
    db["nodes"].create(
        {"session_id": str, "id": str, "parent": str, "seq": int, "reply_end": int, "time": float},
        pk=("session_id", "id"),
    )
    db["responses"].create({"id": str, "session_id": str, "node": str}, pk="id")
    # Hashes of events Proctor returned (replies): the anchors that find a session
    # again after its agent compacted the history.
    db["replies"].create({"session_id": str, "hash": str, "time": float}, pk=("session_id", "hash"))
    # Normalised string arguments of tool calls: a new session whose first task equals
    # one of them was spawned by that call's session.
    db["spawns"].create({"hash": str, "session_id": str, "time": float}, pk=("hash", "session_id"))
    db["replies"].create_index(["hash", "time"])
    db["spawns"].create_index(["hash", "time"])
    # Decision-log records shaped like OPA's; the input's trajectory is a seq range.
    db["decisions"].create(
        {
            "id": str, "session_id": str, "call_id": str, "stage": str, "event_seq": int, "path": str,
            "input": str, "traj_from": int, "traj_to": int, "result": str, "decision": str, "outcome": str,
            "rules": str, "revision": str, "engine": str, "eval_ms": float, "time": float, "error": str,
        },
        pk="id",
    )
    db["decisions"].create_index(["session_id", "time"])
    db["decisions"].create_index(["outcome", "time"])
    db["sessions"].create_index(["last_call"])
    db["sessions"].create_index(["parent_id"])
    db["calls"].create_index(["session_id", "started"])
    db["events"].create_index(["session_id", "tool_call_id"])
    db["events"].create_index(["tool_call_id"])
    db["events"].create_index(["session_id", "hash"])
    db["nodes"].create_index(["id", "time"])
    for ddl in AUDIT_INDEXES:  # the audit views' indexes (proxy/audit/indexes.py)
        db.execute(ddl)


@_migration(2)
def _tree_totals_v2(db: sqlite_utils.Database) -> None:
    """A root session carries its whole sub-agent tree's counters, kept as calls are
    recorded, so tree budgets read one row instead of summing the tree."""
    db.execute("ALTER TABLE sessions ADD COLUMN tree_counters TEXT")
    db.execute("ALTER TABLE sessions ADD COLUMN tree_sessions INTEGER")
    db.execute("UPDATE sessions SET tree_sessions = (SELECT COUNT(*) FROM sessions t WHERE t.root_id = sessions.id)"
               " WHERE root_id = id")
    db.execute("UPDATE sessions SET tree_counters = counters WHERE root_id = id AND tree_sessions = 1")


@_migration(3)
def _search_off_the_write_path_v3(db: sqlite_utils.Database) -> None:
    """Events are no longer indexed for full-text search by a trigger as they are
    inserted: the store's writer indexes them when idle, and searches cover what
    it has not reached yet (proxy/audit/search.py). What the trigger indexed stays."""
    db.execute("DROP TRIGGER IF EXISTS audit_events_fts")
    for ddl in FTS_DDL:
        db.execute(ddl)


@_migration(4)
def _tool_call_indexes_v4(db: sqlite_utils.Database) -> None:
    """Tool-call ids are looked up only on tool calls (every query says kind =
    'tool_call'): partial indexes skip the tool results, whose entries cost each
    recorded call index pages for nothing."""
    db.execute("DROP INDEX IF EXISTS idx_events_tool_call_id")
    db.execute("DROP INDEX IF EXISTS idx_events_session_id_tool_call_id")
    db.execute("CREATE INDEX IF NOT EXISTS events_tool_calls ON events (tool_call_id) WHERE kind = 'tool_call'")
    db.execute(
        "CREATE INDEX IF NOT EXISTS events_session_tool_calls ON events (session_id, tool_call_id) WHERE kind = 'tool_call'"
    )


@_migration(5)
def _node_end_indexes_v5(db: sqlite_utils.Database) -> None:
    """History nodes are looked up by id alone only where a reply or a request
    ended (continuations, retries): partial indexes hold those, one or two per
    call, where the full (id, time) index took one randomly placed entry per
    event of every call. Requests recorded before this version are not marked,
    so a retry of one of them opens a new session."""
    if "request_end" not in {c.name for c in db["nodes"].columns}:
        db.execute("ALTER TABLE nodes ADD COLUMN request_end INTEGER NOT NULL DEFAULT 0")
    db.execute("DROP INDEX IF EXISTS idx_nodes_id_time")
    db.execute("CREATE INDEX IF NOT EXISTS nodes_reply_ends ON nodes (id) WHERE reply_end = 1")
    db.execute("CREATE INDEX IF NOT EXISTS nodes_request_ends ON nodes (id, time) WHERE request_end = 1")


def not_a_store(path: str) -> str | None:
    """Why the SQLite file at ``path`` is not a Proctor store (None when it is one):
    commands that only read check this first, as opening a store migrates it."""
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error as e:
        return f"cannot be opened ({e})"
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return "is not a Proctor store (an empty file, or another program's database)"
        return f"cannot be read ({e})"
    except sqlite3.DatabaseError as e:
        return f"is not a SQLite database, or is damaged ({e})"
    finally:
        conn.close()
    return None if row else "is not a Proctor store (it has no schema version)"


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the store to SCHEMA_VERSION. The connection is in autocommit mode
    (isolation_level=None), so the transaction is explicit."""
    db = sqlite_utils.Database(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise RuntimeError(f"the store was written by a newer Proctor (schema {current}); upgrade Proctor")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            _MIGRATIONS[version](db)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@_migration(6)
def _denied_calls_v6(db: sqlite_utils.Database) -> None:
    """A response keeps the tool calls denied out of it: the upstream stored them, so
    a call continuing it (previous_response_id) must answer them."""
    if "denied" not in {c.name for c in db["responses"].columns}:
        db.execute("ALTER TABLE responses ADD COLUMN denied TEXT")


@_migration(7)
def _system_events_v7(db: sqlite_utils.Database) -> None:
    """A session's latest system events by one indexed read (the instructions a
    Responses continuation re-sends are recorded only when they differ from them)."""
    db.execute("CREATE INDEX IF NOT EXISTS events_system ON events (session_id, seq) WHERE kind = 'system'")
