"""The web application: server-rendered pages (Jinja2) over the same engine and the same operations as the API.

Forms are drawn from the operations' request models; what a form posts is validated by the same model and applied
by the same ``Operation.call``. A refusal re-renders the page with the engine's message and the rule it cites,
and the values typed. Every form carries the session's CSRF token.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from pydantic import ValidationError
from starlette.datastructures import FormData

from engine.accounts import Accounts, Login
from engine.core import ACTING_ROLES, ADMIN_ROLES, TASK_OUTCOMES, Engine
from engine.notes import ATTEMPT_KINDS, CHANNELS, HARD_TO_REACH_AFTER, NOTE_KINDS, OUTCOMES
from engine.queries import last_day as worklist_last_day
from engine.units import Scope, UnitTree, scope_of
from engine.views import instant
from entry.operations import COLLECTIONS, LISTABLE
from entry.web import diagram, i18n
from entry.web.app import (
    CSRF_FIELD,
    SESSION_COOKIE,
    check_csrf,
    clear_session_cookie,
    client_address,
    engine_dependency,
    http_status,
    login_dependency,
    set_session_cookie,
)
from entry.web.operations import (
    BY_NAME,
    OPERATIONS,
    Operation,
    TaskResolve,
    allowed_now,
    transitions_of,
)
from persistence.repository import Repository, parse_id
from scheduler import firing
from workflows.calendar import DANISH, to_local
from workflows.errors import (
    FIELD_REF,
    GuardRefused,
    MpoxflowError,
    NotAuthenticated,
    NotFound,
    OutsideUnits,
    UsageError,
)
from workflows.limits import shown
from workflows.operations import Field as DeclaredField
from workflows.operations import rendered
from workflows.registry import BY_NAME as DEFINITIONS
from workflows.registry import CALENDAR, LISTS, TASK_ACTIONS, WORKFLOWS


async def request_language(request: Request) -> str:
    """The language of the request's page (``entry.web.i18n``), set for the request: the user's stored choice,
    else the browser's, else Danish. The session is read once per request (``engine_dependency`` keeps it)."""
    login = getattr(request.state, "login", None)
    if login is None and request.cookies.get(SESSION_COOKIE) and not hasattr(request.state, "login"):
        with contextlib.suppress(MpoxflowError):
            await engine_dependency(request)
        login = getattr(request.state, "login", None)
    return i18n.activate(i18n.language_of(getattr(login, "language", None), request.headers.get("accept-language")))


router = APIRouter(include_in_schema=False, dependencies=[Depends(request_language)])
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
i18n.install(templates.env)
_ = i18n.gettext
LOGIN_CSRF_COOKIE = "mpoxflow_login_csrf"
CREATING = {op.operation_id: op for op in OPERATIONS if op.creates}
#: The navigation's lists, from the registry: (link, name).
NAV = [(f"/list/{COLLECTIONS[kind]}", name) for kind, name in LISTS.items()]
#: The lists' headings (msgids).
LIST_TITLES = {"cases": i18n.N_("Cases"), "contacts": i18n.N_("Close contacts"),
               "courses": i18n.N_("Vaccination courses (Imvanex)"), "persons": i18n.N_("Persons")}
Listed = Literal[tuple(LISTABLE)]  # type: ignore[valid-type]
Kind = Literal[tuple(WORKFLOWS)]  # type: ignore[valid-type]

# ---- Danish formats ------------------------------------------------------------------------------------------


def _when(value: Any) -> datetime | date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date):
        return value
    text = str(value)
    return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)


def dk_date(value: Any) -> str:
    """``24.11.2026``: the Danish way of writing a date."""
    when = _when(value)
    if when is None:
        return "–"
    if isinstance(when, datetime):
        when = to_local(when).date()
    return when.strftime("%d.%m.%Y")


def dk_time(value: Any) -> str:
    """``24.11.2026 kl. 14.30``: a Danish date and local time."""
    when = _when(value)
    if when is None:
        return "–"
    if not isinstance(when, datetime):
        return dk_date(when)
    return to_local(when).strftime("%d.%m.%Y kl. %H.%M")  # the Danish format, on the English pages too


def last_day(due_at: datetime) -> tuple[date, bool]:
    """The last day a deadline covers (the engine's rule, ``engine.queries.last_day``), and whether it ends at that
    day's end: a window closing at 00:00 local on D+1 covers D to its end (``senest D``); a deadline at any other
    hour ends on its own day, at that time."""
    return worklist_last_day(due_at), to_local(due_at).time() == datetime.min.time()


def _day_name(day: date, today: date | None) -> str:
    if today is not None and day == today:
        return _("today")
    if today is not None and day == today + timedelta(days=1):
        return _("tomorrow")
    return day.strftime("%d.%m.%Y")


def deadline_text(value: Any, now: Any = None) -> str:
    """A deadline as the last day it covers: ``senest 01.07.2025``, ``senest i dag``; a deadline at another hour
    than midnight with its time (``senest i morgen kl. 14.30``)."""
    when = _when(value)
    if not isinstance(when, datetime):
        return dk_date(when)
    current = _when(now)
    today = to_local(current).date() if isinstance(current, datetime) else None
    day, whole = last_day(when)
    text = _day_name(day, today)
    if not whole:
        text += " " + _("at %(time)s") % {"time": to_local(when).strftime("%H.%M")}
    return _("by %(day)s") % {"day": text}


def deadline(value: Any, now: Any = None) -> Markup:
    """:func:`deadline_text` in a ``<time>`` whose title is the instant itself (shown on hover)."""
    when = _when(value)
    if not isinstance(when, datetime):
        return Markup(escape(dk_date(when)))
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        instant(when), _("closes %(instant)s") % {"instant": dk_time(when)}, deadline_text(when, now))


def _span(seconds: int) -> str:
    hours = abs(seconds) // 3600
    if hours >= 24:
        return _("%(days)d d %(hours)d h") % {"days": hours // 24, "hours": hours % 24}
    return _("%(hours)d h %(minutes)d min") % {"hours": hours, "minutes": abs(seconds) % 3600 // 60}


def left(due_at: Any, now: datetime) -> str:
    """Time left until a deadline (``2 d 3 t tilbage``), or how long it is overdue (``overskredet med 5 t``)."""
    when = _when(due_at)
    assert isinstance(when, datetime)
    seconds = int((when - now).total_seconds())
    if seconds > 0:
        return _("%(span)s left") % {"span": _span(seconds)}
    return _("overdue by %(span)s") % {"span": _span(seconds)}


def dk_dates(text: Any) -> str:
    """Every ISO date in a text (a task, a message) written the Danish way."""
    return ISO_DATE.sub(lambda m: f"{m[3]}.{m[2]}.{m[1]}", str(text))


#: The ways a date may be typed: ``24.11.2026``, ``24-11-2026``, ``24/11/2026`` (day first, one or two digits),
#: and ISO ``2026-11-24``.
DANISH_DATE = re.compile(r"^(\d{1,2})[.\-/](\d{1,2})[.\-/](\d{4})$")
ISO_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def parse_dk_date(text: str) -> date | None:
    """A typed date (``24.11.2026``, ``24.1.2026``, ``2026-11-24``), or None when it is not a real date."""
    raw = text.strip()
    found = DANISH_DATE.match(raw)
    try:
        if found:
            return date(int(found[3]), int(found[2]), int(found[1]))
        found = ISO_DAY.match(raw)
        if found:
            return date(int(found[1]), int(found[2]), int(found[3]))
    except ValueError:
        return None
    return None


def shown_date(value: Any) -> str:
    """A date field's value as its input shows it: ``dd.mm.åååå`` (what was typed, when it could not be read)."""
    if value is None or value == "":
        return ""
    if isinstance(value, date):
        return value.strftime("%d.%m.%Y")
    text = str(value)
    day = parse_dk_date(text) if ISO_DAY.match(text) else None
    return day.strftime("%d.%m.%Y") if day is not None else text


ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b(?!T)")
templates.env.filters["dkdates"] = dk_dates
templates.env.filters["dkdate"] = dk_date
templates.env.filters["dktime"] = dk_time
templates.env.filters["deadline"] = deadline
templates.env.filters["state"] = i18n.state
templates.env.filters["term"] = i18n.term
templates.env.filters["trigger"] = i18n.trigger
templates.env.filters["opname"] = i18n.operation
templates.env.filters["fact"] = i18n.fact
templates.env.filters["task"] = i18n.task
WEEKDAYS = (i18n.N_("Mon"), i18n.N_("Tue"), i18n.N_("Wed"), i18n.N_("Thu"), i18n.N_("Fri"), i18n.N_("Sat"),
            i18n.N_("Sun"))

OBJECT_ID = re.compile(r"^(person|case|contact|course)-\d+$")
INSTANT_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}T")


def fact_value(value: Any) -> Markup:
    """A fact as an object's page shows it: dates ``dd.mm.åååå``, instants with their time, ids as links, yes
    and no, declared values (exposure kinds, symptoms...) in the page's language, records as ``name value``."""
    if value is True or value is False:
        return Markup(escape(i18n.term("yes" if value else "no")))
    if value is None or value == "":
        return Markup("–")
    if isinstance(value, str):
        if ISO_DAY.match(value):
            return Markup(escape(dk_date(value)))
        if INSTANT_TEXT.match(value):
            return Markup(escape(dk_time(value)))
        if OBJECT_ID.match(value):
            return Markup('<a href="/objects/{0}">{0}</a>').format(value)
        return Markup(escape(i18n.term(value)))
    if isinstance(value, dict):
        return Markup(" · ").join(Markup("{} {}").format(i18n.fact(str(k)), fact_value(v))
                                  for k, v in value.items() if v not in (None, ""))
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, dict) for v in value):
            return Markup("").join(Markup("<div>{}</div>").format(fact_value(v)) for v in value)
        return Markup(", ").join(fact_value(v) for v in value)
    return Markup(escape(str(value)))


