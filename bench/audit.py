"""The tamper-evident audit log: verify and export over a million entries (time and memory), and what the hash
chain costs a transition, alone and with several writers, on SQLite and PostgreSQL.

    .venv/bin/python bench/audit.py [--entries N] [--transitions T] [--workers W] [--per-worker P]
                                    [--backend sqlite|postgresql|both] [--pg-url URL] [--skip log chain]

Every database is a scratch one (SQLite: a file in a temporary directory; PostgreSQL: ``mpoxflow_bench_<pid>``,
dropped at the end even on error), migrated, with the users ``mpoxflow init`` makes (``Engine.bootstrap_users``:
the first admin ``bench:admin`` and the scheduler's ``timer``) and the staff users the bench acts as, all
through the engine. Processes the bench starts are stopped by the bench whatever happens.

1. The log (``log``): verify and export, N entries (``--entries``, default 1,000,000). The log is bulk-loaded
   (not timed) in one transaction, in batches of 2,000 units: a unit is a person (its ``register`` entry) and
   its case (``open``, ``confirm`` arming the two notification timers, ``notify`` phone and written,
   ``isolate``), 6 entries shaped as the engine writes them, by 4 staff users. The entries of a batch are
   interleaved step by step (every unit's step 1, then every unit's step 2, ...), as objects' histories
   interleave in a real log. Sequence numbers and ids are given explicitly, each entry is chained after its
   object's previous one with the product's own ``persistence.audit.Head.link`` (canonical JSON, SHA-256), and
   every persons and cases row carries its head, written with its entries. The batches are made by worker
   processes (one per CPU) while the bench writes them through the driver, in the form SQLAlchemy's column
   types would give it (``executemany`` on SQLite, ``COPY`` on PostgreSQL); ``audit_verify`` reads every row
   back through those types and would find any hash that does not match. (The timers the
   entries name are not written: verify and export never read the timers table.) PostgreSQL is then
   ``VACUUM ANALYZE``d, as autovacuum would. The log is loaded to N/10 entries first, measured, then to N and
   measured again (the users' own entries count in N).

   Each measurement runs in a fresh process (``--measure``, not for direct use): imports, the engine, one read
   (the warm-up), then the operation, timed: ``Engine.audit_verify()``, ``Engine.audit_export("jsonl", sink)``
   and ``Engine.audit_export("csv", sink)``, the sink a counting stand-in for /dev/null. Printed: entries/s, the
   process's RSS just before the operation and its peak RSS during it (the kernel's high-water mark ``VmHWM``,
   reset just before through ``/proc/self/clear_refs`` so that the start-up's peak cannot hide it), whose
   difference is what the operation needed at its peak. That difference at N and at N/10 should be the
   same (every read streams, ``STREAM_CHUNK`` rows at a time); the run fails if it grows by more than half
   plus 16 MB.

2. The chain's cost (``chain``): T confirm transitions (``--transitions``, default 2000 per variant), each
   ``Engine.apply(case, "confirm")`` in its own durable transaction as in bench/transitions.py, on suspected
   cases bulk-loaded (not timed) as the engine writes them (a person and its ``register`` entry, a case and its
   ``open`` entry; checked against a case the engine made, hashes included), in three variants run in
   interleaved rounds (so that drift favours none):

   * ``chain``: the product as built;
   * ``no hash``: ``persistence.audit.Head.link`` replaced, in the bench only, by one that writes a constant
     hash and does no canonical-JSON or SHA-256 work (positions still count up, so the unique index
     ``(object_kind, object_id, pos)`` holds and the head still moves): what hashing costs;
   The head needs no variant: a transition writes it with the object's own version-checked UPDATE (three more
   columns in a statement it runs anyway); only a creation moves it with a statement of its own.

   ``Head.link`` alone is timed too, on a confirm entry (20,000 calls), as built and as the stand-in.

   On PostgreSQL, then, 1 process and ``--workers`` processes (default 4), each confirming ``--per-worker``
   (default 1000) cases of its own (disjoint objects), with the chain and with no hash (in the order chain, no
   hash with 1 process, then no hash, chain with several): throughput from the first
   worker's start to the last one's end (all are told to start at once, after their start-up), how busy the
   machine's CPUs were meanwhile (``/proc/stat``: the workers and the database server), and how often a backend
   of the bench was seen waiting for a lock (``pg_stat_activity``, sampled every 20 ms). If the chain serialised
   writers, backends would wait for locks and 4 processes would gain less with it than without; with the CPUs
   all busy, the CPUs are the limit.

Checks, any failure exits with status 1: the bulk rows and entries are the engine's (one person and case made by
the engine are rebuilt by the loader, byte for byte: same canonical content, same hash); ``audit_verify`` reports
the log intact with exactly the entries and objects loaded; each export writes N entries (its return value) and
N + 1 lines (header), and its first and last entries read back (``engine.auditing.read_export``) match their
hashes; every transition phase leaves its cases confirmed at version 2 with one ``confirm`` entry each at
position 2, the ``no hash`` entries carry the constant hash, and a final ``audit_verify`` finds every chain
intact except exactly the ``no hash`` entries (modified); every worker exits 0 after doing all its transitions.

Run time: about 8.5 minutes with the defaults on the 2-core development machine (most of it loading, verifying
and exporting the million entries on each backend); ``--entries 100000`` brings it to about 2 minutes.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# Run as a script, this file's folder comes first on sys.path, and a file here could then shadow a library the
# product imports (bench/transitions.py shadows `transitions`): take the folder off, put the repository root on.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import DEFAULT_PG_URL, BenchFailure, exit_cleanly_on_sigterm, say, scratch_url  # noqa: E402

#: A Monday morning in Copenhagen: the bulk histories start then; the transitions of part 2 happen an hour later.
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
CONFIRM_AT = START + timedelta(hours=1)
ONSET = date(2025, 3, 1)
PCR_ON = date(2025, 3, 3)
ADMIN = "bench:admin"
#: The actor of part 2's transitions (and of its reference case); part 1's histories rotate over STAFF.
ACTOR = "bench"
STAFF = ("bench:staff-1", "bench:staff-2", "bench:staff-3", "bench:staff-4")
#: Units (a person and its case) per batch written; each unit's entries stay within its batch.
BATCH_UNITS = 2000
#: The entries of a unit: the person's register, then the case's open, confirm, notify x2, isolate.
FULL_UNIT = 6
SUSPECTED_UNIT = 2
#: What the "no hash" variant writes as every entry's hash.
CONSTANT_HASH = "f" * 64
VARIANTS = ("chain", "no hash")
PROCESS_VARIANTS = ("chain", "no hash")
ROUNDS = 4
#: The peak's growth at N may exceed the growth at N/10 by this factor plus this many MB and still be constant.
MEMORY_FACTOR = 1.5
MEMORY_SLACK_MB = 16.0
LOCK_SAMPLE_SECONDS = 0.02
#: From this many batches on, a load's batches are made by worker processes (one per CPU) while it writes.
PARALLEL_BATCHES = 8


# ---- what the engine writes: a person and its case, entry by entry -------------------------------------------------


def person_row(ref: str, at: datetime) -> dict[str, Any]:
    return {"ref": ref, "born": None, "immunocompromised": False, "pregnant": False, "breastfeeding": False,
            "previous_mpox": False, "smallpox_vaccinated": False, "doses_elsewhere": 0,
            "last_dose_elsewhere_on": None, "created_at": at}


def entry(kind: str, pk: int, trigger: str, at: datetime, actor: str, *, workflow: str | None = None,
          from_state: str | None = None, to_state: str | None = None, rule: str | None = None,
          data: dict[str, Any], changes: dict[str, Any] | None, armed: list[Any] | None = None,
          done: list[Any] | None = None) -> dict[str, Any]:
    """An entry's values before it is chained (what ``Engine._audit`` passes to ``Head.link``); ``recorded_at``
    is set when it is written."""
    return {
        "timer_id": None, "object_kind": kind, "object_id": pk, "workflow": workflow, "trigger": trigger,
        "from_state": from_state, "to_state": to_state, "actor": actor, "role": "staff", "reason": None,
        "at": at, "recorded_at": None, "rule": rule, "data": data, "changes": changes,
        "timers_armed": armed or [], "timers_cancelled": [], "timers_done": done or [],
    }


def unit_history(ref: str, person_pk: int, case_pk: int, at: datetime, steps: int, actor: str,
                 settings: Any) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    """A person registered at ``at`` and, from ``steps`` 2, its case opened then, confirmed an hour later (the two
    notification timers armed), notified by phone and in writing, isolated at home: the ``persons`` row, the
    ``cases`` row (None for ``steps`` 1) as they stand after ``steps`` entries (ids given, heads not yet), and
    those entries, in order. The shapes are the engine's (checked in part 2 against a case it made)."""
    from engine.views import jsonable
    from persistence.repository import facts_values
    from workflows.case import (
        CASE,
        S1_1,
        S2_4,
        S3_1,
        S4_1,
        SEQUENCING_TASK,
        CaseFacts,
        phone_notification_due,
        sequencing_sample_due,
        written_notification_due,
    )

    flags = {"immunocompromised": False, "pregnant": False, "breastfeeding": False, "previous_mpox": False,
             "smallpox_vaccinated": False, "doses_elsewhere": 0, "last_dose_elsewhere_on": None}
    person = {**person_row(ref, at), "id": person_pk}
    entries = [entry("person", person_pk, "register", at, actor, data={**flags, "born_given": False},
                     changes=dict(flags))]
    if steps == 1:
        return person, None, entries
    # What the case workflow's open writes for an adult of unknown birth date: the facts' defaults.
    facts: dict[str, Any] = facts_values(CaseFacts(onset=ONSET, symptoms=["rash"], criteria=["msm"], child=False))
    case = {"id": case_pk, "person_id": person_pk, "workflow": CASE.name, "state": "suspected", "version": 1,
            "created_at": at, "updated_at": at, **facts}
    entries.append(entry(
        "case", case_pk, "open", at, actor, workflow=CASE.name, to_state="suspected", rule=S1_1,
        data={"onset": ONSET.isoformat(), "symptoms": ["rash"], "criteria": ["msm"]},
        changes=jsonable({**facts, "state": "suspected", "person_id": person_pk, "workflow": CASE.name}),
    ))
    confirmed = at + timedelta(hours=1)
    phone_due = phone_notification_due(confirmed, settings)
    written_due = written_notification_due(confirmed)
    sample_due = sequencing_sample_due(confirmed, settings)
    timers = (f"timer-{3 * case_pk - 2}", f"timer-{3 * case_pk - 1}", f"timer-{3 * case_pk}")
    later: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"state": "confirmed", "pcr_on": PCR_ON, "confirmed_at": confirmed}, entry(
            "case", case_pk, "confirm", confirmed, actor, workflow=CASE.name, from_state="suspected",
            to_state="confirmed", rule=S1_1, data={"pcr_on": PCR_ON.isoformat()},
            changes={"pcr_on": PCR_ON.isoformat(), "confirmed_at": jsonable(confirmed), "state": "confirmed"},
            armed=[{"timer": timers[0], "name": "phone_notification_due", "due_at": jsonable(phone_due),
                    "rule": S3_1, "task": "notify STPS by phone", "overdue_at": None},
                   {"timer": timers[1], "name": "written_notification_due", "due_at": jsonable(written_due),
                    "rule": S3_1, "task": "notify SSI and STPS in writing", "overdue_at": None},
                   {"timer": timers[2], "name": "sequencing_sample_due", "due_at": jsonable(sample_due),
                    "rule": S2_4, "task": SEQUENCING_TASK, "overdue_at": None}],
        )),
    ]
    for minutes, channel, timer in ((10, "phone", timers[0]), (120, "written", timers[1])):
        notified = confirmed + timedelta(minutes=minutes)
        later.append(({f"{channel}_notified_at": notified}, entry(
            "case", case_pk, "notify", notified, actor, workflow=CASE.name, from_state="confirmed",
            to_state="confirmed", rule=S3_1, data={"channel": channel},
            changes={f"{channel}_notified_at": jsonable(notified)},
            done=[{"timer": timer, "name": f"{channel}_notification_due"}],
        )))
    isolated = confirmed + timedelta(hours=3)
    later.append(({"state": "isolated", "isolation_mode": "home"}, entry(
        "case", case_pk, "isolate", isolated, actor, workflow=CASE.name, from_state="confirmed", to_state="isolated",
        rule=S4_1, data={"mode": "home"}, changes={"isolation_mode": "home", "state": "isolated"},
    )))
    for written, step in later[:steps - SUSPECTED_UNIT]:
        case.update(written, version=case["version"] + 1, updated_at=step["at"])
        entries.append(step)
    return person, case, entries


