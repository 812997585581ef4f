"""The decision document a policy returns, validated once into typed data.

Shape (``data.proctor.decision`` by default)::

    {"allow": bool,                       # optional; false with no deny entry denies as "policy.default"
     "deny":  [{"rule", "message", "mode"?}],
     "warn":  [{"rule", "message"}],
     "ask":   [{"rule", "message"}],      # needs a person's approval
     "patch": {"arguments": {...}} | {"text": "..."},
     "labels": {name: value},             # merged into the session's labels
     "terminate": [{"rule", "message"}]}  # ends the session; later calls are denied

Anything else is an engine error (the caller fails closed), reported with the
offending value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["enforce", "shadow"]


class DecisionShapeError(ValueError):
    """The policy returned a decision document of the wrong shape."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's say: which rule, what it wants the agent and auditor to read."""

    rule: str
    message: str
    mode: Mode = "enforce"


@dataclass(frozen=True, slots=True)
class Decision:
    deny: tuple[Finding, ...] = ()
    warn: tuple[Finding, ...] = ()
    ask: tuple[Finding, ...] = ()
    terminate: tuple[Finding, ...] = ()
    patch: dict[str, Any] | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    def enforced(self, findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
        return tuple(f for f in findings if f.mode == "enforce")

    @property
    def blocks(self) -> bool:
        return bool(self.enforced(self.deny) or self.enforced(self.terminate))

    @property
    def outcome(self) -> str:
        """One word for audit lists: deny, terminate, ask, patch, warn, allow."""
        if self.enforced(self.terminate):
            return "terminate"
        if self.enforced(self.deny):
            return "deny"
        if self.enforced(self.ask):
            return "ask"
        if self.patch:
            return "patch"
        if self.warn or self.deny or self.ask or self.terminate:
            return "warn"
        return "allow"

    def to_dict(self) -> dict[str, Any]:
        def fs(items: tuple[Finding, ...]) -> list[dict[str, str]]:
            return [{"rule": f.rule, "message": f.message, "mode": f.mode} for f in items]

        return {
            "outcome": self.outcome, "deny": fs(self.deny), "warn": fs(self.warn), "ask": fs(self.ask),
            "terminate": fs(self.terminate), "patch": self.patch, "labels": self.labels,
        }


ALLOW = Decision()


def _findings(doc: dict[str, Any], key: str, shadow_rules: frozenset[str], global_mode: Mode) -> tuple[Finding, ...]:
    value = doc.get(key, ())
    if isinstance(value, bool):  # "terminate": true
        return (Finding(f"policy.{key}", f"the policy set {key}", global_mode),) if value else ()
    if not isinstance(value, (list, tuple, set)):
        raise DecisionShapeError(f"decision.{key} must be a list of {{rule, message}} objects, got {value!r:.200}")
    out = []
    for item in value:
        if isinstance(item, str):
            item = {"rule": item, "message": item}
        if not isinstance(item, dict) or not isinstance(item.get("rule"), str):
            raise DecisionShapeError(f"each decision.{key} entry needs a string 'rule', got {item!r:.200}")
        message = item.get("message", item["rule"])
        mode = item.get("mode")
        if mode is None:
            mode = "shadow" if item["rule"] in shadow_rules else global_mode
        if mode not in ("enforce", "shadow"):
            raise DecisionShapeError(f"decision.{key} entry mode must be 'enforce' or 'shadow', got {mode!r}")
        out.append(Finding(item["rule"], str(message), mode))
    return tuple(sorted(out, key=lambda f: (f.rule, f.message)))


def parse_decision(doc: Any, *, shadow_rules: frozenset[str] = frozenset(), mode: Mode = "enforce") -> Decision:
    """Validate an engine result. ``None`` (undefined) allows: a policy with nothing to say."""
    if doc is None:
        return ALLOW
    if not isinstance(doc, dict):
        raise DecisionShapeError(f"the decision must be an object, got {doc!r:.200}")
    deny = _findings(doc, "deny", shadow_rules, mode)
    if doc.get("allow") is False and not deny:
        deny = (Finding("policy.default", "the policy did not allow this", mode),)
    elif "allow" in doc and not isinstance(doc["allow"], bool):
        raise DecisionShapeError(f"decision.allow must be true or false, got {doc['allow']!r:.200}")
    patch = doc.get("patch")
    if patch is not None and not (isinstance(patch, dict) and set(patch) <= {"arguments", "text"}):
        raise DecisionShapeError(f"decision.patch must be {{'arguments': ...}} or {{'text': ...}}, got {patch!r:.200}")
    labels = doc.get("labels", {})
    if not isinstance(labels, dict):
        raise DecisionShapeError(f"decision.labels must be an object, got {labels!r:.200}")
    return Decision(
        deny=deny,
        warn=_findings(doc, "warn", shadow_rules, mode),
        ask=_findings(doc, "ask", shadow_rules, mode),
        terminate=_findings(doc, "terminate", shadow_rules, mode),
        patch=patch or None,
        labels=labels,
    )
