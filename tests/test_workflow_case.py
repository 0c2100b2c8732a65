"""The case workflow as pure rules: its shape, each guard, each timer's exact instant (no database)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest

from workflows.calendar import window_closes
from workflows.case import (
    CASE,
    FINAL,
    STATES,
    TEST_RESULT_TASK,
    condom_advice_ends,
    phone_notification_due,
    written_notification_due,
)
from workflows.definition import NEW, Settings, Subject
from workflows.errors import GuardRefused, TriggerNotAllowed

NOW = datetime.fromisoformat("2025-03-03T08:00:00+01:00")


def subject(state: str = NEW, facts=None, now: datetime = NOW, **data) -> Subject:
    return Subject(object_id="case-1", state=state, facts=facts, now=now, settings=Settings(), data=data)


def opened(**overrides):
    s = subject(onset=date(2025, 3, 1), symptoms=["rash"], criteria=["msm"], **overrides)
    CASE.fire(s, "open")
    return s


# ---- shape -------------------------------------------------------------------------------------------------


def test_the_definition_is_sound_and_versioned():
    assert CASE.problems() == []
    assert CASE.name == "case@SST-mpox-7.1"
    assert CASE.states == STATES == ("suspected", "confirmed", "isolated", "healed", "closed", "discarded",
                                     "deceased")


def test_one_shared_machine_runs_every_subject_without_registering_it():
    machine = CASE.machine
    s = opened()
    assert s.state == "suspected"
    # The subject got no trigger methods and the machine keeps no models: nothing grows per object.
    assert machine.models == [] and not hasattr(s, "confirm") and not hasattr(s, "is_suspected")
    with pytest.raises(TriggerNotAllowed):
        CASE.fire(s, "heal")
    assert s.state == "suspected" and machine.models == []


def test_every_transition_and_guard_cites_a_section():
    for spec in CASE.transitions:
        assert spec.rule.startswith("SST-mpox-7.1 §"), spec.trigger
        for guard in spec.guards:
            assert guard.rule.startswith("SST-mpox-7.1 §"), spec.trigger


@pytest.mark.parametrize("final", FINAL)
def test_nothing_leaves_a_final_state(final):
    for spec in CASE.transitions:
        if final in spec.source:
            assert spec.dest is None, f"{spec.trigger} leaves {final}"


def test_no_code_reads_the_real_time_except_the_system_clock():
    for folder in ("workflows", "engine", "persistence", "scheduler", "entry"):
        for path in Path(folder).rglob("*.py"):
            source = path.read_text()
            if path.as_posix() == "engine/clock.py":
                assert source.count("datetime.now(") == 1
                continue
            for banned in ("datetime.now(", "datetime.utcnow(", "time.time(", "date.today("):
                assert banned not in source, f"{path} reads the real time with {banned}"


def test_the_mermaid_diagram_is_drawn_from_the_definition():
    diagram = CASE.mermaid()
    assert diagram.splitlines()[3] == "stateDiagram-v2"
    for state in STATES:
        assert f'state "{state}"' in diagram
    assert "suspected --> confirmed: confirm (§1.1)" in diagram
    assert "healed --> closed: condom_advice_ends (§4.1)" in diagram


# ---- guards ------------------------------------------------------------------------------------------------


def test_the_case_definition_needs_a_symptom_and_a_criterion():
    with pytest.raises(GuardRefused) as refused:
        CASE.fire(subject(onset=date(2025, 3, 1), symptoms=[], criteria=["msm"]), "open")
    assert "rash, or another symptom that can be mpox" in refused.value.message
    assert "criterion" not in refused.value.message
    assert refused.value.rule == "SST-mpox-7.1 §1.1"
    with pytest.raises(GuardRefused) as refused:
        CASE.fire(subject(onset=date(2025, 3, 1), symptoms=["fever"], criteria=[]), "open")
    assert "a criterion within 21 days before onset" in refused.value.message
    assert "SST-mpox-7.1 §1.1" in refused.value.message
    with pytest.raises(GuardRefused) as refused:
        CASE.fire(subject(onset=date(2025, 3, 1), symptoms=[], criteria=[]), "open")
    assert "symptom" in refused.value.message and "criterion" in refused.value.message


@pytest.mark.parametrize("symptom", ["rash", "fever", "headache", "myalgia", "back_pain", "fatigue",
                                     "lymphadenopathy", "proctitis", "chills"])
def test_rash_or_any_other_listed_symptom_with_a_criterion_opens_a_suspected_case(symptom):
    s = subject(onset=date(2025, 3, 1), symptoms=[symptom], criteria=["travel"])
    CASE.fire(s, "open")
    assert s.state == "suspected"
    # The only timer: chase the test result (issue 16, Decision), 2 days from the opening day.
    assert [(t.name, t.task) for t in s.armed] == [("test_result_due", TEST_RESULT_TASK)]


def test_onset_in_the_future_is_refused():
    with pytest.raises(GuardRefused, match="after today"):
        CASE.fire(subject(onset=date(2025, 3, 4), symptoms=["rash"], criteria=["msm"]), "open")


@pytest.mark.parametrize(
    ("pcr_on", "allowed"),
    [(date(2025, 2, 28), False), (date(2025, 3, 1), True), (date(2025, 3, 3), True), (date(2025, 3, 4), False)],
)
def test_confirm_needs_a_pcr_date_from_onset_to_today(pcr_on, allowed):
    s = opened()
    s.data = {"pcr_on": pcr_on}
    if allowed:
        CASE.fire(s, "confirm")
        assert s.state == "confirmed"
        assert s.facts.pcr_on == pcr_on
    else:
        with pytest.raises(GuardRefused) as refused:
            CASE.fire(s, "confirm")
        assert refused.value.rule == "SST-mpox-7.1 §1.1"
        assert s.state == "suspected"


def test_heal_needs_a_healed_date_on_or_after_onset():
    s = opened()
    s.data = {"pcr_on": date(2025, 3, 2)}
    CASE.fire(s, "confirm")
    s.data = {"on": date(2025, 2, 28)}
    with pytest.raises(GuardRefused, match="before symptom onset"):
        CASE.fire(s, "heal")
    s.data = {"on": date(2025, 3, 1)}
    CASE.fire(s, "heal")
    assert s.state == "healed"


def test_discard_only_from_suspected():
    s = opened()
    s.data = {"pcr_on": date(2025, 3, 2)}
    CASE.fire(s, "confirm")
    with pytest.raises(TriggerNotAllowed) as refused:
        CASE.fire(s, "discard")
    assert "case-1 is confirmed: 'discard' is not allowed" in refused.value.message


@pytest.mark.parametrize("final", FINAL)
@pytest.mark.parametrize("trigger", ["open", "confirm", "discard", "isolate", "heal", "die"])
def test_no_trigger_leaves_a_final_state(final, trigger):
    with pytest.raises(TriggerNotAllowed):
        CASE.fire(subject(state=final, facts=None, mode="home", on=date(2025, 3, 2), pcr_on=date(2025, 3, 2)),
                  trigger)


# ---- timers (exact instants, across daylight-saving changes) -----------------------------------------------


def test_a_window_closes_at_local_midnight_after_its_last_day_across_dst():
    # 2025-03-30 02:00 the clocks go forward; that day's midnight is still +01:00, the next +02:00.
    assert window_closes(date(2025, 3, 25), 4) == datetime(2025, 3, 29, 23, 0, tzinfo=UTC)
    assert window_closes(date(2025, 3, 26), 4) == datetime(2025, 3, 30, 22, 0, tzinfo=UTC)
    # 2025-10-26 03:00 they go back.
    assert window_closes(date(2025, 10, 21), 4) == datetime(2025, 10, 25, 22, 0, tzinfo=UTC)
    assert window_closes(date(2025, 10, 22), 4) == datetime(2025, 10, 26, 23, 0, tzinfo=UTC)


def test_condom_advice_ends_twelve_weeks_after_the_healed_day():
    # 2025-03-20 + 85 days = 2025-06-13, summer time: 00:00+02:00.
    assert condom_advice_ends(date(2025, 3, 20)) == datetime.fromisoformat("2025-06-13T00:00:00+02:00")
    # 2025-10-20 + 85 days = 2026-01-13, winter time: 00:00+01:00.
    assert condom_advice_ends(date(2025, 10, 20)) == datetime.fromisoformat("2026-01-13T00:00:00+01:00")


def test_healing_arms_condom_advice_ends():
    s = opened()
    s.data = {"pcr_on": date(2025, 3, 2)}
    CASE.fire(s, "confirm")
    s.armed.clear()
    s.data = {"on": date(2025, 3, 3)}
    CASE.fire(s, "heal")
    [timer] = s.armed
    assert (timer.name, timer.due_at, timer.rule) == (
        "condom_advice_ends", datetime.fromisoformat("2025-05-27T00:00:00+02:00"), "SST-mpox-7.1 §4.1")


def test_written_notification_is_due_24_real_hours_after_confirmation_across_dst():
    confirmed_at = datetime.fromisoformat("2025-03-29T10:00:00+01:00")
    assert written_notification_due(confirmed_at) == datetime.fromisoformat("2025-03-30T11:00:00+02:00")
    confirmed_at = datetime.fromisoformat("2025-10-25T10:00:00+02:00")
    assert written_notification_due(confirmed_at) == datetime.fromisoformat("2025-10-26T09:00:00+01:00")


@pytest.mark.parametrize(
    ("confirmed_at", "due"),
    [
        ("2025-03-03T08:00:00+01:00", "2025-03-03T17:00:00+01:00"),
        ("2025-03-03T16:59:59+01:00", "2025-03-03T17:00:00+01:00"),
        # §3.1 "straks, inden for dagstid": at 17:00 the daytime window is over: the next working day's.
        ("2025-03-03T17:00:00+01:00", "2025-03-04T17:00:00+01:00"),
        ("2025-03-03T18:30:00+01:00", "2025-03-04T17:00:00+01:00"),
        ("2025-03-30T10:00:00+02:00", "2025-03-31T17:00:00+02:00"),  # the Sunday summer time starts
        ("2025-10-26T10:00:00+01:00", "2025-10-27T17:00:00+01:00"),  # the Sunday it ends
        ("2025-03-03T23:30:00+00:00", "2025-03-04T17:00:00+01:00"),  # UTC evening is the next local day
    ],
)
def test_phone_notification_is_due_at_the_end_of_the_local_daytime_window(confirmed_at, due):
    assert phone_notification_due(datetime.fromisoformat(confirmed_at), Settings()) == datetime.fromisoformat(due)


def test_the_working_day_end_is_a_setting():
    at = datetime.fromisoformat("2025-03-03T15:00:00+01:00")
    assert phone_notification_due(at, Settings(working_day_ends=time(15, 30))) == datetime.fromisoformat(
        "2025-03-03T15:30:00+01:00")
    s = opened(now=at)
    s.settings = Settings(working_day_ends=time(16, 0))
    s.data = {"pcr_on": date(2025, 3, 2)}
    CASE.fire(s, "confirm")
    due = {t.name: t.due_at for t in s.armed}
    assert due["phone_notification_due"] == datetime.fromisoformat("2025-03-03T16:00:00+01:00")
    assert due["written_notification_due"] == datetime.fromisoformat("2025-03-04T15:00:00+01:00")


def test_notify_satisfies_its_deadline_and_only_once():
    s = opened()
    s.data = {"pcr_on": date(2025, 3, 2)}
    CASE.fire(s, "confirm")
    s.data = {"channel": "phone"}
    CASE.fire(s, "notify")
    assert s.satisfied == {"test_result_due", "phone_notification_due"}
    assert s.facts.phone_notified_at == NOW
    with pytest.raises(GuardRefused, match="already recorded"):
        CASE.fire(s, "notify")


def test_a_death_cancels_the_condom_advice():
    s = opened()
    s.data = {"pcr_on": date(2025, 3, 2)}
    CASE.fire(s, "confirm")
    s.data = {"on": date(2025, 3, 2)}
    CASE.fire(s, "heal")
    s.data = {"on": date(2025, 3, 3)}
    CASE.fire(s, "die")
    assert s.state == "deceased"
    assert "condom_advice_ends" in s.cancelled
