"""The web pages as staff, auditors and admins use them: logging in and out through the form, CSRF on every change,
a case worked from its page and from the worklist, refusals re-rendered with the engine's message and rule, the
auditor's read-only pages, users and tokens, the diagram counts, the calendar and the audit page; and the CLI's
``user`` commands. Both backends (the ``database_url`` params), on the simulated clock at START.

The HTML is read loosely: the ids and data- attributes the templates put there, and the text users read.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog
from typer.testing import CliRunner, Result

from entry.cli import app
from persistence.database import Database
from tests.conftest import PASSWORD
from tests.helpers import contents
from tests.test_cli import describe, snapshot

STAFF = "staff:test"
AUDITOR = "auditor:test"
ADMIN = "admin:test"
SESSION = "mpoxflow_session"
LOGIN_CSRF = "mpoxflow_login_csrf"
NEW_PASSWORD = "a long enough passphrase"

Client = Any
ClientFor = Callable[..., Client]


# ---- reading the pages ---------------------------------------------------------------------------------------


def main(page: str) -> str:
    """The page's own content (what follows the header with its navigation, clock and logout forms)."""
    start = page.find("<main>")
    assert start >= 0, page
    return page[start:]


def form(page: str, form_id: str) -> str | None:
    """The HTML of the form with this id, or None."""
    found = re.search(rf'<form\b[^>]*\bid="{re.escape(form_id)}"[^>]*>.*?</form>', page, re.S)
    return found.group(0) if found else None


def form_ids(page: str) -> set[str]:
    return set(re.findall(r'<form\b[^>]*\bid="([^"]+)"', main(page)))


def value_of(fragment: str, name: str) -> str:
    found = re.search(rf'<input\b[^>]*\bname="{re.escape(name)}"[^>]*\bvalue="([^"]*)"', fragment)
    assert found, f"no input {name} in {fragment}"
    return html.unescape(found.group(1))


