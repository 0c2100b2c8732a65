"""Definitions are checked when built (issue 20 item 4): one initial state, nothing leaves a final state, no
unreachable state, every timed trigger has a timer of its name and every timer a trigger, every transition cites a
section, and a migration's state mapping covers every non-final state of the source. Each check builds a small
broken definition and asserts the exact refusal; the product's definitions pass them all."""

from __future__ import annotations

import importlib
import sys
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from workflows.definition import (
    MIGRATED,
    NEW,
    Guard,
    Settings,
    Subject,
    Timer,
    TimerSpec,
    TransitionSpec,
    WorkflowDefinition,
)
from workflows.errors import DefinitionError
from workflows.registry import BY_NAME, WORKFLOWS
from workflows.rules import cite

R = cite("§5.5")


@dataclass
class Facts:
    pass


def toy(**changes: Any) -> WorkflowDefinition:
    """A sound little workflow (new → open → done, by hand or by its timer), with ``changes`` to break it."""
    args: dict[str, Any] = {
        "kind": "toy", "version": "SST-mpox-7.1", "facts": Facts, "states": ("open", "done"), "final": ("done",),
        "transitions": [
            TransitionSpec("start", (NEW,), "open", R, "start"),
            TransitionSpec("finish", ("open",), "done", R, "finish"),
            TransitionSpec("finish_due", ("open",), "done", R, "finished by its timer", timed=True),
        ],
        "timers": (Timer("finish_due", R, timedelta(days=3), "the start"),),
    }
    args.update(changes)
    return WorkflowDefinition(**args)


def refusal(**changes: Any) -> DefinitionError:
    with pytest.raises(DefinitionError) as raised:
        toy(**changes)
    return raised.value


def with_transitions(*extra: TransitionSpec, drop: tuple[str, ...] = ()) -> list[TransitionSpec]:
    base = [s for s in toy().transitions if s.trigger not in drop]
    return [*base, *extra]


def test_the_toy_is_sound() -> None:
    definition = toy()
    assert definition.problems() == []
    assert definition.name == "toy@SST-mpox-7.1" and definition.revision == 1
    assert toy(revision=2).name == "toy@SST-mpox-7.1-r2"


def test_exactly_one_initial_state() -> None:
    # No transition leaves new: nothing creates an object.
    error = refusal(transitions=with_transitions(TransitionSpec("start", ("open",), "open", R, "noop"),
                                                 drop=("start",)))
    assert str(error) == ("workflow definition toy@SST-mpox-7.1 refused: no transition leaves the initial state "
                          "new: nothing creates an object; state open is unreachable from new; state done is "
                          "unreachable from new")
    assert error.definition == "toy@SST-mpox-7.1"
    # A second initial state: new declared among the stored states.
    error = refusal(states=(NEW, "open", "done"))
    assert error.problems == ("state new is declared: it is the initial state, before an object exists, and is "
                              "never stored",)
    # A creation that lands in no state, or a transition back into new.
    error = refusal(transitions=with_transitions(TransitionSpec("peek", (NEW,), None, R, "nothing made")))
    assert error.problems == ("peek: leaves the initial state new without a destination state",)
    error = refusal(transitions=with_transitions(TransitionSpec("undo", ("open",), NEW, R, "unmade")))
    assert error.problems == ("undo: enters the initial state new",)


def test_nothing_leaves_a_final_state() -> None:
    error = refusal(transitions=with_transitions(TransitionSpec("reopen", ("done",), "open", R, "reopened")))
    assert str(error) == "workflow definition toy@SST-mpox-7.1 refused: reopen: leaves final state done (to open)"
    # A transition that keeps a final state (a refusal, a note) is fine.
    assert toy(transitions=with_transitions(TransitionSpec("note", ("done",), None, R, "a note"))).problems() == []


def test_no_unreachable_state() -> None:
    error = refusal(states=("open", "done", "limbo"))
    assert str(error) == "workflow definition toy@SST-mpox-7.1 refused: state limbo is unreachable from new"
    # Reachable only from itself is still unreachable.
    error = refusal(states=("open", "done", "limbo"),
                    transitions=with_transitions(TransitionSpec("stay", ("limbo",), "limbo", R, "loop")))
    assert error.problems == ("state limbo is unreachable from new",)


def test_every_timed_trigger_has_a_timer_of_its_name() -> None:
    error = refusal(timers=())
    assert str(error) == ("workflow definition toy@SST-mpox-7.1 refused: finish_due: a timed trigger with no timer "
                          "of its name (declare it in timers)")


def test_every_timer_has_a_trigger() -> None:
    error = refusal(timers=(Timer("finish_due", R), Timer("reminder_due", R, timedelta(days=1))))
    assert str(error) == ("workflow definition toy@SST-mpox-7.1 refused: timer reminder_due: no timed transition "
                          "of its name fires it")
    # A transition of the timer's name that a person pulls does not count: the timer fires timed triggers.
    error = refusal(transitions=with_transitions(TransitionSpec("finish_due", ("open",), "done", R, "by hand"),
                                                 drop=("finish_due",)))
    assert error.problems == ("timer finish_due: no timed transition of its name fires it",)


