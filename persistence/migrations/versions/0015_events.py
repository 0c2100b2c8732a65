"""Talking to the systems around it (issue 18), part four: events other systems can rely on.

- ``events``: the outbox. One row per transition, assignment or timer firing, appended in the change's own
  transaction (so an event exists exactly when its change does), with internal ids only (never personal data):
  its type (``case.confirmed``), the object, its workflow, from/to state, trigger, the rule cited, the clock's
  instant, the audit entry it mirrors and the unit. ``seq`` is the order readers rely on: every transaction that
  appends events takes one lock for the append and its commit (``engine.events``), so ``seq`` is allocated in
  commit order and a reader that has seen ``seq`` N never later sees a smaller one commit. Append-only, as the
  audit log (database triggers refuse UPDATE and DELETE).
- ``webhooks``: subscriptions: the URL, the event types, the secret its bodies are signed with (HMAC-SHA256), the
  role it is delivered as and who made it, whether it may carry the person's reference, whether it is active,
  the last event seq its delivery state was brought up to (``scanned_seq``; it starts at the newest event when the
  subscription is made).
- ``webhook_objects``: delivery state per webhook and object (order is per object): the last event delivered, the
  next one to send, how many attempts it has had, when the next attempt is due, and the lease of the worker that
  holds it (so two workers never send the same event to the same webhook at once).
- ``webhook_deliveries``: every attempt: webhook, event, attempt number, instant, outcome, HTTP status, error
  text (never a body, never personal data) and duration.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("object_kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.Integer, nullable=False),
        sa.Column("workflow", sa.String(64), nullable=True),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=True),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(64), nullable=True),
        sa.Column("at", INSTANT, nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
        sa.Column("unit_id", sa.Integer, nullable=True),
        sa.Column("timer_id", sa.Integer, nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Index("ix_events_object", "object_kind", "object_id", "seq"),
        sa.Index("ix_events_type", "type", "seq"),
    )
    if sqlite:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER events_no_{verb.lower()} BEFORE {verb} ON events "
                       f"BEGIN SELECT RAISE(ABORT, 'events are append-only: {verb} refused'); END")
    else:
        op.execute("CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
        op.execute("CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()")
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("event_types", sa.JSON, nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("personal_data", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("removed_at", INSTANT, nullable=True),
        sa.Column("scanned_seq", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("role IN ('staff', 'auditor', 'admin')", name="ck_webhooks_role"),
    )
    op.create_table(
        "webhook_objects",
        sa.Column("webhook_id", sa.Integer, sa.ForeignKey("webhooks.id"), primary_key=True),
        sa.Column("object_kind", sa.String(16), primary_key=True),
        sa.Column("object_id", sa.Integer, primary_key=True),
        sa.Column("delivered_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_seq", sa.Integer, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", INSTANT, nullable=True),
        sa.Column("lease_until", INSTANT, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Index("ix_webhook_objects_due", "webhook_id", "next_seq"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("webhook_id", sa.Integer, sa.ForeignKey("webhooks.id"), nullable=False),
        sa.Column("event_seq", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", INSTANT, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
        sa.Index("ix_webhook_deliveries_event", "event_seq", "id"),
        sa.CheckConstraint("outcome IN ('delivered', 'failed')", name="ck_webhook_deliveries_outcome"),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_objects")
    op.drop_table("webhooks")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER events_no_update")
        op.execute("DROP TRIGGER events_no_delete")
    else:
        op.execute("DROP TRIGGER events_no_truncate ON events")
        op.execute("DROP TRIGGER events_no_change ON events")
    op.drop_table("events")
