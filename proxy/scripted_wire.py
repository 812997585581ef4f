"""The scripted model's answers in each API's wire shape: the JSON body, and the
SSE frames that rebuild it chunk by chunk (Chat Completions, Responses,
Anthropic Messages), plus errors in each API's own shape.

Pure functions of a :class:`~proxy.scripted_model.Turn` and the request body;
:mod:`proxy.scripted_model` serves them over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from proxy.ids import random_hex

if TYPE_CHECKING:  # the script's types; this module only reads their fields
    from proxy.scripted_model import ToolCallSpec, Turn

Json = dict[str, Any]


def _id(prefix: str) -> str:
    return prefix + random_hex(24)


def _split(text: str, n: int) -> list[str]:
    """``text`` in ``n`` nearly equal pieces (fewer when it is short, at least one)."""
    n = max(1, min(n, len(text)))
    size, extra = divmod(len(text), n)
    pieces: list[str] = []
    start = 0
    for i in range(n):
        end = start + size + (i < extra)
        pieces.append(text[start:end])
        start = end
    return pieces


def _data(obj: Json) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _event(obj: Json) -> bytes:
    name: str = obj["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _arguments(call: ToolCallSpec) -> str:
    return orjson.dumps(call.arguments).decode()


def _has_text(turn: Turn) -> bool:
    return turn.text is not None or not turn.tool_calls


# ---- Chat Completions ---------------------------------------------------------


def chat_completion(turn: Turn, body: Json) -> Json:
    """The ``chat.completion`` object answering ``body`` with ``turn``."""
    message: Json = {
        "role": "assistant",
        "content": (turn.text or "") if _has_text(turn) else None,
        "refusal": None,
        "annotations": [],
    }
    if turn.tool_calls:
        message["tool_calls"] = [
            {"id": _id("call_"), "type": "function", "function": {"name": c.name, "arguments": _arguments(c)}}
            for c in turn.tool_calls
        ]
    finish_reason = "tool_calls" if turn.tool_calls else "stop"
    usage = {"prompt_tokens": turn.input_tokens, "completion_tokens": turn.output_tokens}
    return {
        "id": _id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or "scripted-gpt",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {
            **usage,
            "total_tokens": turn.input_tokens + turn.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_scripted",
    }


def chat_stream(completion: Json, body: Json, chunks: int) -> Iterator[bytes]:
    """The SSE frames of ``completion`` as ``chat.completion.chunk`` objects."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base: Json = {"id": completion["id"], "object": "chat.completion.chunk"}
    base |= {k: completion[k] for k in ("created", "model", "service_tier", "system_fingerprint")}
    if include_usage:
        base["usage"] = None

    def chunk(delta: Json, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _data({**base, "choices": [choice]})

    choice = completion["choices"][0]
    message = choice["message"]
    text = message["content"]
    yield chunk({"role": "assistant", "content": "" if text is not None else None, "refusal": None})
    if text is not None:
        for piece in _split(text, chunks):
            yield chunk({"content": piece})
    for index, call in enumerate(message.get("tool_calls", ())):
        function = call["function"]
        name = {"name": function["name"], "arguments": ""}
        yield chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": name}]})
        for piece in _split(function["arguments"], chunks):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield _data({**base, "choices": [], "usage": completion["usage"]})
    yield b"data: [DONE]\n\n"


# ---- Responses ----------------------------------------------------------------


def response_object(turn: Turn, body: Json) -> Json:
    """The completed ``response`` object answering ``body`` with ``turn``."""
    output: list[Json] = []
    if _has_text(turn):
        part = {"type": "output_text", "text": turn.text or "", "annotations": [], "logprobs": []}
        message = {"id": _id("msg_"), "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        output.append(message)
    for call in turn.tool_calls:
        ids = {"id": _id("fc_"), "type": "function_call", "status": "completed", "call_id": _id("call_")}
        output.append({**ids, "name": call.name, "arguments": _arguments(call)})
    return {
        "id": _id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model") or "scripted-gpt",
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": turn.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": turn.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": turn.input_tokens + turn.output_tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def responses_stream(response: Json, body: Json, chunks: int) -> Iterator[bytes]:
    """The SSE frames (``event:`` lines and ``sequence_number``) that build ``response``."""
    events: list[Json] = []
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    events.append({"type": "response.created", "response": pending})
    events.append({"type": "response.in_progress", "response": pending})
    for index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = item["content"][0]
            added = {**item, "status": "in_progress", "content": []}
            events.append({"type": "response.output_item.added", "output_index": index, "item": added})
            where["content_index"] = 0
            events.append({"type": "response.content_part.added", **where, "part": {**part, "text": ""}})
            for piece in _split(part["text"], chunks):
                events.append({"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []})
            events.append({"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []})
            events.append({"type": "response.content_part.done", **where, "part": part})
        else:
            added = {**item, "status": "in_progress", "arguments": ""}
            events.append({"type": "response.output_item.added", "output_index": index, "item": added})
            for piece in _split(item["arguments"], chunks):
                events.append({"type": "response.function_call_arguments.delta", **where, "delta": piece})
            events.append({"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"]})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": response})
    for sequence_number, event in enumerate(events):
        event["sequence_number"] = sequence_number
        yield _event(event)


# ---- Anthropic Messages -------------------------------------------------------


def anthropic_message(turn: Turn, body: Json) -> Json:
    """The Anthropic ``message`` object answering ``body`` with ``turn``."""
    content: list[Json] = [{"type": "text", "text": turn.text or ""}] if _has_text(turn) else []
    for call in turn.tool_calls:
        content.append({"type": "tool_use", "id": _id("toolu_"), "name": call.name, "input": call.arguments})
    return {
        "id": _id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or "scripted-claude",
        "content": content,
        "stop_reason": "tool_use" if turn.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens}
        | {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


def messages_stream(message: Json, body: Json, chunks: int) -> Iterator[bytes]:
    """The SSE frames (message_start ... message_stop) that build ``message``."""
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    yield _event({"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            empty = {"type": "text", "text": ""}
            yield _event({"type": "content_block_start", "index": index, "content_block": empty})
            deltas = [{"type": "text_delta", "text": piece} for piece in _split(block["text"], chunks)]
        else:
            yield _event({"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}})
            pieces = _split(orjson.dumps(block["input"]).decode(), chunks)
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
        if index == 0:
            yield _event({"type": "ping"})
        for delta in deltas:
            yield _event({"type": "content_block_delta", "index": index, "delta": delta})
        yield _event({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    usage = {"output_tokens": message["usage"]["output_tokens"]}
    yield _event({"type": "message_delta", "delta": stop, "usage": usage})
    yield _event({"type": "message_stop"})


# ---- errors ---------------------------------------------------------------------

_OPENAI_ERROR_TYPES = {429: "requests"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(api: str, status: int, message: str, code: str) -> Json:
    """An error in the API's own shape: Anthropic's for "messages", OpenAI's otherwise."""
    if api == "messages":
        return {"type": "error", "error": {"type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message}}
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