def test_every_transition_cites_a_section() -> None:
    error = refusal(transitions=with_transitions(TransitionSpec("finish", ("open",), "done", "§5.5", "uncited"),
                                                 drop=("finish",)))
    assert str(error) == ("workflow definition toy@SST-mpox-7.1 refused: finish: cites no section ('§5.5'; cite "
                          "one as in workflows.rules.cite: 'SST-mpox-7.1 §5.5')")
    error = refusal(transitions=with_transitions(TransitionSpec("finish", ("open",), "done", "SST-mpox-7.1",
                                                                "no section"), drop=("finish",)))
    assert error.problems == ("finish: cites no section ('SST-mpox-7.1'; cite one as in workflows.rules.cite: "
                              "'SST-mpox-7.1 §5.5')",)
    # A guard and a timer cite one too; a later guideline's sections are cited in the same form.
    error = refusal(transitions=with_transitions(TransitionSpec(
        "finish", ("open",), "done", R, "guarded", guards=(Guard("see the guideline", lambda s, d: None),)),
        drop=("finish",)), timers=(Timer("finish_due", ""),))
    assert error.problems == ("finish: a guard cites no section ('see the guideline')",
                              "timer finish_due: cites no section ('')")
    later = "SST-mpox-8.0 §5.5"
    assert toy(version="SST-mpox-8.0", transitions=[
        TransitionSpec(s.trigger, s.source, s.dest, later, s.summary, timed=s.timed) for s in toy().transitions
    ], timers=(Timer("finish_due", later),)).problems() == []


def test_a_state_mapping_covers_every_non_final_state_of_the_source() -> None:
    source = toy(states=("open", "waiting", "done"), transitions=with_transitions(
        TransitionSpec("wait", ("open",), "waiting", R, "wait")))
    migrated = TransitionSpec(MIGRATED, ("open",), None, R, "moved to revision 2", internal=True)
    successor = {"version": "SST-mpox-7.1", "revision": 2, "migrates_from": source,
                 "transitions": with_transitions(migrated)}
    error = refusal(**successor, state_map={"open": "open"})
    assert str(error) == ("workflow definition toy@SST-mpox-7.1-r2 refused: the state mapping from "
                          "toy@SST-mpox-7.1 does not cover its non-final state waiting")
    # Final states need no mapping; every key is a state of the source, every value one of this definition's.
    assert toy(**successor, state_map={"open": "open", "waiting": "open"}).problems() == []
    error = refusal(**successor, state_map={"open": "open", "waiting": "paused", "gone": "open"})
    assert error.problems == (
        "the state mapping from toy@SST-mpox-7.1 maps waiting to paused, not one of this definition's states",
        "the state mapping from toy@SST-mpox-7.1 maps gone, not one of its states")
    # No mapping at all covers nothing; a mapping without its source, or from another kind, is refused.
    assert refusal(**successor).problems == (
        "the state mapping from toy@SST-mpox-7.1 does not cover its non-final state open",
        "the state mapping from toy@SST-mpox-7.1 does not cover its non-final state waiting")
    assert refusal(state_map={"open": "open"}).problems == (
        "a state mapping without the definition it migrates from (migrates_from)",)
    other = toy(kind="other")
    assert refusal(revision=2, migrates_from=other, state_map={"open": "open"},
                   transitions=with_transitions(migrated)).problems == (
        "migrates from other@SST-mpox-7.1, a workflow of another kind (other)",)
    # None: objects in that state are not migrated (they finish under their own definition); it covers the state.
    assert toy(**successor, state_map={"open": "open", "waiting": None}).problems() == []


def test_a_migration_declares_its_migrated_transition_from_every_state_it_maps_to() -> None:
    source = toy()
    successor = {"version": "SST-mpox-7.1", "revision": 2, "migrates_from": source, "state_map": {"open": "open"}}
    assert refusal(**successor).problems == (
        "no migrated transition: declare the internal transition that migrates an object from toy@SST-mpox-7.1 "
        "(its guards and the timers it arms)", "migrated: does not leave open, a state the mapping from "
        "toy@SST-mpox-7.1 gives")
    moving = TransitionSpec(MIGRATED, ("open",), "done", R, "moved", internal=True)
    assert refusal(**successor, transitions=with_transitions(moving)).problems == (
        "migrated: must be internal and keep the state (dest None, internal=True)",)
    by_hand = TransitionSpec(MIGRATED, ("open",), None, R, "moved")
    assert refusal(**successor, transitions=with_transitions(by_hand)).problems == (
        "migrated: must be internal and keep the state (dest None, internal=True)",)
    # A definition that migrates from nothing has no migrated transition.
    stray = TransitionSpec(MIGRATED, ("open",), None, R, "moved", internal=True)
    assert refusal(transitions=with_transitions(stray)).problems == (
        "migrated: a migration transition without the definition it migrates from (migrates_from)",)
    assert toy(**successor, transitions=with_transitions(stray)).problems() == []


