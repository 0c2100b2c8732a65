"""Timer firing: ``mpoxflow worker`` processes against a hand-written SQLAlchemy Core baseline, lateness under a
steady load, and the worker's memory with a million pending timers.

    .venv/bin/python bench/timers.py [--n N] [--backend sqlite|postgresql|both] [--pg-url URL]
                                     [--rate R] [--lateness-seconds S] [--lead S] [--memory-timers M]
                                     [--passes P] [--backlog-seconds S] [--skip throughput lateness memory]

Every database is a scratch one on REAL time (``engine.bootstrap.init_database``: the system clock), with the
users ``mpoxflow init`` makes (``Engine.bootstrap_users``: the first admin ``bench:admin`` and the scheduler's
``timer``, whose two audit entries the checks below leave aside), made fresh for each phase and removed at the end
even on error (SQLite: files in a temporary directory; PostgreSQL: databases ``mpoxflow_bench_<pid>_<phase>``,
dropped ``WITH (FORCE)``). Worker processes started by the bench are stopped by the bench (SIGTERM, then SIGKILL)
whatever happens.

1. Throughput. N cases in state ``healed`` (``case@SST-mpox-7.1``, version 1, every CaseFacts column valid), one
   person each, each with its pending ``condom_advice_ends`` timer due 15 to 25 days ago, are written once per
   backend in bulk with SQLAlchemy Core (not timed) into a template, then copied for each timed run (PostgreSQL:
   ``CREATE DATABASE ... TEMPLATE``; SQLite: the file). Timed, from the first ``Popen`` to the last exit:
   ``mpoxflow --db URL worker --exit-when-idle --batch 200 --poll 1`` (``MPOXFLOW_LOG_LEVEL=warning``) as
   1 and 3 processes on PostgreSQL and 1 on SQLite. The time includes each process's start-up (interpreter,
   imports, schema check); an idle run (nothing due) is timed first so that it can be told apart.
2. Raw baseline, on a copy of the same data, one process, no engine and no ``transitions``: batches claimed by
   hand with SQLAlchemy Core (``SELECT id ... ORDER BY due_at, id LIMIT 200``, ``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, the transaction begun with ``BEGIN IMMEDIATE`` on SQLite as the engine's are), then per timer the
   engine's four writes: the conditional claim ``UPDATE timers SET status='fired' ... WHERE status='pending'``,
   ``UPDATE cases SET state='closed', version=version+1 ... WHERE state='healed' RETURNING`` the case's audit
   head, the audit ``INSERT`` chained after that head (``persistence.audit.Head.link``: canonical JSON, SHA-256),
   and the ``UPDATE`` moving the head to it; one transaction per batch. Timed in-process (no start-up to pay).
   The ratio engine/raw is of the 1-worker runs.
3. Lateness under steady load (PostgreSQL): one worker (``--poll 1``, no ``--exit-when-idle``) runs while the bench,
   on its own connection, inserts healed cases whose timer falls due ``--lead`` seconds after insertion, at
   ``--rate`` per second for ``--lateness-seconds``; then again with the timers due at once (lead 0), which only
   the poll can find. Lateness = the audit entry's ``at`` (the instant the batch fired) minus the timer's
   ``due_at``, both from the tables, in milliseconds: p50, p99, max.
4. Memory (PostgreSQL): the peak RSS (``VmHWM`` in ``/proc/<pid>/status``, read just before SIGTERM) of one worker
   (``--poll 1``) that ran several poll passes over an empty database, and over ``--memory-timers`` (default
   1,000,000) pending timers, with their persons and healed cases, due a year ahead and more, written with
   ``INSERT ... SELECT generate_series``. The limit is 200 MB. The cost of ``Engine.next_due`` (run by every pass)
   over those timers is timed too, and the steady load of 3 is run again over them for ``--backlog-seconds``.

N defaults to 50,000, not 100,000: on 2 CPUs the four throughput runs at 100,000 take the whole bench past 10
minutes (about 12); ``--n 100000`` runs them.

Checks, any failure exits with status 1: after each throughput run exactly N audit entries carry a timer id, no
timer id or case twice, each the ``condom_advice_ends`` firing healed -> closed of its own timer, every timer
fired, every case closed at version 2, every case's hash chain and head intact (``persistence.audit.verify_object``:
the bulk cases have no earlier entries, so each chain is the one firing); the raw rows equal the engine's (ids,
instants and the hashes that cover them aside); every worker exits 0; under load every timer fires, none before it
is due; the worker stays under 200 MB and fires nothing that is not due.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, cast

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# Run as a script, this file's folder comes first on sys.path, and a file here could then shadow a library the
# product imports (bench/transitions.py shadows `transitions`): take the folder off, put the repository root on.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import DEFAULT_PG_URL, BenchFailure, exit_cleanly_on_sigterm, say  # noqa: E402

TRIGGER = "condom_advice_ends"
#: Due timers per throughput run. 100,000 was asked for, but on 2 CPUs the four throughput runs at 100,000 alone
#: took 597 s (the engine fires some 900 timers/s on SQLite, 380 on PostgreSQL with 1 process, 840 with 3), so the
#: whole bench would take about 12 minutes; at 50,000 it takes 7 to 8. Give ``--n 100000`` for the full figure.
DEFAULT_N = 50_000
BATCH = 200
POLL_SECONDS = 1.0
FILL_BATCH = 10_000
MEMORY_LIMIT_MB = 200.0
#: Healed days are spread over this many days, so that the due instants are not all one.
SPREAD_DAYS = 10
#: The healed day of case 0 is this many days before today: its timer fell due 15 days ago.
HEALED_DAYS_AGO = 100
#: The first admin of every scratch database (``Engine.bootstrap_users``, as ``mpoxflow init`` does).
ADMIN = "bench:admin"



@dataclass
class Throughput:
    backend: str
    method: str  # "engine" or "raw"
    processes: int
    n: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def line(self) -> str:
        what = (f"engine, {self.processes} worker process{'es' if self.processes > 1 else ''}"
                if self.method == "engine" else "raw SQLAlchemy Core, 1 process")
        return f"{self.backend:<11} {what:<34} {self.n:>7} timers in {self.seconds:7.2f} s = {self.rate:8.1f} timers/s"


@dataclass
class Lateness:
    lead: float
    rate: float
    seconds: float
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: Pending timers due later, already in the database while the load ran.
    backlog: int = 0

    def describe(self) -> str:
        text = f"{self.rate:g}/s for {self.seconds:g} s, due {self.lead:g} s after insertion"
        return text + (f", {self.backlog} pending timers due later" if self.backlog else "")

    def line(self) -> str:
        return (f"postgresql  lateness, {self.describe()} ({self.count} timers): p50 {self.p50_ms:.0f} ms, "
                f"p99 {self.p99_ms:.0f} ms, max {self.max_ms:.0f} ms")


@dataclass
class Memory:
    pending: int
    idle_mb: float
    loaded_mb: float
    next_due_ms: float
    backlog_late: Lateness | None = None

    @property
    def passed(self) -> bool:
        return self.loaded_mb < MEMORY_LIMIT_MB

    def line(self) -> str:
        return (f"postgresql  worker peak RSS: {self.idle_mb:.1f} MB with no timers, {self.loaded_mb:.1f} MB with "
                f"{self.pending} pending timers (limit {MEMORY_LIMIT_MB:.0f} MB: "
                f"{'PASS' if self.passed else 'FAIL'}); Engine.next_due over them {self.next_due_ms:.1f} ms "
                "(median of 7; every worker pass runs it)")


# ---- databases --------------------------------------------------------------------------------------------------


class Scratch:
    """Scratch databases of one backend, each made on demand and all removed by ``close``, whatever happens."""

    def __init__(self, backend: str, pg_url: str) -> None:
        self.backend = backend
        self.directory: Path | None = None
        self.names: list[str] = []
        self.admin: Any = None
        if backend == "sqlite":
            self.directory = Path(tempfile.mkdtemp(prefix="mpoxflow_bench_"))
            return
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from persistence.database import normalise_url

        self.base = make_url(normalise_url(pg_url))
        self.admin = create_engine(self.base, isolation_level="AUTOCOMMIT")

    def _sql(self, statement: str) -> None:
        from sqlalchemy import text

        with self.admin.connect() as connection:
            connection.execute(text(statement))

    def url(self, phase: str, template: str | None = None) -> str:
        """The URL of a new database for ``phase``: empty, or a copy of the database ``template`` made before
        (whose connections must all be closed)."""
        if self.directory is not None:
            path = self.directory / f"{phase}.db"
            if template is not None:
                shutil.copyfile(self.directory / f"{template}.db", path)
            return f"sqlite:///{path}"
        name = f"mpoxflow_bench_{os.getpid()}_{phase}"
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.append(name)
        if template is None:
            self._sql(f'CREATE DATABASE "{name}"')
        else:
            source = f"mpoxflow_bench_{os.getpid()}_{template}"
            from sqlalchemy.exc import OperationalError

            for attempt in range(20):  # autovacuum may be looking at the template for a moment
                try:
                    self._sql(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
                    break
                except OperationalError as error:
                    if "being accessed by other users" not in str(error) or attempt == 19:
                        raise
                    time.sleep(0.5)
        return str(self.base.set(database=name).render_as_string(hide_password=False))

    def drop(self, url: str) -> None:
        """Remove one database now (its connections must be closed)."""
        if self.directory is not None:
            path = Path(url.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                with suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").unlink()
            return
        from sqlalchemy.engine import make_url

        name = str(make_url(url).database)
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.remove(name)

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            return
        try:
            for name in list(self.names):
                self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                self.names.remove(name)
        finally:
            self.admin.dispose()


@contextmanager
def scratch(backend: str, pg_url: str) -> Iterator[Scratch]:
    databases = Scratch(backend, pg_url)
    try:
        yield databases
    finally:
        databases.close()


@contextmanager
def real_time_database(url: str) -> Iterator[Any]:
    """The database at ``url``, migrated, on real time and with its first users (as ``mpoxflow init`` leaves it:
    the workers find users there and do not make them), disposed afterwards."""
    from engine.bootstrap import init_database
    from engine.clock import SystemClock
    from engine.core import Engine
    from persistence.database import Database

    db = Database(url)
    try:
        init_database(db)
        Engine(db, SystemClock()).bootstrap_users(ADMIN)  # does nothing on a copy that has them
        yield db
    finally:
        db.dispose()


def settle(db: Any) -> None:
    """PostgreSQL: statistics and the visibility map up to date, as autovacuum leaves them; SQLite: the WAL
    written back into the database file (so that the file alone can be copied)."""
    from sqlalchemy import text

    if db.backend == "sqlite":
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("persons", "cases", "timers", "audit_log"):
            connection.execute(text(f"VACUUM ANALYZE {table}"))


# ---- the rows of a healed case with its condom-advice timer -------------------------------------------------------


def healed_rows(ref: str, healed_on: date) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``persons``, ``cases`` and ``timers`` rows (without ids and links) of a person whose case was opened on
    the onset of symptoms, confirmed by PCR 2 days later (both notifications made), isolated at home, and healed
    on ``healed_on``, with the pending §4.1 ``condom_advice_ends`` timer that healing arms. Version 1: the case is
    written as it stands, not replayed transition by transition, and without audit entries, so its audit head is
    empty (the firing's entry is the first of its chain)."""
    from workflows.calendar import local_time_on
    from workflows.case import CASE, S4_1, condom_advice_ends

    onset = healed_on - timedelta(days=20)
    pcr_on = onset + timedelta(days=2)
    opened_at = local_time_on(onset, clock_time(10, 0))
    confirmed_at = local_time_on(pcr_on, clock_time(11, 0))
    healed_at = local_time_on(healed_on, clock_time(9, 30))
    person = {
        "ref": ref, "born": None, "immunocompromised": False, "pregnant": False, "breastfeeding": False,
        "previous_mpox": False, "smallpox_vaccinated": False, "doses_elsewhere": 0, "last_dose_elsewhere_on": None,
        "created_at": opened_at,
    }
    case = {
        "state": "healed", "workflow": CASE.name, "version": 1, "created_at": opened_at, "updated_at": healed_at,
        "onset": onset, "symptoms": ["rash", "fever"], "criteria": ["msm"], "pcr_on": pcr_on, "clade": "IIb",
        "confirmed_at": confirmed_at, "isolation_mode": "home", "healed_on": healed_on, "died_on": None,
        "phone_notified_at": confirmed_at + timedelta(minutes=20),
        "written_notified_at": confirmed_at + timedelta(hours=2), "tracing_consent": True, "sources": [],
        "source_case": None, "audit_pos": None, "audit_seq": None, "audit_hash": None,
        # Since migration 0009: what an adult case without these facts holds.
        "symptom_note": None, "isolation_ended_at": None, "sample_sent_on": pcr_on, "child": False,
        "paediatric_referred_at": None, "discharged_on": None, "discharge_decided_by": None, "antiviral": None,
        "antiviral_consider": None, "work": [], "no_work": False, "from_contact": None,
    }
    timer = {
        "object_kind": "case", "name": TRIGGER, "due_at": condom_advice_ends(healed_on), "rule": S4_1, "task": None,
        "overdue_at": None, "status": "pending", "armed_at": healed_at, "closed_at": None, "satisfied_at": None,
        "note": None, "outcome": None, "resolved_at": None, "resolution": None,
    }
    return person, case, timer


