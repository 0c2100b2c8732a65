"""The JSON API under ``/api``: the CLI's operations over HTTP, under the CLI's names (operation ids).

No ``from __future__ import annotations`` here: the operations' endpoints are made in a loop and FastAPI reads
each one's body model from its annotations.
"""

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from engine.accounts import Accounts, Login
from engine.core import ACTING_ROLES, ADMIN_ROLES, Engine
from engine.notes import CHANNELS, DEFAULT_HARD_TO_REACH, OUTCOMES
from engine.views import instant
from entry.operations import COLLECTIONS, LISTABLE
from entry.parsing import MAX_DAYS, MAX_LIMIT, MAX_NAME, MAX_NOTE, day_bound, parse_instant
from entry.web import audit_desk
from entry.web.app import (
    CSRF_HEADER,
    ERROR_RESPONSES,
    SESSION_COOKIE,
    check_csrf,
    clear_session_cookie,
    client_address,
    current_login,
    engine_dependency,
    login_dependency,
    set_session_cookie,
)
from entry.web.operations import OPERATIONS, Body, Operation, TaskResolve
from scheduler import firing
from workflows.errors import OutsideUnits, UsageError, field
from workflows.registry import WORKFLOWS

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: The longest password a login or a change accepts (a longer one is a 422, never hashed).
MAX_PASSWORD = 1024

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
Eng = Annotated[Engine, Depends(engine_dependency)]
Reader = Annotated[Login, Depends(login_dependency)]


# The checks below read nothing from the database on the way through, so they are coroutines: FastAPI runs a
# plain function dependency in a worker thread, one hop per dependency, and every hop costs each request.


async def acting(request: Request, login: Reader) -> Login:
    """The logged-in user, for a change: with a session cookie, the CSRF header must match."""
    check_csrf(request, login, request.headers.get(CSRF_HEADER))
    return login


Actor = Annotated[Login, Depends(acting)]


def may_act(command: str) -> Any:
    """The logged-in user, for the workflow change ``command``: a role that may not change anything is refused
    (403, audited) before the request's body is validated, so an auditor's malformed request is a 403, not a
    422 (FastAPI reports body errors only once every dependency has run)."""

    async def check(login: Actor, engine: Eng) -> Login:
        if login.role not in ACTING_ROLES:
            # raises NotPermitted, and records the refusal (in a worker thread: it writes)
            await run_in_threadpool(engine.authorize, login.name, command)
        return login

    return Annotated[Login, Depends(check)]


def may_admin(command: str) -> Any:
    """The logged-in user, for a change only an admin may make: anyone else is refused (403, audited) before the
    request's body is validated."""

    async def check(login: Actor, engine: Eng) -> Login:
        if login.role not in ADMIN_ROLES:
            await run_in_threadpool(engine.authorize, login.name, command, ADMIN_ROLES)
        return login

    return Annotated[Login, Depends(check)]


#: Who may make each change outside the workflows, checked before its body is read.
TaskResolveActor = may_act("task resolve")
ClockAdvanceActor = may_act("clock advance")
UserAddAdmin = may_admin("user add")
UserDisableAdmin = may_admin("user disable")
UserEnableAdmin = may_admin("user enable")
UserRoleAdmin = may_admin("user role")
UserTokenAdmin = may_admin("user token")
UserRevokeAdmin = may_admin("user revoke")
NoteActor = may_act("note")
AttemptActor = may_act("attempt")


def _instant(text: str | None, what: str) -> Any:
    return parse_instant(text, what) if text else None


# ---- logging in ----------------------------------------------------------------------------------------------


class Credentials(BaseModel):
    name: str = Field(max_length=MAX_NAME)
    password: str = Field(max_length=MAX_PASSWORD)


@router.post("/login", operation_id="login", tags=["users"])
def login(request: Request, credentials: Credentials, engine: Eng) -> JSONResponse:
    """Log in: sets the session cookie (HttpOnly, SameSite=Strict) and returns the CSRF token that every change
    made with the cookie must send as the X-CSRF-Token header. Failed logins are rate-limited (429)."""
    who, secret = Accounts(engine).login(credentials.name, credentials.password, client_address(request))
    response = JSONResponse({"user": who.name, "role": who.role, "csrf": who.csrf})
    set_session_cookie(request, response, secret)
    return response


