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

Work that no caller waits for runs when the queue is empty, in bounded steps
so a call arriving meanwhile waits little: indexing new events for full-text
search (``proxy/audit/search.py``; searches cover what is not indexed yet).

Checkpoints (copying the write-ahead log into the database file, with an fsync)
run on a thread of their own: SQLite's automatic checkpoint would run inside
the commit of whichever call filled the log, which then waited 10-20 ms. The
writer turns it off; the checkpointer runs a PASSIVE checkpoint, which never
blocks the writer, shortly after writes. But the log only starts over when a
write begins with all of it copied, which under writes that never pause the
checkpointer never achieves: the log grew without bound (735 MB after 3,000
calls). So once it is past ``wal_limit`` the writer finishes the copy itself
between two batches (the checkpointer has done most of it), and the next write
starts the log over; SQLite then truncates the file to ``journal_size_limit``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import orjson

from adapters.model import TrajectoryEvent
from proxy.audit.search import MAX_LAG, index_pending, latest_event
from proxy.errors import ConfigError
from proxy.store.base import CallRecord, HistoryMatch, NewCall, SessionRecord
from proxy.store.sqlite_ops import (  # noqa: F401 - _decision_from_row is shared with the audit views
    _decision_from_row,
    _event_from_row,
    _find_continuation,
    _match_history,
    _record_call,
    _session_from_row,
    session_with_tree,
)
from proxy.store.sqlite_schema import _migrate

T = TypeVar("T")
log = logging.getLogger("proctor.store")
WAL_LIMIT = 64 * 1024 * 1024  # the log's size past which the writer sees a checkpoint through (journal_size_limit too)


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], bool, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._indexed = 0  # events up to this rowid are in the search index (the writer thread's view)
        self._wrote = threading.Event()  # set after a commit: the log has frames to checkpoint
        self.wal_limit = WAL_LIMIT  # past this the writer completes a checkpoint itself (see the docstring)
        self._write_batches = 0
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        return cls(url.removeprefix("sqlite:///").removeprefix("sqlite://") or "proctor.db")

    # -- the store thread -------------------------------------------------

    async def open(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="proctor-sqlite", daemon=True)
        self._thread.start()
        await ready
        self._stop.clear()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="proctor-sqlite-checkpoint", daemon=True)
        self._checkpointer.start()
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
        if self._checkpointer is not None:
            self._stop.set()
            self._wrote.set()
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None

    def _checkpoint_loop(self, pause: float = 0.2) -> None:
        """Checkpoint a little after writes, off the writer's path. PASSIVE copies
        what no reader still needs and returns; the writer appends meanwhile."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True, timeout=30)
        try:
            while not self._stop.is_set():
                self._wrote.wait()
                if self._stop.is_set():
                    break
                self._wrote.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:  # e.g. the file went away under a test; the next write retries
                    log.exception("checkpointing the store failed")
                self._stop.wait(pause)  # let writes gather between checkpoints
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes; WAL fsyncs at checkpoint
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")  # the log file shrinks back to this after a reset
        return conn

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = ready.get_loop()
        try:
            conn = self._connect()
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it (see above)
            # Each job's savepoint keeps the pages it changes in a statement journal, a
            # temporary file by default: 0.3 ms of system calls a call. In memory it is a
            # call's changed pages at most (a few hundred KB), gone at the commit.
            conn.execute("PRAGMA temp_store=MEMORY")
            _migrate(conn)
        except sqlite3.DatabaseError as e:  # its directory does not exist or is not writable; not a database
            error = ConfigError(f"cannot open the store {Path(self.path).resolve()}: {e}; check --store, that its "
                                "directory exists and is writable, and that the file is a Proctor store")
            loop.call_soon_threadsafe(ready.set_exception, error)
            return
        except BaseException as e:  # report to the opener, then stop
            loop.call_soon_threadsafe(ready.set_exception, e)
            return
        loop.call_soon_threadsafe(ready.set_result, None)
        behind = True  # events recorded before this process started may await indexing
        while True:
            if behind:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:  # idle: one step of deferred work, then look again
                    behind = self._index_search(conn)
                    continue
            else:
                job = self._jobs.get()
            if job is None:
                break
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
            if any(is_write for _, is_write, _ in batch):
                self._wrote.set()
                behind = True
                self._bound_log(conn)
                self._index_search(conn, only_if_lagging=True)  # never idle: index between batches too
        conn.close()

    def _bound_log(self, conn: sqlite3.Connection) -> None:
        """Every few write batches, past ``wal_limit``, copy the rest of the log (see
        the module docstring). Never raises: a busy checkpoint is tried again later."""
        self._write_batches += 1
        if self._write_batches % 8:
            return
        try:
            if os.path.getsize(self.path + "-wal") > self.wal_limit:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (OSError, sqlite3.Error):  # no log file yet, or the checkpointer holds the checkpoint lock
            pass

    def _index_search(self, conn: sqlite3.Connection, only_if_lagging: bool = False) -> bool:
        """Index one chunk of new events for full-text search (with ``only_if_lagging``,
        only when more than MAX_LAG wait); True while more wait. Never raises: the
        writer thread must outlive any failure here."""
        try:
            latest = latest_event(conn)
            if latest <= self._indexed or only_if_lagging and latest - self._indexed <= MAX_LAG:
                return latest > self._indexed
            conn.execute("BEGIN IMMEDIATE")
            self._indexed, left = index_pending(conn)
            conn.execute("COMMIT")
            self._wrote.set()
        except Exception:  # searches still see unindexed events; try again after the next write
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.exception("indexing events for search failed")
            return False
        return left > 0

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
        # One wake-up of each event loop per batch: call_soon_threadsafe writes to
        # the loop's self-pipe, a system call per call otherwise.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for item in results:
            by_loop.setdefault(item[0].get_loop(), []).append(item)
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, settled)

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

    async def match_history(self, chain: Sequence[str], session_id: str) -> HistoryMatch:
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
                rows = conn.execute(  # content a request-stage refusal withheld is not held: it is judged when it comes back
                    f"SELECT DISTINCT hash FROM events WHERE session_id = ? AND hash IN ({marks})"
                    " AND (labels IS NULL OR CAST(labels AS TEXT) NOT LIKE '%\"withheld\"%')", [session_id, *part]
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

    async def session_with_request(self, node: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT session_id FROM nodes WHERE id = ? AND request_end = 1 ORDER BY time DESC LIMIT 1", (node,)
            ).fetchone()
            return row[0] if row else None

        return self._now(read)

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

    async def latest_system_hashes(self, session_id: str, limit: int) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT hash FROM events WHERE session_id = ? AND kind = 'system'"
                " AND (labels IS NULL OR CAST(labels AS TEXT) NOT LIKE '%\"withheld\"%') ORDER BY seq DESC LIMIT ?",
                (session_id, limit),
            ).fetchall()
            return [r[0] for r in reversed(rows)]

        return self._now(read)

    async def denied_calls(self, response_id: str) -> list[tuple[str, str, str]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
            row = conn.execute("SELECT denied FROM responses WHERE id = ?", (response_id,)).fetchone()
            return [tuple(item) for item in orjson.loads(row[0])] if row and row[0] else []  # type: ignore[misc]

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
            return session_with_tree(conn, row), [_event_from_row(r) for r in reversed(rows)]

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


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in settled:
        if fut.done():  # cancelled by its caller meanwhile
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
