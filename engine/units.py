"""Many hands (issue 17): the tree of units, who belongs to which, where a new object goes, whose work it is, and
who may see and act on it.

**Access by unit.** A user's *scope* is every unit they are a member of and every unit below those. Staff and
admins see and act on the cases, contacts and courses of their scope; reading one outside it needs a reason
(``show ID --break-glass REASON``: "breaking the glass"), which is appended to the object's own chain, and acting
on one outside it is refused (exit 3, 403), the refusal audited on the user's chain. Auditors read everything and
change nothing; the scheduler's timers act everywhere. Persons are the shared register (a contact may be a case
elsewhere): any staff member may look one up and register one, but sees only the objects of their scope.

**Whose work.** Every object belongs to a unit and may be assigned to a member of that unit. A new object goes to
the unit its kind's *placement* rule names (``unit rules``): ``parent`` (the unit of the case a contact belongs to,
of the contact a course belongs to, of the contact whose symptoms opened a case; else the creator's unit),
``creator`` (the creating user's first unit) or ``unit`` (a configured unit); with round-robin on, it is assigned
to the unit's member who has waited longest for one. ``assign`` and ``transfer`` change the unit and the assignee
as audited transitions that change no clinical state (trigger ``assign`` / ``transfer``, the state unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from persistence.audit import Head
from persistence.models import MEMBERSHIP_ROLES, OBJECT_MODELS, PLACEMENT_RULES, ROOT_UNIT
from persistence.repository import Repository, format_id, parse_id
from workflows.errors import Conflict, NotFound, NotPermitted, OutsideUnits, RuleRefused, UsageError, because
from workflows.limits import MAX_LIMIT, check_text, shown
from workflows.registry import WORKFLOWS

#: ``engine.uow.UnitOfWork`` and ``engine.uow.Actor``: not imported, since ``engine.uow`` imports this module (its
#: scopes); the functions here take the caller's unit of work and actor as they are.
UnitOfWork = Any
Actor = Any

log = structlog.get_logger("mpoxflow.engine")

#: The section every assignment cites: the guideline names who does what (STPS traces contacts, the regions'
#: infection-medicine departments treat and vaccinate), not which person; the unit records which team.
ASSIGN_RULE = "SST-mpox-7.1 §5.5"
#: Where each kind's objects are, and what they belong to (the ``parent`` rule reads the parent's unit).
PARENT_OF = {"contact": "case", "course": "contact"}
#: The most objects one bulk assignment changes (it is one transaction).
MAX_BULK = 1000


@dataclass(frozen=True)
class UnitTree:
    """Every unit: its parent and name."""

    parent: dict[int, int | None]
    names: dict[int, str]

    @classmethod
    def load(cls, repo: Repository) -> UnitTree:
        rows = repo.units()
        return cls({r.id: r.parent_id for r in rows}, {r.id: r.name for r in rows})

    def ancestors(self, unit: int) -> list[int]:
        """The unit, its parent, ..., the root."""
        found: list[int] = []
        current: int | None = unit
        while current is not None and current not in found:
            found.append(current)
            current = self.parent.get(current)
        return found

    def below(self, unit: int) -> set[int]:
        """The unit and every unit under it."""
        children: dict[int | None, list[int]] = {}
        for pk, parent in self.parent.items():
            children.setdefault(parent, []).append(pk)
        found, todo = set(), [unit]
        while todo:
            current = todo.pop()
            if current in found:
                continue
            found.add(current)
            todo.extend(children.get(current, ()))
        return found

    def path(self, unit: int) -> str:
        """``Danmark › Region Hovedstaden › Hvidovre vaccination``."""
        return " › ".join(self.names.get(u, format_id("unit", u)) for u in reversed(self.ancestors(unit)))

    def depth(self, unit: int) -> int:
        return len(self.ancestors(unit)) - 1

    def ordered(self) -> list[int]:
        """Every unit, depth first from the root, siblings by name: the order a tree is shown in."""
        children: dict[int | None, list[int]] = {}
        for pk, parent in self.parent.items():
            children.setdefault(parent, []).append(pk)
        out: list[int] = []

        def walk(parent: int | None) -> None:
            for pk in sorted(children.get(parent, ()), key=lambda u: self.names[u].casefold()):
                out.append(pk)
                walk(pk)

        walk(None)
        return out

    def find(self, given: str, option: str = "unit") -> int:
        """A unit by its name or its id (``unit-3``). NotFound otherwise, with the next step; UsageError for a text
        no name can be (too long, control characters), not echoed."""
        text = check_text(given.strip(), option)
        if text.startswith("unit-"):
            _, pk = parse_id(text, kind="unit")
            if pk in self.names:
                return pk
        else:
            for pk, name in self.names.items():
                if name == text:
                    return pk
            for pk, name in self.names.items():
                if name.casefold() == text.casefold():
                    return pk
        raise NotFound(shown(given), "unit", hint=because(
            "no unit is named so (⟦%(option)s⟧): `mpoxflow unit list` shows the units", option=option))


@dataclass(frozen=True)
class Scope:
    """What one user may see and act on: their memberships (unit: role) and the units they and those below
    make; ``units`` None: every unit (auditors read everything, timers act everywhere)."""

    user_id: int | None
    name: str
    role: str
    memberships: dict[int, str]
    units: frozenset[int] | None
    #: The unit tree, or how to read it: a member of the root alone (or an auditor, a timer) needs it only for
    #: names and paths, so it is read on first use.
    loaded: UnitTree | Callable[[], UnitTree] = field(repr=False)

    @property
    def tree(self) -> UnitTree:
        if not isinstance(self.loaded, UnitTree):
            object.__setattr__(self, "loaded", self.loaded())
        assert isinstance(self.loaded, UnitTree)
        return self.loaded

    @property
    def everything(self) -> bool:
        return self.units is None

    @property
    def home(self) -> int | None:
        """The user's first unit: the one their entries record when no object decides, where what they create
        goes by the ``creator`` rule."""
        return next(iter(self.memberships), None)

    def covers(self, unit: int | None) -> bool:
        return self.units is None or (unit or ROOT_UNIT) in self.units

    def via(self, unit: int) -> int | None:
        """The user's unit that gives access to ``unit``: the nearest membership at or above it."""
        if unit in self.memberships:
            return unit
        if list(self.memberships) == [ROOT_UNIT]:
            return ROOT_UNIT  # the root is above every unit
        for ancestor in self.tree.ancestors(unit):
            if ancestor in self.memberships:
                return ancestor
        return None

    def leads(self, unit: int) -> bool:
        """A lead of the unit or of a unit above it (admins count as leads everywhere in their scope)."""
        if self.role == "admin" and self.covers(unit):
            return True
        if list(self.memberships) == [ROOT_UNIT]:
            return self.memberships[ROOT_UNIT] == "lead"
        return any(self.memberships.get(a) == "lead" for a in self.tree.ancestors(unit))

    def direct(self) -> frozenset[int]:
        """The units the user is a member of (their unassigned pools are theirs to take from)."""
        return frozenset(self.memberships)


