"""Profiling Proctor under the benchmark's loads with py-spy, summarised per load:
CPU per request by thread, how each thread spent its samples (on CPU, waiting for
the GIL, idle), and on-CPU samples by Python line, native leaf and function."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

from tests.bench.agent_requests import GrowingConversation, Workload, headers_for
from tests.bench.proc_stats import HZ, ROOT, Procs, cpu_ticks, log, thread_ticks
from tests.bench.proxy_report import PROCTOR

if TYPE_CHECKING:
    from tests.bench.bench_proxy import Load


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
                      native: bool, source: Path = ROOT, top: int = 16) -> str:
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
        return frame.replace(str(ROOT) + "/", "").replace(str(source) + "/", "")

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

    async def profile(load: "Load", pids: dict[str, int], work: dict[str, Workload]) -> None:
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
                reports.append(summarize_profile(raw, title, n, cpu_ms, threads, native, procs.source))
            else:
                reports.append(f"Profile: {title}: py-spy wrote nothing:\n{procs.log_tail(name)}")

    return profile
