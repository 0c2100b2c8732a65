"""Which definition a new object starts under (issue 20 item 1): the deployment's defaults, each from an instant.

- ``workflow_defaults``: one row per setting an admin made (``mpoxflow workflow default``): the object ``kind``
  (case, contact, course), the versioned name of the ``definition`` its new objects start under
  (``contact@SST-mpox-7.1-r2``), the instant it takes effect (``effective_from``, UTC) and when it was set
  (``created_at``); its audit chain's head (``audit_pos``, ``audit_seq``, ``audit_hash``: each setting is audited on
  its own chain, object kind ``workflow_default``). The default in force at an instant is the row of the kind with
  the latest ``effective_from`` at or before it (of two from the same instant, the later set); none: the product's
  own definition. Rows are only added: history is not rewritten. The index ``(kind, effective_from, id)`` finds the
  one in force with one short read per creation.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflow_defaults",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("definition", sa.String(64), nullable=False),
        sa.Column("effective_from", INSTANT, nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("audit_pos", sa.Integer),
        sa.Column("audit_seq", sa.Integer),
        sa.Column("audit_hash", sa.String(64)),
        sa.Index("ix_workflow_defaults_kind_from", "kind", "effective_from", "id"),
    )


def downgrade() -> None:
    op.drop_table("workflow_defaults")
