"""The command-line contract of ``../shared/CLI.md``, driven in-process through ``entry.cli.app``.

Every test that touches a database runs on SQLite and on PostgreSQL (the ``cli_db`` fixture), on a simulated
clock that starts on Monday 2025-03-03 at 08:00 in Copenhagen.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.testing
from sqlalchemy import text
from typer.testing import CliRunner, Result

from entry.cli import app
from persistence.database import Database
from tests.helpers import contents

CASE_STATES = ("suspected", "confirmed", "isolated", "healed", "closed", "discarded", "deceased")
#: An instant as CLI.md prints it: ISO 8601 in Europe/Copenhagen, so with the offset +01:00 or +02:00.
LOCAL_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?\+0[12]:00$")
#: Anything that looks like an ISO 8601 instant with an offset, wherever it occurs inside a string.
ANY_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")



class _Runner(CliRunner):
    """Typer builds the click command from the application on every ``invoke``: 80% of an in-process test
    command's time (the real ``mpoxflow`` builds it once per process). Here it is built once."""

    _built: dict[int, Any] = {}  # noqa: RUF012 - one per application, for the test session

    def invoke(self, app: Any, *args: Any, **kwargs: Any) -> Result:  # type: ignore[override]
        command = self._built.get(id(app))
        if command is None:
            command = self._built[id(app)] = typer.main.get_command(app)
        real = typer.testing._get_command  # noqa: SLF001
        typer.testing._get_command = lambda _app: command  # noqa: SLF001
        try:
            return super().invoke(app, *args, **kwargs)
        finally:
            typer.testing._get_command = real  # noqa: SLF001


runner = _Runner()

# ---- driving the CLI ---------------------------------------------------------------------------------------------


def describe(result: Result) -> str:
    """Everything needed to understand a failed expectation about a command."""
    text = f"exit {result.exit_code}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        text += f"\n--- exception ---\n{result.exception!r}"
    return text


def cli(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["--db", url, *args], env=env)


