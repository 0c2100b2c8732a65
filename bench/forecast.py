"""Dose-2 forecast: ``Engine.dose_forecast`` against the same GROUP BY written by hand, on SQLite and PostgreSQL.

    .venv/bin/python bench/forecast.py [--courses N] [--runs R] [--backend sqlite|postgresql|both] [--pg-url URL]

Per backend a scratch database (bench/harness.py) gets N courses in state ``dose1_given`` (``--courses``, default
100,000), each with its pending ``dose2_due`` timer, due on days drawn at random over the 10 weeks from today (the
clock's local date, a Monday before the change to summer time): copies (bench/seed.py, without their history: the
forecast reads none) of 70 courses the engine offered and gave dose 1, one per due day (made on a clock at each
dose 1, since a due day more than 28 days ahead means a dose 1 after today). On PostgreSQL the tables are then
``VACUUM ANALYZE``d, as autovacuum would. Then, timed, interleaved, median of R runs (``--runs``, default 9) after
one warm-up each:

* engine: ``Engine.dose_forecast(8)``: a read session, the repository's one grouped query, the 56 days with their
  counts;
* raw (the baseline): the same GROUP BY as plain SQL text on one held connection, and the same days from its rows;
* engine without the index: ``Engine.dose_forecast(8)`` after ``DROP INDEX ix_timers_forecast`` (migration 0004).

Checked (exit 1 otherwise): one entry per day for 56 days from today, each with the doses drawn for it, the total
equal to a separate COUNT; the raw result is the engine's.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.harness import ACTOR, BenchFailure, say  # noqa: E402
from bench.seed import Seeder, templates  # noqa: E402

#: A Monday morning in Copenhagen: "today" for the forecast. Its 8 weeks take in the change to summer time.
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
WEEKS = 8
#: Due days are drawn from this many days from today; the last 2 weeks fall outside the forecast.
SPREAD_DAYS = 70
INDEX = "ix_timers_forecast"
SEED = 20250303
RAW_SQL = ("SELECT due_at, count(*) AS doses_due FROM timers WHERE object_kind = 'course' AND name = 'dose2_due' "
           "AND status = 'pending' AND due_at >= :since AND due_at < :until GROUP BY due_at ORDER BY due_at")


def courses(at: Any) -> list[str]:
    """A PrEP course given dose 1 for each due day from today on: its person's ids."""
    from workflows.calendar import local_date, local_time_on

    made = []
    for day in range(SPREAD_DAYS):
        dose1_on = local_date(START) + timedelta(days=day - 28)
        engine = at(local_time_on(dose1_on, clock_time(9, 0)))
        made.append(engine.add_person(ref=f"BENCH-TEMPLATE-{day}", actor=ACTOR)["id"])
        course = engine.open("course", "offer", person=made[-1], actor=ACTOR, data={
            "indication": "prep", "contact": None, "criteria": ["msm_sti_24w"], "assessed_by": None,
            "criterion_on": dose1_on - timedelta(days=7)})["id"]
        at(local_time_on(dose1_on, clock_time(9, 20))).apply(course, "dose", actor=ACTOR, data={
            "on": dose1_on, "consent": False, "indication_note": None, "justification": None, "assessed_by": None})
    return made


def raw_forecast(db: Any) -> tuple[Any, Any]:
    """The baseline: ``(forecast(today), close())``, the GROUP BY as SQL text on one held connection."""
    from sqlalchemy import text

    from workflows.calendar import local_date, local_midnight

    sqlite = db.backend == "sqlite"
    connection = db.engine.connect()

    def bound(instant: datetime) -> Any:
        # SQLite holds instants as naive UTC text in SQLAlchemy's format; PostgreSQL as timestamptz.
        return instant.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else instant

    def forecast(today: date) -> list[dict[str, Any]]:
        days = [today + timedelta(days=i) for i in range(7 * WEEKS)]
        since, until = local_midnight(days[0]), local_midnight(days[-1] + timedelta(days=1))
        try:
            rows = connection.execute(text(RAW_SQL), {"since": bound(since), "until": bound(until)}).all()
        finally:
            connection.rollback()
        counts = dict.fromkeys(days, 0)
        for due_at, n in rows:
            counts[local_date(datetime.fromisoformat(due_at).replace(tzinfo=UTC) if sqlite else due_at)] += n
        return [{"date": day.isoformat(), "doses_due": n} for day, n in counts.items()]

    return forecast, connection.close


