"""The auditor's desk: the audit log filtered by Danish dates, an object, a trigger and an actor, paged newest first;
an entry's detail (its data, its changes before and after, its timers, its hash and its predecessor's); an object
as it was at any instant; the hash-chain check and the replay check; and the export of the filtered view as JSON
Lines, CSV, an Excel-friendly CSV or an Excel workbook.

Every page here only reads: any logged-in role may use it (auditors, staff, admins), as the API's audit reads.
A malformed filter is a message at its field (422), with the form as typed; never a page of its own.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import IO, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from engine.auditing import DESK_FORMATS
from engine.core import Engine
from engine.queries import DEFAULT_AUDIT_PAGE
from entry.web.i18n import gettext as _
from entry.web.pages import Eng, Who, dk_time, render, request_language
from persistence.repository import parse_id
from workflows.calendar import DANISH, local_midnight
from workflows.errors import MpoxflowError, NotFound, UsageError
from workflows.limits import MAX_NAME, check_instant
from workflows.registry import WORKFLOWS

router = APIRouter(include_in_schema=False, dependencies=[Depends(request_language)])


#: The page sizes offered; any size from 1 to ``MAX_PAGE`` is accepted.
PAGE_SIZES = (25, 50, 100, 200)
MAX_PAGE = 500
#: How the export formats are named on the desk, and what each download is.
FORMAT_LABELS = {"jsonl": "JSON Lines", "csv": "CSV", "excel-csv": "CSV (Excel, dansk)", "xlsx": "Excel (XLSX)"}
DOWNLOADS = {
    "jsonl": ("application/x-ndjson; charset=utf-8", "mpoxflow-audit.jsonl"),
    "csv": ("text/csv; charset=utf-8", "mpoxflow-audit.csv"),
    "excel-csv": ("text/csv; charset=utf-8", "mpoxflow-audit-excel.csv"),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "mpoxflow-audit.xlsx"),
}

# ---- Danish dates and times, typed ---------------------------------------------------------------------------

_DK_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
_DK_DATE_TIME = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})(?:\s+kl\.?)?\s+(\d{1,2})[.:](\d{2})(?:[.:](\d{2}))?")


def parse_when(text: str) -> date | datetime:
    """A typed day or instant: ``dd.mm.åååå`` or ``åååå-mm-dd`` (a day), ``dd.mm.åååå tt.mm`` (also with
    ``kl.``, a colon, seconds) or an ISO 8601 instant (an instant; without an offset, Danish local time).
    ValueError otherwise."""
    raw = " ".join(text.split())
    found = _DK_DATE.fullmatch(raw)
    if found:
        return date(int(found[3]), int(found[2]), int(found[1]))
    found = _DK_DATE_TIME.fullmatch(raw)
    if found:
        day = date(int(found[3]), int(found[2]), int(found[1]))
        return _local(datetime.combine(day, time(int(found[4]), int(found[5]), int(found[6] or 0))))
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        return date.fromisoformat(raw)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?", raw):
        raise ValueError(raw)
    return _local(datetime.fromisoformat(raw))


def _local(value: datetime) -> datetime:
    """A local wall-clock time as Copenhagen's instant; one with an offset as it is."""
    return value if value.tzinfo is not None else value.replace(tzinfo=DANISH)


def _date_message() -> str:
    return _("Write a date as dd.mm.yyyy (e.g. 14.03.2025), or a date and time (14.03.2025 09.30).")


def check_days(fra: str, til: str, found: dict[str, Any], errors: dict[str, str]) -> None:
    """A filter form's days as typed (*Fra*, *Til*: ``fra``, ``til``) into ``found`` as the instants a listing takes
    (``since``, inclusive; ``before``, exclusive), or a message at each field into ``errors``."""
    for name, value, end in (("fra", fra, False), ("til", til, True)):
        if value:
            try:
                found["since" if name == "fra" else "before"] = _bound(value, end=end)
            except ValueError:
                errors[name] = _date_message()
    if "since" in found and "before" in found and found["before"] <= found["since"]:
        errors["til"] = _("The end date is before the start date: swap them.")


