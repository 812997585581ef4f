"""Session resolution benchmark: how well Proctor puts calls into sessions when
the client sends no session header, and what resolving a call costs.

    python -m tests.bench.bench_sessions [--quick] [--seed N] [--runs N] [--concurrency N]

Part 1 drives the real proxy (``proxy.app.create_app``, SQLite store) over HTTP
on 127.0.0.1, in front of the scripted model, with many synthetic agents whose
calls are interleaved by a seeded random scheduler: linear, streamed, branching
(an earlier prefix re-sent with a new user turn), retried (the same request sent
twice, at the first call or a later one), parallel tool calls, sub-agents
(``run_subagent(task=...)`` whose task becomes a child agent's first user
message), identical-prefix pairs (same system prompt and task, diverging only
when their tool results differ), Responses API agents (``store: false`` with
full input lists, and ``previous_response_id`` chains), Anthropic Messages
agents, and compacting agents (middle dropped, middle replaced by a summary,
whole history replaced by a model-written summary, middle dropped right after a
reply that many sessions also got). The session each call was
recorded under (the ``X-Proctor-Session`` response header) is compared with the
ground truth by pairwise precision and recall over pairs of calls; sub-agent
parent links are checked against the store. The full run pools three
independent runs (seeds N, N+1, N+2); --quick runs one with about a third of the
agents. The same workload then runs again with explicit ``X-Proctor-Session``
(and ``X-Proctor-Parent-Session``) headers.

The scripted model answers like a temperature-0 model: its reply is a function
of the request's content (a hash of the conversation, ignoring tool-call ids),
so different conversations get different replies and identical conversations
identical ones. Agents steer it with a ``[[next:ACTION]]`` marker at the end of
the last message they send (tool, parallel:N, common, spawn:N, summarize, final).

Part 2 times ``SessionResolver.resolve`` directly, against a store holding the
part 1 sessions plus one session grown call by call to 10, 100 and 1,000
history events, and counts the store calls, SQL statements and SQLite VM
instructions each resolution makes, per resolution path.

Not a pytest module (``bench_*.py`` files are not collected).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sqlite3
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from proxy.app import create_app
from proxy.config import ProxyConfig
from proxy.scripted_model import start_model_server
from tests.bench.session_agents import COMPACTION_KINDS, KINDS, CallGT, Workload
from tests.bench.session_cost import resolution_cost
from tests.bench.session_model import responder

Json = dict[str, Any]


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def _c2(n: int) -> int:
    return n * (n - 1) // 2


def pair_counts(calls: list[CallGT]) -> tuple[int, int, int]:
    """(true positive pairs, predicted-same pairs, truly-same pairs)."""
    cells = Counter((c.session, c.agent.gid) for c in calls)
    pred = Counter(c.session for c in calls)
    true = Counter(c.agent.gid for c in calls)
    return sum(map(_c2, cells.values())), sum(map(_c2, pred.values())), sum(map(_c2, true.values()))


def prf(tp: int, pp: int, tt: int) -> tuple[float, float]:
    return (tp / pp if pp else 1.0), (tp / tt if tt else 1.0)


def touching(calls: list[CallGT], inside: Callable[[CallGT], bool]) -> tuple[float, float, int, int]:
    """Precision and recall over the pairs with at least one call in the subset."""
    rest = [c for c in calls if not inside(c)]
    a, b = pair_counts(calls), pair_counts(rest)
    tp, pp, tt = (x - y for x, y in zip(a, b))
    p, r = prf(tp, pp, tt)
    return p, r, pp, tt


def score_table(w: Any, parents: dict[str, str | None], resolved: Counter[str]) -> list[str]:
    calls = w.calls
    out = [f"{'category':34} {'agents':>6} {'calls':>6} {'sessions':>8} {'precision':>9} {'recall':>7} {'prec.touching':>13}"]

    def row(name: str, inside: Callable[[CallGT], bool], note: str = "") -> str:
        subset = [c for c in calls if inside(c)]
        agents = len({c.agent.gid for c in subset})
        sessions = len({c.session for c in subset})
        p, r = prf(*pair_counts(subset))
        pt, _, _, _ = touching(calls, inside)
        return f"{name:34} {agents:>6} {len(subset):>6} {sessions:>8} {p:>9.4f} {r:>7.4f} {pt:>13.4f}{note}"

    for kind in KINDS:
        if any(c.agent.kind == kind for c in calls):
            out.append(row(kind, lambda c, k=kind: c.agent.kind == k))
    out.append("-" * 92)
    plain = lambda c: c.agent.kind not in COMPACTION_KINDS  # noqa: E731
    out.append(row("OVERALL without compaction", plain, "   (target >= 0.99 both)"))
    out.append(row("  ... and without identical-prefix", lambda c: plain(c) and c.agent.kind != "identical-prefix"))
    out.append(row("  ... and without retried first calls",
                   lambda c: plain(c) and c.agent.kind not in ("identical-prefix", "retried (first call)")))
    out.append(row("compaction (all kinds)", lambda c: not plain(c)))
    out.append(row("all calls", lambda c: True))
    # sub-agent parent links, as the store recorded them
    kids = [a for a in w.agents if a.parent is not None and a.calls]
    for style in sorted({a.kind for a in kids}):
        group = [a for a in kids if a.kind == style]
        ok = sum(1 for a in group if parents.get(a.calls[0].session) == a.spawn_call.session)
        missing = sum(1 for a in group if parents.get(a.calls[0].session) is None)
        out.append(f"parent links, {style + ':':29} {ok}/{len(group)} correct ({ok / len(group):.4f}), "
                   f"{missing} with no parent")
    child_sessions = {a.calls[0].session for a in kids}
    false_links = sum(1 for s, p_ in parents.items() if p_ is not None and s not in child_sessions)
    out.append(f"sessions given a parent that are not a sub-agent's first session: {false_links}")
    out.append("resolved_by: " + ", ".join(f"{k} {v}" for k, v in resolved.most_common()))
    if w.errors:
        out.append(f"ERRORS ({len(w.errors)}): " + "; ".join(w.errors[:5]))
    return out


def pair_report(w: Any) -> list[str]:
    pairs = [(a, a.pair) for a in w.agents if a.pair is not None and a.gid < a.pair.gid]
    apart = merged = 0
    shapes: Counter[str] = Counter()
    for a, b in pairs:
        sa, sb = [c.session for c in a.calls], [c.session for c in b.calls]
        shared = set(sa) & set(sb)
        if not shared:
            apart += 1
            shape = "kept apart" if len(set(sa)) == len(set(sb)) == 1 else "no shared session, but an agent split"
        else:
            merged += 1
            if set(sa[1:]) == {sb[0]} and set(sb[1:]) == {sa[0]}:
                shape = "swapped after the first call (each continued in the other's session)"
            elif len(set(sa[1:]) | set(sb[1:])) == 1:
                shape = "both continued in one session"
            else:
                shape = "partly mixed"
        shapes[shape] += 1
    subset = [c for c in w.calls if c.agent.kind == "identical-prefix"]
    p, r = prf(*pair_counts(subset))
    out = [
        f"identical-prefix pairs: {len(pairs)}; kept apart {apart}, merged {merged}; "
        f"within the pairs precision {p:.4f} recall {r:.4f}",
        *(f"    {n:3d} x {s}" for s, n in shapes.most_common()),
    ]
    return out


# ---------------------------------------------------------------------------
# Part 1: interleaved agents through the real proxy
# ---------------------------------------------------------------------------


async def run_pass(model_url: str, db: Path, seed: int, scale: float, concurrency: int,
                   explicit_prefix: str | None) -> tuple[Workload, dict[str, str | None], Counter[str], float]:
    config = ProxyConfig(port=0, upstream=model_url, anthropic_upstream=model_url, store=f"sqlite:///{db}")
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    w = Workload(seed, scale, explicit_prefix)
    t0 = time.perf_counter()
    try:
        await w.run(base, concurrency)
    finally:
        elapsed = time.perf_counter() - t0
        await runner.cleanup()
    with sqlite3.connect(db) as conn:
        parents = dict(conn.execute("SELECT id, parent_id FROM sessions"))
        resolved = Counter(dict(conn.execute("SELECT resolved_by, count(*) FROM calls GROUP BY resolved_by")))
    return w, parents, resolved, elapsed


# ---------------------------------------------------------------------------


class _Count(logging.Handler):
    """Counts (and keeps out of the output) what the proxy's aiohttp server logs as errors."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.seen[f"{record.getMessage()}: {exc!r}" if exc else record.getMessage()] += 1