def check(what: str, forecast: list[dict[str, Any]], today: date, drawn: Counter[date], counted: int) -> None:
    """One entry per day for 8 weeks from today, each with the doses drawn for it; the total is ``counted``."""
    expected = [{"date": (today + timedelta(days=i)).isoformat(), "doses_due": drawn[today + timedelta(days=i)]}
                for i in range(7 * WEEKS)]
    if forecast != expected or sum(e["doses_due"] for e in forecast) != counted:
        wrong = [(got, want) for got, want in zip(forecast, expected, strict=False) if got != want]
        raise BenchFailure(f"{what}: {len(forecast)} days, the first wrong {wrong[:3]}; COUNT finds {counted}")


def run_backend(backend: str, args: Any, units: list[Any], table: harness.Table) -> None:
    from sqlalchemy import func, select, text

    from engine.clock import SimulatedClock
    from engine.core import Engine
    from persistence.models import Timer
    from workflows.calendar import local_date, local_midnight

    today = local_date(START)
    rng = random.Random(SEED)
    drawn = [rng.randrange(SPREAD_DAYS) for _ in range(args.courses)]
    due_days = Counter(today + timedelta(days=day) for day in drawn)
    with harness.fresh(backend, args.pg_url, start=START) as db:
        Seeder(db).add((units[day] for day in drawn), history=False)
        harness.settle(db)
        engine = Engine(db, SimulatedClock(START))
        with db.engine.connect() as connection:
            counted = connection.scalar(select(func.count()).where(
                Timer.object_kind == "course", Timer.name == "dose2_due", Timer.status == "pending",
                Timer.due_at >= local_midnight(today), Timer.due_at < local_midnight(today + timedelta(weeks=WEEKS))))
        forecast, close = raw_forecast(db)
        try:
            expected = engine.dose_forecast(WEEKS)  # warm-up: compiled statement, pool, caches
            check("engine", expected, today, due_days, counted)
            times: dict[str, list[float]] = {"engine": [], "raw": [], "unindexed": []}
            runs = {"engine": lambda: engine.dose_forecast(WEEKS), "raw": lambda: forecast(today)}
            runs["raw"]()
            for _ in range(args.runs):
                for name, call in runs.items():
                    seconds, result = harness.timed(call)
                    times[name].append(seconds)
                    if result != expected:
                        raise BenchFailure(f"{name}: {result[:3]}... is not the forecast {expected[:3]}...")
        finally:
            close()
        with db.engine.begin() as connection:
            connection.execute(text(f"DROP INDEX {INDEX}"))
        harness.settle(db)
        check(f"engine without {INDEX}", engine.dose_forecast(WEEKS), today, due_days, counted)
        for _ in range(args.runs):
            seconds, result = harness.timed(runs["engine"])
            times["unindexed"].append(seconds)
            if result != expected:
                raise BenchFailure(f"the engine without {INDEX} gives another forecast")
    engine_ms, raw_ms, unindexed_ms = (1000 * harness.median(times[name]) for name in times)
    say(f"{backend:<11} engine {engine_ms:8.2f} ms   raw {raw_ms:8.2f} ms   without {INDEX} {unindexed_ms:8.2f} ms  "
        f"(median of {args.runs}; {args.courses} courses, {counted} doses due in {WEEKS} weeks)")
    harness.ratio("raw/engine time", backend, raw_ms / engine_ms)
    table.add(backend, args.courses, counted, f"{engine_ms:.2f}", f"{raw_ms:.2f}", f"{raw_ms / engine_ms:.2f}",
              f"{unindexed_ms:.2f}")


def run(args: Any) -> list[harness.Table]:
    from workflows.calendar import local_date

    units = templates(courses, [ACTOR])
    for day, unit in enumerate(units):
        due = [local_date(t["due_at"]) for t in unit.timers if t["status"] == "pending"]
        if unit.state != "dose1_given" or due != [local_date(START) + timedelta(days=day)]:
            raise BenchFailure(f"the course for day {day} is {unit.state}, dose 2 due on {due}")
    table = harness.Table(["Backend", "Courses", f"Doses due in {WEEKS} weeks", "Engine (ms)", "Raw SQL (ms)",
                           "Raw / engine", f"Without `{INDEX}` (ms)"])
    for backend in harness.backends(args):
        run_backend(backend, args, units, table)
    return [table]


if __name__ == "__main__":
    options = harness.parser("Dose-2 forecast: Engine.dose_forecast against the same GROUP BY as plain SQL text.")
    options.add_argument("--courses", type=int, default=100_000, help="courses with a dose 2 due (default 100000)")
    options.add_argument("--runs", type=int, default=9, help="timed runs of each, median reported (default 9)")
    arguments = options.parse_args()
    harness.at_least(arguments, options, courses=1, runs=1)
    sys.exit(harness.main("forecast", arguments, run))