def scope_of(repo: Repository, name: str, role: str | None = None, tree: UnitTree | None = None,
             reading: bool = False) -> Scope:
    """The scope of the user ``name`` (read now). The scheduler's and auditors' is everything. NotPermitted for a
    name that is no user (nothing to scope)."""
    check_text(name, "as")
    loaded: UnitTree | Callable[[], UnitTree] = tree or (lambda: UnitTree.load(repo))
    user, rows = repo.memberships_of_name(name)
    if user is None:
        if name.startswith("timer:") or role == "timer":
            return Scope(None, name, "timer", {}, None, loaded)
        raise NotPermitted(
            f"'{name}' is not a user of this database, so nothing can be shown: read as a registered user with "
            "⟦as⟧ (or $MPOXFLOW_ACTOR; `mpoxflow user list` shows who there is)",
            actor=name, role=None, user=None, command="read", target=None)
    if reading and user.disabled_at is not None:
        raise NotPermitted(f"{name} is disabled, so nothing can be shown; ask an admin (`mpoxflow user enable "
                           f"{name}`)", actor=name, role=user.role, user=None, command="read", target=None)
    memberships = {r.unit_id: r.role for r in rows}
    if user.role in ("auditor", "timer") or ROOT_UNIT in memberships:
        units: frozenset[int] | None = None
    else:
        whole = loaded if isinstance(loaded, UnitTree) else loaded()
        loaded = whole
        reach: set[int] = set()
        for unit in memberships:
            reach |= whole.below(unit)
        units = frozenset(reach)
    return Scope(user.id, user.name, user.role, memberships, units, loaded)


