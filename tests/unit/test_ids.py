"""Random ids: the right shape, unique, and not shared with a forked child."""

from __future__ import annotations

import os
import uuid

from proxy.ids import new_uuid, random_hex


def test_random_hex_has_the_asked_length_and_is_unique() -> None:
    ids = {random_hex(20) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 20 and int(i, 16) >= 0 for i in ids)


def test_new_uuid_is_a_canonical_version_4_uuid() -> None:
    for _ in range(1_000):
        text = new_uuid()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, random_hex(32).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != random_hex(32)
