"""An index for the dose-2 forecast: pending ``dose2_due`` timers of courses, by due instant.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The three equalities first, then the range: the forecast reads one stretch of the index, already in
    # due_at order for its GROUP BY, and never the table (every column it needs is in the index).
    op.create_index("ix_timers_forecast", "timers", ["object_kind", "name", "status", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_timers_forecast", table_name="timers")
