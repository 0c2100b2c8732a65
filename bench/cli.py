"""The command line's answer time: a whole ``mpoxflow`` process against ``python -c pass``, in the same run.

    .venv/bin/python bench/cli.py [--runs N] [--warmup W] [--backend sqlite|postgresql|both] [--pg-url URL]

Per backend (default SQLite only, as the target is stated) a scratch database (bench/harness.py) on a simulated
clock at a fixed instant, as ``mpoxflow init --simulated-clock`` leaves it, with its users, gets a suspected case to
show and one more for each transition (made through the engine; not timed). Then, interleaved, W untimed runs
(``--warmup``, default 2) and N timed ones (``--runs``, default 21) of each, every one a new process:

* baseline: ``python -c pass``, the same interpreter;
* floor: ``python -c 'import sqlalchemy.orm, sqlalchemy.dialects.sqlite, transitions, typer'``, the libraries every
  command runs on and nothing of mpoxflow's own: what no change of mpoxflow's can take off a command;
* show: ``mpoxflow --db URL show case-1 --json`` (the console script of the interpreter's environment);
* transition: ``mpoxflow --db URL case confirm case-K --pcr-on D --json``, a case of its own each run.

Each is the wall time from starting the process to its exit, its output read through a pipe (so the logs are JSON
lines, as in a script), as the staff user ``bench``. The processes keep their compiled bytecode in a folder of the
run's own (``PYTHONPYCACHEPREFIX``; the warm-up writes it, whatever ``PYTHONDONTWRITEBYTECODE`` says), as an
installed program reads its own: every side starts from the same caches. Printed: each command's median, min and
p90, its ratio to the baseline's median, and the verdict against the target: a median under 300 ms.

Checked (exit 1 otherwise): every process exits 0; show prints the case, suspected; each transition prints its case
confirmed; afterwards every transitioned case is confirmed in the database and every audit chain is intact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions` and `http`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.harness import ACTOR, BenchFailure, say  # noqa: E402

#: A Monday morning in Copenhagen: the database's simulated clock.
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
PCR_ON = date(2025, 3, 3)
#: The floor: a process that imports only the libraries every command runs on (the ORM and its SQLite dialect,
#: the state machines, the command line), nothing of mpoxflow's own.
FLOOR = "import sqlalchemy.orm, sqlalchemy.dialects.sqlite, transitions, typer"
#: The target: a command's median wall time, in seconds.
TARGET = 0.300


def mpoxflow() -> list[str]:
    """How the console script is started: the ``mpoxflow`` beside the interpreter (what ``pip install`` made),
    else the same entry point through ``-c``."""
    script = Path(sys.executable).with_name("mpoxflow")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from entry.cli import main; sys.exit(main())"]


def cases(db: Any, count: int) -> list[str]:
    """``count`` suspected cases, a person each, opened by ``bench``."""
    from engine.bootstrap import engine_on
    from workflows.definition import Settings

    engine = engine_on(db, Settings())
    made = []
    for number in range(count):
        person = engine.add_person(ref=f"BENCH-CLI-{number:05d}", actor=ACTOR)["id"]
        made.append(engine.open("case", "open", person=person, actor=ACTOR,
                                data={"onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"])
    return made


def process(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """The wall time of one process from its start to its exit, and its stdout; exit 0 or a BenchFailure."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=harness.REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchFailure(f"{' '.join(argv[-6:])}: exit {done.returncode}: {done.stderr[-1500:]}")
    return elapsed, done.stdout


def expect(output: str, case: str, state: str) -> None:
    view = json.loads(output)
    if (view.get("id"), view.get("state")) != (case, state):
        raise BenchFailure(f"expected {case} {state}, the command printed {output[:300]}")


