"""The pages in Danish first, English second (issue 16, items 1 and 2): the language of a page (the user's stored
choice, else the browser's, else Danish), the catalogs' completeness, dates typed ``dd.mm.åååå`` and shown so,
and deadlines shown as the last day they cover ("senest 01.07.2025"), across both DST changes.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from entry.web import i18n, pages
from tests.helpers import contents
from tests.test_web_pages import STAFF, db, error_box, form, main, post, text, value_of  # noqa: F401
from workflows.calendar import DANISH, window_closes

ROOT = Path(__file__).resolve().parent.parent
#: What must never show through on a page in a realistic flow: raw identifiers and CLI talk.
RAW = ("dose1_given", "face_to_face", "not_indicated", "msm_two_partners_12w", "pcr on", "case die", "--",
       "mpoxflow show", "/openapi.json", "Field required", "epi_link", "household")


def visible(page: str) -> str:
    return text(page)


def flow(staff: Any) -> None:
    """A person, a confirmed case, a contact: through the pages' forms, dates typed as Danes write them."""
    assert post(staff, "/new/person_add", {"ref": "REF-1", "born": "17.05.1990"}).status_code == 303
    assert post(staff, "/new/person_add", {"ref": "REF-2", "born": "1985-01-02"}).status_code == 303
    response = post(staff, "/new/case_open", {"person": "person-1", "onset": "1.3.2025", "symptoms": ["rash"],
                                               "criteria": ["msm"]})
    assert response.status_code == 303, response.text
    assert post(staff, "/objects/case-1/confirm", {"pcr_on": "03.03.2025", "if_version": "1"}).status_code == 303
    assert post(staff, "/objects/case-1/consent", {"tracing": "on", "if_version": "2"}).status_code == 303
    response = post(staff, "/new/contact_add", {"case": "case-1", "person": "person-2", "exposed": "02.03.2025",
                                                "kind": "face_to_face"})
    assert response.status_code == 303, response.text


# ---- the language ----------------------------------------------------------------------------------------------


def test_pages_are_danish_by_default_with_no_raw_identifiers(client_for: Any) -> None:
    staff = client_for(STAFF)
    flow(staff)
    for path in ("/worklist", "/objects/case-1", "/objects/contact-1", "/objects/person-1", "/list/cases",
                 "/list/contacts", "/list/persons"):
        page = staff.get(path).text
        assert '<html lang="da">' in page, path
        assert '<a href="/worklist">Arbejdsliste</a>' in page
        shown = visible(page)
        for raw in RAW:
            assert raw not in shown, (path, raw)
    case = staff.get("/objects/case-1").text
    assert re.search(r'<span class="state" id="state">bekræftet</span>', case)
    assert "tæt ansigt-til-ansigt-kontakt" in visible(case)
    contact = staff.get("/objects/contact-1").text
    assert 'id="state">eksponeret</span>' in contact
    # Dates in the facts are Danish; the person's birth date typed 17.05.1990 was stored as that day.
    assert "17.05.1990" in visible(staff.get("/objects/person-1").text)
    assert "Symptomdebut" in visible(case) and "01.03.2025" in visible(case)
    assert "Frist i dag" in visible(staff.get("/worklist").text)


def test_the_browser_asks_for_english_and_the_stored_choice_wins(client_for: Any) -> None:
    staff = client_for(STAFF)
    staff.headers["Accept-Language"] = "en-GB,en;q=0.9,da;q=0.5"
    page = staff.get("/worklist").text
    assert '<html lang="en">' in page and '<a href="/worklist">Worklist</a>' in page
    staff.headers["Accept-Language"] = "de, da;q=0.8"
    assert '<html lang="da">' in staff.get("/worklist").text
    # The user chooses English: stored, audited, and it survives a new login with a Danish browser.
    response = post(staff, "/account/language", {"language": "en"})
    assert response.status_code == 303
    again = client_for(STAFF)
    again.headers["Accept-Language"] = "da"
    page = again.get("/worklist").text
    assert '<html lang="en">' in page and "Due today" in page
    # Back to the browser's choice.
    assert post(again, "/account/language", {"language": "browser"}).status_code == 303
    assert '<html lang="da">' in again.get("/worklist").text
    assert post(again, "/account/language", {"language": "fr"}).status_code == 422