templates.env.filters["fact_value"] = fact_value

# ---- the audit log's machine texts in the page's language ------------------------------------------------------
# The engine writes its own actors and reasons in English (they are hash-chained history and never change); a page
# recognises their known shapes and says them in its language. Anything else (a reason staff typed) is as typed.

_OBJECT = r"(?:person|case|contact|course|user)-\d+"
_NAME = r"[a-z][a-z0-9_]*"
_INSTANT = r"\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?"
#: What the engine's timers write as an entry's reason (engine/firing.py).
TIMER_REASONS = (
    ("missed", re.compile(rf"missed: the task '(?P<task>.*)' was not done by its deadline (?P<when>{_INSTANT})",
                          re.DOTALL)),
    ("due", re.compile(rf"due (?P<when>{_INSTANT})")),
    ("skipped", re.compile(r"skipped: (?P<note>.*)", re.DOTALL)),
    ("parked", re.compile(r"parked as failed after (?P<attempts>\d+) attempts: (?P<error>.*)", re.DOTALL)),
)
#: What the engine writes as the reason of a change another object's change made (engine/commands.py), and as a
#: task's resolution when it was recorded after its deadline.
CASCADE_REASON = re.compile(rf"from (?P<object>{_OBJECT}): (?P<trigger>{_NAME})")
LATE_RESOLUTION = re.compile(rf"recorded late \((?P<object>{_OBJECT}): (?P<state>{_NAME})\)")


def _instant_text(text: str) -> str:
    try:
        return dk_time(datetime.fromisoformat(text))
    except ValueError:
        return text


def actor_text(actor: Any) -> str:
    """Who made an entry: a timer (``timer:phone_notification_due``) by its name in the page's language
    (``Tidsfrist: telefonisk anmeldelse til STPS``); a user by their name, as it is."""
    if not isinstance(actor, str):
        return "" if actor is None else str(actor)
    kind, _sep, name = actor.partition(":")
    if kind == "timer" and re.fullmatch(_NAME, name):
        return _("Deadline: %(timer)s") % {"timer": i18n.trigger(name)}
    return actor


def reason_text(reason: Any, actor: Any = None) -> str:
    """An entry's reason (or a task's resolution) in the page's language when the engine wrote it (a timer's
    "missed"/"due"/"skipped"/"parked", a change another object's change made, a task recorded late), with its
    instants the Danish way and its task text translated; a reason staff typed as it was typed. ``actor``: the
    entry's, when known (a timer's reasons are only recognised on a timer's entries)."""
    if not isinstance(reason, str) or not reason:
        return "" if reason is None else str(reason)
    by_timer = actor is None or (isinstance(actor, str) and actor.startswith("timer:"))
    if by_timer:
        for shape, pattern in TIMER_REASONS:
            found = pattern.fullmatch(reason)
            if found is None:
                continue
            if shape == "missed":
                return _("missed: the task “%(task)s” was not done by its deadline %(when)s") % {
                    "task": i18n.task(found["task"]), "when": _instant_text(found["when"])}
            if shape == "due":
                return _("due %(when)s") % {"when": _instant_text(found["when"])}
            if shape == "skipped":
                return _("skipped: %(note)s") % {"note": dk_dates(found["note"])}
            return _("parked as failed after %(attempts)s attempts: %(error)s") % {
                "attempts": found["attempts"], "error": found["error"]}
    found = CASCADE_REASON.fullmatch(reason)
    if found is not None:
        return _("from %(object)s: %(trigger)s") % {"object": found["object"],
                                                    "trigger": i18n.trigger(found["trigger"])}
    found = LATE_RESOLUTION.fullmatch(reason)
    if found is not None:
        return _("recorded late (%(object)s: %(state)s)") % {"object": found["object"],
                                                             "state": i18n.state(found["state"])}
    return reason


