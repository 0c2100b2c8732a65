"""The auditor's desk as an auditor uses it: the log filtered by Danish dates (whole Danish days, across the change
to summer time), by object, trigger and actor (pickers of what the log holds), paged newest first; an entry's
detail with its changes before and after and its hashes; an object as it was; the checks; and the export of the
filtered view in each format, with no personal data in any of them. A history made through the engine on the
simulated clock; read through the pages over SQLite.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import openpyxl
import pytest

from engine.core import Engine
from entry.web import i18n
from persistence.database import Database
from tests.helpers import contents
from workflows.calendar import DANISH, local_date

STAFF = "staff:test"
DOCTOR = "doctor:lund"
NURSE = "nurse:holm"
AUDITOR = "auditor:test"
#: Personal data the history holds and no export may: the persons' references and birth dates.
REFS = ("REF-DESK-CASE", "REF-DESK-CONTACT")
BORN = date(1985, 4, 12)

Client = Any
ClientFor = Callable[..., Client]


def at(text: str) -> datetime:
    """A Copenhagen wall-clock time, ``2025-03-30 12:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=DANISH)


@pytest.fixture
def client_for(client_for: ClientFor) -> ClientFor:
    """The conftest's clients with a browser that asks for English: these tests are about the desk's behaviour,
    read in English (the Danish pages are tests/test_i18n.py's), as tests/test_web_pages.py reads its pages."""
    def make(*args: Any, **kwargs: Any) -> Any:
        client = client_for(*args, **kwargs)
        client.headers["Accept-Language"] = "en"
        return client

    return make


@pytest.fixture
def db(cli_db: str) -> Iterator[Database]:
    database = Database(cli_db)
    yield database
    database.dispose()


@pytest.fixture
def history(client_for: ClientFor) -> Engine:
    """A case and a contact around the night summer time began (30.03.2025, 02:00 became 03:00), each step at
    its own instant of the simulated clock: entries just before and just after the Danish midnights, which the
    UTC dates put on other days."""
    engine: Engine = client_for().app.state.web.engine()
    clock = engine.simulated_clock

    def step(when: str) -> Engine:
        clock.set(at(when))
        return engine

    case_person = step("2025-03-29 23:30").add_person(ref=REFS[0], born=BORN, actor=STAFF)["id"]
    case = step("2025-03-30 00:30").open("case", "open", person=case_person, actor=STAFF, data={
        "onset": date(2025, 3, 28), "symptoms": ["rash", "fever"], "criteria": ["msm"]})["id"]
    step("2025-03-30 12:00").apply(case, "confirm", data={"pcr_on": date(2025, 3, 30)}, actor=DOCTOR)
    contact_person = step("2025-03-30 23:30").add_person(ref=REFS[1], born=BORN, actor=NURSE)["id"]
    step("2025-03-31 00:30").apply(case, "consent", data={"tracing": True}, actor=STAFF)
    step("2025-03-31 10:00").open("contact", "add", person=contact_person, actor=STAFF, data={
        "case": case, "exposed": date(2025, 3, 29), "kind": "household", "risk": None, "reason": None,
        "anonymous_via_doctor": False})
    step("2025-03-31 11:00").update_person(contact_person, changes={"pregnant": True}, actor=NURSE,
                                           reason="told by phone")
    engine.save_clock()
    assert (case, case_person, contact_person) == ("case-1", "person-1", "person-2")
    return engine


# ---- reading the desk ----------------------------------------------------------------------------------------


def seqs_on(page: str) -> list[int]:
    """The sequence numbers of the entries the page lists, in its order."""
    table = re.search(r'<table id="entries">.*?</table>', page, re.S)
    assert table is not None, page
    return [int(s) for s in re.findall(r'<tr data-seq="(\d+)">', table.group(0))]


def options(page: str, select_id: str) -> list[str]:
    found = re.search(rf'<select[^>]*id="{select_id}"[^>]*>(.*?)</select>', page, re.S)
    assert found is not None, page
    return [html.unescape(v) for v in re.findall(r'<option value="([^"]*)"', found.group(1)) if v]


