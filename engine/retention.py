"""Personal data kept no longer than needed (issue 19, item 1): the retention schedule, the list of what falls due,
and the purge that removes the personal data and keeps the pseudonymous clinical record and the whole audit log.

**The schedule** (``retention_rules``, migration 0016), per kind of data:

- ``person``: a person's personal data, ``period`` **years** after the last of their cases, contacts and courses
  *ended*; a person with any object not ended is never due; a person with none, from their registration. Default
  10 years (journalføringsbekendtgørelsen: patient records are kept at least 10 years after the last entry).
- ``import``: an import's stored file and its report's links to persons, ``period`` **days** after the import
  finished. Default 30 days (the 21 days a list's contacts are monitored, §5.5, and a margin to correct and import
  refused rows again).

**Ended**: a case in a final state (closed, discarded, deceased), a contact released or symptomatic (a symptomatic
contact is the person's own case now, which must have ended too), a course in a final state (completed, declined,
cancelled). The instant an object ended is its ``updated_at``: its last recorded change (the transition that ended
it, or a later entry such as a late notification or a transfer), never earlier than the end itself, and what the
law counts from ("the last entry").

**The due instant**: like every window here, a period from the local date D closes at 00:00 Europe/Copenhagen on
the day after its last day; the last day of N years from D is D's date N years on (29 February: 1 March, so never
less than N years), of N days D + N. People are shown the last day (``last_day``) and the instant (``due_at``).

**The purge** of a person, in one unit of work: the person's row held (``FOR UPDATE SKIP LOCKED`` on PostgreSQL:
a second worker skips a person being purged, and finds it purged once committed), what is due checked again, then
removed: ``persons.ref`` and ``born``; the free text that could identify on the person's cases, contacts and courses
(``CLEARED``); the text of the notes and contact attempts on the person and their objects (the only change the
``notes`` table's triggers let through); the free text of those objects' timers (``note``, ``resolution``); their
cases' notification documents' Bundles (replaced by a marker; id, hash and dates kept). Every object whose data was
removed gets an entry on its own chain (trigger ``purged``; ``changes``: the cleared columns), so the log still
rebuilds it (``audit replay --check``); the person's chain gets the receipt (what was removed, by column name and
object id, the rule and its period, the last end date: never the data). The audit log is never changed.

An import's purge removes its stored file (``imports.content`` NULL), the file's name, the links to persons and the
messages of its report and its options' reason (``import_redacted``), audited on the purging actor's chain.

Who: ``retention purge`` admins and the scheduler's ``timer`` user (the worker); ``retention due`` admins and
auditors; ``retention set`` admins; ``retention rules`` anyone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Table, case, func, select, update
from sqlalchemy.orm import Session

from engine import units
from engine.commands import ENDED_STATES
from engine.uow import ADMIN_ROLES, TIMER_USER, Actor, Runtime, UnitOfWork, check_actor, unit_of_work
from engine.views import PURGED_BUNDLE, instant, jsonable
from persistence.audit import PURGED, PURGED_TASK_OUTCOME, Head
from persistence.models import (
    OBJECT_MODELS,
    RETENTION_KINDS,
    Import,
    Note,
    NotificationDocument,
    Person,
    RetentionRule,
    Timer,
)
from persistence.repository import format_id
from workflows.calendar import local_date, local_midnight
from workflows.errors import Conflict, RuleRefused, UsageError, because
from workflows.limits import check_text, shown

log = structlog.get_logger("mpoxflow.retention")

#: The unit each kind's period is counted in, and its defaults (migration 0016 seeds the same).
UNITS = {"person": "years", "import": "days"}
DEFAULTS = {"person": 10, "import": 30}
#: The longest period one may set, by unit.
MAX_PERIOD = {"years": 100, "days": 3650}
#: What each kind's period is counted from (shown by ``retention rules``).
COUNTED_FROM = {
    "person": "the end of the last of the person's cases, contacts and courses (registration, without any); "
              "never while one is not ended",
    "import": "the day the import finished",
}
#: Who may list what falls due, purge, and change the schedule. The scheduler's user purges (the worker's job).
DUE_ROLES = ("auditor", *ADMIN_ROLES)
PURGE_ROLES = (*ADMIN_ROLES, TIMER_USER)
SET_ROLES = ADMIN_ROLES
#: ``retention due``'s default warning horizon, and its longest.
DEFAULT_WITHIN_WEEKS = 8
MAX_WITHIN_WEEKS = 520
#: The states in which an object has ended, by kind (the commands refuse changes by them too).
ENDED = ENDED_STATES
#: The free-text columns removed from a purged person's objects (README, "Retention": the decision per column).
#: A whole column is set to NULL, or (JSON) the free text inside it.
CLEARED = {
    "case": ("symptom_note", "antiviral"),
    "contact": ("exposures",),
    "course": ("assessment_note", "special_reason", "consent"),
}
#: How many ids one statement of a purge names at a time.
CHUNK = 500
#: The outcome a purge gives a purged person's missed tasks that nobody resolved (``task resolve``'s own word).
TASK_CLOSED = PURGED_TASK_OUTCOME

PERSONS: Table = Person.__table__  # type: ignore[assignment]
IMPORTS: Table = Import.__table__  # type: ignore[assignment]
NOTES: Table = Note.__table__  # type: ignore[assignment]
TIMERS: Table = Timer.__table__  # type: ignore[assignment]
DOCUMENTS: Table = NotificationDocument.__table__  # type: ignore[assignment]
RULES: Table = RetentionRule.__table__  # type: ignore[assignment]


# ---- the schedule's arithmetic (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One kind's retention period."""

    kind: str
    period: int
    unit: str
    updated_at: datetime | None = None
    updated_by: str | None = None

    @property
    def name(self) -> str:
        """The rule as entries cite it: ``retention:person 10 years``."""
        return f"retention:{self.kind} {self.period} {self.unit}"

    def last_day(self, start: date) -> date:
        """The period's last Danish day from the local date ``start``."""
        if self.unit == "days":
            return start + timedelta(days=self.period)
        return add_years(start, self.period)

    def due_at(self, start: date) -> datetime:
        """When data dated ``start`` falls due: 00:00 local on the day after the last day."""
        return local_midnight(self.last_day(start) + timedelta(days=1))

    def view(self) -> dict[str, Any]:
        return {"kind": self.kind, "period": self.period, "unit": self.unit, "rule": self.name,
                "counted_from": COUNTED_FROM[self.kind], "default": DEFAULTS[self.kind],
                "updated_at": instant(self.updated_at), "updated_by": self.updated_by}


