"""Which definition a new object starts under (issue 20 item 1): a deployment's choice, set by an admin from an
instant (``mpoxflow workflow default``), audited on its own chain; the creation paths (``open`` and a transition's
spawn) read the default in force; an object keeps running under the definition it recorded. On both backends, on a
simulated clock, with the test successor of the contact workflow (``tests/successor.py``: 14 days of monitoring)
and a case revision made here."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine import definitions
from engine.clock import SimulatedClock
from engine.core import Engine
from engine.imports import Request, run_import
from persistence.database import Database
from persistence.repository import Repository
from scheduler.firing import advance_simulated_clock
from tests.conftest import ADMIN, START
from tests.helpers import confirmed, contents, person
from tests.successor import CASE_SUCCESSOR, SUCCESSOR, registered  # noqa: F401 (the fixture)
from tests.test_cli import cli, describe, doc, ok, refused
from tests.test_web_pages import text
from workflows.definition import WorkflowDefinition
from workflows.errors import NotPermitted, RuleRefused, UsageError
from workflows.registry import BY_NAME, register, unregister

ROOT = Path(__file__).resolve().parent.parent
#: The command line as the console script runs it.
MAIN = "import sys; sys.argv[0] = 'mpoxflow'; from entry.cli import main; main()"
DANISH = ZoneInfo("Europe/Copenhagen")
D = date.fromisoformat
STAFF = "staff:test"
PRODUCT = "contact@SST-mpox-7.1"
R2 = SUCCESSOR.name  # contact@SST-mpox-7.1-r2
#: When the successor takes over in these tests: Monday 10 March 2025, 00:00 in Copenhagen (winter time).
T = datetime(2025, 3, 10, tzinfo=DANISH)

#: The test successor of the case workflow (condom advice of 8 weeks): what a spawned case starts under.
CASE_R2 = CASE_SUCCESSOR


@pytest.fixture
def case_r2() -> Iterator[WorkflowDefinition]:
    register(CASE_R2)
    try:
        yield CASE_R2
    finally:
        if CASE_R2.name in BY_NAME:
            unregister(CASE_R2.name)


def midnight(day: date) -> datetime:
    """00:00 in Copenhagen on ``day`` (computed here, independently of workflows.calendar)."""
    return datetime.combine(day, time(0), tzinfo=DANISH)


def traced_case(engine: Engine, ref: str = "CASE-1") -> str:
    """A confirmed case (onset 2025-03-01) consenting to tracing."""
    case_id = confirmed(engine, person(engine, ref))
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    return case_id


def add_contact(engine: Engine, case_id: str, ref: str, exposed: str) -> dict[str, Any]:
    return engine.open("contact", "add", person=person(engine, ref), actor=STAFF, data={
        "case": case_id, "exposed": D(exposed), "kind": "sexual"})


def monitoring_ends(view: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["due_at"], t["status"]) for t in view["timers"] if t["name"] == "monitoring_ends"]


def audit_holds(engine: Engine) -> None:
    report = engine.audit_verify()
    assert report["intact"], report["problems"]
    assert engine.audit_replay()["differences"] == []


# ---- the creation paths --------------------------------------------------------------------------------------


def test_a_contact_starts_under_the_default_in_force_when_it_is_made_and_keeps_its_own(engine: Engine, db: Database,
                                                                                     registered: Any) -> None:  # noqa: F811
    case_id = traced_case(engine)
    set_view = engine.set_workflow_default("contact", R2, effective_from=T, actor=ADMIN,
                                           reason="revision 2 from Monday")
    assert (set_view["id"], set_view["status"], set_view["before"]) == ("workflow_default-1", "scheduled", PRODUCT)

    # Before T: the product's definition, 21 days of monitoring (00:00 on the last exposure + 22 days).
    before = add_contact(engine, case_id, "C-BEFORE", "2025-03-02")
    assert before["workflow"] == PRODUCT
    assert monitoring_ends(before) == [(midnight(D("2025-03-24")).isoformat(), "pending")]
    assert engine.workflow_defaults_in_force()["contact"] == PRODUCT

    # One microsecond before T still the product's; from T on the successor's.
    advance_simulated_clock(engine, T - timedelta(microseconds=1))
    assert add_contact(engine, case_id, "C-JUST-BEFORE", "2025-03-09")["workflow"] == PRODUCT
    advance_simulated_clock(engine, T)
    assert engine.workflow_defaults_in_force()["contact"] == R2

    # After T, across the change to summer time (30 March): 14 days, 00:00 local on the exposure + 15 days.
    advance_simulated_clock(engine, datetime(2025, 3, 21, 9, 0, tzinfo=DANISH))
    after = add_contact(engine, case_id, "C-AFTER", "2025-03-20")
    assert after["workflow"] == R2
    assert monitoring_ends(after) == [("2025-04-04T00:00:00+02:00", "pending")]
    assert monitoring_ends(after)[0][0] == midnight(D("2025-03-20") + timedelta(days=15)).isoformat()

    # The contact made before T runs under its own definition after T: released at 00:00 on 24 March.
    advance_simulated_clock(engine, datetime(2025, 3, 24, 0, 0, 1, tzinfo=DANISH))
    shown = engine.show(before["id"])
    assert (shown["state"], shown["workflow"]) == ("released", PRODUCT)
    assert monitoring_ends(shown) == [(midnight(D("2025-03-24")).isoformat(), "fired")]
    release = engine.audit(entity=before["id"])[-1]
    assert (release["trigger"], release["workflow"], release["at"]) == \
        ("monitoring_ends", PRODUCT, "2025-03-24T00:00:00+01:00")
    assert monitoring_ends(engine.show(after["id"])) == [("2025-04-04T00:00:00+02:00", "pending")]

    # The one made after T is released by its own, 14 days after its exposure (summer time).
    advance_simulated_clock(engine, datetime(2025, 4, 4, 0, 0, 1, tzinfo=DANISH))
    released = engine.show(after["id"])
    assert (released["state"], released["workflow"]) == ("released", R2)
    assert engine.audit(entity=after["id"])[-1]["at"] == "2025-04-04T00:00:00+02:00"
    with db.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT id, workflow FROM contacts ORDER BY id").all()
    assert [w for _, w in rows] == [PRODUCT, PRODUCT, R2]
    audit_holds(engine)


def test_a_spawned_case_starts_under_the_case_default_and_is_refused_when_it_is_not_loaded(
        engine: Engine, db: Database, case_r2: WorkflowDefinition) -> None:
    case_id = traced_case(engine)
    first = add_contact(engine, case_id, "C-1", "2025-03-02")
    second = add_contact(engine, case_id, "C-2", "2025-03-02")
    engine.set_workflow_default("case", CASE_R2.name, actor=ADMIN, reason="case revision 2")
    symptoms = {"onset": D("2025-03-03"), "symptoms": ["rash"]}
    became = engine.apply(first["id"], "symptoms", data=symptoms, actor=STAFF)
    spawned = engine.show(became["became_case"])
    assert (spawned["state"], spawned["workflow"]) == ("suspected", "case@SST-mpox-7.1-r2")
    assert engine.show(case_id)["workflow"] == "case@SST-mpox-7.1"  # the first case keeps its own

    unregister(CASE_R2.name)  # a process that has not loaded it
    before = contents(db)
    with pytest.raises(RuleRefused) as refusal:
        engine.apply(second["id"], "symptoms", data=symptoms, actor=STAFF)
    assert refusal.value.exit_code == 3 and refusal.value.key == "definition_not_loaded"
    assert "case@SST-mpox-7.1-r2 since 2025-03-03T08:00:00+01:00" in refusal.value.message
    assert "MPOXFLOW_DEFINITIONS" in refusal.value.message
    assert contents(db) == before
    audit_holds(engine)


def test_opening_under_a_default_this_process_has_not_loaded_is_refused_and_writes_nothing(
        engine: Engine, db: Database, registered: Any) -> None:  # noqa: F811
    case_id = traced_case(engine)
    engine.set_workflow_default("contact", R2, actor=ADMIN)
    unregister(R2)
    contact_person = person(engine, "C-1")
    before = contents(db)
    with pytest.raises(RuleRefused) as refusal:
        engine.open("contact", "add", person=contact_person, actor=STAFF,
                    data={"case": case_id, "exposed": D("2025-03-02"), "kind": "sexual"})
    message = refusal.value.message
    assert refusal.value.exit_code == 3
    assert message.startswith(f"new contact objects start under {R2} since 2025-03-03T08:00:00+01:00")
    assert "has not loaded" in message and "MPOXFLOW_DEFINITIONS" in message
    assert contents(db) == before
    # Listed as not loaded here; loaded again, the creation goes through under it.
    listed = [d for d in engine.workflow_defaults() if d["kind"] == "contact"]
    assert [(d["definition"], d["status"], d["loaded"]) for d in listed] == [(PRODUCT, "ended", True),
                                                                            (R2, "in force", False)]
    register(SUCCESSOR)
    made = engine.open("contact", "add", person=contact_person, actor=STAFF,
                       data={"case": case_id, "exposed": D("2025-03-02"), "kind": "sexual"})
    assert made["workflow"] == R2
    audit_holds(engine)


def test_a_batch_reads_the_default_once_while_it_holds_and_again_past_its_end(engine: Engine,
                                                                            registered: Any) -> None:  # noqa: F811
    engine.set_workflow_default("contact", R2, effective_from=T, actor=ADMIN)
    with engine.unit_of_work() as uow:
        reads: list[datetime] = []
        real = uow.repo.workflow_default_at

        def counted(kind: str, at: datetime) -> Any:
            reads.append(at)
            return real(kind, at)

        uow.repo.workflow_default_at = counted  # type: ignore[method-assign]
        assert [definitions.for_new(uow, "contact", START + timedelta(hours=h)).name for h in range(3)] == [PRODUCT] * 3
        assert len(reads) == 1
        assert definitions.for_new(uow, "contact", T - timedelta(microseconds=1)).name == PRODUCT
        assert definitions.for_new(uow, "contact", T).name == R2  # the period read ended at T: read again
        assert definitions.for_new(uow, "contact", T + timedelta(days=30)).name == R2
        assert len(reads) == 2
        assert definitions.for_new(uow, "case", T).name == "case@SST-mpox-7.1"
        assert len(reads) == 3


def test_an_import_reads_the_default_once_for_all_its_rows(engine: Engine, registered: Any,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    traced_case(engine)
    engine.set_workflow_default("contact", R2, actor=ADMIN)
    reads: list[str] = []
    real = Repository.workflow_default_at

    def counted(self: Repository, kind: str, at: datetime) -> Any:
        reads.append(kind)
        return real(self, kind, at)

    monkeypatch.setattr(Repository, "workflow_default_at", counted)
    rows = "".join(f"IMP-{i};0{1 + i % 2}.03.2025;{'seksuel' if i % 2 else 'husstand'}\n" for i in range(6))
    report = run_import(engine, Request(kind="contacts", content=("CPR-nr.;Dato for eksponering;Kontakttype\n"
                                                                  + rows).encode(), filename="kontakter.csv",
                                       actor="staff:stps", case="case-1"))
    created = [i for r in report["rows"] for i in r["ids"] if i.startswith("contact-")]
    assert len(created) == 6, report["rows"]
    assert {engine.show(i)["workflow"] for i in created} == {R2}
    assert reads == ["contact"]


# ---- setting a default ---------------------------------------------------------------------------------------


def test_the_setting_is_audited_on_its_own_chain_and_listed_with_who_when_and_why(engine: Engine,
                                                                                 registered: Any) -> None:  # noqa: F811
    case_id = traced_case(engine, ref="0101801234")
    engine.set_workflow_default("contact", R2, effective_from=T, actor=ADMIN, reason="revision 2 from Monday")
    entry = engine.audit(entity="workflow_default-1")
    assert len(entry) == 1
    e = entry[0]
    assert (e["trigger"], e["actor"], e["role"], e["reason"], e["rule"], e["workflow"], e["from"], e["to"]) == \
        ("set", ADMIN, "admin", "revision 2 from Monday", None, None, None, None)
    assert e["data"] == {"kind": "contact", "definition": R2, "effective_from": "2025-03-10T00:00:00+01:00",
                         "before": PRODUCT}
    assert e["changes"] == {"kind": "contact", "definition": R2, "effective_from": "2025-03-10T00:00:00+01:00",
                            "created_at": "2025-03-03T08:00:00+01:00"}
    assert e["at"] == "2025-03-03T08:00:00+01:00" and e["unit"] == "unit-1"
    assert "0101801234" not in json.dumps(e) and case_id not in json.dumps(e)
    assert engine.audit_timeline("workflow_default-1")[0]["seq"] == e["seq"]

    listed = engine.workflow_defaults()
    assert [(d["kind"], d["definition"], d["status"], d["product"]) for d in listed] == [
        ("case", "case@SST-mpox-7.1", "in force", True), ("contact", PRODUCT, "in force", True),
        ("contact", R2, "scheduled", False), ("course", "course@SST-mpox-7.1", "in force", True)]
    mine = listed[2]
    assert (mine["id"], mine["effective_from"], mine["set_at"], mine["set_by"], mine["reason"], mine["in_force"]) == \
        ("workflow_default-1", "2025-03-10T00:00:00+01:00", "2025-03-03T08:00:00+01:00", ADMIN,
         "revision 2 from Monday", False)
    assert engine.show("workflow_default-1") == mine

    # A change of plan: another setting from the same instant replaces the planned one before it takes effect.
    engine.set_workflow_default("contact", PRODUCT, effective_from=T, actor=ADMIN, reason="not yet after all")
    advance_simulated_clock(engine, T + timedelta(hours=1))
    assert engine.workflow_defaults_in_force()["contact"] == PRODUCT
    assert [d["status"] for d in engine.workflow_defaults() if d["kind"] == "contact"] == \
        ["ended", "superseded", "in force"]
    engine.set_workflow_default("contact", R2, actor=ADMIN, reason="now")
    assert [d["status"] for d in engine.workflow_defaults() if d["kind"] == "contact"] == \
        ["ended", "superseded", "ended", "in force"]
    assert engine.workflow_defaults_in_force()["contact"] == R2
    assert engine.audit(trigger="set")[-1]["data"]["before"] == PRODUCT
    audit_holds(engine)


@pytest.mark.parametrize("who", ["staff:test", "auditor:test"])
def test_anyone_but_an_admin_is_refused_and_the_refusal_is_audited(engine: Engine, db: Database, who: str,
                                                                   registered: Any) -> None:  # noqa: F811
    before = contents(db)
    with pytest.raises(NotPermitted) as refusal:
        engine.set_workflow_default("contact", R2, effective_from=T, actor=who, reason="let me")
    assert refusal.value.exit_code == 3
    assert "'workflow default' refused for " + who in refusal.value.message
    after = contents(db)
    assert {t: r for t, r in after.items() if t not in ("audit_log", "users")} == \
        {t: r for t, r in before.items() if t not in ("audit_log", "users")}
    assert after["workflow_defaults"] == []
    refusal_entry = engine.audit(trigger="refused")[-1]
    assert (refusal_entry["actor"], refusal_entry["object"].startswith("user-"), refusal_entry["data"]) == \
        (who, True, {"command": "workflow default", "object": None})
    assert engine.workflow_defaults_in_force()["contact"] == PRODUCT
    audit_holds(engine)


BAD = [
    ("kind", lambda: ("contacts", R2, None), UsageError, "'contacts' is no kind of object: use case, contact or "
     "course (⟦kind⟧)"),
    ("name", lambda: ("contact", "contact@SST-mpox-9", None), UsageError,
     f"contact@SST-mpox-9 is no contact definition loaded here: use one of {PRODUCT}, {R2} (⟦definition⟧)"),
    ("other kind", lambda: ("contact", "case@SST-mpox-7.1", None), UsageError,
     f"case@SST-mpox-7.1 is a case definition, not a contact one: use one of {PRODUCT}, {R2} (⟦definition⟧)"),
    ("past", lambda: ("contact", R2, START - timedelta(seconds=1)), UsageError,
     "⟦effective_from⟧ 2025-03-03T07:59:59+01:00 is before now (2025-03-03T08:00:00+01:00)"),
    ("naive", lambda: ("contact", R2, datetime(2025, 3, 10)), UsageError,  # noqa: DTZ001 - what is refused
     "⟦effective_from⟧ 2025-03-10T00:00:00 has no offset"),
    ("out of range", lambda: ("contact", R2, datetime(9999, 1, 1, tzinfo=DANISH)), UsageError, "out of range"),
    ("in force already", lambda: ("contact", PRODUCT, None), RuleRefused,
     f"new contact objects start under {PRODUCT} from 2025-03-03T08:00:00+01:00 already: nothing to change"),
    ("control characters", lambda: ("contact", "contact@\x00", None), UsageError, "⟦definition⟧"),
]


@pytest.mark.parametrize(("what", "given", "error", "message"), BAD, ids=[b[0] for b in BAD])
def test_every_bad_input_is_refused_with_what_to_do_and_writes_nothing(engine: Engine, db: Database, what: str,
                                                                       given: Any, error: type, message: str,
                                                                       registered: Any) -> None:  # noqa: F811
    kind, name, since = given()
    before = contents(db)
    with pytest.raises(error) as refusal:
        engine.set_workflow_default(kind, name, effective_from=since, actor=ADMIN, reason="x")
    assert refusal.value.exit_code == (3 if error is RuleRefused else 2)
    assert message in refusal.value.template
    assert contents(db) == before


def test_a_default_already_in_force_from_a_later_instant_is_refused_and_one_past_the_next_is_not(
        engine: Engine, db: Database, registered: Any) -> None:  # noqa: F811
    engine.set_workflow_default("contact", R2, effective_from=T, actor=ADMIN)
    before = contents(db)
    with pytest.raises(RuleRefused, match="from 2025-03-11T00:00:00\\+01:00 already"):
        engine.set_workflow_default("contact", R2, effective_from=T + timedelta(days=1), actor=ADMIN)
    assert contents(db) == before
    # The product's again from a later instant, after the successor's: a change.
    engine.set_workflow_default("contact", PRODUCT, effective_from=T + timedelta(days=7), actor=ADMIN)
    assert [(d["definition"], d["status"]) for d in engine.workflow_defaults() if d["kind"] == "contact"] == \
        [(PRODUCT, "in force"), (R2, "scheduled"), (PRODUCT, "scheduled")]
    advance_simulated_clock(engine, T + timedelta(days=3))
    assert engine.workflow_defaults_in_force()["contact"] == R2
    advance_simulated_clock(engine, T + timedelta(days=7))
    assert engine.workflow_defaults_in_force()["contact"] == PRODUCT
    assert [d["status"] for d in engine.workflow_defaults() if d["kind"] == "contact"] == ["ended", "ended", "in force"]


def test_the_audit_export_and_the_auditors_desk_show_a_setting(engine: Engine, registered: Any) -> None:  # noqa: F811
    engine.set_workflow_default("contact", R2, effective_from=T, actor=ADMIN, reason="revision 2 from Monday")
    out = io.StringIO()
    assert engine.audit_export("jsonl", out) == len(engine.audit())
    exported = [json.loads(line) for line in out.getvalue().splitlines()[1:]]
    setting = [e for e in exported if e["object_kind"] == "workflow_default"]
    assert [(e["object_id"], e["trigger"], e["data"]["definition"]) for e in setting] == [(1, "set", R2)]
    page = engine.audit_page(entity="workflow_default-1")
    assert [(e["object"], e["trigger"]) for e in page["items"]] == [("workflow_default-1", "set")]
    assert engine.audit_entry(page["items"][0]["seq"])["hash_matches"] is True


def test_the_desk_pages_show_a_setting_in_danish(client_for: Any, cli_db: str, registered: Any) -> None:  # noqa: F811
    with Database(cli_db) as database:
        Engine(database, SimulatedClock(START)).set_workflow_default("contact", R2, effective_from=T, actor=ADMIN,
                                                                     reason="revision 2")
    auditor = client_for("auditor:test")
    listing = auditor.get("/audit", params={"entity": "workflow_default-1"})
    assert listing.status_code == 200, listing.text
    seq = int(re.findall(r'<tr data-seq="(\d+)">', listing.text)[0])
    assert "standarddefinition valgt" in listing.text and "workflow_default-1" in listing.text
    entry = auditor.get(f"/audit/entries/{seq}")
    assert entry.status_code == 200, entry.text
    shown = text(entry.text)
    assert "Handling standarddefinition valgt" in shown and "Af admin:test (administrator)" in shown
    assert f"Definition {R2} Gælder fra 10.03.2025 kl. 00.00 Før {PRODUCT}" in shown  # the entry's data


# ---- the command line ----------------------------------------------------------------------------------------


def test_the_cli_sets_lists_and_marks_the_default_in_force(cli_db: str, registered: Any) -> None:  # noqa: F811
    listed = {r["name"]: r["default"] for r in doc(cli_db, "workflow", "list")}
    assert listed == {"case@SST-mpox-7.1": True, PRODUCT: True, R2: False, "course@SST-mpox-7.1": True,
                      "case@SST-mpox-7.1-r2": False, "course@SST-mpox-7.1-r2": False}

    made = doc(cli_db, "workflow", "default", "contact", R2, "--from", "2025-03-10", "--actor", ADMIN,
               "--reason", "revision 2 from Monday")
    assert {k: made[k] for k in ("id", "kind", "definition", "effective_from", "status", "before", "set_by")} == {
        "id": "workflow_default-1", "kind": "contact", "definition": R2, "effective_from": "2025-03-10T00:00:00+01:00",
        "status": "scheduled", "before": PRODUCT, "set_by": ADMIN}
    assert isinstance(made["audit_seq"], int)

    text = ok(cli_db, "workflow", "defaults").stdout.splitlines()
    assert [line.split()[:3] for line in text] == [
        ["*", "case", "case@SST-mpox-7.1"], ["*", "contact", PRODUCT], ["contact", R2, "from"],
        ["*", "course", "course@SST-mpox-7.1"]]
    assert text[2].split()[3:6] == ["2025-03-10T00:00:00+01:00", "scheduled", "set"]
    assert text[2].endswith(f"by {ADMIN}  (revision 2 from Monday)")
    as_json = doc(cli_db, "workflow", "defaults")
    assert [(r["definition"], r["status"], r["in_force"]) for r in as_json if r["kind"] == "contact"] == \
        [(PRODUCT, "in force", True), (R2, "scheduled", False)]

    ok(cli_db, "clock", "advance", "--to", "2025-03-10T00:00:00+01:00", "--actor", ADMIN)
    listed = {r["name"]: r["default"] for r in doc(cli_db, "workflow", "list")}
    assert listed == {"case@SST-mpox-7.1": True, PRODUCT: False, R2: True, "course@SST-mpox-7.1": True,
                      "case@SST-mpox-7.1-r2": False, "course@SST-mpox-7.1-r2": False}
    table = ok(cli_db, "workflow", "list").stdout.splitlines()
    assert table[0].split() == ["name", "kind", "revision", "shipped", "migrates_from", "default"]
    assert [line.split()[-1] for line in table[1:]] == ["True", "False", "False", "True", "True", "False"]
    assert ok(cli_db, "workflow", "defaults").stdout.splitlines()[2].startswith(f"* contact  {R2}")
    shown = doc(cli_db, "show", "workflow_default-1")
    assert (shown["status"], shown["reason"]) == ("in force", "revision 2 from Monday")
    timeline = doc(cli_db, "audit", "timeline", "workflow_default-1")
    assert [(e["trigger"], e["actor"]) for e in timeline] == [("set", ADMIN)]
    assert doc(cli_db, "audit", "verify")["intact"] is True


def test_the_cli_refuses_each_bad_input_naming_its_argument(cli_db: str, registered: Any) -> None:  # noqa: F811
    def says(result: Any, *words: str) -> None:
        for word in words:
            assert word in result.stderr, describe(result)

    says(refused(cli_db, "workflow", "default", "contacts", R2, "--actor", ADMIN, code=2), "(KIND)")
    says(refused(cli_db, "workflow", "default", "contact", "nope", "--actor", ADMIN, code=2),
         f"use one of {PRODUCT}, {R2} (NAME)", "MPOXFLOW_DEFINITIONS")
    says(refused(cli_db, "workflow", "default", "contact", "case@SST-mpox-7.1", "--actor", ADMIN, code=2),
         "is a case definition, not a contact one")
    says(refused(cli_db, "workflow", "default", "contact", R2, "--from", "Monday", "--actor", ADMIN, code=2),
         "--from 'Monday' is not an instant")
    says(refused(cli_db, "workflow", "default", "contact", R2, "--from", "2025-03-03", "--actor", ADMIN, code=2),
         "--from 2025-03-03T00:00:00+01:00 is before now", "leave --from out")
    says(refused(cli_db, "workflow", "default", "contact", PRODUCT, "--actor", ADMIN, code=3), "nothing to change")
    result = cli(cli_db, "workflow", "default", "contact", R2, "--actor", "staff:test", "--json")
    assert result.exit_code == 3, describe(result)
    assert "only admin users may do that" in json.loads(result.stdout)["error"]
    assert doc(cli_db, "workflow", "defaults")[2]["kind"] == "course"  # nothing was set


@pytest.mark.slow
def test_a_process_without_the_definition_refuses_to_create_under_it(cli_db: str) -> None:
    """As a deployment runs it: the process that sets the default loads the successor (MPOXFLOW_DEFINITIONS); one
    that does not refuses to make a contact under it (exit 3, nothing written), and says what to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPOXFLOW_")}
    env.update(PYTHONPATH=str(ROOT), MPOXFLOW_ACTOR=STAFF)

    def mpoxflow(*args: str, definitions: bool) -> subprocess.CompletedProcess[str]:
        extra = {"MPOXFLOW_DEFINITIONS": "tests.successor:SUCCESSOR"} if definitions else {}
        return subprocess.run([sys.executable, "-c", MAIN, "--db", cli_db, *args, "--json"], cwd=ROOT,
                              env={**env, **extra}, capture_output=True, text=True, timeout=120, check=False)

    ok(cli_db, "person", "add", "--ref", "CASE-1", "--actor", STAFF)
    ok(cli_db, "person", "add", "--ref", "C-1", "--actor", STAFF)
    ok(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-03-01", "--confirmed", "--pcr-on",
       "2025-03-02", "--actor", STAFF)
    ok(cli_db, "case", "consent", "case-1", "--tracing", "yes", "--actor", STAFF)
    done = mpoxflow("workflow", "default", "contact", R2, "--actor", ADMIN, definitions=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "in force"
    add = ("contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-02", "--kind",
           "sexual")
    db = Database(cli_db)
    try:
        before = contents(db)
        without = mpoxflow(*add, definitions=False)
        assert without.returncode == 3, without.stderr
        error = json.loads(without.stdout)
        assert error["exit_code"] == 3 and error["key"] == "definition_not_loaded"
        assert f"start under {R2} since 2025-03-03T08:00:00+01:00" in error["error"]
        assert "MPOXFLOW_DEFINITIONS" in error["error"]
        assert contents(db) == before
        with_it = mpoxflow(*add, definitions=True)
        assert with_it.returncode == 0, with_it.stderr
        assert json.loads(with_it.stdout)["workflow"] == R2
    finally:
        db.dispose()
