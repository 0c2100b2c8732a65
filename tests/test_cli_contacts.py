"""Close contacts through the command line (``contact ...``, §5; Table 1 risk and PEP windows, §6.2).

Driven in-process through ``entry.cli.app`` on SQLite and on PostgreSQL (the ``cli_db`` fixture), on a simulated
clock that starts on Monday 2025-03-03 at 08:00 in Copenhagen. The usual story: person-1 has case-1, confirmed by
PCR (onset 2025-02-28, PCR 2025-03-02, not healed, so infectious "until today"), and consents to STPS tracing.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from entry.cli import app
from tests.test_cli import (
    LOCAL_INSTANT,
    add_person,
    describe,
    doc,
    ok,
    refused,
    runner,
)

CONTACT_STATES = ("exposed", "monitored", "released", "symptomatic")
PEP_TIMERS = ("pep_optimal_window_closes", "pep_window_closes", "pep_assessment_due")
INFORM_TASK = "STPS informs the contact"

#: §5.1 exposure kinds and their §6.2 Table 1 risk (CLI.md).
TABLE_1 = {
    "household": "high",
    "sexual": "high",
    "mucosa_or_broken_skin": "high",
    "sharps": "high",
    "cleaning": "high",
    "intact_skin": "medium",
    "passenger_8h": "medium",
    "healthcare_no_ppe": "medium",
    "face_to_face": "medium",  # Table 1 (corrected CLI.md): over 3 hours within 2 m is not "low"
}


# ---- the story -------------------------------------------------------------------------------------------------


@pytest.fixture
def traced(cli_db: str) -> str:
    """person-1 with case-1 confirmed (onset 2025-02-28, PCR 2025-03-02) consenting to tracing; person-2 and
    person-3 not yet anybody's contacts."""
    for ref in ("REF-CASE", "REF-P2", "REF-P3"):
        add_person(cli_db, ref)
    ok(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-02-28", "--confirmed", "--pcr-on",
       "2025-03-02", "--actor", "staff:test")
    ok(cli_db, "case", "consent", "case-1", "--tracing", "yes", "--actor", "staff:test")
    return cli_db


def add_contact(url: str, person: str = "person-2", exposed: str = "2025-03-02", kind: str = "sexual",
                *extra: str, case: str = "case-1") -> dict[str, Any]:
    return dict(doc(url, "contact", "add", "--case", case, "--person", person, "--exposed", exposed,
                    "--kind", kind, "--actor", "staff:stps", *extra))


def timers(view: dict[str, Any], name: str, status: str | None = None) -> list[tuple[str, str]]:
    """(due_at, status) of every timer of that name, in due order; only those in ``status`` if given."""
    found = sorted((t["due_at"], t["status"]) for t in view["timers"] if t["name"] == name)
    return [t for t in found if status is None or t[1] == status]


def pending(view: dict[str, Any]) -> dict[str, str]:
    """The pending timers by name (there is at most one pending timer of a name)."""
    names = [t["name"] for t in view["timers"] if t["status"] == "pending"]
    assert len(names) == len(set(names)), f"more than one pending timer of a name: {view['timers']}"
    return {t["name"]: t["due_at"] for t in view["timers"] if t["status"] == "pending"}


def contact_tasks(url: str, contact: str = "contact-1") -> list[tuple[str, str, bool]]:
    """The contact's lines of the worklist: (task, due_at, overdue)."""
    return [(t["task"], t["due_at"], t["overdue"]) for t in doc(url, "due") if t["object"] == contact]


def exposure_timers(due_optimal: str, due_latest: str, due_monitoring: str) -> dict[str, str]:
    return {"pep_optimal_window_closes": due_optimal, "pep_window_closes": due_latest,
            "pep_assessment_due": due_latest, "monitoring_ends": due_monitoring}


def without_inform(timers_by_name: dict[str, str]) -> dict[str, str]:
    return {name: due for name, due in timers_by_name.items() if name != "inform_due"}


# ---- contact add -------------------------------------------------------------------------------------------------


