"""Queries: every read model the entry points show, each from one read-only session, none of them writing.

``show`` (an object with its timers, or as its audit entries describe it at an instant), ``list``, ``related``,
``worklist`` (the staff tasks), ``dose_forecast`` and ``calendar``, ``timers`` and ``timer_status``,
``state_counts``, ``users``, and the audit log: ``audit``, ``audit_timeline``, ``audit_verify``, ``audit_replay``
and ``audit_export`` (the last three over one consistent snapshot, streamed).
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

import structlog

from engine import auditing, definitions
from engine.units import Scope, UnitTree, check_reads, outside, reader_scope, scope_of
from engine.uow import Runtime
from engine.views import audit_view, check_period, instant, object_view, person_view, timer_view, user_view
from persistence.models import OBJECT_MODELS, Timer
from persistence.repository import AuditWhere, Repository, format_id, not_found, parse_id
from workflows.calendar import local_date, local_midnight
from workflows.errors import NotFound, UsageError
from workflows.limits import MAX_DAYS, MAX_ID, MAX_LIMIT, check_count, check_instant, check_text, shown
from workflows.registry import BY_NAME, CALENDAR, WORKFLOWS, linked_to

log = structlog.get_logger("mpoxflow.engine")

#: Entries on a page of the auditor's desk when no ``limit`` is given, and the most a page holds.
DEFAULT_AUDIT_PAGE = 50
MAX_AUDIT_PAGE = 500
TIMER_STATUSES = ("pending", "fired", "missed", "cancelled", "skipped", "failed")


class Queries:
    """The read side. Every method raises UsageError for a malformed filter and NotFound for an unknown id."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _scope(self, repo: Repository) -> Scope | None:
        """The viewer's scope (``Runtime.viewer``, issue 17; ``engine.units.reader_scope``)."""
        return reader_scope(repo, self.runtime.viewer)

    def _units(self, repo: Repository) -> builtins.list[int] | None:
        scope = self._scope(repo)
        return None if scope is None else sorted(scope.units or ())

    # ---- objects -------------------------------------------------------------------------------------------

    def show(self, object_id: str, *, as_of: datetime | None = None, glass: bool = False) -> dict[str, Any]:
        """One object's view (a case, contact or course with its timers; a person with their cases; a timer; a
        user; a unit); with ``as_of``, a case, contact or course as its audit entries up to that instant describe
        it (the log alone, not the tables). OutsideUnits for an object outside the viewer's units, unless
        ``glass`` (the reading was recorded: ``Organisation.break_glass``). A person's view (their reference and
        birth date) is a read of personal data (``engine.reads``)."""
        view = self._show(object_id, as_of=as_of, glass=glass)
        if view.get("kind") == "person":
            self.runtime.reads.shown("person", [view["id"]])
        return view

    def check_readable(self, object_id: str) -> None:
        """NotFound for no such object, OutsideUnits for one outside the viewer's units: ``show``'s checks, without
        its view (a person's is not read: nothing of it is shown)."""
        kind, pk = parse_id(object_id)
        if kind != "person":
            self._show(object_id, as_of=None, glass=False)
            return
        with self.runtime.db.reading() as session:
            Repository(session).person(pk)

    def refs(self, persons: Iterable[str | None], what: str = "ref") -> dict[str, str]:
        """The references of ``persons`` (``person-N``; None and unknown ids are left out), by id: what a page shows
        beside each person it names (the persons are the shared register: no unit limits it), recorded as read by
        ``what`` (``engine.reads.WHAT``: the page's kind, or ``ref`` for a list)."""
        pks = sorted({parse_id(p, kind="person")[1] for p in persons if p})
        if not pks:
            return {}
        with self.runtime.db.reading() as session:
            found = {format_id("person", pk): ref for pk, ref in Repository(session).person_refs(pks)
                     if ref is not None}  # a reference removed (issue 19 item 1) shows nothing
        self.runtime.reads.shown(what, found)
        return found

    def _show(self, object_id: str, *, as_of: datetime | None, glass: bool) -> dict[str, Any]:
        kind, pk = parse_id(object_id)
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            scope = self._scope(repo)
            if kind in OBJECT_MODELS and scope is not None:
                check_reads(scope, kind, pk, repo.workflow_object(kind, pk).unit_id, glass=glass)
            elif kind == "timer" and scope is not None:
                timer = session.get(Timer, pk)
                if timer is None:
                    raise not_found(object_id, "timer")
                check_reads(scope, timer.object_kind, timer.object_id, timer.unit_id, glass=glass)
            if kind == "unit":
                tree = UnitTree.load(repo)
                if pk not in tree.names:
                    raise not_found(object_id, "unit")
                from engine.units import unit_view

                return unit_view(tree, pk, repo.memberships(unit_pk=pk))
            if as_of is not None:
                if as_of.tzinfo is None:
                    raise UsageError(f"⟦as_of⟧ {as_of.isoformat()} has no offset: give an instant with one")
                check_instant(as_of, "⟦as_of⟧")
                if kind not in OBJECT_MODELS:
                    raise UsageError(f"⟦as_of⟧ shows cases, contacts and courses as they were, not a {kind}: "
                                     f"`mpoxflow audit timeline {object_id}` prints its history")
                return auditing.as_of(repo, kind, pk, as_of)
            if kind == "user":
                return user_view(repo.head_row("user", pk))
            if kind == "workflow_default":
                return definitions.setting(repo, pk, self.runtime.clock.now())
            if kind == "person":
                person = repo.person(pk)
                cases = [c for c in repo.objects_linked("case", "person_id", pk)
                         if scope is None or scope.covers(c.unit_id)]
                return person_view(person, [format_id("case", c.id) for c in cases])
            if kind == "timer":
                timer = session.get(Timer, pk)
                if timer is None:
                    raise not_found(object_id, "timer")
                return timer_view(timer)
            row = repo.workflow_object(kind, pk)
            return object_view(kind, row, list(repo.timers_of(kind, pk)))

    def list(self, kind: str, state: str | None = None) -> builtins.list[dict[str, Any]]:
        """Every person, or every object of a workflow (in ``state``, when given), oldest first."""
        if kind == "person":
            if state is not None:
                raise UsageError("persons have no state: drop the state filter (⟦state⟧)")
            with self.runtime.db.reading() as session:
                persons = [person_view(p) for p in Repository(session).persons()]
            self.runtime.reads.shown("ref", [p["id"] for p in persons])  # each with its reference
            return persons
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            if state is not None and state not in WORKFLOWS[kind].states:
                raise UsageError(
                    f"'{shown(state)}' is not a {kind} state: use one of {', '.join(WORKFLOWS[kind].states)}"
                )
            rows = repo.objects(kind, state, self._units(repo))
            timers = repo.timers_of_many(kind, [r.id for r in rows])
            return [object_view(kind, r, timers[r.id]) for r in rows]

    def related(self, object_id: str) -> dict[str, builtins.list[dict[str, Any]]]:
        """The objects a page shows next to one, by kind: a case's contacts, a contact's courses, a person's
        cases, contacts and courses (each with its timers)."""
        kind, pk = parse_id(object_id)
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            scope = self._scope(repo)
            found = {k: [r for r in repo.objects_linked(k, column, pk) if scope is None or scope.covers(r.unit_id)]
                     for k, column in linked_to(kind).items()}
            views: dict[str, builtins.list[dict[str, Any]]] = {}
            for k, rows in found.items():
                timers = repo.timers_of_many(k, [r.id for r in rows])
                views[k] = [object_view(k, r, timers[r.id]) for r in rows]
            return views

    def state_counts(self, kind: str, workflow: str | None = None) -> dict[str, int]:
        """How many objects of a workflow are in each of its states (every state, 0 included): of all its objects
        in the product's states, or (``workflow``, a definition's name) of those running under that definition,
        in its states."""
        if kind not in WORKFLOWS:
            raise UsageError(f"'{shown(kind)}' is not a workflow: use one of {', '.join(WORKFLOWS)}")
        states = WORKFLOWS[kind].states if workflow is None else BY_NAME[workflow].states
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            counts = repo.state_counts(kind, self._units(repo), workflow)
        return {state: counts.get(state, 0) for state in states}

    def users(self) -> builtins.list[dict[str, Any]]:
        """Every user, oldest first (never a password hash: only whether there is one)."""
        with self.runtime.db.reading() as session:
            return [user_view(u) for u in Repository(session).users()]

    # ---- timers and tasks ----------------------------------------------------------------------------------

    def timers(self, status: str | None = None, limit: int = 1000) -> builtins.list[dict[str, Any]]:
        """Timers, soonest first (``status``: one of ``TIMER_STATUSES``), at most ``limit``."""
        if status is not None and status not in TIMER_STATUSES:
            raise UsageError(f"'{shown(status)}' is not a timer status: use one of {', '.join(TIMER_STATUSES)}")
        check_count(limit, "⟦limit⟧", low=1, high=MAX_LIMIT)
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            return [timer_view(t) for t in repo.timers(status, limit, self._units(repo))]

    def timer_status(self) -> dict[str, Any]:
        """What an operator checks first: pending, overdue and failed counts, and how late the oldest is."""
        now = self.runtime.clock.now()
        with self.runtime.db.reading() as session:
            counts = Repository(session).timer_counts(now)
        oldest = counts.pop("oldest_due")
        return {**counts, "oldest_overdue_due_at": instant(oldest),
                "oldest_lateness_seconds": int((now - oldest).total_seconds()) if oldest else 0,
                "now": instant(now)}

    def worklist(self, within: timedelta | None = None, *, kind: str | None = None,
                 task: str | None = None, sort: str = "due", mine: bool = False,
                 unit: str | None = None) -> builtins.list[dict[str, Any]]:
        """Staff tasks not done yet, soonest first (due instant, then timer id); ``overdue`` once their deadline
        has passed, ``missed`` once it passed undone (in its place in that order, until resolved); timers
        parked as failed too (an operator's task, ``failed``). Without ``within``, every open task; with it,
        those due within that time from now, and the tasks shown from the moment they are armed (a contact's PEP
        assessment, §6.2). ``kind``: of one object kind only; ``task``: of one timer name only; ``sort``: ``due``
        (the default) or ``kind`` (by object kind, then due). Each item carries its object's person (``person``,
        and ``ref``, the reference staff see: never logged), a contact's ``case``, a course's ``contact``, the
        deadline's last day (``last_day``, local) and a contact's open 4-day PEP window (``pep_best_by``). The
        whole list: ``worklist_page`` reads it a page at a time. Only the work of the viewer's units (issue 17);
        ``mine``: the viewer's own (assigned to them, or unassigned in one of their units); ``unit``: of that unit
        and those below it. Each item carries its object's ``unit`` and ``assignee`` (ids and names)."""
        return self._worklist(within, kind=kind, task=task, sort=sort, mine=mine, unit=unit)[0]

    def worklist_page(self, within: timedelta | None = None, *, limit: int | None = None, after: str | None = None,
                      kind: str | None = None, task: str | None = None, sort: str = "due", mine: bool = False,
                      unit: str | None = None) -> dict[str, Any]:
        """One page of the worklist (``worklist``'s items, in its order): at most ``limit`` (default
        ``DEFAULT_PAGE``) items after the cursor ``after`` (the ``next`` of the page before; none: the first
        page), as ``{"items": [...], "next": cursor or None}``; ``next`` is None on the last page. The cursor is
        a position in the order (a due instant and a timer id; with ``sort`` ``kind``, the object kind too), so a
        page is the same whatever was added before that position meanwhile, and every item there at the start
        is listed exactly once. UsageError for a limit out of 1 to ``MAX_LIMIT``, a sort that is neither ``due``
        nor ``kind``, or a text that is no cursor of this list (of this sort)."""
        limit = DEFAULT_PAGE if limit is None else limit
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise UsageError(f"⟦limit⟧: give a whole number of items from 1 to {MAX_LIMIT}")
        check_count(limit, "⟦limit⟧", low=1, high=MAX_LIMIT)
        _check_sort(sort)
        position = None if after is None else decode_position(after, sort=sort)
        items, more = self._worklist(within, kind=kind, task=task, limit=limit, after=position, sort=sort,
                                     mine=mine, unit=unit)
        return {"items": items, "next": encode_cursor(items[-1], sort=sort) if more else None}

    def _worklist(self, within: timedelta | None, *, kind: str | None, task: str | None, limit: int | None = None,
                  after: tuple[str | None, datetime, int] | None = None,
                  sort: str = "due", mine: bool = False,
                  unit: str | None = None) -> tuple[builtins.list[dict[str, Any]], bool]:
        """(items, whether more follow): the query runs in the database, ``limit + 1`` rows to know. Sorted by
        kind, the kinds are read one after another, each in due order (the same query with its kind)."""
        if within is not None and not timedelta(0) <= within <= timedelta(days=MAX_DAYS):
            raise UsageError(f"⟦within⟧: give a number of days from 0 to {MAX_DAYS}")
        _check_task_filter(kind, task)
        _check_sort(sort)
        now = self.runtime.clock.now()
        until = None if within is None else now + within
        wanted = None if limit is None else limit + 1
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            owner, scope = self._owner(repo, mine, unit)
            if sort == "due":
                rows = repo.worklist(until, after=None if after is None else after[1:], limit=wanted, kind=kind,
                                     name=task, **owner)
            else:
                rows = []
                for each in sorted(WORKFLOWS) if kind is None else [kind]:
                    if after is not None and after[0] is not None and each < after[0]:
                        continue
                    at = after[1:] if after is not None and after[0] == each else None
                    rows += repo.worklist(until, after=at, limit=None if wanted is None else wanted - len(rows),
                                          kind=each, name=task, **owner)
                    if wanted is not None and len(rows) >= wanted:
                        break
            more = limit is not None and len(rows) > limit
            rows = rows[:limit] if more else rows
            context = repo.worklist_context([(r.object_kind, r.object_id) for r in rows])
            names = self._owner_names(repo, rows, scope.tree if scope is not None else UnitTree.load(repo))
        items = [_worklist_item(row, now, context.get((row.object_kind, row.object_id), {}), names) for row in rows]
        self.runtime.reads.shown("ref", [item.get("person") for item in items])  # each item carries its ref
        return items, more

    def _owner(self, repo: Repository, mine: bool, unit: str | None) -> tuple[dict[str, Any], Scope | None]:
        """The worklist's owner filters (the viewer's units, and ``unit``'s, below it; the viewer's own work),
        and the viewer's scope (None: no viewer)."""
        if (mine or unit is not None) and self.runtime.viewer is None:
            raise UsageError("⟦mine⟧ and ⟦unit⟧ are a user's views: give the user (⟦actor⟧)")
        if self.runtime.viewer is None:
            return {}, None
        scope = scope_of(repo, self.runtime.viewer, reading=True)
        units: set[int] | None = None if scope.everything else set(scope.units or ())
        if unit is not None:
            below = scope.tree.below(scope.tree.find(unit, "unit"))
            units = below if units is None else units & below
        found: dict[str, Any] = {"units": None if units is None else sorted(units)}
        if mine:
            found["mine"] = (scope.user_id or 0, sorted(scope.direct()))
        return found, scope

    def _owner_names(self, repo: Repository, rows: builtins.list[Any], tree: UnitTree) -> dict[str, dict[int, str]]:
        """The names of the units and assignees of worklist rows."""
        return {"units": tree.names,
                "users": repo.user_names([r.assignee_id for r in rows if r.assignee_id is not None])}

    def search(self, query: str, limit: int = 20) -> builtins.list[dict[str, Any]]:
        """The one search box (issue 16): by an object's id (``case-7``, ``person-3``, ``contact-2``,
        ``course-4``: the object, and a person's or a case's own objects with it) or by a person's reference
        (exact, else as a prefix: the persons and their cases, contacts and courses). Each result: ``id``,
        ``kind``, ``state`` (None for a person), ``person``, ``ref`` (the reference staff see: never logged), a
        contact's ``case``, and ``match`` (``id`` or ``ref``). At most ``limit`` (1 to 100). UsageError for an
        empty query, one too long or with control characters (not echoed)."""
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise UsageError("⟦limit⟧: give a whole number of results from 1 to 100")
        check_count(limit, "⟦limit⟧", low=1, high=100)
        if not isinstance(query, str):
            raise UsageError("⟦query⟧: give a reference or an id to search for")
        text = check_text(query.strip(), "ref")
        if not text:
            raise UsageError("⟦query⟧ is empty: give a person's reference (or its beginning) or an id (case-7)")
        found: builtins.list[dict[str, Any]] = []
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            by_id = _ID_QUERY.fullmatch(text.lower())
            if by_id is not None and int(by_id[2]) <= MAX_ID:
                kind, pk = by_id[1], int(by_id[2])
                try:
                    if kind == "person":
                        found += _person_results(repo, repo.person(pk), "id")
                    else:
                        row = repo.workflow_object(kind, pk)
                        found.append(_search_result(repo, kind, row, "id"))
                        if kind == "case":
                            found += [_search_result(repo, "contact", c, "id")
                                      for c in repo.objects_linked("contact", "case_id", pk)]
                except NotFound:
                    pass
            for person in repo.persons_by_ref(text, limit):
                found += _person_results(repo, person, "ref")
            scope = self._scope(repo)
        seen: set[str] = set()
        unique = []
        for result in found:
            if scope is not None and "unit" in result and not scope.covers(parse_id(result["unit"])[1]):
                continue  # another unit's: not shown (a person is, the shared register)
            if result["id"] not in seen:
                seen.add(result["id"])
                unique.append(result)
        self.runtime.reads.shown("ref", [r["person"] for r in unique[:limit]])  # each result carries its ref
        return unique[:limit]

    def dose_forecast(self, weeks: int = 8) -> builtins.list[dict[str, Any]]:
        """§6.4 doses 2 falling due, per Danish calendar day from today (the clock's local date) for ``weeks``
        weeks, days without any included: ``[{"date": "2025-03-03", "doses_due": 4}, ...]``. Counts the pending
        ``dose2_due`` timers of courses, from one grouped query; each falls due at a local midnight, so each due
        instant is one day (the days around a daylight-saving change are 23 or 25 hours long)."""
        today = local_date(self.runtime.clock.now())
        days = [today + timedelta(days=i) for i in range(7 * _whole_weeks(weeks, "forecast"))]
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            due = _due_per_day(repo, "course", "dose2_due", days, units=self._units(repo))
        return [{"date": day.isoformat(), "doses_due": n} for day, n in due.items()]

    def calendar(self, weeks: int = 8) -> builtins.list[dict[str, Any]]:
        """The next ``weeks`` weeks, Monday to Sunday from this week's Monday (the clock's Danish date), per day:
        what each kind's profile counts there (``Profile.calendar``: doses 2 falling due, §6.4, under
        ``doses_due``; contacts' last day of monitoring, §5.5, under ``monitoring_ends``: that timer fires at 00:00
        after the day)."""
        today = local_date(self.runtime.clock.now())
        monday = today - timedelta(days=today.weekday())
        days = [monday + timedelta(days=i) for i in range(7 * _whole_weeks(weeks, "calendar"))]
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            units = self._units(repo)
            counted = {count.key: _due_per_day(repo, kind, count.timer, days, day_before=count.day_before,
                                               units=units)
                       for kind, count in CALENDAR}
        return [{"date": day.isoformat(), "past": day < today, "today": day == today,
                 **{key: per_day[day] for key, per_day in counted.items()}} for day in days]

    # ---- the audit log -------------------------------------------------------------------------------------

    def audit(
        self, *, entity: str | None = None, since: datetime | None = None, until: datetime | None = None,
        actor: str | None = None, trigger: str | None = None, limit: int | None = None, unit: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Audit entries by sequence number, filtered (all filters together); ``limit``: the newest so many;
        ``unit``: entries of users who acted through that unit or one below it (issue 17). A viewer outside the
        root unit reads the entries of their units' cases, contacts and courses only."""
        kind = pk = None
        if entity is not None:
            kind, pk = parse_id(entity)
        if since is not None and until is not None and until < since:
            raise UsageError(f"⟦until⟧ ({instant(until)}) is before ⟦since⟧ ({instant(since)}): swap them")
        if limit is not None and limit < 1:
            raise UsageError("⟦limit⟧ must be 1 or more")
        check_count(limit, "⟦limit⟧", low=1, high=MAX_LIMIT)
        for text, field in ((actor, "actor"), (trigger, "trigger")):
            if text is not None:
                check_text(text, field)
        for value, what in ((since, "⟦since⟧"), (until, "⟦until⟧")):
            if value is not None:
                check_instant(value, what)
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            acting = self._acting(repo, unit)
            return [audit_view(e) for e in repo.audit_entries(
                kind=kind, pk=pk, since=since, until=until, actor=actor, trigger=trigger, limit=limit,
                scope=self._units(repo), acting=acting)]

    def _acting(self, repo: Repository, unit: str | None) -> builtins.list[int] | None:
        """``audit --unit``: that unit and those below it."""
        if unit is None:
            return None
        tree = UnitTree.load(repo)
        return sorted(tree.below(tree.find(unit, "unit")))

    def audit_timeline(self, object_id: str) -> builtins.list[dict[str, Any]]:
        """One object's life: its entries in chain order. NotFound when it has none."""
        kind, pk = parse_id(object_id)
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            scope = self._scope(repo)
            if kind in OBJECT_MODELS and scope is not None:
                check_reads(scope, kind, pk, repo.workflow_object(kind, pk).unit_id)
            elif scope is not None:
                raise outside(scope, object_id, 1, "audit timeline", reading=True)
            history = repo.object_history(kind, pk)
        if not history:
            raise not_found(object_id, kind)
        return [audit_view(e) for e in history]

    def audit_verify(self) -> dict[str, Any]:
        """Check every object's hash chain and head: ``{"intact", "first_bad_seq", "problems", ...}``."""
        with self.runtime.db.snapshot() as session:
            report = auditing.verify(Repository(session))
        view = report.view()
        log.info("audit_verified", intact=report.intact, entries=report.entries, problems=report.problem_count,
                 first_bad_seq=view["first_bad_seq"])
        return view

    def audit_replay(self) -> dict[str, Any]:
        """Rebuild every case, contact and course from the log alone and compare with the tables:
        ``{"matches", "objects", "differences"}``."""
        with self.runtime.db.snapshot() as session:
            count, differences = auditing.replay(Repository(session))
        log.info("audit_replayed", objects=count, differences=len(differences))
        return {"matches": not differences, "objects": count, "differences": differences}

    def audit_export(self, fmt: str, out: IO[Any], *, entity: str | None = None, since: datetime | None = None,
                     before: datetime | None = None, actor: str | None = None, trigger: str | None = None,
                     unit: str | None = None) -> int:
        """Stream the whole log, or the entries the filters select (as ``audit_page``'s), to ``out`` in sequence
        order; returns the entries written. ``jsonl``, ``csv`` or ``excel-csv`` (with a header) to a text stream,
        ``xlsx`` to a binary one (``engine.auditing.DESK_FORMATS``)."""
        if fmt not in auditing.DESK_FORMATS:
            raise UsageError(f"⟦format⟧ '{shown(fmt)}' is not an export format: use one of "
                             f"{', '.join(auditing.DESK_FORMATS)}")
        where = self.audit_where(entity=entity, since=since, before=before, actor=actor, trigger=trigger, unit=unit)
        with self.runtime.db.snapshot() as session:
            repo = Repository(session)
            units = self._units(repo)
            if units is not None:
                where = dataclasses.replace(where, scope=tuple(units))
            filtered = any(v is not None for v in (entity, since, before, actor, trigger, units, where.acting))
            entries = repo.stream_audit_filtered(where) if filtered else None
            if fmt == "xlsx":
                return auditing.export_xlsx(entries if entries is not None else repo.stream_audit(), out)
            return auditing.export(repo, fmt, out, exported_at=self.runtime.wall_clock.now(), entries=entries)

    # ---- the auditor's desk --------------------------------------------------------------------------------

    def audit_where(self, *, entity: str | None = None, since: datetime | None = None,
                    before: datetime | None = None, actor: str | None = None,
                    trigger: str | None = None, unit: str | None = None) -> AuditWhere:
        """The desk's filters, checked: an object id, instants (``since`` inclusive, ``before`` exclusive), an
        actor, a trigger and an acting unit (``unit``, a name or ``unit-N``: the entries of users who acted
        through it or a unit below it, issue 17). UsageError naming the field otherwise; NotFound for a unit
        there is none of."""
        kind = pk = None
        if entity is not None:
            kind, pk = parse_id(entity)
        check_period(since, before)
        for text, field in ((actor, "actor"), (trigger, "trigger"), (unit, "unit")):
            if text is not None:
                check_text(text, field)
        acting = None
        if unit is not None:
            with self.runtime.db.reading() as session:
                acting = self._acting(Repository(session), unit)
        return AuditWhere(kind=kind, pk=pk, since=since, before=before, actor=actor, trigger=trigger,
                          acting=None if acting is None else tuple(acting))

    def audit_page(self, *, entity: str | None = None, since: datetime | None = None,
                   before: datetime | None = None, actor: str | None = None, trigger: str | None = None,
                   limit: int = DEFAULT_AUDIT_PAGE, older_than: int | None = None,
                   newer_than: int | None = None, unit: str | None = None) -> dict[str, Any]:
        """One page of the filtered log, newest first, by keyset on the sequence number: ``{"items", "older",
        "newer"}``, where ``older`` (``newer``) is the ``older_than`` (``newer_than``) of the next (previous)
        page, None at the end (the start). ``unit``: the entries of users who acted through that unit or one
        below it (``audit_where``). UsageError for a malformed filter, limit or position."""
        where = self.audit_where(entity=entity, since=since, before=before, actor=actor, trigger=trigger, unit=unit)
        check_count(limit, "⟦limit⟧", low=1, high=MAX_AUDIT_PAGE)
        if older_than is not None and newer_than is not None:
            raise UsageError("give ⟦older_than⟧ or ⟦newer_than⟧, not both")
        for position, what in ((older_than, "⟦older_than⟧"), (newer_than, "⟦newer_than⟧")):
            check_count(position, what, low=0, high=MAX_ID)
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            units = self._units(repo)
            if units is not None:
                where = dataclasses.replace(where, scope=tuple(units))
            rows, older, newer = repo.audit_page(where, limit=limit, older_than=older_than, newer_than=newer_than)
        items = [audit_view(e) for e in rows]
        return {"items": items, "older": items[-1]["seq"] if older and items else None,
                "newer": items[0]["seq"] if newer and items else None}

    def audit_choices(self) -> dict[str, builtins.list[str]]:
        """The triggers and the actors the log holds (the desk's pickers), each sorted."""
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            return {"triggers": repo.audit_distinct("trigger"), "actors": repo.audit_distinct("actor")}

    def audit_entry(self, seq: int) -> dict[str, Any]:
        """One entry with its changes before and after (``engine.auditing.entry_detail``); NotFound."""
        check_count(seq, "⟦seq⟧", low=1, high=MAX_ID)
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            scope = self._scope(repo)
            row = repo.audit_entry(seq) if scope is not None else None
            if scope is not None and row is not None:  # refused before the detail is worked out
                unit = (repo.workflow_object(row.object_kind, row.object_id).unit_id
                        if row.object_kind in OBJECT_MODELS else None)
                if unit is None or not scope.covers(unit):
                    raise outside(scope, format_id(row.object_kind, row.object_id), unit or 1, "audit entry",
                                  reading=True)
            return auditing.entry_detail(repo, seq)


def _whole_weeks(weeks: int, what: str) -> int:
    if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 1:
        raise UsageError(f"the {what} needs a whole number of weeks, 1 or more, not {weeks!r}")
    return weeks


def _due_per_day(repo: Repository, kind: str, name: str, days: builtins.list[date], *,
                 day_before: bool = False, units: builtins.list[int] | None = None) -> dict[date, int]:
    """A kind's pending timers of one name per Danish day of ``days`` (consecutive), from one grouped query. Each
    such timer falls due at a local midnight, so each due instant is one day; ``day_before``: a timer at 00:00
    counts for the day that ends there (the last day of a window)."""
    shift = timedelta(days=1 if day_before else 0)
    counts = dict.fromkeys(days, 0)
    for due_at, n in repo.timer_forecast(kind, name, local_midnight(days[0] + shift),
                                         local_midnight(days[-1] + timedelta(days=1) + shift), units):
        counts[local_date(due_at) - shift] += n
    return counts


# ---- the worklist's items and cursors -----------------------------------------------------------------------

#: Items on a page of the worklist when no ``limit`` is given.
DEFAULT_PAGE = 100
#: A cursor: version 1, the last item's due instant (microseconds since 1970 UTC) and timer id, base64url.
_CURSOR = re.compile(r"1:(-?\d{1,17}):(\d{1,10})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(item: dict[str, Any], *, sort: str = "due") -> str:
    """The opaque cursor of the position just after ``item``: internal values only (its due instant and its
    timer's id; sorted by kind, the object kind first), no personal data."""
    due = datetime.fromisoformat(item["due_at"])
    micros = (due - _EPOCH) // timedelta(microseconds=1)
    _, pk = parse_id(item["timer"], kind="timer")
    text = f"1:{micros}:{pk}" if sort == "due" else f"2:{item['object'].rsplit('-', 1)[0]}:{micros}:{pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, int]:
    """(due instant, timer id) of a cursor ``encode_cursor`` made; UsageError for anything else (not echoed)."""
    return decode_position(text, sort="due")[1:]


def decode_position(text: str, *, sort: str = "due") -> tuple[str | None, datetime, int]:
    """(object kind or None, due instant, timer id) of a cursor ``encode_cursor`` made for ``sort``; UsageError
    for anything else (not echoed)."""
    refused = UsageError("⟦after⟧ is not a cursor of this worklist: pass the `next` of the page before, as it was "
                         "given, or leave it out for the first page")
    if not isinstance(text, str) or not 0 < len(text) <= 64 or not text.isascii():
        raise refused
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise refused from None
    kind = None
    if sort == "kind":
        by_kind = _KIND_CURSOR.fullmatch(decoded)
        if by_kind is None or by_kind[1] not in WORKFLOWS:
            raise refused
        kind, decoded = by_kind[1], f"1:{by_kind[2]}"
    found = _CURSOR.fullmatch(decoded)
    if found is None or int(found[2]) > MAX_ID:
        raise refused
    try:
        due = _EPOCH + timedelta(microseconds=int(found[1]))
        check_instant(due, "⟦after⟧")
    except (OverflowError, UsageError):
        raise refused from None
    return kind, due, int(found[2])


#: How the worklist can be sorted (``sort``): by deadline, or by object kind and then deadline.
SORTS = ("due", "kind")
_KIND_CURSOR = re.compile(r"2:([a-z]{1,16}):(-?\d{1,17}:\d{1,10})")
_ID_QUERY = re.compile(r"(person|case|contact|course)-(\d{1,10})")


def _check_sort(sort: str) -> None:
    if sort not in SORTS:
        raise UsageError(f"⟦sort⟧ '{shown(str(sort))}' is not a sort of the worklist: use one of {', '.join(SORTS)}")


def _search_result(repo: Repository, kind: str, row: Any, match: str, ref: str | None = None) -> dict[str, Any]:
    if ref is None:
        ref = repo.person(row.person_id).ref
    result: dict[str, Any] = {"id": format_id(kind, row.id), "kind": kind, "state": row.state,
                              "person": format_id("person", row.person_id), "ref": ref, "match": match,
                              "unit": format_id("unit", row.unit_id)}
    if kind == "contact":
        result["case"] = format_id("case", row.case_id)
    if kind == "course" and row.contact_id is not None:
        result["contact"] = format_id("contact", row.contact_id)
    return result


def _person_results(repo: Repository, person: Any, match: str) -> builtins.list[dict[str, Any]]:
    """A person and the person's cases, contacts and courses."""
    results = [{"id": format_id("person", person.id), "kind": "person", "state": None,
                "person": format_id("person", person.id), "ref": person.ref, "match": match}]
    for kind in ("case", "contact", "course"):
        results += [_search_result(repo, kind, row, match, person.ref)
                    for row in repo.objects_linked(kind, "person_id", person.id)]
    return results


def task_names(kind: str | None = None) -> builtins.list[str]:
    """The timer names the worklist can be filtered by (``--task``): every timed trigger of the workflows (of
    ``kind``'s only, when given)."""
    kinds = [kind] if kind is not None else builtins.list(WORKFLOWS)
    return sorted({spec.trigger for k in kinds for spec in WORKFLOWS[k].transitions if spec.timed})


def _check_task_filter(kind: str | None, task: str | None) -> None:
    if kind is not None and kind not in WORKFLOWS:
        raise UsageError(f"⟦kind⟧ '{shown(kind)}' is not a kind of workflow object: use one of "
                         f"{', '.join(WORKFLOWS)}")
    if task is not None and task not in task_names(kind):
        where = f" of a {kind}" if kind is not None else ""
        raise UsageError(f"⟦task⟧ '{shown(task)}' is not the name of a timer{where}: use one of "
                         f"{', '.join(task_names(kind))}")


def last_day(due_at: datetime) -> date:
    """The last Danish day a deadline covers: a window closing at 00:00 local on D+N+1 is shown as D+N; a
    deadline at another time of day (17:00, 24 hours) is that day."""
    return local_date(due_at - timedelta(microseconds=1))


def _worklist_item(row: Any, now: datetime, context: dict[str, Any] | None = None,
                   names: dict[str, dict[int, str]] | None = None) -> dict[str, Any]:
    """One item of the worklist from its timer's row (``Repository.worklist``) and what a desk needs beside it
    (``Repository.worklist_context``; ``names``: of units and users)."""
    context = context or {}
    names = names or {"units": {}, "users": {}}
    unit = getattr(row, "unit_id", None) or 1
    assignee = getattr(row, "assignee_id", None)
    item: dict[str, Any] = {"object": format_id(row.object_kind, row.object_id), "name": row.name,
                            "unit": format_id("unit", unit), "unit_name": names["units"].get(unit),
                            "assignee": None if assignee is None else format_id("user", assignee),
                            "assignee_name": None if assignee is None else names["users"].get(assignee)}
    if context.get("person_id") is not None:
        item["person"] = format_id("person", context["person_id"])
        item["ref"] = context.get("ref")
    if context.get("case_id") is not None:
        item["case"] = format_id("case", context["case_id"])
    elif row.object_kind == "case":
        item["case"] = item["object"]
    if context.get("contact_id") is not None:
        item["contact"] = format_id("contact", context["contact_id"])
    item["last_day"] = last_day(row.due_at).isoformat()
    if row.name == "pep_assessment_due" and context.get("pep_best_by") is not None:
        # §6.2 the 4-day window, still open: the same assessment, best by its last day.
        item["pep_best_by"] = last_day(context["pep_best_by"]).isoformat()
        item["pep_best_by_at"] = instant(context["pep_best_by"])
    if row.status == "failed":  # an operator's task: a timer that could not fire
        return {**item, "task": f"timer {row.name} failed after {row.attempts} attempts: see `mpoxflow timers "
                                "⟦status⟧ failed`",
                "due_at": instant(row.due_at), "overdue": True, "missed": False, "rule": row.rule,
                "timer": format_id("timer", row.id), "failed": True}
    return {**item, "task": row.task, "due_at": instant(row.due_at),
            "overdue": row.status == "missed" or (row.overdue_at or row.due_at) <= now,
            # The deadline passed undone: it stays until someone records what happened (task resolve).
            "missed": row.status == "missed", "rule": row.rule, "timer": format_id("timer", row.id)}
