"""The decode memo: a re-sent history decodes to the same events as a fresh
decode, tool results still take their names from the calls before them, bad
messages are never remembered, and the memo stays within its bounds."""

from __future__ import annotations

import orjson
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
    assert memo.hits == 0 and len(memo) == 0  # seen once: only the digests are kept
    second = adapter.decode_request(body("search"))
    assert memo.hits == 0 and len(memo) > 0  # seen twice: remembered
    again = adapter.decode_request(body("search"))
    assert memo.hits == len(memo)  # every message came from the memo
    assert as_tuples(again.history) == as_tuples(first.history) == as_tuples(second.history)
    result = again.history[-1]
    assert result.kind is EventKind.TOOL_RESULT and result.tool_name == "search"


@pytest.mark.parametrize("module,adapter,body", CASES, ids=["chat", "responses", "messages"])
def test_a_remembered_result_takes_the_name_of_the_call_before_it(module, adapter, body, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh(module, monkeypatch)
    adapter.decode_request(body("search"))
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
    assert len(memo) == 1  # only the good user message, seen twice


def test_the_memo_evicts_the_least_recently_used_within_its_bounds() -> None:
    memo = MessageMemo(max_entries=2, max_bytes=1_000_000)
    events = (TrajectoryEvent(kind=EventKind.USER, text="a"),)
    keys = [memo.key({"n": i}) for i in range(3)]
    for key, size in keys[:2]:
        memo.put(key, size, events)
        memo.put(key, size, events)  # the second sighting is remembered
    assert memo.get(keys[0][0]) is events  # now the most recent
    memo.put(*keys[2], events)
    memo.put(*keys[2], events)
    assert memo.get(keys[1][0]) is None and memo.get(keys[0][0]) is events and len(memo) == 2


def test_the_size_bound_counts_arguments_and_skips_what_is_too_large() -> None:
    memo = MessageMemo(max_entries=1000, max_bytes=160_000)  # entries up to 10,000 bytes are kept
    call = (TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="write", arguments={"content": "x"}, tool_call_id="c"),)
    for i in range(40):  # each message carries ~5 KB of arguments and no text
        for _ in range(2):
            memo.put(*memo.key({"n": i, "content": "x" * 5000}), call)
    assert 0 < len(memo) <= 160_000 // 5000  # the arguments counted: not all 40 fit
    before = len(memo)
    for _ in range(2):
        memo.put(*memo.key({"content": "y" * 20_000}), call)  # one entry larger than a sixteenth of the bound
    assert len(memo) == before and memo.get(memo.key({"content": "y" * 20_000})[0]) is None


@pytest.mark.parametrize("module,adapter,body", CASES, ids=["chat", "responses", "messages"])
def test_an_empty_call_id_still_names_its_result_on_a_hit(module, adapter, body, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh(module, monkeypatch)

    def empty_ids(tool: str) -> dict:
        return orjson.loads(orjson.dumps(body(tool)).replace(b'"c1"', b'""'))

    first = adapter.decode_request(empty_ids("bash"))
    adapter.decode_request(empty_ids("bash"))
    again = adapter.decode_request(empty_ids("bash"))
    assert first.history[-1].tool_name == "bash"
    assert as_tuples(again.history) == as_tuples(first.history)


def test_a_message_seen_once_keeps_only_its_digest() -> None:
    memo = MessageMemo(max_entries=3)
    events = (TrajectoryEvent(kind=EventKind.USER, text="z" * 1000),)
    for i in range(10):  # ten fresh messages, never re-sent
        memo.put(*memo.key({"n": i}), events)
    assert len(memo) == 0 and len(memo._seen) <= 3  # the sightings are bounded too
