"""Vaccination courses through the command line (``vaccine offer|dose|decline``, ``list courses``, ``due``,
``diagram course``, ``clock advance``; §6).

Driven in-process through ``entry.cli.app`` on SQLite and on PostgreSQL (the ``cli_db`` fixture), on a simulated
clock that starts on Monday 2025-03-03 at 08:00 in Copenhagen. The usual story: person-1 has case-1, confirmed by
PCR (onset 2025-02-28, PCR 2025-03-02) and consenting to STPS tracing; person-2 is its sexual partner
(contact-1, exposed 2025-03-02, high risk), person-3 its face-to-face contact (contact-2, low risk by a clinician's
assessment: low comes only from one). A PEP offer names its assessor (§6.2), a dated PrEP criterion its date (§6.1).
"""

from __future__ import annotations

import gc
import json
import re
import warnings
from typing import Any

import pytest

from entry.cli import app
from tests.test_cli import (
    LOCAL_INSTANT,
    _open_connections,
    add_person,
    cli,
    describe,
    doc,
    ok,
    refused,
    runner,
)

COURSE_STATES = ("offered", "dose1_given", "dose2_due", "completed", "declined", "cancelled")
S6_1, S6_2, S6_3, S6_4 = (f"SST-mpox-7.1 {s}" for s in ("§6.1", "§6.2", "§6.3", "§6.4"))
CONSENT = ("--consent", "--indication-note", "sexual partner, high risk (Table 1)",
           "--justification", "exposed yesterday, optimal window")


@pytest.fixture
def traced(cli_db: str) -> str:
    for ref in ("REF-CASE", "REF-P2", "REF-P3"):
        add_person(cli_db, ref)
    ok(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-02-28", "--confirmed", "--pcr-on",
       "2025-03-02", "--actor", "staff:test")
    ok(cli_db, "case", "consent", "case-1", "--tracing", "yes", "--actor", "staff:test")
    ok(cli_db, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-02",
       "--kind", "sexual", "--actor", "staff:stps")
    ok(cli_db, "contact", "add", "--case", "case-1", "--person", "person-3", "--exposed", "2025-03-02",
       "--kind", "face_to_face", "--risk", "low", "--reason", "no physical contact, droplets unlikely",
       "--actor", "staff:stps")
    return cli_db


def offer_prep(url: str, person: str, criteria: str = "msm_sti_24w", *extra: str) -> dict[str, Any]:
    dated = ("--criterion-on", "2025-02-24") if "msm_" in criteria else ()
    return dict(doc(url, "vaccine", "offer", "--person", person, "--indication", "prep", "--criteria", criteria,
                    *dated, "--actor", "staff:clinic", *extra))


def pending(view: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["due_at"] for t in view["timers"] if t["status"] == "pending"}


def course_tasks(url: str, course: str = "course-1") -> list[tuple[str, str, bool]]:
    return [(t["task"], t["due_at"], t["overdue"]) for t in doc(url, "due") if t["object"] == course]


# ---- vaccine offer -------------------------------------------------------------------------------------------


def test_vaccine_offer_pep_json_has_the_contract_fields(traced: str) -> None:
    assert any(t["task"].startswith("assess PEP") for t in doc(traced, "due") if t["object"] == "contact-1")
    view = doc(traced, "vaccine", "offer", "--person", "person-2", "--indication", "pep", "--contact", "contact-1",
               "--assessed-by", "dr. Lund", "--actor", "dr:infection")
    assert re.fullmatch(r"course-\d+", view["id"]) and view["id"] == "course-1"
    assert (view["kind"], view["state"], view["workflow"], view["person"]) == (
        "course", "offered", "course@SST-mpox-7.1", "person-2")
    assert (view["indication"], view["doses_planned"], view["plan_rule"]) == ("pep", 2, S6_4)
    assert (view["contact"], view["exposure_on"], view["dose1_on"]) == ("contact-1", "2025-03-02", None)
    assert [(t["name"], t["due_at"], t["status"]) for t in view["timers"]] == [
        ("pep_window_closes", "2025-03-17T00:00:00+01:00", "pending")]
    for timer in view["timers"]:
        assert LOCAL_INSTANT.match(timer["due_at"]), timer
    assert doc(traced, "show", "course-1") == view
    # The contact's PEP assessment is done: off the worklist.
    assert not any(t["task"].startswith("assess PEP") for t in doc(traced, "due"))
    [entry] = doc(traced, "audit", "--entity", "course-1")
    assert (entry["trigger"], entry["from"], entry["to"], entry["actor"], entry["rule"]) == (
        "offer", None, "offered", "dr:infection", "SST-mpox-7.1 §6")
    text = ok(traced, "show", "course-1").stdout
    assert "course-1" in text and "offered" in text and "pep_window_closes" in text


