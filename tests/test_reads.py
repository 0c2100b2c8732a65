"""Reads of personal data are audited (issue 19 item 3): every path that shows a person's reference (or birth date)
records who looked, which person (the internal id only), what showed it and how; batched per request or command,
one INSERT for a page of the worklist; append-only; summed up per person and per user for auditors and admins.

The engine's paths run on both backends (``engine``, ``db``); the command line, the API and the pages on SQLite
(``cli_db``, ``client_for``), one of them on both (refusals leave the database unchanged).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError

from engine import imports, reads
from engine.accounts import Accounts
from engine.clock import SimulatedClock
from engine.core import Engine
from engine.fhir import FhirReader
from engine.notes import HARD_TO_REACH_AFTER
from engine.webhooks import Webhooks
from persistence.database import Database
from tests.conftest import START
from tests.helpers import confirmed, contents, person, suspected
from tests.test_cli import cli, describe, doc, ok
from tests.test_courses import contact
from tests.test_hostile_input import logs  # noqa: F401 - a fixture
from workflows.errors import NotPermitted, UsageError

ROOT = Path(__file__).resolve().parent.parent
STAFF, ANNA, AUDITOR, ADMIN = "staff:test", "staff:anna", "auditor:test", "admin:test"
REF, REF_2, REF_3 = "0101901234", "0202902345", "0303903456"
BORN = date(1990, 1, 1)


def read_rows(db: Database) -> list[dict[str, Any]]:
    """The read log, oldest first."""
    with db.engine.connect() as connection:
        return [dict(r) for r in connection.execute(select(reads.READS).order_by(reads.READS.c.id)).mappings()]


def shown(db: Database, since: int = 0) -> list[tuple[str, int, str, str]]:
    """(actor, person, what, via) of the rows after id ``since``."""
    return [(r["actor"], r["person_id"], r["what"], r["via"]) for r in read_rows(db) if r["id"] > since]


def last_id(db: Database) -> int:
    rows = read_rows(db)
    return rows[-1]["id"] if rows else 0


def pk(person_id: str) -> int:
    return int(person_id.rsplit("-", 1)[1])


@contextmanager
def inserts(db: Database) -> Iterator[list[str]]:
    """The statements that write the read log while the block runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PERSONAL_READS"):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def rows_in(statement: str) -> int:
    """How many rows one INSERT statement carries (9 values a row; ``?`` on SQLite, ``%(name)s`` on psycopg)."""
    markers = statement.count("?") or statement.count("%(")
    assert markers % 9 == 0, statement
    return markers // 9


def fail_three_times(engine: Engine, object_id: str) -> None:
    for _ in range(HARD_TO_REACH_AFTER):
        engine.attempt(object_id, channel="phone", outcome="no-answer", actor=STAFF, reason="no answer")


# ---- the engine's reads: who, which person, what, how (both backends) ------------------------------------------


def test_a_persons_view_records_who_which_person_what_and_via_and_a_cases_does_not(engine: Engine, db: Database,
                                                                                  clock: SimulatedClock) -> None:
    p = person(engine, REF, born=BORN)
    case = suspected(engine, p)
    before = last_id(db)  # registering showed the person to staff:test (its answer): a read
    assert shown(db) == [(STAFF, pk(p), "person", "api")]
    clock.set(START + timedelta(hours=2))
    viewer = engine.viewing_as(ANNA)
    assert viewer.show(p)["ref"] == REF
    [row] = [r for r in read_rows(db) if r["id"] > before]
    assert (row["actor"], row["role"], row["unit_id"], row["person_id"], row["what"], row["via"]) == (
        ANNA, "staff", 1, pk(p), "person", "api")
    assert row["at"] == START + timedelta(hours=2) and row["recorded_at"] > START  # the clock's, the wall clock's
    assert len(row["request_id"]) == 32
    mark = last_id(db)
    viewer.show(case)  # a case's view names its person by id only
    viewer.related(case)
    assert shown(db, mark) == []


