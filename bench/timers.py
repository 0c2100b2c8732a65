"""Timer firing: ``mpoxflow worker`` processes against a hand-written SQLAlchemy Core baseline, lateness under a
steady load, and the worker's memory with a million pending timers.

    .venv/bin/python bench/timers.py [--n N] [--backend sqlite|postgresql|both] [--pg-url URL]
                                     [--rate R] [--lateness-seconds S] [--lead S] [--memory-timers M]
                                     [--passes P] [--backlog-seconds S] [--skip throughput lateness memory]

Every database is a scratch one on real time (bench/harness.py), made fresh for each phase. What it holds are
copies (bench/seed.py, without their history) of 10 healed cases the engine made, on a clock in the past: opened,
confirmed, notified by phone and in writing, the sample sent, tracing consented, isolated at home and healed 100
to 109 days ago, so that the §4.1 ``condom_advice_ends`` timer healing arms (their only pending one) fell due 16
to 25 days ago. Worker processes are stopped by the bench (SIGTERM, then SIGKILL) whatever happens.

1. Throughput: N copies (``--n``, default 50,000) written once per backend into a template database, copied for
   each timed run (PostgreSQL: ``CREATE DATABASE ... TEMPLATE``; SQLite: the file). Timed from the first start to
   the last exit: ``mpoxflow --db URL worker --exit-when-idle --batch 200 --poll 1`` as 1 process, and 3 on
   PostgreSQL, start-up included (an idle run is timed first so that it can be told apart).
2. The baseline, on another copy, in this process: batches claimed by hand with SQLAlchemy Core (``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite, as the engine's), then per timer the engine's four
   writes: the conditional claim, the case closed with its version bumped (``RETURNING`` its audit head), the audit
   entry chained with the product's ``Head.link``, the head moved; one transaction per batch. The ratio engine/raw
   is of the 1-worker runs.
3. Lateness (PostgreSQL): one worker (``--poll 1``) runs while the bench inserts copies whose timer falls due
   ``--lead`` seconds later, ``--rate`` per second for ``--lateness-seconds``; then with the timers due at once
   (lead 0), which only the poll finds. Lateness is the firing entry's ``at`` minus the timer's ``due_at``.
4. Memory (PostgreSQL): the peak RSS (``VmHWM``) of one idle worker after ``--passes`` poll passes over an empty
   database, then over ``--memory-timers`` (default 1,000,000) copies whose timers fall due a year ahead and more
   (limit 200 MB); ``Engine.next_due`` (every pass runs it) timed over them; the steady load again over that
   backlog for ``--backlog-seconds``.

N defaults to 50,000 because the four throughput runs at 100,000 take the whole bench past 10 minutes on 2 CPUs;
``--n 100000`` runs them. Checked (exit 1 otherwise): after each run exactly N entries carry a timer id, each the
firing healed -> closed of its own timer; every timer fired and every case closed, its chain and head intact
(``persistence.audit.verify_object``); the raw rows equal the engine's (ids, instants, hashes aside); every worker
exits 0; under load every timer fires and none early; the idle worker fires nothing and stays under 200 MB.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.harness import ACTOR, BenchFailure, say  # noqa: E402
from bench.seed import Seeder, repeat, templates  # noqa: E402

TRIGGER = "condom_advice_ends"
DEFAULT_N = 50_000
BATCH = 200
POLL_SECONDS = 1.0
MEMORY_LIMIT_MB = 200.0
SPREAD_DAYS = 10
HEALED_DAYS_AGO = 100


def healed(at: Any) -> list[str]:
    """Healed cases, the i-th healed ``HEALED_DAYS_AGO + i`` days ago, a person each."""
    from workflows.calendar import local_date, local_time_on

    made = []
    for i in range(SPREAD_DAYS):
        healed_on = local_date(datetime.now(UTC)) - timedelta(days=HEALED_DAYS_AGO + i)
        onset = healed_on - timedelta(days=20)
        pcr_on = onset + timedelta(days=2)
        engine = at(local_time_on(onset, clock_time(10, 0)))
        made.append(engine.add_person(ref=f"BENCH-TEMPLATE-{i}", actor=ACTOR)["id"])
        case = engine.open("case", "open", person=made[-1], actor=ACTOR,
                           data={"onset": onset, "symptoms": ["rash", "fever"], "criteria": ["msm"]})["id"]
        confirmed = local_time_on(pcr_on, clock_time(11, 0))
        for minutes, trigger, data in ((0, "confirm", {"pcr_on": pcr_on, "clade": "IIb"}),
                                       (20, "notify", {"channel": "phone"}), (120, "notify", {"channel": "written"}),
                                       (150, "sample_sent", {"on": pcr_on}), (160, "consent", {"tracing": True}),
                                       (180, "isolate", {"mode": "home"})):
            at(confirmed + timedelta(minutes=minutes)).apply(case, trigger, data=data, actor=ACTOR)
        at(local_time_on(healed_on, clock_time(9, 30))).apply(case, "heal", data={"on": healed_on}, actor=ACTOR)
    return made


# ---- worker processes ----------------------------------------------------------------------------------------


class Workers:
    """``mpoxflow worker`` processes started by the bench, each writing to a log file; ``close`` stops the rest."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[Any, Path] = {}

    def start(self, url: str, *, exit_when_idle: bool) -> Any:
        log_path = self.log_dir / f"worker-{len(self.running)}-{time.monotonic_ns()}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-c", "from entry.cli import main; main()", "--db", url, "worker", "--batch",
                 str(BATCH), "--poll", f"{POLL_SECONDS:g}", *(["--exit-when-idle"] if exit_when_idle else [])],
                cwd=harness.REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        self.running[process] = log_path
        return process

    def wait(self, process: Any, timeout: float) -> None:
        """``process`` must exit 0 within ``timeout`` seconds."""
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            self.stop(process)
            raise BenchFailure(f"worker {process.pid} still running after {timeout:.0f} s: stopped") from error
        output = self.running.pop(process).read_text(errors="replace")
        if code != 0:
            raise BenchFailure(f"worker {process.pid} exited with status {code}:\n{output[-2000:]}")

    def stop(self, process: Any, grace: float = 15.0) -> None:
        """SIGTERM (the worker finishes the timer in hand and exits), SIGKILL after ``grace`` seconds."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for process in list(self.running):
            self.stop(process, grace=5.0)
        self.running.clear()

    def run(self, url: str, count: int, timeout: float) -> float:
        """``count`` processes with ``--exit-when-idle`` at once; seconds from the first start to the last exit."""
        started = time.perf_counter()
        for process in [self.start(url, exit_when_idle=True) for _ in range(count)]:
            self.wait(process, max(1.0, started + timeout - time.perf_counter()))
        return time.perf_counter() - started


def wait_connected(db: Any, process: Any, timeout: float = 30.0) -> None:
    """Wait until a process other than this one is connected to the PostgreSQL database (the worker is up)."""
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchFailure(f"worker {process.pid} exited with status {process.returncode} at start-up")
        with db.engine.connect() as connection:
            if connection.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND pid <> pg_backend_pid()")):
                return
        time.sleep(0.05)
    raise BenchFailure(f"worker {process.pid} did not connect within {timeout:.0f} s")


# ---- the baseline and the checks -------------------------------------------------------------------------------


def raw_fire_all(db: Any) -> int:
    """The baseline: every due timer fired by hand with SQLAlchemy Core, one transaction per batch; how many."""
    from sqlalchemy import bindparam, insert, or_, select, update

    from engine.core import TIMER_USER
    from engine.views import jsonable  # the product's JSON form of dates and instants (a pure function)
    from persistence.audit import Head
    from persistence.models import AuditEntry, Case, Timer
    from workflows.calendar import to_local
    from workflows.case import CASE, S4_1

    timers, cases, audit = Timer.__table__, Case.__table__, AuditEntry.__table__
    pick = (select(timers.c.id).where(timers.c.status == "pending", timers.c.due_at <= bindparam("now"), or_(
        timers.c.next_attempt_at.is_(None), timers.c.next_attempt_at <= bindparam("now")))
        .order_by(timers.c.due_at, timers.c.id).limit(BATCH))
    if db.backend == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    claim = (update(timers).where(timers.c.id == bindparam("timer_pk"), timers.c.status == "pending")
             .values(status="fired", closed_at=bindparam("fired_at"))
             .returning(timers.c.object_kind, timers.c.object_id, timers.c.name, timers.c.due_at))
    # The head columns are not written by this UPDATE: RETURNING gives the case's head before this entry.
    close_case = (update(cases).where(cases.c.id == bindparam("pk"), cases.c.state == "healed")
                  .values(state="closed", updated_at=bindparam("fired_at"), version=cases.c.version + 1)
                  .returning(cases.c.audit_pos, cases.c.audit_seq, cases.c.audit_hash))
    insert_audit = insert(audit).returning(audit.c.seq)
    set_head = update(cases).where(cases.c.id == bindparam("pk")).values(
        audit_pos=bindparam("head_pos"), audit_seq=bindparam("head_seq"), audit_hash=bindparam("head_hash"))
    fired = 0
    with db.engine.execution_options(mpoxflow_write=True).connect() as connection:
        while True:
            now = datetime.now(UTC)
            with connection.begin():
                ids = connection.execute(pick, {"now": now}).scalars().all()
                for timer_pk in ids:
                    timer = connection.execute(claim, {"timer_pk": timer_pk, "fired_at": now}).one_or_none()
                    if timer is None or timer.name != TRIGGER or timer.object_kind != "case":
                        raise BenchFailure(f"raw: timer-{timer_pk} is not a pending {TRIGGER} of a case")
                    head = connection.execute(close_case, {"pk": timer.object_id, "fired_at": now}).one_or_none()
                    if head is None:
                        raise BenchFailure(f"raw: case-{timer.object_id} is not healed")
                    entry = Head.of(head).link({
                        "timer_id": timer_pk, "object_kind": "case", "object_id": timer.object_id,
                        "workflow": CASE.name, "trigger": TRIGGER, "from_state": "healed", "to_state": "closed",
                        "actor": f"timer:{TRIGGER}", "role": TIMER_USER,
                        "reason": f"due {to_local(timer.due_at).isoformat()}", "at": now,
                        "recorded_at": datetime.now(UTC), "rule": S4_1,
                        "data": jsonable({"timer": f"timer-{timer_pk}", "due_at": timer.due_at,
                                          "fired_late_by_seconds": max(0, int((now - timer.due_at).total_seconds()))}),
                        "changes": {"state": "closed"}, "timers_armed": [], "timers_cancelled": [],
                        "timers_done": [], "unit_id": 1,  # a timer acts for its object's unit (the root here)
                    })
                    seq = connection.execute(insert_audit, entry).scalar_one()
                    connection.execute(set_head, {"pk": timer.object_id, "head_pos": entry["pos"], "head_seq": seq,
                                                  "head_hash": entry["hash"]})
            fired += len(ids)
            if len(ids) < BATCH:
                return fired


def verify_fired(db: Any, n: int, version: int, what: str) -> None:
    """Exactly ``n`` entries, each with a timer id, each its own timer's firing healed -> closed; every timer fired;
    every case closed at ``version``; every case's chain (the firing alone) and head intact."""
    from itertools import groupby

    from sqlalchemy import select, text

    from persistence.audit import Head, Verification, verify_object
    from persistence.models import AuditEntry, Case

    with db.engine.connect() as connection:
        found = dict(zip(
            ("entries with a timer id", "distinct timer ids in them", "distinct cases in them",
             "of them, their own timer's firing healed -> closed", "entries in all", "timers", "fired timers",
             "cases", f"cases closed at version {version}"),
            connection.execute(text(
                "SELECT (SELECT count(*) FROM audit_log WHERE timer_id IS NOT NULL), "
                "(SELECT count(DISTINCT timer_id) FROM audit_log), (SELECT count(DISTINCT object_id) FROM audit_log "
                "WHERE timer_id IS NOT NULL), (SELECT count(*) FROM audit_log a JOIN timers t ON t.id = a.timer_id "
                "WHERE a.object_kind = 'case' AND a.object_id = t.object_id AND a.trigger = :trigger AND t.name = "
                ":trigger AND a.from_state = 'healed' AND a.to_state = 'closed' AND t.status = 'fired'), "
                "(SELECT count(*) FROM audit_log WHERE object_kind <> 'user'), (SELECT count(*) FROM timers), "
                "(SELECT count(*) FROM timers WHERE status = 'fired'), (SELECT count(*) FROM cases), "
                "(SELECT count(*) FROM cases WHERE state = 'closed' AND version = :version)"),
                {"trigger": TRIGGER, "version": version}).one(), strict=True))
        report = Verification()
        heads = {row.id: Head.of(row) for row in connection.execute(
            select(Case.id, Case.audit_pos, Case.audit_seq, Case.audit_hash))}
        entries = connection.execute(select(AuditEntry.__table__).where(AuditEntry.object_kind == "case")
                                     .order_by(AuditEntry.object_id, AuditEntry.pos, AuditEntry.seq)).mappings()
        for pk, chain in groupby(entries, key=lambda e: e["object_id"]):
            verify_object(f"case-{pk}", chain, heads.pop(pk, None), report)
    wrong = [f"{label} {got} (expected {n})" for label, got in found.items() if got != n]
    if heads or not report.intact:
        wrong.append(f"{len(heads)} cases without a chain, {report.problem_count} broken links, the first: "
                     f"{[p.view() for p in report.problems[:3]]}")
    if wrong:
        raise BenchFailure(f"after {what}: " + ", ".join(wrong))