def link(page: str, link_id: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" id="{link_id}"', page)
    return html.unescape(found.group(1)) if found else None


def field_error(page: str, name: str) -> str | None:
    found = re.search(rf'<div class="field-error" id="error-{name}">(.*?)</div>', page, re.S)
    return html.unescape(found.group(1)).strip() if found else None


def shown_text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def entries_of(engine: Engine, day: date | None = None) -> list[dict[str, Any]]:
    """Every entry of the log (of one Danish day), by sequence number, as the engine reads them."""
    return [e for e in engine.audit()
            if day is None or local_date(datetime.fromisoformat(e["at"])) == day]


def cell(page: str, cell_id: str) -> str:
    found = re.search(rf'<td[^>]*id="{cell_id}"[^>]*>(.*?)</td>', page, re.S)
    assert found is not None, cell_id
    return shown_text(found.group(1))


# ---- filters -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fra", "til"), [("30.03.2025", "30.03.2025"), ("2025-03-30", "2025-03-30"),
                                          ("30.3.2025", "30.03.2025")])
def test_a_danish_day_filter_picks_exactly_the_entries_of_that_day_across_the_change_to_summer_time(
        client_for: ClientFor, history: Engine, fra: str, til: str) -> None:
    auditor = client_for(AUDITOR)
    page = auditor.get("/audit", params={"fra": fra, "til": til, "size": "200"})
    assert page.status_code == 200
    expected = entries_of(history, date(2025, 3, 30))
    # the case opened at 00:30 (23:30 UTC the day before) and the person registered at 23:30 (21:30 UTC) count;
    # the person registered at 23:30 the evening before, and the consent at 00:30 the morning after, do not
    assert [(e["object"], e["trigger"]) for e in expected] == [("case-1", "open"), ("case-1", "confirm"),
                                                               ("person-2", "register")]
    assert seqs_on(page.text) == [e["seq"] for e in reversed(expected)]
    assert 'value="' + fra + '"' in page.text  # the form keeps what was typed


def test_from_a_day_on_and_up_to_an_instant(client_for: ClientFor, history: Engine) -> None:
    auditor = client_for(AUDITOR)
    later = auditor.get("/audit", params={"fra": "31.03.2025", "size": "200"}).text
    assert seqs_on(later) == [e["seq"] for e in reversed(entries_of(history, date(2025, 3, 31)))]
    # (the auditor's login is audited too, at the clock's instant)
    assert [history.audit_entry(s)["trigger"] for s in seqs_on(later)] == ["login", "update", "add", "consent"]
    # an instant is itself, inclusive: 30.03 12:00 takes the confirm, not what followed
    until = auditor.get("/audit", params={"fra": "30.03.2025", "til": "30.03.2025 12.00"}).text
    assert [history.audit_entry(s)["trigger"] for s in seqs_on(until)] == ["confirm", "open"]
    iso = auditor.get("/audit", params={"fra": "2025-03-30T12:00:00+02:00", "til": "2025-03-30T12:00:00+02:00"})
    assert [history.audit_entry(s)["trigger"] for s in seqs_on(iso.text)] == ["confirm"]


@pytest.mark.parametrize(("params", "field"), [
    ({"fra": "32.03.2025"}, "fra"), ({"til": "30/03/2025"}, "til"), ({"fra": "i går"}, "fra"),
    ({"fra": "31.03.2025", "til": "30.03.2025"}, "til"), ({"entity": "sag 3"}, "entity"), ({"size": "0"}, "size"),
    ({"fra": "31.12.9999"}, "fra"),
])
def test_a_bad_filter_is_a_message_at_its_field_with_422_and_the_form_as_typed(
        client_for: ClientFor, history: Engine, params: dict[str, str], field: str) -> None:
    auditor = client_for(AUDITOR)
    response = auditor.get("/audit", params=params)
    assert response.status_code == 422
    # the desk, not an error page in its place
    assert 'id="audit-filters"' in response.text and "<h1>Audit log</h1>" in response.text
    message = field_error(response.text, field)
    assert message, response.text
    assert [f for f in ("entity", "fra", "til", "size") if field_error(response.text, f)] == [field]
    assert f'aria-describedby="error-{field}"' in response.text
    for value in params.values():
        assert f'value="{html.escape(value)}"' in response.text
    assert 'id="entries"' not in response.text  # no unfiltered list passed off as the filtered one
    # the export refuses the same filters the same way
    export = auditor.get("/audit/export", params={**params, "format": "csv"})
    assert export.status_code == 422 and field_error(export.text, field) == message