def reader_scope(repo: Repository, viewer: str | None) -> Scope | None:
    """What ``viewer`` may read (``Runtime.viewer``); None: everything (no viewer, an auditor, a member of the
    root unit). NotPermitted for a name that is no user, or a disabled one."""
    if viewer is None:
        return None
    scope = scope_of(repo, viewer, reading=True)
    return None if scope.everything else scope


def check_reads(scope: Scope | None, kind: str, pk: int, unit: int | None, *, glass: bool = False,
                command: str = "show") -> None:
    """OutsideUnits when the reader may not read the object of ``unit`` without a reason (``glass``: one was
    given and recorded)."""
    if scope is not None and not glass and not scope.covers(unit):
        raise outside(scope, format_id(kind, pk), unit or ROOT_UNIT, command, reading=True)


def outside(scope: Scope, object_id: str, unit: int, command: str, *, reading: bool) -> OutsideUnits:
    """The refusal of acting on (or reading without a reason) an object outside the user's scope."""
    where = scope.tree.path(unit)
    mine = ", ".join(scope.tree.names.get(u, str(u)) for u in scope.memberships) or "none"
    if reading:
        message = because(
            "%(object)s belongs to %(unit)s, outside your units (%(mine)s): to read it anyway, give the reason "
            "with ⟦break_glass⟧; the reading is recorded in the audit log", object=object_id, unit=where, mine=mine)
    else:
        message = because(
            "%(object)s belongs to %(unit)s, outside your units (%(mine)s), so '%(command)s' was refused: ask "
            "that unit to do it, or its leads to hand it over to yours (`mpoxflow transfer %(object)s`). This "
            "refusal is recorded in the audit log", object=object_id, unit=where, mine=mine, command=command)
    return OutsideUnits(message, actor=scope.name, role=scope.role, user=scope.user_id, command=command,
                        target=object_id)


def check_acts_on(uow: UnitOfWork, kind: str, pk: int, unit: int | None, command: str) -> None:
    """OutsideUnits (audited on the user's chain once rolled back) when the unit's actor may not act on an object
    of ``unit``."""
    scope = uow.scope()
    if scope is not None and not scope.covers(unit):
        raise outside(scope, format_id(kind, pk), unit or ROOT_UNIT, command, reading=False)


def acting_unit(uow: UnitOfWork, actor: Actor, object_unit: int | None) -> int | None:
    """The unit an entry records for ``actor`` (the audit log's ``unit_id``): a timer acts for the object's unit;
    a user through their unit that gives access to the object (else their first unit)."""
    if actor.role == "timer":
        return object_unit
    scope: Scope | None = uow.scope(actor)
    if scope is None:
        return object_unit
    if object_unit is not None:
        via = scope.via(object_unit)
        if via is not None:
            return via
    return scope.home


