"""Wires the real parts together: the database (migrated), its clock (real or simulated), the settings."""

from __future__ import annotations

import getpass
import os
from datetime import datetime, time, timedelta
from typing import Any

from engine.accounts import Login, digest
from engine.clock import SimulatedClock, SystemClock
from engine.core import Engine
from engine.holidays_dk import danish_holiday
from persistence.database import DEFAULT_URL, Database
from persistence.repository import Repository
from workflows.definition import Settings
from workflows.errors import UsageError


def database_url(explicit: str | None = None) -> str:
    """``--db``, else ``$MPOXFLOW_DATABASE_URL``, else ``./mpoxflow.db``."""
    return explicit or os.environ.get("MPOXFLOW_DATABASE_URL") or DEFAULT_URL


def default_actor() -> str:
    """Who acts when no ``--actor`` is given: ``$MPOXFLOW_ACTOR``, else the operating-system user name. The one
    who creates a database becomes its first admin."""
    if os.environ.get("MPOXFLOW_ACTOR"):
        return os.environ["MPOXFLOW_ACTOR"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _time_setting(name: str, default: str) -> time:
    raw = os.environ.get(name, default)
    try:
        return time.fromisoformat(raw)
    except ValueError as error:
        raise UsageError(f"{name}={raw!r} is not a time of day: use HH:MM, e.g. {default}") from error


def _days_setting(name: str, default: str) -> timedelta:
    days = os.environ.get(name, default)
    if not days.isdigit():
        raise UsageError(f"{name}={days!r} is not a number of days: use e.g. {default}")
    return timedelta(days=int(days))


def definitions_from_env() -> list[str]:
    """Load the workflow definitions a deployment adds beside the product's (``MPOXFLOW_DEFINITIONS``: comma-
    separated ``module:ATTRIBUTE``, a later revision or a new guideline version; README "Adopting a new guideline
    version"). Returns the names loaded; UsageError naming the setting and the entry that cannot be loaded."""
    from workflows import registry

    spec = os.environ.get("MPOXFLOW_DEFINITIONS", "")
    if not spec.strip():
        return []
    try:
        return registry.load(spec)
    except ValueError as error:
        raise UsageError(f"MPOXFLOW_DEFINITIONS: {error}") from None


def settings_from_env() -> Settings:
    """Deployment settings: the §3.1 daytime window ``MPOXFLOW_DAYTIME_STARTS`` / ``MPOXFLOW_WORKING_DAY_ENDS``
    (HH:MM, default 08:00-17:00, Monday to Friday less Danish public holidays), ``MPOXFLOW_DOSE2_OVERDUE_DAYS``
    (default 14: when a due dose 2 shows as overdue, §6.4) and ``MPOXFLOW_PEP_LATE_ENTRY_DAYS`` (default 7: how
    long after a PEP window closes a dose given inside it may still be recorded, §6.2) and
    ``MPOXFLOW_TEST_RESULT_CHASE_DAYS`` (default 2: when a suspected case's test result is chased, §2.1)."""
    definitions_from_env()
    starts = _time_setting("MPOXFLOW_DAYTIME_STARTS", "08:00")
    ends = _time_setting("MPOXFLOW_WORKING_DAY_ENDS", "17:00")
    if not starts < ends:
        raise UsageError(f"the daytime window {starts:%H:%M}-{ends:%H:%M} is empty: MPOXFLOW_DAYTIME_STARTS must be "
                         "before MPOXFLOW_WORKING_DAY_ENDS")
    return Settings(daytime_starts=starts, working_day_ends=ends, is_holiday=danish_holiday,
                    dose2_overdue_after=_days_setting("MPOXFLOW_DOSE2_OVERDUE_DAYS", "14"),
                    pep_late_entry_grace=_days_setting("MPOXFLOW_PEP_LATE_ENTRY_DAYS", "7"),
                    test_result_chase_days=_days_setting("MPOXFLOW_TEST_RESULT_CHASE_DAYS", "2").days)


def init_database(db: Database, simulated_start: datetime | None = None) -> None:
    """Create or upgrade the schema and fix the database's clock: real time, or simulated from an instant.
    A database's clock is chosen once; asking to change it is refused."""
    db.upgrade()
    if simulated_start is None:
        with db.reading() as session:
            if Repository(session).clock() is not None:
                return
    with db.transaction() as session:
        repo = Repository(session)
        clock = repo.clock()
        if clock is None:
            repo.save_clock(simulated=simulated_start is not None, now=simulated_start)
        elif simulated_start is not None and not clock.simulated:
            raise UsageError("this database already runs on real time; a simulated clock needs a new database")
        elif simulated_start is not None and clock.now is not None and simulated_start != clock.now:
            raise UsageError(
                f"this database's simulated clock is already at {clock.now.isoformat()}: "
                "move it with `mpoxflow clock advance`"
            )


def engine_on(db: Database, settings: Settings) -> Engine:
    """An engine over an open, migrated database, on the clock the database holds now: what each HTTP request
    uses, so that several server processes share one simulated clock (and nothing else) through the database."""
    with db.reading() as session:
        clock_row = Repository(session).clock()
    if clock_row is None:
        raise UsageError("this database has no clock yet: run `mpoxflow init` first")
    return _engine_with_clock(db, settings, clock_row)


def _engine_with_clock(db: Database, settings: Settings, clock_row: Any) -> Engine:
    if clock_row.simulated and clock_row.now is not None:
        engine = Engine(db, SimulatedClock(clock_row.now), settings, persist_clock=True)
        engine.runtime.stored_now = engine.clock.now()  # read from the database: a change need not write it back
        return engine
    return Engine(db, SystemClock(), settings)


def request_engine(db: Database, settings: Settings, *, bearer: str | None = None,
                   cookie: str | None = None) -> tuple[Engine, Login | None]:
    """An HTTP request's engine (as ``engine_on``: the database's clock as it is now) and who asks: the login of a
    bearer token (``bearer``) or else of a session cookie (``cookie``), None for neither or an unknown, revoked or
    expired one; the clock and the login from one read of the database. The engine knows the login's user for
    this request (``Runtime.known_users``): its changes need not read the user again."""
    with db.lookup() as session:
        clock_row = Repository(session).clock_and_login(
            token_hash=digest(bearer) if bearer is not None else None,
            session_hash=digest(cookie) if bearer is None and cookie else None, now=SystemClock().now())
    login = None
    if clock_row is not None and clock_row._mapping.get("login_id") is not None:
        row = clock_row
        login = (Login(row.user_id, row.name, row.role, token_id=row.login_id) if bearer is not None
                 else Login(row.user_id, row.name, row.role, session_id=row.login_id, csrf=row.csrf,
                            language=row.language))
    if clock_row is None:
        raise UsageError("this database has no clock yet: run `mpoxflow init` first")
    engine = _engine_with_clock(db, settings, clock_row)
    if login is not None:
        engine.runtime.known_users[login.name] = login.role
        engine.runtime.viewer = login.name  # the request reads what this user may see (issue 17)
    return engine, login


def open_engine(url: str | None = None, *, settings: Settings | None = None, first_admin: str | None = None) -> Engine:
    """An engine over the database at ``url``: migrated to the newest schema, on the database's own clock. A
    database without users gets its first admin: ``first_admin``, else ``default_actor()``."""
    settings = settings or settings_from_env()  # a bad setting is refused before the database is opened
    db = Database(database_url(url))
    try:
        init_database(db)
        with db.reading() as session:
            clock_row = Repository(session).clock()
    except BaseException:
        db.dispose()
        raise
    assert clock_row is not None
    engine = _engine_with_clock(db, settings, clock_row)
    try:
        engine.bootstrap_users(first_admin or default_actor())
    except BaseException:
        db.dispose()
        raise
    return engine
