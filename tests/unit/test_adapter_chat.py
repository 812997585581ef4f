"""Chat Completions adapter: recorded wire traffic in, trajectory events out."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion

from adapters.base import BadRequest
from adapters.model import EventKind, TrajectoryEvent, Usage
from adapters.openai_chat import ChatAdapter
from adapters.registry import adapter_for_path

WIRE = pathlib.Path(__file__).parents[1] / "fixtures" / "wire"
STREAMS = [("chat_stream_tools.sse", "chat_response_tools.json"), ("chat_stream_text.sse", "chat_response_text.json")]
chat = ChatAdapter()


def load(name: str) -> Any:
    return orjson.loads((WIRE / name).read_bytes())


def request(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages), **extra}


def history(*messages: dict[str, Any]) -> tuple[TrajectoryEvent, ...]:
    return chat.decode_request(request(*messages)).history


def hashes(*messages: dict[str, Any]) -> list[str]:
    return [event.hash for event in history(*messages)]


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_registry_routes_the_path() -> None:
    assert isinstance(adapter_for_path("/v1/chat/completions"), ChatAdapter)
    assert adapter_for_path("/v1/embeddings") is None


def test_request_fixture() -> None:
    call = chat.decode_request(load("chat_request.json"))
    assert (call.api, call.model, call.stream) == ("chat", "gpt-4o-2024-08-06", True)
    paris, tokyo = "call_3Hq0nKkTzq8Yd5Wc7Lx9aB2e", "call_9PzR4mVbN1sQw8Er6Ty2uI0o"
    assert call.history == (
        TrajectoryEvent(
            EventKind.SYSTEM, text="You are a helpful travel assistant. Use the tools when needed.", role="developer"
        ),
        TrajectoryEvent(
            EventKind.USER,
            text="What's the weather like in Paris and in Tokyo today? Also, is this photo from one of them?[image]",
            role="user",
        ),
        TrajectoryEvent(
            EventKind.TOOL_CALL,
            tool_name="get_weather",
            arguments={"location": "Paris, France", "unit": "celsius"},
            tool_call_id=paris,
            role="assistant",
        ),
        TrajectoryEvent(
            EventKind.TOOL_CALL,
            tool_name="get_weather",
            arguments={"location": "Tokyo, Japan", "unit": "celsius"},
            tool_call_id=tokyo,
            role="assistant",
        ),
        TrajectoryEvent(
            EventKind.TOOL_RESULT,
            text='{"temperature": 14, "conditions": "light rain"}',
            tool_name="get_weather",
            tool_call_id=paris,
            role="tool",
        ),
        TrajectoryEvent(
            EventKind.TOOL_RESULT,
            text='{"temperature": 21, "conditions": "sunny"}',
            tool_name="get_weather",
            tool_call_id=tokyo,
            role="tool",
        ),
        TrajectoryEvent(
            EventKind.ASSISTANT,
            text="Paris: 14 °C with light rain. Tokyo: 21 °C and sunny. "
            "Yes, that's the Eiffel Tower, so the photo is from Paris.",
            role="assistant",
        ),
        TrajectoryEvent(EventKind.USER, text="Great, email the forecast to ana@example.com.", role="user"),
    )
    assert [t.name for t in call.tools] == ["get_weather", "send_email"]
    assert call.tools[0].description == "Get the current weather in a given location"
    assert call.tools[0].parameters is not None and call.tools[0].parameters["required"] == ["location"]
    assert call.params == {
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "temperature": 0.2,
        "max_completion_tokens": 512,
        "stream_options": {"include_usage": True},
        "user": "user-1234",
        "metadata": {"session": "trip-planner-42"},
    }
    assert call.metadata == {"metadata": {"session": "trip-planner-42"}, "user": "user-1234"}
    assert (call.previous_response_id, call.conversation, call.store) == (None, None, None)


def test_request_as_raw_bytes() -> None:
    raw = (WIRE / "chat_request.json").read_bytes()
    assert chat.decode_request(raw) == chat.decode_request(orjson.loads(raw))


def test_response_with_parallel_tool_calls() -> None:
    reply = chat.decode_response(load("chat_response_tools.json"))
    assert [(e.kind, e.tool_name, e.arguments, e.tool_call_id) for e in reply.events] == [
        (
            EventKind.TOOL_CALL,
            "get_weather",
            {"location": "Berlin, Germany", "unit": "celsius"},
            "call_Xn2Lq7RkP0sDf4Gh8Jk1Zx3C",
        ),
        (
            EventKind.TOOL_CALL,
            "get_weather",
            {"location": "Zürich, Switzerland", "unit": "celsius"},
            "call_Vb6Nm2Qw9Er4Ty7Ui1Op3As5",
        ),
        (
            EventKind.TOOL_CALL,
            "send_email",
            {"to": "ana@example.com", "subject": "Wetter — Berlin & Zürich", "body": "Forecast attached 🌦️"},
            "call_Df8Gh1Jk4Lz7Xc0Vb3Nm6Qw9",
        ),
    ]
    assert reply.usage == Usage(input_tokens=318, output_tokens=96)
    assert (reply.response_id, reply.model, reply.finish_reason) == (
        "chatcmpl-BdLWmT0cR6nVq3XyZk1fA2gH7jE9s",
        "gpt-4o-2024-08-06",
        "tool_calls",
    )


def test_response_with_text() -> None:
    reply = chat.decode_response(load("chat_response_text.json"))
    assert reply.events == (
        TrajectoryEvent(
            EventKind.ASSISTANT,
            text="Berlin: 9 °C, overcast. Zürich: 7 °C with light snow ❄️ — pack a warm coat!",
            role="assistant",
        ),
    )
    assert reply.usage == Usage(402, 24) and reply.finish_reason == "stop"


@pytest.mark.parametrize(
    "body", [{"error": {"message": "Rate limit", "type": "requests"}}, [], "nonsense", b"{", None, {"choices": "x"}]
)
def test_unexpected_response_gives_empty_reply(body: Any) -> None:
    assert chat.decode_response(body).events == ()


def test_response_continues_into_next_request() -> None:
    """The reply's events hash like the same message re-sent by the official SDK."""
    body = load("chat_response_tools.json")
    reply = chat.decode_response(body)
    resent = ChatCompletion.model_validate(body).choices[0].message.model_dump(exclude_none=True)
    events = history({"role": "user", "content": "hi"}, resent)[1:]
    assert [e.hash for e in events] == [e.hash for e in reply.events]
    assert events == reply.events


