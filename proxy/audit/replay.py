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
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Iterator, Sequence

import orjson

from adapters.base import BadRequest
from adapters.model import Call, EventKind, ToolSpec, TrajectoryEvent
from adapters.openai_chat import ChatAdapter
from proxy.counters import count_call
from proxy.approvals import Approval, Approvals
from proxy.audit.export import SessionDump, load_session
from proxy.enforcement import TERMINATED, Enforcement
from proxy.policy.decision import Decision
from proxy.policy.point import PolicyPoint, SessionView
from proxy.sessions import Resolution
from proxy.store.base import SessionRecord, SessionStore

BLOCKING = ("deny", "terminate")
_MODEL_KINDS = (EventKind.ASSISTANT, EventKind.TOOL_CALL)
_DECIDED_LABELS = ("denied", "patched", "delivered")  # what enforcement wrote on a reply's events
_NO_CLIENT = {"key_id": None, "agent": None, "user_agent": None}
Stored = tuple[str, list[str]]  # (outcome, rules) decided at the time


@dataclass(frozen=True, slots=True)
class ReplayCall:
    """One recorded call, split the way the proxy saw it."""

    id: str
    call: Call | None  # None: never decoded or not a model call (not judged live either)
    client: dict[str, Any]
    append: list[TrajectoryEvent]  # what the call added to the session (stored seqs kept)
    reply: list[TrajectoryEvent]  # what upstream answered
    errors: list[TrajectoryEvent]
    started: float
    input_tokens: int | None = None
    output_tokens: int | None = None
    refused: bool = False  # refused at the request stage at the time: no reply exists


@dataclass(frozen=True, slots=True)
class ReplaySession:
    id: str
    calls: list[ReplayCall]
    started: float
    parent_id: str | None = None
    root_id: str | None = None
    depth: int = 0
    stored: dict[tuple[Any, ...], Stored] = field(default_factory=dict)
    stored_default: Stored | None = None  # for judged points with no stored entry


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


def _stored_rules(doc: dict[str, Any]) -> list[str]:
    return sorted({f["rule"] for key in ("terminate", "deny", "ask", "warn") for f in doc.get(key) or () if "rule" in f})


# -- building replayable sessions -------------------------------------------


def _unplaced(ev: TrajectoryEvent, strip: bool = False) -> TrajectoryEvent:
    labels = {k: v for k, v in ev.labels.items() if k not in _DECIDED_LABELS} if strip else ev.labels
    return replace(ev, session_id=None, call_id=None, seq=None, time=None, labels=labels)


def _appended_count(content: Sequence[TrajectoryEvent], decisions: Sequence[dict[str, Any]]) -> int:
    """How many of a call's events it brought (the rest is the reply). The decision
    input's ``new`` says it exactly; without one: the proxy labels every model turn
    a request carries (unverified / rewritten), so the reply starts at the first
    model turn without such a label."""
    for d in decisions:
        new = (d.get("input") or {}).get("new")
        if isinstance(new, list):
            return len(new)
        if isinstance(new, dict) and isinstance(new.get("count"), int):
            return new["count"]
    for i, ev in enumerate(content):
        if ev.kind in _MODEL_KINDS and not ({"unverified", "rewritten"} & ev.labels.keys()):
            return i
    return len(content)


def from_dump(dump: SessionDump) -> ReplaySession:
    events_of: dict[str | None, list[TrajectoryEvent]] = {}
    for ev in dump.events:
        events_of.setdefault(ev.call_id, []).append(ev)
    decisions_of: dict[str | None, list[dict[str, Any]]] = {}
    for d in dump.decisions:
        decisions_of.setdefault(d.get("call_id"), []).append(d)
    stored: dict[tuple[Any, ...], Stored] = {}
    for d in dump.decisions:
        doc = d.get("decision") or {}
        key = ("request", d.get("call_id")) if d.get("stage") == "request" else ("action", d.get("call_id"), d.get("event_seq"))
        stored[key] = (d.get("outcome") or doc.get("outcome") or "allow", _stored_rules(doc))
    fallback = not dump.decisions and any(ev.kind is EventKind.DECISION for ev in dump.events)
    calls = []
    for c in dump.calls:
        evs = events_of.get(c.id, [])
        content = [ev for ev in evs if ev.kind not in (EventKind.DECISION, EventKind.ERROR)]
        decisions = decisions_of.get(c.id, [])
        terminated = "proctor.session_terminated" in (c.error or "")
        if terminated:
            stored[("request", c.id)] = ("deny", [TERMINATED.rule])
        if fallback:  # no decision log: the decision events say what was not allowed
            _from_decision_events(stored, c.id, evs)
        n = _appended_count(content, decisions)
        call_doc = next((d["input"]["call"] for d in decisions if isinstance((d.get("input") or {}).get("call"), dict)), None)
        judged = decisions or terminated or (fallback and c.api != "passthrough")
        call = None
        if judged:
            doc = call_doc or {}
            call = Call(
                api=doc.get("api") or c.api, model=doc.get("model") or c.model or "", stream=c.stream, history=(),
                tools=tuple(ToolSpec(t.get("name"), t.get("description")) for t in doc.get("tools") or () if isinstance(t, dict)),
                params=doc.get("params") or {},
            )
        request = stored.get(("request", c.id))
        calls.append(ReplayCall(
            id=c.id, call=call, client=(call_doc or {}).get("client") or dict(_NO_CLIENT),
            append=content[:n], reply=content[n:], errors=[ev for ev in evs if ev.kind is EventKind.ERROR],
            started=c.started, input_tokens=c.input_tokens, output_tokens=c.output_tokens,
            refused=bool(request and request[0] in BLOCKING) or (c.error or "").startswith("Proctor blocked this request"),
        ))
    s = dump.session
    return ReplaySession(
        id=s.id, calls=calls, started=s.started, parent_id=s.parent_id, root_id=s.root_id, depth=s.depth,
        stored=stored, stored_default=("allow", []) if fallback else None,
    )


