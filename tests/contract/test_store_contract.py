"""The SessionStore contract, run against every store implementation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.model import EventKind, TrajectoryEvent
from proxy import history
from proxy.store.base import CallRecord, NewCall, SessionStore
from proxy.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    s = SqliteStore(tmp_path / "contract.db")
    await s.open()
    yield s
    await s.close()


def _call(session_id: str, n: int = 0, **kw: object) -> CallRecord:
    return CallRecord(
        id=f"call_{session_id}_{n}_{time.perf_counter_ns()}", session_id=session_id, api="chat",
        path="/v1/chat/completions", model="m", stream=False, started=time.time(), latency_ms=1.0,
        status=200, resolved_by="header", **kw,  # type: ignore[arg-type]
    )


def _events(*texts: str) -> list[TrajectoryEvent]:
    return [TrajectoryEvent(kind=EventKind.USER, text=t) for t in texts]


def _new(session_id: str, events: list[TrajectoryEvent], base: str = history.ROOT, reply_end: bool = False, **kw: object) -> NewCall:
    nodes = history.chain(events, start=base)
    parents = [base, *nodes[:-1]]
    return NewCall(
        call=_call(session_id), events=events,
        nodes=[(n, p, i) for i, (n, p) in enumerate(zip(nodes, parents))],
        response_node=nodes[-1] if reply_end and nodes else None, **kw,  # type: ignore[arg-type]
    )


async def test_record_call_places_events_in_order(store: SessionStore) -> None:
    placed = await store.record_call(_new("s1", _events("a", "b")))
    placed += await store.record_call(_new("s1", _events("c")))
    assert [e.seq for e in placed] == [0, 1, 2]
    got = await store.get_events("s1")
    assert [(e.seq, e.text, e.session_id) for e in got] == [(0, "a", "s1"), (1, "b", "s1"), (2, "c", "s1")]
    session = await store.get_session("s1")
    assert session is not None and (session.calls, session.events, session.status) == (2, 3, "active")
    assert len(await store.get_calls("s1")) == 2


async def test_unknown_session_is_none(store: SessionStore) -> None:
    assert await store.get_session("nope") is None
    assert await store.get_events("nope") == []


async def test_events_round_trip_all_fields(store: SessionStore) -> None:
    ev = TrajectoryEvent(
        kind=EventKind.TOOL_CALL, tool_name="send_email", arguments={"to": "a@b.c", "n": [1, 2]},
        tool_call_id="call_1", role="assistant", labels={"untrusted": True},
    )
    await store.record_call(_new("s2", [ev]))
    (got,) = await store.get_events("s2")
    assert (got.kind, got.tool_name, got.arguments, got.tool_call_id, got.role, got.labels) == (
        ev.kind, ev.tool_name, ev.arguments, ev.tool_call_id, ev.role, ev.labels)
    assert got.hash == ev.hash


async def test_known_hashes_leave_out_withheld_events(store: SessionStore) -> None:
    """Content a request-stage refusal withheld is recorded, but not held: it is
    judged again whenever it comes back."""
    kept, withheld = _events("an ordinary turn", "content a rule refused")
    withheld = TrajectoryEvent(kind=withheld.kind, text=withheld.text, labels={"withheld": True})
    await store.record_call(_new("s-withheld", [kept, withheld]))
    assert await store.known_hashes("s-withheld", [kept.hash, withheld.hash]) == {kept.hash}


async def test_match_history_finds_longest_prefix_within_session(store: SessionStore) -> None:
    evs = _events(*[f"m{i}" for i in range(40)])
    await store.record_call(_new("s3", evs[:30]))
    full = history.chain(evs)
    match = await store.match_history(full, "s3")
    assert (match.length, match.node, match.session_id) == (30, full[29], "s3")
    assert (await store.match_history(full, "other")).length == 0
    # a prefix that diverges early still finds the shared part (binary search path)
    diverged = history.chain([*evs[:5], *_events(*[f"x{i}" for i in range(50)])])
    assert (await store.match_history(diverged, "s3")).length == 5


async def test_find_continuation_needs_a_reply_end(store: SessionStore) -> None:
    evs = _events("sys", "task", "reply")
    await store.record_call(_new("s4", evs[:2]))
    full = history.chain([*evs, *_events("tool result")])
    assert (await store.find_continuation(full)).session_id is None  # shared prompt alone is no continuation
    await store.record_call(_new("s4", evs[2:], base=full[1], reply_end=True))
    match = await store.find_continuation(full)
    assert (match.length, match.session_id) == (3, "s4")


async def test_response_ids_map_to_session_and_node(store: SessionStore) -> None:
    new = _new("s5", _events("hi"), reply_end=True, response_id="resp_1")
    new = NewCall(call=new.call, events=new.events, nodes=new.nodes, response_id="resp_1", response_node=new.nodes[0][0])
    await store.record_call(new)
    assert await store.session_for_response("resp_1") == ("s5", new.nodes[0][0])
    assert await store.session_for_response("resp_unknown") is None
    assert await store.denied_calls("resp_1") == [] and await store.denied_calls("resp_unknown") == []


async def test_a_response_keeps_the_calls_denied_out_of_it(store: SessionStore) -> None:
    new = _new("s6", _events("hi"), reply_end=True, response_id="resp_2")
    denied = [("call_a", "function_call_output", "mail.never: no mail"), ("call_b", "custom_tool_call_output", "x: y")]
    await store.record_call(NewCall(call=new.call, events=new.events, nodes=new.nodes, response_id="resp_2",
                                    response_node=new.nodes[0][0], denied_calls=denied))
    assert await store.denied_calls("resp_2") == denied


async def test_child_session_gets_root_and_depth(store: SessionStore) -> None:
    await store.record_call(_new("parent", _events("p")))
    await store.record_call(_new("child", _events("c"), parent_session_id="parent"))
    await store.record_call(_new("grandchild", _events("g"), parent_session_id="child"))
    g = await store.get_session("grandchild")
    assert g is not None and (g.parent_id, g.root_id, g.depth) == ("child", "parent", 2)


async def test_concurrent_calls_of_one_session_get_one_total_order(store: SessionStore) -> None:
    await asyncio.gather(*(store.record_call(_new("s6", _events(f"{i}a", f"{i}b"))) for i in range(50)))
    got = await store.get_events("s6")
    assert [e.seq for e in got] == list(range(100))
    # each call's two events stay adjacent and in order
    for first, second in zip(got[::2], got[1::2]):
        assert first.call_id == second.call_id and first.text[:-1] == second.text[:-1]


_WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from adapters.model import EventKind, TrajectoryEvent
    from proxy.store.base import CallRecord, NewCall
    from proxy.store.sqlite import SqliteStore

    async def main(path, tag, n):
        s = SqliteStore(path)
        await s.open()
        async def one(i):
            call = CallRecord(id=f"{tag}-{i}", session_id="shared", api="chat", path="/", model="m", stream=False,
                              started=time.time(), latency_ms=0, status=200, resolved_by="header")
            evs = [TrajectoryEvent(kind=EventKind.USER, text=f"{tag}-{i}-{k}") for k in range(3)]
            await s.record_call(NewCall(call=call, events=evs, nodes=()))
        await asyncio.gather(*(one(i) for i in range(n)))
        await s.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_two_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first = SqliteStore(path)
    await first.open()  # create the schema once
    await first.close()
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, "60"], cwd=Path(__file__).parents[2])
        for tag in ("A", "B")
    ]
    assert [p.wait(60) for p in procs] == [0, 0]
    reader = SqliteStore(path)
    await reader.open()
    try:
        got = await reader.get_events("shared")
        session = await reader.get_session("shared")
    finally:
        await reader.close()
    assert [e.seq for e in got] == list(range(360))
    assert sorted(e.text for e in got) == sorted(f"{t}-{i}-{k}" for t in "AB" for i in range(60) for k in range(3))
    for i in range(0, 360, 3):  # a call's events are never interleaved with another's
        assert len({e.call_id for e in got[i:i + 3]}) == 1
    assert session is not None and (session.calls, session.events) == (120, 360)


async def test_root_keeps_its_trees_totals(store: SessionStore) -> None:
    tool_call = TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="search", arguments={}, tool_call_id="c")
    await store.record_call(_new("root", [tool_call]))
    await store.record_call(_new("kid", [tool_call, tool_call], parent_session_id="root"))
    await store.record_call(_new("grandkid", [tool_call], parent_session_id="kid"))
    await store.record_call(_new("other", [tool_call]))
    for sid in ("root", "kid", "grandkid"):
        record, _ = await store.session_view(sid, 4)
        assert record is not None
        assert record.tree["sessions"] == 3
        assert record.tree["counters"]["tool_calls_total"] == 4 and record.tree["counters"]["calls"] == 3
    other, _ = await store.session_view("other", 4)
    assert other is not None and other.tree["sessions"] == 1 and other.tree["counters"]["tool_calls_total"] == 1


async def test_the_log_is_checkpointed_in_the_background(tmp_path: Path) -> None:
    """Commits never checkpoint (the writer turns that off), so a thread of the
    store's own must copy the write-ahead log into the database file while it is
    open; otherwise the log would only grow."""
    import os

    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        db = tmp_path / "s.db"
        before = os.path.getsize(db)
        for i in range(60):
            await store.record_call(_new(f"s{i}", _events(*(f"event {i}.{j} " * 40 for j in range(20)))))
        deadline = time.monotonic() + 5
        while os.path.getsize(db) <= before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert os.path.getsize(db) > before, "nothing reached the database file while the store was open"
    finally:
        await store.close()


async def test_the_log_stays_bounded_under_writes_that_never_pause(tmp_path: Path) -> None:
    """PASSIVE checkpoints alongside writes that never pause never find the whole log
    copied when a write begins, so it never started over (735 MB after 3,000 calls):
    past wal_limit the writer completes one itself and the log starts over."""
    import os

    store = SqliteStore(tmp_path / "s.db")
    store.wal_limit = 1024 * 1024
    await store.open()
    try:
        text = "a line of a tool result that the store keeps " * 10
        for i in range(0, 600, 4):  # 4 calls in flight at all times, 20 events each
            await asyncio.gather(*(store.record_call(_new(f"s{j}", _events(*(f"{text}{j}.{k}" for k in range(20)))))
                                   for j in range(i, i + 4)))
        wal = os.path.getsize(tmp_path / "s.db-wal")
        assert wal < 16 * 1024 * 1024, f"the log grew to {wal / 1e6:.0f} MB"  # 3.4 MB; without the bound 38 MB
        assert len(await store.get_events("s599")) == 20  # and nothing was lost
    finally:
        await store.close()


async def _written_by_schema(path: Path, version: int, call: NewCall, downgrade: list[str]) -> None:
    """A store file as schema ``version`` left it: ``call`` recorded by today's code,
    then the schema taken back by the ``downgrade`` statements."""
    import sqlite3

    store = SqliteStore(path)
    await store.open()
    await store.record_call(call)
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in downgrade:
        conn.execute(statement)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.close()


async def test_a_v3_store_gets_the_partial_tool_call_indexes(tmp_path: Path) -> None:
    """Schema 4 indexes tool-call ids of tool calls only; a store written by schema 3
    (full indexes) migrates, and the lookups that need them still use an index."""
    import sqlite3

    path = tmp_path / "v3.db"
    await _written_by_schema(path, 3, _new("s3", _events("before the upgrade")), [
        "DROP INDEX events_tool_calls",
        "DROP INDEX events_session_tool_calls",
        'CREATE INDEX idx_events_tool_call_id ON events ("tool_call_id")',
        'CREATE INDEX idx_events_session_id_tool_call_id ON events ("session_id", "tool_call_id")',
    ])

    store = SqliteStore(path)
    await store.open()
    try:
        call = TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="read", arguments={}, tool_call_id="tc_1")
        await store.record_call(_new("s3", [call]))
        assert await store.known_tool_calls("s3", ["tc_1"]) == {"tc_1": "read"}
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")}
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT DISTINCT session_id FROM events WHERE tool_call_id = ? AND kind = 'tool_call'", ("x",)))
    conn.close()
    assert {"events_tool_calls", "events_session_tool_calls"} <= names
    assert not names & {"idx_events_tool_call_id", "idx_events_session_id_tool_call_id"}
    assert "events_tool_calls" in plan


async def test_a_retry_finds_the_session_where_an_identical_request_ended(store: SessionStore) -> None:
    events = _events("system", "task", "more")
    new = _new("r1", events)
    nodes = [n for n, _, _ in new.nodes]
    await store.record_call(NewCall(call=new.call, events=new.events, nodes=new.nodes, request_node=nodes[-1]))
    assert await store.session_with_request(nodes[-1]) == "r1"
    assert await store.session_with_request(nodes[0]) is None  # a prefix of that request, not a request


async def test_a_v4_store_gets_the_node_end_indexes(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "v4.db"
    await _written_by_schema(path, 4, _new("old", _events("before the upgrade"), reply_end=True), [
        "DROP INDEX nodes_reply_ends",
        "DROP INDEX nodes_request_ends",
        "ALTER TABLE nodes DROP COLUMN request_end",
        'CREATE INDEX idx_nodes_id_time ON nodes ("id", "time")',
    ])

    store = SqliteStore(path)
    await store.open()
    try:
        chain = history.chain(_events("before the upgrade"))
        assert (await store.find_continuation(chain)).session_id == "old"  # reply ends survive the upgrade
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'nodes'")}
    conn.close()
    assert {"nodes_reply_ends", "nodes_request_ends"} <= names and "idx_nodes_id_time" not in names
