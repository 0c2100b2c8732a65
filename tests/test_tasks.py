"""Missed tasks (issue 12 item 14; README, Decisions): a task whose deadline passes undone is **missed**, never
done. Its timer's status says so, its firing's audit entry says so, it stays in the worklist's missed section and on
the object's page until someone records what happened (`task resolve TIMER --outcome ... --reason ...`), and nothing
else marks it done: a late completion resolves it as done-late. Both backends; CLI, HTTP and the web page.

The written notification (§3.1, within 24 hours of confirmation) is the task these tests miss: a case confirmed on
Monday 2025-03-03 at 08:00 is due in writing by Tuesday 08:00.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.core import Engine
from entry.cli import app
from persistence.database import Database
from scheduler.firing import advance_simulated_clock
from tests.helpers import confirmed, contents, person
from workflows.errors import NotFound, NotPermitted, RuleRefused, UsageError

T = datetime.fromisoformat
S3_1 = "SST-mpox-7.1 §3.1"
WRITTEN = "written_notification_due"
WRITTEN_DUE = "2025-03-04T08:00:00+01:00"
runner = CliRunner()


def written(engine: Engine, case_id: str) -> dict[str, Any]:
    """The case's written-notification task, as `show` gives it."""
    return next(t for t in engine.show(case_id)["timers"] if t["name"] == WRITTEN)


def missed_items(engine: Engine) -> list[dict[str, Any]]:
    return [i for i in engine.worklist() if i["missed"]]


def missed_case(engine: Engine, clock: Any) -> tuple[str, str]:
    """A confirmed case whose written notification passed its deadline undone: (case id, timer id)."""
    case_id = confirmed(engine, person(engine))
    advance_simulated_clock(engine, T("2025-03-04T09:00:00+01:00"))
    return case_id, written(engine, case_id)["id"]


def test_a_deadline_that_passes_undone_is_missed_never_done(engine: Engine, clock: Any) -> None:
    case_id = confirmed(engine, person(engine))
    assert written(engine, case_id)["status"] == "pending"
    advance_simulated_clock(engine, T("2025-03-04T07:59:59+01:00"))
    assert written(engine, case_id)["status"] == "pending"
    advance_simulated_clock(engine, T("2025-03-04T08:00:00+01:00"))
    task = written(engine, case_id)
    assert (task["status"], task["due_at"], task["satisfied_at"]) == ("missed", WRITTEN_DUE, None)
    [entry] = [e for e in engine.audit(entity=case_id) if e["trigger"] == WRITTEN]
    assert entry["data"]["outcome"] == "missed"
    assert entry["reason"].startswith("missed: the task 'notify SSI and STPS in writing' was not done")
    assert (entry["rule"], entry["actor"], entry["timers_done"]) == (S3_1, f"timer:{WRITTEN}", [])
    [item] = [i for i in missed_items(engine) if i["object"] == case_id and i["name"] == WRITTEN]
    assert (item["overdue"], item["timer"], item["rule"]) == (True, task["id"], S3_1)
    # Weeks later it is still there: nothing but a resolution takes it away.
    advance_simulated_clock(engine, T("2025-04-01T12:00:00+02:00"))
    assert any(i["timer"] == task["id"] for i in missed_items(engine))


def test_a_missed_task_leaves_the_worklist_once_resolved_and_stays_missed(engine: Engine, clock: Any) -> None:
    case_id, timer_id = missed_case(engine, clock)
    version = engine.show(case_id)["version"]
    resolved = engine.resolve_task(timer_id, "not-reachable", actor="staff:stps",
                                   reason="SEI2 was down all Tuesday; sent on paper")
    assert (resolved["status"], resolved["outcome"], resolved["resolved_at"], resolved["satisfied_at"],
            resolved["resolution"]) == ("missed", "not-reachable", "2025-03-04T09:00:00+01:00", None,
                                        "SEI2 was down all Tuesday; sent on paper")
    assert not any(i["timer"] == timer_id for i in engine.worklist())
    [entry] = [e for e in engine.audit(entity=case_id) if e["trigger"] == "resolve"]
    assert (entry["from"], entry["to"], entry["rule"], entry["actor"], entry["changes"]) == (
        "confirmed", "confirmed", S3_1, "staff:stps", None)
    assert entry["data"] == {"timer": timer_id, "name": WRITTEN, "outcome": "not-reachable", "status": "missed"}
    # The object itself did not change: same version; the log still rebuilds it exactly; the chain is whole.
    assert engine.show(case_id)["version"] == version
    assert engine.audit_replay()["matches"] is True
    assert engine.audit_verify()["intact"] is True
    # The page of the object as it was, from the log alone, shows the resolution too.
    as_of = engine.show(case_id, as_of=T("2025-03-04T10:00:00+01:00"))
    [rebuilt] = [t for t in as_of["timers"] if t["name"] == WRITTEN]
    assert (rebuilt["status"], rebuilt["outcome"]) == ("missed", "not-reachable")


