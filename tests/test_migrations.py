"""The schema comes from the Alembic migrations, and the models map exactly what they make. The migrations are
frozen: they import no live code, so a later change to the models or to the audit hash cannot change what an old
revision does (0007's copy of the hash is checked against today's)."""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import MetaData, Table, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DBAPIError

from engine.clock import SimulatedClock
from engine.core import Engine
from persistence import audit
from persistence.database import SCHEMA_HEAD, VERSION_TABLE, Database, StorageError
from persistence.models import Base
from workflows.errors import UsageError

VERSIONS = Path(__file__).resolve().parent.parent / "persistence" / "migrations" / "versions"
#: The project's own packages: a migration imports none of them.
LIVE = {"workflows", "engine", "persistence", "scheduler", "entry", "bench", "tests"}


def migration(stem: str) -> ModuleType:
    """The revision file ``versions/<stem>.py``, loaded on its own (as Alembic does, outside any package)."""
    spec = importlib.util.spec_from_file_location(f"revision_{stem}", VERSIONS / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def migration_0007() -> ModuleType:
    """0007_audit_chain, loaded once per process."""
    return migration("0007_audit_chain")


# ---- frozen ------------------------------------------------------------------------------------------------


def test_no_migration_imports_live_code():
    """Every revision imports only alembic, sqlalchemy and the standard library, and loads nothing by name."""
    files = sorted(VERSIONS.glob("*.py"))
    assert len(files) >= 10, f"found only {len(files)} migrations in {VERSIONS}"
    problems = []
    for path in files:
        imported = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                imported += [(alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported.append(("." * node.level + (node.module or ""), node.lineno))
            elif isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                if called in ("import_module", "__import__"):
                    problems.append(f"{path.name}:{node.lineno} loads a module by name")
        # Each revision uses alembic's op: finding that import shows the walk reads the file's imports.
        assert any(name == "alembic" for name, _ in imported), f"{path.name}: no import of alembic found"
        for name, line in imported:
            top = name.split(".")[0]
            if top in LIVE or not (top in {"alembic", "sqlalchemy"} or top in sys.stdlib_module_names):
                problems.append(f"{path.name}:{line} imports {name}")
    assert problems == []


AT = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)
#: An entry of the log written before 0007, as 0007's backfill chains it (format 0, no changes, no timers done).
LEGACY_ENTRY = {
    "format": 0, "object_kind": "case", "object_id": 1, "pos": 1, "prev_seq": None, "prev_hash": "0" * 64,
    "timer_id": None, "workflow": "case@SST-mpox-7.1", "trigger": "open", "from_state": None, "to_state": "suspected",
    "actor": "staff:old", "role": "staff", "reason": None, "at": AT, "recorded_at": AT, "rule": "SST-mpox-7.1 §1.1",
    "data": {}, "changes": None, "timers_armed": [], "timers_cancelled": [], "timers_done": [],
}


def test_0007_hashes_with_its_own_frozen_copy_of_the_format_it_was_written_for():
    frozen = migration_0007()
    assert (frozen.GENESIS, frozen.LEGACY_FORMAT) == (audit.GENESIS, audit.LEGACY_FORMAT)
    # Pinned: neither copy may drift, not even both together.
    assert frozen.entry_hash(LEGACY_ENTRY) == "6699988382cfc2ff9c511e0f47b020fc82fe03f65896ab4cead9a95cbd58cc10"
    assert audit.entry_hash(LEGACY_ENTRY) == frozen.entry_hash(LEGACY_ENTRY)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# hypothesis bounds aware datetimes by naive limits (it adds the zone itself)
_instants = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),  # noqa: DTZ001
                         timezones=st.timezones())
_texts = st.text(max_size=40)
_legacy_entries = st.fixed_dictionaries({
    "format": st.just(0), "object_kind": st.sampled_from(["person", "case", "contact", "course"]),
    "object_id": st.integers(1, 2**31), "pos": st.integers(1, 10**6), "prev_seq": st.none() | st.integers(1, 2**31),
    "prev_hash": st.just("0" * 64) | st.text("0123456789abcdef", min_size=64, max_size=64),
    "timer_id": st.none() | st.integers(1, 2**31), "workflow": st.none() | _texts, "trigger": _texts,
    "from_state": st.none() | _texts, "to_state": st.none() | _texts, "actor": _texts,
    "role": st.sampled_from(["staff", "timer"]), "reason": st.none() | _texts, "at": _instants,
    "recorded_at": _instants, "rule": st.none() | _texts, "data": st.dictionaries(st.text(max_size=8), _json),
    "changes": st.none(), "timers_armed": st.lists(st.dictionaries(st.text(max_size=8), _json), max_size=2),
    "timers_cancelled": st.lists(_texts, max_size=2), "timers_done": st.just([]),
})


