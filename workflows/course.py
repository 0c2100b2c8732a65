"""The vaccination course (``course@SST-mpox-7.1``): offered → dose1_given → dose2_due → completed, with declined
and cancelled. Imvanex (MVA-BN), §6: the dose plan is decided at the offer (§6.3, §6.4), PEP only for a close
contact of high or medium risk inside the window (§6.2), PrEP only for a §6.1 target group; dose 2 at least 28
days after dose 1 (§6.4); never a third dose, and no dose 2 after mpox (§6.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from workflows.calendar import local_date, local_midnight
from workflows.contact import ContactFacts, pep_exposure, pep_indicated, pep_window_at, pep_window_closes
from workflows.definition import NEW, Cascade, Guard, Related, Subject, TimerSpec, TransitionSpec, WorkflowDefinition
from workflows.person import PersonFacts, age_on
from workflows.rules import cite

S6, S6_1, S6_2, S6_2_1, S6_2_2, S6_3, S6_4 = (
    cite(s) for s in ("§6", "§6.1", "§6.2", "§6.2.1", "§6.2.2", "§6.3", "§6.4")
)

INDICATIONS = ("pep", "prep")
#: §6.1 PrEP target groups; the two that need a named assessing doctor.
PREP_CRITERIA = ("msm_two_partners_12w", "msm_sti_24w", "individual_assessment", "travel_clade_i")
PREP_NEEDS_ASSESSOR = {
    "individual_assessment": "an individual medical assessment (give the doctor with --assessed-by)",
    "travel_clade_i": "an assessment by an infection-medicine doctor (give the doctor with --assessed-by)",
}
STATES = ("offered", "dose1_given", "dose2_due", "completed", "declined", "cancelled")
FINAL = ("completed", "declined", "cancelled")
OPEN = ("offered", "dose1_given", "dose2_due")
#: §6.4 at least 28 days between the doses.
DOSE_INTERVAL_DAYS = 28
#: §6.4 people born in 1970 or earlier count as smallpox-vaccinated.
SMALLPOX_VACCINATED_BORN_BY = 1970
#: §6.2.2 under 12: off-label, an individual medical assessment.
CHILD_UNDER = 12


@dataclass
class CourseFacts:
    """The facts a course carries; stored as columns of the same names."""

    indication: str
    doses_planned: int
    plan_rule: str
    plan_reason: str
    contact_id: int | None = None
    criteria: list[str] = field(default_factory=list)
    assessed_by: str | None = None
    #: PEP: the exposure the window runs from (§6.2).
    exposure_on: date | None = None
    dose1_on: date | None = None
    dose2_on: date | None = None
    #: PEP is off-label: informed consent, indication and justification recorded with dose 1 (§6.2).
    consent: dict[str, Any] | None = None
    #: Per dose, the doctor whose individual assessment covered a child under 12 or a pregnancy (§6.2.1-2).
    dose_assessments: list[dict[str, Any]] = field(default_factory=list)
    ended_because: str | None = None


# ---- pure rules ---------------------------------------------------------------------------------------------


def dose_plan(person: PersonFacts) -> tuple[int, str, str]:
    """§6.4: how many doses, the section that decides, and why. (A previous mpox infection is refused before,
    §6.3.) Immunocompromised people get 2 doses even if smallpox-vaccinated; smallpox-vaccinated people
    (explicitly, or born in 1970 or earlier) get 1; everyone else 2 at least 28 days apart."""
    born_early = person.born is not None and person.born.year <= SMALLPOX_VACCINATED_BORN_BY
    if person.immunocompromised:
        return 2, S6_4, "immunocompromised: 2 doses at least 28 days apart, even if smallpox-vaccinated"
    if person.smallpox_vaccinated or born_early:
        why = "smallpox-vaccinated" if person.smallpox_vaccinated else "born in 1970 or earlier: smallpox-vaccinated"
        return 1, S6_4, f"{why}: one dose is enough"
    return 2, S6_4, "2 doses at least 28 days apart"


def dose2_due(dose1_on: date) -> Any:
    """§6.4 dose 2 falls due at 00:00 local on dose 1 + 28 days."""
    return local_midnight(dose1_on + timedelta(days=DOSE_INTERVAL_DAYS))


def dose2_overdue_at(dose1_on: date, overdue_after: timedelta) -> Any:
    """When a due dose 2 turns overdue in the worklist: 00:00 local, ``overdue_after`` calendar days after the
    day dose 2 falls due (a deployment's choice: §6.4 sets no upper limit)."""
    return local_midnight(dose1_on + timedelta(days=DOSE_INTERVAL_DAYS + overdue_after.days))


# ---- guards ---------------------------------------------------------------------------------------------------


def _person(subject: Subject) -> PersonFacts:
    facts: PersonFacts = subject.context["person"].facts
    return facts


def _never_had_mpox(subject: Subject, data: Mapping[str, Any]) -> str | None:
    person = _person(subject)
    if person.previous_mpox or person.confirmed_mpox:
        how = "has a confirmed mpox case" if person.confirmed_mpox else "has had mpox"
        return f"{subject.person} {how} and is not vaccinated"
    return None


def _no_other_course(subject: Subject, data: Mapping[str, Any]) -> str | None:
    states = _person(subject).courses
    if any(s in OPEN for s in states):
        return f"{subject.person} has a course under way: record its doses on it"
    if "completed" in states:
        return f"{subject.person} has completed a course: no more than 2 doses, no boosters"
    return None


def _pep_for_this_contact(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data["indication"] != "pep":
        return None
    contact: Related | None = subject.context.get("contact")
    if contact is None:
        return "PEP is for a close contact: give the contact with --contact"
    facts: ContactFacts = contact.facts
    if contact.person != subject.person:
        return f"{contact.id} is about {contact.person}, not {subject.person}"
    if contact.state == "symptomatic":
        return f"{contact.id} has symptoms and is a suspected case: PEP is for contacts without symptoms"
    if not pep_indicated(facts.risk):
        return f"{contact.id}'s risk is {facts.risk}: PEP is not needed (Table 1)"
    since = pep_exposure(facts)
    if since is None or pep_window_at(since, subject.now) == "closed":
        return (f"{contact.id}'s PEP window closed with day 14 after the exposure"
                f"{f' of {since}' if since else ''}: PEP is no longer offered")
    return None


def _prep_target_group(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data["indication"] != "prep":
        return None
    criteria = list(data.get("criteria") or [])
    if not criteria:
        return "PrEP is for the §6.1 target groups: give one with --criteria (" + ", ".join(PREP_CRITERIA) + ")"
    needing = [c for c in criteria if c in PREP_NEEDS_ASSESSOR]
    if needing and len(needing) == len(criteria) and not data.get("assessed_by"):
        return " and ".join(f"{c} needs {PREP_NEEDS_ASSESSOR[c]}" for c in needing)
    return None


def _dose_date(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CourseFacts = subject.facts
    on: date = data["on"]
    today = local_date(subject.now)
    if on > today:
        return f"the dose date {on} is after today ({today}): record a dose once given"
    if facts.exposure_on is not None and on < facts.exposure_on:
        return f"the dose date {on} is before the exposure ({facts.exposure_on}) it is to protect against"
    return None


def _pep_within_window(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CourseFacts = subject.facts
    if facts.indication != "pep" or facts.exposure_on is None:
        return None
    latest = facts.exposure_on + timedelta(days=14)
    if data["on"] > latest:
        return (f"dose 1 on {data['on']} is after day 14 from the exposure on {facts.exposure_on} (last day "
                f"{latest}): PEP is no longer given")
    return None


def _pep_consent(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if subject.facts.indication != "pep":
        return None
    missing = [name for key, name in (("consent", "--consent"), ("indication_note", "--indication-note"),
                                      ("justification", "--justification")) if not data.get(key)]
    if missing:
        return ("PEP is off-label: informed consent, indication and justification must be recorded with dose 1; "
                "missing " + ", ".join(missing))
    return None


def _assessed_if_pregnant(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if _person(subject).pregnant and not data.get("assessed_by"):
        return ("pregnant or breastfeeding: off-label, needs an individual medical assessment; "
                "give the doctor with --assessed-by")
    return None


def _assessed_if_child(subject: Subject, data: Mapping[str, Any]) -> str | None:
    born, on = _person(subject).born, data["on"]
    if born is not None and age_on(born, on) < CHILD_UNDER and not data.get("assessed_by"):
        return (f"a child of {age_on(born, on)} on {on}: under 12 is off-label and needs an individual medical "
                "assessment; give the doctor with --assessed-by")
    return None


def _course_ended(subject: Subject, data: Mapping[str, Any]) -> str | None:
    return f"{subject.object_id} is {subject.state} ({subject.facts.ended_because}): no further dose"


def _dose2_interval(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CourseFacts = subject.facts
    assert facts.dose1_on is not None
    earliest = facts.dose1_on + timedelta(days=DOSE_INTERVAL_DAYS)
    if data["on"] < earliest:
        return f"dose 2 must be at least 28 days after dose 1 ({facts.dose1_on}): not before {earliest}"
    return None


def _no_third_dose(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CourseFacts = subject.facts
    return (f"the course is completed with its {facts.doses_planned} dose{'s' if facts.doses_planned > 1 else ''}: "
            "no more than 2 doses, no boosters")


# ---- effects ---------------------------------------------------------------------------------------------------


def _offer(subject: Subject, data: Mapping[str, Any]) -> None:
    doses, rule, why = dose_plan(_person(subject))
    facts = CourseFacts(indication=data["indication"], doses_planned=doses, plan_rule=rule, plan_reason=why,
                        criteria=list(data.get("criteria") or []), assessed_by=data.get("assessed_by"))
    subject.facts = facts
    contact = subject.context.get("contact")
    if facts.indication == "pep" and contact is not None:
        facts.contact_id = contact.pk
        facts.exposure_on = pep_exposure(contact.facts)
        assert facts.exposure_on is not None
        subject.arm_timer(TimerSpec("pep_window_closes", pep_window_closes(facts.exposure_on), S6_2))
        subject.cascade(Cascade("contact", "pep_offered", pk=contact.pk))


def _dose(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: CourseFacts = subject.facts
    if data.get("assessed_by"):
        facts.dose_assessments = [*facts.dose_assessments, {"on": data["on"].isoformat(),
                                                            "assessed_by": data["assessed_by"]}]
    if facts.dose1_on is None:
        facts.dose1_on = data["on"]
        if facts.indication == "pep":
            facts.consent = {"informed_consent": True, "indication": data.get("indication_note"),
                             "justification": data.get("justification")}
        subject.cancel_timer("pep_window_closes")
        if facts.doses_planned == 2:
            due = dose2_due(facts.dose1_on)
            from_day = facts.dose1_on + timedelta(days=DOSE_INTERVAL_DAYS)
            subject.arm_timer(TimerSpec(
                "dose2_due", due, S6_4, task=f"give dose 2 (from {from_day})",
                overdue_at=dose2_overdue_at(facts.dose1_on, subject.settings.dose2_overdue_after),
            ))
    else:
        facts.dose2_on = data["on"]
        subject.cancel_timer("dose2_due")
        subject.satisfy_timer("dose2_due")


def _end(because: str) -> Any:
    def effect(subject: Subject, data: Mapping[str, Any]) -> None:
        subject.facts.ended_because = because
        for name in ("pep_window_closes", "dose2_due"):
            subject.cancel_timer(name)
            subject.satisfy_timer(name)

    return effect


def _dose2_falls_due(subject: Subject, data: Mapping[str, Any]) -> None:
    """Dose 2 may be given from today; the task stays open until it is (overdue after the configured days)."""


def _plan_has_doses(n: int) -> Any:
    def when(subject: Subject) -> bool:
        return bool(subject.facts.doses_planned == n)

    return when


DOSE_DATE = Guard(S6, _dose_date)
ASSESSED = (Guard(S6_2_1, _assessed_if_pregnant), Guard(S6_2_2, _assessed_if_child))
DOSE1_GUARDS = (DOSE_DATE, Guard(S6_2, _pep_within_window), Guard(S6_2, _pep_consent), *ASSESSED)

COURSE = WorkflowDefinition(
    kind="course",
    version="SST-mpox-7.1",
    facts=CourseFacts,
    states=STATES,
    final=FINAL,
    transitions=[
        TransitionSpec(
            "offer", (NEW,), "offered", S6, "a vaccination course is offered, with its dose plan (§6.4)",
            guards=(Guard(S6_3, _never_had_mpox), Guard(S6_3, _no_other_course), Guard(S6_2, _pep_for_this_contact),
                    Guard(S6_1, _prep_target_group)),
            effect=_offer, references=("contact", "person"),
        ),
        TransitionSpec("dose", ("offered",), "dose1_given", S6_4, "dose 1 of 2 given", guards=DOSE1_GUARDS,
                       effect=_dose, when=_plan_has_doses(2), references=("person",)),
        TransitionSpec("dose", ("offered",), "completed", S6_4, "the one dose of a one-dose plan given",
                       guards=DOSE1_GUARDS, effect=_dose, when=_plan_has_doses(1), references=("person",)),
        TransitionSpec("dose", ("dose1_given", "dose2_due"), "completed", S6_4, "dose 2 given, 28 days or more later",
                       guards=(DOSE_DATE, Guard(S6_4, _dose2_interval), *ASSESSED), effect=_dose,
                       references=("person",)),
        TransitionSpec("dose", ("completed",), None, S6_3, "no third dose", guards=(Guard(S6_3, _no_third_dose),)),
        TransitionSpec("dose", ("cancelled", "declined"), None, S6_3, "no dose on an ended course",
                       guards=(Guard(S6_3, _course_ended),)),
        TransitionSpec("dose2_due", ("dose1_given",), "dose2_due", S6_4, "28 days after dose 1: dose 2 is due",
                       effect=_dose2_falls_due, timed=True),
        TransitionSpec("decline", OPEN, "declined", S6, "the person declines the vaccination",
                       effect=_end("declined")),
        TransitionSpec("pep_window_closes", ("offered",), "cancelled", S6_2,
                       "no dose 1 within 14 days of the exposure: PEP is no longer given",
                       effect=_end("PEP window closed before dose 1 (SST-mpox-7.1 §6.2)"), timed=True),
        TransitionSpec("mpox_confirmed", OPEN, "cancelled", S6_3,
                       "mpox confirmed for the person: no (further) dose",
                       effect=_end("mpox confirmed for the person (SST-mpox-7.1 §6.3)")),
    ],
)
