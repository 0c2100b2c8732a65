"""The engine: one path applies any trigger, whether a person or a timer pulls it.

Load the object, run the trigger and its guards through the workflow's shared `transitions` machine, write
the new state and facts, cancel and arm timers, append the audit entry, commit: all or nothing. Only the
injected clock is asked for the time.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import IO, Any, NamedTuple

import structlog
from sqlalchemy.exc import IntegrityError

from engine import auditing
from engine.clock import Clock, SimulatedClock, SystemClock
from engine.holidays_dk import danish_holiday
from engine.views import audit_view, instant, jsonable, object_view, person_view, timer_view, user_view
from persistence.audit import Head
from persistence.database import Database, DuplicateKey, translate_errors
from persistence.models import OBJECT_MODELS, Person, Timer
from persistence.repository import Repository, facts_from_row, facts_values, format_id, not_found, parse_id
from workflows.calendar import local_date, local_midnight, to_local
from workflows.course import MAX_DOSES  # §6.3 no more than 2 doses over the person
from workflows.definition import NEW, Related, Settings, Subject, WorkflowDefinition
from workflows.errors import (
    Conflict,
    GuardRefused,
    NotFound,
    NotPermitted,
    RuleRefused,
    TriggerNotAllowed,
    UsageError,
)
from workflows.limits import (
    MAX_DAYS,
    MAX_ID,
    MAX_LIMIT,
    check_born,
    check_clinical_date,
    check_count,
    check_data,
    check_instant,
    check_text,
    shown,
)
from workflows.registry import BY_NAME, WORKFLOWS

log = structlog.get_logger("mpoxflow.engine")

TIMER_STATUSES = ("pending", "fired", "missed", "cancelled", "skipped", "failed")
#: How staff record what happened to a missed task (``task resolve``); done-late only once it was missed.
TASK_OUTCOMES = ("done-late", "not-reachable", "declined", "not-needed")
#: Who may change workflow objects and persons; only admins manage users; auditors change nothing.
ACTING_ROLES = ("staff", "admin")
ADMIN_ROLES = ("admin",)
#: Roles ``add_user`` may give: ``timer`` belongs to the scheduler alone.
USER_ROLES = ("staff", "auditor", "admin")
#: The scheduler's user: the actor of every firing is ``timer:<timer name>`` with this role.
TIMER_USER = "timer"


#: What ``person update`` may change, by option name, and the column each is.
PERSON_FIELDS = {
    "born": "born", "immunocompromised": "immunocompromised", "pregnant": "pregnant",
    "breastfeeding": "breastfeeding", "previous_mpox": "previous_mpox", "smallpox_vaccinated": "smallpox_vaccinated",
    "doses_elsewhere": "doses_elsewhere", "last_dose_on": "last_dose_elsewhere_on",
}


def _check_person(flags: Mapping[str, Any], born: date | None, today: date) -> None:
    """UsageError (saying which option to fix) for a person's facts that cannot be true."""
    if born is not None and born > today:
        raise UsageError(f"the birth date is after today ({today}): correct the date (--born)")
    if born is not None:
        check_born(born)
    doses, last = flags["doses_elsewhere"], flags["last_dose_elsewhere_on"]
    if isinstance(doses, bool) or not isinstance(doses, int) or not 0 <= doses <= MAX_DOSES:
        raise UsageError(f"--doses-elsewhere {doses!r}: give 0, 1 or 2 (no more than 2 doses, SST-mpox-7.1 §6.3)")
    if doses and last is None:
        raise UsageError("doses given elsewhere need the date of the last one: add --last-dose-on DATE (§6.3: the "
                         "next dose is at least 28 days after it)")
    if not doses and last is not None:
        raise UsageError("--last-dose-on goes with --doses-elsewhere 1 or 2")
    if last is not None and last > today:
        raise UsageError(f"--last-dose-on {last} is after today ({today}): record a dose once given")
    if last is not None and born is not None and last < born:
        raise UsageError(f"--last-dose-on {last} is before the birth date: correct the date")
    if last is not None:
        check_clinical_date(last, "last_dose_on", today)


class Actor(NamedTuple):
    """Who makes a change, as the audit entry records it."""

    name: str
    role: str


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


def _whole_weeks(weeks: int, what: str) -> int:
    if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 1:
        raise UsageError(f"the {what} needs a whole number of weeks, 1 or more, not {weeks!r}")
    return weeks