def test_vaccine_offer_prep_decides_the_dose_plan_and_list_courses_shows_them(cli_db: str) -> None:
    people = {
        "born-1970-12-31": ("--born", "1970-12-31"),
        "born-1971-01-01": ("--born", "1971-01-01"),
        "smallpox": ("--smallpox-vaccinated",),
        "immuno-smallpox": ("--immunocompromised", "--smallpox-vaccinated"),
        "immuno-born-1965": ("--immunocompromised", "--born", "1965-01-01"),
        "nobody-special": (),
    }
    expected = {"born-1970-12-31": 1, "born-1971-01-01": 2, "smallpox": 1, "immuno-smallpox": 2,
                "immuno-born-1965": 2, "nobody-special": 2}
    made = []
    for ref, flags in people.items():
        person = add_person(cli_db, ref, *flags)
        view = offer_prep(cli_db, person)
        assert (view["doses_planned"], view["plan_rule"], view["indication"]) == (expected[ref], S6_4, "prep"), ref
        assert view["timers"] == []
        made.append((view["id"], person, expected[ref]))

    listed = doc(cli_db, "list", "courses", "--json")
    assert [(c["id"], c["person"], c["doses_planned"]) for c in listed] == made
    assert all((c["kind"], c["state"], c["workflow"]) == ("course", "offered", "course@SST-mpox-7.1")
               for c in listed)
    # A one-dose plan completes with its dose; --state filters.
    one_dose = made[0][0]
    assert doc(cli_db, "vaccine", "dose", one_dose, "--on", "2025-03-03")["state"] == "completed"
    assert [c["id"] for c in doc(cli_db, "list", "courses", "--state", "completed")] == [one_dose]
    assert [c["id"] for c in doc(cli_db, "list", "courses", "--state", "offered")] == [c for c, _, _ in made[1:]]
    assert doc(cli_db, "list", "courses", "--state", "declined") == []
    text = ok(cli_db, "list", "courses").stdout
    assert all(course in text for course, _, _ in made) and "completed" in text


# ---- exit codes ----------------------------------------------------------------------------------------------


def test_wrong_usage_exits_2_and_changes_nothing(traced: str) -> None:
    offer = ("vaccine", "offer", "--person", "person-2")
    unknown_indication = refused(traced, *offer, "--indication", "booster", code=2)
    assert "booster" in unknown_indication.stderr and "pep" in unknown_indication.stderr
    unknown_criterion = refused(traced, *offer, "--indication", "prep", "--criteria", "msm_sti_24w,frequent_flyer",
                                code=2)
    assert "frequent_flyer" in unknown_criterion.stderr and "msm_two_partners_12w" in unknown_criterion.stderr
    refused(traced, *offer, "--indication", "pep", "--contact", "contact-1", "--criteria", "msm_sti_24w", code=2)
    refused(traced, *offer, "--indication", "prep", "--criteria", "msm_sti_24w", "--contact", "contact-1", code=2)
    offer_prep(traced, "person-3")  # course-1
    impossible = refused(traced, "vaccine", "dose", "course-1", "--on", "2025-02-30", code=2)
    assert "2025-02-30" in impossible.stderr and "YYYY-MM-DD" in impossible.stderr
    refused(traced, "vaccine", "dose", "course-1", code=2)  # --on is required
    refused(traced, "list", "courses", "--state", "given", code=2)


