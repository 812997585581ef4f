"""The event model every adapter decodes into, and the proxy records.

A trajectory is an ordered list of :class:`TrajectoryEvent`. Adapters produce
events without session, call or sequence number (those belong to the proxy);
the proxy stamps them with :meth:`TrajectoryEvent.placed`.

Every event has a *canonical form*: what stays the same when a client re-sends
the same turn. Tool-call ids (clients regenerate them), key order and
whitespace in argument JSON, content as a string vs a list of text parts, and
the ``system`` vs ``developer`` role do not matter. Its hash is a blake2b
digest of that form, so two calls that carry the same history have the same
hashes regardless of which SDK sent them.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson


class EventKind(str, enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    DECISION = "decision"
    ERROR = "error"


def _canonical_arguments(arguments: Any) -> Any:
    """Arguments arrive as a JSON string on the wire; compare them parsed."""
    if isinstance(arguments, str):
        try:
            return orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments
    return arguments


@dataclass(frozen=True, slots=True)
class TrajectoryEvent:
    """One thing that happened in a session: a turn, a tool call, a result, a decision."""

    kind: EventKind
    text: str | None = None
    tool_name: str | None = None
    arguments: Any = None  # parsed JSON for tool calls; the raw string if it was not JSON
    tool_call_id: str | None = None
    role: str | None = None  # the wire role as sent (system, developer, user, ...)
    labels: dict[str, Any] = field(default_factory=dict)
    # Set by the proxy when it records the event:
    session_id: str | None = None
    call_id: str | None = None
    seq: int | None = None
    time: float | None = None
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    def canonical(self) -> bytes:
        """Bytes that are equal exactly when two events mean the same turn."""
        return orjson.dumps(
            [self.kind.value, self.text or "", self.tool_name or "", _canonical_arguments(self.arguments)],
            option=orjson.OPT_SORT_KEYS,
        )

    @property
    def hash(self) -> str:
        """Computed once per event (it is asked for several times on every call)."""
        if self._hash is None:
            object.__setattr__(self, "_hash", hashlib.blake2b(self.canonical(), digest_size=16).hexdigest())
        return self._hash  # type: ignore[return-value]

    def placed(self, *, session_id: str, call_id: str, seq: int, time: float) -> TrajectoryEvent:
        return dataclasses.replace(self, session_id=session_id, call_id=call_id, seq=seq, time=time)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (for the store, the CLI and policy input)."""
        return {
            "kind": self.kind.value,
            "role": self.role,
            "text": self.text,
            "tool_name": self.tool_name,
            "arguments": self.arguments,
            "tool_call_id": self.tool_call_id,
            "labels": self.labels,
            "session_id": self.session_id,
            "call_id": self.call_id,
            "seq": self.seq,
            "time": self.time,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the client offers the model."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """How a request's history list (Chat's and Messages' ``messages``, Responses'
    ``input``) decoded: what a later request that re-sends the same list, byte for
    byte, needs to decode only the elements it adds (adapters/resend.py)."""

    field: str  # the body field holding the list
    head: int  # history events that come before the list's (a system prompt, instructions)
    count: int  # the list's elements
    names: dict[str, str]  # tool names by call id, as decoding the list left them (never mutated)


@dataclass(frozen=True, slots=True)
class Call:
    """A model call as the adapter understood it: what was asked, over which API."""

    api: str  # "chat", "responses" or "messages"
    model: str
    stream: bool
    history: tuple[TrajectoryEvent, ...]  # everything the request carries, in order
    tools: tuple[ToolSpec, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, tool_choice, ...
    previous_response_id: str | None = None  # Responses API
    conversation: str | None = None  # Responses API
    store: bool | None = None  # Responses API `store`
    metadata: dict[str, Any] = field(default_factory=dict)  # body fields usable as session keys
    listed: Listed | None = None  # how the history list decoded (None: the request has none)
    # History-tree node ids of history[:len(nodes)] (proxy/history.py), when the
    # decoder knew them: a re-sent history's are not computed again.
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """What the model answered: its events (assistant text, tool calls) and bookkeeping."""

    events: tuple[TrajectoryEvent, ...]
    usage: Usage = Usage()
    response_id: str | None = None
    model: str | None = None
    finish_reason: str | None = None
