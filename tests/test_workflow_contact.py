"""The contact workflow as pure rules (no database): its shape, Table 1, the windows."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from workflows.contact import (
    CONTACT,
    EXPOSURE_KINDS,
    monitoring_ends,
    pep_indicated,
    pep_optimal_window_closes,
    pep_window_closes,
    risk_of,
)
from workflows.registry import WORKFLOWS


@pytest.mark.parametrize("definition", WORKFLOWS.values(), ids=lambda d: d.name)
def test_every_workflow_is_sound_and_cites_the_guideline(definition):
    assert definition.problems() == []
    for spec in definition.transitions:
        assert spec.rule.startswith("SST-mpox-7.1 §")
        assert all(g.rule.startswith("SST-mpox-7.1 §") for g in spec.guards)
        for final in definition.final:
            if final in spec.source:
                assert spec.dest is None


def test_the_contact_states_are_the_contracts():
    assert CONTACT.name == "contact@SST-mpox-7.1"
    assert CONTACT.states == ("exposed", "monitored", "released", "symptomatic")
    # Released is not final: a new exposure to a case still infectious starts the monitoring anew (§5.5); nor is
    # symptomatic: a negative test gives the contact back its monitoring (§2.2.1, §5.5). No state is final.
    assert set(CONTACT.final) == set()


@pytest.mark.parametrize(
    ("kind", "risk"),
    [("household", "high"), ("sexual", "high"), ("mucosa_or_broken_skin", "high"), ("sharps", "high"),
     ("cleaning", "high"), ("intact_skin", "medium"), ("passenger_8h", "medium"), ("healthcare_no_ppe", "medium"),
     ("face_to_face", "medium")],
)
def test_table_1_risk_of_each_exposure_kind(kind, risk):
    """face_to_face (cumulated over 3 hours within 2 metres) is medium, not low as the old digest had it: Table 1's
    low needs droplet exposure to be unlikely. No kind is low: low comes only from a clinician (CLI.md)."""
    assert risk_of(kind) == risk
    assert pep_indicated(risk)


def test_health_staff_with_ppe_are_not_a_risk_level():
    assert "healthcare_with_ppe" in EXPOSURE_KINDS
    with pytest.raises(KeyError):
        risk_of("healthcare_with_ppe")


@pytest.mark.parametrize(
    ("exposed", "optimal", "latest", "monitoring"),
    [
        ("2025-03-01", "2025-03-06T00:00:00+01:00", "2025-03-16T00:00:00+01:00", "2025-03-23T00:00:00+01:00"),
        # Just before summer time (2025-03-30): the optimal window's midnight is still +01:00 ...
        ("2025-03-25", "2025-03-30T00:00:00+01:00", "2025-04-09T00:00:00+02:00", "2025-04-16T00:00:00+02:00"),
        # ... and a day later it is +02:00.
        ("2025-03-26", "2025-03-31T00:00:00+02:00", "2025-04-10T00:00:00+02:00", "2025-04-17T00:00:00+02:00"),
        # Just before winter time (2025-10-26).
        ("2025-10-21", "2025-10-26T00:00:00+02:00", "2025-11-05T00:00:00+01:00", "2025-11-12T00:00:00+01:00"),
        ("2025-10-22", "2025-10-27T00:00:00+01:00", "2025-11-06T00:00:00+01:00", "2025-11-13T00:00:00+01:00"),
    ],
)
def test_the_windows_close_at_local_midnight(exposed, optimal, latest, monitoring):
    day = date.fromisoformat(exposed)
    assert pep_optimal_window_closes(day) == datetime.fromisoformat(optimal)
    assert pep_window_closes(day) == datetime.fromisoformat(latest)
    assert monitoring_ends(day) == datetime.fromisoformat(monitoring)
