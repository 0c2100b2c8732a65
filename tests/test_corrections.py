"""Corrections (issue 16 item 5): a case's onset, PCR date and clade (`case correct`), a person's birth date,
pregnancy and immunodeficiency (`person correct`), each with a reason, recomputing what follows, the audit entry
showing before and after; nothing deleted. Both backends."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from typer.testing import CliRunner

from engine.core import Engine
from tests.helpers import confirmed, contents, last_entry, person, suspected
from workflows.errors import GuardRefused, TriggerNotAllowed, UsageError
from workflows.registry import BY_OPERATION

pytestmark = pytest.mark.both_backends
D, T = date.fromisoformat, datetime.fromisoformat
STAFF = "staff:test"
runner = CliRunner()


def correct(engine: Engine, case_id: str, reason: str | None = "typed wrong", **data: object) -> dict:
    return engine.apply(case_id, "correct", data={**data, "reason": reason}, actor=STAFF, reason=reason)


def test_a_corrected_onset_keeps_the_old_value_in_the_audit_entry_and_cites_its_section(engine, db):
    case_id = confirmed(engine, person(engine))
    view = correct(engine, case_id, onset=D("2025-02-27"))
    assert (view["onset"], view["pcr_on"]) == ("2025-02-27", "2025-03-03")
    entry = last_entry(engine, case_id)
    assert (entry["trigger"], entry["rule"], entry["reason"]) == ("correct", "SST-mpox-7.1 §5.1", "typed wrong")
    assert entry["changes"] == {"onset": "2025-02-27"}
    assert entry["data"]["before"] == {"onset": "2025-03-01"}
    assert entry["data"]["rules"] == {"onset": "SST-mpox-7.1 §5.1"}
    assert engine.audit_replay()["matches"] is True
    # Nothing deleted: the opening's entry still says the first onset.
    assert engine.audit(entity=case_id)[0]["changes"]["onset"] == "2025-03-01"


def test_pcr_date_and_clade_are_corrected_once_confirmed_each_citing_its_section(engine):
    case_id = confirmed(engine, person(engine))
    correct(engine, case_id, pcr_on=D("2025-03-02"), clade="Ib")
    entry = last_entry(engine, case_id)
    assert (entry["rule"], entry["changes"]) == ("SST-mpox-7.1 §1.1", {"pcr_on": "2025-03-02", "clade": "Ib"})
    assert entry["data"]["before"] == {"pcr_on": "2025-03-03", "clade": None}
    correct(engine, case_id, clade="IIb")
    assert last_entry(engine, case_id)["rule"] == "SST-mpox-7.1 §2.4"
    # The notification deadlines run from the confirmation instant, not the sample date: they stand.
    assert {t["name"]: t["status"] for t in engine.show(case_id)["timers"]}["written_notification_due"] == "pending"


def test_a_suspected_case_has_no_pcr_date_to_correct(engine, db):
    case_id = suspected(engine, person(engine))
    before = contents(db)
    with pytest.raises(GuardRefused, match=r"not confirmed yet: it has no pcr_on"):
        correct(engine, case_id, pcr_on=D("2025-03-02"))
    assert correct(engine, case_id, onset=D("2025-02-28"))["onset"] == "2025-02-28"
    assert before != contents(db)


@pytest.mark.parametrize(("data", "message"), [
    ({}, r"nothing to correct: give the corrected onset, pcr_on or clade"),
    ({"onset": D("2025-03-01")}, r"onset already is recorded as given: nothing to correct"),
    ({"onset": D("2025-03-05")}, r"after today .* \(onset\)"),
    ({"onset": D("2025-03-04")}, r"PCR sample date 2025-03-03 would be before symptom onset 2025-03-04"),
])
def test_a_correction_that_changes_nothing_or_cannot_be_true_is_refused_naming_the_field(engine, db, clock, data,
                                                                                        message):
    case_id = confirmed(engine, person(engine))
    clock.set(T("2025-03-04T10:00:00+01:00"))
    before = contents(db)
    with pytest.raises(GuardRefused, match=message):
        correct(engine, case_id, **data)
    assert contents(db) == before


def test_a_reason_is_required_and_a_date_before_its_bound_is_malformed(engine, db):
    case_id = confirmed(engine, person(engine))
    before = contents(db)
    with pytest.raises(GuardRefused, match=r"needs its reason"):
        correct(engine, case_id, reason=None, onset=D("2025-02-28"))
    with pytest.raises(UsageError, match=r"onset 2019-01-01 is more than 5 years ago"):
        correct(engine, case_id, onset=D("2019-01-01"))
    assert contents(db) == before


def test_a_later_onset_never_drops_a_contact_exposed_before_it(engine, db):
    case_id = confirmed(engine, person(engine))
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    contact = engine.open("contact", "add", person=person(engine, "REF-C"), actor=STAFF,
                          data={"case": case_id, "exposed": D("2025-03-01"), "kind": "sexual"})["id"]
    before = contents(db)
    with pytest.raises(GuardRefused, match=rf"{contact} was exposed on 2025-03-01, before the corrected start"):
        correct(engine, case_id, onset=D("2025-03-02"))
    assert contents(db) == before


def test_no_correction_of_a_final_case(engine):
    case_id = suspected(engine, person(engine))
    engine.apply(case_id, "discard", actor=STAFF)
    with pytest.raises(TriggerNotAllowed):
        correct(engine, case_id, onset=D("2025-02-28"))


def test_an_onset_that_makes_a_child_case_arms_the_referral_task(engine, clock):
    case_id = confirmed(engine, person(engine, born=D("2007-03-01")), onset="2025-03-01")  # 18 that day
    assert engine.show(case_id)["child"] is False
    view = correct(engine, case_id, onset=D("2025-02-28"))  # 17 then
    assert view["child"] is True
    [task] = [t for t in view["timers"] if t["name"] == "paediatric_referral_due"]
    assert (task["status"], task["due_at"]) == ("pending", "2025-03-04T08:00:00+01:00")  # 24 hours from the correction
    view = correct(engine, case_id, onset=D("2025-03-01"))
    assert view["child"] is False
    assert [t["status"] for t in view["timers"] if t["name"] == "paediatric_referral_due"] == ["cancelled"]


# ---- a person's facts ---------------------------------------------------------------------------------------


def offer_prep(engine: Engine, person_id: str) -> str:
    return engine.open("course", "offer", person=person_id, actor=STAFF, data={
        "indication": "prep", "contact": None, "criteria": ["msm_sti_24w"], "assessed_by": None,
        "criterion_on": D("2025-02-20")})["id"]


def test_a_corrected_birth_date_replans_an_offered_course_and_never_shows_the_date(engine, db):
    person_id = person(engine, born=D("1980-05-05"))
    course = offer_prep(engine, person_id)
    assert engine.show(course)["doses_planned"] == 2
    engine.correct_person(person_id, changes={"born": D("1968-05-05")}, actor=STAFF, reason="CPR checked")
    assert engine.show(person_id)["born"] == "1968-05-05"
    view = engine.show(course)
    assert (view["doses_planned"], view["plan_reason"]) == (1, "born in 1970 or earlier: smallpox-vaccinated: one "
                                                               "dose is enough")
    entry = last_entry(engine, person_id)
    assert (entry["trigger"], entry["reason"], entry["rule"]) == ("correct", "CPR checked", "SST-mpox-7.1 §6.4")
    assert entry["data"]["born_changed"] is True
    course_entry = last_entry(engine, course)
    assert (course_entry["trigger"], course_entry["changes"]["doses_planned"]) == ("person_corrected", 1)
    assert course_entry["data"]["before"]["doses_planned"] == 2
    assert course_entry["reason"] == f"from {person_id}: correct"
    for e in engine.audit():
        assert "1968" not in str(e) and "1980-05-05" not in str(e)
    assert engine.audit_replay()["matches"] is True


def test_a_course_under_way_is_never_shortened_by_a_correction(engine, db, clock):
    person_id = person(engine, born=D("1980-05-05"))
    course = offer_prep(engine, person_id)
    engine.apply(course, "dose", data={"on": D("2025-03-03")}, actor=STAFF)
    before = contents(db)
    with pytest.raises(GuardRefused, match=rf"{course} is under way with a 2-dose plan and dose 1 was given"):
        engine.correct_person(person_id, changes={"born": D("1968-05-05")}, actor=STAFF, reason="CPR checked")
    assert contents(db) == before
    # Becoming immunocompromised keeps two doses: allowed, the plan's reason says why.
    engine.correct_person(person_id, changes={"immunocompromised": True}, actor=STAFF, reason="HIV, low CD4")
    assert engine.show(course)["plan_reason"].startswith("immunocompromised")
    entry = last_entry(engine, person_id)
    assert entry["data"]["before"] == {"immunocompromised": False}


def test_a_person_correction_needs_a_reason_and_a_correctable_fact(engine, db):
    person_id = person(engine)
    before = contents(db)
    with pytest.raises(UsageError, match=r"needs its reason"):
        engine.correct_person(person_id, changes={"pregnant": True}, actor=STAFF, reason=" ")
    with pytest.raises(UsageError, match=r"other facts change with `person update`"):
        engine.correct_person(person_id, changes={"previous_mpox": True}, actor=STAFF, reason="x")
    with pytest.raises(UsageError, match=r"already has these values"):
        engine.correct_person(person_id, changes={"pregnant": False}, actor=STAFF, reason="x")
    assert contents(db) == before


def test_an_immunodeficiency_correction_updates_a_confirmed_cases_antiviral_advice(engine):
    person_id = person(engine)
    case_id = confirmed(engine, person_id)
    assert engine.show(case_id)["antiviral_consider"] is None
    engine.correct_person(person_id, changes={"immunocompromised": True}, actor=STAFF, reason="known HIV")
    assert "immunodeficiency" in engine.show(case_id)["antiviral_consider"]
    assert last_entry(engine, case_id)["trigger"] == "person_corrected"


# ---- derived entry points -------------------------------------------------------------------------------------


def test_the_corrections_are_declared_operations_with_cli_api_and_form():
    from entry.cli import app
    from entry.web.operations import OPERATIONS as BODIES

    assert {"case correct", "person correct"} <= set(BY_OPERATION)
    assert {"case_correct", "person_correct"} <= {op.operation_id for op in BODIES}
    shown = runner.invoke(app, ["case", "correct", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert shown.exit_code == 0 and all(o in shown.output for o in ("--onset", "--pcr-on", "--clade", "--reason"))
    shown = runner.invoke(app, ["person", "correct", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert shown.exit_code == 0 and all(o in shown.output for o in ("--born", "--pregnant", "--immunocompromised"))