@pytest.mark.parametrize(("stream", "response"), STREAMS)
def test_stream_equals_json_response(stream: str, response: str) -> None:
    data = (WIRE / stream).read_bytes()
    expected = chat.decode_response(load(response))
    decoder = chat.stream_decoder()
    decoder.feed(data)
    assert decoder.reply() == expected
    assert decoder.finished


@pytest.mark.parametrize(("stream", "response"), STREAMS)
def test_stream_split_at_every_byte(stream: str, response: str) -> None:
    data = (WIRE / stream).read_bytes()
    expected = chat.decode_response(load(response))
    tool_calls = [e for e in expected.events if e.kind is EventKind.TOOL_CALL]
    for i in range(len(data) + 1):
        decoder = chat.stream_decoder()
        decoder.feed(data[:i])
        early = decoder.completed_tool_calls()
        decoder.feed(data[i:])
        assert decoder.reply() == expected, i
        assert early + decoder.completed_tool_calls() == tool_calls, i


@pytest.mark.parametrize(("stream", "response"), STREAMS)
def test_stream_one_byte_at_a_time(stream: str, response: str) -> None:
    data = (WIRE / stream).read_bytes()
    decoder = chat.stream_decoder()
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
    assert decoder.reply() == chat.decode_response(load(response))


def test_tool_calls_complete_as_soon_as_the_next_one_starts() -> None:
    data = (WIRE / "chat_stream_tools.sse").read_bytes()
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    starts = [i for i, e in enumerate(events) if b'"id":"call_' in e]
    finish = next(i for i, e in enumerate(events) if b'"finish_reason":"tool_calls"' in e)
    decoder = chat.stream_decoder()
    released_at: list[int] = []
    for i, event in enumerate(events):
        decoder.feed(event)
        released_at += [i] * len(decoder.completed_tool_calls())
    # call k is released by the chunk that starts call k+1; the last by finish_reason
    assert released_at == [*starts[1:], finish]


def test_truncated_json_waits_for_finish_reason() -> None:
    decoder = chat.stream_decoder()
    chunks = [
        {"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x": '}},
        {"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}},
    ]
    for piece in chunks:
        decoder.feed(b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]}) + b"\n\n")
    assert decoder.completed_tool_calls() == []  # call 0 is not valid JSON yet; call 1 must wait for it
    decoder.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n')
    assert [e.tool_call_id for e in decoder.completed_tool_calls()] == ["a", "b"]
    assert decoder.completed_tool_calls() == []


