"""A successor of the contact workflow, for the tests only (issue 20 item 5: the product ships the guideline's real
version): revision 2 of ``contact@SST-mpox-7.1``, a corrected reading in which monitoring lasts 14 days instead of
21, a monitored contact may be called for a follow-up (a new state, ``follow_up``, citing §2.1), a released contact
is no longer monitored anew after a new exposure (the transition removed), and the anonymous-tracing guard of
``add`` is gone (with it the only citation of §5.4). Open contacts of the product's definition map onto it.

``registered`` (a fixture) loads it beside the product's for one test and unloads it after; a process started with
``MPOXFLOW_DEFINITIONS=tests.successor:SUCCESSOR`` loads it as a deployment would."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import pytest

from workflows import contact
from workflows.contact import CONTACT
from workflows.definition import TransitionSpec, WorkflowDefinition
from workflows.registry import BY_NAME, register, unregister
from workflows.rules import cite

MONITORING_DAYS = 14
S2_1 = cite("§2.1")


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
    return rows


SUCCESSOR = WorkflowDefinition(
    kind="contact",
    version="SST-mpox-7.1",
    revision=2,
    facts=contact.ContactFacts,
    states=(*contact.STATES, "follow_up"),
    final=contact.FINAL,
    transitions=_transitions(),
    timers=[dataclasses.replace(t, period=timedelta(days=MONITORING_DAYS)) if t.name == "monitoring_ends" else t
            for t in CONTACT.timers.values()],
    identity=CONTACT.identity,
    identity_rule=CONTACT.identity_rule,
    migrates_from=CONTACT,
    state_map={s: s for s in contact.STATES if s not in contact.FINAL},
)


@pytest.fixture
def registered() -> Iterator[WorkflowDefinition]:
    """The successor in the registry for one test (``BY_NAME``), removed after."""
    assert SUCCESSOR.name not in BY_NAME
    register(SUCCESSOR)
    try:
        yield SUCCESSOR
    finally:
        unregister(SUCCESSOR.name)
