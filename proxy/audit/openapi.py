"""The OpenAPI 3.1 description of the JSON API under ``/api``, served at
``GET /api/openapi.json``. ``tests/audit/test_openapi.py`` checks that every
route registered under ``/api`` is described here: a new route needs its entry."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from aiohttp import web

OUTCOMES = ["allow", "deny", "ask", "terminate", "warn", "patch"]
SESSION_OUTCOMES = ["allowed", "denied", "asked", "terminated", "warned"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema or {"type": "string"}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


_TIME = {"type": "string", "description": "unix seconds, or ISO 8601 (UTC when no zone is given)"}
_RANGE = {"type": "string", "enum": ["1h", "24h", "7d", "30d"]}
_UNAUTHORIZED = _error("no admin token (Authorization: Bearer ... or the proctor_admin cookie), or, with none "
                       "configured, a client that is not on loopback")
_BAD = _error("a query parameter is invalid; error.param names it")
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "description": "stable: session_not_found, invalid_parameter, ..."},
                           "message": {"type": "string", "description": "what went wrong and what to do"},
                           "type": {"type": "string"}, "param": _NULLABLE_STR},
        }},
    },
    "Session": {
        "type": "object", "required": ["id", "started", "last_call", "calls", "events", "status"],
        "properties": {
            "id": {"type": "string"}, "started": {"type": "number"}, "last_call": {"type": "number"},
            "calls": {"type": "integer"}, "events": {"type": "integer"},
            "status": {"type": "string", "enum": ["active", "terminated"]},
            "parent_id": _NULLABLE_STR, "root_id": _NULLABLE_STR, "depth": {"type": "integer"},
            "labels": {"type": "object", "description": "state policies carried from call to call"},
            "counters": {"type": "object", "description": "calls, events, tokens, tool_calls, decisions per outcome"},
        },
        "additionalProperties": True,
    },
    "Call": {
        "type": "object", "required": ["id", "session_id", "api", "path", "started", "status"],
        "properties": {
            "id": {"type": "string"}, "session_id": {"type": "string"},
            "api": {"type": "string", "enum": ["chat", "responses", "messages", "passthrough"]},
            "path": {"type": "string"}, "model": _NULLABLE_STR, "stream": {"type": "boolean"},
            "started": {"type": "number"}, "latency_ms": {"type": "number"},
            "status": {"type": "integer", "description": "the HTTP status the client got"},
            "resolved_by": {"type": "string", "description": "which session rule attached the call"},
            "error": _NULLABLE_STR, "input_tokens": _NULLABLE_INT, "output_tokens": _NULLABLE_INT,
            "response_id": _NULLABLE_STR,
        },
        "additionalProperties": True,
    },
    "Event": {
        "type": "object", "required": ["kind", "seq"],
        "properties": {
            "kind": {"type": "string", "enum": ["system", "user", "assistant", "tool_call", "tool_result", "decision", "error"]},
            "role": _NULLABLE_STR, "text": _NULLABLE_STR, "tool_name": _NULLABLE_STR,
            "arguments": {"description": "parsed JSON arguments of a tool call (the raw string when not JSON)"},
            "tool_call_id": _NULLABLE_STR, "labels": {"type": "object"}, "session_id": _NULLABLE_STR,
            "call_id": _NULLABLE_STR, "seq": _NULLABLE_INT, "time": {"type": ["number", "null"]},
            "hash": {"type": "string", "description": "hash of the event's canonical form"},
        },
        "additionalProperties": True,
    },
    "Finding": {
        "type": "object", "required": ["rule", "message"],
        "properties": {"rule": {"type": "string"}, "message": {"type": "string"},
                       "mode": {"type": "string", "enum": ["enforce", "shadow"]}},
    },
    "Decision": {
        "type": "object", "description": "a decision-log record, shaped like OPA's",
        "required": ["decision_id", "session_id", "stage", "outcome", "decision"],
        "properties": {
            "decision_id": {"type": "string"}, "session_id": {"type": "string"}, "call_id": _NULLABLE_STR,
            "stage": {"type": "string", "enum": ["request", "action"]},
            "event_seq": {**_NULLABLE_INT, "description": "the event judged (action stage)"},
            "path": {"type": "string", "description": "the policy query"},
            "input": {"type": "object", "description": "the policy input without the trajectory"},
            "trajectory": {"type": "object", "description": "the seq range of the events the policy saw",
                           "properties": {"session_id": {"type": "string"}, "from_seq": {"type": "integer"},
                                          "to_seq": {"type": "integer"}}},
            "result": {"description": "the raw policy result"},
            "decision": {
                "type": "object",
                "properties": {
                    "outcome": {"type": "string", "enum": OUTCOMES},
                    **{k: {"type": "array", "items": _ref("Finding")} for k in ("deny", "warn", "ask", "terminate")},
                    "patch": {"type": ["object", "null"]}, "labels": {"type": "object"},
                },
            },
            "outcome": {"type": "string", "enum": OUTCOMES},
            "bundles": {"type": "object", "description": "{\"proctor\": {\"revision\": ...}}: the policy revision"},
            "engine": {"type": "string"}, "metrics": {"type": "object"}, "timestamp": {"type": "number"},
            "error": _NULLABLE_STR,
        },
        "additionalProperties": True,
    },
    "Approval": {
        "type": "object", "required": ["id", "session_id", "call_id", "stage", "status"],
        "properties": {
            "id": {"type": "string"}, "session_id": {"type": "string"}, "call_id": {"type": "string"},
            "stage": {"type": "string", "enum": ["request", "action"]},
            "action": {"type": ["object", "null"], "description": "the held tool call or message"},
            "findings": {"type": "array", "items": _ref("Finding")}, "created": {"type": "number"},
            "status": {"type": "string", "enum": ["pending", "approved", "denied", "expired"]},
            "decided": {"type": ["number", "null"]}, "by": _NULLABLE_STR,
        },
    },
    "SessionRow": {
        "description": "a session as the list shows it",
        "allOf": [_ref("Session"), {
            "type": "object",
            "properties": {
                "model": _NULLABLE_STR,
                "agents": {"type": "array", "items": {"type": "string"}},
                "keys": {"type": "array", "items": {"type": "string"}, "description": "API key fingerprints"},
                "rules": {"type": "array", "items": {
                    "type": "object", "properties": {"rule": {"type": "string"}, "decisions": {"type": "integer"}}}},
                "outcomes": {"type": "object", "additionalProperties": {"type": "integer"},
                             "description": "decisions per outcome other than allow"},
                "tokens": {"type": "integer"},
            },
        }],
    },
    "SessionList": {
        "type": "object", "required": ["sessions"],
        "properties": {
            "sessions": {"type": "array", "items": _ref("SessionRow")},
            "next": {**_NULLABLE_STR, "description": "pass as after= for the next page"},
            "prev": {**_NULLABLE_STR, "description": "pass as before= for the previous page"},
        },
    },
    "SessionDetail": {
        "type": "object", "required": ["session"],
        "properties": {
            "session": _ref("Session"), "calls": {"type": "array", "items": _ref("Call")},
            "events": {"type": "array", "items": _ref("Event")},
            "decisions": {"type": "array", "items": _ref("Decision")},
            "children": {"type": "array", "items": _ref("Session"), "description": "sub-agent sessions"},
            "tree": {"type": "array", "description": "the sub-agent tree under the session's root, depth first",
                     "items": {"type": "object", "properties": {
                         "id": {"type": "string"}, "parent_id": _NULLABLE_STR, "depth": {"type": "integer"}}}},
            "totals": {"type": "object", "properties": {
                "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"},
                "latency_ms": {"type": "number"}, "cost_usd": {"type": ["number", "null"]}}},
        },
        "additionalProperties": True,
    },
    "DecisionList": {
        "type": "object", "required": ["decisions"],
        "properties": {"decisions": {"type": "array", "items": _ref("Decision")},
                       "next": {**_NULLABLE_STR, "description": "pass as after= for the next page"}},
    },
    "Overview": {
        "type": "object", "required": ["since", "until", "series"],
        "properties": {
            "since": {"type": "number"}, "until": {"type": "number"}, "bucket_s": {"type": "integer"},
            "series": {"type": "array", "items": {"type": "object", "properties": {
                "start": {"type": "number"}, "calls": {"type": "integer"}, "blocked": {"type": "integer"},
                "asked": {"type": "integer"}}}},
            "totals": {"type": "object", "additionalProperties": {"type": "integer"}},
            "top_rules": {"type": "array", "items": {"type": "object"}, "description": "rule, decisions, sessions, outcomes"},
            "top_tools": {"type": "array", "items": {"type": "object"}, "description": "tool, calls, denied"},
            "recent_blocks": {"type": "array", "items": {"type": "object"}, "description": "the latest deny / terminate decisions"},
        },
        "additionalProperties": True,
    },
    "ApprovalList": {
        "type": "object", "required": ["approvals"],
        "properties": {"approvals": {"type": "array", "items": _ref("Approval")}},
    },
    "ApprovalVerdict": {
        "type": "object", "required": ["decision"],
        "properties": {"decision": {"type": "string", "enum": ["approve", "deny"]},
                       "by": {"type": "string", "description": "who decided, for the record"}},
    },
}

_SESSION_FILTERS = [
    _query("limit", "sessions per page", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
    _query("after", "the previous answer's next: the next page"),
    _query("before", "the previous answer's prev: the previous page"),
    _query("offset", "sessions to skip (the cursors stay fast on large stores; offsets do not)", {"type": "integer", "minimum": 0}),
    _query("since", "only sessions active at or after this time", _TIME),
    _query("until", "only sessions started at or before this time", _TIME),
    _query("range", "a recent time range instead of since", _RANGE),
    _query("agent", "the calling agent (X-Proctor-Agent header, else User-Agent)"),
    _query("key", "the fingerprint of the caller's API key"),
    _query("model", "a model the session called"),
    _query("outcome", "sessions with at least one decision of this kind (allowed: none)", {"type": "string", "enum": SESSION_OUTCOMES}),
    _query("rule", "sessions where this rule fired"),
    _query("q", "full-text search over event text, tool names and arguments"),
    _query("sort", "sort column", {"type": "string", "enum": ["last_call", "started", "calls"], "default": "last_call"}),
    _query("order", "sort order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}),
]

_DECISION_FILTERS = [
    _query("limit", "decisions per page", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
    _query("after", "the previous answer's next: the next page"),
    _query("session_id", "only this session's decisions"),
    _query("outcome", "only decisions with this outcome", {"type": "string", "enum": OUTCOMES}),
    _query("rule", "only decisions naming this rule"),
    _query("stage", "only this stage", {"type": "string", "enum": ["request", "action"]}),
    _query("since", "only decisions at or after this time", _TIME),
    _query("until", "only decisions before this time", _TIME),
]


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {
            "title": "Proctor audit API",
            "version": "1",
            "description": "Sessions, trajectories, decisions and approvals recorded by the Proctor proxy. "
                           "With an admin token configured every request needs it; without one only loopback "
                           "clients are served.",
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": {
            "/api/sessions": {"get": {
                "operationId": "listSessions", "summary": "recorded sessions, most recent activity first",
                "parameters": _SESSION_FILTERS,
                "responses": {"200": _ok("SessionList", "a page of sessions"), "400": _BAD, "401": _UNAUTHORIZED},
            }},
            "/api/sessions/{session_id}": {"get": {
                "operationId": "getSession", "summary": "one session: its calls, trajectory, decisions and sub-agents",
                "parameters": [_path("session_id", "the session's id")],
                "responses": {"200": _ok("SessionDetail", "the session"), "401": _UNAUTHORIZED,
                              "404": _error("no session with this id (error.code session_not_found)")},
            }},
            "/api/decisions": {"get": {
                "operationId": "listDecisions", "summary": "the decision log, newest first",
                "parameters": _DECISION_FILTERS,
                "responses": {"200": _ok("DecisionList", "a page of decision-log records"), "400": _BAD,
                              "401": _UNAUTHORIZED},
            }},
            "/api/overview": {"get": {
                "operationId": "getOverview", "summary": "calls and denials over time, top rules fired, top tools",
                "parameters": [
                    _query("range", "the time range ending at until (default 24h)", _RANGE),
                    _query("since", "start of the range, instead of range", _TIME),
                    _query("until", "end of the range (default now)", _TIME),
                ],
                "responses": {"200": _ok("Overview", "aggregates over the range"), "400": _BAD, "401": _UNAUTHORIZED},
            }},
            "/api/approvals": {"get": {
                "operationId": "listApprovals", "summary": "calls held by an ask decision",
                "parameters": [_query("status", "which approvals", {
                    "type": "string", "enum": ["pending", "approved", "denied", "expired", "all"], "default": "pending"})],
                "responses": {"200": _ok("ApprovalList", "approvals, oldest first"), "401": _UNAUTHORIZED},
            }},
            "/api/approvals/{approval_id}": {"post": {
                "operationId": "decideApproval", "summary": "approve or deny a held call; the call is released at once",
                "parameters": [_path("approval_id", "the approval's id")],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ApprovalVerdict")}}},
                "responses": {
                    "200": _ok("Approval", "the settled approval"),
                    "400": _error("the body is not {\"decision\": \"approve\" | \"deny\"}"),
                    "401": _UNAUTHORIZED,
                    "403": _error("sent from another site's page (error.code cross_site_request)"),
                    "404": _error("no approval with this id (error.code approval_not_found)"),
                    "409": _error("the approval is already settled (error.code approval_settled)"),
                },
            }},
            "/api/openapi.json": {"get": {
                "operationId": "getOpenAPI", "summary": "this document",
                "responses": {"200": {"description": "the OpenAPI description of /api",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              "401": _UNAUTHORIZED},
            }},
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the admin token"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "proctor_admin",
                           "description": "the admin token, as /ui/login sets it"},
            },
        },
    })


async def serve_openapi(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(document()), content_type="application/json")
