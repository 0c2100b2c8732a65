"""The case workflow (``case@SST-mpox-7.1``): suspected → confirmed → isolated → healed → closed, with the side
exits the guideline implies (discarded on a negative test, deceased).

Every transition and guard cites its section of the guideline; the timers it arms are computed here, purely, from
the facts, the instant of the change and the deployment's settings. A suspected case may already isolate (§2.2.1,
§4.1); confirming it then keeps it isolated, and a negative test (discard) ends the isolation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from workflows.calendar import local_date, local_time_on, to_local, window_closes
from workflows.definition import (
    NEW,
    Cascade,
    Guard,
    Settings,
    Subject,
    Timer,
    TimerSpec,
    TransitionSpec,
    WorkflowDefinition,
)
from workflows.errors import Because, UsageError, because, phrase
from workflows.errors import field as ref
from workflows.operations import Field, Offer, Operation, Task
from workflows.person import PersonFacts, age_on
from workflows.profile import Profile
from workflows.rules import cite

#: §1.1 the symptoms of the case definition, and §1.4.1's chills ("kulderystelser"); the list is open ("herunder"):
#: ``other`` is any further symptom, described in ``symptom_note``.
SYMPTOMS = ("rash", "fever", "headache", "myalgia", "back_pain", "fatigue", "lymphadenopathy", "proctitis", "chills",
            "other")
#: §4.1 general symptoms ("almensymptomer", §1.4.1): with any of them a case isolates at home (or in hospital),
#: never "covered". Proctitis is a local inflammation (§1.4.1 "lokal inflammation"), not a general symptom.
GENERAL_SYMPTOMS = ("fever", "headache", "myalgia", "back_pain", "fatigue", "lymphadenopathy", "chills")
CRITERIA = ("epi_link", "travel", "multiple_partners", "msm")
CLADES = ("I", "Ia", "Ib", "II", "IIa", "IIb")
ISOLATION_MODES = ("home", "covered", "hospital")
#: §3.2 where a discharged case goes on isolating.
DISCHARGE_MODES = ("home", "covered")
CHANNELS = ("phone", "written")
#: §3.4 the infection-medicine specialist's decision on antiviral treatment.
ANTIVIRAL_DECISIONS = ("start", "not-indicated")
#: §4.1 work that keeps an infectious case from working: close physical contact with others, children under 12,
#: pregnant or immunocompromised people.
WORK = ("close-contact", "children", "vulnerable")

STATES = ("suspected", "confirmed", "isolated", "healed", "closed", "discarded", "deceased")
FINAL = ("closed", "discarded", "deceased")
#: States in which the case has been confirmed by PCR (or may have been, for deceased).
AFTER_CONFIRMATION = ("confirmed", "isolated", "healed", "closed", "deceased")
#: States in which a case is open: not closed, discarded or deceased.
OPEN_STATES = ("suspected", "confirmed", "isolated", "healed")
#: §4.1 states in which a case is (or may be) infectious: until healed.
INFECTIOUS_STATES = ("suspected", "confirmed", "isolated")

#: §4.1 condom use for 12 weeks after healing: 84 full days after the healed day.
CONDOM_ADVICE_DAYS = 84
#: §5.2 STPS asks about exposures up to 21 days before symptom onset to find the source.
SOURCE_DAYS = 21
#: §3.1 written notification to SSI and STPS within 24 hours of confirmation.
WRITTEN_NOTIFICATION_WITHIN = timedelta(hours=24)
#: §3.2 a child case: under 18.
CHILD_UNDER = 18
#: §3.2 Decision: a child case is referred to the highly specialised paediatric level within 24 hours.
PAEDIATRIC_REFERRAL_WITHIN = timedelta(hours=24)
PAEDIATRIC_TASK = ("refer to the highly specialised paediatric level (52) for work-up and treatment with infection "
                   "medicine")
SEQUENCING_TASK = "send the positive sample to SSI for genome sequencing"
#: §2.1, §2.2.1 a suspected case waits for its PCR answer; Decision: chased after ``Settings.test_result_chase_days``.
TEST_RESULT_TASK = "chase the PCR test result of the suspected case"
#: The facts ``case correct`` corrects, each with the section that defines it: symptom onset starts the infectious
#: period (§5.1), the PCR sample confirms the case (§1.1), the clade comes from SSI's sequencing (§2.4).
CORRECTABLE = ("onset", "pcr_on", "clade")
#: Open states in which the case has been confirmed (a PCR date and a clade mean something).
CONFIRMED_OPEN = ("confirmed", "isolated", "healed")

S1_1, S2_2_1, S2_4, S3, S3_1, S3_2, S3_4, S4_1, S5_1, S5_2 = (
    cite(s) for s in ("§1.1", "§2.2.1", "§2.4", "§3", "§3.1", "§3.2", "§3.4", "§4.1", "§5.1", "§5.2"))
#: The section of each correctable fact (``CORRECTABLE``).
CORRECTION_RULES = {"onset": S5_1, "pcr_on": S1_1, "clade": S2_4}
#: §2.1 a suspected case is notified on a positive answer; §2.2.1 its self-isolation ends on a negative one.
S2_1 = cite("§2.1")


@dataclass
class CaseFacts:
    """The facts a case carries; the persistence layer stores each as a column of the same name. Facts added in
    migration 0009 are None on older cases: the rules read None as the default."""

    #: None only for a case confirmed by PCR without symptoms (§1.1): its infectious period starts at ``pcr_on``.
    onset: date | None = None
    symptoms: list[str] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)
    pcr_on: date | None = None
    clade: str | None = None
    confirmed_at: datetime | None = None
    isolation_mode: str | None = None
    healed_on: date | None = None
    died_on: date | None = None
    phone_notified_at: datetime | None = None
    written_notified_at: datetime | None = None
    #: §5.2 the case's consent to contact tracing by STPS: None until asked; False lets the treating doctor trace
    #: anonymously (§5.4).
    tracing_consent: bool | None = None
    #: §5.2 possible sources: ``{"case": "case-N", "on": "YYYY-MM-DD"}`` up to 21 days before onset.
    sources: list[dict[str, str]] = field(default_factory=list)
    #: The case this one was exposed to, when it began as a symptomatic close contact (§5.5).
    source_case: str | None = None
    #: §1.1 what the symptom ``other`` is.
    symptom_note: str | None = None
    #: §2.2.1 a suspected case's self-isolation ended with a negative test (discard).
    isolation_ended_at: datetime | None = None
    #: §2.4 the positive sample was sent to SSI for genome sequencing on this date.
    sample_sent_on: date | None = None
    #: §3.2 under 18 on the onset day (or the registration day, without an onset).
    child: bool | None = False
    #: §3.2 the child case was referred to the highly specialised paediatric level.
    paediatric_referred_at: datetime | None = None
    #: §3.2 discharge from hospital, decided by the infection-medicine department.
    discharged_on: date | None = None
    discharge_decided_by: str | None = None
    #: §3.4 ``{"at", "assessed_by", "decision", "reason"}``: the infection-medicine specialist's assessment.
    antiviral: dict[str, Any] | None = None
    #: §3.4 why antiviral treatment may be considered (immunodeficiency, a child), or None.
    antiviral_consider: str | None = None
    #: §4.1 the person's work that an infectious case must stay away from (``WORK``).
    work: list[str] | None = field(default_factory=list)
    #: §4.1 no work until healed and no general symptoms remain.
    no_work: bool | None = False
    #: The contact (internal id) whose symptoms opened this case (§5.5); a negative test gives it back (§2.2.1).
    from_contact: int | None = None


# ---- pure rules ---------------------------------------------------------------------------------------------


def infectious_from(facts: CaseFacts) -> date | None:
    """§5.1 the first day of the case's infectious period: symptom onset; for a case confirmed by PCR without
    symptoms (§1.1), the sample date (Decision)."""
    return facts.onset or facts.pcr_on


def _daytime_end(day: date, settings: Settings) -> datetime:
    return local_time_on(day, settings.working_day_ends)


def next_working_day(day: date, settings: Settings) -> date:
    """The first working day after ``day`` (weekends and Danish public holidays skipped)."""
    for _ in range(366):
        day += timedelta(days=1)
        if settings.is_working_day(day):
            return day
    raise ValueError("no working day within a year: check the settings' working weekdays")


def phone_notification_due(confirmed_at: datetime, settings: Settings) -> datetime:
    """§3.1 phone STPS "straks, inden for dagstid": by the end of the daytime window (``daytime_starts`` to
    ``working_day_ends``, local, on a working day) the confirmation falls in; confirmed before the window opens on
    a working day, the end of that day's window; in the evening, at night, at a weekend or on a public holiday,
    the end of the next working day's window."""
    day = local_date(confirmed_at)
    if settings.is_working_day(day) and confirmed_at < _daytime_end(day, settings):
        return _daytime_end(day, settings)
    return _daytime_end(next_working_day(day, settings), settings)


