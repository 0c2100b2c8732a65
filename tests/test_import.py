"""Bulk import (issue 18): a realistic messy contact list imported through the command line and the engine.

The file has Danish column names, dd.mm.åååå dates (and the other forms staff type), a duplicate row, a row whose
PEP window has closed, health staff with protective equipment (refused without an assessment, allowed with one),
an empty line, a date that does not exist and a byte-order mark. The report says per row what happened; every
created object is the one the typed command makes (same rule, same audit entry); importing again creates nothing;
a dry run writes nothing; XLSX gives what CSV gives; the report file reads back and imports again.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import structlog
from sqlalchemy import select

from engine.core import Engine
from engine.imports import Request, normal, read_table, run_import
from persistence.database import Database
from persistence.models import AuditEntry, Event, Import
from tests.helpers import contents
from tests.test_cli import cli, describe, doc, ok
from workflows.errors import OutsideUnits
from workflows.registry import BY_OPERATION

REFS = ("0101801111", "0202802222", "0303803333", "0404804444", "0505805555", "0606806666")
HEADER = ["CPR-nr.", "Født", "Dato for eksponering", "Kontakttype", "Risiko", "Begrundelse", "Bemærkning"]
#: The messy file's rows (None: an empty line), as the staff of a ward typed them.
ROWS: list[list[str] | None] = [
    ["0101801111", "01.01.1980", "01.03.2025", "husstand", "", "", ""],
    ["0202802222", "", "12.02.2025", "seksuel", "", "", "set last month"],
    None,
    ["0101801111", "01.01.1980", "01.03.2025", "Husstand", "", "", "the same row again"],
    ["0303803333", "", "28.02.2025", "sundhedspersonale med værnemidler", "", "", ""],
    ["0404804444", "", "28-02-2025", "Sundhedspersonale med værnemidler", "lav", "FFP2 og visir hele tiden", ""],
    ["0505805555", "", "27/2/2025", "intakt hud", "", "", ""],
    ["0606806666", "", "31.02.2025", "husstand", "", "", ""],
]
#: What the report says of each row (row number in the file: the header is row 1): result, ids made, rule.
EXPECTED = [
    (2, "created", ["person-2", "contact-1"], None),
    (3, "created", ["person-3", "contact-2"], None),
    (4, "skipped", [], None),
    (5, "present", [], None),
    (6, "refused", [], "SST-mpox-7.1 §5.1"),
    (7, "created", ["person-4", "contact-3"], None),
    (8, "created", ["person-5", "contact-4"], None),
    (9, "refused", [], None),
]


def messy_csv() -> bytes:
    lines = [";".join(HEADER)] + ["" if r is None else ";".join(r) for r in ROWS]
    return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")


def messy_xlsx() -> bytes:
    """The same rows as a workbook, the dates as date cells where they are real dates."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(HEADER)
    for row in ROWS:
        if row is None:
            sheet.append([None] * len(HEADER))
            continue
        cells: list[Any] = list(row)
        try:
            day, month, year = (int(p) for p in row[2].replace("-", ".").replace("/", ".").split("."))
            cells[2] = date(year, month, day)
        except ValueError:
            pass  # 31.02.2025 stays the text it was typed as
        cells[0] = int(row[0])  # a CPR number typed as a number: its leading zero lost
        sheet.append([c if c != "" else None for c in cells])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


@pytest.fixture
def traced(cli_db: str) -> str:
    """person-1 with case-1 (onset 2025-02-10, confirmed by PCR 2025-02-12, consenting to tracing); the clock
    at 2025-03-03 08:00, so an exposure on 2025-02-12 is 19 days ago: its PEP window is closed (§6.2)."""
    ok(cli_db, "person", "add", "--ref", "CASE-REF-1", "--actor", "staff:test")
    ok(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-02-10", "--confirmed", "--pcr-on",
       "2025-02-12", "--actor", "staff:test")
    ok(cli_db, "case", "consent", "case-1", "--tracing", "yes", "--actor", "staff:test")
    return cli_db


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def import_json(url: str, path: str, *extra: str, status: int = 0) -> dict[str, Any]:
    result = cli(url, "import", "contacts", path, "--case", "case-1", "--actor", "staff:stps", *extra, "--json")
    assert result.exit_code == status, describe(result)
    return json.loads(result.stdout)


