"""Issue 12, the vaccination course read again against the Danish text (§6, §6.1, §6.2, §6.2.1-2, §6.3, §6.4):
doses counted over the person (a declined course's dose, a dose elsewhere), PrEP never for a child under 12 or a
pregnant or breastfeeding person, PEP after a named assessment (a low-risk contact only at risk of severe disease,
with the assessor's reasons), the §6.1 look-backs, the special reason on days 5-14, an offered PEP course that
follows the contact's last exposure, and the late-entry grace after the window closes. Each at its boundary, on
both backends; and the CLI (exit 3, the section on stderr) and the HTTP API (409, ``rule``) refusing.

Where our old digest differed from the Danish text (RULES.md before issue 12), the Danish text decides; each such
test says so.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from engine.core import Engine
from persistence.database import Database
from scheduler.firing import advance_simulated_clock
from tests.helpers import contents, last_entry, person, tasks_of
from tests.test_cli import add_person, doc, ok, refused
from tests.test_courses import (
    CONSENT,
    SECOND,
    STAFF,
    D,
    T,
    contact,
    course_row,
    dose,
    fired_on,
    local,
    pending,
    pep,
    prep,
    timer_of,
    traced_case,
)
from tests.test_http_api import check_error, done, post, snapshot
from workflows.course import PEP_WINDOW_ENDED
from workflows.errors import GuardRefused, RuleRefused, UsageError

S6, S6_1, S6_2, S6_2_1, S6_2_2, S6_3, S6_4 = (
    f"SST-mpox-7.1 {s}" for s in ("§6", "§6.1", "§6.2", "§6.2.1", "§6.2.2", "§6.3", "§6.4"))
SPECIAL = "household contact reached only on day 6; immunocompromised partner at home"


def update(engine: Engine, person_id: str, **changes: Any) -> None:
    """``person update`` (pregnancy, breastfeeding and doses elsewhere come and go)."""
    engine.update_person(person_id, changes=changes, actor=STAFF)


def offer(engine: Engine, person_id: str, **data: Any) -> dict[str, Any]:
    return engine.open("course", "offer", person=person_id, actor=STAFF, data={
        "contact": None, "criteria": [], "assessed_by": None, **data})


def exposed_contact(engine: Engine, exposed: str, kind: str = "sexual", **flags: Any) -> tuple[str, str]:
    """(person, contact): a person of their own exposed on ``exposed`` to a confirmed case (the clock at noon that
    day); ``flags`` are the person's."""
    engine.clock.set(max(engine.clock.now(), local(exposed, 12)))  # type: ignore[attr-defined]
    case_id = traced_case(engine, onset=str(D(exposed) - timedelta(days=2)), pcr_on=exposed)
    p = person(engine, f"CONTACT-{exposed}-{kind}", **flags)
    return p, contact(engine, case_id, p, exposed, kind)


# ---- 1. no more than two doses, counted over the person (§6.3); dose 2 after the real previous one (§6.4) -------


def test_a_dose_after_a_declined_course_is_the_persons_dose_2_and_waits_28_days_across_dst(engine, db, clock):
    """Issue 12 item 1: dose 1 in a declined course and a new course dosed the next day made three doses, two a day
    apart. Now the new course gives the person's dose 2, at least 28 days after the real previous dose (2025-03-10
    + 28 days = 2025-04-07, after the change to summer time), and then the person has had both."""
    p = person(engine, "P")
    clock.set(local("2025-03-10", 9))
    first = prep(engine, p)["id"]
    dose(engine, first, "2025-03-10")
    engine.apply(first, "decline", actor=STAFF, reason="moved abroad")

    second = prep(engine, p)
    assert (second["state"], second["doses_planned"], second["prior_doses"], second["prior_last_dose_on"]) == (
        "offered", 2, 1, "2025-03-10")
    assert "1 dose given before (on 2025-03-10): this course gives the person's dose 2" in second["plan_reason"]
    row = course_row(db, second["id"])
    assert (row.prior_doses, row.prior_last_dose_on) == (1, D("2025-03-10"))

    clock.set(local("2025-03-11", 9))  # the day after: refused (the old engine gave it)
    before = contents(db)
    with pytest.raises(GuardRefused, match="at least 28 days after the person's previous dose, course-1 "
                                           r"\(2025-03-10\): not before 2025-04-07") as refused_dose:
        dose(engine, second["id"], "2025-03-11")
    assert refused_dose.value.rule == S6_4
    clock.set(local("2025-04-06", 23, 30))  # day 27
    with pytest.raises(GuardRefused, match="not before 2025-04-07"):
        dose(engine, second["id"], "2025-04-06")
    assert contents(db) == before

    clock.set(local("2025-04-07", 0, 30))  # day 28, in summer time
    given = dose(engine, second["id"], "2025-04-07")
    assert (given["state"], given["dose1_on"], given["dose2_on"]) == ("completed", None, "2025-04-07")
    assert pending(engine, second["id"]) == {}  # no dose2_due: this was it
    assert tasks_of(engine, second["id"]) == []
    entry = last_entry(engine, second["id"])
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == ("dose", "offered", "completed", S6_4)

    # Two doses over the person: no third, whatever is offered.
    before = contents(db)
    with pytest.raises(GuardRefused, match="no more than 2 doses") as refused_offer:
        prep(engine, p)
    assert refused_offer.value.rule == S6_3
    with pytest.raises(GuardRefused, match="no more than 2 doses, no boosters") as refused_third:
        dose(engine, second["id"], "2025-05-07")
    assert refused_third.value.rule == S6_3
    assert contents(db) == before


