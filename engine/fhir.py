"""FHIR R4 (issue 18, reading only): the engine's objects as FHIR resources, plain dicts built from the engine's own
views (``engine.views``, through ``Engine.show``, ``list``, ``related`` and ``audit``, so every read is the viewer's,
by unit), never from a FHIR library (``fhir.resources`` validates them in the tests only).

What becomes what:

- a person: ``Patient`` (``person-N``). The person's reference goes out as the Danish CPR identifier (system
  ``urn:oid:1.2.208.176.1.2``, HL7 DK Core; a reference that is no CPR number as a plain identifier), and the birth
  date as ``birthDate``, only to the roles that see them on the pages and in ``GET /api/show/person-N``
  (``IDENTITY_ROLES``); to any other reader both are left out.
- a case: ``Condition`` (``case-N``): mpox by SNOMED CT 414015000 (with ICD-10 B04 beside it), verificationStatus
  unconfirmed (suspected), confirmed (PCR, §1.1) or refuted (discarded), clinicalStatus active, resolved (healed,
  closed: abatement the healed day) or inactive (discarded), onset, the symptoms as evidence, the PCR date, clade
  and criteria as extensions.
- a contact: ``Observation`` (``contact-N``): the exposure of the contact's person to the case (``focus``), its
  period, kind, risk and PEP window (§5.5, §6.2).
- a course: ``ImmunizationRecommendation`` (``course-N``): a recommendation per dose the course plans, its status
  and dates (dose 2 from dose 1 + 28 days, §6.4; for PEP dose 1 the 4-day and 14-day windows from the exposure,
  §6.2, as dateCriterion); each dose given: ``Immunization`` (``course-N-dose-K``, K the person's dose number).
- a timer: ``Task`` (``timer-N``): requested, completed, cancelled, or failed (a missed deadline), its due instant
  the end of ``executionPeriod``, ``owner`` the object's unit (``Organization/unit-N``), the assignee an extension.
- an audit entry: ``AuditEvent`` (``audit-SEQ``): internal ids only, as the audit log itself.

Every resource carries the guideline section that decides it (extension ``RULE``, ``SST-mpox-7.1 §3.1``).
Instants are Danish local time with their offset; a window's last day is given as that date.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from workflows.calendar import local_date, window_closes
from workflows.errors import MpoxflowError, NotFound, UsageError
from workflows.limits import MAX_ID, shown

#: An ``engine.core.Engine`` (not imported: ``engine.core`` imports this module through ``engine.notification``).
Engine = Any

#: HL7 DK Core: the CPR number's identifier system.
CPR_SYSTEM = "urn:oid:1.2.208.176.1.2"
#: The roles a person's reference and birth date go to: those the pages and ``GET /api/show/person-N`` show them
#: to (staff and admins work with the person; auditors read every page as staff do). Any other reader (the
#: scheduler's ``timer`` role, a role added later) gets the resource without them.
IDENTITY_ROLES = frozenset({"staff", "admin", "auditor"})
#: The FHIR version the resources are written for.
FHIR_VERSION = "4.0.1"
JSON_TYPE = "application/fhir+json"
NDJSON_TYPE = "application/fhir+ndjson"

#: Our extensions and code systems: URNs, so that no address is claimed.
EXT = "urn:mpoxflow:fhir:extension:"
RULE = EXT + "rule"
CODES = "urn:mpoxflow:fhir:codesystem:"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
MPOX = {"coding": [{"system": SNOMED, "code": "414015000", "display": "Mpox"},
                   {"system": ICD10, "code": "B04", "display": "Monkeypox"}], "text": "Mpox"}
#: Imvanex (MVA-BN, Bavarian Nordic): CVX 206 and ATC J07BX01 (smallpox and mpox vaccines).
IMVANEX = {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "206",
                       "display": "vaccinia, smallpox monkeypox vaccine live, PF, SQ or ID"},
                      {"system": "http://www.whocc.no/atc", "code": "J07BX01", "display": "smallpox vaccines"}],
           "text": "Imvanex (MVA-BN)"}
S1_1, S3_1, S5_5, S6, S6_2, S6_4 = (f"SST-mpox-7.1 {s}" for s in ("§1.1", "§3.1", "§5.5", "§6", "§6.2", "§6.4"))

#: Each resource type we serve, and the engine's kind of id it reads.
KIND_OF = {"Patient": "person", "Condition": "case", "Observation": "contact", "ImmunizationRecommendation": "course",
           "Immunization": "course", "Task": "timer", "AuditEvent": "audit", "Bundle": "document"}
#: The resource types of the bulk export, in the order written.
EXPORT_TYPES = ("Patient", "Condition", "Observation", "ImmunizationRecommendation", "Immunization", "Task",
                "AuditEvent")
#: The resource an engine object is, for references.
RESOURCE_OF = {"person": "Patient", "case": "Condition", "contact": "Observation",
               "course": "ImmunizationRecommendation", "timer": "Task", "document": "Bundle"}
_DOSE_ID = re.compile(r"course-(\d{1,10})-dose-([12])")


def may_see_identity(role: str | None) -> bool:
    """Whether a reader of ``role`` gets a person's reference (as the CPR identifier) and birth date."""
    return role in IDENTITY_ROLES


