"""The OpenAPI description of ``/api``: served, well-formed, and complete (every
route the app registers under /api is described, with its path parameters)."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from proxy.audit.openapi import document

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def proxy(make_proxy: Any, tmp_path: Path) -> Any:
    """A running proxy with a policy of its own (the API does not depend on it)."""
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "allow.rego").write_text("package proctor\nimport rego.v1\ndecision := {}\n")
    return make_proxy(policies=str(tmp_path / "p"))


def api_routes(app: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if (path == "/api" or path.startswith("/api/")) and route.method.lower() in METHODS:
            out.add((route.method.lower(), path))
    return out


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_every_api_route_is_described(proxy: Any) -> None:
    doc = document()
    routes = api_routes(proxy.app)
    assert ("get", "/api/sessions") in routes and ("get", "/api/openapi.json") in routes
    missing = sorted(f"{m.upper()} {p}" for m, p in routes if m not in doc["paths"].get(p, {}))
    assert not missing, f"describe these routes in proxy/audit/openapi.py: {missing}"
    for method, path in routes:
        declared = {p["name"] for p in doc["paths"][path][method].get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), f"{method.upper()} {path}: path parameters"


def test_document_is_well_formed() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"]
    for target in refs(doc):
        node: Any = doc
        for part in target.removeprefix("#/").split("/"):
            assert part in node, f"dangling $ref {target}"
            node = node[part]
    for path, item in doc["paths"].items():
        assert path.startswith("/api/")
        for method, op in item.items():
            assert method in METHODS and op["responses"] and op["operationId"]
    decisions = {p["name"] for p in doc["paths"]["/api/decisions"]["get"]["parameters"]}
    assert {"limit", "session_id", "outcome", "rule"} <= decisions
    assert json.loads(json.dumps(doc)) == doc  # plain JSON, nothing Python-only


def test_served_at_api_openapi_json(proxy: Any) -> None:
    with urllib.request.urlopen(proxy.base + "/api/openapi.json", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("application/json")
        assert json.loads(r.read()) == document()


def test_answers_match_the_described_schemas(proxy: Any, upstream: Any) -> None:
    """What the API really answers validates against the schemas it advertises."""
    jsonschema = pytest.importorskip("jsonschema")
    import openai

    from proxy.scripted_model import ToolCallSpec, Turn

    upstream.answer(Turn(tool_calls=(ToolCallSpec("read_file", {"path": "a.txt"}),)))
    with openai.OpenAI(base_url=proxy.url, api_key="sk-openapi", max_retries=0, timeout=10) as c:
        sid = c.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "read a.txt"}]).headers["x-proctor-session"]
    doc = document()

    def check(path: str, schema: str) -> None:
        with urllib.request.urlopen(proxy.base + path, timeout=5) as r:
            body = json.loads(r.read())
        jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": doc["components"]}).validate(body)

    check("/api/sessions", "SessionList")
    check(f"/api/sessions/{sid}", "SessionDetail")
    check(f"/api/decisions?session_id={sid}", "DecisionList")
    check("/api/approvals?status=all", "ApprovalList")
    if ("get", "/api/overview") in api_routes(proxy.app):
        check("/api/overview", "Overview")
