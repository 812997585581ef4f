"""The policy input and decision documents as pydantic models: the source of the
JSON Schema in ``policies/input.schema.json`` (``proctor policy schema``). The
hot path builds plain dicts (see :meth:`PolicyPoint.build_input`); a test keeps
the two in agreement."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventDoc(_Doc):
    """One trajectory event."""

    seq: int | None = Field(description="position in the session's trajectory (provisional for this call's events)")
    kind: Literal["system", "user", "assistant", "tool_call", "tool_result", "decision", "error"]
    role: str | None = Field(description="the wire role as sent (system, developer, user, assistant, tool)")
    text: str | None
    tool_name: str | None
    arguments: Any = Field(description="tool-call arguments, parsed JSON")
    tool_call_id: str | None
    labels: dict[str, Any] = Field(description="what Proctor knows about the event: denied, unverified, orphan, rewritten, ...")
    call_id: str | None
    text_length: int | None = Field(
        None, description="present when the text was cut to policy_text_limit characters: the whole text's length"
    )
    arguments_cut: bool | None = Field(
        None, description="present (true) when strings in the arguments were cut to policy_text_limit characters"
    )


class SessionDoc(_Doc):
    id: str
    parent: str | None = Field(description="the session that spawned this one (sub-agents)")
    root: str
    depth: int
    labels: dict[str, Any] = Field(description="state carried between calls, set by decisions' labels")
    counters: dict[str, Any] = Field(description="calls, events, tool_calls {name: n}, tool_calls_total, tokens, decisions")
    tree: dict[str, Any] = Field(
        description="the whole sub-agent tree under this session's root: sessions (how many), counters (summed)"
    )
    started: float
    status: Literal["active", "terminated"]
    events: int = Field(description="events recorded before this call")


class ToolDoc(_Doc):
    name: str
    description: str | None


class ClientDoc(_Doc):
    key_id: str | None = Field(description="a one-way fingerprint of the API key, never the key")
    agent: str | None = Field(description="the X-Proctor-Agent header")
    user_agent: str | None


class CallDoc(_Doc):
    api: Literal["chat", "responses", "messages"] | None
    model: str | None
    tools: list[ToolDoc]
    params: dict[str, Any]
    client: ClientDoc


class PolicyInput(_Doc):
    """``input`` of every evaluation."""

    stage: Literal["request", "action"]
    session: SessionDoc
    trajectory: list[EventDoc] = Field(
        description="the last policy_window events before the reply (stored, then this call's new ones), then the"
        " reply's events judged so far; texts cut to policy_text_limit characters"
    )
    new: list[EventDoc] = Field(
        description="the events this call adds (user turns, tool results): whole texts at the request stage,"
        " cut like the trajectory's at the action stage"
    )
    new_omitted: int = Field(
        0, description="how many of this call's new events `new` leaves out: past policy_new_limit it holds the"
        " first quarter of the limit and the latest ones (a library that must see everything fails closed on > 0)"
    )
    new_omitted_tools: list[str] = Field(
        default_factory=list, description="the tools whose results are among the events `new` leaves out (\"\" for a"
        " result with no tool name): a library fails closed when one of them returns untrusted content"
    )
    action: EventDoc | None = Field(description="the pending tool call or final message (stage action)")
    call: CallDoc


class FindingDoc(_Doc):
    rule: str
    message: str = ""
    mode: Literal["enforce", "shadow"] | None = None


class DecisionDoc(BaseModel):
    """``data.proctor.decision``: what a policy answers."""

    allow: bool | None = None
    deny: list[FindingDoc] = []
    warn: list[FindingDoc] = []
    ask: list[FindingDoc] = []
    terminate: list[FindingDoc] | bool = []
    patch: dict[str, Any] | None = Field(None, description='{"arguments": {...}} or {"text": "..."}')
    labels: dict[str, Any] = {}


def input_schema() -> dict[str, Any]:
    schema = PolicyInput.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Proctor policy input"
    return schema
