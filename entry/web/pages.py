"""The web application: server-rendered pages (Jinja2) over the same engine and the same operations as the API.

Forms are drawn from the operations' request models; what a form posts is validated by the same model and applied
by the same ``Operation.call``. A refusal re-renders the page with the engine's message and the rule it cites,
and the values typed. Every form carries the session's CSRF token.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.datastructures import FormData

from engine.accounts import Accounts, Login
from engine.core import ACTING_ROLES, ADMIN_ROLES, TASK_OUTCOMES, Engine
from engine.views import instant
from entry.operations import COLLECTIONS, LISTABLE
from entry.web import diagram, i18n
from entry.web.app import (
    CSRF_FIELD,
    SESSION_COOKIE,
    check_csrf,
    clear_session_cookie,
    client_address,
    engine_dependency,
    http_status,
    login_dependency,
    set_session_cookie,
)
from entry.web.operations import (
    BY_NAME,
    OPERATIONS,
    Operation,
    TaskResolve,
    allowed_now,
    transitions_of,
)
from persistence.repository import parse_id
from scheduler import firing
from workflows.calendar import DANISH, to_local
from workflows.errors import MpoxflowError, NotAuthenticated, UsageError
from workflows.operations import Field as DeclaredField
from workflows.operations import rendered
from workflows.registry import CALENDAR, LISTS, TASK_ACTIONS, WORKFLOWS

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
i18n.install(templates.env)  # `_()` in the templates (the i18n branch supplies the catalogs)
LOGIN_CSRF_COOKIE = "mpoxflow_login_csrf"
CREATING = {op.operation_id: op for op in OPERATIONS if op.creates}
#: The navigation's lists, from the registry: (link, name).
NAV = [(f"/list/{COLLECTIONS[kind]}", name) for kind, name in LISTS.items()]
Listed = Literal[tuple(LISTABLE)]  # type: ignore[valid-type]
Kind = Literal[tuple(WORKFLOWS)]  # type: ignore[valid-type]

# ---- Danish formats ------------------------------------------------------------------------------------------


def _when(value: Any) -> datetime | date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date):
        return value
    text = str(value)
    return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)


def dk_date(value: Any) -> str:
    """``24.11.2026``: the Danish way of writing a date."""
    when = _when(value)
    if when is None:
        return "–"
    if isinstance(when, datetime):
        when = to_local(when).date()
    return when.strftime("%d.%m.%Y")


def dk_time(value: Any) -> str:
    """``24.11.2026 kl. 14.30``: a Danish date and local time."""
    when = _when(value)
    if when is None:
        return "–"
    if not isinstance(when, datetime):
        return dk_date(when)
    return to_local(when).strftime("%d.%m.%Y kl. %H.%M")


def left(due_at: Any, now: datetime) -> str:
    """Time left until a deadline (or how long it is overdue), in days and hours."""
    when = _when(due_at)
    assert isinstance(when, datetime)
    seconds = int((when - now).total_seconds())
    hours = abs(seconds) // 3600
    text = f"{hours // 24} d {hours % 24} h" if hours >= 24 else f"{hours} h {abs(seconds) % 3600 // 60} min"
    return f"{text} left" if seconds > 0 else f"overdue by {text}"


def dk_dates(text: Any) -> str:
    """Every ISO date in a text (a task, a message) written the Danish way."""
    return ISO_DATE.sub(lambda m: f"{m[3]}.{m[2]}.{m[1]}", str(text))


ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b(?!T)")
templates.env.filters["dkdates"] = dk_dates
templates.env.filters["dkdate"] = dk_date
templates.env.filters["dktime"] = dk_time
WEEKDAYS = ("man", "tir", "ons", "tor", "fre", "lør", "søn")

# ---- forms drawn from the operations' declarations -------------------------------------------------------------


@dataclass
class Field:
    name: str
    label: str
    input: str  # date, select, checkboxes, checkbox, number, text, textarea, hidden
    required: bool
    value: Any = None
    choices: tuple[str, ...] = ()
    help: str | None = None


#: The input of each declared field type.
INPUTS = {"date": "date", "choice": "select", "choices": "checkboxes", "flag": "checkbox", "yesno": "checkbox",
          "count": "number", "note": "textarea", "text": "text", "id": "text"}


def label_of(op: Operation) -> Callable[[str], str]:
    """How a page names ``op``'s fields (in its help texts and refusals): by their Danish label."""
    def label(name: str) -> str:
        declared = op.declared.field(name)
        return declared.label if declared is not None else name.replace("_", " ")

    return label