def ok(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    result = cli(url, *args, env=env)
    assert result.exit_code == 0, describe(result)
    return result


def doc(url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run a command with --json; its whole stdout must be exactly one JSON document."""
    result = ok(url, *args, "--json", env=env)
    return json.loads(result.stdout)


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    db = Database(url)
    try:
        return contents(db)
    finally:
        db.dispose()


def refused(url: str, *args: str, code: int, as_json: bool = True) -> Result:
    """Run a command that must fail with exit ``code``, leave the database exactly as it was, say on stderr what
    is wrong, and (with --json) print one JSON error document on stdout."""
    before = snapshot(url)
    result = cli(url, *args, *(["--json"] if as_json else []))
    assert result.exit_code == code, describe(result)
    assert result.stderr.strip(), "a refused command says why on stderr"
    if as_json:
        error = json.loads(result.stdout)
        assert error["exit_code"] == code
        assert isinstance(error["error"], str) and error["error"]
    assert snapshot(url) == before, f"the refused command changed the database: {args}"
    return result


def add_person(url: str, ref: str = "REF-0001", *flags: str) -> str:
    return str(doc(url, "person", "add", "--ref", ref, *flags, "--actor", "staff:test")["id"])


def open_suspected(url: str, person: str, onset: str = "2025-03-01") -> str:
    return str(doc(url, "case", "open", "--person", person, "--onset", onset, "--symptoms", "rash,fever",
                   "--criteria", "msm", "--actor", "staff:test")["id"])


def open_confirmed(url: str, person: str, onset: str = "2025-03-01", pcr_on: str = "2025-03-03") -> str:
    return str(doc(url, "case", "open", "--person", person, "--onset", onset, "--symptoms", "rash",
                   "--confirmed", "--pcr-on", pcr_on, "--actor", "staff:test")["id"])


def confirm(url: str, case: str, pcr_on: str = "2025-03-03", *extra: str) -> dict[str, Any]:
    return dict(doc(url, "case", "confirm", case, "--pcr-on", pcr_on, *extra))


def timers_of(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in view["timers"]}


def instants_in(value: Any) -> Iterator[str]:
    """Every instant-looking text anywhere inside a JSON document (keys' values, nested, inside sentences)."""
    if isinstance(value, str):
        yield from ANY_INSTANT.findall(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from instants_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from instants_in(item)


@pytest.fixture
def one_case(cli_db: str) -> str:
    """person-1 with a suspected case-1 (onset 2025-03-01)."""
    open_suspected(cli_db, add_person(cli_db))
    return cli_db


# ---- exit 2: wrong usage -----------------------------------------------------------------------------------------

OPEN = ("case", "open", "--person", "person-1")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param((*OPEN, "--onset", "2025-02-30", "--symptoms", "rash", "--criteria", "msm"),
                     "2025-02-30", id="impossible-onset-date"),
        pytest.param(("case", "confirm", "case-1", "--pcr-on", "2025-02-30"), "2025-02-30",
                     id="impossible-pcr-date"),
        pytest.param((*OPEN, "--onset", "2025-03-01", "--symptoms", "rash,itching", "--criteria", "msm"),
                     "itching", id="unknown-symptom"),
        pytest.param((*OPEN, "--onset", "2025-03-01", "--symptoms", "rash", "--criteria", "msm,vibes"),
                     "vibes", id="unknown-criterion"),
        pytest.param(("case", "isolate", "case-1", "--mode", "car"), "car", id="unknown-mode"),
        pytest.param(("clock", "advance", "--days", "1", "--hours", "2"), "exactly one", id="days-and-hours"),
        pytest.param(("clock", "advance"), "exactly one", id="advance-without-amount"),
        pytest.param(("clock", "advance", "--to", "2025-03-01T08:00:00+01:00"), "forward", id="clock-backwards"),
        pytest.param(("clock", "advance", "--hours", "-3"), "forward", id="negative-hours"),
        pytest.param(("list", "cases", "--state", "sleeping"), "sleeping", id="unknown-state"),
        pytest.param(("due", "--within", "-1"), "--within", id="negative-within"),
        pytest.param(("audit", "--since", "yesterday"), "yesterday", id="audit-since-not-an-instant"),
    ],
)
def test_wrong_usage_exits_2_says_what_is_wrong_and_changes_nothing(one_case: str, args: tuple[str, ...],
                                                                     says: str) -> None:
    result = refused(one_case, *args, code=2)
    assert says in result.stderr
    assert says in json.loads(result.stdout)["error"]


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        pytest.param((*OPEN, "--symptoms", "rash", "--criteria", "msm"), "--onset", id="case-open-without-onset"),
        pytest.param(("case", "open", "--onset", "2025-03-01", "--symptoms", "rash"), "--person",
                     id="case-open-without-person"),
        pytest.param(("case", "confirm", "case-1"), "--pcr-on", id="confirm-without-pcr-on"),
        pytest.param(("case", "heal", "case-1"), "--on", id="heal-without-on"),
    ],
)
def test_a_missing_required_option_exits_2_and_names_it(one_case: str, args: tuple[str, ...],
                                                         missing: str) -> None:
    result = refused(one_case, *args, code=2, as_json=False)
    assert missing in result.stderr


def test_a_missing_required_option_with_json_still_prints_one_json_error_document(one_case: str) -> None:
    """CLI.md: with --json a command prints exactly one JSON document on stdout, errors included."""
    result = cli(one_case, "case", "confirm", "case-1", "--json")
    assert result.exit_code == 2, describe(result)
    error = json.loads(result.stdout)
    assert error["exit_code"] == 2
    assert "--pcr-on" in error["error"]


def test_an_unknown_log_format_is_wrong_usage(one_case: str) -> None:
    before = snapshot(one_case)
    result = runner.invoke(app, ["--db", one_case, "--log-format", "xml", "list", "cases"])
    assert result.exit_code == 2, describe(result)
    assert "json or console" in result.stdout + result.stderr
    assert snapshot(one_case) == before


def test_moving_the_clock_backwards_names_both_instants_in_copenhagen_time(one_case: str) -> None:
    result = refused(one_case, "clock", "advance", "--to", "2025-03-01T08:00:00+01:00", code=2)
    instants = ANY_INSTANT.findall(result.stderr)
    assert "2025-03-03T08:00:00+01:00" in instants, result.stderr
    assert all(LOCAL_INSTANT.match(i) for i in instants), instants


