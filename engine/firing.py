"""Timer firing and retries: claim the timers that are due, fire each through the command path's one transition,
record what could not fire, and retry a firing that raised with backoff until it is parked as ``failed``.

The actor of a firing is ``timer:<timer name>`` with the ``timer`` role; it is not authorized (the scheduler's
own user), and the audit entry names the timer (``timer_id`` is unique in the log: a timer fires once). The
scheduler (``scheduler/``) decides when to call ``fire_due``; the timers table is the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from engine.commands import Changed, Commands
from engine.uow import TIMER_USER, Actor, Deferred, Runtime, UnitOfWork, unit_of_work
from engine.views import jsonable
from persistence.audit import Head
from persistence.database import translate_errors
from persistence.repository import Repository, format_id
from workflows.calendar import to_local
from workflows.errors import Conflict, GuardRefused, NotFound, TriggerNotAllowed
from workflows.registry import BY_NAME

log = structlog.get_logger("mpoxflow.engine")


@dataclass(frozen=True)
class Fired:
    """What firing one timer did."""

    timer: str
    name: str
    object: str
    due_at: datetime
    fired_at: datetime
    status: str  # fired, missed, or skipped when its trigger was no longer allowed
    from_state: str
    to_state: str
    audit_seq: int
    note: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How a timer whose firing raises is retried: exponential backoff, then parked as ``failed``."""

    max_attempts: int = 5
    first_backoff: timedelta = timedelta(seconds=30)

    def backoff(self, attempts: int) -> timedelta:
        """How long to wait after the ``attempts``-th failed attempt: ``first_backoff``, doubled each time."""
        return timedelta(seconds=self.first_backoff.total_seconds() * 2 ** (attempts - 1))


