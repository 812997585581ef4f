"""Part 2 of the session benchmark: what resolving a call costs against the
session's history length, in time, store calls, SQL statements and SQLite VM
instructions, per resolution path."""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any, Awaitable, Callable

from multidict import CIMultiDict

from adapters.model import Call, EventKind, TrajectoryEvent
from proxy import history
from proxy.config import ProxyConfig
from proxy.sessions import Resolution, SessionResolver, spawn_hashes
from proxy.store.base import CallRecord, NewCall
from proxy.store.sqlite import SqliteStore

Json = dict[str, Any]


class StoreMeter:
    """Counts store method calls (wrapped on the instance), SQL statements (trace
    callback) and SQLite VM instructions (progress handler) on the store's connection."""

    METHODS = ("match_history", "find_continuation", "reply_sessions", "known_hashes", "known_tool_calls",
               "find_spawner", "session_for_response", "get_session")

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()
        self.sql = 0
        self.vm = 0
        self.on = False
        for name in self.METHODS:
            setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*a: Any, **kw: Any) -> Any:
            if self.on:
                self.calls[name] += 1
            return await fn(*a, **kw)
        return wrapper

    async def install(self) -> None:
        def trace(_stmt: str) -> None:
            if self.on:
                self.sql += 1

        def progress() -> int:
            self.vm += 1
            return 0

        def setup(conn: sqlite3.Connection) -> None:
            conn.set_trace_callback(trace)
            conn.set_progress_handler(progress, 1)

        await self.store._submit(setup, write=False)

    async def uninstall(self) -> None:
        def teardown(conn: sqlite3.Connection) -> None:
            conn.set_trace_callback(None)
            conn.set_progress_handler(None, 1)

        await self.store._submit(teardown, write=False)

    def reset(self) -> None:
        self.calls.clear()
        self.sql = self.vm = 0


def _new_call(res: Resolution, call: Call, reply: list[TrajectoryEvent], response_id: str) -> NewCall:
    """What the proxy records for a call resolved as ``res`` that got ``reply``
    (as proxy/calls.py builds it, without policy decisions)."""
    nodes = list(res.nodes)
    reply_nodes = history.chain(reply, start=res.tail)
    parent = res.tail
    for i, node in enumerate(reply_nodes):
        nodes.append((node, parent, len(res.append) + i))
        parent = node
    record = CallRecord(id="call_" + response_id, session_id=res.session_id, api=call.api, path="/v1/chat/completions",
                        model=call.model, stream=False, started=time.time(), latency_ms=1.0, status=200,
                        resolved_by=res.resolved_by, response_id=response_id)
    return NewCall(call=record, events=[*res.append, *reply], nodes=nodes, response_id=response_id,
                   response_node=reply_nodes[-1] if reply_nodes else None, parent_session_id=res.parent_session_id,
                   reply_hashes=[ev.hash for ev in reply], spawn_hashes=spawn_hashes(reply))


def _ev(kind: EventKind, **kw: Any) -> TrajectoryEvent:
    return TrajectoryEvent(kind=kind, **kw)


