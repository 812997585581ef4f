"""``proctor show`` / ``proctor sessions`` read back what real SDK sessions through
the proxy recorded: the whole trajectory, in order."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import anthropic
import httpx
import openai
import pytest

from proxy.cli import main
from proxy.scripted_model import Fault, ToolCallSpec, Turn

from .conftest import events_of

KEY = "sk-client-e2e-cli-0123456789"
TOOLS: Any = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
    for n in ("search_docs", "read_file")
]
EVENT_LINE = re.compile(r"^\s+(\d+)\s+(system|user|assistant|tool_call|tool_result|decision|error)\s+(.*)$")


def chat_agent(api: str, body: dict[str, Any]) -> Turn:
    results = [m for m in body["messages"] if m["role"] == "tool"]
    if not results:
        return Turn(tool_calls=(
            ToolCallSpec("search_docs", {"query": "staging db port"}),
            ToolCallSpec("read_file", {"path": "deploy/staging.env"}),
        ))
    return Turn(text="The staging database listens on port 6432.")


def run_chat_session(proxy: Any, upstream: Any) -> str:
    upstream.answer(chat_agent)
    client = openai.OpenAI(base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10)
    messages: list[Any] = [
        {"role": "system", "content": "You are an ops assistant."},
        {"role": "user", "content": "Which port does the staging database use?"},
    ]
    outputs = {"search_docs": "see deploy/staging.env", "read_file": "DB_PORT=6432"}
    session = ""
    for stream in (True, False):  # the first step streamed, the second not
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=messages, tools=TOOLS, stream=stream
        )
        session = session or raw.headers["x-proctor-session"]
        assert raw.headers["x-proctor-session"] == session
        if stream:  # accumulate the deltas the way agent loops do
            text, calls = "", {}  # type: ignore[var-annotated]
            for chunk in raw.parse():
                delta = chunk.choices[0].delta
                text += delta.content or ""
                for d in delta.tool_calls or []:
                    c = calls.setdefault(d.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                    c["id"] += d.id or ""
                    c["function"]["name"] += (d.function and d.function.name) or ""
                    c["function"]["arguments"] += (d.function and d.function.arguments) or ""
            message = {"role": "assistant", "content": text or None, "tool_calls": [calls[i] for i in sorted(calls)]}
        else:
            message = raw.parse().choices[0].message.model_dump(exclude_none=True)
        messages.append(message)
        for call in message.get("tool_calls") or []:
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": outputs[call["function"]["name"]]})
    client.close()
    assert message["content"] == "The staging database listens on port 6432."
    return session


def show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


TRAJECTORY = [
    ("system", "You are an ops assistant."),
    ("user", "Which port does the staging database use?"),
    ("tool_call", 'search_docs({"query":"staging db port"})'),
    ("tool_call", 'read_file({"path":"deploy/staging.env"})'),
    ("tool_result", "search_docs -> see deploy/staging.env"),
    ("tool_result", "read_file -> DB_PORT=6432"),
    ("assistant", "The staging database listens on port 6432."),
]


def test_show_prints_whole_trajectory_in_order(proxy: Any, upstream: Any, capsys: pytest.CaptureFixture[str]) -> None:
    session = run_chat_session(proxy, upstream)
    rc, out, err = show(capsys, "show", session, "--store", proxy.config.store)
    assert rc == 0 and err == ""

    lines = out.splitlines()
    assert lines[0].startswith(f"session {session}")
    assert "2 calls, 7 events" in out
    call_lines = [i for i, line in enumerate(lines) if line.startswith("call ")]
    assert len(call_lines) == 2
    assert "chat gpt-test  stream status 200" in lines[call_lines[0]] and "resolved by new" in lines[call_lines[0]]
    assert "chat gpt-test  status 200" in lines[call_lines[1]] and "resolved by history" in lines[call_lines[1]]

    rows = [(i, int(m[1]), m[2], m[3]) for i, line in enumerate(lines) if (m := EVENT_LINE.match(line))]
    assert [seq for _, seq, _, _ in rows] == list(range(7))
    assert [(kind, body) for _, _, kind, body in rows] == TRAJECTORY
    # Each call's events are printed under that call: the request's turns and the
    # reply of call 1, then the tool results and the final answer of call 2.
    assert call_lines[0] < rows[0][0] and rows[3][0] < call_lines[1] < rows[4][0]


def test_show_json_and_sessions(proxy: Any, upstream: Any, capsys: pytest.CaptureFixture[str]) -> None:
    session = run_chat_session(proxy, upstream)
    store = proxy.config.store

    rc, out, _ = show(capsys, "show", session, "--store", store, "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["session"]["id"] == session and len(doc["calls"]) == 2
    assert [c["status"] for c in doc["calls"]] == [200, 200]
    assert [e["seq"] for e in doc["events"]] == list(range(7))
    assert [e["kind"] for e in doc["events"]] == [k for k, _ in TRAJECTORY]
    assert doc["events"][2]["arguments"] == {"query": "staging db port"}
    assert doc["events"] == [e.to_dict() for e in events_of(proxy, session)]

    rc, out, _ = show(capsys, "sessions", "--store", store)
    assert rc == 0 and session in out and out.splitlines()[0].startswith("SESSION")
    rc, out, _ = show(capsys, "sessions", "--store", store, "--json")
    (listed,) = json.loads(out)
    assert (listed["id"], listed["calls"], listed["events"]) == (session, 2, 7)

    rc, out, err = show(capsys, "show", "ses_does_not_exist", "--store", store)
    assert rc == 1 and out == "" and "ses_does_not_exist" in err


def test_show_includes_failed_calls_and_anthropic(proxy: Any, upstream: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Failed calls are part of the trajectory too, with what went wrong."""
    headers = {"X-Proctor-Session": "cli-mixed"}
    upstream.answer(Turn(text="Let me check.", tool_calls=(ToolCallSpec("lookup", {"id": 7}),)))
    client = anthropic.Anthropic(base_url=proxy.base, api_key=KEY, max_retries=0, default_headers=headers)
    client.messages.create(model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "find 7"}])
    bad = httpx.post(proxy.url + "/messages", content=b"{oops", headers=headers)
    assert bad.status_code == 400
    upstream.answer(Fault(status=500))
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "again"}])
    client.close()

    rc, out, _ = show(capsys, "show", "cli-mixed", "--store", proxy.config.store)
    assert rc == 0
    calls = [line for line in out.splitlines() if line.startswith("call ")]
    assert [re.search(r"status (\d+)", c)[1] for c in calls] == ["200", "400", "500"]  # type: ignore[index]
    assert all("messages" in c and "resolved by header" in c for c in calls)
    errors = [line for line in out.splitlines() if line.startswith("  error: ")]
    assert len(errors) == 2 and "not valid JSON" in errors[0] and "500" in errors[1]
    rows = [(m[2], m[3]) for line in out.splitlines() if (m := EVENT_LINE.match(line))]
    assert rows[:3] == [("user", "find 7"), ("assistant", "Let me check."), ("tool_call", 'lookup({"id":7})')]
    assert rows[3][0] == "error" and "not valid JSON" in rows[3][1]
    assert ("user", "again") in rows[4:]