class Firing:
    """Fires due timers through ``commands.transition``, in batches of one unit of work each."""

    def __init__(self, runtime: Runtime, commands: Commands) -> None:
        self.runtime = runtime
        self.commands = commands

    def next_due(self, until: datetime | None = None) -> datetime | None:
        """When the next pending timer is ready to fire (due, or due for a retry), if by ``until``; else None."""
        with self.runtime.db.reading() as session:
            return Repository(session).next_due(until)

    def fire_due(self, *, limit: int = 100, policy: RetryPolicy | None = None,
                 stop: Callable[[], bool] | None = None) -> list[Fired]:
        """Fire up to ``limit`` timers due now, earliest first, in ONE unit of work: claim, transition and audit
        entry of each commit together, so a process killed mid-batch leaves every timer pending for the next.
        Returns what fired (a timer claimed by someone else meanwhile is not in it).

        The batch is set-based: one statement claims it (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
        workers share the load; on SQLite the writing transaction holds the database), one query per kind loads
        its objects and one their timers, and each timer's transition runs through the shared machine with no
        savepoint. When any timer of the batch does not simply fire (its firing raises, its trigger is refused,
        its object changed meanwhile), the whole batch is rolled back and fired again timer by timer, each in a
        savepoint: a poison timer is rolled back alone, retried with backoff and parked as ``failed`` after
        ``policy.max_attempts``; a refused trigger is ``skipped``; a concurrent change leaves the timer pending.
        ``stop`` is asked between timers: the timer in hand is finished, the rest are given back for the next
        worker. Raises only what fails the batch itself (the database unreachable, the commit refused).
        """
        policy = policy or RetryPolicy()
        try:
            with unit_of_work(self.runtime) as uow:
                fired = self._fire_batch(uow, limit, stop)
                uow.save_clock()
                uow.commit()
        except _SlowPath as slow:
            log.info("batch_fired_one_by_one", cause=type(slow.__cause__).__name__ if slow.__cause__ else None)
            with unit_of_work(self.runtime) as uow:
                fired = self._fire_one_by_one(uow, limit, policy, stop)
                uow.save_clock()
                uow.commit()
        _log_fired(fired)  # after the commit: the log counts exactly the timers that fired
        return fired

    def _fire_batch(self, uow: UnitOfWork, limit: int, stop: Callable[[], bool] | None) -> list[Fired]:
        """The fast path: the batch claimed, its objects and their timers loaded per kind, each timer fired
        without a savepoint. Raises _SlowPath (the caller rolls back) as soon as one does not simply fire."""
        repo, now = uow.repo, uow.now()
        uow.deferred = Deferred(repo)
        claimed = repo.claim_due_timers(now, limit, skip_locked=self.runtime.db.backend == "postgresql")
        objects: dict[tuple[str, int], Any] = {}
        timers: dict[tuple[str, int], list[Any]] = {}
        for kind in {t.object_kind for t in claimed}:
            pks = sorted({t.object_id for t in claimed if t.object_kind == kind})
            objects.update(((kind, pk), row) for pk, row in repo.load_objects(kind, pks).items())
            timers.update(((kind, pk), rows) for pk, rows in repo.timers_of_objects(kind, pks).items())
        fired: list[Fired] = []
        for index, timer in enumerate(claimed):
            if stop is not None and stop():
                repo.unclaim_timers([t.id for t in claimed[index:]])
                break
            key = (timer.object_kind, timer.object_id)
            # An object is loaded with the batch, then carried in memory as each of its timers' transitions
            # leaves it (its values, version, audit head and timers, exactly what the held-back writes make of
            # it); after a transition that reached other objects (a cascade, a spawn) every object is read
            # again, inside this transaction, as it now is.
            row, its_timers = objects.pop(key, None), timers.pop(key, None)
            try:
                with translate_errors():
                    if row is None or its_timers is None:
                        uow.flush()
                        row, its_timers = repo.load_object(*key), repo.object_timers(*key)
                    outcome = self._fire_claimed(uow, timer, row, its_timers, now, careful=False)
            except Exception as error:  # noqa: BLE001 - anything but a plain firing: the careful path decides
                raise _SlowPath() from error
            if outcome.cascaded:
                objects.clear()
                timers.clear()
            elif outcome.changed is not None:
                objects[key], timers[key] = outcome.changed.obj, outcome.changed.timers
            fired.append(outcome.fired)
        try:
            with translate_errors():
                uow.flush()
        except Exception as error:  # noqa: BLE001 - a version moved meanwhile, a deadlock: the careful path decides
            raise _SlowPath() from error
        uow.deferred = None
        return fired

    def _fire_one_by_one(self, uow: UnitOfWork, limit: int, policy: RetryPolicy,
                         stop: Callable[[], bool] | None) -> list[Fired]:
        """The careful path: each timer claimed and fired in a savepoint of its own."""
        fired: list[Fired] = []
        now = uow.now()
        skip_locked = self.runtime.db.backend == "postgresql"
        for timer_id in uow.repo.lock_due_timers(now, limit, skip_locked=skip_locked):
            if stop is not None and stop():
                break
            try:
                # Deadlocks and serialization failures between workers become a Conflict here.
                with translate_errors(), uow.savepoint():
                    timer = uow.repo.claim_timer(timer_id, now)
                    if timer is None:
                        continue
                    row = uow.repo.load_object(timer.object_kind, timer.object_id)
                    timers = uow.repo.object_timers(timer.object_kind, row.id)
                    outcome = self._fire_claimed(uow, timer, row, timers, now, careful=True)
            except Conflict:
                continue  # its object changed meanwhile: still pending, fired on the next pass
            except Exception as error:  # noqa: BLE001 - any other failure is this timer's, not the batch's
                _timer_failed(uow, timer_id, now, error, policy)
                continue
            fired.append(outcome.fired)
        return fired

    def _fire_claimed(self, uow: UnitOfWork, timer: Any, row: Any, timers: list[Any], now: datetime, *,
                      careful: bool) -> _Outcome:
        """Fire one claimed timer on its object (``row``, with its ``timers`` as loaded) inside the caller's unit
        of work. ``careful``: a trigger its object no longer allows (or whose guards refuse) is marked
        ``skipped`` and audited, in a savepoint so that the refused transition leaves nothing behind; else the
        refusal is raised."""
        repo = uow.repo
        kind, name = timer.object_kind, timer.name
        late = max(0, int((now - timer.due_at).total_seconds()))
        data: dict[str, Any] = {"timer": format_id("timer", timer.id), "due_at": timer.due_at,
                                "fired_late_by_seconds": late}
        # A task whose deadline this is (no later overdue instant) and that nobody did or resolved: missed.
        missed = (timer.task is not None and timer.overdue_at is None and timer.satisfied_at is None
                  and timer.resolved_at is None)
        if missed:
            data["outcome"] = "missed"
        actor = Actor(f"timer:{name}", TIMER_USER)
        status, note, to_state, cascaded = ("missed" if missed else "fired"), None, row.state, False
        changed: Changed | None = None
        try:
            with uow.savepoint() if careful else nullcontext():
                changed = self.commands.transition(
                    uow, definition=BY_NAME[row.workflow], kind=kind, row=row, timers=timers, trigger=name,
                    data=data, actor=actor,
                    reason=(f"missed: the task '{timer.task}' was not done by its deadline "
                            f"{to_local(timer.due_at).isoformat()}" if missed
                            else f"due {to_local(timer.due_at).isoformat()}"),
                    now=now, timer_pk=timer.id,
                )
                if missed and uow.deferred is not None:
                    uow.deferred.missed.append(timer.id)
                    for carried in changed.timers:  # as the held-back write leaves it
                        if carried.id == timer.id:
                            carried.status = "missed"
                elif missed:
                    repo.update_timers([timer.id], {"status": "missed"})
            seq, to_state, cascaded = changed.audit_seq, changed.obj.state, changed.reached_others
        except (TriggerNotAllowed, GuardRefused) as refused:
            if not careful:
                raise
            status, note = "skipped", str(refused)
            repo.update_timers([timer.id], {"status": "skipped", "note": note})
            skip = uow.audit(
                Head.of(row), kind=kind, pk=row.id, workflow=row.workflow, trigger=name,
                from_state=row.state, to_state=row.state, actor=actor, reason=f"skipped: {note}", now=now,
                rule=timer.rule, data=jsonable({**data, "outcome": "skipped", "note": note}), changes=None,
                timer_pk=timer.id, unit=getattr(row, "unit_id", None),
            )
            assert skip.seq is not None
            seq, changed = skip.seq, None
        return _Outcome(Fired(
            timer=format_id("timer", timer.id), name=name, object=format_id(kind, row.id), due_at=timer.due_at,
            fired_at=now, status=status, from_state=row.state, to_state=to_state, audit_seq=seq, note=note,
        ), cascaded, changed)


