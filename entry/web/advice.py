"""Advice sheets (issue 21 item 3) on the pages, and their HTML and PDF rendering.

``GET /objects/{id}/advice/{sheet}`` is the printable page of an object's sheet (``engine.advice``), in Danish,
English with ``?lang=en`` or by the user's language (the account's, else the browser's); ``.../{sheet}.pdf`` the
same content as a PDF, rendered by WeasyPrint from the same template with the same stylesheet
(``entry/static/advice.css``). The object's page links its sheets. A sheet shows no reference and no birth date,
so reading one is no read of personal data (``engine.reads``) and nothing is recorded.

``content_html``, ``document_html`` and ``pdf`` render a ``Sheet`` without a request (the command line's
``advice --pdf``; later an e-mail's attachment): they need Jinja2 and WeasyPrint, imported only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from engine import advice
from engine.accounts import Login
from engine.core import Engine
from entry.web import i18n, pages
from entry.web.app import engine_dependency, http_status, login_dependency
from workflows.errors import MpoxflowError, NotAuthenticated, OutsideUnits, UsageError

_ = i18n.gettext
router = APIRouter(include_in_schema=False, dependencies=[Depends(pages.request_language)])
Eng = Annotated[Engine, Depends(engine_dependency)]
Who = Annotated[Login, Depends(login_dependency)]

#: The sheets' stylesheet: served from our origin on the page, given to WeasyPrint for the PDF.
STYLE = Path(__file__).resolve().parent.parent / "static" / "advice.css"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _environment() -> Any:
    """A Jinja2 environment over the templates with the translations installed (no FastAPI, no request)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    i18n.install(env)
    return env


_ENV: list[Any] = []


def _template(name: str) -> Any:
    if not _ENV:
        _ENV.append(_environment())
    return _ENV[0].get_template(name)


def content_html(sheet: advice.Sheet) -> Any:
    """The sheet's content (``_advice.html``) as Markup, in the sheet's own language."""
    from markupsafe import Markup

    previous = i18n.current()
    i18n.activate(sheet.language)
    try:
        return Markup(_template("_advice.html").render(sheet=sheet))
    finally:
        i18n.activate(previous)


def document_html(sheet: advice.Sheet) -> str:
    """The standalone document of the sheet (what the PDF is made from): its content, no navigation, no script,
    no style of its own (the stylesheet is given to WeasyPrint)."""
    return str(_template("advice_document.html").render(sheet=sheet, content=content_html(sheet)))


def _no_fetching(url: str, *args: Any, **kwargs: Any) -> Any:
    """WeasyPrint's URL fetcher: the document loads nothing (its stylesheet is given directly)."""
    raise ValueError(f"an advice sheet loads nothing: {url[:60]}")


def pdf(sheet: advice.Sheet) -> bytes:
    """The sheet as a PDF (A4), rendered by WeasyPrint from ``document_html`` with ``advice.css``."""
    import weasyprint

    document = weasyprint.HTML(string=document_html(sheet), url_fetcher=_no_fetching)
    data: bytes = document.write_pdf(stylesheets=[weasyprint.CSS(filename=str(STYLE), url_fetcher=_no_fetching)])
    return data


def sheet_language(request: Request, lang: str | None) -> str:
    """``?lang`` (da, en; anything else a UsageError), else the user's language (the account's, else the
    browser's, else Danish)."""
    if lang is not None:
        return advice.check_language(lang)
    login = getattr(request.state, "login", None)
    return i18n.language_of(getattr(login, "language", None), request.headers.get("accept-language"))


def links(view: dict[str, Any]) -> list[dict[str, str]]:
    """The sheets an object's page links (``object.html``): each its name, title words and paths."""
    return [{"name": name, "page": f"/objects/{view['id']}/advice/{name}",
             "pdf": f"/objects/{view['id']}/advice/{name}.pdf", "title": SHEET_TITLES[name]}
            for name in advice.sheets_for(view)]


#: What an object's page calls each sheet (msgids).
SHEET_TITLES = {"suspected": i18n.N_("Advice sheet for a suspected case (§2.2)"),
                "confirmed": i18n.N_("Advice sheet for a confirmed case (§4.1)"),
                "contact": i18n.N_("Advice sheet for a close contact (§5.5)"),
                "pep": i18n.N_("Information before PEP vaccination (§6.2)")}


@router.get("/objects/{object_id}/advice/{sheet}")
def advice_sheet(request: Request, object_id: str, sheet: str, who: Who, engine: Eng,
                 lang: str | None = None) -> Response:
    """An object's advice sheet, printable (``{sheet}.pdf``: as a PDF)."""
    as_pdf = sheet.endswith(".pdf")
    name = sheet.removesuffix(".pdf")
    try:
        made = advice.make(engine, object_id, name, sheet_language(request, lang))
    except OutsideUnits as error:
        return pages.outside_page(request, object_id, error)
    if as_pdf:
        return Response(pdf(made), media_type="application/pdf", headers={
            "Content-Disposition": f'inline; filename="{made.object}-{made.name}-{made.language}.pdf"'})
    return _page(request, engine, who, made)


def _page(request: Request, engine: Engine, who: Login, made: advice.Sheet, status_code: int = 200,
          **context: Any) -> Response:
    """The sheet's page, with the forms that send it by e-mail or record it as given, and its messages so far."""
    from engine.messages import Messages

    sent = Messages(engine).of(made.object, actor=who.name)
    return pages.render(request, "advice.html", status_code=status_code, sheet=made, content=content_html(made),
                        messages=[m for m in sent if m.get("sheet") == made.name], **context)


@router.post("/objects/{object_id}/advice/{sheet}/send")
async def advice_send(request: Request, object_id: str, sheet: str, who: Who, engine: Eng) -> Response:
    """The sheet's forms (issue 21 item 4): e-mail it to the person (queued, sent by the worker) or record that it
    was given by phone or letter; each an audited entry on the object's chain. A refusal shows the page again with
    its message and the form as filled in; nothing is written."""
    from engine.messages import Messages

    form = await pages.posted(request, who)
    channel = str(form.get("channel") or "")
    language = str(form.get("language") or "da")
    email = str(form.get("email") or "").strip()
    made = advice.make(engine, object_id, sheet, sheet_language(request, language))
    messages = Messages(engine)
    try:
        if channel == "email":
            if not email:
                raise UsageError(_("%(field)s: give the address the sheet is sent to.")
                                 % {"field": _("E-mail address")})
            messages.send(object_id, sheet, "email", to=email, actor=who.name, language=made.language)
            done = _("the sheet is queued to be sent by e-mail")
        else:
            messages.given(object_id, sheet, channel, actor=who.name, language=made.language)
            done = _("the sheet is recorded as given")
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return _page(request, engine, who, made, status_code=http_status(error)[0], error=error,
                     typed_email=email)
    return _page(request, engine, who, made, flash=done)


pages.templates.env.globals["advice_links"] = links
