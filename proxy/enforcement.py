"""What policies say about one call, turned into what the proxy does.

The request stage judges the events the call adds (user turns, tool results)
before anything goes upstream. The action stage judges each tool call of the
reply in order, each with the earlier ones appended, then the final message.
Every verdict is data (:class:`adapters.edits.ActionEdit`); the adapters'
enforcers apply it to the wire format. Decisions, the labels they set and the
denials are collected on the :class:`Enforcement` and recorded with the call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from adapters.edits import ALLOW, ActionEdit, TextEdit
from adapters.model import Call, EventKind, TrajectoryEvent
from proxy.approvals import Approvals
from proxy.policy.decision import Decision, Finding
from proxy.policy.point import DecisionRecord, PolicyPoint, SessionView, event_doc
from proxy.sessions import Resolution
from proxy.store.base import SessionStore

MESSAGE = -1  # the ordinal that stands for the reply's final message
TERMINATED = Finding("proctor.session_terminated", "this session was terminated by an earlier decision; start a new session")


def client_identity(headers: Mapping[str, str]) -> dict[str, Any]:
    """Who is calling, without the credential itself: a one-way fingerprint of the key."""
    key = headers.get("Authorization", "").removeprefix("Bearer ").strip() or headers.get("x-api-key", "").strip()
    return {
        "key_id": hashlib.blake2b(key.encode(), digest_size=6, person=b"proctor-key").hexdigest() if key else None,
        "agent": headers.get("X-Proctor-Agent"),
        "user_agent": headers.get("User-Agent"),
    }


def refusal_text(action: TrajectoryEvent | None, findings: tuple[Finding, ...]) -> str:
    what = f"the tool call {action.tool_name}" if action is not None and action.tool_name else "this request"
    reasons = "; ".join(f"{f.message} (rule {f.rule})" for f in findings)
    return f"Proctor blocked {what}: {reasons}"


@dataclass
class Enforcement:
    """One call's policy state, from request to record."""

    point: PolicyPoint
    approvals: Approvals
    call: Call
    res: Resolution
    call_id: str
    client: dict[str, Any]
    view: SessionView
    records: list[DecisionRecord] = field(default_factory=list)
    terminate: bool = False
    action_labels: dict[int, dict[str, Any]] = field(default_factory=dict)  # tool-call ordinal (or MESSAGE) -> labels

    @classmethod
    async def open(
        cls, point: PolicyPoint, approvals: Approvals, store: SessionStore, call: Call, res: Resolution,
        call_id: str, headers: Mapping[str, str],
    ) -> Enforcement:
        record, recent = await store.session_view(res.session_id, point.window)
        view = SessionView(record, recent, dict(record.labels) if record else {})
        return cls(point, approvals, call, res, call_id, client_identity(headers), view)

    @property
    def labels(self) -> dict[str, Any]:
        return self.view.labels

    async def _judge(self, stage: str, reply: list[TrajectoryEvent], action: TrajectoryEvent | None, index: int | None) -> Decision:
        """Ask the policy; ``reply`` are the reply's events judged before ``action``."""
        rec = await self.point.judge(
            stage, self.view, self.res.session_id, self.call_id, self.res.append, reply, action, self.call, self.client
        )
        self.records.append(replace(rec, action_index=index))
        if rec.decision.enforced(rec.decision.terminate):
            self.terminate = True
        return rec.decision

    async def _approved(self, stage: str, decision: Decision, action: TrajectoryEvent | None) -> bool:
        asks = decision.enforced(decision.ask)
        approval = await self.approvals.wait(
            session_id=self.res.session_id, call_id=self.call_id, stage=stage,
            action=event_doc(action) if action is not None else None,
            findings=[{"rule": f.rule, "message": f.message} for f in asks],
        )
        self.records[-1] = replace(self.records[-1], result={"policy": self.records[-1].result, "approval": approval.to_dict()})
        return approval.status == "approved"

    async def _refusals(self, stage: str, decision: Decision, subject: TrajectoryEvent | None, hold: bool = True) -> tuple[Finding, ...]:
        """What refuses the judged thing: enforced terminate and deny findings, else an
        enforced ask that a person did not approve (``hold=False``: nobody is asked)."""
        if decision.blocks:
            return decision.enforced(decision.terminate) + decision.enforced(decision.deny)
        asks = decision.enforced(decision.ask)
        if asks and hold and not await self._approved(stage, decision, subject):
            return tuple(replace(f, message=f.message + " (not approved)") for f in asks)
        return ()

    async def check_request(self) -> tuple[Finding, ...]:
        """The findings that refuse this call, or () to let it go upstream."""
        if self.view.record is not None and self.view.record.status == "terminated":
            return (TERMINATED,)
        return await self._refusals("request", await self._judge("request", [], None, None), None)

    async def check_action(self, action: TrajectoryEvent, ordinal: int, earlier: list[TrajectoryEvent]) -> ActionEdit:
        """Judge the reply's ``ordinal``-th tool call, with the reply's ``earlier`` events appended."""
        decision = await self._judge("action", earlier, action, ordinal)
        findings = await self._refusals("action", decision, action)
        if findings:
            self.action_labels[ordinal] = {"denied": [{"rule": f.rule, "message": f.message} for f in findings]}
            return ActionEdit("deny", message=refusal_text(action, findings))
        patched = (decision.patch or {}).get("arguments")
        if patched is not None:
            self.action_labels[ordinal] = {"patched": {"original": action.arguments}}
            return ActionEdit("patch", arguments=patched)
        return ALLOW

    async def check_message(self, message: TrajectoryEvent, earlier: list[TrajectoryEvent], delivered: bool) -> TextEdit | None:
        """Judge the reply's final text; a denial, an unapproved ask or a text patch
        replaces it. In a stream the text has already flowed (``delivered``): the
        verdict is recorded, and an ask is not held."""
        decision = await self._judge("action", earlier, message, MESSAGE)
        text: str | None = None
        findings = await self._refusals("action", decision, message, hold=not delivered)
        if findings:
            self.action_labels[MESSAGE] = {"denied": [{"rule": f.rule, "message": f.message} for f in findings]}
            text = refusal_text(None, findings).replace("this request", "this answer")
        elif isinstance((decision.patch or {}).get("text"), str):
            self.action_labels[MESSAGE] = {"patched": {"original": message.text}}
            text = decision.patch["text"]  # type: ignore[index]
        if text is None:
            return None
        if delivered:
            self.action_labels[MESSAGE]["delivered"] = True  # a stream's text cannot be taken back
            return None
        return TextEdit(text)

    def finish(self, reply: tuple[TrajectoryEvent, ...]) -> list[TrajectoryEvent]:
        """The reply's events labelled with what was decided about them; decision
        records learn which recorded event they judged."""
        out: list[TrajectoryEvent] = []
        position: dict[int, int] = {}
        ordinal = 0
        for i, ev in enumerate(reply):
            key = None
            if ev.kind is EventKind.TOOL_CALL:
                key, ordinal = ordinal, ordinal + 1
            elif ev.kind is EventKind.ASSISTANT and i == len(reply) - 1:
                key = MESSAGE
            if key is not None:
                position[key] = len(self.res.append) + i
            extra = self.action_labels.get(key) if key is not None else None
            out.append(replace(ev, labels={**ev.labels, **extra}) if extra else ev)
        self.records = [
            replace(r, action_index=position.get(r.action_index)) if r.stage == "action" else r for r in self.records
        ]
        return out

    def decision_events(self) -> list[TrajectoryEvent]:
        """One ``decision`` event per decision that did more than allow."""
        out = []
        for rec in self.records:
            d = rec.decision
            if d.outcome == "allow" and not rec.error:
                continue
            findings = [*d.terminate, *d.deny, *d.ask, *d.warn]
            out.append(TrajectoryEvent(
                kind=EventKind.DECISION,
                text="; ".join(f"{f.rule}: {f.message}" for f in findings) or d.outcome,
                labels={
                    "decision_id": rec.decision_id, "outcome": d.outcome, "stage": rec.stage,
                    "rules": sorted({f.rule for f in findings}), "revision": rec.revision,
                    "modes": sorted({f.mode for f in findings}), "action_index": rec.action_index,
                },
            ))
        return out