def check_rows_are_facts() -> None:
    """The bulk rows carry exactly the case workflow's facts (plus the common columns) and make a valid CaseFacts."""
    import dataclasses

    from persistence.models import Case
    from persistence.repository import facts_from_row
    from workflows.case import CaseFacts

    _, case, _ = healed_rows("BENCH-CHECK", date(2025, 1, 1))
    columns = {c.name for c in cast(Any, Case.__table__).columns} - {"id", "person_id"}
    if set(case) != columns:
        raise BenchFailure(f"the bulk case row's columns {sorted(set(case) ^ columns)} differ from the table's")
    facts = {f.name for f in dataclasses.fields(CaseFacts)}
    if not facts <= set(case):
        raise BenchFailure(f"the bulk case row lacks the facts {sorted(facts - set(case))}")
    facts_from_row(type("Row", (), case)(), CaseFacts)


def fill(db: Any, count: int, today: date, prefix: str = "BENCH") -> None:
    """``count`` healed cases with their due timers, in bulk with SQLAlchemy Core, in one transaction."""
    from sqlalchemy import Table, insert

    from persistence.models import Case, Person, Timer

    persons, cases, timers = (cast(Table, model.__table__) for model in (Person, Case, Timer))
    insert_persons = insert(persons).returning(persons.c.id, sort_by_parameter_order=True)
    insert_cases = insert(cases).returning(cases.c.id, sort_by_parameter_order=True)
    insert_timers = insert(timers)
    with db.engine.begin() as connection:
        for start in range(0, count, FILL_BATCH):
            rows = [
                healed_rows(f"{prefix}-{i}", today - timedelta(days=HEALED_DAYS_AGO + i % SPREAD_DAYS))
                for i in range(start, min(start + FILL_BATCH, count))
            ]
            person_ids = connection.execute(insert_persons, [p for p, _, _ in rows]).scalars().all()
            case_ids = connection.execute(
                insert_cases, [{**c, "person_id": pk} for (_, c, _), pk in zip(rows, person_ids, strict=True)]
            ).scalars().all()
            connection.execute(
                insert_timers, [{**t, "object_id": pk} for (_, _, t), pk in zip(rows, case_ids, strict=True)]
            )


