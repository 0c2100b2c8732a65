"""Retention and purge (issue 19, item 1) on both backends: a person with a case, a contact and a course, notes,
contact attempts, a resolved task and a sent notification document is purged once every object ended and the
period passed; afterwards no trace of the reference or the birth date is left in any table (every row dumped, the
SQLite file's ``iterdump``, every PostgreSQL column cast to text) or in a FHIR export, the identifying free text is
gone from every table but the audit log, the clinical history is intact, ``audit verify`` and ``audit replay
--check`` pass, and the receipt is on the person's chain. Also the due dates across both daylight-saving changes,
``--dry-run``, the refusals, the ``notes`` table's redaction-only trigger, a purge race on PostgreSQL, the import
purge, the CLI and the pages."""

from __future__ import annotations

import io
import json
import multiprocessing
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from engine import retention
from engine.clock import SimulatedClock
from engine.core import Engine
from engine.events import event_types
from engine.fhir import EXPORT_TYPES, FhirReader
from engine.imports import Request, report_file, run_import
from persistence.database import Database
from persistence.models import Base, Note
from scheduler.firing import advance_simulated_clock
from tests.conftest import START
from tests.helpers import contents
from tests.test_cli import cli, describe, doc
from workflows.errors import NotPermitted, RuleRefused, UsageError

STAFF, ADMIN, AUDITOR = "staff:test", "admin:test", "auditor:test"
REF = "PURGE-CPR-0101904321"
BORN = "1931-07-19"
#: What must be nowhere after the purge: the reference (and its digits), the birth date in every form it is stored.
PERSONAL = (REF, "0101904321", BORN, "19310719", "19.07.1931")
#: The free text given to the person's objects: gone from every table but the audit log after the purge.
FREE_TEXT = ("PURGE-EXPOSURE-REASON", "PURGE-INDICATION", "PURGE-JUSTIFICATION", "PURGE-SPECIAL",
             "PURGE-SYMPTOM-NOTE", "PURGE-ANTIVIRAL", "PURGE-NOTE-CASE", "PURGE-NOTE-PERSON", "PURGE-ATTEMPT",
             "PURGE-RESOLUTION")
D = date.fromisoformat
T = datetime.fromisoformat
#: After the world's history: every object of the person has ended (the case closed at 00:00 on 15 June 2025).
AFTER = T("2025-07-01T12:00:00+02:00")
#: 10 years after the last end (15 June 2025): the last day 15 June 2035, due at 00:00 on 16 June.
DUE = T("2035-06-16T00:00:00+02:00")


