"""Running a declared operation, and where each kind's objects are listed: what the CLI, the HTTP API and the
pages share. Nothing here imports pydantic or the web framework, so a command line that runs an operation loads
neither (``entry.web.operations`` adds the request bodies)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from workflows.operations import Operation
from workflows.registry import PROFILES

if TYPE_CHECKING:
    from engine.core import Engine

#: Where the API takes a kind's objects: ``/api/cases``, ``/api/contacts``, ``/api/courses``, ``/api/persons``.
COLLECTIONS = {kind: profile.collection for kind, profile in PROFILES.items()}
#: What ``list`` lists (CLI, API and pages): ``persons`` -> ``person``.
LISTABLE = {plural: kind for kind, plural in COLLECTIONS.items()}


def run_operation(engine: Engine, op: Operation, values: Mapping[str, Any], *, actor: str,
                  object_id: str | None = None, if_version: int | None = None) -> dict[str, Any]:
    """Run the declared operation ``op`` with its parsed field ``values`` (``reason`` among them) as ``actor``: the
    engine authorizes, applies and audits in one transaction. Returns the object's view; raises what the engine
    and the operation's ``prepare`` raise (UsageError, RuleRefused, NotFound, Conflict)."""
    reason = values.get("reason") or None
    trigger, data = op.prepare(values)
    if op.kind == "person":  # a person's facts have no workflow
        if op.creates:
            return engine.add_person(**data, actor=actor, reason=reason)
        assert object_id is not None
        changes = {k: v for k, v in data.items() if v is not None}
        if op.verb == "correct":
            return engine.correct_person(object_id, changes=changes, actor=actor, reason=reason)
        return engine.update_person(object_id, changes=changes, actor=actor, reason=reason)
    assert trigger is not None
    if op.creates:
        data.pop("person", None)
        audit_reason = reason or (data.get(op.reason_from) if op.reason_from else None)
        return engine.open(op.kind, trigger, person=values["person"], data=data, actor=actor, reason=audit_reason)
    assert object_id is not None
    return engine.apply(object_id, trigger, data=data, actor=actor, reason=reason, expected_version=if_version,
                        kind=op.kind)
