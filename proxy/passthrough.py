"""Every other ``/v1/*`` endpoint (models, files, embeddings, ...): forwarded
unchanged, streamed back, and recorded as a call with no events: in the session
its headers name, else in the day's ``passthrough-YYYY-MM-DD`` session (UTC), so
clients that poll ``/v1/models`` do not open a session per call.

Anthropic's own endpoints besides ``/v1/messages`` (``/v1/messages/count_tokens``,
``/v1/messages/batches``, and any request its SDK sends, which always carries
``anthropic-version``) go to the Anthropic upstream with Anthropic credentials:
sent to the OpenAI upstream they would fail, and carry the Anthropic key to the
wrong provider."""

from __future__ import annotations

import dataclasses
import time

import aiohttp
from aiohttp import web

from proxy.calls import error_response
from proxy.incoming import read_within
from proxy.context import PROXY
from proxy.errors import ProctorError
from proxy.ids import random_hex
from proxy.store.base import CallRecord, NewCall
from proxy.upstream import forwardable


def upstream_api(request: web.Request) -> str:
    """``messages`` (the Anthropic upstream) for Anthropic's endpoints and clients,
    ``passthrough`` (the OpenAI-style upstream) for the rest."""
    if request.path.startswith("/v1/messages/") or "anthropic-version" in request.headers:
        return "messages"
    return "passthrough"


async def handle_passthrough(request: web.Request) -> web.StreamResponse:
    proxy = request.app[PROXY]
    started, t0 = time.time(), time.perf_counter()
    res = await proxy.sessions.resolve(request.headers, None)
    if res.resolved_by == "new":  # nothing names a session: the day's pass-through session, not one per call
        res = dataclasses.replace(res, session_id=f"passthrough-{time.strftime('%Y-%m-%d', time.gmtime())}",
                                  resolved_by="passthrough")
    status, error = 0, None
    resp: web.StreamResponse | None = None
    api = upstream_api(request)
    try:
        body = await read_within(request, proxy.config.client_body_timeout, proxy.config.max_body_bytes) \
            if request.body_exists else None
        up = await proxy.upstream.send(
            request.method,
            proxy.upstream.target(api, request.path, request.query_string),
            proxy.upstream.headers(api, request.headers),
            body,
        )
        async with up:
            status = up.status
            headers = dict(forwardable(up.headers))
            headers["X-Proctor-Session"] = res.session_id
            resp = web.StreamResponse(status=up.status, headers=headers)
            await resp.prepare(request)
            try:
                async for chunk in up.content.iter_any():
                    try:
                        await resp.write(chunk)
                    except ConnectionResetError:  # aiohttp's ClientConnectionResetError is also a ClientError
                        error = "the client disconnected before the response ended"
                        break
            except (aiohttp.ClientError, TimeoutError) as e:
                error = f"the upstream response broke after it started: {e!r}"
    except ProctorError as err:
        status, error = err.status, err.message
        resp = error_response(None, err, res.session_id)
    record = CallRecord(
        id="call_" + random_hex(20), session_id=res.session_id, api="passthrough", path=request.path,
        model=None, stream=False, started=started, latency_ms=(time.perf_counter() - t0) * 1000,
        status=status, resolved_by=res.resolved_by, error=error,
    )
    await proxy.store.record_call(NewCall(call=record, events=(), nodes=(), parent_session_id=res.parent_session_id))
    if error is not None and resp.prepared:
        if request.transport is not None:
            request.transport.close()
        return resp
    if resp.prepared:
        try:
            await resp.write_eof()
        except ConnectionResetError:  # the client left after the last byte: all is recorded
            pass
    return resp
