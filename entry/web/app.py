"""``mpoxflow serve``: the HTTP API and the web pages, a FastAPI application over the same engine as the CLI.

Stateless: every request builds its engine on the shared connection pool and reads the clock from the database;
sessions, tokens and the failed-login counts are rows. Any number of instances can serve one PostgreSQL database.

Who is asking: a bearer token (``Authorization: Bearer mpx_...``, for systems) or the session cookie of a web
login. A change made with the cookie must carry the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``). The engine decides what the user's role allows and audits every change under the user.
"""

from __future__ import annotations

import secrets
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from engine.accounts import SESSION_LIFETIME, Login
from engine.bootstrap import engine_on
from engine.bootstrap import request_engine as open_request_engine
from engine.core import Engine
from persistence.database import Database
from workflows.definition import Settings
from workflows.errors import (
    MpoxflowError,
    NotAuthenticated,
    NotPermitted,
    TooManyAttempts,
)

log = structlog.get_logger("mpoxflow.http")

SESSION_COOKIE = "mpoxflow_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def http_status(error: MpoxflowError) -> tuple[int, str]:
    """The HTTP status and error code of an error: the error's own (the CLI's exit status in the body says the
    same)."""
    return error.http_status, error.code


def error_body(error: MpoxflowError) -> dict[str, Any]:
    status, code = http_status(error)
    body: dict[str, Any] = {"error": code, "message": error.message, "rule": error.rule,
                            "exit_code": error.exit_code, "status": status, "key": error.key,
                            "fields": list(error.fields), "params": error.params}
    if isinstance(error, TooManyAttempts):
        body["retry_after"] = error.retry_after
    return body


class ErrorBody(BaseModel):
    """Every error the API answers (401, 403, 404, 409, 422, 429, 503), in one shape."""

    error: str = Field(description="not_authenticated, not_permitted, outside_units, not_found, conflict, refused, "
                                   "usage, too_many_attempts, storage or internal.")
    message: str = Field(description="What is wrong and what to do, naming internal ids only.")
    rule: str | None = Field(description="The guideline section that decides (SST-mpox-7.1 §...), when one does.")
    exit_code: int = Field(description="The command line's exit status for the same error (2, 3, 4, 5).")
    status: int = Field(description="The HTTP status, repeated.")
    key: str = Field(description="A stable key of the message (the guard or check that refused), for translations "
                                 "and for callers that branch on it.")
    fields: list[str] = Field([], description="The request's fields the message is about, by their declared "
                                              "name (a page shows their labels).")
    params: dict[str, Any] = Field({}, description="The message's parameters, for callers that word it "
                                                   "themselves: a refused change names its object, trigger and "
                                                   "state; internal ids only.")
    retry_after: int | None = Field(None, description="429: seconds until a login may be tried again.")
    detail: list[dict[str, Any]] | None = Field(None, description="422 of a malformed request: at most "
                                                "ten problems, each with where it is, never the value sent.")
    request_id: str | None = Field(None, description="500: the id to give an admin (it is in the log).")


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


#: The errors every API operation may answer, documented in the OpenAPI schema with their body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented("Not logged in: no, an unknown, an expired or a revoked session or token."),
    403: _documented("The role does not allow it (audited), a change made with the cookie lacks the CSRF "
                     "token, or the object belongs to a unit outside the user's (`outside_units`: acting is refused "
                     "and audited; reading needs `POST /api/objects/{object_id}/break-glass` with a reason)."),
    404: _documented("No object by that id."),
    409: _documented("Refused by a rule (the section in `rule`), or changed meanwhile (`conflict`)."),
    422: _documented("Malformed: a value out of its bounds, of the wrong type or missing."),
    429: _documented("Too many failed logins for the name or from the address: wait `retry_after` seconds."),
}


@dataclass
class Web:
    """What every request shares: the database's connection pool and the deployment settings."""

    db: Database
    settings: Settings
    #: Cookies get the Secure flag (behind HTTPS, which a deployment must have).
    secure_cookies: bool = False

    def engine(self) -> Engine:
        return engine_on(self.db, self.settings)


def web(request: Request) -> Web:
    return request.app.state.web  # type: ignore[no-any-return]


