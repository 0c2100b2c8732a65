"""Talking to the systems around it (issue 18), part one: bulk imports and the written notification's documents.

- ``imports``: one row per import of a file (CLI or upload page), kept so its report can be read and downloaded
  again as the file itself with a result column: who imported what (``kind``: contacts, persons or cases), the
  file's name, format and bytes (personal data, as ``persons``: never logged), the options it was run with (the
  case, the column mapping, whether refused rows stop it), whether it was a dry run, the counts per result and the
  report (per row: its number in the file, the result, the object, the rule and the message of a refusal).
- ``notification_documents``: the written notification of a confirmed case to SSI and STPS (§3.1), made from the
  case as a FHIR document Bundle (kept as made, with the SHA-256 of its content and the case's version it was made
  from), and when and by whom it was recorded as sent. A case whose content differs from the sent document's is
  "changed since sent".

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("finished_at", INSTANT, nullable=True),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Index("ix_imports_created", "created_at"),
        sa.CheckConstraint("kind IN ('contacts', 'persons', 'cases')", name="ck_imports_kind"),
        sa.CheckConstraint("format IN ('csv', 'xlsx')", name="ck_imports_format"),
    )
    op.create_table(
        "notification_documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False, server_default="written"),
        sa.Column("made_at", INSTANT, nullable=False),
        sa.Column("made_by", sa.String(128), nullable=False),
        sa.Column("case_version", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("bundle", sa.JSON, nullable=False),
        sa.Column("sent_at", INSTANT, nullable=True),
        sa.Column("sent_by", sa.String(128), nullable=True),
        sa.Index("ix_notification_documents_case", "case_id", "id"),
    )


def downgrade() -> None:
    op.drop_table("notification_documents")
    op.drop_table("imports")
