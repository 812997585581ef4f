"""Session resolution benchmark: how well Proctor puts calls into sessions when
the client sends no session header, and what resolving a call costs.

    python -m tests.bench.bench_sessions [--quick] [--seed N] [--runs N] [--concurrency N]

Part 1 drives the real proxy (``proxy.app.create_app``, SQLite store) over HTTP
on 127.0.0.1, in front of the scripted model, with many synthetic agents whose
calls are interleaved by a seeded random scheduler: linear, streamed, branching
(an earlier prefix re-sent with a new user turn), retried (the same request sent
twice, at the first call or a later one), parallel tool calls, sub-agents
(``run_subagent(task=...)`` whose task becomes a child agent's first user
message), identical-prefix pairs (same system prompt and task, diverging only
when their tool results differ), Responses API agents (``store: false`` with
full input lists, and ``previous_response_id`` chains), Anthropic Messages
agents, and compacting agents (middle dropped, middle replaced by a summary,
whole history replaced by a model-written summary, middle dropped right after a
reply that many sessions also got). The session each call was
recorded under (the ``X-Proctor-Session`` response header) is compared with the
ground truth by pairwise precision and recall over pairs of calls; sub-agent
parent links are checked against the store. The full run pools three
independent runs (seeds N, N+1, N+2); --quick runs one with about a third of the
agents. The same workload then runs again with explicit ``X-Proctor-Session``
(and ``X-Proctor-Parent-Session``) headers.

The scripted model answers like a temperature-0 model: its reply is a function
of the request's content (a hash of the conversation, ignoring tool-call ids),
so different conversations get different replies and identical conversations
identical ones. Agents steer it with a ``[[next:ACTION]]`` marker at the end of
the last message they send (tool, parallel:N, common, spawn:N, summarize, final).

Part 2 times ``SessionResolver.resolve`` directly, against a store holding the
part 1 sessions plus one session grown call by call to 10, 100 and 1,000
history events, and counts the store calls, SQL statements and SQLite VM
instructions each resolution makes, per resolution path.

Not a pytest module (``bench_*.py`` files are not collected).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import types
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from adapters.model import Call, EventKind, TrajectoryEvent
from proxy import history
from proxy.app import create_app
from proxy.config import ProxyConfig
from proxy.scripted_model import ToolCallSpec, Turn, start_model_server
from proxy.sessions import Resolution, SessionResolver, spawn_hashes
from proxy.store.base import CallRecord, NewCall
from proxy.store.sqlite import SqliteStore

Json = dict[str, Any]

# ---------------------------------------------------------------------------
# The model: deterministic on the request's content, steered by [[next:...]]
# ---------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"\[\[next:([a-z_]+)(?::(\d+))?\]\]")
_TOOL_NAMES = ("read_file", "run_shell", "grep", "list_dir", "write_file")


def _digest(obj: Any) -> str:
    return hashlib.blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif part.get("type") == "tool_result":
                    out.append(_text(part.get("content")))
        return "".join(out)
    return ""


def _args(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def conversation(api: str, body: Json) -> tuple[list[Any], str]:
    """The request's conversation in a canonical form (no ids), and its last message's text."""
    canon: list[Any] = []
    last = ""
    if api == "chat":
        for m in body.get("messages") or []:
            calls = [[c["function"]["name"], _args(c["function"]["arguments"])] for c in m.get("tool_calls") or []]
            canon.append([m.get("role"), _text(m.get("content")), calls])
            last = _text(m.get("content"))
    elif api == "responses":
        canon.append(["instructions", body.get("instructions") or "", body.get("previous_response_id") or ""])
        items = body.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        for it in items:
            kind = it.get("type", "message")
            if kind == "function_call":
                canon.append(["fc", it.get("name"), _args(it.get("arguments"))])
                last = ""
            elif kind == "function_call_output":
                canon.append(["out", _text(it.get("output"))])
                last = _text(it.get("output"))
            else:
                canon.append([it.get("role"), _text(it.get("content"))])
                last = _text(it.get("content"))
    else:  # messages
        canon.append(["system", _text(body.get("system"))])
        for m in body.get("messages") or []:
            content = m.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            canon.append([m.get("role"), [
                ["u", b.get("name"), b.get("input")] if b.get("type") == "tool_use" else
                ["r", _text(b.get("content"))] if b.get("type") == "tool_result" else ["x", b.get("text", "")]
                for b in blocks
            ]])
            last = _text(content)
    return canon, last


def subtask_text(h: str, i: int) -> str:
    return (
        f"Sub-task {h[:12]}/{i}: investigate the failing integration test in package pkg_{h[12:18]}, "
        f"find the root cause, list the files involved with line numbers, and propose a minimal patch. "
        f"Report back in at most ten lines."
    )


def responder(api: str, body: Json) -> Turn:
    canon, last = conversation(api, body)
    h = _digest(canon)
    found = _DIRECTIVE.findall(last)
    action, n = found[-1] if found else ("tool", "")
    if action == "final":
        return Turn(text=f"Final answer {h[:16]}: the task is complete; see the changes above.")
    if action == "summarize":
        return Turn(text=f"Summary {h[:16]}: inspected the repository, ran the tests, narrowed the bug to "
                         f"module m_{h[16:22]}; next, patch it and re-run the suite.")
    if action == "common":  # what many agents run at some point: the same call in every session
        return Turn(tool_calls=(ToolCallSpec("run_shell", {"cmd": "pytest -q"}),))
    if action == "spawn":
        calls = tuple(ToolCallSpec("run_subagent", {"task": subtask_text(h, i)}) for i in range(int(n or 1)))
        return Turn(tool_calls=calls)
    k = int(n or 2) if action == "parallel" else 1
    calls = tuple(
        ToolCallSpec(_TOOL_NAMES[int(h[2 * i:2 * i + 2], 16) % len(_TOOL_NAMES)],
                     {"path": f"src/{h[i:i + 10]}.py", "pattern": h[20 + i:26 + i], "step": len(canon)})
        for i in range(k)
    )
    text = f"Looking at {h[:8]} next." if int(h[-1], 16) < 5 else None
    return Turn(text=text, tool_calls=calls)


# ---------------------------------------------------------------------------
# Agents: an abstract conversation, rendered per API
# ---------------------------------------------------------------------------


@dataclass
class ToolCallT:
    id: str
    name: str
    args: str  # JSON string


@dataclass
class Sys:
    text: str


@dataclass
class User:
    text: str


@dataclass
class Asst:
    text: str | None
    calls: list[ToolCallT]
    raw: Any  # the wire form the client sends back
    response_id: str | None = None


@dataclass
class Tool:
    call_id: str
    name: str
    text: str


Turnish = Sys | User | Asst | Tool


class ChatWire:
    api, path = "chat", "/v1/chat/completions"

    def __init__(self, stream: bool = False, act_at_done: bool = False) -> None:
        self.stream = stream
        self.act_at_done = act_at_done  # stop reading at [DONE] (else drain to EOF, as the OpenAI SDK does)

    def render(self, turns: list[Turnish]) -> Json:
        msgs: list[Json] = []
        for t in turns:
            if isinstance(t, Sys):
                msgs.append({"role": "system", "content": t.text})
            elif isinstance(t, User):
                msgs.append({"role": "user", "content": t.text})
            elif isinstance(t, Asst):
                msgs.append(t.raw)
            else:
                msgs.append({"role": "tool", "tool_call_id": t.call_id, "content": t.text})
        body: Json = {"model": "scripted-gpt", "messages": msgs, "tools": _CHAT_TOOLS}
        if self.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    async def read(self, resp: aiohttp.ClientResponse) -> Asst:
        if self.stream:
            message = await _read_chat_stream(resp, self.act_at_done)
        else:
            message = (await resp.json(loads=orjson.loads))["choices"][0]["message"]
        raw: Json = {"role": "assistant", "content": message.get("content")}
        calls = message.get("tool_calls") or []
        if calls:
            raw["tool_calls"] = calls
        return Asst(message.get("content"), [ToolCallT(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls], raw)


async def _read_chat_stream(resp: aiohttp.ClientResponse, act_at_done: bool) -> Json:
    content: str | None = None
    calls: dict[int, Json] = {}
    async for line in resp.content:
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        if line == b"data: [DONE]":
            if act_at_done:
                break
            continue
        for choice in orjson.loads(line[6:]).get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") is not None:
                content = (content or "") + delta["content"]
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
    return {"role": "assistant", "content": content, "tool_calls": [calls[i] for i in sorted(calls)]}


_CHAT_TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in (*_TOOL_NAMES, "run_subagent")]
_RESP_TOOLS = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in (*_TOOL_NAMES, "run_subagent")]
_ANTH_TOOLS = [{"name": n, "input_schema": {"type": "object"}} for n in (*_TOOL_NAMES, "run_subagent")]


class ResponsesWire:
    """Responses API. ``chained``: store and send only the new items with
    previous_response_id; otherwise store:false and the full input list."""

    api, path = "responses", "/v1/responses"

    def __init__(self, chained: bool = False) -> None:
        self.chained = chained

    def render(self, turns: list[Turnish]) -> Json:
        system = next(t.text for t in turns if isinstance(t, Sys))
        start, prev = 0, None
        if self.chained:
            for i, t in enumerate(turns):
                if isinstance(t, Asst):
                    start, prev = i + 1, t.response_id
        items: list[Json] = []
        for t in turns[start:]:
            if isinstance(t, User):
                items.append({"role": "user", "content": t.text})
            elif isinstance(t, Asst):
                items.extend(t.raw)
            elif isinstance(t, Tool):
                items.append({"type": "function_call_output", "call_id": t.call_id, "output": t.text})
        body: Json = {"model": "scripted-gpt", "instructions": system, "input": items, "tools": _RESP_TOOLS}
        if self.chained:
            if prev:
                body["previous_response_id"] = prev
        else:
            body["store"] = False
        return body

    async def read(self, resp: aiohttp.ClientResponse) -> Asst:
        data = await resp.json(loads=orjson.loads)
        text = "".join(p["text"] for it in data["output"] if it["type"] == "message" for p in it["content"]) or None
        calls = [ToolCallT(it["call_id"], it["name"], it["arguments"]) for it in data["output"] if it["type"] == "function_call"]
        return Asst(text, calls, data["output"], data["id"])


class MessagesWire:
    api, path = "messages", "/v1/messages"

    def render(self, turns: list[Turnish]) -> Json:
        system = ""
        msgs: list[Json] = []
        pending: list[Json] = []  # user-side blocks waiting to be sent as one user message

        def flush() -> None:
            if pending:
                only_text = len(pending) == 1 and pending[0]["type"] == "text"
                msgs.append({"role": "user", "content": pending[0]["text"] if only_text else list(pending)})
                pending.clear()

        for t in turns:
            if isinstance(t, Sys):
                system = t.text
            elif isinstance(t, User):
                pending.append({"type": "text", "text": t.text})
            elif isinstance(t, Tool):
                pending.append({"type": "tool_result", "tool_use_id": t.call_id, "content": t.text})
            else:
                flush()
                msgs.append({"role": "assistant", "content": t.raw})
        flush()
        return {"model": "scripted-claude", "max_tokens": 1024, "system": system, "messages": msgs, "tools": _ANTH_TOOLS}

    async def read(self, resp: aiohttp.ClientResponse) -> Asst:
        data = await resp.json(loads=orjson.loads)
        text = "".join(b["text"] for b in data["content"] if b["type"] == "text") or None
        calls = [ToolCallT(b["id"], b["name"], orjson.dumps(b["input"]).decode()) for b in data["content"] if b["type"] == "tool_use"]
        return Asst(text, calls, data["content"], data["id"])


Wire = ChatWire | ResponsesWire | MessagesWire

# Categories (agent kinds). Children of sub-agent parents are "sub-agents" too.
COMPACTION_KINDS = ("compaction: drop middle", "compaction: summary+tail", "compaction: summary only",
                    "compaction: after a common call")
KINDS = (
    "linear", "streamed", "branching", "retried (first call)", "retried (later call)", "parallel",
    "sub-agents", "sub-agents (streamed parent)", "identical-prefix", "responses (store:false)", "responses (previous_response_id)",
    "anthropic", *COMPACTION_KINDS,
)


@dataclass
class CallGT:
    agent: Agent
    index: int  # call number within the agent
    session: str  # what the proxy answered in X-Proctor-Session
    status: int


@dataclass
class Agent:
    gid: str
    kind: str
    wire: Wire
    system: str
    task: str
    plan: list[str]  # the action each call asks for; the last is "final"
    token: str  # what makes this agent's tool results its own
    rng: random.Random
    parent: Agent | None = None
    spawn_call: CallGT | None = None  # the parent's call whose reply spawned this agent
    shared_token: str = ""  # identical-prefix pairs: tool results agree before diverge_at
    diverge_at: int = 0
    retry_at: int = -1
    branch_at: int = -1
    compact_at: int = -1
    depth: int = 0
    calls: list[CallGT] = field(default_factory=list)
    children: list[Agent] = field(default_factory=list)
    pair: Agent | None = None


class Scheduler:
    """Grants call slots to waiting agents in a seeded random order, ``slots`` at a time."""

    def __init__(self, rng: random.Random, slots: int) -> None:
        self.rng = rng
        self.free = slots
        self.waiting: list[asyncio.Future[None]] = []
        self._scheduled = False

    async def turn(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self._kick()
        await fut

    def done(self) -> None:
        self.free += 1
        self._kick()

    def _kick(self) -> None:
        if not self._scheduled:  # decide on the next loop pass, when everyone ready has queued
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        while self.free and self.waiting:
            i = self.rng.randrange(len(self.waiting))
            self.waiting[i], self.waiting[-1] = self.waiting[-1], self.waiting[i]
            fut = self.waiting.pop()
            self.free -= 1
            fut.set_result(None)


class Workload:
    """Builds the agents from a seed and runs them against a proxy URL."""

    def __init__(self, seed: int, scale: float, explicit_prefix: str | None) -> None:
        self.seed = seed
        self.scale = scale
        self.explicit_prefix = explicit_prefix  # send X-Proctor-Session: prefix + gid
        self.calls: list[CallGT] = []
        self.agents: list[Agent] = []
        self.errors: list[str] = []

    # -- building ------------------------------------------------------------

    def build(self) -> list[Agent]:
        rng = random.Random(self.seed)
        counts = {
            "linear": 30, "streamed": 14, "branching": 20, "retried (first call)": 8, "retried (later call)": 14,
            "parallel": 18, "sub-agents": 14, "sub-agents (streamed parent)": 8, "identical-prefix": 10,
            "responses (store:false)": 14, "responses (previous_response_id)": 10, "anthropic": 18,
            "compaction: drop middle": 10, "compaction: summary+tail": 10, "compaction: summary only": 8,
            "compaction: after a common call": 10,
        }
        tops: list[Agent] = []
        n = 0
        for kind, count in counts.items():
            for _ in range(max(2 if kind == "identical-prefix" else 1, round(count * self.scale))):
                if kind == "identical-prefix":
                    tops.extend(self._pair(rng, n))
                    n += 2
                else:
                    tops.append(self._agent(rng, kind, n))
                    n += 1
        self.agents = list(tops)
        return tops

    def _wire(self, kind: str) -> Wire:
        if kind == "streamed":
            return ChatWire(stream=True)
        if kind == "sub-agents (streamed parent)":
            return ChatWire(stream=True, act_at_done=True)
        if kind == "responses (store:false)":
            return ResponsesWire()
        if kind == "responses (previous_response_id)":
            return ResponsesWire(chained=True)
        if kind == "anthropic":
            return MessagesWire()
        return ChatWire()

    def _plan(self, rng: random.Random, kind: str, calls: int, child: bool = False, depth: int = 0) -> list[str]:
        plan = []
        for i in range(calls - 1):
            p_parallel = 0.45 if kind == "parallel" else 0.15
            roll = rng.random()
            plan.append("tool" if not i else f"parallel:{rng.choice((2, 3))}" if roll < p_parallel
                        else "common" if roll > 0.85 else "tool")
        if kind == "parallel" and calls > 2 and not any(a.startswith("parallel") for a in plan):
            plan[rng.randrange(1, calls - 1)] = f"parallel:{rng.choice((2, 3))}"
        if kind.startswith("sub-agents") and not child:
            for i in rng.sample(range(calls - 1), k=min(calls - 1, rng.choice((1, 1, 2)))):
                plan[i] = f"spawn:{rng.choice((1, 1, 2))}"
        if child and depth < 2 and calls > 2 and rng.random() < 0.2:
            plan[rng.randrange(1, calls - 1)] = "spawn:1"
        plan.append("final")
        return plan

    def _agent(self, rng: random.Random, kind: str, n: int) -> Agent:
        arng = random.Random(rng.getrandbits(64))
        lo = 6 if kind.startswith("compaction") else 3 if kind in ("branching", "retried (later call)") else 2
        calls = arng.randint(lo, 12)
        plan = self._plan(arng, kind, calls)
        gid = f"s{self.seed}a{n:04d}"
        system = f"You are coding agent #{arng.randrange(10**6)}. Use the tools; be careful and brief."
        task = f"Task {gid}-{arng.getrandbits(40):010x}: fix issue #{arng.randrange(10000)} in the repository."
        agent = Agent(gid, kind, self._wire(kind), system, task, plan, f"tok-{arng.getrandbits(48):012x}", arng)
        if kind == "retried (first call)":
            agent.retry_at = 0
        elif kind == "retried (later call)":
            agent.retry_at = arng.randrange(1, calls)
        elif kind == "branching":
            agent.branch_at = arng.randrange(2, calls)
        elif kind.startswith("compaction"):
            agent.compact_at = arng.randrange(3, calls - 1)
            for i, a in enumerate(plan[:-1]):  # only the kind below anchors on a common reply
                if a == "common":
                    plan[i] = "tool"
            if kind == "compaction: after a common call":
                plan[agent.compact_at - 1] = "common"
        return agent

    def _pair(self, rng: random.Random, n: int) -> list[Agent]:
        prng = random.Random(rng.getrandbits(64))
        calls = prng.randint(3, 12)
        plan = self._plan(prng, "linear", calls)
        system = f"You are a CI triage bot (pool {prng.randrange(1000)}). Use the tools."
        task = f"Triage the nightly failure of job {prng.getrandbits(40):010x}."
        shared = f"tok-{prng.getrandbits(48):012x}"
        diverge = prng.randrange(0, min(3, calls - 1))
        pair = []
        for k in range(2):
            a = Agent(f"s{self.seed}a{n + k:04d}", "identical-prefix", ChatWire(), system, task, list(plan),
                      f"tok-{prng.getrandbits(48):012x}", random.Random(prng.getrandbits(64)),
                      shared_token=shared, diverge_at=diverge)
            pair.append(a)
        pair[0].pair, pair[1].pair = pair[1], pair[0]
        return pair

    def _child(self, parent: Agent, task: str, spawn: CallGT) -> Agent:
        crng = random.Random(parent.rng.getrandbits(64))
        calls = crng.randint(2, 5)
        plan = self._plan(crng, "sub-agents", calls, child=True, depth=parent.depth + 1)
        gid = f"{parent.gid}.c{len(parent.children)}"
        kind = parent.kind if parent.kind.startswith("sub-agents") else "sub-agents"
        child = Agent(gid, kind, ChatWire(), "You are a focused sub-agent. Do the task and report.", task,
                      plan, f"tok-{crng.getrandbits(48):012x}", crng, parent=parent, spawn_call=spawn,
                      depth=parent.depth + 1)
        parent.children.append(child)
        self.agents.append(child)
        return child

    # -- running -------------------------------------------------------------

    async def run(self, base: str, concurrency: int) -> None:
        sched = Scheduler(random.Random(self.seed + 1), concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency * 2)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as http:
            self._http, self._sched = http, sched
            await asyncio.gather(*(self._run_agent(a) for a in self.build()))

    async def _send(self, agent: Agent, turns: list[Turnish]) -> Asst | None:
        body = agent.wire.render(turns)
        headers = {"Authorization": "Bearer sk-bench", "x-api-key": "sk-bench"}
        if self.explicit_prefix is not None:
            headers["X-Proctor-Session"] = self.explicit_prefix + agent.gid
            if agent.parent is not None:
                headers["X-Proctor-Parent-Session"] = self.explicit_prefix + agent.parent.gid
        await self._sched.turn()
        try:
            async with self._http.post(agent.wire.path, data=orjson.dumps(body), headers=headers | {"Content-Type": "application/json"}) as resp:
                session = resp.headers.get("X-Proctor-Session", "?")
                if resp.status != 200:
                    self.errors.append(f"{agent.gid} call {len(agent.calls)}: HTTP {resp.status} {(await resp.text())[:200]}")
                    reply = None
                else:
                    reply = await agent.wire.read(resp)
        finally:
            self._sched.done()
        gt = CallGT(agent, len(agent.calls), session, resp.status)
        agent.calls.append(gt)
        self.calls.append(gt)
        return reply

    def _tool_text(self, agent: Agent, call: ToolCallT, step: int) -> str:
        secret = agent.shared_token if step < agent.diverge_at else agent.token
        digest = hashlib.blake2b(f"{call.name}{call.args}{secret}".encode(), digest_size=8).hexdigest()
        return f"{call.name}: ok ({secret}, step {step}) -> {digest}; 3 matches, exit 0"

    async def _run_agent(self, agent: Agent) -> str:
        """Run the agent's tool loop; returns its final answer."""
        directive = lambda i: f"\n[[next:{agent.plan[min(i, len(agent.plan) - 1)]}]]"  # noqa: E731
        first = agent.task if agent.parent is not None else agent.task + directive(0)
        turns: list[Turnish] = [Sys(agent.system), User(first)]
        final = ""
        for step in range(len(agent.plan) + 2):  # bounded; the plan ends with "final"
            reply = await self._send(agent, turns)
            if step == agent.retry_at and reply is not None:
                reply = await self._send(agent, turns)  # the exact same request again
            if reply is None:
                break
            if not reply.calls:
                final = reply.text or ""
                break
            turns.append(reply)
            nxt = step + 1
            spawns = [c for c in reply.calls if c.name == "run_subagent"]
            answers: dict[str, str] = {}
            if spawns:
                kids = [self._child(agent, orjson.loads(c.args)["task"], agent.calls[-1]) for c in spawns]
                results = await asyncio.gather(*(self._run_agent(k) for k in kids))
                answers = {c.id: r for c, r in zip(spawns, results)}
            for c in reply.calls:
                turns.append(Tool(c.id, c.name, answers.get(c.id) or self._tool_text(agent, c, step)))
            last = turns[-1]
            assert isinstance(last, Tool)
            last.text += directive(nxt)
            if nxt == agent.branch_at:
                turns = self._branch(agent, turns, nxt, directive(nxt))
            if nxt == agent.compact_at:
                turns = await self._compact(agent, turns, nxt, directive(nxt))
                if turns is None:
                    break
        return final

    def _branch(self, agent: Agent, turns: list[Turnish], step: int, directive: str) -> list[Turnish]:
        """Go back to an earlier reply (with its tool results) and say something else."""
        replies = [i for i, t in enumerate(turns) if isinstance(t, Asst)]
        j = agent.rng.choice(replies[:-1]) if len(replies) > 1 else replies[-1]
        end = j + 1
        while end < len(turns) and isinstance(turns[end], Tool):
            end += 1
        return turns[:end] + [User(f"Stop. That approach is wrong ({agent.token}); try a different fix from here.{directive}")]

    async def _compact(self, agent: Agent, turns: list[Turnish], step: int, directive: str) -> list[Turnish] | None:
        head = turns[:2]  # system + the first user turn
        replies = [i for i, t in enumerate(turns) if isinstance(t, Asst)]
        keep = agent.rng.randint(2, 4)
        start = next((i for i in reversed(replies) if len(turns) - i >= keep), replies[-1])
        tail = turns[start:]
        if agent.kind in ("compaction: drop middle", "compaction: after a common call"):
            return head + tail
        if agent.kind == "compaction: summary+tail":
            summary = User(f"[Earlier turns were summarised ({agent.token}): the agent read the code and ran the tests "
                           f"{step} times; the failure is in the parser.]")
            return head + [summary] + tail
        # summary only: the model writes the summary, then it replaces the whole history
        ask = turns + [User("Summarise the conversation so far for a fresh context.\n[[next:summarize]]")]
        reply = await self._send(agent, ask)
        if reply is None:
            return None
        return [turns[0], User(f"This session continues an earlier conversation. {reply.text}\n"
                               f"Original task: {agent.task}{directive}")]


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def _c2(n: int) -> int:
    return n * (n - 1) // 2