def test_a_late_completion_resolves_the_missed_task_as_done_late_and_never_as_done(engine: Engine, clock: Any) -> None:
    case_id, timer_id = missed_case(engine, clock)
    clock.set(T("2025-03-04T10:30:00+01:00"))
    view = engine.apply(case_id, "notify", data={"channel": "written"}, actor="staff:stps")
    assert view["written_notified_at"] == "2025-03-04T10:30:00+01:00"
    task = written(engine, case_id)
    assert (task["status"], task["satisfied_at"], task["outcome"], task["resolved_at"]) == (
        "missed", None, "done-late", "2025-03-04T10:30:00+01:00")
    entry = engine.audit(entity=case_id)[-1]
    assert entry["trigger"] == "notify"
    assert entry["timers_done"] == [{"timer": timer_id, "name": WRITTEN, "outcome": "done-late",
                                     "resolution": "recorded late (case-1: confirmed)"}]
    assert not any(i["timer"] == timer_id for i in engine.worklist())
    assert engine.audit_replay()["matches"] is True


def test_a_task_done_in_time_is_done_and_its_timer_never_fires(engine: Engine, clock: Any) -> None:
    case_id = confirmed(engine, person(engine))
    clock.set(T("2025-03-03T15:00:00+01:00"))
    engine.apply(case_id, "notify", data={"channel": "written"}, actor="staff:stps")
    task = written(engine, case_id)
    assert (task["status"], task["satisfied_at"]) == ("cancelled", "2025-03-03T15:00:00+01:00")
    assert "outcome" not in task
    with pytest.raises(RuleRefused, match="done in time"):
        engine.resolve_task(task["id"], "not-needed", actor="staff:test", reason="x")


def test_a_pending_task_can_be_closed_as_not_needed_and_is_then_not_missed(engine: Engine, clock: Any) -> None:
    case_id = confirmed(engine, person(engine))
    timer_id = written(engine, case_id)["id"]
    with pytest.raises(RuleRefused, match="not missed"):
        engine.resolve_task(timer_id, "done-late", actor="staff:test", reason="it was done")
    engine.resolve_task(timer_id, "not-needed", actor="staff:test", reason="the lab notified SSI itself")
    assert not any(i["timer"] == timer_id for i in engine.worklist())
    advance_simulated_clock(engine, T("2025-03-05T08:00:00+01:00"))
    task = written(engine, case_id)
    assert (task["status"], task["outcome"]) == ("fired", "not-needed")
    assert engine.audit_replay()["matches"] is True


def test_resolving_refuses_what_cannot_be_resolved_and_changes_nothing(engine: Engine, db: Database,
                                                                      clock: Any) -> None:
    case_id, timer_id = missed_case(engine, clock)
    engine.apply(case_id, "heal", data={"on": date(2025, 3, 4)}, actor="staff:test")
    condom = next(t for t in engine.show(case_id)["timers"] if t["name"] == "condom_advice_ends")
    before = contents(db)
    with pytest.raises(UsageError, match="not an outcome"):
        engine.resolve_task(timer_id, "done", actor="staff:test", reason="x")
    with pytest.raises(UsageError, match="with reason"):
        engine.resolve_task(timer_id, "declined", actor="staff:test", reason="  ")
    with pytest.raises(RuleRefused, match="automatic timer"):
        engine.resolve_task(condom["id"], "not-needed", actor="staff:test", reason="x")
    with pytest.raises(NotFound, match="No timer"):
        engine.resolve_task("case-1", "declined", actor="staff:test", reason="x")
    assert contents(db) == before
    engine.resolve_task(timer_id, "declined", actor="staff:test", reason="the doctor refused")
    with pytest.raises(RuleRefused, match="resolved already"):
        engine.resolve_task(timer_id, "done-late", actor="staff:test", reason="x")
    with pytest.raises(NotPermitted):
        engine.resolve_task(timer_id, "declined", actor="auditor:test", reason="x")


