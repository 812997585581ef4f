"""Messages enforcement: edited replies and streams must stay valid for the real
Anthropic SDK, and say exactly what the verdicts said.

Every stream is fed to the filter in awkward pieces, driven the way the proxy
drives it, and the output is served from a local aiohttp server to the official
SDK (``messages.stream`` and ``messages.create(stream=True)``)."""

from __future__ import annotations

import copy
import json
import pathlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web
from anthropic.types import Message

from adapters.anthropic_messages import MessagesAdapter
from adapters.edits import ALLOW, ActionEdit, TextEdit
from adapters.messages_enforce import MessagesEnforcer
from adapters.model import Call, EventKind, TrajectoryEvent
from proxy.scripted_model import ToolCallSpec, Turn, anthropic_message, messages_stream

from ..conftest import LoopThread, start_app

WIRE = pathlib.Path(__file__).parents[1] / "fixtures" / "wire"
ENFORCER = MessagesEnforcer()
ADAPTER = MessagesAdapter()
REQUEST: Any = {"model": "claude-test", "max_tokens": 256, "messages": [{"role": "user", "content": "go"}]}
CALL = Call(api="messages", model="claude-test", stream=True, history=())

READ = ToolCallSpec("read_file", {"path": "notes/ünïcode.txt", "lines": [1, 2]})
SEARCH = ToolCallSpec("search", {"query": 'say "hi" 🌍'})


def scripted(turn: Turn) -> tuple[dict[str, Any], bytes]:
    """A scripted reply and its stream, with the same ids."""
    message = anthropic_message(turn, REQUEST)
    return message, b"".join(messages_stream(message, REQUEST, 4))


SCENARIOS: dict[str, tuple[dict[str, Any], bytes]] = {
    "text": scripted(Turn(text="Hello there — ünïcode 🌍 and more")),
    "one-call": scripted(Turn(tool_calls=(READ,))),
    "parallel": scripted(Turn(tool_calls=(READ, SEARCH))),
    "text+calls": scripted(Turn(text="Let me look.", tool_calls=(READ, SEARCH))),
    # A captured stream: thinking, text, three calls (the last with empty input).
    "wire": (
        orjson.loads((WIRE / "anthropic_response.json").read_bytes()),
        (WIRE / "anthropic_stream.sse").read_bytes(),
    ),
}


def deny(n: int) -> ActionEdit:
    return ActionEdit("deny", message=f"Denied by rule no_{n}: not allowed here.")


PATCHED = {"path": "safe/ünïcode.txt", "redacted": True}
EDITS: dict[str, Any] = {
    "allow": lambda n: [ALLOW] * n,
    "deny-first": lambda n: [deny(0)] + [ALLOW] * (n - 1),
    "deny-second": lambda n: [ALLOW, deny(1)] + [ALLOW] * (n - 2),
    "deny-all": lambda n: [deny(i) for i in range(n)],
    "patch": lambda n: [ActionEdit("patch", arguments=PATCHED)] + [ALLOW] * (n - 1),
    "patch+deny": lambda n: [ActionEdit("patch", arguments=PATCHED), deny(1)] + [ALLOW] * (n - 2),
}


def calls_in(message: dict[str, Any]) -> int:
    return sum(block["type"] == "tool_use" for block in message["content"])


CASES = [
    pytest.param(scenario, edit, id=f"{scenario}-{edit}")
    for scenario, (message, _) in SCENARIOS.items()
    for edit in EDITS
    if calls_in(message) >= {"allow": 0, "deny-second": 2, "patch+deny": 2}.get(edit, 1)
]


# ---- what the client must see -------------------------------------------------


def summary(content: list[Any]) -> list[tuple[Any, ...]]:
    """Content blocks (SDK models or dicts) as comparable tuples."""
    out: list[tuple[Any, ...]] = []
    for block in content:
        b = block if isinstance(block, dict) else block.model_dump()
        if b["type"] == "tool_use":
            out.append(("tool_use", b["id"], b["name"], b["input"]))
        elif b["type"] == "text":
            out.append(("text", b["text"]))
        else:
            out.append((b["type"],))
    return out


