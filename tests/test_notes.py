"""Notes and contact attempts (issue 17 item 5): a note on any object and a contact attempt on a case or contact,
each an append-only audited entry in the object's timeline (the entry names the note, never its text); an attempt
that reaches a contact's person does its inform task (§5.5), and three failed attempts since the last that reached
the person make it hard to reach (the worklist's section). Engine on both backends; CLI, HTTP API and pages.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from engine.core import Engine
from engine.notes import HARD_TO_REACH_AFTER
from entry.cli import app
from persistence.database import Database
from tests.helpers import confirmed, contents, person
from workflows.errors import NotFound, NotPermitted, OutsideUnits, UsageError

STAFF = "staff:test"
ADMIN = "admin:test"
S5_5 = "SST-mpox-7.1 §5.5"
runner = CliRunner()


def traced_contact(engine: Engine) -> tuple[str, str]:
    """A confirmed case with tracing consent and a contact still to inform (exposed): (case, contact)."""
    case_id = confirmed(engine, person(engine, "CASE-1"))
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    contact = engine.open("contact", "add", person=person(engine, "CONTACT-1"), actor=STAFF, data={
        "case": case_id, "exposed": date(2025, 3, 2), "kind": "sexual"})
    return case_id, contact["id"]


def inform_task(engine: Engine, contact_id: str) -> dict[str, Any]:
    return next(t for t in engine.show(contact_id)["timers"] if t["name"] == "inform_due")


def fail(engine: Engine, object_id: str, times: int, outcome: str = "no-answer") -> dict[str, Any]:
    result: dict[str, Any] = {}
    for i in range(times):
        result = engine.attempt(object_id, channel="phone", outcome=outcome, actor=STAFF, reason=f"try {i + 1}")
    return result


def check_log(engine: Engine) -> None:
    assert engine.audit_verify()["intact"]
    replay = engine.audit_replay()
    assert replay["matches"], replay["differences"]


# ---- notes -------------------------------------------------------------------------------------------------


def test_a_note_is_appended_and_audited_without_its_text(engine: Engine, db: Database) -> None:
    case_id = confirmed(engine, person(engine))
    version = engine.show(case_id)["version"]
    secret = "Patienten bor hos sin søster, ring efter kl. 16"
    note = engine.note(case_id, text=f"  {secret}\n", actor=STAFF, reason="handover")
    assert (note["kind"], note["object"], note["text"], note["actor"]) == ("note", case_id, secret, STAFF)
    entry = engine.audit(entity=case_id)[-1]
    assert (entry["trigger"], entry["seq"], entry["reason"]) == ("note", note["audit_seq"], "handover")
    assert entry["data"] == {"note": note["id"], "chars": len(secret)}
    assert entry["changes"] is None and entry["from"] == entry["to"] == "confirmed"
    assert secret not in json.dumps(engine.audit(), ensure_ascii=False)
    assert engine.show(case_id)["version"] == version  # a note changes nothing of the case
    assert engine.notes_of(case_id) == [{k: v for k, v in note.items() if k != "audit_seq"}]
    # A person and a course take notes too; the notes are the shared register's for a person.
    person_id = engine.show(case_id)["person"]
    engine.note(person_id, text="tolk: arabisk", actor=STAFF)
    assert [n["text"] for n in engine.notes_of(person_id)] == ["tolk: arabisk"]
    assert engine.audit(entity=person_id)[-1]["trigger"] == "note"
    check_log(engine)
    # The notes table is append-only (database triggers, as the audit log).
    with pytest.raises(Exception), db.engine.begin() as connection:  # noqa: B017, PT011
        connection.execute(text("UPDATE notes SET text = 'x'"))


@pytest.mark.parametrize("given", ["", "   ", "x" * 2001, "bad\x00text"])
def test_a_bad_note_text_is_refused_and_nothing_written(engine: Engine, db: Database, given: str) -> None:
    case_id = confirmed(engine, person(engine))
    before = contents(db)
    with pytest.raises(UsageError) as refused:
        engine.note(case_id, text=given, actor=STAFF)
    assert refused.value.fields == ("text",) and "bad" not in str(refused.value)
    assert contents(db) == before


def test_notes_go_on_cases_contacts_courses_and_persons_only(engine: Engine) -> None:
    with pytest.raises(UsageError):
        engine.note("timer-1", text="x", actor=STAFF)
    with pytest.raises(NotFound):
        engine.note("case-99", text="x", actor=STAFF)
    with pytest.raises(NotFound):
        engine.note("person-99", text="x", actor=STAFF)


# ---- contact attempts --------------------------------------------------------------------------------------


def test_failed_attempts_count_and_a_reached_one_resets_them(engine: Engine) -> None:
    case_id = confirmed(engine, person(engine))
    version = engine.show(case_id)["version"]
    first = engine.attempt(case_id, channel="sms", outcome="no-answer", actor=STAFF, reason="sms sent")
    assert (first["failed_attempts"], first["hard_to_reach"], first["informed"]) == (1, False, False)
    entry = engine.audit(entity=case_id)[-1]
    assert (entry["trigger"], entry["reason"], entry["rule"]) == ("attempt", "sms sent", "SST-mpox-7.1 §3.1")
    assert entry["data"] == {"note": first["id"], "channel": "sms", "outcome": "no-answer"}
    assert entry["changes"] == {"failed_attempts": 1}
    view = engine.show(case_id)
    assert (view["failed_attempts"], view["version"], view["state"]) == (1, version + 1, "confirmed")
    assert fail(engine, case_id, 1, "wrong-number")["failed_attempts"] == 2
    reached = engine.attempt(case_id, channel="visit", outcome="reached", actor=STAFF, reason="met at home")
    assert reached["failed_attempts"] == 0 and engine.show(case_id)["failed_attempts"] == 0
    assert [(n["kind"], n["channel"], n["outcome"]) for n in engine.notes_of(case_id)] == [
        ("attempt", "sms", "no-answer"), ("attempt", "phone", "wrong-number"), ("attempt", "visit", "reached")]
    check_log(engine)


def test_hard_to_reach_after_three_failed_attempts_not_after_a_reached_one(engine: Engine) -> None:
    case_id, contact_id = traced_contact(engine)
    assert HARD_TO_REACH_AFTER == 3
    fail(engine, contact_id, 2)
    assert engine.hard_to_reach() == []
    assert fail(engine, contact_id, 1)["hard_to_reach"] is True
    [item] = engine.hard_to_reach()
    assert (item["object"], item["kind"], item["failed_attempts"], item["hard_to_reach"]) == (
        contact_id, "contact", 3, True)
    assert (item["case"], item["ref"], item["last_outcome"], item["rule"]) == (case_id, "CONTACT-1", "no-answer",
                                                                               S5_5)
    fail(engine, case_id, 3, "wrong-number")
    assert [i["object"] for i in engine.hard_to_reach()] == [case_id, contact_id]
    assert [i["object"] for i in engine.hard_to_reach(limit=1)] == [case_id]
    engine.attempt(contact_id, channel="letter", outcome="reached", actor=STAFF, reason="answered the letter")
    assert [i["object"] for i in engine.hard_to_reach()] == [case_id]
    with pytest.raises(UsageError):
        engine.hard_to_reach(limit=0)
    check_log(engine)


def test_a_reached_attempt_does_the_inform_task_in_the_same_transaction(engine: Engine) -> None:
    _, contact_id = traced_contact(engine)
    fail(engine, contact_id, 1)
    assert engine.show(contact_id)["state"] == "exposed" and inform_task(engine, contact_id)["status"] == "pending"
    result = engine.attempt(contact_id, channel="phone", outcome="reached", actor=STAFF, reason="talked to him")
    assert (result["informed"], result["state"], result["failed_attempts"]) == (True, "monitored", 0)
    task = inform_task(engine, contact_id)
    assert task["satisfied_at"] is not None
    attempt, inform = engine.audit(entity=contact_id)[-2:]
    assert (attempt["trigger"], attempt["data"]["note"]) == ("attempt", result["id"])
    assert (inform["trigger"], inform["from"], inform["to"], inform["rule"]) == ("inform", "exposed", "monitored",
                                                                                 S5_5)
    assert inform["reason"] == f"from attempt {result['id']}" and inform["actor"] == STAFF
    assert [t["name"] for t in inform["timers_done"]] == ["inform_due"]
    # Reached again: nothing left to inform.
    again = engine.attempt(contact_id, channel="phone", outcome="reached", actor=STAFF, reason="follow-up call")
    assert again["informed"] is False and engine.audit(entity=contact_id)[-1]["trigger"] == "attempt"
    check_log(engine)


def test_attempts_refuse_bad_input_and_write_nothing(engine: Engine, db: Database) -> None:
    case_id = confirmed(engine, person(engine))
    before = contents(db)
    for kwargs, field in (({"channel": "fax", "outcome": "reached", "reason": "r"}, "channel"),
                          ({"channel": "phone", "outcome": "maybe", "reason": "r"}, "outcome"),
                          ({"channel": "phone", "outcome": "reached", "reason": " "}, "reason"),
                          ({"channel": "phone", "outcome": "reached", "reason": None}, "reason")):
        with pytest.raises(UsageError) as refused:
            engine.attempt(case_id, actor=STAFF, **kwargs)
        assert refused.value.fields == (field,)
    course_or_person = engine.show(case_id)["person"]
    with pytest.raises(UsageError):
        engine.attempt(course_or_person, channel="phone", outcome="reached", actor=STAFF, reason="r")
    assert contents(db) == before


# ---- who may --------------------------------------------------------------------------------------------------


def two_regions(engine: Engine) -> str:
    """Region Nord and Region Syd, a staff member in each; a case of Syd's. Returns the case."""
    if engine.db.engine.dialect.name == "postgresql":
        # Migration 0013 inserts the root unit with id 1 without moving the id sequence on (reported): until it
        # does, the sequence is set past it here.
        with engine.db.engine.begin() as connection:
            connection.execute(text("SELECT setval('units_id_seq', (SELECT max(id) FROM units))"))
    engine.add_unit("Region Nord", parent="Danmark", actor=ADMIN)
    engine.add_unit("Region Syd", parent="Danmark", actor=ADMIN)
    engine.add_user("nord:staff", "staff", actor=ADMIN, units=["Region Nord"])
    engine.add_user("syd:staff", "staff", actor=ADMIN, units=["Region Syd"])
    person_id = engine.add_person(ref="SYD-1", actor="syd:staff")["id"]
    case_id = engine.open("case", "open", person=person_id, actor="syd:staff", data={
        "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    assert engine.show(case_id)["unit"] != "unit-1"
    return case_id


def test_outside_the_actors_units_notes_and_attempts_are_refused(engine: Engine, db: Database) -> None:
    case_id = two_regions(engine)
    fail(engine, case_id, 3)
    before = contents(db)
    with pytest.raises(OutsideUnits):
        engine.note(case_id, text="x", actor="nord:staff")
    with pytest.raises(OutsideUnits):
        engine.attempt(case_id, channel="phone", outcome="no-answer", actor="nord:staff", reason="r")
    after = contents(db)
    # Only the refusals were written: on the refused user's chain (its entries and its head).
    assert {k: v for k, v in after.items() if k not in ("audit_log", "users")} == {
        k: v for k, v in before.items() if k not in ("audit_log", "users")}
    refusals = [e for e in engine.audit(trigger="refused") if e["actor"] == "nord:staff"]
    assert len(refusals) == 2
    # Reading: the viewer's units only.
    engine.viewing_as("nord:staff")
    with pytest.raises(OutsideUnits):
        engine.notes_of(case_id)
    assert engine.hard_to_reach() == []
    engine.viewing_as("syd:staff")
    assert len(engine.notes_of(case_id)) == 3
    assert [i["object"] for i in engine.hard_to_reach()] == [case_id]
    engine.viewing_as(None)
    assert engine.note(case_id, text="ok", actor="syd:staff")["object"] == case_id


def test_an_auditor_is_refused_and_the_refusal_audited(engine: Engine, db: Database) -> None:
    case_id = confirmed(engine, person(engine))
    with pytest.raises(NotPermitted):
        engine.note(case_id, text="x", actor="auditor:test")
    with pytest.raises(NotPermitted):
        engine.attempt(case_id, channel="phone", outcome="reached", actor="auditor:test", reason="r")
    assert engine.notes_of(case_id) == []
    assert [e["data"]["command"] for e in engine.audit(trigger="refused")] == ["note", "attempt"]


# ---- the command line ------------------------------------------------------------------------------------------


def cli(url: str, *args: str) -> Any:
    """A command, as staff:test when it changes something (`due` takes no actor)."""
    actor = [] if args[0] == "due" else ["--actor", STAFF]
    return runner.invoke(app, ["--db", url, *args, *actor])


def cli_json(url: str, *args: str, code: int = 0) -> Any:
    result = cli(url, *args, "--json")
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_the_cli_writes_notes_and_attempts_and_due_lists_the_hard_to_reach(cli_db: str) -> None:
    cli_json(cli_db, "person", "add", "--ref", "R-1")
    cli_json(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-03-01", "--symptoms", "rash",
               "--criteria", "msm")
    note = cli_json(cli_db, "note", "case-1", "--text", "ring efter kl. 16", "--reason", "handover")
    assert (note["id"], note["kind"], note["text"]) == ("note-1", "note", "ring efter kl. 16")
    shown = cli(cli_db, "note", "case-1", "--text", "bor hos søster")
    assert shown.exit_code == 0 and "note-2  note on case-1" in shown.output
    for _ in range(3):
        made = cli_json(cli_db, "attempt", "case-1", "--channel", "phone", "--outcome", "no-answer", "--reason",
                        "voicemail")
    assert (made["failed_attempts"], made["hard_to_reach"]) == (3, True)
    due = cli(cli_db, "due")
    assert due.exit_code == 0 and "HARD TO REACH" in due.output
    assert due.output.split("HARD TO REACH", 1)[1].count("case-1") == 1
    items = cli_json(cli_db, "due")
    tasks, hard = [i for i in items if not i.get("hard_to_reach")], [i for i in items if i.get("hard_to_reach")]
    assert tasks and all("timer" in i for i in tasks) and items[-1] is hard[0]
    assert (hard[0]["object"], hard[0]["failed_attempts"], hard[0]["last_outcome"]) == ("case-1", 3, "no-answer")
    page = cli_json(cli_db, "due", "--limit", "10")  # a page is the API's: tasks only
    assert set(page) == {"items", "next"} and not any(i.get("hard_to_reach") for i in page["items"])
    assert "HARD TO REACH" in cli(cli_db, "due", "--limit", "10").output
    assert not any(i.get("hard_to_reach") for i in cli_json(cli_db, "due", "--task", "test_result_due"))
    assert not any(i.get("hard_to_reach") for i in cli_json(cli_db, "due", "--kind", "contact"))
    # Reached: off the list.
    cli_json(cli_db, "attempt", "case-1", "--channel", "visit", "--outcome", "reached", "--reason", "home")
    assert "HARD TO REACH" not in cli(cli_db, "due").output


def test_the_cli_refuses_bad_notes_and_attempts_with_their_exit_codes(cli_db: str) -> None:
    assert cli(cli_db, "person", "add", "--ref", "R-1").exit_code == 0
    for given in (["--text", " "], []):
        empty = cli_json(cli_db, "note", "person-1", *given, code=2)
        assert empty["options"] == ["--text"] and empty["exit_code"] == 2
    fax = cli_json(cli_db, "attempt", "case-9", "--channel", "fax", "--outcome", "reached", "--reason", "r",
                   code=2)
    assert fax["options"] == ["--channel"]
    assert cli_json(cli_db, "attempt", "case-9", "--channel", "sms", "--outcome", "reached", "--reason", "r",
                    code=4)["exit_code"] == 4
    no_reason = cli_json(cli_db, "attempt", "case-9", "--channel", "sms", "--outcome", "reached", code=2)
    assert no_reason["options"] == ["--reason"]
    auditor = runner.invoke(app, ["--db", cli_db, "note", "person-1", "--text", "x", "--actor", "auditor:test"])
    assert auditor.exit_code == 3
    assert cli(cli_db, "note", "--help").exit_code == 0


# ---- the HTTP API and the pages -----------------------------------------------------------------------------


def api_post(client: Any, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers={"X-CSRF-Token": client.csrf})


def test_the_api_takes_notes_and_attempts(client_for: Any) -> None:
    staff = client_for(STAFF)
    assert api_post(staff, "/api/persons", {"ref": "R-1"}).status_code == 201
    assert api_post(staff, "/api/cases", {"person": "person-1", "onset": "2025-03-01", "symptoms": ["rash"],
                                          "criteria": ["msm"]}).status_code == 201
    made = api_post(staff, "/api/objects/case-1/note", {"text": "tolk: arabisk"})
    assert made.status_code == 201 and made.json()["id"] == "note-1"
    tried = api_post(staff, "/api/objects/case-1/attempt", {"channel": "sms", "outcome": "wrong-number",
                                                            "reason": "number not in use"})
    assert tried.status_code == 201 and tried.json()["failed_attempts"] == 1
    listed = staff.get("/api/objects/case-1/notes")
    assert listed.status_code == 200
    assert [(n["kind"], n["text"]) for n in listed.json()] == [("note", "tolk: arabisk"),
                                                               ("attempt", "number not in use")]
    for body in ({"channel": "fax", "outcome": "reached", "reason": "r"}, {"channel": "sms", "outcome": "reached"},
                 {"channel": "sms", "outcome": "reached", "reason": "r", "extra": 1}):
        refused = api_post(staff, "/api/objects/case-1/attempt", body)
        assert refused.status_code == 422, body
        assert {"error", "message", "exit_code", "status"} <= set(refused.json())
    assert api_post(staff, "/api/objects/case-1/note", {"text": "   "}).status_code == 422
    assert api_post(staff, "/api/objects/timer-1/note", {"text": "x"}).status_code == 422
    assert api_post(staff, "/api/objects/case-9/note", {"text": "x"}).status_code == 404
    assert staff.get("/api/hard-to-reach").json() == []
    auditor = client_for("auditor:test")
    assert api_post(auditor, "/api/objects/case-1/note", {"text": ""}).status_code == 403
    assert len(staff.get("/api/objects/case-1/notes").json()) == 2


def test_the_api_refuses_notes_outside_the_users_units(client_for: Any, cli_db: str) -> None:
    from engine.accounts import Accounts
    from engine.bootstrap import open_engine
    from tests.conftest import PASSWORD

    engine = open_engine(cli_db)
    try:
        engine.add_unit("Region Nord", parent="Danmark", actor=ADMIN)
        engine.add_unit("Region Syd", parent="Danmark", actor=ADMIN)
        for name, unit in (("nord:staff", "Region Nord"), ("syd:staff", "Region Syd")):
            Accounts(engine).add_user(name, "staff", PASSWORD, actor=ADMIN, units=[unit])
    finally:
        engine.db.dispose()
    syd = client_for("syd:staff")
    assert api_post(syd, "/api/persons", {"ref": "SYD-1"}).status_code == 201
    assert api_post(syd, "/api/cases", {"person": "person-1", "onset": "2025-03-01", "symptoms": ["rash"],
                                        "criteria": ["msm"]}).status_code == 201
    assert api_post(syd, "/api/objects/case-1/note", {"text": "ours"}).status_code == 201
    nord = client_for("nord:staff")
    refused = api_post(nord, "/api/objects/case-1/note", {"text": "theirs"})
    assert refused.status_code == 403 and refused.json()["error"] == "outside_units"
    assert api_post(nord, "/api/objects/case-1/attempt", {"channel": "phone", "outcome": "reached",
                                                          "reason": "r"}).status_code == 403
    assert nord.get("/api/objects/case-1/notes").status_code == 403
    assert [n["text"] for n in syd.get("/api/objects/case-1/notes").json()] == ["ours"]


def test_the_page_shows_the_notes_and_their_forms_in_danish(client_for: Any) -> None:
    from tests.test_web_pages import error_box, form, post
    from tests.test_web_pages import text as visible

    staff = client_for(STAFF)
    assert api_post(staff, "/api/persons", {"ref": "R-1"}).status_code == 201
    assert api_post(staff, "/api/cases", {"person": "person-1", "onset": "2025-03-01", "symptoms": ["rash"],
                                          "criteria": ["msm"]}).status_code == 201
    page = staff.get("/objects/case-1").text
    assert "Noter og kontaktforsøg" in visible(page) and "Ingen noter eller kontaktforsøg endnu." in visible(page)
    note_form, attempt_form = form(page, "note-form"), form(page, "attempt-form")
    assert note_form is not None and "Ny note" in note_form and 'action="/objects/case-1/notes/add"' in note_form
    assert attempt_form is not None and "Kontaktforsøg" in attempt_form
    for word in ("telefon", "sms", "brev", "besøg", "truffet", "intet svar", "forkert nummer", "Begrundelse"):
        assert word in attempt_form, word
    response = post(staff, "/objects/case-1/notes/add", {"text": "Ring efter kl. 16 <b>"})
    assert response.status_code == 303 and response.headers["location"].endswith("#notes")
    page = staff.get(response.headers["location"]).text
    assert "Ring efter kl. 16 &lt;b&gt;" in page  # escaped
    shown = visible(page)
    assert "Ring efter kl. 16 <b>" in shown.split("Noter og kontaktforsøg", 1)[1]
    assert "03.03.2025 kl. 08.00" in shown.split("Noter og kontaktforsøg", 1)[1].split("Tidslinje", 1)[0]
    timeline = page.split("Tidslinje", 1)[1]
    assert 'data-note="note-1"' in timeline and "Ring efter kl. 16 &lt;b&gt;" in timeline
    refused = post(staff, "/objects/case-1/notes/add", {"text": "  "})
    assert refused.status_code == 422 and "Tekst er tom" in error_box(refused.text)
    for _ in range(3):
        done = post(staff, "/objects/case-1/attempts/add", {"channel": "phone", "outcome": "no-answer",
                                                            "reason": "telefonsvarer"})
        assert done.status_code == 303
    page = staff.get("/objects/case-1").text
    assert "telefon, intet svar" in page.split("Tidslinje", 1)[1]
    assert "svær at nå" in visible(page)
    worklist = staff.get("/worklist").text
    assert "Svære at nå" in visible(worklist)
    section = worklist.split('id="hard-to-reach-list"', 1)[1].split("</table>", 1)[0]
    assert 'data-object="case-1" data-failed-attempts="3"' in section and "intet svar" in section
    bad = post(staff, "/objects/case-1/attempts/add", {"channel": "fax", "outcome": "reached", "reason": "r"})
    assert bad.status_code == 422 and "ingen kanal" in error_box(bad.text)
