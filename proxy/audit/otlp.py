"""Sessions as OpenTelemetry traces: one OTLP/JSON ``ExportTraceServiceRequest``
following the GenAI semantic conventions, for any OTLP collector or backend.

- a session is a trace; its id is derived from the session id, so exporting the
  same session twice gives the same trace;
- each model call is a CLIENT span ``chat {model}`` (``gen_ai.operation.name``,
  ``gen_ai.provider.name`` and the older ``gen_ai.system``, request model,
  response id, token usage, ``gen_ai.conversation.id`` = session id, HTTP status,
  ``error.type`` and an error status when the call failed or was refused);
- each tool call is an INTERNAL span ``execute_tool {name}``, child of the model
  call that asked for it, from the end of that call until the call that brought
  its result back, with the policy's verdict (``proctor.decision.*``);
- a sub-agent's first call links to the tool call span that spawned it.

IDs are hex strings, as OTLP/JSON requires (not the base64 of protobuf's own
JSON mapping); enums are numbers. Arguments and results are left out unless asked
for (``content``): they are the most sensitive part of a trajectory.
"""

from __future__ import annotations

import hashlib
from typing import IO, Any, Sequence

import orjson

from adapters.model import EventKind, TrajectoryEvent
from proxy.audit.export import SessionDump
from proxy.store.base import CallRecord, SessionStore

SPAN_KIND_INTERNAL, SPAN_KIND_CLIENT = 1, 3
STATUS_UNSET, STATUS_ERROR = 0, 2
PROVIDERS = {"chat": "openai", "responses": "openai", "messages": "anthropic"}
SEVERITY = ("allow", "warn", "patch", "ask", "deny", "terminate")
BLOCKING = ("deny", "terminate")


def _hex(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size, person=b"proctor-otlp").hexdigest()


def trace_id(session_id: str) -> str:
    return _hex(f"trace/{session_id}", 16)


def call_span_id(session_id: str, call_id: str) -> str:
    return _hex(f"call/{session_id}/{call_id}", 8)


def tool_span_id(session_id: str, seq: int | None) -> str:
    return _hex(f"tool/{session_id}/{seq}", 8)


def _nanos(seconds: float) -> str:
    return str(int(round(seconds * 1e9)))


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": v if isinstance(v, str) else orjson.dumps(v, default=str).decode()}


def attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in values.items() if v is not None]


def rules_of(decision: dict[str, Any]) -> list[str]:
    doc = decision.get("decision") or {}
    return sorted({f["rule"] for key in ("terminate", "deny", "ask", "warn") for f in doc.get(key) or ()})


def _worst(decisions: Sequence[dict[str, Any]]) -> str | None:
    outcomes = [d.get("outcome") or "allow" for d in decisions]
    return max(outcomes, key=lambda o: SEVERITY.index(o) if o in SEVERITY else 0) if outcomes else None


