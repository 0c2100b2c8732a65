"""Migration throughput: ``workflow migrate`` of the open contacts to a later definition, against the same updates
by hand (one ordinary audited transition per contact that recomputes its timers).

    .venv/bin/python bench/migrate.py [--contacts N] [--by-hand M] [--sample S]
                                      [--backend sqlite|postgresql|both] [--pg-url URL]

The later definition is the test successor ``contact@SST-mpox-7.1-r2`` (tests/successor.py: monitoring of 14 days
instead of 21), loaded beside the product's as a deployment loads its own (``workflows.registry.register``).

Per backend a template database (bench/harness.py) on a simulated clock at Wednesday 2025-03-19 16:00 Copenhagen
time holds N open contacts (``--contacts``, default 100,000 on SQLite and 10,000 on PostgreSQL, where a run of
100,000 takes 15 minutes) with their cases: copies (bench/seed.py, without their
history: empty chains) of two confirmed cases consenting to tracing, with 8 contacts each that the engine
registered that morning, exposed 2025-03-13 to 2025-03-18 (so that their monitoring ends, 14 days on, fall on both
sides of the change to summer time on 2025-03-30): every §5.1 kind with its Table 1 risk, a clinician's low
(no PEP) and medium, one exposed twice; half of them informed (monitored), half not (exposed, their ``inform_due``
pending). Their pending timers are the real ones: ``inform_due``, the PEP windows and assessment while ahead, and
``monitoring_ends``. Then three copies of it (PostgreSQL: ``CREATE DATABASE ... TEMPLATE``; SQLite: the file), timed:

* dry run: ``Engine.migrate(OLD, NEW, dry_run=True, actor=bench:admin)`` on one copy;
* migrate: ``Engine.migrate(OLD, NEW, actor=bench:admin)`` on another: per contact one audited ``migrated``
  transition, its monitoring end moved to 14 days after its last exposure, its other timers kept (batches of
  engine/migration.py ``BATCH``);
* by hand (the baseline): on the third, for each of the first M contacts (``--by-hand``, default 5,000; 0: all)
  ``Engine.apply(contact, "correct", data={"exposed": <its last recorded exposure's date>}, actor=bench)``: the
  exposure corrected to the same date, the ordinary transition that recomputes every timer of the contact
  (monitoring end and PEP windows, §5.5, §6.2), one transaction each, as staff or a script would.

Checked (exit 1 otherwise): the reports count N considered and N migrated, none refused, the dry run's report
is the real run's (the entries' sequence numbers aside) and the dry run wrote nothing; after the migration every
contact runs under the successor with exactly one pending ``monitoring_ends``, due at 00:00 local on its last
exposure + 15 days (computed here with ``zoneinfo``), and one ``migrated`` entry; the other pending timers are
those before it; the chains of a sample of S contacts (``--sample``, default 1,000, evenly spread) and of their
cases are intact as ``audit verify`` walks them (``persistence.audit.verify_object``; one entry appended to an
empty chain). By hand: every contact corrected has one ``correct`` entry and its monitoring end at last exposure +
22 days (the product's 21 days), its chain intact on the sample.
Printed: the times, objects per second, and ``ratio migrate/by-hand``: the migration's objects/s over the by-hand
transitions' (above 1: the migration is faster).
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.backlog import copies, groups_of, relinked  # noqa: E402
from bench.harness import ACTOR, ADMIN, BenchFailure, say  # noqa: E402
from bench.seed import Seeder, templates  # noqa: E402

#: The contacts migrated by default: 100,000 on SQLite; on PostgreSQL 10,000 (at 100,000 the migration took 6 and
#: the dry run 7 minutes on 2 CPUs, the whole run 15: ``--contacts 100000`` measures them).
DEFAULT_CONTACTS = {"sqlite": 100_000, "postgresql": 10_000}
#: The contacts updated by hand by default (about 60 a second on either backend): the baseline's rate.
DEFAULT_BY_HAND = 5000
DEFAULT_SAMPLE = 1000
OLD, NEW = "contact@SST-mpox-7.1", "contact@SST-mpox-7.1-r2"
DANISH = ZoneInfo("Europe/Copenhagen")
#: The cases' symptom onset; they are confirmed two days later, and their contacts registered on REGISTERED.
ONSET = date(2025, 3, 12)
REGISTERED = date(2025, 3, 19)
#: The databases' simulated clock: the afternoon of the day the contacts were registered.
NOW = datetime(2025, 3, 19, 16, 0, tzinfo=DANISH)
CASES = 2
#: Each case's contacts: (kind, clinician's risk, its reason, day exposed, a second exposure's day, informed).
CONTACTS: tuple[tuple[str, str | None, str | None, int, int | None, bool], ...] = (
    ("household", None, None, 13, None, True),
    ("sexual", None, None, 16, None, False),
    ("intact_skin", None, None, 14, 18, True),
    ("face_to_face", "low", "assessed: no physical contact, droplets unlikely", 17, None, False),
    ("cleaning", None, None, 18, None, True),
    ("passenger_8h", None, None, 15, None, False),
    ("healthcare_with_ppe", "medium", "assessed: the gown was torn during the swab", 17, None, True),
    ("mucosa_or_broken_skin", None, None, 18, None, False),
)
#: The successor's monitoring (tests/successor.py) and the product's: 00:00 local on the last exposure + days + 1.
NEW_DAYS, OLD_DAYS = 14, 21


def outbreak(at: Any) -> list[str]:
    """The confirmed cases with their contacts: the persons' ids, each case's person before its contacts'."""
    made: list[str] = []
    for n in range(CASES):
        engine = at(datetime.combine(ONSET, clock_time(10, 0), DANISH))
        made.append(engine.add_person(ref=f"BENCH-TEMPLATE-CASE-{n}", actor=ACTOR)["id"])
        case = engine.open("case", "open", person=made[-1], actor=ACTOR, data={
            "onset": ONSET, "symptoms": ["rash", "fever"], "criteria": ["msm"]})["id"]
        confirmed = datetime.combine(ONSET + timedelta(days=2), clock_time(11, 0), DANISH)
        at(confirmed).apply(case, "confirm", data={"pcr_on": ONSET + timedelta(days=2), "clade": "IIb"}, actor=ACTOR)
        at(confirmed + timedelta(minutes=30)).apply(case, "consent", data={"tracing": True}, actor=ACTOR)
        for j, (kind, risk, reason, day, again, informed) in enumerate(CONTACTS):
            when = datetime.combine(REGISTERED, clock_time(9, 0), DANISH) + timedelta(minutes=10 * (j + 8 * n))
            person = at(when).add_person(ref=f"BENCH-TEMPLATE-{n}-{j}", actor=ACTOR)["id"]
            contact = at(when).open("contact", "add", person=person, actor=ACTOR, data={
                "case": case, "exposed": date(2025, 3, day), "kind": kind, "risk": risk, "reason": reason,
                "anonymous_via_doctor": False})["id"]
            if again is not None:
                at(when + timedelta(minutes=2)).apply(contact, "expose", actor=ACTOR, data={
                    "exposed": date(2025, 3, again), "kind": "face_to_face", "risk": None, "reason": None})
            if informed:
                at(when + timedelta(minutes=4)).apply(contact, "inform", actor=ACTOR)
            made.append(person)
    return made


