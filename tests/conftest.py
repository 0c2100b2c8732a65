"""Fixtures: fresh databases on SQLite and PostgreSQL, the test users, the CLI's and the web application's database.

Which backends a test runs on (``pytest_generate_tests`` below parametrizes ``database_url`` accordingly):

- **Both, SQLite and PostgreSQL**: every test that asks for ``database_url`` or what is built on it (``db``,
  ``engine``): the storage contract, the engine, the audit chain, the worker. What the engine does is what the
  storage does, and the two backends store differently.
- **SQLite only**: a test through an interface: the CLI, the HTTP API, the pages, the browser (``cli_db``, and
  ``web_app`` and ``client_for``, built on it). Parsing, rendering, exit codes and statuses are the same on both
  backends, and what lies below them is tested on both by the tests above.
- **Both again**, when what an interface test checks differs on PostgreSQL: races and locking, unique keys
  translated, NUL and lengths and other hostile input, instants stored and compared against the wall clock
  (time zones), connections left open, several processes sharing one database. Such a test (or its module, with
  ``pytestmark``) is marked ``@pytest.mark.both_backends``.
- **PostgreSQL only**: ``pg_url``, for what only PostgreSQL has (``SKIP LOCKED``, worker processes racing).

PostgreSQL is required, never skipped: if it cannot be reached these tests fail and say how to start it.
Each test gets a database holding exactly what a template migrated and seeded once per session holds: on SQLite
a copy of the template's file; on PostgreSQL one of this process's pooled databases (``PgPool``: cloned from the
template with ``CREATE DATABASE ... TEMPLATE``, and between tests emptied and refilled with the template's rows,
or dropped when a test changed its schema).
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
import typer.testing
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

# Typer's CliRunner builds the click command from the application on every ``invoke``, most of an in-process
# command's time; the real ``mpoxflow`` builds it once per process. Here it is built once per application too,
# for every test's runner.
_build_command = typer.testing._get_command  # noqa: SLF001
_commands: dict[int, tuple[Any, Any]] = {}


def _command_once(app: Any) -> Any:
    if id(app) not in _commands:
        _commands[id(app)] = (app, _build_command(app))  # the application kept, so that its id stays its own
    return _commands[id(app)][1]


typer.testing._get_command = _command_once  # noqa: SLF001


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Which backends a test that asks for ``database_url`` runs on (the rule is in the module's docstring)."""
    if "database_url" not in metafunc.fixturenames:
        return
    through_an_interface = "cli_db" in metafunc.fixturenames
    opted_in = metafunc.definition.get_closest_marker("both_backends") is not None
    backends = ["sqlite"] if through_an_interface and not opted_in else ["sqlite", "postgresql"]
    metafunc.parametrize("database_url", backends, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``slow`` tests first (in their order), then the others: the test processes share out the long tests
    while many short ones are still left to even out the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _isolate_in_process_cli_runs() -> Iterator[None]:
    """A CLI command run in-process configures structlog for itself (level, and the runner's captured stream,
    closed afterwards); put back what every other test logs through."""
    logging_config = structlog.get_config()
    yield
    structlog.configure(**logging_config)


# ---- PostgreSQL: a pool of databases per test process, put back as the template left them --------------------

#: One line per schema object a test could change (tables, columns and their defaults, constraints, indexes,
#: triggers and whether they are enabled, functions, rules, policies, types, sequences' definitions, extensions,
#: the database's own settings): equal fingerprints mean the same schema, whatever the rows.
_FINGERPRINT = """
WITH ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%'
), rel AS (SELECT c.oid FROM pg_class c JOIN ns ON ns.oid = c.relnamespace)
SELECT md5(string_agg(line, E'\\n' ORDER BY line)) FROM (
    SELECT 'schema ' || nspname FROM ns
    UNION ALL SELECT concat_ws(' ', 'relation', c.oid::regclass, c.relkind, c.relpersistence, c.relrowsecurity,
                               c.relforcerowsecurity, c.relreplident, c.relacl::text)
        FROM pg_class c JOIN rel ON rel.oid = c.oid
    UNION ALL SELECT concat_ws(' ', 'column', a.attrelid::regclass, a.attnum, a.attname,
                               format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attisdropped, a.attgenerated,
                               a.attidentity, a.attcollation, pg_get_expr(d.adbin, d.adrelid))
        FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attnum > 0
    UNION ALL SELECT concat_ws(' ', 'constraint', k.conrelid::regclass, k.contypid::regtype, k.conname,
                               k.condeferrable, k.condeferred, k.convalidated, pg_get_constraintdef(k.oid))
        FROM pg_constraint k JOIN ns ON ns.oid = k.connamespace
    UNION ALL SELECT concat_ws(' ', 'index', i.indexrelid::regclass, pg_get_indexdef(i.indexrelid), i.indisvalid)
        FROM pg_index i JOIN rel ON rel.oid = i.indrelid
    UNION ALL SELECT concat_ws(' ', 'trigger', t.tgrelid::regclass, t.tgname, t.tgenabled, t.tgisinternal,
                               pg_get_triggerdef(t.oid))
        FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid
    UNION ALL SELECT concat_ws(' ', 'function', p.oid::regprocedure, p.prokind, p.provolatile, p.prosecdef,
                               p.proconfig::text, md5(p.prosrc))
        FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
    UNION ALL SELECT concat_ws(' ', 'rule', r.ev_class::regclass, r.rulename, r.ev_enabled,
                               pg_get_ruledef(r.oid))
        FROM pg_rewrite r JOIN rel ON rel.oid = r.ev_class
    UNION ALL SELECT concat_ws(' ', 'policy', p.polrelid::regclass, p.polname, p.polcmd, p.polpermissive,
                               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
        FROM pg_policy p JOIN rel ON rel.oid = p.polrelid
    UNION ALL SELECT concat_ws(' ', 'type', t.oid::regtype, t.typtype) FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
    UNION ALL SELECT concat_ws(' ', 'enum', e.enumtypid::regtype, e.enumsortorder, e.enumlabel) FROM pg_enum e
    UNION ALL SELECT concat_ws(' ', 'sequence', s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart,
                               s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
        FROM pg_sequence s JOIN rel ON rel.oid = s.seqrelid
    UNION ALL SELECT concat_ws(' ', 'extension', extname, extversion) FROM pg_extension
    UNION ALL SELECT concat_ws(' ', 'setting', setrole, setconfig::text) FROM pg_db_role_setting
        WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL SELECT concat_ws(' ', 'database', datconnlimit, datallowconn, datistemplate) FROM pg_database
        WHERE datname = current_database()
    UNION ALL SELECT 'large objects ' || count(*) FROM pg_largeobject_metadata
    UNION ALL SELECT 'prepared transactions ' || count(*) FROM pg_prepared_xacts WHERE database = current_database()
) AS lines(line)
"""


def _libpq(database: str) -> str:
    """The libpq connection string of a database on the test server (psycopg itself, for the pool's own work)."""
    return make_url(PG_URL).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def _sqlalchemy_url(database: str) -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


class PgPool:
    """The PostgreSQL databases of one test process. A test takes one (``take``) and gives it back (``give_back``);
    given back, it is put back exactly as the template left it — every table emptied (``DELETE``, with the
    audit log's own triggers off for that transaction only) and refilled with the template's rows, every sequence
    where the template had it — unless its schema is no longer the template's (a migration test, a dropped
    trigger): then it is dropped and the next test gets a new ``CREATE DATABASE ... TEMPLATE``. Putting a
    database back costs a few statements; dropping and creating one costs most of a second."""

    def __init__(self, admin: Any, template: str) -> None:
        self.admin = admin
        self.template = template
        self.idle: list[str] = []
        self.made: list[str] = []
        self.fingerprint: str | None = None
        with psycopg.connect(_libpq(template)) as connection, connection.cursor() as cursor:
            self.tables = [row[0] for row in cursor.execute(
                "SELECT quote_ident(relname) FROM pg_class WHERE relkind IN ('r', 'p') "
                "AND relnamespace = 'public'::regnamespace ORDER BY relname")]
            self.rows: dict[str, bytes] = {}
            for table in self.tables:
                with cursor.copy(f"COPY {table} TO STDOUT") as copy:
                    self.rows[table] = b"".join(bytes(block) for block in copy)
            self.sequences = []
            for (sequence,) in cursor.execute(
                    "SELECT c.oid::regclass::text FROM pg_class c WHERE relkind = 'S' "
                    "AND relnamespace = 'public'::regnamespace ORDER BY 1").fetchall():
                last_value, is_called = cursor.execute(f"SELECT last_value, is_called FROM {sequence}").fetchone()
                self.sequences.append((sequence, last_value, is_called))

    def take(self) -> str:
        """The name of a database as the template left it, no one else's while the test runs."""
        if self.idle:
            return self.idle.pop()
        name = f"mpoxflow_t_{os.getpid()}_{next(_numbers)}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
            # A commit returns before its WAL is on disk: what a crash of the server could lose is a test
            # database's last few milliseconds, and nothing a test checks (isolation, locks, constraints and
            # what other sessions see are the same). Waiting for the disk was half of a PostgreSQL test's time.
            connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        self.made.append(name)
        if self.fingerprint is None:  # the template's schema, and the setting above
            with psycopg.connect(_libpq(name)) as fresh:
                self.fingerprint = fresh.execute(_FINGERPRINT).fetchone()[0]
        return name

    def give_back(self, name: str) -> None:
        """Put the database back as the template left it, or drop it when its schema has changed."""
        try:
            reset = self._reset(name)
        except psycopg.Error:
            reset = False
        if reset:
            self.idle.append(name)
        else:
            self._drop(name)

    def _reset(self, name: str) -> bool:
        with psycopg.connect(_libpq(name), autocommit=True) as connection, connection.cursor() as cursor:
            # What the test left connected (a worker it killed, an engine it did not dispose) goes first, as
            # DROP DATABASE ... WITH (FORCE) would have made it go.
            cursor.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            if cursor.execute(_FINGERPRINT).fetchone()[0] != self.fingerprint:
                return False
            with connection.transaction():
                # The audit log's triggers (and the foreign keys' own) off, for this transaction only. DELETE: a
                # test's few rows go in milliseconds, where TRUNCATE makes new files for every table and index.
                cursor.execute("SET LOCAL session_replication_role = replica")
                for table in self.tables:
                    cursor.execute(f"DELETE FROM {table}")
                for table, rows in self.rows.items():
                    if rows:
                        with cursor.copy(f"COPY {table} FROM STDIN") as copy:
                            copy.write(rows)
                for sequence, last_value, is_called in self.sequences:
                    cursor.execute("SELECT setval(%s, %s, %s)", (sequence, last_value, is_called))
        return True

    def _drop(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.made.remove(name)

    def close(self) -> None:
        for name in list(self.made):
            self._drop(name)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head and seeded with the test users, to copy."""
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
    template_db = Database(_sqlalchemy_url(name))
    template_db.upgrade()
    seed_users(template_db)
    template_db.dispose()
    yield name
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_pool(pg_template: str) -> Iterator[PgPool]:
    """This test process's PostgreSQL databases (see ``PgPool``); all dropped at the end of the session."""
    pool = PgPool(_pg_admin(), pg_template)
    yield pool
    pool.close()
    pool.admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    template_db = Database(f"sqlite:///{path}")
    template_db.upgrade()
    seed_users(template_db)
    template_db.dispose()
    return path


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database holding only the test users, on the backend the test is parametrized with
    (``pytest_generate_tests``: see the module's docstring)."""
    if request.param == "sqlite":
        path = tmp_path / "mpoxflow.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    yield from _fresh_pg(request.getfixturevalue("pg_pool"))


@pytest.fixture
def pg_url(pg_pool: PgPool) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database holding only the test users, for behaviour only PostgreSQL has."""
    yield from _fresh_pg(pg_pool)


@contextmanager
def pg_database(pool: PgPool) -> Iterator[str]:
    """The URL of a PostgreSQL database of ``pool`` as the template left it, for the ``with`` block."""
    name = pool.take()
    try:
        yield _sqlalchemy_url(name)
    finally:
        pool.give_back(name)


def _fresh_pg(pool: PgPool) -> Iterator[str]:
    with pg_database(pool) as url:
        yield url


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
    from entry.web.server import create_app

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
