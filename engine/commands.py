"""The command path: every change a person asks for, and the one transition path timers share.

``open`` creates a workflow object, ``apply`` fires a trigger on one; both end in ``transition``, which binds a
``Subject`` (state, facts, the clock's now, what the guards read) to the workflow's shared machine, fires the
trigger (the guards refuse, or the effect updates the facts and asks for timers, spawns and cascades), writes the
object, cancels and arms timers, appends the audit entry, then runs the spawned and cascaded transitions, all in
the caller's unit of work. ``add_person``, ``update_person`` and ``resolve_task`` are the changes outside the
workflows. Each public method is one unit of work: all of it commits, or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import SimpleNamespace
from typing import Any

import structlog

from engine import definitions, units
from engine.uow import Actor, Runtime, UnitOfWork, unit_of_work
from engine.views import instant, jsonable, object_view, person_view, timer_view
from persistence.audit import Head
from persistence.database import DuplicateKey
from persistence.models import OBJECT_MODELS, Person, Timer
from persistence.repository import Repository, facts_from_row, facts_values, format_id, not_found, parse_id
from workflows import case as case_workflow
from workflows import course as course_workflow
from workflows.calendar import local_date
from workflows.course import MAX_DOSES  # §6.3 no more than 2 doses over the person
from workflows.definition import NEW, Related, Subject, WorkflowDefinition
from workflows.errors import Conflict, Joined, RuleRefused, UsageError, because
from workflows.limits import MAX_ID, check_born, check_clinical_date, check_count, check_data, check_text, shown
from workflows.registry import BY_NAME

log = structlog.get_logger("mpoxflow.engine")

#: How staff record what happened to a missed task (``task resolve``); done-late only once it was missed.
TASK_OUTCOMES = ("done-late", "not-reachable", "declined", "not-needed")

#: What ``person update`` may change, by option name, and the column each is.
PERSON_FIELDS = {
    "born": "born", "immunocompromised": "immunocompromised", "pregnant": "pregnant",
    "breastfeeding": "breastfeeding", "previous_mpox": "previous_mpox", "smallpox_vaccinated": "smallpox_vaccinated",
    "doses_elsewhere": "doses_elsewhere", "last_dose_on": "last_dose_elsewhere_on",
}

#: What ``person correct`` corrects, and the section each fact decides under: a child case and a child's
#: vaccination (§3.2, §6.2.2: from the birth date; §6.4 born by 1970), pregnancy (§6.2.1), immunodeficiency (§6.4).
CORRECTABLE_PERSON = ("born", "pregnant", "immunocompromised")
PERSON_RULES = {"born": "SST-mpox-7.1 §6.4", "pregnant": "SST-mpox-7.1 §6.2.1",
                "immunocompromised": "SST-mpox-7.1 §6.4"}
#: The person's open objects that derive something from the person's facts, and the columns they derive from:
#: a case its child status and antiviral advice (§3.2, §3.4), a course its dose plan (§6.4). Pregnancy and age
#: are checked again at every dose (§6.2.1, §6.2.2), so nothing is stored from them.
PERSON_DEPENDENTS = {"case": ("suspected", "confirmed", "isolated", "healed"),
                     "course": ("offered", "dose1_given", "dose2_due")}
PLAN_FACTS = {"case": frozenset({"born", "immunocompromised"}),
              "course": frozenset({"born", "immunocompromised", "smallpox_vaccinated"})}
#: The states in which an object has ended (issue 19): a case's and a course's final states, a contact released or
#: symptomatic (its person's own case now). A retention purge counts from them (``engine.retention``), and only an
#: object in one of them can belong to a purged person, so only then is the person's purge looked up before a change.
ENDED_STATES = {"case": case_workflow.FINAL, "contact": ("released", "symptomatic"), "course": course_workflow.FINAL}


def refuse_purged(person_pk: int, purge: Any) -> None:
    """RuleRefused when ``purge`` (``Repository.lock_person``'s or ``person_purge``'s row) says the person's personal
    data was deleted by a retention purge: nothing more is recorded on the person or their objects."""
    if purge is None or purge.purged_at is None:
        return
    raise RuleRefused(because(
        "%(person)s's personal data was deleted on %(on)s under the retention rule %(rule)s: nothing more is "
        "recorded on this person or their cases, contacts and courses. For the same person, register them again "
        "(`mpoxflow person add`): that makes a new person", person=format_id("person", person_pk),
        on=local_date(purge.purged_at), rule=purge.purge_rule or "retention"), rule=purge.purge_rule,
        key="person_purged")


def refuse_purged_object(uow: UnitOfWork, kind: str, row: Any) -> None:
    """``refuse_purged`` for the person of a case, contact or course (looked up only for an ended object)."""
    if kind in ENDED_STATES and row.state in ENDED_STATES[kind]:
        refuse_purged(row.person_id, uow.repo.person_purge(row.person_id))


@dataclass(frozen=True)
class Changed:
    """An object as one transition left it: its values, all its timers, and the audit entry's number."""

    kind: str
    obj: Any
    timers: list[Any]
    audit_seq: int
    #: The transition spawned or cascaded to other objects (what was loaded of them before may be stale).
    reached_others: bool = False
    #: The columns it wrote that changed, as the audit entry records them.
    changes: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return object_view(self.kind, self.obj, self.timers)


