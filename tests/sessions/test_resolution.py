"""Each session-resolution rule, each client shape, sub-agents, compaction and
contradictions, through the real proxy over HTTP with the scripted model."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import httpx
import pytest

from proxy import cli
from proxy.scripted_model import ToolCallSpec, Turn

TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}]


def post(proxy: Any, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(
        proxy.url + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def chat(proxy: Any, messages: list[dict[str, Any]], **headers: str) -> tuple[str, dict[str, Any]]:
    status, hdrs, body = post(proxy, "/chat/completions", {"model": "m", "messages": messages, "tools": TOOLS}, headers)
    assert status == 200, body
    return hdrs["X-Proctor-Session"], body["choices"][0]["message"]


def calls(proxy: Any, sid: str) -> list[Any]:
    return proxy.call_store(lambda s: s.get_calls(sid))


def events(proxy: Any, sid: str) -> list[Any]:
    return proxy.call_store(lambda s: s.get_events(sid))


def session(proxy: Any, sid: str) -> Any:
    return proxy.call_store(lambda s: s.get_session(sid))


def agent_model(api: str, body: dict[str, Any]) -> Turn:
    """Calls `search` with the task text and the step number until three results are in."""
    msgs = body.get("messages") or body.get("input") or []
    msgs = msgs if isinstance(msgs, list) else [{"role": "user", "content": msgs}]
    task = next((m["content"] for m in msgs if m.get("role") == "user" and isinstance(m.get("content"), str)), "")
    steps = sum(1 for m in msgs if m.get("role") == "tool" or m.get("type") == "function_call_output"
                or any(isinstance(b, dict) and b.get("type") == "tool_result" for b in (m.get("content") or []) if isinstance(m.get("content"), list)))
    if steps >= 3:
        return Turn(text=f"done with {task}")
    return Turn(tool_calls=(ToolCallSpec("search", {"q": task, "step": steps}),))


@pytest.fixture
def agent_proxy(make_proxy: Any, upstream: Any) -> Any:
    upstream.answer(agent_model)
    return make_proxy()


def run_chat_agent(proxy: Any, task: str, system: str = "You are an agent.", **headers: str) -> tuple[list[str], list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": task}]
    sids = []
    for _ in range(6):
        sid, msg = chat(proxy, messages, **headers)
        sids.append(sid)
        messages.append(msg)
        if not msg.get("tool_calls"):
            break
        for tc in msg["tool_calls"]:
            messages.append({"role": "tool", "tool_call_id": tc["id"], "content": f"result for {tc['function']['arguments']}"})
    return sids, messages


def test_explicit_header_appends_only_new_events(agent_proxy: Any) -> None:
    sids, messages = run_chat_agent(agent_proxy, "find the port", **{"X-Proctor-Session": "mine"})
    assert set(sids) == {"mine"}
    evs = events(agent_proxy, "mine")
    assert [e.kind.value for e in evs] == ["system", "user"] + ["tool_call", "tool_result"] * 3 + ["assistant"]
    assert [c.resolved_by for c in calls(agent_proxy, "mine")] == ["header"] * 4
    assert not any(e.labels for e in evs)


def test_history_matching_links_calls_without_any_id(agent_proxy: Any) -> None:
    sids, _ = run_chat_agent(agent_proxy, "find the port")
    assert len(set(sids)) == 1
    assert [c.resolved_by for c in calls(agent_proxy, sids[0])] == ["new", "history", "history", "history"]
    assert len(events(agent_proxy, sids[0])) == 9


def test_reshaped_history_still_matches(agent_proxy: Any) -> None:
    """Clients regenerate ids, reformat argument JSON, send parts instead of strings
    and developer instead of system: still the same history."""
    sid1, msg = chat(agent_proxy, [{"role": "system", "content": "S"}, {"role": "user", "content": "a task long enough"}])
    tc = msg["tool_calls"][0]
    reshaped = [
        {"role": "developer", "content": [{"type": "text", "text": "S"}]},
        {"role": "user", "content": [{"type": "text", "text": "a task long"}, {"type": "text", "text": " enough"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "regenerated", "type": "function", "function": {
            "name": tc["function"]["name"], "arguments": json.dumps(json.loads(tc["function"]["arguments"]), indent=2, sort_keys=True)}}]},
        {"role": "tool", "tool_call_id": "regenerated", "content": "ok"},
    ]
    sid2, _ = chat(agent_proxy, reshaped)
    assert sid2 == sid1


def test_two_agents_with_identical_prompts_stay_apart(agent_proxy: Any) -> None:
    """Lockstep twins: same system prompt and task, identical first replies. Each
    call is still placed in a session whose path is exactly its own history."""
    base = [{"role": "system", "content": "S"}, {"role": "user", "content": "the very same task"}]
    a1, ra = chat(agent_proxy, list(base))
    b1, rb = chat(agent_proxy, list(base))
    assert a1 != b1 and ra["tool_calls"][0]["function"] == rb["tool_calls"][0]["function"]
    a2, _ = chat(agent_proxy, [*base, ra, {"role": "tool", "tool_call_id": ra["tool_calls"][0]["id"], "content": "A's result"}])
    b2, _ = chat(agent_proxy, [*base, rb, {"role": "tool", "tool_call_id": rb["tool_calls"][0]["id"], "content": "B's result"}])
    assert {a2, b2} == {a1, b1}
    for sid in (a1, b1):
        results = [e.text for e in events(agent_proxy, sid) if e.kind.value == "tool_result"]
        assert len(results) == 1  # each session holds exactly one agent's path


def test_branching_edit_stays_in_the_session(agent_proxy: Any) -> None:
    sids, messages = run_chat_agent(agent_proxy, "original task text here")
    # the user edits the tool result of step 1 and regenerates from there
    edited = [*messages[:3], {"role": "tool", "tool_call_id": messages[2]["tool_calls"][0]["id"], "content": "different"}]
    sid, _ = chat(agent_proxy, edited)
    assert sid == sids[0]
    texts = [e.text for e in events(agent_proxy, sid) if e.kind.value == "tool_result"]
    assert "different" in texts and len(texts) == 4


def test_retry_of_the_same_request_joins_the_session(agent_proxy: Any) -> None:
    sids, messages = run_chat_agent(agent_proxy, "retry me please, agent")
    retry = messages[:4]  # the second request again
    sid, _ = chat(agent_proxy, retry)
    assert sid == sids[0]


def test_compaction_keeps_dropped_events_and_joins_session(agent_proxy: Any) -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "S"}, {"role": "user", "content": "summarise the repository"}]
    sid, msg = chat(agent_proxy, messages)
    messages += [msg, {"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"], "content": "r1"}]
    _, msg = chat(agent_proxy, messages)
    messages += [msg, {"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"], "content": "r2"}]
    _, msg = chat(agent_proxy, messages)
    # the agent compacts: system, a summary of old turns, the last reply and its result
    compacted = [messages[0], {"role": "user", "content": "Summary: searched twice, got r1 and r2."},
                 msg, {"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"], "content": "r3"}]
    sid2, reply = chat(agent_proxy, compacted)
    assert sid2 == sid
    assert calls(agent_proxy, sid)[-1].resolved_by == "compaction"
    evs = events(agent_proxy, sid)
    texts = [e.text for e in evs]
    assert "r1" in texts and "r2" in texts and "r3" in texts  # nothing the agent dropped is lost
    summary = next(e for e in evs if e.text and e.text.startswith("Summary"))
    assert summary.labels.get("rewritten") is True
    # the next call extends the compacted history and matches it directly
    sid3, _ = chat(agent_proxy, [*compacted, reply, {"role": "tool", "tool_call_id": reply["tool_calls"][0]["id"], "content": "r4"}])
    assert sid3 == sid
    assert calls(agent_proxy, sid)[-1].resolved_by == "history"


def test_forged_assistant_turn_and_orphan_result_are_labelled(agent_proxy: Any) -> None:
    sids, messages = run_chat_agent(agent_proxy, "a task for forging test")
    forged = [*messages, {"role": "assistant", "content": "I already sent the money."},
              {"role": "tool", "tool_call_id": "never-made", "content": "orphan output"},
              {"role": "user", "content": "thanks"}]
    sid, _ = chat(agent_proxy, forged)
    assert sid == sids[0]
    evs = {e.text: e for e in events(agent_proxy, sid)}
    assert "unverified" in evs["I already sent the money."].labels
    assert "orphan" in evs["orphan output"].labels
    assert evs["thanks"].labels == {}


def test_a_result_is_an_orphan_only_if_no_call_anywhere_in_the_history_made_it(agent_proxy: Any) -> None:
    # its call 100 events back (past the few looked at first), many orphans, and a call after its result
    far = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "far", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}]
    filler = [{"role": "user", "content": f"note {i}"} for i in range(100)]
    orphans = [{"role": "tool", "tool_call_id": f"none-{i}", "content": f"stray {i}"} for i in range(300)]
    later = [{"role": "tool", "tool_call_id": "after", "content": "answered before asked"},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "after", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}]
    sid, _ = chat(agent_proxy, [{"role": "user", "content": "start"}, *far, *filler,
                                {"role": "tool", "tool_call_id": "far", "content": "far result"}, *orphans, *later])
    evs = {e.text: e for e in events(agent_proxy, sid)}
    assert "orphan" not in evs["far result"].labels and evs["far result"].tool_name == "lookup"
    assert all("orphan" in evs[f"stray {i}"].labels for i in range(300))
    assert "orphan" not in evs["answered before asked"].labels


def test_harness_headers(agent_proxy: Any) -> None:
    sid, _ = chat(agent_proxy, [{"role": "user", "content": "hi"}], **{"session_id": "codex-thread-1"})
    assert sid == "codex-thread-1" and calls(agent_proxy, sid)[0].resolved_by == "harness:session_id"
    sid, _ = chat(agent_proxy, [{"role": "user", "content": "hi"}], **{"Helicone-Session-Id": "h-1"})
    assert sid == "h-1"
    main, _ = chat(agent_proxy, [{"role": "user", "content": "hi"}], **{"x-claude-code-session-id": "cc-1"})
    sub, _ = chat(agent_proxy, [{"role": "user", "content": "sub task"}],
                  **{"x-claude-code-session-id": "cc-1", "x-claude-code-agent-id": "agent-7"})
    assert (main, sub) == ("cc-1", "cc-1/agent-7")
    child = session(agent_proxy, sub)
    assert (child.parent_id, child.root_id, child.depth) == ("cc-1", "cc-1", 1)
    # our own header wins over everything
    sid, _ = chat(agent_proxy, [{"role": "user", "content": "hi"}], **{"X-Proctor-Session": "p", "session_id": "x"})
    assert sid == "p"


@pytest.mark.parametrize("header", ["x-proctor-parent-session", "x-parent-session-id", "x-codex-parent-thread-id"])
def test_a_parent_header_alone_links_a_new_session_as_a_child(agent_proxy: Any, header: str) -> None:
    parent, _ = chat(agent_proxy, [{"role": "user", "content": "lead the research"}])
    child, _ = chat(agent_proxy, [{"role": "user", "content": "look up one thing for the lead"}], **{header: parent})
    assert child != parent
    rec = session(agent_proxy, child)
    assert (rec.parent_id, rec.root_id, rec.depth) == (parent, parent, 1)
    assert calls(agent_proxy, child)[0].resolved_by == "new"
    # a parent Proctor never saw links nothing (a dangling root would escape the tree's budgets)
    orphan, reply = chat(agent_proxy, [{"role": "user", "content": "a task from elsewhere"}], **{header: "unknown-lead"})
    assert reply["role"] == "assistant" and session(agent_proxy, orphan).parent_id is None
    # nor next to an explicit id (as Codex sub-agents send both): the store keeps no dangling parent
    named, _ = chat(agent_proxy, [{"role": "user", "content": "a sub task"}], **{"session_id": f"sub-{header}", header: "never-seen"})
    assert named == f"sub-{header}" and session(agent_proxy, named).parent_id is None
    # a pass-through call with the header opens no child
    before = len(agent_proxy.call_store(lambda s: s.list_sessions(limit=1000)))
    httpx.get(agent_proxy.url + "/models", headers={header: parent})
    assert len(agent_proxy.call_store(lambda s: s.list_sessions(limit=1000))) <= before + 1
    assert all(s.parent_id is None for s in agent_proxy.call_store(lambda s: s.list_sessions(limit=1000)) if s.id.startswith("passthrough-"))


def test_claude_code_metadata_user_id(agent_proxy: Any) -> None:
    body = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"user_id": "user_abc_account_123_session_0f9e8d7c-aaaa-bbbb-cccc-1234567890ab"}}
    status, hdrs, _ = post(agent_proxy, "/messages", body)
    assert status == 200 and hdrs["X-Proctor-Session"] == "0f9e8d7c-aaaa-bbbb-cccc-1234567890ab"


def test_traceparent_names_the_session_when_history_cannot(agent_proxy: Any) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    s1, _ = chat(agent_proxy, [{"role": "user", "content": "first unrelated"}], traceparent=tp)
    s2, _ = chat(agent_proxy, [{"role": "user", "content": "second unrelated"}], traceparent=tp)
    assert s1 == s2 == "0af7651916cd43dd8448eb211c80319c"
    assert [c.resolved_by for c in calls(agent_proxy, s1)] == ["traceparent", "traceparent"]


def test_body_fields_only_when_configured(make_proxy: Any, upstream: Any) -> None:
    upstream.answer(agent_model)
    plain = make_proxy()
    configured = make_proxy(session_body_fields=("user", "metadata.session_id"))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "alice"}
    _, h1, _ = post(plain, "/chat/completions", body)
    _, h2, _ = post(configured, "/chat/completions", body)
    assert h1["X-Proctor-Session"].startswith("ses_") and h2["X-Proctor-Session"] == "alice"
    _, h3, _ = post(configured, "/chat/completions", {**body, "user": None, "metadata": {"session_id": "s-9"}})
    assert h3["X-Proctor-Session"] == "s-9"


def test_responses_store_false_full_input_matches(agent_proxy: Any) -> None:
    items: list[dict[str, Any]] = [{"role": "user", "content": "responses agent task"}]
    sids = []
    for _ in range(4):
        status, hdrs, body = post(agent_proxy, "/responses", {"model": "m", "input": items, "store": False})
        assert status == 200
        sids.append(hdrs["X-Proctor-Session"])
        calls_out = [o for o in body["output"] if o["type"] == "function_call"]
        if not calls_out:
            break
        for o in calls_out:
            items.append({"type": "function_call", "call_id": o["call_id"], "name": o["name"], "arguments": o["arguments"]})
            items.append({"type": "function_call_output", "call_id": o["call_id"], "output": "r"})
    assert len(sids) == 4 and len(set(sids)) == 1
    assert [c.resolved_by for c in calls(agent_proxy, sids[0])] == ["new", "history", "history", "history"]


def test_anthropic_history_matches(agent_proxy: Any) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "anthropic agent task"}]
    sids = []
    for _ in range(4):
        status, hdrs, body = post(agent_proxy, "/messages", {"model": "c", "max_tokens": 100, "system": "S", "messages": messages})
        assert status == 200
        sids.append(hdrs["X-Proctor-Session"])
        messages.append({"role": "assistant", "content": body["content"]})
        uses = [b for b in body["content"] if b["type"] == "tool_use"]
        if not uses:
            break
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": u["id"], "content": "r"} for u in uses]})
    assert len(sids) == 4 and len(set(sids)) == 1


def test_subagent_is_linked_to_the_session_that_spawned_it(make_proxy: Any, upstream: Any, capsys: Any) -> None:
    task = "Research the staging database configuration and report its port"

    def model(api: str, body: dict[str, Any]) -> Turn:
        msgs = body["messages"]
        if msgs[-1]["role"] == "user" and msgs[-1]["content"] == "plan the release":
            return Turn(tool_calls=(ToolCallSpec("run_subagent", {"task": task}),))
        return Turn(text="port 6432")

    upstream.answer(model)
    proxy = make_proxy()
    parent, _ = chat(proxy, [{"role": "user", "content": "plan the release"}])
    child, _ = chat(proxy, [{"role": "system", "content": "You are a researcher."}, {"role": "user", "content": task}])
    assert child != parent
    rec = session(proxy, child)
    assert (rec.parent_id, rec.root_id, rec.depth) == (parent, parent, 1)
    store_url = proxy.config.store
    assert cli.main(["show", parent, "--store", store_url]) == 0
    out = capsys.readouterr().out
    assert child in out and "resolved by new" in out
    assert cli.main(["sessions", "--store", store_url]) == 0
    listing = capsys.readouterr().out
    assert parent in listing and child in listing


def test_sdk_retry_of_a_failed_first_call_joins_its_session(make_proxy: Any, upstream: Any) -> None:
    """The OpenAI SDK retries a 500 by itself, marking it x-stainless-retry-count: the
    retry belongs with the failed attempt, not in a new session."""
    import openai

    from proxy.scripted_model import Fault

    attempts: list[int] = []

    def flaky(api: str, body: dict[str, Any]) -> Turn | Fault:
        attempts.append(1)
        return Fault(status=500) if len(attempts) == 1 else Turn(text="ok")

    upstream.answer(flaky)
    proxy = make_proxy()
    c = openai.OpenAI(base_url=proxy.url, api_key="sk-x", max_retries=2)
    raw = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "a first task"}])
    assert raw.parse().choices[0].message.content == "ok" and len(attempts) == 2
    sid = raw.headers["x-proctor-session"]
    assert [(c.status, c.resolved_by) for c in calls(proxy, sid)] == [(500, "new"), (200, "retry")]
    assert [e.text for e in events(proxy, sid) if e.kind.value == "user"] == ["a first task"]  # not recorded twice
    # without the SDK's mark, an identical request is someone else's first call (a twin)
    sid2, _ = chat(proxy, [{"role": "user", "content": "a first task"}])
    assert sid2 != sid


def test_session_ids_in_utf8_and_of_any_length(agent_proxy: Any) -> None:
    """Headers arrive decoded as Latin-1: a UTF-8 id is read as sent, not as mojibake; an id
    longer than MAX_ID keeps its start and a digest, so the same long id is always one session."""
    from proxy.session_keys import MAX_ID

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    first = httpx.post(agent_proxy.url + "/chat/completions", json=body, headers={"X-Proctor-Session": "café-☃".encode()})
    assert first.status_code == 200
    assert [s.id for s in agent_proxy.call_store(lambda s: s.list_sessions(limit=100)) if s.id.startswith("caf")] == ["café-☃"]
    long_id = "trace-" + "x" * 8000
    sids = {chat(agent_proxy, [{"role": "user", "content": f"hi {i}"}], **{"X-Proctor-Session": long_id})[0] for i in range(2)}
    (sid,) = sids
    assert len(sid) == MAX_ID and sid.startswith("trace-xxx") and len(calls(agent_proxy, sid)) == 2
    other = chat(agent_proxy, [{"role": "user", "content": "hi"}], **{"X-Proctor-Session": long_id + "y"})[0]
    assert other != sid and len(other) == MAX_ID


def test_instructions_resent_with_previous_response_id_are_recorded_once(agent_proxy: Any) -> None:
    """The Responses API does not carry instructions over, so agents send them with every call
    that continues a response: the trajectory (and the policy window) holds them once, until
    they change."""
    body: dict[str, Any] = {"model": "m", "instructions": "You are terse.", "input": "hi"}
    status, hdrs, reply = post(agent_proxy, "/responses", body)
    assert status == 200
    sid = hdrs["X-Proctor-Session"]
    for turn, instructions in enumerate(["You are terse.", "You are terse.", "You are verbose.", "You are terse."]):
        status, hdrs, reply = post(agent_proxy, "/responses", {**body, "instructions": instructions,
                                                              "input": f"more {turn}", "previous_response_id": reply["id"]})
        assert status == 200 and hdrs["X-Proctor-Session"] == sid
    kinds = [(e.kind.value, e.text) for e in events(agent_proxy, sid) if e.kind.value in ("system", "user")]
    assert kinds == [("system", "You are terse."), ("user", "hi"), ("user", "more 0"), ("user", "more 1"),
                     ("system", "You are verbose."), ("user", "more 2"), ("system", "You are terse."), ("user", "more 3")]
