"""Which session a call belongs to, and which of its history events are new.

Rules, first match wins (each call records the one that applied):
1. ``header``: the configured session header (default ``X-Proctor-Session``);
2. ``previous_response_id``: a Responses API call continuing a response we returned;
3. ``history``: the history extends an earlier call's history plus the reply we
   returned (the longest such prefix wins; see README "Sessions");
4. ``new``: none of the above, a new session.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Mapping

from adapters.model import Call
from proxy import history
from proxy.store.base import SessionStore


@dataclass(frozen=True, slots=True)
class Resolution:
    session_id: str
    resolved_by: str
    matched: int  # leading history events the session already has
    new_nodes: list[str]  # history-tree node ids of history[matched:], in order
    base_node: str  # the node new_nodes[0] hangs from


def new_session_id() -> str:
    return "ses_" + uuid.uuid4().hex[:20]


def _matched(resolved_by: str, session_id: str, full: list[str], matched: int) -> Resolution:
    base = full[matched - 1] if matched else history.ROOT
    return Resolution(session_id, resolved_by, matched, full[matched:], base)


async def resolve_session(store: SessionStore, headers: Mapping[str, str], header_name: str, call: Call | None) -> Resolution:
    explicit = headers.get(header_name, "").strip() or None
    if call is None:  # a pass-through or an unreadable request: only the header can tell
        return Resolution(explicit or new_session_id(), "header" if explicit else "new", 0, [], history.ROOT)

    if call.previous_response_id:
        known = await store.session_for_response(call.previous_response_id)
        if known is not None:
            session_id, node = known
            nodes = history.chain(call.history, start=node)
            if explicit:
                return Resolution(explicit, "header", 0, nodes, node)
            return Resolution(session_id, "previous_response_id", 0, nodes, node)

    full = history.chain(call.history)
    if explicit:
        match = await store.match_history(full, explicit)
        return _matched("header", explicit, full, match.length)
    match = await store.find_continuation(full)
    if match.session_id is not None:
        return _matched("history", match.session_id, full, match.length)
    return _matched("new", new_session_id(), full, 0)
