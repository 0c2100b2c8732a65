"""The whole staff scenario of issue 16 in Danish, in the system's Chromium, through the pages only.

A case worker registers a person by reference and opens a case for them, confirms it (a PCR date typed as
dd.mm.åååå), records the tracing consent, adds two contacts from inside the case page (a new person registered
from the contact form, and a registered person picked by their reference), informs a contact, assesses the risk
and offers PEP, records dose 1 with its consent, corrects a wrong onset date with a reason, moves the simulated
clock and resolves a missed task from the worklist. After each step: what the page says, in Danish; at the end,
the database as the engine reads it (states, timers, and an audit entry for every step with its trigger and
actor, and no person's reference anywhere in the audit log).

Then the auditor's desk (a Danish date filter, a trigger, an entry's before/after, an object as it was, the Excel
CSV export) and a phone-width pass (no horizontal scrolling; a final step asks for confirmation first). axe-core
runs on every page visited; screenshots go to ``tests/artifacts/`` (ignored by git). The fixtures are
``tests/test_e2e_browser.py``'s and ``tests/test_accessibility.py``'s.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from engine.bootstrap import open_engine
from tests import test_accessibility as a11y
from tests import test_e2e_browser as e2e
from tests.test_accessibility import blocking_violations, overflow, widest
from tests.test_e2e_browser import ARTIFACTS, Served, log_in, rows

# The browser, the served application, the seeded world and browser contexts: the other browser tests' fixtures.
playwright = e2e.playwright
browser = e2e.browser
served = e2e.served
world = a11y.world
new_context = a11y.new_context

pytestmark = pytest.mark.slow

SENEST = re.compile(r"senest \d{2}\.\d{2}\.\d{4}")
RAW = re.compile(r"\b[a-z]+_[a-z_]+\b")  # a raw identifier (phone_notification_due, dose1_given) shown as text


class Walk:
    """A page walked through: each step screenshotted, and checked by axe-core (problems kept for the end)."""

    def __init__(self, page: Page, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        for old in ARTIFACTS.glob(f"{name}-*.png"):
            old.unlink()
        self.page, self.name, self.count = page, name, 0
        self.problems: list[str] = []

    def step(self, label: str) -> None:
        self.count += 1
        where = f"{self.count:02d} {label} ({self.page.url})"
        for violation in blocking_violations(self.page):
            self.problems.append(f"{where}: axe {violation}")
        self.page.screenshot(path=ARTIFACTS / f"{self.name}-{self.count:02d}-{label}.png", full_page=True)

    def clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def danish_only(page: Page, where: str) -> None:
    """The page's main text speaks Danish: lang="da" and no raw identifier in the visible text."""
    assert page.locator("html").get_attribute("lang") == "da", where
    text = page.locator("main").inner_text()
    shown = [w for w in RAW.findall(text) if not w.startswith(("staff_", "auditor_"))]
    assert not shown, f"{where}: raw identifiers on the page: {sorted(set(shown))}"


def landed(page: Page, pattern: str) -> None:
    """The page went where a successful step leads; otherwise the refusal it shows is the failure's message."""
    try:
        page.wait_for_url(re.compile(pattern), timeout=5_000)
    except Exception:  # noqa: BLE001 - the page's own words are the better message
        alerts = " | ".join(page.locator("[role=alert], .field-error").all_inner_texts())
        raise AssertionError(f"{page.url}: not {pattern}: {alerts}") from None


def object_id(page: Page) -> str:
    return page.url.split("/objects/", 1)[1].split("?", 1)[0].split("#", 1)[0]


def fact(page: Page, key: str) -> str:
    return page.locator(f'#facts tr[data-fact="{key}"] td').inner_text()


def timer_row(page: Page, name: str) -> str:
    """The text of the object's row for one timer, by the timer's name (data attribute of its status cell)."""
    found = [r for r in page.locator("#timers tr[data-timer]").all() if r.get_attribute("data-timer")]
    texts = {r.get_attribute("data-timer"): r.inner_text() for r in found}
    matches = [t for t in texts.values() if name in t]
    assert matches, f"no timer row says {name!r}: {list(texts.values())}"
    return matches[0]


# ---- 1. the staff scenario -------------------------------------------------------------------------------------