def check_size(size: str, errors: dict[str, str], default: int) -> int:
    """A filter form's entries per page as typed (``size``): the number, or ``default`` (with a message at the
    field in ``errors`` for what is no number from 1 to ``MAX_PAGE``)."""
    if not size:
        return default
    if not size.isdigit() or not 1 <= int(size) <= MAX_PAGE:
        errors["size"] = _("Give a number of entries per page from 1 to %(most)s.") % {"most": MAX_PAGE}
        return default
    return int(size)


def _bound(text: str, *, end: bool) -> datetime:
    """A day from the desk's fields as the instant that starts it (``end``: the one that ends it, the next
    day's 00:00, exclusive); an instant as itself (``end``: inclusive). ValueError for what is no date."""
    when = parse_when(text)
    try:
        if isinstance(when, datetime):
            bound = when + timedelta(microseconds=1) if end else when
        else:
            bound = local_midnight(when + timedelta(days=1)) if end else local_midnight(when)
        return check_instant(bound, "date")
    except (UsageError, OverflowError):  # a year 1 or 9999 day has no instant Copenhagen can name
        raise ValueError(text) from None


# ---- the filters ---------------------------------------------------------------------------------------------


@dataclass
class Filters:
    """The desk's filters as typed, and, once checked, as the engine takes them."""

    entity: str = ""
    fra: str = ""
    til: str = ""
    trigger: str = ""
    actor: str = ""
    size: str = ""
    unit: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    engine_filters: dict[str, Any] = field(default_factory=dict)
    limit: int = DEFAULT_AUDIT_PAGE

    @classmethod
    def read(cls, request: Request) -> Filters:
        """The filters from the query string (``since``/``until`` taken for ``fra``/``til`` too), checked."""
        query = request.query_params
        typed = {name: (query.get(name) or "").strip()[:200] for name in ("entity", "fra", "til", "trigger",
                                                                           "actor", "size", "unit")}
        typed["fra"] = typed["fra"] or (query.get("since") or "").strip()[:200]
        typed["til"] = typed["til"] or (query.get("until") or "").strip()[:200]
        filters = cls(**typed)
        filters.check()
        return filters

    def check(self) -> None:
        errors, found = self.errors, self.engine_filters
        if self.entity:
            try:
                parse_id(self.entity)
                found["entity"] = self.entity
            except MpoxflowError:
                errors["entity"] = _("Write an object's id, e.g. case-3, contact-12 or person-1.")
        check_days(self.fra, self.til, found, errors)
        for name in ("trigger", "actor", "unit"):
            value = getattr(self, name)
            if value:
                if len(value) > MAX_NAME or not value.isprintable():
                    errors[name] = _("Choose one from the list.")
                else:
                    found[name] = value
        self.limit = check_size(self.size, errors, self.limit)

    def query(self, **more: Any) -> str:
        """The query string of these filters (as typed), with ``more``."""
        kept = {name: getattr(self, name) for name in ("entity", "fra", "til", "trigger", "actor", "size", "unit")}
        return urlencode({k: v for k, v in {**kept, **more}.items() if v not in ("", None)})


def _position(text: str | None) -> int | None:
    """A page position (``older``/``newer``): a sequence number; UsageError for anything else."""
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 10:
        raise UsageError(_("That page position is not one this desk made: start again from the first page."))
    return int(text)


# ---- the desk ------------------------------------------------------------------------------------------------


