"""The close-contact workflow (``contact@SST-mpox-7.1``): exposed → monitored → released, or → symptomatic,
which opens a suspected case for the person (§5.5, §2); a negative test gives the contact back its monitoring
(§2.2.1, §5.5), and once the case is confirmed there is no way out of ``symptomatic``.

A contact is a person exposed to a **confirmed** case during the case's infectious period (§5.1; the dead are
handled as patients, §3.3.1, so a death does not end it for those who handle the body). Every exposure carries its
risk: a clinician's individual assessment given for it, else Table 1 of its kind (§6.2); the contact's risk is the
highest of them. Its timers: the end of the 21-day passive monitoring from the **last** exposure (§5.5), the PEP
windows from the last exposure of high or medium risk (§6.2, Table 1: best within 4 days, in special cases up to 14)
with the task to assess PEP by then, and the one-day deadline to inform the contact (§5.5; the treating doctor
when the case declined STPS tracing, §5.4). A new, corrected or re-assessed exposure recomputes all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from workflows.calendar import local_date, window_closes
from workflows.case import AFTER_CONFIRMATION, OPEN_STATES, SYMPTOMS, CaseFacts
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
from workflows.errors import Joined, because, phrase
from workflows.errors import field as ref
from workflows.operations import Field, Offer, Operation, Task
from workflows.profile import CalendarCount, Profile
from workflows.rules import cite

S1_1, S3_3_1, S5_1, S5_2, S5_3, S5_4, S5_5, S6_2 = (
    cite(s) for s in ("§1.1", "§3.3.1", "§5.1", "§5.2", "§5.3", "§5.4", "§5.5", "§6.2")
)

#: §5.1 exposure kinds and their §6.2 Table 1 risk. No kind is low: low comes only from a clinician's assessment.
#: ``face_to_face`` (cumulated over 3 hours within 2 metres) is medium: Table 1's low needs droplet exposure to be
#: unlikely, and the row mirrors the medium passenger row (over 8 hours beside the case).
EXPOSURE_RISK: dict[str, str] = {
    "household": "high",
    "sexual": "high",
    "mucosa_or_broken_skin": "high",
    "sharps": "high",
    "cleaning": "high",
    "intact_skin": "medium",
    "passenger_8h": "medium",
    "healthcare_no_ppe": "medium",
    "face_to_face": "medium",
}
#: §5.1 footnote: health staff who used the prescribed PPE are "ikke i almindelighed" close contacts: only after
#: an individual assessment (``risk`` with ``reason``), which then gives the exposure its risk.
NOT_A_CONTACT = "healthcare_with_ppe"
EXPOSURE_KINDS = (*EXPOSURE_RISK, NOT_A_CONTACT)
RISKS = ("high", "medium", "low")
PEP_WINDOWS = ("optimal", "extended", "closed", "not_indicated")
#: §3.3.1 "Afdøde håndteres efter samme forholdsregler som patienter": the kinds of exposure a dead body can still
#: give (direct contact, cleaning, sharps, staff handling it with or without PPE). Sexual, household, passenger
#: and face-to-face exposures end with the death.
BODY_HANDLING = ("mucosa_or_broken_skin", "sharps", "cleaning", "intact_skin", "healthcare_no_ppe", NOT_A_CONTACT)

STATES = ("exposed", "monitored", "released", "symptomatic")
#: No final state: a released contact exposed again to a case still infectious is monitored anew, and a
#: symptomatic one whose suspected case is discarded is monitored again (§2.2.1, §5.5). Once that case is
#: confirmed there is simply no way out of ``symptomatic``.
FINAL: tuple[str, ...] = ()
OPEN = ("exposed", "monitored")
#: A case can have contacts once confirmed (§5.1): these are its states from confirmation on (a deceased case
#: only if it was confirmed before it died).
CONFIRMED_CASE_STATES = ("confirmed", "isolated", "healed", "closed", "deceased")

MONITORING_DAYS = 21  # §5.5
PEP_OPTIMAL_DAYS = 4  # §6.2
PEP_LATEST_DAYS = 14  # §6.2
INFORM_WITHIN = timedelta(days=1)  # Decision: STPS informs a new contact within one day (§5.5)
INFORM_TASK = "STPS informs the contact (symptoms, 21 days' monitoring)"
#: §5.4: when the case declined STPS tracing, the treating doctor contacts the known contact anonymously and
#: arranges the PEP assessment with the infection-medicine department.
DOCTOR_INFORM_TASK = "the treating doctor contacts the contact anonymously and arranges PEP assessment"
#: The timers that hang on the PEP exposure: the two windows (automatic) and the assessment task (§6.2, §5.3).
PEP_TIMERS = ("pep_optimal_window_closes", "pep_window_closes", "pep_assessment_due")


@dataclass
class ContactFacts:
    """The facts a contact carries; stored as columns of the same names."""

    case_id: int
    exposure_kind: str
    risk: str
    exposed_on: date
    last_exposure_on: date
    pep_window: str
    #: Every exposure recorded, in the order recorded: ``{"on": "YYYY-MM-DD", "kind": KIND, "risk": LEVEL or None,
    #: "reason": TEXT or None}``; ``risk`` is a clinician's assessment given for that exposure (None: Table 1).
    #: Records written before assessments were per exposure have no ``risk`` key (see ``recorded_exposures``).
    exposures: list[dict[str, Any]] = field(default_factory=list)
    #: The contact's current risk comes from a clinician's assessment (Table 1 alone would give another).
    risk_assessed: bool = False
    anonymous_via_doctor: bool = False
    informed_at: Any = None
    symptoms_onset: date | None = None
    symptoms: list[str] = field(default_factory=list)
    became_case: str | None = None
    #: When a PEP course was offered for the contact (§5.3): the PEP assessment is done (§6.2).
    pep_offered_at: datetime | None = None


# ---- pure rules ---------------------------------------------------------------------------------------------


def risk_of(kind: str) -> str:
    """§6.2 Table 1: the risk level of an exposure kind."""
    return EXPOSURE_RISK[kind]


def highest(risks: Iterable[str]) -> str:
    """The highest of some risk levels."""
    return min(risks, key=RISKS.index)


def pep_indicated(risk: str) -> bool:
    """§6.2 Table 1: PEP may be considered for high and medium risk; low: not needed."""
    return risk in ("high", "medium")


def recorded_exposures(facts: ContactFacts) -> list[dict[str, Any]]:
    """Every exposure with its ``risk`` and ``reason`` keys. A record written before assessments were per exposure
    (no ``risk`` key) carries the contact's assessed risk on each of its exposures, as the rule then was."""
    legacy = facts.risk if facts.risk_assessed else None
    return [dict(e) if "risk" in e else {**e, "risk": legacy, "reason": None} for e in facts.exposures]


