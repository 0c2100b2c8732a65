"""The dose-2 forecast: pending ``dose2_due`` timers of courses per Danish calendar day, on both backends."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from engine.clock import SimulatedClock
from engine.core import Engine
from persistence.database import Database
from persistence.repository import Repository
from tests.helpers import confirmed, person
from workflows.calendar import local_midnight
from workflows.errors import UsageError

TODAY = date(2025, 3, 3)  # the clock's START, a Monday; summer time begins on Sunday 30 March 2025

_refs = iter(range(1_000_000))


def offered(engine: Engine, **flags: Any) -> str:
    """A PrEP course offered to a new person."""
    pid = person(engine, f"REF-{next(_refs)}", **flags)
    view = engine.open("course", "offer", person=pid, actor="staff:test", data={
        "indication": "prep", "contact": None, "criteria": ["msm_sti_24w"], "assessed_by": None,
        "criterion_on": engine.clock.now().date() - timedelta(days=7)})  # §6.1: within 24 weeks
    return str(view["id"])


def dose(engine: Engine, course_id: str, on: date) -> dict[str, Any]:
    return engine.apply(course_id, "dose", actor="staff:test", data={
        "on": on, "consent": False, "indication_note": None, "justification": None, "assessed_by": None})


def dose1(engine: Engine, on: date, **flags: Any) -> str:
    """A course given dose 1 on ``on``: its dose2_due timer falls due at 00:00 local on ``on`` + 28 days."""
    course_id = offered(engine, **flags)
    assert dose(engine, course_id, on)["state"] == "dose1_given"
    return course_id


def dose2_timer(engine: Engine, course_id: str) -> dict[str, Any]:
    timers: list[dict[str, Any]] = [t for t in engine.show(course_id)["timers"] if t["name"] == "dose2_due"]
    [timer] = timers
    return timer


def expected(start: date, days: int, counts: dict[str, int]) -> list[dict[str, Any]]:
    every = [(start + timedelta(days=i)).isoformat() for i in range(days)]
    assert set(counts) <= set(every)
    return [{"date": day, "doses_due": counts.get(day, 0)} for day in every]


def test_doses_due_per_danish_day_across_the_change_to_summer_time(engine: Engine) -> None:
    dose1(engine, date(2025, 2, 2))  # due yesterday, 2 March, and still pending: before the forecast
    for _ in range(2):
        dose1(engine, date(2025, 2, 3))  # due today at 00:00, not fired yet
    dose1(engine, date(2025, 3, 1))  # Saturday 29 March, 00:00 CET = 28 March 23:00 UTC
    for _ in range(3):
        dose1(engine, date(2025, 3, 2))  # Sunday 30 March, a 23-hour day: 00:00 CET = 29 March 23:00 UTC
    dose1(engine, date(2025, 3, 3))  # Monday 31 March, 00:00 CEST = 30 March 22:00 UTC

    forecast = engine.dose_forecast()

    assert forecast == expected(TODAY, 56, {"2025-03-03": 2, "2025-03-29": 1, "2025-03-30": 3, "2025-03-31": 1})
    assert forecast[-1]["date"] == "2025-04-27"
    # 4 weeks end with Sunday 30 March: the doses due on Monday 31 March fall outside.
    assert engine.dose_forecast(4) == expected(TODAY, 28, {"2025-03-03": 2, "2025-03-29": 1, "2025-03-30": 3})


def test_doses_due_per_danish_day_across_the_change_back_to_winter_time(
    engine: Engine, clock: SimulatedClock
) -> None:
    clock.set(datetime.fromisoformat("2025-10-01T08:00:00+02:00"))
    dose1(engine, date(2025, 9, 27))  # Saturday 25 October, 00:00 CEST = 24 October 22:00 UTC
    for _ in range(2):
        dose1(engine, date(2025, 9, 28))  # Sunday 26 October, a 25-hour day: 00:00 CEST = 25 October 22:00 UTC
    dose1(engine, date(2025, 9, 29))  # Monday 27 October, 00:00 CET = 26 October 23:00 UTC

    assert engine.dose_forecast(8) == expected(
        date(2025, 10, 1), 56, {"2025-10-25": 1, "2025-10-26": 2, "2025-10-27": 1}
    )


def test_only_pending_dose2_timers_of_courses_are_counted(engine: Engine, clock: SimulatedClock) -> None:
    fired = dose1(engine, date(2025, 2, 3))  # due today at 00:00
    timer = dose2_timer(engine, fired)
    [outcome] = engine.fire_due()  # the only timer due yet
    assert (outcome.timer, outcome.status) == (timer["id"], "fired")
    given = dose1(engine, date(2025, 2, 3))
    dose(engine, given, TODAY)  # dose 2 given today: its dose2_due timer is cancelled
    declined = dose1(engine, date(2025, 2, 20))  # due 20 March
    engine.apply(declined, "decline", actor="staff:test")
    dose1(engine, date(2025, 2, 20))  # due 20 March, pending: the one counted
    one_dose = offered(engine, born=date(1960, 5, 1))  # born by 1970: a one-dose plan, no dose 2
    assert dose(engine, one_dose, TODAY)["state"] == "completed"
    offered(engine)  # no dose yet, so no dose-2 timer
    confirmed(engine, person(engine, "REF-CASE"))  # a case's pending notification timers are due this week

    assert [dose2_timer(engine, c)["status"] for c in (fired, given, declined)] == ["fired", "cancelled", "cancelled"]
    assert engine.dose_forecast() == expected(TODAY, 56, {"2025-03-20": 1})


def test_an_empty_forecast_lists_every_day_with_zero(engine: Engine, clock: SimulatedClock) -> None:
    clock.set(datetime.fromisoformat("2025-03-29T23:30:00+01:00"))  # late on Saturday: still the 29th locally
    assert engine.dose_forecast(1) == expected(date(2025, 3, 29), 7, {})


def test_the_forecast_is_one_query(engine: Engine, db: Database) -> None:
    dose1(engine, date(2025, 2, 10))
    dose1(engine, date(2025, 2, 11))
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        forecast = engine.dose_forecast()
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)

    assert forecast == expected(TODAY, 56, {"2025-03-10": 1, "2025-03-11": 1})
    assert len(statements) == 1
    assert "GROUP BY timers.due_at" in statements[0]


def test_the_repository_counts_by_due_instant_in_a_half_open_range(engine: Engine, db: Database) -> None:
    for on in (date(2025, 2, 3), date(2025, 3, 2), date(2025, 3, 2), date(2025, 3, 3)):
        dose1(engine, on)

    with db.reading() as session:
        due = Repository(session).timer_forecast("course", "dose2_due", local_midnight(TODAY),
                                                 local_midnight(date(2025, 3, 31)))

    assert due == [(local_midnight(TODAY), 1), (local_midnight(date(2025, 3, 30)), 2)]
    assert due[1][0] == datetime.fromisoformat("2025-03-29T23:00:00+00:00")
    assert all(instant.utcoffset() == timedelta(0) for instant, _ in due)


@pytest.mark.parametrize("weeks", [0, -1])
def test_the_forecast_needs_a_week_or_more(engine: Engine, weeks: int) -> None:
    with pytest.raises(UsageError, match="weeks"):
        engine.dose_forecast(weeks)