def _from_decision_events(stored: dict[tuple[Any, ...], Stored], call_id: str, evs: Sequence[TrajectoryEvent]) -> None:
    first = evs[0].seq if evs and evs[0].seq is not None else 0
    for ev in evs:
        if ev.kind is not EventKind.DECISION:
            continue
        lab = ev.labels
        entry = (str(lab.get("outcome") or "warn"), sorted(lab.get("rules") or []))
        if lab.get("stage") == "request":
            stored[("request", call_id)] = entry
        elif isinstance(lab.get("action_index"), int):
            stored[("action", call_id, first + lab["action_index"])] = entry


def from_messages(doc: Any, line: int) -> ReplaySession:
    """A conversation in OpenAI chat format; ValueError says what is wrong with it."""
    body = {"messages": doc} if isinstance(doc, list) else dict(doc)
    sid = str(body.pop("session_id", None) or body.pop("id", None) or f"line-{line}")
    body.setdefault("model", "replay")
    body.pop("stream", None)
    try:
        decoded = ChatAdapter().decode_request(body)
    except BadRequest as e:
        raise ValueError(e.message) from None
    call = replace(decoded, history=())
    events = [replace(ev, seq=i) for i, ev in enumerate(decoded.history)]
    calls: list[ReplayCall] = []
    append: list[TrajectoryEvent] = []
    reply: list[TrajectoryEvent] = []
    for ev in [*events, None]:
        if ev is None or (ev.kind not in _MODEL_KINDS and reply):
            if append or reply:
                calls.append(ReplayCall(f"{sid}/{len(calls) + 1}", call, dict(_NO_CLIENT), append, reply, [], time.time()))
            append, reply = [], []
        if ev is not None:
            (reply if ev.kind in _MODEL_KINDS else append).append(ev)
    return ReplaySession(id=sid, calls=calls, started=time.time())


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


# -- sources ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputError:
    message: str
    line: int | None = None
    session_id: str | None = None

    def to_doc(self) -> dict[str, Any]:
        where = {"line": self.line} if self.line is not None else {"session_id": self.session_id}
        return {**where, "message": self.message}

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else f"session {self.session_id}: {self.message}"


async def from_store(store: SessionStore, ids: Sequence[str]) -> AsyncIterator[ReplaySession | InputError]:
    from proxy.audit.export import all_session_ids

    async def given() -> AsyncIterator[str]:
        for sid in ids:
            yield sid

    async for sid in given() if ids else all_session_ids(store):
        dump = await load_session(store, sid)
        if dump is None:
            yield InputError("no such session in the store; `proctor sessions` lists them", session_id=sid)
        else:
            yield from_dump(dump)


def from_lines(lines: Iterator[bytes]) -> Iterator[ReplaySession | InputError]:
    """One session or conversation per line; a bad line is reported by number and skipped."""
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            yield InputError(f"not valid JSON ({e})", line=n)
            continue
        try:
            if isinstance(doc, dict) and "session" in doc and "events" in doc:
                yield from_dump(SessionDump.from_doc(doc))
            elif isinstance(doc, list) or (isinstance(doc, dict) and "messages" in doc):
                yield from_messages(doc, n)
            else:
                yield InputError('expected {"messages": [...]}, a list of messages, or a line of `proctor export`', line=n)
        except (ValueError, TypeError, KeyError) as e:
            yield InputError(str(e), line=n)


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
