"""The pages' languages: Danish first, English second (issue 16).

Messages are gettext catalogs kept with Babel in ``entry/locale/{da,en}/LC_MESSAGES/messages.po``; their msgids are
English, ``da`` is the default language; ``en`` keeps the pages' own texts as they are (identity) and gives the
declarations' words (the entries with a context below) readable English (``dose1_given``: "dose 1 given").
The catalogs are read from the ``.po`` files when first used (no compiled ``.mo`` is needed, so a fresh clone has
no build step; ``pybabel compile`` still works).
Fuzzy entries are not used.

The language of a request (a :class:`~contextvars.ContextVar`, set per request by the pages) is the user's stored
choice, else the browser's ``Accept-Language`` (da or en), else Danish. :func:`gettext` (``_``), :func:`ngettext`
and :func:`pgettext` translate into it, from Python and from the templates (installed in their Jinja2 environment).

Besides the pages' own texts, the catalog holds the words of the declarations in workflows/ (states, choices,
triggers, operation names and summaries, help texts, task labels, fact names), each with a context
(``state``, ``value``, ``trigger``, ``operation``, ``fact``): :func:`extract_declarations` is the Babel extractor
that reads them (``babel.cfg``), so ``pybabel extract`` finds them as it finds ``_("...")`` in a page.
"""

from __future__ import annotations

import dataclasses
import functools
import gettext as _gettext
import io
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

LANGUAGES = ("da", "en")
DEFAULT = "da"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "messages"

_language: ContextVar[str] = ContextVar("mpoxflow_language", default=DEFAULT)


@functools.cache
def translations(language: str) -> _gettext.NullTranslations:
    """The catalog of ``language``, read from its ``.po`` file (fuzzy entries left out)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import Translations

    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return _gettext.NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def activate(language: str | None) -> str:
    """Make ``language`` (a known one, else the default) the current request's; returns it."""
    chosen = language if language in LANGUAGES else DEFAULT
    _language.set(chosen)
    return chosen


def current() -> str:
    """The current request's language."""
    return _language.get()


def negotiate(accept_language: str | None) -> str | None:
    """The first of our languages an ``Accept-Language`` header asks for (by its q-values), or None."""
    if not accept_language:
        return None
    asked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        match = re.search(r"q=([0-9.]+)", params)
        if match:
            try:
                quality = float(match[1])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in ("nb", "nn", "no"):  # a Norwegian reads Danish before English
            primary = "da"
        if primary in LANGUAGES and quality > 0:
            asked.append((-quality, position, primary))
    return min(asked)[2] if asked else None


def language_of(stored: str | None, accept_language: str | None) -> str:
    """The user's stored choice, else the browser's, else Danish."""
    if stored in LANGUAGES:
        return stored
    return negotiate(accept_language) or DEFAULT


def gettext(message: str) -> str:
    """``message`` (English) in the current request's language."""
    return translations(current()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current()).ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    """``message`` in ``context`` (a state, a value, a trigger...) in the current request's language."""
    return translations(current()).pgettext(context, message)


def npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return translations(current()).npgettext(context, singular, plural, n)


_ = gettext


def N_(message: str) -> str:
    """Marks ``message`` for the catalog without translating it here (translated where it is shown)."""
    return message


# ---- the declarations' words ---------------------------------------------------------------------------------


def state(name: str) -> str:
    return pgettext("state", name)


def term(value: Any) -> Any:
    """A declared value (an exposure kind, a symptom, a risk level, a PEP window...) in the current language;
    anything else as it is."""
    return pgettext("value", value) if isinstance(value, str) and value else value


def trigger(name: str) -> str:
    """A trigger or timer name (``confirm``, ``pep_window_closes``) in the current language."""
    return pgettext("trigger", name) if name else name


def operation(name: str) -> str:
    """An operation's name (``case confirm``) as the page's heading and button say it."""
    return pgettext("operation", name)


def fact(name: str) -> str:
    """A fact's name (``pcr_on``) as a page's table of facts says it; one the catalog lacks
    in its words (``pcr on``)."""
    shown = pgettext("fact", name)
    return shown.replace("_", " ") if shown == name else shown


def label(declared: Any) -> str:
    """A declared field's label in the current language (workflows.operations.Field's label_da / label_en)."""
    if current() == "en":
        return str(declared.label_en or declared.label_da or declared.name.replace("_", " "))
    return str(declared.label_da or declared.label_en or declared.name.replace("_", " "))


