"""Fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL is required, never skipped: if it cannot be reached the storage tests fail and say how to start it.
Each test gets a fresh database made from a template migrated once per session (a file copy on SQLite,
``CREATE DATABASE ... TEMPLATE`` on PostgreSQL): the audit log is append-only, so nothing is cleaned by deleting.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from engine import accounts
from engine.bootstrap import default_actor, init_database
from engine.clock import SimulatedClock
from engine.core import Engine
from persistence.database import Database

PG_URL = os.environ.get("MPOXFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")  # a Monday morning in Copenhagen
_numbers = itertools.count()
#: Users every test database has (besides the first admin, ``default_actor()``, and the scheduler's ``timer``).
ADMIN = "admin:test"
TEST_USERS = {
    ADMIN: "admin", "staff:test": "staff", "staff:stps": "staff", "staff:clinic": "staff", "staff:lab": "staff",
    "staff:jonas": "staff", "staff:anna": "staff", "staff:env": "staff", "stps:maria": "staff",
    "nurse:holm": "staff", "nurse:ida": "staff", "doctor:lund": "staff", "dr:infection": "staff", "bench": "staff",
    "auditor:test": "auditor",
}


#: Every test user's password (for the web application and the HTTP API).
PASSWORD = "correct horse battery"
# Argon2 with the cheapest parameters: the tests check what is hashed and verified, not the cost.
accounts.password_hash = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))


def seed_users(database: Database) -> None:
    """The test users, registered the day before START by the first admin (whoever runs the tests), each with
    the password ``PASSWORD``."""
    engine = Engine(database, SimulatedClock(START - timedelta(days=1)))
    first = default_actor()
    engine.bootstrap_users(first)
    hashed = accounts.password_hash.hash(PASSWORD)
    for name, role in TEST_USERS.items():
        if name != first:
            engine.add_user(name, role, actor=first, password_hash=hashed)


def _pg_admin():
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(autouse=True)
def _isolate_in_process_cli_runs() -> Iterator[None]:
    """A CLI command run in-process configures structlog for itself (level, and the runner's captured stream,
    closed afterwards); put back what every other test logs through."""
    logging_config = structlog.get_config()
    yield
    structlog.configure(**logging_config)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head, to copy per test."""
    admin = _pg_admin()
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any failure to connect means the same thing here
        pytest.fail(
            f"PostgreSQL is required for the storage tests and could not be reached at {PG_URL}: {error}. "
            "Start it (see README) or set MPOXFLOW_TEST_POSTGRES_URL.",
            pytrace=False,
        )
    name = f"mpoxflow_tmpl_{os.getpid()}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    template_db = Database(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    template_db.upgrade()
    seed_users(template_db)
    template_db.dispose()
    yield name
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    template_db = Database(f"sqlite:///{path}")
    template_db.upgrade()
    seed_users(template_db)
    template_db.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated, empty database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "mpoxflow.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    yield from _fresh_pg(request.getfixturevalue("pg_template"))


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated, empty PostgreSQL database, for behaviour only PostgreSQL has."""
    yield from _fresh_pg(pg_template)


def _fresh_pg(template: str) -> Iterator[str]:
    name = f"mpoxflow_t_{os.getpid()}_{next(_numbers)}"
    admin = _pg_admin()
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(START)


@pytest.fixture
def engine(db: Database, clock: SimulatedClock) -> Engine:
    """An engine on a simulated clock that the test moves by hand (``clock.set``)."""
    return Engine(db, clock)


@pytest.fixture
def cli_db(database_url: str) -> str:
    """A database initialised for the CLI with a simulated clock at START."""
    with Database(database_url) as database:
        init_database(database, START)
    return database_url


@pytest.fixture
def web_app(cli_db: str) -> Iterator[Any]:
    """The FastAPI application over a simulated-clock database at START (every test user can log in)."""
    from entry.web.app import create_app

    app = create_app(cli_db)
    yield app
    app.state.web.db.dispose()


@pytest.fixture
def client_for(web_app: Any) -> Iterator[Callable[..., Any]]:
    """``client_for("staff:test")``: a TestClient logged in as that user through POST /api/login (its CSRF
    token in ``client.csrf``); ``client_for()`` one not logged in."""
    from fastapi.testclient import TestClient

    made: list[Any] = []

    def make(user: str | None = None, password: str = PASSWORD) -> Any:
        client = TestClient(web_app, follow_redirects=False)
        made.append(client)
        client.csrf = None
        if user is not None:
            response = client.post("/api/login", json={"name": user, "password": password})
            assert response.status_code == 200, response.text
            client.csrf = response.json()["csrf"]
        return client

    yield make
    for client in made:
        client.close()
