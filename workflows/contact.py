"""The close-contact workflow (``contact@SST-mpox-7.1``): exposed → monitored → released, or → symptomatic,
which opens a suspected case for the person (§5.5, §2).

A contact is a person exposed to a **confirmed** case during the case's infectious period (§5.1). Its timers:
the end of the 21-day passive monitoring from the **last** exposure (§5.5), the PEP windows for high and medium
risk (§6.2, Table 1: best within 4 days, in special cases up to 14), and the one-day deadline for STPS to inform
the contact (§5.5). A new or corrected exposure recomputes all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from workflows.calendar import local_date, window_closes
from workflows.case import CaseFacts
from workflows.definition import NEW, Guard, Related, Subject, TimerSpec, TransitionSpec, WorkflowDefinition
from workflows.rules import cite

S5_1, S5_2, S5_3, S5_5, S6_2 = (cite(s) for s in ("§5.1", "§5.2", "§5.3", "§5.5", "§6.2"))

#: §5.1 exposure kinds and their §6.2 Table 1 risk; ``healthcare_with_ppe`` is not a close contact.
EXPOSURE_RISK: dict[str, str] = {
    "household": "high",
    "sexual": "high",
    "mucosa_or_broken_skin": "high",
    "sharps": "high",
    "cleaning": "high",
    "intact_skin": "medium",
    "passenger_8h": "medium",
    "healthcare_no_ppe": "medium",
    "face_to_face": "low",
}
NOT_A_CONTACT = "healthcare_with_ppe"
EXPOSURE_KINDS = (*EXPOSURE_RISK, NOT_A_CONTACT)
RISKS = ("high", "medium", "low")
PEP_WINDOWS = ("optimal", "extended", "closed", "not_indicated")

STATES = ("exposed", "monitored", "released", "symptomatic")
#: Released is not final: a contact exposed again to a case that is still infectious is monitored anew.
FINAL = ("symptomatic",)
OPEN = ("exposed", "monitored")
#: A case can have contacts once confirmed (§5.1): these are its states from confirmation on.
CONFIRMED_CASE_STATES = ("confirmed", "isolated", "healed", "closed", "deceased")

MONITORING_DAYS = 21  # §5.5
PEP_OPTIMAL_DAYS = 4  # §6.2
PEP_LATEST_DAYS = 14  # §6.2
INFORM_WITHIN = timedelta(days=1)  # Decision: STPS informs a new contact within one day (§5.5)
INFORM_TASK = "STPS informs the contact (symptoms, 21 days' monitoring)"


@dataclass
class ContactFacts:
    """The facts a contact carries; stored as columns of the same names."""

    case_id: int
    exposure_kind: str
    risk: str
    exposed_on: date
    last_exposure_on: date
    pep_window: str
    #: Every exposure recorded: ``{"on": "YYYY-MM-DD", "kind": KIND}``, in the order recorded.
    exposures: list[dict[str, str]] = field(default_factory=list)
    #: A clinician's assessment that differs from Table 1 (``--risk`` with its reason).
    risk_assessed: bool = False
    anonymous_via_doctor: bool = False
    informed_at: Any = None
    symptoms_onset: date | None = None
    symptoms: list[str] = field(default_factory=list)
    became_case: str | None = None


# ---- pure rules ---------------------------------------------------------------------------------------------


def risk_of(kind: str) -> str:
    """§6.2 Table 1: the risk level of an exposure kind."""
    return EXPOSURE_RISK[kind]


def pep_indicated(risk: str) -> bool:
    """§6.2 Table 1: PEP may be considered for high and medium risk; low: not needed."""
    return risk in ("high", "medium")


def monitoring_ends(last_exposure_on: date) -> Any:
    """§5.5 passive monitoring for 21 days after the last exposure: 00:00 local on last exposure + 22 days."""
    return window_closes(last_exposure_on, MONITORING_DAYS)


def pep_optimal_window_closes(exposed_on: date) -> Any:
    """§6.2 PEP best within 4 days of exposure: 00:00 local on exposure + 5 days."""
    return window_closes(exposed_on, PEP_OPTIMAL_DAYS)


def pep_window_closes(exposed_on: date) -> Any:
    """§6.2 PEP in special cases up to 14 days after exposure: 00:00 local on exposure + 15 days."""
    return window_closes(exposed_on, PEP_LATEST_DAYS)


def pep_exposure(facts: ContactFacts) -> date | None:
    """§6.2: the exposure the PEP windows run from: the last one of high or medium risk (Table 1); with a
    clinician's own risk level, the last exposure if that level indicates PEP. None: PEP not indicated."""
    if facts.risk_assessed:
        return facts.last_exposure_on if pep_indicated(facts.risk) else None
    days = [date.fromisoformat(e["on"]) for e in facts.exposures if pep_indicated(risk_of(e["kind"]))]
    return max(days) if days else None


