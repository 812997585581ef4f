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
    for secret in call_secrets(headers, config):
        text = text.replace(secret, "[redacted]")
    return text


def redact_events(events: list[TrajectoryEvent], secrets: list[str]) -> list[TrajectoryEvent] | None:
    """``events`` with the call's credentials cut out of texts and arguments (an upstream
    or a model may echo a key in a reply, which the agent then sends back); None when
    none holds one. A redacted event keeps the hash of what was sent, which later
    calls' histories are matched by."""
    changed = False
    out = []
    for ev in events:
        text, arguments = ev.text, ev.arguments
        for secret in secrets:
            if text is not None and secret in text:
                text = text.replace(secret, "[redacted]")
            if arguments is not None and not isinstance(arguments, str) and secret in (dumped := orjson.dumps(arguments).decode()):
                arguments = orjson.loads(dumped.replace(orjson.dumps(secret).decode()[1:-1], "[redacted]"))
            elif isinstance(arguments, str) and secret in arguments:
                arguments = arguments.replace(secret, "[redacted]")
        if text is ev.text and arguments is ev.arguments:
            out.append(ev)
            continue
        changed = True
        redacted = dataclasses.replace(ev, text=text, arguments=arguments, labels={**ev.labels, "redacted": True})
        object.__setattr__(redacted, "_hash", ev.hash)
        out.append(redacted)
    return out if changed else None


def redact_json(value: Any, secrets: list[str]) -> Any:
    """``value`` (JSON-like) with the credentials cut out of every string in it."""
    dumped = orjson.dumps(value, default=str).decode()
    for secret in secrets:
        dumped = dumped.replace(orjson.dumps(secret).decode()[1:-1], "[redacted]")
    return orjson.loads(dumped)


def redact_decision(record: Any, secrets: list[str]) -> Any:
    """A decision record (proxy.policy.point.DecisionRecord) with the credentials cut
    out of its input, its result and the decision's labels, patch and messages."""
    d = record.decision
    findings = {
        name: tuple(dataclasses.replace(f, message=redact_json(f.message, secrets)) for f in getattr(d, name))
        for name in ("deny", "warn", "ask", "terminate")
    }
    decision = dataclasses.replace(d, labels=redact_json(d.labels, secrets), patch=redact_json(d.patch, secrets), **findings)
    return dataclasses.replace(record, input=redact_json(record.input, secrets), result=redact_json(record.result, secrets),
                               decision=decision)