def test_contact_add_json_has_the_contract_fields_and_the_exact_timers(traced: str) -> None:
    view = add_contact(traced, "person-2", "2025-03-02", "sexual")
    assert re.fullmatch(r"contact-\d+", view["id"]) and view["id"] == "contact-1"
    assert (view["kind"], view["state"], view["workflow"]) == ("contact", "exposed", "contact@SST-mpox-7.1")
    assert (view["person"], view["case"]) == ("person-2", "case-1")
    assert (view["exposure_kind"], view["risk"], view["pep_window"]) == ("sexual", "high", "optimal")
    assert (view["exposed_on"], view["last_exposure_on"]) == ("2025-03-02", "2025-03-02")

    # §6.2: best within 4 days, at the latest 14; §5.5: 21 days' monitoring. 00:00 local on D+N+1.
    assert without_inform(pending(view)) == exposure_timers(
        "2025-03-07T00:00:00+01:00", "2025-03-17T00:00:00+01:00", "2025-03-24T00:00:00+01:00")
    for timer in view["timers"]:
        assert {"name", "due_at", "status"} <= timer.keys()
        assert LOCAL_INSTANT.match(timer["due_at"]), timer
    rules = {t["name"]: t.get("rule") for t in view["timers"]}
    assert rules["monitoring_ends"] == "SST-mpox-7.1 §5.5"
    assert rules["pep_window_closes"] == rules["pep_optimal_window_closes"] == "SST-mpox-7.1 §6.2"

    # show prints the same object; the audit entry records who and under which rule.
    assert doc(traced, "show", "contact-1") == view
    entries = doc(traced, "audit", "--entity", "contact-1")
    assert [(e["trigger"], e["from"], e["to"], e["actor"], e["rule"]) for e in entries] == [
        ("add", None, "exposed", "staff:stps", "SST-mpox-7.1 §5.1")]
    assert entries[0]["at"] == "2025-03-03T08:00:00+01:00"
    # The text output names the contact and its state.
    text = ok(traced, "show", "contact-1").stdout
    assert "contact-1" in text and "exposed" in text and "monitoring_ends" in text


def test_every_exposure_kind_gets_its_table_1_risk_and_pep_window_and_list_contacts_shows_them(traced: str) -> None:
    expected: list[tuple[str, str, str, str]] = []  # (id, kind, risk, pep_window)
    for number, (kind, risk) in enumerate(TABLE_1.items(), start=1):
        person = add_person(traced, f"REF-K{number}")
        view = add_contact(traced, person, "2025-03-01", kind)
        assert (view["exposure_kind"], view["risk"]) == (kind, risk), kind
        if risk == "low":  # Table 1: PEP not needed
            assert view["pep_window"] == "not_indicated"
            assert not any(pending(view).get(name) for name in PEP_TIMERS), view["timers"]
        else:
            assert view["pep_window"] == "optimal"
            assert without_inform(pending(view)) == exposure_timers(
                "2025-03-06T00:00:00+01:00", "2025-03-16T00:00:00+01:00", "2025-03-23T00:00:00+01:00"), kind
        assert pending(view)["monitoring_ends"] == "2025-03-23T00:00:00+01:00"
        expected.append((view["id"], kind, risk, view["pep_window"]))

    # A clinician's different assessment, with its reason: it decides the PEP windows.
    raised = add_contact(traced, "person-2", "2025-03-01", "passenger_8h", "--risk", "high",
                         "--reason", "9 hours beside the case, who was coughing")
    assert (raised["exposure_kind"], raised["risk"], raised["pep_window"]) == ("passenger_8h", "high", "optimal")
    assert "pep_window_closes" in pending(raised)
    lowered = add_contact(traced, "person-3", "2025-03-01", "household", "--risk", "low",
                          "--reason", "separate flat, shared the hallway only")
    assert (lowered["risk"], lowered["pep_window"]) == ("low", "not_indicated")
    assert "pep_window_closes" not in pending(lowered)
    expected += [(raised["id"], "passenger_8h", "high", "optimal"),
                 (lowered["id"], "household", "low", "not_indicated")]

    listed = doc(traced, "list", "contacts")
    assert [(c["id"], c["exposure_kind"], c["risk"], c["pep_window"]) for c in listed] == expected
    for row in listed:
        assert (row["kind"], row["state"], row["workflow"], row["case"]) == (
            "contact", "exposed", "contact@SST-mpox-7.1", "case-1")
    assert [c["id"] for c in doc(traced, "list", "contacts", "--state", "exposed")] == [e[0] for e in expected]
    assert doc(traced, "list", "contacts", "--state", "released") == []
    text = ok(traced, "list", "contacts").stdout
    assert all(contact in text for contact, *_ in expected)