def test_two_doses_in_courses_that_were_not_completed_refuse_a_new_offer(engine, db, clock):
    """§6.3 counts every dose, whatever became of its course: a declined course's dose 1 and a dose recorded as
    given elsewhere are two, and no new course is offered."""
    p = person(engine, "P")
    course_id = prep(engine, p)["id"]
    dose(engine, course_id, "2025-03-03")
    engine.apply(course_id, "decline", actor=STAFF)
    update(engine, p, doses_elsewhere=1, last_dose_on=D("2025-02-01"))
    before = contents(db)
    with pytest.raises(GuardRefused, match=r"has had 2 doses already \(2025-02-01 \(given elsewhere\), 2025-03-03 "
                                           r"\(course-1\)\): no more than 2 doses") as refused_offer:
        prep(engine, p)
    assert refused_offer.value.rule == S6_3
    assert contents(db) == before


@pytest.mark.parametrize(("flags", "says"), [
    ({"doses_elsewhere": 2, "last_dose_on": D("2025-01-20")}, "has had 2 doses already"),
    ({"doses_elsewhere": 1, "last_dose_on": D("2025-01-20"), "born": D("1960-05-05")}, "the plan is one dose"),
    ({"doses_elsewhere": 1, "last_dose_on": D("2025-01-20"), "smallpox_vaccinated": True}, "the plan is one dose"),
], ids=["two-elsewhere", "one-elsewhere-born-1960", "one-elsewhere-smallpox-vaccinated"])
def test_doses_elsewhere_refuse_an_offer_once_the_plan_is_given(engine, db, flags, says):
    p = person(engine, "P", **flags)
    before = contents(db)
    with pytest.raises(GuardRefused, match=says) as refused_offer:
        prep(engine, p)
    assert refused_offer.value.rule == S6_3
    assert contents(db) == before


def test_one_dose_elsewhere_makes_the_course_the_persons_dose_2_27_vs_28_days(engine, db, clock):
    p = person(engine, "P", doses_elsewhere=1, last_dose_on=D("2025-02-10"))
    course_id = prep(engine, p)["id"]
    assert (engine.show(course_id)["prior_doses"], engine.show(course_id)["prior_last_dose_on"]) == (1, "2025-02-10")
    clock.set(local("2025-03-10", 9))
    before = contents(db)
    with pytest.raises(GuardRefused, match=r"the person's previous dose, given elsewhere \(2025-02-10\): not before "
                                           "2025-03-10") as refused_dose:
        dose(engine, course_id, "2025-03-09")  # day 27
    assert refused_dose.value.rule == S6_4
    assert contents(db) == before
    assert dose(engine, course_id, "2025-03-10")["state"] == "completed"  # day 28


def test_a_dose_elsewhere_recorded_after_the_offer_is_counted_at_the_dose(engine, db, clock):
    """Re-checked at every dose: a dose elsewhere recorded after the offer makes the course's first dose the
    person's dose 2 (28 days after it), and one recorded after dose 1 makes dose 2 a third."""
    p, q = person(engine, "P"), person(engine, "Q")
    course_p, course_q = prep(engine, p)["id"], prep(engine, q)["id"]
    update(engine, p, doses_elsewhere=1, last_dose_on=D("2025-02-20"))
    before = contents(db)
    with pytest.raises(GuardRefused, match="not before 2025-03-20") as refused_dose:
        dose(engine, course_p, "2025-03-03")
    assert refused_dose.value.rule == S6_4
    assert contents(db) == before
    clock.set(local("2025-03-20", 9))
    given = dose(engine, course_p, "2025-03-20")
    assert (given["state"], given["dose2_on"], given["prior_doses"], given["prior_last_dose_on"]) == (
        "completed", "2025-03-20", 1, "2025-02-20")

    dose(engine, course_q, "2025-03-03")
    update(engine, q, doses_elsewhere=1, last_dose_on=D("2025-03-05"))
    clock.set(local("2025-04-02", 9))
    before = contents(db)
    with pytest.raises(GuardRefused, match="has had 2 doses already") as refused_third:
        dose(engine, course_q, "2025-04-02")
    assert refused_third.value.rule == S6_3
    assert contents(db) == before


