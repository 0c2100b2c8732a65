"""Every workflow definition by kind, and the versions an object may have started under."""

from __future__ import annotations

from workflows import case, contact, course, person
from workflows.case import CASE
from workflows.contact import CONTACT
from workflows.course import COURSE
from workflows.definition import WorkflowDefinition
from workflows.operations import Operation
from workflows.profile import CalendarCount, Profile

WORKFLOWS: dict[str, WorkflowDefinition] = {w.kind: w for w in (CASE, CONTACT, COURSE)}
#: Definitions by their versioned name (``case@SST-mpox-7.1``): an object runs under the version it started with.
BY_NAME: dict[str, WorkflowDefinition] = {w.name: w for w in WORKFLOWS.values()}
#: How each kind shows, in the pages' navigation order: persons, then each workflow.
PROFILES: dict[str, Profile] = {p.kind: p for p in (case.PROFILE, contact.PROFILE, course.PROFILE, person.PROFILE)}
#: Every operation staff can take, each declared next to its workflow: the CLI's commands, the API's endpoints and
#: the pages' forms are made from these.
OPERATIONS: tuple[Operation, ...] = (*person.OPERATIONS, *case.OPERATIONS, *contact.OPERATIONS, *course.OPERATIONS)
BY_OPERATION: dict[str, Operation] = {op.name: op for op in OPERATIONS}
#: The CLI's group of a kind's operations (``vaccine`` for courses).
GROUPS: dict[str, str] = {kind: p.group for kind, p in PROFILES.items()}
#: Which operation does each staff task (by its timer's name), and how.
TASK_ACTIONS = {task.timer: (op, task) for op in OPERATIONS for task in op.tasks}
#: What the pages' navigation lists, in its order, with the link's name.
LISTS: dict[str, str] = {kind: p.title for kind, p in PROFILES.items()}


def linked_to(kind: str) -> dict[str, str]:
    """The kinds whose objects belong to a ``kind`` object, each with the column that says so (a case's contacts:
    ``{"contact": "case_id"}``), as their profiles declare."""
    return {p.kind: p.belongs_to[kind] for p in PROFILES.values() if kind in p.belongs_to}


#: What the calendar counts per day, by kind, as the profiles declare it (doses 2 due, last monitoring days).
CALENDAR: tuple[tuple[str, CalendarCount], ...] = tuple((p.kind, c) for p in PROFILES.values() for c in p.calendar)