def place(uow: UnitOfWork, kind: str, actor: Actor, parent_unit: int | None, now: datetime) -> tuple[int, int | None]:
    """Where a new object of ``kind`` goes, and to whom (round-robin), by the kind's placement rule."""
    rule = uow.repo.placements().get(kind)
    scope = uow.scope(actor) if actor.role != "timer" else None
    creator = (scope.home if scope is not None else None) or ROOT_UNIT
    chosen = "parent" if rule is None else rule.rule
    if chosen == "unit":
        unit = rule.unit_id or ROOT_UNIT
    elif chosen == "parent" and parent_unit is not None:
        unit = parent_unit
    else:  # the creator's unit, or the rule parent with nothing to belong to
        unit = creator
    assignee = None
    if rule is not None and rule.round_robin:
        members = [m for m in uow.repo.memberships(unit_pk=unit)
                   if m.disabled_at is None and m.user_role in ("staff", "admin")]
        if members:
            chosen = min(members, key=lambda m: (m.last_assigned_at is not None, m.last_assigned_at or now, m.id))
            uow.repo.update_membership(chosen.id, last_assigned_at=now)
            assignee = chosen.user_id
    return unit, assignee


def parent_unit(repo: Repository, kind: str, data: dict[str, Any] | Any) -> int | None:
    """The unit of the object a new one belongs to (the case of a contact, the contact of a course), if named."""
    parent = PARENT_OF.get(kind)
    if parent is None or not data.get(parent):
        return None
    try:
        _, pk = parse_id(str(data[parent]), kind=parent)
        return int(repo.load_object(parent, pk).unit_id)
    except NotFound:
        return None  # the guards refuse the missing object with their own words


def memberships_from(tree: UnitTree, given: Sequence[str]) -> list[tuple[int, str]]:
    """The units a new user joins, from ``UNIT`` or ``UNIT:lead`` (member by default). None given: the root, when
    it is the only unit there is; else UsageError (a new user's units are chosen, never guessed)."""
    if not given:
        if len(tree.names) == 1:
            return [(ROOT_UNIT, "member")]
        raise UsageError(because("say which unit the new user works in with ⟦unit⟧ (`UNIT`, or `UNIT:lead` for a "
                                 "lead; repeat it for several): `mpoxflow unit list` shows the units"))
    found: dict[int, str] = {}
    for text in given:
        unit, _, role = text.rpartition(":") if text.endswith((":lead", ":member")) else (text, "", "member")
        found[tree.find(unit)] = role
    return list(found.items())


# ---- what admins and leads do -------------------------------------------------------------------------------


def unit_view(tree: UnitTree, pk: int, members: Iterable[Any] = ()) -> dict[str, Any]:
    parent = tree.parent.get(pk)
    return {"id": format_id("unit", pk), "kind": "unit", "name": tree.names[pk],
            "parent": None if parent is None else format_id("unit", parent),
            "parent_name": None if parent is None else tree.names.get(parent), "path": tree.path(pk),
            "depth": tree.depth(pk),
            "members": [{"user": format_id("user", m.user_id), "name": m.name, "role": m.role,
                         "disabled": m.disabled_at is not None} for m in members]}


def check_unit_name(name: str) -> str:
    name = check_text(name.strip(), "name")
    if not name or name.startswith("unit-"):
        raise UsageError(because("'%(name)s' cannot be a unit's name: give 1 to 128 characters, not starting with "
                                 "'unit-' (the units' ids)", name=name))
    return name


def add_unit(uow: UnitOfWork, name: str, parent: str, reason: str | None) -> dict[str, Any]:
    name = check_unit_name(name)
    tree = UnitTree.load(uow.repo)
    parent_pk = tree.find(parent, "parent")
    if uow.repo.unit_by_name(name) is not None or any(n.casefold() == name.casefold() for n in tree.names.values()):
        raise RuleRefused(because("there is already a unit named %(name)s: choose another name (`mpoxflow unit "
                                  "list`)", name=name))
    now = uow.now()
    pk = uow.repo.insert_unit({"name": name, "parent_id": parent_pk, "created_at": now})
    uow.audit(Head.of(None), kind="unit", pk=pk, workflow=None, trigger="add", from_state=None, to_state=None,
              actor=uow.actor, reason=reason, now=now, rule=None,
              data={"parent": format_id("unit", parent_pk)}, changes={"name": name, "parent_id": parent_pk},
              unit=acting_unit(uow, uow.actor, parent_pk))
    log.info("unit_added", unit=format_id("unit", pk), parent=format_id("unit", parent_pk))
    tree.parent[pk], tree.names[pk] = parent_pk, name
    return unit_view(tree, pk)