def test_a_case_worker_works_a_case_from_registration_to_a_resolved_missed_task_in_danish(
        served: Served, cli_db: str, new_context: Callable[[str], BrowserContext]) -> None:
    page = new_context("desktop").new_page()
    walk = Walk(page, "scenario")
    log_in(page, "staff:test")
    expect(page.locator("#clock")).to_contain_text("Simuleret ur: 03.03.2025 kl. 08.00")
    walk.step("worklist")

    # A new person, registered by reference from the persons' list; the case is opened from their page.
    page.locator('nav a[href="/list/persons"]').click()
    add_person = page.locator("form#person_add")
    add_person.locator("input[name=ref]").fill("SCEN-0101")
    walk.step("persons")
    add_person.get_by_role("button", name="Registrér person").click()
    landed(page, r"/objects/person-\d+\?done=")
    person = object_id(page)
    expect(page.locator("#ref")).to_have_text("SCEN-0101")
    expect(page.locator("[role=status]")).to_contain_text("Registrér person")
    walk.step("person")
    opening = page.locator("form#case_open")
    expect(opening.locator("input[name=person]")).to_have_value(person)
    opening.locator("input[name=onset]").fill("28.02.2025")  # wrong: corrected below
    opening.get_by_label("Udslæt").check()
    opening.locator("input[name=criteria][value=msm]").check()
    opening.get_by_role("button", name="Opret tilfælde").click()
    landed(page, r"/objects/case-\d+\?done=")
    case = object_id(page)
    expect(page.locator("#state")).to_have_text("mistænkt")
    expect(page.locator("h1 #ref")).to_contain_text(f"{person} SCEN-0101")  # the reference beside the person
    assert fact(page, "onset") == "28.02.2025"
    danish_only(page, "the suspected case")
    walk.step("case-suspected")

    # Confirmed by PCR, the date typed as Danes write it: the notification deadlines, as their last day.
    confirm = page.locator("form#confirm")
    confirm.locator("input[name=pcr_on]").fill("03.03.2025")
    confirm.get_by_role("button", name="Bekræft (positiv PCR)").click()
    expect(page.locator("#state")).to_have_text("bekræftet")
    expect(page.locator("[role=status]")).to_contain_text("bekræftet")
    assert fact(page, "pcr_on") == "03.03.2025"
    expect(page.locator("#timeline")).to_contain_text("mistænkt → bekræftet")
    phone = timer_row(page, "elefonisk anmeldelse")
    assert re.search(r"senest 03\.03\.2025|i dag", phone), phone
    danish_only(page, "the confirmed case")
    walk.step("case-confirmed")

    consent = page.locator("form#consent")
    consent.locator("input[name=tracing]").check()
    consent.get_by_role("button", name="Samtykke til smitteopsporing").click()
    expect(page.locator("[role=status]")).to_contain_text("Samtykke til smitteopsporing")
    expect(page.locator('#facts tr[data-fact="tracing_consent"]')).to_contain_text("ja")
    walk.step("case-consent")

    # Contact 1: a new person, registered from inside the contact form on the case's page.
    add = page.locator("form#contact_add")
    expect(add.locator("input[name=case]")).to_have_value(case)
    add.locator("input[name=exposed]").fill("02.03.2025")
    add.locator("select[name=kind]").select_option("household")
    add.locator("input[name=new_person_ref]").fill("SCEN-0202")
    add.get_by_role("button", name="Registrér personen").click()
    expect(page.locator("[role=status]")).to_contain_text("personen er registreret som person-")
    add = page.locator("form#contact_add")
    new_person = add.locator("input[name=person]").input_value()
    assert re.fullmatch(r"person-\d+", new_person), new_person
    expect(add.locator("input[name=exposed]")).to_have_value("02.03.2025")  # what was typed is kept
    expect(add.locator("select[name=kind]")).to_have_value("household")
    walk.step("contact-person-registered")
    add.get_by_role("button", name="Registrér nær kontakt").click()
    landed(page, r"/objects/contact-\d+\?done=")
    first = object_id(page)
    expect(page.locator("#state")).to_have_text(re.compile(r"\w"))
    expect(page.locator("h1 #ref")).to_contain_text("SCEN-0202")
    pep = timer_row(page, "PEP")
    assert SENEST.search(pep), pep
    danish_only(page, "the first contact")
    walk.step("contact-1")

    # Contact 2: a registered person, found by typing their reference in the picker.
    page.goto(f"/objects/{case}")
    add = page.locator("form#contact_add")
    picker = add.locator("input[name=person]")
    picker.press_sequentially("E2E-CON")
    expect(page.locator(f"#{picker.get_attribute('list')} option").first).to_have_attribute(
        "value", re.compile(r"E2E-CONTACT|person-\d+"))
    picker.fill("E2E-CONTACT")
    add.locator("input[name=exposed]").fill("01.03.2025")
    add.locator("select[name=kind]").select_option("sexual")
    walk.step("contact-2-picked")
    add.get_by_role("button", name="Registrér nær kontakt").click()
    landed(page, r"/objects/contact-\d+\?done=")
    second = object_id(page)
    expect(page.locator("h1 #ref")).to_contain_text(f"{served.contact_person} E2E-CONTACT")
    walk.step("contact-2")
    page.goto(f"/objects/{case}")
    contacts = page.locator("#contacts")
    expect(contacts.locator("tr", has_text=first)).to_contain_text(f"{new_person} SCEN-0202")
    expect(contacts.locator("tr", has_text=first)).to_contain_text("02.03.2025")
    expect(contacts.locator("tr", has_text=second)).to_contain_text(f"{served.contact_person} E2E-CONTACT")
    assert SENEST.search(contacts.locator("tr", has_text=first).inner_text())
    danish_only(page, "the case with two contacts")
    walk.step("case-two-contacts")

    # The worklist: the contacts' tasks with their references and their case.
    page.locator('nav a[href="/worklist"]').click()
    expect(page.locator('h2[data-section="Overdue"]')).to_contain_text("Overskredet")
    expect(page.locator('h2[data-section="Due today"]')).to_contain_text("Frist i dag")
    expect(page.locator('h2[data-section="Next 7 days"]')).to_contain_text("Kommende")
    expect(page.locator('h2[data-section="Missed"]')).to_contain_text("Forsømt")
    assert (case, "phone_notification_due") in rows(page, "Due today")
    coming = rows(page, "Next 7 days")
    assert {(first, "inform_due"), (first, "pep_assessment_due"), (second, "inform_due")} <= set(coming), coming
    inform = page.locator(f'tr[data-object="{first}"][data-task="inform_due"]')
    expect(inform).to_contain_text("SCEN-0202")
    expect(inform).to_contain_text(case)
    expect(inform).to_contain_text("senest i morgen kl. 08.00")  # not midnight: its day (named) and time
    pep = page.locator(f'tr[data-object="{first}"][data-task="pep_assessment_due"]').inner_text()
    assert SENEST.search(pep), pep  # at 00:00: its last day
    danish_only(page, "the worklist")
    walk.step("worklist-monday")

    # Contact 1 informed, assessed, offered PEP.
    page.goto(f"/objects/{first}")
    page.locator("form#inform").get_by_role("button", name="Kontakt informeret").click()
    expect(page.locator("[role=status]")).to_contain_text("Kontakt informeret")
    walk.step("contact-informed")
    assess = page.locator("form#assess")
    assess.locator("select[name=risk]").select_option("high")
    assess.locator("textarea[name=reason]").fill("Delt seng og håndklæder")
    assess.get_by_role("button", name="Klinisk risikovurdering").click()
    landed(page, rf"/objects/{first}\?done=")
    expect(page.locator("[role=status]")).to_contain_text("Klinisk risikovurdering")
    expect(page.locator('#facts tr[data-fact="risk"]')).to_contain_text("høj")
    walk.step("contact-assessed")
    offer = page.locator("form#vaccine_offer")
    expect(offer.locator("[name=indication]")).to_have_value("pep")
    expect(offer.locator("[name=contact]")).to_have_value(first)
    offer.locator("input[name=assessed_by]").fill("Læge på infektionsmedicinsk afdeling")
    offer.locator("textarea[name=assessment_note]").fill("Husstandskontakt, høj risiko (tabel 1)")
    offer.get_by_role("button", name="Tilbyd vaccination").click()
    landed(page, r"/objects/course-\d+\?done=")
    course = object_id(page)
    expect(page.locator("h1 #ref")).to_contain_text("SCEN-0202")
    danish_only(page, "the PEP course")
    walk.step("course-offered")

    # Dose 1, with the PEP consent fields.
    dose = page.locator("form#dose")
    dose.locator("input[name=on]").fill("03.03.2025")
    dose.locator("input[name=consent]").check()
    dose.locator("textarea[name=indication_note]").fill("Husstandskontakt, høj risiko")
    dose.locator("textarea[name=justification]").fill("PEP inden for 4 dage efter eksponering")
    dose.get_by_role("button", name="Registrér dosis").click()
    expect(page.locator("[role=status]")).to_contain_text("Registrér dosis")
    assert fact(page, "dose1_on") == "03.03.2025"
    second_dose = timer_row(page, "dosis")
    assert SENEST.search(second_dose) or "i dag" in second_dose, second_dose
    danish_only(page, "the course after dose 1")
    walk.step("course-dose-1")

    # The onset was wrong: corrected, with a reason.
    page.goto(f"/objects/{case}")
    correct = page.locator("form#correct")
    correct.locator("input[name=onset]").fill("27.02.2025")
    correct.locator("textarea[name=reason]").fill("Patienten huskede forkert")
    correct.get_by_role("button", name="Ret symptomdebut").click()
    expect(page.locator("[role=status]")).to_be_visible()
    assert fact(page, "onset") == "27.02.2025"
    expect(page.locator("#timeline")).to_contain_text("Patienten huskede forkert")
    walk.step("case-corrected")

    # Two days on: the phone notification was never made; it is missed, and resolved from the worklist.
    page.locator('nav a[href="/worklist"]').click()
    clock = page.locator("form#clock-advance")
    clock.locator("input[name=amount]").fill("2")
    clock.locator("select[name=unit]").select_option("days")
    clock.get_by_role("button", name="Flyt uret frem").click()
    landed(page, r"/worklist\?done=")
    expect(page.locator("#clock")).to_contain_text("05.03.2025 kl. 08.00")
    expect(page.locator("[role=status]")).to_contain_text("05.03.2025 kl. 08.00")
    missed = rows(page, "Missed")
    assert (case, "phone_notification_due") in missed, missed
    assert (second, "inform_due") in missed, missed
    assert (first, "inform_due") not in missed + rows(page, "Overdue")  # done on Monday
    danish_only(page, "the worklist on Wednesday")
    walk.step("worklist-wednesday")
    row = page.locator(f'table[data-section="Missed"] tr[data-object="{case}"][data-task="phone_notification_due"]')
    row.locator("select[name=outcome]").select_option(index=0)
    outcome = row.locator("select[name=outcome]").input_value()
    row.locator("input[name=reason]").fill("Anmeldt telefonisk, ikke registreret")
    row.get_by_role("button", name="Registrér hvad der skete").click()
    landed(page, rf"/objects/{case}\?done=")
    expect(page.locator("[role=status]")).to_be_visible()
    walk.step("case-task-resolved")
    page.locator('nav a[href="/worklist"]').click()
    assert (case, "phone_notification_due") not in rows(page, "Missed")
    walk.step("worklist-after-resolving")
    walk.clean()

    # The database, through the engine.
    scenario_recorded(cli_db, person=person, case=case, new_person=new_person, first=first, second=second,
                      course=course, outcome=outcome)



