"""Chains of transmission: ``Chains.clusters`` and ``Chains.cluster`` over 100,000 contacts, on SQLite and PostgreSQL.

    .venv/bin/python bench/chains.py [--contacts N] [--cases C] [--runs R] [--backend sqlite|postgresql|both]

Per backend a scratch database (bench/harness.py) gets C confirmed cases (``--cases``, default 10,000) and N
contacts (``--contacts``, default 100,000), copies (bench/seed.py, without history or timers: the chains read
neither) of one case and one contact the engine made. The cases form chains of 5 (each case but every fifth has
the one before as its ``source_case``), the contacts are dealt out over the cases in turn, and every tenth contact
of a case that has a next one in its chain became that case (``became_case``): C / 5 clusters of 5 cases and
N / C * 5 contacts each. Then, timed, median of R runs (``--runs``, default 5) after one warm-up: the whole list
(``Chains.clusters``: the two queries and the union-find) and one cluster's nodes and edges (``Chains.cluster``),
against the baseline: the same two queries alone, as SQL text on a held connection (``ratio queries/clusters``).

Checked (exit 1 otherwise): the list has C / 5 clusters, each with 5 cases, the contacts add up to N, and the
cluster drawn has the edges its links make.
"""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.harness import ACTOR, BenchFailure, say  # noqa: E402
from bench.seed import Seeder, repeat, templates  # noqa: E402

START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
CHAIN = 5
RAW_SQL = ("SELECT id, state, onset, pcr_on, source_case, sources, from_contact, unit_id FROM cases ORDER BY id",
           "SELECT id, state, case_id, last_exposure_on, exposure_kind, became_case, symptoms_onset, unit_id "
           "FROM contacts ORDER BY id")


def made(at: Any) -> list[str]:
    """A confirmed case and a contact of it: their persons' ids."""
    engine = at(START)
    case_person = engine.add_person(ref="BENCH-CASE", actor=ACTOR)["id"]
    case = engine.open("case", "open", person=case_person, actor=ACTOR, data={
        "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    engine.apply(case, "confirm", data={"pcr_on": date(2025, 3, 2)}, actor=ACTOR)
    engine.apply(case, "consent", data={"tracing": True}, actor=ACTOR)
    contact_person = engine.add_person(ref="BENCH-CONTACT", actor=ACTOR)["id"]
    engine.open("contact", "add", person=contact_person, actor=ACTOR, data={
        "case": case, "exposed": date(2025, 3, 2), "kind": "sexual"})
    return [case_person, contact_person]


def run_backend(backend: str, args: Any, units: list[Any], table: harness.Table) -> None:
    from sqlalchemy import text

    from engine.chains import Chains
    from engine.clock import SimulatedClock
    from engine.core import Engine

    case_unit, contact_unit = units
    with harness.fresh(backend, args.pg_url, start=START) as db:
        seeder = Seeder(db)

        def chained(copy: Any) -> None:
            row = copy.objects[0][1]
            if row["id"] % CHAIN != 1:
                row["source_case"] = f"case-{row['id'] - 1}"
            copy.timers.clear()

        cases = seeder.add(repeat([case_unit], args.cases), history=False, adjust=chained)
        dealt = iter(range(args.contacts))

        def dealt_out(copy: Any) -> None:
            i = next(dealt)
            row = copy.objects[0][1]
            row["case_id"] = cases[i % len(cases)]
            if i % 10 == 0 and row["case_id"] % CHAIN != 0:
                row["became_case"] = f"case-{row['case_id'] + 1}"
            copy.timers.clear()

        seeder.add(repeat([contact_unit], args.contacts), history=False, adjust=dealt_out)
        harness.settle(db)
        chains = Chains(Engine(db, SimulatedClock(START)).runtime)
        listed = chains.clusters()  # warm-up
        if len(listed) != args.cases // CHAIN or {c["cases"] for c in listed} != {CHAIN} \
                or sum(c["contacts"] for c in listed) != args.contacts:
            raise BenchFailure(f"{len(listed)} clusters, of {sorted({c['cases'] for c in listed})} cases, "
                               f"{sum(c['contacts'] for c in listed)} contacts")
        one = chains.cluster(listed[0]["id"])
        links = {e["link"] for e in one["edges"]}
        if not {"exposure", "source", "became"} <= links or len(one["nodes"]) != CHAIN + one["contacts"]:
            raise BenchFailure(f"{listed[0]['id']}: links {sorted(links)}, {len(one['nodes'])} nodes")
        times: dict[str, list[float]] = {"list": [], "one": [], "queries": []}
        with db.engine.connect() as connection:
            def queries() -> int:  # the baseline: the two reads alone, as SQL text on a held connection
                found = sum(len(connection.execute(text(sql)).all()) for sql in RAW_SQL)
                connection.rollback()
                return found

            for _ in range(args.runs):
                times["list"].append(harness.timed(chains.clusters)[0])
                times["one"].append(harness.timed(lambda: chains.cluster(listed[0]["id"]))[0])
                seconds, rows = harness.timed(queries)
                times["queries"].append(seconds)
                if rows != args.cases + args.contacts:
                    raise BenchFailure(f"the queries read {rows} rows")
    list_ms, one_ms, raw_ms = (1000 * harness.median(times[k]) for k in ("list", "one", "queries"))
    say(f"{backend:<11} clusters {list_ms:8.1f} ms   one cluster {one_ms:8.1f} ms   the queries alone {raw_ms:8.1f} "
        f"ms   (median of {args.runs}; {args.cases} cases, {args.contacts} contacts, {len(listed)} clusters)")
    harness.ratio("queries/clusters time", backend, raw_ms / list_ms)
    table.add(backend, args.cases, args.contacts, len(listed), f"{list_ms:.0f}", f"{one_ms:.0f}", f"{raw_ms:.0f}")


def run(args: Any) -> list[harness.Table]:
    units = templates(made, [ACTOR])
    table = harness.Table(["Backend", "Cases", "Contacts", "Clusters", "All clusters (ms)", "One cluster (ms)",
                           "The two queries alone (ms)"])
    for backend in harness.backends(args):
        run_backend(backend, args, units, table)
    return [table]


if __name__ == "__main__":
    options = harness.parser("Chains of transmission: Chains.clusters and Chains.cluster over many contacts.")
    options.add_argument("--contacts", type=int, default=100_000, help="contacts (default 100000)")
    options.add_argument("--cases", type=int, default=10_000, help="cases, in chains of 5 (default 10000)")
    options.add_argument("--runs", type=int, default=5, help="timed runs of each, median reported (default 5)")
    arguments = options.parse_args()
    harness.at_least(arguments, options, contacts=1, cases=CHAIN, runs=1)
    sys.exit(harness.main("chains", arguments, run))
