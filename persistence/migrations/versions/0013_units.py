"""Many hands (issue 17): organisational units, memberships, where new objects go, whose work an object is, notes
and contact attempts, and the acting user's unit on every audit entry.

- ``units``: a tree (``parent_id``); the root unit, ``Danmark``, is made here (id 1), so a fresh database has one.
- ``memberships``: a user in a unit with a role there (``member`` or ``lead``); every existing user except the
  scheduler's is made a member of the root (admins its leads), so an upgraded database works as before.
- ``placement``: by object kind, the rule that decides a new object's unit (``parent``: the unit of the object it
  belongs to; ``creator``: the creating user's unit; ``unit``: a configured one) and whether work is dealt out
  round-robin among the unit's members.
- ``cases``, ``contacts``, ``courses``: ``unit_id`` (every existing object goes to the root), ``assignee_id``
  (none), ``failed_attempts`` (contact attempts that did not reach the person since the last that did).
- ``timers``: the object's ``unit_id`` and ``assignee_id`` beside each timer (written with the object's), so the
  worklist filters by unit and by assignee in the index it reads.
- ``audit_log.unit_id``: the unit the acting user acted through (entries before this migration: NULL).
- ``notes``: the text of notes and contact attempts (append-only, as the audit log): an entry holds only its id.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)
OPEN_TASK = sa.text("task IS NOT NULL AND satisfied_at IS NULL AND resolved_at IS NULL")
OBJECT_TABLES = ("cases", "contacts", "courses")


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    now = datetime.now(UTC)
    if sqlite:
        now = now.replace(tzinfo=None)
    units = op.create_table(
        "units",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("units.id"), nullable=True, index=True),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("audit_pos", sa.Integer),
        sa.Column("audit_seq", sa.Integer),
        sa.Column("audit_hash", sa.String(64)),
    )
    op.bulk_insert(units, [{"id": 1, "name": "Danmark", "parent_id": None, "created_at": now}])
    if not sqlite:  # the root's id was given: the next unit's comes after it (PostgreSQL's sequence is not moved)
        op.execute("SELECT setval(pg_get_serial_sequence('units', 'id'), 1)")
    memberships = op.create_table(
        "memberships",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("unit_id", sa.Integer, sa.ForeignKey("units.id"), nullable=False, index=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("last_assigned_at", INSTANT, nullable=True),
        sa.UniqueConstraint("user_id", "unit_id", name="uq_memberships_user_unit"),
        sa.CheckConstraint("role IN ('member', 'lead')", name="ck_memberships_role"),
    )
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("role", sa.String))
    existing = list(bind.execute(sa.select(users.c.id, users.c.role).where(users.c.role != "timer")
                                 .order_by(users.c.id)))
    if existing:
        op.bulk_insert(memberships, [{"user_id": u.id, "unit_id": 1, "role": "lead" if u.role == "admin" else "member",
                                      "created_at": now} for u in existing])
    placement = op.create_table(
        "placement",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("rule", sa.String(16), nullable=False),
        sa.Column("unit_id", sa.Integer, sa.ForeignKey("units.id"), nullable=True),
        sa.Column("round_robin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.CheckConstraint("rule IN ('parent', 'creator', 'unit')", name="ck_placement_rule"),
    )
    op.bulk_insert(placement, [{"kind": "case", "rule": "creator", "unit_id": None, "round_robin": False},
                               {"kind": "contact", "rule": "parent", "unit_id": None, "round_robin": False},
                               {"kind": "course", "rule": "parent", "unit_id": None, "round_robin": False}])
    # Plain ADD COLUMN on every backend: SQLite's batch mode would rebuild the tables (and drop audit_log's
    # append-only triggers); the unit is checked by the engine, so these columns carry no foreign key.
    for table in OBJECT_TABLES:
        op.add_column(table, sa.Column("unit_id", sa.Integer, nullable=False, server_default=sa.text("1")))
        op.add_column(table, sa.Column("assignee_id", sa.Integer, nullable=True))
        op.add_column(table, sa.Column("failed_attempts", sa.Integer, nullable=False, server_default=sa.text("0")))
        op.create_index(f"ix_{table}_unit_state", table, ["unit_id", "state"])
        op.create_index(f"ix_{table}_assignee", table, ["assignee_id"])
    op.add_column("timers", sa.Column("unit_id", sa.Integer, nullable=True))
    op.add_column("timers", sa.Column("assignee_id", sa.Integer, nullable=True))
    timers = sa.table("timers", sa.column("unit_id", sa.Integer))
    bind.execute(sa.update(timers).values(unit_id=1))
    for name, first in (("ix_timers_worklist_unit", "unit_id"), ("ix_timers_worklist_assignee", "assignee_id")):
        op.create_index(name, "timers", [first, "status", "due_at", "id"], sqlite_where=OPEN_TASK,
                        postgresql_where=OPEN_TASK)
    op.add_column("audit_log", sa.Column("unit_id", sa.Integer, nullable=True))
    op.create_index("ix_audit_unit", "audit_log", ["unit_id", "seq"])
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("object_kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.Integer, nullable=False),
        #: note or attempt
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", INSTANT, nullable=False),
        sa.Index("ix_notes_object", "object_kind", "object_id", "id"),
        sa.CheckConstraint("kind IN ('note', 'attempt')", name="ck_notes_kind"),
    )
    if sqlite:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER notes_no_{verb.lower()} BEFORE {verb} ON notes "
                       f"BEGIN SELECT RAISE(ABORT, 'notes are append-only: {verb} refused'); END")
    else:
        op.execute("CREATE TRIGGER notes_no_change BEFORE UPDATE OR DELETE ON notes "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
        op.execute("CREATE TRIGGER notes_no_truncate BEFORE TRUNCATE ON notes "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER notes_no_update")
        op.execute("DROP TRIGGER notes_no_delete")
    else:
        op.execute("DROP TRIGGER notes_no_truncate ON notes")
        op.execute("DROP TRIGGER notes_no_change ON notes")
    op.drop_table("notes")
    op.drop_index("ix_audit_unit", "audit_log")
    op.drop_column("audit_log", "unit_id")
    for name in ("ix_timers_worklist_unit", "ix_timers_worklist_assignee"):
        op.drop_index(name, "timers")
    op.drop_column("timers", "assignee_id")
    op.drop_column("timers", "unit_id")
    for table in OBJECT_TABLES:
        op.drop_index(f"ix_{table}_assignee", table)
        op.drop_index(f"ix_{table}_unit_state", table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("failed_attempts")
            batch.drop_column("assignee_id")
            batch.drop_column("unit_id")
    op.drop_table("placement")
    op.drop_table("memberships")
    op.drop_table("units")
