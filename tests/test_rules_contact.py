"""Issue 12, the close-contact rules read again from the Danish text (§3.3.1, §5.1-§5.5, §6.2 Table 1).

Each rule at its boundary: a clinician's risk covers the exposure it was given for (a later, higher exposure raises
it again; ``contact assess`` re-assesses), face-to-face is medium, health staff with PPE only after an individual
assessment, the dead handled as patients, a negative test giving the contact back its monitoring, ``pep_window``
telling the truth after day 14 whatever was offered, an offered course following the last exposure, anonymous
tracing only for a case that declined, tasks cancelled or missed but never "done" when they were not, and the open
symptom list. Pure rules run once; storage on SQLite and PostgreSQL (the ``engine`` and ``cli_db`` fixtures), the
CLI (exit 3 with the section) and the HTTP API (409 with ``rule``).
"""

from __future__ import annotations

import itertools
import re
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from engine.core import Engine
from persistence.database import Database
from persistence.models import Case, Timer
from scheduler.firing import advance_simulated_clock
from tests.helpers import confirmed, contents, last_entry, person, pk, suspected, tasks_of
from tests.test_cli import doc, ok, refused
from tests.test_cli_contacts import traced  # noqa: F401 - the fixture: case-1 confirmed, consenting
from tests.test_http_api import check_error, done, post, snapshot
from workflows.case import CaseFacts
from workflows.contact import (
    BODY_HANDLING,
    CONTACT,
    DOCTOR_INFORM_TASK,
    EXPOSURE_KINDS,
    EXPOSURE_RISK,
    INFORM_TASK,
    ContactFacts,
    exposure_risk,
    infectious_period,
    pep_exposure,
    recorded_exposures,
)
from workflows.errors import GuardRefused, TriggerNotAllowed

D = date.fromisoformat
T = datetime.fromisoformat
DANISH = ZoneInfo("Europe/Copenhagen")
STAFF = "staff:test"
SECOND = timedelta(seconds=1)
S1_1, S3_3_1, S5_1, S5_4, S5_5, S6_2 = (
    f"SST-mpox-7.1 {s}" for s in ("§1.1", "§3.3.1", "§5.1", "§5.4", "§5.5", "§6.2"))
_refs = itertools.count()


