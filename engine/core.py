"""The engine: one path applies any trigger, whether a person or a timer pulls it.

Load the object, run the trigger and its guards through the workflow's shared `transitions` machine, write
the new state and facts, cancel and arm timers, append the audit entry, commit: all or nothing. Only the
injected clock is asked for the time.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import structlog

from engine.clock import Clock, SimulatedClock, SystemClock
from engine.views import audit_view, instant, jsonable, object_view, person_view, timer_view
from persistence.database import Database, translate_errors
from persistence.models import OBJECT_MODELS, Person, Timer
from persistence.repository import Repository, facts_from_row, facts_values, format_id, not_found, parse_id
from workflows.calendar import local_date, local_midnight, to_local
from workflows.definition import NEW, Related, Settings, Subject, WorkflowDefinition
from workflows.errors import Conflict, GuardRefused, RuleRefused, TriggerNotAllowed, UsageError
from workflows.registry import BY_NAME, WORKFLOWS

log = structlog.get_logger("mpoxflow.engine")

TIMER_STATUSES = ("pending", "fired", "cancelled", "skipped", "failed")


@dataclass(frozen=True)
class Fired:
    """What firing one timer did."""

    timer: str
    name: str
    object: str
    due_at: datetime
    fired_at: datetime
    status: str  # fired, or skipped when its trigger was no longer allowed
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
        return timedelta(seconds=self.first_backoff.total_seconds() * 2 ** (attempts - 1))


@dataclass(frozen=True)
class Changed:
    """An object as one transition left it: its values, all its timers, and the audit entry's number."""

    kind: str
    obj: Any
    timers: list[Any]
    audit_seq: int

    def view(self) -> dict[str, Any]:
        return object_view(self.kind, self.obj, self.timers)


