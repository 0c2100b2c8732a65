"""The tamper-evident audit log: verify and export over a million entries (time and memory), and what the hash
chain costs a transition, alone and with several writers, on SQLite and PostgreSQL.

    .venv/bin/python bench/audit.py [--entries N] [--transitions T] [--workers W] [--per-worker P]
                                    [--backend sqlite|postgresql|both] [--pg-url URL] [--skip log chain]

Every database is a scratch one (bench/harness.py) with its users: ``bench:admin``, ``timer``, and the staff
``bench`` and ``bench:staff-1`` to ``-4``. What it holds are copies (bench/seed.py) of units the engine made,
with their history: each copy's entries chained again with the product's ``Head.link``, its rows carrying the
heads. Processes the bench starts are stopped by the bench whatever happens.

1. The log (``log``): N entries (``--entries``, default 1,000,000), loaded to N/10 first and measured, then to N
   and measured again (the users' entries count in N). A unit is a person (its ``register`` entry) and its case
   (``open``, ``confirm`` arming three tasks, ``notify`` phone and written, ``isolate``): 6 entries, by one of 4
   staff users; the rest persons alone. The entries of 2,000 units are interleaved step by step, as objects'
   histories interleave in a real log. PostgreSQL is then ``VACUUM ANALYZE``d. Each measurement runs in a fresh
   process: imports, the engine, one read (the warm-up), then the operation, timed: ``Engine.audit_verify()``,
   ``Engine.audit_export("jsonl", sink)`` and ``("csv", sink)``, the sink a counting stand-in for /dev/null; and
   the growth of the process's peak RSS over its RSS before (``VmHWM``, reset through ``/proc/self/clear_refs``),
   which must be the same at N and N/10 (within half, plus 16 MB): every read streams.

2. The chain's cost (``chain``): T confirm transitions per variant (``--transitions``, default 2000), each
   ``Engine.apply(case, "confirm")`` in its own transaction, on copies of a suspected case, the variants in
   interleaved rounds (so that drift favours none): ``chain``, the product as built, and the baseline ``no hash``:
   ``Head.link`` replaced, in the bench only, by one that writes a constant hash (no canonical JSON, no SHA-256;
   positions still count up, the head still moves). ``Head.link`` alone is timed too (20,000 calls on a confirm
   entry), both ways. On PostgreSQL then 1 and ``--workers`` processes (default 4), each confirming
   ``--per-worker`` (default 1000) cases of its own, with and without the hash: throughput from the first start to
   the last end, the machine's CPUs busy meanwhile (``/proc/stat``), and how often a backend of the bench was seen
   waiting for a lock (``pg_stat_activity`` every 20 ms): a chain that serialised writers would show there.

Checked (exit 1 otherwise): ``audit_verify`` finds the log intact with exactly the entries and objects loaded;
each export writes N entries and N + 1 lines, its first and last entries read back (``engine.auditing.
read_export``) matching their hashes; every transition phase leaves its cases confirmed with one ``confirm``
entry each at position 2, the ``no hash`` ones with the constant hash, and a final ``audit_verify`` finds every
chain intact but exactly the ``no hash`` entries (modified); every worker exits 0 after all its transitions.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.harness import ACTOR, BenchFailure, say  # noqa: E402
from bench.seed import Seeder, repeat, templates  # noqa: E402

#: A Monday morning in Copenhagen: the histories start then; the transitions of part 2 an hour later.
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
CONFIRM_AT = START + timedelta(hours=1)
PCR_ON = date(2025, 3, 3)
STAFF = ("bench:staff-1", "bench:staff-2", "bench:staff-3", "bench:staff-4")
FULL_UNIT = 6
CONSTANT_HASH = "f" * 64
VARIANTS = ("chain", "no hash")
ROUNDS = 4
MEMORY_FACTOR, MEMORY_SLACK_MB = 1.5, 16.0
OPS = {"verify": "audit verify", "jsonl": "audit export --format jsonl", "csv": "audit export --format csv"}


def units(at: Any) -> list[str]:
    """A full unit per staff user (a person, its case opened, confirmed, notified twice, isolated), a person alone,
    and a suspected case (``bench``'s): their persons' ids, in that order."""
    made = []
    for i, actor in enumerate((*STAFF, None, ACTOR)):
        opened = START + timedelta(seconds=i)
        engine = at(opened)
        made.append(engine.add_person(ref=f"BENCH-TEMPLATE-{i}", actor=actor or ACTOR)["id"])
        if actor is None:
            continue
        case = engine.open("case", "open", person=made[-1], actor=actor,
                           data={"onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
        for minutes, trigger, data in ((60, "confirm", {"pcr_on": PCR_ON}), (70, "notify", {"channel": "phone"}),
                                       (180, "notify", {"channel": "written"}), (240, "isolate", {"mode": "home"})):
            if actor != ACTOR:
                at(opened + timedelta(minutes=minutes)).apply(case, trigger, data=data, actor=actor)
    return made


# ---- 1. verify and export, measured in a process of their own ----------------------------------------------------


class CountingSink:
    """A text stream that keeps nothing but counts (lines, characters) and its first two and last writes."""

    def __init__(self) -> None:
        self.lines = self.chars = 0
        self.first: list[str] = []
        self.last = ""

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        self.chars += len(text)
        if len(self.first) < 2:
            self.first.append(text)
        self.last = text
        return len(text)


def measure(op: str, url: str) -> dict[str, Any]:
    """In this process (started for it): the engine, a warm-up read, then ``op`` timed, with the peak RSS."""
    from engine.auditing import read_export
    from engine.clock import SystemClock
    from engine.core import Engine
    from persistence.audit import entry_hash
    from persistence.database import Database

    with Database(url) as db:
        engine = Engine(db, SystemClock())
        engine.users()  # the connection, the session machinery, the models: in place before the baseline
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts afresh from the RSS now
        result: dict[str, Any] = {"rss_before_mb": harness.rss_mb(name="VmRSS")}
        started = time.perf_counter()
        if op == "verify":
            report = engine.audit_verify()
            result.update(seconds=time.perf_counter() - started, **{k: report[k] for k in (
                "entries", "objects", "intact", "problem_count")}, problems=report["problems"][:3])
        else:
            sink = CountingSink()
            result["entries"] = engine.audit_export(op, cast(IO[str], sink))
            result.update(seconds=time.perf_counter() - started, lines=sink.lines)
            checked = [e["hash"] == entry_hash(e) for e in read_export([*sink.first, sink.last], op)]
            result["read_back"] = len(checked) == 2 and all(checked)
        result["rss_peak_mb"] = harness.rss_mb()
        return result


def measured(op: str, url: str, entries: int, objects: int) -> dict[str, Any]:
    """``op`` in a fresh process over the log of ``entries`` entries and ``objects`` objects, checked."""
    process = harness.python("bench/audit.py", "--measure", op, "--db", url, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=1800)
    if process.returncode != 0:
        raise BenchFailure(f"the {op} process exited with status {process.returncode}:\n{err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    if op == "verify" and (not result["intact"] or (result["entries"], result["objects"]) != (entries, objects)):
        raise BenchFailure(f"verify: intact {result['intact']}, {result['entries']} entries of {result['objects']} "
                           f"objects (expected {entries} of {objects}): {result['problems']}")
    if op != "verify" and ((result["entries"], result["lines"]) != (entries, entries + 1) or not result["read_back"]):
        raise BenchFailure(f"export {op}: {result['entries']} entries, {result['lines']} lines (expected {entries} "
                           f"and {entries + 1}), first and last read back and matching: {result['read_back']}")
    return result


def desk_first_page(backend: str, db: Any, entries: int) -> None:
    """The auditor's desk's first page over this log, as ``GET /audit`` reads it (its trigger and actor pickers
    and the newest 50 entries, ``bench/http.py`` times the same over HTTP on a small log): the median of 11 calls
    after one, against the issue's 300 ms."""
    from engine.bootstrap import engine_on
    from workflows.definition import Settings

    engine = engine_on(db, Settings())

    def first_page() -> None:
        engine.audit_choices()
        if len(engine.audit_page(limit=50)["items"]) != min(50, entries):
            raise BenchFailure("the desk's first page is not the 50 newest entries")

    first_page()
    samples = [harness.timed(first_page)[0] for _ in range(11)]
    middle = 1000 * harness.median(samples)
    say(f"{backend:<11} the audit desk's first page over {entries} entries: {middle:.1f} ms (median of 11; "
        f"{'under' if middle < 300 else 'NOT under'} 300 ms)")


def log_part(backend: str, args: Any, made: list[Any], table: harness.Table) -> None:
    """Load to N/10 entries, measure; load to N, measure again."""
    from sqlalchemy import func, select

    from persistence.models import AuditEntry, Case, Person, User

    found: dict[str, list[dict[str, Any]]] = {op: [] for op in OPS}
    with harness.fresh(backend, args.pg_url, users=(ACTOR, *STAFF)) as db:
        for target in dict.fromkeys((max(args.entries // 10, 1), args.entries)):
            with db.engine.connect() as connection:
                missing = target - connection.scalar(select(func.count()).select_from(AuditEntry))
            if missing < 0:
                raise BenchFailure(f"the log already has more than {target} entries")
            started = time.perf_counter()
            seeder = Seeder(db)
            seeder.add(repeat(made[:4], missing // FULL_UNIT))
            seeder.add([made[4]] * (missing % FULL_UNIT))
            harness.settle(db)
            with db.engine.connect() as connection:
                objects = sum(connection.scalar(select(func.count()).select_from(m)) for m in (User, Person, Case))
            say(f"{backend}: log loaded to {target} entries ({objects} objects) in "
                f"{time.perf_counter() - started:.1f} s (not timed)")
            desk_first_page(backend, db, target)
            db.dispose()  # nothing of the bench's open while the measuring process reads
            for op, label in OPS.items():
                found[op].append(result := measured(op, db.url, target, objects))
                result["growth"] = result["rss_peak_mb"] - result["rss_before_mb"]
                say(f"{backend:<11} {label:<28} {target:>8} entries in {result['seconds']:7.2f} s = "
                    f"{target / result['seconds']:9.0f} entries/s   peak RSS {result['rss_peak_mb']:6.1f} MB, "
                    f"{result['growth']:+6.1f} MB over the {result['rss_before_mb']:.1f} MB before")
    grown = []
    for op, (small, *rest) in found.items():
        big = rest[-1] if rest else small
        if big["growth"] > max(small["growth"], 0) * MEMORY_FACTOR + MEMORY_SLACK_MB:
            grown.append(f"{OPS[op]} on {backend}: {small['growth']:+.1f} MB at N/10, {big['growth']:+.1f} MB at N")
        table.add(backend, f"`{OPS[op]}`", f"{big['entries']:,}", f"{big['seconds']:.1f}",
                  f"{big['entries'] / big['seconds']:,.0f}", f"{small['growth']:+.1f} / {big['growth']:+.1f}")
    if grown:
        raise BenchFailure("memory grows with the log: " + "; ".join(grown))


# ---- 2. the chain's cost on a transition ---------------------------------------------------------------------------


def _link_without_hash(self: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``Head.link`` without the hash: the same position, predecessor and format, a constant hash."""
    from persistence.audit import FORMAT

    return {**values, "format": FORMAT, "pos": self.pos + 1, "prev_seq": self.seq, "prev_hash": self.hash,
            "hash": CONSTANT_HASH}


@contextmanager
def variant(name: str) -> Iterator[None]:
    """The product as built (``chain``), or with the chain's hashing taken out (``no hash``)."""
    from persistence.audit import Head

    link = Head.link
    try:
        if name != "chain":
            Head.link = _link_without_hash  # type: ignore[method-assign]
        yield
    finally:
        Head.link = link  # type: ignore[method-assign]


def confirm_all(engine: Any, pks: list[int]) -> float:
    seconds, _ = harness.timed(lambda: [engine.apply(f"case-{pk}", "confirm", data={"pcr_on": PCR_ON}, actor=ACTOR)
                                        for pk in pks])
    return float(seconds)


def check_confirmed(db: Any, what: str, pks: list[int], hashed: bool) -> None:
    """Every case of ``pks`` (one range of ids) confirmed at version 2, its head on its one confirm entry, at
    position 2 (after its opening), with the constant hash unless ``hashed``."""
    from sqlalchemy import text

    low, high = min(pks), max(pks)
    with db.engine.connect() as connection:
        found = connection.execute(text(
            "SELECT (SELECT count(*) FROM cases WHERE id BETWEEN :low AND :high AND state = 'confirmed' "
            "AND version = 2 AND audit_pos = 2), count(*), sum(CASE WHEN pos = 2 THEN 1 ELSE 0 END), "
            "sum(CASE WHEN hash = :constant THEN 1 ELSE 0 END) FROM audit_log WHERE object_kind = 'case' AND "
            "trigger = 'confirm' AND object_id BETWEEN :low AND :high"),
            {"low": low, "high": high, "constant": CONSTANT_HASH}).one()
    expected = (len(pks), len(pks), len(pks), 0 if hashed else len(pks))
    if high - low + 1 != len(pks) or tuple(v or 0 for v in found) != expected:
        raise BenchFailure(f"after {what}: (confirmed cases with their head on it, confirm entries, at position 2, "
                           f"with the constant hash) {tuple(found)}, expected {expected}")


def transition_worker(url: str, name: str, first: int, count: int) -> None:
    """One of several processes: confirm cases ``first`` to ``first + count - 1`` when told to (a line on stdin);
    print when it began and ended (wall clock) and how many it did."""
    from engine.clock import SimulatedClock
    from engine.core import Engine
    from persistence.database import Database

    with Database(url) as db:
        engine = Engine(db, SimulatedClock(CONFIRM_AT))
        engine.show(f"case-{first}")  # connected, the machinery in place
        print("ready", flush=True)
        sys.stdin.readline()
        began = time.time()
        with variant(name):
            confirm_all(engine, list(range(first, first + count)))
        print(json.dumps({"began": began, "ended": time.time(), "count": count}), flush=True)


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # less idle and iowait


def run_processes(db: Any, name: str, ranges: list[tuple[int, int]]) -> dict[str, Any]:
    """Worker processes, one per range of cases, all told to go at once: their throughput from the first's start to
    the last's end, the CPUs busy meanwhile, and how often a backend was seen waiting for a lock."""
    from sqlalchemy import text

    processes: list[Any] = []
    try:
        for first, count in ranges:
            processes.append(harness.python("bench/audit.py", "--transition-worker", name, "--db", db.url, "--first",
                                            str(first), "--count", str(count), stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise BenchFailure(f"worker {process.pid} did not start: {process.communicate(timeout=30)[1][-2000:]}")
        cpu_before = cpu_times()
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        waits = samples = 0
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            while any(p.poll() is None for p in processes):
                samples += 1
                waits += bool(connection.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                                     "current_database() AND wait_event_type = 'Lock'")))
                time.sleep(0.02)
        busy, total = (after - before for after, before in zip(cpu_times(), cpu_before, strict=True))
        reports = []
        for process in processes:
            out, err = process.communicate(timeout=30)
            if process.returncode != 0:
                raise BenchFailure(f"worker {process.pid} exited with status {process.returncode}:\n{err[-2000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    done = sum(r["count"] for r in reports)
    seconds = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
    return {"variant": name, "processes": len(ranges), "transitions": done, "seconds": seconds,
            "busy": busy / max(total, 1), "waits": waits, "samples": samples}


def chain_part(backend: str, args: Any, made: list[Any], chains: harness.Table, parallel: harness.Table) -> None:
    from engine.clock import SimulatedClock
    from engine.core import Engine
    from persistence.audit import GENESIS, Head

    with harness.fresh(backend, args.pg_url, start=START) as db:
        seeder = Seeder(db)
        cases = {name: seeder.add([made[5]] * args.transitions) for name in VARIANTS}
        runs: dict[tuple[str, int], list[int]] = {}
        if backend == "postgresql" and args.workers > 0:
            # In A B B A order (chain first with 1 process, last with several), so that drift favours neither.
            for i, count in enumerate(dict.fromkeys((1, args.workers))):
                for name in VARIANTS[::-1 if i % 2 else 1]:
                    runs[name, count] = seeder.add([made[5]] * (count * args.per_worker))
        harness.settle(db)
        engine = Engine(db, SimulatedClock(CONFIRM_AT))
        seconds = dict.fromkeys(VARIANTS, 0.0)
        size = -(-args.transitions // ROUNDS)
        for r in range(ROUNDS):
            for name in VARIANTS[r % 2:] + VARIANTS[:r % 2]:
                with variant(name):
                    seconds[name] += confirm_all(engine, cases[name][r * size:(r + 1) * size])
        for name, pks in cases.items():
            check_confirmed(db, f"{name} on {backend}", pks, hashed=name == "chain")
        entry = {**made[0].entries[2], "recorded_at": datetime.now(UTC)}  # a confirm entry as the engine wrote it
        link_us = [1e6 * harness.timed(lambda link=link: [link(Head(1, 1, GENESIS), entry) for _ in range(20_000)])[0]
                   / 20_000 for link in (Head.link, _link_without_hash)]
        chain_us, plain_us = (1e6 * seconds[name] / args.transitions for name in VARIANTS)
        say(f"{backend:<11} per confirm (1 process, {args.transitions} each): chain {chain_us:.0f} µs, no hash "
            f"{plain_us:.0f} µs;  Head.link alone {link_us[0]:.1f} µs (no hash: {link_us[1]:.1f} µs)")
        harness.ratio("chain/no hash time", backend, chain_us / plain_us)
        chains.add(backend, args.transitions, f"{chain_us:.0f}", f"{plain_us:.0f}", f"{chain_us / plain_us:.2f}",
                   f"{link_us[0]:.1f} (no hash {link_us[1]:.1f})")
        for (name, count), pks in runs.items():
            db.dispose()
            p = run_processes(db, name, [(pks[i * args.per_worker], args.per_worker) for i in range(count)])
            check_confirmed(db, f"{count} processes, {name}, on {backend}", pks, hashed=name == "chain")
            rate = p["transitions"] / p["seconds"]
            say(f"{backend:<11} {name:<8} {count} process(es): {p['transitions']:>5} transitions in "
                f"{p['seconds']:6.2f} s = {rate:7.1f} tr/s   CPUs {100 * p['busy']:3.0f}% busy   a backend waiting "
                f"for a lock in {p['waits']} of {p['samples']} samples")
            parallel.add(backend, name, count, p["transitions"], f"{p['seconds']:.2f}", f"{rate:.1f}",
                         f"{100 * p['busy']:.0f}%", f"{p['waits']}/{p['samples']}")
        # Every chain intact but those the baseline broke on purpose, exactly.
        unhashed = {f"case-{pk}" for name, pks in [*cases.items(), *((n, p) for (n, _), p in runs.items())]
                    if name != "chain" for pk in pks}
        report = engine.audit_verify()
        strays = [p for p in report["problems"] if p["object"] not in unhashed or p["problem"] != "modified"]
        if report["problem_count"] != len(unhashed) or strays:
            raise BenchFailure(f"audit verify on {backend}: {report['problem_count']} problems (expected "
                               f"{len(unhashed)}: the unhashed entries), unexpected: {strays[:3]}")


def run(args: Any) -> list[harness.Table]:
    made = templates(units, [ACTOR, *STAFF])
    if [len(u.entries) for u in made] != [FULL_UNIT] * 4 + [1, 2] or made[0].entries[2]["trigger"] != "confirm":
        raise BenchFailure(f"the templates have {[len(u.entries) for u in made]} entries, not 6 6 6 6 1 2")
    log = harness.Table(["Backend", "Operation", "Entries", "Seconds", "Entries/s",
                         f"Peak RSS growth (MB) at {max(args.entries // 10, 1):,} / {args.entries:,}"], text=2)
    chains = harness.Table(["Backend", "N", "chain (µs/confirm)", "no hash (µs/confirm)", "chain / no hash",
                            "`Head.link` alone (µs)"])
    parallel = harness.Table(["Backend", "Variant", "Processes", "Transitions", "Seconds", "Transitions/s",
                              "CPUs busy", "Lock-wait samples"], text=2)
    for backend in harness.backends(args):
        if "log" not in args.skip:
            log_part(backend, args, made, log)
        if "chain" not in args.skip:
            chain_part(backend, args, made, chains, parallel)
    return [table for table in (log, chains, parallel) if table.rows]


if __name__ == "__main__":
    options = harness.parser("The audit log: verify and export over N entries (time, memory); the hash chain's "
                             "cost on a transition, in one process and in several on PostgreSQL.")
    options.add_argument("--entries", type=int, default=1_000_000, help="entries verified and exported (N/10 too)")
    options.add_argument("--transitions", type=int, default=2000, help="confirms per variant in one process (2000)")
    options.add_argument("--workers", type=int, default=4, help="processes of the parallel run (4; 1 too; 0: none)")
    options.add_argument("--per-worker", type=int, default=1000, help="confirms per process in parallel (1000)")
    options.add_argument("--skip", nargs="*", default=[], choices=("log", "chain"), help="parts to leave out")
    # The bench's own child processes.
    options.add_argument("--measure", choices=tuple(OPS), help=argparse.SUPPRESS)
    options.add_argument("--transition-worker", choices=VARIANTS, help=argparse.SUPPRESS)
    options.add_argument("--db", help=argparse.SUPPRESS)
    options.add_argument("--first", type=int, help=argparse.SUPPRESS)
    options.add_argument("--count", type=int, help=argparse.SUPPRESS)
    arguments = options.parse_args()
    harness.at_least(arguments, options, entries=10, transitions=1, workers=0, per_worker=1)
    if arguments.measure or arguments.transition_worker:
        from entry.logs import configure_logging

        configure_logging(level=arguments.log_level)
        with suppress(BrokenPipeError):
            if arguments.measure:
                print(json.dumps(measure(arguments.measure, arguments.db)), flush=True)
            else:
                transition_worker(arguments.db, arguments.transition_worker, arguments.first, arguments.count)
        sys.exit(0)
    sys.exit(harness.main("audit", arguments, run))