async def main_async(args: argparse.Namespace) -> None:
    server_log = logging.getLogger("aiohttp.server")
    errors = _Count()
    server_log.addHandler(errors)
    server_log.propagate = False
    scale = 0.3 if args.quick else 1.0
    lengths = (10, 100, 1000)
    t_start = time.perf_counter()
    model_runner, model_url = await start_model_server(responder, record=False, chunks=4)
    tmp = Path(tempfile.mkdtemp(prefix="bench_sessions_"))
    try:
        print(f"Proctor session resolution benchmark ({'quick' if args.quick else 'full'}, seed {args.seed}, "
              f"concurrency {args.concurrency})")
        print()
        runs = []
        for i in range(args.runs):  # each run: its own seed, proxy and store; figures pool the runs
            runs.append(await run_pass(model_url, tmp / f"inferred{i}.db", args.seed + i, scale, args.concurrency, None))
        w = types.SimpleNamespace(calls=[c for r in runs for c in r[0].calls], agents=[a for r in runs for a in r[0].agents],
                                  errors=[e for r in runs for e in r[0].errors])
        parents = {k: v for r in runs for k, v in r[1].items()}
        by_session: dict[str, list[CallGT]] = {}
        for c in w.calls:
            by_session.setdefault(c.session, []).append(c)
        resolved = sum((r[2] for r in runs), Counter())
        elapsed = sum(r[3] for r in runs)
        tops = sum(1 for a in w.agents if a.parent is None)
        print(f"PASS 1: no session header. {args.runs} run(s) (seeds {args.seed}..{args.seed + args.runs - 1}), "
              f"{tops} top-level agents + {len(w.agents) - tops} sub-agents,")
        print(f"{len(w.calls)} calls, interleaved by a seeded random scheduler {args.concurrency} at a time, {elapsed:.1f} s "
              f"({len(w.calls) / elapsed:.0f} calls/s through the proxy).")
        print("Precision and recall are pairwise over calls: a pair is predicted-same when both calls were recorded")
        print("in one session, truly-same when one agent made both. 'precision'/'recall' count the pairs with both")
        print("calls in the row's category; 'prec.touching' counts the pairs with at least one, so a call of")
        print("another category wrongly put into this category's sessions (or the reverse) lowers it. Recall has")
        print("no such difference: truly-same pairs never cross categories. Scheduling depends on timing, so")
        print("figures vary a little from run to run.")
        if args.runs > 1:
            for i, r in enumerate(runs):
                plain = [c for c in r[0].calls if c.agent.kind not in COMPACTION_KINDS]
                p, rc = prf(*pair_counts(plain))
                print(f"  run {i + 1}: {len(r[0].calls)} calls, without compaction precision {p:.4f} recall {rc:.4f}")
        for line in score_table(w, parents, resolved):
            print(("  " + line).rstrip())
        print()
        print("Identical-prefix pairs: two agents with the same system prompt and task get identical first")
        print("replies (temperature-0 model); their tool results differ from call `diverge_at` on (0-2).")
        print("What Proctor does: the second agent's first call holds no reply Proctor returned, so it opens a")
        print("new session ('new'). From the next call on, both agents' histories extend the same first reply,")
        print("a history node both sessions own. The tool-call ids the upstream issued (not part of the hash)")
        print("differ between the twins and pick the session that issued them; without ids, the oldest session")
        print("still waiting at that reply takes the call. A retried first call cannot be told from a twin's")
        print("first call: the retry opens a second session, which keeps that one call. Measured:")
        for line in pair_report(w):
            print(("  " + line).rstrip())
        print()
        print("Compaction (ground truth: the compacted agent stays in its session):")
        print("- drop middle / summary+tail keep the agent's last reply, which anchors the call (rule")
        print("  'compaction') by the tool-call id Proctor returned, or by content hash when only one session got it.")
        print("- summary only: the model writes a summary and the agent restarts from [system, summary]; no")
        print("  turn Proctor returned survives, so the call opens a new session and the agent continues there.")
        print("- after a common call: compacted right after a reply many sessions also got (run_shell")
        print("  'pytest -q'); its content hash is ambiguous, but the tool-call id still names one session.")
        for kind in COMPACTION_KINDS:
            sub = [c for c in w.calls if c.agent.kind == kind]
            if sub:
                p, r = prf(*pair_counts(sub))
                pt, _, _, _ = touching(w.calls, lambda c, k=kind: c.agent.kind == k)
                foreign = sum(1 for c in sub if any(o.agent.gid != c.agent.gid for o in by_session[c.session]))
                print(f"  {kind:33} precision {p:.4f} recall {r:.4f} prec.touching {pt:.4f}; "
                      f"{foreign}/{len(sub)} calls in a session shared with another agent")
        if errors.seen:
            print("  the proxy's HTTP server logged: " + "; ".join(f"{n} x {m}" for m, n in errors.seen.items()))
            errors.seen.clear()
        print()
        w2, parents2, resolved2, elapsed2 = await run_pass(model_url, tmp / "explicit.db", args.seed, scale,
                                                           args.concurrency, "bench-")
        print(f"PASS 2: explicit X-Proctor-Session on every call (+ X-Proctor-Parent-Session for sub-agents). "
              f"{len(w2.calls)} calls, {elapsed2:.1f} s")
        for line in score_table(w2, parents2, resolved2):
            print(("  " + line).rstrip())
        if errors.seen:
            print("  the proxy's HTTP server logged: " + "; ".join(f"{n} x {m}" for m, n in errors.seen.items()))
        print()
        db = tmp / "cost.db"
        shutil.copy(tmp / "inferred0.db", db)
        print("PART 2: SessionResolver.resolve cost against history length, in a store already holding the pass 1")
        print(f"run-1 sessions ({len(runs[0][1])} sessions) plus one session grown call by call to each length")
        print("(two events a call, nine more tool rounds a call past 100 events).")
        print("'session' is how many events the session's history holds, 'request' how many the resolved call")
        print(f"carries. Times are the best of {args.repeat} (wall clock, so noisy on a busy machine); 'hash us' is")
        print("history.chain() on the request alone (the O(n) hashing a resolution may do once). Store calls, SQL")
        print("statements and SQLite VM instructions are exact counts per resolve.")
        for line in await resolution_cost(db, lengths, args.repeat):
            print(("  " + line).rstrip())
        print()
        print(f"total {time.perf_counter() - t_start:.1f} s")
    finally:
        await model_runner.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a third of the agents (under 30 s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight at once")
    parser.add_argument("--repeat", type=int, default=0, help="timed resolves per path and length")
    parser.add_argument("--runs", type=int, default=0, help="independent header-less runs to pool (full: 3, quick: 1)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.repeat = args.repeat or (10 if args.quick else 40)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main(sys.argv[1:])