async def resolution_cost(db: Path, lengths: tuple[int, ...], repeat: int) -> list[str]:
    store = SqliteStore(db)
    await store.open()
    resolver = SessionResolver(store, ProxyConfig(store=f"sqlite:///{db}"))
    meter = StoreMeter(store)
    header = "X-Proctor-Session"

    def call_of(events: list[TrajectoryEvent], api: str = "chat", prev: str | None = None) -> Call:
        return Call(api=api, model="m", stream=False, history=tuple(events), previous_response_id=prev)

    async def record(call: Call, headers: CIMultiDict[str], reply: list[TrajectoryEvent], response_id: str) -> str:
        res = await resolver.resolve(headers, call)
        await store.record_call(_new_call(res, call, reply, response_id))
        return res.session_id

    rows: list[tuple[str, int, int, float, float, float, float, float, str]] = []
    tag = f"{random.getrandbits(32):08x}"
    sys_ev = _ev(EventKind.SYSTEM, text=f"cost bench {tag}: you are a coding agent")
    hist: list[TrajectoryEvent] = [sys_ev, _ev(EventKind.USER, text=f"Task {tag}: refactor the store layer.")]
    sid: str | None = None
    last_response = ""
    k = 0
    targets = sorted(lengths)
    while targets:
        # the next call: its history has len(hist) events; the session holds all but the last
        call = call_of(hist)
        if sid is not None and len(hist) == targets[0]:
            targets.pop(0)
            rows.extend(await _measure(resolver, meter, call, hist, sid, last_response, repeat, header))
        resp_id = f"resp_{tag}_{k}"
        reply = [_ev(EventKind.TOOL_CALL, tool_name="read_file", arguments={"path": f"src/m{k}.py", "tag": tag},
                     tool_call_id=f"call_{tag}_{k}")]
        got = await record(call, CIMultiDict(), reply, resp_id)
        assert sid is None or got == sid, f"the cost session split at {len(hist)} events ({got} != {sid})"
        sid, last_response = got, resp_id
        hist = hist + reply + [_ev(EventKind.TOOL_RESULT, text=f"contents of src/m{k}.py ({tag})",
                                   tool_name="read_file", tool_call_id=f"call_{tag}_{k}")]
        # Past 100 events, calls also carry 9 more tool rounds (recorded as unverified model
        # turns), so the session reaches 1,000 events in about 50 calls rather than 450; the
        # last calls before a measured length grow by one round, so the measured call and the
        # one before it continue replies Proctor returned.
        for j in range(9 if len(hist) >= 100 and targets and targets[0] - len(hist) >= 22 else 0):
            cid = f"x_{tag}_{k}_{j}"
            hist = hist + [_ev(EventKind.TOOL_CALL, tool_name="grep", arguments={"q": cid}, tool_call_id=cid),
                           _ev(EventKind.TOOL_RESULT, text=f"{cid}: no match", tool_name="grep", tool_call_id=cid)]
        k += 1
    await store.close()

    out = [f"{'path':40} {'session':>7} {'request':>7} {'us/call':>8} {'hash us':>8} {'store calls':>11} {'SQL':>4}"
           f" {'VM instr':>9}  resolved_by"]
    prev = None
    for name, n, m, us, hash_us, scalls, sql, vm, rule in sorted(rows, key=lambda r: (_PATHS.index(r[0]), r[1])):
        if prev is not None and name != prev:
            out.append("")
        prev = name
        out.append(f"{name:40} {n:>7} {m:>7} {us:>8.0f} {hash_us:>8.0f} {scalls:>11.1f} {sql:>4.1f} {vm:>9.0f}  {rule}")
    out.append("")
    lo, hi = sorted(lengths)[-2:]
    for name in _PATHS:
        vm = {r[1]: r[7] for r in rows if r[0] == name}
        sql = {r[1]: r[6] for r in rows if r[0] == name}
        growth = vm[hi] / max(vm[lo], 1)
        verdict = "flat" if growth < 1.5 and sql[hi] <= sql[lo] else f"GROWS x{growth:.1f}"
        out.append(f"store work, session {lo} -> {hi} events, {name + ':':40} {verdict}")
    return out


_PATHS = (
    "continuation (history)",
    "continuation (explicit header)",
    "previous_response_id",
    "retry of the previous call (history)",
    "branch from the middle (history)",
    "compacted to 6 events (no header)",
    "compacted to 6 events (explicit header)",
    "unknown history, same length (new)",
)


async def _measure(resolver: SessionResolver, meter: StoreMeter, call: Call, hist: list[TrajectoryEvent], sid: str,
                   last_response: str, repeat: int, header: str) -> list[tuple[str, int, int, float, float, float, float, float, str]]:
    n = len(hist)
    user = _ev(EventKind.USER, text="No, do it differently.")
    half = max(4, (n // 2) & ~1)  # end right after a tool result
    compacted = hist[:2] + hist[-4:]
    unknown = [_ev(EventKind.SYSTEM, text=f"other agent {n}"), _ev(EventKind.USER, text=f"imported history {n}")]
    while len(unknown) < n:
        i = len(unknown)
        unknown += [_ev(EventKind.TOOL_CALL, tool_name="grep", arguments={"q": f"x{i}-{n}"}, tool_call_id=f"u{i}"),
                    _ev(EventKind.TOOL_RESULT, text=f"r{i}", tool_name="grep", tool_call_id=f"u{i}")]
    none: CIMultiDict[str] = CIMultiDict()
    named: CIMultiDict[str] = CIMultiDict({header: sid})
    def chat(events: Any) -> Call:
        return Call(api="chat", model="m", stream=False, history=tuple(events))

    cases: list[tuple[str, CIMultiDict[str], Call]] = list(zip(_PATHS, (none, named, none, none, none, none, named, none), (
        call,
        call,
        Call(api="responses", model="m", stream=False, history=(hist[-1],), previous_response_id=last_response),
        chat(hist[:-2]),
        chat((*hist[:half], user)),
        chat(compacted),
        chat(compacted),
        chat(unknown),
    )))
    rows = []
    for name, headers, c in cases:
        # hashing alone: what any resolution of this history pays
        hash_times = []
        for _ in range(repeat):
            t = time.perf_counter()
            history.chain(c.history)
            hash_times.append(time.perf_counter() - t)
        hash_us = min(hash_times) * 1e6
        # wall time per resolve (no instrumentation)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            res = await resolver.resolve(headers, c)
            times.append(time.perf_counter() - t)
        # store work per resolve
        meter.reset()
        meter.on = True
        await meter.install()
        reps = 3
        for _ in range(reps):
            res = await resolver.resolve(headers, c)
        meter.on = False
        await meter.uninstall()
        expected = sid if not name.startswith("unknown") else None
        rule = res.resolved_by + ("" if expected is None or res.session_id == expected else " (WRONG SESSION)")
        rows.append((name, n, len(c.history), min(times) * 1e6, hash_us,
                     sum(meter.calls.values()) / reps, meter.sql / reps, meter.vm / reps, rule))
    return rows
