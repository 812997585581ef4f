"""Anthropic Messages adapter: recorded wire traffic in, trajectory events out."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import orjson
import pytest
from anthropic.types import Message

from adapters.anthropic_messages import MessagesAdapter
from adapters.base import BadRequest
from adapters.model import EventKind, TrajectoryEvent, Usage
from adapters.registry import adapter_for_path

WIRE = pathlib.Path(__file__).parents[1] / "fixtures" / "wire"
messages = MessagesAdapter()


def load(name: str) -> Any:
    return orjson.loads((WIRE / name).read_bytes())


def history(*msgs: dict[str, Any], **extra: Any) -> tuple[TrajectoryEvent, ...]:
    return messages.decode_request(
        {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": list(msgs), **extra}
    ).history


def hashes(*msgs: dict[str, Any], **extra: Any) -> list[str]:
    return [event.hash for event in history(*msgs, **extra)]


def tool_use(use_id: str, name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": use_id, "name": name, "input": input}


def test_registry_routes_the_path() -> None:
    assert isinstance(adapter_for_path("/v1/messages"), MessagesAdapter)
    assert isinstance(adapter_for_path("/v1/messages/"), MessagesAdapter)
    assert adapter_for_path("/v1/messages/count_tokens") is None


def test_request_fixture() -> None:
    call = messages.decode_request(load("anthropic_request.json"))
    assert (call.api, call.model, call.stream) == ("messages", "claude-sonnet-4-5-20250929", True)
    paris, clock = "toolu_01A09q90qw90lq917835lq9", "toolu_01B7nKx2Vq4Lm8Pz3Rt6Wy9s"
    assert call.history == (
        TrajectoryEvent(
            EventKind.SYSTEM, text="You are a helpful travel assistant. Use the tools when needed.", role="system"
        ),
        TrajectoryEvent(EventKind.USER, text="What's the weather like in Paris today?", role="user"),
        TrajectoryEvent(EventKind.ASSISTANT, text="I'll look that up for you.", role="assistant"),
        TrajectoryEvent(
            EventKind.TOOL_CALL,
            tool_name="get_weather",
            arguments={"location": "Paris, France", "unit": "celsius"},
            tool_call_id=paris,
            role="assistant",
        ),
        TrajectoryEvent(
            EventKind.TOOL_RESULT,
            text='{"temperature": 14, "conditions": "light rain"}',
            tool_name="get_weather",
            tool_call_id=paris,
            role="user",
        ),
        TrajectoryEvent(EventKind.USER, text="Thanks! Also what time is it there?", role="user"),
        TrajectoryEvent(EventKind.TOOL_CALL, tool_name="get_time", arguments={}, tool_call_id=clock, role="assistant"),
        TrajectoryEvent(
            EventKind.TOOL_RESULT,
            text="clock service unavailable",
            tool_name="get_time",
            tool_call_id=clock,
            role="user",
            labels={"is_error": True},
        ),
        TrajectoryEvent(
            EventKind.ASSISTANT,
            text="Sorry, I couldn't get the time. It's 14 °C with light rain in Paris.",
            role="assistant",
        ),
        TrajectoryEvent(EventKind.USER, text="Now check Berlin and Zürich. Here's my itinerary:[image]", role="user"),
    )
    assert [(t.name, t.parameters is not None) for t in call.tools] == [
        ("get_weather", True),
        ("get_time", True),
        ("web_search", False),
    ]
    assert call.params == {
        "max_tokens": 4096,
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "user-1234"},
    }
    assert call.metadata == {"metadata": {"user_id": "user-1234"}}


def test_response_fixture() -> None:
    reply = messages.decode_response(load("anthropic_response.json"))
    assert reply.events == (
        # the thinking block is skipped
        TrajectoryEvent(EventKind.ASSISTANT, text="I'll check Berlin and Zürich — one moment ☀️", role="assistant"),
        TrajectoryEvent(
            EventKind.TOOL_CALL,
            tool_name="get_weather",
            arguments={"location": "Berlin, Germany", "unit": "celsius"},
            tool_call_id="toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            role="assistant",
        ),
        TrajectoryEvent(
            EventKind.TOOL_CALL,
            tool_name="get_weather",
            arguments={"location": "Zürich, Switzerland", "unit": "celsius"},
            tool_call_id="toolu_01Wq8Vb3Nm6Lk9Jh2Gf5Ds4a",
            role="assistant",
        ),
        TrajectoryEvent(
            EventKind.TOOL_CALL,
            tool_name="get_time",
            arguments={},
            tool_call_id="toolu_01Pl0Ok9Ij8Uh7Yg6Tf5Rd4e",
            role="assistant",
        ),
    )
    assert reply.usage == Usage(input_tokens=1472, output_tokens=189)
    assert (reply.response_id, reply.model, reply.finish_reason) == (
        "msg_01XFDUDYJgAACzvnptvVoYEL",
        "claude-sonnet-4-5-20250929",
        "tool_use",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        None,
        b"\x00",
        {"content": "x"},
    ],
)
def test_unexpected_response_gives_empty_reply(body: Any) -> None:
    assert messages.decode_response(body).events == ()


def test_response_continues_into_next_request() -> None:
    """The reply re-sent through the official SDK's ``to_param`` hashes like the reply."""
    body = load("anthropic_response.json")
    reply = messages.decode_response(body)
    param = Message.model_validate(body).to_param()
    resent = {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in param["content"]]}
    events = history({"role": "user", "content": "hi"}, resent)[1:]
    assert events == reply.events


