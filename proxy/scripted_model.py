"""A scripted model: an aiohttp server that speaks the OpenAI Chat Completions,
OpenAI Responses and Anthropic Messages APIs, answering from a script.

It is the fake upstream of the test suite, the offline model of ``proctor demo``
and the fast upstream of the benchmarks. Answers have the shape the official SDKs
parse, streams have the real event sequences, and a responder can return a
:class:`Fault` to simulate an upstream error, a slow model or a cut stream.

Guarantees: the non-streaming body and the stream of one answer carry the same
ids and content; every request that reached the server is recorded under
:data:`RECEIVED` (unless ``record=False``) before the responder sees it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.ids import random_hex

Api = Literal["chat", "responses", "messages"]
Json = dict[str, Any]


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call the model makes: the tool's name and its (parsed) arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Turn:
    """One answer of the model. With neither text nor tool calls it answers empty text."""

    text: str | None = None
    tool_calls: tuple[ToolCallSpec, ...] = ()
    input_tokens: int = 10
    output_tokens: int = 5


@dataclass(frozen=True)
class Fault:
    """An upstream failure, returned by a responder instead of a :class:`Turn`.

    The server first waits ``delay`` seconds. Then, if ``cut_after_chunks`` is set,
    it starts answering ``turn`` and drops the connection after that many SSE events
    (a non-streaming answer is cut after half its body). Otherwise it answers HTTP
    ``status`` with ``body`` (default: an error in the API's own shape) and
    ``headers``; a status below 400 answers ``turn`` normally (a slow model).
    """

    status: int = 500
    body: Json | None = field(default=None, hash=False)
    delay: float = 0.0
    cut_after_chunks: int | None = None
    turn: Turn = Turn(text="This answer is cut short by a scripted fault.")
    headers: Mapping[str, str] | None = field(default=None, hash=False)


Responder = Callable[[Api, Json], Turn | Fault]
"""Given the API ("chat" | "responses" | "messages") and the request body, what to answer."""


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as it reached the scripted model. ``headers`` is case-insensitive."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDict[str]  # case-insensitive lookups, original case and order kept
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


RECEIVED = web.AppKey("received", list[ReceivedRequest])
"""Where the app keeps every request it received, oldest first."""


class ScriptExhausted(RuntimeError):
    """A :class:`ScriptedResponder` was asked for more turns than it holds.

    The server answers such a call with HTTP 500 and code ``script_exhausted``."""


def last_user_text(api: str, body: Json) -> str:
    """The text of the last user message that has text (tool results are skipped)."""
    if api == "responses":
        items = body.get("input")
        if isinstance(items, str):
            return items
    else:
        items = body.get("messages")
    for item in reversed(items if isinstance(items, list) else []):
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            return content
        texts = [
            part.get("text", "")
            for part in content or []
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        ]
        if texts:
            return "".join(texts)
    return ""


def echo_responder(api: str, body: Json) -> Turn:
    """Answers ``"echo: <last user text>"``."""
    return Turn(text="echo: " + last_user_text(api, body))


class ScriptedResponder:
    """Answers the given turns in order, one per call, whatever the request says.

    When the script is exhausted it raises :class:`ScriptExhausted` (the server
    answers 500), or starts over if ``cycle`` is true. ``requests`` keeps every
    ``(api, body)`` it was called with.
    """

    def __init__(self, turns: Iterable[Turn | Fault], *, cycle: bool = False) -> None:
        self.turns: tuple[Turn | Fault, ...] = tuple(turns)
        self.cycle = cycle
        self.requests: list[tuple[str, Json]] = []

    @property
    def remaining(self) -> int:
        """How many turns are left before the script is exhausted (or cycles)."""
        return max(0, len(self.turns) - len(self.requests))

    def __call__(self, api: str, body: Json) -> Turn | Fault:
        n = len(self.requests)
        self.requests.append((api, body))
        if n < len(self.turns):
            return self.turns[n]
        if self.cycle and self.turns:
            return self.turns[n % len(self.turns)]
        raise ScriptExhausted(f"the script has {len(self.turns)} turns and call {n + 1} asked for another")


def keyed(rules: Mapping[str, Turn | Fault], default: Responder = echo_responder) -> Responder:
    """A responder that answers the first rule whose key occurs in the last user text."""

    def respond(api: Api, body: Json) -> Turn | Fault:
        text = last_user_text(api, body)
        for key, answer in rules.items():
            if key in text:
                return answer
        return default(api, body)

    return respond


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


# ---- HTTP ---------------------------------------------------------------------

Build = Callable[[Turn, Json], Json]
Stream = Callable[[Json, Json, int], Iterator[bytes]]

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


def _json_response(obj: Json, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers)


class _ScriptedModel:
    """The handlers, bound to one responder and stream settings."""

    # Per API: build the whole answer, then (if asked to stream) the SSE frames that rebuild it.
    wires: ClassVar[Mapping[Api, tuple[Build, Stream]]] = {
        "chat": (chat_completion, chat_stream),
        "responses": (response_object, responses_stream),
        "messages": (anthropic_message, messages_stream),
    }

    def __init__(self, responder: Responder, chunks: int, chunk_delay: float, record: bool) -> None:
        self.responder = responder
        self.chunks = max(1, chunks)
        self.chunk_delay = chunk_delay
        self.record = record

    async def models(self, request: web.Request) -> web.StreamResponse:
        await self._receive(request)
        names = ("scripted-gpt", "scripted-claude")
        data = [{"id": name, "object": "model", "created": 1700000000, "owned_by": "proctor"} for name in names]
        return _json_response({"object": "list", "data": data})

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        await self._receive(request)
        message = (
            f"Unknown request URL: {request.method} {request.path}. The scripted model serves"
            " /v1/chat/completions, /v1/responses, /v1/messages and /v1/models."
        )
        return _json_response(error_body("chat", 404, message, "unknown_url"), 404)

    async def _receive(self, request: web.Request) -> bytes:
        raw = await request.read()
        if self.record:
            request.app[RECEIVED].append(
                ReceivedRequest(
                    request.method,
                    request.path,
                    request.query_string,
                    CIMultiDict(request.headers),
                    tuple(request.raw_headers),
                    raw,
                )
            )
        return raw

    async def answer(self, request: web.Request, api: Api) -> web.StreamResponse:
        raw = await self._receive(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            message = f"The request body is not valid JSON ({exc}). Send a JSON object."
            return _json_response(error_body(api, 400, message, "invalid_json"), 400)
        if not isinstance(body, dict):
            message = "The request body must be a JSON object."
            return _json_response(error_body(api, 400, message, "invalid_json"), 400)
        try:
            answer = self.responder(api, body)
        except Exception as exc:  # the script is wrong: say so in the answer rather than a bare 500
            code = "script_exhausted" if isinstance(exc, ScriptExhausted) else "responder_failed"
            return _json_response(error_body(api, 500, f"scripted model: {exc!r}", code), 500)
        turn, cut_after = (answer.turn, answer.cut_after_chunks) if isinstance(answer, Fault) else (answer, None)
        if isinstance(answer, Fault):
            await asyncio.sleep(answer.delay)
            if cut_after is None and answer.status >= 400:
                default = error_body(api, answer.status, f"scripted fault: HTTP {answer.status}", "scripted_fault")
                return _json_response(default if answer.body is None else answer.body, answer.status, answer.headers)
        build, stream = self.wires[api]
        obj = build(turn, body)
        if body.get("stream"):
            return await self._stream(request, stream(obj, body, self.chunks), cut_after)
        if cut_after is None:
            return _json_response(obj)
        encoded = orjson.dumps(obj)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(encoded)
        await response.prepare(request)
        await response.write(encoded[: len(encoded) // 2])
        return self._cut(request, response)

    async def _stream(self, request: web.Request, frames: Iterator[bytes], cut_after: int | None) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        for n, frame in enumerate(frames):
            if n == cut_after:
                return self._cut(request, response)
            if self.chunk_delay and n:
                await asyncio.sleep(self.chunk_delay)
            await response.write(frame)
        await response.write_eof()
        return response

    @staticmethod
    def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Close the connection without finishing the body, as a dropped upstream would."""
        if request.transport is not None:
            request.transport.close()  # aiohttp's write_eof then meets a closed transport and lets go
        return response


def create_model_app(
    responder: Responder, *, chunks: int = 30, chunk_delay: float = 0.0, record: bool = True
) -> web.Application:
    """The scripted model as an aiohttp app.

    ``chunks`` is how many pieces each text and each tool call's arguments are
    streamed in; ``chunk_delay`` the pause between stream events; ``record=False``
    keeps :data:`RECEIVED` empty (for long benchmarks).
    """
    model = _ScriptedModel(responder, chunks, chunk_delay, record)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[RECEIVED] = []
    app.router.add_post("/v1/chat/completions", functools.partial(model.answer, api="chat"))
    app.router.add_post("/v1/responses", functools.partial(model.answer, api="responses"))
    app.router.add_post("/v1/messages", functools.partial(model.answer, api="messages"))
    app.router.add_get("/v1/models", model.models)
    app.router.add_route("*", "/{tail:.*}", model.not_found)
    return app


async def start_model_server(
    responder: Responder, host: str = "127.0.0.1", port: int = 0, **kw: Any
) -> tuple[web.AppRunner, str]:
    """Start the scripted model on ``host:port`` (0: a free port).

    Returns the runner (``await runner.cleanup()`` stops it) and the base URL,
    e.g. ``http://127.0.0.1:54321/v1``. ``kw`` goes to :func:`create_model_app`.
    """
    app = create_model_app(responder, **kw)
    # handler_cancellation: a client that gives up (a timeout test) also ends a Fault's sleep.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{f'[{host}]' if ':' in host else host}:{bound_port}/v1"
