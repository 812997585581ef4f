"""Credentials, the session header, pass-through endpoints, and the wire itself:
bodies byte for byte, streams chunk by chunk as the upstream sends them."""

from __future__ import annotations

import glob
import time
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from proxy.scripted_model import Fault, ToolCallSpec, Turn, echo_responder, start_model_server

from .conftest import calls_of, events_of, sessions_of

KEY = "sk-Client-Secret/with+odd=chars_0123456789abcdef"
AUTH_VALUE = f"Bearer {KEY}"
CHAT: Any = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}
RESPONSES: Any = {"model": "gpt-test", "input": "hello"}
MESSAGES: Any = {"model": "claude-test", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
BODIES = {"chat/completions": CHAT, "responses": RESPONSES, "messages": MESSAGES}


def post(url: str, body: Any, **headers: str) -> httpx.Response:
    hdrs = {"Content-Type": "application/json", "Authorization": AUTH_VALUE, **headers}
    return httpx.post(url, content=orjson.dumps(body), headers=hdrs, timeout=10)


def raw_header(received: Any, name: bytes) -> list[bytes]:
    return [v for k, v in received.raw_headers if k.lower() == name]


def credentials(received: Any) -> list[bytes]:
    return raw_header(received, b"authorization") + raw_header(received, b"x-api-key")


# ---- credentials ------------------------------------------------------------------


def test_authorization_reaches_upstream_byte_for_byte(proxy: Any, upstream: Any) -> None:
    odd = "Bearer  sk-Two  Spaces\tand-a-tab"
    for value in (AUTH_VALUE, odd):
        resp = post(proxy.url + "/chat/completions", CHAT, Authorization=value)
        assert resp.status_code == 200
        assert raw_header(upstream.received[-1], b"authorization") == [value.encode()]

    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0)
    client.chat.completions.create(**CHAT)
    client.models.list()
    client.close()
    assert [raw_header(r, b"authorization") for r in upstream.received[-2:]] == [[AUTH_VALUE.encode()]] * 2

    resp = httpx.post(proxy.url + "/messages", json=MESSAGES, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})
    assert resp.status_code == 200
    assert raw_header(upstream.received[-1], b"x-api-key") == [KEY.encode()]
    assert upstream.received[-1].headers["anthropic-version"] == "2023-06-01"


def test_configured_upstream_key_replaces_the_clients(make_proxy: Any, upstream: Any) -> None:
    proxy = make_proxy(upstream_api_key="sk-configured", anthropic_api_key="sk-ant-configured")
    upstream.answer(echo_responder)
    upstream.received.clear()
    assert post(proxy.url + "/chat/completions", CHAT).status_code == 200
    assert post(proxy.url + "/responses", RESPONSES, **{"x-api-key": KEY}).status_code == 200
    assert httpx.get(proxy.url + "/models", headers={"Authorization": AUTH_VALUE}).status_code == 200
    assert post(proxy.url + "/messages", MESSAGES).status_code == 200
    client = anthropic.Anthropic(base_url=proxy.base, api_key=KEY, max_retries=0)
    client.messages.create(**MESSAGES)
    client.close()

    openai_side, anthropic_side = upstream.received[:3], upstream.received[3:]
    assert len(anthropic_side) == 2
    for r in openai_side:
        assert raw_header(r, b"authorization") == [b"Bearer sk-configured"] and "x-api-key" not in r.headers
    for r in anthropic_side:
        assert raw_header(r, b"x-api-key") == [b"sk-ant-configured"] and "authorization" not in r.headers
    assert all(KEY not in str(list(r.headers.items())) for r in upstream.received)


