"""The policy decision point: builds the input document, asks the engine, and
turns the answer into a :class:`Decision`, failing closed on any engine fault
unless configured to fail open. It also keeps the loaded bundle fresh (hot
reload) and makes the decision-log records the store keeps.

The input a policy sees (documented in policies/README.md, schema in
policies/input.schema.json)::

    stage        "request" (what arrives with a call) or "action" (each tool call / final message)
    session      id, parent, root, depth, labels, counters, started, status, events
    trajectory   the last ``window`` events before the reply (stored ones, then this
                 call's new ones), then the reply's events judged so far; texts cut
                 to ``text_limit`` characters
    new          the events this call adds (whole texts at the request stage, where
                 they are judged; cut like the trajectory's at the action stage);
                 at most ``new_limit``: the first quarter and the last of them
    new_omitted  how many of this call's new events ``new`` leaves out (0 mostly)
    action       the pending tool call or final message (stage "action")
    call         api, model, tools, params, client
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import orjson

from adapters.model import Call, EventKind, TrajectoryEvent
from proxy.ids import new_uuid
from proxy.policy.bundle import PolicyError, bundled_library, fingerprint, load_bundle
from proxy.policy.decision import Decision, DecisionShapeError, Finding, parse_decision
from proxy.policy.engine import EngineError, PolicyEngine
from proxy.store.base import SessionRecord

log = logging.getLogger("proctor.policy")


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision, shaped like an OPA decision-log entry. The trajectory is kept
    by reference (the session's seq range), not copied."""

    decision_id: str
    session_id: str
    call_id: str
    stage: str
    path: str
    input: dict[str, Any]  # without the trajectory
    trajectory_range: tuple[int, int]  # seqs [from, to) of the stored events the policy saw
    result: Any
    decision: Decision
    revision: str
    engine: str
    eval_ms: float
    time: float
    error: str | None = None
    action_index: int | None = None  # which event of this call's appended events it judged


@dataclass
class SessionView:
    """What the decision point knows about a session for one call; labels are
    updated in place as decisions within the call set them."""

    record: SessionRecord | None
    window: list[TrajectoryEvent]
    labels: dict[str, Any] = field(default_factory=dict)
    # Event documents for the trajectory, built by the call's first decision and
    # shared by the rest (the same events, seqs and cuts at every stage).
    docs: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    @property
    def base_seq(self) -> int:
        return self.record.events if self.record else 0


def event_doc(ev: TrajectoryEvent, seq: int | None = None, text_limit: int = 0) -> dict[str, Any]:
    """An event as policies see it; ``text_limit`` > 0 cuts a longer text and longer
    strings in tool arguments (and says so)."""
    text = ev.text
    doc = {
        "seq": ev.seq if ev.seq is not None else seq,
        "kind": ev.kind.value,
        "role": ev.role,
        "text": text,
        "tool_name": ev.tool_name,
        "arguments": ev.arguments,
        "tool_call_id": ev.tool_call_id,
        "labels": ev.labels,
        "call_id": ev.call_id,
    }
    if text_limit and text is not None and len(text) > text_limit:
        doc["text"] = text[:text_limit]
        doc["text_length"] = len(text)
    if text_limit and ev.arguments is not None:
        cut = _cut_strings(ev.arguments, text_limit)
        if cut is not ev.arguments:
            doc["arguments"] = cut
            doc["arguments_cut"] = True
    return doc


def _cut_strings(value: Any, limit: int) -> Any:
    """``value`` with every string longer than ``limit`` cut to it; the same object
    when nothing was cut (so the common case copies nothing)."""
    if isinstance(value, str):
        return value[:limit] if len(value) > limit else value
    if isinstance(value, dict):
        items = {k: _cut_strings(v, limit) for k, v in value.items()}
        return items if any(items[k] is not v for k, v in value.items()) else value
    if isinstance(value, list):
        parts = [_cut_strings(v, limit) for v in value]
        return parts if any(a is not b for a, b in zip(parts, value)) else value
    return value


