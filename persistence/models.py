"""SQLAlchemy 2.x typed models. The schema itself is made by the Alembic migrations in ``migrations/``;
these classes map it (``create_all`` is never used on a production path).

Instants are stored in UTC (``UTCDateTime``) and always come back timezone-aware. Workflow objects carry a
``version`` column that SQLAlchemy checks on every UPDATE, so a change made meanwhile by someone else is a
conflict, never a lost update.
"""

# No ``from __future__ import annotations`` here: SQLAlchemy reads every ``Mapped[...]`` annotation when the classes
# are made, and evaluating them from strings adds a quarter to this module's import time (every command pays it).

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware instant stored as UTC on every backend (SQLite has no timezone type)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: instants must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def partial(where: str) -> dict[str, Any]:
    """The keywords of a partial index, ``WHERE where`` on both backends, as the migrations made it: kept in the
    index's ``info``. Given as SQLAlchemy's dialect keywords (``sqlite_where``, ``postgresql_where``) it would load
    each dialect to check the keyword, the PostgreSQL one alone some 7% of a command's time on SQLite, and nothing
    reads it at run time (the schema is the migrations'; ``create_all`` is never used, and Alembic's comparison
    does not look at it). ``tests/test_migrations.py`` checks it against the database's own indexes."""
    return {"info": {"where": where}}


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, date: Date, dict[str, Any]: JSON, list[Any]: JSON}


class AuditHead:
    """The head of the row's audit chain: position, sequence number and hash of its last audit entry, written
    in the transaction that appends the entry (see ``persistence.audit``)."""

    audit_pos: Mapped[int | None] = mapped_column(Integer)
    audit_seq: Mapped[int | None] = mapped_column(Integer)
    audit_hash: Mapped[str | None] = mapped_column(String(64))


class Person(AuditHead, Base):
    __tablename__ = "persons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The external reference (e.g. a CPR number): personal data, shown to staff, never logged or audited. None once
    #: purged (migration 0016): a purged person can no longer be found by it.
    ref: Mapped[str | None] = mapped_column(String(64), unique=True)
    born: Mapped[date | None]
    immunocompromised: Mapped[bool] = mapped_column(Boolean, default=False)
    pregnant: Mapped[bool] = mapped_column(Boolean, default=False)
    previous_mpox: Mapped[bool] = mapped_column(Boolean, default=False)
    smallpox_vaccinated: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Breastfeeding (§6.2.1; ``pregnant`` is pregnancy alone since migration 0009).
    breastfeeding: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Doses of Imvanex given outside mpoxflow (§6.3: no more than 2 over the person), and the last one's date.
    doses_elsewhere: Mapped[int] = mapped_column(Integer, default=0)
    last_dose_elsewhere_on: Mapped[date | None]
    created_at: Mapped[datetime]
    #: When the person's personal data was deleted under a retention rule, and that rule (migration 0016; issue 19).
    purged_at: Mapped[datetime | None] = mapped_column(default=None)
    purge_rule: Mapped[str | None] = mapped_column(String(64), default=None)