def pep_window_at(exposed_on: date, now: datetime) -> str:
    """§6.2 where the PEP window of an exposure stands at ``now``: optimal, extended or closed."""
    if now < pep_optimal_window_closes(exposed_on):
        return "optimal"
    if now < pep_window_closes(exposed_on):
        return "extended"
    return "closed"


def infectious_period(case_state: str, case: CaseFacts, today: date) -> tuple[date, date]:
    """§5.1 the case's infectious period: from symptom onset until healed (or died), else until today."""
    end = case.healed_on or case.died_on or today
    return case.onset, end


# ---- guards ---------------------------------------------------------------------------------------------------


def _case(subject: Subject) -> Related:
    related: Related = subject.context["case"]
    return related


def _source_case_confirmed(subject: Subject, data: Mapping[str, Any]) -> str | None:
    case = _case(subject)
    if case.state not in CONFIRMED_CASE_STATES:
        return (f"{case.id} is {case.state}: close contacts are registered only for a confirmed case; "
                f"confirm it first with `case confirm {case.id}`")
    return None


def _not_the_case_itself(subject: Subject, data: Mapping[str, Any]) -> str | None:
    case = _case(subject)
    if case.person == subject.person:
        return f"{subject.person} is {case.id}'s own person: a case is not a close contact of itself"
    return None


