"""The session benchmark's workload: synthetic agents of many kinds (linear,
streamed, branching, retried, parallel, sub-agents, identical prefixes,
Responses and Anthropic agents, compacting agents), interleaved by a seeded
scheduler, each call kept with its ground truth."""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from tests.bench.session_wires import (
    Asst,
    ChatWire,
    MessagesWire,
    ResponsesWire,
    Sys,
    Tool,
    ToolCallT,
    Turnish,
    User,
    Wire,
)

Json = dict[str, Any]


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