def expected(message: dict[str, Any], edits: list[ActionEdit]) -> tuple[list[tuple[Any, ...]], str]:
    """The spec: each denied call becomes its refusal (a new paragraph after any
    text) in place; a patched call keeps its id and name; end_turn when no call is left."""
    out: list[tuple[Any, ...]] = []
    verdicts = iter(edits)
    text_before = kept = False
    for block in summary(message["content"]):
        if block[0] == "tool_use":
            edit = next(verdicts)
            if edit.verdict == "deny":
                out.append(("text", ("\n\n" if text_before else "") + str(edit.message)))
                text_before = True
                continue
            kept = True
            if edit.verdict == "patch":
                block = (*block[:3], edit.arguments)
        text_before = text_before or block[0] == "text"
        out.append(block)
    stop = "tool_use" if kept else "end_turn"
    return out, stop


# ---- driving the filter like the proxy ----------------------------------------


@dataclass
class Filtered:
    output: bytes
    log: list[bytes | TrajectoryEvent]

    @property
    def calls(self) -> list[TrajectoryEvent]:
        return [item for item in self.log if isinstance(item, TrajectoryEvent)]


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def run_filter(chunks: Iterator[bytes] | list[bytes], edits: list[ActionEdit], *, close: bool = True) -> Filtered:
    f = ENFORCER.stream_filter()
    log: list[bytes | TrajectoryEvent] = []
    verdicts = iter(edits)

    def drain() -> None:
        while (item := f.next()) is not None:
            log.append(item)
            if isinstance(item, TrajectoryEvent):
                assert f.next() is None, "nothing may pass a call awaiting its verdict"
                f.decide(next(verdicts))

    for chunk in chunks:
        f.feed(chunk)
        drain()
    if close:
        f.close()
        drain()
    assert next(verdicts, None) is None, "every edit must have been asked for"
    return Filtered(b"".join(item for item in log if isinstance(item, bytes)), log)


def sse_events(stream: bytes) -> list[bytes]:
    """The stream cut into whole events, each with its own line ends."""
    return [part for part in re.split(rb"(?<=\r\n\r\n)|(?<=\n\n)|(?<=\r\r)", stream) if part]


def untouched(stream: bytes) -> list[bytes]:
    """The events that carry no tool-call data (and are not the final message_delta)."""
    out: list[bytes] = []
    tool_blocks: set[int] = set()
    for event in sse_events(stream):
        data = orjson.loads(re.search(rb"data: ?([^\r\n]*)", event)[1])  # type: ignore[index]
        if data["type"] == "content_block_start" and data["content_block"]["type"] == "tool_use":
            tool_blocks.add(data["index"])
        if data.get("index") not in tool_blocks and data["type"] != "message_delta":
            out.append(event)
    return out


def in_order(events: list[bytes], stream: bytes) -> bool:
    """``events`` are whole events of ``stream``, byte for byte, in this order."""
    rest = iter(sse_events(stream))
    return all(any(event == other for other in rest) for event in events)


# ---- the real SDK against a local server --------------------------------------


