"""The embedded default store: one SQLite file in WAL mode.

All access goes through one dedicated thread that owns the connection (SQLite
connections are not to be shared across threads). Writes queued while that
thread is busy are committed together in one transaction (group commit), each in
its own savepoint so one failing write never takes the others with it. Every
``record_call`` has committed before its future resolves, so an event is durable
before the response that carries it completes.

Several proxy processes may share the file: ``BEGIN IMMEDIATE`` serialises
writers across processes, and sequence numbers are read and bumped inside that
transaction, so the events of one session stay gapless and ordered.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import orjson
import sqlite_utils

from adapters.model import EventKind, TrajectoryEvent
from proxy.audit.queries import AUDIT_INDEXES
from proxy.counters import count_call
from proxy.store.base import SCHEMA_VERSION, CallRecord, HistoryMatch, NewCall, SessionRecord

T = TypeVar("T")
_TAIL = 16  # history matching looks at this many trailing nodes in one query first
_CONTINUATION_TAIL = 64  # a continuation's reply ends at most this many events before its end

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
    for ddl in AUDIT_INDEXES:  # the audit views' indexes (proxy/audit/queries.py)
        db.execute(ddl)


def _migrate(conn: sqlite3.Connection) -> None:
    db = sqlite_utils.Database(conn)
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    current = int(row[0]) if row else 0
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"the store was written by a newer Proctor (schema {current}); upgrade Proctor")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        with conn:
            _MIGRATIONS[version](db)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),))


def _event_from_row(row: sqlite3.Row) -> TrajectoryEvent:
    return TrajectoryEvent(
        kind=EventKind(row["kind"]),
        role=row["role"],
        text=row["text"],
        tool_name=row["tool_name"],
        arguments=orjson.loads(row["arguments"]) if row["arguments"] is not None else None,
        tool_call_id=row["tool_call_id"],
        labels=orjson.loads(row["labels"]) if row["labels"] else {},
        session_id=row["session_id"],
        call_id=row["call_id"],
        seq=row["seq"],
        time=row["time"],
    )


def _session_from_row(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"], started=row["started"], last_call=row["last_call"], calls=row["calls"],
        events=row["events"], status=row["status"], parent_id=row["parent_id"],
        root_id=row["root_id"], depth=row["depth"], labels=orjson.loads(row["labels"] or "{}"),
        counters=orjson.loads(row["counters"] or "{}"),
    )


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], bool, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        return cls(url.removeprefix("sqlite:///").removeprefix("sqlite://") or "proctor.db")

    # -- the store thread -------------------------------------------------

    async def open(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="proctor-sqlite", daemon=True)
        self._thread.start()
        await ready
        # Small indexed reads on the hot path run here, on the event loop's thread:
        # in WAL mode they never wait for the writer, and skipping the hop to the
        # store thread saves more than the read costs.
        self._reader = self._connect()
        self._reader.execute("PRAGMA query_only=1")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes; WAL fsyncs at checkpoint
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = ready.get_loop()
        try:
            conn = self._connect()
            _migrate(conn)
        except BaseException as e:  # report to the opener, then stop
            loop.call_soon_threadsafe(ready.set_exception, e)
            return
        loop.call_soon_threadsafe(ready.set_result, None)
        while (job := self._jobs.get()) is not None:
            batch = [job]
            while True:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[tuple[Callable[[sqlite3.Connection], Any], bool, asyncio.Future[Any]]]) -> None:
        results: list[tuple[asyncio.Future[Any], bool, Any]] = []
        in_tx = False
        try:
            for fn, is_write, fut in batch:
                if is_write and not in_tx:
                    conn.execute("BEGIN IMMEDIATE")
                    in_tx = True
                if is_write:
                    conn.execute("SAVEPOINT job")
                try:
                    value = fn(conn)
                    ok = True
                except Exception as e:  # one bad job must not sink the batch
                    value, ok = e, False
                if is_write:
                    if not ok:
                        conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                results.append((fut, ok, value))
            if in_tx:
                conn.execute("COMMIT")
        except Exception as e:  # the commit itself failed: nothing of the batch was written
            if in_tx and conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(fut, False, e) for _, _, fut in batch]
        for fut, ok, value in results:
            fut.get_loop().call_soon_threadsafe(_settle, fut, ok, value)

    def _now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a small, indexed read on the reader connection (see open())."""
        if self._reader is None:
            raise RuntimeError("the store is not open")
        return fn(self._reader)

    def _submit(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> asyncio.Future[T]:
        if self._thread is None:
            raise RuntimeError("the store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, write, fut))
        return fut

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only query function on the store's connection (audit views
        keep their SQL in their own modules)."""
        return await self._submit(fn, write=False)

    # -- the contract -----------------------------------------------------

    async def record_call(self, new: NewCall) -> list[TrajectoryEvent]:
        return await self._submit(lambda conn: _record_call(conn, new), write=True)

    async def match_history(self, chain: Sequence[str], session_id: str | None = None) -> HistoryMatch:
        return self._now(lambda conn: _match_history(conn, chain, session_id))

    async def find_continuation(self, chain: Sequence[str], tool_call_ids: Sequence[str] = ()) -> HistoryMatch:
        return self._now(lambda conn: _find_continuation(conn, chain, tool_call_ids))

    async def reply_sessions(
        self, hash: str, tool_call_id: str | None = None, limit: int = 2, session_id: str | None = None
    ) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            if tool_call_id and session_id is not None:  # one indexed lookup, however common the id
                row = conn.execute(
                    "SELECT 1 FROM events WHERE session_id = ? AND tool_call_id = ? AND kind = 'tool_call' LIMIT 1",
                    (session_id, tool_call_id),
                ).fetchone()
                if row:
                    return [session_id]
            elif tool_call_id:
                rows = conn.execute(
                    "SELECT DISTINCT session_id FROM events WHERE tool_call_id = ? AND kind = 'tool_call' LIMIT ?",
                    (tool_call_id, limit),
                ).fetchall()
                if rows:
                    return [r[0] for r in rows]
            if session_id is not None:
                row = conn.execute("SELECT 1 FROM replies WHERE session_id = ? AND hash = ?", (session_id, hash)).fetchone()
                return [session_id] if row else []
            rows = conn.execute(
                "SELECT session_id FROM replies WHERE hash = ? ORDER BY time DESC LIMIT ?", (hash, limit)
            ).fetchall()
            return [r[0] for r in rows]

        return self._now(read)

    async def known_hashes(self, session_id: str, hashes: Sequence[str]) -> set[str]:
        def read(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            unique = list(dict.fromkeys(hashes))
            for i in range(0, len(unique), 500):
                part = unique[i:i + 500]
                marks = ",".join("?" * len(part))
                rows = conn.execute(
                    f"SELECT DISTINCT hash FROM events WHERE session_id = ? AND hash IN ({marks})", [session_id, *part]
                )
                found.update(r[0] for r in rows)
            return found

        return self._now(read)

    async def known_tool_calls(self, session_id: str, ids: Sequence[str]) -> dict[str, str | None]:
        def read(conn: sqlite3.Connection) -> dict[str, str | None]:
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"SELECT tool_call_id, tool_name FROM events WHERE session_id = ? AND kind = 'tool_call'"
                f" AND tool_call_id IN ({marks})",
                [session_id, *ids],
            )
            return {r[0]: r[1] for r in rows}

        return self._now(read) if ids else {}

    async def find_spawner(self, text_hash: str, since: float) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT session_id FROM spawns WHERE hash = ? AND time >= ? ORDER BY time DESC LIMIT 1", (text_hash, since)
            ).fetchone()
            return row[0] if row else None

        return self._now(read)

    async def get_children(self, session_id: str) -> list[SessionRecord]:
        def read(conn: sqlite3.Connection) -> list[SessionRecord]:
            rows = conn.execute("SELECT * FROM sessions WHERE parent_id = ? ORDER BY started", (session_id,))
            return [_session_from_row(r) for r in rows]

        return await self._submit(read, write=False)

    async def session_for_response(self, response_id: str) -> tuple[str, str] | None:
        def read(conn: sqlite3.Connection) -> tuple[str, str] | None:
            row = conn.execute("SELECT session_id, node FROM responses WHERE id = ?", (response_id,)).fetchone()
            return (row[0], row[1]) if row else None

        return self._now(read)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        def read(conn: sqlite3.Connection) -> SessionRecord | None:
            row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
            return _session_from_row(row) if row else None

        return self._now(read)

    async def list_sessions(self, *, limit: int = 100, offset: int = 0) -> list[SessionRecord]:
        def read(conn: sqlite3.Connection) -> list[SessionRecord]:
            rows = conn.execute("SELECT * FROM sessions ORDER BY last_call DESC LIMIT ? OFFSET ?", (limit, offset))
            return [_session_from_row(r) for r in rows]

        return await self._submit(read, write=False)

    async def session_view(self, session_id: str, limit: int) -> tuple[SessionRecord | None, list[TrajectoryEvent]]:
        def read(conn: sqlite3.Connection) -> tuple[SessionRecord | None, list[TrajectoryEvent]]:
            row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return None, []
            rows = conn.execute(
                "SELECT * FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT ?", (session_id, limit)
            ).fetchall()
            return _session_from_row(row), [_event_from_row(r) for r in reversed(rows)]

        return self._now(read)

    async def recent_events(self, session_id: str, limit: int) -> list[TrajectoryEvent]:
        def read(conn: sqlite3.Connection) -> list[TrajectoryEvent]:
            rows = conn.execute(
                "SELECT * FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT ?", (session_id, limit)
            ).fetchall()
            return [_event_from_row(r) for r in reversed(rows)]

        return await self._submit(read, write=False)

    async def get_decisions(self, session_id: str) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT * FROM decisions WHERE session_id = ? ORDER BY time, rowid", (session_id,))
            return [_decision_from_row(r) for r in rows]

        return await self._submit(read, write=False)

    async def get_events(self, session_id: str) -> list[TrajectoryEvent]:
        def read(conn: sqlite3.Connection) -> list[TrajectoryEvent]:
            rows = conn.execute("SELECT * FROM events WHERE session_id = ? ORDER BY seq", (session_id,))
            return [_event_from_row(r) for r in rows]

        return await self._submit(read, write=False)

    async def get_calls(self, session_id: str) -> list[CallRecord]:
        def read(conn: sqlite3.Connection) -> list[CallRecord]:
            rows = conn.execute("SELECT * FROM calls WHERE session_id = ? ORDER BY started, rowid", (session_id,))
            return [
                CallRecord(**{k: r[k] for k in r.keys()} | {"stream": bool(r["stream"])})  # type: ignore[arg-type]
                for r in rows
            ]

        return await self._submit(read, write=False)


def _decision_from_row(row: sqlite3.Row) -> dict[str, Any]:
    """An OPA-style decision-log entry."""
    return {
        "decision_id": row["id"],
        "session_id": row["session_id"],
        "call_id": row["call_id"],
        "stage": row["stage"],
        "event_seq": row["event_seq"],
        "path": row["path"],
        "input": orjson.loads(row["input"]),
        "trajectory": {"session_id": row["session_id"], "from_seq": row["traj_from"], "to_seq": row["traj_to"]},
        "result": orjson.loads(row["result"]) if row["result"] else None,
        "decision": orjson.loads(row["decision"]),
        "outcome": row["outcome"],
        "bundles": {"proctor": {"revision": row["revision"]}},
        "engine": row["engine"],
        "metrics": {"timer_eval_ms": row["eval_ms"]},
        "timestamp": row["time"],
        "error": row["error"],
    }


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _record_call(conn: sqlite3.Connection, new: NewCall) -> list[TrajectoryEvent]:
    call = new.call
    now = time.time()
    row = conn.execute("SELECT next_seq FROM sessions WHERE id = ?", (call.session_id,)).fetchone()
    if row is None:
        parent = new.parent_session_id
        root, depth = call.session_id, 0
        if parent is not None:
            prow = conn.execute("SELECT root_id, depth FROM sessions WHERE id = ?", (parent,)).fetchone()
            if prow is not None:
                root, depth = prow[0], prow[1] + 1
        conn.execute(
            "INSERT INTO sessions (id, parent_id, root_id, depth, started, last_call, calls, events, next_seq, status,"
            " labels, counters) VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, 'active', '{}', '{}')",
            (call.session_id, parent, root, depth, call.started, call.started),
        )
        next_seq = 0
    else:
        next_seq = row[0]
    placed = [
        ev.placed(session_id=call.session_id, call_id=call.id, seq=next_seq + i, time=now)
        for i, ev in enumerate(new.events)
    ]
    conn.executemany(
        "INSERT INTO events (session_id, seq, call_id, kind, role, text, tool_name, arguments, tool_call_id, labels, hash, time)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                ev.session_id, ev.seq, ev.call_id, ev.kind.value, ev.role, ev.text, ev.tool_name,
                orjson.dumps(ev.arguments) if ev.arguments is not None else None,
                ev.tool_call_id, orjson.dumps(ev.labels) if ev.labels else None, ev.hash, now,
            )
            for ev in placed
        ],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO nodes (session_id, id, parent, seq, reply_end, time) VALUES (?, ?, ?, ?, 0, ?)",
        [(call.session_id, node, parent, next_seq + idx if idx >= 0 else None, now) for node, parent, idx in new.nodes],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO replies (session_id, hash, time) VALUES (?, ?, ?)",
        [(call.session_id, h, now) for h in new.reply_hashes],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO spawns (hash, session_id, time) VALUES (?, ?, ?)",
        [(h, call.session_id, now) for h in new.spawn_hashes],
    )
    if new.response_node is not None:
        conn.execute(
            "UPDATE nodes SET reply_end = 1 WHERE session_id = ? AND id = ?", (call.session_id, new.response_node)
        )
        conn.execute("UPDATE sessions SET head = ? WHERE id = ?", (new.response_node, call.session_id))
    if new.response_id:
        conn.execute(
            "INSERT OR REPLACE INTO responses (id, session_id, node) VALUES (?, ?, ?)",
            (new.response_id, call.session_id, new.response_node),
        )
    conn.execute(
        "INSERT INTO calls (id, session_id, api, path, model, stream, started, latency_ms, status, resolved_by, error,"
        " input_tokens, output_tokens, response_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            call.id, call.session_id, call.api, call.path, call.model, int(call.stream), call.started,
            call.latency_ms, call.status, call.resolved_by, call.error, call.input_tokens,
            call.output_tokens, call.response_id,
        ),
    )
    state = conn.execute("SELECT labels, counters FROM sessions WHERE id = ?", (call.session_id,)).fetchone()
    labels = orjson.loads(state[0] or "{}")
    labels.update(new.labels)
    counters = _count(orjson.loads(state[1] or "{}"), call, placed, new)
    conn.execute(
        "UPDATE sessions SET next_seq = ?, calls = calls + 1, events = events + ?, last_call = max(last_call, ?),"
        " labels = ?, counters = ?, status = CASE WHEN ? THEN 'terminated' ELSE status END WHERE id = ?",
        (next_seq + len(placed), len(placed), call.started, orjson.dumps(labels), orjson.dumps(counters),
         new.terminate, call.session_id),
    )
    conn.executemany(
        "INSERT INTO decisions (id, session_id, call_id, stage, event_seq, path, input, traj_from, traj_to, result,"
        " decision, outcome, rules, revision, engine, eval_ms, time, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                d.decision_id, call.session_id, call.id, d.stage,
                next_seq + d.action_index if d.action_index is not None else None, d.path,
                orjson.dumps(d.input, default=str), d.trajectory_range[0], d.trajectory_range[1],
                orjson.dumps(d.result, default=str), orjson.dumps(d.decision.to_dict()), d.decision.outcome,
                " ".join(sorted({f.rule for f in (*d.decision.deny, *d.decision.ask, *d.decision.terminate, *d.decision.warn)})),
                d.revision, d.engine, d.eval_ms, d.time, d.error,
            )
            for d in new.decisions
        ],
    )
    return placed


def _count(counters: dict[str, Any], call: CallRecord, placed: list[TrajectoryEvent], new: NewCall) -> dict[str, Any]:
    return count_call(
        counters, input_tokens=call.input_tokens, output_tokens=call.output_tokens, events=placed,
        outcomes=[d.decision.outcome for d in new.decisions],
    )


def _match_history(conn: sqlite3.Connection, chain: Sequence[str], session_id: str | None) -> HistoryMatch:
    """Longest stored prefix. Prefixes are closed (a stored node's ancestors are
    stored), so: one query over the tail, then a binary search if it missed."""

    def lookup(ids: Sequence[str]) -> dict[str, str]:
        marks = ",".join("?" * len(ids))
        if session_id is None:
            sql = f"SELECT id, session_id FROM nodes WHERE id IN ({marks}) ORDER BY time"
            rows = conn.execute(sql, list(ids))
        else:
            sql = f"SELECT id, session_id FROM nodes WHERE session_id = ? AND id IN ({marks})"
            rows = conn.execute(sql, [session_id, *ids])
        return {node: owner for node, owner in rows}  # latest owner wins on shared prefixes

    if not chain:
        return HistoryMatch(0, None, None)
    start = max(0, len(chain) - _TAIL)
    found = lookup(chain[start:])
    if found:
        for i in range(len(chain) - 1, start - 1, -1):
            if chain[i] in found:
                return HistoryMatch(i + 1, chain[i], found[chain[i]])
    lo, hi, best = 0, start - 1, None  # search chain[0:start] for the last stored index
    while lo <= hi:
        mid = (lo + hi) // 2
        hit = lookup([chain[mid]])
        if hit:
            best, lo = (mid, hit[chain[mid]]), mid + 1
        else:
            hi = mid - 1
    if best is None:
        return HistoryMatch(0, None, None)
    return HistoryMatch(best[0] + 1, chain[best[0]], best[1])


def _find_continuation(conn: sqlite3.Connection, chain: Sequence[str], tool_call_ids: Sequence[str] = ()) -> HistoryMatch:
    """The longest prefix of ``chain`` that ends where a reply Proctor returned ended.
    Only the tail is searched: an agent continuing a session sends its last reply
    followed by a few new turns, never hundreds."""
    tail = chain[-_CONTINUATION_TAIL:]
    if not tail:
        return HistoryMatch(0, None, None)
    marks = ",".join("?" * len(tail))
    rows = conn.execute(
        f"SELECT n.id, n.session_id, s.head = n.id, s.started, n.time FROM nodes n JOIN sessions s ON s.id = n.session_id"
        f" WHERE n.reply_end = 1 AND n.id IN ({marks})",
        list(tail),
    ).fetchall()
    if not rows:
        return HistoryMatch(0, None, None)
    position = {node: i for i, node in enumerate(chain)}
    longest = max(position[r[0]] for r in rows)
    candidates = [r for r in rows if position[r[0]] == longest]
    if len(candidates) > 1 and tool_call_ids:
        # Identical histories, but tool-call ids (not part of the hash) were issued to one of them.
        ids, owners = list(tool_call_ids), [r[1] for r in candidates]
        hit = conn.execute(
            f"SELECT DISTINCT session_id FROM events WHERE kind = 'tool_call' AND tool_call_id IN ({','.join('?' * len(ids))})"
            f" AND session_id IN ({','.join('?' * len(owners))}) LIMIT 2",
            [*ids, *owners],
        ).fetchall()
        if len(hit) == 1:
            return HistoryMatch(longest + 1, chain[longest], hit[0][0])
    # Several sessions with the same history (identical agents): the oldest one
    # still waiting at this reply takes the call, so lockstep twins stay apart.
    waiting = sorted((r for r in candidates if r[2]), key=lambda r: r[3])
    owner = waiting[0][1] if waiting else max(candidates, key=lambda r: r[4])[1]
    return HistoryMatch(longest + 1, chain[longest], owner)