class Engine:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings | None = None,
        *,
        wall_clock: Clock | None = None,
        persist_clock: bool = False,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings or Settings()
        #: Real time, for ``recorded_at`` next to a simulated clock's instant.
        self.wall_clock = wall_clock or SystemClock()
        #: Write the simulated clock's "now" to the database with every change (a simulated-clock database).
        self.persist_clock = persist_clock

    # ---- people --------------------------------------------------------------------------------------------

    def add_person(
        self,
        *,
        ref: str,
        born: date | None = None,
        immunocompromised: bool = False,
        pregnant: bool = False,
        previous_mpox: bool = False,
        smallpox_vaccinated: bool = False,
        actor: str,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Register a person. Raises UsageError for an empty ref or a birth date in the future, RuleRefused
        when the ref is registered already."""
        ref = ref.strip()
        if not ref:
            raise UsageError("--ref is empty: give the person's external reference")
        with self.db.transaction() as session:
            now = self.clock.now()
            if born is not None and born > local_date(now):
                raise UsageError(f"birth date {born} is after today ({local_date(now)}): correct the date")
            repo = Repository(session)
            existing = repo.person_by_ref(ref)
            if existing is not None:
                raise RuleRefused(
                    f"a person with that reference is registered already as {format_id('person', existing.id)}: "
                    "use that id"
                )
            flags = {
                "immunocompromised": immunocompromised, "pregnant": pregnant,
                "previous_mpox": previous_mpox, "smallpox_vaccinated": smallpox_vaccinated,
            }
            person = Person(ref=ref, born=born, created_at=now, **flags)
            session.add(person)
            session.flush()
            # The audit keeps internal ids and flags only: never the reference or the birth date.
            self._audit(
                repo, kind="person", pk=person.id, workflow=None, trigger="register", from_state=None,
                to_state=None, actor=actor, reason=reason, now=now, rule=None,
                data={**flags, "born_given": born is not None}, armed=[], cancelled=[],
            )
            self._save_clock(repo)
            log.info("person_registered", person=format_id("person", person.id), actor=actor)
            return person_view(person)

    # ---- transitions ---------------------------------------------------------------------------------------

    def open(
        self,
        kind: str,
        trigger: str,
        *,
        person: str,
        data: Mapping[str, Any],
        actor: str,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Create a workflow object of ``kind`` for ``person`` through its creation ``trigger``. Raises NotFound
        for an unknown person, GuardRefused when the creation's guards refuse."""
        definition = WORKFLOWS[kind]
        _, person_pk = parse_id(person, kind="person")
        with self.db.transaction() as session:
            repo = Repository(session)
            repo.person_exists(person_pk)
            changed = self._run(
                repo, definition=definition, kind=kind, row=None, timers=[], trigger=trigger, data=data,
                actor=actor, reason=reason, now=self.clock.now(), person_pk=person_pk,
            )
            self._save_clock(repo)
            return changed.view()

    def apply(
        self,
        object_id: str,
        trigger: str,
        *,
        data: Mapping[str, Any] | None = None,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
        kind: str | None = None,
    ) -> dict[str, Any]:
        """Apply ``trigger`` to the object (of ``kind``, when given). Raises NotFound, TriggerNotAllowed,
        GuardRefused, or Conflict (``expected_version`` given and the object has changed since, or a concurrent
        change won)."""
        kind, pk = parse_id(object_id, kind=kind)
        if kind not in OBJECT_MODELS:
            raise UsageError(f"{object_id} is a {kind}, which has no workflow: give a case or contact id")
        with self.db.transaction() as session:
            repo = Repository(session)
            row = repo.load_object(kind, pk)
            if expected_version is not None and row.version != expected_version:
                raise Conflict(
                    f"{object_id} was changed meanwhile (it is at version {row.version}, you expected "
                    f"{expected_version}); nothing was written. Show it again and retry."
                )
            # The clock is read after the object is loaded: a concurrent change committed in between is caught
            # by the version check of the UPDATE.
            changed = self._run(
                repo, definition=BY_NAME[row.workflow], kind=kind, row=row, timers=repo.object_timers(kind, pk),
                trigger=trigger, data=data or {}, actor=actor, reason=reason, now=self.clock.now(),
            )
            self._save_clock(repo)
            return changed.view()

    def _run(
        self,
        repo: Repository,
        *,
        definition: WorkflowDefinition,
        kind: str,
        row: Any,
        timers: list[Any],
        trigger: str,
        data: Mapping[str, Any],
        actor: str,
        reason: str | None,
        now: datetime,
        person_pk: int | None = None,
        timer_pk: int | None = None,
    ) -> Changed:
        """The one transition path, inside the caller's transaction (``row`` None creates the object)."""
        from_state = row.state if row is not None else NEW
        spec = definition.spec(trigger, from_state)
        person = row.person_id if row is not None else person_pk
        if person is None:
            raise ValueError("creating an object needs the person it is about")
        subject = Subject(
            object_id=format_id(kind, row.id) if row is not None else f"new {kind}",
            state=from_state,
            facts=facts_from_row(row, definition.facts) if row is not None else None,
            now=now,
            settings=self.settings,
            data=data,
            context=self._related(repo, spec.references, row, data, person) if spec is not None else {},
            person=format_id("person", person),
        )
        definition.fire(subject, trigger)
        rule = definition.rule_of(trigger, from_state)
        for spawn in subject.spawned:
            born = self._run(
                repo, definition=WORKFLOWS[spawn.kind], kind=spawn.kind, row=None, timers=[], trigger=spawn.trigger,
                data=spawn.data, actor=actor, reason=f"from {subject.object_id}: {trigger}", now=now,
                person_pk=person,
            )
            setattr(subject.facts, spawn.link, format_id(spawn.kind, born.obj.id))

        values = {**facts_values(subject.facts), "state": subject.state, "updated_at": now}
        if row is None:
            values.update(person_id=person_pk, workflow=definition.name, created_at=now, version=1)
            self._refuse_duplicate(repo, definition, values)
            obj = SimpleNamespace(id=repo.insert_object(kind, values), **values)
        else:
            if not repo.update_object(kind, row.id, row.version, values):
                raise Conflict(
                    f"{format_id(kind, row.id)} was changed by someone else while this change was being made; "
                    "nothing was written. Show it again and retry."
                )
            obj = SimpleNamespace(**{**row._mapping, **values, "version": row.version + 1})

        for cascade in subject.cascades:
            targets = ([cascade.pk] if cascade.pk is not None
                       else repo.objects_of_person(cascade.kind, person, cascade.states))
            for pk in targets:
                target = repo.load_object(cascade.kind, pk)
                self._run(
                    repo, definition=BY_NAME[target.workflow], kind=cascade.kind, row=target,
                    timers=repo.object_timers(cascade.kind, pk), trigger=cascade.trigger, data=cascade.data,
                    actor=actor, reason=f"from {format_id(kind, obj.id)}: {trigger}", now=now,
                )

        current = [SimpleNamespace(**t._mapping) for t in timers]
        cancelled = self._close_timers(repo, current, subject, now)
        new_rows = [
            {"object_kind": kind, "object_id": obj.id, "name": spec.name, "due_at": spec.due_at, "rule": spec.rule,
             "task": spec.task, "overdue_at": spec.overdue_at, "status": "pending", "armed_at": now,
             "closed_at": None, "satisfied_at": None, "note": None}
            for spec in subject.armed
        ]
        armed = [SimpleNamespace(id=i, **r) for i, r in zip(repo.insert_timers(new_rows), new_rows, strict=True)]
        seq = self._audit(
            repo, kind=kind, pk=obj.id, workflow=obj.workflow, trigger=trigger,
            from_state=None if from_state == NEW else from_state, to_state=subject.state, actor=actor,
            reason=reason, now=now, rule=rule, data=jsonable(dict(data)),
            armed=[{"timer": format_id("timer", t.id), "name": t.name, "due_at": jsonable(t.due_at),
                    "rule": t.rule} for t in armed],
            cancelled=cancelled, timer_pk=timer_pk,
        )
        log.info(
            "transition", object=format_id(kind, obj.id), trigger=trigger,
            from_state=None if from_state == NEW else from_state, to_state=subject.state, rule=rule,
            actor=actor, audit_seq=seq, timers_armed=[t.name for t in armed],
            timers_cancelled=[c["name"] for c in cancelled],
        )
        return Changed(kind, obj, sorted(current + armed, key=lambda t: (t.due_at, t.id)), seq)

    @staticmethod
    def _related(
        repo: Repository, kinds: tuple[str, ...], row: Any, data: Mapping[str, Any], person_pk: int
    ) -> dict[str, Related]:
        """Load what a transition's guards read: the objects named in the data, or the object's own ``<kind>_id``;
        ``person``, the facts of the object's person."""
        related = {}
        for kind in kinds:
            if kind == "person":
                related[kind] = repo.person_facts(person_pk)
                continue
            if data.get(kind) is not None:
                _, pk = parse_id(str(data[kind]), kind=kind)
            elif row is not None and getattr(row, f"{kind}_id", None) is not None:
                pk = getattr(row, f"{kind}_id")
            else:
                continue  # none named: the guards say whether one was needed
            other = repo.load_object(kind, pk)
            related[kind] = Related(format_id(kind, pk), pk, other.state,
                                    facts_from_row(other, BY_NAME[other.workflow].facts),
                                    format_id("person", other.person_id))
        return related

    @staticmethod
    def _refuse_duplicate(repo: Repository, definition: WorkflowDefinition, values: dict[str, Any]) -> None:
        if not definition.identity:
            return
        same = {"person_id": values["person_id"], **{k: values[k] for k in definition.identity}}
        existing = repo.find_object(definition.kind, same)
        if existing is not None:
            described = " and ".join(format_id(k.removesuffix("_id"), v) for k, v in same.items())
            raise RuleRefused(
                f"there is already a {definition.kind} for {described}: {format_id(definition.kind, existing)}; "
                f"record the change on that one (`mpoxflow show {format_id(definition.kind, existing)}`)",
                rule=definition.identity_rule,
            )

    @staticmethod
    def _close_timers(repo: Repository, timers: list[Any], subject: Subject, now: datetime) -> list[dict[str, Any]]:
        """Cancel what the transition cancels or re-arms; mark satisfied the tasks it completes. ``timers`` (the
        object's, as loaded) are updated in place to match what is written."""
        rearmed = {t.name for t in subject.armed}
        groups: dict[str, list[Any]] = {"re-armed": [], "cancelled by the transition": [], "task done in time": []}
        satisfied: list[Any] = []
        for timer in timers:
            done = (timer.name in subject.satisfied and timer.task is not None
                    and timer.status in ("pending", "fired") and timer.satisfied_at is None)
            if done:
                satisfied.append(timer)
            if timer.status != "pending":
                continue
            if timer.name in rearmed:
                groups["re-armed"].append(timer)
            elif timer.name in subject.cancelled:
                groups["cancelled by the transition"].append(timer)
            elif done:
                groups["task done in time"].append(timer)
        repo.update_timers([t.id for t in satisfied], {"satisfied_at": now})
        for t in satisfied:
            t.satisfied_at = now
        closed: list[dict[str, Any]] = []
        for note, group in groups.items():
            # Cancellations are written before any new timer: one pending timer per name and object.
            repo.update_timers([t.id for t in group], {"status": "cancelled", "closed_at": now, "note": note})
            for t in group:
                t.status, t.closed_at, t.note = "cancelled", now, note
                closed.append({"timer": format_id("timer", t.id), "name": t.name, "why": note})
        return closed

    def _audit(
        self, repo: Repository, *, kind: str, pk: int, workflow: str | None, trigger: str,
        from_state: str | None, to_state: str | None, actor: str, reason: str | None, now: datetime,
        rule: str | None, data: dict[str, Any], armed: list[Any], cancelled: list[Any], timer_pk: int | None = None,
    ) -> int:
        """Append the audit entry of a change; returns its sequence number. ``timer_pk``: the timer whose firing
        this is (unique in the log: a timer's firing can be recorded only once)."""
        return repo.insert_audit({
            "timer_id": timer_pk,
            "object_kind": kind, "object_id": pk, "workflow": workflow, "trigger": trigger,
            "from_state": from_state, "to_state": to_state, "actor": actor, "reason": reason, "at": now,
            "recorded_at": self.wall_clock.now(), "rule": rule, "data": data, "timers_armed": armed,
            "timers_cancelled": cancelled,
        })

    # ---- timers --------------------------------------------------------------------------------------------

    def next_due(self, until: datetime | None = None) -> datetime | None:
        """When the next pending timer is ready to fire (due, or due for a retry), if by ``until``."""
        with self.db.reading() as session:
            return Repository(session).next_due(until)

    def fire_timer(self, timer_id: int) -> Fired | None:
        """Fire one timer at the clock's now, in one transaction with its transition and audit entry.

        Returns None when the timer is no longer pending (someone else fired or cancelled it). A timer whose
        trigger its object no longer allows is marked ``skipped`` and audited, never raised.
        """
        with self.db.transaction() as session:
            repo = Repository(session)
            fired = self._fire(repo, timer_id, self.clock.now())
            self._save_clock(repo)
            return fired

    def fire_due(self, *, limit: int = 100, policy: RetryPolicy | None = None,
                 stop: Callable[[], bool] | None = None) -> list[Fired]:
        """Fire up to ``limit`` timers due now, earliest first, in ONE transaction: claim, transition and audit
        entry of each commit together, so a process killed mid-batch leaves every timer pending for the next.

        Claims lock the timer rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers share the load;
        on SQLite the writing transaction holds the database). Each timer fires in a savepoint: a timer whose
        firing raises (a poison timer) is rolled back alone, retried with backoff, and parked as ``failed`` after
        ``policy.max_attempts``; a concurrent change to its object leaves it pending for the next pass.
        ``stop`` is asked between timers: the timer in hand is finished, the rest wait for the next worker.
        """
        policy = policy or RetryPolicy()
        fired: list[Fired] = []
        with self.db.transaction() as session:
            repo = Repository(session)
            now = self.clock.now()
            for timer_id in repo.lock_due_timers(now, limit, skip_locked=self.db.backend == "postgresql"):
                if stop is not None and stop():
                    break
                try:
                    # Deadlocks and serialization failures between workers become a Conflict here.
                    with translate_errors(), session.begin_nested():
                        outcome = self._fire(repo, timer_id, now)
                except Conflict:
                    continue  # its object changed meanwhile: still pending, fired on the next pass
                except Exception as error:  # noqa: BLE001 - any other failure is this timer's, not the batch's
                    self._timer_failed(repo, timer_id, now, error, policy)
                    continue
                if outcome is not None:
                    fired.append(outcome)
            self._save_clock(repo)
        return fired

    def _fire(self, repo: Repository, timer_id: int, now: datetime) -> Fired | None:
        """Claim and fire one timer inside the caller's transaction."""
        timer = repo.claim_timer(timer_id, now)
        if timer is None:
            return None
        kind, name = timer.object_kind, timer.name
        row = repo.load_object(kind, timer.object_id)
        late = max(0, int((now - timer.due_at).total_seconds()))
        data = {"timer": format_id("timer", timer.id), "due_at": timer.due_at, "fired_late_by_seconds": late}
        actor = f"timer:{name}"
        status, note, to_state = "fired", None, row.state
        try:
            # A savepoint, so that a refused trigger leaves no partial writes behind.
            with repo.session.begin_nested():
                changed = self._run(
                    repo, definition=BY_NAME[row.workflow], kind=kind, row=row,
                    timers=repo.object_timers(kind, row.id), trigger=name, data=data, actor=actor,
                    reason=f"due {to_local(timer.due_at).isoformat()}", now=now, timer_pk=timer.id,
                )
            seq, to_state = changed.audit_seq, changed.obj.state
        except (TriggerNotAllowed, GuardRefused) as refused:
            status, note = "skipped", str(refused)
            repo.update_timers([timer.id], {"status": "skipped", "note": note})
            seq = self._audit(
                repo, kind=kind, pk=row.id, workflow=row.workflow, trigger=name, from_state=row.state,
                to_state=row.state, actor=actor, reason=f"skipped: {note}", now=now, rule=timer.rule,
                data=jsonable(data), armed=[], cancelled=[], timer_pk=timer.id,
            )
        log.info(
            "timer_fired", timer=format_id("timer", timer.id), object=format_id(kind, row.id), name=name,
            status=status, due_at=timer.due_at.isoformat(), fired_at=now.isoformat(), lateness_seconds=late,
        )
        return Fired(
            timer=format_id("timer", timer.id), name=name, object=format_id(kind, row.id), due_at=timer.due_at,
            fired_at=now, status=status, from_state=row.state, to_state=to_state, audit_seq=seq, note=note,
        )

    def _timer_failed(self, repo: Repository, timer_id: int, now: datetime, error: Exception,
                      policy: RetryPolicy) -> None:
        """Count a failed firing; retry later with backoff, or park the timer as ``failed`` (audited)."""
        timer = repo.timer_row(timer_id)
        attempts = timer.attempts + 1
        what = f"{type(error).__name__}: {error}"[:500]
        if attempts >= policy.max_attempts:
            repo.update_timers([timer_id], {"status": "failed", "attempts": attempts, "last_error": what,
                                            "closed_at": now, "next_attempt_at": None})
            self._audit(
                repo, kind=timer.object_kind, pk=timer.object_id, workflow=None, trigger=timer.name,
                from_state=None, to_state=None, actor=f"timer:{timer.name}",
                reason=f"parked as failed after {attempts} attempts: {what}", now=now, rule=timer.rule,
                data={"timer": format_id("timer", timer_id), "attempts": attempts}, armed=[], cancelled=[],
                timer_pk=timer_id,
            )
            log.error("timer_failed", timer=format_id("timer", timer_id), name=timer.name, attempts=attempts,
                      error=type(error).__name__)
            return
        retry_at = now + policy.backoff(attempts)
        repo.update_timers([timer_id], {"attempts": attempts, "last_error": what, "next_attempt_at": retry_at})
        log.warning("timer_retry", timer=format_id("timer", timer_id), name=timer.name, attempts=attempts,
                    retry_at=retry_at.isoformat(), error=type(error).__name__)

    # ---- the simulated clock -------------------------------------------------------------------------------

    def _save_clock(self, repo: Repository) -> None:
        if self.persist_clock:
            repo.save_clock(simulated=True, now=self.clock.now())

    def save_clock(self) -> None:
        with self.db.transaction() as session:
            self._save_clock(Repository(session))

    @property
    def simulated_clock(self) -> SimulatedClock:
        if not isinstance(self.clock, SimulatedClock):
            raise UsageError(
                "this database runs on real time, so its clock cannot be moved: "
                "make a training database with `mpoxflow init --simulated-clock INSTANT`"
            )
        return self.clock

    # ---- reading -------------------------------------------------------------------------------------------

    def show(self, object_id: str) -> dict[str, Any]:
        kind, pk = parse_id(object_id)
        with self.db.reading() as session:
            repo = Repository(session)
            if kind == "person":
                person = repo.person(pk)
                return person_view(person, [format_id("case", c.id) for c in repo.cases_of(pk)])
            if kind == "timer":
                timer = session.get(Timer, pk)
                if timer is None:
                    raise not_found(object_id, "timer")
                return timer_view(timer)
            row = repo.workflow_object(kind, pk)
            return object_view(kind, row, list(repo.timers_of(kind, pk)))

    def list(self, kind: str, state: str | None = None) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            repo = Repository(session)
            if kind == "person":
                return [person_view(p) for p in repo.persons()]
            if state is not None and state not in WORKFLOWS[kind].states:
                raise UsageError(
                    f"'{state}' is not a {kind} state: use one of {', '.join(WORKFLOWS[kind].states)}"
                )
            rows = repo.objects(kind, state)
            timers = repo.timers_of_many(kind, [r.id for r in rows])
            return [object_view(kind, r, timers[r.id]) for r in rows]

    def timers(self, status: str | None = None, limit: int = 1000) -> builtins.list[dict[str, Any]]:
        """Timers, soonest first (``status``: pending, fired, cancelled, skipped, failed)."""
        if status is not None and status not in TIMER_STATUSES:
            raise UsageError(f"'{status}' is not a timer status: use one of {', '.join(TIMER_STATUSES)}")
        with self.db.reading() as session:
            return [timer_view(t) for t in Repository(session).timers(status, limit)]

    def timer_status(self) -> dict[str, Any]:
        """What an operator checks first: pending, overdue and failed counts, and how late the oldest is."""
        now = self.clock.now()
        with self.db.reading() as session:
            counts = Repository(session).timer_counts(now)
        oldest = counts.pop("oldest_due")
        return {**counts, "oldest_overdue_due_at": instant(oldest),
                "oldest_lateness_seconds": int((now - oldest).total_seconds()) if oldest else 0,
                "now": instant(now)}

    def worklist(self, within: timedelta | None = None) -> builtins.list[dict[str, Any]]:
        """Staff tasks not done yet, soonest first; ``overdue`` once their deadline has passed.
        Without ``within``, every open task; with it, those due within that time from now."""
        now = self.clock.now()
        until = now + within if within is not None else datetime.max.replace(tzinfo=now.tzinfo)
        with self.db.reading() as session:
            items = []
            repo = Repository(session)
            for timer in repo.timers("failed"):  # an operator's task: a timer that could not fire
                items.append({
                    "object": format_id(timer.object_kind, timer.object_id),
                    "task": f"timer {timer.name} failed after {timer.attempts} attempts: see `mpoxflow timers "
                            "--status failed`",
                    "due_at": timer_view(timer)["due_at"], "overdue": True, "rule": timer.rule,
                    "timer": format_id("timer", timer.id),
                })
            for timer in repo.open_tasks(until):
                items.append({
                    "object": format_id(timer.object_kind, timer.object_id),
                    "task": timer.task,
                    "due_at": timer_view(timer)["due_at"],
                    "overdue": (timer.overdue_at or timer.due_at) <= now,
                    "rule": timer.rule,
                    "timer": format_id("timer", timer.id),
                })
            return sorted(items, key=lambda i: (datetime.fromisoformat(i["due_at"]), i["timer"]))

    def dose_forecast(self, weeks: int = 8) -> builtins.list[dict[str, Any]]:
        """§6.4 doses 2 falling due, per Danish calendar day from today (the clock's local date) for ``weeks``
        weeks, days without any included: ``[{"date": "2025-03-03", "doses_due": 4}, ...]``. Counts the pending
        ``dose2_due`` timers of courses, from one grouped query; each falls due at a local midnight, so each due
        instant is one day (the days around a daylight-saving change are 23 or 25 hours long)."""
        if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 1:
            raise UsageError(f"the forecast needs a whole number of weeks, 1 or more, not {weeks!r}")
        today = local_date(self.clock.now())
        days = [today + timedelta(days=i) for i in range(7 * weeks)]
        since, until = local_midnight(days[0]), local_midnight(days[-1] + timedelta(days=1))
        with self.db.reading() as session:
            due = Repository(session).dose_forecast(since, until)
        counts = dict.fromkeys(days, 0)
        for due_at, n in due:
            counts[local_date(due_at)] += n
        return [{"date": day.isoformat(), "doses_due": n} for day, n in counts.items()]

    def audit(
        self, *, entity: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[dict[str, Any]]:
        kind = pk = None
        if entity is not None:
            kind, pk = parse_id(entity)
        with self.db.reading() as session:
            return [audit_view(e) for e in Repository(session).audit_entries(kind=kind, pk=pk, since=since,
                                                                               until=until)]