def test_the_pickers_list_the_triggers_and_actors_the_log_holds_and_filter_by_them(
        client_for: ClientFor, history: Engine) -> None:
    auditor = client_for(AUDITOR)
    page = auditor.get("/audit").text
    everything = entries_of(history)
    assert options(page, "trigger-picker") == sorted({e["trigger"] for e in everything})
    assert options(page, "actor-picker") == sorted({e["actor"] for e in everything})
    assert {"open", "confirm", "consent", "add", "register", "update"} <= set(options(page, "trigger-picker"))
    assert {STAFF, DOCTOR, NURSE} <= set(options(page, "actor-picker"))

    by_nurse = auditor.get("/audit", params={"actor": NURSE}).text
    assert seqs_on(by_nurse) == [e["seq"] for e in reversed(everything) if e["actor"] == NURSE]
    assert re.search(rf'<option value="{NURSE}" selected>', by_nurse)
    confirms = auditor.get("/audit", params={"trigger": "confirm", "entity": "case-1"}).text
    assert [history.audit_entry(s)["actor"] for s in seqs_on(confirms)] == [DOCTOR]


def test_paging_newest_first_visits_every_entry_once_forwards_and_back(client_for: ClientFor,
                                                                      history: Engine) -> None:
    auditor = client_for(AUDITOR)
    everything = [e["seq"] for e in reversed(entries_of(history))]
    assert len(everything) > 7
    pages: list[list[int]] = []
    path: str | None = "/audit?size=3"
    while path is not None:
        page = auditor.get(path)
        assert page.status_code == 200
        pages.append(seqs_on(page.text))
        assert len(pages) <= len(everything)
        path = link(page.text, "older")
    assert [s for p in pages for s in p] == everything
    assert all(len(p) == 3 for p in pages[:-1]) and 1 <= len(pages[-1]) <= 3
    assert link(auditor.get("/audit?size=3").text, "newer") is None  # the first page has no previous one
    # back from the last page, page by page
    back = [pages[-1]]
    path = link(auditor.get(f"/audit?size=3&older={pages[-2][-1]}").text, "newer")
    while path is not None:
        page = auditor.get(path).text
        back.append(seqs_on(page))
        path = link(page, "newer")
    assert [s for p in reversed(back) for s in p] == everything
    # the filters stay on every page
    filtered = auditor.get("/audit", params={"entity": "case-1", "size": "1"}).text
    older = link(filtered, "older")
    assert older is not None and parse_qs(urlsplit(older).query)["entity"] == ["case-1"]
    assert auditor.get("/audit", params={"older": "x1"}).status_code == 422


# ---- one entry, an object as it was --------------------------------------------------------------------------


