"""The overview page in the system's Chromium (issue 21 item 1): the figures drawn, a table opened, nothing refused
by the Content-Security-Policy, no critical or serious axe-core violation. The served application and the browser
are tests/test_e2e_browser.py's (its suspected case, onset Saturday 1 March 2025: week 9)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests import test_e2e_browser as e2e
from tests.test_e2e_browser import TIMEOUT_MS, Served

playwright = e2e.playwright
browser = e2e.browser
served = e2e.served

pytestmark = pytest.mark.slow


@pytest.fixture
def danish(browser: Browser, served: Served) -> Iterator[Page]:
    context = browser.new_context(base_url=served.base_url, viewport={"width": 1280, "height": 900},
                                  locale="da-DK", timezone_id="Europe/Copenhagen")
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def test_the_overview_shows_its_figures_and_a_table_opens(danish: Page) -> None:
    page = danish
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto("/login")
    form = page.locator("form#login")
    form.locator("input[name=name]").fill("staff:test")
    form.locator("input[name=password]").fill(e2e.PASSWORD)
    form.locator("button[type=submit]").click()
    page.get_by_role("link", name="Overblik").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Udbruddet i overblik")
    curve = page.locator("#figure-curve svg[role=img]")
    expect(curve).to_be_visible()
    box = curve.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    # The bars are drawn: matplotlib's text is there as text, in Danish.
    expect(page.locator("#figure-curve svg text").filter(has_text="mistænkt")).to_have_count(1)
    table = page.locator("#table-curve table")
    expect(table).to_be_hidden()
    page.locator("#table-curve summary").click()
    expect(table).to_be_visible()
    expect(table.locator("tr").filter(has_text="2025-W09")).to_contain_text("1")
    assert refused == []
    # Accessible as every page is (tests/test_accessibility.py's rule): no critical or serious axe violation.
    from tests.test_accessibility import blocking_violations

    assert blocking_violations(page) == []
