"""Messages to people (issue 21 item 4): one row per sending of an advice sheet.

``advice_messages``: the object (kind, id), the sheet and its language, the channel (email, sms: sent by the
worker; phone, letter: given by a member of staff, nothing sent), the status (queued, sent, failed, given), the
attempts so far, when the next is due, the lease of the worker sending it, the last error (the exception's type
and the SMTP code: never an address, never the sheet), who queued it and when, and when it was sent. The address
is kept in the row only while the message waits to be sent: it is set to NULL in the transaction that records it
sent (or failed for good), and it never goes into a log, an audit entry or an event.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "advice_messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("object_kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.Integer, nullable=False),
        sa.Column("sheet", sa.String(16), nullable=False),
        sa.Column("language", sa.String(2), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("address", sa.String(320), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", INSTANT, nullable=True),
        sa.Column("lease_until", INSTANT, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("sent_at", INSTANT, nullable=True),
        sa.Index("ix_advice_messages_due", "status", "next_attempt_at"),
        sa.Index("ix_advice_messages_object", "object_kind", "object_id"),
        sa.CheckConstraint("channel IN ('email', 'sms', 'phone', 'letter')", name="ck_advice_messages_channel"),
        sa.CheckConstraint("status IN ('queued', 'sent', 'failed', 'given')", name="ck_advice_messages_status"),
    )


def downgrade() -> None:
    op.drop_table("advice_messages")