# ---- exit 3: refused by a rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "names"),
    [
        pytest.param(("--symptoms", "rash"), ["criterion"], id="without-criteria"),
        pytest.param(("--criteria", "msm"), ["symptom"], id="without-symptoms"),
        pytest.param((), ["symptom", "criterion"], id="without-either"),
    ],
)
def test_case_open_refuses_unless_the_case_definition_holds(cli_db: str, given: tuple[str, ...],
                                                            names: list[str]) -> None:
    person = add_person(cli_db)
    result = refused(cli_db, "case", "open", "--person", person, "--onset", "2025-03-01", *given, code=3)
    message = result.stderr
    assert "SST-mpox-7.1 §1.1" in message
    for name in names:
        assert name in message
    if "criterion" not in names:
        assert "criterion" not in message
    if "symptom" not in names:
        assert "a symptom" not in message
    error = json.loads(result.stdout)
    assert "SST-mpox-7.1 §1.1" in error["error"]
    assert doc(cli_db, "list", "cases") == []


@pytest.mark.parametrize(
    ("pcr_on", "says"),
    [
        pytest.param("2025-02-28", "before symptom onset", id="pcr-before-onset"),
        pytest.param("2025-03-04", "after today", id="pcr-in-the-future"),
    ],
)
def test_confirm_refuses_a_pcr_date_before_onset_or_in_the_future(one_case: str, pcr_on: str, says: str) -> None:
    result = refused(one_case, "case", "confirm", "case-1", "--pcr-on", pcr_on, code=3)
    assert says in result.stderr
    assert "SST-mpox-7.1 §1.1" in result.stderr
    assert doc(one_case, "show", "case-1")["state"] == "suspected"


def test_open_confirmed_refuses_a_pcr_date_before_onset(cli_db: str) -> None:
    person = add_person(cli_db)
    result = refused(cli_db, "case", "open", "--person", person, "--onset", "2025-03-01", "--symptoms", "rash",
                     "--confirmed", "--pcr-on", "2025-02-20", code=3)
    assert "SST-mpox-7.1 §1.1" in result.stderr


def test_heal_refuses_a_date_before_onset(cli_db: str) -> None:
    case = open_confirmed(cli_db, add_person(cli_db))
    result = refused(cli_db, "case", "heal", case, "--on", "2025-02-27", code=3)
    assert "before symptom onset" in result.stderr
    assert "SST-mpox-7.1 §4.1" in result.stderr
    assert doc(cli_db, "show", case)["state"] == "confirmed"


def test_a_confirmed_case_cannot_be_discarded(cli_db: str) -> None:
    case = open_confirmed(cli_db, add_person(cli_db))
    result = refused(cli_db, "case", "discard", case, code=3)
    assert "confirmed" in result.stderr
    assert doc(cli_db, "show", case)["state"] == "confirmed"


def test_the_same_notification_channel_cannot_be_recorded_twice(cli_db: str) -> None:
    case = open_confirmed(cli_db, add_person(cli_db))
    first = doc(cli_db, "case", "notify", case, "--channel", "phone")
    assert first["phone_notified_at"] == "2025-03-03T08:00:00+01:00"
    result = refused(cli_db, "case", "notify", case, "--channel", "phone", code=3)
    assert "already recorded" in result.stderr
    assert "SST-mpox-7.1 §3.1" in result.stderr
    # The other channel is still open.
    assert doc(cli_db, "case", "notify", case, "--channel", "written")["written_notified_at"] is not None


def test_cases_in_a_final_state_refuse_every_transition(cli_db: str) -> None:
    person = add_person(cli_db)
    discarded = open_suspected(cli_db, person)
    ok(cli_db, "case", "discard", discarded, "--reason", "PCR negative")
    deceased = open_confirmed(cli_db, person)
    ok(cli_db, "case", "die", deceased, "--on", "2025-03-03")
    closed = open_confirmed(cli_db, person)
    ok(cli_db, "case", "heal", closed, "--on", "2025-03-03")
    ok(cli_db, "clock", "advance", "--to", "2025-06-01T12:00:00+02:00")
    assert [doc(cli_db, "show", c)["state"] for c in (discarded, deceased, closed)] == [
        "discarded", "deceased", "closed"]

    attempts = [
        ("confirm", "--pcr-on", "2025-03-03"),
        ("discard",),
        ("isolate", "--mode", "home"),
        ("heal", "--on", "2025-03-10"),
        ("die", "--on", "2025-03-10"),
    ]
    for case in (discarded, deceased, closed):
        for trigger, *options in attempts:
            result = refused(cli_db, "case", trigger, case, *options, code=3)
            assert f"'{trigger}'" in result.stderr, describe(result)
    # A discarded case was never confirmed: nothing to notify.
    refused(cli_db, "case", "notify", discarded, "--channel", "phone", code=3)


