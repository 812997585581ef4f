"""The audit web UI under ``/ui``: server-rendered pages (aiohttp-jinja2), a few
lines of script for the approval buttons, nothing fetched from elsewhere.

    /ui                     -> /ui/sessions
    /ui/sessions            the session list: search, filters, sorting, keyset paging
    /ui/sessions/{id}       one session: timeline, decisions, sub-agent tree, totals, calls plot
    /ui/approvals           held calls waiting for a person (approve / deny)
    /ui/overview            calls and denials over time, top rules, top tools
    /ui/login, /ui/logout   the admin-token cookie

Access is the JSON API's (``proxy.api.admin_only``): the admin token as a bearer
header or as the cookie /ui/login sets, or, with no token configured, loopback
clients only.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
import orjson
from aiohttp import web

from proxy.api import authorized
from proxy.audit import charts
from proxy.audit.detail import PRICES, SessionDetail, load_prices, session_detail
from proxy.audit.queries import OUTCOMES, RANGES, SORTS, SessionQuery, facets, session_exists, session_page
from proxy.audit.reader import AuditReader, audit_reader
from proxy.audit.stats import overview, overview_range
from proxy.context import PROXY
from proxy.errors import InvalidRequest

HERE = Path(__file__).parent
COOKIE = "proctor_admin"
UI_PAGE = 25  # sessions a list page shows unless asked for more
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _ago(ts: float | None) -> str:
    if ts is None:
        return ""
    s = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return f"{int(s)}s ago"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _datetime_local(ts: float | None) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M")


FILTERS = {"when": _when, "ago": _ago, "ms": _ms, "usd": _usd, "pretty": _pretty, "dtlocal": _datetime_local,
           "num": lambda n: f"{n or 0:,}"}


def _link(path: str, query: Mapping[str, str], **changes: Any) -> str:
    """``path`` with the current query, changed: a None value drops a parameter."""
    params = {k: v for k, v in query.items() if v}
    for k, v in changes.items():
        if v is None or v == "":
            params.pop(k, None)
        else:
            params[k] = str(v)
    return path + ("?" + urlencode(params) if params else "")


def _render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    proxy = request.app[PROXY]
    context.setdefault("query", request.query)
    authed = authorized(request)  # the login page is public: no navigation, no counts there
    context.update(
        request=request, nav=request.path, authed=authed, pending=len(proxy.approvals.list("pending")) if authed else 0,
        token_login=bool(proxy.config.admin_token), link=lambda path, **ch: _link(path, request.query, **ch),
    )
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(_HEADERS)
    return response


def _reader(request: web.Request) -> AuditReader:
    return audit_reader(request.app)


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/sessions")


async def sessions_view(request: web.Request) -> web.Response:
    read = _reader(request)
    try:
        query = SessionQuery.parse(request.query, default_limit=UI_PAGE)
    except InvalidRequest as err:
        return _render(request, "sessions.html", status=400, error=err.message, page=None, facets=await read(facets),
                       form=SessionQuery(limit=UI_PAGE), exact=None, **_choices())
    page = await read(lambda conn: session_page(conn, query))
    text = query.text or ""
    known: bool = bool(text) and await read(lambda conn: session_exists(conn, text))
    exact = text if known else None
    return _render(request, "sessions.html", page=page, facets=await read(facets), form=query, exact=exact,
                   error=None, **_choices())


def _choices() -> dict[str, Any]:
    return {"outcomes": list(OUTCOMES), "ranges": list(RANGES), "sorts": SORTS}


async def session_view(request: web.Request) -> web.Response:
    sid = request.match_info["session_id"]
    raw = request.query.get("from_seq", "0")
    from_seq = int(raw) if raw.isdigit() else 0
    prices = request.app[PRICES]
    detail: SessionDetail | None = await _reader(request)(lambda conn: session_detail(conn, sid, prices, from_seq))
    if detail is None:
        return _render(request, "error.html", status=404, title="Session not found",
                       message=f"No session {sid!r} is recorded in this store. The session list shows the ones that are.")
    held = [a for a in request.app[PROXY].approvals.list("pending") if a.session_id == sid]
    plot = charts.call_plot(detail.calls, detail.session.started)
    return _render(request, "session.html", d=detail, s=detail.session, plot=plot, held=held)


async def approvals_view(request: web.Request) -> web.Response:
    approvals = request.app[PROXY].approvals
    pending = approvals.list("pending")
    settled = sorted(approvals.list(None), key=lambda a: a.decided or a.created, reverse=True)
    settled = [a for a in settled if a.status != "pending"][:50]
    return _render(request, "approvals.html", approvals=pending, settled=settled,
                   pending_ids=",".join(sorted(a.id for a in pending)), timeout=approvals.timeout)


async def overview_view(request: web.Request) -> web.Response:
    try:
        since, until = overview_range(request.query)
    except InvalidRequest as err:
        return _render(request, "error.html", status=400, title="Bad range", message=err.message)
    ov = await _reader(request)(lambda conn: overview(conn, since, until))
    return _render(
        request, "overview.html", ov=ov, ranges=list(RANGES), current=request.query.get("range", "24h"),
        calls_chart=charts.bars(ov.calls, ov.since, ov.bucket_s, "calls", "calls"),
        blocked_chart=charts.bars([b + a for b, a in zip(ov.blocked, ov.asked)], ov.since, ov.bucket_s, "blocked",
                                  "denied, terminated or asked"),
    )


def _safe_next(value: str | None) -> str:
    return value if value and value.startswith("/ui") and not value.startswith("//") else "/ui/sessions"


async def login(request: web.Request) -> web.Response:
    """GET ?token=... or POST token=...: set the admin cookie and go on."""
    token = request.app[PROXY].config.admin_token
    form = await request.post() if request.method == "POST" else {}
    given = str(form.get("token") or request.query.get("token") or "")
    nxt = _safe_next(str(form.get("next") or request.query.get("next") or ""))
    if token and given:
        if hmac.compare_digest(given.encode(), token.encode()):
            response = web.HTTPFound(nxt)
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/", secure=request.secure,
                                max_age=7 * 86400)
            raise response
        return _render(request, "login.html", status=401, error="That is not the admin token.", next=nxt,
                       configured=True, allowed=False)
    return _render(request, "login.html", error=None, next=nxt, configured=bool(token),
                   allowed=authorized(request))


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPFound("/ui/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def add_routes(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, filters=FILTERS,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    app[PRICES] = load_prices()
    audit_reader(app)
    app.router.add_get("/ui", index)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/sessions", sessions_view)
    app.router.add_get("/ui/sessions/{session_id:.+}", session_view)  # ids may hold "/"
    app.router.add_get("/ui/approvals", approvals_view)
    app.router.add_get("/ui/overview", overview_view)
    app.router.add_route("GET", "/ui/login", login)
    app.router.add_route("POST", "/ui/login", login)
    app.router.add_get("/ui/logout", logout)
    app.router.add_static("/ui/static", HERE / "static")
