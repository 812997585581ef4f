"""``proctor replay``: judge recorded sessions again, with another policy, call by
call as if live, and say what would have been allowed, denied or asked, and what
changed against what was decided at the time.

Each call is rebuilt from the stored trajectory: the events it added (judged at
the request stage) and the reply upstream gave (each tool call judged at the
action stage with the earlier ones appended, then the final message). The
judging is the proxy's own :class:`~proxy.enforcement.Enforcement`, so the policy
input is built by the same code as live. What the new policy decides flows into
the later calls as it would have: session labels, counters, denial labels on the
reply, ``decision`` events, termination (later calls refused).

What a replay cannot know: how the agent would have reacted to a decision that
differs (its later calls are the recorded ones); what a person would have
answered to an ``ask`` (taken as approved); and a call refused at the time has no
reply to judge.

Sources: stored sessions (a store, or lines of ``proctor export``), and
conversations in OpenAI chat format, one per line: ``{"messages": [...]}`` (with
optional ``model``, ``tools``, ``id``) or a bare list of messages. A conversation's
assistant messages are its replies; the messages before each are its request.
Reading them is :mod:`proxy.audit.replay_input`; this module judges them.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from adapters.model import EventKind, TrajectoryEvent
from proxy.approvals import Approval, Approvals
from proxy.audit.replay_input import BLOCKING, InputError, ReplayCall, ReplaySession
from proxy.counters import count_call
from proxy.enforcement import TERMINATED, Enforcement
from proxy.policy.decision import Decision
from proxy.policy.point import PolicyPoint, SessionView
from proxy.sessions import Resolution
from proxy.store.base import SessionRecord

_DECIDED_LABELS = ("denied", "patched", "delivered")  # what enforcement wrote on a reply's events


@dataclass(frozen=True, slots=True)
class Verdict:
    """One point judged again: a call's request, or one tool call / final message."""

    session_id: str
    call_id: str
    call_index: int  # 1-based, in the session's order
    stage: str  # request | action
    action: str  # "request", "message", or the tool's name
    tool_call_id: str | None
    seq: int | None  # the recorded event judged (conversations: its index)
    outcome: str
    rules: list[str]
    reasons: list[str]
    was: str | None  # decided at the time; None when nothing was recorded
    was_rules: list[str] | None
    note: str | None = None

    @property
    def changed(self) -> bool:
        return self.was is not None and (self.outcome, self.rules) != (self.was, self.was_rules)

    @property
    def change(self) -> str:
        if not self.changed:
            return ""
        if self.outcome in BLOCKING and self.was not in BLOCKING:
            return "new denial"
        if self.was in BLOCKING and self.outcome not in BLOCKING:
            return "lifted"
        if self.outcome == "ask" and self.was != "ask":
            return "new ask"
        return "changed"

    def to_doc(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id, "call_id": self.call_id, "call_index": self.call_index,
            "stage": self.stage, "action": self.action, "tool_call_id": self.tool_call_id, "seq": self.seq,
            "outcome": self.outcome, "rules": self.rules, "reasons": self.reasons, "was": self.was,
            "was_rules": self.was_rules, "changed": self.changed, "change": self.change or None, "note": self.note,
        }


def findings_of(d: Decision) -> tuple[list[str], list[str]]:
    items = (*d.terminate, *d.deny, *d.ask, *d.warn)
    return sorted({f.rule for f in items}), [f"{f.rule}: {f.message}" for f in items]


# -- recorded events, taken out of their place to be judged again ----------------


def _unplaced(ev: TrajectoryEvent, strip: bool = False) -> TrajectoryEvent:
    labels = {k: v for k, v in ev.labels.items() if k not in _DECIDED_LABELS} if strip else ev.labels
    return replace(ev, session_id=None, call_id=None, seq=None, time=None, labels=labels)


# -- judging ----------------------------------------------------------------


