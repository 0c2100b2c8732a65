"""The application: ``create_app`` puts the JSON API (``entry.web.api``) and the pages (``entry.web.pages``)
together over what they share (``entry.web.app``), with the error handlers, the request log and the security
headers. Kept apart from ``entry.web.app`` so that no module of entry/web imports another that imports it back."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import entry.web.advice
import entry.web.chains_web
import entry.web.overview_page
from engine.bootstrap import database_url, open_engine, settings_from_env
from entry.web import api, audit_desk, documents, events_web, fhir, import_pages, pages, person_report, reads_page
from entry.web.app import (
    SECURITY_HEADERS,
    STATIC_DIR,
    STATIC_PREFIX,
    Web,
    drop_reads,
    error_body,
    error_summary,
    internal_error_body,
    log,
)
from persistence.database import Database
from workflows.definition import Settings
from workflows.errors import MpoxflowError, UsageError


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    problems = error.errors()
    for problem in problems[:MAX_PROBLEMS]:
        where = ".".join(str(p)[:64] for p in problem.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {str(problem.get('msg', 'invalid'))[:200]}")
    if len(problems) > MAX_PROBLEMS:
        parts.append(f"and {len(problems) - MAX_PROBLEMS} more")
    return "; ".join(parts) + ": correct the request and send it again (the schema is at /openapi.json)"


def _wants_json(request: Request) -> bool:
    """The API answers errors in JSON; the pages with a page (or the login page)."""
    return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"


def _worker_thread(url: str) -> tuple[threading.Thread, Callable[[], None]]:
    from datetime import timedelta

    from scheduler.worker import JOB_HOURS, Worker

    # A one-machine setup's worker runs the retention purge too (daily, as `mpoxflow worker` does by default).
    worker = Worker(open_engine(url), retention_every=timedelta(hours=JOB_HOURS))
    thread = threading.Thread(target=lambda: worker.run(install_signals=False), name="mpoxflow-worker",
                              daemon=True)
    return thread, worker.stop


def create_app(url: str | None = None, *, settings: Settings | None = None, with_worker: bool = False,
               secure_cookies: bool = False) -> FastAPI:
    """The application over the database at ``url`` (migrated, with its first admin, as ``open_engine`` does)."""
    resolved = database_url(url)
    settings = settings or settings_from_env()
    open_engine(resolved, settings=settings).db.dispose()  # migrate; first admin and timer users
    shared = Web(Database(resolved), settings, secure_cookies)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop: Callable[[], None] | None = None
        if with_worker:
            thread, stop = _worker_thread(resolved)
            thread.start()
        try:
            yield
        finally:
            if stop is not None:
                stop()
                thread.join(timeout=30)
            shared.db.dispose()

    app = FastAPI(
        title="mpoxflow",
        version="0.1.0",
        summary="Mpox case and contact management by SST's guideline (Retningslinjer for håndtering af mpox, v7.1)",
        description="The operations of the `mpoxflow` command line over HTTP, under the same names (operation ids "
                    "`case_confirm`, `contact_add`, ...). Errors carry `error`, `message` (what is wrong and what "
                    "to do), `rule` (the guideline section) and `exit_code` (the CLI's): 401 not logged in, 403 "
                    "the role does not allow it, 404 no such object, 409 refused by a rule or changed meanwhile, "
                    "422 malformed, 429 too many failed logins.",
        lifespan=lifespan,
        # No Swagger UI or ReDoc: they load script from a CDN. The schema stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.web = shared
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.exception_handler(MpoxflowError)
    async def engine_error(request: Request, error: MpoxflowError) -> Response:
        drop_reads(request)  # an error shows no reference: what the request read is not recorded
        if not _wants_json(request):
            return pages.error_page(request, error)
        body = error_body(error)
        headers = {"Retry-After": str(body["retry_after"])} if "retry_after" in body else None
        if body["status"] == 401:
            headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="mpoxflow"'}
        return JSONResponse(body, status_code=body["status"], headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        drop_reads(request)
        usage = UsageError(_validation_message(error))
        if not _wants_json(request):
            return pages.error_page(request, usage)
        return JSONResponse({**error_body(usage), "detail": jsonable_errors(error)}, status_code=422)

    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(audit_desk.router)
    app.include_router(reads_page.router)
    app.include_router(fhir.router)
    app.include_router(documents.api)
    app.include_router(documents.router)
    app.include_router(person_report.api)
    app.include_router(person_report.router)
    app.include_router(import_pages.router)
    app.include_router(import_pages.api_router)
    app.include_router(events_web.api_router)
    app.include_router(events_web.router)
    app.include_router(entry.web.advice.router)
    app.include_router(entry.web.chains_web.router)
    app.include_router(entry.web.overview_page.router)
    app.add_middleware(RequestLog)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/worklist", status_code=303)

    return app


class RequestLog:
    """Every request: a request id (``request.state.request_id``, the ``X-Request-ID`` header), the security
    headers, ``Cache-Control: no-store`` on all but static files, one ``http_request`` event, and an unhandled error
    turned into one ``http_unhandled_error`` event and a JSON 500. A plain ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` (``@app.middleware``) runs each request through a task group and memory streams, which
    cost every request more than all of this.

    The reads of personal data the request's engine holds (issue 19 item 3, ``engine.reads``) are written here,
    once, just before the answer starts (and before each further part of a streamed answer that read more): a read
    that cannot be recorded is not shown, so the answer is then replaced by a 503 that says so (audit first; a
    streamed answer already begun is cut off instead)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        static = scope["path"].startswith(STATIC_PREFIX + "/")
        status = 500
        responded = False
        unrecorded: MpoxflowError | None = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                responded, status = True, message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers.update(SECURITY_HEADERS)
                if not static:
                    headers["Cache-Control"] = "no-store"  # every page and answer may show personal data
            await send(message)

        async def send_recorded(message: Message) -> None:
            nonlocal unrecorded
            if unrecorded is not None:
                return  # the answer whose reads could not be recorded: none of it leaves
            engine = state.get("engine")
            if engine is not None and engine.reads.pending:
                try:
                    await run_in_threadpool(engine.reads.flush)
                except MpoxflowError as error:
                    if responded:
                        raise  # a streamed answer begun: the rest of it is not sent
                    unrecorded = error
                    log.error("read_not_recorded", request_id=request_id, method=scope["method"],
                              path=_route_path(scope))
                    return
            await send_with_headers(message)

        try:
            await self.app(scope, receive, send_recorded)
        except Exception as error:  # noqa: BLE001 - a bug: one structured event and a JSON 500, no traceback
            log.error("http_unhandled_error", request_id=request_id, method=scope["method"],
                      path=_route_path(scope), **error_summary(error))
            if responded:  # the answer has begun: nothing else can be sent
                raise
            if unrecorded is None:
                await JSONResponse(internal_error_body(request_id), status_code=500)(scope, receive,
                                                                                    send_with_headers)
        if unrecorded is not None and not responded:
            engine = state.get("engine")
            if engine is not None:
                engine.reads.discard()
            await _error_answer(scope, receive, unrecorded)(scope, receive, send_with_headers)
        login = state.get("login")
        log.info("http_request", method=scope["method"], path=_route_path(scope), status=status,
                 user=f"user-{login.user_id}" if login else None,
                 ms=round((time.perf_counter() - started) * 1000, 1), request_id=request_id)


def _error_answer(scope: Scope, receive: Receive, error: MpoxflowError) -> Response:
    """The error a request answers instead of what it could not record: JSON for the API, else a page."""
    request = Request(scope, receive)
    if _wants_json(request) or request.url.path.startswith("/fhir/"):
        return JSONResponse(error_body(error), status_code=error.http_status)
    return pages.error_page(request, error)


def _route_path(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", scope["path"]))


#: A 422 lists at most this many problems, each without the value sent: a megabyte body is not echoed back.
MAX_PROBLEMS = 10


def jsonable_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": [str(p)[:64] for p in problem.get("loc", ())][:8], "msg": str(problem.get("msg"))[:200],
             "type": problem.get("type")} for problem in error.errors()[:MAX_PROBLEMS]]
