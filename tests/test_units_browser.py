"""Issue 17 in the system's Chromium, in Danish, through the pages only: a lead of Region Hovedstaden assigns a
contact to a member of the unit from the contact's page; the member filters the worklist to "Mine" and finds it
there, with its unit and assignee; the lead then hands the contact over to Region Syddanmark, and it leaves the
member's worklist. At the end, the database as the engine reads it: the contact's unit and assignee, and an
audit entry for the assignment and for the transfer with the actor and the reason typed. axe-core runs on each page
visited; screenshots go to ``tests/artifacts/`` (ignored by git). The fixtures are the other browser tests'.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from engine import accounts
from engine.bootstrap import open_engine
from tests import test_accessibility as a11y
from tests import test_e2e_browser as e2e
from tests.conftest import PASSWORD
from tests.test_accessibility import blocking_violations
from tests.test_e2e_browser import ARTIFACTS, Served, log_in

playwright = e2e.playwright
browser = e2e.browser
served = e2e.served
new_context = a11y.new_context

pytestmark = pytest.mark.slow

HOV, SYD = "Region Hovedstaden", "Region Syddanmark"
LEAD, NURSE = "hov:lead", "hov:nurse"


@pytest.fixture
def regions(served: Served, cli_db: str) -> str:
    """Two regions under Danmark, a lead and a member of Hovedstaden; a confirmed case the lead opened (so
    Hovedstaden's) with a household contact; returns the contact's id."""
    engine = open_engine(cli_db)
    try:
        engine.add_unit(HOV, parent="Danmark", actor="admin:test")
        engine.add_unit(SYD, parent="Danmark", actor="admin:test")
        hashed = accounts.password_hash.hash(PASSWORD)
        engine.add_user(LEAD, "staff", actor="admin:test", password_hash=hashed, units=[f"{HOV}:lead"])
        engine.add_user(NURSE, "staff", actor="admin:test", password_hash=hashed, units=[HOV])
        person = engine.add_person(ref="UNIT-0101", actor=LEAD)["id"]
        other = engine.add_person(ref="UNIT-0202", actor=LEAD)["id"]
        case = engine.open("case", "open", person=person, actor=LEAD, data={
            "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
        engine.apply(case, "confirm", data={"pcr_on": date(2025, 3, 3)}, actor=LEAD)
        engine.apply(case, "consent", data={"tracing": True}, actor=LEAD)
        contact = engine.open("contact", "add", person=other, actor=LEAD, data={
            "case": case, "exposed": date(2025, 3, 2), "kind": "household"})
        assert contact["unit"] == "unit-2" and contact["assignee"] is None
        return str(contact["id"])
    finally:
        engine.db.dispose()


class Checked:
    """Pages checked by axe-core (problems kept for the end) and screenshotted in order."""

    def __init__(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        for old in ARTIFACTS.glob(f"{name}-*.png"):
            old.unlink()
        self.name, self.count, self.problems = name, 0, []

    def step(self, page: Page, label: str) -> None:
        self.count += 1
        self.problems += [f"{label} ({page.url}): axe {v}" for v in blocking_violations(page)]
        page.screenshot(path=ARTIFACTS / f"{self.name}-{self.count:02d}-{label}.png", full_page=True)


def worklist_objects(page: Page) -> set[str]:
    return {row.get_attribute("data-object") or "" for row in page.locator("table.worklist tr[data-object]").all()}


def test_a_lead_assigns_a_contact_the_member_finds_it_under_mine_and_the_lead_hands_it_over(
        served: Served, regions: str, cli_db: str, new_context: Callable[[str], BrowserContext]) -> None:
    contact = regions
    checked = Checked("units")

    # The lead assigns the contact to the member, from the contact's page.
    lead = new_context("desktop").new_page()
    log_in(lead, LEAD)
    lead.goto(f"/objects/{contact}")
    box = lead.locator("#owner")
    expect(box.locator('tr[data-owner="unit"] td')).to_have_text(f"Danmark › {HOV}")
    expect(box.locator('tr[data-owner="assignee"] td')).to_have_text("ikke tildelt")
    checked.step(lead, "lead-contact")
    assigning = lead.locator("form#owner-assign")
    assigning.get_by_label("Medlem").select_option(NURSE)
    assigning.get_by_label("Begrundelse").fill("Ida ringer i dag")
    assigning.get_by_role("button", name="Tildel", exact=True).click()
    expect(lead).to_have_url(re.compile(rf"/objects/{contact}\?done="))
    expect(lead.locator("[role=status]")).to_contain_text(f"{contact} er tildelt {NURSE}")
    expect(lead.locator('#owner tr[data-owner="assignee"] td')).to_have_text(NURSE)
    checked.step(lead, "lead-assigned")

    # The member filters the worklist to "Mine": the contact is there, with its unit and assignee.
    nurse = new_context("desktop").new_page()
    log_in(nurse, NURSE)
    nurse.locator("#worklist-view").get_by_label("Mine").check()
    nurse.locator("form.worklist-filters").get_by_role("button", name="Vis").click()
    expect(nurse).to_have_url(re.compile(r"/worklist\?.*view=mine"))
    expect(nurse.locator("#worklist-view").get_by_label("Mine")).to_be_checked()
    assert contact in worklist_objects(nurse)
    row = nurse.locator(f'table.worklist tr[data-object="{contact}"]').first
    expect(row.locator("td.unit")).to_have_text(HOV)
    expect(row.locator("td.assignee")).to_have_text(NURSE)
    checked.step(nurse, "member-mine")
    # The member's page of the contact: hers to give back, not to hand over (a lead's).
    nurse.goto(f"/objects/{contact}")
    expect(nurse.locator("form#owner-return")).to_be_visible()
    expect(nurse.locator("form#owner-transfer")).to_have_count(0)
    expect(nurse.locator("form#owner-assign")).to_have_count(0)
    checked.step(nurse, "member-contact")

    # The lead hands the contact over to Region Syddanmark, with a reason: it is no longer the unit's.
    lead.goto(f"/objects/{contact}")
    handing = lead.locator("form#owner-transfer")
    handing.get_by_label("Enhed").select_option(label=f"Danmark › {SYD}")
    handing.get_by_label("Begrundelse").fill("kontakten bor i Odense")
    handing.get_by_role("button", name="Overdrag", exact=True).click()
    expect(lead).to_have_url(re.compile(r"/worklist\?done="))
    expect(lead.locator("[role=status]")).to_contain_text(f"{contact} er overdraget til Danmark › {SYD}")
    assert contact not in worklist_objects(lead)
    checked.step(lead, "lead-handed-over")
    nurse.goto("/worklist?view=mine")
    assert contact not in worklist_objects(nurse)
    nurse.goto(f"/objects/{contact}")
    expect(nurse.locator("h1")).to_contain_text("hører til en anden enhed")
    expect(nurse.locator("form#break-glass")).to_be_visible()
    checked.step(nurse, "member-outside")
    assert not checked.problems, "\n".join(checked.problems)

    # The database, as the engine reads it: the contact's unit and assignee, and the two audited entries.
    engine = open_engine(cli_db)
    try:
        view = engine.show(contact)
        assert (view["unit"], view["assignee"], view["state"]) == ("unit-3", None, "exposed")
        entries = [e for e in engine.audit(entity=contact) if e["trigger"] in ("assign", "transfer")]
        nurse_id = next(u["id"] for u in engine.users() if u["name"] == NURSE)
        assert [(e["trigger"], e["actor"], e["reason"], e["data"]["unit"], e["data"]["assignee"])
                for e in entries] == [("assign", LEAD, "Ida ringer i dag", "unit-2", nurse_id),
                                      ("transfer", LEAD, "kontakten bor i Odense", "unit-3", None)]
        assert all(e["from"] == e["to"] == "exposed" for e in entries)
        assert engine.audit_verify()["intact"] is True
    finally:
        engine.db.dispose()
