"""What every benchmark script shares: output, failure, scratch databases, a clean exit on SIGTERM.

Import it after the script has put the repository root on ``sys.path`` (``from bench.common import ...``).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_PG_URL = os.environ.get(
    "MPOXFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class BenchFailure(Exception):
    """The database, a worker or a figure is not what the benchmark should have produced."""


def say(text: str) -> None:
    print(text, flush=True)


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM ends the run through the finally blocks, so workers stop and scratch databases are dropped (a second
    SIGTERM is ignored so that it cannot interrupt that clean-up)."""

    def terminate(*_: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(143)

    signal.signal(signal.SIGTERM, terminate)


@contextmanager
def scratch_url(backend: str, pg_url: str) -> Iterator[str]:
    """The URL of a fresh, empty database of ``backend``; removed afterwards, whatever happens."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="mpoxflow_bench_") as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}"
        return

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from persistence.database import normalise_url

    base = make_url(normalise_url(pg_url))
    name = f"mpoxflow_bench_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
