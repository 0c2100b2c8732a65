"""Issue 17 through the HTTP API and the pages: units, assignment, access by unit, break the glass, "my work".

The world: Danmark (the root) with Region Hovedstaden and Region Syddanmark (and its team Odense under it); a
nurse and a lead in each region; a case (confirmed, consenting, with a contact) opened by each region's nurse, so
each belongs to its region. The seeded test users (``staff:test``, ``admin:test``) are members of the root; the
auditor reads everything. A staff member of one region neither sees (lists, worklist, search, calendar, audit desk
and exports, the object's page and ``show``) nor acts on (403, the refusal audited) the other region's case;
breaking the glass leaves an audited ``break_glass`` entry on the case's chain. The access tests run on both
backends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from engine import accounts
from engine.bootstrap import open_engine
from engine.core import Engine
from persistence.database import Database
from tests.conftest import PASSWORD
from tests.helpers import contents
from tests.test_web_pages import error_box, form, main, text

ClientFor = Callable[..., Any]

HOV, SYD, ODENSE = "Region Hovedstaden", "Region Syddanmark", "Odense team"
HOV_NURSE, HOV_LEAD, SYD_NURSE, SYD_LEAD, SYD_OTHER = "hov:nurse", "hov:lead", "syd:nurse", "syd:lead", "syd:ole"
ROOT_STAFF, ADMIN, AUDITOR = "staff:test", "admin:test", "auditor:test"
HOV_REF, SYD_REF, HOV_CONTACT_REF, SYD_CONTACT_REF = "HOV-0101", "SYD-0202", "HOV-0303", "SYD-0404"


class World:
    """The ids of what ``world`` made."""

    hov_case = "case-1"
    hov_contact = "contact-1"
    syd_case = "case-2"
    syd_contact = "contact-2"
    hov_unit = "unit-2"
    syd_unit = "unit-3"
    odense_unit = "unit-4"


def _make_world(url: str) -> World:
    engine = open_engine(url)
    try:
        hashed = accounts.password_hash.hash(PASSWORD)
        assert engine.add_unit(HOV, parent="Danmark", actor=ADMIN)["id"] == World.hov_unit
        assert engine.add_unit(SYD, parent="Danmark", actor=ADMIN)["id"] == World.syd_unit
        assert engine.add_unit(ODENSE, parent=SYD, actor=ADMIN)["id"] == World.odense_unit
        for name, units in ((HOV_NURSE, [HOV]), (HOV_LEAD, [f"{HOV}:lead"]), (SYD_NURSE, [SYD]),
                            (SYD_LEAD, [f"{SYD}:lead"]), (SYD_OTHER, [SYD, ODENSE])):
            engine.add_user(name, "staff", actor=ADMIN, password_hash=hashed, units=units)
        for nurse, ref, contact_ref, case, contact in (
                (HOV_NURSE, HOV_REF, HOV_CONTACT_REF, World.hov_case, World.hov_contact),
                (SYD_NURSE, SYD_REF, SYD_CONTACT_REF, World.syd_case, World.syd_contact)):
            person = engine.add_person(ref=ref, actor=nurse)["id"]
            other = engine.add_person(ref=contact_ref, actor=nurse)["id"]
            opened = engine.open("case", "open", person=person, actor=nurse, data={
                "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})
            assert opened["id"] == case
            engine.apply(case, "confirm", data={"pcr_on": date(2025, 3, 3)}, actor=nurse)
            engine.apply(case, "consent", data={"tracing": True}, actor=nurse)
            added = engine.open("contact", "add", person=other, actor=nurse, data={
                "case": case, "exposed": date(2025, 3, 2), "kind": "household"})
            assert added["id"] == contact
        # a course in Syddanmark, for the calendar's counts
        person = engine.add_person(ref="SYD-0505", actor=SYD_NURSE)["id"]
        engine.open("course", "offer", person=person, actor=SYD_NURSE, data={
            "indication": "prep", "criteria": ["msm_two_partners_12w"], "criterion_on": date(2025, 2, 20)})
    finally:
        engine.db.dispose()
    return World()


@pytest.fixture
def world(web_app: Any, cli_db: str) -> World:
    return _make_world(cli_db)


def headers(client: Any) -> dict[str, str]:
    return {"X-CSRF-Token": client.csrf} if client.csrf else {}


def api_post(client: Any, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers=headers(client))


def post(client: Any, path: str, data: dict[str, Any]) -> Any:
    return client.post(path, data={**data, "csrf_token": client.csrf})


def audit_rows(db: Database, trigger: str) -> list[dict[str, Any]]:
    rows = contents(db)
    from persistence.models import Base

    columns = [c.name for c in Base.metadata.tables["audit_log"].columns]
    return [r for r in (dict(zip(columns, row, strict=True)) for row in rows["audit_log"]) if r["trigger"] == trigger]


def owner(db: Database, kind: str, pk: int) -> tuple[int, int | None]:
    """(unit_id, assignee_id) of an object, from its table."""
    from persistence.models import Base

    table = Base.metadata.tables[{"case": "cases", "contact": "contacts", "course": "courses"}[kind]]
    names = [c.name for c in table.columns]
    for row in contents(db)[table.name]:
        found = dict(zip(names, row, strict=True))
        if found["id"] == pk:
            return found["unit_id"], found["assignee_id"]
    raise AssertionError(f"no {kind}-{pk}")


def user_pk(engine: Engine, name: str) -> int:
    return int(next(u["id"] for u in engine.users() if u["name"] == name).split("-")[1])


def entries(auditor: Any, entity: str, trigger: str) -> list[dict[str, Any]]:
    """The audit entries of an object's chain with one trigger, as the auditor reads them through the API."""
    response = auditor.get("/api/audit", params={"entity": entity, "trigger": trigger})
    assert response.status_code == 200, response.text
    return list(response.json())