def test_an_entrys_detail_shows_its_changes_before_and_after_and_its_hashes(client_for: ClientFor,
                                                                            history: Engine) -> None:
    auditor = client_for(AUDITOR)
    everything = {e["seq"]: e for e in entries_of(history)}
    [update] = [e for e in everything.values() if e["trigger"] == "update"]
    page = auditor.get(f"/audit/entries/{update['seq']}")
    assert page.status_code == 200
    row = re.search(r'<tr data-field="pregnant">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert re.search(r'class="before">\s*no\s*<', row.group(1)) and re.search(r'class="after">\s*yes\s*<', row.group(1))
    assert cell(page.text, "reason") == "told by phone" and cell(page.text, "actor") == f"{NURSE} (staff)"
    assert re.search(rf'<code id="hash">{update["hash"]}</code>', page.text)
    previous = everything[update["prev_seq"]]  # the person's registration
    assert re.search(rf'<code id="prev-hash">{previous["hash"]}</code>', page.text)
    assert link(page.text, "prev-entry") == f"/audit/entries/{previous['seq']}"
    assert "matches the entry's content" in page.text

    [confirm] = [e for e in everything.values() if e["trigger"] == "confirm"]
    page = auditor.get(f"/audit/entries/{confirm['seq']}").text
    assert cell(page, "state-change") == "suspected → confirmed"
    assert cell(page, "rule") == confirm["rule"] and confirm["rule"].startswith("SST-mpox-7.1")
    pcr = re.search(r'<tr data-field="pcr_on">(.*?)</tr>', page, re.S)
    assert pcr is not None and "–" in shown_text(pcr.group(1)) and "30.03.2025" in shown_text(pcr.group(1))
    armed = re.search(r'<table id="timers-armed">(.*?)</table>', page, re.S)
    assert armed is not None
    # Each armed timer by its English name (``phone_notification_due``: "phone notification to STPS due").
    i18n.activate("en")
    try:
        named = {i18n.trigger(t["name"]) for t in confirm["timers_armed"]}
    finally:
        i18n.activate(None)
    assert "phone notification to STPS due" in named
    cells = {shown_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", armed.group(1), re.S)}
    assert named <= cells and not re.search(r"\b\w+_due\b", shown_text(armed.group(1)))
    assert link(page, "as-of-here") is not None
    assert auditor.get("/audit/entries/99999").status_code == 404


def test_the_object_as_of_an_instant_shows_its_earlier_state(client_for: ClientFor, history: Engine) -> None:
    auditor = client_for(AUDITOR)
    before = auditor.get("/audit/as-of", params={"object": "case-1", "at": "30.03.2025 06.00"})
    assert before.status_code == 200
    assert re.search(r'id="state">suspected<', before.text)
    assert not re.search(r'data-fact="pcr_on"', before.text)
    after = auditor.get("/audit/as-of", params={"object": "case-1", "at": "30.03.2025"}).text  # the day's end
    assert re.search(r'id="state">confirmed<', after)
    assert "30.03.2025" in shown_text(re.search(r'<tr data-fact="pcr_on">(.*?)</tr>', after, re.S).group(1))  # type: ignore[union-attr]
    # not yet then; not an object; not a date: a message at the field
    early = auditor.get("/audit/as-of", params={"object": "case-1", "at": "29.03.2025"})
    assert early.status_code == 404 and "did not exist yet" in (field_error(early.text, "at") or "")
    person = auditor.get("/audit/as-of", params={"object": "person-1", "at": "31.03.2025"})
    assert person.status_code == 422 and field_error(person.text, "object")
    wrong = auditor.get("/audit/as-of", params={"object": "case-1", "at": "31.13.2025"})
    assert wrong.status_code == 422 and field_error(wrong.text, "at") and 'id="audit-as-of"' in wrong.text


def test_the_checks_verify_and_replay_show_their_results(client_for: ClientFor, history: Engine) -> None:
    auditor = client_for(AUDITOR)
    page = auditor.get("/audit", params={"verify": "1", "replay": "1", "entity": "case-1"}).text
    verified = re.search(r'<div class="flash" id="verify-result">(.*?)</div>', page, re.S)
    assert verified is not None and "every hash chain whole" in verified.group(1)
    replayed = re.search(r'<div class="flash" id="replay-result">(.*?)</div>', page, re.S)
    assert replayed is not None and "exactly as the tables hold them" in replayed.group(1)
    assert seqs_on(page)  # the filtered list beside them


# ---- exports -------------------------------------------------------------------------------------------------


def exported_seqs(fmt: str, body: bytes) -> list[int]:
    if fmt == "jsonl":
        lines = body.decode().splitlines()
        assert json.loads(lines[0])["mpoxflow_audit_export"] == 1
        return [json.loads(line)["seq"] for line in lines[1:]]
    if fmt == "csv":
        return [int(r["seq"]) for r in csv.DictReader(io.StringIO(body.decode()))]
    if fmt == "excel-csv":
        assert body.startswith(b"\xef\xbb\xbf")
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline=""), delimiter=";"))
        return [int(r["seq"]) for r in rows]
    sheet = openpyxl.load_workbook(io.BytesIO(body), read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == "seq"
    return [int(r[0]) for r in rows[1:]]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "excel-csv", "xlsx"])
