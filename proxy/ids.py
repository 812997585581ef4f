"""Random identifiers for sessions, calls, decisions and the replies Proctor writes.

``uuid.uuid4()`` reads ``os.urandom`` on every call, a system call that lets go
of the GIL: on the event loop's hot path that hands the GIL to the store's
thread, and the loop may then wait a whole switch interval to get it back (py-spy
put 0.3 ms of each fresh call there at 16 connections). Ids are cut from a pool
of ``os.urandom`` bytes instead, refilled every few hundred ids, so they stay
unpredictable (a session id returned to one client must not let another guess
the next) at the cost of one system call per pool. A forked child starts with
an empty pool, never its parent's bytes.
"""

from __future__ import annotations

import os
import threading

_POOL_BYTES = 4096
_lock = threading.Lock()
_pool = b""
_at = 0


def _empty_pool() -> None:
    global _pool, _at, _lock
    _pool, _at, _lock = b"", 0, threading.Lock()  # a lock held by another thread at fork would never be released


os.register_at_fork(after_in_child=_empty_pool)


def _random_bytes(n: int) -> bytes:
    global _pool, _at
    with _lock:
        if _at + n > len(_pool):
            _pool, _at = os.urandom(max(_POOL_BYTES, n)), 0
        out = _pool[_at:_at + n]
        _at += n
        return out


def random_hex(n: int) -> str:
    """``n`` random hexadecimal digits."""
    return _random_bytes((n + 1) // 2).hex()[:n]


def new_uuid() -> str:
    """A random (version 4) UUID in its canonical text form."""
    b = bytearray(_random_bytes(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