def test_every_engine_read_that_shows_a_reference_records_it(engine: Engine, db: Database,
                                                             clock: SimulatedClock) -> None:
    p, q = person(engine, REF, born=BORN), person(engine, REF_2)
    case = confirmed(engine, p)
    engine.apply(case, "consent", data={"tracing": True}, actor=STAFF)
    contact_id = contact(engine, case, q, "2025-03-02", "sexual")
    fail_three_times(engine, contact_id)
    document = engine.make_document(case, actor=STAFF)
    engine.apply(case, "notify", data={"channel": "written", "document": document["id"]}, actor=STAFF)
    engine.apply(case, "clade", data={"clade": "Ib"}, actor=STAFF)  # the sent document holds the case no more
    viewer = engine.viewing_as(ANNA)

    def after(call: Any) -> list[tuple[str, int, str, str]]:
        mark = last_id(db)
        call()
        return shown(db, mark)

    assert after(lambda: viewer.list("person")) == [(ANNA, pk(p), "ref", "api"), (ANNA, pk(q), "ref", "api")]
    assert sorted(after(lambda: viewer.worklist())) == [(ANNA, pk(p), "ref", "api"), (ANNA, pk(q), "ref", "api")]
    assert after(lambda: viewer.worklist_page(limit=1)) == [(ANNA, pk(p), "ref", "api")]
    assert after(lambda: viewer.search(REF[:4])) == [(ANNA, pk(p), "ref", "api")]
    assert after(lambda: viewer.search(case)) == [(ANNA, pk(p), "ref", "api"), (ANNA, pk(q), "ref", "api")]
    assert after(lambda: viewer.refs([q, None], "case")) == [(ANNA, pk(q), "case", "api")]
    assert after(lambda: viewer.hard_to_reach()) == [(ANNA, pk(q), "ref", "api")]
    assert after(lambda: viewer.changed_since_sent()) == [(ANNA, pk(p), "ref", "api")]
    assert after(lambda: viewer.document(document["id"])) == [(ANNA, pk(p), "document", "api")]
    assert after(lambda: viewer.documents_of(case)) == []  # without their Bundles
    assert after(lambda: viewer.make_document(case, actor=ANNA)) == [(ANNA, pk(p), "document", "api")]
    fhir = FhirReader(viewer, "staff")
    assert after(lambda: fhir.read("Patient", p)) == [(ANNA, pk(p), "fhir", "api")]
    assert after(lambda: fhir.read("Condition", case)) == []
    assert after(lambda: fhir.read("Bundle", document["id"])) == [(ANNA, pk(p), "fhir", "api")]
    assert after(lambda: fhir.everything(p)) == [(ANNA, pk(p), "fhir", "api")]  # the contacts' persons by id only
    assert after(lambda: list(fhir.export(["Patient"]))) == [(ANNA, pk(p), "fhir", "api"),
                                                             (ANNA, pk(q), "fhir", "api")]
    assert after(lambda: list(fhir.export(["Condition", "Task"]))) == []
    assert after(lambda: fhir.audit_events(p)) == []  # the entries name the person by id only
    assert after(lambda: engine.update_person(q, changes={"pregnant": True}, actor=ANNA)) == [
        (ANNA, pk(q), "person", "api")]
    assert after(lambda: engine.correct_person(q, changes={"born": date(1991, 1, 1)}, actor=ANNA,
                                               reason="typo")) == [(ANNA, pk(q), "person", "api")]
    report = [{"row": 2, "result": "present", "ids": [], "person": q, "object": contact_id},
              {"row": 3, "result": "refused", "ids": [], "person": None, "object": None}]
    content = f"CPR;Eksponeringsdato;Kontakttype\n{REF_2};02.03.2025;seksuel\nX;bad;x\n".encode()
    assert after(lambda: imports.report_download(viewer, content, "k.csv", report)) == [(ANNA, pk(q), "import",
                                                                                          "api")]
    assert after(lambda: viewer.person_report(p, actor=ANNA)) == [(ANNA, pk(p), "report", "api")]
    # the reads of other readers are their own
    assert after(lambda: engine.viewing_as(STAFF).show(p)) == [(STAFF, pk(p), "person", "api")]


def test_reads_without_a_reader_record_nothing(engine: Engine, db: Database) -> None:
    p = person(engine, REF)
    confirmed(engine, p)
    mark = last_id(db)
    engine.viewing_as(None)
    assert engine.worklist() and engine.list("person") and engine.show(p)
    assert shown(db, mark) == []


def test_a_worklist_page_of_n_persons_writes_n_rows_in_one_statement(engine: Engine, db: Database) -> None:
    made = [person(engine, f"W-{n:04d}") for n in range(7)]
    for p in made:
        confirmed(engine, p)  # three tasks each: 21 items of 7 persons
    viewer = engine.viewing_as(STAFF)
    mark = last_id(db)
    with inserts(db) as statements:
        page = viewer.worklist_page(limit=50)
    assert len(page["items"]) == 21 and len(statements) == 1 and rows_in(statements[0]) == 7
    rows = shown(db, mark)
    assert sorted(rows) == sorted((STAFF, pk(p), "ref", "api") for p in made)
    assert len({r["request_id"] for r in read_rows(db) if r["id"] > mark}) == 1


def test_a_request_writes_each_person_once_the_most_telling_way_in_one_statement(engine: Engine,
                                                                                  db: Database) -> None:
    p, q = person(engine, REF), person(engine, REF_2)
    confirmed(engine, p)
    confirmed(engine, q)
    viewer = engine.viewing_as(STAFF)
    mark = last_id(db)
    viewer.reads.begin(via="web", request_id="request-1", held=True)
    viewer.worklist()
    viewer.show(p)
    viewer.show(p)
    viewer.refs([p, q], "case")
    assert shown(db, mark) == [] and viewer.reads.pending == 2  # held until the answer starts
    with inserts(db) as statements:
        assert viewer.reads.flush() == 2
    assert len(statements) == 1 and rows_in(statements[0]) == 2
    assert sorted(shown(db, mark)) == [(STAFF, pk(p), "person", "web"), (STAFF, pk(q), "case", "web")]
    assert {r["request_id"] for r in read_rows(db) if r["id"] > mark} == {"request-1"}
    viewer.show(p)  # a second view in the same request: written already
    viewer.worklist()
    assert viewer.reads.pending == 0 and viewer.reads.flush() == 0
    viewer.reads.discard()


