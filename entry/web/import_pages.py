"""The bulk import's pages (issue 18): staff upload a contact list (or persons, or cases) as CSV or XLSX, see each
row's answer (created with its ids linked, already present, refused with the rule and the message in the page's
language, skipped), download the report as the file itself with its result columns, and read earlier imports.
``POST /api/imports`` (multipart) answers what ``mpoxflow import ... --json`` prints.

The rows run through ``engine.imports`` (the engine's own operations, per row); a file that cannot be read or a
mapping that does not fit is a message on the form (422), an unknown case a 404 on the form, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from engine import imports
from engine.accounts import Login
from engine.core import ACTING_ROLES
from entry.web import i18n
from entry.web.app import CSRF_FIELD, CSRF_HEADER, check_csrf, http_status, login_dependency
from entry.web.i18n import N_
from entry.web.i18n import gettext as _
from entry.web.pages import Eng, Who, refusal_text, render, request_language
from workflows.errors import (
    GuardRefused,
    MpoxflowError,
    NotFound,
    RuleRefused,
    TriggerNotAllowed,
    UsageError,
)
from workflows.limits import check_text

router = APIRouter(include_in_schema=False, dependencies=[Depends(request_language)])
api_router = APIRouter(prefix="/api")

#: What can be imported, as the form offers it.
WHAT = {"contacts": N_("Close contacts of a case"), "persons": N_("Persons"), "cases": N_("Cases")}
#: A row's result as a page says it.
RESULT_NAMES = {"created": N_("created"), "present": N_("already present"), "refused": N_("refused"),
                "skipped": N_("skipped")}
#: The notes ``engine.imports`` gives a row, for the catalog.
NOTES = (N_("empty row"), N_("the person is registered already"), N_("the contact has this exposure already"),
         N_("the person has a case with this onset already"),
         N_("PEP window closed: more than 14 days since the exposure (SST-mpox-7.1 §6.2)"))
#: What a download of a report is, by the imported file's format.
MEDIA = {"csv": "text/csv", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
#: How many imports the history lists.
HISTORY = 100


def _flag(form: FormData, name: str) -> bool:
    return form.get(name) in ("on", "true", "1", "yes")


async def _upload(form: FormData) -> tuple[bytes, str]:
    """The uploaded file's bytes and name. UsageError when none was chosen or it is too large."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise UsageError(_("Choose the file to import (.csv or .xlsx)."))
    content = await upload.read(imports.MAX_BYTES + 1)
    if len(content) > imports.MAX_BYTES:
        raise UsageError(_("The file is larger than %(limit)s MB: split it into smaller files.")
                         % {"limit": imports.MAX_BYTES // (1024 * 1024)})
    return content, upload.filename


def _request(form: FormData, content: bytes, filename: str, actor: str) -> imports.Request:
    """The import the form (or the API's multipart body) asks for. UsageError for an unknown kind or mapping."""
    what = str(form.get("what") or "contacts")
    if what not in imports.KINDS:
        raise UsageError(_("Choose what the file holds: close contacts, persons or cases."))
    reason = str(form.get("reason") or "").strip() or None
    if reason is not None:
        check_text(reason, "reason")
    maps = [str(m) for m in form.getlist("map") if isinstance(m, str) and m.strip()]
    return imports.Request(
        kind=what, content=content, filename=filename, actor=actor, reason=reason,
        case=(str(form.get("case") or "").strip() or None) if what == "contacts" else None,
        mapping=imports.parse_mapping(maps), dry_run=_flag(form, "dry_run"),
        all_or_nothing=_flag(form, "all_or_nothing"))


def _label(name: str) -> str:
    """A field (of the import's form or a row's operation) as the page names it."""
    if name == "case":
        return _("Case")
    if name == "map":
        return _("Column mapping")
    return i18n.fact(name)


def row_error(stored: dict[str, Any]) -> MpoxflowError:
    """A refused row's error rebuilt from the report (its template, rule, key and values), to say it in the page's
    language as the page says any refusal."""
    kinds: dict[str, type[MpoxflowError]] = {"usage": UsageError, "not_found": NotFound, "refused": RuleRefused}
    cls: type[MpoxflowError] = GuardRefused if stored.get("guard") else kinds.get(str(stored.get("code")),
                                                                                   RuleRefused)
    if stored.get("key") == "trigger_not_allowed":
        cls = TriggerNotAllowed
    error = cls.__new__(cls)
    MpoxflowError.__init__(error, str(stored.get("template") or ""), rule=stored.get("rule"),
                           key=stored.get("key"), params=stored.get("params") or {})
    return error


def shown_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row as the result page shows it: its result and note in the page's language, a refusal's message in
    it too (its fields named by the file's columns, where they came from one)."""
    shown = []
    for row in rows:
        message = None
        stored = row.get("error")
        if stored:
            columns = stored.get("columns") or {}
            error = row_error({**stored, "rule": row.get("rule")})

            def named(name: str, columns: dict[str, str] = columns) -> str:
                column = columns.get("ref" if name == "person" else name)
                return f"«{column}»" if column else _label(name)

            message = refusal_text(error, named)
        shown.append({**row, "result_text": _(RESULT_NAMES.get(row["result"], row["result"])),
                      "note_text": _(row["note"]) if row.get("note") else None,
                      "message_text": message or row.get("message"),
                      "links": row["ids"] or [i for i in (row.get("person"), row.get("object")) if i]})
    return shown


def _form(request: Request, status_code: int = 200, **context: Any) -> Response:
    values = {"what": request.query_params.get("what", "contacts"), "case": request.query_params.get("case", ""),
              **context.pop("values", {})}
    return render(request, "import.html", status_code=status_code, what=WHAT, values=values, **context)


def _form_values(form: FormData) -> dict[str, Any]:
    return {"what": str(form.get("what") or "contacts"), "case": str(form.get("case") or ""),
            "reason": str(form.get("reason") or ""), "dry_run": _flag(form, "dry_run"),
            "all_or_nothing": _flag(form, "all_or_nothing"),
            "map": "\n".join(str(m) for m in form.getlist("map") if isinstance(m, str))}


def _result(request: Request, view: dict[str, Any], status_code: int = 200) -> Response:
    return render(request, "import_result.html", status_code=status_code, view=view, rows=shown_rows(view["rows"]),
                  what=WHAT, result_names=RESULT_NAMES)


@router.get("/import")
def import_form(request: Request, who: Who, engine: Eng) -> Response:
    """The upload form: what the file holds, the case (for contacts), the file, dry run, all or nothing."""
    return _form(request)


@router.post("/import")
async def import_upload(request: Request, who: Who, engine: Eng) -> Response:
    """Run the upload; a written import goes to its own page (its report, its download), a dry run or an import
    refused as a whole shows its answers here."""
    async with request.form(max_files=1) as form:
        token = form.get(CSRF_FIELD)
        check_csrf(request, who, token if isinstance(token, str) else None)
        values = _form_values(form)
        try:
            if who.role not in ACTING_ROLES:
                await run_in_threadpool(engine.authorize, who.name, f"import {values['what']}")
            content, filename = await _upload(form)
            # The mapping field holds one Column=field per line.
            maps = [line.strip() for line in values["map"].splitlines() if line.strip()]
            fields = FormData([(k, v) for k, v in form.multi_items() if k != "map"] + [("map", m) for m in maps])
            wanted = _request(fields, content, filename, who.name)
            view = await run_in_threadpool(lambda: imports.run_import(engine, wanted, name_of=_label))
        except MpoxflowError as error:
            if who.role not in ACTING_ROLES:
                raise
            return _form(request, status_code=http_status(error)[0], error=error,
                         error_text=refusal_text(error, _label), values=values)
    if view["id"] is not None:
        return RedirectResponse(f"/import/{quote(view['id'])}", status_code=303)
    return _result(request, view, status_code=409 if not view["dry_run"] else 200)


@router.get("/import/{import_id}")
def import_page(request: Request, import_id: str, who: Who, engine: Eng) -> Response:
    """An import's report: every row's answer, the download, the history."""
    record = imports.load_import(engine, import_id)
    return _result(request, imports.import_view(record))


@router.get("/import/{import_id}/report")
def import_report(import_id: str, who: Who, engine: Eng) -> Response:
    """The imported file with its result columns, in the file's own format (CSV or XLSX)."""
    record = imports.load_import(engine, import_id)
    data = imports.report_download(engine, record.content, record.filename, record.report,
                                   delimiter=record.options.get("delimiter"))
    stem = record.filename.rsplit(".", 1)[0] or "import"
    name = f"rapport-{record.id}-{stem}.{record.format}"
    ascii_name = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in name)
    return Response(data, media_type=MEDIA[record.format], headers={
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"})


@router.get("/imports")
def imports_page(request: Request, who: Who, engine: Eng) -> Response:
    """The imports, newest first, with who made them and their counts."""
    return render(request, "imports.html", imports=imports.list_imports(engine, HISTORY), what=WHAT)


# ---- the API ----------------------------------------------------------------------------------------------------


@api_router.post("/imports", operation_id="import", tags=["imports"], include_in_schema=False)
async def api_import(request: Request, engine: Eng,
                     who: Annotated[Login, Depends(login_dependency)]) -> JSONResponse:
    """`mpoxflow import contacts|persons|cases FILE --json`, as a multipart form: ``file``, ``what``
    (contacts, persons, cases), ``case``, ``map`` (repeated, Column=field), ``dry_run``, ``all_or_nothing``,
    ``reason``. 200 with the import's answer (also when rows were refused); 409 with it when ``all_or_nothing``
    refused; 422 for a file or mapping that cannot be read; 404 for an unknown case."""
    check_csrf(request, who, request.headers.get(CSRF_HEADER))
    async with request.form(max_files=1) as form:
        if who.role not in ACTING_ROLES:
            await run_in_threadpool(engine.authorize, who.name, f"import {form.get('what') or 'contacts'}")
        content, filename = await _upload(form)
        wanted = _request(form, content, filename, who.name)
    view = await run_in_threadpool(imports.run_import, engine, wanted)
    refused = view["all_or_nothing"] and view["counts"]["refused"] > 0
    return JSONResponse(view, status_code=409 if refused else 200)