def test_console_script_show(proxy: Any, upstream: Any) -> None:
    """The installed entry point, in its own process, reading the live store."""
    session = run_chat_session(proxy, upstream)
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "show", session, "--store", proxy.config.store],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    rows = [(m[2], m[3]) for line in done.stdout.splitlines() if (m := EVENT_LINE.match(line))]
    assert rows == TRAJECTORY


def test_reading_a_store_that_is_not_there_says_so_and_creates_nothing(tmp_path: Any, capsys: Any) -> None:
    missing = tmp_path / "elsewhere" / "proctor.db"
    for command in (["sessions"], ["show", "ses_x"], ["export"]):
        assert main([*command, "--store", f"sqlite:///{missing}"]) == 2
        err = capsys.readouterr().err
        assert f"no Proctor store at {missing}" in err and "Traceback" not in err
    assert not missing.exists() and not missing.parent.exists()


def test_serve_reports_a_bad_store_and_a_taken_port_in_one_line(tmp_path: Any) -> None:
    import socket

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "proxy", "serve", *args], capture_output=True, text=True, timeout=60)

    bad = serve("--port", "0", "--store", f"sqlite:///{tmp_path}/no/such/dir/p.db")
    assert bad.returncode == 2 and "cannot open the store" in bad.stderr and "Traceback" not in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = serve("--port", str(port), "--store", f"sqlite:///{tmp_path}/p.db")
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr and "Traceback" not in busy.stderr


def test_serve_refuses_an_upstream_that_is_its_own_address(tmp_path: Any) -> None:
    # OPENAI_BASE_URL points agents at Proctor and is read as the upstream: a call
    # would come back round until the connection pool ran dry
    env = {**os.environ, "OPENAI_BASE_URL": "http://127.0.0.1:18093/v1"}
    looped = subprocess.run([sys.executable, "-m", "proxy", "serve", "--port", "18093", "--store", f"sqlite:///{tmp_path}/p.db"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert looped.returncode == 2 and "Proctor's own address" in looped.stderr and "--upstream" in looped.stderr
    assert "Traceback" not in looped.stderr and not (tmp_path / "p.db").exists()


def test_reading_a_file_that_is_not_a_proctor_store_leaves_it_alone(tmp_path: Any, capsys: Any) -> None:
    """Opening a store migrates it, so a read command first checks it is one: another
    program's database, an empty file, junk or a store cut short get one line and stay as they were."""
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(8192))
    cases = {other: "is not a Proctor store", empty: "is not a Proctor store", junk: "is not a SQLite database"}
    before = {path: path.read_bytes() for path in cases}
    for path, says in cases.items():
        for command in (["sessions"], ["show", "ses_x"], ["export"]):
            assert main([*command, "--store", f"sqlite:///{path}"]) == 2
            err = capsys.readouterr().err
            assert says in err and "Traceback" not in err, err
    assert {path: path.read_bytes() for path in cases} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "junk.db", "other.db"]  # no -wal, no -shm


def test_sessions_says_when_it_shows_only_the_newest(proxy: Any, upstream: Any, capsys: Any) -> None:
    for _ in range(3):
        run_chat_session(proxy, upstream)
    assert main(["sessions", "--store", proxy.config.store, "--limit", "2"]) == 0
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if line.startswith("ses_")]) == 2
    assert "the newest 2 sessions; --limit N shows more" in err
    assert main(["sessions", "--store", proxy.config.store, "--limit", "50"]) == 0
    assert "--limit" not in capsys.readouterr().err


def test_output_cut_short_by_a_pipe_is_no_error(proxy: Any, upstream: Any) -> None:
    session = run_chat_session(proxy, upstream)
    # `true` reads nothing and is gone long before Python writes: every write meets a closed pipe
    script = (f"{sys.executable} -m proxy show {session} --store {proxy.config.store} | true; "
              f"{sys.executable} -m proxy sessions --store {proxy.config.store} | true; "
              f"{sys.executable} -m proxy policy schema | true")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
