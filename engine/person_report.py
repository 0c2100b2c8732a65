"""A person's own copy (GDPR art. 15; issue 19 item 2): everything mpoxflow holds about one person, made on request
and itself audited as a read of personal data.

**What it holds** (the JSON's top-level keys, ``REPORT_KEYS``, in this order; README "A person's own copy"):

- ``mpoxflow_person_report`` (the shape's version, ``FORMAT``), ``person`` (``person-N``), ``rule`` (GDPR art. 15),
  ``made_at``, ``made_by`` (the user's name, role and acting unit) and ``audit_seq`` (the report's own entry);
- ``facts``: the person's reference, birth date, flags, doses given elsewhere, when registered;
- ``notes``: the notes on the person;
- ``cases``, ``contacts`` (the person's own records as a close contact of a case), ``courses``: each object's
  state, facts, unit and assignee, its deadlines and timers (``deadlines``: task, rule, due instant, last day,
  status), its notes and contact attempts; a case also the number and kinds of its close contacts (never who they
  are) and its written notifications (``documents``, with the content they hold, §3.1);
- ``audit``: every entry of the person's chain and of each of their objects' chains, oldest first;
- ``recipients``: who received their data, as far as the database knows it: the notifications of their cases to
  the authorities (§3.1) and the webhook subscriptions that were delivered events of their objects;
- ``imports``: the imports whose rows named them (the import, its row numbers and results);
- ``counts``: how many of each, as the report's audit entry records them.

**Only that person's data.** A case of theirs has close contacts who are other people: the report gives their
number and exposure kinds only (as the written notification does), never their ids, references, birth dates or
facts. Internal ids of other records that the person's own records name (the case a contact record of theirs
belongs to, a case named as a possible source) are given as they are: they identify a record, not a person, and
the audit entries name them. Free texts (notes, reasons) are given as staff wrote them.

**Every instant** is ``{"utc": "2025-03-03T07:00:00Z", "local": "2025-03-03T08:00:00+01:00"}`` (Europe/Copenhagen);
dates are ISO. The audit entries' ``data`` and ``changes`` are the log's own words, unchanged.

**Who may make it** (``REPORT_ROLES``: the roles a person's reference goes to, ``engine.fhir.IDENTITY_ROLES``):
auditors (they read everything), staff and admins whose units (or the units below them) hold at least one of the
person's cases, contacts or courses, or any staff member or admin for a person with none (the shared register: the
person page shows them what such a report holds). A report is complete, also of the objects outside the maker's
units: the reading is the person's own request, and the report's entry names those objects (``outside_units``).
Every refusal is a reading refused (as ``show``'s): nothing is written, not even a refusal entry.

**Audited**: the report is an entry on the person's chain (trigger ``reported``, rule GDPR art. 15; ``data`` its
format, counts and the objects outside the maker's units, internal ids only) in the transaction that reads the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import structlog
from sqlalchemy import func, select

from engine.fhir import IDENTITY_ROLES
from engine.notification import S3_1, stored_content
from engine.queries import last_day
from engine.units import Scope, UnitTree
from engine.uow import Actor, Runtime, authorize, unit_of_work
from engine.views import jsonable
from persistence.audit import Head
from persistence.models import (
    OBJECT_MODELS,
    AuditEntry,
    Contact,
    Event,
    Import,
    Note,
    NotificationDocument,
    Person,
    Timer,
    Webhook,
    WebhookDelivery,
)
from persistence.repository import Repository, format_id, parse_id
from workflows.calendar import to_local
from workflows.errors import NotPermitted, UsageError, because
from workflows.limits import shown
from workflows.registry import BY_NAME

log = structlog.get_logger("mpoxflow.engine")

#: The version of the report's shape (its top-level keys, ``REPORT_KEYS``, and what each holds).
FORMAT = 1
#: The rule the report answers, cited in its audit entry.
RULE = "GDPR art. 15"
#: The trigger of the report's audit entry (on the person's chain).
TRIGGER = "reported"
#: What the report is made as: the JSON document, or the printable Danish HTML document made from it.
FORMATS = ("json", "html")
#: Who may make one: the roles a person's reference and birth date go to (``engine.fhir.IDENTITY_ROLES``).
REPORT_ROLES = tuple(sorted(IDENTITY_ROLES))
#: The top-level keys of the report, in order (its stable shape; README "A person's own copy").
REPORT_KEYS = ("mpoxflow_person_report", "person", "rule", "made_at", "made_by", "audit_seq", "facts", "notes",
               "cases", "contacts", "courses", "audit", "recipients", "imports", "counts")
#: The person's facts, in order (the columns of ``persons`` besides the id and the audit head).
PERSON_FACTS = ("ref", "born", "immunocompromised", "pregnant", "breastfeeding", "previous_mpox",
                "smallpox_vaccinated", "doses_elsewhere", "last_dose_elsewhere_on")
#: Facts of an object that hold another object's internal id as a number (shown as its id).
NUMBER_LINKS = {"from_contact": "contact"}
#: Who §3.1's notifications go to, by channel (the tasks' own words: "notify STPS by phone", "notify SSI and STPS
#: in writing").
NOTIFIED = {"phone": "STPS", "written": "SSI and STPS"}


def when(value: datetime | None) -> dict[str, str] | None:
    """An instant as the report gives it: UTC and Danish local time, both ISO 8601."""
    if value is None:
        return None
    utc = value.astimezone(UTC)
    return {"utc": utc.isoformat().replace("+00:00", "Z"), "local": to_local(value).isoformat()}


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, date):
        return value.isoformat()
    return jsonable(value)


def deadline_status(timer: Any) -> str:
    """What became of a timer, in one word: a task ``done`` (by its deadline), ``missed`` (its deadline passed
    undone; a resolution may say what happened since), ``closed`` (resolved before its deadline: not reachable,
    declined, not needed), ``due`` (its period began, still open: dose 2), ``pending``; a timer without a task, or
    one ended otherwise: ``fired``, ``cancelled``, ``skipped``, ``failed`` (parked), ``pending``."""
    if timer.task is not None:
        if timer.satisfied_at is not None:
            return "done"
        if timer.status == "missed":
            return "missed"
        if timer.outcome is not None:
            return "closed"
        if timer.status == "fired":
            return "due"
    return str(timer.status)


def deadline_view(timer: Timer) -> dict[str, Any]:
    """A timer of one of the person's objects: its task, rule, due instant and last day, and what became of it."""
    resolution = None
    if timer.outcome is not None:
        resolution = {"outcome": timer.outcome, "at": when(timer.resolved_at), "reason": timer.resolution}
    return {"timer": format_id("timer", timer.id), "name": timer.name, "task": timer.task, "rule": timer.rule,
            "due_at": when(timer.due_at), "last_day": last_day(timer.due_at).isoformat(),
            "status": deadline_status(timer), "timer_status": timer.status, "done_at": when(timer.satisfied_at),
            "resolution": resolution}