def exposure_risk(exposure: Mapping[str, Any]) -> str:
    """Table 1 with the clinician: the risk of one exposure is the assessment given for it, else its kind's."""
    assessed: str | None = exposure.get("risk")
    return assessed or risk_of(exposure["kind"])


def pep_exposure(facts: ContactFacts) -> date | None:
    """§6.2: the exposure the PEP windows run from: the last one whose risk (assessed, else Table 1) is high or
    medium. None: PEP not indicated."""
    days = [date.fromisoformat(e["on"]) for e in recorded_exposures(facts) if pep_indicated(exposure_risk(e))]
    return max(days, default=None)


def monitoring_ends(last_exposure_on: date, days: int = MONITORING_DAYS) -> datetime:
    """§5.5 passive monitoring for 21 days after the last exposure: 00:00 local on last exposure + 22 days
    (``days``: the period the running definition declares)."""
    return window_closes(last_exposure_on, days)


def pep_optimal_window_closes(exposed_on: date, days: int = PEP_OPTIMAL_DAYS) -> datetime:
    """§6.2 PEP best within 4 days of exposure: 00:00 local on exposure + 5 days."""
    return window_closes(exposed_on, days)


def pep_window_closes(exposed_on: date, days: int = PEP_LATEST_DAYS) -> datetime:
    """§6.2 PEP in special cases up to 14 days after exposure: 00:00 local on exposure + 15 days."""
    return window_closes(exposed_on, days)


def pep_window_at(exposed_on: date, now: datetime, optimal_days: int = PEP_OPTIMAL_DAYS,
                  latest_days: int = PEP_LATEST_DAYS) -> str:
    """§6.2 where the PEP window of an exposure stands at ``now``: optimal, extended or closed."""
    if now < pep_optimal_window_closes(exposed_on, optimal_days):
        return "optimal"
    if now < pep_window_closes(exposed_on, latest_days):
        return "extended"
    return "closed"


def _monitoring_ends(subject: Subject) -> datetime:
    """§5.5 the end of the contact's monitoring by the period its definition declares."""
    return monitoring_ends(subject.facts.last_exposure_on, subject.days("monitoring_ends", MONITORING_DAYS))


def _pep_days(subject: Subject) -> tuple[int, int]:
    """§6.2 the PEP windows' periods (best within, at the latest) its definition declares."""
    return (subject.days("pep_optimal_window_closes", PEP_OPTIMAL_DAYS),
            subject.days("pep_window_closes", PEP_LATEST_DAYS))


def infectious_period(case_state: str, case: CaseFacts, today: date, kind: str | None = None) -> tuple[date, date]:
    """§5.1 the case's infectious period for an exposure of ``kind``: from symptom onset (a case confirmed without
    symptoms: from its sample date) until healed, else until today. A death ends it, except for handling the body
    (§3.3.1: the dead are handled as patients)."""
    start = case.onset or case.pcr_on
    if start is None:
        raise ValueError("a case without symptom onset or sample date has no infectious period")
    if case.healed_on is not None:
        return start, case.healed_on
    if case.died_on is not None and kind not in BODY_HANDLING:
        return start, case.died_on
    return start, today


