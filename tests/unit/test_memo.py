"""The decode memo: a re-sent history decodes to the same events as a fresh
decode, tool results still take their names from the calls before them, bad
messages are never remembered, and the memo stays within its bounds."""

from __future__ import annotations

import pytest

from adapters import anthropic_messages, openai_chat, openai_responses
from adapters.base import BadRequest
from adapters.memo import MessageMemo
from adapters.model import EventKind, TrajectoryEvent


def chat_body(tool: str) -> dict:
    return {"model": "m", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "look"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": tool, "arguments": '{"q": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "found it"},
    ]}


def responses_body(tool: str) -> dict:
    return {"model": "m", "input": [
        {"role": "user", "content": "look"},
        {"type": "function_call", "call_id": "c1", "name": tool, "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "found it"},
    ]}


def messages_body(tool: str) -> dict:
    return {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": tool, "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "found it"}]},
    ]}


CASES = [
    (openai_chat, openai_chat.ChatAdapter(), chat_body),
    (openai_responses, openai_responses.ResponsesAdapter(), responses_body),
    (anthropic_messages, anthropic_messages.MessagesAdapter(), messages_body),
]


def fresh(module, monkeypatch: pytest.MonkeyPatch) -> MessageMemo:
    memo = MessageMemo()
    monkeypatch.setattr(module, "_MEMO", memo)
    return memo


def as_tuples(events: tuple[TrajectoryEvent, ...]) -> list[tuple]:
    return [(e.kind, e.text, e.tool_name, e.arguments, e.tool_call_id, e.role, e.labels, e.hash) for e in events]


@pytest.mark.parametrize("module,adapter,body", CASES, ids=["chat", "responses", "messages"])
def test_a_resent_history_decodes_to_the_same_events(module, adapter, body, monkeypatch: pytest.MonkeyPatch) -> None:
    memo = fresh(module, monkeypatch)
    first = adapter.decode_request(body("search"))
    assert memo.hits == 0 and len(memo) > 0
    again = adapter.decode_request(body("search"))
    assert memo.hits == len(memo)  # every message came from the memo
    assert as_tuples(again.history) == as_tuples(first.history)
    result = again.history[-1]
    assert result.kind is EventKind.TOOL_RESULT and result.tool_name == "search"


@pytest.mark.parametrize("module,adapter,body", CASES, ids=["chat", "responses", "messages"])
def test_a_remembered_result_takes_the_name_of_the_call_before_it(module, adapter, body, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh(module, monkeypatch)
    adapter.decode_request(body("search"))
    other = adapter.decode_request(body("delete"))  # the same result bytes after another tool's call
    assert other.history[-1].tool_name == "delete"
    assert adapter.decode_request(body("search")).history[-1].tool_name == "search"


def test_a_bad_message_is_never_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    memo = fresh(openai_chat, monkeypatch)
    bad = {"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]}
    for _ in range(2):
        with pytest.raises(BadRequest) as exc:
            openai_chat.ChatAdapter().decode_request(bad)
        assert exc.value.param == "messages[1]" or "messages[1]" in exc.value.message
    assert len(memo) == 1  # only the good user message


def test_the_memo_evicts_the_least_recently_used_within_its_bounds() -> None:
    memo = MessageMemo(max_entries=2, max_bytes=10_000)
    events = (TrajectoryEvent(kind=EventKind.USER, text="a"),)
    keys = [memo.key({"n": i}) for i in range(3)]
    memo.put(keys[0], events)
    memo.put(keys[1], events)
    assert memo.get(keys[0]) is events  # now the most recent
    memo.put(keys[2], events)
    assert memo.get(keys[1]) is None and memo.get(keys[0]) is events and len(memo) == 2
    small = MessageMemo(max_entries=100, max_bytes=1000)
    for i in range(10):
        small.put(small.key({"n": i}), (TrajectoryEvent(kind=EventKind.USER, text="x" * 300),))
    assert len(small) == 1  # each entry is 300 characters plus an event's overhead: only one fits
