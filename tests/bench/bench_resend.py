"""What reading a re-sent history costs, whole and continued (adapters/resend.py).

Run: ``python -m tests.bench.bench_resend [--quick]``

An agent's call re-sends the previous call's messages and adds two (its reply,
a tool result). For histories of 100, 1,000 and 10,000 messages this times, in
one process and one run, ``decode_call`` on such a body three ways: parsed and
decoded whole with no memo of earlier messages (a proxy that just started),
whole with every earlier message in the decode memo (what Proctor did before the
resend cache), and continued from the previous body by the resend cache; plus
``orjson.loads`` of the body alone, the floor of anything that parses it. Medians
over a run of consecutive calls; ratios are to the continued time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from adapters import openai_chat
from adapters.memo import MessageMemo
from adapters.resend import ResendCache
from proxy.incoming import decode_call

ADAPTER = openai_chat.ChatAdapter()


def messages(n: int) -> list[dict]:
    out: list[dict] = [{"role": "system", "content": "You are a coding agent. " * 40},
                       {"role": "user", "content": "Fix the failing test in the session store."}]
    i = 0
    while len(out) < n:
        out.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i:024d}", "type": "function",
             "function": {"name": "run_shell", "arguments": orjson.dumps({"cmd": f"pytest -k case_{i}"}).decode()}}]})
        out.append({"role": "tool", "tool_call_id": f"call_{i:024d}", "content": f"case_{i} passed in 0.{i % 97:02d}s " * 6})
        i += 1
    return out[:n]


def bodies(n: int, calls: int) -> list[bytes]:
    """``calls`` consecutive bodies of one agent, the first holding ``n`` messages."""
    history = messages(n + 2 * calls)
    tools = [{"type": "function", "function": {"name": "run_shell", "parameters": {"type": "object"}}}]
    return [orjson.dumps({"messages": history[: n + 2 * k], "model": "gpt-4.1", "tools": tools}) for k in range(calls)]


def timed(fn, items: list[bytes]) -> float:
    samples = []
    for raw in items:
        t0 = time.perf_counter()
        fn(raw)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per size")
    args = parser.parse_args()
    calls = 8 if args.quick else 30
    print(f"decode_call on a body that re-sends the previous one's messages plus 2, median of {calls} calls, ms\n")
    print(f"{'messages':>9} {'body KB':>8} {'whole, cold':>12} {'whole, memo':>12} {'continued':>10} "
          f"{'orjson.loads':>13} {'whole/cont.':>12}")
    for n in (100, 1000, 10_000):
        seq = bodies(n, calls + 1)

        def cold(raw: bytes) -> None:
            openai_chat._MEMO = MessageMemo()  # nothing remembered: every message decoded and hashed
            decode_call(ADAPTER, raw)

        cold_ms = timed(cold, seq[1:])
        openai_chat._MEMO = MessageMemo()
        for raw in seq:  # twice, so that the memo holds every message (it keeps a message from its second sighting)
            decode_call(ADAPTER, raw)
            decode_call(ADAPTER, raw)
        memo_ms = timed(lambda raw: decode_call(ADAPTER, raw), seq[1:])
        cache = ResendCache()
        decode_call(ADAPTER, seq[0], cache)
        decode_call(ADAPTER, seq[1], cache)  # the first continuation also checks the earlier body's list once
        cont_ms = timed(lambda raw: decode_call(ADAPTER, raw, cache), seq[2:])
        loads_ms = timed(orjson.loads, seq[1:])
        assert cache.hits == len(seq) - 1, (cache.hits, len(seq))
        print(f"{n:>9,} {len(seq[-1]) / 1024:>8,.0f} {cold_ms:>12.2f} {memo_ms:>12.2f} {cont_ms:>10.3f} "
              f"{loads_ms:>13.2f} {memo_ms / cont_ms:>11.0f}x")
    openai_chat._MEMO = MessageMemo()


if __name__ == "__main__":
    main()
