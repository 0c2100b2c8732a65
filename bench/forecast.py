"""Dose-2 forecast: ``Engine.dose_forecast`` against the same GROUP BY written by hand, on SQLite and PostgreSQL.

    .venv/bin/python bench/forecast.py [--courses N] [--runs R] [--backend sqlite|postgresql|both] [--pg-url URL]

For each backend a fresh database is made (SQLite: a file in a temporary directory; PostgreSQL: a scratch
database ``mpoxflow_bench_<pid>``, dropped at the end even on error) and migrated. It is filled (not timed) with
N courses in state ``dose1_given``, each with its pending ``dose2_due`` timer, due on days spread at random over
the 10 weeks from today (the clock's local date): one course through the engine, the reference, and N-1 in bulk
with SQLAlchemy Core, each a ``persons``, a ``courses`` and a ``timers`` row built exactly as the engine builds
them after dose 1 (checked against the reference; the audit entries, which the forecast never reads, are left
out, and with them the audit-chain heads of the persons and courses rows, left empty). The reference is made by
the user ``bench`` (staff), registered by the database's first admin ``bench:admin`` (``Engine.bootstrap_users``,
as ``mpoxflow init`` does). A due day more than 28 days ahead means a dose 1 after today, which the engine
refuses: the bulk rows are the engine's rows for those dates regardless, so that the 8-week window is full and
some timers fall outside it.
On PostgreSQL the tables are then ``VACUUM ANALYZE``d, as autovacuum would; SQLite is left as the product leaves it.

Then, timed, interleaved, median of R runs after one warm-up each:

* engine: ``Engine.dose_forecast(8)``: a read session, the repository's one grouped query, and the days from
  today for 8 weeks with their counts;
* raw: the same GROUP BY as plain SQL text on one held connection, and the same list of days made from its rows;
* engine without the index: ``Engine.dose_forecast(8)`` again after ``DROP INDEX ix_timers_forecast``, to show
  what the index (migration 0004) is for.

Checks, any failure exits with status 1: the forecast's total equals the number of pending dose-2 timers due in
the 8 weeks, counted by a separate COUNT query and from the generated data, day by day as generated; it has one
entry per day for 56 consecutive days from today; the raw baseline's result is the engine's; the bulk rows are the
engine's rows (the audit heads aside).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
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

from bench.common import DEFAULT_PG_URL, BenchFailure, exit_cleanly_on_sigterm, say, scratch_url  # noqa: E402

#: A Monday morning in Copenhagen: "today" for the forecast. Its 8 weeks take in the change to summer time.
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
WEEKS = 8
#: Due days are spread over this many days from today; the last 2 weeks fall outside the forecast.
SPREAD_DAYS = 70
BATCH = 10_000
INDEX = "ix_timers_forecast"
SEED = 20250303
#: The database's first admin (who registers the actor) and the actor of the reference course (a staff user).
ADMIN = "bench:admin"
ACTOR = "bench"
#: The audit-chain head every persons and courses row keeps; the bulk rows have no audit entries, so no head.
HEAD_COLUMNS = ("audit_pos", "audit_seq", "audit_hash")

RAW_SQL = (
    "SELECT due_at, count(*) AS doses_due FROM timers "
    "WHERE object_kind = 'course' AND name = 'dose2_due' AND status = 'pending' "
    "AND due_at >= :since AND due_at < :until "
    "GROUP BY due_at ORDER BY due_at"
)


@dataclass
class Result:
    backend: str
    courses: int
    in_window: int
    runs: int
    engine_seconds: float
    raw_seconds: float
    unindexed_seconds: float

    @property
    def ratio(self) -> float:
        """Engine speed over raw speed (= raw time / engine time): 1.0 is no overhead at all."""
        return self.raw_seconds / self.engine_seconds

    @property
    def index_gain(self) -> float:
        return self.unindexed_seconds / self.engine_seconds

    def line(self) -> str:
        return (
            f"{self.backend:<11} engine {1000 * self.engine_seconds:8.2f} ms   raw {1000 * self.raw_seconds:8.2f} ms   "
            f"engine/raw {self.ratio:4.2f}   engine without {INDEX} {1000 * self.unindexed_seconds:8.2f} ms "
            f"({self.index_gain:.1f}x slower)  (median of {self.runs}; {self.courses} courses, "
            f"{self.in_window} doses due in {WEEKS} weeks)"
        )



# ---- the rows the engine writes for a course after dose 1 ------------------------------------------------------


def course_rows(
    ref: str, dose1_on: date, offered_at: datetime, dosed_at: datetime, settings: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``persons``, ``courses`` and ``timers`` rows (without ids and links) of a person registered and offered
    PrEP at ``offered_at`` and given dose 1 on ``dose1_on``, recorded at ``dosed_at``: what ``Engine.add_person``,
    ``open("course", "offer")`` and ``apply(course, "dose")`` leave, by the workflow's own pure rules."""
    from workflows.course import COURSE, DOSE_INTERVAL_DAYS, S6_4, dose2_due, dose2_overdue_at, dose_plan
    from workflows.person import PersonFacts

    doses, plan_rule, plan_reason = dose_plan(PersonFacts())
    due = dose2_due(dose1_on)
    person = {
        "ref": ref, "born": None, "immunocompromised": False, "pregnant": False, "breastfeeding": False,
        "previous_mpox": False, "smallpox_vaccinated": False, "doses_elsewhere": 0, "last_dose_elsewhere_on": None,
        "created_at": offered_at,
    }
    course = {
        "state": "dose1_given", "workflow": COURSE.name, "version": 2, "created_at": offered_at,
        "updated_at": dosed_at, "contact_id": None, "indication": "prep", "doses_planned": doses,
        "plan_rule": plan_rule, "plan_reason": plan_reason, "criteria": ["msm_sti_24w"], "assessed_by": None,
        "exposure_on": None, "dose1_on": dose1_on, "dose2_on": None, "consent": None, "dose_assessments": [],
        "ended_because": None, "assessment_note": None, "criterion_on": dose1_on - timedelta(days=7),
        "prior_doses": 0, "prior_last_dose_on": None, "lapsed_at": None, "special_reason": None,
    }
    timer = {
        "object_kind": "course", "name": "dose2_due", "due_at": due, "rule": S6_4,
        "task": f"give dose 2 (from {dose1_on + timedelta(days=DOSE_INTERVAL_DAYS)})",
        "overdue_at": dose2_overdue_at(dose1_on, settings.dose2_overdue_after), "status": "pending",
        "attempts": 0, "next_attempt_at": None, "last_error": None, "armed_at": dosed_at,
        "closed_at": None, "satisfied_at": None, "note": None, "outcome": None, "resolved_at": None,
        "resolution": None,
    }
    return person, course, timer


