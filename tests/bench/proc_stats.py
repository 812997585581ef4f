"""Child processes and what they cost, for the proxy benchmark: starting and
ending servers by PID, CPU ticks per process and per thread from /proc, resident
memory, how busy the machine is, and quantiles."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HZ = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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