def answers(view: dict[str, Any]) -> list[tuple[int, str, list[str], str | None]]:
    return [(r["row"], r["result"], r["ids"], r["rule"]) for r in view["rows"]]


def without_import(found: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Every table but the imports and the audit log (an import adds its record and one entry on the user's
    chain), and the users without their chain's head (which moves to that entry)."""
    kept = {k: v for k, v in found.items() if k not in ("imports", "audit_log", "users")}
    kept["users"] = [row[:2] for row in found["users"]]
    return kept


# ---- the messy file through the command line ------------------------------------------------------------------


def test_the_messy_file_gives_the_expected_report(traced: str, tmp_path: Path) -> None:
    view = import_json(traced, write(tmp_path, "kontakter.csv", messy_csv()))
    assert answers(view) == EXPECTED
    assert view["counts"] == {"created": 4, "present": 1, "refused": 2, "skipped": 1, "rows": 8}
    assert view["columns"] == {"CPR-nr.": "ref", "Født": "born", "Dato for eksponering": "exposed",
                               "Kontakttype": "kind", "Risiko": "risk", "Begrundelse": "reason"}
    assert view["ignored"] == ["Bemærkning"]
    rows = {r["row"]: r for r in view["rows"]}
    # The duplicate row found the contact the first made; the closed PEP window is said.
    assert (rows[5]["person"], rows[5]["object"]) == ("person-2", "contact-1")
    assert "PEP window closed" in rows[3]["note"]
    assert doc(traced, "show", "contact-2")["pep_window"] == "closed"
    # Health staff with protective equipment: refused by §5.1 naming the file's columns; allowed with both.
    assert rows[6]["message"].endswith("(SST-mpox-7.1 §5.1)")
    assert '"Risiko"' in rows[6]["message"] and '"Begrundelse"' in rows[6]["message"]
    low = doc(traced, "show", "contact-3")
    assert (low["exposure_kind"], low["risk"]) == ("healthcare_with_ppe", "low")
    # A date that does not exist: refused naming its column, nothing of the row written.
    assert rows[9]["message"].startswith('"Dato for eksponering" \'31.02.2025\' is not a date')
    assert [p["id"] for p in doc(traced, "list", "persons")] == [f"person-{i}" for i in range(1, 6)]
    # Dates as typed: 01.03.2025, 28-02-2025, 27/2/2025; the birth date as dd.mm.åååå.
    assert doc(traced, "show", "contact-1")["exposed_on"] == "2025-03-01"
    assert doc(traced, "show", "contact-4")["exposed_on"] == "2025-02-27"
    assert doc(traced, "show", "person-2")["born"] == "1980-01-01"


def test_every_imported_contact_has_the_audit_entry_the_typed_command_writes(traced: str, tmp_path: Path) -> None:
    import_json(traced, write(tmp_path, "kontakter.csv", messy_csv()))
    [entry] = doc(traced, "audit", "--entity", "contact-1")[:1]
    ok(traced, "person", "add", "--ref", "TYPED-1", "--actor", "staff:stps")
    ok(traced, "contact", "add", "--case", "case-1", "--person", "person-6", "--exposed", "2025-03-01", "--kind",
       "household", "--actor", "staff:stps", "--reason", "bulk import, row 2")
    [typed] = doc(traced, "audit", "--entity", "contact-5")[:1]
    same = ("trigger", "from", "to", "actor", "role", "rule", "reason")
    assert {k: entry[k] for k in same} == {k: typed[k] for k in same}
    assert entry["rule"] == "SST-mpox-7.1 §5.1"


def test_the_import_is_recorded_and_audited_once_on_the_users_chain_without_references(
        traced: str, tmp_path: Path) -> None:
    view = import_json(traced, write(tmp_path, "kontakter.csv", messy_csv()))
    shown = doc(traced, "import", "show", view["id"])
    assert (shown["id"], shown["what"], shown["counts"]) == ("import-1", "contacts", view["counts"])
    assert [(r["row"], r["result"], r["ids"]) for r in shown["rows"]] == [(r[0], r[1], r[2]) for r in EXPECTED]
    with Database(traced) as db, db.reading() as session:
        record = session.scalars(select(Import)).one()
        entries = session.scalars(select(AuditEntry).where(AuditEntry.trigger == "import")).all()
        every = session.scalars(select(AuditEntry)).all()
    assert record.content == messy_csv()  # the file itself, to report on it again
    assert (record.actor, record.dry_run, record.options["case"]) == ("staff:stps", False, "case-1")
    [entry] = entries
    assert (entry.object_kind, entry.actor) == ("user", "staff:stps")
    assert entry.data["import"] == "import-1" and entry.data["counts"] == view["counts"]
    stored = json.dumps(record.report) + json.dumps(record.options)
    for ref in REFS:
        assert ref not in stored
        assert all(ref not in json.dumps([e.data, e.changes, e.reason]) for e in every)


def test_importing_the_file_again_creates_nothing(traced: str, tmp_path: Path) -> None:
    path = write(tmp_path, "kontakter.csv", messy_csv())
    import_json(traced, path)
    with Database(traced) as db:
        before = contents(db)
    again = import_json(traced, path)
    assert [(r["row"], r["result"]) for r in again["rows"]] == [
        (2, "present"), (3, "present"), (4, "skipped"), (5, "present"), (6, "refused"), (7, "present"),
        (8, "present"), (9, "refused")]
    with Database(traced) as db:
        after = contents(db)
    assert without_import(after) == without_import(before)
    # Only the second import's record and its one entry on the user's chain are new.
    assert len(after["imports"]) == len(before["imports"]) + 1
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1


def test_a_dry_run_writes_nothing_and_reports_what_the_real_run_does(traced: str, tmp_path: Path) -> None:
    path = write(tmp_path, "kontakter.csv", messy_csv())
    with Database(traced) as db:
        before = contents(db)
    dry = import_json(traced, path, "--dry-run")
    with Database(traced) as db:
        assert contents(db) == before
    assert (dry["dry_run"], dry["written"], dry["id"]) == (True, False, None)
    real = import_json(traced, path)
    assert answers(dry) == answers(real) == EXPECTED


def test_an_xlsx_file_gives_what_the_csv_gives(traced: str, tmp_path: Path) -> None:
    view = import_json(traced, write(tmp_path, "kontakter.xlsx", messy_xlsx()))
    assert view["format"] == "xlsx"
    assert answers(view) == EXPECTED
    assert doc(traced, "show", "contact-4")["exposed_on"] == "2025-02-27"
    # The reference typed as a number is the same reference: the CSV finds every person already there.
    again = import_json(traced, write(tmp_path, "kontakter.csv", messy_csv()))
    assert [r["result"] for r in again["rows"]].count("created") == 0


@pytest.mark.parametrize("name", ["kontakter.csv", "kontakter.xlsx"])
def test_the_report_file_reads_back_and_imports_again(traced: str, tmp_path: Path, name: str) -> None:
    data = messy_csv() if name.endswith(".csv") else messy_xlsx()
    out = tmp_path / ("rapport" + Path(name).suffix)
    import_json(traced, write(tmp_path, name, data), "--report", str(out))
    table = read_table(out.read_bytes(), out.name)
    assert table.format == Path(name).suffix[1:]
    assert table.header == [*HEADER, "Resultat", "Id", "Regel", "Besked"]
    by_row = {number: cells for number, cells in table.rows}
    assert [by_row[r][7] for r, *_ in EXPECTED] == [e[1] for e in EXPECTED]
    assert by_row[6][10].endswith("(SST-mpox-7.1 §5.1)") and by_row[6][9] == "SST-mpox-7.1 §5.1"
    assert by_row[2][8] == "person-2 contact-1" and by_row[2][9] in ("", None)
    # The row as it was (a workbook's reference typed as a number stays one).
    assert str(by_row[2][0]).zfill(10) == "0101801111" and by_row[2][3] == "husstand"
    if name.endswith(".csv"):
        raw = out.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf")  # the BOM kept, and the ';'
        assert next(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))[-4:] == [
            "Resultat", "Id", "Regel", "Besked"]
    # The user corrects the refused rows in the report and imports it again: only those are new.
    again = import_json(traced, str(out))
    assert [r["result"] for r in again["rows"]].count("created") == 0
    assert [r["row"] for r in again["rows"] if r["result"] == "refused"] == [6, 9]
    # The same report again, from the stored import.
    stored = tmp_path / ("stored" + Path(name).suffix)
    ok(traced, "import", "show", "import-1", "--report", str(stored))
    assert read_table(stored.read_bytes(), stored.name).rows == table.rows


