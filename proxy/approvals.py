"""Human approval for ``ask`` decisions: the call is held until a person approves
or denies it (``POST /api/approvals/{id}``, or the audit UI), or the timeout
denies it.

Pending approvals live in the process that holds the call; a deployment with
several replicas must send approvals to the replica that lists them (the held
call's connection is there anyway).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Approval:
    id: str
    session_id: str
    call_id: str
    stage: str
    action: dict[str, Any] | None
    findings: list[dict[str, str]]
    created: float
    status: str = "pending"  # pending, approved, denied, expired
    decided: float | None = None
    by: str | None = None
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "session_id": self.session_id, "call_id": self.call_id, "stage": self.stage,
            "action": self.action, "findings": self.findings, "created": self.created, "status": self.status,
            "decided": self.decided, "by": self.by,
        }


class Approvals:
    def __init__(self, timeout: float, keep: int = 1000) -> None:
        self.timeout = timeout
        self._items: dict[str, Approval] = {}
        self._keep = keep

    async def wait(
        self, *, session_id: str, call_id: str, stage: str, action: dict[str, Any] | None, findings: list[dict[str, str]]
    ) -> Approval:
        """Hold until decided or timed out; returns the approval with its final status."""
        approval = Approval("apr_" + uuid.uuid4().hex[:16], session_id, call_id, stage, action, findings, time.time())
        self._items[approval.id] = approval
        self._trim()
        try:
            await asyncio.wait_for(approval._done.wait(), self.timeout)
        except asyncio.TimeoutError:
            approval.status, approval.decided = "expired", time.time()
        return approval

    def decide(self, approval_id: str, approve: bool, by: str | None = None) -> Approval | None:
        """Settle a pending approval; None when unknown, unchanged when already settled."""
        approval = self._items.get(approval_id)
        if approval is None or approval.status != "pending":
            return approval
        approval.status = "approved" if approve else "denied"
        approval.decided, approval.by = time.time(), by
        approval._done.set()
        return approval

    def get(self, approval_id: str) -> Approval | None:
        return self._items.get(approval_id)

    def list(self, status: str | None = "pending") -> list[Approval]:
        items = [a for a in self._items.values() if status is None or a.status == status]
        return sorted(items, key=lambda a: a.created)

    def _trim(self) -> None:
        settled = [a for a in self._items.values() if a.status != "pending"]
        for a in sorted(settled, key=lambda a: a.created)[: max(0, len(self._items) - self._keep)]:
            del self._items[a.id]