# ---- refusals ----------------------------------------------------------------------------------------------------


def test_contact_add_refusals_by_a_rule_exit_3_cite_the_rule_and_change_nothing(traced: str) -> None:
    add_person(traced, "REF-P4")
    add_person(traced, "REF-P5")
    ok(traced, "case", "open", "--person", "person-4", "--onset", "2025-03-01", "--symptoms", "rash",
       "--criteria", "msm")  # case-2: suspected
    ok(traced, "case", "open", "--person", "person-5", "--onset", "2025-02-28", "--confirmed", "--pcr-on",
       "2025-03-02")  # case-3: confirmed, consent not asked yet
    add = ("contact", "add", "--person", "person-2", "--kind", "sexual")

    suspected = refused(traced, *add, "--case", "case-2", "--exposed", "2025-03-02", code=3)
    assert "confirm" in suspected.stderr and "SST-mpox-7.1 §5.1" in suspected.stderr

    for outside in ("2025-02-27", "2025-02-01"):  # before the case's onset, 2025-02-28
        result = refused(traced, *add, "--case", "case-1", "--exposed", outside, code=3)
        assert "infectious period" in result.stderr and "2025-02-28" in result.stderr, result.stderr
        assert "SST-mpox-7.1 §5.1" in result.stderr
    future = refused(traced, *add, "--case", "case-1", "--exposed", "2025-03-04", code=3)
    assert "SST-mpox-7.1 §5.1" in future.stderr

    ppe = refused(traced, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-02",
                  "--kind", "healthcare_with_ppe", code=3)
    assert "SST-mpox-7.1 §5.1" in ppe.stderr

    no_consent = refused(traced, *add, "--case", "case-3", "--exposed", "2025-03-02", code=3)
    assert "case consent case-3 --tracing yes" in no_consent.stderr, no_consent.stderr
    assert "--anonymous-via-doctor" in no_consent.stderr
    assert "SST-mpox-7.1 §5.2" in no_consent.stderr

    no_reason = refused(traced, *add, "--case", "case-1", "--exposed", "2025-03-02", "--risk", "low", code=3)
    assert "--reason" in no_reason.stderr and "SST-mpox-7.1 §6.2" in no_reason.stderr

    assert doc(traced, "list", "contacts") == []
    add_contact(traced, "person-2", "2025-03-02", "sexual")
    duplicate = refused(traced, *add, "--case", "case-1", "--exposed", "2025-03-01", code=3)
    assert "contact-1" in duplicate.stderr
    # The same person may be a contact of another case.
    ok(traced, "case", "consent", "case-3", "--tracing", "yes")
    assert add_contact(traced, "person-2", "2025-03-02", "household", case="case-3")["id"] == "contact-2"


def test_contact_transition_refusals_exit_3_and_change_nothing(traced: str) -> None:
    add_contact(traced, "person-2", "2025-03-02", "sexual")
    refused(traced, "contact", "expose", "contact-1", "--exposed", "2025-03-02", "--kind", "healthcare_with_ppe",
            code=3)
    outside = refused(traced, "contact", "expose", "contact-1", "--exposed", "2025-02-20", "--kind", "sexual",
                      code=3)
    assert "infectious period" in outside.stderr and "SST-mpox-7.1 §5.1" in outside.stderr
    refused(traced, "contact", "correct", "contact-1", "--exposed", "2025-02-20", code=3)
    refused(traced, "contact", "correct", "contact-1", "--exposed", "2025-03-01", "--exposure", "2", code=3)
    early = refused(traced, "contact", "symptoms", "contact-1", "--onset", "2025-03-01", "--symptoms", "rash",
                    code=3)
    assert "2025-03-02" in early.stderr

    informed = doc(traced, "contact", "inform", "contact-1")
    assert informed["state"] == "monitored"
    twice = refused(traced, "contact", "inform", "contact-1", code=3)
    assert "inform" in twice.stderr and "monitored" in twice.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(("contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-02",
                      "--kind", "hug"), "hug", id="add-unknown-kind"),
        pytest.param(("contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-02-30",
                      "--kind", "sexual"), "2025-02-30", id="add-impossible-date"),
        pytest.param(("contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-02",
                      "--kind", "sexual", "--risk", "huge", "--reason", "x"), "huge", id="add-unknown-risk"),
        pytest.param(("contact", "expose", "contact-1", "--exposed", "2025-03-02", "--kind", "hug"), "hug",
                     id="expose-unknown-kind"),
        pytest.param(("contact", "expose", "contact-1", "--exposed", "2025-13-01", "--kind", "sexual"),
                     "2025-13-01", id="expose-impossible-date"),
        pytest.param(("contact", "correct", "contact-1", "--exposed", "2025-02-29"), "2025-02-29",
                     id="correct-impossible-date"),
        pytest.param(("contact", "symptoms", "contact-1", "--onset", "2025-03-03", "--symptoms", "itching"),
                     "itching", id="symptoms-unknown-symptom"),
    ],
)
def test_contact_wrong_usage_exits_2_and_changes_nothing(traced: str, args: tuple[str, ...], says: str) -> None:
    add_contact(traced, "person-3", "2025-03-02", "sexual")  # contact-1
    result = refused(traced, *args, code=2)
    assert says in result.stderr


