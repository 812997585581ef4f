"""Credentials never reach the store: the keys of a call, found in its headers and
in Proctor's settings, are cut out of what it records (error bodies, events,
decision inputs) wherever an upstream, a model or an agent echoed them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from adapters.model import TrajectoryEvent
from proxy.config import ProxyConfig


def call_secrets(headers: Mapping[str, str], config: ProxyConfig) -> list[str]:
    """The credentials of this call (8 characters or more), which nothing may record."""
    found = [config.upstream_api_key, config.anthropic_api_key, headers.get("x-api-key"), headers.get("api-key")]
    auth = headers.get("Authorization", "")
    found.append(auth.split(None, 1)[1] if " " in auth.strip() else auth)
    return [s.strip() for s in found if s and len(s.strip()) >= 8]


def redact_credentials(text: str, headers: Mapping[str, str], config: ProxyConfig) -> str:
    """``text`` without the credentials of this call: some upstreams echo a rejected
    key in their error body, which Proctor records."""
    return redact_text(text, call_secrets(headers, config))


def redact_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def redact_json(value: Any, secrets: list[str]) -> Any:
    """``value`` (JSON-like) with the credentials cut out of every string in it; ``value``
    itself when it holds none (one serialisation either way)."""
    dumped = orjson.dumps(value, default=str).decode()
    cut = redact_text(dumped, [orjson.dumps(s).decode()[1:-1] for s in secrets])  # as JSON writes them
    return value if cut == dumped else orjson.loads(cut)


def redact_events(events: list[TrajectoryEvent], secrets: list[str]) -> list[TrajectoryEvent] | None:
    """``events`` with the call's credentials cut out of texts, arguments and labels (an
    upstream or a model may echo a key in a reply, which the agent then sends back, and a
    denial's message may quote it); None when none holds one. A redacted event keeps the
    hash of what was sent, which later calls' histories are matched by."""
    changed = False
    out = []
    for ev in events:
        text, arguments, labels = ev.text, ev.arguments, ev.labels
        if text is not None and _holds(text, secrets):
            text = redact_text(text, secrets)
        if isinstance(arguments, str):
            arguments = redact_text(arguments, secrets) if _holds(arguments, secrets) else arguments
        elif arguments is not None:
            arguments = redact_json(arguments, secrets)
        if labels:
            labels = redact_json(labels, secrets)
        if text is ev.text and arguments is ev.arguments and labels is ev.labels:
            out.append(ev)
            continue
        changed = True
        redacted = dataclasses.replace(ev, text=text, arguments=arguments, labels={**labels, "redacted": True})
        object.__setattr__(redacted, "_hash", ev.hash)
        out.append(redacted)
    return out if changed else None


def _holds(text: str, secrets: list[str]) -> bool:
    return any(s in text for s in secrets)


def redact_decision(record: Any, secrets: list[str]) -> Any:
    """A decision record (proxy.policy.point.DecisionRecord) with the credentials cut
    out of its input, its result and the decision's labels, patch and messages."""
    d = record.decision
    findings = {
        name: tuple(dataclasses.replace(f, message=redact_text(f.message, secrets)) for f in getattr(d, name))
        for name in ("deny", "warn", "ask", "terminate")
    }
    decision = dataclasses.replace(d, labels=redact_json(d.labels, secrets), patch=redact_json(d.patch, secrets), **findings)
    return dataclasses.replace(record, input=redact_json(record.input, secrets), result=redact_json(record.result, secrets),
                               decision=decision)
