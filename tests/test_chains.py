"""Chains of transmission (issue 21 item 2), on both backends: the clusters a known population makes, their
sizes, onsets and whether they are still active, the edges with their dates and kinds, and what a reader of
some units sees of a cluster that crosses units."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from engine.chains import Chains
from engine.core import Engine
from scheduler.firing import advance_simulated_clock
from tests.helpers import contents
from tests.test_units import tree
from workflows.errors import NotFound, UsageError

D = date.fromisoformat
STAFF = "staff:test"
ADMIN = "admin:test"


def _case(engine: Engine, ref: str, onset: str, *, pcr_on: str | None = None, actor: str = STAFF,
          **data: object) -> str:
    person = engine.add_person(ref=ref, actor=actor)["id"]
    case = engine.open("case", "open", person=person, actor=actor, data={
        "onset": D(onset), "symptoms": ["rash"], "criteria": ["msm"], **data})["id"]
    if pcr_on is not None:
        engine.apply(case, "confirm", data={"pcr_on": D(pcr_on)}, actor=actor)
        engine.apply(case, "consent", data={"tracing": True}, actor=actor)
    return case


def _contact(engine: Engine, case: str, ref: str, exposed: str, kind: str, actor: str = STAFF) -> str:
    person = engine.add_person(ref=ref, actor=actor)["id"]
    return engine.open("contact", "add", person=person, actor=actor, data={
        "case": case, "exposed": D(exposed), "kind": kind})["id"]


def population(engine: Engine) -> dict[str, str]:
    """A cluster that has ended (case-1, deceased, and its released contact-1), then a source case (case-2) with
    three contacts, one of whom (contact-2) became case-3 with its own two contacts; case-4 opened with case-3 as
    its source directly; case-5 with case-2 recorded as a possible source (§5.2)."""
    made: dict[str, str] = {}
    made["E"] = _case(engine, "E", "2025-02-10", pcr_on="2025-02-11")
    made["e1"] = _contact(engine, made["E"], "E1", "2025-02-11", "sexual")
    engine.apply(made["E"], "die", data={"on": D("2025-03-02")}, actor=STAFF)
    advance_simulated_clock(engine, datetime.fromisoformat("2025-03-06T08:00:00+01:00"))
    made["A"] = _case(engine, "A", "2025-03-04", pcr_on="2025-03-05")
    made["c1"] = _contact(engine, made["A"], "C1", "2025-03-04", "sexual")
    engine.apply(made["c1"], "expose", data={"exposed": D("2025-03-05"), "kind": "household"}, actor=STAFF)
    made["c2"] = _contact(engine, made["A"], "C2", "2025-03-05", "face_to_face")
    made["c3"] = _contact(engine, made["A"], "C3", "2025-03-04", "household")
    made["B"] = engine.apply(made["c1"], "symptoms", data={"onset": D("2025-03-06"), "symptoms": ["rash"]},
                             actor=STAFF)["became_case"]
    engine.apply(made["B"], "confirm", data={"pcr_on": D("2025-03-06")}, actor=STAFF)
    engine.apply(made["B"], "consent", data={"tracing": True}, actor=STAFF)
    made["d1"] = _contact(engine, made["B"], "D1", "2025-03-06", "sexual")
    made["d2"] = _contact(engine, made["B"], "D2", "2025-03-06", "passenger_8h")
    made["S"] = _case(engine, "S", "2025-03-06", source_case=made["B"])
    made["P"] = _case(engine, "P", "2025-03-06")
    engine.apply(made["P"], "source", data={"case": made["A"], "on": D("2025-03-04")}, actor=STAFF)
    return made


def test_the_clusters_of_a_known_population_with_sizes_onsets_and_whether_active(engine, clock):
    made = population(engine)
    assert [made[k] for k in ("E", "A", "B", "S", "P")] == ["case-1", "case-2", "case-3", "case-4", "case-5"]
    assert [made[k] for k in ("e1", "c1", "c2", "c3", "d1", "d2")] == [f"contact-{n}" for n in range(1, 7)]
    assert engine.show("contact-1")["state"] == "released" and engine.show("case-1")["state"] == "deceased"
    chains = Chains(engine.runtime)
    # Active first (case-2's is), then by last onset: the ended one last.
    assert chains.clusters() == [
        {"id": "cluster-2", "cases": 4, "contacts": 5, "outside": 0, "first_onset": "2025-03-04",
         "last_onset": "2025-03-06", "active": True},
        {"id": "cluster-1", "cases": 1, "contacts": 1, "outside": 0, "first_onset": "2025-02-10",
         "last_onset": "2025-02-10", "active": False},
    ]
    one = chains.cluster("cluster-2")
    assert one["edges"] == [
        {"from": "case-2", "to": "contact-4", "link": "exposure", "on": "2025-03-04", "kind": "household"},
        # contact-2's last exposure: the second one, on 2025-03-05, in the household.
        {"from": "case-2", "to": "contact-2", "link": "exposure", "on": "2025-03-05", "kind": "household"},
        {"from": "case-2", "to": "contact-3", "link": "exposure", "on": "2025-03-05", "kind": "face_to_face"},
        {"from": "case-3", "to": "contact-5", "link": "exposure", "on": "2025-03-06", "kind": "sexual"},
        {"from": "case-3", "to": "contact-6", "link": "exposure", "on": "2025-03-06", "kind": "passenger_8h"},
        {"from": "contact-2", "to": "case-3", "link": "became", "on": "2025-03-06", "kind": None},
        {"from": "case-3", "to": "case-4", "link": "source", "on": None, "kind": None},
        {"from": "case-2", "to": "case-5", "link": "possible_source", "on": "2025-03-04", "kind": None},
    ]
    assert [(n["id"], n["kind"], n["state"], n.get("onset")) for n in one["nodes"]] == [
        ("case-2", "case", "confirmed", "2025-03-04"), ("case-3", "case", "confirmed", "2025-03-06"),
        ("case-4", "case", "suspected", "2025-03-06"), ("case-5", "case", "suspected", "2025-03-06"),
        ("contact-2", "contact", "symptomatic", None), ("contact-3", "contact", "exposed", None),
        ("contact-4", "contact", "exposed", None), ("contact-5", "contact", "exposed", None),
        ("contact-6", "contact", "exposed", None)]
    ended = chains.cluster("cluster-1")
    assert ended["edges"] == [{"from": "case-1", "to": "contact-1", "link": "exposure", "on": "2025-02-11",
                               "kind": "sexual"}]
    assert [(n["id"], n["state"]) for n in ended["nodes"]] == [("case-1", "deceased"), ("contact-1", "released")]


def test_a_case_without_onset_counts_from_its_pcr_sample_and_a_lone_case_is_a_cluster_of_its_own(engine):
    person = engine.add_person(ref="PCR", actor=STAFF)["id"]
    engine.open("case", "open_confirmed", person=person, actor=STAFF, data={
        "symptoms": [], "criteria": [], "pcr_on": D("2025-03-02"), "clade": None})
    [cluster] = Chains(engine.runtime).clusters()
    assert cluster == {"id": "cluster-1", "cases": 1, "contacts": 0, "outside": 0, "first_onset": "2025-03-02",
                       "last_onset": "2025-03-02", "active": True}
    assert Chains(engine.runtime).cluster("cluster-1")["nodes"] == [
        {"id": "case-1", "kind": "case", "state": "confirmed", "onset": "2025-03-02", "onset_from": "pcr_on"}]


def test_when_a_case_joins_two_clusters_the_lower_id_names_them(engine, clock):
    made = population(engine)
    engine.apply(made["P"], "source", data={"case": made["E"], "on": D("2025-03-02")}, actor=STAFF)
    [cluster] = Chains(engine.runtime).clusters()
    assert (cluster["id"], cluster["cases"], cluster["contacts"], cluster["first_onset"]) == (
        "cluster-1", 5, 6, "2025-02-10")
    with pytest.raises(NotFound, match="cluster-2"):
        Chains(engine.runtime).cluster("cluster-2")


def test_a_reader_sees_the_nodes_of_their_units_and_the_rest_as_anonymous_parts(engine, db, clock):
    tree(engine)
    case = _case(engine, "H-1", "2025-03-01", pcr_on="2025-03-02", actor="member:h")
    mine = _contact(engine, case, "H-2", "2025-03-02", "sexual", actor="member:h")
    theirs = _contact(engine, case, "H-3", "2025-03-02", "household", actor="member:h")
    engine.transfer([theirs], unit="Region Sjælland", actor="lead:h", reason="moved")
    became = engine.apply(theirs, "symptoms", data={"onset": D("2025-03-03"), "symptoms": ["rash"]},
                          actor="member:sj")["became_case"]
    assert (case, mine, theirs, became) == ("case-1", "contact-1", "contact-2", "case-2")
    everything = Chains(engine.runtime).cluster("cluster-1")
    assert (everything["cases"], everything["contacts"], everything["outside"]) == (2, 2, 0)

    h = Chains(Engine(db, engine.clock).viewing_as("member:h").runtime)
    assert h.clusters() == [{"id": "cluster-1", "cases": 1, "contacts": 1, "outside": 1,
                             "first_onset": "2025-03-01", "last_onset": "2025-03-01", "active": True}]
    seen = h.cluster("cluster-1")
    assert seen["nodes"] == [
        {"id": "case-1", "kind": "case", "state": "confirmed", "onset": "2025-03-01", "onset_from": "onset"},
        {"id": "contact-1", "kind": "contact", "state": "exposed", "case": "case-1"},
        {"id": "outside-1", "kind": "outside", "state": None}]
    # The exposure is Sjælland's contact's: neither its date nor its kind is shown to Hovedstaden.
    assert seen["edges"] == [
        {"from": "case-1", "to": "contact-1", "link": "exposure", "on": "2025-03-02", "kind": "sexual"},
        {"from": "case-1", "to": "outside-1", "link": "exposure", "on": None, "kind": None}]

    sj = Chains(Engine(db, engine.clock).viewing_as("member:sj").runtime)
    seen = sj.cluster("cluster-1")
    assert (seen["cases"], seen["contacts"], seen["outside"], seen["first_onset"]) == (1, 1, 1, "2025-03-03")
    assert [n["id"] for n in seen["nodes"]] == ["case-2", "contact-2", "outside-1"]
    assert seen["edges"] == [
        {"from": "outside-1", "to": "contact-2", "link": "exposure", "on": "2025-03-02", "kind": "household"},
        {"from": "contact-2", "to": "case-2", "link": "became", "on": "2025-03-03", "kind": None}]

    # A unit that has none of the cluster's nodes sees no cluster at all.
    stps = Chains(Engine(db, engine.clock).viewing_as("member:stps").runtime)
    assert stps.clusters() == []
    with pytest.raises(NotFound, match="cluster-1"):
        stps.cluster("cluster-1")


@pytest.mark.parametrize("given", ["cluster-x", "case-1", "cluster-", "cluster-99999999999", ""])
def test_a_text_that_is_no_cluster_id_is_refused_and_nothing_changes(engine, db, given):
    before = contents(db)
    with pytest.raises(UsageError, match="is not a cluster id"):
        Chains(engine.runtime).cluster(given)
    assert contents(db) == before


def test_no_cluster_by_that_id(engine, clock):
    population(engine)
    for missing in ("cluster-3", "cluster-77"):  # case-3 is in cluster-2; there is no case-77
        with pytest.raises(NotFound):
            Chains(engine.runtime).cluster(missing)