def pair_counts(calls: list[CallGT]) -> tuple[int, int, int]:
    """(true positive pairs, predicted-same pairs, truly-same pairs)."""
    cells = Counter((c.session, c.agent.gid) for c in calls)
    pred = Counter(c.session for c in calls)
    true = Counter(c.agent.gid for c in calls)
    return sum(map(_c2, cells.values())), sum(map(_c2, pred.values())), sum(map(_c2, true.values()))


def prf(tp: int, pp: int, tt: int) -> tuple[float, float]:
    return (tp / pp if pp else 1.0), (tp / tt if tt else 1.0)


def touching(calls: list[CallGT], inside: Callable[[CallGT], bool]) -> tuple[float, float, int, int]:
    """Precision and recall over the pairs with at least one call in the subset."""
    rest = [c for c in calls if not inside(c)]
    a, b = pair_counts(calls), pair_counts(rest)
    tp, pp, tt = (x - y for x, y in zip(a, b))
    p, r = prf(tp, pp, tt)
    return p, r, pp, tt


def score_table(w: Any, parents: dict[str, str | None], resolved: Counter[str]) -> list[str]:
    calls = w.calls
    out = [f"{'category':34} {'agents':>6} {'calls':>6} {'sessions':>8} {'precision':>9} {'recall':>7} {'prec.touching':>13}"]

    def row(name: str, inside: Callable[[CallGT], bool], note: str = "") -> str:
        subset = [c for c in calls if inside(c)]
        agents = len({c.agent.gid for c in subset})
        sessions = len({c.session for c in subset})
        p, r = prf(*pair_counts(subset))
        pt, _, _, _ = touching(calls, inside)
        return f"{name:34} {agents:>6} {len(subset):>6} {sessions:>8} {p:>9.4f} {r:>7.4f} {pt:>13.4f}{note}"

    for kind in KINDS:
        if any(c.agent.kind == kind for c in calls):
            out.append(row(kind, lambda c, k=kind: c.agent.kind == k))
    out.append("-" * 92)
    plain = lambda c: c.agent.kind not in COMPACTION_KINDS  # noqa: E731
    out.append(row("OVERALL without compaction", plain, "   (target >= 0.99 both)"))
    out.append(row("  ... and without identical-prefix", lambda c: plain(c) and c.agent.kind != "identical-prefix"))
    out.append(row("  ... and without retried first calls",
                   lambda c: plain(c) and c.agent.kind not in ("identical-prefix", "retried (first call)")))
    out.append(row("compaction (all kinds)", lambda c: not plain(c)))
    out.append(row("all calls", lambda c: True))
    # sub-agent parent links, as the store recorded them
    kids = [a for a in w.agents if a.parent is not None and a.calls]
    for style in sorted({a.kind for a in kids}):
        group = [a for a in kids if a.kind == style]
        ok = sum(1 for a in group if parents.get(a.calls[0].session) == a.spawn_call.session)
        missing = sum(1 for a in group if parents.get(a.calls[0].session) is None)
        out.append(f"parent links, {style + ':':29} {ok}/{len(group)} correct ({ok / len(group):.4f}), "
                   f"{missing} with no parent")
    child_sessions = {a.calls[0].session for a in kids}
    false_links = sum(1 for s, p_ in parents.items() if p_ is not None and s not in child_sessions)
    out.append(f"sessions given a parent that are not a sub-agent's first session: {false_links}")
    out.append("resolved_by: " + ", ".join(f"{k} {v}" for k, v in resolved.most_common()))
    if w.errors:
        out.append(f"ERRORS ({len(w.errors)}): " + "; ".join(w.errors[:5]))
    return out


