"""What every benchmark shares: its arguments, scratch databases, timing, and how figures are printed.

A script runs as ``python bench/NAME.py`` or ``python -m bench.NAME``: run as a file, its own folder would come
first on ``sys.path`` and shadow the libraries ``transitions`` and ``http`` (bench/transitions.py, bench/http.py),
so each script first puts the repository root there instead (its first lines), then imports this module.

Every figure a script prints is a line of its own; each baseline comparison is one line ``ratio WHAT (BACKEND):
X.XX``; at the end come the rows of the README's tables (``Table``), with the command that measured them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = os.environ.get("MPOXFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: The first word of the scratch PostgreSQL databases' names (``$MPOXFLOW_BENCH_PG_PREFIX``, default ``bench``).
PG_PREFIX = os.environ.get("MPOXFLOW_BENCH_PG_PREFIX", "bench")
#: The first admin of every scratch database (``Engine.bootstrap_users``, as ``mpoxflow init`` does), and the
#: staff user the benches act as.
ADMIN = "bench:admin"
ACTOR = "bench"


class BenchFailure(Exception):
    """The database, a process or a figure is not what the benchmark should have produced (exit status 1)."""


def say(text: str) -> None:
    print(text, flush=True)


def say_command(name: str) -> None:
    """The command that measured the figures, as the README gives it: ``measured with: .venv/bin/python
    bench/NAME.py ARGS``."""
    say(f"measured with: .venv/bin/python {' '.join([f'bench/{name}.py', *sys.argv[1:]])}")


def ratio(what: str, backend: str, value: float) -> None:
    """The one line of a baseline comparison: ``ratio engine/raw (sqlite): 0.55``."""
    say(f"ratio {what} ({backend}): {value:.2f}")


# ---- arguments and the run -------------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every script takes (``--backend``, ``--pg-url``, ``--log-level``); the script adds its own."""
    made = argparse.ArgumentParser(description=description)
    made.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    made.add_argument("--pg-url", default=DEFAULT_PG_URL,
                      help="PostgreSQL URL whose database is used to create and drop the scratch databases "
                      "(default $MPOXFLOW_TEST_POSTGRES_URL or %(default)s)")
    made.add_argument("--log-level", default="warning", help="engine log level (default warning, as the CLI)")
    return made


def backends(args: argparse.Namespace) -> list[str]:
    return ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]


def at_least(args: argparse.Namespace, made: argparse.ArgumentParser, **bounds: float) -> None:
    """Refuse (exit 2) an argument below its bound: ``at_least(args, parser, n=1)``."""
    for name, low in bounds.items():
        if getattr(args, name) < low:
            made.error(f"--{name.replace('_', '-')} must be at least {low:g}")


@dataclass
class Table:
    """One of the README's tables: the header, then a row per figure; the first ``text`` columns are text, the
    rest figures (right-aligned)."""

    columns: list[str]
    text: int = 1
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append([str(cell) for cell in cells])

    def markdown(self) -> str:
        align = "|---" * self.text + "|---:" * (len(self.columns) - self.text) + "|"
        lines = ["| " + " | ".join(cells) + " |" for cells in (self.columns, *self.rows)]
        return "\n".join([lines[0], align, *lines[1:]])


