"""The whole staff scenario of issue 16 with the keyboard alone (issue 16, item 8), in the system's Chromium.

The same steps as ``tests/test_staff_scenario.py``'s case worker (register a person by reference and open their
case, confirm it, the tracing consent, two contacts added from the case's page: a new person registered from the
contact form and a registered person picked by reference, inform, assess and offer PEP, dose 1, correct the onset,
move the simulated clock, resolve a missed task from the worklist), driven by ``page.keyboard`` only after the
log-in: Tab and Shift+Tab to move, Enter and Space to act, arrow keys in a closed select, typing. No click, no
fill, no address typed. Each control is reached by Tabbing (a bounded number of presses, so a control the keyboard
cannot reach fails by name) and shows where the focus is (an outline or a box shadow). The same outcomes are
checked as the mouse scenario's: the Danish states and messages on the pages and the database through the engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from engine.bootstrap import open_engine
from tests import test_accessibility as a11y
from tests import test_e2e_browser as e2e
from tests import test_web_pages as web
from tests.conftest import PASSWORD
from tests.test_e2e_browser import ARTIFACTS, Served, rows
from tests.test_staff_scenario import SENEST, danish_only, fact, landed, object_id, scenario_recorded, timer_row
from tests.test_web_pages import STAFF, ClientFor, confirmed_case, form, post

playwright = e2e.playwright
browser = e2e.browser
served = e2e.served
new_context = a11y.new_context
client_for = web.client_for  # the pages' tests' clients (English pages)

TABS = 200  # presses of Tab before a control counts as unreachable (the longest page, a case's, has ~90 stops)

FOCUS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return {where: "nothing", visible: false};
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
  const where = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.name ? `[name=${el.name}]` : "");
  return {where, visible: outline || (style.boxShadow && style.boxShadow !== "none")};
}"""


MATCHES = """(s) => {
  const [css, name] = s.split(" @ ");
  const el = document.activeElement;
  return !!el && el.matches(css) && (name === undefined || el.textContent.trim() === name);
}"""


def focused(page: Page, selector: str) -> bool:
    """The focus is on ``selector`` (CSS, then `` @ `` and the element's text when given)."""
    return bool(page.evaluate(MATCHES, selector))


def visible_focus(page: Page, what: str) -> None:
    """The focused element shows it: an outline or a box shadow (the stylesheet's :focus-visible)."""
    state = page.evaluate(FOCUS)
    assert state["visible"], f"{what}: the focus on {state['where']} is not visible (no outline, no box shadow)"


def tab_to(page: Page, selector: str, *, back: bool = False, limit: int = TABS) -> None:
    """Tab (Shift+Tab with ``back``) until the focus is on ``selector``, at most ``limit`` presses; its focus
    visible."""
    if focused(page, selector):
        visible_focus(page, selector)
        return
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        if focused(page, selector):
            visible_focus(page, selector)
            return
    where = page.evaluate(FOCUS)["where"]
    raise AssertionError(f"{page.url}: {selector} is not reached with {'Shift+' if back else ''}Tab within "
                         f"{limit} presses (the focus ends on {where})")


def type_into(page: Page, selector: str, text: str) -> None:
    """Tab to a text field, select what it holds, type ``text``."""
    tab_to(page, selector)
    page.keyboard.press("Control+a")
    page.keyboard.type(text)
    expect(page.locator(selector)).to_have_value(text)


def choose(page: Page, selector: str, value: str, limit: int = 20) -> None:
    """Tab to a closed select and move its choice with the arrow keys until ``value`` is chosen."""
    tab_to(page, selector)
    select = page.locator(selector)
    for key in ("ArrowDown", "ArrowUp"):
        for _ in range(limit):
            if select.input_value() == value:
                return
            before = select.input_value()
            page.keyboard.press(key)
            if select.input_value() == before:
                break  # the end of the list: the other way
    raise AssertionError(f"{selector}: {value!r} is not reached with the arrow keys")


def check(page: Page, selector: str) -> None:
    """Tab to a checkbox and tick it with Space."""
    tab_to(page, selector)
    page.keyboard.press("Space")
    expect(page.locator(selector)).to_be_checked()


def press(page: Page, selector: str, key: str = "Enter") -> None:
    """Tab to a button or link and press it (Enter, or Space for a button)."""
    tab_to(page, selector)
    page.keyboard.press(key)


def button(form: str, name: str) -> str:
    """A form's submit button by its text (as its accessible name)."""
    return f"form#{form} button[type=submit] @ {name}"


