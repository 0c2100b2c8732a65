"""The organisation's operations (issue 17), each one unit of work: units and memberships (admins), placement
rules (admins), assignment and transfer (leads; members for their own work), breaking the glass (staff reading an
object outside their units, with a reason). The rules themselves are in ``engine.units``."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import structlog

from engine import units
from engine.uow import ACTING_ROLES, ADMIN_ROLES, Runtime, unit_of_work
from persistence.audit import Head
from persistence.models import OBJECT_MODELS
from persistence.repository import Repository, format_id, parse_id
from workflows.errors import UsageError, because
from workflows.limits import check_text

log = structlog.get_logger("mpoxflow.engine")
#: Who may read units and placement rules: everyone who reads.
READING_ROLES = ("staff", "admin", "auditor")


def _check_reason(reason: str | None) -> None:
    """UsageError for a reason too long or with control characters, before anything is read."""
    if reason is not None:
        check_text(reason, "reason")


class Organisation:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # ---- units ---------------------------------------------------------------------------------------------

    def add_unit(self, name: str, *, parent: str, actor: str, reason: str | None = None) -> dict[str, Any]:
        """A new unit under ``parent`` (a name or ``unit-N``). Admins only."""
        _check_reason(reason)
        with unit_of_work(self.runtime, actor, "unit add", None, ADMIN_ROLES) as uow:
            view = units.add_unit(uow, name, parent, reason)
            uow.commit()
        return view

    def check_units(self, given: Sequence[str]) -> None:
        """UsageError or NotFound for units a new user could not join (before a password is asked for)."""
        with self.runtime.db.reading() as session:
            units.memberships_from(units.UnitTree.load(Repository(session)), given)

    def list_units(self) -> builtins.list[dict[str, Any]]:
        """Every unit, depth first from the root (siblings by name), with its members and their roles there."""
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            tree = units.UnitTree.load(repo)
            members: dict[int, builtins.list[Any]] = {}
            for m in repo.memberships():
                members.setdefault(m.unit_id, []).append(m)
        return [units.unit_view(tree, pk, members.get(pk, ())) for pk in tree.ordered()]

    def set_member(self, unit: str, user: str, *, role: str = "member", actor: str,
                   reason: str | None = None) -> dict[str, Any]:
        _check_reason(reason)
        with unit_of_work(self.runtime, actor, "unit member", None, ADMIN_ROLES) as uow:
            view = units.set_member(uow, unit, user, role, reason)
            uow.commit()
        return view

    def remove_member(self, unit: str, user: str, *, actor: str, reason: str | None = None) -> dict[str, Any]:
        _check_reason(reason)
        with unit_of_work(self.runtime, actor, "unit leave", None, ADMIN_ROLES) as uow:
            view = units.remove_member(uow, unit, user, reason)
            uow.commit()
        return view

    def placements(self) -> builtins.list[dict[str, Any]]:
        """Where each kind's new objects go (``engine.units``)."""
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            tree = units.UnitTree.load(repo)
            rows = repo.placements()
        return [units.placement_view(tree, kind, rows[kind]) for kind in OBJECT_MODELS if kind in rows]

    def set_placement(self, kind: str, rule: str, *, unit: str | None = None, round_robin: bool | None = None,
                      actor: str, reason: str | None = None) -> dict[str, Any]:
        _check_reason(reason)
        with unit_of_work(self.runtime, actor, "unit rule", None, ADMIN_ROLES) as uow:
            view = units.set_placement(uow, kind, rule, unit, round_robin, reason)
            uow.commit()
        return view

    # ---- assignment ----------------------------------------------------------------------------------------

    def assign(self, ids: Sequence[str] = (), *, unit: str | None = None, user: str | None = None,
               kind: str | None = None, states: Sequence[str] = (), in_unit: str | None = None,
               unassigned: bool = False, of_user: str | None = None, limit: int = units.MAX_BULK,
               actor: str, reason: str | None = None) -> builtins.list[dict[str, Any]]:
        """Assign objects (by id, or every one a filter selects within the actor's units) to ``user`` (a member
        of the unit; None: the unit's pool), within ``unit`` (default: each one's own). All or nothing."""
        return self._move(ids, unit=unit, user=user, kind=kind, states=states, in_unit=in_unit,
                          unassigned=unassigned, of_user=of_user, limit=limit, actor=actor, reason=reason,
                          transfer=False)

    def transfer(self, ids: Sequence[str] = (), *, unit: str | None, user: str | None = None, kind: str | None = None,
                 states: Sequence[str] = (), in_unit: str | None = None, unassigned: bool = False,
                 of_user: str | None = None, limit: int = units.MAX_BULK, actor: str,
                 reason: str | None = None) -> builtins.list[dict[str, Any]]:
        """Hand objects over to another unit (any unit: another region's), to its pool or to one of its members."""
        return self._move(ids, unit=unit, user=user, kind=kind, states=states, in_unit=in_unit,
                          unassigned=unassigned, of_user=of_user, limit=limit, actor=actor, reason=reason,
                          transfer=True)

    def _move(self, ids: Sequence[str], *, transfer: bool, actor: str, reason: str | None,
              **given: Any) -> builtins.list[dict[str, Any]]:
        if reason is not None:
            check_text(reason, "reason")
        selection = units.Selection(ids=tuple(ids), kind=given["kind"], states=tuple(given["states"]),
                                    in_unit=given["in_unit"], unassigned=given["unassigned"],
                                    of_user=given["of_user"], limit=given["limit"])
        command = "transfer" if transfer else "assign"
        target = ids[0] if len(ids) == 1 else None
        with unit_of_work(self.runtime, actor, command, target, ACTING_ROLES) as uow:
            done = units.assign(uow, selection, unit=given["unit"], user=given["user"], reason=reason,
                                transfer=transfer)
            uow.save_clock()
            uow.commit()
        return done

    # ---- breaking the glass --------------------------------------------------------------------------------

    def break_glass(self, object_id: str, *, actor: str, reason: str | None) -> bool:
        """Record that ``actor`` reads an object outside their units, and why, on the object's chain (trigger
        ``break_glass``, nothing changed). Returns False (nothing recorded) when the object is theirs to read
        anyway. UsageError without a reason; NotFound."""
        if not (reason or "").strip():
            raise UsageError(because("reading an object outside your units needs the reason: give it with "
                                     "⟦break_glass⟧; it goes into the object's audit log"))
        assert reason is not None
        check_text(reason, "reason")
        kind, pk = parse_id(object_id)
        if kind == "timer":
            with self.runtime.db.reading() as session:
                timer = Repository(session).timer_row(pk)
            kind, pk = timer.object_kind, timer.object_id
        if kind not in OBJECT_MODELS:
            return False
        with unit_of_work(self.runtime, actor, "break glass", format_id(kind, pk), ACTING_ROLES) as uow:
            row = uow.repo.load_object(kind, pk)
            scope = uow.scope()
            if scope is None or scope.covers(row.unit_id):
                return False
            now = uow.now()
            head = uow.audit(
                Head.of(row), kind=kind, pk=pk, workflow=row.workflow, trigger="break_glass",
                from_state=row.state, to_state=row.state, actor=uow.actor, reason=reason.strip(), now=now,
                rule=None, data={"read": format_id(kind, pk), "unit": format_id("unit", row.unit_id)},
                changes=None, unit=scope.home,
            )
            uow.save_clock()
            uow.commit()
        log.warning("break_glass", object=format_id(kind, pk), user=format_id("user", scope.user_id or 0),
                    audit_seq=head.seq)
        return True
