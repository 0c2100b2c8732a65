"""Transition throughput: the engine's ``confirm`` against the same SQL written by hand with SQLAlchemy Core.

    .venv/bin/python bench/transitions.py [--n N] [--backend sqlite|postgresql|both] [--pg-url URL]

Per backend a scratch database (bench/harness.py) with its users (``bench:admin``, ``timer``, the staff ``bench``,
the actor of every change) gets 2N suspected cases, one person each: copies of one the engine opened
(bench/seed.py; not timed). Then, timed, one durable transaction per transition:

* engine: ``Engine.apply(case, "confirm", ...)`` on N of them (the actor's role looked up, the person's facts
  read for §3.4, the chase of the test result marked done (§2.1), three tasks armed, the person's courses looked
  up for the §6.3 cascade, the audit entry chained
  after the case's head, the case's values, version check and head in one UPDATE);
* raw (the baseline): the same statements by hand with SQLAlchemy Core on the other N (the actor's units and the
  unit tree read too, to check the case is theirs: issue 17), the transaction begun with
  ``BEGIN IMMEDIATE`` on SQLite as the engine's, the entry chained with the product's ``Head.link``.

Checked (exit 1 otherwise): each phase leaves its N cases confirmed with 3 pending timers, the chase task done, and
1 ``confirm`` entry each; a raw case's rows equal an engine case's (ids and hashes aside); ``Engine.audit_verify()``
finds every chain intact over the expected entries. Target: engine/raw >= 0.5.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.harness import ACTOR, BenchFailure, say  # noqa: E402
from bench.seed import Seeder, templates  # noqa: E402

#: A Monday morning in Copenhagen: the cases are opened then, and confirmed an hour later.
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
CONFIRM_AT = START + timedelta(hours=1)
PCR_ON = date(2025, 3, 3)
TARGET = 0.5
TIMERS = ("phone_notification_due", "written_notification_due", "sequencing_sample_due")
#: The suspected case's task (§2.1, chase the test result) that the confirm does: its timer ends "task done in time".
CHASE, DONE = "test_result_due", "task done in time"


def suspected(at: Any) -> list[str]:
    engine = at(START)
    person = engine.add_person(ref="BENCH-TEMPLATE", actor=ACTOR)["id"]
    engine.open("case", "open", person=person, actor=ACTOR,
                data={"onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})
    return [person]


def raw_confirm(db: Any, settings: Any, clock: Any) -> tuple[Any, Any]:
    """The baseline: ``(confirm(pk), close())``, the engine's statements for a confirm by hand on one connection."""
    from sqlalchemy import bindparam, insert, select, update

    from engine.core import ACTING_ROLES
    from engine.views import jsonable  # the product's JSON form of dates and instants (a pure function)
    from persistence.audit import Head
    from persistence.models import AuditEntry, Case, Course, Membership, Person, Timer, Unit, User
    from workflows.case import (
        S1_1,
        S2_4,
        S3_1,
        SEQUENCING_TASK,
        antiviral_consider,
        phone_notification_due,
        sequencing_sample_due,
        written_notification_due,
    )
    from workflows.person import PersonFacts

    cases, timers, audit, users, courses, persons = (m.__table__ for m in (Case, Timer, AuditEntry, User, Course,
                                                                           Person))
    select_role = select(users.c.role).where(users.c.name == bindparam("name"))
    # Access by unit (issue 17): the actor's units, and the tree, to see the case is theirs to change.
    memberships, unit_table = Membership.__table__, Unit.__table__
    select_units = (select(memberships.c.unit_id).join(users, users.c.id == memberships.c.user_id)
                    .where(users.c.name == bindparam("name")))
    select_tree = select(unit_table.c.id, unit_table.c.parent_id)
    select_case = select(cases).where(cases.c.id == bindparam("pk"))
    select_person = select(persons.c.immunocompromised).where(persons.c.id == bindparam("person"))
    select_courses = select(courses.c.id).where(courses.c.person_id == bindparam("person"), courses.c.state.in_(
        ("offered", "dose1_given", "dose2_due"))).order_by(courses.c.id)
    select_pending = select(timers).where(timers.c.object_kind == "case", timers.c.object_id == bindparam("pk"),
                                          timers.c.status == "pending")
    done_timers = update(timers).where(timers.c.id == bindparam("timer")).values(
        status="cancelled", satisfied_at=bindparam("now"), closed_at=bindparam("now"), note=DONE)
    insert_timers = insert(timers).returning(timers.c.id, sort_by_parameter_order=True)
    insert_audit = insert(audit).returning(audit.c.seq)
    update_case = update(cases).where(cases.c.id == bindparam("pk"), cases.c.version == bindparam("seen")).values(
        state=bindparam("state"), pcr_on=bindparam("pcr_on"), clade=bindparam("clade"),
        confirmed_at=bindparam("confirmed_at"), antiviral_consider=bindparam("antiviral_consider"),
        updated_at=bindparam("updated_at"), version=cases.c.version + 1, audit_pos=bindparam("head_pos"),
        audit_seq=bindparam("head_seq"), audit_hash=bindparam("head_hash"))
    connection = db.engine.execution_options(mpoxflow_write=True).connect()

    def confirm(pk: int) -> None:
        now = clock.now()
        with connection.begin():
            role = connection.execute(select_role, {"name": ACTOR}).scalar_one_or_none()
            if role not in ACTING_ROLES:
                raise BenchFailure(f"{ACTOR} may not change cases (role {role})")
            row = connection.execute(select_case, {"pk": pk}).one()
            mine = set(connection.execute(select_units, {"name": ACTOR}).scalars())
            unit: int | None = row.unit_id
            if 1 not in mine:  # a member of the root may change every case; anyone else: walk up the tree
                parents = {r.id: r.parent_id for r in connection.execute(select_tree)}
                while unit is not None and unit not in mine:
                    unit = parents.get(unit)
            if unit is None:
                raise BenchFailure(f"{ACTOR} may not change case-{pk}: outside their units")
            if row.state != "suspected" or not row.onset <= PCR_ON:
                raise BenchFailure(f"case-{pk} cannot be confirmed (state {row.state})")
            person = PersonFacts(immunocompromised=connection.execute(select_person, {"person": row.person_id})
                                 .scalar_one())
            written = {"pcr_on": PCR_ON, "clade": None, "confirmed_at": now, "state": "confirmed",
                       "antiviral_consider": antiviral_consider(person, bool(row.child))}
            if connection.execute(select_courses, {"person": row.person_id}).first() is not None:
                raise BenchFailure(f"person-{row.person_id} has a course to end: the baseline ends none")
            pending = connection.execute(select_pending, {"pk": pk}).all()
            if [(t.name, t.task is not None, t.satisfied_at) for t in pending] != [(CHASE, True, None)]:
                raise BenchFailure(f"case-{pk} has pending timers other than its {CHASE} task: the baseline re-arms "
                                   "none")
            [chase] = pending
            connection.execute(done_timers, {"timer": chase.id, "now": now})
            armed = [(TIMERS[0], phone_notification_due(now, settings), S3_1, "notify STPS by phone"),
                     (TIMERS[1], written_notification_due(now), S3_1, "notify SSI and STPS in writing"),
                     (TIMERS[2], sequencing_sample_due(now, settings), S2_4, SEQUENCING_TASK)]
            timer_ids = connection.execute(insert_timers, [
                {"object_kind": "case", "object_id": pk, "name": name, "due_at": due_at, "rule": rule, "task": task,
                 "status": "pending", "armed_at": now, "closed_at": None, "satisfied_at": None, "note": None,
                 "unit_id": 1, "assignee_id": None}
                for name, due_at, rule, task in armed]).scalars().all()
            entry = Head.of(row).link({
                "timer_id": None, "object_kind": "case", "object_id": pk, "workflow": row.workflow,
                "trigger": "confirm", "from_state": "suspected", "to_state": "confirmed", "actor": ACTOR,
                "role": role, "reason": None, "at": now, "recorded_at": datetime.now(UTC), "rule": S1_1,
                "data": jsonable({"pcr_on": PCR_ON}),
                "changes": {k: jsonable(v) for k, v in written.items() if jsonable(getattr(row, k)) != jsonable(v)},
                "timers_armed": [{"timer": f"timer-{i}", "name": name, "due_at": jsonable(due_at), "rule": rule,
                                  "task": task, "overdue_at": None}
                                 for i, (name, due_at, rule, task) in zip(timer_ids, armed, strict=True)],
                "timers_cancelled": [{"timer": f"timer-{chase.id}", "name": CHASE, "why": DONE}],
                "timers_done": [{"timer": f"timer-{chase.id}", "name": CHASE}],
                "unit_id": 1,  # the actor's unit that gives access to the case (the root here)
            })
            seq = connection.execute(insert_audit, entry).scalar_one()
            if connection.execute(update_case, {"pk": pk, "seen": row.version, **written, "updated_at": now,
                                                "head_pos": entry["pos"], "head_seq": seq,
                                                "head_hash": entry["hash"]}).rowcount != 1:
                raise BenchFailure(f"case-{pk} was changed meanwhile (version check)")

    return confirm, connection.close


