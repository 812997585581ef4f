"""How much Proctor adds to an agent's model calls, next to the floor of a Python proxy.

Usage (from the repository root, in the project's venv)::

    python -m tests.bench.bench_proxy            # full run, about 3-4 minutes
    python -m tests.bench.bench_proxy --quick    # short run, under a minute (noisier)
    python tests/bench/bench_proxy.py --quick    # the same, as a script
    python -m tests.bench.bench_proxy --profile  # then profile Proctor under load with py-spy
                                                 # (pip install py-spy); --profile-only skips the table

Other options: ``--no-wrk`` (the asyncio load generator even when ``wrk`` is
installed), ``--no-spin``, ``--source DIR`` (run Proctor from another source
tree, e.g. ``git archive HEAD | tar -x -C DIR`` when the work tree is mid-edit), ``--wait-quiet SECONDS`` (first
wait for other work on the machine to stop), ``--profile-dir DIR`` (keep
py-spy's raw stacks), ``--json FILE`` (also write the raw numbers),
``--proctor-arg ARG`` (repeatable: an extra ``proctor serve`` argument, e.g.
``--proctor-arg=--policies=DIR`` with a one-rule policy to see the core's own cost).

What runs, all on 127.0.0.1, each in its own process (started here and ended by
PID at the end, also on an error or Ctrl-C):

* the upstream: the scripted model (``tests/bench/model_server.py``), always
  answering one tool call, streamed in 30 argument chunks when asked to stream;
* the reference: a minimal aiohttp pass-through (``tests/bench/passthrough_server.py``);
* Proctor: ``proctor serve --store sqlite:///<tmp>/bench.db`` (the tmp dir is deleted after).

On a machine with 2 or more CPUs the two proxies are pinned to the second CPU
and this process (the load generator), the upstream and ``wrk`` to the first, so
the proxy under test has a core to itself; only one proxy is under load at a time.
The first CPU also runs a busy loop at SCHED_IDLE priority (``--no-spin``
turns it off): on a VM a halted vCPU takes milliseconds to wake, which would
otherwise dominate p99 and skew every cross-core hop. The proxies' CPU is not
spun unless ``--spin-proxy-cpu`` asks: on this kernel (EEVDF scheduler) a thread
that wakes does not always preempt a SCHED_IDLE task at once, which delayed
every hand-off between Proctor's threads (event loop, store writer): 8 KB p50
added 19 ms with that loop, 11 ms without, in runs minutes apart. The output says how much
CPU other processes on the machine used meanwhile; above 5% the numbers are
disturbed and the run should be repeated on a quiet machine.

Requests are Chat Completions agent calls with 4 tools: "8 KB" (20 messages:
system, user, assistant turns with tool calls, tool results) and "100 KB" (200
messages). Each request carries a fresh ``X-Proctor-Session`` and a fresh nonce
in the user text and the tool-call ids (the APIs issue unique ids), so Proctor
resolves, decodes and records a new session every time.

Measurements (one run, pass-through and Proctor side by side):

* added latency = via a proxy minus direct to the upstream. At 1 connection from
  per-request paired samples: the same request is sent direct, via the
  pass-through and via Proctor back to back (order rotated), and the quantiles
  are taken over the per-request differences. At 16 connections from
  distributions: interleaved rounds (direct, pass-through, Proctor, rotated);
  per round added = quantile(via) - quantile(direct), then the median over the
  rounds. The 16 connections are driven by ``wrk -t1 -c16`` with a Lua script
  that gives each request a fresh session when wrk is installed (the asyncio
  client's own CPU would cap the direct and pass-through rates on a shared
  core), by the asyncio client otherwise. This is a closed loop: each proxy runs
  at its own maximum rate, so latency there is mostly 16 / throughput;
* max requests/s at 16 connections with 8 KB requests, from the same runs;
* streaming (30 chunks, 1 connection, paired): added time to first body byte and
  added total time;
* CPU time per request of each proxy process (utime+stime of all its threads from
  /proc/PID/stat, over the fixed request count of each phase);
* Proctor's VmRSS idle (before its first request) and after 1,000 distinct sessions;
* continuing sessions: a session is established with 10, 1,000 or 10,000 events
  and each measured call extends the previous one by 2 messages (the reply it
  got and a tool result), so the request carries the whole, growing history
  ("full history"). For contrast, "compacted": the session has as many events
  stored but the call carries a fresh 8 KB history. Sessions are re-established
  when they have grown by 10% (at least 10 events), so lengths stay near nominal.

``--profile`` attaches ``py-spy record --native --idle`` to Proctor during five
loads (8 KB at 1 and 16 connections, 100 KB, streaming, a 10,000-event session)
and prints, per load: Proctor's CPU per request by thread (from /proc), the
share of time each thread ran, waited for the GIL or idled (told apart by the
native frames), and the on-CPU samples by Python line, by native leaf and
inclusive by function, each with an estimate in microseconds per request.

Targets printed next to the ratios come from the issues: added p50 <= 2x the
pass-through's, p99 <= 3x, max requests/s >= 40% of the pass-through's, stream
TTFB added <= 1.5x, 10,000-event/10-event added latency <= 1.5x, RSS with 1,000
sessions <= 2x idle; and the stricter issue-2 budget: added p50 <= 1.5x for 8 KB
and 100 KB, stream TTFB <= 1.5x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SOURCE = ROOT  # the source tree Proctor runs from (--source)

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from tests.bench.model_server import reply_args  # noqa: E402

HERE = Path(__file__).resolve().parent
CHAT = "/v1/chat/completions"
DIRECT, PASS, PROCTOR = "direct", "pass-through", "Proctor"
TARGETS = (DIRECT, PASS, PROCTOR)
PLACEHOLDER = b"@@NONCE@@".ljust(24, b"@")  # replaced by a 24-character nonce (user text, tool-call ids)
HZ = os.sysconf("SC_CLK_TCK")
# A busy loop at the lowest priority (SCHED_IDLE: any other runnable task preempts it at once). One per
# pinned CPU keeps the CPU from halting while the processes on it wait for each other: on a VM, waking
# a halted vCPU costs milliseconds, which would otherwise dominate p99 (and p50 across cores).
SPIN = "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True:\n    pass\n"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- plans -------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    warmup_s: float
    paired_8k: tuple[int, float]  # (max samples, max seconds)
    paired_100k: tuple[int, float]
    paired_stream: tuple[int, float]
    rounds: int  # interleaved rounds at 16 connections
    conc_8k: tuple[int, float]  # per target per round
    conc_100k: tuple[int, float]
    full_history: dict[int, tuple[int, float]]  # session length -> (max samples, max seconds)
    compacted: dict[int, tuple[int, float]]
    rss_sessions: int = 1000
    rss_messages: int = 20  # messages per request in the 1,000-session phase


FULL = Plan(
    warmup_s=2.0,
    paired_8k=(800, 15.0),
    paired_100k=(400, 15.0),
    paired_stream=(500, 12.0),
    rounds=3,
    conc_8k=(3000, 4.0),
    conc_100k=(800, 4.0),
    full_history={10: (150, 6.0), 1000: (100, 10.0), 10000: (40, 20.0)},
    compacted={10: (100, 5.0), 1000: (60, 6.0), 10000: (40, 8.0)},
)
QUICK = Plan(
    warmup_s=0.5,
    paired_8k=(250, 3.0),
    paired_100k=(120, 3.0),
    paired_stream=(150, 2.0),
    rounds=2,
    conc_8k=(1200, 1.0),
    conc_100k=(300, 1.0),
    full_history={10: (50, 1.5), 1000: (30, 2.0), 10000: (12, 4.0)},
    compacted={10: (30, 1.0), 1000: (20, 1.5), 10000: (12, 2.0)},
    rss_messages=2,
)


# ---- requests ----------------------------------------------------------------

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


# ---- processes -----------------------------------------------------------------


class Procs:
    """Child processes; each is ended by its own PID."""

    def __init__(self, logdir: Path, source: Path = ROOT) -> None:
        self.logdir = logdir
        self.source = source
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], cpus: set[int] | None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PROCTOR_") and k not in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")}
        # The work tree's code, whatever the editable install maps (e.g. top-level packages it does not list).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.source), env.get("PYTHONPATH")]))
        logf = open(self.logdir / f"{name.replace(' ', '_')}.log", "wb")
        preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.source,
                             env=env, start_new_session=True, preexec_fn=preexec)
        logf.close()
        self.procs[name] = p
        return p

    def log_tail(self, name: str, n: int = 20) -> str:
        try:
            lines = (self.logdir / f"{name.replace(' ', '_')}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        try:
            os.kill(p.pid, sig)
            p.wait(8)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_status(pid: int, key: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    return "?"


def rss_mb(pid: int) -> float:
    return int(proc_status(pid, "VmRSS").split()[0]) / 1024


def machine_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def wait_for_quiet(max_wait: float, threshold: float = 0.10, window: float = 3.0) -> float:
    """Wait (up to ``max_wait`` seconds) until the machine's CPUs are less than ``threshold`` busy
    over ``window`` seconds; returns the last busy share seen."""
    ncpu = os.cpu_count() or 1
    deadline = time.monotonic() + max_wait
    quiet = 0
    while True:
        b0 = machine_ticks()[0]
        time.sleep(window)
        share = (machine_ticks()[0] - b0) / HZ / (window * ncpu)
        quiet = quiet + 1 if share < threshold else 0
        if quiet >= 3 or time.monotonic() >= deadline:  # quiet for 3 windows in a row
            return share
        if not quiet:
            log(f"the machine is {share:.0%} busy with other work; waiting for it to quieten")


def our_ticks(pids: list[int]) -> int:
    """CPU ticks of this process (with its waited-for children, e.g. wrk) and of the given children."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    for pid in pids:
        try:
            total += cpu_ticks(pid)
        except (OSError, IndexError, ValueError):
            pass
    return total