def note_view(row: Any) -> dict[str, Any]:
    """A note or contact attempt (an attempt's text is its reason)."""
    return {"id": format_id("note", row.id), "kind": row.kind, "text": row.text, "channel": row.channel,
            "outcome": row.outcome, "by": row.actor, "at": when(row.at)}


def audit_entry_view(entry: Any, names: Mapping[int, str]) -> dict[str, Any]:
    """An entry of the person's or one of their objects' chains: what happened, by whom, why, under which rule."""
    unit = entry.unit_id
    return {"seq": entry.seq, "object": format_id(entry.object_kind, entry.object_id), "pos": entry.pos,
            "trigger": entry.trigger, "from": entry.from_state, "to": entry.to_state, "actor": entry.actor,
            "role": entry.role, "unit": None if unit is None else {"id": format_id("unit", unit),
                                                                   "name": names.get(unit)},
            "rule": entry.rule, "reason": entry.reason, "at": when(entry.at), "recorded_at": when(entry.recorded_at),
            "data": entry.data, "changes": entry.changes, "timers_armed": entry.timers_armed,
            "timers_cancelled": entry.timers_cancelled, "timers_done": entry.timers_done}


def _facts(row: Any) -> dict[str, Any]:
    """An object's facts (its workflow's declared facts), links as ids."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(BY_NAME[row.workflow].facts):
        value = getattr(row, f.name)
        if f.name.endswith("_id"):
            link = f.name.removesuffix("_id")
            found[link] = None if value is None else format_id(link, value)
        elif f.name in NUMBER_LINKS:
            found[f.name] = None if value is None else format_id(NUMBER_LINKS[f.name], value)
        else:
            found[f.name] = _value(value)
    return found


class PersonReports:
    """Making a person's report: authorized, read and audited in one transaction."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def make(self, person_id: str, *, actor: str, fmt: str = "json") -> dict[str, Any]:
        """Everything mpoxflow holds about the person ``person_id`` (the module's docstring), made by ``actor``
        (as ``fmt``, recorded in the audit entry: ``json`` or ``html``); the report's entry on the person's chain
        is written in the same transaction. UsageError for another format or an id of another kind; NotFound;
        NotPermitted for a user who may not make it (nothing written)."""
        if fmt not in FORMATS:
            raise UsageError(because("⟦format⟧ '%(format)s' is not a format of the report: use json or html",
                                     format=shown(str(fmt))))
        kind, pk = parse_id(person_id)
        if kind != "person":
            raise UsageError(because("%(id)s is a %(kind)s: a report is made of a person (person-N); its page names "
                                     "its person", id=format_id(kind, pk), kind=kind))
        label = format_id("person", pk)
        refused: NotPermitted | None = None
        report: dict[str, Any] = {}
        with unit_of_work(self.runtime) as uow:
            try:  # a reading refused: nothing is written (no refusal entry: the transaction is rolled back)
                who = authorize(uow.repo, actor, "person report", label, REPORT_ROLES, self.runtime.known_users)
            except NotPermitted as error:
                refused = error
            else:
                uow.repo.lock_person(pk)  # NotFound; held to the commit: the person's chain is appended to
                rows = {k: list(uow.repo.objects_linked(k, "person_id", pk)) for k in OBJECT_MODELS}
                scope = uow.scope(who)
                assert scope is not None
                refused = _may_report(scope, label, rows)
                if refused is None:
                    now = uow.now()
                    report = _collect(uow.repo, uow.repo.person(pk), rows, scope, who, now)
                    outside = [format_id(k, r.id) for k, found in rows.items() for r in found
                               if not scope.covers(r.unit_id)]
                    head = uow.audit(
                        Head.of(uow.repo.head_row("person", pk)), kind="person", pk=pk, workflow=None,
                        trigger=TRIGGER, from_state=None, to_state=None, actor=who,
                        reason=None, now=now, rule=RULE,
                        data={"format": fmt, "counts": report["counts"], "outside_units": outside}, changes=None,
                        unit=scope.home)
                    report["audit_seq"] = head.seq
                    uow.save_clock()
                    uow.commit()
        if refused is not None:
            log.warning("person_report_refused", person=label, user=None if refused.user is None
                        else format_id("user", refused.user), role=refused.role)
            raise refused
        log.info("person_reported", person=label, format=fmt, audit_seq=report["audit_seq"])
        self.runtime.reads.shown("report", [pk], actor=actor)  # a read of the person's data (issue 19 item 3)
        return {key: report[key] for key in REPORT_KEYS}