class Commands:
    """Opens and changes workflow objects, registers and updates persons, resolves tasks."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

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
        """Register a person; returns the person's view. Raises UsageError for an empty ref, a birth date in the
        future or doses elsewhere without their date, RuleRefused when the ref is registered already,
        NotPermitted (audited) for an actor who may not."""
        ref = check_text(ref.strip(), "ref")
        if not ref:
            raise UsageError(because("⟦ref⟧ is empty: give the person's external reference"))
        if reason is not None:
            check_text(reason, "reason")
        flags = {
            "immunocompromised": immunocompromised, "pregnant": pregnant, "breastfeeding": breastfeeding,
            "previous_mpox": previous_mpox, "smallpox_vaccinated": smallpox_vaccinated,
            "doses_elsewhere": doses_elsewhere, "last_dose_elsewhere_on": last_dose_on,
        }
        try:
            return self._register(ref, born, flags, actor=actor, reason=reason)
        except DuplicateKey:
            # A parallel registration of the same reference committed first (past the check below): name the
            # person it made, never the reference.
            with self.runtime.db.reading() as session:
                existing = Repository(session).person_id_by_ref(ref)
            if existing is None:
                raise
            raise RuleRefused(because("a person with that reference is registered already as %(person)s: use that "
                                      "id", person=format_id("person", existing))) from None

    def _register(self, ref: str, born: date | None, flags: dict[str, Any], *, actor: str,
                  reason: str | None) -> dict[str, Any]:
        with unit_of_work(self.runtime, actor, "person add") as uow:
            now = uow.now()
            _check_person(flags, born, local_date(now))
            existing = uow.repo.person_id_by_ref(ref)
            if existing is not None:
                raise RuleRefused(because("a person with that reference is registered already as %(person)s: use "
                                          "that id", person=format_id("person", existing)))
            # Core statements, not the ORM's flush (a third of a bulk import's time per row went to it); the
            # Person made here is the row's values, for the view.
            values = {"ref": ref, "born": born, "created_at": now, **flags}
            person = Person(id=uow.repo.insert_person(values), **values)
            # The audit keeps internal ids and flags only: never the reference or the birth date.
            uow.audit(
                Head.of(None), kind="person", pk=person.id, workflow=None, trigger="register",
                from_state=None, to_state=None, actor=uow.actor, reason=reason, now=now, rule=None,
                data=jsonable({**flags, "born_given": born is not None}), changes=jsonable(flags),
            )
            uow.save_clock()
            log.info("person_registered", person=format_id("person", person.id))
            view = person_view(person)
            uow.commit()
        self.runtime.reads.shown("person", [person.id], actor=actor)  # the answer shows the person
        return view

    def update_person(self, person_id: str, *, changes: Mapping[str, Any], actor: str,
                      reason: str | None = None) -> dict[str, Any]:
        """Change what the rules read about a person (``person update``): pregnancy and breastfeeding (§6.2.1)
        come and go, immunodeficiency, a previous infection or smallpox vaccination become known, doses given
        elsewhere are recorded (§6.3), a birth date is corrected. ``changes`` holds only what is to change, by
        ``PERSON_FIELDS`` name (``last_dose_on`` for ``last_dose_elsewhere_on``). Audited with internal ids and
        flags only (a corrected birth date is recorded as ``born_changed``, never its value). What depends on the
        facts on the person's open cases and courses is recomputed in the same transaction (``PLAN_FACTS``).
        Returns the person's view; raises NotFound, UsageError (an unknown field, nothing to change, facts that
        cannot be true), GuardRefused (a recomputation that would be unsafe), NotPermitted (audited)."""
        unknown = sorted(set(changes) - set(PERSON_FIELDS))
        if unknown:
            raise UsageError(f"a person has no field {', '.join(unknown)}: change {', '.join(PERSON_FIELDS)}")
        if not changes:
            raise UsageError(because("nothing to change: give at least one of ⟦born⟧, ⟦pregnant⟧, ⟦breastfeeding⟧, "
                                     "⟦immunocompromised⟧, ⟦previous_mpox⟧, ⟦smallpox_vaccinated⟧, "
                                     "⟦doses_elsewhere⟧ with ⟦last_dose_on⟧"))
        return self._change_person(person_id, changes, actor=actor, reason=reason, trigger="update")

    def correct_person(self, person_id: str, *, changes: Mapping[str, Any], actor: str,
                       reason: str | None) -> dict[str, Any]:
        """Correct a person's recorded facts (``person correct``): the birth date, pregnancy, immunodeficiency
        (``CORRECTABLE_PERSON``), with the reason (required). As ``update_person``, and the audit entry (trigger
        ``correct``) keeps the flags' previous values (``before``; the birth date only as ``born_changed``, never
        a value) and the section of each corrected fact. Raises what ``update_person`` raises, and UsageError
        without a reason."""
        unknown = sorted(set(changes) - set(CORRECTABLE_PERSON))
        if unknown:
            raise UsageError(because("`person correct` corrects %(fields)s; other facts change with `person update`",
                                     fields=[f"⟦{k}⟧" for k in CORRECTABLE_PERSON]))
        if not changes:
            raise UsageError(because("nothing to correct: give the corrected ⟦born⟧, ⟦pregnant⟧ or "
                                     "⟦immunocompromised⟧"))
        if not (reason or "").strip():
            raise UsageError(because("a correction needs its reason: say why the recorded value was wrong with "
                                     "⟦reason⟧"))
        return self._change_person(person_id, changes, actor=actor, reason=reason, trigger="correct")

    def _change_person(self, person_id: str, changes: Mapping[str, Any], *, actor: str, reason: str | None,
                       trigger: str) -> dict[str, Any]:
        _, pk = parse_id(person_id, kind="person")
        if reason is not None:
            check_text(reason, "reason")
        with unit_of_work(self.runtime, actor, f"person {trigger}", format_id("person", pk)) as uow:
            now = uow.now()
            refuse_purged(pk, uow.repo.lock_person(pk))  # as a creation for the person: its guards read it
            person = uow.repo.person(pk)
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
                raise UsageError(because("%(person)s already has these values: nothing to change",
                                         person=format_id("person", pk)))
            before = {k: getattr(person, k) for k in written}
            for column, value in written.items():
                setattr(person, column, value)
            person.born = born
            uow.session.flush()
            data: dict[str, Any] = {**written, "born_changed": born_changed}
            corrected = [k for k in CORRECTABLE_PERSON if k in written or (k == "born" and born_changed)]
            rule = None
            if trigger == "correct":
                # The previous flags (never the birth date: only that it changed) and each fact's section.
                data.update(before=before, rules={k: PERSON_RULES[k] for k in corrected})
                rule = PERSON_RULES[corrected[0]]
            uow.audit(
                Head.of(person), kind="person", pk=pk, workflow=None, trigger=trigger,
                from_state=None, to_state=None, actor=uow.actor, reason=reason, now=now, rule=rule,
                data=jsonable(data), changes=jsonable(written),
            )
            # What the person's open objects derive from these facts (§3.2, §3.4 a case; §6.4 a course's plan).
            changed_facts = set(written) | ({"born"} if born_changed else set())
            cascade_reason = f"from {format_id('person', pk)}: {trigger}"
            for kind, states in PERSON_DEPENDENTS.items():
                if not changed_facts & PLAN_FACTS[kind]:
                    continue
                for object_pk in uow.repo.objects_of_person(kind, pk, states):
                    row = uow.repo.load_object(kind, object_pk)
                    self.transition(
                        uow, definition=BY_NAME[row.workflow], kind=kind, row=row,
                        timers=uow.repo.object_timers(kind, object_pk), trigger="person_corrected", data={},
                        actor=uow.actor, reason=cascade_reason, now=now,
                    )
            uow.save_clock()
            log.info(f"person_{trigger}d" if trigger == "update" else "person_corrected",
                     person=format_id("person", pk), fields=sorted(written) + (["born"] if born_changed else []))
            view = person_view(person)
            uow.commit()
        self.runtime.reads.shown("person", [person.id], actor=actor)  # the answer shows the person
        return view

    # ---- workflow objects ----------------------------------------------------------------------------------

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
        """Create a workflow object of ``kind`` for ``person`` through its creation ``trigger``; returns its view.
        Raises NotFound for an unknown person, GuardRefused when the creation's guards refuse, RuleRefused for a
        duplicate, UsageError for bad input, NotPermitted (audited)."""
        definitions.check_kind(kind)
        _, person_pk = parse_id(person, kind="person")
        self._check_input(data, reason)
        with unit_of_work(self.runtime, actor, f"{kind} {trigger}", person) as uow:
            # The person's row is held until the commit: parallel creations for one person run in turn, so the
            # guards (one course under way, one open case) read what the one before committed.
            refuse_purged(person_pk, uow.repo.lock_person(person_pk))
            parent = units.PARENT_OF.get(kind)
            parent_unit = units.parent_unit(uow.repo, kind, data)
            if parent is not None and parent_unit is not None:
                # What a new object belongs to must be the creator's to act on (a contact of a case of theirs).
                units.check_acts_on(uow, parent, parse_id(str(data[parent]), kind=parent)[1], parent_unit,
                                    f"{kind} {trigger}")
            now = uow.now()
            # The definition it starts under: the default in force now (a deployment's choice, issue 20).
            definition = definitions.for_new(uow, kind, now)
            changed = self.transition(
                uow, definition=definition, kind=kind, row=None, timers=[], trigger=trigger, data=data,
                actor=uow.actor, reason=reason, now=now, person_pk=person_pk, parent_unit=parent_unit,
            )
            uow.save_clock()
            uow.commit()
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
        """Apply ``trigger`` to the object (of ``kind``, when given); returns its view as the change left it.
        Raises NotFound, TriggerNotAllowed, GuardRefused, RuleRefused, UsageError, NotPermitted (audited), or
        Conflict (``expected_version`` given and the object has changed since, or a concurrent change won)."""
        kind, pk = parse_id(object_id, kind=kind)
        if kind not in OBJECT_MODELS:
            raise UsageError(f"{object_id} is a {kind}, which has no workflow: give a case or contact id")
        self._check_input(data or {}, reason)
        check_count(expected_version, "⟦if_version⟧", low=1, high=MAX_ID)
        with unit_of_work(self.runtime, actor, f"{kind} {trigger}", format_id(kind, pk)) as uow:
            row = self.load_for_change(uow, kind, pk, f"{kind} {trigger}", expected_version)
            # The clock is read after the object is loaded: a concurrent change committed in between is caught
            # by the version check of the UPDATE.
            changed = self.transition(
                uow, definition=BY_NAME[row.workflow], kind=kind, row=row,
                timers=uow.repo.object_timers(kind, pk), trigger=trigger, data=data or {}, actor=uow.actor,
                reason=reason, now=uow.now(),
            )
            uow.save_clock()
            uow.commit()
        return changed.view()

    def load_for_change(self, uow: UnitOfWork, kind: str, pk: int, command: str,
                        expected_version: int | None) -> Any:
        """The object's row, to change it with ``command``: OutsideUnits (audited) when it is not the actor's to
        act on, Conflict when ``expected_version`` is given and the object has moved past it."""
        row = uow.repo.load_object(kind, pk)
        units.check_acts_on(uow, kind, pk, row.unit_id, command)
        refuse_purged_object(uow, kind, row)
        if expected_version is not None and row.version != expected_version:
            raise Conflict(
                f"{format_id(kind, pk)} was changed meanwhile (it is at version {row.version}, you expected "
                f"{expected_version}); nothing was written. Show it again and retry."
            )
        return row

    def _check_input(self, data: Mapping[str, Any], reason: str | None) -> None:
        """UsageError, before anything is read or written, for a text too long or with control characters, or a
        clinical date before its bound (``workflows.limits``)."""
        check_data(data, local_date(self.runtime.clock.now()))
        if reason is not None:
            check_text(reason, "reason")

    def transition(
        self,
        uow: UnitOfWork,
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
        parent_unit: int | None = None,
        migrate_to: str | None = None,
    ) -> Changed:
        """The one transition path, inside the caller's unit of work (``row`` None creates the object; ``timers``
        are the object's rows as loaded; ``timer_pk`` the timer whose firing this is). Returns the object as
        left, with all its timers. A new object goes where its kind's placement rule says
        (``engine.units.place``; ``parent_unit``: the unit of what it belongs to). Raises TriggerNotAllowed and
        GuardRefused (the workflow's refusals),
        RuleRefused for a duplicate object, Conflict when a concurrent change wrote the object first; the caller
        rolls back.

        ``migrate_to`` (``workflow migrate``, with ``trigger`` ``migrated`` and ``definition`` the later one): the
        object moves from the definition it records to ``definition``, in the state ``migrate_to`` that its state
        maps to; the new definition's ``migrated`` transition runs from there (its guards on the facts, its effect
        the timers the new rules compute). Pending timers the new definition does not declare are cancelled; one
        the new rules re-arm exactly as it stands is kept, not replaced."""
        repo = uow.repo
        from_state = row.state if row is not None else NEW
        machine_state = migrate_to if migrate_to is not None else from_state
        spec = definition.spec(trigger, machine_state)
        if row is None or (spec is not None and (spec.references or spec.linked)):
            uow.flush()  # what a batch held back is written before this reads other objects
        person = row.person_id if row is not None else person_pk
        if person is None:
            raise ValueError("creating an object needs the person it is about")
        subject = Subject(
            object_id=format_id(kind, row.id) if row is not None else f"new {kind}",
            state=machine_state,
            facts=facts_from_row(row, definition.facts) if row is not None else None,
            now=now,
            settings=self.runtime.settings,
            data=data,
            context=_related(repo, spec.references, row, data, person) if spec is not None else {},
            person=format_id("person", person),
            linked=_linked(repo, spec.linked, kind, row) if spec is not None and row is not None else {},
        )
        # The row the machine takes (``when`` chooses among rows of one trigger before any effect runs): its
        # section is the one the entry cites (a correction cites the section of the fact it corrects).
        chosen = definition.spec(trigger, machine_state, subject)
        definition.fire(subject, trigger)
        rule = chosen.rule if chosen is not None else definition.rule_of(trigger, machine_state)
        if migrate_to is not None:
            _migrated_timers(subject, definition, timers)
        for spawn in subject.spawned:
            repo.lock_person(person)  # as in `open`: the spawned object's guards read committed state
            born = self.transition(
                uow, definition=definitions.for_new(uow, spawn.kind, now), kind=spawn.kind, row=None, timers=[],
                trigger=spawn.trigger, data=spawn.data, actor=actor, reason=f"from {subject.object_id}: {trigger}",
                now=now, person_pk=person, parent_unit=row.unit_id if row is not None else parent_unit,
            )
            setattr(subject.facts, spawn.link, format_id(spawn.kind, born.obj.id))

        written = {**facts_values(subject.facts), "state": subject.state}
        if migrate_to is not None:
            written["workflow"] = definition.name
        values = {**written, "updated_at": now}
        if row is None:
            values.update(person_id=person_pk, workflow=definition.name, created_at=now, version=1)
            # audit_* start empty: the head is set once the entry is written, below
            values.update(audit_pos=None, audit_seq=None, audit_hash=None)
            _refuse_duplicate(repo, definition, values)
            unit, assignee = units.place(uow, kind, actor, parent_unit, now)
            values.update(unit_id=unit, assignee_id=assignee, failed_attempts=0)
            obj = SimpleNamespace(id=repo.insert_object(kind, values), **values)
            changes = jsonable({**written, "person_id": person_pk, "workflow": definition.name, "unit_id": unit,
                                "assignee_id": assignee})
        else:
            # Equal values are equal as JSON: only the ones that differ are made JSON to compare.
            changes = {k: jsonable(v) for k, v in written.items()
                       if (before := getattr(row, k)) != v and jsonable(before) != jsonable(v)}
            obj = SimpleNamespace(**{**_columns(row), **values, "version": row.version + 1})

        current = [SimpleNamespace(**_columns(t)) for t in timers]
        cancelled, done = _close_timers(repo, current, subject, now)
        new_rows = [
            {"object_kind": kind, "object_id": obj.id, "name": spec.name, "due_at": spec.due_at, "rule": spec.rule,
             "task": spec.task, "overdue_at": spec.overdue_at, "status": "pending", "armed_at": now,
             "closed_at": None, "satisfied_at": None, "note": None, "unit_id": obj.unit_id,
             "assignee_id": obj.assignee_id}
            for spec in subject.armed
        ]
        # In memory as a loaded row would be (a batch of firings may carry them to the object's next timer).
        armed = [SimpleNamespace(id=i, attempts=0, next_attempt_at=None, last_error=None, outcome=None,
                                 resolved_at=None, resolution=None, **r)
                 for i, r in zip(repo.insert_timers(new_rows), new_rows, strict=True)]
        head = uow.audit(
            Head.of(row), kind=kind, pk=obj.id, workflow=obj.workflow, trigger=trigger,
            from_state=None if from_state == NEW else from_state, to_state=subject.state, actor=actor,
            reason=reason, now=now, rule=rule, data=jsonable({**dict(data), **subject.audit_data}), changes=changes,
            armed=[{"timer": format_id("timer", t.id), "name": t.name, "due_at": jsonable(t.due_at),
                    "rule": t.rule, "task": t.task, "overdue_at": jsonable(t.overdue_at)} for t in armed],
            cancelled=cancelled, done=done, timer_pk=timer_pk, move_head=row is None,
            unit=units.acting_unit(uow, actor, obj.unit_id),
        )
        seq = head.seq
        assert seq is not None
        obj.audit_pos, obj.audit_seq, obj.audit_hash = head.pos, head.seq, head.hash
        if row is not None:
            # The object's new values, its version check and its audit head in one statement. A concurrent change
            # fails here (version) or already at the entry (its chain position is taken): all is rolled back.
            head_values = {"audit_pos": head.pos, "audit_seq": head.seq, "audit_hash": head.hash}
            if not uow.update_object(kind, row.id, row.version, {**values, **head_values}):
                raise Conflict(
                    f"{format_id(kind, row.id)} was changed by someone else while this change was being made; "
                    "nothing was written. Show it again and retry."
                )

        # Other objects the change reaches (a confirmed case ends the person's open course), after this one is
        # written: their guards read it.
        if subject.cascades:
            uow.flush()
        for cascade in subject.cascades:
            targets = ([cascade.pk] if cascade.pk is not None
                       else repo.objects_of_person(cascade.kind, person, cascade.states))
            for pk in targets:
                target = repo.load_object(cascade.kind, pk)
                if any(getattr(target, column) != value for column, value in cascade.match.items()):
                    continue
                self.transition(
                    uow, definition=BY_NAME[target.workflow], kind=cascade.kind, row=target,
                    timers=repo.object_timers(cascade.kind, pk), trigger=cascade.trigger, data=cascade.data,
                    actor=actor, reason=f"from {format_id(kind, obj.id)}: {trigger}", now=now,
                )

        log.info(
            "transition", object=format_id(kind, obj.id), trigger=trigger,
            from_state=None if from_state == NEW else from_state, to_state=subject.state, rule=rule,
            role=actor.role, audit_seq=seq, timers_armed=[t.name for t in armed],
            timers_cancelled=[c["name"] for c in cancelled],
        )
        return Changed(kind, obj, sorted(current + armed, key=lambda t: (t.due_at, t.id)), seq,
                       reached_others=bool(subject.spawned or subject.cascades), changes=changes)

    # ---- tasks ---------------------------------------------------------------------------------------------

    def resolve_task(self, timer_id: str, outcome: str, *, actor: str, reason: str | None) -> dict[str, Any]:
        """Record what happened to a task (``task resolve``): a **missed** task (its deadline passed undone) with
        done-late, not-reachable, declined or not-needed; a task still pending with not-reachable, declined or
        not-needed (it leaves the worklist and is never missed; its timer still fires). The task's status stays
        as it is (a missed task is never recorded as done); the resolution is audited on the object's chain.
        Returns the timer's view. UsageError for a bad outcome or no reason, NotFound, RuleRefused for a timer
        that is no task or is closed, NotPermitted (audited)."""
        _, pk = parse_id(timer_id, kind="timer")
        if outcome not in TASK_OUTCOMES:
            raise UsageError(f"'{shown(outcome)}' is not an outcome: use one of {', '.join(TASK_OUTCOMES)} (⟦outcome⟧)")
        if not (reason or "").strip():
            raise UsageError(because("say what happened with ⟦reason⟧: it goes into the audit entry and onto the "
                                     "task"))
        assert reason is not None
        label = format_id("timer", pk)
        with unit_of_work(self.runtime, actor, "task resolve", label) as uow:
            timer = uow.session.get(Timer, pk)
            if timer is None:
                raise not_found(label, "timer")
            if timer.task is None:
                raise RuleRefused(because("%(timer)s (%(name)s) is an automatic timer, not a task: nothing to "
                                          "resolve", timer=label, name=timer.name), rule=timer.rule)
            if timer.resolved_at is not None:
                raise RuleRefused(because("%(timer)s is resolved already (%(outcome)s, %(at)s): see `mpoxflow show "
                                          "%(timer)s`", timer=label, outcome=timer.outcome,
                                          at=instant(timer.resolved_at)), rule=timer.rule)
            if timer.satisfied_at is not None:
                raise RuleRefused(because("%(timer)s was done in time (%(at)s): nothing to resolve", timer=label,
                                          at=instant(timer.satisfied_at)), rule=timer.rule)
            if timer.status == "missed":
                pass
            elif timer.status in ("pending", "fired"):
                if outcome == "done-late":
                    raise RuleRefused(because("%(timer)s is not missed (due %(due)s): record the task itself (its "
                                              "command), or resolve it as not-reachable, declined or not-needed",
                                              timer=label, due=instant(timer.due_at)), rule=timer.rule)
            else:
                raise RuleRefused(because("%(timer)s is %(status)s: only an open or missed task can be resolved",
                                          timer=label, status=timer.status), rule=timer.rule)
            now = uow.now()
            kind, object_pk = timer.object_kind, timer.object_id
            row = uow.repo.load_object(kind, object_pk)
            units.check_acts_on(uow, kind, object_pk, row.unit_id, "task resolve")
            refuse_purged_object(uow, kind, row)
            text = reason.strip()
            timer.outcome, timer.resolved_at, timer.resolution = outcome, now, text
            uow.session.flush()
            seq = uow.audit(
                Head.of(row), kind=kind, pk=object_pk, workflow=row.workflow, trigger="resolve",
                from_state=row.state, to_state=row.state, actor=uow.actor, reason=text, now=now, rule=timer.rule,
                data={"timer": label, "name": timer.name, "outcome": outcome, "status": timer.status},
                changes=None, unit=units.acting_unit(uow, uow.actor, row.unit_id),
            ).seq
            uow.save_clock()
            log.info("task_resolved", timer=label, object=format_id(kind, object_pk), outcome=outcome,
                     status=timer.status, audit_seq=seq)
            view = timer_view(timer)
            uow.commit()
        return view


def _check_person(flags: Mapping[str, Any], born: date | None, today: date) -> None:
    """UsageError (saying which option to fix) for a person's facts that cannot be true."""
    if born is not None and born > today:
        raise UsageError(because("the birth date is after today (%(today)s): correct the date (⟦born⟧)",
                                 today=today))
    if born is not None:
        check_born(born)
    doses, last = flags["doses_elsewhere"], flags["last_dose_elsewhere_on"]
    if isinstance(doses, bool) or not isinstance(doses, int) or not 0 <= doses <= MAX_DOSES:
        raise UsageError(f"⟦doses_elsewhere⟧ {doses!r}: give 0, 1 or 2 (no more than 2 doses, SST-mpox-7.1 §6.3)")
    if doses and last is None:
        raise UsageError(because("doses given elsewhere need the date of the last one: add ⟦last_dose_on⟧ (§6.3: "
                                 "the next dose is at least 28 days after it)"))
    if not doses and last is not None:
        raise UsageError(because("⟦last_dose_on⟧ goes with ⟦doses_elsewhere⟧ 1 or 2"))
    if last is not None and last > today:
        raise UsageError(because("⟦last_dose_on⟧ %(last)s is after today (%(today)s): record a dose once given",
                                 last=last, today=today))
    if last is not None and born is not None and last < born:
        raise UsageError(because("⟦last_dose_on⟧ %(last)s is before the birth date: correct the date", last=last))
    if last is not None:
        check_clinical_date(last, "last_dose_on", today)