@router.get("/audit")
def audit_page(request: Request, who: Who, engine: Eng, older: str | None = None, newer: str | None = None,
               verify: bool = False, replay: bool = False) -> Response:
    """The filtered log, newest first, a page at a time; the checks when asked for."""
    filters = Filters.read(request)
    choices = desk_choices(engine)
    context: dict[str, Any] = {
        "filters": filters, "choices": choices, "sizes": PAGE_SIZES, "formats": FORMAT_LABELS,
        "report": engine.audit_verify() if verify else None,
        "replayed": engine.audit_replay() if replay else None,
    }
    if filters.errors:
        return render(request, "audit.html", status_code=422, page=None, **context)
    try:
        page = engine.audit_page(limit=filters.limit, older_than=_position(older), newer_than=_position(newer),
                                 **filters.engine_filters)
    except NotFound:
        if "unit" not in filters.engine_filters:
            raise
        filters.errors["unit"] = _unit_message()
        return render(request, "audit.html", status_code=422, page=None, **context)
    links = {
        "older": f"/audit?{filters.query(older=page['older'])}" if page["older"] else None,
        "newer": f"/audit?{filters.query(newer=page['newer'])}" if page["newer"] else None,
        "first": f"/audit?{filters.query()}" if (older or newer) else None,
    }
    return render(request, "audit.html", page=page, links=links, **context)


@router.get("/audit/entries/{seq}")
def audit_entry_page(request: Request, seq: int, who: Who, engine: Eng) -> Response:
    """One entry: who, when, why, the rule; its data; its changes before and after; its timers; its hashes."""
    entry = engine.audit_entry(seq)
    kind = entry["object"].rsplit("-", 1)[0]
    return render(request, "audit_entry.html", entry=entry, kind=kind, replayable=kind in WORKFLOWS,
                  unit_names=desk_choices(engine)["unit_names"])


@router.get("/audit/as-of")
def audit_as_of_page(request: Request, who: Who, engine: Eng, object: str | None = None,  # noqa: A002
                     at: str | None = None) -> Response:
    """A case, contact or course as its audit entries describe it at an instant (``show --as-of``). A day
    alone means the end of that Danish day."""
    typed = {"object": (object or "").strip()[:200], "at": (at or "").strip()[:200]}
    errors: dict[str, str] = {}
    view = None
    when: datetime | None = None
    if not typed["object"] and not typed["at"]:
        return render(request, "audit_as_of.html", typed=typed, errors=errors, view=None)
    kind = None
    try:
        kind, _pk = parse_id(typed["object"])
    except MpoxflowError:
        errors["object"] = _("Write the id of a case, contact or course, e.g. case-3.")
    if kind is not None and kind not in WORKFLOWS:
        errors["object"] = _("Only cases, contacts and courses can be shown as they were: see the log for others.")
    if not typed["at"]:
        errors["at"] = _date_message()
    else:
        try:
            parsed = parse_when(typed["at"])
            when = (local_midnight(parsed + timedelta(days=1)) - timedelta(microseconds=1)
                    if not isinstance(parsed, datetime) else parsed)
            check_instant(when, "at")
        except (ValueError, UsageError):
            errors["at"] = _date_message()
    if not errors and when is not None:
        try:
            view = engine.show(typed["object"], as_of=when)
        except NotFound:
            errors.update(_not_yet(engine, typed["object"]))
    status = 200 if not errors else 404 if errors.pop("missing", None) else 422
    facts = {k: v for k, v in (view or {}).items()
             if k not in ("id", "kind", "state", "workflow", "version", "timers", "as_of", "audit_seq", "unit",
                          "assignee")}
    return render(request, "audit_as_of.html", status_code=status, typed=typed, errors=errors, view=view,
                  facts=facts, when=when, owner=responsible(engine, view) if view else None)


def responsible(engine: Engine, view: dict[str, Any]) -> dict[str, str | None]:
    """Who was responsible for an object as the log tells it (issue 17): its unit (the path from the root) and
    the user it was assigned to (None: the unit's unassigned pool), by name; an id no longer known as itself."""
    paths = {u["id"]: u["path"] for u in engine.list_units()}
    unit, assignee = view.get("unit"), view.get("assignee")
    names = {u["id"]: u["name"] for u in engine.users()} if assignee else {}
    return {"unit": paths.get(unit, unit) if unit else None, "unit_id": unit,
            "assignee": names.get(assignee, assignee) if assignee else None, "assignee_id": assignee}