def pair_report(w: Any) -> list[str]:
    pairs = [(a, a.pair) for a in w.agents if a.pair is not None and a.gid < a.pair.gid]
    apart = merged = 0
    shapes: Counter[str] = Counter()
    for a, b in pairs:
        sa, sb = [c.session for c in a.calls], [c.session for c in b.calls]
        shared = set(sa) & set(sb)
        if not shared:
            apart += 1
            shape = "kept apart" if len(set(sa)) == len(set(sb)) == 1 else "no shared session, but an agent split"
        else:
            merged += 1
            if set(sa[1:]) == {sb[0]} and set(sb[1:]) == {sa[0]}:
                shape = "swapped after the first call (each continued in the other's session)"
            elif len(set(sa[1:]) | set(sb[1:])) == 1:
                shape = "both continued in one session"
            else:
                shape = "partly mixed"
        shapes[shape] += 1
    subset = [c for c in w.calls if c.agent.kind == "identical-prefix"]
    p, r = prf(*pair_counts(subset))
    out = [
        f"identical-prefix pairs: {len(pairs)}; kept apart {apart}, merged {merged}; "
        f"within the pairs precision {p:.4f} recall {r:.4f}",
        *(f"    {n:3d} x {s}" for s, n in shapes.most_common()),
    ]
    return out


