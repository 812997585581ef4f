"""Small SVG plots rendered on the server (no script, nothing fetched): bars over
time for the overview, and a session's calls over time with the time each took."""

from __future__ import annotations

import datetime as dt
import math
from html import escape
from typing import Sequence

from markupsafe import Markup

from proxy.audit.detail import CallView

W, H = 720, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 26


def _nice_max(value: float, counts: bool = False) -> float:
    """A round top for the y axis; for counts, one whose quarter ticks are whole numbers."""
    if counts:
        quarter = max(value, 4) / 4
        exp = 10 ** math.floor(math.log10(quarter))
        return 4 * next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= quarter and float(m * exp).is_integer())
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    return next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= value)


def _num(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _frame(y_max: float, unit: str) -> list[str]:
    parts = []
    for i in range(5):
        y = TOP + (H - TOP - BOTTOM) * (1 - i / 4)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(y_max * i / 4)}{unit}</text>')
    return parts


def _when(ts: float, span: float) -> str:
    t = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return t.strftime("%H:%M") if span <= 2 * 86400 else t.strftime("%b %d")


def bars(values: Sequence[int], start: float, bucket_s: int, css: str, label: str) -> Markup:
    """One bar per bucket, with UTC time ticks under them."""
    n = max(len(values), 1)
    y_max = _nice_max(max(values, default=0), counts=True)
    inner_w, inner_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    step = inner_w / n
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(label)}">', *_frame(y_max, "")]
    for i, v in enumerate(values):
        h = inner_h * v / y_max
        x = LEFT + i * step
        when = _when(start + i * bucket_s, bucket_s * n)
        parts.append(
            f'<rect class="{css}" x="{x + step * 0.1:.1f}" y="{TOP + inner_h - h:.1f}" width="{max(step * 0.8, 1):.1f}"'
            f' height="{h:.1f}"><title>{escape(when)} UTC: {v} {escape(label)}</title></rect>'
        )
    for i in range(0, n, max(1, n // 6)):
        x = LEFT + (i + 0.5) * step
        parts.append(f'<text class="tick" x="{x:.1f}" y="{H - 8}" text-anchor="middle">'
                     f'{escape(_when(start + i * bucket_s, bucket_s * n))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _offset(seconds: float, span: float) -> str:
    if span < 2:
        return f"{seconds * 1000:.0f}ms"
    if span < 60:
        return f"{seconds:.1f}s" if span < 20 else f"{seconds:.0f}s"
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}h{m % 60:02d}"


def call_plot(calls: Sequence[CallView], session_start: float) -> Markup:
    """Each call at the moment it started (x, from the session's start) with the
    time it took (y), coloured by its most severe decision; hover for details."""
    if not calls:
        return Markup("")
    span = max(max(c.call.started for c in calls) - session_start, 1e-3)
    y_max = _nice_max(max(c.call.latency_ms for c in calls))
    inner_w, inner_h = W - LEFT - RIGHT - 8, H - TOP - BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="calls over time">', *_frame(y_max, "ms")]
    for i in range(5):
        x = LEFT + 4 + inner_w * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(f'<text class="tick" x="{x:.1f}" y="{H - 8}" text-anchor="{anchor}">+{_offset(span * i / 4, span)}</text>')
    for n, view in enumerate(calls, 1):
        c = view.call
        x = LEFT + 4 + inner_w * (c.started - session_start) / span
        y = TOP + inner_h * (1 - c.latency_ms / y_max)
        outcome = view.outcome if c.status < 400 or view.outcome != "allow" else "error"
        tokens = f", {c.input_tokens or 0}+{c.output_tokens or 0} tokens" if c.input_tokens is not None else ""
        at = _offset(c.started - session_start, span)
        tip = f"call {n} ({c.id}) at +{at}: {c.latency_ms:.0f} ms, {outcome}, HTTP {c.status}{tokens}"
        parts.append(
            f'<a href="#{escape(c.id)}"><g class="call {outcome}"><title>{escape(tip)}</title>'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + inner_h:.1f}" y2="{y:.1f}"/>'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4"/></g></a>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
