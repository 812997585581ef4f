"""One model call, hop by hop: decode, resolve the session, forward, decode the
reply, record, answer. Streaming and non-streaming share everything but the
forwarding loop, and every outcome (success, upstream error, bad input, a cut
stream) ends in exactly one ``record_call``."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiohttp import web

from adapters.base import Adapter, BadRequest
from adapters.model import Call, EventKind, Reply, TrajectoryEvent
from proxy import history
from proxy.context import PROXY, Proxy
from proxy.errors import InvalidRequest, ProctorError, UpstreamUnavailable
from proxy.sessions import Resolution, spawn_hashes
from proxy.store.base import CallRecord, NewCall
from proxy.upstream import forwardable, read_body


@dataclass
class Outcome:
    """What happened to a call, filled in as it goes and recorded at the end."""

    status: int = 200
    error: str | None = None
    reply: Reply = field(default_factory=lambda: Reply(events=()))
    extra_events: list[TrajectoryEvent] = field(default_factory=list)


def error_response(adapter: Adapter | None, err: ProctorError, session_id: str | None) -> web.Response:
    if adapter is None:
        body = {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    else:
        body = adapter.error_body(err.message, type=err.type, code=err.code, param=err.param)
    headers = {"X-Proctor-Session": session_id} if session_id else None
    return web.Response(status=err.status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _response_headers(upstream: aiohttp.ClientResponse, session_id: str) -> dict[str, str]:
    headers = dict(forwardable(upstream.headers))
    headers["X-Proctor-Session"] = session_id
    return headers


def decode_call(adapter: Adapter, raw: bytes) -> Call:
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"the request body is not valid JSON ({e}); send a JSON object", code="invalid_json") from None
    try:
        return adapter.decode_request(body)
    except BadRequest as e:
        raise InvalidRequest(e.message, code=e.code, param=e.param) from None


async def handle_model_call(request: web.Request, adapter: Adapter) -> web.StreamResponse:
    proxy = request.app[PROXY]
    started, t0 = time.time(), time.perf_counter()
    call_id = "call_" + uuid.uuid4().hex[:20]
    raw = await request.read()
    try:
        call = decode_call(adapter, raw)
    except InvalidRequest as err:
        res = await proxy.sessions.resolve(request.headers, None)
        await _record(proxy, request, adapter, None, res, call_id, started, t0, _failed(err))
        return error_response(adapter, err, res.session_id)

    res = await proxy.sessions.resolve(request.headers, call)
    outcome = Outcome()
    try:
        up = await proxy.upstream.send(
            "POST",
            proxy.upstream.target(adapter.api, request.path, request.query_string),
            proxy.upstream.headers(adapter.api, request.headers),
            raw,
        )
    except ProctorError as err:
        await _record(proxy, request, adapter, call, res, call_id, started, t0, _failed(err))
        return error_response(adapter, err, res.session_id)

    async with up:
        outcome.status = up.status
        if call.stream and up.status == 200:
            return await _stream(request, proxy, adapter, call, res, up, call_id, started, t0, outcome)
        try:
            body = await read_body(up, proxy.config.read_timeout)
        except ProctorError as err:
            await _record(proxy, request, adapter, call, res, call_id, started, t0, _failed(err))
            return error_response(adapter, err, res.session_id)
    if up.status == 200:
        outcome.reply = adapter.decode_response(_loads_or_none(body))
    else:
        outcome.error = f"upstream answered {up.status}: {body[:500].decode('utf-8', 'replace')}"
    await _record(proxy, request, adapter, call, res, call_id, started, t0, outcome)
    return web.Response(status=up.status, body=body, headers=_response_headers(up, res.session_id))


async def _stream(
    request: web.Request, proxy: Proxy, adapter: Adapter, call: Call, res: Resolution,
    up: aiohttp.ClientResponse, call_id: str, started: float, t0: float, outcome: Outcome,
) -> web.StreamResponse:
    """Forward each chunk as it arrives; decode alongside; record before the end."""
    resp = web.StreamResponse(status=up.status, headers=_response_headers(up, res.session_id))
    await resp.prepare(request)
    decoder = adapter.stream_decoder()
    fault: ProctorError | None = None
    try:
        async for chunk in up.content.iter_any():
            decoder.feed(chunk)
            await resp.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as e:
        fault = UpstreamUnavailable(f"the upstream stream broke after it started: {e!r}", code="upstream_stream_cut")
    except ConnectionResetError:
        outcome.error = "the client disconnected before the stream ended"
    outcome.reply = decoder.reply()
    if fault is not None:
        outcome.status, outcome.error = fault.status, fault.message
        outcome.extra_events.append(_error_event(fault))
    await _record(proxy, request, adapter, call, res, call_id, started, t0, outcome)
    if fault is not None:
        # The client must see a broken stream, as it would have without us.
        if request.transport is not None:
            request.transport.close()
        return resp
    if outcome.error is None:
        await resp.write_eof()
    return resp


def _loads_or_none(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _error_event(err: ProctorError) -> TrajectoryEvent:
    return TrajectoryEvent(kind=EventKind.ERROR, text=err.message, labels={"code": err.code, "status": err.status})


def _failed(err: ProctorError) -> Outcome:
    return Outcome(status=err.status, error=err.message, extra_events=[_error_event(err)])


async def _record(
    proxy: Proxy, request: web.Request, adapter: Adapter, call: Call | None, res: Resolution,
    call_id: str, started: float, t0: float, outcome: Outcome,
) -> None:
    reply_events = list(outcome.reply.events)
    events = [*res.append, *reply_events, *outcome.extra_events]
    nodes = list(res.nodes)
    reply_nodes = history.chain(reply_events, start=res.tail) if reply_events else []
    parent = res.tail
    for i, node in enumerate(reply_nodes):
        nodes.append((node, parent, len(res.append) + i))
        parent = node
    usage = outcome.reply.usage
    record = CallRecord(
        id=call_id,
        session_id=res.session_id,
        api=adapter.api,
        path=request.path,
        model=call.model if call is not None else None,
        stream=call.stream if call is not None else False,
        started=started,
        latency_ms=(time.perf_counter() - t0) * 1000,
        status=outcome.status,
        resolved_by=res.resolved_by,
        error=outcome.error,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        response_id=outcome.reply.response_id,
    )
    await proxy.store.record_call(
        NewCall(
            call=record,
            events=events,
            nodes=nodes,
            response_id=outcome.reply.response_id,
            response_node=reply_nodes[-1] if reply_nodes else None,
            parent_session_id=res.parent_session_id,
            reply_hashes=[ev.hash for ev in reply_events],
            spawn_hashes=spawn_hashes(reply_events),
        )
    )
