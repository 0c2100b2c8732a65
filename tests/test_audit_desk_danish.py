"""The auditor's desk and an object's timeline on the Danish pages (issue 16): the engine's own actors and reasons
(a timer's "missed"/"due", a change another object's change made), an entry's data and timers by their Danish
names, with Danish dates and durations; the stored entries are the engine's English history, never changed by
being read. And a clinician's risk assessment of a contact, whose reason the rules always require: its form says
so, and a post without it is refused at the field.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest

from engine.core import Engine
from persistence.database import Database
from scheduler.firing import advance_simulated_clock
from tests.helpers import confirmed, contents, person

STAFF = "staff:test"
AUDITOR = "auditor:test"
T = datetime.fromisoformat


@pytest.fixture
def db(cli_db: str) -> Iterator[Database]:
    database = Database(cli_db)
    yield database
    database.dispose()


@pytest.fixture
def engine(client_for: Any) -> Engine:
    engine: Engine = client_for().app.state.web.engine()
    return engine


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def cell(page: str, cell_id: str) -> str:
    found = re.search(rf'<td[^>]*id="{cell_id}"[^>]*>(.*?)</td>', page, re.S)
    assert found is not None, cell_id
    return text_of(found.group(1))


def data_rows(page: str) -> dict[str, tuple[str, str]]:
    """The entry's "Angivne data": each key as stored, with the heading and the value the page shows."""
    table = re.search(r'<table id="data">(.*?)</table>', page, re.S)
    assert table is not None, page
    return {key: (text_of(th), text_of(td)) for key, th, td in
            re.findall(r'<tr data-key="([^"]+)"><th>(.*?)</th><td>(.*?)</td></tr>', table.group(1), re.S)}


def a_missed_history(engine: Engine) -> tuple[str, str]:
    """A case confirmed on Monday 03.03.2025 at 08.00 and a household contact of it, then the clock moved to
    25.03.2025: its tasks not done are missed, its windows close. (case id, contact id)"""
    case_id = confirmed(engine, person(engine, "REF-DK-CASE"))
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    contact_id = engine.open("contact", "add", person=person(engine, "REF-DK-CONTACT"), actor=STAFF, data={
        "case": case_id, "exposed": date(2025, 3, 2), "kind": "household", "risk": None, "reason": None,
        "anonymous_via_doctor": False})["id"]
    advance_simulated_clock(engine, T("2025-03-25T12:00:00+01:00"))
    return case_id, contact_id


def entry_of(engine: Engine, object_id: str, trigger: str) -> dict[str, Any]:
    [entry] = [e for e in engine.audit(entity=object_id) if e["trigger"] == trigger]
    return entry