def add_years(day: date, years: int) -> date:
    """The same date ``years`` later; 29 February in a year without one is 1 March (never less than the years)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return date(day.year + years, 3, 1)


def check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind not in RETENTION_KINDS:
        raise UsageError(because("'%(kind)s' is no kind of data with a retention period: give %(kinds)s (⟦kind⟧)",
                                 kind=shown(str(kind)), kinds=list(RETENTION_KINDS)), key="retention_kind")
    return kind


def check_within(weeks: Any) -> int:
    if isinstance(weeks, bool) or not isinstance(weeks, int) or not 0 <= weeks <= MAX_WITHIN_WEEKS:
        raise UsageError(because("⟦within⟧ is a number of weeks ahead: give 0 to %(most)s", most=MAX_WITHIN_WEEKS))
    return weeks


def check_period(kind: str, years: Any, days: Any) -> tuple[int, str]:
    """The period given for ``kind`` (``years`` for a person, ``days`` for an import): UsageError naming the flag
    for none, both, the other kind's unit, or a value out of bounds."""
    unit = UNITS[kind]
    given = {"years": years, "days": days}
    named = [u for u, v in given.items() if v is not None]
    if not named:
        raise UsageError(because("give the period: ⟦%(unit)s⟧ N (a %(kind)s's period is counted in %(unit)s)",
                                 unit=unit, kind=kind), key="retention_period")
    if named != [unit]:
        other = next(u for u in named if u != unit)
        raise UsageError(because("a %(kind)s's period is counted in %(unit)s, not %(other)s: give ⟦%(unit)s⟧ "
                                 "instead of ⟦%(other)s⟧", kind=kind, unit=unit, other=other),
                         key="retention_period")
    value = given[unit]
    most = MAX_PERIOD[unit]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise UsageError(because("⟦%(unit)s⟧ %(value)s: give a whole number of %(unit)s from 1 to %(most)s",
                                 unit=unit, value=shown(str(value)), most=most), key="retention_period")
    return value, unit


