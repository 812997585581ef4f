"""A scripted model: an aiohttp server that speaks the OpenAI Chat Completions,
OpenAI Responses and Anthropic Messages APIs, answering from a script.

It is the fake upstream of the test suite, the offline model of ``proctor demo``
and the fast upstream of the benchmarks. Answers have the shape the official SDKs
parse, streams have the real event sequences, and a responder can return a
:class:`Fault` to simulate an upstream error, a slow model or a cut stream.

This module holds the script (turns, faults, responders) and the server; the
answers' wire shapes are in :mod:`proxy.scripted_wire`.

Guarantees: the non-streaming body and the stream of one answer carry the same
ids and content; every request that reached the server is recorded under
:data:`RECEIVED` (unless ``record=False``) before the responder sees it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.scripted_wire import (
    Json,
    anthropic_message,
    chat_completion,
    chat_stream,
    error_body,
    messages_stream,
    response_object,
    responses_stream,
)

Api = Literal["chat", "responses", "messages"]


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


# ---- HTTP ---------------------------------------------------------------------

Build = Callable[[Turn, Json], Json]
Stream = Callable[[Json, Json, int], Iterator[bytes]]

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
