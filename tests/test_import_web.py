"""The import's pages and API (issue 18): staff upload the messy contact list, read each row's answer in Danish
(ids linked, rule, message naming the file's column), download the report in the file's own format, and find the
import in the history; a bad file is a 4xx on the form with a clear message and changes nothing, never a 500.
"""

from __future__ import annotations

import io
import re
from typing import Any

import openpyxl
import pytest

from engine.imports import read_table
from persistence.database import Database
from tests.helpers import contents
from tests.test_import import EXPECTED, HEADER, messy_csv, messy_xlsx

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def api(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body, headers={"X-CSRF-Token": client.csrf})
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def staff(client_for: Any) -> Any:
    """staff:stps logged in; case-1 (onset 2025-02-10, confirmed by PCR 2025-02-12) consenting to tracing."""
    client = client_for("staff:stps")
    api(client, "/api/persons", {"ref": "CASE-REF-1"})
    api(client, "/api/cases", {"person": "person-1", "onset": "2025-02-10", "confirmed": True,
                               "pcr_on": "2025-02-12"})
    api(client, "/api/cases/case-1/consent", {"tracing": True})
    return client


def upload(client: Any, data: bytes, name: str = "kontakter.csv", media: str = CSV, **fields: str) -> Any:
    form = {"csrf_token": client.csrf, "what": "contacts", "case": "case-1", **fields}
    return client.post("/import", data=form, files={"file": (name, data, media)})


def rows_of(html: str) -> list[tuple[int, str]]:
    return [(int(n), r) for n, r in re.findall(r'<tr data-row="(\d+)" data-result="(\w+)"', html)]


def test_the_form_is_danish_and_linked_from_the_navigation(staff: Any) -> None:
    page = staff.get("/import")
    assert page.status_code == 200
    assert 'href="/import"' in page.text and "Importér fra en fil" in page.text
    assert 'enctype="multipart/form-data"' in page.text and 'name="csrf_token"' in page.text
    assert "Tørkørsel" in page.text
    assert 'href="/import"' in staff.get("/worklist").text


def test_upload_result_and_download_of_the_messy_file(staff: Any) -> None:
    done = upload(staff, messy_csv())
    assert done.status_code == 303 and done.headers["location"] == "/import/import-1"
    page = staff.get("/import/import-1")
    assert page.status_code == 200
    assert rows_of(page.text) == [(r, result) for r, result, *_ in EXPECTED]
    assert '<a href="/objects/contact-1">contact-1</a>' in page.text  # ids linked
    assert "SST-mpox-7.1 §5.1" in page.text
    assert "«Dato for eksponering»" in page.text  # the refused date names its column
    assert "oprettet" in page.text and "afvist" in page.text
    assert 'href="/import/import-1/report"' in page.text
    report = staff.get("/import/import-1/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith(CSV)
    assert "attachment" in report.headers["content-disposition"]
    table = read_table(report.content, "rapport.csv")
    assert table.header == [*HEADER, "Resultat", "Id", "Regel", "Besked"]
    assert [dict(table.rows)[r][7] for r, *_ in EXPECTED] == [e[1] for e in EXPECTED]
    history = staff.get("/imports")
    assert history.status_code == 200 and 'data-import="import-1"' in history.text


def test_an_xlsx_upload_downloads_an_xlsx_report(staff: Any) -> None:
    done = upload(staff, messy_xlsx(), "kontakter.xlsx", XLSX)
    assert done.status_code == 303
    report = staff.get("/import/import-1/report")
    assert report.headers["content-type"] == XLSX
    sheet = openpyxl.load_workbook(io.BytesIO(report.content), read_only=True).worksheets[0]
    header = [c.value for c in next(sheet.iter_rows())]
    assert header == [*HEADER, "Resultat", "Id", "Regel", "Besked"]


def test_a_dry_run_shows_every_answer_and_writes_nothing(staff: Any, cli_db: str) -> None:
    with Database(cli_db) as db:
        before = contents(db)
    page = upload(staff, messy_csv(), dry_run="on")
    assert page.status_code == 200
    assert rows_of(page.text) == [(r, result) for r, result, *_ in EXPECTED]
    assert "intet blev skrevet" in page.text.lower()
    all_or_nothing = upload(staff, messy_csv(), all_or_nothing="on")
    assert all_or_nothing.status_code == 409
    assert rows_of(all_or_nothing.text) == [(r, result) for r, result, *_ in EXPECTED]
    with Database(cli_db) as db:
        assert contents(db) == before


@pytest.mark.parametrize(("data", "fields", "status", "says"), [
    (b"", {}, 422, "er tom"),
    (b"PK\x03\x04not really a workbook", {}, 422, "XLSX"),
    ("CPR;Hvornår;Kontakttype\n1;01.03.2025;husstand\n".encode(), {}, 422, "exposed"),
    (messy_csv(), {"map": "Bemærkning=comment"}, 422, "comment"),
    (messy_csv(), {"case": "case-9"}, 404, "case-9"),
    (messy_csv(), {"what": "vaccines"}, 422, "nære kontakter"),
])
def test_a_bad_file_is_a_4xx_on_the_form_and_changes_nothing(staff: Any, cli_db: str, data: bytes,
                                                             fields: dict[str, str], status: int, says: str) -> None:
    with Database(cli_db) as db:
        before = contents(db)
    page = upload(staff, data, **fields)
    assert page.status_code == status, page.text
    assert says in page.text
    assert 'id="import-form"' in page.text and 'role="alert"' in page.text
    with Database(cli_db) as db:
        assert contents(db) == before


def test_no_file_or_no_csrf_token_changes_nothing(staff: Any, cli_db: str) -> None:
    with Database(cli_db) as db:
        before = contents(db)
    none = staff.post("/import", data={"csrf_token": staff.csrf, "what": "contacts", "case": "case-1"})
    assert none.status_code == 422 and "Vælg filen" in none.text
    forged = staff.post("/import", data={"csrf_token": "forged", "what": "contacts", "case": "case-1"},
                        files={"file": ("k.csv", messy_csv(), CSV)})
    assert forged.status_code == 403
    with Database(cli_db) as db:
        assert contents(db) == before


def test_an_auditor_may_not_import(client_for: Any, staff: Any, cli_db: str) -> None:
    auditor = client_for("auditor:test")
    assert 'href="/import"' not in auditor.get("/worklist").text
    refused = upload(auditor, messy_csv())
    assert refused.status_code == 403
    with Database(cli_db) as db:
        assert contents(db)["contacts"] == []


def test_the_api_answers_what_the_cli_prints(staff: Any) -> None:
    response = staff.post("/api/imports", data={"what": "contacts", "case": "case-1"},
                          files={"file": ("kontakter.csv", messy_csv(), CSV)}, headers={"X-CSRF-Token": staff.csrf})
    assert response.status_code == 200, response.text
    view = response.json()
    assert [(r["row"], r["result"], r["ids"], r["rule"]) for r in view["rows"]] == EXPECTED
    assert view["id"] == "import-1"
    bad = staff.post("/api/imports", data={"what": "contacts", "case": "case-1"},
                     files={"file": ("k.csv", b"", CSV)}, headers={"X-CSRF-Token": staff.csrf})
    assert bad.status_code == 422 and bad.json()["exit_code"] == 2