def test_a_missed_task_s_entry_is_danish_on_the_desk_and_its_stored_entry_unchanged(
        client_for: Any, engine: Engine, db: Database) -> None:
    case_id, _contact = a_missed_history(engine)
    phone = entry_of(engine, case_id, "phone_notification_due")
    # What the engine wrote, and keeps: English, with the ISO instant.
    assert phone["actor"] == "timer:phone_notification_due"
    assert re.fullmatch(r"missed: the task 'notify STPS by phone' was not done by its deadline "
                        r"2025-03-03T\d\d:00:00\+01:00", phone["reason"])
    due = T(phone["data"]["due_at"])
    auditor = client_for(AUDITOR)  # no Accept-Language: Danish
    stored = contents(db)["audit_log"]  # after the login's own entry

    page = auditor.get(f"/audit/entries/{phone['seq']}")
    assert page.status_code == 200
    assert cell(page.text, "actor") == "Tidsfrist: telefonisk anmeldelse til STPS"
    assert cell(page.text, "reason") == (
        "forsømt: opgaven “anmeld telefonisk til STPS” blev ikke udført inden fristen "
        f"03.03.2025 kl. {due.hour:02d}.00")
    rows = data_rows(page.text)
    assert rows["timer"][0] == "Tidsfrist" and rows["timer"][1].startswith("timer-")
    assert rows["due_at"] == ("Frist", f"03.03.2025 kl. {due.hour:02d}.00")
    assert phone["data"]["fired_late_by_seconds"] == 0
    assert rows["fired_late_by_seconds"] == ("Udløst forsinket med", "0 sek")
    assert rows["outcome"] == ("Udfald", "forsømt")
    shown = text_of(page.text.split('<h2>', 1)[1].split('<table id="hashes">')[0])
    for raw in ("due_at", "fired_late_by_seconds", "missed", "timer:", "2025-03-03T", "(tidsfrist)"):
        assert raw not in shown, raw
    # The desk's list and its actor picker say the same.
    listing = auditor.get("/audit", params={"entity": case_id}).text
    row = re.search(rf'<tr data-seq="{phone["seq"]}">(.*?)</tr>', listing, re.S)
    assert row is not None
    assert "Tidsfrist: telefonisk anmeldelse til STPS" in text_of(row.group(1))
    assert "timer:phone_notification_due" not in text_of(row.group(1)) and "(tidsfrist)" not in text_of(row.group(1))
    assert "forsømt: opgaven “anmeld telefonisk til STPS”" in text_of(row.group(1))
    picker = re.search(r'<select[^>]*id="actor-picker"[^>]*>(.*?)</select>', listing, re.S)
    assert picker is not None
    assert re.search(r'<option value="timer:phone_notification_due"[^>]*>Tidsfrist: telefonisk anmeldelse til STPS<',
                     picker.group(1))
    # Reading changed nothing: the entries (and their hashes) are as they were.
    assert engine.audit_entry(phone["seq"])["hash"] == phone["hash"]
    assert engine.audit_entry(phone["seq"])["reason"] == phone["reason"]
    assert contents(db)["audit_log"] == stored


