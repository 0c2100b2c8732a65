"""An advice sheet in the browser (issue 21 item 3): the printable page loads its stylesheet from our origin under
the Content-Security-Policy, with no violation reported, and prints the sheet alone."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.test_e2e_browser import Served, browser, context, log_in, page, playwright, served  # noqa: F401

pytestmark = pytest.mark.slow


def test_the_suspected_cases_sheet_in_the_browser(page: Page, served: Served) -> None:  # noqa: F811
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    log_in(page, "staff:test")
    page.goto(f"/objects/{served.case}")
    page.locator('.advice-link[data-sheet="suspected"] a').first.click()
    expect(page).to_have_url(f"{served.base_url}/objects/{served.case}/advice/suspected")
    sheet = page.locator("article#sheet")
    expect(sheet).to_have_attribute("lang", "en")  # no choice stored: the browser's language (it asks for English)
    expect(sheet.locator("h1")).to_have_text("Advice for you if you may have mpox")
    page.locator("#sheet-language").click()  # "Dansk": ?lang=da
    expect(sheet).to_have_attribute("lang", "da")
    expect(sheet.locator("h1")).to_have_text("Råd til dig, der er mistænkt for at have mpox")
    expect(sheet).to_contain_text("Er prøvesvaret negativt, kan du ophøre med selvisolationen.")
    expect(sheet).to_contain_text("lørdag den 1. marts 2025")
    # advice.css applied (our origin, allowed by the CSP): the key dates' box has its background.
    assert page.locator(".key-dates").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(243, 245, 247)"
    page.emulate_media(media="print")  # printed: the sheet alone
    assert page.locator(".advice-tools").evaluate("e => getComputedStyle(e).display") == "none"
    assert page.locator("header").evaluate("e => getComputedStyle(e).display") == "none"
    assert not [p for p in problems if "Content Security Policy" in p], problems
    assert "E2E-CASE" not in sheet.inner_text()