@pytest.mark.slow
def test_a_case_worker_works_the_whole_scenario_with_the_keyboard_alone(
        served: Served, cli_db: str, new_context: Callable[[str], BrowserContext]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_context("desktop").new_page()
    shots = 0

    def shot(label: str) -> None:
        nonlocal shots
        shots += 1
        page.screenshot(path=ARTIFACTS / f"keyboard-scenario-{shots:02d}-{label}.png", full_page=True)

    page.goto("/login")  # the one address typed: the application's
    page.keyboard.press("Tab")  # the first stop: the skip link, which moves the focus to the content
    assert focused(page, "a.skip")
    visible_focus(page, "the skip link")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "content"
    type_into(page, "form#login input[name=name]", "staff:test")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/worklist$"))
    expect(page.locator("#clock")).to_contain_text("Simuleret ur: 03.03.2025 kl. 08.00")

    # A new person, registered by reference from the persons' list; the case is opened from their page.
    press(page, 'nav a[href="/list/persons"]')
    expect(page).to_have_url(re.compile(r"/list/persons$"))
    type_into(page, "form#person_add input[name=ref]", "SCEN-0101")
    page.keyboard.press("Enter")  # Enter in a text field submits its form
    landed(page, r"/objects/person-\d+\?done=")
    person = object_id(page)
    expect(page.locator("#ref")).to_have_text("SCEN-0101")
    expect(page.locator("[role=status]")).to_contain_text("Registrér person")
    expect(page.locator("form#case_open input[name=person]")).to_have_value(person)
    type_into(page, "form#case_open input[name=onset]", "28.02.2025")  # wrong: corrected below
    check(page, "form#case_open input[name=symptoms][value=rash]")
    check(page, "form#case_open input[name=criteria][value=msm]")
    press(page, button("case_open", "Opret tilfælde"), "Space")
    landed(page, r"/objects/case-\d+\?done=")
    case = object_id(page)
    expect(page.locator("#state")).to_have_text("mistænkt")
    expect(page.locator("h1 #ref")).to_contain_text(f"{person} SCEN-0101")
    assert fact(page, "onset") == "28.02.2025"
    danish_only(page, "the suspected case")
    shot("case-suspected")

    # Confirmed by PCR, the date typed as Danes write it.
    type_into(page, "form#confirm input[name=pcr_on]", "03.03.2025")
    press(page, button("confirm", "Bekræft (positiv PCR)"))
    expect(page.locator("#state")).to_have_text("bekræftet")
    expect(page.locator("[role=status]")).to_contain_text("bekræftet")
    assert fact(page, "pcr_on") == "03.03.2025"
    expect(page.locator("#timeline")).to_contain_text("mistænkt → bekræftet")
    phone = timer_row(page, "elefonisk anmeldelse")
    assert re.search(r"senest 03\.03\.2025|i dag", phone), phone

    check(page, "form#consent input[name=tracing]")
    press(page, button("consent", "Samtykke til smitteopsporing"))
    expect(page.locator("[role=status]")).to_contain_text("Samtykke til smitteopsporing")
    expect(page.locator('#facts tr[data-fact="tracing_consent"]')).to_contain_text("ja")
    shot("case-consent")

    # Contact 1: a new person, registered from inside the contact form; the form comes back with the focus in it.
    expect(page.locator("form#contact_add input[name=case]")).to_have_value(case)
    type_into(page, "form#contact_add input[name=exposed]", "02.03.2025")
    choose(page, "form#contact_add select[name=kind]", "household")
    type_into(page, "form#contact_add input[name=new_person_ref]", "SCEN-0202")
    press(page, 'form#contact_add button[name=step][value=register_person]')
    expect(page.locator("[role=status]")).to_contain_text("personen er registreret som person-")
    add = page.locator("form#contact_add")
    new_person = add.locator("input[name=person]").input_value()
    assert re.fullmatch(r"person-\d+", new_person), new_person
    expect(add.locator("input[name=exposed]")).to_have_value("02.03.2025")  # what was typed is kept
    expect(add.locator("select[name=kind]")).to_have_value("household")
    focus = page.evaluate(FOCUS)["where"]
    assert focused(page, "form#contact_add input[name=person]"), (
        f"after registering the person the focus is on {focus}, not on the person picked in the contact's form")
    visible_focus(page, "the contact's form after the person was registered")
    shot("contact-person-registered")
    press(page, button("contact_add", "Registrér nær kontakt"))
    landed(page, r"/objects/contact-\d+\?done=")
    first = object_id(page)
    expect(page.locator("h1 #ref")).to_contain_text("SCEN-0202")
    pep = timer_row(page, "PEP")
    assert SENEST.search(pep), pep
    danish_only(page, "the first contact")

    # Contact 2: back to the case by its link; a registered person picked from the suggestions by the keyboard.
    press(page, f'main a[href="/objects/{case}"]')
    landed(page, rf"/objects/{case}$")
    picker = "form#contact_add input[name=person]"
    tab_to(page, picker)
    page.keyboard.type("E2E-CON")
    # The suggestions: buttons after the field (a datalist's popup is not reached by the keyboard in every browser).
    pick = f'form#contact_add ul.picks button[data-pick="{served.contact_person}"]'
    expect(page.locator(pick)).to_have_text(f"{served.contact_person} · E2E-CONTACT")
    press(page, pick)
    assert focused(page, picker), "the focus goes back to the field once a person is picked"
    expect(page.locator(picker)).to_have_value(served.contact_person)
    expect(page.locator("form#contact_add ul.picks")).to_be_hidden()
    type_into(page, "form#contact_add input[name=exposed]", "01.03.2025")
    choose(page, "form#contact_add select[name=kind]", "sexual")
    press(page, button("contact_add", "Registrér nær kontakt"))
    landed(page, r"/objects/contact-\d+\?done=")
    second = object_id(page)
    expect(page.locator("h1 #ref")).to_contain_text(f"{served.contact_person} E2E-CONTACT")
    press(page, f'main a[href="/objects/{case}"]')
    landed(page, rf"/objects/{case}$")
    contacts = page.locator("#contacts")
    expect(contacts.locator("tr", has_text=first)).to_contain_text(f"{new_person} SCEN-0202")
    expect(contacts.locator("tr", has_text=first)).to_contain_text("02.03.2025")
    expect(contacts.locator("tr", has_text=second)).to_contain_text(f"{served.contact_person} E2E-CONTACT")
    assert SENEST.search(contacts.locator("tr", has_text=first).inner_text())
    shot("case-two-contacts")

    # The worklist: the contacts' tasks.
    press(page, 'nav a[href="/worklist"]')
    landed(page, r"/worklist$")
    assert (case, "phone_notification_due") in rows(page, "Due today")
    coming = rows(page, "Next 7 days")
    assert {(first, "inform_due"), (first, "pep_assessment_due"), (second, "inform_due")} <= set(coming), coming
    inform = page.locator(f'tr[data-object="{first}"][data-task="inform_due"]')
    expect(inform).to_contain_text("SCEN-0202")
    expect(inform).to_contain_text("senest i morgen kl. 08.00")
    danish_only(page, "the worklist")

    # Contact 1 informed, assessed, offered PEP: its page from its worklist row.
    press(page, f'tr[data-object="{first}"][data-task="inform_due"] a[href="/objects/{first}"]')
    landed(page, rf"/objects/{first}$")
    press(page, button("inform", "Kontakt informeret"))
    expect(page.locator("[role=status]")).to_contain_text("Kontakt informeret")
    choose(page, "form#assess select[name=risk]", "high")
    type_into(page, "form#assess textarea[name=reason]", "Delt seng og håndklæder")
    press(page, button("assess", "Klinisk risikovurdering"))
    landed(page, rf"/objects/{first}\?done=")
    expect(page.locator("[role=status]")).to_contain_text("Klinisk risikovurdering")
    expect(page.locator('#facts tr[data-fact="risk"]')).to_contain_text("høj")
    offer = page.locator("form#vaccine_offer")
    expect(offer.locator("[name=indication]")).to_have_value("pep")
    expect(offer.locator("[name=contact]")).to_have_value(first)
    type_into(page, "form#vaccine_offer input[name=assessed_by]", "Læge på infektionsmedicinsk afdeling")
    type_into(page, "form#vaccine_offer textarea[name=assessment_note]", "Husstandskontakt, høj risiko (tabel 1)")
    press(page, button("vaccine_offer", "Tilbyd vaccination"))
    landed(page, r"/objects/course-\d+\?done=")
    course = object_id(page)
    expect(page.locator("h1 #ref")).to_contain_text("SCEN-0202")
    danish_only(page, "the PEP course")

    # Dose 1, with the PEP consent fields.
    type_into(page, "form#dose input[name=on]", "03.03.2025")
    check(page, "form#dose input[name=consent]")
    type_into(page, "form#dose textarea[name=indication_note]", "Husstandskontakt, høj risiko")
    type_into(page, "form#dose textarea[name=justification]", "PEP inden for 4 dage efter eksponering")
    press(page, button("dose", "Registrér dosis"))
    expect(page.locator("[role=status]")).to_contain_text("Registrér dosis")
    assert fact(page, "dose1_on") == "03.03.2025"
    second_dose = timer_row(page, "dosis")
    assert SENEST.search(second_dose) or "i dag" in second_dose, second_dose
    shot("course-dose-1")

    # The onset was wrong: the case found by the header's search, corrected with a reason.
    type_into(page, "#search-q", case)
    page.keyboard.press("Enter")
    landed(page, r"/search")
    press(page, f'main a[href="/objects/{case}"]')
    landed(page, rf"/objects/{case}$")
    type_into(page, "form#correct input[name=onset]", "27.02.2025")
    type_into(page, "form#correct textarea[name=reason]", "Patienten huskede forkert")
    press(page, button("correct", "Ret symptomdebut, PCR-dato eller klade"))
    expect(page.locator("[role=status]")).to_be_visible()
    assert fact(page, "onset") == "27.02.2025"
    expect(page.locator("#timeline")).to_contain_text("Patienten huskede forkert")

    # Two days on: the missed phone notification, resolved from the worklist.
    press(page, 'nav a[href="/worklist"]')
    landed(page, r"/worklist$")
    type_into(page, "form#clock-advance input[name=amount]", "2")
    choose(page, "form#clock-advance select[name=unit]", "days")
    press(page, 'form#clock-advance button[type=submit]')
    landed(page, r"/worklist\?done=")
    expect(page.locator("#clock")).to_contain_text("05.03.2025 kl. 08.00")
    expect(page.locator("[role=status]")).to_contain_text("05.03.2025 kl. 08.00")
    missed = rows(page, "Missed")
    assert (case, "phone_notification_due") in missed, missed
    assert (second, "inform_due") in missed, missed
    assert (first, "inform_due") not in missed + rows(page, "Overdue")
    danish_only(page, "the worklist on Wednesday")
    shot("worklist-wednesday")
    row = f'table[data-section="Missed"] tr[data-object="{case}"][data-task="phone_notification_due"]'
    tab_to(page, f"{row} select[name=outcome]")
    outcome = page.locator(f"{row} select[name=outcome]").input_value()  # the first outcome, as it stands
    type_into(page, f"{row} input[name=reason]", "Anmeldt telefonisk, ikke registreret")
    page.keyboard.press("Enter")
    landed(page, rf"/objects/{case}\?done=")
    expect(page.locator("[role=status]")).to_be_visible()
    press(page, 'nav a[href="/worklist"]')
    landed(page, r"/worklist$")
    assert (case, "phone_notification_due") not in rows(page, "Missed")
    shot("worklist-after-resolving")

    # The database, through the engine: as the mouse's scenario leaves it, with the persons the keyboard picked.
    scenario_recorded(cli_db, person=person, case=case, new_person=new_person, first=first, second=second,
                      course=course, outcome=outcome)
    engine = open_engine(cli_db)
    try:
        assert engine.show(first)["person"] == new_person
        assert engine.show(second)["person"] == served.contact_person
        assert engine.show(second)["exposure_kind"] == "sexual"
    finally:
        engine.db.dispose()


# ---- where the focus is when a form comes back (no browser: the pages' HTML) ----------------------------------


def autofocused(html: str) -> list[str]:
    """The elements of a page with ``autofocus``, as their opening tags."""
    return re.findall(r"<(?:input|select|textarea|button)\b[^>]*\bautofocus\b[^>]*>", html)


def test_a_form_that_comes_back_has_the_focus_where_the_keyboard_goes_on_and_a_plain_page_has_none(
        client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    confirmed_case(staff)
    assert post(staff, "/objects/case-1/consent", {"tracing": "on", "if_version": "2"}).status_code == 303
    assert autofocused(staff.get("/objects/case-1").text) == []  # a page as opened: the focus at its start

    # A person registered from inside the contact's form: the focus on the person picked.
    registered = post(staff, "/new/contact_add", {"case": "case-1", "exposed": "02.03.2025", "kind": "household",
                                                  "new_person_ref": "KB-1", "step": "register_person"})
    assert registered.status_code == 200, registered.text
    focus = autofocused(registered.text)
    assert len(focus) == 1 and 'name="person"' in focus[0] and 'value="person-2"' in focus[0], focus
    assert focus[0] in (form(registered.text, "contact_add") or "")

    # A field to correct: the focus on the first such field (the exposure date), nowhere else.
    refused = post(staff, "/new/contact_add", {"case": "case-1", "person": "person-2", "exposed": "2.13.2025",
                                               "kind": "household"})
    assert refused.status_code == 422, refused.text
    focus = autofocused(refused.text)
    assert len(focus) == 1 and 'name="exposed"' in focus[0] and 'aria-invalid="true"' in focus[0], focus

    # A final step asked again (without the script's dialog): the focus on its Yes button.
    suspected = post(staff, "/new/person_add", {"ref": "KB-2"})
    assert suspected.status_code == 303
    assert post(staff, "/new/case_open", {"person": "person-3", "onset": "2025-03-01", "symptoms": ["rash"],
                                          "criteria": ["msm"]}).status_code == 303
    asked = post(staff, "/objects/case-2/discard", {"if_version": "1"})
    assert asked.status_code == 200 and 'name="confirmed" value="1"' in asked.text, asked.text
    focus = autofocused(asked.text)
    assert len(focus) == 1 and focus[0].startswith('<button type="submit" class="danger"'), focus