def test_an_export_of_the_filtered_view_holds_exactly_its_entries(client_for: ClientFor, history: Engine,
                                                                  fmt: str) -> None:
    auditor = client_for(AUDITOR)
    day = [e["seq"] for e in entries_of(history, date(2025, 3, 30))]
    page = auditor.get("/audit", params={"fra": "30.03.2025", "til": "30.03.2025"}).text
    href = re.search(rf'<a href="([^"]+)" data-format="{fmt}"', page)
    assert href is not None
    response = auditor.get(html.unescape(href.group(1)))
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    assert exported_seqs(fmt, response.content) == day  # oldest first, the whole view (not a page of it)
    # the API's export with the same filters
    api = auditor.get("/api/audit/export", params={"format": fmt, "since": "30.03.2025", "until": "2025-03-30"})
    assert api.status_code == 200 and exported_seqs(fmt, api.content) == day
    by_actor = auditor.get("/audit/export", params={"format": fmt, "actor": NURSE})
    assert exported_seqs(fmt, by_actor.content) == [e["seq"] for e in entries_of(history) if e["actor"] == NURSE]


def test_the_excel_exports_use_semicolons_a_bom_and_danish_dates(client_for: ClientFor, history: Engine) -> None:
    auditor = client_for(AUDITOR)
    [confirm] = [e for e in entries_of(history) if e["trigger"] == "confirm"]
    body = auditor.get("/audit/export", params={"format": "excel-csv", "trigger": "confirm"}).content
    assert body.startswith(b"\xef\xbb\xbfseq;format;object_kind;")
    [row] = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert row["at"] == "30.03.2025 12:00:00" and row["object_id"] == "1" and row["hash"] == confirm["hash"]
    assert json.loads(row["changes"])["pcr_on"] == "2025-03-30"
    workbook = auditor.get("/audit/export", params={"format": "xlsx", "trigger": "confirm"}).content
    sheet = openpyxl.load_workbook(io.BytesIO(workbook)).active
    header = [c.value for c in sheet[1]]
    values = dict(zip(header, [c for c in sheet[2]], strict=True))
    # a Danish wall-clock time (Excel holds no offsets)
    assert values["at"].value == at("2025-03-30 12:00").replace(tzinfo=None)
    assert values["at"].number_format == "dd.mm.yyyy hh:mm:ss"
    assert values["hash"].value == confirm["hash"] and values["seq"].value == confirm["seq"]


def test_no_export_holds_personal_data(client_for: ClientFor, history: Engine) -> None:
    auditor = client_for(AUDITOR)
    for fmt in ("jsonl", "csv", "excel-csv", "xlsx"):
        body = auditor.get("/audit/export", params={"format": fmt}).content
        if fmt == "xlsx":
            sheet = openpyxl.load_workbook(io.BytesIO(body), read_only=True).active
            content = "\n".join(str(v) for row in sheet.iter_rows(values_only=True) for v in row)
            assert len(list(sheet.iter_rows())) == len(entries_of(history)) + 1
        else:
            content = body.decode("utf-8-sig")
        # The birth year alone, as a word of its own (not inside a hash, where any four digits may occur).
        assert not re.search(rf"(?<![0-9a-f]){BORN.year}(?![0-9a-f])", content), fmt
        for secret in (*REFS, BORN.isoformat(), BORN.strftime("%d.%m.%Y")):
            assert secret not in content, (fmt, secret)
        assert "register" in content and "pregnant" in content  # the persons' entries are there, their flags only


# ---- roles ---------------------------------------------------------------------------------------------------


def test_an_auditor_uses_the_whole_desk_and_changes_nothing(client_for: ClientFor, history: Engine,
                                                           db: Database) -> None:
    auditor = client_for(AUDITOR)
    seq = entries_of(history)[-1]["seq"]
    before = contents(db)
    for path in ("/audit", "/audit?fra=30.03.2025&til=30.03.2025&trigger=open", "/audit?verify=1&replay=1",
                 f"/audit/entries/{seq}", "/audit/as-of", "/audit/as-of?object=case-1&at=30.03.2025+12.00",
                 "/audit/export?format=xlsx", "/audit?fra=nonsense"):
        response = auditor.get(path)
        assert response.status_code in (200, 422), path
        if response.headers["content-type"].startswith("text/html"):
            assert re.findall(r'<form method="post" action="([^"]+)"', response.text) == ["/search", "/logout"], path
    assert contents(db) == before
    # staff read the same desk
    assert seqs_on(client_for(STAFF).get("/audit", params={"size": "200"}).text) == \
        [e["seq"] for e in reversed(entries_of(history))]
    # nobody logged in reads nothing
    assert client_for().get("/audit/entries/1").status_code == 303
    assert client_for().get("/audit/export").status_code == 303