@router.post("/logout", operation_id="logout", tags=["users"])
def logout(request: Request, who: Actor, engine: Eng) -> JSONResponse:
    """End this session: the cookie stops working on every server."""
    if who.session_id is None:
        raise UsageError("an API token has no session to end: an admin revokes it (`mpoxflow user revoke token-N`)")
    Accounts(engine).logout(request.cookies.get(SESSION_COOKIE, ""))
    response = JSONResponse({"logged_out": who.name})
    clear_session_cookie(request, response)
    return response


@router.get("/me", operation_id="me", tags=["users"])
def me(who: Reader) -> dict[str, Any]:
    """Who is asking, with the session's CSRF token (None for an API token)."""
    return {"user": who.name, "role": who.role, "csrf": who.csrf, "via": "token" if who.token_id else "session"}


# ---- the changes: one endpoint per CLI operation -------------------------------------------------------------


def add_operation(op: Operation, router: APIRouter) -> None:
    """Add to ``router`` the endpoint of an operation: ``POST /<collection>`` for one that creates an object,
    ``POST /<collection>/{object_id}/<verb>`` for a change; its body is the operation's."""
    body_model = op.body
    acting_user = may_act(op.name)
    description = f"`mpoxflow {op.name}`: {op.summary}."
    if op.creates:
        def create(body: body_model, who: acting_user, engine: Eng) -> dict[str, Any]:  # type: ignore[valid-type]
            return op.call(engine, who.name, body)

        router.add_api_route(f"/{COLLECTIONS[op.kind]}", create, methods=["POST"], status_code=201,
                             operation_id=op.operation_id, summary=op.name, description=description,
                             tags=[op.kind])
    else:
        def change(object_id: str, body: body_model, who: acting_user,  # type: ignore[valid-type]
                   engine: Eng) -> dict[str, Any]:
            return op.call(engine, who.name, body, object_id)

        router.add_api_route(f"/{COLLECTIONS[op.kind]}/{{object_id}}/{op.verb}", change, methods=["POST"],
                             operation_id=op.operation_id, summary=op.name, description=description,
                             tags=[op.kind])


for _op in OPERATIONS:
    add_operation(_op, router)


@router.post("/timers/{timer_id}/resolve", operation_id="task_resolve", tags=["tasks"],
             summary="task resolve")
def task_resolve(timer_id: str, body: TaskResolve, who: TaskResolveActor, engine: Eng) -> dict[str, Any]:
    """`mpoxflow task resolve`: record what happened to a missed task (done-late, not-reachable, declined,
    not-needed), or close a task not yet due as not-reachable, declined or not-needed."""
    return engine.resolve_task(timer_id, body.outcome, actor=who.name, reason=body.reason)


class ClockAdvance(BaseModel):
    to: str | None = Field(None, description="Move to this instant (ISO 8601; Danish local time without offset).")
    days: int | None = Field(None, description="Move forward this many Danish calendar days.")
    hours: int | None = Field(None, description="Move forward this many hours.")


@router.get("/clock", operation_id="clock_show", tags=["clock"])
def clock_show(who: Reader, engine: Eng) -> dict[str, Any]:
    """The database's clock: simulated (training) or real time."""
    return {"now": instant(engine.clock.now()), "simulated": engine.clock.simulated}


@router.post("/clock/advance", operation_id="clock_advance", tags=["clock"])
def clock_advance(body: ClockAdvance, who: ClockAdvanceActor, engine: Eng) -> dict[str, Any]:
    """Move a simulated clock forward, firing every timer that falls due on the way, in due order."""
    return firing.clock_advance(engine, who.name, to=_instant(body.to, "to"), days=body.days, hours=body.hours)


# ---- reading -------------------------------------------------------------------------------------------------