def test_an_error_answer_drops_what_it_held(engine: Engine, db: Database) -> None:
    p = person(engine, REF)
    viewer = engine.viewing_as(STAFF)
    mark = last_id(db)
    viewer.reads.begin(via="api", held=True)
    viewer.show(p)
    viewer.reads.discard()
    assert viewer.reads.flush() == 0 and shown(db, mark) == []


def test_the_read_log_is_append_only(engine: Engine, db: Database) -> None:
    engine.viewing_as(STAFF).show(person(engine, REF))
    assert read_rows(db)
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:
        connection.execute(text("UPDATE personal_reads SET actor = 'someone else'"))
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:
        connection.execute(text("DELETE FROM personal_reads"))
    if db.backend == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:
            connection.execute(text("TRUNCATE personal_reads"))
    assert read_rows(db) and read_rows(db)[0]["actor"] == STAFF


def test_a_reader_who_is_no_user_is_refused_and_nothing_is_written(engine: Engine, db: Database) -> None:
    p = person(engine, REF)
    before = contents(db)
    with pytest.raises(NotPermitted, match="not a user"):
        engine.viewing_as("nobody:here").list("person")  # persons are everyone's, but only a user is shown them
    with pytest.raises(UsageError, match="control character"):
        engine.viewing_as("a\x00b").refs([p])
    assert contents(db) == before
    Accounts(engine.viewing_as(None)).set_disabled(ANNA, True, actor=ADMIN, reason="left")
    before = contents(db)
    with pytest.raises(NotPermitted, match="disabled"):
        engine.viewing_as(ANNA).list("person")
    assert contents(db) == before


def test_summaries_per_person_and_per_user_on_a_known_population(engine: Engine, db: Database,
                                                                 clock: SimulatedClock) -> None:
    p, q, r = person(engine, REF), person(engine, REF_2), person(engine, REF_3)
    mark = last_id(db)
    population = [(START + timedelta(hours=1), STAFF, p), (START + timedelta(hours=2), STAFF, p),
                  (START + timedelta(hours=3), STAFF, q), (START + timedelta(hours=4), ANNA, p),
                  (START + timedelta(hours=5), AUDITOR, r)]
    for at, who, whom in population:
        clock.set(at)
        engine.viewing_as(who).show(whom)
    assert len(shown(db, mark)) == 5
    log = engine.viewing_as(AUDITOR)
    since = START + timedelta(minutes=30)  # the registrations' reads (at START) left out
    by_person = log.read_log(by="person", since=since)["items"]
    hour = lambda n: (START + timedelta(hours=n)).isoformat()  # noqa: E731
    assert by_person == [
        {"person": p, "reads": 3, "users": 2, "first": hour(1), "last": hour(4)},
        {"person": q, "reads": 1, "users": 1, "first": hour(3), "last": hour(3)},
        {"person": r, "reads": 1, "users": 1, "first": hour(5), "last": hour(5)}]
    assert log.read_log(by="user", since=since)["items"] == [  # most reads first, then by name
        {"user": STAFF, "reads": 3, "persons": 2, "first": hour(1), "last": hour(3)},
        {"user": AUDITOR, "reads": 1, "persons": 1, "first": hour(5), "last": hour(5)},
        {"user": ANNA, "reads": 1, "persons": 1, "first": hour(4), "last": hour(4)}]
    assert log.read_log(by="person", person=p, since=since)["items"] == [by_person[0]]
    assert [i["person"] for i in log.read_log(user=STAFF, since=since)["items"]] == [q, p, p]  # newest first
    page = log.read_log(limit=2, since=since)
    assert [i["actor"] for i in page["items"]] == [AUDITOR, ANNA] and page["older"] is not None
    rest = log.read_log(limit=2, since=since, older_than=page["older"])
    assert [(i["actor"], i["person"]) for i in rest["items"]] == [(STAFF, q), (STAFF, p)]
    for item in log.read_log(since=since)["items"]:
        assert set(item) == {"id", "at", "recorded_at", "actor", "role", "unit", "person", "what", "via", "request"}
    # reading the read log is not itself a read of personal data
    assert len(shown(db, mark)) == 5


def test_only_auditors_and_admins_read_the_read_log_and_a_refusal_writes_nothing(engine: Engine,
                                                                                 db: Database) -> None:
    engine.viewing_as(STAFF).show(person(engine, REF))
    before = contents(db)
    with pytest.raises(NotPermitted, match="auditors and admins"):
        engine.viewing_as(STAFF).read_log()
    with pytest.raises(NotPermitted, match="not an enabled user"):
        engine.viewing_as("nobody").read_log()
    assert contents(db) == before
    assert engine.viewing_as(AUDITOR).read_log()["items"]
    assert engine.viewing_as(ADMIN).read_log(by="user")["items"]


@pytest.mark.parametrize(("given", "message"), [
    ({"person": "case-1"}, "No person"), ({"person": "person-99"}, "No person"), ({"user": "no-one"}, "No user"),
    ({"user": "a\x00b"}, "user"), ({"by": "unit"}, "by"), ({"limit": 0}, "limit"),
    ({"since": START, "before": START}, "until"), ({"since": datetime(2025, 3, 3)}, "offset"),  # noqa: DTZ001
    ({"older_than": -1}, "older_than"), ({"by": "person", "older_than": 3}, "older_than"),
])
def test_a_read_of_the_read_log_with_bad_input_is_refused_naming_the_field(engine: Engine, db: Database,
                                                                           given: dict[str, Any],
                                                                           message: str) -> None:
    engine.viewing_as(STAFF).show(person(engine, REF))
    before = contents(db)
    with pytest.raises(Exception, match=message) as refused:
        engine.viewing_as(AUDITOR).read_log(**given)
    assert refused.value.exit_code in (2, 4)  # type: ignore[attr-defined]
    assert contents(db) == before