def test_the_language_choice_is_in_the_users_audit_chain(client_for: Any, db: Any) -> None:  # noqa: F811
    staff = client_for(STAFF)
    assert post(staff, "/account/language", {"language": "en"}).status_code == 303
    rows = contents(db)
    [user] = [u for u in rows["users"] if u[1] == STAFF]
    assert "en" in user
    audit = [r for r in rows["audit_log"] if "language_set" in r]
    assert len(audit) == 1


# ---- the catalogs ------------------------------------------------------------------------------------------------


def test_every_message_of_the_sources_is_translated_in_the_danish_catalog() -> None:
    """Extract the messages from the sources (as ``pybabel extract -F babel.cfg`` does) and compare with the
    Danish catalog: every msgid there, translated, none fuzzy. Fails when someone adds ``_("New text")``."""
    method_map = [("entry/web/**.py", "python"), ("entry/templates/**.html", "jinja2"),
                  ("workflows/registry.py", "entry.web.i18n:extract_declarations"),
                  ("workflows/**.py", "entry.web.i18n:extract_refusals"),
                  ("engine/**.py", "entry.web.i18n:extract_refusals")]
    found = set()
    for _file, _line, message, _comments, context in extract_from_dir(str(ROOT), method_map=method_map):
        found.add((context, message if isinstance(message, str) else message[0]))
    assert len(found) > 400
    with (ROOT / "entry/locale/da/LC_MESSAGES/messages.po").open("rb") as po:
        catalog = read_po(po, locale="da")
    translated = {}
    for message in catalog:
        if message.id:
            key = message.id if isinstance(message.id, str) else message.id[0]
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            translated[(message.context, key)] = all(strings) and not message.fuzzy
    missing = sorted((c or "", m) for c, m in found if not translated.get((c, m)))
    assert missing == []


def test_the_catalog_check_fails_on_a_new_untranslated_message() -> None:
    """The same comparison on one more source message: it is reported missing."""
    with (ROOT / "entry/locale/da/LC_MESSAGES/messages.po").open("rb") as po:
        catalog = read_po(po, locale="da")
    assert catalog.get("Worklist") is not None and catalog.get("Worklist").string == "Arbejdsliste"
    assert catalog.get("New text nobody translated") is None


def test_gettext_follows_the_request_language() -> None:
    i18n.activate("da")
    assert i18n._("Worklist") == "Arbejdsliste" and i18n.state("dose1_given") == "dosis 1 givet"
    i18n.activate("en")
    assert i18n._("Worklist") == "Worklist" and i18n.state("dose1_given") == "dose 1 given"
    i18n.activate(None)
    assert i18n.current() == "da"
    assert i18n.negotiate("en-US,en;q=0.9") == "en" and i18n.negotiate("fr") is None
    assert i18n.language_of("en", "da") == "en" and i18n.language_of(None, "en") == "en"


# ---- dates -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["24.11.2026", "24.11.2026 ", "2026-11-24", "24-11-2026", "24/11/2026"])
def test_a_typed_date_is_read_the_danish_way(typed: str) -> None:
    assert pages.parse_dk_date(typed) == date(2026, 11, 24)
    assert pages.parse_dk_date("1.3.2025") == date(2025, 3, 1)


@pytest.mark.parametrize("typed", ["31.02.2025", "11/24/2026", "someday", "2026-13-01", "24.11.26"])
def test_an_unreadable_date_is_none(typed: str) -> None:
    assert pages.parse_dk_date(typed) is None


def test_a_bad_date_gives_a_danish_message_at_its_field_and_changes_nothing(client_for: Any,
                                                                             db: Any) -> None:  # noqa: F811
    staff = client_for(STAFF)
    assert post(staff, "/new/person_add", {"ref": "REF-1"}).status_code == 303
    before = contents(db, reads=False)
    response = post(staff, "/new/case_open", {"person": "person-1", "onset": "11/24/2025", "symptoms": ["rash"]})
    assert response.status_code == 422
    assert contents(db, reads=False) == before
    opened = form(response.text, "case_open") or ""
    assert re.search(r'<div class="field-error"[^>]*>Symptomdebut: “11/24/2025” er ikke en dato, der kan læses: skriv '
                     r'den som dd.mm.åååå', opened)
    assert value_of(opened, "onset") == "11/24/2025"  # kept as typed
    assert "Nogle felter skal rettes" in error_box(response.text)
    # A date re-shown after another field's refusal is dd.mm.åååå.
    response = post(staff, "/new/case_open", {"person": "person-1", "onset": "2025-03-01", "criteria": ["bogus"]})
    assert response.status_code == 422 and contents(db, reads=False) == before
    assert value_of(form(response.text, "case_open") or "", "onset") == "01.03.2025"


