"""The real Anthropic SDK (sync and async; create and messages.stream; tool_use)
gets exactly the same parsed results through Proctor as from the upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest

from proxy.scripted_model import ToolCallSpec, Turn

from .conftest import calls_of, events_of, shape, twice

KEY = "sk-ant-client-e2e-0123456789"
TOOLS: Any = [{"name": n, "input_schema": {"type": "object", "properties": {}}} for n in ("read_file", "search")]
TOOL_USE = Turn(
    text="Let me look.",
    tool_calls=(
        ToolCallSpec("read_file", {"path": "notes/ünïcode.txt", "lines": [1, 2]}),
        ToolCallSpec("search", {"query": 'say "hi"'}),
    ),
    input_tokens=31,
    output_tokens=12,
)
MESSAGES: Any = [{"role": "user", "content": "look at my notes"}]
EXPECTED_SHAPE = [
    ("system", "Be brief."),
    ("user", "look at my notes"),
    ("assistant", "Let me look."),
    ("tool_call", ("read_file", {"path": "notes/ünïcode.txt", "lines": [1, 2]})),
    ("tool_call", ("search", {"query": 'say "hi"'})),
]
ARGS: Any = {"model": "claude-test", "max_tokens": 256, "system": "Be brief.", "messages": MESSAGES, "tools": TOOLS}


def _base(url: str) -> str:
    return url.removesuffix("/v1")  # the SDK adds /v1 itself


def create_sync(url: str) -> tuple[Any, str | None]:
    with anthropic.Anthropic(base_url=_base(url), api_key=KEY, max_retries=0, timeout=10) as client:
        raw = client.messages.with_raw_response.create(**ARGS)
        return raw.parse().model_dump(), raw.headers.get("x-proctor-session")


def create_async(url: str) -> tuple[Any, str | None]:
    async def go() -> tuple[Any, str | None]:
        async with anthropic.AsyncAnthropic(base_url=_base(url), api_key=KEY, max_retries=0, timeout=10) as client:
            raw = await client.messages.with_raw_response.create(**ARGS)
            return (await raw.parse()).model_dump(), raw.headers.get("x-proctor-session")

    return asyncio.run(go())


def stream_sync(url: str) -> tuple[Any, str | None]:
    with anthropic.Anthropic(base_url=_base(url), api_key=KEY, max_retries=0, timeout=10) as client:
        with client.messages.stream(**ARGS) as stream:
            events = [e.model_dump() for e in stream]
            final = stream.get_final_message().model_dump()
            session = stream.response.headers.get("x-proctor-session")
        return {"events": events, "final": final}, session


def stream_async(url: str) -> tuple[Any, str | None]:
    async def go() -> tuple[Any, str | None]:
        async with anthropic.AsyncAnthropic(base_url=_base(url), api_key=KEY, max_retries=0, timeout=10) as client:
            async with client.messages.stream(**ARGS) as stream:
                events = [e.model_dump() async for e in stream]
                final = (await stream.get_final_message()).model_dump()
                session = stream.response.headers.get("x-proctor-session")
            return {"events": events, "final": final}, session

    return asyncio.run(go())


SCENARIOS = {
    "create-sync": (create_sync, False),
    "create-async": (create_async, False),
    "stream-sync": (stream_sync, True),
    "stream-async": (stream_async, True),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_same_parsed_result_through_proxy(scenario: str, proxy: Any, upstream: Any, same_ids: Any) -> None:
    run, stream = SCENARIOS[scenario]
    upstream.answer(TOOL_USE)
    (direct, no_session), (through, session_id) = twice(same_ids, run, upstream.url, proxy.base)

    assert through == direct
    message = direct["final"] if stream else direct
    assert message["stop_reason"] == "tool_use"
    assert [b["type"] for b in message["content"]] == ["text", "tool_use", "tool_use"]
    assert message["content"][0]["text"] == "Let me look."
    assert [(b["name"], b["input"]) for b in message["content"][1:]] == [(c.name, c.arguments) for c in TOOL_USE.tool_calls]
    if stream:
        kinds = [e["type"] for e in direct["events"]]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "input_json" in kinds

    assert no_session is None and session_id and session_id.startswith("ses_")
    assert upstream.received[-1].body == upstream.received[-2].body
    # The client's credential (this SDK version sends it as a bearer token) reaches upstream unchanged.
    credentials = [
        {k.lower(): v for k, v in r.headers.items() if k.lower() in ("authorization", "x-api-key")}
        for r in upstream.received[-2:]
    ]
    assert credentials[0] == credentials[1] and any(KEY in v for v in credentials[1].values())
    (call,) = calls_of(proxy, session_id)
    assert (call.api, call.path, call.model, call.stream, call.status) == ("messages", "/v1/messages", "claude-test", stream, 200)
    assert (call.input_tokens, call.output_tokens) == (31, 12)
    assert shape(events_of(proxy, session_id)) == EXPECTED_SHAPE


def test_tool_use_loop_is_one_session(proxy: Any, upstream: Any) -> None:
    """tool_use -> tool_result -> final text, streamed, with no session header."""

    def model(api: str, body: dict[str, Any]) -> Turn:
        results = [
            b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"] if b["type"] == "tool_result"
        ]
        return TOOL_USE if not results else Turn(text=f"Read {len(results)} results.")

    upstream.answer(model)
    client = anthropic.Anthropic(base_url=proxy.base, api_key=KEY, max_retries=0, timeout=10)
    messages: list[Any] = list(MESSAGES)
    sessions = []
    for _ in range(3):
        with client.messages.stream(**{**ARGS, "messages": messages}) as stream:
            message = stream.get_final_message()
            sessions.append(stream.response.headers["x-proctor-session"])
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]})
        uses = [b for b in message.content if b.type == "tool_use"]
        if not uses:
            break
        messages.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": b.id, "content": f"{b.name} ok"} for b in uses]}
        )
    client.close()

    assert message.content[0].type == "text" and message.content[0].text == "Read 2 results."
    assert len(sessions) == 2 and sessions[0] == sessions[1]
    assert shape(events_of(proxy, sessions[0])) == [
        *EXPECTED_SHAPE,
        ("tool_result", ("read_file", "read_file ok")),
        ("tool_result", ("search", "search ok")),
        ("assistant", "Read 2 results."),
    ]
