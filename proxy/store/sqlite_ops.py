"""The SQLite store's statements: recording a call in one transaction, history
matching, and rows turned into records. They take a connection and run on
whichever thread owns it (see :class:`proxy.store.sqlite.SqliteStore`)."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any, Sequence

import orjson

from adapters.model import EventKind, TrajectoryEvent
from proxy.counters import count_call
from proxy.store.base import CallRecord, HistoryMatch, NewCall, SessionRecord

_TAIL = 16  # history matching looks at this many trailing nodes in one query first
_CONTINUATION_TAIL = 64  # a continuation's reply ends at most this many events before its end


def _event_from_row(row: sqlite3.Row) -> TrajectoryEvent:
    return TrajectoryEvent(
        kind=EventKind(row["kind"]),
        role=row["role"],
        text=row["text"],
        tool_name=row["tool_name"],
        arguments=orjson.loads(row["arguments"]) if row["arguments"] is not None else None,
        tool_call_id=row["tool_call_id"],
        labels=orjson.loads(row["labels"]) if row["labels"] else {},
        session_id=row["session_id"],
        call_id=row["call_id"],
        seq=row["seq"],
        time=row["time"],
    )


def _session_from_row(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"], started=row["started"], last_call=row["last_call"], calls=row["calls"],
        events=row["events"], status=row["status"], parent_id=row["parent_id"],
        root_id=row["root_id"], depth=row["depth"], labels=orjson.loads(row["labels"] or "{}"),
        counters=orjson.loads(row["counters"] or "{}"),
    )


def session_with_tree(conn: sqlite3.Connection, row: sqlite3.Row) -> SessionRecord:
    """The session, with its tree's totals read from its root (one indexed read)."""
    session = _session_from_row(row)
    root = row if row["root_id"] in (None, row["id"]) else conn.execute(
        "SELECT tree_counters, tree_sessions FROM sessions WHERE id = ?", (row["root_id"],)
    ).fetchone()
    if root is None:
        return session
    tree = {"sessions": root["tree_sessions"] or 1, "counters": orjson.loads(root["tree_counters"] or "{}")}
    return dataclasses.replace(session, tree=tree)


def _decision_from_row(row: sqlite3.Row) -> dict[str, Any]:
    """An OPA-style decision-log entry."""
    return {
        "decision_id": row["id"],
        "session_id": row["session_id"],
        "call_id": row["call_id"],
        "stage": row["stage"],
        "event_seq": row["event_seq"],
        "path": row["path"],
        "input": orjson.loads(row["input"]),
        "trajectory": {"session_id": row["session_id"], "from_seq": row["traj_from"], "to_seq": row["traj_to"]},
        "result": orjson.loads(row["result"]) if row["result"] else None,
        "decision": orjson.loads(row["decision"]),
        "outcome": row["outcome"],
        "bundles": {"proctor": {"revision": row["revision"]}},
        "engine": row["engine"],
        "metrics": {"timer_eval_ms": row["eval_ms"]},
        "timestamp": row["time"],
        "error": row["error"],
    }