# ---------------------------------------------------------------------------
# Part 1: interleaved agents through the real proxy
# ---------------------------------------------------------------------------


async def run_pass(model_url: str, db: Path, seed: int, scale: float, concurrency: int,
                   explicit_prefix: str | None) -> tuple[Workload, dict[str, str | None], Counter[str], float]:
    config = ProxyConfig(port=0, upstream=model_url, anthropic_upstream=model_url, store=f"sqlite:///{db}")
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    w = Workload(seed, scale, explicit_prefix)
    t0 = time.perf_counter()
    try:
        await w.run(base, concurrency)
    finally:
        elapsed = time.perf_counter() - t0
        await runner.cleanup()
    with sqlite3.connect(db) as conn:
        parents = dict(conn.execute("SELECT id, parent_id FROM sessions"))
        resolved = Counter(dict(conn.execute("SELECT resolved_by, count(*) FROM calls GROUP BY resolved_by")))
    return w, parents, resolved, elapsed


# ---------------------------------------------------------------------------
# Part 2: resolution cost against history length
# ---------------------------------------------------------------------------


class StoreMeter:
    """Counts store method calls (wrapped on the instance), SQL statements (trace
    callback) and SQLite VM instructions (progress handler) on the store's connection."""

    METHODS = ("match_history", "find_continuation", "reply_sessions", "known_hashes", "known_tool_calls",
               "find_spawner", "session_for_response", "get_session")

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()
        self.sql = 0
        self.vm = 0
        self.on = False
        for name in self.METHODS:
            setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*a: Any, **kw: Any) -> Any:
            if self.on:
                self.calls[name] += 1
            return await fn(*a, **kw)
        return wrapper

    async def install(self) -> None:
        def trace(_stmt: str) -> None:
            if self.on:
                self.sql += 1

        def progress() -> int:
            self.vm += 1
            return 0

        def setup(conn: sqlite3.Connection) -> None:
            conn.set_trace_callback(trace)
            conn.set_progress_handler(progress, 1)

        await self.store._submit(setup, write=False)

    async def uninstall(self) -> None:
        def teardown(conn: sqlite3.Connection) -> None:
            conn.set_trace_callback(None)
            conn.set_progress_handler(None, 1)

        await self.store._submit(teardown, write=False)

    def reset(self) -> None:
        self.calls.clear()
        self.sql = self.vm = 0


