"""Danish calendar arithmetic: dates are local to Europe/Copenhagen, instants are UTC.

A window of N days from date D closes at 00:00 local on D+N+1 (RULES.md, "Time, for every timer").
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DANISH = ZoneInfo("Europe/Copenhagen")


def local_midnight(day: date) -> datetime:
    """00:00 local time on ``day``, as a UTC instant."""
    return datetime.combine(day, time(0, 0), tzinfo=DANISH).astimezone(UTC)


def window_closes(day: date, days: int) -> datetime:
    """The instant a window of ``days`` full days after ``day`` closes: 00:00 local on day + days + 1, in UTC."""
    return local_midnight(day + timedelta(days=days + 1))


def local_date(instant: datetime) -> date:
    """The Danish calendar date of a (timezone-aware) instant."""
    return instant.astimezone(DANISH).date()


def local_time_on(day: date, at: time) -> datetime:
    """The UTC instant of local wall-clock time ``at`` on ``day``."""
    return datetime.combine(day, at, tzinfo=DANISH).astimezone(UTC)


def to_local(instant: datetime) -> datetime:
    """The instant in Danish local time, for printing (``2025-03-23T00:00:00+01:00``)."""
    return instant.astimezone(DANISH)
