"""Sessions and trajectories as terminal text and as JSON (CLI output)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Sequence

import orjson

from adapters.model import EventKind, TrajectoryEvent
from proxy.store.base import CallRecord, SessionRecord


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, width: int = 100) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def sessions_table(sessions: Sequence[SessionRecord]) -> str:
    if not sessions:
        return "no sessions recorded yet"
    header = f"{'SESSION':<26} {'STARTED (UTC)':<19}  {'LAST CALL (UTC)':<19}  {'CALLS':>5} {'EVENTS':>6}  {'STATUS':<10} PARENT"
    rows = [
        f"{s.id:<26} {_when(s.started):<19}  {_when(s.last_call):<19}  {s.calls:>5} {s.events:>6}  {s.status:<10} {s.parent_id or '-'}"
        for s in sessions
    ]
    return "\n".join([header, *rows])


def sessions_json(sessions: Sequence[SessionRecord]) -> str:
    return orjson.dumps([dataclasses.asdict(s) for s in sessions], option=orjson.OPT_INDENT_2).decode()


def _event_line(ev: TrajectoryEvent) -> str:
    kind = ev.kind.value
    if ev.kind is EventKind.TOOL_CALL:
        args = orjson.dumps(ev.arguments).decode() if not isinstance(ev.arguments, str) else ev.arguments
        body = f"{ev.tool_name}({_short(args, 200)})"
    elif ev.kind is EventKind.TOOL_RESULT:
        body = f"{ev.tool_name or '?'} -> {_short(ev.text)}"
    else:
        body = _short(ev.text, 200)
    flags = f"  [{', '.join(f'{k}={_label_value(v)}' for k, v in ev.labels.items())}]" if ev.labels else ""
    return f"  {ev.seq:>4}  {kind:<11} {body}{flags}"


def tree_lines(tree: Sequence[tuple[int, SessionRecord]], current: str) -> list[str]:
    return [
        f"  {'  ' * depth}{'└─ ' if depth else ''}{s.id}{'  <- this session' if s.id == current else ''}"
        f"  ({s.calls} calls, {s.events} events, {s.status})"
        for depth, s in tree
    ]


def session_text(
    session: SessionRecord, calls: Sequence[CallRecord], events: Sequence[TrajectoryEvent],
    tree: Sequence[tuple[int, SessionRecord]] = (),
) -> str:
    lines = [
        f"session {session.id}  status {session.status}  started {_when(session.started)} UTC",
        f"  parent {session.parent_id or '-'}  root {session.root_id or session.id}  depth {session.depth}",
        f"  {session.calls} calls, {session.events} events",
    ]
    if len(tree) > 1:
        lines += ["", "sub-agent tree:", *tree_lines(tree, session.id)]
    by_call: dict[str | None, list[TrajectoryEvent]] = {}
    for ev in events:
        by_call.setdefault(ev.call_id, []).append(ev)
    for c in calls:
        tokens = f"{c.input_tokens or 0}+{c.output_tokens or 0} tokens" if c.input_tokens is not None else "no usage"
        lines.append("")
        lines.append(
            f"call {c.id}  {c.api} {c.model or ''}  {'stream ' if c.stream else ''}status {c.status}"
            f"  {c.latency_ms:.1f} ms  {tokens}  resolved by {c.resolved_by}"
        )
        if c.error:
            lines.append(f"  error: {_short(c.error, 300)}")
        lines.extend(_event_line(ev) for ev in by_call.get(c.id, []))
    return "\n".join(lines)


def session_json(
    session: SessionRecord, calls: Sequence[CallRecord], events: Sequence[TrajectoryEvent],
    tree: Sequence[tuple[int, SessionRecord]] = (),
) -> str:
    doc: dict[str, Any] = {
        "session": dataclasses.asdict(session),
        "tree": [{"depth": d, "id": s.id, "parent_id": s.parent_id} for d, s in tree],
        "calls": [dataclasses.asdict(c) for c in calls],
        "events": [ev.to_dict() for ev in events],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


def _label_value(value: object) -> str:
    """A label as the terminal shows it: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
