"""Issue 18, part 4: events other systems can rely on. Every transition, assignment and timer firing appends an
event in the change's own transaction (so a rolled-back change leaves none), with internal ids only; ``mpoxflow
events --after N`` never skips one, also when PostgreSQL transactions commit out of order; ``--follow`` streams new
ones as they commit."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, text

from engine import events as events_module
from engine import outbox
from engine.clock import SimulatedClock
from engine.core import Engine
from engine.events import EVENTS_LOCK, event_types
from engine.uow import unit_of_work
from persistence.database import Database
from persistence.models import AuditEntry, Event
from tests.conftest import ADMIN, START
from tests.helpers import confirmed, person, pk, suspected

pytestmark = pytest.mark.both_backends

ROOT = Path(__file__).resolve().parent.parent
EVENTS = Event.__table__
AUDIT = AuditEntry.__table__
STAFF = "staff:test"


def all_events(db: Database) -> list[Any]:
    with db.engine.connect() as connection:
        return list(connection.execute(select(EVENTS).order_by(EVENTS.c.seq)))


def audit_count(db: Database) -> int:
    with db.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(AUDIT)).scalar_one())


def read(engine: Engine, **options: Any) -> list[dict[str, Any]]:
    return outbox.read(engine.runtime, actor=ADMIN, **options)


# ---- what makes an event ------------------------------------------------------------------------------------


def test_transitions_same_state_transitions_and_assignment_each_append_one_event(engine, db):
    person_id = person(engine, "0101901234")
    case_id = confirmed(engine, person_id)
    engine.apply(case_id, "notify", data={"channel": "phone"}, actor=STAFF)
    engine.note(case_id, text="ringede", actor=STAFF)  # a note is no event
    engine.assign([case_id], user=STAFF, actor=ADMIN, reason="on duty")
    got = read(engine)
    assert [(e["type"], e["object"], e["from_state"], e["to_state"], e["trigger"]) for e in got] == [
        ("case.suspected", case_id, None, "suspected", "open"),
        ("case.confirmed", case_id, "suspected", "confirmed", "confirm"),
        ("case.notify", case_id, "confirmed", "confirmed", "notify"),
        ("case.assign", case_id, "confirmed", "confirmed", "assign"),
    ]
    assert [e["seq"] for e in got] == [1, 2, 3, 4]
    # Each mirrors its audit entry: the same rule, instant and unit; the entry's seq.
    for e in got:
        [entry] = [a for a in engine.audit(entity=case_id) if a["seq"] == e["audit_seq"]]
        assert (entry["trigger"], entry["rule"], entry["at"]) == (e["trigger"], e["rule"], e["at"])
        assert e["rule"].startswith("SST-mpox-7.1 §")
        assert e["kind"] == "case" and e["workflow"] == "case@SST-mpox-7.1" and e["unit"] == "unit-1"
    assert got[3]["assignee"].startswith("user-") and got[3]["unit"] == "unit-1"
    # Internal ids only: the person's reference (a CPR number here) is in no event.
    assert "0101901234" not in json.dumps(got)
    assert all(t in event_types() for t in (e["type"] for e in got))


def test_timer_firings_in_a_batch_append_their_events_in_one_statement(engine, db, clock):
    cases = [confirmed(engine, person(engine, f"P{i}")) for i in range(3)]
    before = len(all_events(db))
    inserts: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO EVENTS"):
            inserts.append("many" if executemany else "one")

    clock.set(START + timedelta(days=3))
    sa_event.listen(db.engine, "before_cursor_execute", record)
    try:
        fired = engine.fire_due(limit=100)
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", record)
    assert len(fired) == 9  # three tasks' deadlines per case, fired set-based
    assert inserts == ["many"]  # the whole batch's events: one executemany
    new = all_events(db)[before:]
    assert sorted((r.object_id, r.type) for r in new) == sorted(
        (pk(c), f"case.{name}") for c in cases
        for name in ("phone_notification_due", "written_notification_due", "sequencing_sample_due"))
    by_audit = {f.audit_seq: f for f in fired}
    for row in new:
        timer = by_audit[row.audit_seq]
        assert (f"timer-{row.timer_id}", row.detail["outcome"], row.at) == (timer.timer, "missed", timer.fired_at)


def test_a_firing_rolled_back_in_its_savepoint_leaves_no_event_and_the_others_keep_theirs(engine, db, clock,
                                                                                        monkeypatch):
    good = confirmed(engine, person(engine, "A"))
    poison = confirmed(engine, person(engine, "B"))
    original = engine.commands.transition

    def failing_after_its_audit(uow: Any, **kwargs: Any) -> Any:
        changed = original(uow, **kwargs)  # audited (its event collected) ...
        if kwargs["row"].id == pk(poison):
            raise RuntimeError("disk on fire")  # ... then the firing fails: rolled back with its savepoint
        return changed

    monkeypatch.setattr(engine.commands, "transition", failing_after_its_audit)
    before = len(all_events(db))
    clock.set(START + timedelta(days=3))
    fired = engine.fire_due(limit=100)
    assert {f.object for f in fired} == {good}
    new = all_events(db)[before:]
    assert sorted(r.object_id for r in new) == [pk(good)] * 3
    with db.engine.connect() as connection:
        audit_seqs = set(connection.execute(select(AUDIT.c.seq)).scalars())
    assert all(r.audit_seq in audit_seqs for r in new)  # each event's change exists


def test_a_rolled_back_change_leaves_no_event(engine, db):
    case_id = suspected(engine, person(engine))
    events_before, audit_before = len(all_events(db)), audit_count(db)
    with unit_of_work(engine.runtime, STAFF, "case confirm", case_id) as uow:
        row = uow.repo.load_object("case", pk(case_id))
        from workflows.registry import BY_NAME

        engine.commands.transition(uow, definition=BY_NAME[row.workflow], kind="case", row=row,
                                   timers=uow.repo.object_timers("case", row.id), trigger="confirm",
                                   data={"pcr_on": START.date()}, actor=uow.actor, reason=None, now=uow.now())
        assert [e["type"] for e in uow.events] == ["case.confirmed"]
        # no commit(): rolled back
    assert (len(all_events(db)), audit_count(db)) == (events_before, audit_before)
    with pytest.raises(RuntimeError, match="before the commit"), \
            unit_of_work(engine.runtime, STAFF, "case confirm", case_id) as uow:
        engine.commands.transition(uow, definition=BY_NAME[row.workflow], kind="case", row=row,
                                   timers=uow.repo.object_timers("case", row.id), trigger="confirm",
                                   data={"pcr_on": START.date()}, actor=uow.actor, reason=None, now=uow.now())
        uow.commit()
        raise RuntimeError("after the change, before the commit")
    assert (len(all_events(db)), audit_count(db)) == (events_before, audit_before)
    # A refused change (a guard) leaves none either.
    engine.apply(case_id, "confirm", data={"pcr_on": START.date()}, actor=STAFF)
    assert [r.type for r in all_events(db)][-1] == "case.confirmed"


def test_the_events_table_is_append_only(engine, db):
    confirmed(engine, person(engine))
    with pytest.raises(Exception, match="append-only"), db.engine.begin() as connection:
        connection.execute(text("DELETE FROM events"))
    with pytest.raises(Exception, match="append-only"), db.engine.begin() as connection:
        connection.execute(text("UPDATE events SET type = 'case.healed'"))
    assert len(all_events(db)) == 2


# ---- reading --------------------------------------------------------------------------------------------------


def test_after_limit_and_types_page_through_without_a_gap(engine):
    for i in range(4):
        confirmed(engine, person(engine, f"R{i}"))
    whole = read(engine, limit=1000)
    assert len(whole) == 8
    seen: list[int] = []
    after = 0
    while page := read(engine, after=after, limit=3):
        seen += [e["seq"] for e in page]
        after = page[-1]["seq"]
    assert seen == [e["seq"] for e in whole]
    assert [e["type"] for e in read(engine, types="case.confirmed")] == ["case.confirmed"] * 4
    assert len(read(engine, types="case.*")) == 8


def test_a_bad_after_limit_or_type_is_a_usage_error_and_a_reader_outside_the_root_is_refused(engine):
    from workflows.errors import NotPermitted, UsageError

    for options, flag in (({"after": -1}, "after"), ({"limit": 0}, "limit"), ({"limit": 5000}, "limit"),
                          ({"types": "case.nonsense"}, "type")):
        with pytest.raises(UsageError) as refused:
            read(engine, **options)
        assert re.search(rf"--{flag}\b(?!s)", refused.value.render(lambda f: f"--{f}"))
    engine.add_unit("Region Hovedstaden", parent="Danmark", actor=ADMIN)
    engine.add_user("staff:region", "staff", actor=ADMIN, password_hash="x", units=["Region Hovedstaden"])
    with pytest.raises(NotPermitted, match="only an auditor or a member of the root unit"):
        outbox.read(engine.runtime, actor="staff:region")
    assert engine.audit(trigger="refused")[-1]["data"]["command"] == "events"
    assert outbox.read(engine.runtime, actor="auditor:test") == []


# ---- the CLI ------------------------------------------------------------------------------------------------


def cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPOXFLOW_ACTOR": ADMIN}
    return subprocess.run([sys.executable, "-c", "from entry.cli import main; main()", "--db", url, *args],
                          cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def test_the_events_command_prints_json_lines_after_a_seq(cli_db):
    engine = Engine(Database(cli_db), _clock_of(cli_db))
    try:
        for i in range(3):
            confirmed(engine, person(engine, f"C{i}"))
    finally:
        engine.db.dispose()
    done = cli(cli_db, "events", "--after", "2")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["seq"] for e in lines] == [3, 4, 5, 6]
    assert [e["type"] for e in lines] == ["case.suspected", "case.confirmed"] * 2
    only = cli(cli_db, "events", "--type", "case.confirmed", "--limit", "2")
    assert [json.loads(line)["seq"] for line in only.stdout.splitlines()] == [2, 4]
    bad = cli(cli_db, "events", "--type", "case.nope")
    assert bad.returncode == 2 and "--type" in bad.stderr and bad.stdout == ""
    types = cli(cli_db, "events", "--types")
    assert {"case.confirmed", "contact.symptomatic", "case.assign", "course.dose2_due"} <= set(
        types.stdout.split())


def _clock_of(url: str) -> Any:
    from engine.bootstrap import open_engine

    engine = open_engine(url)
    clock = engine.clock
    engine.db.dispose()
    return clock


def test_follow_streams_events_as_they_commit_until_interrupted(cli_db):
    env = {**os.environ, "MPOXFLOW_ACTOR": ADMIN}
    proc = subprocess.Popen([sys.executable, "-c", "from entry.cli import main; main()", "--db", cli_db, "events",
                             "--follow"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()

    def take(n: int, deadline: float = 30.0) -> list[dict[str, Any]]:
        got = []
        end = time.monotonic() + deadline
        while len(got) < n:
            try:
                got.append(json.loads(lines.get(timeout=max(0.01, end - time.monotonic()))))
            except queue.Empty:
                pytest.fail(f"--follow gave {len(got)} of {n} events within {deadline} s")
        return got

    engine = Engine(Database(cli_db), _clock_of(cli_db))
    try:
        case_id = confirmed(engine, person(engine, "F1"))
        assert [(e["seq"], e["type"]) for e in take(2)] == [(1, "case.suspected"), (2, "case.confirmed")]
        engine.apply(case_id, "notify", data={"channel": "phone"}, actor=STAFF)  # committed while it follows
        assert [(e["seq"], e["type"], e["object"]) for e in take(1)] == [(3, "case.notify", case_id)]
    finally:
        engine.db.dispose()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(10)
            proc.stdout.close()  # type: ignore[union-attr]
    assert code == 0
    assert lines.empty()


# ---- PostgreSQL: transactions that commit out of order ---------------------------------------------------------


@pytest.fixture
def pg_engine(pg_url: str) -> Any:
    database = Database(pg_url)
    yield Engine(database, SimulatedClock(START))
    database.dispose()


def test_a_later_transaction_committing_first_never_makes_a_reader_skip_an_event(pg_engine):
    """T1 makes its change first but commits last; T2 starts later and commits first. And T1, holding its events'
    append, makes T2's append wait until T1's commit is visible. A reader polling all along only ever sees a prefix
    that grows: no event appears below a seq it has already read past."""
    engine = pg_engine
    db = engine.db
    first = suspected(engine, person(engine, "T1"))
    second = suspected(engine, person(engine, "T2"))
    start = len(all_events(db))
    observed: list[list[int]] = []
    stop = threading.Event()

    def poll() -> None:
        after, seen = 0, []

        def once() -> None:
            nonlocal after
            page = [e["seq"] for e in read(engine, after=after, limit=1000)]
            if page:
                seen.extend(page)
                after = page[-1]
            observed.append(list(seen))

        while not stop.is_set():
            once()
        once()  # a read begun after every commit (the one in flight when stop was set may have begun before)

    def change(case_id: str, worked: threading.Event, go: threading.Event, hold: threading.Event | None) -> None:
        with unit_of_work(engine.runtime, STAFF, "case confirm", case_id) as uow:
            row = uow.repo.load_object("case", pk(case_id))
            from workflows.registry import BY_NAME

            engine.commands.transition(uow, definition=BY_NAME[row.workflow], kind="case", row=row,
                                       timers=uow.repo.object_timers("case", row.id), trigger="confirm",
                                       data={"pcr_on": START.date()}, actor=uow.actor, reason=None, now=uow.now())
            worked.set()
            go.wait(30)
            if hold is not None:
                # Between its events' append and its commit: hold the commit.
                sa_event.listen(uow.session, "before_commit", lambda session: hold.wait(30))
            uow.commit()

    reader = threading.Thread(target=poll)
    reader.start()
    # 1. T1 works first, T2 later; T2 commits first.
    w1, go1, w2, go2 = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    t1 = threading.Thread(target=change, args=(first, w1, go1, None))
    t1.start()
    assert w1.wait(30)
    t2 = threading.Thread(target=change, args=(second, w2, go2, None))
    t2.start()
    assert w2.wait(30)
    go2.set()
    t2.join(30)
    go1.set()
    t1.join(30)
    # 2. T3 has appended its events and holds its commit; T4's append waits for it (on the lock).
    third = suspected(engine, person(engine, "T3"))
    fourth = suspected(engine, person(engine, "T4"))
    w3, go3, hold3, w4, go4 = (threading.Event() for _ in range(5))
    t3 = threading.Thread(target=change, args=(third, w3, go3, hold3))
    t3.start()
    assert w3.wait(30)
    go3.set()
    t4 = threading.Thread(target=change, args=(fourth, w4, go4, None))
    t4.start()
    assert w4.wait(30)
    go4.set()
    _wait_for_lock_waiter(db)
    hold3.set()
    t3.join(30)
    t4.join(30)
    stop.set()
    reader.join(30)

    rows = all_events(db)[start:]
    confirmed_by = {r.object_id: r.seq for r in rows if r.type == "case.confirmed"}
    # The first to commit got the smaller seq: T2 before T1, T3 before T4.
    assert confirmed_by[pk(second)] < confirmed_by[pk(first)] < confirmed_by[pk(third)] < confirmed_by[pk(fourth)]
    everything = [r.seq for r in all_events(db)]
    assert observed[-1] == everything
    for earlier, later in zip(observed, observed[1:], strict=False):
        assert later[:len(earlier)] == earlier  # each read only extended what was read before
    assert everything == list(range(1, len(everything) + 1))  # no hole either


def _wait_for_lock_waiter(db: Database) -> None:
    """Until a session waits for the events' advisory lock (T4 queued behind T3), with a deadline."""
    deadline = time.monotonic() + 30
    with db.engine.connect() as connection:
        while True:
            waiting = connection.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = :key"),
                {"key": EVENTS_LOCK}).scalar_one()
            connection.commit()
            if waiting:
                return
            if time.monotonic() > deadline:
                pytest.fail("no transaction waited for the events lock")
            time.sleep(0.02)


