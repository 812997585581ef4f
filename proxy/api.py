"""The JSON API under ``/api``: sessions, decisions and approvals.

Access: with an admin token configured, requests must carry
``Authorization: Bearer <token>`` (or the cookie ``/ui/login`` sets); without one,
only loopback clients are served. Changes (POST) coming from another site's page
are refused whatever they carry.

Lists page by keyset: an answer's ``next`` goes back as ``after=`` for the next
page, its ``prev`` as ``before=`` for the previous one.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress

import orjson
from aiohttp import web

from proxy.audit.detail import PRICES, call_cost, session_tree
from proxy.audit.openapi import serve_openapi
from proxy.audit.queries import SessionQuery, session_page
from proxy.audit.reader import audit_reader
from proxy.audit.stats import DecisionQuery, decision_page, overview, overview_range
from proxy.context import PROXY


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)


def authorized(request: web.Request) -> bool:
    token = request.app[PROXY].config.admin_token
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or request.cookies.get("proctor_admin", "")
        return hmac.compare_digest(given.encode(), token.encode())
    peer = request.remote or ""
    try:
        return ipaddress.ip_address(peer.split("%")[0]).is_loopback
    except ValueError:
        return False


_PUBLIC = ("/ui/login", "/ui/logout", "/ui/static/")  # the login form, its stylesheet, and forgetting the cookie


def _ui_unauthorized(request: web.Request) -> web.Response:
    if request.app[PROXY].config.admin_token:
        body = ('<!doctype html><title>Log in</title><p>This page needs the admin token. '
                '<a href="/ui/login">Log in</a></p>')
    else:
        body = ("<!doctype html><title>Loopback only</title><p>With no admin token configured, "
                "the audit pages answer loopback clients only.</p>")
    return web.Response(status=401, text=body, content_type="text/html")


@web.middleware
async def admin_only(request: web.Request, handler):  # type: ignore[no-untyped-def]
    path = request.path
    if (path.startswith("/api/") or path.startswith("/ui")) and not path.startswith(_PUBLIC):
        if not authorized(request):
            if path.startswith("/ui"):
                return _ui_unauthorized(request)
            return _error(401, "unauthorized", "this endpoint needs the admin token (Authorization: Bearer ...) "
                          "or, with no token configured, a loopback client")
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.headers.get("Sec-Fetch-Site") == "cross-site":
            return _error(403, "cross_site_request", "changes are accepted from Proctor's own pages or from API clients, "
                          "not from another site's page")
    return await handler(request)


async def list_sessions(request: web.Request) -> web.Response:
    """Filters: since, until (or range=1h|24h|7d|30d), agent, key, model, outcome
    (allowed, denied, asked, terminated, warned), rule, q (text); sort
    (last_call, started, calls), order; limit; after / before."""
    query = SessionQuery.parse(request.query)
    page = await audit_reader(request.app)(lambda conn: session_page(conn, query))
    return _json({"sessions": [row.to_dict() for row in page.rows], "next": page.after, "prev": page.before})


async def get_session(request: web.Request) -> web.Response:
    store = request.app[PROXY].store
    sid = request.match_info["session_id"]
    session = await store.get_session(sid)
    if session is None:
        return _error(404, "session_not_found", f"no session {sid!r}; GET /api/sessions lists them")
    calls = await store.get_calls(sid)
    tree, _ = await audit_reader(request.app)(lambda conn: session_tree(conn, session))
    costs = [c for c in (call_cost(request.app.get(PRICES, {}), call) for call in calls) if c is not None]
    return _json({
        "session": dataclasses.asdict(session),
        "calls": [dataclasses.asdict(c) for c in calls],
        "events": [e.to_dict() for e in await store.get_events(sid)],
        "decisions": await store.get_decisions(sid),
        "children": [dataclasses.asdict(c) for c in await store.get_children(sid)],
        "tree": [{"id": n.session.id, "parent_id": n.session.parent_id, "depth": n.depth} for n in tree],
        "totals": {
            "input_tokens": sum(c.input_tokens or 0 for c in calls),
            "output_tokens": sum(c.output_tokens or 0 for c in calls),
            "latency_ms": sum(c.latency_ms for c in calls),
            "cost_usd": sum(costs) if costs else None,
        },
    })


async def list_decisions(request: web.Request) -> web.Response:
    """The decision log, newest first. Filters: session_id, outcome, rule, stage,
    since, until; limit; after."""
    query = DecisionQuery.parse(request.query)
    records, after = await audit_reader(request.app)(lambda conn: decision_page(conn, query))
    return _json({"decisions": records, "next": after})


async def get_overview(request: web.Request) -> web.Response:
    """Calls and denials over time, top rules, top tools: range=1h|24h|7d|30d or since/until."""
    since, until = overview_range(request.query)
    return _json((await audit_reader(request.app)(lambda conn: overview(conn, since, until))).to_dict())


async def list_approvals(request: web.Request) -> web.Response:
    status = request.query.get("status", "pending")
    items = request.app[PROXY].approvals.list(None if status == "all" else status)
    return _json({"approvals": [a.to_dict() for a in items]})


async def decide_approval(request: web.Request) -> web.Response:
    approvals = request.app[PROXY].approvals
    aid = request.match_info["approval_id"]
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return _error(400, "invalid_json", 'send {"decision": "approve"} or {"decision": "deny"}')
    decision = body.get("decision") if isinstance(body, dict) else None
    if decision not in ("approve", "deny"):
        return _error(400, "invalid_decision", 'send {"decision": "approve"} or {"decision": "deny"}')
    approval = approvals.get(aid)
    if approval is None:
        return _error(404, "approval_not_found", f"no pending approval {aid!r}; GET /api/approvals lists them")
    if approval.status != "pending":
        return _error(409, "approval_settled", f"approval {aid} is already {approval.status}")
    approvals.decide(aid, decision == "approve", by=body.get("by"))
    return _json(approval.to_dict())


def add_routes(app: web.Application) -> None:
    app.middlewares.append(admin_only)
    audit_reader(app)
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_get("/api/sessions/{session_id:.+}", get_session)  # ids may hold "/"
    app.router.add_get("/api/decisions", list_decisions)
    app.router.add_get("/api/overview", get_overview)
    app.router.add_get("/api/approvals", list_approvals)
    app.router.add_post("/api/approvals/{approval_id}", decide_approval)
    app.router.add_get("/api/openapi.json", serve_openapi)
