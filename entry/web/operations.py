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

from engine.core import Engine
from workflows.case import CHANNELS, CLADES, CRITERIA, ISOLATION_MODES, SYMPTOMS
from workflows.contact import EXPOSURE_KINDS, RISKS
from workflows.course import INDICATIONS, PREP_CRITERIA
from workflows.errors import UsageError
from workflows.registry import WORKFLOWS

Symptom = Literal[SYMPTOMS]  # type: ignore[valid-type]
Criterion = Literal[CRITERIA]  # type: ignore[valid-type]
Clade = Literal[CLADES]  # type: ignore[valid-type]
Mode = Literal[ISOLATION_MODES]  # type: ignore[valid-type]
Channel = Literal[CHANNELS]  # type: ignore[valid-type]
ExposureKind = Literal[EXPOSURE_KINDS]  # type: ignore[valid-type]
Risk = Literal[RISKS]  # type: ignore[valid-type]
Indication = Literal[INDICATIONS]  # type: ignore[valid-type]
PrepCriterion = Literal[PREP_CRITERIA]  # type: ignore[valid-type]


# ---- the checks the CLI and the API share --------------------------------------------------------------------


def case_open_request(*, onset: date, symptoms: list[str], criteria: list[str], confirmed: bool,
                      pcr_on: date | None, clade: str | None) -> tuple[str, dict[str, Any]]:
    """The trigger and data of ``case open``: a suspected case, or with ``confirmed`` one confirmed by PCR."""
    data: dict[str, Any] = {"onset": onset, "symptoms": symptoms, "criteria": criteria}
    if confirmed:
        if pcr_on is None:
            raise UsageError("a confirmed case needs pcr_on (--pcr-on DATE), the date of the positive PCR")
        return "open_confirmed", {**data, "pcr_on": pcr_on, "clade": clade}
    if pcr_on is not None or clade is not None:
        raise UsageError("pcr_on and clade go with confirmed (--confirmed), or confirm the case later "
                         "(`case confirm`)")
    return "open", data


def vaccine_offer_data(*, indication: str, contact: str | None, criteria: list[str],
                       assessed_by: str | None) -> dict[str, Any]:
    """The data of ``vaccine offer``: PEP names the contact record, PrEP its criteria."""
    if indication == "pep" and criteria:
        raise UsageError("criteria (--criteria) go with indication prep; PEP takes the contact (--contact)")
    if indication == "prep" and contact:
        raise UsageError("contact (--contact) goes with indication pep; PrEP takes criteria (--criteria)")
    return {"indication": indication, "contact": contact, "criteria": criteria, "assessed_by": assessed_by}


# ---- request bodies ------------------------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, description="Why: goes into the audit entry.", max_length=2000)


class Change(Body):
    if_version: int | None = Field(None, description="Refuse (409) unless the object is still at this version.")


class PersonAdd(Body):
    ref: str = Field(description="External reference (e.g. CPR): shown to staff, never logged.", min_length=1,
                     max_length=64)
    born: date | None = Field(None, description="Birth date.")
    immunocompromised: bool = False
    pregnant: bool = False
    previous_mpox: bool = False
    smallpox_vaccinated: bool = False


class CaseOpen(Body):
    person: str = Field(description="The person (person-N).")
    onset: date = Field(description="Symptom onset.")
    symptoms: list[Symptom] = Field(default_factory=list)
    criteria: list[Criterion] = Field(default_factory=list, description="Epidemiological criteria (§1.1).")
    confirmed: bool = Field(False, description="Register a case already confirmed by PCR.")
    pcr_on: date | None = Field(None, description="With confirmed: the positive PCR's date.")
    clade: Clade | None = None


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
    tracing: bool = Field(description="Does the case consent to contact tracing by STPS (§5.2)?")


class CaseSource(Change):
    case: str = Field(description="The possible source case (case-N).")
    on: date = Field(description="Date of the exposure, within 21 days before onset.")


class ContactAdd(Body):
    case: str = Field(description="The confirmed case (case-N).")
    person: str = Field(description="The contact person (person-N).")
    exposed: date = Field(description="Date of exposure, in the case's infectious period.")
    kind: ExposureKind = Field(description="Exposure kind (§5.1).")
    risk: Risk | None = Field(None, description="A clinician's assessment instead of Table 1; needs a reason.")
    anonymous_via_doctor: bool = Field(False, description="The case declined STPS tracing: the treating doctor "
                                                          "traces anonymously (§5.4).")


class ContactExpose(Change):
    exposed: date = Field(description="Date of the new exposure.")
    kind: ExposureKind


class ContactCorrect(Change):
    exposed: date = Field(description="The corrected exposure date.")
    exposure: int | None = Field(None, ge=1, description="Which exposure (1 = first recorded; default the last).")


class ContactSymptoms(Change):
    onset: date
    symptoms: list[Symptom] = Field(min_length=1)


class VaccineOffer(Body):
    person: str = Field(description="The person (person-N).")
    indication: Indication = Field(description="pep (a close contact, §6.2) or prep (§6.1).")
    contact: str | None = Field(None, description="PEP: the person's contact record (contact-N).")
    criteria: list[PrepCriterion] = Field(default_factory=list, description="PrEP criteria (§6.1).")
    assessed_by: str | None = Field(None, description="The doctor whose individual assessment covers this.")


class VaccineDose(Change):
    on: date = Field(description="The date the dose was given.")
    consent: bool = Field(False, description="PEP (off-label): informed consent is recorded (§6.2).")
    indication_note: str | None = Field(None, description="PEP: the indication.")
    justification: str | None = Field(None, description="PEP: the justification.")
    assessed_by: str | None = Field(None, description="The doctor whose individual assessment covers this "
                                                      "(§6.2.1-2: under 12, pregnant).")


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
        if self.kind == "person":
            return engine.add_person(**_facts(body), actor=actor, reason=reason)
        if self.name == "case open":
            trigger, data = case_open_request(onset=body.onset, symptoms=body.symptoms, criteria=body.criteria,
                                              confirmed=body.confirmed, pcr_on=body.pcr_on, clade=body.clade)
            return engine.open("case", trigger, person=body.person, data=data, actor=actor, reason=reason)
        if self.creates:
            assert self.trigger is not None
            return engine.open(self.kind, self.trigger, person=body.person, data=self.data(body), actor=actor,
                               reason=reason)
        assert self.trigger is not None and object_id is not None
        return engine.apply(object_id, self.trigger, data=self.data(body), actor=actor, reason=reason,
                            expected_version=body.if_version, kind=self.kind)


def _contact_add(body: ContactAdd) -> dict[str, Any]:
    return {"case": body.case, "exposed": body.exposed, "kind": body.kind, "risk": body.risk, "reason": body.reason,
            "anonymous_via_doctor": body.anonymous_via_doctor}


def _vaccine_offer(body: VaccineOffer) -> dict[str, Any]:
    return vaccine_offer_data(indication=body.indication, contact=body.contact, criteria=body.criteria,
                              assessed_by=body.assessed_by)


def _summary(kind: str, trigger: str) -> str:
    return next(s.summary for s in WORKFLOWS[kind].transitions if s.trigger == trigger)


OPERATIONS: tuple[Operation, ...] = (
    Operation("person add", "person", None, PersonAdd, "register a person", creates=True),
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
    Operation("contact add", "contact", "add", ContactAdd, _summary("contact", "add"), creates=True,
              data=_contact_add),
    Operation("contact expose", "contact", "expose", ContactExpose, _summary("contact", "expose")),
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
        if spec is not None and not spec.timed and (spec.dest is not None or spec.effect is not None):
            found.append(op)
    return found
