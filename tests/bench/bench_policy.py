"""Policy cost per call against session length (issue 4).

Run: ``python -m tests.bench.bench_policy [--quick] [--policies DIR]``

For sessions already 10, 100, 1,000 and 10,000 events long (stored in a real
SQLite file), it times what enforcement adds to one call with the shipped
library: loading the session's state and policy window from the store, the
request-stage decision, and one action-stage decision for a tool call. It also
times a deliberately naive rule that scans the whole trajectory, fed the whole
trajectory, to show what incremental rules avoid. All figures are medians (and
p90) of repeated calls in one process, measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from adapters.model import Call, EventKind, ToolSpec, TrajectoryEvent
from proxy.approvals import Approvals
from proxy.config import ProxyConfig
from proxy.enforcement import Enforcement
from proxy.policy.embedded import EmbeddedEngine
from proxy.policy.point import PolicyPoint, event_doc
from proxy.sessions import Resolution
from proxy.store.base import CallRecord, NewCall
from proxy.store.sqlite import SqliteStore

SCAN_POLICY = """package proctor
import rego.v1
# A rule written the naive way: look through every event of the session.
emails_sent := count([ev | some ev in input.trajectory; ev.kind == "tool_call"; ev.tool_name == "send_email"])
decision := {"deny": [{"rule": "scan.too_many_emails", "message": "too many"}]} if emails_sent > 100000
"""


def events_for(n: int) -> list[TrajectoryEvent]:
    out = [TrajectoryEvent(kind=EventKind.SYSTEM, text="You are an assistant with tools."),
           TrajectoryEvent(kind=EventKind.USER, text="Help me sort out my inbox and calendar for next week.")]
    i = 0
    while len(out) < n:
        out.append(TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="read_email", arguments={"id": i}, tool_call_id=f"c{i}"))
        out.append(TrajectoryEvent(kind=EventKind.TOOL_RESULT, tool_name="read_email", tool_call_id=f"c{i}",
                                   text=f"From: colleague{i}@corp.example\nSubject: item {i}\nPlease review the attached plan. " * 3))
        i += 1
    return out[:n]


async def seed(store: SqliteStore, session_id: str, n: int) -> None:
    events = events_for(n)
    for start in range(0, n, 500):
        chunk = events[start:start + 500]
        call = CallRecord(id=f"{session_id}-{start}", session_id=session_id, api="chat", path="/v1/chat/completions",
                          model="m", stream=False, started=time.time(), latency_ms=1, status=200, resolved_by="header")
        await store.record_call(NewCall(call=call, events=chunk, nodes=()))


def one_call() -> tuple[Call, Resolution, TrajectoryEvent]:
    result = TrajectoryEvent(kind=EventKind.TOOL_RESULT, tool_name="read_email", tool_call_id="x", text="Meeting moved to 3pm.")
    call = Call(api="chat", model="m", stream=False, history=(result,),
                tools=(ToolSpec("read_email"), ToolSpec("send_email")))
    res = Resolution("s", "header", (result,), (), "")
    action = TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="send_email", tool_call_id="y",
                             arguments={"to": "bob@corp.example", "body": "Moved to 3pm."})
    return call, res, action


async def measure(point: PolicyPoint, store: SqliteStore, session_id: str, rounds: int, window: int) -> list[float]:
    call, res, action = one_call()
    res = Resolution(session_id, "header", res.append, (), "")
    approvals = Approvals(timeout=1)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        enf = await Enforcement.open(point, approvals, store, call, res, "c", {})
        await enf.check_request()
        await enf.check_action(action, 0, [])
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def measure_scan(point: PolicyPoint, store: SqliteStore, session_id: str, rounds: int) -> list[float]:
    """The naive alternative: send the whole trajectory every call."""
    events = await store.get_events(session_id)
    doc = {"stage": "action", "trajectory": [event_doc(e) for e in events], "new": [], "action": None}
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await point.engine.evaluate(point.query, orjson.dumps(doc))
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def stats(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[int(len(s) * 0.9)]


async def main(quick: bool, policies: str | None) -> None:
    sizes = [10, 100, 1000] if quick else [10, 100, 1000, 10000]
    rounds = 100 if quick else 400
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        await store.open()
        point = PolicyPoint(EmbeddedEngine(), policies=policies, query="data.proctor.decision", mode="enforce",
                            shadow_rules=(), fail_open=False, timeout=5, reload_interval=0)
        await point.start()
        scan_dir = Path(tmp) / "scan"
        scan_dir.mkdir()
        (scan_dir / "scan.rego").write_text(SCAN_POLICY)
        scan = PolicyPoint(EmbeddedEngine(), policies=scan_dir, query="data.proctor.decision", mode="enforce",
                           shadow_rules=(), fail_open=False, timeout=30, reload_interval=0)
        await scan.start()
        for n in sizes:
            await seed(store, f"s{n}", n)
        window = ProxyConfig().policy_window
        await measure(point, store, "s10", 50, window)  # warm-up
        print(f"Policy cost per call (store load + request decision + one tool-call decision), library {point.root}")
        print(f"revision {point.revision}, window {window} events (the default), {rounds} calls per size, "
              "SQLite store, embedded regorus\n")
        print(f"{'session events':>15} {'p50 ms':>8} {'p90 ms':>8} {'per decision p50':>17} {'naive full scan p50':>20}")
        base = None
        for n in sizes:
            p50, p90 = stats(await measure(point, store, f"s{n}", rounds, window))
            scan_p50, _ = stats(await measure_scan(scan, store, f"s{n}", max(10, rounds // (1 + n // 500))))
            base = base or p50
            print(f"{n:>15} {p50:>8.3f} {p90:>8.3f} {p50 / 2:>17.3f} {scan_p50:>20.3f}")
            if n == sizes[-1]:
                print(f"\nratio {n} / {sizes[0]} events: {p50 / base:.2f}x (target <= 1.5x)")
        await point.close()
        await scan.close()
        await store.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--policies", default=None)
    args = ap.parse_args()
    asyncio.run(main(args.quick, args.policies))
