"""Random identifiers for sessions, calls, decisions and the replies Proctor writes.

``uuid.uuid4()`` reads ``os.urandom`` on every call, a system call that lets go
of the GIL: on the event loop's hot path that hands the GIL to the store's
thread, and the loop may then wait a whole switch interval to get it back (py-spy
put 0.3 ms of each fresh call there at 16 connections). These ids need to be
unique, not secret (none of them grants anything), so they come from a
per-process generator seeded from ``os.urandom`` once, and again in a forked
child so that two processes never share a sequence.
"""

from __future__ import annotations

import os
import random

_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def random_hex(n: int) -> str:
    """``n`` random hexadecimal digits."""
    return f"{_rng.getrandbits(4 * n):0{n}x}"


def new_uuid() -> str:
    """A random (version 4) UUID in its canonical text form."""
    h = f"{_rng.getrandbits(128) & ~(0xF000 << 64) & ~(0xC << 60) | (0x4000 << 64) | (0x8 << 60):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