def test_unknown_ids_exit_4(traced: str) -> None:
    offer_prep(traced, "person-3")  # course-1
    refused(traced, "vaccine", "offer", "--person", "person-99", "--indication", "prep", "--criteria",
            "msm_sti_24w", code=4)
    missing_contact = refused(traced, "vaccine", "offer", "--person", "person-2", "--indication", "pep",
                              "--contact", "contact-99", code=4)
    assert "contact-99" in missing_contact.stderr
    refused(traced, "vaccine", "dose", "course-99", "--on", "2025-03-03", code=4)
    not_a_course = refused(traced, "vaccine", "dose", "case-1", "--on", "2025-03-03", code=4)
    assert "case-1" in not_a_course.stderr
    refused(traced, "vaccine", "decline", "course-99", code=4)
    refused(traced, "vaccine", "decline", "contact-1", code=4)
    refused(traced, "show", "course-99", code=4)


def test_rule_refusals_exit_3_and_cite_the_section(traced: str) -> None:
    add_person(traced, "REF-HAD-MPOX", "--previous-mpox")  # person-4
    add_person(traced, "REF-CHILD", "--born", "2015-06-01")  # person-5
    offer = ("vaccine", "offer", "--actor", "staff:clinic")

    had_mpox = refused(traced, *offer, "--person", "person-4", "--indication", "prep", "--criteria",
                       "msm_sti_24w", "--criterion-on", "2025-02-24", code=3)
    assert "not vaccinated" in had_mpox.stderr and S6_3 in had_mpox.stderr
    low = refused(traced, *offer, "--person", "person-3", "--indication", "pep", "--contact", "contact-2", code=3)
    assert "not needed" in low.stderr and S6_2 in low.stderr
    other = refused(traced, *offer, "--person", "person-3", "--indication", "pep", "--contact", "contact-1", code=3)
    assert "contact-1 is about person-2, not person-3" in other.stderr and S6_2 in other.stderr
    no_contact = refused(traced, *offer, "--person", "person-2", "--indication", "pep", code=3)
    assert "--contact" in no_contact.stderr and S6_2 in no_contact.stderr
    no_criteria = refused(traced, *offer, "--person", "person-3", "--indication", "prep", code=3)
    assert "--criteria" in no_criteria.stderr and S6_1 in no_criteria.stderr
    for criterion in ("individual_assessment", "travel_clade_i"):
        alone = refused(traced, *offer, "--person", "person-3", "--indication", "prep", "--criteria", criterion,
                        code=3)
        assert "--assessed-by" in alone.stderr and S6_1 in alone.stderr

    # PEP dose 1 without the off-label records, a child without an assessing doctor.
    ok(traced, *offer, "--person", "person-2", "--indication", "pep", "--contact", "contact-1",
       "--assessed-by", "dr. Lund")  # course-1
    no_consent = refused(traced, "vaccine", "dose", "course-1", "--on", "2025-03-03", code=3)
    assert "--consent" in no_consent.stderr and "--justification" in no_consent.stderr
    assert S6_2 in no_consent.stderr
    partial = refused(traced, "vaccine", "dose", "course-1", "--on", "2025-03-03", "--consent",
                      "--indication-note", "sexual partner", code=3)
    assert "missing --justification" in partial.stderr
    prep_child = refused(traced, *offer, "--person", "person-5", "--indication", "prep", "--criteria",
                         "individual_assessment", "--assessed-by", "dr. Berg", code=3)
    assert "PrEP is not offered" in prep_child.stderr and "§6.2.2" in prep_child.stderr
    ok(traced, "contact", "add", "--case", "case-1", "--person", "person-5", "--exposed", "2025-03-02",
       "--kind", "household", "--actor", "staff:stps")  # contact-3
    ok(traced, *offer, "--person", "person-5", "--indication", "pep", "--contact", "contact-3",
       "--assessed-by", "dr. Berg")  # course-2
    child = refused(traced, "vaccine", "dose", "course-2", "--on", "2025-03-03", *CONSENT, code=3)
    assert "under 12" in child.stderr and "§6.2.2" in child.stderr and "--assessed-by" in child.stderr

    # A second course while one is under way.
    second = refused(traced, *offer, "--person", "person-2", "--indication", "prep", "--criteria", "msm_sti_24w",
                     "--criterion-on", "2025-02-24", code=3)
    assert "under way" in second.stderr and S6_3 in second.stderr
    # Dose 2 too early, a third dose.
    ok(traced, "vaccine", "dose", "course-1", "--on", "2025-03-03", *CONSENT)
    ok(traced, "clock", "advance", "--days", "27")
    early = refused(traced, "vaccine", "dose", "course-1", "--on", "2025-03-30", code=3)
    assert "not before 2025-03-31" in early.stderr and S6_4 in early.stderr
    ok(traced, "clock", "advance", "--days", "1")
    ok(traced, "vaccine", "dose", "course-1", "--on", "2025-03-31")
    third = refused(traced, "vaccine", "dose", "course-1", "--on", "2025-03-31", code=3)
    assert "no boosters" in third.stderr and S6_3 in third.stderr
    after_completed = refused(traced, *offer, "--person", "person-2", "--indication", "prep", "--criteria",
                              "msm_sti_24w", "--criterion-on", "2025-03-01", code=3)
    assert "completed" in after_completed.stderr and S6_3 in after_completed.stderr