# ---- the bulk loader -----------------------------------------------------------------------------------------------


def _to_driver(column: Any, backend: str) -> Callable[[Any], Any]:
    """What SQLAlchemy's type for ``column`` hands the driver for a value (JSON as text; on SQLite instants as
    naive UTC text, dates as ISO text, booleans as integers): rows are written below the types, and read back
    through them by ``audit_verify``, whose hashes would not match if these forms were wrong."""
    from sqlalchemy import JSON, Boolean, Date

    from persistence.models import UTCDateTime

    def keep(value: Any) -> Any:
        return value

    def text(value: Any) -> Any:
        return None if value is None else json.dumps(value)

    def instant(value: Any) -> Any:
        return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def day(value: Any) -> Any:
        return None if value is None else value.isoformat()

    def boolean(value: Any) -> Any:
        return None if value is None else int(value)

    if isinstance(column.type, JSON):
        return text
    if backend != "sqlite":
        return keep
    for kind, convert in ((UTCDateTime, instant), (Date, day), (Boolean, boolean)):
        if isinstance(column.type, kind):
            return convert
    return keep


class _Table:
    """Rows of one table in the driver's form, written by ``executemany`` on SQLite, ``COPY`` on PostgreSQL."""

    def __init__(self, name: str, backend: str) -> None:
        from persistence.models import Base

        table = Base.metadata.tables[name]
        self.backend = backend
        self.columns = [(c.name, _to_driver(c, backend)) for c in table.columns]
        names = ", ".join(f'"{name}"' for name, _ in self.columns)
        if backend == "sqlite":
            self.sql = f"INSERT INTO {name} ({names}) VALUES ({', '.join('?' * len(self.columns))})"
        else:
            self.sql = f"COPY {name} ({names}) FROM STDIN"

    def values(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [tuple(convert(row[name]) for name, convert in self.columns) for row in rows]

    def write(self, connection: Any, values: list[tuple[Any, ...]]) -> None:
        if not values:
            return
        if self.backend == "sqlite":
            connection.exec_driver_sql(self.sql, values)
            return
        with connection.connection.driver_connection.cursor() as cursor, cursor.copy(self.sql) as copy:
            for row in values:
                copy.write_row(row)


TABLES = ("persons", "cases", "audit_log")


@functools.cache
def _tables(backend: str) -> tuple[_Table, ...]:
    return tuple(_Table(name, backend) for name in TABLES)


@dataclass(frozen=True)
class Batch:
    """Up to ``BATCH_UNITS`` units, numbered on from the last ids and sequence number written before them."""

    backend: str
    settings: Any
    prefix: str
    plan: tuple[int, ...]  # the entries of each unit (1: a person alone)
    unit: int  # the number of the first unit: instants and actors follow it
    person_pk: int
    case_pk: int
    seq: int
    actors: tuple[str, ...]
    spacing: timedelta
    recorded_at: datetime


def make_batch(batch: Batch) -> tuple[list[list[tuple[Any, ...]]], list[int]]:
    """The batch's persons, cases and audit_log rows in the driver's form (its entries chained with the
    product's ``Head.link``, each row with its head), and its cases' ids. Run in worker processes too."""
    from persistence.audit import Head

    person_pk, case_pk, seq = batch.person_pk, batch.case_pk, batch.seq
    person_rows, case_rows, histories = [], [], []
    for i, steps in enumerate(batch.plan):
        person_pk += 1
        if steps > 1:
            case_pk += 1
        k = batch.unit + i
        person, case, entries = unit_history(
            f"BENCH-{batch.prefix}-{person_pk}", person_pk, case_pk, START + k * batch.spacing, steps,
            batch.actors[k % len(batch.actors)], batch.settings)
        person_rows.append(person)
        if case is not None:
            case_rows.append(case)
        histories.append((person, case, entries))
    entry_rows = []
    # Step by step across the batch: an object's entries interleave with the others', as in a real log.
    for step in range(max(batch.plan)):
        for person, case, entries in histories:
            if step >= len(entries):
                continue
            owner = person if step == 0 else case
            assert owner is not None
            seq += 1
            head = owner.get("head") or Head.of(None)
            linked = head.link({**entries[step], "recorded_at": batch.recorded_at})
            owner["head"] = Head(linked["pos"], seq, linked["hash"])
            entry_rows.append({**linked, "seq": seq})
    for row in (*person_rows, *case_rows):
        head = row.pop("head")
        row.update(audit_pos=head.pos, audit_seq=head.seq, audit_hash=head.hash)
    tables = _tables(batch.backend)
    return ([table.values(rows) for table, rows in zip(tables, (person_rows, case_rows, entry_rows), strict=True)],
            [case["id"] for case in case_rows])


class Loader:
    """Appends units (a person and its case, their entries chained) to a database, fast: explicit ids and
    sequence numbers (nothing else writes meanwhile), batches made by worker processes when there are many, and
    written through the driver (``executemany`` on SQLite, ``COPY`` on PostgreSQL), one transaction per load."""

    def __init__(self, db: Any, settings: Any, prefix: str) -> None:
        from sqlalchemy import func, select

        from persistence.models import AuditEntry, Case, Person

        self.db, self.settings, self.prefix = db, settings, prefix
        with db.engine.connect() as connection:
            self.person_pk = int(connection.scalar(select(func.coalesce(func.max(Person.id), 0))))
            self.case_pk = int(connection.scalar(select(func.coalesce(func.max(Case.id), 0))))
            self.seq = int(connection.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0))))
        self.units = 0

    def load(self, units: int, steps: int, *, actors: tuple[str, ...], spacing: timedelta = timedelta(0),
             lone_persons: int = 0) -> tuple[list[int], int]:
        """``units`` units of ``steps`` entries, then ``lone_persons`` persons with their register entry alone;
        unit k (counted over the loader's life) starts at ``START + k * spacing``. Returns the new cases' ids
        and the entries written."""
        plan = [steps] * units + [1] * lone_persons
        recorded_at = datetime.now(UTC)
        batches = []
        for start in range(0, len(plan), BATCH_UNITS):
            part = tuple(plan[start:start + BATCH_UNITS])
            batches.append(Batch(self.db.backend, self.settings, self.prefix, part, self.units, self.person_pk,
                                 self.case_pk, self.seq, actors, spacing, recorded_at))
            self.units += len(part)
            self.person_pk += len(part)
            self.case_pk += sum(1 for s in part if s > 1)
            self.seq += sum(part)
        case_ids: list[int] = []
        written = 0
        tables = _tables(self.db.backend)
        with ExitStack() as stack:
            made: Iterator[Any]
            if len(batches) >= PARALLEL_BATCHES:
                pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1))
                made = pool.imap(make_batch, batches)
            else:
                made = map(make_batch, batches)
            with self.db.engine.begin() as connection:
                for rows, ids in made:
                    for table, values in zip(tables, rows, strict=True):
                        table.write(connection, values)
                    written += len(rows[-1])
                    case_ids += ids
                if self.db.backend == "postgresql":  # the serial columns go on after the explicit values
                    for table_name, column in (("persons", "id"), ("cases", "id"), ("audit_log", "seq")):
                        connection.exec_driver_sql(
                            f"SELECT setval(pg_get_serial_sequence('{table_name}', '{column}'), "
                            f"(SELECT max({column}) FROM {table_name}))")
        return case_ids, written


