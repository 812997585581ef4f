"""The session counters Proctor keeps for policies (``input.session.counters``),
so rules can read totals instead of scanning the trajectory. One function, used
by the store when it records a call and by ``proctor replay`` when it re-lives one."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from adapters.model import EventKind, TrajectoryEvent


def count_call(
    counters: dict[str, Any], *, input_tokens: int | None, output_tokens: int | None,
    events: Sequence[TrajectoryEvent], outcomes: Iterable[str],
) -> dict[str, Any]:
    """``counters`` updated in place by one call's events and decision outcomes."""
    counters["calls"] = counters.get("calls", 0) + 1
    counters["events"] = counters.get("events", 0) + len(events)
    counters["input_tokens"] = counters.get("input_tokens", 0) + (input_tokens or 0)
    counters["output_tokens"] = counters.get("output_tokens", 0) + (output_tokens or 0)
    per_tool: dict[str, int] = counters.setdefault("tool_calls", {})
    for ev in events:
        if ev.kind is EventKind.TOOL_CALL and ev.tool_name:
            per_tool[ev.tool_name] = per_tool.get(ev.tool_name, 0) + 1
    counters["tool_calls_total"] = sum(per_tool.values())
    by_outcome: dict[str, int] = counters.setdefault("decisions", {})
    for outcome in outcomes:
        if outcome != "allow":
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    return counters