def rows(db: Any, pk: int) -> dict[str, Any]:
    """A case's row, timers and confirm entry, without what differs between two cases (ids, the wall-clock
    ``recorded_at`` and the hashes and sequence numbers that depend on them)."""
    from sqlalchemy import select

    from persistence.models import AuditEntry, Case, Timer

    with db.engine.connect() as connection:
        case = dict(connection.execute(select(Case.__table__).where(Case.id == pk)).one()._mapping)
        timers = [dict(r._mapping) for r in connection.execute(
            select(Timer.__table__).where(Timer.object_kind == "case", Timer.object_id == pk).order_by(Timer.name))]
        entry = dict(connection.execute(select(AuditEntry.__table__).where(
            AuditEntry.object_kind == "case", AuditEntry.object_id == pk, AuditEntry.trigger == "confirm")).one()
            ._mapping)
    for row, keys in ((case, ("id", "person_id", "audit_seq", "audit_hash")),
                      (entry, ("seq", "object_id", "recorded_at", "hash", "prev_seq", "prev_hash")),
                      *((t, ("id", "object_id")) for t in timers)):
        for key in keys:
            row.pop(key)
    for key in ("timers_armed", "timers_cancelled", "timers_done"):
        entry[key] = [{k: v for k, v in t.items() if k != "timer"} for t in entry[key]]
    return {"case": case, "timers": timers, "audit": entry}


