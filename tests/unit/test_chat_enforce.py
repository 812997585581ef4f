"""ChatEnforcer: policy verdicts applied to Chat Completions replies, checked by the real SDK.

Every filtered stream is served from a local aiohttp server and read back with
the official ``openai`` client, both as raw chunks and through the
``chat.completions.stream`` helper that accumulates tool calls by index, so a
gap in the indexes, a bad finish reason or a malformed chunk fails here the way
it would fail an agent.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from adapters.chat_enforce import ChatEnforcer, ChatStreamFilter
from adapters.edits import ALLOW, ActionEdit, Enforcer, StreamFilter, TextEdit
from adapters.model import Call, EventKind, TrajectoryEvent
from adapters.openai_chat import ChatAdapter
from proxy.scripted_model import ToolCallSpec, Turn, chat_completion, chat_stream
from tests.conftest import LoopThread, start_app

WIRE = pathlib.Path(__file__).parents[1] / "fixtures" / "wire"
enforcer = ChatEnforcer()
chat = ChatAdapter()
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
    for name in ("get_weather", "send_email", "read_file")
]
WEATHER = ToolCallSpec("get_weather", {"city": "Zürich", "unit": "celsius"})
EMAIL = ToolCallSpec("send_email", {"to": "ana@example.com", "body": "Forecast attached 🌦️"})
READ = ToolCallSpec("read_file", {"path": "/etc/hosts"})


@dataclass
class Scenario:
    completion: dict[str, Any]
    stream: bytes

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self.completion["choices"][0]["message"].get("tool_calls") or []


def scripted(turn: Turn, chunks: int = 4, **body: Any) -> Scenario:
    request = {"model": "gpt-4o", **body}
    completion = chat_completion(turn, request)
    return Scenario(completion, b"".join(chat_stream(completion, request, chunks)))


SCENARIOS = {
    "text": scripted(Turn(text="Grüße aus Zürich 🌦️, it is 9 °C.")),
    "one_call": scripted(Turn(tool_calls=(WEATHER,))),
    "parallel": scripted(Turn(tool_calls=(WEATHER, EMAIL, READ)), chunks=3),
    "text_and_calls": scripted(
        Turn(text="Let me check that and tell Ana.", tool_calls=(WEATHER, EMAIL)),
        stream_options={"include_usage": True},
    ),
    "recorded": Scenario(  # OpenAI puts the role and the first call in one chunk, and sends usage last
        orjson.loads((WIRE / "chat_response_tools.json").read_bytes()), (WIRE / "chat_stream_tools.sse").read_bytes()
    ),
}


def deny(n: int) -> ActionEdit:
    return ActionEdit("deny", message=f"Denied by rule no_{n}: the policy forbids this call.")


PATCH = ActionEdit("patch", arguments={"path": "/tmp/safe", "note": "redacted ✂"})


def edit_sets(count: int) -> dict[str, list[ActionEdit]]:
    sets = {"allow": [ALLOW] * count}
    if count:
        sets["deny_first"] = [deny(0)] + [ALLOW] * (count - 1)
        sets["deny_all"] = [deny(i) for i in range(count)]
        sets["patch_first"] = [PATCH] + [ALLOW] * (count - 1)
    if count > 1:
        sets["deny_second"] = [ALLOW, deny(1)] + [ALLOW] * (count - 2)
        sets["patch_and_deny"] = [PATCH] + [deny(i) for i in range(1, count)]
    return sets


CASES = [
    pytest.param(name, edits, id=f"{name}-{label}")
    for name, scenario in SCENARIOS.items()
    for label, edits in edit_sets(len(scenario.calls)).items()
]


@dataclass
class Expected:
    content: str | None
    calls: list[tuple[str, str, str]]  # id, name, arguments as sent
    finish: str


def expected(scenario: Scenario, edits: list[ActionEdit]) -> Expected:
    text = scenario.completion["choices"][0]["message"]["content"]
    calls, refusals = [], []
    for call, edit in zip(scenario.calls, edits, strict=True):
        function = call["function"]
        if edit.verdict == "deny":
            refusals.append(edit.message)
            continue
        arguments = function["arguments"] if edit.verdict == "allow" else orjson.dumps(edit.arguments).decode()
        calls.append((call["id"], function["name"], arguments))
    content = "\n\n".join(p for p in [text, *refusals] if p) if refusals else text
    finish = "tool_calls" if calls else "stop"
    return Expected(content, calls, finish)


# ---- driving the filter as the proxy does ----------------------------------------


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def run(chunks: Iterator[bytes] | list[bytes], edits: list[ActionEdit]) -> tuple[bytes, list[Any]]:
    """Feed, drain, decide, close, drain. Returns the output and the trace of next() results."""
    f = enforcer.stream_filter()
    todo = iter(edits)
    trace: list[Any] = []

    def drain() -> None:
        while (item := f.next()) is not None:
            trace.append(item)
            if isinstance(item, TrajectoryEvent):
                assert f.next() is None, "nothing may leave while a tool call awaits its decision"
                f.decide(next(todo))

    for chunk in chunks:
        f.feed(chunk)
        drain()
    f.close()
    drain()
    assert next(todo, None) is None, "every edit was used"
    return b"".join(i for i in trace if isinstance(i, bytes)), trace


def tool_events(events: tuple[TrajectoryEvent, ...] | list[Any]) -> list[TrajectoryEvent]:
    return [e for e in events if isinstance(e, TrajectoryEvent) and e.kind == EventKind.TOOL_CALL]


# ---- the SDK side: a local server that answers with given bytes -------------------


class ReplyServer:
    def __init__(self, loop: LoopThread) -> None:
        self.reply: tuple[bytes, bool] = (b"", False)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner, base = loop.run(start_app(app))
        self.client = openai.OpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0, timeout=10)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        body, stream = self.reply
        if not stream:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces(body, 97):  # the SDK must cope with events split across reads
            await response.write(piece)
        await response.write_eof()
        return response

    def stream_chunks(self, body: bytes) -> list[ChatCompletionChunk]:
        self.reply = (body, True)
        stream = self.client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS, stream=True)
        return [ChatCompletionChunk.model_validate(chunk.to_dict()) for chunk in stream]

    def stream_final(self, body: bytes) -> Any:
        self.reply = (body, True)
        with self.client.chat.completions.stream(model="gpt-4o", messages=MESSAGES, tools=TOOLS) as stream:
            for _ in stream:
                pass
            return stream.get_final_completion()

    def complete(self, body: dict[str, Any]) -> ChatCompletion:
        self.reply = (orjson.dumps(body), False)
        return self.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)


MESSAGES: list[Any] = [{"role": "user", "content": "Weather in Zürich, then mail Ana."}]


@pytest.fixture(scope="module")
def server(loop_thread: LoopThread) -> Iterator[ReplyServer]:
    s = ReplyServer(loop_thread)
    yield s
    loop_thread.run(s.runner.cleanup())


def accumulate(chunks: list[ChatCompletionChunk]) -> Expected:
    """What an agent reading raw chunks rebuilds; tool-call indexes must run 0, 1, 2 ... in order."""
    content: str | None = None
    calls: list[list[str]] = []
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content is not None:
                content = (content or "") + delta.content
            for piece in delta.tool_calls or ():
                assert piece.index <= len(calls), f"tool call index {piece.index} skips one"
                if piece.index == len(calls):
                    calls.append(["", "", ""])
                call = calls[piece.index]
                call[0] += piece.id or ""
                if piece.function is not None:
                    call[1] += piece.function.name or ""
                    call[2] += piece.function.arguments or ""
            finish = choice.finish_reason or finish
    return Expected(content, [(c[0], c[1], c[2]) for c in calls], finish or "")


def assert_client_sees(server: ReplyServer, body: bytes, want: Expected) -> None:
    assert accumulate(server.stream_chunks(body)) == want
    final = server.stream_final(body)
    choice = final.choices[0]
    got_calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or ()]
    assert (choice.message.content, got_calls, choice.finish_reason) == (want.content, want.calls, want.finish)
    decoder = chat.stream_decoder()
    decoder.feed(body)
    reply = decoder.reply()
    decoded = [(e.tool_call_id, e.tool_name, e.arguments) for e in tool_events(reply.events)]
    assert decoded == [(i, n, orjson.loads(a)) for i, n, a in want.calls]
    text = "".join(e.text or "" for e in reply.events if e.kind == EventKind.ASSISTANT)
    assert (text, reply.finish_reason) == (want.content or "", want.finish)


# ---- streams -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "edits"), CASES)
def test_stream_edits_reach_the_sdk(server: ReplyServer, name: str, edits: list[ActionEdit]) -> None:
    scenario = SCENARIOS[name]
    out, trace = run([scenario.stream], edits)
    assert tool_events(trace) == tool_events(chat.decode_response(scenario.completion).events)
    for size in (1, 5, 64, 333):  # however upstream splits the bytes, the client gets the same stream
        assert run(pieces(scenario.stream, size), edits)[0] == out
    if all(edit.verdict == "allow" for edit in edits):
        assert out == scenario.stream
    assert_client_sees(server, out, expected(scenario, edits))


def events_of(stream: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in stream.split(b"\n\n") if event]


def test_text_flows_before_the_call_is_complete_or_decided() -> None:
    events = events_of(SCENARIOS["text_and_calls"].stream)
    texts = [e for e in events if b'"content":"' in e and b"tool_calls" not in e]
    f = enforcer.stream_filter()
    order: list[Any] = []
    for event in events:
        f.feed(event)
        first = f.next()
        if event in texts:
            assert first == event, "a text delta leaves at once, as the same bytes"
        item = first
        while item is not None:
            order.append(item)
            if isinstance(item, TrajectoryEvent):
                f.decide(ALLOW)
            item = f.next()
    first_call = next(i for i, item in enumerate(order) if isinstance(item, TrajectoryEvent))
    assert b"".join(i for i in order[:first_call] if isinstance(i, bytes)).count(b'"content":"') == len(texts)
    assert b"".join(i for i in order if isinstance(i, bytes)) == SCENARIOS["text_and_calls"].stream


def test_a_tool_call_is_held_until_complete_then_until_decided() -> None:
    events = events_of(SCENARIOS["parallel"].stream)
    second = next(i for i, e in enumerate(events) if b'"id":"call_' in e and b'"index":1' in e)
    f = enforcer.stream_filter()
    f.feed(events[0])
    assert f.next() == events[0]  # the role chunk carries no tool data
    for event in events[1:second]:
        f.feed(event)
        assert f.next() is None, "a call's deltas stay held while it is incomplete"
    f.feed(events[second])  # the next call starts and the first one's JSON is whole: it is complete
    call = f.next()
    assert isinstance(call, TrajectoryEvent) and call.tool_name == "get_weather"
    assert (call.arguments, call.tool_call_id) == (WEATHER.arguments, SCENARIOS["parallel"].calls[0]["id"])
    assert f.next() is None
    f.decide(ALLOW)
    assert f.next() == b"".join(events[1:second])  # released as the original bytes
    assert f.next() is None  # the second call's first chunk is held
    with pytest.raises(RuntimeError):
        f.decide(ALLOW)


def test_a_stream_cut_mid_call_is_released_as_it_came() -> None:
    stream = SCENARIOS["parallel"].stream
    cut = stream.index(b'"index":2,"function":{"arguments"') + 20  # inside the third call's arguments, mid-event
    out, trace = run(pieces(stream[:cut], 50), [ALLOW, ALLOW])
    assert out == stream[:cut]
    out, _ = run(pieces(stream[:cut], 50), [deny(0), ALLOW])
    decoder = chat.stream_decoder()
    decoder.feed(out)
    calls = tool_events(decoder.reply().events)
    assert [c.tool_name for c in calls] == ["send_email", "read_file"]  # renumbered 0, 1; the cut one held nothing back
    complete, partial = out.rsplit(b"\n\n", 1)
    assert b'"index":2' not in complete and partial == stream[stream.rindex(b"\n\n", 0, cut) + 2 : cut]


def test_crlf_streams() -> None:
    stream = SCENARIOS["text_and_calls"].stream.replace(b"\n", b"\r\n")
    assert run(pieces(stream, 7), [ALLOW, ALLOW])[0] == stream
    out, _ = run(pieces(stream, 7), [deny(0), ALLOW])
    assert out == run([stream], [deny(0), ALLOW])[0]
    decoder = chat.stream_decoder()
    decoder.feed(out)
    assert [c.tool_name for c in tool_events(decoder.reply().events)] == ["send_email"]


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return b"data: " + orjson.dumps({**body, "choices": [choice]}) + b"\n\n"


def piece(index: int, arguments: str, name: str | None = None) -> dict[str, Any]:
    head = {"id": f"call_{index}", "type": "function"} if name else {}
    return {"index": index, **head, "function": {**({"name": name} if name else {}), "arguments": arguments}}


# Some servers (vLLM, gateways) send several calls in one chunk and the last piece with the finish reason.
PACKED = b"".join(
    [
        chunk({"role": "assistant", "content": "Two things."}),
        chunk({"tool_calls": [piece(0, '{"city":"Bern"}', "get_weather"), piece(1, '{"to":', "send_email")]}),
        chunk({"tool_calls": [piece(1, '"bo@example.com"}')]}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]
)


BERN = ("call_0", "get_weather", '{"city":"Bern"}')
BO = ("call_1", "send_email", '{"to":"bo@example.com"}')


@pytest.mark.parametrize(
    ("edits", "want"),
    [
        ([ALLOW, ALLOW], [BERN, BO]),
        ([deny(0), ALLOW], [BO]),
        ([ALLOW, PATCH], [BERN, (*BO[:2], orjson.dumps(PATCH.arguments).decode())]),
        ([deny(0), deny(1)], []),
    ],
)
def test_packed_calls(server: ReplyServer, edits: list[ActionEdit], want: list[tuple[str, str, str]]) -> None:
    out, trace = run(pieces(PACKED, 11), edits)
    assert [e.arguments for e in tool_events(trace)] == [{"city": "Bern"}, {"to": "bo@example.com"}]
    refusals = [e.message or "" for e in edits if e.verdict == "deny"]
    content = "\n\n".join(["Two things.", *refusals])
    assert_client_sees(server, out, Expected(content, want, "tool_calls" if want else "stop"))


def test_pieces_after_a_call_is_complete_are_dropped() -> None:
    stream = b"".join(
        [
            chunk({"role": "assistant", "content": None, "tool_calls": [piece(0, '{"path":"/tmp/a"}', "read_file")]}),
            chunk({"tool_calls": [piece(1, "{}", "get_weather")]}),  # call 0 is whole JSON: judged now
            chunk({"tool_calls": [piece(0, '{"path":"/etc/passwd"}')]}),  # ...so this may not reach the client
            chunk({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    out, trace = run([stream], [ALLOW, ALLOW])
    assert [e.arguments for e in tool_events(trace)] == [{"path": "/tmp/a"}, {}]
    assert b"passwd" not in out
    decoder = chat.stream_decoder()
    decoder.feed(out)
    assert [e.arguments for e in tool_events(decoder.reply().events)] == [{"path": "/tmp/a"}, {}]


def test_escaped_keys_cannot_slip_a_call_past_the_filter() -> None:
    sneaky = chunk({"tool_calls": [piece(0, '{"cmd":"rm -rf /"}', "shell")]})
    sneaky = sneaky.replace(b'"tool_calls"', b'"tool\\u005fcalls"')  # the same JSON to a parser
    stream = chunk({"role": "assistant", "content": "ok"}) + sneaky + chunk({}, "tool_calls") + b"data: [DONE]\n\n"
    out, trace = run([stream], [deny(0)])
    assert [e.arguments for e in tool_events(trace)] == [{"cmd": "rm -rf /"}]
    assert b"rm -rf" not in out and b'"finish_reason":"stop"' in out


# A name (and id) streamed in pieces: the SDK joins them, so the policy must judge the joined name,
# and the client gets the call named once, as judged, whatever way it reads pieces.
SPLIT_NAME = b"".join(
    [
        chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_", "type": "function", "function": {"name": "send_", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "7", "function": {"name": "email", "arguments": '{"to":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"eve@evil.example"}'}}]}),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]
)


@pytest.mark.parametrize("size", [7, 1000])
def test_a_name_streamed_in_pieces_is_judged_joined(server: ReplyServer, size: int) -> None:
    out, trace = run(pieces(SPLIT_NAME, size), [deny(0)])
    assert [(e.tool_call_id, e.tool_name) for e in tool_events(trace)] == [("call_7", "send_email")]
    assert b"evil" not in out and b"send_" not in out
    assert_client_sees(server, out, Expected("Denied by rule no_0: the policy forbids this call.", [], "stop"))


def test_a_name_streamed_in_pieces_reaches_the_client_once_as_judged(server: ReplyServer) -> None:
    out, _ = run(pieces(SPLIT_NAME, 13), [ALLOW])
    named = [p for e in events_of(out) if e.startswith(b"data: {")
             for p in orjson.loads(e[6:])["choices"][0]["delta"].get("tool_calls") or ()
             if "id" in p or "name" in p.get("function", {})]
    assert [(p["id"], p["function"]["name"]) for p in named] == [("call_7", "send_email")]
    assert_client_sees(server, out, Expected(None, [("call_7", "send_email", '{"to":"eve@evil.example"}')], "tool_calls"))


def test_a_name_repeated_in_every_piece_is_one_name() -> None:
    stream = b"".join([
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path":'}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "read_file", "arguments": '"/tmp/a"}'}}]}),
        chunk({}, "tool_calls"), b"data: [DONE]\n\n"])
    out, trace = run([stream], [ALLOW])
    assert [(e.tool_call_id, e.tool_name) for e in tool_events(trace)] == [("call_1", "read_file")]
    assert out.count(b'"read_file"') == 1 and out.count(b'"call_1"') == 1


def test_a_function_call_with_a_custom_field_is_judged_as_the_function_it_is() -> None:
    """The SDKs read a call by its type: a stray `custom` object on a function call must not
    make the policy see free text while the agent runs the function."""
    stream = chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "custom": {"name": "x"},
                                     "function": {"name": "shell", "arguments": '{"command":"rm -rf ~/"}'}}]}) \
        + chunk({}, "tool_calls") + b"data: [DONE]\n\n"
    out, trace = run([stream], [deny(0)])
    (event,) = tool_events(trace)
    assert (event.tool_name, event.arguments, event.labels) == ("shell", {"command": "rm -rf ~/"}, {})
    assert b"rm -rf" not in out


@pytest.mark.parametrize("index", ["0", None, True, 0.0])
def test_a_piece_no_integer_index_places_never_reaches_the_client(server: ReplyServer, index: Any) -> None:
    """The decoder cannot place it, so nothing judges it; SDKs would read "0" or null as call 0."""
    stream = chunk({"role": "assistant", "content": "ok", "tool_calls": [
        {"index": index, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": '{"command":"rm -rf ~/"}'}}]}) \
        + chunk({}, "stop") + b"data: [DONE]\n\n"
    out, trace = run([stream], [])
    assert tool_events(trace) == [] and b"rm -rf" not in out and b"tool_calls" not in out
    assert_client_sees(server, out, Expected("ok", [], "stop"))


def test_a_call_the_sdks_could_read_two_ways_is_sent_on_as_judged(server: ReplyServer) -> None:
    """A legacy function_call beside tool_calls, a custom type over a function object, arguments
    sent as an object, events after [DONE]: each client reads the call the policy judged, or none."""
    bash = {"name": "bash", "arguments": '{"command":"rm -rf /"}'}
    beside = chunk({"function_call": {"name": "read_file", "arguments": '{"path":"a"}'},
                    "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": bash}]})
    out, trace = run([beside + chunk({}, "tool_calls") + b"data: [DONE]\n\n"], [deny(0)])
    assert [e.tool_name for e in tool_events(trace)] == ["bash"] and b"rm -rf" not in out and b"function_call" not in out

    typed_custom = chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "custom", "function": bash}]})
    out, trace = run([typed_custom + chunk({}, "tool_calls") + b"data: [DONE]\n\n"], [ALLOW])
    (event,) = tool_events(trace)
    assert (event.tool_name, event.arguments, event.labels) == ("bash", {"command": "rm -rf /"}, {})
    assert b'"type":"custom"' not in out
    assert_client_sees(server, out, Expected(None, [("call_1", "bash", '{"command":"rm -rf /"}')], "tool_calls"))

    as_object = chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                       "function": {"name": "bash", "arguments": {"command": "rm -rf /"}}}]})
    _, trace = run([as_object + chunk({}, "tool_calls") + b"data: [DONE]\n\n"], [ALLOW])
    assert [e.arguments for e in tool_events(trace)] == [{"command": "rm -rf /"}]

    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": [{"index": 0,
                  "message": {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "call_1", "type": "custom", "function": bash}]}, "finish_reason": "tool_calls"}]}
    (event,) = tool_events(list(chat.decode_response(completion).events))
    assert (event.tool_name, event.arguments) == ("bash", {"command": "rm -rf /"})
    (sent,) = enforcer.rewrite_response(completion, [ALLOW], None)["choices"][0]["message"]["tool_calls"]
    assert sent["type"] == "function" and sent["function"] == bash

    after = chunk({"content": "done"}, "stop") + b"data: [DONE]\n\n" + chunk(
        {"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": bash}]})
    out, trace = run([after], [])
    assert tool_events(trace) == [] and b"rm -rf" not in out


def test_another_choice_never_reaches_the_client(server: ReplyServer) -> None:
    """Requests for n > 1 are refused, so a second choice is something no policy saw: it is dropped,
    with its tool calls, its text and its finish, from streams and JSON replies alike."""
    second = {"index": 1, "delta": {"tool_calls": [piece(0, '{"cmd":"rm -rf /"}', "shell")]}, "logprobs": None,
              "finish_reason": None}
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    both = {**head, "choices": [{"index": 0, "delta": {"content": "Hello"}, "logprobs": None, "finish_reason": None},
                                {**second, "delta": {"content": "psst"}}]}
    text_only = {**head, "choices": [{**second, "delta": {"content": " and psst"}}]}  # one "index": the fast path's case
    stream = b"".join([
        chunk({"role": "assistant", "content": "Hi."}),
        b"data: " + orjson.dumps(both) + b"\n\n",
        b"data: " + orjson.dumps({**head, "choices": [second]}) + b"\n\n",
        b"data: " + orjson.dumps(text_only) + b"\n\n",
        chunk({}, "stop"), b"data: [DONE]\n\n"])
    for size in (5, 10_000):
        out, trace = run(pieces(stream, size), [])
        assert b"rm -rf" not in out and b"psst" not in out and b'"index":1' not in out
        assert tool_events(trace) == []
        assert_client_sees(server, out, Expected("Hi.Hello", [], "stop"))
    completion = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "shell", "arguments": '{"cmd":"rm -rf /"}'}}]},
         "finish_reason": "tool_calls"}]}
    rewritten = enforcer.rewrite_response(completion, [], None)
    assert [c["index"] for c in rewritten["choices"]] == [0] and completion["choices"][1]["index"] == 1
    untouched = {**completion, "choices": completion["choices"][:1]}
    assert enforcer.rewrite_response(untouched, [], None) is untouched
    first_null = {**completion, "choices": [None, completion["choices"][1]]}
    assert b"rm -rf" not in orjson.dumps(enforcer.rewrite_response(first_null, [], None))


def test_legacy_function_call_stream() -> None:
    stream = b"".join(
        [
            chunk({"role": "assistant", "content": None, "function_call": {"name": "read_file", "arguments": ""}}),
            chunk({"function_call": {"arguments": '{"path":'}}),
            chunk({"function_call": {"arguments": '"/etc/shadow"}'}}),
            chunk({}, "function_call"),
            b"data: [DONE]\n\n",
        ]
    )
    out, trace = run(pieces(stream, 13), [PATCH])
    assert [e.arguments for e in tool_events(trace)] == [{"path": "/etc/shadow"}]
    decoder = chat.stream_decoder()
    decoder.feed(out)
    assert [e.arguments for e in tool_events(decoder.reply().events)] == [PATCH.arguments]
    out, _ = run([stream], [deny(0)])
    decoder = chat.stream_decoder()
    decoder.feed(out)
    reply = decoder.reply()
    assert (tool_events(reply.events), reply.finish_reason) == ([], "stop")


# ---- whole replies -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "edits"), CASES)
def test_rewrite_response(server: ReplyServer, name: str, edits: list[ActionEdit]) -> None:
    body = SCENARIOS[name].completion
    before = copy.deepcopy(body)
    out = enforcer.rewrite_response(body, edits, None)
    assert body == before, "the input is never mutated"
    if all(edit.verdict == "allow" for edit in edits):
        assert out is body
    want = expected(SCENARIOS[name], edits)
    message = ChatCompletion.model_validate(out).choices[0].message
    got = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()]  # type: ignore[union-attr]
    assert (message.content, got, out["choices"][0]["finish_reason"]) == (want.content, want.calls, want.finish)
    assert ("tool_calls" in out["choices"][0]["message"]) == bool(want.calls)
    sdk = server.complete(out).choices[0]
    assert (sdk.message.content, sdk.finish_reason) == (want.content, want.finish)
    reply = chat.decode_response(out)
    assert [(e.tool_call_id, e.tool_name, e.arguments) for e in tool_events(reply.events)] == [
        (i, n, orjson.loads(a)) for i, n, a in want.calls
    ]


def test_text_edit_replaces_the_text_and_keeps_refusals_after_it() -> None:
    body = SCENARIOS["text_and_calls"].completion
    out = enforcer.rewrite_response(body, [deny(0), ALLOW], TextEdit("[redacted]"))
    message = ChatCompletion.model_validate(out).choices[0].message
    assert message.content == "[redacted]\n\n" + (deny(0).message or "")
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    text_only = enforcer.rewrite_response(SCENARIOS["text"].completion, [], TextEdit("No."))
    assert [e.text for e in chat.decode_response(text_only).events] == ["No."]


def test_rewrite_response_rejects_edits_that_do_not_match_the_calls() -> None:
    with pytest.raises(ValueError):
        enforcer.rewrite_response(SCENARIOS["parallel"].completion, [ALLOW], None)
    with pytest.raises(ValueError):
        enforcer.rewrite_response(SCENARIOS["text"].completion, [ALLOW], None)


def test_rewrite_legacy_function_call() -> None:
    body = SCENARIOS["text"].completion
    message = {"role": "assistant", "content": None, "function_call": {"name": "read_file", "arguments": "{}"}}
    body = {**body, "choices": [{"index": 0, "message": message, "finish_reason": "function_call", "logprobs": None}]}
    out = enforcer.rewrite_response(body, [ActionEdit("deny", message="no")], None)
    assert out["choices"][0]["finish_reason"] == "stop"
    assert "function_call" not in out["choices"][0]["message"] and "function_call" in message
    assert ChatCompletion.model_validate(out).choices[0].message.content == "no"


# ---- refusals before the model -----------------------------------------------------


def refused_call(**params: Any) -> Call:
    return Call(api="chat", model="gpt-4o-mini", stream=True, history=(), params=params)


def test_text_reply(server: ReplyServer) -> None:
    body = enforcer.text_reply(refused_call(), "Blocked by rule no_secrets.")
    completion = ChatCompletion.model_validate(body)
    assert (completion.model, completion.choices[0].message.content) == ("gpt-4o-mini", "Blocked by rule no_secrets.")
    assert completion.usage is not None and completion.usage.total_tokens == 0
    assert server.complete(body).choices[0].finish_reason == "stop"
    assert [e.text for e in chat.decode_response(body).events] == ["Blocked by rule no_secrets."]


@pytest.mark.parametrize("include_usage", [False, True])
def test_text_reply_stream(server: ReplyServer, include_usage: bool) -> None:
    call = refused_call(stream_options={"include_usage": include_usage})
    stream = enforcer.text_reply_stream(call, "Blocked: ünïcode ✓")
    assert_client_sees(server, stream, Expected("Blocked: ünïcode ✓", [], "stop"))
    chunks = server.stream_chunks(stream)
    assert {c.model for c in chunks} == {"gpt-4o-mini"} and len({c.id for c in chunks}) == 1
    usage = [c.usage for c in chunks if c.usage is not None]
    assert [u.total_tokens for u in usage] == ([0] if include_usage else [])


def test_it_is_the_enforcer_of_the_contract() -> None:
    checked: Enforcer = ChatEnforcer()  # mypy checks the shapes against the Protocols
    stream_filter: StreamFilter = checked.stream_filter()
    assert isinstance(stream_filter, ChatStreamFilter)
    assert checked.stream_filter() is not stream_filter, "one filter per stream"
