"""An index for the earliest retry the worker asks for after every pass.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WAITING = sa.text("status = 'pending' AND next_attempt_at IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_timers_retry", "timers", ["next_attempt_at"], sqlite_where=WAITING, postgresql_where=WAITING)


def downgrade() -> None:
    op.drop_index("ix_timers_retry", table_name="timers")