def check_phase(db: Any, phase: str, pks: list[int]) -> None:
    from sqlalchemy import func, select

    from persistence.models import AuditEntry, Case, Timer

    with db.engine.connect() as connection:
        found = {
            "confirmed cases": connection.scalar(select(func.count()).where(Case.id.in_(pks),
                                                                            Case.state == "confirmed")),
            "pending timers": connection.scalar(select(func.count()).where(
                Timer.object_kind == "case", Timer.object_id.in_(pks), Timer.status == "pending",
                Timer.name.in_(TIMERS))) / 3,
            "chase tasks done": connection.scalar(select(func.count()).where(
                Timer.object_kind == "case", Timer.object_id.in_(pks), Timer.name == CHASE,
                Timer.status == "cancelled", Timer.note == DONE, Timer.satisfied_at.is_not(None))),
            "confirm entries": connection.scalar(select(func.count()).where(
                AuditEntry.object_kind == "case", AuditEntry.object_id.in_(pks), AuditEntry.trigger == "confirm")),
        }
    wrong = [f"{what} {got} (expected {len(pks)}{' x 3' if what == 'pending timers' else ''})"
             for what, got in found.items() if got != len(pks)]
    if wrong:
        raise BenchFailure(f"after the {phase} phase: " + ", ".join(wrong))


def run_backend(backend: str, n: int, pg_url: str, template: Any, table: harness.Table) -> None:
    from engine.clock import SimulatedClock
    from engine.core import Engine

    with harness.fresh(backend, pg_url, start=START) as db:
        pks = Seeder(db).add([template] * (2 * n))
        engine = Engine(db, SimulatedClock(CONFIRM_AT))
        by_engine, by_hand = pks[:n], pks[n:]
        engine_seconds, _ = harness.timed(lambda: [engine.apply(f"case-{pk}", "confirm", data={"pcr_on": PCR_ON},
                                                        actor=ACTOR) for pk in by_engine])
        check_phase(db, "engine", by_engine)
        confirm, close = raw_confirm(db, engine.settings, engine.clock)
        try:
            raw_seconds, _ = harness.timed(lambda: [confirm(pk) for pk in by_hand])
        finally:
            close()
        check_phase(db, "raw", by_hand)
        if rows(db, by_engine[0]) != rows(db, by_hand[0]):
            raise BenchFailure(f"the baseline does not write what the engine writes: {rows(db, by_hand[0])} != "
                               f"{rows(db, by_engine[0])}")
        report = engine.audit_verify()
        expected = 3 + 3 * 2 * n  # the users' 3; per case its person's, its opening, its confirm
        if not report["intact"] or report["entries"] != expected:
            raise BenchFailure(f"audit verify: intact {report['intact']}, {report['entries']} entries (expected "
                               f"{expected}), the first problems: {report['problems'][:3]}")
    engine_rate, raw_rate = n / engine_seconds, n / raw_seconds
    say(f"{backend:<11} engine {engine_rate:7.1f} tr/s   raw {raw_rate:7.1f} tr/s  (N={n})")
    harness.ratio("engine/raw", backend, engine_rate / raw_rate)
    table.add(backend, n, f"{engine_rate:.1f}", f"{raw_rate:.1f}", f"{engine_rate / raw_rate:.2f}")


def run(args: Any) -> list[harness.Table]:
    template = templates(suspected, [ACTOR])[0]
    table = harness.Table(["Backend", "N", "Engine (transitions/s)", "Raw SQLAlchemy Core (transitions/s)",
                           "Engine / raw"])
    for backend in harness.backends(args):
        run_backend(backend, args.n, args.pg_url, template, table)
    below = [row[0] for row in table.rows if float(row[-1]) < TARGET]
    say(f"target engine/raw >= {TARGET}: " + (f"NOT met on {', '.join(below)}" if below else "met"))
    return [table]


if __name__ == "__main__":
    options = harness.parser("Confirm-transition throughput of the engine against a raw SQLAlchemy Core baseline.")
    options.add_argument("--n", type=int, default=2000, help="transitions per timed phase (default 2000)")
    arguments = options.parse_args()
    harness.at_least(arguments, options, n=1)
    sys.exit(harness.main("transitions", arguments, run))
