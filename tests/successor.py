"""Successors of the product's workflows, for the tests only (issue 20 item 5: the product ships the guideline's real
version). Each is revision 2 of its ``…@SST-mpox-7.1``, a corrected reading, and declares how the open objects of the
product's definition move to it (``migrates_from``, ``state_map``, the ``migrated`` transition):

- ``SUCCESSOR`` (``contact@SST-mpox-7.1-r2``): monitoring lasts 14 days instead of 21; a monitored contact may be
  called for a follow-up (a new state, ``follow_up``, citing §2.1); a released contact is no longer monitored anew
  after a new exposure (the transition removed); the anonymous-tracing guard of ``add`` is gone (with it the only
  citation of §5.4), so a contact traced anonymously through the treating doctor cannot move to it (the
  ``migrated`` guard) and finishes under the rules it started with.
- ``CASE_SUCCESSOR`` (``case@SST-mpox-7.1-r2``): condom advice for 8 weeks after healing instead of 12.
- ``COURSE_SUCCESSOR`` (``course@SST-mpox-7.1-r2``): dose 2 from 35 days after dose 1 instead of 28; an offered
  course stays under the product's definition (its state maps to None).

``registered`` (a fixture) loads them beside the product's for one test and unloads them after; a process started
with ``MPOXFLOW_DEFINITIONS=tests.successor:SUCCESSORS`` (and the repository on ``PYTHONPATH``) loads them as a
deployment would."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest

from workflows import case, contact, course
from workflows.case import CASE
from workflows.contact import CONTACT
from workflows.course import COURSE
from workflows.definition import MIGRATED, Guard, Subject, Timer, TransitionSpec, WorkflowDefinition
from workflows.errors import because
from workflows.registry import BY_NAME, register, unregister
from workflows.rules import cite

MONITORING_DAYS = 14
CONDOM_ADVICE_DAYS = 56
DOSE_INTERVAL_DAYS = 35
S2_1, S4_1, S5_5, S6_4 = cite("§2.1"), cite("§4.1"), cite("§5.5"), cite("§6.4")


def _period(timers: Mapping[str, Timer], name: str, days: int) -> list[Timer]:
    return [dataclasses.replace(t, period=timedelta(days=days)) if t.name == name else t for t in timers.values()]


def _not_anonymous(subject: Subject, data: Mapping[str, Any]) -> str | None:
    if subject.facts.anonymous_via_doctor:
        return because("%(contact)s is traced anonymously through the treating doctor, which this reading has no "
                       "place for: it finishes under the rules it started with", contact=subject.object_id)
    return None


def _transitions() -> list[TransitionSpec]:
    rows: list[TransitionSpec] = []
    for spec in CONTACT.transitions:
        if spec.trigger == "expose" and spec.source == ("released",):
            continue  # removed: a released contact is not monitored anew
        if spec.trigger == "add":
            spec = dataclasses.replace(spec, guards=tuple(g for g in spec.guards if g.rule != contact.S5_4))
        if spec.trigger == "monitoring_ends":
            spec = dataclasses.replace(spec, source=(*spec.source, "follow_up"),
                                       summary="14 days after the last exposure without symptoms: released")
        rows.append(spec)
    rows.append(TransitionSpec("call", ("monitored",), "follow_up", S2_1,
                               "the monitored contact is called to ask about symptoms"))
    rows.append(TransitionSpec(MIGRATED, contact.STATES, None, S5_5,
                               "moved from contact@SST-mpox-7.1: monitoring of 14 days from the last exposure",
                               guards=(Guard(S5_5, _not_anonymous),), effect=contact.timers_from_facts,
                               internal=True))
    return rows


SUCCESSOR = WorkflowDefinition(
    kind="contact",
    version="SST-mpox-7.1",
    revision=2,
    facts=contact.ContactFacts,
    states=(*contact.STATES, "follow_up"),
    final=contact.FINAL,
    transitions=_transitions(),
    timers=_period(CONTACT.timers, "monitoring_ends", MONITORING_DAYS),
    identity=CONTACT.identity,
    identity_rule=CONTACT.identity_rule,
    migrates_from=CONTACT,
    state_map={s: s for s in contact.STATES if s not in contact.FINAL},
)

CASE_SUCCESSOR = WorkflowDefinition(
    kind="case",
    version="SST-mpox-7.1",
    revision=2,
    facts=case.CaseFacts,
    states=case.STATES,
    final=case.FINAL,
    transitions=[*CASE.transitions,
                 TransitionSpec(MIGRATED, case.OPEN_STATES, None, S4_1,
                                "moved from case@SST-mpox-7.1: condom advice for 8 weeks after healing",
                                effect=case.timers_from_facts, internal=True)],
    timers=_period(CASE.timers, "condom_advice_ends", CONDOM_ADVICE_DAYS),
    identity=CASE.identity,
    identity_rule=CASE.identity_rule,
    migrates_from=CASE,
    state_map={s: s for s in case.STATES if s not in case.FINAL},
)

COURSE_SUCCESSOR = WorkflowDefinition(
    kind="course",
    version="SST-mpox-7.1",
    revision=2,
    facts=course.CourseFacts,
    states=course.STATES,
    final=course.FINAL,
    transitions=[*COURSE.transitions,
                 TransitionSpec(MIGRATED, ("dose1_given", "dose2_due"), None, S6_4,
                                "moved from course@SST-mpox-7.1: dose 2 from 35 days after dose 1",
                                effect=course.timers_from_facts, internal=True)],
    timers=_period(COURSE.timers, "dose2_due", DOSE_INTERVAL_DAYS),
    identity=COURSE.identity,
    identity_rule=COURSE.identity_rule,
    migrates_from=COURSE,
    state_map={"offered": None, "dose1_given": "dose1_given", "dose2_due": "dose2_due"},
)

SUCCESSORS = (SUCCESSOR, CASE_SUCCESSOR, COURSE_SUCCESSOR)


@pytest.fixture
def registered() -> Iterator[WorkflowDefinition]:
    """The successors loaded beside the product's for one test (``BY_NAME``), unloaded after; yields the
    contact successor."""
    assert not any(s.name in BY_NAME for s in SUCCESSORS)
    for successor in SUCCESSORS:
        register(successor)
    try:
        yield SUCCESSOR
    finally:
        for successor in SUCCESSORS:
            unregister(successor.name)
