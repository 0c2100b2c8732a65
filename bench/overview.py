"""The overview (issue 21 item 1): its figures' numbers and drawings with 100,000 contacts, against the calendar
page's query measured in the same run.

    .venv/bin/python bench/overview.py [--contacts N] [--runs R] [--backend sqlite|postgresql|both] [--pg-url URL]

Per backend a database (bench/harness.py) on a simulated clock at Wednesday 2025-03-19 16:00 Copenhagen time holds
N open contacts (``--contacts``, default 100,000) with their cases: copies (bench/seed.py, without history) of
bench/migrate.py's outbreak (two confirmed cases, clade IIb, 8 contacts each registered that morning, exposed 13 to
18 March, half informed; their real pending timers: ``inform_due``, the PEP windows and assessment, and
``monitoring_ends``), each case copy's onset moved back 0 to 7 weeks (by its id) so that the epidemic curve has
8 weeks. Timed, R times each (``--runs``, default 5), the median:

* calendar (the baseline): ``Engine.calendar(8)``, the query behind the calendar page;
* numbers: ``engine.overview.Overview.figures(pep_rows=200)``, every figure's numbers as the page asks for them
  (one read-only session; the PEP windows' counts of them all, the first 200 listed);
* drawing: every figure drawn as the page's inline SVG (``entry.web.figures.inline_svg``; matplotlib imported
  before the first run, as a serving process has it);
* page: numbers and drawing together, what ``GET /overview`` spends beyond the login and the template (each
  table's first 200 rows formatted), the drawings forgotten first; page again: the same, the same numbers drawn
  already (``entry.web.figures`` keeps the SVG of the numbers it drew last, per language).

Then the same at LATER (the clock nine days on), when the PEP windows of the contacts exposed 13 to 15 March close
within 72 hours: the PEP figure lists some tens of thousands of windows.

Checked (exit 1 otherwise): the curve counts every case copy, and the contacts under monitoring today are the N
contacts. Printed: the medians in ms, ``ratio page/calendar`` and whether the page is under 500 ms.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.backlog import copies, groups_of, relinked  # noqa: E402
from bench.harness import ACTOR, BenchFailure, say  # noqa: E402
from bench.migrate import NOW, outbreak  # noqa: E402
from bench.seed import Seeder, templates  # noqa: E402

DEFAULT_CONTACTS = 100_000
TARGET_MS = 500.0
#: The rows of a figure's table the page shows (``entry.web.overview_page.TABLE_ROWS``).
ROWS = 200
#: The second measurement's clock: Friday 2025-03-28 16:00, when the PEP windows of the exposures of 13 to 15 March
#: (00:00 on 29 and 30 March) close within 72 hours.
LATER = NOW.replace(day=28)
WEEKS_BACK = 8


def spread() -> Any:
    """The seeder's ``adjust``: ``relinked`` (each contact on its case's copy), and each case copy's onset moved
    back ``id % 8`` weeks."""
    link = relinked()

    def adjust(copy: Any) -> None:
        link(copy)
        kind, row = copy.objects[0]
        if kind == "case":
            row["onset"] = row["onset"] - timedelta(weeks=row["id"] % WEEKS_BACK)
    return adjust


def run_backend(backend: str, args: Any, groups: list[Any], table: harness.Table) -> None:
    from engine.bootstrap import engine_on
    from engine.overview import Overview
    from entry.web import figures
    from workflows.definition import Settings

    n = args.contacts
    with harness.fresh(backend, args.pg_url, start=NOW) as db:
        seconds = harness.timed(lambda: Seeder(db).add(copies(groups, n), history=False, adjust=spread()))[0]
        harness.settle(db)
        engine = engine_on(db, Settings())
        computed = Overview(engine.runtime).figures()
        cases = sum(r["total"] for r in computed["curve"].rows)
        weeks = sum(1 for r in computed["curve"].rows if r["total"])
        monitored = computed["monitoring"].rows[0]["contacts"]
        say(f"{backend}: {n} contacts with {cases} cases over {weeks} weeks of onset, written in {seconds:.1f} s "
            f"(not timed); under monitoring today {monitored}, PEP windows closing in 72 h "
            f"{len(computed['pep'].rows)}")
        expected_cases = -(-n // 8)
        if monitored != n or cases != expected_cases or weeks != min(WEEKS_BACK, expected_cases):
            raise BenchFailure(f"the overview counts {monitored} contacts under monitoring and {cases} cases over "
                               f"{weeks} weeks, not {n} and {expected_cases}")
        for figure in computed.values():
            figures.inline_svg(figure)  # matplotlib imported and warmed, as in a serving process
        measure(engine, args, backend, n, "", table)
        # Nine days on, the PEP windows (14 days after the exposures) of a quarter of the contacts close within
        # 72 hours: the longest list the overview makes of this outbreak.
        engine.clock.set(LATER)
        closing = len(Overview(engine.runtime).figures()["pep"].rows)
        say(f"{backend}: at {LATER.isoformat()} {closing} PEP windows close within 72 hours")
        if not closing:
            raise BenchFailure("no PEP window closes within 72 hours of the later clock")
        measure(engine, args, backend, n, f" ({closing} PEP windows closing)", table)


def measure(engine: Any, args: Any, backend: str, n: int, what: str, table: harness.Table) -> None:
    from engine.overview import Overview
    from entry.web import figures

    computed = Overview(engine.runtime).figures(pep_rows=ROWS)

    def draw() -> None:
        for figure in computed.values():
            figures.inline_svg(figure)

    def page() -> None:
        shown = Overview(engine.runtime).figures(pep_rows=ROWS)
        for figure in shown.values():
            figures.inline_svg(figure)
            figures.table(figure, ROWS)

    samples: dict[str, list[float]] = {"calendar": [], "numbers": [], "drawing": [], "page": [], "again": []}
    for _ in range(args.runs):
        samples["calendar"].append(harness.timed(lambda: engine.calendar(8))[0])
        samples["numbers"].append(harness.timed(lambda: Overview(engine.runtime).figures(pep_rows=ROWS))[0])
        figures.forget_drawings()
        samples["drawing"].append(harness.timed(draw)[0])
        figures.forget_drawings()
        samples["page"].append(harness.timed(page)[0])
        samples["again"].append(harness.timed(page)[0])  # the same numbers: drawn already
    ms = {key: harness.median(values) * 1000 for key, values in samples.items()}
    say(f"{backend:<11} calendar {ms['calendar']:7.1f} ms   numbers {ms['numbers']:7.1f} ms   drawing "
        f"{ms['drawing']:7.1f} ms   page {ms['page']:7.1f} ms   page again {ms['again']:7.1f} ms   (medians of "
        f"{args.runs}; N={n}{what})")
    label = "page/calendar" + (" with PEP windows closing" if what else "")
    harness.ratio(label, backend, ms["page"] / ms["calendar"])
    say(f"overview page under {TARGET_MS:.0f} ms with {n} contacts{what} ({backend}): "
        f"{'met' if ms['page'] < TARGET_MS else 'NOT met'} (drawn anew), "
        f"{'met' if ms['again'] < TARGET_MS else 'NOT met'} (the same numbers again)")
    table.add(f"{backend}{what}", n, f"{ms['calendar']:.1f}", f"{ms['numbers']:.1f}", f"{ms['drawing']:.1f}",
              f"{ms['page']:.1f}", f"{ms['again']:.1f}", f"{ms['page'] / ms['calendar']:.2f}")


def run(args: Any) -> list[harness.Table]:
    table = harness.Table(["Backend", "Contacts", "Calendar (ms)", "Numbers (ms)", "Drawing (ms)", "Page (ms)",
                           "Page again (ms)", "Page / calendar"])
    groups = groups_of(templates(outbreak, [ACTOR]))
    for backend in harness.backends(args):
        run_backend(backend, args, groups, table)
    harness.say_command("overview")
    return [table]


if __name__ == "__main__":
    options = harness.parser("the overview's numbers and drawings with 100,000 contacts, against the calendar's "
                             "query.")
    options.set_defaults(backend="sqlite")
    options.add_argument("--contacts", type=int, default=DEFAULT_CONTACTS,
                         help=f"open contacts, with their cases (default {DEFAULT_CONTACTS})")
    options.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5); the median is shown")
    arguments = options.parse_args()
    harness.at_least(arguments, options, contacts=1, runs=1)
    sys.exit(harness.main("overview", arguments, run))