@router.get("/show/{object_id}", operation_id="show", tags=["reading"])
def show(object_id: str, who: Reader, engine: Eng, as_of: str | None = None) -> dict[str, Any]:
    """One object with its timers; with as_of, a case, contact or course as the audit log had it then. An object
    outside the user's units is a 403 `outside_units`: read it with `POST /api/objects/{object_id}/break-glass`
    and the reason (audited)."""
    try:
        return engine.show(object_id, as_of=_instant(as_of, "as_of"))
    except OutsideUnits as error:
        raise over_http(error) from None


@router.get("/list/{what}", operation_id="list", tags=["reading"])
def list_objects(what: Literal[tuple(LISTABLE)], who: Reader, engine: Eng,
                 state: str | None = None) -> list[dict[str, Any]]:
    """Persons, or the objects of a workflow (optionally in one state)."""
    return engine.list(LISTABLE[what], state)


class WorklistPage(BaseModel):
    """One page of the worklist (``limit`` or ``after`` given)."""

    items: list[dict[str, Any]] = Field(description="The page's tasks, in the worklist's order (due instant, then "
                                                    "timer id), as the whole list has them.")
    next: str | None = Field(description="The cursor of the next page (pass it as `after`, with the same "
                                         "filters); null on the last page.")


@router.get("/due", operation_id="due", tags=["reading"])
def due(who: Reader, engine: Eng,
        within: Annotated[int | None, Query(ge=0, le=MAX_DAYS)] = None,
        limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description="A page of at most this many tasks "
                                           "(the answer is then a page: items and next).")] = None,
        after: Annotated[str | None, Query(max_length=64, description="The page after this cursor (a page's "
                                           "`next`); without limit, pages of 100.")] = None,
        kind: Annotated[Literal[tuple(WORKFLOWS)] | None, Query(description="Only tasks of this kind of "
                                                                "object.")] = None,
        task: Annotated[str | None, Query(max_length=64, description="Only tasks of this timer name "
                                          "(inform_due, dose2_due, ...).")] = None,
        mine: Annotated[bool, Query(description="Only the user's own work: assigned to them, or unassigned in "
                                    "one of their units.")] = False,
        unit: Annotated[str | None, Query(max_length=MAX_NAME, description="Only the work of this unit (a name "
                                          "or unit-N) and the units below it.")] = None,
        ) -> list[dict[str, Any]] | WorklistPage:
    """The staff worklist: what needs doing, soonest first, overdue marked; only the work of the user's units
    (each item with its `unit` and `assignee`). The whole list, or with `limit` or `after` one page of it:
    `{"items": [...], "next": cursor or null}`."""
    days = timedelta(days=within) if within is not None else None
    if limit is not None or after is not None:
        return WorklistPage(**engine.worklist_page(days, limit=limit, after=after, kind=kind, task=task, mine=mine,
                                                   unit=unit))
    return engine.worklist(days, kind=kind, task=task, mine=mine, unit=unit)


class SearchQuery(BaseModel):
    """A search: in the body, never in the URL (a reference may be a CPR number, and URLs end up in proxies' logs
    and browsers' histories)."""

    q: str = Field(min_length=1, max_length=200, description="A person's reference (or its beginning), or an id: "
                   "person-3, case-7, contact-2, course-4.")
    limit: int = Field(20, ge=1, le=100)


@router.post("/search", operation_id="search", tags=["reading"])
def search(who: Reader, engine: Eng, body: SearchQuery) -> list[dict[str, Any]]:
    """The search box's results as you type: persons by reference or id, with their cases, contacts and courses
    (each with ``ref``, the reference staff see: never logged). A read: it changes nothing, so it needs no CSRF
    token; it is a POST so that the reference stays out of the URL."""
    return engine.search(body.q, limit=body.limit)


@router.get("/calendar", operation_id="calendar", tags=["reading"])
def calendar(who: Reader, engine: Eng, weeks: Annotated[int, Query(ge=1, le=52)] = 8) -> list[dict[str, Any]]:
    """Per Danish day from this week's Monday: doses 2 falling due (§6.4) and last days of monitoring (§5.5)."""
    return engine.calendar(weeks)


