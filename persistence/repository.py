"""Repositories: every query the engine and the entry layer need, in one place, over one session."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Insert,
    Row,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from persistence.audit import Head
from persistence.database import TIMERS_CHANNEL
from persistence.models import (
    OBJECT_MODELS,
    ApiToken,
    AuditEntry,
    ClockSetting,
    LoginFailure,
    LoginSession,
    Membership,
    Note,
    Person,
    Placement,
    Timer,
    Unit,
    User,
    WorkflowDefault,
)
from workflows.definition import Related
from workflows.errors import NotFound
from workflows.limits import MAX_ID, shown
from workflows.person import OPEN_CASE_STATES, PersonFacts

ID_KINDS = ("person", "timer", "user", "unit", "workflow_default", *OBJECT_MODELS)
#: Kinds a person can list with ``mpoxflow list KINDs``.
LISTED_KINDS = ("person", *OBJECT_MODELS)
#: Kinds whose rows keep the head of their audit chain.
HEAD_MODELS: dict[str, type[Any]] = {"person": Person, "user": User, "unit": Unit,
                                      "workflow_default": WorkflowDefault, **OBJECT_MODELS}
#: How many rows a streamed read fetches at a time (export, verify, replay): memory stays flat.
STREAM_CHUNK = 2000


@dataclass(frozen=True)
class AuditWhere:
    """Which audit entries: of one kind of object (and one of them), at or after ``since`` and before
    ``before`` (instants), by one actor, of one trigger; None: any."""

    kind: str | None = None
    pk: int | None = None
    since: datetime | None = None
    before: datetime | None = None
    actor: str | None = None
    trigger: str | None = None
    #: Entries of the cases, contacts and courses of these units only (a user's scope, issue 17); None: any.
    scope: tuple[int, ...] | None = None
    #: Entries of users who acted through these units (``audit_log.unit_id``); None: any.
    acting: tuple[int, ...] | None = None


def scoped_entries(table: Table, scope: Sequence[int]) -> Any:
    """Audit entries of the workflow objects of ``scope``'s units (what a member of those units may read)."""
    arms = []
    for kind, model in OBJECT_MODELS.items():
        objects = _table(model)
        arms.append(and_(table.c.object_kind == kind, table.c.object_id.in_(
            select(objects.c.id).where(objects.c.unit_id.in_(list(scope))))))
    return or_(*arms)


def not_found(object_id: str, kind: str | None) -> NotFound:
    """NotFound with a next step that works for this kind of id."""
    if kind in LISTED_KINDS:
        hint = f"List them with `mpoxflow list {kind}s`."
    elif kind == "user":
        hint = "List them with `mpoxflow user list`."
    elif kind == "timer":
        hint = "Open tasks and their timers are listed by `mpoxflow due`; an object's timers by `mpoxflow show ID`."
    elif kind == "workflow_default":
        hint = "List them with `mpoxflow workflow defaults`."
    else:
        hint = ("Ids look like " + ", ".join(f"{k}-N" for k in ID_KINDS)
                + ": find them with `mpoxflow list cases` or `mpoxflow list persons`.")
    return NotFound(object_id, kind, hint=hint)


def format_id(kind: str, pk: int) -> str:
    """The id users see: ``case-12``. The kind is part of it, so ``show ID`` needs nothing else."""
    return f"{kind}-{pk}"


def parse_id(text: str, *, kind: str | None = None) -> tuple[str, int]:
    """``"case-12"`` -> ``("case", 12)``. Raises NotFound for anything that cannot be an id (of ``kind``)."""
    prefix, _, number = text.strip().partition("-")
    # ASCII digits only ("case-²", "case-١" are no ids), and within the id columns' integer range.
    if (prefix not in ID_KINDS or not (number.isascii() and number.isdigit()) or len(number) > 10
            or int(number) > MAX_ID or (kind is not None and prefix != kind)):
        raise not_found(shown(text), kind)
    return prefix, int(number)


def _utc(value: Any) -> Any:
    """An instant from an aggregate (which skips the column type's conversion) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _table(model: type) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _ObjectStatements:
    """The write path's statements for one kind, built once: the values travel as parameters, so each is
    compiled once and found in SQLAlchemy's cache by identity afterwards."""

    load: Select[Any]
    insert: Insert
    update: Update


@functools.cache
def _statements(kind: str) -> _ObjectStatements:
    table = _table(OBJECT_MODELS[kind])
    return _ObjectStatements(
        load=select(table).where(table.c.id == bindparam("pk")),
        insert=insert(table).returning(table.c.id),
        update=update(table).where(table.c.id == bindparam("pk"), table.c.version == bindparam("seen_version")),
    )


_TIMERS_OF = (
    select(_table(Timer))
    .where(_table(Timer).c.object_kind == bindparam("kind"), _table(Timer).c.object_id == bindparam("pk"))
    .order_by(_table(Timer).c.due_at, _table(Timer).c.id)
)


@functools.cache
def _forecast(kind: str, name: str) -> Select[Any]:
    """A kind's pending timers of one name per due instant in ``[since, until)`` (§6.4 doses 2 due, §5.5 last
    days of monitoring). Every such timer falls due at a local midnight, so each instant is one Danish calendar
    day. Served by ``ix_timers_forecast``."""
    timers = _table(Timer)
    return (
        select(timers.c.due_at, func.count().label("due"))
        .where(
            timers.c.object_kind == kind, timers.c.name == name, timers.c.status == "pending",
            timers.c.due_at >= bindparam("since"), timers.c.due_at < bindparam("until"),
        )
        .group_by(timers.c.due_at)
        .order_by(timers.c.due_at)
    )

_INSERT_TIMERS = insert(_table(Timer)).returning(_table(Timer).c.id, sort_by_parameter_order=True)
_INSERT_AUDIT = insert(_table(AuditEntry)).returning(_table(AuditEntry).c.seq)
_NOTIFY_TIMERS = text("SELECT pg_notify(:channel, :due)")
#: ``session.info`` key: the earliest due instant this transaction armed (``announce_timers`` sends it).
_ARMED = "mpoxflow_earliest_armed"


_USER_BY_NAME = select(_table(User)).where(_table(User).c.name == bindparam("name"))
# A person's id by reference; the person's row held (FOR UPDATE on PostgreSQL); a person's row inserted: built once
# (building a statement per call was a sixth of a bulk import's time per row).
_PERSON_BY_REF = select(_table(Person).c.id).where(_table(Person).c.ref == bindparam("ref"))
_LOCK_PERSON = (select(_table(Person).c.id, _table(Person).c.purged_at, _table(Person).c.purge_rule)
                .where(_table(Person).c.id == bindparam("pk")).with_for_update())
_PURGED_PERSON = select(_table(Person).c.id, _table(Person).c.purged_at, _table(Person).c.purge_rule).where(
    _table(Person).c.id == bindparam("pk"))
_INSERT_PERSON = insert(_table(Person)).returning(_table(Person).c.id)
_SESSION_USER = (
    select(_table(LoginSession).c.id, _table(LoginSession).c.csrf, _table(LoginSession).c.expires_at,
           _table(User).c.id.label("user_id"), _table(User).c.name, _table(User).c.role, _table(User).c.language)
    .join(_table(User), _table(User).c.id == _table(LoginSession).c.user_id)
    .where(_table(LoginSession).c.secret_hash == bindparam("secret_hash"),
           _table(LoginSession).c.expires_at > bindparam("now"), _table(User).c.disabled_at.is_(None))
)
_TOKEN_USER = (
    select(_table(ApiToken).c.id, _table(User).c.id.label("user_id"), _table(User).c.name, _table(User).c.role)
    .join(_table(User), _table(User).c.id == _table(ApiToken).c.user_id)
    .where(_table(ApiToken).c.secret_hash == bindparam("secret_hash"), _table(ApiToken).c.revoked_at.is_(None),
           _table(User).c.disabled_at.is_(None))
)


def _default_at() -> Select[Any]:
    t = _table(WorkflowDefault)
    kind: Any = bindparam("kind")
    at: Any = bindparam("at", type_=t.c.effective_from.type)
    current = (select(t.c.id, t.c.definition, t.c.effective_from)
               .where(t.c.kind == kind, t.c.effective_from <= at)
               .order_by(t.c.effective_from.desc(), t.c.id.desc()).limit(1).subquery())
    following = select(func.min(t.c.effective_from)).where(t.c.kind == kind, t.c.effective_from > at)
    one = select(literal_column("1").label("one")).subquery()
    return (select(current.c.id, current.c.definition, current.c.effective_from,
                   following.scalar_subquery().label("until"))
            .select_from(one.outerjoin(current, true())))