def test_a_date_field_is_a_text_input_showing_dd_mm_aaaa(client_for: Any) -> None:
    staff = client_for(STAFF)
    page = staff.get("/list/persons").text
    born = re.search(r'<input type="text" inputmode="numeric" class="date"[^>]* name="born"[^>]*>', page)
    assert born and 'placeholder="dd.mm.åååå"' in born.group(0)


# ---- deadlines ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("last", [date(2025, 3, 29), date(2025, 3, 30), date(2025, 3, 31),  # DST starts 30.03
                                  date(2025, 10, 25), date(2025, 10, 26), date(2025, 10, 27)])  # DST ends 26.10
def test_a_window_reads_senest_its_last_day_across_dst(last: date) -> None:
    i18n.activate("da")
    closes = window_closes(last, 0)  # 00:00 local on the day after ``last``
    assert closes.astimezone(DANISH).hour == 0
    now = datetime(2025, 1, 1, 12, 0, tzinfo=DANISH)
    assert pages.deadline_text(closes, now) == f"senest {last:%d.%m.%Y}"
    shown = str(pages.deadline(closes, now))
    assert shown.count(f"{last:%d.%m.%Y}") == 1  # one date per deadline; the instant is in the title
    assert re.search(r'title="lukker \d\d\.\d\d\.\d{4} kl\. 00\.00"', shown)
    today = datetime.combine(last, datetime.min.time(), tzinfo=DANISH).replace(hour=9)
    assert pages.deadline_text(closes, today) == "senest i dag"


def test_left_is_danish() -> None:
    i18n.activate("da")
    now = datetime(2025, 3, 3, 8, 0, tzinfo=DANISH)
    assert pages.left(datetime(2025, 3, 5, 11, 0, tzinfo=DANISH), now) == "2 d 3 t tilbage"
    assert pages.left(datetime(2025, 3, 3, 3, 0, tzinfo=DANISH), now) == "overskredet med 5 t 0 min"
    i18n.activate("en")
    assert pages.left(datetime(2025, 3, 5, 11, 0, tzinfo=DANISH), now) == "2 d 3 h left"
    i18n.activate("da")


def test_an_end_of_today_deadline_is_due_today_not_in_the_next_7_days(client_for: Any) -> None:
    """A deadline at 00:00 tonight covers today: "Frist i dag", "senest i dag"."""
    staff = client_for(STAFF)
    flow(staff)
    page = staff.get("/worklist").text
    sections = dict(re.findall(r'<table class="worklist" data-section="([^"]+)">(.*?)</table>', page, re.S))
    for name, table in sections.items():
        for due in re.findall(r'<time datetime="([^"]+)"', table):
            instant = datetime.fromisoformat(due).astimezone(DANISH)
            ends_today = instant.date() == date(2025, 3, 4) and instant.hour == 0
            if ends_today:
                assert name == "Due today", (name, due)
    assert "senest" in main(page)


def test_a_record_fact_names_its_parts_in_danish() -> None:
    """A fact that is a record (a case's antiviral assessment, §3.4; a PEP dose's consent) shows its parts by their
    Danish names, not its keys."""
    i18n.activate("da")
    shown = str(pages.fact_value({"at": "2025-03-03T08:00:00+01:00", "assessed_by": "dr. Holm",
                                  "decision": "start", "reason": "svær sygdom"}))
    assert shown.lower().startswith("tidspunkt 03.03.2025 kl. 08.00 · vurderet af dr. holm · beslutning ")
    assert not re.search(r"\b(at|assessed_by|decision)\b", shown)
    consent = str(pages.fact_value({"informed_consent": True, "indication": "tæt kontakt", "justification": "4 dage"}))
    assert "informeret samtykke ja" in consent.lower() and "indikation tæt kontakt" in consent.lower()
