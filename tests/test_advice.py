"""Advice sheets (issue 21 item 3): each sheet's dates from a known object (across both DST changes), its
sections, Danish and English, and no other person's data; the printable page under the CSP, the PDF, the command
line; a contact under the test successor definition (14 days) gets its own last day."""

from __future__ import annotations

import io
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import advice
from engine.clock import SimulatedClock
from engine.core import Engine
from persistence.database import Database
from tests.helpers import contents, person
from tests.successor import registered  # noqa: F401
from tests.test_web_safety import INLINE
from workflows.errors import NotFound, RuleRefused, UsageError

STAFF, ADMIN = "staff:test", "admin:test"
D = date.fromisoformat
BORN = "1987-06-05"


def at(clock: SimulatedClock, text: str) -> None:
    clock.set(datetime.fromisoformat(text))


def confirmed_case(engine: Engine, clock: SimulatedClock, ref: str, onset: str, pcr_on: str,
                   symptoms: tuple[str, ...] = ("rash", "fever")) -> str:
    """A confirmed case consenting to tracing, of a person with a reference and a birth date."""
    case_person = person(engine, ref, born=D(BORN))
    case_id = engine.open("case", "open", person=case_person, actor=STAFF, data={
        "onset": D(onset), "symptoms": list(symptoms), "criteria": ["msm"]})["id"]
    engine.apply(case_id, "confirm", data={"pcr_on": D(pcr_on)}, actor=STAFF)
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    return case_id


def contact_of(engine: Engine, case_id: str, ref: str, exposed: str, kind: str = "sexual") -> str:
    return engine.open("contact", "add", person=person(engine, ref), actor=STAFF,
                       data={"case": case_id, "exposed": D(exposed), "kind": kind})["id"]


def texts(sheet: advice.Sheet) -> str:
    """Every word of the sheet, unwrapped: title, lead, key dates, paragraphs, footer."""
    return "\n".join([sheet.title, sheet.lead, *(f"{d.label}: {d.text}" for d in sheet.dates),
                      *(p.text for part in sheet.parts for p in part.paragraphs), *sheet.labels.values()])


# ---- the contact: 21 days from the last exposure, the last day printed ------------------------------------------


def test_the_contacts_last_day_across_the_change_to_summer_time(engine: Engine, clock: SimulatedClock) -> None:
    """Last exposure 2025-03-09 + 21 days: the last day is 2025-03-30, the day the clocks go forward; its timer is
    due at 00:00 local on 2025-03-31 (22:00 UTC on the 30th, summer time)."""
    case_id = confirmed_case(engine, clock, "INDEX-REF", "2025-03-01", "2025-03-03")
    at(clock, "2025-03-10T09:00:00+01:00")
    contact_id = contact_of(engine, case_id, "CONTACT-REF", "2025-03-09")
    view = engine.show(contact_id)
    due = next(t["due_at"] for t in view["timers"] if t["name"] == "monitoring_ends")
    assert due == "2025-03-31T00:00:00+02:00"
    assert advice.available(engine, contact_id) == ["contact"]

    sheet = advice.make(engine, contact_id)
    assert (sheet.name, sheet.language, sheet.workflow) == ("contact", "da", "contact@SST-mpox-7.1")
    assert sheet.date("last_day") == D("2025-03-30") and sheet.date("last_exposure") == D("2025-03-09")
    text = texts(sheet)
    assert "i 21 dage efter din sidste udsættelse for smitte, dvs. til og med søndag den 30. marts 2025" in text
    assert "Undgå tæt fysisk kontakt med andre til og med søndag den 30. marts 2025" in text
    # §6.2 a sexual partner is high risk: PEP best within 4 days (by 13 March), at the latest 14 (by 23 March).
    assert sheet.date("pep_best_by") == D("2025-03-13") and sheet.date("pep_latest_by") == D("2025-03-23")
    assert "bedst senest torsdag den 13. marts 2025 og i særlige tilfælde senest søndag den 23. marts 2025" in text
    # Whom to call: the department STPS pointed to (§5.5), saying exposed and symptomatic.
    assert "kontakt den infektionsmedicinske afdeling, som Styrelsen for Patientsikkerhed har henvist dig til" in text
    assert "Nære kontakter" not in text and "Du skal ikke isolere dig, så længe du ikke har symptomer" in text
    # Its sections: every paragraph cites one, §5.5 first; the symptoms from §1.4.1; PEP §5.3/§6.2.
    assert all(p.cites for part in sheet.parts for p in part.paragraphs)
    assert sheet.citations[:1] == ["SST-mpox-7.1 §5.5"]
    assert {"SST-mpox-7.1 §5.5", "SST-mpox-7.1 §1.4.1", "SST-mpox-7.1 §5.3", "SST-mpox-7.1 §6.2"} <= set(
        sheet.citations)


