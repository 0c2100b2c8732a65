"""Transition throughput: the engine against a hand-written SQLAlchemy Core baseline, on SQLite and PostgreSQL.

    .venv/bin/python bench/transitions.py [--n N] [--backend sqlite|postgresql|both] [--pg-url URL]

For each backend a fresh database is made (SQLite: a file in a temporary directory; PostgreSQL: a scratch
database ``mpoxflow_bench_<pid>``, dropped at the end even on error) and migrated. It gets its users, as
``mpoxflow init`` leaves it: ``bench:admin`` (first admin) and the scheduler's ``timer``
(``Engine.bootstrap_users``), then ``bench`` (staff), the actor of every change below. 2N suspected cases are
set up through the engine (not timed). Then, timed:

* engine: ``Engine.apply(case, "confirm", ...)`` on N of them, one durable transaction each (the actor's user and
  role looked up, state update with its version check, the person's open courses looked up for the
  mpox-confirmed cascade, 2 notification timers armed, 1 audit entry chained after the case's head, the head
  moved);
* raw: the same SQL by hand with SQLAlchemy Core on the other N (no ORM, no `transitions`, no engine), one
  transaction each, begun with ``BEGIN IMMEDIATE`` on SQLite exactly like the engine's writes: the same user
  lookup, the same courses lookup, and the audit entry chained with ``persistence.audit.Head.link`` (canonical
  JSON, SHA-256) after the head read with the case, then the case's values, version check and head written
  by one UPDATE, as the engine does.

After each timed phase the database is checked (N confirmed cases, 2N pending timers and N audit entries from
that phase), a raw row set is compared with an engine row set, and at the end ``Engine.audit_verify()`` must find
every chain intact (every entry's hash, link and head, the raw baseline's included) over the expected number of
entries; any mismatch exits with status 1, so the benchmark cannot silently measure nothing. The product target
is ratio = engine/raw >= 0.5.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# Run as a script, this file's folder comes first on sys.path, and this file would then shadow the
# `transitions` library the workflows import: take the folder off, put the repository root on.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import DEFAULT_PG_URL, BenchFailure, exit_cleanly_on_sigterm, say, scratch_url  # noqa: E402

#: A Monday morning in Copenhagen: the cases are opened then, and confirmed an hour later.
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
CONFIRM_AT = START + timedelta(hours=1)
ONSET = date(2025, 3, 1)
PCR_ON = date(2025, 3, 3)
TARGET_RATIO = 0.5
#: The database's first admin (who registers the actor) and the actor of every change (a staff user).
ADMIN = "bench:admin"
ACTOR = "bench"


@dataclass
class Result:
    backend: str
    n: int
    engine_seconds: float
    raw_seconds: float

    @property
    def engine_rate(self) -> float:
        return self.n / self.engine_seconds

    @property
    def raw_rate(self) -> float:
        return self.n / self.raw_seconds

    @property
    def ratio(self) -> float:
        return self.engine_rate / self.raw_rate

    def line(self) -> str:
        return (
            f"{self.backend:<11} engine {self.engine_rate:7.1f} tr/s   raw {self.raw_rate:7.1f} tr/s   "
            f"ratio {self.ratio:4.2f}  (N={self.n})"
        )



# ---- set-up (not timed) -------------------------------------------------------------------------------------------


def set_up_users(engine: Any) -> None:
    """The users ``mpoxflow init`` makes (first admin, the scheduler's ``timer``), and the bench's staff actor."""
    engine.bootstrap_users(ADMIN)
    engine.add_user(ACTOR, "staff", actor=ADMIN)


def set_up_cases(engine: Any, count: int, prefix: str) -> list[str]:
    """``count`` suspected cases, one person each, through the engine."""
    ids = []
    for i in range(count):
        person = engine.add_person(ref=f"BENCH-{prefix}-{i}", actor=ACTOR)["id"]
        case = engine.open(
            "case", "open", person=person, actor=ACTOR,
            data={"onset": ONSET, "symptoms": ["rash"], "criteria": ["msm"]},
        )
        ids.append(case["id"])
    return ids


# ---- the timed phases --------------------------------------------------------------------------------------------


def engine_phase(engine: Any, case_ids: list[str]) -> None:
    for case_id in case_ids:
        engine.apply(case_id, "confirm", data={"pcr_on": PCR_ON}, actor=ACTOR)


def make_raw_confirm(db: Any, settings: Any, clock: Any) -> tuple[Callable[[int], None], Callable[[], None]]:
    """The confirm transition by hand with SQLAlchemy Core: the same statements the engine issues.

    Returns ``(confirm(pk), close())``. One connection is held; each confirm is one transaction, which on
    SQLite begins with BEGIN IMMEDIATE (the ``mpoxflow_write`` execution option, as for the engine's writes).
    The actor's role is read in the transaction (a user's role can change between two transitions), the
    person's open courses are looked up (confirmation ends them, §6.3: there are none here), and the audit
    entry is chained after the head read with the case row and the head moved, with the product's own pure
    functions (``Head.link``: canonical JSON and SHA-256).
    """
    from sqlalchemy import bindparam, insert, select, update

    from engine.core import ACTING_ROLES
    from engine.views import jsonable  # the product's JSON form of dates and instants (a pure function)
    from persistence.audit import Head
    from persistence.models import AuditEntry, Case, Course, Person, Timer, User
    from workflows.case import (
        S1_1,
        S2_4,
        S3_1,
        SEQUENCING_TASK,
        antiviral_consider,
        phone_notification_due,
        sequencing_sample_due,
        written_notification_due,
    )
    from workflows.person import PersonFacts

    cases, timers, audit, users, courses = (
        Case.__table__, Timer.__table__, AuditEntry.__table__, User.__table__, Course.__table__)
    select_role = select(users.c.role).where(users.c.name == bindparam("name"))
    select_case = select(cases).where(cases.c.id == bindparam("pk"))
    persons = Person.__table__
    # §3.4 what the rules read of the person at confirmation (antiviral treatment may be considered).
    select_person = select(persons.c.immunocompromised).where(persons.c.id == bindparam("person"))
    update_case = (
        update(cases)
        .where(cases.c.id == bindparam("pk"), cases.c.version == bindparam("expected_version"))
        .values(
            state=bindparam("state"), pcr_on=bindparam("pcr_on"), clade=bindparam("clade"),
            confirmed_at=bindparam("confirmed_at"), updated_at=bindparam("updated_at"),
            version=cases.c.version + 1, audit_pos=bindparam("head_pos"), audit_seq=bindparam("head_seq"),
            audit_hash=bindparam("head_hash"),
        )
    )
    # The mpox-confirmed cascade: the person's courses that confirmation ends.
    select_courses = (
        select(courses.c.id)
        .where(courses.c.person_id == bindparam("person"),
               courses.c.state.in_(("offered", "dose1_given", "dose2_due")))
        .order_by(courses.c.id)
    )
    select_pending = select(timers).where(
        timers.c.object_kind == "case", timers.c.object_id == bindparam("pk"), timers.c.status == "pending"
    )
    cancel_timer = (
        update(timers).where(timers.c.id == bindparam("timer_id"))
        .values(status="cancelled", closed_at=bindparam("closed_at"), note="re-armed")
    )
    insert_timers = insert(timers).returning(timers.c.id, sort_by_parameter_order=True)
    insert_audit = insert(audit).returning(audit.c.seq)

    connection = db.engine.execution_options(mpoxflow_write=True).connect()

    def confirm(pk: int) -> None:
        now = clock.now()
        with connection.begin():
            role = connection.execute(select_role, {"name": ACTOR}).scalar_one_or_none()
            if role not in ACTING_ROLES:
                raise BenchFailure(f"{ACTOR} may not change cases (role {role})")
            row = connection.execute(select_case, {"pk": pk}).one()
            if row.state != "suspected" or not row.onset <= PCR_ON:
                raise BenchFailure(f"case-{pk} cannot be confirmed (state {row.state})")
            immunocompromised = connection.execute(select_person, {"person": row.person_id}).scalar_one()
            consider = antiviral_consider(PersonFacts(immunocompromised=immunocompromised), bool(row.child))
            written = {"pcr_on": PCR_ON, "clade": None, "confirmed_at": now, "antiviral_consider": consider,
                       "state": "confirmed"}
            if connection.execute(select_courses, {"person": row.person_id}).first() is not None:
                raise BenchFailure(f"person-{row.person_id} has a course to end: the baseline does not end courses")
            armed = [
                ("phone_notification_due", phone_notification_due(now, settings),
                 "notify STPS by phone"),
                ("written_notification_due", written_notification_due(now), "notify SSI and STPS in writing"),
                ("sequencing_sample_due", sequencing_sample_due(now, settings), SEQUENCING_TASK),
            ]
            rules = {"sequencing_sample_due": S2_4}
            names = {name for name, _, _ in armed}
            cancelled = []
            for timer in connection.execute(select_pending, {"pk": pk}):
                if timer.name in names:  # re-armed: never happens here, kept so the logic is the engine's
                    connection.execute(cancel_timer, {"timer_id": timer.id, "closed_at": now})
                    cancelled.append({"timer": f"timer-{timer.id}", "name": timer.name, "why": "re-armed"})
            timer_ids = connection.execute(insert_timers, [
                {"object_kind": "case", "object_id": pk, "name": name, "due_at": due_at, "rule": rules.get(name, S3_1),
                 "task": task, "status": "pending", "armed_at": now, "closed_at": None, "satisfied_at": None,
                 "note": None}
                for name, due_at, task in armed
            ]).scalars().all()
            entry = Head.of(row).link({
                "timer_id": None, "object_kind": "case", "object_id": pk, "workflow": row.workflow,
                "trigger": "confirm", "from_state": "suspected", "to_state": "confirmed", "actor": ACTOR,
                "role": role, "reason": None, "at": now, "recorded_at": datetime.now(UTC), "rule": S1_1,
                "data": jsonable({"pcr_on": PCR_ON}),
                "changes": {k: jsonable(v) for k, v in written.items() if jsonable(getattr(row, k)) != jsonable(v)},
                "timers_armed": [
                    {"timer": f"timer-{timer_id}", "name": name, "due_at": jsonable(due_at),
                     "rule": rules.get(name, S3_1),
                     "task": task, "overdue_at": None}
                    for timer_id, (name, due_at, task) in zip(timer_ids, armed, strict=True)
                ],
                "timers_cancelled": cancelled, "timers_done": [],
            })
            seq = connection.execute(insert_audit, entry).scalar_one()
            # The new values, the version check and the head in one statement, as the engine writes them.
            changed = connection.execute(update_case, {
                "pk": pk, "expected_version": row.version, **written, "updated_at": now,
                "head_pos": entry["pos"], "head_seq": seq, "head_hash": entry["hash"],
            })
            if changed.rowcount != 1:
                raise BenchFailure(f"case-{pk} was changed meanwhile (version check)")

    return confirm, connection.close


# ---- checks ----------------------------------------------------------------------------------------------------


def verify_phase(db: Any, phase: str, pks: list[int]) -> None:
    """The phase wrote what it should: its N cases confirmed, 3N pending timers and N confirm entries."""
    from sqlalchemy import func, select

    from persistence.models import AuditEntry, Case, Timer

    n = len(pks)
    with db.engine.connect() as connection:
        confirmed = connection.scalar(
            select(func.count()).select_from(Case).where(Case.id.in_(pks), Case.state == "confirmed")
        )
        pending = connection.scalar(
            select(func.count()).select_from(Timer).where(
                Timer.object_kind == "case", Timer.object_id.in_(pks), Timer.status == "pending",
                Timer.name.in_(("phone_notification_due", "written_notification_due", "sequencing_sample_due")),
            )
        )
        entries = connection.scalar(
            select(func.count()).select_from(AuditEntry).where(
                AuditEntry.object_kind == "case", AuditEntry.object_id.in_(pks), AuditEntry.trigger == "confirm"
            )
        )
    found = {"confirmed cases": (confirmed, n), "pending timers": (pending, 3 * n), "audit entries": (entries, n)}
    wrong = [f"{what} {got} (expected {expected})" for what, (got, expected) in found.items() if got != expected]
    if wrong:
        raise BenchFailure(f"after the {phase} phase: " + ", ".join(wrong))


def verify_equivalent(db: Any, engine_pk: int, raw_pk: int) -> None:
    """The raw baseline wrote the same rows as the engine (ids, the wall-clock ``recorded_at`` and what depends
    on them aside: the entry's hash, its predecessor's sequence number and hash, the head's sequence number and
    hash; ``Engine.audit_verify`` checks those)."""
    from sqlalchemy import select

    from persistence.models import AuditEntry, Case, Timer

    cases, timers, audit = Case.__table__, Timer.__table__, AuditEntry.__table__

    def rows(pk: int) -> dict[str, Any]:
        with db.engine.connect() as connection:
            case = dict(connection.execute(select(cases).where(cases.c.id == pk)).one()._mapping)
            armed = [
                dict(r._mapping) for r in connection.execute(
                    select(timers).where(timers.c.object_kind == "case", timers.c.object_id == pk)
                    .order_by(timers.c.name)
                )
            ]
            entry = dict(connection.execute(
                select(audit).where(audit.c.object_kind == "case", audit.c.object_id == pk,
                                    audit.c.trigger == "confirm")
            ).one()._mapping)
        for key in ("id", "person_id", "audit_seq", "audit_hash"):
            case.pop(key)
        for timer in armed:
            timer.pop("id")
            timer.pop("object_id")
        for key in ("seq", "object_id", "recorded_at", "hash", "prev_seq", "prev_hash"):
            entry.pop(key)
        entry["timers_armed"] = [{k: v for k, v in t.items() if k != "timer"} for t in entry["timers_armed"]]
        return {"case": case, "timers": armed, "audit": entry}

    by_engine, by_hand = rows(engine_pk), rows(raw_pk)
    if by_engine != by_hand:
        differences = [
            f"{part}: engine {by_engine[part]!r} != raw {by_hand[part]!r}"
            for part in by_engine if by_engine[part] != by_hand[part]
        ]
        raise BenchFailure("the raw baseline does not write what the engine writes: " + "; ".join(differences))


def verify_chains(engine: Any, entries: int) -> None:
    """Every object's hash chain and head intact (the raw baseline's entries included), over ``entries``."""
    report = engine.audit_verify()
    if not report["intact"] or report["entries"] != entries:
        raise BenchFailure(
            f"audit verify: intact {report['intact']}, {report['entries']} entries (expected {entries}), "
            f"{report['problem_count']} problems, the first: {report['problems'][:3]}"
        )


# ---- one backend ---------------------------------------------------------------------------------------------------


def run_backend(backend: str, n: int, pg_url: str, profile: int) -> Result:
    from engine.clock import SimulatedClock
    from engine.core import Engine
    from persistence.database import Database
    from persistence.repository import parse_id

    with scratch_url(backend, pg_url) as url:
        db = Database(url)
        try:
            db.upgrade()
            clock = SimulatedClock(START)
            engine = Engine(db, clock)

            started = time.perf_counter()
            set_up_users(engine)
            engine_ids = set_up_cases(engine, n, "e")
            raw_ids = set_up_cases(engine, n, "r")
            say(f"{backend}: set up {2 * n} suspected cases in {time.perf_counter() - started:.1f} s (not timed)")
            clock.set(CONFIRM_AT)

            profiler = cProfile.Profile() if profile else None
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            engine_phase(engine, engine_ids)
            if profiler is not None:
                profiler.disable()
            engine_seconds = time.perf_counter() - started
            engine_pks = [parse_id(i)[1] for i in engine_ids]
            verify_phase(db, "engine", engine_pks)

            confirm, close = make_raw_confirm(db, engine.settings, clock)
            raw_pks = [parse_id(i)[1] for i in raw_ids]
            try:
                started = time.perf_counter()
                for pk in raw_pks:
                    confirm(pk)
                raw_seconds = time.perf_counter() - started
            finally:
                close()
            verify_phase(db, "raw", raw_pks)
            verify_equivalent(db, engine_pks[0], raw_pks[0])
            # 3 user entries (2 of bootstrap_users, 1 of add_user); per case: its person's, its opening, its confirm
            verify_chains(engine, 3 + 3 * 2 * n)

            if profiler is not None:
                print_profile(backend, profiler, profile)
            return Result(backend, n, engine_seconds, raw_seconds)
        finally:
            db.dispose()


def print_profile(backend: str, profiler: cProfile.Profile, top: int) -> None:
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        say(f"---- {backend}: engine phase profile, by {order} (timings inflated by the profiler) ----")
        say(out.getvalue().rstrip())


def markdown(results: list[Result]) -> str:
    lines = [
        "| Backend | N | Engine (transitions/s) | Raw SQLAlchemy Core (transitions/s) | Engine / raw |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.n} | {r.engine_rate:.1f} | {r.raw_rate:.1f} | {r.ratio:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Confirm-transition throughput of the engine against a raw SQLAlchemy Core baseline."
    )
    parser.add_argument("--n", type=int, default=2000, help="transitions per timed phase (default 2000)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL,
        help="PostgreSQL URL whose database is used to create and drop the scratch database "
        "(default $MPOXFLOW_TEST_POSTGRES_URL or %(default)s)",
    )
    parser.add_argument(
        "--profile", type=int, nargs="?", const=30, default=0, metavar="TOP",
        help="profile the engine phase with cProfile and print the TOP (default 30) functions; "
        "the engine figure is then inflated by the profiler",
    )
    parser.add_argument("--log-level", default="warning", help="engine log level (default warning, as the CLI)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_cleanly_on_sigterm()

    import sqlalchemy

    from entry.logs import configure_logging

    # The engine logs every transition at info; like the CLI, keep warnings and above (on stderr).
    configure_logging(level=args.log_level)

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    say(
        f"mpoxflow transition benchmark: N={args.n}, Python {platform.python_version()}, "
        f"SQLAlchemy {sqlalchemy.__version__}, {os.cpu_count()} CPUs"
    )
    results = []
    try:
        for backend in backends:
            result = run_backend(backend, args.n, args.pg_url, args.profile)
            results.append(result)
            say(result.line())
    except BenchFailure as failure:
        print(f"bench/transitions.py: FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    say("")
    say(markdown(results))
    below = [r.backend for r in results if r.ratio < TARGET_RATIO]
    say("")
    say(
        f"target engine/raw >= {TARGET_RATIO}: "
        + (f"NOT met on {', '.join(below)}" if below else "met on " + ", ".join(r.backend for r in results))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