def _related(
    repo: Repository, kinds: tuple[str, ...], row: Any, data: Mapping[str, Any], person_pk: int
) -> dict[str, Related]:
    """Load what a transition's guards read: the objects named in the data, or the object's own ``<kind>_id``;
    ``person``, the facts of the object's person. NotFound for a named object that does not exist."""
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


def _linked(repo: Repository, kinds: tuple[str, ...], kind: str, row: Any) -> dict[str, tuple[Related, ...]]:
    """The objects of ``kinds`` that belong to ``row`` (their ``<kind>_id`` is its id), for the guards."""
    found: dict[str, tuple[Related, ...]] = {}
    for other_kind in kinds:
        rows = repo.objects_linked(other_kind, f"{kind}_id", row.id)
        found[other_kind] = tuple(
            Related(format_id(other_kind, r.id), r.id, r.state, facts_from_row(r, BY_NAME[r.workflow].facts),
                    format_id("person", r.person_id)) for r in rows)
    return found


def _refuse_duplicate(repo: Repository, definition: WorkflowDefinition, values: dict[str, Any]) -> None:
    """RuleRefused when the person has an object of this workflow with the same identity already (a contact
    per case and person)."""
    if not definition.identity:
        return
    same = {"person_id": values["person_id"], **{k: values[k] for k in definition.identity}}
    existing = repo.find_object(definition.kind, same)
    if existing is not None:
        described = Joined([format_id(k.removesuffix("_id"), v) for k, v in same.items()], " and ")
        raise RuleRefused(
            because("there is already a %(kind)s for %(described)s: %(existing)s; record the change on that one "
                    "(`mpoxflow show %(existing)s`)", kind=definition.kind, described=described,
                    existing=format_id(definition.kind, existing)),
            rule=definition.identity_rule,
        )


