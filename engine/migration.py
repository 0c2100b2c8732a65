"""Moving open objects to a later workflow definition (``workflow migrate``, issue 20 item 2).

A definition that may take over the open objects of another declares it (``migrates_from``), the state each of that
one's states maps to (``state_map``; None: not migrated, the object finishes under its own rules) and an internal
``migrated`` transition: its guards are the new rules' conditions on an object's facts, its effect arms the timers
the new rules compute from the facts and the clock (``timers_from_facts`` of each workflow). ``Migrations.migrate``
runs that transition on every open object of the old definition (or those ``--where`` selects), through the one
transition path (``Commands.transition`` with ``migrate_to``): per object, one audited transition ``migrated``
(from and to definition, the state, the facts and timers it changed), all of it or nothing (a savepoint each). An
object that cannot move (no state to map to, a guard of the new rules refusing its facts) is left untouched and
reported with the reason. A dry run runs exactly the same and rolls it all back: its report is the real run's.

Concurrency: on PostgreSQL each object is first locked as a worker locks it before claiming its timers (an advisory
lock per object): a worker firing one of its timers finishes first, and none claims one until the object's batch
commits, by when the timers the migration cancelled are cancelled; so nothing fires twice, and nothing fires under
the definition the object left. On SQLite the batch's writing transaction holds the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from engine.commands import Commands
from engine.uow import ADMIN_ROLES, Runtime, UnitOfWork, unit_of_work
from engine.views import instant
from persistence.database import translate_errors
from persistence.repository import Repository, format_id, parse_id
from workflows.definition import MIGRATED, WorkflowDefinition
from workflows.errors import Conflict, GuardRefused, NotFound, RuleRefused, TriggerNotAllowed, UsageError, because
from workflows.limits import check_text, shown
from workflows.registry import BY_NAME

log = structlog.get_logger("mpoxflow.engine")

#: Objects migrated per transaction: on PostgreSQL each holds an advisory lock until its batch commits (the shared
#: lock table holds 64 per connection by default, more when others hold fewer), so batches stay small there.
BATCH = {"postgresql": 50, "sqlite": 500}
#: How often one object is tried again when a concurrent change (staff, a worker) wrote it first.
ATTEMPTS = 3
WHERE_FIELDS = ("state", "id", "unit")


@dataclass(frozen=True)
class Where:
    """Which of the old definition's open objects to migrate (``--where state=monitored``, ``id=contact-3,...``,
    ``unit=unit-2,...``; several conditions: all of them)."""

    states: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    units: tuple[int, ...] = ()
    given: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, conditions: Sequence[str], definition: WorkflowDefinition) -> Where:
        """``FIELD=VALUE[,VALUE...]`` conditions, each checked against ``definition`` (the one migrated from).
        UsageError naming ⟦where⟧ for anything else."""
        found: dict[str, list[str]] = {}
        for condition in conditions:
            name, sep, values = (part.strip() for part in condition.partition("="))
            items = [v.strip() for v in values.split(",") if v.strip()]
            if not sep or name not in WHERE_FIELDS or not items:
                raise UsageError(because("⟦where⟧ '%(condition)s' is not a condition: give FIELD=VALUE[,VALUE...] "
                                         "with FIELD one of %(fields)s (state=monitored, id=contact-3,contact-7, "
                                         "unit=unit-2)", condition=shown(condition), fields=list(WHERE_FIELDS)))
            if name in found:
                raise UsageError(because("⟦where⟧ names %(field)s twice: give its values once, comma-separated",
                                         field=name))
            found[name] = items
        for state in found.get("state", []):
            if state not in definition.states:
                raise UsageError(because("⟦where⟧ state=%(state)s: %(name)s has no such state; its states are "
                                         "%(states)s", state=shown(state), name=definition.name,
                                         states=list(definition.states)))
            if state in definition.final:
                raise UsageError(because("⟦where⟧ state=%(state)s is a final state of %(name)s: an object there "
                                         "has ended and is never migrated", state=state, name=definition.name))
        ids = tuple(_id_of(text, definition.kind, "id") for text in found.get("id", []))
        units = tuple(_id_of(text, "unit", "unit") for text in found.get("unit", []))
        return cls(states=tuple(found.get("state", [])), ids=ids, units=units, given=tuple(conditions))


@dataclass
class _Run:
    source: WorkflowDefinition
    target: WorkflowDefinition
    dry_run: bool
    reason: str
    migrated: list[dict[str, Any]] = field(default_factory=list)
    not_migrated: list[dict[str, Any]] = field(default_factory=list)


class Migrations:
    """``workflow migrate``: open objects moved from one definition to a later one, with a per-object report."""

    def __init__(self, runtime: Runtime, commands: Commands) -> None:
        self.runtime = runtime
        self.commands = commands

    def check_loaded(self) -> dict[str, int]:
        """Every definition the database's objects run under is loaded in this process (the worker checks at
        start: it never fires a timer under a definition other than its object's, and one it cannot load would
        only fail). Returns the objects per definition; UsageError naming the ones missing."""
        with self.runtime.db.reading() as session:
            in_use = Repository(session).definitions_in_use()
        missing = sorted(name for name in in_use if name not in BY_NAME)
        if missing:
            raise UsageError(because("objects run under %(missing)s, which this process has not loaded: load them "
                                     "with MPOXFLOW_DEFINITIONS (as every process of the deployment does) and start "
                                     "again", missing=missing))
        return in_use

    def migrate(self, source: str, target: str, *, where: Sequence[str] = (), dry_run: bool = False, actor: str,
                reason: str | None = None) -> dict[str, Any]:
        """Migrate the open objects under ``source`` (a definition's name) that ``where`` selects to ``target``;
        with ``dry_run`` write nothing and report the same. Admins only (NotPermitted, audited). UsageError for
        an unknown definition or condition, RuleRefused when ``target`` does not declare a migration from
        ``source``. Returns the report: each object migrated (its states, the facts it changed, the timers
        cancelled, armed and kept), each object not migrated with its reason, and the counts."""
        if reason is not None:
            check_text(reason, "reason")
        old, new = _definition(source, "from"), _definition(target, "to")
        chosen = Where.parse(where, old)
        if new.migrates_from is not old:
            declared = new.migrates_from.name if new.migrates_from is not None else None
            raise RuleRefused(
                because("%(new)s declares no migration from %(old)s (it migrates from %(declared)s): a definition "
                        "says which one's objects it takes over and how their states map (migrates_from, "
                        "state_map)", new=new.name, old=old.name, declared=declared or "none"),
                rule=_rule(new))
        run = _Run(old, new, dry_run, reason or f"workflow migrate {old.name} → {new.name}")
        command = "workflow migrate"
        with unit_of_work(self.runtime, actor, command, old.name, roles=ADMIN_ROLES) as uow:
            pks = uow.repo.objects_under(old.kind, old.name, exclude_states=tuple(old.final), states=chosen.states,
                                         pks=chosen.ids, units=chosen.units)
            now = uow.now()
            size = BATCH[self.runtime.db.backend]
            self._batch(uow, run, pks[:size], now)
            if not dry_run:
                uow.save_clock()
                uow.commit()
        for start in range(size, len(pks), size):
            with unit_of_work(self.runtime, actor, command, old.name, roles=ADMIN_ROLES) as uow:
                self._batch(uow, run, pks[start:start + size], now)
                if not dry_run:
                    uow.commit()
        log.info("workflow_migrated", source=old.name, target=new.name, dry_run=dry_run,
                 migrated=len(run.migrated), not_migrated=len(run.not_migrated))
        return {
            "from": old.name, "to": new.name, "kind": old.kind, "dry_run": dry_run, "at": instant(now),
            "where": list(chosen.given),
            "counts": {"considered": len(pks), "migrated": len(run.migrated),
                       "not_migrated": len(run.not_migrated)},
            "migrated": run.migrated, "not_migrated": run.not_migrated,
        }

    def _batch(self, uow: UnitOfWork, run: _Run, pks: Sequence[int], now: datetime) -> None:
        if self.runtime.db.backend == "postgresql" and not run.dry_run:
            # Each object locked as a worker locks it (in id order, as they are migrated), the whole batch in one
            # statement before the first is read; held until the batch commits, through a retry's savepoint too.
            uow.repo.lock_objects_for_firing(run.source.kind, pks)
        for pk in pks:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    with translate_errors(), uow.savepoint():
                        self._one(uow, run, pk, now)
                    break
                except Conflict as error:
                    if attempt == ATTEMPTS:
                        run.not_migrated.append(_refused(run.source.kind, pk, None, str(error), None))

    def _one(self, uow: UnitOfWork, run: _Run, pk: int, now: datetime) -> None:
        """One object, inside its savepoint (locked with its batch, on PostgreSQL): read again, mapped, moved."""
        kind, repo = run.source.kind, uow.repo
        row = repo.load_object(kind, pk)
        label = format_id(kind, pk)
        if row.workflow != run.source.name or row.state in run.source.final:
            # Moved or ended meanwhile (another migration, a timer): nothing to do, and said so.
            run.not_migrated.append(_refused(kind, pk, row.state, because(
                "%(object)s is no longer open under %(old)s (it is %(state)s under %(workflow)s)", object=label,
                old=run.source.name, state=row.state, workflow=row.workflow), None))
            return
        mapped = run.target.state_map.get(row.state)
        if mapped is None:
            run.not_migrated.append(_refused(kind, pk, row.state, because(
                "%(new)s maps no state to %(state)s: %(object)s finishes under %(old)s", new=run.target.name,
                state=row.state, object=label, old=run.source.name), None))
            return
        timers = repo.object_timers(kind, pk)
        before = {t.id: t for t in timers if t.status == "pending"}
        try:
            changed = self.commands.transition(
                uow, definition=run.target, kind=kind, row=row, timers=timers, trigger=MIGRATED,
                data={"from_definition": run.source.name, "to_definition": run.target.name}, actor=uow.actor,
                reason=run.reason, now=now, migrate_to=mapped,
            )
        except (GuardRefused, TriggerNotAllowed) as refused:
            # Raised inside the savepoint's block would roll it back; here nothing was written yet that matters:
            # the caller's savepoint ends clean, the object untouched.
            run.not_migrated.append(_refused(kind, pk, row.state, str(refused), refused.rule))
            return
        after = {t.id: t for t in changed.timers}
        run.migrated.append({
            "object": label, "from_state": row.state, "to_state": changed.obj.state,
            "changes": {k: v for k, v in (changed.changes or {}).items() if k not in ("workflow", "state")},
            "cancelled": [_timer(t) for t in before.values() if after[t.id].status == "cancelled"],
            "armed": [{"name": t.name, "due_at": instant(t.due_at), "task": t.task}
                      for t in changed.timers if t.id not in before and t.status == "pending"],
            "kept": [_timer(t) for t in before.values() if after[t.id].status == "pending"],
            "audit_seq": None if run.dry_run else changed.audit_seq,
        })


def _id_of(text: str, kind: str, name: str) -> int:
    try:
        return parse_id(text, kind=kind)[1]
    except (NotFound, UsageError):
        raise UsageError(because("⟦where⟧ %(field)s=%(value)s: give ids of %(kind)s objects (%(kind)s-N), "
                                 "comma-separated", field=name, value=shown(text), kind=kind)) from None


def _definition(name: str, which: str) -> WorkflowDefinition:
    found = BY_NAME.get(name)
    if found is not None:
        return found
    if which == "from":
        raise UsageError(because("⟦from⟧ %(name)s is not a workflow definition loaded here: use one of %(names)s "
                                 "(`mpoxflow workflow list`; a deployment loads its own with MPOXFLOW_DEFINITIONS)",
                                 name=shown(name), names=sorted(BY_NAME)))
    raise UsageError(because("⟦to⟧ %(name)s is not a workflow definition loaded here: use one of %(names)s "
                             "(`mpoxflow workflow list`; a deployment loads its own with MPOXFLOW_DEFINITIONS)",
                             name=shown(name), names=sorted(BY_NAME)))


def _rule(definition: WorkflowDefinition) -> str | None:
    spec = next((s for s in definition.transitions if s.trigger == MIGRATED), None)
    return spec.rule if spec is not None else None


def _timer(timer: Any) -> dict[str, Any]:
    return {"timer": format_id("timer", timer.id), "name": timer.name, "due_at": instant(timer.due_at)}


def _refused(kind: str, pk: int, state: str | None, reason: str, rule: str | None) -> dict[str, Any]:
    return {"object": format_id(kind, pk), "state": state, "reason": str(reason), "rule": rule}
