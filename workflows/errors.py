"""The one exception hierarchy of mpoxflow.

Every branch carries the exit status the command line returns for it (``../shared/CLI.md``: 2 wrong usage, 3
refused by a rule, 4 no such object, 5 conflict), the HTTP status the API answers with, and an error code. Messages
say what is wrong, cite the rule where one applies, and say what to do next. They name internal ids only, never
personal data.

A refusal is structured: besides its message it carries its ``rule``, a message ``key`` (stable, for translations
and for callers that branch on it) and its ``params``; and it names the fields it is about by their declared name,
written ``field("assessed_by")`` inside the message. Each entry point renders those names in its own terms
(:meth:`MpoxflowError.render`): the CLI says ``--assessed-by``, the API ``assessed_by``, a page the field's label.
So no command-line flag is written in workflows/ or engine/.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any

#: A declared field named inside a message (see :func:`field`).
FIELD_REF = re.compile(r"\u27e6([a-z_]+)\u27e7")


def field(name: str) -> str:
    """A reference to the declared field ``name`` inside a message, rendered by each entry point in its terms."""
    return f"\u27e6{name}\u27e7"


class Because(str):
    """A refusal's text (a ``str``: every caller that reads a refusal as text keeps doing so) with what it is made
    of: its ``template`` (English, with ``%(name)s`` placeholders and field references) and its ``values`` (plain
    text and numbers, dates as ISO strings, lists of declared values). A page says it in its own language: the
    template is a catalog entry of context ``refusal`` (``entry.web.i18n.extract_refusals``)."""

    template: str
    values: dict[str, Any]

    def __new__(cls, template: str, values: Mapping[str, Any]) -> Because:
        plain = {k: _plain(v) for k, v in values.items()}
        text = template % {k: getattr(values[k], "sep", ", ").join(map(str, v)) if isinstance(v, list)
                           else str(values[k]) if isinstance(v, dict) else v for k, v in plain.items()}
        made = super().__new__(cls, text)
        made.template = template
        made.values = plain
        return made


class Joined(list[Any]):
    """A list value of a refusal that its English text joins with ``sep`` (``high|medium|low``); kept as a plain
    list in the refusal's values (a page joins it its own way)."""

    def __init__(self, items: Any, sep: str) -> None:
        super().__init__(items)
        self.sep = sep