def test_contact_add_without_a_kind_exits_2_and_names_the_option(traced: str) -> None:
    result = refused(traced, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed",
                     "2025-03-02", code=2, as_json=False)
    assert "--kind" in result.stderr


def test_unknown_contact_case_and_person_ids_exit_4_and_change_nothing(traced: str) -> None:
    add_contact(traced, "person-2", "2025-03-02", "sexual")
    add = ("contact", "add", "--exposed", "2025-03-02", "--kind", "sexual")
    for args in [
        (*add, "--case", "case-999", "--person", "person-3"),
        (*add, "--case", "case-1", "--person", "person-999"),
        (*add, "--case", "contact-1", "--person", "person-3"),
        ("contact", "inform", "contact-999"),
        ("contact", "expose", "contact-999", "--exposed", "2025-03-02", "--kind", "sexual"),
        ("contact", "correct", "contact-999", "--exposed", "2025-03-02"),
        ("contact", "symptoms", "contact-999", "--onset", "2025-03-03", "--symptoms", "rash"),
        ("show", "contact-999"),
        ("case", "source", "case-1", "--case", "case-999", "--on", "2025-02-20"),
    ]:
        result = refused(traced, *args, code=4)
        assert "999" in result.stderr or "contact-1" in result.stderr, describe(result)


def test_a_command_for_contacts_given_a_case_id_says_there_is_no_such_contact(traced: str) -> None:
    """CLI.md exit 4, "no such object": `contact inform case-1` names no contact. (Today it answers exit 3,
    "case-1 is confirmed: 'inform' is not allowed in that state. Allowed now: consent, die, ...", offering case
    triggers as if they were contact commands; `case discard contact-1` likewise.)"""
    add_contact(traced, "person-2", "2025-03-02", "sexual")
    refused(traced, "contact", "inform", "case-1", code=4)
    refused(traced, "case", "discard", "contact-1", code=4)


# ---- consent and anonymous tracing -------------------------------------------------------------------------------


def test_a_declined_consent_refuses_stps_tracing_but_the_doctor_may_trace_anonymously(traced: str) -> None:
    ok(traced, "case", "consent", "case-1", "--tracing", "no", "--reason", "declines to name partners to STPS")
    declined = refused(traced, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed",
                       "2025-03-02", "--kind", "sexual", code=3)
    assert "declined" in declined.stderr and "SST-mpox-7.1 §5.2" in declined.stderr

    view = add_contact(traced, "person-2", "2025-03-02", "sexual", "--anonymous-via-doctor",
                       "--reason", "treating doctor calls the partner")
    assert view["state"] == "exposed"
    assert view["anonymous_via_doctor"] is True
    added = doc(traced, "audit", "--entity", "contact-1")[0]
    assert added["trigger"] == "add"
    assert added["data"]["anonymous_via_doctor"] is True
    assert added["reason"] == "treating doctor calls the partner"


# ---- new and corrected exposures ---------------------------------------------------------------------------------