def set_member(uow: UnitOfWork, unit: str, user_name: str, role: str, reason: str | None) -> dict[str, Any]:
    """Make a user a member of a unit with a role there, or change the role. Audited on the user's chain."""
    if role not in MEMBERSHIP_ROLES:
        raise UsageError(because("'%(role)s' is not a role in a unit: use member or lead (⟦role⟧)", role=shown(role)))
    tree = UnitTree.load(uow.repo)
    unit_pk = tree.find(unit)
    user = uow.repo.user_by_name(check_text(user_name, "user"))
    if user is None or user.role == "timer":
        raise NotFound(shown(user_name), "user", hint="`mpoxflow user list` shows the users")
    current = {m.unit_id: m for m in uow.repo.memberships(user_pk=user.id)}
    now = uow.now()
    if unit_pk in current:
        if current[unit_pk].role == role:
            raise RuleRefused(because("%(user)s is a %(role)s of %(unit)s already: nothing to change",
                                      user=user.name, role=role, unit=tree.names[unit_pk]))
        uow.repo.update_membership(current[unit_pk].id, role=role)
        trigger = "member_role"
    else:
        uow.repo.insert_membership({"user_id": user.id, "unit_id": unit_pk, "role": role, "created_at": now})
        trigger = "join"
    uow.audit(Head.of(uow.repo.head_row("user", user.id)), kind="user", pk=user.id, workflow=None, trigger=trigger,
              from_state=None, to_state=None, actor=uow.actor, reason=reason, now=now, rule=None,
              data={"unit": format_id("unit", unit_pk), "role": role}, changes=None,
              unit=acting_unit(uow, uow.actor, unit_pk))
    log.info("membership_set", user=format_id("user", user.id), unit=format_id("unit", unit_pk), role=role)
    return {"user": format_id("user", user.id), "name": user.name, "unit": format_id("unit", unit_pk),
            "unit_name": tree.names[unit_pk], "role": role}


def remove_member(uow: UnitOfWork, unit: str, user_name: str, reason: str | None) -> dict[str, Any]:
    """End a user's membership of a unit; their work there goes back to the unit's pool (same transaction)."""
    tree = UnitTree.load(uow.repo)
    unit_pk = tree.find(unit)
    user = uow.repo.user_by_name(check_text(user_name, "user"))
    if user is None:
        raise NotFound(shown(user_name), "user", hint="`mpoxflow user list` shows the users")
    current = {m.unit_id: m for m in uow.repo.memberships(user_pk=user.id)}
    if unit_pk not in current:
        raise RuleRefused(because("%(user)s is no member of %(unit)s: nothing to end", user=user.name,
                                  unit=tree.names[unit_pk]))
    if len(current) == 1 and user.role != "auditor" and user.disabled_at is None:
        raise RuleRefused(because("%(unit)s is the only unit of %(user)s: every user belongs to one; add them to "
                                  "another unit first (`mpoxflow unit member UNIT %(user)s`), or disable the user",
                                  unit=tree.names[unit_pk], user=user.name))
    uow.repo.delete_membership(current[unit_pk].id)
    now = uow.now()
    uow.audit(Head.of(uow.repo.head_row("user", user.id)), kind="user", pk=user.id, workflow=None, trigger="leave",
              from_state=None, to_state=None, actor=uow.actor, reason=reason, now=now, rule=None,
              data={"unit": format_id("unit", unit_pk)}, changes=None, unit=acting_unit(uow, uow.actor, unit_pk))
    returned = return_to_pool(uow, user.id, f"{user.name} left {tree.names[unit_pk]}", now, units=[unit_pk])
    log.info("membership_ended", user=format_id("user", user.id), unit=format_id("unit", unit_pk),
             returned=len(returned))
    return {"user": format_id("user", user.id), "name": user.name, "unit": format_id("unit", unit_pk),
            "unit_name": tree.names[unit_pk], "returned": returned}


