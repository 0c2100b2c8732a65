"""The read log's page (issue 19 item 3): who was shown which person's reference, for auditors and admins.

``/reads``: the rows newest first, a page at a time (keyset by the row's number), or a summary per person (how many
reads, by how many users, the first and the last) or per user (how many reads of how many persons), filtered by a
person, a user and Danish days (*Fra*, *Til*: the whole Danish day). A malformed filter is a message at its field
(422), nothing written; anyone but an auditor or an admin gets a 403 page, nothing written. The read log holds
internal ids only, so reading it is not itself a read of personal data (not logged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from entry.web import i18n
from entry.web.audit_desk import check_days, check_size
from entry.web.i18n import gettext as _
from entry.web.pages import Eng, Who, render, request_language
from persistence.repository import parse_id
from workflows.errors import MpoxflowError, NotFound
from workflows.limits import MAX_NAME

router = APIRouter(include_in_schema=False, dependencies=[Depends(request_language)])

#: The page sizes offered (any from 1 to the audit desk's ``MAX_PAGE`` is accepted: ``check_size``).
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE = 50
#: The views the page offers: every read, or a summary (msgids).
VIEWS = {"": i18n.N_("Every read"), "person": i18n.N_("Per person"), "user": i18n.N_("Per user")}
#: What showed the person, and how, as the page names them (msgids; ``engine.reads.WHAT``, ``VIA``).
READ_WHAT = {"ref": i18n.N_("a list, the worklist or a search"), "person": i18n.N_("the person's page"),
             "case": i18n.N_("a case's page"), "contact": i18n.N_("a contact's page"),
             "course": i18n.N_("a course's page"), "fhir": i18n.N_("FHIR"),
             "document": i18n.N_("a notification document"), "import": i18n.N_("an import's report"),
             "webhook": i18n.N_("a webhook delivery"), "report": i18n.N_("the person's report")}
READ_VIA = {"cli": i18n.N_("command line"), "web": i18n.N_("pages"), "api": i18n.N_("API"),
            "worker": i18n.N_("worker")}
FIELDS = ("person", "user", "fra", "til", "by", "size")


@dataclass
class ReadFilters:
    """The page's filters as typed, and, once checked, as ``Engine.read_log`` takes them."""

    person: str = ""
    user: str = ""
    fra: str = ""
    til: str = ""
    by: str = ""
    size: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    found: dict[str, Any] = field(default_factory=dict)
    limit: int = DEFAULT_PAGE

    @classmethod
    def read(cls, request: Request) -> ReadFilters:
        query = request.query_params
        filters = cls(**{name: (query.get(name) or "").strip()[:200] for name in FIELDS})
        filters.check()
        return filters

    def check(self) -> None:
        errors, found = self.errors, self.found
        if self.person:
            try:
                found["person"] = f"person-{parse_id(self.person.lower(), kind='person')[1]}"
            except MpoxflowError:
                errors["person"] = _("Write a person's id, e.g. person-3.")
        if self.user:
            if len(self.user) > MAX_NAME or not self.user.isprintable():
                errors["user"] = _("Write a user's name as the users page names them.")
            else:
                found["user"] = self.user
        check_days(self.fra, self.til, found, errors)
        if self.by:
            if self.by not in VIEWS:
                errors["by"] = _("Choose one from the list.")
            else:
                found["by"] = self.by
        self.limit = check_size(self.size, errors, self.limit)

    def query(self, **more: Any) -> str:
        kept = {name: getattr(self, name) for name in FIELDS}
        return urlencode({k: v for k, v in {**kept, **more}.items() if v not in ("", None)})


@router.get("/reads")
def reads_page(request: Request, who: Who, engine: Eng, older: str | None = None) -> Response:
    """The read log, newest first a page at a time, or summed up per person or per user."""
    engine.check_read_log()  # NotPermitted (403) for anyone but auditors and admins, before anything is read
    filters = ReadFilters.read(request)
    position = None
    if older:
        if not older.isdigit() or len(older) > 10:
            filters.errors["older"] = _("That page position is not one this page made: start again from the "
                                        "first page.")
        else:
            position = int(older)
    context: dict[str, Any] = {"filters": filters, "sizes": PAGE_SIZES, "views": VIEWS, "read_what": READ_WHAT,
                               "read_via": READ_VIA}
    if filters.errors:
        return render(request, "reads.html", status_code=422, result=None, **context)
    try:
        result = engine.read_log(limit=filters.limit, older_than=position if not filters.found.get("by") else None,
                                 **filters.found)
    except NotFound as missing:
        if missing.params.get("kind") == "person":
            filters.errors["person"] = _("No person is registered with that id.")
        else:
            filters.errors["user"] = _("No user by that name, and no reads by one.")
        return render(request, "reads.html", status_code=422, result=None, **context)
    links = {"older": f"/reads?{filters.query(older=result['older'])}" if result["older"] else None,
             "first": f"/reads?{filters.query()}" if position is not None else None}
    return render(request, "reads.html", result=result, links=links, **context)
