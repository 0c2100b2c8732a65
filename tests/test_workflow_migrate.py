"""Open objects moved to a later definition (issue 20 item 2): ``workflow migrate --from A --to B``.

A population of open cases, contacts and courses in every open state, under the product's definitions, is migrated
to the test successors (``tests/successor.py``: monitoring of 14 days, condom advice of 8 weeks, dose 2 from 35
days; an offered course maps to no state; a contact traced anonymously through the doctor fails the successor's
guard). On both backends: the dry run's report is the real run's and writes nothing; each migrated object's timers
are what the successor computes from its facts (hand-computed, one across the change to summer time); objects that
cannot migrate are untouched; each migration is one audited ``migrated`` transition; replay, ``--as-of`` and
``audit verify`` hold; a monitoring end the shorter period has already passed fires at the next clock step.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from engine.clock import SimulatedClock
from engine.core import Engine
from persistence.database import Database
from persistence.models import AuditEntry, Contact, Course, Timer
from scheduler.firing import advance_simulated_clock
from tests.conftest import ADMIN, START
from tests.helpers import confirmed, contents, person, pk
from tests.successor import CASE_SUCCESSOR, COURSE_SUCCESSOR, SUCCESSOR, registered  # noqa: F401
from workflows.contact import CONTACT
from workflows.errors import NotPermitted, RuleRefused, UsageError

STAFF = "staff:test"
D = date.fromisoformat
T = datetime.fromisoformat
OLD, NEW = CONTACT.name, SUCCESSOR.name
#: The instant of the migration: a Thursday, 17 days into the outbreak.
NOW = T("2025-03-20T10:00:00+01:00")


@dataclass
class Population:
    case_suspected: str
    case_confirmed: str
    case_isolated: str
    case_healed: str
    case_closed: str
    source: str
    contact_exposed: str
    contact_monitored: str
    contact_released: str
    contact_symptomatic: str
    contact_anonymous: str
    course_offered: str
    course_dose1: str
    course_dose2_due: str


def build(engine: Engine, clock: SimulatedClock) -> Population:
    """Every open state of every workflow, at NOW."""
    clock.set(START)  # Monday 2025-03-03 08:00
    people = iter(person(engine, f"REF-{n}") for n in range(1, 30))
    source = confirmed(engine, next(people), onset="2025-02-15", pcr_on="2025-02-18")
    engine.apply(source, "consent", data={"tracing": True}, actor=STAFF)
    declined = confirmed(engine, next(people), onset="2025-02-20", pcr_on="2025-02-22")
    engine.apply(declined, "consent", data={"tracing": False}, actor=STAFF)

    def contact(on: str, who: str | None = None, case: str = source, **extra: Any) -> str:
        return engine.open("contact", "add", person=who or next(people), actor=STAFF, data={
            "case": case, "exposed": D(on), "kind": "household", "risk": None, "reason": None,
            "anonymous_via_doctor": False, **extra})["id"]

    released = contact("2025-02-15")  # 21 days: released at 00:00 on 2025-03-09
    monitored = contact("2025-03-01")
    engine.apply(monitored, "inform", data={}, actor=STAFF)
    symptomatic = contact("2025-03-01")
    engine.apply(symptomatic, "symptoms", data={"onset": D("2025-03-03"), "symptoms": ["rash"]}, actor=STAFF)
    anonymous = contact("2025-03-01", case=declined, anonymous_via_doctor=True)
    prep = {"indication": "prep", "contact": None, "criteria": ["msm_sti_24w"], "assessed_by": None,
            "criterion_on": D("2025-02-20")}
    dose = {"consent": False, "indication_note": None, "justification": None, "assessed_by": None}
    due = engine.open("course", "offer", person=next(people), actor=STAFF, data=prep)["id"]
    engine.apply(due, "dose", data={"on": D("2025-02-14"), **dose}, actor=STAFF)  # dose 2 due 2025-03-14
    healed = confirmed(engine, next(people), onset="2025-02-20", pcr_on="2025-02-21")
    closed = confirmed(engine, next(people), onset="2025-01-01", pcr_on="2025-01-03")
    engine.apply(closed, "heal", data={"on": D("2025-01-20")}, actor=STAFF)  # 12 weeks: 2025-04-14...
    engine.apply(closed, "die", data={"on": D("2025-03-02")}, actor=STAFF, reason="died")  # ... so: deceased

    advance_simulated_clock(engine, T("2025-03-12T10:00:00+01:00"))
    dose1 = engine.open("course", "offer", person=next(people), actor=STAFF, data=prep)["id"]
    engine.apply(dose1, "dose", data={"on": D("2025-03-12"), **dose}, actor=STAFF)
    advance_simulated_clock(engine, T("2025-03-14T10:00:00+01:00"))
    exposed = contact("2025-03-14")
    offered = engine.open("course", "offer", person=engine.show(exposed)["person"], actor=STAFF, data={
        "indication": "pep", "contact": exposed, "criteria": [], "assessed_by": "dr:infection"})["id"]
    advance_simulated_clock(engine, T("2025-03-18T10:00:00+01:00"))
    engine.apply(healed, "heal", data={"on": D("2025-03-18")}, actor=STAFF)
    isolated = confirmed(engine, next(people), onset="2025-03-15", pcr_on="2025-03-17")
    engine.apply(isolated, "isolate", data={"mode": "home"}, actor=STAFF)
    confirmed_case = confirmed(engine, next(people), onset="2025-03-16", pcr_on="2025-03-18")
    suspected_case = engine.open("case", "open", person=next(people), actor=STAFF, data={
        "onset": D("2025-03-17"), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    advance_simulated_clock(engine, NOW)
    population = Population(
        suspected_case, confirmed_case, isolated, healed, closed, source, exposed, monitored, released,
        engine.show(symptomatic)["id"], anonymous, offered, dose1, due)
    states = {name: engine.show(getattr(population, name))["state"] for name in vars(population)}
    assert states == {
        "case_suspected": "suspected", "case_confirmed": "confirmed", "case_isolated": "isolated",
        "case_healed": "healed", "case_closed": "deceased", "source": "confirmed", "contact_exposed": "exposed",
        "contact_monitored": "monitored", "contact_released": "released", "contact_symptomatic": "symptomatic",
        "contact_anonymous": "exposed", "course_offered": "offered", "course_dose1": "dose1_given",
        "course_dose2_due": "dose2_due"}
    return population


@pytest.fixture
def population(engine: Engine, clock: SimulatedClock, registered: Any) -> Iterator[Population]:  # noqa: F811
    yield build(engine, clock)


def pending(engine: Engine, object_id: str) -> dict[str, str]:
    return {t["name"]: t["due_at"] for t in engine.show(object_id)["timers"] if t["status"] == "pending"}


def migrate(engine: Engine, kind: str, **options: Any) -> dict[str, Any]:
    names = {"case": CASE_SUCCESSOR, "contact": SUCCESSOR, "course": COURSE_SUCCESSOR}
    target = names[kind]
    assert target.migrates_from is not None
    return engine.migrate(target.migrates_from.name, target.name, actor=ADMIN, **options)


def rows_of(db: Database, model: Any, ids: list[str]) -> list[tuple[Any, ...]]:
    table = model.__table__
    with db.engine.connect() as connection:
        found = connection.execute(select(table).where(table.c.id.in_([pk(i) for i in ids])).order_by(table.c.id))
        return [tuple(r) for r in found]


def timer_rows(db: Database, kind: str, ids: list[str]) -> list[tuple[Any, ...]]:
    table = Timer.__table__
    with db.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(
            select(table).where(table.c.object_kind == kind, table.c.object_id.in_([pk(i) for i in ids]))
            .order_by(table.c.id))]


# ---- contacts ------------------------------------------------------------------------------------------------


def test_contacts_move_to_the_successor_with_its_timers(engine: Engine, db: Database, population: Population) -> None:
    p = population
    before = pending(engine, p.contact_exposed)
    # The product's 21 days from 2025-03-14: 00:00 local on 2025-04-05, after the change to summer time.
    assert before["monitoring_ends"] == "2025-04-05T00:00:00+02:00"
    untouched = rows_of(db, Contact, [p.contact_anonymous]), timer_rows(db, "contact", [p.contact_anonymous])

    dry = migrate(engine, "contact", dry_run=True)
    assert pending(engine, p.contact_exposed) == before  # a dry run writes nothing
    report = migrate(engine, "contact")
    assert {k: v for k, v in dry.items() if k != "dry_run"} == {
        k: v for k, v in report.items() if k != "dry_run"} | {"migrated": [
            {**m, "audit_seq": None} for m in report["migrated"]]}
    assert (dry["dry_run"], report["dry_run"]) == (True, False)

    assert report["counts"] == {"considered": 5, "migrated": 4, "not_migrated": 1}
    moved = {m["object"]: m for m in report["migrated"]}
    assert sorted(moved) == sorted([p.contact_exposed, p.contact_monitored, p.contact_released,
                                    p.contact_symptomatic])
    # 14 days from the last exposure (2025-03-14): 00:00 local on 2025-03-29, still winter time.
    exposed = moved[p.contact_exposed]
    assert (exposed["from_state"], exposed["to_state"]) == ("exposed", "exposed")
    assert [(t["name"], t["due_at"]) for t in exposed["cancelled"]] == [("monitoring_ends",
                                                                         "2025-04-05T00:00:00+02:00")]
    assert exposed["armed"] == [{"name": "monitoring_ends", "due_at": "2025-03-29T00:00:00+01:00", "task": None}]
    # The PEP window counts as before (best-by day 4 and the information deadline are past): kept, not replaced.
    assert [t["name"] for t in exposed["kept"]] == ["pep_window_closes"]
    assert pending(engine, p.contact_exposed) == {**before, "monitoring_ends": "2025-03-29T00:00:00+01:00"}
    # A monitored contact whose 14 days (from 2025-03-01) ended on 2025-03-16: its monitoring end is armed in the
    # past, so it fires at the next clock step: never silently skipped.
    monitored = moved[p.contact_monitored]
    assert monitored["armed"] == [{"name": "monitoring_ends", "due_at": "2025-03-16T00:00:00+01:00", "task": None}]
    # Released and symptomatic: nothing of their monitoring runs; their state stays.
    assert (moved[p.contact_released]["armed"], moved[p.contact_released]["cancelled"]) == ([], [])
    assert moved[p.contact_symptomatic]["to_state"] == "symptomatic"
    # The anonymous one fails the successor's guard: reported, untouched.
    assert report["not_migrated"] == [{
        "object": p.contact_anonymous, "state": "exposed", "rule": "SST-mpox-7.1 §5.5",
        "reason": f"{p.contact_anonymous} is traced anonymously through the treating doctor, which this reading has "
                  "no place for: it finishes under the rules it started with (SST-mpox-7.1 §5.5)"}]
    assert (rows_of(db, Contact, [p.contact_anonymous]),
            timer_rows(db, "contact", [p.contact_anonymous])) == untouched
    assert engine.show(p.contact_anonymous)["workflow"] == OLD
    for object_id in moved:
        assert engine.show(object_id)["workflow"] == NEW

    # One audited transition each: from and to definition, what changed, the timers.
    entry = engine.audit(entity=p.contact_exposed)[-1]
    assert (entry["trigger"], entry["from"], entry["to"], entry["workflow"], entry["actor"]) == (
        "migrated", "exposed", "exposed", NEW, ADMIN)
    assert entry["rule"] == "SST-mpox-7.1 §5.5"
    assert entry["data"] == {"from_definition": OLD, "to_definition": NEW}
    assert entry["changes"] == {"workflow": NEW}
    assert entry["seq"] == exposed["audit_seq"]
    assert [t["name"] for t in entry["timers_armed"]] == ["monitoring_ends"]
    assert "REF-" not in json.dumps(report) + json.dumps(entry)  # internal ids only

    # The next clock step fires the monitoring end that is already over, under the successor.
    fired = engine.fire_due()
    assert [(f.object, f.name, f.to_state) for f in fired] == [(p.contact_monitored, "monitoring_ends", "released")]
    assert engine.audit(entity=p.contact_monitored)[-1]["workflow"] == NEW
    # And the exposed one is released after 14 days, not 21.
    advance_simulated_clock(engine, T("2025-03-29T00:00:00+01:00"))
    assert engine.show(p.contact_exposed)["state"] == "released"
    # Migrating again finds only the one left under the old definition.
    assert migrate(engine, "contact")["counts"] == {"considered": 1, "migrated": 0, "not_migrated": 1}
    assert engine.audit_verify()["intact"]
    assert engine.audit_replay()["differences"] == []


def test_replay_and_as_of_before_and_after_the_migration(engine: Engine, clock: SimulatedClock,
                                                         population: Population) -> None:
    p = population
    then = engine.show(p.contact_exposed)
    clock.set(NOW + timedelta(hours=1))
    migrate(engine, "contact")
    assert engine.show(p.contact_exposed, as_of=NOW + timedelta(minutes=30))["workflow"] == OLD
    old = engine.show(p.contact_exposed, as_of=NOW + timedelta(minutes=30))
    assert [(t["name"], t["due_at"], t["status"]) for t in old["timers"]] == [
        (t["name"], t["due_at"], t["status"]) for t in then["timers"]]
    new = engine.show(p.contact_exposed, as_of=NOW + timedelta(hours=1))
    assert new["workflow"] == NEW
    assert {t["name"]: t["due_at"] for t in new["timers"] if t["status"] == "pending"}["monitoring_ends"] == (
        "2025-03-29T00:00:00+01:00")
    shown = engine.show(p.contact_exposed)
    assert {k: v for k, v in new.items() if k not in ("as_of", "audit_seq")} == shown
    assert engine.audit_replay()["differences"] == []


# ---- cases and courses ---------------------------------------------------------------------------------------


def test_cases_and_courses_move_with_their_periods(engine: Engine, db: Database, population: Population) -> None:
    p = population
    assert pending(engine, p.case_healed)["condom_advice_ends"] == "2025-06-11T00:00:00+02:00"  # 12 weeks
    cases = migrate(engine, "case")
    # Every open case (the two sources and the one the symptomatic contact opened among them); the deceased one
    # has ended and is not considered.
    assert cases["counts"] == {"considered": 7, "migrated": 7, "not_migrated": 0}
    moved = {m["object"]: m for m in cases["migrated"]}
    assert p.case_closed not in moved
    # 8 weeks after healing on 2025-03-18: 00:00 local on 2025-05-14.
    assert moved[p.case_healed]["armed"] == [{"name": "condom_advice_ends", "due_at": "2025-05-14T00:00:00+02:00",
                                              "task": None}]
    # A suspected case's deadlines count from events, not facts: kept as they were.
    assert moved[p.case_suspected]["armed"] == moved[p.case_suspected]["cancelled"] == []
    assert [t["name"] for t in moved[p.case_suspected]["kept"]] == ["test_result_due"]

    untouched = rows_of(db, Course, [p.course_offered]), timer_rows(db, "course", [p.course_offered])
    courses = migrate(engine, "course")
    assert courses["counts"] == {"considered": 3, "migrated": 2, "not_migrated": 1}
    assert courses["not_migrated"] == [{
        "object": p.course_offered, "state": "offered", "rule": None,
        "reason": f"{COURSE_SUCCESSOR.name} maps no state to offered: {p.course_offered} finishes under "
                  "course@SST-mpox-7.1"}]
    assert (rows_of(db, Course, [p.course_offered]), timer_rows(db, "course", [p.course_offered])) == untouched
    dose1 = {m["object"]: m for m in courses["migrated"]}[p.course_dose1]
    # Dose 1 on 2025-03-12: dose 2 from 35 days later, 2025-04-16 (28 days: 2025-04-09).
    assert [(t["name"], t["due_at"]) for t in dose1["cancelled"]] == [("dose2_due", "2025-04-09T00:00:00+02:00")]
    assert dose1["armed"] == [{"name": "dose2_due", "due_at": "2025-04-16T00:00:00+02:00",
                               "task": "give dose 2 (from 2025-04-16)"}]
    table = Timer.__table__
    with db.engine.connect() as connection:
        overdue = connection.execute(select(table.c.name, table.c.overdue_at).where(
            table.c.object_kind == "course", table.c.object_id == pk(p.course_dose1),
            table.c.status == "pending")).all()
    # Overdue 14 days (the deployment's setting) after the new due day.
    assert [(name, at.isoformat()) for name, at in overdue] == [("dose2_due", "2025-04-29T22:00:00+00:00")]
    assert engine.audit_verify()["intact"]
    assert engine.audit_replay()["differences"] == []


def test_where_selects_the_objects(engine: Engine, population: Population) -> None:
    p = population
    report = migrate(engine, "contact", where=["state=exposed,monitored"])
    assert sorted(m["object"] for m in report["migrated"]) == sorted([p.contact_exposed, p.contact_monitored])
    report = migrate(engine, "contact", where=[f"id={p.contact_released}", "state=released"])
    assert [m["object"] for m in report["migrated"]] == [p.contact_released]
    assert engine.show(p.contact_symptomatic)["workflow"] == OLD


# ---- refusals: nothing written -------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target", "where", "error", "message"), [
    ("contact@nope", NEW, [], UsageError, "⟦from⟧ contact@nope is not a workflow definition loaded here"),
    (OLD, "contact@nope", [], UsageError, "⟦to⟧ contact@nope is not a workflow definition loaded here"),
    ("case@SST-mpox-7.1", NEW, [], RuleRefused, f"{NEW} declares no migration from case@SST-mpox-7.1"),
    (NEW, OLD, [], RuleRefused, f"{OLD} declares no migration from {NEW} (it migrates from none)"),
    (OLD, NEW, ["state=follow_up"], UsageError, "⟦where⟧ state=follow_up: contact@SST-mpox-7.1 has no such state"),
    (OLD, NEW, ["colour=red"], UsageError, "⟦where⟧ 'colour=red' is not a condition"),
    (OLD, NEW, ["state="], UsageError, "⟦where⟧ 'state=' is not a condition"),
    (OLD, NEW, ["state=exposed", "state=monitored"], UsageError, "⟦where⟧ names state twice"),
    (OLD, NEW, ["id=case-1"], UsageError, "⟦where⟧ id=case-1: give ids of contact objects"),
    (OLD, NEW, ["unit=7"], UsageError, "⟦where⟧ unit=7: give ids of unit objects"),
])
def test_bad_migrations_are_refused_and_write_nothing(engine: Engine, db: Database, population: Population,
                                                      source: str, target: str, where: list[str], error: type,
                                                      message: str) -> None:
    before = contents(db)
    with pytest.raises(error) as raised:
        engine.migrate(source, target, where=where, actor=ADMIN)
    assert message in raised.value.template
    assert contents(db) == before


def test_only_an_admin_migrates(engine: Engine, db: Database, population: Population) -> None:
    before = engine.show(population.contact_exposed)
    with pytest.raises(NotPermitted):
        engine.migrate(OLD, NEW, actor=STAFF)
    assert engine.show(population.contact_exposed) == before
    refusal = engine.audit(entity=None)[-1]
    assert (refusal["trigger"], refusal["actor"]) == ("refused", STAFF)
    assert "workflow migrate" in refusal["reason"]


# ---- a worker firing while the migration runs (PostgreSQL, real processes) -----------------------------------

_fork = multiprocessing.get_context("fork")
CHILD_TIMEOUT_S = 60
RACE_CONTACTS = 120
#: The clock of the race: every contact's timers under the product's rules are due (the last, 21 days'
#: monitoring from 2025-02-20, at 00:00 on 2025-03-14), and so is the successor's 14 days' end.
RACE_NOW = T("2025-03-20T10:00:00+01:00")


def _race_child(url: str, job: str, barrier: Any, results: Any) -> None:
    """A worker (fire what is due until nothing is) or the migration, in its own process and connection."""
    database = Database(url)
    try:
        engine = Engine(database, SimulatedClock(RACE_NOW))
        barrier.wait(CHILD_TIMEOUT_S)
        try:
            if job == "worker":
                fired = 0
                while batch := engine.fire_due(limit=10):
                    fired += len(batch)
                results.put((job, "ok", fired))
            else:
                report = engine.migrate(OLD, NEW, actor=ADMIN)
                results.put((job, "ok", report["counts"]))
        except Exception as error:  # noqa: BLE001 - the parent asserts what each child ended with
            results.put((job, type(error).__name__, str(error)))
    finally:
        database.dispose()


def test_a_worker_racing_the_migration_fires_nothing_twice_nor_under_the_wrong_definition(
        pg_url: str, registered: Any) -> None:  # noqa: F811
    with Database(pg_url) as database:
        engine = Engine(database, SimulatedClock(START))
        source = confirmed(engine, person(engine, "REF-SOURCE"), onset="2025-02-15", pcr_on="2025-02-18")
        engine.apply(source, "consent", data={"tracing": True}, actor=STAFF)
        contacts = [engine.open("contact", "add", person=person(engine, f"REF-{n}"), actor=STAFF, data={
            "case": source, "exposed": D("2025-02-20"), "kind": "household", "risk": None, "reason": None,
            "anonymous_via_doctor": False})["id"] for n in range(RACE_CONTACTS)]
    jobs = ("worker", "worker", "migrate")
    barrier, results = _fork.Barrier(len(jobs)), _fork.Queue()
    children = [_fork.Process(target=_race_child, args=(pg_url, job, barrier, results)) for job in jobs]
    for child in children:
        child.start()
    for child in children:
        child.join(CHILD_TIMEOUT_S * 2)
        assert child.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in jobs]
    assert [o[1] for o in outcomes] == ["ok"] * len(jobs), outcomes
    assert [o[2] for o in outcomes if o[0] == "migrate"] == [
        {"considered": RACE_CONTACTS, "migrated": RACE_CONTACTS, "not_migrated": 0}]

    with Database(pg_url) as database:
        engine = Engine(database, SimulatedClock(RACE_NOW))
        while engine.fire_due():  # what the migration armed after the workers stopped
            pass
        for contact_id in contacts:
            view = engine.show(contact_id)
            assert (view["state"], view["workflow"]) == ("released", NEW), contact_id
            history = engine.audit_timeline(contact_id)
            moved = [e["pos"] for e in history if e["trigger"] == "migrated"]
            assert len(moved) == 1, contact_id
            for entry in history:
                if entry["timer"] is not None:  # a firing runs under the definition the object had then
                    assert entry["workflow"] == (OLD if entry["pos"] < moved[0] else NEW), (contact_id, entry)
            # Released once: the monitoring end fired (fired, not skipped) exactly once, under one definition.
            ends = [e for e in history if e["trigger"] == "monitoring_ends"]
            assert [e["data"].get("outcome", "fired") for e in ends] == ["fired"], (contact_id, ends)
            # The tasks due at the migration were recorded missed, never cancelled unrecorded.
            timers = {t["name"]: t for t in view["timers"]}
            assert timers["pep_assessment_due"]["status"] == "missed"
            assert timers["inform_due"]["status"] == "missed"
        with database.engine.connect() as connection:
            table = Timer.__table__
            cancelled = {r.id for r in connection.execute(select(table.c.id).where(table.c.status == "cancelled"))}
            fired = [r.timer_id for r in connection.execute(
                select(AuditEntry.__table__.c.timer_id).where(AuditEntry.__table__.c.timer_id.is_not(None)))]
        assert len(fired) == len(set(fired))  # no timer fired twice
        assert cancelled.isdisjoint(fired)  # none the migration cancelled fired
        assert engine.audit_verify()["intact"]
        assert engine.audit_replay()["differences"] == []