def register_successors() -> None:
    """The test successors loaded beside the product's definitions (as the tests' ``registered`` fixture)."""
    from tests.successor import SUCCESSORS
    from workflows.registry import register

    for successor in SUCCESSORS:
        register(successor)


# ---- what the database holds -----------------------------------------------------------------------------------


def contacts_of(db: Any) -> list[dict[str, Any]]:
    """Every contact: id, case, workflow, state, last exposure, the date of its last recorded exposure."""
    from sqlalchemy import select

    from persistence.models import Contact

    table = Contact.__table__
    with db.engine.connect() as connection:
        rows = connection.execute(select(table.c.id, table.c.case_id, table.c.workflow, table.c.state,
                                         table.c.last_exposure_on, table.c.exposures).order_by(table.c.id))
        return [{"id": int(r.id), "case_id": int(r.case_id), "workflow": r.workflow, "state": r.state,
                 "last": r.last_exposure_on, "recorded": date.fromisoformat(r.exposures[-1]["on"])} for r in rows]


def pending_timers(db: Any) -> dict[int, dict[str, list[datetime]]]:
    """Each contact's pending timers: name → due instants (UTC)."""
    from sqlalchemy import select

    from persistence.models import Timer

    table = Timer.__table__
    found: dict[int, dict[str, list[datetime]]] = {}
    with db.engine.connect() as connection:
        for r in connection.execute(select(table.c.object_id, table.c.name, table.c.due_at).where(
                table.c.object_kind == "contact", table.c.status == "pending")):
            due = r.due_at if r.due_at.tzinfo is not None else r.due_at.replace(tzinfo=UTC)
            found.setdefault(int(r.object_id), {}).setdefault(r.name, []).append(due.astimezone(UTC))
    return found


def entries_of(db: Any) -> dict[tuple[str, str], int]:
    """Audit entries of contacts and cases by (kind, trigger)."""
    from sqlalchemy import func, select

    from persistence.models import AuditEntry

    with db.engine.connect() as connection:
        return {(kind, trigger): int(n) for kind, trigger, n in connection.execute(
            select(AuditEntry.object_kind, AuditEntry.trigger, func.count())
            .where(AuditEntry.object_kind.in_(["contact", "case"]))
            .group_by(AuditEntry.object_kind, AuditEntry.trigger))}