def local(day: str, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(D(day), time(hour, minute), tzinfo=DANISH)


def ex(on: str, kind: str, risk: str | None = None, reason: str | None = None) -> dict[str, Any]:
    return {"on": on, "kind": kind, "risk": risk, "reason": reason}


def traced_case(engine: Engine, onset: str = "2025-03-01", pcr_on: str = "2025-03-03",
                consent: bool | None = True) -> str:
    case_id = confirmed(engine, person(engine, f"CASE-{next(_refs)}"), onset, pcr_on)
    if consent is not None:
        engine.apply(case_id, "consent", data={"tracing": consent}, actor=STAFF)
    return case_id


def add(engine: Engine, case_id: str, exposed: str, kind: str = "sexual", *, person_id: str | None = None,
        risk: str | None = None, reason: str | None = None, anonymous: bool = False) -> dict[str, Any]:
    return engine.open("contact", "add", person=person_id or person(engine, f"C-{next(_refs)}"), actor=STAFF,
                       data={"case": case_id, "exposed": D(exposed), "kind": kind, "risk": risk, "reason": reason,
                             "anonymous_via_doctor": anonymous})


def expose(engine: Engine, contact_id: str, exposed: str, kind: str, risk: str | None = None,
           reason: str | None = None) -> dict[str, Any]:
    return engine.apply(contact_id, "expose", actor=STAFF,
                        data={"exposed": D(exposed), "kind": kind, "risk": risk, "reason": reason})


def assess(engine: Engine, contact_id: str, risk: str, reason: str | None) -> dict[str, Any]:
    return engine.apply(contact_id, "assess", actor=STAFF, data={"risk": risk, "reason": reason})


def pending(engine: Engine, object_id: str) -> dict[str, str]:
    return {t["name"]: t["due_at"] for t in engine.show(object_id)["timers"] if t["status"] == "pending"}


def timers_named(db: Database, contact_id: str, name: str) -> list[tuple[str, Any, Any]]:
    """(status, satisfied_at, due_at) of the contact's timers of that name, in id order."""
    with db.reading() as session:
        return [(t.status, t.satisfied_at, t.due_at) for t in session.scalars(
            select(Timer).where(Timer.object_kind == "contact", Timer.object_id == pk(contact_id),
                                Timer.name == name).order_by(Timer.id))]


def pep_offer(engine: Engine, contact_id: str) -> dict[str, Any]:
    person_id = engine.show(contact_id)["person"]
    return engine.open("course", "offer", person=person_id, actor=STAFF, data={
        "indication": "pep", "contact": contact_id, "criteria": [], "assessed_by": "dr. Lund, infection medicine"})


def symptoms(engine: Engine, contact_id: str, onset: str, listed: tuple[str, ...] = ("rash",),
             note: str | None = None) -> dict[str, Any]:
    return engine.apply(contact_id, "symptoms", actor=STAFF,
                        data={"onset": D(onset), "symptoms": list(listed), "symptom_note": note})


# ---- pure rules ---------------------------------------------------------------------------------------------


def test_table_1_has_no_low_kind_and_face_to_face_is_medium():
    """The Danish Table 1: "Lav" is "ingen fysisk kontakt eller usandsynlig eksponering til dråber"; three hours
    face to face within 2 m (§5.1) does not make droplets unlikely. The old digest had face_to_face low."""
    assert EXPOSURE_RISK["face_to_face"] == "medium"
    assert "low" not in EXPOSURE_RISK.values()
    assert "healthcare_with_ppe" in EXPOSURE_KINDS and "healthcare_with_ppe" not in EXPOSURE_RISK


def _facts(exposures: list[dict[str, Any]], risk: str = "high", assessed: bool = False) -> ContactFacts:
    days = [D(e["on"]) for e in exposures]
    return ContactFacts(case_id=1, exposure_kind=exposures[-1]["kind"], risk=risk, exposed_on=min(days),
                        last_exposure_on=max(days), pep_window="optimal", exposures=exposures, risk_assessed=assessed)


def test_each_exposure_has_its_own_risk_and_pep_runs_from_the_last_high_or_medium_one():
    facts = _facts([ex("2025-03-01", "sexual", "low", "condom"), ex("2025-03-04", "intact_skin"),
                    ex("2025-03-06", "household", "low", "separate room")])
    assert [exposure_risk(e) for e in facts.exposures] == ["low", "medium", "low"]
    assert pep_exposure(facts) == D("2025-03-04")
    assert pep_exposure(_facts([ex("2025-03-01", "sexual", "low", "condom")])) is None
    # An individually assessed health worker with PPE has the assessed risk (no Table 1 row).
    assert exposure_risk(ex("2025-03-02", "healthcare_with_ppe", "medium", "visor slipped")) == "medium"


def test_a_record_from_before_per_exposure_assessments_keeps_its_assessment():
    """Records written before issue 12 have exposures without "risk": an assessed contact's risk was the
    contact's, over every exposure then recorded; an unassessed one is Table 1."""
    old = _facts([{"on": "2025-03-01", "kind": "sexual"}, {"on": "2025-03-03", "kind": "household"}], risk="low",
                 assessed=True)
    assert recorded_exposures(old) == [ex("2025-03-01", "sexual", "low"), ex("2025-03-03", "household", "low")]
    assert pep_exposure(old) is None
    plain = _facts([{"on": "2025-03-01", "kind": "face_to_face"}], risk="low")
    assert recorded_exposures(plain) == [ex("2025-03-01", "face_to_face")]
    assert pep_exposure(plain) == D("2025-03-01")


@pytest.mark.parametrize("kind", EXPOSURE_KINDS)
def test_after_death_the_infectious_period_goes_on_only_for_handling_the_body(kind):
    """§3.3.1 "Afdøde håndteres efter samme forholdsregler som patienter": death ends the period for a sexual,
    household, passenger or face-to-face exposure, not for handling the body."""
    died = CaseFacts(onset=D("2025-03-01"), pcr_on=D("2025-03-02"), died_on=D("2025-03-05"))
    today = D("2025-03-09")
    end = today if kind in BODY_HANDLING else D("2025-03-05")
    assert infectious_period("deceased", died, today, kind) == (D("2025-03-01"), end)
    # Healed before dying: the body is not infectious after healing, whatever the kind.
    healed = CaseFacts(onset=D("2025-03-01"), pcr_on=D("2025-03-02"), healed_on=D("2025-03-04"),
                       died_on=D("2025-03-05"))
    assert infectious_period("deceased", healed, today, kind) == (D("2025-03-01"), D("2025-03-04"))


def test_body_handling_kinds_are_the_decided_ones():
    assert set(BODY_HANDLING) == {"mucosa_or_broken_skin", "sharps", "cleaning", "intact_skin", "healthcare_no_ppe",
                                  "healthcare_with_ppe"}


def test_a_case_confirmed_without_onset_is_infectious_from_its_sample_date():
    """§1.1 a PCR-confirmed case can have no symptoms (issue 12 item 15): the period starts at the sample date."""
    facts = CaseFacts(onset=None, pcr_on=D("2025-03-02"))
    assert infectious_period("confirmed", facts, D("2025-03-09")) == (D("2025-03-02"), D("2025-03-09"))


def test_no_contact_state_is_final_and_the_diagram_still_draws():
    from entry.web.diagram import svg

    assert CONTACT.final == frozenset()
    assert CONTACT.problems() == []
    assert [(s.dest, s.rule) for s in CONTACT.transitions if s.trigger == "case_discarded"] == [
        ("monitored", S5_5), ("exposed", S5_5), ("released", S5_5)]
    from entry.web import i18n

    i18n.activate("en")
    drawn = svg(CONTACT, dict.fromkeys(CONTACT.states, 0))
    assert "case discarded" in drawn and 'id="state_symptomatic"' in drawn
    i18n.activate("da")  # the page's language: the states and triggers in Danish, the node ids as they are
    drawn = svg(CONTACT, dict.fromkeys(CONTACT.states, 0))
    assert "tilfælde afkræftet" in drawn and 'id="state_symptomatic"' in drawn
    assert not re.search(r">[^<]*\b(case_discarded|symptomatic)\b[^<]*<", drawn)
    assert "case_discarded" in CONTACT.mermaid()


# ---- item 5: Table 1, face to face, health staff with PPE ---------------------------------------------------


def test_face_to_face_is_medium_with_its_pep_windows_armed_across_summer_time(engine, clock):
    clock.set(local("2025-03-26", 10))
    case_id = traced_case(engine, onset="2025-03-20", pcr_on="2025-03-22")
    contact = add(engine, case_id, "2025-03-26", "face_to_face")
    assert (contact["risk"], contact["risk_assessed"], contact["pep_window"]) == ("medium", False, "optimal")
    # Summer time begins 2025-03-30: the windows close at local midnight, +02:00.
    assert pending(engine, contact["id"]) == {
        "pep_optimal_window_closes": "2025-03-31T00:00:00+02:00", "pep_window_closes": "2025-04-10T00:00:00+02:00",
        "pep_assessment_due": "2025-04-10T00:00:00+02:00", "monitoring_ends": "2025-04-17T00:00:00+02:00",
        "inform_due": "2025-03-27T10:00:00+01:00"}
    assert ("assess PEP by 2025-04-09 (best by 2025-03-30)", "2025-04-10T00:00:00+02:00", False) in tasks_of(
        engine, contact["id"])


def test_health_staff_with_ppe_need_an_individual_assessment_with_risk_and_reason(engine, db):
    """§5.1 footnote: "anses ikke i almindelighed for at være en nær kontakt" (not as a rule): refused unless an
    individual assessment is recorded, then registered with the risk it gives."""
    case_id = traced_case(engine)
    nurse = person(engine, "NURSE")
    before = contents(db)
    for risk, reason in [(None, None), ("medium", None), (None, "visor slipped")]:
        with pytest.raises(GuardRefused, match="not, as a rule, close contacts: register one only after an "
                                               "individual assessment") as refused_:
            add(engine, case_id, "2025-03-02", "healthcare_with_ppe", person_id=nurse, risk=risk, reason=reason)
        assert refused_.value.rule == S5_1 and "risk reason" in str(refused_.value)
    assert contents(db) == before

    view = add(engine, case_id, "2025-03-02", "healthcare_with_ppe", person_id=nurse, risk="medium",
               reason="visor slipped while swabbing a lesion")
    assert (view["risk"], view["risk_assessed"], view["pep_window"]) == ("medium", True, "optimal")
    assert view["exposures"] == [ex("2025-03-02", "healthcare_with_ppe", "medium",
                                    "visor slipped while swabbing a lesion")]
    assert "pep_assessment_due" in pending(engine, view["id"])
    # Assessed low: a contact, monitored, no PEP.
    low = add(engine, case_id, "2025-03-02", "healthcare_with_ppe", risk="low", reason="gown torn, no contact")
    assert (low["risk"], low["pep_window"]) == ("low", "not_indicated")
    assert set(pending(engine, low["id"])) == {"monitoring_ends", "inform_due"}
    # The same on a later exposure of a known contact.
    other = add(engine, case_id, "2025-03-01", "intact_skin")["id"]
    state = contents(db)
    with pytest.raises(GuardRefused, match="not, as a rule, close contacts") as refused_:
        expose(engine, other, "2025-03-02", "healthcare_with_ppe")
    assert refused_.value.rule == S5_1
    assert contents(db) == state
    assert expose(engine, other, "2025-03-02", "healthcare_with_ppe", "high", "needle-stick through the glove")[
        "risk"] == "high"


# ---- item 4: a clinician's risk covers its exposure; re-assessment ------------------------------------------


def test_a_later_exposure_of_higher_risk_raises_an_assessed_low_contact(engine, db, clock):
    case_id = traced_case(engine)
    contact = add(engine, case_id, "2025-03-01", "sexual", risk="low", reason="condom, no lesions at the time")
    contact_id = contact["id"]
    assert (contact["risk"], contact["risk_assessed"], contact["pep_window"]) == ("low", True, "not_indicated")
    assert set(pending(engine, contact_id)) == {"monitoring_ends", "inform_due"}

    # A later exposure of the same contact: Table 1 medium. The low assessment covered only the first. (The risk
    # is still the assessment's doing: Table 1 alone would make the sexual exposure high.)
    clock.set(local("2025-03-04", 9))
    view = expose(engine, contact_id, "2025-03-04", "intact_skin")
    assert (view["risk"], view["risk_assessed"], view["pep_window"]) == ("medium", True, "optimal")
    assert view["exposures"] == [ex("2025-03-01", "sexual", "low", "condom, no lesions at the time"),
                                 ex("2025-03-04", "intact_skin")]
    assert pending(engine, contact_id) == {
        "monitoring_ends": "2025-03-26T00:00:00+01:00", "pep_optimal_window_closes": "2025-03-09T00:00:00+01:00",
        "pep_window_closes": "2025-03-19T00:00:00+01:00", "pep_assessment_due": "2025-03-19T00:00:00+01:00",
        "inform_due": "2025-03-04T08:00:00+01:00"}
    # Another sexual exposure: high again (Table 1), from its own date.
    view = expose(engine, contact_id, "2025-03-04", "sexual")
    assert (view["risk"], view["risk_assessed"]) == ("high", False)

    # --risk on a new exposure needs its reason (§6.2), refused without writing anything.
    before = contents(db)
    with pytest.raises(GuardRefused, match="give its reason with reason") as refused_:
        expose(engine, contact_id, "2025-03-04", "household", "low")
    assert refused_.value.rule == S6_2
    assert contents(db) == before


def test_a_reassessment_covers_the_exposures_so_far_and_recomputes_the_windows(engine, db, clock):
    case_id = traced_case(engine)
    contact_id = add(engine, case_id, "2025-03-01", "sexual")["id"]
    expose(engine, contact_id, "2025-03-02", "household")
    engine.apply(contact_id, "inform", data={}, actor=STAFF)

    # Refused without a reason (or a risk): nothing written.
    before = contents(db)
    for risk, reason in [("low", None), (None, "seen again"), ("low", "")]:
        with pytest.raises(GuardRefused, match="give the risk level with risk") as refused_:
            assess(engine, contact_id, risk, reason)  # type: ignore[arg-type]
        assert refused_.value.rule == S6_2
    assert contents(db) == before

    clock.set(local("2025-03-05", 10))
    view = assess(engine, contact_id, "low", "partner: no lesions; household: separate flat")
    assert (view["risk"], view["risk_assessed"], view["pep_window"]) == ("low", True, "not_indicated")
    assert view["exposures"] == [ex(d, k, "low", "partner: no lesions; household: separate flat")
                                 for d, k in (("2025-03-01", "sexual"), ("2025-03-02", "household"))]
    assert pending(engine, contact_id) == {"monitoring_ends": "2025-03-24T00:00:00+01:00"}
    entry = last_entry(engine, contact_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == ("assess", "monitored", "monitored", S6_2)
    assert entry["timers_done"] == []  # the PEP task is not needed any more: cancelled, never "done"
    assert [(status, satisfied) for status, satisfied, _ in timers_named(db, contact_id, "pep_assessment_due")] == [
        ("cancelled", None), ("cancelled", None)]  # the add's (re-armed by the expose) and the expose's
    assert tasks_of(engine, contact_id) == []

    # Re-assessed high on day 8: the windows as they stand (the optimal one is over), from the last exposure.
    clock.set(local("2025-03-10", 10))
    view = assess(engine, contact_id, "high", "the partner's lesions were open after all")
    assert (view["risk"], view["risk_assessed"], view["pep_window"]) == ("high", False, "extended")
    assert pending(engine, contact_id) == {
        "monitoring_ends": "2025-03-24T00:00:00+01:00", "pep_window_closes": "2025-03-17T00:00:00+01:00",
        "pep_assessment_due": "2025-03-17T00:00:00+01:00"}
    assert tasks_of(engine, contact_id) == [
        ("assess PEP by 2025-03-16 (best by 2025-03-06)", "2025-03-17T00:00:00+01:00", False)]

    # Released: no re-assessment (decision: nothing left it could change).
    advance_simulated_clock(engine, T("2025-03-24T00:00:00+01:00"))
    before = contents(db)
    with pytest.raises(TriggerNotAllowed, match=f"{contact_id} is released: 'assess' is not allowed"):
        assess(engine, contact_id, "low", "too late")
    assert contents(db) == before


# ---- item 8: the dead are handled as patients ---------------------------------------------------------------


def test_handling_the_body_exposes_after_death_a_sexual_exposure_does_not(engine, db, clock):
    clock.set(local("2025-03-06", 9))
    case_id = traced_case(engine, onset="2025-03-01", pcr_on="2025-03-02")
    engine.apply(case_id, "die", data={"on": D("2025-03-03")}, actor=STAFF)

    # On the day of death every kind still counts.
    assert add(engine, case_id, "2025-03-03", "sexual")["state"] == "exposed"
    later = person(engine, "LATER")
    before = contents(db)
    for kind in ("sexual", "household", "passenger_8h", "face_to_face"):
        with pytest.raises(GuardRefused, match=f"died on 2025-03-03: after death only handling the body exposes.*"
                                               f"a {kind} exposure on 2025-03-04 is not one") as refused_:
            add(engine, case_id, "2025-03-04", kind, person_id=later)
        assert refused_.value.rule == S3_3_1
    assert contents(db) == before
    for kind in ("cleaning", "mucosa_or_broken_skin", "sharps", "intact_skin", "healthcare_no_ppe"):
        view = add(engine, case_id, "2025-03-05", kind)
        assert (view["state"], view["exposed_on"]) == ("exposed", "2025-03-05"), kind
    # Still no date in the future, and a corrected sexual exposure cannot move after the death either.
    with pytest.raises(GuardRefused, match="after today"):
        add(engine, case_id, "2025-03-07", "cleaning")
    partner = add(engine, case_id, "2025-03-02", "sexual")["id"]
    with pytest.raises(GuardRefused, match="died on 2025-03-03") as refused_:
        engine.apply(partner, "correct", data={"exposed": D("2025-03-05"), "exposure": None}, actor=STAFF)
    assert refused_.value.rule == S3_3_1


def test_a_suspected_case_that_died_is_no_source_of_close_contacts(engine, db):
    case_id = suspected(engine, person(engine, "DIED-SUSPECTED"))
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    engine.apply(case_id, "die", data={"on": D("2025-03-02")}, actor=STAFF)
    contact_person = person(engine, "WASHED-THE-BODY")
    before = contents(db)
    with pytest.raises(GuardRefused, match=f"{case_id} died as a suspected case, never confirmed by PCR") as refused_:
        add(engine, case_id, "2025-03-02", "cleaning", person_id=contact_person)
    assert refused_.value.rule == S5_1
    assert contents(db) == before


# ---- item 7: a negative test gives the contact back its monitoring ------------------------------------------


def test_a_discarded_case_gives_the_contact_back_its_monitoring_across_summer_time(engine, db, clock):
    """§2.2.1 "Selvisolationen kan ophøre, hvis prøvesvaret er negativt"; §5.5 21 days after the exposure: the
    contact is monitored again until 21 days after its last exposure (2025-03-09: 00:00 on 2025-03-31, summer
    time), with its PEP windows as they now stand."""
    clock.set(local("2025-03-09", 10))
    case_id = traced_case(engine, onset="2025-03-05", pcr_on="2025-03-07")
    contact_id = add(engine, case_id, "2025-03-09", "household")["id"]
    engine.apply(contact_id, "inform", data={}, actor=STAFF)
    clock.set(local("2025-03-11", 10))
    became = symptoms(engine, contact_id, "2025-03-11", ("fever", "chills"))["became_case"]
    with db.reading() as session:
        assert session.get(Case, pk(became)).from_contact == pk(contact_id)

    # Negative test on 2025-03-15: day 6 after the exposure, the optimal window is over.
    clock.set(local("2025-03-15", 9))
    engine.apply(became, "discard", data={}, actor=STAFF)
    view = engine.show(contact_id)
    assert (view["state"], view["pep_window"], view["became_case"]) == ("monitored", "extended", became)
    assert pending(engine, contact_id) == {
        "monitoring_ends": "2025-03-31T00:00:00+02:00", "pep_window_closes": "2025-03-24T00:00:00+01:00",
        "pep_assessment_due": "2025-03-24T00:00:00+01:00"}
    assert tasks_of(engine, contact_id) == [
        ("assess PEP by 2025-03-23 (best by 2025-03-13)", "2025-03-24T00:00:00+01:00", False)]
    entry = last_entry(engine, contact_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"], entry["reason"]) == (
        "case_discarded", "symptomatic", "monitored", S5_5, f"from {became}: discard")

    # Released at its instant, not a second earlier.
    advance_simulated_clock(engine, T("2025-03-31T00:00:00+02:00") - SECOND)
    assert engine.show(contact_id)["state"] == "monitored"
    advance_simulated_clock(engine, T("2025-03-31T00:00:00+02:00"))
    assert engine.show(contact_id)["state"] == "released"


@pytest.mark.parametrize(("discarded_at", "state"), [
    ("2025-03-23T23:59:59+01:00", "monitored"),  # a second before the 21 days end: monitored until then
    ("2025-03-24T00:00:00+01:00", "released"),   # at the end: released at once
])
def test_a_discard_at_the_end_of_monitoring(engine, clock, discarded_at, state):
    case_id = traced_case(engine)
    contact_id = add(engine, case_id, "2025-03-02", "sexual")["id"]
    engine.apply(contact_id, "inform", data={}, actor=STAFF)
    clock.set(local("2025-03-10", 10))
    became = symptoms(engine, contact_id, "2025-03-09")["became_case"]
    clock.set(T(discarded_at))
    engine.apply(became, "discard", data={}, actor=STAFF)
    view = engine.show(contact_id)
    assert (view["state"], view["pep_window"]) == (state, "closed")
    assert tasks_of(engine, contact_id) == []  # no PEP task for a window long over
    if state == "monitored":
        assert pending(engine, contact_id) == {"monitoring_ends": "2025-03-24T00:00:00+01:00"}
        fired = advance_simulated_clock(engine, T("2025-03-24T00:00:00+01:00"))
        assert [(f.name, f.to_state) for f in fired if f.object == contact_id] == [("monitoring_ends", "released")]
    else:
        assert pending(engine, contact_id) == {}
        assert (last_entry(engine, contact_id)["from"], last_entry(engine, contact_id)["to"]) == (
            "symptomatic", "released")


def test_a_contact_not_informed_before_its_symptoms_is_to_be_informed_after_the_discard(engine, db, clock):
    """Decision: `monitored` means informed; a contact whose symptoms came before STPS reached it goes back to
    `exposed` with a new inform task (the old one was cancelled at the symptoms, not done)."""
    case_id = traced_case(engine)
    contact_id = add(engine, case_id, "2025-03-02", "sexual")["id"]
    clock.set(local("2025-03-03", 12))
    became = symptoms(engine, contact_id, "2025-03-03")["became_case"]
    assert timers_named(db, contact_id, "inform_due")[0][:2] == ("cancelled", None)
    clock.set(local("2025-03-05", 9))
    engine.apply(became, "discard", data={}, actor=STAFF)
    assert engine.show(contact_id)["state"] == "exposed"
    assert (INFORM_TASK, "2025-03-06T09:00:00+01:00", False) in tasks_of(engine, contact_id)
    assert engine.apply(contact_id, "inform", data={}, actor=STAFF)["state"] == "monitored"


def test_once_the_case_is_confirmed_symptomatic_has_no_way_out(engine, db, clock):
    case_id = traced_case(engine)
    contact_id = add(engine, case_id, "2025-03-02", "sexual")["id"]
    became = symptoms(engine, contact_id, "2025-03-03")["became_case"]
    engine.apply(became, "confirm", data={"pcr_on": D("2025-03-03")}, actor=STAFF)
    before = contents(db)
    with pytest.raises(TriggerNotAllowed):
        engine.apply(became, "discard", data={}, actor=STAFF)
    for trigger, data in [("inform", {}), ("expose", {"exposed": D("2025-03-03"), "kind": "sexual"}),
                          ("assess", {"risk": "low", "reason": "x"})]:
        with pytest.raises(TriggerNotAllowed, match=f"{contact_id} is symptomatic"):
            engine.apply(contact_id, trigger, data=data, actor=STAFF)
    assert contents(db) == before
    assert engine.show(contact_id)["state"] == "symptomatic"


# ---- item 9: pep_window tells the truth; an offered course follows the last exposure -------------------------


def test_the_pep_window_closes_on_day_15_after_a_declined_course(engine, db, clock):
    """Before issue 12 the offer satisfied the window's own timer, so a contact offered PEP that declined said
    `pep_window: extended` for ever. The assessment task is done by the offer; the window closes by itself."""
    case_id = traced_case(engine)
    contact_id = add(engine, case_id, "2025-03-02", "sexual")["id"]
    engine.apply(contact_id, "inform", data={}, actor=STAFF)
    course_id = pep_offer(engine, contact_id)["id"]
    offered = engine.show(contact_id)
    assert offered["pep_offered_at"] == "2025-03-03T08:00:00+01:00"
    assert [(s, sat) for s, sat, _ in timers_named(db, contact_id, "pep_assessment_due")] == [
        ("cancelled", T("2025-03-03T08:00:00+01:00"))]  # done in time
    assert pending(engine, contact_id)["pep_window_closes"] == "2025-03-17T00:00:00+01:00"
    engine.apply(course_id, "decline", data={}, actor=STAFF)

    advance_simulated_clock(engine, T("2025-03-17T00:00:00+01:00") - SECOND)
    assert engine.show(contact_id)["pep_window"] == "extended"
    advance_simulated_clock(engine, T("2025-03-17T00:00:00+01:00"))
    assert engine.show(contact_id)["pep_window"] == "closed"
    assert timers_named(db, contact_id, "pep_window_closes")[0][0] == "fired"
    assert tasks_of(engine, contact_id) == []


def test_after_a_declined_pep_course_a_later_exposure_is_assessed_for_pep_anew(engine, db, clock):
    """§6.2: declining ends the offer, not the contact's right to an assessment of a later exposure. The decline
    reaches the contact (an internal trigger, never offered to staff) and clears `pep_offered_at`."""
    case_id = traced_case(engine)
    contact_id = add(engine, case_id, "2025-03-02", "sexual")["id"]
    engine.apply(contact_id, "inform", data={}, actor=STAFF)
    course_id = pep_offer(engine, contact_id)["id"]
    engine.apply(course_id, "decline", data={}, actor=STAFF)
    assert engine.show(contact_id)["pep_offered_at"] is None
    entry = last_entry(engine, contact_id)
    assert (entry["trigger"], entry["rule"], entry["reason"]) == (
        "pep_course_ended", S6_2, f"from {course_id}: decline")
    assert tasks_of(engine, contact_id) == []  # the exposure of 03-02 was assessed: PEP offered, declined
    clock.set(local("2025-03-05", 10))
    expose(engine, contact_id, "2025-03-05", "sexual")
    assert [(t, due) for t, due, _ in tasks_of(engine, contact_id)] == [
        ("assess PEP by 2025-03-19 (best by 2025-03-09)", "2025-03-20T00:00:00+01:00")]
    # Internal triggers are not offered to people: the refusal lists only what staff can do.
    with pytest.raises(TriggerNotAllowed) as refused_inform:
        engine.apply(contact_id, "inform", data={}, actor=STAFF)
    assert "pep_course_ended" not in str(refused_inform.value) and "pep_offered" not in str(refused_inform.value)


def test_an_offered_course_follows_the_contacts_new_last_pep_exposure(engine, db, clock):
    case_id = traced_case(engine)
    contact_id = add(engine, case_id, "2025-03-01", "sexual")["id"]
    course_id = pep_offer(engine, contact_id)["id"]
    assert engine.show(course_id)["exposure_on"] == "2025-03-01"

    # A low exposure (assessed) moves monitoring, not the PEP exposure: the course stays.
    clock.set(local("2025-03-03", 12))
    expose(engine, contact_id, "2025-03-02", "passenger_8h", "low", "mask, short trip")
    assert engine.show(course_id)["exposure_on"] == "2025-03-01"
    # A new high exposure: the course follows it, in the same transaction; no new assessment task (PEP offered).
    view = expose(engine, contact_id, "2025-03-03", "sexual")
    assert (view["pep_window"], view["last_exposure_on"]) == ("optimal", "2025-03-03")
    assert engine.show(course_id)["exposure_on"] == "2025-03-03"
    assert "pep_assessment_due" not in pending(engine, contact_id)
    assert pending(engine, contact_id)["pep_window_closes"] == "2025-03-18T00:00:00+01:00"
    followed = last_entry(engine, course_id)
    assert (followed["trigger"], followed["reason"]) == ("contact_exposed", f"from {contact_id}: expose")
    assert followed["data"] == {"exposure_on": "2025-03-03"}


# ---- items 12 and 14: anonymous tracing; tasks never "done" that were not ------------------------------------


@pytest.mark.parametrize(("consent", "says"), [
    (True, "consents to contact tracing by STPS, so STPS traces and informs this contact"),
    (None, "is not recorded: anonymous tracing by the treating doctor is only for a case that declined it"),
])
def test_anonymous_tracing_by_the_doctor_is_refused_unless_the_case_declined(engine, db, consent, says):
    case_id = traced_case(engine, consent=consent)
    contact_person = person(engine, "ANON")
    before = contents(db)
    with pytest.raises(GuardRefused, match=says) as refused_:
        add(engine, case_id, "2025-03-02", person_id=contact_person, anonymous=True)
    assert refused_.value.rule == S5_4
    assert contents(db) == before


def test_the_anonymous_contacts_task_names_the_treating_doctor(engine, db):
    """§5.4: "kan behandlende læge tilbyde at kontakte ... anonymt ... formidler lægen samtidig kontakt til
    infektionsmedicinsk afdeling mhp. PEP vaccination": the doctor's task, not STPS's."""
    case_id = traced_case(engine, consent=False)
    contact_id = add(engine, case_id, "2025-03-02", anonymous=True)["id"]
    [inform] = [t for t in engine.show(contact_id)["timers"] if t["name"] == "inform_due"]
    assert (inform["task"], inform["rule"]) == (DOCTOR_INFORM_TASK, S5_4)
    assert DOCTOR_INFORM_TASK == ("the treating doctor contacts the contact anonymously and arranges PEP "
                                  "assessment")
    assert [t for t, _, _ in tasks_of(engine, contact_id)][0] == DOCTOR_INFORM_TASK
    engine.apply(contact_id, "inform", data={}, actor=STAFF)
    assert timers_named(db, contact_id, "inform_due")[0][0] == "cancelled"
    assert timers_named(db, contact_id, "inform_due")[0][1] is not None  # done, by `inform` only


def test_a_released_contacts_open_inform_task_is_cancelled_not_done(engine, db, clock):
    """Registered on day 21 of its monitoring: the release at midnight comes before the inform deadline. The task
    is cancelled (not needed any more), never recorded as done (issue 12 item 14)."""
    clock.set(local("2025-03-23", 15))
    case_id = traced_case(engine, onset="2025-03-01", pcr_on="2025-03-03")
    contact_id = add(engine, case_id, "2025-03-02", "household")["id"]
    assert pending(engine, contact_id)["inform_due"] == "2025-03-24T15:00:00+01:00"
    fired = advance_simulated_clock(engine, T("2025-03-24T00:00:00+01:00"))
    assert [(f.name, f.to_state) for f in fired if f.object == contact_id] == [("monitoring_ends", "released")]
    assert timers_named(db, contact_id, "inform_due") == [
        ("cancelled", None, T("2025-03-24T15:00:00+01:00"))]
    release = last_entry(engine, contact_id)
    assert release["timers_done"] == []
    assert [(c["name"], c["why"]) for c in release["timers_cancelled"]] == [
        ("inform_due", "cancelled by the transition")]
    assert tasks_of(engine, contact_id) == []


def test_symptoms_cancel_the_open_tasks_and_a_pep_task_reaching_its_deadline_undone_is_missed(engine, db, clock):
    case_id = traced_case(engine)
    first = add(engine, case_id, "2025-03-02", "sexual")["id"]
    second = add(engine, case_id, "2025-03-02", "sexual")["id"]
    engine.apply(second, "inform", data={}, actor=STAFF)
    symptoms(engine, first, "2025-03-03")
    for name in ("inform_due", "pep_assessment_due"):
        assert [(s, sat) for s, sat, _ in timers_named(db, first, name)] == [("cancelled", None)], name
    assert tasks_of(engine, first) == []

    advance_simulated_clock(engine, T("2025-03-17T00:00:00+01:00"))
    assert timers_named(db, second, "pep_assessment_due") == [("missed", None, T("2025-03-17T00:00:00+01:00"))]
    entry = [e for e in engine.audit(entity=second) if e["trigger"] == "pep_assessment_due"][-1]
    assert (entry["actor"], entry["rule"], entry["data"]["outcome"]) == ("timer:pep_assessment_due", S6_2, "missed")
    assert tasks_of(engine, second) == [
        ("assess PEP by 2025-03-16 (best by 2025-03-06)", "2025-03-17T00:00:00+01:00", True)]
    assert engine.show(second)["pep_window"] == "closed"


# ---- item 15: the open symptom list --------------------------------------------------------------------------


def test_the_symptom_other_needs_a_note_which_reaches_the_suspected_case(engine, db):
    case_id = traced_case(engine)
    contact_id = add(engine, case_id, "2025-03-01", "sexual")["id"]
    before = contents(db)
    for note in (None, "  "):
        with pytest.raises(GuardRefused, match="'other' needs a note") as refused_:
            symptoms(engine, contact_id, "2025-03-03", ("other",), note)
        assert refused_.value.rule == S1_1
    assert contents(db) == before
    view = symptoms(engine, contact_id, "2025-03-03", ("chills", "other"), "sore throat")
    case = engine.show(view["became_case"])
    assert (case["state"], case["symptoms"], case["symptom_note"], case["from_contact"]) == (
        "suspected", ["chills", "other"], "sore throat", pk(contact_id))


def test_an_exposure_before_the_sample_date_of_a_case_confirmed_without_onset_is_refused(engine, db):
    case_id = engine.open("case", "open_confirmed", person=person(engine, "NO-ONSET"), actor=STAFF, data={
        "onset": None, "symptoms": [], "criteria": [], "pcr_on": D("2025-03-02"), "clade": None})["id"]
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    contact_person = person(engine, "EXPOSED")
    before = contents(db)
    with pytest.raises(GuardRefused, match=f"outside {case_id}'s infectious period, 2025-03-02 to today"):
        add(engine, case_id, "2025-03-01", person_id=contact_person)
    assert contents(db) == before
    assert add(engine, case_id, "2025-03-02", person_id=contact_person)["state"] == "exposed"


# ---- the command line: exit 3 with the section --------------------------------------------------------------


def test_cli_contact_rules_exit_3_with_their_section(traced: str) -> None:  # noqa: F811 - the imported fixture
    add = ("contact", "add", "--case", "case-1", "--exposed", "2025-03-02")
    ppe = refused(traced, *add, "--person", "person-2", "--kind", "healthcare_with_ppe", code=3)
    assert "SST-mpox-7.1 §5.1" in ppe.stderr and "--risk --reason" in ppe.stderr
    anonymous = refused(traced, *add, "--person", "person-2", "--kind", "sexual", "--anonymous-via-doctor", code=3)
    assert "SST-mpox-7.1 §5.4" in anonymous.stderr and "without --anonymous-via-doctor" in anonymous.stderr
    view = doc(traced, *add, "--person", "person-2", "--kind", "healthcare_with_ppe", "--risk", "medium",
               "--reason", "visor slipped")
    assert (view["risk"], view["risk_assessed"]) == ("medium", True)

    no_reason = refused(traced, "contact", "assess", "contact-1", "--risk", "low", code=3)
    assert "SST-mpox-7.1 §6.2" in no_reason.stderr and "--reason" in no_reason.stderr
    refused(traced, "contact", "assess", "contact-1", "--risk", "huge", "--reason", "x", code=2)
    assessed = doc(traced, "contact", "assess", "contact-1", "--risk", "low", "--reason", "gloves intact after all")
    assert (assessed["risk"], assessed["pep_window"]) == ("low", "not_indicated")
    assert doc(traced, "audit", "--entity", "contact-1")[-1]["rule"] == "SST-mpox-7.1 §6.2"

    raised = doc(traced, "contact", "expose", "contact-1", "--exposed", "2025-03-03", "--kind", "sharps")
    assert (raised["risk"], raised["risk_assessed"], raised["pep_window"]) == ("high", False, "optimal")
    lowered = doc(traced, "contact", "expose", "contact-1", "--exposed", "2025-03-03", "--kind", "intact_skin",
                  "--risk", "low", "--reason", "through the gown")
    assert lowered["exposures"][-1] == ex("2025-03-03", "intact_skin", "low", "through the gown")

    other = refused(traced, "contact", "symptoms", "contact-1", "--onset", "2025-03-03", "--symptoms", "other",
                    code=3)
    assert "SST-mpox-7.1 §1.1" in other.stderr and "--symptom-note" in other.stderr
    sick = doc(traced, "contact", "symptoms", "contact-1", "--onset", "2025-03-03", "--symptoms", "other,chills",
               "--symptom-note", "sore throat")
    assert doc(traced, "show", sick["became_case"])["symptom_note"] == "sore throat"
    ok(traced, "case", "discard", sick["became_case"])
    assert doc(traced, "show", "contact-1")["state"] == "exposed"  # never informed: to be informed (decision)


def test_cli_a_dead_case_exposes_only_by_its_body(traced: str) -> None:  # noqa: F811 - the imported fixture
    ok(traced, "clock", "advance", "--to", "2025-03-05T10:00:00+01:00")
    ok(traced, "case", "die", "case-1", "--on", "2025-03-03")
    after = refused(traced, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-04",
                    "--kind", "sexual", code=3)
    assert "SST-mpox-7.1 §3.3.1" in after.stderr and "died on 2025-03-03" in after.stderr
    assert doc(traced, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-04",
               "--kind", "cleaning")["state"] == "exposed"


# ---- the HTTP API: 409 with the rule --------------------------------------------------------------------------


def test_http_contact_rules_are_409_with_their_rule(client_for: Any, cli_db: str) -> None:
    staff = client_for("staff:test")
    for ref in ("REF-CASE", "REF-P2", "REF-P3"):
        done(staff, "/api/persons", {"ref": ref})
    done(staff, "/api/cases", {"person": "person-1", "onset": "2025-02-28", "confirmed": True,
                               "pcr_on": "2025-03-02"})
    done(staff, "/api/cases/case-1/consent", {"tracing": True})
    contact = {"case": "case-1", "person": "person-2", "exposed": "2025-03-02", "kind": "sexual"}
    before = snapshot(cli_db)
    body = check_error(post(staff, "/api/contacts", {**contact, "kind": "healthcare_with_ppe"}), 409, "refused", 3,
                       S5_1)
    assert "individual assessment" in body["message"]
    check_error(post(staff, "/api/contacts", {**contact, "anonymous_via_doctor": True}), 409, "refused", 3, S5_4)
    assert snapshot(cli_db) == before

    done(staff, "/api/contacts", contact)
    assert 'id="assess"' in staff.get("/objects/contact-1").text  # the page offers the re-assessment
    before = snapshot(cli_db)
    # An assessment without its reason: the operation declares the reason required (a clinician's assessment is
    # always explained, §6.2), so the body itself is refused, naming the field.
    body = check_error(post(staff, "/api/contacts/contact-1/assess", {"risk": "low"}), 422, "usage", 2)
    assert "reason" in body["message"]
    check_error(post(staff, "/api/contacts/contact-1/assess", {"reason": "x"}), 422, "usage", 2)
    check_error(post(staff, "/api/contacts/contact-1/symptoms", {"onset": "2025-03-03", "symptoms": ["other"]}),
                409, "refused", 3, S1_1)
    assert snapshot(cli_db) == before
    view = done(staff, "/api/contacts/contact-1/assess", {"risk": "low", "reason": "no lesions at the time"})
    assert (view["risk"], view["pep_window"]) == ("low", "not_indicated")
    view = done(staff, "/api/contacts/contact-1/expose", {"exposed": "2025-03-03", "kind": "healthcare_with_ppe",
                                                          "risk": "medium", "reason": "mask off, 20 minutes"})
    assert (view["risk"], view["pep_window"]) == ("medium", "optimal")
    # The worklist's button for the PEP assessment task, once it is due within the week.
    done(staff, "/api/clock/advance", {"to": "2025-03-12T09:00:00+01:00"})
    page = staff.get("/worklist").text
    coming = page.split('<table class="worklist" data-section="Next 7 days">', 1)[1].split("</table>", 1)[0]
    row = coming.split('data-task="pep_assessment_due"', 1)[1].split("</tr>", 1)[0]
    assert "vurdér PEP senest 17.03.2025" in row and "07.03.2025" in row  # the 14-day window, best by the 4-day one
    assert 'href="/objects/contact-1#vaccine_offer">Vurdér og tilbyd PEP' in row