def main(name: str, args: argparse.Namespace, run: Callable[[argparse.Namespace], list[Table]]) -> int:
    """Run a benchmark: SIGTERM ends it through the clean-ups, the engine logs warnings only (its child processes
    too), a banner, ``run(args)``, then the tables. Returns the exit status: 1 on a ``BenchFailure``."""
    import sqlalchemy

    from entry.logs import configure_logging

    def terminate(*_: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
        sys.exit(143)

    signal.signal(signal.SIGTERM, terminate)
    os.environ["MPOXFLOW_LOG_LEVEL"] = args.log_level
    configure_logging(level=args.log_level)
    given = ", ".join(f"{k}={v}" for k, v in vars(args).items() if k not in ("pg_url", "log_level") and v is not None)
    say(f"mpoxflow {name} benchmark ({given}): Python {platform.python_version()}, SQLAlchemy "
        f"{sqlalchemy.__version__}, {os.cpu_count()} CPUs")
    began = time.perf_counter()
    try:
        tables = run(args)
    except BenchFailure as failure:
        print(f"bench/{name}.py: FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    say(f"whole run: {time.perf_counter() - began:.0f} s")
    for table in tables:
        say("")
        say(table.markdown())
    return 0


# ---- timing ------------------------------------------------------------------------------------------------------


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of ``run()``."""
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(1, -(-len(ordered) * p // 100)) - 1]  # ceil(n p / 100), at least the first


def rss_mb(pid: int | str = "self", name: str = "VmHWM") -> float:
    """A size from ``/proc/PID/status`` (``VmRSS``: resident now; ``VmHWM``: its peak), in MB (2**20 bytes)."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(f"{name}:"):
            return int(row.split()[1]) / 1024
    raise BenchFailure(f"no {name} in /proc/{pid}/status")


# ---- scratch databases ---------------------------------------------------------------------------------------


class Scratch:
    """Scratch databases of one backend, made on demand and all removed by ``close`` whatever happens: SQLite
    files in a temporary directory, PostgreSQL databases ``bench_<pid>_<phase>`` (``PG_PREFIX`` first; dropped
    ``WITH (FORCE)``)."""

    def __init__(self, backend: str, pg_url: str) -> None:
        self.backend = backend
        self.names: list[str] = []
        self.directory: Path | None = None
        if backend == "sqlite":
            self.directory = Path(tempfile.mkdtemp(prefix="bench_"))
            return
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from persistence.database import normalise_url

        self.base = make_url(normalise_url(pg_url))
        self.admin = create_engine(self.base, isolation_level="AUTOCOMMIT")

    def _sql(self, statement: str) -> None:
        from sqlalchemy import text

        with self.admin.connect() as connection:
            connection.execute(text(statement))

    def url(self, phase: str, template: str | None = None) -> str:
        """A new database for ``phase``: empty, or a copy of the database of phase ``template`` (whose
        connections must all be closed)."""
        if self.directory is not None:
            path = self.directory / f"{phase}.db"
            if template is not None:
                shutil.copyfile(self.directory / f"{template}.db", path)
            return f"sqlite:///{path}"
        from sqlalchemy.exc import OperationalError

        name = f"{PG_PREFIX}_{os.getpid()}_{phase}"
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.append(name)
        copy = "" if template is None else f' TEMPLATE "{PG_PREFIX}_{os.getpid()}_{template}"'
        for attempt in range(20):  # autovacuum may be looking at the template for a moment
            try:
                self._sql(f'CREATE DATABASE "{name}"{copy}')
                break
            except OperationalError as error:
                if "being accessed by other users" not in str(error) or attempt == 19:
                    raise
                time.sleep(0.5)
        return str(self.base.set(database=name).render_as_string(hide_password=False))

    def drop(self, url: str) -> None:
        """Remove one database now (its connections must be closed)."""
        if self.directory is not None:
            for suffix in ("", "-wal", "-shm"):
                with suppress(FileNotFoundError):
                    Path(url.removeprefix("sqlite:///") + suffix).unlink()
            return
        name = url.rsplit("/", 1)[1].split("?")[0]
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.remove(name)

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            return
        try:
            for name in list(self.names):
                self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                self.names.remove(name)
        finally:
            self.admin.dispose()


@contextmanager
def scratch(backend: str, pg_url: str) -> Iterator[Scratch]:
    databases = Scratch(backend, pg_url)
    try:
        yield databases
    finally:
        databases.close()


@contextmanager
def database(url: str, *, start: Any = None, users: tuple[str, ...] = (ACTOR,)) -> Iterator[Any]:
    """The database at ``url`` migrated with its clock (simulated from ``start``, else real time), its first
    admin ``bench:admin``, the scheduler's ``timer`` and the staff ``users`` (as ``mpoxflow init`` and ``user add``
    leave it; nothing is added to a copy that has them); disposed afterwards."""
    from engine.bootstrap import engine_on, init_database
    from persistence.database import Database
    from workflows.definition import Settings

    db = Database(url)
    try:
        init_database(db, start)
        engine = engine_on(db, Settings())
        if engine.bootstrap_users(ADMIN):
            make_users(engine, *users, admin=False)
        yield db
    finally:
        db.dispose()


@contextmanager
def fresh(backend: str, pg_url: str, *, start: Any = None, users: tuple[str, ...] = (ACTOR,)) -> Iterator[Any]:
    """One scratch database of ``backend``, as ``database`` leaves it (its URL: ``db.url``), removed afterwards."""
    with scratch(backend, pg_url) as databases, database(databases.url(backend), start=start, users=users) as db:
        yield db


def make_users(engine: Any, *staff: str, admin: bool = True) -> None:
    """``bench:admin`` and ``timer`` (``bootstrap_users``, when ``admin``), then the ``staff`` users."""
    if admin:
        engine.bootstrap_users(ADMIN)
    for name in staff:
        engine.add_user(name, "staff", actor=ADMIN)


def settle(db: Any) -> None:
    """PostgreSQL: statistics and the visibility map up to date, as autovacuum leaves them; SQLite: the WAL written
    back into the file (so that the file alone can be copied)."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if db.backend == "sqlite":
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            connection.exec_driver_sql("VACUUM ANALYZE")


def python(script: str, *args: str, **options: Any) -> Any:
    """A child process of this interpreter running ``script`` (a path under the repository) from its root."""
    import subprocess

    return subprocess.Popen([sys.executable, str(REPO_ROOT / script), *args], cwd=REPO_ROOT, **options)