def test_a_one_dose_plan_refuses_its_dose_when_a_dose_elsewhere_was_recorded_meanwhile(engine, db):
    p = person(engine, "P", born=D("1960-01-01"))
    course_id = prep(engine, p)["id"]
    update(engine, p, doses_elsewhere=1, last_dose_on=D("2025-02-01"))
    before = contents(db)
    with pytest.raises(GuardRefused, match="has had the one dose the plan needs") as refused_dose:
        dose(engine, course_id, "2025-03-03")
    assert refused_dose.value.rule == S6_3
    assert contents(db) == before


# ---- 2. under 12, pregnant or breastfeeding: PEP only (§6.2.1, §6.2.2) --------------------------------------------


@pytest.mark.parametrize(("born", "refused_prep"), [
    ("2013-03-04", True),   # 11 on the offer day (2025-03-03): turns 12 tomorrow
    ("2013-03-03", False),  # 12 today: approved from 12
])
@pytest.mark.parametrize("assessed_by", [None, "dr. Berg, paediatrics"])
def test_prep_is_refused_for_a_child_under_12_on_the_offer_day_with_or_without_an_assessor(
        engine, db, born, refused_prep, assessed_by):
    """The Danish §6.2.2 offers children under 12 vaccination only as PEP ("som post-exposure profylakse"); the old
    engine took PrEP for them after an individual assessment."""
    child = person(engine, "CHILD", born=D(born))
    criteria = ("individual_assessment",) if assessed_by else ("msm_sti_24w",)
    if not refused_prep:
        assert prep(engine, child, criteria, assessed_by=assessed_by)["state"] == "offered"
        return
    before = contents(db)
    with pytest.raises(GuardRefused, match="under 12 today .2025-03-03.: a child is vaccinated only as PEP") \
            as refused_offer:
        prep(engine, child, criteria, assessed_by=assessed_by)
    assert refused_offer.value.rule == S6_2_2
    assert "2013" not in str(refused_offer.value)  # never the birth date
    assert contents(db) == before


@pytest.mark.parametrize("fact", ["pregnant", "breastfeeding"])
def test_prep_is_refused_pregnant_or_breastfeeding_and_pep_needs_the_assessing_doctor(engine, db, fact):
    p = person(engine, "P", born=D("1994-06-01"), **{fact: True})
    before = contents(db)
    for assessed_by in (None, "dr. Holm, obstetrics"):
        with pytest.raises(GuardRefused, match="pregnant or breastfeeding: vaccinated only as PEP") as refused_offer:
            prep(engine, p, ("individual_assessment",), assessed_by=assessed_by)
        assert refused_offer.value.rule == S6_2_1
    assert contents(db) == before
    # PEP is offered, and each dose needs the doctor's assessment (breastfeeding too, §6.2.1 "gravide og ammende").
    p2, contact_id = exposed_contact(engine, "2025-03-03", **{fact: True})
    course_id = pep(engine, p2, contact_id)["id"]
    before = contents(db)
    with pytest.raises(GuardRefused, match="pregnant or breastfeeding: off-label") as refused_dose:
        dose(engine, course_id, "2025-03-03", consent=CONSENT)
    assert refused_dose.value.rule == S6_2_1
    assert contents(db) == before
    assert dose(engine, course_id, "2025-03-03", consent=CONSENT, assessed_by="dr. Holm")["state"] == "dose1_given"


def test_no_prep_dose_while_the_person_is_pregnant(engine, db, clock):
    """Decision (patient safety, §6.2.1): pregnancy recorded after a PrEP dose 1 refuses dose 2 until it ends."""
    p = person(engine, "P")
    course_id = prep(engine, p)["id"]
    dose(engine, course_id, "2025-03-03")
    update(engine, p, pregnant=True)
    clock.set(local("2025-03-31", 9))
    before = contents(db)
    with pytest.raises(GuardRefused, match="now pregnant or breastfeeding: .* no PrEP dose") as refused_dose:
        dose(engine, course_id, "2025-03-31", assessed_by="dr. Holm")
    assert refused_dose.value.rule == S6_2_1
    assert contents(db) == before
    update(engine, p, pregnant=False)
    assert dose(engine, course_id, "2025-03-31")["state"] == "completed"