def test_stream_never_raises_on_junk() -> None:
    decoder = chat.stream_decoder()
    for junk in [
        b"data: not json\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"choices": "x", "usage": 5}\n\n',
        b'data: {"choices": [null, {"index": 0, "delta": {"tool_calls": [{"index": "x"}, 3]}}]}\n\n',
        b'data: {"choices": [{"index": 0, "delta": {"content": 5, "tool_calls": {"a": 1}}}]}\n\n',
        b"\xff\xfe\x00garbage\r\n\r\n",
        b'data: {"error": {"message": "server_error"}}\n\n',
    ]:
        decoder.feed(junk)
    assert decoder.reply().events == (TrajectoryEvent(EventKind.ASSISTANT, text="", role="assistant"),)
    assert chat.stream_decoder().reply().events == ()


def test_stream_ignores_other_choices() -> None:
    decoder = chat.stream_decoder()
    decoder.feed(b'data: {"choices":[{"index":1,"delta":{"content":"B"}},{"index":0,"delta":{"content":"A"}}]}\n\n')
    assert [e.text for e in decoder.reply().events] == ["A"]


# ---- canonical form: what a client may change without changing the hash


def test_string_and_text_parts_hash_the_same() -> None:
    as_string = hashes({"role": "user", "content": "Hello world"})
    as_parts = hashes(
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]}
    )
    assert as_string == as_parts


def test_system_and_developer_hash_the_same() -> None:
    assert hashes({"role": "system", "content": "Be brief."}) == hashes({"role": "developer", "content": "Be brief."})


def test_argument_order_whitespace_and_ids_do_not_matter() -> None:
    a = hashes({"role": "assistant", "tool_calls": [tool_call("call_1", "f", '{"a":1,"b":[1,2]}')]})
    b = hashes(
        {"role": "assistant", "content": "", "tool_calls": [tool_call("call_zz", "f", '{ "b": [1, 2],\n "a": 1 }')]}
    )
    assert a == b


def test_tool_result_hash_ignores_regenerated_ids() -> None:
    def turn(call_id: str) -> list[str]:
        return hashes(
            {"role": "assistant", "tool_calls": [tool_call(call_id, "f", "{}")]},
            {"role": "tool", "tool_call_id": call_id, "content": "ok"},
        )

    assert turn("call_1") == turn("call_2")


def test_different_text_hashes_differently() -> None:
    assert hashes({"role": "user", "content": "rm -rf /tmp/x"}) != hashes({"role": "user", "content": "rm -rf /"})
    assert hashes({"role": "user", "content": "hi"}) != hashes({"role": "assistant", "content": "hi"})


def test_different_arguments_hash_differently() -> None:
    a = hashes({"role": "assistant", "tool_calls": [tool_call("c", "f", '{"a":1}')]})
    b = hashes({"role": "assistant", "tool_calls": [tool_call("c", "f", '{"a":2}')]})
    assert a != b


# ---- mapping details


def test_assistant_text_then_tool_calls() -> None:
    events = history(
        {"role": "assistant", "content": "Let me check.", "tool_calls": [tool_call("c1", "f", "not json")]},
    )
    assert [(e.kind, e.text, e.arguments) for e in events] == [
        (EventKind.ASSISTANT, "Let me check.", None),
        (EventKind.TOOL_CALL, None, "not json"),
    ]


def test_unmatched_tool_result_has_no_name() -> None:
    (event,) = history({"role": "tool", "tool_call_id": "nowhere", "content": "x"})
    assert (event.kind, event.tool_name, event.tool_call_id) == (EventKind.TOOL_RESULT, None, "nowhere")


def test_legacy_function_call_and_function_role() -> None:
    events = history(
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"q": 1}'}},
        {"role": "function", "name": "f", "content": "result"},
    )
    assert [(e.kind, e.tool_name, e.arguments, e.text) for e in events] == [
        (EventKind.TOOL_CALL, "f", {"q": 1}, None),
        (EventKind.TOOL_RESULT, "f", None, "result"),
    ]


def test_custom_tool_call_keeps_raw_input() -> None:
    (event,) = history(
        {
            "role": "assistant",
            "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "sh", "input": "ls -la"}}],
        }
    )
    assert (event.tool_name, event.arguments) == ("sh", "ls -la")
    assert event.labels == {"free_text": True}  # policies tell it from a function call whose JSON broke