@router.get("/diagram/{kind}", operation_id="diagram", tags=["reading"])
def diagram(kind: Literal[tuple(WORKFLOWS)], who: Reader, engine: Eng) -> dict[str, Any]:
    """A workflow as a Mermaid state diagram drawn from its definition, with the objects in each state."""
    definition = WORKFLOWS[kind]
    return {"workflow": definition.name, "mermaid": definition.mermaid(), "counts": engine.state_counts(kind)}


@router.get("/timers", operation_id="timers", tags=["reading"])
def timers(who: Reader, engine: Eng, status: str | None = None,
           limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000) -> list[dict[str, Any]]:
    """Timers, soonest first."""
    return engine.timers(status, limit)


@router.get("/timers/status", operation_id="timers_status", tags=["reading"])
def timers_status(who: Reader, engine: Eng) -> dict[str, Any]:
    """Pending, overdue and failed counts, and the oldest lateness."""
    return engine.timer_status()


# ---- the audit log -------------------------------------------------------------------------------------------


@router.get("/audit", operation_id="audit", tags=["audit"])
def audit(who: Reader, engine: Eng, entity: str | None = None, actor: str | None = None,
          trigger: str | None = None, since: str | None = None, until: str | None = None,
          limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None,
          unit: str | None = None) -> list[dict[str, Any]]:
    """Audit entries, oldest first; the filters combine; limit keeps the newest; unit: the entries of users who
    acted through that unit (its name or unit-N) or one below it."""
    return engine.audit(entity=entity, actor=actor, trigger=trigger, limit=limit,
                        since=_instant(since, "since"), until=_instant(until, "until"), unit=unit)


@router.get("/reads", operation_id="reads", tags=["audit"])
def reads(who: Reader, engine: Eng,
          person: Annotated[str | None, Query(max_length=64, description="Only reads of this person "
                                              "(person-N).")] = None,
          user: Annotated[str | None, Query(max_length=MAX_NAME, description="Only reads by this user (or "
                                            "webhook-N).")] = None,
          since: Annotated[str | None, Query(max_length=10, description="From this Danish day (YYYY-MM-DD, the "
                                             "whole day).")] = None,
          until: Annotated[str | None, Query(max_length=10, description="To this Danish day (YYYY-MM-DD, the "
                                             "whole day).")] = None,
          by: Annotated[Literal["person", "user"] | None, Query(description="A summary per person or per user "
                                                                "instead of the rows.")] = None,
          limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
          older: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="The rows before this one (a "
                                             "page's `older`).")] = None) -> dict[str, Any]:
    """`mpoxflow reads`: who was shown which person's reference or birth date (the read log), newest first
    (`items`, and `older`: the next page's `older`), or a summary per person (`reads`, `users`, `first`, `last`)
    or per user (`reads`, `persons`, `first`, `last`). Auditors and admins only (403 for anyone else, nothing
    written). Internal ids only: reading it is not itself logged."""
    engine.check_read_log()
    return engine.read_log(person=person, user=user, by=by, limit=limit, older_than=older,
                           since=day_bound(since, "since") if since else None,
                           before=day_bound(until, "until", end=True) if until else None)


@router.get("/audit/verify", operation_id="audit_verify", tags=["audit"])
def audit_verify(who: Reader, engine: Eng) -> dict[str, Any]:
    """Check every object's hash chain; `intact` false names the first bad sequence number."""
    return engine.audit_verify()


@router.get("/audit/replay", operation_id="audit_replay", tags=["audit"])
def audit_replay(who: Reader, engine: Eng) -> dict[str, Any]:
    """Rebuild every case, contact and course from the log and list where the tables differ."""
    return engine.audit_replay()


@router.get("/audit/timeline/{object_id}", operation_id="audit_timeline", tags=["audit"])
def audit_timeline(object_id: str, who: Reader, engine: Eng) -> list[dict[str, Any]]:
    """One object's life, entry by entry (403 `outside_units` for an object outside the user's units)."""
    try:
        return engine.audit_timeline(object_id)
    except OutsideUnits as error:
        raise over_http(error) from None