# ---- set-up (not timed) -------------------------------------------------------------------------------------------


def reference_course(engine: Any, dose1_on: date) -> int:
    """One course through the engine, given dose 1 on ``dose1_on``; its pk."""
    from persistence.repository import parse_id

    engine.bootstrap_users(ADMIN)
    engine.add_user(ACTOR, "staff", actor=ADMIN)
    person = engine.add_person(ref="BENCH-REF", actor=ACTOR)["id"]
    course = engine.open("course", "offer", person=person, actor=ACTOR, data={
        "indication": "prep", "contact": None, "criteria": ["msm_sti_24w"], "assessed_by": None,
        "criterion_on": dose1_on - timedelta(days=7)})["id"]
    view = engine.apply(course, "dose", actor=ACTOR, data={
        "on": dose1_on, "consent": False, "indication_note": None, "justification": None, "assessed_by": None})
    if view["state"] != "dose1_given":
        raise BenchFailure(f"the reference course is {view['state']}, not dose1_given")
    return parse_id(course)[1]


def verify_equivalent(db: Any, pk: int, dose1_on: date, settings: Any) -> None:
    """``course_rows`` builds what the engine wrote for the reference course (ids, links and audit heads aside:
    the bulk rows have no audit entries)."""
    from sqlalchemy import select

    from persistence.models import Course, Person, Timer

    courses, persons, timers = Course.__table__, Person.__table__, Timer.__table__
    with db.engine.connect() as connection:
        course = dict(connection.execute(select(courses).where(courses.c.id == pk)).one()._mapping)
        person = dict(connection.execute(select(persons).where(persons.c.id == course["person_id"])).one()._mapping)
        armed = [dict(r._mapping) for r in connection.execute(
            select(timers).where(timers.c.object_kind == "course", timers.c.object_id == pk))]
    for row, keys in ((course, ("id", "person_id", *HEAD_COLUMNS)), (person, ("id", *HEAD_COLUMNS)),
                      *((t, ("id", "object_id")) for t in armed)):
        for key in keys:
            row.pop(key)
    expected = course_rows(person["ref"], dose1_on, course["created_at"], course["updated_at"], settings)
    found = (person, course, armed[0] if len(armed) == 1 else armed)
    wrong = [f"{table}: engine {got!r} != bulk {want!r}"
             for table, got, want in zip(("persons", "courses", "timers"), found, expected, strict=True)
             if got != want]
    if wrong:
        raise BenchFailure("the bulk rows are not what the engine writes: " + "; ".join(wrong))


