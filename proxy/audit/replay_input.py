"""Where ``proctor replay`` gets its sessions (proxy/audit/replay.py judges them):
sessions a store holds, lines of ``proctor export``, and conversations in OpenAI
chat format, each split into calls the way the proxy saw them, with what was
decided at the time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Iterator, Sequence

import orjson

from adapters.base import BadRequest
from adapters.model import Call, EventKind, ToolSpec, TrajectoryEvent
from adapters.openai_chat import ChatAdapter
from proxy.audit.export import SessionDump, load_session
from proxy.enforcement import TERMINATED
from proxy.store.base import SessionStore

BLOCKING = ("deny", "terminate")
_MODEL_KINDS = (EventKind.ASSISTANT, EventKind.TOOL_CALL)
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


def _stored_rules(doc: dict[str, Any]) -> list[str]:
    return sorted({f["rule"] for key in ("terminate", "deny", "ask", "warn") for f in doc.get(key) or () if "rule" in f})


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