def _kind_is_a_close_contact(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data["kind"] == NOT_A_CONTACT:
        return ("health or lab staff who wore the prescribed protective equipment are not, as a rule, close "
                "contacts: do not register them")
    return None


def _within_infectious_period(subject: Subject, data: Mapping[str, Any]) -> str | None:
    case = _case(subject)
    today = local_date(subject.now)
    start, end = infectious_period(case.state, case.facts, today)
    exposed: date = data["exposed"]
    if exposed > today:
        return f"exposure date {exposed} is after today ({today}): a date cannot be in the future"
    if not start <= exposed <= end:
        until = "today" if end == today and case.facts.healed_on is None else str(end)
        return (f"exposure date {exposed} is outside {case.id}'s infectious period, {start} to {until}: "
                "only exposures in that period make a close contact")
    return None


def _consent_or_anonymous(subject: Subject, data: Mapping[str, Any]) -> str | None:
    case = _case(subject)
    if case.facts.tracing_consent is not True and not data.get("anonymous_via_doctor"):
        said = "declined" if case.facts.tracing_consent is False else "not recorded"
        return (f"{case.id}'s consent to contact tracing by STPS is {said}: record it with "
                f"`case consent {case.id} --tracing yes`, or let the treating doctor trace anonymously with "
                "--anonymous-via-doctor (§5.4)")
    return None


def _clinician_risk_has_reason(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if data.get("risk") and not data.get("reason"):
        return "a risk level different from Table 1 is a clinician's assessment: give it with --reason"
    return None


def _onset_after_exposure(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: ContactFacts = subject.facts
    onset: date = data["onset"]
    today = local_date(subject.now)
    if onset > today:
        return f"symptom onset {onset} is after today ({today}): give the date symptoms began"
    if onset < facts.exposed_on:
        return f"symptom onset {onset} is before the first exposure ({facts.exposed_on}): correct the date"
    if not data.get("symptoms"):
        return "give the symptoms seen (--symptoms), so the suspected case meets the case definition (§1.1)"
    return None


def _exposure_number_exists(subject: Subject, data: Mapping[str, Any]) -> str | None:
    count = len(subject.facts.exposures)
    number = count if data.get("exposure") is None else data["exposure"]
    if not 1 <= number <= count:
        return f"this contact has exposures 1 to {count}: give one of them with --exposure"
    return None


# ---- effects ---------------------------------------------------------------------------------------------------


def _effective_risk(facts: ContactFacts) -> str:
    if facts.risk_assessed:
        return facts.risk
    return min((risk_of(e["kind"]) for e in facts.exposures), key=RISKS.index)


def _arm_exposure_timers(subject: Subject) -> None:
    """Every timer that hangs on the exposures, computed anew (re-arming replaces a pending one). The monitoring
    end is armed even when already past, so it fires at the next clock step; the PEP window is set to where the
    clock stands now, and only its timers still ahead are armed."""
    facts: ContactFacts = subject.facts
    subject.arm_timer(TimerSpec("monitoring_ends", monitoring_ends(facts.last_exposure_on), S5_5))
    since = pep_exposure(facts)
    if since is None:
        facts.pep_window = "not_indicated"
    else:
        facts.pep_window = pep_window_at(since, subject.now)
        best_by, latest_by = since + timedelta(days=PEP_OPTIMAL_DAYS), since + timedelta(days=PEP_LATEST_DAYS)
        if pep_optimal_window_closes(since) > subject.now:
            subject.arm_timer(TimerSpec("pep_optimal_window_closes", pep_optimal_window_closes(since), S6_2))
        else:
            subject.cancel_timer("pep_optimal_window_closes")
        if pep_window_closes(since) > subject.now:
            subject.arm_timer(TimerSpec("pep_window_closes", pep_window_closes(since), S6_2,
                                        task=f"assess PEP by {latest_by} (best by {best_by})"))
            return
    subject.cancel_timer("pep_optimal_window_closes")
    subject.cancel_timer("pep_window_closes")
    subject.satisfy_timer("pep_window_closes")  # no PEP to assess any more


def _recompute(facts: ContactFacts) -> None:
    days = [date.fromisoformat(e["on"]) for e in facts.exposures]
    facts.exposed_on, facts.last_exposure_on = min(days), max(days)
    facts.risk = _effective_risk(facts)
    facts.exposure_kind = max(facts.exposures, key=lambda e: e["on"])["kind"]


def _add(subject: Subject, data: Mapping[str, Any]) -> None:
    exposed: date = data["exposed"]
    subject.facts = ContactFacts(
        case_id=_case(subject).pk,
        exposure_kind=data["kind"],
        risk=data.get("risk") or risk_of(data["kind"]),
        risk_assessed=bool(data.get("risk")),
        exposed_on=exposed,
        last_exposure_on=exposed,
        pep_window="not_indicated",
        exposures=[{"on": exposed.isoformat(), "kind": data["kind"]}],
        anonymous_via_doctor=bool(data.get("anonymous_via_doctor")),
    )
    _arm_exposure_timers(subject)
    subject.arm_timer(TimerSpec("inform_due", subject.now + INFORM_WITHIN, S5_5, task=INFORM_TASK))


def _expose(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: ContactFacts = subject.facts
    facts.exposures = [*facts.exposures, {"on": data["exposed"].isoformat(), "kind": data["kind"]}]
    _recompute(facts)
    _arm_exposure_timers(subject)


def _expose_again(subject: Subject, data: Mapping[str, Any]) -> None:
    """A released contact exposed again to a case still infectious: monitoring and information start anew."""
    _expose(subject, data)
    subject.facts.informed_at = None
    subject.arm_timer(TimerSpec("inform_due", subject.now + INFORM_WITHIN, S5_5, task=INFORM_TASK))


def _correct(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: ContactFacts = subject.facts
    index = (len(facts.exposures) if data.get("exposure") is None else data["exposure"]) - 1
    exposures = [dict(e) for e in facts.exposures]
    exposures[index]["on"] = data["exposed"].isoformat()
    facts.exposures = exposures
    _recompute(facts)
    _arm_exposure_timers(subject)


def _inform(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.informed_at = subject.now
    subject.satisfy_timer("inform_due")


def _cancel_all(subject: Subject) -> None:
    for name in ("monitoring_ends", "pep_optimal_window_closes", "pep_window_closes", "inform_due"):
        subject.cancel_timer(name)
    for task in ("pep_window_closes", "inform_due"):
        subject.satisfy_timer(task)  # the task ends with the contact's follow-up


def _release(subject: Subject, data: Mapping[str, Any]) -> None:
    _cancel_all(subject)


def _symptoms(subject: Subject, data: Mapping[str, Any]) -> None:
    facts: ContactFacts = subject.facts
    facts.symptoms_onset = data["onset"]
    facts.symptoms = list(data["symptoms"])
    _cancel_all(subject)
    subject.spawn(
        kind="case", trigger="open", link="became_case",
        data={"onset": data["onset"], "symptoms": list(data["symptoms"]), "criteria": ["epi_link"],
              "source_case": _case(subject).id},
    )


def _pep_optimal_over(subject: Subject, data: Mapping[str, Any]) -> None:
    if subject.facts.pep_window == "optimal":
        subject.facts.pep_window = "extended"


def _pep_over(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.pep_window = "closed"
    subject.satisfy_timer("pep_window_closes")  # after day 14 PEP is no longer offered: nothing left to assess


def _deadline_passed(subject: Subject, data: Mapping[str, Any]) -> None:
    """The contact was not informed within a day: nothing changes but the record that it is overdue."""


def _pep_offered(subject: Subject, data: Mapping[str, Any]) -> None:
    """A PEP course was offered (§5.3): the PEP assessment is done."""
    subject.satisfy_timer("pep_window_closes")


WITHIN_PERIOD = Guard(S5_1, _within_infectious_period)
CLOSE_CONTACT_KIND = Guard(S5_1, _kind_is_a_close_contact)

CONTACT = WorkflowDefinition(
    kind="contact",
    version="SST-mpox-7.1",
    facts=ContactFacts,
    states=STATES,
    final=FINAL,
    identity=("case_id",),
    identity_rule=S5_5,
    transitions=[
        TransitionSpec(
            "add", (NEW,), "exposed", S5_1, "register a close contact of a confirmed case",
            guards=(Guard(S5_1, _source_case_confirmed), Guard(S5_1, _not_the_case_itself), CLOSE_CONTACT_KIND,
                    WITHIN_PERIOD,
                    Guard(S5_2, _consent_or_anonymous), Guard(S6_2, _clinician_risk_has_reason)),
            effect=_add, references=("case",),
        ),
        TransitionSpec(
            "expose", OPEN, None, S5_5, "a new exposure: monitoring and PEP windows run from the last one",
            guards=(CLOSE_CONTACT_KIND, WITHIN_PERIOD), effect=_expose, references=("case",),
        ),
        TransitionSpec(
            "expose", ("released",), "exposed", S5_5,
            "exposed again after release, to a case still infectious: monitored anew",
            guards=(CLOSE_CONTACT_KIND, WITHIN_PERIOD), effect=_expose_again, references=("case",),
        ),
        TransitionSpec(
            "correct", OPEN, None, S5_5, "an exposure date corrected: every timer recomputed",
            guards=(Guard(S5_5, _exposure_number_exists), WITHIN_PERIOD), effect=_correct, references=("case",),
        ),
        TransitionSpec("inform", ("exposed",), "monitored", S5_5, "STPS has informed the contact",
                       effect=_inform),
        TransitionSpec("monitoring_ends", OPEN, "released", S5_5,
                       "21 days after the last exposure without symptoms: released", effect=_release, timed=True),
        TransitionSpec(
            "symptoms", OPEN, "symptomatic", S5_5, "symptoms: the contact becomes a suspected case (§2)",
            guards=(Guard(S5_5, _onset_after_exposure),), effect=_symptoms, references=("case",),
        ),
        TransitionSpec("pep_optimal_window_closes", OPEN, None, S6_2,
                       "4 days after exposure: PEP now only in special cases", effect=_pep_optimal_over, timed=True),
        TransitionSpec("pep_window_closes", OPEN, None, S6_2,
                       "14 days after exposure: PEP no longer offered", effect=_pep_over, timed=True),
        TransitionSpec("pep_offered", OPEN, None, S5_3, "PEP offered after assessment: the assessment is done",
                       effect=_pep_offered),
        TransitionSpec("inform_due", OPEN, None, S5_5, "a day passed without informing the contact: overdue",
                       effect=_deadline_passed, timed=True),
    ],
)
