"""Notes and contact attempts (issue 17, item 5): what staff write down about an object, and each time they tried
to reach its person.

A **note** goes on a case, contact, course or person (``note ID --text``); a **contact attempt** on a case or a
contact (``attempt ID --channel phone|sms|letter|visit --outcome reached|no-answer|wrong-number --reason``). Both
are append-only: the text is a row of ``notes`` (database triggers refuse UPDATE and DELETE), and each is an audit
entry on the object's own chain (trigger ``note`` / ``attempt``) that names the row (``note-N``) and never holds
a note's text. An attempt's reason is its text (it goes into the entry's reason, as every command's does).

**Counting attempts.** An object's ``failed_attempts`` is the number of attempts that did not reach the person
(no answer, a wrong number) since the last one that did: each such attempt adds one, one that reached the person
sets it back to 0. The attempt writes it as a change of the object (version and audit head in one UPDATE), so
``audit replay --check`` rebuilds it from the log. **Hard to reach** (the rule): an open case or contact with 3
or more failed attempts since the last one that reached the person (``HARD_TO_REACH_AFTER``); the worklist lists
them in a section of their own until someone reaches the person.

**An attempt that reached a contact informs it.** When an attempt reaches the person of a contact whose inform
task is still open (``inform_due``, §5.5; §5.4 for the treating doctor's anonymous tracing: not done and not
resolved), the contact's ``inform`` transition runs in the same unit of work (reason ``from attempt note-N``):
the task is done (or, once missed, resolved as done late) and audited as the command ``contact inform`` is.
"""

from __future__ import annotations

import builtins
import unicodedata
from typing import Any

import structlog

from engine import units
from engine.commands import Commands, refuse_purged, refuse_purged_object
from engine.units import UnitTree
from engine.uow import Runtime, UnitOfWork, unit_of_work
from engine.views import instant
from persistence.audit import Head
from persistence.models import HARD_TO_REACH
from persistence.repository import Repository, format_id, parse_id
from workflows import case, contact
from workflows.errors import Conflict, UsageError, because
from workflows.limits import MAX_LIMIT, MAX_NOTE, check_count, check_text, flag, shown
from workflows.registry import BY_NAME
from workflows.rules import cite

log = structlog.get_logger("mpoxflow.engine")

#: How staff tried to reach the person, and what came of it.
CHANNELS = ("phone", "sms", "letter", "visit")
OUTCOMES = ("reached", "no-answer", "wrong-number")
#: The outcomes that did not reach the person: each counts one failed attempt.
FAILED_OUTCOMES = ("no-answer", "wrong-number")
#: The rule: this many failed attempts since the last one that reached the person make an open case or contact
#: hard to reach (the worklist's section).
HARD_TO_REACH_AFTER = HARD_TO_REACH
#: What a note goes on (a person: the shared register, no unit), and what a contact attempt goes on.
NOTE_KINDS = ("case", "contact", "course", "person")
ATTEMPT_KINDS = ("case", "contact")
#: The section each kind's attempt cites: reaching a case's patient (§3.1), informing a contact (§5.5).
ATTEMPT_RULES = {"case": cite("§3.1"), "contact": cite("§5.5")}
#: The states in which an object can be hard to reach: an open case, a contact still monitored or to inform.
OPEN_STATES = {"case": case.OPEN_STATES, "contact": contact.OPEN}
#: The contact's inform task and the transition that does it (``contact inform``, §5.5).
INFORM_TIMER = "inform_due"
INFORM_TRIGGER = "inform"
#: Hard-to-reach objects listed when no limit is given.
DEFAULT_HARD_TO_REACH = 100


def note_view(row: Any) -> dict[str, Any]:
    """A note or contact attempt as printed (``text`` is an attempt's reason; None once a retention purge removed
    it: ``purged_at`` says when, issue 19)."""
    view = {"id": format_id("note", row.id), "kind": row.kind, "object": format_id(row.object_kind, row.object_id),
            "text": row.text, "channel": row.channel, "outcome": row.outcome, "actor": row.actor,
            "at": instant(row.at)}
    purged = getattr(row, "purged_at", None)
    if purged is not None:
        view["purged_at"] = instant(purged)
    return view


