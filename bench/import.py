"""Bulk import throughput: ``mpoxflow import contacts FILE`` against the same rows through the Python API.

    .venv/bin/python bench/import.py [--rows N] [--backend sqlite|postgresql|both] [--pg-url URL]

Per backend (default SQLite only, as the target is stated) two scratch databases (bench/harness.py) on a simulated
clock, each with a confirmed case consenting to tracing (``case-1``, onset 2025-02-10). A contact list of N rows
(default 10,000) is made as a ward sends one (not timed): Danish headers (``CPR-nr.;Fødselsdato;Dato for
eksponering;Kontakttype;Risiko;Begrundelse``), a byte-order mark, ``;``, dates typed ``dd.mm.åååå``,
``dd-mm-åååå``, ``d/m/åååå`` and ISO, a realistic mix of exposure kinds in Danish (household and sexual most, then
face to face, intact skin, cleaning, passengers, health staff without and with protective equipment, some of
these with a clinician's assessment), birth dates on a third of the rows, about 2% rows repeated, 1% empty lines
and 1% health staff with equipment and no assessment (refused by §5.1). Then, timed:

* import: ``mpoxflow --db URL import contacts FILE --case case-1 --json`` in a process of its own (the console
  script of the interpreter's environment), the whole command from start to exit;
* api: the same rows, already typed (dates, kinds), through ``Engine.add_person`` (a new reference) and
  ``Engine.open("contact", "add", ...)``, one transaction each, as a script on the Python API would, a refusal
  caught per row.

Checked (exit 1 otherwise): the import exits 0 and reports every row; both databases end with the same contacts
and audit entries of cases, contacts and users (the import's own entry aside), and no more persons in the import's
(the API keeps the new person of a row whose contact is refused: two transactions; an imported row is one);
every audit chain is intact.
Printed: both times, rows per second, and ``ratio import/api``: the import's time over the API's (under 1: the
import is faster). Target: 10,000 rows imported in under 60 s on SQLite.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.harness import ACTOR, BenchFailure, say  # noqa: E402

START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
TARGET_SECONDS, TARGET_ROWS = 60.0, 10_000
#: The exposure kinds of the list, in Danish as staff type them, with their share of the rows.
MIX = (("husstand", "household", 30), ("seksuel", "sexual", 25), ("ansigt til ansigt", "face_to_face", 15),
       ("intakt hud", "intact_skin", 10), ("rengøring", "cleaning", 4), ("passager", "passenger_8h", 5),
       ("sundhedspersonale uden værnemidler", "healthcare_no_ppe", 5),
       ("slimhinde eller beskadiget hud", "mucosa_or_broken_skin", 3),
       ("sundhedspersonale med værnemidler", "healthcare_with_ppe", 3))
HEADER = "CPR-nr.;Fødselsdato;Dato for eksponering;Kontakttype;Risiko;Begrundelse"


def contact_list(n: int, seed: int = 18) -> tuple[bytes, list[dict[str, Any] | None]]:
    """The file's bytes and its rows as the Python API takes them (None: an empty line)."""
    pick = random.Random(seed)
    weights = [share for *_, share in MIX]
    lines, typed = [HEADER], []
    made: list[dict[str, Any]] = []
    while len(typed) < n:
        roll = pick.random()
        if roll < 0.01:
            lines.append("")
            typed.append(None)
            continue
        if roll < 0.03 and made:
            again = pick.choice(made)
            lines.append(again["line"])
            typed.append(again)
            continue
        danish, kind, _ = pick.choices(MIX, weights)[0]
        exposed = date(2025, 2, 12) + timedelta(days=pick.randrange(0, 19))
        born = date(1950, 1, 1) + timedelta(days=pick.randrange(0, 20_000)) if pick.random() < 0.33 else None
        risk, reason = "", ""
        if kind == "healthcare_with_ppe" and pick.random() < 0.7:
            risk, reason = pick.choice(("lav", "middel")), "individuel vurdering: FFP2 og visir"
        elif kind == "face_to_face" and pick.random() < 0.1:
            risk, reason = "lav", "kortvarig, med afstand"
        form = pick.randrange(4)
        shown = (exposed.strftime("%d.%m.%Y"), exposed.strftime("%d-%m-%Y"),
                 f"{exposed.day}/{exposed.month}/{exposed.year}", exposed.isoformat())[form]
        ref = f"{1000000000 + len(made):010d}"
        line = ";".join([ref, born.strftime("%d.%m.%Y") if born else "", shown, danish, risk, reason])
        row = {"ref": ref, "born": born, "exposed": exposed, "kind": kind,
               "risk": {"lav": "low", "middel": "medium"}.get(risk), "reason": reason or None, "line": line}
        made.append(row)
        lines.append(line)
        typed.append(row)
    return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"), typed


def prepare(db: Any) -> None:
    """The confirmed case, consenting to tracing (not timed)."""
    from engine.clock import SimulatedClock
    from engine.core import Engine
    from workflows.registry import BY_OPERATION

    engine = Engine(db, SimulatedClock(START))
    person = engine.add_person(ref="BENCH-CASE", actor=ACTOR)["id"]
    trigger, data = BY_OPERATION["case open"].prepare({"person": person, "onset": date(2025, 2, 10),
                                                       "confirmed": True, "pcr_on": date(2025, 2, 12)})
    assert trigger is not None
    data.pop("person", None)
    engine.open("case", trigger, person=person, data=data, actor=ACTOR)
    engine.apply("case-1", "consent", data={"tracing": True}, actor=ACTOR)


def mpoxflow() -> list[str]:
    """The console script of this interpreter's environment, else the module run as it."""
    script = Path(sys.executable).parent / "mpoxflow"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from entry.cli import main; main()"]


