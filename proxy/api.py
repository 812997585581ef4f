"""The JSON API under ``/api``: sessions, decisions and approvals.

Access: with an admin token configured, requests must carry
``Authorization: Bearer <token>``; without one, only loopback clients are served.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress

import orjson
from aiohttp import web

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


@web.middleware
async def admin_only(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if (request.path.startswith("/api/") or request.path.startswith("/ui")) and not authorized(request):
        return _error(401, "unauthorized", "this endpoint needs the admin token (Authorization: Bearer ...) "
                      "or, with no token configured, a loopback client")
    return await handler(request)


async def list_sessions(request: web.Request) -> web.Response:
    store = request.app[PROXY].store
    limit = min(int(request.query.get("limit", "100")), 1000)
    offset = int(request.query.get("offset", "0"))
    sessions = await store.list_sessions(limit=limit, offset=offset)
    return _json({"sessions": [dataclasses.asdict(s) for s in sessions]})


async def get_session(request: web.Request) -> web.Response:
    store = request.app[PROXY].store
    sid = request.match_info["session_id"]
    session = await store.get_session(sid)
    if session is None:
        return _error(404, "session_not_found", f"no session {sid!r}; GET /api/sessions lists them")
    return _json({
        "session": dataclasses.asdict(session),
        "calls": [dataclasses.asdict(c) for c in await store.get_calls(sid)],
        "events": [e.to_dict() for e in await store.get_events(sid)],
        "decisions": await store.get_decisions(sid),
        "children": [dataclasses.asdict(c) for c in await store.get_children(sid)],
    })


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
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_get("/api/sessions/{session_id}", get_session)
    app.router.add_get("/api/approvals", list_approvals)
    app.router.add_post("/api/approvals/{approval_id}", decide_approval)
