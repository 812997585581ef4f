"""The decision log as a list (``/api/decisions``) and the overview's aggregates:
calls and denials over time, top rules fired, top tools.

The list is paged by keyset on (time, rowid), driven by the index of its most
selective filter. The overview aggregates one time range through time-ordered
indexes: its cost grows with the traffic in that range, not with the store.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Mapping

from proxy.audit.queries import RANGES, bad, decode_cursor, encode_cursor, parse_limit, parse_time
from proxy.store.sqlite import _decision_from_row

DECISION_OUTCOMES = ("allow", "deny", "ask", "terminate", "warn", "patch")
BLOCKING = ("deny", "terminate")


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    session_id: str | None = None
    outcome: str | None = None
    rule: str | None = None
    stage: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    after: tuple[float, int] | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> DecisionQuery:
        def text(name: str) -> str | None:
            return (params.get(name) or "").strip() or None

        outcome, stage = text("outcome"), text("stage")
        if outcome is not None and outcome not in DECISION_OUTCOMES:
            raise bad("outcome", f"outcome must be one of {', '.join(DECISION_OUTCOMES)}, got {outcome!r}")
        if stage is not None and stage not in ("request", "action"):
            raise bad("stage", f"stage must be request or action, got {stage!r}")
        after = tuple(decode_cursor(params["after"], "after", 2)) if text("after") else None
        return cls(
            session_id=text("session_id"), outcome=outcome, rule=text("rule"), stage=stage,
            since=parse_time(params["since"], "since") if text("since") else None,
            until=parse_time(params["until"], "until") if text("until") else None,
            limit=parse_limit(params, 100, 1000), after=after,  # type: ignore[arg-type]
        )


def decision_page(conn: sqlite3.Connection, q: DecisionQuery) -> tuple[list[dict[str, Any]], str | None]:
    """Decision-log records (OPA-shaped), newest first, and the next page's cursor."""
    where: list[str] = []
    params: list[Any] = []
    if q.rule:  # the rule's index drives; the others filter
        source = "decision_rules AS r JOIN decisions AS d ON d.id = r.decision_id"
        where.append("r.rule = ?")
        params.append(q.rule)
        clock = "r.time"
    else:
        source, clock = "decisions AS d", "d.time"
    for column, value in (("session_id", q.session_id), ("outcome", q.outcome), ("stage", q.stage)):
        if value is not None:
            where.append(f"d.{column} = ?")
            params.append(value)
    if q.since is not None:
        where.append(f"{clock} >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append(f"{clock} < ?")
        params.append(q.until)
    if q.after is not None:
        where.append(f"({clock}, d.rowid) < (?, ?)")
        params.extend(q.after)
    sql = (
        f"SELECT d.rowid AS rid, d.* FROM {source} {'WHERE ' + ' AND '.join(where) if where else ''}"
        f" ORDER BY {clock} DESC, d.rowid DESC LIMIT ?"
    )
    rows = conn.execute(sql, [*params, q.limit + 1]).fetchall()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    after = encode_cursor(rows[-1]["time"], rows[-1]["rid"]) if more and rows else None
    return [_decision_from_row(r) for r in rows], after


@dataclass(frozen=True, slots=True)
class Overview:
    since: float
    until: float
    bucket_s: int
    calls: list[int]  # per bucket
    blocked: list[int]  # deny and terminate decisions per bucket
    asked: list[int]
    totals: dict[str, int]
    top_rules: list[dict[str, Any]]  # rule, decisions, sessions, outcomes
    top_tools: list[dict[str, Any]]  # tool, calls, denied
    recent_blocks: list[dict[str, Any]]  # the latest deny / terminate decisions

    def to_dict(self) -> dict[str, Any]:
        starts = [self.since + i * self.bucket_s for i in range(len(self.calls))]
        return {
            "since": self.since, "until": self.until, "bucket_s": self.bucket_s,
            "series": [
                {"start": t, "calls": c, "blocked": b, "asked": a}
                for t, c, b, a in zip(starts, self.calls, self.blocked, self.asked)
            ],
            "totals": self.totals, "top_rules": self.top_rules, "top_tools": self.top_tools,
            "recent_blocks": self.recent_blocks,
        }


_STEPS = (60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)


def overview_range(params: Mapping[str, str], now: float | None = None) -> tuple[float, float]:
    now = now or time.time()
    until = parse_time(params["until"], "until") if params.get("until") else now
    if params.get("since"):
        since = parse_time(params["since"], "since")
    else:
        span = params.get("range") or "24h"
        if span not in RANGES:
            raise bad("range", f"range must be one of {', '.join(RANGES)}, got {span!r}")
        since = until - RANGES[span]
    if since >= until:
        raise bad("since", "since must be before until")
    return since, until


def overview(conn: sqlite3.Connection, since: float, until: float, top: int = 10) -> Overview:
    bucket = next((s for s in _STEPS if (until - since) / s <= 60), _STEPS[-1])
    n = int((until - since) // bucket) + 1

    def series(sql: str, *args: Any) -> list[int]:
        out = [0] * n
        for b, count in conn.execute(sql, (since, bucket, *args)):
            if 0 <= b < n:
                out[b] += count
        return out

    calls = series("SELECT CAST((started - ?) / ? AS INTEGER), count(*) FROM calls"
                   " WHERE started >= ? AND started < ? GROUP BY 1", since, until)
    by_outcome = ("SELECT CAST((time - ?) / ? AS INTEGER), count(*) FROM decisions"
                  " WHERE outcome = ? AND time >= ? AND time < ? GROUP BY 1")
    denied, terminated = series(by_outcome, "deny", since, until), series(by_outcome, "terminate", since, until)
    blocked = [a + b for a, b in zip(denied, terminated)]
    asked = series(by_outcome, "ask", since, until)
    sessions = conn.execute("SELECT count(*) FROM sessions WHERE started >= ? AND started < ?", (since, until)).fetchone()[0]
    top_rules = [
        {"rule": rule, "decisions": n_dec, "sessions": n_ses, "outcomes": dict(_pairs(outcomes))}
        for rule, n_dec, n_ses, outcomes in conn.execute(
            "SELECT rule, count(*), count(DISTINCT session_id), group_concat(outcome) FROM decision_rules"
            " WHERE time >= ? AND time < ? GROUP BY rule ORDER BY 2 DESC, rule LIMIT ?", (since, until, top),
        )
    ]
    denied_tools = dict(conn.execute(
        "SELECT json_extract(input, '$.action.tool_name'), count(*) FROM decisions"
        " WHERE outcome IN ('deny', 'terminate') AND stage = 'action' AND time >= ? AND time < ? GROUP BY 1",
        (since, until),
    ).fetchall())
    top_tools = [
        {"tool": tool, "calls": count, "denied": denied_tools.get(tool, 0)}
        for tool, count in conn.execute(
            "SELECT tool_name, count(*) FROM events WHERE kind = 'tool_call' AND time >= ? AND time < ?"
            " GROUP BY tool_name ORDER BY 2 DESC, tool_name LIMIT ?", (since, until, top),
        )
    ]
    recent = [
        {"decision_id": r[0], "session_id": r[1], "outcome": r[2], "rules": r[3].split(), "time": r[4], "stage": r[5]}
        for r in conn.execute(
            "SELECT id, session_id, outcome, rules, time, stage FROM decisions WHERE outcome IN ('deny', 'terminate')"
            " AND time >= ? AND time < ? ORDER BY time DESC LIMIT ?", (since, until, top),
        )
    ]
    totals = {"sessions": sessions, "calls": sum(calls), "blocked": sum(blocked), "asked": sum(asked)}
    return Overview(since, until, bucket, calls, blocked, asked, totals, top_rules, top_tools, recent)


def _pairs(joined: str | None) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for outcome in (joined or "").split(","):
        if outcome:
            counts[outcome] = counts.get(outcome, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])
