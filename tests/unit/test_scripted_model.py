"""The scripted model, driven by the real OpenAI and Anthropic SDKs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest
import pytest_asyncio
from aiohttp import web

from proxy.scripted_model import (
    RECEIVED,
    Fault,
    ReceivedRequest,
    Responder,
    ScriptedResponder,
    ToolCallSpec,
    Turn,
    echo_responder,
    keyed,
    start_model_server,
)

pytestmark = pytest.mark.asyncio

# The SDKs type these parameters as TypedDicts; plain dicts are what clients really send.
TOOLS_CHAT: Any = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
    for n in ("read_file", "search")
]
TOOLS_RESPONSES: Any = [
    {"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}} for n in ("read_file", "search")
]
TOOLS_ANTHROPIC: Any = [
    {"name": n, "input_schema": {"type": "object", "properties": {}}} for n in ("read_file", "search")
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
CALLS = [(c.name, c.arguments) for c in PARALLEL.tool_calls]
USER: Any = [{"role": "user", "content": "look at my notes"}]


class Harness:
    """Starts scripted models and SDK clients for one test, and closes them all after it."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.clients: list[openai.AsyncOpenAI | anthropic.AsyncAnthropic] = []

    async def __call__(self, responder: Responder, **kw: Any) -> str:
        """Starts a scripted model; returns its base URL."""
        runner, url = await start_model_server(responder, **kw)
        self.runners.append(runner)
        return url

    def openai(self, url: str, **kw: Any) -> openai.AsyncOpenAI:
        self.clients.append(client := openai.AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0, **kw))
        return client

    def anthropic(self, url: str, **kw: Any) -> anthropic.AsyncAnthropic:
        base = url.removesuffix("/v1")  # the anthropic SDK adds /v1 itself
        self.clients.append(
            client := anthropic.AsyncAnthropic(base_url=base, api_key="sk-ant-test", max_retries=0, **kw)
        )
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for runner in self.runners:
            await runner.cleanup()


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()


# ---- Chat Completions ---------------------------------------------------------


async def test_chat_non_stream_parallel_tool_calls(serve: Harness) -> None:
    url = await serve(ScriptedResponder([PARALLEL]))
    completion = await serve.openai(url).chat.completions.create(model="gpt-test", messages=USER, tools=TOOLS_CHAT)

    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-test" and completion.system_fingerprint
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant" and choice.message.content == "Let me look."
    calls = [c for c in choice.message.tool_calls or [] if c.type == "function"]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == CALLS
    assert all(c.id.startswith("call_") for c in calls)
    assert len({c.id for c in calls}) == 2
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        42,
        17,
        59,
    )


async def test_chat_stream_with_tools_and_usage(serve: Harness) -> None:
    url = await serve(ScriptedResponder([PARALLEL]), chunks=4)
    stream = await serve.openai(url).chat.completions.create(
        model="gpt-test", messages=USER, tools=TOOLS_CHAT, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me look."
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 4
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    heads = [d for d in deltas if d.id]
    assert [h.index for h in heads] == [0, 1]
    assert all(h.function and h.function.arguments == "" and h.type == "function" for h in heads)
    assert [h.function.name for h in heads if h.function] == ["read_file", "search"]
    arguments = ["".join(d.function.arguments or "" for d in deltas if d.index == i and d.function) for i in (0, 1)]
    assert [json.loads(a) for a in arguments] == [args for _, args in CALLS]
    assert len([d for d in deltas if d.index == 0 and not d.id]) > 1  # split over several chunks
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 59
    assert all(c.usage is None for c in chunks[:-1])


async def test_chat_stream_helper_accumulates(serve: Harness) -> None:
    url = await serve(ScriptedResponder([PARALLEL]))
    async with serve.openai(url).chat.completions.stream(model="gpt-test", messages=USER, tools=TOOLS_CHAT) as stream:
        completion = await stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Let me look."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []] == CALLS


async def test_chat_text_only_without_stream_usage(serve: Harness) -> None:
    url = await serve(echo_responder)
    stream = await serve.openai(url).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": [{"type": "text", "text": "hi there"}]}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hi there"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


async def test_sync_client(serve: Harness) -> None:
    url = await serve(echo_responder)

    def call() -> str | None:
        client = openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0)
        completion = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "sync"}])
        return completion.choices[0].message.content

    assert await asyncio.to_thread(call) == "echo: sync"


# ---- Responses ----------------------------------------------------------------


async def test_responses_non_stream(serve: Harness) -> None:
    url = await serve(ScriptedResponder([PARALLEL]))
    response = await serve.openai(url).responses.create(
        model="gpt-test",
        input="look at my notes",
        tools=TOOLS_RESPONSES,
        previous_response_id="resp_earlier",
        store=False,
    )
    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert (
        response.model == "gpt-test"
        and response.to_dict()["store"] is False
        and response.previous_response_id == "resp_earlier"
    )
    assert response.output_text == "Let me look."
    message, *calls = response.output
    assert message.type == "message" and message.id.startswith("msg_")
    assert [(c.name, json.loads(c.arguments)) for c in calls if c.type == "function_call"] == CALLS
    assert all(
        c.type == "function_call" and c.id and c.id.startswith("fc_") and c.call_id.startswith("call_") for c in calls
    )
    assert response.usage is not None and response.usage.total_tokens == 59
    assert response.usage.input_tokens_details.cached_tokens == 0