def written_notification_due(confirmed_at: datetime) -> datetime:
    """§3.1 written notification to SSI and STPS within 24 hours (an hour-level deadline)."""
    return confirmed_at + WRITTEN_NOTIFICATION_WITHIN


def sequencing_sample_due(confirmed_at: datetime, settings: Settings) -> datetime:
    """§2.4 every positive sample is sent to SSI for genome sequencing. Decision (the guideline sets no time): by
    the end of the daytime window of the first working day after the day of confirmation."""
    return _daytime_end(next_working_day(local_date(confirmed_at), settings), settings)


def paediatric_referral_due(registered_at: datetime) -> datetime:
    """§3.2 a child case is worked up and treated at the highly specialised paediatric level. Decision: referred
    within 24 hours of registration (hospitals refer at any hour)."""
    return registered_at + PAEDIATRIC_REFERRAL_WITHIN


def condom_advice_ends(healed_on: date, days: int = CONDOM_ADVICE_DAYS) -> datetime:
    """§4.1 condom use for 12 weeks after healing: 00:00 local on healed date + 85 days."""
    return window_closes(healed_on, days)


def test_result_due(opened_at: datetime, settings: Settings) -> datetime:
    """§2.1, §2.2.1 Decision: the test result of a suspected case is chased when ``test_result_chase_days`` days from
    the day it was opened have passed undecided: 00:00 local after the last of them."""
    return window_closes(local_date(opened_at), settings.test_result_chase_days)


def is_child(born: date | None, day: date) -> bool:
    """§3.2 a child: under 18 on ``day``. Unknown birth date: not known to be a child (False)."""
    return born is not None and age_on(born, day) < CHILD_UNDER


def antiviral_consider(person: PersonFacts | None, child: bool) -> str | None:
    """§3.4 when antiviral treatment may be considered (after an infection-medicine specialist's assessment)."""
    reasons = []
    if person is not None and person.immunocompromised:
        reasons.append("immunodeficiency (e.g. HIV with a low CD4 count)")
    if child:
        reasons.append("a child: if at risk of severe disease")
    if not reasons:
        return None
    return ("antiviral treatment may be considered: " + "; ".join(reasons)
            + " (an infection-medicine specialist's individual assessment, §3.4)")


def general_symptoms(symptoms: list[str] | None) -> list[str]:
    """§4.1 the general symptoms among ``symptoms``."""
    return [s for s in symptoms or [] if s in GENERAL_SYMPTOMS]


# ---- guards (pure: return the refusal, or None) ----------------------------------------------------------------


def _person(subject: Subject) -> PersonFacts | None:
    related = subject.context.get("person")
    return related.facts if related is not None else None


