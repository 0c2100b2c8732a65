"""The engine: the one object callers hold, composed of parts that each do one job.

- ``engine.uow``: the unit of work (transaction, repository, the actor's authorization, the audit record);
  everything that writes goes through one.
- ``engine.commands``: the command path (open and apply, spawns and cascades, persons, task resolution) and the
  one transition path that persons and timers share.
- ``engine.firing``: timer firing and retries.
- ``engine.clock``: the clock, real or simulated.
- ``engine.accounts``: users and roles (``Users``, held here), logins and tokens (``Accounts(engine)``).
- ``engine.queries``: every read model.
- ``engine.definitions``: which definition a new object starts under (the deployment's defaults, issue 20).

``Engine`` wires them over one ``Runtime`` (database, clocks, settings) and hands each call to its part; the
names other packages import from here are re-exported.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from engine.accounts import Users
from engine.clock import Clock, SimulatedClock, SystemClock, simulated
from engine.commands import TASK_OUTCOMES, Commands
from engine.definitions import Definitions
from engine.firing import Fired, Firing, RetryPolicy
from engine.holidays_dk import danish_holiday
from engine.migration import Migrations
from engine.notes import Notes
from engine.notification import Documents
from engine.organisation import Organisation
from engine.person_report import PersonReports
from engine.queries import TIMER_STATUSES, Queries
from engine.reads import ReadLog
from engine.retention import Retention
from engine.uow import (
    ACTING_ROLES,
    ADMIN_ROLES,
    TIMER_USER,
    Actor,
    Runtime,
    UnitOfWork,
    check_actor,
    unit_of_work,
)
from persistence.database import Database
from persistence.repository import Repository
from workflows.definition import Settings

#: What entry/, scheduler/, tests and bench import from here (each defined in its part).
__all__ = ["ACTING_ROLES", "ADMIN_ROLES", "TASK_OUTCOMES", "TIMER_STATUSES", "TIMER_USER", "Engine", "Fired",
           "RetryPolicy"]


class Engine:
    """One database, its clock and the rules' settings, and every operation on them. ``persist_clock``: write
    a simulated clock's now to the database with every change (a simulated-clock database); ``wall_clock``: real
    time, for ``recorded_at`` and logins (default: the system's)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings | None = None,
        *,
        wall_clock: Clock | None = None,
        persist_clock: bool = False,
    ) -> None:
        self.runtime = Runtime(db=db, clock=clock, settings=settings or Settings(is_holiday=danish_holiday),
                               wall_clock=wall_clock or SystemClock(), persist_clock=persist_clock)
        self.commands = Commands(self.runtime)
        self.firing = Firing(self.runtime, self.commands)
        self.queries = Queries(self.runtime)
        self.user_registry = Users(self.runtime)
        self.organisation = Organisation(self.runtime)
        self.notes = Notes(self.runtime, self.commands)
        self.documents = Documents(self.runtime, self.commands)
        self.person_reports = PersonReports(self.runtime)
        self.retention = Retention(self.runtime)
        self.migrations = Migrations(self.runtime, self.commands)
        self.definitions = Definitions(self.runtime)

        # The command path.
        self.open = self.commands.open
        # A case's notify with a notification document sends the document (issue 18): ``Documents.apply``.
        self.apply = self.documents.apply
        self.add_person = self.commands.add_person
        self.update_person = self.commands.update_person
        self.correct_person = self.commands.correct_person
        self.resolve_task = self.commands.resolve_task
        # Timers.
        self.fire_due = self.firing.fire_due
        self.next_due = self.firing.next_due
        # Users.
        self.check_new_user = self.user_registry.check_new_user
        self.add_user = self.user_registry.add_user
        self.bootstrap_users = self.user_registry.bootstrap_users
        # Units, assignment, access (issue 17).
        self.add_unit = self.organisation.add_unit
        self.list_units = self.organisation.list_units
        self.check_units = self.organisation.check_units
        self.set_member = self.organisation.set_member
        self.remove_member = self.organisation.remove_member
        self.placements = self.organisation.placements
        self.set_placement = self.organisation.set_placement
        self.assign = self.organisation.assign
        self.transfer = self.organisation.transfer
        # Notes and contact attempts (issue 17).
        self.note = self.notes.note
        self.attempt = self.notes.attempt
        self.notes_of = self.notes.notes_of
        self.hard_to_reach = self.notes.hard_to_reach
        # The written notification as a document (issue 18, §3.1).
        self.make_document = self.documents.make
        self.document = self.documents.show
        self.documents_of = self.documents.of_case
        self.changed_since_sent = self.documents.changed_since_sent
        # A person's own copy (issue 19 item 2, GDPR art. 15): read and audited in one transaction.
        self.person_report = self.person_reports.make
        # Retention and purge (issue 19).
        self.retention_rules = self.retention.rules
        self.set_retention = self.retention.set_rule
        self.retention_due = self.retention.due
        self.purge = self.retention.purge
        # Open objects moved to a later workflow definition (issue 20).
        self.migrate = self.migrations.migrate
        self.check_definitions_loaded = self.migrations.check_loaded
        # Which definition new objects start under (issue 20): the deployment's defaults.
        self.set_workflow_default = self.definitions.set_default
        self.workflow_defaults = self.definitions.defaults
        self.workflow_defaults_in_force = self.definitions.in_force
        # Reading.
        self.show = self.queries.show
        self.list = self.queries.list
        self.related = self.queries.related
        self.state_counts = self.queries.state_counts
        self.users = self.queries.users
        self.timers = self.queries.timers
        self.timer_status = self.queries.timer_status
        self.worklist = self.queries.worklist
        self.worklist_page = self.queries.worklist_page
        self.search = self.queries.search
        self.refs = self.queries.refs
        self.check_readable = self.queries.check_readable
        # Reads of personal data (issue 19 item 3): the recorder, and the read log's summaries.
        self.reads = self.runtime.reads
        self.read_log = ReadLog(self.runtime).read
        self.check_read_log = ReadLog(self.runtime).check
        self.dose_forecast = self.queries.dose_forecast
        self.calendar = self.queries.calendar
        self.audit = self.queries.audit
        self.audit_timeline = self.queries.audit_timeline
        self.audit_verify = self.queries.audit_verify
        self.audit_replay = self.queries.audit_replay
        self.audit_export = self.queries.audit_export
        self.audit_page = self.queries.audit_page
        self.audit_choices = self.queries.audit_choices
        self.audit_entry = self.queries.audit_entry

    # ---- what the parts share ------------------------------------------------------------------------------

    @property
    def db(self) -> Database:
        return self.runtime.db

    @property
    def clock(self) -> Clock:
        return self.runtime.clock

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def wall_clock(self) -> Clock:
        return self.runtime.wall_clock

    @wall_clock.setter
    def wall_clock(self, clock: Clock) -> None:
        self.runtime.wall_clock = clock

    @property
    def persist_clock(self) -> bool:
        return self.runtime.persist_clock

    @persist_clock.setter
    def persist_clock(self, persist: bool) -> None:
        self.runtime.persist_clock = persist

    def next_armed(self) -> datetime | None:
        """The earliest due instant of a pending timer not waiting for a retry, in one indexed query: the worker's
        cheap check, every half second on SQLite, for timers other processes armed."""
        with self.db.reading() as session:
            return Repository(session).next_armed()

    # ---- units of work and authorization -------------------------------------------------------------------

    def unit_of_work(self, actor: str | None = None, command: str | None = None, target: str | None = None,
                     roles: tuple[str, ...] = ACTING_ROLES) -> AbstractContextManager[UnitOfWork]:
        """A unit of work on this engine's database (``engine.uow.unit_of_work``): authorized for ``command``
        when an actor is given, committed only if ``commit()`` is called, a refusal audited."""
        return unit_of_work(self.runtime, actor, command, target, roles)

    def authorize(self, actor: str, command: str, roles: tuple[str, ...] = ACTING_ROLES) -> Actor:
        """Check that ``actor`` may run ``command`` (for commands that change the database outside the workflows,
        like moving a simulated clock, or before asking for a new user's password); returns the actor.
        NotPermitted otherwise, audited."""
        return check_actor(self.runtime, actor, command, roles)

    def viewing_as(self, viewer: str | None) -> Engine:
        """Reads from now on show what ``viewer`` may see (``Runtime.viewer``; None: everything); returns self."""
        self.runtime.viewer = viewer
        return self

    def read_outside(self, object_id: str, *, actor: str, reason: str | None) -> dict[str, Any]:
        """Break the glass: record why ``actor`` reads an object outside their units (on its chain), then show
        it. UsageError without a reason."""
        self.organisation.break_glass(object_id, actor=actor, reason=reason)
        return self.queries.show(object_id, glass=True)

    # ---- the simulated clock -------------------------------------------------------------------------------

    @property
    def simulated_clock(self) -> SimulatedClock:
        """The engine's clock, to move it; UsageError on real time."""
        return simulated(self.runtime.clock)

    def save_clock(self) -> None:
        """Write a simulated clock's now to the database (once moved), when this engine persists it."""
        with self.unit_of_work() as uow:
            uow.save_clock()
            uow.commit()