def ends(last: date, days: int) -> datetime:
    """00:00 Copenhagen time on ``last`` + ``days`` + 1, in UTC (the end of monitoring for ``days`` days)."""
    return datetime.combine(last + timedelta(days=days + 1), clock_time(0, 0), DANISH).astimezone(UTC)


def check_monitoring(db: Any, contacts: list[dict[str, Any]], days: int, workflow: str, what: str,
                     before: dict[int, dict[str, list[datetime]]] | None = None) -> None:
    """Every one of ``contacts`` under ``workflow`` with one pending ``monitoring_ends`` at ``ends(last, days)``,
    and (``before`` given) its other pending timers as they were."""
    now = {c["id"]: c for c in contacts_of(db)}
    timers = pending_timers(db)
    wrong: list[str] = []
    for contact in contacts:
        row, mine = now[contact["id"]], timers.get(contact["id"], {})
        if row["workflow"] != workflow:
            wrong.append(f"contact-{row['id']} runs under {row['workflow']}")
        elif mine.get("monitoring_ends") != [ends(row["last"], days)]:
            wrong.append(f"contact-{row['id']} (last exposure {row['last']}): monitoring_ends pending "
                         f"{mine.get('monitoring_ends')}, expected [{ends(row['last'], days)}]")
        elif before is not None and {k: v for k, v in mine.items() if k != "monitoring_ends"} != {
                k: v for k, v in before.get(contact["id"], {}).items() if k != "monitoring_ends"}:
            wrong.append(f"contact-{row['id']}: other pending timers {mine}, before {before.get(contact['id'])}")
    if wrong:
        raise BenchFailure(f"{what}: {len(wrong)} contacts wrong, the first: {wrong[:3]}")