def test_the_cli_lists_missed_tasks_and_resolves_them(cli_db: str) -> None:
    def run(*args: str) -> Any:
        return runner.invoke(app, ["--db", cli_db, *args])

    for args in (("person", "add", "--ref", "R1", "--actor", "staff:test"),
                 ("case", "open", "--person", "person-1", "--onset", "2025-03-01", "--symptoms", "rash",
                  "--criteria", "msm", "--actor", "staff:test"),
                 ("case", "confirm", "case-1", "--pcr-on", "2025-03-03", "--actor", "staff:test"),
                 ("clock", "advance", "--to", "2025-03-04T09:00:00+01:00", "--actor", "staff:test")):
        result = run(*args)
        assert result.exit_code == 0, result.output
    due = run("due")
    line = next(x for x in due.stdout.splitlines() if "in writing" in x)
    assert line.startswith("MISSED") and "case-1" in line
    timer_id = next(i["timer"] for i in json.loads(run("due", "--json").stdout) if i["name"] == WRITTEN)
    refused = run("task", "resolve", timer_id, "--outcome", "done", "--reason", "x", "--actor", "staff:test")
    assert refused.exit_code == 2 and "unknown outcome 'done'" in refused.stderr
    resolved = run("task", "resolve", timer_id, "--outcome", "done-late", "--reason", "sent at 10:00 by SEI2",
                   "--actor", "staff:test", "--json")
    assert resolved.exit_code == 0, resolved.output
    assert json.loads(resolved.stdout)["outcome"] == "done-late"
    again = run("task", "resolve", timer_id, "--outcome", "done-late", "--reason", "x", "--actor", "staff:test")
    assert again.exit_code == 3 and "resolved already" in again.stderr and S3_1 not in again.stdout
    assert "in writing" not in run("due").stdout
    shown = run("show", timer_id)
    assert shown.exit_code == 0 and shown.stdout.startswith(f"{timer_id}  missed")


def test_the_api_and_the_worklist_page_resolve_a_missed_task(client_for: Any, cli_db: str) -> None:
    from entry.web.api import CSRF_HEADER

    staff = client_for("staff:test")
    headers = {CSRF_HEADER: staff.csrf}

    def post(path: str, body: dict[str, Any]) -> Any:
        return staff.post(path, json=body, headers=headers)

    assert post("/api/persons", {"ref": "R1"}).status_code == 201
    assert post("/api/cases", {"person": "person-1", "onset": "2025-03-01", "symptoms": ["rash"],
                               "criteria": ["msm"]}).status_code == 201
    assert post("/api/cases/case-1/confirm", {"pcr_on": "2025-03-03"}).status_code == 200
    pending = next(t["id"] for t in staff.get("/api/show/case-1").json()["timers"] if t["name"] == WRITTEN)
    early = post(f"/api/timers/{pending}/resolve", {"outcome": "done-late", "reason": "x"})
    assert (early.status_code, early.json()["exit_code"], early.json()["rule"]) == (409, 3, S3_1)
    assert post(f"/api/timers/{pending}/resolve", {"outcome": "maybe", "reason": "x"}).status_code == 422
    assert post("/api/clock/advance", {"to": "2025-03-04T09:00:00+01:00"}).status_code == 200
    page = staff.get("/worklist").text
    missed_section = page.split('data-section="Missed"', 1)[1].split("</table>", 1)[0]
    assert "anmeld skriftligt til SSI og STPS" in missed_section
    assert f'action="/timers/{pending}/resolve"' in missed_section
    response = staff.post(f"/timers/{pending}/resolve", data={"csrf_token": staff.csrf, "outcome": "not-reachable",
                                                              "reason": "no answer at SSI"})
    assert response.status_code == 303 and response.headers["location"].startswith("/objects/case-1")
    timer = staff.get(f"/api/show/{pending}").json()
    assert (timer["status"], timer["outcome"], timer["resolution"]) == ("missed", "not-reachable", "no answer at SSI")
    assert f'/timers/{pending}/resolve' not in staff.get("/worklist").text
    case_page = staff.get("/objects/case-1").text
    assert "afklaret kunne ikke kontaktes" in case_page  # resolved: not reachable


def test_a_missed_task_survives_a_dst_change_in_the_worklist(engine: Engine, clock: Any) -> None:
    """Confirmed on Saturday 29 March 2025 at 10:00 (+01:00): the 24 hours are real hours (an hour-level
    deadline), so the written notification is due on Sunday at 11:00 summer time (+02:00)."""
    clock.set(T("2025-03-29T10:00:00+01:00"))
    case_id = confirmed(engine, person(engine), onset="2025-03-27", pcr_on="2025-03-29")
    assert written(engine, case_id)["due_at"] == "2025-03-30T11:00:00+02:00"
    advance_simulated_clock(engine, T("2025-03-30T11:00:00+02:00") + timedelta(minutes=1))
    [item] = [i for i in missed_items(engine) if i["object"] == case_id and i["name"] == WRITTEN]
    assert item["due_at"] == "2025-03-30T11:00:00+02:00"
