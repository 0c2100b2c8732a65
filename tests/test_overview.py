"""The outbreak at a glance (issue 21 item 1): the overview's numbers against values worked out by hand from a known
population (both backends), across the change to summer time, for the reader's units only; the CSV; the page
(Danish, with its figures and tables, under the CSP); ``mpoxflow report`` writing the files.

The population, built at START (Monday 3 March 2025, 08:00 Copenhagen, ISO week 10) and looked at on Wednesday 5
March 09:00 (the timers due meanwhile fired):

* case A confirmed, onset Wednesday 19 February (week 8), clade IIb; its contact c1 exposed that day, never informed
  (its ``inform_due`` missed on 4 March), monitoring ending at 00:00 on 13 March (last day the 12th), its PEP window
  closing at 00:00 on 6 March (within 72 hours);
* case B suspected, onset Saturday 1 March (week 9); case C confirmed, onset 1 March, no clade; its contact c2
  exposed 2 March, informed, monitoring ending at 00:00 on 24 March (last day the 23rd), PEP window 00:00 17 March;
* two PrEP courses given dose 1 on 10 February (dose 2 due 10 March) and one on 3 March (dose 2 due 31 March).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.core import Engine
from engine.overview import NAMES, Overview, csv_text, iso_week
from tests.helpers import confirmed, person, suspected

DANISH = ZoneInfo("Europe/Copenhagen")
D = date.fromisoformat
STAFF = "staff:test"
ADMIN = "admin:test"
LOOKED_AT = datetime(2025, 3, 5, 9, 0, tzinfo=DANISH)


def local_midnight(day: str) -> str:
    """00:00 Copenhagen time on ``day``, as the engine prints instants (UTC offset written out)."""
    return datetime.combine(D(day), time(0), tzinfo=DANISH).isoformat()


def course(engine: Engine, ref: str, dose1_on: str) -> str:
    pid = person(engine, ref)
    made = engine.open("course", "offer", person=pid, actor=STAFF, data={
        "indication": "prep", "contact": None, "criteria": ["msm_sti_24w"], "assessed_by": None,
        "criterion_on": D("2025-02-20")})["id"]
    engine.apply(made, "dose", actor=STAFF, data={"on": D(dose1_on), "consent": False, "indication_note": None,
                                                  "justification": None, "assessed_by": None})
    return str(made)


def contact(engine: Engine, case_id: str, ref: str, exposed: str, kind: str = "household") -> str:
    return str(engine.open("contact", "add", person=person(engine, ref), actor=STAFF, data={
        "case": case_id, "exposed": D(exposed), "kind": kind, "risk": None, "reason": None})["id"])


def population(engine: Engine, clock: Any) -> dict[str, str]:
    a = engine.open("case", "open", person=person(engine, "REF-A"), actor=STAFF, data={
        "onset": D("2025-02-19"), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    engine.apply(a, "confirm", data={"pcr_on": D("2025-02-21"), "clade": "IIb"}, actor=STAFF)
    engine.apply(a, "consent", data={"tracing": True}, actor=STAFF)
    b = suspected(engine, person(engine, "REF-B"), "2025-03-01")
    c = confirmed(engine, person(engine, "REF-C"), "2025-03-01", "2025-03-03")
    engine.apply(c, "consent", data={"tracing": True}, actor=STAFF)
    c1 = contact(engine, a, "REF-C1", "2025-02-19")
    c2 = contact(engine, c, "REF-C2", "2025-03-02")
    engine.apply(c2, "inform", data={}, actor=STAFF)
    courses = [course(engine, "REF-P1", "2025-02-10"), course(engine, "REF-P2", "2025-02-10"),
               course(engine, "REF-P3", "2025-03-03")]
    clock.set(LOOKED_AT)
    while engine.fire_due():
        pass
    return {"a": a, "b": b, "c": c, "c1": c1, "c2": c2, **{f"p{i}": p for i, p in enumerate(courses, 1)}}


def test_the_figures_are_the_numbers_worked_out_by_hand(engine: Engine, clock: Any) -> None:
    made = population(engine, clock)
    figures = Overview(engine.runtime).figures()
    assert list(figures) == list(NAMES)

    curve = figures["curve"].rows
    assert [r["week"] for r in curve] == ["2025-W08", "2025-W09", "2025-W10"]
    assert [r["from"] for r in curve] == ["2025-02-17", "2025-02-24", "2025-03-03"]
    assert [(r["suspected"], r["confirmed"], r["total"]) for r in curve] == [(0, 1, 1), (1, 1, 2), (0, 0, 0)]
    by_clade = figures["curve_clade"].rows
    assert [(r["IIb"], r["unknown"], r["total"]) for r in by_clade] == [(1, 0, 1), (0, 2, 2), (0, 0, 0)]

    monitoring = {r["date"]: r["contacts"] for r in figures["monitoring"].rows}
    days = [(D("2025-03-05") + timedelta(days=i)).isoformat() for i in range(21)]
    assert list(monitoring) == days
    assert monitoring == {d: 2 if d <= "2025-03-12" else 1 if d <= "2025-03-23" else 0 for d in days}

    [closing] = figures["pep"].rows
    assert (closing["object"], closing["kind"], closing["closes_at"], closing["last_day"]) == (
        made["c1"], "contact", local_midnight("2025-03-06"), "2025-03-05")
    assert figures["pep"].meta["closing"] == [(local_midnight("2025-03-06"), 1, 0)]
    # A page's first rows only: the counts are of them all.
    first = Overview(engine.runtime).figures(pep_rows=0)["pep"]
    assert first.rows == [] and first.meta["closing"] == [(local_midnight("2025-03-06"), 1, 0)]
    assert first.meta["total"] == 1

    doses = {r["date"]: r["doses_due"] for r in figures["doses"].rows}
    assert len(doses) == 56 and min(doses) == "2025-03-05" and max(doses) == "2025-04-29"
    assert {d: n for d, n in doses.items() if n} == {"2025-03-10": 2, "2025-03-31": 1}
    # The calendar counts the same doses on the same days.
    assert {d["date"]: d["doses_due"] for d in engine.calendar(8) if d["doses_due"]} == {"2025-03-10": 2,
                                                                                         "2025-03-31": 1}

    # Deadlines missed: every timer the engine shows as missed, by the ISO week of its Danish due day.
    missed = engine.timers(status="missed")
    assert any(t["object"] == made["c1"] and t["name"] == "inform_due" for t in missed)
    weeks: dict[str, int] = {}
    for t in missed:
        weeks[iso_week(datetime.fromisoformat(t["due_at"]).astimezone(DANISH).date())] = \
            weeks.get(iso_week(datetime.fromisoformat(t["due_at"]).astimezone(DANISH).date()), 0) + 1
    assert {r["week"]: r["missed"] for r in figures["missed"].rows if r["missed"]} == weeks
    assert sum(r["unresolved"] for r in figures["missed"].rows) == len(missed)  # none resolved yet
    inform = next(t for t in missed if t["object"] == made["c1"] and t["name"] == "inform_due")
    engine.resolve_task(inform["id"], "not-reachable", reason="no answer on three numbers", actor=STAFF)
    again = Overview(engine.runtime).figures()["missed"].rows
    assert sum(r["missed"] for r in again) == len(missed)
    assert sum(r["unresolved"] for r in again) == len(missed) - 1


def test_a_monitoring_end_just_after_the_change_to_summer_time_is_counted_on_its_own_days(
        engine: Engine, clock: Any) -> None:
    """Summer time begins on Sunday 30 March 2025. A contact last exposed 9 March is monitored through 30 March
    (its end: 00:00 on 31 March, CEST, 22:00 UTC on the 30th); one last exposed 8 March through 29 March (00:00 on
    30 March, CET, 23:00 UTC on the 29th)."""
    case_id = confirmed(engine, person(engine, "REF-DST"), "2025-03-01", "2025-03-03")
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    clock.set(datetime(2025, 3, 10, 9, 0, tzinfo=DANISH))
    later = contact(engine, case_id, "REF-DST-1", "2025-03-09")
    earlier = contact(engine, case_id, "REF-DST-2", "2025-03-08")
    ends = {c: next(t["due_at"] for t in engine.show(c)["timers"] if t["name"] == "monitoring_ends")
            for c in (later, earlier)}
    assert ends == {later: "2025-03-31T00:00:00+02:00", earlier: "2025-03-30T00:00:00+01:00"}
    monitoring = {r["date"]: r["contacts"] for r in Overview(engine.runtime).figures()["monitoring"].rows}
    assert min(monitoring) == "2025-03-10" and max(monitoring) == "2025-03-30"
    assert monitoring["2025-03-29"] == 2
    assert monitoring["2025-03-30"] == 1
    assert set(monitoring.values()) == {1, 2}


def test_the_figures_take_the_same_few_queries_however_many_objects(engine: Engine, clock: Any, db: Any) -> None:
    from sqlalchemy import event

    made = population(engine, clock)

    def count() -> int:
        statements: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", seen)
        try:
            Overview(engine.runtime).figures()
        finally:
            event.remove(db.engine, "before_cursor_execute", seen)
        return len(statements)

    few = count()
    for n in range(6):
        contact(engine, made["c"], f"REF-MORE-{n}", "2025-03-04")
    assert count() == few and few <= 8


def test_a_contact_with_symptoms_is_no_longer_under_monitoring(engine: Engine, clock: Any) -> None:
    made = population(engine, clock)
    engine.apply(made["c2"], "symptoms", data={"onset": D("2025-03-05"), "symptoms": ["rash"]}, actor=STAFF)
    assert engine.show(made["c2"])["state"] == "symptomatic"
    monitoring = {r["date"]: r["contacts"] for r in Overview(engine.runtime).figures()["monitoring"].rows}
    assert monitoring == {d: 1 if d <= "2025-03-12" else 0 for d in monitoring}


def test_a_reader_of_another_unit_sees_none_of_them(engine: Engine, clock: Any) -> None:
    population(engine, clock)
    engine.add_unit("Region Sjælland", parent="Danmark", actor=ADMIN)
    engine.add_user("member:sj", "staff", actor=ADMIN, units=["Region Sjælland"])
    theirs = Overview(engine.viewing_as("member:sj").runtime).figures()
    assert theirs["curve"].rows == [] and theirs["curve_clade"].rows == [] and theirs["missed"].rows == []
    assert theirs["pep"].rows == []
    assert {r["contacts"] for r in theirs["monitoring"].rows} == {0}
    assert {r["doses_due"] for r in theirs["doses"].rows} == {0}
    # The root's member sees them all.
    ours = Overview(engine.viewing_as(STAFF).runtime).figures()
    assert sum(r["total"] for r in ours["curve"].rows) == 3 and len(ours["pep"].rows) == 1


def test_the_csv_has_a_header_and_one_line_per_row(engine: Engine, clock: Any) -> None:
    made = population(engine, clock)
    figure = Overview(engine.runtime).figures()["pep"]
    text = csv_text(figure, {"object": "Objekt", "kind": "Art", "closes_at": "Vinduet lukker",
                             "last_day": "Sidste dag", "timer": "Timer"})
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["Objekt", "Art", "Vinduet lukker", "Sidste dag", "Timer"]
    assert rows[1][:4] == [made["c1"], "contact", local_midnight("2025-03-06"), "2025-03-05"]
    assert re.fullmatch(r"timer-\d+", rows[1][4]) and len(rows) == 2
    assert "REF-" not in text  # internal ids only


# ---- the page and the report -----------------------------------------------------------------------------------


@pytest.fixture
def outbreak(cli_db: str) -> dict[str, str]:
    """The population in the CLI's and the pages' database (SQLite, as every interface test), its clock saved."""
    from engine.clock import SimulatedClock
    from persistence.database import Database

    db = Database(cli_db)
    try:
        clock = SimulatedClock(datetime(2025, 3, 3, 8, 0, tzinfo=DANISH))
        engine = Engine(db, clock, persist_clock=True)
        made = population(engine, clock)
        engine.save_clock()
        return made
    finally:
        db.dispose()


def test_the_page_shows_each_figure_with_its_table_and_csv_link_in_danish(outbreak: dict[str, str],
                                                                          client_for: Any) -> None:
    staff = client_for(STAFF)
    response = staff.get("/overview")
    assert response.status_code == 200
    page = response.text
    assert '<a href="/overview">Overblik</a>' in page
    assert "<h1>Udbruddet i overblik</h1>" in page
    for name in NAMES:
        section = re.search(rf'<section class="figure-box" id="figure-{name}".*?</section>', page, re.S)
        assert section, name
        body = section[0]
        assert body.count("<svg ") == 1 and 'role="img"' in body
        assert f'href="/overview/{name}.csv"' in body
        assert f'<details id="table-{name}">' in body and "Tallene som tabel" in body
    # Nothing the Content-Security-Policy refuses: no script, no style element or attribute.
    assert "<script" not in page.split("</head>", 1)[1]
    assert "<style" not in page and " style=" not in page
    # The tables' numbers and Danish headers.
    curve = re.search(r'id="table-curve">.*?</details>', page, re.S)[0]
    assert "<th scope=\"col\">Uge</th>" in curve and "<th scope=\"col\">mistænkt</th>" in curve
    assert "<td>2025-W09</td><td>24.02.2025</td><td>1</td><td>1</td>" in curve
    pep = re.search(r'id="table-pep">.*?</details>', page, re.S)[0]
    assert f"<td>{outbreak['c1']}</td><td>kontakt</td><td>06.03.2025 kl. 00.00</td><td>05.03.2025</td>" in pep
    assert "REF-" not in page  # no person's reference on the overview
    # Every id in the inlined figures is unique on the page.
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_the_csv_download_has_danish_column_names_or_english_on_request(outbreak: dict[str, str],
                                                                        client_for: Any) -> None:
    staff = client_for(STAFF)
    response = staff.get("/overview/monitoring.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"))))
    assert rows[0] == ["Dato", "Kontakter under observation"]
    assert rows[1] == ["2025-03-05", "2"] and rows[9] == ["2025-03-13", "1"] and len(rows) == 22
    english = list(csv.reader(io.StringIO(staff.get("/overview/monitoring.csv?lang=en").text)))
    assert english[0] == ["Date", "Contacts under monitoring"] and english[1:] == rows[1:]
    assert staff.get("/overview/nothing.csv").status_code == 422
    svg = staff.get("/overview/figures/monitoring.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and svg.text.startswith("<svg ")
    assert " style=" not in svg.text and "<style" not in svg.text
    assert staff.get("/overview/figures/doses.png").content.startswith(b"\x89PNG\r\n\x1a\n")
    assert client_for().get("/overview/monitoring.csv").status_code in (303, 401)


def test_the_report_writes_a_file_per_figure_one_pdf_and_the_csv_files(outbreak: dict[str, str], cli_db: str,
                                                                      tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from entry.cli import app

    out = tmp_path / "rapport"
    done = CliRunner().invoke(app, ["--db", cli_db, "report", "--out", str(out), "--format", "both", "--as", STAFF])
    assert done.exit_code == 0, done.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*(f"{n}.{ext}" for n in NAMES for ext in ("png", "svg", "csv")), "overview.pdf"])
    for name in NAMES:
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert b"<svg" in (out / f"{name}.svg").read_bytes()
    pdf = (out / "overview.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == len(NAMES)  # one page per figure
    doses = list(csv.reader(io.StringIO((out / "doses.csv").read_text(encoding="utf-8"))))
    assert doses[0] == ["Dato", "Dosis 2 forfalden"]
    assert [r for r in doses[1:] if r[1] != "0"] == [["2025-03-10", "2"], ["2025-03-31", "1"]]
    # A reader of another unit: the same files, none of these numbers.
    CliRunner().invoke(app, ["--db", cli_db, "unit", "add", "Region Sjælland", "--parent", "Danmark",
                             "--actor", ADMIN])
    added = CliRunner().invoke(app, ["--db", cli_db, "user", "add", "member:sj", "--role", "staff", "--unit",
                                     "Region Sjælland", "--no-password", "--actor", ADMIN])
    assert added.exit_code == 0, added.output
    theirs = tmp_path / "theirs"
    done = CliRunner().invoke(app, ["--db", cli_db, "report", "--out", str(theirs), "--as", "member:sj"])
    assert done.exit_code == 0, done.output
    doses = list(csv.reader(io.StringIO((theirs / "doses.csv").read_text(encoding="utf-8"))))
    assert {r[1] for r in doses[1:]} == {"0"} and not (theirs / "doses.svg").exists()


def test_the_report_refuses_a_format_it_does_not_write(cli_db: str, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from entry.cli import app

    done = CliRunner().invoke(app, ["--db", cli_db, "report", "--out", str(tmp_path / "x"), "--format", "gif"])
    assert done.exit_code == 2 and "--format" in done.output and "png, svg or both" in done.output
    assert not (tmp_path / "x").exists()