def test_without_the_lock_a_reader_would_skip_the_event_that_commits_late(pg_engine, monkeypatch):
    """The control: with the append's lock taken away, T3 holds its commit after its append, T4 appends after it
    and commits first, and a reader that read past T4's seq never sees T3's (smaller) one with ``--after``."""
    from sqlalchemy import insert

    engine = pg_engine
    monkeypatch.setattr(events_module, "append",
                        lambda session, rows: session.execute(insert(EVENTS), rows) if rows else None)
    third = suspected(engine, person(engine, "T3"))
    fourth = suspected(engine, person(engine, "T4"))
    before = len(all_events(engine.db))
    appended, hold = threading.Event(), threading.Event()

    def held() -> None:
        with unit_of_work(engine.runtime, STAFF, "case confirm", third) as uow:
            row = uow.repo.load_object("case", pk(third))
            from workflows.registry import BY_NAME

            engine.commands.transition(uow, definition=BY_NAME[row.workflow], kind="case", row=row,
                                       timers=uow.repo.object_timers("case", row.id), trigger="confirm",
                                       data={"pcr_on": START.date()}, actor=uow.actor, reason=None, now=uow.now())
            sa_event.listen(uow.session, "before_commit", lambda session: (appended.set(), hold.wait(30)))
            uow.commit()

    t3 = threading.Thread(target=held)
    t3.start()
    assert appended.wait(30)
    engine.apply(fourth, "confirm", data={"pcr_on": START.date()}, actor=STAFF)  # commits first
    seen = read(engine, after=before)
    assert [e["object"] for e in seen] == [fourth]
    hold.set()
    t3.join(30)
    late = [e for e in read(engine, after=before) if e["object"] == third]
    assert late and late[0]["seq"] < seen[0]["seq"]  # committed below what the reader had read past
    assert read(engine, after=seen[0]["seq"]) == []  # so `--after` would never give it: skipped
