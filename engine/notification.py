"""The written notification of a confirmed case (§3.1, issue 18 part 3) as a document, and its sending.

§3.1: the doctor responsible notifies the case in writing to SSI and STPS "as soon as possible and within 24
hours" (electronically, SEI2). ``make`` writes what that notification holds, from the case as it is now, as a FHIR
**document Bundle** (a Composition first, "Anmeldelse af mpox (skriftlig, §3.1)", with sections for the patient,
the condition, isolation, the case's contacts and the responsible unit), stored in ``notification_documents``
(``document-N``) with the SHA-256 of its **content** (the canonical JSON of what it holds: ``content``, kept in the
Composition too, so anyone can check the hash) and the case's version it was made from; its making is an audit
entry on the case's chain (trigger ``document``: the document's id and hash, no personal data). Only a confirmed
case has one.

**Sending** is ``case notify --channel written --document document-N``: the document must be this case's, not sent
yet, and made from the case as it is now (its content hash equal to the case's now), else refused with what to do;
the notify entry records the document and its hash, and the document row gets ``sent_at``/``sent_by``, in the
transition's transaction. ``--channel written`` without a document still records a notification sent by other
means (SEI2 itself), as before: a document is not required.

**Changed since sent.** A case whose content differs from its last sent document's is listed (``changed_since_sent``:
``due``'s CHANGED SINCE SENT, the worklist page's *Ændret efter afsendelse*, the case page's banner), until an
updated notification is sent: a new document, then ``case notify --channel written --document NEW``, which the
notify guard then allows for an already notified case (§3.1: the authorities get the case as it is); it arms and
completes no deadline again. The candidates are read by one query (a case changed since: its version past the
sent document's ``case_version`` + 1, the notification's own write, or a contact of it added or changed since the
document was made), and only those are compared by hash.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy import func, or_, select

from engine import fhir, units
from engine.commands import Commands, refuse_purged_object
from engine.units import UnitTree, check_reads, reader_scope
from engine.uow import Runtime, unit_of_work
from engine.views import document_purged, instant, jsonable, object_view, person_view
from persistence.audit import Head
from persistence.models import Case, Contact, NotificationDocument, Person
from persistence.repository import Repository, format_id, parse_id
from workflows import case as case_workflow
from workflows.errors import NotFound, RuleRefused, UsageError, because
from workflows.limits import MAX_ID, check_count, shown
from workflows.registry import BY_NAME

log = structlog.get_logger("mpoxflow.engine")

S3_1 = "SST-mpox-7.1 §3.1"
TITLE = "Anmeldelse af mpox (skriftlig, §3.1)"
#: The document's sections (Danish: the notification goes to Danish authorities, as SEI2's form is).
SECTIONS = {"patient": "Patient", "condition": "Sygdom", "isolation": "Isolation", "contacts": "Kontakter",
            "unit": "Ansvarlig enhed"}
#: LOINC 55751-2: a public health case report.
CASE_REPORT = {"coding": [{"system": fhir.LOINC, "code": "55751-2", "display": "Public health Case report"}],
               "text": "Anmeldelse af mpox"}
CONTENT_EXT = fhir.EXT + "notification-content"
#: Where documents' entries get their ``urn:uuid`` full URLs from (a fixed namespace: the same entry, the same URL).
NAMESPACE = uuid.UUID("6f1d8a52-3c55-4f57-9a0b-0c3f3c1d7e18")
_DOCUMENT_ID = re.compile(r"document-(\d{1,10})")
#: The states a case is followed in for "changed since sent": open and confirmed.
FOLLOWED = case_workflow.CONFIRMED_OPEN


def parse_document(text: str, field: str = "document") -> int:
    found = _DOCUMENT_ID.fullmatch(text.strip()) if isinstance(text, str) else None
    if found is None or int(found[1]) > MAX_ID:
        raise NotFound(shown(str(text)), "document", hint=because(
            "a notification document's id is document-N: `mpoxflow case document CASE` makes one (⟦%(field)s⟧)",
            field=field))
    return int(found[1])


def canonical(content: Mapping[str, Any]) -> str:
    return json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def content_hash(content: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a notification's content."""
    return hashlib.sha256(canonical(content).encode()).hexdigest()


