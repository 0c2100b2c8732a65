"""Every workflow definition by kind, and the versions an object may have started under.

``WORKFLOWS`` holds the product's definition of each kind (the guideline's real version: what the pages' forms, the
operations and the diagrams of a kind are made from). ``BY_NAME`` holds every definition loaded, side by side: the
product's, and the ones a deployment loads with :func:`load` (a later revision or a new guideline version, issue 20).
An object runs under the one it records (``contact@SST-mpox-7.1``); which one a new object starts under is the
deployment's choice (``engine.definitions``)."""

from __future__ import annotations

import importlib

from workflows import case, contact, course, person
from workflows.case import CASE
from workflows.contact import CONTACT
from workflows.course import COURSE
from workflows.definition import WorkflowDefinition, not_loaded
from workflows.operations import Operation
from workflows.profile import CalendarCount, Profile

WORKFLOWS: dict[str, WorkflowDefinition] = {w.kind: w for w in (CASE, CONTACT, COURSE)}


class _Loaded(dict[str, WorkflowDefinition]):
    """The definitions loaded, by name; one asked for that is not loaded is refused with what to do (an object
    recorded under a definition this process does not load cannot be run, and is never run under another)."""

    def __missing__(self, name: str) -> WorkflowDefinition:
        raise not_loaded(name)


#: Definitions by their versioned name (``case@SST-mpox-7.1``): an object runs under the version it started with.
BY_NAME: dict[str, WorkflowDefinition] = _Loaded({w.name: w for w in WORKFLOWS.values()})
#: The product's own definitions' names: never unloaded.
SHIPPED = frozenset(BY_NAME)
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


def register(definition: WorkflowDefinition) -> WorkflowDefinition:
    """Load ``definition`` beside the others (idempotent for the same object). Refuses a second, different
    definition of a name already loaded, a kind the product has no workflow of, and a definition that migrates
    from one not loaded (its objects could not be migrated)."""
    known = BY_NAME.get(definition.name)
    if known is definition:
        return definition
    if known is not None:
        raise ValueError(f"another definition named {definition.name} is already loaded: a changed definition "
                         "needs a new revision or version")
    if definition.kind not in WORKFLOWS:
        raise ValueError(f"{definition.name} is a workflow of kind {definition.kind}, which mpoxflow has no "
                         f"tables for: use one of {', '.join(WORKFLOWS)}")
    origin = definition.migrates_from
    if origin is not None and BY_NAME.get(origin.name) is not origin:
        raise ValueError(f"{definition.name} migrates from {origin.name}, which is not loaded: load it first")
    BY_NAME[definition.name] = definition
    return definition


def unregister(name: str) -> None:
    """Unload a definition a deployment (or a test) loaded; the product's own stay."""
    if name in SHIPPED:
        raise ValueError(f"{name} is one of the product's own definitions: it stays loaded")
    BY_NAME.pop(name, None)


def load(spec: str) -> list[str]:
    """Load the definitions named by ``spec``: ``module:ATTRIBUTE`` entries separated by commas (``MPOXFLOW_
    DEFINITIONS``), each attribute a :class:`WorkflowDefinition` or a sequence of them. Returns the names loaded.
    Raises ValueError saying which entry is wrong and why."""
    names: list[str] = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        module_name, _, attribute = entry.partition(":")
        if not module_name or not attribute:
            raise ValueError(f"{entry!r}: name a definition as module:ATTRIBUTE (e.g. mydefs.contact:CONTACT_R2)")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"{entry!r}: cannot be loaded ({error})") from error
        for definition in found if isinstance(found, (list, tuple)) else [found]:
            if not isinstance(definition, WorkflowDefinition):
                raise ValueError(f"{entry!r} is not a workflow definition")
            names.append(register(definition).name)
    return names


def definitions_of(kind: str) -> list[WorkflowDefinition]:
    """Every loaded definition of ``kind``, the product's first, then by name."""
    return sorted((d for d in BY_NAME.values() if d.kind == kind), key=lambda d: (d.name not in SHIPPED, d.name))