def objects_in(rows: list[dict[str, Any]]) -> set[str]:
    return {str(r.get("object") or r.get("id")) for r in rows}


# ---- access by unit: what a region's staff see ------------------------------------------------------------------


@pytest.mark.both_backends
def test_a_regions_staff_see_only_their_regions_work_through_the_api(world: World, client_for: ClientFor) -> None:
    hov, root, auditor = client_for(HOV_NURSE), client_for(ROOT_STAFF), client_for(AUDITOR)
    assert objects_in(hov.get("/api/list/cases").json()) == {world.hov_case}
    assert objects_in(hov.get("/api/list/contacts").json()) == {world.hov_contact}
    assert objects_in(hov.get("/api/list/courses").json()) == set()
    for reader in (root, auditor):
        assert objects_in(reader.get("/api/list/cases").json()) == {world.hov_case, world.syd_case}
        assert objects_in(reader.get("/api/list/courses").json()) == {"course-1"}
    # The worklist (whole, paged, and by unit), with each item's unit.
    due = hov.get("/api/due").json()
    assert {i["object"] for i in due} == {world.hov_case, world.hov_contact}
    assert {i["unit_name"] for i in due} == {HOV}
    assert {i["object"] for i in hov.get("/api/due", params={"limit": 50}).json()["items"]} == {
        world.hov_case, world.hov_contact}
    assert {i["object"] for i in root.get("/api/due").json()} >= {world.hov_case, world.syd_case, world.syd_contact}
    assert hov.get("/api/due", params={"unit": SYD}).json() == []  # another unit's: nothing of it is the user's
    assert {i["object"] for i in root.get("/api/due", params={"unit": world.syd_unit}).json()} == {
        world.syd_case, world.syd_contact}
    # The search: the other region's case is not found, by its id or by its person's reference.
    for query in (world.syd_case, SYD_REF):
        found = hov.post("/api/search", json={"q": query}).json()
        assert world.syd_case not in objects_in(found), (query, found)
        assert world.syd_case in objects_in(root.post("/api/search", json={"q": query}).json()), query
    assert world.hov_case in objects_in(hov.post("/api/search", json={"q": HOV_REF}).json())
    # The calendar counts the region's contacts' last days of monitoring only.
    def monitoring(client: Any) -> int:
        return sum(day.get("monitoring_ends", 0) for day in client.get("/api/calendar").json())
    assert monitoring(hov) == 1 and monitoring(root) == 2 and monitoring(auditor) == 2
    # Diagram counts and the state counts.
    assert hov.get("/api/diagram/case").json()["counts"]["confirmed"] == 1
    assert root.get("/api/diagram/case").json()["counts"]["confirmed"] == 2
    # The audit log and its export: the other region's case has no entry the nurse reads.
    assert hov.get("/api/audit", params={"entity": world.syd_case}).json() == []
    assert {e["object"] for e in hov.get("/api/audit").json()} & {world.syd_case, world.syd_contact} == set()
    assert len(auditor.get("/api/audit", params={"entity": world.syd_case}).json()) >= 3
    exported = [json.loads(line) for line in hov.get("/api/audit/export").text.splitlines()[1:]]
    assert exported and not [e for e in exported if (e["object_kind"], e["object_id"]) == ("case", 2)]
    assert [e for e in (json.loads(line) for line in auditor.get("/api/audit/export").text.splitlines()[1:])
            if (e["object_kind"], e["object_id"]) == ("case", 2)]
    # Showing the object: 403 outside_units, saying how to read it anyway; its timeline too.
    response = hov.get(f"/api/show/{world.syd_case}")
    assert response.status_code == 403
    error = response.json()
    assert error["error"] == "outside_units" and error["exit_code"] == 3
    assert f"POST /api/objects/{world.syd_case}/break-glass" in error["message"] and SYD in error["message"]
    assert hov.get(f"/api/show/{world.syd_contact}").json()["error"] == "outside_units"
    assert hov.get(f"/api/audit/timeline/{world.syd_case}").status_code == 403
    timer = next(i["timer"] for i in root.get("/api/due").json() if i["object"] == world.syd_case)
    assert hov.get(f"/api/show/{timer}").json()["error"] == "outside_units"
    assert hov.get(f"/api/show/{world.hov_case}").json()["unit"] == world.hov_unit
    for reader in (root, auditor):
        assert reader.get(f"/api/show/{world.syd_case}").json()["unit"] == world.syd_unit