# ---- exit 4: no such object --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("show", "case-999"), id="show-unknown-case"),
        pytest.param(("show", "person-999"), id="show-unknown-person"),
        pytest.param(("case", "confirm", "case-999", "--pcr-on", "2025-03-03"), id="confirm-unknown-case"),
        pytest.param((*OPEN[:2], "--person", "person-999", "--onset", "2025-03-01", "--symptoms", "rash",
                      "--criteria", "msm"), id="open-for-unknown-person"),
        pytest.param(("show", "bogus"), id="show-malformed-id"),
        pytest.param(("show", "case-abc"), id="show-malformed-number"),
        pytest.param(("case", "discard", "case-"), id="discard-malformed-id"),
        pytest.param(("audit", "--entity", "nothing-1"), id="audit-malformed-entity"),
    ],
)
def test_no_such_object_exits_4(one_case: str, args: tuple[str, ...]) -> None:
    result = refused(one_case, *args, code=4)
    assert "No " in result.stderr and "found" in result.stderr


@pytest.mark.parametrize("object_id", ["case-999", "person-999", "timer-999", "bogus"])
def test_the_not_found_message_suggests_a_command_that_works(one_case: str, object_id: str) -> None:
    """CLI.md: the message says what to do; the command it suggests must itself be a valid command."""
    result = refused(one_case, "show", object_id, code=4)
    suggested = re.search(r"`mpoxflow ([^`]+)`", result.stderr)
    assert suggested, result.stderr
    follow_up = cli(one_case, *suggested.group(1).split())
    assert follow_up.exit_code == 0, f"suggested `mpoxflow {suggested.group(1)}`:\n{describe(follow_up)}"


# ---- exit 5: conflict --------------------------------------------------------------------------------------------


def test_if_version_refuses_a_stale_version_with_exit_5(one_case: str) -> None:
    seen = doc(one_case, "show", "case-1")
    assert seen["version"] == 1
    ok(one_case, "case", "discard", "case-1", "--actor", "staff:jonas", "--reason", "PCR negative")

    result = refused(one_case, "case", "confirm", "case-1", "--pcr-on", "2025-03-03",
                     "--if-version", str(seen["version"]), code=5)
    assert "changed meanwhile" in result.stderr
    assert doc(one_case, "show", "case-1")["state"] == "discarded"


def test_if_version_with_the_current_version_goes_through(one_case: str) -> None:
    view = confirm(one_case, "case-1", "2025-03-03", "--if-version", "1")
    assert view["state"] == "confirmed"
    assert view["version"] == 2
    refused(one_case, "case", "isolate", "case-1", "--mode", "home", "--if-version", "1", code=5)
    assert doc(one_case, "case", "isolate", "case-1", "--mode", "home", "--if-version", "2")["state"] == "isolated"


# ---- JSON output ---------------------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_json_output_of_a_confirmed_case_has_the_shapes_of_the_contract(one_case: str) -> None:
    result = ok(one_case, "case", "confirm", "case-1", "--pcr-on", "2025-03-03", "--clade", "IIb", "--json")
    view = json.loads(result.stdout)  # the whole of stdout is one document
    assert view["id"] == "case-1"
    assert view["kind"] == "case"
    assert view["state"] == "confirmed"
    assert view["workflow"] == "case@SST-mpox-7.1"
    assert view["person"] == "person-1"
    assert view["clade"] == "IIb"
    for field in ("onset", "pcr_on"):
        assert DATE.match(view[field]), (field, view[field])
    assert view["onset"] == "2025-03-01" and view["pcr_on"] == "2025-03-03"
    assert view["confirmed_at"] == "2025-03-03T08:00:00+01:00"
    assert isinstance(view["timers"], list) and view["timers"]
    for timer in view["timers"]:
        assert {"name", "due_at", "status"} <= timer.keys()
        assert timer["status"] in ("pending", "fired", "cancelled")
        assert LOCAL_INSTANT.match(timer["due_at"]), timer
    for instant in instants_in(view):
        assert LOCAL_INSTANT.match(instant), instant