def test_a_new_exposure_moves_the_monitoring_end_and_the_pep_windows(traced: str) -> None:
    first = add_contact(traced, "person-2", "2025-03-01", "sexual")
    old = without_inform(pending(first))
    assert old == exposure_timers("2025-03-06T00:00:00+01:00", "2025-03-16T00:00:00+01:00",
                                  "2025-03-23T00:00:00+01:00")

    view = doc(traced, "contact", "expose", "contact-1", "--exposed", "2025-03-03", "--kind", "intact_skin",
               "--reason", "met again")
    assert (view["state"], view["exposed_on"], view["last_exposure_on"]) == ("exposed", "2025-03-01", "2025-03-03")
    assert view["exposure_kind"] == "intact_skin"
    assert view["risk"] == "high"  # the highest risk of the exposures recorded
    assert without_inform(pending(view)) == exposure_timers(
        "2025-03-08T00:00:00+01:00", "2025-03-18T00:00:00+01:00", "2025-03-25T00:00:00+01:00")
    for name, due_at in old.items():
        assert (due_at, "cancelled") in timers(view, name), (name, view["timers"])
    assert [t for t in contact_tasks(traced) if t[0].startswith("assess PEP")] == [
        ("assess PEP by 2025-03-17 (best by 2025-03-07)", "2025-03-18T00:00:00+01:00", False)]
    assert doc(traced, "audit", "--entity", "contact-1")[-1]["trigger"] == "expose"

    # Later, across the change to summer time (Sunday 2025-03-30): the case is still infectious.
    ok(traced, "contact", "inform", "contact-1")
    ok(traced, "clock", "advance", "--to", "2025-03-20T10:00:00+01:00")
    assert doc(traced, "show", "contact-1")["pep_window"] == "closed"
    later = doc(traced, "contact", "expose", "contact-1", "--exposed", "2025-03-20", "--kind", "household")
    assert (later["state"], later["last_exposure_on"], later["pep_window"]) == ("monitored", "2025-03-20", "optimal")
    assert pending(later) == exposure_timers(
        "2025-03-25T00:00:00+01:00", "2025-04-04T00:00:00+02:00", "2025-04-11T00:00:00+02:00")


def test_a_corrected_exposure_date_recomputes_every_timer(traced: str) -> None:
    first = add_contact(traced, "person-2", "2025-03-02", "sexual")
    old = without_inform(pending(first))
    view = doc(traced, "contact", "correct", "contact-1", "--exposed", "2025-03-01",
               "--reason", "the partner remembered Saturday")
    assert (view["exposed_on"], view["last_exposure_on"], view["state"]) == ("2025-03-01", "2025-03-01", "exposed")
    assert without_inform(pending(view)) == exposure_timers(
        "2025-03-06T00:00:00+01:00", "2025-03-16T00:00:00+01:00", "2025-03-23T00:00:00+01:00")
    for name, due_at in old.items():
        assert (due_at, "cancelled") in timers(view, name), (name, view["timers"])

    # Two exposures: correcting the first one (no longer the last) keeps the monitoring end of the last one.
    ok(traced, "contact", "expose", "contact-1", "--exposed", "2025-03-03", "--kind", "sexual")
    corrected = doc(traced, "contact", "correct", "contact-1", "--exposed", "2025-02-28", "--exposure", "1")
    assert (corrected["exposed_on"], corrected["last_exposure_on"]) == ("2025-02-28", "2025-03-03")
    assert pending(corrected)["monitoring_ends"] == "2025-03-25T00:00:00+01:00"
    # Correcting the last one moves it.
    moved = doc(traced, "contact", "correct", "contact-1", "--exposed", "2025-03-02")
    assert (moved["exposed_on"], moved["last_exposure_on"]) == ("2025-02-28", "2025-03-02")
    assert pending(moved)["monitoring_ends"] == "2025-03-24T00:00:00+01:00"


# ---- informing, the worklist, and the clock ----------------------------------------------------------------------


