"""The first tables: persons, cases, timers, the append-only audit log, the clock.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

#: Frozen: this migration imports no live code (the models' UTCDateTime is this type in the DDL).
INSTANT = sa.DateTime(timezone=True)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "persons",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ref", sa.String(64), nullable=False, unique=True),
        sa.Column("born", sa.Date),
        sa.Column("immunocompromised", sa.Boolean, nullable=False),
        sa.Column("pregnant", sa.Boolean, nullable=False),
        sa.Column("previous_mpox", sa.Boolean, nullable=False),
        sa.Column("smallpox_vaccinated", sa.Boolean, nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("persons.id"), nullable=False, index=True),
        sa.Column("onset", sa.Date, nullable=False),
        sa.Column("symptoms", sa.JSON, nullable=False),
        sa.Column("criteria", sa.JSON, nullable=False),
        sa.Column("pcr_on", sa.Date),
        sa.Column("clade", sa.String(8)),
        sa.Column("confirmed_at", INSTANT),
        sa.Column("isolation_mode", sa.String(16)),
        sa.Column("healed_on", sa.Date),
        sa.Column("died_on", sa.Date),
        sa.Column("phone_notified_at", INSTANT),
        sa.Column("written_notified_at", INSTANT),
    )
    op.create_table(
        "timers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("object_kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("due_at", INSTANT, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("task", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("armed_at", INSTANT, nullable=False),
        sa.Column("closed_at", INSTANT),
        sa.Column("satisfied_at", INSTANT),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_timers_status_due", "timers", ["status", "due_at"])
    op.create_index("ix_timers_object", "timers", ["object_kind", "object_id"])
    op.create_index(
        "uq_timers_pending_name", "timers", ["object_kind", "object_id", "name"], unique=True,
        sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("object_kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.Integer, nullable=False),
        sa.Column("workflow", sa.String(64)),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32)),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("at", INSTANT, nullable=False, index=True),
        sa.Column("recorded_at", INSTANT, nullable=False),
        sa.Column("rule", sa.String(64)),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("timers_armed", sa.JSON, nullable=False),
        sa.Column("timers_cancelled", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_object", "audit_log", ["object_kind", "object_id", "seq"])
    op.create_table(
        "clock",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("simulated", sa.Boolean, nullable=False),
        sa.Column("now", INSTANT),
    )
    # The audit log is append-only: the database itself refuses UPDATE and DELETE (and TRUNCATE).
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {verb} refused'); END"
            )
    else:
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER audit_log_no_change ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    for table in ("clock", "audit_log", "timers", "cases", "persons"):
        op.drop_table(table)