def test_the_read_log_never_holds_a_reference_or_a_birth_date(engine: Engine, db: Database) -> None:
    p = person(engine, REF, born=BORN)
    case = confirmed(engine, p)
    viewer = engine.viewing_as(STAFF)
    viewer.show(p), viewer.worklist(), viewer.search(REF), viewer.refs([p], "case")
    list(FhirReader(viewer, "staff").export())
    viewer.make_document(case, actor=STAFF)
    dump = json.dumps(read_rows(db), default=str)
    assert len(read_rows(db)) >= 5
    for secret in (REF, BORN.isoformat(), "1990", REF[:6]):
        assert secret not in dump
    assert json.dumps(engine.viewing_as(AUDITOR).read_log(by="person"), default=str).count(REF) == 0


def test_a_webhook_delivery_carrying_the_person_is_a_read_by_the_webhook(engine: Engine, db: Database) -> None:
    hooks = Webhooks(engine.runtime)
    hooks.add("http://127.0.0.1:9/hook", "case.suspected", actor=ADMIN, role="staff", personal_data=True)
    hooks.add("http://127.0.0.1:9/other", "case.suspected", actor=ADMIN, role="staff")  # without the person
    p = person(engine, REF)
    suspected(engine, p)
    mark = last_id(db)
    for webhook in hooks.active():
        hooks.scan(webhook)
    claims = hooks.claim("worker-1")
    assert sorted("person" in c.body for c in claims) == [False, True]
    [row] = [r for r in read_rows(db) if r["id"] > mark]
    assert (row["actor"], row["role"], row["person_id"], row["what"], row["via"]) == (
        "webhook-1", "staff", pk(p), "webhook", "worker")
    assert row["request_id"] == "webhook-1.event-1.attempt-1"


def test_a_read_that_cannot_be_recorded_is_not_shown(engine: Engine, db: Database) -> None:
    p = person(engine, REF)
    refuse_inserts(db)
    with pytest.raises(reads.ReadNotRecorded, match="could not be recorded") as refused:
        engine.viewing_as(STAFF).show(p)
    assert (refused.value.exit_code, refused.value.http_status) == (1, 503)
    assert REF not in refused.value.message


def refuse_inserts(db: Database) -> None:
    """The database refuses every write to the read log (as a full disk or a read-only replica would)."""
    with db.engine.begin() as connection:
        if db.backend == "sqlite":
            connection.execute(text("CREATE TRIGGER personal_reads_refused BEFORE INSERT ON personal_reads "
                                    "BEGIN SELECT RAISE(ABORT, 'refused'); END"))
        else:
            connection.execute(text("CREATE FUNCTION refuse_reads() RETURNS trigger LANGUAGE plpgsql AS $$ "
                                    "BEGIN RAISE EXCEPTION 'refused'; END $$"))
            connection.execute(text("CREATE TRIGGER personal_reads_refused BEFORE INSERT ON personal_reads "
                                    "FOR EACH ROW EXECUTE FUNCTION refuse_reads()"))


# ---- the command line ----------------------------------------------------------------------------------------


@pytest.fixture
def cli_world(cli_db: str) -> dict[str, str]:
    """person-1 (REF, born BORN) with case-1 confirmed (consenting), person-2 its contact-1, on the CLI's database."""
    p = doc(cli_db, "person", "add", "--ref", REF, "--born", BORN.isoformat(), "--actor", STAFF)["id"]
    q = doc(cli_db, "person", "add", "--ref", REF_2, "--actor", STAFF)["id"]
    ok(cli_db, "case", "open", "--person", p, "--onset", "2025-02-28", "--confirmed", "--pcr-on", "2025-03-02",
       "--actor", STAFF)
    ok(cli_db, "case", "consent", "case-1", "--tracing", "yes", "--actor", STAFF)
    ok(cli_db, "contact", "add", "--case", "case-1", "--person", q, "--exposed", "2025-03-02", "--kind", "sexual",
       "--actor", STAFF)
    return {"p": p, "q": q}