async def test_responses_stream_helper(serve: Harness) -> None:
    url = await serve(ScriptedResponder([PARALLEL]))
    async with serve.openai(url).responses.stream(model="gpt-test", input=USER, tools=TOOLS_RESPONSES) as stream:
        types = [event.type async for event in stream]
        response = await stream.get_final_response()
    assert response.output_text == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in response.output if c.type == "function_call"] == CALLS
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-1] == "response.completed"
    assert types.count("response.function_call_arguments.done") == 2 and types.count("response.output_item.done") == 3


async def test_responses_raw_stream_sequence(serve: Harness) -> None:
    url = await serve(ScriptedResponder([Turn(tool_calls=PARALLEL.tool_calls[:1])]), chunks=3)
    stream = await serve.openai(url).responses.create(model="gpt-test", input="go", stream=True)
    events = [event async for event in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * 3,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = events[-1]
    assert done.type == "response.completed"
    [call] = done.response.output
    assert call.type == "function_call" and json.loads(call.arguments) == CALLS[0][1]


async def test_responses_stream_has_event_lines(serve: Harness) -> None:
    url = await serve(echo_responder, chunks=2)
    body = {"model": "m", "input": "abcd", "stream": True}
    async with aiohttp.ClientSession() as http, http.post(url + "/responses", json=body) as answer:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        raw = (await answer.read()).decode()
    frames = [f for f in raw.split("\n\n") if f]
    assert frames[0].startswith("event: response.created\ndata: {")
    assert all(f.split("\n")[0] == "event: " + json.loads(f.split("\n", 1)[1][6:])["type"] for f in frames)


# ---- Anthropic Messages -------------------------------------------------------


async def test_anthropic_non_stream(serve: Harness) -> None:
    url = await serve(ScriptedResponder([PARALLEL]))
    message = await serve.anthropic(url).messages.create(
        model="claude-test", max_tokens=100, messages=USER, tools=TOOLS_ANTHROPIC
    )
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == "claude-test" and message.stop_reason == "tool_use" and message.stop_sequence is None
    text, *tools = message.content
    assert text.type == "text" and text.text == "Let me look."
    assert [(b.name, b.input) for b in tools if b.type == "tool_use"] == CALLS
    assert all(b.type == "tool_use" and b.id.startswith("toolu_") for b in tools)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (42, 17)


async def test_anthropic_stream_final_message(serve: Harness) -> None:
    url = await serve(ScriptedResponder([PARALLEL, Turn(text="done")]), chunks=5)
    client = serve.anthropic(url)
    async with client.messages.stream(
        model="claude-test", max_tokens=100, messages=USER, tools=TOOLS_ANTHROPIC
    ) as stream:
        types = [event.type async for event in stream]
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 17
    assert message.content[0].type == "text" and message.content[0].text == "Let me look."
    assert [(b.name, b.input) for b in message.content if b.type == "tool_use"] == CALLS
    assert types[0] == "message_start" and types[-1] == "message_stop" and "message_delta" in types

    async with client.messages.stream(model="claude-test", max_tokens=100, messages=USER) as stream:
        assert await stream.get_final_text() == "done"


async def test_anthropic_raw_stream_order(serve: Harness) -> None:
    url = await serve(echo_responder, chunks=2)
    stream = await serve.anthropic(url).messages.create(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "ab"}], stream=True
    )
    types = [event.type async for event in stream]
    assert types == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 2,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK drops ping


# ---- Faults -------------------------------------------------------------------


async def test_fault_500_raises_internal_server_error(serve: Harness) -> None:
    url = await serve(
        ScriptedResponder([Fault(status=500), Fault(status=529), Fault(status=429, headers={"Retry-After": "0"})])
    )
    with pytest.raises(openai.InternalServerError) as caught:
        await serve.openai(url).chat.completions.create(model="m", messages=USER)
    assert caught.value.status_code == 500 and caught.value.code == "scripted_fault"
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await serve.anthropic(url).messages.create(model="c", max_tokens=10, messages=USER)
    assert overloaded.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "scripted fault: HTTP 529"},
    }
    with pytest.raises(openai.RateLimitError) as limited:
        await serve.openai(url).responses.create(model="m", input="x", stream=True)
    assert limited.value.response.headers["Retry-After"] == "0"