def text(page: str) -> str:
    """The visible text of the page's content, tags removed and whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", main(page))).split())


def error_box(page: str) -> str:
    found = re.search(r'<div class="error" role="alert">(.*?)</div></div>', page, re.S)
    assert found, f"no error box on the page:\n{main(page)}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).split())


def worklist_rows(page: str) -> dict[str, list[tuple[str, str, str]]]:
    """Per section: (object, task name, the row's HTML)."""
    sections: dict[str, list[tuple[str, str, str]]] = {}
    for section, table in re.findall(r'<table class="worklist" data-section="([^"]+)">(.*?)</table>', page, re.S):
        sections[section] = re.findall(r'<tr data-object="([^"]+)" data-task="([^"]+)">(.*?)</tr>', table, re.S)
    return sections


def set_cookies(response: Any) -> list[str]:
    return [str(c) for c in response.headers.get_list("set-cookie")]


def cookie_header(response: Any, name: str) -> str:
    found = [c for c in set_cookies(response) if c.startswith(f"{name}=")]
    assert len(found) == 1, set_cookies(response)
    return found[0]


def done_of(response: Any) -> str:
    """The ``done`` message a redirect after a change carries."""
    assert response.status_code == 303, response.text
    return str(parse_qs(urlsplit(response.headers["location"]).query)["done"][0])


@pytest.fixture
def client_for(client_for: ClientFor) -> ClientFor:
    """The conftest's clients with a browser that asks for English: these tests are about the pages' behaviour,
    read in English (the Danish pages are tests/test_i18n.py's)."""
    def make(*args: Any, **kwargs: Any) -> Client:
        client = client_for(*args, **kwargs)
        client.headers["Accept-Language"] = "en"
        return client

    return make


@pytest.fixture
def db(cli_db: str) -> Iterator[Database]:
    """The web application's database, for "nothing changed" checks."""
    database = Database(cli_db)
    yield database
    database.dispose()


# ---- stories -------------------------------------------------------------------------------------------------


def post(client: Client, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = "session") -> Any:
    """A form post; by default with the session's CSRF token, as the pages' forms carry it."""
    fields = dict(data or {})
    if csrf == "session":
        fields["csrf_token"] = client.csrf
    elif csrf is not None:
        fields["csrf_token"] = csrf
    return client.post(path, data=fields)


def suspected_case(staff: Client) -> None:
    """person-1 and case-1 (suspected), made through the pages' forms."""
    response = post(staff, "/new/person_add", {"ref": "REF-1", "born": "1990-05-17"})
    assert response.headers["location"] == "/objects/person-1?done=Register+a+person"
    response = post(staff, "/new/case_open", {"person": "person-1", "onset": "2025-03-01",
                                               "symptoms": ["rash", "fever"], "criteria": ["msm"]})
    assert response.headers["location"] == "/objects/case-1?done=Open+a+case", response.text


def confirmed_case(staff: Client) -> None:
    suspected_case(staff)
    response = post(staff, "/objects/case-1/confirm", {"pcr_on": "2025-03-03", "if_version": "1"})
    assert done_of(response) == "Confirm (positive PCR): confirmed"


def api(client: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A change through the JSON API with the session's CSRF header."""
    response = client.post(path, json=body, headers={"X-CSRF-Token": client.csrf})
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


# ---- logging in ----------------------------------------------------------------------------------------------


def test_the_login_form_logs_in_and_goes_to_the_page_asked_for(client_for: ClientFor) -> None:
    browser = client_for()
    page = browser.get("/login", params={"next": "/list/cases?state=suspected"})
    assert page.status_code == 200
    cookie = cookie_header(page, LOGIN_CSRF)
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/login" in cookie
    token = browser.cookies.get(LOGIN_CSRF)
    login = form(page.text, "login")
    assert login is not None and token
    assert value_of(login, "csrf_token") == token
    assert value_of(login, "next") == "/list/cases?state=suspected"
    assert 'id="who"' not in page.text  # nobody is logged in yet

    response = browser.post("/login", data={"name": STAFF, "password": PASSWORD, "csrf_token": token,
                                             "next": "/list/cases?state=suspected"})
    assert response.status_code == 303
    assert response.headers["location"] == "/list/cases?state=suspected"
    session = cookie_header(response, SESSION)
    assert "HttpOnly" in session and "samesite=strict" in session.lower() and "Path=/" in session
    assert f'{LOGIN_CSRF}=""' in " ".join(set_cookies(response)) or "Max-Age=0" in cookie_header(response, LOGIN_CSRF)

    listing = browser.get("/list/cases?state=suspected")
    assert listing.status_code == 200
    assert re.search(r'<span id="who">staff:test \(staff\)</span>', listing.text)
    assert "<h1>Cases</h1>" in listing.text
    me = browser.get("/api/me").json()
    assert (me["user"], me["via"]) == (STAFF, "session")


def test_a_login_never_redirects_off_the_site(client_for: ClientFor) -> None:
    browser = client_for()
    token = browser.get("/login").cookies.get(LOGIN_CSRF) or browser.cookies.get(LOGIN_CSRF)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example/"):
        response = browser.post("/login", data={"name": STAFF, "password": PASSWORD, "csrf_token": token,
                                                 "next": target})
        assert response.status_code == 303
        location = response.headers["location"]
        assert location in ("/worklist", "/%5Cevil.example/"), location  # a backslash stays in the path
        browser.cookies.set(LOGIN_CSRF, token, path="/login")  # a successful login deletes it


def test_a_wrong_password_re_renders_the_form_with_401_and_a_message(client_for: ClientFor) -> None:
    browser = client_for()
    token = browser.get("/login").cookies.get(LOGIN_CSRF)
    response = browser.post("/login", data={"name": STAFF, "password": "not the password", "csrf_token": token,
                                             "next": "/calendar"})
    assert response.status_code == 401
    assert not any(c.startswith(f"{SESSION}=") for c in set_cookies(response))
    assert "wrong user name or password" in error_box(response.text)
    again = form(response.text, "login")
    assert again is not None
    assert value_of(again, "name") == STAFF  # the name stays typed, the password does not
    assert value_of(again, "next") == "/calendar"
    assert value_of(again, "csrf_token") == token
    assert 'name="password" type="password" autocomplete="current-password" required>' in again
    assert browser.get("/worklist").status_code == 303  # still not logged in


def test_a_login_without_the_login_forms_token_is_refused_with_403(client_for: ClientFor) -> None:
    browser = client_for()
    token = browser.get("/login").cookies.get(LOGIN_CSRF)
    missing = browser.post("/login", data={"name": STAFF, "password": PASSWORD})
    assert missing.status_code == 403
    assert "The login form was stale" in error_box(missing.text)
    assert not any(c.startswith(f"{SESSION}=") for c in set_cookies(missing))
    wrong = browser.post("/login", data={"name": STAFF, "password": PASSWORD, "csrf_token": token + "x"})
    assert wrong.status_code == 403
    assert not any(c.startswith(f"{SESSION}=") for c in set_cookies(wrong))
    # A form posted from elsewhere carries a token but not the cookie (SameSite=Strict keeps it home).
    elsewhere = client_for()
    forged = elsewhere.post("/login", data={"name": STAFF, "password": PASSWORD, "csrf_token": token})
    assert forged.status_code == 403
    assert elsewhere.get("/worklist").status_code == 303


def test_the_sixth_login_after_five_wrong_passwords_is_refused_with_429(client_for: ClientFor) -> None:
    browser = client_for()
    token = browser.get("/login").cookies.get(LOGIN_CSRF)
    for _ in range(5):
        response = browser.post("/login", data={"name": STAFF, "password": "guess", "csrf_token": token})
        assert response.status_code == 401
    # Even the right password is not checked now.
    response = browser.post("/login", data={"name": STAFF, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 429
    assert "too many failed logins" in error_box(response.text)
    assert not any(c.startswith(f"{SESSION}=") for c in set_cookies(response))
    # Another user's name is not limited.
    response = browser.post("/login", data={"name": "staff:anna", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 303


@pytest.mark.parametrize("path", ["/worklist", "/objects/case-1?tab=timeline", "/list/persons", "/users",
                                  "/audit?verify=1", "/calendar", "/diagrams/case"])
def test_a_page_without_a_login_goes_to_the_login_page_and_back(client_for: ClientFor, path: str) -> None:
    browser = client_for()
    response = browser.get(path)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/login?next=")
    assert parse_qs(urlsplit(location).query)["next"] == [path]
    page = browser.get(location)
    login = form(page.text, "login")
    assert login is not None and value_of(login, "next") == path


def test_a_change_without_a_login_changes_nothing(client_for: ClientFor, db: Database) -> None:
    suspected_case(client_for(STAFF))
    before = contents(db)
    response = client_for().post("/objects/case-1/confirm", data={"pcr_on": "2025-03-03", "csrf_token": "x"})
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    assert contents(db) == before


# ---- logging out ---------------------------------------------------------------------------------------------


def test_logging_out_ends_the_session_everywhere(client_for: ClientFor, web_app: Any) -> None:
    from fastapi.testclient import TestClient

    staff = client_for(STAFF)
    secret = staff.cookies.get(SESSION)
    page = staff.get("/worklist")
    logout = re.search(r'<form method="post" action="/logout">(.*?)</form>', page.text, re.S)
    assert logout is not None and value_of(logout.group(1), "csrf_token") == staff.csrf

    response = post(staff, "/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert 'Max-Age=0' in cookie_header(response, SESSION) or 'expires=' in cookie_header(response, SESSION).lower()
    assert staff.get("/worklist").headers["location"] == "/login?next=/worklist"

    # The old cookie, kept by someone, no longer works.
    with TestClient(web_app, follow_redirects=False) as stolen:
        stolen.cookies.set(SESSION, secret)
        response = stolen.get("/worklist")
        assert response.status_code == 303 and response.headers["location"] == "/login?next=/worklist"
        assert stolen.get("/api/me").status_code == 401


def test_a_logout_without_the_csrf_token_is_refused(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    for csrf in (None, "stale"):
        response = post(staff, "/logout", csrf=csrf)
        assert response.status_code == 403
        assert "CSRF token is missing or stale" in error_box(response.text)
    assert staff.get("/worklist").status_code == 200  # still logged in


# ---- CSRF ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("csrf", [None, "", "not-the-token"])
def test_a_change_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
        client_for: ClientFor, db: Database, csrf: str | None) -> None:
    staff = client_for(STAFF)
    other = client_for("staff:anna")
    suspected_case(staff)
    before = contents(db)
    response = post(staff, "/objects/case-1/confirm", {"pcr_on": "2025-03-03", "if_version": "1"}, csrf=csrf)
    assert response.status_code == 403
    assert "CSRF token is missing or stale" in error_box(response.text)
    assert contents(db) == before
    # Another user's token is not this session's either.
    response = post(staff, "/objects/case-1/confirm", {"pcr_on": "2025-03-03"}, csrf=other.csrf)
    assert response.status_code == 403
    assert contents(db) == before
    assert re.search(r'id="state">suspected<', staff.get("/objects/case-1").text)


def test_every_form_of_a_page_carries_the_sessions_csrf_token(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    suspected_case(staff)
    for path in ("/objects/case-1", "/objects/person-1", "/worklist", "/list/persons"):
        page = staff.get(path).text
        forms = re.findall(r'<form method="post".*?</form>', page, re.S)
        assert forms, path
        for found in forms:
            assert value_of(found, "csrf_token") == staff.csrf, (path, found)


# ---- staff work through the pages ----------------------------------------------------------------------------


def test_staff_register_a_person_open_and_confirm_a_case_through_the_forms(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    persons = staff.get("/list/persons").text
    assert form(persons, "person_add") is not None

    response = post(staff, "/new/person_add", {"ref": "REF-1", "born": "1990-05-17", "pregnant": "on"})
    assert response.status_code == 303 and done_of(response) == "Register a person"
    person = staff.get(response.headers["location"]).text
    assert "Done: Register a person" in person
    assert "17.05.1990" in text(person)  # the birth date, the Danish way
    opening = form(person, "case_open")
    assert opening is not None and value_of(opening, "person") == "person-1"  # prefilled
    assert 'name="symptoms" value="rash"' in opening and 'name="criteria" value="msm"' in opening

    response = post(staff, "/new/case_open", {"person": "person-1", "onset": "2025-03-01",
                                               "symptoms": ["rash", "fever"], "criteria": ["msm", "travel"]})
    assert response.status_code == 303 and response.headers["location"] == "/objects/case-1?done=Open+a+case"
    page = staff.get("/objects/case-1").text
    assert re.search(r'<span class="state" id="state">suspected</span>', page)
    assert "version 1" in page
    facts = text(page)
    assert "Symptom onset 01.03.2025" in facts and "Symptoms rash, fever" in facts
    assert "Criteria MSM, travel" in facts
    allowed = form_ids(page)
    # A suspected case may already self-isolate (§2.2.1).
    assert {"confirm", "discard", "die", "consent", "source", "isolate"} <= allowed
    assert not allowed & {"heal", "notify"}
    confirm = form(page, "confirm")
    assert confirm is not None
    assert 'action="/objects/case-1/confirm"' in confirm and 'data-operation="case confirm"' in confirm
    assert value_of(confirm, "if_version") == "1"
    assert value_of(confirm, "csrf_token") == staff.csrf

    response = post(staff, "/objects/case-1/confirm", {"pcr_on": "2025-03-03", "clade": "IIb", "if_version": "1",
                                                       "reason": "PCR positive"})
    assert response.status_code == 303
    assert response.headers["location"] == "/objects/case-1?done=Confirm+%28positive+PCR%29%3A+confirmed"
    page = staff.get(response.headers["location"]).text
    assert '<div class="flash" role="status">Done: Confirm (positive PCR): confirmed</div>' in page
    assert re.search(r'id="state">confirmed</span>', page)
    assert "version 2" in page
    facts = text(page)
    assert "PCR sample date 03.03.2025" in facts and "Clade IIb" in facts
    assert "2025-03-03" not in re.search(r'<table id="facts">.*?</table>', page, re.S).group(0)  # type: ignore[union-attr]
    allowed = form_ids(page)
    assert {"isolate", "heal", "notify", "die"} <= allowed
    assert not allowed & {"confirm", "discard"}
    assert value_of(form(page, "heal") or "", "if_version") == "2"
    # The deadlines the confirmation armed, with Danish times.
    timers = re.search(r'<table id="timers">.*?</table>', page, re.S)
    assert timers is not None
    shown_timers = text("<main>" + timers.group(0))
    assert "phone notification to STPS due" in shown_timers and "03.03.2025 kl. 17.00" in timers.group(0)
    assert "written notification to SSI and STPS due" in shown_timers and "04.03.2025 kl. 08.00" in timers.group(0)
    # The timeline, newest first: who did what, when, why, under which rule.
    timeline = re.search(r'<table id="timeline">.*?</table>', page, re.S)
    assert timeline is not None
    rows = re.findall(r"<tr><td>(\d+)</td>(.*?)</tr>", timeline.group(0), re.S)
    assert [pos for pos, _ in rows] == ["2", "1"]
    newest = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", rows[0][1])).split())
    assert "03.03.2025 kl. 08.00 confirm suspected → confirmed" in newest
    assert "armed phone notification to STPS due, by today at 17.00" in newest
    assert "staff:test (staff) PCR positive" in newest and "§1.1" in newest
    # And the list of cases.
    listing = staff.get("/list/cases").text
    assert re.search(r'<a href="/objects/case-1">case-1</a></td><td><span class="state">confirmed</span>', listing)
    assert "03.03.2025" in text(listing)
    assert staff.get("/list/cases?state=suspected").text.count('href="/objects/case-1"') == 0


def test_a_case_refused_by_a_rule_re_renders_with_the_message_and_rule_and_changes_nothing(
        client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    confirmed_case(staff)
    before = contents(db, reads=False)

    # Healed after today: the guard of §4.1 refuses.
    response = post(staff, "/objects/case-1/heal", {"on": "2025-03-10", "if_version": "2"})
    assert response.status_code == 409
    box = error_box(response.text)
    assert "Rule: SST-mpox-7.1 §4.1" in box and "Nothing was changed." in box
    heal = form(response.text, "heal")
    assert heal is not None and 'class="action failed"' in heal
    assert value_of(heal, "on") == "10.03.2025"  # the value typed stays, as Danes write it
    assert re.search(r'id="state">confirmed<', response.text)
    assert contents(db, reads=False) == before

    # A trigger the state does not allow: the case is confirmed already.
    response = post(staff, "/objects/case-1/confirm", {"pcr_on": "2025-03-03"})
    assert response.status_code == 409
    assert "Rule: SST-mpox-7.1" in error_box(response.text)
    assert contents(db, reads=False) == before

    # An impossible date: the form says which field, and nothing reaches the engine.
    response = post(staff, "/objects/case-1/heal", {"on": "2025-02-30", "if_version": "2"})
    assert response.status_code == 422
    assert "Some fields need correcting" in error_box(response.text)
    heal = form(response.text, "heal")
    assert heal is not None and re.search(
        r'<div class="field-error"[^>]*>Healed on: “2025-02-30” is not a date [^<]+</div>', heal)
    assert value_of(heal, "on") == "2025-02-30"
    assert contents(db, reads=False) == before

    # A required field left empty.
    response = post(staff, "/objects/case-1/isolate", {"if_version": "2"})
    assert response.status_code == 422
    assert re.search(r'<div class="field-error"[^>]*>Isolation: [^<]+</div>', form(response.text, "isolate") or "")
    assert contents(db, reads=False) == before

    # Changed meanwhile: a form from an older version of the page.
    response = post(staff, "/objects/case-1/isolate", {"mode": "home", "if_version": "1"})
    assert response.status_code == 409
    assert error_box(response.text)
    assert contents(db, reads=False) == before

    # No such action for a case.
    response = post(staff, "/objects/case-1/dose", {"on": "2025-03-03"})
    assert response.status_code == 422
    assert "There is no such action for this object" in error_box(response.text)
    assert contents(db, reads=False) == before


def test_a_creation_form_refused_re_renders_with_the_values_typed(client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    suspected_case(staff)
    before = contents(db, reads=False)
    response = post(staff, "/new/person_add", {"ref": "REF-1"})  # registered already
    assert response.status_code == 409
    assert "registered already as person-1" in error_box(response.text)
    assert value_of(form(response.text, "person_add") or "", "ref") == "REF-1"
    response = post(staff, "/new/case_open", {"person": "person-1", "onset": "someday", "symptoms": ["rash"]})
    assert response.status_code == 422
    again = form(response.text, "case_open")
    assert again is not None and re.search(r'<div class="field-error"[^>]*>Symptom onset: ', again)
    assert 'value="rash" checked' in again and value_of(again, "onset") == "someday"
    assert contents(db, reads=False) == before


def test_every_kind_of_id_has_a_page_and_an_unknown_one_a_404(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    confirmed_case(staff)
    # timer-1 is the suspected case's chase of its test result, done by the confirmation; timer-2 the phone call.
    chase = re.search(r'<table id="facts">.*?</table>', staff.get("/objects/timer-1").text, re.S)
    assert chase is not None and "test_result_due" in chase.group(0) and "task done in time" in chase.group(0)
    timer = staff.get("/objects/timer-2")
    assert timer.status_code == 200
    facts = re.search(r'<table id="facts">.*?</table>', timer.text, re.S)
    assert facts is not None
    assert "phone_notification_due" in facts.group(0) and "03.03.2025 kl. 17.00" in facts.group(0)
    assert '<a href="/objects/case-1">case-1</a>' in facts.group(0)
    [me] = [u["id"] for u in staff.app.state.web.engine().users() if u["name"] == STAFF]
    user = staff.get(f"/objects/{me}").text
    assert "staff:test" in text(user) and "login" in text(user)  # the user's own chain
    person = staff.get("/objects/person-1").text
    # The related case with its person (and the reference beside it: issue 16) and its state.
    assert re.search(r'<a href="/objects/case-1">case-1</a></td><td>[^\n]*?REF-[^\n]*?</td>'
                     r'<td><span class="state">confirmed</span>', person)
    for missing in ("/objects/case-99", "/objects/timer-99", "/objects/course-1"):
        response = staff.get(missing)
        assert response.status_code == 404, missing
        assert "was found" in error_box(response.text)
    response = staff.get("/objects/nonsense")
    assert response.status_code == 404 and "Ids look like person-N" in error_box(response.text)


# ---- the worklist --------------------------------------------------------------------------------------------


def test_the_worklist_shows_the_notifications_and_their_buttons_do_them(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    confirmed_case(staff)
    post(staff, "/objects/case-1/sample-sent", {"on": "2025-03-03"})  # §2.4, not this test's subject
    page = staff.get("/worklist").text
    sections = worklist_rows(page)
    [(obj, task, phone)] = sections["Due today"]
    assert (obj, task) == ("case-1", "phone_notification_due")
    assert "03.03.2025 kl. 17.00" in phone and "9 h 0 min left" in phone
    assert 'action="/objects/case-1/notify"' in phone and value_of(phone, "channel") == "phone"
    assert value_of(phone, "csrf_token") == staff.csrf
    [(obj, task, written)] = sections["Next 7 days"]
    assert (obj, task) == ("case-1", "written_notification_due")
    assert "04.03.2025 kl. 08.00" in written and re.search(r"\d+ d \d+ h left", written)
    assert value_of(written, "channel") == "written"
    assert "Overdue" not in sections and re.search(r"Overdue <span class=\"muted\">\(0\)</span>", page)

    response = post(staff, "/objects/case-1/notify", {"channel": "phone"})
    assert done_of(response) == "Notification: confirmed"
    sections = worklist_rows(staff.get("/worklist").text)
    tasks = [(o, t) for rows in sections.values() for o, t, _ in rows]
    assert tasks == [("case-1", "written_notification_due")]

    advance = form(staff.get("/worklist").text, "clock-advance")
    assert advance is not None and value_of(advance, "next") == "/worklist"
    response = post(staff, "/clock/advance", {"amount": "1", "unit": "days", "next": "/worklist"})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/worklist?done=")
    assert done_of(response).startswith("clock moved to 04.03.2025 kl. 08.00")
    page = staff.get(response.headers["location"]).text
    assert "Simulated clock: 04.03.2025 kl. 08.00" in page
    sections = worklist_rows(page)
    assert list(sections) == ["Missed"]  # its deadline passed undone (issue 12, item 14)
    [(obj, task, row)] = sections["Missed"]
    assert (obj, task) == ("case-1", "written_notification_due")
    # At its deadline to the minute: overdue, as the engine counts it, and the page says so.
    assert '<td class="overdue">overdue by 0 h 0 min</td>' in row

    post(staff, "/clock/advance", {"amount": "2", "unit": "hours"})
    [(_, _, row)] = worklist_rows(staff.get("/worklist").text)["Missed"]
    assert "overdue by 2 h 0 min" in row
    response = post(staff, "/objects/case-1/notify", {"channel": "written"})
    assert response.status_code == 303
    assert worklist_rows(staff.get("/worklist").text) == {}


def test_a_bad_clock_advance_is_refused_and_moves_nothing(client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    before = contents(db)
    for amount, unit in (("-1", "days"), ("one", "days"), ("1", "weeks")):
        response = post(staff, "/clock/advance", {"amount": amount, "unit": unit})
        assert response.status_code == 422
        assert "whole number of days or hours" in error_box(response.text)
    assert contents(db) == before
    assert "Simulated clock: 03.03.2025 kl. 08.00" in staff.get("/worklist").text


# ---- auditors ------------------------------------------------------------------------------------------------


def test_an_auditor_reads_every_page_without_any_action(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    confirmed_case(staff)
    auditor = client_for(AUDITOR)
    for path in ("/worklist", "/objects/case-1", "/objects/person-1", "/list/persons", "/list/cases", "/calendar",
                 "/diagrams/case", "/audit", "/new/person_add"):
        response = auditor.get(path)
        assert response.status_code == 200, path
        assert re.search(r'<span id="who">auditor:test \(auditor\)</span>', response.text)
        assert 'id="clock-advance"' not in response.text, path
        assert form_ids(response.text) <= {"audit-filters"}, (path, form_ids(response.text))
        posts = re.findall(r'<form method="post" action="([^"]+)"', response.text)
        assert posts == ["/search", "/logout"], (path, posts)  # what an auditor posts: a search (a read), log out
    page = auditor.get("/objects/case-1").text
    assert re.search(r'id="state">confirmed<', page)
    assert "Your role (auditor) reads and audits; it changes nothing." in page
    assert 'id="timeline"' in page and "staff:test" in page
    worklist = worklist_rows(auditor.get("/worklist").text)
    assert [t for rows in worklist.values() for _, t, _ in rows] == ["phone_notification_due",
                                                                    "written_notification_due",
                                                                    "sequencing_sample_due"]
    assert "Your role reads" in auditor.get("/new/case_open").text
    assert 'href="/users"' not in auditor.get("/worklist").text


@pytest.mark.parametrize(("path", "data", "command", "target"), [
    ("/objects/case-1/confirm", {"pcr_on": "2025-03-03", "if_version": "1"}, "case confirm", "case-1"),
    ("/objects/case-1/discard", {}, "case discard", "case-1"),
    ("/new/person_add", {"ref": "REF-X"}, "person add", None),
    ("/clock/advance", {"amount": "1", "unit": "days"}, "clock advance", None),
])
def test_an_auditors_change_is_refused_with_403_and_the_refusal_audited(
        client_for: ClientFor, db: Database, path: str, data: dict[str, str], command: str,
        target: str | None) -> None:
    suspected_case(client_for(STAFF))
    auditor = client_for(AUDITOR)
    before = contents(db, reads=False)
    response = post(auditor, path, data)  # with the auditor's own, valid token
    assert response.status_code == 403
    assert "auditor" in error_box(response.text)
    after = contents(db, reads=False)
    assert {t for t in before if before[t] != after[t]} == {"audit_log", "users"}  # only the refusal
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1
    assert re.search(r'id="state">suspected<', auditor.get("/objects/case-1").text)
    [entry] = auditor.get("/api/audit", params={"trigger": "refused"}).json()
    [me] = [u["id"] for u in auditor.app.state.web.engine().users() if u["name"] == AUDITOR]
    assert (entry["actor"], entry["role"], entry["object"]) == (AUDITOR, "auditor", me)  # on the auditor's chain
    assert entry["data"] == {"command": command, "object": target}
    page = auditor.get("/audit", params={"trigger": "refused"}).text
    assert "refused" in text(page) and "auditor:test" in text(page)


# ---- admins: users and tokens --------------------------------------------------------------------------------


def test_an_admin_adds_a_user_who_can_then_log_in(client_for: ClientFor, db: Database) -> None:
    admin = client_for(ADMIN)
    page = admin.get("/users").text
    assert {"user-add", "user-password", "user-token"} <= form_ids(page)
    response = post(admin, "/users", {"action": "add", "name": "nurse:new", "role": "staff",
                                      "password": NEW_PASSWORD, "reason": "new in the clinic"})
    assert response.status_code == 303 and done_of(response) == "user nurse:new added"
    page = admin.get(response.headers["location"]).text
    assert "Done: user nurse:new added" in page
    assert re.search(r"<td>nurse:new</td><td>staff</td><td>yes</td>", page)
    newcomer = client_for("nurse:new", password=NEW_PASSWORD)
    assert newcomer.get("/api/me").json()["role"] == "staff"
    assert NEW_PASSWORD not in json.dumps(admin.get("/api/audit").json())

    # Too short a password: nobody is added.
    before = contents(db)
    response = post(admin, "/users", {"action": "add", "name": "nurse:short", "role": "staff", "password": "short"})
    assert response.status_code == 422
    assert "at least 10 characters" in error_box(response.text)
    assert contents(db) == before

    # No password: a user for API tokens only.
    post(admin, "/users", {"action": "add", "name": "system:lab", "role": "staff"})
    assert re.search(r"<td>system:lab</td><td>staff</td><td>no</td>", admin.get("/users").text)

    # A new password for someone.
    response = post(admin, "/users", {"action": "password", "name": "nurse:new", "password": "another long one"})
    assert done_of(response) == "password set for nurse:new"
    client_for("nurse:new", password="another long one")
    assert client_for().post("/api/login", json={"name": "nurse:new", "password": NEW_PASSWORD}).status_code == 401


def test_staff_cannot_manage_users(client_for: ClientFor, db: Database) -> None:
    staff = client_for(STAFF)
    page = staff.get("/users")
    assert page.status_code == 403  # users and tokens are listed to admins only (issue 13)
    assert not form_ids(page.text) & {"user-add", "user-password", "user-token"}
    before = contents(db)
    for data in ({"action": "add", "name": "intruder", "role": "admin", "password": NEW_PASSWORD},
                 {"action": "token", "name": STAFF, "label": "my script"},
                 {"action": "password", "name": "staff:anna", "password": NEW_PASSWORD}):
        response = post(staff, "/users", data)
        assert response.status_code == 403, data
    after = contents(db)
    assert {t for t in before if before[t] != after[t]} <= {"audit_log", "users"}
    assert [u["name"] for u in staff.app.state.web.engine().users()].count("intruder") == 0
    assert len(staff.get("/api/audit", params={"trigger": "refused"}).json()) == 4  # with the listing
    assert client_for().post("/api/login", json={"name": "intruder", "password": NEW_PASSWORD}).status_code == 401


def test_an_issued_token_is_shown_once_works_and_can_be_revoked(client_for: ClientFor) -> None:
    admin = client_for(ADMIN)
    response = post(admin, "/users", {"action": "token", "name": STAFF, "label": "lab system"})
    assert response.status_code == 200
    issued = re.search(r'<div class="flash" id="issued">Token <strong>(token-\d+)</strong> for staff:test: '
                       r"<code>(mpx_[A-Za-z0-9_-]+)</code>", response.text)
    assert issued is not None
    token_id, secret = issued.groups()
    assert "Done: token token-1 issued for staff:test" in response.text

    bearer = client_for()
    me = bearer.get("/api/me", headers={"Authorization": f"Bearer {secret}"}).json()
    assert (me["user"], me["via"]) == (STAFF, "token")
    page = admin.get("/users").text
    assert secret not in page  # never shown again
    tokens = re.search(r'<table id="tokens">.*?</table>', page, re.S)
    assert tokens is not None and token_id in tokens.group(0) and "lab system" in tokens.group(0)
    assert value_of(tokens.group(0), "token") == token_id

    response = post(admin, "/users", {"action": "revoke", "token": token_id})
    assert done_of(response) == f"token {token_id} revoked"
    assert bearer.get("/api/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert 'name="action" value="revoke"' not in admin.get("/users").text


# ---- diagrams, calendar, audit -------------------------------------------------------------------------------


def test_the_case_diagram_counts_the_cases_in_each_state(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    for n in range(1, 5):
        api(staff, "/api/persons", {"ref": f"REF-{n}"})
        api(staff, "/api/cases", {"person": f"person-{n}", "onset": "2025-03-01", "symptoms": ["rash"],
                                  "criteria": ["msm"]})
    api(staff, "/api/cases/case-1/confirm", {"pcr_on": "2025-03-03"})
    api(staff, "/api/cases/case-2/confirm", {"pcr_on": "2025-03-03"})
    api(staff, "/api/cases/case-2/isolate", {"mode": "home"})
    api(staff, "/api/cases/case-3/discard", {})
    page = staff.get("/diagrams/case").text
    counts = {state: int(n) for state, n in re.findall(r'<td data-state="([a-z_]+)">(\d+)</td>', page)}
    assert counts == {"suspected": 1, "confirmed": 1, "isolated": 1, "healed": 0, "closed": 0, "discarded": 1,
                      "deceased": 0}
    assert counts == staff.get("/api/diagram/case").json()["counts"]
    for state, n in counts.items():  # the same as the list filtered by state
        assert staff.get("/list/cases", params={"state": state}).text.count('<span class="state">') == n
    assert "<svg" in page and "stateDiagram" in page  # the drawing and its Mermaid text
    contact = staff.get("/diagrams/contact").text
    assert set(re.findall(r'<td data-state="([a-z_]+)">0</td>', contact)) >= {"exposed", "monitored"}


def test_the_calendar_shows_eight_weeks_and_dose_2_on_its_day(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    api(staff, "/api/persons", {"ref": "REF-1"})
    api(staff, "/api/courses", {"person": "person-1", "indication": "prep", "criteria": ["msm_two_partners_12w"],
                                "criterion_on": "2025-02-20"})
    assert api(staff, "/api/courses/course-1/dose", {"on": "2025-03-03"})["state"] == "dose1_given"
    page = staff.get("/calendar").text
    cells = re.findall(r'<td class="([^"]*)" data-date="([\d-]+)" data-monitoring-ends="(\d+)" '
                       r'data-doses-due="(\d+)">', page)
    assert len(cells) == 56
    dates = [d for _, d, _, _ in cells]
    assert dates[0] == "2025-03-03" and dates[-1] == "2025-04-27"
    assert len(re.findall(r"<tr><th>\d\d\.\d\d\.\d{4}</th>", page)) == 8  # 8 rows of weeks, from Mondays
    assert "<tr><th>03.03.2025</th>" in page and "<tr><th>21.04.2025</th>" in page
    doses = {d: int(n) for _, d, _, n in cells if n != "0"}
    assert doses == {"2025-03-31": 1}  # dose 1 + 28 days
    assert "today" in cells[0][0].split()
    assert "1 dose 2" in page
    assert "doses 2 falling due (§6.4): 1" in text(page)

    # Two days on, the week still starts on Monday; the days gone by are marked.
    post(staff, "/clock/advance", {"amount": "2", "unit": "days"})
    cells = re.findall(r'<td class="([^"]*)" data-date="([\d-]+)"', staff.get("/calendar").text)
    assert cells[0][1] == "2025-03-03" and len(cells) == 56
    assert [c for c, _ in cells[:3]] == ["past ", "past ", " today"]
    assert all("past" not in c and "today" not in c for c, _ in cells[3:])


def test_the_audit_page_verifies_the_chains_and_filters_by_object(client_for: ClientFor) -> None:
    staff = client_for(STAFF)
    confirmed_case(staff)
    page = staff.get("/audit", params={"verify": "1"}).text
    verified = re.search(r'<div class="flash" id="verify-result">(.*?)</div>', page, re.S)
    assert verified is not None and verified.group(1).strip().startswith("Intact:")
    assert "NOT intact" not in page
    assert 'id="verify-result"' not in staff.get("/audit").text  # only when asked

    page = staff.get("/audit", params={"entity": "case-1"}).text
    assert value_of(form(page, "audit-filters") or "", "entity") == "case-1"
    entries = re.search(r'<table id="entries">.*?</table>', page, re.S)
    assert entries is not None
    objects = re.findall(r'<a href="/audit\?entity=([^"]+)">', entries.group(0))
    assert objects == ["case-1", "case-1"]
    assert re.search(r"<td>confirm</td>\s*<td>suspected → confirmed</td>", entries.group(0))
    assert "staff:test" in entries.group(0) and "03.03.2025 kl. 08.00" in entries.group(0)
    everything = staff.get("/audit").text
    assert 'href="/audit?entity=person-1"' in everything and 'href="/audit?entity=case-1"' in everything
    nothing = staff.get("/audit", params={"entity": "case-99"})
    assert nothing.status_code == 200 and "No entries match." in nothing.text


# ---- the CLI's user commands ---------------------------------------------------------------------------------

runner = CliRunner()


def run_cli(url: str, *args: str, input: str | None = None) -> Result:  # noqa: A002 - the runner's name
    """A command run in-process; the logging it configures for itself (onto the runner's stream, closed
    afterwards) is put back at once, since the same test goes on to use the web application."""
    logging_config = structlog.get_config()
    try:
        return runner.invoke(app, ["--db", url, *args], input=input)
    finally:
        structlog.configure(**logging_config)


def user_cli(url: str, *args: str, input: str | None = None) -> Result:  # noqa: A002
    return run_cli(url, "user", *args, input=input)


def doc(url: str, *args: str) -> Any:
    """A command's one JSON document (it must succeed)."""
    result = run_cli(url, *args, "--json")
    assert result.exit_code == 0, describe(result)
    return json.loads(result.stdout)


def users_of(url: str) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in doc(url, "user", "list")}


def logs_in(client_for: ClientFor, name: str, password: str) -> bool:
    response = client_for().post("/api/login", json={"name": name, "password": password})
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200  # type: ignore[no-any-return]


def test_user_add_prompts_for_the_password_twice(cli_db: str, client_for: ClientFor) -> None:
    result = user_cli(cli_db, "add", "nurse:new", "--role", "staff", "--actor", ADMIN, "--json",
                      input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert result.exit_code == 0, describe(result)
    added = json.loads(result.stdout)
    assert (added["name"], added["role"]) == ("nurse:new", "staff")
    assert NEW_PASSWORD not in result.stdout and NEW_PASSWORD not in result.stderr  # not echoed
    assert "Password" in result.stderr
    assert users_of(cli_db)["nurse:new"]["password"]
    assert logs_in(client_for, "nurse:new", NEW_PASSWORD)


def test_user_add_with_two_different_passwords_adds_nobody(cli_db: str) -> None:
    before = snapshot(cli_db)
    result = user_cli(cli_db, "add", "nurse:new", "--role", "staff", "--actor", ADMIN,
                      input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}!\n")
    assert result.exit_code == 2, describe(result)
    assert "no password given" in result.stderr
    assert snapshot(cli_db) == before


def test_user_add_reads_the_password_from_stdin(cli_db: str, client_for: ClientFor) -> None:
    result = user_cli(cli_db, "add", "system:lab", "--role", "auditor", "--password-stdin", "--actor", ADMIN,
                      input=f"{NEW_PASSWORD}\n")
    assert result.exit_code == 0, describe(result)
    assert re.match(r"user-\d+  system:lab  auditor$", result.stdout.strip())
    assert "Password" not in result.stderr  # no prompt
    assert logs_in(client_for, "system:lab", NEW_PASSWORD)
    empty = user_cli(cli_db, "add", "system:other", "--role", "staff", "--password-stdin", "--actor", ADMIN,
                     input="\n")
    assert empty.exit_code == 2 and "--password-stdin read no password" in empty.stderr
    assert "system:other" not in users_of(cli_db)


def test_user_add_without_a_password(cli_db: str, client_for: ClientFor) -> None:
    result = user_cli(cli_db, "add", "system:lab", "--role", "staff", "--no-password", "--actor", ADMIN, "--json")
    assert result.exit_code == 0, describe(result)
    assert "Password" not in result.stderr
    assert not users_of(cli_db)["system:lab"]["password"]
    assert not logs_in(client_for, "system:lab", "")
    both = user_cli(cli_db, "add", "system:x", "--role", "staff", "--no-password", "--password-stdin",
                    "--actor", ADMIN, input=f"{NEW_PASSWORD}\n")
    assert both.exit_code == 2 and "contradict" in both.stderr


def test_user_add_with_too_short_a_password_exits_2_and_adds_nobody(cli_db: str) -> None:
    before = snapshot(cli_db)
    for how in (("--password-stdin",), ()):
        result = user_cli(cli_db, "add", "nurse:new", "--role", "staff", *how, "--actor", ADMIN, "--json",
                          input="short\n" if how else "short\nshort\n")
        assert result.exit_code == 2, describe(result)
        assert "at least 10 characters" in result.stderr
        assert json.loads(result.stdout)["exit_code"] == 2
    assert snapshot(cli_db) == before
    assert "nurse:new" not in users_of(cli_db)


def test_user_add_by_staff_exits_3(cli_db: str) -> None:
    result = user_cli(cli_db, "add", "intruder", "--role", "admin", "--password-stdin", "--actor", STAFF,
                      input=f"{NEW_PASSWORD}\n")
    assert result.exit_code == 3, describe(result)
    assert "intruder" not in users_of(cli_db)


def test_user_password_sets_a_new_password(cli_db: str, client_for: ClientFor) -> None:
    result = user_cli(cli_db, "password", "staff:anna", "--actor", ADMIN,
                      input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert result.exit_code == 0, describe(result)
    assert "password set for user-" in result.stdout and "(staff:anna)" in result.stdout
    assert logs_in(client_for, "staff:anna", NEW_PASSWORD)
    assert not logs_in(client_for, "staff:anna", PASSWORD)
    # Your own: any user; someone else's: admins only.
    own = user_cli(cli_db, "password", STAFF, "--password-stdin", "--actor", STAFF, input="my own passphrase\n")
    assert own.exit_code == 0, describe(own)
    assert logs_in(client_for, STAFF, "my own passphrase")
    before = snapshot(cli_db)
    other = user_cli(cli_db, "password", "staff:anna", "--password-stdin", "--actor", STAFF,
                     input="a takeover attempt\n")
    assert other.exit_code == 3, describe(other)
    after = snapshot(cli_db)
    assert {t for t in before if before[t] != after[t]} == {"audit_log", "users"}  # the refusal, audited
    assert logs_in(client_for, "staff:anna", NEW_PASSWORD)
    short = user_cli(cli_db, "password", STAFF, "--password-stdin", "--actor", STAFF, input="short\n")
    assert short.exit_code == 2 and "at least 10 characters" in short.stderr
    entries = doc(cli_db, "audit", "--trigger", "password_set")
    assert len(entries) == 2
    assert NEW_PASSWORD not in json.dumps(entries) and "my own passphrase" not in json.dumps(entries)


def test_user_token_tokens_and_revoke(cli_db: str, client_for: ClientFor) -> None:
    issued = doc(cli_db, "user", "token", STAFF, "--label", "lab system", "--actor", ADMIN)
    assert issued["id"] == "token-1" and issued["secret"].startswith("mpx_")
    assert (issued["user"], issued["role"], issued["label"]) == (STAFF, "staff", "lab system")
    bearer = client_for()
    headers = {"Authorization": f"Bearer {issued['secret']}"}
    assert bearer.get("/api/me", headers=headers).json()["user"] == STAFF

    text_output = user_cli(cli_db, "token", AUDITOR, "--label", "export job", "--actor", ADMIN)
    assert text_output.exit_code == 0, describe(text_output)
    assert re.search(r"token-2 for auditor:test \(auditor\): mpx_\S+", text_output.stdout)
    assert "shown only now" in text_output.stdout

    listed = doc(cli_db, "user", "tokens")
    assert [(t["id"], t["label"], t["revoked_at"]) for t in listed] == [("token-1", "lab system", None),
                                                                       ("token-2", "export job", None)]
    assert "secret" not in json.dumps(listed) and issued["secret"] not in json.dumps(listed)
    plain = user_cli(cli_db, "tokens")
    assert plain.exit_code == 0 and "lab system" in plain.stdout and "mpx_" not in plain.stdout

    # Staff can neither issue nor revoke.
    before = snapshot(cli_db)
    for args in (("token", STAFF, "--label", "mine"), ("revoke", "token-1")):
        result = user_cli(cli_db, *args, "--actor", STAFF)
        assert result.exit_code == 3, describe(result)
    after = snapshot(cli_db)
    assert {t for t in before if before[t] != after[t]} == {"audit_log", "users"}
    assert bearer.get("/api/me", headers=headers).status_code == 200

    revoked = doc(cli_db, "user", "revoke", "token-1", "--actor", ADMIN)
    assert revoked["id"] == "token-1" and revoked["revoked_at"]
    assert bearer.get("/api/me", headers=headers).status_code == 401
    assert [t["revoked_at"] is not None for t in doc(cli_db, "user", "tokens")] == [True, False]
    assert user_cli(cli_db, "revoke", "token-9", "--actor", ADMIN).exit_code == 4
    assert user_cli(cli_db, "revoke", "9", "--actor", ADMIN).exit_code == 2