def settle(db: Any) -> None:
    """PostgreSQL: statistics and the visibility map up to date, as autovacuum leaves them."""
    if db.backend != "postgresql":
        return
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("persons", "cases", "users", "audit_log"):
            connection.exec_driver_sql(f"VACUUM ANALYZE {table}")


def count_entries(db: Any) -> int:
    from sqlalchemy import func, select

    from persistence.models import AuditEntry

    with db.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(AuditEntry)))


def make_users(engine: Any) -> None:
    """The users ``mpoxflow init`` makes, and the staff users the bench acts as."""
    engine.bootstrap_users(ADMIN)
    for name in (ACTOR, *STAFF):
        engine.add_user(name, "staff", actor=ADMIN)


# ---- 1. verify and export, measured in a process of their own ----------------------------------------------------


class CountingSink:
    """A text stream that keeps nothing but counts (lines, characters) and its first two and last writes."""

    def __init__(self) -> None:
        self.lines = 0
        self.chars = 0
        self.first: list[str] = []
        self.last = ""

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        self.chars += len(text)
        if len(self.first) < 2:
            self.first.append(text)
        self.last = text
        return len(text)


def status_mb(name: str) -> float:
    """A size from ``/proc/self/status`` (``VmRSS``: resident now; ``VmHWM``: its peak), in MB (2**20 bytes)."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(f"{name}:"):
            return int(row.split()[1]) / 1024
    raise BenchFailure(f"no {name} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Start the peak RSS afresh from the RSS now (Linux: ``5`` to ``/proc/self/clear_refs``), so that the peak
    read after an operation is that operation's, not the start-up's. False where that cannot be done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_now_and_peak_mb() -> tuple[float, float]:
    """(RSS now, peak RSS since the last reset); without /proc, the peak so far (``ru_maxrss``, which Linux
    carries over from the parent across exec, hence not the first choice) twice."""
    try:
        return status_mb("VmRSS"), status_mb("VmHWM")
    except (OSError, BenchFailure):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def measure(op: str, url: str) -> dict[str, Any]:
    """In this process (started for it): the engine, a warm-up read, then ``op`` timed, with the peak RSS."""
    from engine.auditing import read_export
    from engine.clock import SystemClock
    from engine.core import Engine
    from persistence.audit import entry_hash
    from persistence.database import Database

    db = Database(url)
    try:
        engine = Engine(db, SystemClock())
        engine.users()  # the connection, the session machinery, the models: in place before the baseline
        gc.collect()
        reset = reset_peak_rss()
        before, _ = rss_now_and_peak_mb()
        result: dict[str, Any] = {"op": op, "rss_before_mb": before, "peak_reset": reset}
        started = time.perf_counter()
        if op == "verify":
            report = engine.audit_verify()
            result["seconds"] = time.perf_counter() - started
            result["entries"] = report["entries"]
            result["objects"] = report["objects"]
            result["intact"] = report["intact"]
            result["problem_count"] = report["problem_count"]
            result["problems"] = report["problems"][:3]
        else:
            sink = CountingSink()
            result["entries"] = engine.audit_export(op, cast(IO[str], sink))
            result["seconds"] = time.perf_counter() - started
            result["lines"], result["chars"] = sink.lines, sink.chars
            # The first and the last entry read back from the export match their hashes.
            checked = [e["hash"] == entry_hash(e) for e in read_export([*sink.first, sink.last], op)]
            result["read_back"] = len(checked) == 2 and all(checked)
        result["rss_peak_mb"] = rss_now_and_peak_mb()[1]
        return result
    finally:
        db.dispose()


@dataclass
class Measured:
    backend: str
    op: str
    entries: int
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float
    #: What an export wrote, in MB of text (None for verify).
    output_mb: float | None = None

    @property
    def rate(self) -> float:
        return self.entries / self.seconds

    @property
    def growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_before_mb


OPS = {"verify": "audit_verify()", "jsonl": 'audit_export("jsonl")', "csv": 'audit_export("csv")'}


def measured(backend: str, op: str, url: str, entries: int, objects: int, log_level: str) -> Measured:
    """``op`` in a fresh process over the log of ``entries`` entries and ``objects`` objects, checked."""
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", op, "--db", url, "--log-level", log_level]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise BenchFailure(f"the {op} process exited with status {done.returncode}:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["peak_reset"]:
        say(f"({op}: the peak RSS could not be reset; the figures are the process's peak since it started)")
    if op == "verify":
        if not result["intact"] or result["entries"] != entries or result["objects"] != objects:
            raise BenchFailure(
                f"verify: intact {result['intact']}, {result['entries']} entries of {result['objects']} objects "
                f"(expected {entries} of {objects}), {result['problem_count']} problems: {result['problems']}")
    elif result["entries"] != entries or result["lines"] != entries + 1 or not result["read_back"]:
        raise BenchFailure(f"export {op}: {result['entries']} entries, {result['lines']} lines (expected {entries} "
                           f"and {entries + 1}), first and last read back and matching: {result['read_back']}")
    output = result["chars"] / 2**20 if "chars" in result else None
    return Measured(backend, op, entries, result["seconds"], result["rss_before_mb"], result["rss_peak_mb"], output)


def log_part(backend: str, pg_url: str, entries: int, log_level: str) -> list[Measured]:
    """Load to N/10 entries, measure; load to N, measure again."""
    from engine.clock import SimulatedClock
    from engine.core import Engine
    from persistence.database import Database

    results: list[Measured] = []
    with scratch_url(backend, pg_url) as url:
        db = Database(url)
        try:
            db.upgrade()
            engine = Engine(db, SimulatedClock(START - timedelta(days=1)))
            make_users(engine)
            users = len(engine.users())
            loader = Loader(db, engine.settings, "LOG")
            for target in dict.fromkeys((max(entries // 10, 1), entries)):
                have = count_entries(db)
                missing = target - have
                if missing < 0:
                    raise BenchFailure(f"the log already has {have} entries, more than {target}")
                started = time.perf_counter()
                _, written = loader.load(missing // FULL_UNIT, FULL_UNIT, actors=STAFF, spacing=timedelta(seconds=1),
                                         lone_persons=missing % FULL_UNIT)
                settle(db)
                if count_entries(db) != target or written != missing:
                    raise BenchFailure(f"the loader wrote {written} entries; the log has {count_entries(db)}, "
                                       f"not {target}")
                objects = users + loader.person_pk + loader.case_pk
                say(f"{backend}: log loaded to {target} entries ({objects} objects) in "
                    f"{time.perf_counter() - started:.1f} s (not timed)")
                db.dispose()  # nothing of the bench's open while the measuring process reads
                for op in OPS:
                    results.append(measured(backend, op, url, target, objects, log_level))
                    say(line(results[-1]))
        finally:
            db.dispose()
    return results


def line(m: Measured) -> str:
    return (f"{m.backend:<11} {OPS[m.op]:<22} {m.entries:>8} entries in {m.seconds:7.2f} s = {m.rate:9.0f} entries/s"
            f"   peak RSS {m.rss_peak_mb:6.1f} MB, {m.growth_mb:+6.1f} MB over the {m.rss_before_mb:.1f} MB before"
            + ("" if m.output_mb is None else f"   ({m.output_mb:.0f} MB written)"))


def memory_verdicts(results: list[Measured]) -> list[tuple[str, bool]]:
    """Per backend and operation: is the peak's growth at N within the bound set by the growth at N/10?"""
    verdicts = []
    by_key: dict[tuple[str, str], list[Measured]] = {}
    for m in results:
        by_key.setdefault((m.backend, m.op), []).append(m)
    for (backend, op), ms in by_key.items():
        if len(ms) < 2:
            continue
        small, big = min(ms, key=lambda m: m.entries), max(ms, key=lambda m: m.entries)
        bound = max(small.growth_mb, 0.0) * MEMORY_FACTOR + MEMORY_SLACK_MB
        ok = big.growth_mb <= bound
        verdicts.append((
            f"{backend:<11} {OPS[op]:<22} peak growth {small.growth_mb:+.1f} MB at {small.entries}, "
            f"{big.growth_mb:+.1f} MB at {big.entries} entries: "
            + ("constant" if ok else f"GROWS (over {bound:.1f} MB)"), ok))
    return verdicts


