"""Web safety (issue 13, items 8-10): security headers and a CSP without inline script, users and tokens listed to
admins only, one's own password changed only with the current one, disabling users and changing roles (audited),
and structured error events (a 500 is one JSON event with a request id; ``worker_pass_failed`` has no statement
parameters; ``timer_fired`` is logged after the commit).

On SQLite and on PostgreSQL (the ``web_app``, ``client_for`` and ``engine`` fixtures).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import structlog
from sqlalchemy.exc import IntegrityError

from engine.clock import SimulatedClock
from engine.core import Engine
from engine.uow import UnitOfWork
from entry.logs import configure_logging
from entry.web.app import CSRF_HEADER
from persistence.database import Database
from scheduler.worker import Worker
from tests.conftest import ADMIN, PASSWORD, START
from tests.helpers import confirmed, contents, person

Client = Any
NEW_PASSWORD = "a brand new passphrase"


def post(client: Client, path: str, body: dict[str, Any] | None = None) -> Any:
    headers = {CSRF_HEADER: client.csrf} if client.csrf else {}
    return client.post(path, json=body if body is not None else {}, headers=headers)


def ok(response: Any) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["error"], body["status"]) == (code, status), body
    assert set(body) >= {"error", "message", "rule", "exit_code", "status"}
    return dict(body)


def user_chain(url: str, name: str) -> list[dict[str, Any]]:
    with Database(url) as db:
        engine = Engine(db, SimulatedClock(START))
        pk = next(u["id"] for u in engine.users() if u["name"] == name)
        return engine.audit(entity=pk)


# ---- 8. security headers and no inline script ------------------------------------------------------------------

HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def check_headers(response: Any, *, no_store: bool = True) -> None:
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name, response.headers)
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    if no_store:
        assert response.headers["Cache-Control"] == "no-store"


def test_security_headers_on_a_page_an_api_answer_an_error_and_the_login_page(client_for: Any) -> None:
    staff = client_for("staff:test")
    check_headers(staff.get("/worklist"))
    check_headers(staff.get("/api/me"))
    missing = staff.get("/api/show/case-999")
    assert missing.status_code == 404
    check_headers(missing)
    check_headers(staff.get("/objects/case-999"))  # an error page
    check_headers(client_for().get("/login"))
    check_headers(client_for().get("/api/me"))  # 401
    css = client_for().get("/static/mpoxflow.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    check_headers(css, no_store=False)
    assert "no-store" not in css.headers.get("Cache-Control", "")
    assert client_for().get("/static/mpoxflow.js").status_code == 200


INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"<[^>]+\son[a-z]+\s*=", re.I), "an on* handler"),
    (re.compile(r"<[^>]+\sstyle\s*=", re.I), "a style attribute"),
    (re.compile(r"<style", re.I), "a <style> block"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
    (re.compile(r"<(script|link)[^>]+(src|href)=\"(https?:)?//", re.I), "a script or stylesheet of another origin"),
]


def test_the_main_pages_have_no_inline_script_or_style_and_load_only_our_own(client_for: Any) -> None:
    admin = client_for(ADMIN)
    for ref in ("REF-A", "REF-B"):
        ok(post(admin, "/api/persons", {"ref": ref}))
    ok(post(admin, "/api/cases", {"person": "person-1", "onset": "2025-02-28", "confirmed": True,
                                  "pcr_on": "2025-03-02"}))
    pages = ["/worklist", "/list/cases", "/list/persons", "/list/contacts", "/list/courses", "/objects/case-1",
             "/objects/person-1", "/calendar", "/diagrams/case", "/diagrams/course", "/audit", "/users", "/account",
             "/new/case_open", "/objects/case-999"]
    for path in pages:
        response = admin.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        html = response.text
        assert '<script src="/static/mpoxflow.js"' in html and 'href="/static/mpoxflow.css"' in html, path
        for pattern, what in INLINE:
            found = pattern.search(html)
            assert found is None, f"{path} has {what}: {found and found.group(0)}"
    login = client_for().get("/login").text
    assert all(pattern.search(login) is None for pattern, _ in INLINE)


def test_docs_and_redoc_are_off_and_the_schema_stays(client_for: Any) -> None:
    admin = client_for(ADMIN)
    assert admin.get("/docs").status_code == 404
    assert admin.get("/redoc").status_code == 404
    schema = admin.get("/openapi.json")
    assert schema.status_code == 200 and "/api/users/{name}/disable" in schema.json()["paths"]


def test_the_login_csrf_cookie_is_secure_with_secure_cookies(cli_db: str) -> None:
    from fastapi.testclient import TestClient

    from entry.web.server import create_app

    for secure in (True, False):
        app = create_app(cli_db, secure_cookies=secure)
        try:
            with TestClient(app, base_url="https://testserver") as client:
                cookie = client.get("/login").headers["set-cookie"]
            assert cookie.startswith("mpoxflow_login_csrf=")
            assert ("; secure" in cookie.lower()) is secure, cookie
        finally:
            app.state.web.db.dispose()


# ---- 9. users and tokens: admins only; passwords; disabling; roles -----------------------------------------------


@pytest.mark.parametrize("who", ["staff:test", "auditor:test"])
def test_users_and_tokens_are_listed_to_admins_only(client_for: Any, cli_db: str, who: str) -> None:
    client = client_for(who)
    error(client.get("/api/users"), 403, "not_permitted")
    error(client.get("/api/tokens"), 403, "not_permitted")
    page = client.get("/users")
    assert page.status_code == 403 and "staff:jonas" not in page.text
    refused = [e for e in user_chain(cli_db, who) if e["trigger"] == "refused"]
    assert [e["data"]["command"] for e in refused] == ["user list", "user tokens", "user list"]
    admin = client_for(ADMIN)
    assert any(u["name"] == "staff:jonas" for u in ok(admin.get("/api/users")))
    assert ok(admin.get("/api/tokens")) == []
    assert admin.get("/users").status_code == 200


def test_changing_ones_own_password_asks_for_the_current_one(client_for: Any, cli_db: str) -> None:
    nurse = client_for("nurse:holm")
    with Database(cli_db) as db:
        before = contents(db)
    body = error(post(nurse, "/api/users/nurse:holm/password", {"password": NEW_PASSWORD}), 422, "usage")
    assert "current_password" in body["message"]
    body = error(post(nurse, "/api/users/nurse:holm/password",
                      {"password": NEW_PASSWORD, "current_password": "not my password"}), 403, "not_permitted")
    assert "current_password" in body["message"]
    with Database(cli_db) as db:
        after = contents(db)
    kept = ("audit_log", "users", "login_failures")
    assert {t: r for t, r in after.items() if t not in kept} == {
        t: r for t, r in before.items() if t not in kept}  # only the refusal is audited, the guesses counted
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1
    assert len(after["login_failures"]) == len(before["login_failures"]) + 2
    # The page asks for it too.
    page = nurse.post("/account", data={"csrf_token": nurse.csrf, "password": NEW_PASSWORD})
    assert page.status_code == 422 and "current_password" in page.text
    page = nurse.post("/account", data={"csrf_token": nurse.csrf, "password": NEW_PASSWORD,
                                        "current_password": PASSWORD})
    assert page.status_code == 303
    assert ok(nurse.get("/api/me"))["user"] == "nurse:holm"  # this session stays
    error(client_for().post("/api/login", json={"name": "nurse:holm", "password": PASSWORD}), 401,
          "not_authenticated")
    assert client_for("nurse:holm", password=NEW_PASSWORD).csrf
    # An admin sets someone else's without knowing it; their own needs it.
    admin = client_for(ADMIN)
    assert ok(post(admin, "/api/users/nurse:ida/password", {"password": NEW_PASSWORD}))["password"] == "set"
    error(post(admin, f"/api/users/{ADMIN}/password", {"password": NEW_PASSWORD}), 422, "usage")
    ok(post(admin, f"/api/users/{ADMIN}/password", {"password": NEW_PASSWORD, "current_password": PASSWORD}))


def test_guesses_at_the_current_password_count_as_failed_logins(client_for: Any, cli_db: str) -> None:
    """A borrowed session cannot guess the current password without limit: each wrong guess is a failed login
    for the name, and over the limit even the right one waits (429), as a login would."""
    from engine.accounts import MAX_FAILURES_PER_NAME

    nurse = client_for("nurse:holm")
    with Database(cli_db) as db:
        users_before = contents(db)["users"]
    for _ in range(MAX_FAILURES_PER_NAME):
        error(post(nurse, "/api/users/nurse:holm/password",
                   {"password": NEW_PASSWORD, "current_password": "a guess"}), 403, "not_permitted")
    limited = post(nurse, "/api/users/nurse:holm/password", {"password": NEW_PASSWORD, "current_password": PASSWORD})
    body = error(limited, 429, "too_many_attempts")
    assert int(limited.headers["Retry-After"]) == body["retry_after"] > 0
    error(client_for().post("/api/login", json={"name": "nurse:holm", "password": PASSWORD}), 429,
          "too_many_attempts")
    with Database(cli_db) as db:
        assert [r[:5] for r in contents(db)["users"]] == [r[:5] for r in users_before]  # no password changed


def test_the_right_current_password_is_not_counted(client_for: Any, cli_db: str) -> None:
    nurse = client_for("nurse:holm")
    with Database(cli_db) as db:
        before = len(contents(db)["login_failures"])
    ok(post(nurse, "/api/users/nurse:holm/password", {"password": NEW_PASSWORD, "current_password": PASSWORD}))
    with Database(cli_db) as db:
        assert len(contents(db)["login_failures"]) == before


def test_disabling_a_user_stops_their_session_and_token_at_once_and_is_audited(client_for: Any,
                                                                               cli_db: str) -> None:
    admin = client_for(ADMIN)
    nurse = client_for("nurse:holm")
    secret = ok(post(admin, "/api/users/nurse:holm/tokens", {"label": "lab system"}))["secret"]
    bearer = {"Authorization": f"Bearer {secret}"}
    assert ok(client_for().get("/api/me", headers=bearer))["user"] == "nurse:holm"
    # Only an admin may, and not on themselves.
    staff = client_for("staff:test")
    error(post(staff, "/api/users/nurse:holm/disable", {}), 403, "not_permitted")
    error(post(admin, f"/api/users/{ADMIN}/disable", {}), 409, "refused")
    error(post(admin, "/api/users/nobody/disable", {}), 404, "not_found")
    error(post(admin, "/api/users/timer/disable", {}), 422, "usage")

    view = ok(post(admin, "/api/users/nurse:holm/disable", {"reason": "left the department"}))
    assert view["disabled_at"] is not None
    error(nurse.get("/api/me"), 401, "not_authenticated")  # the session ended at once
    error(client_for().get("/api/me", headers=bearer), 401, "not_authenticated")  # the token too
    error(client_for().post("/api/login", json={"name": "nurse:holm", "password": PASSWORD}), 403, "not_permitted")
    with Database(cli_db) as db:  # acting under the name (the CLI's --actor) is refused too
        engine = Engine(db, SimulatedClock(START))
        with pytest.raises(Exception, match="disabled"):
            engine.add_person(ref="REF-X", actor="nurse:holm")
    chain = user_chain(cli_db, "nurse:holm")
    disabled = next(e for e in chain if e["trigger"] == "disabled")
    assert (disabled["actor"], disabled["reason"], disabled["changes"]) == (ADMIN, "left the department",
                                                                            {"disabled": True})
    assert disabled["data"]["sessions_ended"] == 1
    assert [e["trigger"] for e in chain[-2:]] == ["login_refused", "refused"]
    assert next(u for u in ok(admin.get("/api/users")) if u["name"] == "nurse:holm")["disabled_at"]

    ok(post(admin, "/api/users/nurse:holm/enable", {}))
    assert ok(client_for().get("/api/me", headers=bearer))["user"] == "nurse:holm"
    assert client_for("nurse:holm").csrf
    assert user_chain(cli_db, "nurse:holm")[-2]["trigger"] == "enabled"


def test_the_users_page_disables_and_enables(client_for: Any, cli_db: str) -> None:
    admin = client_for(ADMIN)
    nurse = client_for("nurse:ida")
    page = admin.post("/users", data={"csrf_token": admin.csrf, "action": "disable", "name": "nurse:ida"})
    assert page.status_code == 303
    assert nurse.get("/worklist").status_code == 303  # to the login page
    assert "disabled" in [e["trigger"] for e in user_chain(cli_db, "nurse:ida")]
    page = admin.post("/users", data={"csrf_token": admin.csrf, "action": "enable", "name": "nurse:ida"})
    assert page.status_code == 303 and client_for("nurse:ida").csrf


def test_an_admin_changes_a_role_audited_and_it_applies_to_the_next_request(client_for: Any, cli_db: str) -> None:
    admin = client_for(ADMIN)
    nurse = client_for("nurse:holm")
    error(post(nurse, "/api/users/nurse:holm/role", {"role": "admin"}), 403, "not_permitted")
    error(post(admin, "/api/users/nurse:holm/role", {"role": "god"}), 422, "usage")
    error(post(admin, f"/api/users/{ADMIN}/role", {"role": "staff"}), 409, "refused")
    assert ok(post(admin, "/api/users/nurse:holm/role", {"role": "auditor", "reason": "moved to QA"}))["role"] == \
        "auditor"
    assert ok(nurse.get("/api/me"))["role"] == "auditor"
    error(post(nurse, "/api/persons", {"ref": "REF-Q"}), 403, "not_permitted")
    changed = next(e for e in user_chain(cli_db, "nurse:holm") if e["trigger"] == "role_changed")
    assert (changed["actor"], changed["changes"], changed["data"]["from_role"], changed["reason"]) == (
        ADMIN, {"role": "auditor"}, "staff", "moved to QA")
    page = admin.post("/users", data={"csrf_token": admin.csrf, "action": "role", "name": "nurse:holm",
                                      "role": "staff"})
    assert page.status_code == 303 and ok(nurse.get("/api/me"))["role"] == "staff"


def test_the_cli_disables_enables_and_changes_roles(cli_db: str) -> None:
    from typer.testing import CliRunner

    from entry.cli import app

    runner = CliRunner()
    env = {"MPOXFLOW_DATABASE_URL": cli_db}
    for args in (["user", "disable", "nurse:holm"], ["user", "enable", "nurse:holm"],
                 ["user", "role", "nurse:holm", "--role", "auditor"]):
        result = runner.invoke(app, [*args, "--actor", ADMIN, "--json"], env=env)
        assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["role"] == "auditor"
    result = runner.invoke(app, ["user", "role", "nurse:holm", "--role", "boss", "--actor", ADMIN], env=env)
    assert result.exit_code == 2 and "--role" in result.output
    result = runner.invoke(app, ["user", "disable", "nurse:ida", "--actor", "staff:test"], env=env)
    assert result.exit_code == 3
    triggers = [e["trigger"] for e in user_chain(cli_db, "nurse:holm")]
    assert triggers[-3:] == ["disabled", "enabled", "role_changed"]
    with Database(cli_db) as db:
        assert Engine(db, SimulatedClock(START)).audit_verify()["intact"]


# ---- 10. structured error events ---------------------------------------------------------------------------------


def test_an_unhandled_error_is_one_json_event_with_a_request_id_and_a_500_json_body(
        web_app: Any, client_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> None:
        raise IntegrityError("INSERT INTO persons (ref, born) VALUES (?, ?)", {"ref": "0101801234"},
                             Exception("UNIQUE constraint failed: persons.ref\nDETAIL: Key (ref)=(0101801234)"))

    web_app.add_api_route("/api/test-boom", boom, methods=["GET"])
    client = client_for("staff:test")
    configure_logging("json", "info")
    capsys.readouterr()
    response = client.get("/api/test-boom")
    err = capsys.readouterr().err
    assert response.status_code == 500
    body = response.json()
    assert (body["error"], body["status"]) == ("internal", 500) and body["request_id"] in body["message"]
    assert response.headers["X-Request-ID"] == body["request_id"]
    check_headers(response)
    lines = [line for line in err.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON event: no bare traceback
    failures = [e for e in events if e["event"] == "http_unhandled_error"]
    assert len(failures) == 1
    assert (failures[0]["request_id"], failures[0]["error_type"]) == (body["request_id"], "IntegrityError")
    assert failures[0]["path"] == "/api/test-boom"
    assert "0101801234" not in err and "Traceback" not in err and "INSERT" not in err


def test_worker_pass_failed_carries_the_type_and_message_without_parameters(engine: Engine) -> None:
    worker = Worker(engine)

    def failing_pass() -> None:
        raise IntegrityError("INSERT INTO persons (ref, born) VALUES (?, ?)", {"ref": "0101801234", "born": "1980"},
                             Exception("duplicate key value\nDETAIL: Key (ref)=(0101801234) already exists."))

    worker.run_pass = failing_pass  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as events:
        worker._scheduled_pass()  # noqa: SLF001
    failed = [e for e in events if e["event"] == "worker_pass_failed"]
    assert len(failed) == 1
    assert (failed[0]["error_type"], failed[0]["error"]) == ("IntegrityError", "duplicate key value")
    assert "exc_info" not in failed[0]
    assert "0101801234" not in repr(events) and "INSERT" not in repr(events)


def test_timer_fired_is_logged_after_the_commit_so_the_count_equals_the_timers_fired(
        engine: Engine, clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    confirmed(engine, person(engine, "REF-T1"))
    confirmed(engine, person(engine, "REF-T2"))
    clock.set(clock.now() + timedelta(days=3))

    def crash(uow: Any) -> None:
        raise RuntimeError("the commit never happens")

    with monkeypatch.context() as patch, structlog.testing.capture_logs() as events:
        patch.setattr(UnitOfWork, "save_clock", crash)  # the last step of fire_due's unit of work
        with pytest.raises(RuntimeError):
            engine.fire_due()
    assert [e for e in events if e["event"] == "timer_fired"] == []  # rolled back: nothing fired, nothing logged

    with structlog.testing.capture_logs() as events:
        fired = engine.fire_due()
    logged = [e for e in events if e["event"] == "timer_fired"]
    assert fired and len(logged) == len(fired)
    assert [e["timer"] for e in logged] == [f.timer for f in fired]
    assert engine.fire_due() == []  # all fired once, each logged once
