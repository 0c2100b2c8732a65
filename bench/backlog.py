"""Catch-up after an outage: a national backlog of due timers, with their real mix, fired by ``mpoxflow worker``
processes; the workers' memory while they do it; and how the load spreads over processes (timers/s at 1, 2 and 4
workers; transitions/s over HTTP with 1, 4 and 8 clients against one and two ``mpoxflow serve`` processes).

    .venv/bin/python bench/backlog.py [--contacts N] [--workers W ...] [--batch B] [--pending-total M]
                                      [--scale-contacts N] [--scale-workers W ...]
                                      [--servers S ...] [--clients C ...] [--http-requests R]
                                      [--skip backlog scale http] [--backend postgresql|sqlite|both] [--pg-url URL]

What the database holds are copies (bench/seed.py, without their history) of an outbreak the engine made on a
simulated clock 120 to 129 days ago (one outbreak a day over 10 days): per day two confirmed cases, each with 4
close contacts of the §5.1 exposure kinds in turn (Table 1's risk, a clinician's ``medium`` for staff who wore
PPE, a clinician's ``low`` for a face-to-face contact), some informed, every other one with PEP indicated offered a
PEP course and given dose 1. One case of each day was never notified nor its sample sent (§3.1, §2.4; a child's
also its §3.2 paediatric referral); the other was notified by phone only, its sample sent, and healed on day 21.
Their pending timers are the real mix: each contact's ``inform_due``, PEP windows and assessment, and
``monitoring_ends``; the courses' ``dose2_due``; the cases' notification and sample deadlines and
``condom_advice_ends``.
All fell due long ago: a worker run is a catch-up after an outage. The mix is printed.

1. Backlog (``--contacts`` N, default 100,000, with their cases and courses: about 5.1 timers a contact) written
   once into a template database, then, for each count in ``--workers`` (default 1 2 3), a copy (PostgreSQL:
   ``CREATE DATABASE ... TEMPLATE``; SQLite: the file) fired by that many ``mpoxflow worker --exit-when-idle
   --batch B`` processes (``--batch``, default 1,000), timed from the first start to the last exit, start-up
   included. The verdict is the backlog time against 5 minutes (at N below 100,000 the time a 500,000-timer
   backlog would take at the measured rate is printed, labelled as a projection). While they run, each worker's
   peak RSS (``VmHWM`` in ``/proc/PID/status``) is sampled every 0.1 s; limit 200 MB. ``--pending-total`` (default
   1,000,000) adds copies whose timers fall due a year ahead and more until that many timers are pending at the
   start of the run: the catch-up runs over a million pending timers (0: none added). The CPU time of the workers
   and of their PostgreSQL backends (``/proc/PID/stat``, the server being on this machine) is read as well:
   "CPUs busy" is it over the wall time, so a run bound by CPU shows 2.00 on 2 cores and one waiting on locks
   shows little.
2. Scale (PostgreSQL): the same with ``--scale-contacts`` (default 10,000) and ``--scale-workers`` (1 2 4), nothing
   due later: timers/s per worker count and against one worker.
3. HTTP (PostgreSQL): for each count in ``--servers`` (1 2), that many ``mpoxflow serve`` processes on one database
   and, for each count in ``--clients`` (1 4 8), that many threads each with its keep-alive client (an API token
   of the staff ``bench``), client i talking to server i mod S (as a reverse proxy spreads them), confirming
   ``--http-requests`` suspected cases in all (default 400), each once (``POST /api/cases/{id}/confirm``), after 5
   untimed ones per process; CPUs busy as above (the clients' threads are this process's).

Checked after every worker run (exit 1 otherwise, after the tables; a failed check is printed at once as ``CHECK
FAILED``): every worker exits 0; every timer due when the run started is closed (fired, missed or skipped; none
pending, failed or cancelled) and every timer due later still pending; exactly one audit entry per closed timer, on
its own object, with its name as the trigger; each object's timers fired in due order (no entry on an object for a
timer due before that of the entry before it); every worker under 200 MB; every object's chain and
head intact (``persistence.audit.verify_object``, as ``audit verify`` walks them; the copies' persons, which have no
history, and objects none of whose timers fell due have no chain and an empty head, and are counted, not verified).
After the HTTP runs: every answer 200 with the case confirmed, every case confirmed once, its chain intact.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow `transitions`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench import timers as timers_bench  # noqa: E402
from bench.harness import ACTOR, ADMIN, BenchFailure, say  # noqa: E402
from bench.seed import Seeder, Unit, templates  # noqa: E402

DEFAULT_CONTACTS = 100_000
DEFAULT_BATCH = 1000
DEFAULT_PENDING = 1_000_000
#: The issue's figures: a 500,000-timer backlog within 5 minutes, each worker under 200 MB.
TARGET_TIMERS = 500_000
TARGET_SECONDS = 300.0
MEMORY_LIMIT_MB = timers_bench.MEMORY_LIMIT_MB
SAMPLE_SECONDS = 0.1
#: The first outbreak's onset this many days ago, one a day back from there: the healed cases' condom advice
#: (85 days from healing on day 21) fell due two weeks ago and more.
BACK_DAYS = 120
SPREAD_DAYS = 10
CONTACTS_PER_CASE = 4
#: Timers due later are moved this far ahead: over a year from now.
LATER = timedelta(days=365 + BACK_DAYS + SPREAD_DAYS + 60)
#: The exposures of the contacts, in turn: each §5.1 kind with its Table 1 risk, then two clinicians' assessments.
EXPOSURES: list[tuple[str, str | None, str | None]] = [
    *((kind, None, None) for kind in ("household", "sexual", "mucosa_or_broken_skin", "sharps", "cleaning",
                                      "intact_skin", "passenger_8h", "healthcare_no_ppe", "face_to_face")),
    ("healthcare_with_ppe", "medium", "assessed: the gown was torn during the swab"),
    ("face_to_face", "low", "assessed: no physical contact, droplets unlikely"),
]
CLOSED = ("fired", "missed", "skipped")
#: Checks that failed after a run: printed at once, the run goes on, and the bench exits 1 after the tables.
FAILURES: list[str] = []
#: The confirm sent over HTTP: the suspected cases' sample date is today's.
HTTP_START_DAYS_AGO = 2
#: Untimed confirms sent to each ``serve`` process when it has started.
HTTP_WARMUP = 5


# ---- the templates -------------------------------------------------------------------------------------------


def outbreak(at: Any) -> list[str]:
    """Per day of the spread, two confirmed cases with their contacts (and the contacts' PEP courses): the
    persons' ids, each case's person before its contacts'."""
    from workflows.calendar import local_date, local_time_on
    from workflows.contact import EXPOSURE_RISK, pep_indicated

    today = local_date(datetime.now(UTC))
    made: list[str] = []
    exposures = itertools.cycle(EXPOSURES)
    refs = itertools.count()
    for day in range(SPREAD_DAYS):
        onset = today - timedelta(days=BACK_DAYS + day)
        pcr_on, exposed, added = onset + timedelta(days=2), onset + timedelta(days=1), onset + timedelta(days=3)
        for healed in (False, True):
            child = not healed and day % 5 == 0  # §3.2 a child's case also has its paediatric referral due
            engine = at(local_time_on(onset, clock_time(10, 0)))
            made.append(engine.add_person(ref=f"BENCH-TEMPLATE-{next(refs)}", actor=ACTOR,
                                          born=onset - timedelta(days=10 * 365) if child else None)["id"])
            case = engine.open("case", "open", person=made[-1], actor=ACTOR, data={
                "onset": onset, "symptoms": ["rash", "fever"], "criteria": ["epi_link" if child else "msm"]})["id"]
            confirmed = local_time_on(pcr_on, clock_time(11, 0))
            steps: list[tuple[int, str, dict[str, Any]]] = [
                (0, "confirm", {"pcr_on": pcr_on, "clade": "IIb"}), (30, "consent", {"tracing": True}),
                (40, "isolate", {"mode": "home"})]
            if healed:
                steps += [(20, "notify", {"channel": "phone"}), (150, "sample_sent", {"on": pcr_on})]
            for minutes, trigger, data in sorted(steps, key=lambda step: step[0]):
                at(confirmed + timedelta(minutes=minutes)).apply(case, trigger, data=data, actor=ACTOR)
            for j in range(CONTACTS_PER_CASE):
                kind, risk, reason = next(exposures)
                when = local_time_on(added, clock_time(10, 0)) + timedelta(minutes=10 * j)
                person = at(when).add_person(ref=f"BENCH-TEMPLATE-{next(refs)}", actor=ACTOR)["id"]
                contact = at(when).open("contact", "add", person=person, actor=ACTOR, data={
                    "case": case, "exposed": exposed, "kind": kind, "risk": risk, "reason": reason,
                    "anonymous_via_doctor": False})["id"]
                if j % 3 == 1:
                    at(when + timedelta(minutes=2)).apply(contact, "inform", actor=ACTOR)
                if j % 2 == 0 and pep_indicated(risk or EXPOSURE_RISK[kind]):
                    course = at(when + timedelta(minutes=4)).open("course", "offer", person=person, actor=ACTOR, data={
                        "indication": "pep", "contact": contact, "criteria": [],
                        "assessed_by": "dr. Lund, infection medicine"})["id"]
                    at(when + timedelta(minutes=6)).apply(course, "dose", actor=ACTOR, data={
                        "on": added, "consent": True, "indication_note": "close contact, Table 1",
                        "justification": "within 4 days of the exposure", "assessed_by": None,
                        "special_reason": None})
                made.append(person)
            if healed:
                healed_on = onset + timedelta(days=21)
                at(local_time_on(healed_on, clock_time(9, 30))).apply(case, "heal", data={"on": healed_on},
                                                                      actor=ACTOR)
    return made


@dataclass
class Group:
    """A case's unit and its contacts' units (each the contact, and its course when offered)."""

    case: Unit
    contacts: list[Unit] = field(default_factory=list)


def groups_of(units: list[Unit]) -> list[Group]:
    made: list[Group] = []
    for unit in units:
        if unit.objects[0][0] == "case":
            made.append(Group(unit))
        else:
            made[-1].contacts.append(unit)
    return made


def copies(groups: list[Group], contacts: int) -> Iterator[Unit]:
    """Units for ``contacts`` contacts: each case before its contacts, the groups in turn."""
    left = contacts
    for group in itertools.cycle(groups):
        if left <= 0:
            return
        yield group.case
        yield from group.contacts[:left]
        left -= len(group.contacts)


def relinked(later: bool = False) -> Callable[[Unit], None]:
    """The seeder's ``adjust``: each contact copy's ``case_id`` set to its case's copy (the unit before it; a
    unit copies only its own person's objects), and with ``later`` every timer moved a year and more ahead."""
    case_pk: list[int] = []

    def adjust(copy: Unit) -> None:
        kind, row = copy.objects[0]
        if kind == "case":
            case_pk[:] = [row["id"]]
        else:
            row["case_id"] = case_pk[0]
        if later:
            for timer in copy.timers:
                timer["due_at"] += LATER
    return adjust


def seed(db: Any, groups: list[Group], contacts: int, pending_total: int) -> dict[str, int]:
    """The backlog of ``contacts`` contacts with their cases and courses, then copies due later until
    ``pending_total`` timers are pending; prints the mix. Returns the counts: due, later, objects by kind."""
    from sqlalchemy import func, select

    from persistence.models import OBJECT_MODELS, Person, Timer

    started = time.perf_counter()
    Seeder(db).add(copies(groups, contacts), history=False, adjust=relinked())
    now = datetime.now(UTC)
    pending = Timer.status == "pending"
    with db.engine.connect() as connection:
        due = int(connection.scalar(select(func.count()).where(pending, Timer.due_at <= now)))
    later_contacts = max(0, round((pending_total - due) * contacts / due))
    if later_contacts:
        Seeder(db, prefix="BENCH-LATER").add(copies(groups, later_contacts), history=False,
                                             adjust=relinked(later=True))
    harness.settle(db)
    with db.engine.connect() as connection:
        mix = {(kind, name): int(n) for kind, name, n in connection.execute(
            select(Timer.object_kind, Timer.name, func.count()).where(pending, Timer.due_at <= now)
            .group_by(Timer.object_kind, Timer.name).order_by(Timer.object_kind, Timer.name))}
        later = int(connection.scalar(select(func.count()).where(pending, Timer.due_at > now)))
        first, last = connection.execute(select(func.min(Timer.due_at), func.max(Timer.due_at))
                                         .where(pending, Timer.due_at <= now)).one()
        objects = {kind: int(connection.scalar(select(func.count()).select_from(model)))
                   for kind, model in (("person", Person), *OBJECT_MODELS.items())}
    say(f"{db.backend}: {contacts} contacts with their cases and courses"
        + (f", and {later_contacts} more whose timers fall due a year ahead and more" if later_contacts else "")
        + f", written in {time.perf_counter() - started:.1f} s (not timed): "
        + ", ".join(f"{n} {kind}s" for kind, n in objects.items()))
    ago = [(now - instant.replace(tzinfo=instant.tzinfo or UTC)).days for instant in (last, first)]
    say(f"{db.backend}: the mix of the {due} timers due ({due / contacts:.2f} a contact), fallen due {ago[0]} to "
        f"{ago[1]} days ago:")
    for (kind, name), n in mix.items():
        say(f"    {kind:<8} {name:<28} {n:>8}")
    if later:
        say(f"{db.backend}: and {later} timers pending, due a year ahead and more: {due + later} pending in all")
    return {"due": due, "later": later, **objects}


class Cpu:
    """CPU seconds (user and system) of processes while they run, read from ``/proc/PID/stat``: the bench's own
    children by pid, and the PostgreSQL backends serving one database, found by their process title (the server
    runs on this machine; its shared processes, the WAL writer and the checkpointer, are not counted)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, database: str | None) -> None:
        self.database = f" {database} " if database else None
        self.seen: dict[int, tuple[str, float]] = {}

    def sample(self, pids: dict[int, str], *, scan: bool = True) -> dict[int, tuple[str, float]]:
        """Read ``pids`` (pid -> what it is) and the backends seen so far, with ``scan`` looking for new ones
        first; returns every process seen, with its CPU seconds so far."""
        if self.database is not None and scan:
            for entry in os.scandir("/proc"):
                if entry.name.isdigit() and int(entry.name) not in self.seen:
                    with suppress(OSError):
                        if self.database in Path(f"/proc/{entry.name}/cmdline").read_bytes().decode(errors="replace"):
                            self._read(int(entry.name), "postgresql")
        for pid, role in pids.items():
            self._read(pid, role)
        for pid, (role, _) in list(self.seen.items()):
            if role == "postgresql":
                self._read(pid, role)
        return dict(self.seen)

    def _read(self, pid: int, role: str) -> None:
        with suppress(OSError, ValueError, IndexError):  # gone meanwhile: its last reading stands
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            self.seen[pid] = (role, (int(fields[11]) + int(fields[12])) / self.TICK)

    @staticmethod
    def spent(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
        """CPU seconds by role between two samples (a process first seen in ``after`` counts from zero)."""
        spent: dict[str, float] = {}
        for pid, (role, seconds) in after.items():
            spent[role] = spent.get(role, 0.0) + seconds - before.get(pid, (role, 0.0))[1]
        return spent


def busy(spent: dict[str, float], seconds: float) -> str:
    """``1.62 (workers 1.21 + postgresql 0.41)``: CPUs kept busy over ``seconds`` of wall time, by role."""
    return (f"{sum(spent.values()) / seconds:.2f} ("
            + " + ".join(f"{role} {cpu / seconds:.2f}" for role, cpu in sorted(spent.items())) + ")")


# ---- the workers ---------------------------------------------------------------------------------------------


class Workers(timers_bench.Workers):
    """bench/timers.py's worker processes with the batch of this bench, whose runs sample each one's peak RSS."""

    def __init__(self, log_dir: Path, batch: int) -> None:
        super().__init__(log_dir)
        self.batch = batch

    def start(self, url: str, *, exit_when_idle: bool) -> Any:
        log_path = self.log_dir / f"worker-{len(self.running)}-{time.monotonic_ns()}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-c", "from entry.cli import main; main()", "--db", url, "worker", "--batch",
                 str(self.batch), *(["--exit-when-idle"] if exit_when_idle else [])],
                cwd=harness.REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        self.running[process] = log_path
        return process

    def run_sampled(self, url: str, count: int, timeout: float) -> tuple[float, list[float], dict[str, float]]:
        """``count`` processes with ``--exit-when-idle`` at once: seconds from the first start to the last exit,
        each one's peak RSS in MB (its ``VmHWM``), and the CPU seconds of the workers and of their PostgreSQL
        backends, all read every 0.1 s while they run."""
        peaks: dict[int, float] = {}
        cpu = Cpu(url.rsplit("/", 1)[1].split("?")[0] if url.startswith("postgresql") else None)
        done = threading.Event()
        started = time.perf_counter()
        processes = [self.start(url, exit_when_idle=True) for _ in range(count)]

        def sample() -> None:
            for turn in itertools.count():
                if done.is_set():
                    return
                for process in processes:
                    if process.poll() is None:
                        with suppress(OSError, BenchFailure):  # exited between the poll and the read
                            peaks[process.pid] = max(peaks.get(process.pid, 0.0), harness.rss_mb(process.pid))
                cpu.sample({p.pid: "workers" for p in processes if p.poll() is None}, scan=turn % 5 == 0)
                done.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for process in processes:
                self.wait(process, max(1.0, started + timeout - time.perf_counter()))
        finally:
            done.set()
            sampler.join()
            for process in processes:  # after a failure, the others of the run too
                if process in self.running:
                    self.stop(process, grace=5.0)
                    self.running.pop(process)
        seconds = time.perf_counter() - started
        return seconds, [peaks.get(process.pid, 0.0) for process in processes], Cpu.spent({}, cpu.seen)


# ---- the checks ------------------------------------------------------------------------------------------------


def verify_run(db: Any, started: datetime, counts: dict[str, int], what: str) -> dict[str, int]:
    """Every timer due at ``started`` closed with one entry of its own, every later one pending, every chain and
    head intact (objects without entries and with an empty head counted apart). Returns the timers by status."""
    from sqlalchemy import and_, func, select

    from persistence.models import AuditEntry, Timer

    with db.engine.connect() as connection:
        statuses, later = ({status: int(n) for status, n in connection.execute(
            select(Timer.status, func.count()).where(when).group_by(Timer.status))}
            for when in (Timer.due_at <= started, Timer.due_at > started))
        own = and_(AuditEntry.object_kind == Timer.object_kind, AuditEntry.object_id == Timer.object_id,
                   AuditEntry.trigger == Timer.name, Timer.status.in_(CLOSED))
        found = {
            "entries with a timer id": connection.scalar(
                select(func.count()).where(AuditEntry.timer_id.is_not(None))),
            "distinct timer ids in them": connection.scalar(select(func.count(AuditEntry.timer_id.distinct()))),
            "of them, on their own timer's object with its name as trigger": connection.scalar(
                select(func.count()).select_from(AuditEntry).join(Timer, Timer.id == AuditEntry.timer_id).where(own)),
        }
        # An object's timers fire in due order: an entry whose timer fell due before the previous entry's did.
        due = Timer.due_at.label("due_at")
        steps = (select(due, func.lag(Timer.due_at).over(
            partition_by=(AuditEntry.object_kind, AuditEntry.object_id), order_by=AuditEntry.seq).label("before"))
            .select_from(AuditEntry).join(Timer, Timer.id == AuditEntry.timer_id).subquery())
        backwards = int(connection.scalar(select(func.count()).select_from(steps).where(
            steps.c.before > steps.c.due_at)))
    closed = sum(statuses.get(status, 0) for status in CLOSED)
    wrong = [f"{label} {n} (expected {closed})" for label, n in found.items() if n != closed]
    if backwards:
        wrong.append(f"{backwards} timers fired after a later timer of their object (out of due order)")
    if closed != counts["due"] or set(statuses) - set(CLOSED):
        wrong.append(f"the {counts['due']} timers due: {statuses}")
    if later != ({"pending": counts["later"]} if counts["later"] else {}):
        wrong.append(f"the {counts['later']} timers due later: {later}")
    report, unchained = chains(db)
    if not report.intact:
        wrong.append(f"{report.problem_count} problems in the chains, the first: "
                     f"{[p.view() for p in report.problems[:3]]}")
    if wrong:
        raise BenchFailure(f"after {what}: " + ", ".join(wrong))
    say(f"{db.backend}: after {what}: {closed} timers closed ({', '.join(f'{n} {s}' for s, n in statuses.items())}), "
        f"one entry each; {report.entries} entries on {report.objects} objects verified intact; without a chain "
        f"(copies without history, nothing of theirs due): "
        + ", ".join(f"{n} {kind}s" for kind, n in sorted(unchained.items())))
    return statuses


def chains(db: Any) -> tuple[Any, Counter[str]]:
    """Every object's chain and head verified as ``audit verify`` walks them (``persistence.audit.verify_object``),
    except objects with no entries whose head is empty too (copies without history), counted by kind instead."""
    from persistence.audit import Head, Problem, Verification, verify_object
    from persistence.repository import HEAD_MODELS, Repository, format_id

    report, unchained = Verification(), Counter[str]()

    def without_entries(kind: str, row: Any) -> None:
        if Head.of(row).pos == 0:
            unchained[kind] += 1
        else:
            report.add(Problem(row["audit_seq"] or 0, "deleted", format_id(kind, row["id"]),
                               "its head names entries the log does not have"))

    with db.snapshot() as session:
        repo = Repository(session)
        for kind in sorted(HEAD_MODELS):
            rows = repo.stream_rows(kind)
            row = next(rows, None)
            for pk, chain in itertools.groupby(repo.stream_chains(kind), key=lambda e: e["object_id"]):
                while row is not None and row["id"] < pk:
                    without_entries(kind, row)
                    row = next(rows, None)
                head = Head.of(row) if row is not None and row["id"] == pk else None
                verify_object(format_id(kind, pk), chain, head, report)
                if head is not None:
                    row = next(rows, None)
            while row is not None:
                without_entries(kind, row)
                row = next(rows, None)
    return report, unchained


# ---- the phases ------------------------------------------------------------------------------------------------


def catch_up(backend: str, args: Any, groups: list[Group], workers: Workers, contacts: int, counts_of: list[int],
             pending_total: int, table: harness.Table, label: str) -> dict[int, float]:
    """The template filled once, a copy fired per worker count; rows added to ``table``. Returns timers/s by count."""
    rates: dict[int, float] = {}
    with harness.scratch(backend, args.pg_url) as databases:
        with harness.database(databases.url(f"{label}_template")) as db:
            counts = seed(db, groups, contacts, pending_total)
        for count in counts_of:
            with harness.database(url := databases.url(f"{label}_{count}", template=f"{label}_template")) as db:
                db.dispose()  # no connection of the bench's open while the workers run
                started = datetime.now(UTC)
                measured = None
                try:
                    measured = workers.run_sampled(url, count, timeout=args.run_timeout)
                    verify_run(db, started, counts, f"{count} worker(s), {label}")
                except BenchFailure as failure:  # the figures are still printed; the run exits 1 at the end
                    say(f"CHECK FAILED: {label}, {count} worker(s): {failure}")
                    FAILURES.append(f"{label}, {count} worker(s): {failure}")
            databases.drop(url)
            if measured is None:
                continue  # stopped or failed: no figures
            seconds, peaks, spent = measured
            rates[count] = counts["due"] / seconds
            peak = max(peaks)
            plural = "s" if count > 1 else ""
            say(f"{backend:<11} {label}: {count} worker{plural} (--batch {args.batch}) fired {counts['due']} timers in "
                f"{seconds:.1f} s = {rates[count]:.1f} timers/s; peak RSS per worker "
                f"{' / '.join(f'{p:.1f}' for p in peaks)} MB (limit {MEMORY_LIMIT_MB:.0f} MB: "
                f"{'PASS' if peak < MEMORY_LIMIT_MB else 'FAIL'}); CPUs busy {busy(spent, seconds)}")
            if peak >= MEMORY_LIMIT_MB:
                FAILURES.append(f"{label}, {count} worker(s): a worker's peak RSS {peak:.1f} MB is over "
                                f"{MEMORY_LIMIT_MB:.0f} MB")
            row = [backend, count, counts["due"], counts["due"] + counts["later"], f"{seconds:.1f}",
                   f"{rates[count]:.1f}", f"{rates[count] / rates[1]:.2f}" if 1 in rates else "",
                   busy(spent, seconds)]
            if label == "backlog":
                projected = TARGET_TIMERS / rates[count]
                real = counts["due"] >= TARGET_TIMERS
                verdict = "PASS" if (seconds if real else projected) < TARGET_SECONDS else "FAIL"
                say(f"{backend:<11} backlog time: {seconds / 60:.2f} minutes for {counts['due']} timers"
                    + ("" if real else f"; projection for {TARGET_TIMERS} timers at this rate: "
                       f"{projected / 60:.2f} minutes")
                    + f" (limit {TARGET_SECONDS / 60:.0f} minutes: {verdict}"
                    + ("" if real else ", on the projection") + ")")
                row += [f"{seconds / 60:.2f}" if real else f"{projected / 60:.2f} (projected)", f"{peak:.1f}"]
            table.add(*row)
    if 1 in rates:
        for count, rate in rates.items():
            if count > 1:
                harness.ratio(f"{label} timers/s {count} workers / 1 worker", backend, rate / rates[1])
    return rates


@dataclass
class Server:
    """An ``mpoxflow serve`` process of the bench on a free port of 127.0.0.1."""

    process: Any
    base: str
    log: Path


def start_server(url: str, log_dir: Path, running: list[Server]) -> Server:
    import socket

    import httpx2 as httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    log = log_dir / f"serve-{port}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", "from entry.cli import main; main()", "--db", url, "serve", "--port", str(port)],
            cwd=harness.REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    running.append(server)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise BenchFailure(f"serve exited with status {process.returncode}:\n{log.read_text()[-2000:]}")
        with suppress(httpx.TransportError):
            httpx.get(f"{server.base}/login", timeout=1)
            return server
        if time.monotonic() > deadline:
            raise BenchFailure(f"serve did not answer within 60 s:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def stop_servers(running: list[Server]) -> None:
    for server in running:
        if server.process.poll() is None:
            server.process.terminate()
    for server in running:
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    running.clear()


def suspected(at: Any) -> list[str]:
    """A suspected case (of a person of its own), opened two days ago."""
    from workflows.calendar import local_date

    onset = local_date(datetime.now(UTC)) - timedelta(days=HTTP_START_DAYS_AGO + 1)
    engine = at(datetime.now(UTC) - timedelta(days=HTTP_START_DAYS_AGO))
    person = engine.add_person(ref="BENCH-SUSPECTED", actor=ACTOR)["id"]
    engine.open("case", "open", person=person, actor=ACTOR,
                data={"onset": onset, "symptoms": ["rash"], "criteria": ["msm"]})
    return [person]


def confirm_all(bases: list[str], headers: dict[str, str], cases: list[str], clients: int,
                pcr_on: str) -> tuple[float, list[str]]:
    """``cases`` confirmed over HTTP by ``clients`` threads, client i talking to ``bases[i % len(bases)]``: the
    seconds from the first start to the last end, and what went wrong."""
    import httpx2 as httpx

    errors: list[str] = []

    def client(todo: list[str], base: str) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as session:
            for case in todo:
                answer = session.post(f"/api/cases/{case}/confirm", json={"pcr_on": pcr_on})
                if answer.status_code != 200 or answer.json().get("state") != "confirmed":
                    errors.append(f"{case}: {answer.status_code} {answer.text[:300]}")

    threads = [threading.Thread(target=client, args=(cases[i::clients], bases[i % len(bases)]))
               for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, errors


def http(args: Any, log_dir: Path, table: harness.Table) -> None:
    """Transitions/s over HTTP: C clients against S ``serve`` processes on one PostgreSQL database."""
    from engine.accounts import Accounts
    from engine.bootstrap import engine_on
    from workflows.calendar import local_date
    from workflows.definition import Settings

    [unit] = templates(suspected, [ACTOR])
    runs = [(s, c) for s in args.servers for c in args.clients]
    pcr_on = local_date(datetime.now(UTC)).isoformat()
    running: list[Server] = []
    with harness.fresh("postgresql", args.pg_url) as db:
        spare = HTTP_WARMUP * sum(args.servers)
        cases = [f"case-{pk}" for pk in Seeder(db).add([unit] * (args.http_requests * len(runs) + spare),
                                                       history=False)]
        harness.settle(db)
        secret = Accounts(engine_on(db, Settings())).issue_token(ACTOR, "bench/backlog.py", actor=ADMIN)["secret"]
        headers = {"Authorization": f"Bearer {secret}"}
        rates: dict[tuple[int, int], float] = {}
        spent: dict[tuple[int, int], dict[str, float]] = {}
        busy_cpus: dict[tuple[int, int], str] = {}
        cpu = Cpu(db.url.rsplit("/", 1)[1].split("?")[0])
        try:
            for servers in args.servers:
                stop_servers(running)
                bases = [start_server(db.url, log_dir, running).base for _ in range(servers)]
                for base in bases:  # each process's first requests (imports, connections, caches): not timed
                    warm, cases = cases[:HTTP_WARMUP], cases[HTTP_WARMUP:]
                    if confirm_all([base], headers, warm, 1, pcr_on)[1]:
                        raise BenchFailure(f"the warm-up confirms on {base} failed")
                serving = {server.process.pid: "serve" for server in running}
                for clients in args.clients:
                    mine, cases = cases[:args.http_requests], cases[args.http_requests:]
                    before, own = cpu.sample(serving), time.process_time()
                    seconds, errors = confirm_all(bases, headers, mine, clients, pcr_on)
                    spent[servers, clients] = {**Cpu.spent(before, cpu.sample(serving)),
                                               "clients": time.process_time() - own}
                    if errors:
                        raise BenchFailure(f"{len(errors)} confirms failed, the first: {errors[:3]}")
                    rates[servers, clients] = len(mine) / seconds
                    say(f"postgresql  HTTP: {clients} client(s) against {servers} serve process(es): {len(mine)} "
                        f"confirms in {seconds:.2f} s = {rates[servers, clients]:.1f} transitions/s; CPUs busy "
                        f"{busy(spent[servers, clients], seconds)}")
                    busy_cpus[servers, clients] = busy(spent[servers, clients], seconds)
        finally:
            stop_servers(running)
        engine = engine_on(db, Settings())
        confirmed, done = len(engine.list("case", "confirmed")), args.http_requests * len(runs) + spare
        report, unchained = chains(db)
        if confirmed != done or unchained["case"] or not report.intact:
            raise BenchFailure(f"after the HTTP runs: {confirmed} cases confirmed of {done}, {unchained['case']} "
                               f"without a chain, {report.problem_count} problems in the chains: "
                               f"{[p.view() for p in report.problems[:3]]}")
    first = (args.servers[0], args.clients[0])
    for (servers, clients), rate in rates.items():
        table.add("postgresql", servers, clients, args.http_requests, f"{rate:.1f}", f"{rate / rates[first]:.2f}",
                  busy_cpus[servers, clients])
        if (servers, clients) != first:
            harness.ratio(f"http transitions/s {servers} serve x {clients} clients / {first[0]} x {first[1]}",
                          "postgresql", rate / rates[first])


def run(args: Any) -> list[harness.Table]:
    tables = [
        harness.Table(["Backend", "Workers", "Timers due", "Timers pending", "Seconds", "Timers/s", "× 1 worker",
                       "CPUs busy (of 2)", "Backlog time (minutes; limit 5)",
                       "Peak RSS per worker (MB; limit 200)"], text=1),
        harness.Table(["Backend", "Workers", "Timers due", "Timers pending", "Seconds", "Timers/s", "× 1 worker",
                       "CPUs busy (of 2)"]),
        harness.Table(["Backend", "`serve` processes", "HTTP clients", "Confirms", "Transitions/s",
                       "× the first row", "CPUs busy (of 2)"]),
    ]
    log_dir = Path(tempfile.mkdtemp(prefix="bench_backlog_logs_"))
    workers = Workers(log_dir, args.batch)
    try:
        if any(phase not in args.skip for phase in ("backlog", "scale")):
            groups = groups_of(templates(outbreak, [ACTOR]))
        if "backlog" not in args.skip:
            for backend in harness.backends(args):
                catch_up(backend, args, groups, workers, args.contacts, args.workers, args.pending_total,
                         tables[0], "backlog")
        if "scale" not in args.skip:
            catch_up("postgresql", args, groups, workers, args.scale_contacts, args.scale_workers, 0, tables[1],
                     "scale")
        if "http" not in args.skip:
            http(args, log_dir, tables[2])
    finally:
        workers.close()
        shutil.rmtree(log_dir, ignore_errors=True)
    printed = [table for table in tables if table.rows]
    if FAILURES:
        for table in printed:
            say("")
            say(table.markdown())
        raise BenchFailure(f"{len(FAILURES)} check(s) failed (the figures above are not valid): " + "; ".join(FAILURES))
    return printed


if __name__ == "__main__":
    options = harness.parser("A catch-up after an outage: the backlog fired by `mpoxflow worker` processes, their "
                             "memory; timers/s and HTTP transitions/s against the number of processes.")
    options.set_defaults(backend="postgresql")
    options.add_argument("--contacts", type=int, default=DEFAULT_CONTACTS,
                         help=f"contacts of the backlog, with their cases and courses ({DEFAULT_CONTACTS})")
    options.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], help="worker counts (1 2 3)")
    options.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"each worker's --batch ({DEFAULT_BATCH})")
    options.add_argument("--pending-total", type=int, default=DEFAULT_PENDING,
                         help=f"timers pending at the start of the catch-up, the rest due later ({DEFAULT_PENDING})")
    options.add_argument("--scale-contacts", type=int, default=10_000, help="contacts of the scale runs (10000)")
    options.add_argument("--scale-workers", type=int, nargs="+", default=[1, 2, 4], help="their worker counts (1 2 4)")
    options.add_argument("--servers", type=int, nargs="+", default=[1, 2], help="`serve` processes (1 2)")
    options.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8], help="HTTP clients (1 4 8)")
    options.add_argument("--http-requests", type=int, default=400, help="confirms per HTTP run (400)")
    options.add_argument("--run-timeout", type=float, default=900.0,
                         help="seconds a worker run may take before its workers are stopped and the check fails (900)")
    options.add_argument("--skip", nargs="*", default=[], choices=("backlog", "scale", "http"))
    arguments = options.parse_args()
    harness.at_least(arguments, options, contacts=1, batch=1, pending_total=0, scale_contacts=1, http_requests=1,
                     run_timeout=1)
    for name in ("workers", "scale_workers", "servers", "clients"):
        if min(getattr(arguments, name)) < 1:
            options.error(f"--{name.replace('_', '-')} must be at least 1")
    sys.exit(harness.main("backlog", arguments, run))
