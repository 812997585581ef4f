"""One session as the audit UI shows it: the trajectory grouped by the calls
that brought each event, every decision attached to the event or call it
judged, the sub-agent tree, and token, cost and time totals.

Every read is by primary key or by an index on the session (or its root), so a
session page costs the same in a store of a thousand sessions or of a million.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import orjson
from aiohttp import web

from adapters.model import EventKind, TrajectoryEvent
from proxy.audit.queries import session_record
from proxy.store.base import CallRecord, SessionRecord

EVENTS_PER_PAGE = 2000
TREE_LIMIT = 500
_SEVERITY = {"terminate": 5, "deny": 4, "ask": 3, "warn": 2, "patch": 1, "allow": 0}
Prices = Mapping[str, Mapping[str, float]]  # model (or prefix) -> {"input": usd, "output": usd} per million tokens
PRICES = web.AppKey("audit_prices", dict)


def load_prices(path: Path | None = None) -> dict[str, dict[str, float]]:
    """The price table (``prices.json`` beside this module unless another is given)."""
    return dict(orjson.loads((path or Path(__file__).with_name("prices.json")).read_bytes())["models"])


@dataclass(frozen=True, slots=True)
class DecisionView:
    id: str
    call_id: str
    stage: str
    event_seq: int | None
    outcome: str
    findings: list[dict[str, str]]  # kind (deny, ask, ...), rule, message, mode
    revision: str
    engine: str
    eval_ms: float
    time: float
    error: str | None
    approval: dict[str, Any] | None  # how a person (or the timeout) answered an ask

    @property
    def rules(self) -> list[str]:
        return sorted({f["rule"] for f in self.findings})


@dataclass(frozen=True, slots=True)
class EventView:
    event: TrajectoryEvent
    decisions: list[DecisionView]  # action-stage decisions about this event
    records: DecisionView | None = None  # for a ``decision`` event: the decision it records


@dataclass
class CallView:
    call: CallRecord
    events: list[EventView] = field(default_factory=list)
    decisions: list[DecisionView] = field(default_factory=list)  # request stage
    cost: float | None = None

    @property
    def outcome(self) -> str:
        """The call's most severe decision."""
        found = [d.outcome for d in self.decisions] + [d.outcome for e in self.events for d in e.decisions]
        return max(found, key=lambda o: _SEVERITY.get(o, 0), default="allow")


@dataclass(frozen=True, slots=True)
class TreeNode:
    session: SessionRecord
    depth: int  # below the root
    current: bool


@dataclass(frozen=True, slots=True)
class Totals:
    calls: int
    events: int
    input_tokens: int
    output_tokens: int
    cost: float | None  # USD, None when no call's model is in the price table
    priced_calls: int
    latency_ms: float
    outcomes: dict[str, int]


@dataclass
class SessionDetail:
    session: SessionRecord
    calls: list[CallView]
    tree: list[TreeNode]
    tree_truncated: bool
    totals: Totals
    agents: list[str]
    keys: list[str]
    models: list[str]
    first_seq: int  # the events shown start here; the session has session.events in all
    next_seq: int | None  # where the next page of events starts


def price_of(prices: Prices, model: str | None) -> Mapping[str, float] | None:
    """The exact model, else the longest price-table key it starts with
    (``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``)."""
    if not model:
        return None
    if model in prices:
        return prices[model]
    best = max((k for k in prices if model.startswith(k)), key=len, default=None)
    return prices[best] if best else None


def call_cost(prices: Prices, call: CallRecord) -> float | None:
    price = price_of(prices, call.model)
    if price is None or (call.input_tokens is None and call.output_tokens is None):
        return None
    return ((call.input_tokens or 0) * price["input"] + (call.output_tokens or 0) * price["output"]) / 1e6


def _decision(row: sqlite3.Row) -> DecisionView:
    doc = orjson.loads(row["decision"])
    findings = [
        {"kind": kind, "rule": f["rule"], "message": f["message"], "mode": f.get("mode", "enforce")}
        for kind in ("terminate", "deny", "ask", "warn")
        for f in doc.get(kind, ())
    ]
    result = orjson.loads(row["result"]) if row["result"] else None
    approval = result.get("approval") if isinstance(result, dict) else None
    return DecisionView(
        id=row["id"], call_id=row["call_id"], stage=row["stage"], event_seq=row["event_seq"], outcome=row["outcome"],
        findings=findings, revision=row["revision"] or "", engine=row["engine"] or "", eval_ms=row["eval_ms"] or 0.0,
        time=row["time"], error=row["error"], approval=approval,
    )


def _event(row: sqlite3.Row) -> TrajectoryEvent:
    return TrajectoryEvent(
        kind=EventKind(row["kind"]), role=row["role"], text=row["text"], tool_name=row["tool_name"],
        arguments=orjson.loads(row["arguments"]) if row["arguments"] is not None else None,
        tool_call_id=row["tool_call_id"], labels=orjson.loads(row["labels"]) if row["labels"] else {},
        session_id=row["session_id"], call_id=row["call_id"], seq=row["seq"], time=row["time"],
    )


def _call(row: sqlite3.Row) -> CallRecord:
    return CallRecord(
        id=row["id"], session_id=row["session_id"], api=row["api"], path=row["path"], model=row["model"],
        stream=bool(row["stream"]), started=row["started"], latency_ms=row["latency_ms"] or 0.0, status=row["status"],
        resolved_by=row["resolved_by"], error=row["error"], input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"], response_id=row["response_id"],
    )


