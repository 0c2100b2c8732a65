"""The guideline read again (issue 12): the facts the corrected rules need.

Persons gain breastfeeding (§6.2.1) and doses given elsewhere (§6.3: no more than 2 doses over the person). Cases
may be registered confirmed without symptoms (``onset`` nullable, §1.1) and gain a free-text note for the "other"
symptom, the end of a suspected case's isolation (§2.2.1), the sample sent to SSI (§2.4), the child flag, the
paediatric referral and the discharge (§3.2), the antiviral decision (§3.4), the work restriction (§4.1) and the
contact the case began from (§5.5). Courses gain the assessor's note (§6.2), the PrEP criterion's date (§6.1),
the doses the person had before the course (§6.3), the lapse of a PEP window (§6.2) and the special reason of a
dose on day 5-14 (§6.2). Timers gain the resolution of a missed task.

New workflow columns are nullable without a default: an object written before this revision has NULL there, which
is what its audit entries (that never mention the column) rebuild, so ``audit replay --check`` stays exact.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

#: Frozen: this migration imports no live code (the models' UTCDateTime is this type in the DDL).
INSTANT = sa.DateTime(timezone=True)

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("persons") as batch:
        batch.add_column(sa.Column("breastfeeding", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("doses_elsewhere", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_dose_elsewhere_on", sa.Date, nullable=True))
    with op.batch_alter_table("cases") as batch:
        batch.alter_column("onset", existing_type=sa.Date, nullable=True)
        batch.add_column(sa.Column("symptom_note", sa.Text, nullable=True))
        batch.add_column(sa.Column("isolation_ended_at", INSTANT, nullable=True))
        batch.add_column(sa.Column("sample_sent_on", sa.Date, nullable=True))
        batch.add_column(sa.Column("child", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("paediatric_referred_at", INSTANT, nullable=True))
        batch.add_column(sa.Column("discharged_on", sa.Date, nullable=True))
        batch.add_column(sa.Column("discharge_decided_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("antiviral", sa.JSON, nullable=True))
        batch.add_column(sa.Column("antiviral_consider", sa.Text, nullable=True))
        batch.add_column(sa.Column("work", sa.JSON, nullable=True))
        batch.add_column(sa.Column("no_work", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("from_contact", sa.Integer, nullable=True))
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("pep_offered_at", INSTANT, nullable=True))
    with op.batch_alter_table("courses") as batch:
        batch.add_column(sa.Column("assessment_note", sa.Text, nullable=True))
        batch.add_column(sa.Column("criterion_on", sa.Date, nullable=True))
        batch.add_column(sa.Column("prior_doses", sa.Integer, nullable=True))
        batch.add_column(sa.Column("prior_last_dose_on", sa.Date, nullable=True))
        batch.add_column(sa.Column("lapsed_at", INSTANT, nullable=True))
        batch.add_column(sa.Column("special_reason", sa.Text, nullable=True))
    with op.batch_alter_table("timers") as batch:
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("resolved_at", INSTANT, nullable=True))
        batch.add_column(sa.Column("resolution", sa.Text, nullable=True))
    # The worklist's missed section: tasks whose deadline passed undone and not yet resolved.
    op.create_index("ix_timers_missed", "timers", ["status", "resolved_at"])


def downgrade() -> None:
    op.drop_index("ix_timers_missed", table_name="timers")
    with op.batch_alter_table("timers") as batch:
        for name in ("resolution", "resolved_at", "outcome"):
            batch.drop_column(name)
    with op.batch_alter_table("courses") as batch:
        for name in ("special_reason", "lapsed_at", "prior_last_dose_on", "prior_doses", "criterion_on",
                     "assessment_note"):
            batch.drop_column(name)
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("pep_offered_at")
    with op.batch_alter_table("cases") as batch:
        for name in ("from_contact", "no_work", "work", "antiviral_consider", "antiviral", "discharge_decided_by",
                     "discharged_on", "paediatric_referred_at", "child", "sample_sent_on", "isolation_ended_at",
                     "symptom_note"):
            batch.drop_column(name)
        batch.alter_column("onset", existing_type=sa.Date, nullable=False)
    with op.batch_alter_table("persons") as batch:
        for name in ("last_dose_elsewhere_on", "doses_elsewhere", "breastfeeding"):
            batch.drop_column(name)