def test_the_worklist_asks_to_inform_the_contact_and_to_assess_pep_until_the_window_closes(traced: str) -> None:
    add_contact(traced, "person-2", "2025-03-02", "sexual")
    tasks = contact_tasks(traced)
    assert [task for task, *_ in tasks if task.startswith(INFORM_TASK)], tasks
    (inform_task,) = [t for t in tasks if t[0].startswith(INFORM_TASK)]
    assert inform_task[2] is False
    (pep,) = [t for t in tasks if t[0].startswith("assess PEP")]
    assert pep == ("assess PEP by 2025-03-16 (best by 2025-03-06)", "2025-03-17T00:00:00+01:00", False)
    assert re.fullmatch(r"assess PEP by \d{4}-\d{2}-\d{2}.*", pep[0])

    ok(traced, "clock", "advance", "--days", "2")
    tasks = contact_tasks(traced)
    assert [t[2] for t in tasks if t[0].startswith(INFORM_TASK)] == [True], tasks  # missed now (issue 12 item 14)
    assert "MISSED" in ok(traced, "due").stdout

    informed = doc(traced, "contact", "inform", "contact-1", "--actor", "staff:stps")
    assert informed["state"] == "monitored"
    assert informed["informed_at"] == "2025-03-05T08:00:00+01:00"
    assert [t[0] for t in contact_tasks(traced)] == [pep[0]]

    ok(traced, "clock", "advance", "--to", "2025-03-16T23:59:59+01:00")
    assert [t[0] for t in contact_tasks(traced)] == [pep[0]]
    # The window closes: an assessment nobody recorded is missed, not done, and stays on the worklist.
    ok(traced, "clock", "advance", "--to", "2025-03-17T00:00:00+01:00")
    assert contact_tasks(traced) == [(pep[0], pep[1], True)]
    assert doc(traced, "show", "contact-1")["pep_window"] == "closed"


def test_the_clock_moves_the_pep_window_to_extended_then_closed_then_releases_the_contact(traced: str) -> None:
    add_contact(traced, "person-2", "2025-03-02", "sexual")
    ok(traced, "contact", "inform", "contact-1")

    def window() -> tuple[str, str]:
        view = doc(traced, "show", "contact-1")
        return view["state"], view["pep_window"]

    ok(traced, "clock", "advance", "--to", "2025-03-06T23:59:59+01:00")
    assert window() == ("monitored", "optimal")
    fired = doc(traced, "clock", "advance", "--to", "2025-03-07T00:00:00+01:00")["fired"]
    assert [(f["object"], f["name"], f["fired_at"]) for f in fired] == [
        ("contact-1", "pep_optimal_window_closes", "2025-03-07T00:00:00+01:00")]
    assert window() == ("monitored", "extended")
    ok(traced, "clock", "advance", "--to", "2025-03-17T00:00:00+01:00")
    assert window() == ("monitored", "closed")
    ok(traced, "clock", "advance", "--to", "2025-03-23T23:59:59+01:00")
    assert window()[0] == "monitored"
    fired = doc(traced, "clock", "advance", "--days", "1")["fired"]
    assert [(f["name"], f["from"], f["to"], f["fired_at"]) for f in fired] == [
        ("monitoring_ends", "monitored", "released", "2025-03-24T00:00:00+01:00")]

    released = doc(traced, "show", "contact-1")
    assert released["state"] == "released"
    assert "pending" not in {t["status"] for t in released["timers"]}
    # The PEP assessment nobody recorded was missed on 2025-03-17 and stays so until resolved (issue 12 item 14).
    assert [(t["name"], t["status"]) for t in released["timers"] if t["name"] == "pep_assessment_due"] == [
        ("pep_assessment_due", "missed")]
    assert [task for task, _, _ in contact_tasks(traced)] == ["assess PEP by 2025-03-16 (best by 2025-03-06)"]

    by_timers = [(e["trigger"], e["actor"], e["at"], e["from"], e["to"], e["rule"])
                 for e in doc(traced, "audit", "--entity", "contact-1") if e["actor"].startswith("timer:")]
    assert by_timers == [
        ("pep_optimal_window_closes", "timer:pep_optimal_window_closes", "2025-03-07T00:00:00+01:00",
         "monitored", "monitored", "SST-mpox-7.1 §6.2"),
        ("pep_window_closes", "timer:pep_window_closes", "2025-03-17T00:00:00+01:00",
         "monitored", "monitored", "SST-mpox-7.1 §6.2"),
        ("pep_assessment_due", "timer:pep_assessment_due", "2025-03-17T00:00:00+01:00",
         "monitored", "monitored", "SST-mpox-7.1 §6.2"),
        ("monitoring_ends", "timer:monitoring_ends", "2025-03-24T00:00:00+01:00",
         "monitored", "released", "SST-mpox-7.1 §5.5"),
    ]

    assert [c["id"] for c in doc(traced, "list", "contacts", "--state", "released")] == ["contact-1"]
    assert doc(traced, "list", "contacts", "--state", "monitored") == []

    # Released: nothing but a new exposure to the still infectious case (see the next test) moves it.
    for args in [
        ("contact", "inform", "contact-1"),
        ("contact", "symptoms", "contact-1", "--onset", "2025-03-24", "--symptoms", "rash"),
        ("contact", "correct", "contact-1", "--exposed", "2025-03-03"),
    ]:
        result = refused(traced, *args, code=3)
        assert "released" in result.stderr, describe(result)


