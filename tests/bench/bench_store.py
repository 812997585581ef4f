"""Store benchmark: what does recording one call cost the SQLite store?

    python -m tests.bench.bench_store [--calls N] [--warmup N]

Opens a real :class:`SqliteStore` in a temporary directory and times
``record_call`` as the proxy makes it (``proxy/calls.py::_record``: the call's
new events, their history nodes, reply and spawn hashes, and the decision-log
records with inputs of a few KB), one call at a time, for three shapes:

- ``new-20``: a call that opens a session with 20 events (~400 B each) and 2 decisions;
- ``new-200``: the same with 200 events (~100 KB of text);
- ``cont-2``: a call that adds 2 events (and 2 decisions) to a session of 1,000 events.

For each it prints the median and p90 latency of ``record_call`` (from the
event loop, thread hops included) and the store thread's CPU per call, split
into the part spent while calls wait (``hot``: the write batches, commit
included) and the part spent after (``idle``: work the store thread defers
until its queue is empty, such as search indexing; 0 when nothing is
deferred). The run ends only when the search index has caught up, so
``hot + idle`` is the whole cost. Not a pytest module.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from adapters.model import EventKind, TrajectoryEvent
from proxy import history
from proxy.policy.decision import Decision, Finding
from proxy.policy.point import DecisionRecord, event_doc
from proxy.sessions import spawn_hashes
from proxy.store.base import CallRecord, NewCall
from proxy.store.sqlite import SqliteStore

_RNG = random.Random(7)
_WORDS = ("the file config deploy server user request error result value build test cluster token note ticket"
          " report summary update branch commit review merge agent search fetch page table index query row").split()
TOOLS = [
    {"name": name, "description": f"{name.replace('_', ' ')}: " + " ".join(_RNG.choices(_WORDS, k=40))}
    for name in ("read_file", "write_file", "run_shell", "fetch_url", "search_web", "send_email", "grep", "list_dir")
]


def _text(size: int) -> str:
    words: list[str] = []
    n = 0
    while n < size:
        w = _RNG.choice(_WORDS)
        words.append(w)
        n += len(w) + 1
    return " ".join(words)


def events(n: int, size: int = 400, opening: bool = True) -> list[TrajectoryEvent]:
    """A realistic stretch of trajectory: user turns, tool calls and results, answers."""
    out: list[TrajectoryEvent] = []
    if opening:
        out.append(TrajectoryEvent(kind=EventKind.SYSTEM, role="system", text=_text(size)))
    while len(out) < n:
        i = len(out)
        step = i % 4
        if step == 0:
            out.append(TrajectoryEvent(kind=EventKind.USER, role="user", text=_text(size)))
        elif step == 1:
            cid = f"call_{uuid.uuid4().hex[:24]}"
            out.append(TrajectoryEvent(
                kind=EventKind.TOOL_CALL, role="assistant", tool_name=_RNG.choice(TOOLS)["name"], tool_call_id=cid,
                arguments={"path": f"/srv/app/{_RNG.choice(_WORDS)}.py", "query": _text(size // 2)},
            ))
        elif step == 2:
            out.append(TrajectoryEvent(kind=EventKind.TOOL_RESULT, role="tool", text=_text(size),
                                       tool_call_id=out[-1].tool_call_id, labels={"untrusted": True}))
        else:
            out.append(TrajectoryEvent(kind=EventKind.ASSISTANT, role="assistant", text=_text(size)))
    return out[:n]


def decision(session_id: str, call_id: str, stage: str, base: int, new: list[TrajectoryEvent],
             action: TrajectoryEvent | None, deny: bool = False) -> DecisionRecord:
    """A decision-log record shaped as PolicyPoint.judge makes it (input without the trajectory)."""
    doc: dict[str, Any] = {
        "stage": stage,
        "session": {
            "id": session_id, "parent": None, "root": session_id, "depth": 0, "labels": {"untrusted_seen": True},
            "counters": {"calls": 3, "events": base, "input_tokens": 12000, "output_tokens": 900,
                         "tool_calls": {"read_file": 3, "grep": 2}, "tool_calls_total": 5, "decisions": {}},
            "tree": {"sessions": 1, "counters": {}}, "started": time.time() - 60, "status": "active", "events": base,
        },
        "new": {"count": len(new), "from_seq": base, "to_seq": base + len(new)},
        "action": event_doc(action, base + len(new)) if action is not None else None,
        "call": {
            "api": "chat", "model": "gpt-4o-mini", "tools": TOOLS,
            "params": {"temperature": 0.2, "max_tokens": 1024, "tool_choice": "auto"},
            "client": {"agent": "researcher", "user_agent": "OpenAI/Python 1.99.1", "key_id": "a1b2c3d4e5f6"},
        },
    }
    found = (Finding("flow.untrusted_to_external", "untrusted data may not leave", "enforce"),) if deny else ()
    return DecisionRecord(
        decision_id=str(uuid.uuid4()), session_id=session_id, call_id=call_id, stage=stage, path="data.proctor.decision",
        input=doc, trajectory_range=(0, base + len(new)),
        result={"allow": not deny, "deny": [{"rule": f.rule, "message": f.message} for f in found], "labels": {}},
        decision=Decision(deny=found), revision="rev-3f2a9c", engine="embedded", eval_ms=0.4, time=time.time(),
    )


class Session:
    """One agent session as the proxy would record it, call after call."""

    def __init__(self) -> None:
        self.id = f"sess_{uuid.uuid4().hex}"
        self.tail = history.ROOT
        self.seq = 0
        self.calls = 0

    def next_call(self, n: int, size: int = 400) -> NewCall:
        evs = events(n, size, opening=self.calls == 0)
        call_id = f"call_{uuid.uuid4().hex}"
        nodes = history.chain(evs, start=self.tail)
        parents = [self.tail, *nodes[:-1]]
        reply = evs[-2:]
        action = next((e for e in reversed(evs) if e.kind is EventKind.TOOL_CALL), None)
        record = CallRecord(
            id=call_id, session_id=self.id, api="chat", path="/v1/chat/completions", model="gpt-4o-mini", stream=False,
            started=time.time(), latency_ms=850.0, status=200, resolved_by="new" if self.calls == 0 else "history",
            input_tokens=4000, output_tokens=300, response_id=f"chatcmpl-{uuid.uuid4().hex[:20]}",
        )
        new = NewCall(
            call=record, events=evs, nodes=[(node, parent, i) for i, (node, parent) in enumerate(zip(nodes, parents))],
            response_id=record.response_id, response_node=nodes[-1],
            reply_hashes=list(dict.fromkeys(ev.hash for ev in reply)), spawn_hashes=spawn_hashes(reply),
            labels={"untrusted_seen": True},
            decisions=[
                decision(self.id, call_id, "request", self.seq, evs[:-2], None),
                decision(self.id, call_id, "action", self.seq, evs[:-2], action, deny=self.calls % 7 == 3),
            ],
        )
        self.tail, self.seq, self.calls = nodes[-1], self.seq + n, self.calls + 1
        return new


class CpuMeter:
    """CPU of the store thread, split into write batches and everything else."""

    def __init__(self, store: SqliteStore) -> None:
        self.batches = 0.0
        run_batch = store._run_batch

        def timed(*args: Any) -> None:
            t0 = time.thread_time()
            try:
                run_batch(*args)
            finally:
                self.batches += time.thread_time() - t0

        store._run_batch = timed  # type: ignore[method-assign]
        self.store = store

    def total(self) -> float:
        """The store thread's whole CPU so far (its schedstat, in ns)."""
        assert self.store._thread is not None
        tid = self.store._thread.native_id
        return int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0]) / 1e9


