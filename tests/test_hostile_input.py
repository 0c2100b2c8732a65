"""Hostile and unlucky input (issue 13, items 1-5): every bad value is refused with its exit status or 4xx and the
JSON error body, the database is left as it was, and no log line or error text carries a person's reference or
birth date, even when a unique key is lost to a race. Both backends; the bounds are ``workflows.limits``'."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, insert

from engine.core import Engine
from entry.logs import configure_logging
from entry.web.app import CSRF_HEADER
from persistence.database import Database, DuplicateKey
from persistence.models import Person
from persistence.repository import Repository, parse_id
from tests.conftest import START
from tests.helpers import contents
from tests.test_cli import add_person, cli, describe, open_confirmed, snapshot
from workflows.errors import NotFound, RuleRefused, UsageError
from workflows.limits import MAX_DAYS, MAX_NAME, MAX_NOTE, MAX_REF

#: Hostile input is handled by each database in its own way (NUL, lengths, unique keys): both backends.
pytestmark = pytest.mark.both_backends

#: A CPR-like reference and a birth date: neither may ever reach a log or an error's text.
REF = "0101901234"
BORN = "1990-01-01"
HUGE = "x" * 1_000_000


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], str]]:
    """Everything logged (structlog as the entry points configure it, as JSON at debug, and the standard
    library) while the test runs."""
    configure_logging("json", "debug")
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    caplog.set_level(logging.DEBUG)
    yield lambda: buffer.getvalue() + caplog.text
    structlog.reset_defaults()


def assert_no_personal_data(*texts: str) -> None:
    for text in texts:
        assert REF not in text and BORN not in text and "1990, 1, 1" not in text, text


def lose_the_check_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race of two registrations of one reference: the first look for it finds nothing (as when the other
    registration has not committed yet), so the insert runs into the unique key; later looks see the truth."""
    real = Repository.person_id_by_ref
    calls: list[str] = []

    def racing(self: Repository, ref: str) -> Any:
        calls.append(ref)
        return None if len(calls) == 1 else real(self, ref)

    monkeypatch.setattr(Repository, "person_id_by_ref", racing)


# ---- ids -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["case-²", "case-١", "case-۱", "case-" + "9" * 20, "case-2147483648", "case--1",
                                  "case-+1", "case-1 OR 1=1", "case-<script>", "case-\x00", "case-"])
def test_an_id_is_kind_dash_ascii_digits_within_the_integer_range(text: str) -> None:
    with pytest.raises(NotFound) as caught:
        parse_id(text)
    assert "\x00" not in caught.value.message
    assert parse_id("case-2147483647") == ("case", 2147483647)


# ---- the persistence boundary ----------------------------------------------------------------------------------


def test_a_lost_unique_key_is_refused_naming_the_person_not_the_value(
        engine: Engine, db: Database, monkeypatch: pytest.MonkeyPatch, logs: Callable[[], str]) -> None:
    first = engine.add_person(ref=REF, born=date.fromisoformat(BORN), actor="staff:test")["id"]
    before = _contents(db)
    lose_the_check_once(monkeypatch)
    with pytest.raises(RuleRefused) as caught:
        engine.add_person(ref=REF, born=date.fromisoformat(BORN), actor="staff:test")
    assert caught.value.exit_code == 3
    assert f"registered already as {first}" in caught.value.message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert _contents(db) == before
    assert_no_personal_data(caught.value.message, logs())


def test_the_repository_insert_itself_is_translated_without_values(db: Database, logs: Callable[[], str]) -> None:
    row = {"ref": REF, "born": date.fromisoformat(BORN), "created_at": datetime.now(UTC)}
    with db.transaction() as session:
        session.execute(insert(Person), row)
    before = _contents(db)
    with pytest.raises(DuplicateKey) as caught, db.transaction() as session:
        session.execute(insert(Person), row)
    assert caught.value.exit_code == 3 and caught.value.table == "persons"
    assert "reference is registered already" in caught.value.message
    if db.backend == "postgresql":  # SQLite keeps any length and a NUL: the engine refuses those before
        for bad in ("R" * (MAX_REF + 1), "R\x00"):
            with pytest.raises(UsageError) as too, db.transaction() as session:
                session.execute(insert(Person), {**row, "ref": bad})
            assert too.value.__cause__ is None
            assert bad not in too.value.message
    assert _contents(db) == before
    assert_no_personal_data(caught.value.message, logs())


