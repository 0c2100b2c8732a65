"""The tamper-evident audit log: users and their roles, a per-object hash chain over the audit entries (with each
object's chain head on its row), the columns replay needs (``changes``, ``timers_done``), the actor's role.

Entries written before this revision are chained here as format 0 (they record no ``changes``, so replay can
check only their objects' states). The append-only triggers are lifted for the backfill and put back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# ---- frozen copies -----------------------------------------------------------------------------------------
# This migration imports no live code: what it needs of persistence.models and persistence.audit is copied
# here as it was when the revision was written (commit e58bb47), so a later change to the live hash or column
# type cannot change what the backfill writes. tests/test_migrations.py checks that today's ``entry_hash``
# still gives these hashes, and that a log backfilled here passes ``audit verify``.


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware instant stored as UTC on every backend (SQLite has no timezone type): the backfill reads
    ``at`` and ``recorded_at`` back aware, as the hash needs them."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: instants must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: The format of the entries written before the hash chain existed (no ``changes``).
LEGACY_FORMAT = 0
#: The ``prev_hash`` of an object's first entry.
GENESIS = "0" * 64
#: The fields an entry's hash covers, in a fixed order (the JSON is also key-sorted).
HASHED = (
    "format", "object_kind", "object_id", "pos", "prev_seq", "prev_hash", "timer_id", "workflow", "trigger",
    "from_state", "to_state", "actor", "role", "reason", "at", "recorded_at", "rule", "data", "changes",
    "timers_armed", "timers_cancelled", "timers_done",
)


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} in an audit entry")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash is taken over: its ``HASHED`` fields as compact, key-sorted, ASCII JSON,
    instants in UTC with microseconds (``2025-03-03T07:00:00.000000Z``). Raises ``KeyError`` for a missing
    field and ``ValueError`` for a naive instant."""
    content = {name: _canonical_value(entry[name]) for name in HASHED}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical content, hex (64 characters)."""
    return hashlib.sha256(canonical(entry)).hexdigest()


# ---- the revision ------------------------------------------------------------------------------------------

HEAD_TABLES = {"person": "persons", "case": "cases", "contact": "contacts", "course": "courses"}
NEW_AUDIT_COLUMNS = ("format", "pos", "prev_seq", "prev_hash", "hash", "role", "changes", "timers_done")


def _drop_append_only() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_log_no_update")
        op.execute("DROP TRIGGER audit_log_no_delete")
    else:
        op.execute("DROP TRIGGER audit_log_no_change ON audit_log")
        op.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")


def _create_append_only() -> None:
    # As in 0001 (the function stays on PostgreSQL).
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {verb} refused'); END"
            )
    else:
        op.execute(
            "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
        )


def _head_columns() -> list[sa.Column[Any]]:
    return [sa.Column("audit_pos", sa.Integer), sa.Column("audit_seq", sa.Integer),
            sa.Column("audit_hash", sa.String(64))]


_audit = sa.table(
    "audit_log",
    sa.column("seq", sa.Integer), sa.column("timer_id", sa.Integer), sa.column("object_kind", sa.String),
    sa.column("object_id", sa.Integer), sa.column("workflow", sa.String), sa.column("trigger", sa.String),
    sa.column("from_state", sa.String), sa.column("to_state", sa.String), sa.column("actor", sa.String),
    sa.column("reason", sa.Text), sa.column("at", UTCDateTime), sa.column("recorded_at", UTCDateTime),
    sa.column("rule", sa.String), sa.column("data", sa.JSON), sa.column("timers_armed", sa.JSON),
    sa.column("timers_cancelled", sa.JSON), sa.column("format", sa.Integer), sa.column("pos", sa.Integer),
    sa.column("prev_seq", sa.Integer), sa.column("prev_hash", sa.String), sa.column("hash", sa.String),
    sa.column("role", sa.String), sa.column("changes", sa.JSON), sa.column("timers_done", sa.JSON),
)


def _backfill() -> None:
    """Chain the entries already there, object by object in sequence order, and set each object's head."""
    bind = op.get_bind()
    heads: dict[tuple[str, int], tuple[int, int, str]] = {}
    rows = bind.execute(sa.select(_audit).order_by(_audit.c.object_kind, _audit.c.object_id, _audit.c.seq))
    updates = []
    for row in rows.mappings():
        key = (row["object_kind"], row["object_id"])
        pos, prev_seq, prev_hash = heads.get(key, (0, None, GENESIS))
        entry = {
            **row, "format": LEGACY_FORMAT, "pos": pos + 1, "prev_seq": prev_seq, "prev_hash": prev_hash,
            "role": "timer" if row["actor"].startswith("timer:") else "staff", "changes": None, "timers_done": [],
        }
        entry["hash"] = entry_hash(entry)
        heads[key] = (entry["pos"], row["seq"], entry["hash"])
        updates.append({name: entry[name] for name in ("format", "pos", "prev_seq", "prev_hash", "hash", "role",
                                                         "changes", "timers_done")} | {"key": row["seq"]})
    if updates:
        bind.execute(
            _audit.update().where(_audit.c.seq == sa.bindparam("key")).values(
                {name: sa.bindparam(name) for name in NEW_AUDIT_COLUMNS}
            ),
            updates,
        )
    for (kind, pk), (pos, seq, digest) in heads.items():
        if kind in HEAD_TABLES:
            table = sa.table(HEAD_TABLES[kind], sa.column("id", sa.Integer), sa.column("audit_pos", sa.Integer),
                             sa.column("audit_seq", sa.Integer), sa.column("audit_hash", sa.String))
            bind.execute(table.update().where(table.c.id == pk).values(audit_pos=pos, audit_seq=seq,
                                                                        audit_hash=digest))


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        *_head_columns(),
        sa.CheckConstraint("role IN ('staff', 'auditor', 'admin', 'timer')", name="ck_users_role"),
    )
    for table in HEAD_TABLES.values():
        with op.batch_alter_table(table) as batch:
            for column in _head_columns():
                batch.add_column(column)
    _drop_append_only()
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("format", sa.Integer))
        batch.add_column(sa.Column("pos", sa.Integer))
        batch.add_column(sa.Column("prev_seq", sa.Integer))
        batch.add_column(sa.Column("prev_hash", sa.String(64)))
        batch.add_column(sa.Column("hash", sa.String(64)))
        batch.add_column(sa.Column("role", sa.String(16)))
        batch.add_column(sa.Column("changes", sa.JSON))
        batch.add_column(sa.Column("timers_done", sa.JSON))
    _backfill()
    with op.batch_alter_table("audit_log") as batch:
        for name in ("format", "pos", "prev_hash", "hash", "role", "timers_done"):
            batch.alter_column(name, nullable=False)
        batch.drop_index("ix_audit_object")
        batch.create_index("uq_audit_object_pos", ["object_kind", "object_id", "pos"], unique=True)
        batch.create_index("ix_audit_actor", ["actor", "seq"])
    _create_append_only()


def downgrade() -> None:
    _drop_append_only()
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_actor")
        batch.drop_index("uq_audit_object_pos")
        batch.create_index("ix_audit_object", ["object_kind", "object_id", "seq"])
        for name in reversed(NEW_AUDIT_COLUMNS):
            batch.drop_column(name)
    _create_append_only()
    for table in HEAD_TABLES.values():
        with op.batch_alter_table(table) as batch:
            for name in ("audit_hash", "audit_seq", "audit_pos"):
                batch.drop_column(name)
    op.drop_table("users")