def _may_report(scope: Scope, label: str, rows: Mapping[str, Sequence[Any]]) -> NotPermitted | None:
    """None when the scope's user may make the person's report (the module's docstring), else the refusal."""
    objects = [r for found in rows.values() for r in found]
    if scope.everything or not objects or any(scope.covers(r.unit_id) for r in objects):
        return None
    mine = ", ".join(scope.tree.names.get(u, format_id("unit", u)) for u in scope.memberships) or "none"
    refused = NotPermitted(because(
        "none of %(person)s's cases, contacts and courses belongs to your units (%(mine)s), so the copy of their "
        "data (GDPR art. 15) was refused: staff of a unit that holds one of them make it, or an auditor",
        person=label, mine=mine), actor=scope.name, role=scope.role, user=scope.user_id, command="person report",
        target=label)
    refused.key = "report_outside_units"
    return refused


def _collect(repo: Repository, person: Person, rows: Mapping[str, Sequence[Any]], scope: Scope, who: Actor,
             now: datetime) -> dict[str, Any]:
    """The report's content (every key but ``audit_seq``) from the person's row and objects."""
    session = repo.session
    names = scope.tree.names if isinstance(scope.loaded, UnitTree) else UnitTree.load(repo).names
    pks = {kind: [r.id for r in found] for kind, found in rows.items()}
    timers = {kind: repo.timers_of_many(kind, ids) for kind, ids in pks.items()}
    notes = _notes(session, {**pks, "person": [person.id]})
    assignees = repo.user_names([r.assignee_id for found in rows.values() for r in found if r.assignee_id])
    contacts = _contacts_of_cases(session, pks["case"], person.id)
    documents = _documents(session, pks["case"])

    def shaped(kind: str, row: Any) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": format_id(kind, row.id), "kind": kind, "state": row.state, "workflow": row.workflow,
            "facts": _facts(row),
            "unit": {"id": format_id("unit", row.unit_id or 1), "name": names.get(row.unit_id or 1)},
            "assignee": None if row.assignee_id is None else assignees.get(row.assignee_id),
            "failed_attempts": row.failed_attempts or 0, "created_at": when(row.created_at),
            "updated_at": when(row.updated_at), "deadlines": [deadline_view(t) for t in timers[kind][row.id]],
            "notes": notes.get((kind, row.id), [])}
        if kind == "case":
            view["contacts"] = contacts.get(row.id, {"count": 0, "kinds": {}})
            view["documents"] = documents.get(row.id, [])
        return view

    objects = {kind: [shaped(kind, r) for r in found] for kind, found in rows.items()}
    audit = _audit(session, person.id, pks, names)
    recipients = {"notifications": _notifications(rows["case"], documents),
                  "webhooks": _webhooks(session, pks)}
    imports = _imports(session, person.id, {f"{k}-{pk}" for k, ids in pks.items() for pk in ids})
    facts = {name: _value(getattr(person, name)) for name in PERSON_FACTS}
    facts["doses_elsewhere"] = facts["doses_elsewhere"] or 0
    facts["registered_at"] = when(person.created_at)
    counts = {"cases": len(objects["case"]), "contacts": len(objects["contact"]),
              "courses": len(objects["course"]),
              "deadlines": sum(len(o["deadlines"]) for found in objects.values() for o in found),
              "notes": sum(len(n) for n in notes.values()),
              "documents": sum(len(d) for d in documents.values()), "audit_entries": len(audit),
              "recipients": len(recipients["notifications"]) + len(recipients["webhooks"]),
              "imports": len(imports)}
    home = scope.home  # the unit a user acts through when no object decides (``engine.units.acting_unit``)
    return {"mpoxflow_person_report": FORMAT, "person": format_id("person", person.id), "rule": RULE,
            "made_at": when(now),
            "made_by": {"name": who.name, "role": who.role,
                        "unit": None if home is None else {"id": format_id("unit", home), "name": names.get(home)}},
            "facts": facts, "notes": notes.get(("person", person.id), []), "cases": objects["case"],
            "contacts": objects["contact"], "courses": objects["course"], "audit": audit,
            "recipients": recipients, "imports": imports, "counts": counts}


