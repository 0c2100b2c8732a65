"""The worker: retries of failing timers, and one audit entry per timer at most.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

#: Frozen: this migration imports no live code (the models' UTCDateTime is this type in the DDL).
INSTANT = sa.DateTime(timezone=True)

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("next_attempt_at", INSTANT))
        batch.add_column(sa.Column("last_error", sa.Text))
    # ADD COLUMN only: the append-only audit log is never rewritten.
    op.add_column("audit_log", sa.Column("timer_id", sa.Integer))
    op.create_index("uq_audit_timer", "audit_log", ["timer_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_audit_timer", table_name="audit_log")
    op.drop_column("audit_log", "timer_id")
    with op.batch_alter_table("timers") as batch:
        batch.drop_column("last_error")
        batch.drop_column("next_attempt_at")
        batch.drop_column("attempts")
