"""Vaccination courses (§6) on both backends: the §6.4 dose plans (with the 1970/1971 boundary), §6.3 refusals
(previous mpox, a second course, a third dose), PEP only for a high- or medium-risk contact inside the 14-day window
(§6.2) with its own audited ``pep_window_closes`` timer (which lapses the offer; the late-entry grace then cancels
it), PEP's off-label consent and the under-12 / pregnancy assessments (§6.2, §6.2.1-2), the §6.1 PrEP target groups,
dose 2 at 00:00 local on dose 1 + 28 days across the daylight-saving changes with its overdue reminder, mpox
confirmed after dose 1 ending the course in the same transaction, and decline. Issue 12's new rules (doses over the
person, PEP only for children and pregnancy, the PEP assessor, look-backs, days 5-14) are in test_rules_course.py."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from engine.core import Engine
from persistence.database import Database
from persistence.models import Course, Timer
from scheduler.firing import advance_simulated_clock
from tests.helpers import confirmed, contents, last_entry, person, pk, suspected, tasks_of
from workflows.definition import Settings
from workflows.errors import GuardRefused, NotFound, RuleRefused, TriggerNotAllowed

D = date.fromisoformat
T = datetime.fromisoformat
DANISH = ZoneInfo("Europe/Copenhagen")
STAFF = "staff:test"
SECOND = timedelta(seconds=1)
S6, S6_1, S6_2, S6_2_1, S6_2_2, S6_3, S6_4 = (
    f"SST-mpox-7.1 {s}" for s in ("§6", "§6.1", "§6.2", "§6.2.1", "§6.2.2", "§6.3", "§6.4"))
CONSENT = {"consent": True, "indication_note": "sexual partner of case, high risk (Table 1)",
           "justification": "exposure 1 day ago, within the optimal window"}
_refs = itertools.count()


# ---- helpers -------------------------------------------------------------------------------------------------


def local(day: date | str, hour: int = 12, minute: int = 0) -> datetime:
    """A wall-clock time in Copenhagen on ``day``."""
    day = D(day) if isinstance(day, str) else day
    return datetime.combine(day, time(hour, minute), tzinfo=DANISH)


def midnight(day: date | str) -> datetime:
    """00:00 Copenhagen time on ``day`` (computed here, independently of workflows.calendar)."""
    day = D(day) if isinstance(day, str) else day
    return datetime.combine(day, time(0), tzinfo=DANISH)


def now_local(clock: Any) -> str:
    return str(clock.now().astimezone(DANISH).isoformat())


def today(clock: Any) -> str:
    return str(clock.now().astimezone(DANISH).date())


def prep(engine: Engine, person_id: str, criteria: tuple[str, ...] = ("msm_sti_24w",),
         assessed_by: str | None = None) -> dict[str, Any]:
    """A PrEP offer; a dated §6.1 criterion is dated a week before the offer day."""
    dated = any(c in ("msm_two_partners_12w", "msm_sti_24w") for c in criteria)
    criterion_on = engine.clock.now().astimezone(DANISH).date() - timedelta(days=7) if dated else None
    return engine.open("course", "offer", person=person_id, actor=STAFF, data={
        "indication": "prep", "contact": None, "criteria": list(criteria), "assessed_by": assessed_by,
        "criterion_on": criterion_on})


def pep(engine: Engine, person_id: str, contact_id: str | None,
        assessed_by: str | None = "dr. Lund, infection medicine") -> dict[str, Any]:
    """A PEP offer, assessed by a doctor (§6.2)."""
    return engine.open("course", "offer", person=person_id, actor=STAFF, data={
        "indication": "pep", "contact": contact_id, "criteria": [], "assessed_by": assessed_by})


def dose(engine: Engine, course_id: str, on: date | str, *, consent: dict[str, Any] | None = None,
         assessed_by: str | None = None, special_reason: str | None = None) -> dict[str, Any]:
    on = D(on) if isinstance(on, str) else on
    given = {"consent": False, "indication_note": None, "justification": None, **(consent or {})}
    return engine.apply(course_id, "dose", actor=STAFF, data={"on": on, **given, "assessed_by": assessed_by,
                                                              "special_reason": special_reason})


def traced_case(engine: Engine, onset: str = "2025-03-01", pcr_on: str = "2025-03-03") -> str:
    """A confirmed case (of a person of its own) consenting to STPS tracing."""
    case_id = confirmed(engine, person(engine, f"CASE-{next(_refs)}"), onset, pcr_on)
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    return case_id


def contact(engine: Engine, case_id: str, person_id: str, exposed: str = "2025-03-02",
            kind: str = "sexual", risk: str | None = None) -> str:
    """A close contact; ``risk`` a clinician's assessment (low comes only from one, with its reason)."""
    return engine.open("contact", "add", person=person_id, actor=STAFF, data={
        "case": case_id, "exposed": D(exposed), "kind": kind, "risk": risk,
        "reason": "assessed: no physical contact, droplets unlikely" if risk else None})["id"]


def pending(engine: Engine, object_id: str) -> dict[str, str]:
    return {t["name"]: t["due_at"] for t in engine.show(object_id)["timers"] if t["status"] == "pending"}


def timer_of(engine: Engine, object_id: str, name: str) -> dict[str, Any]:
    [found] = [t for t in engine.show(object_id)["timers"] if t["name"] == name]
    return found