# ---- worker processes ----------------------------------------------------------------------------------------


class Workers:
    """``mpoxflow worker`` processes started by the bench; whatever is still running at the end is stopped."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.started = 0
        #: The output (stdout and stderr) of each process that exited 0, in order.
        self.outputs: list[str] = []

    def start(self, url: str, *, exit_when_idle: bool, batch: int = BATCH, poll: float = POLL_SECONDS) -> Any:
        command = [sys.executable, "-c", "from entry.cli import main; main()", "--db", url, "worker",
                   *(["--exit-when-idle"] if exit_when_idle else []), "--batch", str(batch), "--poll", f"{poll:g}"]
        env = {**os.environ, "MPOXFLOW_LOG_LEVEL": "warning"}
        self.started += 1
        log_path = self.log_dir / f"worker-{self.started}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                       stdout=log_file, stderr=subprocess.STDOUT)
        self.running.append((process, log_path))
        return process

    def wait(self, process: Any, timeout: float) -> None:
        """Wait for ``process`` to exit; it must exit 0 within ``timeout`` seconds."""
        log_path = next(p for proc, p in self.running if proc is process)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            self.stop(process)
            raise BenchFailure(f"worker {process.pid} still running after {timeout:.0f} s: stopped") from error
        self.running = [(p, lp) for p, lp in self.running if p is not process]
        output = log_path.read_text(errors="replace")
        if code != 0:
            raise BenchFailure(f"worker {process.pid} exited with status {code}:\n{output[-2000:]}")
        self.outputs.append(output)

    def output_since(self, start: int) -> str:
        """What the processes that exited since ``len(self.outputs)`` was ``start`` wrote, summarised."""
        lines = [line for output in self.outputs[start:] for line in output.splitlines() if line.strip()]
        if not lines:
            return "nothing on stdout or stderr"
        return f"{len(lines)} lines on stdout/stderr, the first: {lines[0][:100]!r}..."

    def stop(self, process: Any, grace: float = 15.0) -> None:
        """SIGTERM (the worker finishes the timer in hand and exits), SIGKILL after ``grace`` seconds."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for process, _ in self.running:
            self.stop(process, grace=5.0)
        self.running = []


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (``VmHWM``), in MB (2**20 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchFailure(f"no VmHWM in /proc/{pid}/status")


def wait_connected(db: Any, process: Any, timeout: float = 30.0) -> None:
    """Wait until a process other than this one is connected to the PostgreSQL database (the worker is up)."""
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND pid <> pg_backend_pid()")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchFailure(f"worker {process.pid} exited with status {process.returncode} at start-up")
        with db.engine.connect() as connection:
            if connection.scalar(query):
                return
        time.sleep(0.05)
    raise BenchFailure(f"worker {process.pid} did not connect within {timeout:.0f} s")


def run_workers(workers: Workers, url: str, count: int, timeout: float) -> float:
    """Start ``count`` ``worker --exit-when-idle`` processes at once; seconds from the first start to the last exit."""
    started = time.perf_counter()
    processes = [workers.start(url, exit_when_idle=True) for _ in range(count)]
    deadline = started + timeout
    for process in processes:
        workers.wait(process, max(1.0, deadline - time.perf_counter()))
    return time.perf_counter() - started


# ---- the raw baseline --------------------------------------------------------------------------------------------


def raw_fire_all(db: Any, batch: int) -> int:
    """Fire every due ``condom_advice_ends`` timer by hand with SQLAlchemy Core, one transaction per batch;
    returns how many were fired."""
    from sqlalchemy import Table, bindparam, insert, or_, select, update

    from engine.core import TIMER_USER
    from engine.views import jsonable  # the product's JSON form of dates and instants (a pure function)
    from persistence.audit import Head
    from persistence.models import AuditEntry, Case, Timer
    from workflows.calendar import to_local
    from workflows.case import CASE, S4_1

    timers, cases, audit = (cast(Table, model.__table__) for model in (Timer, Case, AuditEntry))
    pick = (
        select(timers.c.id)
        .where(timers.c.status == "pending", timers.c.due_at <= bindparam("now"),
               or_(timers.c.next_attempt_at.is_(None), timers.c.next_attempt_at <= bindparam("now")))
        .order_by(timers.c.due_at, timers.c.id).limit(batch)
    )
    if db.backend == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    claim = (
        update(timers).where(timers.c.id == bindparam("timer_pk"), timers.c.status == "pending")
        .values(status="fired", closed_at=bindparam("fired_at"))
        .returning(timers.c.object_kind, timers.c.object_id, timers.c.name, timers.c.due_at)
    )
    # The head columns are not written by this UPDATE: RETURNING gives the case's head before this entry.
    close_case = (
        update(cases).where(cases.c.id == bindparam("pk"), cases.c.state == "healed")
        .values(state="closed", updated_at=bindparam("fired_at"), version=cases.c.version + 1)
        .returning(cases.c.audit_pos, cases.c.audit_seq, cases.c.audit_hash)
    )
    insert_audit = insert(audit).returning(audit.c.seq)
    set_head = update(cases).where(cases.c.id == bindparam("pk")).values(
        audit_pos=bindparam("head_pos"), audit_seq=bindparam("head_seq"), audit_hash=bindparam("head_hash"))

    fired = 0
    # On SQLite the write option makes the transaction begin with BEGIN IMMEDIATE, as the engine's writes do.
    with db.engine.execution_options(mpoxflow_write=True).connect() as connection:
        while True:
            now = datetime.now(UTC)
            with connection.begin():
                ids = connection.execute(pick, {"now": now}).scalars().all()
                for timer_pk in ids:
                    timer = connection.execute(claim, {"timer_pk": timer_pk, "fired_at": now}).one_or_none()
                    if timer is None:
                        raise BenchFailure(f"raw: timer-{timer_pk} was no longer pending")
                    if timer.name != TRIGGER or timer.object_kind != "case":
                        raise BenchFailure(f"raw: timer-{timer_pk} is {timer.object_kind} {timer.name}")
                    head = connection.execute(close_case, {"pk": timer.object_id, "fired_at": now}).one_or_none()
                    if head is None:
                        raise BenchFailure(f"raw: case-{timer.object_id} is not healed")
                    late = max(0, int((now - timer.due_at).total_seconds()))
                    entry = Head.of(head).link({
                        "timer_id": timer_pk, "object_kind": "case", "object_id": timer.object_id,
                        "workflow": CASE.name, "trigger": TRIGGER, "from_state": "healed", "to_state": "closed",
                        "actor": f"timer:{TRIGGER}", "role": TIMER_USER,
                        "reason": f"due {to_local(timer.due_at).isoformat()}",
                        "at": now, "recorded_at": datetime.now(UTC), "rule": S4_1,
                        "data": jsonable({"timer": f"timer-{timer_pk}", "due_at": timer.due_at,
                                          "fired_late_by_seconds": late}),
                        "changes": {"state": "closed"}, "timers_armed": [], "timers_cancelled": [],
                        "timers_done": [],
                    })
                    seq = connection.execute(insert_audit, entry).scalar_one()
                    connection.execute(set_head, {"pk": timer.object_id, "head_pos": entry["pos"],
                                                  "head_seq": seq, "head_hash": entry["hash"]})
            fired += len(ids)
            if len(ids) < batch:
                return fired


# ---- checks ----------------------------------------------------------------------------------------------------


def verify_fired(db: Any, n: int, what: str) -> None:
    """Exactly ``n`` audit entries with a timer id, each its own timer's firing healed -> closed; no timer or case
    twice; no other entry but the users' own; every timer fired; every case closed, at version 2; every case's
    chain and head intact."""
    from sqlalchemy import text

    with db.engine.connect() as connection:
        entries, timer_ids, objects = connection.execute(text(
            "SELECT count(*), count(DISTINCT timer_id), count(DISTINCT object_id) FROM audit_log "
            "WHERE timer_id IS NOT NULL")).one()
        matching = connection.scalar(text(
            "SELECT count(*) FROM audit_log a JOIN timers t ON t.id = a.timer_id "
            "WHERE a.object_kind = 'case' AND a.object_id = t.object_id AND a.trigger = :trigger "
            "AND t.name = :trigger AND a.from_state = 'healed' AND a.to_state = 'closed' AND t.status = 'fired'"),
            {"trigger": TRIGGER})
        all_entries = connection.scalar(text("SELECT count(*) FROM audit_log WHERE object_kind <> 'user'"))
        timers_total, timers_fired = connection.execute(text(
            "SELECT count(*), count(*) FILTER (WHERE status = 'fired') FROM timers")).one() \
            if db.backend == "postgresql" else connection.execute(text(
                "SELECT count(*), sum(status = 'fired') FROM timers")).one()
        cases_total, cases_closed = connection.execute(text(
            "SELECT count(*), sum(CASE WHEN state = 'closed' AND version = 2 THEN 1 ELSE 0 END) FROM cases")).one()
    found = {
        "audit entries with a timer id": (entries, n), "distinct timer ids in them": (timer_ids, n),
        "distinct cases in them": (objects, n),
        "of them, the firing of their own timer healed -> closed": (matching, n),
        "audit entries in all": (all_entries, n), "timers": (timers_total, n),
        "fired timers": (timers_fired or 0, n), "cases": (cases_total, n),
        "cases closed at version 2": (cases_closed or 0, n),
    }
    wrong = [f"{label} {got} (expected {expected})" for label, (got, expected) in found.items() if got != expected]
    if wrong:
        raise BenchFailure(f"after {what}: " + ", ".join(wrong))
    verify_case_chains(db, what)


def verify_case_chains(db: Any, what: str) -> None:
    """Every case's audit chain against itself and its head, by the product's own check
    (``persistence.audit.verify_object``, what ``mpoxflow audit verify`` runs per object)."""
    from itertools import groupby

    from sqlalchemy import Table, select

    from persistence.audit import Head, Verification, verify_object
    from persistence.models import AuditEntry, Case

    cases, audit = (cast(Table, model.__table__) for model in (Case, AuditEntry))
    report = Verification()
    with db.engine.connect() as connection:
        heads = {row.id: Head.of(row) for row in connection.execute(
            select(cases.c.id, cases.c.audit_pos, cases.c.audit_seq, cases.c.audit_hash))}
        entries = connection.execute(select(audit).where(audit.c.object_kind == "case")
                                     .order_by(audit.c.object_id, audit.c.pos, audit.c.seq)).mappings()
        for pk, chain in groupby(entries, key=lambda e: e["object_id"]):
            verify_object(f"case-{pk}", chain, heads.pop(pk, None), report)
    for pk, head in heads.items():
        verify_object(f"case-{pk}", [], head, report)
    if not report.intact or report.objects != report.entries:
        raise BenchFailure(f"after {what}: {report.problem_count} broken links in the cases' audit chains "
                           f"({report.entries} entries, {report.objects} cases), the first: "
                           f"{[p.view() for p in report.problems[:3]]}")


def fired_rows(db: Any, case_pk: int) -> dict[str, Any]:
    """The rows of one case after its timer fired, without what differs between two runs (instants of the
    firing, the audit's sequence number, the whole-second lateness, the entry's hash and the head's sequence
    number and hash)."""
    from sqlalchemy import Table, select

    from persistence.models import AuditEntry, Case, Timer

    cases, timers, audit = (cast(Table, model.__table__) for model in (Case, Timer, AuditEntry))
    with db.engine.connect() as connection:
        case = dict(connection.execute(select(cases).where(cases.c.id == case_pk)).one()._mapping)
        timer = dict(connection.execute(
            select(timers).where(timers.c.object_kind == "case", timers.c.object_id == case_pk)).one()._mapping)
        entry = dict(connection.execute(
            select(audit).where(audit.c.object_kind == "case", audit.c.object_id == case_pk)).one()._mapping)
    for key in ("updated_at", "audit_seq", "audit_hash"):
        case.pop(key)
    timer.pop("closed_at")
    for key in ("seq", "at", "recorded_at", "hash"):  # the hash covers the instants
        entry.pop(key)
    entry["data"] = {k: v for k, v in entry["data"].items() if k != "fired_late_by_seconds"}
    return {"case": case, "timer": timer, "audit": entry}


def verify_equivalent(by_engine: dict[str, Any], by_hand: dict[str, Any]) -> None:
    if by_engine != by_hand:
        differences = [f"{part}: engine {by_engine[part]!r} != raw {by_hand[part]!r}"
                       for part in by_engine if by_engine[part] != by_hand[part]]
        raise BenchFailure("the raw baseline does not write what the engine writes: " + "; ".join(differences))


def first_case(db: Any) -> int:
    from sqlalchemy import func, select

    from persistence.models import Case

    with db.engine.connect() as connection:
        return int(connection.scalar(select(func.min(Case.id))))


# ---- 1 and 2: throughput -----------------------------------------------------------------------------------------


def throughput(
    backend: str, n: int, pg_url: str, workers: Workers, processes: list[int]
) -> tuple[float, list[Throughput]]:
    """Template filled once; a copy per timed run: the engine with each number of ``processes``, then raw."""
    from workflows.calendar import local_date

    results: list[Throughput] = []
    with scratch(backend, pg_url) as databases:
        url = databases.url("template")
        with real_time_database(url) as db:
            # Start-up and shut-down of one worker with nothing due: part of every timed run below.
            idle = run_workers(workers, url, 1, timeout=120)
            started = time.perf_counter()
            fill(db, n, local_date(datetime.now(UTC)))
            settle(db)
            say(f"{backend}: {n} healed cases with a due {TRIGGER} timer made in "
                f"{time.perf_counter() - started:.1f} s (not timed); an idle worker run (start-up, one pass, "
                f"exit) takes {idle:.2f} s")
        reference: dict[str, Any] | None = None
        for count in processes:
            run_url = databases.url(f"engine{count}", template="template")
            with real_time_database(run_url) as db:
                db.dispose()  # no connection of the bench's open while the workers run
                before = len(workers.outputs)
                seconds = run_workers(workers, run_url, count, timeout=max(300.0, n / 20))
                say(f"{backend}: {count} worker process{'es' if count > 1 else ''} exited 0 and wrote "
                    f"{workers.output_since(before)}")
                verify_fired(db, n, f"{count} worker process(es) on {backend}")
                if reference is None:
                    reference = fired_rows(db, first_case(db))
            databases.drop(run_url)
            results.append(Throughput(backend, "engine", count, n, seconds))
            say(results[-1].line())

        run_url = databases.url("raw", template="template")
        with real_time_database(run_url) as db:
            started = time.perf_counter()
            fired = raw_fire_all(db, BATCH)
            seconds = time.perf_counter() - started
            if fired != n:
                raise BenchFailure(f"raw: {fired} timers fired, {n} were due")
            verify_fired(db, n, f"the raw baseline on {backend}")
            if reference is not None:
                verify_equivalent(reference, fired_rows(db, first_case(db)))
        databases.drop(run_url)
        results.append(Throughput(backend, "raw", 1, n, seconds))
        say(results[-1].line())
    return idle, results


# ---- 3: lateness under steady load -------------------------------------------------------------------------------


def steady_load(db: Any, url: str, workers: Workers, lead: float, rate: float, seconds: float, tag: str) -> list[float]:
    """One worker (``--poll 1``) runs while healed cases are inserted on the bench's own connection at ``rate`` per
    second for ``seconds``, each timer due ``lead`` seconds after its insertion; once all have fired the worker is
    stopped. Returns each timer's lateness in ms (audit ``at`` minus ``due_at``). Timers already in the database
    (a backlog due later) must stay pending."""
    from sqlalchemy import Table, bindparam, func, insert, select, text

    from persistence.models import AuditEntry, Case, Person, Timer
    from workflows.calendar import local_date

    persons, cases, timers, audit = (cast(Table, model.__table__) for model in (Person, Case, Timer, AuditEntry))
    count = int(rate * seconds)
    with db.engine.connect() as connection:
        backlog = connection.scalar(text("SELECT count(*) FROM timers WHERE status = 'pending'"))
    worker = workers.start(url, exit_when_idle=False)
    wait_connected(db, worker)
    time.sleep(2 * POLL_SECONDS)  # its first pass done, the poll running
    today = local_date(datetime.now(UTC))
    insert_person = insert(persons).returning(persons.c.id)
    insert_case = insert(cases).returning(cases.c.id)
    insert_timer = insert(timers).returning(timers.c.id)
    ids: list[int] = []
    with db.engine.connect() as connection:
        started = time.monotonic()
        for k in range(count):
            pause = started + k / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            person, case, timer = healed_rows(f"BENCH-{tag}-{k}", today - timedelta(days=30))
            now = datetime.now(UTC)
            with connection.begin():
                person_pk = connection.execute(insert_person, person).scalar_one()
                case_pk = connection.execute(insert_case, {**case, "person_id": person_pk}).scalar_one()
                ids.append(connection.execute(insert_timer, {
                    **timer, "object_id": case_pk, "due_at": now + timedelta(seconds=lead), "armed_at": now,
                }).scalar_one())
        spent = time.monotonic() - started
        if spent > seconds * 1.2 + 1:
            raise BenchFailure(f"the inserts took {spent:.1f} s, not {seconds:g} s: the rate is not steady")
        deadline = time.monotonic() + lead + 3 * POLL_SECONDS + 30
        waiting = select(func.count()).select_from(timers).where(
            timers.c.id.in_(bindparam("ids", expanding=True)), timers.c.status == "pending")
        left = count
        while time.monotonic() < deadline:
            left = connection.scalar(waiting, {"ids": ids})
            connection.rollback()
            if left == 0:
                break
            if worker.poll() is not None:
                raise BenchFailure(f"the worker exited with status {worker.returncode} under load")
            time.sleep(0.2)
        if left != 0:
            raise BenchFailure(f"{left} timers still pending well after they fell due")
    workers.stop(worker)
    workers.wait(worker, 5)
    with db.engine.connect() as connection:
        rows = connection.execute(
            select(audit.c.timer_id, audit.c.to_state, audit.c.at, timers.c.due_at, timers.c.status, cases.c.state)
            .join(timers, timers.c.id == audit.c.timer_id).join(cases, cases.c.id == timers.c.object_id)
        ).all()
        entries = connection.scalar(select(func.count()).select_from(audit).where(audit.c.object_kind != "user"))
        pending = connection.scalar(text("SELECT count(*) FROM timers WHERE status = 'pending'"))
    found = {
        "audit entries": (entries, count), "audit entries of the inserted timers": (len(rows), count),
        "distinct timers in them": (len({r.timer_id for r in rows}), count),
        "of them, the inserted timers": (len({r.timer_id for r in rows} & set(ids)), count),
        "fired healed -> closed, timer fired, case closed": (
            sum(r.to_state == "closed" and r.status == "fired" and r.state == "closed" for r in rows), count),
        "timers still pending (the backlog)": (pending, backlog),
    }
    wrong = [f"{label} {got} (expected {expected})" for label, (got, expected) in found.items() if got != expected]
    if wrong:
        raise BenchFailure(f"after the steady load ({tag}): " + ", ".join(wrong))
    late = [(r.at - r.due_at).total_seconds() * 1000 for r in rows]
    early = [ms for ms in late if ms < 0]
    if early:
        raise BenchFailure(f"{len(early)} timers fired before they were due (by up to {-min(early):.0f} ms)")
    return late


def summarise(late: list[float], lead: float, rate: float, seconds: float, backlog: int = 0) -> Lateness:
    cuts = statistics.quantiles(late, n=100, method="inclusive")
    return Lateness(lead, rate, seconds, len(late), cuts[49], cuts[98], max(late), backlog)


def lateness(pg_url: str, workers: Workers, lead: float, rate: float, seconds: float) -> Lateness:
    with scratch("postgresql", pg_url) as databases:
        url = databases.url(f"late{int(lead * 1000)}")
        with real_time_database(url) as db:
            late = steady_load(db, url, workers, lead, rate, seconds, f"LATE{int(lead * 1000)}")
    return summarise(late, lead, rate, seconds)


# ---- 4: memory with a million pending timers ---------------------------------------------------------------------


def worker_peak(db: Any, url: str, workers: Workers, passes: int) -> float:
    """Run one worker (``--poll 1``) for ``passes`` poll passes after it connects; its peak RSS in MB, read just
    before it is stopped. It must exit 0 on SIGTERM and have fired nothing."""
    from sqlalchemy import text

    worker = workers.start(url, exit_when_idle=False)
    wait_connected(db, worker)
    time.sleep(passes * POLL_SECONDS + 0.5)
    if worker.poll() is not None:
        workers.wait(worker, 0)
        raise BenchFailure(f"the worker exited (status {worker.returncode}) before it was stopped")
    peak = peak_rss_mb(worker.pid)
    workers.stop(worker)
    workers.wait(worker, 5)
    with db.engine.connect() as connection:
        fired = connection.scalar(text("SELECT count(*) FROM audit_log WHERE object_kind <> 'user'"))
    if fired:
        raise BenchFailure(f"the worker fired {fired} timers, none of which was due")
    return peak


def memory(pg_url: str, workers: Workers, pending: int, passes: int, load: tuple[float, float, float] | None) -> Memory:
    """Peak RSS of an idle worker over an empty database and over ``pending`` timers due a year ahead; then, with
    ``load`` = (lead, rate, seconds), the steady load again over that backlog."""
    from sqlalchemy import text

    from engine.clock import SystemClock
    from engine.core import Engine
    from workflows.case import CASE, S4_1

    with scratch("postgresql", pg_url) as databases:
        url = databases.url("memory")
        with real_time_database(url) as db:
            idle = worker_peak(db, url, workers, passes)
            started = time.perf_counter()
            with db.engine.begin() as connection:
                connection.execute(text(
                    "INSERT INTO persons (id, ref, immunocompromised, pregnant, previous_mpox, smallpox_vaccinated, "
                    "created_at) SELECT g, 'BENCH-MEM-' || g, false, false, false, false, now() - interval '30 days' "
                    "FROM generate_series(1, :n) g"), {"n": pending})
                connection.execute(text(
                    "INSERT INTO cases (id, state, workflow, version, created_at, updated_at, person_id, onset, "
                    "symptoms, criteria, pcr_on, clade, confirmed_at, isolation_mode, healed_on, "
                    "phone_notified_at, written_notified_at, tracing_consent, sources) "
                    "SELECT g, 'healed', :workflow, 1, now() - interval '30 days', now(), g, "
                    "current_date - 30, '[\"rash\"]', '[\"msm\"]', current_date - 28, 'IIb', "
                    "now() - interval '28 days', 'home', current_date, now() - interval '28 days', "
                    "now() - interval '28 days', true, '[]' FROM generate_series(1, :n) g"),
                    {"n": pending, "workflow": CASE.name})
                connection.execute(text(
                    "INSERT INTO timers (object_kind, object_id, name, due_at, rule, status, attempts, armed_at) "
                    "SELECT 'case', g, :trigger, now() + interval '365 days' + g * interval '1 second', :rule, "
                    "'pending', 0, now() FROM generate_series(1, :n) g"),
                    {"n": pending, "trigger": TRIGGER, "rule": S4_1})
                for table in ("persons", "cases"):
                    connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :n)"),
                                       {"n": pending})
            settle(db)
            say(f"postgresql: {pending} pending timers (with their persons and healed cases), due a year ahead, "
                f"made in {time.perf_counter() - started:.1f} s (not timed)")
            engine = Engine(db, SystemClock())
            engine.next_due()
            times = []
            for _ in range(7):
                begun = time.perf_counter()
                engine.next_due()
                times.append(time.perf_counter() - begun)
            loaded = worker_peak(db, url, workers, passes)
            backlog_late = None
            if load is not None:
                lead, rate, seconds = load
                late = steady_load(db, url, workers, lead, rate, seconds, "BACKLOG")
                backlog_late = summarise(late, lead, rate, seconds, backlog=pending)
        return Memory(pending, idle, loaded, 1000 * statistics.median(times), backlog_late)


