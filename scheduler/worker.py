"""``mpoxflow worker``: fires timers as they fall due, in real time, with APScheduler 3 as the clock.

The timers table is the truth; APScheduler only decides *when* to look. Its job store is this process's memory
(job stores must never be shared between processes) and holds two jobs: a date job at the next due instant,
re-armed after every pass, and a safety poll. ``misfire_grace_time`` is None: a wake-up missed by more than a second
(APScheduler's default would drop it silently) still runs.

Timers armed by other processes (``serve``, a CLI command) wake the worker at once: on PostgreSQL the transaction
that arms them sends ``NOTIFY mpoxflow_timers`` with the earliest due instant it armed (``engine.uow``), and a
thread of the worker ``LISTEN``s on a connection of its own (reconnecting with backoff when it drops; the poll
covers meanwhile); on SQLite the thread asks for the earliest armed due instant every ``WATCH_SECONDS`` (one
indexed query). Either way a due instant earlier than the next wake-up re-arms the date job.

Each pass fires batches through ``Engine.fire_due``: claim, transition and audit entry of each timer in one
transaction; on PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several workers share the load, never the same timer.

Beside the firing, a thread of its own delivers webhooks (issue 18, ``scheduler.delivery``): a delivery pass every
``DELIVERY_SECONDS``, each event leased so that several workers never send one event to one webhook at once.

**Scheduled jobs** (issue 19): the retention purge (``Engine.purge``, every ``retention_every``) and the audit log's
anchor (``engine.anchor.make_anchor`` into a folder, every ``AnchorSchedule.every``), both as the scheduler's own
user (``timer``, whom ``engine.uow.SCHEDULED_JOBS`` permits exactly these two commands). They are APScheduler 3
interval jobs in the same in-memory job store (``coalesce``: runs missed while the process slept are one run;
``misfire_grace_time`` None: never dropped), first run at start-up, on an executor of their own so a long purge never
holds up a timer. Their first run instant is read from the injected wall clock (``wall_clock``), and each later one
is the previous plus the interval (APScheduler's ``IntervalTrigger``), so tests check the schedule without sleeping.
A job that fails is logged (``worker_job_failed``: its name and the error's type and first line, never data) and
runs again at its next instant; the timers keep firing meanwhile. With ``exit_when_idle`` the jobs run once, at
start-up, before the timers.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from engine.clock import Clock, SystemClock
from engine.core import TIMER_USER, Engine
from engine.firing import RetryPolicy
from workflows.errors import UsageError
from workflows.limits import shown

log = structlog.get_logger("mpoxflow.worker")

#: SQLite: how often the worker looks for timers armed by other processes (one indexed query); a timer armed
#: elsewhere and due at once fires within about this long (PostgreSQL is told at once, by NOTIFY).
WATCH_SECONDS = 0.5
#: PostgreSQL: how long the listener waits for a notification before it looks at the stop flag again.
LISTEN_TIMEOUT_SECONDS = 0.5
#: The LISTEN connection lost: the first wait before reconnecting, doubled after each failure up to the last.
RECONNECT_SECONDS = (0.5, 30.0)
#: How often the delivery thread looks for events to send to webhooks (a pass that sent something goes on at once).
DELIVERY_SECONDS = 1.0
#: The scheduled jobs' default interval (``mpoxflow worker --retention-every``, ``--anchor-every``), and its bounds.
JOB_HOURS = 24.0
MIN_JOB_HOURS, MAX_JOB_HOURS = 0.01, 24.0 * 366
#: The executor the scheduled jobs run on: one thread of their own, beside the timers' (``default``).
JOBS_EXECUTOR = "jobs"


@dataclass(frozen=True)
class AnchorSchedule:
    """The worker's scheduled anchor: the private key (read at start-up), the folder each anchor file is written to
    (``anchor-<UTC instant>.json``, never overwritten), and how often."""

    key: Any
    directory: str
    every: timedelta


def check_job_hours(hours: float, flag: str) -> timedelta:
    """A scheduled job's interval in hours (``--retention-every``, ``--anchor-every``). ValueError naming the flag."""
    import math

    if not math.isfinite(hours) or not MIN_JOB_HOURS <= hours <= MAX_JOB_HOURS:
        raise ValueError(f"{flag} {hours}: give a number of hours from {MIN_JOB_HOURS:g} to {MAX_JOB_HOURS:g}")
    return timedelta(hours=hours)


def check_anchor_dir(directory: str) -> str:
    """The folder the scheduled anchors go to: it must exist, be a folder and be writable by this process.
    ValueError saying which (the caller names the flag); the name is echoed shortened."""
    try:
        is_dir = Path(directory).is_dir()
    except (OSError, ValueError):  # a NUL in the name, a name too long
        is_dir = False
    if not is_dir:
        raise ValueError(f"{shown(directory)} is not a folder: make it first (each anchor is a new file there)")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{shown(directory)} is not writable by this process: the anchors could not be written")
    return directory


