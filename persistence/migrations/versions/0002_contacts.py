"""Close contacts (§5), and the case's tracing consent, possible sources and source case.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

#: Frozen: this migration imports no live code (the models' UTCDateTime is this type in the DDL).
INSTANT = sa.DateTime(timezone=True)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("tracing_consent", sa.Boolean))
        batch.add_column(sa.Column("sources", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("source_case", sa.String(32)))
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("persons.id"), nullable=False, index=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
        sa.Column("exposure_kind", sa.String(32), nullable=False),
        sa.Column("risk", sa.String(8), nullable=False),
        sa.Column("risk_assessed", sa.Boolean, nullable=False),
        sa.Column("exposed_on", sa.Date, nullable=False),
        sa.Column("last_exposure_on", sa.Date, nullable=False),
        sa.Column("pep_window", sa.String(16), nullable=False),
        sa.Column("exposures", sa.JSON, nullable=False),
        sa.Column("anonymous_via_doctor", sa.Boolean, nullable=False),
        sa.Column("informed_at", INSTANT),
        sa.Column("symptoms_onset", sa.Date),
        sa.Column("symptoms", sa.JSON, nullable=False),
        sa.Column("became_case", sa.String(32)),
        sa.UniqueConstraint("case_id", "person_id", name="uq_contacts_case_person"),
    )


def downgrade() -> None:
    op.drop_table("contacts")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("source_case")
        batch.drop_column("sources")
        batch.drop_column("tracing_consent")