# ---- reading the schedule -------------------------------------------------------------------------------------


def read_rules(session: Session) -> dict[str, Rule]:
    """The schedule as the database holds it (a kind without a row: its default)."""
    found = {kind: Rule(kind, DEFAULTS[kind], UNITS[kind]) for kind in RETENTION_KINDS}
    for row in session.execute(select(RULES)):
        if row.kind in found:
            found[row.kind] = Rule(row.kind, int(row.period), row.unit, row.updated_at, row.updated_by)
    return found


# ---- what falls due -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """A person's or an import's data and when it falls due."""

    kind: str
    pk: int
    rule: Rule
    #: The local date the period counts from: the last end, the registration, the import's end.
    start: date
    #: What ``start`` is: ``ended`` (the last object's end), ``registered`` (no objects), ``finished`` (an import).
    counted_from: str

    @property
    def id(self) -> str:
        return format_id(self.kind, self.pk)

    @property
    def due_at(self) -> datetime:
        return self.rule.due_at(self.start)

    def view(self, now: datetime) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "rule": self.rule.name, "counted_from": self.counted_from,
                "start_on": self.start.isoformat(), "last_day": self.rule.last_day(self.start).isoformat(),
                "due_at": instant(self.due_at), "due_now": self.due_at <= now}


def _activity(session: Session, persons: Sequence[int] | None = None) -> dict[int, tuple[int, datetime | None]]:
    """Per person with objects: (how many are not ended, the latest ``updated_at``), over cases, contacts and
    courses; one grouped query per kind (of ``persons`` only, when given)."""
    found: dict[int, tuple[int, datetime | None]] = {}
    for kind, model in OBJECT_MODELS.items():
        table: Table = model.__table__  # type: ignore[assignment]
        open_ = func.sum(case((table.c.state.in_(ENDED[kind]), 0), else_=1))
        query = select(table.c.person_id, open_, func.max(table.c.updated_at)).group_by(table.c.person_id)
        if persons is not None:
            query = query.where(table.c.person_id.in_(list(persons)))
        for person_pk, open_count, last in session.execute(query):
            before = found.get(person_pk, (0, None))
            latest = last if before[1] is None or (last is not None and last > before[1]) else before[1]
            found[person_pk] = (before[0] + int(open_count or 0), latest)
    return found


def person_due(pk: int, rule: Rule, created_at: datetime, last_end: datetime | None) -> Due:
    """When a person's data falls due: from the last end of their objects, or (none) from their registration."""
    if last_end is None:
        return Due("person", pk, rule, local_date(created_at), "registered")
    return Due("person", pk, rule, local_date(last_end), "ended")


def import_due(record: Any, rule: Rule) -> Due:
    """When an import's file falls due: from the day it finished (or, unfinished, was made)."""
    return Due("import", record.id, rule, local_date(record.finished_at or record.created_at), "finished")