@dataclass
class Served:
    """What the local server answers next."""

    stream: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def sdk(loop_thread: LoopThread) -> Iterator[tuple[anthropic.Anthropic, Served]]:
    served = Served()

    async def messages(request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.json_response(served.body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for piece in pieces(served.stream, 333):
            await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner, root = loop_thread.run(start_app(app))
    client = anthropic.Anthropic(base_url=root, api_key="x", max_retries=0, timeout=10)
    yield client, served
    client.close()
    loop_thread.run(runner.cleanup())


def parse_stream(sdk: tuple[anthropic.Anthropic, Served], stream: bytes) -> tuple[Message, list[Any]]:
    """The SDK's final message from messages.stream, and the raw events of create(stream=True)."""
    client, served = sdk
    served.stream = stream
    with client.messages.stream(**REQUEST) as s:
        for _ in s:
            pass
        final = s.get_final_message()
    raw = list(client.messages.create(**REQUEST, stream=True))
    return final, raw


def rebuild(raw: list[Any]) -> tuple[list[dict[str, Any]], str | None]:
    """What a client reading create(stream=True) itself ends up with."""
    blocks: list[dict[str, Any]] = []
    json_parts: dict[int, str] = {}
    stop = None
    for event in raw:
        if event.type == "content_block_start":
            assert event.index == len(blocks), "block indexes must count up from 0"
            blocks.append(event.content_block.model_dump())
        elif event.type == "content_block_delta":
            if event.delta.type == "text_delta":
                blocks[event.index]["text"] += event.delta.text
            elif event.delta.type == "input_json_delta":
                json_parts[event.index] = json_parts.get(event.index, "") + event.delta.partial_json
        elif event.type == "message_delta":
            stop = event.delta.stop_reason
    for index, text in json_parts.items():
        if text:
            blocks[index]["input"] = json.loads(text)
    assert [e.type for e in raw][-1] == "message_stop"
    return blocks, stop


# ---- streams -------------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "edit"), CASES)
def test_stream_verdicts_reach_the_sdk(sdk: Any, scenario: str, edit: str) -> None:
    message, stream = SCENARIOS[scenario]
    edits = EDITS[edit](calls_in(message))
    whole = run_filter([stream], edits)
    for size in (1, 7, 64, 1000):  # split inside events, lines and UTF-8 characters
        assert run_filter(pieces(stream, size), edits).output == whole.output, size
    if edit == "allow":
        assert whole.output == stream
    assert in_order(untouched(stream), whole.output)

    # The calls handed out are the decoder's completed calls, in order.
    decoder = ADAPTER.stream_decoder()
    decoder.feed(stream)
    assert whole.calls == decoder.completed_tool_calls()

    content, stop = expected(message, edits)
    final, raw = parse_stream(sdk, whole.output)
    assert summary(final.content) == content
    assert final.stop_reason == stop
    assert final.id == message["id"]
    blocks, raw_stop = rebuild(raw)
    assert summary(blocks) == content and raw_stop == stop

    # The adapter decodes the output to what the client sees, and to what the
    # non-streamed rewrite of the same reply decodes to.
    seen = ADAPTER.stream_decoder()
    seen.feed(whole.output)
    reply = seen.reply()
    assert reply.events == ADAPTER.decode_response(final.model_dump()).events
    assert reply.events == ADAPTER.decode_response(ENFORCER.rewrite_response(message, edits, None)).events
    assert reply.finish_reason == stop


def test_stream_example_reads_as_text_then_refusal(sdk: Any) -> None:
    message, stream = SCENARIOS["text+calls"]
    read = message["content"][1]
    out = run_filter(pieces(stream, 5), [ALLOW, ActionEdit("deny", message="No searching (rule: no_search).")])
    final, _ = parse_stream(sdk, out.output)
    assert summary(final.content) == [
        ("text", "Let me look."),
        ("tool_use", read["id"], "read_file", {"path": "notes/ünïcode.txt", "lines": [1, 2]}),
        ("text", "\n\nNo searching (rule: no_search)."),
    ]
    assert final.stop_reason == "tool_use"
    text = [e.text for e in ADAPTER.decode_response(final.model_dump()).events if e.kind is EventKind.ASSISTANT]
    assert text == ["Let me look.", "\n\nNo searching (rule: no_search)."]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("scenario", ["text+calls", "wire"])
def test_text_flows_before_any_call_is_decided(scenario: str, newline: bytes) -> None:
    """Fed one event at a time, every event before the first tool_use block comes
    out at once, byte for byte; the call is handed out only after them."""
    message, stream = SCENARIOS[scenario]
    events = [event.replace(b"\n", newline) for event in sse_events(stream)]
    f = ENFORCER.stream_filter()
    sent, out = b"", b""
    for event in events:
        if b'"type":"tool_use"' in event:
            break
        f.feed(event)
        sent += event
        while isinstance(item := f.next(), bytes):
            out += item
        assert item is None and out == sent
    log = run_filter(pieces(b"".join(events), 3), [ALLOW] * calls_in(message)).log
    first_call = next(i for i, item in enumerate(log) if isinstance(item, TrajectoryEvent))
    assert b"".join(x for x in log[:first_call] if isinstance(x, bytes)) == sent


def test_crlf_stream(sdk: Any) -> None:
    message, stream = SCENARIOS["text+calls"]
    crlf = stream.replace(b"\n", b"\r\n")
    assert run_filter(pieces(crlf, 1), [ALLOW, ALLOW]).output == crlf
    edits = [deny(0), deny(1)]
    out = run_filter(pieces(crlf, 3), edits)
    assert run_filter(pieces(crlf, 1), edits).output == out.output
    assert in_order(untouched(crlf), out.output) and len(untouched(crlf)) > 5
    assert out.calls == run_filter([stream], [ALLOW, ALLOW]).calls
    final, _ = parse_stream(sdk, out.output)
    assert (summary(final.content), final.stop_reason) == expected(message, edits)


def test_ping_inside_a_denied_call_keeps_its_place(sdk: Any) -> None:
    message, stream = SCENARIOS["one-call"]
    ping = b'event: ping\ndata: {"type": "ping"}\n\n'
    events = sse_events(stream)
    start = next(i for i, e in enumerate(events) if b"content_block_start" in e)
    stream = b"".join([*events[: start + 2], ping, *events[start + 2 :]])
    out = run_filter(pieces(stream, 11), [deny(0)])
    assert ping in out.output and b"input_json_delta" not in out.output
    final, _ = parse_stream(sdk, out.output)
    assert (summary(final.content), final.stop_reason) == expected(message, [deny(0)])


def test_patch_given_as_json_string_is_sent_as_an_object(sdk: Any) -> None:
    message, stream = SCENARIOS["one-call"]
    out = run_filter([stream], [ActionEdit("patch", arguments='{"path": "x"}')])
    final, _ = parse_stream(sdk, out.output)
    assert summary(final.content)[0][3] == {"path": "x"}
    body = ENFORCER.rewrite_response(message, [ActionEdit("patch", arguments='{"path": "x"}')], None)
    assert body["content"][0]["input"] == {"path": "x"}


def test_deny_without_message_still_explains() -> None:
    _, stream = SCENARIOS["one-call"]
    out = run_filter([stream], [ActionEdit("deny")])
    events = ADAPTER.stream_decoder()
    events.feed(out.output)
    assert [e.text for e in events.reply().events] == ["The tool call read_file was denied by policy."]


def test_stream_cut_mid_call_is_released_as_is() -> None:
    _, stream = SCENARIOS["text+calls"]
    cut = stream.index(b'"name":"search"') + 150  # inside the second call's arguments
    out = run_filter(pieces(stream[:cut], 9), [ALLOW])
    assert out.output == stream[:cut]
    assert len(out.calls) == 1


def test_stream_cut_mid_call_after_a_denial() -> None:
    _, stream = SCENARIOS["parallel"]
    cut = stream.index(b'"name":"search"') + 150
    out = run_filter([stream[:cut]], [deny(0)])
    assert out.output.endswith(stream[stream.index(b"event: content_block_start", stream.index(b"search") - 200) : cut])
    assert b"Denied by rule no_0" in out.output


def test_close_before_decide_keeps_the_call_held() -> None:
    """A complete call is never released unjudged, even when the stream ends first."""
    _, stream = SCENARIOS["text+calls"]
    f = ENFORCER.stream_filter()
    f.feed(stream)
    head = f.next()
    call = f.next()
    assert isinstance(head, bytes) and isinstance(call, TrajectoryEvent)
    f.close()
    assert f.next() is None
    f.decide(ALLOW)
    rest = []
    while (item := f.next()) is not None:
        if isinstance(item, TrajectoryEvent):
            f.decide(ALLOW)
        else:
            rest.append(item)
    assert head + b"".join(rest) == stream


def test_decide_without_a_call_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        ENFORCER.stream_filter().decide(ALLOW)


def test_final_event_ending_in_cr_is_routed_at_close(sdk: Any) -> None:
    """A stream ending "\\r\\r" cannot know whether "\\n" follows until close()."""
    message, stream = SCENARIOS["one-call"]
    cr = stream.replace(b"\n", b"\r")
    out = run_filter([cr], [deny(0)])
    assert out.output.endswith(b'event: message_stop\rdata: {"type":"message_stop"}\r\r')
    assert b'"stop_reason":"end_turn"' in out.output
    final, _ = parse_stream(sdk, out.output)
    assert (summary(final.content), final.stop_reason) == expected(message, [deny(0)])


def test_call_ending_the_stream_in_cr_is_still_judged() -> None:
    """The last event may wait for an LF that never comes: close() must still judge it."""
    _, stream = SCENARIOS["one-call"]
    cr = stream.replace(b"\n", b"\r")
    cut = cr.index(b"\r\r", cr.index(b"content_block_stop")) + 2
    out = run_filter(pieces(cr[:cut], 5), [deny(0)])
    assert len(out.calls) == 1 and b"input_json_delta" not in out.output
    assert out.output.endswith(b'{"type":"content_block_stop","index":0}\n\n')


# ---- non-streamed replies -----------------------------------------------------


@pytest.mark.parametrize(("scenario", "edit"), CASES)
def test_rewrite_response(sdk: Any, scenario: str, edit: str) -> None:
    message, _ = SCENARIOS[scenario]
    original = copy.deepcopy(message)
    edits = EDITS[edit](calls_in(message))
    body = ENFORCER.rewrite_response(message, edits, None)
    assert message == original, "the input must not change"
    if edit == "allow":
        assert body is message
    content, stop = expected(message, edits)
    parsed = Message.model_validate(body)
    assert (summary(parsed.content), parsed.stop_reason) == (content, stop)
    client, served = sdk
    served.body = body
    created = client.messages.create(**REQUEST)
    assert (summary(created.content), created.stop_reason) == (content, stop)
    decoded = ADAPTER.decode_response(body)
    assert [e.arguments for e in decoded.events if e.kind is EventKind.TOOL_CALL] == [
        block[3] for block in content if block[0] == "tool_use"
    ]


def test_rewrite_counts_edits() -> None:
    message, _ = SCENARIOS["parallel"]
    with pytest.raises(ValueError, match="one per block"):
        ENFORCER.rewrite_response(message, [ALLOW], None)


def test_text_edit_replaces_the_model_text() -> None:
    message, _ = SCENARIOS["wire"]
    body = ENFORCER.rewrite_response(message, [ALLOW, deny(1), ALLOW], TextEdit("[redacted]"))
    parsed = Message.model_validate(body)
    assert summary(parsed.content)[:4] == [
        ("thinking",),
        ("text", "[redacted]"),
        ("tool_use", message["content"][2]["id"], "get_weather", message["content"][2]["input"]),
        ("text", "\n\nDenied by rule no_1: not allowed here."),
    ]
    assert parsed.stop_reason == "tool_use"


def test_text_edit_on_a_reply_without_text() -> None:
    message, _ = SCENARIOS["one-call"]
    body = ENFORCER.rewrite_response(message, [deny(0)], TextEdit("I will not do that."))
    parsed = Message.model_validate(body)
    assert summary(parsed.content) == [("text", "I will not do that."), ("text", "\n\n" + str(deny(0).message))]
    assert parsed.stop_reason == "end_turn"


def test_text_edit_merges_several_text_blocks() -> None:
    message = {**SCENARIOS["text"][0]}
    message["content"] = [{"type": "text", "text": "a"}, {"type": "text", "text": "b", "citations": None}]
    body = ENFORCER.rewrite_response(message, [], TextEdit("only this"))
    assert summary(Message.model_validate(body).content) == [("text", "only this")]


# ---- replies the proxy writes itself ------------------------------------------


def test_text_reply() -> None:
    body = ENFORCER.text_reply(CALL, "Refused by rule no_secrets: the prompt holds a key.")
    parsed = Message.model_validate(body)
    assert parsed.model == "claude-test" and parsed.id.startswith("msg_01") and parsed.stop_reason == "end_turn"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (0, 0)
    assert ADAPTER.decode_response(body).events == (
        TrajectoryEvent(
            EventKind.ASSISTANT, text="Refused by rule no_secrets: the prompt holds a key.", role="assistant"
        ),
    )


def test_text_reply_stream(sdk: Any) -> None:
    text = "Refused — ünïcode 🌍 by rule x."
    stream = ENFORCER.text_reply_stream(CALL, text)
    final, raw = parse_stream(sdk, stream)
    assert summary(final.content) == [("text", text)]
    assert (final.model, final.stop_reason, final.usage.output_tokens) == ("claude-test", "end_turn", 0)
    assert rebuild(raw)[0][0]["text"] == text
    decoder = ADAPTER.stream_decoder()
    decoder.feed(stream)
    assert (
        decoder.finished and decoder.reply().events == ADAPTER.decode_response(ENFORCER.text_reply(CALL, text)).events
    )
    assert run_filter(pieces(stream, 2), []).output == stream
