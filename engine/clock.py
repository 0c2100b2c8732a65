"""The clock is injected wherever time is read. ``SystemClock`` is the only place real time is asked for;
``SimulatedClock`` moves only when told to (training databases, the demo, tests), and ``simulated`` is how a
caller that moves it gets hold of it. A simulated clock's now is kept in the database
(``UnitOfWork.save_clock``), so every process on the database shares it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from workflows.calendar import to_local
from workflows.errors import UsageError


class Clock(Protocol):
    #: True for a clock that moves only when told to.
    simulated: bool

    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    """Real time."""

    simulated = False

    def now(self) -> datetime:
        return datetime.now(UTC)


class SimulatedClock:
    """A clock that moves only when told to: for training, demos and tests."""

    simulated = True

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise UsageError(f"the simulated clock needs an instant with a timezone offset, not {start.isoformat()}")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        """Move to ``instant``; the clock never goes backwards."""
        if instant < self._now:
            raise UsageError(
                f"the simulated clock only moves forward: it is {to_local(self._now).isoformat()}, "
                f"and {to_local(instant).isoformat()} is earlier"
            )
        self._now = instant.astimezone(UTC)


def simulated(clock: Clock) -> SimulatedClock:
    """``clock`` itself when it can be moved. Raises UsageError on real time (a database's clock is chosen once,
    when it is made)."""
    if not isinstance(clock, SimulatedClock):
        raise UsageError(
            "this database runs on real time, so its clock cannot be moved: "
            "make a training database with `mpoxflow init ⟦simulated_clock⟧`"
        )
    return clock