def course_row(db: Database, course_id: str) -> Any:
    """The course as stored (its columns, read straight from the table)."""
    with db.reading() as session:
        row = session.get(Course, pk(course_id))
        return SimpleNamespace(**{c.name: getattr(row, c.name) for c in Course.__table__.columns})


def fired_on(engine: Engine, to: datetime, object_id: str) -> list[tuple[str, datetime, str, str]]:
    return [(f.name, f.fired_at, f.from_state, f.to_state)
            for f in advance_simulated_clock(engine, to) if f.object == object_id]


# ---- 1. the dose plan (§6.3, §6.4) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "doses", "reason"),
    [
        ({"smallpox_vaccinated": True}, 1, "smallpox-vaccinated: one dose is enough"),
        ({"born": D("1970-12-31")}, 1, "born in 1970 or earlier"),  # the last day that counts as vaccinated
        ({"born": D("1944-05-17")}, 1, "born in 1970 or earlier"),
        ({"born": D("1971-01-01")}, 2, "2 doses at least 28 days apart"),  # the first day that does not
        ({"immunocompromised": True, "smallpox_vaccinated": True}, 2, "immunocompromised"),
        ({"immunocompromised": True, "born": D("1965-06-01")}, 2, "immunocompromised"),
        ({"born": D("1990-04-02")}, 2, "2 doses at least 28 days apart"),
        ({}, 2, "2 doses at least 28 days apart"),  # birth date unknown: not counted as vaccinated
    ],
    ids=["smallpox-vaccinated", "born-1970-12-31", "born-1944", "born-1971-01-01", "immuno+smallpox",
         "immuno+born-1965", "born-1990", "born-unknown"],
)
def test_each_dose_plan_and_a_course_never_has_more_than_its_doses(engine, db, clock, flags, doses, reason):
    course = prep(engine, person(engine, "P", **flags))
    assert (course["id"], course["kind"], course["state"], course["workflow"]) == (
        "course-1", "course", "offered", "course@SST-mpox-7.1")
    assert (course["indication"], course["doses_planned"], course["plan_rule"]) == ("prep", doses, S6_4)
    assert reason in course["plan_reason"]
    row = course_row(db, course["id"])
    assert (row.doses_planned, row.plan_rule, row.state) == (doses, S6_4, "offered")
    entry = last_entry(engine, course["id"])
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == ("offer", None, "offered", S6)

    first = dose(engine, course["id"], "2025-03-03")
    assert first["dose1_on"] == "2025-03-03"
    if doses == 1:  # a one-dose plan is complete with its one dose
        assert first["state"] == "completed"
        assert pending(engine, course["id"]) == {}
        assert tasks_of(engine, course["id"]) == []
    else:
        assert first["state"] == "dose1_given"
        assert pending(engine, course["id"]) == {"dose2_due": "2025-03-31T00:00:00+02:00"}
        clock.set(local("2025-03-31", 9))
        second = dose(engine, course["id"], "2025-03-31")
        assert (second["state"], second["dose2_on"]) == ("completed", "2025-03-31")

    # No third dose (and no second for a one-dose plan): §6.3, nothing written.
    clock.set(local("2025-06-02", 9))
    before = contents(db)
    with pytest.raises(GuardRefused, match="no more than 2 doses, no boosters") as refused:
        dose(engine, course["id"], "2025-06-02")
    assert refused.value.rule == S6_3
    assert contents(db) == before


@pytest.mark.parametrize("indication", ["prep", "pep"])
def test_a_person_who_has_had_mpox_is_not_vaccinated(engine, db, indication):
    case_id = traced_case(engine)
    had_mpox = person(engine, "HAD-MPOX", previous_mpox=True)
    contact_id = contact(engine, case_id, had_mpox)
    before = contents(db)
    with pytest.raises(GuardRefused, match="has had mpox and is not vaccinated") as refused:
        if indication == "prep":
            prep(engine, had_mpox)
        else:
            pep(engine, had_mpox, contact_id)
    assert refused.value.rule == S6_3
    assert str(refused.value).endswith(f"({S6_3})")
    assert contents(db) == before
    assert engine.list("course") == []


@pytest.mark.parametrize("state", ["offered", "dose1_given", "dose2_due", "completed"])
def test_no_second_course_while_one_is_under_way_or_after_a_completed_one(engine, db, clock, state):
    p = person(engine, "P")
    course_id = prep(engine, p)["id"]
    if state != "offered":
        dose(engine, course_id, "2025-03-03")
    if state in ("dose2_due", "completed"):
        advance_simulated_clock(engine, local("2025-03-31", 9))
        assert engine.show(course_id)["state"] == "dose2_due"
    if state == "completed":
        dose(engine, course_id, "2025-03-31")
    assert engine.show(course_id)["state"] == state
    before = contents(db)
    expected = "has completed a course" if state == "completed" else "has a course under way"
    with pytest.raises(GuardRefused, match=expected) as refused:
        prep(engine, p, ("msm_two_partners_12w",))
    assert refused.value.rule == S6_3
    assert contents(db) == before
    # Another person is not affected.
    assert prep(engine, person(engine, "OTHER"))["state"] == "offered"