#: ISO dates inside a text, and the dates of task texts made with them (``assess PEP by 2025-07-01``).
ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b(?!T)")
#: The task texts made with dates in workflows/ (their dates written ``{0}``, ``{1}``), for the catalog.
DATED_TASKS = (
    N_("assess PEP by {0} (best by {1})"),
    N_("give dose 2 (from {0})"),
)


def task(text: str | None) -> str:
    """A timer's task text in the current language, its dates the Danish way (``dd.mm.åååå``)."""
    if not text:
        return ""
    dates: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        dates.append(f"{match[3]}.{match[2]}.{match[1]}")
        return "{" + str(len(dates) - 1) + "}"

    template = ISO_DATE.sub(placeholder, text)
    translated = gettext(template)
    try:
        return translated.format(*dates)
    except (IndexError, KeyError, ValueError):
        return ISO_DATE.sub(lambda m: f"{m[3]}.{m[2]}.{m[1]}", text)


# ---- Babel's extractor of the declarations ---------------------------------------------------------------------


def declared_messages() -> Iterator[tuple[str | None, str]]:
    """Every (context, message) of the declarations a page shows: states, triggers and timers, choices, operation
    names, summaries and help texts, task labels and texts, fact names, list titles and calendar legends."""
    from engine.commands import TASK_OUTCOMES
    from engine.queries import TIMER_STATUSES
    from workflows import contact, course
    from workflows.registry import OPERATIONS, PROFILES, WORKFLOWS

    yield "state", "new"  # the diagrams' start, before an object exists (workflows.definition.NEW)
    for definition in WORKFLOWS.values():
        for name in definition.states:
            yield "state", name
        for spec in definition.transitions:
            yield "trigger", spec.trigger
            yield None, spec.summary
        for timer in definition.timers.values():
            yield "trigger", timer.name
            yield None, timer.after  # what its period counts from (the diagram page's changes)
        if dataclasses.is_dataclass(definition.facts):
            for f in dataclasses.fields(definition.facts):
                yield "fact", f.name
    for name in TIMER_NAMES:
        yield "trigger", name
    for name in EXTRA_TRIGGERS:
        yield "trigger", name
    for name in EXTRA_FACTS:
        yield "fact", name
    for op in OPERATIONS:
        yield "operation", op.name
        yield None, op.summary
        for f in (*op.fields, op.reason):
            if f.help:
                yield None, f.help
            for choice in f.choices:
                yield "value", choice
        for t in op.tasks:
            yield None, t.label
    for profile in PROFILES.values():
        yield None, profile.title
        for count in profile.calendar:
            yield None, count.legend
            yield None, count.cell
    for value in (*contact.RISKS, *contact.PEP_WINDOWS, *contact.EXPOSURE_KINDS, *course.INDICATIONS,
                  *TASK_OUTCOMES, *TIMER_STATUSES, *EXTRA_VALUES):
        yield "value", value
    for text in TASK_TEXTS():
        yield None, text
    yield from note_words()


def note_words() -> Iterator[tuple[str, str]]:
    """The words of notes and contact attempts (issue 17): their audit triggers, their fields (as a refusal names
    them), an attempt's channels (context ``channel``) and outcomes (``outcome``)."""
    from engine.notes import CHANNELS, OUTCOMES

    yield "trigger", "note"
    yield "trigger", "attempt"
    yield "fact", "text"
    yield "fact", "channel"
    for channel in CHANNELS:
        yield "channel", channel
    for outcome in OUTCOMES:
        yield "outcome", outcome


def TASK_TEXTS() -> tuple[str, ...]:  # noqa: N802 (a constant read late: workflows/ is imported on use)
    from workflows import case, contact

    return (case.PAEDIATRIC_TASK, case.SEQUENCING_TASK, case.TEST_RESULT_TASK, contact.INFORM_TASK,
            contact.DOCTOR_INFORM_TASK, "notify STPS by phone", "notify SSI and STPS in writing",
            "PEP window closed after {0}: record a dose 1 given by then, or decline (the offer ends "
            "without a dose)", *DATED_TASKS)


#: Timer names that are not also a trigger's.
TIMER_NAMES = ("condom_advice_ends", "inform_due", "monitoring_ends", "paediatric_referral_due",
               "pep_assessment_due", "pep_window_closes", "pep_optimal_window_closes", "phone_notification_due",
               "sequencing_sample_due", "written_notification_due", "dose2_due")