def test_an_uninformed_contact_is_released_too_and_its_inform_deadline_is_recorded_missed(traced: str) -> None:
    """Issue 12 item 14: a contact never informed, released at day 21, showed `inform_due` "fired, done": it is
    missed, and stays on the worklist after the release until someone records what happened."""
    add_contact(traced, "person-2", "2025-03-02", "face_to_face", "--risk", "low", "--reason",
                "outdoors, distance kept")  # low (a clinician's): no PEP timers
    fired = doc(traced, "clock", "advance", "--to", "2025-04-01T12:00:00+02:00")["fired"]
    assert [(f["name"], f["status"], f["to"], f["fired_at"]) for f in fired if f["object"] == "contact-1"] == [
        ("inform_due", "missed", "exposed", "2025-03-04T08:00:00+01:00"),
        ("monitoring_ends", "fired", "released", "2025-03-24T00:00:00+01:00"),
    ]
    view = doc(traced, "show", "contact-1")
    assert view["state"] == "released"
    [inform] = [t for t in view["timers"] if t["name"] == "inform_due"]
    assert (inform["status"], inform.get("satisfied_at")) == ("missed", None)
    actors = [e["actor"] for e in doc(traced, "audit", "--entity", "contact-1")]
    assert actors == ["staff:stps", "timer:inform_due", "timer:monitoring_ends"]
    assert contact_tasks(traced) == [(INFORM_TASK + " (symptoms, 21 days' monitoring)", "2025-03-04T08:00:00+01:00",
                                      True)]


def test_a_released_contact_exposed_again_to_the_same_infectious_case_is_monitored_anew(traced: str) -> None:
    """§5.5: a new exposure starts a new 21 days' monitoring, also after a release, while the case is still
    infectious (not healed: onset 2025-02-28 until today). One contact record per (case, person): the exposure is
    recorded on the released contact, which is exposed again, with new timers and a new inform task."""
    add_contact(traced, "person-2", "2025-03-01", "sexual")
    ok(traced, "clock", "advance", "--to", "2025-03-25T10:00:00+01:00")
    assert doc(traced, "show", "contact-1")["state"] == "released"
    refused(traced, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-25",
            "--kind", "sexual", code=3)

    again = doc(traced, "contact", "expose", "contact-1", "--exposed", "2025-03-25", "--kind", "sexual")
    assert (again["state"], again["last_exposure_on"], again["pep_window"]) == ("exposed", "2025-03-25", "optimal")
    pending = {t["name"]: t["due_at"] for t in again["timers"] if t["status"] == "pending"}
    assert pending == {
        "inform_due": "2025-03-26T10:00:00+01:00",
        "pep_optimal_window_closes": "2025-03-30T00:00:00+01:00",
        "pep_window_closes": "2025-04-09T00:00:00+02:00",
        "pep_assessment_due": "2025-04-09T00:00:00+02:00",
        "monitoring_ends": "2025-04-16T00:00:00+02:00",
    }
    entry = doc(traced, "audit", "--entity", "contact-1")[-1]
    assert (entry["trigger"], entry["from"], entry["to"], entry["rule"]) == (
        "expose", "released", "exposed", "SST-mpox-7.1 §5.5")


