"""Refusals in Danish by default (issue 16 item 1): a guideline rule's refusal reaches a Danish page as a Danish
sentence (its template from the catalog, context ``refusal``), its values the page's way (dates dd.mm.åååå,
declared choices by their Danish terms), its fields by their Danish labels and its rule cited; the English page,
the CLI and the API keep the engine's English message byte for byte.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

from entry.web import i18n, pages
from tests.helpers import contents
from tests.test_i18n import flow
from tests.test_web_pages import STAFF, db, error_box, post  # noqa: F401
from workflows import case
from workflows.definition import Settings, Subject
from workflows.errors import FIELD_REF, Because, GuardRefused, Joined, UsageError, because, refusal_params
from workflows.registry import WORKFLOWS

ROOT = Path(__file__).resolve().parent.parent
#: Where ``because`` templates are written.
SOURCES = sorted([*ROOT.glob("workflows/*.py"), *ROOT.glob("engine/*.py")])
SNAKE = re.compile(r"\b[a-z0-9]+_[a-z0-9_]+\b")
#: Words of the engine's English sentences that a Danish refusal never has.
ENGLISH = re.compile(r"\b(the|give|needs|with|is|after|before|already|record|nothing|assessment|case definition)\b")


PEP_DOSE = {"consent": "on", "indication_note": "close contact", "justification": "medium risk, day 6"}

#: (what is posted, the Danish words the box says, the field's Danish label, the rule, the English message as the
#: engine wrote it before refusals were translated, its fields by their English labels).
MET_ON_PAGES = [
    ("/new/case_open", {"person": "person-2", "onset": "01.03.2025", "symptoms": ["rash"]},
     ["ikke et mistænkt tilfælde: casedefinitionen kræver et kriterium inden for 21 dage før symptomdebut",
      "epidemiologisk forbindelse til et tilfælde, rejse, flere seksualpartnere, MSM"],
     "Epidemiologiske kriterier", "SST-mpox-7.1 §1.1",
     "not a suspected case: the case definition needs a criterion within 21 days before onset (epi_link, travel, "
     "multiple_partners, msm); give them with Symptoms and Epidemiological criteria (SST-mpox-7.1 §1.1)"),
    ("/new/case_open", {"person": "person-1", "onset": "01.03.2025", "symptoms": ["rash"], "criteria": ["msm"]},
     ["person-1 har allerede et åbent tilfælde, case-1 (bekræftet)", "siden for case-1"],
     "Begrundelse for endnu et åbent tilfælde", "SST-mpox-7.1 §3.1", None),
    ("/new/vaccine_offer", {"person": "person-2", "indication": "pep", "contact": "contact-1"},
     ["PEP tilbydes efter en vurdering ved en læge eller STPS", "angiv, hvem der har vurderet, i Vurderet af"],
     "Vurderet af", "SST-mpox-7.1 §6.2",
     "PEP is offered after an assessment by a doctor or STPS (the exposure risk, Table 1, and the risk of severe "
     "disease): give who assessed it with Assessed by (SST-mpox-7.1 §6.2)"),
    ("/objects/case-1/correct", {"reason": "typo", "if_version": "3"},
     ["intet at rette: angiv den rettede"], "Korrigeret symptomdebut", "SST-mpox-7.1 §1.1", None),
]


def test_refusals_met_on_a_danish_page_are_danish_with_fields_by_label_and_the_rule(client_for: Any,
                                                                                     db: Any) -> None:  # noqa: F811
    staff = client_for(STAFF)
    flow(staff)
    before = contents(db, reads=False)
    for path, data, words, label, rule, _english in MET_ON_PAGES:
        response = post(staff, path, data)
        assert response.status_code == 409, (path, response.text)
        box = error_box(response.text)
        message = box.split(" Regel:")[0]
        for said in words:
            assert said in message, (path, box)
        assert label in message and message.endswith(f"({rule})") and f"Regel: {rule}" in box, box
        assert not SNAKE.search(message) and "|" not in message and "⟦" not in message, box
        assert not ENGLISH.search(message), box
        assert contents(db, reads=False) == before


def test_a_dose_outside_the_window_is_refused_in_danish_with_danish_dates(client_for: Any,
                                                                          db: Any) -> None:  # noqa: F811
    staff = client_for(STAFF)
    flow(staff)
    response = post(staff, "/new/vaccine_offer", {"person": "person-2", "indication": "pep", "contact": "contact-1",
                                                  "assessed_by": "Dr. Hansen"})
    assert response.status_code == 303, response.text
    assert post(staff, "/clock/advance", {"amount": "6", "unit": "days"}).status_code == 303
    before = contents(db, reads=False)
    # Day 6 after the exposure of 02.03.2025: only in a special case, given with its reason (§6.2).
    response = post(staff, "/objects/course-1/dose", {"on": "08.03.2025", **PEP_DOSE})
    assert response.status_code == 409
    box = error_box(response.text)
    assert box.startswith("dosis 1 den 08.03.2025 er dag 6 efter eksponeringen den 02.03.2025: efter dag 4 gives "
                          "PEP kun i særlige tilfælde; angiv begrundelsen i Særlig begrundelse (dag 5-14) "
                          "(SST-mpox-7.1 §6.2)"), box
    assert contents(db, reads=False) == before
    # After day 14 (the last day 16.03.2025): no PEP any more.
    assert post(staff, "/clock/advance", {"amount": "9", "unit": "days"}).status_code == 303
    before = contents(db, reads=False)
    response = post(staff, "/objects/course-1/dose", {"on": "17.03.2025", **PEP_DOSE})
    assert response.status_code == 409
    box = error_box(response.text)
    assert box.startswith("dosis 1 den 17.03.2025 er efter dag 14 fra eksponeringen den 02.03.2025 (sidste dag "
                          "16.03.2025): PEP gives ikke længere (SST-mpox-7.1 §6.2)"), box
    assert "2025-03" not in box and not ENGLISH.search(box.split(" Regel:")[0])
    assert contents(db, reads=False) == before


def test_the_english_page_keeps_the_engines_english_message(client_for: Any) -> None:
    staff = client_for(STAFF)
    flow(staff)
    staff.headers["Accept-Language"] = "en"
    for path, data, _words, _label, _rule, english in MET_ON_PAGES:
        if english is None:
            continue
        response = post(staff, path, data)
        assert response.status_code == 409
        assert error_box(response.text).startswith(english + " Rule: "), error_box(response.text)


def test_the_api_keeps_the_english_message_and_carries_the_template(client_for: Any) -> None:
    staff = client_for(STAFF)
    flow(staff)
    for language in ("da", "en"):
        response = staff.post("/api/courses", json={"person": "person-2", "indication": "pep", "contact": "contact-1"},
                              headers={"X-CSRF-Token": staff.csrf, "Accept-Language": language})
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["message"] == ("PEP is offered after an assessment by a doctor or STPS (the exposure risk, Table "
                                   "1, and the risk of severe disease): give who assessed it with assessed_by "
                                   "(SST-mpox-7.1 §6.2)")
        assert body["params"]["template"].startswith("PEP is offered after an assessment")


def test_the_engines_english_message_is_unchanged() -> None:
    """The CLI and the API say the refusals as before: the templates filled in are the old texts."""
    assert str(because("the dose date %(on)s is after today (%(today)s): record a dose once given",
                       on=date(2025, 3, 9), today=date(2025, 3, 3))) == (
        "the dose date 2025-03-09 is after today (2025-03-03): record a dose once given")
    subject = Subject("case-1", "new", None, datetime(2025, 3, 3, 9, tzinfo=UTC), Settings())
    refusal = case._case_definition(subject, {"symptoms": [], "criteria": ["msm"]})
    assert refusal == ("not a suspected case: the case definition needs a symptom: unexplained rash, or another "
                       "symptom that can be mpox (fever, headache, myalgia, back_pain, fatigue, lymphadenopathy, "
                       "proctitis, chills, other); give them with ⟦symptoms⟧ and ⟦criteria⟧")
    assert isinstance(refusal, Because) and refusal.values["symptoms"][0] == "fever"


def test_a_because_is_its_english_text_and_its_parts_are_plain() -> None:
    made = because("%(contact)s: give %(risks)s by %(on)s (%(kinds)s)", contact="contact-1",
                   risks=Joined(("high", "medium", "low"), "|"), on=date(2025, 3, 1), kinds=["sexual", "sharps"])
    assert made == "contact-1: give high|medium|low by 2025-03-01 (sexual, sharps)"
    assert made.template == "%(contact)s: give %(risks)s by %(on)s (%(kinds)s)"
    assert made.values == {"contact": "contact-1", "risks": ["high", "medium", "low"], "on": "2025-03-01",
                           "kinds": ["sexual", "sharps"]}
    error = UsageError(made)
    assert error.params == refusal_params(made) and json.loads(json.dumps(error.params)) == error.params
    assert str(error) == made and error.template == made
    assert UsageError("plain text").params == {}


def test_the_page_renders_values_the_danish_way() -> None:
    error = GuardRefused("x (SST-mpox-7.1 §6.2)", rule="SST-mpox-7.1 §6.2", params=refusal_params(because(
        "%(contact)s died on %(died)s (%(kinds)s); %(case)s is %(state)s, until %(until)s",
        contact="contact-1", died=date(2025, 3, 1), kinds=["sexual"], case="case-1", state="confirmed",
        until="today")))
    i18n.activate("da")
    try:
        # No Danish template for this made-up one: the English template with its values the Danish way.
        assert pages.danish_refusal(error) == ("contact-1 died on 01.03.2025 (seksualpartner); case-1 is bekræftet, "
                                               "until i dag (SST-mpox-7.1 §6.2)")
    finally:
        i18n.activate(None)


def test_a_part_made_with_because_and_a_dated_phrase_are_danish_too() -> None:
    when = because("dose 1 was given on %(on)s", on=date(2025, 3, 1))
    made = because("%(course)s is under way and %(when)s (%(where)s)", course="course-1", when=when,
                   where=["2025-01-02 (given elsewhere)"])
    assert made == "course-1 is under way and dose 1 was given on 2025-03-01 (2025-01-02 (given elsewhere))"
    assert made.values["when"] == {"template": "dose 1 was given on %(on)s", "values": {"on": "2025-03-01"}}
    error = GuardRefused(made, rule="SST-mpox-7.1 §6.4", params=refusal_params(made))
    i18n.activate("da")
    try:
        assert pages.danish_refusal(error) == ("course-1 is under way and dosis 1 blev givet den 01.03.2025 "
                                               "(02.01.2025 (givet andetsteds)) (SST-mpox-7.1 §6.4)")
    finally:
        i18n.activate(None)


def test_the_reasons_a_course_ended_are_in_the_catalog_as_they_are_stored() -> None:
    from workflows import course

    assert set(course.ENDED_PHRASES) == {course.PEP_WINDOW_ENDED, course.MPOX_ENDED}


def _catalog() -> Any:
    with (ROOT / "entry/locale/da/LC_MESSAGES/messages.po").open("rb") as po:
        return read_po(po, locale="da")


def test_every_because_template_has_a_danish_translation_that_fits_its_values() -> None:
    catalog = _catalog()
    found = {text for path in SOURCES for _line, text in i18n.refusal_templates(path.read_text(encoding="utf-8"))}
    assert len(found) > 140
    for template in sorted(found):
        entry = catalog.get(template, context="refusal")
        assert entry is not None and entry.string and not entry.fuzzy, template
        names = set(re.findall(r"%\((\w+)\)s", template))
        assert set(re.findall(r"%\((\w+)\)s", entry.string)) <= names, template
        assert set(FIELD_REF.findall(entry.string)) == set(FIELD_REF.findall(template)), template
        assert entry.string % dict.fromkeys(names, "x")  # a translation that formats


def _returns_literal_text(function: Any) -> list[str]:
    """The ``return "..."`` and ``return f"..."`` of a guard's source (a factory's for a closure)."""
    source = textwrap.dedent(inspect.getsource(function))
    return [ast.unparse(node.value)[:60] for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Return) and isinstance(node.value, (ast.JoinedStr, ast.Constant, ast.BinOp))
            and not (isinstance(node.value, ast.Constant) and node.value.value is None)]


def test_every_guard_of_every_workflow_refuses_with_a_translatable_template() -> None:
    """Walk every guard of every transition: its refusals are ``because(...)`` (never a bare text), and the source
    it is in is one the catalog's extractor reads."""
    seen = 0
    for definition in WORKFLOWS.values():
        for spec in definition.transitions:
            for guard in spec.guards:
                check = guard.check
                outer = check.__globals__.get(check.__qualname__.split(".<locals>")[0], check)
                assert _returns_literal_text(outer) == [], (definition.kind, spec.trigger, check.__qualname__)
                assert Path(inspect.getsourcefile(outer) or "").resolve() in {p.resolve() for p in SOURCES}
                seen += 1
    assert seen > 50


@pytest.mark.parametrize("language", ["da", "en"])
def test_a_translation_never_leaks_into_the_engines_message(language: str) -> None:
    i18n.activate(language)
    try:
        made = because("nothing to correct: give the corrected ⟦onset⟧, ⟦pcr_on⟧ or ⟦clade⟧")
        assert made == "nothing to correct: give the corrected ⟦onset⟧, ⟦pcr_on⟧ or ⟦clade⟧"
    finally:
        i18n.activate(None)