class World:
    """A source case S (confirmed, stays open); the person P (REF, born BORN) is S's close contact (a clinician's
    risk with its reason), has a PEP course (dose 1 with consent texts and a day-5 special reason: one dose, born
    before 1970, so completed), then a case of their own (symptom ``other`` with its note; antiviral assessment
    with its reason; a note, a contact attempt, a notification document sent, a task resolved with a reason),
    healed and closed by its timer; P's contact released. A third person Q only registered."""

    def __init__(self, engine: Engine, clock: SimulatedClock) -> None:
        self.engine, self.clock = engine, clock
        s = engine.add_person(ref="SOURCE-REF-1", actor=STAFF)["id"]
        self.source_case = engine.open("case", "open", person=s, actor=STAFF, data={
            "onset": D("2025-02-24"), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
        engine.apply(self.source_case, "confirm", data={"pcr_on": D("2025-03-02")}, actor=STAFF)
        engine.apply(self.source_case, "consent", data={"tracing": True}, actor=STAFF)
        self.p = engine.add_person(ref=REF, born=D(BORN), actor=STAFF)["id"]
        self.contact = engine.open("contact", "add", person=self.p, actor=STAFF, data={
            "case": self.source_case, "exposed": D("2025-02-26"), "kind": "sexual", "risk": "high",
            "reason": "PURGE-EXPOSURE-REASON", "anonymous_via_doctor": False})["id"]
        self.course = engine.open("course", "offer", person=self.p, actor=STAFF, data={
            "indication": "pep", "contact": self.contact, "criteria": [], "assessed_by": "dr. Lund"})["id"]
        engine.apply(self.course, "dose", actor=STAFF, data={
            "on": D("2025-03-03"), "consent": True, "indication_note": "PURGE-INDICATION",
            "justification": "PURGE-JUSTIFICATION", "assessed_by": None, "special_reason": "PURGE-SPECIAL"})
        self.case = engine.open("case", "open", person=self.p, actor=STAFF, data={
            "onset": D("2025-03-02"), "symptoms": ["rash", "other"], "symptom_note": "PURGE-SYMPTOM-NOTE",
            "criteria": ["msm"]})["id"]
        engine.apply(self.case, "confirm", data={"pcr_on": D("2025-03-03")}, actor=STAFF)
        engine.apply(self.case, "antiviral", actor=STAFF, data={
            "assessed_by": "dr. Infection", "decision": "not-indicated", "reason": "PURGE-ANTIVIRAL"})
        engine.note(self.case, text="PURGE-NOTE-CASE", actor=STAFF)
        engine.note(self.p, text="PURGE-NOTE-PERSON", actor=STAFF)
        engine.attempt(self.case, channel="phone", outcome="no-answer", actor=STAFF, reason="PURGE-ATTEMPT")
        self.document = engine.make_document(self.case, actor=STAFF)["id"]
        engine.apply(self.case, "notify", data={"channel": "written", "document": self.document}, actor=STAFF)
        engine.apply(self.case, "notify", data={"channel": "phone"}, actor=STAFF)
        sample = next(t["id"] for t in engine.show(self.case)["timers"] if t["name"] == "sequencing_sample_due")
        engine.resolve_task(sample, "not-needed", actor=STAFF, reason="PURGE-RESOLUTION")
        self.q = engine.add_person(ref="ONLY-REGISTERED", actor=STAFF)["id"]
        advance_simulated_clock(engine, START + timedelta(days=20))
        engine.apply(self.case, "heal", data={"on": D("2025-03-22")}, actor=STAFF)
        advance_simulated_clock(engine, AFTER)
        self.objects = (self.case, self.contact, self.course)


@pytest.fixture
def world(engine: Engine, clock: SimulatedClock) -> World:
    return World(engine, clock)


def history(engine: Engine, object_id: str) -> dict[str, Any]:
    """What the clinical record holds of an object: every fact but the free text, its timers' names, statuses,
    due instants, outcomes and completion."""
    view = engine.show(object_id)
    kept = {k: v for k, v in view.items() if k not in (*retention.CLEARED[view["kind"]], "timers", "version",
                                                       "updated_at")}
    kept["timers"] = [{k: t.get(k) for k in ("id", "name", "due_at", "status", "rule", "task", "satisfied_at",
                                              "outcome", "resolved_at")} for t in view["timers"]]
    return kept


def dump(db: Database) -> str:
    """Every row of every table as text: the models' rows, and the database's own form of each row (SQLite's
    ``iterdump`` of the whole file; on PostgreSQL every column of every table cast to text)."""
    parts = [repr(contents(db))]
    with db.engine.connect() as connection:
        if db.backend == "sqlite":
            raw = connection.connection.driver_connection
            parts.extend(raw.iterdump())  # type: ignore[union-attr]
        else:
            tables = connection.execute(text(
                "SELECT quote_ident(relname) FROM pg_class WHERE relkind = 'r' "
                "AND relnamespace = 'public'::regnamespace")).scalars().all()
            assert {t.name for t in Base.metadata.sorted_tables} <= set(tables)
            for table in tables:
                parts.extend(connection.execute(text(f"SELECT CAST(t AS text) FROM {table} t")).scalars())
    return "\n".join(parts)


def fhir_export(engine: Engine) -> str:
    return "\n".join(json.dumps(r) for r in FhirReader(engine.viewing_as(ADMIN), "admin").export(set(EXPORT_TYPES)))


def audit_export(engine: Engine) -> str:
    out = io.StringIO()
    engine.viewing_as(None).audit_export("jsonl", out)
    return out.getvalue()


def table_dump_without_audit_log(db: Database) -> str:
    return repr({name: rows for name, rows in contents(db).items() if name != "audit_log"})


def purge_at(engine: Engine, clock: SimulatedClock, when: datetime, **kwargs: Any) -> dict[str, Any]:
    clock.set(when)
    return engine.purge(actor=ADMIN, **kwargs)


# ---- the purge of a person ------------------------------------------------------------------------------------


def test_before_the_purge_the_personal_data_is_there(world: World, db: Database) -> None:
    """The control: the dump and the export find every value the purge must remove (so the test below can fail)."""
    everything = dump(db) + fhir_export(world.engine)
    assert REF in everything and BORN in everything
    tables = table_dump_without_audit_log(db)
    assert all(t in tables for t in FREE_TEXT), [t for t in FREE_TEXT if t not in tables]


def test_a_purge_removes_the_personal_data_and_keeps_the_clinical_record_and_the_whole_log(
        world: World, engine: Engine, db: Database, clock: SimulatedClock) -> None:
    kept = {o: history(engine, o) for o in world.objects}
    log_before = audit_export(engine).splitlines()[1:]
    result = purge_at(engine, clock, DUE)
    assert sorted(r["person"] for r in result["persons"]) == sorted([world.p, world.q])
    receipt = next(r for r in result["persons"] if r["person"] == world.p)
    assert receipt["person"] == world.p and receipt["rule"] == "retention:person 10 years"
    assert (receipt["start_on"], receipt["last_day"], receipt["due_at"]) == (
        "2025-06-15", "2035-06-15", "2035-06-16T00:00:00+02:00")
    assert result["imports"] == [] and result["skipped"] == []

    # No trace of the reference or the birth date in any table, row form or export.
    everything = dump(db) + fhir_export(engine) + audit_export(engine)
    assert [v for v in PERSONAL if v in everything] == []
    # The identifying free text is gone from every table but the audit log (README: what the log still holds).
    tables = table_dump_without_audit_log(db)
    assert [t for t in FREE_TEXT if t in tables] == []

    # The chains all verify, the log rebuilds every object, and not one entry of the log was changed.
    assert engine.audit_verify()["intact"]
    assert engine.audit_replay() == {"matches": True, "objects": 4, "differences": []}
    log_after = audit_export(engine).splitlines()[1:]
    assert log_after[:len(log_before)] == log_before

    # The clinical record as it was: states, dates, flags, every timer with its status and due instant (the one
    # missed task nobody resolved now closed as not needed, below).
    for t in kept[world.contact]["timers"]:
        if t["name"] == "inform_due":
            t.update(outcome="not-needed", resolved_at="2035-06-16T00:00:00+02:00")
    assert {o: history(engine, o) for o in world.objects} == kept
    assert engine.show(world.case)["symptom_note"] is None
    assert engine.show(world.case)["antiviral"]["decision"] == "not-indicated"
    assert engine.show(world.case)["antiviral"]["reason"] is None
    assert [e["reason"] for e in engine.show(world.contact)["exposures"]] == [None]
    assert engine.show(world.course)["consent"] == {"informed_consent": True, "indication": None,
                                                    "justification": None}

    # The person: no reference, no birth date, and when and under which rule they went.
    person = engine.show(world.p)
    assert (person["ref"], person["born"]) == (None, None)
    assert person["purged"] == {"at": "2035-06-16T00:00:00+02:00", "on": "2035-06-16",
                                "rule": "retention:person 10 years"}

    # The receipt on the person's chain: what was removed, never the data.
    entry = engine.audit(entity=world.p)[-1]
    assert (entry["trigger"], entry["rule"], entry["actor"], entry["audit_seq"] if "audit_seq" in entry else
            entry["seq"]) == ("purged", "retention:person 10 years", ADMIN, receipt["audit_seq"])
    assert entry["data"]["period"] == {"years": 10} and entry["data"]["start_on"] == "2025-06-15"
    removed = {r["object"]: r for r in entry["data"]["removed"]}
    assert removed[world.p]["columns"] == ["ref", "born"] and len(removed[world.p]["notes"]) == 1
    assert removed[world.case]["columns"] == ["antiviral", "symptom_note"]
    assert removed[world.case]["documents"] == [world.document] and len(removed[world.case]["notes"]) == 2
    assert removed[world.contact]["columns"] == ["exposures"]
    assert removed[world.course]["columns"] == ["consent", "special_reason"]
    assert entry["data"]["counts"] == {"objects": 3, "columns": 7, "timers": entry["data"]["counts"]["timers"],
                                       "notes": 3, "documents": 1, "tasks_closed": 1}
    assert entry["changes"] == {"ref": None, "born": None, "purged_at": "2035-06-16T00:00:00+02:00",
                                "purge_rule": "retention:person 10 years"}
    assert not any(t in json.dumps(entry) for t in FREE_TEXT + PERSONAL)
    # Each object's own chain records the columns it cleared (so replay rebuilds it), citing the rule.
    for object_id, columns in ((world.case, {"antiviral", "symptom_note"}), (world.contact, {"exposures"}),
                               (world.course, {"consent", "special_reason"})):
        last = engine.audit(entity=object_id)[-1]
        assert (last["trigger"], last["rule"], last["data"]["person"]) == ("purged", receipt["rule"], world.p)
        assert set(last["changes"]) == columns and last["from"] == last["to"]

    # The missed task nobody resolved (the contact was never informed) is closed as not needed: nobody can act on
    # it any more, and it leaves the worklist.
    [inform] = [t for t in engine.show(world.contact)["timers"] if t["name"] == "inform_due"]
    assert (inform["status"], inform["outcome"], inform["resolved_at"], inform.get("resolution")) == (
        "missed", "not-needed", "2035-06-16T00:00:00+02:00", None)
    assert removed[world.contact]["tasks_closed"] == [inform["id"]]
    assert not [i for i in engine.worklist() if i.get("person") == world.p]
    # Notes keep who, when, channel and outcome; their text is gone and says when.
    for note in engine.notes_of(world.case) + engine.notes_of(world.p):
        assert note["text"] is None and note["purged_at"] == "2035-06-16T00:00:00+02:00"
    # The document keeps its id, hash and dates; its Bundle is a marker; FHIR no longer serves it.
    document = engine.document(world.document)
    assert document["purged"] == {"purged_at": "2035-06-16T00:00:00+02:00", "rule": receipt["rule"]}
    assert document["content_hash"] and document["sent_at"]
    # The events tell other systems (a webhook that had the reference) to delete their copies.
    with db.engine.connect() as connection:
        purged_events = connection.execute(text(
            "SELECT type, object_kind, object_id FROM events WHERE trigger = 'purged' ORDER BY seq")).all()
    assert sorted(f"{k}-{i}" for _, k, i in purged_events) == sorted(world.objects)
    assert {t for t, _, _ in purged_events} == {"case.purged", "contact.purged", "course.purged"}
    assert {t for t, _, _ in purged_events} <= set(event_types())


def test_a_purged_person_cannot_be_found_by_reference_and_the_same_reference_is_a_new_person(
        world: World, engine: Engine, clock: SimulatedClock) -> None:
    purge_at(engine, clock, DUE)
    assert [r for r in engine.search(REF) if r["kind"] == "person"] == []
    found = [r["id"] for r in engine.search(world.p)]
    assert world.p in found and all(r["ref"] is None for r in engine.search(world.p) if r["person"] == world.p)
    again = engine.add_person(ref=REF, born=D(BORN), actor=STAFF)
    assert again["id"] != world.p and again["ref"] == REF
    assert [r["id"] for r in engine.search(REF) if r["kind"] == "person"] == [again["id"]]
    case = engine.open("case", "open", person=again["id"], actor=STAFF, data={
        "onset": D("2035-06-14"), "symptoms": ["rash"], "criteria": ["msm"]})
    assert case["person"] == again["id"]


def test_an_import_with_a_purged_persons_reference_registers_a_new_person(
        world: World, engine: Engine, clock: SimulatedClock) -> None:
    purge_at(engine, clock, DUE)
    content = f"CPR;Fødselsdato\n{REF};{BORN}\n".encode()
    view = run_import(engine, Request(kind="persons", content=content, filename="persons.csv", actor=STAFF))
    [row] = view["rows"]
    assert row["result"] == "created" and row["person"] not in (world.p, None)
    assert engine.show(row["person"])["ref"] == REF and engine.show(world.p)["ref"] is None


@pytest.mark.parametrize("change", ["note", "attempt", "expose", "person update", "open case", "document"])
def test_nothing_more_is_recorded_on_a_purged_person_or_their_objects(
        world: World, engine: Engine, db: Database, clock: SimulatedClock, change: str) -> None:
    purge_at(engine, clock, DUE)
    before = contents(db)
    attempts = {
        "note": lambda: engine.note(world.case, text="later", actor=STAFF),
        "attempt": lambda: engine.attempt(world.contact, channel="sms", outcome="reached", actor=STAFF,
                                          reason="x"),
        "expose": lambda: engine.apply(world.contact, "expose", actor=STAFF, data={
            "exposed": D("2035-06-15"), "kind": "household", "risk": None, "reason": None}),
        "person update": lambda: engine.update_person(world.p, changes={"pregnant": True}, actor=STAFF),
        "open case": lambda: engine.open("case", "open", person=world.p, actor=STAFF, data={
            "onset": D("2035-06-14"), "symptoms": ["rash"], "criteria": ["msm"]}),
        "document": lambda: engine.make_document(world.case, actor=STAFF),
    }
    with pytest.raises(RuleRefused) as refused:
        attempts[change]()
    assert refused.value.key == "person_purged"
    assert "register them again" in str(refused.value) and REF not in str(refused.value)
    assert contents(db) == before


def test_dry_run_writes_nothing_and_reports_what_the_purge_then_does(
        world: World, engine: Engine, db: Database, clock: SimulatedClock) -> None:
    clock.set(DUE)
    before = contents(db)
    dry = engine.purge(actor=ADMIN, dry_run=True)
    assert contents(db) == before
    assert dry["dry_run"] and sorted(p["person"] for p in dry["persons"]) == sorted([world.p, world.q])
    real = engine.purge(actor=ADMIN)
    assert not real["dry_run"]
    strip = [{k: v for k, v in p.items() if k != "audit_seq"} for p in real["persons"]]
    assert [{k: v for k, v in p.items() if k != "audit_seq"} for p in dry["persons"]] == strip
    assert dry["persons"][0]["audit_seq"] is None and real["persons"][0]["audit_seq"]
    assert engine.purge(actor=ADMIN)["persons"] == []  # purged once: nothing is due twice


def test_not_due_a_moment_before_and_due_at_the_instant(world: World, engine: Engine, db: Database,
                                                        clock: SimulatedClock) -> None:
    clock.set(T("2035-03-04T00:00:00+01:00"))  # the registered-only person (3 March 2025) is due first
    assert [p["person"] for p in engine.purge(actor=ADMIN)["persons"]] == [world.q]
    clock.set(DUE - timedelta(microseconds=1))
    before = contents(db)
    assert engine.purge(actor=ADMIN)["persons"] == []
    assert contents(db) == before
    listed = {i["id"]: i for i in engine.retention_due(within_weeks=1, actor=AUDITOR)["items"]}
    assert listed[world.p]["due_now"] is False and listed[world.p]["due_at"] == "2035-06-16T00:00:00+02:00"
    clock.set(DUE)
    listed = {i["id"]: i for i in engine.retention_due(within_weeks=0, actor=ADMIN)["items"]}
    assert listed[world.p]["due_now"] is True
    assert [p["person"] for p in engine.purge(actor=ADMIN)["persons"]] == [world.p]


def test_an_open_object_makes_a_person_never_due_and_a_person_without_objects_counts_from_registration(
        world: World, engine: Engine, clock: SimulatedClock) -> None:
    clock.set(T("2045-01-01T12:00:00+01:00"))
    items = {i["id"]: i for i in engine.retention_due(within_weeks=0, actor=ADMIN)["items"]}
    source_person = engine.show(world.source_case)["person"]
    assert source_person not in items  # their case is still open: never due
    assert items[world.q]["counted_from"] == "registered" and items[world.q]["start_on"] == "2025-03-03"
    assert items[world.q]["last_day"] == "2035-03-03"
    assert items[world.p]["counted_from"] == "ended"
    purged = [p["person"] for p in engine.purge(actor=ADMIN)["persons"]]
    assert sorted(purged) == sorted([world.p, world.q])
    assert engine.show(source_person)["ref"] == "SOURCE-REF-1"


# ---- the schedule ---------------------------------------------------------------------------------------------


def registered_on(engine: Engine, clock: SimulatedClock, day: str, ref: str) -> str:
    clock.set(T(f"{day}T12:00:00+00:00"))
    return str(engine.add_person(ref=ref, actor=STAFF)["id"])


@pytest.mark.parametrize(("registered", "last_day", "due_at"), [
    # Spring: 29 March 2026 is 23 hours long; its 00:00 is still winter time.
    ("2025-03-27", "2026-03-27", "2026-03-28T00:00:00+01:00"),
    ("2025-03-28", "2026-03-28", "2026-03-29T00:00:00+01:00"),
    ("2025-03-29", "2026-03-29", "2026-03-30T00:00:00+02:00"),
    # Autumn: 25 October 2026 is 25 hours long; its 00:00 is still summer time.
    ("2025-10-24", "2026-10-24", "2026-10-25T00:00:00+02:00"),
    ("2025-10-25", "2026-10-25", "2026-10-26T00:00:00+01:00"),
])
def test_due_dates_across_both_daylight_saving_changes(engine: Engine, clock: SimulatedClock, registered: str,
                                                       last_day: str, due_at: str) -> None:
    engine.set_retention("person", years=1, actor=ADMIN, reason="a short period to test the calendar")
    person = registered_on(engine, clock, registered, f"DST-{registered}")
    due = T(due_at)
    clock.set(due - timedelta(weeks=1))
    [item] = [i for i in engine.retention_due(within_weeks=1, actor=ADMIN)["items"] if i["id"] == person]
    assert (item["last_day"], item["due_at"], item["due_now"]) == (last_day, due_at, False)
    clock.set(due - timedelta(microseconds=1))
    assert engine.purge(actor=ADMIN)["persons"] == []
    clock.set(due)
    assert [p["person"] for p in engine.purge(actor=ADMIN)["persons"]] == [person]


def test_the_period_arithmetic_is_the_calendars() -> None:
    rule = retention.Rule("person", 10, "years")
    assert rule.last_day(D("2024-02-29")) == D("2034-03-01")  # never less than 10 years
    assert rule.due_at(D("2025-06-15")) == T("2035-06-16T00:00:00+02:00")
    days = retention.Rule("import", 30, "days")
    assert days.last_day(D("2025-03-01")) == D("2025-03-31")
    assert days.due_at(D("2025-03-01")) == T("2025-04-01T00:00:00+02:00")  # after the spring change
    assert days.due_at(D("2025-09-26")) == T("2025-10-27T00:00:00+01:00")  # after the autumn change


def test_the_defaults_the_migration_seeds_are_the_engines(engine: Engine) -> None:
    from importlib import import_module

    migration = import_module("persistence.migrations.versions.0016_retention")
    assert {k: (u, n) for k, u, n in migration.DEFAULTS} == {k: (retention.UNITS[k], retention.DEFAULTS[k])
                                                             for k in retention.UNITS}
    assert [(r["kind"], r["period"], r["unit"], r["updated_at"]) for r in engine.retention_rules()] == [
        ("person", 10, "years", None), ("import", 30, "days", None)]


def test_an_admin_sets_a_period_audited_and_rules_shows_it(engine: Engine) -> None:
    changed = engine.set_retention("import", days=14, actor=ADMIN, reason="the venue lists are corrected at once")
    assert (changed["rule"], changed["updated_by"]) == ("retention:import 14 days", ADMIN)
    assert [r["period"] for r in engine.retention_rules()] == [10, 14]
    entry = engine.audit(trigger="retention_set")[-1]
    assert entry["data"] == {"kind": "import", "from": {"period": 30, "unit": "days"},
                             "to": {"period": 14, "unit": "days"}}
    assert entry["reason"] == "the venue lists are corrected at once" and entry["actor"] == ADMIN


@pytest.mark.parametrize(("kind", "given", "flag"), [
    ("car", {"years": 5}, "kind"),
    ("person", {"days": 5}, "years"),
    ("import", {"years": 1}, "days"),
    ("person", {}, "years"),
    ("person", {"years": 0}, "years"),
    ("person", {"years": 101}, "years"),
    ("import", {"days": 3651}, "days"),
    ("person", {"years": 5, "days": 3}, "years"),
])
def test_a_bad_kind_or_value_is_refused_naming_the_field_and_nothing_changes(
        engine: Engine, db: Database, kind: str, given: dict[str, int], flag: str) -> None:
    before = contents(db)
    with pytest.raises(UsageError) as refused:
        engine.set_retention(kind, actor=ADMIN, reason="why", **given)
    assert flag in refused.value.fields
    assert contents(db) == before


def test_the_same_period_again_and_no_reason_are_refused(engine: Engine, db: Database) -> None:
    before = contents(db)
    with pytest.raises(RuleRefused, match="already"):
        engine.set_retention("person", years=10, actor=ADMIN, reason="no change")
    with pytest.raises(UsageError) as refused:
        engine.set_retention("person", years=12, actor=ADMIN, reason=" ")
    assert refused.value.fields == ("reason",)
    assert contents(db) == before


@pytest.mark.parametrize(("who", "call"), [
    (STAFF, "set"), (AUDITOR, "set"), (STAFF, "purge"), (AUDITOR, "purge"), (STAFF, "due"), ("timer", "set"),
])
def test_who_may_set_purge_and_list_and_a_refusal_changes_only_the_refused_users_chain(
        world: World, engine: Engine, db: Database, clock: SimulatedClock, who: str, call: str) -> None:
    clock.set(DUE)
    before = contents(db)
    calls = {"set": lambda: engine.set_retention("person", years=12, actor=who, reason="x"),
             "purge": lambda: engine.purge(actor=who), "due": lambda: engine.retention_due(actor=who)}
    with pytest.raises(NotPermitted):
        calls[call]()
    after = contents(db)
    assert {t: r for t, r in after.items() if t not in ("audit_log", "users")} == {
        t: r for t, r in before.items() if t not in ("audit_log", "users")}
    [refusal] = after["audit_log"][len(before["audit_log"]):]
    assert engine.audit(trigger="refused")[-1]["actor"] == who and refusal is not None
    assert engine.show(world.p)["ref"] == REF


def test_the_timer_user_may_purge_and_anchor_and_nothing_else(world: World, engine: Engine,
                                                               clock: SimulatedClock, tmp_path: Any) -> None:
    clock.set(DUE)
    assert sorted(p["person"] for p in engine.purge(actor="timer")["persons"]) == sorted([world.p, world.q])
    assert engine.audit(entity=world.p)[-1]["actor"] == "timer"
    from engine import anchor as anchoring

    keys = anchoring.write_key_pair(str(tmp_path / "keys"))
    made = anchoring.make_anchor(engine.runtime, "timer", anchoring.load_private_key(keys["private_key"]),
                                 lambda document: "somewhere")
    assert made["output"] == "somewhere"
    for refused in (lambda: engine.add_person(ref="BY-TIMER", actor="timer"),
                    lambda: engine.note(world.source_case, text="by the timer", actor="timer"),
                    lambda: engine.set_retention("person", years=12, actor="timer", reason="x"),
                    lambda: engine.retention_due(actor="timer")):
        with pytest.raises(NotPermitted):
            refused()


# ---- the notes table: append-only but for the purge's redaction -------------------------------------------------


def test_the_notes_table_lets_through_only_the_redaction(engine: Engine, db: Database) -> None:
    person = engine.add_person(ref="NOTE-REF", actor=STAFF)["id"]
    engine.note(person, text="a note to keep", actor=STAFF)
    notes = Note.__table__
    now = T("2035-01-01T00:00:00+01:00")
    refused_updates = [
        {"text": "rewritten"},
        {"text": None},  # without the marker
        {"purged_at": now},  # the marker without removing the text
        {"text": None, "purged_at": now, "actor": "someone else"},
        {"text": None, "purged_at": now, "at": now},
        {"text": None, "purged_at": now, "object_id": 99},
    ]
    for values in refused_updates:
        with pytest.raises(DBAPIError), db.engine.begin() as connection:
            connection.execute(update(notes).values(**values))
    with pytest.raises(DBAPIError), db.engine.begin() as connection:
        connection.execute(notes.delete())
    with db.engine.connect() as connection:
        assert connection.execute(select(notes.c.text, notes.c.purged_at)).all() == [("a note to keep", None)]
    with db.engine.begin() as connection:  # the redaction itself
        connection.execute(update(notes).values(text=None, purged_at=now))
    with pytest.raises(DBAPIError), db.engine.begin() as connection:  # once: a redacted note stays as it is
        connection.execute(update(notes).values(text=None, purged_at=now + timedelta(days=1)))
    with pytest.raises(DBAPIError), db.engine.begin() as connection:
        connection.execute(update(notes).values(text="back again"))
    with db.engine.connect() as connection:
        assert connection.execute(select(notes.c.text)).scalars().all() == [None]


# ---- imports ------------------------------------------------------------------------------------------------


def test_an_import_is_purged_30_days_after_it_finished(engine: Engine, db: Database,
                                                       clock: SimulatedClock) -> None:
    source = engine.add_person(ref="IMPORT-SOURCE", actor=STAFF)["id"]
    case = engine.open("case", "open", person=source, actor=STAFF, data={
        "onset": D("2025-03-01"), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    engine.apply(case, "confirm", data={"pcr_on": D("2025-03-02")}, actor=STAFF)
    engine.apply(case, "consent", data={"tracing": True}, actor=STAFF)
    content = f"CPR;Eksponeringsdato;Kontakttype\n{REF};02.03.2025;husstand\nIMPORT-2;02.03.2025;husstand\n".encode()
    view = run_import(engine, Request(kind="contacts", content=content, filename="venue-jens-list.csv",
                                      actor=STAFF, case=case, reason="PURGE-IMPORT-REASON"))
    assert view["counts"]["created"] == 2
    record_id = view["id"]
    clock.set(T("2025-04-03T00:00:00+02:00") - timedelta(microseconds=1))  # 3 March + 30 days: last day 2 April
    assert engine.purge(actor=ADMIN)["imports"] == []
    due = engine.retention_due(within_weeks=1, actor=AUDITOR)["items"]
    assert [(i["id"], i["last_day"], i["due_at"]) for i in due if i["kind"] == "import"] == [
        (record_id, "2025-04-02", "2025-04-03T00:00:00+02:00")]
    clock.set(T("2025-04-03T00:00:00+02:00"))
    [receipt] = engine.purge(actor=ADMIN)["imports"]
    assert receipt["import"] == record_id and receipt["removed"]["links"] == 4
    with db.engine.connect() as connection:
        row = connection.execute(text("SELECT content, filename, options, report, purged_at FROM imports")).one()
    assert row.content is None and row.filename == f"{record_id}.csv" and row.purged_at is not None
    stored = json.dumps([row.options, row.report]) if not isinstance(row.report, str) else row.options + row.report
    assert "person-" not in stored and "contact-" not in stored and "PURGE-IMPORT-REASON" not in stored
    assert "venue-jens" not in stored
    report = row.report if not isinstance(row.report, str) else json.loads(row.report)
    assert [(r["row"], r["result"]) for r in report] == [(2, "created"), (3, "created")]
    entry = engine.audit(trigger="purged")[-1]
    assert entry["object"] == "user-" + entry["object"].split("-")[1] and entry["rule"] == "retention:import 30 days"
    assert entry["data"]["import"] == record_id
    with pytest.raises(RuleRefused, match="deleted"):
        report_file(row.content, row.filename, report)
    # The persons it made are kept (their own rule), and the table dump holds the reference only in persons.
    assert engine.search(REF)[0]["ref"] == REF
    assert engine.audit_verify()["intact"]


# ---- several purges at once on PostgreSQL ---------------------------------------------------------------------

_fork = multiprocessing.get_context("fork")
CHILD_TIMEOUT_S = 60


def _purging_child(url: str, barrier: Any, results: Any) -> None:
    database = Database(url)
    try:
        engine = Engine(database, SimulatedClock(DUE))
        barrier.wait(CHILD_TIMEOUT_S)
        try:
            done = engine.purge(actor=ADMIN)
            results.put(("ok", [p["person"] for p in done["persons"]], len(done["skipped"])))
        except Exception as error:  # noqa: BLE001 - the parent asserts what each child ended with
            results.put((type(error).__name__, str(error)[:200], 0))
    finally:
        database.dispose()


def test_parallel_purges_on_postgresql_purge_each_person_exactly_once(pg_url: str) -> None:
    n = 12
    with Database(pg_url) as database:
        clock = SimulatedClock(START)
        engine = Engine(database, clock)
        persons = [engine.add_person(ref=f"RACE-{i:03d}", born=D(BORN), actor=STAFF)["id"] for i in range(n)]
        for p in persons[::2]:
            engine.note(p, text="a note to redact", actor=STAFF)
    barrier, results = _fork.Barrier(3), _fork.Queue()
    children = [_fork.Process(target=_purging_child, args=(pg_url, barrier, results)) for _ in range(3)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=CHILD_TIMEOUT_S) for _ in children]
    for child in children:
        child.join(CHILD_TIMEOUT_S)
        assert child.exitcode == 0
    assert all(o[0] == "ok" for o in outcomes), outcomes
    purged = [p for o in outcomes for p in o[1]]
    assert sorted(purged) == sorted(persons), outcomes  # every one, none twice
    with Database(pg_url) as database:
        engine = Engine(database, SimulatedClock(DUE))
        receipts = [e["object"] for e in engine.audit(trigger="purged")]
        assert sorted(receipts) == sorted(persons)
        assert all(engine.show(p)["ref"] is None for p in persons)
        assert engine.audit_verify()["intact"] and engine.audit_replay()["matches"]


# ---- the command line and the pages --------------------------------------------------------------------------


def test_the_cli_lists_sets_warns_and_purges(cli_db: str) -> None:
    rules = doc(cli_db, "retention", "rules")
    assert [(r["kind"], r["period"], r["unit"]) for r in rules] == [("person", 10, "years"), ("import", 30, "days")]
    person = doc(cli_db, "person", "add", "--ref", REF, "--born", BORN, "--actor", STAFF)["id"]
    changed = doc(cli_db, "retention", "set", "person", "--years", "1", "--reason", "training database",
                  "--actor", ADMIN)
    assert changed["rule"] == "retention:person 1 years"
    warned = doc(cli_db, "retention", "due", "--within", "60", "--as", AUDITOR)
    assert [(i["id"], i["last_day"], i["due_at"]) for i in warned["items"]] == [
        (person, "2026-03-03", "2026-03-04T00:00:00+01:00")]
    assert REF not in json.dumps(warned)
    text_out = cli(cli_db, "retention", "due", "--within", "60", "--as", ADMIN)
    assert text_out.exit_code == 0 and person in text_out.stdout and "2026-03-03" in text_out.stdout
    cli(cli_db, "clock", "advance", "--to", "2026-03-04T00:00:00+01:00", "--actor", ADMIN)
    dry = doc(cli_db, "retention", "purge", "--dry-run", "--actor", ADMIN)
    assert [p["person"] for p in dry["persons"]] == [person] and dry["persons"][0]["audit_seq"] is None
    done = cli(cli_db, "retention", "purge", "--actor", ADMIN)
    assert done.exit_code == 0 and f"purged {person}" in done.stdout, describe(done)
    assert doc(cli_db, "show", person, "--as", ADMIN)["ref"] is None
    assert cli(cli_db, "audit", "verify").exit_code == 0
    assert cli(cli_db, "audit", "replay", "--check").exit_code == 0


@pytest.mark.parametrize(("args", "code", "named"), [
    (("retention", "set", "car", "--years", "3", "--reason", "x"), 2, "KIND"),
    (("retention", "set", "person", "--days", "3", "--reason", "x"), 2, "--years"),
    (("retention", "set", "person", "--years", "0", "--reason", "x"), 2, "--years"),
    (("retention", "set", "import", "--days", "9999", "--reason", "x"), 2, "--days"),
    (("retention", "set", "person", "--years", "3"), 2, "--reason"),
    (("retention", "due", "--within", "-1"), 2, "--within"),
])
def test_the_cli_refuses_bad_usage_naming_the_flag(cli_db: str, args: tuple[str, ...], code: int,
                                                    named: str) -> None:
    from tests.test_cli import refused

    result = refused(cli_db, *args, "--actor" if args[1] != "due" else "--as", ADMIN, code=code)
    assert named in result.stderr, describe(result)


def test_staff_may_not_purge_or_set_exit_3(cli_db: str) -> None:
    for args in (("retention", "purge", "--actor", STAFF),
                 ("retention", "set", "person", "--years", "3", "--reason", "x", "--actor", STAFF),
                 ("retention", "due", "--as", STAFF)):
        result = cli(cli_db, *args)
        assert result.exit_code == 3, describe(result)


@pytest.fixture
def purged_site(cli_db: str, client_for: Any) -> Iterator[tuple[Any, str, str]]:
    """A person with a note and a case document, purged (the period set to 1 year), and a staff client."""
    person = doc(cli_db, "person", "add", "--ref", REF, "--born", BORN, "--actor", STAFF)["id"]
    case = doc(cli_db, "case", "open", "--person", person, "--onset", "2025-03-01", "--symptoms", "rash",
               "--criteria", "msm", "--confirmed", "--pcr-on", "2025-03-02", "--actor", STAFF)["id"]
    document = doc(cli_db, "case", "document", case, "--actor", STAFF)["id"]
    doc(cli_db, "note", person, "--text", "PURGE-NOTE-PERSON", "--actor", STAFF)
    doc(cli_db, "case", "die", case, "--on", "2025-03-03", "--actor", STAFF)
    doc(cli_db, "retention", "set", "person", "--years", "1", "--reason", "test", "--actor", ADMIN)
    cli(cli_db, "clock", "advance", "--to", "2026-03-05T00:00:00+01:00", "--actor", ADMIN)
    assert [p["person"] for p in doc(cli_db, "retention", "purge", "--actor", ADMIN)["persons"]] == [person]
    yield client_for(STAFF), person, document


def test_the_pages_say_the_personal_data_was_deleted(purged_site: tuple[Any, str, str]) -> None:
    staff, person, document = purged_site
    page = staff.get(f"/objects/{person}")
    assert page.status_code == 200 and 'id="purged"' in page.text
    assert "personoplysninger" in page.text and "05.03.2026" in page.text and "retention:person 1 years" in page.text
    assert REF not in page.text and "PURGE-NOTE-PERSON" not in page.text and "slettet" in page.text
    assert 'id="note-form"' not in page.text  # nothing more is recorded on them
    listing = staff.get("/list/persons")
    assert "personoplysninger slettet 05.03.2026" in listing.text and "None" not in listing.text
    found = staff.post("/search", data={"q": person})
    assert "personoplysninger slettet" in found.text and ">None<" not in found.text
    printed = staff.get(f"/documents/{document}")
    assert printed.status_code == 200 and 'id="purged"' in printed.text and REF not in printed.text
    assert staff.get(f"/fhir/Bundle/{document}").status_code == 404
    patient = staff.get(f"/fhir/Patient/{person}").json()
    assert "identifier" not in patient and "birthDate" not in patient
    assert any(e["url"].endswith("personal-data-deleted") and e["valueDate"] == "2026-03-05"
               for e in patient["extension"])