def test_all_or_nothing_writes_nothing_when_a_row_is_refused_and_answers_every_row(
        traced: str, tmp_path: Path) -> None:
    path = write(tmp_path, "kontakter.csv", messy_csv())
    with Database(traced) as db:
        before = contents(db)
    view = import_json(traced, path, "--all-or-nothing", status=3)
    assert answers(view) == EXPECTED
    assert (view["written"], view["id"]) == (False, None)
    with Database(traced) as db:
        assert contents(db) == before
    # Without the refused rows, all of it is written in one transaction.
    good = [r for r in ROWS if r is None or r[0] not in ("0303803333", "0606806666")]
    lines = [";".join(HEADER)] + ["" if r is None else ";".join(r) for r in good]
    view = import_json(traced, write(tmp_path, "good.csv", "\n".join(lines).encode()), "--all-or-nothing")
    assert (view["written"], view["id"], view["counts"]["created"]) == (True, "import-1", 4)


def test_a_bad_mapping_or_a_missing_column_is_exit_2_and_changes_nothing(traced: str, tmp_path: Path) -> None:
    path = write(tmp_path, "kontakter.csv", messy_csv())
    with Database(traced) as db:
        before = contents(db)
    unknown = cli(traced, "import", "contacts", path, "--case", "case-1", "--map", "Bemærkning=comment")
    assert unknown.exit_code == 2, describe(unknown)
    assert "--map Bemærkning=comment" in unknown.stderr and "'comment'" in unknown.stderr
    no_column = cli(traced, "import", "contacts", path, "--case", "case-1", "--map", "Dato=exposed")
    assert no_column.exit_code == 2 and "the file has no column 'Dato'" in no_column.stderr
    missing = write(tmp_path, "uden.csv", "CPR;Hvornår;Kontakttype\n0101801111;01.03.2025;husstand\n".encode())
    result = cli(traced, "import", "contacts", missing, "--case", "case-1")
    assert result.exit_code == 2, describe(result)
    assert "no column for exposed" in result.stderr and '--map "Your column=exposed"' in result.stderr
    # Mapped, the same file imports.
    mapped = import_json(traced, missing, "--map", "Hvornår=exposed")
    assert mapped["counts"]["created"] == 1
    with Database(traced) as db:
        after = contents(db)
    assert len(after["contacts"]) == len(before["contacts"]) + 1
    unknown_case = cli(traced, "import", "contacts", path, "--case", "case-9")
    assert unknown_case.exit_code == 4, describe(unknown_case)
    no_case = cli(traced, "import", "contacts", path)
    assert no_case.exit_code == 2 and "--case" in no_case.stderr
    empty = cli(traced, "import", "contacts", write(tmp_path, "tom.csv", b""), "--case", "case-1", "--json")
    assert empty.exit_code == 2 and json.loads(empty.stdout)["exit_code"] == 2
    old = cli(traced, "import", "contacts", write(tmp_path, "gammel.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),
              "--case", "case-1")
    assert old.exit_code == 2 and "save it as .xlsx or as CSV" in old.stderr
    assert cli(traced, "import", "show", "import-9").exit_code == 4
    assert cli(traced, "import", "contacts", str(tmp_path / "none.csv"), "--case", "case-1").exit_code == 2


def test_the_summary_line_and_the_help_say_what_the_exit_status_means(traced: str, tmp_path: Path) -> None:
    result = ok(traced, "import", "contacts", write(tmp_path, "k.csv", messy_csv()), "--case", "case-1",
                "--actor", "staff:stps")
    assert result.stdout.strip().splitlines()[-1] == "import-1: 4 created, 1 already present, 2 refused, 1 skipped"
    assert "row 6: refused:" in result.stdout
    assert "progress" not in result.stderr and "importing" not in result.stderr  # no bar off a terminal
    helped = ok(traced, "import", "contacts", "--help")
    assert "Exit 0 when the import ran, even with refused rows" in helped.stdout


def test_persons_and_cases_import_through_their_commands(traced: str, tmp_path: Path) -> None:
    persons = ("Personnummer,Fødselsdato,Gravid\n1111111111,1990-05-01,ja\n2222222222,3/4/1985,nej\n"
               "CASE-REF-1,,\n")
    view = doc(traced, "import", "persons", write(tmp_path, "p.csv", persons.encode("cp1252")), "--actor",
               "staff:test")
    assert [(r["result"], r["ids"]) for r in view["rows"]] == [
        ("created", ["person-2"]), ("created", ["person-3"]), ("present", [])]
    assert doc(traced, "show", "person-2")["pregnant"] is True
    cases = ("CPR;Symptomdebut;Symptomer;Kriterier;Bekræftet;PCR-dato\n"
             "1111111111;01.03.2025;udslæt, feber;msm;;\n"
             "2222222222;;;;ja;02.03.2025\n"
             "1111111111;01.03.2025;udslæt;msm;;\n"
             "3333333333;01.03.2025;feber;;;\n")
    view = doc(traced, "import", "cases", write(tmp_path, "c.csv", cases.encode()), "--actor", "staff:test")
    assert [r["result"] for r in view["rows"]] == ["created", "created", "present", "refused"]
    assert view["rows"][3]["rule"] == "SST-mpox-7.1 §1.1"
    assert doc(traced, "show", "case-2")["symptoms"] == ["rash", "fever"]
    assert doc(traced, "show", "case-3")["state"] == "confirmed"
    assert doc(traced, "list", "persons")[-1]["id"] == "person-3"  # the refused row's person was not kept


# ---- reading files and headers ----------------------------------------------------------------------------------


def test_headers_compare_without_case_accents_spaces_or_punctuation() -> None:
    assert normal("CPR-nr.") == "cprnr" and normal(" Født ") == "fodt"
    assert normal("Sundhedspersonale med værnemidler") == "sundhedspersonalemedvaernemidler"


def test_a_windows_1252_file_with_commas_reads() -> None:
    table = read_table("CPR,Født\n1,01.02.2003\n".encode("cp1252"), "x.csv")
    assert (table.delimiter, table.encoding, table.header, table.rows) == (
        ",", "cp1252", ["CPR", "Født"], [(2, ["1", "01.02.2003"])])


# ---- the storage, on both backends ------------------------------------------------------------------------------


@pytest.fixture
def case_engine(engine: Engine) -> Engine:
    pid = engine.add_person(ref="CASE-REF-1", actor="staff:test")["id"]
    trigger, data = BY_OPERATION["case open"].prepare({"person": pid, "onset": date(2025, 2, 10), "confirmed": True,
                                                 "pcr_on": date(2025, 2, 12)})
    data.pop("person", None)
    assert trigger is not None
    case = engine.open("case", trigger, person=pid, actor="staff:test", data=data)
    engine.apply(case["id"], "consent", data={"tracing": True}, actor="staff:test")
    return engine


def _request(**options: Any) -> Request:
    return Request(kind="contacts", content=messy_csv(), filename="kontakter.csv", actor="staff:stps",
                   case="case-1", **options)


@pytest.mark.both_backends
def test_storage_dry_run_all_or_nothing_and_reimport_on_both_backends(case_engine: Engine, db: Database) -> None:
    before = contents(db)
    with structlog.testing.capture_logs() as events:
        dry = run_import(case_engine, _request(dry_run=True))
        refused = run_import(case_engine, _request(all_or_nothing=True))
    assert contents(db) == before
    assert [r["result"] for r in dry["rows"]] == [r["result"] for r in refused["rows"]] == [e[1] for e in EXPECTED]
    with structlog.testing.capture_logs() as more:
        real = run_import(case_engine, _request())
    assert [r["result"] for r in real["rows"]] == [e[1] for e in EXPECTED]
    created = [i for r in real["rows"] for i in r["ids"]]
    assert {case_engine.show(i)["id"] for i in created} == set(created)
    middle = contents(db)
    again = run_import(case_engine, _request())
    assert again["counts"]["created"] == 0
    assert without_import(contents(db)) == without_import(middle)
    for ref in REFS:
        assert ref not in repr(events) + repr(more)
    with db.reading() as session:
        entries = session.scalars(select(AuditEntry)).all()
    assert all(ref not in json.dumps([e.data, e.changes, e.reason]) for e in entries for ref in REFS)
    assert case_engine.audit_verify()["intact"]
    assert case_engine.audit_replay()["matches"]


@pytest.mark.both_backends
def test_imported_rows_make_the_events_the_typed_commands_make_and_refused_or_dry_rows_none(
        case_engine: Engine, db: Database) -> None:
    """Each row runs in a savepoint of the import's transaction (``engine.uow.batch``): the events of its units of
    work are the batch's, committed with it; a refused row's and a dry run's are gone with their savepoint."""
    def contact_events() -> list[tuple[str, int, str]]:
        with db.reading() as session:
            return [(e.type, e.object_id, e.trigger) for e in session.scalars(
                select(Event).where(Event.object_kind == "contact").order_by(Event.seq))]

    run_import(case_engine, _request(dry_run=True))
    assert contact_events() == []
    real = run_import(case_engine, _request())
    created = sorted(int(i.split("-")[1]) for r in real["rows"] if r["result"] == "created"
                     for i in r["ids"] if i.startswith("contact-"))
    assert created and real["counts"]["refused"] > 0
    # One creation event per imported contact, in the order the rows were imported, and nothing else.
    assert [(object_id, trigger) for _, object_id, trigger in contact_events()] == [(pk, "add") for pk in created]
    state = case_engine.show(f"contact-{created[0]}")["state"]
    assert {kind for kind, _, _ in contact_events()} == {f"contact.{state}"}
    run_import(case_engine, _request())  # again: all present, no new event
    assert len(contact_events()) == len(created)


def test_a_column_left_out_with_an_empty_mapping(traced: str, tmp_path: Path) -> None:
    view = import_json(traced, write(tmp_path, "kontakter.csv", messy_csv()), "--map", "risiko=", "--dry-run")
    assert "Risiko" not in view["columns"]
    rows = {r["row"]: r for r in view["rows"]}
    # Without its assessment, the health worker with protective equipment is refused too (§5.1).
    assert (rows[7]["result"], rows[7]["rule"]) == ("refused", "SST-mpox-7.1 §5.1")


def test_contacts_of_a_case_outside_the_importers_units_are_refused_once(engine: Engine, db: Database) -> None:
    from tests.test_units import case_of, tree

    tree(engine)
    case = case_of(engine, "member:sj", "SJ-1")
    before = contents(db)
    request = Request(kind="contacts", content=messy_csv(), filename="kontakter.csv", actor="member:h", case=case)
    with pytest.raises(OutsideUnits):
        run_import(engine, request)
    after = contents(db)
    # Nothing written but the refusal, once, on the importer's own chain.
    assert without_import(after) == without_import(before) and after["imports"] == []
    new = after["audit_log"][len(before["audit_log"]):]
    assert len(new) == 1
