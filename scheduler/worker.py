"""``mpoxflow worker``: fires timers as they fall due, in real time, with APScheduler 3 as the clock.

The timers table is the truth; APScheduler only decides *when* to look. Its job store is this process's memory
(job stores must never be shared between processes) and holds two jobs: a date job at the next due instant,
re-armed after every pass, and a safety poll that catches timers armed by other processes. ``misfire_grace_time``
is None: a wake-up missed by more than a second (APScheduler's default would drop it silently) still runs.

Each pass fires batches through ``Engine.fire_due``: claim, transition and audit entry of each timer in one
transaction; on PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several workers share the load, never the same timer.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from engine.clock import Clock, SystemClock
from engine.core import Engine
from engine.firing import RetryPolicy

log = structlog.get_logger("mpoxflow.worker")


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
    ) -> None:
        if poll_seconds <= 0 or batch <= 0:
            raise ValueError("poll_seconds and batch must be positive")
        self.engine = engine
        # The worker never moves a simulated clock: writing it with every batch would queue the workers on one row.
        self.engine.persist_clock = False
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
        self._wake: str | None = None
        self.scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    # ---- one pass ------------------------------------------------------------------------------------------

    def run_pass(self) -> int:
        """Fire everything ready now, batch after batch, then arm the wake-up for the next due timer."""
        with self._pass:
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

    def _arm_wake(self, next_due: datetime | None) -> None:
        """A date job at the next due instant (real time only: a simulated clock does not move by itself).
        Each wake-up gets a new id, so re-arming from inside a running wake-up never races its removal."""
        previous, self._wake = self._wake, None
        if previous is not None:
            with contextlib.suppress(JobLookupError):  # it was the job running now, already removed
                self.scheduler.remove_job(previous)
        if next_due is None or self.engine.clock.simulated or not self.scheduler.running:
            return
        self._wake = f"wake-{next(self._wake_ids)}"
        self.scheduler.add_job(self._scheduled_pass, "date", run_date=max(next_due, self.wall_clock.now()),
                               id=self._wake)

    def _scheduled_pass(self) -> None:
        try:
            self.run_pass()
        except Exception as error:  # noqa: BLE001 - a pass that fails (database down) is logged; the poll tries again
            log.error("worker_pass_failed", **error_summary(error))

    # ---- running -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop: the timer in hand is finished and committed, the rest wait for the next run."""
        self._stop.set()

    def run(self, *, install_signals: bool = True) -> int:
        """Run in the foreground until stopped (SIGINT/SIGTERM) or idle; returns the number of timers fired."""
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
        log.info("worker_started", poll_seconds=self.poll_seconds, batch=self.batch,
                 backend=self.engine.db.backend, simulated_clock=self.engine.clock.simulated)
        self.scheduler.start()
        self.scheduler.add_job(self._scheduled_pass, "interval", seconds=self.poll_seconds, id="poll",
                               next_run_time=self.wall_clock.now())
        try:
            while not self._stop.is_set() and not self._idle.is_set():
                self._stop.wait(0.2)
        finally:
            self._stop.set()
            self.scheduler.shutdown(wait=True)  # lets the pass in hand finish its current timer
            log.info("worker_stopped", fired=self.fired, idle=self._idle.is_set())
        return self.fired

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("worker_stopping", signal=signal.Signals(signum).name)
        self.stop()


def error_summary(error: BaseException) -> dict[str, str]:
    """The exception's type and its message's first line: a database error's driver message, never the SQL
    statement or its parameters (nor a detail line that may quote a value); no traceback in the JSON log."""
    from sqlalchemy.exc import StatementError

    cause: BaseException = error.orig if isinstance(error, StatementError) and error.orig is not None else error
    return {"error_type": type(error).__name__, "error": (str(cause).strip().splitlines() or [""])[0][:300]}
