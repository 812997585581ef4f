"""Which session a call belongs to, and which of its history events are new.

Rules, first match wins; each call records the one that applied (``resolved_by``):
1. an explicit id: our header, a harness or gateway header, ``conversation``,
   configured body fields (:mod:`proxy.session_keys`);
2. ``previous_response_id``: a Responses call continuing a response we returned;
3. ``history``: the history extends an earlier call's history plus the reply we
   returned (the history tree, :mod:`proxy.history`);
4. ``compaction``: the history was rewritten (truncated, summarised), but its last
   model turn is one Proctor returned: the call continues that reply's session;
5. ``traceparent``: the W3C trace id, when nothing above applies;
6. ``retry``: the official SDKs' own retry (``x-stainless-retry-count`` > 0) of a
   request Proctor already recorded joins that request's session;
7. ``new``: a new session, linked as a sub-agent of the session whose recent tool
   call carried this session's first task text.

Whatever a session's calls drop from their context, its trajectory keeps: events
are only ever appended. Model turns a client sends that Proctor never returned in
that session are appended with the label ``unverified``; tool results for tool
calls the history does not hold get ``orphan``; turns that a rewritten history
inserted before the last known reply get ``rewritten``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from adapters.model import Call, EventKind, TrajectoryEvent
from proxy import history
from proxy.config import ProxyConfig
from proxy.ids import random_hex
from proxy.session_keys import SessionKey, explicit_key, parent_header
from proxy.store.base import SessionStore

_MODEL_KINDS = (EventKind.ASSISTANT, EventKind.TOOL_CALL)
_MIN_TASK_CHARS = 16  # shorter tool arguments ("ls", "yes") are too common to link sub-agents by


@dataclass(frozen=True, slots=True)
class Resolution:
    session_id: str
    resolved_by: str
    append: tuple[TrajectoryEvent, ...]  # history events the session does not hold yet, labelled
    nodes: tuple[tuple[str, str | None, int], ...]  # (node, parent, index into append or -1)
    tail: str  # the node at the end of the request's history
    parent_session_id: str | None = None


def new_session_id() -> str:
    return "ses_" + random_hex(20)


def task_hash(text: str) -> str:
    """Whitespace-insensitive hash of a task text (sub-agent linking)."""
    return hashlib.blake2b(" ".join(text.split()).encode(), digest_size=16).hexdigest()


def spawn_hashes(events: Sequence[TrajectoryEvent]) -> list[str]:
    """Hashes of the string arguments of tool calls that could be a sub-agent's task."""
    out = []
    for ev in events:
        if ev.kind is EventKind.TOOL_CALL:
            values = ev.arguments.values() if isinstance(ev.arguments, dict) else [ev.arguments]
            out.extend(task_hash(v) for v in values if isinstance(v, str) and len(v.strip()) >= _MIN_TASK_CHARS)
    return out


class _CallIds:
    """Whether a history holds a tool call with a given id. A result's call is
    usually a few events before it, so those are looked at first; only when they
    miss are the ids of the whole history collected, once per call, so neither a
    long history nor many orphaned results cost more than one pass."""

    NEAR = 64

    def __init__(self, events: Sequence[TrajectoryEvent]) -> None:
        self.events = events
        self.all: set[str] | None = None

    def has(self, at: int, call_id: str) -> bool:
        for i in range(at - 1, max(at - 1 - self.NEAR, -1), -1):
            ev = self.events[i]
            if ev.tool_call_id == call_id and ev.kind is EventKind.TOOL_CALL:
                return True
        if self.all is None:
            self.all = {ev.tool_call_id for ev in self.events if ev.kind is EventKind.TOOL_CALL and ev.tool_call_id}
        return call_id in self.all


def _plan(
    session_id: str, rule: str, call: Call, base: str, start: int, nodes: Sequence[str], *,
    known: set[str] = frozenset(), anchor: int = -1, parent: str | None = None,
) -> Resolution:
    """Append history[start:] (skipping events before ``anchor`` the session holds),
    labelling what the session's record contradicts."""
    events = call.history
    append: list[TrajectoryEvent] = []
    node_rows: list[tuple[str, str | None, int]] = []
    called = _CallIds(events)
    prev = base
    for i in range(start, len(events)):
        ev, node = events[i], nodes[i - start]
        idx = -1
        if not (i < anchor and ev.hash in known):
            labels = dict(ev.labels)
            if i < anchor:
                labels["rewritten"] = True
            elif ev.kind in _MODEL_KINDS:
                labels["unverified"] = "this model turn was not returned by Proctor in this session"
            if ev.kind is EventKind.TOOL_RESULT and ev.tool_call_id and not called.has(i, ev.tool_call_id):
                labels["orphan"] = "no tool call with this id in the history"
            append.append(replace(ev, labels=labels) if labels != ev.labels else ev)
            idx = len(append) - 1
        node_rows.append((node, prev, idx))
        prev = node
    return Resolution(session_id, rule, tuple(append), tuple(node_rows), prev, parent)