@router.get("/audit/export", operation_id="audit_export", tags=["audit"], response_class=StreamingResponse,
            responses={200: {"description": "The log: one JSON object per line, CSV with a header row, the same "
                                            "CSV for Excel in a Danish locale, or an Excel workbook.",
                             "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                                         "text/csv": {"schema": {"type": "string"}},
                                         XLSX: {"schema": {"type": "string", "format": "binary"}}}}})
def audit_export(who: Reader, engine: Eng, format: Literal["jsonl", "csv", "excel-csv", "xlsx"] = "jsonl",
                 entity: str | None = None, actor: str | None = None, trigger: str | None = None,
                 since: str | None = None, until: str | None = None,
                 unit: str | None = None) -> StreamingResponse:
    """The whole log, or the entries the filters select (as the auditor's desk: since and until a date, the
    whole Danish day, dd.mm.yyyy or ISO; or an instant; unit: the entries of users who acted through that unit,
    its name or unit-N, or one below it), oldest first, as a download (fields: README, "Audit export"). Written
    from one snapshot to a spooled file first (memory stays small; disk past a few MB), then streamed."""
    return audit_desk.export_response(engine, format, audit_desk.api_filters(entity, actor, trigger, since, until,
                                                                             unit))


# ---- notes and contact attempts (issue 17) -------------------------------------------------------------------


class NewNote(Body):
    text: str = Field(min_length=1, max_length=MAX_NOTE, description="The note. Kept in the notes (append-only); "
                      "the audit entry names the note, never its text.")
    reason: str | None = Field(None, max_length=MAX_NOTE, description="Why: goes into the audit entry.")


Channel = Literal[CHANNELS]  # type: ignore[valid-type]
AttemptOutcome = Literal[OUTCOMES]  # type: ignore[valid-type]


class NewAttempt(Body):
    channel: Channel = Field(description="How the person was tried: phone, sms, letter or visit.")
    outcome: AttemptOutcome = Field(description="What came of it: reached, no-answer or wrong-number.")
    reason: str = Field(min_length=1, max_length=MAX_NOTE, description="How it went (required): goes into the "
                        "audit entry.")


@router.post("/objects/{object_id}/note", operation_id="note", status_code=201, tags=["notes"], summary="note")
def note(object_id: str, body: NewNote, who: NoteActor, engine: Eng) -> dict[str, Any]:
    """`mpoxflow note`: a note on a case, contact, course or person, append-only and audited (the entry names the
    note, never its text)."""
    return engine.note(object_id, text=body.text, actor=who.name, reason=body.reason)


@router.post("/objects/{object_id}/attempt", operation_id="attempt", status_code=201, tags=["notes"],
             summary="attempt")
def attempt(object_id: str, body: NewAttempt, who: AttemptActor, engine: Eng) -> dict[str, Any]:
    """`mpoxflow attempt`: an attempt to reach the person of a case or contact. One that reached the person of a
    contact still to inform does the inform task (§5.5, `informed`); 3 failed attempts since the last that reached
    the person make it hard to reach (`hard_to_reach`)."""
    return engine.attempt(object_id, channel=body.channel, outcome=body.outcome, actor=who.name,
                          reason=body.reason)


@router.get("/objects/{object_id}/notes", operation_id="notes", tags=["notes"])
def notes(object_id: str, who: Reader, engine: Eng) -> list[dict[str, Any]]:
    """An object's notes and contact attempts, oldest first (a case, contact or course of your units; a
    person's)."""
    return engine.viewing_as(who.name).notes_of(object_id)


@router.get("/hard-to-reach", operation_id="hard_to_reach", tags=["notes"])
def hard_to_reach(who: Reader, engine: Eng,
                  limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_HARD_TO_REACH) -> list[dict[str, Any]]:
    """Open cases and contacts of your units with 3 or more failed contact attempts since the last one that
    reached the person (the worklist's "hard to reach")."""
    return engine.viewing_as(who.name).hard_to_reach(limit)


# ---- users and tokens ----------------------------------------------------------------------------------------