@pytest.mark.both_backends
def test_a_regions_staff_cannot_act_on_another_regions_case_and_the_refusal_is_audited(
        world: World, client_for: ClientFor, db: Database) -> None:
    hov, auditor = client_for(HOV_NURSE), client_for(AUDITOR)
    before = contents(db)
    for path, body in ((f"/api/cases/{world.syd_case}/isolate", {"mode": "home"}),
                       (f"/api/contacts/{world.syd_contact}/inform", {}),
                       ("/api/assign", {"ids": [world.syd_case], "user": HOV_NURSE, "reason": "mine now"}),
                       ("/api/transfer", {"ids": [world.syd_case], "unit": HOV, "reason": "ours now"})):
        response = api_post(hov, path, body)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] in ("outside_units", "not_permitted"), (path, response.json())
    # A contact for the other region's case is refused too.
    response = api_post(hov, "/api/contacts", {"case": world.syd_case, "person": "person-1",
                                               "exposed": "2025-03-02", "kind": "household"})
    assert response.status_code == 403 and response.json()["error"] == "outside_units"
    after = contents(db)
    assert {t for t in before if before[t] != after[t]} <= {"audit_log", "users"}  # only the refusals
    refused = [e for e in auditor.get("/api/audit", params={"trigger": "refused", "actor": HOV_NURSE}).json()]
    assert len(refused) == 5
    assert auditor.get(f"/api/show/{world.syd_case}").json()["state"] == "confirmed"
    # Through the page's form: the same 403, nothing changed.
    page = post(hov, f"/objects/{world.syd_case}/isolate", {"mode": "home", "if_version": "3"})
    assert page.status_code == 403
    assert auditor.get(f"/api/show/{world.syd_case}").json()["state"] == "confirmed"
    # The root's staff act on it.
    assert api_post(client_for(ROOT_STAFF), f"/api/cases/{world.syd_case}/isolate",
                    {"mode": "home"}).status_code == 200


@pytest.mark.both_backends
def test_the_pages_show_a_region_only_its_own_work(world: World, client_for: ClientFor) -> None:
    hov, auditor = client_for(HOV_NURSE), client_for(AUDITOR)
    cases = hov.get("/list/cases").text
    assert f'/objects/{world.hov_case}"' in cases and f'/objects/{world.syd_case}"' not in cases
    worklist = hov.get("/worklist").text
    assert f'data-object="{world.hov_case}"' in worklist and f'data-object="{world.syd_case}"' not in worklist
    assert world.syd_case not in text(hov.post("/search", data={"q": SYD_REF}).text)
    assert world.syd_case not in text(hov.get("/audit").text)
    assert world.syd_case in text(auditor.get("/audit").text)
    assert f'/objects/{world.syd_case}"' in auditor.get("/list/cases").text
    # The other region's case page: 403, in Danish, whose it is, and the form to read it anyway.
    page = hov.get(f"/objects/{world.syd_case}")
    assert page.status_code == 403
    shown = text(page.text)
    assert f"{world.syd_case} hører til Danmark › {SYD}, uden for dine enheder ({HOV})" in shown
    glass = form(page.text, "break-glass")
    assert glass and f'action="/objects/{world.syd_case}/break-glass"' in glass
    assert "Begrundelse for at se sagen" in glass
    # The auditor reads it as it is, without a reason.
    assert auditor.get(f"/objects/{world.syd_case}").status_code == 200


# ---- breaking the glass ------------------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_breaking_the_glass_through_the_api_leaves_an_audit_entry_on_the_cases_chain(
        world: World, client_for: ClientFor) -> None:
    hov, auditor = client_for(HOV_NURSE), client_for(AUDITOR)
    assert api_post(hov, f"/api/objects/{world.syd_case}/break-glass", {"reason": ""}).status_code == 422
    assert api_post(hov, f"/api/objects/{world.syd_case}/break-glass", {"reason": "  "}).status_code == 422
    assert entries(auditor, world.syd_case, "break_glass") == []
    response = api_post(hov, f"/api/objects/{world.syd_case}/break-glass",
                        {"reason": "the patient moved to Hovedstaden"})
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["id"], view["unit"], view["state"]) == (world.syd_case, world.syd_unit, "confirmed")
    [entry] = entries(auditor, world.syd_case, "break_glass")
    assert (entry["actor"], entry["reason"], entry["from"], entry["to"]) == (
        HOV_NURSE, "the patient moved to Hovedstaden", "confirmed", "confirmed")
    assert entry["data"] == {"read": world.syd_case, "unit": world.syd_unit}
    assert auditor.get("/api/audit/verify").json()["intact"] is True
    # Reading one's own: shown, nothing recorded. Still no plain show of the other's.
    assert api_post(hov, f"/api/objects/{world.hov_case}/break-glass", {"reason": "x"}).status_code == 200
    assert entries(auditor, world.hov_case, "break_glass") == []
    assert hov.get(f"/api/show/{world.syd_case}").status_code == 403
    # An auditor reads everything, and changes nothing: the break-glass call is refused (audited).
    assert api_post(auditor, f"/api/objects/{world.syd_case}/break-glass", {"reason": "x"}).status_code == 403