class _ApproveAll(Approvals):
    """Nobody answers an ``ask`` in a replay: it is reported, and the session goes
    on as if a person had approved it."""

    def __init__(self) -> None:
        super().__init__(timeout=1.0)

    async def wait(
        self, *, session_id: str, call_id: str, stage: str, action: dict[str, Any] | None, findings: list[dict[str, str]]
    ) -> Approval:
        now = time.time()
        return Approval("apr_replay", session_id, call_id, stage, action, findings, now, "approved", now, "proctor replay")


@dataclass
class _State:
    """The session as the proxy would have stored it under the replayed policy."""

    calls: int = 0
    events: int = 0
    last_call: float = 0.0
    status: str = "active"
    labels: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    tail: list[TrajectoryEvent] = field(default_factory=list)  # the last `window` events


class Replayer:
    def __init__(self, point: PolicyPoint, window: int) -> None:
        self.point = point
        self.window = window
        self.approvals = _ApproveAll()

    async def replay(self, s: ReplaySession) -> list[Verdict]:
        state = _State(last_call=s.started)
        out: list[Verdict] = []
        for index, c in enumerate(s.calls, 1):
            record = None if state.calls == 0 else SessionRecord(
                id=s.id, started=s.started, last_call=state.last_call, calls=state.calls, events=state.events,
                status=state.status, parent_id=s.parent_id, root_id=s.root_id, depth=s.depth,
                labels=dict(state.labels), counters=copy.deepcopy(state.counters),
                # a session is replayed on its own: its tree's totals are its own (exact without sub-agents)
                tree={"sessions": 1, "counters": copy.deepcopy(state.counters)},
            )
            if c.call is None:  # not judged live either (a pass-through or an undecodable request)
                self._record(state, s.id, c, [_unplaced(ev) for ev in (*c.append, *c.reply)], [], False)
                continue
            view = SessionView(record, list(state.tail), dict(record.labels) if record else {})
            res = Resolution(s.id, "replay", tuple(_unplaced(ev) for ev in c.append), (), "")
            enf = Enforcement(self.point, self.approvals, c.call, res, c.id, c.client, view)
            verdict = _Verdicts(s, c, index, out)
            if state.status == "terminated":  # the proxy refuses before asking the policy
                verdict.add("request", "request", None, None, Decision(deny=(TERMINATED,)))
                reached = False
            else:
                reached = not await enf.check_request()
                note = None
                if reached and c.refused and not c.reply:
                    note = "refused at the time, so no reply was recorded: its actions cannot be judged"
                verdict.add("request", "request", None, None, enf.records[-1].decision, note)
            reply = [_unplaced(ev, strip=True) for ev in c.reply] if reached else []
            await self._actions(enf, c, reply, verdict)
            self._record(state, s.id, c, [*res.append, *enf.finish(tuple(reply)), *enf.decision_events()], enf.records, enf.terminate)
            state.labels.update(enf.labels)
        return out

    async def _actions(self, enf: Enforcement, c: ReplayCall, reply: list[TrajectoryEvent], verdict: _Verdicts) -> None:
        """The action stage as :class:`~proxy.calls.ModelCall` runs it: a stream's
        tool calls see only the earlier tool calls, a JSON reply's all earlier events."""
        assert c.call is not None
        earlier: list[TrajectoryEvent] = []
        tools: list[TrajectoryEvent] = []
        for ev, stored in zip(reply, c.reply):
            if ev.kind is EventKind.TOOL_CALL:
                await enf.check_action(ev, len(tools), list(tools) if c.call.stream else list(earlier))
                verdict.add("action", ev.tool_name or "?", ev.tool_call_id, stored.seq, enf.records[-1].decision)
                tools.append(ev)
            earlier.append(ev)
        if reply and not tools and reply[-1].kind is EventKind.ASSISTANT and not (c.call.stream and c.errors):
            await enf.check_message(reply[-1], reply[:-1], delivered=c.call.stream)
            verdict.add("action", "message", None, c.reply[-1].seq, enf.records[-1].decision)

    def _record(
        self, state: _State, session_id: str, c: ReplayCall, events: list[TrajectoryEvent], records: Sequence[Any],
        terminate: bool,
    ) -> None:
        placed = [
            ev.placed(session_id=session_id, call_id=c.id, seq=state.events + i, time=c.started)
            for i, ev in enumerate([*events, *c.errors])
        ]
        state.events += len(placed)
        state.calls += 1
        state.last_call = max(state.last_call, c.started)
        state.counters = count(state.counters, c, placed, records)
        state.tail = (state.tail + placed)[-self.window:] if self.window else []
        if terminate:
            state.status = "terminated"


