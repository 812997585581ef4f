"""The session benchmark's agents hold an abstract conversation (system, user,
assistant and tool turns); a wire renders it for one API (Chat Completions,
Responses, Anthropic Messages), sends it and reads the reply back into turns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from tests.bench.session_model import TOOL_NAMES

Json = dict[str, Any]


@dataclass
class ToolCallT:
    id: str
    name: str
    args: str  # JSON string


@dataclass
class Sys:
    text: str


@dataclass
class User:
    text: str


@dataclass
class Asst:
    text: str | None
    calls: list[ToolCallT]
    raw: Any  # the wire form the client sends back
    response_id: str | None = None


@dataclass
class Tool:
    call_id: str
    name: str
    text: str


Turnish = Sys | User | Asst | Tool


class ChatWire:
    api, path = "chat", "/v1/chat/completions"

    def __init__(self, stream: bool = False, act_at_done: bool = False) -> None:
        self.stream = stream
        self.act_at_done = act_at_done  # stop reading at [DONE] (else drain to EOF, as the OpenAI SDK does)

    def render(self, turns: list[Turnish]) -> Json:
        msgs: list[Json] = []
        for t in turns:
            if isinstance(t, Sys):
                msgs.append({"role": "system", "content": t.text})
            elif isinstance(t, User):
                msgs.append({"role": "user", "content": t.text})
            elif isinstance(t, Asst):
                msgs.append(t.raw)
            else:
                msgs.append({"role": "tool", "tool_call_id": t.call_id, "content": t.text})
        body: Json = {"model": "scripted-gpt", "messages": msgs, "tools": _CHAT_TOOLS}
        if self.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    async def read(self, resp: aiohttp.ClientResponse) -> Asst:
        if self.stream:
            message = await _read_chat_stream(resp, self.act_at_done)
        else:
            message = (await resp.json(loads=orjson.loads))["choices"][0]["message"]
        raw: Json = {"role": "assistant", "content": message.get("content")}
        calls = message.get("tool_calls") or []
        if calls:
            raw["tool_calls"] = calls
        return Asst(message.get("content"), [ToolCallT(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls], raw)


async def _read_chat_stream(resp: aiohttp.ClientResponse, act_at_done: bool) -> Json:
    content: str | None = None
    calls: dict[int, Json] = {}
    async for line in resp.content:
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        if line == b"data: [DONE]":
            if act_at_done:
                break
            continue
        for choice in orjson.loads(line[6:]).get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") is not None:
                content = (content or "") + delta["content"]
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
    return {"role": "assistant", "content": content, "tool_calls": [calls[i] for i in sorted(calls)]}


_CHAT_TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in (*TOOL_NAMES, "run_subagent")]
_RESP_TOOLS = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in (*TOOL_NAMES, "run_subagent")]
_ANTH_TOOLS = [{"name": n, "input_schema": {"type": "object"}} for n in (*TOOL_NAMES, "run_subagent")]


class ResponsesWire:
    """Responses API. ``chained``: store and send only the new items with
    previous_response_id; otherwise store:false and the full input list."""

    api, path = "responses", "/v1/responses"

    def __init__(self, chained: bool = False) -> None:
        self.chained = chained

    def render(self, turns: list[Turnish]) -> Json:
        system = next(t.text for t in turns if isinstance(t, Sys))
        start, prev = 0, None
        if self.chained:
            for i, t in enumerate(turns):
                if isinstance(t, Asst):
                    start, prev = i + 1, t.response_id
        items: list[Json] = []
        for t in turns[start:]:
            if isinstance(t, User):
                items.append({"role": "user", "content": t.text})
            elif isinstance(t, Asst):
                items.extend(t.raw)
            elif isinstance(t, Tool):
                items.append({"type": "function_call_output", "call_id": t.call_id, "output": t.text})
        body: Json = {"model": "scripted-gpt", "instructions": system, "input": items, "tools": _RESP_TOOLS}
        if self.chained:
            if prev:
                body["previous_response_id"] = prev
        else:
            body["store"] = False
        return body

    async def read(self, resp: aiohttp.ClientResponse) -> Asst:
        data = await resp.json(loads=orjson.loads)
        text = "".join(p["text"] for it in data["output"] if it["type"] == "message" for p in it["content"]) or None
        calls = [ToolCallT(it["call_id"], it["name"], it["arguments"]) for it in data["output"] if it["type"] == "function_call"]
        return Asst(text, calls, data["output"], data["id"])


class MessagesWire:
    api, path = "messages", "/v1/messages"

    def render(self, turns: list[Turnish]) -> Json:
        system = ""
        msgs: list[Json] = []
        pending: list[Json] = []  # user-side blocks waiting to be sent as one user message

        def flush() -> None:
            if pending:
                only_text = len(pending) == 1 and pending[0]["type"] == "text"
                msgs.append({"role": "user", "content": pending[0]["text"] if only_text else list(pending)})
                pending.clear()

        for t in turns:
            if isinstance(t, Sys):
                system = t.text
            elif isinstance(t, User):
                pending.append({"type": "text", "text": t.text})
            elif isinstance(t, Tool):
                pending.append({"type": "tool_result", "tool_use_id": t.call_id, "content": t.text})
            else:
                flush()
                msgs.append({"role": "assistant", "content": t.raw})
        flush()
        return {"model": "scripted-claude", "max_tokens": 1024, "system": system, "messages": msgs, "tools": _ANTH_TOOLS}

    async def read(self, resp: aiohttp.ClientResponse) -> Asst:
        data = await resp.json(loads=orjson.loads)
        text = "".join(b["text"] for b in data["content"] if b["type"] == "text") or None
        calls = [ToolCallT(b["id"], b["name"], orjson.dumps(b["input"]).decode()) for b in data["content"] if b["type"] == "tool_use"]
        return Asst(text, calls, data["content"], data["id"])


Wire = ChatWire | ResponsesWire | MessagesWire