def _new_call(res: Resolution, call: Call, reply: list[TrajectoryEvent], response_id: str) -> NewCall:
    """What the proxy records for a call resolved as ``res`` that got ``reply``
    (as proxy/calls.py builds it, without policy decisions)."""
    nodes = list(res.nodes)
    reply_nodes = history.chain(reply, start=res.tail)
    parent = res.tail
    for i, node in enumerate(reply_nodes):
        nodes.append((node, parent, len(res.append) + i))
        parent = node
    record = CallRecord(id="call_" + response_id, session_id=res.session_id, api=call.api, path="/v1/chat/completions",
                        model=call.model, stream=False, started=time.time(), latency_ms=1.0, status=200,
                        resolved_by=res.resolved_by, response_id=response_id)
    return NewCall(call=record, events=[*res.append, *reply], nodes=nodes, response_id=response_id,
                   response_node=reply_nodes[-1] if reply_nodes else None, parent_session_id=res.parent_session_id,
                   reply_hashes=[ev.hash for ev in reply], spawn_hashes=spawn_hashes(reply))


def _ev(kind: EventKind, **kw: Any) -> TrajectoryEvent:
    return TrajectoryEvent(kind=kind, **kw)


async def resolution_cost(db: Path, lengths: tuple[int, ...], repeat: int) -> list[str]:
    store = SqliteStore(db)
    await store.open()
    resolver = SessionResolver(store, ProxyConfig(store=f"sqlite:///{db}"))
    meter = StoreMeter(store)
    header = "X-Proctor-Session"

    def call_of(events: list[TrajectoryEvent], api: str = "chat", prev: str | None = None) -> Call:
        return Call(api=api, model="m", stream=False, history=tuple(events), previous_response_id=prev)

    async def record(call: Call, headers: CIMultiDict[str], reply: list[TrajectoryEvent], response_id: str) -> str:
        res = await resolver.resolve(headers, call)
        await store.record_call(_new_call(res, call, reply, response_id))
        return res.session_id

    rows: list[tuple[str, int, int, float, float, float, float, float, str]] = []
    tag = f"{random.getrandbits(32):08x}"
    sys_ev = _ev(EventKind.SYSTEM, text=f"cost bench {tag}: you are a coding agent")
    hist: list[TrajectoryEvent] = [sys_ev, _ev(EventKind.USER, text=f"Task {tag}: refactor the store layer.")]
    sid: str | None = None
    last_response = ""
    k = 0
    targets = sorted(lengths)
    while targets:
        # the next call: its history has len(hist) events; the session holds all but the last
        call = call_of(hist)
        if sid is not None and len(hist) == targets[0]:
            targets.pop(0)
            rows.extend(await _measure(resolver, meter, call, hist, sid, last_response, repeat, header))
        resp_id = f"resp_{tag}_{k}"
        reply = [_ev(EventKind.TOOL_CALL, tool_name="read_file", arguments={"path": f"src/m{k}.py", "tag": tag},
                     tool_call_id=f"call_{tag}_{k}")]
        got = await record(call, CIMultiDict(), reply, resp_id)
        assert sid is None or got == sid, f"the cost session split at {len(hist)} events ({got} != {sid})"
        sid, last_response = got, resp_id
        hist = hist + reply + [_ev(EventKind.TOOL_RESULT, text=f"contents of src/m{k}.py ({tag})",
                                   tool_name="read_file", tool_call_id=f"call_{tag}_{k}")]
        # Past 100 events, calls also carry 9 more tool rounds (recorded as unverified model
        # turns), so the session reaches 1,000 events in about 50 calls rather than 450; the
        # last calls before a measured length grow by one round, so the measured call and the
        # one before it continue replies Proctor returned.
        for j in range(9 if len(hist) >= 100 and targets and targets[0] - len(hist) >= 22 else 0):
            cid = f"x_{tag}_{k}_{j}"
            hist = hist + [_ev(EventKind.TOOL_CALL, tool_name="grep", arguments={"q": cid}, tool_call_id=cid),
                           _ev(EventKind.TOOL_RESULT, text=f"{cid}: no match", tool_name="grep", tool_call_id=cid)]
        k += 1
    await store.close()

    out = [f"{'path':40} {'session':>7} {'request':>7} {'us/call':>8} {'hash us':>8} {'store calls':>11} {'SQL':>4}"
           f" {'VM instr':>9}  resolved_by"]
    prev = None
    for name, n, m, us, hash_us, scalls, sql, vm, rule in sorted(rows, key=lambda r: (_PATHS.index(r[0]), r[1])):
        if prev is not None and name != prev:
            out.append("")
        prev = name
        out.append(f"{name:40} {n:>7} {m:>7} {us:>8.0f} {hash_us:>8.0f} {scalls:>11.1f} {sql:>4.1f} {vm:>9.0f}  {rule}")
    out.append("")
    lo, hi = sorted(lengths)[-2:]
    for name in _PATHS:
        vm = {r[1]: r[7] for r in rows if r[0] == name}
        sql = {r[1]: r[6] for r in rows if r[0] == name}
        growth = vm[hi] / max(vm[lo], 1)
        verdict = "flat" if growth < 1.5 and sql[hi] <= sql[lo] else f"GROWS x{growth:.1f}"
        out.append(f"store work, session {lo} -> {hi} events, {name + ':':40} {verdict}")
    return out