Reason = Annotated[str | None, Field(description="Why: goes into the audit entry.", max_length=MAX_NOTE)]
Password = Annotated[str, Field(max_length=MAX_PASSWORD)]


class NewUser(BaseModel):
    name: str = Field(max_length=MAX_NAME)
    role: Literal["staff", "auditor", "admin"]
    password: Password | None = Field(None, description="None: no password login (API tokens only).")
    reason: Reason = None
    units: list[Annotated[str, Field(max_length=MAX_NAME + 7)]] = Field(
        default_factory=list, max_length=64, description="The units the user works in: `UNIT` (a name or unit-N) "
        "or `UNIT:lead`; none: the root, while it is the only unit.")


class NewPassword(BaseModel):
    password: Password
    current_password: Password | None = Field(None, description="Your current password: required to change your "
                                                                "own.")
    reason: Reason = None


class UserChange(BaseModel):
    reason: Reason = None


class NewRole(BaseModel):
    role: Literal["staff", "auditor", "admin"]
    reason: Reason = None


class NewToken(BaseModel):
    label: str = Field(description="Which system uses it.", max_length=MAX_NAME)
    reason: Reason = None


class Revoke(BaseModel):
    reason: Reason = None


@router.get("/users", operation_id="user_list", tags=["users"])
def user_list(who: Reader, engine: Eng) -> list[dict[str, Any]]:
    """The users (admins only)."""
    engine.authorize(who.name, "user list", ADMIN_ROLES)
    return engine.users()


@router.post("/users", operation_id="user_add", status_code=201, tags=["users"])
def user_add(body: NewUser, who: UserAddAdmin, engine: Eng) -> dict[str, Any]:
    """Add a user (admins only)."""
    return Accounts(engine).add_user(body.name, body.role, body.password, actor=who.name, reason=body.reason,
                                     units=body.units)


@router.post("/users/{name}/password", operation_id="user_password", tags=["users"])
def user_password(request: Request, name: str, body: NewPassword, who: Actor, engine: Eng) -> dict[str, Any]:
    """Set a password: your own (give current_password; a wrong one counts as a failed login, 429 over the
    limit), or anyone's as an admin."""
    return Accounts(engine).set_password(name, body.password, actor=who.name, reason=body.reason,
                                         keep_session=who.session_id, current_password=body.current_password,
                                         require_current=True, address=client_address(request))


@router.post("/users/{name}/disable", operation_id="user_disable", tags=["users"])
def user_disable(name: str, body: UserChange, who: UserDisableAdmin, engine: Eng) -> dict[str, Any]:
    """Disable a user (admins only): their sessions and tokens stop at once; they cannot log in or act."""
    return Accounts(engine).set_disabled(name, True, actor=who.name, reason=body.reason)


@router.post("/users/{name}/enable", operation_id="user_enable", tags=["users"])
def user_enable(name: str, body: UserChange, who: UserEnableAdmin, engine: Eng) -> dict[str, Any]:
    """Enable a disabled user again (admins only)."""
    return Accounts(engine).set_disabled(name, False, actor=who.name, reason=body.reason)


@router.post("/users/{name}/role", operation_id="user_role", tags=["users"])
def user_role(name: str, body: NewRole, who: UserRoleAdmin, engine: Eng) -> dict[str, Any]:
    """Change a user's role (admins only, not your own)."""
    return Accounts(engine).set_role(name, body.role, actor=who.name, reason=body.reason)


@router.post("/users/{name}/tokens", operation_id="user_token", status_code=201, tags=["users"])
def user_token(name: str, body: NewToken, who: UserTokenAdmin, engine: Eng) -> dict[str, Any]:
    """Issue an API token for a system acting as the user (admins only); the secret is in this answer only."""
    return Accounts(engine).issue_token(name, body.label, actor=who.name, reason=body.reason)


@router.get("/tokens", operation_id="user_tokens", tags=["users"])
def user_tokens(who: Reader, engine: Eng) -> list[dict[str, Any]]:
    """The API tokens, never their secrets (admins only)."""
    engine.authorize(who.name, "user tokens", ADMIN_ROLES)
    return Accounts(engine).tokens()