class _SlowPath(Exception):  # noqa: N818 - a signal between the two paths, never seen outside this module
    """A timer of a batch did not simply fire: the batch is rolled back and fired again one by one."""


@dataclass(frozen=True)
class _Outcome:
    fired: Fired
    #: The transition reached other objects (cascades, spawns): objects loaded with the batch may be stale.
    cascaded: bool
    #: The object as the transition left it (None when its timer was skipped).
    changed: Changed | None


def _timer_failed(uow: UnitOfWork, timer_id: int, now: datetime, error: Exception, policy: RetryPolicy) -> None:
    """Count a failed firing; retry later with backoff, or park the timer as ``failed`` (audited on its object's
    chain, or on the scheduler user's when the object is gone)."""
    repo = uow.repo
    timer = repo.timer_row(timer_id)
    attempts = timer.attempts + 1
    what = f"{type(error).__name__}: {error}"[:500]
    if attempts >= policy.max_attempts:
        repo.update_timers([timer_id], {"status": "failed", "attempts": attempts, "last_error": what,
                                        "closed_at": now, "next_attempt_at": None})
        kind, pk = timer.object_kind, timer.object_id
        try:
            head = Head.of(repo.head_row(kind, pk))
        except NotFound:
            scheduler = repo.user_by_name(TIMER_USER)
            if scheduler is None:
                raise
            kind, pk, head = "user", scheduler.id, Head.of(scheduler)
        uow.audit(
            head, kind=kind, pk=pk, workflow=None, trigger=timer.name,
            from_state=None, to_state=None, actor=Actor(f"timer:{timer.name}", TIMER_USER),
            reason=f"parked as failed after {attempts} attempts: {what}", now=now, rule=timer.rule,
            data={"timer": format_id("timer", timer_id), "object": format_id(timer.object_kind, timer.object_id),
                  "attempts": attempts, "outcome": "failed", "error": what},
            changes=None, timer_pk=timer_id, unit=timer.unit_id,
        )
        log.error("timer_failed", timer=format_id("timer", timer_id), name=timer.name, attempts=attempts,
                  error=type(error).__name__)
        return
    retry_at = now + policy.backoff(attempts)
    repo.update_timers([timer_id], {"attempts": attempts, "last_error": what, "next_attempt_at": retry_at})
    log.warning("timer_retry", timer=format_id("timer", timer_id), name=timer.name, attempts=attempts,
                retry_at=retry_at.isoformat(), error=type(error).__name__)


def _log_fired(fired: list[Fired]) -> None:
    """``timer_fired`` for each timer of a committed unit of work (never for one rolled back)."""
    for f in fired:
        log.info("timer_fired", timer=f.timer, object=f.object, name=f.name, status=f.status,
                 due_at=f.due_at.isoformat(), fired_at=f.fired_at.isoformat(),
                 lateness_seconds=max(0, int((f.fired_at - f.due_at).total_seconds())))
