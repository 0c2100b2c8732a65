"""Which definition a new object starts under (issue 20 item 1): a deployment's choice, with the instant it takes
effect, audited.

An object runs under the definition it records (``workflow``: ``contact@SST-mpox-7.1``) all its life. Which one a
*new* case, contact or course starts under is the kind's **default in force** at the instant it is made: the row of
``workflow_defaults`` of the kind with the latest ``effective_from`` at or before that instant (of two from the same
instant, the one set later), else the product's own definition (``workflows.registry.WORKFLOWS``). An admin sets
one with ``set_default`` (``mpoxflow workflow default KIND NAME --from INSTANT``): from now, or from a later instant
(a change planned ahead, say for the Monday a revised guideline takes effect), never from an earlier one: the objects
made since started under the default in force then, and the history of what was in force is not rewritten. Each
setting is one row, audited on its own chain (object kind ``workflow_default``, trigger ``set``; rule None: it is a
deployment's decision, not a rule of the guideline). A setting is never changed or removed: a later one replaces
it, and one set for the same instant as a planned one replaces that before it takes effect.

A creation (``Commands.open``, and an object spawned by a transition) reads the default in force with one indexed
query (``for_new``), once per unit of work and kind (a bulk import's batch reads it once for all its rows), and
refuses (exit 3, nothing written) when it names a definition this process has not loaded (``MPOXFLOW_DEFINITIONS``).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from engine.uow import ADMIN_ROLES, Runtime, UnitOfWork, unit_of_work
from engine.views import instant, jsonable
from persistence.audit import Head
from persistence.repository import Repository, format_id, not_found
from workflows.definition import WorkflowDefinition
from workflows.errors import RuleRefused, UsageError, because
from workflows.limits import check_instant, check_text, shown
from workflows.registry import BY_NAME, WORKFLOWS, definitions_of

log = structlog.get_logger("mpoxflow.engine")

#: The object kind of a setting's audit chain (``audit_log.object_kind``) and of its id (``workflow_default-1``).
KIND = "workflow_default"
#: What a setting is at an instant: the one new objects start under, one planned to take over later, one a later
#: one took over from, or one replaced (by a setting for the same instant) before it ever took effect.
STATUSES = ("in force", "scheduled", "ended", "superseded")


@dataclass(frozen=True)
class InForce:
    """The default of a kind as one read found it: its definition's name, from when (None: the product's, from the
    start) and until when (None: nothing set after it)."""

    name: str
    since: datetime | None
    until: datetime | None

    def holds_at(self, now: datetime) -> bool:
        return (self.since is None or self.since <= now) and (self.until is None or now < self.until)


def in_force(repo: Repository, kind: str, now: datetime) -> InForce:
    """The default of ``kind`` in force at ``now`` (one indexed query)."""
    row = repo.workflow_default_at(kind, now)
    if row.definition is None:
        return InForce(WORKFLOWS[kind].name, None, row.until)
    return InForce(row.definition, row.effective_from, row.until)


def default_for(repo: Repository, kind: str, now: datetime) -> str:
    """The name of the definition a new ``kind`` object made at ``now`` starts under."""
    return in_force(repo, kind, now).name


def for_new(uow: UnitOfWork, kind: str, now: datetime) -> WorkflowDefinition:
    """The definition a new ``kind`` object made at ``now`` in this unit of work starts under: the default in force,
    read once per unit of work (a batch's units share it) while it holds. RuleRefused (nothing is written) when it
    names a definition this process has not loaded."""
    found: InForce | None = uow.defaults.get(kind)
    if found is None or not found.holds_at(now):
        found = uow.defaults[kind] = in_force(uow.repo, kind, now)
    definition = BY_NAME.get(found.name)
    if definition is None or definition.kind != kind:
        raise RuleRefused(because(
            "new %(kind)s objects start under %(definition)s since %(since)s (`mpoxflow workflow defaults`), which "
            "this process has not loaded, so nothing was written: start it with MPOXFLOW_DEFINITIONS naming that "
            "definition (module:ATTRIBUTE), or ask an admin to set another default (`mpoxflow workflow default`)",
            kind=kind, definition=found.name, since=instant(found.since) or "-"), key="definition_not_loaded")
    return definition


def check_kind(kind: str) -> str:
    """UsageError unless ``kind`` is a kind of workflow object."""
    if kind not in WORKFLOWS:
        raise UsageError(because("'%(kind)s' is no kind of object: use case, contact or course (⟦kind⟧)",
                                 kind=shown(kind)))
    return kind


def check_definition(kind: str, name: str) -> WorkflowDefinition:
    """The loaded definition of ``kind`` named ``name``; UsageError, listing the loaded ones of the kind, for a
    name this process has not loaded or a definition of another kind."""
    check_text(name, "definition")
    loaded = [d.name for d in definitions_of(kind)]
    definition = BY_NAME.get(name)
    if definition is None:
        raise UsageError(because(
            "%(name)s is no %(kind)s definition loaded here: use one of %(loaded)s (⟦definition⟧), or load it "
            "first with MPOXFLOW_DEFINITIONS (module:ATTRIBUTE; `mpoxflow workflow list` shows what is loaded)",
            name=shown(name), kind=kind, loaded=loaded))
    if definition.kind != kind:
        raise UsageError(because("%(name)s is a %(other)s definition, not a %(kind)s one: use one of %(loaded)s "
                                 "(⟦definition⟧)", name=name, other=definition.kind, kind=kind, loaded=loaded))
    return definition


def _statuses(rows: builtins.list[Any], now: datetime) -> tuple[builtins.list[str], bool]:
    """Each of one kind's rows' status at ``now`` (rows by effective_from, then id), and whether the product's
    definition is the one in force (no row in force yet)."""
    current = None
    for i, row in enumerate(rows):
        if row.effective_from <= now:
            current = i
    statuses = []
    for i, row in enumerate(rows):
        if i == current:
            statuses.append("in force")
        elif any(later.effective_from == row.effective_from for later in rows[i + 1:]):
            statuses.append("superseded")
        elif row.effective_from > now:
            statuses.append("scheduled")
        else:
            statuses.append("ended")
    return statuses, current is None


def setting_view(row: Any, status: str) -> dict[str, Any]:
    """One setting as listed: who set it, when, why (its audit entry's), from when it holds and its status now."""
    return {"id": format_id(KIND, row.id), "kind": row.kind, "definition": row.definition,
            "effective_from": instant(row.effective_from), "status": status, "in_force": status == "in force",
            "loaded": row.definition in BY_NAME, "product": False, "set_at": instant(row.created_at),
            "set_by": row.actor, "reason": row.reason}


def product_view(kind: str, current: bool) -> dict[str, Any]:
    """The product's own definition of ``kind``, the default from the start until a setting takes over."""
    return {"id": None, "kind": kind, "definition": WORKFLOWS[kind].name, "effective_from": None,
            "status": "in force" if current else "ended", "in_force": current, "loaded": True, "product": True,
            "set_at": None, "set_by": None, "reason": None}


def history(repo: Repository, now: datetime) -> builtins.list[dict[str, Any]]:
    """Every kind's defaults: the product's first, then each setting by the instant it takes effect (then in the
    order set), each with its status at ``now``; exactly one of each kind is in force."""
    by_kind: dict[str, builtins.list[Any]] = {kind: [] for kind in WORKFLOWS}
    for row in repo.workflow_defaults():
        by_kind.setdefault(row.kind, []).append(row)
    views = []
    for kind, rows in by_kind.items():
        statuses, product = _statuses(rows, now)
        if kind in WORKFLOWS:
            views.append(product_view(kind, product))
        views.extend(setting_view(row, status) for row, status in zip(rows, statuses, strict=True))
    return views


def setting(repo: Repository, pk: int, now: datetime) -> dict[str, Any]:
    """One setting with its status at ``now`` (``show workflow_default-N``). NotFound."""
    row = repo.workflow_default(pk)
    if row is None:
        raise not_found(format_id(KIND, pk), KIND)
    rows = [r for r in repo.workflow_defaults() if r.kind == row.kind]
    statuses, _ = _statuses(rows, now)
    return setting_view(row, statuses[[r.id for r in rows].index(pk)])


class Definitions:
    """Setting and reading the definitions new objects start under."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def set_default(self, kind: str, name: str, *, effective_from: datetime | None = None, actor: str,
                    reason: str | None = None) -> dict[str, Any]:
        """New ``kind`` objects start under the definition ``name`` from ``effective_from`` (None: now; an
        instant with an offset, not before now). Admins only. Returns the setting's view. UsageError (nothing
        read) for an unknown kind, a definition not loaded here or of another kind, an instant without an offset
        or out of range, a reason too long; UsageError for an instant before now; RuleRefused when that
        definition is in force from that instant already; NotPermitted (audited) for anyone but an admin."""
        check_kind(kind)
        check_definition(kind, name)
        if reason is not None:
            check_text(reason, "reason")
        if effective_from is not None:
            if effective_from.tzinfo is None:
                raise UsageError(because("⟦effective_from⟧ %(from)s has no offset: give an instant with one",
                                         **{"from": effective_from.isoformat()}))
            check_instant(effective_from, "⟦effective_from⟧")
        with unit_of_work(self.runtime, actor, "workflow default", None, ADMIN_ROLES) as uow:
            now = uow.now()
            since = now if effective_from is None else effective_from
            if since < now:
                raise UsageError(because(
                    "⟦effective_from⟧ %(from)s is before now (%(now)s): the objects made since started under the "
                    "default in force then, and what was in force is not rewritten; give an instant from now on, "
                    "or leave ⟦effective_from⟧ out for now", **{"from": instant(since), "now": instant(now)}))
            before = default_for(uow.repo, kind, since)
            if before == name:
                raise RuleRefused(because("new %(kind)s objects start under %(definition)s from %(from)s already: "
                                          "nothing to change (`mpoxflow workflow defaults`)",
                                          kind=kind, definition=name, **{"from": instant(since)}),
                                  key="default_unchanged")
            values = {"kind": kind, "definition": name, "effective_from": since, "created_at": now}
            pk = uow.repo.insert_workflow_default({**values, "audit_pos": None, "audit_seq": None,
                                                   "audit_hash": None})
            head = uow.audit(
                Head.of(None), kind=KIND, pk=pk, workflow=None, trigger="set", from_state=None, to_state=None,
                actor=uow.actor, reason=reason, now=now, rule=None,
                data={"kind": kind, "definition": name, "effective_from": instant(since), "before": before},
                changes=jsonable(values))
            uow.save_clock()
            view = setting(uow.repo, pk, now)
            uow.commit()
        log.info("workflow_default_set", default=format_id(KIND, pk), kind=kind, definition=name,
                 effective_from=instant(since), audit_seq=head.seq)
        return {**view, "audit_seq": head.seq, "before": before}

    def defaults(self) -> builtins.list[dict[str, Any]]:
        """Every kind's defaults now (``history``)."""
        with self.runtime.db.reading() as session:
            return history(Repository(session), self.runtime.clock.now())

    def in_force(self) -> dict[str, str]:
        """The name of the definition each kind's new objects start under now."""
        now = self.runtime.clock.now()
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            return {kind: default_for(repo, kind, now) for kind in WORKFLOWS}