def return_to_pool(uow: UnitOfWork, user_pk: int, why: str, now: datetime,
                   units: Sequence[int] | None = None) -> list[str]:
    """Every object assigned to the user (in ``units``, when given) back to its unit's unassigned pool, each an
    audited ``assign`` entry; returns their ids."""
    returned = []
    for kind in OBJECT_MODELS:
        for row in uow.repo.assigned_objects(kind, user_pk, units):
            _owner_change(uow, kind, row, unit=row.unit_id, assignee=None, trigger="assign", reason=why, now=now)
            returned.append(format_id(kind, row.id))
    return returned


def set_placement(uow: UnitOfWork, kind: str, rule: str, unit: str | None, round_robin: bool | None,
                  reason: str | None) -> dict[str, Any]:
    if kind not in OBJECT_MODELS:
        raise UsageError(because("'%(kind)s' is no kind of object: use case, contact or course (⟦kind⟧)",
                                 kind=shown(kind)))
    if rule not in PLACEMENT_RULES:
        raise UsageError(because("'%(rule)s' is no placement rule: use parent, creator or unit (⟦rule⟧)",
                                 rule=shown(rule)))
    tree = UnitTree.load(uow.repo)
    if rule == "unit" and not unit:
        raise UsageError(because("the rule 'unit' sends new objects to one unit: name it with ⟦unit⟧"))
    if rule != "unit" and unit:
        raise UsageError(because("⟦unit⟧ goes with the rule 'unit' only"))
    unit_pk = tree.find(unit) if unit else None
    scope = uow.scope()
    assert scope is not None
    before = uow.repo.placements()[kind]
    values = {"rule": rule, "unit_id": unit_pk,
              "round_robin": before.round_robin if round_robin is None else round_robin}
    uow.repo.set_placement(kind, **values)
    now = uow.now()
    uow.audit(Head.of(uow.repo.head_row("user", scope.user_id or 0)), kind="user",
              pk=scope.user_id or 0, workflow=None, trigger="placement", from_state=None, to_state=None,
              actor=uow.actor, reason=reason, now=now, rule=None,
              data={"kind": kind, "rule": rule, "unit": None if unit_pk is None else format_id("unit", unit_pk),
                    "round_robin": values["round_robin"],
                    "before": {"rule": before.rule, "unit": None if before.unit_id is None
                               else format_id("unit", before.unit_id), "round_robin": before.round_robin}},
              changes=None, unit=scope.home)
    return placement_view(tree, kind, uow.repo.placements()[kind])


def placement_view(tree: UnitTree, kind: str, row: Any) -> dict[str, Any]:
    return {"kind": kind, "rule": row.rule, "unit": None if row.unit_id is None else format_id("unit", row.unit_id),
            "unit_name": None if row.unit_id is None else tree.names.get(row.unit_id),
            "round_robin": bool(row.round_robin)}


# ---- assignment and transfer --------------------------------------------------------------------------------