def _verdict(decisions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not decisions:
        return {}
    last = decisions[-1]
    return {
        "proctor.decision.outcome": _worst(decisions),
        "proctor.decision.rules": sorted({r for d in decisions for r in rules_of(d)}),
        "proctor.decision.id": [d.get("decision_id") for d in decisions] if len(decisions) > 1 else last.get("decision_id"),
        "proctor.policy.revision": ((last.get("bundles") or {}).get("proctor") or {}).get("revision"),
    }


def _decision_event(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "timeUnixNano": _nanos(d.get("timestamp") or 0),
        "name": "proctor.decision",
        "attributes": attributes({
            "proctor.decision.id": d.get("decision_id"), "proctor.decision.stage": d.get("stage"),
            "proctor.decision.outcome": d.get("outcome"), "proctor.decision.rules": rules_of(d),
            "proctor.decision.event_seq": d.get("event_seq"), "proctor.decision.error": d.get("error"),
            "proctor.policy.revision": ((d.get("bundles") or {}).get("proctor") or {}).get("revision"),
        }),
    }


def _operation(call: CallRecord) -> tuple[str | None, str]:
    """(gen_ai.operation.name, span name)."""
    if call.api in PROVIDERS:
        return "chat", f"chat {call.model}" if call.model else "chat"
    if call.path.rstrip("/").endswith("/embeddings"):
        return "embeddings", "embeddings"
    return None, call.path


def session_spans(dump: SessionDump, *, link: tuple[str, str] | None = None, content: bool = False) -> list[dict[str, Any]]:
    """The spans of one session: model calls, and tool calls under them."""
    sid = dump.session.id
    tid = trace_id(sid)
    by_call: dict[str | None, list[TrajectoryEvent]] = {}
    results: dict[str, TrajectoryEvent] = {}
    for ev in dump.events:
        by_call.setdefault(ev.call_id, []).append(ev)
        if ev.kind is EventKind.TOOL_RESULT and ev.tool_call_id:
            results.setdefault(ev.tool_call_id, ev)
    decided: dict[tuple[str | None, str, int | None], list[dict[str, Any]]] = {}
    for d in dump.decisions:
        key = (d.get("call_id"), d.get("stage") or "", d.get("event_seq") if d.get("stage") == "action" else None)
        decided.setdefault(key, []).append(d)
    started = {c.id: c.started for c in dump.calls}
    spans: list[dict[str, Any]] = []
    for i, call in enumerate(dump.calls):
        operation, name = _operation(call)
        span_id = call_span_id(sid, call.id)
        end = call.started + call.latency_ms / 1000
        events = by_call.get(call.id, [])
        mine = [d for d in dump.decisions if d.get("call_id") == call.id]
        own = [d for d in mine if d.get("stage") == "request" or _judged_text(d, events)]
        span = {
            "traceId": tid, "spanId": span_id, "name": name, "kind": SPAN_KIND_CLIENT,
            "startTimeUnixNano": _nanos(call.started), "endTimeUnixNano": _nanos(end),
            "attributes": attributes({
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": PROVIDERS.get(call.api),
                "gen_ai.system": PROVIDERS.get(call.api),
                "gen_ai.request.model": call.model,
                "gen_ai.response.id": call.response_id,
                "gen_ai.usage.input_tokens": call.input_tokens,
                "gen_ai.usage.output_tokens": call.output_tokens,
                "gen_ai.conversation.id": sid,
                "http.response.status_code": call.status,
                "url.path": call.path,
                "error.type": _error_type(call, own),
                "proctor.session.id": sid,
                "proctor.session.parent_id": dump.session.parent_id,
                "proctor.call.id": call.id,
                "proctor.call.api": call.api,
                "proctor.call.stream": call.stream,
                "proctor.call.resolved_by": call.resolved_by,
                **_verdict(own),
            }),
            "events": [_decision_event(d) for d in mine],
            "status": _status(call),
        }
        if i == 0 and link is not None:
            span["links"] = [{"traceId": link[0], "spanId": link[1], "attributes": attributes({"proctor.link": "spawned_by"})}]
        spans.append(span)
        for ev in events:
            if ev.kind is EventKind.TOOL_CALL and not ev.labels.get("unverified") and not ev.labels.get("rewritten"):
                result = results.get(ev.tool_call_id or "")
                spans.append(_tool_span(sid, span_id, ev, end, result, started, decided.get((call.id, "action", ev.seq), []), content))
    return spans


def _judged_text(d: dict[str, Any], events: Sequence[TrajectoryEvent]) -> bool:
    """An action decision about the reply's final message (not a tool call)."""
    seq = d.get("event_seq")
    return d.get("stage") == "action" and any(ev.seq == seq and ev.kind is EventKind.ASSISTANT for ev in events)


def _status(call: CallRecord) -> dict[str, Any]:
    if call.error is None and call.status < 400:
        return {"code": STATUS_UNSET}
    return {"code": STATUS_ERROR, "message": (call.error or f"HTTP {call.status}")[:1000]}


def _error_type(call: CallRecord, decisions: Sequence[dict[str, Any]]) -> str | None:
    if call.error is None and call.status < 400:
        return None
    if any(d.get("stage") == "request" and d.get("outcome") in BLOCKING for d in decisions) or (
        call.error or ""
    ).startswith("Proctor blocked"):
        return "policy_denied"
    return str(call.status) if call.status >= 400 else "_OTHER"


def _tool_span(
    sid: str, parent: str, ev: TrajectoryEvent, start: float, result: TrajectoryEvent | None,
    started: dict[str, float], decisions: list[dict[str, Any]], content: bool,
) -> dict[str, Any]:
    end = started.get(result.call_id or "", start) if result is not None else start
    denied = ev.labels.get("denied")
    span = {
        "traceId": trace_id(sid), "spanId": tool_span_id(sid, ev.seq), "parentSpanId": parent,
        "name": f"execute_tool {ev.tool_name}", "kind": SPAN_KIND_INTERNAL,
        "startTimeUnixNano": _nanos(start), "endTimeUnixNano": _nanos(max(start, end)),
        "attributes": attributes({
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": ev.tool_name,
            "gen_ai.tool.call.id": ev.tool_call_id,
            "gen_ai.tool.type": "function",
            "gen_ai.conversation.id": sid,
            "gen_ai.tool.call.arguments": ev.arguments if content else None,
            "gen_ai.tool.call.result": result.text if content and result is not None else None,
            "error.type": "policy_denied" if denied else None,
            "proctor.event.seq": ev.seq,
            "proctor.tool.patched": True if ev.labels.get("patched") else None,
            **_verdict(decisions),
        }),
        "status": {"code": STATUS_UNSET},
    }
    if denied:
        reasons = "; ".join(f"{d.get('message')} (rule {d.get('rule')})" for d in denied if isinstance(d, dict))
        span["status"] = {"code": STATUS_ERROR, "message": f"denied by policy: {reasons}"[:1000]}
    return span


def spawner_link(dump: SessionDump, parent_events: Sequence[TrajectoryEvent]) -> tuple[str, str] | None:
    """(trace id, span id) of the parent's tool call whose argument was this
    sub-agent's first task, the way the proxy linked them."""
    from proxy.sessions import task_hash

    first = next((ev for ev in dump.events if ev.kind is EventKind.USER and ev.text), None)
    parent = dump.session.parent_id
    if first is None or parent is None:
        return None
    wanted = task_hash(first.text or "")
    for ev in reversed(parent_events):
        if ev.kind is not EventKind.TOOL_CALL:
            continue
        values = ev.arguments.values() if isinstance(ev.arguments, dict) else [ev.arguments]
        if any(isinstance(v, str) and task_hash(v) == wanted for v in values):
            return trace_id(parent), tool_span_id(parent, ev.seq)
    return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("proctor")
    except PackageNotFoundError:  # running from a source tree
        return "0"


class OtlpWriter:
    """Streams one ExportTraceServiceRequest: the envelope, then each session's
    spans as it comes, then the closing brackets (:meth:`close`)."""

    def __init__(self, out: IO[bytes], store: SessionStore | None = None, *, content: bool = False) -> None:
        version = _version()
        self.out, self.store, self.content = out, store, content
        self._first = True
        resource = {"attributes": attributes({"service.name": "proctor", "service.version": version})}
        scope = {"name": "proctor", "version": version}
        self.out.write(b'{"resourceSpans":[{"resource":' + orjson.dumps(resource) + b',"scopeSpans":[{"scope":'
                       + orjson.dumps(scope) + b',"spans":[')

    async def add(self, dump: SessionDump) -> None:
        link = None
        if dump.session.parent_id and self.store is not None:
            link = spawner_link(dump, await self.store.get_events(dump.session.parent_id))
        for span in session_spans(dump, link=link, content=self.content):
            self.out.write((b"" if self._first else b",") + orjson.dumps(span, default=str))
            self._first = False

    def close(self) -> None:
        self.out.write(b"]}]}]}\n")