def through_the_cli(url: str, path: str) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "MPOXFLOW_ACTOR": ACTOR}
    seconds, done = harness.timed(lambda: subprocess.run(
        [*mpoxflow(), "--db", url, "import", "contacts", path, "--case", "case-1", "--json"], cwd=harness.REPO_ROOT,
        env=env, capture_output=True, text=True, check=False))
    if done.returncode != 0:
        raise BenchFailure(f"mpoxflow import exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def through_the_api(db: Any, rows: list[dict[str, Any] | None]) -> tuple[float, dict[str, int]]:
    from engine.clock import SimulatedClock
    from engine.core import Engine
    from workflows.errors import MpoxflowError

    engine = Engine(db, SimulatedClock(START))
    counts = {"created": 0, "refused": 0}

    def run() -> None:
        persons: dict[str, str] = {}
        for row in rows:
            if row is None:
                continue
            try:
                person = persons.get(row["ref"])
                if person is None:
                    person = persons[row["ref"]] = engine.add_person(ref=row["ref"], born=row["born"],
                                                                     actor=ACTOR, reason="bulk import")["id"]
                engine.open("contact", "add", person=person, actor=ACTOR, reason=row["reason"] or "bulk import",
                            data={"case": "case-1", "exposed": row["exposed"], "kind": row["kind"],
                                  "risk": row["risk"], "anonymous_via_doctor": False, "reason": row["reason"]})
                counts["created"] += 1
            except MpoxflowError:
                counts["refused"] += 1

    seconds, _ = harness.timed(run)
    return seconds, counts


def census(db: Any) -> dict[str, int]:
    """Persons, contacts and audit entries per object kind (the import's own record and user entry aside)."""
    from sqlalchemy import func, select

    from persistence.models import AuditEntry, Contact, Person

    with db.engine.connect() as connection:
        found = {"persons": connection.scalar(select(func.count()).select_from(Person)),
                 "contacts": connection.scalar(select(func.count()).select_from(Contact))}
        for kind, count in connection.execute(select(AuditEntry.object_kind, func.count()).where(
                AuditEntry.trigger != "import").group_by(AuditEntry.object_kind)):
            found[f"{kind} entries"] = count
    return {k: int(v or 0) for k, v in found.items()}


def run_backend(backend: str, n: int, pg_url: str, table: harness.Table) -> None:
    from engine.clock import SimulatedClock
    from engine.core import Engine

    content, rows = contact_list(n)
    with harness.scratch(backend, pg_url) as databases, tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "kontakter.csv")
        Path(path).write_bytes(content)
        with harness.database(databases.url("import"), start=START) as imported, \
                harness.database(databases.url("api"), start=START) as api:
            prepare(imported)
            prepare(api)
            cli_seconds, view = through_the_cli(str(imported.url), path)
            api_seconds, counts = through_the_api(api, rows)
            if view["counts"]["rows"] != n:
                raise BenchFailure(f"the import reported {view['counts']['rows']} rows of {n}")
            # The same contacts and entries; persons: the API keeps a refused row's new person (its own
            # transaction), the import's row is one piece (none of a refused row is kept).
            mine, theirs = census(imported), census(api)
            persons = mine.pop("persons"), theirs.pop("persons")
            mine.pop("person entries")
            theirs.pop("person entries")
            if mine != theirs or not persons[0] <= persons[1]:
                raise BenchFailure(f"the import and the API wrote differently: {census(imported)} != {census(api)}")
            for db in (imported, api):
                report = Engine(db, SimulatedClock(START)).audit_verify()
                if not report["intact"]:
                    raise BenchFailure(f"audit verify: {report['problems'][:3]}")
    c = view["counts"]
    say(f"{backend:<11} import {cli_seconds:6.1f} s ({n / cli_seconds:6.0f} rows/s)   api {api_seconds:6.1f} s "
        f"({n / api_seconds:6.0f} rows/s)   N={n}: {c['created']} created, {c['present']} present, "
        f"{c['refused']} refused, {c['skipped']} skipped (api: {counts['created']} created, {counts['refused']} "
        "refused or present)")
    harness.ratio("import/api", backend, cli_seconds / api_seconds)
    table.add(backend, n, f"{cli_seconds:.1f}", f"{api_seconds:.1f}", f"{n / cli_seconds:.0f}",
              f"{cli_seconds / api_seconds:.2f}")


def run(args: Any) -> list[harness.Table]:
    table = harness.Table(["Backend", "Rows", "mpoxflow import (s)", "Python API (s)", "Import (rows/s)",
                           "Import / API (time)"])
    for backend in harness.backends(args):
        run_backend(backend, args.rows, args.pg_url, table)
    sqlite = [row for row in table.rows if row[0] == "sqlite"]
    if sqlite:
        projected = float(sqlite[0][2]) * TARGET_ROWS / args.rows
        verdict = "met" if projected < TARGET_SECONDS else "NOT met"
        say(f"target {TARGET_ROWS:,} rows under {TARGET_SECONDS:.0f} s on SQLite: {verdict} "
            f"({'measured' if args.rows == TARGET_ROWS else 'projected from ' + str(args.rows) + ' rows'}: "
            f"{projected:.0f} s)")
    return [table]


if __name__ == "__main__":
    options = harness.parser("Bulk import of a contact list against the same rows through the Python API.")
    options.set_defaults(backend="sqlite")
    options.add_argument("--rows", type=int, default=TARGET_ROWS, help=f"rows of the file (default {TARGET_ROWS})")
    arguments = options.parse_args()
    harness.at_least(arguments, options, rows=1)
    sys.exit(harness.main("import", arguments, run))