def test_the_commands_that_show_a_reference_record_it_via_the_cli(cli_db: str, cli_world: dict[str, str],
                                                                  tmp_path: Path) -> None:
    db = Database(cli_db)
    p, q = pk(cli_world["p"]), pk(cli_world["q"])
    try:
        def after(*args: str) -> list[tuple[str, int, str, str]]:
            mark = last_id(db)
            result = ok(cli_db, *args)
            assert REF in result.stdout or args[0] in ("import",), describe(result)
            return sorted(shown(db, mark))

        assert after("show", "person-1", "--as", ANNA) == [(ANNA, p, "person", "cli")]
        assert after("due", "--as", ANNA, "--json") == [(ANNA, p, "ref", "cli"), (ANNA, q, "ref", "cli")]
        assert after("list", "persons", "--as", ANNA, "--json") == [(ANNA, p, "ref", "cli"), (ANNA, q, "ref", "cli")]
        assert after("fhir", "show", "Patient/person-1", "--as", ANNA) == [(ANNA, p, "fhir", "cli")]
        assert after("fhir", "export", "--type", "Patient", "--as", ANNA) == [(ANNA, p, "fhir", "cli"),
                                                                              (ANNA, q, "fhir", "cli")]
        assert after("case", "document", "case-1", "--actor", ANNA, "--json") == [(ANNA, p, "document", "cli")]
        upload = tmp_path / "kontakter.csv"
        upload.write_text(f"CPR;Eksponeringsdato;Kontakttype\n{REF_2};02.03.2025;seksuel\n", encoding="utf-8")
        assert after("import", "contacts", str(upload), "--case", "case-1", "--actor", ANNA, "--report",
                     str(tmp_path / "report.csv")) == [(ANNA, q, "import", "cli")]
        assert REF_2 in (tmp_path / "report.csv").read_text(encoding="utf-8")
        # a command's rows share its id; each person once
        mark = last_id(db)
        ok(cli_db, "due", "--as", ANNA)
        assert len({r["request_id"] for r in read_rows(db) if r["id"] > mark}) == 1
        mark = last_id(db)
        ok(cli_db, "show", "case-1", "--as", ANNA)  # no reference in a case's view
        assert shown(db, mark) == []
    finally:
        db.dispose()


def test_reads_lists_rows_and_summaries_for_auditors(cli_db: str, cli_world: dict[str, str]) -> None:
    ok(cli_db, "show", "person-1", "--as", ANNA)
    rows = doc(cli_db, "reads", "--as", AUDITOR, "--user", ANNA)
    assert [(r["actor"], r["person"], r["what"], r["via"]) for r in rows] == [(ANNA, "person-1", "person", "cli")]
    summary = doc(cli_db, "reads", "--as", ADMIN, "--by", "person", "--person", "person-1")
    assert summary == [{"person": "person-1", "reads": 2, "users": 2, "first": START.isoformat(),
                        "last": START.isoformat()}]  # registered by staff:test, read by staff:anna
    text_table = ok(cli_db, "reads", "--as", AUDITOR, "--by", "user").stdout
    assert text_table.splitlines()[0].split() == ["user", "reads", "persons", "first", "last"]
    assert REF not in text_table


def test_reads_across_a_change_to_summer_time_takes_danish_days(cli_db: str) -> None:
    """Summer time starts at 02:00 on 30 March 2025 (a 23-hour day): a read at 00:30 and one at 23:30 that day
    are of the 30th, one at 23:30 the day before and one at 00:30 the day after are not."""
    db = Database(cli_db)
    try:
        engine = Engine(db, SimulatedClock(START))
        p = person(engine, REF)
        times = ["2025-03-29T23:30:00+01:00", "2025-03-30T00:30:00+01:00", "2025-03-30T23:30:00+02:00",
                 "2025-03-31T00:30:00+02:00"]
        for at in times:
            engine.clock.set(datetime.fromisoformat(at))
            engine.viewing_as(ANNA).show(p)
        rows = doc(cli_db, "reads", "--as", AUDITOR, "--user", ANNA, "--since", "2025-03-30", "--until", "2025-03-30")
        assert [r["at"] for r in rows] == [times[2], times[1]]
        rows = doc(cli_db, "reads", "--as", AUDITOR, "--user", ANNA, "--since", "2025-03-31")
        assert [r["at"] for r in rows] == [times[3]]
        rows = doc(cli_db, "reads", "--as", AUDITOR, "--user", ANNA, "--until", "2025-03-29")
        assert [r["at"] for r in rows] == [times[0]]
    finally:
        db.dispose()


@pytest.mark.parametrize(("args", "code", "flag"), [
    (["--as", STAFF], 3, None), (["--as", "nobody"], 3, None), (["--since", "2025-02-30"], 2, "--since"),
    (["--until", "0001-01-01"], 2, "--until"), (["--since", "2025-03-04", "--until", "2025-03-03"], 2, "--until"),
    (["--by", "unit"], 2, "--by"), (["--limit", "0"], 2, "--limit"), (["--person", "case-1"], 4, None),
    (["--person", "person-99"], 4, None), (["--user", "a\x00b"], 2, "--user"), (["--user", "no-one"], 4, None),
])
@pytest.mark.both_backends
def test_reads_refuses_bad_input_and_staff_and_writes_nothing(cli_db: str, cli_world: dict[str, str],
                                                              args: list[str], code: int, flag: str | None) -> None:
    db = Database(cli_db)
    try:
        before = contents(db)
        result = cli(cli_db, "reads", *(["--as", AUDITOR] if "--as" not in args else []), *args, "--json")
        assert result.exit_code == code, describe(result)
        error = json.loads(result.stdout)
        assert error["exit_code"] == code and (flag is None or flag in error["error"]), error
        assert "Traceback" not in result.stderr and REF not in result.stdout + result.stderr
        assert contents(db) == before
    finally:
        db.dispose()


def test_a_command_whose_read_cannot_be_recorded_shows_nothing(cli_db: str, cli_world: dict[str, str]) -> None:
    db = Database(cli_db)
    try:
        refuse_inserts(db)
        for args in (["show", "person-1"], ["due"], ["list", "persons"]):
            result = cli(cli_db, *args, "--as", ANNA)
            assert result.exit_code == 1, describe(result)
            assert REF not in result.stdout and "could not be recorded in the read log" in result.stderr
    finally:
        db.dispose()