# ---- vaccine dose --------------------------------------------------------------------------------------------


def test_vaccine_dose_records_pep_consent_and_the_assessing_doctor(traced: str) -> None:
    ok(traced, "vaccine", "offer", "--person", "person-2", "--indication", "pep", "--contact", "contact-1",
       "--assessed-by", "dr. Lund")
    view = doc(traced, "vaccine", "dose", "course-1", "--on", "2025-03-03", *CONSENT, "--assessed-by", "dr. Holm",
               "--actor", "nurse:ida")
    assert (view["state"], view["dose1_on"]) == ("dose1_given", "2025-03-03")
    assert view["consent"] == {"informed_consent": True, "indication": "sexual partner, high risk (Table 1)",
                               "justification": "exposed yesterday, optimal window"}
    assert view["dose_assessments"] == [{"on": "2025-03-03", "assessed_by": "dr. Holm"}]
    timers = {t["name"]: (t["due_at"], t["status"]) for t in view["timers"]}
    assert timers == {"pep_window_closes": ("2025-03-17T00:00:00+01:00", "cancelled"),
                      "dose2_due": ("2025-03-31T00:00:00+02:00", "pending")}
    entry = doc(traced, "audit", "--entity", "course-1")[-1]
    assert (entry["trigger"], entry["from"], entry["to"], entry["actor"], entry["rule"]) == (
        "dose", "offered", "dose1_given", "nurse:ida", S6_4)

    # A child under 12 with the assessing doctor is accepted (PEP only, §6.2.2).
    child = add_person(traced, "REF-CHILD", "--born", "2015-06-01")
    ok(traced, "contact", "add", "--case", "case-1", "--person", child, "--exposed", "2025-03-02",
       "--kind", "household", "--actor", "staff:stps")  # contact-3
    course = doc(traced, "vaccine", "offer", "--person", child, "--indication", "pep", "--contact", "contact-3",
                 "--assessed-by", "dr. Berg")
    dosed = doc(traced, "vaccine", "dose", course["id"], "--on", "2025-03-03", *CONSENT, "--assessed-by", "dr. Berg")
    assert (dosed["state"], dosed["dose_assessments"]) == (
        "dose1_given", [{"on": "2025-03-03", "assessed_by": "dr. Berg"}])


# ---- dose 2 through the clock, the worklist, the overdue setting ------------------------------------------------


def test_clock_advance_fires_dose2_due_and_due_marks_it_overdue(traced: str) -> None:
    offer_prep(traced, "person-3")  # course-1
    ok(traced, "vaccine", "dose", "course-1", "--on", "2025-03-03")
    task = ("give dose 2 (from 2025-03-31)", "2025-03-31T00:00:00+02:00")
    assert course_tasks(traced) == [(*task, False)]

    early = doc(traced, "clock", "advance", "--to", "2025-03-30T23:59:59+02:00")
    assert [f for f in early["fired"] if f["object"] == "course-1"] == []
    moved = doc(traced, "clock", "advance", "--to", "2025-03-31T00:00:00+02:00")
    fired = [(f["name"], f["fired_at"], f["from"], f["to"], f["status"]) for f in moved["fired"]
             if f["object"] == "course-1"]
    assert fired == [("dose2_due", "2025-03-31T00:00:00+02:00", "dose1_given", "dose2_due", "fired")]
    assert doc(traced, "show", "course-1")["state"] == "dose2_due"
    assert [c["id"] for c in doc(traced, "list", "courses", "--state", "dose2_due")] == ["course-1"]
    entry = doc(traced, "audit", "--entity", "course-1")[-1]
    assert (entry["trigger"], entry["actor"], entry["at"], entry["rule"]) == (
        "dose2_due", "timer:dose2_due", "2025-03-31T00:00:00+02:00", S6_4)
    assert course_tasks(traced) == [(*task, False)]

    ok(traced, "clock", "advance", "--to", "2025-04-13T23:59:59+02:00")
    assert course_tasks(traced) == [(*task, False)]
    ok(traced, "clock", "advance", "--to", "2025-04-14T00:00:00+02:00")
    assert course_tasks(traced) == [(*task, True)]
    assert "OVERDUE" in ok(traced, "due").stdout

    done = doc(traced, "vaccine", "dose", "course-1", "--on", "2025-04-14")
    assert (done["state"], done["dose2_on"]) == ("completed", "2025-04-14")
    assert course_tasks(traced) == []