def persons_due(session: Session, rule: Rule, until: datetime, persons: Sequence[int] | None = None) -> list[Due]:
    """The persons not purged whose personal data falls due by ``until`` (every object ended), soonest first."""
    activity = _activity(session, persons)
    query = select(PERSONS.c.id, PERSONS.c.created_at).where(PERSONS.c.purged_at.is_(None)).order_by(PERSONS.c.id)
    if persons is not None:
        query = query.where(PERSONS.c.id.in_(list(persons)))
    found = []
    for pk, created_at in session.execute(query):
        open_count, last = activity.get(pk, (0, None))
        if open_count:
            continue
        due = person_due(pk, rule, created_at, last)
        if due.due_at <= until:
            found.append(due)
    found.sort(key=lambda d: (d.due_at, d.pk))
    return found


def imports_due(session: Session, rule: Rule, until: datetime) -> list[Due]:
    """The imports not purged whose file falls due by ``until``, soonest first."""
    found = []
    query = (select(IMPORTS.c.id, IMPORTS.c.created_at, IMPORTS.c.finished_at)
             .where(IMPORTS.c.purged_at.is_(None)).order_by(IMPORTS.c.id))
    for record in session.execute(query):
        due = import_due(record, rule)
        if due.due_at <= until:
            found.append(due)
    found.sort(key=lambda d: (d.due_at, d.pk))
    return found


# ---- what a purge removes (pure) ------------------------------------------------------------------------------


def redacted(kind: str, row: Any) -> dict[str, Any]:
    """The values ``CLEARED`` gives a purged object's row: only the columns whose value changes."""
    values: dict[str, Any] = {}
    for column in CLEARED[kind]:
        value = getattr(row, column, None)
        new: Any
        if column == "antiviral":
            new = None if value is None else {**value, "reason": None}
        elif column == "exposures":
            new = [{**e, "reason": None} if "reason" in e else dict(e) for e in value or []]
        elif column == "consent":
            new = None if value is None else {**value, "indication": None, "justification": None}
        else:
            new = None
        if jsonable(new) != jsonable(value):
            values[column] = new
    return values


def import_redacted(record: Any) -> dict[str, Any]:
    """What a purged import keeps: its counts, each row's number, result and rule; its options without the reason;
    a file name that names the import, not the file."""
    report = [{"row": r.get("row"), "result": r.get("result"), "rule": r.get("rule"), "ids": [], "person": None,
               "object": None, "message": None, "note": None, "error": None} for r in record.report or []]
    options = {k: v for k, v in dict(record.options or {}).items() if k != "reason"}
    return {"content": None, "filename": f"import-{record.id}.{record.format}", "report": report,
            "options": options}


@dataclass
class Removal:
    """What the purge removes from one object: columns (with their new values), timers' texts, notes, documents."""

    kind: str
    pk: int
    values: dict[str, Any] = field(default_factory=dict)
    timers: list[int] = field(default_factory=list)
    notes: list[int] = field(default_factory=list)
    documents: list[int] = field(default_factory=list)
    #: Missed tasks nobody resolved: closed as ``not-needed`` (no one can act on a purged person any more, and
    #: they would stay on the worklist for ever).
    tasks: list[int] = field(default_factory=list)

    @property
    def id(self) -> str:
        return format_id(self.kind, self.pk)

    def __bool__(self) -> bool:
        return bool(self.values or self.timers or self.notes or self.documents or self.tasks)

    def view(self) -> dict[str, Any]:
        return {"object": self.id, "columns": sorted(self.values), "timers": [format_id("timer", t) for t in
                                                                             self.timers],
                "notes": [format_id("note", n) for n in self.notes],
                "documents": [format_id("document", d) for d in self.documents],
                "tasks_closed": [format_id("timer", t) for t in self.tasks]}