@pytest.mark.both_backends
def test_breaking_the_glass_on_the_page_records_it_and_shows_the_case_read_only(
        world: World, client_for: ClientFor, db: Database) -> None:
    hov, auditor = client_for(HOV_NURSE), client_for(AUDITOR)
    before = contents(db)
    empty = post(hov, f"/objects/{world.syd_case}/break-glass", {"reason": " "})
    assert empty.status_code == 422
    assert "Begrundelse for at se sagen: angiv begrundelsen" in text(empty.text)
    assert contents(db) == before
    page = post(hov, f"/objects/{world.syd_case}/break-glass", {"reason": "akut henvendelse fra patienten"})
    assert page.status_code == 200
    shown = text(page.text)
    assert "Du læser case-2 uden for dine enheder" in shown and "registreret i revisionsloggen" in shown
    assert 'id="state">bekræftet</span>' in page.text
    assert f"Danmark › {SYD}" in shown and "ikke tildelt" in shown  # the responsibility box, read-only
    assert 'id="actions"' not in page.text and form(page.text, "owner-take") is None
    assert form(page.text, "owner-transfer") is None and 'action="/objects/case-2/' not in main(page.text)
    assert 'data-object' not in page.text or world.syd_contact in page.text  # its contact, read whole
    assert "læst uden for egne enheder" in shown  # the timeline has the reading
    [entry] = entries(auditor, world.syd_case, "break_glass")
    assert (entry["actor"], entry["reason"]) == (HOV_NURSE, "akut henvendelse fra patienten")
    # The reading is the user's only: their next look is a 403 again.
    assert hov.get(f"/objects/{world.syd_case}").status_code == 403


# ---- assignment and transfer -------------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_assignment_and_transfer_through_the_api_change_unit_and_assignee_and_leave_entries(
        world: World, client_for: ClientFor, db: Database) -> None:
    nurse, lead, auditor = client_for(HOV_NURSE), client_for(HOV_LEAD), client_for(AUDITOR)
    engine = open_engine(nurse.app.state.web.db.engine.url.render_as_string(hide_password=False))
    try:
        nurse_pk, lead_pk = user_pk(engine, HOV_NURSE), user_pk(engine, HOV_LEAD)
    finally:
        engine.db.dispose()
    # A member takes unassigned work for themselves ...
    done = api_post(nurse, "/api/assign", {"ids": [world.hov_case], "user": HOV_NURSE, "reason": "I call her"})
    assert done.status_code == 200, done.text
    assert owner(db, "case", 1) == (2, nurse_pk)
    # ... but deals out no one's: 403, the refusal audited, nothing changed.
    refused = api_post(nurse, "/api/assign", {"ids": [world.hov_contact], "user": HOV_LEAD, "reason": "yours"})
    assert refused.status_code == 403 and refused.json()["error"] == "not_permitted"
    assert owner(db, "contact", 1) == (2, None)
    assert api_post(nurse, "/api/transfer", {"ids": [world.hov_case], "unit": SYD, "reason": "x"}).status_code == 403
    # A lead deals out the unit's work, by a filter too (every unassigned contact of the unit).
    done = api_post(lead, "/api/assign", {"kind": "contact", "unassigned": True, "in_unit": HOV, "user": HOV_NURSE,
                                          "reason": "the nurse informs"})
    assert [d["id"] for d in done.json()] == [world.hov_contact]
    assert owner(db, "contact", 1) == (2, nurse_pk)
    # The nurse's own work: mine.
    mine = nurse.get("/api/due", params={"mine": True}).json()
    assert {i["object"] for i in mine} == {world.hov_case, world.hov_contact}
    assert {i["assignee_name"] for i in mine} == {HOV_NURSE}
    assert client_for(HOV_LEAD).get("/api/due", params={"mine": True}).json() == []
    # The nurse gives her contact back to the pool; the lead takes it.
    assert api_post(nurse, "/api/assign", {"ids": [world.hov_contact], "reason": "off sick tomorrow"}).json()[0][
        "assignee"] is None
    assert owner(db, "contact", 1) == (2, None)
    assert api_post(lead, "/api/assign", {"ids": [world.hov_contact], "user": HOV_LEAD, "reason": "I take it"}
                    ).status_code == 200
    assert owner(db, "contact", 1) == (2, lead_pk)
    # The lead hands the case over to Syddanmark: its unit changes, it is unassigned; the nurse no longer sees it.
    response = api_post(lead, "/api/transfer", {"ids": [world.hov_case], "unit": SYD, "reason": "she moved"})
    assert response.status_code == 200, response.text
    assert response.json() == [{"id": world.hov_case, "unit": world.syd_unit, "assignee": None,
                                "audit_seq": response.json()[0]["audit_seq"]}]
    assert owner(db, "case", 1) == (3, None)
    assert nurse.get(f"/api/show/{world.hov_case}").status_code == 403
    assert world.hov_case in {i["object"] for i in client_for(SYD_NURSE).get("/api/due").json()}
    # Every change an entry on the object's chain, the state unchanged.
    assigned = entries(auditor, world.hov_case, "assign")
    assert [(e["actor"], e["reason"], e["from"] == e["to"]) for e in assigned] == [(HOV_NURSE, "I call her", True)]
    [moved] = entries(auditor, world.hov_case, "transfer")
    assert (moved["actor"], moved["reason"], moved["data"]["unit"], moved["data"]["before"]["unit"]) == (
        HOV_LEAD, "she moved", world.syd_unit, world.hov_unit)
    assert [e["actor"] for e in entries(auditor, world.hov_contact, "assign")] == [HOV_LEAD, HOV_NURSE, HOV_LEAD]
    # Bad input: 4xx, nothing changed.
    before = contents(db)
    for body in ({"ids": [world.hov_contact], "user": HOV_NURSE},  # no reason
                 {"ids": [world.hov_contact], "user": "nobody", "reason": "x"},
                 {"ids": ["person-1"], "reason": "x"}, {"reason": "x"}, {"kind": "case", "reason": "x"},
                 {"ids": [world.hov_contact], "user": SYD_NURSE, "reason": "not a member"}):
        response = api_post(lead, "/api/assign", body)
        assert 400 <= response.status_code < 500, (body, response.text)
    assert api_post(lead, "/api/transfer", {"ids": [world.hov_contact], "reason": "x"}).status_code == 422
    after = contents(db)
    assert {t for t in before if before[t] != after[t]} <= {"audit_log", "users"}


