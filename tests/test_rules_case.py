"""The case rules of issue 12 ("the guideline, read again"), each at its boundary: pure rules first (no database),
then the same rules through the engine on SQLite and PostgreSQL, the CLI (exit 3, the section on stderr) and the
HTTP API (409 with ``rule``). Where the Danish text and the old digest or code disagreed, the test says so.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

import pytest

from engine.holidays_dk import danish_holiday
from tests.helpers import contents, last_entry, person, pk, suspected
from workflows.case import (
    CASE,
    GENERAL_SYMPTOMS,
    PAEDIATRIC_TASK,
    SEQUENCING_TASK,
    SYMPTOMS,
    CaseFacts,
    antiviral_consider,
    infectious_from,
    is_child,
    next_working_day,
    phone_notification_due,
    sequencing_sample_due,
)
from workflows.definition import NEW, Cascade, Related, Settings, Subject
from workflows.errors import GuardRefused, TriggerNotAllowed
from workflows.person import PersonFacts

D = date.fromisoformat
T = datetime.fromisoformat
NOW = T("2025-03-03T08:00:00+01:00")  # Monday
DK = Settings(is_holiday=danish_holiday)
S1_1, S2_2_1, S2_4, S3_1, S3_2, S3_4, S4_1, S5_1, S5_2 = (
    f"SST-mpox-7.1 {s}" for s in ("§1.1", "§2.2.1", "§2.4", "§3.1", "§3.2", "§3.4", "§4.1", "§5.1", "§5.2"))


def related_person(**facts: Any) -> Related:
    return Related("person-1", 1, "registered", PersonFacts(**facts), "person-1")


def subject(state: str = NEW, facts: CaseFacts | None = None, now: datetime = NOW, settings: Settings = DK,
            context: dict[str, Related] | None = None, **data: Any) -> Subject:
    return Subject(object_id="case-1", state=state, facts=facts, now=now, settings=settings, data=data,
                   context=context or {}, person="person-1")


def fire(s: Subject, trigger: str, **data: Any) -> Subject:
    s.data = data
    s.armed, s.cancelled, s.satisfied, s.cascades = [], set(), set(), []
    CASE.fire(s, trigger)
    return s


ONSET = D("2025-03-01")


def opened(symptoms: tuple[str, ...] = ("rash",), onset: date = ONSET, **kw: Any) -> Subject:
    s = subject(**kw)
    return fire(s, "open", onset=onset, symptoms=list(symptoms), criteria=["msm"],
                **({"symptom_note": "sore throat"} if "other" in symptoms else {}))


def confirmed(symptoms: tuple[str, ...] = ("rash",), **kw: Any) -> Subject:
    return fire(opened(symptoms, **kw), "confirm", pcr_on=D("2025-03-02"))


def refusal(s: Subject, trigger: str, **data: Any) -> GuardRefused:
    state, facts = s.state, repr(s.facts)
    with pytest.raises(GuardRefused) as refused:
        fire(s, trigger, **data)
    assert (s.state, repr(s.facts)) == (state, facts), "a refused trigger changes nothing"
    return refused.value


def due_of(s: Subject) -> dict[str, tuple[datetime, str, str | None]]:
    return {t.name: (t.due_at, t.rule, t.task) for t in s.armed}


# ==== pure rules ==================================================================================================

# ---- §3.1 phone notification "straks, inden for dagstid" (item 11) -----------------------------------------------


@pytest.mark.parametrize(
    ("confirmed_at", "due"),
    [
        pytest.param("2025-03-03T07:30:00+01:00", "2025-03-03T17:00:00+01:00", id="before-the-window-opens"),
        pytest.param("2025-03-03T08:00:00+01:00", "2025-03-03T17:00:00+01:00", id="window-opens"),
        pytest.param("2025-03-03T16:59:59+01:00", "2025-03-03T17:00:00+01:00", id="last-second"),
        pytest.param("2025-03-03T17:00:00+01:00", "2025-03-04T17:00:00+01:00", id="window-closed"),
        pytest.param("2025-03-03T23:59:00+01:00", "2025-03-04T17:00:00+01:00", id="night"),
        pytest.param("2025-03-07T18:00:00+01:00", "2025-03-10T17:00:00+01:00", id="friday-evening"),
        pytest.param("2025-03-08T11:00:00+01:00", "2025-03-10T17:00:00+01:00", id="saturday"),
        pytest.param("2025-03-09T07:00:00+01:00", "2025-03-10T17:00:00+01:00", id="sunday"),
        # Easter 2025: Maundy Thursday 17 April to Easter Monday 21 April are public holidays.
        pytest.param("2025-04-16T18:00:00+02:00", "2025-04-22T17:00:00+02:00", id="wednesday-before-easter"),
        pytest.param("2025-04-17T10:00:00+02:00", "2025-04-22T17:00:00+02:00", id="maundy-thursday"),
        pytest.param("2025-04-21T12:00:00+02:00", "2025-04-22T17:00:00+02:00", id="easter-monday"),
        # Daylight saving: the last Sunday of March (2025-03-30) and of October (2025-10-26).
        pytest.param("2025-03-29T18:00:00+01:00", "2025-03-31T17:00:00+02:00", id="dst-starts-weekend"),
        pytest.param("2025-03-30T03:30:00+02:00", "2025-03-31T17:00:00+02:00", id="dst-starts-sunday"),
        pytest.param("2025-10-25T20:00:00+02:00", "2025-10-27T17:00:00+01:00", id="dst-ends-weekend"),
        pytest.param("2025-10-26T02:30:00+01:00", "2025-10-27T17:00:00+01:00", id="dst-ends-second-2:30"),
        pytest.param("2025-03-28T16:00:00+01:00", "2025-03-28T17:00:00+01:00", id="friday-before-dst"),
    ],
)
def test_phone_notification_is_due_by_the_end_of_the_daytime_window_it_falls_in_or_the_next(confirmed_at, due):
    """§3.1 "straks, inden for dagstid". The old code made a case confirmed after 17:00 due at once (overdue at the
    confirmation instant); the Danish text asks for the phone call within daytime hours: the next window."""
    assert phone_notification_due(T(confirmed_at), DK) == T(due)


def test_the_daytime_window_and_the_working_days_are_settings():
    late = Settings(daytime_starts=time(9, 0), working_day_ends=time(15, 0), is_holiday=danish_holiday)
    assert phone_notification_due(T("2025-03-03T14:59:00+01:00"), late) == T("2025-03-03T15:00:00+01:00")
    assert phone_notification_due(T("2025-03-03T15:00:00+01:00"), late) == T("2025-03-04T15:00:00+01:00")
    six_days = Settings(working_weekdays=frozenset(range(6)))
    assert phone_notification_due(T("2025-03-08T11:00:00+01:00"), six_days) == T("2025-03-08T17:00:00+01:00")
    # Without the holiday calendar, Maundy Thursday is an ordinary Thursday.
    assert phone_notification_due(T("2025-04-17T10:00:00+02:00"), Settings()) == T("2025-04-17T17:00:00+02:00")
    with pytest.raises(ValueError, match="no working day"):
        next_working_day(D("2025-03-03"), Settings(working_weekdays=frozenset()))


def test_confirming_on_a_friday_evening_arms_the_phone_deadline_for_monday():
    s = opened(now=T("2025-03-07T18:00:00+01:00"))
    fire(s, "confirm", pcr_on=D("2025-03-07"))
    phone, rule, task = due_of(s)["phone_notification_due"]
    assert (phone, rule, task) == (T("2025-03-10T17:00:00+01:00"), S3_1, "notify STPS by phone")
    assert due_of(s)["written_notification_due"][0] == T("2025-03-08T18:00:00+01:00")  # 24 h, weekend or not


# ---- §2.4 the positive sample to SSI; the clade later ------------------------------------------------------------


@pytest.mark.parametrize(
    ("confirmed_at", "due"),
    [
        pytest.param("2025-03-03T08:00:00+01:00", "2025-03-04T17:00:00+01:00", id="monday"),
        pytest.param("2025-03-03T23:00:00+01:00", "2025-03-04T17:00:00+01:00", id="monday-night"),
        pytest.param("2025-03-07T10:00:00+01:00", "2025-03-10T17:00:00+01:00", id="friday"),
        pytest.param("2025-03-08T10:00:00+01:00", "2025-03-10T17:00:00+01:00", id="saturday"),
        pytest.param("2025-04-16T10:00:00+02:00", "2025-04-22T17:00:00+02:00", id="before-easter"),
        pytest.param("2025-03-28T10:00:00+01:00", "2025-03-31T17:00:00+02:00", id="across-dst-march"),
        pytest.param("2025-10-24T10:00:00+02:00", "2025-10-27T17:00:00+01:00", id="across-dst-october"),
    ],
)
def test_the_sample_is_due_at_ssi_by_the_end_of_the_next_working_day(confirmed_at, due):
    assert sequencing_sample_due(T(confirmed_at), DK) == T(due)


def test_confirmation_arms_the_sequencing_task_and_sample_sent_satisfies_it():
    s = confirmed()
    assert due_of(s)["sequencing_sample_due"] == (T("2025-03-04T17:00:00+01:00"), S2_4, SEQUENCING_TASK)
    assert set(due_of(s)) == {"phone_notification_due", "written_notification_due", "sequencing_sample_due"}
    assert refusal(s, "sample_sent", on=D("2025-03-01")).rule == S2_4  # before the PCR sample (2025-03-02)
    assert "after today" in refusal(s, "sample_sent", on=D("2025-03-04")).message
    fire(s, "sample_sent", on=D("2025-03-02"))
    assert s.facts.sample_sent_on == D("2025-03-02") and s.satisfied == {"sequencing_sample_due"}
    assert "already recorded" in refusal(s, "sample_sent", on=D("2025-03-03")).message


def test_the_clade_is_recorded_after_confirmation_only():
    s = opened()
    with pytest.raises(TriggerNotAllowed):
        fire(s, "clade", clade="IIb")
    fire(s, "confirm", pcr_on=D("2025-03-02"), clade="II")
    fire(s, "clade", clade="IIb")
    assert (s.state, s.facts.clade) == ("confirmed", "IIb")
    assert CASE.rule_of("clade", "confirmed") == S2_4
    for state in ("isolated", "healed", "closed", "deceased"):
        assert CASE.spec("clade", state) is not None


# ---- §2.2.1, §4.1: a suspected case self-isolates (item 6) --------------------------------------------------------


@pytest.mark.parametrize("mode", ["home", "covered", "hospital"])
def test_a_suspected_case_isolates_and_stays_suspected(mode):
    """§3.2 admits "en person med mistænkt eller påvist mpox-infektion": hospital is allowed for a suspected case
    too (the issue said "home or covered"; the Danish text wins)."""
    s = fire(opened(), "isolate", mode=mode)
    assert (s.state, s.facts.isolation_mode) == ("suspected", mode)
    assert CASE.rule_of("isolate", "suspected") == S2_2_1


def test_confirming_an_isolating_suspected_case_goes_straight_to_isolated():
    s = fire(opened(), "isolate", mode="home")
    fire(s, "confirm", pcr_on=D("2025-03-02"))
    assert (s.state, s.facts.isolation_mode, s.facts.confirmed_at) == ("isolated", "home", NOW)
    assert "phone_notification_due" in due_of(s)
    assert confirmed().state == "confirmed"  # not isolating: confirmed, as before


def test_a_negative_test_ends_the_self_isolation():
    at = T("2025-03-03T11:15:00+01:00")
    s = fire(opened(now=at), "isolate", mode="covered")
    fire(s, "discard")
    assert (s.state, s.facts.isolation_mode, s.facts.isolation_ended_at) == ("discarded", "covered", at)
    assert fire(opened(), "discard").facts.isolation_ended_at is None  # never isolating: nothing ended


# ---- §4.1 "covered" needs no general symptoms (item 10) ------------------------------------------------------------


@pytest.mark.parametrize("symptom", GENERAL_SYMPTOMS)
@pytest.mark.parametrize("state", ["suspected", "confirmed"])
def test_covered_is_refused_with_any_general_symptom(symptom, state):
    s = opened(("rash", symptom))
    if state == "confirmed":
        fire(s, "confirm", pcr_on=D("2025-03-02"))
    refused = refusal(s, "isolate", mode="covered")
    assert refused.rule == S4_1
    assert symptom in refused.message and "mode home" in refused.message
    fire(s, "isolate", mode="home")
    fire(s, "isolate", mode="hospital")
    assert s.facts.isolation_mode == "hospital"


@pytest.mark.parametrize("symptoms", [("rash",), ("proctitis",), ("rash", "proctitis"), ("other",)])
def test_covered_is_allowed_with_local_symptoms_only(symptoms):
    """Proctitis is local inflammation (§1.4.1 "lokal inflammation"), not a general symptom ("almensymptom")."""
    s = fire(confirmed(symptoms), "isolate", mode="covered")
    assert (s.state, s.facts.isolation_mode) == ("isolated", "covered")


def test_general_symptoms_are_the_flu_like_ones_of_section_1_4_1():
    assert set(GENERAL_SYMPTOMS) == {"fever", "headache", "myalgia", "back_pain", "fatigue", "lymphadenopathy",
                                     "chills"}
    assert "proctitis" not in GENERAL_SYMPTOMS and "rash" not in GENERAL_SYMPTOMS


# ---- §1.1, §1.4.1 the open symptom list; a confirmed case without symptoms (item 15) ------------------------------


def test_chills_and_other_are_symptoms():
    """§1.1 "herunder" makes the list open, §1.4.1 names "kulderystelser" (chills)."""
    assert {"chills", "other"} <= set(SYMPTOMS)
    assert opened(("chills",)).state == "suspected"


@pytest.mark.parametrize("note", [None, "", "   "])
def test_other_needs_a_note(note):
    s = subject()
    data = {"onset": D("2025-03-01"), "symptoms": ["other"], "criteria": ["msm"], "symptom_note": note}
    refused = refusal(s, "open", **data)
    assert (refused.rule, s.state) == (S1_1, NEW)
    assert "symptom_note" in refused.message
    refused = refusal(subject(), "open_confirmed", **{**data, "pcr_on": D("2025-03-02")})
    assert refused.rule == S1_1


def test_other_with_its_note_is_stored():
    s = fire(subject(), "open", onset=D("2025-03-01"), symptoms=["other"], criteria=["travel"],
             symptom_note="painful swallowing")
    assert (s.state, s.facts.symptoms, s.facts.symptom_note) == ("suspected", ["other"], "painful swallowing")


def test_a_suspected_case_needs_its_onset():
    refused = refusal(subject(), "open", symptoms=["rash"], criteria=["msm"])
    assert refused.rule == S1_1 and "onset" in refused.message


def test_a_confirmed_case_without_symptoms_needs_no_onset_and_starts_at_the_sample_date():
    """§1.1: a confirmed case is PCR-positive, symptoms or not. Decision: its infectious period starts at the
    sample date (pcr_on)."""
    s = fire(subject(), "open_confirmed", symptoms=[], criteria=[], pcr_on=D("2025-03-02"))
    assert (s.state, s.facts.onset, s.facts.pcr_on) == ("confirmed", None, D("2025-03-02"))
    assert infectious_from(s.facts) == D("2025-03-02")
    assert infectious_from(confirmed().facts) == D("2025-03-01")  # with symptoms: the onset
    assert refusal(subject(), "open_confirmed", symptoms=[], pcr_on=D("2025-03-04")).rule == S1_1  # future


def test_symptoms_without_an_onset_are_refused():
    """The infectious period runs from symptom onset (§5.1): a case with symptoms but no onset would lose the
    days before its sample, so only a case without symptoms leaves the onset out."""
    refused = refusal(subject(), "open_confirmed", symptoms=["rash"], pcr_on=D("2025-03-02"))
    assert refused.rule == S5_1 and "onset" in refused.message


@pytest.mark.parametrize(("trigger", "boundary"), [("heal", "healed"), ("die", "death")])
def test_heal_and_death_dates_count_from_the_sample_date_without_an_onset(trigger, boundary):
    s = fire(subject(), "open_confirmed", symptoms=[], pcr_on=D("2025-03-02"))
    refused = refusal(s, trigger, on=D("2025-03-01"))
    assert "before the PCR sample date" in refused.message and boundary in refused.message
    fire(s, trigger, on=D("2025-03-02"))
    assert s.state == {"heal": "healed", "die": "deceased"}[trigger]


# ---- §5.2 sources: 21 days before the start; a discarded case is none (item 13) ----------------------------------


def source_context(state: str = "confirmed") -> dict[str, Related]:
    return {"case": Related("case-2", 2, state, CaseFacts(onset=D("2025-02-01")), "person-2")}


@pytest.mark.parametrize(("on", "allowed"), [("2025-02-08", False), ("2025-02-09", True), ("2025-03-02", True),
                                             ("2025-03-03", False)])
def test_the_source_range_runs_from_the_sample_date_when_there_is_no_onset(on, allowed):
    """§5.2 asks about exposures up to 21 days before symptom onset; without symptoms (Decision) before the sample
    date (2025-03-02: from 2025-02-09)."""
    s = fire(subject(), "open_confirmed", symptoms=[], pcr_on=D("2025-03-02"))
    s.context = source_context()
    if allowed:
        assert fire(s, "source", case="case-2", on=D(on)).facts.sources == [{"case": "case-2", "on": on}]
    else:
        refused = refusal(s, "source", case="case-2", on=D(on))
        assert refused.rule == S5_2 and "(2025-02-09 to 2025-03-02)" in refused.message


def test_a_discarded_case_is_not_a_source():
    s = opened()
    s.context = source_context("discarded")
    refused = refusal(s, "source", case="case-2", on=D("2025-02-20"))
    assert refused.rule == S5_2 and "case-2 was discarded" in refused.message
    s.context = source_context("suspected")
    assert fire(s, "source", case="case-2", on=D("2025-02-20")).facts.sources == [
        {"case": "case-2", "on": "2025-02-20"}]


# ---- §2.2.1, §5.5 a case from a contact's symptoms gives the contact back on a negative test (item 7) ------------


def test_the_contact_a_case_began_from_gets_its_monitoring_back_on_discard():
    s = fire(subject(), "open", onset=D("2025-03-01"), symptoms=["rash"], criteria=["epi_link"], from_contact=7,
             source_case="case-9")
    assert (s.facts.from_contact, s.facts.source_case) == (7, "case-9")
    fire(s, "discard")
    assert s.cascades == [Cascade("contact", "case_discarded", pk=7)]
    assert fire(opened(), "discard").cascades == []


# ---- §3.2 a child case -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("born", "child"), [("2007-02-28", False), ("2007-03-01", False), ("2007-03-02", True),
                                             ("2024-06-01", True), (None, False)])
def test_a_case_is_a_child_case_under_18_on_the_onset_day(born, child):
    """Onset 2025-03-01: born 2007-03-01 is 18 that day (no child); born a day later, 17 (a child)."""
    assert is_child(D(born) if born else None, D("2025-03-01")) is child
    s = opened(context={"person": related_person(born=D(born) if born else None)})
    assert s.facts.child is child
    due = {k: v for k, v in due_of(s).items() if k != "test_result_due"}  # the suspected case's own task
    if child:
        assert due == {"paediatric_referral_due": (NOW + timedelta(hours=24), S3_2, PAEDIATRIC_TASK)}
    else:
        assert due == {}


def test_without_an_onset_the_age_on_the_registration_day_counts():
    ctx = {"person": related_person(born=D("2007-03-03"))}  # 18 on 2025-03-03, the registration day
    s = fire(subject(context=ctx), "open_confirmed", symptoms=[], pcr_on=D("2025-03-02"))
    assert s.facts.child is False
    ctx = {"person": related_person(born=D("2007-03-04"))}
    assert fire(subject(context=ctx), "open_confirmed", symptoms=[], pcr_on=D("2025-03-02")).facts.child is True


def test_the_paediatric_referral_is_recorded_for_a_child_only_and_once():
    adult = opened()
    refused = refusal(adult, "paediatric")
    assert refused.rule == S3_2 and "not a child case" in refused.message
    child = opened(context={"person": related_person(born=D("2015-01-01"))})
    fire(child, "paediatric")
    assert child.facts.paediatric_referred_at == NOW and child.satisfied == {"paediatric_referral_due"}
    assert "already recorded" in refusal(child, "paediatric").message


@pytest.mark.parametrize("ending", ["discard", "die"])
def test_ending_a_child_case_cancels_its_referral_task(ending):
    child = opened(context={"person": related_person(born=D("2015-01-01"))})
    fire(child, ending, **({"on": D("2025-03-02")} if ending == "die" else {}))
    assert "paediatric_referral_due" in child.cancelled
    # The test result chased is the negative test (discard); a death ends the chase undone (cancelled).
    assert child.satisfied == ({"test_result_due"} if ending == "discard" else set())


# ---- §3.2 discharge, decided by the infection-medicine department -------------------------------------------------


def admitted(symptoms: tuple[str, ...] = ("rash",)) -> Subject:
    return fire(confirmed(symptoms), "isolate", mode="hospital")


def test_a_discharge_is_recorded_for_an_admitted_case_with_who_decided_it():
    s = fire(admitted(), "discharge", on=D("2025-03-03"), decided_by="dr. Berg, infection medicine", mode="home")
    assert (s.state, s.facts.isolation_mode, s.facts.discharged_on, s.facts.discharge_decided_by) == (
        "isolated", "home", D("2025-03-03"), "dr. Berg, infection medicine")
    assert CASE.rule_of("discharge", "isolated") == S3_2


def test_a_discharge_needs_an_admitted_case_a_decider_and_a_real_date():
    home = fire(confirmed(), "isolate", mode="home")
    refused = refusal(home, "discharge", on=D("2025-03-03"), decided_by="dr. Berg")
    assert refused.rule == S3_2 and "not admitted" in refused.message
    s = admitted()
    for nobody in (None, "", "  "):
        refused = refusal(s, "discharge", on=D("2025-03-03"), decided_by=nobody)
        assert refused.rule == S3_2 and "decided_by" in refused.message
    assert "before symptom onset" in refusal(s, "discharge", on=D("2025-02-28"), decided_by="dr. Berg").message
    assert "after today" in refusal(s, "discharge", on=D("2025-03-04"), decided_by="dr. Berg").message
    with pytest.raises(TriggerNotAllowed):
        fire(confirmed(), "discharge", on=D("2025-03-03"), decided_by="dr. Berg")  # never isolated


def test_a_discharge_to_covered_needs_no_general_symptoms():
    refused = refusal(admitted(("rash", "fever")), "discharge", on=D("2025-03-03"), decided_by="dr. Berg",
                      mode="covered")
    assert refused.rule == S4_1
    s = fire(admitted(("rash",)), "discharge", on=D("2025-03-03"), decided_by="dr. Berg", mode="covered")
    assert s.facts.isolation_mode == "covered"


def test_a_suspected_case_admitted_can_be_discharged():
    s = fire(fire(opened(), "isolate", mode="hospital"), "discharge", on=D("2025-03-02"), decided_by="dr. Berg")
    assert (s.state, s.facts.isolation_mode) == ("suspected", "home")


# ---- §3.4 antiviral treatment ------------------------------------------------------------------------------------


def test_antiviral_may_be_considered_for_immunodeficiency_and_for_a_child():
    assert antiviral_consider(PersonFacts(), child=False) is None
    assert antiviral_consider(None, child=False) is None
    immuno = antiviral_consider(PersonFacts(immunocompromised=True), child=False)
    assert immuno is not None and "immunodeficiency" in immuno and "§3.4" in immuno
    child = antiviral_consider(PersonFacts(), child=True)
    assert child is not None and "a child" in child and "immunodeficiency" not in child
    both = antiviral_consider(PersonFacts(immunocompromised=True), child=True)
    assert both is not None and "immunodeficiency" in both and "a child" in both


def test_confirmation_sets_antiviral_consider_from_the_person():
    s = confirmed(context={"person": related_person(immunocompromised=True)})
    assert "immunodeficiency" in (s.facts.antiviral_consider or "")
    assert confirmed(context={"person": related_person()}).facts.antiviral_consider is None
    child = confirmed(context={"person": related_person(born=D("2016-05-05"))})
    assert "a child" in (child.facts.antiviral_consider or "")


def test_the_antiviral_decision_is_a_specialists_and_is_recorded():
    s = confirmed(context={"person": related_person(immunocompromised=True)})
    for nobody in (None, "", " "):
        refused = refusal(s, "antiviral", assessed_by=nobody, decision="start", reason="low CD4")
        assert refused.rule == S3_4 and "assessed_by" in refused.message
    assert "reason" in refusal(s, "antiviral", assessed_by="dr. Holm", decision="start", reason=None).message
    fire(s, "antiviral", assessed_by="dr. Holm", decision="start", reason="HIV, CD4 120")
    assert s.facts.antiviral == {"at": "2025-03-03T08:00:00+01:00", "assessed_by": "dr. Holm", "decision": "start",
                                 "reason": "HIV, CD4 120"}
    assert "immunodeficiency" in (s.facts.antiviral_consider or "")
    assert s.state == "confirmed"


@pytest.mark.parametrize("state", ["suspected", "healed", "closed", "discarded", "deceased"])
def test_antiviral_only_on_a_confirmed_or_isolated_case(state):
    assert CASE.spec("antiviral", state) is None
    assert CASE.spec("antiviral", "confirmed") is not None and CASE.spec("antiviral", "isolated") is not None


# ---- §4.1 no work while infectious ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["heal", "discard", "die"])
def test_work_with_vulnerable_people_means_no_work_until_the_case_heals(ending):
    s = opened() if ending == "discard" else confirmed()
    fire(s, "work", work=["close-contact", "children"])
    assert (s.facts.work, s.facts.no_work) == (["close-contact", "children"], True)
    assert CASE.rule_of("work", "suspected") == S4_1
    fire(s, ending, **({} if ending == "discard" else {"on": D("2025-03-03")}))
    assert (s.facts.work, s.facts.no_work) == (["close-contact", "children"], False)


def test_work_is_recorded_only_while_infectious():
    for state in ("suspected", "confirmed", "isolated"):
        assert CASE.spec("work", state) is not None
    for state in ("healed", "closed", "discarded", "deceased"):
        assert CASE.spec("work", state) is None


# ---- shape --------------------------------------------------------------------------------------------------------


def test_every_new_transition_guard_and_timer_cites_its_section():
    assert CASE.problems() == []
    expected = {"sample_sent": S2_4, "sequencing_sample_due": S2_4, "clade": S2_4, "paediatric": S3_2,
                "paediatric_referral_due": S3_2, "discharge": S3_2, "antiviral": S3_4, "work": S4_1}
    for trigger, rule in expected.items():
        [spec] = [s for s in CASE.transitions if s.trigger == trigger]
        assert spec.rule == rule and all(g.rule.startswith("SST-mpox-7.1 §") for g in spec.guards)
    confirms = [s for s in CASE.transitions if s.trigger == "confirm"]
    assert [(s.dest, s.when is not None) for s in confirms] == [("isolated", True), ("confirmed", False)]


def test_facts_added_in_migration_0009_default_like_null():
    old = CaseFacts(onset=D("2025-03-01"), child=None, work=None, no_work=None)
    s = subject(state="confirmed", facts=old)
    fire(s, "work", work=["vulnerable"])
    assert s.facts.no_work is True
    s = subject(state="suspected", facts=CaseFacts(onset=D("2025-03-01"), child=None))
    assert "not a child case" in refusal(s, "paediatric").message


# ==== through the engine, on SQLite and PostgreSQL ===================================================================


def timers(engine: Any, object_id: str) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in engine.show(object_id)["timers"]}


def test_an_isolating_suspected_case_is_confirmed_into_isolation_and_its_deadlines_armed(engine, clock):
    case_id = suspected(engine, person(engine))
    view = engine.apply(case_id, "isolate", data={"mode": "home"}, actor="staff:test")
    assert (view["state"], view["isolation_mode"]) == ("suspected", "home")
    assert last_entry(engine, case_id)["rule"] == S2_2_1
    clock.set(T("2025-03-07T18:00:00+01:00"))  # a Friday evening
    view = engine.apply(case_id, "confirm", data={"pcr_on": D("2025-03-07")}, actor="staff:test")
    assert view["state"] == "isolated"
    due = {name: (t["due_at"], t["rule"], t["status"]) for name, t in timers(engine, case_id).items()}
    assert due == {
        "phone_notification_due": ("2025-03-10T17:00:00+01:00", S3_1, "pending"),
        "written_notification_due": ("2025-03-08T18:00:00+01:00", S3_1, "pending"),
        "sequencing_sample_due": ("2025-03-10T17:00:00+01:00", S2_4, "pending"),
        # The suspected case's test result, chased from its opening: done by the confirmation (issue 16).
        "test_result_due": ("2025-03-06T00:00:00+01:00", "SST-mpox-7.1 §2.1", "cancelled"),
    }
    assert timers(engine, case_id)["test_result_due"]["satisfied_at"] == "2025-03-07T18:00:00+01:00"
    entry = last_entry(engine, case_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == ("confirm", "suspected", "isolated",
                                                                             S1_1)


def test_the_engine_uses_danish_holidays_for_the_phone_deadline(engine, clock):
    clock.set(T("2025-04-17T10:00:00+02:00"))  # Maundy Thursday
    case_id = engine.open("case", "open_confirmed", person=person(engine), actor="staff:test",
                          data={"symptoms": [], "criteria": [], "pcr_on": D("2025-04-16")})["id"]
    assert timers(engine, case_id)["phone_notification_due"]["due_at"] == "2025-04-22T17:00:00+02:00"
    assert engine.show(case_id)["onset"] is None


def test_a_negative_test_ends_isolation_and_work_restriction_in_the_database(engine, clock):
    case_id = suspected(engine, person(engine))
    engine.apply(case_id, "isolate", data={"mode": "hospital"}, actor="staff:test")
    engine.apply(case_id, "work", data={"work": ["children"]}, actor="staff:test")
    assert engine.show(case_id)["no_work"] is True
    clock.set(T("2025-03-04T09:30:00+01:00"))
    view = engine.apply(case_id, "discard", actor="staff:test", reason="PCR negative")
    assert (view["state"], view["isolation_ended_at"], view["no_work"]) == (
        "discarded", "2025-03-04T09:30:00+01:00", False)
    assert last_entry(engine, case_id)["changes"]["isolation_ended_at"] == "2025-03-04T09:30:00+01:00"


@pytest.mark.parametrize(
    ("setup", "trigger", "data", "rule"),
    [
        pytest.param("fever", "isolate", {"mode": "covered"}, S4_1, id="covered-with-fever"),
        pytest.param("at-home", "discharge", {"on": D("2025-03-03"), "decided_by": "dr. Berg"}, S3_2,
                     id="discharge-not-admitted"),
        pytest.param("confirmed", "antiviral", {"decision": "start", "reason": "CD4 low", "assessed_by": None},
                     S3_4, id="antiviral-without-assessor"),
        pytest.param("confirmed", "paediatric", {}, S3_2, id="paediatric-for-an-adult"),
        pytest.param("confirmed", "sample_sent", {"on": D("2025-03-01")}, S2_4, id="sample-before-pcr"),
        pytest.param("no-onset", "heal", {"on": D("2025-03-01")}, "SST-mpox-7.1 §4.1", id="heal-before-sample"),
        pytest.param("discarded-source", "source", {"case": "case-1", "on": D("2025-02-25")}, S5_2,
                     id="discarded-source"),
    ],
)
def test_each_new_guard_refuses_and_leaves_the_database_unchanged(engine, db, setup, trigger, data, rule):
    who = person(engine)
    if setup == "fever":
        target = engine.open("case", "open", person=who, actor="staff:test", data={
            "onset": D("2025-03-01"), "symptoms": ["rash", "fever"], "criteria": ["msm"]})["id"]
    elif setup == "no-onset":
        target = engine.open("case", "open_confirmed", person=who, actor="staff:test",
                             data={"symptoms": [], "criteria": [], "pcr_on": D("2025-03-02")})["id"]
    elif setup == "discarded-source":
        source = suspected(engine, who)
        engine.apply(source, "discard", actor="staff:test")
        target = suspected(engine, person(engine, "REF-2"))
    else:
        target = suspected(engine, who)
        engine.apply(target, "confirm", data={"pcr_on": D("2025-03-02")}, actor="staff:test")
        if setup == "at-home":
            engine.apply(target, "isolate", data={"mode": "home"}, actor="staff:test")
    before = contents(db)
    with pytest.raises(GuardRefused) as refused:
        engine.apply(target, trigger, data=data, actor="staff:test")
    assert refused.value.rule == rule and rule in refused.value.message
    assert contents(db) == before


def test_a_child_case_gets_its_referral_task_and_discharge_and_antiviral_are_recorded(engine, clock):
    child = person(engine, "CHILD", born=D("2014-06-01"), immunocompromised=False)
    case_id = suspected(engine, child)
    view = engine.show(case_id)
    assert view["child"] is True
    task = timers(engine, case_id)["paediatric_referral_due"]
    assert (task["due_at"], task["rule"], task["task"], task["status"]) == (
        "2025-03-04T08:00:00+01:00", S3_2, PAEDIATRIC_TASK, "pending")
    clock.set(T("2025-03-03T12:00:00+01:00"))
    engine.apply(case_id, "paediatric", actor="staff:test", reason="phoned the paediatric department")
    task = timers(engine, case_id)["paediatric_referral_due"]
    assert task["satisfied_at"] == "2025-03-03T12:00:00+01:00" and task["status"] != "missed"
    engine.apply(case_id, "isolate", data={"mode": "hospital"}, actor="staff:test")
    view = engine.apply(case_id, "confirm", data={"pcr_on": D("2025-03-03")}, actor="staff:test")
    assert view["state"] == "isolated" and "a child" in view["antiviral_consider"]
    view = engine.apply(case_id, "antiviral", data={"assessed_by": "dr. Holm", "decision": "not-indicated",
                                                    "reason": "mild, no risk factors"},
                        actor="staff:test", reason="mild, no risk factors")
    assert view["antiviral"]["decision"] == "not-indicated" and view["antiviral"]["assessed_by"] == "dr. Holm"
    view = engine.apply(case_id, "discharge", data={"on": D("2025-03-03"), "decided_by": "dr. Berg", "mode": "home"},
                        actor="staff:test")
    assert (view["isolation_mode"], view["discharged_on"], view["discharge_decided_by"]) == (
        "home", "2025-03-03", "dr. Berg")
    assert last_entry(engine, case_id)["rule"] == S3_2


def test_the_sample_sent_satisfies_the_sequencing_task_and_the_clade_is_audited(engine, clock):
    case_id = suspected(engine, person(engine, "IMMUNO", immunocompromised=True))
    view = engine.apply(case_id, "confirm", data={"pcr_on": D("2025-03-03")}, actor="staff:test")
    assert "immunodeficiency" in view["antiviral_consider"]
    clock.set(T("2025-03-04T10:00:00+01:00"))
    engine.apply(case_id, "sample_sent", data={"on": D("2025-03-04")}, actor="staff:lab")
    task = timers(engine, case_id)["sequencing_sample_due"]
    assert task["satisfied_at"] == "2025-03-04T10:00:00+01:00"
    assert "sequencing_sample_due" not in {i["name"] for i in engine.worklist() if i["object"] == case_id}
    engine.apply(case_id, "clade", data={"clade": "Ib"}, actor="staff:lab", reason="SSI sequencing")
    entry = last_entry(engine, case_id)
    assert (entry["trigger"], entry["rule"], entry["changes"], entry["actor"]) == (
        "clade", S2_4, {"clade": "Ib"}, "staff:lab")


def test_discarding_a_case_opened_from_a_contact_cascades_to_the_contact(engine):
    source = suspected(engine, person(engine))
    engine.apply(source, "confirm", data={"pcr_on": D("2025-03-02")}, actor="staff:test")
    engine.apply(source, "consent", data={"tracing": True}, actor="staff:test")
    contact = engine.open("contact", "add", person=person(engine, "REF-2"), actor="staff:test",
                          data={"case": source, "exposed": D("2025-03-02"), "kind": "sexual"})["id"]
    became = engine.apply(contact, "symptoms", data={"onset": D("2025-03-03"), "symptoms": ["rash"]},
                          actor="staff:test")["became_case"]
    assert engine.show(became)["from_contact"] == pk(contact)
    engine.apply(became, "discard", actor="staff:test", reason="PCR negative")
    entry = last_entry(engine, contact)
    assert entry["trigger"] == "case_discarded" and entry["reason"] == f"from {became}: discard"


# ==== the CLI and the HTTP API ========================================================================================


def test_cli_refusals_exit_3_with_the_section_and_change_nothing(cli_db):
    from tests.test_cli import add_person, doc, ok, open_suspected, refused

    case = open_suspected(cli_db, add_person(cli_db))  # rash, fever
    result = refused(cli_db, "case", "isolate", case, "--mode", "covered", code=3)
    assert "§4.1" in result.stderr and "fever" in result.stderr
    assert doc(cli_db, "case", "isolate", case, "--mode", "home")["state"] == "suspected"
    discarded = open_suspected(cli_db, add_person(cli_db, "REF-2"))
    ok(cli_db, "case", "discard", discarded)
    result = refused(cli_db, "case", "source", case, "--case", discarded, "--on", "2025-02-25", code=3)
    assert "§5.2" in result.stderr
    ok(cli_db, "case", "confirm", case, "--pcr-on", "2025-03-03")
    result = refused(cli_db, "case", "antiviral", case, "--decision", "start", "--reason", "CD4 low", code=3)
    assert "§3.4" in result.stderr and "--assessed-by" in result.stderr
    result = refused(cli_db, "case", "discharge", case, "--on", "2025-03-03", "--decided-by", "dr. Berg", code=3)
    assert "§3.2" in result.stderr
    result = refused(cli_db, "case", "paediatric", case, code=3)
    assert "§3.2" in result.stderr


def test_cli_new_commands(cli_db):
    from tests.test_cli import add_person, doc, refused

    person_id = add_person(cli_db)
    view = doc(cli_db, "case", "open", "--person", person_id, "--confirmed", "--pcr-on", "2025-03-02")
    assert (view["state"], view["onset"], view["pcr_on"]) == ("confirmed", None, "2025-03-02")
    case = view["id"]
    assert {t["name"] for t in view["timers"]} == {"phone_notification_due", "written_notification_due",
                                                   "sequencing_sample_due"}
    assert doc(cli_db, "case", "sample-sent", case, "--on", "2025-03-03")["sample_sent_on"] == "2025-03-03"
    assert doc(cli_db, "case", "clade", case, "--clade", "IIb")["clade"] == "IIb"
    view = doc(cli_db, "case", "work", case, "--work", "close-contact,vulnerable")
    assert (view["work"], view["no_work"]) == (["close-contact", "vulnerable"], True)
    view = doc(cli_db, "case", "antiviral", case, "--assessed-by", "dr. Holm", "--decision", "not-indicated",
               "--reason", "mild")
    assert view["antiviral"] == {"at": "2025-03-03T08:00:00+01:00", "assessed_by": "dr. Holm",
                                 "decision": "not-indicated", "reason": "mild"}
    doc(cli_db, "case", "isolate", case, "--mode", "hospital")
    view = doc(cli_db, "case", "discharge", case, "--on", "2025-03-03", "--decided-by", "dr. Berg", "--mode",
               "covered")
    assert (view["isolation_mode"], view["discharge_decided_by"]) == ("covered", "dr. Berg")
    assert doc(cli_db, "case", "heal", case, "--on", "2025-03-03")["no_work"] is False
    # Malformed input: exit 2.
    refused(cli_db, "case", "work", case, "--work", "office", code=2)
    refused(cli_db, "case", "open", "--person", person_id, "--symptoms", "rash", "--criteria", "msm", code=2)
    result = refused(cli_db, "case", "open", "--person", person_id, "--onset", "2025-03-01", "--symptoms", "other",
                     "--criteria", "msm", code=2)
    assert "--symptom-note" in result.stderr
    view = doc(cli_db, "case", "open", "--person", person_id, "--onset", "2025-03-01", "--symptoms", "other,chills",
               "--symptom-note", "sore throat", "--criteria", "msm", "--second-case-reason", "re-infection")
    assert (view["symptoms"], view["symptom_note"]) == (["other", "chills"], "sore throat")


def test_http_refusals_are_409_with_the_rule(client_for, cli_db):
    from tests.test_http_api import check_error, done, post, snapshot

    staff = client_for("staff:test")
    done(staff, "/api/persons", {"ref": "REF-1"})
    done(staff, "/api/cases", {"person": "person-1", "onset": "2025-03-01", "symptoms": ["rash", "chills"],
                               "criteria": ["msm"]})
    before = snapshot(cli_db)
    check_error(post(staff, "/api/cases/case-1/isolate", {"mode": "covered"}), 409, "refused", 3, S4_1)
    assert snapshot(cli_db) == before
    done(staff, "/api/cases/case-1/confirm", {"pcr_on": "2025-03-02"})
    before = snapshot(cli_db)
    check_error(post(staff, "/api/cases/case-1/antiviral", {"decision": "start", "reason": "x"}), 409, "refused", 3,
                S3_4)
    check_error(post(staff, "/api/cases/case-1/discharge", {"on": "2025-03-03", "decided_by": "dr. Berg"}), 409,
                "refused", 3, S3_2)
    check_error(post(staff, "/api/cases/case-1/antiviral", {"decision": "maybe"}), 422, "usage", 2)
    check_error(post(staff, "/api/cases", {"person": "person-1", "symptoms": ["rash"], "criteria": ["msm"]}), 422,
                "usage", 2)
    assert snapshot(cli_db) == before
    view = done(staff, "/api/cases", {"person": "person-1", "confirmed": True, "pcr_on": "2025-03-03",
                                      "second_case_reason": "re-infection"})
    assert view["onset"] is None
    view = done(staff, "/api/cases/case-1/work", {"work": ["children"]})
    assert view["no_work"] is True
    view = done(staff, "/api/cases/case-1/antiviral", {"assessed_by": "dr. Holm", "decision": "start",
                                                        "reason": "extensive lesions"})
    assert view["antiviral"]["reason"] == "extensive lesions"
    page = staff.get("/objects/case-1").text
    assert "Vurderet af dr. Holm" in page and "&#39;at&#39;" not in page  # the assessment, not a dict
    assert 'id="sample-sent"' in page and 'id="antiviral"' in page
