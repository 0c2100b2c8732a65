"""The unit of work: one change's transaction, its repository, the actor's authorization and its audit entries.

Every write the engine makes runs inside one::

    with engine.unit_of_work(actor, "case confirm", "case-1") as uow:
        ...                          # uow.repo, uow.session, uow.actor, uow.audit(...)
        uow.commit()

Leaving the block without ``commit()``, or by an exception, rolls everything back. An actor whose user or role may
not run the command is refused with NotPermitted (exit 3) before anything is read; the refusal is appended to the
user's own audit chain in a transaction of its own, after the refused change is rolled back, so an auditor's
attempt is on record and nothing of it is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import structlog
from sqlalchemy.orm import Session, SessionTransaction

from engine import events
from engine.clock import Clock
from engine.reads import Reads
from engine.units import Scope, scope_of
from persistence.audit import Head
from persistence.database import Database, translate_errors
from persistence.repository import Repository, format_id
from workflows.definition import Settings
from workflows.errors import Conflict, NotPermitted
from workflows.limits import check_text

log = structlog.get_logger("mpoxflow.engine")

#: Who may change workflow objects and persons; only admins manage users; auditors change nothing.
ACTING_ROLES = ("staff", "admin")
ADMIN_ROLES = ("admin",)
#: Roles ``add_user`` may give: ``timer`` belongs to the scheduler alone.
USER_ROLES = ("staff", "auditor", "admin")
#: The scheduler's user: the actor of every firing is ``timer:<timer name>`` with this role.
TIMER_USER = "timer"
#: The only commands the scheduler's user may be authorized for (issue 19: the worker's scheduled jobs), and only
#: where the command's roles name it too: the retention purge and the audit log's anchor.
SCHEDULED_JOBS = frozenset({"retention purge", "audit anchor"})


class Actor(NamedTuple):
    """Who makes a change, as the audit entry records it."""

    name: str
    role: str


@dataclass
class Runtime:
    """What every part of the engine shares. One instance per engine, read at each use: the worker turns
    ``persist_clock`` off on an engine it is given, and a test may swap the wall clock."""

    db: Database
    #: The clock the rules read (real, or simulated on a training database).
    clock: Clock
    settings: Settings
    #: Real time, for ``recorded_at`` next to a simulated clock's instant, and for logins.
    wall_clock: Clock
    #: Write the simulated clock's "now" to the database with every change (a simulated-clock database).
    persist_clock: bool = False
    #: Tell the workers when a committed change armed timers (PostgreSQL ``NOTIFY``); the worker turns it off on
    #: its own engine: it re-reads the next due instant after every pass anyway.
    announce_timers: bool = True
    #: The simulated clock's now as the database holds it, when this engine read it from there (None: not known,
    #: so every change writes it): a change whose clock has not moved since leaves the row alone, so an engine
    #: made for one HTTP request never writes back a now that another process has moved on meanwhile.
    stored_now: datetime | None = None
    #: Users this engine's caller has just looked up, by name, with their role: an HTTP request's engine knows the
    #: user its token or session cookie stands for (read in the same request, never kept across requests), so its
    #: changes authorize that user without reading the row again. Empty on the CLI and the Python API.
    known_users: dict[str, str] = field(default_factory=dict)
    #: Whose reads these are (issue 17): the queries show only the objects of this user's units and those below
    #: (``engine.units``); None: no one's in particular (the Python API, the worker, tests), everything.
    viewer: str | None = None
    #: A batch's transaction (``batch``, for a bulk import): while set, every unit of work the engine opens runs
    #: inside it, in a savepoint of its own, instead of in a transaction of its own.
    batch: UnitOfWork | None = None
    #: The reads of personal data this engine's calls show (issue 19 item 3, ``engine.reads``): collected and
    #: written to the read log per request or command.
    reads: Reads = field(init=False)

    def __post_init__(self) -> None:
        self.reads = Reads(self)


def authorize(repo: Repository, actor: str, command: str, target: str | None, roles: tuple[str, ...],
              known: dict[str, str] | None = None) -> Actor:
    """The actor as a user with a role in ``roles``. Raises NotPermitted (exit 3) for a name that is no user, a
    disabled user or another role; UsageError for a name no user can have (too long, control characters),
    which is not echoed. ``known``: users (name: role) the caller looked up in this request (``Runtime``); one
    whose role is allowed needs no read, any other is read and refused as usual."""
    check_text(actor, "actor")
    role = (known or {}).get(actor)
    if role is not None and role in roles and (role != TIMER_USER or command in SCHEDULED_JOBS):
        return Actor(actor, role)
    user = repo.user_by_name(actor)
    if user is None:
        raise NotPermitted(
            f"'{actor}' is not a user of this database, so '{command}' was refused: give ⟦actor⟧ (or "
            "$MPOXFLOW_ACTOR) a registered name, or ask an admin to add it (`mpoxflow user add NAME ⟦role⟧ "
            "staff`; `mpoxflow user list` shows who there is)",
            actor=actor, role=None, user=None, command=command, target=target,
        )
    if user.disabled_at is not None:
        raise NotPermitted(f"'{command}' refused for {actor}: this user is disabled; ask an admin "
                           f"(`mpoxflow user enable {actor}`). This refusal is recorded in the audit log",
                           actor=actor, role=user.role, user=user.id, command=command, target=target)
    if user.role in roles and (user.role != TIMER_USER or command in SCHEDULED_JOBS):
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


class _Default:
    """The default of an argument that may be given as None."""


DEFAULT = _Default()


class Deferred:
    """The writes a set-based batch of timer firings holds back to send as one statement each (``executemany``):
    its audit entries, whose sequence numbers are allocated ahead so that each entry's head is known at once, and
    its objects' UPDATEs, whose version checks are counted together. ``flush`` sends them; anything that reads
    what they write (another object's guards, a cascade, the same object again) flushes first."""

    #: Sequence numbers allocated per round trip.
    CHUNK = 256

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.seqs: list[int] = []
        self.last_seq = 0
        self.entries: list[dict[str, Any]] = []
        self.updates: dict[tuple[str, frozenset[str]], list[dict[str, Any]]] = {}
        #: Timers whose firing found their task undone: marked ``missed`` together.
        self.missed: list[int] = []

    def next_seq(self) -> int:
        if not self.seqs:
            self.seqs = self.repo.allocate_audit_seqs(self.CHUNK, after=self.last_seq)
            self.last_seq = self.seqs[-1]
        return self.seqs.pop(0)

    def flush(self) -> None:
        """Send what is held back. Raises Conflict when an object's version moved meanwhile (rolled back)."""
        self.repo.insert_audits(self.entries)
        self.entries = []
        for (kind, _), rows in self.updates.items():
            if self.repo.update_objects(kind, rows) != len(rows):
                raise Conflict(f"one of {len(rows)} {kind} objects was changed by someone else while timers fired; "
                               "nothing was written")
        self.updates = {}
        self.repo.update_timers(self.missed, {"status": "missed"})
        self.missed = []


class UnitOfWork:
    """One writing transaction: ``repo`` (and its ``session``), the authorized ``actor`` when the unit was opened
    for one, the audit record, and ``commit()``. Made by ``unit_of_work``, never directly. With ``deferred`` set
    (a set-based batch of firings, ``engine.firing``), audit entries and objects' UPDATEs are held back and sent
    together (:class:`Deferred`)."""

    def __init__(self, runtime: Runtime, session: Session) -> None:
        self.runtime = runtime
        self.session = session
        self.repo = Repository(session)
        self._actor: Actor | None = None
        self.committed = False
        self.clock_saved: datetime | None = None
        self.deferred: Deferred | None = None
        self._scopes: dict[str, Scope] = {}
        #: The default definition in force per kind as this unit read it (``engine.definitions.for_new``), with
        #: the period it holds for: a batch's creations read it once.
        self.defaults: dict[str, Any] = {}
        #: The events this unit's audit entries make (``engine.events``), inserted together just before the commit.
        self.events: list[dict[str, Any]] = []

    def flush(self) -> None:
        """Send the writes held back (nothing when none are): before reading what they would change."""
        if self.deferred is not None:
            self.deferred.flush()

    def update_object(self, kind: str, pk: int, version: int, values: dict[str, Any]) -> bool:
        """Write an object's ``values`` and next version if it is still at ``version`` (False: someone else changed
        it). Held back when deferred: a version that moved is then a Conflict at the flush."""
        if self.deferred is None:
            return self.repo.update_object(kind, pk, version, values)
        params = {**values, "pk": pk, "seen_version": version, "version": version + 1}
        self.deferred.updates.setdefault((kind, frozenset(params)), []).append(params)
        return True

    @property
    def actor(self) -> Actor:
        """The actor this unit was authorized for. RuntimeError when it was opened without one (a timer's
        firing, a login: their audit entries name their actor themselves)."""
        if self._actor is None:
            raise RuntimeError("this unit of work was opened without an actor to authorize")
        return self._actor

    def authorize(self, actor: str, command: str, target: str | None = None,
                  roles: tuple[str, ...] = ACTING_ROLES) -> Actor:
        """Check, inside the transaction, that ``actor`` may run ``command`` (see ``authorize``); the actor
        becomes this unit's. NotPermitted is audited once the unit is rolled back."""
        self._actor = authorize(self.repo, actor, command, target, roles, self.runtime.known_users)
        return self._actor

    def scope(self, actor: Actor | None = None) -> Scope | None:
        """What ``actor`` (default: this unit's) may see and act on (``engine.units``), read once per unit of work;
        None for no actor or the scheduler (everything)."""
        if actor is None:
            if self._actor is None:
                return None
            actor = self._actor
        if actor.role == TIMER_USER:
            return None
        if actor.name not in self._scopes:
            self._scopes[actor.name] = scope_of(self.repo, actor.name, actor.role)
        return self._scopes[actor.name]

    def now(self) -> datetime:
        """The engine clock's now (read when asked: a transition reads it after loading its object)."""
        return self.runtime.clock.now()

    def audit(
        self, head: Head, *, kind: str, pk: int, workflow: str | None, trigger: str, from_state: str | None,
        to_state: str | None, actor: Actor, reason: str | None, now: datetime, rule: str | None,
        data: dict[str, Any], changes: dict[str, Any] | None, armed: list[Any] | None = None,
        cancelled: list[Any] | None = None, done: list[Any] | None = None, timer_pk: int | None = None,
        move_head: bool = True, unit: int | None | _Default = DEFAULT,
    ) -> Head:
        """Append the audit entry of a change to an object's chain, after ``head`` (the object's last entry, as
        its row holds it), and move the row's head to it; returns the new head (its ``seq`` is the entry's
        sequence number). ``changes``: the columns the change wrote (None: the object was not written).
        ``timer_pk``: the timer whose firing this is (unique in the log: a timer's firing can be recorded only
        once). ``move_head`` False: the caller writes the returned head with the object's own UPDATE. Raises
        UsageError for a reason too long or with control characters (rolled back with the change). ``unit``: the
        unit the actor acted through (default: the actor's first unit; a timer's entry names its object's). An
        entry that is an event (a transition, an assignment, a timer's firing: ``engine.events``) adds it to the
        events this unit inserts at its commit."""
        if reason:
            check_text(reason, "reason")  # every change's reason, whichever way it came
        if isinstance(unit, _Default):
            scope = self.scope(actor)  # None for the scheduler (its callers give the object's unit)
            unit = scope.home if scope is not None else None
        entry = head.link({
            "timer_id": timer_pk,
            "object_kind": kind, "object_id": pk, "workflow": workflow, "trigger": trigger,
            "from_state": from_state, "to_state": to_state, "actor": actor.name, "role": actor.role,
            "reason": reason or None, "at": now, "recorded_at": self.runtime.wall_clock.now(), "rule": rule,
            "data": data, "changes": changes, "timers_armed": armed or [], "timers_cancelled": cancelled or [],
            "timers_done": done or [], "unit_id": unit,
        })
        if self.deferred is not None:
            entry["seq"] = self.deferred.next_seq()
            self.deferred.entries.append(entry)
            head = Head(entry["pos"], entry["seq"], entry["hash"])
        else:
            head = Head(entry["pos"], self.repo.insert_audit(entry), entry["hash"])
        assert head.seq is not None
        event = events.from_audit(entry, head.seq)
        if event is not None:
            self.events.append(event)
        if move_head:
            self.repo.set_head(kind, pk, head)
        return head

    def save_clock(self) -> None:
        """On a simulated-clock database, write the clock's now with this change (nothing on real time, nor when
        the clock stands where this engine read it from the database: ``Runtime.stored_now``)."""
        if self.runtime.persist_clock:
            now = self.runtime.clock.now()
            if now != self.runtime.stored_now:
                self.repo.save_clock(simulated=True, now=now)
                self.clock_saved = now  # the database holds it once the unit commits

    @contextmanager
    def savepoint(self) -> Iterator[SessionTransaction]:
        """A nested transaction: what fails inside it is rolled back alone (with the events its audit entries
        made), the unit goes on."""
        mark = len(self.events)
        try:
            with self.session.begin_nested() as nested:
                yield nested
        except BaseException:
            del self.events[mark:]
            raise

    def commit(self) -> None:
        """Keep the work: it commits when the ``with`` block ends without an error."""
        self.committed = True


@contextmanager
def unit_of_work(runtime: Runtime, actor: str | None = None, command: str | None = None, target: str | None = None,
                 roles: tuple[str, ...] = ACTING_ROLES) -> Iterator[UnitOfWork]:
    """A unit of work on ``runtime``'s database; with ``actor``, authorized for ``command`` on ``target`` (an id,
    for the refusal's record) by ``roles`` first. Commits at the end of the block if ``commit()`` was called (on
    PostgreSQL with one ``NOTIFY`` of the earliest timer it armed, for the workers; its events are inserted just
    before the commit, ``engine.events.append``), else rolls back. Raises
    NotPermitted (audited), and whatever the work raises (all of it rolled back)."""
    if actor is not None and command is None:
        raise ValueError("authorizing an actor needs the command they run")
    if runtime.batch is not None:
        with _within_batch(runtime.batch, actor, command, target, roles) as nested:
            yield nested
        return
    with refusals_audited(runtime), runtime.db.transaction() as session:
        uow = UnitOfWork(runtime, session)
        if actor is not None:
            assert command is not None
            uow.authorize(actor, command, target, roles)
        yield uow
        if not uow.committed:
            session.rollback()
        else:
            if runtime.announce_timers:
                uow.repo.announce_timers()  # in the transaction: delivered only if it commits
            events.append(session, uow.events)  # last: its lock is held only to the commit
    if uow.committed and uow.clock_saved is not None:
        runtime.stored_now = uow.clock_saved


@contextmanager
def _within_batch(outer: UnitOfWork, actor: str | None, command: str | None, target: str | None,
                  roles: tuple[str, ...]) -> Iterator[UnitOfWork]:
    """A unit of work inside a batch's transaction (``batch``): it joins that transaction, and its caller holds a
    savepoint around it (what it raises is rolled back there; its NotPermitted is audited by the caller once that
    savepoint is rolled back, ``audit_refusal``). A unit that writes must end with ``commit()``: one that does not,
    inside a batch, is a RuntimeError (its writes would be kept with the batch's)."""
    with translate_errors():
        uow = UnitOfWork(outer.runtime, outer.session)
        uow._scopes = outer._scopes  # noqa: SLF001 - one actor's scope, read once per batch
        uow.defaults = outer.defaults  # the definitions new objects start under, read once per batch
        # Its events are the batch's: inserted at the batch's commit, dropped with the caller's savepoint.
        uow.events = outer.events
        if actor is not None:
            assert command is not None
            uow.authorize(actor, command, target, roles)
        yield uow
        if not uow.committed:
            raise RuntimeError("a unit of work inside a batch ended without commit(): roll back its savepoint")
        if uow.clock_saved is not None:
            outer.clock_saved = uow.clock_saved


def audit_refusal(runtime: Runtime, refused: NotPermitted) -> None:
    """Audit a NotPermitted raised inside a batch (``_within_batch``), in the batch's transaction, after the
    savepoint of the refused change was rolled back."""
    if refused.user is None:
        log.warning("change_refused", command=refused.command, reason="not a user")
        return
    _audit_refusal(runtime, refused)


@contextmanager
def batch(runtime: Runtime, actor: str, command: str) -> Iterator[UnitOfWork]:
    """One transaction, authorized for ``actor`` and ``command``, that every unit of work the engine opens while it
    lasts runs inside, each in a savepoint (``Runtime.batch``): a bulk import calls the engine's own operations
    (``add_person``, ``open``) row by row, so each row obeys the same rules and is audited the same way, and the
    import decides what commits (each row, all rows, or nothing for a dry run). Commits if ``commit()`` was
    called, as ``unit_of_work``. The actor is looked up once for the whole batch (``Runtime.known_users``). The caller
    holds a savepoint (``UnitOfWork.savepoint``) around each engine call it makes inside the batch."""
    if runtime.batch is not None:
        raise RuntimeError("a batch is already running on this engine")
    with unit_of_work(runtime, actor, command) as outer:
        known = runtime.known_users
        runtime.known_users = {**known, outer.actor.name: outer.actor.role}
        runtime.batch = outer
        try:
            yield outer
        finally:
            runtime.batch = None
            runtime.known_users = known


def check_actor(runtime: Runtime, actor: str, command: str, roles: tuple[str, ...] = ACTING_ROLES) -> Actor:
    """Authorize ``actor`` for ``command`` in a read-only session (for a change made outside a unit of work, like
    moving a simulated clock, or before asking a new user's password). NotPermitted is audited."""
    with refusals_audited(runtime), runtime.db.reading() as session:
        return authorize(Repository(session), actor, command, None, roles)


@contextmanager
def refusals_audited(runtime: Runtime) -> Iterator[None]:
    """Around a transaction: a NotPermitted raised out of it (the transaction rolled back already) is appended to
    the refused user's own chain in a transaction of its own, logged, and raised again. A name that is no user
    has no chain: only logged."""
    try:
        yield
    except NotPermitted as refused:
        if refused.user is None:
            log.warning("change_refused", command=refused.command, reason="not a user")
        else:
            _audit_refusal(runtime, refused)
        raise


def _audit_refusal(runtime: Runtime, refused: NotPermitted) -> None:
    assert refused.user is not None and refused.role is not None
    with unit_of_work(runtime) as uow:
        seq = uow.audit(
            Head.of(uow.repo.head_row("user", refused.user)), kind="user", pk=refused.user, workflow=None,
            trigger="refused", from_state=None, to_state=None, actor=Actor(refused.actor, refused.role),
            reason=refused.message, now=uow.now(), rule=None,
            data={"command": refused.command, "object": refused.target}, changes=None,
        ).seq
        uow.commit()
    log.warning("change_refused", user=format_id("user", refused.user), role=refused.role,
                command=refused.command, object=refused.target, audit_seq=seq)