def test_a_window_that_closes_is_due_in_danish_and_a_late_firing_a_readable_duration(
        client_for: Any, engine: Engine, db: Database) -> None:
    _case, contact_id = a_missed_history(engine)
    window = entry_of(engine, contact_id, "pep_window_closes")
    assert window["reason"] == "due 2025-03-17T00:00:00+01:00" and window["actor"] == "timer:pep_window_closes"
    auditor = client_for(AUDITOR)
    page = auditor.get(f"/audit/entries/{window['seq']}").text
    assert cell(page, "reason") == "forfalden 17.03.2025 kl. 00.00"
    assert cell(page, "actor").startswith("Tidsfrist: ") and "pep_window_closes" not in cell(page, "actor")
    # The object's own timeline says the same.
    timeline = text_of(auditor.get(f"/objects/{contact_id}").text)
    assert "forfalden 17.03.2025 kl. 00.00" in timeline and "due 2025-03-17" not in timeline
    assert "timer:pep_window_closes" not in timeline

    # A timer that fires late (the scheduler was down): its lateness as days, hours and minutes.
    case_id = confirmed(engine, person(engine, "REF-DK-LATE"), onset="2025-03-20", pcr_on="2025-03-24")
    phone = next(t for t in engine.show(case_id)["timers"] if t["name"] == "phone_notification_due")
    engine.simulated_clock.set(T("2025-03-27T09:05:00+01:00"))
    engine.fire_due(limit=100)
    late = entry_of(engine, case_id, "phone_notification_due")
    seconds = late["data"]["fired_late_by_seconds"]
    assert seconds == int((T("2025-03-27T09:05:00+01:00") - T(phone["due_at"])).total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    expected = " ".join(p for p in (f"{days} d" if days else "", f"{hours} t" if hours else "",
                                    f"{minutes} min" if minutes else "") if p)
    rows = data_rows(auditor.get(f"/audit/entries/{late['seq']}").text)
    assert rows["fired_late_by_seconds"] == ("Udløst forsinket med", expected)
    assert engine.audit_entry(late["seq"])["hash"] == late["hash"]


def test_a_cascade_s_reason_names_its_object_and_action_in_danish_and_typed_reasons_stay_as_typed(
        client_for: Any, engine: Engine) -> None:
    person_id = person(engine, "REF-DK-CASCADE")
    case_id = confirmed(engine, person_id)
    engine.correct_person(person_id, changes={"born": date(2020, 1, 1)}, actor=STAFF, reason="wrong year typed")
    cascade = entry_of(engine, case_id, "person_corrected")
    assert cascade["reason"] == f"from {person_id}: correct"
    auditor = client_for(AUDITOR)
    page = auditor.get(f"/audit/entries/{cascade['seq']}").text
    assert cell(page, "reason") == f"fra {person_id}: rettelse"
    correction = entry_of(engine, person_id, "correct")
    page = auditor.get(f"/audit/entries/{correction['seq']}").text
    assert cell(page, "reason") == "wrong year typed"
    assert cell(page, "actor") == f"{STAFF} (personale)"  # a user by name, as stored
    rows = data_rows(page)
    assert rows["born_changed"] == ("Fødselsdato ændret", "ja")
    assert "before" in rows and rows["before"][0] == "Før"


# ---- a reason the rules always require: declared so, on the form and in the API --------------------------------


def test_the_risk_assessment_form_requires_its_reason_and_a_post_without_it_is_refused_at_the_field(
        client_for: Any, engine: Engine, db: Database) -> None:
    case_id = confirmed(engine, person(engine, "REF-DK-ASSESS-CASE"))
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    contact_id = engine.open("contact", "add", person=person(engine, "REF-DK-ASSESS"), actor=STAFF, data={
        "case": case_id, "exposed": date(2025, 3, 2), "kind": "household", "risk": None, "reason": None,
        "anonymous_via_doctor": False})["id"]
    staff = client_for(STAFF)
    page = staff.get(f"/objects/{contact_id}").text
    found = re.search(r'<form[^>]*id="assess".*?</form>', page, re.S)
    assert found is not None, page
    assess = found.group(0)
    reason = re.search(r'<label>([^<]*)<br><textarea[^>]*name="reason"[^>]*>', assess)
    assert reason is not None, assess
    assert " ".join(reason.group(1).split()) == "Begrundelse *"
    assert re.search(r'\brequired\b', reason.group(0))

    version = engine.show(contact_id)["version"]
    before = contents(db, reads=False)
    response = staff.post(f"/objects/{contact_id}/assess", data={
        "risk": "high", "if_version": str(version), "csrf_token": staff.csrf})
    assert response.status_code == 422
    error = re.search(r'<div class="field-error" id="assess-reason-error">(.*?)</div>', response.text, re.S)
    assert error is not None, response.text
    assert text_of(error.group(1)) == "Begrundelse: skal udfyldes"
    assert contents(db, reads=False) == before
    # With its reason, the same post is taken.
    response = staff.post(f"/objects/{contact_id}/assess", data={
        "risk": "high", "reason": "close household contact, shared bed", "if_version": str(version),
        "csrf_token": staff.csrf})
    assert response.status_code == 303, response.text
    assert entry_of(engine, contact_id, "assess")["reason"] == "close household contact, shared bed"


def test_the_api_schema_requires_the_reason_where_the_rules_always_do(client_for: Any) -> None:
    schema = client_for(STAFF).get("/openapi.json")
    assert schema.status_code == 200
    bodies = schema.json()["components"]["schemas"]
    for name in ("ContactAssess", "CaseCorrect", "CaseAntiviral", "PersonCorrect"):
        assert "reason" in bodies[name].get("required", []), name
        assert bodies[name]["properties"]["reason"]["minLength"] == 1, name
    for name in ("ContactExpose", "CaseConfirm"):  # a reason the rules only sometimes need stays optional
        assert "reason" not in bodies[name].get("required", []), name