class SessionResolver:
    def __init__(self, store: SessionStore, config: ProxyConfig) -> None:
        self.store = store
        self.config = config

    def _key(self, headers: Mapping[str, str], call: Call | None) -> SessionKey | None:
        c = self.config
        return explicit_key(
            headers, call, session_header=c.session_header, harness_headers=c.session_harness_headers,
            traceparent=c.session_traceparent, body_fields=c.session_body_fields,
        )

    async def resolve(self, headers: Mapping[str, str], call: Call | None) -> Resolution:
        res = await self._resolve(headers, call)
        return await self._clear_known_orphans(res)

    async def _clear_known_orphans(self, res: Resolution) -> Resolution:
        """A tool result whose call is not in the request may answer a call the
        session made earlier (Responses with previous_response_id, truncated
        histories): it is an orphan only if the session never made that call.
        Known ones also learn the tool's name from that call."""
        ids = [ev.tool_call_id for ev in res.append if "orphan" in ev.labels and ev.tool_call_id]
        if not ids:
            return res
        known = await self.store.known_tool_calls(res.session_id, ids)
        if not known:
            return res
        append = tuple(
            replace(ev, tool_name=ev.tool_name or known[ev.tool_call_id],
                    labels={k: v for k, v in ev.labels.items() if k != "orphan"})
            if "orphan" in ev.labels and ev.tool_call_id in known else ev
            for ev in res.append
        )
        return replace(res, append=append)

    async def _resolve(self, headers: Mapping[str, str], call: Call | None) -> Resolution:
        key = self._key(headers, call)
        if call is None:  # a pass-through or an unreadable request: only explicit ids can tell
            sid, rule = (key.session_id, key.rule) if key else (new_session_id(), "new")
            return Resolution(sid, rule, (), (), history.ROOT, key.parent_id if key else None)
        weak = key is not None and key.rule == "traceparent"
        if key is not None and weak and await self.store.get_session(key.session_id) is None:
            weak_key, key = key, None  # an unseen trace: let history speak first
        else:
            weak_key = None

        if call.previous_response_id:
            known = await self.store.session_for_response(call.previous_response_id)
            if known is not None:
                sid, node = known
                nodes = history.chain(call.history, start=node)
                target = key.session_id if key is not None else sid
                seen, anchor = await self._instructions_seen(target, call)
                if key is not None:
                    return _plan(key.session_id, key.rule, call, node, 0, nodes, known=seen, anchor=anchor,
                                 parent=key.parent_id)
                return _plan(sid, "previous_response_id", call, node, 0, nodes, known=seen, anchor=anchor)

        full = history.of_call(call)
        if key is not None:
            return await self._within(key, call, full)
        match = await self.store.find_continuation(full, _tail_tool_call_ids(call))
        if match.session_id is not None:
            return _plan(match.session_id, "history", call, full[match.length - 1], match.length, full[match.length:])
        compacted = await self._after_compaction(call, full)
        if compacted is not None:
            return compacted
        if weak_key is not None:
            return _plan(weak_key.session_id, "traceparent", call, history.ROOT, 0, full, parent=weak_key.parent_id)
        if full and _sdk_retry(headers):
            # The OpenAI and Anthropic SDKs mark their own retries; an identical earlier
            # request (usually one that failed) is then this call's first attempt.
            earlier = await self.store.session_with_request(full[-1])
            if earlier is not None:
                return _plan(earlier, "retry", call, full[-1], len(full), [])
        parent = await self._named_parent(headers) or await self._spawner(call)
        return _plan(new_session_id(), "new", call, history.ROOT, 0, full, parent=parent)

    async def _instructions_seen(self, session_id: str, call: Call) -> tuple[set[str], int]:
        """A call continuing a response re-sends its ``instructions`` (the API does not
        carry them over): when they are the session's latest system events, they are
        not recorded again with every call. (their hashes, how many leading events)"""
        lead = 0
        while lead < len(call.history) and call.history[lead].kind is EventKind.SYSTEM:
            lead += 1
        if not lead:
            return set(), 0
        sent = [ev.hash for ev in call.history[:lead]]
        if await self.store.latest_system_hashes(session_id, lead) != sent:
            return set(), 0  # new, or changed (back to earlier ones, too): recorded
        return set(sent), lead

    async def _named_parent(self, headers: Mapping[str, str]) -> str | None:
        """The parent a sub-agent's header names, if Proctor holds that session: a
        name it never saw would make a dangling root, outside any tree's budgets."""
        parent = parent_header(headers)
        return parent if parent is not None and await self.store.get_session(parent) is not None else None

    async def _within(self, key: SessionKey, call: Call, full: Sequence[str]) -> Resolution:
        """An explicitly named session: append what it does not hold yet."""
        match = await self.store.match_history(full, key.session_id)
        if match.length == len(full) or match.length > 0 and not _rewritten_after(call, match.length):
            base = full[match.length - 1] if match.length else history.ROOT
            return _plan(key.session_id, key.rule, call, base, match.length, full[match.length:], parent=key.parent_id)
        anchor = await self._anchor(call, key.session_id)
        # only the unmatched events before the anchor can be ones the session holds elsewhere
        unmatched = call.history[match.length: max(anchor, 0)]
        known = await self.store.known_hashes(key.session_id, [ev.hash for ev in unmatched])
        base = full[match.length - 1] if match.length else history.ROOT
        return _plan(
            key.session_id, key.rule, call, base, match.length, full[match.length:],
            known=known, anchor=anchor, parent=key.parent_id,
        )

    async def _anchor(self, call: Call, session_id: str | None) -> int:
        """Index just after the last model turn in the history that Proctor returned
        (in ``session_id``, or anywhere), or -1."""
        last = _last_model_turn(call)
        if last < 0:
            return -1
        ev = call.history[last]
        found = await self.store.reply_sessions(ev.hash, ev.tool_call_id, session_id=session_id)
        if session_id is not None:
            return last + 1 if found else -1
        return last + 1 if len(found) == 1 else -1

    async def _after_compaction(self, call: Call, full: Sequence[str]) -> Resolution | None:
        last = _last_model_turn(call)
        if last < 0:
            return None
        ev = call.history[last]
        found = await self.store.reply_sessions(ev.hash, ev.tool_call_id)
        if len(found) != 1:  # unknown, or a reply several sessions got: too ambiguous to anchor
            return None
        sid = found[0]
        known = await self.store.known_hashes(sid, [ev.hash for ev in call.history[: last + 1]])
        return _plan(sid, "compaction", call, history.ROOT, 0, full, known=known, anchor=last + 1)

    async def _spawner(self, call: Call) -> str | None:
        first_task = next((ev.text for ev in call.history if ev.kind is EventKind.USER and ev.text), None)
        if not first_task or len(first_task.strip()) < _MIN_TASK_CHARS:
            return None
        since = time.time() - self.config.subagent_window_s
        return await self.store.find_spawner(task_hash(first_task), since)


def _sdk_retry(headers: Mapping[str, str]) -> bool:
    """``x-stainless-retry-count`` > 0: the official SDKs' own retry of a request."""
    value = headers.get("x-stainless-retry-count", "0").strip()
    return value.isdigit() and int(value) > 0


def _tail_tool_call_ids(call: Call, limit: int = 8) -> list[str]:
    """Tool-call ids of the latest tool calls in the history (ties between identical histories)."""
    ids: list[str] = []
    for ev in reversed(call.history):
        if ev.kind is EventKind.TOOL_CALL and ev.tool_call_id:
            ids.append(ev.tool_call_id)
            if len(ids) == limit:
                break
    return ids


def _last_model_turn(call: Call) -> int:
    for i in range(len(call.history) - 1, -1, -1):
        if call.history[i].kind in _MODEL_KINDS:
            return i
    return -1


def _rewritten_after(call: Call, matched: int) -> bool:
    """True when the unmatched part of a history holds model turns: a sign that the
    client rewrote earlier context rather than just appending to it."""
    return any(ev.kind in _MODEL_KINDS for ev in call.history[matched:])