# ---- guards ---------------------------------------------------------------------------------------------------


def _case(subject: Subject) -> Related:
    related: Related = subject.context["case"]
    return related


def _own_pk(subject: Subject) -> int:
    return int(subject.object_id.rsplit("-", 1)[1])


def _kind_of(subject: Subject, data: Mapping[str, Any]) -> str:
    """The kind of the exposure a trigger is about: the new one's, or the corrected one's."""
    if data.get("kind"):
        return str(data["kind"])
    exposures = subject.facts.exposures
    return str(exposures[(len(exposures) if data.get("exposure") is None else data["exposure"]) - 1]["kind"])


def _source_case_confirmed(subject: Subject, data: Mapping[str, Any]) -> str | None:
    case = _case(subject)
    if case.state not in CONFIRMED_CASE_STATES:
        return because("%(case)s is %(state)s: close contacts are registered only for a confirmed case; confirm it "
                       "first with `case confirm %(case)s`", case=case.id, state=case.state)
    if case.facts.confirmed_at is None and case.facts.pcr_on is None:
        return because("%(case)s died as a suspected case, never confirmed by PCR: close contacts are registered "
                       "only for a confirmed case, so do not register this one; a person who falls ill is opened as "
                       "a suspected case of their own (`case open ... ⟦criteria⟧ epi_link`)", case=case.id)
    return None


def _not_the_case_itself(subject: Subject, data: Mapping[str, Any]) -> str | None:
    case = _case(subject)
    if case.person == subject.person:
        return because("%(person)s is %(case)s's own person: a case is not a close contact of itself",
                       person=subject.person, case=case.id)
    return None


