"""Vaccination courses (§6), and when a task turns overdue.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

#: Frozen: this migration imports no live code (the models' UTCDateTime is this type in the DDL).
INSTANT = sa.DateTime(timezone=True)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.add_column(sa.Column("overdue_at", INSTANT))
    op.create_table(
        "courses",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("persons.id"), nullable=False, index=True),
        sa.Column("contact_id", sa.Integer, sa.ForeignKey("contacts.id"), index=True),
        sa.Column("indication", sa.String(8), nullable=False),
        sa.Column("doses_planned", sa.Integer, nullable=False),
        sa.Column("plan_rule", sa.String(64), nullable=False),
        sa.Column("plan_reason", sa.Text, nullable=False),
        sa.Column("criteria", sa.JSON, nullable=False),
        sa.Column("assessed_by", sa.String(128)),
        sa.Column("exposure_on", sa.Date),
        sa.Column("dose1_on", sa.Date),
        sa.Column("dose2_on", sa.Date),
        sa.Column("consent", sa.JSON),
        sa.Column("dose_assessments", sa.JSON, nullable=False),
        sa.Column("ended_because", sa.Text),
        # No course ever records a third dose: the table has room for two (§6.3).
        sa.CheckConstraint("doses_planned IN (1, 2)", name="ck_courses_doses_planned"),
    )


def downgrade() -> None:
    op.drop_table("courses")
    with op.batch_alter_table("timers") as batch:
        batch.drop_column("overdue_at")