# ---- 3. PEP after an assessment (§6.2) -----------------------------------------------------------------------------


def test_pep_is_offered_only_with_its_assessor(engine, db):
    p, contact_id = exposed_contact(engine, "2025-03-02")
    before = contents(db)
    with pytest.raises(GuardRefused, match="PEP is offered after an assessment by a doctor or STPS.*assessed_by") \
            as refused_offer:
        pep(engine, p, contact_id, assessed_by=None)
    assert refused_offer.value.rule == S6_2
    assert contents(db) == before
    view = pep(engine, p, contact_id, assessed_by="STPS, Anna")
    assert (view["state"], view["assessed_by"]) == ("offered", "STPS, Anna")


@pytest.mark.parametrize(("flags", "severe"), [
    ({}, None),
    ({"born": D("2013-03-04")}, "a child under 12"),  # 11 on the offer day
    ({"born": D("2013-03-03")}, None),  # 12 on the offer day
    ({"pregnant": True}, "pregnant or breastfeeding"),
    ({"breastfeeding": True}, "pregnant or breastfeeding"),
    ({"immunocompromised": True}, "immunocompromised"),
], ids=["adult", "child-11", "child-12", "pregnant", "breastfeeding", "immunocompromised"])
def test_a_low_risk_contact_is_offered_pep_only_at_risk_of_severe_disease_with_the_assessors_note(
        engine, db, flags, severe):
    """§6.2: the assessment weighs the exposure risk *and* the risk of severe disease; Table 1's low is "ikke
    nødvendig" by the exposure alone. The window then runs from the contact's last exposure."""
    case_id = traced_case(engine)
    p = person(engine, "LOW", **flags)
    contact_id = contact(engine, case_id, p, "2025-03-02", "face_to_face", risk="low")
    before = contents(db)
    if severe is None:
        with pytest.raises(GuardRefused, match=r"risk is low: PEP is not needed \(Table 1\)") as refused_offer:
            pep(engine, p, contact_id)
        assert refused_offer.value.rule == S6_2
        assert contents(db) == before
        return
    with pytest.raises(GuardRefused, match=f"{p} .{severe}, at risk of severe disease.*assessment_note") \
            as refused_offer:
        pep(engine, p, contact_id)
    assert refused_offer.value.rule == S6_2
    assert contents(db) == before
    note = f"{severe}: benefit outweighs the off-label risk"
    view = offer(engine, p, indication="pep", contact=contact_id, assessed_by="dr. Lund", assessment_note=note)
    assert (view["state"], view["exposure_on"], view["assessment_note"]) == ("offered", "2025-03-02", note)
    assert pending(engine, view["id"]) == {"pep_window_closes": "2025-03-17T00:00:00+01:00"}
    assert course_row(db, view["id"]).assessment_note == note


def test_a_course_offered_on_the_risk_of_severe_disease_follows_the_contacts_last_exposure(engine, db, clock):
    """§6.2: offered to a low-risk contact who is immunocompromised, the course's window runs from the contact's last
    exposure, and a later low-risk exposure moves it (the contact has no PEP exposure to cascade)."""
    case_id = traced_case(engine)
    p = person(engine, "LOW-FOLLOW", immunocompromised=True)
    contact_id = contact(engine, case_id, p, "2025-03-02", "face_to_face", risk="low")
    course = offer(engine, p, indication="pep", contact=contact_id, assessed_by="dr. Lund",
                   assessment_note="HIV with low CD4: at risk of severe disease")["id"]
    assert pending(engine, course) == {"pep_window_closes": "2025-03-17T00:00:00+01:00"}
    engine.apply(contact_id, "expose", actor="staff:test", data={
        "exposed": D("2025-03-03"), "kind": "face_to_face", "risk": "low", "reason": "same meeting room again"})
    assert engine.show(course)["exposure_on"] == "2025-03-03"
    assert pending(engine, course) == {"pep_window_closes": "2025-03-18T00:00:00+01:00"}
    assert last_entry(engine, course)["trigger"] == "contact_exposed"


# ---- 4. the PEP window: special cases on days 5-14 (§6.2), late entry, following the last exposure ---------------