def test_confirming_at_the_simulated_clock_arms_the_notification_deadlines_at_exact_instants(one_case: str) -> None:
    timers = timers_of(confirm(one_case, "case-1"))
    assert timers["phone_notification_due"]["due_at"] == "2025-03-03T17:00:00+01:00"
    assert timers["written_notification_due"]["due_at"] == "2025-03-04T08:00:00+01:00"
    assert {name: t["status"] for name, t in timers.items()} == {
        "phone_notification_due": "pending", "written_notification_due": "pending",
        "sequencing_sample_due": "pending",
        "test_result_due": "cancelled",  # §2.1 the suspected case's chase task, done by the positive PCR
    }
    assert timers["test_result_due"]["satisfied_at"] == "2025-03-03T08:00:00+01:00"
    assert timers["test_result_due"]["note"] == "task done in time"
    # show prints the same timers.
    assert timers_of(doc(one_case, "show", "case-1"))["written_notification_due"]["due_at"] == (
        "2025-03-04T08:00:00+01:00")


def test_errors_with_json_print_one_document_with_error_and_exit_code(one_case: str) -> None:
    for args, code in [
        (("show", "case-999"), 4),
        (("case", "discard", "case-999"), 4),
        (("case", "confirm", "case-1", "--pcr-on", "2025-13-01"), 2),
        (("case", "heal", "case-1", "--on", "2025-03-02"), 3),
    ]:
        result = cli(one_case, *args, "--json")
        assert result.exit_code == code, describe(result)
        error = json.loads(result.stdout)
        assert error["exit_code"] == code
        assert error["error"] in result.stderr


def test_list_cases_json_and_state_filter(cli_db: str) -> None:
    person, other = add_person(cli_db), add_person(cli_db, "REF-OTHER")  # one open case per person
    suspected = open_suspected(cli_db, person)
    confirmed = open_confirmed(cli_db, other)

    everything = doc(cli_db, "list", "cases")
    assert [c["id"] for c in everything] == [suspected, confirmed]
    assert [c["state"] for c in everything] == ["suspected", "confirmed"]
    for view, whose in zip(everything, (person, other), strict=True):
        assert view["kind"] == "case" and view["workflow"] == "case@SST-mpox-7.1" and view["person"] == whose
        assert isinstance(view["timers"], list)

    assert [c["id"] for c in doc(cli_db, "list", "cases", "--state", "confirmed")] == [confirmed]
    assert doc(cli_db, "list", "cases", "--state", "closed") == []

    text = ok(cli_db, "list", "cases", "--state", "confirmed").stdout
    assert confirmed in text and suspected not in text


def test_list_persons_and_show_person(cli_db: str) -> None:
    first = add_person(cli_db, "REF-A", "--born", "1988-05-02", "--immunocompromised")
    second = add_person(cli_db, "REF-B")
    case = open_suspected(cli_db, first)

    persons = doc(cli_db, "list", "persons")
    assert [(p["id"], p["kind"], p["ref"]) for p in persons] == [(first, "person", "REF-A"),
                                                                 (second, "person", "REF-B")]
    assert persons[0]["born"] == "1988-05-02" and persons[0]["immunocompromised"] is True
    assert "REF-A" in ok(cli_db, "list", "persons").stdout

    shown = doc(cli_db, "show", first)
    assert shown["id"] == "person-1" and shown["kind"] == "person"
    assert shown["cases"] == [case]
    assert shown["created_at"] == "2025-03-03T08:00:00+01:00"
    text = ok(cli_db, "show", first).stdout
    assert "person-1" in text and case in text


def test_audit_entity_json_entries_carry_the_contract_fields(one_case: str) -> None:
    confirm(one_case, "case-1", "2025-03-03", "--actor", "staff:anna", "--reason", "PCR positive at SSI")
    entries = doc(one_case, "audit", "--entity", "case-1")
    assert [e["trigger"] for e in entries] == ["open", "confirm"]
    for entry in entries:
        assert {"seq", "trigger", "from", "to", "actor", "reason", "at", "rule", "data"} <= entry.keys()
        assert LOCAL_INSTANT.match(entry["at"])
    assert entries[0]["seq"] < entries[1]["seq"]
    opened, confirmed = entries
    assert (opened["from"], opened["to"], opened["rule"]) == (None, "suspected", "SST-mpox-7.1 §1.1")
    assert opened["data"]["symptoms"] == ["rash", "fever"]
    assert (confirmed["from"], confirmed["to"]) == ("suspected", "confirmed")
    assert confirmed["actor"] == "staff:anna"
    assert confirmed["reason"] == "PCR positive at SSI"
    assert confirmed["at"] == "2025-03-03T08:00:00+01:00"
    assert confirmed["rule"] == "SST-mpox-7.1 §1.1"
    assert confirmed["data"]["pcr_on"] == "2025-03-03"
    # The person's registration is not part of the case's entries.
    assert all(e["object"] == "case-1" for e in entries)


