"""The database: engine set-up per backend, migrations, and the transaction every change runs in.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` (a committed transition survives a
power cut) and foreign keys on; a writing transaction starts with ``BEGIN IMMEDIATE`` so writers queue instead
of failing half-way. PostgreSQL is reached through psycopg 3. Database errors are translated here, at the
boundary, into the project's own exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from workflows.errors import Conflict, MpoxflowError, RuleRefused, UsageError

if TYPE_CHECKING:
    from alembic.config import Config

DEFAULT_URL = "sqlite:///mpoxflow.db"
MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration in ``migrations/versions``: a database at this revision needs no upgrade, which is known
#: from one query of its ``alembic_version`` table, without loading Alembic (a command that only reads or changes
#: objects never does). A new migration sets it to its own revision; ``tests/test_migrations.py`` checks that it is
#: Alembic's head.
SCHEMA_HEAD = "0019"
#: Alembic's table of the revision a database is at (its default name).
VERSION_TABLE = "alembic_version"
#: How long a SQLite writer waits for another writer before giving up with a conflict.
SQLITE_BUSY_TIMEOUT_MS = 15_000
#: PostgreSQL: the channel a transaction that arms timers notifies at commit (the payload: the earliest due instant
#: it armed, ISO 8601 in UTC), on which the workers listen.
TIMERS_CHANNEL = "mpoxflow_timers"


#: Unique constraints two concurrent changes of one object can collide on (PostgreSQL names, then SQLite's).
RACE_CONSTRAINTS = (
    "uq_audit_object_pos", "uq_timers_pending_name",
    "audit_log.object_kind, audit_log.object_id, audit_log.pos", "timers.object_kind, timers.object_id, timers.name",
)


class DuplicateKey(RuleRefused):
    """A unique key is taken already (a lost race past the check before the insert). ``table`` is the table
    the key belongs to, when known; the value is never in the message."""

    def __init__(self, table: str | None) -> None:
        super().__init__(f"that {_THING.get(table or '', 'value')} is registered already: nothing was written")
        self.table = table


#: What a unique key of a table identifies, as a message names it.
_THING = {"persons": "reference", "users": "user name", "contacts": "contact (case and person)"}


def _constraint(text: str) -> str | None:
    """The table of the unique key an IntegrityError names (SQLite: "UNIQUE constraint failed: persons.ref";
    PostgreSQL: 'violates unique constraint "persons_ref_key"')."""
    for table in ("persons", "users", "contacts", "api_tokens", "sessions", "cases", "courses"):
        if f"{table}." in text or f'"{table}_' in text or f'"uq_{table}_' in text:
            return table
    return None


class StorageError(MpoxflowError):
    """The database cannot be reached or used (not a rule, not a conflict)."""

    exit_code = 1
    http_status = 503
    code = "storage"


def normalise_url(url: str) -> str:
    """Accept the URL forms people type; PostgreSQL always goes through psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if "://" not in url:  # a bare path means a SQLite file
        return f"sqlite:///{url}"
    return url