def test_the_contacts_last_day_across_the_change_to_winter_time(engine: Engine, clock: SimulatedClock) -> None:
    """Last exposure 2025-10-05 + 21 days: the last day is 2025-10-26, the day the clocks go back."""
    at(clock, "2025-10-03T09:00:00+02:00")
    case_id = confirmed_case(engine, clock, "INDEX-REF", "2025-10-01", "2025-10-03")
    at(clock, "2025-10-06T09:00:00+02:00")
    contact_id = contact_of(engine, case_id, "CONTACT-REF", "2025-10-05", kind="intact_skin")
    due = next(t["due_at"] for t in engine.show(contact_id)["timers"] if t["name"] == "monitoring_ends")
    assert due == "2025-10-27T00:00:00+01:00"
    sheet = advice.make(engine, contact_id, language="en")
    assert sheet.date("last_day") == D("2025-10-26")
    text = texts(sheet)
    assert "for 21 days after your last exposure, that is up to and including Sunday 26 October 2025" in text
    assert sheet.title == "Advice for you as a close contact of a person with mpox"


def test_a_new_exposure_moves_the_last_day(engine: Engine, clock: SimulatedClock) -> None:
    """§5.5 Decision: the period runs from the last exposure; the sheet follows the re-armed timer."""
    case_id = confirmed_case(engine, clock, "INDEX-REF", "2025-03-01", "2025-03-03")
    at(clock, "2025-03-10T09:00:00+01:00")
    contact_id = contact_of(engine, case_id, "CONTACT-REF", "2025-03-05")
    assert advice.make(engine, contact_id).date("last_day") == D("2025-03-26")
    engine.apply(contact_id, "expose", data={"exposed": D("2025-03-09"), "kind": "household"}, actor=STAFF)
    assert advice.make(engine, contact_id).date("last_day") == D("2025-03-30")


def test_a_contact_under_the_successor_definition_gets_its_own_last_day(engine: Engine, clock: SimulatedClock,
                                                                       registered: Any) -> None:  # noqa: F811
    """tests/successor.py: revision 2 monitors 14 days: the same exposure ends a week earlier on its sheet."""
    case_id = confirmed_case(engine, clock, "INDEX-REF", "2025-03-01", "2025-03-03")
    at(clock, "2025-03-10T09:00:00+01:00")
    product = contact_of(engine, case_id, "C-PRODUCT", "2025-03-09")
    engine.set_workflow_default("contact", registered.name, actor=ADMIN, reason="revision 2")
    successor = contact_of(engine, case_id, "C-SUCCESSOR", "2025-03-09")
    assert engine.show(successor)["workflow"] == "contact@SST-mpox-7.1-r2"
    assert advice.make(engine, product).date("last_day") == D("2025-03-30")
    sheet = advice.make(engine, successor)
    assert sheet.date("last_day") == D("2025-03-23") and sheet.workflow == "contact@SST-mpox-7.1-r2"
    assert "i 14 dage efter din sidste udsættelse for smitte, dvs. til og med søndag den 23. marts 2025" in texts(
        sheet)


