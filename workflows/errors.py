"""The one exception hierarchy of mpoxflow.

Every branch carries the exit status the command line returns for it (``../shared/CLI.md``):
2 wrong usage, 3 refused by a rule, 4 no such object, 5 conflict. Messages say what is wrong, cite the
rule where one applies, and say what to do next. They name internal ids only, never personal data.
"""

from __future__ import annotations


class MpoxflowError(Exception):
    """Root of every error mpoxflow raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule

    def __str__(self) -> str:
        return self.message


class UsageError(MpoxflowError):
    """The request itself is malformed: an impossible date, an unknown option value, a missing field."""

    exit_code = 2


class RuleRefused(MpoxflowError):
    """A guideline rule refuses the request (a guard, a closed window, a missing consent)."""

    exit_code = 3


class GuardRefused(RuleRefused):
    """A transition's guard refused; ``rule`` names the section that decides."""


class TriggerNotAllowed(RuleRefused):
    """The trigger does not exist in the object's current state."""

    def __init__(self, object_id: str, trigger: str, state: str, allowed: list[str], *, rule: str | None = None):
        allowed_text = ", ".join(sorted(allowed)) if allowed else "nothing: the state is final"
        cited = f" ({rule})" if rule else ""
        super().__init__(
            f"{object_id} is {state}: '{trigger}' is not allowed in that state{cited}. Allowed now: {allowed_text}.",
            rule=rule,
        )
        self.object_id = object_id
        self.trigger = trigger
        self.state = state


class NotFound(MpoxflowError):
    """No object by that id."""

    exit_code = 4

    def __init__(self, object_id: str, kind: str | None = None, *, hint: str | None = None) -> None:
        what = kind or "object"
        super().__init__(f"No {what} by the id of '{object_id}' was found. {hint or 'Check the id.'}")
        self.object_id = object_id


class Conflict(MpoxflowError):
    """Someone else changed the object meanwhile; nothing was written. Reload and try again."""

    exit_code = 5


class NotPermitted(RuleRefused):
    """The actor's role does not allow the change (an auditor reads; only an admin manages users), or the actor
    is not a user at all. ``user`` is the user's internal id when there is one (the refusal is audited there)."""

    def __init__(self, message: str, *, actor: str, role: str | None, user: int | None, command: str,
                 target: str | None) -> None:
        super().__init__(message)
        self.actor = actor
        self.role = role
        self.user = user
        self.command = command
        self.target = target



class NotAuthenticated(RuleRefused):
    """A login failed (wrong name or password), or a session or API token is unknown, expired or revoked."""


class TooManyAttempts(NotAuthenticated):
    """Too many failed logins for a name or from an address in a short time: wait ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
