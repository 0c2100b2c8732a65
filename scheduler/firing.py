"""The firing loop every clock shares: fire each due timer at its own instant, in due order, through the
engine's one transition path (actor ``timer:<name>``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from engine.core import Engine
from engine.firing import Fired, RetryPolicy
from engine.views import instant
from workflows.calendar import to_local
from workflows.errors import UsageError
from workflows.limits import MAX_DAYS, MAX_HOURS, check_count, check_instant


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


def fired_view(f: Fired) -> dict[str, Any]:
    return {
        "timer": f.timer, "name": f.name, "object": f.object, "due_at": instant(f.due_at),
        "fired_at": instant(f.fired_at), "status": f.status, "from": f.from_state, "to": f.to_state,
        "audit_seq": f.audit_seq, "note": f.note,
    }


def clock_advance(engine: Engine, actor: str, *, to: datetime | None = None, days: int | None = None,
                  hours: int | None = None) -> dict[str, Any]:
    """``clock advance`` as the CLI and the HTTP API run it: exactly one of ``to``, ``days`` (Danish calendar
    days: the same local time of day, 23 or 25 hours across a daylight-saving change) or ``hours``; the actor
    must be allowed to change things (a refusal is audited)."""
    given = [x for x in (to, days, hours) if x is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of ⟦to⟧, ⟦days⟧, ⟦hours⟧")
    now = engine.simulated_clock.now()
    engine.check_definitions_loaded()  # as the worker: no timer of an object whose definition is not loaded fires
    if (days or 0) < 0 or (hours or 0) < 0:
        raise UsageError("the simulated clock only moves forward: give a positive number")
    check_count(days, "⟦days⟧", low=0, high=MAX_DAYS)
    check_count(hours, "⟦hours⟧", low=0, high=MAX_HOURS)
    if to is not None:
        target = to
    elif days is not None:
        target = to_local(now) + timedelta(days=days)
    else:
        target = now + timedelta(hours=hours or 0)
    # No further than the latest instant mpoxflow accepts: no timer's due instant can overflow.
    check_instant(target, "⟦to⟧" if to is not None else "the clock's new time")
    # Asked once the input is known good: a malformed command is a usage error, not an audited refusal.
    engine.authorize(actor, "clock advance")
    fired = advance_simulated_clock(engine, target)
    return {"now": instant(engine.clock.now()), "fired": [fired_view(f) for f in fired]}
