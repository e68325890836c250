"""The managers' dashboard in Chromium: live figures without a reload, and a screenshot for review."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Visitor, expect, skip_unless_browser
from tests.browser.test_inbox import SPANISH, routed
from tests.browser.test_widget import SCREENSHOTS
from tests.factories import make_demo

skip_unless_browser(module=True)


def test_dashboard_updates_live_and_is_captured(live_worker, web_server, agent_page: Any) -> None:
    demo = make_demo()
    maria = agent_page("maria")
    maria.page.goto(f"{web_server.url}/dashboard/")
    es_row = maria.page.locator('[data-sb="queue-row"][data-language="es"]')
    expect(es_row).to_be_visible()
    arrivals = es_row.locator("td").nth(4)
    expect(arrivals).to_contain_text("(0)")
    maria.live()

    Visitor(web_server.url, demo.webchat.public_id).say(SPANISH)
    routed(SPANISH)
    # The new conversation shows in the figures without a reload (the page refreshes at most every 5 s).
    expect(arrivals).to_contain_text("(1)", timeout=20_000)
    expect(maria.page.locator('[data-sb="channel-row"][data-kind="webchat"]')).to_be_visible()
    expect(maria.page.locator("svg.chart").first).to_be_visible()
    assert maria.unlabelled_controls() == []
    expect(maria.sb("total-waiting")).to_have_text("1")
    maria.shot("dashboard")
    maria.page.screenshot(path=str(SCREENSHOTS / "dashboard-full-page.png"), full_page=True)