@dataclass
class Plan:
    """A person's purge, as read inside its unit of work: what is due, and what is removed where."""

    due: Due
    rows: dict[tuple[str, int], Any]
    person_columns: list[str]
    person_notes: list[int]
    removals: list[Removal]

    def receipt(self) -> dict[str, Any]:
        """The receipt: what was removed (column names, ids, counts), under which rule, never the data."""
        removed = [{"object": self.due.id, "columns": self.person_columns, "timers": [], "documents": [],
                    "notes": [format_id("note", n) for n in self.person_notes], "tasks_closed": []}] + [
            r.view() for r in self.removals]
        return {
            "rule": self.due.rule.name, "period": {self.due.rule.unit: self.due.rule.period},
            "counted_from": self.due.counted_from, "start_on": self.due.start.isoformat(),
            "last_day": self.due.rule.last_day(self.due.start).isoformat(), "due_at": instant(self.due.due_at),
            "objects": sorted(format_id(k, pk) for k, pk in self.rows),
            "removed": removed,
            "counts": {"objects": len(self.removals), "columns": len(self.person_columns)
                       + sum(len(r.values) for r in self.removals),
                       "timers": sum(len(r.timers) for r in self.removals),
                       "notes": len(self.person_notes) + sum(len(r.notes) for r in self.removals),
                       "documents": sum(len(r.documents) for r in self.removals),
                       "tasks_closed": sum(len(r.tasks) for r in self.removals)},
        }


def _plan(session: Session, person: Any, rule: Rule, now: datetime) -> Plan | None:
    """The purge of ``person`` (its row, held), or None when it is not due now (an object not ended, a recent
    end): read in the purge's own transaction, so nothing can change between the check and the purge."""
    rows: dict[tuple[str, int], Any] = {}
    for kind, model in OBJECT_MODELS.items():
        table: Table = model.__table__  # type: ignore[assignment]
        for row in session.execute(select(table).where(table.c.person_id == person.id).order_by(table.c.id)):
            rows[(kind, row.id)] = row
    if any(row.state not in ENDED[kind] for (kind, _), row in rows.items()):
        return None
    last_end = max((row.updated_at for row in rows.values()), default=None)
    due = person_due(person.id, rule, person.created_at, last_end)
    if due.due_at > now:
        return None
    removals = {key: Removal(key[0], key[1], redacted(key[0], row)) for key, row in rows.items()}
    for kind in OBJECT_MODELS:
        pks = [pk for k, pk in rows if k == kind]
        if not pks:
            continue
        for timer_pk, object_pk in session.execute(
                select(TIMERS.c.id, TIMERS.c.object_id)
                .where(TIMERS.c.object_kind == kind, TIMERS.c.object_id.in_(pks),
                       TIMERS.c.note.is_not(None) | TIMERS.c.resolution.is_not(None)).order_by(TIMERS.c.id)):
            removals[(kind, object_pk)].timers.append(timer_pk)
        for timer_pk, object_pk in session.execute(
                select(TIMERS.c.id, TIMERS.c.object_id)
                .where(TIMERS.c.object_kind == kind, TIMERS.c.object_id.in_(pks), TIMERS.c.task.is_not(None),
                       TIMERS.c.status == "missed", TIMERS.c.resolved_at.is_(None)).order_by(TIMERS.c.id)):
            removals[(kind, object_pk)].tasks.append(timer_pk)
        for note_pk, object_pk in session.execute(
                select(NOTES.c.id, NOTES.c.object_id)
                .where(NOTES.c.object_kind == kind, NOTES.c.object_id.in_(pks), NOTES.c.purged_at.is_(None))
                .order_by(NOTES.c.id)):
            removals[(kind, object_pk)].notes.append(note_pk)
    cases = [pk for k, pk in rows if k == "case"]
    if cases:
        for document_pk, case_pk in session.execute(
                select(DOCUMENTS.c.id, DOCUMENTS.c.case_id).where(DOCUMENTS.c.case_id.in_(cases))
                .order_by(DOCUMENTS.c.id)):
            removals[("case", case_pk)].documents.append(document_pk)
    person_notes = [int(n) for n in session.execute(
        select(NOTES.c.id).where(NOTES.c.object_kind == "person", NOTES.c.object_id == person.id,
                                 NOTES.c.purged_at.is_(None)).order_by(NOTES.c.id)).scalars()]
    columns = ["ref"] + (["born"] if person.born is not None else [])
    return Plan(due, rows, columns, person_notes, [r for r in removals.values() if r])


