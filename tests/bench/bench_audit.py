"""Audit UI benchmark: do the session list and the session page stay as fast
with 100,000 sessions as with 1,000?

    python -m tests.bench.bench_audit [--runs N] [--big N] [--keep DIR]

Seeds a SQLite store directly (bulk inserts into the store's own schema, its
indexes built afterwards; the audit tables that triggers keep are then filled
by the audit DDL's backfills, as a migration fills them) with 1,000 realistic sessions: agents of a few kinds,
1-6 model calls each with tool calls and results, sub-agents, one decision per
call plus one per tool call, some denials, asks, shadow warnings and
terminations under a dozen rules, spread over 30 days. It keeps a copy of
the store at that size, grows the store to 100,000 sessions over the same 30
days (a hundred times the traffic), then serves both with the real proxy app
over HTTP on 127.0.0.1 (each in a process of its own) and times the filtered session list page (the UI's HTML,
and the JSON API's) and one session page on each. The session page is the same
session at both sizes; the list filters are fixed (below).

Each time is the median of ``--runs`` requests after a warm-up; the two stores
are asked in turn, request by request, so load from elsewhere on the machine
weighs on both sizes alike. The target: at
100,000 sessions every page within 2x of its time at 1,000 (indexes, not
scans). Not a pytest module (``bench_*.py`` files are not collected).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import aiohttp
import orjson
from aiohttp import web

from proxy.app import create_app
from proxy.audit.indexes import AUDIT_INDEXES
from proxy.config import ProxyConfig
from proxy.store.sqlite import SqliteStore

DAY = 86400.0
NOW = time.time()
SPAN = 30 * DAY
RULES = [  # (rule, outcome, weight): which rule a non-allow decision names
    ("flow.untrusted_to_external", "deny", 30), ("shell.destructive_command", "deny", 16),
    ("secrets.exfiltration", "deny", 10), ("email.external_recipient", "deny", 10),
    ("fs.outside_workspace", "deny", 10), ("budget.max_tool_calls", "deny", 4),
    ("approval.deploy", "ask", 8), ("approval.payment", "ask", 3), ("pii.in_output", "warn", 14),
    ("net.unknown_domain", "warn", 6), ("stop.repeated_denials", "terminate", 2), ("patch.redact_keys", "patch", 4),
]
MODELS = [("gpt-4o-mini", 40), ("gpt-4o", 20), ("claude-sonnet-4-20250514", 15), ("gpt-4.1-mini", 15), ("o4-mini", 10)]
AGENTS = ["researcher", "coder", "support-bot", "release-bot", "analyst", "scheduler", "triage", "OpenAI/Python 1.99.1"]
KEYS = [uuid.UUID(int=i).hex[:12] for i in range(1, 21)]
TOOLS = ["read_file", "write_file", "run_shell", "fetch_url", "search_web", "send_email", "grep", "list_dir", "deploy"]
_SYLLABLES = ("ka lo mi ne ru sa ti vo pe da ri xu ze bo fa gu hi je lu mo "
              "na pi qu se to ve wa ya zo ar en il on ur").split()
# A vocabulary with word frequencies as in real text (Zipf): a few words in most
# events, most words rare, so a text search matches what it would in real traffic.
WORDS = [a + b + c for c in ("", "n", "s", "t") for a in _SYLLABLES for b in _SYLLABLES][:2000]
_CUMULATIVE = list(itertools.accumulate(1 / rank for rank in range(1, len(WORDS) + 1)))

# What the benchmark asks for: the list filtered by the most common rule over
# the last 30 days, sorted by last activity, as the UI shows it (25 a page), and
# one session's page. The filter fills the page at both sizes, so both render
# the same number of rows and only the store's size differs.
LIST_FILTER = {"rule": "flow.untrusted_to_external", "range": "30d"}
EXTRA_FILTERS = [  # also timed, for information
    {},
    {"rule": "flow.untrusted_to_external", "range": "7d", "limit": "50"},  # 11 rows at 1,000; 50 at 100,000
    {"outcome": "denied", "model": "gpt-4o"},
    {"agent": "coder", "outcome": "allowed"},
    {"q": WORDS[1200]},  # a rare word
    {"rule": "stop.repeated_denials"},
    {"sort": "calls", "order": "desc", "key": KEYS[3]},
]
FOCUS = "bench-focus"  # the session whose page is timed


def _pick(rng: random.Random, weighted: list[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, cum_weights=_CUMULATIVE, k=n))


class Seeder:
    """Writes sessions with their calls, events and decisions straight into the
    store's tables, in time order (as a live proxy would have)."""

    def __init__(self, conn: sqlite3.Connection, seed: int = 7) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        self.recent_roots: list[tuple[str, int]] = []  # (session id, depth) that sub-agents may hang under
        self.roots: dict[str, str] = {}
        self.sessions: list[tuple[Any, ...]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.decisions: list[tuple[Any, ...]] = []

    def seed(self, count: int, start: float, end: float, focus: bool = False) -> None:
        times = sorted(self.rng.uniform(start, end) for _ in range(count))
        for i, t in enumerate(times):
            sid = FOCUS if focus and i == count // 2 else f"s-{self.rng.getrandbits(80):020x}"
            self._session(sid, t, forced_rule="flow.untrusted_to_external" if sid == FOCUS else None)
            if sid == FOCUS:  # the focus session has two sub-agents, one of them with a child of its own
                self._session(f"{FOCUS}-child-1", t + 5, parent=(FOCUS, 0))
                self._session(f"{FOCUS}-child-2", t + 9, parent=(FOCUS, 0), forced_rule="shell.destructive_command")
                self._session(f"{FOCUS}-grandchild", t + 12, parent=(f"{FOCUS}-child-2", 1))
            if len(self.sessions) >= 2000:
                self.flush()
        self.flush()

    def _session(self, sid: str, t: float, parent: tuple[str, int] | None = None, forced_rule: str | None = None) -> None:
        rng = self.rng
        if parent is None and self.recent_roots and rng.random() < 0.08:
            parent = rng.choice(self.recent_roots)
        depth = parent[1] + 1 if parent else 0
        root = self.roots.get(parent[0], parent[0]) if parent else sid
        self.roots[sid] = root
        if depth < 2:
            self.recent_roots = (self.recent_roots + [(sid, depth)])[-50:]
        model, agent, key = _pick(rng, MODELS), rng.choice(AGENTS), rng.choice(KEYS)
        n_calls = rng.choices([1, 2, 3, 4, 5, 6], [15, 20, 22, 18, 15, 10])[0]
        flagged = forced_rule or (_pick(rng, [(r, w) for r, _, w in RULES]) if rng.random() < 0.16 else None)
        flag_call = n_calls - 1 if forced_rule else rng.randrange(n_calls)
        outcome_of = {r: o for r, o, _ in RULES}
        seq, clock, status = 0, t, "active"
        counters: dict[str, Any] = {"calls": 0, "events": 0, "input_tokens": 0, "output_tokens": 0,
                                    "tool_calls": {}, "tool_calls_total": 0, "decisions": {}}
        client = {"key_id": key, "agent": agent if not agent.startswith("OpenAI") else None, "user_agent": "OpenAI/Python 1.99.1"}
        task = f"{_text(rng, 6)} #{rng.randrange(10**6)}"
        tool = rng.choice(TOOLS)
        for n in range(n_calls):
            call_id = f"call_{rng.getrandbits(80):020x}"
            latency = rng.uniform(300, 8000)
            tin, tout = rng.randrange(400, 6000), rng.randrange(20, 600)
            new: list[tuple[str, str | None, str | None, str | None]] = []  # (kind, text, tool, args)
            if n == 0:
                new += [("system", "You are a careful agent. Use the tools.", None, None), ("user", task, None, None)]
            else:
                new.append(("tool_result", _text(rng, rng.randrange(10, 60)), tool, None))
                tool = rng.choice(TOOLS)
            last = n == n_calls - 1
            reply = [("assistant", _text(rng, rng.randrange(5, 40)), None, None)] if last else [
                ("tool_call", None, tool, orjson.dumps({"arg": _text(rng, 3), "n": n}).decode())]
            first_seq = seq
            for kind, text, tname, args in new + reply:
                self.events.append((sid, seq, call_id, kind, None if kind == "tool_call" else kind, text, tname, args,
                                    f"tc_{call_id}" if kind == "tool_call" else None, None, f"{rng.getrandbits(128):032x}", clock))
                seq += 1
            # the request-stage decision, then one for the reply's action
            self._decision(sid, call_id, "request", None, clock, client, model, new, "allow", None)
            rule = flagged if (flagged and n == flag_call) else None
            outcome = outcome_of[rule] if rule else "allow"
            action_seq = first_seq + len(new)
            self._decision(sid, call_id, "action", action_seq, clock + latency / 1000, client, model, reply, outcome, rule)
            if rule and outcome != "allow":
                counters["decisions"][outcome] = counters["decisions"].get(outcome, 0) + 1
                labels = {"outcome": outcome, "rules": [rule], "stage": "action", "revision": "r2024a", "modes": ["enforce"]}
                self.events.append((sid, seq, call_id, "decision", None, f"{rule}: blocked", None, None, None,
                                    orjson.dumps(labels).decode(), f"{rng.getrandbits(128):032x}", clock + latency / 1000))
                seq += 1
                if outcome == "terminate":
                    status = "terminated"
            self.calls.append((call_id, sid, "chat", "/v1/chat/completions", model, 0, clock, latency, 200, "header",
                               None, tin, tout, None))
            counters["calls"] += 1
            counters["input_tokens"] += tin
            counters["output_tokens"] += tout
            if not last:
                counters["tool_calls"][tool] = counters["tool_calls"].get(tool, 0) + 1
                counters["tool_calls_total"] += 1
            clock += latency / 1000 + rng.uniform(1, 20)
            if status == "terminated":
                break
        counters["events"] = seq
        self.sessions.append((sid, parent[0] if parent else None, root, depth, t, clock, counters["calls"], seq, seq,
                              status, "{}", orjson.dumps(counters).decode(), None))

    def _decision(self, sid: str, call_id: str, stage: str, event_seq: int | None, t: float, client: dict[str, Any],
                  model: str, events: list[Any], outcome: str, rule: str | None) -> None:
        findings = [{"rule": rule, "message": f"{rule} says no", "mode": "enforce"}] if rule else []
        kind = {"deny": "deny", "ask": "ask", "warn": "warn", "terminate": "terminate"}.get(outcome)
        decision: dict[str, Any] = {
            "outcome": outcome, "deny": [], "warn": [], "ask": [], "terminate": [], "patch": None, "labels": {},
        }
        if kind:
            decision[kind] = findings
        if outcome == "patch":
            decision["patch"] = {"arguments": {"redacted": True}}
        doc = {
            "stage": stage, "session": {"id": sid, "depth": 0, "labels": {}, "status": "active"},
            "new": [{"kind": k, "text": (x or "")[:120], "tool_name": tn} for k, x, tn, _ in events] if stage == "request" else [],
            "action": {"kind": events[0][0], "tool_name": events[0][2]} if stage == "action" else None,
            "call": {"api": "chat", "model": model, "tools": TOOLS[:4], "client": client},
        }
        self.decisions.append((
            str(uuid.UUID(int=self.rng.getrandbits(128))), sid, call_id, stage, event_seq, "data.proctor.decision",
            orjson.dumps(doc).decode(), 0, event_seq or 0, None, orjson.dumps(decision).decode(), outcome,
            rule if rule and outcome != "patch" else "", "r2024a", "embedded", 0.2, t, None,
        ))

    def flush(self) -> None:
        c = self.conn
        c.execute("BEGIN")
        c.executemany("INSERT INTO sessions (id, parent_id, root_id, depth, started, last_call, calls, events, next_seq,"
                      " status, labels, counters, head) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", self.sessions)
        c.executemany("INSERT INTO calls (id, session_id, api, path, model, stream, started, latency_ms, status,"
                      " resolved_by, error, input_tokens, output_tokens, response_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      self.calls)
        c.executemany("INSERT INTO events (session_id, seq, call_id, kind, role, text, tool_name, arguments,"
                      " tool_call_id, labels, hash, time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", self.events)
        c.executemany("INSERT INTO decisions (id, session_id, call_id, stage, event_seq, path, input, traj_from, traj_to,"
                      " result, decision, outcome, rules, revision, engine, eval_ms, time, error)"
                      " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", self.decisions)
        c.execute("COMMIT")
        self.sessions, self.calls, self.events, self.decisions = [], [], [], []


def _bulk(conn: sqlite3.Connection, fill: Callable[[], None]) -> None:
    """Bulk loading: secondary indexes and the audit triggers off while rows go
    in, then the indexes built again (sorting beats inserting at random), and the
    audit DDL again, whose backfills fill the derived tables in a few set-wise
    statements (as the migration does for a store that predates them)."""
    objects = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND sql IS NOT NULL"
        " AND tbl_name IN ('sessions', 'calls', 'events', 'decisions', 'decision_rules', 'session_clients')"
    ).fetchall()
    for kind, name, _ in objects:
        conn.execute(f"DROP {kind.upper()} {name}")
    fill()
    conn.execute("BEGIN")
    for kind, _, sql in objects:
        if kind == "index":
            conn.execute(sql)
    for ddl in AUDIT_INDEXES:
        conn.execute(ddl)
    conn.execute("COMMIT")


def grow(path: Path, seeder: Seeder | None, total: int) -> Seeder:
    """Bring the store to ``total`` sessions (the first call creates it)."""
    if seeder is None:
        async def create() -> None:
            store = SqliteStore(path)
            await store.open()
            await store.close()

        asyncio.run(create())
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        seeder = Seeder(conn)
        _bulk(conn, lambda: seeder.seed(total, NOW - SPAN, NOW, focus=True))  # type: ignore[union-attr]
        return seeder
    have = seeder.conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
    # The same 30 days, a hundred times busier: every filter matches a hundred
    # times more sessions, and the time range cuts nothing extra away.
    _bulk(seeder.conn, lambda: seeder.seed(total - have, NOW - SPAN, NOW))  # type: ignore[union-attr]
    seeder.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return seeder


def pages() -> dict[str, str]:
    from urllib.parse import urlencode

    out = {
        "list page (UI)": "/ui/sessions?" + urlencode(LIST_FILTER),
        "list page (API)": "/api/sessions?" + urlencode({**LIST_FILTER, "limit": 25}),
        "session page (UI)": f"/ui/sessions/{FOCUS}",
        "session (API)": f"/api/sessions/{FOCUS}",
    }
    for f in EXTRA_FILTERS:
        out[f"list {urlencode(f) or '(no filter)'}"] = "/ui/sessions?" + urlencode(f)
    return out


async def get(http: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    async with http.get(url) as r:
        body = await r.read()
        if r.status != 200:
            raise SystemExit(f"{url}: HTTP {r.status}: {body[:300]!r}")
    return (time.perf_counter() - t0) * 1000, len(body)


async def time_pages(bases: dict[int, str], runs: int) -> dict[int, dict[str, tuple[float, float, int]]]:
    """Size -> page -> (median ms, p90 ms, bytes). The stores are asked in turn,
    request by request, so whatever else the machine does weighs on both alike."""
    out: dict[int, dict[str, tuple[float, float, int]]] = {size: {} for size in bases}
    async with aiohttp.ClientSession() as http:
        for name, path in pages().items():
            samples: dict[int, list[float]] = {size: [] for size in bases}
            sizes: dict[int, int] = {}
            for i in range(runs + 5):
                for size, base in bases.items():
                    ms, sizes[size] = await get(http, base + path)
                    if i >= 5:  # warm-up
                        samples[size].append(ms)
            for size, got in samples.items():
                got.sort()
                out[size][name] = (statistics.median(got), got[int(len(got) * 0.9) - 1], sizes[size])
    return out


def _serve(path: Path, port: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The proxy app on a free port, in a process of its own (the timing client
    shares neither its event loop nor its GIL)."""
    async def run() -> None:
        app = create_app(ProxyConfig(store=f"sqlite:///{path}", upstream="http://127.0.0.1:9/v1", policy_reload_interval=0))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(run())


def serve_and_time(paths: dict[int, Path], runs: int) -> dict[int, dict[str, tuple[float, float, int]]]:
    ctx = multiprocessing.get_context("spawn")
    procs, bases = [], {}
    try:
        for size, path in paths.items():
            ports: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
            proc = ctx.Process(target=_serve, args=(path, ports), daemon=True)
            proc.start()
            procs.append(proc)
            bases[size] = f"http://127.0.0.1:{ports.get(timeout=60)}"
        return asyncio.run(time_pages(bases, runs))
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(10)


def counts(conn: sqlite3.Connection) -> str:
    n = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("sessions", "calls", "events", "decisions")}
    return ", ".join(f"{v:,} {k}" for k, v in n.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Audit UI benchmark (see the module docstring).")
    parser.add_argument("--runs", type=int, default=40, help="timed requests per page (after 5 warm-up requests)")
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="keep the seeded stores in this directory")
    parser.add_argument("--reuse", action="store_true", help="time the stores --keep kept from an earlier run")
    args = parser.parse_args(argv)
    if args.reuse:
        if args.keep is None:
            parser.error("--reuse needs --keep DIR")
        results = serve_and_time({args.small: args.keep / "small.db", args.big: args.keep / "audit.db"}, args.runs)
        return report(args, results)
    tmp = Path(tempfile.mkdtemp(prefix="proctor-bench-audit-"))
    path = (args.keep or tmp) / "audit.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("audit.db", "small.db"):
        for suffix in ("", "-wal", "-shm"):
            path.with_name(name + suffix).unlink(missing_ok=True)
    try:
        seeder = None
        paths: dict[int, Path] = {}
        for size in (args.small, args.big):
            t0 = time.perf_counter()
            seeder = grow(path, seeder, size)
            seeded = time.perf_counter() - t0
            print(f"seeded {size:,} sessions in {seeded:.1f} s: {counts(seeder.conn)}; "
                  f"file {path.stat().st_size / 1e6:.0f} MB", flush=True)
            if size == args.small:  # keep a copy at this size; the store grows on
                seeder.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                paths[size] = path.with_name("small.db")
                shutil.copyfile(path, paths[size])
        paths[args.big] = path
        seeder.conn.close()  # type: ignore[union-attr]
        results = serve_and_time(paths, args.runs)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return report(args, results)


def report(args: argparse.Namespace, results: dict[int, dict[str, tuple[float, float, int]]]) -> int:
    small, big = results[args.small], results[args.big]
    print(f"\nmedian (p90) of {args.runs} requests over HTTP; filtered list = {LIST_FILTER}, "
          f"session page = {FOCUS} (4-session tree)")
    print(f"{'page':<46} {f'{args.small:,} sessions':>20} {f'{args.big:,} sessions':>20} {'ratio':>7}")
    worst = 0.0
    for name in small:
        (m1, p1, _), (m2, p2, _) = small[name], big[name]
        ratio = m2 / m1
        target = not name.startswith("list ") or name.startswith("list page")
        if target:
            worst = max(worst, ratio)
        print(f"{name:<46} {f'{m1:7.2f} ms ({p1:6.2f})':>20} {f'{m2:7.2f} ms ({p2:6.2f})':>20} {ratio:6.2f}x"
              f"{'' if target else '  (info)'}")
    verdict = "within" if worst <= 2 else "NOT within"
    print(f"\nworst ratio of the timed pages: {worst:.2f}x ({verdict} the 2x target)")
    return 0 if worst <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
