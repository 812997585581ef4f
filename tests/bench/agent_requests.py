"""The agent requests the proxy benchmarks send: a coding agent's Chat Completions
calls (system prompt, tools, assistant turns with tool calls, tool results) of a
chosen size, each made unique by a nonce, and long histories that grow by one
turn per call."""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson

from tests.bench.model_server import reply_args

PLACEHOLDER = b"@@NONCE@@".ljust(24, b"@")  # replaced by a 24-character nonce (user text, tool-call ids)


SYSTEM_PROMPT = (
    "You are Forge, an autonomous software engineering agent working inside a Linux sandbox on the "
    "user's repository. You can read and write files, run shell commands and search the code base with "
    "the tools provided. Work in small, verifiable steps: read the relevant code before changing it, run "
    "the test suite after every change, and never guess the content of a file you have not read. Keep "
    "the user's coding style, do not reformat unrelated code, and do not add dependencies without asking. "
    "When a command fails, read its output carefully and fix the cause rather than the symptom. Never print "
    "secrets, tokens or credentials you come across, and never send repository content to external "
    "services. When you are done, reply with a short summary of what you changed and why, the commands "
    "you ran to verify it, and anything the user should review by hand. If the task is ambiguous, say "
    "what you assumed. Today's date is 2025-06-12; the repository is checked out at /workspace."
)
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "read_file", "description": "Read a text file from the repository, optionally a line range.",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string", "description": "Path relative to the repository root."},
            "start_line": {"type": "integer", "minimum": 1}, "end_line": {"type": "integer", "minimum": 1}},
            "required": ["path"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "write_file", "description": "Create or overwrite a file with the given content.",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string"}, "content": {"type": "string", "description": "The full new content."}},
            "required": ["path", "content"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "run_shell", "description": "Run a shell command in the repository and return its output.",
        "parameters": {"type": "object", "properties": {
            "command": {"type": "string"}, "timeout_s": {"type": "integer", "default": 120}},
            "required": ["command"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "search_code", "description": "Search the repository for a regular expression.",
        "parameters": {"type": "object", "properties": {
            "pattern": {"type": "string"}, "glob": {"type": "string", "description": "e.g. src/**/*.py"}},
            "required": ["pattern"], "additionalProperties": False}}},
]
CODE = """\
from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass


@dataclass
class Session:
    id: str
    user_id: str
    created: float
    expires: float
    data: dict[str, object]


class SessionStore:
    def __init__(self, path: str, ttl: float = 3600.0) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        self._ttl = ttl

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, user_id, created, expires, data FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        if row is None or row[3] < time.time():
            return None
        return Session(row[0], row[1], row[2], row[3], json.loads(row[4]))
""".splitlines()
SHELL = """\
============================= test session starts ==============================
platform linux -- Python 3.12.3, pytest-8.2.2, pluggy-1.5.0
rootdir: /workspace
configfile: pyproject.toml
collected 214 items

tests/test_api.py ........................................               [ 18%]
tests/test_auth.py ..................F.....                               [ 29%]
tests/test_store.py ..........E..........................                [ 47%]
tests/test_views.py ................................................     [ 70%]

=================================== FAILURES ===================================
____________________________ test_session_expiry ______________________________
    def test_session_expiry(store, clock):
        s = store.create(user_id="u1")
        clock.advance(3601)
>       assert store.get(s.id) is None
E       NameError: name 'time' is not defined
src/forge/store/session_store.py:27: NameError
=========================== short test summary info ============================
FAILED tests/test_auth.py::test_session_expiry - NameError: name 'time' is not defined
ERROR tests/test_store.py::test_concurrent_writes - sqlite3.OperationalError: database is locked
================== 1 failed, 212 passed, 1 error in 4.31s =====================
""".splitlines()
STEPS = [
    ("search_code", {"pattern": r"class SessionStore\b", "glob": "src/**/*.py"}, "Let me find where sessions are stored."),
    ("read_file", {"path": "src/forge/store/session_store.py", "start_line": 1, "end_line": 120}, None),
    ("run_shell", {"command": "python -m pytest -x -q tests/test_store.py", "timeout_s": 300}, "Running the store tests first."),
    ("read_file", {"path": "tests/test_store.py", "start_line": 40, "end_line": 110}, None),
    ("write_file", {"path": "src/forge/store/session_store.py", "content": "import time\nimport json\n# ...\n"},
     "The module uses time and json without importing them; fixing the imports."),
    ("run_shell", {"command": "python -m pytest -q", "timeout_s": 600}, None),
]


def _result_text(tool: str, length: int, i: int) -> str:
    lines = SHELL if tool == "run_shell" else CODE
    out: list[str] = []
    n, size = i * 7, 0
    while size < length:
        line = f"{n % 400 + 1:>4}  {lines[n % len(lines)]}" if tool != "run_shell" else lines[n % len(lines)]
        out.append(line)
        size += len(line) + 1
        n += 1
    return "\n".join(out)[:length]


def _agent_messages(n_messages: int, result_len: int) -> list[dict[str, Any]]:
    user = (
        f"[{PLACEHOLDER.decode()}] The session expiry test fails on main since yesterday's merge and "
        "test_concurrent_writes is flaky. Find the cause, fix it, and make sure the whole suite passes."
    )
    msgs: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    i = 0
    while len(msgs) < n_messages:
        tool, args, text = STEPS[i % len(STEPS)]
        call_id = f"call_{PLACEHOLDER.decode()}{i:04d}"  # unique per request, as the APIs issue them
        args = dict(args, **({"start_line": 1 + 40 * i} if "start_line" in args else {}))
        msgs.append({"role": "assistant", "content": text, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": tool, "arguments": json.dumps(args)}}]})
        if len(msgs) < n_messages:
            msgs.append({"role": "tool", "tool_call_id": call_id, "content": _result_text(tool, result_len, i)})
        i += 1
    return msgs


def agent_body(n_messages: int, target_bytes: int, *, stream: bool = False) -> bytes:
    """A Chat Completions agent request of about ``target_bytes`` with ``n_messages`` messages
    and a nonce placeholder in the user text and in every tool-call id."""

    def build(result_len: int) -> bytes:
        body: dict[str, Any] = {"model": "gpt-4.1-bench", "messages": _agent_messages(n_messages, result_len),
                                "tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": True,
                                "temperature": 0.2, "max_completion_tokens": 4096}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return orjson.dumps(body)

    lo, hi = 0, target_bytes
    while lo < hi:  # the largest result length that stays within the target
        mid = (lo + hi + 1) // 2
        if len(build(mid)) <= target_bytes:
            lo = mid
        else:
            hi = mid - 1
    body = build(lo)
    assert body.count(PLACEHOLDER) >= 1
    return body


class Workload:
    """Fresh (body, session id) pairs from a template."""

    def __init__(self, template: bytes) -> None:
        self.template = template

    def make(self) -> tuple[bytes, str]:
        nonce = uuid.uuid4().hex[:24]
        return self.template.replace(PLACEHOLDER, nonce.encode()), "ses_bench_" + nonce


BASE_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-not-a-real-key"}


def headers_for(session_id: str) -> dict[str, str]:
    return {**BASE_HEADERS, "X-Proctor-Session": session_id}


_TOOLS_JSON = orjson.dumps(TOOLS)


class GrowingConversation:
    """A long agent history kept as JSON bytes, extended in place by (reply, tool result) pairs."""

    HEAD = b'{"model":"gpt-4.1-bench","temperature":0.2,"tool_choice":"auto","tools":' + _TOOLS_JSON + b',"messages":['

    def __init__(self, n_messages: int) -> None:
        nonce = uuid.uuid4().hex[:24]
        self.session_id = "ses_long_" + nonce
        parts = [orjson.dumps({"role": "system", "content": SYSTEM_PROMPT[:400]}),
                 orjson.dumps({"role": "user", "content": f"[{nonce}] Audit every module under src/ for unsafe SQL."})]
        i = 0
        while len(parts) < n_messages:
            call_id = f"call_{i:08d}{nonce[:12]}"
            args = orjson.dumps({"path": f"src/forge/mod_{i:05d}.py"}).decode()
            parts.append(orjson.dumps({"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "read_file", "arguments": args}}]}))
            if len(parts) < n_messages:
                parts.append(orjson.dumps({"role": "tool", "tool_call_id": call_id,
                                           "content": f"{i:>5}  def handler_{i}(db, q): return db.execute(q)  # {nonce[:8]}"}))
            i += 1
        self.buf = bytearray(self.HEAD)
        self.buf += b",".join(parts)
        self.turns = 0
        self.nonce = nonce
        self.messages = len(parts)

    def body(self) -> bytes:
        return bytes(self.buf) + b"]}"

    def extend(self) -> None:
        """Append the tool call the model answered to the last body and a (new) result for it."""
        self.turns += 1
        call_id = f"call_{self.nonce}{self.turns:08d}"
        arguments = orjson.dumps(reply_args(self.messages)).decode()
        reply = {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "read_file", "arguments": arguments}}]}
        result = {"role": "tool", "tool_call_id": call_id,
                  "content": f"{self.turns:>4}  class SessionStore:  # turn {self.turns} of {self.session_id}"}
        self.buf += b"," + orjson.dumps(reply) + b"," + orjson.dumps(result)
        self.messages += 2