# ---- the engine's part ----------------------------------------------------------------------------------------


class Retention:
    """The schedule, what falls due, and the purge (see the module's docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # -- the schedule

    def rules(self) -> list[dict[str, Any]]:
        """``retention rules``: each kind's period, what it counts from, its default, who set it when."""
        with self.runtime.db.reading() as session:
            return [rule.view() for rule in read_rules(session).values()]

    def set_rule(self, kind: str, *, years: int | None = None, days: int | None = None, actor: str,
                 reason: str | None) -> dict[str, Any]:
        """``retention set KIND --years N | --days N --reason``: change a kind's period (admins). Audited on the
        admin's chain (trigger ``retention_set``: the kind, the period before and after). UsageError (naming the
        flag) for a bad kind, period or reason, before anything is read; RuleRefused for the period it has
        already; NotPermitted (audited) for anyone but an admin."""
        check_kind(kind)
        period, unit = check_period(kind, years, days)
        if not (reason or "").strip():
            raise UsageError(because("say why the period changes with ⟦reason⟧: it goes into the audit entry"),
                             key="reason_required")
        assert reason is not None
        text = check_text(reason.strip(), "reason")
        with unit_of_work(self.runtime, actor, "retention set", None, SET_ROLES) as uow:
            now = uow.now()
            before = read_rules(uow.session)[kind]
            if before.period == period and before.unit == unit:
                raise RuleRefused(because("the %(kind)s rule is %(period)s %(unit)s already: nothing to change",
                                          kind=kind, period=period, unit=unit), key="retention_unchanged")
            exists = uow.session.execute(select(RULES.c.kind).where(RULES.c.kind == kind)).first() is not None
            values = {"unit": unit, "period": period, "updated_at": now, "updated_by": uow.actor.name}
            if exists:
                uow.session.execute(update(RULES).where(RULES.c.kind == kind).values(**values))
            else:
                uow.session.execute(RULES.insert().values(kind=kind, **values))
            after = Rule(kind, period, unit, now, uow.actor.name)
            seq = _audit_on_actor(uow, trigger="retention_set", reason=text, now=now, rule=after.name, data={
                "kind": kind, "from": {"period": before.period, "unit": before.unit},
                "to": {"period": period, "unit": unit}})
            uow.save_clock()
            uow.commit()
        log.info("retention_rule_set", kind=kind, period=period, unit=unit, audit_seq=seq)
        return {**after.view(), "audit_seq": seq}

    # -- what falls due

    def due(self, *, within_weeks: int = DEFAULT_WITHIN_WEEKS, actor: str) -> dict[str, Any]:
        """``retention due``: every person and import whose data falls due within ``within_weeks`` weeks (those due
        already first), by internal id only. UsageError for a bad horizon; NotPermitted (audited) but for auditors
        and admins."""
        weeks = check_within(within_weeks)
        check_actor(self.runtime, actor, "retention due", DUE_ROLES)
        now = self.runtime.clock.now()
        until = now + timedelta(weeks=weeks)
        with self.runtime.db.snapshot() as session:
            rules = read_rules(session)
            items = persons_due(session, rules["person"], until) + imports_due(session, rules["import"], until)
        items.sort(key=lambda d: (d.due_at, d.kind, d.pk))
        return {"now": instant(now), "within_weeks": weeks, "until": instant(until),
                "rules": [r.view() for r in rules.values()], "items": [d.view(now) for d in items]}

    # -- the purge

    def purge(self, *, actor: str, dry_run: bool = False, limit: int | None = None,
              stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """``retention purge [--dry-run]``: purge every person and import due now, each in a unit of work of its own
        (a person's data all at once or not at all); with ``dry_run``, the same plans, read and reported, nothing
        written. Returns ``{"now", "dry_run", "persons": [receipt...], "imports": [...], "skipped": [...]}``
        (a person changed or held by another purge meanwhile is skipped: the next run takes it). NotPermitted
        (audited) but for admins and the scheduler's user."""
        who = check_actor(self.runtime, actor, "retention purge", PURGE_ROLES)
        now = self.runtime.clock.now()
        with self.runtime.db.snapshot() as session:
            rules = read_rules(session)
            persons = [d.pk for d in persons_due(session, rules["person"], now)]
            imports = [d.pk for d in imports_due(session, rules["import"], now)]
        if limit is not None:
            persons, imports = persons[:limit], imports[:limit]
        done: dict[str, list[dict[str, Any]]] = {"person": [], "import": []}
        skipped: list[dict[str, Any]] = []
        purges = {"person": self._purge_person, "import": self._purge_import}
        for kind, pk in [("person", pk) for pk in persons] + [("import", pk) for pk in imports]:
            if stop is not None and stop():
                break
            try:
                receipt = purges[kind](who, pk, rules[kind], dry_run)
            except Conflict:
                receipt = None
            if receipt is None:
                skipped.append({"id": format_id(kind, pk), "why": "changed or being purged meanwhile"})
            else:
                done[kind].append(receipt)
        done_persons, done_imports = done["person"], done["import"]
        log.info("retention_purged", dry_run=dry_run, persons=len(done_persons), imports=len(done_imports),
                 skipped=len(skipped), actor_role=who.role)
        return {"now": instant(now), "dry_run": dry_run, "persons": done_persons, "imports": done_imports,
                "skipped": skipped}

    def _purge_person(self, who: Actor, pk: int, rule: Rule, dry_run: bool) -> dict[str, Any] | None:
        label = format_id("person", pk)
        with unit_of_work(self.runtime, who.name, "retention purge", label, PURGE_ROLES) as uow:
            now = uow.now()
            person = uow.session.execute(select(PERSONS).where(PERSONS.c.id == pk)
                                         .with_for_update(skip_locked=True)).one_or_none()
            if person is None or person.purged_at is not None:
                return None  # held by another purge (PostgreSQL), or purged already
            plan = _plan(uow.session, person, rule, now)
            if plan is None:
                return None
            receipt = {"person": label, **plan.receipt()}
            if dry_run:
                return {**receipt, "audit_seq": None}
            receipt["audit_seq"] = _apply(uow, plan, person, now)
            uow.commit()
        log.info("person_purged", person=label, rule=rule.name, objects=receipt["counts"]["objects"],
                 audit_seq=receipt["audit_seq"])
        return receipt

    def _purge_import(self, who: Actor, pk: int, rule: Rule, dry_run: bool) -> dict[str, Any] | None:
        label = format_id("import", pk)
        with unit_of_work(self.runtime, who.name, "retention purge", label, PURGE_ROLES) as uow:
            now = uow.now()
            record = uow.session.execute(select(IMPORTS).where(IMPORTS.c.id == pk)
                                         .with_for_update(skip_locked=True)).one_or_none()
            if record is None or record.purged_at is not None:
                return None
            due = import_due(record, rule)
            if due.due_at > now:
                return None
            values = import_redacted(record)
            linked = sorted({p for r in record.report or [] for p in (r.get("ids") or []) + [r.get("person")] if p})
            receipt: dict[str, Any] = {"import": label, "rule": rule.name, "period": {rule.unit: rule.period},
                       "start_on": due.start.isoformat(), "last_day": rule.last_day(due.start).isoformat(),
                       "due_at": instant(due.due_at),
                       "removed": {"columns": ["content", "filename", "options.reason", "report.ids",
                                               "report.person", "report.object", "report.message", "report.note",
                                               "report.error"],
                                   "bytes": len(record.content or b""), "rows": len(record.report or []),
                                   "links": len(linked)}}
            if dry_run:
                return {**receipt, "audit_seq": None}
            uow.session.execute(update(IMPORTS).where(IMPORTS.c.id == pk).values(**values, purged_at=now))
            receipt["audit_seq"] = _audit_on_actor(uow, trigger=PURGED, reason=None, now=now, rule=rule.name,
                                                   data={k: v for k, v in receipt.items() if k != "audit_seq"})
            uow.commit()
        log.info("import_purged", import_=label, rule=rule.name, audit_seq=receipt["audit_seq"])
        return receipt


def _audit_on_actor(uow: UnitOfWork, *, trigger: str, reason: str | None, now: datetime, rule: str,
                    data: dict[str, Any]) -> int:
    """An entry on the acting user's own chain (the schedule's changes, an import's purge)."""
    user = uow.repo.user_by_name(uow.actor.name)
    assert user is not None  # authorized: the actor is a user
    seq = uow.audit(Head.of(uow.repo.head_row("user", user.id)), kind="user", pk=user.id, workflow=None,
                    trigger=trigger, from_state=None, to_state=None, actor=uow.actor, reason=reason, now=now,
                    rule=rule, data=data, changes=None).seq
    assert seq is not None
    return seq


def _apply(uow: UnitOfWork, plan: Plan, person: Any, now: datetime) -> int:
    """Write ``plan``: each object's cleared columns, version and head with its entry; timers' texts, notes and
    documents; then the person, with the receipt on its chain. Returns the receipt's sequence number. Conflict
    when an object changed meanwhile (all of it rolled back)."""
    session, rule = uow.session, plan.due.rule
    person_label = format_id("person", person.id)
    for removal in plan.removals:
        row = plan.rows[(removal.kind, removal.pk)]
        head = uow.audit(
            Head.of(row), kind=removal.kind, pk=removal.pk, workflow=row.workflow, trigger=PURGED,
            from_state=row.state, to_state=row.state, actor=uow.actor, reason=None, now=now, rule=rule.name,
            data={"person": person_label, **removal.view()}, changes=jsonable(removal.values), move_head=False,
            unit=units.acting_unit(uow, uow.actor, row.unit_id))
        values = {**removal.values, "updated_at": now, "audit_pos": head.pos, "audit_seq": head.seq,
                  "audit_hash": head.hash}
        if not uow.update_object(removal.kind, removal.pk, row.version, values):
            raise Conflict(f"{removal.id} was changed meanwhile: {person_label} is purged by the next run")
    timers = [t for r in plan.removals for t in r.timers]
    tasks = [t for r in plan.removals for t in r.tasks]
    notes = [n for r in plan.removals for n in r.notes] + plan.person_notes
    documents = [d for r in plan.removals for d in r.documents]
    for chunk in _chunks(timers):
        session.execute(update(TIMERS).where(TIMERS.c.id.in_(chunk)).values(note=None, resolution=None))
    for chunk in _chunks(tasks):
        session.execute(update(TIMERS).where(TIMERS.c.id.in_(chunk))
                        .values(outcome=TASK_CLOSED, resolved_at=now, resolution=None))
    for chunk in _chunks(notes):
        session.execute(update(NOTES).where(NOTES.c.id.in_(chunk)).values(text=None, purged_at=now))
    marker = {PURGED_BUNDLE: {"purged_at": instant(now), "rule": rule.name}}
    for chunk in _chunks(documents):
        session.execute(update(DOCUMENTS).where(DOCUMENTS.c.id.in_(chunk)).values(bundle=marker))
    session.execute(update(PERSONS).where(PERSONS.c.id == person.id)
                    .values(ref=None, born=None, purged_at=now, purge_rule=rule.name))
    receipt = plan.receipt()
    seq = uow.audit(
        Head.of(person), kind="person", pk=person.id, workflow=None, trigger=PURGED, from_state=None,
        to_state=None, actor=uow.actor, reason=None, now=now, rule=rule.name, data=receipt,
        changes={"ref": None, "born": None, "purged_at": instant(now), "purge_rule": rule.name}).seq
    assert seq is not None
    return seq


def _chunks(values: Iterable[int], size: int = CHUNK) -> Iterable[list[int]]:
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start:start + size]