def test_non_text_parts_become_placeholders() -> None:
    (event,) = history(
        {
            "role": "user",
            "content": [
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-1"}},
            ],
        }
    )
    assert event.text == "[audio][file]"


def test_refusal_is_assistant_text() -> None:
    reply = chat.decode_response({"choices": [{"message": {"role": "assistant", "content": None, "refusal": "No."}}]})
    assert [e.text for e in reply.events] == ["No."]
    assert (
        history({"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]})[0].hash
        == reply.events[0].hash
    )


def test_empty_assistant_message_still_leaves_a_trace() -> None:
    assert history({"role": "assistant", "content": ""}) == (
        TrajectoryEvent(EventKind.ASSISTANT, text="", role="assistant"),
    )
    assert history({"role": "assistant", "content": None, "tool_calls": []}) == history(
        {"role": "assistant", "content": ""}
    )


def test_custom_and_hosted_tools_and_legacy_functions() -> None:
    call = chat.decode_request(
        request(
            {"role": "user", "content": "x"},
            tools=[
                {"type": "custom", "custom": {"name": "sh", "description": "shell"}},
                {"type": "web_search_preview"},
            ],
            functions=[{"name": "old", "parameters": {"type": "object"}}],
        )
    )
    assert [(t.name, t.description) for t in call.tools] == [
        ("sh", "shell"),
        ("web_search_preview", None),
        ("old", None),
    ]
    assert "functions" not in call.params


def test_error_body_shape() -> None:
    assert chat.error_body(
        "Denied by policy", type="invalid_request_error", code="policy_denied", param="messages"
    ) == {
        "error": {
            "message": "Denied by policy",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "policy_denied",
        }
    }


# ---- bad requests: a stable code, the offending param, a message that says what to fix

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ([1, 2], "invalid_type", None),
        (b"{not json", "invalid_request", None),
        ({"messages": [USER]}, "missing_field", "model"),
        ({"model": 4, "messages": [USER]}, "invalid_type", "model"),
        ({"model": ""}, "invalid_type", "model"),
        ({"model": "m"}, "missing_field", "messages"),
        ({"model": "m", "messages": "hi"}, "invalid_type", "messages"),
        ({"model": "m", "messages": []}, "invalid_request", "messages"),
        ({"model": "m", "messages": ["hi"]}, "invalid_type", "messages[0]"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "missing_field", "messages[0].role"),
        ({"model": "m", "messages": [{"role": "bot", "content": "hi"}]}, "invalid_request", "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user"}]}, "missing_field", "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "invalid_type", "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": ["x"]}]}, "invalid_type", "messages[0].content[0]"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "missing_field",
            "messages[0].content[0].text",
        ),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "missing_field", "messages[0].tool_call_id"),
        (
            {"model": "m", "messages": [{"role": "assistant", "tool_calls": {"id": "x"}}]},
            "invalid_type",
            "messages[0].tool_calls",
        ),
        (
            {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "x", "type": "function"}]}]},
            "invalid_type",
            "messages[0].tool_calls[0].function",
        ),
        (
            {"model": "m", "messages": [{"role": "assistant", "tool_calls": [tool_call("x", None, "{}")]}]},  # type: ignore[arg-type]
            "missing_field",
            "messages[0].tool_calls[0].function.name",
        ),
        ({"model": "m", "messages": [USER], "tools": {"type": "function"}}, "invalid_type", "tools"),
        ({"model": "m", "messages": [USER], "tools": [{"type": "function"}]}, "invalid_type", "tools[0].function"),
        (
            {"model": "m", "messages": [USER], "tools": [{"type": "function", "function": {"description": "x"}}]},
            "missing_field",
            "tools[0].function.name",
        ),
        (
            {
                "model": "m",
                "messages": [USER],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}],
            },
            "invalid_type",
            "tools[0].function.parameters",
        ),
        ({"model": "m", "messages": [USER], "tools": [{"function": {"name": "f"}}]}, "missing_field", "tools[0].type"),
        ({"model": "m", "messages": [USER], "stream": "yes"}, "invalid_type", "stream"),
    ],
)
def test_bad_request(body: Any, code: str, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        chat.decode_request(copy.deepcopy(body))
    assert (info.value.code, info.value.param) == (code, param)
    assert info.value.message and (param is None or param in info.value.message)


def test_bad_request_message_says_what_to_fix() -> None:
    with pytest.raises(BadRequest) as info:
        chat.decode_request({"model": "m", "messages": {}})
    assert "'messages' must be a non-empty array of message objects" in info.value.message