def desk_choices(engine: Engine) -> dict[str, Any]:
    """The desk's pickers: the log's triggers and actors, and every unit (``units``: id and path, in the tree's
    order; ``unit_names``: id to name, to show each entry's acting unit)."""
    units = engine.list_units()
    return {**engine.audit_choices(), "units": [(u["id"], u["path"]) for u in units],
            "unit_names": {u["id"]: u["name"] for u in units}}


def _unit_message() -> str:
    return _("Choose a unit from the list.")


def _not_yet(engine: Engine, object_id: str) -> dict[str, str]:
    """Why an object has no state at an instant: it has no entries at all, or none yet then."""
    try:
        first = engine.audit_timeline(object_id)[0]
    except NotFound:
        return {"object": _("The log holds no entries of %(object)s.") % {"object": object_id}, "missing": "1"}
    return {"at": _("%(object)s did not exist yet then: its first entry is from %(when)s.")
            % {"object": object_id, "when": dk_time(first["at"])}, "missing": "1"}


# ---- the export of the filtered view -------------------------------------------------------------------------


def export_response(engine: Engine, fmt: str, filters: dict[str, Any]) -> StreamingResponse:
    """The entries ``filters`` select (all of them when none), in ``fmt``, as a download: written from one
    snapshot to a spooled file first (memory stays small; disk past a few MB), then streamed."""
    if fmt not in DESK_FORMATS:
        raise UsageError(f"⟦format⟧ '{fmt[:20]}' is not an export format: use one of {', '.join(DESK_FORMATS)}")
    binary = fmt == "xlsx"
    spool: IO[Any] = (tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+b") if binary  # noqa: SIM115
                      else tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+", encoding="utf-8",  # noqa: SIM115
                                                         newline=""))
    try:
        engine.audit_export(fmt, spool, **filters)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)

    def chunks() -> Iterator[Any]:
        try:
            while block := spool.read(64 * 1024):
                yield block
        finally:
            spool.close()

    media, name = DOWNLOADS[fmt]
    return StreamingResponse(chunks(), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/audit/export")
def audit_export_page(request: Request, who: Who, engine: Eng, format: str = "jsonl") -> Response:  # noqa: A002
    """The desk's filtered view as a download; a malformed filter re-renders the desk with its message."""
    filters = Filters.read(request)
    if filters.errors or format not in DESK_FORMATS:
        if format not in DESK_FORMATS:
            filters.errors["format"] = _("Choose an export format from the list.")
        return render(request, "audit.html", status_code=422, page=None, filters=filters,
                      choices=desk_choices(engine), sizes=PAGE_SIZES, formats=FORMAT_LABELS, report=None,
                      replayed=None)
    try:
        return export_response(engine, format, filters.engine_filters)
    except NotFound:
        if "unit" not in filters.engine_filters:
            raise
        filters.errors["unit"] = _unit_message()
        return render(request, "audit.html", status_code=422, page=None, filters=filters,
                      choices=desk_choices(engine), sizes=PAGE_SIZES, formats=FORMAT_LABELS, report=None,
                      replayed=None)


def api_filters(entity: str | None, actor: str | None, trigger: str | None, since: str | None,
                until: str | None, unit: str | None = None) -> dict[str, Any]:
    """The API export's filters as the desk reads them (a day: the whole Danish day; ``unit``: the acting unit,
    a name or ``unit-N``); UsageError naming the parameter otherwise."""
    filters = Filters(entity=(entity or "").strip(), fra=(since or "").strip(), til=(until or "").strip(),
                      trigger=(trigger or "").strip(), actor=(actor or "").strip(), unit=(unit or "").strip())
    filters.check()
    if filters.errors:
        names = {"fra": "since", "til": "until"}
        raise UsageError("; ".join(f"⟦{names.get(k, k)}⟧: {v}" for k, v in filters.errors.items()))
    return filters.engine_filters