def _fts_behind(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        top = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0]
        done = conn.execute("SELECT coalesce((SELECT rowid FROM events_fts ORDER BY rowid DESC LIMIT 1), 0)").fetchone()[0]
        return top - done
    finally:
        conn.close()


async def run(name: str, make: Callable[[], NewCall], calls: int, warmup: int, prepare: Callable[[SqliteStore], Any] | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        await store.open()
        try:
            if prepare is not None:
                await prepare(store)
            for _ in range(warmup):
                await store.record_call(make())
            while _fts_behind(store.path):
                await asyncio.sleep(0.01)
            news = [make() for _ in range(calls)]  # built before timing: only the store is measured
            meter = CpuMeter(store)
            cpu0 = meter.total()
            lat = []
            for new in news:
                t0 = time.perf_counter()
                await store.record_call(new)
                lat.append(time.perf_counter() - t0)
            hot = meter.batches
            while _fts_behind(store.path):
                await asyncio.sleep(0.005)
            await store.get_calls("x")  # one more hop: the store thread has finished what it was doing
            total = meter.total() - cpu0
        finally:
            await store.close()
    lat.sort()
    row = {
        "median_ms": statistics.median(lat) * 1000, "p90_ms": lat[int(len(lat) * 0.9)] * 1000,
        "hot_cpu_ms": hot / calls * 1000, "idle_cpu_ms": max(total - hot, 0.0) / calls * 1000,
        "cpu_ms": total / calls * 1000,
    }
    print(f"{name:8} {row['median_ms']:9.2f} {row['p90_ms']:9.2f} {row['hot_cpu_ms']:10.2f} {row['idle_cpu_ms']:10.2f}"
          f" {row['cpu_ms']:10.2f}", flush=True)
    return row


async def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=300, help="timed calls per shape (new-200 runs a third of them)")
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args(argv)
    print(f"sqlite {sqlite3.sqlite_version}; {args.calls} calls a shape, one at a time")
    print(f"{'shape':8} {'median ms':>9} {'p90 ms':>9} {'hot cpu ms':>10} {'idle cpu ms':>10} {'cpu ms':>10}")
    await run("new-20", lambda: Session().next_call(20), args.calls, args.warmup)
    await run("new-200", lambda: Session().next_call(200, 500), max(args.calls // 3, 10), max(args.warmup // 3, 3))

    long = Session()

    async def grow(store: SqliteStore) -> None:
        for _ in range(10):
            await store.record_call(long.next_call(100))

    await run("cont-2", lambda: long.next_call(2), args.calls, args.warmup, prepare=grow)


if __name__ == "__main__":
    asyncio.run(main())