def session_tree(conn: sqlite3.Connection, session: SessionRecord) -> tuple[list[TreeNode], bool]:
    """The whole system the session belongs to, from its root, depth first."""
    root = session.root_id or session.id
    rows = conn.execute(
        "SELECT * FROM sessions WHERE root_id = ? ORDER BY started, rowid LIMIT ?", (root, TREE_LIMIT + 1)
    ).fetchall()
    truncated = len(rows) > TREE_LIMIT
    records = {r["id"]: session_record(r) for r in rows[:TREE_LIMIT]}
    records.setdefault(session.id, session)
    children: dict[str | None, list[SessionRecord]] = {}
    for rec in records.values():
        parent = rec.parent_id if rec.parent_id in records else None
        children.setdefault(parent, []).append(rec)
    out: list[TreeNode] = []
    stack = [(rec, 0) for rec in reversed(children.get(None, []))]
    while stack:
        rec, depth = stack.pop()
        out.append(TreeNode(rec, depth, rec.id == session.id))
        stack.extend((child, depth + 1) for child in reversed(children.get(rec.id, [])))
    return out, truncated


def session_detail(conn: sqlite3.Connection, session_id: str, prices: Prices, from_seq: int = 0) -> SessionDetail | None:
    row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        return None
    session = session_record(row)
    calls = [_call(r) for r in conn.execute(
        "SELECT * FROM calls WHERE session_id = ? ORDER BY started, rowid", (session_id,)
    )]
    events = [_event(r) for r in conn.execute(
        "SELECT * FROM events WHERE session_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
        (session_id, from_seq, EVENTS_PER_PAGE + 1),
    )]
    next_seq = events[EVENTS_PER_PAGE].seq if len(events) > EVENTS_PER_PAGE else None
    events = events[:EVENTS_PER_PAGE]
    decisions = [_decision(r) for r in conn.execute(
        "SELECT id, call_id, stage, event_seq, outcome, decision, CASE WHEN outcome = 'ask' THEN result END AS result,"
        " revision, engine, eval_ms, time, error FROM decisions WHERE session_id = ? ORDER BY time, rowid",
        (session_id,),
    )]
    clients = conn.execute(
        "SELECT agent, key_id FROM session_clients WHERE session_id = ? ORDER BY first_seen", (session_id,)
    ).fetchall()
    tree, truncated = session_tree(conn, session)
    views = _timeline(calls, events, decisions, prices, first_page=from_seq == 0, last_page=next_seq is None)
    return SessionDetail(
        session=session, calls=views, tree=tree, tree_truncated=truncated, totals=_totals(session, calls, prices),
        agents=list(dict.fromkeys(a for a, _ in clients if a)), keys=list(dict.fromkeys(k for _, k in clients if k)),
        models=list(dict.fromkeys(c.model for c in calls if c.model)), first_seq=from_seq, next_seq=next_seq,
    )


def _timeline(
    calls: list[CallRecord], events: list[TrajectoryEvent], decisions: list[DecisionView], prices: Prices,
    first_page: bool, last_page: bool,
) -> list[CallView]:
    """Calls in order, each with its events in this page and its decisions. A call
    none of whose events are on this page is shown when its time falls in the
    page's span (calls that recorded no event, e.g. refused ones)."""
    by_id = {d.id: d for d in decisions}
    judged: dict[int, list[DecisionView]] = {}
    views = {c.id: CallView(c, cost=call_cost(prices, c)) for c in calls}
    for d in decisions:
        if d.stage == "action" and d.event_seq is not None:
            judged.setdefault(d.event_seq, []).append(d)
        elif d.call_id in views:
            views[d.call_id].decisions.append(d)
    order: list[str] = []
    for ev in events:
        view = views.get(ev.call_id or "")
        if view is None:  # an event whose call was not recorded: keep it visible
            view = views[ev.call_id or ""] = CallView(_orphan_call(ev))
        if not order or order[-1] != view.call.id:
            order.append(view.call.id)
        record = by_id.get(ev.labels.get("decision_id", "")) if ev.kind is EventKind.DECISION else None
        view.events.append(EventView(ev, judged.get(ev.seq, []) if ev.seq is not None else [], record))
    lo = (events[0].time or 0.0) if events and not first_page else float("-inf")
    hi = (events[-1].time or 0.0) if events and not last_page else float("inf")
    shown = set(order)
    quiet = [c.id for c in calls if c.id not in shown and lo <= c.started <= hi and not views[c.id].events]
    ordered = [views[i] for i in dict.fromkeys(order)] + [views[i] for i in quiet]
    return sorted(ordered, key=lambda v: (v.call.started, min((e.event.seq or 0 for e in v.events), default=0)))


def _orphan_call(ev: TrajectoryEvent) -> CallRecord:
    return CallRecord(
        id=ev.call_id or "", session_id=ev.session_id or "", api="?", path="", model=None, stream=False,
        started=ev.time or 0.0, latency_ms=0.0, status=0, resolved_by="?",
    )


def _totals(session: SessionRecord, calls: list[CallRecord], prices: Prices) -> Totals:
    costs = [c for c in (call_cost(prices, call) for call in calls) if c is not None]
    return Totals(
        calls=session.calls, events=session.events,
        input_tokens=sum(c.input_tokens or 0 for c in calls), output_tokens=sum(c.output_tokens or 0 for c in calls),
        cost=sum(costs) if costs else None, priced_calls=len(costs),
        latency_ms=sum(c.latency_ms for c in calls), outcomes=dict(session.counters.get("decisions", {})),
    )


def totals_dict(t: Totals) -> dict[str, Any]:
    return {
        "calls": t.calls, "events": t.events, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens,
        "cost_usd": t.cost, "priced_calls": t.priced_calls, "latency_ms": t.latency_ms, "outcomes": t.outcomes,
    }