@pytest.mark.parametrize(
    ("exposed", "window"),
    [
        pytest.param("2025-03-02", "closed", id="recorded-after-day-14"),
        pytest.param("2025-03-14", "extended", id="recorded-after-day-4"),
    ],
)
def test_an_exposure_recorded_late_starts_with_the_pep_window_it_is_in_now(traced: str, exposed: str,
                                                                          window: str) -> None:
    """§6.2: after day 14 PEP is no longer offered; after day 4 only in special cases. A contact registered on
    2025-03-20 for an exposure on 2025-03-02 must not say `pep_window: optimal`, nor put an "assess PEP by
    2025-03-16" task on the worklist (today both happen: the windows' timers are armed in the past, and only the
    next `clock advance` corrects the window)."""
    ok(traced, "clock", "advance", "--to", "2025-03-20T10:00:00+01:00")
    view = add_contact(traced, "person-2", exposed, "sexual")
    assert view["pep_window"] == window
    assert doc(traced, "show", "contact-1")["pep_window"] == window
    pep_tasks = [t for t in contact_tasks(traced) if t[0].startswith("assess PEP")]
    if window == "closed":
        assert pep_tasks == [], pep_tasks
    else:
        assert pep_tasks == [("assess PEP by 2025-03-28 (best by 2025-03-18)", "2025-03-29T00:00:00+01:00", False)]


# ---- symptoms: the contact becomes a suspected case --------------------------------------------------------------


def test_symptoms_turn_the_contact_into_a_suspected_case_whose_source_can_be_recorded(traced: str) -> None:
    add_contact(traced, "person-2", "2025-03-01", "sexual")
    view = doc(traced, "contact", "symptoms", "contact-1", "--onset", "2025-03-03", "--symptoms", "rash",
               "--reason", "called the hotline")
    assert view["state"] == "symptomatic"
    new_case = view["became_case"]
    assert re.fullmatch(r"case-\d+", new_case) and new_case != "case-1"
    # Only the PEP window's own timers keep running (so that it is true if the suspicion is discarded).
    assert set(pending(view)) == {"pep_optimal_window_closes", "pep_window_closes"}
    assert contact_tasks(traced) == []

    case = doc(traced, "show", new_case)
    assert (case["kind"], case["state"], case["person"]) == ("case", "suspected", "person-2")
    assert (case["onset"], case["symptoms"], case["criteria"]) == ("2025-03-03", ["rash"], ["epi_link"])
    assert case["source_case"] == "case-1"
    cases = {c["id"]: c["state"] for c in doc(traced, "list", "cases")}
    assert cases == {"case-1": "confirmed", new_case: "suspected"}
    assert [c["id"] for c in doc(traced, "list", "contacts", "--state", "symptomatic")] == ["contact-1"]
    # Symptomatic: nothing to do on the contact until its suspected case is discarded (§2.2.1).
    refused(traced, "contact", "inform", "contact-1", code=3)

    # §5.2: a source is an exposure up to 21 days before onset (2025-02-10 to 2025-03-03).
    for day in ("2025-02-09", "2025-03-04"):
        result = refused(traced, "case", "source", new_case, "--case", "case-1", "--on", day, code=3)
        assert "SST-mpox-7.1 §5.2" in result.stderr, describe(result)
    sourced = doc(traced, "case", "source", new_case, "--case", "case-1", "--on", "2025-02-10")
    assert {"case": "case-1", "on": "2025-02-10"} in sourced["sources"]
    sourced = doc(traced, "case", "source", new_case, "--case", "case-1", "--on", "2025-03-01")
    assert {"case": "case-1", "on": "2025-03-01"} in sourced["sources"]
    refused(traced, "case", "source", new_case, "--case", new_case, "--on", "2025-03-01", code=3)


# ---- diagram and demo --------------------------------------------------------------------------------------------


def test_diagram_contact_is_a_mermaid_state_diagram_with_every_contact_state() -> None:
    result = runner.invoke(app, ["diagram", "contact"])
    assert result.exit_code == 0, describe(result)
    assert "stateDiagram-v2" in result.stdout
    for state in CONTACT_STATES:
        assert re.search(rf"\b{state}\b", result.stdout), state
    as_json = runner.invoke(app, ["diagram", "contact", "--json"])
    assert as_json.exit_code == 0, describe(as_json)
    document = json.loads(as_json.stdout)
    assert document["workflow"] == "contact@SST-mpox-7.1"
    assert "stateDiagram-v2" in document["mermaid"]


def test_demo_still_runs() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, describe(result)
    assert result.stdout.strip()