@router.post("/tokens/{token_id}/revoke", operation_id="user_revoke", tags=["users"])
def user_revoke(token_id: str, body: Revoke, who: UserRevokeAdmin, engine: Eng) -> dict[str, Any]:
    """Revoke an API token (admins only)."""
    return Accounts(engine).revoke_token(token_id, actor=who.name, reason=body.reason)


# ---- units, assignment and access by unit (issue 17) ----------------------------------------------------------


UnitAddAdmin = may_admin("unit add")
UnitMemberAdmin = may_admin("unit member")
UnitLeaveAdmin = may_admin("unit leave")
UnitRuleAdmin = may_admin("unit rule")
AssignActor = may_act("assign")
TransferActor = may_act("transfer")
BreakGlassActor = may_act("break glass")
#: The most objects one assignment names (``engine.units.MAX_BULK``: one transaction).
MAX_BULK = 1000
UnitName = Annotated[str, Path(max_length=MAX_NAME, description="A unit's name or id (unit-N).")]
UserName = Annotated[str, Path(max_length=MAX_NAME, description="A user's name.")]
ObjectKind = Literal[tuple(WORKFLOWS)]  # type: ignore[valid-type]


def over_http(error: OutsideUnits) -> OutsideUnits:
    """The refusal of reading an object outside the user's units, with the API's way to read it anyway."""
    target = str(error.target or "ID")
    template = str(error.template).replace(field("break_glass"),
                                           f"POST /api/objects/{target}/break-glass (its body's reason)")
    made = OutsideUnits(template, actor=error.actor, role=error.role, user=None, command=error.command,
                        target=error.target)
    made.params = error.params
    return made


class NewUnit(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME, description="The unit's name, unique (not unit-N).")
    parent: str = Field(min_length=1, max_length=MAX_NAME, description="The unit it is part of: a name or unit-N.")
    reason: Reason = None


class NewMember(BaseModel):
    user: str = Field(min_length=1, max_length=MAX_NAME, description="The user's name.")
    role: Literal["member", "lead"] = Field("member", description="A lead deals out and transfers the unit's "
                                                                   "work; a member takes unassigned work.")
    reason: Reason = None


class MemberRemove(BaseModel):
    reason: Reason = None


class NewPlacement(BaseModel):
    rule: Literal["parent", "creator", "unit"] = Field(description="Where a new object goes: the unit of the "
                                                       "object it belongs to, the creator's unit, or `unit`.")
    unit: str | None = Field(None, max_length=MAX_NAME, description="With the rule `unit`: that unit.")
    round_robin: bool | None = Field(None, description="Assign each new object to the unit's member who waited "
                                                       "longest (null: as it is).")
    reason: Reason = None


class Selection(BaseModel):
    """The objects an assignment takes: their ids, or a filter within the user's units."""

    ids: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=MAX_BULK,
                                                            description="case-N, contact-N, course-N.")
    kind: ObjectKind | None = Field(None, description="The filter: objects of this kind.")
    state: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=32,
                                                              description="The filter: in one of these states.")
    in_unit: str | None = Field(None, max_length=MAX_NAME, description="The filter: of this unit and below.")
    unassigned: bool = Field(False, description="The filter: assigned to no one.")
    of_user: str | None = Field(None, max_length=MAX_NAME, description="The filter: assigned to this user.")
    user: str | None = Field(None, max_length=MAX_NAME, description="Assign to this member of the unit (none: "
                                                                  "to the unit's unassigned pool).")
    reason: str = Field(min_length=1, max_length=MAX_NOTE, description="Why: goes into each object's audit "
                                                                       "entry.")


class Assignment(Selection):
    unit: str | None = Field(None, max_length=MAX_NAME, description="Within this unit (default: each object's "
                                                                  "own).")


class Handover(Selection):
    unit: str = Field(min_length=1, max_length=MAX_NAME, description="The unit that takes the work over.")


class BreakGlass(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_NOTE, description="Why you read an object outside your "
                                                                       "units: goes into its audit log.")


