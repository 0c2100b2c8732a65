"""The JSON shapes of ``../shared/CLI.md``: what the CLI (and later the HTTP API) print for each object.
Instants are printed in Europe/Copenhagen with their offset; dates as ``YYYY-MM-DD``."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any

from persistence.models import AuditEntry, Person, Timer
from persistence.repository import format_id
from workflows.calendar import local_date, to_local
from workflows.errors import UsageError
from workflows.limits import check_instant
from workflows.registry import BY_NAME

#: The key of the marker that replaces a purged notification document's Bundle (issue 19, ``engine.retention``).
PURGED_BUNDLE = "mpoxflow_purged"


def instant(value: datetime | None) -> str | None:
    return None if value is None else to_local(value).isoformat()


def check_period(since: datetime | None, before: datetime | None) -> None:
    """A listing's period (``--since``, ``--until``): each an instant with an offset, in range, ``until`` after
    ``since``. UsageError naming the field."""
    for value, what in ((since, "⟦since⟧"), (before, "⟦until⟧")):
        if value is not None:
            if value.tzinfo is None:
                raise UsageError(f"{what} {value.isoformat()} has no offset: give an instant with one")
            check_instant(value, what)
    if since is not None and before is not None and before <= since:
        raise UsageError(f"⟦until⟧ ({instant(before)}) is not after ⟦since⟧ ({instant(since)}): swap them")


def jsonable(value: Any) -> Any:
    """Dates, instants and tuples made JSON-safe. Instants are written in Danish local time with their offset:
    unambiguous, and exactly what is printed."""
    if isinstance(value, datetime):
        return instant(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def _field(value: Any) -> Any:
    if isinstance(value, datetime):
        return instant(value)
    return jsonable(value)


def timer_view(timer: Timer) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": format_id("timer", timer.id),
        "name": timer.name,
        "due_at": instant(timer.due_at),
        "status": timer.status,
        "rule": timer.rule,
        "object": format_id(timer.object_kind, timer.object_id),
    }
    if timer.task:
        view["task"] = timer.task
        view["satisfied_at"] = instant(timer.satisfied_at)
        if getattr(timer, "outcome", None):
            view["outcome"] = timer.outcome
            view["resolved_at"] = instant(timer.resolved_at)
            view["resolution"] = timer.resolution
    if timer.note:
        view["note"] = timer.note
    if getattr(timer, "attempts", 0):
        view["attempts"] = timer.attempts
        view["next_attempt_at"] = instant(timer.next_attempt_at)
        view["last_error"] = timer.last_error
    return view


def object_view(kind: str, row: Any, timers: list[Timer]) -> dict[str, Any]:
    definition = BY_NAME[row.workflow]
    view: dict[str, Any] = {
        "id": format_id(kind, row.id),
        "kind": kind,
        "state": row.state,
        "workflow": row.workflow,
        "person": format_id("person", row.person_id),
        "version": row.version,
    }
    for f in dataclasses.fields(definition.facts):
        value = getattr(row, f.name)
        if f.name.endswith("_id"):  # a link to another object, shown by its id (``case_id`` -> ``case``)
            kind = f.name.removesuffix("_id")
            view[kind] = None if value is None else format_id(kind, value)
        else:
            view[f.name] = _field(value)
    # Whose work it is (issue 17): the unit it belongs to and its assignee (None: the unit's unassigned pool).
    view["unit"] = format_id("unit", getattr(row, "unit_id", None) or 1)
    assignee = getattr(row, "assignee_id", None)
    view["assignee"] = None if assignee is None else format_id("user", assignee)
    view["failed_attempts"] = getattr(row, "failed_attempts", 0) or 0
    view["created_at"] = instant(row.created_at)
    view["updated_at"] = instant(row.updated_at)
    view["timers"] = [timer_view(t) for t in timers]
    return view


def user_view(user: Any) -> dict[str, Any]:
    return {"id": format_id("user", user.id), "kind": "user", "name": user.name, "role": user.role,
            "created_at": instant(user.created_at), "password": user.password_hash is not None,
            "disabled_at": instant(getattr(user, "disabled_at", None))}


def person_view(person: Person, cases: list[str] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": format_id("person", person.id),
        "kind": "person",
        "ref": person.ref,
        "born": _field(person.born),
        "immunocompromised": person.immunocompromised,
        "pregnant": person.pregnant,
        "breastfeeding": bool(person.breastfeeding),
        "previous_mpox": person.previous_mpox,
        "smallpox_vaccinated": person.smallpox_vaccinated,
        "doses_elsewhere": person.doses_elsewhere or 0,
        "last_dose_elsewhere_on": _field(person.last_dose_elsewhere_on),
        "created_at": instant(person.created_at),
    }
    purged = purged_view(person)
    if purged is not None:  # issue 19: instead of the reference, when and under which rule it was deleted
        view["purged"] = purged
    if cases is not None:
        view["cases"] = cases
    return view


def purged_view(person: Any) -> dict[str, Any] | None:
    """What a view of a purged person shows instead of the reference (issue 19): when (the instant and its Danish
    date) and under which retention rule the personal data was deleted; None for a person not purged."""
    at = getattr(person, "purged_at", None)
    if at is None:
        return None
    return {"at": instant(at), "on": local_date(at).isoformat(), "rule": getattr(person, "purge_rule", None)}


def document_purged(bundle: Any) -> dict[str, Any] | None:
    """The marker (``{"purged_at", "rule"}``) of a notification document whose Bundle a purge replaced, or None."""
    if isinstance(bundle, dict) and PURGED_BUNDLE in bundle:
        return dict(bundle[PURGED_BUNDLE])
    return None


def audit_view(entry: AuditEntry | Any) -> dict[str, Any]:
    """An audit entry as printed: ``at`` is the clock's instant (simulated or real), ``recorded_at`` the wall
    clock's; ``pos``/``prev_seq``/``hash`` place it in its object's hash chain."""
    return {
        "seq": entry.seq,
        "object": format_id(entry.object_kind, entry.object_id),
        "pos": entry.pos,
        "workflow": entry.workflow,
        "trigger": entry.trigger,
        "from": entry.from_state,
        "to": entry.to_state,
        "actor": entry.actor,
        "role": entry.role,
        "reason": entry.reason,
        "at": instant(entry.at),
        "recorded_at": instant(entry.recorded_at),
        "rule": entry.rule,
        "timer": None if entry.timer_id is None else format_id("timer", entry.timer_id),
        "data": entry.data,
        "changes": entry.changes,
        "timers_armed": entry.timers_armed,
        "timers_cancelled": entry.timers_cancelled,
        "timers_done": entry.timers_done,
        "prev_seq": entry.prev_seq,
        "hash": entry.hash,
        # The unit the actor acted through (issue 17; None before migration 0013).
        "unit": _unit_of(entry),
    }


def _unit_of(entry: Any) -> str | None:
    unit = getattr(entry, "unit_id", None)
    return None if unit is None else format_id("unit", int(unit))