@pytest.mark.parametrize(("day", "needs"), [(0, False), (4, False), (5, True), (14, True)])
def test_a_pep_dose_1_after_day_4_needs_the_special_reason(engine, db, clock, day, needs):
    """§6.2 "inden for 4 dage ... i særlige tilfælde ... op til 14 dage". Exposure 2025-03-26: day 4 is 2025-03-30
    (the day summer time begins), day 5 is 2025-03-31."""
    p, contact_id = exposed_contact(engine, "2025-03-26")
    course_id = pep(engine, p, contact_id)["id"]
    on = D("2025-03-26") + timedelta(days=day)
    clock.set(local(on, 12))  # by hand: no timers fire on the way
    if not needs:
        view = dose(engine, course_id, on, consent=CONSENT)
        assert (view["state"], view["special_reason"]) == ("dose1_given", None)
        return
    before = contents(db)
    with pytest.raises(GuardRefused, match=f"dose 1 on {on} is day {day} after the exposure on 2025-03-26: after "
                                           "day 4 PEP is given only in special cases; give the reason with "
                                           "special_reason") as refused_dose:
        dose(engine, course_id, on, consent=CONSENT)
    assert refused_dose.value.rule == S6_2
    assert contents(db) == before
    view = dose(engine, course_id, on, consent=CONSENT, special_reason=SPECIAL)
    assert (view["state"], view["special_reason"]) == ("dose1_given", SPECIAL)
    assert course_row(db, course_id).special_reason == SPECIAL


def test_a_dose_given_on_day_14_is_accepted_the_next_morning_day_15_is_not(engine, db, clock):
    """Issue 12 item 9: exposure 2025-03-16, day 14 is 2025-03-30 (summer time begins), the window closes at
    00:00 +02:00 on 2025-03-31. The course is not cancelled then: it lapses, and a dose dated inside the window is
    still recorded; the late-entry task is then done."""
    p, contact_id = exposed_contact(engine, "2025-03-16")
    course_id = pep(engine, p, contact_id)["id"]
    closes = T("2025-03-31T00:00:00+02:00")
    assert fired_on(engine, closes - SECOND, course_id) == []
    assert fired_on(engine, local("2025-03-31", 8), course_id) == [
        ("pep_window_closes", closes, "offered", "offered")]
    view = engine.show(course_id)
    assert (view["state"], view["lapsed_at"]) == ("offered", "2025-03-31T00:00:00+02:00")
    assert pending(engine, course_id) == {"pep_late_entry_ends": "2025-04-07T00:00:00+02:00"}
    task = "PEP window closed after 2025-03-30: record a dose 1 given by then, or decline (the offer ends 2025-04-07)"
    assert tasks_of(engine, course_id) == [(task, "2025-04-07T00:00:00+02:00", False)]
    assert timer_of(engine, course_id, "pep_late_entry_ends")["rule"] == S6_2

    before = contents(db)
    with pytest.raises(GuardRefused, match="after day 14 from the exposure on 2025-03-16 .last day 2025-03-30.") \
            as refused_dose:
        dose(engine, course_id, "2025-03-31", consent=CONSENT, special_reason=SPECIAL)
    assert refused_dose.value.rule == S6_2
    assert contents(db) == before
    view = dose(engine, course_id, "2025-03-30", consent=CONSENT, special_reason=SPECIAL)
    assert (view["state"], view["dose1_on"]) == ("dose1_given", "2025-03-30")
    late = timer_of(engine, course_id, "pep_late_entry_ends")
    assert (late["status"], late["satisfied_at"]) == ("cancelled", "2025-03-31T08:00:00+02:00")
    assert pending(engine, course_id) == {"dose2_due": "2025-04-27T00:00:00+02:00"}
    assert [t for t, _, _ in tasks_of(engine, course_id)] == ["give dose 2 (from 2025-04-27)"]