def fired_rows(db: Any, case_pk: int) -> dict[str, Any]:
    """One case's rows after its timer fired, without what differs between two runs (instants of the firing,
    sequence numbers, the lateness in whole seconds, the hashes that cover them)."""
    from sqlalchemy import select

    from persistence.models import AuditEntry, Case, Timer

    with db.engine.connect() as connection:
        rows = {name: dict(connection.execute(select(model.__table__).where(where)).one()._mapping)
                for name, model, where in (
                    ("case", Case, Case.id == case_pk),
                    ("timer", Timer, (Timer.object_kind == "case") & (Timer.object_id == case_pk)),
                    ("audit", AuditEntry, (AuditEntry.object_kind == "case") & (AuditEntry.object_id == case_pk)))}
    for name, keys in (("case", ("updated_at", "audit_seq", "audit_hash")), ("timer", ("closed_at",)),
                       ("audit", ("seq", "at", "recorded_at", "hash"))):
        for key in keys:
            rows[name].pop(key)
    rows["audit"]["data"].pop("fired_late_by_seconds")
    return rows


# ---- the phases ----------------------------------------------------------------------------------------------


def throughput(backend: str, args: Any, units: list[Any], workers: Workers, table: harness.Table) -> None:
    """The template filled once; a copy per timed run: the worker as 1 (and 3) processes, then the baseline."""
    version = units[0].objects[0][1]["version"] + 1
    with harness.scratch(backend, args.pg_url) as databases:
        with harness.database(url := databases.url("template")) as db:
            idle = workers.run(url, 1, timeout=120)  # start-up and shut-down, part of every timed run below
            first = Seeder(db).add(repeat(units, args.n), history=False)[0]
            harness.settle(db)
        say(f"{backend}: an idle worker run (start-up, one pass, exit) takes {idle:.2f} s")
        seconds: dict[str, float] = {}
        for count in [1, 3] if backend == "postgresql" else [1]:
            with harness.database(url := databases.url(f"engine{count}", template="template")) as db:
                db.dispose()  # no connection of the bench's open while the workers run
                seconds[f"{count} worker{'s' if count > 1 else ''}"] = workers.run(url, count, max(300, args.n / 20))
                verify_fired(db, args.n, version, f"{count} worker process(es) on {backend}")
                reference = fired_rows(db, first)
            databases.drop(url)
        with harness.database(url := databases.url("raw", template="template")) as db:
            seconds["raw Core, 1 process"], fired = harness.timed(lambda: raw_fire_all(db))
            if fired != args.n:
                raise BenchFailure(f"raw: {fired} timers fired, {args.n} were due")
            verify_fired(db, args.n, version, f"the baseline on {backend}")
            if fired_rows(db, first) != reference:
                raise BenchFailure(f"the baseline does not write what the engine writes: {fired_rows(db, first)} != "
                                   f"{reference}")
    raw_rate = args.n / seconds["raw Core, 1 process"]
    for firing, spent in seconds.items():
        say(f"{backend:<11} {firing:<20} {args.n:>7} timers in {spent:7.2f} s = {args.n / spent:8.1f} timers/s")
        one = firing == "1 worker"
        if one:
            harness.ratio("engine/raw", backend, args.n / spent / raw_rate)
        table.add(backend, firing, f"{spent:.1f}", f"{args.n / spent:.1f}",
                  f"{args.n / spent / raw_rate:.2f}" if one else "")