def test_client_key_never_reaches_the_store(proxy: Any, upstream: Any) -> None:
    """Across every kind of call (ok, stream, error, bad input, pass-through), the
    SQLite file and its WAL never hold the client's key."""
    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0)
    client.chat.completions.create(**CHAT)
    list(client.chat.completions.create(**CHAT, stream=True))
    client.responses.create(**RESPONSES)
    client.models.list()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-test", messages="nope")  # type: ignore[arg-type]
    upstream.answer(Fault(status=401))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT)
    # an upstream that echoes the rejected key in its error body (OpenAI masks it; not every server does)
    upstream.answer(Fault(status=401, body={"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT)
    client.close()
    aclient = anthropic.Anthropic(base_url=proxy.base, api_key=KEY, max_retries=0)
    upstream.answer(echo_responder)
    aclient.messages.create(**MESSAGES)
    aclient.close()
    httpx.post(proxy.url + "/messages", json=MESSAGES, headers={"x-api-key": KEY}, timeout=10)

    sessions = sessions_of(proxy)
    assert len(sessions) >= 8  # the calls really were recorded
    path = proxy.config.store.removeprefix("sqlite:///")
    files = glob.glob(path + "*")
    assert path in files and path + "-wal" in files
    blob = b"".join(open(f, "rb").read() for f in files)
    assert b"echo: hello" in blob  # we are looking at the right bytes
    for needle in (KEY, KEY.split("/")[0], "sk-Client-Secret"):
        assert needle.encode() not in blob


def test_a_key_echoed_in_a_reply_never_reaches_the_store(proxy: Any, upstream: Any) -> None:
    """A model (or a gateway) that echoes the key in a 200 reply, as text and inside a
    tool call's arguments, streamed or not: the client gets the reply as it came, the
    store and the decision log hold [redacted], and the agent sending the key back in
    its history still continues the same session."""
    leaky = Turn(text=f"Your key is {KEY}.", tool_calls=(ToolCallSpec("get_weather", {"city": "Bern", "note": KEY}),))
    upstream.answer(leaky)
    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0)
    first = client.chat.completions.create(**CHAT)
    assert KEY in (first.choices[0].message.content or "")  # the client's own reply is not touched
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    history = [*CHAT["messages"], first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": f"sunny; used {KEY}"}]
    upstream.answer(echo_responder)
    second = client.chat.completions.with_raw_response.create(model="gpt-test", messages=history)
    streamed = client.chat.completions.with_raw_response.create(**CHAT, stream=True)
    upstream.answer(leaky)
    list(client.chat.completions.create(**{**CHAT, "messages": [{"role": "user", "content": "again"}]}, stream=True))
    aclient = anthropic.Anthropic(base_url=proxy.base, api_key=KEY, max_retries=0)
    aclient.messages.create(**MESSAGES)
    aclient.close()
    client.close()
    streamed.parse().close()

    sid = second.headers["X-Proctor-Session"]
    texts = [e.text or "" for e in events_of(proxy, sid)]
    assert len(calls_of(proxy, sid)) == 2  # the history with the key in it continued the session
    assert any("Your key is [redacted]." in t for t in texts) and any("used [redacted]" in t for t in texts)
    path = proxy.config.store.removeprefix("sqlite:///")
    blob = b"".join(open(f, "rb").read() for f in glob.glob(path + "*"))
    assert b"Your key is [redacted]" in blob
    assert KEY.encode() not in blob and b"sk-Client-Secret" not in blob


# ---- the session header ----------------------------------------------------------------


def test_every_response_carries_the_session(proxy: Any, upstream: Any) -> None:
    responses = [
        post(proxy.url + "/chat/completions", CHAT),
        post(proxy.url + "/chat/completions", {**CHAT, "stream": True}),
        post(proxy.url + "/responses", {**RESPONSES, "stream": True}),
        post(proxy.url + "/messages", MESSAGES),
        post(proxy.url + "/chat/completions", {"model": "gpt-test"}),  # 400
        httpx.get(proxy.url + "/models"),
        httpx.get(proxy.url + "/nothing-here"),  # the upstream's 404
    ]
    ids = [r.headers.get("X-Proctor-Session") for r in responses]
    model_calls, passthrough = ids[:5], ids[5:]
    assert all(i and i.startswith("ses_") for i in model_calls), ids
    assert len(set(model_calls)) == len(model_calls)  # no header, unrelated histories: separate sessions
    for r, sid in zip(responses[:5], model_calls):
        (call,) = calls_of(proxy, sid)
        assert call.status == r.status_code
    # pass-through calls without a session share the day's pass-through session
    assert passthrough[0] == passthrough[1] and passthrough[0].startswith("passthrough-")
    assert [c.status for c in calls_of(proxy, passthrough[0])] == [r.status_code for r in responses[5:]]


def test_session_header_names_the_session(proxy: Any, upstream: Any) -> None:
    upstream.answer(Turn(tool_calls=(ToolCallSpec("search", {"q": "x"}),)))
    a = post(proxy.url + "/chat/completions", CHAT, **{"X-Proctor-Session": "my-id"})
    upstream.answer(echo_responder)
    b = post(proxy.url + "/responses", {**RESPONSES, "stream": True}, **{"x-proctor-session": "my-id"})
    c = httpx.get(proxy.url + "/models", headers={"X-Proctor-Session": "my-id"})
    d = post(proxy.url + "/chat/completions", {"model": "gpt-test"}, **{"X-Proctor-Session": "my-id"})
    assert [r.headers["X-Proctor-Session"] for r in (a, b, c, d)] == ["my-id"] * 4
    assert [r.status_code for r in (a, b, c, d)] == [200, 200, 200, 400]

    (session,) = sessions_of(proxy)
    assert session.id == "my-id" and session.calls == 4
    calls = calls_of(proxy, "my-id")
    assert [(c.api, c.status, c.resolved_by) for c in calls] == [
        ("chat", 200, "header"), ("responses", 200, "header"), ("passthrough", 200, "header"), ("chat", 400, "header"),
    ]
    kinds = [(e.kind.value, e.text) for e in events_of(proxy, "my-id")]
    assert kinds[:3] == [("user", "hello"), ("tool_call", None), ("assistant", "echo: hello")]
    assert kinds[-1][0] == "error"


# ---- pass-through -------------------------------------------------------------------------


def test_models_pass_through_and_are_recorded(proxy: Any, upstream: Any) -> None:
    direct = httpx.get(upstream.url + "/models", headers={"Authorization": AUTH_VALUE})
    through = httpx.get(proxy.url + "/models", headers={"Authorization": AUTH_VALUE})
    assert through.status_code == direct.status_code == 200
    assert through.content == direct.content
    assert through.headers["content-type"] == direct.headers["content-type"]

    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["scripted-gpt", "scripted-claude"]
    client.close()

    session_id = through.headers["X-Proctor-Session"]
    assert session_id.startswith("passthrough-20")  # the day's pass-through session, not one per call
    first, second = calls_of(proxy, session_id)
    assert (first.api, first.path, first.status, first.error, first.resolved_by) == ("passthrough", "/v1/models", 200, None, "passthrough")
    assert second.path == "/v1/models"
    assert events_of(proxy, session_id) == []
    assert len(sessions_of(proxy)) == 1
    named = httpx.get(proxy.url + "/models", headers={"Authorization": AUTH_VALUE, "X-Proctor-Session": "mine"})
    assert named.headers["X-Proctor-Session"] == "mine" and calls_of(proxy, "mine")[0].resolved_by == "header"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_v1_paths_pass_through_unchanged(method: str, proxy: Any, upstream: Any) -> None:
    body = b'{"input": "embed me", "model": "e"}' if method == "POST" else None
    kw: Any = {"content": body, "headers": {"Authorization": AUTH_VALUE, "Content-Type": "application/json"}}
    direct = httpx.request(method, upstream.url + "/embeddings?x=1&y=two", **kw)
    through = httpx.request(method, proxy.url + "/embeddings?x=1&y=two", **kw)

    assert direct.status_code == through.status_code == 404
    assert through.content == direct.content and b"Unknown request URL" in through.content
    seen = upstream.received[-1]
    assert (seen.method, seen.path, seen.query_string) == (method, "/v1/embeddings", "x=1&y=two")
    assert seen.body == (body or b"")
    (call,) = calls_of(proxy, through.headers["X-Proctor-Session"])
    assert (call.api, call.path, call.status) == ("passthrough", "/v1/embeddings", 404)


def test_anthropic_endpoints_pass_through_to_the_anthropic_upstream(make_proxy: Any, upstream: Any) -> None:
    """count_tokens and batches are Anthropic's: they must not reach the OpenAI
    upstream, which would get the Anthropic key."""
    upstream.answer(echo_responder)
    base = upstream.url.removesuffix("/v1")
    proxy = make_proxy(upstream=base + "/openai/v1", anthropic_upstream=base + "/anthropic/v1")
    client = anthropic.Anthropic(base_url=proxy.base, api_key="sk-ant-Secret", max_retries=0)
    with pytest.raises(anthropic.NotFoundError):  # the scripted upstream has no count_tokens
        client.messages.count_tokens(model="claude-test", messages=[{"role": "user", "content": "hi"}])
    seen = upstream.received[-1]
    assert seen.path == "/anthropic/v1/messages/count_tokens"
    assert b"sk-ant-Secret" in b" ".join(credentials(seen))  # this SDK sends it as a Bearer token
    httpx.get(proxy.url + "/messages/batches", headers={"x-api-key": "sk-ant-Secret"})
    assert upstream.received[-1].path == "/anthropic/v1/messages/batches"
    # An Anthropic client's /v1/models is Anthropic's; an OpenAI client's stays OpenAI's.
    httpx.get(proxy.url + "/models", headers={"x-api-key": "sk-ant-Secret", "anthropic-version": "2023-06-01"})
    assert upstream.received[-1].path == "/anthropic/v1/models"
    httpx.get(proxy.url + "/models", headers={"Authorization": AUTH_VALUE})
    assert upstream.received[-1].path == "/openai/v1/models"
    assert not any(b"sk-ant-Secret" in b" ".join(credentials(r)) for r in upstream.received if r.path.startswith("/openai/"))
    client.close()


def test_healthz(proxy: Any, upstream: Any) -> None:
    resp = httpx.get(proxy.base + "/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert upstream.received == [] and sessions_of(proxy) == []


# ---- the wire ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_bodies_byte_for_byte(path: str, stream: bool, proxy: Any, upstream: Any, same_ids: Any) -> None:
    upstream.answer(Turn(text="héllo wörld", tool_calls=(ToolCallSpec("f", {"a": [1, "ü"]}),)))
    body = {**BODIES[path], "stream": stream}
    same_ids.reset()
    direct = post(f"{upstream.url}/{path}", body)
    same_ids.reset()
    through = post(f"{proxy.url}/{path}", body)

    assert direct.status_code == through.status_code == 200
    assert len(direct.content) > 200
    assert through.content == direct.content
    assert through.headers["content-type"] == direct.headers["content-type"]
    assert upstream.received[-1].body == upstream.received[-2].body == orjson.dumps(body)


@pytest.mark.parametrize("path", list(BODIES))
def test_stream_chunks_arrive_as_sent(path: str, make_proxy: Any, loop_thread: Any) -> None:
    """With 0.05 s between upstream events, the client sees the first event long
    before the upstream sends the last: nothing is buffered."""
    runner, url = loop_thread.run(start_model_server(echo_responder, chunks=10, chunk_delay=0.05))
    try:
        proxy = make_proxy(upstream=url, anthropic_upstream=url)
        body = {**BODIES[path], "stream": True}
        body["messages" if "messages" in body else "input"] = (
            [{"role": "user", "content": "a fairly long text to split into ten pieces"}] if path != "responses"
            else "a fairly long text to split into ten pieces"
        )
        hdrs = {"Content-Type": "application/json", "Authorization": AUTH_VALUE}
        warm = httpx.post(f"{proxy.url}/{path}", content=orjson.dumps({**body, "stream": False}), headers=hdrs, timeout=10)
        assert warm.status_code == 200  # one-time start-up costs are not what this measures
        arrivals: list[float] = []
        t0 = time.perf_counter()
        with httpx.stream("POST", f"{proxy.url}/{path}", content=orjson.dumps(body), headers=hdrs, timeout=10) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            for piece in resp.iter_raw():
                if piece:
                    arrivals.append(time.perf_counter() - t0)
        total = arrivals[-1]
        assert total > 0.5  # >= 10 delays of 0.05 s
        assert arrivals[0] < total / 2
        assert len(arrivals) >= 8  # pieces arrived separately, not in one buffered lump
        session = resp.headers["X-Proctor-Session"]
        (call,) = calls_of(proxy, session)
        assert call.stream and call.status == 200
        assert events_of(proxy, session)[-1].text == "echo: a fairly long text to split into ten pieces"
    finally:
        loop_thread.run(runner.cleanup())


def test_sdk_stream_first_chunk_before_last_is_sent(make_proxy: Any, loop_thread: Any) -> None:
    runner, url = loop_thread.run(start_model_server(echo_responder, chunks=10, chunk_delay=0.05))
    try:
        proxy = make_proxy(upstream=url)
        client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0)
        client.chat.completions.create(**CHAT)  # warm up
        t0 = time.perf_counter()
        arrivals = []
        text = ""
        for chunk in client.chat.completions.create(**{**CHAT, "messages": [{"role": "user", "content": "x" * 40}]}, stream=True):
            arrivals.append(time.perf_counter() - t0)
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        client.close()
        assert text == "echo: " + "x" * 40
        assert arrivals[-1] > 0.5 and arrivals[0] < arrivals[-1] / 2
    finally:
        loop_thread.run(runner.cleanup())
