"""The real OpenAI SDK (sync and async; chat and responses; streaming and not;
parallel tool calls) gets exactly the same parsed results through Proctor as
straight from the upstream, and every call lands in the store as it should."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from proxy.scripted_model import ToolCallSpec, Turn

from .conftest import calls_of, events_of, shape, twice

KEY = "sk-client-e2e-openai-0123456789"
TOOLS_CHAT: Any = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
    for n in ("read_file", "search")
]
TOOLS_RESPONSES: Any = [
    {"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}} for n in ("read_file", "search")
]
PARALLEL = Turn(
    text="Let me look.",
    tool_calls=(
        ToolCallSpec("read_file", {"path": "notes/ünïcode.txt", "lines": [1, 2]}),
        ToolCallSpec("search", {"query": 'say "hi"', "nested": {"deep": True}}),
    ),
    input_tokens=42,
    output_tokens=17,
)
EXPECTED_CALLS = [(c.name, c.arguments) for c in PARALLEL.tool_calls]
MESSAGES: Any = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "look at my notes"}]},
]
REPLY_SHAPE = [
    ("assistant", "Let me look."),
    ("tool_call", ("read_file", {"path": "notes/ünïcode.txt", "lines": [1, 2]})),
    ("tool_call", ("search", {"query": 'say "hi"', "nested": {"deep": True}})),
]


def sync_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=10)


def async_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=10)


# Each scenario returns (what the SDK parsed, the X-Proctor-Session header or None).


def chat_sync(url: str, stream: bool) -> tuple[Any, str | None]:
    with sync_client(url) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=MESSAGES, tools=TOOLS_CHAT, stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        )
        parsed = raw.parse()
        dump = [c.model_dump() for c in parsed] if stream else parsed.model_dump()
        return dump, raw.headers.get("x-proctor-session")


def chat_async(url: str, stream: bool) -> tuple[Any, str | None]:
    async def go() -> tuple[Any, str | None]:
        async with async_client(url) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=MESSAGES, tools=TOOLS_CHAT, stream=stream,
                **({"stream_options": {"include_usage": True}} if stream else {}),
            )
            parsed = raw.parse()
            dump = [c.model_dump() async for c in parsed] if stream else parsed.model_dump()
            return dump, raw.headers.get("x-proctor-session")

    return asyncio.run(go())


def responses_sync(url: str, stream: bool) -> tuple[Any, str | None]:
    with sync_client(url) as client:
        raw = client.responses.with_raw_response.create(
            model="gpt-test", instructions="Be brief.", input="look at my notes", tools=TOOLS_RESPONSES, stream=stream
        )
        parsed = raw.parse()
        dump = [e.model_dump() for e in parsed] if stream else parsed.model_dump()
        return dump, raw.headers.get("x-proctor-session")


def responses_async(url: str, stream: bool) -> tuple[Any, str | None]:
    async def go() -> tuple[Any, str | None]:
        async with async_client(url) as client:
            raw = await client.responses.with_raw_response.create(
                model="gpt-test", instructions="Be brief.", input="look at my notes", tools=TOOLS_RESPONSES,
                stream=stream,
            )
            parsed = raw.parse()
            dump = [e.model_dump() async for e in parsed] if stream else parsed.model_dump()
            return dump, raw.headers.get("x-proctor-session")

    return asyncio.run(go())


def _check_chat(dump: Any, stream: bool) -> None:
    """The result really carries the scripted answer (so equality is not vacuous)."""
    if not stream:
        message = dump["choices"][0]["message"]
        assert message["content"] == "Let me look."
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == (
            EXPECTED_CALLS
        )
        assert dump["usage"]["total_tokens"] == 59
        return
    assert len(dump) > 10
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in dump if c["choices"])
    assert text == "Let me look."
    deltas = [d for c in dump if c["choices"] for d in c["choices"][0]["delta"]["tool_calls"] or []]
    args = ["".join(d["function"]["arguments"] or "" for d in deltas if d["index"] == i) for i in (0, 1)]
    assert [json.loads(a) for a in args] == [a for _, a in EXPECTED_CALLS]
    assert dump[-1]["usage"]["total_tokens"] == 59


def _check_responses(dump: Any, stream: bool) -> None:
    final = dump[-1]["response"] if stream else dump
    if stream:
        assert dump[-1]["type"] == "response.completed" and len(dump) > 10
        assert [e["sequence_number"] for e in dump] == list(range(len(dump)))
    message, *calls = final["output"]
    assert message["content"][0]["text"] == "Let me look."
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == EXPECTED_CALLS
    assert final["usage"]["total_tokens"] == 59


SCENARIOS = {
    "chat-sync": (chat_sync, _check_chat, "chat"),
    "chat-async": (chat_async, _check_chat, "chat"),
    "responses-sync": (responses_sync, _check_responses, "responses"),
    "responses-async": (responses_async, _check_responses, "responses"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_same_parsed_result_through_proxy(scenario: str, stream: bool, proxy: Any, upstream: Any, same_ids: Any) -> None:
    run, check, api = SCENARIOS[scenario]
    upstream.answer(PARALLEL)
    (direct, no_session), (through, session_id) = twice(same_ids, lambda url: run(url, stream), upstream.url, proxy.url)

    check(direct, stream)
    assert through == direct  # exact: ids and timestamps are deterministic
    assert no_session is None and session_id and session_id.startswith("ses_")

    # What reached the upstream through the proxy is what the SDK sent directly.
    direct_req, proxied_req = upstream.received[-2], upstream.received[-1]
    assert proxied_req.body == direct_req.body
    assert proxied_req.path == direct_req.path == f"/v1/{'chat/completions' if api == 'chat' else 'responses'}"

    # Recorded: one call of the right api, with the request's events then the reply's.
    (call,) = calls_of(proxy, session_id)
    assert (call.api, call.model, call.stream, call.status, call.error) == (api, "gpt-test", stream, 200, None)
    assert (call.input_tokens, call.output_tokens) == (42, 17)
    user = ("user", "look at my notes")
    assert shape(events_of(proxy, session_id)) == [("system", "Be brief."), user, *REPLY_SHAPE]


def test_chat_stream_helper_final_completion(proxy: Any, upstream: Any, same_ids: Any) -> None:
    """The SDK's accumulating stream helper rebuilds the same completion."""
    upstream.answer(PARALLEL)

    def run(url: str) -> Any:
        async def go() -> Any:
            async with async_client(url) as client:
                async with client.chat.completions.stream(model="gpt-test", messages=MESSAGES, tools=TOOLS_CHAT) as s:
                    return (await s.get_final_completion()).model_dump()

        return asyncio.run(go())

    direct, through = twice(same_ids, run, upstream.url, proxy.url)
    assert through == direct
    message = direct["choices"][0]["message"]
    assert message["content"] == "Let me look." and len(message["tool_calls"]) == 2


