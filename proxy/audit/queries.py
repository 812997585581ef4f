"""The session list: filters, sorting and keyset paging that stay fast at any
number of sessions, on the indexes of ``proxy/audit/indexes.py``.

How a page is found. The list walks down the sort column's index (newest
first, say) and checks each session against the filters, one index probe per
filter (rule, outcome, model, agent, key and text each have an index), until
the page is full: when the filters are not selective this takes a bounded
number of steps whatever the store's size. A filter that matches only a few
sessions drives the query instead, from the start: its sessions are fetched by
id and sorted. When the walk spends ``_WALK_BUDGET`` SQLite steps without
filling the page, the filters are selective: the smallest filter's own index
then drives, unless it holds more sessions than walking on would pass. Paging
is by keyset (the sort value and the id of the page's edge session), never by
offset, so page 1,000 costs what page 1 does.

Text search matches whole words as a phrase through a full-text index; its cost
grows with the number of events that hold the phrase. Events recorded since the
store's writer last indexed are searched too (``proxy/audit/search.py``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from proxy.audit.search import fts_phrase, unindexed_matches
from proxy.errors import InvalidRequest
from proxy.store.base import SessionRecord

SORTS = {"last_call": "last activity", "started": "start", "calls": "calls"}
OUTCOMES = {
    "allowed": None,  # nothing denied, asked or terminated
    "denied": "deny",
    "asked": "ask",
    "terminated": "terminate",
    "warned": "warn",  # shadow-mode denials and warnings
}
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000  # the JSON API's; the UI shows 25 a page unless asked
_WALK_BUDGET = 60_000  # SQLite VM steps a walk may take before a selective filter's index is considered
_STEPS_PER_SESSION = 30  # about what a walk spends on each session it passes
_TICK = 1000  # VM steps between checks of the budget
_FEW = 300  # a filter with fewer sessions than this drives without a walk
_DRIVE_CAP = 20_000  # sessions a filter's index may bring to be sorted


def bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_parameter", param=param)


def parse_time(value: str, param: str) -> float:
    """Unix seconds, or ISO 8601 (a time without a zone is UTC, as the UI shows)."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad(param, f"{param} must be unix seconds or an ISO 8601 time like 2025-01-31T14:00, got {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def parse_limit(params: Mapping[str, str], default: int = DEFAULT_LIMIT, most: int = MAX_LIMIT) -> int:
    raw = params.get("limit") or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise bad("limit", f"limit must be a whole number from 1 to {most}, got {raw!r}")
    return int(raw)


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(token: str, param: str, length: int) -> list[Any]:
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        parts = None
    if not isinstance(parts, list) or len(parts) != length:
        raise bad(param, f"{param} is not a cursor this list gave out; start again from the first page")
    return parts


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """What the session list shows: filters (all optional, combined with AND),
    order, and where the page starts."""

    since: float | None = None  # active at or after: last call >= since
    until: float | None = None  # active at or before: started <= until
    agent: str | None = None
    key: str | None = None
    model: str | None = None
    outcome: str | None = None  # a key of OUTCOMES
    rule: str | None = None
    text: str | None = None
    sort: str = "last_call"
    order: str = "desc"
    limit: int = DEFAULT_LIMIT
    after: tuple[float, str] | None = None  # (sort value, id) of the previous page's last row
    before: tuple[float, str] | None = None  # (sort value, id) of the next page's first row
    offset: int = 0

    @classmethod
    def parse(cls, params: Mapping[str, str], now: float | None = None, default_limit: int = DEFAULT_LIMIT) -> SessionQuery:
        """From query parameters (the UI's and the API's); bad values raise
        :class:`InvalidRequest` naming the parameter."""
        def text(name: str) -> str | None:
            value = (params.get(name) or "").strip()
            return value or None

        since = parse_time(params["since"], "since") if text("since") else None
        until = parse_time(params["until"], "until") if text("until") else None
        if text("range"):
            if params["range"] not in RANGES:
                raise bad("range", f"range must be one of {', '.join(RANGES)}, got {params['range']!r}")
            since = (now or time.time()) - RANGES[params["range"]]
        sort, order = text("sort") or "last_call", text("order") or "desc"
        if sort not in SORTS:
            raise bad("sort", f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        if order not in ("asc", "desc"):
            raise bad("order", f"order must be asc or desc, got {order!r}")
        outcome = text("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise bad("outcome", f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        offset = text("offset") or "0"
        if not offset.isdigit():
            raise bad("offset", f"offset must be a whole number, got {offset!r}")
        cursors = {}
        for name in ("after", "before"):
            if text(name):
                got_sort, value, sid = decode_cursor(params[name], name, 3)
                if got_sort != sort:
                    raise bad(name, f"{name} was given out for the list sorted by {got_sort}, not by {sort}")
                cursors[name] = (value, sid)
        return cls(
            since=since, until=until, agent=text("agent"), key=text("key"), model=text("model"), outcome=outcome,
            rule=text("rule"), text=text("q"), sort=sort, order=order, limit=parse_limit(params, default_limit),
            after=cursors.get("after"), before=cursors.get("before"), offset=int(offset),
        )


@dataclass(frozen=True, slots=True)
class SessionRow:
    session: SessionRecord
    model: str | None
    agents: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    rules: list[tuple[str, int]] = field(default_factory=list)  # (rule, decisions naming it)

    @property
    def tokens(self) -> int:
        c = self.session.counters
        return int(c.get("input_tokens", 0)) + int(c.get("output_tokens", 0))

    @property
    def outcomes(self) -> dict[str, int]:
        """deny, ask, terminate, warn, patch counts (allow is not counted)."""
        return dict(self.session.counters.get("decisions", {}))

    def to_dict(self) -> dict[str, Any]:
        s = self.session
        return {
            "id": s.id, "started": s.started, "last_call": s.last_call, "calls": s.calls, "events": s.events,
            "status": s.status, "parent_id": s.parent_id, "root_id": s.root_id, "depth": s.depth,
            "labels": s.labels, "counters": s.counters, "model": self.model, "agents": self.agents,
            "keys": self.keys, "rules": [{"rule": r, "decisions": n} for r, n in self.rules],
            "outcomes": self.outcomes, "tokens": self.tokens,
        }


@dataclass(frozen=True, slots=True)
class SessionPage:
    rows: list[SessionRow]
    after: str | None  # cursor of the next page, None on the last one
    before: str | None  # cursor of the previous page, None on the first one
    plan: str  # how the page was found: "walk", "walk-on" or "index:<filter>" (for the benchmark and debugging)


@dataclass(frozen=True, slots=True)
class _SessionSet:
    """The sessions one filter selects, through an index. ``sql`` selects
    ``session_id``; a correlated probe adds ``AND session_id = s.id`` to it."""

    name: str
    sql: str
    params: tuple[Any, ...]
    correlated: bool = True

    def probe(self) -> str:
        return f"EXISTS ({self.sql} AND session_id = s.id)" if self.correlated else f"s.id IN ({self.sql})"


def _sets(conn: sqlite3.Connection, q: SessionQuery) -> list[_SessionSet]:
    sets = []
    if q.rule:
        sets.append(_SessionSet("rule", "SELECT session_id FROM decision_rules WHERE rule = ?", (q.rule,)))
    if q.outcome and OUTCOMES[q.outcome]:
        sets.append(_SessionSet("outcome", "SELECT session_id FROM decisions WHERE outcome = ?", (OUTCOMES[q.outcome],)))
    if q.model:
        sets.append(_SessionSet("model", "SELECT session_id FROM calls WHERE model = ?", (q.model,)))
    if q.agent:
        sets.append(_SessionSet("agent", "SELECT session_id FROM session_clients WHERE agent = ?", (q.agent,)))
    if q.key:
        sets.append(_SessionSet("key", "SELECT session_id FROM session_clients WHERE key_id = ?", (q.key,)))
    if q.text:
        phrase = fts_phrase(q.text)
        sql = ("SELECT e.session_id AS session_id FROM events_fts AS f JOIN events AS e ON e.rowid = f.rowid"
               " WHERE events_fts MATCH ?")
        params: tuple[Any, ...] = (phrase,)
        recent = unindexed_matches(conn, phrase)  # events committed but not indexed yet
        if recent:
            sql += " UNION ALL SELECT value FROM json_each(?)"
            params += (orjson.dumps(recent).decode(),)
        sets.append(_SessionSet("text", sql, params, correlated=False))
    return sets


def _matches(conn: sqlite3.Connection, s: _SessionSet, cap: int) -> int:
    """How many sessions the set holds, counted up to ``cap``."""
    sql = f"SELECT count(*) FROM (SELECT DISTINCT session_id FROM ({s.sql}) LIMIT {int(cap)})"
    return conn.execute(sql, s.params).fetchone()[0]


Key = tuple[int, Any, str]  # (rowid, sort value, id) of a session in the list's order


class _Finder:
    """The SQL of one list request: its row conditions, its filter sets, its order."""

    def __init__(self, q: SessionQuery, sets: list[_SessionSet]) -> None:
        self.q, self.sets = q, sets
        self.col = f"s.{q.sort}"
        self.backwards = q.before is not None
        self.descending = (q.order == "desc") != self.backwards
        self.dir = "DESC" if self.descending else "ASC"

    def rows(self, walking: bool) -> tuple[list[str], list[Any]]:
        """Conditions on the session row itself. On a walk, a leading + hides a
        column from the planner so the sort column's index keeps driving."""
        q, plain = self.q, "+" if walking else ""
        where: list[str] = []
        params: list[Any] = []
        if q.since is not None:
            where.append(f"{'' if q.sort == 'last_call' else plain}s.last_call >= ?")
            params.append(q.since)
        if q.until is not None:
            where.append(f"{'' if q.sort == 'started' else plain}s.started <= ?")
            params.append(q.until)
        if q.outcome == "allowed":
            where.append(
                "coalesce(json_extract(s.counters, '$.decisions.deny'), json_extract(s.counters, '$.decisions.ask'),"
                " json_extract(s.counters, '$.decisions.terminate')) IS NULL"
            )
        return where, params

    def after(self, edge: tuple[Any, str] | None) -> tuple[list[str], list[Any]]:
        if edge is None:
            return [], []
        return [f"({self.col}, s.id) {'<' if self.descending else '>'} (?, ?)"], list(edge)

    def probes(self, skip: _SessionSet | None = None) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for s in self.sets:
            if s is not skip:
                where.append(s.probe())
                params.extend(s.params)
        return where, params

    def order(self) -> str:
        return f"ORDER BY {self.col} {self.dir}, s.id {self.dir}"

    def walk(self, conn: sqlite3.Connection, edge: tuple[Any, str] | None, limit: int,
             budget: int | None = None) -> tuple[list[Key], bool]:
        """Down the sort column's index from ``edge``, probing the filters. With a
        budget (SQLite VM steps), stops when it is spent; says whether it was."""
        rw, rp = self.rows(walking=True)
        kw, kp = self.after(edge)
        pw, pp = self.probes()
        sql = (
            f"SELECT s.rowid, {self.col}, s.id FROM sessions AS s INDEXED BY audit_sessions_{self.q.sort}"
            f" {_where(rw + kw + pw)} {self.order()} LIMIT ?"
        )
        keys: list[Key] = []
        spent = [0]

        def tick() -> bool:
            spent[0] += 1
            return spent[0] * _TICK > (budget or 0)

        if budget:
            conn.set_progress_handler(tick, _TICK)
        try:
            for row in conn.execute(sql, [*rp, *kp, *pp, limit]):
                keys.append(tuple(row))  # type: ignore[arg-type]
        except sqlite3.OperationalError as e:
            if not budget or "interrupt" not in str(e):
                raise
            return keys, True
        finally:
            if budget:
                conn.set_progress_handler(None, 0)
        return keys, False

    def drive(self, conn: sqlite3.Connection, driver: _SessionSet, edge: tuple[Any, str] | None, limit: int) -> list[Key]:
        """From the sessions of one selective filter, fetched by id and sorted."""
        rw, rp = self.rows(walking=False)
        kw, kp = self.after(edge)
        pw, pp = self.probes(skip=driver)
        sql = (
            f"SELECT s.rowid, {self.col}, s.id FROM (SELECT DISTINCT session_id AS sid FROM ({driver.sql})) AS d"
            f" CROSS JOIN sessions AS s ON s.id = d.sid {_where(rw + kw + pw)} {self.order()} LIMIT ?"
        )
        return [tuple(r) for r in conn.execute(sql, [*driver.params, *rp, *kp, *pp, limit])]  # type: ignore[misc]


def _where(conditions: list[str]) -> str:
    return "WHERE " + " AND ".join(conditions) if conditions else ""


def find_keys(conn: sqlite3.Connection, q: SessionQuery, limit: int) -> tuple[list[Key], str]:
    """The first ``limit`` sessions of the list from the query's edge, and how
    they were found ("walk", "index:<filter>", or "walk-on" when a walk spent its
    budget and went on; see the module's docstring)."""
    sets = _sets(conn, q)
    finder = _Finder(q, sets)
    edge = q.before or q.after
    if sets:  # a filter with only a few sessions drives at once
        small, i = min(((_matches(conn, s, _FEW), i) for i, s in enumerate(sets)), key=lambda m: m[0])
        if small < _FEW:
            return finder.drive(conn, sets[i], edge, limit), f"index:{sets[i].name}"
    keys, spent = finder.walk(conn, edge, limit, budget=_WALK_BUDGET if sets else None)
    if not spent:
        return keys, "walk"
    walked = _WALK_BUDGET / _STEPS_PER_SESSION  # about how many sessions the walk passed
    walk_on = (limit - len(keys)) * walked / max(len(keys), 0.5)  # and would still pass
    cap = int(min(walk_on, _DRIVE_CAP))
    smallest, driver = min(((_matches(conn, s, cap), i) for i, s in enumerate(sets)), key=lambda m: m[0])
    if smallest < cap:
        return finder.drive(conn, sets[driver], edge, limit), f"index:{sets[driver].name}"
    more, _ = finder.walk(conn, keys[-1][1:] if keys else edge, limit - len(keys))
    return keys + more, "walk-on"


def session_page(conn: sqlite3.Connection, q: SessionQuery) -> SessionPage:
    keys, plan = find_keys(conn, q, q.offset + q.limit + 1)
    keys = keys[q.offset:]
    more = len(keys) > q.limit
    keys = keys[: q.limit]
    backwards = q.before is not None
    if backwards:
        keys.reverse()
    rows = _sessions_by_rowid(conn, [k[0] for k in keys])

    def cursor(key: Key) -> str:
        return encode_cursor(q.sort, key[1], key[2])

    edge = q.before or q.after
    has_next = (more if not backwards else True) and bool(keys)
    has_prev = (more if backwards else edge is not None or q.offset > 0) and bool(keys)
    return SessionPage(
        rows=_with_details(conn, rows), after=cursor(keys[-1]) if has_next else None,
        before=cursor(keys[0]) if has_prev else None, plan=plan,
    )


def _sessions_by_rowid(conn: sqlite3.Connection, rowids: list[int]) -> list[sqlite3.Row]:
    if not rowids:
        return []
    found = {
        r["rid"]: r for r in conn.execute(
            "SELECT s.rowid AS rid, s.*, (SELECT c.model FROM calls AS c WHERE c.session_id = s.id"
            f" ORDER BY c.started LIMIT 1) AS first_model FROM sessions AS s WHERE s.rowid IN ({','.join('?' * len(rowids))})",
            rowids,
        )
    }
    return [found[r] for r in rowids if r in found]


def _with_details(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[SessionRow]:
    """The page's rows with who called and which rules fired: a few indexed
    lookups for the page's sessions only."""
    ids = [r["id"] for r in rows]
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    agents: dict[str, list[str]] = {}
    keys: dict[str, list[str]] = {}
    for sid, agent, key in conn.execute(
        f"SELECT session_id, agent, key_id FROM session_clients WHERE session_id IN ({marks}) ORDER BY first_seen", ids
    ):
        if agent and agent not in agents.setdefault(sid, []):
            agents[sid].append(agent)
        if key and key not in keys.setdefault(sid, []):
            keys[sid].append(key)
    rules: dict[str, list[tuple[str, int]]] = {}
    for sid, rule, n in conn.execute(
        f"SELECT session_id, rule, count(*) FROM decision_rules WHERE session_id IN ({marks})"
        " GROUP BY session_id, rule ORDER BY session_id, count(*) DESC, rule", ids
    ):
        rules.setdefault(sid, []).append((rule, n))
    return [
        SessionRow(
            session=session_record(r), model=r["first_model"], agents=agents.get(r["id"], []),
            keys=keys.get(r["id"], []), rules=rules.get(r["id"], []),
        )
        for r in rows
    ]


def session_record(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"], started=row["started"], last_call=row["last_call"], calls=row["calls"], events=row["events"],
        status=row["status"], parent_id=row["parent_id"], root_id=row["root_id"], depth=row["depth"] or 0,
        labels=orjson.loads(row["labels"] or "{}"), counters=orjson.loads(row["counters"] or "{}"),
    )


def facets(conn: sqlite3.Connection, most: int = 200) -> dict[str, list[str]]:
    """The values the filters can take (for the form's suggestions), each read by
    skipping through its index: one seek per distinct value, not a scan."""
    def distinct(table: str, column: str) -> list[str]:
        sql = (
            f"WITH RECURSIVE v(x) AS (SELECT min({column}) FROM {table} WHERE {column} != ''"
            f" UNION ALL SELECT (SELECT min({column}) FROM {table} WHERE {column} > v.x) FROM v WHERE v.x IS NOT NULL)"
            f" SELECT x FROM v WHERE x IS NOT NULL LIMIT {most}"
        )
        return [r[0] for r in conn.execute(sql)]

    return {
        "rule": distinct("decision_rules", "rule"),
        "model": distinct("calls", "model"),
        "agent": distinct("session_clients", "agent"),
        "key": distinct("session_clients", "key_id"),
    }


def session_exists(conn: sqlite3.Connection, session_id: str) -> bool:
    return conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None
