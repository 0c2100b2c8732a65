"""The written notification (§3.1) as a document over HTTP and on the pages (issue 18 part 3).

``POST /api/cases/{object_id}/document`` (and the case page's button, ``POST /cases/{id}/document``) makes the
document of a confirmed case (``Engine.make_document``); ``/documents/{id}`` is its printable page in Danish (the
Bundle's content in human form and its hash); ``GET /fhir/Bundle/{id}`` (``entry.web.fhir``) the Bundle itself.
Its sending is the case's ``notify`` operation with ``document`` (``POST /api/cases/{id}/notify``, the form).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from engine.accounts import Login
from engine.core import Engine
from engine.notification import SECTIONS, TITLE, stored_content
from entry.parsing import MAX_NOTE
from entry.web import i18n, pages
from entry.web.api import may_act
from entry.web.app import ERROR_RESPONSES, engine_dependency, login_dependency
from workflows.errors import MpoxflowError, NotAuthenticated, OutsideUnits

api = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
router = APIRouter(include_in_schema=False, dependencies=[Depends(pages.request_language)])
Eng = Annotated[Engine, Depends(engine_dependency)]
Who = Annotated[Login, Depends(login_dependency)]
DocumentActor = may_act("case document")
_ = i18n.gettext


class DocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, description="Why: goes into the audit entry.", max_length=MAX_NOTE)


@api.post("/cases/{object_id}/document", operation_id="case_document", tags=["case"], status_code=201,
          summary="case document")
def case_document(object_id: str, body: DocumentRequest, who: DocumentActor, engine: Eng) -> dict[str, Any]:
    """`mpoxflow case document`: make the written notification (SST-mpox-7.1 §3.1) of a confirmed case as a FHIR
    document Bundle, from the case as it is now; 409 for a case not confirmed. Send it with
    `POST /api/cases/{object_id}/notify` (`channel` written, `document` its id)."""
    return engine.make_document(object_id, actor=who.name, reason=body.reason)


@api.get("/changed-since-sent", operation_id="changed_since_sent", tags=["case"])
def changed_since_sent(who: Who, engine: Eng) -> list[dict[str, Any]]:
    """Open confirmed cases of the user's units whose written notification (SST-mpox-7.1 §3.1) no longer holds
    them: each with the last document sent, when, and what changed since (`changes`: field, sent, now)."""
    return engine.changed_since_sent()


@router.post("/cases/{object_id}/document")
async def make_from_page(request: Request, object_id: str, who: Who, engine: Eng) -> Response:
    """The case page's button: make the document, then show its printable page."""
    form = await pages.posted(request, who)
    reason = form.get("reason")
    try:
        made = engine.make_document(object_id, actor=who.name,
                                    reason=reason.strip() or None if isinstance(reason, str) else None)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return pages.object_page(request, engine, object_id, status_code=pages.http_status(error)[0],
                                 failed=("case document", {}, {}, error))
    done = _("notification document made")
    return RedirectResponse(f"/documents/{made['id']}?{urlencode({'done': done})}", status_code=303)


@router.get("/documents/{document_id}")
def document_page(request: Request, document_id: str, who: Who, engine: Eng) -> Response:
    """The written notification, printable: what the Bundle holds, in Danish first, and its hash."""
    try:
        view = engine.document(document_id)
    except OutsideUnits as error:
        return pages.outside_page(request, str(error.target), error)
    if view.get("purged"):  # issue 19: its content was deleted with its case's person; id, hash and dates kept
        return pages.render(request, "document.html", document=view, content=None, sections=SECTIONS,
                            composition={"title": TITLE})
    content = stored_content(view["bundle"])
    return pages.render(request, "document.html", document=view, content=content, sections=SECTIONS,
                        composition=view["bundle"]["entry"][0]["resource"])

