"""Issue 14, item 2: a kind of object describes itself (``workflows.profile.Profile``): its CLI group and help, its
collection, its list's columns, what it belongs to and what it counts on the calendar; the entry points and the
engine's queries are made from those declarations, so changing one changes what users see."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest

from engine import Engine
from entry.cli import OPERATION_GROUPS
from entry.operations import COLLECTIONS, LISTABLE
from tests.helpers import confirmed, person
from tests.test_cli import add_person, cli, ok, open_confirmed
from workflows import registry
from workflows.profile import CalendarCount
from workflows.registry import CALENDAR, GROUPS, LISTS, PROFILES, WORKFLOWS, linked_to


def test_every_workflow_and_persons_have_a_profile_and_the_registry_derives_from_them() -> None:
    assert set(PROFILES) == {*WORKFLOWS, "person"}
    assert GROUPS == {"case": "case", "contact": "contact", "course": "vaccine", "person": "person"}
    assert LISTS == {"case": "Cases", "contact": "Contacts", "course": "Vaccinations", "person": "Persons"}
    assert COLLECTIONS == {"case": "cases", "contact": "contacts", "course": "courses", "person": "persons"}
    assert LISTABLE == {"cases": "case", "contacts": "contact", "courses": "course", "persons": "person"}
    # What belongs to what, read from the profiles: the object pages' related lists.
    assert linked_to("case") == {"contact": "case_id"}
    assert linked_to("contact") == {"course": "contact_id"}
    assert linked_to("person") == {"case": "person_id", "contact": "person_id", "course": "person_id"}
    assert linked_to("course") == {}
    assert {(kind, c.timer, c.key) for kind, c in CALENDAR} == {
        ("course", "dose2_due", "doses_due"), ("contact", "monitoring_ends", "monitoring_ends")}


def test_each_cli_group_is_helped_by_its_profile_summary() -> None:
    for profile in PROFILES.values():
        assert OPERATION_GROUPS[profile.group].info.help == profile.summary


@pytest.mark.parametrize("what", ["persons", "cases", "contacts", "courses"])
def test_a_list_shows_the_columns_its_profile_declares(cli_db: str, what: str) -> None:
    person = add_person(cli_db)
    case = open_confirmed(cli_db, person)
    ok(cli_db, "case", "consent", case, "--tracing", "yes", "--actor", "staff:test")
    ok(cli_db, "contact", "add", "--case", case, "--person", add_person(cli_db, "REF-0002"), "--exposed",
       "2025-03-01", "--kind", "household", "--actor", "staff:test")
    ok(cli_db, "vaccine", "offer", "--person", add_person(cli_db, "REF-0003"), "--indication", "prep", "--criteria",
       "msm_two_partners_12w", "--criterion-on", "2025-02-20", "--actor", "staff:test")
    header = cli(cli_db, "list", what).stdout.splitlines()[0].split()
    assert header == list(PROFILES[LISTABLE[what]].columns)


def test_the_related_objects_and_the_calendar_follow_the_profiles(engine: Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    case = confirmed(engine, person(engine), onset="2025-02-28", pcr_on="2025-03-01")
    engine.apply(case, "consent", data={"tracing": True}, actor="staff:test")
    other = person(engine, "REF-2")
    contact = engine.open("contact", "add", person=other, actor="staff:test", data={
        "case": case, "exposed": date(2025, 2, 28), "kind": "household"})["id"]
    assert [c["id"] for c in engine.related(case)["contact"]] == [contact]
    assert set(engine.related(other)) == {"case", "contact", "course"}
    assert [c["id"] for c in engine.related(other)["contact"]] == [contact]
    day = next(d for d in engine.calendar(8) if d["monitoring_ends"])
    assert day["date"] == "2025-03-21"  # exposed 28.02 + 21 days: the last day of monitoring (§5.5)

    # A profile that no longer says a contact belongs to its case: the case page lists no contacts.
    contact_profile = dataclasses.replace(PROFILES["contact"], belongs_to={"person": "person_id"})
    monkeypatch.setitem(PROFILES, "contact", contact_profile)
    assert engine.related(case) == {}
    # A calendar count declared on the contact's profile shows under its key, counted per day.
    informed = CalendarCount("inform_due", "informs_due", "contacts to inform", "to inform")
    monkeypatch.setattr(registry, "CALENDAR", (*CALENDAR, ("contact", informed)))
    monkeypatch.setattr("engine.queries.CALENDAR", registry.CALENDAR)
    due = next(t for t in engine.show(contact)["timers"] if t["name"] == "inform_due")
    counted = {d["date"]: d["informs_due"] for d in engine.calendar(8) if d["informs_due"]}
    assert counted == {due["due_at"][:10]: 1}
