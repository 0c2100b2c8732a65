"""FHIR R4 (issue 18, part 2): every resource validates with ``fhir.resources``' R4B models and round-trips through
them unchanged, and says what the engine's object says (dates, states, dose numbers, due instants in Danish time,
the owner unit); ``Patient/$everything``; the CPR identifier only to the roles that see a person's reference on the
pages; errors as OperationOutcome; the NDJSON export over HTTP and from the command line.

Round trip: ``Model.model_validate(served)`` then ``model_dump_json(by_alias=True, exclude_none=True)`` gives back
exactly what was served (the builders leave out every empty value, as FHIR wants, so nothing is lost or added).
"""

from __future__ import annotations

import importlib
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine import accounts
from engine.bootstrap import open_engine
from engine.core import Engine
from engine.fhir import CPR_SYSTEM, EXPORT_TYPES, FhirReader
from entry.cli import app
from tests.conftest import PASSWORD, START
from tests.helpers import person
from tests.test_courses import CONSENT, contact, dose, pep, prep

STAFF, ADMIN, AUDITOR = "staff:test", "admin:test", "auditor:test"
CPR, CPR_Q, CPR_R = "010180-1234", "0202801234", "0303801234"


def model_of(resource: dict[str, Any]) -> Any:
    kind = resource["resourceType"]
    return getattr(importlib.import_module(f"fhir.resources.R4B.{kind.lower()}"), kind)


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` validated by its R4B model, and what the model gives back equal to it."""
    model = model_of(resource).model_validate(resource)
    assert json.loads(model.model_dump_json(by_alias=True, exclude_none=True)) == resource
    return resource


def ext(resource: dict[str, Any], name: str) -> Any:
    """The value of our extension ``name`` (None when left out)."""
    for e in resource.get("extension", ()):
        if e["url"].endswith(":" + name):
            return next(v for k, v in e.items() if k.startswith("value"))
    return None


class World:
    """P (CPR 010180-1234, born 1980-01-01) with a PrEP course (dose 1 on 2025-03-03) and then a confirmed case
    with two contacts, Q (sexual, a PEP course with dose 1 on 2025-03-03) and R (household)."""

    def __init__(self, engine: Engine) -> None:
        self.p = person(engine, CPR, born=date(1980, 1, 1))
        self.prep = prep(engine, self.p)["id"]
        dose(engine, self.prep, "2025-03-03")
        self.case = engine.open("case", "open", person=self.p, actor=STAFF, data={
            "onset": date(2025, 3, 1), "symptoms": ["rash", "fever"], "criteria": ["msm"]})["id"]
        engine.apply(self.case, "confirm", data={"pcr_on": date(2025, 3, 3)}, actor=STAFF)
        engine.apply(self.case, "consent", data={"tracing": True}, actor=STAFF)
        self.q, self.r = person(engine, CPR_Q), person(engine, CPR_R)
        self.q_contact = contact(engine, self.case, self.q, "2025-03-02", "sexual")
        self.r_contact = contact(engine, self.case, self.r, "2025-03-01", "household")
        self.pep = pep(engine, self.q, self.q_contact)["id"]
        dose(engine, self.pep, "2025-03-03", consent=CONSENT)


@pytest.fixture
def world(engine: Engine) -> World:
    return World(engine)


def reader(engine: Engine, as_user: str = STAFF, role: str = "staff") -> FhirReader:
    return FhirReader(engine.viewing_as(as_user), role)


# ---- every resource: valid, round-trips, and says what the object says -----------------------------------------


def test_every_exported_resource_validates_and_round_trips(engine, world):
    exported = list(reader(engine).export())
    assert {r["resourceType"] for r in exported} == set(EXPORT_TYPES)
    for resource in exported:
        valid(resource)
    ids = [(r["resourceType"], r["id"]) for r in exported]
    assert len(ids) == len(set(ids))  # each once


def test_patient_carries_the_cpr_identifier_and_birth_date(engine, world):
    patient = valid(reader(engine).read("Patient", world.p))
    assert patient["identifier"] == [{"use": "official", "system": CPR_SYSTEM, "value": "0101801234"}]
    assert patient["birthDate"] == "1980-01-01"
    other = valid(reader(engine).read("Patient", person(engine, "REF-9")))
    assert other["identifier"] == [{"use": "usual", "type": {"text": "mpoxflow reference"}, "value": "REF-9"}]


def test_condition_follows_the_case_from_suspected_to_confirmed_to_refuted(engine, world):
    view = reader(engine)
    case = valid(view.read("Condition", world.case))
    assert case["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert case["clinicalStatus"]["coding"][0]["code"] == "active"
    assert case["code"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "414015000", "display": "Mpox"}
    assert case["subject"] == {"reference": f"Patient/{world.p}"}
    assert (case["onsetDateTime"], ext(case, "pcr-on"), ext(case, "confirmed-at")) == (
        "2025-03-01", "2025-03-03", "2025-03-03T08:00:00+01:00")
    assert [e["code"][0]["text"] for e in case["evidence"]] == ["rash", "fever"]
    assert ext(case, "rule") == "SST-mpox-7.1 §1.1" and ext(case, "clade") is None
    engine.apply(world.case, "clade", data={"clade": "Ib"}, actor=STAFF)
    assert ext(valid(view.read("Condition", world.case)), "clade") == "Ib"

    other = person(engine, "REF-2")
    suspected = engine.open("case", "open", person=other, actor=STAFF, data={
        "onset": date(2025, 3, 2), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    shown = valid(view.read("Condition", suspected))
    assert shown["verificationStatus"]["coding"][0]["code"] == "unconfirmed"
    assert ext(shown, "pcr-on") is None
    engine.apply(suspected, "discard", data={}, actor=STAFF)
    refuted = valid(view.read("Condition", suspected))
    assert (refuted["verificationStatus"]["coding"][0]["code"], refuted["clinicalStatus"]["coding"][0]["code"]) == (
        "refuted", "inactive")


def test_a_healed_case_is_resolved_on_its_healed_day(engine, world):
    engine.apply(world.case, "heal", data={"on": date(2025, 3, 3)}, actor=STAFF)
    case = valid(reader(engine).read("Condition", world.case))
    assert (case["clinicalStatus"]["coding"][0]["code"], case["abatementDateTime"]) == ("resolved", "2025-03-03")


def test_each_dose_is_an_immunization_with_its_dose_number(engine, world):
    view = reader(engine)
    given = valid(view.read("Immunization", f"{world.pep}-dose-1"))
    assert given["status"] == "completed" and given["occurrenceDateTime"] == "2025-03-03"
    assert given["protocolApplied"] == [{"series": "Imvanex (MVA-BN), SST-mpox-7.1 §6.4",
                                         "doseNumberPositiveInt": 1, "seriesDosesPositiveInt": 2}]
    assert given["patient"] == {"reference": f"Patient/{world.q}"}
    assert given["vaccineCode"]["text"] == "Imvanex (MVA-BN)"
    from workflows.errors import NotFound

    with pytest.raises(NotFound, match="has given no dose 2"):
        view.read("Immunization", f"{world.pep}-dose-2")
    engine.clock.set(START + timedelta(days=28))
    dose(engine, world.pep, "2025-03-31")
    second = valid(view.read("Immunization", f"{world.pep}-dose-2"))
    assert (second["occurrenceDateTime"], second["protocolApplied"][0]["doseNumberPositiveInt"]) == ("2025-03-31", 2)


def test_a_pep_recommendation_holds_the_windows_from_the_exposure_and_dose_2_from_dose_1(engine, world):
    other = person(engine, "REF-3")
    offered = pep(engine, other, contact(engine, world.case, other, "2025-03-02", "sexual"))["id"]
    recommendation = valid(reader(engine).read("ImmunizationRecommendation", offered))
    dose1, dose2 = recommendation["recommendation"]
    criteria = {c["code"]["coding"][0]["code"]: c["value"] for c in dose1["dateCriterion"]}
    # §6.2: from the exposure on 2025-03-02, best by day 4 (2025-03-06), at most day 14 (2025-03-16)
    assert criteria == {"30981-5": "2025-03-02", "30980-7": "2025-03-06", "59777-3": "2025-03-16"}
    assert dose1["forecastStatus"]["coding"][0]["code"] == "due" and ext(dose1, "rule") == "SST-mpox-7.1 §6.2"
    assert dose2["doseNumberPositiveInt"] == 2 and "dateCriterion" not in dose2  # no dose 1 yet

    given = valid(reader(engine).read("ImmunizationRecommendation", world.pep))
    dose1, dose2 = given["recommendation"]
    assert dose1["forecastStatus"]["coding"][0]["code"] == "complete"
    assert dose1["supportingImmunization"] == [{"reference": f"Immunization/{world.pep}-dose-1"}]
    # §6.4: dose 2 from dose 1 (2025-03-03) + 28 days
    assert {c["code"]["coding"][0]["code"]: c["value"] for c in dose2["dateCriterion"]} == {
        "30981-5": "2025-03-31", "30980-7": "2025-03-31"}
    assert dose2["forecastStatus"]["coding"][0]["code"] == "due"


def test_a_task_is_the_deadline_with_its_due_instant_in_danish_time_and_its_owner(engine, world):
    view = reader(engine)
    [timer] = [t for t in engine.show(world.case)["timers"] if t["name"] == "written_notification_due"]
    task = valid(view.read("Task", timer["id"]))
    # §3.1: within 24 hours of the confirmation at 08:00 on 2025-03-03
    assert task["executionPeriod"] == {"end": "2025-03-04T08:00:00+01:00"}
    assert (task["status"], task["intent"], task["focus"], task["for"]) == (
        "requested", "order", {"reference": f"Condition/{world.case}"}, {"reference": f"Patient/{world.p}"})
    assert task["owner"] == {"reference": "Organization/unit-1", "display": "Danmark"}
    assert ext(task, "rule") == "SST-mpox-7.1 §3.1"

    engine.clock.set(START + timedelta(hours=25))
    engine.fire_due()
    assert valid(view.read("Task", timer["id"]))["status"] == "failed"  # missed
    engine.apply(world.case, "notify", data={"channel": "written"}, actor=STAFF)
    late = valid(view.read("Task", timer["id"]))
    assert (late["status"], late["statusReason"]["text"].split(":")[0]) == ("failed", "done-late")

    [phone] = [t for t in engine.show(world.case)["timers"] if t["name"] == "phone_notification_due"]
    assert valid(view.read("Task", phone["id"]))["status"] == "failed"
    [sample] = [t for t in engine.show(world.case)["timers"] if t["name"] == "sequencing_sample_due"]
    engine.apply(world.case, "sample_sent", data={"on": date(2025, 3, 4)}, actor=STAFF)
    assert valid(view.read("Task", sample["id"]))["status"] == "completed"


def test_a_task_is_owned_by_the_unit_its_object_was_transferred_to_and_names_the_assignee(engine, world):
    unit = engine.add_unit("Region Hovedstaden", parent="Danmark", actor=ADMIN)["id"]
    engine.add_user("hov:nurse", "staff", actor=ADMIN, units=["Region Hovedstaden"])
    engine.transfer([world.case], unit="Region Hovedstaden", user="hov:nurse", actor=ADMIN, reason="regional")
    [timer] = [t for t in engine.show(world.case)["timers"] if t["name"] == "written_notification_due"]
    task = valid(reader(engine).read("Task", timer["id"]))
    assert task["owner"] == {"reference": f"Organization/{unit}", "display": "Region Hovedstaden"}
    nurse = next(u["id"] for u in engine.users() if u["name"] == "hov:nurse")
    assert ext(task, "assignee") == {"reference": f"Practitioner/{nurse}", "display": "hov:nurse"}


def test_everything_of_a_person_with_a_case_two_contacts_and_a_course(engine, world):
    bundle = valid(reader(engine).everything(world.p))
    assert (bundle["type"], bundle["total"]) == ("searchset", len(bundle["entry"]))
    found = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]]
    assert found[0] == ("Patient", world.p)
    objects = {f"{t}/{i}" for t, i in found if t != "Task"}
    assert objects == {f"Patient/{world.p}", f"Condition/{world.case}", f"Observation/{world.q_contact}",
                       f"Observation/{world.r_contact}", f"ImmunizationRecommendation/{world.prep}",
                       f"Immunization/{world.prep}-dose-1"}  # Q's PEP course is Q's, not P's
    tasks = {i for t, i in found if t == "Task"}
    expected = {t["id"] for o in (world.case, world.q_contact, world.r_contact, world.prep)
                for t in engine.show(o)["timers"]}
    assert tasks == expected
    observation = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == world.q_contact)
    assert observation["subject"] == {"reference": f"Patient/{world.q}"}  # Q by reference only
    assert observation["focus"] == [{"reference": f"Condition/{world.case}"}]
    assert observation["effectivePeriod"] == {"start": "2025-03-02", "end": "2025-03-02"}
    text = json.dumps(bundle)
    assert CPR_Q not in text and CPR_R not in text and "0101801234" in text


@pytest.mark.parametrize(("as_user", "role", "shown"), [
    (STAFF, "staff", True), (ADMIN, "admin", True), (AUDITOR, "auditor", True), ("timer", "timer", False)])
def test_the_cpr_identifier_goes_only_to_roles_that_see_the_reference(engine, world, as_user, role, shown):
    patient = valid(reader(engine, as_user, role).read("Patient", world.p))
    assert ("identifier" in patient, "birthDate" in patient) == (shown, shown)
    everything = json.dumps(reader(engine, as_user, role).everything(world.p))
    exported = json.dumps(list(reader(engine, as_user, role).export()))
    for text in (everything, exported):
        assert ("0101801234" in text, "1980-01-01" in text) == (shown, shown)


# ---- over HTTP --------------------------------------------------------------------------------------------------


@pytest.fixture
def http_world(web_app: Any, cli_db: str) -> World:
    engine = open_engine(cli_db)
    try:
        made = World(engine)
        hashed = accounts.password_hash.hash(PASSWORD)
        engine.add_unit("Region Syddanmark", parent="Danmark", actor=ADMIN)
        engine.add_user("syd:nurse", "staff", actor=ADMIN, password_hash=hashed, units=["Region Syddanmark"])
    finally:
        engine.db.dispose()
    return made


def fhir(client: Any, path: str, status: int = 200) -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return valid(response.json())


def test_http_reads_each_resource_as_fhir_json(client_for, http_world):
    staff = client_for(STAFF)
    assert fhir(staff, "/fhir/metadata")["fhirVersion"] == "4.0.1"
    assert fhir(staff, f"/fhir/Patient/{http_world.p}")["identifier"][0]["value"] == "0101801234"
    assert fhir(staff, f"/fhir/Condition/{http_world.case}")["onsetDateTime"] == "2025-03-01"
    assert fhir(staff, f"/fhir/Observation/{http_world.q_contact}")["focus"][0]["reference"].endswith(
        http_world.case)
    assert fhir(staff, f"/fhir/Immunization/{http_world.pep}-dose-1")["occurrenceDateTime"] == "2025-03-03"
    assert fhir(staff, f"/fhir/ImmunizationRecommendation/{http_world.pep}")["patient"]["reference"].endswith(
        http_world.q)
    timer = client_for(STAFF).get(f"/api/show/{http_world.case}").json()["timers"][0]["id"]
    assert fhir(staff, f"/fhir/Task/{timer}")["id"] == timer
    everything = fhir(staff, f"/fhir/Patient/{http_world.p}/$everything")
    assert everything["entry"][0]["fullUrl"] == f"http://testserver/fhir/Patient/{http_world.p}"


def test_http_audit_events_of_an_object_hold_internal_ids_only(client_for, http_world):
    staff = client_for(STAFF)
    bundle = fhir(staff, f"/fhir/AuditEvent?entity={http_world.case}")
    assert bundle == fhir(staff, f"/fhir/AuditEvent?entity=Condition/{http_world.case}")
    events = [e["resource"] for e in bundle["entry"]]
    entries = staff.get("/api/audit", params={"entity": http_world.case}).json()
    assert [e["subtype"][0]["code"] for e in events] == [e["trigger"] for e in entries] == [
        "open", "confirm", "consent"]
    assert [e["id"] for e in events] == [f"audit-{e['seq']}" for e in entries]
    assert {e["entity"][0]["what"]["reference"] for e in events} == {f"Condition/{http_world.case}"}
    hashes = [next(d["valueString"] for d in e["entity"][0]["detail"] if d["type"] == "hash") for e in events]
    assert hashes == [e["hash"] for e in entries]
    assert ext(events[1], "rule") == "SST-mpox-7.1 §1.1"
    assert "0101801234" not in json.dumps(bundle) and "1980" not in json.dumps(bundle)


def test_http_errors_are_operation_outcomes(client_for, http_world):
    staff, outsider, nobody = client_for(STAFF), client_for("syd:nurse"), client_for()
    missing = fhir(staff, "/fhir/Condition/case-99", 404)
    assert missing["issue"][0]["code"] == "not-found"
    assert fhir(staff, f"/fhir/Condition/{http_world.p}", 404)["issue"][0]["code"] == "not-found"
    assert fhir(staff, "/fhir/Medication/x-1", 404)["issue"][0]["code"] == "not-found"
    refused = fhir(outsider, f"/fhir/Condition/{http_world.case}", 403)
    assert refused["issue"][0]["code"] == "forbidden"
    assert "break-glass" in refused["issue"][0]["diagnostics"]
    assert fhir(outsider, f"/fhir/AuditEvent?entity={http_world.case}", 403)["issue"][0]["code"] == "forbidden"
    response = nobody.get(f"/fhir/Patient/{http_world.p}")
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert valid(response.json())["issue"][0]["code"] == "login"
    assert fhir(staff, "/fhir/AuditEvent", 422)["issue"][0]["code"] == "invalid"
    # the outsider's own view of P: the person (a shared register) without the case and contacts of another unit
    everything = fhir(outsider, f"/fhir/Patient/{http_world.p}/$everything")
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {"Patient"}


def test_http_cpr_identifier_for_the_auditor_follows_the_pages(client_for, http_world):
    auditor = client_for(AUDITOR)
    assert auditor.get(f"/api/show/{http_world.p}").json()["ref"] == CPR  # what the pages show an auditor
    assert fhir(auditor, f"/fhir/Patient/{http_world.p}")["identifier"][0]["system"] == CPR_SYSTEM


def test_http_export_streams_ndjson_one_valid_resource_a_line(client_for, http_world):
    staff = client_for(STAFF)
    response = staff.get("/fhir/$export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    lines = response.text.splitlines()
    resources = [valid(json.loads(line)) for line in lines]
    assert {r["resourceType"] for r in resources} == set(EXPORT_TYPES)
    some = staff.get("/fhir/$export", params={"_type": "Patient,Condition"}).text.splitlines()
    assert sorted(json.loads(line)["id"] for line in some) == sorted(
        [http_world.p, http_world.q, http_world.r, http_world.case])
    bad = staff.get("/fhir/$export", params={"_type": "Medication"})
    assert bad.status_code == 422 and valid(bad.json())["issue"][0]["code"] == "invalid"
    outsider = client_for("syd:nurse").get("/fhir/$export", params={"_type": "Condition,Task"}).text
    assert outsider == ""  # nothing of another unit's


# ---- the command line -------------------------------------------------------------------------------------------


def run(cli_db: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["--db", cli_db, *args], env={"MPOXFLOW_ACTOR": STAFF})


def test_cli_export_writes_one_ndjson_file_per_type(cli_db, tmp_path):
    engine = open_engine(cli_db)
    try:
        made = World(engine)
    finally:
        engine.db.dispose()
    out = tmp_path / "export"
    result = run(cli_db, "fhir", "export", "--output", f"{out}/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.ndjson" for t in EXPORT_TYPES)
    for path in out.iterdir():
        lines = path.read_text(encoding="utf-8").splitlines()
        assert f"{path.stem}: {len(lines)}" in result.stdout
        for line in lines:
            assert valid(json.loads(line))["resourceType"] == path.stem
    patients = [json.loads(line) for line in (out / "Patient.ndjson").read_text().splitlines()]
    assert [p["identifier"][0]["value"] for p in patients] == ["0101801234", CPR_Q, CPR_R]

    stream = run(cli_db, "fhir", "export", "--type", "Patient", "--as", "timer")
    assert stream.exit_code == 0, stream.output
    assert [json.loads(line)["id"] for line in stream.stdout.splitlines()] == [made.p, made.q, made.r]
    assert "0101801234" not in stream.stdout  # the scheduler's role sees no reference
    single = Path(tmp_path / "all.ndjson")
    assert run(cli_db, "fhir", "export", "--type", "Condition", "--output", str(single)).exit_code == 0
    assert [json.loads(line)["id"] for line in single.read_text().splitlines()] == [made.case]
    bad = run(cli_db, "fhir", "export", "--type", "Medication")
    assert bad.exit_code == 2 and "--type" in bad.stderr


def test_cli_show_prints_one_resource(cli_db):
    engine = open_engine(cli_db)
    try:
        made = World(engine)
    finally:
        engine.db.dispose()
    shown = run(cli_db, "fhir", "show", made.p, "--as", AUDITOR)
    assert shown.exit_code == 0, shown.output
    assert valid(json.loads(shown.stdout))["identifier"][0]["value"] == "0101801234"
    dose1 = run(cli_db, "fhir", "show", f"{made.pep}-dose-1")
    assert valid(json.loads(dose1.stdout))["protocolApplied"][0]["doseNumberPositiveInt"] == 1
    assert json.loads(run(cli_db, "fhir", "show", f"Condition/{made.case}").stdout)["id"] == made.case
    missing = run(cli_db, "fhir", "show", "case-99")
    assert missing.exit_code == 4