def test_a_broken_definition_cannot_be_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_workflow.py").write_text(textwrap.dedent("""
        from workflows.definition import NEW, TransitionSpec, WorkflowDefinition
        from workflows.rules import cite

        BROKEN = WorkflowDefinition(
            kind="broken", version="SST-mpox-7.1", facts=dict, states=("open", "done"), final=("done",),
            transitions=[TransitionSpec("start", (NEW,), "open", cite("§5.5"), "start"),
                         TransitionSpec("reopen", ("done",), "open", cite("§5.5"), "reopen")],
        )
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DefinitionError) as raised:
        importlib.import_module("broken_workflow")
    assert raised.value.problems == ("reopen: leaves final state done (to open)",
                                     "state done is unreachable from new")
    assert "broken_workflow" not in sys.modules


def test_an_effect_that_arms_an_undeclared_timer_is_refused() -> None:
    def arm(subject: Subject, data: Any) -> None:
        subject.arm_timer(TimerSpec("surprise_due", subject.now + timedelta(days=1), R))

    definition = toy(transitions=with_transitions(TransitionSpec("start", (NEW,), "open", R, "start", effect=arm),
                                                  drop=("start",)))
    subject = Subject("toy-1", NEW, Facts(), datetime(2025, 3, 1, tzinfo=UTC), Settings())
    with pytest.raises(DefinitionError) as raised:
        definition.fire(subject, "start")
    assert str(raised.value) == ("workflow definition toy@SST-mpox-7.1 refused: start: its effect armed the "
                                 "undeclared timer(s) surprise_due (declare them in timers)")


def test_the_products_definitions_pass_every_check() -> None:
    assert sorted(BY_NAME) == ["case@SST-mpox-7.1", "contact@SST-mpox-7.1", "course@SST-mpox-7.1"]
    for definition in WORKFLOWS.values():
        assert definition.problems() == [], definition.name
        timed = {s.trigger for s in definition.transitions if s.timed}
        assert set(definition.timers) == timed, definition.name
    contact = WORKFLOWS["contact"].timers
    assert contact["monitoring_ends"].period == timedelta(days=21)
    assert contact["pep_optimal_window_closes"].period == timedelta(days=4)
    assert WORKFLOWS["course"].timers["dose2_due"].period == timedelta(days=28)
    assert WORKFLOWS["case"].timers["condom_advice_ends"].period == timedelta(weeks=12)
    # A due instant computed otherwise (the end of a daytime window) declares no period, only how it is computed.
    assert WORKFLOWS["case"].timers["phone_notification_due"].period is None


def test_the_declared_periods_are_the_periods_the_effects_compute() -> None:
    """A timer's declared period (what ``diagram --diff`` compares) is the one its effect arms it with: the due
    instants the workflows compute are the declared days from their day, at 00:00 Danish time after the last."""
    from datetime import date

    from workflows import case, contact, course
    from workflows.calendar import local_midnight, window_closes

    timers = {kind: definition.timers for kind, definition in WORKFLOWS.items()}
    for day in (date(2025, 3, 1), date(2025, 10, 20), date(2025, 12, 31)):  # across both DST changes
        days = {(kind, name): t.period.days for kind, ts in timers.items() for name, t in ts.items()
                if t.period is not None and t.period % timedelta(days=1) == timedelta(0)}
        assert contact.monitoring_ends(day) == window_closes(day, days[("contact", "monitoring_ends")])
        assert contact.pep_optimal_window_closes(day) == window_closes(day, days[("contact",
                                                                                  "pep_optimal_window_closes")])
        assert contact.pep_window_closes(day) == window_closes(day, days[("contact", "pep_window_closes")])
        assert days[("contact", "pep_assessment_due")] == days[("contact", "pep_window_closes")]
        # The course's PEP window is the contact's (workflows.course arms it with contact.pep_window_closes).
        assert days[("course", "pep_window_closes")] == days[("contact", "pep_window_closes")]
        assert course.dose2_due(day) == local_midnight(day + timedelta(days=days[("course", "dose2_due")]))
        assert case.condom_advice_ends(day) == window_closes(day, days[("case", "condom_advice_ends")])
    instant = datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
    assert case.written_notification_due(instant) - instant == timers["case"]["written_notification_due"].period
    assert case.paediatric_referral_due(instant) - instant == timers["case"]["paediatric_referral_due"].period
    assert timers["contact"]["inform_due"].period == contact.INFORM_WITHIN