@given(entry=_legacy_entries)
def test_todays_entry_hash_gives_the_hash_0007_wrote_for_every_legacy_entry(entry):
    """``audit verify`` recomputes the hashes 0007 wrote with today's function: both must agree on every
    entry 0007 can chain (any text, instants in any zone, any JSON in ``data``)."""
    frozen = migration_0007()
    assert audit.canonical(entry) == frozen.canonical(entry)
    assert audit.entry_hash(entry) == frozen.entry_hash(entry)


# ---- the schema --------------------------------------------------------------------------------------------


def test_the_migrations_make_exactly_the_schema_the_models_map(db):
    assert db.schema_revision() == db.head_revision()
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_schema_head_the_code_knows_is_alembics_head(db):
    """``SCHEMA_HEAD`` (what a command compares the database's revision with, without loading Alembic) is the
    newest migration Alembic finds, and a database migrated to it reads as at it."""
    assert db.head_revision() == SCHEMA_HEAD
    files = sorted(VERSIONS.glob("*.py"))
    assert files and migration(files[-1].stem).revision == SCHEMA_HEAD
    assert db.schema_revision() == SCHEMA_HEAD
    with db.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == SCHEMA_HEAD


def test_a_database_at_the_head_is_not_upgraded_and_alembic_is_not_asked(db, monkeypatch):
    """``upgrade`` on a database at the head answers from the version table alone: Alembic's command and script
    directory are never reached (they would fail here)."""

    def unreachable(*_: Any, **__: Any) -> Any:
        raise AssertionError("Alembic was asked")

    monkeypatch.setattr(Database, "head_revision", unreachable)
    monkeypatch.setattr(Database, "_alembic_config", unreachable)
    assert db.upgrade() is False
    assert db.schema_revision() == SCHEMA_HEAD


def test_the_revision_of_an_empty_database_is_none_and_several_revisions_are_refused(db):
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('0009')")
    with pytest.raises(StorageError, match="several schema revisions"):
        db.schema_revision()
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE {VERSION_TABLE}")
    assert db.schema_revision() is None


def _condition(clause: Any) -> str:
    """A partial index's condition as comparable text: PostgreSQL's casts and parentheses left out."""
    return " ".join(str(clause).replace("::text", "").replace("(", " ").replace(")", " ").split())


def test_the_partial_indexes_are_the_ones_the_models_declare(db):
    """Every partial index of the database, and its condition, is the one a model declares (``partial``), and the
    other way round."""
    declared = {index.name: index.info["where"] for table in Base.metadata.tables.values()
                for index in table.indexes if "where" in index.info}
    open_task = "task IS NOT NULL AND satisfied_at IS NULL AND resolved_at IS NULL"
    assert declared == {"ix_timers_retry": "status = 'pending' AND next_attempt_at IS NOT NULL",
                        "uq_timers_pending_name": "status = 'pending'", "ix_timers_worklist": open_task,
                        "ix_timers_worklist_kind": open_task, "ix_timers_worklist_task": open_task,
                        "ix_timers_worklist_unit": open_task, "ix_timers_worklist_assignee": open_task,
                        **{f"ix_{t}_hard_to_reach": "failed_attempts >= 3" for t in ("cases", "contacts", "courses")}}
    found = {}
    with db.engine.connect() as connection:
        inspector = sa_inspect(connection)
        for table in Base.metadata.tables:
            for index in inspector.get_indexes(table):
                where = index["dialect_options"].get(f"{db.backend}_where")
                if where is not None:
                    found[index["name"]] = _condition(where)
    assert found == {name: _condition(where) for name, where in declared.items()}


def test_the_migrations_go_down_and_up_again(db):
    config = db._alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert db.schema_revision() is None
    assert db.upgrade() is True
    assert db.upgrade() is False
    assert db.schema_revision() == db.head_revision()


