"""Session ids the client already sends: our header, the headers popular agent
harnesses and gateways send, W3C ``traceparent``, and (when configured) body
fields. Header names match case-insensitively.

Sources (checked in their code or docs, Nov 2026):
- Claude Code: ``x-claude-code-session-id``; a sub-agent adds
  ``x-claude-code-agent-id`` (and ``x-claude-code-parent-agent-id`` when nested);
  older versions put ``..._session_<uuid>`` or ``{"session_id": ...}`` in
  ``metadata.user_id``.
- Codex CLI: ``session-id`` / ``session_id`` (older ``conversation_id``),
  ``thread-id``; sub-agents send ``x-codex-parent-thread-id``.
- OpenCode: ``x-opencode-session`` (its own providers), ``x-session-affinity`` and
  ``x-session-id``; sub-agents send ``x-parent-session-id``.
- Gateways: LiteLLM ``x-litellm-session-id`` / ``x-litellm-trace-id``, Helicone
  ``helicone-session-id``, Portkey ``x-portkey-trace-id``, OpenRouter ``x-session-id``,
  GitHub Copilot CLI ``x-client-session-id``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import orjson

from adapters.model import Call

HARNESS_HEADERS: tuple[str, ...] = (
    "x-claude-code-session-id",
    "x-litellm-session-id",
    "x-litellm-trace-id",
    "helicone-session-id",
    "x-portkey-trace-id",
    "x-opencode-session",
    "x-session-id",
    "x-session-affinity",
    "x-client-session-id",
    "session-id",
    "session_id",
    "thread-id",
    "conversation_id",
)

PARENT_HEADERS: tuple[str, ...] = ("x-proctor-parent-session", "x-parent-session-id", "x-codex-parent-thread-id")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_CLAUDE_USER_ID = re.compile(r"_session_([0-9A-Za-z-]+)$")


MAX_ID = 200  # characters of a session id kept as sent; a longer one is cut and given a digest of the whole


def clean_id(value: str) -> str:
    """A session id as the client meant it: HTTP headers arrive decoded as Latin-1, so
    UTF-8 in them is decoded again; an id longer than MAX_ID characters keeps its
    start and a digest of the whole (the same id always maps to the same session)."""
    try:
        value = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass  # not UTF-8 bytes read as Latin-1: keep it as it came
    if len(value) > MAX_ID:
        value = f"{value[:MAX_ID - 33]}~{hashlib.blake2b(value.encode(), digest_size=16).hexdigest()}"
    return value


@dataclass(frozen=True, slots=True)
class SessionKey:
    session_id: str
    rule: str  # "header", "harness:<name>", "traceparent", "conversation", "body:<field>"
    parent_id: str | None = None


def _claude_agent(headers: Mapping[str, str], session: str) -> SessionKey:
    """Claude Code sub-agents share the session id and add their agent id."""
    agent = headers.get("x-claude-code-agent-id")
    if not agent:
        return SessionKey(session, "harness:x-claude-code-session-id")
    parent_agent = headers.get("x-claude-code-parent-agent-id")
    parent = f"{session}/{parent_agent}" if parent_agent else session
    return SessionKey(f"{session}/{agent}", "harness:x-claude-code-agent-id", parent)


def _claude_metadata(metadata: Any) -> str | None:
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str):
        return None
    if user_id.startswith("{"):
        try:
            doc = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return None
        value = doc.get("session_id") if isinstance(doc, dict) else None
        return value if isinstance(value, str) and value else None
    m = _CLAUDE_USER_ID.search(user_id)
    return m.group(1) if m else None


def _body_field(call: Call, path: str) -> str | None:
    """``user`` or a dotted path such as ``metadata.session_id``."""
    head, _, rest = path.partition(".")
    value: Any = call.metadata.get(head, call.params.get(head))
    for part in rest.split(".") if rest else ():
        value = value.get(part) if isinstance(value, dict) else None
    return str(value) if isinstance(value, (str, int)) and value != "" else None


def parent_header(headers: Mapping[str, str]) -> str | None:
    """The parent session a sub-agent's request names, if any."""
    raw = _raw_parent_header(headers)
    return clean_id(raw) if raw else None


def _raw_parent_header(headers: Mapping[str, str]) -> str | None:
    return next((headers[h].strip() for h in PARENT_HEADERS if headers.get(h, "").strip()), None)


def explicit_key(
    headers: Mapping[str, str],
    call: Call | None,
    *,
    session_header: str,
    harness_headers: bool = True,
    traceparent: bool = True,
    body_fields: Sequence[str] = (),
) -> SessionKey | None:
    """The first explicit session id the request carries, or None."""
    key = _explicit_key(headers, call, session_header, harness_headers, traceparent, body_fields)
    if key is None:
        return None
    return SessionKey(clean_id(key.session_id), key.rule, clean_id(key.parent_id) if key.parent_id else None)


def _explicit_key(headers: Mapping[str, str], call: Call | None, session_header: str, harness_headers: bool,
                  traceparent: bool, body_fields: Sequence[str]) -> SessionKey | None:
    parent = _raw_parent_header(headers)
    value = headers.get(session_header, "").strip()
    if value:
        return SessionKey(value, "header", parent)
    if harness_headers:
        for name in HARNESS_HEADERS:
            value = headers.get(name, "").strip()
            if value:
                if name == "x-claude-code-session-id":
                    return _claude_agent(headers, value)
                return SessionKey(value, f"harness:{name}", parent)
        if call is not None and (claude := _claude_metadata(call.metadata.get("metadata"))):
            return SessionKey(claude, "harness:metadata.user_id", parent)
    if call is not None and call.conversation:
        return SessionKey(call.conversation, "conversation", parent)
    if call is not None:
        for field in body_fields:
            if value := _body_field(call, field):
                return SessionKey(value, f"body:{field}", parent)
    if traceparent:
        m = _TRACEPARENT.match(headers.get("traceparent", "").strip().lower())
        if m and m.group(1) != "0" * 32:
            return SessionKey(m.group(1), "traceparent", parent)
    return None