def _kind_is_a_close_contact(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data["kind"] == NOT_A_CONTACT and not (data.get("risk") and data.get("reason")):
        return because("health or lab staff who wore the prescribed protective equipment are not, as a rule, close "
                       "contacts: register one only after an individual assessment of the exposure, given with "
                       "⟦risk⟧ ⟦reason⟧")
    return None


def _after_death_only_the_body(subject: Subject, data: Mapping[str, Any]) -> str | None:
    case = _case(subject)
    died, exposed, kind = case.facts.died_on, data["exposed"], _kind_of(subject, data)
    if died is None or case.facts.healed_on is not None or exposed <= died or kind in BODY_HANDLING:
        return None
    return because("%(case)s died on %(died)s: after death only handling the body exposes, as with a patient "
                   "(%(body)s); a %(kind)s exposure on %(exposed)s is not one: correct the date or the kind",
                   case=case.id, died=died, body=list(BODY_HANDLING), kind=kind, exposed=exposed)


def _within_infectious_period(subject: Subject, data: Mapping[str, Any]) -> str | None:
    case = _case(subject)
    today = local_date(subject.now)
    kind = _kind_of(subject, data)
    start, end = infectious_period(case.state, case.facts, today, kind)
    exposed: date = data["exposed"]
    if exposed > today:
        return because("exposure date %(exposed)s is after today (%(today)s): a date cannot be in the future",
                       exposed=exposed, today=today)
    if not start <= exposed <= end:
        still = case.facts.healed_on is None and (case.facts.died_on is None or kind in BODY_HANDLING)
        until = phrase("today") if still else str(end)
        return because("exposure date %(exposed)s is outside %(case)s's infectious period, %(start)s to %(until)s: "
                       "only exposures in that period make a close contact", exposed=exposed, case=case.id,
                       start=start, until=until)
    return None


def _consent_or_anonymous(subject: Subject, data: Mapping[str, Any]) -> str | None:
    case = _case(subject)
    if data.get("anonymous_via_doctor") or case.facts.tracing_consent is True:
        return None  # anonymous tracing: the §5.4 guard decides
    if case.facts.tracing_consent is False:
        return because("%(case)s's consent to contact tracing by STPS is declined: STPS does not trace its "
                       "contacts; the treating doctor may contact this one anonymously: register it with "
                       "⟦anonymous_via_doctor⟧ (§5.4)", case=case.id)
    return because("%(case)s's consent to contact tracing by STPS is not recorded: ask the case and record it with "
                   "`case consent %(case)s ⟦tracing⟧ yes` (if the case declines, `⟦tracing⟧ no`, the treating doctor "
                   "may trace anonymously with ⟦anonymous_via_doctor⟧, §5.4)", case=case.id)


def _anonymous_only_when_declined(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if not data.get("anonymous_via_doctor"):
        return None
    case = _case(subject)
    if case.facts.tracing_consent is True:
        return because("%(case)s consents to contact tracing by STPS, so STPS traces and informs this contact: "
                       "register it without ⟦anonymous_via_doctor⟧ (anonymous tracing by the treating doctor is for "
                       "a case that declined)", case=case.id)
    if case.facts.tracing_consent is None:
        return because("%(case)s's consent to contact tracing by STPS is not recorded: anonymous tracing by the "
                       "treating doctor is only for a case that declined it; ask the case and record the answer with "
                       "`case consent %(case)s ⟦tracing⟧ yes|no`", case=case.id)
    return None


def _clinician_risk_has_reason(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data.get("risk") and not data.get("reason"):
        return because("a risk level given with ⟦risk⟧ is a clinician's individual assessment of the exposure: give "
                       "its reason with ⟦reason⟧")
    return None


def _assessment_given(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if not data.get("risk") or not data.get("reason"):
        return because("a re-assessment is a clinician's individual assessment: give the risk level with ⟦risk⟧ "
                       "(%(risks)s) and its reason with ⟦reason⟧", risks=Joined(RISKS, "|"))
    return None


def _onset_after_exposure(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: ContactFacts = subject.facts
    onset: date = data["onset"]
    today = local_date(subject.now)
    if onset > today:
        return because("symptom onset %(onset)s is after today (%(today)s): give the date symptoms began",
                       onset=onset, today=today)
    if onset < facts.exposed_on:
        return because("symptom onset %(onset)s is before the first exposure (%(exposed)s): correct the date",
                       onset=onset, exposed=facts.exposed_on)
    if not data.get("symptoms"):
        return because("give the symptoms seen (⟦symptoms⟧), so the suspected case meets the case definition "
                       "(§1.1)")
    return None


def _other_symptom_has_note(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if "other" in (data.get("symptoms") or []) and not (data.get("symptom_note") or "").strip():
        return because("the symptom 'other' needs a note saying what it is: give it with ⟦symptom_note⟧")
    return None


def _exposure_number_exists(subject: Subject, data: Mapping[str, Any]) -> str | None:
    count = len(subject.facts.exposures)
    number = count if data.get("exposure") is None else data["exposure"]
    if not 1 <= number <= count:
        return because("this contact has exposures 1 to %(count)s: give one of them with ⟦exposure⟧", count=count)
    return None


# ---- effects ---------------------------------------------------------------------------------------------------


def _new_exposure(data: Mapping[str, Any]) -> dict[str, Any]:
    risk = data.get("risk") or None
    return {"on": data["exposed"].isoformat(), "kind": data["kind"], "risk": risk,
            "reason": (data.get("reason") or None) if risk else None}


def _recompute(facts: ContactFacts) -> None:
    """The contact's dates, kind and risk from its exposures: the risk is the highest over them (§6.2 Table 1,
    each exposure's own assessment first); ``risk_assessed`` when Table 1 alone would give another."""
    exposures = recorded_exposures(facts)
    facts.exposures = exposures
    days = [date.fromisoformat(e["on"]) for e in exposures]
    facts.exposed_on, facts.last_exposure_on = min(days), max(days)
    facts.risk = highest(exposure_risk(e) for e in exposures)
    table = [risk_of(e["kind"]) for e in exposures if e["kind"] in EXPOSURE_RISK]
    facts.risk_assessed = not table or facts.risk != highest(table)
    facts.exposure_kind = max(exposures, key=lambda e: e["on"])["kind"]


def _arm_inform(subject: Subject) -> None:
    """§5.5 STPS informs the contact within a day (the decision's deadline); §5.4 the treating doctor, anonymously,
    when the case declined STPS tracing."""
    if subject.facts.anonymous_via_doctor:
        task, rule = DOCTOR_INFORM_TASK, S5_4
    else:
        task, rule = INFORM_TASK, S5_5
    subject.arm_timer(TimerSpec("inform_due", subject.now + INFORM_WITHIN, rule, task=task))


def _arm_exposure_timers(subject: Subject, *, monitored: bool = True) -> None:
    """Every timer that hangs on the exposures, computed anew (re-arming replaces a pending one). The monitoring
    end is armed even when already past, so it fires at the next clock step; the PEP window is set to where the
    clock stands now, and only its timers still ahead are armed. The PEP assessment is a task (§5.3, §6.2) until
    a course is offered; the windows close by themselves, so ``pep_window`` tells the truth whatever was done.
    ``monitored`` False (a symptomatic contact): only the PEP windows, which keep closing on time."""
    facts: ContactFacts = subject.facts
    if monitored:
        subject.arm_timer(TimerSpec("monitoring_ends", _monitoring_ends(subject), S5_5))
    since = pep_exposure(facts)
    if since is None:
        facts.pep_window = "not_indicated"
        for name in PEP_TIMERS:
            subject.cancel_timer(name)  # no PEP to assess: the task is not needed (never "done")
        return
    optimal_days, latest_days = _pep_days(subject)
    facts.pep_window = pep_window_at(since, subject.now, optimal_days, latest_days)
    best_by, latest_by = since + timedelta(days=optimal_days), since + timedelta(days=latest_days)
    latest = pep_window_closes(since, latest_days)
    for name, due in (("pep_optimal_window_closes", pep_optimal_window_closes(since, optimal_days)),
                      ("pep_window_closes", latest)):
        if due > subject.now:
            subject.arm_timer(TimerSpec(name, due, S6_2))
        else:
            subject.cancel_timer(name)
    if not monitored:
        return
    if latest > subject.now and facts.pep_offered_at is None:
        subject.arm_timer(TimerSpec("pep_assessment_due", latest, S6_2,
                                    task=f"assess PEP by {latest_by} (best by {best_by})"))
    else:
        subject.cancel_timer("pep_assessment_due")


def _exposures_changed(subject: Subject, pep_before: date | None) -> None:
    """After the exposures changed: recompute the facts and the timers; an offered PEP course follows the PEP
    exposure when it moved (§6.2: the windows run from the last exposure of high or medium risk)."""
    facts: ContactFacts = subject.facts
    last_before = facts.last_exposure_on
    _recompute(facts)
    _arm_exposure_timers(subject)
    pep_after = pep_exposure(facts)
    # A course offered to a low-risk contact on the risk of severe disease runs from the last exposure (§6.2):
    # it follows that one when there is no PEP exposure.
    moved = (pep_after is not None and pep_after != pep_before) or (
        pep_after is None and facts.last_exposure_on != last_before)
    if moved:
        subject.cascade(Cascade("course", "contact_exposed", states=("offered",),
                                match={"contact_id": _own_pk(subject)},
                                data={"exposure_on": pep_after or facts.last_exposure_on}))


def _add(subject: Subject, data: Mapping[str, Any]) -> None:
    exposed: date = data["exposed"]
    subject.facts = ContactFacts(
        case_id=_case(subject).pk,
        exposure_kind=data["kind"],
        risk="",  # set from the exposure just below
        exposed_on=exposed,
        last_exposure_on=exposed,
        pep_window="not_indicated",
        exposures=[_new_exposure(data)],
        anonymous_via_doctor=bool(data.get("anonymous_via_doctor")),
    )
    _recompute(subject.facts)
    _arm_exposure_timers(subject)
    _arm_inform(subject)


def _expose(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: ContactFacts = subject.facts
    before = pep_exposure(facts)
    facts.exposures = [*recorded_exposures(facts), _new_exposure(data)]
    _exposures_changed(subject, before)


def _expose_again(subject: Subject, data: Mapping[str, Any]) -> None:
    """A released contact exposed again to a case still infectious: monitoring, information and the PEP assessment
    start anew."""
    subject.facts.informed_at = None
    subject.facts.pep_offered_at = None
    _expose(subject, data)
    _arm_inform(subject)


def _correct(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: ContactFacts = subject.facts
    before = pep_exposure(facts)
    index = (len(facts.exposures) if data.get("exposure") is None else data["exposure"]) - 1
    exposures = recorded_exposures(facts)
    exposures[index]["on"] = data["exposed"].isoformat()
    facts.exposures = exposures
    _exposures_changed(subject, before)


def _assess(subject: Subject, data: Mapping[str, Any]) -> None:
    """§6.2 Table 1: a clinician's (re-)assessment covers every exposure recorded so far; a later exposure brings
    its own risk."""
    facts: ContactFacts = subject.facts
    before = pep_exposure(facts)
    facts.exposures = [{**e, "risk": data["risk"], "reason": data["reason"]} for e in recorded_exposures(facts)]
    _exposures_changed(subject, before)


def _inform(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.informed_at = subject.now
    subject.satisfy_timer("inform_due")


def _cancel(subject: Subject, names: Iterable[str]) -> None:
    """Tasks and timers the contact no longer needs: cancelled, never recorded as done (a task already missed
    stays missed until someone resolves it)."""
    for name in names:
        subject.cancel_timer(name)


def _release(subject: Subject, data: Mapping[str, Any]) -> None:
    _cancel(subject, ("monitoring_ends", *PEP_TIMERS, "inform_due"))


def _symptoms(subject: Subject, data: Mapping[str, Any]) -> None:
    """The contact becomes a suspected case: monitoring, informing and the PEP assessment end (cancelled); the PEP
    windows keep closing on time, so that ``pep_window`` is still true if the suspicion is discarded."""
    facts: ContactFacts = subject.facts
    facts.symptoms_onset = data["onset"]
    facts.symptoms = list(data["symptoms"])
    _cancel(subject, ("monitoring_ends", "pep_assessment_due", "inform_due"))
    spawned: dict[str, Any] = {
        "onset": data["onset"], "symptoms": list(data["symptoms"]), "criteria": ["epi_link"],
        "source_case": _case(subject).id, "from_contact": _own_pk(subject),
    }
    if data.get("symptom_note"):
        spawned["symptom_note"] = data["symptom_note"]
    subject.spawn(kind="case", trigger="open", link="became_case", data=spawned)


def _monitoring_left(subject: Subject) -> bool:
    return _monitoring_ends(subject) > subject.now


def _informed_and_monitoring_left(subject: Subject) -> bool:
    return subject.facts.informed_at is not None and _monitoring_left(subject)


def _monitor_again(subject: Subject, data: Mapping[str, Any]) -> None:
    """§2.2.1 the negative test ends the suspicion; §5.5 passive monitoring resumes until 21 days after the last
    exposure, with the PEP windows as they now stand. A contact not informed yet is to be informed."""
    _arm_exposure_timers(subject)
    if subject.facts.informed_at is None:
        _arm_inform(subject)


def _released_after_discard(subject: Subject, data: Mapping[str, Any]) -> None:
    """§5.5 the 21 days after the last exposure are over by the time the suspicion is discarded: released."""
    facts: ContactFacts = subject.facts
    since = pep_exposure(facts)
    facts.pep_window = "not_indicated" if since is None else pep_window_at(since, subject.now, *_pep_days(subject))
    _cancel(subject, ("monitoring_ends", *PEP_TIMERS, "inform_due"))


def timers_from_facts(subject: Subject, data: Mapping[str, Any]) -> None:
    """The timers the running definition's rules compute from a contact's facts and the clock, for a contact that
    moves to it (``workflow migrate``: the effect of a later definition's ``migrated`` transition). Exposed or
    monitored: the monitoring end (§5.5) and the PEP windows and assessment (§6.2), by the new definition's
    periods; a monitoring end already past fires at the next clock step, never skipped. Symptomatic: the PEP
    windows only. Released: nothing runs. The information task keeps its deadline (it counts from the
    registration, not from a fact)."""
    if subject.state in OPEN:
        _arm_exposure_timers(subject)
    elif subject.state == "symptomatic":
        _arm_exposure_timers(subject, monitored=False)


def _pep_optimal_over(subject: Subject, data: Mapping[str, Any]) -> None:
    if subject.facts.pep_window == "optimal":
        subject.facts.pep_window = "extended"


def _pep_over(subject: Subject, data: Mapping[str, Any]) -> None:
    """§6.2 day 14 is over: the window is closed, whatever was offered or declined."""
    subject.facts.pep_window = "closed"


def _deadline_passed(subject: Subject, data: Mapping[str, Any]) -> None:
    """A task's deadline passed undone: nothing changes but the record that it was missed (the engine marks the
    timer missed; staff resolve it)."""


def _pep_offered(subject: Subject, data: Mapping[str, Any]) -> None:
    """A PEP course was offered (§5.3, §6.2): the PEP assessment is done."""
    subject.facts.pep_offered_at = subject.now
    subject.satisfy_timer("pep_assessment_due")


def _pep_course_ended(subject: Subject, data: Mapping[str, Any]) -> None:
    """The PEP course offered for this contact was declined or its window lapsed (§6.2): the assessment of the
    exposures so far stands, but a later exposure is assessed for PEP anew."""
    subject.facts.pep_offered_at = None


CLOSE_CONTACT_KIND = Guard(S5_1, _kind_is_a_close_contact)
AFTER_DEATH = Guard(S3_3_1, _after_death_only_the_body)
WITHIN_PERIOD = Guard(S5_1, _within_infectious_period)
RISK_HAS_REASON = Guard(S6_2, _clinician_risk_has_reason)
NEW_EXPOSURE = (CLOSE_CONTACT_KIND, RISK_HAS_REASON, AFTER_DEATH, WITHIN_PERIOD)
WINDOWS_RUN = (*OPEN, "symptomatic")
DISCARDED = "the suspected case was discarded (negative test, §2.2.1)"

CONTACT = WorkflowDefinition(
    kind="contact",
    version="SST-mpox-7.1",
    facts=ContactFacts,
    states=STATES,
    final=FINAL,
    timers=(
        Timer("inform_due", S5_5, INFORM_WITHIN, "the registration (or a new exposure after release)"),
        Timer("monitoring_ends", S5_5, timedelta(days=MONITORING_DAYS), "the day of the last exposure"),
        Timer("pep_optimal_window_closes", S6_2, timedelta(days=PEP_OPTIMAL_DAYS), "the day of the exposure"),
        Timer("pep_window_closes", S6_2, timedelta(days=PEP_LATEST_DAYS), "the day of the exposure"),
        Timer("pep_assessment_due", S6_2, timedelta(days=PEP_LATEST_DAYS), "the day of the exposure"),
    ),
    identity=("case_id",),
    identity_rule=S5_5,
    transitions=[
        TransitionSpec(
            "add", (NEW,), "exposed", S5_1, "register a close contact of a confirmed case",
            guards=(Guard(S5_1, _source_case_confirmed), Guard(S5_1, _not_the_case_itself), *NEW_EXPOSURE,
                    Guard(S5_2, _consent_or_anonymous), Guard(S5_4, _anonymous_only_when_declined)),
            effect=_add, references=("case",),
        ),
        TransitionSpec(
            "expose", OPEN, None, S5_5, "a new exposure: monitoring and PEP windows run from the last one",
            guards=NEW_EXPOSURE, effect=_expose, references=("case",),
        ),
        TransitionSpec(
            "expose", ("released",), "exposed", S5_5,
            "exposed again after release, to a case still infectious: monitored anew",
            guards=NEW_EXPOSURE, effect=_expose_again, references=("case",),
        ),
        TransitionSpec(
            "correct", OPEN, None, S5_5, "an exposure date corrected: every timer recomputed",
            guards=(Guard(S5_5, _exposure_number_exists), AFTER_DEATH, WITHIN_PERIOD), effect=_correct,
            references=("case",),
        ),
        TransitionSpec(
            "assess", OPEN, None, S6_2,
            "a clinician's (re-)assessment of the risk of the exposures so far (Table 1): windows recomputed",
            guards=(Guard(S6_2, _assessment_given),), effect=_assess,
        ),
        TransitionSpec("inform", ("exposed",), "monitored", S5_5,
                       "the contact has been informed (by STPS; by the treating doctor when anonymous, §5.4)",
                       effect=_inform),
        TransitionSpec("monitoring_ends", OPEN, "released", S5_5,
                       "21 days after the last exposure without symptoms: released", effect=_release, timed=True),
        TransitionSpec(
            "symptoms", OPEN, "symptomatic", S5_5, "symptoms: the contact becomes a suspected case (§2)",
            guards=(Guard(S5_5, _onset_after_exposure), Guard(S1_1, _other_symptom_has_note)), effect=_symptoms,
            references=("case",),
        ),
        TransitionSpec("case_discarded", ("symptomatic",), "monitored", S5_5,
                       f"{DISCARDED}: monitored again until 21 days after the last exposure", effect=_monitor_again,
                       when=_informed_and_monitoring_left, internal=True),
        TransitionSpec("case_discarded", ("symptomatic",), "exposed", S5_5,
                       f"{DISCARDED}, the contact not informed yet: to be informed, monitored until 21 days after "
                       "the last exposure", effect=_monitor_again, when=_monitoring_left, internal=True),
        TransitionSpec("case_discarded", ("symptomatic",), "released", S5_5,
                       f"{DISCARDED} after the 21 days from the last exposure: released",
                       effect=_released_after_discard, internal=True),
        TransitionSpec("pep_optimal_window_closes", WINDOWS_RUN, None, S6_2,
                       "4 days after exposure: PEP now only in special cases", effect=_pep_optimal_over, timed=True),
        TransitionSpec("pep_window_closes", WINDOWS_RUN, None, S6_2,
                       "14 days after exposure: PEP no longer offered", effect=_pep_over, timed=True),
        TransitionSpec("pep_assessment_due", OPEN, None, S6_2,
                       "day 14 after the exposure passed without a PEP assessment: missed", effect=_deadline_passed,
                       timed=True),
        TransitionSpec("pep_offered", OPEN, None, S5_3, "PEP offered after assessment: the assessment is done",
                       effect=_pep_offered, internal=True),
        TransitionSpec("pep_course_ended", STATES, None, S6_2,
                       "the PEP course offered was declined or lapsed: a later exposure is assessed anew",
                       effect=_pep_course_ended, internal=True),
        TransitionSpec("inform_due", OPEN, None, S5_5, "a day passed without informing the contact: missed",
                       effect=_deadline_passed, timed=True),
    ],
)


# ---- the operations staff take on a contact (the CLI's commands, the API's endpoints, the pages' forms) ---------


def _summary(trigger: str) -> str:
    return next(s.summary for s in CONTACT.transitions if s.trigger == trigger)


_CONTACT_ID = "The contact's id (contact-N)."
_KIND = Field("kind", "choice", "Exposure kind (§5.1): " + "|".join(EXPOSURE_KINDS), "Eksponeringstype",
              "Exposure kind", required=True, choices=EXPOSURE_KINDS, what="exposure kind")
_RISK = Field("risk", "choice", "A clinician's individual assessment of this exposure instead of Table 1 "
              f"(high|medium|low); needs {ref('reason')}. Required for healthcare_with_ppe (§5.1).",
              "Risiko (klinisk vurdering)", "Risk (clinician's assessment)", choices=RISKS)
#: A contact is added to a case confirmed and not yet closed (§5.1: a confirmed case's contacts are traced).
CASE_STATES_TAKING_CONTACTS = tuple(s for s in AFTER_CONFIRMATION if s in OPEN_STATES)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "contact add", "contact", "add", _summary("add"),
        "Register a close contact of a confirmed case (§5.1), with the Table 1 risk of the exposure (§6.2).",
        fields=(
            Field("case", "id", "The confirmed case (case-N).", "Tilfælde", "Case", required=True, of="case"),
            Field("person", "id", "The contact person (person-N).", "Kontaktperson", "Contact person",
                  required=True, of="person"),
            Field("exposed", "date", "Date of exposure, in the case's infectious period.", "Dato for eksponering",
                  "Exposed on", required=True),
            _KIND, _RISK,
            Field("anonymous_via_doctor", "flag", "Only when the case declined STPS tracing (`case consent ID "
                  f"{ref('tracing')} no`): the treating doctor contacts the contact anonymously (§5.4).",
                  "Anonymt via behandlende læge", "Anonymously via the treating doctor", default=False),
        ),
        rule=S5_1, creates=True, reason_in_data=True,
        offered=(Offer("case", CASE_STATES_TAKING_CONTACTS, {"case": "id"}),),
    ),
    Operation(
        "contact expose", "contact", "expose", _summary("expose"),
        f"Record a new exposure, with its Table 1 risk or a clinician's ({ref('risk')}, {ref('reason')}): the "
        "contact's risk is the highest over its exposures; monitoring and PEP windows are recomputed from the last "
        "exposure (§5.5, §6.2).",
        fields=(Field("exposed", "date", "Date of the new exposure.", "Dato for ny eksponering", "Exposed on",
                      required=True), _KIND, _RISK),
        rule=S5_5, id_help=_CONTACT_ID, reason_in_data=True,
    ),
    Operation(
        "contact assess", "contact", "assess", _summary("assess"),
        f"A clinician's (re-)assessment of the risk of the exposures recorded so far, with its {ref('reason')} "
        "(§6.2 Table 1): risk, PEP window and timers recomputed; a later exposure brings its own risk.",
        fields=(Field("risk", "choice", "The clinician's risk level: high|medium|low.", "Risiko", "Risk",
                      required=True, choices=RISKS),),
        rule=S6_2, id_help=_CONTACT_ID, reason_in_data=True, reason_required=True,
        reason_help="The clinician's reasoning for the risk level (required): goes into the audit entry.",
    ),
    Operation(
        "contact correct", "contact", "correct", _summary("correct"),
        "Correct an exposure date: every timer of the contact is recomputed (§5.5).",
        fields=(Field("exposed", "date", "The corrected exposure date.", "Korrigeret eksponeringsdato",
                      "Corrected exposure date", required=True),
                Field("exposure", "count", "Which exposure (1 = first recorded; default the last recorded).",
                      "Hvilken eksponering (nr.)", "Which exposure", bounds=(1, None))),
        rule=S5_5, id_help=_CONTACT_ID,
    ),
    Operation(
        "contact inform", "contact", "inform", _summary("inform"),
        "The contact has been informed (symptoms, 21 days' passive monitoring, §5.5), by STPS or, when tracing is "
        "anonymous, by the treating doctor (§5.4): exposed → monitored.",
        rule=S5_5, id_help=_CONTACT_ID, tasks=(Task("inform_due", "Contact informed", {}),),
    ),
    Operation(
        "contact symptoms", "contact", "symptoms", _summary("symptoms"),
        "Symptoms: the contact becomes symptomatic and a suspected case is opened for the person (§5.5, §2); if a "
        "negative test discards that case, the contact is monitored again (§2.2.1).",
        fields=(Field("onset", "date", "Symptom onset, YYYY-MM-DD.", "Symptomdebut", "Symptom onset",
                      required=True),
                Field("symptoms", "choices", "Comma-separated: " + ",".join(SYMPTOMS), "Symptomer", "Symptoms",
                      required=True, choices=SYMPTOMS, bounds=(1, None), what="symptom"),
                Field("symptom_note", "note", "What the symptom 'other' is (needed with it, §1.1).",
                      "Beskrivelse af andet symptom", "Other symptom")),
        rule=S5_5, id_help=_CONTACT_ID,
    ),
)


#: How contacts show (``workflows.profile``): under their case, and their last monitoring day on the calendar.
PROFILE = Profile(
    "contact", "contact", "Close contacts: exposed → monitored → released, or → symptomatic (§5).", "contacts",
    "Contacts", ("id", "state", "person", "case", "exposure_kind", "risk", "last_exposure_on", "pep_window"),
    belongs_to={"person": "person_id", "case": "case_id"},
    calendar=(CalendarCount("monitoring_ends", "monitoring_ends", "last days of contacts' monitoring (§5.5)",
                            "monitoring ends", day_before=True),),
)