def test_offer_for_an_unknown_person_or_contact_is_not_found(engine, db):
    p = person(engine, "P")
    before = contents(db)
    with pytest.raises(NotFound, match="person-99"):
        prep(engine, "person-99")
    with pytest.raises(NotFound, match="contact-99"):
        pep(engine, p, "contact-99")
    with pytest.raises(NotFound):
        dose(engine, "course-99", "2025-03-03")
    with pytest.raises(NotFound):
        engine.apply("course-99", "decline", actor=STAFF)
    assert contents(db) == before


# ---- 2. PEP (§6.2): for whom and until when ---------------------------------------------------------------------


def test_pep_offer_arms_the_course_window_and_ends_the_contacts_pep_assessment(engine, db):
    case_id = traced_case(engine)
    p = person(engine, "CONTACT")
    contact_id = contact(engine, case_id, p, "2025-03-02")
    assert "assess PEP by 2025-03-16 (best by 2025-03-06)" in [t for t, _, _ in tasks_of(engine, contact_id)]

    course = pep(engine, p, contact_id)
    assert (course["state"], course["indication"], course["contact"], course["exposure_on"]) == (
        "offered", "pep", contact_id, "2025-03-02")
    assert (course["doses_planned"], course["plan_rule"]) == (2, S6_4)
    assert [(t["name"], t["due_at"], t["status"], t["rule"]) for t in course["timers"]] == [
        ("pep_window_closes", "2025-03-17T00:00:00+01:00", "pending", S6_2)]
    with db.reading() as session:
        [stored] = session.scalars(select(Timer).where(Timer.object_kind == "course"))
        assert (stored.name, stored.due_at) == ("pep_window_closes", T("2025-03-17T00:00:00+01:00"))
        assert stored.due_at.utcoffset() == timedelta(0)
    # The contact's "assess PEP" task is done; its other task stays.
    assert [t for t, _, _ in tasks_of(engine, contact_id)] == [
        "STPS informs the contact (symptoms, 21 days' monitoring)"]
    assert all(not i["task"].startswith("assess PEP") for i in engine.worklist())
    entry = last_entry(engine, contact_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == (
        "pep_offered", "exposed", "exposed", "SST-mpox-7.1 §5.3")
    assert engine.show(contact_id)["state"] == "exposed"


def test_pep_is_not_needed_for_a_low_risk_contact(engine, db):
    case_id = traced_case(engine)
    p = person(engine, "CONTACT")
    contact_id = contact(engine, case_id, p, "2025-03-02", "face_to_face", risk="low")
    before = contents(db)
    with pytest.raises(GuardRefused, match=r"risk is low: PEP is not needed \(Table 1\)") as refused:
        pep(engine, p, contact_id)
    assert refused.value.rule == S6_2
    assert contents(db) == before


def test_pep_needs_the_persons_own_contact(engine, db):
    case_id = traced_case(engine)
    exposed, other = person(engine, "EXPOSED"), person(engine, "OTHER")
    contact_id = contact(engine, case_id, exposed)
    before = contents(db)
    with pytest.raises(GuardRefused, match=f"{contact_id} is about {exposed}, not {other}") as refused:
        pep(engine, other, contact_id)
    assert refused.value.rule == S6_2
    with pytest.raises(GuardRefused, match="PEP is for a close contact: give the contact") as refused:
        pep(engine, other, None)
    assert refused.value.rule == S6_2
    assert contents(db) == before


@pytest.mark.parametrize(("exposed", "closes"), [
    ("2025-03-02", "2025-03-17T00:00:00+01:00"),
    ("2025-03-16", "2025-03-31T00:00:00+02:00"),  # the window ends the night after summer time begins
    ("2025-10-12", "2025-10-27T00:00:00+01:00"),  # ... the night after winter time begins
])
def test_pep_is_offered_until_the_end_of_day_14_after_the_exposure(engine, db, clock, exposed, closes):
    clock.set(max(clock.now(), local(exposed, 12)))
    case_id = traced_case(engine, onset=str(D(exposed) - timedelta(days=2)), pcr_on=today(clock))
    early, late = person(engine, "EARLY"), person(engine, "LATE")
    early_contact, late_contact = contact(engine, case_id, early, exposed), contact(engine, case_id, late, exposed)
    # One second before the window closes (no timers fired: the clock is set by hand): still offered.
    clock.set(T(closes) - SECOND)
    course = pep(engine, early, early_contact)
    assert pending(engine, course["id"]) == {"pep_window_closes": closes}
    clock.set(T(closes))
    before = contents(db)
    with pytest.raises(GuardRefused, match=f"PEP window closed with day 14 after the exposure of {exposed}: "
                                           "PEP is no longer offered") as refused:
        pep(engine, late, late_contact)
    assert refused.value.rule == S6_2
    assert contents(db) == before


def test_pep_dose_1_is_refused_after_day_14_and_before_the_exposure(engine, db, clock):
    case_id = traced_case(engine)
    p = person(engine, "CONTACT")
    course_id = pep(engine, p, contact(engine, case_id, p, "2025-03-02"))["id"]
    before = contents(db)
    with pytest.raises(GuardRefused, match="before the exposure") as refused:
        dose(engine, course_id, "2025-03-01", consent=CONSENT)
    assert refused.value.rule == S6
    with pytest.raises(GuardRefused, match="after today"):
        dose(engine, course_id, "2025-03-04", consent=CONSENT)
    clock.set(local("2025-03-17", 10))  # by hand: the course's own timer has not fired
    with pytest.raises(GuardRefused, match="after day 14 from the exposure on 2025-03-02 .last day 2025-03-16.") \
            as refused:
        dose(engine, course_id, "2025-03-17", consent=CONSENT)
    assert refused.value.rule == S6_2
    assert contents(db) == before
    # Day 14 itself is still inside the window (a special case after day 4, §6.2).
    assert dose(engine, course_id, "2025-03-16", consent=CONSENT,
                special_reason="reached only now")["state"] == "dose1_given"


@pytest.mark.parametrize(("exposed", "closes"), [
    ("2025-03-02", "2025-03-17T00:00:00+01:00"),
    ("2025-03-16", "2025-03-31T00:00:00+02:00"),
    ("2025-10-12", "2025-10-27T00:00:00+01:00"),
])
def test_the_course_pep_window_timer_lapses_an_offered_course_and_the_grace_then_cancels_it(
        engine, db, clock, exposed, closes):
    """Issue 12 item 9: at the window's close the offered course is not cancelled but lapses (a dose 1 given inside
    the window may still be recorded); the late-entry grace (7 days) then cancels it, at the exact instants."""
    clock.set(max(clock.now(), local(exposed, 12)))
    case_id = traced_case(engine, onset=str(D(exposed) - timedelta(days=2)), pcr_on=today(clock))
    p = person(engine, "CONTACT")
    course_id = pep(engine, p, contact(engine, case_id, p, exposed))["id"]
    end = T(closes)
    assert fired_on(engine, end - SECOND, course_id) == []
    assert engine.show(course_id)["state"] == "offered"
    assert fired_on(engine, end, course_id) == [("pep_window_closes", end, "offered", "offered")]
    view = engine.show(course_id)
    assert (view["state"], view["lapsed_at"], view["ended_because"]) == ("offered", closes, None)
    grace_ends = midnight(D(exposed) + timedelta(days=15 + 7))
    assert pending(engine, course_id) == {"pep_late_entry_ends": grace_ends.isoformat()}
    entry = last_entry(engine, course_id)
    assert (entry["trigger"], entry["actor"], entry["from"], entry["to"], entry["at"], entry["rule"]) == (
        "pep_window_closes", "timer:pep_window_closes", "offered", "offered", closes, S6_2)
    assert entry["data"]["fired_late_by_seconds"] == 0
    assert fired_on(engine, grace_ends - SECOND, course_id) == []
    assert fired_on(engine, grace_ends, course_id) == [("pep_late_entry_ends", grace_ends, "offered", "cancelled")]
    view = engine.show(course_id)
    assert view["state"] == "cancelled"
    assert S6_2 in view["ended_because"]
    assert [(t["name"], t["status"]) for t in view["timers"]] == [
        ("pep_window_closes", "fired"), ("pep_late_entry_ends", "missed")]
    entry = last_entry(engine, course_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == (
        "pep_late_entry_ends", "offered", "cancelled", S6_2)
    assert course_row(db, course_id).state == "cancelled"
    # Cancelled is final: no dose, no decline.
    before = contents(db)
    for trigger, data in [("dose", {"on": D(exposed), **CONSENT}), ("decline", {})]:
        with pytest.raises(RuleRefused, match=f"{course_id} is cancelled"):
            engine.apply(course_id, trigger, data=data, actor=STAFF)
    assert contents(db) == before


def test_dose_1_cancels_the_course_pep_window_timer(engine, clock):
    case_id = traced_case(engine)
    p = person(engine, "CONTACT")
    course_id = pep(engine, p, contact(engine, case_id, p, "2025-03-02"))["id"]
    view = dose(engine, course_id, "2025-03-03", consent=CONSENT)
    assert view["state"] == "dose1_given"
    assert timer_of(engine, course_id, "pep_window_closes")["status"] == "cancelled"
    assert pending(engine, course_id) == {"dose2_due": "2025-03-31T00:00:00+02:00"}
    entry = last_entry(engine, course_id)
    assert [c["name"] for c in entry["timers_cancelled"]] == ["pep_window_closes"]
    assert [a["name"] for a in entry["timers_armed"]] == ["dose2_due"]
    assert fired_on(engine, T("2025-03-20T00:00:00+01:00"), course_id) == []
    assert engine.show(course_id)["state"] == "dose1_given"


# ---- 3. PEP is off-label: consent, indication, justification; children and pregnancy (§6.2, §6.2.1-2) ---------


@pytest.fixture
def pep_course(engine: Engine) -> tuple[str, str]:
    """(person, course): a PEP course offered for a sexual partner exposed on 2025-03-02."""
    case_id = traced_case(engine)
    p = person(engine, "CONTACT")
    return p, pep(engine, p, contact(engine, case_id, p, "2025-03-02"))["id"]


@pytest.mark.parametrize("missing", ["consent", "indication_note", "justification", "all"])
def test_pep_dose_1_needs_consent_indication_and_justification(engine, db, pep_course, missing):
    _, course_id = pep_course
    given = {} if missing == "all" else {k: v for k, v in CONSENT.items() if k != missing}
    before = contents(db)
    with pytest.raises(GuardRefused, match="PEP is off-label: informed consent, indication and justification "
                                           "must be recorded") as refused:
        dose(engine, course_id, "2025-03-03", consent=given)
    assert refused.value.rule == S6_2
    for key in ("consent", "indication_note", "justification"):
        assert (key in refused.value.fields) == (missing in (key, "all")), str(refused.value)
    assert contents(db) == before


def test_pep_dose_1_with_all_three_records_them(engine, db, pep_course):
    _, course_id = pep_course
    view = dose(engine, course_id, "2025-03-03", consent=CONSENT)
    expected = {"informed_consent": True, "indication": CONSENT["indication_note"],
                "justification": CONSENT["justification"]}
    assert (view["state"], view["dose1_on"], view["consent"]) == ("dose1_given", "2025-03-03", expected)
    assert course_row(db, course_id).consent == expected
    entry = last_entry(engine, course_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == ("dose", "offered", "dose1_given", S6_4)
    assert {k: entry["data"][k] for k in CONSENT} == CONSENT


def test_prep_needs_no_consent_fields(engine):
    course_id = prep(engine, person(engine, "P"))["id"]
    view = dose(engine, course_id, "2025-03-03")
    assert (view["state"], view["consent"]) == ("dose1_given", None)


@pytest.mark.parametrize(("born", "needs"), [
    ("2015-01-01", True),    # 10 on the dose date
    ("2013-03-04", True),    # 11: turns 12 the day after the dose
    ("2013-03-03", False),   # 12 on the dose date: approved from 12 (since September 2024)
    ("2010-01-01", False),   # 15
    ("2007-03-04", False),   # 17
])
def test_a_child_under_12_on_the_dose_date_needs_an_assessing_doctor(engine, db, born, needs):
    case_id = traced_case(engine)
    child = person(engine, "CHILD", born=D(born))
    course_id = pep(engine, child, contact(engine, case_id, child, "2025-03-02", "household"))["id"]
    if needs:
        before = contents(db)
        with pytest.raises(GuardRefused, match=r"under 12 is off-label .*assessed_by.*§6\.2\.2") as refused:
            dose(engine, course_id, "2025-03-03", consent=CONSENT)
        assert S6_2_2.split()[-1] in refused.value.message
        assert contents(db) == before
        view = dose(engine, course_id, "2025-03-03", consent=CONSENT, assessed_by="dr. Hansen, paediatrics")
        assert view["dose_assessments"] == [{"on": "2025-03-03", "assessed_by": "dr. Hansen, paediatrics"}]
    else:
        view = dose(engine, course_id, "2025-03-03", consent=CONSENT)
        assert view["dose_assessments"] == []
    assert view["state"] == "dose1_given"


def test_a_child_refusal_cites_6_2_2_as_its_rule(engine, db):
    """The under-12 refusal is §6.2.2 (children); §6.2.1 is pregnancy and breastfeeding (RULES.md §6)."""
    case_id = traced_case(engine)
    child = person(engine, "CHILD", born=D("2015-01-01"))
    course_id = pep(engine, child, contact(engine, case_id, child, "2025-03-02", "household"))["id"]
    with pytest.raises(GuardRefused) as refused:
        dose(engine, course_id, "2025-03-03", consent=CONSENT)
    assert refused.value.rule == S6_2_2
    assert str(refused.value).endswith(f"({S6_2_2})")


def test_a_child_needs_the_assessment_for_dose_2_too(engine, db, clock):
    """A child under 12 is vaccinated only as PEP (§6.2.2), and each dose needs the assessing doctor."""
    case_id = traced_case(engine)
    child = person(engine, "CHILD", born=D("2016-05-05"))
    course_id = pep(engine, child, contact(engine, case_id, child, "2025-03-02", "household"))["id"]
    dose(engine, course_id, "2025-03-03", consent=CONSENT, assessed_by="dr. Berg")
    clock.set(local("2025-03-31", 9))
    before = contents(db)
    with pytest.raises(GuardRefused, match="under 12"):
        dose(engine, course_id, "2025-03-31")
    assert contents(db) == before
    view = dose(engine, course_id, "2025-03-31", assessed_by="dr. Berg")
    assert view["state"] == "completed"
    assert view["dose_assessments"] == [{"on": "2025-03-03", "assessed_by": "dr. Berg"},
                                        {"on": "2025-03-31", "assessed_by": "dr. Berg"}]


def test_pregnancy_needs_an_assessing_doctor(engine, db):
    case_id = traced_case(engine)
    pregnant = person(engine, "PREGNANT", born=D("1995-02-02"), pregnant=True)
    course_id = pep(engine, pregnant, contact(engine, case_id, pregnant, "2025-03-02", "household"))["id"]
    before = contents(db)
    with pytest.raises(GuardRefused, match=r"pregnant or breastfeeding: off-label.*assessed_by.*§6\.2\.1") \
            as refused:
        dose(engine, course_id, "2025-03-03", consent=CONSENT)
    assert refused.value.rule == S6_2_1
    assert contents(db) == before
    view = dose(engine, course_id, "2025-03-03", consent=CONSENT, assessed_by="dr. Holm, obstetrics")
    assert (view["state"], view["dose_assessments"]) == (
        "dose1_given", [{"on": "2025-03-03", "assessed_by": "dr. Holm, obstetrics"}])


# ---- 4. PrEP target groups (§6.1) ----------------------------------------------------------------------------


def test_prep_needs_a_target_group(engine, db):
    p = person(engine, "P")
    before = contents(db)
    with pytest.raises(GuardRefused, match="PrEP is for the §6.1 target groups: give one with criteria") \
            as refused:
        prep(engine, p, ())
    assert refused.value.rule == S6_1
    assert contents(db) == before


@pytest.mark.parametrize("criterion", ["individual_assessment", "travel_clade_i"])
def test_prep_on_an_assessment_alone_needs_the_assessing_doctor(engine, db, criterion):
    p = person(engine, "P")
    before = contents(db)
    with pytest.raises(GuardRefused, match=f"{criterion} needs an .*assessed_by") as refused:
        prep(engine, p, (criterion,))
    assert refused.value.rule == S6_1
    assert contents(db) == before
    view = prep(engine, p, (criterion,), assessed_by="dr. Lund, infectious diseases")
    assert (view["state"], view["criteria"], view["assessed_by"]) == (
        "offered", [criterion], "dr. Lund, infectious diseases")
    assert course_row(db, view["id"]).assessed_by == "dr. Lund, infectious diseases"


@pytest.mark.parametrize("criteria", [("msm_two_partners_12w",), ("msm_sti_24w",)])
def test_prep_for_an_msm_target_group_needs_no_assessor(engine, criteria):
    """(Every criterion recorded must hold, §6.1: ``individual_assessment`` with an MSM criterion now needs its
    doctor too; tests/test_rules_course.py.)"""
    view = prep(engine, person(engine, "P"), criteria)
    assert (view["state"], view["criteria"], view["assessed_by"], view["timers"]) == (
        "offered", list(criteria), None, [])


# ---- 5. the second dose (§6.4) --------------------------------------------------------------------------------


@pytest.mark.parametrize(("dose1", "due"), [
    ("2025-03-03", "2025-03-31T00:00:00+02:00"),
    ("2025-03-10", "2025-04-07T00:00:00+02:00"),  # across the change to summer time
    ("2025-10-01", "2025-10-29T00:00:00+01:00"),  # across the change to winter time
    ("2025-03-02", "2025-03-30T00:00:00+01:00"),  # the night summer time begins (at 02:00): midnight is +01:00
])
def test_dose_2_falls_due_at_local_midnight_28_days_after_dose_1(engine, db, clock, dose1, due):
    clock.set(local(dose1, 9) if dose1 != "2025-03-02" else local("2025-03-03", 9))
    course_id = prep(engine, person(engine, "P"))["id"]
    view = dose(engine, course_id, dose1)
    assert view["state"] == "dose1_given"
    assert pending(engine, course_id) == {"dose2_due": due}
    timer = timer_of(engine, course_id, "dose2_due")
    assert (timer["rule"], timer["task"]) == (S6_4, f"give dose 2 (from {midnight(due[:10]).date()})")
    with db.reading() as session:
        [stored] = session.scalars(select(Timer).where(Timer.object_kind == "course", Timer.name == "dose2_due"))
        assert stored.due_at == T(due) and stored.due_at.utcoffset() == timedelta(0)
    assert T(due) == midnight(D(dose1) + timedelta(days=28))

    day27 = D(dose1) + timedelta(days=27)
    clock.set(local(day27, 12))
    before = contents(db)
    with pytest.raises(GuardRefused, match=f"at least 28 days after dose 1 .{dose1}.: not before "
                                           f"{day27 + timedelta(days=1)}") as refused:
        dose(engine, course_id, day27)
    assert refused.value.rule == S6_4
    assert contents(db) == before

    assert fired_on(engine, T(due) - SECOND, course_id) == []
    assert fired_on(engine, T(due), course_id) == [("dose2_due", T(due), "dose1_given", "dose2_due")]
    entry = last_entry(engine, course_id)
    assert (entry["trigger"], entry["actor"], entry["from"], entry["to"], entry["at"], entry["rule"]) == (
        "dose2_due", "timer:dose2_due", "dose1_given", "dose2_due", due, S6_4)
    assert course_row(db, course_id).state == "dose2_due"

    clock.set(local(D(dose1) + timedelta(days=28), 9))
    done = dose(engine, course_id, D(dose1) + timedelta(days=28))
    assert (done["state"], done["dose1_on"], done["dose2_on"]) == (
        "completed", dose1, str(D(dose1) + timedelta(days=28)))
    assert tasks_of(engine, course_id) == []
    assert timer_of(engine, course_id, "dose2_due")["satisfied_at"] is not None
    entry = last_entry(engine, course_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == ("dose", "dose2_due", "completed", S6_4)

    before = contents(db)
    with pytest.raises(GuardRefused, match="no more than 2 doses") as refused:
        dose(engine, course_id, D(dose1) + timedelta(days=28))
    assert refused.value.rule == S6_3
    assert contents(db) == before


def test_dose_2_may_be_recorded_before_its_timer_has_fired(engine, clock):
    """On day 28 the clock may not yet have fired dose2_due (a worker that is behind): dose 2 is accepted from
    dose1_given, and the timer is cancelled, so it never fires afterwards."""
    course_id = prep(engine, person(engine, "P"))["id"]
    dose(engine, course_id, "2025-03-03")
    clock.set(local("2025-03-31", 10))  # by hand: dose2_due (00:00) not fired
    view = dose(engine, course_id, "2025-03-31")
    assert view["state"] == "completed"
    timer = timer_of(engine, course_id, "dose2_due")
    assert (timer["status"], timer["satisfied_at"]) == ("cancelled", "2025-03-31T10:00:00+02:00")
    assert tasks_of(engine, course_id) == []
    assert fired_on(engine, T("2025-05-01T00:00:00+02:00"), course_id) == []


def test_the_worklist_shows_dose_2_overdue_after_the_default_14_days(engine, clock):
    course_id = prep(engine, person(engine, "P"))["id"]
    dose(engine, course_id, "2025-03-03")
    due = "2025-03-31T00:00:00+02:00"
    task = "give dose 2 (from 2025-03-31)"
    assert tasks_of(engine, course_id) == [(task, due, False)]
    advance_simulated_clock(engine, T(due))
    assert engine.show(course_id)["state"] == "dose2_due"
    assert tasks_of(engine, course_id) == [(task, due, False)]
    overdue_at = midnight("2025-04-14")
    advance_simulated_clock(engine, overdue_at - SECOND)
    assert tasks_of(engine, course_id) == [(task, due, False)]
    advance_simulated_clock(engine, overdue_at)
    assert tasks_of(engine, course_id) == [(task, due, True)]
    [item] = [i for i in engine.worklist() if i["object"] == course_id]
    assert item["rule"] == S6_4
    # Giving dose 2 takes it off the worklist.
    dose(engine, course_id, "2025-04-14")
    assert tasks_of(engine, course_id) == []


def test_the_overdue_days_are_a_setting(db, clock):
    engine = Engine(db, clock, Settings(dose2_overdue_after=timedelta(days=3)))
    course_id = prep(engine, person(engine, "P"))["id"]
    dose(engine, course_id, "2025-03-03")
    due = "2025-03-31T00:00:00+02:00"
    advance_simulated_clock(engine, midnight("2025-04-03") - SECOND)
    assert tasks_of(engine, course_id) == [("give dose 2 (from 2025-03-31)", due, False)]
    advance_simulated_clock(engine, midnight("2025-04-03"))
    assert tasks_of(engine, course_id) == [("give dose 2 (from 2025-03-31)", due, True)]


def test_dose_2_turns_overdue_at_local_midnight_across_the_daylight_saving_change(engine, clock):
    """Dose 1 on 2025-03-01: dose 2 due at 00:00 on 2025-03-29 (+01:00); 14 Danish days later is 00:00 on
    2025-04-12, in summer time (+02:00). All dates are Danish calendar dates (RULES.md, "Time")."""
    course_id = prep(engine, person(engine, "P"))["id"]
    dose(engine, course_id, "2025-03-01")
    due = "2025-03-29T00:00:00+01:00"
    assert pending(engine, course_id) == {"dose2_due": due}
    advance_simulated_clock(engine, midnight("2025-04-12") - SECOND)
    assert tasks_of(engine, course_id) == [("give dose 2 (from 2025-03-29)", due, False)]
    advance_simulated_clock(engine, midnight("2025-04-12"))
    assert tasks_of(engine, course_id) == [("give dose 2 (from 2025-03-29)", due, True)]


# ---- 6. mpox after dose 1 (§6.3) ------------------------------------------------------------------------------


def _course_in(engine: Engine, p: str, state: str) -> str:
    course_id = prep(engine, p)["id"]
    if state != "offered":
        dose(engine, course_id, "2025-03-03")
    if state == "dose2_due":
        advance_simulated_clock(engine, local("2025-04-02", 9))
    assert engine.show(course_id)["state"] == state
    return course_id


@pytest.mark.parametrize("how", ["confirm", "open_confirmed"])
@pytest.mark.parametrize("state", ["offered", "dose1_given", "dose2_due"])
def test_mpox_confirmed_for_the_person_cancels_their_course_in_the_same_transaction(engine, db, clock, state, how):
    p = person(engine, "P")
    course_id = _course_in(engine, p, state)
    bystander = _course_in(engine, person(engine, "BYSTANDER"), state)
    clock.set(clock.now() + timedelta(hours=3))
    today = clock.now().astimezone(DANISH).date()
    if how == "confirm":
        case_id = suspected(engine, p, str(today - timedelta(days=1)))
        engine.apply(case_id, "confirm", data={"pcr_on": today}, actor="staff:lab")
    else:
        case_id = engine.open("case", "open_confirmed", person=p, actor="staff:lab", data={
            "onset": today - timedelta(days=1), "symptoms": ["rash"], "criteria": [], "pcr_on": today})["id"]
    confirm_entry = last_entry(engine, case_id)
    assert (confirm_entry["trigger"], confirm_entry["to"]) == (how, "confirmed")

    view = engine.show(course_id)
    assert view["state"] == "cancelled"
    assert S6_3 in view["ended_because"] and "mpox confirmed" in view["ended_because"]
    assert course_row(db, course_id).state == "cancelled"
    entry = last_entry(engine, course_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"], entry["actor"]) == (
        "mpox_confirmed", state, "cancelled", S6_3, "staff:lab")
    assert entry["at"] == confirm_entry["at"] == now_local(clock)
    assert case_id in entry["reason"]
    assert abs(entry["seq"] - confirm_entry["seq"]) == 1  # written together, nothing in between
    if state == "dose1_given":
        assert timer_of(engine, course_id, "dose2_due")["status"] == "cancelled"
        assert [c["name"] for c in entry["timers_cancelled"]] == ["dose2_due"]
    if state == "dose2_due":  # already fired: its open task is closed, not done (issue 12 item 14)
        closed = timer_of(engine, course_id, "dose2_due")
        assert (closed["status"], closed["satisfied_at"]) == ("cancelled", None)
    assert pending(engine, course_id) == {}
    assert tasks_of(engine, course_id) == []

    # Another person's course is untouched.
    assert engine.show(bystander)["state"] == state

    # No (further) dose.
    before = contents(db)
    with pytest.raises(RuleRefused, match=f"{course_id} is cancelled"):
        dose(engine, course_id, today)
    assert contents(db) == before
    assert fired_on(engine, clock.now() + timedelta(days=60), course_id) == []


def test_a_refused_confirmation_leaves_the_course_as_it_was(engine, db):
    p = person(engine, "P")
    course_id = _course_in(engine, p, "dose1_given")
    case_id = suspected(engine, p, "2025-03-02")
    before = contents(db)
    with pytest.raises(GuardRefused, match="before symptom onset"):
        engine.apply(case_id, "confirm", data={"pcr_on": D("2025-03-01")}, actor=STAFF)
    assert contents(db) == before
    assert engine.show(course_id)["state"] == "dose1_given"


def test_a_completed_course_stays_completed_when_mpox_is_confirmed(engine, clock):
    p = person(engine, "P", smallpox_vaccinated=True)
    course_id = prep(engine, p)["id"]
    assert dose(engine, course_id, "2025-03-03")["state"] == "completed"
    confirmed(engine, p, "2025-03-02", "2025-03-03")
    assert engine.show(course_id)["state"] == "completed"
    assert [e["trigger"] for e in engine.audit(entity=course_id)] == ["offer", "dose"]


def test_dose_2_after_mpox_is_refused_citing_6_3(engine, clock):
    """§6.3: "If mpox develops after dose 1, dose 2 is not given": the refusal names that section."""
    p = person(engine, "P")
    course_id = _course_in(engine, p, "dose1_given")
    confirmed(engine, p, "2025-03-02", "2025-03-03")
    clock.set(local("2025-03-31", 9))
    with pytest.raises(RuleRefused) as refused:
        dose(engine, course_id, "2025-03-31")
    assert refused.value.rule == S6_3, str(refused.value)


def test_no_new_course_for_a_person_with_confirmed_mpox(engine, db):
    """§6.3 "a person who has had mpox is not vaccinated" (README: "no vaccination after mpox"): once a case is
    confirmed for the person, a new offer is refused like one for a person registered with previous mpox."""
    p = person(engine, "P")
    course_id = _course_in(engine, p, "dose1_given")
    confirmed(engine, p, "2025-03-02", "2025-03-03")
    assert engine.show(course_id)["state"] == "cancelled"
    before = contents(db)
    with pytest.raises(GuardRefused) as refused:
        prep(engine, p, ("msm_two_partners_12w",))
    assert refused.value.rule == S6_3
    assert contents(db) == before


# ---- 7. decline -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["offered", "dose1_given", "dose2_due"])
def test_decline_ends_the_course_and_cancels_its_timers(engine, db, clock, state):
    case_id = traced_case(engine)
    p = person(engine, "CONTACT")
    course_id = pep(engine, p, contact(engine, case_id, p, "2025-03-02"))["id"]
    if state != "offered":
        dose(engine, course_id, "2025-03-03", consent=CONSENT)
    if state == "dose2_due":
        advance_simulated_clock(engine, local("2025-04-01", 9))
    assert engine.show(course_id)["state"] == state
    # The timers still waiting, and a fired dose 2 task not yet done: all end, undone.
    was_pending = set(pending(engine, course_id)) | ({"dose2_due"} if state == "dose2_due" else set())

    view = engine.apply(course_id, "decline", actor=STAFF, reason="does not want the vaccine")
    assert (view["state"], view["ended_because"]) == ("declined", "declined")
    assert pending(engine, course_id) == {}
    assert tasks_of(engine, course_id) == []
    assert {t["name"] for t in view["timers"] if t["status"] == "cancelled"} >= was_pending
    entry = last_entry(engine, course_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"], entry["reason"]) == (
        "decline", state, "declined", S6, "does not want the vaccine")
    assert {c["name"] for c in entry["timers_cancelled"]} == was_pending
    assert course_row(db, course_id).state == "declined"
    assert fired_on(engine, clock.now() + timedelta(days=60), course_id) == []

    before = contents(db)
    for trigger, data in [("dose", {"on": clock.now().astimezone(DANISH).date(), **CONSENT}), ("decline", {})]:
        with pytest.raises(RuleRefused, match=f"{course_id} is declined"):
            engine.apply(course_id, trigger, data=data, actor=STAFF)
    assert contents(db) == before


def test_a_completed_course_cannot_be_declined(engine, db):
    course_id = prep(engine, person(engine, "P", born=D("1960-01-01")))["id"]
    dose(engine, course_id, "2025-03-03")
    before = contents(db)
    with pytest.raises(TriggerNotAllowed, match=f"{course_id} is completed"):
        engine.apply(course_id, "decline", actor=STAFF)
    assert contents(db) == before


def test_course_instants_are_stored_in_utc(db, engine):
    course_id = prep(engine, person(engine, "P"))["id"]
    dose(engine, course_id, "2025-03-03")
    with db.reading() as session:
        for timer in session.scalars(select(Timer).where(Timer.object_kind == "course")):
            assert timer.due_at.tzinfo is not None and timer.due_at.utcoffset() == timedelta(0)
            assert timer.due_at == T("2025-03-31T00:00:00+02:00").astimezone(UTC)
