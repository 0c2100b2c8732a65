"""Users can be disabled (issue 13): ``disabled_at`` is when an admin disabled the user, NULL while enabled.

A disabled user's sessions and tokens stop working at once (the lookups skip the user), and the user can neither
log in nor act.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

#: Frozen: this migration imports no live code (the models' UTCDateTime is this type in the DDL).
INSTANT = sa.DateTime(timezone=True)

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("disabled_at", INSTANT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