#: Audit triggers that are not a workflow's (a person's facts, a task's resolution, a refusal).
EXTRA_TRIGGERS = ("add", "update", "create", "refused", "task_resolved", "resolve",
                  # whose work, and who looked (issue 17): engine/units.py, engine/organisation.py
                  "assign", "transfer", "break_glass", "join", "member_role", "leave", "placement",
                  # a person's own copy (issue 19, GDPR art. 15): engine/person_report.py
                  "reported",
                  # a person registered (engine/commands.py), a case's written notification made (issue 18)
                  "register", "document",
                  # an open object moved to a later workflow definition (issue 20): engine/migration.py
                  "migrated",
                  # which definition new objects start under set (issue 20): engine/definitions.py
                  "set")
#: Facts of a view besides the workflow's facts dataclass.
EXTRA_FACTS = ("ref", "born", "immunocompromised", "pregnant", "breastfeeding", "previous_mpox",
               "smallpox_vaccinated", "doses_elsewhere", "last_dose_on", "person", "case", "contact",
               "created_at", "updated_at", "opened_at", "closed_at", "cases", "contacts", "courses", "on", "kind",
               "reason",
               # the keys of facts that are records: a case's antiviral assessment (§3.4), a PEP dose's consent
               "at", "assessed_by", "decision", "informed_consent", "indication", "justification",
               # the keys of an audit entry's data and of its timers (the auditor's desk, an entry's detail)
               "timer", "due_at", "fired_late_by_seconds", "outcome", "note", "attempts", "error", "object", "name",
               "rule", "task", "overdue_at", "why", "resolution", "status", "born_changed", "before", "rules",
               "role", "changes", "session", "label", "token", "disabled", "password",
               # units and assignment (issue 17): the fields their refusals name, their entries' data
               "unit", "assignee", "parent", "in_unit", "of_user", "unassigned", "round_robin", "user",
               "break_glass", "mine", "read", "returned", "units",
               # contact attempts (issue 17): the object's count of failed ones since the last that reached
               "failed_attempts",
               # a default definition's setting (issue 20): its entry's data
               "definition", "effective_from")
#: Who makes a transition that keeps the state (``entry.web.diagram.internal``), a role of a user.
BY = (N_("timer"), N_("another object's change"), N_("staff"), N_("auditor"), N_("admin"))
#: The headings of an object's related objects (``object.html``).
RELATED = (N_("Contact records"), N_("Vaccination courses"))
#: Other values a page shows (yes/no answers).
EXTRA_VALUES = ("yes", "no", "staff", "auditor", "admin", "timer",
                # why the engine closed a timer (an audit entry's cancelled timers, engine/commands.py)
                "re-armed", "cancelled by the transition", "task done in time")


def extract_declarations(fileobj: Any, keywords: Any, comment_tags: Any,
                         options: dict[str, Any]) -> Iterator[tuple[int, str, Any, list[str]]]:
    """A Babel extractor (``babel.cfg``: ``[declarations: workflows/registry.py]``): the declarations' words, as
    if each were written ``pgettext(context, message)`` (or ``gettext(message)``) on line 1 of the registry."""
    seen: set[tuple[str | None, str]] = set()
    for context, message in declared_messages():
        if not message or (context, message) in seen:
            continue
        seen.add((context, message))
        if context is None:
            yield 1, "gettext", message, []
        else:
            yield 1, "pgettext", (context, message), []


# ---- Babel's extractor of the refusals ---------------------------------------------------------------------------

#: The functions whose first argument, a literal, is a refusal's template or a phrase given to one (workflows.errors).
REFUSAL_KEYWORDS = ("because", "phrase")


def refusal_templates(source: str) -> Iterator[tuple[int, str]]:
    """Every (line, literal) given as the first argument of ``because(...)`` or ``phrase(...)`` in ``source``."""
    import ast

    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        first = node.args[0]
        if name in REFUSAL_KEYWORDS and isinstance(first, ast.Constant) and isinstance(first.value, str):
            yield node.lineno, first.value


def extract_refusals(fileobj: Any, keywords: Any, comment_tags: Any,
                     options: dict[str, Any]) -> Iterator[tuple[int, str, Any, list[str]]]:
    """A Babel extractor (``babel.cfg``: ``[refusals: workflows/**.py]``): each refusal's template, as if written
    ``pgettext("refusal", template)`` where ``because(template, ...)`` is."""
    source = fileobj.read()
    for line, text in refusal_templates(source.decode("utf-8") if isinstance(source, bytes) else source):
        yield line, "pgettext", ("refusal", text), []


def install(env: Any) -> None:
    """Install the translations in a Jinja2 environment (``_()``, ``{% trans %}``), translating per request."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(gettext, ngettext, newstyle=True, pgettext=pgettext, npgettext=npgettext)


Labeller = Callable[[str], str]
