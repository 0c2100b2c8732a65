"""The operations that change something, declared once for the HTTP API, its OpenAPI schema and the web forms.

Each has the CLI's name (``case confirm``; operation id ``case_confirm``) and a request body whose fields are the
CLI's options (``--pcr-on`` is ``pcr_on``); the engine call is the CLI's. Types do the parsing the CLI's
``entry.parsing`` does: a date is ``YYYY-MM-DD``, a choice one of its listed values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.core import TASK_OUTCOMES, Engine
from entry.parsing import MAX_NAME, MAX_NOTE, MAX_REF
from workflows.case import (
    ANTIVIRAL_DECISIONS,
    CHANNELS,
    CLADES,
    CRITERIA,
    DISCHARGE_MODES,
    ISOLATION_MODES,
    SYMPTOMS,
    WORK,
)
from workflows.contact import EXPOSURE_KINDS, RISKS
from workflows.course import INDICATIONS, PREP_CRITERIA, PREP_LOOKBACK_DAYS
from workflows.errors import UsageError
from workflows.limits import MAX_ID
from workflows.registry import WORKFLOWS

Symptom = Literal[SYMPTOMS]  # type: ignore[valid-type]
Criterion = Literal[CRITERIA]  # type: ignore[valid-type]
Clade = Literal[CLADES]  # type: ignore[valid-type]
Mode = Literal[ISOLATION_MODES]  # type: ignore[valid-type]
Channel = Literal[CHANNELS]  # type: ignore[valid-type]
DischargeMode = Literal[DISCHARGE_MODES]  # type: ignore[valid-type]
AntiviralDecision = Literal[ANTIVIRAL_DECISIONS]  # type: ignore[valid-type]
Work = Literal[WORK]  # type: ignore[valid-type]
ExposureKind = Literal[EXPOSURE_KINDS]  # type: ignore[valid-type]
Risk = Literal[RISKS]  # type: ignore[valid-type]
Indication = Literal[INDICATIONS]  # type: ignore[valid-type]
PrepCriterion = Literal[PREP_CRITERIA]  # type: ignore[valid-type]
Outcome = Literal[TASK_OUTCOMES]  # type: ignore[valid-type]


# ---- the checks the CLI and the API share --------------------------------------------------------------------


def case_open_request(*, onset: date | None, symptoms: list[str], criteria: list[str], confirmed: bool,
                      pcr_on: date | None, clade: str | None,
                      symptom_note: str | None = None,
                      second_case_reason: str | None = None) -> tuple[str, dict[str, Any]]:
    """The trigger and data of ``case open``: a suspected case, or with ``confirmed`` one confirmed by PCR (whose
    onset may be left out when it has no symptoms, §1.1: its infectious period starts at the sample date). A
    person with an open case gets a second one only with ``second_case_reason`` (kept in the audit entry)."""
    note = (symptom_note or "").strip() or None
    if "other" in symptoms and note is None:
        raise UsageError("the symptom 'other' needs a description: give symptom_note (--symptom-note TEXT)")
    data: dict[str, Any] = {"symptoms": symptoms, "criteria": criteria}
    if second_case_reason is not None:
        if not second_case_reason.strip():
            raise UsageError("second_case_reason (--second-case-reason TEXT) needs the clinician's reason for a "
                             "second open case, e.g. a re-infection after the first case healed")
        data["second_case_reason"] = second_case_reason.strip()
    if onset is not None:
        data = {"onset": onset, **data}
    if note is not None:
        data["symptom_note"] = note
    if confirmed:
        if pcr_on is None:
            raise UsageError("a confirmed case needs pcr_on (--pcr-on DATE), the date of the positive PCR")
        return "open_confirmed", {**data, "pcr_on": pcr_on, "clade": clade}
    if pcr_on is not None or clade is not None:
        raise UsageError("pcr_on and clade go with confirmed (--confirmed), or confirm the case later "
                         "(`case confirm`)")
    if onset is None:
        raise UsageError("a suspected case needs onset (--onset DATE), the day symptoms began; only a case "
                         "confirmed by PCR without symptoms (--confirmed) is registered without one")
    return "open", data


def vaccine_offer_data(*, indication: str, contact: str | None, criteria: list[str], assessed_by: str | None,
                       assessment_note: str | None = None, criterion_on: date | None = None) -> dict[str, Any]:
    """The data of ``vaccine offer``: PEP names the contact record, PrEP its criteria (and the date of a dated
    one, §6.1)."""
    if indication == "pep" and criteria:
        raise UsageError("criteria (--criteria) go with indication prep; PEP takes the contact (--contact)")
    if indication == "prep" and contact:
        raise UsageError("contact (--contact) goes with indication pep; PrEP takes criteria (--criteria)")
    if criterion_on is not None:
        dated = [c for c in criteria if c in PREP_LOOKBACK_DAYS]
        if indication != "prep" or not dated:
            raise UsageError("criterion_on (--criterion-on) dates a PrEP criterion that looks back: "
                             + " or ".join(PREP_LOOKBACK_DAYS))
        if len(dated) > 1:
            raise UsageError("criterion_on (--criterion-on) dates one criterion: give "
                             + " or ".join(PREP_LOOKBACK_DAYS) + ", not both (one is enough, §6.1)")
    return {"indication": indication, "contact": contact, "criteria": criteria, "assessed_by": assessed_by,
            "assessment_note": assessment_note, "criterion_on": criterion_on}


# ---- request bodies ------------------------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, description="Why: goes into the audit entry.", max_length=MAX_NOTE)


class Change(Body):
    if_version: int | None = Field(None, ge=1, le=MAX_ID, description="Refuse (409) unless the object is still at "
                                   "this version.")


class PersonAdd(Body):
    ref: str = Field(description="External reference (e.g. CPR): shown to staff, never logged.", min_length=1,
                     max_length=MAX_REF)
    born: date | None = Field(None, description="Birth date.")
    immunocompromised: bool = False
    pregnant: bool = Field(False, description="Pregnant (§6.2.1: PEP only).")
    breastfeeding: bool = Field(False, description="Breastfeeding (§6.2.1: PEP only).")
    previous_mpox: bool = False
    smallpox_vaccinated: bool = False
    doses_elsewhere: int = Field(0, ge=0, le=2, description="Doses of mpox vaccine given elsewhere (§6.3).")
    last_dose_on: date | None = Field(None, description="With doses elsewhere: the last one's date.")


class PersonUpdate(Body):
    """Only the fields given change (``null`` or absent: unchanged)."""

    born: date | None = Field(None, description="A corrected birth date.")
    pregnant: bool | None = Field(None, description="Pregnant (§6.2.1).")
    breastfeeding: bool | None = Field(None, description="Breastfeeding (§6.2.1).")
    immunocompromised: bool | None = None
    previous_mpox: bool | None = None
    smallpox_vaccinated: bool | None = None
    doses_elsewhere: int | None = Field(None, ge=0, le=2, description="Doses of mpox vaccine given elsewhere "
                                                                      "(§6.3).")
    last_dose_on: date | None = Field(None, description="With doses elsewhere: the last one's date.")


class TaskResolve(Body):
    outcome: Outcome = Field(description="What happened: done-late (a missed task done after its deadline), "
                                         "not-reachable, declined or not-needed.")
    reason: str = Field(description="What happened, in words: goes onto the task and into the audit entry.",
                        min_length=1, max_length=MAX_NOTE)


class CaseOpen(Body):
    person: str = Field(description="The person (person-N).")
    onset: date | None = Field(None, description="Symptom onset (required unless confirmed without symptoms).")
    symptoms: list[Symptom] = Field(default_factory=list)
    symptom_note: str | None = Field(None, description="What the symptom 'other' is (§1.1: the list is open).",
                                     max_length=MAX_NOTE)
    criteria: list[Criterion] = Field(default_factory=list, description="Epidemiological criteria (§1.1).")
    confirmed: bool = Field(False, description="Register a case already confirmed by PCR.")
    pcr_on: date | None = Field(None, description="With confirmed: the positive PCR's date.")
    clade: Clade | None = None
    second_case_reason: str | None = Field(
        None, description="Why the person gets a second open case (e.g. a re-infection after the first healed); "
                          "without it a person with an open case is refused (409).", max_length=MAX_NOTE)


class CaseConfirm(Change):
    pcr_on: date = Field(description="The positive PCR's date.")
    clade: Clade | None = None


class CaseIsolate(Change):
    mode: Mode = Field(description="home, covered (lesions covered) or hospital (admitted, §3.2).")


class OnDate(Change):
    on: date


class CaseNotify(Change):
    channel: Channel = Field(description="phone (STPS) or written (SSI and STPS).")


class CaseConsent(Change):
    tracing: bool = Field(description="Does the case consent to contact tracing by STPS (§5.2)? false: it "
                                      "declines, and the treating doctor may trace anonymously (§5.4).")


class CaseSource(Change):
    case: str = Field(description="The possible source case (case-N).")
    on: date = Field(description="Date of the exposure, within 21 days before onset.")


class CaseSampleSent(Change):
    on: date = Field(description="The date the positive sample was sent to SSI for genome sequencing (§2.4).")


class CaseClade(Change):
    clade: Clade = Field(description="The clade SSI's genome sequencing found (§2.4).")


class CaseDischarge(Change):
    on: date = Field(description="The date of discharge from hospital.")
    decided_by: str | None = Field(None, description="Who in the infection-medicine department decided it (§3.2).",
                                   max_length=MAX_NAME)
    mode: DischargeMode = Field("home", description="Isolation after discharge: home, or covered (no general "
                                                    "symptoms, §4.1).")


class CaseAntiviral(Change):
    assessed_by: str | None = Field(None, description="The infection-medicine specialist who assessed it (§3.4).",
                                    max_length=MAX_NAME)
    decision: AntiviralDecision = Field(description="start, or not-indicated.")


class CaseWork(Change):
    work: list[Work] = Field(min_length=1, description="Work with close physical contact, with children under 12, "
                                                       "or with pregnant or immunocompromised people (§4.1).")


class ContactAdd(Body):
    case: str = Field(description="The confirmed case (case-N).")
    person: str = Field(description="The contact person (person-N).")
    exposed: date = Field(description="Date of exposure, in the case's infectious period.")
    kind: ExposureKind = Field(description="Exposure kind (§5.1).")
    risk: Risk | None = Field(None, description="A clinician's individual assessment of the exposure instead of "
                                                "Table 1; needs a reason; required for healthcare_with_ppe (§5.1).")
    anonymous_via_doctor: bool = Field(False, description="Only when the case declined STPS tracing: the treating "
                                                          "doctor contacts the contact anonymously (§5.4).")


class ContactExpose(Change):
    exposed: date = Field(description="Date of the new exposure.")
    kind: ExposureKind
    risk: Risk | None = Field(None, description="A clinician's individual assessment of this exposure instead of "
                                                "Table 1; needs a reason.")


class ContactAssess(Change):
    risk: Risk = Field(description="The clinician's risk level for the exposures recorded so far (Table 1, §6.2); "
                                   "needs a reason.")


class ContactCorrect(Change):
    exposed: date = Field(description="The corrected exposure date.")
    exposure: int | None = Field(None, ge=1, description="Which exposure (1 = first recorded; default the last).")


class ContactSymptoms(Change):
    onset: date
    symptoms: list[Symptom] = Field(min_length=1)
    symptom_note: str | None = Field(None, max_length=MAX_NOTE, description="What the symptom 'other' is (§1.1).")


class VaccineOffer(Body):
    person: str = Field(description="The person (person-N).")
    indication: Indication = Field(description="pep (a close contact, §6.2) or prep (§6.1).")
    contact: str | None = Field(None, description="PEP: the person's contact record (contact-N).")
    criteria: list[PrepCriterion] = Field(default_factory=list, description="PrEP criteria (§6.1).")
    assessed_by: str | None = Field(None, description="PEP: who assessed it (a doctor or STPS, §6.2); PrEP: the "
                                                      "doctor whose assessment a criterion rests on (§6.1).",
                                    max_length=MAX_NAME)
    assessment_note: str | None = Field(None, description="The assessor's reasons; PEP for a low-risk contact at "
                                                          "risk of severe disease needs them (§6.2).",
                                        max_length=MAX_NOTE)
    criterion_on: date | None = Field(None, description="PrEP: the date of msm_two_partners_12w (within 12 weeks) "
                                                        "or msm_sti_24w (within 24 weeks) (§6.1).")


class VaccineDose(Change):
    on: date = Field(description="The date the dose was given.")
    consent: bool = Field(False, description="PEP (off-label): informed consent is recorded (§6.2).")
    indication_note: str | None = Field(None, description="PEP: the indication.", max_length=MAX_NOTE)
    justification: str | None = Field(None, description="PEP: the justification.", max_length=MAX_NOTE)
    assessed_by: str | None = Field(None, description="The doctor whose individual assessment covers this "
                                                      "(§6.2.1-2: under 12, pregnant or breastfeeding).",
                                    max_length=MAX_NAME)
    special_reason: str | None = Field(None, description="PEP dose 1 on day 5-14 after the exposure: the special "
                                                         "case (§6.2).", max_length=MAX_NOTE)


# ---- the operations ------------------------------------------------------------------------------------------


def _facts(body: BaseModel) -> dict[str, Any]:
    return body.model_dump(exclude={"reason", "if_version"})


@dataclass(frozen=True)
class Operation:
    """One change staff can make, by its CLI name."""

    name: str
    kind: str
    trigger: str | None  # None: not a workflow transition (person add)
    body: type[BaseModel]
    summary: str
    creates: bool = False
    data: Callable[[Any], dict[str, Any]] = _facts

    @property
    def operation_id(self) -> str:
        return self.name.replace(" ", "_")

    @property
    def verb(self) -> str:
        return self.name.split(" ", 1)[1]

    def call(self, engine: Engine, actor: str, body: Any, object_id: str | None = None) -> dict[str, Any]:
        """Run it as ``actor``: the engine authorizes, applies and audits in one transaction."""
        reason = body.reason or None
        if self.name == "person add":
            return engine.add_person(**_facts(body), actor=actor, reason=reason)
        if self.name == "person update":
            assert object_id is not None
            changes = {k: v for k, v in _facts(body).items() if v is not None}
            return engine.update_person(object_id, changes=changes, actor=actor, reason=reason)
        if self.name == "case open":
            trigger, data = case_open_request(onset=body.onset, symptoms=body.symptoms, criteria=body.criteria,
                                              confirmed=body.confirmed, pcr_on=body.pcr_on, clade=body.clade,
                                              symptom_note=body.symptom_note,
                                              second_case_reason=body.second_case_reason)
            return engine.open("case", trigger, person=body.person, data=data, actor=actor,
                               reason=reason or data.get("second_case_reason"))
        if self.creates:
            assert self.trigger is not None
            return engine.open(self.kind, self.trigger, person=body.person, data=self.data(body), actor=actor,
                               reason=reason)
        assert self.trigger is not None and object_id is not None
        return engine.apply(object_id, self.trigger, data=self.data(body), actor=actor, reason=reason,
                            expected_version=body.if_version, kind=self.kind)


def _contact_expose(body: ContactExpose) -> dict[str, Any]:
    return {"exposed": body.exposed, "kind": body.kind, "risk": body.risk, "reason": body.reason}


def _contact_assess(body: ContactAssess) -> dict[str, Any]:
    return {"risk": body.risk, "reason": body.reason}


def _contact_add(body: ContactAdd) -> dict[str, Any]:
    return {"case": body.case, "exposed": body.exposed, "kind": body.kind, "risk": body.risk, "reason": body.reason,
            "anonymous_via_doctor": body.anonymous_via_doctor}


def _case_antiviral(body: CaseAntiviral) -> dict[str, Any]:
    # §3.4: the specialist's reasoning is part of the recorded decision (and the audit entry's reason).
    return {"assessed_by": body.assessed_by, "decision": body.decision, "reason": body.reason}


def _vaccine_offer(body: VaccineOffer) -> dict[str, Any]:
    return vaccine_offer_data(indication=body.indication, contact=body.contact, criteria=body.criteria,
                              assessed_by=body.assessed_by, assessment_note=body.assessment_note,
                              criterion_on=body.criterion_on)


def _summary(kind: str, trigger: str) -> str:
    return next(s.summary for s in WORKFLOWS[kind].transitions if s.trigger == trigger)


OPERATIONS: tuple[Operation, ...] = (
    Operation("person add", "person", None, PersonAdd, "register a person", creates=True),
    Operation("person update", "person", None, PersonUpdate, "change a person's facts (pregnancy, breastfeeding, "
              "doses elsewhere, ...)"),
    Operation("case open", "case", "open", CaseOpen, "open a suspected case (§1.1), or register one confirmed by PCR",
              creates=True),
    Operation("case confirm", "case", "confirm", CaseConfirm, _summary("case", "confirm")),
    Operation("case discard", "case", "discard", Change, _summary("case", "discard")),
    Operation("case isolate", "case", "isolate", CaseIsolate, _summary("case", "isolate")),
    Operation("case heal", "case", "heal", OnDate, _summary("case", "heal")),
    Operation("case die", "case", "die", OnDate, _summary("case", "die")),
    Operation("case notify", "case", "notify", CaseNotify, _summary("case", "notify")),
    Operation("case consent", "case", "consent", CaseConsent, _summary("case", "consent")),
    Operation("case source", "case", "source", CaseSource, _summary("case", "source")),
    Operation("case sample-sent", "case", "sample_sent", CaseSampleSent, _summary("case", "sample_sent")),
    Operation("case clade", "case", "clade", CaseClade, _summary("case", "clade")),
    Operation("case paediatric", "case", "paediatric", Change, _summary("case", "paediatric")),
    Operation("case discharge", "case", "discharge", CaseDischarge, _summary("case", "discharge")),
    Operation("case antiviral", "case", "antiviral", CaseAntiviral, _summary("case", "antiviral"),
              data=_case_antiviral),
    Operation("case work", "case", "work", CaseWork, _summary("case", "work")),
    Operation("contact add", "contact", "add", ContactAdd, _summary("contact", "add"), creates=True,
              data=_contact_add),
    Operation("contact expose", "contact", "expose", ContactExpose, _summary("contact", "expose"),
              data=_contact_expose),
    Operation("contact assess", "contact", "assess", ContactAssess, _summary("contact", "assess"),
              data=_contact_assess),
    Operation("contact correct", "contact", "correct", ContactCorrect, _summary("contact", "correct")),
    Operation("contact inform", "contact", "inform", Change, _summary("contact", "inform")),
    Operation("contact symptoms", "contact", "symptoms", ContactSymptoms, _summary("contact", "symptoms")),
    Operation("vaccine offer", "course", "offer", VaccineOffer, _summary("course", "offer"), creates=True,
              data=_vaccine_offer),
    Operation("vaccine dose", "course", "dose", VaccineDose, "record a dose: dose 1 (PEP needs consent, §6.2), or "
              "dose 2 at least 28 days later (§6.4)"),
    Operation("vaccine decline", "course", "decline", Change, _summary("course", "decline")),
)
BY_NAME = {op.name: op for op in OPERATIONS}
#: Where the API takes a kind's objects: ``/api/cases``, ``/api/contacts``, ``/api/courses``, ``/api/persons``.
COLLECTIONS = {"person": "persons", "case": "cases", "contact": "contacts", "course": "courses"}
#: What ``list`` lists (CLI, API and pages): ``persons`` -> ``person``.
LISTABLE = {plural: kind for kind, plural in COLLECTIONS.items()}


def transitions_of(kind: str) -> list[Operation]:
    return [op for op in OPERATIONS if op.kind == kind and not op.creates]


def allowed_now(kind: str, state: str) -> list[Operation]:
    """The operations a person can take on an object of ``kind`` in ``state``, as the workflow's table has them.
    A row that neither moves nor records anything only exists to refuse with its rule (no third dose, §6.3), so
    it is not offered."""
    definition = WORKFLOWS[kind]
    found = []
    for op in transitions_of(kind):
        assert op.trigger is not None
        spec = definition.spec(op.trigger, state)
        if spec is None or spec.timed or spec.internal:
            continue
        if spec.dest is not None or spec.effect is not None:
            found.append(op)
    return found