def _no_open_case(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """One open case per person: a second one would double the notification deadlines (§3.1). A clinician may
    open a second case with a reason (``second_case_reason``, e.g. a re-infection after a healed case)."""
    person = _person(subject)
    if person is None or not person.open_cases or str(data.get("second_case_reason") or "").strip():
        return None
    case_id, state = person.open_cases[-1]
    if data.get("from_contact") is not None:
        return because("%(person)s already has an open case, %(case)s (%(state)s): record the symptoms on it "
                       "(`mpoxflow show %(case)s`), or open a second case with `case open ⟦second_case_reason⟧`",
                       person=subject.person, case=case_id, state=state)
    return because("%(person)s already has an open case, %(case)s (%(state)s): record the change on it "
                   "(`mpoxflow show %(case)s`); a second case needs the clinician's reason (⟦second_case_reason⟧, "
                   "e.g. a re-infection after the first case healed)", person=subject.person, case=case_id,
                   state=state)


def _case_definition(subject: Subject, data: Mapping[str, Any]) -> str | None:
    symptoms = list(data.get("symptoms") or [])
    criteria = list(data.get("criteria") or [])
    if not symptoms and not criteria:
        return because("not a suspected case: the case definition needs a symptom: unexplained rash, or another "
                       "symptom that can be mpox (%(symptoms)s) AND a criterion within 21 days before onset "
                       "(%(criteria)s); give them with ⟦symptoms⟧ and ⟦criteria⟧",
                       symptoms=list(SYMPTOMS[1:]), criteria=list(CRITERIA))
    if not symptoms:
        return because("not a suspected case: the case definition needs a symptom: unexplained rash, or another "
                       "symptom that can be mpox (%(symptoms)s); give them with ⟦symptoms⟧ and ⟦criteria⟧",
                       symptoms=list(SYMPTOMS[1:]))
    if not criteria:
        return because("not a suspected case: the case definition needs a criterion within 21 days before onset "
                       "(%(criteria)s); give them with ⟦symptoms⟧ and ⟦criteria⟧", criteria=list(CRITERIA))
    return None


def _suspected_needs_onset(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data.get("onset") is None:
        return because("a suspected case needs its symptom onset: give ⟦onset⟧, the day symptoms began")
    return None


def _other_has_a_note(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if "other" in (data.get("symptoms") or []) and not (data.get("symptom_note") or "").strip():
        return because("the symptom 'other' needs a description: give it with ⟦symptom_note⟧")
    return None


def _symptoms_have_an_onset(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data.get("onset") is None and data.get("symptoms"):
        return because("symptoms are given without their onset: give ⟦onset⟧, since the infectious period starts "
                       "at symptom onset; only a case without symptoms is registered without one (its period then "
                       "starts at the sample date)")
    return None


def _onset_not_in_future(subject: Subject, data: Mapping[str, Any]) -> str | None:
    onset: date | None = data.get("onset")
    today = local_date(subject.now)
    if onset is not None and onset > today:
        return because("symptom onset %(onset)s is after today (%(today)s): give the date symptoms began",
                       onset=onset, today=today)
    return None


def _start_of(subject: Subject, data: Mapping[str, Any]) -> tuple[date | None, str]:
    """The first day of the infectious period and what it is (symptom onset, or the PCR sample date)."""
    facts: CaseFacts | None = subject.facts
    onset = facts.onset if facts is not None else data.get("onset")
    if onset is not None:
        return onset, phrase("symptom onset")
    pcr_on = facts.pcr_on if facts is not None else None
    return pcr_on, phrase("the PCR sample date (no symptom onset)")


def _date_between_onset_and_today(field_name: str, what: str) -> Any:
    def check(subject: Subject, data: Mapping[str, Any]) -> str | None:
        given: date = data[field_name]
        start, called = _start_of(subject, data)
        today = local_date(subject.now)
        if start is not None and given < start:
            return because("the %(what)s date %(given)s is before %(called)s %(start)s: correct the date",
                           what=what, given=given, called=called, start=start)
        if given > today:
            return because("the %(what)s date %(given)s is after today (%(today)s): a date cannot be in the future",
                           what=what, given=given, today=today)
        return None

    return check


def _not_yet_notified(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CaseFacts = subject.facts
    if facts.confirmed_at is None:
        return because("the case was never confirmed, so no notification is due")
    channel = data["channel"]
    done = facts.phone_notified_at if channel == "phone" else facts.written_notified_at
    if done is not None and channel == "written" and data.get("updates"):
        return None  # §3.1 an updated written notification: the engine found the document sent before out of date
    if done is not None:
        return because("the %(channel)s notification is already recorded for this case", channel=channel)
    return None


def _covered_needs_no_general_symptoms(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data.get("mode") != "covered":
        return None
    facts: CaseFacts | None = subject.facts
    general = general_symptoms(facts.symptoms if facts is not None else None)
    if general:
        return because("%(case)s has general symptoms (%(symptoms)s): moving about with the lesions covered needs "
                       "no general symptoms; record self-isolation at home (⟦mode⟧ home), or hospital if admitted",
                       case=subject.object_id, symptoms=general)
    return None


def _is_admitted(subject: Subject, data: Mapping[str, Any]) -> str | None:
    mode = subject.facts.isolation_mode
    if mode != "hospital":
        return because("%(case)s is not admitted (isolation: %(mode)s): a discharge is recorded only for a case in "
                       "hospital (`case isolate %(case)s ⟦mode⟧ hospital`)", case=subject.object_id,
                       mode=mode or phrase("none recorded"))
    return None


def _named(key: str, message: Because) -> Any:
    def check(subject: Subject, data: Mapping[str, Any]) -> str | None:
        return message if not str(data.get(key) or "").strip() else None

    return check


def _child_case(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CaseFacts = subject.facts
    if not facts.child:
        return because("%(case)s is not a child case (under 18 on the onset day, from the person's birth date): "
                       "the referral to the paediatric level is for children", case=subject.object_id)
    if facts.paediatric_referred_at is not None:
        return because("the paediatric referral of %(case)s is already recorded", case=subject.object_id)
    return None


def _sample_sent_date(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CaseFacts = subject.facts
    on: date = data["on"]
    today = local_date(subject.now)
    if facts.sample_sent_on is not None:
        return because("the sample of %(case)s is already recorded as sent to SSI on %(sent)s",
                       case=subject.object_id, sent=facts.sample_sent_on)
    if facts.pcr_on is not None and on < facts.pcr_on:
        return because("the sample sent date %(on)s is before the PCR sample date %(pcr_on)s: correct the date",
                       on=on, pcr_on=facts.pcr_on)
    if on > today:
        return because("the sample sent date %(on)s is after today (%(today)s): a date cannot be in the future",
                       on=on, today=today)
    return None


def _source_not_discarded(subject: Subject, data: Mapping[str, Any]) -> str | None:
    other = subject.context["case"]
    if other.state == "discarded":
        return because("%(source)s was discarded after a negative test: a discarded case is no source of "
                       "infection; give a suspected or confirmed case with ⟦case⟧", source=other.id)
    return None


def _source_in_range(subject: Subject, data: Mapping[str, Any]) -> str | None:
    other = subject.context["case"]
    if other.id == subject.object_id:
        return because("a case cannot be its own source: give the other case with ⟦case⟧")
    start, called = _start_of(subject, data)
    if start is None:
        return None
    on: date = data["on"]
    earliest = start - timedelta(days=SOURCE_DAYS)
    if not earliest <= on <= start:
        return because("the exposure date %(on)s is outside the 21 days before %(called)s (%(earliest)s to "
                       "%(start)s) in which STPS looks for the source", on=on, called=called, earliest=earliest,
                       start=start)
    return None


def _correction_reason(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if not str(data.get("reason") or "").strip():
        return because("a correction needs its reason: say why the recorded value was wrong with ⟦reason⟧")
    return None


def _correction_fits(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """Something to correct, and only what means something in this state: the PCR date and the clade once
    confirmed."""
    given = [name for name in CORRECTABLE if data.get(name) is not None]
    if not given:
        return because("nothing to correct: give the corrected ⟦onset⟧, ⟦pcr_on⟧ or ⟦clade⟧")
    facts: CaseFacts = subject.facts
    unconfirmed = [name for name in given if name != "onset" and facts.pcr_on is None]
    if unconfirmed:
        if len(unconfirmed) > 1:  # CORRECTABLE's order: the PCR date, then the clade
            return because("%(case)s is not confirmed yet: it has no ⟦pcr_on⟧ or ⟦clade⟧ to correct; record the "
                           "positive PCR with `case confirm %(case)s`", case=subject.object_id)
        return because("%(case)s is not confirmed yet: it has no %(field)s to correct; record the positive PCR with "
                       "`case confirm %(case)s`", case=subject.object_id, field=ref(unconfirmed[0]))
    unchanged = [name for name in given if getattr(facts, name) == data[name]]
    if len(unchanged) == len(given):  # a value given as it is recorded is simply not corrected (a prefilled form)
        if len(unchanged) == 1:
            return because("%(fields)s already is recorded as given: nothing to correct", fields=ref(unchanged[0]))
        return because("%(fields)s already are recorded as given: nothing to correct",
                       fields=[ref(n) for n in unchanged])
    return None


def _corrected(subject: Subject, data: Mapping[str, Any]) -> CaseFacts:
    """The case's facts as the correction would leave them (the subject's facts unchanged)."""
    facts: CaseFacts = subject.facts
    return CaseFacts(**{**vars(facts), **{n: data[n] for n in CORRECTABLE if data.get(n) is not None}})


def _corrected_dates(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """The corrected onset and PCR date lie on or before today, the onset on or before the PCR sample, and the
    first day of the infectious period on or before what followed it (healing, discharge, the sample sent)."""
    after = _corrected(subject, data)
    today = local_date(subject.now)
    for name, what in (("onset", phrase("symptom onset")), ("pcr_on", phrase("the PCR sample date"))):
        value: date | None = data.get(name)
        if value is not None and value > today:
            return because("the corrected %(what)s %(value)s is after today (%(today)s): a date cannot be in the "
                           "future (%(field)s)", what=what, value=value, today=today, field=ref(name))
    if after.onset is not None and after.pcr_on is not None and after.pcr_on < after.onset:
        name = "onset" if data.get("onset") is not None else "pcr_on"
        return because("the PCR sample date %(pcr_on)s would be before symptom onset %(onset)s: correct %(field)s "
                       "(the sample is taken once symptoms began)", pcr_on=after.pcr_on, onset=after.onset,
                       field=ref(name))
    start = infectious_from(after)
    name = "onset" if after.onset is not None else "pcr_on"
    for later, what in ((after.healed_on, phrase("healed")), (after.discharged_on, phrase("discharge"))):
        if start is not None and later is not None and start > later:
            return because("the corrected %(field)s %(start)s would be after the %(what)s date %(later)s: correct "
                           "the date", field=ref(name), start=start, what=what, later=later)
    if after.pcr_on is not None and after.sample_sent_on is not None and after.sample_sent_on < after.pcr_on:
        return because("the corrected ⟦pcr_on⟧ %(pcr_on)s would be after the day the sample was sent to SSI "
                       "(%(sent)s): correct the date", pcr_on=after.pcr_on, sent=after.sample_sent_on)
    return None


def _period_still_holds(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """§5.1, §5.2 a later start of the infectious period must keep what was recorded against it: every contact's
    exposures inside it, every possible source within the 21 days before it. Patient safety: mpoxflow never drops
    a contact by itself; staff correct the exposure first (``contact correct``)."""
    before, after = infectious_from(subject.facts), infectious_from(_corrected(subject, data))
    if after is None or before == after:
        return None
    name = "onset" if _corrected(subject, data).onset is not None else "pcr_on"
    for contact in subject.linked.get("contact", ()):
        first = getattr(contact.facts, "exposed_on", None)
        if first is not None and first < after:
            return because("%(contact)s was exposed on %(first)s, before the corrected start of the infectious "
                           "period %(after)s (%(field)s): correct that exposure first (`contact correct "
                           "%(contact)s`), since only exposures in the infectious period make a close contact",
                           contact=contact.id, first=first, after=after, field=ref(name))
    for source in subject.facts.sources:
        on = date.fromisoformat(source["on"])
        if not after - timedelta(days=SOURCE_DAYS) <= on <= after:
            return because("the possible source %(source)s (exposure on %(on)s) would lie outside the 21 days "
                           "before the corrected %(field)s %(after)s in which STPS looks for the source: correct the "
                           "date", source=source["case"], on=on, field=ref(name), after=after)
    return None


# ---- effects ---------------------------------------------------------------------------------------------------


def _open(subject: Subject, data: Mapping[str, Any]) -> None:
    onset: date | None = data.get("onset")
    person = _person(subject)
    child = is_child(person.born if person is not None else None, onset or local_date(subject.now))
    subject.facts = CaseFacts(
        onset=onset, symptoms=list(data.get("symptoms") or []), criteria=list(data.get("criteria") or []),
        source_case=data.get("source_case"), symptom_note=data.get("symptom_note") or None,
        from_contact=data.get("from_contact"), child=child,
    )
    if child:
        subject.arm_timer(TimerSpec("paediatric_referral_due", paediatric_referral_due(subject.now), S3_2,
                                    task=PAEDIATRIC_TASK))


def _open_suspected(subject: Subject, data: Mapping[str, Any]) -> None:
    """A suspected case waits for its test: the task to chase the result (Decision, §2.1, §2.2.1)."""
    _open(subject, data)
    subject.arm_timer(TimerSpec("test_result_due", test_result_due(subject.now, subject.settings), S2_1,
                                task=TEST_RESULT_TASK))


def _confirm(subject: Subject, data: Mapping[str, Any]) -> None:
    if subject.facts is None:
        _open(subject, data)
    subject.satisfy_timer("test_result_due")  # the positive PCR is the result chased
    facts: CaseFacts = subject.facts
    # §6.3: mpox after dose 1 means no dose 2 (and a person with mpox is not vaccinated): end their course.
    subject.cascade(Cascade("course", "mpox_confirmed", states=("offered", "dose1_given", "dose2_due")))
    facts.pcr_on = data["pcr_on"]
    facts.clade = data.get("clade")
    facts.confirmed_at = subject.now
    facts.antiviral_consider = antiviral_consider(_person(subject), bool(facts.child))
    subject.arm_timer(TimerSpec("phone_notification_due", phone_notification_due(subject.now, subject.settings),
                                S3_1, task="notify STPS by phone"))
    subject.arm_timer(TimerSpec("written_notification_due", written_notification_due(subject.now), S3_1,
                                task="notify SSI and STPS in writing"))
    subject.arm_timer(TimerSpec("sequencing_sample_due", sequencing_sample_due(subject.now, subject.settings), S2_4,
                                task=SEQUENCING_TASK))


def _isolating(subject: Subject) -> bool:
    facts: CaseFacts | None = subject.facts
    return facts is not None and facts.isolation_mode is not None


def _isolate(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.isolation_mode = data["mode"]


def _ends_infectious_period_duties(facts: CaseFacts) -> None:
    facts.no_work = False


def _discard(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: CaseFacts = subject.facts
    if facts.isolation_mode is not None:
        facts.isolation_ended_at = subject.now  # §2.2.1 self-isolation ends with a negative test
    _ends_infectious_period_duties(facts)
    subject.cancel_timer("paediatric_referral_due")
    subject.satisfy_timer("test_result_due")  # the negative test is the result chased
    if facts.from_contact is not None:
        # §2.2.1, §5.5: the contact whose symptoms opened this case returns to its monitoring.
        subject.cascade(Cascade("contact", "case_discarded", pk=facts.from_contact))


def _heal(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.healed_on = data["on"]
    _ends_infectious_period_duties(subject.facts)
    _arm_condom_advice(subject)


def _arm_condom_advice(subject: Subject) -> None:
    """§4.1 the condom advice after healing, by the period the running definition declares."""
    subject.arm_timer(TimerSpec("condom_advice_ends", condom_advice_ends(
        subject.facts.healed_on, subject.days("condom_advice_ends", CONDOM_ADVICE_DAYS)), S4_1))


def timers_from_facts(subject: Subject, data: Mapping[str, Any]) -> None:
    """The timers the running definition's rules compute from a case's facts, for a case that moves to it
    (``workflow migrate``: the effect of a later definition's ``migrated`` transition): a healed case's condom
    advice (§4.1) by the new period, fired at the next clock step when already over. The notification and
    sample deadlines keep theirs: they count from an event (the confirmation, the opening), not from a fact."""
    if subject.state == "healed" and subject.facts.healed_on is not None:
        _arm_condom_advice(subject)


def _die(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.died_on = data["on"]
    _ends_infectious_period_duties(subject.facts)
    subject.cancel_timer("condom_advice_ends")
    subject.cancel_timer("paediatric_referral_due")
    subject.cancel_timer("test_result_due")


def _notify(subject: Subject, data: Mapping[str, Any]) -> None:
    channel = data["channel"]
    if channel == "phone":
        subject.facts.phone_notified_at = subject.now
    elif subject.facts.written_notified_at is None:
        subject.facts.written_notified_at = subject.now
    else:  # §3.1 an updated notification: the first met (or missed) the deadline; nothing is armed or done again
        return
    subject.satisfy_timer(f"{channel}_notification_due")


def _deadline_passed(subject: Subject, data: Mapping[str, Any]) -> None:
    """A task's deadline passed: nothing changes but the record of it (the engine marks it missed)."""


def _source(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.sources = [*subject.facts.sources, {"case": subject.context["case"].id,
                                                      "on": data["on"].isoformat()}]


def _consent(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.tracing_consent = bool(data["tracing"])


def _sample_sent(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.sample_sent_on = data["on"]
    subject.satisfy_timer("sequencing_sample_due")


def _clade(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.clade = data["clade"]


def _paediatric(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.paediatric_referred_at = subject.now
    subject.satisfy_timer("paediatric_referral_due")


def _discharge(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: CaseFacts = subject.facts
    facts.discharged_on = data["on"]
    facts.discharge_decided_by = str(data["decided_by"]).strip()
    facts.isolation_mode = data.get("mode") or "home"


def _antiviral(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: CaseFacts = subject.facts
    facts.antiviral = {"at": to_local(subject.now).isoformat(), "assessed_by": str(data["assessed_by"]).strip(),
                       "decision": data["decision"], "reason": str(data["reason"]).strip()}
    facts.antiviral_consider = antiviral_consider(_person(subject), bool(facts.child))


def _work(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: CaseFacts = subject.facts
    facts.work = list(data["work"])
    facts.no_work = bool(facts.work)


def _child_and_antiviral(subject: Subject) -> None:
    """§3.2, §3.4 what follows from the person's facts and the onset: a child case (under 18 on the onset day, the
    registration day without one) and its referral task, and when antivirals may be considered. A case that is
    now a child case gets the referral task, due 24 hours from now (the fact became known now); one that is no
    longer a child case has the task cancelled (a missed one stays missed until resolved)."""
    facts: CaseFacts = subject.facts
    person = _person(subject)
    born = person.born if person is not None else None
    child = is_child(born, facts.onset or facts.pcr_on or local_date(subject.now))
    if child and not facts.child and facts.paediatric_referred_at is None:
        subject.arm_timer(TimerSpec("paediatric_referral_due", paediatric_referral_due(subject.now), S3_2,
                                    task=PAEDIATRIC_TASK))
    elif not child and facts.child:
        subject.cancel_timer("paediatric_referral_due")
    facts.child = child
    if facts.confirmed_at is not None:
        facts.antiviral_consider = antiviral_consider(person, child)


def _correct(subject: Subject, data: Mapping[str, Any]) -> None:
    """A recorded value was wrong: the corrected values replace it, the audit entry keeps the previous ones
    (``before``) and the section of each corrected fact; what follows from the onset is recomputed. The
    notification and sequencing deadlines run from the instant of confirmation (§3.1, §2.4), not from the PCR
    sample date, so they stand."""
    facts: CaseFacts = subject.facts
    before: dict[str, Any] = {}
    for name in CORRECTABLE:
        value = data.get(name)
        if value is not None and getattr(facts, name) != value:
            old = getattr(facts, name)
            before[name] = old.isoformat() if isinstance(old, date) else old
            setattr(facts, name, value)
    subject.audit_data["before"] = before
    subject.audit_data["corrected"] = sorted(before, key=CORRECTABLE.index)
    subject.audit_data["rules"] = {name: CORRECTION_RULES[name] for name in before}
    if "onset" in before:
        _child_and_antiviral(subject)


def _person_corrected(subject: Subject, data: Mapping[str, Any]) -> None:
    """The person's birth date or immunodeficiency was corrected: child case and antiviral advice recomputed."""
    _child_and_antiviral(subject)


PCR_DATE = Guard(S1_1, _date_between_onset_and_today("pcr_on", phrase("PCR sample")))
OTHER_NOTE = Guard(S1_1, _other_has_a_note)
ONE_OPEN_CASE = Guard(S3_1, _no_open_case)
COVERED = Guard(S4_1, _covered_needs_no_general_symptoms)
CORRECTION_GUARDS = (Guard(S1_1, _correction_reason), Guard(S1_1, _correction_fits), Guard(S5_1, _corrected_dates),
                     Guard(S5_1, _period_still_holds))


def _corrects(name: str) -> Any:
    """The correction's row is that of the first fact it changes (its section is the entry's rule)."""
    def when(subject: Subject) -> bool:
        facts: CaseFacts = subject.facts
        changed = [n for n in CORRECTABLE if subject.data.get(n) is not None
                   and getattr(facts, n) != subject.data[n]]
        return bool(changed) and changed[0] == name

    return when

CASE = WorkflowDefinition(
    kind="case",
    version="SST-mpox-7.1",
    facts=CaseFacts,
    states=STATES,
    final=FINAL,
    timers=(
        Timer("test_result_due", S2_1, after="the deployment's test_result_chase_days from the day it was opened"),
        Timer("phone_notification_due", S3_1, after="the end of the daytime window the confirmation falls in"),
        Timer("written_notification_due", S3_1, WRITTEN_NOTIFICATION_WITHIN, "the confirmation"),
        Timer("sequencing_sample_due", S2_4, after="the end of the next working day's daytime window"),
        Timer("paediatric_referral_due", S3_2, PAEDIATRIC_REFERRAL_WITHIN, "the registration of a child case"),
        Timer("condom_advice_ends", S4_1, timedelta(days=CONDOM_ADVICE_DAYS), "the day of healing"),
    ),
    transitions=[
        TransitionSpec(
            "open", (NEW,), "suspected", S1_1, "open a suspected case (case definition)",
            guards=(Guard(S1_1, _suspected_needs_onset), Guard(S1_1, _onset_not_in_future),
                    Guard(S1_1, _case_definition), OTHER_NOTE, ONE_OPEN_CASE),
            effect=_open_suspected, references=("person",),
        ),
        TransitionSpec(
            "open_confirmed", (NEW,), "confirmed", S1_1,
            "register a case confirmed by PCR (without symptoms: no onset, the period starts at the sample date)",
            guards=(Guard(S1_1, _onset_not_in_future), Guard(S5_1, _symptoms_have_an_onset), OTHER_NOTE, PCR_DATE,
                    ONE_OPEN_CASE),
            effect=_confirm, references=("person",),
        ),
        TransitionSpec(
            "confirm", ("suspected",), "isolated", S1_1,
            "PCR shows mpox virus DNA in a case already isolating (§2.2.1): it stays isolated",
            guards=(PCR_DATE,), effect=_confirm, references=("person",), when=_isolating,
        ),
        TransitionSpec(
            "confirm", ("suspected",), "confirmed", S1_1, "PCR shows mpox virus DNA",
            guards=(PCR_DATE,), effect=_confirm, references=("person",),
        ),
        TransitionSpec(
            "test_result_due", ("suspected",), None, S2_1,
            "the suspected case's test result was not chased in time: missed", effect=_deadline_passed, timed=True,
        ),
        *(TransitionSpec(
            "correct", OPEN_STATES if name == "onset" else CONFIRMED_OPEN, None, CORRECTION_RULES[name],
            f"a wrong {what} is corrected, with the reason; what follows from it is recomputed",
            guards=CORRECTION_GUARDS, effect=_correct, references=("person",), linked=("contact",),
            when=_corrects(name))
          for name, what in (("onset", "symptom onset"), ("pcr_on", "PCR sample date"), ("clade", "clade"))),
        TransitionSpec(
            "correct", OPEN_STATES, None, S1_1, "a correction that gives nothing to correct is refused",
            guards=CORRECTION_GUARDS, references=("person",), linked=("contact",),
        ),
        TransitionSpec(
            "person_corrected", OPEN_STATES, None, S3_2,
            "the person's birth date or immunodeficiency was corrected: child case and antiviral advice recomputed",
            effect=_person_corrected, references=("person",), internal=True,
        ),
        TransitionSpec(
            "discard", ("suspected",), "discarded", S2_2_1,
            "negative test: the suspicion is discarded and self-isolation ends", effect=_discard,
        ),
        TransitionSpec(
            "isolate", ("suspected",), None, S2_2_1,
            "a suspected case self-isolates (home, lesions covered, or admitted §3.2) until the test answers",
            guards=(COVERED,), effect=_isolate,
        ),
        TransitionSpec(
            "isolate", ("confirmed", "isolated"), "isolated", S4_1,
            "isolation while infectious (home, lesions covered, or admitted §3.2)", guards=(COVERED,),
            effect=_isolate,
        ),
        TransitionSpec(
            "heal", ("confirmed", "isolated"), "healed", S4_1,
            "lesions healed, scabs fallen off, no general symptoms",
            guards=(Guard(S4_1, _date_between_onset_and_today("on", phrase("healed"))),), effect=_heal,
        ),
        TransitionSpec(
            "condom_advice_ends", ("healed",), "closed", S4_1, "12 weeks of condom advice after healing are over",
            timed=True,
        ),
        TransitionSpec(
            "die", ("suspected", "confirmed", "isolated", "healed"), "deceased", S3,
            "the person died (a side exit the guideline implies)",
            guards=(Guard(S3, _date_between_onset_and_today("on", phrase("death"))),), effect=_die,
        ),
        TransitionSpec(
            "notify", AFTER_CONFIRMATION, None, S3_1, "the notification to STPS/SSI is recorded",
            guards=(Guard(S3_1, _not_yet_notified),), effect=_notify,
        ),
        TransitionSpec(
            "phone_notification_due", AFTER_CONFIRMATION, None, S3_1,
            "the daytime window ended without a phone notification to STPS: missed", effect=_deadline_passed,
            timed=True,
        ),
        TransitionSpec(
            "written_notification_due", AFTER_CONFIRMATION, None, S3_1,
            "24 hours passed without a written notification to SSI and STPS: missed", effect=_deadline_passed,
            timed=True,
        ),
        TransitionSpec(
            "sample_sent", AFTER_CONFIRMATION, None, S2_4,
            "the positive sample was sent to SSI for genome sequencing",
            guards=(Guard(S2_4, _sample_sent_date),), effect=_sample_sent,
        ),
        TransitionSpec(
            "sequencing_sample_due", AFTER_CONFIRMATION, None, S2_4,
            "the positive sample was not recorded as sent to SSI in time: missed", effect=_deadline_passed,
            timed=True,
        ),
        TransitionSpec(
            "clade", AFTER_CONFIRMATION, None, S2_4, "the clade found by SSI's genome sequencing is recorded",
            effect=_clade,
        ),
        TransitionSpec(
            "paediatric", OPEN_STATES, None, S3_2,
            "a child case is referred to the highly specialised paediatric level (52) with infection medicine",
            guards=(Guard(S3_2, _child_case),), effect=_paediatric,
        ),
        TransitionSpec(
            "paediatric_referral_due", OPEN_STATES, None, S3_2,
            "the child case was not recorded as referred to the paediatric level in time: missed",
            effect=_deadline_passed, timed=True,
        ),
        TransitionSpec(
            "discharge", ("suspected", "isolated"), None, S3_2,
            "discharged from hospital, as the infection-medicine department decided; isolation goes on at home",
            guards=(Guard(S3_2, _is_admitted),
                    Guard(S3_2, _named("decided_by", because(
                        "a discharge is decided by the infection-medicine department: give who decided it with "
                        "⟦decided_by⟧"))),
                    Guard(S3_2, _date_between_onset_and_today("on", phrase("discharge"))), COVERED),
            effect=_discharge,
        ),
        TransitionSpec(
            "antiviral", ("confirmed", "isolated"), None, S3_4,
            "an infection-medicine specialist's decision on antiviral treatment is recorded",
            guards=(Guard(S3_4, _named("assessed_by", because(
                        "antiviral treatment rests on an individual assessment by a specialist in infection "
                        "medicine: give who assessed it with ⟦assessed_by⟧"))),
                    Guard(S3_4, _named("reason", because(
                        "give the specialist's reasoning for the decision with ⟦reason⟧")))),
            effect=_antiviral, references=("person",),
        ),
        TransitionSpec(
            "work", INFECTIOUS_STATES, None, S4_1,
            "the person's work with close contact, children or vulnerable people: no work until healed",
            effect=_work,
        ),
        TransitionSpec(
            "consent", OPEN_STATES, None, S5_2,
            "the case's consent to contact tracing by STPS is recorded (declined: the treating doctor may trace "
            "anonymously, §5.4)",
            effect=_consent,
        ),
        TransitionSpec(
            "source", OPEN_STATES, None, S5_2, "a possible source: an exposure up to 21 days before onset",
            guards=(Guard(S5_2, _source_not_discarded), Guard(S5_2, _source_in_range)), effect=_source,
            references=("case",),
        ),
    ],
)


# ---- the operations staff take on a case (the CLI's commands, the API's endpoints, the pages' forms) -------------


def case_open_request(values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The trigger and data of ``case open``: a suspected case, or with ``confirmed`` one confirmed by PCR (whose
    onset may be left out when it has no symptoms, §1.1: its infectious period starts at the sample date). A
    person with an open case gets a second one only with ``second_case_reason`` (kept in the audit entry).

    Returns ``(trigger, data)``; raises UsageError when the fields given do not fit together."""
    onset, confirmed = values.get("onset"), bool(values.get("confirmed"))
    pcr_on, clade = values.get("pcr_on"), values.get("clade")
    symptoms, criteria = list(values.get("symptoms") or []), list(values.get("criteria") or [])
    note = (values.get("symptom_note") or "").strip() or None
    second_case_reason = values.get("second_case_reason")
    if not confirmed and (pcr_on is not None or clade is not None):
        raise UsageError(because("⟦pcr_on⟧ and ⟦clade⟧ go with ⟦confirmed⟧ (or use `case confirm` later)"))
    if "other" in symptoms and note is None:
        raise UsageError(because("the symptom 'other' needs a description: give ⟦symptom_note⟧"))
    data: dict[str, Any] = {"symptoms": symptoms, "criteria": criteria}
    if second_case_reason is not None:
        if not second_case_reason.strip():
            raise UsageError(because("⟦second_case_reason⟧ needs the clinician's reason for a second open case, "
                                     "e.g. a re-infection after the first case healed"))
        data["second_case_reason"] = second_case_reason.strip()
    if onset is not None:
        data = {"onset": onset, **data}
    if note is not None:
        data["symptom_note"] = note
    if confirmed:
        if pcr_on is None:
            raise UsageError(because("a confirmed case needs ⟦pcr_on⟧, the date of the positive PCR"))
        return "open_confirmed", {**data, "pcr_on": pcr_on, "clade": clade}
    if onset is None:
        raise UsageError(because("a suspected case needs ⟦onset⟧, the day symptoms began; only a case confirmed by "
                                 "PCR without symptoms (⟦confirmed⟧) is registered without one"))
    return "open", data


def _summary(trigger: str) -> str:
    return next(s.summary for s in CASE.transitions if s.trigger == trigger)


_CASE_ID = "The case's id (case-N)."
_CLADE = Field("clade", "choice", "|".join(CLADES), "Klade", "Clade", choices=CLADES)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "case open", "case", "open", "open a suspected case (§1.1), or register one confirmed by PCR",
        f"Open a suspected case (refused unless the case definition holds, §1.1), or with {ref('confirmed')} "
        f"{ref('pcr_on')} a case confirmed by PCR (without symptoms, {ref('onset')} may be left out: its "
        f"infectious period starts at the sample date). A person has one open case; a second needs "
        f"{ref('second_case_reason')}.",
        fields=(
            Field("person", "id", "The person's id (person-N).", "Person", "Person", required=True, of="person"),
            Field("onset", "date", f"Symptom onset, YYYY-MM-DD (required unless {ref('confirmed')} without "
                  "symptoms).", "Symptomdebut", "Symptom onset"),
            Field("symptoms", "choices", "Comma-separated: " + ",".join(SYMPTOMS), "Symptomer", "Symptoms",
                  choices=SYMPTOMS, what="symptom"),
            Field("symptom_note", "note", "What the symptom 'other' is (§1.1: the list is open).",
                  "Beskrivelse af andet symptom", "Other symptom"),
            Field("criteria", "choices", "Comma-separated: " + ",".join(CRITERIA), "Epidemiologiske kriterier",
                  "Epidemiological criteria", choices=CRITERIA, what="criterion"),
            Field("confirmed", "flag", "Register a case already confirmed by PCR.", "Allerede bekræftet ved PCR",
                  "Confirmed by PCR", default=False),
            Field("pcr_on", "date", f"With {ref('confirmed')}: the positive PCR's date.", "Dato for positiv PCR",
                  "Positive PCR on"),
            Field("clade", "choice", f"With {ref('confirmed')}: " + "|".join(CLADES), "Klade", "Clade",
                  choices=CLADES),
            Field("second_case_reason", "note", "Why a person with an open case gets a second one (e.g. a "
                  "re-infection after the first healed); without it such a person is refused.",
                  "Begrundelse for endnu et åbent tilfælde", "Reason for a second open case"),
        ),
        rule=S1_1, creates=True, custom_prepare=case_open_request, reason_from="second_case_reason",
        offered=(Offer("person", (), {"person": "id"}),),
    ),
    Operation(
        "case confirm", "case", "confirm", _summary("confirm"),
        "Confirm by PCR (§1.1); arms the phone and written notification deadlines (§3.1).",
        fields=(Field("pcr_on", "date", "The positive PCR's date, YYYY-MM-DD.", "Dato for positiv PCR",
                      "Positive PCR on", required=True), _CLADE),
        rule=S1_1, id_help=_CASE_ID,
        tasks=(Task("test_result_due", "Record the test result…"),),
    ),
    Operation(
        "case discard", "case", "discard", _summary("discard"),
        "Discard a suspected case after a negative test (§2.2.1): its self-isolation ends.",
        rule=S2_2_1, id_help=_CASE_ID,
    ),
    Operation(
        "case isolate", "case", "isolate", _summary("isolate"),
        "Record the isolation while infectious (§4.1; hospital: admitted, §3.2), a suspected case's too (§2.2.1); "
        "covered (lesions covered, moving about) only without general symptoms (§4.1).",
        fields=(Field("mode", "choice", "|".join(ISOLATION_MODES), "Isolation", "Isolation", required=True,
                      choices=ISOLATION_MODES),),
        rule=S4_1, id_help=_CASE_ID,
    ),
    Operation(
        "case heal", "case", "heal", _summary("heal"),
        "Record healing (§4.1); arms the end of the 12-week condom advice, which closes the case.",
        fields=(Field("on", "date", "The date lesions had healed and scabs fallen off.", "Dato for heling",
                      "Healed on", required=True),),
        rule=S4_1, id_help=_CASE_ID,
    ),
    Operation(
        "case die", "case", "die", _summary("die"), "Record the person's death (the case ends as deceased).",
        fields=(Field("on", "date", "Date of death, YYYY-MM-DD.", "Dødsdato", "Died on", required=True),),
        rule=S3, id_help=_CASE_ID,
    ),
    Operation(
        "case notify", "case", "notify", _summary("notify"),
        "Record the notification of a confirmed case (§3.1): satisfies its deadline.",
        fields=(Field("channel", "choice", "phone (STPS) | written (SSI and STPS)", "Anmeldelse", "Channel",
                      required=True, choices=CHANNELS),
                Field("document", "text", "written: the notification document sent (document-N, from `case "
                      "document`); an updated notification of a case notified already needs a new one.",
                      "Anmeldelsesdokument", "Notification document")),
        rule=S3_1, id_help=_CASE_ID,
        tasks=(Task("phone_notification_due", "Phone notification to STPS done", {"channel": "phone"}),
               Task("written_notification_due", "Written notification to SSI and STPS sent",
                    {"channel": "written"})),
    ),
    Operation(
        "case consent", "case", "consent", _summary("consent"),
        f"Record the case's consent to contact tracing by STPS (§5.2); `{ref('tracing')} no` (declined) lets the "
        f"treating doctor trace known contacts anonymously (§5.4, `contact add {ref('anonymous_via_doctor')}`).",
        fields=(Field("tracing", "yesno", "yes | no: does the case consent to tracing by STPS?",
                      "Samtykke til smitteopsporing ved STPS", "Consents to tracing by STPS", required=True,
                      what="answer"),),
        rule=S5_2, id_help=_CASE_ID,
    ),
    Operation(
        "case source", "case", "source", _summary("source"),
        "Record a possible source of infection: an exposure up to 21 days before symptom onset (§5.2).",
        fields=(Field("case", "id", "The possible source case (case-N).", "Mulig smittekilde (tilfælde)",
                      "Source case", required=True, of="case"),
                Field("on", "date", "Date of the exposure, within 21 days before onset.", "Dato for eksponering",
                      "Exposed on", required=True)),
        rule=S5_2, id_help=_CASE_ID,
    ),
    Operation(
        "case sample-sent", "case", "sample_sent", _summary("sample_sent"),
        "Record that the positive sample was sent to SSI for genome sequencing (§2.4): satisfies its deadline.",
        fields=(Field("on", "date", "The date the sample was sent to SSI, YYYY-MM-DD.",
                      "Dato for afsendelse til SSI", "Sent on", required=True),),
        rule=S2_4, id_help=_CASE_ID, tasks=(Task("sequencing_sample_due", "Record the sample sent to SSI…"),),
    ),
    Operation(
        "case clade", "case", "clade", _summary("clade"),
        "Record the clade SSI's genome sequencing found (§2.4), once the case is confirmed.",
        fields=(Field("clade", "choice", "|".join(CLADES), "Klade", "Clade", required=True, choices=CLADES),),
        rule=S2_4, id_help=_CASE_ID,
    ),
    Operation(
        "case correct", "case", "correct", "correct a wrong symptom onset, PCR sample date or clade",
        f"Correct a recorded value that was wrong, with {ref('reason')} (required): the symptom onset (any open "
        f"state; it starts the infectious period, §5.1), the PCR sample date ({ref('pcr_on')}, §1.1) or the clade "
        "(§2.4) once confirmed. The audit entry keeps the values before and after; what follows from them (a child "
        "case, §3.2) is recomputed. Refused when nothing changes, a date lies in the future or would leave a "
        "contact's exposure or a source outside the infectious period.",
        fields=(Field("onset", "date", "The corrected symptom onset, YYYY-MM-DD.", "Korrigeret symptomdebut",
                      "Corrected symptom onset"),
                Field("pcr_on", "date", "The corrected date of the positive PCR sample, YYYY-MM-DD.",
                      "Korrigeret dato for positiv PCR", "Corrected positive PCR on"),
                Field("clade", "choice", "The corrected clade: " + "|".join(CLADES), "Korrigeret klade",
                      "Corrected clade", choices=CLADES)),
        rule=S5_1, id_help=_CASE_ID, reason_in_data=True,
        reason_help="Why the recorded value was wrong (required): goes into the audit entry.",
        reason_required=True,
    ),
    Operation(
        "case paediatric", "case", "paediatric", _summary("paediatric"),
        "Record that a child case was referred to the highly specialised paediatric level (52), with infection "
        "medicine (§3.2): satisfies its deadline.",
        rule=S3_2, id_help=_CASE_ID, tasks=(Task("paediatric_referral_due", "Referred to the paediatric level", {}),),
    ),
    Operation(
        "case discharge", "case", "discharge", _summary("discharge"),
        "Record the discharge of an admitted case, as the infection-medicine department decided it (§3.2); the "
        "isolation goes on at home (or, without general symptoms, with the lesions covered, §4.1).",
        fields=(Field("on", "date", "The date of discharge, YYYY-MM-DD.", "Udskrivelsesdato", "Discharged on",
                      required=True),
                Field("decided_by", "text", "Who in the infection-medicine department decided the discharge "
                      "(§3.2).", "Besluttet af", "Decided by"),
                Field("mode", "choice", "Isolation after discharge: " + "|".join(DISCHARGE_MODES),
                      "Isolation efter udskrivelse", "Isolation after discharge", default="home",
                      choices=DISCHARGE_MODES)),
        rule=S3_2, id_help=_CASE_ID,
    ),
    Operation(
        "case antiviral", "case", "antiviral", _summary("antiviral"),
        "Record the decision on antiviral treatment of a confirmed case (§3.4), made by a specialist in infection "
        "medicine; the case shows when it may be considered (immunodeficiency, a child at risk).",
        fields=(Field("decision", "choice", "|".join(ANTIVIRAL_DECISIONS), "Beslutning", "Decision",
                      required=True, choices=ANTIVIRAL_DECISIONS),
                Field("assessed_by", "text", "The infection-medicine specialist whose individual assessment this "
                      "is (§3.4).", "Vurderet af", "Assessed by")),
        rule=S3_4, id_help=_CASE_ID, reason_in_data=True,
        # §3.4: the specialist's reasoning is part of the recorded decision (and the audit entry's reason).
        reason_help="The specialist's reasoning (required): recorded with the decision and in the audit entry.",
        reason_required=True,
    ),
    Operation(
        "case work", "case", "work", _summary("work"),
        "Record the person's work with close physical contact, children under 12, or pregnant or immunocompromised "
        "people (§4.1): no work while infectious, until healed.",
        fields=(Field("work", "choices", "Comma-separated: " + ",".join(WORK), "Arbejde", "Work", required=True,
                      choices=WORK, bounds=(1, None), what="kind of work"),),
        rule=S4_1, id_help=_CASE_ID,
    ),
)


#: How cases show (``workflows.profile``).
PROFILE = Profile(
    "case", "case", "Cases: suspected → confirmed → isolated → healed → closed (§1–§4).", "cases", "Cases",
    ("id", "state", "person", "onset", "pcr_on", "healed_on", "updated_at"), belongs_to={"person": "person_id"},
)
