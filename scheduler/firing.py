"""The firing loop every clock shares: fire each due timer at its own instant, in due order, through the
engine's one transition path (actor ``timer:<name>``)."""

from __future__ import annotations

from datetime import datetime

from engine.core import Engine, Fired, RetryPolicy


def fire_ready(engine: Engine, *, batch: int = 100, policy: RetryPolicy | None = None) -> list[Fired]:
    """Fire every timer ready at the clock's now, earliest first, batch by batch, until none is left."""
    fired: list[Fired] = []
    while True:
        done = engine.fire_due(limit=batch, policy=policy)
        fired.extend(done)
        if len(done) < batch and not _ready(engine):
            return fired


def _ready(engine: Engine) -> bool:
    return engine.next_due(engine.clock.now()) is not None


def advance_simulated_clock(engine: Engine, to: datetime, *, policy: RetryPolicy | None = None) -> list[Fired]:
    """Move a simulated clock to ``to``, stopping at each timer's due instant to fire it there, in due order.
    Timers armed by a firing are fired too when they fall due before ``to``; a failing timer is retried at its
    backoff instants until parked. Raises UsageError on a real-time clock or when ``to`` lies in the past."""
    clock = engine.simulated_clock
    if to < clock.now():
        clock.set(to)  # raises: the clock only moves forward
    fired: list[Fired] = []
    while (due_at := engine.next_due(to)) is not None:
        if due_at > clock.now():
            clock.set(due_at)
        fired.extend(engine.fire_due(limit=100, policy=policy))
    clock.set(to)
    engine.save_clock()
    return fired
