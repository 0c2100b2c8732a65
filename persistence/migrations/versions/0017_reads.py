"""Reads of personal data are audited (issue 19 item 3): the read log.

- ``personal_reads``: one row per person whose reference (or birth date) was shown to someone, per request or
  command: when (``at``, the clock's instant, simulated or real; ``recorded_at``, the wall clock's), who (``actor``,
  a user's name or a webhook's id, with its ``role`` and the ``unit_id`` it acted through when known), which person
  (``person_id``: the internal id only, never a reference or a birth date), what showed it (``what``: a list or
  search result, a person's page, a case's, a contact's, a course's, FHIR, a notification document, an import's
  report, a webhook delivery, a person's report), how (``via``: the command line, the pages, the API, the worker's
  webhook delivery) and the request or command it belongs to (``request_id``). No foreign key to the persons: the
  log outlives any purge of personal data, as the audit log. Append-only, as the audit log (database triggers
  refuse UPDATE and DELETE).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)
WHAT = ("ref", "person", "case", "contact", "course", "fhir", "document", "import", "webhook", "report")
VIA = ("cli", "web", "api", "worker")


def _within(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "personal_reads",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", INSTANT, nullable=False),
        sa.Column("recorded_at", INSTANT, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("unit_id", sa.Integer, nullable=True),
        sa.Column("person_id", sa.Integer, nullable=False),
        sa.Column("what", sa.String(16), nullable=False),
        sa.Column("via", sa.String(8), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Index("ix_personal_reads_person", "person_id", "at"),
        sa.Index("ix_personal_reads_actor", "actor", "at"),
        sa.Index("ix_personal_reads_at", "at"),
        sa.CheckConstraint(_within("what", WHAT), name="ck_personal_reads_what"),
        sa.CheckConstraint(_within("via", VIA), name="ck_personal_reads_via"),
    )
    if sqlite:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER personal_reads_no_{verb.lower()} BEFORE {verb} ON personal_reads "
                       f"BEGIN SELECT RAISE(ABORT, 'personal_reads is append-only: {verb} refused'); END")
    else:
        # A function of its own (0001's names the audit log in its message): the table refused is named.
        op.execute("CREATE FUNCTION personal_reads_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   "BEGIN RAISE EXCEPTION 'personal_reads is append-only: % refused', TG_OP; END $$")
        op.execute("CREATE TRIGGER personal_reads_no_change BEFORE UPDATE OR DELETE ON personal_reads "
                   "FOR EACH ROW EXECUTE FUNCTION personal_reads_append_only()")
        op.execute("CREATE TRIGGER personal_reads_no_truncate BEFORE TRUNCATE ON personal_reads "
                   "FOR EACH STATEMENT EXECUTE FUNCTION personal_reads_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER personal_reads_no_update")
        op.execute("DROP TRIGGER personal_reads_no_delete")
    else:
        op.execute("DROP TRIGGER personal_reads_no_truncate ON personal_reads")
        op.execute("DROP TRIGGER personal_reads_no_change ON personal_reads")
        op.execute("DROP FUNCTION personal_reads_append_only()")
    op.drop_table("personal_reads")