def test_responses_stream_helper_final_response(proxy: Any, upstream: Any, same_ids: Any) -> None:
    upstream.answer(PARALLEL)

    def run(url: str) -> Any:
        with sync_client(url) as client:
            with client.responses.stream(model="gpt-test", input="look at my notes", tools=TOOLS_RESPONSES) as s:
                return s.get_final_response().model_dump()

    direct, through = twice(same_ids, run, upstream.url, proxy.url)
    assert through == direct
    assert direct["output"][0]["content"][0]["text"] == "Let me look."


def test_chat_tool_loop_is_one_session(proxy: Any, upstream: Any) -> None:
    """An agent loop with the SDK (no session header): history matching links the calls."""

    def model(api: str, body: dict[str, Any]) -> Turn:
        results = [m for m in body["messages"] if m["role"] == "tool"]
        if not results:
            return PARALLEL
        return Turn(text=f"Done: {' | '.join(r['content'] for r in results)}")

    upstream.answer(model)
    client = sync_client(proxy.url)
    messages: list[Any] = list(MESSAGES)
    sessions = []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=messages, tools=TOOLS_CHAT)
        sessions.append(raw.headers["x-proctor-session"])
        message = raw.parse().choices[0].message
        messages.append(message)
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": f"result of {call.function.name}"})
    client.close()

    assert message.content == "Done: result of read_file | result of search"
    assert len(sessions) == 2 and sessions[0] == sessions[1]
    calls = calls_of(proxy, sessions[0])
    assert [c.resolved_by for c in calls] == ["new", "history"]
    assert shape(events_of(proxy, sessions[0])) == [
        ("system", "Be brief."),
        ("user", "look at my notes"),
        *REPLY_SHAPE,
        ("tool_result", ("read_file", "result of read_file")),
        ("tool_result", ("search", "result of search")),
        ("assistant", "Done: result of read_file | result of search"),
    ]
    events = events_of(proxy, sessions[0])
    assert [e.seq for e in events] == list(range(len(events)))


def test_responses_previous_response_id_continues_session(proxy: Any, upstream: Any) -> None:
    def model(api: str, body: dict[str, Any]) -> Turn:
        items = body["input"] if isinstance(body["input"], list) else []
        outputs = [i for i in items if i.get("type") == "function_call_output"]
        if not outputs:
            return Turn(tool_calls=(ToolCallSpec("search", {"query": "port"}),))
        return Turn(text="Port 6432.")

    upstream.answer(model)

    async def go() -> tuple[list[str], str]:
        async with async_client(proxy.url) as client:
            first = await client.responses.with_raw_response.create(
                model="gpt-test", input="which port?", tools=TOOLS_RESPONSES
            )
            response = first.parse()
            (call,) = [o for o in response.output if o.type == "function_call"]
            second = await client.responses.with_raw_response.create(
                model="gpt-test", previous_response_id=response.id, tools=TOOLS_RESPONSES, stream=True,
                input=[{"type": "function_call_output", "call_id": call.call_id, "output": "6432"}],
            )
            events = [e async for e in second.parse()]
            final = events[-1].response.output_text
            return [first.headers["x-proctor-session"], second.headers["x-proctor-session"]], final

    sessions, final = asyncio.run(go())
    assert final == "Port 6432."
    assert sessions[0] == sessions[1]
    assert [c.resolved_by for c in calls_of(proxy, sessions[0])] == ["new", "previous_response_id"]
    events = events_of(proxy, sessions[0])
    assert [(e.kind.value, e.text) for e in events] == [
        ("user", "which port?"), ("tool_call", None), ("tool_result", "6432"), ("assistant", "Port 6432."),
    ]
    assert (events[1].tool_name, events[1].arguments) == ("search", {"query": "port"})
    # The output names its call only by id (the call itself is in the previous response).
    assert events[2].tool_call_id == events[1].tool_call_id is not None
    assert "orphan" not in events[2].labels  # its call is in the session, one response back
    assert [e.seq for e in events] == [0, 1, 2, 3]