def test_engines_hide_parameters_and_the_log_drops_them(db: Database, logs: Callable[[], str]) -> None:
    assert db.engine.hide_parameters
    # An engine made without hide_parameters (a script's, a migration's): its error, logged with its traceback,
    # still loses the parameters and the driver's detail line on its way out.
    raw = create_engine(db.url)
    row = {"ref": REF, "born": date.fromisoformat(BORN), "created_at": datetime.now(UTC)}
    try:
        with raw.begin() as connection:
            connection.execute(insert(Person), row)
        with pytest.raises(Exception) as caught, raw.begin() as connection:
            connection.execute(insert(Person), row)
    finally:
        raw.dispose()
    assert REF in str(caught.value)  # what the processor is for
    structlog.get_logger("test").error("insert_failed", exc_info=caught.value)
    try:
        raise RuntimeError("wrapped") from caught.value
    except RuntimeError:
        structlog.get_logger("test").exception("wrapped_failed")
    out = logs()
    assert "insert_failed" in out and "wrapped_failed" in out and "[values hidden]" in out
    assert_no_personal_data(out)


# ---- the command line ----------------------------------------------------------------------------------------

LONG_NAME = "d" * (MAX_NAME + 1)
LONG_NOTE = "n" * (MAX_NOTE + 1)
#: (arguments, exit status, what the message names): each refused, the database unchanged.
CLI_HOSTILE: list[tuple[tuple[str, ...], int, str]] = [
    (("show", "case-²"), 4, "case-"),
    (("show", "case-١"), 4, "case-"),
    (("case", "heal", "case-١", "--on", "2025-03-03", "--actor", "staff:test"), 4, "case-"),
    (("show", "case-" + "9" * 20), 4, "case-"),
    (("case", "heal", "case-" + "9" * 25, "--on", "2025-03-03", "--actor", "staff:test"), 4, "case-"),
    (("show", "case-1'; DROP TABLE cases; --"), 4, "case-"),
    (("show", "<script>alert(1)</script>"), 4, "script"),
    (("show", "case-1", "--as-of", "0001-01-01"), 2, "--as-of"),
    (("show", "case-1", "--as-of", "9999-12-31T23:59:59+01:00"), 2, "--as-of"),
    (("audit", "--since", "0001-01-01T00:00:00+01:00"), 2, "--since"),
    (("audit", "--until", "9999-12-31"), 2, "--until"),
    (("audit", "--limit", "99999999999"), 2, "--limit"),
    (("due", "--within", "99999999"), 2, "--within"),
    (("due", "--within", "999999999999"), 2, "--within"),
    (("timers", "--limit", "-1"), 2, "--limit"),
    (("timers", "--limit", "0"), 2, "--limit"),
    (("clock", "advance", "--days", "99999999", "--actor", "staff:test"), 2, "--days"),
    (("clock", "advance", "--hours", "999999999", "--actor", "staff:test"), 2, "--hours"),
    (("clock", "advance", "--to", "9999-12-31", "--actor", "staff:test"), 2, "--to"),
    (("clock", "advance", "--days", str(MAX_DAYS + 1), "--actor", "staff:test"), 2, "--days"),
    (("clock", "advance", "--to", "2200-01-02", "--actor", "staff:test"), 2, "--to"),
    (("person", "add", "--ref", "B-1", "--born", "1899-12-31", "--actor", "staff:test"), 2, "--born"),
    (("person", "add", "--ref", "B-\x00", "--actor", "staff:test"), 2, "--ref"),
    (("person", "add", "--ref", "B-\x1b[31m", "--actor", "staff:test"), 2, "--ref"),
    (("person", "add", "--ref", "R" * (MAX_REF + 1), "--actor", "staff:test"), 2, "--ref"),
    (("person", "add", "--ref", "B-2", "--reason", LONG_NOTE, "--actor", "staff:test"), 2, "--reason"),
    (("person", "add", "--ref", "B-3", "--doses-elsewhere", "1", "--last-dose-on", "2019-01-01",
      "--actor", "staff:test"), 2, "--last-dose-on"),
    (("person", "update", "person-1", "--born", "1850-01-01", "--actor", "staff:test"), 2, "--born"),
    (("case", "open", "--person", "person-1", "--onset", "2019-01-01", "--symptoms", "rash", "--criteria", "msm",
      "--actor", "staff:test"), 2, "--onset"),
    (("case", "open", "--person", "person-1", "--onset", "2025-03-01", "--symptoms", "rash,other",
      "--symptom-note", "a\x00b", "--criteria", "msm", "--actor", "staff:test"), 2, "--symptom-note"),
    (("case", "heal", "case-1", "--on", "2025-03-03", "--reason", "ok\x00", "--actor", "staff:test"), 2,
     "--reason"),
    (("case", "heal", "case-1", "--on", "1900-01-01", "--actor", "staff:test"), 2, "--on"),
    (("case", "discharge", "case-1", "--on", "2025-03-03", "--decided-by", LONG_NAME, "--actor", "staff:test"), 2,
     "--decided-by"),
]