def check_note_text(text: Any) -> str:
    """The note's text, stripped: UsageError (naming ``text``, never echoing it) when empty, too long or with
    control characters other than tab and line breaks."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(because("⟦text⟧ is empty: write the note"))
    body = text.strip()
    if len(body) > MAX_NOTE:
        raise UsageError(because("%(field)s is %(length)s characters long: at most %(limit)s", field=flag("text"),
                                 length=len(body), limit=MAX_NOTE))
    for ch in body:
        if ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cs"):
            raise UsageError(because("%(field)s contains a control character (U+%(code)s): remove it",
                                     field=flag("text"), code=f"{ord(ch):04X}"))
    return body


class Notes:
    """Notes and contact attempts: written (each one unit of work, audited) and read (in the viewer's units)."""

    def __init__(self, runtime: Runtime, commands: Commands | None = None) -> None:
        self.runtime = runtime
        self.commands = commands or Commands(runtime)

    # ---- writing -------------------------------------------------------------------------------------------

    def note(self, object_id: str, *, text: str, actor: str, reason: str | None = None) -> dict[str, Any]:
        """A note on a case, contact, course or person; returns its view with the entry's ``audit_seq``. The
        audit entry (trigger ``note``) names the note and its length, never its text. UsageError (another kind of
        object, an empty or bad text), NotFound, OutsideUnits, NotPermitted (audited)."""
        kind, pk = parse_id(object_id)
        if kind not in NOTE_KINDS:
            raise UsageError(because("%(id)s is a %(kind)s: notes go on cases, contacts, courses and persons",
                                     id=format_id(kind, pk), kind=kind))
        body = check_note_text(text)
        if reason is not None:
            check_text(reason, "reason")
        label = format_id(kind, pk)
        with unit_of_work(self.runtime, actor, "note", label) as uow:
            now = uow.now()
            if kind == "person":
                row = uow.repo.head_row("person", pk)
                refuse_purged(pk, row)
                workflow = state = unit = None
            else:
                row = uow.repo.load_object(kind, pk)
                units.check_acts_on(uow, kind, pk, row.unit_id, "note")
                refuse_purged_object(uow, kind, row)
                workflow, state, unit = row.workflow, row.state, row.unit_id
            note_pk = uow.repo.insert_note({"object_kind": kind, "object_id": pk, "kind": "note", "text": body,
                                            "channel": None, "outcome": None, "actor": uow.actor.name, "at": now})
            note = format_id("note", note_pk)
            seq = uow.audit(
                Head.of(row), kind=kind, pk=pk, workflow=workflow, trigger="note", from_state=state,
                to_state=state, actor=uow.actor, reason=(reason or "").strip() or None, now=now, rule=None,
                data={"note": note, "chars": len(body)}, changes=None,
                unit=units.acting_unit(uow, uow.actor, unit),
            ).seq
            uow.save_clock()
            log.info("note_added", object=label, note=note, audit_seq=seq)
            view = {"id": note, "kind": "note", "object": label, "text": body, "channel": None, "outcome": None,
                    "actor": uow.actor.name, "at": instant(now), "audit_seq": seq}
            uow.commit()
        return view

    def attempt(self, object_id: str, *, channel: str, outcome: str, actor: str,
                reason: str | None) -> dict[str, Any]:
        """A contact attempt on a case or contact (its reason required); returns its view with ``audit_seq``,
        the object's ``failed_attempts`` and ``hard_to_reach`` after it, its ``state``, and ``informed`` (True
        when it reached a contact whose inform task was open: that task is done in the same transaction).
        UsageError (another kind, a bad channel or outcome, no reason), NotFound, OutsideUnits, Conflict,
        NotPermitted (audited)."""
        kind, pk = parse_id(object_id)
        if kind not in ATTEMPT_KINDS:
            raise UsageError(because("%(id)s is a %(kind)s: contact attempts are made on cases and contacts",
                                     id=format_id(kind, pk), kind=kind))
        if channel not in CHANNELS:
            raise UsageError(because("'%(channel)s' is no channel: use phone, sms, letter or visit (⟦channel⟧)",
                                     channel=shown(str(channel))))
        if outcome not in OUTCOMES:
            raise UsageError(because("'%(outcome)s' is no outcome of an attempt: use reached, no-answer or "
                                     "wrong-number (⟦outcome⟧)", outcome=shown(str(outcome))))
        if not (reason or "").strip():
            raise UsageError(because("say how the attempt went with ⟦reason⟧: it goes into the audit entry"))
        assert reason is not None
        text = check_text(reason.strip(), "reason")
        label = format_id(kind, pk)
        with unit_of_work(self.runtime, actor, "attempt", label) as uow:
            now = uow.now()
            row = uow.repo.load_object(kind, pk)
            units.check_acts_on(uow, kind, pk, row.unit_id, "attempt")
            refuse_purged_object(uow, kind, row)
            failed = 0 if outcome == "reached" else (row.failed_attempts or 0) + 1
            note_pk = uow.repo.insert_note({"object_kind": kind, "object_id": pk, "kind": "attempt", "text": text,
                                            "channel": channel, "outcome": outcome, "actor": uow.actor.name,
                                            "at": now})
            note = format_id("note", note_pk)
            head = uow.audit(
                Head.of(row), kind=kind, pk=pk, workflow=row.workflow, trigger="attempt", from_state=row.state,
                to_state=row.state, actor=uow.actor, reason=text, now=now, rule=ATTEMPT_RULES[kind],
                data={"note": note, "channel": channel, "outcome": outcome}, changes={"failed_attempts": failed},
                move_head=False, unit=units.acting_unit(uow, uow.actor, row.unit_id),
            )
            values = {"failed_attempts": failed, "updated_at": now, "audit_pos": head.pos, "audit_seq": head.seq,
                      "audit_hash": head.hash}
            if not uow.update_object(kind, pk, row.version, values):
                raise Conflict(f"{label} was changed by someone else meanwhile; nothing was written. Show it again "
                               "and retry.")
            informed = outcome == "reached" and kind == "contact" and self._inform(uow, pk, note, now)
            state = uow.repo.load_object(kind, pk).state
            uow.save_clock()
            log.info("contact_attempt", object=label, note=note, channel=channel, outcome=outcome,
                     failed_attempts=failed, informed=informed, audit_seq=head.seq)
            view = {"id": note, "kind": "attempt", "object": label, "text": text, "channel": channel,
                    "outcome": outcome, "actor": uow.actor.name, "at": instant(now), "audit_seq": head.seq,
                    "failed_attempts": failed, "hard_to_reach": failed >= HARD_TO_REACH_AFTER, "state": state,
                    "informed": informed}
            uow.commit()
        return view

    def _inform(self, uow: UnitOfWork, pk: int, note: str, now: Any) -> bool:
        """§5.5: the contact was reached, so it is informed, when its inform task is still open (neither done nor
        resolved) and the contact can be informed from its state; the ``inform`` transition, as ``contact
        inform`` runs it. False when there was nothing to inform."""
        row = uow.repo.load_object("contact", pk)
        definition = BY_NAME[row.workflow]
        if definition.spec(INFORM_TRIGGER, row.state) is None:
            return False
        timers = uow.repo.object_timers("contact", pk)
        if not any(t.name == INFORM_TIMER and t.task is not None and t.satisfied_at is None
                   and t.resolved_at is None and t.status in ("pending", "fired", "missed") for t in timers):
            return False
        self.commands.transition(uow, definition=definition, kind="contact", row=row, timers=timers,
                                 trigger=INFORM_TRIGGER, data={}, actor=uow.actor, reason=f"from attempt {note}",
                                 now=now)
        return True

    # ---- reading -------------------------------------------------------------------------------------------

    def notes_of(self, object_id: str, *, glass: bool = False) -> builtins.list[dict[str, Any]]:
        """An object's notes and contact attempts, oldest first. OutsideUnits for a case, contact or course outside
        the viewer's units (``Runtime.viewer``), unless ``glass`` (the reading was recorded); a person's are
        everyone's (the shared register). UsageError for a kind that has none, NotFound."""
        kind, pk = parse_id(object_id)
        if kind not in NOTE_KINDS:
            raise UsageError(because("%(id)s is a %(kind)s: notes go on cases, contacts, courses and persons",
                                     id=format_id(kind, pk), kind=kind))
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            if kind == "person":
                repo.person(pk)  # NotFound
            else:
                units.check_reads(units.reader_scope(repo, self.runtime.viewer), kind, pk,
                                  repo.load_object(kind, pk).unit_id, glass=glass)
            return [note_view(r) for r in repo.notes_of(kind, pk)]

    def hard_to_reach(self, limit: int = DEFAULT_HARD_TO_REACH) -> builtins.list[dict[str, Any]]:
        """Open cases and contacts of the viewer's units with ``HARD_TO_REACH_AFTER`` or more failed contact
        attempts since the last one that reached the person: cases first, then contacts, each by id, at most
        ``limit``. Each item: ``object``, ``kind``, ``state``, ``failed_attempts``, ``hard_to_reach`` (True), the
        rule, its person (``person``, ``ref``: the reference staff see, never logged), a contact's ``case``, its
        unit and assignee, and the last attempt (``last_attempt_at``, ``last_channel``, ``last_outcome``)."""
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise UsageError(f"⟦limit⟧: give a whole number from 1 to {MAX_LIMIT}")
        check_count(limit, "⟦limit⟧", low=1, high=MAX_LIMIT)
        found: builtins.list[dict[str, Any]] = []
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            scope = units.reader_scope(repo, self.runtime.viewer)
            scoped = None if scope is None else sorted(scope.units or ())
            rows: builtins.list[tuple[str, Any]] = []
            for kind in ATTEMPT_KINDS:
                rows += [(kind, r) for r in repo.hard_to_reach(kind, OPEN_STATES[kind], HARD_TO_REACH_AFTER,
                                                               scoped, limit - len(rows))]
                if len(rows) >= limit:
                    break
            if not rows:
                return []
            context = repo.worklist_context([(kind, r.id) for kind, r in rows])
            last = {kind: repo.last_attempts(kind, [r.id for k, r in rows if k == kind]) for kind in ATTEMPT_KINDS}
            names = UnitTree.load(repo).names
            users = repo.user_names([r.assignee_id for _, r in rows if r.assignee_id is not None])
        for kind, row in rows:
            extra = context.get((kind, row.id), {})
            attempt = last[kind].get(row.id)
            item: dict[str, Any] = {
                "object": format_id(kind, row.id), "kind": kind, "state": row.state,
                "failed_attempts": row.failed_attempts, "hard_to_reach": True, "rule": ATTEMPT_RULES[kind],
                "person": format_id("person", row.person_id), "ref": extra.get("ref"),
                "case": format_id("case", row.id) if kind == "case" else format_id("case", row.case_id),
                "unit": format_id("unit", row.unit_id or 1), "unit_name": names.get(row.unit_id or 1),
                "assignee": None if row.assignee_id is None else format_id("user", row.assignee_id),
                "assignee_name": None if row.assignee_id is None else users.get(row.assignee_id),
                "last_attempt_at": None if attempt is None else instant(attempt.at),
                "last_channel": None if attempt is None else attempt.channel,
                "last_outcome": None if attempt is None else attempt.outcome,
            }
            found.append(item)
        self.runtime.reads.shown("ref", [item["person"] for item in found])  # each item carries its ref
        return found



__all__ = ["ATTEMPT_KINDS", "CHANNELS", "HARD_TO_REACH_AFTER", "NOTE_KINDS", "OUTCOMES", "Notes"]
