"""The vaccination course (``course@SST-mpox-7.1``): offered → dose1_given → dose2_due → completed, with declined
and cancelled. Imvanex (MVA-BN), §6: the dose plan is decided at the offer (§6.3, §6.4); PrEP only for a §6.1 target
group whose criterion holds, and never for a child under 12 or a pregnant or breastfeeding person (§6.2.1-2); PEP
only after an assessment, for a close contact of high or medium risk (or of low risk at risk of severe disease,
with the assessor's reasons) inside the 14 days after the last exposure (§6.2); dose 2 at least 28 days after the
person's previous dose (§6.4); never more than two doses over the person, and no dose 2 after mpox (§6.3).

An offered PEP course follows its contact's last exposure (``contact_exposed``). When its window closes without
dose 1 the course lapses but stays offered for ``Settings.pep_late_entry_grace``, so that a dose 1 given inside the
window can still be recorded; then it is cancelled (§6.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from workflows.calendar import DANISH, local_date, local_midnight
from workflows.contact import OPEN as CONTACT_OPEN
from workflows.contact import (
    PEP_LATEST_DAYS,
    PEP_OPTIMAL_DAYS,
    ContactFacts,
    pep_exposure,
    pep_indicated,
    pep_window_at,
    pep_window_closes,
)
from workflows.definition import (
    NEW,
    Cascade,
    Guard,
    Related,
    Subject,
    Timer,
    TimerSpec,
    TransitionSpec,
    WorkflowDefinition,
)
from workflows.errors import Joined, UsageError, because, phrase
from workflows.errors import field as ref
from workflows.operations import Field, Offer, Operation, Task
from workflows.person import PersonFacts, age_on
from workflows.profile import CalendarCount, Profile
from workflows.rules import cite

S6, S6_1, S6_2, S6_2_1, S6_2_2, S6_3, S6_4 = (
    cite(s) for s in ("§6", "§6.1", "§6.2", "§6.2.1", "§6.2.2", "§6.3", "§6.4")
)

INDICATIONS = ("pep", "prep")
#: §6.1 PrEP target groups.
PREP_CRITERIA = ("msm_two_partners_12w", "msm_sti_24w", "individual_assessment", "travel_clade_i")
#: §6.1 the criteria that look back from the offer day: "inden for de sidste 12 uger" / "24 uger" (in days).
PREP_LOOKBACK_DAYS = {"msm_two_partners_12w": 12 * 7, "msm_sti_24w": 24 * 7}
PREP_LOOKBACK_WHAT = {"msm_two_partners_12w": phrase("intercourse with at least two male partners"),
                      "msm_sti_24w": phrase("a sexually transmitted infection")}
#: §6.1 the criteria that rest on a doctor's assessment.
PREP_NEEDS_ASSESSOR = {
    "individual_assessment": phrase("an individual medical assessment (give the doctor with ⟦assessed_by⟧)"),
    "travel_clade_i": phrase("an assessment by an infection-medicine doctor (give the doctor with ⟦assessed_by⟧)"),
}
STATES = ("offered", "dose1_given", "dose2_due", "completed", "declined", "cancelled")
FINAL = ("completed", "declined", "cancelled")
OPEN = ("offered", "dose1_given", "dose2_due")
#: §6.4 at least 28 days between the doses.
DOSE_INTERVAL_DAYS = 28
#: §6.3 no more than two doses (no boosters), counted over the person.
MAX_DOSES = 2
#: §6.4 people born in 1970 or earlier count as smallpox-vaccinated.
SMALLPOX_VACCINATED_BORN_BY = 1970
#: §6.2.2 under 12: off-label, PEP only, after an individual medical assessment.
CHILD_UNDER = 12
#: Why a course ended when its PEP window closed without dose 1 (and no late entry came in the grace).
PEP_WINDOW_ENDED = f"PEP window closed before dose 1 ({S6_2})"
MPOX_ENDED = f"mpox confirmed for the person ({S6_3})"
#: The reasons a course ended (``ended_because``) as a refusal names them, for the catalog (the same texts).
ENDED_PHRASES = (phrase("PEP window closed before dose 1 (SST-mpox-7.1 §6.2)"),
                 phrase("mpox confirmed for the person (SST-mpox-7.1 §6.3)"))
LATE_ENTRY = "pep_late_entry_ends"


@dataclass
class CourseFacts:
    """The facts a course carries; stored as columns of the same names."""

    indication: str
    doses_planned: int
    plan_rule: str
    plan_reason: str
    contact_id: int | None = None
    criteria: list[str] = field(default_factory=list)
    #: PrEP: the doctor of a §6.1 assessment; PEP: who assessed the PEP (a doctor or STPS, §6.2).
    assessed_by: str | None = None
    #: PEP: the exposure the window runs from (§6.2); it follows the contact's last exposure while offered.
    exposure_on: date | None = None
    dose1_on: date | None = None
    dose2_on: date | None = None
    #: PEP is off-label: informed consent, indication and justification recorded with dose 1 (§6.2).
    consent: dict[str, Any] | None = None
    #: Per dose, the doctor whose individual assessment covered a child under 12 or a pregnancy (§6.2.1-2).
    dose_assessments: list[dict[str, Any]] = field(default_factory=list)
    ended_because: str | None = None
    #: The assessor's reasons (§6.2: PEP for a low-risk contact at risk of severe disease needs them).
    assessment_note: str | None = None
    #: PrEP: the date of the dated §6.1 criterion (the STI, the partners), within its look-back from the offer.
    criterion_on: date | None = None
    #: The person's doses before this course (other courses and elsewhere, §6.3), at the offer and at its first
    #: dose; with 1 the course gives the person's dose 2. None (courses before 0009): 0.
    prior_doses: int | None = None
    prior_last_dose_on: date | None = None
    #: PEP: when the window closed without dose 1; the course stays offered for the late-entry grace.
    lapsed_at: datetime | None = None
    #: PEP: the special case that justifies a dose 1 on day 5-14 after the exposure (§6.2).
    special_reason: str | None = None


# ---- pure rules ---------------------------------------------------------------------------------------------


def dose_plan(person: PersonFacts) -> tuple[int, str, str]:
    """§6.4: how many doses, the section that decides, and why. (A previous mpox infection is refused before,
    §6.3.) Immunocompromised people get 2 doses even if smallpox-vaccinated; smallpox-vaccinated people
    (explicitly, or born in 1970 or earlier) get 1; everyone else 2 at least 28 days apart."""
    born_early = person.born is not None and person.born.year <= SMALLPOX_VACCINATED_BORN_BY
    if person.immunocompromised:
        return 2, S6_4, phrase("immunocompromised: 2 doses at least 28 days apart, even if smallpox-vaccinated")
    if person.smallpox_vaccinated:
        return 1, S6_4, phrase("smallpox-vaccinated: one dose is enough")
    if born_early:
        return 1, S6_4, phrase("born in 1970 or earlier: smallpox-vaccinated: one dose is enough")
    return 2, S6_4, phrase("2 doses at least 28 days apart")


def dose2_due(dose1_on: date, interval: int = DOSE_INTERVAL_DAYS) -> Any:
    """§6.4 dose 2 falls due at 00:00 local on dose 1 + 28 days (``interval``: the running definition's)."""
    return local_midnight(dose1_on + timedelta(days=interval))


def dose2_overdue_at(dose1_on: date, overdue_after: timedelta, interval: int = DOSE_INTERVAL_DAYS) -> Any:
    """When a due dose 2 turns overdue in the worklist: 00:00 local, ``overdue_after`` calendar days after the
    day dose 2 falls due (a deployment's choice: §6.4 sets no upper limit)."""
    return local_midnight(dose1_on + timedelta(days=interval + overdue_after.days))


def late_entry_ends(exposure_on: date, grace: timedelta, latest_days: int = PEP_LATEST_DAYS) -> datetime:
    """When a lapsed PEP offer is cancelled: the window's close (00:00 local after day 14) plus ``grace`` in
    Danish wall-clock time (7 days: 00:00 local a week later, whatever the daylight-saving change in between)."""
    closes = datetime.combine(exposure_on + timedelta(days=latest_days + 1), time(0), tzinfo=DANISH)
    return (closes + grace).astimezone(UTC)


def _interval(subject: Subject) -> int:
    """§6.4 the days between the doses, as the running definition declares them (its ``dose2_due`` timer)."""
    return subject.days("dose2_due", DOSE_INTERVAL_DAYS)


def _latest_days(subject: Subject) -> int:
    """§6.2 the last day of the PEP window after the exposure, as the running definition declares it."""
    return subject.days("pep_window_closes", PEP_LATEST_DAYS)


def severe_disease_risk(person: PersonFacts, on: date) -> str | None:
    """§6.2 (with §6.2.1-2 and §6.4): why the person is at higher risk of severe disease, or None."""
    if person.born is not None and age_on(person.born, on) < CHILD_UNDER:
        return phrase("a child under 12")
    if person.pregnant_or_breastfeeding:
        return phrase("pregnant or breastfeeding")
    if person.immunocompromised:
        return phrase("immunocompromised")
    return None


def _own_pk(subject: Subject) -> int | None:
    """The course's own internal id (``course-7`` -> 7); None while it is being created."""
    prefix = "course-"
    if subject.object_id.startswith(prefix) and subject.object_id[len(prefix):].isdigit():
        return int(subject.object_id[len(prefix):])
    return None


def _own_doses(facts: CourseFacts | None) -> list[date]:
    if facts is None:
        return []
    return [on for on in (facts.dose1_on, facts.dose2_on) if on is not None]


def _person(subject: Subject) -> PersonFacts:
    facts: PersonFacts = subject.context["person"].facts
    return facts


def _doses_so_far(subject: Subject) -> tuple[int, list[date], list[tuple[str, date]]]:
    """§6.3 the person's doses before the one now recorded or offered: (count, this course's own dates, the others
    as (where, date)). Doses elsewhere without a date count, but have no entry among the others."""
    person = _person(subject)
    pk = _own_pk(subject)
    own = _own_doses(subject.facts)
    others = [(f"course-{course}", on) for course, on in person.course_doses if course != pk]
    if person.last_dose_elsewhere_on is not None and person.doses_elsewhere:
        others.append((phrase("given elsewhere"), person.last_dose_elsewhere_on))
    count = len(own) + person.doses_besides(pk)[0]
    return count, own, others


def _pep_window_from(contact: ContactFacts) -> date | None:
    """§6.2 the exposure a course's PEP window runs from: the contact's PEP exposure (high or medium risk, Table
    1); for a contact whose risk does not indicate PEP (offered on the risk of severe disease), its last exposure."""
    if pep_indicated(contact.risk):
        return pep_exposure(contact)
    return contact.last_exposure_on


# ---- guards: the offer ---------------------------------------------------------------------------------------


def _never_had_mpox(subject: Subject, data: Mapping[str, Any]) -> str | None:
    person = _person(subject)
    if person.previous_mpox or person.confirmed_mpox:
        if person.confirmed_mpox:
            return because("%(person)s has a confirmed mpox case and is not vaccinated", person=subject.person)
        return because("%(person)s has had mpox and is not vaccinated", person=subject.person)
    return None


def _no_other_course(subject: Subject, data: Mapping[str, Any]) -> str | None:
    states = _person(subject).courses
    if any(s in OPEN for s in states):
        return because("%(person)s has a course under way: record its doses on it (`mpoxflow list courses`); an "
                       "offered PEP course whose window has closed (lapsed) can be ended first with `vaccine "
                       "decline`", person=subject.person)
    if "completed" in states:
        return because("%(person)s has completed a course: no more than 2 doses, no boosters", person=subject.person)
    return None


def _doses_left_to_give(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """§6.3 counted over the person: 2 doses (in any course, whatever became of it, or elsewhere) end vaccination;
    a one-dose plan (§6.4) ends with one."""
    count, _, others = _doses_so_far(subject)
    where = [f"{on} ({at})" for at, on in sorted(others, key=lambda o: o[1])] or phrase("dates not recorded")
    if count >= MAX_DOSES:
        return because("%(person)s has had %(count)s doses already (%(where)s): no more than 2 doses, no boosters; "
                       "no new course", person=subject.person, count=count, where=where)
    planned, _, why = dose_plan(_person(subject))
    if count >= planned:
        return because("%(person)s has had %(count)s dose already (%(where)s) and the plan is one dose (%(why)s): "
                       "no more than that, no boosters", person=subject.person, count=count, where=where, why=why)
    return None


def _prep_not_for_a_child(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data["indication"] != "prep":
        return None
    born, today = _person(subject).born, local_date(subject.now)
    if born is not None and age_on(born, today) < CHILD_UNDER:
        return because("%(person)s is under 12 today (%(today)s): a child is vaccinated only as PEP, for a close "
                       "contact after a specific medical assessment; PrEP is not offered (offer PEP with "
                       "⟦indication⟧ pep ⟦contact⟧ if the child is a close contact)", person=subject.person,
                       today=today)
    return None


def _prep_not_when_pregnant(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data["indication"] != "prep":
        return None
    if _person(subject).pregnant_or_breastfeeding:
        return because("%(person)s is pregnant or breastfeeding: vaccinated only as PEP, for a close contact after "
                       "a specific medical assessment; PrEP is not offered (record the change with `person update` "
                       "once it no longer holds)", person=subject.person)
    return None


def _pep_for_this_contact(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data["indication"] != "pep":
        return None
    contact: Related | None = subject.context.get("contact")
    if contact is None:
        return because("PEP is for a close contact: give the contact with ⟦contact⟧")
    facts: ContactFacts = contact.facts
    if contact.person != subject.person:
        return because("%(contact)s is about %(of)s, not %(person)s", contact=contact.id, of=contact.person,
                       person=subject.person)
    if contact.state == "symptomatic":
        return because("%(contact)s has symptoms and is a suspected case: PEP is for contacts without symptoms",
                       contact=contact.id)
    if not pep_indicated(facts.risk):
        severe = severe_disease_risk(_person(subject), local_date(subject.now))
        if severe is None:
            return because("%(contact)s's risk is %(risk)s: PEP is not needed (Table 1); only a contact at risk of "
                           "severe disease (a child under 12, pregnant or breastfeeding, immunocompromised) may be "
                           "offered it after an assessment", contact=contact.id, risk=facts.risk)
        if not data.get("assessment_note"):
            return because("%(contact)s's risk is %(risk)s: PEP is not needed by the exposure alone (Table 1); for "
                           "%(person)s (%(severe)s, at risk of severe disease) the assessor must record why PEP is "
                           "offered: give it with ⟦assessment_note⟧", contact=contact.id, risk=facts.risk,
                           person=subject.person, severe=severe)
    since = _pep_window_from(facts)
    if since is None or pep_window_at(since, subject.now, latest_days=_latest_days(subject)) == "closed":
        if since:
            return because("%(contact)s's PEP window closed with day 14 after the exposure of %(since)s: PEP is no "
                           "longer offered", contact=contact.id, since=since)
        return because("%(contact)s's PEP window closed with day 14 after the exposure: PEP is no longer offered",
                       contact=contact.id)
    return None


def _pep_assessed(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data["indication"] == "pep" and not data.get("assessed_by"):
        return because("PEP is offered after an assessment by a doctor or STPS (the exposure risk, Table 1, and the "
                       "risk of severe disease): give who assessed it with ⟦assessed_by⟧")
    return None


def _prep_target_group(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """§6.1: every criterion recorded must hold: a dated one within its look-back from the offer day, one resting
    on a doctor's assessment with that doctor named."""
    if data["indication"] != "prep":
        return None
    criteria = list(data.get("criteria") or [])
    if not criteria:
        return because("PrEP is for the §6.1 target groups: give one with ⟦criteria⟧ (%(criteria)s)",
                       criteria=list(PREP_CRITERIA))
    today = local_date(subject.now)
    on: date | None = data.get("criterion_on")
    for criterion in criteria:
        if criterion in PREP_LOOKBACK_DAYS:
            days, what = PREP_LOOKBACK_DAYS[criterion], PREP_LOOKBACK_WHAT[criterion]
            if on is None:
                return because("%(criterion)s looks back %(weeks)s weeks from the offer: give the date of %(what)s "
                               "with ⟦criterion_on⟧", criterion=criterion, weeks=days // 7, what=what)
            if on > today:
                return because("the criterion date %(on)s is after today (%(today)s): give the date it happened",
                               on=on, today=today)
            if (today - on).days > days:
                oldest = today - timedelta(days=days)
                return because("%(criterion)s: %(what)s on %(on)s is %(ago)s days before today, more than %(weeks)s "
                               "weeks (%(days)s days): the criterion does not hold (it needs %(oldest)s or later)",
                               criterion=criterion, what=what, on=on, ago=(today - on).days, weeks=days // 7,
                               days=days, oldest=oldest)
        if criterion in PREP_NEEDS_ASSESSOR and not data.get("assessed_by"):
            return because("%(criterion)s needs %(needs)s", criterion=criterion,
                           needs=PREP_NEEDS_ASSESSOR[criterion])
    return None


# ---- guards: a dose ------------------------------------------------------------------------------------------


def _dose_date(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CourseFacts = subject.facts
    on: date = data["on"]
    today = local_date(subject.now)
    if on > today:
        return because("the dose date %(on)s is after today (%(today)s): record a dose once given", on=on,
                       today=today)
    if facts.exposure_on is not None and on < facts.exposure_on:
        return because("the dose date %(on)s is before the exposure (%(exposure)s) it is to protect against", on=on,
                       exposure=facts.exposure_on)
    return None


def _pep_within_window(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CourseFacts = subject.facts
    if facts.indication != "pep" or facts.exposure_on is None:
        return None
    latest = facts.exposure_on + timedelta(days=_latest_days(subject))
    if data["on"] > latest:
        return because("dose 1 on %(on)s is after day 14 from the exposure on %(exposure)s (last day %(latest)s): "
                       "PEP is no longer given", on=data["on"], exposure=facts.exposure_on, latest=latest)
    return None


def _pep_special_case(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """§6.2: best within 4 days; "i særlige tilfælde" up to 14: a dose 1 on day 5-14 records the special case."""
    facts: CourseFacts = subject.facts
    if facts.indication != "pep" or facts.exposure_on is None:
        return None
    day = (data["on"] - facts.exposure_on).days
    optimal = subject.days("pep_optimal_window_closes", PEP_OPTIMAL_DAYS)
    if optimal < day <= _latest_days(subject) and not data.get("special_reason"):
        return because("dose 1 on %(on)s is day %(day)s after the exposure on %(exposure)s: after day 4 PEP is "
                       "given only in special cases; give the reason with ⟦special_reason⟧", on=data["on"], day=day,
                       exposure=facts.exposure_on)
    return None


def _pep_consent(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if subject.facts.indication != "pep":
        return None
    missing = [name for key, name in (("consent", "⟦consent⟧"), ("indication_note", "⟦indication_note⟧"),
                                      ("justification", "⟦justification⟧")) if not data.get(key)]
    if missing:
        return because("PEP is off-label: informed consent, indication and justification must be recorded with "
                       "dose 1; missing %(missing)s", missing=missing)
    return None


def _no_prep_dose_when_pregnant(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if subject.facts.indication == "prep" and _person(subject).pregnant_or_breastfeeding:
        return because("%(person)s is now pregnant or breastfeeding: vaccinated only as PEP after a specific "
                       "medical assessment, so no PrEP dose; give it once that no longer holds (`person update`), or "
                       "decline the course", person=subject.person)
    return None


def _no_prep_dose_for_a_child(subject: Subject, data: Mapping[str, Any]) -> str | None:
    born, on = _person(subject).born, data["on"]
    if subject.facts.indication == "prep" and born is not None and age_on(born, on) < CHILD_UNDER:
        return because("%(person)s is under 12 on %(on)s: a child is vaccinated only as PEP, so no PrEP dose; "
                       "decline the course", person=subject.person, on=on)
    return None


def _assessed_if_pregnant(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if _person(subject).pregnant_or_breastfeeding and not data.get("assessed_by"):
        return because("pregnant or breastfeeding: off-label, needs an individual medical assessment; give the "
                       "doctor with ⟦assessed_by⟧")
    return None


def _assessed_if_child(subject: Subject, data: Mapping[str, Any]) -> str | None:
    born, on = _person(subject).born, data["on"]
    if born is not None and age_on(born, on) < CHILD_UNDER and not data.get("assessed_by"):
        return because("a child of %(age)s on %(on)s: under 12 is off-label and needs an individual medical "
                       "assessment; give the doctor with ⟦assessed_by⟧", age=age_on(born, on), on=on)
    return None


def _no_more_than_two(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """§6.3 re-checked at every dose, over the person: doses elsewhere may have been recorded since the offer."""
    count, _, others = _doses_so_far(subject)
    elsewhere = [f"{on} ({at})" for at, on in sorted(others, key=lambda o: o[1])]
    if count >= MAX_DOSES:
        return because("%(person)s has had %(count)s doses already (%(where)s): no more than 2 doses, no boosters",
                       person=subject.person, count=count, where=elsewhere or phrase("dates not recorded"))
    if subject.facts.doses_planned == 1 and count >= 1:
        return because("%(person)s has had the one dose the plan needs (%(where)s): no more than that, no boosters",
                       person=subject.person, where=elsewhere or phrase("date not recorded"))
    return None


def _after_previous_dose(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """§6.4 at least 28 days after the person's real previous dose, whichever course it was in (or elsewhere)."""
    count, own, others = _doses_so_far(subject)
    if count == 0:
        return None
    dated = [(None, on) for on in own] + [(at, on) for at, on in others]
    if len(dated) < count:
        return because("%(person)s has a dose given elsewhere whose date is not recorded: record it with `person "
                       "update %(person)s ⟦doses_elsewhere⟧ ⟦last_dose_on⟧` (dose 2 is at least 28 days after it)",
                       person=subject.person)
    at, previous = max(dated, key=lambda d: d[1])
    earliest = previous + timedelta(days=_interval(subject))
    if data["on"] < earliest and at is None:
        return because("dose 2 must be at least 28 days after dose 1 (%(previous)s): not before %(earliest)s",
                       previous=previous, earliest=earliest)
    if data["on"] < earliest:
        return because("dose 2 must be at least 28 days after the person's previous dose, %(at)s (%(previous)s): "
                       "not before %(earliest)s", at=at, previous=previous, earliest=earliest)
    return None


def _course_ended(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CourseFacts = subject.facts
    then = {"cancelled": phrase("offer a new course if one is indicated"),
            "declined": phrase("if the person wants the vaccine after all, offer a new course (`vaccine offer`)")}
    if subject.state == "cancelled" and facts.ended_because and S6_2 in facts.ended_because:
        return because("%(course)s is cancelled (%(why)s): PEP is no longer given for the exposure of "
                       "%(exposure)s; no dose on it", course=subject.object_id, why=facts.ended_because,
                       exposure=facts.exposure_on)
    return because("%(course)s is %(state)s (%(why)s): no further dose; %(then)s", course=subject.object_id,
                   state=subject.state, why=facts.ended_because, then=then[subject.state])


def _no_third_dose(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CourseFacts = subject.facts
    if facts.doses_planned == 1:
        given = phrase("its one dose")
    elif len(_own_doses(facts)) == 1:
        given = phrase("the person's dose 2")
    else:
        given = phrase("its 2 doses")
    return because("the course is completed with %(given)s: no more than 2 doses, no boosters", given=given)


# ---- effects ---------------------------------------------------------------------------------------------------


def _arm_pep_window(subject: Subject) -> None:
    """§6.2 the offered PEP course's window from its exposure: open, its closing armed; closed already (an
    exposure corrected to an earlier date), the course lapsed with its late-entry grace from the close."""
    facts: CourseFacts = subject.facts
    assert facts.exposure_on is not None
    closes = pep_window_closes(facts.exposure_on, _latest_days(subject))
    if closes > subject.now:
        facts.lapsed_at = None
        subject.cancel_timer(LATE_ENTRY)
        subject.arm_timer(TimerSpec("pep_window_closes", closes, S6_2))
    else:
        subject.cancel_timer("pep_window_closes")
        _lapse(subject, {})


def _offer(subject: Subject, data: Mapping[str, Any]) -> None:
    person = _person(subject)
    doses, rule, why = dose_plan(person)
    prior, last = person.doses_besides(None)
    if prior:
        why += (f"; {prior} dose given before (on {last or 'a date not recorded'}): this course gives the person's "
                "dose 2")
    facts = CourseFacts(indication=data["indication"], doses_planned=doses, plan_rule=rule, plan_reason=why,
                        criteria=list(data.get("criteria") or []), assessed_by=data.get("assessed_by"),
                        assessment_note=data.get("assessment_note"), criterion_on=data.get("criterion_on"),
                        prior_doses=prior, prior_last_dose_on=last)
    subject.facts = facts
    contact = subject.context.get("contact")
    if facts.indication == "pep" and contact is not None:
        facts.contact_id = contact.pk
        facts.exposure_on = _pep_window_from(contact.facts)
        _arm_pep_window(subject)
        subject.cascade(Cascade("contact", "pep_offered", pk=contact.pk))


def _dose(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: CourseFacts = subject.facts
    person = _person(subject)
    if data.get("assessed_by"):
        facts.dose_assessments = [*facts.dose_assessments, {"on": data["on"].isoformat(),
                                                            "assessed_by": data["assessed_by"]}]
    if not _own_doses(facts):  # the course's first dose
        facts.prior_doses, facts.prior_last_dose_on = person.doses_besides(_own_pk(subject))
        if facts.indication == "pep":
            facts.consent = {"informed_consent": True, "indication": data.get("indication_note"),
                             "justification": data.get("justification")}
            facts.special_reason = data.get("special_reason") or None
        subject.cancel_timer("pep_window_closes")
        subject.cancel_timer(LATE_ENTRY)
        subject.satisfy_timer(LATE_ENTRY)  # a dose 1 given inside the window, recorded in the grace: done
        if facts.prior_doses:  # the person's dose 2: the course is complete with it
            facts.dose2_on = data["on"]
            return
        facts.dose1_on = data["on"]
        if facts.doses_planned == 2:
            _arm_dose2(subject)
    else:
        facts.dose2_on = data["on"]
        subject.cancel_timer("dose2_due")
        subject.satisfy_timer("dose2_due")


def _arm_dose2(subject: Subject) -> None:
    """§6.4 dose 2 falls due the running definition's interval after dose 1 (a task, overdue after the
    deployment's setting)."""
    facts: CourseFacts = subject.facts
    assert facts.dose1_on is not None
    interval = _interval(subject)
    subject.arm_timer(TimerSpec(
        "dose2_due", dose2_due(facts.dose1_on, interval), S6_4,
        task=f"give dose 2 (from {facts.dose1_on + timedelta(days=interval)})",
        overdue_at=dose2_overdue_at(facts.dose1_on, subject.settings.dose2_overdue_after, interval),
    ))


def timers_from_facts(subject: Subject, data: Mapping[str, Any]) -> None:
    """The timers the running definition's rules compute from a course's facts and the clock, for a course that
    moves to it (``workflow migrate``: the effect of a later definition's ``migrated`` transition): dose 1 given,
    dose 2's due day by the new interval (§6.4); a PEP offer still inside its window, the window's close by the
    new period (§6.2; a window the new period has already closed lapses the offer, with its late-entry grace).
    A course whose dose 2 is due already, or whose offer lapsed, keeps its timers."""
    facts: CourseFacts = subject.facts
    if subject.state == "dose1_given" and facts.dose1_on is not None and facts.doses_planned == 2:
        _arm_dose2(subject)
    elif (subject.state == "offered" and facts.indication == "pep" and facts.exposure_on is not None
          and facts.lapsed_at is None and facts.dose1_on is None):
        _arm_pep_window(subject)


def _end(because: str, *, pep_may_be_assessed_again: bool = True) -> Any:
    def effect(subject: Subject, data: Mapping[str, Any]) -> None:
        facts: CourseFacts = subject.facts
        facts.ended_because = because
        for name in ("pep_window_closes", LATE_ENTRY, "dose2_due"):
            subject.cancel_timer(name)  # not done: no longer needed
        if pep_may_be_assessed_again and facts.indication == "pep" and facts.contact_id is not None:
            # §6.2: the offer is over; a later exposure of the contact is assessed for PEP anew.
            subject.cascade(Cascade("contact", "pep_course_ended", pk=facts.contact_id))

    return effect


def _lapse(subject: Subject, data: Mapping[str, Any]) -> None:
    """§6.2 the window closed without dose 1: PEP is no longer given, but a dose 1 given inside the window (on day
    14, say) may still be recorded during the grace; then the course is cancelled."""
    facts: CourseFacts = subject.facts
    assert facts.exposure_on is not None
    latest = facts.exposure_on + timedelta(days=_latest_days(subject))
    ends = late_entry_ends(facts.exposure_on, subject.settings.pep_late_entry_grace, _latest_days(subject))
    facts.lapsed_at = pep_window_closes(facts.exposure_on, _latest_days(subject))
    subject.arm_timer(TimerSpec(
        LATE_ENTRY, ends, S6_2,
        task=f"PEP window closed after {latest}: record a dose 1 given by then, or decline (the offer ends "
             f"{local_date(ends)})"))


def _follow_exposure(subject: Subject, data: Mapping[str, Any]) -> None:
    """The contact was exposed again, or an exposure date corrected: the window runs from the last exposure."""
    facts: CourseFacts = subject.facts
    contact: Related | None = subject.context.get("contact")
    new: date | None = data.get("exposure_on")
    if contact is not None and not pep_indicated(contact.facts.risk):
        new = contact.facts.last_exposure_on  # offered on the risk of severe disease: from the last exposure
    if new is None or new == facts.exposure_on:
        return
    facts.exposure_on = new
    _arm_pep_window(subject)


def _plan_for(subject: Subject) -> tuple[int, str, str]:
    """§6.4 the dose plan the person's facts give now, with the doses before this course as the offer said."""
    doses, rule, why = dose_plan(_person(subject))
    facts: CourseFacts = subject.facts
    if facts.prior_doses:
        why += (f"; {facts.prior_doses} dose given before (on {facts.prior_last_dose_on or 'a date not recorded'}): "
                "this course gives the person's dose 2")
    return doses, rule, why


def _plan_change_is_safe(subject: Subject, data: Mapping[str, Any]) -> str | None:
    """Patient safety: a correction of the person's facts never shortens a course once a dose counts towards it;
    fewer doses than planned is a clinician's decision, not a recomputation."""
    facts: CourseFacts = subject.facts
    doses, _, why = _plan_for(subject)
    if doses >= facts.doses_planned:
        return None
    given = _own_doses(facts)
    if given or facts.prior_doses:
        when = (because("dose 1 was given on %(on)s", on=given[0]) if given
                else phrase("the person had a dose before this course"))
        return because("%(course)s is under way with a %(planned)s-dose plan and %(when)s; with the corrected facts "
                       "the plan would be %(doses)s dose (%(why)s), and mpoxflow does not shorten a course under way "
                       "by itself: record dose 2 or decline the course (`vaccine decline %(course)s`) as the "
                       "clinician decides, then correct the person's facts", course=subject.object_id,
                       planned=facts.doses_planned, when=when, doses=doses, why=why)
    return None


def _replan(subject: Subject, data: Mapping[str, Any]) -> None:
    """§6.4 the person's facts were corrected: the dose plan of the open course follows them."""
    facts: CourseFacts = subject.facts
    doses, rule, why = _plan_for(subject)
    before = {"doses_planned": facts.doses_planned, "plan_rule": facts.plan_rule, "plan_reason": facts.plan_reason}
    facts.doses_planned, facts.plan_rule, facts.plan_reason = doses, rule, why
    subject.audit_data["before"] = {k: v for k, v in before.items() if getattr(facts, k) != v}


def _dose2_falls_due(subject: Subject, data: Mapping[str, Any]) -> None:
    """Dose 2 may be given from today; the task stays open until it is (overdue after the configured days)."""


# ---- choosing between rows -----------------------------------------------------------------------------------


def _first_of_two(subject: Subject) -> bool:
    """A two-dose plan and no dose before: this is dose 1."""
    return bool(subject.facts.doses_planned == 2 and _doses_so_far(subject)[0] == 0)


def _one_dose_plan(subject: Subject) -> bool:
    return bool(subject.facts.doses_planned == 1)


def _persons_dose_2(subject: Subject) -> bool:
    """A two-dose plan whose dose 1 was given before, in another course or elsewhere."""
    return bool(subject.facts.doses_planned == 2 and _doses_so_far(subject)[0] >= 1)


def _ended_by_pep_window(subject: Subject) -> bool:
    return bool(subject.facts.ended_because and S6_2 in subject.facts.ended_because)


DOSE_DATE = Guard(S6, _dose_date)
PREP_DOSE = (Guard(S6_2_1, _no_prep_dose_when_pregnant), Guard(S6_2_2, _no_prep_dose_for_a_child))
ASSESSED = (Guard(S6_2_1, _assessed_if_pregnant), Guard(S6_2_2, _assessed_if_child))
COUNTED = Guard(S6_3, _no_more_than_two)
INTERVAL = Guard(S6_4, _after_previous_dose)
DOSE1_GUARDS = (DOSE_DATE, COUNTED, Guard(S6_2, _pep_within_window), Guard(S6_2, _pep_special_case),
                Guard(S6_2, _pep_consent), *PREP_DOSE, *ASSESSED)

COURSE = WorkflowDefinition(
    kind="course",
    version="SST-mpox-7.1",
    facts=CourseFacts,
    states=STATES,
    final=FINAL,
    timers=(
        Timer("dose2_due", S6_4, timedelta(days=DOSE_INTERVAL_DAYS), "the day of dose 1"),
        Timer("pep_window_closes", S6_2, timedelta(days=PEP_LATEST_DAYS), "the day of the exposure"),
        Timer(LATE_ENTRY, S6_2, after="the PEP window's close plus the deployment's pep_late_entry_grace"),
    ),
    transitions=[
        TransitionSpec(
            "offer", (NEW,), "offered", S6, "a vaccination course is offered, with its dose plan (§6.4)",
            guards=(Guard(S6_3, _never_had_mpox), Guard(S6_3, _no_other_course), Guard(S6_3, _doses_left_to_give),
                    Guard(S6_2_2, _prep_not_for_a_child), Guard(S6_2_1, _prep_not_when_pregnant),
                    Guard(S6_2, _pep_for_this_contact), Guard(S6_2, _pep_assessed), Guard(S6_1, _prep_target_group)),
            effect=_offer, references=("contact", "person"),
        ),
        TransitionSpec("dose", ("offered",), "dose1_given", S6_4, "dose 1 of 2 given", guards=DOSE1_GUARDS,
                       effect=_dose, when=_first_of_two, references=("person",)),
        TransitionSpec("dose", ("offered",), "completed", S6_4, "the one dose of a one-dose plan given",
                       guards=DOSE1_GUARDS, effect=_dose, when=_one_dose_plan, references=("person",)),
        TransitionSpec("dose", ("offered",), "completed", S6_4,
                       "the person's dose 2 given (dose 1 in another course or elsewhere), 28 days or more later",
                       guards=(*DOSE1_GUARDS, INTERVAL), effect=_dose, when=_persons_dose_2, references=("person",)),
        TransitionSpec("dose", ("dose1_given", "dose2_due"), "completed", S6_4, "dose 2 given, 28 days or more later",
                       guards=(DOSE_DATE, COUNTED, INTERVAL, *PREP_DOSE, *ASSESSED), effect=_dose,
                       references=("person",)),
        TransitionSpec("dose", ("completed",), None, S6_3, "no third dose", guards=(Guard(S6_3, _no_third_dose),)),
        TransitionSpec("dose", ("cancelled",), None, S6_2, "no dose after the PEP window closed",
                       guards=(Guard(S6_2, _course_ended),), when=_ended_by_pep_window),
        TransitionSpec("dose", ("cancelled",), None, S6_3, "no dose after mpox",
                       guards=(Guard(S6_3, _course_ended),)),
        TransitionSpec("dose", ("declined",), None, S6, "no dose on a declined course",
                       guards=(Guard(S6, _course_ended),)),
        TransitionSpec("dose2_due", ("dose1_given",), "dose2_due", S6_4, "28 days after dose 1: dose 2 is due",
                       effect=_dose2_falls_due, timed=True),
        TransitionSpec("decline", OPEN, "declined", S6, "the person declines the vaccination",
                       effect=_end("declined")),
        TransitionSpec("contact_exposed", ("offered",), None, S6_2,
                       "the contact's last exposure moved: the PEP window runs from it", effect=_follow_exposure,
                       references=("contact",), internal=True),
        TransitionSpec("pep_window_closes", ("offered",), None, S6_2,
                       "no dose 1 within 14 days of the exposure: PEP is no longer given; a dose 1 given inside the "
                       "window may still be recorded in the grace", effect=_lapse, timed=True),
        TransitionSpec(LATE_ENTRY, ("offered",), "cancelled", S6_2,
                       "the late-entry grace after the PEP window ended without dose 1: the offer is cancelled",
                       effect=_end(PEP_WINDOW_ENDED), timed=True),
        TransitionSpec("person_corrected", OPEN, None, S6_4,
                       "the person's facts were corrected: the dose plan is recomputed (never shortened once a dose "
                       "counts towards it)", guards=(Guard(S6_4, _plan_change_is_safe),), effect=_replan,
                       references=("person",), internal=True),
        TransitionSpec("mpox_confirmed", OPEN, "cancelled", S6_3,
                       "mpox confirmed for the person: no (further) dose",
                       effect=_end(MPOX_ENDED, pep_may_be_assessed_again=False), internal=True),
    ],
)


# ---- the operations staff take on a course (the CLI's commands, the API's endpoints, the pages' forms) ----------


def vaccine_offer_data(values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The trigger and data of ``vaccine offer``: PEP names the contact record, PrEP its criteria (and the date of
    a dated one, §6.1).

    Returns ``("offer", data)``; raises UsageError when the fields given belong to the other indication."""
    indication, contact = values.get("indication"), values.get("contact")
    criteria = list(values.get("criteria") or [])
    criterion_on = values.get("criterion_on")
    if indication == "pep" and criteria:
        raise UsageError(because("⟦criteria⟧ go with indication prep; PEP takes the contact (⟦contact⟧)"))
    if indication == "prep" and contact:
        raise UsageError(because("⟦contact⟧ goes with indication pep; PrEP takes criteria (⟦criteria⟧)"))
    if criterion_on is not None:
        dated = [c for c in criteria if c in PREP_LOOKBACK_DAYS]
        if indication != "prep" or not dated:
            raise UsageError(because("⟦criterion_on⟧ dates a PrEP criterion that looks back: %(criteria)s",
                                     criteria=Joined(PREP_LOOKBACK_DAYS, " or ")))
        if len(dated) > 1:
            raise UsageError(because("⟦criterion_on⟧ dates one criterion: give %(criteria)s, not both (one is "
                                     "enough, §6.1)", criteria=Joined(PREP_LOOKBACK_DAYS, " or ")))
    return "offer", {"indication": indication, "contact": contact, "criteria": criteria,
                     "assessed_by": values.get("assessed_by"), "assessment_note": values.get("assessment_note"),
                     "criterion_on": criterion_on}


def _summary(trigger: str) -> str:
    return next(s.summary for s in COURSE.transitions if s.trigger == trigger)


_COURSE_ID = "The course's id (course-N)."

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "vaccine offer", "course", "offer", _summary("offer"),
        f"Offer a vaccination course; its dose plan is decided now (§6.3, §6.4). PEP is offered after an assessment "
        f"({ref('assessed_by')}, §6.2); PrEP for a §6.1 target group, never for a child under 12 or a pregnant or "
        "breastfeeding person (§6.2.1-2).",
        fields=(
            Field("person", "id", "The person (person-N).", "Person", "Person", required=True, of="person"),
            Field("indication", "choice", "pep (a close contact, §6.2) | prep (§6.1)", "Indikation", "Indication",
                  required=True, choices=INDICATIONS),
            Field("contact", "id", "PEP: the person's contact record (contact-N).", "Kontaktforløb (PEP)",
                  "Contact record (PEP)", of="contact"),
            Field("criteria", "choices", "PrEP: " + ",".join(PREP_CRITERIA), "PrEP-kriterier", "PrEP criteria",
                  choices=PREP_CRITERIA, what="criterion"),
            Field("criterion_on", "date", "PrEP: the date of msm_two_partners_12w (within 12 weeks) or msm_sti_24w "
                  "(within 24 weeks), YYYY-MM-DD (§6.1).", "Dato for PrEP-kriteriet", "Date of the criterion"),
            Field("assessed_by", "text", "PEP: who assessed it, a doctor or STPS (required, §6.2); PrEP: the doctor "
                  "an individual_assessment or travel_clade_i rests on (§6.1).", "Vurderet af", "Assessed by"),
            Field("assessment_note", "note", "The assessor's reasons; PEP for a low-risk contact who is under 12, "
                  "pregnant or breastfeeding or immunocompromised needs them (§6.2).", "Vurderingens begrundelse",
                  "Assessment note"),
        ),
        rule=S6, creates=True, custom_prepare=vaccine_offer_data,
        tasks=(Task("pep_assessment_due", "Assess and offer PEP…"),),
        offered=(Offer("contact", CONTACT_OPEN, {"person": "person", "contact": "id"}, {"indication": "pep"}),
                 Offer("person", (), {"person": "id"})),
    ),
    Operation(
        "vaccine dose", "course", "dose",
        "record a dose: dose 1 (PEP needs consent, §6.2), or dose 2 at least 28 days later (§6.4)",
        "Record a dose: dose 1 (PEP needs the consent fields, and after day 4 a special reason, §6.2), or dose 2 at "
        "least 28 days after the person's previous dose (§6.4); never a third (§6.3).",
        fields=(
            Field("on", "date", "The date the dose was given, YYYY-MM-DD.", "Dato for dosis", "Given on",
                  required=True),
            Field("consent", "flag", "PEP (off-label): informed consent is recorded.", "Informeret samtykke (PEP)",
                  "Informed consent (PEP)", default=False),
            Field("indication_note", "note", "PEP: the indication.", "Indikation (PEP)", "Indication (PEP)"),
            Field("justification", "note", "PEP: the justification.", "Begrundelse for PEP", "Justification (PEP)"),
            Field("special_reason", "note", "PEP dose 1 on day 5-14 after the exposure: the special case (§6.2).",
                  "Særlig begrundelse (dag 5-14)", "Special reason (day 5-14)"),
            Field("assessed_by", "text", "The doctor whose individual assessment covers this dose (§6.2.1-2: under "
                  "12, pregnant or breastfeeding).", "Vurderet af", "Assessed by"),
        ),
        rule=S6_4, id_help=_COURSE_ID, tasks=(Task("dose2_due", "Record dose 2…"),),
    ),
    Operation(
        "vaccine decline", "course", "decline", _summary("decline"),
        "Record that the person declines the vaccination (§6).", rule=S6, id_help=_COURSE_ID,
    ),
)


#: How vaccination courses show (``workflows.profile``): under the contact they are PEP for, doses 2 on the calendar.
PROFILE = Profile(
    "course", "vaccine", "Vaccination courses (Imvanex): offered → dose1_given → dose2_due → completed (§6).",
    "courses", "Vaccinations",
    ("id", "state", "person", "indication", "doses_planned", "dose1_on", "dose2_on", "plan_rule"),
    belongs_to={"person": "person_id", "contact": "contact_id"},
    calendar=(CalendarCount("dose2_due", "doses_due", "doses 2 falling due (§6.4)", "dose 2"),),
)
