"""A person's own copy (GDPR art. 15; issue 19 item 2): everything mpoxflow holds about one person and only theirs.

The world: Alice has a PrEP course with a dose, is a close contact on Carl's case, and has a confirmed case of her
own with Bob as its close contact; notes and a contact attempt on her and her case (and notes on Bob's and Carl's
records), the written notification of her case made and sent, her phone notification missed, a webhook delivered
events of everyone's records. Her report holds all of hers (compared with what the database holds, not with
numbers written here) and nothing of Bob's or Carl's: their references, birth dates, ids and notes are absent from
the JSON. The report is an entry on her chain in the same transaction, the log still verifies and replays; the
refusals (an unknown id, another kind's id, another unit's user, an unknown user, a bad format) write nothing.
Engine on both backends; the command line, the API and the pages (Danish, across a DST change) on SQLite.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from engine import accounts
from engine.core import Engine
from engine.person_report import REPORT_KEYS, RULE, TRIGGER
from engine.webhooks import Webhooks
from persistence.database import Database
from persistence.models import AuditEntry, Note, NotificationDocument, Timer
from scheduler.delivery import deliver_pass
from tests.conftest import ADMIN, PASSWORD, START
from tests.helpers import contents, person, pk
from tests.test_courses import contact, dose, prep
from workflows.errors import NotFound, NotPermitted, UsageError

STAFF = "staff:test"
AUDITOR = "auditor:test"
ALICE, ALICE_BORN = "0101801234", date(1980, 1, 1)
BOB, BOB_BORN = "0202902345", date(1990, 2, 2)
CARL, CARL_BORN = "0303703456", date(1970, 3, 3)
#: Notes on other people's records: never in Alice's report.
OTHERS_NOTES = ("BOB-CONTACT-NOTE", "BOB-PERSON-NOTE", "CARL-CASE-NOTE")


class Hook(http.server.BaseHTTPRequestHandler):
    """A receiver of webhook deliveries on 127.0.0.1: answers 204 to every POST."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/mpox?token=x"
    server.shutdown()
    server.server_close()


