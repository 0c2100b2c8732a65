"""Every workflow definition by kind, and the versions an object may have started under."""

from __future__ import annotations

from workflows import case, contact, course, person
from workflows.case import CASE
from workflows.contact import CONTACT
from workflows.course import COURSE
from workflows.definition import WorkflowDefinition
from workflows.operations import Operation

WORKFLOWS: dict[str, WorkflowDefinition] = {w.kind: w for w in (CASE, CONTACT, COURSE)}
#: Definitions by their versioned name (``case@SST-mpox-7.1``): an object runs under the version it started with.
BY_NAME: dict[str, WorkflowDefinition] = {w.name: w for w in WORKFLOWS.values()}
#: Every operation staff can take, each declared next to its workflow: the CLI's commands, the API's endpoints and
#: the pages' forms are made from these.
OPERATIONS: tuple[Operation, ...] = (*person.OPERATIONS, *case.OPERATIONS, *contact.OPERATIONS, *course.OPERATIONS)
BY_OPERATION: dict[str, Operation] = {op.name: op for op in OPERATIONS}
#: The CLI's group of a kind's operations (``vaccine`` for courses).
GROUPS: dict[str, str] = {op.kind: op.group for op in OPERATIONS}
#: Which operation does each staff task (by its timer's name), and how.
TASK_ACTIONS = {task.timer: (op, task) for op in OPERATIONS for task in op.tasks}
#: What the pages' navigation lists, in its order, with the link's name.
LISTS: dict[str, str] = {"case": "Cases", "contact": "Contacts", "course": "Vaccinations", "person": "Persons"}