def count(counters: dict[str, Any], c: ReplayCall, placed: Sequence[TrajectoryEvent], records: Sequence[Any]) -> dict[str, Any]:
    """The session counters the store keeps, after one call (a copy; the input is left as it was)."""
    return count_call(
        copy.deepcopy(counters), input_tokens=c.input_tokens, output_tokens=c.output_tokens, events=placed,
        outcomes=[r.decision.outcome for r in records],
    )


@dataclass
class _Verdicts:
    session: ReplaySession
    call: ReplayCall
    index: int
    out: list[Verdict]

    def add(self, stage: str, action: str, tool_call_id: str | None, seq: int | None, d: Decision, note: str | None = None) -> None:
        key = ("request", self.call.id) if stage == "request" else ("action", self.call.id, seq)
        was = self.session.stored.get(key, self.session.stored_default)
        rules, reasons = findings_of(d)
        self.out.append(Verdict(
            self.session.id, self.call.id, self.index, stage, action, tool_call_id, seq, d.outcome, rules, reasons,
            was[0] if was else None, list(was[1]) if was else None, note,
        ))


# -- the report -------------------------------------------------------------


@dataclass
class ReplayReport:
    policies: str
    revision: str
    keep_all: bool = False
    sessions: int = 0
    calls: int = 0
    judged: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    was: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    verdicts: list[Verdict] = field(default_factory=list)  # the changed and the not-allowed (all with keep_all)
    errors: list[InputError] = field(default_factory=list)

    def add(self, session: ReplaySession, verdicts: Sequence[Verdict]) -> None:
        self.sessions += 1
        self.calls += len(session.calls)
        for v in verdicts:
            self.judged += 1
            self.outcomes[v.outcome] += 1
            if v.was is not None:
                self.was[v.was] += 1
            if v.changed:
                self.changes[v.change] += 1
            if self.keep_all or v.changed or v.outcome != "allow":
                self.verdicts.append(v)

    def to_doc(self) -> dict[str, Any]:
        return {
            "policies": self.policies, "revision": self.revision,
            "summary": {
                "sessions": self.sessions, "calls": self.calls, "judged": self.judged,
                "outcomes": dict(self.outcomes), "was": dict(self.was), "changed": sum(self.changes.values()),
                "new_denials": self.changes["new denial"], "lifted_denials": self.changes["lifted"],
                "new_asks": self.changes["new ask"], "other_changes": self.changes["changed"],
            },
            "verdicts": [v.to_doc() for v in self.verdicts],
            "errors": [e.to_doc() for e in self.errors],
        }

    def table(self) -> str:
        def tally(c: Counter[str]) -> str:
            return ", ".join(f"{k} {c[k]}" for k in ("allow", "warn", "patch", "ask", "deny", "terminate") if c[k]) or "-"

        lines = [
            f"replayed {self.sessions} sessions, {self.calls} calls, {self.judged} decisions"
            f" with {self.policies} (revision {self.revision})",
            f"  now:         {tally(self.outcomes)}",
            f"  at the time: {tally(self.was)}",
            f"  changed:     {sum(self.changes.values())} ({self.changes['new denial']} new denials,"
            f" {self.changes['lifted']} lifted, {self.changes['new ask']} new asks, {self.changes['changed']} other)",
        ]
        if self.verdicts:
            rows = [("SESSION", "CALL", "STAGE", "ACTION", "NOW", "WAS", "CHANGE", "RULES")]
            rows += [
                (v.session_id, str(v.call_index), v.stage, v.action, v.outcome, v.was or "-", v.change or "",
                 ", ".join(v.rules) or "-")
                for v in self.verdicts
            ]
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
            lines.append("")
            lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows]
        return "\n".join(lines)