@pytest.mark.parametrize(("exposed", "closes", "ends"), [
    ("2025-03-10", "2025-03-25T00:00:00+01:00", "2025-04-01T00:00:00+02:00"),  # grace across spring forward
    ("2025-10-10", "2025-10-25T00:00:00+02:00", "2025-11-01T00:00:00+01:00"),  # ... and fall back
])
def test_the_late_entry_grace_cancels_the_offer_at_local_midnight_7_days_after_the_window(
        engine, db, clock, exposed, closes, ends):
    p, contact_id = exposed_contact(engine, exposed)
    course_id = pep(engine, p, contact_id)["id"]
    assert fired_on(engine, T(ends) - SECOND, course_id) == [
        ("pep_window_closes", T(closes), "offered", "offered")]
    assert fired_on(engine, T(ends), course_id) == [("pep_late_entry_ends", T(ends), "offered", "cancelled")]
    view = engine.show(course_id)
    assert (view["state"], view["ended_because"]) == ("cancelled", PEP_WINDOW_ENDED)
    assert timer_of(engine, course_id, "pep_late_entry_ends")["status"] == "missed"  # nobody recorded anything
    entry = last_entry(engine, course_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == (
        "pep_late_entry_ends", "offered", "cancelled", S6_2)
    # A dose on it now cites §6.2 (the window), not §6.3.
    before = contents(db)
    with pytest.raises(RuleRefused, match=f"{course_id} is cancelled .*PEP is no longer given") as refused_dose:
        dose(engine, course_id, exposed, consent=CONSENT)
    assert refused_dose.value.rule == S6_2
    assert contents(db) == before


def test_a_lapsed_offer_blocks_a_new_course_until_it_is_declined(engine, db, clock):
    """Decision: a lapsed PEP offer is still open (a late entry may come); a new offer for the person is refused
    and says how to end it (``vaccine decline``); after the decline, or the grace, a new course may be offered."""
    p, contact_id = exposed_contact(engine, "2025-03-02")
    course_id = pep(engine, p, contact_id)["id"]
    advance_simulated_clock(engine, local("2025-03-18", 9))
    assert engine.show(course_id)["lapsed_at"] == "2025-03-17T00:00:00+01:00"
    before = contents(db)
    with pytest.raises(GuardRefused, match="has a course under way.*`vaccine decline`") as refused_offer:
        prep(engine, p)
    assert refused_offer.value.rule == S6_3
    assert contents(db) == before
    view = engine.apply(course_id, "decline", actor=STAFF, reason="no dose was given in the window")
    assert view["state"] == "declined"
    late = timer_of(engine, course_id, "pep_late_entry_ends")
    assert (late["status"], late["satisfied_at"]) == ("cancelled", None)  # ended, not done
    assert prep(engine, p)["state"] == "offered"
    with pytest.raises(RuleRefused, match=f"{course_id} is declined") as refused_dose:
        dose(engine, course_id, "2025-03-16", consent=CONSENT)
    assert refused_dose.value.rule == S6


def test_an_offered_pep_course_follows_the_contacts_last_exposure(engine, db, clock):
    """Issue 12 item 9: a new exposure of the contact moves the offered course's window (``contact_exposed``,
    cascaded from ``contact expose``); once dose 1 is given the course no longer moves."""
    p, contact_id = exposed_contact(engine, "2025-03-02")
    course_id = pep(engine, p, contact_id)["id"]
    clock.set(local("2025-03-05", 12))
    engine.apply(contact_id, "expose", data={"exposed": D("2025-03-05"), "kind": "sexual"}, actor=STAFF)
    view = engine.show(course_id)
    assert view["exposure_on"] == "2025-03-05"
    assert pending(engine, course_id) == {"pep_window_closes": "2025-03-20T00:00:00+01:00"}
    entry = last_entry(engine, course_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == (
        "contact_exposed", "offered", "offered", S6_2)
    assert contact_id in entry["reason"]
    # Day 4 from the new exposure needs no special reason; a date before it is refused.
    clock.set(local("2025-03-09", 12))
    with pytest.raises(GuardRefused, match="before the exposure"):
        dose(engine, course_id, "2025-03-04", consent=CONSENT)
    dose(engine, course_id, "2025-03-09", consent=CONSENT)
    engine.apply(contact_id, "expose", data={"exposed": D("2025-03-09"), "kind": "sexual"}, actor=STAFF)
    assert engine.show(course_id)["exposure_on"] == "2025-03-05"


def test_a_new_exposure_reopens_a_lapsed_offer_and_a_correction_can_lapse_one(engine, db, clock):
    p, contact_id = exposed_contact(engine, "2025-03-02")
    course_id = pep(engine, p, contact_id)["id"]
    advance_simulated_clock(engine, local("2025-03-18", 9))
    assert engine.show(course_id)["lapsed_at"] is not None
    engine.apply(contact_id, "expose", data={"exposed": D("2025-03-18"), "kind": "household"}, actor=STAFF)
    view = engine.show(course_id)
    assert (view["state"], view["exposure_on"], view["lapsed_at"]) == ("offered", "2025-03-18", None)
    assert pending(engine, course_id) == {"pep_window_closes": "2025-04-02T00:00:00+02:00"}
    late = timer_of(engine, course_id, "pep_late_entry_ends")
    assert (late["status"], late["satisfied_at"]) == ("cancelled", None)

    # The other way: a date corrected to an earlier one whose window has closed lapses the offer at once.
    clock.set(local("2025-03-19", 12))
    q = person(engine, "OTHER")
    other = contact(engine, engine.show(contact_id)["case"], q, "2025-03-19", "intact_skin")
    course_q = pep(engine, q, other)["id"]
    clock.set(local("2025-03-20", 12))
    engine.apply(other, "correct", data={"exposed": D("2025-03-04"), "exposure": 1}, actor=STAFF)
    view = engine.show(course_q)
    assert (view["state"], view["exposure_on"], view["lapsed_at"]) == (
        "offered", "2025-03-04", "2025-03-19T00:00:00+01:00")
    assert pending(engine, course_q) == {"pep_late_entry_ends": "2025-03-26T00:00:00+01:00"}


# ---- 5. the §6.1 PrEP criteria and their look-backs ----------------------------------------------------------------


@pytest.mark.parametrize(("criterion", "days_before", "holds"), [
    ("msm_two_partners_12w", 84, True), ("msm_two_partners_12w", 85, False),
    ("msm_sti_24w", 168, True), ("msm_sti_24w", 169, False),
    ("msm_sti_24w", 0, True), ("msm_sti_24w", -1, False), ("msm_two_partners_12w", None, False),
])
def test_a_dated_prep_criterion_must_lie_within_its_look_back_from_the_offer_day(
        engine, db, clock, criterion, days_before, holds):
    """§6.1 "inden for de sidste 12 uger" / "24 uger", counted in Danish calendar days: the offer at 00:30 on
    2025-03-31 (summer time; still 2025-03-30 in UTC) is on 2025-03-31."""
    clock.set(T("2025-03-31T00:30:00+02:00"))
    on = None if days_before is None else D("2025-03-31") - timedelta(days=days_before)
    p = person(engine, "P")
    data = {"indication": "prep", "criteria": [criterion], "criterion_on": on}
    if holds:
        view = offer(engine, p, **data)
        assert (view["state"], view["criterion_on"]) == ("offered", str(on))
        assert course_row(db, view["id"]).criterion_on == on
        return
    says = {None: "give the date of .* with criterion_on", -1: "after today .2025-03-31."}.get(
        days_before, "the criterion does not hold")
    before = contents(db)
    with pytest.raises(GuardRefused, match=says) as refused_offer:
        offer(engine, p, **data)
    assert refused_offer.value.rule == S6_1
    assert contents(db) == before


@pytest.mark.parametrize("criteria", [("individual_assessment",), ("travel_clade_i",),
                                      ("individual_assessment", "msm_sti_24w")])
def test_a_prep_criterion_resting_on_an_assessment_needs_the_doctor_whatever_comes_with_it(engine, db, criteria):
    """Every criterion recorded must hold (§6.1): "comparable risk" and the clade I travel criterion rest on a
    doctor's assessment, so the doctor is named even when an MSM criterion is given too (the old rule let that
    combination through without one)."""
    p = person(engine, "P")
    before = contents(db)
    with pytest.raises(GuardRefused, match="needs an .*assessed_by") as refused_offer:
        prep(engine, p, criteria)
    assert refused_offer.value.rule == S6_1
    assert contents(db) == before
    assert prep(engine, p, criteria, assessed_by="dr. Lund")["state"] == "offered"


def test_criterion_on_dates_one_dated_prep_criterion_else_it_is_wrong_usage():
    from workflows.course import vaccine_offer_data

    on = D("2025-02-20")
    for indication, criteria, contact_id in [("pep", [], "contact-1"), ("prep", ["travel_clade_i"], None),
                                             ("prep", ["msm_two_partners_12w", "msm_sti_24w"], None)]:
        with pytest.raises(UsageError, match="criterion_on"):
            vaccine_offer_data({"indication": indication, "contact": contact_id, "criteria": criteria,
                                "assessed_by": None, "criterion_on": on})
    assert vaccine_offer_data({"indication": "prep", "contact": None, "criteria": ["msm_sti_24w"],
                               "assessed_by": None, "criterion_on": on})[1]["criterion_on"] == on


# ---- 6. the CLI and the HTTP API refuse with the section -------------------------------------------------------------


@pytest.fixture
def story(cli_db: str) -> str:
    """person-1 with case-1 (confirmed 2025-03-02, tracing consented); person-2 its sexual partner (contact-1,
    exposed 2025-03-01); person-3 a child born 2015; person-4 with two doses elsewhere; person-5 an adult."""
    for ref, flags in [("REF-CASE", ()), ("REF-PARTNER", ()), ("REF-CHILD", ("--born", "2015-06-01")),
                       ("REF-TWICE", ("--doses-elsewhere", "2", "--last-dose-on", "2025-01-10")), ("REF-ADULT", ())]:
        add_person(cli_db, ref, *flags)
    ok(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-02-25", "--confirmed", "--pcr-on",
       "2025-03-02", "--actor", "staff:test")
    ok(cli_db, "case", "consent", "case-1", "--tracing", "yes", "--actor", "staff:test")
    ok(cli_db, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-02-26",
       "--kind", "sexual", "--actor", "staff:stps")
    return cli_db


def test_the_cli_refuses_each_new_rule_with_exit_3_and_the_section(story: str) -> None:
    offer_cmd = ("vaccine", "offer", "--actor", "staff:clinic")
    no_assessor = refused(story, *offer_cmd, "--person", "person-2", "--indication", "pep", "--contact", "contact-1",
                          code=3)
    assert "--assessed-by" in no_assessor.stderr and S6_2 in no_assessor.stderr
    assert json.loads(no_assessor.stdout)["rule"] == S6_2
    child = refused(story, *offer_cmd, "--person", "person-3", "--indication", "prep", "--criteria",
                    "individual_assessment", "--assessed-by", "dr. Berg", code=3)
    assert "PrEP is not offered" in child.stderr and S6_2_2 in child.stderr
    too_old = str(D("2025-03-03") - timedelta(days=169))
    old = refused(story, *offer_cmd, "--person", "person-5", "--indication", "prep", "--criteria", "msm_sti_24w",
                  "--criterion-on", too_old, code=3)
    assert "does not hold" in old.stderr and S6_1 in old.stderr
    twice = refused(story, *offer_cmd, "--person", "person-4", "--indication", "prep", "--criteria", "msm_sti_24w",
                    "--criterion-on", "2025-02-01", code=3)
    assert "no more than 2 doses" in twice.stderr and S6_3 in twice.stderr
    usage = refused(story, *offer_cmd, "--person", "person-2", "--indication", "pep", "--contact", "contact-1",
                    "--assessed-by", "dr. Lund", "--criterion-on", "2025-02-01", code=2)
    assert "--criterion-on" in usage.stderr
    refused(story, *offer_cmd, "--person", "person-5", "--indication", "prep", "--criteria", "msm_sti_24w",
            "--criterion-on", "2025-02-30", code=2)

    # Exposure 2025-02-26: today (2025-03-03) is day 5, a special case.
    course = doc(story, *offer_cmd, "--person", "person-2", "--indication", "pep", "--contact", "contact-1",
                 "--assessed-by", "dr. Lund")
    consent = ("--consent", "--indication-note", "sexual partner", "--justification", "high risk, day 5")
    special = refused(story, "vaccine", "dose", course["id"], "--on", "2025-03-03", *consent, code=3)
    assert "--special-reason" in special.stderr and S6_2 in special.stderr
    given = doc(story, "vaccine", "dose", course["id"], "--on", "2025-03-03", *consent, "--special-reason",
                "reached only today")
    assert (given["state"], given["special_reason"]) == ("dose1_given", "reached only today")
    ok(story, "vaccine", "decline", course["id"], "--reason", "does not want dose 2 here")

    # The next day, a new course for the same person: the person's dose 2 is 28 days after dose 1.
    ok(story, "clock", "advance", "--days", "1")
    again = doc(story, *offer_cmd, "--person", "person-2", "--indication", "prep", "--criteria", "msm_sti_24w",
                "--criterion-on", "2025-02-10")
    assert (again["prior_doses"], again["prior_last_dose_on"]) == (1, "2025-03-03")
    early = refused(story, "vaccine", "dose", again["id"], "--on", "2025-03-04", code=3)
    assert "not before 2025-03-31" in early.stderr and S6_4 in early.stderr


def test_the_api_refuses_with_409_and_the_rule(client_for: Any, cli_db: str) -> None:
    staff = client_for("staff:test")
    for body in ({"ref": "REF-PREGNANT", "pregnant": True}, {"ref": "REF-TWICE", "doses_elsewhere": 2,
                                                             "last_dose_on": "2025-01-10"}):
        done(staff, "/api/persons", body)
    before = snapshot(cli_db)
    for person_id, rule, says in [("person-1", S6_2_1, "pregnant or breastfeeding"),
                                  ("person-2", S6_3, "no more than 2 doses")]:
        body = check_error(post(staff, "/api/courses", {
            "person": person_id, "indication": "prep", "criteria": ["msm_sti_24w"], "criterion_on": "2025-02-20"}),
            409, "refused", 3, rule)
        assert says in body["message"]
    body = check_error(post(staff, "/api/courses", {
        "person": "person-1", "indication": "prep", "criteria": ["msm_sti_24w"], "criterion_on": "2025-02-30"}),
        422, "usage", 2)
    assert "criterion_on" in body["message"]
    assert snapshot(cli_db) == before


def test_old_courses_without_the_new_columns_still_work(engine, db: Database, clock):
    """Courses written before migration 0009 have NULL in the new columns: treated as their defaults."""
    course_id = prep(engine, person(engine, "P"))["id"]
    dose(engine, course_id, "2025-03-03")
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE courses SET prior_doses = NULL, criterion_on = NULL, assessment_note = NULL, "
                                "special_reason = NULL, lapsed_at = NULL"))
    clock.set(local("2025-03-31", 9))
    assert dose(engine, course_id, "2025-03-31")["state"] == "completed"