# ---- the API and the pages ----------------------------------------------------------------------------------


def rows_of(db: Database, response: Any) -> list[tuple[str, int, str, str]]:
    """The read log's rows of one request (by its X-Request-ID)."""
    request = response.headers["X-Request-ID"]
    return sorted((r["actor"], r["person_id"], r["what"], r["via"]) for r in read_rows(db)
                  if r["request_id"] == request)


def test_the_api_and_the_pages_record_their_reads_once_per_request(web_app: Any, client_for: Any, cli_db: str,
                                                                   cli_world: dict[str, str]) -> None:
    db = Database(cli_db)
    anna = client_for(ANNA)
    p, q = pk(cli_world["p"]), pk(cli_world["q"])
    try:
        answer = anna.get("/api/show/person-1")
        assert answer.status_code == 200 and rows_of(db, answer) == [(ANNA, p, "person", "api")]
        answer = anna.get("/api/due", params={"limit": 50})
        assert rows_of(db, answer) == [(ANNA, p, "ref", "api"), (ANNA, q, "ref", "api")]
        answer = anna.post("/api/search", json={"q": REF})
        assert rows_of(db, answer) == [(ANNA, p, "ref", "api")]
        answer = anna.get("/fhir/Patient/person-1")
        assert answer.status_code == 200 and rows_of(db, answer) == [(ANNA, p, "fhir", "api")]
        answer = anna.get("/fhir/$export", params={"_type": "Patient"})
        assert answer.status_code == 200 and rows_of(db, answer) == [(ANNA, p, "fhir", "api"),
                                                                     (ANNA, q, "fhir", "api")]
        with inserts(web_app.state.web.db) as statements:  # the server's own connections
            page = anna.get("/worklist")  # the worklist, hard to reach, changed since sent: one INSERT
        assert page.status_code == 200 and REF in page.text and len(statements) == 1 and rows_in(statements[0]) == 2
        assert rows_of(db, page) == [(ANNA, p, "ref", "web"), (ANNA, q, "ref", "web")]
        page = anna.get("/objects/case-1")  # the case's person, and its contact's beside the contact
        assert REF in page.text and REF_2 in page.text
        assert rows_of(db, page) == [(ANNA, p, "case", "web"), (ANNA, q, "case", "web")]
        page = anna.get("/objects/person-1")
        assert rows_of(db, page) == [(ANNA, p, "person", "web")]  # shown twice on the page: one row
        page = anna.get("/list/contacts")
        assert REF_2 in page.text and rows_of(db, page) == [(ANNA, q, "ref", "web")]
        page = anna.post("/search", data={"q": REF_2})
        assert rows_of(db, page) == [(ANNA, q, "ref", "web")]
        page = anna.get("/objects/timer-1")
        assert rows_of(db, page) == []
        # an error answer records nothing
        answer = anna.get("/api/show/person-99")
        assert answer.status_code == 404 and rows_of(db, answer) == []
    finally:
        db.dispose()


def test_an_answer_whose_reads_cannot_be_recorded_is_a_503_without_the_reference(
        client_for: Any, cli_db: str, cli_world: dict[str, str], logs: Callable[[], str]) -> None:  # noqa: F811
    db = Database(cli_db)
    anna = client_for(ANNA)
    try:
        refuse_inserts(db)
        answer = anna.get("/api/show/person-1")
        assert answer.status_code == 503 and REF not in answer.text
        assert answer.json()["key"] == "read_not_recorded" and answer.json()["exit_code"] == 1
        page = anna.get("/worklist")
        assert page.status_code == 503 and REF not in page.text and "<html" in page.text
        assert "kunne ikke registreres i opslagsloggen" in page.text  # in Danish
        assert "X-Request-ID" in page.headers and page.headers["Cache-Control"] == "no-store"
        exported = anna.get("/fhir/$export", params={"_type": "Patient"})
        assert REF not in exported.text
        assert anna.get("/api/show/case-1").status_code == 200  # what shows no one is answered
    finally:
        db.dispose()
    assert '"event": "read_not_recorded"' in logs() and REF not in logs()


def test_the_reads_page_and_api_are_for_auditors_and_admins(client_for: Any, cli_db: str,
                                                            cli_world: dict[str, str]) -> None:
    db = Database(cli_db)
    try:
        client_for(ANNA).get("/objects/person-1")
        auditor = client_for(AUDITOR)
        page = auditor.get("/reads")
        assert page.status_code == 200 and 'lang="da"' in page.text
        assert "Opslag i personoplysninger" in page.text and 'id="reads"' in page.text
        assert re.search(r"<label>Person <input name=\"person\"", page.text) and "Bruger" in page.text
        assert REF not in page.text and "person-1" in page.text
        page = auditor.get("/reads", params={"by": "person"})
        assert 'id="reads-by-person"' in page.text and 'data-person="person-1"' in page.text
        page = auditor.get("/reads", params={"by": "user", "fra": "03.03.2025", "til": "03.03.2025"})
        assert 'data-user="staff:anna"' in page.text
        assert 'id="reads-link"' in auditor.get("/audit").text  # linked from the auditor's desk
        assert 'id="person-reads"' in auditor.get("/objects/person-1").text
        answer = auditor.get("/api/reads", params={"by": "user"})
        assert answer.status_code == 200 and {i["user"] for i in answer.json()["items"]} >= {ANNA, STAFF}
        assert client_for(ADMIN).get("/api/reads").status_code == 200
        staff = client_for(STAFF)
        before = contents(db)
        refused = staff.get("/reads")
        assert refused.status_code == 403 and 'lang="da"' in refused.text and "person-1" not in refused.text
        assert staff.get("/api/reads").status_code == 403
        assert 'id="reads-link"' not in staff.get("/audit").text
        assert contents(db) == before
    finally:
        db.dispose()


