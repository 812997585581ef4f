"""The session list's query plans give the same pages: whichever way a page is
found (walking the sort order, a selective filter's index driving, a walk that
runs out of budget and hands over or walks on), paging through the list with
its cursors visits exactly the sessions a plain reading of the filters selects,
in order, once each."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import proxy.audit.queries as queries
from proxy.audit.queries import SessionQuery, session_page
from tests.bench.bench_audit import NOW, SPAN, grow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    path = Path(tmp_path_factory.mktemp("list")) / "audit.db"
    grow(path, None, 1500).conn.close()
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    yield conn
    conn.close()


def expected(conn: sqlite3.Connection, q: SessionQuery) -> list[str]:
    """The filters read plainly, one session at a time."""
    out = []
    for s in conn.execute("SELECT * FROM sessions"):
        sid = s["id"]

        def has(sql: str, *args: Any) -> bool:
            return conn.execute(sql, (*args, sid)).fetchone() is not None

        checks = [
            q.rule is None or has("SELECT 1 FROM decisions WHERE (' ' || rules || ' ') LIKE ? AND session_id = ?", f"% {q.rule} %"),
            q.model is None or has("SELECT 1 FROM calls WHERE model = ? AND session_id = ?", q.model),
            q.agent is None or has("SELECT 1 FROM decisions WHERE stage = 'request' AND coalesce(json_extract(input,"
                                   " '$.call.client.agent'), json_extract(input, '$.call.client.user_agent')) = ?"
                                   " AND session_id = ?", q.agent),
            q.since is None or s["last_call"] >= q.since,
            q.until is None or s["started"] <= q.until,
        ]
        if q.outcome == "allowed":
            checks.append(not has("SELECT 1 FROM decisions WHERE outcome IN ('deny', 'ask', 'terminate') AND session_id = ?"))
        elif q.outcome:
            checks.append(has("SELECT 1 FROM decisions WHERE outcome = ? AND session_id = ?", queries.OUTCOMES[q.outcome]))
        if all(checks):
            out.append((s[q.sort], sid))
    out.sort(reverse=q.order == "desc")
    return [sid for _, sid in out]


def pages(conn: sqlite3.Connection, params: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Every session the list shows, paging forward by cursor; and the plans used."""
    seen: list[str] = []
    plans: set[str] = set()
    after = None
    while True:
        page = session_page(conn, SessionQuery.parse({**params, **({"after": after} if after else {})}))
        seen += [row.session.id for row in page.rows]
        plans.add(page.plan)
        if (after := page.after) is None:
            return seen, plans


CASES = [
    {"rule": "flow.untrusted_to_external"},
    {"rule": "stop.repeated_denials", "sort": "started", "order": "asc"},
    {"outcome": "denied", "model": "gpt-4o"},
    {"outcome": "allowed", "agent": "coder"},
    {"agent": "researcher", "sort": "calls"},
    {"model": "o4-mini", "since": str(NOW - SPAN / 3), "until": str(NOW - SPAN / 10)},
    {"outcome": "asked"},
]


@pytest.mark.parametrize("few, budget", [(300, 60_000), (0, 60_000), (0, 2_000), (10**9, 0)],
                         ids=["default", "always-walk", "small-budget", "always-drive"])
@pytest.mark.parametrize("params", CASES, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items())[:60])
def test_every_plan_pages_through_the_same_sessions(
    store: sqlite3.Connection, params: dict[str, Any], few: int, budget: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queries, "_FEW", few)
    monkeypatch.setattr(queries, "_WALK_BUDGET", budget or 1)
    want = expected(store, SessionQuery.parse(params))
    assert want, "the seeded store should hold sessions for every case"
    got, _ = pages(store, {**params, "limit": "7"})
    assert got == want


def test_the_plans_are_the_ones_meant(store: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "_FEW", 50)  # this store is small: scale "a few sessions" down with it
    assert pages(store, {"limit": "20"})[1] == {"walk"}
    assert pages(store, {"rule": "stop.repeated_denials", "limit": "20"})[1] == {"index:rule"}  # a few sessions
    assert pages(store, {"outcome": "denied", "limit": "20"})[1] == {"walk"}  # common: walking fills pages
    monkeypatch.setattr(queries, "_FEW", 0)
    monkeypatch.setattr(queries, "_WALK_BUDGET", 2_000)  # a budget this small: some pages hand over, some walk on
    assert pages(store, {"rule": "flow.untrusted_to_external", "limit": "7"})[1] >= {"index:rule", "walk-on"}


def test_paging_backwards_returns_the_pages_seen(store: sqlite3.Connection) -> None:
    params = {"outcome": "denied", "sort": "started", "limit": "9"}
    forward = []
    after = None
    for _ in range(4):
        page = session_page(store, SessionQuery.parse({**params, **({"after": after} if after else {})}))
        forward.append([r.session.id for r in page.rows])
        after = page.after
    before = page.before
    for expected_page in reversed(forward[:-1]):
        page = session_page(store, SessionQuery.parse({**params, "before": before}))
        assert [r.session.id for r in page.rows] == expected_page
        before = page.before
    assert before is None  # back on the first page