def steady_load(db: Any, workers: Workers, units: list[Any], lead: float, rate: float, seconds: float) -> list[float]:
    """One worker (``--poll 1``) runs while copies are inserted at ``rate`` per second for ``seconds``, each timer
    due ``lead`` seconds after its insertion; once all have fired the worker is stopped. Each timer's lateness in
    ms (the firing entry's ``at`` minus ``due_at``). Timers already there (a backlog due later) must stay pending."""
    from sqlalchemy import bindparam, func, select, text

    from persistence.models import AuditEntry, Case, Timer

    count, seeder = int(rate * seconds), Seeder(db, prefix=f"BENCH-LOAD-{lead:g}")
    with db.engine.connect() as connection:
        backlog = connection.scalar(text("SELECT count(*) FROM timers WHERE status = 'pending'"))
        entries_before = connection.scalar(text("SELECT count(*) FROM audit_log"))
    worker = workers.start(db.url, exit_when_idle=False)
    wait_connected(db, worker)
    time.sleep(2 * POLL_SECONDS)  # its first pass done, the poll running

    def due_soon(copy: Any) -> None:
        now = datetime.now(UTC)
        copy.timers[0].update(due_at=now + timedelta(seconds=lead), armed_at=now)

    cases: list[int] = []
    started = time.monotonic()
    for k in range(count):
        time.sleep(max(0.0, started + k / rate - time.monotonic()))
        cases += seeder.add([units[k % len(units)]], history=False, adjust=due_soon)
    if time.monotonic() - started > seconds * 1.2 + 1:
        raise BenchFailure(f"the inserts took {time.monotonic() - started:.1f} s, not {seconds:g} s: not steady")
    waiting = select(func.count()).where(Timer.object_kind == "case", Timer.object_id.in_(
        bindparam("ids", expanding=True)), Timer.status == "pending")
    deadline = time.monotonic() + lead + 3 * POLL_SECONDS + 30
    with db.engine.connect() as connection:
        while (left := connection.scalar(waiting, {"ids": cases})) and time.monotonic() < deadline:
            connection.rollback()
            if worker.poll() is not None:
                raise BenchFailure(f"the worker exited with status {worker.returncode} under load")
            time.sleep(0.2)
    if left:
        raise BenchFailure(f"{left} timers still pending well after they fell due")
    workers.stop(worker)
    workers.wait(worker, 5)
    with db.engine.connect() as connection:
        rows = connection.execute(
            select(AuditEntry.at, Timer.due_at, Timer.status, Case.state).join(Timer, Timer.id == AuditEntry.timer_id)
            .join(Case, Case.id == Timer.object_id).where(Case.id.in_(cases))).all()
        entries = connection.scalar(text("SELECT count(*) FROM audit_log")) - entries_before
        pending = connection.scalar(text("SELECT count(*) FROM timers WHERE status = 'pending'"))
    fired = sum(r.status == "fired" and r.state == "closed" for r in rows)
    if (len(rows), fired, entries, pending) != (count, count, count, backlog):
        raise BenchFailure(f"after the steady load: {len(rows)} firings of the {count} timers, {fired} closed their "
                           f"case, {entries} new entries, {pending} timers pending (the backlog: {backlog})")
    late = [(r.at - r.due_at).total_seconds() * 1000 for r in rows]
    if min(late) < 0:
        raise BenchFailure(f"timers fired before they were due (by up to {-min(late):.0f} ms)")
    return late