@pytest.mark.both_backends
def test_the_owner_forms_on_the_object_page_assign_give_back_and_hand_over(
        world: World, client_for: ClientFor, db: Database) -> None:
    nurse, lead, auditor = client_for(HOV_NURSE), client_for(HOV_LEAD), client_for(AUDITOR)
    page = nurse.get(f"/objects/{world.hov_contact}").text
    shown = text(page)
    assert "Ansvar" in shown and f"Enhed Danmark › {HOV}" in shown and "Tildelt ikke tildelt" in shown
    # A member: take it; no dealing out, no handing over.
    assert form(page, "owner-take") and form(page, "owner-assign") is None and form(page, "owner-transfer") is None
    assert form(page, "owner-return") is None
    # No reason: 422, the message at the field, nothing changed.
    before = contents(db, reads=False)
    refused = post(nurse, f"/objects/{world.hov_contact}/owner", {"action": "take", "reason": ""})
    assert refused.status_code == 422 and "Begrundelse: angiv begrundelsen" in text(refused.text)
    assert contents(db, reads=False) == before
    taken = post(nurse, f"/objects/{world.hov_contact}/owner", {"action": "take", "reason": "jeg ringer"})
    assert taken.status_code == 303, taken.text
    page = nurse.get(taken.headers["location"]).text
    assert f"{world.hov_contact} er tildelt {HOV_NURSE}" in text(page)
    assert f"Tildelt {HOV_NURSE}" in text(page) and form(page, "owner-return") and form(page, "owner-take") is None
    # A member posting a lead's form: 403 on the page, the refusal audited, nothing changed.
    dealt = post(nurse, f"/objects/{world.hov_case}/owner", {"action": "assign", "user": HOV_LEAD, "reason": "x"})
    assert dealt.status_code == 403 and "ledere" in error_box(dealt.text)
    assert owner(db, "case", 1) == (2, None)
    # The lead: assign to a member of the unit (the members offered), give back, hand over.
    page = lead.get(f"/objects/{world.hov_case}").text
    assign = form(page, "owner-assign")
    assert assign and f'value="{HOV_NURSE}"' in assign and f'value="{SYD_NURSE}"' not in assign
    transfer = form(page, "owner-transfer")
    assert transfer and f'value="{world.syd_unit}"' in transfer and f'value="{world.hov_unit}"' not in transfer
    nobody = post(lead, f"/objects/{world.hov_case}/owner", {"action": "assign", "user": "", "reason": "x"})
    assert nobody.status_code == 422 and "Medlem: vælg, hvem der udfører opgaven" in text(nobody.text)
    assert owner(db, "case", 1) == (2, None)
    response = post(lead, f"/objects/{world.hov_case}/owner", {"action": "assign", "user": HOV_NURSE,
                                                                "reason": "din sag"})
    assert response.status_code == 303
    assert owner(db, "case", 1)[1] is not None
    response = post(lead, f"/objects/{world.hov_case}/owner", {"action": "return", "reason": "ferie"})
    assert response.status_code == 303 and owner(db, "case", 1) == (2, None)
    assert "givet tilbage" in text(lead.get(response.headers["location"]).text)
    no_reason = post(lead, f"/objects/{world.hov_case}/owner", {"action": "transfer", "unit": world.syd_unit})
    assert no_reason.status_code == 422 and owner(db, "case", 1) == (2, None)
    response = post(lead, f"/objects/{world.hov_case}/owner", {"action": "transfer", "unit": world.syd_unit,
                                                                "reason": "flyttet til Odense"})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/worklist?")  # no longer the lead's to read
    assert owner(db, "case", 1) == (3, None)
    assert "overdraget til Danmark › Region Syddanmark" in text(lead.get(response.headers["location"]).text)
    assert [e["reason"] for e in entries(auditor, world.hov_case, "assign")] == ["din sag", "ferie"]
    assert [e["reason"] for e in entries(auditor, world.hov_case, "transfer")] == ["flyttet til Odense"]
    # An auditor sees the box, and no form in it.
    page = auditor.get(f"/objects/{world.hov_contact}").text
    assert f"Tildelt {HOV_NURSE}" in text(page)
    assert not [f for f in ("owner-take", "owner-assign", "owner-return", "owner-transfer") if form(page, f)]


