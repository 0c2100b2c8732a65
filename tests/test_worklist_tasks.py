"""The worklist says what to do (issue 16 item 4): the suspected case's "chase the test result" task, a contact's
PEP assessment from registration (with its 4-day window), the rows' person, reference, case and last day, filters,
sort and paging, and the one search box. Both backends."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from engine.core import Engine
from scheduler.firing import advance_simulated_clock
from tests.helpers import confirmed, person, suspected
from workflows.errors import UsageError

pytestmark = pytest.mark.both_backends
D, T = date.fromisoformat, datetime.fromisoformat
STAFF = "staff:test"


def items(engine: Engine, object_id: str, within: timedelta | None = None) -> list[dict]:
    return [i for i in engine.worklist(within) if i["object"] == object_id]


def test_a_suspected_case_puts_chasing_its_test_result_on_the_worklist(engine, clock):
    person_id = person(engine, "REF-SUSP")
    case_id = suspected(engine, person_id)  # opened Monday 2025-03-03
    [item] = items(engine, case_id)
    assert (item["name"], item["task"], item["due_at"], item["last_day"]) == (
        "test_result_due", "chase the PCR test result of the suspected case", "2025-03-06T00:00:00+01:00",
        "2025-03-05")
    assert (item["person"], item["ref"], item["case"], item["rule"]) == (person_id, "REF-SUSP", case_id,
                                                                         "SST-mpox-7.1 §2.1")
    advance_simulated_clock(engine, T("2025-03-06T00:00:00+01:00"))
    [item] = items(engine, case_id)
    assert item["missed"] is True
    # The result arrives late: the confirmation resolves the missed task as done late.
    engine.apply(case_id, "confirm", data={"pcr_on": D("2025-03-03")}, actor=STAFF)
    chased = next(t for t in engine.show(case_id)["timers"] if t["name"] == "test_result_due")
    assert (chased["status"], chased["outcome"]) == ("missed", "done-late")
    assert "test_result_due" not in [i["name"] for i in items(engine, case_id)]


def test_a_discarded_case_needs_no_chasing_and_the_days_are_a_setting(engine, db, clock):
    case_id = suspected(engine, person(engine))
    engine.apply(case_id, "discard", actor=STAFF)
    assert items(engine, case_id) == []
    other = Engine(db, clock, type(engine.settings)(test_result_chase_days=5))
    later = suspected(other, person(other, "REF-2"))
    assert [i["last_day"] for i in items(other, later)] == ["2025-03-08"]


def contact_of_new_case(engine: Engine, exposed: str = "2025-03-02") -> tuple[str, str, str]:
    case_id = confirmed(engine, person(engine, "REF-CASE"))
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    person_id = person(engine, "REF-CONTACT")
    contact = engine.open("contact", "add", person=person_id, actor=STAFF,
                          data={"case": case_id, "exposed": D(exposed), "kind": "sexual"})["id"]
    return case_id, person_id, contact


def test_the_pep_assessment_is_on_the_worklist_from_registration_with_both_windows(engine):
    case_id, person_id, contact = contact_of_new_case(engine)
    # The page asks for what falls due within the next days; the PEP assessment (day 14) is there anyway.
    pep = [i for i in items(engine, contact, timedelta(days=2)) if i["name"] == "pep_assessment_due"]
    assert len(pep) == 1
    [item] = pep
    assert (item["due_at"], item["last_day"], item["pep_best_by"], item["pep_best_by_at"]) == (
        "2025-03-17T00:00:00+01:00", "2025-03-16", "2025-03-06", "2025-03-07T00:00:00+01:00")
    assert (item["case"], item["person"], item["ref"]) == (case_id, person_id, "REF-CONTACT")
    # One row per deadline: the windows' automatic timers are no rows of their own.
    names = [i["name"] for i in items(engine, contact)]
    assert sorted(names) == ["inform_due", "pep_assessment_due"]
    # After day 4 the row keeps its 14-day deadline, without the closed 4-day window.
    advance_simulated_clock(engine, T("2025-03-07T00:00:00+01:00"))
    [item] = [i for i in items(engine, contact) if i["name"] == "pep_assessment_due"]
    assert "pep_best_by" not in item and item["last_day"] == "2025-03-16"


def test_filters_sort_by_kind_and_paging(engine):
    case_id, _, contact = contact_of_new_case(engine)
    whole = engine.worklist()
    by_kind = engine.worklist(sort="kind")
    assert [i["object"].split("-")[0] for i in by_kind] == sorted(i["object"].split("-")[0] for i in whole)
    assert sorted(i["timer"] for i in by_kind) == sorted(i["timer"] for i in whole)
    found, after = [], None
    while True:
        page = engine.worklist_page(limit=1, after=after, sort="kind")
        found += page["items"]
        after = page["next"]
        if after is None:
            break
    assert found == by_kind
    assert [i["object"] for i in engine.worklist(kind="contact", task="pep_assessment_due")] == [contact]
    with pytest.raises(UsageError, match=r"sort 'name' is not a sort"):
        engine.worklist_page(sort="name")
    with pytest.raises(UsageError, match=r"after is not a cursor"):
        engine.worklist_page(after=engine.worklist_page(limit=1)["next"], sort="kind")


def test_search_by_reference_and_by_id(engine):
    case_id, person_id, contact = contact_of_new_case(engine)
    exact = engine.search("REF-CONTACT")
    assert [(r["id"], r["ref"], r["match"]) for r in exact] == [(person_id, "REF-CONTACT", "ref"),
                                                                (contact, "REF-CONTACT", "ref")]
    assert exact[1]["case"] == case_id
    prefix = {r["id"] for r in engine.search("REF-C")}
    assert {person_id, contact, case_id} <= prefix
    by_case = engine.search(case_id)
    assert [r["id"] for r in by_case] == [case_id, contact] and by_case[0]["ref"] == "REF-CASE"
    assert engine.search("case-999") == [] and engine.search("nobody") == []
    assert engine.search("REF-%") == []  # a wildcard is a character, not a pattern
    with pytest.raises(UsageError, match=r"query is empty"):
        engine.search("  ")
    with pytest.raises(UsageError, match=r"limit"):
        engine.search("REF", limit=0)