def duration_text(seconds: Any) -> str:
    """A number of seconds as days, hours and minutes (``1 d 2 t 5 min``); under a minute in seconds."""
    try:
        total = abs(int(seconds))
    except (TypeError, ValueError):
        return str(seconds)
    if total < 60:
        return _("%(seconds)d s") % {"seconds": total}
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    parts = [_("%(days)d d") % {"days": days}] if days else []
    if hours:
        parts.append(_("%(hours)d h") % {"hours": hours})
    if rest // 60:
        parts.append(_("%(minutes)d min") % {"minutes": rest // 60})
    return " ".join(parts)


#: The keys of an entry's data and timers whose values are seconds, timer or trigger names, task texts, engine
#: reasons (the rest are shown as facts: dates, declared values, ids).
SECONDS_KEYS = frozenset({"fired_late_by_seconds"})
NAME_KEYS = frozenset({"name"})
TASK_KEYS = frozenset({"task"})
REASON_KEYS = frozenset({"resolution", "why"})
PLAIN_KEYS = frozenset({"timer", "rule", "error", "note"})


def entry_value(value: Any, key: str = "") -> Markup:
    """A value of an audit entry's data or of its timers, by its key: seconds as a duration, a timer's name and
    task in the page's language, the engine's notes translated, everything else as :func:`fact_value`."""
    if value is None or value == "":
        return Markup("–")
    if key in SECONDS_KEYS:
        return Markup(escape(duration_text(value)))
    if isinstance(value, str):
        if key in NAME_KEYS:
            return Markup(escape(i18n.trigger(value)))
        if key in TASK_KEYS:
            return Markup(escape(i18n.task(value)))
        if key in REASON_KEYS:
            shown = reason_text(value)
            return Markup(escape(i18n.term(shown) if shown == value else shown))
        if key in PLAIN_KEYS:
            return Markup(escape(dk_dates(value)))
    return fact_value(value)


templates.env.filters["actor"] = actor_text
templates.env.filters["reason"] = reason_text
templates.env.filters["entry_value"] = entry_value
templates.env.filters["duration"] = duration_text

# ---- forms drawn from the operations' declarations -------------------------------------------------------------


@dataclass
class Field:
    name: str
    label: str
    input: str  # date, select, checkboxes, checkbox, number, text, textarea, hidden
    required: bool
    value: Any = None
    #: (value, the page's word for it) of a select's options or a fieldset's checkboxes.
    choices: tuple[tuple[str, str], ...] = ()
    help: str | None = None
    #: The suggestions of a person picker (``person``: a text input that takes person-N or a reference).
    picker: bool = False


#: The input of each declared field type (a date is typed ``dd.mm.åååå``: a text input, read by ``form_values``).
INPUTS = {"date": "date", "choice": "select", "choices": "checkboxes", "flag": "checkbox", "yesno": "checkbox",
          "count": "number", "note": "textarea", "text": "text", "id": "text"}
#: A help text that only lists the choices (``home|covered|hospital``, ``Comma-separated: ...``): the form's
#: options say it, so the page leaves it out.
LISTING_HELP = re.compile(r"(^|: )[a-z_\-|, IVab]+\.?$|Comma-separated")


def label_of(op: Operation) -> Callable[[str], str]:
    """How a page names ``op``'s fields (in its help texts and refusals): by their label in the page's language."""
    def label(name: str) -> str:
        declared = op.declared.field(name)
        return i18n.label(declared) if declared is not None else i18n.fact(name)

    return label


def declared_fields(op: Operation) -> tuple[DeclaredField, ...]:
    """The fields a form of ``op`` posts: its declared fields and the reason."""
    return (*op.declared.fields, op.declared.reason)


def field_help(declared: DeclaredField, named: Callable[[str], str]) -> str | None:
    """A field's help in the page's language, with the fields it names by their labels."""
    if not declared.help or (declared.choices and LISTING_HELP.search(declared.help)):
        return None
    return rendered(_(declared.help), named) or None


def form_fields(op: Operation, values: dict[str, Any], hidden: tuple[str, ...] = ()) -> list[Field]:
    """The inputs of ``op``'s form, labelled in the page's language, with ``values`` filled in (dates as
    ``dd.mm.åååå``); ``if_version`` hidden."""
    named = label_of(op)
    fields = []
    if op.declared.versioned:
        fields.append(Field("if_version", "version", "hidden", False, values.get("if_version")))
    for declared in declared_fields(op):
        value = values.get(declared.name)
        kind = "hidden" if declared.name in hidden else INPUTS[declared.type]
        if kind == "checkboxes":
            value = value or []
        if declared.type == "date" and kind != "hidden":
            value = shown_date(value)
        choices = tuple((c, i18n.term(c)) for c in declared.choices) if kind in ("select", "checkboxes") else ()
        picker = declared.type == "id" and declared.of == "person" and kind != "hidden"
        help_text = _("A person's id (person-N) or reference: start typing to search.") if picker else None
        fields.append(Field(declared.name, i18n.label(declared), kind, declared.required, value, choices,
                            help_text or field_help(declared, named), picker))
    if op.name in NEW_PERSON_OPS:
        fields.append(Field(NEW_PERSON_FIELD, _("New person: reference (CPR)"), "text", False,
                            values.get(NEW_PERSON_FIELD),
                            help=_("Not registered yet? Type the reference and press “Register the person”: "
                                   "the person is registered and picked here, then add the contact.")))
    return fields


#: The creations whose form can register a new person first (the contact's form, issue 16 item 3).
NEW_PERSON_OPS = ("contact add",)
NEW_PERSON_FIELD = "new_person_ref"
#: The button of such a form that registers the person (a submit named ``step``).
REGISTER_STEP = "register_person"
#: The field such a form picks the registered person in (it has the focus when the form comes back).
PICKED = "person"


def form_values(op: Operation, form: FormData, problems: dict[str, str] | None = None) -> dict[str, Any]:
    """What a form posted, as ``op``'s fields: lists from repeated fields, booleans from checkboxes, empty
    inputs left out (so the body's defaults and its required-field messages apply), dates read as Danes write
    them (``24.11.2026``, also ``24.1.2026`` and ISO ``2026-11-24``) into ISO. A date that cannot be read stays as
    typed, with a message at its field in ``problems``."""
    data: dict[str, Any] = {}
    names = [(f.name, f.type) for f in declared_fields(op)]
    if op.declared.versioned:
        names.append(("if_version", "count"))
    for name, kind in names:
        if kind == "choices":
            data[name] = [v for v in form.getlist(name) if isinstance(v, str) and v]
        elif kind in ("flag", "yesno"):
            data[name] = form.get(name) in ("on", "true", "yes", "1")
        else:
            raw = form.get(name)
            if isinstance(raw, str) and raw.strip():
                data[name] = raw.strip()
                if kind == "date":
                    day = parse_dk_date(raw)
                    if day is not None:
                        data[name] = day.isoformat()
                    elif problems is not None:
                        problems[name] = _("%(field)s: “%(typed)s” is not a date that can be read: write it as "
                                           "dd.mm.yyyy, e.g. 24.11.2026") % {
                            "field": label_of(op)(name), "typed": raw.strip()[:40]}
    return data


def _resolve_values(form: FormData) -> dict[str, Any]:
    """A task resolution's outcome and reason as posted (empty ones left out)."""
    return {name: str(form.get(name)).strip() for name in ("outcome", "reason")
            if isinstance(form.get(name), str) and str(form.get(name)).strip()}


#: Pydantic's error types as a page says them (the field's label goes before).
VALIDATION_TEXTS = {
    "missing": i18n.N_("must be filled in"),
    "string_too_long": i18n.N_("is too long"),
    "string_too_short": i18n.N_("is too short"),
    "too_short": i18n.N_("needs at least one choice"),
    "too_long": i18n.N_("has too many choices"),
    "int_parsing": i18n.N_("must be a whole number"),
    "int_from_float": i18n.N_("must be a whole number"),
    "greater_than_equal": i18n.N_("is too small"),
    "less_than_equal": i18n.N_("is too large"),
    "literal_error": i18n.N_("is not one of the choices"),
    "enum": i18n.N_("is not one of the choices"),
    "date_parsing": i18n.N_("is not a date that can be read: write it as dd.mm.yyyy, e.g. 24.11.2026"),
    "date_from_datetime_parsing": i18n.N_("is not a date that can be read: write it as dd.mm.yyyy, e.g. 24.11.2026"),
    "bool_parsing": i18n.N_("must be yes or no"),
    "string_type": i18n.N_("must be a text"),
    "extra_forbidden": i18n.N_("is not a field of this form"),
}


def validation_messages(error: ValidationError, op: Operation | None = None) -> dict[str, str]:
    """Each field's first problem, in the page's language and naming the field by its label."""
    named = label_of(op) if op is not None else i18n.fact
    found: dict[str, str] = {}
    for problem in error.errors():
        where = str(problem["loc"][0]) if problem["loc"] else "form"
        text = VALIDATION_TEXTS.get(str(problem.get("type")))
        if text is not None:
            message = _(text)
        else:
            detail = str(problem.get("msg", "")).removeprefix("Value error, ")
            message = _("cannot be used: %(detail)s") % {"detail": rendered(detail, named)}
        found.setdefault(where, f"{named(where)}: {message}" if where != "form" else message)
    return found


# ---- refusals in the page's language -------------------------------------------------------------------------

#: A command line written inside an engine message (`` `case consent case-3 ⟦tracing⟧ yes` ``).
COMMAND = re.compile(r"`([^`]*)`")


def _page_terms(text: str) -> str:
    """An engine message's command lines as a page says them: the operation's name (the form on the object's
    page), ``mpoxflow show X`` as X's page; no other CLI text."""
    def command(match: re.Match[str]) -> str:
        inside = match[1].strip()
        if inside.startswith("mpoxflow show "):
            return _("the page of %(object)s") % {"object": inside.removeprefix("mpoxflow show ").split()[0]}
        inside = inside.removeprefix("mpoxflow ")
        for name in sorted(BY_NAME, key=len, reverse=True):
            if inside.startswith(name):
                return "«" + i18n.operation(name) + "»"
        return "«" + inside + "»"

    text = COMMAND.sub(command, text)
    return text.replace(" (the schema is at /openapi.json)", "")


def danish_refusal(error: MpoxflowError) -> str:
    """A refusal made with ``because`` in the page's language: its template from the catalog (context
    ``refusal``), its values shown the page's way (dates ``dd.mm.åååå``, declared values as the page's terms, lists
    joined), its rule cited as the engine cites it."""
    text = _refusal_part(error.params)
    if isinstance(error, GuardRefused) and error.rule:
        text += f" ({error.rule})"
    return text


#: A phrase in brackets at the end of a value (``2025-03-01 (given elsewhere)``).
PARENTHESIS = re.compile(r"\(([^()]+)\)$")


def _refusal_part(part: dict[str, Any]) -> str:
    """A template and its values (a refusal's, or a part of one) in the page's language."""
    template = str(part["template"])
    values = {name: _refusal_value(value, name) for name, value in dict(part.get("values") or {}).items()}
    try:
        return i18n.pgettext("refusal", template) % values
    except (KeyError, TypeError, ValueError):  # a translation that does not fit its values: the English one
        return template % values


def _refusal_value(value: Any, name: str) -> str:
    """A refusal's value as a Danish page shows it: a state (``state``, ``status``...) or a declared value by its
    Danish term, a phrase of the refusal's by its translation, dates ``dd.mm.åååå``, a list's items joined."""
    if isinstance(value, list):
        return ", ".join(_refusal_value(v, name) for v in value)
    if isinstance(value, dict) and isinstance(value.get("template"), str):
        return _refusal_part(value)
    if not isinstance(value, str):
        return str(value)
    if name == "state":
        shown = i18n.state(value)
    else:
        shown = i18n.pgettext("refusal", value)
        if shown == value:
            shown = str(i18n.term(value))
        if shown == value:  # "2025-03-01 (given elsewhere)": the phrase in brackets
            shown = PARENTHESIS.sub(lambda m: f"({i18n.pgettext('refusal', m[1])})", value)
    return i18n.ISO_DATE.sub(lambda m: f"{m[3]}.{m[2]}.{m[1]}", shown)


def refusal_text(error: MpoxflowError, named: Callable[[str], str] = i18n.fact) -> str:
    """A refusal as a page says it: the known keys in the page's language; a guideline rule's refusal (whose
    wording is the engine's, in English) with its fields by their labels and no command lines."""
    if i18n.current() == "en":  # the engine's own words, its fields by their English labels
        return _page_terms(error.render(named))
    params = error.params
    key = error.key
    if isinstance(params.get("template"), str):
        return _page_terms(FIELD_REF.sub(lambda m: named(m[1]), danish_refusal(error)))
    if key == "trigger_not_allowed":
        allowed = ", ".join(f"«{i18n.trigger(t)}»" for t in params.get("allowed", ())) or _("nothing: the state "
                                                                                            "is final")
        return _("%(object)s is %(state)s: “%(trigger)s” is not possible in that state. Possible now: "
                 "%(allowed)s.") % {"object": params.get("object"), "state": i18n.state(str(params.get("state"))),
                                    "trigger": i18n.trigger(str(params.get("trigger"))), "allowed": allowed}
    if key == "not_found":
        return _("Nothing by the id %(object)s was found: check the id.") % {"object": params.get("object")}
    if key == "conflict":
        return _("Someone else changed this meanwhile, so nothing was saved: reload the page and try again.")
    if key == "read_not_recorded":
        return _("The reading could not be recorded in the read log, so nothing that shows a person's reference "
                 "was shown: try again in a moment; if it goes on, tell an admin.")
    if key == "too_many_attempts":
        return _("Too many failed logins: wait a few minutes and try again, or ask an admin to set a new "
                 "password.")
    if key == "not_authenticated":
        return _("Wrong user name or password: check both and try again.")
    if key == "not_permitted" and "CSRF" in error.template:
        return _("The form was stale: reload the page and submit it again.")
    if key == "not_permitted":
        return _("Your role may not do this.") + " " + _page_terms(error.render(named))
    return _page_terms(error.render(named))


# ---- the login, for every page -------------------------------------------------------------------------------


Who = Annotated[Login, Depends(login_dependency)]
Eng = Annotated[Engine, Depends(engine_dependency)]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    login: Login | None = getattr(request.state, "login", None)
    engine: Engine | None = getattr(request.state, "engine", None)
    now = engine.clock.now() if engine is not None else None
    lang = i18n.activate(i18n.language_of(getattr(login, "language", None), request.headers.get("accept-language")))
    error = context.get("error")
    if isinstance(error, MpoxflowError) and not context.get("error_text"):
        context["error_text"] = refusal_text(error)
    base = {
        "lang": lang, "label_of": i18n.label,
        "request": request, "login": login, "csrf": login.csrf if login else None,
        "can_act": login is not None and login.role in ACTING_ROLES,
        "is_admin": login is not None and login.role in ADMIN_ROLES,
        "now": instant(now) if now else None, "simulated": engine.clock.simulated if engine else False,
        "outcomes": TASK_OUTCOMES, "nav": NAV,
        "done": context.get("flash") or request.query_params.get("done"),
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)


def error_page(request: Request, error: MpoxflowError) -> Response:
    """An error outside a form: not logged in goes to the login page; others get a page with the message."""
    if isinstance(error, NotAuthenticated):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    status, code = http_status(error)
    return render(request, "error.html", status_code=status, error=error, code=code)


async def posted(request: Request, login: Login) -> FormData:
    """The form, once its CSRF token is checked against the session's."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    check_csrf(request, login, token if isinstance(token, str) else None)
    return form


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/worklist"


# ---- logging in and out --------------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "login.html", next=_safe_next(next), login_csrf=token)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                        secure=request.app.state.web.secure_cookies)
    return response


@router.post("/login")
async def login_submit(request: Request, engine: Eng) -> Response:
    form = await request.form()
    target = _safe_next(str(form.get("next") or ""))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    sent = form.get(CSRF_FIELD)
    if not cookie or not isinstance(sent, str) or not secrets.compare_digest(cookie, sent):
        return render(request, "login.html", status_code=403, next=target, login_csrf=cookie or "",
                      error=_("The login form was stale: it has been reloaded, log in again."))
    try:
        _login, secret = Accounts(engine).login(str(form.get("name") or ""), str(form.get("password") or ""),
                                           client_address(request))
    except MpoxflowError as error:
        status = http_status(error)[0]
        return render(request, "login.html", status_code=status, next=target, login_csrf=cookie,
                      error=refusal_text(error), name=str(form.get("name") or ""))
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, secret)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, who: Who, engine: Eng) -> Response:
    await posted(request, who)
    Accounts(engine).logout(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(request, response)
    return response


# ---- the worklist --------------------------------------------------------------------------------------------

def task_action(timer: str) -> tuple[str, str | None, dict[str, str]] | None:
    """The button or link a task gets, from the operation declared to do it: (label, operation, fixed fields)
    posts at once; (label, None, anchor) opens the operation's form on the object's page."""
    found = TASK_ACTIONS.get(timer)
    if found is None:
        return None
    op, task = found
    if task.fixed is not None:
        return task.label, op.name, dict(task.fixed)
    return task.label, None, {"anchor": op.operation_id if op.creates else op.verb}


#: Tasks on one page of the worklist; the page links to the next (``Engine.worklist_page``).
WORKLIST_PAGE = 100


#: The worklist's sections, in the order a shift works them (their keys are the tables' ``data-section``).
SECTIONS = {"Overdue": i18n.N_("Overdue"), "Due today": i18n.N_("Due today"), "Next 7 days": i18n.N_("Coming"),
            "Missed": i18n.N_("Missed")}
#: The worklist's sorts: by deadline, or by kind of object (then deadline).
SORT_NAMES = {"due": i18n.N_("by deadline"), "kind": i18n.N_("by kind of object")}


#: The worklist's views (issue 17): the user's own work (assigned to them, or unassigned in their units), one of
#: their units' (and those below it), everything they may see (the default).
VIEW_NAMES = {"mine": i18n.N_("Mine"), "unit": i18n.N_("My unit"), "all": i18n.N_("All I may see")}


@router.get("/worklist")
def worklist(request: Request, who: Who, engine: Eng, after: str | None = None, task: str | None = None,
             kind: str | None = None, sort: str | None = None, view: str | None = None,
             unit: str | None = None) -> Response:
    now = engine.clock.now()
    tomorrow = datetime.combine(to_local(now).date() + timedelta(days=1), datetime.min.time(), tzinfo=DANISH)
    week = tomorrow + timedelta(days=7)
    today = to_local(now).date()
    if view not in (None, "", *VIEW_NAMES):
        raise UsageError(_("Choose one of the worklist's views: mine, my unit or all I may see."))
    mine_units = organisation(engine, who).direct()
    chosen = view if view in ("mine", "unit") else None
    if chosen == "unit" and not unit:
        if not mine_units:
            raise UsageError(_("You are a member of no unit: the worklist shows all you may see."))
        unit = str(mine_units[0]["id"])  # one's first unit (a select offers the others)
    filters = {"task": task or None, "kind": kind or None, "sort": sort or None, "view": chosen,
               "unit": unit if chosen == "unit" else None}
    sections: dict[str, list[dict[str, Any]]] = {key: [] for key in SECTIONS}
    # One page, in the worklist's order; what falls due after the next 7 days is not on the worklist page (a
    # deadline at 00:00 after the 7th day covers that day: it is on it).
    page = engine.worklist_page(week - now, limit=WORKLIST_PAGE, after=after, task=filters["task"],
                                kind=filters["kind"], sort=filters["sort"] or "due", mine=chosen == "mine",
                                unit=filters["unit"])
    for item in page["items"]:
        due_at = datetime.fromisoformat(item["due_at"])
        item["left"] = left(due_at, now)
        item["action"] = task_action(item["name"]) if not item.get("failed") else None
        if item["missed"]:
            sections["Missed"].append(item)
        elif item["overdue"]:
            sections["Overdue"].append(item)
        elif last_day(due_at)[0] <= today:  # a deadline at 00:00 tonight is today's
            sections["Due today"].append(item)
        else:
            sections["Next 7 days"].append(item)
    kept = {k: v for k, v in filters.items() if v}
    more = f"/worklist?{urlencode({**kept, 'after': page['next']})}" if page["next"] else None
    titles = {key: _(name) for key, name in SECTIONS.items()}
    return render(request, "worklist.html", sections=sections, operations=BY_NAME, more=more,
                  first=after is not None, titles=titles, filters=filters, kinds=list(WORKFLOWS),
                  task_names=worklist_tasks(), sorts=SORT_NAMES, kind_titles=LISTS,
                  first_page=f"/worklist?{urlencode(kept)}", views=VIEW_NAMES, my_units=mine_units,
                  hard_to_reach=worklist_hard_to_reach(engine, filters) if after is None else None,
                  hard_to_reach_after=HARD_TO_REACH_AFTER,
                  changed_since_sent=engine.changed_since_sent()
                  if after is None and not filters["task"] and filters["kind"] in (None, "", "case") else None)


def worklist_hard_to_reach(engine: Engine, filters: dict[str, str | None]) -> list[dict[str, Any]]:
    """The worklist's "hard to reach" section (issue 17): open cases and contacts with 3 failed contact attempts
    since the last that reached the person; none when the list is filtered by a task, or by another kind."""
    if filters["task"] or (filters["kind"] and filters["kind"] not in ATTEMPT_KINDS):
        return []
    return [i for i in engine.hard_to_reach() if not filters["kind"] or i["kind"] == filters["kind"]]


def worklist_tasks() -> list[str]:
    """The timers the worklist can be filtered by: the workflows' timed triggers that are staff tasks."""
    return sorted({spec.trigger for d in WORKFLOWS.values() for spec in d.transitions if spec.timed})


@router.get("/search")
def search_form(request: Request, who: Who, engine: Eng) -> Response:
    """The search page with its box and no results (a search is posted: its text stays out of the URL)."""
    return render(request, "search.html", q="", results=[], problem=None)


@router.post("/search")
async def search_page(request: Request, who: Who, engine: Eng) -> Response:
    """The search box's results (a person's reference or its beginning, an id): the page works without the
    script that shows them as you type. Posted, so that a reference (a CPR number) is never in a URL, a proxy's
    log or the browser's history; a read, so it needs no CSRF token."""
    form = await request.form()
    raw = form.get("q")
    query = raw.strip() if isinstance(raw, str) else ""
    results: list[dict[str, Any]] = []
    problem = None
    if query:
        try:
            results = engine.search(query[:200], limit=50)
        except UsageError:
            problem = _("That cannot be searched for: type a person's reference (or its beginning) or an id such "
                        "as case-7.")
    return render(request, "search.html", q=query, results=results, problem=problem,
                  status_code=422 if problem else 200)


# ---- lists and objects ---------------------------------------------------------------------------------------


@router.get("/list/{what}")
def listing(request: Request, what: Listed, who: Who, engine: Eng,
            state: str | None = None) -> Response:
    kind = LISTABLE[what]
    rows = engine.list(kind, state or None)
    return render(request, "list.html", what=what, kind=kind, rows=rows, state=state, titles=LIST_TITLES,
                  refs=shown_refs(engine, [r.get("person") for r in rows])[0] if kind != "person" else {},
                  states=WORKFLOWS[kind].states if kind in WORKFLOWS else (),
                  form=_creation_form("person_add", {}) if kind == "person" else None)


def _creation_form(op_id: str, values: dict[str, Any], errors: dict[str, str] | None = None,
                   hidden: tuple[str, ...] = ()) -> dict[str, Any]:
    op = CREATING[op_id]
    return {"op": op, "action": f"/new/{op.operation_id}", "fields": form_fields(op, values, hidden),
            "errors": errors or {}}


def _transition_form(op: Operation, object_id: str, version: int, values: dict[str, Any] | None = None,
                     errors: dict[str, str] | None = None) -> dict[str, Any]:
    return {"op": op, "action": f"/objects/{object_id}/{op.verb}",
            "fields": form_fields(op, {"if_version": version, **(values or {})}),
            "errors": errors or {}}


def offered_here(kind: str, view: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The creating operations the page of an object offers, as their declarations say (``Offer``), each with
    the fields it prefills from the object (its id, its person) and fixed values."""
    found = []
    for op in CREATING.values():
        for offer in op.declared.offered:
            if offer.kind == kind and (not offer.states or view.get("state") in offer.states):
                prefill = {name: view.get(key) for name, key in offer.from_view.items()}
                found.append((op.operation_id, {**prefill, **offer.fixed}))
    return found


def object_page(request: Request, engine: Engine, object_id: str, *, status_code: int = 200,
                failed: tuple[str, dict[str, Any], dict[str, str], MpoxflowError | None] | None = None,
                prefill: tuple[str, dict[str, Any]] | None = None, confirming: str | None = None,
                flash: str | None = None, glass: dict[str, Any] | None = None) -> Response:
    """One object: facts, state, timers, related objects, whose work it is, the actions allowed now (as forms),
    its timeline. ``failed``: (operation, values typed, problems at the fields, the refusal) re-rendered at its
    form; ``prefill``: (operation, values) of a form filled in without a refusal; ``confirming``: the consequence
    of ``failed``'s final step, asked to be confirmed (its form then carries ``confirmed=1``); ``glass``: the
    view of an object outside the user's units read by breaking the glass (recorded): shown read-only, with its
    related objects and timeline as an auditor reads them."""
    if glass is not None:
        view = glass
        viewer = engine.runtime.viewer
        engine.viewing_as(None)  # the reading is recorded on the object's chain: its page is read whole
        try:
            return _object_page(request, engine, object_id, view, status_code=status_code, read_only=True)
        finally:
            engine.viewing_as(viewer)
    view = engine.show(object_id)
    return _object_page(request, engine, object_id, view, status_code=status_code, failed=failed, prefill=prefill,
                        confirming=confirming, flash=flash)


def _object_page(request: Request, engine: Engine, object_id: str, view: dict[str, Any], *, status_code: int = 200,
                 failed: tuple[str, dict[str, Any], dict[str, str], MpoxflowError | None] | None = None,
                 prefill: tuple[str, dict[str, Any]] | None = None, confirming: str | None = None,
                 flash: str | None = None, read_only: bool = False) -> Response:
    kind = view.get("kind") or parse_id(object_id)[0]  # a timer's view names no kind
    related = engine.related(object_id)
    timeline = engine.audit_timeline(object_id) if kind != "timer" else []
    notes = engine.notes_of(object_id) if kind in NOTE_KINDS else []
    refs, purged_ids = page_refs(engine, kind, view, related)
    # Issue 19: nothing more is recorded on a purged person or their objects (the engine refuses it): no forms.
    purged_person = (bool(view.get("purged")) if kind == "person"
                     else kind in WORKFLOWS and str(view.get("person")) in purged_ids)
    if failed is None and prefill is not None:
        failed = (prefill[0], prefill[1], {}, None)
    forms: list[dict[str, Any]] = []
    if kind in WORKFLOWS:
        for op in allowed_now(kind, view["state"]):
            values, errors = (failed[1], failed[2]) if failed and failed[0] == op.name else ({}, {})
            shaped = _transition_form(op, object_id, view["version"], values, errors)
            shaped["final"] = final_consequence(op, view["state"])
            if confirming is not None and failed and failed[0] == op.name:
                shaped["confirming"] = confirming
            forms.append(shaped)
    else:  # a person's facts: always changeable, the form shows them as they are
        for op in transitions_of(kind):
            current = {f.name: view.get(f.shown_as or f.name) for f in op.declared.fields}
            values, errors = (failed[1], failed[2]) if failed and failed[0] == op.name else (current, {})
            forms.append(_transition_form(op, object_id, 0, values, errors))
    creations = []
    for op_id, prefilled in offered_here(kind, view):
        problems: dict[str, str] = {}
        if failed and failed[0] == CREATING[op_id].name:
            prefilled, problems = {**prefilled, **failed[1]}, failed[2]
        creation = _creation_form(op_id, prefilled, problems)
        if prefill is not None and prefill[0] == CREATING[op_id].name:
            creation["focus"] = PICKED  # the person just registered in it: the keyboard goes on from there
        creations.append(creation)
    facts = {k: v for k, v in view.items()
             if k not in ("id", "kind", "state", "workflow", "version", "timers", "cases", "purged", *OWNER_FACTS)}
    error = failed[3] if failed else None
    failed_op = failed[0] if failed and (error is not None or failed[2]) else None
    if read_only or purged_person:
        forms, creations = [], []
    login: Login | None = getattr(request.state, "login", None)
    owner = ownership(engine, login, view, failed, read_only) if kind in WORKFLOWS and login is not None else None
    return render(request, "object.html", status_code=status_code, view=view, kind=kind, facts=facts,
                  related=related, timeline=timeline, forms=forms, creations=creations, error=error,
                  error_text=_error_text(error, failed[0] if failed else None), failed_op=failed_op,
                  refs=refs, flash=flash, confirming_op=failed[0] if confirming and failed else None,
                  notes=notes, notes_by_id={n["id"]: n for n in notes}, note_kinds=NOTE_KINDS,
                  purged_person=purged_person,
                  attempt_kinds=ATTEMPT_KINDS, channels=CHANNELS, attempt_outcomes=OUTCOMES,
                  note_typed=failed[1] if failed and failed[0] in NOTE_FORMS else {},
                  note_failed=failed[0] if failed and failed[0] in NOTE_FORMS else None,
                  hard_to_reach_after=HARD_TO_REACH_AFTER, owner=owner, read_only=read_only,
                  notification=notification_box(engine, object_id) if kind == "case" else None)


def notification_box(engine: Engine, case_id: str) -> dict[str, Any]:
    """A case page's written notification (§3.1, issue 18): its documents, and what changed since the last one
    sent (None: nothing)."""
    changed = engine.changed_since_sent(case_id)
    return {"documents": engine.documents_of(case_id), "changed": changed[0] if changed else None}


def page_refs(engine: Engine, kind: str, view: dict[str, Any],
              related: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, str], set[str]]:
    """``shown_refs`` of the persons an object's page names (its own, its related objects'), recorded as the
    page's kind."""
    persons = [view.get("person"), *(r.get("person") for rows in related.values() for r in rows)]
    return shown_refs(engine, persons, kind if kind in ("case", "contact", "course", "person") else "ref")


def shown_refs(engine: Engine, persons: list[Any], what: str = "ref") -> tuple[dict[str, str], set[str]]:
    """The references a page shows beside the persons it names, by id, each a read of personal data recorded as
    ``what`` (``Engine.refs``: only these persons, never every one's), for the pages staff read (never for logs,
    audit entries or exports); and the persons among them whose personal data a retention purge deleted (issue 19),
    shown as such."""
    named = {str(p) for p in persons if p}
    refs = engine.refs(named, what)
    purged = named - set(refs)
    refs.update(dict.fromkeys(purged, _("personal data deleted")))
    return refs, purged


#: What a final step does, by the final state it leads to (issue 16 item 5): said before it is confirmed.
CONSEQUENCES = {
    ("case", "discarded"): i18n.N_("The case is discarded (not mpox): all its open deadlines are cancelled and no "
                                   "further step is possible. This cannot be undone; nothing is deleted, and the "
                                   "audit log keeps the case as it was."),
    ("case", "deceased"): i18n.N_("The person is recorded as deceased: the case is closed, all its open deadlines "
                                  "are cancelled and no further step is possible. This cannot be undone; nothing "
                                  "is deleted, and the audit log keeps the case as it was."),
    ("course", "declined"): i18n.N_("The person declines the vaccination: the course ends, its open deadlines "
                                    "(the next dose) are cancelled and no further dose can be recorded in it. This "
                                    "cannot be undone; a later vaccination needs a new course."),
    ("course", "completed"): i18n.N_("The course is completed with this dose: its open deadlines are cancelled and "
                                     "no further dose can be recorded in it. This cannot be undone; a wrong date "
                                     "stays on record in the audit log."),
}
GENERIC_CONSEQUENCE = i18n.N_("%(object)s becomes “%(state)s”, a final state: all its open deadlines are cancelled "
                              "and no further step is possible. This cannot be undone; nothing is deleted.")


def final_consequence(op: Operation, state: str) -> str | None:
    """The consequence of ``op`` from ``state`` when it leads to a final state of its workflow (every row of its
    trigger from that state does: the workflows' declarations decide, not a list), in the page's language; None
    for a step that is not final (or only may be, by a guard's choice)."""
    if op.kind not in WORKFLOWS or op.trigger is None:
        return None
    definition = WORKFLOWS[op.kind]
    rows = [spec for spec in definition.transitions
            if spec.trigger == op.trigger and state in spec.source and not spec.timed and not spec.internal]
    dests = {spec.dest for spec in rows}
    if not rows or len(dests) != 1 or not dests <= definition.final:
        return None
    dest = str(next(iter(dests)))
    known = CONSEQUENCES.get((op.kind, dest))
    if known is not None:
        return _(known)
    return _(GENERIC_CONSEQUENCE) % {"object": op.kind, "state": i18n.state(dest)}


def _error_text(error: MpoxflowError | None, op_name: str | None) -> str | None:
    """A refusal of a form's operation as the page says it: its fields named by their labels."""
    if error is None:
        return None
    op = BY_NAME.get(op_name or "")
    return refusal_text(error, label_of(op)) if op is not None else refusal_text(error)


@router.get("/objects/{object_id}")
def show_object(request: Request, object_id: str, who: Who, engine: Eng) -> Response:
    try:
        return object_page(request, engine, object_id)
    except OutsideUnits as error:  # another unit's: a page that says whose, and asks why to read it anyway
        return outside_page(request, object_id, error)


# ---- whose work, and reading outside one's units (issue 17) ----------------------------------------------------
# Before the operations' ``/objects/{object_id}/{verb}``: these paths would match it.

#: The view's fields the "Responsibility" box shows (not the facts table).
OWNER_FACTS = ("unit", "assignee")
#: The owner forms' actions: take (assign to me), assign (to a member: leads), return (to the unit's pool),
#: transfer (to another unit: leads).
OWNER_ACTIONS = ("take", "assign", "return", "transfer")
REASON_REQUIRED = i18n.N_("%(field)s: give the reason: it goes into the audit log.")


@dataclass
class Organisation:
    """The units as the pages show them, and the logged-in user's scope in them (``engine.units.Scope``)."""

    units: list[dict[str, Any]]
    scope: Scope

    @property
    def tree(self) -> UnitTree:
        return self.scope.tree

    def unit(self, unit_id: str) -> dict[str, Any] | None:
        return next((u for u in self.units if u["id"] == unit_id), None)

    def user_name(self, user_id: str | None) -> str | None:
        for unit in self.units:
            for member in unit["members"]:
                if member["user"] == user_id:
                    return str(member["name"])
        return None

    def direct(self) -> list[dict[str, Any]]:
        """The user's own units (the ones they are a member of), in the tree's order."""
        mine = {f"unit-{pk}" for pk in self.scope.memberships}
        return [u for u in self.units if u["id"] in mine]

    def units_of(self, name: str) -> list[tuple[dict[str, Any], str]]:
        """A user's units and their role in each."""
        return [(u, m["role"]) for u in self.units for m in u["members"] if m["name"] == name]


def organisation(engine: Engine, login: Login) -> Organisation:
    listed = engine.list_units()
    with engine.runtime.db.reading() as session:
        scope = scope_of(Repository(session), login.name)
    return Organisation(listed, scope)


def ownership(engine: Engine, login: Login, view: dict[str, Any], failed: Any, read_only: bool) -> dict[str, Any]:
    """The "Responsibility" box of an object's page: its unit and assignee, and the owner forms the user may
    use (none read-only, or for a role that changes nothing)."""
    org = organisation(engine, login)
    unit_id = str(view.get("unit") or "unit-1")
    pk = parse_id(unit_id)[1]
    assignee = view.get("assignee")
    me = f"user-{org.scope.user_id}" if org.scope.user_id is not None else None
    unit = org.unit(unit_id) or {"members": []}
    acting = login.role in ACTING_ROLES and not read_only and org.scope.covers(pk)
    leads = acting and org.scope.leads(pk)
    member = pk in org.scope.memberships
    failed_action = str(failed[0]).removeprefix("owner ") if failed and str(failed[0]).startswith("owner ") else None
    return {
        "unit": unit_id, "path": org.tree.path(pk) if pk in org.tree.names else unit_id,
        "assignee": assignee, "assignee_name": org.user_name(assignee) or assignee,
        "take": acting and member and assignee != me and (assignee is None or leads),
        "assign_to": [m for m in unit["members"] if not m["disabled"]] if leads else [],
        "give_back": acting and assignee is not None and (assignee == me or leads),
        "transfer_to": [u for u in org.units if u["id"] != unit_id] if leads else [],
        "failed": failed_action, "values": failed[1] if failed_action else {},
        "errors": failed[2] if failed_action else {},
    }


def outside_page(request: Request, object_id: str, error: OutsideUnits, *, status_code: int = 403,
                 problem: str | None = None, reason: str = "") -> Response:
    """An object outside the user's units: whose it is, and a form to read it anyway with a reason."""
    values = dict(error.params.get("values") or {})
    return render(request, "outside.html", status_code=status_code, object_id=str(values.get("object") or
                  error.target or object_id), unit_path=str(values.get("unit") or ""),
                  mine=str(values.get("mine") or ""), problem=problem, reason=reason)


@router.post("/objects/{object_id}/break-glass")
async def break_glass(request: Request, object_id: str, who: Who, engine: Eng) -> Response:
    """Read an object outside one's units: the reason is recorded on its chain (``Engine.read_outside``), then the
    object's page is shown read-only."""
    form = await posted(request, who)
    reason = str(form.get("reason") or "").strip()
    if not reason:
        try:
            engine.show(object_id)
        except OutsideUnits as error:
            return outside_page(request, object_id, error, status_code=422, reason=reason,
                                problem=_(REASON_REQUIRED) % {"field": _("Reason for reading the case")})
        return RedirectResponse(f"/objects/{object_id}", status_code=303)  # one's own: nothing to record
    view = engine.read_outside(object_id, actor=who.name, reason=reason[:MAX_REASON])
    return object_page(request, engine, object_id, glass=view)


#: The longest reason a page's form sends on (the engine refuses a longer one; a browser's maxlength says so).
MAX_REASON = 2000


@router.post("/objects/{object_id}/owner")
async def change_owner(request: Request, object_id: str, who: Who, engine: Eng) -> Response:
    """The "Responsibility" box's forms: take the work, assign it to a member, give it back to the pool, hand it
    over to another unit. Each an audited entry on the object's chain; a refusal re-renders the page."""
    form = await posted(request, who)
    action = str(form.get("action") or "")
    if action not in OWNER_ACTIONS:
        raise UsageError(_("Choose one of the forms on the page."))
    values = {name: str(form.get(name) or "").strip() for name in ("reason", "user", "unit")}
    failed_as = f"owner {action}"
    problems: dict[str, str] = {}
    if action == "assign" and not values["user"]:
        problems["user"] = _("%(field)s: choose who does the work.") % {"field": _("Member")}
    if action == "transfer" and not values["unit"]:
        problems["unit"] = _("%(field)s: choose the unit that takes the work over.") % {"field": _("Unit")}
    if not values["reason"]:
        problems["reason"] = _(REASON_REQUIRED) % {"field": _("Reason")}
    if problems:
        refusal = UsageError(_("Some fields need correcting: see the messages at the form."))
        return object_page(request, engine, object_id, status_code=422,
                           failed=(failed_as, values, problems, refusal))
    reason = values["reason"]
    try:
        if action == "take":
            done = engine.assign([object_id], user=who.name, actor=who.name, reason=reason)
        elif action == "assign":
            done = engine.assign([object_id], user=values["user"], actor=who.name, reason=reason)
        elif action == "return":
            done = engine.assign([object_id], user=None, actor=who.name, reason=reason)
        else:
            done = engine.transfer([object_id], unit=values["unit"], actor=who.name, reason=reason)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return object_page(request, engine, object_id, status_code=http_status(error)[0],
                           failed=(failed_as, values, {}, error))
    changed = done[0]
    if action == "transfer":
        unit = changed["unit"]
        text_done = _("%(object)s handed over to %(unit)s") % {"object": changed["id"],
                                                               "unit": engine.show(unit)["path"]}
    elif changed["assignee"] is None:
        text_done = _("%(object)s given back to the unit's unassigned work") % {"object": changed["id"]}
    else:
        text_done = _("%(object)s assigned to %(user)s") % {"object": changed["id"],
                                                            "user": engine.show(changed["assignee"])["name"]}
    try:
        engine.show(object_id)
    except OutsideUnits:  # handed over out of one's units: its page is no longer one's to read
        return RedirectResponse(f"/worklist?{urlencode({'done': text_done})}", status_code=303)
    return RedirectResponse(f"/objects/{object_id}?{urlencode({'done': text_done})}", status_code=303)


@router.post("/objects/{object_id}/{verb}")
async def change_object(request: Request, object_id: str, verb: str, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    kind = parse_id(object_id)[0]
    op = next((op for op in transitions_of(kind) if op.verb == verb), None)
    if op is None:
        raise UsageError(_("There is no such action for this object: use the actions on its page."))
    problems: dict[str, str] = {}
    values = form_values(op, form, problems)
    refusal = UsageError(_("Some fields need correcting: see the messages at the form."))
    if problems:
        return object_page(request, engine, object_id, status_code=422, failed=(op.name, values, problems, refusal))
    try:
        body = op.body.model_validate(values)
    except ValidationError as error:
        return object_page(request, engine, object_id, status_code=422,
                           failed=(op.name, values, validation_messages(error, op), refusal))
    if who.role in ACTING_ROLES and form.get("confirmed") != "1":  # others are refused by the engine (audited)
        consequence = final_consequence(op, str(engine.show(object_id).get("state")))
        if consequence is not None:  # a final step: said, and asked again; nothing changes yet
            return object_page(request, engine, object_id, failed=(op.name, values, {}, None),
                               confirming=consequence)
    try:
        result = op.call(engine, who.name, body, object_id)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        status = http_status(error)[0]
        return object_page(request, engine, object_id, status_code=status, failed=(op.name, values, {}, error))
    done = i18n.operation(op.name) + (f": {i18n.state(result['state'])}" if result.get("state") else "")
    return RedirectResponse(f"/objects/{object_id}?{urlencode({'done': done})}", status_code=303)


@router.post("/timers/{timer_id}/resolve")
async def resolve_task(request: Request, timer_id: str, who: Who, engine: Eng) -> Response:
    """A missed task's resolution from the worklist or the object's page; back to the object's page."""
    form = await posted(request, who)
    timer = engine.show(timer_id)
    try:
        body = TaskResolve.model_validate(_resolve_values(form))
    except ValidationError as error:
        refusal = UsageError(_("To record what happened, choose an outcome and give a reason: ")
                             + "; ".join(validation_messages(error).values()))
        return object_page(request, engine, timer["object"], status_code=422, failed=("task resolve", {}, {},
                                                                                        refusal))
    try:
        engine.resolve_task(timer_id, body.outcome, actor=who.name, reason=body.reason)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        status = http_status(error)[0]
        return object_page(request, engine, timer["object"], status_code=status,
                           failed=("task resolve", {}, {}, error))
    done = _("task resolved: %(timer)s %(outcome)s") % {"timer": timer_id, "outcome": i18n.term(body.outcome)}
    return RedirectResponse(f"/objects/{timer['object']}?{urlencode({'done': done})}", status_code=303)


#: The note and contact-attempt forms of an object's page (issue 17), by the name their refusals come back under.
NOTE_FORMS = ("note", "attempt")


def _typed(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


@router.post("/objects/{object_id}/notes/add")
async def add_note(request: Request, object_id: str, who: Who, engine: Eng) -> Response:
    """The "new note" form of an object's page: the note is kept, the page shows it."""
    form = await posted(request, who)
    typed = {"text": _typed(form, "text"), "reason": _typed(form, "reason")}
    try:
        engine.note(object_id, text=typed["text"], actor=who.name, reason=typed["reason"].strip() or None)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return object_page(request, engine, object_id, status_code=http_status(error)[0],
                           failed=("note", typed, {}, error))
    done = _("note saved")
    return RedirectResponse(f"/objects/{object_id}?{urlencode({'done': done})}#notes", status_code=303)


@router.post("/objects/{object_id}/attempts/add")
async def add_attempt(request: Request, object_id: str, who: Who, engine: Eng) -> Response:
    """The "contact attempt" form of a case's or contact's page."""
    form = await posted(request, who)
    typed = {k: _typed(form, k) for k in ("channel", "outcome", "reason")}
    try:
        result = engine.attempt(object_id, channel=typed["channel"], outcome=typed["outcome"], actor=who.name,
                                reason=typed["reason"])
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return object_page(request, engine, object_id, status_code=http_status(error)[0],
                           failed=("attempt", typed, {}, error))
    done = _("contact attempt recorded: %(outcome)s") % {"outcome": i18n.pgettext("outcome", result["outcome"])}
    if result["informed"]:
        done += "; " + _("the contact is informed")
    elif result["hard_to_reach"]:
        done += "; " + _("hard to reach")
    return RedirectResponse(f"/objects/{object_id}?{urlencode({'done': done})}#notes", status_code=303)


@router.get("/new/{op_id}")
def new_form(request: Request, op_id: str, who: Who, engine: Eng) -> Response:
    if op_id not in CREATING:
        raise UsageError(_("Nothing is created that way: use the forms on the pages."))
    values = dict(request.query_params)
    return render(request, "new.html", form=_creation_form(op_id, values))


PERSON_ID = re.compile(r"^person-\d{1,10}$", re.I)


def resolve_person(engine: Engine, typed: str, label: str) -> tuple[str | None, str | None]:
    """A person picker's text as the person it names: ``person-N`` of a registered person, or a reference that
    belongs to exactly one person (as typed). Else (None, the message at the field: what to do)."""
    text = typed.strip()
    if PERSON_ID.match(text):
        pid = text.lower()
        try:
            engine.check_readable(pid)  # registered? (nothing of the person is shown: no read)
        except NotFound:
            return None, _("%(field)s: no person %(id)s is registered: check the id, or search by the "
                           "reference.") % {"field": label, "id": pid}
        return pid, None
    try:
        persons = [r for r in engine.search(text, limit=20) if r["kind"] == "person"]
    except UsageError:
        persons = []
    exact = [r for r in persons if r["ref"] == text]
    if len(exact) == 1:
        return str(exact[0]["id"]), None
    if persons:
        names = ", ".join(f"{r['ref']} ({r['id']})" for r in persons[:5])
        return None, _("%(field)s: no person has exactly that reference. Did you mean %(names)s? Pick one of the "
                       "suggestions or type the person's id.") % {"field": label, "names": names}
    return None, _("%(field)s: no person is registered with that reference: check it, or register the person "
                   "first.") % {"field": label}


def _offered_from(op: Operation, values: dict[str, Any]) -> str | None:
    """The object whose page offers ``op``'s form with these values (a contact's case), when it names one."""
    for offer in op.declared.offered:
        for name, key in offer.from_view.items():
            target = values.get(name)
            if key == "id" and isinstance(target, str) and re.fullmatch(rf"{offer.kind}-\d{{1,10}}", target):
                return target
    return None


def _creation_failed(request: Request, engine: Engine, op: Operation, values: dict[str, Any],
                     problems: dict[str, str], error: MpoxflowError, status: int) -> Response:
    """A refused creation re-rendered where its form was: on the page of the object that offers it (a contact's
    case), with the values typed; on the creation's own page otherwise."""
    origin = _offered_from(op, values)
    if origin is not None:
        try:
            return object_page(request, engine, origin, status_code=status, failed=(op.name, values, problems, error))
        except NotFound:
            pass
    return render(request, "new.html", status_code=status, form=_creation_form(op.operation_id, values, problems),
                  error=error, error_text=_error_text(error, op.name))


@router.post("/new/{op_id}")
async def create(request: Request, op_id: str, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    if op_id not in CREATING:
        raise UsageError(_("Nothing is created that way: use the forms on the pages."))
    op = CREATING[op_id]
    problems: dict[str, str] = {}
    values = form_values(op, form, problems)
    refusal = UsageError(_("Some fields need correcting: see the messages at the form."))
    new_ref = str(form.get(NEW_PERSON_FIELD) or "").strip() if op.name in NEW_PERSON_OPS else ""
    if new_ref:
        values[NEW_PERSON_FIELD] = new_ref
    picker = next((f for f in op.declared.fields if f.type == "id" and f.of == "person"), None)
    if picker is not None and form.get("step") == REGISTER_STEP and op.name in NEW_PERSON_OPS:
        return _register_from(request, engine, who, op, values, new_ref)
    if picker is not None and not values.get(picker.name) and new_ref and op.name in NEW_PERSON_OPS:
        # Registering the person and adding the contact are two units of work in the engine: were the contact
        # refused, the person would be left registered. So the page does not do both at once.
        problems[NEW_PERSON_FIELD] = _("%(field)s: the person is not registered yet. Press “Register the person” "
                                       "first, then add the contact.") % {
            "field": _("New person: reference (CPR)")}
    elif picker is not None and values.get(picker.name):
        pid, problem = resolve_person(engine, str(values[picker.name]), i18n.label(picker))
        if problem is not None:
            problems[picker.name] = problem
        else:
            values[picker.name] = pid
    if problems:
        return _creation_failed(request, engine, op, values, problems, refusal, 422)
    body_values = {k: v for k, v in values.items() if k != NEW_PERSON_FIELD}
    try:
        body = op.body.model_validate(body_values)
        result = op.call(engine, who.name, body)
    except ValidationError as error:
        return _creation_failed(request, engine, op, values, validation_messages(error, op), refusal, 422)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return _creation_failed(request, engine, op, values, {}, error, http_status(error)[0])
    return RedirectResponse(f"/objects/{result['id']}?{urlencode({'done': i18n.operation(op.name)})}",
                            status_code=303)


def _register_from(request: Request, engine: Engine, who: Login, op: Operation, values: dict[str, Any],
                   new_ref: str) -> Response:
    """"Register the person" in a contact's form: the person is registered (its own change, audited without the
    reference) and the form comes back with the values typed and the new person picked; the contact is added
    by the form's own button. A refusal (a reference registered already) is shown at the field."""
    label = _("New person: reference (CPR)")
    if not new_ref:
        problems = {NEW_PERSON_FIELD: _("%(field)s: type the new person's reference first.") % {"field": label}}
        return _creation_failed(request, engine, op, values, problems,
                                UsageError(_("Some fields need correcting: see the messages at the form.")), 422)
    adding = CREATING["person_add"]
    try:
        person = adding.call(engine, who.name, adding.body.model_validate({"ref": new_ref}))
    except ValidationError as error:
        problems = {NEW_PERSON_FIELD: f"{label}: " + "; ".join(validation_messages(error, adding).values())}
        return _creation_failed(request, engine, op, values, problems,
                                UsageError(_("Some fields need correcting: see the messages at the form.")), 422)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        problems = {NEW_PERSON_FIELD: f"{label}: {refusal_text(error)}"}
        return _creation_failed(request, engine, op, values, problems, error, http_status(error)[0])
    picked = {**{k: v for k, v in values.items() if k != NEW_PERSON_FIELD}, "person": person["id"]}
    origin = _offered_from(op, values)
    done = _("person registered as %(person)s: check the fields and add the contact") % {"person": person["id"]}
    if origin is not None:
        return object_page(request, engine, origin, prefill=(op.name, picked), flash=done)
    return render(request, "new.html", form={**_creation_form(op.operation_id, picked), "focus": PICKED}, flash=done)


# ---- the simulated clock -------------------------------------------------------------------------------------


@router.post("/clock/advance")
async def clock_advance(request: Request, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    target = _safe_next(str(form.get("next") or "/worklist"))
    amount = str(form.get("amount") or "").strip()
    unit = str(form.get("unit") or "days")
    if not amount.isdigit() or unit not in ("days", "hours"):
        raise UsageError(_("Move the clock by a whole number of days or hours, e.g. 1 day."))
    steps = int(amount)
    result = firing.clock_advance(engine, who.name, days=steps if unit == "days" else None,
                                  hours=steps if unit == "hours" else None)
    done = _("clock moved to %(now)s") % {"now": dk_time(result["now"])} + ": " + fired_text(result["fired"])
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}{urlencode({'done': done})}", status_code=303)


def fired_text(fired: list[dict[str, Any]]) -> str:
    """Which deadlines a clock step fired, by their names and objects: ``2 frister udløb: telefonisk anmeldelse
    (case-3), skriftlig anmeldelse (case-3)`` (the first ten; then how many more)."""
    if not fired:
        return _("no deadline fired")
    named = ", ".join(f"{i18n.trigger(f['name'])} ({f['object']})" for f in fired[:10])
    if len(fired) > 10:
        named += ", " + _("and %(n)d more") % {"n": len(fired) - 10}
    return i18n.ngettext("%(n)d deadline fired: %(names)s", "%(n)d deadlines fired: %(names)s",
                         len(fired)) % {"n": len(fired), "names": named}


# ---- reading: audit, diagrams, calendar ----------------------------------------------------------------------


@router.get("/diagrams/{kind}")
def diagram_page(request: Request, kind: Kind, who: Who, engine: Eng, diff: str | None = None,
                 definition_name: Annotated[str | None, Query(alias="definition")] = None) -> Response:
    """A workflow's diagram: the product's definition, or (``?definition=NAME``) another one loaded beside it, with
    the objects running under it; with ``?diff=B``, also what changed from it to the definition named B."""
    from workflows import diff as compare

    definition = WORKFLOWS[kind]
    if definition_name:
        chosen = DEFINITIONS.get(definition_name)
        if chosen is None or chosen.kind != kind:
            raise UsageError(_("There is no %(kind)s workflow definition %(name)s: choose one of %(names)s.")
                             % {"kind": kind, "name": shown(definition_name),
                                "names": ", ".join(n for n, d in sorted(DEFINITIONS.items()) if d.kind == kind)})
        definition = chosen
    changes = None
    if diff:
        other = DEFINITIONS.get(diff)
        if other is None:
            raise UsageError(_("There is no workflow definition %(name)s to compare with: choose one of %(names)s.")
                             % {"name": shown(diff), "names": ", ".join(n for n, d in sorted(DEFINITIONS.items())
                                                                      if d.kind == kind)})
        if other.kind != kind:
            raise UsageError(_("%(name)s is a definition of another workflow: compare with one of %(names)s.")
                             % {"name": other.name, "names": ", ".join(n for n, d in sorted(DEFINITIONS.items())
                                                                     if d.kind == kind)})
        result = compare.diff(definition, other)
        changes = {"to": other.name, "rows": diagram.diff_rows(result),
                   "mermaid": compare.mermaid(result, definition, other)}
    counts = engine.state_counts(kind, definition.name)  # the objects that run under this definition
    return render(request, "diagram.html", kind=kind, definition=definition, counts=counts,
                  svg=diagram.svg(definition, counts), internal=diagram.internal(definition),
                  mermaid=definition.mermaid(), kinds=list(WORKFLOWS), kind_titles=LISTS, changes=changes,
                  others=[n for n, d in sorted(DEFINITIONS.items()) if d.kind == kind and n != definition.name])


@router.get("/calendar")
def calendar_page(request: Request, who: Who, engine: Eng) -> Response:
    days = engine.calendar(8)
    weeks = [days[i:i + 7] for i in range(0, len(days), 7)]
    counts = [count for _, count in CALENDAR]
    peak = max([d[c.key] for d in days for c in counts] + [1])
    return render(request, "calendar.html", weeks=weeks, peak=peak, weekdays=WEEKDAYS, counts=counts,
                  totals={c.key: sum(d[c.key] for d in days) for c in counts})


# ---- users (admins) ------------------------------------------------------------------------------------------


@router.get("/users")
def users_page(request: Request, who: Who, engine: Eng) -> Response:
    engine.authorize(who.name, "user list", ADMIN_ROLES)  # users and tokens are listed to admins only
    return render(request, "users.html", users=engine.users(), units=engine.list_units(),
                  tokens=Accounts(engine).tokens())


@router.get("/account")
def account_page(request: Request, who: Who, engine: Eng) -> Response:
    """Your own password and the pages' language (any role)."""
    return render(request, "account.html", languages=LANGUAGE_NAMES)


#: The languages a user may choose, by their own names.
LANGUAGE_NAMES = {"da": "Dansk", "en": "English"}


@router.post("/account/language")
async def account_language(request: Request, who: Who, engine: Eng) -> Response:
    """Your language of the pages: stored with your user (it applies to every session, now and later);
    "browser" forgets the choice (the browser's language decides, else Danish)."""
    form = await posted(request, who)
    chosen = str(form.get("language") or "")
    try:
        Accounts(engine).set_language(who.name, None if chosen == "browser" else chosen, actor=who.name)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return render(request, "account.html", status_code=http_status(error)[0], error=error,
                      languages=LANGUAGE_NAMES)
    i18n.activate(i18n.language_of(None if chosen == "browser" else chosen, request.headers.get("accept-language")))
    done = _("your language is set")
    return RedirectResponse(f"/account?{urlencode({'done': done})}", status_code=303)


@router.post("/account")
async def account_change(request: Request, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    try:
        Accounts(engine).set_password(who.name, str(form.get("password") or ""), actor=who.name,
                                      keep_session=who.session_id, require_current=True,
                                      current_password=str(form.get("current_password") or "") or None,
                                      address=client_address(request))
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return render(request, "account.html", status_code=http_status(error)[0], error=error,
                      languages=LANGUAGE_NAMES)
    done = _("your password is set")
    return RedirectResponse(f"/account?{urlencode({'done': done})}", status_code=303)


@router.post("/users")
async def users_change(request: Request, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    accounts = Accounts(engine)
    action = str(form.get("action") or "")
    name = str(form.get("name") or "").strip()
    reason = str(form.get("reason") or "").strip() or None
    issued = None
    try:
        if action == "add":
            password = str(form.get("password") or "") or None
            lead = form.get("unit_role") == "lead"
            units = [f"{u}:lead" if lead else u for u in form.getlist("units") if isinstance(u, str) and u]
            accounts.add_user(name, str(form.get("role") or ""), password, actor=who.name, reason=reason,
                              units=units)
            done = _("user %(name)s added") % {"name": name}
        elif action == "password":
            accounts.set_password(name, str(form.get("password") or ""), actor=who.name, reason=reason,
                                  keep_session=who.session_id, require_current=True,
                                  current_password=str(form.get("current_password") or "") or None,
                                  address=client_address(request))
            done = _("password set for %(name)s") % {"name": name}
        elif action in ("disable", "enable"):
            accounts.set_disabled(name, action == "disable", actor=who.name, reason=reason)
            done = (_("user %(name)s disabled") if action == "disable" else _("user %(name)s enabled")) % {"name": name}
        elif action == "role":
            accounts.set_role(name, str(form.get("role") or ""), actor=who.name, reason=reason)
            done = _("role of %(name)s set") % {"name": name}
        elif action == "token":
            issued = accounts.issue_token(name, str(form.get("label") or ""), actor=who.name, reason=reason)
            done = _("token %(token)s issued for %(name)s") % {"token": issued["id"], "name": name}
        elif action == "revoke":
            accounts.revoke_token(str(form.get("token") or ""), actor=who.name, reason=reason)
            done = _("token %(token)s revoked") % {"token": form.get("token")}
        else:
            raise UsageError(_("Choose one of the forms on the page."))
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated) or who.role not in ADMIN_ROLES:
            raise  # a page of its own: the users and tokens are not listed to others
        return render(request, "users.html", status_code=http_status(error)[0], users=engine.users(),
                      units=engine.list_units(), tokens=accounts.tokens(), error=error)
    if issued is not None:  # the secret is shown on this page once, never again
        return render(request, "users.html", users=engine.users(), units=engine.list_units(),
                      tokens=accounts.tokens(), issued=issued, done_now=done)
    return RedirectResponse(f"/users?{urlencode({'done': done})}", status_code=303)


# ---- units (admins, issue 17) ----------------------------------------------------------------------------------

#: The placement rules as the units page names them.
PLACEMENT_NAMES = {"parent": i18n.N_("the unit of the object it belongs to (a contact: its case's)"),
                   "creator": i18n.N_("the unit of the user who creates it"),
                   "unit": i18n.N_("a unit chosen here")}
#: A member's role in a unit, as the pages say it.
ROLE_NAMES = {"member": i18n.N_("member"), "lead": i18n.N_("lead")}
#: The units page's forms (``action``).
UNIT_ACTIONS = ("unit_add", "member", "remove", "rule")


def _units_page(request: Request, engine: Engine, status_code: int = 200, **context: Any) -> Response:
    context = {"values": {}, "failed": None, **context}
    return render(request, "units.html", status_code=status_code, units=engine.list_units(),
                  rules=engine.placements(), users=[u for u in engine.users() if u["role"] != "timer"],
                  placement_names=PLACEMENT_NAMES, kind_titles=LISTS, **context)


@router.get("/units")
def units_page(request: Request, who: Who, engine: Eng) -> Response:
    """The tree of units with their members and roles, and the admins' forms: a new unit, a member added or their
    role changed, a membership ended, each kind's placement rule."""
    engine.authorize(who.name, "unit list", ADMIN_ROLES)  # managed by admins; the refusal is audited
    return _units_page(request, engine)


@router.post("/units")
async def units_change(request: Request, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    action = str(form.get("action") or "")
    values = {k: str(v).strip() for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}
    reason = values.get("reason") or None
    try:
        if action == "unit_add":
            made = engine.add_unit(values.get("name", ""), parent=values.get("parent", ""), actor=who.name,
                                   reason=reason)
            done = _("unit %(unit)s added") % {"unit": made["path"]}
        elif action == "member":
            role = values.get("role", "member")
            made = engine.set_member(values.get("unit", ""), values.get("user", ""), role=role, actor=who.name,
                                     reason=reason)
            done = _("%(user)s is a %(role)s of %(unit)s") % {
                "user": made["name"], "role": _(ROLE_NAMES.get(role, role)), "unit": made["unit_name"]}
        elif action == "remove":
            made = engine.remove_member(values.get("unit", ""), values.get("user", ""), actor=who.name,
                                        reason=reason)
            done = _("%(user)s left %(unit)s") % {"user": made["name"], "unit": made["unit_name"]}
            if made["returned"]:
                done += " " + _("(their work there is back in the unit's unassigned work: %(objects)s)") % {
                    "objects": ", ".join(made["returned"])}
        elif action == "rule":
            rule = values.get("rule", "")
            made = engine.set_placement(values.get("kind", ""), rule, unit=values.get("unit") or None,
                                        round_robin=form.get("round_robin") in ("on", "true", "1"),
                                        actor=who.name, reason=reason)
            done = _("placement of %(kind)s set") % {"kind": _(LISTS.get(made["kind"], made["kind"]))}
        else:
            raise UsageError(_("Choose one of the forms on the page."))
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated) or who.role not in ADMIN_ROLES:
            raise  # a page of its own: the units' forms are for admins
        return _units_page(request, engine, status_code=http_status(error)[0], error=error, failed=action,
                           values=values)
    return RedirectResponse(f"/units?{urlencode({'done': done})}", status_code=303)
