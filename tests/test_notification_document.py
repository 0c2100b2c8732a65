"""The written notification (§3.1) as a document (issue 18, part 3): made from a confirmed case as a FHIR document
Bundle (valid by ``fhir.resources``' R4B models), refused for a suspected case, its sending recorded with
``case notify --channel written --document``, a stale one refused with the database unchanged, a case changed
after its notification was sent flagged on ``due``, the worklist page and its own page until an updated one is sent
(without re-arming the deadline), and the printable page in Danish.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from engine.bootstrap import open_engine
from engine.core import Engine
from engine.notification import TITLE, canonical, stored_content
from persistence.models import NotificationDocument
from tests.conftest import START
from tests.helpers import contents, person
from tests.test_courses import contact
from tests.test_fhir import World, valid
from workflows.errors import RuleRefused

STAFF = "staff:test"
S3_1 = "SST-mpox-7.1 §3.1"


@pytest.fixture
def world(engine: Engine) -> World:
    return World(engine)


def documents(engine: Engine) -> list[Any]:
    with engine.db.reading() as session:
        return list(session.scalars(select(NotificationDocument).order_by(NotificationDocument.id)))


def test_the_document_is_an_r4b_document_bundle_holding_the_case(engine, world):
    made = engine.make_document(world.case, actor=STAFF)
    bundle = made["bundle"]
    assert Bundle.model_validate(bundle).type == "document"
    valid(bundle)
    assert (made["id"], bundle["id"], bundle["identifier"]["value"]) == ("document-1",) * 3
    composition, patient, condition, organization = (e["resource"] for e in bundle["entry"])
    assert composition["resourceType"] == "Composition" and composition["title"] == TITLE
    assert [s["title"] for s in composition["section"]] == ["Patient", "Sygdom", "Isolation", "Kontakter",
                                                            "Ansvarlig enhed"]
    assert composition["subject"]["reference"] == bundle["entry"][1]["fullUrl"]
    assert patient["identifier"][0] == {"use": "official", "system": "urn:oid:1.2.208.176.1.2",
                                        "value": "0101801234"}
    assert (condition["onsetDateTime"], condition["verificationStatus"]["coding"][0]["code"]) == (
        "2025-03-01", "confirmed")
    assert organization == {"resourceType": "Organization", "id": "unit-1", "name": "Danmark"}
    content = stored_content(bundle)
    assert content["condition"]["pcr_on"] == "2025-03-03" and content["condition"]["symptoms"] == ["rash", "fever"]
    assert content["contacts"] == {"count": 2, "kinds": {"household": 1, "sexual": 1}}
    assert content["patient"] == {"id": world.p, "ref": "010180-1234", "born": "1980-01-01"}
    # the hash is the SHA-256 of the canonical content, and the row holds it with the case's version
    assert made["content_hash"] == hashlib.sha256(canonical(content).encode()).hexdigest()
    [row] = documents(engine)
    assert (row.case_id, row.content_hash, row.case_version, row.made_by, row.sent_at) == (
        int(world.case.split("-")[1]), made["content_hash"], engine.show(world.case)["version"], STAFF, None)
    entry = engine.audit(entity=world.case)[-1]
    assert (entry["trigger"], entry["rule"], entry["data"]) == (
        "document", S3_1, {"document": "document-1", "content_hash": made["content_hash"]})
    assert "0101801234" not in json.dumps(entry) and "1980" not in json.dumps(entry)
    assert engine.audit_verify()["intact"] and engine.audit_replay()["matches"]


def test_a_suspected_case_has_no_written_notification(engine, db):
    case = engine.open("case", "open", person=person(engine, "REF-S"), actor=STAFF, data={
        "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    before = contents(db)
    with pytest.raises(RuleRefused, match=r"not a confirmed case.*\(§3.1\)") as refused:
        engine.make_document(case, actor=STAFF)
    assert (refused.value.rule, refused.value.key) == (S3_1, "not_confirmed")
    assert contents(db) == before


def test_notify_with_the_document_records_it_and_marks_it_sent(engine, world):
    made = engine.make_document(world.case, actor=STAFF)
    engine.apply(world.case, "notify", data={"channel": "written", "document": made["id"]}, actor=STAFF)
    entry = engine.audit(entity=world.case)[-1]
    assert (entry["trigger"], entry["data"]) == (
        "notify", {"channel": "written", "document": "document-1", "content_hash": made["content_hash"]})
    [row] = documents(engine)
    assert (row.sent_at, row.sent_by) == (START, STAFF)
    view = engine.show(world.case)
    assert view["written_notified_at"] == START.isoformat()
    [timer] = [t for t in view["timers"] if t["name"] == "written_notification_due"]
    assert timer["satisfied_at"] == START.isoformat()
    assert engine.changed_since_sent() == []


def test_notify_without_a_document_still_records_the_written_notification(engine, world):
    engine.apply(world.case, "notify", data={"channel": "written", "document": None}, actor=STAFF)
    assert engine.audit(entity=world.case)[-1]["data"] == {"channel": "written"}
    assert engine.show(world.case)["written_notified_at"] == START.isoformat()


def test_a_stale_or_foreign_document_is_refused_and_the_database_unchanged(engine, db, world):
    stale = engine.make_document(world.case, actor=STAFF)["id"]
    engine.apply(world.case, "clade", data={"clade": "Ib"}, actor=STAFF)
    other = engine.open("case", "open", person=person(engine, "REF-O"), actor=STAFF, data={
        "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    engine.apply(other, "confirm", data={"pcr_on": date(2025, 3, 3)}, actor=STAFF)
    foreign = engine.make_document(other, actor=STAFF)["id"]
    before = contents(db)
    with pytest.raises(RuleRefused, match=r"before a change.*case document case-1") as refused:
        engine.apply(world.case, "notify", data={"channel": "written", "document": stale}, actor=STAFF)
    assert (refused.value.rule, refused.value.key) == (S3_1, "document_out_of_date")
    with pytest.raises(RuleRefused, match="is the notification of case-2, not of case-1"):
        engine.apply(world.case, "notify", data={"channel": "written", "document": foreign}, actor=STAFF)
    assert contents(db) == before
    assert engine.show(world.case)["written_notified_at"] is None


def test_a_change_after_sending_is_flagged_until_an_updated_notification_is_sent(engine, db, world):
    first = engine.make_document(world.case, actor=STAFF)
    engine.apply(world.case, "notify", data={"channel": "written", "document": first["id"]}, actor=STAFF)
    [timer] = [t for t in engine.show(world.case)["timers"] if t["name"] == "written_notification_due"]
    engine.clock.set(START + timedelta(hours=30))  # past the 24-hour deadline, met by the first notification
    engine.fire_due()
    engine.apply(world.case, "clade", data={"clade": "Ib"}, actor=STAFF)  # SSI's sequencing, later (§2.4)
    [flagged] = engine.changed_since_sent()
    assert (flagged["object"], flagged["document"], flagged["rule"]) == (world.case, first["id"], S3_1)
    assert flagged["changes"] == [{"field": "condition.clade", "sent": None, "now": "Ib"}]
    # the same document again: refused, it was sent; the case notified already: only with a new document
    before = contents(db)
    with pytest.raises(RuleRefused, match="was sent already"):
        engine.apply(world.case, "notify", data={"channel": "written", "document": first["id"]}, actor=STAFF)
    assert contents(db) == before

    second = engine.make_document(world.case, actor=STAFF)
    engine.apply(world.case, "notify", data={"channel": "written", "document": second["id"]}, actor=STAFF)
    entry = engine.audit(entity=world.case)[-1]
    assert entry["data"] == {"channel": "written", "document": second["id"], "content_hash": second["content_hash"],
                             "updates": first["id"]}
    assert entry["timers_armed"] == [] and entry["timers_done"] == [] and entry["changes"] == {}
    view = engine.show(world.case)
    assert view["written_notified_at"] == START.isoformat()  # the first notification's instant stays
    [after] = [t for t in view["timers"] if t["name"] == "written_notification_due"]
    assert after == timer  # neither re-armed nor done again
    assert [t["name"] for t in view["timers"] if t["status"] == "pending"].count("written_notification_due") == 0
    assert engine.changed_since_sent() == []
    # up to date now: a third notification has nothing to tell
    third = engine.make_document(world.case, actor=STAFF)
    with pytest.raises(RuleRefused, match="nothing to notify again"):
        engine.apply(world.case, "notify", data={"channel": "written", "document": third["id"]}, actor=STAFF)


def test_a_new_contact_after_sending_flags_the_case(engine, world):
    made = engine.make_document(world.case, actor=STAFF)
    engine.apply(world.case, "notify", data={"channel": "written", "document": made["id"]}, actor=STAFF)
    assert engine.changed_since_sent() == []
    contact(engine, world.case, person(engine, "REF-N"), "2025-03-02", "sexual")
    [flagged] = engine.changed_since_sent()
    assert [c["field"] for c in flagged["changes"]] == ["contacts.count", "contacts.kinds"]


# ---- the command line, the API and the pages --------------------------------------------------------------------


@pytest.fixture
def cli_world(web_app: Any, cli_db: str) -> World:
    engine = open_engine(cli_db)
    try:
        return World(engine)
    finally:
        engine.db.dispose()


def test_cli_document_notify_and_due(cli_db, cli_world):
    from tests.test_fhir import run

    made = run(cli_db, "case", "document", cli_world.case, "--json")
    assert made.exit_code == 0, made.output
    doc = json.loads(made.stdout)["id"]
    assert run(cli_db, "case", "notify", cli_world.case, "--channel", "written", "--document", doc).exit_code == 0
    assert run(cli_db, "case", "clade", cli_world.case, "--clade", "IIb").exit_code == 0
    due = run(cli_db, "due")
    assert "CHANGED SINCE SENT" in due.stdout and f"{cli_world.case}  confirmed  {doc}" in due.stdout
    stale = run(cli_db, "case", "notify", cli_world.case, "--channel", "written", "--document", doc)
    assert stale.exit_code == 3 and "mpoxflow case document" in stale.stderr
    suspected = run(cli_db, "case", "document", "case-99")
    assert suspected.exit_code == 4


def test_api_page_and_fhir_bundle(client_for, cli_world):
    staff, auditor = client_for(STAFF), client_for("auditor:test")
    made = staff.post(f"/api/cases/{cli_world.case}/document", json={}, headers={"X-CSRF-Token": staff.csrf})
    assert made.status_code == 201, made.text
    doc = made.json()["id"]
    bundle = staff.get(f"/fhir/Bundle/{doc}")
    assert bundle.headers["content-type"].startswith("application/fhir+json")
    assert valid(bundle.json()) == made.json()["bundle"]
    refused = auditor.post(f"/api/cases/{cli_world.case}/document", json={})
    assert refused.status_code == 403

    page = staff.get(f"/documents/{doc}")
    assert page.status_code == 200
    text = page.text
    assert "Anmeldelse af mpox (skriftlig, §3.1)" in text and made.json()["content_hash"] in text
    for danish in ("Sygdom", "Kontakter", "Ansvarlig enhed", "Symptomdebut", "Klade", "ikke kendt endnu",
                   "2 nære kontakter", "01.03.2025", "010180-1234"):
        assert danish in text, danish
    assert 'lang="da"' in text

    notified = staff.post(f"/api/cases/{cli_world.case}/notify", json={"channel": "written", "document": doc},
                          headers={"X-CSRF-Token": staff.csrf})
    assert notified.status_code == 200, notified.text
    case_page = staff.get(f"/objects/{cli_world.case}").text
    assert 'id="changed-since-sent"' not in case_page and f'data-document="{doc}"' in case_page
    assert staff.post(f"/api/cases/{cli_world.case}/clade", json={"clade": "Ib"},
                      headers={"X-CSRF-Token": staff.csrf}).status_code == 200
    worklist = staff.get("/worklist").text
    assert "Ændret efter afsendelse" in worklist and f'data-document="{doc}"' in worklist
    [flagged] = staff.get("/api/changed-since-sent").json()
    assert (flagged["object"], flagged["document"], flagged["changes"]) == (
        cli_world.case, doc, [{"field": "condition.clade", "sent": None, "now": "Ib"}])
    case_page = staff.get(f"/objects/{cli_world.case}").text
    assert 'id="changed-since-sent"' in case_page and 'data-field="condition.clade"' in case_page
    # the button makes a new document; sending it clears the flag
    form = staff.post(f"/cases/{cli_world.case}/document", data={"csrf_token": staff.csrf})
    assert form.status_code == 303 and form.headers["location"].startswith("/documents/document-2")
    assert staff.post(f"/api/cases/{cli_world.case}/notify", json={"channel": "written", "document": "document-2"},
                      headers={"X-CSRF-Token": staff.csrf}).status_code == 200
    assert "Ændret efter afsendelse" in staff.get("/worklist").text  # the section stays, empty
    assert f'data-document="{doc}"' not in staff.get("/worklist").text
    assert staff.get("/api/changed-since-sent").json() == []
    assert 'id="changed-since-sent"' not in staff.get(f"/objects/{cli_world.case}").text