def test_actor_defaults_to_the_environment(one_case: str) -> None:
    ok(one_case, "case", "discard", "case-1", "--reason", "PCR negative", env={"MPOXFLOW_ACTOR": "staff:env"})
    last = doc(one_case, "audit", "--entity", "case-1")[-1]
    assert (last["trigger"], last["actor"], last["reason"]) == ("discard", "staff:env", "PCR negative")


@pytest.mark.both_backends
def test_audit_json_prints_every_instant_in_copenhagen_time(one_case: str) -> None:
    """CLI.md: instants are printed in Europe/Copenhagen with the offset: the armed timers' due instants and
    the firing data inside the audit entries too, not only the entry's own ``at``."""
    confirm(one_case, "case-1")
    ok(one_case, "clock", "advance", "--days", "2")
    output = doc(one_case, "audit", "--entity", "case-1")
    found = list(instants_in(output))
    assert found
    wrong = sorted({i for i in found if not LOCAL_INSTANT.match(i)})
    assert not wrong, f"instants not in Copenhagen time in `audit --json`: {wrong}"


# ---- the simulated clock and its timers ----------------------------------------------------------------------


def test_clock_show_and_advance(cli_db: str) -> None:
    assert doc(cli_db, "clock", "show")["now"] == "2025-03-03T08:00:00+01:00"
    assert ok(cli_db, "clock", "show").stdout.strip() == "2025-03-03T08:00:00+01:00"

    assert doc(cli_db, "clock", "advance", "--hours", "3")["now"] == "2025-03-03T11:00:00+01:00"
    assert doc(cli_db, "clock", "advance", "--days", "1")["now"] == "2025-03-04T11:00:00+01:00"
    moved = doc(cli_db, "clock", "advance", "--to", "2025-04-01T09:30:00+02:00")
    assert moved == {"now": "2025-04-01T09:30:00+02:00", "fired": []}
    assert doc(cli_db, "clock", "show")["now"] == "2025-04-01T09:30:00+02:00"
    # A bare local instant is read as Copenhagen time.
    assert doc(cli_db, "clock", "advance", "--to", "2025-04-02T10:00")["now"] == "2025-04-02T10:00:00+02:00"


def test_advancing_fires_every_timer_at_its_own_instant_in_due_order(cli_db: str) -> None:
    person = add_person(cli_db)
    first = open_suspected(cli_db, person)
    confirm(cli_db, first)  # 08:00: phone 17:00 today, written 08:00 tomorrow
    ok(cli_db, "clock", "advance", "--to", "2025-03-03T16:00:00+01:00")
    second = open_confirmed(cli_db, add_person(cli_db, "REF-OTHER"))  # 16:00: phone 17:00 today, written 16:00

    advanced = doc(cli_db, "clock", "advance", "--days", "2")
    assert advanced["now"] == "2025-03-05T16:00:00+01:00"
    expected = [
        (first, "phone_notification_due", "2025-03-03T17:00:00+01:00"),
        (second, "phone_notification_due", "2025-03-03T17:00:00+01:00"),
        (first, "written_notification_due", "2025-03-04T08:00:00+01:00"),
        (second, "written_notification_due", "2025-03-04T16:00:00+01:00"),
        # §2.4: the sample to SSI by the end of the next working day's daytime window.
        (first, "sequencing_sample_due", "2025-03-04T17:00:00+01:00"),
        (second, "sequencing_sample_due", "2025-03-04T17:00:00+01:00"),
    ]
    assert [(f["object"], f["name"], f["fired_at"]) for f in advanced["fired"]] == expected
    # Every task's deadline passed undone: missed, not "fired" (issue 12, item 14).
    assert all(f["due_at"] == f["fired_at"] and f["status"] == "missed" for f in advanced["fired"])

    by_timers = [e for e in doc(cli_db, "audit") if e["actor"].startswith("timer:")]
    assert [(e["object"], e["trigger"], e["at"]) for e in by_timers] == expected
    assert [e["actor"] for e in by_timers] == [f"timer:{name}" for _, name, _ in expected]
    assert [e["seq"] for e in by_timers] == sorted(e["seq"] for e in by_timers)
    assert [e["rule"] for e in by_timers] == ["SST-mpox-7.1 §3.1"] * 4 + ["SST-mpox-7.1 §2.4"] * 2
    # An overdue deadline changes no state.
    assert all(e["from"] == e["to"] == "confirmed" for e in by_timers)