class WorkflowObject(AuditHead):
    """Columns every workflow object has."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(32), index=True)
    #: The definition the object started under (``case@SST-mpox-7.1``).
    workflow: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Since migration 0013 (issue 17):
    #: The unit the object belongs to (``units.id``; objects written before 0013 belong to the root, 1).
    unit_id: Mapped[int] = mapped_column(Integer)
    #: The user whose work it is (``users.id``), a member of the unit; None: the unit's unassigned pool.
    assignee_id: Mapped[int | None] = mapped_column(Integer)
    #: Contact attempts that did not reach the person since the last one that did (three: hard to reach).
    failed_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


class Case(WorkflowObject, Base):
    __tablename__ = "cases"

    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    #: None: a case confirmed by PCR without symptoms (§1.1); its infectious period starts at the sample date.
    onset: Mapped[date | None]
    symptoms: Mapped[list[Any]]
    criteria: Mapped[list[Any]]
    pcr_on: Mapped[date | None]
    clade: Mapped[str | None] = mapped_column(String(8))
    confirmed_at: Mapped[datetime | None]
    isolation_mode: Mapped[str | None] = mapped_column(String(16))
    healed_on: Mapped[date | None]
    died_on: Mapped[date | None]
    phone_notified_at: Mapped[datetime | None]
    written_notified_at: Mapped[datetime | None]
    tracing_consent: Mapped[bool | None]
    sources: Mapped[list[Any]]
    source_case: Mapped[str | None] = mapped_column(String(32))
    # Since migration 0009 (NULL on objects written before it):
    symptom_note: Mapped[str | None] = mapped_column(Text)
    isolation_ended_at: Mapped[datetime | None]
    sample_sent_on: Mapped[date | None]
    child: Mapped[bool | None] = mapped_column(Boolean)
    paediatric_referred_at: Mapped[datetime | None]
    discharged_on: Mapped[date | None]
    discharge_decided_by: Mapped[str | None] = mapped_column(String(128))
    antiviral: Mapped[dict[str, Any] | None]
    antiviral_consider: Mapped[str | None] = mapped_column(Text)
    work: Mapped[list[Any] | None]
    no_work: Mapped[bool | None] = mapped_column(Boolean)
    #: The contact (its internal id) whose symptoms opened this case (§5.5).
    from_contact: Mapped[int | None] = mapped_column(Integer)


class Contact(WorkflowObject, Base):
    """A close contact: one per (case, person); a new exposure to the same case is recorded on it."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("case_id", "person_id", name="uq_contacts_case_person"),)

    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    exposure_kind: Mapped[str] = mapped_column(String(32))
    risk: Mapped[str] = mapped_column(String(8))
    risk_assessed: Mapped[bool] = mapped_column(Boolean)
    exposed_on: Mapped[date]
    last_exposure_on: Mapped[date]
    pep_window: Mapped[str] = mapped_column(String(16))
    exposures: Mapped[list[Any]]
    anonymous_via_doctor: Mapped[bool] = mapped_column(Boolean)
    informed_at: Mapped[datetime | None]
    symptoms_onset: Mapped[date | None]
    symptoms: Mapped[list[Any]]
    became_case: Mapped[str | None] = mapped_column(String(32))
    # Since migration 0009 (NULL on objects written before it):
    #: When a PEP course was offered for the contact (§5.3): its PEP assessment is done (§6.2).
    pep_offered_at: Mapped[datetime | None]


#: A task not done and not resolved yet: the predicate of the worklist's partial indexes (migration 0011).
OPEN_TASK = "task IS NOT NULL AND satisfied_at IS NULL AND resolved_at IS NULL"


class Timer(Base):
    """A timer is data: armed and cancelled in the transaction of the transition that causes it."""

    __tablename__ = "timers"
    __table_args__ = (
        Index("ix_timers_status_due", "status", "due_at"),
        Index("ix_timers_object", "object_kind", "object_id"),
        # The dose-2 forecast (``Repository.timer_forecast``): equalities first, then the due instant.
        Index("ix_timers_forecast", "object_kind", "name", "status", "due_at"),
        Index("ix_timers_missed", "status", "resolved_at"),
        # At most one pending timer of a name per object: re-arming cancels the old one first.
        # Retries waiting: the worker asks for the earliest after every pass.
        Index("ix_timers_retry", "next_attempt_at", **partial("status = 'pending' AND next_attempt_at IS NOT NULL")),
        Index("uq_timers_pending_name", "object_kind", "object_id", "name", unique=True,
              **partial("status = 'pending'")),
        # The worklist, paged (``Repository.worklist``): open tasks only (done and resolved ones leave the
        # index), the status's equality before the worklist's order; by object kind and by timer name too.
        *(Index(f"ix_timers_worklist{suffix}", *columns, "status", "due_at", "id", **partial(OPEN_TASK))
          for suffix, columns in (("", ()), ("_kind", ("object_kind",)), ("_task", ("name",)),
                                  ("_unit", ("unit_id",)), ("_assignee", ("assignee_id",)))),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    #: The timer's name is also the trigger it fires (``condom_advice_ends``).
    name: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime]
    rule: Mapped[str] = mapped_column(String(64))
    #: Staff task behind a deadline timer, shown in the worklist until satisfied; None for automatic timers.
    task: Mapped[str | None] = mapped_column(String(128))
    #: When an unsatisfied task turns overdue (None: at ``due_at``).
    overdue_at: Mapped[datetime | None]
    #: pending, fired, cancelled, skipped, failed.
    status: Mapped[str] = mapped_column(String(16))
    #: Failed firings so far; a pending timer with attempts is retried at ``next_attempt_at``.
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    armed_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    satisfied_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)
    #: A missed task's resolution (``task resolve``): done-late, not-reachable, declined or not-needed, when, why.
    outcome: Mapped[str | None] = mapped_column(String(16))
    resolved_at: Mapped[datetime | None]
    resolution: Mapped[str | None] = mapped_column(Text)
    #: The object's unit and assignee, written with the object's (migration 0013): the worklist filters by them.
    unit_id: Mapped[int | None] = mapped_column(Integer)
    assignee_id: Mapped[int | None] = mapped_column(Integer)