# ---- report --------------------------------------------------------------------------------------------------------


def markdown(throughputs: list[Throughput], idle: dict[str, float], lates: list[Lateness],
             mem: Memory | None) -> str:
    lines: list[str] = []
    if throughputs:
        raw = {t.backend: t for t in throughputs if t.method == "raw"}
        lines += [
            "| Backend | Firing | N | Seconds | Timers/s | Engine / raw |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for t in throughputs:
            if t.method == "engine":
                what = f"`mpoxflow worker`, {t.processes} process{'es' if t.processes > 1 else ''}"
                ratio = f"{t.rate / raw[t.backend].rate:.2f}" if t.processes == 1 and t.backend in raw else ""
            else:
                what = "raw SQLAlchemy Core, 1 process"
                ratio = ""
            lines.append(f"| {t.backend} | {what} | {t.n} | {t.seconds:.2f} | {t.rate:.1f} | {ratio} |")
        lines.append("")
        lines.append("Worker times run from the first process start to the last exit (`--exit-when-idle --batch "
                     f"{BATCH} --poll {POLL_SECONDS:g}`), start-up included: an idle run takes "
                     + ", ".join(f"{seconds:.2f} s on {backend}" for backend, seconds in idle.items()) + ".")
    lates = [*lates, *([mem.backlog_late] if mem is not None and mem.backlog_late is not None else [])]
    if lates:
        lines += [
            "",
            f"| Lateness (PostgreSQL, 1 worker, `--poll {POLL_SECONDS:g}`) | Timers | p50 (ms) | p99 (ms) | max (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
        for late in lates:
            lines.append(f"| {late.describe()} | {late.count} | {late.p50_ms:.0f} | {late.p99_ms:.0f} | "
                         f"{late.max_ms:.0f} |")
    if mem is not None:
        lines += [
            "",
            "| Worker memory (PostgreSQL, peak RSS) | Pending timers | Peak RSS (MB) | Limit |",
            "|---|---:|---:|---|",
            f"| idle, empty database | 0 | {mem.idle_mb:.1f} | |",
            f"| idle, timers due a year ahead | {mem.pending} | {mem.loaded_mb:.1f} | "
            f"< {MEMORY_LIMIT_MB:.0f} MB: {'PASS' if mem.passed else 'FAIL'} |",
            "",
            f"`Engine.next_due` (run at the end of every worker pass) over those {mem.pending} pending timers: "
            f"{mem.next_due_ms:.1f} ms.",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Timer firing by `mpoxflow worker` against a raw SQLAlchemy Core baseline; lateness; memory."
    )
    parser.add_argument("--n", type=int, default=DEFAULT_N,
                        help=f"due timers per throughput run (default {DEFAULT_N}: the whole bench in 7 to 8 "
                        "minutes on 2 CPUs; 100000 takes about 12)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both",
                        help="backends of the throughput runs (lateness and memory are PostgreSQL's)")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL,
        help="PostgreSQL URL whose database is used to create and drop the scratch databases "
        "(default $MPOXFLOW_TEST_POSTGRES_URL or %(default)s)",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="timers inserted per second under load (20)")
    parser.add_argument("--lateness-seconds", type=float, default=30.0, help="how long the load lasts (30)")
    parser.add_argument("--lead", type=float, default=3.0,
                        help="seconds from a timer's insertion to its due instant (3; a run with 0 follows)")
    parser.add_argument("--memory-timers", type=int, default=1_000_000,
                        help="pending timers for the memory check (default 1000000)")
    parser.add_argument("--passes", type=int, default=4, help="poll passes the memory check waits (4)")
    parser.add_argument("--backlog-seconds", type=float, default=10.0,
                        help="after the memory check, the steady load again for this long over the pending timers "
                        "(10; 0 to leave it out)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("throughput", "lateness", "memory"),
                        help="phases to leave out")
    parser.add_argument("--log-level", default="warning", help="engine log level (default warning, as the CLI)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.memory_timers < 1 or args.rate <= 0 or args.lateness_seconds <= 0 or args.passes < 1:
        parser.error("--n, --memory-timers, --rate, --lateness-seconds and --passes must be positive")
    if args.lead < 0 or args.backlog_seconds < 0:
        parser.error("--lead and --backlog-seconds must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_cleanly_on_sigterm()

    import sqlalchemy

    from entry.logs import configure_logging

    configure_logging(level=args.log_level)

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    say(
        f"mpoxflow timer benchmark: N={args.n}, batch {BATCH}, poll {POLL_SECONDS:g} s, Python "
        f"{platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, {os.cpu_count()} CPUs"
    )
    if args.n < 100_000 and "throughput" not in args.skip:
        say(f"N={args.n}, not 100000: the throughput runs at 100000 would take the whole bench past 10 minutes on "
            "2 CPUs (give --n 100000 for them)")
    began = time.perf_counter()
    throughputs: list[Throughput] = []
    idle: dict[str, float] = {}
    lates: list[Lateness] = []
    mem: Memory | None = None
    log_dir = Path(tempfile.mkdtemp(prefix="mpoxflow_bench_logs_"))
    workers = Workers(log_dir)
    try:
        check_rows_are_facts()
        if "throughput" not in args.skip:
            for backend in backends:
                processes = [1, 3] if backend == "postgresql" else [1]
                idle[backend], results = throughput(backend, args.n, args.pg_url, workers, processes)
                throughputs += results
            for backend in backends:
                engine = next(t for t in throughputs if t.backend == backend and t.processes == 1
                              and t.method == "engine")
                raw = next(t for t in throughputs if t.backend == backend and t.method == "raw")
                say(f"{backend:<11} engine/raw (1 process) {engine.rate / raw.rate:.2f}")
        if "lateness" not in args.skip:
            for lead in dict.fromkeys((args.lead, 0.0)):
                lates.append(lateness(args.pg_url, workers, lead, args.rate, args.lateness_seconds))
                say(lates[-1].line())
        if "memory" not in args.skip:
            load = (args.lead, args.rate, args.backlog_seconds) if args.backlog_seconds > 0 else None
            mem = memory(args.pg_url, workers, args.memory_timers, args.passes, load)
            say(mem.line())
            if mem.backlog_late is not None:
                say(mem.backlog_late.line())
    except BenchFailure as failure:
        print(f"bench/timers.py: FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    finally:
        workers.close()
        shutil.rmtree(log_dir, ignore_errors=True)
    say(f"whole run: {time.perf_counter() - began:.0f} s")
    say("")
    say(markdown(throughputs, idle, lates, mem))
    if mem is not None and not mem.passed:
        print(f"bench/timers.py: FAILED: the worker's peak RSS {mem.loaded_mb:.1f} MB is over "
              f"{MEMORY_LIMIT_MB:.0f} MB", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