def _due_per_day(repo: Repository, kind: str, name: str, days: list[date], *,
                 day_before: bool = False) -> dict[date, int]:
    """A kind's pending timers of one name per Danish day of ``days`` (consecutive), from one grouped query. Each
    such timer falls due at a local midnight, so each due instant is one day; ``day_before``: a timer at 00:00
    counts for the day that ends there (the last day of a window)."""
    shift = timedelta(days=1 if day_before else 0)
    counts = dict.fromkeys(days, 0)
    for due_at, n in repo.timer_forecast(kind, name, local_midnight(days[0] + shift),
                                         local_midnight(days[-1] + timedelta(days=1) + shift)):
        counts[local_date(due_at) - shift] += n
    return counts


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
        self.settings = settings or Settings(is_holiday=danish_holiday)
        #: Real time, for ``recorded_at`` next to a simulated clock's instant.
        self.wall_clock = wall_clock or SystemClock()
        #: Write the simulated clock's "now" to the database with every change (a simulated-clock database).
        self.persist_clock = persist_clock

    # ---- users and what their roles allow ------------------------------------------------------------------

    def _authorize(self, repo: Repository, actor: str, command: str, target: str | None,
                   roles: tuple[str, ...]) -> Actor:
        """The actor as a user with a role that may run ``command``; NotPermitted (exit 3) otherwise, UsageError
        for a name no user can have (too long, control characters), which is not echoed."""
        check_text(actor, "actor")
        user = repo.user_by_name(actor)
        if user is None:
            raise NotPermitted(
                f"'{actor}' is not a user of this database, so '{command}' was refused: give --actor (or "
                "$MPOXFLOW_ACTOR) a registered name, or ask an admin to add it (`mpoxflow user add NAME --role "
                "staff`; `mpoxflow user list` shows who there is)",
                actor=actor, role=None, user=None, command=command, target=target,
            )
        if user.disabled_at is not None:
            raise NotPermitted(f"'{command}' refused for {actor}: this user is disabled; ask an admin "
                               f"(`mpoxflow user enable {actor}`). This refusal is recorded in the audit log",
                               actor=actor, role=user.role, user=user.id, command=command, target=target)
        if user.role in roles:
            return Actor(user.name, user.role)
        if user.role == "auditor":
            why = ("auditors read, verify and export the log but change nothing: ask a member of staff to do it. "
                   "This refusal is recorded in the audit log")
        elif user.role == TIMER_USER:
            why = "the timer user is the scheduler's own: act under your own user name"
        else:
            why = (f"only {' or '.join(roles)} users may do that; ask an admin. "
                   "This refusal is recorded in the audit log")
        raise NotPermitted(f"'{command}' refused for {actor} ({user.role}): {why}", actor=actor, role=user.role,
                           user=user.id, command=command, target=target)

    @contextmanager
    def _refusals_logged(self) -> Iterator[None]:
        """Around a change's transaction: a change refused for the actor's role is rolled back, then the
        refusal itself is appended to the audit log (on the user's own chain) in a transaction of its own."""
        try:
            yield
        except NotPermitted as refused:
            if refused.user is None:
                log.warning("change_refused", command=refused.command, reason="not a user")
            else:
                self._log_refusal(refused)
            raise

    def _log_refusal(self, refused: NotPermitted) -> None:
        assert refused.user is not None and refused.role is not None
        with self.db.transaction() as session:
            repo = Repository(session)
            seq = self._audit(
                repo, Head.of(repo.head_row("user", refused.user)), kind="user", pk=refused.user, workflow=None,
                trigger="refused", from_state=None, to_state=None, actor=Actor(refused.actor, refused.role),
                reason=refused.message, now=self.clock.now(), rule=None,
                data={"command": refused.command, "object": refused.target}, changes=None,
            ).seq
        log.warning("change_refused", user=format_id("user", refused.user), role=refused.role,
                    command=refused.command, object=refused.target, audit_seq=seq)

    def authorize(self, actor: str, command: str, roles: tuple[str, ...] = ACTING_ROLES) -> Actor:
        """Check that ``actor`` may run ``command`` (for commands that change the database outside the workflows,
        like moving a simulated clock, or before asking for a new user's password). A refusal is audited."""
        with self._refusals_logged(), self.db.reading() as session:
            return self._authorize(Repository(session), actor, command, None, roles)

    @staticmethod
    def check_new_user(name: str, role: str) -> str:
        """The user name to register (stripped); UsageError for a bad name or role."""
        name = check_text(name.strip(), "name")
        if not name or name.startswith("timer:"):
            raise UsageError(f"'{name}' cannot be a user name: give 1 to 128 characters, not starting with 'timer:' "
                             "(the scheduler's actors)")
        if role not in USER_ROLES:
            raise UsageError(f"'{shown(role)}' is not a role a user can have: use one of {', '.join(USER_ROLES)}")
        return name

    def add_user(self, name: str, role: str, *, actor: str, reason: str | None = None,
                 password_hash: str | None = None) -> dict[str, Any]:
        """Register a user with a role (staff, auditor, admin), with a password hash to log in with
        (``engine.accounts.Accounts.add_user`` makes it) or none (API tokens only). Only an admin may. Raises
        UsageError for a bad name or role, RuleRefused when the name is taken."""
        name = self.check_new_user(name, role)
        with self._refusals_logged(), self.db.transaction() as session:
            repo = Repository(session)
            who = self._authorize(repo, actor, "user add", None, ADMIN_ROLES)
            return self._insert_user(repo, name, role, who, reason, password_hash)

    def _insert_user(self, repo: Repository, name: str, role: str, who: Actor, reason: str | None,
                     password_hash: str | None = None) -> dict[str, Any]:
        existing = repo.user_by_name(name)
        if existing is not None:
            raise RuleRefused(f"there is already a user named so: {format_id('user', existing.id)} "
                              f"({existing.role}); see `mpoxflow user list`")
        now = self.clock.now()
        pk = repo.insert_user({"name": name, "role": role, "created_at": now, "audit_pos": None,
                               "audit_seq": None, "audit_hash": None, "password_hash": password_hash})
        changes = {"name": name, "role": role} | ({"password": "(set)"} if password_hash else {})
        self._audit(repo, Head.of(None), kind="user", pk=pk, workflow=None, trigger="add", from_state=None,
                    to_state=None, actor=who, reason=reason, now=now, rule=None, data={"role": role},
                    changes=changes)
        log.info("user_added", user=format_id("user", pk), role=role)
        return user_view(SimpleNamespace(id=pk, name=name, role=role, created_at=now, password_hash=password_hash))

    def bootstrap_users(self, first_admin: str) -> list[dict[str, Any]]:
        """On a database without users: the scheduler's ``timer`` user and ``first_admin`` as its first admin
        (the one who created the database), both audited. Does nothing when there are users."""
        with self.db.reading() as session:
            if Repository(session).has_users():
                return []
        try:
            with self.db.transaction() as session:
                repo = Repository(session)
                if repo.has_users():
                    return []
                admin = Actor(first_admin, "admin")
                made = [self._insert_user(repo, first_admin, "admin", admin, "first admin: created the database")]
                if first_admin != TIMER_USER:
                    made.append(self._insert_user(repo, TIMER_USER, TIMER_USER, admin,
                                                  "the scheduler: actor of every timer's firing"))
                return made
        except (IntegrityError, DuplicateKey):
            # Several processes started on the new database at once (every one makes the `timer` user): the
            # first one's users stand, the others' transactions are rolled back.
            with self.db.reading() as session:
                if Repository(session).has_users():
                    return []
            raise

    def users(self) -> builtins.list[dict[str, Any]]:
        with self.db.reading() as session:
            return [user_view(u) for u in Repository(session).users()]

    # ---- people --------------------------------------------------------------------------------------------

    def add_person(
        self,
        *,
        ref: str,
        born: date | None = None,
        immunocompromised: bool = False,
        pregnant: bool = False,
        breastfeeding: bool = False,
        previous_mpox: bool = False,
        smallpox_vaccinated: bool = False,
        doses_elsewhere: int = 0,
        last_dose_on: date | None = None,
        actor: str,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Register a person. Raises UsageError for an empty ref, a birth date in the future or doses elsewhere
        without their date, RuleRefused when the ref is registered already."""
        ref = check_text(ref.strip(), "ref")
        if not ref:
            raise UsageError("--ref is empty: give the person's external reference")
        if reason is not None:
            check_text(reason, "reason")
        try:
            return self._add_person(ref, born, immunocompromised=immunocompromised, pregnant=pregnant,
                                    breastfeeding=breastfeeding, previous_mpox=previous_mpox,
                                    smallpox_vaccinated=smallpox_vaccinated, doses_elsewhere=doses_elsewhere,
                                    last_dose_on=last_dose_on, actor=actor, reason=reason)
        except DuplicateKey:
            # A parallel registration of the same reference committed first (past the check below): name the
            # person it made, never the reference.
            with self.db.reading() as session:
                existing = Repository(session).person_by_ref(ref)
            if existing is None:
                raise
            raise RuleRefused(f"a person with that reference is registered already as "
                              f"{format_id('person', existing.id)}: use that id") from None

    def _add_person(self, ref: str, born: date | None, *, immunocompromised: bool, pregnant: bool,
                    breastfeeding: bool, previous_mpox: bool, smallpox_vaccinated: bool, doses_elsewhere: int,
                    last_dose_on: date | None, actor: str, reason: str | None) -> dict[str, Any]:
        with self._refusals_logged(), self.db.transaction() as session:
            now = self.clock.now()
            repo = Repository(session)
            who = self._authorize(repo, actor, "person add", None, ACTING_ROLES)
            flags = {
                "immunocompromised": immunocompromised, "pregnant": pregnant, "breastfeeding": breastfeeding,
                "previous_mpox": previous_mpox, "smallpox_vaccinated": smallpox_vaccinated,
                "doses_elsewhere": doses_elsewhere, "last_dose_elsewhere_on": last_dose_on,
            }
            _check_person(flags, born, local_date(now))
            existing = repo.person_by_ref(ref)
            if existing is not None:
                raise RuleRefused(
                    f"a person with that reference is registered already as {format_id('person', existing.id)}: "
                    "use that id"
                )
            person = Person(ref=ref, born=born, created_at=now, **flags)
            session.add(person)
            session.flush()
            # The audit keeps internal ids and flags only: never the reference or the birth date.
            self._audit(
                repo, Head.of(None), kind="person", pk=person.id, workflow=None, trigger="register",
                from_state=None, to_state=None, actor=who, reason=reason, now=now, rule=None,
                data=jsonable({**flags, "born_given": born is not None}), changes=jsonable(flags),
            )
            self._save_clock(repo)
            log.info("person_registered", person=format_id("person", person.id))
            return person_view(person)

    def update_person(self, person_id: str, *, changes: Mapping[str, Any], actor: str,
                      reason: str | None = None) -> dict[str, Any]:
        """Change what the rules read about a person (``person update``): pregnancy and breastfeeding (§6.2.1)
        come and go, immunodeficiency, a previous infection or smallpox vaccination become known, doses given
        elsewhere are recorded (§6.3), a birth date is corrected. ``changes`` holds only what is to change, by
        ``PERSON_FIELDS`` name (``last_dose_on`` for ``last_dose_elsewhere_on``). Audited with internal ids and
        flags only (a corrected birth date is recorded as ``born_changed``, never its value)."""
        _, pk = parse_id(person_id, kind="person")
        unknown = sorted(set(changes) - set(PERSON_FIELDS))
        if unknown:
            raise UsageError(f"a person has no field {', '.join(unknown)}: change {', '.join(PERSON_FIELDS)}")
        if not changes:
            raise UsageError("nothing to change: give at least one of --born, --pregnant/--not-pregnant, "
                             "--breastfeeding/--not-breastfeeding, --immunocompromised/--not-immunocompromised, "
                             "--previous-mpox, --smallpox-vaccinated, --doses-elsewhere with --last-dose-on")
        with self._refusals_logged(), self.db.transaction() as session:
            now = self.clock.now()
            repo = Repository(session)
            who = self._authorize(repo, actor, "person update", format_id("person", pk), ACTING_ROLES)
            person = repo.person(pk)
            values = {PERSON_FIELDS[k]: v for k, v in changes.items()}
            if values.get("doses_elsewhere") == 0 and "last_dose_elsewhere_on" not in values:
                values["last_dose_elsewhere_on"] = None  # no doses elsewhere any more: no last one either
            born = values.pop("born", person.born)
            flags = {column: getattr(person, column) for column in PERSON_FIELDS.values() if column != "born"}
            flags.update(values)
            if flags["doses_elsewhere"] is None:
                flags["doses_elsewhere"] = 0
            _check_person(flags, born, local_date(now))
            written = {k: v for k, v in flags.items() if getattr(person, k) != v}
            born_changed = born != person.born
            if not written and not born_changed:
                raise UsageError(f"{format_id('person', pk)} already has these values: nothing to change")
            for column, value in written.items():
                setattr(person, column, value)
            person.born = born
            session.flush()
            self._audit(
                repo, Head.of(person), kind="person", pk=pk, workflow=None, trigger="update",
                from_state=None, to_state=None, actor=who, reason=reason, now=now, rule=None,
                data=jsonable({**written, "born_changed": born_changed}), changes=jsonable(written),
            )
            self._save_clock(repo)
            log.info("person_updated", person=format_id("person", pk), fields=sorted(written)
                     + (["born"] if born_changed else []))
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
        self._check_input(data, reason)
        with self._refusals_logged(), self.db.transaction() as session:
            repo = Repository(session)
            who = self._authorize(repo, actor, f"{kind} {trigger}", person, ACTING_ROLES)
            # The person's row is held until the commit: parallel creations for one person run in turn, so the
            # guards (one course under way, one open case) read what the one before committed.
            repo.lock_person(person_pk)
            changed = self._run(
                repo, definition=definition, kind=kind, row=None, timers=[], trigger=trigger, data=data,
                actor=who, reason=reason, now=self.clock.now(), person_pk=person_pk,
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
        self._check_input(data or {}, reason)
        check_count(expected_version, "if_version (--if-version)", low=1, high=MAX_ID)
        with self._refusals_logged(), self.db.transaction() as session:
            repo = Repository(session)
            who = self._authorize(repo, actor, f"{kind} {trigger}", format_id(kind, pk), ACTING_ROLES)
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
                trigger=trigger, data=data or {}, actor=who, reason=reason, now=self.clock.now(),
            )
            self._save_clock(repo)
            return changed.view()

    def _check_input(self, data: Mapping[str, Any], reason: str | None) -> None:
        """UsageError, before anything is read or written, for a text too long or with control characters, or a
        clinical date before its bound (``workflows.limits``)."""
        check_data(data, local_date(self.clock.now()))
        if reason is not None:
            check_text(reason, "reason")

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
        actor: Actor,
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
            repo.lock_person(person)  # as in `open`: the spawned object's guards read committed state
            born = self._run(
                repo, definition=WORKFLOWS[spawn.kind], kind=spawn.kind, row=None, timers=[], trigger=spawn.trigger,
                data=spawn.data, actor=actor, reason=f"from {subject.object_id}: {trigger}", now=now,
                person_pk=person,
            )
            setattr(subject.facts, spawn.link, format_id(spawn.kind, born.obj.id))

        written = {**facts_values(subject.facts), "state": subject.state}
        values = {**written, "updated_at": now}
        if row is None:
            values.update(person_id=person_pk, workflow=definition.name, created_at=now, version=1)
            # audit_* start empty: the head is set once the entry is written, below
            values.update(audit_pos=None, audit_seq=None, audit_hash=None)
            self._refuse_duplicate(repo, definition, values)
            obj = SimpleNamespace(id=repo.insert_object(kind, values), **values)
            changes = jsonable({**written, "person_id": person_pk, "workflow": definition.name})
        else:
            changes = {k: jsonable(v) for k, v in written.items() if jsonable(getattr(row, k)) != jsonable(v)}
            obj = SimpleNamespace(**{**row._mapping, **values, "version": row.version + 1})

        current = [SimpleNamespace(**t._mapping) for t in timers]
        cancelled, done = self._close_timers(repo, current, subject, now)
        new_rows = [
            {"object_kind": kind, "object_id": obj.id, "name": spec.name, "due_at": spec.due_at, "rule": spec.rule,
             "task": spec.task, "overdue_at": spec.overdue_at, "status": "pending", "armed_at": now,
             "closed_at": None, "satisfied_at": None, "note": None}
            for spec in subject.armed
        ]
        armed = [SimpleNamespace(id=i, **r) for i, r in zip(repo.insert_timers(new_rows), new_rows, strict=True)]
        head = self._audit(
            repo, Head.of(row), kind=kind, pk=obj.id, workflow=obj.workflow, trigger=trigger,
            from_state=None if from_state == NEW else from_state, to_state=subject.state, actor=actor,
            reason=reason, now=now, rule=rule, data=jsonable(dict(data)), changes=changes,
            armed=[{"timer": format_id("timer", t.id), "name": t.name, "due_at": jsonable(t.due_at),
                    "rule": t.rule, "task": t.task, "overdue_at": jsonable(t.overdue_at)} for t in armed],
            cancelled=cancelled, done=done, timer_pk=timer_pk, move_head=row is None,
        )
        seq = head.seq
        assert seq is not None
        if row is not None:
            # The object's new values, its version check and its audit head in one statement. A concurrent change
            # fails here (version) or already at the entry (its chain position is taken): all is rolled back.
            head_values = {"audit_pos": head.pos, "audit_seq": head.seq, "audit_hash": head.hash}
            if not repo.update_object(kind, row.id, row.version, {**values, **head_values}):
                raise Conflict(
                    f"{format_id(kind, row.id)} was changed by someone else while this change was being made; "
                    "nothing was written. Show it again and retry."
                )

        # Other objects the change reaches (a confirmed case ends the person's open course), after this one is
        # written: their guards read it.
        for cascade in subject.cascades:
            targets = ([cascade.pk] if cascade.pk is not None
                       else repo.objects_of_person(cascade.kind, person, cascade.states))
            for pk in targets:
                target = repo.load_object(cascade.kind, pk)
                if any(getattr(target, column) != value for column, value in cascade.match.items()):
                    continue
                self._run(
                    repo, definition=BY_NAME[target.workflow], kind=cascade.kind, row=target,
                    timers=repo.object_timers(cascade.kind, pk), trigger=cascade.trigger, data=cascade.data,
                    actor=actor, reason=f"from {format_id(kind, obj.id)}: {trigger}", now=now,
                )

        log.info(
            "transition", object=format_id(kind, obj.id), trigger=trigger,
            from_state=None if from_state == NEW else from_state, to_state=subject.state, rule=rule,
            role=actor.role, audit_seq=seq, timers_armed=[t.name for t in armed],
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
    def _close_timers(
        repo: Repository, timers: list[Any], subject: Subject, now: datetime
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Cancel what the transition cancels or re-arms; mark satisfied the tasks it completes. ``timers`` (the
        object's, as loaded) are updated in place to match what is written. Returns (cancelled, done) as the
        audit entry records them."""
        rearmed = {t.name for t in subject.armed}
        groups: dict[str, list[Any]] = {"re-armed": [], "cancelled by the transition": [], "task done in time": []}
        satisfied: list[Any] = []
        late: list[Any] = []
        for timer in timers:
            if timer.name in subject.satisfied and timer.task is not None and timer.satisfied_at is None:
                # A task is done only while its deadline has not passed: a pending task, or one whose timer
                # fired at the start of its period (dose 2, with a later overdue instant). A missed task is never
                # done: its late completion resolves it as done late (README, Decisions).
                if timer.status == "pending" or (timer.status == "fired" and timer.overdue_at is not None):
                    satisfied.append(timer)
                elif timer.status == "missed" and timer.resolved_at is None:
                    late.append(timer)
            done = timer in satisfied
            # A fired task still open (dose 2: due, overdue later) that the transition cancels ends undone.
            still_open = timer.status == "fired" and timer.overdue_at is not None and timer.satisfied_at is None
            if timer.status != "pending" and not (still_open and not done and timer.name in subject.cancelled):
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
        resolution = f"recorded late ({subject.object_id}: {subject.state})"
        repo.update_timers([t.id for t in late], {"outcome": "done-late", "resolved_at": now,
                                                  "resolution": resolution})
        for t in late:
            t.outcome, t.resolved_at, t.resolution = "done-late", now, resolution
        closed: list[dict[str, Any]] = []
        for note, group in groups.items():
            # Cancellations are written before any new timer: one pending timer per name and object.
            repo.update_timers([t.id for t in group], {"status": "cancelled", "closed_at": now, "note": note})
            for t in group:
                t.status, t.closed_at, t.note = "cancelled", now, note
                closed.append({"timer": format_id("timer", t.id), "name": t.name, "why": note})
        return closed, [{"timer": format_id("timer", t.id), "name": t.name} for t in satisfied] + [
            {"timer": format_id("timer", t.id), "name": t.name, "outcome": "done-late", "resolution": resolution}
            for t in late]

    def _audit(
        self, repo: Repository, head: Head, *, kind: str, pk: int, workflow: str | None, trigger: str,
        from_state: str | None, to_state: str | None, actor: Actor, reason: str | None, now: datetime,
        rule: str | None, data: dict[str, Any], changes: dict[str, Any] | None, armed: list[Any] | None = None,
        cancelled: list[Any] | None = None, done: list[Any] | None = None, timer_pk: int | None = None,
        move_head: bool = True,
    ) -> Head:
        """Append the audit entry of a change, chained after ``head`` (the object's last entry, as its row holds
        it), and move the row's head to it; returns the entry's sequence number. ``changes``: the columns the
        change wrote (None: the object was not written). ``timer_pk``: the timer whose firing this is (unique in
        the log: a timer's firing can be recorded only once). ``move_head`` False: the caller writes the returned
        head with the object's own UPDATE."""
        if reason:
            check_text(reason, "reason")  # every change's reason, whichever way it came (rolled back with it)
        entry = head.link({
            "timer_id": timer_pk,
            "object_kind": kind, "object_id": pk, "workflow": workflow, "trigger": trigger,
            "from_state": from_state, "to_state": to_state, "actor": actor.name, "role": actor.role,
            "reason": reason or None, "at": now, "recorded_at": self.wall_clock.now(), "rule": rule, "data": data,
            "changes": changes, "timers_armed": armed or [], "timers_cancelled": cancelled or [],
            "timers_done": done or [],
        })
        head = Head(entry["pos"], repo.insert_audit(entry), entry["hash"])
        if move_head:
            repo.set_head(kind, pk, head)
        return head

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
        _log_fired([fired] if fired is not None else [])
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
        _log_fired(fired)  # after the commit: the log counts exactly the timers that fired
        return fired

    def _fire(self, repo: Repository, timer_id: int, now: datetime) -> Fired | None:
        """Claim and fire one timer inside the caller's transaction."""
        timer = repo.claim_timer(timer_id, now)
        if timer is None:
            return None
        kind, name = timer.object_kind, timer.name
        row = repo.load_object(kind, timer.object_id)
        late = max(0, int((now - timer.due_at).total_seconds()))
        data: dict[str, Any] = {"timer": format_id("timer", timer.id), "due_at": timer.due_at,
                                "fired_late_by_seconds": late}
        # A task whose deadline this is (no later overdue instant) and that nobody did or resolved: missed.
        missed = (timer.task is not None and timer.overdue_at is None and timer.satisfied_at is None
                  and timer.resolved_at is None)
        if missed:
            data["outcome"] = "missed"
        actor = Actor(f"timer:{name}", TIMER_USER)
        status, note, to_state = ("missed" if missed else "fired"), None, row.state
        try:
            # A savepoint, so that a refused trigger leaves no partial writes behind.
            with repo.session.begin_nested():
                changed = self._run(
                    repo, definition=BY_NAME[row.workflow], kind=kind, row=row,
                    timers=repo.object_timers(kind, row.id), trigger=name, data=data, actor=actor,
                    reason=(f"missed: the task '{timer.task}' was not done by its deadline "
                            f"{to_local(timer.due_at).isoformat()}" if missed
                            else f"due {to_local(timer.due_at).isoformat()}"),
                    now=now, timer_pk=timer.id,
                )
                if missed:
                    repo.update_timers([timer.id], {"status": "missed"})
            seq, to_state = changed.audit_seq, changed.obj.state
        except (TriggerNotAllowed, GuardRefused) as refused:
            status, note = "skipped", str(refused)
            repo.update_timers([timer.id], {"status": "skipped", "note": note})
            skip = self._audit(
                repo, Head.of(row), kind=kind, pk=row.id, workflow=row.workflow, trigger=name,
                from_state=row.state, to_state=row.state, actor=actor, reason=f"skipped: {note}", now=now,
                rule=timer.rule, data=jsonable({**data, "outcome": "skipped", "note": note}), changes=None,
                timer_pk=timer.id,
            )
            assert skip.seq is not None
            seq = skip.seq
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
            # On the object's own chain; a timer whose object is gone is recorded on the scheduler user's.
            kind, pk = timer.object_kind, timer.object_id
            try:
                head = Head.of(repo.head_row(kind, pk))
            except NotFound:
                scheduler = repo.user_by_name(TIMER_USER)
                if scheduler is None:
                    raise
                kind, pk, head = "user", scheduler.id, Head.of(scheduler)
            self._audit(
                repo, head, kind=kind, pk=pk, workflow=None, trigger=timer.name,
                from_state=None, to_state=None, actor=Actor(f"timer:{timer.name}", TIMER_USER),
                reason=f"parked as failed after {attempts} attempts: {what}", now=now, rule=timer.rule,
                data={"timer": format_id("timer", timer_id), "object": format_id(timer.object_kind, timer.object_id),
                      "attempts": attempts, "outcome": "failed", "error": what},
                changes=None, timer_pk=timer_id,
            )
            log.error("timer_failed", timer=format_id("timer", timer_id), name=timer.name, attempts=attempts,
                      error=type(error).__name__)
            return
        retry_at = now + policy.backoff(attempts)
        repo.update_timers([timer_id], {"attempts": attempts, "last_error": what, "next_attempt_at": retry_at})
        log.warning("timer_retry", timer=format_id("timer", timer_id), name=timer.name, attempts=attempts,
                    retry_at=retry_at.isoformat(), error=type(error).__name__)

    # ---- tasks ---------------------------------------------------------------------------------------------

    def resolve_task(self, timer_id: str, outcome: str, *, actor: str, reason: str | None) -> dict[str, Any]:
        """Record what happened to a task (``task resolve``): a **missed** task (its deadline passed undone) with
        done-late, not-reachable, declined or not-needed; a task still pending with not-reachable, declined or
        not-needed (it leaves the worklist and is never missed; its timer still fires). The task's status stays
        as it is (a missed task is never recorded as done); the resolution is audited on the object's chain.
        UsageError for a bad outcome or no reason, RuleRefused for a timer that is no task or is closed."""
        _, pk = parse_id(timer_id, kind="timer")
        if outcome not in TASK_OUTCOMES:
            raise UsageError(f"'{shown(outcome)}' is not an outcome: use one of {', '.join(TASK_OUTCOMES)} (--outcome)")
        if not (reason or "").strip():
            raise UsageError("say what happened with --reason: it goes into the audit entry and onto the task")
        assert reason is not None
        with self._refusals_logged(), self.db.transaction() as session:
            repo = Repository(session)
            label = format_id("timer", pk)
            who = self._authorize(repo, actor, "task resolve", label, ACTING_ROLES)
            timer = session.get(Timer, pk)
            if timer is None:
                raise not_found(label, "timer")
            if timer.task is None:
                raise RuleRefused(f"{label} ({timer.name}) is an automatic timer, not a task: nothing to resolve",
                                  rule=timer.rule)
            if timer.resolved_at is not None:
                raise RuleRefused(f"{label} is resolved already ({timer.outcome}, {instant(timer.resolved_at)}): "
                                  "see `mpoxflow show " + label + "`", rule=timer.rule)
            if timer.satisfied_at is not None:
                raise RuleRefused(f"{label} was done in time ({instant(timer.satisfied_at)}): nothing to resolve",
                                  rule=timer.rule)
            if timer.status == "missed":
                pass
            elif timer.status in ("pending", "fired"):
                if outcome == "done-late":
                    raise RuleRefused(f"{label} is not missed (due {instant(timer.due_at)}): record the task itself "
                                      "(its command), or resolve it as not-reachable, declined or not-needed",
                                      rule=timer.rule)
            else:
                raise RuleRefused(f"{label} is {timer.status}: only an open or missed task can be resolved",
                                  rule=timer.rule)
            now = self.clock.now()
            kind, object_pk = timer.object_kind, timer.object_id
            row = repo.load_object(kind, object_pk)
            text = reason.strip()
            timer.outcome, timer.resolved_at, timer.resolution = outcome, now, text
            session.flush()
            seq = self._audit(
                repo, Head.of(row), kind=kind, pk=object_pk, workflow=row.workflow, trigger="resolve",
                from_state=row.state, to_state=row.state, actor=who, reason=text, now=now, rule=timer.rule,
                data={"timer": label, "name": timer.name, "outcome": outcome, "status": timer.status},
                changes=None,
            ).seq
            self._save_clock(repo)
            log.info("task_resolved", timer=label, object=format_id(kind, object_pk), outcome=outcome,
                     status=timer.status, audit_seq=seq)
            return timer_view(timer)

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

    def show(self, object_id: str, *, as_of: datetime | None = None) -> dict[str, Any]:
        """One object with its timers; with ``as_of``, a case, contact or course as its audit entries up to
        that instant describe it (the log alone, not the tables)."""
        kind, pk = parse_id(object_id)
        with self.db.reading() as session:
            repo = Repository(session)
            if as_of is not None:
                if as_of.tzinfo is None:
                    raise UsageError(f"--as-of {as_of.isoformat()} has no offset: give an instant with one")
                check_instant(as_of, "--as-of (as_of)")
                if kind not in OBJECT_MODELS:
                    raise UsageError(f"--as-of shows cases, contacts and courses as they were, not a {kind}: "
                                     f"`mpoxflow audit timeline {object_id}` prints its history")
                return auditing.as_of(repo, kind, pk, as_of)
            if kind == "user":
                return user_view(repo.head_row("user", pk))
            if kind == "person":
                person = repo.person(pk)
                cases = repo.objects_linked("case", "person_id", pk)
                return person_view(person, [format_id("case", c.id) for c in cases])
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
                if state is not None:
                    raise UsageError("persons have no state: drop the state filter (--state)")
                return [person_view(p) for p in repo.persons()]
            if state is not None and state not in WORKFLOWS[kind].states:
                raise UsageError(
                    f"'{shown(state)}' is not a {kind} state: use one of {', '.join(WORKFLOWS[kind].states)}"
                )
            rows = repo.objects(kind, state)
            timers = repo.timers_of_many(kind, [r.id for r in rows])
            return [object_view(kind, r, timers[r.id]) for r in rows]

    def timers(self, status: str | None = None, limit: int = 1000) -> builtins.list[dict[str, Any]]:
        """Timers, soonest first (``status``: pending, fired, cancelled, skipped, failed)."""
        if status is not None and status not in TIMER_STATUSES:
            raise UsageError(f"'{shown(status)}' is not a timer status: use one of {', '.join(TIMER_STATUSES)}")
        check_count(limit, "--limit (limit)", low=1, high=MAX_LIMIT)
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
        if within is not None and not timedelta(0) <= within <= timedelta(days=MAX_DAYS):
            raise UsageError(f"--within (within): give a number of days from 0 to {MAX_DAYS}")
        now = self.clock.now()
        until = now + within if within is not None else datetime.max.replace(tzinfo=now.tzinfo)
        with self.db.reading() as session:
            items = []
            repo = Repository(session)
            for timer in repo.timers("failed"):  # an operator's task: a timer that could not fire
                items.append({
                    "object": format_id(timer.object_kind, timer.object_id),
                    "name": timer.name,
                    "task": f"timer {timer.name} failed after {timer.attempts} attempts: see `mpoxflow timers "
                            "--status failed`",
                    "due_at": timer_view(timer)["due_at"], "overdue": True, "missed": False, "rule": timer.rule,
                    "timer": format_id("timer", timer.id), "failed": True,
                })
            for timer in repo.open_tasks(until):
                items.append({
                    "object": format_id(timer.object_kind, timer.object_id),
                    "name": timer.name,
                    "task": timer.task,
                    "due_at": timer_view(timer)["due_at"],
                    "overdue": timer.status == "missed" or (timer.overdue_at or timer.due_at) <= now,
                    # The deadline passed undone: it stays until someone records what happened (task resolve).
                    "missed": timer.status == "missed",
                    "rule": timer.rule,
                    "timer": format_id("timer", timer.id),
                })
            return sorted(items, key=lambda i: (datetime.fromisoformat(i["due_at"]), i["timer"]))

    def dose_forecast(self, weeks: int = 8) -> builtins.list[dict[str, Any]]:
        """§6.4 doses 2 falling due, per Danish calendar day from today (the clock's local date) for ``weeks``
        weeks, days without any included: ``[{"date": "2025-03-03", "doses_due": 4}, ...]``. Counts the pending
        ``dose2_due`` timers of courses, from one grouped query; each falls due at a local midnight, so each due
        instant is one day (the days around a daylight-saving change are 23 or 25 hours long)."""
        today = local_date(self.clock.now())
        days = [today + timedelta(days=i) for i in range(7 * _whole_weeks(weeks, "forecast"))]
        with self.db.reading() as session:
            due = _due_per_day(Repository(session), "course", "dose2_due", days)
        return [{"date": day.isoformat(), "doses_due": n} for day, n in due.items()]

    def calendar(self, weeks: int = 8) -> builtins.list[dict[str, Any]]:
        """The next ``weeks`` weeks, Monday to Sunday from this week's Monday (the clock's Danish date), per day:
        doses 2 falling due (§6.4) and contacts' last day of monitoring (§5.5: the ``monitoring_ends`` timer fires
        at 00:00 after that day)."""
        today = local_date(self.clock.now())
        monday = today - timedelta(days=today.weekday())
        days = [monday + timedelta(days=i) for i in range(7 * _whole_weeks(weeks, "calendar"))]
        with self.db.reading() as session:
            repo = Repository(session)
            doses = _due_per_day(repo, "course", "dose2_due", days)
            ends = _due_per_day(repo, "contact", "monitoring_ends", days, day_before=True)
        return [{"date": day.isoformat(), "past": day < today, "today": day == today, "doses_due": doses[day],
                 "monitoring_ends": ends[day]} for day in days]

    def state_counts(self, kind: str) -> dict[str, int]:
        """How many objects of a workflow are in each of its states (every state, 0 included)."""
        if kind not in WORKFLOWS:
            raise UsageError(f"'{shown(kind)}' is not a workflow: use one of {', '.join(WORKFLOWS)}")
        with self.db.reading() as session:
            counts = Repository(session).state_counts(kind)
        return {state: counts.get(state, 0) for state in WORKFLOWS[kind].states}

    def related(self, object_id: str) -> dict[str, builtins.list[dict[str, Any]]]:
        """The objects a page shows next to one: a case's contacts, a contact's courses, a person's cases,
        contacts and courses (each with its timers)."""
        kind, pk = parse_id(object_id)
        with self.db.reading() as session:
            repo = Repository(session)
            found: dict[str, Any] = {}
            if kind == "case":
                found["contact"] = repo.objects_linked("contact", "case_id", pk)
            elif kind == "contact":
                found["course"] = repo.objects_linked("course", "contact_id", pk)
            elif kind == "person":
                found = {k: repo.objects_linked(k, "person_id", pk) for k in WORKFLOWS}
            views: dict[str, builtins.list[dict[str, Any]]] = {}
            for k, rows in found.items():
                timers = repo.timers_of_many(k, [r.id for r in rows])
                views[k] = [object_view(k, r, timers[r.id]) for r in rows]
            return views

    def audit(
        self, *, entity: str | None = None, since: datetime | None = None, until: datetime | None = None,
        actor: str | None = None, trigger: str | None = None, limit: int | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Audit entries by sequence number, filtered (all filters together); ``limit``: the newest so many."""
        kind = pk = None
        if entity is not None:
            kind, pk = parse_id(entity)
        if since is not None and until is not None and until < since:
            raise UsageError(f"--until ({instant(until)}) is before --since ({instant(since)}): swap them")
        if limit is not None and limit < 1:
            raise UsageError("--limit must be 1 or more")
        check_count(limit, "--limit (limit)", low=1, high=MAX_LIMIT)
        for text, field in ((actor, "actor"), (trigger, "trigger")):
            if text is not None:
                check_text(text, field)
        for value, what in ((since, "--since (since)"), (until, "--until (until)")):
            if value is not None:
                check_instant(value, what)
        with self.db.reading() as session:
            return [audit_view(e) for e in Repository(session).audit_entries(
                kind=kind, pk=pk, since=since, until=until, actor=actor, trigger=trigger, limit=limit)]

    def audit_timeline(self, object_id: str) -> builtins.list[dict[str, Any]]:
        """One object's life: its entries in chain order. NotFound when it has none."""
        kind, pk = parse_id(object_id)
        with self.db.reading() as session:
            history = Repository(session).object_history(kind, pk)
        if not history:
            raise not_found(object_id, kind)
        return [audit_view(e) for e in history]

    def audit_verify(self) -> dict[str, Any]:
        """Check every object's hash chain and head: ``{"intact", "first_bad_seq", "problems", ...}``."""
        with self.db.snapshot() as session:
            report = auditing.verify(Repository(session))
        view = report.view()
        log.info("audit_verified", intact=report.intact, entries=report.entries, problems=report.problem_count,
                 first_bad_seq=view["first_bad_seq"])
        return view

    def audit_replay(self) -> dict[str, Any]:
        """Rebuild every case, contact and course from the log alone and compare with the tables."""
        with self.db.snapshot() as session:
            count, differences = auditing.replay(Repository(session))
        log.info("audit_replayed", objects=count, differences=len(differences))
        return {"matches": not differences, "objects": count, "differences": differences}

    def audit_export(self, fmt: str, out: IO[str]) -> int:
        """Stream the whole log to ``out`` (``jsonl`` or ``csv``, with a header); returns the entries written."""
        with self.db.snapshot() as session:
            return auditing.export(Repository(session), fmt, out, exported_at=self.wall_clock.now())


def _log_fired(fired: builtins.list[Fired]) -> None:
    """``timer_fired`` for each timer of a committed transaction (never for one rolled back)."""
    for f in fired:
        log.info("timer_fired", timer=f.timer, object=f.object, name=f.name, status=f.status,
                 due_at=f.due_at.isoformat(), fired_at=f.fired_at.isoformat(),
                 lateness_seconds=max(0, int((f.fired_at - f.due_at).total_seconds())))