def _configure_sqlite(engine: Engine) -> None:
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own is deferred and late).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("mpoxflow_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """One database, by URL: ``sqlite:///path.db`` or ``postgresql+psycopg://user@host/dbname``."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = normalise_url(url)
        # Bound parameters (a reference, a birth date) never go into an error's text, hence never into a log.
        self.engine = create_engine(self.url, **{"hide_parameters": True, **engine_options})
        self.backend = self.engine.dialect.name
        if self.backend == "sqlite":
            _configure_sqlite(self.engine)
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write = sessionmaker(bind=self.engine.execution_options(mpoxflow_write=True), expire_on_commit=False)
        consistent = (self.engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
                      if self.backend == "postgresql" else self.engine)
        self._snapshot = sessionmaker(bind=consistent, expire_on_commit=False)
        # One read statement needs no transaction: on PostgreSQL that saves the BEGIN and ROLLBACK round trips.
        self._lookup = (sessionmaker(bind=self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                                     expire_on_commit=False) if self.backend == "postgresql" else self._read)

    # ---- migrations ----------------------------------------------------------------------------------------

    def _alembic_config(self) -> Config:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        return config

    def schema_revision(self) -> str | None:
        """The revision the database's schema is at (its ``alembic_version`` row), None for an empty database:
        one query (two for an empty database), without loading Alembic."""
        with translate_errors(), self.engine.connect() as connection:
            try:
                rows = connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars().all()
            except DBAPIError:
                connection.rollback()
                if inspect(connection).has_table(VERSION_TABLE):
                    raise  # the table is there: the error is the database's (translated)
                return None  # an empty database
        if len(rows) > 1:  # as Alembic refuses a database at several heads (this project never branches)
            raise StorageError(f"the database is at several schema revisions at once ({', '.join(sorted(rows))}): "
                               "it was not made by mpoxflow's migrations")
        return rows[0] if rows else None

    def head_revision(self) -> str | None:
        """The newest migration, as Alembic finds it in ``migrations/versions`` (``SCHEMA_HEAD``, read the slow
        way: it loads Alembic and every migration)."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def upgrade(self) -> bool:
        """Bring the schema to the newest migration; True when anything was applied. A database already at
        ``SCHEMA_HEAD`` costs one query (Alembic is loaded only to migrate)."""
        if self.schema_revision() == SCHEMA_HEAD:
            return False
        from alembic import command

        config = self._alembic_config()
        with translate_errors(), self.engine.connect() as connection:
            sqlite = self.backend == "sqlite"
            if sqlite:
                # SQLite's way to change a table (a new one, the rows copied, the old one dropped, the new one
                # renamed: batch mode) needs foreign keys off while it runs, then checked: sqlite.org/lang_altertable
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            try:
                with connection.begin():
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                    if sqlite:
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise StorageError(f"the upgrade would break {len(broken)} foreign key(s): rolled back")
            finally:
                if sqlite:
                    connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
        return True

    # ---- sessions ------------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A writing unit of work: everything inside commits together or not at all."""
        with translate_errors(), self._write() as session, session.begin():
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only session whose every query sees the same moment, however many it runs (REPEATABLE READ on
        PostgreSQL; on SQLite one read transaction in WAL mode already does): for checks that read a table and
        then another, like ``audit verify``, while others keep writing."""
        with translate_errors(), self._snapshot() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session (never commits; closing it ends its transaction). Objects stay readable after."""
        with translate_errors(), self._read() as session:
            yield session

    def listener(self, channel: str = TIMERS_CHANNEL) -> Any:
        """PostgreSQL: a psycopg connection of its own (outside the pool, autocommit) that ``LISTEN``s on
        ``channel``; read it with ``notifies(timeout=...)``, close it when done. Raises the driver's
        OperationalError when the server cannot be reached."""
        if self.backend != "postgresql":
            raise ValueError("LISTEN needs PostgreSQL")
        import psycopg
        from psycopg import sql

        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        connection = psycopg.connect(*cargs, **{"application_name": "mpoxflow-worker-listen", **cparams},
                                     autocommit=True)
        try:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def lookup(self) -> Iterator[Session]:
        """A read-only session for a single statement (its own snapshot): autocommit on PostgreSQL, so the
        statement is its one round trip; as ``reading`` on SQLite. What every HTTP request reads first."""
        with translate_errors(), self._lookup() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn database errors into the project's exceptions (``raise ... from``), at the persistence boundary."""
    try:
        yield
    except StaleDataError as error:
        raise Conflict(
            "The object was changed by someone else while this change was being made; nothing was written. "
            "Show it again and retry."
        ) from error
    except OperationalError as error:
        text = str(error.orig).lower()
        if "database is locked" in text or "could not serialize" in text or "deadlock" in text:
            raise Conflict(
                "The database is busy with another change to the same data; nothing was written. Try again."
            ) from error
        raise StorageError(f"The database could not be used: {error.orig}. Check ⟦db⟧ and that it is running.") \
            from error
    except IntegrityError as error:
        text = str(error.orig)
        if any(mark in text for mark in RACE_CONSTRAINTS):
            # Two changes to one object raced (for its next place in the audit chain, or for its pending timer of
            # one name): the later one loses, as it would on the object's version check.
            raise Conflict(
                "The object was changed by someone else while this change was being made; nothing was written. "
                "Show it again and retry."
            ) from error
        # The driver's text may quote the values (PostgreSQL: "Key (ref)=(...) already exists"): never chained.
        if "UNIQUE constraint failed" in text or getattr(error.orig, "sqlstate", None) == "23505":
            raise DuplicateKey(_constraint(text)) from None
        raise RuleRefused("the change breaks a constraint of the database (a missing or a wrong link): nothing "
                          "was written") from None
    except DataError:
        # A value the column cannot hold (too long, a NUL byte, out of range); the text would quote it.
        raise UsageError("a value does not fit its field (too long, out of range or with a NUL character): "
                         "correct it") from None
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) in ("40001", "40P01"):
            raise Conflict("A concurrent change conflicted with this one; nothing was written. Try again.") \
                from error
        raise