@router.get("/units", operation_id="unit_list", tags=["units"])
def unit_list(who: Reader, engine: Eng) -> list[dict[str, Any]]:
    """`mpoxflow unit list`: every unit, depth first from the root, with its members and their roles."""
    return engine.list_units()


@router.post("/units", operation_id="unit_add", status_code=201, tags=["units"])
def unit_add(body: NewUnit, who: UnitAddAdmin, engine: Eng) -> dict[str, Any]:
    """`mpoxflow unit add`: a new unit under its parent (admins only)."""
    return engine.add_unit(body.name, parent=body.parent, actor=who.name, reason=body.reason)


@router.post("/units/{unit}/members", operation_id="unit_member", tags=["units"])
def unit_member(unit: UnitName, body: NewMember, who: UnitMemberAdmin, engine: Eng) -> dict[str, Any]:
    """`mpoxflow unit member`: make a user a member or a lead of the unit, or change their role there (admins
    only; audited on the user's chain)."""
    return engine.set_member(unit, body.user, role=body.role, actor=who.name, reason=body.reason)


@router.post("/units/{unit}/members/{user}/remove", operation_id="unit_leave", tags=["units"])
def unit_leave(unit: UnitName, user: UserName, body: MemberRemove, who: UnitLeaveAdmin,
               engine: Eng) -> dict[str, Any]:
    """`mpoxflow unit leave`: end a user's membership of the unit (admins only); their work there goes back to
    the unit's unassigned pool, each object audited."""
    return engine.remove_member(unit, user, actor=who.name, reason=body.reason)


@router.get("/units/rules", operation_id="unit_rules", tags=["units"])
def unit_rules(who: Reader, engine: Eng) -> list[dict[str, Any]]:
    """`mpoxflow unit rules`: where each kind's new objects go, and whether round-robin."""
    return engine.placements()


@router.post("/units/rules/{kind}", operation_id="unit_rule", tags=["units"])
def unit_rule(kind: ObjectKind, body: NewPlacement, who: UnitRuleAdmin, engine: Eng) -> dict[str, Any]:
    """`mpoxflow unit rule`: change where a kind's new objects go (admins only; audited)."""
    return engine.set_placement(kind, body.rule, unit=body.unit, round_robin=body.round_robin, actor=who.name,
                                reason=body.reason)


def _selection(body: Selection) -> dict[str, Any]:
    return {"kind": body.kind, "states": body.state, "in_unit": body.in_unit, "unassigned": body.unassigned,
            "of_user": body.of_user, "user": body.user, "unit": getattr(body, "unit", None), "reason": body.reason}


@router.post("/assign", operation_id="assign", tags=["units"])
def assign(body: Assignment, who: AssignActor, engine: Eng) -> list[dict[str, Any]]:
    """`mpoxflow assign`: assign objects (by id, or a filter) to a member of their unit, or back to its pool.
    A lead deals out the unit's work; a member takes unassigned work for themselves and gives their own back.
    Each object one audited entry (trigger `assign`, the state unchanged); all or nothing."""
    return engine.assign(body.ids, actor=who.name, **_selection(body))


@router.post("/transfer", operation_id="transfer", tags=["units"])
def transfer(body: Handover, who: TransferActor, engine: Eng) -> list[dict[str, Any]]:
    """`mpoxflow transfer`: hand objects over to another unit (to its pool, or to one of its members); leads
    only. Each object one audited entry (trigger `transfer`); all or nothing."""
    return engine.transfer(body.ids, actor=who.name, **_selection(body))


@router.post("/objects/{object_id}/break-glass", operation_id="break_glass", tags=["units"])
def break_glass(object_id: str, body: BreakGlass, who: BreakGlassActor, engine: Eng) -> dict[str, Any]:
    """`mpoxflow show ID --break-glass REASON`: read an object outside your units. The reason is appended to the
    object's audit log (trigger `break_glass`) before the object is shown; one of your units' objects is shown
    without an entry."""
    return engine.read_outside(object_id, actor=who.name, reason=body.reason)


__all__ = ["router", "current_login"]