def lateness(db: Any, args: Any, units: list[Any], workers: Workers, table: harness.Table, lead: float,
             seconds: float, backlog: int = 0) -> None:
    late = steady_load(db, workers, units, lead, args.rate, seconds)
    what = f"{args.rate:g}/s for {seconds:g} s, due {lead:g} s after insertion" + (
        f", {backlog} pending timers due later" if backlog else "")
    p50, p99 = harness.percentile(late, 50), harness.percentile(late, 99)
    say(f"postgresql  lateness, {what} ({len(late)} timers): p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {max(late):.0f} ms")
    table.add(what, len(late), f"{p50:.0f}", f"{p99:.0f}", f"{max(late):.0f}")


def worker_peak(db: Any, workers: Workers, passes: int) -> float:
    """An idle worker's peak RSS in MB after ``passes`` poll passes; it must fire nothing and exit 0 on SIGTERM."""
    from sqlalchemy import text

    with db.engine.connect() as connection:
        before = connection.scalar(text("SELECT count(*) FROM audit_log"))
    worker = workers.start(db.url, exit_when_idle=False)
    wait_connected(db, worker)
    time.sleep(passes * POLL_SECONDS + 0.5)
    if worker.poll() is not None:
        workers.wait(worker, 0)
        raise BenchFailure(f"the worker exited (status {worker.returncode}) before it was stopped")
    peak = harness.rss_mb(worker.pid)
    workers.stop(worker)
    workers.wait(worker, 5)
    with db.engine.connect() as connection:
        if connection.scalar(text("SELECT count(*) FROM audit_log")) != before:
            raise BenchFailure("the idle worker fired timers, none of which was due")
    return peak


