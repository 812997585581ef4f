"""A model call's request as it comes in: its body read within the time and size
limits (and decoded as its Content-Encoding says), parsed into a :class:`Call`
(only what it adds to a history it re-sends, adapters/resend.py), and refused
when it asks for something Proctor cannot judge."""

from __future__ import annotations

import asyncio
import dataclasses
import sys

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from adapters.base import Adapter, BadRequest
from adapters.common import NotJson, loads_reply
from adapters.model import Call
from adapters.resend import ResendCache
from proxy import history
from proxy.errors import InvalidRequest


def body_too_slow(seconds: float) -> InvalidRequest:
    err = InvalidRequest(f"the request body did not arrive within {seconds:g}s; send it at once, or raise "
                         "client_body_timeout", code="request_timeout")
    err.status = 408
    return err


def body_too_large(limit: int) -> InvalidRequest:
    err = InvalidRequest(
        f"the request body is larger than {limit} bytes; raise max_body_bytes or send less", code="body_too_large"
    )
    err.status = 413
    return err


def decode_call(adapter: Adapter, raw: bytes, resent: ResendCache | None = None) -> Call:
    """The call a request body asks for; ``resent`` holds recent bodies, so one that
    re-sends an earlier one's history is parsed only where it adds to it."""
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object", code="invalid_json")
    hit = resent.find(raw, adapter.api, adapter.history_field) if resent is not None else None
    if hit is not None:
        try:
            call = adapter.decode_request(hit.body, prior=hit.prior)
        except BadRequest:
            pass  # decoded whole below, so the error is exactly the one the whole body gets
        else:
            call = dataclasses.replace(call, nodes=history.nodes_of(call, hit.prior))
            resent.remember(raw, call, hit)  # type: ignore[union-attr] - a hit came from it
            return call
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        try:
            raw.decode()
        except UnicodeDecodeError as bad:  # the policy would judge U+FFFD where the model reads other bytes
            raise InvalidRequest(f"the request body is not valid UTF-8 (byte {bad.start}); send JSON in UTF-8",
                                 code="invalid_json") from None
        try:  # what strict JSON refuses but clients send: a lone surrogate a reply carried, NaN
            body = loads_reply(raw)
        except NotJson:
            raise InvalidRequest(f"the request body is not valid JSON ({e}); send a JSON object", code="invalid_json") from None
    if not isinstance(body, dict):  # a JSON string holding a request is not one (the adapters would read it again)
        raise InvalidRequest(f"the request body must be a JSON object, not {type(body).__name__}", code="invalid_type")
    try:
        call = adapter.decode_request(body)
    except BadRequest as e:
        raise InvalidRequest(e.message, code=e.code, param=e.param) from None
    call = dataclasses.replace(call, nodes=history.nodes_of(call))
    if resent is not None:
        resent.remember(raw, call)
    return call


def unsupported_parameter(call: Call) -> InvalidRequest | None:
    """Parameters that would let a tool call reach the agent unjudged."""
    n = call.params.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):  # 2, but also 2.0 and "2", which lenient servers take
        return InvalidRequest("n > 1 is not supported: Proctor judges and records one reply per call, the one the "
                              "agent goes on with, and every choice would need judging; send n = 1 (or omit n)",
                              code="unsupported_parameter", param="n")
    if call.api == "responses" and call.params.get("background") not in (None, False):
        return InvalidRequest("background responses are not supported: their tool calls would reach the agent later "
                              "through GET /v1/responses/{id}, unjudged; send background: false (or omit it)",
                              code="unsupported_parameter", param="background")
    return None


async def read_within(request: web.Request, seconds: float, limit: int) -> bytes:
    """The request body, or the InvalidRequest that answers it: a 408 after ``seconds``,
    a 413 past ``limit`` bytes (at once when the declared length says so), a 400 for
    one that cannot be decoded as its Content-Encoding says. (asyncio.timeout arms a
    timer on this task; wait_for would wrap the read in a task of its own, a loop
    iteration more on every call.)"""
    if request.content_length is not None and request.content_length > limit:
        raise body_too_large(limit)
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(seconds):
                return await request.read()
        return await asyncio.wait_for(request.read(), seconds)  # pragma: no cover - Python 3.10
    except asyncio.TimeoutError:
        raise body_too_slow(seconds) from None
    except web.HTTPRequestEntityTooLarge:  # sent chunked, with no length to refuse it by
        raise body_too_large(limit) from None
    except RequestPayloadError as e:
        reason = " ".join(str(e).split()).removeprefix("400, message: ")
        raise InvalidRequest(f"the request body could not be read ({reason}); send it as its Content-Encoding "
                             "header says, or uncompressed without one", code="invalid_body") from None
