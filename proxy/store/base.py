"""The storage contract. Every store (SQLite, PostgreSQL) passes the same
contract tests in ``tests/contract``.

Guarantees every implementation gives:
- ``record_call`` is atomic: the call, its events and its history nodes are
  stored together or not at all, and the events of one session get gapless,
  strictly increasing ``seq`` numbers even when several processes record calls of
  the same session at once.
- A ``record_call`` that returned is durable: a reader in another process sees it.
- Nothing here ever receives an API key: callers pass only what may be stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from adapters.model import TrajectoryEvent

SCHEMA_VERSION = 7


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    started: float
    last_call: float
    calls: int
    events: int
    status: str  # "active", "terminated"
    parent_id: str | None = None
    root_id: str | None = None
    depth: int = 0
    labels: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    # The whole sub-agent tree (kept on the root): {"sessions": n, "counters": {...}}
    tree: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One request through the proxy, whatever its outcome."""

    id: str
    session_id: str
    api: str  # chat, responses, messages, passthrough
    path: str
    model: str | None
    stream: bool
    started: float
    latency_ms: float
    status: int  # HTTP status returned to the client
    resolved_by: str  # which session rule attached this call, e.g. "header", "new"
    error: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryMatch:
    """The longest prefix of a call's history already in the history tree."""

    length: int  # how many leading events of the history matched (0 = none)
    node: str | None  # the node at the end of that prefix
    session_id: str | None  # the session that owns that node


@dataclass(frozen=True, slots=True)
class NewCall:
    """Everything one call adds, recorded in one transaction."""

    call: CallRecord
    events: Sequence[TrajectoryEvent]  # unplaced; the store assigns seq
    nodes: Sequence[tuple[str, str | None, int]]  # (node, parent node, index into events or -1)
    response_id: str | None = None
    response_node: str | None = None  # the node the response ended on (for previous_response_id)
    request_node: str | None = None  # the node the request ended on (for retries)
    parent_session_id: str | None = None  # set when the call opens a child session
    reply_hashes: Sequence[str] = ()  # hashes of the reply's events (anchors after compaction)
    spawn_hashes: Sequence[str] = ()  # hashes of tool-call string arguments (sub-agent tasks)
    labels: dict[str, Any] = field(default_factory=dict)  # merged into the session's labels
    terminate: bool = False  # the session ends; later calls are refused
    decisions: Sequence[Any] = ()  # proxy.policy.point.DecisionRecord, in the order they were made
    # (tool call id, the output item type that answers it, why) of each call denied out
    # of a response the upstream keeps: a call continuing it (previous_response_id)
    # must answer them, or the upstream refuses it
    denied_calls: Sequence[tuple[str, str, str]] = ()


class SessionStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def record_call(self, new: NewCall) -> list[TrajectoryEvent]:
        """Store the call; returns its events as placed (with session, seq, time)."""

    async def match_history(self, chain: Sequence[str], session_id: str) -> HistoryMatch:
        """Find the longest prefix of ``chain`` (node ids of a history, in order) that
        is stored among ``session_id``'s nodes. Store work does not grow with the
        length of the history."""

    async def find_continuation(self, chain: Sequence[str], tool_call_ids: Sequence[str] = ()) -> HistoryMatch:
        """The longest prefix of ``chain`` that ends on a node where a reply Proctor
        returned ended, in any session. When several sessions share it, the one that
        issued one of ``tool_call_ids`` wins, else the oldest still waiting there,
        else the latest."""

    async def reply_sessions(
        self, hash: str, tool_call_id: str | None = None, limit: int = 2, session_id: str | None = None
    ) -> list[str]:
        """Sessions (at most ``limit``) that Proctor returned this reply event to: by
        the tool-call id it issued when there is one, else by content hash, latest
        first. With ``session_id``: that session if it got it, else none."""

    async def known_hashes(self, session_id: str, hashes: Sequence[str]) -> set[str]:
        """Which of ``hashes`` the session's trajectory already holds (events a
        request-stage refusal withheld, labelled ``withheld``, are not held)."""

    async def known_tool_calls(self, session_id: str, ids: Sequence[str]) -> dict[str, str | None]:
        """Which of these tool-call ids the session's trajectory holds as tool calls,
        with the tool each called."""

    async def session_with_request(self, node: str) -> str | None:
        """The session in which a call's request most recently ended on this history
        node: where an identical earlier request went (retries)."""

    async def find_spawner(self, text_hash: str, since: float) -> str | None:
        """The session that most recently (not before ``since``) made a tool call with
        a string argument of this hash: the likely parent of a new sub-agent."""

    async def get_children(self, session_id: str) -> list[SessionRecord]: ...

    async def session_for_response(self, response_id: str) -> tuple[str, str] | None:
        """(session id, node) of a response Proctor returned, for previous_response_id."""

    async def latest_system_hashes(self, session_id: str, limit: int) -> list[str]:
        """Hashes of the session's last ``limit`` system events, oldest first (events a
        request-stage refusal withheld are not held)."""

    async def denied_calls(self, response_id: str) -> list[tuple[str, str, str]]:
        """(tool call id, output item type, why) of the calls Proctor denied out of that response."""

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def session_view(self, session_id: str, limit: int) -> tuple[SessionRecord | None, list[TrajectoryEvent]]:
        """The session and its last ``limit`` events in one read (what a policy needs)."""

    async def recent_events(self, session_id: str, limit: int) -> list[TrajectoryEvent]:
        """The session's last ``limit`` events, oldest first (the policy window)."""

    async def get_decisions(self, session_id: str) -> list[dict[str, Any]]:
        """The session's decision-log records, oldest first."""

    async def list_sessions(self, *, limit: int = 100, offset: int = 0) -> list[SessionRecord]: ...

    async def get_events(self, session_id: str) -> list[TrajectoryEvent]: ...

    async def get_calls(self, session_id: str) -> list[CallRecord]: ...