# ---- my work: the worklist's views -------------------------------------------------------------------------------


def worklist_objects(page: str) -> set[str]:
    return set(re.findall(r'<tr data-object="([^"]+)"', page))


def test_the_worklists_views_mine_my_unit_and_all(world: World, client_for: ClientFor) -> None:
    nurse, lead, ole = client_for(SYD_NURSE), client_for(SYD_LEAD), client_for(SYD_OTHER)
    assert api_post(lead, "/api/assign", {"ids": [world.syd_case], "user": SYD_NURSE, "reason": "din"}
                    ).status_code == 200
    # Everything the nurse may see (the default): the region's case and contact, with unit and assignee columns.
    page = nurse.get("/worklist").text
    assert worklist_objects(page) == {world.syd_case, world.syd_contact}
    assert "<th>Enhed</th>" in page and "<th>Tildelt</th>" in page
    row = re.search(rf'<tr data-object="{world.syd_case}".*?</tr>', page, re.S)
    assert row and SYD in row.group(0) and SYD_NURSE in row.group(0)
    switch = re.search(r'<fieldset class="views".*?</fieldset>', page, re.S)
    assert switch and all(w in switch.group(0) for w in ("Mine", "Min enhed", "Alt jeg må se"))
    assert re.search(r'value="all" checked', switch.group(0))
    # Mine: assigned to her, and the unassigned work of her unit.
    assert worklist_objects(nurse.get("/worklist", params={"view": "mine"}).text) == {
        world.syd_case, world.syd_contact}
    assert api_post(lead, "/api/assign", {"ids": [world.syd_contact], "user": SYD_LEAD, "reason": "min"}
                    ).status_code == 200
    mine = nurse.get("/worklist", params={"view": "mine"}).text
    assert worklist_objects(mine) == {world.syd_case} and re.search(r'value="mine" checked', mine)
    assert worklist_objects(lead.get("/worklist", params={"view": "mine"}).text) == {world.syd_contact}
    # My unit: one membership, that unit; several, a choice among them (the first by default).
    assert worklist_objects(nurse.get("/worklist", params={"view": "unit"}).text) == {
        world.syd_case, world.syd_contact}
    page = ole.get("/worklist", params={"view": "unit"}).text
    choice = re.search(r'<select name="unit" id="filter-unit">.*?</select>', page, re.S)
    assert choice and SYD in choice.group(0) and ODENSE in choice.group(0)
    assert worklist_objects(page) == {world.syd_case, world.syd_contact}
    assert worklist_objects(ole.get("/worklist", params={"view": "unit", "unit": world.odense_unit}).text) == set()
    assert ole.get("/worklist", params={"view": "bad"}).status_code == 422
    # The root's staff see both regions' work; an auditor reads the worklist too.
    assert {world.hov_case, world.syd_case} <= worklist_objects(client_for(ROOT_STAFF).get("/worklist").text)
    assert client_for(AUDITOR).get("/worklist").status_code == 200


# ---- units: the API and the admins' page ---------------------------------------------------------------------------


