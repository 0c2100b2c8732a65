"""Wake-up across processes: a timer armed by another process (``serve``, a CLI command) and due at once fires
without waiting for the worker's safety poll. On PostgreSQL the arming transaction sends one ``NOTIFY`` when, and
only when, it commits, and the worker ``LISTEN``s (and reconnects when its connection drops); on SQLite the worker
looks for the earliest armed timer every half second. Every worker here polls once an hour (``--poll 3600``), so
only the wake-up can fire the timer in the time the test waits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from engine.bootstrap import open_engine
from engine.core import Engine
from persistence.database import TIMERS_CHANNEL, Database
from persistence.models import AuditEntry, Timer
from scheduler.worker import Worker
from tests.test_worker import WorkerProcess, bulk_due_timers, real_time_db, timer_row, wait_for
from workflows.calendar import local_date

STAFF = "staff:test"
TIMEOUT = 30.0  # generous: a wake-up takes milliseconds, the poll an hour
AUDIT = AuditEntry.__table__
TIMERS = Timer.__table__


# ---- helpers ---------------------------------------------------------------------------------------------------


def traced_case(engine: Engine, ref: str) -> str:
    """A case confirmed four weeks ago, notified, its sample sent, its tracing consented: the tasks confirming
    armed are done, so no timer of it falls due while a test waits (a wake-up of its own would fire a pass)."""
    today = local_date(datetime.now(UTC))
    pcr_on = today - timedelta(days=28)
    who = engine.add_person(ref=ref, actor=STAFF)["id"]
    case = engine.open("case", "open", person=who, actor=STAFF, data={
        "onset": today - timedelta(days=30), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    for trigger, data in (("confirm", {"pcr_on": pcr_on}), ("notify", {"channel": "phone"}),
                          ("notify", {"channel": "written"}), ("sample_sent", {"on": pcr_on}),
                          ("consent", {"tracing": True})):
        engine.apply(case, trigger, data=data, actor=STAFF)
    return case


def nothing_due_soon(engine: Engine) -> None:
    """No pending timer falls due within the hour: only the wake-up under test can fire a pass meanwhile."""
    due = engine.next_due()
    assert due is None or due > datetime.now(UTC) + timedelta(hours=1), due


def add_contact(engine: Engine, case: str, ref: str) -> str:
    """A contact exposed 25 days ago: its §5.5 ``monitoring_ends`` (exposure + 22 days) is armed already due."""
    exposed: date = local_date(datetime.now(UTC)) - timedelta(days=25)
    who = engine.add_person(ref=ref, actor=STAFF)["id"]
    return str(engine.open("contact", "add", person=who, actor=STAFF, data={
        "case": case, "exposed": exposed, "kind": "sexual", "risk": None, "reason": None,
        "anonymous_via_doctor": False})["id"])


def monitoring_timer(db: Database, contact: str) -> Any:
    with db.engine.connect() as connection:
        return connection.execute(select(TIMERS).where(
            TIMERS.c.object_kind == "contact", TIMERS.c.object_id == int(contact.rsplit("-", 1)[1]),
            TIMERS.c.name == "monitoring_ends")).one()


def firing_entries(db: Database, timer_id: int) -> list[Any]:
    with db.engine.connect() as connection:
        return list(connection.execute(select(AUDIT).where(AUDIT.c.timer_id == timer_id)))


def assert_fired_by_the_worker(db: Database, timer_id: int, contact: str) -> None:
    row = timer_row(db, timer_id)
    assert row.status == "fired"
    [entry] = firing_entries(db, timer_id)
    assert (entry.object_kind, entry.object_id) == ("contact", int(contact.rsplit("-", 1)[1]))
    assert (entry.trigger, entry.from_state, entry.to_state) == ("monitoring_ends", "exposed", "released")
    assert (entry.actor, entry.role) == ("timer:monitoring_ends", "timer")


def notifications(listener: Any, sentinel: str) -> list[str]:
    """The payloads on the timers channel up to ``sentinel`` (sent last, from another connection: notifications
    are delivered in commit order, so whatever an earlier transaction sent has arrived before it)."""
    got: list[str] = []
    for notice in listener.notifies(timeout=TIMEOUT):
        if notice.payload == sentinel:
            return got
        got.append(notice.payload)
    pytest.fail(f"no sentinel notification within {TIMEOUT} s")


def send_sentinel(db: Database, sentinel: str) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": TIMERS_CHANNEL,
                                                                          "payload": sentinel})


def timer_values(due_at: datetime, object_id: int, name: str) -> dict[str, Any]:
    return {"object_kind": "case", "object_id": object_id, "name": name, "due_at": due_at,
            "rule": "SST-mpox-7.1 §4.1", "task": None, "overdue_at": None, "status": "pending", "armed_at": due_at,
            "closed_at": None, "satisfied_at": None, "note": None}


@pytest.fixture
def real_engine(database_url: str) -> Iterator[Engine]:
    real_time_db(database_url)
    engine = open_engine(database_url)
    assert not engine.clock.simulated
    yield engine
    engine.db.dispose()


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(url: str, *args: str) -> WorkerProcess:
        started.append(WorkerProcess(url, tmp_path / f"worker-{len(started)}.log", *args))
        return started[-1]

    yield start
    for worker in started:
        worker.finish()


# ---- the arming side: one NOTIFY, at commit, only if it commits (PostgreSQL) -----------------------------------


def test_a_committed_change_that_arms_timers_notifies_once_with_the_earliest_due_instant(pg_url):
    real_time_db(pg_url)
    engine = open_engine(pg_url)
    listener = engine.db.listener()
    try:
        case = traced_case(engine, "CASE-N")  # open arms one (§2.1 chase), confirm three; the others none
        contact = add_contact(engine, case, "CONTACT-N")  # two timers, one already due
        send_sentinel(engine.db, "end")
        got = notifications(listener, "end")
    finally:
        listener.close()
        engine.db.dispose()
    with Database(pg_url) as db, db.engine.connect() as connection:
        armed = connection.execute(select(TIMERS.c.object_kind, TIMERS.c.object_id, TIMERS.c.name, TIMERS.c.due_at)
                                   .order_by(TIMERS.c.id)).all()
    # The open's chase task (§2.1), the confirmation's three deadlines (§3.1, §2.4), the contact's two.
    assert [(t.object_kind, t.name) for t in armed][:1] == [("case", "test_result_due")]
    assert [t.object_kind for t in armed] == ["case"] * 4 + ["contact"] * 2
    [chase_due] = [t.due_at for t in armed if t.name == "test_result_due"]
    earliest_of_confirm = min(t.due_at for t in armed[1:4])
    earliest_of_contact = min(t.due_at for t in armed if t.object_kind == "contact")
    assert [t.name for t in armed if t.due_at == earliest_of_contact] == ["monitoring_ends"]
    assert f"contact-{armed[-1].object_id}" == contact
    # One per arming transaction (open, confirm, contact add), none for those that arm nothing.
    assert [datetime.fromisoformat(p) for p in got] == [chase_due, earliest_of_confirm, earliest_of_contact]


def test_no_notification_when_the_arming_transaction_rolls_back(pg_url):
    real_time_db(pg_url)
    engine = open_engine(pg_url)
    [case_timer] = bulk_due_timers(pg_url, 1, due=datetime.now(UTC) + timedelta(days=1))
    case_pk = timer_row(engine.db, case_timer).object_id
    soon, later = datetime.now(UTC) + timedelta(minutes=5), datetime.now(UTC) + timedelta(hours=5)
    listener = engine.db.listener()
    try:
        with engine.unit_of_work() as uow:  # left without commit(): rolled back
            uow.repo.insert_timers([timer_values(soon, case_pk, "rolled_back_a")])
        with pytest.raises(RuntimeError), engine.unit_of_work() as uow:  # an error after arming: rolled back
            uow.repo.insert_timers([timer_values(soon, case_pk, "rolled_back_b")])
            uow.commit()
            raise RuntimeError("the change fails after arming")
        with engine.unit_of_work() as uow:
            uow.repo.insert_timers([timer_values(later, case_pk, "kept")])
            uow.commit()
        send_sentinel(engine.db, "end")
        got = notifications(listener, "end")
    finally:
        listener.close()
        engine.db.dispose()
    assert [datetime.fromisoformat(p) for p in got] == [later]
    with Database(pg_url) as db, db.engine.connect() as connection:
        names = set(connection.execute(select(TIMERS.c.name)).scalars())
    assert names == {"condom_advice_ends", "kept"}


def test_the_worker_does_not_notify_of_the_timers_its_own_engine_arms(pg_url):
    real_time_db(pg_url)
    engine = open_engine(pg_url)
    [case_timer] = bulk_due_timers(pg_url, 1, due=datetime.now(UTC) + timedelta(days=1))
    case_pk = timer_row(engine.db, case_timer).object_id
    Worker(engine)  # turns the announcements off on the engine it is given
    listener = engine.db.listener()
    try:
        with engine.unit_of_work() as uow:
            uow.repo.insert_timers([timer_values(datetime.now(UTC), case_pk, "by_the_worker")])
            uow.commit()
        send_sentinel(engine.db, "end")
        got = notifications(listener, "end")
    finally:
        listener.close()
        engine.db.dispose()
    assert got == []


# ---- the worker side: a real second process, polling once an hour ---------------------------------------------


@pytest.mark.slow
def test_a_timer_armed_by_another_process_and_due_at_once_wakes_the_worker(database_url, worker_process):
    """Both backends: PostgreSQL through the notification, SQLite through the half-second look."""
    real_time_db(database_url)
    engine = open_engine(database_url)
    try:
        case = traced_case(engine, "CASE-W")  # before the worker: its timers are due later today and tomorrow
        [first] = bulk_due_timers(database_url, 1)  # due already: the worker's first pass fires it
        worker = worker_process(database_url, "--poll", "3600")
        wait_for(lambda: timer_row(engine.db, first).status == "fired" or worker.proc.poll() is not None, TIMEOUT,
                 "the worker's first pass")
        assert worker.proc.poll() is None, worker.stderr()[-3000:]
        if engine.db.backend == "postgresql":
            wait_for(lambda: '"worker_listening"' in worker.stderr(), TIMEOUT, "the worker to listen")
        nothing_due_soon(engine)

        contact = add_contact(engine, case, "CONTACT-W")  # through the engine, as `serve` or the CLI would
        timer = monitoring_timer(engine.db, contact)
        assert timer.due_at <= datetime.now(UTC)
        wait_for(lambda: timer_row(engine.db, timer.id).status != "pending" or worker.proc.poll() is not None,
                 TIMEOUT, "the worker to fire the timer armed elsewhere")
        assert worker.proc.poll() is None, worker.stderr()[-3000:]
        assert_fired_by_the_worker(engine.db, timer.id, contact)
    finally:
        engine.db.dispose()


@pytest.mark.slow
def test_the_worker_listens_again_after_its_connection_is_cut(pg_url, worker_process):
    real_time_db(pg_url)
    engine = open_engine(pg_url)
    try:
        case = traced_case(engine, "CASE-R")
        worker = worker_process(pg_url, "--poll", "3600")
        wait_for(lambda: '"worker_listening"' in worker.stderr() or worker.proc.poll() is not None, TIMEOUT,
                 "the worker to listen")
        with engine.db.engine.begin() as connection:
            cut = connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'mpoxflow-worker-listen'")).scalars().all()
        assert cut == [True]
        wait_for(lambda: worker.stderr().count('"worker_listening"') == 2 or worker.proc.poll() is not None,
                 TIMEOUT, "the worker to listen again")
        assert worker.proc.poll() is None, worker.stderr()[-3000:]
        assert '"worker_listen_lost"' in worker.stderr()
        nothing_due_soon(engine)

        contact = add_contact(engine, case, "CONTACT-R")
        timer = monitoring_timer(engine.db, contact)
        wait_for(lambda: timer_row(engine.db, timer.id).status != "pending", TIMEOUT,
                 "the worker to fire the timer armed after the reconnection")
        assert_fired_by_the_worker(engine.db, timer.id, contact)
    finally:
        engine.db.dispose()


# ---- the worker in-process: an announcement during a pass is not lost -----------------------------------------


def test_a_timer_announced_after_a_pass_last_looked_still_wakes_the_worker(real_engine, database_url):
    """The pass reads the next due instant, then a timer armed elsewhere commits and is announced before the pass
    re-arms its wake-up for the instant it read: the pass must wake for the announced one too. (No watcher
    thread runs here: ``run_pass`` is called by hand, the scheduler started for its date job.)"""
    other = open_engine(database_url)
    case = traced_case(other, "CASE-P")
    nothing_due_soon(other)
    worker = Worker(real_engine, poll_seconds=3600)
    armed: list[Any] = []
    real_next_due = real_engine.next_due

    def next_due_then_armed_elsewhere(until: datetime | None = None) -> datetime | None:
        seen = real_next_due(until)
        if not armed:
            armed.append(monitoring_timer(other.db, add_contact(other, case, "CONTACT-P")))
            worker.wake_by(armed[0].due_at)  # what the listener thread does with its notification
        return seen

    real_engine.next_due = next_due_then_armed_elsewhere  # type: ignore[method-assign]
    worker.scheduler.start()
    try:
        assert worker.run_pass() == 0
        [timer] = armed
        wait_for(lambda: timer_row(real_engine.db, timer.id).status != "pending", TIMEOUT,
                 "the wake-up armed for the announced timer")
        assert timer_row(real_engine.db, timer.id).status == "fired"
        assert len(firing_entries(real_engine.db, timer.id)) == 1
    finally:
        worker.stop()
        worker.scheduler.shutdown(wait=True)
        other.db.dispose()


def test_wake_by_re_arms_only_for_an_earlier_instant(real_engine):
    worker = Worker(real_engine, poll_seconds=3600)
    worker.scheduler.start()
    try:
        at = datetime.now(UTC) + timedelta(hours=1)
        worker.wake_by(at)
        [job] = [j for j in worker.scheduler.get_jobs() if j.id.startswith("wake-")]
        assert job.next_run_time == at
        worker.wake_by(at + timedelta(minutes=1))  # later: the wake-up stays
        assert [j.next_run_time for j in worker.scheduler.get_jobs()] == [at]
        worker.wake_by(at - timedelta(minutes=30))  # earlier: re-armed, one job only
        assert [j.next_run_time for j in worker.scheduler.get_jobs()] == [at - timedelta(minutes=30)]
    finally:
        worker.stop()
        worker.scheduler.shutdown(wait=True)


def test_a_worker_thread_stops_with_its_watcher(real_engine):
    worker = Worker(real_engine, poll_seconds=3600)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    wait_for(lambda: worker._watcher is not None and worker._watcher.is_alive(), TIMEOUT,  # noqa: SLF001
             "the watcher thread")
    worker.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert worker._watcher is not None and not worker._watcher.is_alive()  # noqa: SLF001
