"""End to end, in a real browser: the web application served by uvicorn, driven by Playwright's Chromium.

On both backends: staff log in, confirm a case, add a contact, watch the worklist and move the simulated clock;
an auditor sees no action; the session cookie is HttpOnly and SameSite=Strict and a change without the session's
CSRF token is refused. Screenshots of each step go to ``tests/artifacts/`` (ignored by git).

The browser is the system's Chromium (``/usr/bin/chromium``; ``apt-get install chromium``): Playwright's own
browsers are never downloaded. A missing browser fails these tests, it never skips them.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from engine.bootstrap import open_engine
from entry.web.app import SESSION_COOKIE
from entry.web.server import create_app
from tests.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
STARTUP_TIMEOUT = 15.0  # seconds for uvicorn to start listening
TIMEOUT_MS = 15_000  # Playwright's timeout for each action and assertion


pytestmark = pytest.mark.slow

# ---- the browser -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.is_file():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: `apt-get install chromium` "
                    "(Playwright's own browsers are not downloaded)", pytrace=False)
    runner = sync_playwright().start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    yield chromium
    chromium.close()


# ---- the application -------------------------------------------------------------------------------------------


@dataclass
class Served:
    base_url: str
    backend: str
    case: str
    case_person: str
    contact_person: str


def _seed(url: str) -> tuple[str, str, str]:
    """A suspected case and one more person, to be the case's contact."""
    engine = open_engine(url)
    try:
        case_person = engine.add_person(ref="E2E-CASE", actor="staff:test")["id"]
        contact_person = engine.add_person(ref="E2E-CONTACT", actor="staff:test")["id"]
        case = engine.open("case", "open", person=case_person, actor="staff:test", data={
            "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    finally:
        engine.db.dispose()
    return case, case_person, contact_person


@pytest.fixture
def served(cli_db: str) -> Iterator[Served]:
    """The web application over ``cli_db`` (simulated clock at START), served by uvicorn in a thread on a free
    local port."""
    case, case_person, contact_person = _seed(cli_db)
    app = create_app(cli_db)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                           lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="uvicorn-e2e", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive():
                pytest.fail("uvicorn stopped while starting: see the captured log", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start within {STARTUP_TIMEOUT} s", pytrace=False)
            time.sleep(0.02)
        yield Served(f"http://127.0.0.1:{port}", "sqlite" if cli_db.startswith("sqlite") else "postgresql",
                     case, case_person, contact_person)
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT)
        listener.close()
        app.state.web.db.dispose()  # the lifespan disposes it too; once more is harmless
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def context(browser: Browser, served: Served) -> Iterator[BrowserContext]:
    # English pages (the browser asks for en): these tests are about the pages' behaviour; the Danish pages, the
    # default, are tests/test_i18n.py's.
    made = browser.new_context(base_url=served.base_url, viewport={"width": 1280, "height": 900}, locale="en-GB",
                               timezone_id="Europe/Copenhagen")
    made.set_default_timeout(TIMEOUT_MS)
    yield made
    made.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


class Shots:
    """Screenshots numbered in the order taken: ``tests/artifacts/<test>-<backend>-<nn>-<step>.png``."""

    def __init__(self, page: Page, test: str, backend: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page, self.prefix, self.count = page, f"{test}-{backend}", 0
        for old in ARTIFACTS.glob(f"{self.prefix}-*.png"):
            old.unlink()

    def __call__(self, step: str) -> None:
        self.count += 1
        self.page.screenshot(path=ARTIFACTS / f"{self.prefix}-{self.count:02d}-{step}.png", full_page=True)


def log_in(page: Page, user: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    form = page.locator("form#login")
    form.locator("input[name=name]").fill(user)
    form.locator("input[name=password]").fill(password)
    form.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/worklist$"))
    expect(page.locator("#who")).to_contain_text(user)


def rows(page: Page, section: str) -> list[tuple[str, str]]:
    """The (object, task) of each row in one worklist section."""
    table = page.locator(f'table.worklist[data-section="{section}"]')
    if table.count() == 0:
        return []
    return [(row.get_attribute("data-object") or "", row.get_attribute("data-task") or "")
            for row in table.locator("tr[data-object][data-task]").all()]


def post_from_page(page: Page, path: str, fields: dict[str, str]) -> dict[str, Any]:
    """A form POST made by the page's own script (same origin, the session cookie goes along)."""
    result: dict[str, Any] = page.evaluate(
        """async ([path, fields]) => {
            const body = new URLSearchParams(fields);
            const response = await fetch(path, {method: "POST", body, redirect: "manual"});
            return {status: response.status, text: await response.text()};
        }""",
        [path, fields],
    )
    return result


# ---- the tests -------------------------------------------------------------------------------------------------


def test_staff_confirm_a_case_add_a_contact_and_watch_the_worklist_as_the_clock_moves(page: Page,
                                                                                      served: Served) -> None:
    shot = Shots(page, "staff", served.backend)
    log_in(page, "staff:test")
    expect(page.locator("#clock")).to_contain_text("Simulated clock: 03.03.2025 kl. 08.00")
    shot("worklist-empty")

    # The case, from the Cases list.
    page.get_by_role("navigation").get_by_role("link", name="Cases").click()
    expect(page).to_have_url(re.compile(r"/list/cases$"))
    listing = page.locator("#listing")
    expect(listing.locator("tr", has_text=served.case)).to_contain_text("suspected")
    shot("cases")
    listing.get_by_role("link", name=served.case, exact=True).click()
    expect(page).to_have_url(re.compile(rf"/objects/{served.case}$"))
    expect(page.locator("#state")).to_have_text("suspected")
    expect(page.locator("form#contact_add")).to_have_count(0)  # contacts come with a confirmed case
    shot("case-suspected")

    # Confirm it by PCR.
    confirm = page.locator("form#confirm")
    confirm.locator("input[name=pcr_on]").fill("2025-03-03")
    confirm.get_by_role("button", name="Confirm (positive PCR)").click()
    expect(page.locator("#state")).to_have_text("confirmed")
    expect(page.locator("[role=status]")).to_contain_text("Confirm (positive PCR): confirmed")
    expect(page.locator("form#confirm")).to_have_count(0)
    expect(page.locator("#timeline")).to_contain_text("suspected → confirmed")
    expect(page.locator("#timeline")).to_contain_text("staff:test")
    expect(page.locator("#timers")).to_contain_text("phone notification to STPS due")
    shot("case-confirmed")

    # A household contact: STPS traces it once the case consents (§5.2).
    consent = page.locator("form#consent")
    consent.locator("input[name=tracing]").check()
    consent.get_by_role("button", name="Consent to contact tracing").click()
    expect(page.locator("[role=status]")).to_contain_text("Consent to contact tracing")
    expect(page.locator("#facts tr", has_text="Consent to contact tracing")).to_contain_text("yes")
    add = page.locator("form#contact_add")
    expect(add.locator("input[name=case]")).to_have_value(served.case)
    add.locator("input[name=person]").fill(served.contact_person)
    add.locator("input[name=exposed]").fill("2025-03-02")
    add.locator("select[name=kind]").select_option("household")
    add.get_by_role("button", name="Register a close contact").click()
    expect(page).to_have_url(re.compile(r"/objects/contact-\d+\?done="))
    contact = page.url.split("/objects/", 1)[1].split("?", 1)[0]
    expect(page.locator("#state")).to_have_text("exposed")
    exposures = page.locator("#facts tr", has_text="exposures")
    expect(exposures).to_contain_text("Date 02.03.2025 · Kind household contact")
    expect(exposures).not_to_contain_text("{")  # a list of records is written out, not as Python's repr
    expect(page.locator("#timers")).to_contain_text("informing the contact")
    shot("contact")
    page.goto(f"/objects/{served.case}")
    contacts = page.locator("#contacts")
    row = contacts.locator("tr", has_text=contact)
    expect(row).to_contain_text(served.contact_person)
    expect(row).to_contain_text("household")
    expect(row).to_contain_text("02.03.2025")
    shot("case-with-contact")

    # The worklist on Monday 08:00: phoning STPS is due by 17:00 today; the written notification (24 h) and
    # informing the contact (one day) fall due tomorrow at 08:00; the PEP assessment is there from the contact's
    # registration (§6.2: best within 4 days of the exposure, at the latest 14).
    page.get_by_role("navigation").get_by_role("link", name="Worklist").click()
    expect(page.locator(f'tr[data-object="{contact}"][data-task="inform_due"]')).to_be_visible()
    assert rows(page, "Overdue") == []
    assert rows(page, "Due today") == [(served.case, "phone_notification_due")]
    assert set(rows(page, "Next 7 days")) == {(served.case, "written_notification_due"), (contact, "inform_due"),
                                              (served.case, "sequencing_sample_due"),  # §2.4: Tuesday 17:00
                                              (contact, "pep_assessment_due")}
    expect(page.locator('table.worklist[data-section="Due today"] tr[data-task="phone_notification_due"]')) \
        .to_contain_text("9 h 0 min left")
    shot("worklist-monday")

    # Two days on: Wednesday 08:00, and all three are overdue.
    clock = page.locator("form#clock-advance")
    clock.locator("input[name=amount]").fill("2")
    clock.locator("select[name=unit]").select_option("days")
    clock.get_by_role("button", name="Advance clock").click()
    expect(page).to_have_url(re.compile(r"/worklist\?done="))
    expect(page.locator("#clock")).to_contain_text("05.03.2025 kl. 08.00")
    expect(page.locator("[role=status]")).to_contain_text("clock moved to 05.03.2025 kl. 08.00")
    # Their deadlines passed undone: missed (issue 12, item 14).
    assert set(rows(page, "Missed")) == {(served.case, "phone_notification_due"),
                                         (served.case, "written_notification_due"), (contact, "inform_due"),
                                         (served.case, "sequencing_sample_due")}
    assert rows(page, "Due today") == []
    assert (contact, "inform_due") not in rows(page, "Next 7 days")
    assert (contact, "pep_assessment_due") in rows(page, "Next 7 days")  # its window is still open (16.03)
    expect(page.locator('table.worklist[data-section="Missed"] tr[data-task="inform_due"] td.overdue')) \
        .to_contain_text("overdue by 1 d 0 h")
    shot("worklist-wednesday")


def test_an_auditor_reads_a_case_but_is_offered_no_action_and_a_forced_post_is_refused(page: Page,
                                                                                      served: Served) -> None:
    shot = Shots(page, "auditor", served.backend)
    log_in(page, "auditor:test")
    expect(page.locator("#who")).to_have_text("auditor:test (auditor)")
    expect(page.locator("form#clock-advance")).to_have_count(0)
    expect(page.locator("#clock")).to_contain_text("03.03.2025 kl. 08.00")
    shot("worklist")

    page.get_by_role("navigation").get_by_role("link", name="Cases").click()
    page.locator("#listing").get_by_role("link", name=served.case, exact=True).click()
    expect(page.locator("#state")).to_have_text("suspected")
    expect(page.get_by_text("Your role (auditor) reads")).to_be_visible()
    expect(page.locator("#actions")).to_have_count(0)
    expect(page.locator("main form")).to_have_count(0)
    expect(page.locator("form#confirm")).to_have_count(0)
    expect(page.locator("form#clock-advance")).to_have_count(0)
    shot("case")

    # What the page does not offer, forced with the session's own CSRF token: the engine refuses (403).
    csrf = page.locator('header form[action="/logout"] input[name=csrf_token]').input_value()
    refused = post_from_page(page, f"/objects/{served.case}/confirm", {"csrf_token": csrf, "pcr_on": "2025-03-03"})
    assert refused["status"] == 403, refused["text"][:500]
    assert "auditor" in refused["text"]
    clock = post_from_page(page, "/clock/advance", {"csrf_token": csrf, "amount": "2", "unit": "days"})
    assert clock["status"] == 403, clock["text"][:500]
    page.reload()
    expect(page.locator("#state")).to_have_text("suspected")
    expect(page.locator("#clock")).to_contain_text("03.03.2025 kl. 08.00")
    expect(page.locator("#timeline")).not_to_contain_text("confirmed")
    shot("case-after-refusals")


def test_the_session_cookie_is_httponly_and_strict_a_change_needs_the_csrf_token_and_logout_ends_it(
        page: Page, context: BrowserContext, served: Served) -> None:
    shot = Shots(page, "session", served.backend)
    page.goto("/worklist")
    expect(page).to_have_url(re.compile(r"/login\?next=/worklist$"))
    log_in(page, "staff:test")

    cookies = {c["name"]: c for c in context.cookies()}
    assert SESSION_COOKIE in cookies
    session = cookies[SESSION_COOKIE]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/"
    assert SESSION_COOKIE not in page.evaluate("document.cookie")  # out of any script's reach

    # A change without the session's CSRF token, or with another one, is refused and changes nothing.
    for token in (None, "not-the-token"):
        fields = {"amount": "2", "unit": "days", **({"csrf_token": token} if token else {})}
        refused = post_from_page(page, "/clock/advance", fields)
        assert refused["status"] == 403, refused["text"][:500]
        assert "CSRF token" in refused["text"]
    page.reload()
    expect(page.locator("#clock")).to_contain_text("03.03.2025 kl. 08.00")
    shot("worklist")

    page.locator("header").get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("form#login")).to_be_visible()
    assert SESSION_COOKIE not in {c["name"] for c in context.cookies()}
    shot("logged-out")

    page.goto("/worklist")
    expect(page).to_have_url(re.compile(r"/login\?next=/worklist$"))
    expect(page.locator("#who")).to_have_count(0)
    shot("worklist-after-logout")
