"""The engine on both backends: all-or-nothing transitions, timers armed with them, the append-only audit log,
conflicts, timer firing on the simulated clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, datetime

import pytest
import structlog
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError

from engine.bootstrap import init_database, open_engine
from engine.core import Engine
from persistence.database import Database
from persistence.models import AuditEntry, Timer
from persistence.repository import Repository
from scheduler.firing import advance_simulated_clock
from tests.conftest import START
from tests.helpers import confirmed, contents, person, suspected
from workflows.errors import Conflict, GuardRefused, NotFound, TriggerNotAllowed, UsageError

D = date.fromisoformat
T = datetime.fromisoformat


def race(attempt: Callable[[int], str], racers: int = 2) -> list[object]:
    """Run ``attempt(i)`` for each racer in its own thread; each outcome is its result or its Conflict."""
    outcomes: list[object] = [None] * racers

    def run(i: int) -> None:
        try:
            outcomes[i] = attempt(i)
        except Conflict as conflict:
            outcomes[i] = conflict

    threads = [threading.Thread(target=run, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def timers(engine: Engine, case_id: str) -> dict[str, tuple[str, str]]:
    return {t["name"]: (t["due_at"], t["status"]) for t in engine.show(case_id)["timers"]}


# ---- all or nothing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "data", "error"),
    [
        ("confirm", {"pcr_on": D("2025-02-01")}, GuardRefused),  # before onset
        ("confirm", {"pcr_on": D("2025-03-09")}, GuardRefused),  # in the future
        ("heal", {"on": D("2025-03-02")}, TriggerNotAllowed),  # not from suspected
        ("notify", {"channel": "phone"}, TriggerNotAllowed),  # never confirmed
    ],
)
def test_a_refused_transition_leaves_every_table_unchanged(engine, db, trigger, data, error):
    case_id = suspected(engine, person(engine))
    before = contents(db)
    with pytest.raises(error):
        engine.apply(case_id, trigger, data=data, actor="staff:test")
    assert contents(db) == before


def test_unknown_ids_are_not_found_and_change_nothing(engine, db):
    person_id = person(engine)
    before = contents(db)
    with pytest.raises(NotFound, match="case-99"):
        engine.apply("case-99", "confirm", data={"pcr_on": D("2025-03-02")}, actor="staff:test")
    with pytest.raises(NotFound, match="person-99"):
        engine.open("case", "open", person="person-99", actor="staff:test",
                    data={"onset": D("2025-03-01"), "symptoms": ["rash"], "criteria": ["msm"]})
    with pytest.raises(NotFound):
        engine.show("banana")
    with pytest.raises(UsageError):
        engine.apply(person_id, "confirm", actor="staff:test")
    assert contents(db) == before


def test_a_refused_case_open_writes_nothing(engine, db):
    person_id = person(engine)
    before = contents(db)
    with pytest.raises(GuardRefused, match="criterion"):
        engine.open("case", "open", person=person_id, actor="staff:test",
                    data={"onset": D("2025-03-01"), "symptoms": ["rash"], "criteria": []})
    assert contents(db) == before


def test_a_person_reference_is_unique_and_never_audited(engine, db):
    person(engine, ref="0101901234")
    before = contents(db)
    with pytest.raises(Exception, match="registered already as person-1"):
        person(engine, ref="0101901234")
    assert contents(db) == before
    assert "0101901234" not in repr(engine.audit())


# ---- transitions, timers and audit together ----------------------------------------------------------------


def test_confirm_writes_state_timers_and_audit_in_one_go(engine, db, clock):
    case_id = confirmed(engine, person(engine))
    view = engine.show(case_id)
    assert view["state"] == "confirmed"
    assert view["workflow"] == "case@SST-mpox-7.1"
    assert view["version"] == 2
    assert view["confirmed_at"] == "2025-03-03T08:00:00+01:00"
    assert timers(engine, case_id) == {
        "phone_notification_due": ("2025-03-03T17:00:00+01:00", "pending"),
        "written_notification_due": ("2025-03-04T08:00:00+01:00", "pending"),
        # §2.4: the positive sample to SSI by the end of the next working day.
        "sequencing_sample_due": ("2025-03-04T17:00:00+01:00", "pending"),
        # §2.1 armed by the open (chase the test result, senest 05.03); the positive PCR does it.
        "test_result_due": ("2025-03-06T00:00:00+01:00", "cancelled"),
    }
    opened, entry = engine.audit(entity=case_id)
    assert (entry["trigger"], entry["from"], entry["to"], entry["actor"], entry["rule"]) == (
        "confirm", "suspected", "confirmed", "staff:test", "SST-mpox-7.1 §1.1")
    assert entry["at"] == "2025-03-03T08:00:00+01:00"
    assert entry["data"] == {"pcr_on": "2025-03-03"}
    armed = {a["name"]: a for a in entry["timers_armed"]}
    assert {n: a["rule"] for n, a in armed.items()} == {
        "phone_notification_due": "SST-mpox-7.1 §3.1", "written_notification_due": "SST-mpox-7.1 §3.1",
        "sequencing_sample_due": "SST-mpox-7.1 §2.4"}
    # The same entry records the chase task it did, by the timer's id.
    assert entry["timers_done"] == [{"timer": opened["timers_armed"][0]["timer"], "name": "test_result_due"}]
    assert entry["timers_cancelled"] == [
        {"timer": opened["timers_armed"][0]["timer"], "name": "test_result_due", "why": "task done in time"}]
    with db.reading() as session:
        stored = {t.id: t.name for t in session.scalars(select(Timer))}
    assert {f"timer-{i}": n for i, n in stored.items()} == {
        a["timer"]: a["name"] for a in (*opened["timers_armed"], *entry["timers_armed"])}


@pytest.mark.parametrize(
    ("healed_on", "closes"),
    [("2025-03-20", "2025-06-13T00:00:00+02:00"), ("2025-10-20", "2026-01-13T00:00:00+01:00")],
)
def test_healing_closes_the_case_when_the_condom_advice_ends(engine, clock, healed_on, closes):
    clock.set(T(f"{healed_on}T12:00:00+01:00"))
    case_id = confirmed(engine, person(engine), onset="2025-03-01", pcr_on="2025-03-03")
    engine.apply(case_id, "heal", data={"on": D(healed_on)}, actor="staff:test")
    assert timers(engine, case_id)["condom_advice_ends"] == (closes, "pending")
    # One second before, nothing happens; at the instant, the timer closes the case.
    before = T(closes).timestamp() - 1
    advance_simulated_clock(engine, datetime.fromtimestamp(before, tz=T(closes).tzinfo))
    assert engine.show(case_id)["state"] == "healed"
    [fired] = [f for f in advance_simulated_clock(engine, T(closes)) if f.name == "condom_advice_ends"]
    assert (fired.from_state, fired.to_state, fired.fired_at) == ("healed", "closed", T(closes))
    closing = engine.audit(entity=case_id)[-1]
    assert (closing["trigger"], closing["actor"], closing["at"], closing["rule"]) == (
        "condom_advice_ends", "timer:condom_advice_ends", closes, "SST-mpox-7.1 §4.1")
    assert closing["data"]["fired_late_by_seconds"] == 0


def test_advancing_fires_each_timer_at_its_own_instant_in_due_order(engine, clock):
    first = confirmed(engine, person(engine, "A"))
    clock.set(T("2025-03-03T12:00:00+01:00"))
    second = confirmed(engine, person(engine, "B"))
    fired = advance_simulated_clock(engine, T("2025-03-05T00:00:00+01:00"))
    assert [(f.object, f.name, f.fired_at.isoformat()) for f in fired] == [
        (first, "phone_notification_due", "2025-03-03T16:00:00+00:00"),
        (second, "phone_notification_due", "2025-03-03T16:00:00+00:00"),
        (first, "written_notification_due", "2025-03-04T07:00:00+00:00"),
        (second, "written_notification_due", "2025-03-04T11:00:00+00:00"),
        (first, "sequencing_sample_due", "2025-03-04T16:00:00+00:00"),
        (second, "sequencing_sample_due", "2025-03-04T16:00:00+00:00"),
    ]
    assert clock.now() == T("2025-03-05T00:00:00+01:00")
    at = [e["at"] for e in engine.audit()]
    assert at == sorted(at, key=T)


def test_notification_deadlines_go_overdue_in_the_worklist_until_recorded(engine, clock):
    case_id = confirmed(engine, person(engine))
    engine.apply(case_id, "sample_sent", data={"on": D("2025-03-03")}, actor="staff:test")
    tasks = {(i["task"], i["overdue"]) for i in engine.worklist()}
    assert tasks == {("notify STPS by phone", False), ("notify SSI and STPS in writing", False)}
    engine.apply(case_id, "notify", data={"channel": "phone"}, actor="staff:test")
    assert timers(engine, case_id)["phone_notification_due"] == ("2025-03-03T17:00:00+01:00", "cancelled")
    assert [i["task"] for i in engine.worklist()] == ["notify SSI and STPS in writing"]
    assert engine.worklist(__import__("datetime").timedelta(hours=23)) == []
    advance_simulated_clock(engine, T("2025-03-04T09:00:00+01:00"))
    [item] = engine.worklist()
    assert (item["object"], item["overdue"], item["missed"], item["due_at"], item["rule"]) == (
        case_id, True, True, "2025-03-04T08:00:00+01:00", "SST-mpox-7.1 §3.1")
    overdue = engine.audit(entity=case_id)[-1]
    assert (overdue["trigger"], overdue["from"], overdue["to"]) == ("written_notification_due", "confirmed",
                                                                      "confirmed")
    engine.apply(case_id, "notify", data={"channel": "written"}, actor="staff:test", reason="late")
    assert engine.worklist() == []
    # Missed, never done: recorded late, the task is resolved as done late (issue 12, item 14).
    assert timers(engine, case_id)["written_notification_due"][1] == "missed"


def test_a_timer_whose_trigger_is_no_longer_allowed_is_skipped_and_audited(engine, db, clock):
    case_id = confirmed(engine, person(engine))
    with db.transaction() as session:  # a stray timer, as a bug or a restored backup might leave behind
        session.execute(insert(Timer).values(
            object_kind="case", object_id=1, name="condom_advice_ends", due_at=T("2025-03-03T09:00:00+01:00"),
            rule="SST-mpox-7.1 §4.1", status="pending", armed_at=START))
    fired = [f for f in advance_simulated_clock(engine, T("2025-03-03T10:00:00+01:00"))]
    assert [(f.name, f.status) for f in fired] == [("condom_advice_ends", "skipped")]
    assert engine.show(case_id)["state"] == "confirmed"
    entry = engine.audit(entity=case_id)[-1]
    assert entry["trigger"] == "condom_advice_ends" and entry["reason"].startswith("skipped: case-1 is confirmed")
    assert timers(engine, case_id)["condom_advice_ends"][1] == "skipped"


def test_death_cancels_the_pending_condom_advice(engine, clock):
    case_id = confirmed(engine, person(engine))
    engine.apply(case_id, "heal", data={"on": D("2025-03-03")}, actor="staff:test")
    engine.apply(case_id, "die", data={"on": D("2025-03-03")}, actor="staff:test")
    assert timers(engine, case_id)["condom_advice_ends"][1] == "cancelled"
    assert engine.audit(entity=case_id)[-1]["timers_cancelled"][0]["name"] == "condom_advice_ends"
    assert [f.name for f in advance_simulated_clock(engine, T("2025-09-01T00:00:00+02:00"))] == [
        "phone_notification_due", "written_notification_due", "sequencing_sample_due"]
    assert engine.show(case_id)["state"] == "deceased"


def test_a_structlog_event_per_transition_names_ids_never_the_reference(engine):
    with structlog.testing.capture_logs() as events:
        person_id = person(engine, ref="SECRET-REF-7")
        case_id = suspected(engine, person_id)
    [transition] = [e for e in events if e["event"] == "transition"]
    assert (transition["object"], transition["trigger"], transition["to_state"], transition["rule"]) == (
        case_id, "open", "suspected", "SST-mpox-7.1 §1.1")
    assert "SECRET-REF-7" not in repr(events)


# ---- the append-only audit log -----------------------------------------------------------------------------


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"])
def test_the_database_refuses_to_change_the_audit_log(engine, db, statement):
    suspected(engine, person(engine))
    before = contents(db)
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:
        connection.execute(text(statement))
    assert contents(db) == before


def test_postgresql_refuses_truncating_the_audit_log(engine, db):
    if db.backend != "postgresql":
        assert db.backend == "sqlite"  # SQLite has no TRUNCATE; DELETE is refused above
        return
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:
        connection.execute(text("TRUNCATE audit_log"))


# ---- concurrency -------------------------------------------------------------------------------------------

#: Two members of staff (registered users of every test database).
STAFF = ("staff:test", "staff:anna")


def test_two_concurrent_confirms_one_wins_one_conflicts(database_url, clock):
    setup = Engine(Database(database_url), clock)
    case_id = suspected(setup, person(setup))
    seen_version = setup.show(case_id)["version"]  # both staff looked at the case at this version
    engines = [Engine(Database(database_url), clock) for _ in range(2)]
    try:
        barrier = threading.Barrier(2)

        def confirm(i: int) -> str:
            barrier.wait()
            return engines[i].apply(case_id, "confirm", data={"pcr_on": D("2025-03-02")}, actor=STAFF[i],
                                    expected_version=seen_version)["state"]

        outcomes = race(confirm)
        assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "str"]
        assert [o for o in outcomes if isinstance(o, str)] == ["confirmed"]
        assert [e["trigger"] for e in setup.audit(entity=case_id)] == ["open", "confirm"]
        # One confirmation's three deadlines (§3.1, §2.4) beside the open's chase task it did (§2.1): not twice.
        assert sorted((t["name"], t["status"]) for t in setup.show(case_id)["timers"]) == [
            ("phone_notification_due", "pending"), ("sequencing_sample_due", "pending"),
            ("test_result_due", "cancelled"), ("written_notification_due", "pending")]
    finally:  # even when an assertion fails: no connection left open for a later test
        for e in (setup, *engines):
            e.db.dispose()


# ---- the database and its clock ----------------------------------------------------------------------------


def test_sqlite_is_durable_and_checks_foreign_keys(db):
    if db.backend != "sqlite":
        assert db.backend == "postgresql"
        return
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_simulated_clock_is_kept_by_the_database(database_url):
    with Database(database_url) as fresh:
        init_database(fresh, T("2025-03-03T08:00:00+01:00"))
    first = open_engine(database_url)
    case_id = confirmed(first, person(first))
    advance_simulated_clock(first, T("2025-03-04T12:00:00+01:00"))
    second = open_engine(database_url)
    try:
        assert second.clock.now() == T("2025-03-04T12:00:00+01:00")
        # Every deadline passed undone (§2.4 sample due 2025-03-04 17:00 still ahead): missed, never "fired, done".
        assert timers(second, case_id) == {"phone_notification_due": ("2025-03-03T17:00:00+01:00", "missed"),
                                           "written_notification_due": ("2025-03-04T08:00:00+01:00", "missed"),
                                           "sequencing_sample_due": ("2025-03-04T17:00:00+01:00", "pending"),
                                           # §2.1 done by the confirmation before it was due: never fires.
                                           "test_result_due": ("2025-03-06T00:00:00+01:00", "cancelled")}
        with pytest.raises(UsageError, match="only moves forward"):
            advance_simulated_clock(second, T("2025-03-04T11:00:00+01:00"))
        with pytest.raises(UsageError, match="already"), Database(database_url) as again:
            init_database(again, T("2025-01-01T00:00:00+01:00"))
    finally:  # even when an assertion fails: no connection left open for a later test
        for e in (first, second):
            e.db.dispose()


def test_a_real_time_database_refuses_to_move_its_clock(database_url):
    with Database(database_url) as fresh:
        init_database(fresh)
    engine = open_engine(database_url)
    assert not engine.clock.simulated
    with pytest.raises(UsageError, match="init simulated_clock"):
        advance_simulated_clock(engine, T("2030-01-01T00:00:00+01:00"))
    engine.db.dispose()


def test_every_change_has_exactly_one_audit_entry(engine, db, clock):
    case_id = confirmed(engine, person(engine))
    engine.apply(case_id, "isolate", data={"mode": "home"}, actor="staff:test")
    engine.apply(case_id, "isolate", data={"mode": "hospital"}, actor="staff:test")
    engine.apply(case_id, "heal", data={"on": D("2025-03-03")}, actor="staff:test")
    advance_simulated_clock(engine, T("2025-06-01T00:00:00+02:00"))
    with db.reading() as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        case = Repository(session).workflow_object("case", 1)
        assert [e.trigger for e in entries if e.object_kind == "case"] == [
            "open", "confirm", "isolate", "isolate", "heal", "phone_notification_due", "written_notification_due",
            "sequencing_sample_due", "condom_advice_ends"]
        assert case.state == "closed" and case.isolation_mode == "hospital"
        assert case.version == 1 + len([e for e in entries if e.object_kind == "case"]) - 1


class _RendezvousClock:
    """A clock that holds each reader until both racers have read it: both have loaded the object by then."""

    simulated = True

    def __init__(self, now: datetime) -> None:
        self._now, self._barrier = now, threading.Barrier(2, timeout=10)

    def now(self) -> datetime:
        self._barrier.wait()
        return self._now


def test_a_true_race_between_two_writers_is_a_conflict_on_postgresql(pg_url, clock):
    # Both transactions load version 1 before either writes (the clock is read after the load); the second
    # UPDATE waits for the first to commit, then finds the version moved on: a Conflict, never a lost update.
    # (On SQLite writers never overlap: BEGIN IMMEDIATE queues the second before it reads anything.)
    setup = Engine(Database(pg_url), clock)
    case_id = suspected(setup, person(setup))
    racing = _RendezvousClock(T("2025-03-03T09:00:00+01:00"))
    engines = [Engine(Database(pg_url), racing) for _ in range(2)]

    def discard(i: int) -> str:
        return engines[i].apply(case_id, "discard", actor=STAFF[i], reason="PCR negative")["state"]

    outcomes = race(discard)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "str"]
    conflict = next(o for o in outcomes if isinstance(o, Conflict))
    assert "changed by someone else" in str(conflict)
    assert [e["trigger"] for e in setup.audit(entity=case_id)] == ["open", "discard"]
    assert setup.show(case_id)["version"] == 2
    for e in (setup, *engines):
        e.db.dispose()
