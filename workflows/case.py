"""The case workflow (``case@SST-mpox-7.1``): suspected → confirmed → isolated → healed → closed, with the side
exits the guideline implies (discarded on a negative test, deceased).

Every transition and guard cites its section of RULES.md; the timers it arms are computed here, purely, from
the facts, the instant of the change and the deployment's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from workflows.calendar import local_date, local_time_on, window_closes
from workflows.definition import NEW, Cascade, Guard, Subject, TimerSpec, TransitionSpec, WorkflowDefinition
from workflows.rules import cite

SYMPTOMS = ("rash", "fever", "headache", "myalgia", "back_pain", "fatigue", "lymphadenopathy", "proctitis")
CRITERIA = ("epi_link", "travel", "multiple_partners", "msm")
CLADES = ("I", "Ia", "Ib", "II", "IIa", "IIb")
ISOLATION_MODES = ("home", "covered", "hospital")
CHANNELS = ("phone", "written")

STATES = ("suspected", "confirmed", "isolated", "healed", "closed", "discarded", "deceased")
FINAL = ("closed", "discarded", "deceased")
#: States in which the case has been confirmed by PCR (or may have been, for deceased).
AFTER_CONFIRMATION = ("confirmed", "isolated", "healed", "closed", "deceased")

#: §4.1 condom use for 12 weeks after healing: 84 full days after the healed day.
CONDOM_ADVICE_DAYS = 84
#: §5.2 STPS asks about exposures up to 21 days before symptom onset to find the source.
SOURCE_DAYS = 21
#: §3.1 written notification to SSI and STPS within 24 hours of confirmation.
WRITTEN_NOTIFICATION_WITHIN = timedelta(hours=24)

S1_1, S2_2_1, S3, S3_1, S4_1, S5_2 = (cite(s) for s in ("§1.1", "§2.2.1", "§3", "§3.1", "§4.1", "§5.2"))
#: States in which a case is open: not closed, discarded or deceased.
OPEN_STATES = ("suspected", "confirmed", "isolated", "healed")


@dataclass
class CaseFacts:
    """The facts a case carries; the persistence layer stores each as a column of the same name."""

    onset: date
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
    #: §5.2 the case's consent to contact tracing by STPS: None until asked.
    tracing_consent: bool | None = None
    #: §5.2 possible sources: ``{"case": "case-N", "on": "YYYY-MM-DD"}`` up to 21 days before onset.
    sources: list[dict[str, str]] = field(default_factory=list)
    #: The case this one was exposed to, when it began as a symptomatic close contact (§5.5).
    source_case: str | None = None


# ---- pure rules ---------------------------------------------------------------------------------------------


def phone_notification_due(confirmed_at: datetime, working_day_ends: Any) -> datetime:
    """§3.1 phone STPS "at once, within the working day": the end of the local working day of the
    confirmation; a case confirmed after that hour is due at once (at the confirmation instant)."""
    end = local_time_on(local_date(confirmed_at), working_day_ends)
    return end if confirmed_at < end else confirmed_at


def written_notification_due(confirmed_at: datetime) -> datetime:
    """§3.1 written notification to SSI and STPS within 24 hours (an hour-level deadline)."""
    return confirmed_at + WRITTEN_NOTIFICATION_WITHIN


def condom_advice_ends(healed_on: date) -> datetime:
    """§4.1 condom use for 12 weeks after healing: 00:00 local on healed date + 85 days."""
    return window_closes(healed_on, CONDOM_ADVICE_DAYS)


# ---- guards (pure: return the refusal, or None) ----------------------------------------------------------------


def _case_definition(subject: Subject, data: Mapping[str, Any]) -> str | None:
    symptoms = list(data.get("symptoms") or [])
    criteria = list(data.get("criteria") or [])
    missing = []
    if not symptoms:
        missing.append(
            "a symptom: unexplained rash, or another listed symptom (" + ", ".join(SYMPTOMS[1:]) + ")"
        )
    if not criteria:
        missing.append(
            "a criterion within 21 days before onset (" + ", ".join(CRITERIA) + ")"
        )
    if missing:
        return (
            "not a suspected case: the case definition needs " + " AND ".join(missing)
            + "; give them with --symptoms and --criteria"
        )
    return None


def _onset_not_in_future(subject: Subject, data: Mapping[str, Any]) -> str | None:
    onset: date = data["onset"]
    today = local_date(subject.now)
    if onset > today:
        return f"symptom onset {onset} is after today ({today}): give the date symptoms began"
    return None


def _onset_of(subject: Subject, data: Mapping[str, Any]) -> date:
    facts: CaseFacts | None = subject.facts
    return facts.onset if facts is not None else data["onset"]


def _date_between_onset_and_today(field_name: str, what: str) -> Any:
    def check(subject: Subject, data: Mapping[str, Any]) -> str | None:
        given: date = data[field_name]
        onset = _onset_of(subject, data)
        today = local_date(subject.now)
        if given < onset:
            return f"the {what} date {given} is before symptom onset {onset}: correct the date"
        if given > today:
            return f"the {what} date {given} is after today ({today}): a date cannot be in the future"
        return None

    return check


def _not_yet_notified(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CaseFacts = subject.facts
    if facts.confirmed_at is None:
        return "the case was never confirmed, so no notification is due"
    channel = data["channel"]
    done = facts.phone_notified_at if channel == "phone" else facts.written_notified_at
    if done is not None:
        return f"the {channel} notification is already recorded for this case"
    return None


# ---- effects ---------------------------------------------------------------------------------------------------


def _open(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts = CaseFacts(
        onset=data["onset"], symptoms=list(data.get("symptoms") or []), criteria=list(data.get("criteria") or []),
        source_case=data.get("source_case"),
    )


def _confirm(subject: Subject, data: Mapping[str, Any]) -> None:
    if subject.facts is None:
        _open(subject, data)
    facts: CaseFacts = subject.facts
    # §6.3: mpox after dose 1 means no dose 2 (and a person with mpox is not vaccinated): end their course.
    subject.cascade(Cascade("course", "mpox_confirmed", states=("offered", "dose1_given", "dose2_due")))
    facts.pcr_on = data["pcr_on"]
    facts.clade = data.get("clade")
    facts.confirmed_at = subject.now
    subject.arm_timer(
        TimerSpec(
            "phone_notification_due",
            phone_notification_due(subject.now, subject.settings.working_day_ends),
            S3_1,
            task="notify STPS by phone",
        )
    )
    subject.arm_timer(
        TimerSpec(
            "written_notification_due",
            written_notification_due(subject.now),
            S3_1,
            task="notify SSI and STPS in writing",
        )
    )


def _isolate(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.isolation_mode = data["mode"]


def _heal(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.healed_on = data["on"]
    subject.arm_timer(TimerSpec("condom_advice_ends", condom_advice_ends(data["on"]), S4_1))


def _die(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.died_on = data["on"]
    subject.cancel_timer("condom_advice_ends")


def _notify(subject: Subject, data: Mapping[str, Any]) -> None:
    channel = data["channel"]
    if channel == "phone":
        subject.facts.phone_notified_at = subject.now
    else:
        subject.facts.written_notified_at = subject.now
    subject.satisfy_timer(f"{channel}_notification_due")


def _deadline_passed(subject: Subject, data: Mapping[str, Any]) -> None:
    """A notification deadline passed unrecorded: nothing changes but the record that it is now overdue."""


def _source_in_range(subject: Subject, data: Mapping[str, Any]) -> str | None:
    facts: CaseFacts = subject.facts
    other = subject.context["case"]
    if other.id == subject.object_id:
        return "a case cannot be its own source: give the other case with --case"
    on: date = data["on"]
    earliest = facts.onset - timedelta(days=SOURCE_DAYS)
    if not earliest <= on <= facts.onset:
        return (f"the exposure date {on} is outside the 21 days before symptom onset ({earliest} to {facts.onset}) "
                "in which STPS looks for the source")
    return None


def _source(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.sources = [*subject.facts.sources, {"case": subject.context["case"].id,
                                                      "on": data["on"].isoformat()}]


def _consent(subject: Subject, data: Mapping[str, Any]) -> None:
    subject.facts.tracing_consent = bool(data["tracing"])


PCR_DATE = Guard(S1_1, _date_between_onset_and_today("pcr_on", "PCR sample"))

CASE = WorkflowDefinition(
    kind="case",
    version="SST-mpox-7.1",
    facts=CaseFacts,
    states=STATES,
    final=FINAL,
    transitions=[
        TransitionSpec(
            "open", (NEW,), "suspected", S1_1, "open a suspected case (case definition)",
            guards=(Guard(S1_1, _onset_not_in_future), Guard(S1_1, _case_definition)), effect=_open,
        ),
        TransitionSpec(
            "open_confirmed", (NEW,), "confirmed", S1_1, "register a case confirmed by PCR",
            guards=(Guard(S1_1, _onset_not_in_future), PCR_DATE), effect=_confirm,
        ),
        TransitionSpec(
            "confirm", ("suspected",), "confirmed", S1_1, "PCR shows mpox virus DNA",
            guards=(PCR_DATE,), effect=_confirm,
        ),
        TransitionSpec(
            "discard", ("suspected",), "discarded", S2_2_1, "negative test: the suspicion is discarded",
        ),
        TransitionSpec(
            "isolate", ("confirmed", "isolated"), "isolated", S4_1,
            "isolation while infectious (home, lesions covered, or admitted §3.2)", effect=_isolate,
        ),
        TransitionSpec(
            "heal", ("confirmed", "isolated"), "healed", S4_1,
            "lesions healed, scabs fallen off, no general symptoms",
            guards=(Guard(S4_1, _date_between_onset_and_today("on", "healed")),), effect=_heal,
        ),
        TransitionSpec(
            "condom_advice_ends", ("healed",), "closed", S4_1, "12 weeks of condom advice after healing are over",
            timed=True,
        ),
        TransitionSpec(
            "die", ("suspected", "confirmed", "isolated", "healed"), "deceased", S3,
            "the person died (a side exit the guideline implies)",
            guards=(Guard(S3, _date_between_onset_and_today("on", "death")),), effect=_die,
        ),
        TransitionSpec(
            "notify", AFTER_CONFIRMATION, None, S3_1, "the notification to STPS/SSI is recorded",
            guards=(Guard(S3_1, _not_yet_notified),), effect=_notify,
        ),
        TransitionSpec(
            "phone_notification_due", AFTER_CONFIRMATION, None, S3_1,
            "the working day ended without a phone notification to STPS: overdue", effect=_deadline_passed,
            timed=True,
        ),
        TransitionSpec(
            "written_notification_due", AFTER_CONFIRMATION, None, S3_1,
            "24 hours passed without a written notification to SSI and STPS: overdue", effect=_deadline_passed,
            timed=True,
        ),
        TransitionSpec(
            "consent", OPEN_STATES, None, S5_2, "the case's consent to contact tracing by STPS is recorded",
            effect=_consent,
        ),
        TransitionSpec(
            "source", OPEN_STATES, None, S5_2, "a possible source: an exposure up to 21 days before onset",
            guards=(Guard(S5_2, _source_in_range),), effect=_source, references=("case",),
        ),
    ],
)