def thread_ticks(pid: int) -> dict[str, int]:
    """utime + stime per thread name of one process."""
    out: Counter[str] = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(tid) == pid:
                key = "main thread"
            elif name.startswith("libuv"):
                key = "libuv workers"
            else:
                key = "other Python threads (SQLite store)"
            out[key] += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return dict(out)


def code_version(source: Path) -> str:
    if not (source / ".git").exists() and source != ROOT:
        stamp = source / "SOURCE"
        return f"{source} ({stamp.read_text().strip() if stamp.exists() else 'not a git checkout'})"
    try:
        head = subprocess.run(["git", "-C", str(source), "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "proxy", "adapters", "policies"],
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{head[:70]}" + (f" + {len(dirty)} uncommitted file(s) in proxy/ adapters/ policies/" if dirty else "")


def thread_affinities(pid: int) -> str:
    cpus = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        cpus |= os.sched_getaffinity(int(tid))
    return ",".join(map(str, sorted(cpus)))


# ---- statistics ----------------------------------------------------------------


def q(xs: list[float], p: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * p
    f = math.floor(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) and b > 0 else math.nan


# ---- load --------------------------------------------------------------------


class Load:
    """The load generator: aiohttp client sessions per (target, connections)."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.sessions: dict[tuple[str, int], aiohttp.ClientSession] = {}
        self.errors: Counter[str] = Counter()
        self.error_samples: dict[str, str] = {}
        self.last_error: dict[str, str] = {}

    def session(self, target: str, conns: int) -> aiohttp.ClientSession:
        key = (target, conns)
        if key not in self.sessions:
            self.sessions[key] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=conns, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=120),
            )
        return self.sessions[key]

    async def close(self) -> None:
        for s in self.sessions.values():
            await s.close()

    def _error(self, target: str, what: str) -> None:
        self.errors[target] += 1
        self.error_samples.setdefault(target, what)
        self.last_error[target] = what

    async def post(self, target: str, conns: int, body: bytes, headers: dict[str, str]) -> float | None:
        t0 = time.perf_counter()
        try:
            async with self.session(target, conns).post(self.urls[target] + CHAT, data=body, headers=headers) as r:
                data = await r.read()
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            self._error(target, repr(e))
            return None
        dt = time.perf_counter() - t0
        if status != 200:
            self._error(target, f"HTTP {status}: {data[:200]!r}")
            return None
        return dt

    async def post_stream(self, target: str, conns: int, body: bytes, headers: dict[str, str]) -> tuple[float, float] | None:
        """(time to the first body bytes, total time)."""
        t0 = time.perf_counter()
        try:
            async with self.session(target, conns).post(self.urls[target] + CHAT, data=body, headers=headers) as r:
                if r.status != 200:
                    self._error(target, f"HTTP {r.status}: {(await r.read())[:200]!r}")
                    return None
                first = await r.content.readany()
                t1 = time.perf_counter()
                tail = first[-64:]
                while chunk := await r.content.readany():
                    tail = (tail + chunk)[-64:]
                t2 = time.perf_counter()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            self._error(target, repr(e))
            return None
        if b"[DONE]" not in tail:
            self._error(target, f"stream did not end with [DONE]: {tail!r}")
            return None
        return t1 - t0, t2 - t0

    async def closed_loop(self, target: str, conns: int, make: Callable[[], tuple[bytes, str]],
                          max_n: int, max_s: float) -> tuple[list[float], float]:
        """``conns`` workers send back to back until ``max_n`` requests or ``max_s`` seconds."""
        lat: list[float] = []
        issued = 0
        start = time.perf_counter()
        deadline = start + max_s

        async def worker() -> None:
            nonlocal issued
            while issued < max_n and time.perf_counter() < deadline:
                issued += 1
                body, sid = make()
                dt = await self.post(target, conns, body, headers_for(sid))
                if dt is not None:
                    lat.append(dt)

        await asyncio.gather(*(worker() for _ in range(conns)))
        return lat, time.perf_counter() - start


def rotated(i: int) -> tuple[str, ...]:
    k = i % len(TARGETS)
    return TARGETS[k:] + TARGETS[:k]


@dataclass
class CpuMeter:
    """CPU ticks of the proxy processes over a phase, and how many requests each served."""

    pids: dict[str, int]
    ticks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    busy_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # wall time under load

    def snapshot(self) -> dict[str, int]:
        return {t: cpu_ticks(pid) for t, pid in self.pids.items()}

    def add(self, before: dict[str, int], counts: dict[str, int], elapsed: float = 0.0) -> None:
        after = self.snapshot()
        for t in self.pids:
            self.ticks[t] += after[t] - before[t]
            self.requests[t] += counts.get(t, 0)
            if counts.get(t):
                self.busy_s[t] += elapsed

    def utilisation(self, target: str) -> float:
        """The proxy's CPU time over the wall time it was under load (1.0 = one core)."""
        return self.ticks.get(target, 0) / HZ / self.busy_s[target] if self.busy_s.get(target) else math.nan

    def ms_per_request(self, target: str) -> float:
        n = self.requests.get(target, 0)
        return self.ticks.get(target, 0) / HZ * 1000 / n if n else math.nan


# ---- the benchmark -----------------------------------------------------------


@dataclass
class Results:
    info: dict[str, Any] = field(default_factory=dict)
    paired: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # kind -> target -> samples (s)
    stream: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    conc: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # size -> target -> latencies (s)
    conc_rounds: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)  # (p50, p99) per round
    conc_rps: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    conc_source: str = ""
    wrk_notes: list[str] = field(default_factory=list)
    cpu: dict[str, CpuMeter] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    length: dict[str, dict[int, dict[str, list[float]]]] = field(default_factory=dict)  # mode -> L -> target -> added
    length_bytes: dict[str, dict[int, int]] = field(default_factory=dict)
    length_direct: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    length_notes: dict[str, str] = field(default_factory=dict)


async def wait_ready(procs: Procs, name: str, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            p = procs.procs[name]
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{procs.log_tail(name)}")
            try:
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:g}s:\n{procs.log_tail(name)}")


async def paired(load: Load, make: Callable[[], tuple[bytes, str]], n: int, max_s: float,
                 cpu: CpuMeter | None = None, *, stream: bool = False) -> dict[str, list[Any]]:
    """Per request: the same body direct, via the pass-through and via Proctor, back
    to back; each sample the latency (or, with ``stream``, (TTFB, total))."""
    send = load.post_stream if stream else load.post
    out: dict[str, list[Any]] = {t: [] for t in TARGETS}
    before = cpu.snapshot() if cpu else {}
    counts: Counter[str] = Counter()
    deadline = time.perf_counter() + max_s
    for i in range(n):
        if time.perf_counter() > deadline:
            break
        body, sid = make()
        got = {}
        for t in rotated(i):
            got[t] = await send(t, 1, body, headers_for(sid))
            counts[t] += 1
        if all(v is not None for v in got.values()):
            for t in TARGETS:
                out[t].append(got[t])
    if cpu:
        cpu.add(before, counts)
    return out


def _last_error(load: Load) -> str:
    return f"establishing the session failed: {load.last_error.get(PROCTOR, '?')[:160]}"


async def full_history(load: Load, length: int, n: int, max_s: float, res: Results) -> None:
    """A session established with ``length`` events; each measured call extends the previous one."""
    per_session = max(1, max(10, length // 10) // 2)
    added: dict[str, list[float]] = {PASS: [], PROCTOR: []}
    direct: list[float] = []
    conv: GrowingConversation | None = None
    deadline = time.perf_counter() + max_s
    for i in range(n):
        if time.perf_counter() > deadline and i >= 3:
            break
        if conv is None or conv.turns >= per_session:
            conv = GrowingConversation(length)
            if await load.post(PROCTOR, 1, conv.body(), headers_for(conv.session_id)) is None:
                res.length_notes[f"full history {length}"] = _last_error(load)
                break
        conv.extend()
        body, h = conv.body(), headers_for(conv.session_id)
        got = {t: await load.post(t, 1, body, h) for t in rotated(i)}
        if any(v is None for v in got.values()):
            continue
        direct.append(got[DIRECT])  # type: ignore[arg-type]
        for t in (PASS, PROCTOR):
            added[t].append(got[t] - got[DIRECT])  # type: ignore[operator]
        res.length_bytes.setdefault("full history", {})[length] = len(body)
    res.length.setdefault("full history", {})[length] = added
    res.length_direct.setdefault("full history", {})[length] = direct


async def compacted(load: Load, length: int, n: int, max_s: float, work: Workload, res: Results) -> None:
    """A session with ``length`` events stored; each call carries a fresh 8 KB history under its id."""
    per_session = max(1, max(10, length // 10) // 26)  # a fresh 8 KB history adds 25 events + the reply
    added: dict[str, list[float]] = {PASS: [], PROCTOR: []}
    direct: list[float] = []
    sid, used = "", per_session
    deadline = time.perf_counter() + max_s
    for i in range(n):
        if time.perf_counter() > deadline and i >= 3:
            break
        if used >= per_session:
            conv = GrowingConversation(length)
            if await load.post(PROCTOR, 1, conv.body(), headers_for(conv.session_id)) is None:
                res.length_notes[f"compacted {length}"] = _last_error(load)
                break
            sid, used = conv.session_id, 0
        body, _ = work.make()
        got = {t: await load.post(t, 1, body, headers_for(sid)) for t in rotated(i)}
        used += 1
        if any(v is None for v in got.values()):
            continue
        direct.append(got[DIRECT])  # type: ignore[arg-type]
        for t in (PASS, PROCTOR):
            added[t].append(got[t] - got[DIRECT])  # type: ignore[operator]
        res.length_bytes.setdefault("compacted", {})[length] = len(body)
    res.length.setdefault("compacted", {})[length] = added
    res.length_direct.setdefault("compacted", {})[length] = direct


WRK_LUA = r"""
local f = assert(io.open("%(body)s", "rb"))
local template = f:read("*a")
f:close()
local counter = 0
local prefix = "%(prefix)s"
request = function()
  counter = counter + 1
  local nonce = string.format("%%s%%012d", prefix, counter)
  local body = (template:gsub("%(placeholder)s", nonce))
  return wrk.format("POST", "%(path)s", {
    ["Host"] = "127.0.0.1",
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer sk-bench-not-a-real-key",
    ["X-Proctor-Session"] = "ses_bench_" .. nonce,
  }, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKJSON {\"requests\": %%d, \"duration_us\": %%d, \"status\": %%d, \"connect\": %%d, \"read\": %%d, \"write\": %%d, \"timeout\": %%d, \"p50_us\": %%d, \"p99_us\": %%d}\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(wrk: str, url: str, body_path: Path, prefix: str, seconds: int, cpus: set[int] | None, tmp: Path) -> dict[str, Any]:
    script = tmp / f"wrk_{prefix}.lua"
    script.write_text(WRK_LUA % {"body": str(body_path), "prefix": prefix, "placeholder": PLACEHOLDER.decode(), "path": CHAT})
    cmd = [wrk, "-t1", "-c16", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, preexec_fn=preexec)
    m = re.search(r"WRKJSON (\{.*\})", out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    data = json.loads(m.group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    data["errors"] = sum(data[k] for k in ("status", "connect", "read", "write", "timeout"))
    return data


async def measure(args: argparse.Namespace, plan: Plan, procs: Procs, tmp: Path, res: Results,
                  profile: Callable[[Load, dict[str, int], dict[str, Any]], Awaitable[None]] | None) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    gen_cpu, proxy_cpu = ({cpus[0]}, {cpus[1]}) if len(cpus) >= 2 else (None, None)
    if gen_cpu:
        os.sched_setaffinity(0, gen_cpu)
    if gen_cpu and not args.no_spin:
        for cpu in sorted(gen_cpu | proxy_cpu if args.spin_proxy_cpu else gen_cpu):
            procs.start(f"keep-awake {cpu}", [sys.executable, "-c", SPIN], {cpu})
    ports = {t: free_port() for t in TARGETS}
    upstream = f"http://127.0.0.1:{ports[DIRECT]}/v1"
    db = tmp / "bench.db"
    proctor_bin = Path(sys.executable).parent / "proctor"
    proctor_cmd = [str(proctor_bin)] if proctor_bin.exists() else [sys.executable, "-m", "proxy"]
    procs.start("upstream", [sys.executable, str(HERE / "model_server.py"), "--port", str(ports[DIRECT])], gen_cpu)
    procs.start(PASS, [sys.executable, str(HERE / "passthrough_server.py"), "--port", str(ports[PASS]),
                       "--upstream", upstream], proxy_cpu)
    procs.start(PROCTOR, [*proctor_cmd, "serve", "--port", str(ports[PROCTOR]), "--upstream", upstream,
                          "--store", f"sqlite:///{db}", *args.proctor_arg], proxy_cpu)
    await wait_ready(procs, "upstream", upstream + "/models")
    await wait_ready(procs, PASS, f"http://127.0.0.1:{ports[PASS]}/healthz")
    await wait_ready(procs, PROCTOR, f"http://127.0.0.1:{ports[PROCTOR]}/healthz")
    pids = {PASS: procs.procs[PASS].pid, PROCTOR: procs.procs[PROCTOR].pid}
    await asyncio.sleep(0.5)
    res.rss["Proctor idle"] = rss_mb(pids[PROCTOR])
    res.rss["pass-through idle"] = rss_mb(pids[PASS])

    fs = "?"
    try:
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp)], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    res.info.update({
        "cpus": len(cpus), "cpu_model": _cpu_model(), "python": platform.python_version(),
        "aiohttp": aiohttp.__version__, "uvloop": _version("uvloop"), "kernel": platform.release(),
        "pinning": (f"pass-through and Proctor on CPU {sorted(proxy_cpu)[0]} (threads: "
                    f"{thread_affinities(pids[PASS])} / {thread_affinities(pids[PROCTOR])}); load generator, "
                    f"upstream and wrk on CPU {sorted(gen_cpu)[0]} (upstream threads: "
                    f"{thread_affinities(procs.procs['upstream'].pid)})")
        if gen_cpu else f"not pinned: only {len(cpus)} CPU(s) available",
        "keep_awake": (f"a SCHED_IDLE busy loop on CPU {'s '.join(str(c) for c in sorted(gen_cpu | proxy_cpu)) if args.spin_proxy_cpu else sorted(gen_cpu)[0]}"
                       " keeps the vCPU from halting (--no-spin: none; --spin-proxy-cpu: the proxies' CPU too)")
        if gen_cpu and not args.no_spin else "none",
        "loadavg": "load average " + " ".join(open("/proc/loadavg").read().split()[:3]) + " at the start",
        "store": f"sqlite:///{db} ({fs})", "plan": "quick" if args.quick else "full", "code": code_version(procs.source),
        "proctor_args": " ".join(args.proctor_arg) or "none",
    })

    small, large = Workload(agent_body(20, 8 * 1024)), Workload(agent_body(200, 100 * 1024))
    streaming = Workload(agent_body(20, 8 * 1024, stream=True))
    res.info["sizes"] = {"8 KB": len(small.template), "100 KB": len(large.template), "stream": len(streaming.template)}
    load = Load({DIRECT: f"http://127.0.0.1:{ports[DIRECT]}", PASS: f"http://127.0.0.1:{ports[PASS]}",
                 PROCTOR: f"http://127.0.0.1:{ports[PROCTOR]}"})
    try:
        if profile is not None and args.profile_only:
            await profile(load, pids, {"small": small, "large": large, "stream": streaming})
            return

        t_phase = time.perf_counter()
        child_pids = [p.pid for p in procs.procs.values()]
        machine_before, ours_before = machine_ticks(), our_ticks(child_pids)
        rss_work = small if plan.rss_messages == 20 else Workload(agent_body(plan.rss_messages, 4096))
        res.info["rss_request"] = f"{plan.rss_messages} messages, {len(rss_work.template):,} B"
        log(f"Proctor: {plan.rss_sessions} distinct sessions ({res.info['rss_request']}, 16 connections) for the RSS measurement")
        lat, _ = await load.closed_loop(PROCTOR, 16, rss_work.make, plan.rss_sessions, 120.0)
        res.info["rss_sessions_ok"] = len(lat)
        await asyncio.sleep(0.3)
        res.rss["Proctor after 1,000 sessions"] = rss_mb(pids[PROCTOR])

        log("warm-up")
        for t in TARGETS:
            await load.closed_loop(t, 16, small.make, 10**9, plan.warmup_s)
            await load.closed_loop(t, 16, large.make, 10**9, plan.warmup_s / 2)
            for _ in range(30):
                body, sid = small.make()
                await load.post(t, 1, body, headers_for(sid))
                body, sid = streaming.make()
                await load.post_stream(t, 1, body, headers_for(sid))

        for kind, work, (n, s) in (("8 KB", small, plan.paired_8k), ("100 KB", large, plan.paired_100k)):
            log(f"1 connection, paired, {kind}")
            res.cpu[f"{kind}, 1 connection"] = cpu = CpuMeter(pids)
            res.paired[kind] = await paired(load, work.make, n, s, cpu)
        log("1 connection, paired, streaming")
        res.cpu["stream 8 KB, 1 connection"] = cpu = CpuMeter(pids)
        res.stream = await paired(load, streaming.make, *plan.paired_stream, cpu, stream=True)

        wrk = None if args.no_wrk else shutil.which("wrk")
        res.conc_source = "wrk -t1 -c16" if wrk else "asyncio client"
        if not wrk:
            res.wrk_notes.append("wrk not installed (apt-get install wrk) or --no-wrk: the asyncio client drives 16 connections")
        for kind, work, (n, s) in (("8 KB", small, plan.conc_8k), ("100 KB", large, plan.conc_100k)):
            log(f"16 connections, {plan.rounds} interleaved rounds, {kind}, with {res.conc_source}")
            res.conc[kind] = {t: [] for t in TARGETS}
            res.conc_rounds[kind] = {t: [] for t in TARGETS}
            res.conc_rps[kind] = {t: [] for t in TARGETS}
            res.cpu[f"{kind}, 16 connections"] = cpu = CpuMeter(pids)
            body_path = tmp / f"body_{kind.replace(' ', '')}.json"
            body_path.write_bytes(work.template)
            for r in range(plan.rounds):
                for t in rotated(r):
                    before = cpu.snapshot()
                    data = None
                    if wrk:
                        try:
                            prefix = f"w{r}{TARGETS.index(t)}{uuid.uuid4().hex[:6]}"
                            data = run_wrk(wrk, load.urls[t] + CHAT, body_path, prefix, max(1, round(s)), gen_cpu, tmp)
                        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                            res.wrk_notes.append(f"wrk failed, the asyncio client took over: {e}")
                            wrk, res.conc_source = None, "asyncio client"
                    if data is not None and data["requests"] < 32:  # too slow for so short a run: empty numbers
                        res.wrk_notes.append(f"{t}, {kind}, round {r + 1}: wrk completed only {data['requests']} "
                                             f"requests in {data['duration_us'] / 1e6:.1f} s; the asyncio client measured it")
                        data, before = None, cpu.snapshot()
                    if data is not None:
                        if data["errors"]:
                            load._error(t, f"wrk: {data}")
                        cpu.add(before, {t: data["requests"]}, data["duration_us"] / 1e6)
                        res.conc_rounds[kind][t].append((data["p50_us"] / 1e6, data["p99_us"] / 1e6))
                        res.conc_rps[kind][t].append(data["rps"])
                        continue
                    lat, elapsed = await load.closed_loop(t, 16, work.make, n, s)
                    cpu.add(before, {t: len(lat)}, elapsed)
                    res.conc[kind][t] += lat
                    res.conc_rounds[kind][t].append((q(lat, 0.5), q(lat, 0.99)))
                    res.conc_rps[kind][t].append(len(lat) / elapsed)

        for length, (n, s) in plan.full_history.items():
            log(f"continuing session, full history, {length} events")
            await full_history(load, length, n, s, res)
        for length, (n, s) in plan.compacted.items():
            log(f"continuing session, compacted history, {length} events")
            await compacted(load, length, n, s, small, res)

        res.rss["Proctor at the end"] = rss_mb(pids[PROCTOR])
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            res.info["db_sessions"], res.info["db_events"] = con.execute(
                "SELECT count(*), coalesce(sum(events), 0) FROM sessions").fetchone()
            con.close()
        except sqlite3.Error as e:
            res.info["db_sessions"] = f"? ({e})"
        res.info["db_mb"] = sum(p.stat().st_size for p in tmp.glob("bench.db*")) / 2**20
        res.info["measure_s"] = time.perf_counter() - t_phase
        (busy, steal), ours = machine_ticks(), our_ticks(child_pids)
        others = max(0, (busy - machine_before[0]) - (ours - ours_before))
        res.info["others_cpu_s"] = others / HZ
        res.info["others_share"] = others / HZ / (res.info["measure_s"] * len(cpus))
        res.info["steal_s"] = (steal - machine_before[1]) / HZ

        if profile is not None:
            await profile(load, pids, {"small": small, "large": large, "stream": streaming})
    finally:
        await load.close()
        res.info["errors"] = dict(load.errors)
        res.info["error_samples"] = dict(load.error_samples)


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _version(mod: str) -> str:
    try:
        return __import__(mod).__version__
    except Exception:  # noqa: BLE001
        return "not installed"


# ---- report ------------------------------------------------------------------


def fmt(x: float, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if unit == "x":
        return f"{x:.2f}x"
    if unit == "rps":
        return f"{x:,.0f}"
    if unit == "MB":  # also used for core shares
        return f"{x:.2f}" if x < 10 else f"{x:.1f}"
    return f"{x:.3f}"


@dataclass
class Row:
    label: str
    direct: str = ""
    passthrough: str = ""
    proctor: str = ""
    ratio: str = ""
    target: str = ""


def verdict(value: float, limit: float, higher_is_better: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    ok = value >= limit if higher_is_better else value <= limit
    return "ok" if ok else "MISS"


def noise_floor(direct: float) -> float:
    return max(0.1, 0.05 * direct)


def floored_ratio(proctor: float, passthrough: float, direct: float) -> tuple[float, str]:
    """Proctor's added time over the pass-through's, and how to print it. When the
    pass-through adds less than the noise floor the true ratio is at least
    proctor / floor: that lower bound is shown as ">=Nx*" and judged."""
    floor = noise_floor(direct)
    if math.isnan(passthrough) or passthrough >= floor:
        r = ratio(proctor, passthrough)
        return r, fmt(r, "x")
    r = ratio(proctor, floor)
    return r, ">=" + fmt(r, "x") + "*"


def build_report(res: Results, command: str) -> tuple[str, list[tuple[str, str]]]:
    rows: list[Row | str] = []
    checks: list[tuple[str, str]] = []

    def target_cell(r: float, issue: float | None, issue2: float | None = None, higher: bool = False) -> str:
        sign = ">=" if higher else "<="
        cells = []
        if issue is not None:
            cells.append(f"{sign}{issue:g}x {verdict(r, issue, higher)}")
        if issue2 is not None:
            cells.append(f"i2 {sign}{issue2:g}x {verdict(r, issue2, higher)}")
        return "; ".join(cells)

    ms = 1000.0
    rows.append("Added latency, 1 connection, ms (paired per request: via - direct; direct column: absolute)")
    for kind in ("8 KB", "100 KB"):
        samples = res.paired.get(kind, {})
        if not samples or not samples.get(DIRECT):
            continue
        d = samples[DIRECT]
        added = {t: [v - dv for v, dv in zip(samples[t], d)] for t in (PASS, PROCTOR)}
        for p, name, lim, lim2 in ((0.5, "p50", 2.0, 1.5), (0.99, "p99", 3.0, None)):
            a_pass, a_proc = q(added[PASS], p) * ms, q(added[PROCTOR], p) * ms
            r, shown = floored_ratio(a_proc, a_pass, q(d, p) * ms)
            rows.append(Row(f"  {kind:<6} {name}  (n={len(d)})", fmt(q(d, p) * ms), fmt(a_pass), fmt(a_proc),
                            shown, target_cell(r, lim, lim2)))
            checks.append((f"added {name} {kind}, 1 connection <= {lim:g}x pass-through", verdict(r, lim)))
            if lim2:
                checks.append((f"[issue-2] added {name} {kind}, 1 connection <= {lim2:g}x pass-through", verdict(r, lim2)))

    rows.append(f"Added latency, 16 connections, ms ({res.conc_source}, closed loop; per round q(via) - q(direct),"
                " median of interleaved rounds)")
    for kind in ("8 KB", "100 KB"):
        rounds = res.conc_rounds.get(kind, {})
        if not rounds or not rounds.get(DIRECT):
            continue
        for i, (name, lim, lim2) in enumerate((("p50", 2.0, 1.5), ("p99", 3.0, None))):
            d = q([r[i] for r in rounds[DIRECT]], 0.5) * ms
            added = {t: q([v[i] - dv[i] for v, dv in zip(rounds[t], rounds[DIRECT])], 0.5) * ms for t in (PASS, PROCTOR)}
            r, shown = floored_ratio(added[PROCTOR], added[PASS], d)
            rows.append(Row(f"  {kind:<6} {name}  ({len(rounds[DIRECT])} rounds)", fmt(d), fmt(added[PASS]),
                            fmt(added[PROCTOR]), shown, target_cell(r, lim, lim2)))
            checks.append((f"added {name} {kind}, 16 connections <= {lim:g}x pass-through", verdict(r, lim)))
            if lim2:
                checks.append((f"[issue-2] added {name} {kind}, 16 connections <= {lim2:g}x pass-through", verdict(r, lim2)))

    rows.append(f"Max requests/s, 16 connections, 8 KB ({res.conc_source}, median of rounds)")
    rps = {t: q(v, 0.5) for t, v in res.conc_rps.get("8 KB", {}).items()}
    if rps:
        r = ratio(rps[PROCTOR], rps[PASS])
        rows.append(Row("  requests/s", fmt(rps[DIRECT], "rps"), fmt(rps[PASS], "rps"), fmt(rps[PROCTOR], "rps"),
                        fmt(r, "x"), target_cell(r, 0.4, higher=True)))
        checks.append(("max rps >= 40% of pass-through", verdict(r, 0.4, True)))
        if rps[PASS] > 0.85 * rps[DIRECT]:
            rows.append(f"  note: the pass-through reaches {rps[PASS] / rps[DIRECT]:.0%} of the direct rate: "
                        "the upstream/load generator core may cap it")
    for note in res.wrk_notes:
        rows.append(f"  ({note})")

    if res.stream.get(DIRECT):
        rows.append("Streaming 8 KB, 30 chunks, 1 connection, ms (paired; direct column: absolute)")
        d = res.stream[DIRECT]
        for idx, name in ((0, "added TTFB"), (1, "added total")):
            for p, pname in ((0.5, "p50"), (0.99, "p99")):
                added = {t: q([s[idx] - ds[idx] for s, ds in zip(res.stream[t], d)], p) * ms for t in (PASS, PROCTOR)}
                r = ratio(added[PROCTOR], added[PASS])
                tgt = target_cell(r, 1.5, 1.5) if (idx == 0 and p == 0.5) else ""
                rows.append(Row(f"  {name} {pname}  (n={len(d)})", fmt(q([s[idx] for s in d], p) * ms),
                                fmt(added[PASS]), fmt(added[PROCTOR]), fmt(r, "x"), tgt))
                if idx == 0 and p == 0.5:
                    checks.append(("stream added TTFB p50 <= 1.5x pass-through (issue and issue-2)", verdict(r, 1.5)))

    rows.append("Proxy CPU time per request, ms (utime+stime, all threads, /proc/PID/stat)")
    for name, meter in res.cpu.items():
        a, b = meter.ms_per_request(PASS), meter.ms_per_request(PROCTOR)
        rows.append(Row(f"  {name}  (n={meter.requests.get(PROCTOR, 0)})", "", fmt(a), fmt(b), fmt(ratio(b, a), "x")))
    for name, meter in res.cpu.items():
        if "16 connections" in name:
            rows.append(Row(f"  CPU busy under load, {name.split(',')[0]}, 16 conn. (1 = a core)", "",
                            fmt(meter.utilisation(PASS), "MB"), fmt(meter.utilisation(PROCTOR), "MB")))

    rows.append("Resident memory, MB (VmRSS)")
    idle, after = res.rss.get("Proctor idle", math.nan), res.rss.get("Proctor after 1,000 sessions", math.nan)
    r = ratio(after, idle)
    rows.append(Row(f"  Proctor idle -> after 1,000 sessions ({res.info.get('rss_request', '')})", "", "", f"{fmt(idle, 'MB')} -> {fmt(after, 'MB')}",
                    fmt(r, "x"), target_cell(r, 2.0)))
    checks.append(("RSS after 1,000 sessions <= 2x idle", verdict(r, 2.0)))
    rows.append(Row("  pass-through idle; Proctor at the end", "", fmt(res.rss.get("pass-through idle", math.nan), "MB"),
                    fmt(res.rss.get("Proctor at the end", math.nan), "MB"), "",
                    f"end: {res.info.get('db_sessions')} sessions, {res.info.get('db_events')} events"))

    for mode, text in (("full history", "each call extends the previous by 2 messages, whole history sent"),
                       ("compacted", "session has N events stored, each call sends a fresh 8 KB history")):
        data = res.length.get(mode)
        if not data:
            continue
        rows.append(f"Continuing session, {mode}: {text}; added p50, ms (paired; direct column: absolute p50)")
        for length, added in data.items():
            note = res.length_notes.get(f"{mode} {length}")
            if note and not added[PROCTOR]:
                rows.append(f"  {length:>6,} events: n/a, {note}")
                continue
            a, b = q(added[PASS], 0.5) * ms, q(added[PROCTOR], 0.5) * ms
            size = res.length_bytes.get(mode, {}).get(length, 0)
            rows.append(Row(f"  {length:>6,} events, {size / 1024:,.0f} KB  (n={len(added[PROCTOR])})",
                            fmt(q(res.length_direct[mode][length], 0.5) * ms), fmt(a), fmt(b), fmt(ratio(b, a), "x")))
        lo, hi = min(data), max(data)
        r_pass = ratio(q(data[hi][PASS], 0.5), q(data[lo][PASS], 0.5))
        r_proc = ratio(q(data[hi][PROCTOR], 0.5), q(data[lo][PROCTOR], 0.5))
        rows.append(Row(f"  ratio {hi:,}/{lo:,} events", "", fmt(r_pass, "x"), fmt(r_proc, "x"), "",
                        target_cell(r_proc, 1.5)))
        failed = res.length_notes.get(f"{mode} {hi}") if not data[hi][PROCTOR] else None
        checks.append((f"added p50 at {hi:,} / {lo:,} events ({mode}) <= 1.5x"
                       + (f" (no sample at {hi:,}: {failed})" if failed else ""),
                       "MISS" if failed else verdict(r_proc, 1.5)))

    header = Row("", "direct", "pass-through", "Proctor", "Proctor/pass", "target (i2 = issue-2 budget)")
    widths = [48, 10, 13, 16, 13, 30]

    def line(r: Row) -> str:
        cells = [r.label, r.direct, r.passthrough, r.proctor, r.ratio, r.target]
        return (cells[0].ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(cells[1:5], widths[1:5]))
                + "   " + cells[5]).rstrip()

    info = res.info
    sizes = info.get("sizes", {})
    out = [
        "=" * 118,
        "Proctor overhead benchmark" + f"  ({info.get('plan')} run, {info.get('measure_s', 0):.0f} s of measurement)",
        f"command:  {command}",
        f"machine:  {info.get('cpus')} CPUs ({info.get('cpu_model')}), Linux {info.get('kernel')}, Python {info.get('python')}, "
        f"aiohttp {info.get('aiohttp')}, uvloop {info.get('uvloop')}",
        f"pinning:  {info.get('pinning')}",
        f"awake:    {info.get('keep_awake')}",
        f"code:     {info.get('code')}",
        f"load:     {info.get('loadavg')}" + (f"; machine {info['busy_before']:.0%} busy just before the start"
                                              if "busy_before" in info else ""),
        f"store:    {info.get('store')}; at the end {info.get('db_mb', 0):.0f} MB",
        f"requests: Chat Completions with 4 tools: 8 KB = 20 messages ({sizes.get('8 KB')} B), 100 KB = 200 messages "
        f"({sizes.get('100 KB')} B), stream = 8 KB with stream=true; a fresh X-Proctor-Session, user-text nonce and tool-call ids per request; the "
        "upstream answers one tool call (streamed: 34 SSE events, 30 argument chunks)",
        "=" * 118,
        line(header),
    ]
    for r in rows:
        out.append(r if isinstance(r, str) else line(r))
    out.append("-" * 118)
    if any(isinstance(r, Row) and r.ratio.endswith("*") for r in rows):
        out.append("* the pass-through adds less than max(0.1 ms, 5% of direct) here, within noise: the ratio shown is "
                   "Proctor's added time over that floor, a lower bound")
    errors = info.get("errors") or {}
    out.append("errors: " + (", ".join(f"{k}: {v} ({info['error_samples'].get(k, '')[:120]})" for k, v in errors.items())
                             if errors else "none"))
    if info.get("rss_sessions_ok") is not None and info["rss_sessions_ok"] != 1000:
        out.append(f"warning: only {info['rss_sessions_ok']} of the 1,000 RSS sessions succeeded")
    if "others_cpu_s" in info:
        share = info["others_share"]
        out.append(f"interference: other processes on this machine used {info['others_cpu_s']:.1f} CPU-s during the "
                   f"measurement ({share:.1%} of its CPU time; hypervisor steal {info.get('steal_s', 0):.1f} s)"
                   + ("  <-- WARNING: the numbers above are disturbed; rerun on a quiet machine" if share > 0.05 else ""))
    out.append("targets:")
    for text, v in checks:
        out.append(f"  {v:<5} {text}")
    return "\n".join(out), checks


# ---- profiling ---------------------------------------------------------------


_PY_FRAME = re.compile(r"\((?:[^()]*\.py|<string>):\d+\)$")


def _sample_state(frames: list[str]) -> str:
    """"cpu", "gil" (waiting to take the GIL) or "idle" (waiting for work or I/O), from a native stack."""
    last_py = max((i for i, f in enumerate(frames) if _PY_FRAME.search(f)), default=-1)
    tail = " ".join(frames[last_py + 1:])
    if "pthread_cond_timedwait" in tail or "take_gil" in tail:
        return "gil"  # CPython 3.11 waits for the GIL on a timed condition variable
    if any(m in tail for m in ("PyThread_acquire_lock_timed", "epoll_wait", "epoll_pwait", "sem_wait", "sem_clockwait",
                               "sem_timedwait", "pthread_cond_wait", "uv__io_poll")):
        return "idle"
    return "cpu"


def summarize_profile(raw: Path, title: str, requests: int, cpu_ms: float, threads: dict[str, float],
                      native: bool, top: int = 16) -> str:
    """Where Proctor's CPU goes, from py-spy's raw (collapsed) stacks: per thread how much it
    ran, waited for the GIL or idled; on-CPU samples by Python source line (with the native
    code called from it), by native leaf, and inclusive by function."""
    states: dict[str, Counter[str]] = defaultdict(Counter)
    by_line: Counter[str] = Counter()
    by_native: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    cpu_total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = re.sub(r"^thread \(0?x?[0-9A-Fa-f]+\): ", "", frames[0]) if frames[0].startswith("thread") else "?"
        frames = [f for f in frames if not f.startswith(("thread", "process"))]
        if not frames:
            continue
        state = _sample_state(frames) if native else "cpu"
        states[thread][state] += n
        if state != "cpu":
            continue
        cpu_total += n
        py = [f for f in frames if _PY_FRAME.search(f)]
        by_line[py[-1] if py else "(no Python frame)"] += n
        if native and not _PY_FRAME.search(frames[-1]):
            leaf = frames[-1]
            leaf = re.sub(r"^0x[0-9a-f]+ \((.*)\)$", r"\1 (unresolved)", leaf)
            by_native[leaf] += n
        for f in {re.sub(r":\d+\)$", ")", f) for f in py}:
            incl[f] += n
    if not cpu_total:
        return f"Profile: {title}: no on-CPU samples"

    def short(frame: str) -> str:
        return frame.replace(str(ROOT) + "/", "").replace(str(SOURCE) + "/", "")

    per_req = cpu_ms * 1000 / cpu_total  # µs of Proctor CPU per request, per on-CPU sample
    out = [f"Profile: {title}",
           f"  {requests:,} requests; Proctor CPU {cpu_ms:.3f} ms/request by /proc ("
           + ", ".join(f"{k} {v:.3f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v) + ")"]
    if native:
        out.append("  threads (share of each thread's samples): " + "; ".join(
            f"{t}: cpu {c['cpu'] / sum(c.values()):.0%}, GIL wait {c['gil'] / sum(c.values()):.0%}, "
            f"idle {c['idle'] / sum(c.values()):.0%}" for t, c in sorted(states.items(), key=lambda kv: -sum(kv[1].values()))))
    out.append(f"  on-CPU samples ({cpu_total:,}) by Python line, incl. the native code it calls (share, ~us/request):")
    for f, n in by_line.most_common(top):
        out.append(f"    {n / cpu_total:6.1%} {n * per_req:9.1f}  {short(f)}")
    if by_native:
        out.append("  on-CPU samples by native leaf function:")
        for f, n in by_native.most_common(8):
            out.append(f"    {n / cpu_total:6.1%} {n * per_req:9.1f}  {short(f)}")
    out.append("  inclusive by Python function (Proctor's code and the libraries it calls):")
    keep = [(f, n) for f, n in incl.most_common()
            if not f.startswith(("main (", "<module>", "cmd_serve", "run_app", "Thread.", "_fix_request_current_app",
                                 "RequestHandler._handle_request", "Application._handle"))]
    for f, n in keep[: top + 6]:
        out.append(f"    {n / cpu_total:6.1%} {n * per_req:9.1f}  {short(f)}")
    return "\n".join(out)


def make_profiler(args: argparse.Namespace, procs: Procs, outdir: Path, reports: list[str]) -> Callable[..., Awaitable[None]]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    async def profile(load: Load, pids: dict[str, int], work: dict[str, Workload]) -> None:
        if not Path(pyspy).exists():
            reports.append("profiling skipped: py-spy is not installed (pip install py-spy)")
            return
        gen = os.sched_getaffinity(0)
        secs = 4.0 if args.quick else 10.0
        # --native sees where threads wait (GIL, queues, epoll); py-spy's own idle detection does not, here.
        native = not args.profile_python_only
        await load.closed_loop(PROCTOR, 16, work["small"].make, 10**9, 1.0)  # warm-up

        async def conc(w: Workload) -> int:
            lat, _ = await load.closed_loop(PROCTOR, 16, w.make, 10**9, secs)
            return len(lat)

        async def one_conn(w: Workload) -> int:
            lat, _ = await load.closed_loop(PROCTOR, 1, w.make, 10**9, secs)
            return len(lat)

        async def stream16() -> int:
            done = 0
            deadline = time.perf_counter() + secs

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    body, sid = work["stream"].make()
                    if await load.post_stream(PROCTOR, 16, body, headers_for(sid)) is not None:
                        done += 1

            await asyncio.gather(*(worker() for _ in range(16)))
            return done

        async def long_session() -> int:
            conv = GrowingConversation(10000)
            await load.post(PROCTOR, 1, conv.body(), headers_for(conv.session_id))
            n, deadline = 0, time.perf_counter() + secs
            while time.perf_counter() < deadline:
                conv.extend()
                if await load.post(PROCTOR, 1, conv.body(), headers_for(conv.session_id)) is not None:
                    n += 1
            return n

        workloads = [
            ("8 KB, fresh session per request, 1 connection", lambda: one_conn(work["small"])),
            ("8 KB, fresh session per request, 16 connections", lambda: conc(work["small"])),
            ("100 KB, fresh session per request, 16 connections", lambda: conc(work["large"])),
            ("stream 8 KB, fresh session per request, 16 connections", stream16),
            ("continuing a 10,000-event session, full history, 1 connection", long_session),
        ]
        for i, (title, run) in enumerate(workloads):
            log(f"profiling: {title}")
            raw = outdir / f"profile_{i}.txt"
            name = f"py-spy {i}"
            cmd = [pyspy, "record", "--pid", str(pids[PROCTOR]), "--rate", "200", "--format", "raw", "--threads",
                   "--output", str(raw)]
            procs.start(name, cmd + (["--native", "--idle"] if native else []), gen)
            await asyncio.sleep(1.0)
            before, threads_before = cpu_ticks(pids[PROCTOR]), thread_ticks(pids[PROCTOR])
            n = max(await run(), 1)
            cpu_ms = (cpu_ticks(pids[PROCTOR]) - before) / HZ * 1000 / n
            threads = {k: (v - threads_before.get(k, 0)) / HZ * 1000 / n for k, v in thread_ticks(pids[PROCTOR]).items()}
            procs.stop(name, signal.SIGINT)
            if raw.exists():
                reports.append(summarize_profile(raw, title, n, cpu_ms, threads, native))
            else:
                reports.append(f"Profile: {title}: py-spy wrote nothing:\n{procs.log_tail(name)}")

    return profile


# ---- main --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Proctor overhead benchmark (see the module docstring).")
    parser.add_argument("--quick", action="store_true", help="a short run (< 1 minute), noisier numbers")
    parser.add_argument("--no-wrk", action="store_true", help="measure max requests/s with the asyncio client only")
    parser.add_argument("--no-spin", action="store_true", help="no SCHED_IDLE busy loop on the load generator's CPU")
    parser.add_argument("--spin-proxy-cpu", action="store_true",
                        help="also a SCHED_IDLE busy loop on the proxies' CPU (delays hand-offs between threads)")
    parser.add_argument("--profile", action="store_true", help="after the measurements, profile Proctor with py-spy")
    parser.add_argument("--profile-only", action="store_true", help="only profile (implies --profile)")
    parser.add_argument("--profile-python-only", action="store_true", help="py-spy without --native")
    parser.add_argument("--profile-dir", default=None, help="keep py-spy's raw output here (default: a tmp dir)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="first wait up to this long for other work on the machine to stop (< 10%% CPU busy)")
    parser.add_argument("--source", default=None, metavar="DIR",
                        help="run Proctor from this source tree instead of the work tree, e.g. an export of a commit "
                             "(git archive HEAD | tar -x -C DIR); a SOURCE file there may say what it is")
    parser.add_argument("--json", default=None, help="also write the raw numbers to this file")
    parser.add_argument("--proctor-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument for `proctor serve`, repeatable; e.g. --proctor-arg=--policies=DIR "
                             "to measure Proctor with other policies (an empty one shows the core's own cost)")
    args = parser.parse_args(argv)
    args.profile = args.profile or args.profile_only
    plan = QUICK if args.quick else FULL
    command = "python -m tests.bench.bench_proxy" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="proctor-bench-"))
    global SOURCE
    SOURCE = Path(args.source).resolve() if args.source else ROOT
    if not (SOURCE / "proxy" / "cli.py").exists():
        parser.error(f"--source {SOURCE}: no proxy/cli.py there")
    procs = Procs(tmp, SOURCE)
    res = Results()
    reports: list[str] = []
    outdir = Path(args.profile_dir) if args.profile_dir else tmp
    outdir.mkdir(parents=True, exist_ok=True)
    profile = make_profiler(args, procs, outdir, reports) if args.profile else None
    if args.wait_quiet > 0:
        res.info["busy_before"] = wait_for_quiet(args.wait_quiet)
    started = time.perf_counter()
    try:
        try:
            import uvloop

            uvloop.run(measure(args, plan, procs, tmp, res, profile))
        except ImportError:
            asyncio.run(measure(args, plan, procs, tmp, res, profile))
    except KeyboardInterrupt:
        log("interrupted; stopping the servers")
        return 130
    except RuntimeError as e:
        log(f"failed: {e}")
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    res.info["total_s"] = time.perf_counter() - started
    if not args.profile_only:
        report, _ = build_report(res, command)
        print(report)
    for r in reports:
        print()
        print(r)
    print(f"\n(total wall time {res.info['total_s']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "info": res.info, "rss": res.rss, "paired": res.paired, "stream": res.stream, "conc": res.conc,
            "conc_rps": res.conc_rps, "conc_rounds": res.conc_rounds, "conc_source": res.conc_source,
            "cpu_ms_per_request": {k: {t: m.ms_per_request(t) for t in m.pids} for k, m in res.cpu.items()},
            "length": res.length, "length_bytes": res.length_bytes,
        }, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
