"""The desk a case worker works a shift at (issue 16 items 3, 4, 5): persons by their reference (the search box,
its results as you type, the person picker, a new person from the contact form, a failed add back on the case
page), the worklist in the order a shift works it (sections, rows, filters, paging, the fired deadlines named),
and confirmation before a final step. The pages are read in English (the Danish ones are tests/test_i18n.py's);
both backends, on the simulated clock at START (03.03.2025 08.00).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from entry.web import pages
from persistence.database import Database
from tests import test_e2e_browser as e2e
from tests import test_web_pages as web
from tests.helpers import contents
from tests.test_e2e_browser import Served, log_in
from tests.test_web_pages import (
    ADMIN,
    AUDITOR,
    STAFF,
    ClientFor,
    confirmed_case,
    done_of,
    error_box,
    form,
    post,
    text,
    value_of,
    worklist_rows,
)

Client = Any
# The fixtures of the pages' tests (English pages, the database) and of the browser tests (Chromium, uvicorn).
client_for, db = web.client_for, web.db
playwright, browser, served, context, page = e2e.playwright, e2e.browser, e2e.served, e2e.context, e2e.page


def audit_text(database: Database) -> str:
    """Everything the audit log holds, as one text (its entries, data, changes and reasons)."""
    return json.dumps(contents(database)["audit_log"], default=str)


def traced_case(staff: Client) -> None:
    """case-1 (person-1, REF-1) confirmed, its consent to tracing recorded (version 3): it takes contacts."""
    confirmed_case(staff)
    assert post(staff, "/objects/case-1/consent", {"tracing": "on", "if_version": "2"}).status_code == 303


def contact_of_case(staff: Client) -> None:
    """case-1 confirmed (person-1, REF-1) and a contact contact-1 of person-2 (REF-22)."""
    traced_case(staff)
    assert post(staff, "/new/person_add", {"ref": "REF-22"}).status_code == 303
    response = post(staff, "/new/contact_add", {"case": "case-1", "person": "person-2", "exposed": "02.03.2025",
                                                 "kind": "sexual"})
    assert response.headers["location"].startswith("/objects/contact-1?"), response.text


# ---- the search box ------------------------------------------------------------------------------------------


def test_the_search_box_is_on_every_page_and_finds_persons_and_their_objects_by_reference(
        client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    contact_of_case(staff)
    post(staff, "/new/person_add", {"ref": "REF-23"})
    for path in ("/worklist", "/objects/case-1", "/list/persons", "/calendar", "/audit"):
        page = staff.get(path).text
        box = re.search(r'<form method="post" action="/search" role="search" id="search".*?</form>', page, re.S)
        assert box is not None, path
        assert '<label for="search-q">Search</label>' in box.group(0) and 'name="q"' in box.group(0)

    # Posted: the reference (it may be a CPR number) is never in a URL; GET only shows the box.
    assert "REF-2" not in staff.get("/search").text.split("<main>")[1]
    page = staff.post("/search", data={"q": "REF-2"})
    assert "REF-2" not in str(page.url)
    assert page.status_code == 200
    found = re.findall(r'<li data-id="([^"]+)" data-kind="([^"]+)">', page.text)
    assert ("person-2", "person") in found and ("contact-1", "contact") in found and ("person-3", "person") in found
    assert ("person-1", "person") not in found  # REF-1 does not begin with REF-2
    assert "Results for “REF-2”: 3" in text(page.text)
    contact = re.search(r'<li data-id="contact-1".*?</li>', page.text, re.S)
    assert contact is not None and 'href="/objects/case-1"' in contact.group(0) and "REF-22" in contact.group(0)

    by_id = re.findall(r'<li data-id="([^"]+)"', staff.post("/search", data={"q": "case-1"}).text)
    assert by_id[:2] == ["case-1", "contact-1"]
    assert "Nothing found" in text(staff.post("/search", data={"q": "NOBODY"}).text)

    # As you type: the same results as JSON, for the script.
    results = staff.post("/api/search", json={"q": "REF-22"}).json()
    assert {(r["id"], r["ref"]) for r in results} == {("person-2", "REF-22"), ("contact-1", "REF-22")}
    assert staff.post("/api/search", json={"q": ""}).status_code == 422
    assert client_for().post("/api/search", json={"q": "REF"}).status_code == 401
    assert staff.get("/api/search", params={"q": "REF-22"}).status_code == 405  # never in a URL

    # The references are on the pages staff read, never in the audit log.
    assert "REF-22" not in audit_text(db) and "REF-1" not in audit_text(db)


def test_the_reference_shows_beside_every_person_on_the_pages(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    contact_of_case(staff)
    case = staff.get("/objects/case-1").text
    assert re.search(r'<h1>case-1 <span class="muted title-note" id="ref">person-1 <span class="ref">REF-1</span>',
                     case)
    contacts = re.search(r'<table id="contacts">.*?</table>', case, re.S)
    assert contacts is not None and '<a href="/objects/person-2">person-2</a> <span class="ref">REF-22</span>' in \
        contacts.group(0)
    assert '<span class="ref" id="ref">REF-22</span>' in staff.get("/objects/person-2").text
    listing = staff.get("/list/contacts").text
    assert '<span class="ref">REF-22</span>' in listing
    person = staff.get("/objects/person-2").text
    related = re.search(r'<table class="related">.*?</table>', person, re.S)
    assert related is not None and '<span class="ref">REF-22</span>' in related.group(0)


# ---- the person picker, a new person from the contact form ---------------------------------------------------


def test_the_person_picker_takes_a_reference_and_says_at_the_field_when_it_names_nobody(
        client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    traced_case(staff)
    post(staff, "/new/person_add", {"ref": "REF-22"})
    post(staff, "/new/person_add", {"ref": "REF-23"})
    picker = form(staff.get("/objects/case-1").text, "contact_add")
    assert picker is not None
    assert re.search(r'<input type="text" class="person-picker" id="contact_add-person" name="person"[^>]*'
                     r'list="contact_add-person-list"', picker)
    assert '<datalist id="contact_add-person-list"></datalist>' in picker

    before = contents(db, reads=False)
    fields = {"case": "case-1", "exposed": "02.03.2025", "kind": "sexual"}
    for typed, message in (("REF-2", "no person has exactly that reference. Did you mean REF-22 (person-2), "
                                     "REF-23 (person-3)?"),
                           ("NOBODY", "no person is registered with that reference"),
                           ("person-99", "no person person-99 is registered")):
        response = post(staff, "/new/contact_add", {**fields, "person": typed})
        assert response.status_code == 422
        assert "<h1>case-1" in response.text  # the case's page, not a bare /new/contact_add page
        again = form(response.text, "contact_add")
        assert again is not None and 'class="action failed"' in again
        error = re.search(r'<div class="field-error" id="contact_add-person-error">([^<]+)</div>', again)
        assert error is not None and message in error.group(1).replace("&#39;", "'"), again
        assert value_of(again, "person") == typed and value_of(again, "exposed") == "02.03.2025"
        assert contents(db, reads=False) == before

    response = post(staff, "/new/contact_add", {**fields, "person": "REF-23"})
    assert response.status_code == 303 and response.headers["location"].startswith("/objects/contact-1?")
    assert "person-3" in text(staff.get("/objects/contact-1").text)
    assert "REF-23" not in audit_text(db)


def test_a_refused_contact_add_comes_back_on_the_case_page_with_the_values_typed(
        client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    traced_case(staff)
    post(staff, "/new/person_add", {"ref": "REF-22"})
    before = contents(db, reads=False)
    # An exposure long before the onset: outside the infectious period, the engine refuses (§5.1).
    response = post(staff, "/new/contact_add", {"case": "case-1", "person": "REF-22", "exposed": "01.01.2025",
                                                 "kind": "household"})
    assert response.status_code in (409, 422)
    assert "<h1>case-1" in response.text and "Nothing was changed." in error_box(response.text)
    again = form(response.text, "contact_add")
    assert again is not None and 'class="action failed"' in again
    assert value_of(again, "exposed") == "01.01.2025" and value_of(again, "person") == "person-2"
    assert re.search(r'<option value="household" selected>', again)
    assert contents(db, reads=False) == before


def test_a_new_person_is_registered_from_the_contact_form_then_the_contact_added(
        client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    traced_case(staff)
    fields = {"case": "case-1", "exposed": "02.03.2025", "kind": "sexual", "new_person_ref": "NEW-77"}
    adding = form(staff.get("/objects/case-1").text, "contact_add")
    assert adding is not None and 'name="new_person_ref"' in adding
    assert '<button type="submit" name="step" value="register_person" formnovalidate>' in adding

    # Both at once would leave the person registered if the contact were refused: refused, nothing saved.
    before = contents(db, reads=False)
    response = post(staff, "/new/contact_add", fields)
    assert response.status_code == 422 and "<h1>case-1" in response.text
    again = form(response.text, "contact_add") or ""
    assert "the person is not registered yet. Press “Register the person” first" in again
    assert value_of(again, "new_person_ref") == "NEW-77"
    assert contents(db, reads=False) == before

    # The button registers the person and brings the form back, the person picked and the values kept.
    response = post(staff, "/new/contact_add", {**fields, "step": "register_person"})
    assert response.status_code == 200
    assert "Done: person registered as person-2" in response.text
    again = form(response.text, "contact_add") or ""
    assert value_of(again, "person") == "person-2" and value_of(again, "exposed") == "02.03.2025"
    assert staff.get("/api/show/person-2").json()["ref"] == "NEW-77"
    assert contents(db, reads=False)["contacts"] == before["contacts"]  # no contact yet

    # Registered already: said at the field, nothing more registered.
    registered = contents(db, reads=False)
    response = post(staff, "/new/contact_add", {**fields, "step": "register_person"})
    assert response.status_code == 409
    assert "registered already as person-2" in (form(response.text, "contact_add") or "")
    assert contents(db, reads=False) == registered

    response = post(staff, "/new/contact_add", {**fields, "person": "person-2", "new_person_ref": ""})
    assert response.status_code == 303 and response.headers["location"].startswith("/objects/contact-1?")
    assert "NEW-77" not in audit_text(db)


# ---- final steps: confirmed first, with their consequence ----------------------------------------------------


def test_a_final_step_asks_for_confirmation_with_its_consequence_and_changes_nothing_until_confirmed(
        client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    post(staff, "/new/person_add", {"ref": "REF-1"})
    post(staff, "/new/case_open", {"person": "person-1", "onset": "2025-03-01", "symptoms": ["rash"],
                                   "criteria": ["msm"]})
    page = staff.get("/objects/case-1").text
    discard = form(page, "discard")
    assert discard is not None and 'data-final="The case is discarded (not mpox)' in discard
    confirm = form(page, "confirm")
    assert confirm is not None and "data-final" not in confirm  # not a final step

    before = contents(db, reads=False)
    response = post(staff, "/objects/case-1/discard", {"if_version": "1", "reason": "PCR negative"})
    assert response.status_code == 200
    asked = form(response.text, "discard")
    assert asked is not None and 'class="action confirming"' in asked
    box = re.search(r'<div class="confirm" role="alert" id="discard-confirm">(.*?)</div>', asked, re.S)
    assert box is not None and "all its open deadlines are cancelled" in box.group(1)
    assert "This cannot be undone" in box.group(1)
    assert value_of(asked, "confirmed") == "1" and ">PCR negative</textarea>" in asked
    assert re.search(r'id="state">suspected<', response.text)
    assert contents(db, reads=False) == before

    response = post(staff, "/objects/case-1/discard", {"if_version": "1", "reason": "PCR negative",
                                                       "confirmed": "1"})
    assert done_of(response) == "Discard (negative test): discarded"
    assert staff.get("/api/show/case-1").json()["state"] == "discarded"


def test_death_asks_first_and_the_engine_still_refuses_an_auditor(client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    confirmed_case(staff)
    before = contents(db, reads=False)
    response = post(staff, "/objects/case-1/die", {"if_version": "2", "on": "03.03.2025"})
    assert response.status_code == 200
    assert "recorded as deceased" in (form(response.text, "die") or "")
    assert contents(db, reads=False) == before
    auditor = client_for(AUDITOR)
    assert post(auditor, "/objects/case-1/die", {"if_version": "2", "on": "03.03.2025"}).status_code == 403


def test_final_steps_come_from_the_workflows_final_states() -> None:
    ops = pages.BY_NAME
    assert pages.final_consequence(ops["case discard"], "suspected")
    assert pages.final_consequence(ops["case die"], "isolated")
    assert pages.final_consequence(ops["vaccine decline"], "offered")
    assert pages.final_consequence(ops["vaccine dose"], "dose2_due")  # the last dose completes the course
    assert pages.final_consequence(ops["vaccine dose"], "offered") is None  # the first dose may or may not
    assert pages.final_consequence(ops["case confirm"], "suspected") is None
    assert pages.final_consequence(ops["case heal"], "isolated") is None


def test_corrections_are_on_the_case_and_person_pages_with_their_required_reason(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    confirmed_case(staff)
    correct = form(staff.get("/objects/case-1").text, "correct")
    assert correct is not None and 'action="/objects/case-1/correct"' in correct
    assert re.search(r'<textarea id="correct-reason" name="reason"[^>]*\brequired\b', correct)
    response = post(staff, "/objects/case-1/correct", {"onset": "28.02.2025", "if_version": "2"})
    # The reason is declared required (the rules always refuse a correction without it): refused at its field.
    assert response.status_code == 422 and "correcting" in error_box(response.text).lower()
    assert re.search(r'<div class="field-error" id="correct-reason-error">Reason: must be filled in</div>',
                     response.text)
    response = post(staff, "/objects/case-1/correct", {"onset": "28.02.2025", "if_version": "2",
                                                       "reason": "onset was misread"})
    assert response.status_code == 303
    assert staff.get("/api/show/case-1").json()["onset"] == "2025-02-28"
    person = form(staff.get("/objects/person-1").text, "correct")
    assert person is not None and 'action="/objects/person-1/correct"' in person and 'name="reason"' in person


# ---- the worklist --------------------------------------------------------------------------------------------


def sections_in_order(page: str) -> list[str]:
    return re.findall(r'<h2 data-section="([^"]+)">', page)


def test_the_worklist_is_in_shift_order_with_the_reference_case_and_pep_window(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    contact_of_case(staff)
    page = staff.get("/worklist").text
    assert sections_in_order(page) == ["Overdue", "Due today", "Next 7 days", "Missed"]
    assert re.search(r'<h2 data-section="Next 7 days">Coming ', page)
    rows = worklist_rows(page)
    phone = next(r for o, t, r in rows["Due today"] if t == "phone_notification_due")
    assert '<a href="/objects/person-1">person-1</a> <span class="ref">REF-1</span>' in phone
    assert "9 h 0 min left" in phone and "by today at 17.00" in phone
    pep = [r for rows_ in rows.values() for o, t, r in rows_ if o == "contact-1" and t == "pep_assessment_due"]
    assert pep, rows
    assert '<span class="ref">REF-22</span>' in pep[0] and 'href="/objects/case-1">case-1</a>' in pep[0]
    # The 4-day PEP window from the exposure on 02.03: its last day is 06.03.
    assert re.search(r'PEP best \(4 days\): <time datetime="[^"]+" title="[^"]+">by 06\.03\.2025</time>', pep[0])


def test_the_worklist_filters_by_task_and_kind_and_its_more_link_keeps_them(
        client_for: ClientFor, monkeypatch: pytest.MonkeyPatch) -> None:
    staff = client_for(STAFF)
    contact_of_case(staff)
    tasks = lambda page: [(o, t) for rows in worklist_rows(page).values() for o, t, _ in rows]  # noqa: E731
    everything = tasks(staff.get("/worklist").text)
    assert {o.split("-")[0] for o, _ in everything} == {"case", "contact"}
    only_contacts = tasks(staff.get("/worklist", params={"kind": "contact"}).text)
    assert only_contacts and {o for o, _ in only_contacts} == {"contact-1"}
    phone = tasks(staff.get("/worklist", params={"task": "phone_notification_due"}).text)
    assert phone == [("case-1", "phone_notification_due")]
    by_kind = tasks(staff.get("/worklist", params={"sort": "kind"}).text)
    assert sorted(by_kind) == sorted(everything)
    page = staff.get("/worklist", params={"task": "phone_notification_due"}).text
    assert re.search(r'<option value="phone_notification_due" selected>', page)
    assert staff.get("/worklist", params={"task": "no_such_timer"}).status_code == 422

    monkeypatch.setattr(pages, "WORKLIST_PAGE", 1)
    page = staff.get("/worklist", params={"kind": "case", "sort": "kind"}).text
    more = re.search(r'<a href="([^"]+)" rel="next">', page)
    assert more is not None
    link = more.group(1).replace("&amp;", "&")
    assert "kind=case" in link and "sort=kind" in link and "after=" in link
    second = staff.get(link).text
    assert {o for o, _ in tasks(second)} == {"case-1"} and tasks(second) != tasks(page)


def test_the_flash_after_a_clock_step_names_the_deadlines_that_fired(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    confirmed_case(staff)
    response = post(staff, "/clock/advance", {"amount": "1", "unit": "days", "next": "/worklist"})
    done = done_of(response)
    assert done.startswith("clock moved to 04.03.2025 kl. 08.00: ")
    assert re.search(r"\d+ deadlines? fired: .*\(case-1\)", done), done
    assert "phone" in done  # the phone notification's deadline, by its name
    response = post(staff, "/clock/advance", {"amount": "1", "unit": "hours", "next": "/worklist"})
    assert done_of(response).endswith("no deadline fired") or "fired" in done_of(response)


def test_an_admin_sees_the_desk_too(client_for: ClientFor) -> None:
    admin = client_for(ADMIN)
    assert admin.post("/search", data={"q": "x"}).status_code == 200


# ---- in the browser: results as you type, the confirmation dialog ---------------------------------------------


@pytest.mark.slow
def test_search_as_you_type_and_the_final_steps_dialog_in_the_browser(page: Page, served: Served) -> None:
    log_in(page, STAFF)
    box = page.get_by_role("searchbox", name="Search")
    box.press_sequentially("E2E-C", delay=30)
    suggestions = page.locator("#search-suggestions")
    expect(suggestions).to_be_visible()
    expect(suggestions.get_by_role("link", name=re.compile(r"E2E-CONTACT"))).to_have_count(1)
    expect(suggestions.get_by_role("link", name=re.compile(rf"^{served.case} · E2E-CASE"))).to_have_count(1)
    box.press("Enter")  # the form's own submit: the whole results page
    expect(page).to_have_url(re.compile(r"/search$"))  # posted: the typed reference is not in the URL
    expect(page.locator("#search-results li")).to_have_count(3)

    page.goto(f"/objects/{served.case}")
    messages: list[str] = []
    discard = page.locator("form#discard")
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.dismiss()))
    discard.get_by_role("button", name="Discard (negative test)").click()
    expect(page.locator("#state")).to_have_text("suspected")
    assert messages and "The case is discarded" in messages[0]
    page.once("dialog", lambda dialog: dialog.accept())
    discard.get_by_role("button", name="Discard (negative test)").click()
    expect(page.locator("#state")).to_have_text("discarded")