def fill(db: Any, count: int, today: date, settings: Any) -> Counter[date]:
    """``count`` courses given dose 1, in bulk with SQLAlchemy Core, in one transaction; their due days."""
    from sqlalchemy import Table, insert

    from persistence.models import Course, Person, Timer
    from workflows.calendar import local_time_on
    from workflows.course import DOSE_INTERVAL_DAYS

    persons, courses, timers = (cast(Table, model.__table__) for model in (Person, Course, Timer))
    insert_persons = insert(persons).returning(persons.c.id, sort_by_parameter_order=True)
    insert_courses = insert(courses).returning(courses.c.id, sort_by_parameter_order=True)
    insert_timers = insert(timers)
    rng = random.Random(SEED)
    due_days: Counter[date] = Counter()
    with db.engine.begin() as connection:
        for start in range(0, count, BATCH):
            rows = []
            for i in range(start, min(start + BATCH, count)):
                due_day = today + timedelta(days=rng.randrange(SPREAD_DAYS))
                dose1_on = due_day - timedelta(days=DOSE_INTERVAL_DAYS)
                rows.append(course_rows(
                    f"BENCH-{i}", dose1_on, local_time_on(dose1_on, clock_time(9, 0)),
                    local_time_on(dose1_on, clock_time(9, 20)), settings,
                ))
                due_days[due_day] += 1
            person_ids = connection.execute(insert_persons, [p for p, _, _ in rows]).scalars().all()
            course_ids = connection.execute(
                insert_courses, [{**c, "person_id": pk} for (_, c, _), pk in zip(rows, person_ids, strict=True)]
            ).scalars().all()
            connection.execute(
                insert_timers, [{**t, "object_id": pk} for (_, _, t), pk in zip(rows, course_ids, strict=True)]
            )
    return due_days


def settle(db: Any) -> None:
    """PostgreSQL: statistics and the visibility map up to date, as autovacuum leaves them."""
    if db.backend != "postgresql":
        return
    from sqlalchemy import text

    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("persons", "courses", "timers"):
            connection.execute(text(f"VACUUM ANALYZE {table}"))


# ---- the timed phases --------------------------------------------------------------------------------------------


def make_raw_forecast(db: Any) -> tuple[Callable[[date], list[dict[str, Any]]], Callable[[], None]]:
    """The forecast by hand: plain SQL text on one held connection (each run its own transaction), and the same
    days made from the rows. Returns ``(forecast(today), close())``."""
    from sqlalchemy import text

    from workflows.calendar import local_date, local_midnight

    statement = text(RAW_SQL)
    sqlite = db.backend == "sqlite"
    connection = db.engine.connect()

    def bound(instant: datetime) -> Any:
        # SQLite holds instants as naive UTC text in SQLAlchemy's format; PostgreSQL as timestamptz.
        return instant.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else instant

    def forecast(today: date) -> list[dict[str, Any]]:
        days = [today + timedelta(days=i) for i in range(7 * WEEKS)]
        since, until = local_midnight(days[0]), local_midnight(days[-1] + timedelta(days=1))
        try:
            rows = connection.execute(statement, {"since": bound(since), "until": bound(until)}).all()
        finally:
            connection.rollback()
        counts = dict.fromkeys(days, 0)
        for due_at, n in rows:
            instant = datetime.fromisoformat(due_at).replace(tzinfo=UTC) if sqlite else due_at
            counts[local_date(instant)] += n
        return [{"date": day.isoformat(), "doses_due": n} for day, n in counts.items()]

    return forecast, connection.close


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


# ---- checks ----------------------------------------------------------------------------------------------------


def count_in_window(db: Any, today: date) -> int:
    """Pending dose-2 timers due in the 8 weeks from today, by a plain COUNT (no grouping, no days)."""
    from sqlalchemy import func, select

    from persistence.models import Timer
    from workflows.calendar import local_midnight

    since, until = local_midnight(today), local_midnight(today + timedelta(weeks=WEEKS))
    with db.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Timer).where(
            Timer.object_kind == "course", Timer.name == "dose2_due", Timer.status == "pending",
            Timer.due_at >= since, Timer.due_at < until,
        )) or 0)


def verify_forecast(what: str, forecast: list[dict[str, Any]], today: date, due_days: Counter[date],
                    counted: int) -> None:
    """One entry per day for 8 weeks from today, each with the doses generated for it; the total is ``counted``."""
    days = [(today + timedelta(days=i)).isoformat() for i in range(7 * WEEKS)]
    if [entry["date"] for entry in forecast] != days:
        raise BenchFailure(f"{what}: the days are not the {len(days)} days from {today}: "
                           f"{[entry['date'] for entry in forecast][:3]}... ({len(forecast)} entries)")
    total = sum(entry["doses_due"] for entry in forecast)
    if total != counted:
        raise BenchFailure(f"{what}: the forecast's total {total} != {counted} timers due in {WEEKS} weeks")
    wrong = [f"{e['date']}: {e['doses_due']} (expected {due_days[date.fromisoformat(e['date'])]})"
             for e in forecast if e["doses_due"] != due_days[date.fromisoformat(e["date"])]]
    if wrong:
        raise BenchFailure(f"{what}: wrong counts on {len(wrong)} days: " + ", ".join(wrong[:5]))