def test_units_members_and_placement_rules_through_the_api(world: World, client_for: ClientFor,
                                                           db: Database) -> None:
    admin, staff, auditor = client_for(ADMIN), client_for(SYD_NURSE), client_for(AUDITOR)
    units = staff.get("/api/units").json()
    assert [(u["name"], u["depth"]) for u in units] == [("Danmark", 0), (HOV, 1), (SYD, 1), (ODENSE, 2)]
    assert {(m["name"], m["role"]) for m in units[2]["members"]} == {(SYD_NURSE, "member"), (SYD_LEAD, "lead"),
                                                                    (SYD_OTHER, "member")}
    # Admins only: staff are refused before their body is read (403, audited).
    before = contents(db)
    assert api_post(staff, "/api/units", {"name": "Vejle team", "parent": SYD}).status_code == 403
    assert api_post(staff, f"/api/units/{world.syd_unit}/members", {"user": SYD_NURSE, "role": "lead"}
                    ).status_code == 403
    assert api_post(staff, "/api/units/rules/contact", {"rule": "creator"}).status_code == 403
    after = contents(db)
    assert {t for t in before if before[t] != after[t]} <= {"audit_log", "users"}
    made = api_post(admin, "/api/units", {"name": "Vejle team", "parent": world.syd_unit, "reason": "new team"})
    assert made.status_code == 201, made.text
    assert (made.json()["id"], made.json()["path"]) == ("unit-5", f"Danmark › {SYD} › Vejle team")
    assert api_post(admin, "/api/units", {"name": "vejle TEAM", "parent": SYD}).status_code == 409
    assert api_post(admin, "/api/units", {"name": "X", "parent": "Nowhere"}).status_code == 404
    assert api_post(admin, "/api/units", {"name": "unit-9", "parent": SYD}).status_code == 422
    # Members: join, change role, leave (their work there back to the pool, audited).
    joined = api_post(admin, "/api/units/unit-5/members", {"user": SYD_NURSE, "reason": "helps out"})
    assert joined.status_code == 200 and joined.json()["role"] == "member"
    assert api_post(admin, "/api/units/Vejle team/members", {"user": SYD_NURSE, "role": "lead"}).json()[
        "role"] == "lead"
    assert api_post(admin, "/api/units/unit-5/members", {"user": SYD_NURSE, "role": "lead"}).status_code == 409
    assert api_post(admin, "/api/units/unit-5/members", {"user": "nobody"}).status_code == 404
    assert api_post(admin, "/api/units/unit-5/members", {"user": SYD_NURSE, "role": "boss"}).status_code == 422
    assert api_post(admin, "/api/transfer", {"ids": [world.syd_contact], "unit": "unit-5", "user": SYD_NURSE,
                                             "reason": "Vejle calls"}).status_code == 200
    left = api_post(admin, f"/api/units/unit-5/members/{SYD_NURSE}/remove", {"reason": "back home"})
    assert left.status_code == 200, left.text
    assert left.json()["returned"] == [world.syd_contact]
    assert owner(db, "contact", 2) == (5, None)
    assert api_post(admin, f"/api/units/unit-5/members/{SYD_NURSE}/remove", {}).status_code == 409
    only = api_post(admin, f"/api/units/{world.hov_unit}/members/{HOV_NURSE}/remove", {})
    assert only.status_code == 409 and "only unit" in only.json()["message"]
    users = {e["data"].get("unit") for e in auditor.get("/api/audit", params={"actor": ADMIN}).json()
             if e["trigger"] in ("join", "member_role", "leave")}
    assert users == {"unit-5"}
    # A new user through the API: in the units given (several units now: none given is refused).
    made = api_post(admin, "/api/users", {"name": "api:nurse", "role": "staff", "units": [f"{ODENSE}:lead", HOV]})
    assert made.status_code == 201, made.text
    roles = {u["name"]: {m["name"]: m["role"] for m in u["members"]} for u in admin.get("/api/units").json()}
    assert roles[ODENSE]["api:nurse"] == "lead" and roles[HOV]["api:nurse"] == "member"
    assert api_post(admin, "/api/users", {"name": "api:none", "role": "staff"}).status_code == 422
    assert api_post(admin, "/api/users", {"name": "api:none", "role": "staff", "units": ["Mars"]}).status_code == 404
    # Placement rules: read by all, set by admins; a new contact of the rule's unit, round-robin to its member.
    rules = {r["kind"]: r for r in staff.get("/api/units/rules").json()}
    assert (rules["case"]["rule"], rules["contact"]["rule"], rules["course"]["rule"]) == ("creator", "parent",
                                                                                           "parent")
    assert api_post(admin, "/api/units/rules/contact", {"rule": "unit"}).status_code == 422  # which unit?
    assert api_post(admin, "/api/units/rules/contact", {"rule": "parent", "unit": SYD}).status_code == 422
    assert api_post(admin, "/api/units/rules/person", {"rule": "parent"}).status_code == 422
    rule = api_post(admin, "/api/units/rules/contact", {"rule": "unit", "unit": ODENSE, "round_robin": True,
                                                         "reason": "Odense traces"})
    assert rule.status_code == 200 and rule.json() == {"kind": "contact", "rule": "unit", "unit": world.odense_unit,
                                                       "unit_name": ODENSE, "round_robin": True}
    person = api_post(staff, "/api/persons", {"ref": "SYD-0606"}).json()["id"]
    contact = api_post(staff, "/api/contacts", {"case": world.syd_case, "person": person, "exposed": "2025-03-02",
                                                "kind": "household"}).json()
    assert contact["unit"] == world.odense_unit and contact["assignee"] is not None  # syd:ole, Odense's member