_INSERT_EVENTS = (
    "INSERT INTO events (session_id, seq, call_id, kind, role, text, tool_name, arguments, tool_call_id, labels, hash, time)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _record_call(conn: sqlite3.Connection, new: NewCall) -> list[TrajectoryEvent]:
    """One call in the caller's transaction: its session's row is read once and
    written once (the root's tree totals once more when the session is a child)."""
    call = new.call
    sid = call.session_id
    now = time.time()
    row = conn.execute(
        "SELECT next_seq, labels, counters, root_id, tree_counters FROM sessions WHERE id = ?", (sid,)
    ).fetchone()
    joins_tree = False  # a new child session: its root's tree gains a session
    parent_id = None
    if row is None:
        root, depth = sid, 0
        if new.parent_session_id is not None and new.parent_session_id != sid:
            prow = conn.execute("SELECT root_id, depth FROM sessions WHERE id = ?", (new.parent_session_id,)).fetchone()
            if prow is not None:  # a parent the store does not hold would be a dangling root, outside any tree's budgets
                parent_id, root, depth, joins_tree = new.parent_session_id, prow[0], prow[1] + 1, True
        next_seq, labels, counters, tree = 0, {}, {}, {}
    else:
        next_seq, root = row[0], row[3]
        labels, counters, tree = orjson.loads(row[1] or "{}"), orjson.loads(row[2] or "{}"), orjson.loads(row[4] or "{}")
    # Placed by the constructor (dataclasses.replace costs several times more);
    # the hash is taken from the unplaced event, which has it cached already.
    placed = [
        TrajectoryEvent(
            kind=ev.kind, text=ev.text, tool_name=ev.tool_name, arguments=ev.arguments, tool_call_id=ev.tool_call_id,
            role=ev.role, labels=ev.labels, session_id=sid, call_id=call.id, seq=next_seq + i, time=now,
        )
        for i, ev in enumerate(new.events)
    ]
    conn.executemany(
        _INSERT_EVENTS,
        [
            (
                sid, next_seq + i, call.id, ev.kind.value, ev.role, ev.text, ev.tool_name,
                orjson.dumps(ev.arguments) if ev.arguments is not None else None,
                ev.tool_call_id, orjson.dumps(ev.labels) if ev.labels else None, ev.hash, now,
            )
            for i, ev in enumerate(new.events)
        ],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO nodes (session_id, id, parent, seq, reply_end, time) VALUES (?, ?, ?, ?, 0, ?)",
        [(sid, node, parent, next_seq + idx if idx >= 0 else None, now) for node, parent, idx in new.nodes],
    )
    if new.reply_hashes:
        conn.executemany(
            "INSERT OR REPLACE INTO replies (session_id, hash, time) VALUES (?, ?, ?)",
            [(sid, h, now) for h in new.reply_hashes],
        )
    if new.spawn_hashes:
        conn.executemany(
            "INSERT OR REPLACE INTO spawns (hash, session_id, time) VALUES (?, ?, ?)",
            [(h, sid, now) for h in new.spawn_hashes],
        )
    if new.request_node is not None:
        conn.execute("UPDATE nodes SET request_end = 1 WHERE session_id = ? AND id = ?", (sid, new.request_node))
    if new.response_node is not None:
        conn.execute("UPDATE nodes SET reply_end = 1 WHERE session_id = ? AND id = ?", (sid, new.response_node))
    if new.response_id:
        conn.execute(
            "INSERT OR REPLACE INTO responses (id, session_id, node, denied) VALUES (?, ?, ?, ?)",
            (new.response_id, sid, new.response_node, orjson.dumps(new.denied_calls) if new.denied_calls else None),
        )
    conn.execute(
        "INSERT INTO calls (id, session_id, api, path, model, stream, started, latency_ms, status, resolved_by, error,"
        " input_tokens, output_tokens, response_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            call.id, sid, call.api, call.path, call.model, int(call.stream), call.started,
            call.latency_ms, call.status, call.resolved_by, call.error, call.input_tokens,
            call.output_tokens, call.response_id,
        ),
    )
    labels.update(new.labels)
    counters = _count(counters, call, placed, new)
    own_tree = (root or sid) == sid  # the session is its tree's root: its row keeps the tree's totals
    tree_json = orjson.dumps(_count(tree, call, placed, new)) if own_tree else None
    if row is None:
        conn.execute(
            "INSERT INTO sessions (id, parent_id, root_id, depth, started, last_call, calls, events, next_seq, status,"
            " labels, counters, head, tree_counters, tree_sessions)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, CASE WHEN ? THEN 'terminated' ELSE 'active' END, ?, ?, ?, ?, 1)",
            (sid, parent_id, root, depth, call.started, call.started,
             len(placed), len(placed), new.terminate, orjson.dumps(labels), orjson.dumps(counters),
             new.response_node, tree_json or b"{}"),
        )
    else:
        conn.execute(
            "UPDATE sessions SET next_seq = ?, calls = calls + 1, events = events + ?, last_call = max(last_call, ?),"
            " labels = ?, counters = ?, status = CASE WHEN ? THEN 'terminated' ELSE status END,"
            " head = coalesce(?, head), tree_counters = coalesce(?, tree_counters) WHERE id = ?",
            (next_seq + len(placed), len(placed), call.started, orjson.dumps(labels), orjson.dumps(counters),
             new.terminate, new.response_node, tree_json, sid),
        )
    if not own_tree:
        trow = conn.execute("SELECT tree_counters FROM sessions WHERE id = ?", (root,)).fetchone()
        if trow is not None:
            conn.execute(
                "UPDATE sessions SET tree_counters = ?, tree_sessions = coalesce(tree_sessions, 1) + ? WHERE id = ?",
                (orjson.dumps(_count(orjson.loads(trow[0] or "{}"), call, placed, new)), int(joins_tree), root),
            )
    if new.decisions:
        conn.executemany(
            "INSERT INTO decisions (id, session_id, call_id, stage, event_seq, path, input, traj_from, traj_to, result,"
            " decision, outcome, rules, revision, engine, eval_ms, time, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    d.decision_id, sid, call.id, d.stage,
                    next_seq + d.action_index if d.action_index is not None else None, d.path,
                    orjson.dumps(d.input, default=str), d.trajectory_range[0], d.trajectory_range[1],
                    orjson.dumps(d.result, default=str), orjson.dumps(d.decision.to_dict()), d.decision.outcome,
                    " ".join(sorted({f.rule for f in (*d.decision.deny, *d.decision.ask, *d.decision.terminate, *d.decision.warn)})),
                    d.revision, d.engine, d.eval_ms, d.time, d.error,
                )
                for d in new.decisions
            ],
        )
    return placed