def content_of(case: Mapping[str, Any], person: Mapping[str, Any], contacts: Sequence[Mapping[str, Any]],
               unit: tuple[str, str]) -> dict[str, Any]:
    """What the written notification holds (§3.1: the case, for SSI and STPS), from the views of the case, its
    person and its contacts, and the responsible unit (id, name)."""
    kinds: dict[str, int] = {}
    for c in contacts:
        kinds[str(c["exposure_kind"])] = kinds.get(str(c["exposure_kind"]), 0) + 1
    content: dict[str, Any] = jsonable({
        "case": case["id"],
        "patient": {"id": person["id"], "ref": person["ref"], "born": person.get("born")},
        "condition": {k: case.get(k) for k in ("onset", "pcr_on", "confirmed_at", "clade", "symptoms",
                                               "symptom_note", "criteria", "sample_sent_on")},
        "isolation": {"mode": case.get("isolation_mode"), "ended_at": case.get("isolation_ended_at")},
        "contacts": {"count": len(contacts), "kinds": dict(sorted(kinds.items()))},
        "unit": {"id": unit[0], "name": unit[1]},
    })
    return content


def flat(content: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"condition.clade": "Ib", ...}``: each value of a content by its path."""
    found: dict[str, Any] = {}
    for key, value in content.items():
        if isinstance(value, Mapping) and key != "kinds":
            found.update(flat(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def differences(sent: Mapping[str, Any], now: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What changed between two contents: each path with its value then and now."""
    before, after = flat(sent), flat(now)
    return [{"field": k, "sent": before.get(k), "now": after.get(k)}
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]


def _div(*lines: str) -> dict[str, Any]:
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def _urn(document: str, resource: Mapping[str, Any]) -> str:
    name = "/".join((document, str(resource["resourceType"]), str(resource["id"])))
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, name)}"


def document_bundle(document: str, content: Mapping[str, Any], case: Mapping[str, Any], person: Mapping[str, Any],
                    made_at: str) -> dict[str, Any]:
    """The notification as a FHIR document Bundle: the Composition first, then the Patient (with the CPR
    identifier: SSI and STPS need it), the Condition and the responsible unit's Organization."""
    unit_id, unit_name = content["unit"]["id"], content["unit"]["name"]
    patient = fhir.patient(person, identity=True)
    condition = fhir.condition(case, {unit_id: unit_name})
    organization = {"resourceType": "Organization", "id": unit_id, "name": unit_name}
    urls = {name: _urn(document, r) for name, r in (("patient", patient), ("condition", condition),
                                                   ("unit", organization))}
    c, iso, contacts = content["condition"], content["isolation"], content["contacts"]
    kinds = ", ".join(f"{n} {kind}" for kind, n in contacts["kinds"].items())
    sections = [
        {"title": SECTIONS["patient"], "text": _div(f"{person['id']}: CPR {person['ref']}",
                                                    f"født {person.get('born') or '–'}"),
         "entry": [{"reference": urls["patient"]}]},
        {"title": SECTIONS["condition"], "text": _div(
            f"Mpox, bekræftet ved PCR (prøve {c['pcr_on'] or '–'}), {c['confirmed_at']}",
            f"Symptomdebut {c['onset'] or 'ingen symptomer'}; symptomer: {', '.join(c['symptoms'] or []) or '–'}",
            f"Klade {c['clade'] or 'ikke kendt endnu'}; kriterier: {', '.join(c['criteria'] or []) or '–'}"),
         "entry": [{"reference": urls["condition"]}]},
        {"title": SECTIONS["isolation"], "text": _div(f"Isolation: {iso['mode'] or '–'}"
                                                      + (f", ophørt {iso['ended_at']}" if iso["ended_at"] else ""))},
        {"title": SECTIONS["contacts"], "text": _div(f"{contacts['count']} nære kontakter" + (f": {kinds}"
                                                                                             if kinds else ""))},
        {"title": SECTIONS["unit"], "text": _div(unit_name), "entry": [{"reference": urls["unit"]}]},
    ]
    composition = {
        "resourceType": "Composition", "id": document,
        "extension": [{"url": fhir.RULE, "valueString": S3_1},
                      {"url": CONTENT_EXT, "valueString": canonical(content)},
                      {"url": fhir.EXT + "content-hash", "valueString": content_hash(content)}],
        "status": "final", "type": CASE_REPORT, "subject": {"reference": urls["patient"]}, "date": made_at,
        "author": [{"reference": urls["unit"], "display": unit_name}], "title": TITLE,
        "custodian": {"reference": urls["unit"]}, "section": sections,
    }
    entries = [{"fullUrl": _urn(document, composition), "resource": composition},
               *({"fullUrl": urls[k], "resource": r} for k, r in (("patient", patient), ("condition", condition),
                                                                  ("unit", organization)))]
    return {"resourceType": "Bundle", "id": document,
            "identifier": {"system": "urn:mpoxflow:notification-document", "value": document},
            "type": "document", "timestamp": made_at, "entry": entries}