def test_a_contacts_sheet_holds_no_other_persons_data(engine: Engine, clock: SimulatedClock) -> None:
    """Never the index case's identity on a contact's sheet: not its id, its person, its reference; and no birth
    date, no reference of the contact's own; the exposure's kind is left out too (it tells about the case)."""
    case_id = confirmed_case(engine, clock, "INDEX-REF", "2025-03-01", "2025-03-03")
    at(clock, "2025-03-10T09:00:00+01:00")
    contact_id = contact_of(engine, case_id, "CONTACT-REF", "2025-03-09")
    view = engine.show(contact_id)
    case_person = engine.show(case_id)["person"]
    for language in ("da", "en"):
        sheet = advice.make(engine, contact_id, language=language)
        shown = texts(sheet) + repr(sheet.as_dict())
        for secret in (case_id, case_person, "INDEX-REF", "CONTACT-REF", view["person"], BORN, "05.06.1987",
                       "sexual", "seksual"):
            assert secret not in shown, (language, secret)
        assert contact_id in shown  # its own internal id, in the footer, for staff


# ---- the cases ------------------------------------------------------------------------------------------------


def test_a_suspected_cases_sheet_danish_and_english(engine: Engine, clock: SimulatedClock) -> None:
    suspect = person(engine, "SUSPECT-REF", born=D(BORN))
    case_id = engine.open("case", "open", person=suspect, actor=STAFF, data={
        "onset": D("2025-03-01"), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    assert advice.available(engine, case_id) == ["suspected"]
    da = advice.make(engine, case_id)
    text = texts(da)
    assert da.title == "Råd til dig, der er mistænkt for at have mpox"
    assert "Isolér dig, og undgå tæt fysisk kontakt med andre mennesker, både i og uden for din husstand." in text
    assert "Er prøvesvaret negativt, kan du ophøre med selvisolationen." in text
    assert da.date("onset") == D("2025-03-01") and "lørdag den 1. marts 2025" in text
    assert {"SST-mpox-7.1 §2.2.1", "SST-mpox-7.1 §2.3", "SST-mpox-7.1 §4.1"} == set(da.citations)
    en = advice.make(engine, case_id, language="en")
    assert "If the result is negative, you can end your self-isolation." in texts(en)
    assert "Isolér" not in texts(en)
    for sheet in (da, en):
        shown = texts(sheet)
        assert "SUSPECT-REF" not in shown and BORN not in shown and suspect not in shown


def test_the_confirmed_cases_sheet_while_infectious_and_after_healing(engine: Engine, clock: SimulatedClock) -> None:
    """§4.1: while infectious the contact, work and isolation advice (by the case's own mode and work); once healed
    the condom advice's last day from its timer: healed 2025-03-20 + 12 weeks = 2025-06-12."""
    case_id = confirmed_case(engine, clock, "CASE-REF", "2025-03-01", "2025-03-03", symptoms=("rash",))
    engine.apply(case_id, "work", data={"work": ["children"]}, actor=STAFF)
    engine.apply(case_id, "isolate", data={"mode": "covered"}, actor=STAFF)
    sheet = advice.make(engine, case_id)
    text = texts(sheet)
    assert [p.heading for p in sheet.parts] == ["Mens du er smitsom", "Efter at du er blevet rask"]
    assert "uanset om der bruges kondom eller slikkelap" in text
    assert "Dit arbejde indebærer tæt fysisk kontakt til andre eller arbejde med børn under 12 år" in text
    assert "Du kan færdes frit, så længe dit udslæt og dine blærer kan tildækkes fuldstændigt med tøj" in text
    assert "anbefales du at bruge kondom i 12 uger efter overstået infektion" in text
    assert sheet.date("condom_last_day") is None
    assert {"SST-mpox-7.1 §4.1", "SST-mpox-7.1 §4.1.2"} <= set(sheet.citations)

    at(clock, "2025-03-21T10:00:00+01:00")
    engine.apply(case_id, "heal", data={"on": D("2025-03-20")}, actor=STAFF)
    healed = advice.make(engine, case_id)
    assert [p.heading for p in healed.parts] == ["Efter at du er blevet rask"]
    assert healed.date("healed_on") == D("2025-03-20") and healed.date("condom_last_day") == D("2025-06-12")
    assert "Brug kondom i 12 uger efter overstået infektion, dvs. til og med torsdag den 12. juni 2025" in texts(
        healed)
    assert healed.citations == ["SST-mpox-7.1 §4.1"]


def test_pep_sheet_gives_the_off_label_information_and_the_window(engine: Engine, clock: SimulatedClock) -> None:
    """§6.2: a PEP course offered (before consent) has the sheet: off label, consent recorded, the window."""
    case_id = confirmed_case(engine, clock, "INDEX-REF", "2025-03-01", "2025-03-03")
    at(clock, "2025-03-10T09:00:00+01:00")
    contact_id = contact_of(engine, case_id, "CONTACT-REF", "2025-03-09")
    contact_person = engine.show(contact_id)["person"]
    course = engine.open("course", "offer", person=contact_person, actor=STAFF, data={
        "indication": "pep", "contact": contact_id, "assessed_by": "dr. Lund"})["id"]
    assert advice.available(engine, course) == ["pep"]
    sheet = advice.make(engine, course)
    text = texts(sheet)
    assert "uden for godkendelsesgrundlaget og dermed off label" in text
    assert "dit informerede samtykke skrives omhyggeligt i din journal" in text
    assert sheet.date("exposure_on") == D("2025-03-09")
    assert sheet.date("pep_best_by") == D("2025-03-13") and sheet.date("pep_latest_by") == D("2025-03-23")
    assert "senest torsdag den 13. marts 2025" in text and "senest søndag den 23. marts 2025" in text
    assert "Du tilbydes 2 doser med mindst 28 dage imellem." in text
    assert {"SST-mpox-7.1 §6", "SST-mpox-7.1 §6.2", "SST-mpox-7.1 §6.2.1", "SST-mpox-7.1 §6.2.2",
            "SST-mpox-7.1 §6.3", "SST-mpox-7.1 §6.4"} == set(sheet.citations)
    assert "INDEX-REF" not in text and case_id not in text and "dr. Lund" not in text
    en = texts(advice.make(engine, course, language="en"))
    assert "outside its marketing authorisation, that is off label" in en


def test_which_sheets_and_the_refusals(engine: Engine, db: Database, clock: SimulatedClock) -> None:
    case_id = confirmed_case(engine, clock, "INDEX-REF", "2025-03-01", "2025-03-03")
    before = contents(db)
    with pytest.raises(RuleRefused) as refused:
        advice.make(engine, case_id, "contact")
    assert refused.value.rule == "SST-mpox-7.1 §5.5" and refused.value.exit_code == 3
    with pytest.raises(UsageError):
        advice.make(engine, case_id, "nonsense")
    with pytest.raises(UsageError):
        advice.make(engine, case_id, language="fr")
    with pytest.raises(UsageError):
        advice.make(engine, engine.show(case_id)["person"])
    with pytest.raises(NotFound):
        advice.make(engine, "case-999")
    assert contents(db) == before  # reading a sheet, or being refused one, writes nothing
    engine.apply(case_id, "heal", data={"on": D("2025-03-03")}, actor=STAFF)
    at(clock, "2025-06-01T09:00:00+02:00")
    engine.fire_due()
    assert engine.show(case_id)["state"] == "closed"
    with pytest.raises(RuleRefused) as closed:
        advice.make(engine, case_id)
    assert closed.value.key == "no_advice_sheet"
    assert advice.available(engine, case_id) == []


# ---- the page, the PDF, the command line --------------------------------------------------------------------


def _contact_over_http(client: Any) -> str:
    def ok(path: str, body: dict[str, Any]) -> Any:
        response = client.post(path, json=body, headers={"X-CSRF-Token": client.csrf})
        assert response.status_code < 300, response.text
        return response.json()

    ok("/api/persons", {"ref": "INDEX-REF", "born": BORN})
    ok("/api/persons", {"ref": "CONTACT-REF"})
    ok("/api/cases", {"person": "person-1", "onset": "2025-02-28", "confirmed": True, "pcr_on": "2025-03-02"})
    ok("/api/cases/case-1/consent", {"tracing": True})
    return str(ok("/api/contacts", {"case": "case-1", "person": "person-2", "exposed": "2025-03-02",
                                    "kind": "household"})["id"])


def test_the_printable_page_danish_english_under_the_csp(client_for: Any) -> None:
    staff = client_for(STAFF)
    contact_id = _contact_over_http(staff)
    page = staff.get(f"/objects/{contact_id}")
    assert f'href="/objects/{contact_id}/advice/contact"' in page.text  # the object's page links its sheet
    assert f'href="/objects/{contact_id}/advice/contact.pdf"' in page.text

    sheet = staff.get(f"/objects/{contact_id}/advice/contact")
    assert sheet.status_code == 200
    html = sheet.text
    # 2025-03-02 + 21 days: the last day is 23 March.
    assert "til og med søndag den 23. marts 2025" in html and 'lang="da"' in html
    assert "SST-mpox-7.1 §5.5" in html
    assert 'href="/static/advice.css"' in html
    for pattern, what in INLINE:
        found = pattern.search(html)
        assert found is None, f"the sheet has {what}: {found and found.group(0)}"
    assert "script-src 'self'" in sheet.headers["Content-Security-Policy"]
    for secret in ("INDEX-REF", "CONTACT-REF", "case-1", "person-1", "person-2", BORN, "05.06.1987"):
        assert secret not in html, secret
    assert staff.get("/static/advice.css").status_code == 200

    english = staff.get(f"/objects/{contact_id}/advice/contact?lang=en").text
    assert "up to and including Sunday 23 March 2025" in english and 'lang="en"' in english

    assert staff.get("/objects/case-1/advice/contact").status_code == 409  # a case has no contact sheet
    assert staff.get(f"/objects/{contact_id}/advice/nonsense").status_code == 422
    assert staff.get("/objects/contact-99/advice/contact").status_code == 404
    assert staff.get(f"/objects/{contact_id}/advice/contact?lang=fr").status_code == 422


def test_the_users_language_decides_without_lang(client_for: Any) -> None:
    """No ``?lang``: the user's stored language (the account's), else Danish; ``?lang=da`` wins over it."""
    staff = client_for(STAFF)
    contact_id = _contact_over_http(staff)
    assert "til og med søndag den 23. marts 2025" in staff.get(f"/objects/{contact_id}/advice/contact").text
    chosen = staff.post("/account/language", data={"language": "en", "csrf_token": staff.csrf})
    assert chosen.status_code == 303
    assert "up to and including Sunday 23 March 2025" in staff.get(f"/objects/{contact_id}/advice/contact").text
    danish = staff.get(f"/objects/{contact_id}/advice/contact?lang=da").text
    assert "til og med søndag den 23. marts 2025" in danish


@pytest.mark.slow
def test_the_pdf_holds_the_last_day(client_for: Any) -> None:
    from pypdf import PdfReader

    staff = client_for(STAFF)
    contact_id = _contact_over_http(staff)
    pdf = staff.get(f"/objects/{contact_id}/advice/contact.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    text = re.sub(r"\s+", " ", text)
    assert "til og med søndag den 23. marts 2025" in text
    assert "SST-mpox-7.1 §5.5" in text and "INDEX-REF" not in text and "case-1" not in text


def test_the_command_line_prints_the_sheet_and_writes_the_pdf(cli_db: str, tmp_path: Path) -> None:
    from tests.test_cli import cli, ok

    ok(cli_db, "person", "add", "--ref", "INDEX-REF", "--born", BORN, "--actor", STAFF)
    ok(cli_db, "person", "add", "--ref", "CONTACT-REF", "--actor", STAFF)
    ok(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-02-28", "--confirmed", "--pcr-on",
       "2025-03-02", "--actor", STAFF)
    ok(cli_db, "case", "consent", "case-1", "--tracing", "yes", "--actor", STAFF)
    ok(cli_db, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-02", "--kind",
       "household", "--actor", STAFF)
    done = cli(cli_db, "advice", "contact-1", "--as", STAFF)
    assert done.exit_code == 0, done.output
    assert "til og med søndag den 23. marts 2025" in done.stdout and "(SST-mpox-7.1 §5.5)" in done.stdout
    assert "INDEX-REF" not in done.stdout and "case-1" not in done.stdout
    english = cli(cli_db, "advice", "contact-1", "--lang", "en", "--json", "--as", STAFF)
    assert english.exit_code == 0, english.output
    import json

    shown = json.loads(english.stdout)
    assert shown["sheet"] == "contact" and shown["language"] == "en"
    assert {"key": "last_day", "on": "2025-03-23"}.items() <= next(
        d for d in shown["dates"] if d["key"] == "last_day").items()

    target = tmp_path / "ark.pdf"
    written = cli(cli_db, "advice", "contact-1", "--sheet", "contact", "--pdf", str(target), "--as", STAFF)
    assert written.exit_code == 0, written.output
    assert target.read_bytes().startswith(b"%PDF")

    assert cli(cli_db, "advice", "case-1", "--sheet", "contact", "--as", STAFF).exit_code == 3
    assert cli(cli_db, "advice", "case-1", "--sheet", "nope", "--as", STAFF).exit_code == 2
    assert cli(cli_db, "advice", "case-1", "--lang", "fr", "--as", STAFF).exit_code == 2
    assert cli(cli_db, "advice", "case-9", "--as", STAFF).exit_code == 4
    assert not (tmp_path / "nope.pdf").exists()


def test_the_sheets_page_sends_it_by_e_mail_or_records_it_given(client_for: Any, cli_db: str) -> None:
    """The desk's forms (issue 21 item 4): e-mail the sheet (queued for the worker) or record it given by phone;
    each audited; a missing address or a form without the session's CSRF token writes nothing."""
    from tests.helpers import contents
    from tests.test_web_pages import post

    staff = client_for(STAFF)
    contact_id = _contact_over_http(staff)
    page = staff.get(f"/objects/{contact_id}/advice/contact").text
    assert 'id="send-email"' in page and 'id="record-given"' in page
    assert "Giv arket til personen" in page
    action = f"/objects/{contact_id}/advice/contact/send"
    database = Database(cli_db)
    try:
        before = contents(database, reads=False)
        missing = post(staff, action, {"channel": "email", "email": "", "language": "da"})
        assert missing.status_code == 422
        assert "E-mailadresse: angiv den adresse, arket sendes til." in missing.text
        forged = post(staff, action, {"channel": "email", "email": "a@example.dk"}, csrf=None)
        assert forged.status_code in (400, 403)
        assert contents(database, reads=False) == before
        sent = post(staff, action, {"channel": "email", "email": "a@example.dk", "language": "da"})
        assert sent.status_code == 200
        assert "arket står i kø til at blive sendt pr. e-mail" in sent.text
        assert "a@example.dk" not in sent.text  # the address is never shown back
        given = post(staff, action, {"channel": "phone", "language": "da"})
        assert "arket er registreret som givet" in given.text
        assert re.search(r"<td>message-1</td><td>email</td><td>queued</td>", given.text)
        assert re.search(r"<td>message-2</td><td>phone</td><td>given</td>", given.text)
    finally:
        database.dispose()
    triggers = [e["trigger"] for e in staff.get(f"/api/audit/timeline/{contact_id}").json()]
    assert triggers[-2:] == ["advice_queued", "advice_given"]