def _owner_change(uow: UnitOfWork, kind: str, row: Any, *, unit: int, assignee: int | None, trigger: str,
                  reason: str | None, now: datetime, actor: Actor | None = None) -> dict[str, Any]:
    """Write an object's unit and assignee (and its timers'), audited as ``trigger`` with the state unchanged."""
    actor = actor or uow.actor
    changes = {k: v for k, v in (("unit_id", unit), ("assignee_id", assignee)) if getattr(row, k) != v}
    head = uow.audit(
        Head.of(row), kind=kind, pk=row.id, workflow=row.workflow, trigger=trigger, from_state=row.state,
        to_state=row.state, actor=actor, reason=reason, now=now, rule=ASSIGN_RULE,
        data={"unit": format_id("unit", unit), "assignee": None if assignee is None else format_id("user", assignee),
              "before": {"unit": format_id("unit", row.unit_id),
                         "assignee": None if row.assignee_id is None else format_id("user", row.assignee_id)}},
        changes=changes, move_head=False, unit=acting_unit(uow, actor, row.unit_id),
    )
    values = {"unit_id": unit, "assignee_id": assignee, "updated_at": now, "audit_pos": head.pos,
              "audit_seq": head.seq, "audit_hash": head.hash}
    if not uow.repo.update_object(kind, row.id, row.version, values):
        raise Conflict(f"{format_id(kind, row.id)} was changed by someone else meanwhile; nothing was written. "
                       "Show it again and retry.")
    uow.repo.set_timers_owner(kind, row.id, unit, assignee)
    log.info(trigger, object=format_id(kind, row.id), unit=format_id("unit", unit),
             assignee=None if assignee is None else format_id("user", assignee), audit_seq=head.seq)
    return {"id": format_id(kind, row.id), "unit": format_id("unit", unit),
            "assignee": None if assignee is None else format_id("user", assignee), "audit_seq": head.seq}


@dataclass(frozen=True)
class Selection:
    """Which objects a bulk assignment takes: ids, or a filter (a kind, states, a unit, unassigned or one user's)."""

    ids: tuple[str, ...] = ()
    kind: str | None = None
    states: tuple[str, ...] = ()
    in_unit: str | None = None
    unassigned: bool = False
    of_user: str | None = None
    limit: int = MAX_BULK


def _selected(uow: UnitOfWork, tree: UnitTree, selection: Selection) -> list[tuple[str, Any]]:
    scope = uow.scope()
    assert scope is not None
    if selection.ids:
        if any((selection.kind, selection.states, selection.in_unit, selection.unassigned, selection.of_user)):
            raise UsageError(because("give the objects either by id or by a filter (⟦kind⟧, ⟦state⟧, ⟦in_unit⟧, "
                                     "⟦unassigned⟧, ⟦of_user⟧), not both"))
        if len(selection.ids) > MAX_BULK:
            raise UsageError(because("at most %(n)s objects at a time: split the list", n=MAX_BULK))
        found = []
        for given in dict.fromkeys(selection.ids):
            kind, pk = parse_id(given)
            if kind not in OBJECT_MODELS:
                raise UsageError(because("%(id)s is a %(kind)s: only cases, contacts and courses are assigned",
                                         id=shown(given), kind=kind))
            found.append((kind, uow.repo.load_object(kind, pk)))
        return found
    if selection.kind is None:
        raise UsageError(because("name the objects: their ids, or a filter with ⟦kind⟧ (case, contact or course)"))
    if selection.kind not in OBJECT_MODELS:
        raise UsageError(because("'%(kind)s' is no kind of object: use case, contact or course (⟦kind⟧)",
                                 kind=shown(selection.kind)))
    if not 1 <= selection.limit <= MAX_BULK:
        raise UsageError(because("⟦limit⟧ is 1 to %(n)s", n=MAX_BULK))
    for state in selection.states:
        if state not in WORKFLOWS[selection.kind].states:
            raise UsageError(because("'%(state)s' is not a %(kind)s state: use one of %(states)s (⟦state⟧)",
                                     state=shown(state), kind=selection.kind,
                                     states=", ".join(WORKFLOWS[selection.kind].states)))
    units: set[int] | None = None if scope.units is None else set(scope.units)
    if selection.in_unit:
        below = tree.below(tree.find(selection.in_unit, "in_unit"))
        units = below if units is None else units & below
    assignee = None
    if selection.of_user:
        user = uow.repo.user_by_name(check_text(selection.of_user, "of_user"))
        if user is None:
            raise NotFound(shown(selection.of_user), "user", hint="`mpoxflow user list` shows the users")
        assignee = user.id
    rows = uow.repo.objects_where(selection.kind, units=None if units is None else sorted(units),
                                  states=selection.states, assignee=assignee, unassigned=selection.unassigned,
                                  limit=min(selection.limit, MAX_LIMIT))
    return [(selection.kind, r) for r in rows]


