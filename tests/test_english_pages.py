"""The pages in English by the user's choice (issue 16, item 1): English that reads as English, not as the
declarations' identifiers. A realistic flow through the pages with a browser asking for English: the worklist, a
case, a contact (face to face, its PEP window), a vaccination course (dose 1 given) and the auditor's desk after
timers fired; no snake_case identifier in their visible text (code-like text inside ``<code>``/``<pre>``, such as
a diagram's Mermaid source, aside). And the English catalog gives every declared word (every entry with a context
but the refusals, whose msgids are the engine's English) a translation.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

from entry.web import i18n
from tests.test_i18n import flow
from tests.test_web_pages import AUDITOR, STAFF, api, main, post

ROOT = Path(__file__).resolve().parent.parent
#: snake_case: two or more lowercase words joined by "_" (``dose1_given``, ``phone_notification_due``).
SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


def english_text(page: str) -> str:
    """The visible text of a page's content, without code-like blocks (``<code>``, ``<pre>``, scripts)."""
    content = re.sub(r"<(code|pre|script|style|template)\b[^>]*>.*?</\1>", " ", main(page), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", content)).split())


def identifiers(page: str) -> list[str]:
    return SNAKE.findall(english_text(page))


def test_english_pages_show_no_identifiers_in_a_realistic_flow(client_for: Any) -> None:
    staff = client_for(STAFF)
    staff.headers["Accept-Language"] = "en"
    flow(staff)  # a person, a confirmed case (PCR, consent), a face-to-face contact
    assert post(staff, "/new/person_add", {"ref": "REF-3", "born": "02.02.1980"}).status_code == 303
    api(staff, "/api/courses", {"person": "person-3", "indication": "prep", "criteria": ["msm_two_partners_12w"],
                                "criterion_on": "2025-02-20"})
    assert api(staff, "/api/courses/course-1/dose", {"on": "2025-03-03"})["state"] == "dose1_given"
    # A day and a half on: the case's phone notification and the contact's tasks fall due and fire.
    engine = staff.app.state.web.engine()
    clock = engine.simulated_clock
    clock.set(clock.now() + timedelta(days=1, hours=12))
    engine.fire_due(limit=100)
    engine.save_clock()
    fired = {e["actor"] for e in engine.audit() if str(e["actor"]).startswith("timer:")}
    assert "timer:phone_notification_due" in fired, fired

    pages = {path: staff.get(path) for path in ("/worklist", "/objects/case-1", "/objects/contact-1",
                                                 "/objects/course-1", "/objects/person-2", "/list/contacts")}
    auditor = client_for(AUDITOR)
    auditor.headers["Accept-Language"] = "en"
    pages["/audit"] = auditor.get("/audit", params={"size": "200"})
    phone = next(e for e in engine.audit() if e["actor"] == "timer:phone_notification_due")
    pages["/audit/entries"] = auditor.get(f"/audit/entries/{phone['seq']}")
    for path, response in pages.items():
        assert response.status_code == 200, path
        assert '<html lang="en">' in response.text, path
        assert identifiers(response.text) == [], path

    case = english_text(pages["/objects/case-1"].text)
    assert "confirmed" in case and "PCR sample date" in case
    contact = english_text(pages["/objects/contact-1"].text)
    assert "face to face (3 hours within 2 m)" in contact and "PEP window" in contact
    assert "the PEP window closes" in contact
    course = english_text(pages["/objects/course-1"].text)
    assert "dose 1 given" in course
    assert "MSM with more than one sexual partner within 12 weeks" in course
    desk = english_text(pages["/audit"].text)
    assert "Deadline: phone notification to STPS due" in desk
    assert "Deadline: phone notification to STPS due" in english_text(pages["/audit/entries"].text)


def test_the_identifier_check_finds_one() -> None:
    """The check above can fail: an identifier in a page's text is found, one in <code> or a tag is not."""
    page = ('<main><p>Deadline: phone_notification_due</p><code>dose1_given --&gt; dose2_due</code>'
            '<a href="/objects/case-1" data-state="dose1_given">case-1</a></main>')
    assert identifiers(page) == ["phone_notification_due"]


def test_every_declared_word_has_an_english_translation() -> None:
    """Every entry of the English catalog with a context (a state, a value, a trigger, an operation, a fact) has a
    msgstr, none fuzzy; the refusals' msgids are already the engine's English and may stay the identity."""
    with (ROOT / "entry/locale/en/LC_MESSAGES/messages.po").open("rb") as po:
        catalog = read_po(po, locale="en")
    contexts = {m.context for m in catalog if m.id}
    assert {"state", "value", "trigger", "operation", "fact"} <= contexts
    declared = [m for m in catalog if m.id and m.context and m.context != "refusal"]
    assert len(declared) > 250
    missing = sorted((m.context, m.id) for m in declared if not m.string or m.fuzzy)
    assert missing == []
    # And what the pages show: no English translation of a declared word is still an identifier.
    assert [m.string for m in declared if SNAKE.search(m.string)] == []


def test_english_words_of_the_declarations() -> None:
    i18n.activate("en")
    try:
        assert i18n.state("dose1_given") == "dose 1 given" and i18n.state("dose2_due") == "dose 2 due"
        assert i18n.term("not_indicated") == "not indicated"
        assert i18n.term("healthcare_with_ppe") == "health staff with the prescribed PPE"
        assert i18n.trigger("pep_window_closes") == "the PEP window closes"
        assert i18n.fact("pregnant") == "Pregnant" and i18n.fact("pcr_on") == "PCR sample date"
        assert i18n.fact("not_in_the_catalog") == "not in the catalog"  # a fact the catalog lacks: its words
    finally:
        i18n.activate(None)