def written_before_0007(db: Database, entries: list[dict[str, Any]]) -> None:
    """Take ``db`` back to 0006 (empty) and write person 1, case 1 (confirmed) and ``entries`` as that revision's
    code did, then migrate to head."""
    config = db._alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        command.upgrade(config, "0006")
    base = {"timer_id": None, "workflow": "case@SST-mpox-7.1", "actor": "staff:old", "reason": None, "at": AT,
            "recorded_at": AT, "rule": "SST-mpox-7.1 §1.1", "data": {}, "timers_armed": [], "timers_cancelled": []}
    with db.engine.begin() as connection:
        meta = MetaData()
        persons, cases, audit_log = (Table(name, meta, autoload_with=connection)
                                     for name in ("persons", "cases", "audit_log"))
        connection.execute(persons.insert(), [{"id": 1, "ref": "R1", "immunocompromised": False, "pregnant": False,
                                               "previous_mpox": False, "smallpox_vaccinated": False,
                                               "created_at": AT}])
        connection.execute(cases.insert(), [{
            "id": 1, "person_id": 1, "state": "confirmed", "workflow": "case@SST-mpox-7.1", "version": 2,
            "created_at": AT, "updated_at": AT, "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": [],
            "sources": []}])
        connection.execute(audit_log.insert(), [{**base, **entry} for entry in entries])
    assert db.upgrade() is True


def test_the_audit_chain_migration_chains_the_entries_already_there(db):
    """0007 chains every entry written before it (as format 0, without recorded changes): verify finds the log
    intact, replay compares the states it knows, and ``--as-of`` says why it cannot rebuild the facts."""
    written_before_0007(db, [
        {"object_kind": "person", "object_id": 1, "workflow": None, "trigger": "register", "from_state": None,
         "to_state": None, "rule": None},
        {"object_kind": "case", "object_id": 1, "trigger": "open", "from_state": None, "to_state": "suspected"},
        {"object_kind": "case", "object_id": 1, "trigger": "confirm", "from_state": "suspected",
         "to_state": "confirmed", "actor": "staff:lab"},
    ])
    engine = Engine(db, SimulatedClock(AT))
    report = engine.audit_verify()
    assert (report["intact"], report["entries"], report["objects"]) == (True, 3, 2)
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT object_kind, pos, prev_seq, format, role FROM audit_log ORDER BY seq"))
        assert [tuple(r) for r in rows] == [("person", 1, None, 0, "staff"), ("case", 1, None, 0, "staff"),
                                            ("case", 2, 2, 0, "staff")]
    assert engine.audit_replay() == {"matches": True, "objects": 1, "differences": []}
    with pytest.raises(UsageError, match="before audit format 1"):
        engine.show("case-1", as_of=AT)
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:  # the triggers are back
        connection.execute(text("UPDATE audit_log SET actor = 'x'"))


def test_a_log_chained_by_0007_with_every_kind_of_value_passes_todays_verify(db):
    """What 0007's frozen hash wrote, today's verify recomputes and accepts: microseconds, non-ASCII text, nested
    data, armed and cancelled timers, a timer's own entry (role ``timer``); and the stored hashes are the frozen
    function's over the rows as stored."""
    later = AT + timedelta(days=1, microseconds=123457)
    written_before_0007(db, [
        {"object_kind": "person", "object_id": 1, "workflow": None, "trigger": "register", "from_state": None,
         "to_state": None, "rule": None, "at": AT.replace(microsecond=654321),
         "data": {"flags": {"pregnant": False, "notes": ["ø", None, 1.5]}, "n": 3}},
        {"object_kind": "case", "object_id": 1, "trigger": "open", "from_state": None, "to_state": "suspected",
         "reason": "første kontakt – ønsker opkald ☎",
         "timers_armed": [{"timer": "timer-1", "name": "phone_notification", "due_at": "2025-03-04T07:00:00Z"}]},
        {"object_kind": "case", "object_id": 1, "trigger": "confirm", "from_state": "suspected",
         "to_state": "confirmed", "actor": "staff:lab", "at": later, "recorded_at": later},
        {"object_kind": "case", "object_id": 1, "trigger": "phone_notification", "from_state": "confirmed",
         "to_state": "confirmed", "actor": "timer:worker-1", "timer_id": 1, "timers_cancelled": ["timer-1"],
         "at": later + timedelta(hours=1), "recorded_at": later + timedelta(hours=1)},
    ])
    report = Engine(db, SimulatedClock(AT)).audit_verify()
    assert (report["intact"], report["entries"], report["objects"], report["problems"]) == (True, 4, 2, [])
    frozen = migration_0007()
    with db.engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(
            Table("audit_log", MetaData(), autoload_with=connection).select().order_by(text("seq"))).mappings()]
    assert [(r["role"], r["pos"]) for r in rows] == [("staff", 1), ("staff", 1), ("staff", 2), ("timer", 3)]
    for row in rows:
        # reflected, SQLite gives naive UTC instants: as the frozen UTCDateTime reads them
        row.update({name: row[name].replace(tzinfo=UTC) if row[name].tzinfo is None else row[name]
                    for name in ("at", "recorded_at")})
        assert row["hash"] == frozen.entry_hash(row) == audit.entry_hash(row)
    assert rows[0]["at"] == AT.replace(microsecond=654321)
