"""Many hands (issue 17) in the engine, on both backends: the unit tree, memberships, where new objects go,
assignment and transfer, access by unit (reading, acting, breaking the glass), work going back to the pool, and
the audit log answering "who was responsible, and who looked"."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from engine.core import Engine
from persistence.models import AuditEntry, Contact, Timer
from tests.conftest import START
from tests.helpers import confirmed, contents, person, pk
from workflows.errors import NotFound, NotPermitted, OutsideUnits, RuleRefused, UsageError

ADMIN = "admin:test"
D = date.fromisoformat


def tree(engine: Engine) -> dict[str, str]:
    """Region H with a department, Region Sjælland, STPS; users in each: ids by name."""
    made = {}
    for name, parent in (("Region Hovedstaden", "Danmark"), ("Hvidovre Infektion", "Region Hovedstaden"),
                         ("Region Sjælland", "Danmark"), ("STPS", "Danmark")):
        made[name] = engine.add_unit(name, parent=parent, actor=ADMIN)["id"]
    for name, units in (("lead:h", ["Region Hovedstaden:lead"]), ("member:h", ["Region Hovedstaden"]),
                        ("member:hvidovre", ["Hvidovre Infektion"]), ("member:sj", ["Region Sjælland"]),
                        ("member:stps", ["STPS"])):
        engine.add_user(name, "staff", actor=ADMIN, units=units)
    return made


def case_of(engine: Engine, actor: str, ref: str) -> str:
    """A confirmed case opened by ``actor``, with tracing consent."""
    p = engine.add_person(ref=ref, actor=actor)["id"]
    case = engine.open("case", "open", person=p, actor=actor, data={
        "onset": D("2025-03-01"), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    engine.apply(case, "confirm", data={"pcr_on": D("2025-03-03")}, actor=actor)
    engine.apply(case, "consent", data={"tracing": True}, actor=actor)
    return case


def contact_of(engine: Engine, actor: str, case: str, ref: str) -> str:
    p = engine.add_person(ref=ref, actor=actor)["id"]
    return engine.open("contact", "add", person=p, actor=actor, data={
        "case": case, "exposed": D("2025-03-02"), "kind": "sexual"})["id"]


def test_a_fresh_database_has_one_root_unit_and_its_users_belong_to_it(engine):
    units = engine.list_units()
    assert [(u["id"], u["name"], u["parent"]) for u in units] == [("unit-1", "Danmark", None)]
    names = {m["name"]: m["role"] for m in units[0]["members"]}
    assert names["staff:test"] == "member" and names[ADMIN] == "member" and "timer" not in names
    assert engine.audit_verify()["intact"]


def test_units_form_a_tree_and_a_new_user_must_be_given_one_once_there_are_several(engine):
    made = tree(engine)
    listed = engine.list_units()
    assert [u["name"] for u in listed] == ["Danmark", "Region Hovedstaden", "Hvidovre Infektion",
                                           "Region Sjælland", "STPS"]
    assert next(u for u in listed if u["name"] == "Hvidovre Infektion")["path"] == \
        "Danmark › Region Hovedstaden › Hvidovre Infektion"
    with pytest.raises(UsageError, match="which unit"):
        engine.add_user("nobody", "staff", actor=ADMIN)
    with pytest.raises(NotFound):
        engine.add_user("nobody", "staff", actor=ADMIN, units=["Region Atlantis"])
    with pytest.raises(RuleRefused, match="already a unit"):
        engine.add_unit("region hovedstaden", parent="Danmark", actor=ADMIN)
    with pytest.raises(NotPermitted):
        engine.add_unit("Team X", parent="STPS", actor="staff:test")
    entry = engine.audit(entity=made["STPS"])[-1]
    assert (entry["trigger"], entry["actor"], entry["data"]) == ("add", ADMIN, {"parent": "unit-1"})


def test_new_objects_go_where_the_placement_rules_say(engine):
    made = tree(engine)
    case = case_of(engine, "lead:h", "P-1")
    assert engine.show(case)["unit"] == made["Region Hovedstaden"]  # case: the creator's unit
    contact = contact_of(engine, "lead:h", case, "P-2")
    assert engine.show(contact)["unit"] == made["Region Hovedstaden"]  # contact: its case's unit
    engine.set_placement("contact", "unit", unit="STPS", actor=ADMIN, reason="STPS traces contacts")
    other = contact_of(engine, "lead:h", case, "P-3")
    assert engine.show(other)["unit"] == made["STPS"]
    assert {p["kind"]: (p["rule"], p["unit_name"]) for p in engine.placements()}["contact"] == ("unit", "STPS")
    entry = engine.audit(trigger="placement")[-1]
    assert entry["data"]["before"] == {"rule": "parent", "unit": None, "round_robin": False}


def test_round_robin_deals_new_work_to_the_member_who_waited_longest_and_skips_disabled_users(engine, clock):
    tree(engine)
    engine.add_user("member:h2", "staff", actor=ADMIN, units=["Region Hovedstaden"])
    engine.set_placement("case", "creator", round_robin=True, actor=ADMIN)
    from engine.accounts import Accounts

    Accounts(engine).set_disabled("member:h2", True, actor=ADMIN)
    assigned = []
    for n in range(4):
        clock.set(START + timedelta(minutes=n))
        assigned.append(engine.show(case_of(engine, "member:h", f"RR-{n}"))["assignee"])
    users = {u["name"]: u["id"] for u in engine.users()}
    # Region H's members who can work: lead:h and member:h, in turn (the disabled one never).
    assert assigned == [users["lead:h"], users["member:h"], users["lead:h"], users["member:h"]]


def test_a_member_of_one_region_neither_sees_nor_acts_on_another_regions_case(engine, db):
    tree(engine)
    case = case_of(engine, "member:sj", "SJ-1")
    contact = contact_of(engine, "member:sj", case, "SJ-2")
    h = Engine(db, engine.clock).viewing_as("member:h")
    assert h.list("case") == [] and h.list("contact") == []
    assert h.worklist() == [] and h.search("SJ-1") == [{"id": engine.show(case)["person"], "kind": "person",
                                                         "state": None, "person": engine.show(case)["person"],
                                                         "ref": "SJ-1", "match": "ref"}]
    assert all(v == 0 for v in h.state_counts("case").values())
    assert all(day["monitoring_ends"] == 0 for day in h.calendar())
    assert h.audit(entity=case) == [] and h.audit_page(entity=case)["items"] == []
    for reading in (lambda: h.show(case), lambda: h.show(contact), lambda: h.audit_timeline(case)):
        with pytest.raises(OutsideUnits, match="outside your units"):
            reading()
    h9 = engine.add_person(ref="H-9", actor="member:h")["id"]
    before = contents(db)
    with pytest.raises(OutsideUnits, match="so 'case isolate' was refused"):
        engine.apply(case, "isolate", data={"mode": "home"}, actor="member:h")
    with pytest.raises(OutsideUnits):
        engine.open("contact", "add", person=h9, actor="member:h", data={
            "case": case, "exposed": D("2025-03-02"), "kind": "sexual"})
    after = contents(db)
    # Nothing of the refused changes was written; each refusal is on the refused user's own chain.
    assert {t: rows for t, rows in after.items() if t not in ("audit_log", "users")} == \
        {t: rows for t, rows in before.items() if t not in ("audit_log", "users")}
    refusals = [e for e in engine.audit(trigger="refused") if e["actor"] == "member:h"]
    assert [e["data"]["command"] for e in refusals] == ["case isolate", "contact add"]
    # The region's own member sees it; the root's member and an auditor read everything.
    sj = Engine(db, engine.clock).viewing_as("member:sj")
    assert [c["id"] for c in sj.list("case")] == [case]
    assert [c["id"] for c in Engine(db, engine.clock).viewing_as("staff:test").list("case")] == [case]
    assert Engine(db, engine.clock).viewing_as("auditor:test").show(case)["id"] == case


def test_a_department_sees_its_own_work_and_its_region_sees_the_departments(engine, db):
    made = tree(engine)
    case = case_of(engine, "lead:h", "H-1")
    engine.transfer([case], unit="Hvidovre Infektion", actor="lead:h", reason="Hvidovre behandler")
    assert engine.show(case)["unit"] == made["Hvidovre Infektion"]
    assert [c["id"] for c in Engine(db, engine.clock).viewing_as("member:hvidovre").list("case")] == [case]
    assert [c["id"] for c in Engine(db, engine.clock).viewing_as("member:h").list("case")] == [case]
    other = case_of(engine, "lead:h", "H-2")  # stays in Region H: above the department
    with pytest.raises(OutsideUnits):
        Engine(db, engine.clock).viewing_as("member:hvidovre").show(other)


def test_breaking_the_glass_records_who_read_what_and_why_on_the_objects_chain(engine, db):
    tree(engine)
    case = case_of(engine, "member:sj", "SJ-1")
    h = Engine(db, engine.clock).viewing_as("member:h")
    with pytest.raises(UsageError, match="needs the reason"):
        h.read_outside(case, actor="member:h", reason=" ")
    view = h.read_outside(case, actor="member:h", reason="vagtlæge: patienten er indlagt hos os")
    assert view["id"] == case and view["state"] == "confirmed"
    entry = engine.audit(entity=case)[-1]
    assert (entry["trigger"], entry["actor"], entry["reason"], entry["from"], entry["to"], entry["changes"]) == \
        ("break_glass", "member:h", "vagtlæge: patienten er indlagt hos os", "confirmed", "confirmed", None)
    units = {u["name"]: u["id"] for u in engine.list_units()}
    assert entry["unit"] == units["Region Hovedstaden"]  # the reader's unit
    # A reading inside one's units records nothing.
    count = len(engine.audit(entity=case))
    Engine(db, engine.clock).viewing_as("member:sj").read_outside(case, actor="member:sj", reason="x")
    assert len(engine.audit(entity=case)) == count
    assert engine.audit_verify()["intact"] and engine.audit_replay()["matches"]


def test_leads_deal_work_out_members_take_and_give_back_and_the_worklist_follows(engine, db):
    tree(engine)
    users = {u["name"]: u["id"] for u in engine.users()}
    case = case_of(engine, "lead:h", "H-1")
    contact = contact_of(engine, "lead:h", case, "H-2")
    mine = Engine(db, engine.clock).viewing_as("member:h")
    # Unassigned work of the unit is every member's to take: it is in "mine".
    assert {i["object"] for i in mine.worklist(mine=True)} >= {contact}
    with pytest.raises(NotPermitted, match="for the unit's leads"):
        engine.assign([contact], user="lead:h", actor="member:h", reason="du tager den")
    done = engine.assign([contact], user="member:h", actor="member:h", reason="jeg ringer i dag")
    assert done == [{"id": contact, "unit": engine.show(contact)["unit"], "assignee": users["member:h"],
                     "audit_seq": done[0]["audit_seq"]}]
    items = [i for i in mine.worklist(mine=True) if i["object"] == contact]
    assert items and all(i["assignee_name"] == "member:h" for i in items)
    lead = Engine(db, engine.clock).viewing_as("lead:h")
    assert all(i["object"] != contact for i in lead.worklist(mine=True))  # someone else's now
    with pytest.raises(RuleRefused, match="no member of"):
        engine.assign([contact], user="member:sj", actor="lead:h", reason="x")
    engine.assign([contact], actor="member:h", reason="syg i morgen")  # given back to the pool
    assert engine.show(contact)["assignee"] is None
    with db.reading() as session:
        timers = session.scalars(select(Timer).where(Timer.object_kind == "contact",
                                                     Timer.object_id == pk(contact))).all()
        assert {(t.unit_id, t.assignee_id) for t in timers} == {(pk(engine.show(contact)["unit"]), None)}
    entries = [e for e in engine.audit(entity=contact) if e["trigger"] == "assign"]
    assert [(e["actor"], e["from"], e["to"], e["rule"], e["data"]["assignee"]) for e in entries] == [
        ("member:h", "exposed", "exposed", "SST-mpox-7.1 §5.5", users["member:h"]),
        ("member:h", "exposed", "exposed", "SST-mpox-7.1 §5.5", None)]
    assert engine.show(contact)["state"] == "exposed"
    assert engine.audit_verify()["intact"] and engine.audit_replay()["matches"]


def test_a_transfer_hands_work_to_another_unit_and_the_log_says_who_was_responsible_when(engine, db, clock):
    made = tree(engine)
    users = {u["name"]: u["id"] for u in engine.users()}
    case = case_of(engine, "lead:h", "H-1")
    contact = contact_of(engine, "lead:h", case, "H-2")
    t0 = clock.now()
    clock.set(t0 + timedelta(hours=1))
    engine.assign([contact], user="member:h", actor="lead:h", reason="Anna ringer")
    clock.set(t0 + timedelta(hours=2))
    with pytest.raises(NotPermitted):
        engine.transfer([contact], unit="STPS", actor="member:h", reason="x")
    engine.transfer([contact], unit="STPS", user="member:stps", actor="lead:h", reason="STPS opsporer")
    assert (engine.show(contact)["unit"], engine.show(contact)["assignee"]) == (made["STPS"], users["member:stps"])
    with pytest.raises(OutsideUnits):  # no longer the region's
        Engine(db, engine.clock).viewing_as("member:h").show(contact)
    assert [i["object"] for i in Engine(db, engine.clock).viewing_as("member:stps").worklist(mine=True)
            if i["object"] == contact]
    answers = [engine.show(contact, as_of=t0 + timedelta(minutes=m)) for m in (30, 90, 150)]
    assert [(a["unit"], a["assignee"]) for a in answers] == [
        (made["Region Hovedstaden"], None), (made["Region Hovedstaden"], users["member:h"]),
        (made["STPS"], users["member:stps"])]
    transfer = engine.audit(entity=contact, trigger="transfer")[0]
    assert transfer["data"]["before"] == {"unit": made["Region Hovedstaden"], "assignee": users["member:h"]}
    assert transfer["unit"] == made["Region Hovedstaden"]  # the lead acted through Region H
    # audit --unit: the entries of users acting through a unit (and those below).
    by_region = engine.audit(unit="Region Hovedstaden")
    assert transfer["seq"] in [e["seq"] for e in by_region]
    assert all(e["unit"] in (made["Region Hovedstaden"], made["Hvidovre Infektion"]) for e in by_region)
    assert engine.audit_replay()["matches"]


def test_bulk_assignment_by_filter_is_one_transaction(engine, db):
    tree(engine)
    case = case_of(engine, "lead:h", "H-1")
    contacts = [contact_of(engine, "lead:h", case, f"H-C{n}") for n in range(3)]
    done = engine.assign(kind="contact", unassigned=True, in_unit="Region Hovedstaden", user="member:h",
                         actor="lead:h", reason="dagens opkald")
    assert [d["id"] for d in done] == contacts
    assert engine.assign(kind="contact", of_user="member:h", actor="lead:h", reason="tilbage")
    before = contents(db)
    with pytest.raises(RuleRefused, match="no member"):  # the second fails: nothing of the first is kept
        engine.assign(contacts, user="member:sj", actor=ADMIN, reason="x")
    assert contents(db) == before
    with pytest.raises(UsageError, match="either by id or by a filter"):
        engine.assign(contacts, kind="contact", actor="lead:h", reason="x")
    with pytest.raises(UsageError, match="reason"):
        engine.assign(contacts, user="member:h", actor="lead:h", reason="")


def test_work_of_a_disabled_user_or_one_who_leaves_goes_back_to_the_pool(engine, db):
    from engine.accounts import Accounts

    tree(engine)
    engine.set_member("Hvidovre Infektion", "member:h", actor=ADMIN)
    case = case_of(engine, "lead:h", "H-1")
    a, b = (contact_of(engine, "lead:h", case, f"H-{n}") for n in (2, 3))
    engine.assign([a, b], user="member:h", actor="lead:h", reason="fordeling")
    engine.transfer([b], unit="Hvidovre Infektion", user="member:h", actor="lead:h", reason="Hvidovre")
    left = engine.remove_member("Hvidovre Infektion", "member:h", actor=ADMIN, reason="skifter afdeling")
    assert left["returned"] == [b] and engine.show(b)["assignee"] is None and engine.show(a)["assignee"]
    Accounts(engine).set_disabled("member:h", True, actor=ADMIN, reason="fratrådt")
    assert engine.show(a)["assignee"] is None
    entry = engine.audit(entity=a)[-1]
    assert (entry["trigger"], entry["actor"], entry["reason"]) == ("assign", ADMIN, "member:h was disabled")
    assert engine.audit(trigger="disabled")[-1]["data"]["returned"] == [a]
    with pytest.raises(RuleRefused, match="only unit"):
        engine.remove_member("Region Sjælland", "member:sj", actor=ADMIN)
    assert engine.audit_verify()["intact"] and engine.audit_replay()["matches"]


def test_a_case_opened_by_a_contacts_symptoms_goes_where_the_case_rule_says(engine):
    made = tree(engine)
    case = case_of(engine, "lead:h", "H-1")
    contact = contact_of(engine, "lead:h", case, "H-2")
    engine.transfer([contact], unit="STPS", actor="lead:h", reason="STPS")
    changed = engine.apply(contact, "symptoms", data={"onset": D("2025-03-03"), "symptoms": ["rash"]},
                           actor="member:stps")
    new_case = changed["became_case"]
    assert engine.show(new_case)["unit"] == made["STPS"]
    # The case's own rule decides: by default `creator` (the recording user's first unit; here STPS's member), with
    # `parent` the contact's unit whoever records the symptoms (an admin of the root here).
    engine.set_placement("case", "parent", actor=ADMIN, reason="cases follow their contacts")
    other = contact_of(engine, "lead:h", case, "H-3")
    engine.transfer([other], unit="STPS", actor="lead:h", reason="STPS")
    spawned = engine.apply(other, "symptoms", data={"onset": D("2025-03-03"), "symptoms": ["rash"]},
                           actor=ADMIN)["became_case"]
    assert engine.show(spawned)["unit"] == made["STPS"]


def test_audit_entries_record_the_acting_users_unit_and_timers_their_objects(engine, db, clock):
    made = tree(engine)
    case = case_of(engine, "lead:h", "H-1")
    contact_of(engine, "lead:h", case, "H-2")
    clock.set(START + timedelta(days=30))
    engine.fire_due()
    with db.reading() as session:
        rows = session.execute(select(AuditEntry.actor, AuditEntry.unit_id, AuditEntry.format)
                               .where(AuditEntry.object_kind == "contact")).all()
        assert {(a, u) for a, u, _ in rows if a == "lead:h"} == {("lead:h", pk(made["Region Hovedstaden"]))}
        assert {u for a, u, _ in rows if a.startswith("timer:")} == {pk(made["Region Hovedstaden"])}
        assert {f for *_, f in rows} == {2}
        assert session.scalars(select(Contact.unit_id)).all() == [pk(made["Region Hovedstaden"])]
    assert engine.audit_verify()["intact"] and engine.audit_replay()["matches"]


def test_objects_written_before_units_belong_to_the_root_and_replay_still_matches(engine, db):
    """A person's object made by the engine today carries its unit in its first entry; the fold starts an
    object from the root unit (what migration 0013 gave objects written before it)."""
    p = person(engine, "OLD-1")
    case = confirmed(engine, p)
    assert engine.show(case)["unit"] == "unit-1"
    assert engine.audit(entity=case)[0]["changes"]["unit_id"] == 1
    assert engine.audit_replay()["matches"]
