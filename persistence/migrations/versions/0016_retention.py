"""Personal data kept no longer than needed (issue 19, item 1): the retention schedule and what a purge leaves.

- ``retention_rules``: one row per kind of data with a retention period (``person``: a person's personal data,
  counted in years from the end of the last of their cases, contacts and courses; ``import``: an import's stored
  file and the person links of its report, counted in days from the import's end), the period, and who set it
  when (its change is also an audit entry). Seeded with the defaults: person 10 years, import 30 days.
- ``persons``: ``ref`` may be NULL (a purged person has no reference; the unique index still holds for every
  reference there is: NULLs are distinct on both backends), ``purged_at`` and ``purge_rule`` (when and under which
  rule the personal data was deleted).
- ``notes``: ``purged_at``. The table stays append-only but for exactly one change, the purge's redaction: an
  UPDATE that sets ``text`` to NULL and ``purged_at`` from NULL to an instant and changes nothing else. Any other
  UPDATE, and every DELETE (and TRUNCATE on PostgreSQL), is still refused by the database.
- ``imports``: ``content`` may be NULL (the purged file), ``purged_at``.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)
#: Frozen copies of the defaults (the engine's are in ``engine.retention``; a test checks they agree).
DEFAULTS = (("person", "years", 10), ("import", "days", 30))
#: The columns of ``notes`` that the purge's redaction leaves as they are.
NOTE_KEPT = ("id", "object_kind", "object_id", "kind", "channel", "outcome", "actor", "at")
#: SQLite: the condition under which an UPDATE of a note is the purge's redaction (``IS``: NULL-safe equality).
SQLITE_REDACTION = " AND ".join([
    "NEW.text IS NULL", "OLD.purged_at IS NULL", "NEW.purged_at IS NOT NULL",
    *(f"NEW.{c} IS OLD.{c}" for c in NOTE_KEPT)])
#: PostgreSQL: the same condition in the trigger function.
PG_REDACTION = " AND ".join([
    "NEW.text IS NULL", "OLD.purged_at IS NULL", "NEW.purged_at IS NOT NULL",
    *(f"NEW.{c} IS NOT DISTINCT FROM OLD.{c}" for c in NOTE_KEPT)])


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    rules = op.create_table(
        "retention_rules",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("period", sa.Integer, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=True),
        sa.Column("updated_by", sa.String(128), nullable=True),
        sa.CheckConstraint("kind IN ('person', 'import')", name="ck_retention_rules_kind"),
        sa.CheckConstraint("unit IN ('years', 'days')", name="ck_retention_rules_unit"),
        sa.CheckConstraint("period >= 1", name="ck_retention_rules_period"),
    )
    op.bulk_insert(rules, [{"kind": k, "unit": u, "period": n, "updated_at": None, "updated_by": None}
                           for k, u, n in DEFAULTS])
    # persons: SQLite changes a column's nullability only by rebuilding the table (batch mode; the upgrade runs
    # with foreign keys off, and persons has no triggers to lose). The reference's unique constraint comes along.
    with op.batch_alter_table("persons") as batch:
        batch.alter_column("ref", existing_type=sa.String(64), nullable=True)
        batch.add_column(sa.Column("purged_at", INSTANT, nullable=True))
        batch.add_column(sa.Column("purge_rule", sa.String(64), nullable=True))
    with op.batch_alter_table("imports") as batch:
        batch.alter_column("content", existing_type=sa.LargeBinary, nullable=True)
        batch.add_column(sa.Column("purged_at", INSTANT, nullable=True))
    # notes keeps its append-only triggers: a plain ADD COLUMN (SQLite's batch mode would rebuild the table and
    # drop them), then the UPDATE trigger replaced by one that lets exactly the redaction through.
    op.add_column("notes", sa.Column("purged_at", INSTANT, nullable=True))
    if sqlite:
        op.execute("DROP TRIGGER notes_no_update")
        op.execute("CREATE TRIGGER notes_redaction_only BEFORE UPDATE ON notes "
                   f"WHEN NOT ({SQLITE_REDACTION}) "
                   "BEGIN SELECT RAISE(ABORT, 'notes are append-only: UPDATE refused (only the purge may redact "
                   "a note)'); END")
    else:
        op.execute("CREATE FUNCTION notes_redaction_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   f"BEGIN IF TG_OP = 'UPDATE' AND {PG_REDACTION} THEN RETURN NEW; END IF; "
                   "RAISE EXCEPTION 'notes are append-only: % refused (only the purge may redact a note)', TG_OP; "
                   "END $$")
        op.execute("DROP TRIGGER notes_no_change ON notes")
        op.execute("CREATE TRIGGER notes_no_delete BEFORE DELETE ON notes "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
        op.execute("CREATE TRIGGER notes_redaction_only BEFORE UPDATE ON notes "
                   "FOR EACH ROW EXECUTE FUNCTION notes_redaction_only()")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER notes_redaction_only")
        op.execute("CREATE TRIGGER notes_no_update BEFORE UPDATE ON notes "
                   "BEGIN SELECT RAISE(ABORT, 'notes are append-only: UPDATE refused'); END")
    else:
        op.execute("DROP TRIGGER notes_redaction_only ON notes")
        op.execute("DROP TRIGGER notes_no_delete ON notes")
        op.execute("DROP FUNCTION notes_redaction_only()")
        op.execute("CREATE TRIGGER notes_no_change BEFORE UPDATE OR DELETE ON notes "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
    # The column goes with its data: a redacted note keeps its NULL text. SQLite drops a column in place (3.35+),
    # which keeps the table's triggers.
    op.drop_column("notes", "purged_at")
    # A purged file or reference cannot come back: the rows get placeholders the old schema accepts.
    imports = sa.table("imports", sa.column("content", sa.LargeBinary))
    op.execute(imports.update().where(imports.c.content.is_(None)).values(content=b""))
    with op.batch_alter_table("imports") as batch:
        batch.drop_column("purged_at")
        batch.alter_column("content", existing_type=sa.LargeBinary, nullable=False)
    op.execute("UPDATE persons SET ref = 'purged:person-' || CAST(id AS VARCHAR(16)) WHERE ref IS NULL")
    with op.batch_alter_table("persons") as batch:
        batch.drop_column("purge_rule")
        batch.drop_column("purged_at")
        batch.alter_column("ref", existing_type=sa.String(64), nullable=False)
    op.drop_table("retention_rules")