#: The roles a user can have; ``timer`` is the scheduler's own (its actors are ``timer:<timer name>``).
ROLES = ("staff", "auditor", "admin", "timer")


class User(AuditHead, Base):
    """Who may act: every actor of a change is a user here, and the role decides what they may do."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('staff', 'auditor', 'admin', 'timer')", name="ck_users_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    #: A modern password hash (argon2, via pwdlib); None: the user cannot log in with a password.
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    #: When an admin disabled the user (migration 0010); None while enabled. A disabled user's sessions and
    #: tokens stop at once, and the user can neither log in nor act.
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The language the user chose for the pages (migration 0012): ``da`` or ``en``; None: none chosen (the
    #: browser's Accept-Language decides, else Danish).
    language: Mapped[str | None] = mapped_column(String(8), default=None)


class LoginSession(Base):
    """A browser session: the cookie holds a random secret, the table its SHA-256. Deleting the row logs out."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_expires", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: The session's CSRF token: every form and every cookie-authenticated change must carry it.
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class ApiToken(Base):
    """A bearer token for a system acting as a user; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    label: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginFailure(Base):
    """A failed login: the rate limit counts these per name and per address over a recent window."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_name", "name", "at"),
        Index("ix_login_failures_address", "address", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]


class AuditEntry(Base):
    """One entry per change, written in the change's own transaction. Append-only: database triggers refuse
    UPDATE and DELETE on this table (see the first migration). Each entry is chained to the previous entry of
    the same object by hash (``persistence.audit``)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        # One entry per place in an object's chain: a fork cannot be written.
        Index("uq_audit_object_pos", "object_kind", "object_id", "pos", unique=True),
        Index("ix_audit_actor", "actor", "seq"),
        # A timer's firing is recorded once: a second fire of one timer cannot be written.
        Index("uq_audit_timer", "timer_id", unique=True),
        Index("ix_audit_unit", "unit_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The content format the hash covers (``persistence.audit.FORMAT``; 0: written before the chain existed).
    format: Mapped[int] = mapped_column(Integer)
    #: Position in the object's own chain (1, 2, ...), the predecessor's sequence number and hash, this hash.
    pos: Mapped[int] = mapped_column(Integer)
    prev_seq: Mapped[int | None] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    #: The timer whose firing (or skip, or parking) this entry records; None for a person's change.
    timer_id: Mapped[int | None] = mapped_column(Integer)
    object_kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    workflow: Mapped[str | None] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    #: The actor's role when it acted (staff, auditor, admin, timer).
    role: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    #: The clock's instant (simulated or real) of the change.
    at: Mapped[datetime] = mapped_column(index=True)
    #: The wall-clock instant it was recorded (differs from ``at`` on a simulated clock).
    recorded_at: Mapped[datetime]
    rule: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]]
    #: The columns the change wrote, with their new values (JSON forms); None when the object was not written.
    changes: Mapped[dict[str, Any] | None]
    timers_armed: Mapped[list[Any]]
    timers_cancelled: Mapped[list[Any]]
    #: Staff tasks this change completed (their timers' ``satisfied_at`` is the entry's instant).
    timers_done: Mapped[list[Any]]
    #: The unit the acting user acted through (migration 0013; hashed from format 2): for a change of a case,
    #: contact or course the user's unit that gives access to it, for a timer the object's unit, else the user's
    #: first unit. None before 0013.
    unit_id: Mapped[int | None] = mapped_column(Integer)


class ClockSetting(Base):
    """One row: whether this database runs on a simulated clock, and its "now" if so."""

    __tablename__ = "clock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    simulated: Mapped[bool] = mapped_column(Boolean)
    now: Mapped[datetime | None]


#: Failed contact attempts (since the last that reached the person) that make an object hard to reach (issue 17).
HARD_TO_REACH = 3
#: The root unit: made by migration 0013, the top of the tree (every object written before it belongs here).
ROOT_UNIT = 1
#: A member works the unit's objects; a lead also deals out its work to others and transfers it.
MEMBERSHIP_ROLES = ("member", "lead")
#: Where a new object goes: the unit of the object it belongs to, the creating user's unit, or a configured one.
PLACEMENT_RULES = ("parent", "creator", "unit")


class Unit(AuditHead, Base):
    """An organisational unit (STPS and its teams; a region, its departments and clinics): a tree."""

    __tablename__ = "units"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    created_at: Mapped[datetime]


class Membership(Base):
    """A user in a unit, with a role there."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "unit_id", name="uq_memberships_user_unit"),
                      CheckConstraint("role IN ('member', 'lead')", name="ck_memberships_role"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    #: When round-robin last gave this member an object: the next goes to the member waiting longest.
    last_assigned_at: Mapped[datetime | None] = mapped_column(default=None)


class Placement(Base):
    """By object kind: which unit a new object goes to, and whether it is dealt out round-robin there."""

    __tablename__ = "placement"
    __table_args__ = (CheckConstraint("rule IN ('parent', 'creator', 'unit')", name="ck_placement_rule"),)

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    rule: Mapped[str] = mapped_column(String(16))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    round_robin: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class Note(Base):
    """The text of a note or a contact attempt on an object (append-only, as the audit log: database triggers
    refuse UPDATE and DELETE). Its audit entry names it (``note-N``) and never holds the text."""

    __tablename__ = "notes"
    __table_args__ = (Index("ix_notes_object", "object_kind", "object_id", "id"),
                      CheckConstraint("kind IN ('note', 'attempt')", name="ck_notes_kind"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime]
    #: When the purge redacted the text (migration 0016): the one UPDATE the database lets through.
    purged_at: Mapped[datetime | None] = mapped_column(default=None)


class Import(Base):
    """One import of a file (issue 18): what was imported, by whom, with which options, and its report per row.
    ``content`` is the file itself (personal data, as a person's reference: never logged)."""

    __tablename__ = "imports"
    __table_args__ = (Index("ix_imports_created", "created_at"),
                      CheckConstraint("kind IN ('contacts', 'persons', 'cases')", name="ck_imports_kind"),
                      CheckConstraint("format IN ('csv', 'xlsx')", name="ck_imports_format"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(8))
    #: None once purged (migration 0016).
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    options: Mapped[dict[str, Any]]
    dry_run: Mapped[bool] = mapped_column(Boolean)
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    counts: Mapped[dict[str, Any]]
    report: Mapped[list[Any]]
    #: When the retention purge removed the file and the report's links to persons (migration 0016).
    purged_at: Mapped[datetime | None] = mapped_column(default=None)


class NotificationDocument(Base):
    """The written notification of a confirmed case to SSI and STPS (§3.1) as made: a FHIR document Bundle, the
    SHA-256 of its content, the case's version it was made from, and its sending once recorded."""

    __tablename__ = "notification_documents"
    __table_args__ = (Index("ix_notification_documents_case", "case_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    channel: Mapped[str] = mapped_column(String(16), server_default=text("'written'"))
    made_at: Mapped[datetime]
    made_by: Mapped[str] = mapped_column(String(128))
    case_version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    bundle: Mapped[dict[str, Any]]
    sent_at: Mapped[datetime | None]
    sent_by: Mapped[str | None] = mapped_column(String(128))


class Event(Base):
    """The outbox (issue 18): one event per transition, assignment or timer firing, appended in the change's own
    transaction; internal ids only, never personal data. ``seq`` is allocated in commit order (``engine.events``).
    Append-only: database triggers refuse UPDATE and DELETE."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_object", "object_kind", "object_id", "seq"),
                      Index("ix_events_type", "type", "seq"))

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: ``case.confirmed``: ``{kind}.{to_state}`` for a change of state, else ``{kind}.{trigger}``.
    type: Mapped[str] = mapped_column(String(64))
    object_kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    workflow: Mapped[str | None] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    trigger: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(64))
    #: The clock's instant of the change (the audit entry's ``at``).
    at: Mapped[datetime]
    audit_seq: Mapped[int] = mapped_column(Integer)
    unit_id: Mapped[int | None] = mapped_column(Integer)
    timer_id: Mapped[int | None] = mapped_column(Integer)
    #: Internal ids only: the timer's outcome, an assignment's unit and assignee.
    detail: Mapped[dict[str, Any]]


class Webhook(Base):
    """A subscription: events of ``event_types`` POSTed to ``url``, signed with ``secret``, delivered as ``role``."""

    __tablename__ = "webhooks"
    __table_args__ = (CheckConstraint("role IN ('staff', 'auditor', 'admin')", name="ck_webhooks_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[Any]]
    secret: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    #: The payload carries the person's reference (a staff or admin subscription that asked for it).
    personal_data: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    removed_at: Mapped[datetime | None]
    #: Events up to this seq have been brought into ``webhook_objects`` (starts at the newest when made).
    scanned_seq: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class WebhookObject(Base):
    """Delivery state of one webhook for one object (order is kept per object)."""

    __tablename__ = "webhook_objects"
    __table_args__ = (Index("ix_webhook_objects_due", "webhook_id", "next_seq"),)

    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"), primary_key=True)
    object_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    object_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The last event delivered (0: none yet); the next to send (None: nothing pending).
    delivered_seq: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_seq: Mapped[int | None] = mapped_column(Integer)
    #: Failed attempts of ``next_seq`` so far, and when it is tried again.
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None]
    #: A worker sending ``next_seq`` holds it until then (a killed worker's lease runs out: sent again).
    lease_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))


class WebhookDelivery(Base):
    """One delivery attempt: its outcome, HTTP status, error (never a body or personal data) and duration."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
                      Index("ix_webhook_deliveries_event", "event_seq", "id"),
                      CheckConstraint("outcome IN ('delivered', 'failed')", name="ck_webhook_deliveries_outcome"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"))
    event_seq: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)


class AdviceMessage(Base):
    """One sending of an advice sheet (issue 21 item 4, ``engine.messages``): queued for the worker (email, sms) or
    given by staff (phone, letter). ``address`` only while it waits to be sent (NULL once sent or failed)."""

    __tablename__ = "advice_messages"
    __table_args__ = (Index("ix_advice_messages_due", "status", "next_attempt_at"),
                      Index("ix_advice_messages_object", "object_kind", "object_id"),
                      CheckConstraint("channel IN ('email', 'sms', 'phone', 'letter')",
                                      name="ck_advice_messages_channel"),
                      CheckConstraint("status IN ('queued', 'sent', 'failed', 'given')",
                                      name="ck_advice_messages_status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    sheet: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(2))
    channel: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(8))
    address: Mapped[str | None] = mapped_column(String(320))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


#: The kinds of data with a retention period (issue 19), and the unit each period is counted in.
RETENTION_KINDS = ("person", "import")


class RetentionRule(Base):
    """How long a kind of personal data is kept (``engine.retention``): ``period`` years or days."""

    __tablename__ = "retention_rules"
    __table_args__ = (CheckConstraint("kind IN ('person', 'import')", name="ck_retention_rules_kind"),
                      CheckConstraint("unit IN ('years', 'days')", name="ck_retention_rules_unit"),
                      CheckConstraint("period >= 1", name="ck_retention_rules_period"))

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    unit: Mapped[str] = mapped_column(String(8))
    period: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime | None]
    updated_by: Mapped[str | None] = mapped_column(String(128))


#: Workflow object models by kind.
class PersonalRead(Base):
    """A person's reference (or birth date) shown to someone (issue 19 item 3): who, when, which person (the
    internal id only, never a reference or a birth date), what showed it and how, grouped by the request or command
    (``engine.reads``). No foreign key to the person: the log outlives any purge. Append-only: database triggers
    refuse UPDATE and DELETE."""

    __tablename__ = "personal_reads"
    __table_args__ = (Index("ix_personal_reads_person", "person_id", "at"),
                      Index("ix_personal_reads_actor", "actor", "at"),
                      Index("ix_personal_reads_at", "at"),
                      CheckConstraint("what IN ('ref', 'person', 'case', 'contact', 'course', 'fhir', 'document', "
                                      "'import', 'webhook', 'report')", name="ck_personal_reads_what"),
                      CheckConstraint("via IN ('cli', 'web', 'api', 'worker')", name="ck_personal_reads_via"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The clock's instant (simulated or real) of the read.
    at: Mapped[datetime]
    #: The wall clock's instant it was recorded.
    recorded_at: Mapped[datetime]
    #: A user's name, or a webhook's id (``webhook-N``) for a delivery carrying the person.
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    #: The unit the reader acted through (their first unit), when there is one.
    unit_id: Mapped[int | None] = mapped_column(Integer)
    person_id: Mapped[int] = mapped_column(Integer)
    what: Mapped[str] = mapped_column(String(16))
    via: Mapped[str] = mapped_column(String(8))
    #: The request (``X-Request-ID``) or command the read belongs to: its rows share it.
    request_id: Mapped[str] = mapped_column(String(64))


class WorkflowDefault(AuditHead, Base):
    """Which definition a kind's new objects start under, from an instant (migration 0018; issue 20 item 1): a
    deployment's choice, set by an admin (``engine.definitions``) and audited on its own chain. Rows are only added;
    the one in force at an instant is the kind's latest from at or before it (of two from one instant, the later
    set); none: the product's definition (``workflows.registry.WORKFLOWS``)."""

    __tablename__ = "workflow_defaults"
    __table_args__ = (Index("ix_workflow_defaults_kind_from", "kind", "effective_from", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    #: The definition's versioned name (``contact@SST-mpox-7.1-r2``).
    definition: Mapped[str] = mapped_column(String(64))
    effective_from: Mapped[datetime]
    created_at: Mapped[datetime]


class Course(WorkflowObject, Base):
    """A vaccination course (§6): its dose plan, doses and the records PEP needs."""

    __tablename__ = "courses"
    __table_args__ = (CheckConstraint("doses_planned IN (1, 2)", name="ck_courses_doses_planned"),)

    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    indication: Mapped[str] = mapped_column(String(8))
    doses_planned: Mapped[int] = mapped_column(Integer)
    plan_rule: Mapped[str] = mapped_column(String(64))
    plan_reason: Mapped[str] = mapped_column(Text)
    criteria: Mapped[list[Any]]
    assessed_by: Mapped[str | None] = mapped_column(String(128))
    exposure_on: Mapped[date | None]
    dose1_on: Mapped[date | None]
    dose2_on: Mapped[date | None]
    consent: Mapped[dict[str, Any] | None]
    dose_assessments: Mapped[list[Any]]
    ended_because: Mapped[str | None] = mapped_column(Text)
    # Since migration 0009 (NULL on objects written before it):
    assessment_note: Mapped[str | None] = mapped_column(Text)
    criterion_on: Mapped[date | None]
    prior_doses: Mapped[int | None] = mapped_column(Integer)
    prior_last_dose_on: Mapped[date | None]
    lapsed_at: Mapped[datetime | None]
    special_reason: Mapped[str | None] = mapped_column(Text)


OBJECT_MODELS: dict[str, type[Case] | type[Contact] | type[Course]] = {
    "case": Case, "contact": Contact, "course": Course,
}

# Migration 0013: each workflow table by unit (and state), and by assignee.
for _model in OBJECT_MODELS.values():
    Index(f"ix_{_model.__tablename__}_unit_state", _model.unit_id, _model.state)
    Index(f"ix_{_model.__tablename__}_assignee", _model.assignee_id)
    Index(f"ix_{_model.__tablename__}_hard_to_reach", _model.id, **partial(f"failed_attempts >= {HARD_TO_REACH}"))
