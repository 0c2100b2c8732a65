"""What staff can change, declared once per operation next to its workflow; every entry point derives from these.

An :class:`Operation` (``case confirm``) names its workflow's kind and trigger, its typed :class:`Field` s, the rule it
cites and the staff tasks it does. The CLI makes one command per operation (a field ``pcr_on`` is the option
``--pcr-on``), the HTTP API one endpoint with a request body of the same fields (operation id ``case_confirm``), the
web pages one form (labelled in Danish). Help texts name other fields with :func:`workflows.errors.field`, so each
entry point renders them in its own terms, as it renders refusals.

Pure: the standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from workflows.errors import FIELD_REF
from workflows.limits import text_limit

#: date (``YYYY-MM-DD``), text (one line), note (may span lines), choice (one of ``choices``), choices (a list of
#: them), flag (a yes/no switch), yesno (an answer that must be given: yes or no), count (a whole number within
#: ``bounds``), id (of an object of ``of``).
FieldType = Literal["date", "text", "note", "choice", "choices", "flag", "yesno", "count", "id"]


@dataclass(frozen=True)
class Field:
    """One value an operation takes.

    ``default`` applies when the value is not given; a flag whose default is ``None`` is three-way (set, unset, or
    unchanged). ``what`` is how a refusal to parse it names one value (``unknown exposure kind 'x'``).
    """

    name: str
    type: FieldType
    help: str = ""
    label_da: str = ""
    label_en: str = ""
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    #: ``count``: the lowest and highest accepted; ``choices``: (fewest items, None).
    bounds: tuple[int | None, int | None] = (None, None)
    #: ``id``: the kind of object it names (``person``).
    of: str | None = None
    what: str | None = None
    #: The key of the object's view that holds the field's current value (a change form is prefilled from it),
    #: when it is not the field's own name.
    shown_as: str | None = None

    @property
    def max_length(self) -> int | None:
        """The longest text accepted (``workflows.limits.TEXT_LIMITS``); None for a field that is not text."""
        return text_limit(self.name) if self.type in ("text", "note") else None

    @property
    def noun(self) -> str:
        return self.what or self.name.replace("_", " ")

    @property
    def label(self) -> str:
        """The Danish label (the pages' language), else the English one."""
        return self.label_da or self.label_en or self.name.replace("_", " ")


#: Every operation takes these besides its own fields: why (into the audit entry) and, for a change of an existing
#: object, the version it must still be at.
REASON = Field("reason", "note", "Why: goes into the audit entry.", label_da="Begrundelse", label_en="Reason")


@dataclass(frozen=True)
class Task:
    """A staff task (a deadline timer named ``timer``) this operation does: the worklist's button for it.

    With ``fixed`` values the button posts the operation at once; with ``fixed`` None it opens the form."""

    timer: str
    label: str
    fixed: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Offer:
    """Where a creating operation's form is offered: on the page of a ``kind`` object in one of ``states`` (any
    state when empty), prefilled with ``from_view`` (field: key of the object's view, ``id`` its own id) and
    ``fixed`` values."""

    kind: str
    states: tuple[str, ...] = ()
    from_view: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, str] = field(default_factory=dict)


def _passed_through(values: Mapping[str, Any]) -> dict[str, Any]:
    return dict(values)


@dataclass(frozen=True)
class Operation:
    """One change staff can make, by its CLI name (``case confirm``).

    ``trigger`` is the workflow's (None for a person's facts, which have no workflow); ``creates`` says it makes
    a new object (of the person named by its ``person`` field), otherwise it changes the object given by id.
    ``prepare(values)`` turns the parsed field values (``reason`` among them) into ``(trigger, data)``; the default
    passes the fields through under ``trigger``. ``reason_in_data`` puts the reason into the data too (the rules
    read it). It raises UsageError naming fields with ``field(...)``.
    """

    name: str
    kind: str
    trigger: str | None
    summary: str
    help: str
    fields: tuple[Field, ...] = ()
    rule: str | None = None
    creates: bool = False
    tasks: tuple[Task, ...] = ()
    offered: tuple[Offer, ...] = ()
    reason_help: str | None = None
    reason_in_data: bool = False
    #: Without a reason, the audit entry's reason is this data field's value (case open's second-case reason).
    reason_from: str | None = None
    #: The rules always refuse this operation without a reason (a correction, a clinician's assessment): the form
    #: marks it required, the API's body requires it.
    reason_required: bool = False
    #: The id argument's help (``The case's id (case-N).``) for a change of an existing object.
    id_help: str | None = None
    custom_prepare: Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]]] | None = None

    @property
    def operation_id(self) -> str:
        return self.name.replace(" ", "_")

    @property
    def group(self) -> str:
        return self.name.split(" ", 1)[0]

    @property
    def verb(self) -> str:
        return self.name.split(" ", 1)[1]

    @property
    def versioned(self) -> bool:
        """A change of a workflow object, which may be made on condition that it is still at a version
        (``if_version``); a person's facts are not versioned."""
        return not self.creates and self.trigger is not None

    @property
    def reason(self) -> Field:
        if self.reason_help is None and not self.reason_required:
            return REASON
        return Field("reason", "note", self.reason_help or REASON.help, label_da=REASON.label_da,
                     label_en=REASON.label_en, required=self.reason_required)

    def field(self, name: str) -> Field | None:
        """The declared field ``name`` (``reason`` included), or None."""
        if name == "reason":
            return self.reason
        return next((f for f in self.fields if f.name == name), None)

    def prepare(self, values: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The trigger and the data of this operation for the parsed ``values`` (its fields and ``reason``).

        Returns ``(trigger, data)``; raises UsageError when the values do not fit together."""
        data = {f.name: f.default if values.get(f.name) is None else values[f.name] for f in self.fields}
        if self.custom_prepare is not None:
            return self.custom_prepare({**data, "reason": values.get("reason")})
        if self.reason_in_data:
            data["reason"] = values.get("reason")
        return self.trigger, _passed_through(data)


def rendered(text: str, name_of: Callable[[str], str]) -> str:
    """A help text or message with each field reference (``field("pcr_on")``) named by ``name_of``."""
    return FIELD_REF.sub(lambda m: name_of(m.group(1)), text)