def declared_fields(op: Operation) -> tuple[DeclaredField, ...]:
    """The fields a form of ``op`` posts: its declared fields and the reason."""
    return (*op.declared.fields, op.declared.reason)


def form_fields(op: Operation, values: dict[str, Any], hidden: tuple[str, ...] = ()) -> list[Field]:
    """The inputs of ``op``'s form, labelled in Danish, with ``values`` filled in; ``if_version`` hidden."""
    named = label_of(op)
    fields = []
    if op.declared.versioned:
        fields.append(Field("if_version", "version", "hidden", False, values.get("if_version")))
    for declared in declared_fields(op):
        value = values.get(declared.name)
        kind = "hidden" if declared.name in hidden else INPUTS[declared.type]
        if kind == "checkboxes":
            value = value or []
        fields.append(Field(declared.name, declared.label, kind, declared.required, value,
                            declared.choices if kind in ("select", "checkboxes") else (),
                            rendered(declared.help, named) or None))
    return fields


def form_values(op: Operation, form: FormData) -> dict[str, Any]:
    """What a form posted, as ``op``'s fields: lists from repeated fields, booleans from checkboxes, empty
    inputs left out (so the body's defaults and its required-field messages apply)."""
    data: dict[str, Any] = {}
    names = [(f.name, f.type) for f in declared_fields(op)]
    if op.declared.versioned:
        names.append(("if_version", "count"))
    for name, kind in names:
        if kind == "choices":
            data[name] = [v for v in form.getlist(name) if isinstance(v, str) and v]
        elif kind in ("flag", "yesno"):
            data[name] = form.get(name) in ("on", "true", "yes", "1")
        else:
            raw = form.get(name)
            if isinstance(raw, str) and raw.strip():
                data[name] = raw.strip()
    return data


def _resolve_values(form: FormData) -> dict[str, Any]:
    """A task resolution's outcome and reason as posted (empty ones left out)."""
    return {name: str(form.get(name)).strip() for name in ("outcome", "reason")
            if isinstance(form.get(name), str) and str(form.get(name)).strip()}


