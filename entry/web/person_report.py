"""A person's own copy (GDPR art. 15; issue 19 item 2) over HTTP and on the pages, and as a standalone document.

``GET /api/persons/{object_id}/report`` answers the report's JSON (``engine.person_report``); the staff page
``/persons/{id}/report`` shows it printable (Danish first, English by the user's language; ``?format=json`` gives
the JSON), linked from the person's page. ``render_document`` makes the standalone printable Danish HTML document
the command line writes (``mpoxflow person report ID --format html --output FILE``): the same content, its style
inlined, no navigation. Every making is audited on the person's chain (the engine does it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from markupsafe import Markup, escape

from engine.accounts import Login
from engine.core import Engine
from entry.web import i18n, pages
from entry.web.app import ERROR_RESPONSES, engine_dependency, error_body, login_dependency
from workflows.errors import MpoxflowError, NotAuthenticated, UsageError, because

api = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
router = APIRouter(include_in_schema=False, dependencies=[Depends(pages.request_language)])
Eng = Annotated[Engine, Depends(engine_dependency)]
Who = Annotated[Login, Depends(login_dependency)]
_ = i18n.gettext
N_ = i18n.N_

#: The report's own style (also inlined into the standalone document).
STYLE = Path(__file__).resolve().parent.parent / "static" / "person_report.css"
#: What became of a deadline (``engine.person_report.deadline_status``), as the document says it.
DEADLINE_STATUS = {"done": N_("done"), "missed": N_("missed (not done by the deadline)"),
                   "closed": N_("closed before its deadline"), "due": N_("due, still open"),
                   "pending": N_("not yet due"), "fired": N_("passed"), "cancelled": N_("cancelled"),
                   "skipped": N_("skipped"), "failed": N_("could not run")}
#: Who received the person's data, by recipient (``engine.person_report.NOTIFIED``).
RECIPIENTS = {"STPS": N_("the Danish Patient Safety Authority (STPS)"),
              "SSI and STPS": N_("Statens Serum Institut (SSI) and the Danish Patient Safety Authority (STPS)")}


@api.get("/persons/{object_id}/report", operation_id="person_report", tags=["person"], summary="person report")
def person_report(object_id: str, who: Who, engine: Eng) -> dict[str, Any]:
    """`mpoxflow person report`: everything mpoxflow holds about the person (GDPR art. 15) as one JSON document
    (its top-level keys: README "A person's own copy"): their facts, cases, contact records, courses, deadlines,
    notes, notification documents, the audit entries of their chain and their objects' chains, who received their
    data. Only that person's data: a case's close contacts as their number and kinds. Made by auditors, and by
    staff and admins whose units hold one of the person's objects; audited on the person's chain (trigger
    `reported`). 403 for another unit's user, 404, 422 for an id of another kind (nothing written)."""
    return engine.person_report(object_id, actor=who.name, fmt="json")


@router.get("/persons/{object_id}/report")
def report_page(request: Request, object_id: str, who: Who, engine: Eng, format: str | None = None) -> Response:
    """The person's report, printable (``?format=json``: the JSON)."""
    wants_json = format == "json"
    try:
        if format not in (None, "", "html", "json"):
            raise UsageError(because("⟦format⟧ '%(format)s' is not a format of the report: use json or html",
                                     format=str(format)[:20]))
        report = engine.person_report(object_id, actor=who.name, fmt="json" if wants_json else "html")
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated) or not wants_json:
            raise
        return JSONResponse(error_body(error), status_code=error.http_status)
    if wants_json:
        return JSONResponse(report)
    return pages.render(request, "person_report.html", report=report, **context(report))


def context(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the report's templates read besides the report."""
    return {"deadline_status": DEADLINE_STATUS, "recipients_named": RECIPIENTS}


def local(value: Any) -> Any:
    """A report's instant (``{"utc", "local"}``) as its local ISO text, and every one inside a value so."""
    if isinstance(value, Mapping):
        if set(value) == {"utc", "local"}:
            return value["local"]
        return {k: local(v) for k, v in value.items()}
    if isinstance(value, list):
        return [local(v) for v in value]
    return value


def report_value(value: Any) -> Markup:
    """A fact of the report as the document shows it: as an object's page does (dates ``dd.mm.åååå``, instants
    with their time, declared values in the page's language), ids as plain text (the document is read away from
    the pages)."""
    value = local(value)
    if isinstance(value, str) and pages.OBJECT_ID.match(value):
        return Markup(escape(value))
    if isinstance(value, list) and value and all(isinstance(v, str) and pages.OBJECT_ID.match(v) for v in value):
        return Markup(escape(", ".join(value)))
    return pages.fact_value(value)


def when_text(value: Any) -> str:
    """A report's instant the Danish way (``03.03.2025 kl. 08.00``)."""
    return pages.dk_time(local(value))


def deadline_text(value: Any) -> Markup:
    """A deadline as the last day it covers (``senest 04.03.2025``; another hour than midnight with its time),
    the instant on hover: never "today" (the document is read later)."""
    return pages.deadline(local(value))


pages.templates.env.filters["report_value"] = report_value
pages.templates.env.filters["report_when"] = when_text
pages.templates.env.filters["report_deadline"] = deadline_text
pages.templates.env.filters["local"] = local


def render_document(report: Mapping[str, Any], language: str = "da") -> str:
    """The standalone printable document of a report (Danish by default): the page's content with its style
    inlined, no navigation, no script."""
    previous = i18n.current()
    i18n.activate(language)
    try:
        template = pages.templates.env.get_template("person_report_document.html")
        return template.render(report=report, lang=language, style=Markup(STYLE.read_text(encoding="utf-8")),
                               **context(report))
    finally:
        i18n.activate(previous)