# ---- one backend ---------------------------------------------------------------------------------------------------


def run_backend(backend: str, courses: int, runs: int, pg_url: str) -> Result:
    from sqlalchemy import text

    from engine.clock import SimulatedClock
    from engine.core import Engine
    from persistence.database import Database
    from workflows.calendar import local_date

    with scratch_url(backend, pg_url) as url:
        db = Database(url)
        try:
            db.upgrade()
            clock = SimulatedClock(START)
            engine = Engine(db, clock)
            today = local_date(clock.now())

            started = time.perf_counter()
            reference_dose1 = today - timedelta(days=1)
            pk = reference_course(engine, reference_dose1)
            verify_equivalent(db, pk, reference_dose1, engine.settings)
            due_days = fill(db, courses - 1, today, engine.settings)
            due_days[reference_dose1 + timedelta(days=28)] += 1
            settle(db)
            say(f"{backend}: {courses} courses with a pending dose-2 timer made in "
                f"{time.perf_counter() - started:.1f} s (not timed)")

            generated = sum(n for day, n in due_days.items() if today <= day < today + timedelta(weeks=WEEKS))
            counted = count_in_window(db, today)
            if counted != generated:
                raise BenchFailure(f"COUNT finds {counted} timers due in {WEEKS} weeks, {generated} were made")

            raw_forecast, close = make_raw_forecast(db)
            try:
                engine_times, raw_times = [], []
                expected = engine.dose_forecast(WEEKS)  # warm-up: compiled statement, pool, caches
                raw_forecast(today)
                for _ in range(runs):
                    seconds, result = timed(lambda: engine.dose_forecast(WEEKS))
                    engine_times.append(seconds)
                    if result != expected:
                        raise BenchFailure("engine: the forecast changed between runs")
                    seconds, result = timed(lambda: raw_forecast(today))
                    raw_times.append(seconds)
                    if result != expected:
                        raise BenchFailure(f"raw: {result[:3]}... != engine {expected[:3]}...")
            finally:
                close()
            verify_forecast("engine", expected, today, due_days, counted)

            with db.engine.begin() as connection:
                connection.execute(text(f"DROP INDEX {INDEX}"))
            settle(db)
            unindexed = engine.dose_forecast(WEEKS)
            unindexed_times = []
            for _ in range(runs):
                seconds, result = timed(lambda: engine.dose_forecast(WEEKS))
                unindexed_times.append(seconds)
                if result != unindexed:
                    raise BenchFailure("engine without the index: the forecast changed between runs")
            verify_forecast(f"engine without {INDEX}", unindexed, today, due_days, counted)

            return Result(backend, courses, counted, runs, statistics.median(engine_times),
                          statistics.median(raw_times), statistics.median(unindexed_times))
        finally:
            db.dispose()


def markdown(results: list[Result]) -> str:
    lines = [
        f"| Backend | Courses | Doses due in {WEEKS} weeks | Engine `dose_forecast({WEEKS})` (ms) | "
        f"Raw SQL text (ms) | Engine / raw speed | Engine without `{INDEX}` (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.courses} | {r.in_window} | {1000 * r.engine_seconds:.2f} | "
            f"{1000 * r.raw_seconds:.2f} | {r.ratio:.2f} | {1000 * r.unindexed_seconds:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Dose-2 forecast: Engine.dose_forecast against the same GROUP BY as plain SQL text."
    )
    parser.add_argument("--courses", type=int, default=100_000,
                        help="courses with a pending dose-2 timer (default 100000)")
    parser.add_argument("--runs", type=int, default=9, help="timed runs of each, median reported (default 9)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL,
        help="PostgreSQL URL whose database is used to create and drop the scratch database "
        "(default $MPOXFLOW_TEST_POSTGRES_URL or %(default)s)",
    )
    parser.add_argument("--log-level", default="warning", help="engine log level (default warning, as the CLI)")
    args = parser.parse_args(argv)
    if args.courses < 1:
        parser.error("--courses must be at least 1")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_cleanly_on_sigterm()

    import sqlalchemy

    from entry.logs import configure_logging

    configure_logging(level=args.log_level)

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    say(
        f"mpoxflow dose-2 forecast benchmark: {args.courses} courses, {WEEKS} weeks from {START.date()}, "
        f"median of {args.runs}, Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    results = []
    try:
        for backend in backends:
            result = run_backend(backend, args.courses, args.runs, args.pg_url)
            results.append(result)
            say(result.line())
    except BenchFailure as failure:
        print(f"bench/forecast.py: FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    say("")
    say(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
