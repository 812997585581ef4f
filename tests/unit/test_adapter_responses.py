"""Responses adapter: recorded wire traffic in, trajectory events out."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import orjson
import pytest
from openai.types.responses import Response

from adapters.base import BadRequest
from adapters.model import EventKind, TrajectoryEvent, Usage
from adapters.openai_responses import ResponsesAdapter
from adapters.registry import adapter_for_path

WIRE = pathlib.Path(__file__).parents[1] / "fixtures" / "wire"
responses = ResponsesAdapter()


def load(name: str) -> Any:
    return orjson.loads((WIRE / name).read_bytes())


def history(input: Any, **extra: Any) -> tuple[TrajectoryEvent, ...]:
    return responses.decode_request({"model": "gpt-4.1", "input": input, **extra}).history


def hashes(input: Any, **extra: Any) -> list[str]:
    return [event.hash for event in history(input, **extra)]


def function_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def test_registry_routes_the_path() -> None:
    assert isinstance(adapter_for_path("/v1/responses"), ResponsesAdapter)


def test_request_fixture() -> None:
    call = responses.decode_request(load("responses_request.json"))
    assert (call.api, call.model, call.stream, call.store) == ("responses", "o4-mini", True, True)
    call_id = "call_Qm3Zx8Lp2Wn5Rt7Yv1Bk4Hs9"
    assert call.history == (
        TrajectoryEvent(
            EventKind.SYSTEM, text="You are a helpful travel assistant. Use the tools when needed.", role="system"
        ),
        TrajectoryEvent(EventKind.USER, text="What's the weather like in Paris today?", role="user"),
        # the reasoning item is skipped
        TrajectoryEvent(
            EventKind.TOOL_CALL,
            tool_name="get_weather",
            arguments={"location": "Paris, France", "unit": "celsius"},
            tool_call_id=call_id,
        ),
        TrajectoryEvent(
            EventKind.TOOL_RESULT,
            text='{"temperature": 14, "conditions": "light rain"}',
            tool_name="get_weather",
            tool_call_id=call_id,
        ),
        TrajectoryEvent(EventKind.ASSISTANT, text="It's 14 °C with light rain in Paris.", role="assistant"),
        TrajectoryEvent(
            EventKind.USER, text="And in Berlin and Zürich? This is where I'm staying:[image]", role="user"
        ),
    )
    assert [t.name for t in call.tools] == ["get_weather", "web_search"]
    assert call.tools[0].parameters is not None and call.tools[0].parameters["required"] == ["location", "unit"]
    assert call.params == {
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "low"},
        "max_output_tokens": 2048,
        "prompt_cache_key": "travel-assistant-v3",
        "safety_identifier": "user_5f2d1c",
        "metadata": {"trip": "eu-2025"},
    }
    assert call.metadata == {
        "metadata": {"trip": "eu-2025"},
        "safety_identifier": "user_5f2d1c",
        "prompt_cache_key": "travel-assistant-v3",
    }


def test_input_string_previous_response_and_conversation() -> None:
    call = responses.decode_request(
        {
            "model": "gpt-4.1",
            "input": "Hi",
            "previous_response_id": "resp_1",
            "conversation": {"id": "conv_9"},
            "store": False,
        }
    )
    assert call.history == (TrajectoryEvent(EventKind.USER, text="Hi", role="user"),)
    assert (call.previous_response_id, call.conversation, call.store, call.stream) == ("resp_1", "conv_9", False, False)
    assert responses.decode_request({"model": "m", "input": "x", "conversation": "conv_2"}).conversation == "conv_2"


def test_stored_prompt_may_stand_in_for_input() -> None:
    call = responses.decode_request({"model": "m", "prompt": {"id": "pmpt_1"}})
    assert call.history == () and call.params == {"prompt": {"id": "pmpt_1"}}


def test_response_fixture() -> None:
    reply = responses.decode_response(load("responses_response.json"))
    assert reply.events == (
        TrajectoryEvent(EventKind.ASSISTANT, text="Checking Berlin and Zürich — one moment ☔", role="assistant"),
        TrajectoryEvent(
            EventKind.TOOL_CALL,
            tool_name="get_weather",
            arguments={"location": "Berlin, Germany", "unit": "celsius"},
            tool_call_id="call_Hy7Tg2Rf5Ed8Ws1Qa4Zx6Cv9",
        ),
        TrajectoryEvent(
            EventKind.TOOL_CALL,
            tool_name="get_weather",
            arguments={"location": "Zürich, Switzerland", "unit": "celsius"},
            tool_call_id="call_Bn3Mj6Ki9Lo2Pu5Yt8Re1Wq4",
        ),
    )
    assert reply.usage == Usage(input_tokens=291, output_tokens=87)
    assert reply.response_id == "resp_6848f0b7e1a48190b2c4d6e8f0a1b3c5d7e9f1a3b5c7d9e1"
    assert (reply.model, reply.finish_reason) == ("o4-mini-2025-04-16", "completed")


@pytest.mark.parametrize(
    "body", [{"error": {"message": "bad", "code": "server_error"}}, 3, b"<html>", {"output": {"a": 1}}]
)
def test_unexpected_response_gives_empty_reply(body: Any) -> None:
    assert responses.decode_response(body).events == ()


def test_response_continues_into_next_request() -> None:
    """Output items re-sent as input (as the Agents SDK does) hash like the reply."""
    body = load("responses_response.json")
    reply = responses.decode_response(body)
    resent = [item.model_dump(exclude_none=True) for item in Response.model_validate(body).output]
    events = history([{"role": "user", "content": "hi"}, *resent])[1:]
    assert events == reply.events


def test_stream_equals_json_response() -> None:
    decoder = responses.stream_decoder()
    decoder.feed((WIRE / "responses_stream.sse").read_bytes())
    assert decoder.reply() == responses.decode_response(load("responses_response.json"))
    assert decoder.finished


def test_stream_split_at_every_byte() -> None:
    data = (WIRE / "responses_stream.sse").read_bytes()
    expected = responses.decode_response(load("responses_response.json"))
    tool_calls = list(expected.events[1:])
    for i in range(len(data) + 1):
        decoder = responses.stream_decoder()
        decoder.feed(data[:i])
        early = decoder.completed_tool_calls()
        decoder.feed(data[i:])
        assert decoder.reply() == expected, i
        assert early + decoder.completed_tool_calls() == tool_calls, i


def test_stream_one_byte_at_a_time() -> None:
    data = (WIRE / "responses_stream.sse").read_bytes()
    decoder = responses.stream_decoder()
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
    assert decoder.reply() == responses.decode_response(load("responses_response.json"))


def test_stream_without_completed_event_rebuilds_from_deltas() -> None:
    data = (WIRE / "responses_stream.sse").read_bytes()
    cut = data.index(b"event: response.completed")
    expected = responses.decode_response(load("responses_response.json"))
    for end in (cut, data.rindex(b"event: response.output_item.done")):  # before the last call is done
        decoder = responses.stream_decoder()
        decoder.feed(data[:end])
        reply = decoder.reply()
        assert reply.events == expected.events
        assert reply.response_id == expected.response_id and reply.finish_reason == "in_progress"
        assert not decoder.finished


def test_tool_call_completes_at_its_output_item_done() -> None:
    data = (WIRE / "responses_stream.sse").read_bytes()
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    done = [i for i, e in enumerate(events) if b"response.output_item.done" in e and b'"type":"function_call"' in e]
    decoder = responses.stream_decoder()
    released_at: list[int] = []
    for i, event in enumerate(events):
        decoder.feed(event)
        released_at += [i] * len(decoder.completed_tool_calls())
    assert released_at == done


def test_stream_never_raises_on_junk() -> None:
    decoder = responses.stream_decoder()
    for junk in [
        b'event: response.created\ndata: {"type":"response.created","response":7}\n\n',
        b'data: {"type":"response.output_item.added","output_index":0,"item":null}\n\n',
        b'data: {"type":"response.output_text.delta","output_index":0,"delta":5}\n\n',
        b'data: {"type":"response.function_call_arguments.delta","output_index":3,"delta":"{"}\n\n',
        b'data: {"type":"response.completed","response":[]}\n\n',
        b'data: {"type":"error","code":"server_error","message":"boom"}\n\n',
        b"data: }{\n\n",
    ]:
        decoder.feed(junk)
    assert decoder.reply().events == ()
    assert not decoder.finished


# ---- canonical form


def test_string_and_parts_hash_the_same() -> None:
    parts = [{"type": "input_text", "text": "Hello "}, {"type": "input_text", "text": "world"}]
    assert hashes([{"role": "user", "content": "Hello world"}]) == hashes(
        [{"type": "message", "role": "user", "content": parts}]
    )
    assert hashes("Hello world") == hashes([{"role": "user", "content": "Hello world"}])


def test_instructions_system_and_developer_hash_the_same() -> None:
    a = hashes([{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "x"}])
    b = hashes([{"role": "user", "content": "x"}], instructions="Be brief.")
    c = hashes(
        [{"role": "system", "content": [{"type": "input_text", "text": "Be brief."}]}, {"role": "user", "content": "x"}]
    )
    assert a == b == c


def test_argument_order_whitespace_and_ids_do_not_matter() -> None:
    a = hashes(
        [
            function_call("call_1", "f", '{"a":1,"b":2}'),
            {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
        ]
    )
    b = hashes(
        [
            {**function_call("call_9", "f", '{ "b": 2, "a": 1 }'), "id": "fc_other"},
            {"type": "function_call_output", "call_id": "call_9", "output": [{"type": "input_text", "text": "ok"}]},
        ]
    )
    assert a == b


def test_different_text_hashes_differently() -> None:
    assert hashes("delete the branch") != hashes("delete the repo")


# ---- mapping details


def test_outputs_name_their_call_and_unknown_items_are_skipped() -> None:
    events = history(
        [
            {"type": "item_reference", "id": "msg_1"},
            function_call("c1", "read_file", '{"path": "a"}'),
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "function_call_output", "call_id": "c1", "output": "contents"},
            {"type": "function_call_output", "call_id": "c404", "output": "?"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "sh", "input": "ls"},
            {"type": "custom_tool_call_output", "call_id": "c2", "output": "a b"},
        ]
    )
    assert [(e.kind, e.tool_name, e.arguments, e.text) for e in events] == [
        (EventKind.TOOL_CALL, "read_file", {"path": "a"}, None),
        (EventKind.TOOL_RESULT, "read_file", None, "contents"),
        (EventKind.TOOL_RESULT, None, None, "?"),
        (EventKind.TOOL_CALL, "sh", "ls", None),
        (EventKind.TOOL_RESULT, "sh", None, "a b"),
    ]
    assert [e.labels for e in events if e.kind is EventKind.TOOL_CALL] == [{}, {"free_text": True}]


def test_placeholders_for_files_and_images() -> None:
    (event,) = history(
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_file", "file_id": "file-1"},
                    {"type": "input_text", "text": "summarise"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            }
        ]
    )
    assert event.text == "[file]summarise[image]"


def test_error_body_shape() -> None:
    assert responses.error_body("Bad input", type="invalid_request_error", code="invalid_type", param="input") == {
        "error": {"message": "Bad input", "type": "invalid_request_error", "param": "input", "code": "invalid_type"}
    }


# ---- bad requests

MSG = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ("just text", "invalid_request", None),
        (["x"], "invalid_type", None),
        ({"input": "hi"}, "missing_field", "model"),
        ({"model": ["gpt"], "input": "hi"}, "invalid_type", "model"),
        ({"model": "m"}, "missing_field", "input"),
        ({"model": "m", "input": 5}, "invalid_type", "input"),
        ({"model": "m", "input": {"role": "user"}}, "invalid_type", "input"),
        ({"model": "m", "input": [5]}, "invalid_type", "input[0]"),
        ({"model": "m", "input": [{"content": "x"}]}, "missing_field", "input[0].type"),
        ({"model": "m", "input": [{"type": 5}]}, "invalid_type", "input[0].type"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "invalid_request", "input[0].role"),
        ({"model": "m", "input": [{"type": "message", "content": "x"}]}, "missing_field", "input[0].role"),
        ({"model": "m", "input": [{"role": "user"}]}, "missing_field", "input[0].content"),
        ({"model": "m", "input": [{"role": "user", "content": {"text": "x"}}]}, "invalid_type", "input[0].content"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"text": "x"}]}]},
            "invalid_type",
            "input[0].content[0]",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]},
            "invalid_type",
            "input[0].content[0].text",
        ),
        (
            {"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "missing_field",
            "input[0].call_id",
        ),
        (
            {"model": "m", "input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]},
            "missing_field",
            "input[0].name",
        ),
        (
            {"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
            "invalid_type",
            "input[0].arguments",
        ),
        (
            {"model": "m", "input": [{"type": "function_call_output", "output": "x"}]},
            "missing_field",
            "input[0].call_id",
        ),
        (
            {"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]},
            "missing_field",
            "input[0].output",
        ),
        ({"model": "m", "input": [MSG], "instructions": ["x"]}, "invalid_type", "instructions"),
        ({"model": "m", "input": [MSG], "tools": [{"name": "f"}]}, "missing_field", "tools[0].type"),
        ({"model": "m", "input": [MSG], "tools": [{"type": "function"}]}, "missing_field", "tools[0].name"),
        (
            {"model": "m", "input": [MSG], "tools": [{"type": "function", "name": "f", "parameters": []}]},
            "invalid_type",
            "tools[0].parameters",
        ),
        ({"model": "m", "input": [MSG], "tools": "web_search"}, "invalid_type", "tools"),
        ({"model": "m", "input": [MSG], "previous_response_id": 7}, "invalid_type", "previous_response_id"),
        ({"model": "m", "input": [MSG], "conversation": {"name": "x"}}, "invalid_type", "conversation"),
        ({"model": "m", "input": [MSG], "store": "yes"}, "invalid_type", "store"),
        ({"model": "m", "input": [MSG], "stream": 1}, "invalid_type", "stream"),
    ],
)
def test_bad_request(body: Any, code: str, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        responses.decode_request(copy.deepcopy(body))
    assert (info.value.code, info.value.param) == (code, param)
    assert info.value.message and (param is None or param in info.value.message)