def test_the_overdue_days_come_from_the_environment(cli_db: str) -> None:
    person = add_person(cli_db, "REF-P")
    offer_prep(cli_db, person)
    ok(cli_db, "vaccine", "dose", "course-1", "--on", "2025-03-03", env={"MPOXFLOW_DOSE2_OVERDUE_DAYS": "3"})
    ok(cli_db, "clock", "advance", "--to", "2025-04-02T23:59:59+02:00")
    assert course_tasks(cli_db) == [("give dose 2 (from 2025-03-31)", "2025-03-31T00:00:00+02:00", False)]
    ok(cli_db, "clock", "advance", "--to", "2025-04-03T00:00:00+02:00")
    assert course_tasks(cli_db) == [("give dose 2 (from 2025-03-31)", "2025-03-31T00:00:00+02:00", True)]


@pytest.mark.both_backends
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the leak is asserted below
def test_a_bad_overdue_setting_exits_2_and_leaves_no_connection_open(cli_db: str) -> None:
    """CLI.md: exit 2 for wrong usage; and a command run in-process closes what it opened (as in test_cli),
    also when the deployment setting MPOXFLOW_DOSE2_OVERDUE_DAYS is malformed."""
    gc.collect()
    assert _open_connections(cli_db) == 0
    gc.disable()  # so that only closing, not the garbage collector, can make the count go down
    try:
        bad = cli(cli_db, "due", "--json", env={"MPOXFLOW_DOSE2_OVERDUE_DAYS": "two weeks"})
        left_open = _open_connections(cli_db)
        exit_code, stderr, stdout, seen = bad.exit_code, bad.stderr, bad.stdout, describe(bad)
        del bad  # its traceback holds the command's frames, and so whatever they left open
    finally:
        gc.enable()
        with warnings.catch_warnings():  # collect here whatever was leaked, so no later test is blamed for it
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    assert exit_code == 2, seen
    assert "MPOXFLOW_DOSE2_OVERDUE_DAYS" in stderr
    assert json.loads(stdout)["exit_code"] == 2
    assert left_open == 0, f"{left_open} database connection(s) left open by a command refused for its setting"


def test_clock_advance_lapses_an_offered_pep_course_at_its_window_and_cancels_it_after_the_grace(traced: str) -> None:
    """Issue 12 item 9: the window's close (00:00 after day 14) lapses the offer; 7 days later it is cancelled, and
    a dose on it is then refused citing §6.2 (not §6.3)."""
    ok(traced, "vaccine", "offer", "--person", "person-2", "--indication", "pep", "--contact", "contact-1",
       "--assessed-by", "dr. Lund")
    moved = doc(traced, "clock", "advance", "--to", "2025-03-17T00:00:00+01:00")
    assert [(f["name"], f["fired_at"], f["from"], f["to"]) for f in moved["fired"] if f["object"] == "course-1"] == [
        ("pep_window_closes", "2025-03-17T00:00:00+01:00", "offered", "offered")]
    view = doc(traced, "show", "course-1")
    assert (view["state"], view["lapsed_at"]) == ("offered", "2025-03-17T00:00:00+01:00")
    assert pending(view) == {"pep_late_entry_ends": "2025-03-24T00:00:00+01:00"}
    moved = doc(traced, "clock", "advance", "--to", "2025-03-24T00:00:00+01:00")
    assert [(f["name"], f["from"], f["to"], f["status"]) for f in moved["fired"] if f["object"] == "course-1"] == [
        ("pep_late_entry_ends", "offered", "cancelled", "missed")]
    view = doc(traced, "show", "course-1")
    assert view["state"] == "cancelled" and S6_2 in view["ended_because"]
    late = refused(traced, "vaccine", "dose", "course-1", "--on", "2025-03-16", *CONSENT, code=3)
    assert "cancelled" in late.stderr and S6_2 in late.stderr and S6_3 not in late.stderr