def validation_messages(error: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for problem in error.errors():
        where = str(problem["loc"][0]) if problem["loc"] else "form"
        found.setdefault(where, problem["msg"])
    return found


# ---- the login, for every page -------------------------------------------------------------------------------


Who = Annotated[Login, Depends(login_dependency)]
Eng = Annotated[Engine, Depends(engine_dependency)]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    login: Login | None = getattr(request.state, "login", None)
    engine: Engine | None = getattr(request.state, "engine", None)
    now = engine.clock.now() if engine is not None else None
    base = {
        "request": request, "login": login, "csrf": login.csrf if login else None,
        "can_act": login is not None and login.role in ACTING_ROLES,
        "is_admin": login is not None and login.role in ADMIN_ROLES,
        "now": instant(now) if now else None, "simulated": engine.clock.simulated if engine else False,
        "outcomes": TASK_OUTCOMES, "nav": NAV,
        "done": request.query_params.get("done"),
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)


def error_page(request: Request, error: MpoxflowError) -> Response:
    """An error outside a form: not logged in goes to the login page; others get a page with the message."""
    if isinstance(error, NotAuthenticated):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    status, code = http_status(error)
    return render(request, "error.html", status_code=status, error=error, code=code)


async def posted(request: Request, login: Login) -> FormData:
    """The form, once its CSRF token is checked against the session's."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    check_csrf(request, login, token if isinstance(token, str) else None)
    return form


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/worklist"


# ---- logging in and out --------------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "login.html", next=_safe_next(next), login_csrf=token)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                        secure=request.app.state.web.secure_cookies)
    return response


@router.post("/login")
async def login_submit(request: Request, engine: Eng) -> Response:
    form = await request.form()
    target = _safe_next(str(form.get("next") or ""))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    sent = form.get(CSRF_FIELD)
    if not cookie or not isinstance(sent, str) or not secrets.compare_digest(cookie, sent):
        return render(request, "login.html", status_code=403, next=target, login_csrf=cookie or "",
                      error="the login form was stale: it has been reloaded, log in again")
    try:
        _, secret = Accounts(engine).login(str(form.get("name") or ""), str(form.get("password") or ""),
                                           client_address(request))
    except MpoxflowError as error:
        status, _ = http_status(error)
        return render(request, "login.html", status_code=status, next=target, login_csrf=cookie,
                      error=error.message, name=str(form.get("name") or ""))
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, secret)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, who: Who, engine: Eng) -> Response:
    await posted(request, who)
    Accounts(engine).logout(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(request, response)
    return response


# ---- the worklist --------------------------------------------------------------------------------------------

def task_action(timer: str) -> tuple[str, str | None, dict[str, str]] | None:
    """The button or link a task gets, from the operation declared to do it: (label, operation, fixed fields)
    posts at once; (label, None, anchor) opens the operation's form on the object's page."""
    found = TASK_ACTIONS.get(timer)
    if found is None:
        return None
    op, task = found
    if task.fixed is not None:
        return task.label, op.name, dict(task.fixed)
    return task.label, None, {"anchor": op.operation_id if op.creates else op.verb}


#: Tasks on one page of the worklist; the page links to the next (``Engine.worklist_page``).
WORKLIST_PAGE = 100


@router.get("/worklist")
def worklist(request: Request, who: Who, engine: Eng, after: str | None = None) -> Response:
    now = engine.clock.now()
    tomorrow = datetime.combine(to_local(now).date() + timedelta(days=1), datetime.min.time(), tzinfo=DANISH)
    week = tomorrow + timedelta(days=7)
    sections: dict[str, list[dict[str, Any]]] = {"Missed": [], "Overdue": [], "Due today": [], "Next 7 days": []}
    # One page, in the worklist's order; what falls due after the next 7 days is not on the worklist page.
    page = engine.worklist_page(week - now - timedelta(microseconds=1), limit=WORKLIST_PAGE, after=after)
    for item in page["items"]:
        due_at = datetime.fromisoformat(item["due_at"])
        item["left"] = left(due_at, now)
        item["action"] = task_action(item["name"]) if not item.get("failed") else None
        if item["missed"]:
            sections["Missed"].append(item)
        elif item["overdue"]:
            sections["Overdue"].append(item)
        elif due_at < tomorrow:
            sections["Due today"].append(item)
        else:
            sections["Next 7 days"].append(item)
    more = f"/worklist?{urlencode({'after': page['next']})}" if page["next"] else None
    return render(request, "worklist.html", sections=sections, operations=BY_NAME, more=more,
                  first=after is not None)


# ---- lists and objects ---------------------------------------------------------------------------------------


@router.get("/list/{what}")
def listing(request: Request, what: Listed, who: Who, engine: Eng,
            state: str | None = None) -> Response:
    kind = LISTABLE[what]
    rows = engine.list(kind, state or None)
    return render(request, "list.html", what=what, kind=kind, rows=rows, state=state,
                  states=WORKFLOWS[kind].states if kind in WORKFLOWS else (),
                  form=_creation_form("person_add", {}) if kind == "person" else None)


def _creation_form(op_id: str, values: dict[str, Any], errors: dict[str, str] | None = None,
                   hidden: tuple[str, ...] = ()) -> dict[str, Any]:
    op = CREATING[op_id]
    return {"op": op, "action": f"/new/{op.operation_id}", "fields": form_fields(op, values, hidden),
            "errors": errors or {}}


def _transition_form(op: Operation, object_id: str, version: int, values: dict[str, Any] | None = None,
                     errors: dict[str, str] | None = None) -> dict[str, Any]:
    return {"op": op, "action": f"/objects/{object_id}/{op.verb}",
            "fields": form_fields(op, {"if_version": version, **(values or {})}),
            "errors": errors or {}}


def offered_here(kind: str, view: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The creating operations the page of an object offers, as their declarations say (``Offer``), each with
    the fields it prefills from the object (its id, its person) and fixed values."""
    found = []
    for op in CREATING.values():
        for offer in op.declared.offered:
            if offer.kind == kind and (not offer.states or view.get("state") in offer.states):
                prefill = {name: view.get(key) for name, key in offer.from_view.items()}
                found.append((op.operation_id, {**prefill, **offer.fixed}))
    return found


def object_page(request: Request, engine: Engine, object_id: str, *, status_code: int = 200,
                failed: tuple[str, dict[str, Any], dict[str, str], MpoxflowError | None] | None = None) -> Response:
    """One object: facts, state, timers, related objects, the actions allowed now (as forms), its timeline."""
    view = engine.show(object_id)
    kind = view.get("kind") or parse_id(object_id)[0]  # a timer's view names no kind
    related = engine.related(object_id)
    timeline = engine.audit_timeline(object_id) if kind != "timer" else []
    forms: list[dict[str, Any]] = []
    if kind in WORKFLOWS:
        for op in allowed_now(kind, view["state"]):
            values, errors = (failed[1], failed[2]) if failed and failed[0] == op.name else ({}, {})
            forms.append(_transition_form(op, object_id, view["version"], values, errors))
    else:  # a person's facts: always changeable, the form shows them as they are
        for op in transitions_of(kind):
            current = {f.name: view.get(f.shown_as or f.name) for f in op.declared.fields}
            values, errors = (failed[1], failed[2]) if failed and failed[0] == op.name else (current, {})
            forms.append(_transition_form(op, object_id, 0, values, errors))
    creations = []
    for op_id, prefilled in offered_here(kind, view):
        problems: dict[str, str] = {}
        if failed and failed[0] == CREATING[op_id].name:
            prefilled, problems = {**prefilled, **failed[1]}, failed[2]
        creations.append(_creation_form(op_id, prefilled, problems))
    facts = {k: v for k, v in view.items()
             if k not in ("id", "kind", "state", "workflow", "version", "timers", "cases")}
    error = failed[3] if failed else None
    return render(request, "object.html", status_code=status_code, view=view, kind=kind, facts=facts,
                  related=related, timeline=timeline, forms=forms, creations=creations, error=error,
                  error_text=_error_text(error, failed[0] if failed else None), failed_op=failed[0] if failed else None)


def _error_text(error: MpoxflowError | None, op_name: str | None) -> str | None:
    """A refusal of a form's operation as the page says it: its fields named by their Danish labels."""
    if error is None:
        return None
    op = BY_NAME.get(op_name or "")
    return error.render(label_of(op)) if op is not None else error.message


@router.get("/objects/{object_id}")
def show_object(request: Request, object_id: str, who: Who, engine: Eng) -> Response:
    return object_page(request, engine, object_id)


@router.post("/objects/{object_id}/{verb}")
async def change_object(request: Request, object_id: str, verb: str, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    kind, _ = parse_id(object_id)
    op = next((op for op in transitions_of(kind) if op.verb == verb), None)
    if op is None:
        raise UsageError(f"there is no '{verb}' for a {kind}: use the actions on its page")
    values = form_values(op, form)
    try:
        body = op.body.model_validate(values)
    except ValidationError as error:
        refusal = UsageError("some fields need correcting: see the messages at the form")
        return object_page(request, engine, object_id, status_code=422,
                           failed=(op.name, values, validation_messages(error), refusal))
    try:
        result = op.call(engine, who.name, body, object_id)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        status, _ = http_status(error)
        return object_page(request, engine, object_id, status_code=status, failed=(op.name, values, {}, error))
    done = f"{op.name}: {result.get('state', '')}".strip()
    return RedirectResponse(f"/objects/{object_id}?{urlencode({'done': done})}", status_code=303)


@router.post("/timers/{timer_id}/resolve")
async def resolve_task(request: Request, timer_id: str, who: Who, engine: Eng) -> Response:
    """A missed task's resolution from the worklist or the object's page; back to the object's page."""
    form = await posted(request, who)
    timer = engine.show(timer_id)
    try:
        body = TaskResolve.model_validate(_resolve_values(form))
    except ValidationError as error:
        refusal = UsageError("to record what happened, choose an outcome and give a reason: "
                             + "; ".join(f"{k}: {v}" for k, v in validation_messages(error).items()))
        return object_page(request, engine, timer["object"], status_code=422, failed=("task resolve", {}, {},
                                                                                        refusal))
    try:
        engine.resolve_task(timer_id, body.outcome, actor=who.name, reason=body.reason)
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        status, _ = http_status(error)
        return object_page(request, engine, timer["object"], status_code=status,
                           failed=("task resolve", {}, {}, error))
    done = f"task resolve: {timer_id} {body.outcome}"
    return RedirectResponse(f"/objects/{timer['object']}?{urlencode({'done': done})}", status_code=303)


@router.get("/new/{op_id}")
def new_form(request: Request, op_id: str, who: Who, engine: Eng) -> Response:
    if op_id not in CREATING:
        raise UsageError(f"nothing is created by '{op_id}': use one of {', '.join(CREATING)}")
    values = dict(request.query_params)
    return render(request, "new.html", form=_creation_form(op_id, values))


@router.post("/new/{op_id}")
async def create(request: Request, op_id: str, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    if op_id not in CREATING:
        raise UsageError(f"nothing is created by '{op_id}': use one of {', '.join(CREATING)}")
    op = CREATING[op_id]
    values = form_values(op, form)
    try:
        body = op.body.model_validate(values)
        result = op.call(engine, who.name, body)
    except ValidationError as error:
        return render(request, "new.html", status_code=422, form=_creation_form(
            op_id, values, validation_messages(error)), error=UsageError("some fields need correcting"))
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return render(request, "new.html", status_code=http_status(error)[0],
                      form=_creation_form(op_id, values), error=error, error_text=_error_text(error, op.name))
    return RedirectResponse(f"/objects/{result['id']}?{urlencode({'done': op.name})}", status_code=303)


# ---- the simulated clock -------------------------------------------------------------------------------------


@router.post("/clock/advance")
async def clock_advance(request: Request, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    target = _safe_next(str(form.get("next") or "/worklist"))
    amount = str(form.get("amount") or "").strip()
    unit = str(form.get("unit") or "days")
    if not amount.isdigit() or unit not in ("days", "hours"):
        raise UsageError("move the clock by a whole number of days or hours, e.g. 1 day")
    steps = int(amount)
    result = firing.clock_advance(engine, who.name, days=steps if unit == "days" else None,
                                  hours=steps if unit == "hours" else None)
    done = f"clock moved to {dk_time(result['now'])}: {len(result['fired'])} timer(s) fired"
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}{urlencode({'done': done})}", status_code=303)


# ---- reading: audit, diagrams, calendar ----------------------------------------------------------------------


@router.get("/diagrams/{kind}")
def diagram_page(request: Request, kind: Kind, who: Who, engine: Eng) -> Response:
    definition = WORKFLOWS[kind]
    counts = engine.state_counts(kind)
    return render(request, "diagram.html", kind=kind, definition=definition, counts=counts,
                  svg=diagram.svg(definition, counts), internal=diagram.internal(definition),
                  mermaid=definition.mermaid(), kinds=list(WORKFLOWS))


@router.get("/calendar")
def calendar_page(request: Request, who: Who, engine: Eng) -> Response:
    days = engine.calendar(8)
    weeks = [days[i:i + 7] for i in range(0, len(days), 7)]
    counts = [count for _, count in CALENDAR]
    peak = max([d[c.key] for d in days for c in counts] + [1])
    return render(request, "calendar.html", weeks=weeks, peak=peak, weekdays=WEEKDAYS, counts=counts,
                  totals={c.key: sum(d[c.key] for d in days) for c in counts})


# ---- users (admins) ------------------------------------------------------------------------------------------


@router.get("/users")
def users_page(request: Request, who: Who, engine: Eng) -> Response:
    engine.authorize(who.name, "user list", ADMIN_ROLES)  # users and tokens are listed to admins only
    return render(request, "users.html", users=engine.users(), tokens=Accounts(engine).tokens())


@router.get("/account")
def account_page(request: Request, who: Who, engine: Eng) -> Response:
    """Your own password (any role)."""
    return render(request, "account.html")


@router.post("/account")
async def account_change(request: Request, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    try:
        Accounts(engine).set_password(who.name, str(form.get("password") or ""), actor=who.name,
                                      keep_session=who.session_id, require_current=True,
                                      current_password=str(form.get("current_password") or "") or None,
                                      address=client_address(request))
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated):
            raise
        return render(request, "account.html", status_code=http_status(error)[0], error=error)
    return RedirectResponse(f"/account?{urlencode({'done': 'your password is set'})}", status_code=303)


@router.post("/users")
async def users_change(request: Request, who: Who, engine: Eng) -> Response:
    form = await posted(request, who)
    accounts = Accounts(engine)
    action = str(form.get("action") or "")
    name = str(form.get("name") or "").strip()
    reason = str(form.get("reason") or "").strip() or None
    issued = None
    try:
        if action == "add":
            password = str(form.get("password") or "") or None
            accounts.add_user(name, str(form.get("role") or ""), password, actor=who.name, reason=reason)
            done = f"user {name} added"
        elif action == "password":
            accounts.set_password(name, str(form.get("password") or ""), actor=who.name, reason=reason,
                                  keep_session=who.session_id, require_current=True,
                                  current_password=str(form.get("current_password") or "") or None,
                                  address=client_address(request))
            done = f"password set for {name}"
        elif action in ("disable", "enable"):
            accounts.set_disabled(name, action == "disable", actor=who.name, reason=reason)
            done = f"user {name} {action}d"
        elif action == "role":
            accounts.set_role(name, str(form.get("role") or ""), actor=who.name, reason=reason)
            done = f"role of {name} set"
        elif action == "token":
            issued = accounts.issue_token(name, str(form.get("label") or ""), actor=who.name, reason=reason)
            done = f"token {issued['id']} issued for {name}"
        elif action == "revoke":
            accounts.revoke_token(str(form.get("token") or ""), actor=who.name, reason=reason)
            done = f"token {form.get('token')} revoked"
        else:
            raise UsageError("choose add, password, disable, enable, role, token or revoke")
    except MpoxflowError as error:
        if isinstance(error, NotAuthenticated) or who.role not in ADMIN_ROLES:
            raise  # a page of its own: the users and tokens are not listed to others
        return render(request, "users.html", status_code=http_status(error)[0], users=engine.users(),
                      tokens=accounts.tokens(), error=error)
    if issued is not None:  # the secret is shown on this page once, never again
        return render(request, "users.html", users=engine.users(), tokens=accounts.tokens(), issued=issued,
                      done_now=done)
    return RedirectResponse(f"/users?{urlencode({'done': done})}", status_code=303)
