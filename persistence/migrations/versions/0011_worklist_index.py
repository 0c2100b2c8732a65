"""The worklist, paged (issue 15): partial indexes over open tasks, in the worklist's order.

``due --limit N --after CURSOR`` and ``GET /api/due?limit=N&after=CURSOR`` read each status's range of open tasks
(a task not done and not resolved) in the order (due instant, timer id), unfiltered, by object kind or by timer
name; done and resolved tasks, and the timers without a task (most of them), are not in these indexes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: Frozen: a copy of the predicate, not the models' (this migration imports no live code).
OPEN_TASK = sa.text("task IS NOT NULL AND satisfied_at IS NULL AND resolved_at IS NULL")
INDEXES = {
    "ix_timers_worklist": ["status", "due_at", "id"],
    "ix_timers_worklist_kind": ["object_kind", "status", "due_at", "id"],
    "ix_timers_worklist_task": ["name", "status", "due_at", "id"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "timers", columns, sqlite_where=OPEN_TASK, postgresql_where=OPEN_TASK)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="timers")