def scenario_recorded(cli_db: str, *, person: str, case: str, new_person: str, first: str, second: str,
                      course: str, outcome: str) -> None:
    """What the whole staff scenario leaves in the database, read through the engine (the mouse's and the
    keyboard's, ``tests/test_keyboard_scenario.py``): the states, dates and timers, an audit entry of staff's for
    every step, and no person's reference anywhere in the audit log."""
    engine = open_engine(cli_db)
    try:
        shown = engine.show(case)
        assert (shown["state"], str(shown["onset"])[:10], str(shown["pcr_on"])[:10]) == (
            "confirmed", "2025-02-27", "2025-03-03")
        timers = {t["name"]: t for t in shown["timers"]}
        assert timers["phone_notification_due"]["status"] == "missed"
        assert timers["phone_notification_due"]["outcome"] == outcome
        assert engine.show(first)["risk"] == "high"
        assert engine.show(course)["indication"] == "pep"
        assert str(engine.show(course)["dose1_on"])[:10] == "2025-03-03"
        informed = {t["name"]: t for t in engine.show(first)["timers"]}["inform_due"]
        assert informed["status"] == "cancelled" and informed["satisfied_at"] is not None, informed  # done in time
        assert {t["name"]: t["status"] for t in engine.show(second)["timers"]}["inform_due"] == "missed"
        log = engine.audit()
        steps = [(e["object"], e["trigger"], e["actor"]) for e in log]
        for expected in [(person, "register", "staff:test"), (case, "open", "staff:test"),
                         (case, "confirm", "staff:test"), (case, "consent", "staff:test"),
                         (new_person, "register", "staff:test"), (first, "add", "staff:test"),
                         (second, "add", "staff:test"), (first, "inform", "staff:test"),
                         (first, "assess", "staff:test"), (course, "offer", "staff:test"),
                         (course, "dose", "staff:test"), (case, "correct", "staff:test")]:
            assert any(s[0] == expected[0] and s[1].startswith(expected[1]) and s[2] == expected[2]
                       for s in steps), (expected, [s for s in steps if s[0] == expected[0]])
        assert any(e["object"] == case and e["actor"] == "staff:test" and "resolve" in e["trigger"]
                   for e in log), [s for s in steps if s[0] == case]
        corrected = [e for e in log if e["object"] == case and e["trigger"] == "correct"]
        assert corrected and corrected[-1]["reason"] == "Patienten huskede forkert"
        assert corrected[-1]["changes"]["onset"] in ("2025-02-28", "2025-02-27")
        text = str(log)
        for ref in ("SCEN-0101", "SCEN-0202", "E2E-CONTACT", "E2E-CASE"):
            assert ref not in text, f"{ref} in the audit log"
    finally:
        engine.db.dispose()


