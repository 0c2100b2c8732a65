"""Events other systems can rely on (issue 18): the outbox the unit of work appends to, and reading it in order.

Which audit entries are events: every change of a workflow object (case, contact, course) by a transition (a
person's command, a spawn or cascade, a correction reaching it), an assignment or transfer (issue 17) and a timer's
firing, including the ones that keep the state (``notify``, a missed task). Not events: notes and contact attempts
(their text is on the object, not a change of its workflow), break-glass reads, task resolutions, a timer skipped
or parked as failed, refusals, logins and changes of users, units and persons.

A retention purge's entry on an object (issue 19) is an event too, ``{kind}.purged``: a system that was sent the
person's reference (a webhook with personal data) learns that it should delete its copy.

An event's type is ``{kind}.{to_state}`` when the state changed (``case.confirmed``, ``contact.symptomatic``),
else ``{kind}.{trigger}`` (``case.notify``, ``contact.assign``, ``case.phone_notification_due``): ``event_types``
lists every one. An event holds internal ids only (``case-1``, ``unit-2``, ``timer-7``), never personal data.

Order: events are collected by the unit of work as its audit entries are made and inserted together (one
``executemany``) just before the transaction commits. On PostgreSQL that insert first takes one transaction-level
advisory lock (``EVENTS_LOCK``), held until the commit is done and visible: transactions that append events pass
through their append-and-commit one at a time, so sequence numbers are handed out in commit order, and a reader that
has seen seq N never later sees a smaller seq commit (``--after N`` never skips). SQLite's writers are serialised
by ``BEGIN IMMEDIATE`` already. The lock is held only for the insert and the commit, not for the work before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session

from engine.views import instant
from persistence.audit import PURGED
from persistence.models import Event
from persistence.repository import format_id
from workflows.definition import MIGRATED
from workflows.errors import UsageError
from workflows.limits import shown

TABLE = cast(Table, Event.__table__)
#: The kinds whose changes are events.
EVENT_KINDS = ("case", "contact", "course")
#: Triggers of those kinds' audit entries that are not events.
NOT_EVENTS = frozenset({"note", "attempt", "break_glass", "resolve"})
#: A timer's audit entries whose outcome is one of these did not change the object: no event.
NOT_FIRED = frozenset({"skipped", "failed"})
#: The triggers of assignment (issue 17), on every kind.
OWNER_TRIGGERS = ("assign", "transfer")
#: The triggers of advice sheets sent or given to the person (issue 21 item 4, ``engine.messages``), on every kind.
MESSAGE_TRIGGERS = ("advice_queued", "advice_given", "advice_sent", "advice_failed")
#: PostgreSQL: the advisory lock every appending transaction holds from its insert to its commit (any constant
#: no other part takes; "mpox" in ASCII).
EVENTS_LOCK = 0x6D706F78
#: PostgreSQL: the channel notified at the commit of a transaction that appended events (payload: its last seq).
EVENTS_CHANNEL = "mpoxflow_events"
#: The most events one read returns.
MAX_LIMIT = 1000
#: The largest seq there can be (the column is a 32-bit integer on every backend).
MAX_SEQ = 2**31 - 1


def event_type(kind: str, trigger: str, from_state: str | None, to_state: str | None) -> str:
    """``{kind}.{to_state}`` for a change of state, else ``{kind}.{trigger}``; a migration to a later definition is
    ``{kind}.migrated`` whatever its state does (issue 20)."""
    if trigger == MIGRATED:
        return f"{kind}.{MIGRATED}"
    if to_state is not None and to_state != from_state:
        return f"{kind}.{to_state}"
    return f"{kind}.{trigger}"


@cache
def event_types() -> tuple[str, ...]:
    """Every event type the workflows can produce, sorted: states reached, triggers that keep the state, and
    assignment and transfer on every kind."""
    from workflows.registry import WORKFLOWS

    types: set[str] = set()
    for kind, definition in WORKFLOWS.items():
        for spec in definition.transitions:
            if spec.dest is not None:
                types.add(f"{kind}.{spec.dest}")
            if spec.dest is None or spec.dest in spec.source:
                types.add(f"{kind}.{spec.trigger}")
        types.update(f"{kind}.{trigger}" for trigger in OWNER_TRIGGERS)
        types.update(f"{kind}.{trigger}" for trigger in MESSAGE_TRIGGERS)
        types.add(f"{kind}.{PURGED}")  # issue 19: the person's personal data was deleted from the object
        types.add(f"{kind}.{MIGRATED}")  # issue 20: moved to a later workflow definition
    return tuple(sorted(types))


def parse_types(text_value: str | None, flag: str) -> list[str]:
    """A comma-separated list of event types (``case.confirmed,contact.symptomatic``; ``*`` for all, ``case.*``
    for a kind's), as given to ``flag``. UsageError naming the flag for a type no workflow produces."""
    if text_value is None or not text_value.strip():
        return []
    known = event_types()
    wanted: list[str] = []
    for item in (part.strip() for part in text_value.split(",")):
        if not item:
            continue
        if item == "*" or item in known or (item.endswith(".*") and item[:-2] in EVENT_KINDS):
            if item not in wanted:
                wanted.append(item)
            continue
        raise UsageError(f"'{shown(item)}' is no event type: give {flag} event types such as case.confirmed or "
                         "contact.symptomatic, comma-separated (`case.*`: every type of a kind; the types are "
                         "`{kind}.{state}` for a change of state, else `{kind}.{trigger}`)")
    return wanted


def matches(types: list[str], type_: str) -> bool:
    """Whether an event of ``type_`` is one of ``types`` (empty: all)."""
    if not types or "*" in types:
        return True
    return type_ in types or f"{type_.split('.', 1)[0]}.*" in types


def from_audit(entry: Mapping[str, Any], seq: int) -> dict[str, Any] | None:
    """The event row an audit entry (as ``UnitOfWork.audit`` makes it, sequence number ``seq``) makes, or None
    when it is no event (see the module's docstring)."""
    kind, trigger = entry["object_kind"], entry["trigger"]
    if kind not in EVENT_KINDS or entry["workflow"] is None or trigger in NOT_EVENTS:
        return None
    data = entry.get("data") or {}
    timer = entry.get("timer_id")
    detail: dict[str, Any] = {}
    if timer is not None:
        outcome = data.get("outcome") or "fired"
        if outcome in NOT_FIRED:
            return None
        detail["outcome"] = outcome
    if trigger in OWNER_TRIGGERS:
        detail.update(unit=data.get("unit"), assignee=data.get("assignee"))
    return {
        "type": event_type(kind, trigger, entry["from_state"], entry["to_state"]), "object_kind": kind,
        "object_id": entry["object_id"], "workflow": entry["workflow"], "from_state": entry["from_state"],
        "to_state": entry["to_state"], "trigger": trigger, "rule": entry["rule"], "at": entry["at"],
        "audit_seq": seq, "unit_id": entry.get("unit_id"), "timer_id": timer, "detail": detail,
    }


def append(session: Session, events: list[dict[str, Any]]) -> None:
    """Insert a transaction's events in one ``executemany``, just before its commit; on PostgreSQL under
    ``EVENTS_LOCK`` (held to the commit: seq in commit order) and with a ``NOTIFY`` for the readers that follow."""
    if not events:
        return
    if session.get_bind().dialect.name == "postgresql":
        # One round trip: the lock, and the notification (sent only when the transaction commits).
        session.execute(text("SELECT pg_advisory_xact_lock(:key), pg_notify(:channel, '')"),
                        {"key": EVENTS_LOCK, "channel": EVENTS_CHANNEL})
    session.execute(insert(TABLE), events)


def view(row: Any) -> dict[str, Any]:
    """An event as readers get it (JSON): internal ids only."""
    detail = dict(row.detail or {})
    return {
        "seq": row.seq, "type": row.type, "object": format_id(row.object_kind, row.object_id),
        "kind": row.object_kind, "workflow": row.workflow, "from_state": row.from_state, "to_state": row.to_state,
        "trigger": row.trigger, "rule": row.rule, "at": instant(row.at), "audit_seq": row.audit_seq,
        "unit": None if row.unit_id is None else format_id("unit", row.unit_id),
        "timer": None if row.timer_id is None else format_id("timer", row.timer_id), **detail,
    }


def read(session: Session, *, after: int = 0, limit: int = 100, types: list[str] | None = None,
         until: int | None = None, object_: tuple[str, int] | None = None) -> list[Any]:
    """Events after seq ``after`` (up to ``until``), oldest first, at most ``limit``, of ``types`` (empty: all),
    of one object (``object_``: kind and id) or all."""
    table = TABLE
    query = select(table).where(table.c.seq > after).order_by(table.c.seq).limit(limit)
    if until is not None:
        query = query.where(table.c.seq <= until)
    if object_ is not None:
        query = query.where(table.c.object_kind == object_[0], table.c.object_id == object_[1])
    if types and "*" not in types:
        exact = [t for t in types if not t.endswith(".*")]
        kinds = [t[:-2] for t in types if t.endswith(".*")]
        query = query.where(table.c.type.in_(exact) | table.c.object_kind.in_(kinds))
    return list(session.execute(query))


def last_seq(session: Session) -> int:
    """The newest event's seq (0: none)."""
    return int(session.execute(select(func.coalesce(func.max(TABLE.c.seq), 0))).scalar_one())


def check_after(after: int | None, flag: str) -> int:
    if after is None:
        return 0
    if not 0 <= after <= MAX_SEQ:
        raise UsageError(f"{flag} is a seq (0 or more) an event stream showed: give 0 for the first event")
    return after


def check_limit(limit: int | None, flag: str, default: int = 100) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"{flag} is how many events to return: give 1 to {MAX_LIMIT}")
    return limit
