"""The proxy benchmark's results and the table it prints: ratios to the
pass-through measured in the same run, each next to its target."""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field
from typing import Any

from tests.bench.proc_stats import CpuMeter, q, ratio

DIRECT, PASS, PROCTOR = "direct", "pass-through", "Proctor"  # what each request went through
TARGETS = (DIRECT, PASS, PROCTOR)


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


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def package_version(mod: str) -> str:
    try:
        return __import__(mod).__version__
    except Exception:  # noqa: BLE001
        return "not installed"


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