@pytest.mark.parametrize(("query", "field"), [
    ({"fra": "31.02.2025"}, "fra"), ({"til": "someday"}, "til"), ({"fra": "04.03.2025", "til": "03.03.2025"}, "til"),
    ({"person": "case-1"}, "person"), ({"person": "person-99"}, "person"), ({"user": "no-one"}, "user"),
    ({"by": "unit"}, "by"), ({"size": "0"}, "size"), ({"older": "x"}, "older"),
])
def test_a_bad_filter_on_the_reads_page_is_named_at_its_field_and_nothing_written(
        client_for: Any, cli_db: str, cli_world: dict[str, str], query: dict[str, str], field: str) -> None:
    db = Database(cli_db)
    auditor = client_for(AUDITOR)
    try:
        before = contents(db)
        page = auditor.get("/reads", params=query)
        assert page.status_code == 422, page.text[:300]
        assert f'id="error-{field}"' in page.text and "Nogle filtre skal rettes" in page.text
        assert contents(db) == before
    finally:
        db.dispose()


# ---- nothing shows a reference without recording it --------------------------------------------------------

#: A well-formed value for each path parameter of every route that reads (``cli_world`` and what the test adds).
PATH_VALUES = {"object_id": ["person-1", "case-1", "contact-1", "timer-1"], "what": ["persons", "cases", "contacts"],
               "kind": ["case"], "timer_id": ["timer-1"], "seq": ["1"], "document_id": ["document-1"],
               "import_id": ["import-1"], "person_id": ["person-1"], "resource_type": ["Patient"],
               "resource_id": ["person-1"], "name": [STAFF], "unit": ["unit-1"], "op_id": ["case_open"],
               "token_id": ["token-1"], "verb": ["confirm"], "user": [STAFF], "cluster_id": ["cluster-1"],
               "sheet": ["contact", "confirmed"], "fmt": ["svg"]}
#: Routes that need more than their path to answer with data (their query or body), given here.
QUERIES = {"/api/audit/timeline/{object_id}": {}, "/fhir/AuditEvent": {"entity": "case-1"},
           "/api/audit/export": {"format": "jsonl"}, "/audit/as-of": {"object": "case-1", "at": "03.03.2025"}}


def _routes(app: Any) -> list[tuple[str, str]]:
    """Every GET route of the application, its included routers' too (FastAPI keeps those as the routers)."""
    from fastapi.routing import APIRoute

    def walk(routes: Any, prefix: str) -> Iterator[tuple[str, str]]:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:
                yield from walk(included.routes, prefix + route.include_context.prefix)
            elif isinstance(route, APIRoute) and "GET" in route.methods:
                yield "GET", prefix + route.path

    return sorted(set(walk(app.routes, "")))


def test_every_route_that_answers_a_reference_recorded_who_was_shown_it(
        web_app: Any, client_for: Any, cli_db: str, cli_world: dict[str, str], tmp_path: Path,
        logs: Callable[[], str]) -> None:  # noqa: F811
    """Every GET route of the application (the API, FHIR, the pages: read from the app, so a new one is covered),
    as each role, with every well-formed id: an answer that holds a person's reference (or birth date) has a row
    of the read log, in that request, for that person and that user."""
    db = Database(cli_db)
    engine = Engine(db, SimulatedClock(START))
    engine.make_document("case-1", actor=STAFF)
    content = f"CPR;Eksponeringsdato;Kontakttype\n{REF_2};02.03.2025;seksuel\n".encode()
    made = imports.run_import(engine, imports.Request(kind="contacts", content=content, filename="kontakter.csv",
                                                      actor=STAFF, case="case-1"))
    assert made["id"] == "import-1"
    refs = {REF: pk(cli_world["p"]), REF_2: pk(cli_world["q"]), BORN.isoformat(): pk(cli_world["p"])}
    routes = _routes(web_app)
    assert len(routes) >= 40
    driven, showing = set(), set()
    try:
        for role in (ANNA, AUDITOR, ADMIN):
            client = client_for(role)
            for _method, template in routes:
                names = re.findall(r"\{(\w+)\}", template)
                unknown = [n for n in names if n not in PATH_VALUES]
                assert not unknown, f"{template}: give a well-formed {unknown} in PATH_VALUES"
                paths = [template]
                for name in names:
                    paths = [p.replace("{" + name + "}", v) for p in paths for v in PATH_VALUES[name]]
                for path in paths:
                    response = client.get(path, params=QUERIES.get(template, {}))
                    driven.add(template)
                    body = response.text
                    seen = {person for secret, person in refs.items() if secret in body}
                    recorded = {r[1] for r in rows_of(db, response) if r[0] == role}
                    assert seen <= recorded, (role, path, response.status_code, seen, recorded)
                    if seen:
                        showing.add(template)
    finally:
        db.dispose()
    assert driven == {t for _, t in routes}
    # the ones that show a reference, as found: the worklist, lists, objects, FHIR, documents, the import report
    assert {"/api/due", "/api/show/{object_id}", "/api/list/{what}", "/worklist", "/objects/{object_id}",
            "/list/{what}", "/fhir/Patient/{person_id}/$everything", "/fhir/{resource_type}/{resource_id}",
            "/documents/{document_id}", "/import/{import_id}/report"} <= showing