def _notes(session: Any, pks: Mapping[str, Sequence[int]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The notes and contact attempts on the person and their objects, by object, oldest first."""
    found: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for kind, ids in pks.items():
        if not ids:
            continue
        query = select(Note).where(Note.object_kind == kind, Note.object_id.in_(ids)).order_by(Note.id)
        for row in session.scalars(query):
            found.setdefault((kind, row.object_id), []).append(note_view(row))
    return found


def _contacts_of_cases(session: Any, cases: Sequence[int], person: int) -> dict[int, dict[str, Any]]:
    """How many close contacts each case of the person has, and of which exposure kinds: never who they are."""
    found: dict[int, dict[str, Any]] = {}
    if not cases:
        return found
    query = (select(Contact.case_id, Contact.exposure_kind, func.count()).where(Contact.case_id.in_(cases))
             .where(Contact.person_id != person).group_by(Contact.case_id, Contact.exposure_kind))
    for case_pk, kind, n in session.execute(query):
        counted = found.setdefault(case_pk, {"count": 0, "kinds": {}})
        counted["count"] += n
        counted["kinds"][kind] = n
    for counted in found.values():
        counted["kinds"] = dict(sorted(counted["kinds"].items()))
    return found


def _documents(session: Any, cases: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The written notifications (§3.1) of the person's cases, with the content each holds (the person's
    reference, birth date and case, the number and kinds of its contacts, the unit: what went to SSI and STPS)."""
    found: dict[int, list[dict[str, Any]]] = {}
    if not cases:
        return found
    query = (select(NotificationDocument).where(NotificationDocument.case_id.in_(cases))
             .order_by(NotificationDocument.id))
    for row in session.scalars(query):
        found.setdefault(row.case_id, []).append({
            "id": format_id("document", row.id), "channel": row.channel, "made_at": when(row.made_at),
            "made_by": row.made_by, "case_version": row.case_version, "content_hash": row.content_hash,
            "sent_at": when(row.sent_at), "sent_by": row.sent_by, "rule": S3_1,
            "content": stored_content(row.bundle)})
    return found


def _audit(session: Any, person: int, pks: Mapping[str, Sequence[int]],
           names: Mapping[int, str]) -> list[dict[str, Any]]:
    """Every entry of the person's chain and of their objects' chains, by sequence number."""
    entries: list[Any] = []
    for kind, ids in (("person", [person]), *pks.items()):
        if ids:
            entries += session.execute(select(AuditEntry.__table__).where(
                AuditEntry.object_kind == kind, AuditEntry.object_id.in_(ids))).all()
    return [audit_entry_view(e, names) for e in sorted(entries, key=lambda e: e.seq)]


def _notifications(cases: Iterable[Any], documents: Mapping[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """§3.1: each case's notification to the authorities, by phone (STPS) and in writing (SSI and STPS), when
    recorded; a written one with the documents sent."""
    found = []
    for case in cases:
        for channel, column in (("phone", "phone_notified_at"), ("written", "written_notified_at")):
            at = getattr(case, column)
            if at is None:
                continue
            item: dict[str, Any] = {"case": format_id("case", case.id), "channel": channel, "to": NOTIFIED[channel],
                                    "at": when(at), "rule": S3_1}
            if channel == "written":
                item["documents"] = [d["id"] for d in documents.get(case.id, []) if d["sent_at"] is not None]
            found.append(item)
    return found


def _webhooks(session: Any, pks: Mapping[str, Sequence[int]]) -> list[dict[str, Any]]:
    """The webhook subscriptions that were delivered events of the person's objects: the subscription, its host
    (never the URL's path), whether its bodies carry the person's reference, how many events, first and last."""
    counted: dict[int, list[Any]] = {}
    for kind, ids in pks.items():
        if not ids:
            continue
        query = (select(WebhookDelivery.webhook_id, func.count(), func.min(WebhookDelivery.at),
                        func.max(WebhookDelivery.at))
                 .join(Event, Event.seq == WebhookDelivery.event_seq)
                 .where(WebhookDelivery.outcome == "delivered", Event.object_kind == kind, Event.object_id.in_(ids))
                 .group_by(WebhookDelivery.webhook_id))
        for webhook, n, first, last in session.execute(query):
            if webhook in counted:
                seen = counted[webhook]
                counted[webhook] = [seen[0] + n, min(seen[1], first), max(seen[2], last)]
            else:
                counted[webhook] = [n, first, last]
    if not counted:
        return []
    hooks = {w.id: w for w in session.scalars(select(Webhook).where(Webhook.id.in_(sorted(counted))))}
    return [{"webhook": format_id("webhook", pk), "host": urlsplit(hooks[pk].url).hostname, "role": hooks[pk].role,
             "personal_data": bool(hooks[pk].personal_data), "active": bool(hooks[pk].active), "events": n,
             "first_at": when(first), "last_at": when(last)}
            for pk, (n, first, last) in sorted(counted.items())]


def _imports(session: Any, person: int, objects: set[str]) -> list[dict[str, Any]]:
    """The imports whose rows named the person or one of their objects: each import with those rows (number,
    result, the ids made or found, the rule of a refusal). The file itself, kept with the import, holds the row as
    it was imported."""
    label = format_id("person", person)
    found = []
    query = select(Import.id, Import.kind, Import.actor, Import.created_at, Import.report).order_by(Import.id)
    for pk, what, actor, at, report in session.execute(query.execution_options(yield_per=20)):
        rows = [{"row": r.get("row"), "result": r.get("result"), "ids": list(r.get("ids") or ()),
                 "rule": r.get("rule")}
                for r in report or () if r.get("person") == label or r.get("object") in objects
                or label in (r.get("ids") or ()) or objects & set(r.get("ids") or ())]
        if rows:
            found.append({"import": format_id("import", pk), "what": what, "by": actor, "at": when(at),
                          "rows": rows})
    return found


__all__ = ["FORMATS", "REPORT_KEYS", "REPORT_ROLES", "RULE", "TRIGGER", "PersonReports", "when"]
