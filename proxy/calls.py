"""One model call, hop by hop (DESIGN.md "One call"): decode, resolve the session,
judge what the call adds, forward, judge each tool call and the final message
of the reply, record, answer. Streaming and non-streaming share everything but
the forwarding loop, and every outcome (success, refusal, upstream error, bad
input, a cut stream) ends in exactly one ``record_call``."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from adapters.base import Adapter
from adapters.common import NotJson, loads_reply
from adapters.edits import ActionEdit, Enforcer, TextEdit
from adapters.model import Call, EventKind, Reply, TrajectoryEvent
from adapters.responses_enforce import denied_answers, with_denied_answered
from proxy import history
from proxy.context import PROXY, Proxy
from proxy.enforcement import Enforcement, refusal_text
from proxy.errors import InvalidRequest, ProctorError, UpstreamUnavailable
from proxy.ids import random_hex
from proxy.incoming import decode_call, read_within, unsupported_parameter
from proxy.policy.decision import Finding
from proxy.redact import call_secrets, redact_credentials, redact_decision, redact_events, redact_json, redact_text
from proxy.sessions import Resolution, spawn_hashes
from proxy.store.base import CallRecord, NewCall
from proxy.upstream import forwardable, read_body


class PolicyDenied(ProctorError):
    status = 403
    code = "policy_denied"
    type = "policy_denied"


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


async def handle_model_call(request: web.Request, adapter: Adapter, enforcer: Enforcer) -> web.StreamResponse:
    return await ModelCall(request, adapter, enforcer).run()


# The event that tells each SDK its stream is complete. Proctor holds it back until
# the call is recorded, so an agent that sends its next call the moment a stream
# ends always finds this one in the store.
_TERMINATORS: dict[str, tuple[bytes, ...]] = {
    "chat": (b"data: [DONE]",),
    "responses": (b'"type":"response.completed"', b'"type": "response.completed"',
                  b'"type":"response.incomplete"', b'"type":"response.failed"'),
    "messages": (b"event: message_stop", b'"type":"message_stop"', b'"type": "message_stop"'),
}


def split_terminator(api: str, chunk: bytes) -> tuple[bytes, bytes]:
    """(what may be written now, the terminal event and what follows it)."""
    for marker in _TERMINATORS.get(api, ()):
        at = chunk.find(marker)
        if at >= 0:
            start = max(chunk.rfind(b"\n\n", 0, at), chunk.rfind(b"\r\n\r\n", 0, at))
            start = 0 if start < 0 else start + (4 if chunk[start:start + 4] == b"\r\n\r\n" else 2)
            return chunk[:start], chunk[start:]
    return chunk, b""


class ModelCall:
    def __init__(self, request: web.Request, adapter: Adapter, enforcer: Enforcer) -> None:
        self.request = request
        self.proxy: Proxy = request.app[PROXY]
        self.adapter = adapter
        self.enforcer = enforcer
        self.started, self.t0 = time.time(), time.perf_counter()
        self.call_id = "call_" + random_hex(20)
        self.call: Call | None = None
        self.res: Resolution | None = None
        self.enf: Enforcement | None = None
        self.outcome = Outcome()
        self.held_tail = b""  # a stream's terminal event, written after the call is recorded
        # What the client was sent, when a verdict changed the reply: the client re-sends
        # this (not the model's original) in its next call, so the history tree follows it.
        self.visible: Reply | None = None
        self.sent: list[bytes] = []  # a stream's bytes as written, decoded only if rewritten
        self.rewritten = False
        # A request refused at the request stage: its events are recorded, but not as
        # history a later call extends, so sending it again is judged again.
        self.withheld = False

    @property
    def session_id(self) -> str:
        assert self.res is not None
        return self.res.session_id

    async def run(self) -> web.StreamResponse:
        proxy, request = self.proxy, self.request
        try:
            raw = await read_within(request, proxy.config.client_body_timeout, proxy.config.max_body_bytes)
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError is one too
            # The client left mid-upload: there is no one to answer and no call to record.
            return web.Response(status=400)
        except InvalidRequest as err:  # answered once the session is known
            self.res = await proxy.sessions.resolve(request.headers, None)
            return await self._fail(err)
        try:
            self.call = call = decode_call(self.adapter, raw, proxy.resend)
        except InvalidRequest as err:
            self.res = await proxy.sessions.resolve(request.headers, None)
            return await self._fail(err)

        self.res = await proxy.sessions.resolve(request.headers, call)
        if (unsupported := unsupported_parameter(call)) is not None:
            return await self._fail(unsupported)
        self.enf = await Enforcement.open(
            proxy.policy, proxy.approvals, proxy.store, call, self.res, self.call_id, request.headers
        )
        refused = await self.enf.check_request()
        if refused:
            return await self._refuse(refused)
        if call.previous_response_id and self.adapter.api == "responses":
            raw = await self._answer_denied(raw, call.previous_response_id)
        try:
            up = await proxy.upstream.send(
                "POST", proxy.upstream.target(self.adapter.api, request.path, request.query_string),
                proxy.upstream.headers(self.adapter.api, request.headers), raw,
            )
        except ProctorError as err:
            return await self._fail(err)

        async with up:
            self.outcome.status = up.status
            if call.stream and up.status == 200:
                return await self._stream(up)
            try:
                body = await read_body(up, proxy.config.read_timeout)
            except ProctorError as err:
                return await self._fail(err)
        if up.status == 200:
            try:
                body = await self._enforce_json(body)
            except UpstreamUnavailable as err:
                return await self._fail(err)
        else:
            text = redact_credentials(body[:65536].decode("utf-8", "replace"), request.headers, proxy.config)
            self.outcome.error = f"upstream answered {up.status}: {text[:500]}"  # cut after redacting: no key half-kept
        await self._record()
        return web.Response(status=up.status, body=body, headers=_response_headers(up, self.session_id))

    async def _answer_denied(self, raw: bytes, response_id: str) -> bytes:
        """The upstream kept the response this call continues with the tool calls Proctor
        denied out of it, and refuses a continuation that leaves one unanswered: the
        body goes with an output saying so for each the agent (which never saw them)
        could not answer."""
        denied = await self.proxy.store.denied_calls(response_id)
        if not denied:
            return raw
        fixed = with_denied_answered(loads_reply(raw), denied)
        return raw if fixed is None else orjson.dumps(fixed)

    async def _enforce_json(self, body: bytes) -> bytes:
        """Judge the reply's tool calls in order, then its final message; rewrite the
        body only when a verdict changes something."""
        assert self.enf is not None and self.call is not None
        try:
            doc = loads_reply(body)
        except NotJson:
            doc = None
        if not isinstance(doc, dict):  # nothing Proctor cannot read reaches the client: it could hold a tool call
            raise UpstreamUnavailable(
                f"the upstream answered 200 with a body that is not a JSON object ({body[:80]!r}); Proctor forwards "
                "no reply it cannot judge", code="upstream_invalid_reply")
        reply = self.adapter.decode_response(doc)
        self.outcome.reply = reply
        edits: list[ActionEdit] = []
        earlier: list[TrajectoryEvent] = []
        for ev in reply.events:
            if ev.kind is EventKind.TOOL_CALL:
                edits.append(await self.enf.check_action(ev, len(edits), earlier))
            earlier.append(ev)
        text: TextEdit | None = None
        if not edits and reply.events and reply.events[-1].kind is EventKind.ASSISTANT:
            text = await self.enf.check_message(reply.events[-1], list(reply.events[:-1]), delivered=False)
        rewritten = self.enforcer.rewrite_response(doc, edits, text)
        if rewritten is doc:  # nothing changed: the upstream's bytes go on as they came
            return body
        self.visible = self.adapter.decode_response(rewritten)
        return orjson.dumps(rewritten)

    async def _stream(self, up: aiohttp.ClientResponse) -> web.StreamResponse:
        """Text flows as it arrives; each tool call is held by the enforcer's stream
        filter until judged; the trajectory is recorded before the stream ends."""
        assert self.enf is not None
        resp = web.StreamResponse(status=up.status, headers=_response_headers(up, self.session_id))
        try:
            await resp.prepare(self.request)
        except ConnectionResetError:
            # Gone before the first byte: nothing of the reply was judged or sent.
            self.outcome.error = "the client disconnected before the response started"
            await self._record()
            return resp
        decoder = self.adapter.stream_decoder()
        gate = self.enforcer.stream_filter()
        fault: ProctorError | None = None
        judged: list[TrajectoryEvent] = []
        try:
            async for chunk in up.content.iter_any():
                decoder.feed(chunk)
                gate.feed(chunk)
                if not await self._drain(gate, resp, judged):
                    break
        except (aiohttp.ClientError, TimeoutError) as e:
            fault = UpstreamUnavailable(f"the upstream stream broke after it started: {e!r}", code="upstream_stream_cut")
        gate.close()
        reply = self.outcome.reply = decoder.reply()
        if self.rewritten:
            seen = self.adapter.stream_decoder()
            for chunk in [*self.sent, self.held_tail]:
                seen.feed(chunk)
            self.visible = seen.reply()
        unjudged = sum(ev.kind is EventKind.TOOL_CALL for ev in reply.events) > len(judged)
        if fault is None and unjudged:  # ended inside a tool call: never release what was not judged
            fault = UpstreamUnavailable("the upstream stream ended inside a tool call", code="upstream_stream_cut")
        if fault is None and self.outcome.error is None:
            await self._drain(gate, resp, judged)
        if fault is None and reply.events and reply.events[-1].kind is EventKind.ASSISTANT and not judged:
            await self.enf.check_message(reply.events[-1], list(reply.events[:-1]), delivered=True)
        if fault is not None:
            self.outcome.status, self.outcome.error = fault.status, fault.message
            self.outcome.extra_events.append(_error_event(fault))
        client_gone = self.outcome.error is not None
        if not client_gone and not decoder.finished:  # relayed as it came, but the audit must say so
            self.outcome.error = (f"the upstream stream ended without its end (no finish reason, terminal event or "
                                  f"message_stop): an error event, or not a {self.adapter.api} stream at all")
        elif not client_gone and _tool_calls(reply.events) != _tool_calls(judged):
            self.outcome.error = ("the upstream's final response lists other tool calls than it streamed; the client "
                                  "got the calls as they were judged")
        await self._record()
        if fault is not None:
            if self.request.transport is not None:  # the client must see a broken stream, as without us
                self.request.transport.close()
            return resp
        if not client_gone:
            try:
                if self.held_tail:
                    await resp.write(self.held_tail)
                await resp.write_eof()
            except ConnectionResetError:  # the client left right after the last event; all is recorded
                pass
        return resp

    async def _drain(self, gate: Any, resp: web.StreamResponse, judged: list[TrajectoryEvent]) -> bool:
        """Write what the filter releases, judging held tool calls; False when the client left."""
        assert self.enf is not None
        while (item := gate.next()) is not None:
            if isinstance(item, TrajectoryEvent):
                edit = await self.enf.check_action(item, len(judged), list(judged))
                self.rewritten = self.rewritten or edit.verdict != "allow"
                gate.decide(edit)
                judged.append(item)
                continue
            if self.held_tail:
                self.held_tail += item
                continue
            item, self.held_tail = split_terminator(self.adapter.api, item)
            try:
                if item:
                    self.sent.append(item)
                    await resp.write(item)
            except ConnectionResetError:  # aiohttp's ClientConnectionResetError is also a ClientError
                self.outcome.error = "the client disconnected before the stream ended"
                return False
        return True

    async def _refuse(self, findings: tuple[Finding, ...]) -> web.StreamResponse:
        """A request-stage denial: a 403 in the API's error shape, or (deny_response =
        message) an assistant answer that explains it, so agent loops carry on."""
        assert self.call is not None
        text = refusal_text(None, findings)
        self.outcome.status = 403
        self.outcome.error = text
        self.withheld = True
        if self.proxy.config.deny_response == "message":
            self.outcome.status = 200
            headers = {"X-Proctor-Session": self.session_id}
            await self._record()
            if self.call.stream:
                body = self.enforcer.text_reply_stream(self.call, text)
                return web.Response(body=body, content_type="text/event-stream", headers=headers)
            return web.Response(body=orjson.dumps(self.enforcer.text_reply(self.call, text)),
                                content_type="application/json", headers=headers)
        err = PolicyDenied(text, param=findings[0].rule)
        await self._record()
        return error_response(self.adapter, err, self.session_id)

    async def _fail(self, err: ProctorError) -> web.Response:
        self.outcome = Outcome(status=err.status, error=err.message, extra_events=[_error_event(err)])
        await self._record()
        return error_response(self.adapter, err, self.session_id)

    async def _record(self) -> None:
        res, call, outcome, enf = self.res, self.call, self.outcome, self.enf
        assert res is not None
        reply_events = enf.finish(outcome.reply.events) if enf is not None else list(outcome.reply.events)
        decision_events = enf.decision_events() if enf is not None else []
        appended = [dataclasses.replace(ev, labels={**ev.labels, "withheld": True}) for ev in res.append] if self.withheld \
            else res.append
        events = [*appended, *reply_events, *decision_events, *outcome.extra_events]
        nodes = [] if self.withheld else list(res.nodes)
        visible = list(self.visible.events) if self.visible is not None else reply_events
        reply_nodes = history.chain(visible, start=res.tail) if visible else []
        parent = res.tail
        for i, node in enumerate(reply_nodes):
            # nodes of a rewritten reply stand for what the client saw, not for stored events
            nodes.append((node, parent, len(res.append) + i if self.visible is None else -1))
            parent = node
        decisions = enf.records if enf is not None else ()
        labels = enf.labels if enf is not None else {}
        secrets = call_secrets(self.request.headers, self.proxy.config)
        if secrets and (redacted := redact_events(events, secrets)) is not None:
            # what the policy saw, said and labelled came from the same texts
            events, labels = redacted, redact_json(labels, secrets)
            decisions = [redact_decision(d, secrets) for d in decisions]
            reply_events = redacted[len(appended):len(appended) + len(reply_events)]
        if secrets and outcome.error:
            outcome.error = redact_text(outcome.error, secrets)
        denied_calls = denied_answers(reply_events) if self.adapter.api == "responses" else []
        usage = outcome.reply.usage
        record = CallRecord(
            id=self.call_id, session_id=res.session_id, api=self.adapter.api, path=self.request.path,
            model=call.model if call is not None else None, stream=call.stream if call is not None else False,
            started=self.started, latency_ms=(time.perf_counter() - self.t0) * 1000, status=outcome.status,
            resolved_by=res.resolved_by, error=outcome.error, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, response_id=outcome.reply.response_id,
        )
        await self.proxy.store.record_call(
            NewCall(
                call=record, events=events, nodes=nodes, response_id=outcome.reply.response_id,
                response_node=reply_nodes[-1] if reply_nodes else None, parent_session_id=res.parent_session_id,
                request_node=None if self.withheld else res.tail or None,
                reply_hashes=list(dict.fromkeys(ev.hash for ev in (*reply_events, *visible))),
                spawn_hashes=spawn_hashes(reply_events),
                labels=labels, terminate=enf.terminate if enf is not None else False,
                decisions=decisions, denied_calls=denied_calls,
            )
        )


def _tool_calls(events: Any) -> list[tuple[Any, ...]]:
    return [(e.tool_call_id, e.tool_name, e.arguments) for e in events if e.kind is EventKind.TOOL_CALL]


def _error_event(err: ProctorError) -> TrajectoryEvent:
    return TrajectoryEvent(kind=EventKind.ERROR, text=err.message, labels={"code": err.code, "status": err.status})