# ---- 2. the auditor's desk -------------------------------------------------------------------------------------


def test_the_auditor_filters_by_a_danish_date_and_a_trigger_reads_an_entry_and_exports_for_excel(
        world: Served, new_context: Callable[[str], BrowserContext]) -> None:
    page = new_context("desktop").new_page()
    walk = Walk(page, "auditor-desk")
    log_in(page, "auditor:test")
    expect(page.locator("form#clock-advance")).to_have_count(0)
    page.locator('nav a[href="/audit"]').click()
    # The desk's own words are Danish; the entries' actors and reasons are the log's, verbatim (see the report:
    # a timer's reason is the engine's English, its deadline an ISO instant).
    assert page.locator("html").get_attribute("lang") == "da"
    expect(page.locator("h1")).to_have_text("Revisionslog")
    walk.step("desk")

    desk = page.locator("form#audit-filters")
    desk.locator("input[name=fra]").fill("03.03.2025")
    desk.locator("input[name=til]").fill("03.03.2025")
    desk.locator("select[name=trigger]").select_option("confirm")
    expect(desk.locator("select[name=trigger] option[value=confirm]")).to_have_text("bekræft")
    desk.get_by_role("button", name="Filtrér").click()
    landed(page, r"/audit\?.*fra=03\.03\.2025")
    entries = page.locator("#entries tr[data-seq]")
    expect(entries).to_have_count(1)
    expect(entries.first).to_contain_text(world.case)
    expect(entries.first).to_contain_text("mistænkt → bekræftet")
    expect(entries.first).to_contain_text("03.03.2025")
    walk.step("filtered")

    # The entry's detail: before and after.
    entries.first.locator("a.entry-link").click()
    landed(page, r"/audit/entries/\d+$")
    expect(page.locator("#trigger")).to_have_text("bekræft")
    expect(page.locator("#state-change")).to_have_text("mistænkt → bekræftet")
    pcr = page.locator('#changes tr[data-field="pcr_on"]')
    expect(pcr.locator(".before")).to_have_text("–")
    expect(pcr.locator(".after")).to_have_text("03.03.2025")
    expect(page.locator("#hash-check")).to_contain_text(re.compile(r"\w"))
    assert page.locator("#hash").inner_text() and page.locator("#prev-hash").inner_text()
    walk.step("entry")

    # The case as it was on Monday morning (its deadlines still open) and as it is on Wednesday (missed).
    shown = {}
    for at in ("03.03.2025 08.00", "05.03.2025"):
        page.goto("/audit/as-of")
        as_of = page.locator("form#audit-as-of")
        as_of.locator("input[name=object]").fill(world.case)
        as_of.locator("input[name=at]").fill(at)
        as_of.get_by_role("button").click()
        landed(page, r"/audit/as-of\?")
        expect(page.locator("[role=alert]")).to_have_count(0)
        expect(page.locator("main")).to_contain_text("bekræftet")
        shown[at] = page.locator("main").inner_text()
    assert shown["03.03.2025 08.00"] != shown["05.03.2025"]
    walk.step("as-of")

    # The filtered view for Danish Excel: UTF-8 with a BOM, semicolons.
    page.go_back()
    page.goto("/audit?fra=03.03.2025&til=05.03.2025")
    with page.expect_download() as download:
        page.locator('#exports a[data-format="excel-csv"]').click()
    raw = Path(download.value.path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), raw[:20]
    table = list(csv.reader(io.StringIO(raw[3:].decode("utf-8")), delimiter=";"))
    assert len(table[0]) > 3 and "trigger" in [h.lower() for h in table[0]], table[0]
    assert len(table) > 2
    assert "E2E-CASE" not in raw.decode("utf-8") and "E2E-CONTACT" not in raw.decode("utf-8")

    # The auditor is offered no action anywhere the desk leads.
    for path in ("/audit", f"/objects/{world.case}", "/objects/contact-1", "/worklist"):
        page.goto(path)
        assert page.locator("main form[method=post]").count() == 0, path
        assert page.locator("header form#clock-advance").count() == 0, path
    walk.step("case-read-only")
    walk.clean()