def assign(uow: UnitOfWork, selection: Selection, *, unit: str | None, user: str | None, reason: str | None,
           transfer: bool = False) -> list[dict[str, Any]]:
    """Assign the selected objects (to ``unit``, default each one's own; to ``user``, a member of it, or to
    nobody) or, with ``transfer``, move them to another unit (any unit; the assignee becomes ``user`` or nobody).
    Every object one audited entry; all or nothing."""
    scope = uow.scope()
    assert scope is not None
    command = "transfer" if transfer else "assign"
    if not (reason or "").strip():
        raise UsageError(because("say why with ⟦reason⟧: it goes into each object's audit entry"))
    tree = UnitTree.load(uow.repo)
    target = tree.find(unit) if unit else None
    if transfer and target is None:
        raise UsageError(because("a transfer names the unit that takes the work over: give ⟦unit⟧"))
    user_row = None
    if user:
        user_row = uow.repo.user_by_name(check_text(user, "user"))
        if user_row is None or user_row.role == "timer":
            raise NotFound(shown(user), "user", hint="`mpoxflow user list` shows the users")
        if user_row.disabled_at is not None:
            raise RuleRefused(because("%(user)s is disabled: work goes to someone who can do it", user=user_row.name))
    memberships: dict[int, set[int]] = {}
    objects = _selected(uow, tree, selection)
    if not objects:
        raise RuleRefused(because("no object matches: nothing was assigned"))
    now = uow.now()
    done = []
    for kind, row in objects:
        object_id = format_id(kind, row.id)
        if not scope.covers(row.unit_id):
            raise outside(scope, object_id, row.unit_id, command, reading=False)
        destination = target if target is not None else row.unit_id
        if not transfer and not scope.covers(destination):
            raise UsageError(because("%(unit)s is outside your units: hand the work over to it with `mpoxflow "
                                     "transfer`", unit=tree.path(destination)))
        if transfer and destination == row.unit_id:
            raise RuleRefused(because("%(object)s belongs to %(unit)s already: a transfer moves it to another unit; "
                                      "`mpoxflow assign` assigns within it", object=object_id,
                                      unit=tree.names[destination]))
        assignee = None if user_row is None else user_row.id
        if user_row is not None:
            if destination not in memberships:
                memberships[destination] = {m.user_id for m in uow.repo.memberships(unit_pk=destination)}
            if user_row.id not in memberships[destination]:
                raise RuleRefused(because("%(user)s is no member of %(unit)s: assign to a member of the unit the work "
                                          "belongs to (`mpoxflow unit list`), or add them (`mpoxflow unit member`)",
                                          user=user_row.name, unit=tree.names[destination]))
        # Who may: a lead (or an admin) deals out work and transfers it; a member takes unassigned work of the
        # unit for themselves and gives their own back to the pool.
        own = (user_row is not None and user_row.id == scope.user_id and row.assignee_id in (None, scope.user_id)
               and destination == row.unit_id)
        giving_back = user_row is None and row.assignee_id == scope.user_id and destination == row.unit_id
        if not scope.leads(row.unit_id) and not (own or giving_back):
            raise NotPermitted(because(
                "'%(command)s' of %(object)s refused for %(user)s: a member takes unassigned work for themselves "
                "(⟦user⟧ your name) or gives their own back; dealing out others' work and transfers are for the "
                "unit's leads (`mpoxflow unit list` shows them). This refusal is recorded in the audit log",
                command=command, object=object_id, user=scope.name),
                actor=scope.name, role=scope.role, user=scope.user_id, command=command, target=object_id)
        if destination == row.unit_id and assignee == row.assignee_id:
            raise RuleRefused(because("%(object)s is assigned so already: nothing to change", object=object_id))
        done.append(_owner_change(uow, kind, row, unit=destination, assignee=assignee,
                                  trigger=command, reason=reason, now=now))
    return done