def _plain(value: Any) -> Any:
    """A value as a refusal keeps it: text, a number, an ISO date, a list of those, or a part made with ``because``
    (its ``{"template", "values"}``)."""
    if isinstance(value, Because):
        return {"template": value.template, "values": dict(value.values)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def because(template: str, **values: object) -> Because:
    """A refusal: ``template % values`` (lists joined with ", "), keeping ``template`` and ``values`` for a page to
    translate. ``template`` is a literal (the catalog's extractor reads it), English, cites no rule."""
    return Because(template, values)


def phrase(text: str) -> str:
    """A phrase given to a refusal as a value (``the %(what)s date``): unchanged here, marked for the catalog
    (context ``refusal``) so a page translates it."""
    return text


def refusal_params(text: str) -> dict[str, Any]:
    """The ``template`` and ``values`` a refusal's params carry (none for a plain text)."""
    if isinstance(text, Because):
        return {"template": text.template, "values": dict(text.values)}
    return {}


def as_declared(name: str) -> str:
    """The API's rendering of a field: its declared name (``assessed_by``)."""
    return name


class MpoxflowError(Exception):
    """Root of every error mpoxflow raises on purpose."""

    exit_code = 1
    http_status = 500
    code = "internal"

    def __init__(self, message: str, *, rule: str | None = None, key: str | None = None,
                 params: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        #: The message with its field references (``field(...)``) unrendered.
        self.template = message
        self.rule = rule
        self.key = key or self.code
        self.params: dict[str, Any] = {**refusal_params(message), **dict(params or {})}

    @property
    def message(self) -> str:
        """The message with every field named as declared (the API's terms)."""
        return self.render(as_declared)

    @property
    def fields(self) -> tuple[str, ...]:
        """The declared fields the message names, in order."""
        return tuple(FIELD_REF.findall(self.template))

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with each field named by ``name_of`` (the CLI's flag, the page's label)."""
        return FIELD_REF.sub(lambda m: name_of(m.group(1)), self.template)

    def __str__(self) -> str:
        return self.message


class UsageError(MpoxflowError):
    """The request itself is malformed: an impossible date, an unknown option value, a missing field."""

    exit_code = 2
    http_status = 422
    code = "usage"


class RuleRefused(MpoxflowError):
    """A guideline rule refuses the request (a guard, a closed window, a missing consent)."""

    exit_code = 3
    http_status = 409
    code = "refused"


class GuardRefused(RuleRefused):
    """A transition's guard refused; ``rule`` names the section that decides."""


class TriggerNotAllowed(RuleRefused):
    """The trigger does not exist in the object's current state."""

    def __init__(self, object_id: str, trigger: str, state: str, allowed: list[str], *, rule: str | None = None):
        allowed_text = ", ".join(sorted(allowed)) if allowed else "nothing: the state is final"
        cited = f" ({rule})" if rule else ""
        super().__init__(
            f"{object_id} is {state}: '{trigger}' is not allowed in that state{cited}. Allowed now: {allowed_text}.",
            rule=rule, key="trigger_not_allowed",
            params={"object": object_id, "trigger": trigger, "state": state, "allowed": sorted(allowed)},
        )
        self.object_id = object_id
        self.trigger = trigger
        self.state = state


class NotFound(MpoxflowError):
    """No object by that id."""

    exit_code = 4
    http_status = 404
    code = "not_found"

    def __init__(self, object_id: str, kind: str | None = None, *, hint: str | None = None) -> None:
        what = kind or "object"
        super().__init__(f"No {what} by the id of '{object_id}' was found. {hint or 'Check the id.'}",
                         params={"object": object_id, "kind": kind})
        self.object_id = object_id


class Conflict(MpoxflowError):
    """Someone else changed the object meanwhile; nothing was written. Reload and try again."""

    exit_code = 5
    http_status = 409
    code = "conflict"


class NotPermitted(RuleRefused):
    """The actor's role does not allow the change (an auditor reads; only an admin manages users), or the actor
    is not a user at all. ``user`` is the user's internal id when there is one (the refusal is audited there)."""

    http_status = 403
    code = "not_permitted"

    def __init__(self, message: str, *, actor: str, role: str | None, user: int | None, command: str,
                 target: str | None) -> None:
        super().__init__(message)
        self.actor = actor
        self.role = role
        self.user = user
        self.command = command
        self.target = target


class OutsideUnits(NotPermitted):
    """The object belongs to a unit outside the user's units and the units below them (issue 17): acting on it is
    refused; reading it needs a reason (breaking the glass), which is audited."""

    code = "outside_units"


class NotAuthenticated(RuleRefused):
    """A login failed (wrong name or password), or a session or API token is unknown, expired or revoked."""

    http_status = 401
    code = "not_authenticated"


class TooManyAttempts(NotAuthenticated):
    """Too many failed logins for a name or from an address in a short time: wait ``retry_after`` seconds."""

    http_status = 429
    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, params={"retry_after": retry_after})
        self.retry_after = retry_after


class DefinitionError(Exception):
    """A workflow definition is not sound (``WorkflowDefinition.check``): it cannot be built, so a module that
    declares one cannot be imported. A programmer's error, never a user's: it names the definition and every
    problem found."""

    def __init__(self, definition: str, problems: Iterable[str]) -> None:
        self.definition = definition
        self.problems = tuple(problems)
        super().__init__(f"workflow definition {definition} refused: " + "; ".join(self.problems))

