"""The operations that change something, for the HTTP API, its OpenAPI schema and the web forms: each one's request
body is made from its declaration (``workflows.registry.OPERATIONS``), as the CLI's command is.

A body's fields are the declared fields (``pcr_on``; the CLI's ``--pcr-on``) with their types, bounds and help;
types do the parsing the CLI's ``entry.parsing`` does: a date is ``YYYY-MM-DD``, a choice one of its listed values.
Every body also takes ``reason``, and a change of an existing object ``if_version``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model
from pydantic import Field as Describe

from engine.core import TASK_OUTCOMES, Engine
from entry.operations import run_operation
from entry.parsing import MAX_NOTE
from workflows.errors import as_declared
from workflows.limits import MAX_ID
from workflows.operations import Field, rendered
from workflows.operations import Operation as Declared
from workflows.registry import OPERATIONS as DECLARED
from workflows.registry import WORKFLOWS

Outcome = Literal[TASK_OUTCOMES]  # type: ignore[valid-type]


# ---- request bodies, from the declared fields ------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _annotation(field: Field) -> Any:
    """The body's type of a declared field: a date, a listed choice, a list of them, a bool, an int, or text."""
    if field.type in ("choice", "choices"):
        one: Any = Literal[field.choices]  # type: ignore[valid-type]
        return list[one] if field.type == "choices" else one
    return {"date": date, "flag": bool, "yesno": bool, "count": int}.get(field.type, str)


def body_field(field: Field, help_of: Mapping[str, str] | None = None) -> tuple[Any, Any]:
    """``(annotation, pydantic Field)`` of one declared field: required or optional, bounded, described."""
    kind = _annotation(field)
    limits: dict[str, Any] = {}
    low, high = field.bounds
    if field.type == "choices":
        if low:
            limits["min_length"] = low
    elif low is not None:
        limits["ge"] = low
    if field.type == "count" and high is not None:
        limits["le"] = high
    if field.max_length is not None:
        limits["max_length"] = field.max_length
        if field.required:
            limits["min_length"] = 1
    description = rendered(field.help, as_declared) or None
    if field.required:
        return kind, Describe(description=description, **limits)
    if field.type == "choices":
        return kind, Describe(default_factory=list, description=description, **limits)
    if field.default is not None:
        return kind, Describe(field.default, description=description, **limits)
    return kind | None, Describe(None, description=description, **limits)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", " ").replace("_", " ").split())


def body_model(op: Declared) -> type[BaseModel]:
    """The request body of ``op``: its fields, ``reason`` and (a change of an existing object) ``if_version``."""
    fields: dict[str, Any] = {"reason": body_field(op.reason) if op.reason.required else (
        str | None, Describe(None, description=rendered(op.reason.help, as_declared), max_length=MAX_NOTE))}
    if op.versioned:
        fields["if_version"] = (int | None, Describe(None, ge=1, le=MAX_ID, description="Refuse (409) unless the "
                                                     "object is still at this version."))
    fields.update({f.name: body_field(f) for f in op.fields})
    model: type[BaseModel] = create_model(_camel(op.operation_id), __base__=Body, __doc__=op.summary, **fields)
    return model


class TaskResolve(Body):
    outcome: Outcome = Describe(description="What happened: done-late (a missed task done after its deadline), "
                                            "not-reachable, declined or not-needed.")
    reason: str = Describe(description="What happened, in words: goes onto the task and into the audit entry.",
                           min_length=1, max_length=MAX_NOTE)


# ---- the operations ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """A declared operation with its request body: what the API's endpoint and the page's form take."""

    declared: Declared
    body: type[BaseModel]

    @property
    def name(self) -> str:
        return self.declared.name

    @property
    def kind(self) -> str:
        return self.declared.kind

    @property
    def trigger(self) -> str | None:
        return self.declared.trigger

    @property
    def summary(self) -> str:
        return self.declared.summary

    @property
    def creates(self) -> bool:
        return self.declared.creates

    @property
    def operation_id(self) -> str:
        return self.declared.operation_id

    @property
    def verb(self) -> str:
        return self.declared.verb

    def call(self, engine: Engine, actor: str, body: Any, object_id: str | None = None) -> dict[str, Any]:
        """Run it as ``actor`` with a validated ``body``: the engine authorizes, applies and audits in one
        transaction."""
        values = body.model_dump(exclude={"if_version"})
        return run_operation(engine, self.declared, values, actor=actor, object_id=object_id,
                             if_version=getattr(body, "if_version", None))


OPERATIONS: tuple[Operation, ...] = tuple(Operation(op, body_model(op)) for op in DECLARED)
BY_NAME = {op.name: op for op in OPERATIONS}


def transitions_of(kind: str) -> list[Operation]:
    return [op for op in OPERATIONS if op.kind == kind and not op.creates]


def allowed_now(kind: str, state: str) -> list[Operation]:
    """The operations a person can take on an object of ``kind`` in ``state``, as the workflow's table has them.
    A row that neither moves nor records anything only exists to refuse with its rule (no third dose, §6.3), so
    it is not offered."""
    definition = WORKFLOWS[kind]
    found = []
    for op in transitions_of(kind):
        assert op.trigger is not None
        spec = definition.spec(op.trigger, state)
        if spec is None or spec.timed or spec.internal:
            continue
        if spec.dest is not None or spec.effect is not None:
            found.append(op)
    return found
