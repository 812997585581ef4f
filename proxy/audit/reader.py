"""Where the audit views' SQL runs: read-only connections of their own, on two
worker threads.

The store's writer thread commits every call the proxy records; an overview
that aggregates a week of traffic must not hold those commits up. SQLite in WAL
mode lets readers on other connections run beside the writer, each on a
consistent snapshot. A store that is not a file (``:memory:``) has nothing to
share, so its views run on the store's own connection (``SqliteStore.read``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, TypeVar

from aiohttp import web

from proxy.context import PROXY

T = TypeVar("T")


class AuditReader:
    def __init__(self, store: Any, threads: int = 2) -> None:
        self._store = store
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @property
    def _path(self) -> str | None:
        path = getattr(self._store, "path", None)
        return path if isinstance(path, str) and path and not path.startswith(":memory:") else None

    def start(self) -> None:
        if self._path is not None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="proctor-audit")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    async def __call__(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` (read-only SQL) and return what it returns."""
        if self._pool is None:
            read = getattr(self._store, "read", None)
            if read is None:
                raise RuntimeError("the audit views need the SQLite store")
            return await read(fn)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn)

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path or "", isolation_level=None, check_same_thread=False, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=1")
            conn.execute("PRAGMA busy_timeout=30000")
            # Pages come from the OS cache without a read() each; list pages and
            # session pages touch scattered rows of large tables.
            conn.execute("PRAGMA mmap_size=1073741824")
            conn.execute("PRAGMA cache_size=-32768")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return fn(conn)


READER = web.AppKey("audit_reader", AuditReader)


def audit_reader(app: web.Application) -> AuditReader:
    """The app's reader, made (with its start and stop) on first use: the JSON API
    and the UI both ask for it while the app is built."""
    if READER not in app:
        reader = app[READER] = AuditReader(app[PROXY].store)

        async def lifecycle(app: web.Application) -> AsyncIterator[None]:
            reader.start()
            yield
            await asyncio.get_running_loop().run_in_executor(None, reader.close)

        app.cleanup_ctx.append(lifecycle)
    return app[READER]
