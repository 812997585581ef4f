"""A long agent loop through the real openai and anthropic SDKs: every call after
the first re-sends the history, which Proctor reads from where the previous
request ended (adapters/resend.py). What it records (events, hashes, labels,
sessions, decisions) is the same as when every body is parsed whole."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from proxy.context import PROXY
from proxy.scripted_model import ToolCallSpec, Turn

from .conftest import events_of, sessions_of

KEY = "sk-client-e2e-resend-0123456789"
STEPS = 12


def stepper(api: str, body: dict[str, Any]) -> Turn:
    """One lookup per call until STEPS results are in, then an answer."""
    done = sum(1 for m in body["messages"] if m.get("role") == "tool" or isinstance(m.get("content"), list)
               and any(isinstance(p, dict) and p.get("type") == "tool_result" for p in m["content"]))
    if done < STEPS:
        return Turn(text=f"step {done}", tool_calls=(ToolCallSpec("lookup", {"n": done, "q": f"page {done} of café ☕"}),))
    return Turn(text="All done.")


def chat_loop(url: str) -> None:
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    messages: list[Any] = [{"role": "system", "content": "You look things up. " * 30},
                           {"role": "user", "content": "Look up twelve pages."}]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    for _ in range(STEPS + 1):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls or ():
            messages.append({"role": "tool", "tool_call_id": call.id, "content": f"result of {call.function.arguments}"})
        if not message.tool_calls:
            return


def messages_loop(url: str) -> None:
    client = anthropic.Anthropic(base_url=url.removesuffix("/v1"), api_key=KEY, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "Look up twelve pages. " * 20}]
    for _ in range(STEPS + 1):
        reply = client.messages.create(model="claude-test", max_tokens=100, system="You look things up.",
                                       tools=[{"name": "lookup", "input_schema": {"type": "object"}}], messages=messages)
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
        uses = [b for b in reply.content if b.type == "tool_use"]
        if not uses:
            return
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": u.id, "content": f"result of {json.dumps(u.input)}"} for u in uses]})


def recorded(proxy: Any) -> list[tuple]:
    (session,) = sessions_of(proxy)
    return [(e.kind.value, e.text, e.tool_name, e.arguments, e.hash, e.labels) for e in events_of(proxy, session.id)]


@pytest.mark.parametrize("loop", [chat_loop, messages_loop], ids=["openai-chat", "anthropic-messages"])
def test_a_long_loop_records_the_same_trajectory_with_and_without_reading_only_what_is_new(
    loop, make_proxy, upstream, same_ids,
) -> None:
    upstream.answer(stepper)
    runs, hits = {}, {}
    for name, megabytes in (("whole", 0), ("continued", 128)):  # 0: the cache is off, every body is parsed whole
        same_ids.reset()
        proxy = make_proxy(resend_cache_mb=megabytes)
        loop(proxy.url)
        runs[name], hits[name] = recorded(proxy), proxy.app[PROXY].resend.hits
    assert hits == {"whole": 0, "continued": STEPS}  # every call after the first continued the one before
    assert runs["continued"] == runs["whole"]
    assert sum(1 for r in runs["whole"] if r[0] == "tool_call") == STEPS
