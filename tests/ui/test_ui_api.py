"""The audit views' JSON API (sessions with filters and keyset paging, one
session, the decision log, the overview), the UI's server-rendered pages, and
who may see them: the admin token when one is configured, else loopback only."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.api import admin_only, authorized
from tests.ui.conftest import get_json


@pytest.fixture
def audited(trail: Any) -> Any:
    return trail()


def ids(audited: Any, **params: Any) -> list[str]:
    status, body = get_json(audited.base + "/api/sessions?" + urllib.parse.urlencode(params))
    assert status == 200, body
    return [s["id"] for s in body["sessions"]]


ALL = {"research-1", "research-1-pricing", "chat-0", "chat-1", "chat-2"}


def test_session_list_filters(audited: Any) -> None:
    assert set(ids(audited)) == ALL
    assert ids(audited, rule="email.external_recipient") == ["research-1"]
    assert ids(audited, rule="no.such_rule") == []
    assert ids(audited, outcome="denied") == ["research-1"]
    assert set(ids(audited, outcome="allowed")) == ALL - {"research-1"}
    assert ids(audited, outcome="asked") == [] and ids(audited, outcome="terminated") == []
    assert set(ids(audited, agent="writer")) == {"chat-0", "chat-1", "chat-2"}
    assert set(ids(audited, agent="researcher")) == {"research-1", "research-1-pricing"}
    assert set(ids(audited, model="gpt-4o-mini")) == ALL and ids(audited, model="gpt-3") == []
    assert ids(audited, q="Nimbus 2") == ["research-1"]  # a tool result's words
    assert ids(audited, q="attacker@evil.example") == ["research-1"]  # and a tool call's arguments
    assert set(ids(audited, q="pricing page of competitor")) == {"research-1", "research-1-pricing"}
    assert ids(audited, q="words nobody wrote") == []
    _, body = get_json(audited.base + "/api/sessions?agent=writer")
    key = body["sessions"][0]["keys"][0]
    assert set(ids(audited, key=key)) == ALL and ids(audited, key="000000000000") == []
    assert ids(audited, rule="email.external_recipient", agent="writer") == []  # filters combine with AND
    now = time.time()
    assert set(ids(audited, since=now - 600)) == ALL and ids(audited, since=now + 600) == []
    assert ids(audited, until=now - 600) == [] and set(ids(audited, range="1h")) == ALL


def test_session_list_rows_and_sorting(audited: Any) -> None:
    _, body = get_json(audited.base + "/api/sessions?rule=email.external_recipient")
    row = body["sessions"][0]
    assert row["rules"] == [{"rule": "email.external_recipient", "decisions": 1}]
    assert row["outcomes"] == {"deny": 1} and row["agents"] == ["researcher"] and row["model"] == "gpt-4o-mini"
    assert row["tokens"] == row["counters"]["input_tokens"] + row["counters"]["output_tokens"] > 0
    by_calls = ids(audited, sort="calls", order="desc")
    assert by_calls[0] == "research-1"
    newest = ids(audited)  # last activity, newest first
    assert ids(audited, order="asc") == newest[::-1]
    started = ids(audited, sort="started", order="asc")
    assert started[0] == "research-1" and started[-1] == "chat-2"


def test_keyset_paging_visits_every_session_once(audited: Any) -> None:
    everything = ids(audited, sort="started")
    seen, pages, cursor = [], [], None
    while True:
        params = {"sort": "started", "limit": 2, **({"after": cursor} if cursor else {})}
        _, body = get_json(audited.base + "/api/sessions?" + urllib.parse.urlencode(params))
        pages.append(body)
        seen += [s["id"] for s in body["sessions"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == everything and len(pages) == 3
    assert pages[0]["prev"] is None and pages[1]["prev"] is not None
    back_to_first = urllib.parse.urlencode({"sort": "started", "limit": 2, "before": pages[1]["prev"]})
    _, back = get_json(audited.base + "/api/sessions?" + back_to_first)
    assert [s["id"] for s in back["sessions"]] == everything[:2] and back["prev"] is None
    _, by_offset = get_json(audited.base + "/api/sessions?sort=started&limit=2&offset=2")
    assert [s["id"] for s in by_offset["sessions"]] == everything[2:4]


@pytest.mark.parametrize("query, param", [
    ("sort=bogus", "sort"), ("order=up", "order"), ("limit=0", "limit"), ("limit=abc", "limit"),
    ("outcome=maybe", "outcome"), ("after=not-a-cursor", "after"), ("since=yesterday", "since"), ("range=2y", "range"),
])
def test_bad_list_parameters_say_what_to_fix(audited: Any, query: str, param: str) -> None:
    status, body = get_json(audited.base + "/api/sessions?" + query)
    assert status == 400 and body["error"]["code"] == "invalid_parameter" and body["error"]["param"] == param
    assert param in body["error"]["message"]


def test_a_cursor_only_pages_the_order_it_came_from(audited: Any) -> None:
    _, body = get_json(audited.base + "/api/sessions?limit=1")
    status, err = get_json(audited.base + "/api/sessions?sort=calls&after=" + body["next"])
    assert status == 400 and "sorted by last_call" in err["error"]["message"]


def test_one_session_with_its_tree_and_totals(audited: Any) -> None:
    status, body = get_json(audited.base + "/api/sessions/research-1-pricing")
    assert status == 200
    assert body["tree"] == [
        {"id": "research-1", "parent_id": None, "depth": 0},
        {"id": "research-1-pricing", "parent_id": "research-1", "depth": 1},
    ]
    calls = body["calls"]
    assert body["totals"]["input_tokens"] == sum(c["input_tokens"] for c in calls) == 640 + 980
    assert body["totals"]["cost_usd"] == pytest.approx(((640 + 980) * 0.15 + (48 + 36) * 0.6) / 1e6)
    status, missing = get_json(audited.base + "/api/sessions/no-such-session")
    assert status == 404 and missing["error"]["code"] == "session_not_found"


def test_decision_log(audited: Any) -> None:
    _, body = get_json(audited.base + "/api/decisions?outcome=deny")
    (denied,) = body["decisions"]
    assert denied["session_id"] == "research-1" and denied["stage"] == "action"
    assert denied["decision"]["deny"][0]["rule"] == "email.external_recipient"
    assert denied["bundles"]["proctor"]["revision"] and denied["input"]["action"]["tool_name"] == "send_email"
    _, by_rule = get_json(audited.base + "/api/decisions?rule=email.external_recipient")
    assert [d["decision_id"] for d in by_rule["decisions"]] == [denied["decision_id"]]
    _, chat = get_json(audited.base + "/api/decisions?session_id=chat-0")
    assert chat["decisions"] and {d["outcome"] for d in chat["decisions"]} == {"allow"}
    everything, cursor = [], None
    while True:
        _, page = get_json(audited.base + "/api/decisions?limit=3" + (f"&after={cursor}" if cursor else ""))
        everything += page["decisions"]
        if not (cursor := page["next"]):
            break
    _, whole = get_json(audited.base + "/api/decisions?limit=1000")
    assert [d["decision_id"] for d in everything] == [d["decision_id"] for d in whole["decisions"]]
    times = [d["timestamp"] for d in everything]
    assert times == sorted(times, reverse=True) and len(set(d["decision_id"] for d in everything)) == len(everything)
    status, err = get_json(audited.base + "/api/decisions?stage=later")
    assert status == 400 and err["error"]["param"] == "stage"


def test_overview(audited: Any) -> None:
    status, body = get_json(audited.base + "/api/overview?range=1h")
    assert status == 200
    n_calls = sum(s["calls"] for s in get_json(audited.base + "/api/sessions")[1]["sessions"])
    assert body["totals"]["calls"] == sum(b["calls"] for b in body["series"]) == n_calls
    assert body["totals"]["sessions"] == 5 and body["totals"]["blocked"] == 1
    assert body["top_rules"] == [{"rule": "email.external_recipient", "decisions": 1, "sessions": 1, "outcomes": {"deny": 1}}]
    tools = {t["tool"]: t for t in body["top_tools"]}
    assert tools["send_email"] == {"tool": "send_email", "calls": 1, "denied": 1} and tools["fetch_url"]["calls"] == 2
    assert body["recent_blocks"][0]["session_id"] == "research-1"


def page(audited: Any, path: str, **kw: Any) -> tuple[int, str, Any]:
    req = urllib.request.Request(audited.base + path, **kw)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None


def test_ui_pages(audited: Any) -> None:
    status, html, headers = page(audited, "/ui/sessions")
    assert status == 200 and all(sid in html for sid in ALL)
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, html, _ = page(audited, "/ui/sessions?rule=email.external_recipient")
    assert 'href="/ui/sessions/research-1"' in html and "chat-0" not in html
    status, html, _ = page(audited, "/ui/sessions/research-1")
    assert status == 200 and "email.external_recipient" in html and "research-1-pricing" in html
    assert "<svg" in html and "send_email" in html
    status, html, _ = page(audited, "/ui/sessions/no-such-session")
    assert status == 404 and "No session &#39;no-such-session&#39;" in html
    status, html, _ = page(audited, "/ui/sessions?sort=sideways")
    assert status == 400 and "sort must be one of" in html
    for path in ("/ui/overview", "/ui/overview?range=7d", "/ui/approvals", "/ui/login"):
        assert page(audited, path)[0] == 200, path
    status, _, headers = page(audited, "/ui")
    assert status == 302 and headers["Location"] == "/ui/sessions"
    status, css, _ = page(audited, "/ui/static/audit.css")
    assert status == 200 and "--deny" in css


def test_a_session_id_with_slashes_and_spaces_opens_from_its_link(audited: Any) -> None:
    import html as html_lib
    import re

    import httpx

    sid = "team/a b/42"
    resp = httpx.post(audited.url + "/chat/completions", headers={"X-Proctor-Session": sid},
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert resp.status_code == 200 and resp.headers["X-Proctor-Session"] == sid
    _, listing, _ = page(audited, "/ui/sessions")
    (href,) = [html_lib.unescape(h) for h in re.findall(r'href="(/ui/sessions/[^"?]+)"', listing) if "42" in h]
    status, body, _ = page(audited, href)
    assert status == 200 and html_lib.escape(sid) in body
    status, doc = get_json(audited.base + "/api/sessions/" + urllib.parse.quote(sid, safe=""))
    assert status == 200 and doc["session"]["id"] == sid


# -- access -------------------------------------------------------------------


@pytest.fixture
def guarded(trail: Any) -> Any:
    return trail(admin_token="s3cret-token")


def test_token_required_when_configured(guarded: Any) -> None:
    status, body = get_json(guarded.base + "/api/sessions")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert get_json(guarded.base + "/api/sessions", token="wrong")[0] == 401
    assert get_json(guarded.base + "/api/sessions", token="s3cret-token")[0] == 200
    assert get_json(guarded.base + "/api/approvals")[0] == 401
    assert page(guarded, "/api/sessions", headers={"Cookie": "proctor_admin=s3cret-token"})[0] == 200
    status, html, _ = page(guarded, "/ui/sessions")
    assert status == 401 and "/ui/login" in html and "research-1" not in html
    assert page(guarded, "/ui/sessions/research-1")[0] == 401
    assert page(guarded, "/ui/static/audit.css")[0] == 200  # the login page's stylesheet


def test_login_sets_the_cookie(guarded: Any) -> None:
    status, html, _ = page(guarded, "/ui/login")
    assert status == 200 and 'name="token"' in html and "Approvals" not in html  # no navigation before logging in
    assert page(guarded, "/ui/login?token=nope")[0] == 401
    status, _, headers = page(guarded, "/ui/login?token=s3cret-token&next=/ui/overview")
    assert status == 302 and headers["Location"] == "/ui/overview"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("proctor_admin=s3cret-token;") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert page(guarded, "/ui/sessions", headers={"Cookie": "proctor_admin=s3cret-token"})[0] == 200
    form = urllib.parse.urlencode({"token": "s3cret-token", "next": "https://elsewhere.example/"}).encode()
    status, _, headers = page(guarded, "/ui/login", data=form, method="POST")
    assert status == 302 and headers["Location"] == "/ui/sessions"  # never sent off-site
    status, _, headers = page(guarded, "/ui/logout")
    assert status == 302 and "proctor_admin=;" in headers["Set-Cookie"].replace('proctor_admin="";', "proctor_admin=;")


def test_changes_from_another_sites_page_are_refused(guarded: Any) -> None:
    req = urllib.request.Request(
        guarded.base + "/api/approvals/apr_0", method="POST", data=json.dumps({"decision": "approve"}).encode(),
        headers={"Cookie": "proctor_admin=s3cret-token", "Sec-Fetch-Site": "cross-site"},
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 403 and json.loads(exc.value.read())["error"]["code"] == "cross_site_request"


def _request(app: web.Application, peer: str, headers: dict[str, str] | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 41000) if name == "peername" else default
    return make_mocked_request("GET", "/api/sessions", headers=headers or {}, app=app, transport=transport)


@pytest.mark.parametrize("peer, allowed", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                           ("203.0.113.7", False), ("10.1.2.3", False), ("::ffff:198.51.100.2", False)])
async def test_without_a_token_only_loopback_is_served(audited: Any, peer: str, allowed: bool) -> None:
    request = _request(audited.app, peer, {"X-Forwarded-For": "127.0.0.1"})  # a header proves nothing
    assert authorized(request) is allowed

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    response = await admin_only(request, handler)
    assert response.status == (200 if allowed else 401)


async def test_with_a_token_loopback_is_not_enough(guarded: Any) -> None:
    assert not authorized(_request(guarded.app, "127.0.0.1"))
    assert authorized(_request(guarded.app, "203.0.113.7", {"Authorization": "Bearer s3cret-token"}))