@pytest.fixture
def hostile_db(cli_db: str) -> str:
    """person-1 (REF, born BORN) with its confirmed case-1."""
    add_person(cli_db, REF, "--born", BORN)
    open_confirmed(cli_db, "person-1")
    return cli_db


@pytest.mark.parametrize("part", range(4))
def test_hostile_values_through_the_cli(hostile_db: str, part: int) -> None:
    """The table in four parts, so that the test workers share it."""
    watched = Database(hostile_db)
    try:
        for args, code, named in CLI_HOSTILE[part::4]:
            before = contents(watched)
            result = cli(hostile_db, *args, "--json")
            assert result.exit_code == code, describe(result)
            assert contents(watched) == before, args
            error = json.loads(result.stdout)  # one JSON error document, the message also on stderr
            assert error["exit_code"] == code and result.stderr.strip(), describe(result)
            assert named in error["error"], (args, error)
            assert "Traceback" not in result.stderr and len(result.stderr) < 2000, describe(result)
            assert_no_personal_data(result.stdout, result.stderr)
    finally:
        watched.dispose()


def test_show_of_a_timer_as_text(hostile_db: str) -> None:
    result = cli(hostile_db, "show", "timer-1")
    assert result.exit_code == 0, describe(result)
    assert "timer-1" in result.stdout