def reference(object_id: str, display: str | None = None) -> dict[str, Any]:
    """A reference to the resource an engine id is (``case-1``: ``Condition/case-1``)."""
    kind = object_id.rsplit("-", 1)[0]
    found: dict[str, Any] = {"reference": f"{RESOURCE_OF.get(kind, 'Basic')}/{object_id}"}
    if display:
        found["display"] = display
    return found


def _rule(section: str) -> dict[str, Any]:
    return {"url": RULE, "valueString": section}


def _code(system: str, code: str, text: str | None = None) -> dict[str, Any]:
    return {"coding": [{"system": CODES + system, "code": code}], "text": text or code}


def _prune(value: Any) -> Any:
    """FHIR has no empty values: None, empty lists and empty objects are left out (an extension whose value is
    left out with it)."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        kept = {k: v for k, v in pruned.items() if v not in (None, [], {}, "")}
        return {} if list(kept) == ["url"] else kept  # an extension without a value is none
    if isinstance(value, list):
        return [v for v in (_prune(v) for v in value) if v not in (None, [], {}, "")]
    return value


def _last_day(instant: datetime) -> str:
    """The last Danish day a window closing at ``instant`` covers."""
    return local_date(instant - timedelta(microseconds=1)).isoformat()


# ---- the resources -------------------------------------------------------------------------------------------


def cpr_identifier(ref: str) -> dict[str, Any]:
    """A person's reference as an identifier: a CPR number (10 digits, with or without the hyphen) in HL7 DK Core's
    system, anything else as the plain value it is (no system claims it)."""
    digits = ref.replace("-", "")
    if len(digits) == 10 and digits.isascii() and digits.isdigit():
        return {"use": "official", "system": CPR_SYSTEM, "value": digits}
    return {"use": "usual", "type": {"text": "mpoxflow reference"}, "value": ref}


def patient(view: Mapping[str, Any], *, identity: bool) -> dict[str, Any]:
    """A person (``person_view``) as a Patient; the reference and birth date only with ``identity``. A purged
    person (issue 19) has neither, whoever reads: the Patient says when its personal data was deleted
    (``personal-data-deleted``) and under which rule (``personal-data-deleted-rule``)."""
    resource: dict[str, Any] = {"resourceType": "Patient", "id": view["id"]}
    purged = view.get("purged")
    if identity and not purged and view.get("ref") is not None:
        resource["identifier"] = [cpr_identifier(str(view["ref"]))]
        resource["birthDate"] = view.get("born")
    deleted = ([{"url": EXT + "personal-data-deleted", "valueDate": purged["on"]},
                {"url": EXT + "personal-data-deleted-rule", "valueString": purged["rule"]}] if purged else [])
    resource["extension"] = [*deleted,
        {"url": EXT + "pregnant", "valueBoolean": bool(view.get("pregnant"))},
        {"url": EXT + "breastfeeding", "valueBoolean": bool(view.get("breastfeeding"))},
        {"url": EXT + "immunocompromised", "valueBoolean": bool(view.get("immunocompromised"))},
        {"url": EXT + "previous-mpox", "valueBoolean": bool(view.get("previous_mpox"))},
        {"url": EXT + "smallpox-vaccinated", "valueBoolean": bool(view.get("smallpox_vaccinated"))},
        {"url": EXT + "doses-elsewhere", "valueInteger": int(view.get("doses_elsewhere") or 0)},
        {"url": EXT + "last-dose-elsewhere", "valueDate": view.get("last_dose_elsewhere_on")},
        _rule(S6)]
    return _prune(resource)  # type: ignore[no-any-return]


#: A case's verification status, by whether it was confirmed and whether it was discarded (§1.1).
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def verification_status(view: Mapping[str, Any]) -> str:
    if view["state"] == "discarded":
        return "refuted"
    return "confirmed" if view.get("confirmed_at") else "unconfirmed"


def clinical_status(view: Mapping[str, Any]) -> str:
    if view["state"] in ("healed", "closed"):
        return "resolved"
    return "inactive" if view["state"] == "discarded" else "active"


def _unit(view: Mapping[str, Any], units: Mapping[str, str]) -> dict[str, Any]:
    return {"reference": f"Organization/{view['unit']}", "display": units.get(str(view["unit"]))}


def condition(view: Mapping[str, Any], units: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A case (``object_view``) as a Condition."""
    units = units or {}
    verified = verification_status(view)
    resource = {
        "resourceType": "Condition", "id": view["id"],
        "extension": [
            _rule(S1_1),
            {"url": EXT + "state", "valueCode": view["state"]},
            {"url": EXT + "pcr-on", "valueDate": view.get("pcr_on")},
            {"url": EXT + "confirmed-at", "valueDateTime": view.get("confirmed_at")},
            {"url": EXT + "clade", "valueCode": view.get("clade")},
            *({"url": EXT + "criterion", "valueCode": c} for c in view.get("criteria") or ()),
            {"url": EXT + "isolation", "valueCode": view.get("isolation_mode")},
            {"url": EXT + "phone-notified-at", "valueDateTime": view.get("phone_notified_at")},
            {"url": EXT + "written-notified-at", "valueDateTime": view.get("written_notified_at")},
            {"url": EXT + "unit", "valueReference": _unit(view, units)},
        ],
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": clinical_status(view)}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": verified}]},
        "code": MPOX,
        "subject": reference(view["person"]),
        "onsetDateTime": view.get("onset"),
        "abatementDateTime": view.get("healed_on") if view["state"] in ("healed", "closed") else None,
        "recordedDate": view.get("created_at"),
        "evidence": [{"code": [_code("symptom", s)]} for s in view.get("symptoms") or ()],
        "note": [{"text": f"{S1_1}: " + (f"confirmed by PCR on {view['pcr_on']}"
                                          if verified == "confirmed" and view.get("pcr_on") else verified)},
                 *([{"text": f"clade {view['clade']} (SST-mpox-7.1 §1.2, §2.4)"}] if view.get("clade") else ()),
                 *([{"text": f"died on {view['died_on']}"}] if view.get("died_on") else ())],
    }
    return _prune(resource)  # type: ignore[no-any-return]