def call_doc(call: Call | None, client: dict[str, Any]) -> dict[str, Any]:
    if call is None:
        return {"api": None, "model": None, "tools": [], "params": {}, "client": client}
    return {
        "api": call.api,
        "model": call.model,
        "tools": [{"name": t.name, "description": t.description} for t in call.tools],
        "params": call.params,
        "client": client,
    }


class PolicyPoint:
    def __init__(
        self, engine: PolicyEngine, *, policies: str | Path | None, query: str, mode: str,
        shadow_rules: Sequence[str], fail_open: bool, timeout: float, reload_interval: float,
        window: int = 16, text_limit: int = 2000, new_limit: int = 1000,
    ) -> None:
        self.engine = engine
        self.root = Path(policies) if policies else bundled_library()
        self.query = query
        self.mode = mode
        self.shadow_rules = frozenset(shadow_rules)
        self.fail_open = fail_open
        self.timeout = timeout
        self.reload_interval = reload_interval
        self.window = window  # events before the reply that the trajectory keeps
        self.text_limit = text_limit  # characters of a text the trajectory keeps (0: all)
        self.new_limit = new_limit  # events of one call that `new` holds (0: all)
        self.revision = ""
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.engine.start()
        await self._load()  # a bad policy at start is fatal: raise PolicyError
        if self.reload_interval > 0:
            self._watcher = asyncio.create_task(self._watch(), name="proctor-policy-reload")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self.engine.close()

    async def _load(self) -> None:
        fp = fingerprint(self.root)
        bundle = load_bundle(self.root)
        await self.engine.load(bundle, self.query)
        self.revision, self._fingerprint = bundle.revision, fp
        log.info("policies loaded from %s, revision %s", self.root, bundle.revision)

    async def reload_if_changed(self) -> bool:
        """Load the directory again if it changed; a bad edit keeps the old revision serving."""
        if fingerprint(self.root) == self._fingerprint:
            return False
        try:
            await self._load()
            return True
        except PolicyError as e:
            self._fingerprint = fingerprint(self.root)  # do not retry until the next edit
            log.error("policy reload refused, revision %s keeps serving: %s", self.revision, e.message)
            return False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                await self.reload_if_changed()
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("policy reload failed")

    def build_input(
        self, stage: str, view: SessionView, session_id: str, new: Sequence[TrajectoryEvent],
        reply: Sequence[TrajectoryEvent], action: TrajectoryEvent | None, call: Call | None, client: dict[str, Any],
    ) -> dict[str, Any]:
        """The input document. Its size is bounded whatever the session's or the
        request's length: the trajectory keeps ``window`` events before the reply
        and cuts texts; only ``new`` at the request stage carries whole texts."""
        rec = view.record
        base = view.base_seq
        limit = self.text_limit
        whole = stage == "request"
        picked = self._picked(len(new))
        if "stored" not in view.docs:
            kept_stored = min(len(view.window), self.window - min(len(new), self.window))
            view.docs["stored"] = [event_doc(ev, text_limit=limit) for ev in view.window[len(view.window) - kept_stored:]]
            view.docs["new"] = [event_doc(new[i], base + i, limit) for i in picked]
        cut_new = view.docs["new"]
        new_docs = [event_doc(new[i], base + i) for i in picked] if whole and limit else cut_new
        # the last `window` events before the reply: stored ones, then this call's new ones
        kept_new = min(len(cut_new), self.window)
        trajectory = [*view.docs["stored"], *cut_new[len(cut_new) - kept_new:]]
        first_reply = base + len(new)
        trajectory += [event_doc(ev, first_reply + i, limit) for i, ev in enumerate(reply)]
        return {
            "stage": stage,
            "session": {
                "id": session_id,
                "parent": rec.parent_id if rec else None,
                "root": (rec.root_id if rec else None) or session_id,
                "depth": rec.depth if rec else 0,
                "labels": dict(view.labels),
                "counters": rec.counters if rec else {},
                "tree": rec.tree if rec and rec.tree else {"sessions": 1, "counters": {}},
                "started": rec.started if rec else time.time(),
                "status": rec.status if rec else "active",
                "events": base,
            },
            "trajectory": trajectory,
            "new": new_docs,
            "new_omitted": len(new) - len(picked),
            "new_omitted_tools": self._omitted_tools(new, picked),
            "action": event_doc(action, first_reply + len(reply)) if action is not None else None,
            "call": call_doc(call, client),
        }

    def _picked(self, n: int) -> range | list[int]:
        """Which of a call's ``n`` new events ``new`` holds: all of them, or past
        ``new_limit`` the first quarter of the limit (the task and its setting) and
        the rest from the end (the latest turns), so one enormous request cannot
        hold the event loop for seconds in the engine."""
        cap = self.new_limit
        if not cap or n <= cap:
            return range(n)
        head = cap // 4
        return [*range(head), *range(n - (cap - head), n)]

    @staticmethod
    def _omitted_tools(new: Sequence[TrajectoryEvent], picked: range | list[int]) -> list[str]:
        """The tools whose results ``new`` leaves out, so that policies fail closed
        only when one of them returns untrusted content."""
        if len(picked) == len(new):
            return []
        kept = set(picked)
        return sorted({ev.tool_name or "" for i, ev in enumerate(new) if i not in kept and ev.kind is EventKind.TOOL_RESULT})

    async def judge(
        self, stage: str, view: SessionView, session_id: str, call_id: str, new: Sequence[TrajectoryEvent],
        reply: Sequence[TrajectoryEvent], action: TrajectoryEvent | None, call: Call | None, client: dict[str, Any],
    ) -> DecisionRecord:
        """One decision: ``new`` are the events the call adds, ``reply`` the reply's
        events judged before ``action``."""
        doc = self.build_input(stage, view, session_id, new, reply, action, call, client)
        t0 = time.perf_counter()
        result: Any = None
        error: str | None = None
        revision = self.revision
        try:
            evaluation = self.engine.evaluate(self.query, orjson.dumps(doc, default=str))
            if self.engine.times_itself:
                result, revision = await evaluation
            elif self.engine.interruptible:
                result, revision = await asyncio.wait_for(evaluation, self.timeout)
            else:  # a task to time it out could not stop it: await it inline, judge its duration
                result, revision = await evaluation
                if time.perf_counter() - t0 > self.timeout:  # in process it cannot be interrupted, only judged late
                    raise EngineError(f"policy evaluation took longer than {self.timeout:g}s")
            decision = parse_decision(result, shadow_rules=self.shadow_rules, mode=self.mode)  # type: ignore[arg-type]
        except (EngineError, DecisionShapeError, asyncio.TimeoutError) as e:
            error = str(e) or f"policy evaluation took longer than {self.timeout:g}s"
            log.error("policy engine error (%s): %s", "fail open" if self.fail_open else "fail closed", error)
            finding = Finding("proctor.engine_error", f"the policy engine failed: {error}", self.mode)  # type: ignore[arg-type]
            decision = Decision(warn=(finding,)) if self.fail_open else Decision(deny=(finding,))
        eval_ms = (time.perf_counter() - t0) * 1000
        view.labels.update(decision.labels)
        # The decision log keeps events by reference (seq ranges), not copies.
        seen = doc.pop("trajectory")
        end = view.base_seq + len(new) + len(reply)
        news = doc["new"]
        doc["new"] = {"count": len(news), "from_seq": news[0]["seq"] if news else None,
                      "to_seq": news[-1]["seq"] + 1 if news else None}
        return DecisionRecord(
            decision_id=new_uuid(), session_id=session_id, call_id=call_id, stage=stage, path=self.query,
            input=doc, trajectory_range=(seen[0]["seq"] if seen else end, end), result=result,
            decision=decision, revision=revision, engine=self.engine.name, eval_ms=eval_ms, time=time.time(),
            error=error,
        )