# ---- 3. at a phone's width -------------------------------------------------------------------------------------


def test_at_a_phone_width_the_scenarios_pages_fit_and_a_discard_waits_for_its_confirmation(
        world: Served, cli_db: str, new_context: Callable[[str], BrowserContext]) -> None:
    context = new_context("phone")
    page = context.new_page()
    walk = Walk(page, "phone")
    log_in(page, "staff:test")
    wider: list[str] = []
    for path in ("/worklist", "/list/cases", f"/objects/{world.case}", "/objects/contact-1", "/objects/course-1",
                 f"/objects/{world.case_person}", "/list/persons", "/new/case_open", "/audit"):
        page.goto(path)
        width = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        if width[0] > width[1]:
            wider.append(f"{path}: {overflow(page)} px too wide: {widest(page)}")
        walk.step(path.strip("/").replace("/", "-"))
    assert not wider, "\n".join(wider)

    # A second case, opened for a new person, then discarded: the consequence is said first.
    page.goto("/list/persons")
    page.locator("form#person_add input[name=ref]").fill("SCEN-PHONE")
    page.locator("form#person_add").get_by_role("button", name="Registrér person").click()
    landed(page, r"/objects/person-\d+\?done=")
    opening = page.locator("form#case_open")
    opening.locator("input[name=onset]").fill("02.03.2025")
    opening.get_by_label("Udslæt").check()
    opening.locator("input[name=criteria][value=msm]").check()
    opening.get_by_role("button", name="Opret tilfælde").click()
    landed(page, r"/objects/case-\d+\?done=")
    second = object_id(page)
    expect(page.locator("#state")).to_have_text("mistænkt")
    discard = page.locator("form#discard")
    expect(discard).to_contain_text("Et endeligt skridt")
    asked: list[str] = []

    def decline(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", decline)
    discard.get_by_role("button", name="Afkræft (negativ test)").click()
    expect(page.locator("#state")).to_have_text("mistænkt")
    assert asked and "afkræft" in asked[0].lower(), asked
    engine = open_engine(cli_db)
    try:
        assert engine.show(second)["state"] == "suspected"  # declined: nothing changed
    finally:
        engine.db.dispose()
    walk.step("discard-declined")

    # Accepted: discarded.
    page.once("dialog", lambda dialog: dialog.accept())
    discard.get_by_role("button", name="Afkræft (negativ test)").click()
    landed(page, rf"/objects/{second}\?done=")
    expect(page.locator("#state")).to_have_text("afkræftet")
    walk.step("discarded")
    walk.clean()
    engine = open_engine(cli_db)
    try:
        assert engine.show(second)["state"] == "discarded"
        assert engine.show(world.case)["state"] == "confirmed"
    finally:
        engine.db.dispose()