#: Every function of ``engine/`` and ``entry/`` that puts a person's reference (or birth date) into what it makes,
#: and how what it makes reaches the read log: ``records`` (it tells ``Reads`` itself), ``via NAME`` (a helper of
#: NAME, which records), or why it shows no one (``not shown: ...``). A new one fails until it is placed here.
BUILDERS = {
    "engine/views.py:person_view": "via engine/queries.py:show",
    "engine/queries.py:show": "records", "engine/queries.py:_show": "via engine/queries.py:show",
    "engine/queries.py:list": "records", "engine/queries.py:refs": "records",
    "engine/queries.py:_search_result": "via engine/queries.py:search",
    "engine/queries.py:_person_results": "via engine/queries.py:search", "engine/queries.py:search": "records",
    "engine/queries.py:_worklist_item": "via engine/queries.py:_worklist", "engine/queries.py:_worklist": "records",
    "engine/notes.py:hard_to_reach": "records",
    "engine/notification.py:content_of": "via engine/notification.py:make",
    "engine/notification.py:document_bundle": "via engine/notification.py:make",
    "engine/notification.py:_content": "via engine/notification.py:make",
    "engine/notification.py:_contents": "via engine/notification.py:changed_since_sent",
    "engine/notification.py:make": "records", "engine/notification.py:show": "records",
    "engine/notification.py:changed_since_sent": "records",
    "engine/notification.py:document_html": "via engine/notification.py:show",
    "engine/fhir.py:patient": "via engine/fhir.py:read",
    "engine/fhir.py:read": "records", "engine/fhir.py:everything": "records", "engine/fhir.py:export": "records",
    "engine/fhir.py:without_identity": "not shown: it takes the identity out",
    "engine/commands.py:add_person": "via engine/commands.py:_register",
    "engine/commands.py:_register": "records",
    "engine/commands.py:_change_person": "records",
    "engine/webhooks.py:_people": "via engine/webhooks.py:claim", "engine/webhooks.py:claim": "records",
    "engine/imports.py:_load": "not shown: the references of a file mapped to the persons they name",
    "engine/imports.py:_do_row": "not shown: a row's reference looked up",
    "engine/imports.py:report_download": "records",
    "entry/web/pages.py:resolve_person": "via engine/queries.py:search",
    "entry/web/pages.py:shown_refs": "via engine/queries.py:refs",
    "entry/web/pages.py:page_refs": "via engine/queries.py:refs",
    "engine/person_report.py:make": "records",  # its facts (PERSON_FACTS) are read by name
    "engine/retention.py:_plan": "not shown: what a purge removes, listed by column",
    "engine/retention.py:_apply": "not shown: the purge removes them",
}
RECORDS = re.compile(r"reads\.shown\(|showing_as\(|_record_reads\(")
_REF = re.compile(r"""["']ref["']|\.ref\b|person_view\(|\.born\b|["']born["']""")
#: Modules that name the field without showing a person: parsing, the catalog's words, the demo's seed data.
NOT_SHOWING = {"engine/imports.py": {"parse_cell", "known_headers", "_shown_name", "map_columns", "_values",
                                     "_refused", "prepare", "_remember", "named"},
               "engine/commands.py": {"_check_person", "update_person", "correct_person"},
               "entry/web/pages.py": {"create", "_register_from"},
               # a refusal's field named by the file's column
               "entry/web/import_pages.py": {"named", "shown_rows"}}


def _functions(path: Path) -> Iterator[tuple[str, str]]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, ast.get_source_segment(source, node) or ""


def test_every_function_that_builds_a_reference_goes_through_the_recorder() -> None:
    found, bodies = {}, {}
    for folder in ("engine", "entry/web"):
        for path in sorted((ROOT / folder).glob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            for function, body in _functions(path):
                bodies[f"{name}:{function}"] = body
                lines = [line for line in body.splitlines() if not line.strip().startswith(("#", '"""', "'"))]
                code = "\n".join(lines)
                # the function's own code, not a nested function's docstring; strings about the field don't count
                if _REF.search(code) and function not in NOT_SHOWING.get(name, set()):
                    found[f"{name}:{function}"] = body
    unplaced = sorted(set(found) - set(BUILDERS))
    assert unplaced == [], f"these build a person's reference: place them in BUILDERS (record their reads): {unplaced}"
    for name, how in BUILDERS.items():
        if how == "records":
            assert RECORDS.search(bodies[name]), f"{name} should record its reads"
        elif how.startswith("via "):
            target = how.removeprefix("via ")
            assert BUILDERS.get(target) == "records", f"{name}: {target} does not record"
    assert len(found) >= 20