def _migrated_timers(subject: Subject, definition: WorkflowDefinition, timers: list[Any]) -> None:
    """A migration's timers (``transition``'s ``migrate_to``): a pending timer the new definition does not declare
    is cancelled (nothing would fire it); one already due when the object moves fires as it was armed (a deadline
    that has passed is not moved by the new rules, nor cancelled unrecorded: a task due undone is recorded missed);
    one the new rules re-arm exactly as it stands (due, task, overdue instant) stays as it is rather than being
    cancelled and armed anew."""
    pending = {t.name: t for t in timers if t.status == "pending"}
    for name in pending:
        if name not in definition.timers:
            subject.cancel_timer(name)
    kept = {name for name, was in pending.items() if name in definition.timers and was.due_at <= subject.now}
    kept |= {spec.name for spec in subject.armed
             if (was := pending.get(spec.name)) is not None and was.due_at == spec.due_at and was.task == spec.task
             and was.overdue_at == spec.overdue_at and was.rule == spec.rule}
    subject.armed = [spec for spec in subject.armed if spec.name not in kept]
    subject.cancelled -= kept


def _columns(row: Any) -> dict[str, Any]:
    """A row's columns by name: a loaded row's, or those of an object or timer as a transition left it in memory
    (a batch of firings carries an object from one of its timers to the next)."""
    return dict(row._mapping) if hasattr(row, "_mapping") else dict(vars(row))


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
