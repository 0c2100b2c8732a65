"""Test helpers: the whole database's contents, for "nothing changed" assertions; common stories."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select

from engine.core import Engine
from persistence.database import Database
from persistence.models import Base


def contents(db: Database, *, reads: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order; ``reads`` False: but the read log's (``personal_reads``:
    a page that is shown again after a refusal shows the person's reference again, a read, issue 19 item 3)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if not reads and table.name == "personal_reads":
                continue
            found[table.name] = [
                tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key.columns))
            ]
    return found


def person(engine: Engine, ref: str = "REF-1", **flags: Any) -> str:
    return engine.add_person(ref=ref, actor="staff:test", **flags)["id"]


def suspected(engine: Engine, person_id: str, onset: str = "2025-03-01") -> str:
    return engine.open("case", "open", person=person_id, actor="staff:test", data={
        "onset": date.fromisoformat(onset), "symptoms": ["rash"], "criteria": ["msm"]})["id"]


def confirmed(engine: Engine, person_id: str, onset: str = "2025-03-01", pcr_on: str = "2025-03-03") -> str:
    case_id = suspected(engine, person_id, onset)
    engine.apply(case_id, "confirm", data={"pcr_on": date.fromisoformat(pcr_on)}, actor="staff:test")
    return case_id


def tasks_of(engine: Engine, object_id: str) -> list[tuple[str, str, bool]]:
    """The object's open tasks in the worklist: (task, due_at, overdue)."""
    return [(i["task"], i["due_at"], i["overdue"]) for i in engine.worklist() if i["object"] == object_id]


def last_entry(engine: Engine, object_id: str) -> dict[str, Any]:
    """The object's newest audit entry."""
    return engine.audit(entity=object_id)[-1]


def pk(object_id: str) -> int:
    """``"case-12"`` -> 12."""
    return int(object_id.rsplit("-", 1)[1])