def test_stream_equals_json_response() -> None:
    decoder = messages.stream_decoder()
    decoder.feed((WIRE / "anthropic_stream.sse").read_bytes())
    assert decoder.reply() == messages.decode_response(load("anthropic_response.json"))
    assert decoder.finished


def test_stream_split_at_every_byte() -> None:
    data = (WIRE / "anthropic_stream.sse").read_bytes()
    expected = messages.decode_response(load("anthropic_response.json"))
    tool_calls = list(expected.events[1:])
    for i in range(len(data) + 1):
        decoder = messages.stream_decoder()
        decoder.feed(data[:i])
        early = decoder.completed_tool_calls()
        decoder.feed(data[i:])
        assert decoder.reply() == expected, i
        assert early + decoder.completed_tool_calls() == tool_calls, i


def test_stream_one_byte_at_a_time() -> None:
    data = (WIRE / "anthropic_stream.sse").read_bytes()
    decoder = messages.stream_decoder()
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
    assert decoder.reply() == messages.decode_response(load("anthropic_response.json"))


def test_stream_with_crlf_line_endings() -> None:
    data = (WIRE / "anthropic_stream.sse").read_bytes().replace(b"\n", b"\r\n")
    decoder = messages.stream_decoder()
    decoder.feed(data)
    assert decoder.reply() == messages.decode_response(load("anthropic_response.json"))


def test_tool_use_completes_at_its_block_stop() -> None:
    data = (WIRE / "anthropic_stream.sse").read_bytes()
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    stops = [
        i
        for i, e in enumerate(events)
        if b'"content_block_stop","index":' in e and b'"index":0' not in e and b'"index":1' not in e
    ]
    decoder = messages.stream_decoder()
    released_at: list[int] = []
    for i, event in enumerate(events):
        decoder.feed(event)
        released_at += [i] * len(decoder.completed_tool_calls())
    assert released_at == stops


def test_cut_stream_replies_with_what_it_has() -> None:
    data = (WIRE / "anthropic_stream.sse").read_bytes()
    decoder = messages.stream_decoder()
    decoder.feed(data[: data.index(b'"index":3,"content_block"')])
    reply = decoder.reply()
    assert [e.kind for e in reply.events] == [EventKind.ASSISTANT, EventKind.TOOL_CALL]
    assert reply.finish_reason is None and reply.usage == Usage(1472, 4)
    assert not decoder.finished


def test_stream_never_raises_on_junk() -> None:
    decoder = messages.stream_decoder()
    for junk in [
        b'event: message_start\ndata: {"type":"message_start","message":[]}\n\n',
        b'data: {"type":"content_block_start","index":"0","content_block":{}}\n\n',
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":1}}\n\n',
        b'data: {"type":"content_block_stop","index":9}\n\n',
        b'data: {"type":"message_delta","delta":null,"usage":{"output_tokens":"x"}}\n\n',
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
        b"data: {\n\n",
    ]:
        decoder.feed(junk)
    assert decoder.reply().events == ()


# ---- canonical form


def test_string_and_text_blocks_hash_the_same() -> None:
    as_string = hashes({"role": "user", "content": "Hello world"}, system="Be brief.")
    as_blocks = hashes(
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]},
        system=[{"type": "text", "text": "Be brief."}],
    )
    assert as_string == as_blocks


