"""What one decision of the policy library costs in regorus, and which rules cost it.

Run: ``python -m tests.bench.bench_policy_rules [--policies DIR] [--rounds N] [--dump FILE] [rule ...]``

Engine evaluation only (no store, no proxy), medians of repeated evaluations
of ``data.proctor.decision`` (and of each named rule, e.g. ``labels`` or
``new_trusted_values``) on five inputs:

* steady request / steady action: a 100-event session whose call adds one short
  tool result, then sends one email (the inputs of ``bench_policy``), no labels;
* labelled request: the same call in a session whose labels are what a fresh
  20-event agent request left (lists near their caps are what the session
  carries in practice);
* fresh 20 / fresh 200: a new session whose first request carries 20 events
  (8 KB) or 200 events (100 KB) of a coding agent's chat history.

``--dump FILE`` writes the inputs as JSON lines, to compare two libraries'
decisions on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from typing import Any

import orjson

from adapters.openai_chat import ChatAdapter
from proxy.policy.bundle import load_bundle
from proxy.policy.embedded import EmbeddedEngine
from proxy.policy.point import PolicyPoint, SessionView
from proxy.store.sqlite import SqliteStore
from tests.bench.bench_policy import one_call, seed
from tests.bench.agent_requests import PLACEHOLDER, agent_body

os.environ.setdefault("RUST_BACKTRACE", "0")


async def inputs(point: PolicyPoint, tmp: str) -> dict[str, bytes]:
    """The five inputs, as Proctor serialises them."""
    out: dict[str, bytes] = {}
    store = SqliteStore(os.path.join(tmp, "bench.db"))
    await store.open()
    try:
        await seed(store, "s100", 100)
        call, res, action = one_call()
        record, recent = await store.session_view("s100", 16)
        view = SessionView(record, recent, {})
        events = list(res.append)
        out["steady request"] = orjson.dumps(point.build_input("request", view, "s100", events, events, None, call, {}), default=str)
        out["steady action"] = orjson.dumps(point.build_input("action", view, "s100", events, [], action, call, {}), default=str)
        for n, size in ((20, 8000), (200, 100_000)):
            body = agent_body(n, size).replace(PLACEHOLDER, b"0" * len(PLACEHOLDER))
            fresh = ChatAdapter().decode_request(orjson.loads(body))
            history = list(fresh.history)
            out[f"fresh {n}"] = orjson.dumps(point.build_input("request", SessionView(None, []), "f", history, history, None, fresh, {}), default=str)
        engine = point.engine._engine
        engine.set_input_json(out["fresh 20"].decode())
        labels = engine.eval_rule("data.proctor.decision")["labels"]
        labelled = SessionView(record, recent, labels)
        out["labelled request"] = orjson.dumps(point.build_input("request", labelled, "s100", events, events, None, call, {}), default=str)
    finally:
        await store.close()
    order = ["steady request", "steady action", "labelled request", "fresh 20", "fresh 200"]
    return {k: out[k] for k in order}


def median_ms(engine: Any, raw: str, rule: str, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        engine.set_input_json(raw)
        engine.eval_rule(rule)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


async def main(policies: str | None, rounds: int, rules: list[str], dump: str | None) -> None:
    point = PolicyPoint(EmbeddedEngine(), policies=policies, query="data.proctor.decision", mode="enforce",
                        shadow_rules=(), fail_open=False, timeout=5, reload_interval=0)
    await point.start()
    with tempfile.TemporaryDirectory() as tmp:
        docs = await inputs(point, tmp)
    if dump:
        with open(dump, "w") as f:
            f.write(json.dumps({"data_id": 0, "data": orjson.dumps(load_bundle(point.root).data).decode()}) + "\n")
            for raw in docs.values():
                f.write(json.dumps({"data_ref": 0, "input": raw.decode()}) + "\n")
    engine = point.engine._engine
    print(f"library {point.root}, medians of {rounds} evaluations (set_input + eval_rule), ms")
    names = ["decision", *rules]
    print(f"{'input':>17} {'bytes':>7} " + " ".join(f"{n[:22]:>22}" for n in names))
    for label, raw in docs.items():
        n = rounds if not label.startswith("fresh 200") else max(5, rounds // 20)
        cells = [median_ms(engine, raw.decode(), f"data.proctor.{r}", n) for r in names]
        print(f"{label:>17} {len(raw):>7} " + " ".join(f"{c:>22.3f}" for c in cells))
    await point.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", default=None)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--dump", default=None, help="write the inputs as JSON lines")
    ap.add_argument("rules", nargs="*", help="rules of package proctor to time as well")
    args = ap.parse_args()
    asyncio.run(main(args.policies, args.rounds, args.rules, args.dump))