def check_chains(db: Any, contacts: list[dict[str, Any]], sample: int, entries: int, what: str) -> int:
    """The chains and heads of ``sample`` contacts spread evenly over ``contacts``, and of their cases, verified
    as ``audit verify`` walks them (a copy's empty chain, no entries and an empty head, has nothing to walk); each
    contact with ``entries`` entries. Returns the contacts verified."""
    from persistence.audit import Head, Verification, verify_object
    from persistence.repository import Repository, format_id

    step = max(1, len(contacts) // max(1, sample))
    chosen = contacts[::step][:sample]
    report = Verification()
    counts: list[str] = []
    with db.snapshot() as session:
        repo = Repository(session)
        for kind, pk in [*(("contact", c["id"]) for c in chosen),
                         *(("case", pk) for pk in sorted({c["case_id"] for c in chosen}))]:
            history = [dict(e._mapping) for e in repo.object_history(kind, pk)]
            head = Head.of(repo.head_row(kind, pk))
            if kind == "contact" and len(history) != entries:
                counts.append(f"contact-{pk} has {len(history)} entries")
            if history or head.pos != 0:
                verify_object(format_id(kind, pk), history, head, report)
            # else a copy's empty chain (no entries, an empty head), as the seeder writes it: nothing to walk
    if counts or not report.intact:
        raise BenchFailure(f"{what}: chains of the sample: {counts[:3]} {[p.view() for p in report.problems[:3]]}")
    return len(chosen)


# ---- the phases ---------------------------------------------------------------------------------------------------


def seed(db: Any, groups: list[Any], n: int) -> None:
    from collections import Counter

    started = harness.timed(lambda: Seeder(db).add(copies(groups, n), history=False, adjust=relinked()))[0]
    harness.settle(db)
    contacts = contacts_of(db)
    timers = pending_timers(db)
    states = Counter(c["state"] for c in contacts)
    mix = Counter(name for mine in timers.values() for name, due in mine.items() for _ in due)
    say(f"{db.backend}: {len(contacts)} contacts ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))}) with "
        f"{len({c['case_id'] for c in contacts})} cases, written in {started:.1f} s (not timed); their pending "
        f"timers: {', '.join(f'{k} {v}' for k, v in sorted(mix.items()))}")
    if len(contacts) != n or set(states) - {"exposed", "monitored"}:
        raise BenchFailure(f"the population is {len(contacts)} contacts in {dict(states)}, not {n} open ones")


def stripped(report: dict[str, Any]) -> dict[str, Any]:
    """A report without what a dry run cannot know (the entries' sequence numbers) and the flag itself."""
    return {**{k: v for k, v in report.items() if k != "dry_run"},
            "migrated": [{k: v for k, v in row.items() if k != "audit_seq"} for row in report["migrated"]]}


def run_backend(backend: str, args: Any, groups: list[Any], table: harness.Table) -> None:
    from engine.bootstrap import engine_on
    from workflows.definition import Settings

    n = args.contacts or DEFAULT_CONTACTS[backend]
    with harness.scratch(backend, args.pg_url) as databases:
        with harness.database(databases.url("template"), start=NOW) as db:
            seed(db, groups, n)
            contacts = contacts_of(db)
            before = pending_timers(db)
            check_chains(db, contacts, args.sample, 0, "the copies, before")

        with harness.database(url := databases.url("dry", template="template")) as db:
            dry_seconds, dry = harness.timed(
                lambda: engine_on(db, Settings()).migrate(OLD, NEW, dry_run=True, actor=ADMIN))
            if entries_of(db).get(("contact", "migrated")) or any(c["workflow"] != OLD for c in contacts_of(db)):
                raise BenchFailure("the dry run wrote to the database")
        databases.drop(url)

        with harness.database(url := databases.url("migrate", template="template")) as db:
            migrate_seconds, report = harness.timed(
                lambda: engine_on(db, Settings()).migrate(OLD, NEW, actor=ADMIN))
            counts = report["counts"]
            if counts != {"considered": n, "migrated": n, "not_migrated": 0}:
                raise BenchFailure(f"the migration's report counts {counts}, not {n} migrated: "
                                   f"{report['not_migrated'][:3]}")
            if stripped(dry) != stripped(report):
                raise BenchFailure("the dry run's report is not the migration's")
            check_monitoring(db, contacts, NEW_DAYS, NEW, "after the migration", before)
            if entries_of(db).get(("contact", "migrated")) != n:
                raise BenchFailure(f"{entries_of(db)} audit entries after the migration, not {n} migrated")
            sampled = check_chains(db, contacts, args.sample, 1, "after the migration")
        databases.drop(url)

        hand = contacts[:min(n, args.by_hand or n)]
        with harness.database(url := databases.url("hand", template="template")) as db:
            engine = engine_on(db, Settings())

            def by_hand() -> None:
                for contact in hand:
                    engine.apply(f"contact-{contact['id']}", "correct", data={"exposed": contact["recorded"]},
                                 actor=ACTOR)

            hand_seconds, _ = harness.timed(by_hand)
            check_monitoring(db, hand, OLD_DAYS, OLD, "after the updates by hand")
            if entries_of(db).get(("contact", "correct")) != len(hand):
                raise BenchFailure(f"{entries_of(db)} audit entries after the updates by hand, not {len(hand)}")
            check_chains(db, hand, args.sample, 1, "after the updates by hand")
        databases.drop(url)

    migrate_rate, dry_rate, hand_rate = n / migrate_seconds, n / dry_seconds, len(hand) / hand_seconds
    say(f"{backend:<11} migrate {migrate_seconds:7.1f} s ({migrate_rate:6.0f} objects/s)   dry run "
        f"{dry_seconds:7.1f} s ({dry_rate:6.0f} objects/s)   by hand {hand_seconds:7.1f} s for {len(hand)} "
        f"({hand_rate:6.0f} objects/s)   N={n}; checked: every contact under {NEW}, monitoring ends, "
        f"{sampled} chains of the sample")
    harness.ratio("migrate/by-hand", backend, migrate_rate / hand_rate)
    table.add(backend, n, f"{migrate_seconds:.1f}", f"{migrate_rate:.0f}", f"{dry_seconds:.1f}", f"{dry_rate:.0f}",
              len(hand), f"{hand_rate:.0f}", f"{migrate_rate / hand_rate:.2f}")


def run(args: Any) -> list[harness.Table]:
    register_successors()
    table = harness.Table(["Backend", "Contacts", "Migrate (s)", "Migrate (objects/s)", "Dry run (s)",
                           "Dry run (objects/s)", "By hand (contacts)", "By hand (objects/s)",
                           "Migrate / by hand (objects/s)"])
    groups = groups_of(templates(outbreak, [ACTOR]))
    for backend in harness.backends(args):
        run_backend(backend, args, groups, table)
    harness.say_command("migrate")
    return [table]


if __name__ == "__main__":
    options = harness.parser("workflow migrate of the open contacts to a later definition, against the same "
                             "updates by hand.")
    options.set_defaults(backend="sqlite")
    options.add_argument("--contacts", type=int, default=None,
                         help="open contacts migrated, with their cases (default 100000 on SQLite, 10000 on "
                         "PostgreSQL)")
    options.add_argument("--by-hand", type=int, default=DEFAULT_BY_HAND,
                         help=f"of them, contacts updated by hand for the baseline (default {DEFAULT_BY_HAND}; "
                         "0: all)")
    options.add_argument("--sample", type=int, default=DEFAULT_SAMPLE,
                         help=f"contacts whose chains are verified after each run (default {DEFAULT_SAMPLE})")
    arguments = options.parse_args()
    harness.at_least(arguments, options, by_hand=0, sample=1)
    if arguments.contacts is not None:
        harness.at_least(arguments, options, contacts=1)
    sys.exit(harness.main("migrate", arguments, run))
