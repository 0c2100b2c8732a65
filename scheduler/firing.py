"""The firing loop every clock shares: fire each due timer at its own instant, in due order, through the
engine's one transition path (actor ``timer:<name>``)."""

from __future__ import annotations

from datetime import datetime

from engine.core import Engine, Fired


def fire_due(engine: Engine, until: datetime) -> list[Fired]:
    """Fire every timer due by ``until`` at the clock's current now, earliest first (the real-time path)."""
    fired: list[Fired] = []
    while (due := engine.next_due(until)) is not None:
        outcome = engine.fire_timer(due[0])
        if outcome is not None:
            fired.append(outcome)
    return fired


def advance_simulated_clock(engine: Engine, to: datetime) -> list[Fired]:
    """Move a simulated clock to ``to``, stopping at each timer's due instant to fire it there, in due order.
    Timers armed by a firing are fired too when they fall due before ``to``. Raises UsageError on a real-time
    clock or when ``to`` lies in the clock's past."""
    clock = engine.simulated_clock
    if to < clock.now():
        clock.set(to)  # raises: the clock only moves forward
    fired: list[Fired] = []
    while (due := engine.next_due(to)) is not None:
        timer_id, due_at = due
        if due_at > clock.now():
            clock.set(due_at)
        outcome = engine.fire_timer(timer_id)
        if outcome is not None:
            fired.append(outcome)
    clock.set(to)
    engine.save_clock()
    return fired