def memory(args: Any, units: list[Any], workers: Workers, late: harness.Table) -> harness.Table:
    """Peak RSS of an idle worker over an empty database and over ``--memory-timers`` timers due a year ahead."""
    from engine.clock import SystemClock
    from engine.core import Engine

    table = harness.Table(["Worker memory (PostgreSQL, peak RSS)", "Limit", "Pending timers", "Peak RSS (MB)"], text=2)
    with harness.fresh("postgresql", args.pg_url) as db:
        idle = worker_peak(db, workers, args.passes)
        later = itertools.count(1)
        year = datetime.now(UTC) + timedelta(days=365)
        started = time.perf_counter()
        Seeder(db).add(repeat(units, args.memory_timers), history=False,
                       adjust=lambda copy: copy.timers[0].update(due_at=year + timedelta(seconds=next(later))))
        harness.settle(db)
        say(f"postgresql: {args.memory_timers} pending timers due a year ahead made in "
            f"{time.perf_counter() - started:.1f} s (not timed)")
        engine = Engine(db, SystemClock())
        engine.next_due()
        next_due = 1000 * harness.median([harness.timed(engine.next_due)[0] for _ in range(7)])
        loaded = worker_peak(db, workers, args.passes)
        verdict = "PASS" if loaded < MEMORY_LIMIT_MB else "FAIL"
        say(f"postgresql  worker peak RSS: {idle:.1f} MB with no timers, {loaded:.1f} MB with {args.memory_timers} "
            f"pending (limit {MEMORY_LIMIT_MB:.0f} MB: {verdict}); Engine.next_due over them {next_due:.1f} ms "
            "(median of 7)")
        table.add("idle, empty database", "", 0, f"{idle:.1f}")
        table.add("idle, timers due a year ahead", f"< {MEMORY_LIMIT_MB:.0f} MB: {verdict}", args.memory_timers,
                  f"{loaded:.1f}")
        table.add("`Engine.next_due` over them (ms, not MB)", "", args.memory_timers, f"{next_due:.1f}")
        if args.backlog_seconds > 0:
            lateness(db, args, units, workers, late, args.lead, args.backlog_seconds, args.memory_timers)
    if verdict != "PASS":
        raise BenchFailure(f"the worker's peak RSS {loaded:.1f} MB is over {MEMORY_LIMIT_MB:.0f} MB")
    return table


