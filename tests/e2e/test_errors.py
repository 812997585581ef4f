"""Bad input and upstream faults: each gets its error in the API's own shape,
each failed call is recorded, and the proxy keeps serving afterwards."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from proxy.scripted_model import Fault, Turn, echo_responder, start_model_server

from .conftest import calls_of, events_of, sessions_of

KEY = "sk-client-e2e-errors-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT_OK: Any = {"model": "gpt-test", "messages": [{"role": "user", "content": "still there?"}]}


def post(url: str, body: bytes | Any, headers: dict[str, str] | None = None, timeout: float = 10) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(url, content=raw, headers={"Content-Type": "application/json", **AUTH, **(headers or {})}, timeout=timeout)


def still_serves(proxy: Any, upstream: Any) -> None:
    upstream.answer(echo_responder)
    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10)
    completion = client.chat.completions.create(**CHAT_OK)
    client.close()
    assert completion.choices[0].message.content == "echo: still there?"
    assert httpx.get(proxy.base + "/healthz").json() == {"status": "ok"}


def recorded(proxy: Any, session_id: str) -> Any:
    (call,) = calls_of(proxy, session_id)
    return call


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- bad input ------------------------------------------------------------------

MESSAGE = {"role": "user", "content": "hi"}
CHAT_BAD: list[tuple[str, bytes | Any, str, str]] = [
    # (id, body, code, a piece of the message that says what is wrong)
    ("not-json", b"{'model': 'gpt'", "invalid_json", "not valid JSON"),
    ("empty", b"", "invalid_json", "empty"),
    # past a float's range, and nested past 1,024 levels: orjson and Python's json both refuse them
    ("integer-past-float-range", b'{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"seed":1' + b"0" * 400 + b"}",
     "invalid_json", "not valid JSON"),
    ("nested-3000-deep", b'{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * 3000 + b"]" * 3000 + b"}",
     "invalid_json", "not valid JSON"),
    ("not-object", [1, 2], "invalid_type", "JSON object"),
    ("json-string", b'"hello"', "invalid_type", "JSON object"),
    ("double-encoded", orjson.dumps(orjson.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).decode()),
     "invalid_type", "JSON object"),
    ("null", b"null", "invalid_type", "JSON object"),
    ("missing-model", {"messages": [MESSAGE]}, "missing_field", "'model' is required"),
    ("model-number", {"model": 4, "messages": [MESSAGE]}, "invalid_type", "'model' must be"),
    ("missing-messages", {"model": "gpt-test"}, "missing_field", "'messages' must be a non-empty array"),
    ("messages-not-list", {"model": "gpt-test", "messages": "hi"}, "invalid_type", "'messages' must be a non-empty array"),
    ("message-not-object", {"model": "gpt-test", "messages": ["hi"]}, "invalid_type", "'messages[0]' must be"),
    ("bad-role", {"model": "gpt-test", "messages": [{"role": "wizard", "content": "x"}]}, "invalid_request", "messages[0].role"),
    ("content-number", {"model": "gpt-test", "messages": [{"role": "user", "content": 42}]}, "invalid_type",
     "'messages[0].content' must be a string or an array of content parts, not a number"),
    ("tools-not-list", {"model": "gpt-test", "messages": [MESSAGE], "tools": "search"}, "invalid_type", "'tools' must be an array"),
    ("tool-no-function", {"model": "gpt-test", "messages": [MESSAGE], "tools": [{"type": "function"}]}, "invalid_type",
     "'tools[0].function' must be"),
    ("tool-no-name", {"model": "gpt-test", "messages": [MESSAGE], "tools": [{"type": "function", "function": {}}]},
     "missing_field", "'tools[0].function.name' is required"),
    ("stream-string", {"model": "gpt-test", "messages": [MESSAGE], "stream": "yes"}, "invalid_type", "'stream' must be"),
    ("stream-options-string", {"model": "gpt-test", "messages": [MESSAGE], "stream_options": "x"}, "invalid_type",
     "'stream_options' must be an object, not a string"),
    ("metadata-string", {"model": "gpt-test", "messages": [MESSAGE], "metadata": "x"}, "invalid_type", "'metadata' must be an object"),
]


@pytest.mark.parametrize("body,code,says", [c[1:] for c in CHAT_BAD], ids=[c[0] for c in CHAT_BAD])
def test_chat_bad_input(body: Any, code: str, says: str, proxy: Any, upstream: Any) -> None:
    resp = post(proxy.url + "/chat/completions", body)

    assert resp.status_code == 400
    error = resp.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", code)
    assert says in error["message"]
    assert upstream.received == []  # nothing went upstream
    session_id = resp.headers["X-Proctor-Session"]
    call = recorded(proxy, session_id)
    assert (call.status, call.api, call.path) == (400, "chat", "/v1/chat/completions")
    assert call.error and says in call.error
    (event,) = events_of(proxy, session_id)
    assert event.kind.value == "error" and event.labels["code"] == code
    still_serves(proxy, upstream)


def test_bad_input_reaches_sdk_as_bad_request(proxy: Any, upstream: Any) -> None:
    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": 42}])  # type: ignore[misc]
    assert caught.value.code == "invalid_type"
    assert "'messages[0].content'" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-test", input=7)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_type" and "'input'" in caught.value.message
    client.close()
    still_serves(proxy, upstream)


RESPONSES_BAD: list[tuple[str, bytes | Any, str, str]] = [
    ("not-json", b"nope", "invalid_json", "not valid JSON"),
    ("missing-model", {"input": "hi"}, "missing_field", "'model' is required"),
    ("missing-input", {"model": "gpt-test"}, "missing_field", "'input'"),
    ("input-number", {"model": "gpt-test", "input": 3}, "invalid_type", "'input'"),
    # its tool calls would come later through GET /v1/responses/{id}, which nothing judges
    ("background", {"model": "gpt-test", "input": "hi", "background": True}, "unsupported_parameter", "background responses"),
]


@pytest.mark.parametrize("body,code,says", [c[1:] for c in RESPONSES_BAD], ids=[c[0] for c in RESPONSES_BAD])
def test_responses_bad_input(body: Any, code: str, says: str, proxy: Any, upstream: Any) -> None:
    resp = post(proxy.url + "/responses", body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code) and says in error["message"]
    assert recorded(proxy, resp.headers["X-Proctor-Session"]).status == 400
    still_serves(proxy, upstream)


MESSAGES_BAD: list[tuple[str, bytes | Any, str, str]] = [
    ("not-json", b"{", "invalid_json", "not valid JSON"),
    ("empty", b"", "invalid_json", "empty"),
    ("missing-model", {"max_tokens": 10, "messages": [MESSAGE]}, "missing_field", "'model' is required"),
    ("missing-max-tokens", {"model": "claude-test", "messages": [MESSAGE]}, "missing_field", "'max_tokens'"),
    ("missing-messages", {"model": "claude-test", "max_tokens": 10}, "missing_field", "'messages'"),
    ("content-number", {"model": "claude-test", "max_tokens": 10, "messages": [{"role": "user", "content": 1}]},
     "invalid_type", "'messages[0].content' must be"),
    ("tool-no-name", {"model": "claude-test", "max_tokens": 10, "messages": [MESSAGE], "tools": [{"input_schema": {}}]},
     "missing_field", "'tools[0].name'"),
]


@pytest.mark.parametrize("body,code,says", [c[1:] for c in MESSAGES_BAD], ids=[c[0] for c in MESSAGES_BAD])
def test_messages_bad_input_in_anthropic_shape(body: Any, code: str, says: str, proxy: Any, upstream: Any) -> None:
    resp = post(proxy.url + "/messages", body, {"x-api-key": KEY})
    assert resp.status_code == 400
    doc = resp.json()
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["code"] == code and says in doc["error"]["message"]
    call = recorded(proxy, resp.headers["X-Proctor-Session"])
    assert (call.status, call.api) == (400, "messages")
    still_serves(proxy, upstream)


def test_messages_bad_input_reaches_anthropic_sdk(proxy: Any, upstream: Any) -> None:
    client = anthropic.Anthropic(base_url=proxy.base, api_key=KEY, max_retries=0, timeout=10)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="claude-test", max_tokens=10, messages=[{"role": "user", "content": 1}])  # type: ignore[typeddict-item]
    assert "'messages[0].content'" in caught.value.message
    client.close()
    still_serves(proxy, upstream)


def test_session_header_applies_to_bad_input(proxy: Any, upstream: Any) -> None:
    resp = post(proxy.url + "/chat/completions", b"garbage", {"X-Proctor-Session": "broken-client"})
    assert resp.status_code == 400 and resp.headers["X-Proctor-Session"] == "broken-client"
    assert recorded(proxy, "broken-client").status == 400


# ---- upstream faults ---------------------------------------------------------------


def test_upstream_unreachable_is_502(make_proxy: Any, upstream: Any) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    proxy = make_proxy(anthropic_upstream=dead)  # chat still goes to the live upstream
    upstream.received.clear()

    resp = post(proxy.url + "/messages", {"model": "claude-test", "max_tokens": 10, "messages": [MESSAGE]})
    assert resp.status_code == 502
    doc = resp.json()
    assert doc["type"] == "error" and doc["error"]["code"] == "upstream_unavailable"
    assert "cannot reach the upstream" in doc["error"]["message"]
    call = recorded(proxy, resp.headers["X-Proctor-Session"])
    assert call.status == 502 and "cannot reach" in call.error
    kinds = [e.kind.value for e in events_of(proxy, resp.headers["X-Proctor-Session"])]
    assert kinds == ["user", "error"]  # the request's turn is kept, and what went wrong

    client = anthropic.Anthropic(base_url=proxy.base, api_key=KEY, max_retries=0, timeout=10)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-test", max_tokens=10, messages=[MESSAGE])  # type: ignore[list-item]
    assert caught.value.status_code == 502
    client.close()
    still_serves(proxy, upstream)


def test_everything_unreachable_openai_sdk(make_proxy: Any, upstream: Any) -> None:
    proxy = make_proxy(upstream=f"http://127.0.0.1:{closed_port()}/v1")
    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**CHAT_OK, stream=True)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_unavailable"
    resp = httpx.get(proxy.url + "/models", headers=AUTH)  # pass-through too
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_unavailable"
    client.close()
    statuses = sorted(c.status for s in sessions_of(proxy) for c in calls_of(proxy, s.id))
    assert statuses == [502, 502]
    assert httpx.get(proxy.base + "/healthz").status_code == 200


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_slower_than_read_timeout_is_504(stream: bool, make_proxy: Any, upstream: Any) -> None:
    proxy = make_proxy(read_timeout=0.3)
    upstream.answer(Fault(delay=2, status=200))
    resp = post(proxy.url + "/chat/completions", {**CHAT_OK, "stream": stream})
    assert resp.status_code == 504
    error = resp.json()["error"]
    assert error["code"] == "upstream_timeout" and "0.3s" in error["message"]
    assert resp.elapsed.total_seconds() < 1.5
    call = recorded(proxy, resp.headers["X-Proctor-Session"])
    assert call.status == 504 and call.error

    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**CHAT_OK)
    assert caught.value.status_code == 504
    client.close()
    still_serves(proxy, upstream)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_upstream_errors_pass_through_unchanged(status: int, proxy: Any, upstream: Any) -> None:
    body = {"error": {"message": f"scripted {status}", "type": "tokens", "param": None, "code": f"code_{status}"}, "extra": [1]}
    upstream.answer(Fault(status=status, body=body, headers={"Retry-After": "0", "X-Upstream-Thing": "kept"}))
    direct = post(upstream.url + "/chat/completions", CHAT_OK)
    through = post(proxy.url + "/chat/completions", CHAT_OK)

    assert direct.status_code == through.status_code == status
    assert through.content == direct.content  # byte for byte
    assert through.headers["X-Upstream-Thing"] == "kept" and through.headers["Retry-After"] == "0"
    call = recorded(proxy, through.headers["X-Proctor-Session"])
    assert call.status == status and f"code_{status}" in call.error

    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**CHAT_OK, stream=True)
    assert caught.value.status_code == status and caught.value.code == f"code_{status}"
    client.close()
    still_serves(proxy, upstream)


def test_anthropic_upstream_error_passes_through(proxy: Any, upstream: Any) -> None:
    upstream.answer(Fault(status=529))
    client = anthropic.Anthropic(base_url=proxy.base, api_key=KEY, max_retries=0, timeout=10)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-test", max_tokens=10, messages=[MESSAGE])  # type: ignore[list-item]
    assert caught.value.status_code == 529
    assert caught.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "scripted fault: HTTP 529"}}
    client.close()
    (session,) = sessions_of(proxy)
    assert recorded(proxy, session.id).status == 529
    still_serves(proxy, upstream)


def _consume_cut_stream(api: str, base: str) -> tuple[type[BaseException], int]:
    """Read a stream the upstream cuts; return what the SDK raised and how many events came first."""
    got: list[Any] = []
    if api == "messages":
        aclient = anthropic.Anthropic(base_url=base.removesuffix("/v1"), api_key=KEY, max_retries=0, timeout=10)
        # This SDK lets the transport's error through unwrapped when a stream is cut.
        with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)) as caught:
            with aclient.messages.stream(model="claude-test", max_tokens=10, messages=[MESSAGE]) as stream:  # type: ignore[list-item]
                got.extend(stream)
        aclient.close()
    else:
        client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=10)
        with pytest.raises(openai.APIConnectionError) as caught:
            if api == "chat":
                got.extend(client.chat.completions.create(**CHAT_OK, stream=True))
            else:
                got.extend(client.responses.create(model="gpt-test", input="hi", stream=True))
        client.close()
    return type(caught.value), len(got)


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
def test_stream_cut_midway_reaches_client_as_connection_error(api: str, proxy: Any, upstream: Any) -> None:
    upstream.answer(Fault(cut_after_chunks=3, turn=Turn(text="a long answer that will never arrive whole")))
    direct_error, direct_events = _consume_cut_stream(api, upstream.url)
    proxied_error, proxied_events = _consume_cut_stream(api, proxy.url)
    assert proxied_error is direct_error  # the same kind of fault as without the proxy
    assert proxied_events == direct_events and 0 < proxied_events <= 3  # what came before the cut did arrive

    (session,) = sessions_of(proxy)
    call = recorded(proxy, session.id)
    assert call.status == 502 and call.error and "broke" in call.error
    kinds = [e.kind.value for e in events_of(proxy, session.id)]
    assert kinds[0] == "user" and kinds[-1] == "error"
    still_serves(proxy, upstream)


def test_client_disconnect_mid_stream_is_recorded(make_proxy: Any, loop_thread: Any, upstream: Any) -> None:
    runner, url = loop_thread.run(start_model_server(echo_responder, chunks=20, chunk_delay=0.05))
    try:
        proxy = make_proxy(upstream=url)
        body = orjson.dumps({**CHAT_OK, "stream": True})
        with httpx.stream("POST", proxy.url + "/chat/completions", content=body, headers=AUTH, timeout=10) as resp:
            session_id = resp.headers["X-Proctor-Session"]
            next(resp.iter_raw())  # one piece, then hang up
        deadline = time.monotonic() + 5
        while not (calls := calls_of(proxy, session_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        (call,) = calls
        assert call.error and "disconnected" in call.error
        assert [e.kind.value for e in events_of(proxy, session_id)][0] == "user"
        assert httpx.get(proxy.base + "/healthz").status_code == 200
        assert post(proxy.url + "/chat/completions", CHAT_OK).json()["choices"][0]["message"]["content"] == "echo: still there?"
    finally:
        loop_thread.run(runner.cleanup())


def test_stream_stalling_beyond_read_timeout_is_cut(make_proxy: Any, loop_thread: Any, upstream: Any) -> None:
    """Headers and a first event came in time, then the upstream went quiet."""
    runner, url = loop_thread.run(start_model_server(echo_responder, chunks=5, chunk_delay=1.0))
    try:
        proxy = make_proxy(upstream=url, read_timeout=0.3)
        client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10)
        got: list[Any] = []
        t0 = time.perf_counter()
        with pytest.raises(openai.APIConnectionError):
            got.extend(client.chat.completions.create(**CHAT_OK, stream=True))
        assert time.perf_counter() - t0 < 0.9
        assert len(got) == 1
        (session,) = sessions_of(proxy)
        call = recorded(proxy, session.id)
        assert call.status == 502 and call.stream and "broke" in call.error
        client.close()
    finally:
        loop_thread.run(runner.cleanup())


def test_non_stream_body_cut_is_502(proxy: Any, upstream: Any) -> None:
    upstream.answer(Fault(cut_after_chunks=1))
    resp = post(proxy.url + "/chat/completions", CHAT_OK)
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_unavailable"
    call = recorded(proxy, resp.headers["X-Proctor-Session"])
    assert call.status == 502 and call.error
    still_serves(proxy, upstream)


def test_body_too_large_is_413_and_recorded(make_proxy: Any, upstream: Any) -> None:
    proxy = make_proxy(max_body_bytes=2048)
    big = {**CHAT_OK, "messages": [{"role": "user", "content": "x" * 4096}]}
    resp = post(proxy.url + "/chat/completions", big)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "body_too_large"
    assert "2048" in resp.json()["error"]["message"]
    call = recorded(proxy, resp.headers["X-Proctor-Session"])
    assert call.status == 413
    still_serves(proxy, upstream)


def _raw_request(proxy: Any, head: bytes) -> socket.socket:
    host, port = proxy.base.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(head)
    return conn


def _reply_of(conn: socket.socket) -> tuple[bytes, dict[str, Any]]:
    reply = b""
    with conn:
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            piece = conn.recv(65536)
            if not piece:
                break
            reply += piece
    status_line, _, rest = reply.partition(b"\r\n")
    return status_line, orjson.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_body_sent_too_slowly_gets_a_408_and_the_server_serves_on(make_proxy: Any, upstream: Any) -> None:
    upstream.answer(echo_responder)
    proxy = make_proxy(client_body_timeout=0.3)
    conn = _raw_request(proxy, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 500\r\n\r\n{\"model\": ")
    status_line, body = _reply_of(conn)
    assert b" 408 " in status_line
    error = body["error"]
    assert error["code"] == "request_timeout" and "client_body_timeout" in error["message"]
    assert post(proxy.url + "/chat/completions", CHAT_OK).status_code == 200
    # the same for a pass-through endpoint, and the call is recorded
    conn = _raw_request(proxy, b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"X-Proctor-Session: slow-embed\r\nContent-Length: 500\r\n\r\n{\"input\": ")
    with conn:
        head = conn.recv(65536)
    assert b" 408 " in head.partition(b"\r\n")[0]
    (call,) = calls_of(proxy, "slow-embed")
    assert call.status == 408 and "client_body_timeout" in (call.error or "")


def test_a_client_gone_before_the_stream_starts_is_recorded(make_proxy: Any, loop_thread: Any) -> None:
    """The upstream is slow to its first byte; the client hangs up meanwhile."""
    from aiohttp import web

    from tests.conftest import chat_upstream

    started: list[float] = []

    async def slow(request: web.Request) -> web.StreamResponse:
        started.append(time.monotonic())
        await asyncio.sleep(0.5)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
                         b'"delta":{"content":"late"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
        return resp

    with chat_upstream(loop_thread, slow) as url:
        proxy = make_proxy(upstream=url)
        body = orjson.dumps({**CHAT_OK, "stream": True})
        conn = _raw_request(proxy, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   b"X-Proctor-Session: gone-early\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 5
        while not started and time.monotonic() < deadline:
            time.sleep(0.02)
        conn.close()
        while not calls_of(proxy, "gone-early") and time.monotonic() < deadline:
            time.sleep(0.05)
        (call,) = calls_of(proxy, "gone-early")
        assert "disconnected before the response started" in (call.error or "")
        assert [e.kind.value for e in events_of(proxy, "gone-early")] == ["user"]
        assert httpx.get(proxy.base + "/healthz").status_code == 200


def test_a_body_declared_too_large_is_refused_before_it_is_sent(make_proxy: Any, upstream: Any) -> None:
    """The answer comes at once, not after client_body_timeout (30 s here) of waiting for bytes never sent."""
    proxy = make_proxy(max_body_bytes=2048, client_body_timeout=30)
    for path in (b"/v1/chat/completions", b"/v1/embeddings"):
        conn = _raw_request(proxy, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   b"X-Proctor-Session: big-" + path[4:8] + b"\r\nContent-Length: 9000000\r\n\r\n{")
        conn.settimeout(5)
        status_line, body = _reply_of(conn)
        assert b" 413 " in status_line and body["error"]["code"] == "body_too_large"
    assert recorded(proxy, "big-chat").status == 413 and recorded(proxy, "big-embe").status == 413
    still_serves(proxy, upstream)


@pytest.mark.parametrize("path", ["/chat/completions", "/responses", "/messages", "/embeddings"])
def test_a_body_that_does_not_decode_as_its_content_encoding_says_is_400(path: str, proxy: Any, upstream: Any) -> None:
    resp = post(proxy.url + path, b"this is not gzip", {"Content-Encoding": "gzip", "X-Proctor-Session": f"enc{path}"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "invalid_body" and "Content-Encoding" in error["message"]
    if path == "/messages":
        assert resp.json()["type"] == "error" and error["type"] == "invalid_request_error"
    assert recorded(proxy, f"enc{path}").status == 400
    still_serves(proxy, upstream)


def test_a_body_that_is_not_utf8_is_400_not_judged_as_replacement_characters(proxy: Any, upstream: Any) -> None:
    upstream.received.clear()
    body = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "caf\xe9 \xff"}]}'
    resp = post(proxy.url + "/chat/completions", body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json" and "UTF-8" in resp.json()["error"]["message"]
    assert upstream.received == []  # the model never read what the policy could not
    still_serves(proxy, upstream)


UNENDED = {  # path -> a 200 stream the upstream ends early, or that is not a stream at all
    "/v1/chat/completions": b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},'
                            b'"finish_reason":null}]}\n\ndata: {"error":{"message":"overloaded","type":"server_error"}}\n\n',
    "/v1/responses": b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","output_index":0,'
                     b'"content_index":0,"delta":"Hel","sequence_number":1}\n\n',
    "/v1/messages": b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":'
                    b'"assistant","content":[],"model":"c","stop_reason":null}}\n\nevent: error\ndata: {"type":"error",'
                    b'"error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
}


def test_a_stream_that_never_ends_properly_is_relayed_and_recorded_as_such(make_proxy: Any, loop_thread: Any) -> None:
    """An error event mid-stream, a stream cut at an event boundary, or a 200 that is no stream at
    all: the client gets what the upstream sent, and the audit does not record a success."""
    from aiohttp import web

    from tests.conftest import start_app

    garbage = b"<html>502 Bad Gateway</html>"

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(garbage if "garbage" in str(body) else UNENDED[request.path])
        await resp.write_eof()
        return resp

    app = web.Application()
    for path in UNENDED:
        app.router.add_post(path, answer)
    runner, base = loop_thread.run(start_app(app))
    try:
        proxy = make_proxy(upstream=base + "/v1", anthropic_upstream=base + "/v1")
        bodies = {"/chat/completions": {**CHAT_OK, "stream": True}, "/responses": {"model": "m", "input": "hi", "stream": True},
                  "/messages": {"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}], "stream": True}}
        for path, body in bodies.items():
            for kind in ("unended", "garbage"):
                sent = body if kind == "unended" else {**body, "metadata": {"note": "garbage"}}
                resp = post(proxy.url + path, sent, {"X-Proctor-Session": f"{kind}{path}"})
                assert resp.status_code == 200
                assert resp.content == (garbage if kind == "garbage" else UNENDED["/v1" + path])
                call = recorded(proxy, f"{kind}{path}")
                assert call.status == 200 and "ended without its end" in (call.error or ""), (path, kind, call.error)
    finally:
        loop_thread.run(runner.cleanup())


def test_a_chunked_pass_through_body_over_the_limit_is_413_and_recorded(make_proxy: Any, upstream: Any) -> None:
    proxy = make_proxy(max_body_bytes=2048)

    def chunks() -> Any:
        for _ in range(8):
            yield b"x" * 1024

    resp = httpx.post(proxy.url + "/embeddings", content=chunks(), timeout=10,
                      headers={"Content-Type": "application/json", "X-Proctor-Session": "chunked-big"})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"
    assert recorded(proxy, "chunked-big").status == 413
    still_serves(proxy, upstream)