def stored_content(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The content a stored document holds (its Composition's). A purged document's (issue 19) holds none: NotFound
    (``document_purged`` tells it first)."""
    if document_purged(bundle) is not None:
        raise NotFound("document", "document", hint="its content was deleted by a retention purge")
    composition = bundle["entry"][0]["resource"]
    text = next(e["valueString"] for e in composition["extension"] if e["url"] == CONTENT_EXT)
    return json.loads(text)  # type: ignore[no-any-return]


def document_view(row: NotificationDocument, *, current: str | None = None) -> dict[str, Any]:
    view = {"id": format_id("document", row.id), "kind": "document", "case": format_id("case", row.case_id),
            "channel": row.channel, "made_at": instant(row.made_at), "made_by": row.made_by,
            "case_version": row.case_version, "content_hash": row.content_hash, "sent_at": instant(row.sent_at),
            "sent_by": row.sent_by, "rule": S3_1, "bundle": row.bundle}
    purged = document_purged(row.bundle)
    if purged is not None:  # issue 19: its Bundle (the CPR number) deleted with its case's person; id, hash kept
        view["purged"] = purged
    if current is not None:
        view["up_to_date"] = current == row.content_hash
    return view


class Documents:
    """Written notifications: made (one unit of work, audited), read (in the viewer's units), sent (``apply`` of
    ``notify`` with a document), and the cases changed since theirs was sent."""

    def __init__(self, runtime: Runtime, commands: Commands) -> None:
        self.runtime = runtime
        self.commands = commands

    def _content(self, repo: Repository, row: Any, tree: UnitTree | None = None) -> tuple[dict[str, Any], ...]:
        """(content, case view, person view) of a case row as it is now."""
        case = object_view("case", row, [])
        person = person_view(repo.person(row.person_id))
        contacts = [object_view("contact", c, []) for c in repo.objects_linked("contact", "case_id", row.id)]
        names = (tree or UnitTree.load(repo)).names
        unit = row.unit_id or 1
        return content_of(case, person, contacts, (format_id("unit", unit), names.get(unit, ""))), case, person

    def _contents(self, session: Any, pks: Sequence[int],
                  names: Mapping[int, str]) -> dict[int, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        """``_content`` of many cases, from one query each for the cases, their persons and their contacts."""
        if not pks:
            return {}
        cases = list(session.scalars(select(Case).where(Case.id.in_(pks))))
        persons = {p.id: p for p in session.scalars(select(Person).where(Person.id.in_({c.person_id
                                                                                          for c in cases})))}
        contacts: dict[int, list[dict[str, Any]]] = {}
        for c in session.scalars(select(Contact).where(Contact.case_id.in_(pks)).order_by(Contact.id)):
            contacts.setdefault(c.case_id, []).append(object_view("contact", c, []))
        found = {}
        for row in cases:
            case, person = object_view("case", row, []), person_view(persons[row.person_id])
            unit = row.unit_id or 1
            found[row.id] = (content_of(case, person, contacts.get(row.id, []),
                                        (format_id("unit", unit), names.get(unit, ""))), case, person)
        return found

    # ---- making ---------------------------------------------------------------------------------------------

    def make(self, case_id: str, *, actor: str, reason: str | None = None) -> dict[str, Any]:
        """Make the written notification of a confirmed case from the case as it is now; returns the document's
        view (with ``audit_seq``). RuleRefused unless the case is confirmed (§3.1), NotFound, OutsideUnits,
        NotPermitted (audited)."""
        _, pk = parse_id(case_id, kind="case")
        label = format_id("case", pk)
        with unit_of_work(self.runtime, actor, "case document", label) as uow:
            now = uow.now()
            row = uow.repo.workflow_object("case", pk)
            units.check_acts_on(uow, "case", pk, row.unit_id, "case document")
            refuse_purged_object(uow, "case", row)
            if row.confirmed_at is None or row.state == "discarded":
                raise RuleRefused(because(
                    "%(case)s is %(state)s, not a confirmed case: the written notification to SSI and STPS is made "
                    "for a case confirmed by PCR (§3.1); confirm it first (`mpoxflow case confirm %(case)s`)",
                    case=label, state=row.state), rule=S3_1, key="not_confirmed")
            content, case, person = self._content(uow.repo, row)
            digest = content_hash(content)
            document = NotificationDocument(case_id=pk, channel="written", made_at=now, made_by=uow.actor.name,
                                            case_version=row.version, content_hash=digest, bundle={})
            uow.session.add(document)
            uow.session.flush()
            doc_id = format_id("document", document.id)
            document.bundle = document_bundle(doc_id, content, case, person, str(instant(now)))
            seq = uow.audit(
                Head.of(row), kind="case", pk=pk, workflow=row.workflow, trigger="document", from_state=row.state,
                to_state=row.state, actor=uow.actor, reason=(reason or "").strip() or None, now=now, rule=S3_1,
                data={"document": doc_id, "content_hash": digest}, changes=None,
                unit=units.acting_unit(uow, uow.actor, row.unit_id)).seq
            uow.session.flush()
            uow.save_clock()
            view = {**document_view(document, current=digest), "audit_seq": seq}
            log.info("notification_document_made", case=label, document=doc_id, audit_seq=seq)
            uow.commit()
            person_id = row.person_id
        self.runtime.reads.shown("document", [person_id], actor=actor)  # its Bundle holds the CPR number
        return view

    # ---- reading --------------------------------------------------------------------------------------------

    def show(self, document_id: str) -> dict[str, Any]:
        """One document (its Bundle, whether it still holds the case as it is: ``up_to_date``); NotFound,
        OutsideUnits for a case outside the viewer's units."""
        pk = parse_document(document_id, "id")
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            row = session.get(NotificationDocument, pk)
            if row is None:
                raise NotFound(format_id("document", pk), "document",
                               hint="a case's documents are listed on its page (`/objects/case-N`)")
            case = repo.workflow_object("case", row.case_id)
            check_reads(reader_scope(repo, self.runtime.viewer), "case", row.case_id, case.unit_id)
            view = document_view(row, current=content_hash(self._content(repo, case)[0]))
        self.runtime.reads.shown("document", [case.person_id])  # its Bundle holds the CPR number
        return view

    def of_case(self, case_id: str) -> list[dict[str, Any]]:
        """A case's documents, oldest first (without their Bundles), each with ``up_to_date``."""
        _, pk = parse_id(case_id, kind="case")
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            case = repo.workflow_object("case", pk)
            check_reads(reader_scope(repo, self.runtime.viewer), "case", pk, case.unit_id)
            rows = session.scalars(select(NotificationDocument).where(NotificationDocument.case_id == pk)
                                   .order_by(NotificationDocument.id)).all()
            current = content_hash(self._content(repo, case)[0]) if rows else None
            return [{k: v for k, v in document_view(r, current=current).items() if k != "bundle"} for r in rows]

    def changed_since_sent(self, case_id: str | None = None) -> list[dict[str, Any]]:
        """Open confirmed cases whose written notification holds them no more: the content now differs from
        their last sent document's. Each: the case, its person (and ``ref``, for staff), the sent document, when
        it was sent, what differs (``changes``), the rule. Only the viewer's units' cases."""
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            scope = reader_scope(repo, self.runtime.viewer)
            last = (select(NotificationDocument.case_id, func.max(NotificationDocument.id).label("id"))
                    .where(NotificationDocument.sent_at.is_not(None)).group_by(NotificationDocument.case_id)
                    .subquery())
            touched = (select(Contact.id).where(Contact.case_id == Case.id)
                       .where(or_(Contact.updated_at >= NotificationDocument.made_at,
                                  Contact.created_at >= NotificationDocument.made_at)).exists())
            query = (select(NotificationDocument.id.label("document_pk"), NotificationDocument.content_hash,
                            NotificationDocument.sent_at, Case.id.label("case_pk"))
                     .join(last, last.c.id == NotificationDocument.id)
                     .join(Case, Case.id == NotificationDocument.case_id)
                     .where(Case.state.in_(FOLLOWED))
                     .where(or_(Case.version > NotificationDocument.case_version + 1, touched))
                     .order_by(NotificationDocument.sent_at, NotificationDocument.id))
            if case_id is not None:
                query = query.where(Case.id == parse_id(case_id, kind="case")[1])
            if scope is not None:
                query = query.where(Case.unit_id.in_(sorted(scope.units or ())))
            candidates = session.execute(query).all()
            contents = self._contents(session, [c.case_pk for c in candidates], UnitTree.load(repo).names)
            found = []
            for document_pk, sent_hash, sent_at, pk in candidates:
                content, case, person = contents[pk]
                if content_hash(content) == sent_hash:
                    continue
                sent = session.get(NotificationDocument, document_pk)  # its Bundle, for what differs
                assert sent is not None
                found.append({"object": case["id"], "kind": "case", "state": case["state"], "person": person["id"],
                              "ref": person["ref"], "document": format_id("document", document_pk),
                              "sent_at": instant(sent_at),
                              "changes": differences(stored_content(sent.bundle), content), "rule": S3_1,
                              "unit": case["unit"], "changed_since_sent": True})
        self.runtime.reads.shown("ref", [item["person"] for item in found])  # each item carries its ref
        return found

    # ---- sending: ``notify`` with a document ----------------------------------------------------------------

    def apply(self, object_id: str, trigger: str, *, data: Mapping[str, Any] | None = None, actor: str,
              reason: str | None = None, expected_version: int | None = None,
              kind: str | None = None) -> dict[str, Any]:
        """``Commands.apply``, but a case's ``notify`` with a ``document`` sends that document (``send``)."""
        given = dict(data or {})
        document = given.pop("document", None) if "document" in given else None
        if trigger != "notify" or document is None or kind not in (None, "case"):
            return self.commands.apply(object_id, trigger, data=given, actor=actor, reason=reason,
                                       expected_version=expected_version, kind=kind)
        return self.send(object_id, document, data=given, actor=actor, reason=reason,
                         expected_version=expected_version)

    def send(self, case_id: str, document: str, *, data: Mapping[str, Any], actor: str, reason: str | None = None,
             expected_version: int | None = None) -> dict[str, Any]:
        """Record the written notification sent with ``document`` (§3.1): the notify transition with the document's
        id and hash in its entry, and the document's ``sent_at``/``sent_by``, in one transaction. RuleRefused for
        another case's document, one sent already, one made before the case changed; and, for a case notified
        already, unless its last sent document is out of date (then this is an updated notification)."""
        _, pk = parse_id(case_id, kind="case")
        label = format_id("case", pk)
        if data.get("channel") != "written":
            raise UsageError(because("a document is the written notification: give ⟦channel⟧ written with "
                                     "⟦document⟧ (the phone notification has none)"))
        doc_pk = parse_document(document)
        doc_id = format_id("document", doc_pk)
        self.commands._check_input({**data, "document": document}, reason)
        check_count(expected_version, "⟦if_version⟧", low=1, high=MAX_ID)
        with unit_of_work(self.runtime, actor, "case notify", label) as uow:
            row = self.commands.load_for_change(uow, "case", pk, "case notify", expected_version)
            sending = uow.session.get(NotificationDocument, doc_pk)
            if sending is None:
                raise NotFound(doc_id, "document", hint=f"make one with `mpoxflow case document {label}`")
            if sending.case_id != pk:
                raise RuleRefused(because(
                    "%(document)s is the notification of %(other)s, not of %(case)s: send this case's own (`mpoxflow "
                    "case document %(case)s` makes it) with ⟦document⟧", document=doc_id,
                    other=format_id("case", sending.case_id), case=label), rule=S3_1, key="document_of_another_case")
            if sending.sent_at is not None:
                raise RuleRefused(because(
                    "%(document)s was sent already (%(at)s): an updated notification is a new document (`mpoxflow "
                    "case document %(case)s`)", document=doc_id, at=instant(sending.sent_at), case=label),
                    rule=S3_1, key="document_sent")
            current = content_hash(self._content(uow.repo, row)[0])
            if current != sending.content_hash:
                raise RuleRefused(because(
                    "%(document)s was made from %(case)s as it was before a change: it no longer holds the case as "
                    "it is. Make a new document (`mpoxflow case document %(case)s`) and send that one with "
                    "⟦document⟧", document=doc_id, case=label), rule=S3_1, key="document_out_of_date")
            sent = uow.session.scalars(select(NotificationDocument).where(NotificationDocument.case_id == pk)
                                       .where(NotificationDocument.sent_at.is_not(None))
                                       .order_by(NotificationDocument.id.desc()).limit(1)).first()
            given = {**data, "document": doc_id, "content_hash": current}
            if row.written_notified_at is not None:
                if sent is None or sent.content_hash == current:
                    raise RuleRefused(because(
                        "the written notification of %(case)s is recorded already, and no document sent with it is "
                        "out of date: there is nothing to notify again (§3.1)", case=label), rule=S3_1,
                        key="notified_up_to_date")
                given["updates"] = format_id("document", sent.id)  # §3.1 an updated notification
            now = uow.now()
            changed = self.commands.transition(
                uow, definition=BY_NAME[row.workflow], kind="case", row=row,
                timers=uow.repo.object_timers("case", pk), trigger="notify", data=given, actor=uow.actor,
                reason=reason, now=now)
            sending.sent_at, sending.sent_by = now, uow.actor.name
            uow.session.flush()
            uow.save_clock()
            log.info("notification_document_sent", case=label, document=doc_id, audit_seq=changed.audit_seq)
            uow.commit()
        return changed.view()

