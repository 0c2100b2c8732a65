"""A person's facts come and go (issue 12 items 1-2): pregnancy and breastfeeding (§6.2.1), doses given elsewhere
(§6.3: no more than 2 over the person), a corrected birth date. `person add` and `person update` on both backends;
the audit entry holds flags and internal ids only, never the reference or the birth date."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.core import Engine
from entry.cli import app
from persistence.database import Database
from tests.helpers import contents, last_entry
from workflows.errors import NotFound, NotPermitted, UsageError

D = date.fromisoformat
runner = CliRunner()


def test_a_person_is_registered_with_breastfeeding_and_doses_given_elsewhere(engine: Engine) -> None:
    view = engine.add_person(ref="0101901234", born=D("1990-01-01"), breastfeeding=True, doses_elsewhere=1,
                             last_dose_on=D("2025-01-10"), actor="staff:test")
    assert (view["breastfeeding"], view["pregnant"], view["doses_elsewhere"], view["last_dose_elsewhere_on"]) == (
        True, False, 1, "2025-01-10")
    entry = last_entry(engine, view["id"])
    assert entry["changes"]["breastfeeding"] is True and entry["changes"]["last_dose_elsewhere_on"] == "2025-01-10"
    text = json.dumps(entry)
    assert "0101901234" not in text and "1990-01-01" not in text


def test_pregnancy_and_breastfeeding_are_gained_and_lost(engine: Engine) -> None:
    pid = engine.add_person(ref="R1", born=D("1995-05-05"), actor="staff:test")["id"]
    view = engine.update_person(pid, changes={"pregnant": True}, actor="staff:test", reason="week 12")
    assert view["pregnant"] is True
    view = engine.update_person(pid, changes={"pregnant": False, "breastfeeding": True}, actor="staff:test")
    assert (view["pregnant"], view["breastfeeding"]) == (False, True)
    entry = last_entry(engine, pid)
    assert (entry["trigger"], entry["changes"]) == ("update", {"pregnant": False, "breastfeeding": True})
    assert entry["data"] == {"pregnant": False, "breastfeeding": True, "born_changed": False}
    # A corrected birth date is recorded as corrected, never by its value.
    engine.update_person(pid, changes={"born": D("1995-06-05")}, actor="staff:test")
    entry = last_entry(engine, pid)
    assert entry["data"] == {"born_changed": True} and entry["changes"] == {}
    assert "1995-06-05" not in json.dumps(entry)
    assert engine.show(pid)["born"] == "1995-06-05"
    assert engine.audit_verify()["intact"] is True


def test_impossible_person_facts_are_refused_with_the_option_to_fix_and_change_nothing(engine: Engine,
                                                                                      db: Database) -> None:
    pid = engine.add_person(ref="R1", born=D("1995-05-05"), actor="staff:test")["id"]
    before = contents(db)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"doses_elsewhere": 3, "last_dose_on": D("2025-01-01")}, "give 0, 1 or 2"),
        ({"doses_elsewhere": 1}, "add last_dose_on"),
        ({"last_dose_on": D("2025-01-01")}, "goes with doses_elsewhere"),
        ({"doses_elsewhere": 1, "last_dose_on": D("2025-03-04")}, "after today"),
        ({"doses_elsewhere": 1, "last_dose_on": D("1990-01-01")}, "before the birth date"),
        ({"born": D("2025-03-04")}, "correct the date .born."),
        ({"pregnant": False}, "nothing to change"),
        ({}, "nothing to change"),
        ({"ref": "X"}, "has no field ref"),
    ]
    for changes, message in cases:
        with pytest.raises(UsageError, match=message):
            engine.update_person(pid, changes=changes, actor="staff:test")
    with pytest.raises(NotFound):
        engine.update_person("person-99", changes={"pregnant": True}, actor="staff:test")
    assert contents(db) == before
    with pytest.raises(NotPermitted):
        engine.update_person(pid, changes={"pregnant": True}, actor="auditor:test")


def test_person_update_on_the_command_line_and_over_http(cli_db: str, client_for: Any) -> None:
    def run(*args: str) -> Any:
        return runner.invoke(app, ["--db", cli_db, *args])

    added = run("person", "add", "--ref", "R1", "--born", "1990-02-02", "--pregnant", "--actor", "staff:test")
    assert added.exit_code == 0, added.output
    updated = run("person", "update", "person-1", "--not-pregnant", "--breastfeeding", "--doses-elsewhere", "1",
                  "--last-dose-on", "2025-02-01", "--actor", "staff:test", "--json")
    assert updated.exit_code == 0, updated.output
    view = json.loads(updated.stdout)
    assert (view["pregnant"], view["breastfeeding"], view["doses_elsewhere"]) == (False, True, 1)
    bad = run("person", "update", "person-1", "--last-dose-on", "2026-01-01", "--actor", "staff:test")
    assert bad.exit_code == 2 and "--last-dose-on 2026-01-01 is after today" in bad.stderr
    cleared = run("person", "update", "person-1", "--doses-elsewhere", "0", "--actor", "staff:test", "--json")
    assert json.loads(cleared.stdout)["last_dose_elsewhere_on"] is None  # no doses elsewhere: no last one either

    from entry.web.api import CSRF_HEADER

    staff = client_for("staff:test")
    response = staff.post("/api/persons/person-1/update", json={"breastfeeding": False},
                          headers={CSRF_HEADER: staff.csrf})
    assert response.status_code == 200, response.text
    assert (response.json()["breastfeeding"], response.json()["doses_elsewhere"]) == (False, 0)
    refused = staff.post("/api/persons/person-1/update", json={"doses_elsewhere": 5}, headers={CSRF_HEADER: staff.csrf})
    assert refused.status_code == 422
    # The person's page offers the same change, filled in with what is recorded now.
    page = staff.get("/objects/person-1").text
    assert 'action="/objects/person-1/update"' in page
