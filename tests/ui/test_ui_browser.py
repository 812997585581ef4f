"""The audit UI driven in headless Chromium (Debian's ``chromium``, through
Playwright with ``executable_path``; no browser is downloaded): open the session
list, filter it by a rule, open a session and see the denied tool call with its
rule and the sub-agent tree; approve (or deny) a call held by an ``ask`` and see
it released to the agent.

Set ``PROCTOR_UI_SCREENSHOT=docs/screenshot-session.png`` to also write the
session page's screenshot that the README shows.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import TOOLS, client

CHROMIUM = os.environ.get("PROCTOR_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("the playwright package is not installed (pip install -e '.[test]')", allow_module_level=True)
if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):  # pragma: no cover
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PROCTOR_CHROMIUM)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()


def test_find_a_denied_tool_call_and_the_sub_agent_tree(trail: Any, page: Page, tmp_path: Path) -> None:
    proxy = trail()
    page.goto(proxy.base + "/ui/sessions")
    rows = page.locator("table.sessions tbody tr")
    expect(rows).to_have_count(5)

    page.fill("input[name=rule]", "email.external_recipient")
    page.click("form.filters button[type=submit]")
    expect(rows).to_have_count(1)
    assert "rule=email.external_recipient" in page.url
    expect(rows.first).to_contain_text("research-1")
    expect(rows.first).to_contain_text("deny 1")

    page.click("table.sessions a[href='/ui/sessions/research-1']")
    expect(page.locator("h1")).to_contain_text("research-1")
    denied = page.locator("li.event.tool_call.denied")
    expect(denied).to_have_count(1)
    expect(denied).to_contain_text("send_email")
    expect(denied).to_contain_text("attacker@evil.example")
    expect(denied.locator(".decision.deny")).to_contain_text("email.external_recipient")
    expect(denied.locator(".decision.deny")).to_contain_text("recipients outside example.com")
    expect(denied.locator(".decision.deny .meta")).to_contain_text("policy revision")
    tree = page.locator("ul.tree")
    expect(tree.locator("li.current")).to_contain_text("research-1")
    expect(tree.locator("li.depth-1")).to_contain_text("research-1-pricing")
    expect(page.locator("section.plot svg .call")).to_have_count(3)

    shot = tmp_path / "session.png"
    page.set_viewport_size({"width": 1280, "height": 1700})
    page.screenshot(path=str(shot))
    if os.environ.get("PROCTOR_UI_SCREENSHOT"):
        Path(os.environ["PROCTOR_UI_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ["PROCTOR_UI_SCREENSHOT"])

    page.click("ul.tree a:has-text('research-1-pricing')")  # the sub-agent's own page links back up
    expect(page.locator(".lede")).to_contain_text("Sub-agent of research-1")


@pytest.mark.parametrize("verdict", ["approve", "deny"])
def test_a_held_call_is_released_from_the_approvals_page(trail: Any, page: Page, verdict: str) -> None:
    proxy = trail(approval_timeout=30)
    answer: dict[str, Any] = {}

    def deploy() -> None:
        c, headers = client(proxy, "deploy-1", **{"X-Proctor-Agent": "release-bot"})
        with c:
            answer["message"] = c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Deploy release 2.4.1"}], tools=TOOLS,
                extra_headers=headers,
            ).choices[0].message

    agent = threading.Thread(target=deploy, daemon=True)
    page.goto(proxy.base + "/ui/approvals")  # possibly before the call is held: the page reloads when it is
    agent.start()
    row = page.locator("tr[data-approval-row]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("deploy")
    expect(row).to_contain_text("approval.deploy")
    expect(row).to_contain_text('"production"')
    assert agent.is_alive()  # held

    page.click(f"button.{verdict}")
    agent.join(15)
    assert not agent.is_alive() and "message" in answer
    names = [tc.function.name for tc in answer["message"].tool_calls or []]
    assert names == (["deploy"] if verdict == "approve" else [])
    if verdict == "deny":
        assert "not approved" in (answer["message"].content or "")
    settled = page.locator("table.settled tbody tr")
    expect(settled).to_have_count(1)
    expect(settled).to_contain_text("approved by audit ui" if verdict == "approve" else "denied by audit ui")
    expect(page.locator("tr[data-approval-row]")).to_have_count(0)

    page.goto(proxy.base + "/ui/sessions/deploy-1")  # the decision, with how the person answered
    expect(page.locator(".decision.ask")).to_contain_text("approval.deploy")
    expect(page.locator(".decision.ask .approval-result")).to_contain_text("approved" if verdict == "approve" else "denied")