def run_backend(backend: str, args: Any, table: harness.Table, pycache: Path) -> bool:
    """Time the three processes on a scratch database of ``backend``; True when both commands meet the target."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPOXFLOW_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(MPOXFLOW_ACTOR=ACTOR, MPOXFLOW_LOG_LEVEL=args.log_level, PYTHONPYCACHEPREFIX=str(pycache))
    runs = args.warmup + args.runs
    with harness.fresh(backend, args.pg_url, start=START) as db:
        shown, *changed = cases(db, 1 + runs)
        harness.settle(db)
        command = [*mpoxflow(), "--db", db.url]
        sides: dict[str, list[float]] = {"baseline": [], "floor": [], "show": [], "transition": []}
        for number in range(runs):
            order = list(sides)
            order = order[number % 4:] + order[:number % 4]  # each side first in turn: no side always runs cold
            for side in order:
                if side == "baseline":
                    elapsed, _ = process([sys.executable, "-c", "pass"], env)
                elif side == "floor":
                    elapsed, _ = process([sys.executable, "-c", FLOOR], env)
                elif side == "show":
                    elapsed, output = process([*command, "show", shown, "--json"], env)
                    expect(output, shown, "suspected")
                else:
                    case = changed[number]
                    elapsed, output = process([*command, "case", "confirm", case, "--pcr-on", PCR_ON.isoformat(),
                                               "--json"], env)
                    expect(output, case, "confirmed")
                if number >= args.warmup:
                    sides[side].append(elapsed)
        from engine.bootstrap import engine_on
        from workflows.definition import Settings

        engine = engine_on(db, Settings())
        confirmed = {view["id"] for view in engine.list("case", "confirmed")}
        report = engine.audit_verify()
        if not set(changed) <= confirmed or not report["intact"]:
            raise BenchFailure(f"after the run: {len(set(changed) - confirmed)} transitioned cases not confirmed, "
                               f"audit intact {report['intact']}")
    baseline = harness.median(sides["baseline"])
    met = True
    labels = {"baseline": "`python -c pass`", "floor": f"`python -c '{FLOOR}'`", "show": "`mpoxflow show ID --json`",
              "transition": "`mpoxflow case confirm ID --pcr-on D --json`"}
    for side, samples in sides.items():
        middle, fastest, p90 = harness.median(samples), min(samples), harness.percentile(samples, 90)
        say(f"{backend:<11} {side:<10} median {1000 * middle:7.1f} ms  min {1000 * fastest:7.1f} ms  "
            f"p90 {1000 * p90:7.1f} ms  ({len(samples)} runs)")
        table.add(backend, labels[side], len(samples), f"{1000 * middle:.1f}", f"{1000 * fastest:.1f}",
                  f"{1000 * p90:.1f}", f"{middle / baseline:.2f}")
        if side == "floor":
            say(f"floor ({backend}): the libraries every command runs on take {1000 * middle:.0f} ms to import, "
                f"{100 * middle / TARGET:.0f}% of the {1000 * TARGET:.0f} ms target")
        elif side != "baseline":
            harness.ratio(f"{side}/python -c pass", backend, middle / baseline)
            say(f"{side} ({backend}): {1000 * (middle - harness.median(sides['floor'])):.0f} ms above the floor")
            met = met and middle < TARGET
            say(f"verdict {side} ({backend}): median {1000 * middle:.0f} ms, "
                f"{'under' if middle < TARGET else 'NOT under'} the {1000 * TARGET:.0f} ms target")
    return met


def run(args: Any) -> list[harness.Table]:
    table = harness.Table(["Backend", "Process", "Runs", "Median (ms)", "Min (ms)", "p90 (ms)",
                           "Median / `python -c pass`"], text=2)
    pycache = Path(tempfile.mkdtemp(prefix="bench_cli_pycache_"))
    try:
        verdicts = {backend: run_backend(backend, args, table, pycache) for backend in harness.backends(args)}
    finally:
        shutil.rmtree(pycache, ignore_errors=True)
    for backend, met in verdicts.items():
        say(f"verdict ({backend}): {'met' if met else 'NOT met'}: both commands' median under "
            f"{1000 * TARGET:.0f} ms")
    return [table]


if __name__ == "__main__":
    options = harness.parser("A whole mpoxflow process (show, a transition) against python -c pass.")
    options.set_defaults(backend="sqlite")
    options.add_argument("--runs", type=int, default=21, help="timed runs of each process (default 21)")
    options.add_argument("--warmup", type=int, default=2, help="untimed runs of each first (default 2)")
    arguments = options.parse_args()
    harness.at_least(arguments, options, runs=1, warmup=1)
    sys.exit(harness.main("cli", arguments, run))