# ---- 2. the chain's cost on a transition ---------------------------------------------------------------------------


def _link_without_hash(self: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``Head.link`` without the hash: the same position, predecessor and format, a constant hash, no canonical
    JSON and no SHA-256."""
    from persistence.audit import FORMAT

    return {**values, "format": FORMAT, "pos": self.pos + 1, "prev_seq": self.seq, "prev_hash": self.hash,
            "hash": CONSTANT_HASH}


@contextmanager
def variant(name: str) -> Iterator[None]:
    """The product as built (``chain``), or with the chain's hashing taken out (``no hash``)."""
    from persistence.audit import Head

    link = Head.link
    try:
        if name != "chain":
            Head.link = _link_without_hash  # type: ignore[method-assign]
        yield
    finally:
        Head.link = link  # type: ignore[method-assign]


def confirm_all(engine: Any, pks: list[int]) -> float:
    started = time.perf_counter()
    for pk in pks:
        engine.apply(f"case-{pk}", "confirm", data={"pcr_on": PCR_ON}, actor=ACTOR)
    return time.perf_counter() - started


def check_reference(engine: Any, db: Any) -> None:
    """A person and case made by the engine, rebuilt by ``unit_history``: the same rows, the same entries (the
    same canonical content, so the same hashes, once given the engine's ``recorded_at``)."""
    from sqlalchemy import Table, select

    from persistence.audit import GENESIS, Head
    from persistence.models import AuditEntry, Case, Person
    from persistence.repository import parse_id

    person_pk = parse_id(engine.add_person(ref="BENCH-REF", actor=ACTOR)["id"])[1]
    case_pk = parse_id(engine.open("case", "open", person=f"person-{person_pk}", actor=ACTOR,
                                   data={"onset": ONSET, "symptoms": ["rash"], "criteria": ["msm"]})["id"])[1]
    persons, cases, audit = (cast(Table, model.__table__) for model in (Person, Case, AuditEntry))
    with db.engine.connect() as connection:
        made_person = dict(connection.execute(select(persons).where(persons.c.id == person_pk)).one()._mapping)
        made_case = dict(connection.execute(select(cases).where(cases.c.id == case_pk)).one()._mapping)
        made = [dict(r._mapping) for r in connection.execute(
            select(audit).where(((audit.c.object_kind == "person") & (audit.c.object_id == person_pk))
                                | ((audit.c.object_kind == "case") & (audit.c.object_id == case_pk)))
            .order_by(audit.c.seq))]
    person, case, entries = unit_history("BENCH-REF", person_pk, case_pk, START, SUSPECTED_UNIT, ACTOR,
                                         engine.settings)
    assert case is not None
    wrong = []
    for name, row, built in (("persons", made_person, person), ("cases", made_case, case)):
        row = {k: v for k, v in row.items() if not k.startswith("audit_")}
        if row != built:
            wrong.append(f"{name}: engine {row!r} != bulk {built!r}")
    if len(made) != len(entries):
        wrong.append(f"the engine wrote {len(made)} entries, the bulk {len(entries)}")
    for written, built in zip(made, entries, strict=False):
        linked = Head(0, None, GENESIS).link({**built, "recorded_at": written["recorded_at"]})
        for key, value in linked.items():
            if written[key] != value:
                wrong.append(f"entry {built['trigger']}, {key}: engine {written[key]!r} != bulk {value!r}")
    if wrong:
        raise BenchFailure("the bulk rows are not what the engine writes: " + "; ".join(wrong))


def check_confirmed(db: Any, what: str, pks: list[int], hashed: bool, head_moved: bool) -> None:
    """Every case of ``pks`` confirmed at version 2, one confirm entry each at position 2 (with the constant hash
    when not ``hashed``), its head on that entry when ``head_moved``, else still on the open."""
    from sqlalchemy import text

    if not pks:
        return
    low, high = min(pks), max(pks)
    if high - low + 1 != len(pks):
        raise BenchFailure(f"{what}: the cases are not one range of ids")
    with db.engine.connect() as connection:
        confirmed, at_head = connection.execute(text(
            "SELECT sum(CASE WHEN state = 'confirmed' AND version = 2 THEN 1 ELSE 0 END), "
            "sum(CASE WHEN audit_pos = :pos THEN 1 ELSE 0 END) FROM cases WHERE id BETWEEN :low AND :high"),
            {"low": low, "high": high, "pos": 2 if head_moved else 1}).one()
        entries, at_two, constant = connection.execute(text(
            "SELECT count(*), sum(CASE WHEN pos = 2 THEN 1 ELSE 0 END), "
            "sum(CASE WHEN hash = :constant THEN 1 ELSE 0 END) FROM audit_log "
            "WHERE object_kind = 'case' AND trigger = 'confirm' AND object_id BETWEEN :low AND :high"),
            {"low": low, "high": high, "constant": CONSTANT_HASH}).one()
    n = len(pks)
    found = {"cases confirmed at version 2": (confirmed, n), "confirm entries": (entries, n),
             "of them at position 2": (at_two, n), "with the constant hash": (constant, 0 if hashed else n),
             f"heads at position {2 if head_moved else 1}": (at_head, n)}
    wrong = [f"{label} {got} (expected {expected})" for label, (got, expected) in found.items()
             if (got or 0) != expected]
    if wrong:
        raise BenchFailure(f"after {what}: " + ", ".join(wrong))


@dataclass
class ChainResult:
    backend: str
    n: int
    seconds: dict[str, float]
    #: ``Head.link`` alone on a confirm entry (canonical JSON and SHA-256), and the no-hash stand-in, in µs.
    link_us: float = 0.0
    unhashed_link_us: float = 0.0
    processes: list[Process] = field(default_factory=list)

    def micros(self, name: str) -> float:
        return 1e6 * self.seconds[name] / self.n


@dataclass
class Process:
    variant: str
    count: int
    transitions: int
    seconds: float
    lock_waits: int
    samples: int
    #: The machine's CPUs busy meanwhile (all processes, the database server's included), 0 to 1.
    busy: float

    @property
    def rate(self) -> float:
        return self.transitions / self.seconds


def transition_worker(url: str, name: str, first: int, count: int) -> None:
    """One of several processes (``--transition-worker``): confirm cases ``first`` to ``first + count - 1`` when
    told to (a line on stdin), print when it began and ended (wall clock) and how many it did."""
    from engine.clock import SimulatedClock
    from engine.core import Engine
    from persistence.database import Database

    db = Database(url)
    try:
        engine = Engine(db, SimulatedClock(CONFIRM_AT))
        engine.show(f"case-{first}")  # connected, the machinery in place
        print("ready", flush=True)
        sys.stdin.readline()
        began = time.time()
        with variant(name):
            confirm_all(engine, list(range(first, first + count)))
        print(json.dumps({"began": began, "ended": time.time(), "count": count}), flush=True)
    finally:
        db.dispose()


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far (``/proc/stat``); (0, 0) where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def time_link(engine: Any, repeat: int = 20_000) -> tuple[float, float]:
    """µs per ``Head.link`` of a confirm entry as the engine writes it, as built and with the no-hash stand-in."""
    from persistence.audit import GENESIS, Head

    _, _, entries = unit_history("BENCH-LINK", 1, 1, START, 3, ACTOR, engine.settings)
    values = {**entries[2], "recorded_at": datetime.now(UTC)}
    head = Head(1, 1, GENESIS)
    timings = []
    for link in (Head.link, _link_without_hash):
        started = time.perf_counter()
        for _ in range(repeat):
            link(head, values)
        timings.append(1e6 * (time.perf_counter() - started) / repeat)
    return timings[0], timings[1]


def run_processes(db: Any, url: str, name: str, ranges: list[tuple[int, int]], log_level: str) -> Process:
    """Worker processes, one per range of cases, started, then all told to go at once; their throughput from the
    first's start to the last's end, and how often a backend was seen waiting for a lock meanwhile."""
    from sqlalchemy import text

    processes: list[subprocess.Popen[str]] = []
    env = {**os.environ, "MPOXFLOW_LOG_LEVEL": log_level}
    try:
        for first, count in ranges:
            processes.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--transition-worker", name, "--db", url,
                 "--first", str(first), "--count", str(count), "--log-level", log_level],
                cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                process.wait(timeout=30)
                raise BenchFailure(f"worker {process.pid} did not start (status {process.returncode}): "
                                   f"{process.stderr.read()[-2000:] if process.stderr else ''}")
        cpu_before = cpu_times()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        waits = samples = 0
        query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND wait_event_type = 'Lock'")
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            while any(p.poll() is None for p in processes):
                samples += 1
                waits += bool(connection.scalar(query))
                time.sleep(LOCK_SAMPLE_SECONDS)
        cpu_after = cpu_times()
        reports = []
        for process in processes:
            out, err = process.communicate(timeout=30)
            if process.returncode != 0:
                raise BenchFailure(f"worker {process.pid} exited with status {process.returncode}:\n{err[-2000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    done = sum(r["count"] for r in reports)
    if done != sum(count for _, count in ranges):
        raise BenchFailure(f"the workers did {done} transitions, not {sum(count for _, count in ranges)}")
    seconds = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
    busy = (cpu_after[0] - cpu_before[0]) / max(cpu_after[1] - cpu_before[1], 1)
    return Process(name, len(ranges), done, seconds, waits, samples, busy)


def chain_part(backend: str, pg_url: str, n: int, workers: int, per_worker: int, log_level: str) -> ChainResult:
    from sqlalchemy import text

    from engine.clock import SimulatedClock
    from engine.core import Engine
    from persistence.database import Database

    with scratch_url(backend, pg_url) as url:
        db = Database(url)
        try:
            db.upgrade()
            clock = SimulatedClock(START)
            engine = Engine(db, clock)
            make_users(engine)
            check_reference(engine, db)
            started = time.perf_counter()
            loader = Loader(db, engine.settings, "CHAIN")
            in_process = {name: loader.load(n, SUSPECTED_UNIT, actors=(ACTOR,))[0] for name in VARIANTS}
            in_processes: dict[tuple[str, int], list[int]] = {}
            if backend == "postgresql" and workers > 0:
                # In A B B A order (chain first with 1 process, last with several), so that drift favours neither.
                for i, count in enumerate(dict.fromkeys((1, workers))):
                    for name in PROCESS_VARIANTS[::-1 if i % 2 else 1]:
                        in_processes[name, count] = loader.load(count * per_worker, SUSPECTED_UNIT,
                                                                actors=(ACTOR,))[0]
            settle(db)
            say(f"{backend}: {loader.units} suspected cases loaded in {time.perf_counter() - started:.1f} s "
                "(not timed)")
            clock.set(CONFIRM_AT)

            seconds = dict.fromkeys(VARIANTS, 0.0)
            size = -(-n // ROUNDS)
            for r in range(ROUNDS):
                order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
                for name in order:
                    with variant(name):
                        seconds[name] += confirm_all(engine, in_process[name][r * size:(r + 1) * size])
            for name in VARIANTS:
                check_confirmed(db, f"{name} on {backend}", in_process[name], hashed=name == "chain",
                                head_moved=True)
            result = ChainResult(backend, n, seconds, *time_link(engine))
            say(chain_line(result))

            for (name, count), pks in in_processes.items():
                ranges = [(pks[i * per_worker], per_worker) for i in range(count)]
                db.dispose()
                result.processes.append(run_processes(db, url, name, ranges, log_level))
                check_confirmed(db, f"{count} processes, {name}, on {backend}", pks, hashed=name == "chain",
                                head_moved=True)
                say(process_line(backend, result.processes[-1]))

            # Every chain intact but those the variants broke on purpose, exactly.
            unhashed = {f"case-{pk}" for name, pks in in_process.items() if name != "chain" for pk in pks}
            unhashed |= {f"case-{pk}" for (name, _), pks in in_processes.items() if name != "chain" for pk in pks}
            with db.engine.connect() as connection:
                total = int(connection.scalar(text("SELECT count(*) FROM audit_log")))
            report = engine.audit_verify()
            expected = len(unhashed)
            strays = [p for p in report["problems"] if p["object"] not in unhashed or p["problem"] != "modified"]
            if report["entries"] != total or report["problem_count"] != expected or strays:
                raise BenchFailure(f"audit verify on {backend}: {report['entries']} entries (the log has {total}), "
                                   f"{report['problem_count']} problems (expected {expected}: the unhashed "
                                   f"entries), unexpected: {strays[:3]}")
            return result
        finally:
            db.dispose()


def chain_line(r: ChainResult) -> str:
    base = r.micros("chain")
    parts = [f"{name} {r.micros(name):5.0f} µs"
             + ("" if name == "chain" else f" (chain / {name} {base / r.micros(name):.2f})") for name in VARIANTS]
    return (f"{r.backend:<11} per confirm (1 process, {r.n} each): " + ",  ".join(parts)
            + f";  Head.link alone {r.link_us:.1f} µs (no hash: {r.unhashed_link_us:.1f} µs)")


def process_line(backend: str, p: Process) -> str:
    return (f"{backend:<11} {p.variant:<8} {p.count} process{'es' if p.count > 1 else '  '}: {p.transitions:>5} "
            f"transitions in {p.seconds:6.2f} s = {p.rate:7.1f} tr/s   CPUs {100 * p.busy:3.0f}% busy   a backend "
            f"waiting for a lock in {p.lock_waits} of {p.samples} samples")


# ---- report ----------------------------------------------------------------------------------------------------


def markdown(logs: list[Measured], chains: list[ChainResult]) -> str:
    lines: list[str] = []
    if logs:
        lines += ["| Backend | Operation | Entries | Seconds | Entries/s | Peak RSS (MB) | Peak growth (MB) | "
                  "Written (MB) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for m in logs:
            lines.append(f"| {m.backend} | `{OPS[m.op]}` | {m.entries} | {m.seconds:.2f} | {m.rate:.0f} | "
                         f"{m.rss_peak_mb:.1f} | {m.growth_mb:+.1f} | "
                         + ("" if m.output_mb is None else f"{m.output_mb:.1f}") + " |")
    if chains:
        lines += ["", "| Backend | N | " + " | ".join(f"{v} (µs/confirm)" for v in VARIANTS)
                  + " | chain / no hash | `Head.link` alone (µs) |",
                  "|---|---:|" + "---:|" * (len(VARIANTS) + 2)]
        for r in chains:
            lines.append(f"| {r.backend} | {r.n} | " + " | ".join(f"{r.micros(v):.0f}" for v in VARIANTS)
                         + f" | {r.micros('chain') / r.micros('no hash'):.2f}"
                         f" | {r.link_us:.1f} (no hash {r.unhashed_link_us:.1f}) |")
        procs = [(r.backend, p) for r in chains for p in r.processes]
        if procs:
            lines += ["", "| Backend | Variant | Processes | Transitions | Seconds | Transitions/s | CPUs busy | "
                          "Lock-wait samples |", "|---|---|---:|---:|---:|---:|---:|---:|"]
            for backend, p in procs:
                lines.append(f"| {backend} | {p.variant} | {p.count} | {p.transitions} | {p.seconds:.2f} | "
                             f"{p.rate:.1f} | {100 * p.busy:.0f}% | {p.lock_waits}/{p.samples} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The audit log: verify and export over N entries (time, memory); the hash chain's cost on a "
        "transition, in one process and in several on PostgreSQL."
    )
    parser.add_argument("--entries", type=int, default=1_000_000,
                        help="entries in the log verified and exported (default 1000000; N/10 is measured too)")
    parser.add_argument("--transitions", type=int, default=2000,
                        help="confirm transitions per variant in one process (default 2000)")
    parser.add_argument("--workers", type=int, default=4,
                        help="processes of the concurrent run on PostgreSQL (default 4; 1 is run too; 0 skips it)")
    parser.add_argument("--per-worker", type=int, default=1000,
                        help="transitions per process in the concurrent runs (default 1000)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL,
        help="PostgreSQL URL whose database is used to create and drop the scratch databases "
        "(default $MPOXFLOW_TEST_POSTGRES_URL or %(default)s)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=("log", "chain"),
                        help="parts to leave out: log (verify and export), chain (the transitions)")
    parser.add_argument("--log-level", default="warning", help="engine log level (default warning, as the CLI)")
    # The bench's own child processes.
    parser.add_argument("--measure", choices=tuple(OPS), help=argparse.SUPPRESS)
    parser.add_argument("--transition-worker", choices=PROCESS_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.entries < 10 or args.transitions < 1 or args.workers < 0 or args.per_worker < 1:
        parser.error("--entries must be at least 10, --transitions and --per-worker at least 1, --workers 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from entry.logs import configure_logging

    configure_logging(level=args.log_level)
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.db)), flush=True)
        return 0
    if args.transition_worker is not None:
        transition_worker(args.db, args.transition_worker, args.first, args.count)
        return 0
    exit_cleanly_on_sigterm()

    import sqlalchemy

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    say(f"mpoxflow audit benchmark: {args.entries} entries, {args.transitions} transitions per variant, "
        f"{args.workers} x {args.per_worker} in processes, Python {platform.python_version()}, "
        f"SQLAlchemy {sqlalchemy.__version__}, {os.cpu_count()} CPUs")
    began = time.perf_counter()
    logs: list[Measured] = []
    chains: list[ChainResult] = []
    try:
        for backend in backends:
            if "log" not in args.skip:
                logs += log_part(backend, args.pg_url, args.entries, args.log_level)
            if "chain" not in args.skip:
                chains.append(chain_part(backend, args.pg_url, args.transitions, args.workers, args.per_worker,
                                         args.log_level))
    except BenchFailure as failure:
        print(f"bench/audit.py: FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    verdicts = memory_verdicts(logs)
    say("")
    for text, _ in verdicts:
        say(text)
    say(f"whole run: {time.perf_counter() - began:.0f} s")
    say("")
    say(markdown(logs, chains))
    grown = [text for text, ok in verdicts if not ok]
    if grown:
        print("bench/audit.py: FAILED: memory grows with the log: " + "; ".join(grown), file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    with suppress(BrokenPipeError):
        sys.exit(main())