def test_a_lost_unique_key_through_the_cli(hostile_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(hostile_db)
    lose_the_check_once(monkeypatch)
    result = cli(hostile_db, "person", "add", "--ref", REF, "--born", BORN, "--actor", "staff:test", "--json")
    assert result.exit_code == 3, describe(result)
    assert "already as person-1" in json.loads(result.stdout)["error"]
    assert snapshot(hostile_db) == before
    assert_no_personal_data(result.stdout, result.stderr)


# ---- the HTTP API --------------------------------------------------------------------------------------------


def _post(client: Any, path: str, body: Any) -> Any:
    return client.post(path, json=body, headers={CSRF_HEADER: client.csrf} if client.csrf else {})


#: (method, path, body or query, status, exit status).
API_HOSTILE: list[tuple[str, str, Any, int, int]] = [
    ("GET", "/api/show/case-²", None, 404, 4),
    ("GET", "/api/show/case-١", None, 404, 4),
    ("POST", "/api/cases/case-١/heal", {"on": "2025-03-03"}, 404, 4),
    ("GET", "/api/show/case-" + "9" * 20, None, 404, 4),
    ("GET", "/api/show/case-1", {"as_of": "0001-01-01"}, 422, 2),
    ("GET", "/api/show/case-1", {"as_of": "9999-12-31"}, 422, 2),
    ("GET", "/api/audit", {"since": "0001-01-01T00:00:00+01:00"}, 422, 2),
    ("GET", "/api/audit", {"until": "9999-12-31"}, 422, 2),
    ("GET", "/api/audit", {"limit": "99999999999"}, 422, 2),
    ("GET", "/api/due", {"within": "99999999"}, 422, 2),
    ("GET", "/api/timers", {"limit": "-1"}, 422, 2),
    ("POST", "/api/clock/advance", {"days": 99999999}, 422, 2),
    ("POST", "/api/clock/advance", {"hours": 999999999}, 422, 2),
    ("POST", "/api/clock/advance", {"to": "9999-12-31"}, 422, 2),
    ("POST", "/api/persons", {"ref": "B-1", "born": "1899-12-31"}, 422, 2),
    ("POST", "/api/persons", {"ref": "B-\u0000"}, 422, 2),
    ("POST", "/api/persons", {"ref": "R" * (MAX_REF + 1)}, 422, 2),
    ("POST", "/api/persons", {"ref": "B-2", "reason": HUGE}, 422, 2),
    ("POST", "/api/persons/person-1/update", {"born": "1850-01-01"}, 422, 2),
    ("POST", "/api/cases", {"person": "person-1", "onset": "2019-01-01", "symptoms": ["rash"]}, 422, 2),
    ("POST", "/api/cases/case-1/heal", {"on": "2025-03-03", "reason": "ok\u0000"}, 422, 2),
    ("POST", "/api/cases/case-1/heal", {"on": "1900-01-01"}, 422, 2),
    ("POST", "/api/cases/case-1/discharge", {"on": "2025-03-03", "decided_by": LONG_NAME}, 422, 2),
    ("POST", "/api/cases", {"person": "person-1", "symptoms": ["<script>"] * 50_000}, 422, 2),
]


def test_hostile_values_through_the_api(hostile_db: str, client_for: Any, logs: Callable[[], str]) -> None:
    staff = client_for("staff:test")
    for method, path, payload, status, code in API_HOSTILE:
        before = snapshot(hostile_db)
        response = (staff.get(path, params=payload) if method == "GET" else _post(staff, path, payload))
        assert response.status_code == status, (path, payload if len(str(payload)) < 200 else "...", response.text)
        body = response.json()
        assert (body["exit_code"], body["status"]) == (code, status), body
        assert set(body) >= {"error", "message", "rule", "exit_code", "status"}
        assert len(response.content) < 5_000, (path, len(response.content))  # a megabyte is not echoed
        assert snapshot(hostile_db) == before, path
        assert_no_personal_data(response.text)
    assert_no_personal_data(logs())


def test_a_lost_unique_key_through_the_api(hostile_db: str, client_for: Any, monkeypatch: pytest.MonkeyPatch,
                                           logs: Callable[[], str]) -> None:
    staff = client_for("staff:test")
    before = snapshot(hostile_db)
    lose_the_check_once(monkeypatch)
    response = _post(staff, "/api/persons", {"ref": REF, "born": BORN})
    assert response.status_code == 409, response.text
    assert (response.json()["exit_code"], response.json()["error"]) == (3, "refused")
    assert "already as person-1" in response.json()["message"]
    assert snapshot(hostile_db) == before
    assert_no_personal_data(response.text, logs())


def test_an_auditor_is_refused_before_the_body_is_validated(hostile_db: str, client_for: Any,
                                                            logs: Callable[[], str]) -> None:
    auditor = client_for("auditor:test")
    response = _post(auditor, "/api/persons", {"ref": "R" * (MAX_REF + 1), "reason": HUGE, "unknown": 1})
    assert response.status_code == 403, response.text
    assert len(response.content) < 5_000


# ---- helpers -------------------------------------------------------------------------------------------------


def _contents(db: Database) -> Any:
    return contents(db)


def test_the_test_clock_is_recent() -> None:
    """The clinical-date bounds are relative to the clock's today: START must be inside them for the table."""
    assert START.year >= 2020