def test_input_key_order_and_ids_do_not_matter() -> None:
    def turn(use_id: str, input: dict[str, Any]) -> list[str]:
        return hashes(
            {"role": "assistant", "content": [tool_use(use_id, "f", input)]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use_id, "content": "ok"}]},
        )

    assert turn("toolu_1", {"a": 1, "b": {"c": 2, "d": 3}}) == turn("toolu_2", {"b": {"d": 3, "c": 2}, "a": 1})
    assert turn("toolu_1", {"a": 1}) != turn("toolu_1", {"a": 2})


def test_thinking_blocks_do_not_change_the_hash() -> None:
    plain = hashes({"role": "assistant", "content": [{"type": "text", "text": "Hi"}]})
    thought = hashes(
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "Hi"}],
        }
    )
    assert plain == thought


def test_different_text_hashes_differently() -> None:
    assert hashes({"role": "user", "content": "yes"}) != hashes({"role": "user", "content": "no"})


# ---- mapping details


def test_blocks_keep_their_order() -> None:
    events = history(
        {"role": "assistant", "content": [tool_use("t1", "f", {}), tool_use("t2", "g", {})]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "before"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": [{"type": "text", "text": "G"}, {"type": "image", "source": {}}],
                },
                {"type": "tool_result", "tool_use_id": "t1"},
                {"type": "text", "text": "after"},
            ],
        },
    )
    assert [(e.kind, e.text, e.tool_name) for e in events] == [
        (EventKind.TOOL_CALL, None, "f"),
        (EventKind.TOOL_CALL, None, "g"),
        (EventKind.USER, "before", None),
        (EventKind.TOOL_RESULT, "G[image]", "g"),
        (EventKind.TOOL_RESULT, "", "f"),
        (EventKind.USER, "after", None),
    ]
    assert all(e.labels == {} for e in events)


def test_error_body_shape() -> None:
    assert messages.error_body("Denied", type="invalid_request_error", code="policy_denied") == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Denied", "code": "policy_denied"},
    }


# ---- bad requests

USER = {"role": "user", "content": "hi"}
BASE = {"model": "claude-sonnet-4-5", "max_tokens": 1024}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (7, "invalid_type", None),
        ({"max_tokens": 10, "messages": [USER]}, "missing_field", "model"),
        ({"model": "m", "messages": [USER]}, "missing_field", "max_tokens"),
        ({"model": "m", "max_tokens": "10", "messages": [USER]}, "invalid_type", "max_tokens"),
        ({**BASE}, "missing_field", "messages"),
        ({**BASE, "messages": USER}, "invalid_type", "messages"),
        ({**BASE, "messages": []}, "invalid_request", "messages"),
        ({**BASE, "messages": [None]}, "invalid_type", "messages[0]"),
        ({**BASE, "messages": [{"role": "tool", "content": "x"}]}, "invalid_request", "messages[0].role"),
        ({**BASE, "messages": [{"role": "user"}]}, "missing_field", "messages[0].content"),
        ({**BASE, "messages": [{"role": "user", "content": 3}]}, "invalid_type", "messages[0].content"),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "missing_field",
            "messages[0].content[0].type",
        ),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "missing_field",
            "messages[0].content[0].text",
        ),
        (
            {**BASE, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}]},
            "missing_field",
            "messages[0].content[0].name",
        ),
        (
            {
                **BASE,
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}
                ],
            },
            "invalid_type",
            "messages[0].content[0].input",
        ),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
            "missing_field",
            "messages[0].content[0].tool_use_id",
        ),
        (
            {
                **BASE,
                "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}],
            },
            "invalid_type",
            "messages[0].content[0].content",
        ),
        ({**BASE, "messages": [USER], "system": {"text": "x"}}, "invalid_type", "system"),
        ({**BASE, "messages": [USER], "system": [{"type": "text", "text": 1}]}, "invalid_type", "system[0].text"),
        ({**BASE, "messages": [USER], "tools": [{"input_schema": {}}]}, "missing_field", "tools[0].name"),
        (
            {**BASE, "messages": [USER], "tools": [{"name": "f", "input_schema": "x"}]},
            "invalid_type",
            "tools[0].input_schema",
        ),
        ({**BASE, "messages": [USER], "tools": ["f"]}, "invalid_type", "tools[0]"),
        ({**BASE, "messages": [USER], "stream": "true"}, "invalid_type", "stream"),
    ],
)
def test_bad_request(body: Any, code: str, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        messages.decode_request(copy.deepcopy(body))
    assert (info.value.code, info.value.param) == (code, param)
    assert info.value.message and (param is None or param in info.value.message)