def test_healing_arms_the_condom_advice_which_closes_the_case_when_the_clock_passes_it(one_case: str) -> None:
    confirm(one_case, "case-1")
    ok(one_case, "case", "notify", "case-1", "--channel", "phone")
    ok(one_case, "case", "notify", "case-1", "--channel", "written")
    ok(one_case, "clock", "advance", "--to", "2025-03-20T12:00:00+01:00")

    healed = doc(one_case, "case", "heal", "case-1", "--on", "2025-03-20", "--reason", "scabs fallen off")
    assert healed["state"] == "healed"
    assert healed["healed_on"] == "2025-03-20"
    advice = timers_of(healed)["condom_advice_ends"]
    assert (advice["due_at"], advice["status"]) == ("2025-06-13T00:00:00+02:00", "pending")

    # One second before: still healed.
    assert doc(one_case, "clock", "advance", "--to", "2025-06-12T23:59:59+02:00")["fired"] == []
    assert doc(one_case, "show", "case-1")["state"] == "healed"

    advanced = doc(one_case, "clock", "advance", "--days", "1")
    assert [(f["name"], f["from"], f["to"], f["fired_at"]) for f in advanced["fired"]] == [
        ("condom_advice_ends", "healed", "closed", "2025-06-13T00:00:00+02:00")]
    shown = doc(one_case, "show", "case-1")
    assert shown["state"] == "closed"
    assert timers_of(shown)["condom_advice_ends"]["status"] == "fired"
    assert [c["id"] for c in doc(one_case, "list", "cases", "--state", "closed")] == ["case-1"]

    last = doc(one_case, "audit", "--entity", "case-1")[-1]
    assert (last["trigger"], last["from"], last["to"]) == ("condom_advice_ends", "healed", "closed")
    assert (last["actor"], last["at"]) == ("timer:condom_advice_ends", "2025-06-13T00:00:00+02:00")
    assert last["rule"] == "SST-mpox-7.1 §4.1"


def test_due_lists_the_notification_tasks_marks_them_overdue_and_drops_done_ones(one_case: str) -> None:
    def worklist() -> list[tuple[str, str, str, bool]]:
        return [(t["object"], t["task"], t["due_at"], t["overdue"]) for t in doc(one_case, "due")]

    # §2.1 the suspected case's only task: chase its test result (2 days from 03.03, senest 05.03).
    chase = "chase the PCR test result of the suspected case"
    assert worklist() == [("case-1", chase, "2025-03-06T00:00:00+01:00", False)]
    confirm(one_case, "case-1")  # the positive PCR is the result chased: its task is done and drops out
    ok(one_case, "case", "sample-sent", "case-1", "--on", "2025-03-03")  # §2.4, not this test's subject

    phone, written = "notify STPS by phone", "notify SSI and STPS in writing"
    assert worklist() == [
        ("case-1", phone, "2025-03-03T17:00:00+01:00", False),
        ("case-1", written, "2025-03-04T08:00:00+01:00", False),
    ]
    ok(one_case, "clock", "advance", "--hours", "10")  # 18:00: the working day is over
    assert worklist() == [
        ("case-1", phone, "2025-03-03T17:00:00+01:00", True),
        ("case-1", written, "2025-03-04T08:00:00+01:00", False),
    ]
    ok(one_case, "clock", "advance", "--to", "2025-03-04T09:00:00+01:00")
    assert [overdue for *_, overdue in worklist()] == [True, True]
    assert "MISSED" in ok(one_case, "due").stdout

    notified = doc(one_case, "case", "notify", "case-1", "--channel", "written", "--reason", "SEI2 sent late")
    assert notified["written_notified_at"] == "2025-03-04T09:00:00+01:00"
    assert worklist() == [("case-1", phone, "2025-03-03T17:00:00+01:00", True)]
    ok(one_case, "case", "notify", "case-1", "--channel", "phone")
    assert worklist() == []
    assert ok(one_case, "due").stdout.strip() == "nothing due"


