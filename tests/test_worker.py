"""The worker: timers that fell due while nothing ran, poison timers, skipped timers, the stop flag, one audit
entry per timer (engine level, both backends, simulated clock); the ``Worker`` in-process on real time; several
worker processes on PostgreSQL sharing 5,000 due timers, a worker killed mid-batch, a clean stop on SIGTERM;
the operator's ``timers`` commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from engine.bootstrap import init_database, open_engine
from engine.clock import SimulatedClock
from engine.core import Engine, RetryPolicy
from entry.cli import app
from persistence.database import Database
from persistence.models import AuditEntry, Case, Person, Timer
from persistence.repository import Repository
from scheduler.worker import Worker
from tests.conftest import START
from tests.helpers import confirmed, person
from workflows.calendar import local_date
from workflows.case import CaseFacts

T = datetime.fromisoformat
ROOT = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT = 60.0

AUDIT = AuditEntry.__table__
TIMERS = Timer.__table__
CASES = Case.__table__
PERSONS = Person.__table__


# ---- helpers ---------------------------------------------------------------------------------------------------


def raw_timer(db: Database, *, object_id: int, name: str, due_at: datetime, kind: str = "case") -> int:
    """A pending timer written directly, as another process (or a bug) might have left it."""
    with db.engine.begin() as connection:
        return int(connection.execute(insert(TIMERS).returning(TIMERS.c.id), {
            "object_kind": kind, "object_id": object_id, "name": name, "due_at": due_at,
            "rule": "SST-mpox-7.1 §4.1", "task": None, "overdue_at": None, "status": "pending",
            "armed_at": due_at, "closed_at": None, "satisfied_at": None, "note": None,
        }).scalar_one())


def timer_row(db: Database, timer_id: int) -> Any:
    with db.engine.connect() as connection:
        return connection.execute(select(TIMERS).where(TIMERS.c.id == timer_id)).one()


def audit_of_timer(db: Database, timer_id: int) -> list[Any]:
    with db.engine.connect() as connection:
        return list(connection.execute(select(AUDIT).where(AUDIT.c.timer_id == timer_id)))


def pk(object_id: str) -> int:
    return int(object_id.rsplit("-", 1)[1])


def bulk_due_timers(url: str, n: int, *, due: datetime | None = None, prefix: str = "BULK") -> list[int]:
    """``n`` persons, each with a healed case (valid ``CaseFacts``) and a pending ``condom_advice_ends`` timer due
    in the past, written with SQLAlchemy Core in a few statements."""
    now = datetime.now(UTC)
    due = due or now - timedelta(days=2)
    healed_on = local_date(now) - timedelta(days=90)
    facts = CaseFacts(onset=healed_on - timedelta(days=30), symptoms=["rash"], criteria=["msm"],
                      pcr_on=healed_on - timedelta(days=28), clade="IIb", confirmed_at=now - timedelta(days=118),
                      healed_on=healed_on)
    case_values = {f: getattr(facts, f) for f in CaseFacts.__dataclass_fields__}
    db = Database(url)
    try:
        with db.engine.begin() as connection:
            person_ids = list(connection.execute(
                insert(PERSONS).returning(PERSONS.c.id, sort_by_parameter_order=True),
                [{"ref": f"{prefix}-{i}", "born": None, "immunocompromised": False, "pregnant": False,
                  "previous_mpox": False, "smallpox_vaccinated": False, "created_at": now} for i in range(n)],
            ).scalars())
            case_ids = list(connection.execute(
                insert(CASES).returning(CASES.c.id, sort_by_parameter_order=True),
                [{**case_values, "person_id": p, "state": "healed", "workflow": "case@SST-mpox-7.1", "version": 1,
                  "created_at": now, "updated_at": now} for p in person_ids],
            ).scalars())
            # Distinct due instants (one second apart, all in the past), so due order is well defined.
            return list(connection.execute(insert(TIMERS).returning(TIMERS.c.id, sort_by_parameter_order=True), [
                {"object_kind": "case", "object_id": c, "name": "condom_advice_ends",
                 "due_at": due - timedelta(seconds=n - i), "rule": "SST-mpox-7.1 §4.1", "task": None,
                 "overdue_at": None, "status": "pending", "armed_at": now, "closed_at": None,
                 "satisfied_at": None, "note": None}
                for i, c in enumerate(case_ids)
            ]).scalars())
    finally:
        db.dispose()


def real_time_db(url: str) -> None:
    with Database(url) as database:
        init_database(database)


def counts(url: str) -> dict[str, Any]:
    """Timer statuses, case states, and audit entries per timer."""
    with Database(url) as db, db.engine.connect() as connection:
        statuses = dict(connection.execute(select(TIMERS.c.status, func.count()).group_by(TIMERS.c.status)).all())
        states = dict(connection.execute(select(CASES.c.state, func.count()).group_by(CASES.c.state)).all())
        per_timer = Counter(connection.execute(
            select(AUDIT.c.timer_id).where(AUDIT.c.timer_id.is_not(None))).scalars())
    return {"statuses": statuses, "states": states, "audited": per_timer}


class WorkerProcess:
    """``mpoxflow worker`` in a process of its own; its stderr (the JSON log lines) goes to a file, so a full pipe
    can never block it."""

    def __init__(self, url: str, log: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MPOXFLOW_LOG_LEVEL"}
        self.log = log
        self._err = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from entry.cli import main; main()", "--db", url, "--log-format", "json",
             "worker", *args],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err, text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.log.read_text()

    def events(self) -> list[dict[str, Any]]:
        return events(self.stderr())

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout} s; its log ends:\n{self.stderr()[-3000:]}")

    def finish(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._err.close()


def events(stderr: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                found.append(json.loads(line))
    return found


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """Start worker processes; any still running when the test ends are killed."""
    started: list[WorkerProcess] = []

    def start(url: str, *args: str) -> WorkerProcess:
        worker = WorkerProcess(url, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.finish()


# ---- engine level: both backends, simulated clock ------------------------------------------------------------


def test_timers_due_during_downtime_fire_at_start_in_due_order_with_their_real_lateness(engine, db, clock):
    a = confirmed(engine, person(engine, "A"))  # 03-03 08:00: phone 03-03 17:00, written 03-04 08:00
    clock.set(T("2025-03-03T10:00:00+01:00"))
    b = confirmed(engine, person(engine, "B"))  # phone 03-03 17:00, written 03-04 10:00
    clock.set(T("2025-03-04T09:00:00+01:00"))
    c = confirmed(engine, person(engine, "C"))  # phone 03-04 17:00, written 03-05 09:00
    # Nothing ran for two days.
    start = T("2025-03-06T12:00:00+01:00")
    clock.set(start)
    fired = engine.fire_due(limit=100)
    # §2.4: each confirmation also arms the sample to SSI, due 17:00 the next working day.
    assert [(f.object, f.name) for f in fired] == [
        (a, "phone_notification_due"), (b, "phone_notification_due"), (a, "written_notification_due"),
        (b, "written_notification_due"), (a, "sequencing_sample_due"), (b, "sequencing_sample_due"),
        (c, "phone_notification_due"), (c, "written_notification_due"), (c, "sequencing_sample_due"),
    ]
    dues = [f.due_at for f in fired]
    assert dues == sorted(dues)
    # Notification deadlines that passed undone are missed tasks, never "fired" as if done (issue 12 item 14).
    assert all(f.status == "missed" and f.fired_at == start for f in fired)
    entries = {e["seq"]: e for e in engine.audit()}
    seqs = [f.audit_seq for f in fired]
    assert seqs == sorted(seqs)
    for f in fired:
        entry = entries[f.audit_seq]
        assert (entry["trigger"], entry["object"], entry["actor"]) == (f.name, f.object, f"timer:{f.name}")
        assert entry["data"]["timer"] == f.timer
        assert entry["data"]["fired_late_by_seconds"] == int((start - f.due_at).total_seconds())
        assert entry["at"] == "2025-03-06T12:00:00+01:00"
    assert entries[fired[0].audit_seq]["data"]["fired_late_by_seconds"] == 3 * 86400 - 5 * 3600
    assert engine.timer_status()["pending"] == 0
    assert engine.fire_due(limit=100) == []


def test_a_poison_timer_is_retried_with_backoff_then_parked_while_the_others_fire(engine, db, clock):
    first = confirmed(engine, person(engine, "A"))
    poison = raw_timer(db, object_id=9999, name="phone_notification_due", due_at=T("2025-03-03T12:00:00+01:00"))
    second = confirmed(engine, person(engine, "B"))
    t0 = T("2025-03-05T12:00:00+01:00")
    clock.set(t0)
    policy = RetryPolicy()  # 5 attempts, 30 s doubling
    fired = engine.fire_due(limit=100, policy=policy)
    # The other four timers fired in the same batch; the poison timer was rolled back alone.
    assert sorted((f.object, f.name) for f in fired) == sorted(
        [(o, n) for o in (first, second)
         for n in ("phone_notification_due", "written_notification_due", "sequencing_sample_due")])
    row = timer_row(db, poison)
    assert (row.status, row.attempts, row.next_attempt_at, row.closed_at) == ("pending", 1, t0 + timedelta(seconds=30),
                                                                                None)
    assert "case-9999" in row.last_error
    assert audit_of_timer(db, poison) == []
    assert engine.next_due() == t0 + timedelta(seconds=30)
    status = engine.timer_status()
    assert (status["pending"], status["overdue"], status["failed"]) == (1, 1, 0)

    # Not before its retry instant.
    clock.set(t0 + timedelta(seconds=29))
    assert engine.fire_due(limit=100, policy=policy) == []
    assert timer_row(db, poison).attempts == 1

    at = t0 + timedelta(seconds=30)
    for attempts, backoff in ((2, 60), (3, 120), (4, 240)):
        clock.set(at)
        assert engine.fire_due(limit=100, policy=policy) == []
        row = timer_row(db, poison)
        at += timedelta(seconds=backoff)
        assert (row.status, row.attempts, row.next_attempt_at) == ("pending", attempts, at)
    clock.set(at)
    assert engine.fire_due(limit=100, policy=policy) == []
    row = timer_row(db, poison)
    assert (row.status, row.attempts, row.next_attempt_at, row.closed_at) == ("failed", 5, None, at)
    assert engine.next_due() is None
    assert engine.fire_due(limit=100, policy=policy) == []  # parked: never tried again

    # case-9999 does not exist, so the parking is recorded on the scheduler user's own chain, naming the case.
    assert engine.audit(entity="case-9999") == []
    parking = [e for e in engine.audit(actor="timer:phone_notification_due") if e["object"].startswith("user-")]
    assert len(parking) == 1
    assert (parking[0]["object"], parking[0]["role"]) == (engine.users()[1]["id"], "timer")
    assert parking[0]["trigger"] == "phone_notification_due"
    assert parking[0]["reason"].startswith("parked as failed after 5 attempts")
    assert {k: parking[0]["data"][k] for k in ("timer", "object", "attempts", "outcome")} == {
        "timer": f"timer-{poison}", "object": "case-9999", "attempts": 5, "outcome": "failed"}
    assert "NotFound" in parking[0]["data"]["error"]
    assert engine.audit_verify()["intact"] is True

    [failed] = engine.timers("failed")
    assert (failed["id"], failed["status"], failed["attempts"], failed["object"]) == (
        f"timer-{poison}", "failed", 5, "case-9999")
    assert "case-9999" in failed["last_error"]
    status = engine.timer_status()
    assert (status["pending"], status["overdue"], status["failed"]) == (0, 0, 1)
    [item] = [i for i in engine.worklist() if i["timer"] == f"timer-{poison}"]
    assert item["overdue"] is True
    assert item["object"] == "case-9999"
    assert "failed after 5 attempts" in item["task"]


def test_the_audit_entry_of_a_parked_timer_names_the_timer(engine, db, clock):
    """``audit_log.timer_id`` records "the timer whose firing (or skip, or parking) this entry records"."""
    poison = raw_timer(db, object_id=9999, name="phone_notification_due", due_at=START)
    clock.set(START + timedelta(hours=1))
    engine.fire_due(limit=10, policy=RetryPolicy(max_attempts=1))
    assert timer_row(db, poison).status == "failed"
    with db.engine.connect() as connection:
        parked = connection.execute(select(AUDIT.c.object_kind, AUDIT.c.timer_id)
                                    .where(AUDIT.c.timer_id.is_not(None))).all()
    assert [tuple(p) for p in parked] == [("user", poison)]  # case-9999 is gone: the scheduler's chain has it


def test_a_timer_whose_trigger_is_no_longer_allowed_is_skipped_not_retried(engine, db, clock):
    case_id = confirmed(engine, person(engine))
    # condom_advice_ends is allowed from healed only; this case is confirmed.
    stale = raw_timer(db, object_id=pk(case_id), name="condom_advice_ends", due_at=T("2025-03-03T09:00:00+01:00"))
    clock.set(T("2025-03-03T10:00:00+01:00"))
    [skipped] = engine.fire_due(limit=10)
    assert (skipped.timer, skipped.status, skipped.from_state, skipped.to_state) == (
        f"timer-{stale}", "skipped", "confirmed", "confirmed")
    row = timer_row(db, stale)
    assert (row.status, row.attempts, row.next_attempt_at, row.last_error) == ("skipped", 0, None, None)
    assert row.note
    [entry] = audit_of_timer(db, stale)
    assert entry.reason.startswith("skipped: ")
    assert entry.data["fired_late_by_seconds"] == 3600
    assert engine.show(case_id)["state"] == "confirmed"
    assert engine.show(case_id)["version"] == 2
    clock.set(T("2025-03-03T11:00:00+01:00"))
    assert engine.fire_due(limit=10) == []
    assert engine.timer_status()["failed"] == 0


def test_fire_due_stops_after_the_timer_in_hand(engine, db, clock):
    a = confirmed(engine, person(engine, "A"))
    clock.set(T("2025-03-03T09:00:00+01:00"))
    confirmed(engine, person(engine, "B"))
    clock.set(T("2025-03-05T12:00:00+01:00"))
    asked: list[int] = []

    def stop() -> bool:  # asked before each timer: False before the first, True once one has fired
        asked.append(1)
        return len(asked) > 1

    [only] = engine.fire_due(limit=100, stop=stop)
    assert (only.object, only.name) == (a, "phone_notification_due")
    assert len(asked) == 2
    statuses = Counter(t["status"] for t in engine.timers())
    # The phone deadline passed undone: missed; both chase tasks (§2.1) were done by the confirmations.
    assert statuses == {"missed": 1, "pending": 5, "cancelled": 2}
    assert len(audit_of_timer(db, pk(only.timer))) == 1
    assert len(engine.fire_due(limit=100)) == 5


def test_a_second_audit_entry_for_one_timer_cannot_be_written(engine, db, clock):
    confirmed(engine, person(engine))
    clock.set(T("2025-03-03T18:00:00+01:00"))
    [fired] = engine.fire_due(limit=10)
    [entry] = audit_of_timer(db, pk(fired.timer))
    duplicate = {k: v for k, v in entry._mapping.items() if k != "seq"}
    with pytest.raises(IntegrityError), db.engine.begin() as connection:
        connection.execute(insert(AUDIT), duplicate)
    assert len(audit_of_timer(db, pk(fired.timer))) == 1
    # And firing it again through the engine does nothing: it is no longer pending, so it cannot be claimed.
    assert engine.fire_due(limit=10) == []
    with db.transaction() as session:
        assert Repository(session).claim_timer(pk(fired.timer), clock.now()) is None
    assert len(audit_of_timer(db, pk(fired.timer))) == 1


def test_two_workers_firing_timers_of_one_object_leave_the_loser_pending_without_an_attempt(pg_url):
    """Two workers take timers of the same contact in different batches (``SKIP LOCKED``): worker B holds
    ``inform_due``; worker A fires ``monitoring_ends``, which releases the contact and cancels ``inform_due`` (so
    it waits for B's row lock), while B's firing of ``inform_due`` writes the contact A has changed (so it waits
    for A). PostgreSQL breaks the deadlock by failing one of them. That is a concurrent change, not a poison
    timer: the loser must be left pending for the next pass, as a Conflict is, with no attempt counted and no
    backoff (with ``--max-attempts 1`` a healthy timer would be parked as failed)."""
    with Database(pg_url) as database:
        init_database(database, START)
    db_a, db_b = Database(pg_url), Database(pg_url)
    clock_a, clock_b = SimulatedClock(START), SimulatedClock(START)
    a, b = Engine(db_a, clock_a), Engine(db_b, clock_b)
    try:
        case_id = confirmed(a, person(a, "CASE"))
        a.apply(case_id, "consent", data={"tracing": True}, actor="staff:test")
        clock_a.set(START + timedelta(hours=26))
        assert len(a.fire_due(limit=10)) == 2  # the case's notification deadlines, out of the way
        contact = a.open("contact", "add", person=person(a, "CONTACT"), actor="staff:test", data={
            "case": case_id, "exposed": T("2025-03-02T00:00:00+01:00").date(), "kind": "sexual", "risk": None,
            "reason": None, "anonymous_via_doctor": False})
        names = {t["name"]: pk(t["id"]) for t in contact["timers"]}
        assert min(contact["timers"], key=lambda t: T(t["due_at"]))["name"] == "inform_due"
        later = T("2025-03-25T12:00:00+01:00")  # every timer of the contact is due
        clock_a.set(later)
        clock_b.set(later)
        outcome: dict[str, Any] = {}

        def worker_a() -> None:
            outcome["a"] = a.fire_due(limit=100, policy=RetryPolicy(max_attempts=1))

        thread = threading.Thread(target=worker_a, daemon=True)

        def b_holds_inform_due() -> bool:  # B has locked its batch (inform_due alone): now let A run into it
            if not thread.is_alive() and "a" not in outcome:
                thread.start()
                time.sleep(0.4)
            return False

        outcome["b"] = b.fire_due(limit=1, stop=b_holds_inform_due, policy=RetryPolicy(max_attempts=1))
        thread.join(timeout=30)
        assert not thread.is_alive()
        rows = {name: timer_row(db_a, pk_) for name, pk_ in names.items()}
        after = a.show(contact["id"])["state"]
    finally:
        db_a.dispose()
        db_b.dispose()
    hurt = {n: (r.status, r.attempts, (r.last_error or "").split("\n")[0]) for n, r in rows.items()
            if r.attempts or r.last_error}
    assert hurt == {}, f"a concurrent change was counted as a failed attempt: {hurt}; the contact is {after}"


# ---- the Worker in-process, real time ------------------------------------------------------------------------


@pytest.fixture
def real_engine(database_url: str) -> Iterator[Engine]:
    real_time_db(database_url)
    engine = open_engine(database_url)
    assert not engine.clock.simulated
    yield engine
    engine.db.dispose()


def test_a_worker_fires_everything_due_then_exits_when_idle(real_engine, database_url):
    bulk_due_timers(database_url, 25)
    worker = Worker(real_engine, poll_seconds=0.2, batch=10, exit_when_idle=True)
    started = time.monotonic()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run(install_signals=False)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the worker did not exit when idle"
    assert result == [25]
    assert time.monotonic() - started < 15
    found = counts(database_url)
    assert found["statuses"] == {"fired": 25}
    assert found["states"] == {"closed": 25}
    assert set(found["audited"].values()) == {1} and len(found["audited"]) == 25
    assert not worker.scheduler.running


def test_a_worker_wakes_at_the_next_due_instant_and_its_poll_catches_timers_armed_elsewhere(real_engine,
                                                                                             database_url):
    db = real_engine.db
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    [timed] = bulk_due_timers(database_url, 1, due=soon + timedelta(seconds=1), prefix="SOON")
    assert timer_row(db, timed).due_at == soon
    worker = Worker(real_engine, poll_seconds=30, batch=10)  # only the wake-up job can fire it in time
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: timer_row(db, timed).status == "fired", 10, "the timer due in 1.5 s to fire")
        assert timer_row(db, timed).closed_at >= soon
        assert datetime.now(UTC) - soon < timedelta(seconds=5)
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert worker.fired == 1

    # A timer armed by someone else, already due: the safety poll finds it.
    polling = Worker(real_engine, poll_seconds=0.3, batch=10)
    thread = threading.Thread(target=polling.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        time.sleep(0.6)  # its first pass found nothing: no wake-up is armed, only the poll can find the next
        [other] = bulk_due_timers(database_url, 1, prefix="ELSEWHERE")
        wait_for(lambda: timer_row(db, other).status == "fired", 10, "the poll to fire a timer armed elsewhere")
    finally:
        polling.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert polling.fired == 1


def test_stop_from_another_thread_stops_a_running_worker_promptly(real_engine, database_url):
    bulk_due_timers(database_url, 5)
    worker = Worker(real_engine, poll_seconds=0.2, batch=10)  # no exit_when_idle: runs until stopped
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run(install_signals=False)), daemon=True)
    thread.start()
    wait_for(lambda: worker.fired == 5, 15, "the worker to fire the due timers")
    time.sleep(0.5)  # a few idle polls
    assert thread.is_alive()
    asked = time.monotonic()
    worker.stop()
    thread.join(timeout=5)
    assert not thread.is_alive(), "stop() did not stop the worker"
    assert time.monotonic() - asked < 2
    assert result == [5]
    assert not worker.scheduler.running


def test_a_pass_that_fails_half_way_still_counts_the_batches_it_committed(real_engine, database_url):
    """``run()`` returns, and ``worker_stopped`` logs, the number of timers fired: a batch that fails (the database
    went away, a serialization failure) must not make the worker forget the batches it committed before it."""
    bulk_due_timers(database_url, 25)
    real_fire_due = real_engine.fire_due
    calls: list[int] = []

    def flaky_fire_due(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the second batch of the first pass: the first batch is committed already
            raise RuntimeError("connection lost")
        return real_fire_due(**kwargs)

    real_engine.fire_due = flaky_fire_due  # type: ignore[method-assign]
    worker = Worker(real_engine, poll_seconds=0.2, batch=10, exit_when_idle=True)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run(install_signals=False)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert counts(database_url)["statuses"] == {"fired": 25}
    assert result == [25]


def test_a_worker_refuses_non_positive_settings(real_engine):
    with pytest.raises(ValueError):
        Worker(real_engine, poll_seconds=0)
    with pytest.raises(ValueError):
        Worker(real_engine, batch=0)


# ---- worker processes on PostgreSQL --------------------------------------------------------------------------


def assert_each_fired_once(url: str, n: int) -> None:
    found = counts(url)
    assert found["statuses"] == {"fired": n}
    assert found["states"] == {"closed": n}
    assert len(found["audited"]) == n
    assert [t for t, k in found["audited"].items() if k != 1] == []


@pytest.mark.slow
def test_three_worker_processes_share_5000_due_timers_each_fired_once(pg_url, spawn):
    real_time_db(pg_url)
    bulk_due_timers(pg_url, 5000)
    workers = [spawn(pg_url, "--exit-when-idle", "--batch", "50", "--poll", "0.5") for _ in range(3)]
    for worker in workers:
        assert worker.wait() == 0, worker.stderr()[-3000:]
    assert_each_fired_once(pg_url, 5000)
    logged = [worker.events() for worker in workers]
    fired_by = [sum(1 for e in evs if e["event"] == "timer_fired") for evs in logged]
    stopped = [[e for e in evs if e["event"] == "worker_stopped"] for evs in logged]
    assert [len(s) for s in stopped] == [1, 1, 1]
    assert [s[0]["fired"] for s in stopped] == fired_by
    assert sum(fired_by) == 5000
    assert sum(1 for n in fired_by if n > 0) > 1, f"only one process did any work: {fired_by}"
    timers = [e["timer"] for evs in logged for e in evs if e["event"] == "timer_fired"]
    assert len(set(timers)) == 5000


@pytest.mark.slow
def test_a_worker_killed_mid_batch_leaves_nothing_half_done(pg_url, spawn):
    real_time_db(pg_url)
    bulk_due_timers(pg_url, 5000)
    worker = spawn(pg_url, "--batch", "200", "--poll", "0.5")

    def fired() -> int:
        return counts(pg_url)["statuses"].get("fired", 0)

    wait_for(lambda: fired() >= 400 or worker.proc.poll() is not None, 40, "the worker to commit a few batches",
             0.02)
    assert worker.proc.poll() is None, "the worker ended before it could be killed"
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    after_kill = counts(pg_url)
    done = after_kill["statuses"].get("fired", 0)
    assert 0 < done < 5000
    assert done % 200 == 0, "a batch commits all of its timers or none"
    assert len(after_kill["audited"]) == done
    assert after_kill["states"].get("closed", 0) == done

    again = spawn(pg_url, "--exit-when-idle", "--batch", "200", "--poll", "0.5")
    assert again.wait() == 0, again.stderr()[-3000:]
    [stopped] = [e for e in again.events() if e["event"] == "worker_stopped"]
    assert stopped["fired"] == 5000 - done
    assert_each_fired_once(pg_url, 5000)


def started(worker: WorkerProcess) -> None:
    wait_for(lambda: '"worker_started"' in worker.stderr() or worker.proc.poll() is not None, 30,
             "the worker_started log line")
    assert worker.proc.poll() is None, worker.stderr()[-3000:]


@pytest.mark.slow
def test_sigterm_stops_a_busy_worker_cleanly(pg_url, spawn):
    real_time_db(pg_url)
    bulk_due_timers(pg_url, 3000)
    worker = spawn(pg_url, "--batch", "100", "--poll", "0.5")
    started(worker)
    wait_for(lambda: '"timer_fired"' in worker.stderr(), 20, "the first timer to fire")
    worker.proc.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    assert worker.wait(10) == 0, worker.stderr()[-3000:]
    assert time.monotonic() - asked < 5
    logged = worker.events()
    assert "worker_stopping" in [e["event"] for e in logged]
    [stopped] = [e for e in logged if e["event"] == "worker_stopped"]
    found = counts(pg_url)
    done = found["statuses"].get("fired", 0)
    assert stopped["fired"] == done == sum(1 for e in logged if e["event"] == "timer_fired")
    assert found["statuses"] == ({"fired": done, "pending": 3000 - done} if done < 3000 else {"fired": 3000})
    assert found["states"].get("closed", 0) == done
    assert len(found["audited"]) == done and set(found["audited"].values()) <= {1}


@pytest.mark.slow
def test_sigterm_stops_an_idle_worker_cleanly(pg_url, spawn):
    real_time_db(pg_url)
    worker = spawn(pg_url, "--poll", "0.5")
    started(worker)
    time.sleep(0.3)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.stderr()[-3000:]
    [stopped] = [e for e in worker.events() if e["event"] == "worker_stopped"]
    assert (stopped["fired"], stopped["idle"]) == (0, False)


# ---- the operator's commands ---------------------------------------------------------------------------------


runner = CliRunner()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    config = structlog.get_config()
    yield
    structlog.configure(**config)


def cli_json(url: str, *args: str) -> Any:
    result = runner.invoke(app, ["--db", url, *args, "--json"])
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def test_timers_commands_show_a_parked_timer(cli_db, restore_logging):
    db = Database(cli_db)
    try:
        poison = raw_timer(db, object_id=4242, name="phone_notification_due", due_at=START - timedelta(hours=1))
        pending = raw_timer(db, object_id=4243, name="condom_advice_ends", due_at=START + timedelta(days=30))
    finally:
        db.dispose()
    moved = cli_json(cli_db, "clock", "advance", "--hours", "1")  # 5 attempts: 30 + 60 + 120 + 240 s
    assert moved["fired"] == []
    [failed] = cli_json(cli_db, "timers", "--status", "failed")
    assert (failed["id"], failed["status"], failed["attempts"], failed["object"], failed["name"]) == (
        f"timer-{poison}", "failed", 5, "case-4242", "phone_notification_due")
    assert "case-4242" in failed["last_error"]
    [still] = cli_json(cli_db, "timers", "--status", "pending")
    assert still["id"] == f"timer-{pending}"
    assert {t["id"] for t in cli_json(cli_db, "timers")} == {f"timer-{poison}", f"timer-{pending}"}
    status = cli_json(cli_db, "timers", "status")
    assert {"pending", "overdue", "failed", "oldest_lateness_seconds"} <= set(status)
    assert (status["pending"], status["overdue"], status["failed"], status["oldest_lateness_seconds"]) == (
        1, 0, 1, 0)
    bad = runner.invoke(app, ["--db", cli_db, "timers", "--status", "broken", "--json"])
    assert bad.exit_code == 2
    assert json.loads(bad.stdout)["exit_code"] == 2


@pytest.mark.slow
def test_a_worker_process_parks_a_poison_timer_and_the_timers_commands_show_it(pg_url, spawn, restore_logging):
    real_time_db(pg_url)
    bulk_due_timers(pg_url, 20)
    db = Database(pg_url)
    try:
        poison = raw_timer(db, object_id=99_999, name="condom_advice_ends",
                           due_at=datetime.now(UTC) - timedelta(hours=1))
    finally:
        db.dispose()
    worker = spawn(pg_url, "--exit-when-idle", "--batch", "5", "--poll", "0.5", "--max-attempts", "2",
                   "--backoff", "0")
    assert worker.wait() == 0, worker.stderr()[-3000:]
    logged = worker.events()
    assert [e["attempts"] for e in logged if e["event"] == "timer_retry"] == [1]
    [parked] = [e for e in logged if e["event"] == "timer_failed"]
    assert (parked["timer"], parked["attempts"], parked["error"]) == (f"timer-{poison}", 2, "NotFound")
    [stopped] = [e for e in logged if e["event"] == "worker_stopped"]
    assert (stopped["fired"], stopped["idle"]) == (20, True)
    found = counts(pg_url)
    assert found["statuses"] == {"fired": 20, "failed": 1}
    [failed] = cli_json(pg_url, "timers", "--status", "failed")
    assert (failed["id"], failed["attempts"], failed["object"]) == (f"timer-{poison}", 2, "case-99999")
    status = cli_json(pg_url, "timers", "status")
    assert (status["pending"], status["overdue"], status["failed"], status["oldest_lateness_seconds"]) == (
        0, 0, 1, 0)
