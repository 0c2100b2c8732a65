"""The schema comes from the Alembic migrations, and the models map exactly what they make."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, text
from sqlalchemy.exc import DBAPIError

from engine.clock import SimulatedClock
from engine.core import Engine
from persistence.models import Base
from workflows.errors import UsageError


def test_the_migrations_make_exactly_the_schema_the_models_map(db):
    assert db.schema_revision() == db.head_revision()
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_migrations_go_down_and_up_again(db):
    config = db._alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert db.schema_revision() is None
    assert db.upgrade() is True
    assert db.upgrade() is False
    assert db.schema_revision() == db.head_revision()


def test_the_audit_chain_migration_chains_the_entries_already_there(db):
    """0007 chains every entry written before it (as format 0, without recorded changes): verify finds the log
    intact, replay compares the states it knows, and ``--as-of`` says why it cannot rebuild the facts."""
    config = db._alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        command.upgrade(config, "0006")
    at = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)
    entry = {"timer_id": None, "workflow": "case@SST-mpox-7.1", "actor": "staff:old", "reason": None, "at": at,
             "recorded_at": at, "rule": "SST-mpox-7.1 §1.1", "data": {}, "timers_armed": [], "timers_cancelled": []}
    with db.engine.begin() as connection:
        meta = MetaData()
        persons, cases, audit = (Table(name, meta, autoload_with=connection)
                                 for name in ("persons", "cases", "audit_log"))
        connection.execute(persons.insert(), [{"id": 1, "ref": "R1", "immunocompromised": False, "pregnant": False,
                                               "previous_mpox": False, "smallpox_vaccinated": False,
                                               "created_at": at}])
        connection.execute(cases.insert(), [{
            "id": 1, "person_id": 1, "state": "confirmed", "workflow": "case@SST-mpox-7.1", "version": 2,
            "created_at": at, "updated_at": at, "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": [],
            "sources": []}])
        connection.execute(audit.insert(), [
            {**entry, "object_kind": "person", "object_id": 1, "workflow": None, "trigger": "register",
             "from_state": None, "to_state": None, "rule": None},
            {**entry, "object_kind": "case", "object_id": 1, "trigger": "open", "from_state": None,
             "to_state": "suspected"},
            {**entry, "object_kind": "case", "object_id": 1, "trigger": "confirm", "from_state": "suspected",
             "to_state": "confirmed", "actor": "staff:lab"},
        ])
    assert db.upgrade() is True
    engine = Engine(db, SimulatedClock(at))
    report = engine.audit_verify()
    assert (report["intact"], report["entries"], report["objects"]) == (True, 3, 2)
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT object_kind, pos, prev_seq, format, role FROM audit_log ORDER BY seq"))
        assert [tuple(r) for r in rows] == [("person", 1, None, 0, "staff"), ("case", 1, None, 0, "staff"),
                                            ("case", 2, 2, 0, "staff")]
    assert engine.audit_replay() == {"matches": True, "objects": 1, "differences": []}
    with pytest.raises(UsageError, match="before audit format 1"):
        engine.show("case-1", as_of=at)
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:  # the triggers are back
        connection.execute(text("UPDATE audit_log SET actor = 'x'"))
