"""The audit log as auditors use it: users and roles, refusals that are themselves audited, filters, the timeline,
the streamed export (read back entry for entry), and the first admin of a new database. Both backends."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.auditing import EXPORT_FIELDS, read_export
from engine.bootstrap import open_engine
from persistence.audit import entry_hash
from persistence.database import Database
from persistence.models import AuditEntry
from tests.test_cli import cli, describe, doc, ok, refused, snapshot

AUDITOR = "auditor:test"
STAFF = "staff:test"


def story(url: str) -> dict[str, str]:
    """A person, a confirmed case with a contact, a day of timers: entries of several actors and triggers."""
    person = doc(url, "person", "add", "--ref", "REF-A", "--born", "1990-01-01", "--actor", STAFF)["id"]
    partner = doc(url, "person", "add", "--ref", "REF-B", "--actor", STAFF)["id"]
    case = doc(url, "case", "open", "--person", person, "--onset", "2025-03-01", "--symptoms", "rash",
               "--criteria", "msm", "--actor", STAFF, "--reason", "seen at the clinic")["id"]
    ok(url, "case", "confirm", case, "--pcr-on", "2025-03-02", "--actor", "staff:lab", "--reason", "PCR positive")
    ok(url, "case", "consent", case, "--tracing", "yes", "--actor", STAFF)
    contact = doc(url, "contact", "add", "--case", case, "--person", partner, "--exposed", "2025-03-01",
                  "--kind", "sexual", "--actor", "staff:stps")["id"]
    ok(url, "clock", "advance", "--days", "1", "--actor", STAFF)
    return {"person": person, "partner": partner, "case": case, "contact": contact}


def entries_in_db(url: str) -> list[dict[str, Any]]:
    with Database(url) as db, db.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(AuditEntry.__table__).order_by("seq"))]


def changed_tables(before: dict[str, list[Any]], after: dict[str, list[Any]]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


# ---- roles ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [
    ("person", "add", "--ref", "REF-X"),
    ("case", "open", "--person", "{person}", "--onset", "2025-03-01", "--symptoms", "rash", "--criteria", "msm"),
    ("case", "discard", "{case}"),
    ("case", "isolate", "{case}", "--mode", "home"),
    ("contact", "inform", "{contact}"),
    ("vaccine", "offer", "--person", "{partner}", "--indication", "pep", "--contact", "{contact}"),
    ("user", "add", "someone", "--role", "staff", "--no-password"),
    ("clock", "advance", "--hours", "1"),
])
def test_an_auditor_changes_nothing_and_the_refusal_is_audited(cli_db: str, attempt: tuple[str, ...]) -> None:
    ids = story(cli_db)
    args = [a.format(**ids) for a in attempt]
    before = snapshot(cli_db)
    result = cli(cli_db, *args, "--actor", AUDITOR, "--json")
    assert result.exit_code == 3, describe(result)
    assert "auditor" in result.stderr and "recorded in the audit log" in result.stderr
    after = snapshot(cli_db)
    # Only the refusal was written: one audit entry, and the auditor's chain head on the users row.
    assert changed_tables(before, after) == {"audit_log", "users"}
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1
    [entry] = doc(cli_db, "audit", "--actor", AUDITOR, "--trigger", "refused")
    command = " ".join(args[:2]) if args[0] != "vaccine" else "course offer"
    target = {"discard": ids["case"], "isolate": ids["case"], "inform": ids["contact"]}.get(args[1])
    if args[:2] in (["case", "open"],):
        target = ids["person"]
    if args[:2] == ["vaccine", "offer"]:
        target = ids["partner"]
    assert (entry["actor"], entry["role"], entry["data"]) == (AUDITOR, "auditor", {"command": command,
                                                                                  "object": target})
    assert entry["object"].startswith("user-") and entry["changes"] is None
    assert doc(cli_db, "audit", "verify")["intact"] is True


def test_an_auditor_reads_verifies_and_exports(cli_db: str, tmp_path: Path) -> None:
    ids = story(cli_db)
    env = {"MPOXFLOW_ACTOR": AUDITOR}
    before = snapshot(cli_db)
    for args in (("show", ids["case"]), ("list", "cases"), ("due",), ("audit",), ("audit", "verify"),
                 ("audit", "timeline", ids["case"]), ("audit", "replay", "--check"), ("user", "list")):
        ok(cli_db, *args, env=env)
    ok(cli_db, "audit", "export", "--format", "csv", "--output", str(tmp_path / "log.csv"), env=env)
    after = snapshot(cli_db)
    # Nothing changed; the worklist (`due`) showed both persons' references to the auditor: the read log says so
    # (issue 19 item 3), and nothing else does.
    assert changed_tables(before, after) == {"personal_reads"}
    shown = after["personal_reads"][len(before["personal_reads"]):]
    assert sorted((r[3], r[6], r[7], r[8]) for r in shown) == [
        (AUDITOR, int(ids[who].removeprefix("person-")), "ref", "cli") for who in ("person", "partner")]


def test_only_an_admin_manages_users_and_staff_are_refused_on_the_record(cli_db: str) -> None:
    made = doc(cli_db, "user", "add", "nurse:new", "--role", "staff", "--no-password", "--actor", "admin:test",
               "--reason", "new hire")
    assert (made["name"], made["role"]) == ("nurse:new", "staff")
    added = doc(cli_db, "audit", "--entity", made["id"])
    assert [(e["trigger"], e["actor"], e["role"], e["changes"]) for e in added] == [
        ("add", "admin:test", "admin", {"name": "nurse:new", "role": "staff"})]

    result = cli(cli_db, "user", "add", "x", "--role", "admin", "--actor", STAFF)
    assert result.exit_code == 3 and "only admin users" in result.stderr, describe(result)
    [refusal] = doc(cli_db, "audit", "--trigger", "refused")
    assert (refusal["actor"], refusal["role"], refusal["data"]["command"]) == (STAFF, "staff", "user add")
    assert "x" not in [u["name"] for u in doc(cli_db, "user", "list")]

    refused(cli_db, "user", "add", "nurse:new", "--role", "staff", "--no-password", "--actor", "admin:test",
            code=3)  # taken
    refused(cli_db, "user", "add", "y", "--role", "timer", "--actor", "admin:test", code=2)  # the scheduler's
    refused(cli_db, "user", "add", "timer:fake", "--role", "staff", "--actor", "admin:test", code=2)
    refused(cli_db, "user", "add", "z", "--role", "boss", "--actor", "admin:test", code=2)


def test_an_actor_who_is_not_a_user_is_refused_and_nothing_is_written(cli_db: str) -> None:
    result = refused(cli_db, "person", "add", "--ref", "R", "--actor", "nobody", code=3)
    assert "is not a user" in result.stderr and "mpoxflow user add" in result.stderr


def test_every_entry_names_its_actors_role_and_the_timers_role_is_timer(cli_db: str) -> None:
    story(cli_db)
    entries = doc(cli_db, "audit")
    roles = {e["actor"]: e["role"] for e in entries}
    assert roles[STAFF] == roles["staff:lab"] == roles["staff:stps"] == "staff"
    fired = [e for e in entries if e["actor"].startswith("timer:")]
    assert fired and {e["role"] for e in fired} == {"timer"}
    users = {u["name"]: u["role"] for u in doc(cli_db, "user", "list")}
    assert users["timer"] == "timer" and users[AUDITOR] == "auditor" and users["admin:test"] == "admin"


def test_a_new_database_gets_its_first_admin_and_the_timer_user(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    ready = doc(url, "init", "--simulated-clock", "2025-03-03T08:00", "--admin", "boss")
    assert [(u["name"], u["role"]) for u in ready["users"]] == [("boss", "admin"), ("timer", "timer")]
    # A database created by any other command makes $MPOXFLOW_ACTOR its admin.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    users = doc(other, "user", "list", env={"MPOXFLOW_ACTOR": "ops:kim"})
    assert [(u["name"], u["role"]) for u in users] == [("ops:kim", "admin"), ("timer", "timer")]
    assert [e["reason"] for e in doc(other, "audit", env={"MPOXFLOW_ACTOR": "ops:kim"})] == [
        "first admin: created the database", "the scheduler: actor of every timer's firing"]


# ---- completeness ----------------------------------------------------------------------------------------------


def test_every_change_has_one_entry_with_both_instants_and_nothing_personal(cli_db: str) -> None:
    ids = story(cli_db)
    entries = doc(cli_db, "audit")
    case_entries = [e for e in entries if e["object"] == ids["case"]]
    case = doc(cli_db, "show", ids["case"])
    # One entry per version of the case (each of its changes), plus the timer firings that changed nothing.
    assert len([e for e in case_entries if e["changes"] is not None]) == case["version"]
    assert [e["pos"] for e in case_entries] == list(range(1, len(case_entries) + 1))
    for e in entries:
        assert {"seq", "object", "workflow", "trigger", "from", "to", "actor", "role", "reason", "at",
                "recorded_at", "rule", "data", "changes", "timers_armed", "timers_cancelled", "hash"} <= e.keys()
        # On a simulated clock the entry keeps the simulated instant and the real one it was written at.
        assert datetime.fromisoformat(e["at"]).year == 2025
        assert datetime.fromisoformat(e["recorded_at"]).year >= 2026
    text = json.dumps(entries)
    assert "REF-A" not in text and "REF-B" not in text and "1990-01-01" not in text
    confirm = next(e for e in case_entries if e["trigger"] == "confirm")
    assert confirm["rule"].startswith("SST-mpox-7.1 §")
    assert {t["name"] for t in confirm["timers_armed"]} == {"phone_notification_due", "written_notification_due",
                                                            "sequencing_sample_due"}
    assert confirm["changes"]["state"] == "confirmed" and confirm["changes"]["pcr_on"] == "2025-03-02"


# ---- reading -----------------------------------------------------------------------------------------------------


def test_the_audit_filters_combine(cli_db: str) -> None:
    ids = story(cli_db)
    everything = doc(cli_db, "audit")
    by_actor = doc(cli_db, "audit", "--actor", "staff:lab")
    assert [e["trigger"] for e in by_actor] == ["confirm"]
    opens = doc(cli_db, "audit", "--trigger", "open")
    assert [e["object"] for e in opens] == [ids["case"]]
    of_case = doc(cli_db, "audit", "--entity", ids["case"], "--actor", STAFF)
    assert [e["trigger"] for e in of_case] == ["open", "consent"]
    later = doc(cli_db, "audit", "--since", "2025-03-03T12:00")
    assert later and all(e["at"] >= "2025-03-03T12:00" for e in later)
    assert [e["seq"] for e in later] == [e["seq"] for e in everything if e["at"] >= "2025-03-03T12:00"]
    early = doc(cli_db, "audit", "--until", "2025-03-03T08:00")
    assert [e["seq"] for e in early] == [e["seq"] for e in everything
                                         if datetime.fromisoformat(e["at"]) <= datetime.fromisoformat(
                                             "2025-03-03T08:00:00+01:00")]
    assert [e["seq"] for e in doc(cli_db, "audit", "--limit", "2")] == [e["seq"] for e in everything[-2:]]
    assert doc(cli_db, "audit", "--actor", "nobody") == []
    refused(cli_db, "audit", "--since", "2025-03-05T00:00", "--until", "2025-03-04T00:00", code=2)
    refused(cli_db, "audit", "--entity", "case-999x", code=4)


def test_the_plain_audit_is_a_table_with_a_header(cli_db: str) -> None:
    story(cli_db)
    lines = ok(cli_db, "audit", "--actor", "staff:lab").stdout.splitlines()
    assert lines[0].split() == ["seq", "at", "object", "trigger", "change", "by", "rule", "reason"]
    assert "confirm" in lines[1] and "suspected → confirmed" in lines[1] and "staff:lab (staff)" in lines[1]


def test_the_timeline_tells_one_objects_life_in_order(cli_db: str) -> None:
    ids = story(cli_db)
    life = doc(cli_db, "audit", "timeline", ids["case"])
    assert [e["trigger"] for e in life][:3] == ["open", "confirm", "consent"]
    assert [e["pos"] for e in life] == list(range(1, len(life) + 1))
    text = ok(cli_db, "audit", "timeline", ids["case"]).stdout
    assert text.splitlines()[0] == f"{ids['case']}: {len(life)} entries"
    assert "suspected → confirmed  by staff:lab (staff)" in text and "why: PCR positive" in text
    assert "armed phone_notification_due due 2025-03-03T" in text
    refused(cli_db, "audit", "timeline", "case-999", code=4)


# ---- export ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_export_reads_back_entry_for_entry(cli_db: str, tmp_path: Path, fmt: str) -> None:
    story(cli_db)
    path = tmp_path / f"log.{fmt}"
    result = ok(cli_db, "audit", "export", "--format", fmt, "--output", str(path))
    stored = entries_in_db(cli_db)
    assert f"{len(stored)} entries written" in result.stdout
    with path.open(encoding="utf-8", newline="") as lines:
        back = list(read_export(lines, fmt))
    assert back == [{name: row[name] for name in EXPORT_FIELDS} for row in stored]
    assert all(entry_hash(entry) == entry["hash"] for entry in back)  # an export can be checked on its own
    first = path.read_text(encoding="utf-8").splitlines()[0]
    if fmt == "csv":
        assert first.split(",") == list(EXPORT_FIELDS)
    else:
        assert json.loads(first)["fields"] == list(EXPORT_FIELDS)


def test_the_export_goes_to_stdout_and_refuses_an_unknown_format(cli_db: str) -> None:
    story(cli_db)
    out = ok(cli_db, "audit", "export", "--format", "jsonl").stdout
    back = list(read_export(io.StringIO(out), "jsonl"))
    assert [e["seq"] for e in back] == [e["seq"] for e in entries_in_db(cli_db)]
    refused(cli_db, "audit", "export", "--format", "xml", code=2, as_json=False)


def test_python_api_and_cli_share_the_operation_names(cli_db: str) -> None:
    ids = story(cli_db)
    engine = open_engine(cli_db)
    try:
        assert engine.audit(entity=ids["case"]) == doc(cli_db, "audit", "--entity", ids["case"])
        assert engine.audit_timeline(ids["case"]) == doc(cli_db, "audit", "timeline", ids["case"])
        assert engine.audit_verify() == doc(cli_db, "audit", "verify")
    finally:
        engine.db.dispose()