# ---- mpox after dose 1, decline ------------------------------------------------------------------------------


def test_a_confirmed_case_for_the_person_cancels_the_course_and_dose_2_is_refused(traced: str) -> None:
    ok(traced, "vaccine", "offer", "--person", "person-2", "--indication", "pep", "--contact", "contact-1",
       "--assessed-by", "dr. Lund")
    ok(traced, "vaccine", "dose", "course-1", "--on", "2025-03-03", *CONSENT)
    ok(traced, "clock", "advance", "--days", "5")
    case = doc(traced, "case", "open", "--person", "person-2", "--onset", "2025-03-07", "--confirmed",
               "--pcr-on", "2025-03-08", "--actor", "staff:lab")
    view = doc(traced, "show", "course-1")
    assert view["state"] == "cancelled" and S6_3 in view["ended_because"]
    assert {t["name"]: t["status"] for t in view["timers"]}["dose2_due"] == "cancelled"
    entries = doc(traced, "audit", "--entity", "course-1")
    assert (entries[-1]["trigger"], entries[-1]["from"], entries[-1]["to"], entries[-1]["rule"]) == (
        "mpox_confirmed", "dose1_given", "cancelled", S6_3)
    [confirm] = [e for e in doc(traced, "audit", "--entity", case["id"]) if e["trigger"] == "open_confirmed"]
    assert entries[-1]["at"] == confirm["at"] == "2025-03-08T08:00:00+01:00"
    assert course_tasks(traced) == []
    ok(traced, "clock", "advance", "--days", "23")
    refused(traced, "vaccine", "dose", "course-1", "--on", "2025-03-31", code=3)


@pytest.mark.parametrize("state", ["offered", "dose1_given"])
def test_vaccine_decline_ends_the_course_and_its_timers(cli_db: str, state: str) -> None:
    person = add_person(cli_db, "REF-P")
    offer_prep(cli_db, person)
    if state == "dose1_given":
        ok(cli_db, "vaccine", "dose", "course-1", "--on", "2025-03-03")
    view = doc(cli_db, "vaccine", "decline", "course-1", "--reason", "changed their mind")
    assert (view["state"], view["ended_because"]) == ("declined", "declined")
    assert pending(view) == {}
    assert course_tasks(cli_db) == []
    entry = doc(cli_db, "audit", "--entity", "course-1")[-1]
    assert (entry["trigger"], entry["from"], entry["to"], entry["reason"]) == (
        "decline", state, "declined", "changed their mind")
    again = refused(cli_db, "vaccine", "decline", "course-1", code=3)
    assert "declined" in again.stderr
    moved = doc(cli_db, "clock", "advance", "--days", "60")
    assert [f for f in moved["fired"] if f["object"] == "course-1"] == []


# ---- diagram -------------------------------------------------------------------------------------------------


def test_diagram_course_is_mermaid_with_every_state() -> None:
    result = runner.invoke(app, ["diagram", "course"])
    assert result.exit_code == 0, describe(result)
    assert "stateDiagram-v2" in result.stdout and "course@SST-mpox-7.1" in result.stdout
    for state in COURSE_STATES:
        assert re.search(rf"\b{state}\b", result.stdout), state
    assert "dose1_given --> dose2_due" in result.stdout
    as_json = runner.invoke(app, ["diagram", "course", "--json"])
    assert as_json.exit_code == 0, describe(as_json)
    document = json.loads(as_json.stdout)
    assert document["workflow"] == "course@SST-mpox-7.1"
    assert all(state in document["mermaid"] for state in COURSE_STATES)