def _bearer(request: Request) -> str | None:
    """The request's bearer token; NotAuthenticated for an Authorization header of another shape."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise NotAuthenticated("send an API token as 'Authorization: Bearer mpx_...' (an admin issues one with "
                               "`mpoxflow user token NAME --label SYSTEM`)")
    return secret.strip()


def request_engine(request: Request) -> Engine:
    """One engine per request, on the database's clock as it is now; who asks (a bearer token, else the session
    cookie) is read with the clock, in one read of the database, and kept for this request only
    (``current_login``)."""
    engine = getattr(request.state, "engine", None)
    if engine is None:
        try:
            bearer = _bearer(request)
        except NotAuthenticated:
            bearer = None  # refused by current_login, when the request needs a login
        shared = web(request)
        engine, login = open_request_engine(shared.db, shared.settings, bearer=bearer,
                                            cookie=None if bearer else request.cookies.get(SESSION_COOKIE))
        # The request's reads of personal data are held and written once, as the answer starts (issue 19 item 3:
        # ``RequestLog`` in ``entry.web.server``), with the request's id.
        engine.reads.begin(via=request_via(request), request_id=getattr(request.state, "request_id", None),
                           held=True, reader=None if login is None else login.name)
        request.state.engine = engine
        if not hasattr(request.state, "login"):
            request.state.login = login
            request.state.unknown_token = bearer is not None and login is None
    return engine


def request_via(request: Request) -> str:
    """How a request reads (the read log's ``via``): the API (``/api``, FHIR) or the pages."""
    return "api" if request.url.path.startswith(("/api/", "/fhir/")) else "web"


def drop_reads(request: Request) -> None:
    """The answer is an error (which shows no reference): what the request read is not written."""
    engine = getattr(request.state, "engine", None)
    if engine is not None:
        engine.reads.discard()


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def current_login(request: Request) -> Login | None:
    """The user a bearer token or the session cookie stands for; NotAuthenticated for a bad token."""
    _bearer(request)
    if not hasattr(request.state, "login"):
        request_engine(request)
    if getattr(request.state, "unknown_token", False):
        raise NotAuthenticated("that API token is unknown or revoked: ask an admin for a new one "
                               "(`mpoxflow user token NAME --label SYSTEM`)")
    return request.state.login  # type: ignore[no-any-return]


def require_login(request: Request) -> Login:
    login = current_login(request)
    if login is None:
        raise NotAuthenticated("log in first (POST /api/login, or the login page), or send an API token")
    return login


# As dependencies: FastAPI runs a plain function in a worker thread, a hop per dependency and request. The database
# is read once per request (the clock and the login, in a worker thread), then these answer from the request.


async def engine_dependency(request: Request) -> Engine:
    """``request_engine`` as a dependency."""
    engine = getattr(request.state, "engine", None)
    return engine if engine is not None else await run_in_threadpool(request_engine, request)


async def login_dependency(request: Request) -> Login:
    """``require_login`` as a dependency."""
    if hasattr(request.state, "login"):
        return require_login(request)
    return await run_in_threadpool(require_login, request)


def check_csrf(request: Request, login: Login, submitted: str | None) -> None:
    """A change made with a session cookie must carry the session's CSRF token (a bearer token needs none: a
    browser never sends it on its own)."""
    if request.method in SAFE_METHODS or login.session_id is None:
        return
    expected = login.csrf or ""
    if not submitted or not secrets.compare_digest(submitted, expected):
        log.warning("csrf_refused", user=f"user-{login.user_id}", path=request.url.path)
        raise NotPermitted("the form's CSRF token is missing or stale: reload the page and submit it again",
                           actor=login.name, role=login.role, user=None, command=request.url.path, target=None)


def set_session_cookie(request: Request, response: Response, secret: str) -> None:
    response.set_cookie(SESSION_COOKIE, secret, max_age=int(SESSION_LIFETIME.total_seconds()), httponly=True,
                        samesite="strict", secure=web(request).secure_cookies, path="/")


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict", secure=web(request).secure_cookies,
                           path="/")


#: Our own stylesheet and script (the only ones the pages load), served with the package.
STATIC_PREFIX = "/static"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
#: Every page's and answer's security headers: nothing inline and nothing from another origin runs, no page of
#: ours is framed, no type is sniffed, no address leaks to another site.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def error_summary(error: BaseException) -> dict[str, str]:
    """An exception as a log event's fields: its type, its message's first line (a database error's driver
    message, never the statement or its parameters, and no detail line that may quote a value), and where it was
    raised. No traceback: the JSON log stream stays one event per line."""
    from sqlalchemy.exc import StatementError

    cause: BaseException = error
    if isinstance(error, StatementError) and error.orig is not None:
        cause = error.orig
    message = (str(cause).strip().splitlines() or [""])[0][:300]
    frame = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f"{Path(frame[0].filename).name}:{frame[0].lineno}" if frame else ""
    return {"error_type": type(error).__name__, "error": message, "where": where}


def internal_error_body(request_id: str) -> dict[str, Any]:
    return {"error": "internal", "message": f"an unexpected error: nothing was changed by it; tell an admin the "
            f"request id {request_id} (it is in the server's log)", "rule": None, "exit_code": 1, "status": 500,
            "request_id": request_id}