def _count(counters: dict[str, Any], call: CallRecord, placed: list[TrajectoryEvent], new: NewCall) -> dict[str, Any]:
    return count_call(
        counters, input_tokens=call.input_tokens, output_tokens=call.output_tokens, events=placed,
        outcomes=[d.decision.outcome for d in new.decisions],
    )


def _match_history(conn: sqlite3.Connection, chain: Sequence[str], session_id: str) -> HistoryMatch:
    """Longest stored prefix. Prefixes are closed (a stored node's ancestors are
    stored), so: one query over the tail, then a binary search if it missed."""

    def lookup(ids: Sequence[str]) -> dict[str, str]:
        marks = ",".join("?" * len(ids))
        sql = f"SELECT id, session_id FROM nodes WHERE session_id = ? AND id IN ({marks})"
        return {node: owner for node, owner in conn.execute(sql, [session_id, *ids])}

    if not chain:
        return HistoryMatch(0, None, None)
    start = max(0, len(chain) - _TAIL)
    found = lookup(chain[start:])
    if found:
        for i in range(len(chain) - 1, start - 1, -1):
            if chain[i] in found:
                return HistoryMatch(i + 1, chain[i], found[chain[i]])
    if start == 0 or not lookup(chain[:1]):
        return HistoryMatch(0, None, None)  # the first node is not stored, so none is: a new history
    lo, hi, best = 0, start - 1, None  # search chain[0:start] for the last stored index
    while lo <= hi:
        mid = (lo + hi) // 2
        hit = lookup([chain[mid]])
        if hit:
            best, lo = (mid, hit[chain[mid]]), mid + 1
        else:
            hi = mid - 1
    if best is None:
        return HistoryMatch(0, None, None)
    return HistoryMatch(best[0] + 1, chain[best[0]], best[1])


def _find_continuation(conn: sqlite3.Connection, chain: Sequence[str], tool_call_ids: Sequence[str] = ()) -> HistoryMatch:
    """The longest prefix of ``chain`` that ends where a reply Proctor returned ended.
    Only the tail is searched: an agent continuing a session sends its last reply
    followed by a few new turns, never hundreds."""
    tail = chain[-_CONTINUATION_TAIL:]
    if not tail:
        return HistoryMatch(0, None, None)
    marks = ",".join("?" * len(tail))
    rows = conn.execute(
        f"SELECT n.id, n.session_id, s.head = n.id, s.started, n.time FROM nodes n JOIN sessions s ON s.id = n.session_id"
        f" WHERE n.reply_end = 1 AND n.id IN ({marks})",
        list(tail),
    ).fetchall()
    if not rows:
        return HistoryMatch(0, None, None)
    position = {node: len(chain) - len(tail) + i for i, node in enumerate(tail)}  # the rows are tail nodes
    longest = max(position[r[0]] for r in rows)
    candidates = [r for r in rows if position[r[0]] == longest]
    if len(candidates) > 1 and tool_call_ids:
        # Identical histories, but tool-call ids (not part of the hash) were issued to one of them.
        ids, owners = list(tool_call_ids), [r[1] for r in candidates]
        hit = conn.execute(
            f"SELECT DISTINCT session_id FROM events WHERE kind = 'tool_call' AND tool_call_id IN ({','.join('?' * len(ids))})"
            f" AND session_id IN ({','.join('?' * len(owners))}) LIMIT 2",
            [*ids, *owners],
        ).fetchall()
        if len(hit) == 1:
            return HistoryMatch(longest + 1, chain[longest], hit[0][0])
    # Several sessions with the same history (identical agents): the oldest one
    # still waiting at this reply takes the call, so lockstep twins stay apart.
    waiting = sorted((r for r in candidates if r[2]), key=lambda r: r[3])
    owner = waiting[0][1] if waiting else max(candidates, key=lambda r: r[4])[1]
    return HistoryMatch(longest + 1, chain[longest], owner)