async def test_fault_custom_body(serve: Harness) -> None:
    body = {"error": {"message": "nope", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    url = await serve(ScriptedResponder([Fault(status=404, body=body)]))
    with pytest.raises(openai.NotFoundError) as caught:
        await serve.openai(url).chat.completions.create(model="m", messages=USER)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


async def test_cut_stream_raises(serve: Harness) -> None:
    url = await serve(ScriptedResponder([Fault(cut_after_chunks=3)], cycle=True))
    stream = await serve.openai(url).chat.completions.create(model="m", messages=USER, stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    # The anthropic SDK lets the transport's error through unwrapped when a stream is cut.
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        async with serve.anthropic(url).messages.stream(model="c", max_tokens=10, messages=USER) as anthropic_stream:
            await anthropic_stream.get_final_message()
    with pytest.raises(openai.APIConnectionError):
        await serve.openai(url).chat.completions.create(model="m", messages=USER)  # a non-streaming body cut in half


async def test_cut_responses_stream_raises(serve: Harness) -> None:
    url = await serve(ScriptedResponder([Fault(cut_after_chunks=4)]))
    with pytest.raises(openai.APIConnectionError):
        async with serve.openai(url).responses.stream(model="m", input="go") as stream:
            await stream.get_final_response()


async def test_chunk_delay_paces_the_stream(serve: Harness) -> None:
    url = await serve(ScriptedResponder([Turn()]), chunks=3, chunk_delay=0.02)
    started = asyncio.get_running_loop().time()
    stream = await serve.openai(url).chat.completions.create(model="m", messages=USER, stream=True)
    chunks = [chunk async for chunk in stream]
    assert asyncio.get_running_loop().time() - started >= 0.04  # role, "", finish: two pauses at least
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""  # an empty Turn answers empty text
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_delay_fault_times_out_then_slow_success(serve: Harness) -> None:
    url = await serve(ScriptedResponder([Fault(delay=5.0), Fault(status=200, delay=0.05, turn=Turn(text="slow"))]))
    with pytest.raises(openai.APITimeoutError):
        await serve.openai(url, timeout=0.2).chat.completions.create(model="m", messages=USER)
    completion = await serve.openai(url).chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "slow"


async def test_exhausted_script_answers_500(serve: Harness) -> None:
    url = await serve(ScriptedResponder([Turn(text="only")]))
    client = serve.openai(url)
    await client.chat.completions.create(model="m", messages=USER)
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="m", messages=USER)
    assert caught.value.code == "script_exhausted"


# ---- Plumbing -----------------------------------------------------------------


async def test_records_requests_byte_for_byte(serve: Harness) -> None:
    url = await serve(echo_responder)
    body = b'{"model": "m",  "messages": [{"role": "user", "content": "x"}]}'
    headers = {"Authorization": "Bearer sk-Secret_123", "Content-Type": "application/json", "X-Proctor-Session": "s1"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/chat/completions?trace=1", data=body, headers=headers) as answer:
            assert answer.status == 200
        await serve.openai(url).models.list()
    seen, listed = serve.runners[0].app[RECEIVED]
    assert isinstance(seen, ReceivedRequest)
    assert (seen.method, seen.path, seen.query_string, seen.body) == ("POST", "/v1/chat/completions", "trace=1", body)
    assert seen.headers["authorization"] == "Bearer sk-Secret_123"  # lookups ignore case
    assert (b"Authorization", b"Bearer sk-Secret_123") in seen.raw_headers
    assert seen.headers["X-Proctor-Session"] == "s1" and seen.json()["model"] == "m"
    assert (listed.method, listed.path, listed.body) == ("GET", "/v1/models", b"")
    assert listed.headers["Authorization"] == "Bearer sk-test"


async def test_record_off_keeps_nothing(serve: Harness) -> None:
    url = await serve(echo_responder, record=False)
    await serve.openai(url).chat.completions.create(model="m", messages=USER)
    assert serve.runners[0].app[RECEIVED] == []


async def test_models_404_and_bad_json(serve: Harness) -> None:
    url = await serve(echo_responder)
    models = await serve.openai(url).models.list()
    assert [m.id for m in models.data] == ["scripted-gpt", "scripted-claude"]
    with pytest.raises(openai.NotFoundError) as missing:
        await serve.openai(url).embeddings.create(model="m", input="x")
    assert missing.value.code == "unknown_url"
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/chat/completions", data=b"{not json") as answer:
            assert answer.status == 400
            assert (await answer.json())["error"]["code"] == "invalid_json"
        async with http.post(url + "/messages", data=b"[1]") as answer:
            assert answer.status == 400
            assert (await answer.json())["type"] == "error"


async def test_keyed_responder_and_echo(serve: Harness) -> None:
    read = Turn(tool_calls=(ToolCallSpec("read_file", {"path": "a"}),))
    url = await serve(keyed({"read": read}))
    response = await serve.openai(url).responses.create(
        model="m", input=[{"role": "user", "content": [{"type": "input_text", "text": "please read a"}]}]
    )
    assert [c.type for c in response.output] == ["function_call"]
    message = await serve.anthropic(url).messages.create(
        model="c",
        max_tokens=10,
        messages=[
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]},
        ],
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello"