class World:
    def __init__(self, engine: Engine, receiver: str) -> None:
        hooks = Webhooks(engine.runtime)
        self.hook = hooks.add(receiver, "case.*,contact.*,course.*", actor=ADMIN, personal_data=True)["id"]
        self.alice = person(engine, ALICE, born=ALICE_BORN)
        self.bob = person(engine, BOB, born=BOB_BORN)
        self.carl = person(engine, CARL, born=CARL_BORN)
        self.dora = person(engine, "0404604567")  # registered, nothing else
        self.course = prep(engine, self.alice)["id"]
        dose(engine, self.course, "2025-03-03")
        self.carl_case = self.case_of(engine, self.carl)
        self.alice_contact = contact(engine, self.carl_case, self.alice, "2025-03-02", "household")
        self.case = self.case_of(engine, self.alice)
        self.bob_contact = contact(engine, self.case, self.bob, "2025-03-02", "sexual")
        engine.note(self.alice, text="tolk: arabisk", actor=STAFF)
        engine.note(self.case, text="ALICE-CASE-NOTE", actor=STAFF)
        engine.attempt(self.case, channel="phone", outcome="no-answer", actor=STAFF, reason="no answer at nine")
        engine.note(self.bob_contact, text=OTHERS_NOTES[0], actor=STAFF)
        engine.note(self.bob, text=OTHERS_NOTES[1], actor=STAFF)
        engine.note(self.carl_case, text=OTHERS_NOTES[2], actor=STAFF)
        self.document = engine.make_document(self.case, actor=STAFF)["id"]
        engine.apply(self.case, "notify", data={"channel": "written", "document": self.document}, actor=STAFF)
        # 18:00: the phone notifications (§3.1, by 17:00) were never made: missed.
        engine.clock.set(START + timedelta(hours=10))  # type: ignore[attr-defined]
        engine.fire_due()
        deliver_pass(hooks, engine.clock)

    @staticmethod
    def case_of(engine: Engine, person_id: str) -> str:
        case_id = engine.open("case", "open", person=person_id, actor=STAFF, data={
            "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
        engine.apply(case_id, "confirm", data={"pcr_on": date(2025, 3, 3)}, actor=STAFF)
        engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
        return case_id


@pytest.fixture
def world(engine: Engine, receiver: str) -> World:
    return World(engine, receiver)


def others_absent(text_: str, world: World) -> None:
    """Nothing of Bob's or Carl's: references, birth dates (ISO and Danish), their persons' and records' ids, notes."""
    for found in (BOB, CARL, BOB_BORN.isoformat(), CARL_BORN.isoformat(), BOB_BORN.strftime("%d.%m.%Y"),
                  CARL_BORN.strftime("%d.%m.%Y"), *OTHERS_NOTES):
        assert found not in text_, found
    for object_id in (world.bob, world.carl, world.bob_contact):
        assert re.search(rf"\b{object_id}\b", text_) is None, object_id


# ---- everything of the person's, and only theirs (both backends) ------------------------------------------------


def test_the_report_holds_everything_of_the_person(engine: Engine, db: Database, world: World) -> None:
    report = engine.person_report(world.alice, actor=STAFF)
    assert list(report) == list(REPORT_KEYS)
    assert (report["person"], report["rule"], report["made_by"]["name"]) == (world.alice, RULE, STAFF)
    assert report["made_at"] == {"utc": "2025-03-03T17:00:00Z", "local": "2025-03-03T18:00:00+01:00"}
    facts = report["facts"]
    assert (facts["ref"], facts["born"]) == (ALICE, "1980-01-01")
    assert [n["text"] for n in report["notes"]] == ["tolk: arabisk"]
    assert [c["id"] for c in report["cases"]] == [world.case]
    assert [c["id"] for c in report["contacts"]] == [world.alice_contact]
    assert [c["id"] for c in report["courses"]] == [world.course]
    [case], [own_contact], [course] = report["cases"], report["contacts"], report["courses"]
    assert course["facts"]["dose1_on"] == "2025-03-03"
    assert own_contact["facts"]["case"] == world.carl_case  # the record it is an exposure to: an id, no person
    assert (own_contact["facts"]["exposure_kind"], own_contact["facts"]["exposed_on"]) == ("household", "2025-03-02")
    # The case's close contacts: how many and of which kinds, never who.
    assert case["contacts"] == {"count": 1, "kinds": {"sexual": 1}}
    # Notes and the attempt on the case, as the notes table holds them.
    with db.reading() as session:
        rows = session.scalars(select(Note).where(Note.object_kind == "case", Note.object_id == pk(world.case))
                               .order_by(Note.id)).all()
        timers = {f"timer-{t.id}": t for t in session.scalars(select(Timer))}
        [document] = session.scalars(select(NotificationDocument)).all()
    assert [(n["kind"], n["text"], n["channel"]) for n in case["notes"]] == [(r.kind, r.text, r.channel) for r in rows]
    # Every timer of each of her objects, with its deadline's last day and what became of it.
    for obj in (case, own_contact, course):
        assert {d["timer"] for d in obj["deadlines"]} == {
            t for t, row in timers.items() if (row.object_kind, row.object_id) == (obj["kind"], pk(obj["id"]))}
    deadlines = {d["name"]: d for d in case["deadlines"]}
    phone, written = deadlines["phone_notification_due"], deadlines["written_notification_due"]
    assert (phone["status"], phone["rule"], phone["last_day"]) == ("missed", "SST-mpox-7.1 §3.1", "2025-03-03")
    assert phone["due_at"] == {"utc": "2025-03-03T16:00:00Z", "local": "2025-03-03T17:00:00+01:00"}
    assert written["status"] == "done" and written["done_at"] is not None
    # The notification document: its metadata and the content it holds (hers).
    [made] = case["documents"]
    assert (made["id"], made["content_hash"], made["sent_by"]) == (world.document, document.content_hash, STAFF)
    assert made["content"]["patient"] == {"id": world.alice, "ref": ALICE, "born": "1980-01-01"}
    assert made["content"]["contacts"] == {"count": 1, "kinds": {"sexual": 1}}
    # Recipients: §3.1's written notification with its document, and the webhook that got her objects' events.
    assert [(n["case"], n["channel"], n["to"], n.get("documents")) for n in report["recipients"]["notifications"]] \
        == [(world.case, "written", "SSI and STPS", [world.document])]
    [hook] = report["recipients"]["webhooks"]
    assert (hook["webhook"], hook["host"], hook["personal_data"]) == (world.hook, "127.0.0.1", True)
    assert "hooks" not in json.dumps(hook) and "token" not in json.dumps(hook)  # the host, never the path
    with db.engine.connect() as connection:
        delivered = connection.execute(text(
            "SELECT count(*) FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq "
            "WHERE d.outcome = 'delivered' AND ((e.object_kind = 'case' AND e.object_id = :case) "
            "OR (e.object_kind = 'contact' AND e.object_id = :contact) "
            "OR (e.object_kind = 'course' AND e.object_id = :course))"),
            {"case": pk(world.case), "contact": pk(world.alice_contact), "course": pk(world.course)}).scalar()
    assert hook["events"] == delivered > 0
    # The log: every entry of her chain and of her objects' chains, in order, each with who, why and the rule.
    mine = {("person", pk(world.alice)), ("case", pk(world.case)), ("contact", pk(world.alice_contact)),
            ("course", pk(world.course))}
    with db.reading() as session:
        expected = [e.seq for e in session.scalars(select(AuditEntry).order_by(AuditEntry.seq))
                    if (e.object_kind, e.object_id) in mine and e.seq != report["audit_seq"]]
    assert [e["seq"] for e in report["audit"]] == expected
    confirm = next(e for e in report["audit"] if e["object"] == world.case and e["trigger"] == "confirm")
    assert (confirm["from"], confirm["to"], confirm["actor"], confirm["role"], confirm["rule"]) == (
        "suspected", "confirmed", STAFF, "staff", "SST-mpox-7.1 §1.1")
    missed = next(e for e in report["audit"] if e["actor"] == "timer:phone_notification_due"
                  and e["object"] == world.case)
    assert missed["at"]["local"] == "2025-03-03T18:00:00+01:00" and missed["reason"].startswith("missed")
    assert report["counts"] == {
        "cases": 1, "contacts": 1, "courses": 1, "deadlines": sum(len(o["deadlines"]) for o in (case, own_contact,
                                                                                                course)),
        "notes": 3, "documents": 1, "audit_entries": len(expected), "recipients": 2, "imports": 0}
    others_absent(json.dumps(report, ensure_ascii=False), world)


def test_the_report_is_audited_on_the_persons_chain_and_the_log_verifies(engine: Engine, db: Database,
                                                                         world: World) -> None:
    before = contents(db)
    report = engine.person_report(world.alice, actor=STAFF, fmt="html")
    after = contents(db)
    # One entry more (hers), her row's chain head moved to it, and the read of her data in the read log (issue 19
    # item 3): nothing else changed.
    kept = ("audit_log", "persons", "personal_reads")
    assert {k: v for k, v in after.items() if k not in kept} == {k: v for k, v in before.items() if k not in kept}
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1
    [read] = after["personal_reads"][len(before["personal_reads"]):]
    assert (read[3], read[6], read[7]) == (STAFF, int(world.alice.removeprefix("person-")), "report")
    entry = engine.audit(entity=world.alice)[-1]
    assert entry["seq"] == report["audit_seq"]
    assert (entry["trigger"], entry["rule"], entry["actor"], entry["role"]) == (TRIGGER, RULE, STAFF, "staff")
    assert entry["data"] == {"format": "html", "counts": report["counts"], "outside_units": []}
    assert ALICE not in json.dumps(entry) and "1980-01-01" not in json.dumps(entry)
    verified = engine.audit_verify()
    assert verified["intact"], verified
    replayed = engine.audit_replay()
    assert replayed["matches"], replayed["differences"]
    # A second report sees the first in the log.
    again = engine.person_report(world.alice, actor=AUDITOR)
    assert report["audit_seq"] in [e["seq"] for e in again["audit"]]
    assert again["made_by"]["role"] == "auditor"
    assert engine.audit_verify()["intact"]


def two_units(engine: Engine) -> None:
    if engine.db.engine.dialect.name == "postgresql":  # as tests/test_notes.py: the root's id and its sequence
        with engine.db.engine.begin() as connection:
            connection.execute(text("SELECT setval('units_id_seq', (SELECT max(id) FROM units))"))
    engine.add_unit("Region Nord", parent="Danmark", actor=ADMIN)
    engine.add_user("nord:staff", "staff", actor=ADMIN, units=["Region Nord"])


def test_refusals_are_clear_and_write_nothing(engine: Engine, db: Database, world: World) -> None:
    two_units(engine)
    before = contents(db)
    with pytest.raises(NotFound, match="person-99"):
        engine.person_report("person-99", actor=STAFF)
    with pytest.raises(UsageError, match="case-.* is a case: a report is made of a person"):
        engine.person_report(world.case, actor=STAFF)
    with pytest.raises(NotPermitted) as outside:
        engine.person_report(world.alice, actor="nord:staff")
    assert outside.value.key == "report_outside_units" and outside.value.http_status == 403
    assert "GDPR art. 15" in outside.value.message and "Region Nord" in outside.value.message
    with pytest.raises(NotPermitted, match="not a user"):
        engine.person_report(world.alice, actor="nobody:here")
    with pytest.raises(UsageError, match="not a format of the report"):
        engine.person_report(world.alice, actor=STAFF, fmt="pdf")
    assert contents(db) == before  # not even a refusal's entry: a reading refused, as `show`'s


def test_who_may_make_it_follows_the_units(engine: Engine, db: Database, world: World) -> None:
    two_units(engine)
    # A person with no case, contact or course: any staff member (the shared register).
    assert engine.person_report(world.dora, actor="nord:staff")["cases"] == []
    # One of Alice's objects in Nord's hands: Nord's staff make the whole report; the entry names what lay outside.
    engine.transfer([world.course], unit="Region Nord", actor=ADMIN, reason="vaccination clinic in Nord")
    report = engine.person_report(world.alice, actor="nord:staff")
    assert [c["id"] for c in report["cases"]] == [world.case] and report["courses"][0]["unit"]["name"] == \
        "Region Nord"
    assert engine.audit(entity=world.alice)[-1]["data"]["outside_units"] == [world.case, world.alice_contact]


# ---- the command line (SQLite) ----------------------------------------------------------------------------------


def cli_world(cli_db: str) -> dict[str, str]:
    from engine.bootstrap import open_engine

    engine = open_engine(cli_db)
    try:
        alice = engine.add_person(ref=ALICE, born=ALICE_BORN, actor=STAFF)["id"]
        bob = engine.add_person(ref=BOB, born=BOB_BORN, actor=STAFF)["id"]
        case = World.case_of(engine, alice)
        bob_contact = contact(engine, case, bob, "2025-03-02", "sexual")
        engine.note(bob_contact, text=OTHERS_NOTES[0], actor=STAFF)
        engine.note(case, text="ALICE-CASE-NOTE", actor=STAFF)
    finally:
        engine.db.dispose()
    return {"alice": alice, "bob": bob, "case": case, "bob_contact": bob_contact}


def test_the_command_line_prints_json_and_writes_the_danish_document(cli_db: str, tmp_path: Path) -> None:
    from tests.test_cli import cli, describe

    made = cli_world(cli_db)
    result = cli(cli_db, "person", "report", made["alice"], "--as", STAFF, "--json")
    assert result.exit_code == 0, describe(result)
    report = json.loads(result.stdout)
    assert list(report) == list(REPORT_KEYS) and report["facts"]["ref"] == ALICE
    assert BOB not in result.stdout and BOB_BORN.isoformat() not in result.stdout and made["bob"] not in result.stdout
    target = tmp_path / "kopi.html"
    result = cli(cli_db, "person", "report", made["alice"], "--format", "html", "--output", str(target), "--as", STAFF)
    assert result.exit_code == 0, describe(result)
    assert f"written to {target}" in result.stdout
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and '<html lang="da">' in page
    assert "<h1>Dine oplysninger i mpoxflow</h1>" in page and "databeskyttelsesforordningen (GDPR) artikel 15" in page
    assert "Udarbejdet 03.03.2025 kl. 08.00 af staff:test" in page
    assert "<style>" in page and "/static/" not in page and "<script" not in page and "<nav" not in page
    assert ALICE in page and "01.01.1980" in page and "ALICE-CASE-NOTE" in page
    for absent in (BOB, BOB_BORN.isoformat(), BOB_BORN.strftime("%d.%m.%Y"), OTHERS_NOTES[0], made["bob"],
                   made["bob_contact"]):
        assert absent not in page, absent
    # Never written over a file; refusals write nothing and exit 2, 3 or 4.
    watched = Database(cli_db)
    try:
        before = contents(watched)
        again = cli(cli_db, "person", "report", made["alice"], "--format", "html", "--output", str(target))
        assert again.exit_code == 2 and "exists already" in again.stderr
        assert cli(cli_db, "person", "report", made["case"], "--as", STAFF).exit_code == 2
        assert cli(cli_db, "person", "report", "person-99", "--as", STAFF, "--json").exit_code == 4
        assert cli(cli_db, "person", "report", made["alice"], "--format", "pdf").exit_code == 2
        assert cli(cli_db, "person", "report", made["alice"], "--format", "html", "--json").exit_code == 2
        assert contents(watched) == before
    finally:
        watched.dispose()


# ---- the API and the page (SQLite) ------------------------------------------------------------------------------


def api(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body, headers={"X-CSRF-Token": client.csrf})
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


def test_the_page_is_danish_across_a_dst_change_and_printable(client_for: Any, cli_db: str) -> None:
    from tests.test_web_pages import text as visible

    staff = client_for(STAFF)
    alice = api(staff, "/api/persons", {"ref": ALICE, "born": "1980-01-01"})["id"]
    other = api(staff, "/api/persons", {"ref": BOB, "born": "1990-02-02"})["id"]
    case = api(staff, "/api/cases", {"person": other, "onset": "2025-03-01", "symptoms": ["rash"],
                                     "criteria": ["msm"]})["id"]
    api(staff, f"/api/cases/{case}/confirm", {"pcr_on": "2025-03-03"})
    api(staff, f"/api/cases/{case}/consent", {"tracing": True})
    api(staff, "/api/clock/advance", {"days": 17})  # 2025-03-20 08:00, winter time (+01:00)
    exposed = api(staff, "/api/contacts", {"case": case, "person": alice, "exposed": "2025-03-20",
                                           "kind": "household"})["id"]
    api(staff, "/api/clock/advance", {"days": 11})  # 2025-03-31 08:00, summer time (+02:00) since 30 March
    api(staff, f"/api/objects/{alice}/note", {"text": "ringet op efter sommertid"})
    person_page = staff.get(f"/objects/{alice}").text
    assert f'href="/persons/{alice}/report"' in person_page
    page = staff.get(f"/persons/{alice}/report")
    assert page.status_code == 200, page.text
    shown = visible(page.text)
    assert '<html lang="da">' in page.text and "Dine oplysninger i mpoxflow" in shown
    assert 'href="/static/person_report.css"' in page.text
    assert "Udarbejdet 31.03.2025 kl. 08.00 af staff:test" in shown and "GDPR art. 15" in shown
    # The contact's deadlines the Danish way, their last days across the change to summer time.
    assert "senest 21.03.2025 kl. 08.00" in shown  # inform, 24 hours (§5.5)
    assert "senest 03.04.2025" in shown  # PEP by day 14 (§6.2): closes 00:00 on 04.04, summer time
    assert "senest 10.04.2025" in shown  # monitored 21 days (§5.5): closes 00:00 on 11.04, summer time
    assert "SST-mpox-7.1 §5.5" in shown and "SST-mpox-7.1 §6.2" in shown
    # The log's instants at Danish wall-clock time on both sides of the change: 08.00, not 07.00 or 06.00 UTC.
    assert "03.03.2025 kl. 08.00" in shown and "20.03.2025 kl. 08.00" in shown and "31.03.2025 kl. 08.00" in shown
    for absent in (BOB, "02.02.1990", "1990-02-02", other):
        assert absent not in page.text, absent
    # Print: the sections break onto pages of their own; the navigation is not printed.
    css = staff.get("/static/person_report.css").text
    assert re.search(r"@media print \{[^@]*section\.part \+ section\.part \{ break-before: page; \}", css)
    assert page.text.count('<section class="part"') == 6
    # The JSON, from the page and from the API: the same shape, instants in UTC and local.
    as_json = staff.get(f"/persons/{alice}/report?format=json").json()
    assert list(as_json) == list(REPORT_KEYS)
    note = as_json["notes"][0]
    assert note["at"] == {"utc": "2025-03-31T06:00:00Z", "local": "2025-03-31T08:00:00+02:00"}
    [own] = as_json["contacts"]
    assert own["id"] == exposed
    monitoring = next(d for d in own["deadlines"] if d["name"] == "monitoring_ends")
    assert (monitoring["last_day"], monitoring["due_at"]["utc"]) == ("2025-04-10", "2025-04-10T22:00:00Z")
    from_api = staff.get(f"/api/persons/{alice}/report").json()
    assert from_api["audit_seq"] > as_json["audit_seq"]
    # English, by the browser's language.
    staff.headers["Accept-Language"] = "en"
    assert "Your data in mpoxflow" in visible(staff.get(f"/persons/{alice}/report").text)


def test_the_page_and_the_api_refuse_clearly_and_write_nothing(client_for: Any, cli_db: str) -> None:
    from engine.bootstrap import open_engine

    made = cli_world(cli_db)
    engine = open_engine(cli_db)
    try:
        engine.add_unit("Region Nord", parent="Danmark", actor=ADMIN)
        engine.add_user("nord:staff", "staff", actor=ADMIN, units=["Region Nord"],
                        password_hash=accounts.password_hash.hash(PASSWORD))
    finally:
        engine.db.dispose()
    watched = Database(cli_db)
    nord, staff = client_for("nord:staff"), client_for(STAFF)
    try:
        before = contents(watched)
        page = nord.get(f"/persons/{made['alice']}/report")
        assert page.status_code == 403 and "GDPR art. 15" in page.text and ALICE not in page.text
        answer = nord.get(f"/api/persons/{made['alice']}/report")
        assert (answer.status_code, answer.json()["key"]) == (403, "report_outside_units")
        assert nord.get(f"/persons/{made['alice']}/report?format=json").json()["key"] == "report_outside_units"
        assert staff.get("/api/persons/person-99/report").status_code == 404
        assert staff.get(f"/api/persons/{made['case']}/report").status_code == 422
        assert staff.get(f"/persons/{made['alice']}/report?format=pdf").status_code == 422
        assert contents(watched) == before
    finally:
        watched.dispose()
