"""The engine: one path applies any trigger, whether a person or a timer pulls it.

Load the object, run the trigger and its guards through the workflow's shared `transitions` machine, write
the new state and facts, cancel and arm timers, append the audit entry, commit: all or nothing. Only the
injected clock is asked for the time.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.orm import Session

from engine.clock import Clock, SimulatedClock, SystemClock
from engine.views import audit_view, jsonable, object_view, person_view, timer_view
from persistence.database import Database
from persistence.models import OBJECT_MODELS, AuditEntry, Person, Timer
from persistence.repository import Repository, facts_from_row, format_id, not_found, parse_id, write_facts
from workflows.calendar import local_date, to_local
from workflows.definition import NEW, Settings, Subject
from workflows.errors import Conflict, GuardRefused, RuleRefused, TriggerNotAllowed, UsageError
from workflows.registry import BY_NAME, WORKFLOWS

log = structlog.get_logger("mpoxflow.engine")


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
                session, kind="person", pk=person.id, workflow=None, trigger="register", from_state=None,
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
        """Create a workflow object of ``kind`` for ``person`` through its creation ``trigger``."""
        definition = WORKFLOWS[kind]
        _, person_pk = parse_id(person, kind="person")
        with self.db.transaction() as session:
            repo = Repository(session)
            repo.person(person_pk)
            now = self.clock.now()
            row, _ = self._run(
                session, definition=definition, kind=kind, row=None, trigger=trigger, data=data,
                actor=actor, reason=reason, now=now, person_pk=person_pk,
            )
            self._save_clock(repo)
            return object_view(kind, row, list(repo.timers_of(kind, row.id)))

    def apply(
        self,
        object_id: str,
        trigger: str,
        *,
        data: Mapping[str, Any] | None = None,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Apply ``trigger`` to the object. Raises NotFound, TriggerNotAllowed, GuardRefused, or Conflict
        (``expected_version`` given and the object has changed since, or a concurrent change won)."""
        kind, pk = parse_id(object_id)
        if kind not in OBJECT_MODELS:
            raise UsageError(f"{object_id} is a {kind}, which has no workflow: give a case id")
        with self.db.transaction() as session:
            repo = Repository(session)
            row = repo.workflow_object(kind, pk)
            if expected_version is not None and row.version != expected_version:
                raise Conflict(
                    f"{object_id} was changed meanwhile (it is at version {row.version}, you expected "
                    f"{expected_version}); nothing was written. Show it again and retry."
                )
            definition = BY_NAME[row.workflow]
            self._run(
                session, definition=definition, kind=kind, row=row, trigger=trigger, data=data or {},
                actor=actor, reason=reason, now=self.clock.now(),
            )
            self._save_clock(repo)
            return object_view(kind, row, list(repo.timers_of(kind, pk)))

    def _run(
        self,
        session: Session,
        *,
        definition: Any,
        kind: str,
        row: Any,
        trigger: str,
        data: Mapping[str, Any],
        actor: str,
        reason: str | None,
        now: datetime,
        person_pk: int | None = None,
    ) -> tuple[Any, AuditEntry]:
        """The one transition path, inside the caller's transaction: the (new or changed) row and its entry."""
        repo = Repository(session)
        object_id = format_id(kind, row.id) if row is not None else f"new {kind}"
        from_state = row.state if row is not None else NEW
        subject = Subject(
            object_id=object_id,
            state=from_state,
            facts=facts_from_row(row, definition.facts) if row is not None else None,
            now=now,
            settings=self.settings,
            data=data,
        )
        definition.fire(subject, trigger)
        rule = definition.rule_of(trigger, from_state)

        if row is None:
            row = OBJECT_MODELS[kind](
                person_id=person_pk, workflow=definition.name, created_at=now, state=subject.state, updated_at=now
            )
            write_facts(row, subject.facts)
            session.add(row)
        else:
            write_facts(row, subject.facts)
            row.state = subject.state
            row.updated_at = now
        session.flush()  # the version check runs here: a concurrent change makes this a Conflict

        cancelled = self._close_timers(repo, kind, row.id, subject, now)
        armed = []
        for spec in subject.armed:
            timer = Timer(
                object_kind=kind, object_id=row.id, name=spec.name, due_at=spec.due_at, rule=spec.rule,
                task=spec.task, status="pending", armed_at=now,
            )
            session.add(timer)
            armed.append(timer)
        session.flush()
        entry = self._audit(
            session, kind=kind, pk=row.id, workflow=row.workflow, trigger=trigger,
            from_state=None if from_state == NEW else from_state, to_state=subject.state, actor=actor,
            reason=reason, now=now, rule=rule, data=jsonable(dict(data)),
            armed=[{"timer": format_id("timer", t.id), "name": t.name, "due_at": jsonable(t.due_at),
                    "rule": t.rule} for t in armed],
            cancelled=cancelled,
        )
        log.info(
            "transition", object=format_id(kind, row.id), trigger=trigger,
            from_state=None if from_state == NEW else from_state, to_state=subject.state, rule=rule,
            actor=actor, audit_seq=entry.seq, timers_armed=[t.name for t in armed],
            timers_cancelled=[c["name"] for c in cancelled],
        )
        return row, entry

    def _close_timers(
        self, repo: Repository, kind: str, pk: int, subject: Subject, now: datetime
    ) -> list[dict[str, Any]]:
        """Cancel what the transition cancels or re-arms; mark satisfied the tasks it completes."""
        closed: list[dict[str, Any]] = []
        rearmed = {t.name for t in subject.armed}
        for timer in repo.pending_timers(kind, pk):
            if timer.name in subject.cancelled or timer.name in rearmed:
                timer.status, timer.closed_at = "cancelled", now
                timer.note = "re-armed" if timer.name in rearmed else "cancelled by the transition"
                closed.append({"timer": format_id("timer", timer.id), "name": timer.name, "why": timer.note})
        if subject.satisfied:
            for timer in repo.unsatisfied_timers(kind, pk, subject.satisfied):
                timer.satisfied_at = now
                if timer.status == "pending":
                    timer.status, timer.closed_at, timer.note = "cancelled", now, "task done in time"
                    closed.append({"timer": format_id("timer", timer.id), "name": timer.name, "why": timer.note})
        repo.session.flush()  # cancellations first: the pending-name index admits one pending timer per name
        return closed

    def _audit(
        self, session: Session, *, kind: str, pk: int, workflow: str | None, trigger: str,
        from_state: str | None, to_state: str | None, actor: str, reason: str | None, now: datetime,
        rule: str | None, data: dict[str, Any], armed: list[Any], cancelled: list[Any],
    ) -> AuditEntry:
        entry = AuditEntry(
            object_kind=kind, object_id=pk, workflow=workflow, trigger=trigger, from_state=from_state,
            to_state=to_state, actor=actor, reason=reason, at=now, recorded_at=self.wall_clock.now(), rule=rule,
            data=data, timers_armed=armed, timers_cancelled=cancelled,
        )
        session.add(entry)
        session.flush()
        return entry

    # ---- timers --------------------------------------------------------------------------------------------

    def next_due(self, until: datetime) -> tuple[int, datetime] | None:
        """The id and due instant of the earliest pending timer due by ``until``."""
        with self.db.reading() as session:
            timer = Repository(session).next_due(until)
            return None if timer is None else (timer.id, timer.due_at)

    def fire_timer(self, timer_id: int) -> Fired | None:
        """Fire one timer at the clock's now, in one transaction with its transition and audit entry.

        Returns None when the timer is no longer pending (someone else fired or cancelled it). A timer whose
        trigger its object no longer allows is marked ``skipped`` and audited, never raised.
        """
        with self.db.transaction() as session:
            repo = Repository(session)
            now = self.clock.now()
            timer = repo.claim_timer(timer_id, now)
            if timer is None:
                return None
            row = repo.workflow_object(timer.object_kind, timer.object_id)
            definition = BY_NAME[row.workflow]
            from_state = row.state
            data = {"timer": format_id("timer", timer.id), "due_at": timer.due_at,
                    "fired_late_by_seconds": max(0, int((now - timer.due_at).total_seconds()))}
            actor = f"timer:{timer.name}"
            status, note = "fired", None
            try:
                # A nested transaction, so that a refused trigger leaves no partial writes behind.
                with session.begin_nested():
                    _, entry = self._run(
                        session, definition=definition, kind=timer.object_kind, row=row, trigger=timer.name,
                        data=data, actor=actor, reason=f"due {to_local(timer.due_at).isoformat()}", now=now,
                    )
            except (TriggerNotAllowed, GuardRefused) as refused:
                status, note = "skipped", str(refused)
                session.expire(row)
                timer = repo.session.get(Timer, timer_id, populate_existing=True) or timer
                timer.status, timer.note = "skipped", note
                entry = self._audit(
                    session, kind=timer.object_kind, pk=timer.object_id, workflow=row.workflow,
                    trigger=timer.name, from_state=row.state, to_state=row.state, actor=actor,
                    reason=f"skipped: {note}", now=now, rule=timer.rule, data=jsonable(data),
                    armed=[], cancelled=[],
                )
            self._save_clock(repo)
            log.info(
                "timer_fired", timer=format_id("timer", timer.id), object=format_id(timer.object_kind, row.id),
                name=timer.name, status=status, due_at=timer.due_at.isoformat(), fired_at=now.isoformat(),
                lateness_seconds=data["fired_late_by_seconds"],
            )
            return Fired(
                timer=format_id("timer", timer.id), name=timer.name,
                object=format_id(timer.object_kind, timer.object_id), due_at=timer.due_at, fired_at=now,
                status=status, from_state=from_state, to_state=row.state, audit_seq=entry.seq, note=note,
            )

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

    def worklist(self, within: timedelta | None = None) -> builtins.list[dict[str, Any]]:
        """Staff tasks not done yet, soonest first; ``overdue`` once their deadline has passed.
        Without ``within``, every open task; with it, those due within that time from now."""
        now = self.clock.now()
        until = now + within if within is not None else datetime.max.replace(tzinfo=now.tzinfo)
        with self.db.reading() as session:
            items = []
            for timer in Repository(session).open_tasks(until):
                items.append({
                    "object": format_id(timer.object_kind, timer.object_id),
                    "task": timer.task,
                    "due_at": timer_view(timer)["due_at"],
                    "overdue": timer.due_at <= now,
                    "rule": timer.rule,
                    "timer": format_id("timer", timer.id),
                })
            return items

    def audit(
        self, *, entity: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[dict[str, Any]]:
        kind = pk = None
        if entity is not None:
            kind, pk = parse_id(entity)
        with self.db.reading() as session:
            return [audit_view(e) for e in Repository(session).audit_entries(kind=kind, pk=pk, since=since,
                                                                               until=until)]