def write_anchor_into(directory: str) -> Callable[[dict[str, Any]], str]:
    """What ``make_anchor`` hands the anchor to: a new file ``anchor-<UTC instant>.json`` in ``directory`` (created
    exclusively: an existing anchor is never overwritten); returns its path."""

    def write(document: dict[str, Any]) -> str:
        from engine.anchor import anchor_file_name, write_anchor

        return write_anchor(document, str(Path(directory) / anchor_file_name(document, precise=True)))

    return write


class Worker:
    """Fires due timers until stopped (or, with ``exit_when_idle``, until nothing is ready)."""

    def __init__(
        self,
        engine: Engine,
        *,
        poll_seconds: float = 30.0,
        batch: int = 100,
        policy: RetryPolicy | None = None,
        exit_when_idle: bool = False,
        wall_clock: Clock | None = None,
        deliver_webhooks: bool = True,
        retention_every: timedelta | None = None,
        anchor: AnchorSchedule | None = None,
    ) -> None:
        if poll_seconds <= 0 or batch <= 0:
            raise ValueError("poll_seconds and batch must be positive")
        if retention_every is not None and retention_every <= timedelta(0):
            raise ValueError("retention_every must be positive")
        if anchor is not None and anchor.every <= timedelta(0):
            raise ValueError("the anchor's interval must be positive")
        self.engine = engine
        # The worker never moves a simulated clock: writing it with every batch would queue the workers on one row.
        self.engine.persist_clock = False
        # Nor does it NOTIFY of the timers its firings arm: it reads the next due instant after each pass itself.
        self.engine.runtime.announce_timers = False
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.policy = policy or RetryPolicy()
        self.exit_when_idle = exit_when_idle
        self.wall_clock = wall_clock or SystemClock()
        self.fired = 0
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._pass = threading.Lock()
        self._wake_ids = itertools.count()
        # The wake-up: the date job's id and instant, and during a pass (``_in_pass``) the earliest due instant
        # others announced meanwhile (``_hint``), armed when the pass ends; all guarded by ``_wake_lock``, for the
        # pass (the scheduler's executor thread) and the watcher thread both re-arm it.
        self._wake_lock = threading.Lock()
        self._wake: str | None = None
        self._wake_at: datetime | None = None
        self._in_pass = False
        self._hint: datetime | None = None
        self._watcher: threading.Thread | None = None
        self.deliver_webhooks = deliver_webhooks
        #: Renders an advice sheet's PDF for the e-mails (issue 21 item 4; the entry point that starts the worker
        #: gives it: ``entry.web.advice.pdf``); None: e-mails go without the PDF.
        self.advice_pdf: Callable[[Any], bytes] | None = None
        self._deliverer: threading.Thread | None = None
        self.retention_every = retention_every
        self.anchor = anchor
        #: What the scheduled jobs did: the last run's result by job name, and how many runs failed.
        self.job_results: dict[str, Any] = {}
        self.job_failures: dict[str, int] = {}
        self.scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(max_workers=1), JOBS_EXECUTOR: ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    # ---- one pass ------------------------------------------------------------------------------------------

    def run_pass(self) -> int:
        """Fire everything ready now, batch after batch, then arm the wake-up for the next due timer."""
        with self._pass:
            with self._wake_lock:
                self._in_pass, self._hint = True, None
            try:
                count = 0
                while not self._stop.is_set():
                    fired = self.engine.fire_due(limit=self.batch, policy=self.policy, stop=self._stop.is_set)
                    count += len(fired)
                    self.fired += len(fired)  # committed: counted even if a later batch fails
                    if len(fired) < self.batch:
                        break
                next_due = self.engine.next_due()
                if self.exit_when_idle and (next_due is None or next_due > self.engine.clock.now()):
                    self._idle.set()
                if not self._stop.is_set():
                    self._arm_wake(next_due)
                return count
            finally:
                # A timer announced during the pass may have committed after the pass last looked: wake for it.
                with self._wake_lock:
                    self._in_pass, hint, self._hint = False, self._hint, None
                if hint is not None:
                    self.wake_by(hint)

    def wake_by(self, due: datetime) -> None:
        """Make sure a pass runs by ``due`` (a timer another process armed): the date job is re-armed when it
        would wake later, or not at all; during a pass, the pass re-arms for it when it ends."""
        with self._wake_lock:
            if self._in_pass:
                self._hint = due if self._hint is None else min(self._hint, due)
            elif self._wake_at is None or due < self._wake_at:
                self._arm_locked(due)

    def _arm_wake(self, next_due: datetime | None) -> None:
        with self._wake_lock:
            self._arm_locked(next_due)

    def _arm_locked(self, next_due: datetime | None) -> None:
        """A date job at the next due instant (real time only: a simulated clock does not move by itself).
        Each wake-up gets a new id, so re-arming from inside a running wake-up never races its removal."""
        previous, self._wake, self._wake_at = self._wake, None, None
        if previous is not None:
            with contextlib.suppress(JobLookupError):  # it was the job running now, already removed
                self.scheduler.remove_job(previous)
        if next_due is None or self.engine.clock.simulated or not self.scheduler.running or self._stop.is_set():
            return
        wake = f"wake-{next(self._wake_ids)}"
        self._wake, self._wake_at = wake, max(next_due, self.wall_clock.now())
        self.scheduler.add_job(self._woken, "date", run_date=self._wake_at, args=(wake,), id=wake)

    def _woken(self, wake: str) -> None:
        with self._wake_lock:
            if self._wake == wake:  # this wake-up is spent: what is announced from now on arms a new one
                self._wake, self._wake_at = None, None
        self._scheduled_pass()

    def _scheduled_pass(self) -> None:
        try:
            self.run_pass()
        except Exception as error:  # noqa: BLE001 - a pass that fails (database down) is logged; the poll tries again
            log.error("worker_pass_failed", **error_summary(error))

    # ---- the scheduled jobs (issue 19) ---------------------------------------------------------------------

    def jobs(self) -> dict[str, tuple[Callable[[], Any], timedelta]]:
        """The scheduled jobs this worker runs, by name: (what runs, how often)."""
        found: dict[str, tuple[Callable[[], Any], timedelta]] = {}
        if self.retention_every is not None:
            found["retention"] = (self.purge_due, self.retention_every)
        if self.anchor is not None:
            found["anchor"] = (self.make_anchor, self.anchor.every)
        return found

    def schedule_jobs(self) -> None:
        """Add the scheduled jobs to the scheduler: interval jobs, first run now (the injected wall clock's)."""
        now = self.wall_clock.now()
        for name, (_, every) in self.jobs().items():
            self.scheduler.add_job(self.run_job, "interval", args=(name,), id=name, seconds=every.total_seconds(),
                                   next_run_time=now, executor=JOBS_EXECUTOR, coalesce=True,
                                   misfire_grace_time=None, max_instances=1, replace_existing=True)

    def purge_due(self) -> dict[str, Any]:
        """The retention purge of everything due now, as the scheduler's user; returns its counts."""
        result = self.engine.purge(actor=TIMER_USER, stop=self._stop.is_set)
        return {"persons": len(result["persons"]), "imports": len(result["imports"]),
                "skipped": len(result["skipped"])}

    def make_anchor(self) -> dict[str, Any]:
        """An anchor of the audit log into the anchor folder, as the scheduler's user; returns where and its root."""
        from engine.anchor import make_anchor

        assert self.anchor is not None
        made = make_anchor(self.engine.runtime, TIMER_USER, self.anchor.key, write_anchor_into(self.anchor.directory))
        return {"output": made["output"], "max_seq": made["max_seq"], "chains": made["chains"],
                "merkle_root": made["merkle_root"]}

    def run_job(self, name: str) -> bool:
        """Run one scheduled job; True when it succeeded. A failure is logged (its name and the error's type and
        first line: never data) and counted, and raises nothing: the job runs again at its next instant."""
        job, _ = self.jobs()[name]
        try:
            result = job()
        except Exception as error:  # noqa: BLE001 - a failing job must not stop the worker or its other jobs
            self.job_failures[name] = self.job_failures.get(name, 0) + 1
            log.error("worker_job_failed", job=name, **error_summary(error))
            return False
        self.job_results[name] = result
        log.info("worker_job_done", job=name, **result)
        return True

    # ---- timers armed elsewhere ----------------------------------------------------------------------------

    def _watch(self) -> None:
        """The watcher thread: PostgreSQL's notifications, or SQLite's cheap look every ``WATCH_SECONDS``."""
        if self.engine.db.backend == "postgresql":
            self._listen()
        else:
            self._look()

    def _look(self) -> None:
        failing = False
        while not self._stop.wait(WATCH_SECONDS):
            try:
                due = self.engine.next_armed()
            except Exception as error:  # noqa: BLE001 - the database away: logged once, the poll covers too
                if not failing:
                    log.warning("worker_watch_failed", **error_summary(error))
                failing = True
                continue
            failing = False
            if due is not None:
                self.wake_by(due)

    def _listen(self) -> None:
        """LISTEN on a connection of its own; each notification's due instant may re-arm the wake-up. A lost
        connection is logged and made again with backoff; what was armed meanwhile is looked up once reconnected."""
        first, most = RECONNECT_SECONDS
        backoff = first
        while not self._stop.is_set():
            connection = None
            try:
                connection = self.engine.db.listener()
                log.info("worker_listening")
                backoff = first
                due = self.engine.next_armed()  # anything armed while nobody listened
                if due is not None:
                    self.wake_by(due)
                while not self._stop.is_set():
                    for notice in connection.notifies(timeout=LISTEN_TIMEOUT_SECONDS):
                        self.wake_by(_instant(notice.payload, self.wall_clock.now()))
            except Exception as error:  # noqa: BLE001 - any failure of the connection: make it again
                if self._stop.is_set():
                    break
                log.warning("worker_listen_lost", retry_in_seconds=backoff, **error_summary(error))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, most)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()

    # ---- webhooks ------------------------------------------------------------------------------------------

    def _deliver(self) -> None:
        """The delivery thread: a pass, then a pause when it sent nothing, until stopped. A failing pass (the
        database away) is logged once and tried again."""
        from engine.messages import Messages, SmtpGateway, SmtpSettings
        from engine.messages import deliver_pass as send_messages
        from engine.webhooks import Webhooks
        from scheduler.delivery import deliver_pass

        hooks = Webhooks(self.engine.runtime)
        try:
            smtp = SmtpSettings.from_env()  # no MPOXFLOW_SMTP_HOST: queued e-mails wait
        except UsageError as error:
            log.error("worker_smtp_misconfigured", error=str(error))
            smtp = None
        mail, gateway = Messages(self.engine), SmtpGateway(smtp) if smtp is not None else None
        failing = False
        while not self._stop.is_set():
            try:
                sent = deliver_pass(hooks, self.engine.clock, stop=self._stop.is_set)
                if gateway is not None:
                    sent += send_messages(mail, gateway, pdf=self.advice_pdf, stop=self._stop.is_set)
                failing = False
            except Exception as error:  # noqa: BLE001 - logged; the next pass tries again
                if not failing:
                    log.error("worker_delivery_failed", **error_summary(error))
                failing, sent = True, 0
            if not sent:
                self._stop.wait(DELIVERY_SECONDS)

    # ---- running -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop: the timer in hand is finished and committed, the rest wait for the next run."""
        self._stop.set()

    def run(self, *, install_signals: bool = True) -> int:
        """Run in the foreground until stopped (SIGINT/SIGTERM) or idle; returns the number of timers fired.
        Refuses to start (UsageError) when objects run under a workflow definition this process has not loaded."""
        self.engine.check_definitions_loaded()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
        log.info("worker_started", poll_seconds=self.poll_seconds, batch=self.batch,
                 backend=self.engine.db.backend, simulated_clock=self.engine.clock.simulated,
                 jobs={name: every.total_seconds() for name, (_, every) in self.jobs().items()})
        if self.exit_when_idle:
            for name in self.jobs():  # a catch-up run: each scheduled job once, before the timers
                self.run_job(name)
        self.scheduler.start()
        if not self.exit_when_idle:
            self.schedule_jobs()
        self.scheduler.add_job(self._scheduled_pass, "interval", seconds=self.poll_seconds, id="poll",
                               next_run_time=self.wall_clock.now())
        if not self.engine.clock.simulated:
            self._watcher = threading.Thread(target=self._watch, name="mpoxflow-worker-watch", daemon=True)
            self._watcher.start()
        if self.deliver_webhooks:
            self._deliverer = threading.Thread(target=self._deliver, name="mpoxflow-worker-deliver", daemon=True)
            self._deliverer.start()
        try:
            while not self._stop.is_set() and not self._idle.is_set():
                self._stop.wait(0.2)
        finally:
            self._stop.set()
            if self._watcher is not None:
                self._watcher.join(timeout=5)
            if self._deliverer is not None:
                self._deliverer.join(timeout=15)  # the request in hand ends within its timeout
            self.scheduler.shutdown(wait=True)  # lets the pass in hand finish its current timer
            log.info("worker_stopped", fired=self.fired, idle=self._idle.is_set())
        return self.fired

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("worker_stopping", signal=signal.Signals(signum).name)
        self.stop()


def _instant(payload: str, now: datetime) -> datetime:
    """A notification's due instant; a payload that is none (a NOTIFY by hand) means now."""
    try:
        due = datetime.fromisoformat(payload)
    except ValueError:
        return now
    return due if due.tzinfo is not None else due.replace(tzinfo=UTC)


def error_summary(error: BaseException) -> dict[str, str]:
    """The exception's type and its message's first line: a database error's driver message, never the SQL
    statement or its parameters (nor a detail line that may quote a value); no traceback in the JSON log."""
    from sqlalchemy.exc import StatementError

    cause: BaseException = error.orig if isinstance(error, StatementError) and error.orig is not None else error
    return {"error_type": type(error).__name__, "error": (str(cause).strip().splitlines() or [""])[0][:300]}