def _defaults_with_entry() -> Select[Any]:
    """The defaults set, each with ``actor`` and ``reason`` of its audit entry (its chain's first)."""
    t, a = _table(WorkflowDefault), _table(AuditEntry)
    return select(t, a.c.actor, a.c.reason).outerjoin(
        a, and_(a.c.object_kind == "workflow_default", a.c.object_id == t.c.id, a.c.pos == 1))


#: The default in force at an instant, and when the next takes over (``Repository.workflow_default_at``).
_DEFAULT_AT = _default_at()


@functools.cache
def _of_person(kind: str) -> Select[Any]:
    table = _table(OBJECT_MODELS[kind])
    return (select(table.c.id)
            .where(table.c.person_id == bindparam("person"), table.c.state.in_(bindparam("states", expanding=True)))
            .order_by(table.c.id))


@functools.cache
def _set_head(kind: str) -> Update:
    table = _table(HEAD_MODELS[kind])
    return update(table).where(table.c.id == bindparam("pk")).values(
        audit_pos=bindparam("head_pos"), audit_seq=bindparam("head_seq"), audit_hash=bindparam("head_hash"))


def facts_from_row(row: Any, facts_type: type) -> Any:
    """The workflow's facts dataclass, read from the columns of the same names."""
    return facts_type(**{f.name: _copy(getattr(row, f.name)) for f in dataclasses.fields(facts_type)})


def facts_values(facts: Any) -> dict[str, Any]:
    """The facts dataclass as column values."""
    return {f.name: _copy(getattr(facts, f.name)) for f in dataclasses.fields(facts)}


def _copy(value: Any) -> Any:
    # Lists are copied so that a JSON column sees a new object and is written.
    return list(value) if isinstance(value, list | tuple) else value


def _ready_timers(now: datetime, limit: int, *, skip_locked: bool) -> Select[Any]:
    """The ids of up to ``limit`` timers ready to fire at ``now`` (due, and not waiting for a retry), earliest
    first; with ``skip_locked`` (PostgreSQL) only those of objects this transaction locks, ``FOR UPDATE SKIP
    LOCKED``."""
    table = _table(Timer)
    ready = (table.c.status == "pending", table.c.due_at <= now,
             or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now))
    if not skip_locked:
        return select(table.c.id).where(*ready).order_by(table.c.due_at, table.c.id).limit(limit)
    return _one_worker_per_object(table, ready, limit)


#: PostgreSQL: how many ready timers, per timer of a batch, a claim looks at for objects it can lock (so that
#: a second and a third worker find objects of their own among them while the first holds its batch's).
CANDIDATES_PER_TIMER = 3


def _one_worker_per_object(timers: Table, ready: tuple[Any, ...], limit: int) -> Select[Any]:
    """PostgreSQL: only timers of objects whose transaction-scoped advisory lock this transaction gets, so that
    the due timers of one object are never split between two workers' batches (one of them would fire a later
    timer before the other fired the earlier one). The row locks alone (SKIP LOCKED) share timers, not objects.

    The locks are tried one candidate at a time, in due order, until ``limit`` are held: the first
    ``CANDIDATES_PER_TIMER * limit`` ready timers are read without a lock (a materialized CTE), sorted behind a
    fence (``OFFSET 0``: PostgreSQL never pushes a volatile condition into such a subquery), and only then
    filtered by ``pg_try_advisory_xact_lock`` under the ``LIMIT``. A claim therefore holds at most ``limit``
    advisory locks, whatever plan PostgreSQL chooses; with the lock in the scan's own condition, a plan that sorted
    the due timers took one lock per due object, and past PostgreSQL's shared lock table (64 per connection by
    default) every claim failed with "out of shared memory" (found by ``bench/backlog.py`` at 500,000 due timers)."""
    candidates = (select(timers.c.id, timers.c.object_kind, timers.c.object_id, timers.c.due_at)
                  .where(*ready).order_by(timers.c.due_at, timers.c.id).limit(CANDIDATES_PER_TIMER * limit)
                  .cte("candidates").prefix_with("MATERIALIZED", dialect="postgresql"))
    ordered = select(candidates).order_by(candidates.c.due_at, candidates.c.id).offset(0).subquery("ordered")
    locked = (select(ordered.c.id)
              .where(func.pg_try_advisory_xact_lock(func.hashtext(ordered.c.object_kind), ordered.c.object_id))
              .limit(limit).cte("locked").prefix_with("MATERIALIZED", dialect="postgresql"))
    return (select(timers.c.id).join(locked, locked.c.id == timers.c.id).where(timers.c.status == "pending")
            .with_for_update(skip_locked=True, of=timers))


#: ``Repository.lock_objects_for_firing``: the locks taken row by row in the order of the array (the volatile
#: function is evaluated above the ordered subquery, which ``OFFSET 0`` keeps from being flattened into it).
_LOCK_OBJECTS = text(
    "SELECT pg_advisory_xact_lock(hashtext(:kind), ordered.pk) FROM (SELECT t.pk FROM "
    "unnest(CAST(:pks AS integer[])) WITH ORDINALITY AS t(pk, n) ORDER BY t.n OFFSET 0) AS ordered")