def test_a_notification_in_time_cancels_its_deadline(one_case: str) -> None:
    confirm(one_case, "case-1")
    ok(one_case, "clock", "advance", "--hours", "1")
    notified = doc(one_case, "case", "notify", "case-1", "--channel", "phone")
    phone = timers_of(notified)["phone_notification_due"]
    assert phone["status"] == "cancelled"
    fired = doc(one_case, "clock", "advance", "--days", "1")["fired"]
    assert [f["name"] for f in fired] == ["written_notification_due"]


def test_a_real_time_database_refuses_the_clock_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'realtime.db'}"
    assert "real time" in ok(url, "init").stdout
    for args in (("clock", "show"), ("clock", "advance", "--days", "1"), ("clock", "advance", "--to", "2030-01-01")):
        result = refused(url, *args, code=2)
        assert "real time" in result.stderr
        assert "init --simulated-clock" in result.stderr, result.stderr


# ---- persons and personal data ---------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_the_persons_reference_never_reaches_the_audit_log_or_the_logs(cli_db: str) -> None:
    ref = "CPR-0101901234"
    result = ok(cli_db, "person", "add", "--ref", ref, "--born", "1990-01-01", "--pregnant", "--json",
                "--reason", "referred by GP", env={"MPOXFLOW_LOG_LEVEL": "debug"})
    person = json.loads(result.stdout)
    assert person["ref"] == ref  # staff see it
    assert ref not in result.stderr
    open_suspected(cli_db, person["id"])

    audit_json = ok(cli_db, "audit", "--json").stdout
    assert ref not in audit_json
    assert ref not in ok(cli_db, "audit").stdout
    registered = next(e for e in json.loads(audit_json) if e["object"] == person["id"])
    assert (registered["object"], registered["trigger"]) == (person["id"], "register")
    assert registered["reason"] == "referred by GP"
    assert "1990-01-01" not in audit_json  # nor the birth date

    # A second registration of the same reference is refused, without echoing it.
    again = refused(cli_db, "person", "add", "--ref", ref, code=3)
    assert person["id"] in again.stderr
    assert ref not in again.stderr


# ---- resources -------------------------------------------------------------------------------------------------


def _open_connections(url: str) -> int:
    """How many connections to the database this process holds open, other than the one asking."""
    if url.startswith("sqlite"):
        path = os.path.realpath(url.removeprefix("sqlite:///"))
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.path.realpath(f"/proc/self/fd/{fd}") == path:
                    count += 1
            except OSError:
                continue
        return count
    db = Database(url)
    try:
        with db.engine.connect() as connection:
            return int(connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalar_one())
    finally:
        db.dispose()


@pytest.mark.both_backends
def test_a_command_leaves_no_database_connection_open(one_case: str) -> None:
    """A command run in-process (tests, a future HTTP API, the worker) must close what it opened."""
    gc.collect()
    assert _open_connections(one_case) == 0
    gc.disable()  # so that only closing, not the garbage collector, can make the count go down
    try:
        ok(one_case, "show", "case-1")
        ok(one_case, "case", "confirm", "case-1", "--pcr-on", "2025-03-03")
        refused(one_case, "case", "discard", "case-1", code=3)
        left_open = _open_connections(one_case)
    finally:
        gc.enable()
    assert left_open == 0, f"{left_open} database connection(s) left open by three CLI commands"


# ---- diagram and demo ----------------------------------------------------------------------------------------------


def test_diagram_case_is_a_mermaid_state_diagram_with_every_state() -> None:
    result = runner.invoke(app, ["diagram", "case"])
    assert result.exit_code == 0, describe(result)
    assert "stateDiagram-v2" in result.stdout
    for state in CASE_STATES:
        assert re.search(rf"\b{state}\b", result.stdout), state
    as_json = runner.invoke(app, ["diagram", "case", "--json"])
    assert json.loads(as_json.stdout)["workflow"] == "case@SST-mpox-7.1"


def test_demo_runs_an_outbreak_to_its_end() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, describe(result)
    assert "closed" in result.stdout
    assert "discarded" in result.stdout
    assert "timer:condom_advice_ends" in result.stdout