_PATHS = (
    "continuation (history)",
    "continuation (explicit header)",
    "previous_response_id",
    "retry of the previous call (history)",
    "branch from the middle (history)",
    "compacted to 6 events (no header)",
    "compacted to 6 events (explicit header)",
    "unknown history, same length (new)",
)


async def _measure(resolver: SessionResolver, meter: StoreMeter, call: Call, hist: list[TrajectoryEvent], sid: str,
                   last_response: str, repeat: int, header: str) -> list[tuple[str, int, int, float, float, float, float, float, str]]:
    n = len(hist)
    user = _ev(EventKind.USER, text="No, do it differently.")
    half = max(4, (n // 2) & ~1)  # end right after a tool result
    compacted = hist[:2] + hist[-4:]
    unknown = [_ev(EventKind.SYSTEM, text=f"other agent {n}"), _ev(EventKind.USER, text=f"imported history {n}")]
    while len(unknown) < n:
        i = len(unknown)
        unknown += [_ev(EventKind.TOOL_CALL, tool_name="grep", arguments={"q": f"x{i}-{n}"}, tool_call_id=f"u{i}"),
                    _ev(EventKind.TOOL_RESULT, text=f"r{i}", tool_name="grep", tool_call_id=f"u{i}")]
    none: CIMultiDict[str] = CIMultiDict()
    named: CIMultiDict[str] = CIMultiDict({header: sid})
    def chat(events: Any) -> Call:
        return Call(api="chat", model="m", stream=False, history=tuple(events))

    cases: list[tuple[str, CIMultiDict[str], Call]] = list(zip(_PATHS, (none, named, none, none, none, none, named, none), (
        call,
        call,
        Call(api="responses", model="m", stream=False, history=(hist[-1],), previous_response_id=last_response),
        chat(hist[:-2]),
        chat((*hist[:half], user)),
        chat(compacted),
        chat(compacted),
        chat(unknown),
    )))
    rows = []
    for name, headers, c in cases:
        # hashing alone: what any resolution of this history pays
        hash_times = []
        for _ in range(repeat):
            t = time.perf_counter()
            history.chain(c.history)
            hash_times.append(time.perf_counter() - t)
        hash_us = min(hash_times) * 1e6
        # wall time per resolve (no instrumentation)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            res = await resolver.resolve(headers, c)
            times.append(time.perf_counter() - t)
        # store work per resolve
        meter.reset()
        meter.on = True
        await meter.install()
        reps = 3
        for _ in range(reps):
            res = await resolver.resolve(headers, c)
        meter.on = False
        await meter.uninstall()
        expected = sid if not name.startswith("unknown") else None
        rule = res.resolved_by + ("" if expected is None or res.session_id == expected else " (WRONG SESSION)")
        rows.append((name, n, len(c.history), min(times) * 1e6, hash_us,
                     sum(meter.calls.values()) / reps, meter.sql / reps, meter.vm / reps, rule))
    return rows


# ---------------------------------------------------------------------------


class _Count(logging.Handler):
    """Counts (and keeps out of the output) what the proxy's aiohttp server logs as errors."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.seen[f"{record.getMessage()}: {exc!r}" if exc else record.getMessage()] += 1


async def main_async(args: argparse.Namespace) -> None:
    server_log = logging.getLogger("aiohttp.server")
    errors = _Count()
    server_log.addHandler(errors)
    server_log.propagate = False
    scale = 0.3 if args.quick else 1.0
    lengths = (10, 100, 1000)
    t_start = time.perf_counter()
    model_runner, model_url = await start_model_server(responder, record=False, chunks=4)
    tmp = Path(tempfile.mkdtemp(prefix="bench_sessions_"))
    try:
        print(f"Proctor session resolution benchmark ({'quick' if args.quick else 'full'}, seed {args.seed}, "
              f"concurrency {args.concurrency})")
        print()
        runs = []
        for i in range(args.runs):  # each run: its own seed, proxy and store; figures pool the runs
            runs.append(await run_pass(model_url, tmp / f"inferred{i}.db", args.seed + i, scale, args.concurrency, None))
        w = types.SimpleNamespace(calls=[c for r in runs for c in r[0].calls], agents=[a for r in runs for a in r[0].agents],
                                  errors=[e for r in runs for e in r[0].errors])
        parents = {k: v for r in runs for k, v in r[1].items()}
        by_session: dict[str, list[CallGT]] = {}
        for c in w.calls:
            by_session.setdefault(c.session, []).append(c)
        resolved = sum((r[2] for r in runs), Counter())
        elapsed = sum(r[3] for r in runs)
        tops = sum(1 for a in w.agents if a.parent is None)
        print(f"PASS 1: no session header. {args.runs} run(s) (seeds {args.seed}..{args.seed + args.runs - 1}), "
              f"{tops} top-level agents + {len(w.agents) - tops} sub-agents,")
        print(f"{len(w.calls)} calls, interleaved by a seeded random scheduler {args.concurrency} at a time, {elapsed:.1f} s "
              f"({len(w.calls) / elapsed:.0f} calls/s through the proxy).")
        print("Precision and recall are pairwise over calls: a pair is predicted-same when both calls were recorded")
        print("in one session, truly-same when one agent made both. 'precision'/'recall' count the pairs with both")
        print("calls in the row's category; 'prec.touching' counts the pairs with at least one, so a call of")
        print("another category wrongly put into this category's sessions (or the reverse) lowers it. Recall has")
        print("no such difference: truly-same pairs never cross categories. Scheduling depends on timing, so")
        print("figures vary a little from run to run.")
        if args.runs > 1:
            for i, r in enumerate(runs):
                plain = [c for c in r[0].calls if c.agent.kind not in COMPACTION_KINDS]
                p, rc = prf(*pair_counts(plain))
                print(f"  run {i + 1}: {len(r[0].calls)} calls, without compaction precision {p:.4f} recall {rc:.4f}")
        for line in score_table(w, parents, resolved):
            print(("  " + line).rstrip())
        print()
        print("Identical-prefix pairs: two agents with the same system prompt and task get identical first")
        print("replies (temperature-0 model); their tool results differ from call `diverge_at` on (0-2).")
        print("What Proctor does: the second agent's first call holds no reply Proctor returned, so it opens a")
        print("new session ('new'). From the next call on, both agents' histories extend the same first reply,")
        print("a history node both sessions own. The tool-call ids the upstream issued (not part of the hash)")
        print("differ between the twins and pick the session that issued them; without ids, the oldest session")
        print("still waiting at that reply takes the call. A retried first call cannot be told from a twin's")
        print("first call: the retry opens a second session, which keeps that one call. Measured:")
        for line in pair_report(w):
            print(("  " + line).rstrip())
        print()
        print("Compaction (ground truth: the compacted agent stays in its session):")
        print("- drop middle / summary+tail keep the agent's last reply, which anchors the call (rule")
        print("  'compaction') by the tool-call id Proctor returned, or by content hash when only one session got it.")
        print("- summary only: the model writes a summary and the agent restarts from [system, summary]; no")
        print("  turn Proctor returned survives, so the call opens a new session and the agent continues there.")
        print("- after a common call: compacted right after a reply many sessions also got (run_shell")
        print("  'pytest -q'); its content hash is ambiguous, but the tool-call id still names one session.")
        for kind in COMPACTION_KINDS:
            sub = [c for c in w.calls if c.agent.kind == kind]
            if sub:
                p, r = prf(*pair_counts(sub))
                pt, _, _, _ = touching(w.calls, lambda c, k=kind: c.agent.kind == k)
                foreign = sum(1 for c in sub if any(o.agent.gid != c.agent.gid for o in by_session[c.session]))
                print(f"  {kind:33} precision {p:.4f} recall {r:.4f} prec.touching {pt:.4f}; "
                      f"{foreign}/{len(sub)} calls in a session shared with another agent")
        if errors.seen:
            print("  the proxy's HTTP server logged: " + "; ".join(f"{n} x {m}" for m, n in errors.seen.items()))
            errors.seen.clear()
        print()
        w2, parents2, resolved2, elapsed2 = await run_pass(model_url, tmp / "explicit.db", args.seed, scale,
                                                           args.concurrency, "bench-")
        print(f"PASS 2: explicit X-Proctor-Session on every call (+ X-Proctor-Parent-Session for sub-agents). "
              f"{len(w2.calls)} calls, {elapsed2:.1f} s")
        for line in score_table(w2, parents2, resolved2):
            print(("  " + line).rstrip())
        if errors.seen:
            print("  the proxy's HTTP server logged: " + "; ".join(f"{n} x {m}" for m, n in errors.seen.items()))
        print()
        db = tmp / "cost.db"
        shutil.copy(tmp / "inferred0.db", db)
        print("PART 2: SessionResolver.resolve cost against history length, in a store already holding the pass 1")
        print(f"run-1 sessions ({len(runs[0][1])} sessions) plus one session grown call by call to each length")
        print("(two events a call, nine more tool rounds a call past 100 events).")
        print("'session' is how many events the session's history holds, 'request' how many the resolved call")
        print(f"carries. Times are the best of {args.repeat} (wall clock, so noisy on a busy machine); 'hash us' is")
        print("history.chain() on the request alone (the O(n) hashing a resolution may do once). Store calls, SQL")
        print("statements and SQLite VM instructions are exact counts per resolve.")
        for line in await resolution_cost(db, lengths, args.repeat):
            print(("  " + line).rstrip())
        print()
        print(f"total {time.perf_counter() - t_start:.1f} s")
    finally:
        await model_runner.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a third of the agents (under 30 s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight at once")
    parser.add_argument("--repeat", type=int, default=0, help="timed resolves per path and length")
    parser.add_argument("--runs", type=int, default=0, help="independent header-less runs to pool (full: 3, quick: 1)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.repeat = args.repeat or (10 if args.quick else 40)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main(sys.argv[1:])