def test_the_units_page_shows_the_tree_and_its_forms_change_it(world: World, client_for: ClientFor,
                                                               db: Database) -> None:
    admin, staff = client_for(ADMIN), client_for(HOV_LEAD)
    page = admin.get("/units")
    assert page.status_code == 200
    tree = re.search(r'<ul class="unit-tree" id="units">.*?\n</ul>', page.text, re.S)
    assert tree
    depths = re.findall(r'<li data-unit="(unit-\d+)" data-depth="(\d+)"', tree.group(0))
    assert depths == [("unit-1", "0"), ("unit-2", "1"), ("unit-3", "1"), ("unit-4", "2")]
    assert re.search(rf'data-member="{re.escape(HOV_LEAD)}" data-role="lead">{re.escape(HOV_LEAD)} '
                     r'<span class="muted">\(leder\)', tree.group(0))
    shown = text(page.text)
    assert "Enheder og deres medlemmer" in shown and "Hvor nye opgaver placeres" in shown
    for form_id in ("units-unit_add", "units-member", "units-remove", "units-rule-case", "units-rule-contact",
                    "units-rule-course"):
        assert form(page.text, form_id), form_id
    assert '<a href="/units">Enheder</a>' in page.text  # the admins' menu
    # Staff: no page (403, audited), no menu entry.
    refused = staff.get("/units")
    assert refused.status_code == 403 and '<a href="/units">' not in refused.text
    # A new unit, a member, a lead, a membership ended, a rule: each a redirect with what was done.
    def done(response: Any) -> str:
        assert response.status_code == 303, text(response.text)
        return text(admin.get(response.headers["location"]).text)
    assert "enheden Danmark › Region Hovedstaden › Hvidovre vaccination er oprettet" in done(post(
        admin, "/units", {"action": "unit_add", "name": "Hvidovre vaccination", "parent": world.hov_unit,
                          "reason": "ny klinik"}))
    assert f"{HOV_NURSE} er leder i Hvidovre vaccination" in done(post(
        admin, "/units", {"action": "member", "unit": "unit-5", "user": HOV_NURSE, "role": "lead"}))
    assert f"{HOV_NURSE} er fjernet fra Hvidovre vaccination" in done(post(
        admin, "/units", {"action": "remove", "unit": "unit-5", "user": HOV_NURSE, "reason": "tilbage"}))
    shown = done(post(admin, "/units", {"action": "rule", "kind": "course", "rule": "unit", "unit": "unit-5",
                                        "round_robin": "on", "reason": "klinikken vaccinerer"}))
    assert "placeringsregel for Vaccinationer gemt" in shown
    assert "en enhed valgt her: Hvidovre vaccination" in shown
    # A refusal re-renders the page with the message in Danish and the values typed; nothing changes.
    before = contents(db)
    again = post(admin, "/units", {"action": "unit_add", "name": "Hvidovre vaccination", "parent": "unit-1"})
    assert again.status_code == 409
    assert "der findes allerede en enhed med navnet Hvidovre vaccination" in error_box(again.text)
    assert 'value="Hvidovre vaccination"' in (form(again.text, "units-unit_add") or "")
    only = post(admin, "/units", {"action": "remove", "unit": world.hov_unit, "user": HOV_NURSE})
    assert only.status_code == 409 and "den eneste enhed for hov:nurse" in error_box(only.text)
    no_unit = post(admin, "/units", {"action": "rule", "kind": "case", "rule": "unit", "unit": ""})
    assert no_unit.status_code == 422 and "angiv den med Enhed" in error_box(no_unit.text)
    assert contents(db) == before
    assert post(staff, "/units", {"action": "unit_add", "name": "Mine", "parent": "unit-1"}).status_code == 403


def test_the_users_page_shows_each_users_units_and_adds_a_user_to_units(world: World, client_for: ClientFor,
                                                                        db: Database) -> None:
    admin = client_for(ADMIN)
    page = admin.get("/users").text
    row = re.search(rf'<tr data-user="{re.escape(SYD_OTHER)}">.*?</tr>', page, re.S)
    assert row and f'data-unit="{world.syd_unit}">{SYD}</div>' in row.group(0)
    assert f'data-unit="{world.odense_unit}">{ODENSE}</div>' in row.group(0)
    lead = re.search(rf'<tr data-user="{re.escape(HOV_LEAD)}">.*?</tr>', page, re.S)
    assert lead and "(leder)" in lead.group(0)
    adding = form(page, "user-add")
    assert adding and '<select name="units" multiple' in adding and f'value="{world.odense_unit}"' in adding
    # Several units now: a new user's units are chosen, never guessed.
    refused = post(admin, "/users", {"action": "add", "name": "ny:nurse", "role": "staff",
                                     "password": PASSWORD})
    assert refused.status_code == 422 and "hvilken enhed den nye bruger arbejder i" in error_box(refused.text)
    added = admin.post("/users", data={"action": "add", "name": "ny:lead", "role": "staff", "password": PASSWORD,
                                       "units": [world.hov_unit, world.odense_unit], "unit_role": "lead",
                                       "csrf_token": admin.csrf})
    assert added.status_code == 303, text(added.text)
    units = {u["name"]: {m["name"]: m["role"] for m in u["members"]} for u in admin.get("/api/units").json()}
    assert units[HOV]["ny:lead"] == "lead" and units[ODENSE]["ny:lead"] == "lead" and "ny:lead" not in units[SYD]
    newcomer = client_for("ny:lead")
    assert {i["unit_name"] for i in newcomer.get("/api/due").json()} == {HOV}