def observation(view: Mapping[str, Any], units: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A contact (``object_view``) as an Observation: the contact's person's exposure to the case (§5.5)."""
    units = units or {}
    resource = {
        "resourceType": "Observation", "id": view["id"],
        "extension": [_rule(S5_5), {"url": EXT + "state", "valueCode": view["state"]},
                      {"url": EXT + "unit", "valueReference": _unit(view, units)},
                      {"url": EXT + "informed-at", "valueDateTime": view.get("informed_at")}],
        "status": "final" if view["state"] in ("released", "symptomatic") else "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "social-history"}]}],
        "code": _code("observation", "mpox-exposure", "Close contact of an mpox case (SST-mpox-7.1 §5.5)"),
        "subject": reference(view["person"]),
        "focus": [reference(view["case"])] if view.get("case") else [],
        "effectivePeriod": {"start": view.get("exposed_on"), "end": view.get("last_exposure_on")},
        "issued": view.get("updated_at"),
        "valueCodeableConcept": _code("exposure-kind", str(view.get("exposure_kind"))),
        "interpretation": [_code("risk", str(view.get("risk")), f"{view.get('risk')} risk (SST-mpox-7.1 §6.2)")],
        "component": [
            {"code": _code("observation", "pep-window"), "valueCodeableConcept": _code("pep-window",
                                                                                       str(view.get("pep_window")))},
            {"code": _code("observation", "symptoms-onset"), "valueDateTime": view.get("symptoms_onset")},
        ],
    }
    return _prune(resource)  # type: ignore[no-any-return]


def _doses(view: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(the person's dose number, date) of each dose this course gave: the course's dose 1 is the person's dose 1,
    unless a dose elsewhere came first (§6.3): then the course's one dose is stored as, and is, dose 2."""
    found = []
    if view.get("dose1_on"):
        found.append((1, str(view["dose1_on"])))
    if view.get("dose2_on"):
        found.append((2, str(view["dose2_on"])))
    return found


def _indication(view: Mapping[str, Any]) -> dict[str, Any]:
    if view.get("indication") == "pep":
        return _code("indication", "pep", "post-exposure prophylaxis (SST-mpox-7.1 §6.2)")
    return _code("indication", "prep", "pre-exposure prophylaxis (SST-mpox-7.1 §6.1)")


def immunizations(view: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each dose a course (``object_view``) gave, as an Immunization."""
    series = 2 if view.get("doses_planned") == 2 or view.get("prior_doses") else 1
    return [_prune({
        "resourceType": "Immunization", "id": f"{view['id']}-dose-{number}",
        "extension": [_rule(S6_4 if number == 2 else S6), {"url": EXT + "course",
                                                          "valueReference": reference(view["id"])}],
        "status": "completed",
        "vaccineCode": IMVANEX,
        "patient": reference(view["person"]),
        "occurrenceDateTime": on,
        "primarySource": True,
        "reasonCode": [_indication(view)],
        "protocolApplied": [{"series": "Imvanex (MVA-BN), SST-mpox-7.1 §6.4", "doseNumberPositiveInt": number,
                             "seriesDosesPositiveInt": max(series, number)}],
    }) for number, on in _doses(view)]


def immunization(view: Mapping[str, Any], number: int) -> dict[str, Any]:
    """The course's Immunization of the person's dose ``number``; NotFound when the course gave no such dose."""
    for found in immunizations(view):
        if found["protocolApplied"][0]["doseNumberPositiveInt"] == number:
            return found
    raise NotFound(f"{view['id']}-dose-{number}", "Immunization",
                   hint=f"{view['id']} has given no dose {number}: `mpoxflow fhir show {view['id']}` shows its plan")


RECOMMENDATION_STATUS = "http://terminology.hl7.org/CodeSystem/immunization-recommendation-status"
#: LOINC's dates of a recommendation: the earliest, the recommended (due) and the latest date to give the dose.
EARLIEST, DUE, LATEST = "30981-5", "30980-7", "59777-3"


def _criterion(code: str, display: str, value: str) -> dict[str, Any]:
    return {"code": {"coding": [{"system": LOINC, "code": code, "display": display}]}, "value": value}


def _planned(view: Mapping[str, Any]) -> list[int]:
    """The person's dose numbers this course plans (§6.3: no more than 2 over the person)."""
    first = int(view.get("prior_doses") or 0) + 1
    last = max(first, int(view.get("doses_planned") or 1)) if not view.get("prior_doses") else first
    return [n for n in range(first, last + 1) if n <= 2]


def immunization_recommendation(view: Mapping[str, Any]) -> dict[str, Any]:
    """A course (``object_view``) as an ImmunizationRecommendation: one recommendation per planned dose."""
    given = dict(_doses(view))
    ended = view["state"] in ("declined", "cancelled")
    missed = {t["name"] for t in view.get("timers") or () if t["status"] == "missed"}
    recommendations = []
    for number in _planned(view):
        criteria: list[dict[str, Any]] = []
        rule = S6
        if number == 1 and view.get("indication") == "pep" and view.get("exposure_on"):
            exposed = date.fromisoformat(str(view["exposure_on"]))
            rule = S6_2  # from the exposure: best within 4 days, at most 14
            criteria = [_criterion(EARLIEST, "Earliest date to give", exposed.isoformat()),
                        _criterion(DUE, "Date vaccine due", _last_day(window_closes(exposed, 4))),
                        _criterion(LATEST, "Latest date to give immunization", _last_day(window_closes(exposed, 14)))]
        elif number == 2 and view.get("dose1_on"):
            rule = S6_4  # dose 2 from dose 1 + 28 days, no upper limit
            from_day = (date.fromisoformat(str(view["dose1_on"])) + timedelta(days=28)).isoformat()
            criteria = [_criterion(EARLIEST, "Earliest date to give", from_day),
                        _criterion(DUE, "Date vaccine due", from_day)]
        if number in given:
            status: dict[str, Any] = {"coding": [{"system": RECOMMENDATION_STATUS, "code": "complete"}]}
        elif ended:
            status = {"text": view["state"]}
        else:
            late = "overdue" if ({"dose2_due"} if number == 2 else {"pep_window_closes"}) & missed else "due"
            status = {"coding": [{"system": RECOMMENDATION_STATUS, "code": late}]}
        recommendations.append({
            "extension": [_rule(rule)],
            "vaccineCode": [IMVANEX], "doseNumberPositiveInt": number, "forecastStatus": status,
            "forecastReason": [{"text": view["ended_because"]}] if ended and view.get("ended_because") else [],
            "dateCriterion": criteria, "series": "Imvanex (MVA-BN), SST-mpox-7.1 §6.4",
            "description": ("PEP: best within 4 days of the exposure, at most 14 (SST-mpox-7.1 §6.2)"
                            if rule == S6_2 else "dose 2 from 28 days after dose 1 (SST-mpox-7.1 §6.4)"
                            if number == 2 else view.get("plan_reason")),
            "supportingImmunization": [{"reference": f"Immunization/{view['id']}-dose-{number}"}]
            if number in given else [],
            "supportingPatientInformation": [reference(view["contact"])] if view.get("contact") else [],
        })
    resource = {
        "resourceType": "ImmunizationRecommendation", "id": view["id"],
        "extension": [_rule(view.get("plan_rule") or S6), {"url": EXT + "state", "valueCode": view["state"]},
                      {"url": EXT + "indication", "valueCode": view.get("indication")}],
        "patient": reference(view["person"]), "date": view.get("created_at"),
        "recommendation": recommendations,
    }
    return _prune(resource)  # type: ignore[no-any-return]


def task_status(timer: Mapping[str, Any]) -> str:
    """A timer's status as a Task's: a missed deadline is ``failed`` (and stays so once resolved: the resolution
    is the status reason); done is ``completed``; a fired automatic timer ``completed``; cancelled, skipped and a
    task closed before its deadline ``cancelled``; a parked timer ``failed``; else ``requested``."""
    if timer["status"] in ("missed", "failed"):
        return "failed"
    if timer.get("satisfied_at") or timer["status"] == "fired":
        return "completed"
    if timer["status"] in ("cancelled", "skipped") or timer.get("outcome"):
        return "cancelled"
    return "requested"


def task(timer: Mapping[str, Any], owner: Mapping[str, Any], units: Mapping[str, str] | None = None,
         users: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A timer (``timer_view``) as a Task, for its object ``owner`` (``object_view``: its unit and assignee)."""
    units, users = units or {}, users or {}
    assignee = owner.get("assignee")
    resolution = (f"{timer['outcome']}: {timer.get('resolution') or ''}".rstrip(": ")
                  if timer.get("outcome") else None)
    resource = {
        "resourceType": "Task", "id": timer["id"],
        "extension": [_rule(timer["rule"]), {"url": EXT + "timer-status", "valueCode": timer["status"]},
                      {"url": EXT + "assignee", "valueReference": {"reference": f"Practitioner/{assignee}",
                                                                   "display": users.get(str(assignee))}}
                      if assignee else None],
        "status": task_status(timer),
        "statusReason": {"text": resolution} if resolution else None,
        "intent": "order",
        "code": _code("timer", timer["name"]),
        "description": timer.get("task") or timer.get("note"),
        "focus": reference(str(timer["object"])),
        "for": reference(owner["person"]) if owner.get("person") else None,
        "executionPeriod": {"end": timer["due_at"]},
        "lastModified": timer.get("resolved_at") or timer.get("satisfied_at"),
        "owner": _unit(owner, units),
    }
    return _prune(resource)  # type: ignore[no-any-return]


AUDIT_ACTIONS = {"open": "C", "add": "C", "offer": "C", "break_glass": "R"}


def audit_event(entry: Mapping[str, Any], units: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An audit entry (``audit_view``) as an AuditEvent: internal ids only, as the log holds them."""
    units = units or {}
    refused = entry["trigger"] == "refused"
    details = [("seq", str(entry["seq"])), ("pos", str(entry["pos"])), ("hash", entry.get("hash")),
               ("prev_seq", None if entry.get("prev_seq") is None else str(entry["prev_seq"])),
               ("from", entry.get("from")), ("to", entry.get("to")),
               ("data", json.dumps(entry["data"], ensure_ascii=False, sort_keys=True) if entry.get("data") else None),
               ("changes", json.dumps(entry["changes"], ensure_ascii=False, sort_keys=True)
                if entry.get("changes") else None),
               ("timer", entry.get("timer"))]
    unit = entry.get("unit")
    resource = {
        "resourceType": "AuditEvent", "id": f"audit-{entry['seq']}",
        "extension": [_rule(entry["rule"]) if entry.get("rule") else None,
                      {"url": EXT + "acting-unit", "valueReference": {"reference": f"Organization/{unit}",
                                                                      "display": units.get(str(unit))}}
                      if unit else None],
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110",
                 "display": "Patient Record"},
        "subtype": [{"system": CODES + "trigger", "code": entry["trigger"]}],
        "action": "E" if refused else AUDIT_ACTIONS.get(str(entry["trigger"]), "U"),
        "period": {"start": entry["at"], "end": entry["at"]},
        "recorded": entry["recorded_at"],
        "outcome": "4" if refused else "0",
        "outcomeDesc": entry.get("reason") if refused else None,
        "agent": [{"type": {"text": entry["role"]}, "who": {"identifier": {"system": CODES + "user",
                                                                          "value": entry["actor"]},
                                                           "display": entry["actor"]},
                   "requestor": not str(entry["actor"]).startswith("timer:"),
                   "purposeOfUse": [{"text": entry["reason"]}] if entry.get("reason") and not refused else []}],
        "source": {"observer": {"display": "mpoxflow"}},
        "entity": [{"what": reference(str(entry["object"])),
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                             "display": "System Object"},
                    "detail": [{"type": name, "valueString": value} for name, value in details if value]}],
    }
    return _prune(resource)  # type: ignore[no-any-return]


def capability_statement(now: str) -> dict[str, Any]:
    """What this server answers (``GET /fhir/metadata``)."""
    read = [{"code": "read"}]
    resources: list[dict[str, Any]] = [
        {"type": "Patient", "interaction": read,
         "operation": [{"name": "everything",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]},
        *({"type": t, "interaction": read} for t in ("Condition", "Observation", "Immunization",
                                                     "ImmunizationRecommendation", "Task", "Bundle")),
        {"type": "AuditEvent", "interaction": [{"code": "search-type"}],
         "searchParam": [{"name": "entity", "type": "reference",
                          "documentation": "an engine id (case-1) or a reference (Condition/case-1)"}]},
    ]
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": now, "kind": "instance",
        "software": {"name": "mpoxflow"}, "implementation": {"description": "mpoxflow: mpox cases, contacts and "
                                                                            "vaccinations by SST-mpox-7.1, read only"},
        "fhirVersion": FHIR_VERSION, "format": [JSON_TYPE],
        "rest": [{"mode": "server",
                  "documentation": "Log in as for the API: a bearer token (Authorization: Bearer mpx_...) or the "
                                   "session cookie. Every read is the user's: only the objects of their units.",
                  "resource": resources,
                  "operation": [{"name": "export",
                                 "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]}],
    }


def entry_of(resource: Mapping[str, Any], base: str) -> dict[str, Any]:
    return {"fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}", "resource": dict(resource)}


def searchset(resources: Sequence[Mapping[str, Any]], base: str, now: str) -> dict[str, Any]:
    """A searchset Bundle of ``resources`` (every one a match)."""
    return {"resourceType": "Bundle", "type": "searchset", "timestamp": now, "total": len(resources),
            "entry": [{**entry_of(r, base), "search": {"mode": "match"}} for r in resources]}


#: The issue type of each error, by its HTTP status.
ISSUE_CODES = {401: "login", 403: "forbidden", 404: "not-found", 409: "business-rule", 422: "invalid",
               429: "throttled"}


def operation_outcome(error: MpoxflowError) -> dict[str, Any]:
    """An error as an OperationOutcome (its message, rule and key)."""
    status = error.http_status
    issue: dict[str, Any] = {"severity": "error", "code": ISSUE_CODES.get(status, "exception"),
                             "details": {"coding": [{"system": CODES + "error", "code": error.key}],
                                         "text": error.message},
                             "diagnostics": error.message}
    if error.rule:
        issue["expression"] = []
        issue["details"]["coding"].append({"system": CODES + "rule", "code": error.rule})
    return _prune({"resourceType": "OperationOutcome", "issue": [issue]})  # type: ignore[no-any-return]


# ---- reading: the viewer's resources --------------------------------------------------------------------------


class FhirReader:
    """The viewer's FHIR resources over an engine that reads as them (``Engine.viewing_as``, or a request's
    engine): every read goes through ``Engine.show``, ``list``, ``related`` and ``audit``, so access by unit is
    theirs (``OutsideUnits`` for an object outside the viewer's units). ``role``: the viewer's role (whether they
    get the CPR identifier; ``may_see_identity``); None with no viewer (everything, as the engine's reads).
    ``base``: the URL the Bundles' ``fullUrl`` start from."""

    def __init__(self, engine: Engine, role: str | None, base: str = "urn:mpoxflow") -> None:
        self.engine = engine
        self.identity = may_see_identity(role) if engine.runtime.viewer is not None else True
        self.base = base.rstrip("/")
        self._units: dict[str, str] | None = None

    @property
    def units(self) -> dict[str, str]:
        if self._units is None:
            self._units = {str(u["id"]): str(u["name"]) for u in self.engine.list_units()}
        return self._units

    def now(self) -> str:
        from engine.views import instant

        return str(instant(self.engine.clock.now()))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """One resource by type and id; NotFound for a type we do not serve or an id it has not. A Patient (with
        its identifier) and a document Bundle are reads of personal data (``engine.reads``: ``fhir``)."""
        with self.engine.reads.showing_as("fhir"):
            return self._read(resource_type, resource_id)

    def _read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        kind = KIND_OF.get(resource_type)
        if kind is None or resource_type == "AuditEvent":
            raise NotFound(shown(f"{resource_type}/{resource_id}"), resource_type,
                           hint="`GET /fhir/metadata` lists what is served")
        if resource_type == "Immunization":
            dose = _DOSE_ID.fullmatch(resource_id)
            if dose is None or int(dose[1]) > MAX_ID:
                raise NotFound(shown(resource_id), "Immunization",
                               hint="an Immunization is a dose of a course: course-N-dose-1 or course-N-dose-2")
            return immunization(self.engine.show(f"course-{dose[1]}"), int(dose[2]))
        if resource_type == "Bundle":  # a written notification (§3.1), as it was made
            document = self.engine.document(resource_id)
            if document.get("purged"):  # issue 19: deleted with its case's person; its id and hash are kept
                raise NotFound(shown(resource_id), "Bundle", hint=(
                    f"its content was deleted on {document['purged']['purged_at']} under the retention rule "
                    f"{document['purged']['rule']}; `/documents/{document['id']}` shows what is kept"))
            bundle = document["bundle"]
            return bundle if self.identity else without_identity(bundle)
        _check_id(resource_id, kind, resource_type)
        view = self.engine.show(resource_id)
        if resource_type == "Task":
            return task(view, self.engine.show(str(view["object"])), self.units, self._user_names())
        return self.resource(kind, view)

    def resource(self, kind: str, view: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "person":
            return patient(view, identity=self.identity)
        if kind == "case":
            return condition(view, self.units)
        if kind == "contact":
            return observation(view, self.units)
        return immunization_recommendation(view)

    def _user_names(self) -> dict[str, str]:
        return {str(u["id"]): str(u["name"]) for u in self.engine.users()}

    def of_object(self, kind: str, view: Mapping[str, Any], users: Mapping[str, str]) -> list[dict[str, Any]]:
        """An object's resource, its doses (a course's) and its timers' Tasks."""
        found = [self.resource(kind, view)]
        if kind == "course":
            found += immunizations(view)
        found += [task(t, view, self.units, users) for t in view.get("timers") or ()]
        return found

    def everything(self, person_id: str) -> dict[str, Any]:
        """``Patient/{id}/$everything``: the Patient; their cases (Conditions), their own exposures as contacts
        and the contacts of their cases (Observations; the other persons by reference only), their courses
        (ImmunizationRecommendations) and doses (Immunizations), and every Task of all of these: those the viewer
        may read (their units'). A read of the patient's personal data (``fhir``)."""
        with self.engine.reads.showing_as("fhir"):
            return self._everything(person_id)

    def _everything(self, person_id: str) -> dict[str, Any]:
        _check_id(person_id, "person", "Patient")
        person = self.engine.show(person_id)
        users = self._user_names()
        related = self.engine.related(person_id)
        found = [patient(person, identity=self.identity)]
        seen: set[str] = set()
        for kind in ("case", "contact", "course"):
            for view in related.get(kind, ()):
                found += self.of_object(kind, view, users)
                seen.add(view["id"])
                if kind == "case":  # the case's contacts: exposures to this patient
                    for contact in self.engine.related(view["id"]).get("contact", ()):
                        if contact["id"] not in seen:
                            seen.add(contact["id"])
                            found += self.of_object("contact", contact, users)
        return searchset(found, self.base, self.now())

    def audit_events(self, entity: str | None) -> dict[str, Any]:
        """``AuditEvent?entity=ID``: the object's audit entries (an id, ``case-1``, or a reference,
        ``Condition/case-1``); UsageError without one, OutsideUnits for an object outside the viewer's units."""
        if not entity:
            raise UsageError("give the object whose audit entries to search with entity=ID (case-1, or "
                             "Condition/case-1)")
        object_id = entity.rsplit("/", 1)[-1]
        kind = object_id.rsplit("-", 1)[0]
        if kind in ("case", "contact", "course", "person", "timer"):
            self.engine.check_readable(object_id)  # NotFound, OutsideUnits (the entries name no one)
        entries = self.engine.audit(entity=object_id)
        return searchset([audit_event(e, self.units) for e in entries], self.base, self.now())

    def export(self, types: Iterable[str] = EXPORT_TYPES) -> Iterator[dict[str, Any]]:
        """Every resource the viewer may read, of ``types`` (``EXPORT_TYPES``), type by type, oldest first. Its
        Patients are reads of personal data (``fhir``), recorded before the first is given."""
        wanted = check_types(types)
        with self.engine.reads.showing_as("fhir"):
            persons = self.engine.list("person") if "Patient" in wanted else []
        for person in persons:
            yield patient(person, identity=self.identity)
        yield from self._export(wanted)

    def _export(self, wanted: set[str]) -> Iterator[dict[str, Any]]:
        users = self._user_names() if "Task" in wanted else {}
        for kind, types_of in (("case", ("Condition",)), ("contact", ("Observation",)),
                               ("course", ("ImmunizationRecommendation", "Immunization"))):
            if not wanted & {*types_of, "Task"}:
                continue
            for view in self.engine.list(kind):
                if types_of[0] in wanted:
                    yield self.resource(kind, view)
                if "Immunization" in wanted and kind == "course":
                    yield from immunizations(view)
                if "Task" in wanted:
                    yield from (task(t, view, self.units, users) for t in view.get("timers") or ())
        if "AuditEvent" in wanted:
            for entry in self.engine.audit():
                yield audit_event(entry, self.units)


def without_identity(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """A Bundle for a reader who may not see a person's reference: its Patients without identifier and birth
    date (what the Bundle's hash covers is the stored document, unchanged)."""
    copied: dict[str, Any] = json.loads(json.dumps(bundle))
    for entry in copied.get("entry", ()):
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource.pop("identifier", None)
            resource.pop("birthDate", None)
        if resource["resourceType"] == "Composition":
            resource.pop("extension", None)
            for section in resource.get("section", ()):
                if section.get("title") == "Patient":
                    section.pop("text", None)
    return copied


def viewer_role(engine: Engine) -> str | None:
    """The role of the user the engine reads as (None: no viewer, or a name that is no user)."""
    viewer = engine.runtime.viewer
    if viewer is None:
        return None
    return next((str(u["role"]) for u in engine.users() if u["name"] == viewer),
                "timer" if viewer.startswith("timer:") else None)


def resource_address(text: str) -> tuple[str, str]:
    """(resource type, id) of ``mpoxflow fhir show ID``: ``Type/id``, or an engine id (``case-1``: a Condition,
    ``course-1-dose-2``: an Immunization). NotFound for anything else."""
    if "/" in text:
        resource_type, _, resource_id = text.partition("/")
        return resource_type, resource_id
    if _DOSE_ID.fullmatch(text):
        return "Immunization", text
    kind = text.rsplit("-", 1)[0]
    if kind not in RESOURCE_OF:
        raise NotFound(shown(text), "resource", hint="give an id: person-N, case-N, contact-N, course-N, "
                       "course-N-dose-1, timer-N, document-N (or Type/id)")
    return RESOURCE_OF[kind], text


def check_types(types: Iterable[str]) -> set[str]:
    """The resource types asked for (``_type``, ``--type``); UsageError naming the unknown ones."""
    wanted = {t.strip() for t in types if t.strip()}
    unknown = sorted(wanted - set(EXPORT_TYPES))
    if unknown:
        raise UsageError(f"⟦type⟧: {', '.join(shown(u) for u in unknown)} is not a resource type of the export: use "
                         f"some of {', '.join(EXPORT_TYPES)}")
    return wanted or set(EXPORT_TYPES)


def _check_id(resource_id: str, kind: str, resource_type: str) -> None:
    prefix, _, number = resource_id.partition("-")
    if prefix != kind or not (number.isascii() and number.isdigit()) or len(number) > 10 or int(number) > MAX_ID:
        raise NotFound(shown(resource_id), resource_type, hint=f"a {resource_type}'s id is {kind}-N")