def run(args: Any) -> list[harness.Table]:
    units = templates(healed, [ACTOR])
    if any(unit.state != "healed" or unit.pending != [TRIGGER] for unit in units):
        raise BenchFailure(f"the templates are not healed cases whose only pending timer is {TRIGGER}")
    tables = [harness.Table(["Backend", "Firing", "Seconds", "Timers/s", "Engine / raw"], text=2)]
    tables.append(harness.Table([f"Lateness (PostgreSQL, 1 worker, `--poll {POLL_SECONDS:g}`)", "Timers", "p50 (ms)",
                                 "p99 (ms)", "max (ms)"]))
    log_dir = Path(tempfile.mkdtemp(prefix="bench_worker_logs_"))
    workers = Workers(log_dir)
    try:
        if "throughput" not in args.skip:
            for backend in harness.backends(args):
                throughput(backend, args, units, workers, tables[0])
        if "lateness" not in args.skip:
            for lead in dict.fromkeys((args.lead, 0.0)):
                with harness.fresh("postgresql", args.pg_url) as db:
                    lateness(db, args, units, workers, tables[1], lead, args.lateness_seconds)
        if "memory" not in args.skip:
            tables.append(memory(args, units, workers, tables[1]))
    finally:
        workers.close()
        shutil.rmtree(log_dir, ignore_errors=True)
    return [table for table in tables if table.rows]