class Repository:
    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def _core(self) -> Connection:
        """The session's own connection (same transaction), for Core statements without the ORM's overhead."""
        return self.session.connection()

    # ---- objects -------------------------------------------------------------------------------------------

    def person(self, pk: int) -> Person:
        person = self.session.get(Person, pk)
        if person is None:
            raise not_found(format_id("person", pk), "person")
        return person

    def person_by_ref(self, ref: str) -> Person | None:
        return self.session.scalars(select(Person).where(Person.ref == ref)).one_or_none()

    def person_id_by_ref(self, ref: str) -> int | None:
        """The id of the person with that reference (one indexed Core query, no entity loaded), or None."""
        found = self._core.execute(_PERSON_BY_REF, {"ref": ref}).scalar()
        return None if found is None else int(found)

    def insert_person(self, values: dict[str, Any]) -> int:
        """Insert a person's row (every column but the id and the audit head); its id. DuplicateKey when the
        reference is registered already (translated at the session's boundary, without its values)."""
        return int(self._core.execute(_INSERT_PERSON, values).scalar_one())

    def workflow_object(self, kind: str, pk: int) -> Any:
        row = self.session.get(OBJECT_MODELS[kind], pk)
        if row is None:
            raise not_found(format_id(kind, pk), kind)
        return row

    def objects(self, kind: str, state: str | None = None, units: Sequence[int] | None = None) -> Sequence[Any]:
        """A kind's objects by id (in ``state``; of ``units``, None: any)."""
        model = OBJECT_MODELS[kind]
        query = select(model).order_by(model.id)
        if state is not None:
            query = query.where(model.state == state)
        if units is not None:
            query = query.where(model.unit_id.in_(list(units)))
        return self.session.scalars(query).all()

    def persons(self) -> Sequence[Person]:
        return self.session.scalars(select(Person).order_by(Person.id)).all()

    def person_refs(self, pks: Sequence[int]) -> list[tuple[int, str | None]]:
        """(id, reference) of the persons ``pks`` that exist, by id (None: purged, issue 19 item 1)."""
        return [(pk, ref) for pk, ref in self.session.execute(
            select(Person.id, Person.ref).where(Person.id.in_(list(pks))).order_by(Person.id))]

    def objects_linked(self, kind: str, link: str, pk: int) -> Sequence[Any]:
        """The ``kind`` objects whose link column (``person_id``, ``case_id``, ``contact_id``) is ``pk``, oldest
        first."""
        model = OBJECT_MODELS[kind]
        return self.session.scalars(select(model).where(getattr(model, link) == pk).order_by(model.id)).all()

    # ---- the write path (SQLAlchemy Core: one statement each, no unit-of-work bookkeeping) -------------------

    def load_object(self, kind: str, pk: int) -> Row[Any]:
        row = self._core.execute(_statements(kind).load, {"pk": pk}).one_or_none()
        if row is None:
            raise not_found(format_id(kind, pk), kind)
        return row

    def find_object(self, kind: str, equal: dict[str, Any]) -> int | None:
        """The id of a ``kind`` object whose columns equal ``equal``, if there is one."""
        table = _table(OBJECT_MODELS[kind])
        found = self._core.execute(
            select(table.c.id).where(*(table.c[k] == v for k, v in equal.items())).limit(1)
        ).scalar()
        return None if found is None else int(found)

    def objects_of_person(self, kind: str, person_pk: int, states: tuple[str, ...]) -> list[int]:
        """Ids of the person's ``kind`` objects in one of ``states``, oldest first."""
        return [int(i) for i in self._core.execute(
            _of_person(kind), {"person": person_pk, "states": list(states)}).scalars()]

    def person_facts(self, pk: int) -> Related:
        """What the rules read about a person (never the reference), with the states of their courses."""
        person = self._core.execute(select(_table(Person)).where(_table(Person).c.id == pk)).one_or_none()
        if person is None:
            raise not_found(format_id("person", pk), "person")
        courses = _table(OBJECT_MODELS["course"])
        rows = list(self._core.execute(
            select(courses.c.id, courses.c.state, courses.c.dose1_on, courses.c.dose2_on)
            .where(courses.c.person_id == pk).order_by(courses.c.id)))
        states = tuple(r.state for r in rows)
        doses = tuple(sorted(((r.id, on) for r in rows for on in (r.dose1_on, r.dose2_on) if on is not None),
                             key=lambda d: (d[1], d[0])))
        cases = _table(OBJECT_MODELS["case"])
        case_rows = list(self._core.execute(
            select(cases.c.id, cases.c.state, cases.c.confirmed_at).where(cases.c.person_id == pk)
            .order_by(cases.c.id)))
        confirmed = any(r.confirmed_at is not None for r in case_rows)
        open_cases = tuple((format_id("case", r.id), r.state) for r in case_rows if r.state in OPEN_CASE_STATES)
        facts = PersonFacts(born=person.born, immunocompromised=person.immunocompromised, pregnant=person.pregnant,
                            breastfeeding=bool(person.breastfeeding), previous_mpox=person.previous_mpox,
                            smallpox_vaccinated=person.smallpox_vaccinated, courses=states, confirmed_mpox=confirmed,
                            doses_elsewhere=person.doses_elsewhere or 0,
                            last_dose_elsewhere_on=person.last_dose_elsewhere_on, course_doses=doses,
                            open_cases=open_cases)
        return Related(format_id("person", pk), pk, "registered", facts, format_id("person", pk))

    def lock_person(self, pk: int) -> Any:
        """Hold the person's row until the transaction ends (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
        BEGIN IMMEDIATE already serialises writers): a change creating a case or course for the person then reads
        the person's cases and courses as committed by whoever held it before. Returns its id and whether (when,
        under which rule) its personal data was purged. NotFound for an unknown person."""
        row = self._core.execute(_LOCK_PERSON, {"pk": pk}).one_or_none()
        if row is None:
            raise not_found(format_id("person", pk), "person")
        return row

    def person_purge(self, pk: int) -> Any:
        """The person's id, ``purged_at`` and ``purge_rule`` (None for no such person): whether a retention purge
        deleted the person's personal data (issue 19)."""
        return self._core.execute(_PURGED_PERSON, {"pk": pk}).one_or_none()

    def object_timers(self, kind: str, pk: int) -> list[Row[Any]]:
        return list(self._core.execute(_TIMERS_OF, {"kind": kind, "pk": pk}))

    def insert_object(self, kind: str, values: dict[str, Any]) -> int:
        return int(self._core.execute(_statements(kind).insert, values).scalar_one())

    def update_object(self, kind: str, pk: int, version: int, values: dict[str, Any]) -> bool:
        """Write ``values`` and the next version, only if the row is still at ``version``: False when someone
        else changed it meanwhile (the caller turns that into a Conflict; nothing is lost)."""
        params = {**values, "pk": pk, "seen_version": version, "version": version + 1}
        return bool(self._core.execute(_statements(kind).update, params).rowcount == 1)

    def update_timers(self, ids: list[int], values: dict[str, Any]) -> None:
        if ids:
            self._core.execute(update(_table(Timer)).where(_table(Timer).c.id.in_(ids)), values)

    def insert_timers(self, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        due = min(_utc(r["due_at"]) for r in rows)  # for announce_timers, at commit
        self.session.info[_ARMED] = min(due, self.session.info.get(_ARMED, due))
        return [int(i) for i in self._core.execute(_INSERT_TIMERS, rows).scalars()]

    def announce_timers(self) -> None:
        """On PostgreSQL, ``NOTIFY`` the workers of the earliest due instant this transaction armed (ISO, UTC):
        one notification, delivered only if the transaction commits. Nothing on SQLite, or when none was armed."""
        due = self.session.info.pop(_ARMED, None)
        if due is not None and self.session.get_bind().dialect.name == "postgresql":
            self._core.execute(_NOTIFY_TIMERS, {"channel": TIMERS_CHANNEL, "due": due.isoformat()})

    def next_armed(self) -> datetime | None:
        """The earliest due instant of a pending timer not waiting for a retry (retries are the worker's own):
        one query on the ``(status, due_at)`` index, for the worker's cheap check for timers armed elsewhere."""
        table = _table(Timer)
        due: datetime | None = _utc(self._core.execute(
            select(table.c.due_at).where(table.c.status == "pending", table.c.next_attempt_at.is_(None))
            .order_by(table.c.due_at).limit(1)
        ).scalar())
        return due

    def insert_audit(self, values: dict[str, Any]) -> int:
        return int(self._core.execute(_INSERT_AUDIT, values).scalar_one())

    def allocate_audit_seqs(self, n: int, *, after: int = 0) -> list[int]:
        """``n`` audit sequence numbers for entries this transaction will insert with :meth:`insert_audits`, in
        one round trip: from the column's sequence on PostgreSQL; on SQLite (the writing transaction holds the
        database) the next after both the log's last and ``after``, the last this transaction was given."""
        if self.session.get_bind().dialect.name == "postgresql":
            return [int(s) for s in self._core.execute(
                text("SELECT nextval(pg_get_serial_sequence('audit_log', 'seq')) FROM generate_series(1, :n)"),
                {"n": n}).scalars()]
        last = int(self._core.execute(select(func.coalesce(func.max(_table(AuditEntry).c.seq), 0))).scalar_one())
        first = max(last, after) + 1
        return list(range(first, first + n))

    def insert_audits(self, entries: list[dict[str, Any]]) -> None:
        """Audit entries with their sequence numbers given (:meth:`allocate_audit_seqs`), in one ``executemany``."""
        if entries:
            self._core.execute(insert(_table(AuditEntry)), entries)

    def update_objects(self, kind: str, rows: list[dict[str, Any]]) -> int:
        """Many :meth:`update_object` s of one kind (rows of the same keys) in one ``executemany``; returns how
        many rows were still at their ``seen_version`` (the caller compares with ``len(rows)``)."""
        if not rows:
            return 0
        return int(self._core.execute(_statements(kind).update, rows).rowcount)

    def set_head(self, kind: str, pk: int, head: Head) -> None:
        """Move the object's audit-chain head to its newest entry (same transaction as the entry)."""
        self._core.execute(_set_head(kind), {"pk": pk, "head_pos": head.pos, "head_seq": head.seq,
                                             "head_hash": head.hash})

    def head_row(self, kind: str, pk: int) -> Row[Any]:
        """A row of a kind with an audit head (person, user, case, contact, course)."""
        table = _table(HEAD_MODELS[kind])
        row = self._core.execute(select(table).where(table.c.id == pk)).one_or_none()
        if row is None:
            raise not_found(format_id(kind, pk), kind)
        return row

    # ---- users ---------------------------------------------------------------------------------------------

    def user_by_name(self, name: str) -> Row[Any] | None:
        return self._core.execute(_USER_BY_NAME, {"name": name}).one_or_none()

    def insert_user(self, values: dict[str, Any]) -> int:
        table = _table(User)
        return int(self._core.execute(insert(table).returning(table.c.id), values).scalar_one())

    def has_users(self) -> bool:
        return self._core.execute(select(_table(User).c.id).limit(1)).first() is not None

    def users(self) -> Sequence[User]:
        return self.session.scalars(select(User).order_by(User.id)).all()

    def set_user(self, pk: int, **values: Any) -> None:
        """Set columns of a user (``disabled_at``, ``role``)."""
        self._core.execute(update(_table(User)).where(_table(User).c.id == pk).values(**values))

    def set_password_hash(self, pk: int, password_hash: str) -> None:
        self._core.execute(update(_table(User)).where(_table(User).c.id == pk).values(password_hash=password_hash))

    # ---- logins: sessions, API tokens, failed logins ---------------------------------------------------------

    def insert_session(self, values: dict[str, Any]) -> int:
        table = _table(LoginSession)
        return int(self._core.execute(insert(table).returning(table.c.id), values).scalar_one())

    def session_user(self, secret_hash: str, now: datetime) -> Any:
        """The live session of that secret with its user: ``id, csrf, expires_at, user_id, name, role, language``."""
        return self._core.execute(_SESSION_USER, {"secret_hash": secret_hash, "now": now}).one_or_none()

    def delete_session(self, secret_hash: str) -> Any:
        table = _table(LoginSession)
        return self._core.execute(
            table.delete().where(table.c.secret_hash == secret_hash).returning(table.c.id, table.c.user_id)
        ).one_or_none()

    def delete_expired_sessions(self, now: datetime) -> int:
        table = _table(LoginSession)
        return self._core.execute(table.delete().where(table.c.expires_at <= now)).rowcount

    def insert_token(self, values: dict[str, Any]) -> int:
        table = _table(ApiToken)
        return int(self._core.execute(insert(table).returning(table.c.id), values).scalar_one())

    def token_user(self, secret_hash: str) -> Any:
        """The unrevoked token of that secret with its user: ``id, user_id, name, role``."""
        return self._core.execute(_TOKEN_USER, {"secret_hash": secret_hash}).one_or_none()

    def token(self, pk: int) -> ApiToken | None:
        return self.session.get(ApiToken, pk)

    def tokens(self) -> Sequence[ApiToken]:
        return self.session.scalars(select(ApiToken).order_by(ApiToken.id)).all()

    def add_login_failure(self, name: str, address: str, at: datetime) -> int:
        table = _table(LoginFailure)
        return int(self._core.execute(insert(table).returning(table.c.id),
                                      {"name": name, "address": address, "at": at}).scalar_one())

    def delete_login_failure(self, pk: int) -> None:
        table = _table(LoginFailure)
        self._core.execute(table.delete().where(table.c.id == pk))

    def name_failures(self, name: str, since: datetime) -> list[tuple[datetime, str]]:
        """The failed logins for ``name`` since ``since``: (instant, address), oldest first."""
        table = _table(LoginFailure)
        return [(r.at, r.address) for r in self._core.execute(
            select(table.c.at, table.c.address).where(table.c.name == name, table.c.at > since)
            .order_by(table.c.at, table.c.id))]

    def lock_login(self, name: str, address: str) -> None:
        """Serialise the rate limit's check-and-count per name and per address until the transaction ends
        (PostgreSQL advisory locks, name first; SQLite's BEGIN IMMEDIATE already serialises every writer)."""
        if self.session.get_bind().dialect.name != "postgresql":
            return
        for space, value in ((1, name), (2, address)):
            key = int.from_bytes(hashlib.sha256(value.encode()).digest()[:4], "big", signed=True)
            self._core.execute(select(func.pg_advisory_xact_lock(space, key)))

    def lock_user(self, pk: int) -> None:
        """Hold user ``pk``'s row until the transaction ends, so parallel logins append to its chain in turn."""
        self._core.execute(select(User.id).where(User.id == pk).with_for_update())

    def login_failures(self, column: str, value: str, since: datetime) -> tuple[int, datetime | None]:
        """Failed logins since ``since`` for a name or from an address (``column``), and the oldest of them."""
        table = _table(LoginFailure)
        count, oldest = self._core.execute(
            select(func.count(), func.min(table.c.at)).where(table.c[column] == value, table.c.at > since)).one()
        return int(count), oldest

    def delete_sessions_of(self, user_pk: int, keep: int | None = None) -> int:
        """End a user's sessions, all but ``keep`` (the session a user changes their own password in)."""
        table = _table(LoginSession)
        query = table.delete().where(table.c.user_id == user_pk)
        if keep is not None:
            query = query.where(table.c.id != keep)
        return self._core.execute(query).rowcount

    def clear_login_failures(self, name: str) -> None:
        table = _table(LoginFailure)
        self._core.execute(table.delete().where(table.c.name == name))

    # ---- timers --------------------------------------------------------------------------------------------

    def timers_of(self, kind: str, pk: int) -> Sequence[Timer]:
        return self.session.scalars(
            select(Timer).where(Timer.object_kind == kind, Timer.object_id == pk).order_by(Timer.due_at, Timer.id)
        ).all()

    def timers_of_many(self, kind: str, pks: Sequence[int]) -> dict[int, list[Timer]]:
        found: dict[int, list[Timer]] = {pk: [] for pk in pks}
        if pks:
            for timer in self.session.scalars(
                select(Timer)
                .where(Timer.object_kind == kind, Timer.object_id.in_(pks))
                .order_by(Timer.due_at, Timer.id)
            ):
                found[timer.object_id].append(timer)
        return found

    def next_due(self, until: datetime | None = None) -> datetime | None:
        """When the next pending timer is ready to fire (its due instant, or its retry), if by ``until``."""
        table = _table(Timer)
        first = self._core.execute(
            select(table.c.due_at).where(table.c.status == "pending", table.c.next_attempt_at.is_(None))
            .order_by(table.c.due_at).limit(1)
        ).scalar()
        retry = self._core.execute(
            select(table.c.next_attempt_at)
            .where(table.c.status == "pending", table.c.next_attempt_at.is_not(None))
            .order_by(table.c.next_attempt_at).limit(1)
        ).scalar()
        retry = _utc(retry)
        ready = min((t for t in (_utc(first), retry) if t is not None), default=None)
        return ready if ready is not None and (until is None or ready <= until) else None

    def lock_due_timers(self, now: datetime, limit: int, *, skip_locked: bool) -> list[int]:
        """Ids of up to ``limit`` timers ready to fire at ``now``, earliest first, locked for this transaction.
        The query reads the timers table alone; on PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several workers
        take disjoint batches (on SQLite the caller's BEGIN IMMEDIATE already holds the database)."""
        return [int(i) for i in self._core.execute(_ready_timers(now, limit, skip_locked=skip_locked)).scalars()]

    def timer_row(self, timer_id: int) -> Row[Any]:
        return self._core.execute(select(_table(Timer)).where(_table(Timer).c.id == timer_id)).one()

    def timers(self, status: str | None = None, limit: int | None = None,
               units: Sequence[int] | None = None) -> Sequence[Timer]:
        query = select(Timer).order_by(Timer.due_at, Timer.id)
        if status is not None:
            query = query.where(Timer.status == status)
        if units is not None:
            query = query.where(Timer.unit_id.in_(list(units)))
        if limit is not None:
            query = query.limit(limit)
        return self.session.scalars(query).all()

    def timer_counts(self, now: datetime) -> dict[str, Any]:
        """What an operator checks first: pending, overdue (pending and ready before now), failed, and the
        oldest overdue due instant."""
        table = _table(Timer)
        ready = and_(table.c.status == "pending", table.c.due_at <= now)
        row = self._core.execute(select(
            func.count().filter(table.c.status == "pending"),
            func.count().filter(ready),
            func.count().filter(table.c.status == "failed"),
            func.min(table.c.due_at).filter(ready),
        )).one()
        return {"pending": int(row[0]), "overdue": int(row[1]), "failed": int(row[2]), "oldest_due": _utc(row[3])}

    def claim_timer(self, timer_id: int, now: datetime) -> Row[Any] | None:
        """Mark a pending timer fired, only if it is still pending: the conditional UPDATE is the claim, so a
        timer is fired once even when two firers race (the loser updates no row and gets None)."""
        table = _table(Timer)
        return self._core.execute(
            update(table).where(table.c.id == timer_id, table.c.status == "pending")
            .values(status="fired", closed_at=now).returning(*table.c)
        ).one_or_none()

    def claim_due_timers(self, now: datetime, limit: int, *, skip_locked: bool) -> list[Row[Any]]:
        """Claim up to ``limit`` timers ready to fire at ``now`` in ONE statement: marked fired (``closed_at``
        now) and returned whole, earliest first. On PostgreSQL the ids are chosen ``FOR UPDATE SKIP LOCKED``, so
        workers claim disjoint batches; on SQLite the caller's BEGIN IMMEDIATE already holds the database. The
        caller fires them in the same transaction, or gives back those it does not (:meth:`unclaim_timers`)."""
        table = _table(Timer)
        # A CTE, evaluated once: PostgreSQL may run an ``IN (subquery)`` with its LIMIT per row of the UPDATE.
        picked = _ready_timers(now, limit, skip_locked=skip_locked).cte("picked")
        claimed = self._core.execute(
            update(table).where(table.c.id == picked.c.id, table.c.status == "pending")
            .values(status="fired", closed_at=now).returning(*table.c)
        ).all()
        return sorted(claimed, key=lambda t: (t.due_at, t.id))

    def unclaim_timers(self, ids: Sequence[int]) -> None:
        """Give claimed timers back (pending again) in the same transaction: a batch stopped before them."""
        if ids:
            self._core.execute(update(_table(Timer)).where(_table(Timer).c.id.in_(list(ids)))
                               .values(status="pending", closed_at=None))

    def objects_under(self, kind: str, workflow: str, *, exclude_states: Sequence[str] = (),
                      states: Sequence[str] = (), pks: Sequence[int] = (), units: Sequence[int] = ()) -> list[int]:
        """Ids of the ``kind`` objects running under the definition ``workflow``, oldest first: not in
        ``exclude_states``; only in ``states``, of ``pks`` and in ``units`` when given (``workflow migrate``)."""
        table = _table(OBJECT_MODELS[kind])
        query = select(table.c.id).where(table.c.workflow == workflow).order_by(table.c.id)
        if exclude_states:
            query = query.where(table.c.state.not_in(list(exclude_states)))
        if states:
            query = query.where(table.c.state.in_(list(states)))
        if pks:
            query = query.where(table.c.id.in_(list(pks)))
        if units:
            query = query.where(table.c.unit_id.in_(list(units)))
        return [int(i) for i in self._core.execute(query).scalars()]

    def definitions_in_use(self) -> dict[str, int]:
        """How many objects run under each workflow definition (every kind's)."""
        found: dict[str, int] = {}
        for model in OBJECT_MODELS.values():
            table = _table(model)
            for name, count in self._core.execute(select(table.c.workflow, func.count()).group_by(table.c.workflow)):
                found[str(name)] = found.get(str(name), 0) + int(count)
        return found

    def lock_objects_for_firing(self, kind: str, pks: Sequence[int]) -> None:
        """PostgreSQL: for each of ``pks`` in the order given, wait for, then hold to the end of the transaction,
        the lock a worker takes on an object before it claims the object's timers (``_one_worker_per_object``): a
        worker firing one of their timers finishes first, and none claims one until this transaction ends. One
        statement for them all (a batch of ``workflow migrate``: one round trip, not one per object)."""
        if pks:
            self._core.execute(_LOCK_OBJECTS, {"kind": kind, "pks": [int(pk) for pk in pks]})

    def load_objects(self, kind: str, pks: Sequence[int]) -> dict[int, Row[Any]]:
        """The ``kind`` objects of ``pks`` by id, in one query (an id with no object is left out)."""
        table = _table(OBJECT_MODELS[kind])
        return {row.id: row for row in self._core.execute(select(table).where(table.c.id.in_(list(pks))))}

    def timers_of_objects(self, kind: str, pks: Sequence[int]) -> dict[int, list[Row[Any]]]:
        """Every timer of each ``kind`` object of ``pks`` (as :meth:`object_timers` gives one object's, due
        order), in one query."""
        table = _table(Timer)
        found: dict[int, list[Row[Any]]] = {pk: [] for pk in pks}
        for timer in self._core.execute(
            select(table).where(table.c.object_kind == kind, table.c.object_id.in_(list(pks)))
            .order_by(table.c.due_at, table.c.id)
        ):
            found[timer.object_id].append(timer)
        return found

    def timer_forecast(self, kind: str, name: str, since: datetime, until: datetime,
                       units: Sequence[int] | None = None) -> list[tuple[datetime, int]]:
        """(due instant, count) of a kind's pending timers of one name due in ``[since, until)`` (of objects of
        ``units``, None: any)."""
        query = _forecast(kind, name)
        params: dict[str, Any] = {"since": since, "until": until}
        if units is not None:
            query = query.where(_table(Timer).c.unit_id.in_(bindparam("units", expanding=True)))
            params["units"] = list(units)
        return [(row.due_at, int(row.due)) for row in self._core.execute(query, params)]

    def state_counts(self, kind: str, units: Sequence[int] | None = None,
                     workflow: str | None = None) -> dict[str, int]:
        """How many ``kind`` objects are in each state (of those in ``units``; of those under ``workflow``)."""
        model = _table(OBJECT_MODELS[kind])
        query = select(model.c.state, func.count()).group_by(model.c.state)
        if workflow is not None:
            query = query.where(model.c.workflow == workflow)
        if units is not None:
            query = query.where(model.c.unit_id.in_(list(units)))
        return {state: int(n) for state, n in self._core.execute(query)}

    def open_tasks(self, until: datetime) -> Sequence[Timer]:
        """Deadline timers whose task is not done or resolved yet, due by ``until``, and every missed task not
        resolved yet whatever its due instant: the worklist's rows."""
        return self.session.scalars(
            select(Timer).where(
                Timer.task.is_not(None), Timer.satisfied_at.is_(None), Timer.resolved_at.is_(None),
                or_(and_(Timer.status.in_(("pending", "fired")), Timer.due_at <= until), Timer.status == "missed"),
            ).order_by(Timer.due_at, Timer.id)
        ).all()

    # ---- audit ---------------------------------------------------------------------------------------------

    def audit_entries(
        self, *, kind: str | None = None, pk: int | None = None,
        since: datetime | None = None, until: datetime | None = None,
        actor: str | None = None, trigger: str | None = None, limit: int | None = None,
        scope: Sequence[int] | None = None, acting: Sequence[int] | None = None,
    ) -> Sequence[Row[Any]]:
        """Entries by sequence number, filtered; with ``limit``, the newest ``limit`` of them."""
        table = _table(AuditEntry)
        query = select(table)
        if scope is not None:
            query = query.where(scoped_entries(table, scope))
        if acting is not None:
            query = query.where(table.c.unit_id.in_(list(acting)))
        if kind is not None:
            query = query.where(table.c.object_kind == kind)
        if pk is not None:
            query = query.where(table.c.object_id == pk)
        if since is not None:
            query = query.where(table.c.at >= since)
        if until is not None:
            query = query.where(table.c.at <= until)
        if actor is not None:
            query = query.where(table.c.actor == actor)
        if trigger is not None:
            query = query.where(table.c.trigger == trigger)
        if limit is not None:
            newest = list(self._core.execute(query.order_by(table.c.seq.desc()).limit(limit)))
            return newest[::-1]
        return list(self._core.execute(query.order_by(table.c.seq)))

    def audit_filtered(self, where: AuditWhere) -> Select[Any]:
        """The entries ``where`` selects (all its filters together), unordered: what the auditor's desk pages
        through and exports."""
        table = _table(AuditEntry)
        query = select(table)
        if where.kind is not None:
            query = query.where(table.c.object_kind == where.kind)
        if where.pk is not None:
            query = query.where(table.c.object_id == where.pk)
        if where.since is not None:
            query = query.where(table.c.at >= where.since)
        if where.before is not None:
            query = query.where(table.c.at < where.before)
        if where.actor is not None:
            query = query.where(table.c.actor == where.actor)
        if where.trigger is not None:
            query = query.where(table.c.trigger == where.trigger)
        if where.scope is not None:
            query = query.where(scoped_entries(table, where.scope))
        if where.acting is not None:
            query = query.where(table.c.unit_id.in_(list(where.acting)))
        return query

    def audit_page(self, where: AuditWhere, *, limit: int, older_than: int | None = None,
                   newer_than: int | None = None) -> tuple[list[Row[Any]], bool, bool]:
        """One page of the entries ``where`` selects, newest first, by keyset on the sequence number: the
        ``limit`` newest (before ``older_than``, or the ``limit`` just after ``newer_than``). Returns (entries,
        whether older ones follow, whether newer ones precede)."""
        table = _table(AuditEntry)
        query = self.audit_filtered(where)
        if newer_than is not None:
            rows = list(self._core.execute(query.where(table.c.seq > newer_than)
                                           .order_by(table.c.seq).limit(limit + 1)))
            newer = len(rows) > limit
            rows = rows[:limit][::-1]
            older = self._any(query.where(table.c.seq <= newer_than)) if rows else False
            return rows, older, newer
        if older_than is not None:
            query = query.where(table.c.seq < older_than)
        rows = list(self._core.execute(query.order_by(table.c.seq.desc()).limit(limit + 1)))
        older = len(rows) > limit
        rows = rows[:limit]
        newer = older_than is not None and bool(rows) and self._any(
            self.audit_filtered(where).where(table.c.seq > rows[0].seq))
        return rows, older, newer

    def _any(self, query: Select[Any]) -> bool:
        table = _table(AuditEntry)
        return self._core.execute(query.with_only_columns(table.c.seq).limit(1)).first() is not None

    def stream_audit_filtered(self, where: AuditWhere) -> Iterator[Any]:
        """The entries ``where`` selects, by sequence number, streamed."""
        table = _table(AuditEntry)
        return self._stream(self.audit_filtered(where).order_by(table.c.seq))

    def audit_entry(self, seq: int) -> Row[Any] | None:
        table = _table(AuditEntry)
        return self._core.execute(select(table).where(table.c.seq == seq)).first()

    def audit_at_pos(self, kind: str, pk: int, pos: int) -> Row[Any] | None:
        """The entry at ``pos`` in an object's chain (the unique index's lookup)."""
        table = _table(AuditEntry)
        return self._core.execute(select(table).where(table.c.object_kind == kind, table.c.object_id == pk,
                                                      table.c.pos == pos)).first()

    def audit_distinct(self, column: str) -> list[str]:
        """Every value of ``column`` (``trigger``, ``actor``) the log holds, sorted."""
        table = _table(AuditEntry)
        return [row[0] for row in self._core.execute(select(table.c[column]).distinct().order_by(table.c[column]))]

    def object_history(self, kind: str, pk: int, until: datetime | None = None,
                       before_pos: int | None = None) -> list[Row[Any]]:
        """One object's entries in chain order (position), up to the instant ``until`` when given, and only those
        before position ``before_pos`` when given (the object as it was just before that entry)."""
        table = _table(AuditEntry)
        query = select(table).where(table.c.object_kind == kind, table.c.object_id == pk)
        if until is not None:
            query = query.where(table.c.at <= until)
        if before_pos is not None:
            query = query.where(table.c.pos < before_pos)
        return list(self._core.execute(query.order_by(table.c.pos, table.c.seq)))

    def _stream(self, query: Select[Any]) -> Iterator[Any]:
        """Rows as mappings, fetched ``STREAM_CHUNK`` at a time (a server-side cursor on PostgreSQL)."""
        result = self._core.execution_options(yield_per=STREAM_CHUNK).execute(query)
        yield from result.mappings()

    def stream_audit(self) -> Iterator[Any]:
        """The whole log by sequence number, streamed."""
        table = _table(AuditEntry)
        return self._stream(select(table).order_by(table.c.seq))

    def stream_audit_through(self, seq: int) -> Iterator[Any]:
        """The log's entries up to sequence number ``seq``, by sequence number, streamed (``engine.anchor``)."""
        table = _table(AuditEntry)
        return self._stream(select(table).where(table.c.seq <= seq).order_by(table.c.seq))

    def audit_chain_ends(self) -> list[Any]:
        """The last entry of every chain in the log itself (the highest position per object, whatever the rows'
        heads say), by (object_kind, object_id): what an anchor checkpoints (``engine.anchor``). Not streamed: it
        runs inside a writing unit of work, and one row per object is what the anchor holds anyway."""
        table = _table(AuditEntry)
        last = (select(table.c.object_kind, table.c.object_id, func.max(table.c.pos).label("pos"))
                .group_by(table.c.object_kind, table.c.object_id).subquery())
        return list(self._core.execute(
            select(table.c.object_kind, table.c.object_id, table.c.pos, table.c.seq, table.c.hash)
            .join(last, (table.c.object_kind == last.c.object_kind) & (table.c.object_id == last.c.object_id)
                  & (table.c.pos == last.c.pos))
            .order_by(table.c.object_kind, table.c.object_id)).mappings())

    def audit_max_seq(self) -> int:
        """The log's highest sequence number (0: an empty log)."""
        return int(self._core.execute(select(func.coalesce(func.max(_table(AuditEntry).c.seq), 0))).scalar_one())

    def lock_audit_log(self) -> None:
        """PostgreSQL: wait until every transaction writing the log has ended and hold new writers back until this
        one ends (SHARE mode), so that no entry with a lower sequence number commits after this one read the
        log's end. SQLite has one writer at a time already: nothing to do."""
        if self.session.get_bind().dialect.name == "postgresql":
            self._core.execute(text("LOCK TABLE audit_log IN SHARE MODE"))

    def stream_chains(self, kind: str) -> Iterator[Any]:
        """The entries of every ``kind`` object, object by object, each in chain order, streamed."""
        table = _table(AuditEntry)
        return self._stream(select(table).where(table.c.object_kind == kind)
                            .order_by(table.c.object_id, table.c.pos, table.c.seq))

    def stream_foreign_entries(self) -> Iterator[Any]:
        """Entries of kinds no table has: they belong to no object."""
        table = _table(AuditEntry)
        return self._stream(select(table).where(table.c.object_kind.not_in(tuple(HEAD_MODELS)))
                            .order_by(table.c.object_kind, table.c.object_id, table.c.pos, table.c.seq))

    def stream_rows(self, kind: str) -> Iterator[Any]:
        table = _table(HEAD_MODELS[kind])
        return self._stream(select(table).order_by(table.c.id))

    def stream_timers(self, kind: str) -> Iterator[Any]:
        table = _table(Timer)
        return self._stream(select(table).where(table.c.object_kind == kind)
                            .order_by(table.c.object_id, table.c.id))

    # ---- clock ---------------------------------------------------------------------------------------------

    def clock(self) -> ClockSetting | None:
        return self.session.get(ClockSetting, 1)

    def save_clock(self, *, simulated: bool, now: datetime | None) -> None:
        row = self.clock()
        if row is None:
            self.session.add(ClockSetting(id=1, simulated=simulated, now=now))
        else:
            row.simulated, row.now = simulated, now

    # ---- units, memberships, placement, assignment, notes (issue 17) ---------------------------------------

    def units(self) -> list[Row[Any]]:
        """Every unit (id, name, parent_id, created_at), by id: the tree is small and read whole."""
        table = _table(Unit)
        return list(self._core.execute(select(table.c.id, table.c.name, table.c.parent_id, table.c.created_at)
                                       .order_by(table.c.id)))

    def unit_by_name(self, name: str) -> Row[Any] | None:
        table = _table(Unit)
        return self._core.execute(select(table).where(table.c.name == name)).first()

    def insert_unit(self, values: dict[str, Any]) -> int:
        return int(self._core.execute(insert(_table(Unit)).values(**values).returning(_table(Unit).c.id)).scalar_one())

    def memberships(self, user_pk: int | None = None, unit_pk: int | None = None) -> list[Row[Any]]:
        """Memberships (id, user_id, unit_id, role, last_assigned_at, and the user's name, role and whether
        disabled), by membership id; of one user or one unit when given."""
        m, u = _table(Membership), _table(User)
        query = (select(m.c.id, m.c.user_id, m.c.unit_id, m.c.role, m.c.last_assigned_at, u.c.name,
                        u.c.role.label("user_role"), u.c.disabled_at)
                 .join(u, u.c.id == m.c.user_id).order_by(m.c.id))
        if user_pk is not None:
            query = query.where(m.c.user_id == user_pk)
        if unit_pk is not None:
            query = query.where(m.c.unit_id == unit_pk)
        return list(self._core.execute(query))

    def memberships_of_name(self, name: str) -> tuple[Row[Any] | None, list[Row[Any]]]:
        """A user by name (id, name, role, disabled_at; or None) and their memberships (unit_id, role), by
        membership, in one query."""
        u, m = _table(User), _table(Membership)
        rows = list(self._core.execute(
            select(u.c.id, u.c.name, u.c.role, u.c.disabled_at, m.c.unit_id, m.c.role.label("unit_role"))
            .outerjoin(m, m.c.user_id == u.c.id).where(u.c.name == name).order_by(m.c.id)))
        if not rows:
            return None, []
        memberships = [SimpleNamespace(unit_id=r.unit_id, role=r.unit_role) for r in rows if r.unit_id is not None]
        return rows[0], memberships  # type: ignore[return-value]

    def insert_membership(self, values: dict[str, Any]) -> int:
        table = _table(Membership)
        return int(self._core.execute(insert(table).values(**values).returning(table.c.id)).scalar_one())

    def update_membership(self, pk: int, **values: Any) -> None:
        m = _table(Membership)
        self._core.execute(update(m).where(m.c.id == pk).values(**values))

    def delete_membership(self, pk: int) -> None:
        m = _table(Membership)
        self._core.execute(m.delete().where(m.c.id == pk))

    def placements(self) -> dict[str, Row[Any]]:
        table = _table(Placement)
        return {row.kind: row for row in self._core.execute(select(table))}

    def set_placement(self, kind: str, **values: Any) -> None:
        table = _table(Placement)
        self._core.execute(update(table).where(table.c.kind == kind).values(**values))

    def assigned_objects(self, kind: str, user_pk: int, unit_pks: Sequence[int] | None = None) -> list[Row[Any]]:
        """Objects of ``kind`` assigned to a user (in ``unit_pks`` when given), by id."""
        table = _table(OBJECT_MODELS[kind])
        query = select(table).where(table.c.assignee_id == user_pk).order_by(table.c.id)
        if unit_pks is not None:
            query = query.where(table.c.unit_id.in_(list(unit_pks)))
        return list(self._core.execute(query))

    def objects_where(self, kind: str, *, units: Sequence[int] | None, states: Sequence[str] | None = None,
                      assignee: int | None = None, unassigned: bool = False, limit: int) -> list[Row[Any]]:
        """Objects of ``kind`` in ``units`` (None: any), in ``states``, of one assignee or unassigned, by id, at
        most ``limit``: a bulk assignment's filter."""
        table = _table(OBJECT_MODELS[kind])
        query = select(table).order_by(table.c.id).limit(limit)
        if units is not None:
            query = query.where(table.c.unit_id.in_(list(units)))
        if states:
            query = query.where(table.c.state.in_(list(states)))
        if assignee is not None:
            query = query.where(table.c.assignee_id == assignee)
        if unassigned:
            query = query.where(table.c.assignee_id.is_(None))
        return list(self._core.execute(query))

    def set_timers_owner(self, kind: str, pk: int, unit_pk: int, assignee_pk: int | None) -> None:
        """The object's unit and assignee on its timers (the worklist filters by them)."""
        t = _table(Timer)
        self._core.execute(update(t).where(t.c.object_kind == kind, t.c.object_id == pk)
                           .values(unit_id=unit_pk, assignee_id=assignee_pk))

    def insert_note(self, values: dict[str, Any]) -> int:
        table = _table(Note)
        return int(self._core.execute(insert(table).values(**values).returning(table.c.id)).scalar_one())

    def notes_of(self, kind: str, pk: int) -> list[Row[Any]]:
        table = _table(Note)
        return list(self._core.execute(select(table).where(table.c.object_kind == kind, table.c.object_id == pk)
                                       .order_by(table.c.id)))

    def notes_by_id(self, pks: Sequence[int]) -> dict[int, Row[Any]]:
        """Notes by id (the timeline joins its note and attempt entries' texts with them)."""
        table = _table(Note)
        found: dict[int, Row[Any]] = {}
        for chunk in _chunks(sorted(set(pks))):
            found.update({r.id: r for r in self._core.execute(select(table).where(table.c.id.in_(chunk)))})
        return found

    def hard_to_reach(self, kind: str, states: Sequence[str], minimum: int, units: Sequence[int] | None,
                      limit: int) -> list[Row[Any]]:
        """Objects of ``kind`` in ``states`` with at least ``minimum`` failed contact attempts (of ``units``;
        None: any), by id, at most ``limit``."""
        table = _table(OBJECT_MODELS[kind])
        # The threshold as a constant: the partial index ``ix_<table>_hard_to_reach`` holds exactly these rows.
        query = (select(table).where(table.c.failed_attempts >= literal_column(str(int(minimum))),
                                     table.c.state.in_(list(states)))
                 .order_by(table.c.id).limit(limit))
        if units is not None:
            query = query.where(table.c.unit_id.in_(list(units)))
        return list(self._core.execute(query))

    def last_attempts(self, kind: str, pks: Sequence[int]) -> dict[int, Row[Any]]:
        """Each object's newest contact attempt (its notes row), by object id."""
        table = _table(Note)
        found: dict[int, Row[Any]] = {}
        for chunk in _chunks(sorted(set(pks))):
            newest = (select(func.max(table.c.id)).where(table.c.object_kind == kind, table.c.kind == "attempt",
                                                         table.c.object_id.in_(chunk))
                      .group_by(table.c.object_id))
            found.update({r.object_id: r for r in self._core.execute(select(table).where(table.c.id.in_(newest)))})
        return found

    def user_names(self, pks: Sequence[int]) -> dict[int, str]:
        u = _table(User)
        found: dict[int, str] = {}
        for chunk in _chunks(sorted(set(pks))):
            found.update({r.id: r.name for r in self._core.execute(select(u.c.id, u.c.name).where(u.c.id.in_(chunk)))})
        return found

    # ---- which definition a new object starts under (issue 20) ----------------------------------------------

    def workflow_default_at(self, kind: str, at: datetime) -> Row[Any]:
        """The kind's default in force at ``at``: its ``id``, ``definition`` and ``effective_from`` (all None when
        none was set by then), and ``until``, the instant the next one takes over (None: none is set after it), in
        one read of the index ``(kind, effective_from, id)``."""
        return self._core.execute(_DEFAULT_AT, {"kind": kind, "at": at}).one()

    def workflow_defaults(self) -> list[Row[Any]]:
        """Every default set (its columns, and ``actor`` and ``reason`` of its audit entry), by kind, then from
        when, then in the order set."""
        t = _table(WorkflowDefault)
        return list(self._core.execute(_defaults_with_entry().order_by(t.c.kind, t.c.effective_from, t.c.id)))

    def workflow_default(self, pk: int) -> Row[Any] | None:
        """One default set, as ``workflow_defaults`` gives it."""
        return self._core.execute(
            _defaults_with_entry().where(_table(WorkflowDefault).c.id == pk)).one_or_none()

    def insert_workflow_default(self, values: dict[str, Any]) -> int:
        t = _table(WorkflowDefault)
        return int(self._core.execute(insert(t).values(**values).returning(t.c.id)).scalar_one())

    # ---- the worklist, paged (issue 15) --------------------------------------------------------------------

    def worklist(self, until: datetime | None, *, after: tuple[datetime, int] | None = None,
                 limit: int | None = None, kind: str | None = None, name: str | None = None,
                 units: Sequence[int] | None = None, mine: tuple[int, Sequence[int]] | None = None) -> list[Row[Any]]:
        """The worklist's timers in its order (due instant, then id): every timer parked as ``failed`` (an
        operator's task), every missed task not resolved yet, and the tasks not done or resolved yet that are
        pending or fired (and due by ``until``, when given); after the position ``after`` (the due instant and id
        of the previous page's last item), at most ``limit``, of one object kind and one timer name when given.
        Filter, order and limit run in the database (``_worklist``). ``units``: of objects of these units only
        (issue 17); ``mine``: (a user, their units): assigned to the user, or unassigned in one of their units."""
        values: dict[str, Any] = {
            "until": until, "after_due": after[0] if after else None, "after_id": after[1] if after else None,
            "limit": limit, "kind": kind, "name": name, "units": None if units is None else list(units),
            "me": None if mine is None else mine[0], "pool": None if mine is None else list(mine[1]) or [0]}
        query = _worklist(*(values[k] is not None for k in ("until", "after_due", "limit", "kind", "name", "units",
                                                            "me")))
        return list(self._core.execute(query, {k: v for k, v in values.items() if v is not None}))


    def worklist_context(self, objects: Sequence[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """What a desk needs beside each worklist item's object (issue 16): its person's id and reference, a
        contact's case, a course's contact, and a contact's pending 4-day PEP window (``pep_best_by``: the
        instant it closes). One query per kind and one for the persons, in chunks."""
        found: dict[tuple[str, int], dict[str, Any]] = {}
        by_kind: dict[str, set[int]] = {}
        for kind, pk in objects:
            by_kind.setdefault(kind, set()).add(pk)
        persons: set[int] = set()
        for kind, pks in by_kind.items():
            if kind not in OBJECT_MODELS:
                continue
            table = _table(OBJECT_MODELS[kind])
            links = [c for c in ("case_id", "contact_id") if c in table.c]
            for chunk in _chunks(sorted(pks)):
                for row in self._core.execute(select(table.c.id, table.c.person_id, *(table.c[c] for c in links))
                                              .where(table.c.id.in_(chunk))):
                    values = {"person_id": row.person_id, **{c: getattr(row, c) for c in links}}
                    found[(kind, row.id)] = values
                    persons.add(row.person_id)
        refs: dict[int, str] = {}
        people = _table(Person)
        for chunk in _chunks(sorted(persons)):
            refs.update({r.id: r.ref for r in self._core.execute(
                select(people.c.id, people.c.ref).where(people.c.id.in_(chunk)))})
        for values in found.values():
            values["ref"] = refs.get(values["person_id"])
        timers = _table(Timer)
        for chunk in _chunks(sorted(by_kind.get("contact", ()))):
            for row in self._core.execute(
                    select(timers.c.object_id, timers.c.due_at).where(
                        timers.c.object_kind == "contact", timers.c.object_id.in_(chunk),
                        timers.c.name == "pep_optimal_window_closes", timers.c.status == "pending")):
                found.setdefault(("contact", row.object_id), {})["pep_best_by"] = _utc(row.due_at)
        return found

    def persons_by_ref(self, text: str, limit: int) -> list[Person]:
        """Persons whose reference is ``text`` or starts with it (the exact one first), at most ``limit``."""
        exact = self.person_by_ref(text)
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = (select(Person).where(Person.ref.like(f"{escaped}%", escape="\\"), Person.ref != text)
                 .order_by(Person.ref, Person.id).limit(limit))
        return ([exact] if exact is not None else []) + list(self.session.scalars(query).all())[
            :limit - (exact is not None)]

    # ---- an HTTP request's first read (issue 15) -----------------------------------------------------------

    def clock_and_login(self, *, token_hash: str | None = None, session_hash: str | None = None,
                        now: datetime | None = None) -> Row[Any] | None:
        """The clock's row and, when a secret's hash is given, the login it stands for (a token's: unrevoked; a
        session's: live at ``now``; either's user enabled), in one statement: ``simulated, now`` and
        ``login_id, user_id, name, role, csrf`` (None when no such login). None when the clock has no row."""
        return self._core.execute(_clock_and_login("token" if token_hash else "session" if session_hash else None),
                                  {"secret_hash": token_hash or session_hash, "now": now}).one_or_none()


#: Tasks shown on the worklist from the moment they are armed, however far off their deadline (issue 16: the PEP
#: assessment of a contact, §6.2, from registration; its 4-day window rides on the same row).
SHOWN_WHEN_ARMED = ("pep_assessment_due",)

#: The columns a worklist item is made of.
_WORKLIST_COLUMNS = ("id", "object_kind", "object_id", "name", "task", "due_at", "overdue_at", "status", "rule",
                     "attempts", "unit_id", "assignee_id")


def _owner_filter(timers: Table, units: bool, mine: bool) -> list[Any]:
    """The worklist's filters by owner (issue 17): the objects' units, and one user's work (assigned to them, or
    unassigned in one of their units)."""
    where: list[Any] = []
    if units:
        where.append(timers.c.unit_id.in_(bindparam("units", expanding=True)))
    if mine:
        where.append(or_(timers.c.assignee_id == bindparam("me"),
                         and_(timers.c.assignee_id.is_(None), timers.c.unit_id.in_(bindparam("pool", expanding=True)))))
    return where


def _chunks(values: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def open_task(timers: Table) -> Any:
    """A task not done and not resolved: the predicate of the worklist's partial indexes (``ix_timers_worklist``,
    ``_kind``, ``_task``), written out in every query that is to use them (SQLite uses a partial index only for
    a query whose WHERE has the index's terms)."""
    return and_(timers.c.task.is_not(None), timers.c.satisfied_at.is_(None), timers.c.resolved_at.is_(None))


@functools.cache
def _worklist(until: bool, after: bool, limit: bool, kind: bool, name: bool, units: bool = False,
              mine: bool = False) -> Select[Any]:
    """The worklist's query: per status, ordered ranges of one index read up to ``limit``, merged in the same
    order. Statuses: a task pending or fired and due by ``until``, a task missed (whatever its due instant: it
    stays until resolved), a timer parked as failed (task or not). Each range's equalities (the status, and the
    object kind or timer name) come before ``(due_at, id)`` in the index it reads (``ix_timers_worklist``,
    ``_kind``, ``_task``: partial over open tasks; ``ix_timers_status_due`` for the failed). ``after``, the keyset
    position ``(due_at, id) > (:after_due, :after_id)``, is two ranges per status: the rest of the position's
    due instant (``due_at = :after_due AND id > :after_id``) and what is due later (``due_at > :after_due``), so
    that a page after thousands of tasks due at one instant (every contact exposed on one day) seeks to its place
    on both backends instead of reading past them (SQLite seeks on a row value's first column only)."""
    timers = _table(Timer)
    columns = [timers.c[c] for c in _WORKLIST_COLUMNS]
    at = bindparam("after_due", type_=timers.c.due_at.type)
    arms = []
    for status in ("pending", "fired", "missed", "failed"):
        where = [timers.c.status == literal_column(f"'{status}'")]  # a constant: each range's plan is its own
        if status != "failed":
            where.append(open_task(timers))
        if until and status in ("pending", "fired"):
            where.append(timers.c.due_at <= bindparam("until", type_=timers.c.due_at.type))
        if kind:
            where.append(timers.c.object_kind == bindparam("kind"))
        if name:
            where.append(timers.c.name == bindparam("name"))
        where += _owner_filter(timers, units, mine)
        ranges = ([[timers.c.due_at == at, timers.c.id > bindparam("after_id")], [timers.c.due_at > at]] if after
                  else [[]])
        for position in ranges:
            arm = select(*columns).where(*where, *position).order_by(timers.c.due_at, timers.c.id)
            if limit:
                arm = arm.limit(bindparam("limit"))
            arms.append(select(arm.subquery()))
    if until:
        # Tasks on the worklist from the moment they are armed, whatever ``until`` (``SHOWN_WHEN_ARMED``: the PEP
        # assessment, issue 16): their pending rows due later than ``until``, one range per name (``_task``).
        for shown in SHOWN_WHEN_ARMED:
            where = [timers.c.status == literal_column("'pending'"), open_task(timers),
                     timers.c.name == literal_column(f"'{shown}'"),
                     timers.c.due_at > bindparam("until", type_=timers.c.due_at.type)]
            if kind:
                where.append(timers.c.object_kind == bindparam("kind"))
            if name:
                where.append(timers.c.name == bindparam("name"))
            where += _owner_filter(timers, units, mine)
            ranges = ([[timers.c.due_at == at, timers.c.id > bindparam("after_id")], [timers.c.due_at > at]]
                      if after else [[]])
            for position in ranges:
                arm = select(*columns).where(*where, *position).order_by(timers.c.due_at, timers.c.id)
                if limit:
                    arm = arm.limit(bindparam("limit"))
                arms.append(select(arm.subquery()))
    merged = union_all(*arms).subquery("worklist")
    query = select(merged).order_by(merged.c.due_at, merged.c.id)
    return query.limit(bindparam("limit")) if limit else query


@functools.cache
def _clock_and_login(via: str | None) -> Select[Any]:
    """The clock's row, joined (left, on nothing) with the login of a token or a session cookie, when ``via``."""
    clock = _table(ClockSetting)
    if via is None:
        return select(clock.c.simulated, clock.c.now).where(clock.c.id == 1)
    found = _TOKEN_USER if via == "token" else _SESSION_USER
    login = found.subquery("login")
    csrf = login.c.csrf if via == "session" else literal_column("NULL").label("csrf")
    language = login.c.language if via == "session" else literal_column("NULL").label("language")
    return (select(clock.c.simulated, clock.c.now, login.c.id.label("login_id"), login.c.user_id, login.c.name,
                   login.c.role, csrf, language)
            .select_from(clock.outerjoin(login, true())).where(clock.c.id == 1))