if __name__ == "__main__":
    options = harness.parser("Timer firing by `mpoxflow worker` against a raw SQLAlchemy Core baseline; lateness; "
                             "memory (lateness and memory on PostgreSQL).")
    options.add_argument("--n", type=int, default=DEFAULT_N, help=f"due timers per throughput run ({DEFAULT_N})")
    options.add_argument("--rate", type=float, default=20.0, help="timers inserted per second under load (20)")
    options.add_argument("--lateness-seconds", type=float, default=30.0, help="how long the load lasts (30)")
    options.add_argument("--lead", type=float, default=3.0, help="seconds from insertion to due (3; then 0)")
    options.add_argument("--memory-timers", type=int, default=1_000_000, help="pending timers of the memory check")
    options.add_argument("--passes", type=int, default=4, help="poll passes the memory check waits (4)")
    options.add_argument("--backlog-seconds", type=float, default=10.0,
                         help="the steady load again over the memory check's timers for this long (10; 0: not)")
    options.add_argument("--skip", nargs="*", default=[], choices=("throughput", "lateness", "memory"))
    arguments = options.parse_args()
    harness.at_least(arguments, options, n=1, memory_timers=1, rate=0.001, lateness_seconds=0.001, passes=1, lead=0,
                     backlog_seconds=0)
    sys.exit(harness.main("timers", arguments, run))
