"""Tamper detection by ``audit verify`` on both backends: a realistic history is built through the engine, the
append-only triggers are lifted, the log is tampered with in raw SQL, and verify must name the damage (modified,
deleted, inserted, reordered) and the first bad sequence number. Also the CLI's exit codes and verify's reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from engine.clock import SimulatedClock
from engine.core import Engine
from persistence import audit
from persistence.audit import GENESIS, entry_hash
from persistence.database import Database
from persistence.models import AuditEntry
from tests.conftest import START
from tests.helpers import confirmed, contents, person, pk, suspected
from tests.test_cli import cli, describe, doc

STAFF = "staff:test"
AUDIT = AuditEntry.__table__
HEAD_TABLES = {"person": "persons", "user": "users", "case": "cases", "contact": "contacts", "course": "courses"}


# ---- the history -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    case: str  # confirmed, consented, isolated, with fired timers: the longest chain
    other_case: str  # suspected, then discarded
    contact: str  # a contact of ``case``, with fired timers
    patient: str
    partner: str
    neighbour: str  # a person with one entry: their registration


@pytest.fixture
def history(engine: Engine, clock: SimulatedClock) -> History:
    patient = person(engine, "REF-PATIENT", born=date(1990, 1, 1))
    partner = person(engine, "REF-PARTNER")
    neighbour = person(engine, "REF-NEIGHBOUR")
    case = confirmed(engine, patient, onset="2025-03-01", pcr_on="2025-03-02")
    engine.apply(case, "consent", data={"tracing": True}, actor=STAFF)
    contact = engine.open("contact", "add", person=partner, actor=STAFF, data={
        "case": case, "exposed": date(2025, 3, 1), "kind": "sexual", "risk": None, "reason": None,
        "anonymous_via_doctor": False})["id"]
    engine.apply(case, "isolate", data={"mode": "home"}, actor=STAFF, reason="lesions covered at home")
    other_case = suspected(engine, partner, onset="2025-03-02")
    engine.apply(other_case, "discard", actor=STAFF, reason="PCR negative")
    for days in (1, 3, 6):
        clock.set(START + timedelta(days=days))
        engine.fire_due()
    engine.apply(case, "isolate", data={"mode": "hospital"}, actor=STAFF, reason="admitted")
    return History(case, other_case, contact, patient, partner, neighbour)


# ---- reading and tampering with the raw log ------------------------------------------------------------------


def chain(db: Database, object_id: str) -> list[dict[str, Any]]:
    """An object's entries in chain order, as the database holds them."""
    kind = object_id.rsplit("-", 1)[0]
    with db.engine.connect() as connection:
        rows = connection.execute(select(AUDIT).where(AUDIT.c.object_kind == kind, AUDIT.c.object_id == pk(object_id))
                                  .order_by(AUDIT.c.pos))
        return [dict(r._mapping) for r in rows]


def head(db: Database, object_id: str) -> tuple[int, int, str]:
    """The chain head kept on the object's row: (audit_pos, audit_seq, audit_hash)."""
    kind = object_id.rsplit("-", 1)[0]
    with db.engine.connect() as connection:
        row = connection.execute(text(f"SELECT audit_pos, audit_seq, audit_hash FROM {HEAD_TABLES[kind]} "
                                      "WHERE id = :id"), {"id": pk(object_id)}).one()
        return row.audit_pos, row.audit_seq, row.audit_hash


def max_seq(db: Database) -> int:
    with db.engine.connect() as connection:
        return int(connection.execute(select(func.max(AUDIT.c.seq))).scalar_one())


@contextmanager
def tampering(db: Database) -> Iterator[Connection]:
    """A transaction in which the append-only triggers are lifted; they are put back before it commits, as
    someone covering their tracks would leave them."""
    with db.engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            triggers = connection.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log' "
                "ORDER BY name")).all()
            assert [t.name for t in triggers] == ["audit_log_no_delete", "audit_log_no_update"]
            for trigger in triggers:
                connection.execute(text(f"DROP TRIGGER {trigger.name}"))
            yield connection
            for trigger in triggers:
                connection.execute(text(trigger.sql))
        else:
            connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            yield connection
            connection.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


def set_fields(db: Database, seq: int, /, **values: Any) -> None:
    with tampering(db) as connection:
        assert connection.execute(update(AUDIT).where(AUDIT.c.seq == seq).values(**values)).rowcount == 1


def rewrite_and_rehash(db: Database, seq: int, /, **values: Any) -> str:
    """Change fields of entry ``seq`` and give it the hash of its new content; returns that hash."""
    with tampering(db) as connection:
        entry = dict(connection.execute(select(AUDIT).where(AUDIT.c.seq == seq)).one()._mapping)
        assert entry_hash(entry) == entry["hash"]  # the mapping read back is exactly what was hashed
        entry.update(values)
        entry["hash"] = entry_hash(entry)
        connection.execute(update(AUDIT).where(AUDIT.c.seq == seq).values(**values, hash=entry["hash"]))
        return str(entry["hash"])


def delete_entry(db: Database, seq: int) -> None:
    with tampering(db) as connection:
        assert connection.execute(AUDIT.delete().where(AUDIT.c.seq == seq)).rowcount == 1


def insert_entry(db: Database, values: dict[str, Any]) -> int:
    """Insert a forged entry (its hash computed from ``values``); returns its sequence number."""
    forged = {**values, "hash": entry_hash(values)}
    forged.pop("seq", None)
    with tampering(db) as connection:
        return int(connection.execute(insert(AUDIT).returning(AUDIT.c.seq), forged).scalar_one())


def swap_seqs(db: Database, a: int, b: int) -> None:
    """Exchange the sequence numbers of two entries, through a free one (seq is the primary key)."""
    spare = max_seq(db) + 1000
    with tampering(db) as connection:
        for old, new in ((a, spare), (b, a), (spare, b)):
            assert connection.execute(update(AUDIT).where(AUDIT.c.seq == old).values(seq=new)).rowcount == 1


def problems(report: dict[str, Any]) -> list[tuple[int | None, str, str]]:
    return [(p["seq"], p["problem"], p["object"]) for p in report["problems"]]


def assert_clean(report: dict[str, Any]) -> None:
    assert (report["intact"], report["first_bad_seq"], report["problem_count"], report["problems"]) == (
        True, None, 0, [])


# ---- an untouched log ------------------------------------------------------------------------------------------


def test_an_untouched_history_is_intact(engine: Engine, db: Database, history: History) -> None:
    report = engine.audit_verify()
    assert_clean(report)
    with db.engine.connect() as connection:
        entries = connection.execute(select(func.count()).select_from(AUDIT)).scalar_one()
        objects = sum(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                      for table in HEAD_TABLES.values())
    assert (report["entries"], report["objects"]) == (entries, objects)
    # The history is the realistic one it claims to be: transitions by staff and timers fired by the scheduler.
    case = chain(db, history.case)
    assert [e["pos"] for e in case] == list(range(1, len(case) + 1))
    assert [e["trigger"] for e in case[:4]] == ["open", "confirm", "consent", "isolate"]
    assert any(e["timer_id"] is not None for e in case)
    assert any(e["timer_id"] is not None for e in chain(db, history.contact))
    assert case[-1]["trigger"] == "isolate"
    assert head(db, history.case) == (case[-1]["pos"], case[-1]["seq"], case[-1]["hash"])
    # The case's chain interleaves with other objects' entries: its seqs are not consecutive.
    assert case[-1]["seq"] - case[0]["seq"] > len(case) - 1


def test_the_triggers_are_back_after_tampering(db: Database, history: History) -> None:
    entry = chain(db, history.case)[1]
    set_fields(db, entry["seq"], reason="tampered")
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:
        connection.execute(update(AUDIT).where(AUDIT.c.seq == entry["seq"]).values(reason="again"))
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:
        connection.execute(AUDIT.delete().where(AUDIT.c.seq == entry["seq"]))


# ---- modified --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("reason", "nothing to see here"),
    ("to_state", "discarded"),
    ("data", {"mode": "none"}),
    ("actor", "staff:anna"),
    ("at", START + timedelta(hours=1, microseconds=1)),
])
def test_a_modified_middle_entry_is_named(engine: Engine, db: Database, history: History, field: str,
                                          value: Any) -> None:
    case = chain(db, history.case)
    middle = case[3]  # the first isolation: entries before and after it
    assert middle["trigger"] == "isolate" and 1 < middle["pos"] < len(case)
    assert middle[field] != value
    set_fields(db, middle["seq"], **{field: value})
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == middle["seq"]
    assert problems(report) == [(middle["seq"], "modified", history.case)]
    assert report["problem_count"] == 1


def test_a_modified_first_and_last_entry_are_named(engine: Engine, db: Database, history: History) -> None:
    first, *_, last = chain(db, history.case)
    set_fields(db, first["seq"], reason="opened by mistake")
    set_fields(db, last["seq"], data={"mode": "home"})
    report = engine.audit_verify()
    assert report["first_bad_seq"] == first["seq"]
    assert problems(report) == [(first["seq"], "modified", history.case), (last["seq"], "modified", history.case)]


def test_a_modified_and_rehashed_middle_entry_is_named_by_its_successor(engine: Engine, db: Database,
                                                                        history: History) -> None:
    case = chain(db, history.case)
    middle = case[1]
    assert middle["trigger"] == "confirm"
    new_hash = rewrite_and_rehash(db, middle["seq"], reason="nothing happened", data={"pcr_on": "2025-03-01"})
    assert new_hash != middle["hash"]
    assert chain(db, history.case)[1]["hash"] == new_hash
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == middle["seq"]
    assert problems(report) == [(middle["seq"], "modified", history.case)]
    assert str(case[2]["seq"]) in report["problems"][0]["detail"]  # the successor that holds the old hash


def test_a_modified_and_rehashed_last_entry_is_named_by_the_head(engine: Engine, db: Database,
                                                                 history: History) -> None:
    last = chain(db, history.case)[-1]
    rewrite_and_rehash(db, last["seq"], data={"mode": "home"}, reason="stayed at home")
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == last["seq"]
    assert problems(report) == [(last["seq"], "modified", history.case)]
    assert "head" in report["problems"][0]["detail"]


def test_a_rehashed_entry_of_a_timer_is_named(engine: Engine, db: Database, history: History) -> None:
    fired = next(e for e in chain(db, history.contact) if e["timer_id"] is not None)
    rewrite_and_rehash(db, fired["seq"], actor="staff:test", role="staff")
    report = engine.audit_verify()
    assert (report["intact"], report["first_bad_seq"]) == (False, fired["seq"])
    assert problems(report) == [(fired["seq"], "modified", history.contact)]


# ---- deleted ---------------------------------------------------------------------------------------------------


def test_a_deleted_middle_entry_is_named_by_its_successor(engine: Engine, db: Database, history: History) -> None:
    case = chain(db, history.case)
    middle = case[2]
    delete_entry(db, middle["seq"])
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == middle["seq"]
    assert problems(report) == [(middle["seq"], "deleted", history.case)]
    assert f"#{middle['pos']} is missing" in report["problems"][0]["detail"]


def test_a_deleted_first_entry_is_named(engine: Engine, db: Database, history: History) -> None:
    first = chain(db, history.case)[0]
    delete_entry(db, first["seq"])
    report = engine.audit_verify()
    assert (report["intact"], report["first_bad_seq"]) == (False, first["seq"])
    assert problems(report) == [(first["seq"], "deleted", history.case)]


def test_several_deleted_entries_in_a_row_are_named_by_the_last_and_the_gap(engine: Engine, db: Database,
                                                                 history: History) -> None:
    case = chain(db, history.case)
    for entry in case[1:4]:
        delete_entry(db, entry["seq"])
    report = engine.audit_verify()
    # The successor records only its own predecessor's seq: the last of the deleted run is the one that can be
    # named exactly (the earlier ones left no trace of their seqs); the detail gives the whole gap.
    assert report["intact"] is False
    assert report["first_bad_seq"] == case[3]["seq"]
    assert problems(report) == [(case[3]["seq"], "deleted", history.case)]
    assert "entry #2 to #4 is missing" in report["problems"][0]["detail"]


def test_a_deleted_last_entry_is_named_by_the_head(engine: Engine, db: Database, history: History) -> None:
    last = chain(db, history.case)[-1]
    delete_entry(db, last["seq"])
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == last["seq"]
    assert problems(report) == [(last["seq"], "deleted", history.case)]
    assert "last entry" in report["problems"][0]["detail"]


def test_a_deleted_only_entry_is_named_by_the_head(engine: Engine, db: Database, history: History) -> None:
    [only] = chain(db, history.neighbour)
    delete_entry(db, only["seq"])
    report = engine.audit_verify()
    assert (report["intact"], report["first_bad_seq"]) == (False, only["seq"])
    assert problems(report) == [(only["seq"], "deleted", history.neighbour)]


def test_deleted_entries_of_two_objects_name_the_earlier(engine: Engine, db: Database, history: History) -> None:
    case_entry, contact_entry = chain(db, history.case)[2], chain(db, history.contact)[-1]
    delete_entry(db, case_entry["seq"])
    delete_entry(db, contact_entry["seq"])
    report = engine.audit_verify()
    assert report["first_bad_seq"] == min(case_entry["seq"], contact_entry["seq"])
    assert sorted(problems(report)) == sorted([(case_entry["seq"], "deleted", history.case),
                                               (contact_entry["seq"], "deleted", history.contact)])
    assert report["problem_count"] == 2


# ---- inserted --------------------------------------------------------------------------------------------------


def test_a_perfectly_forged_entry_past_the_head_is_named(engine: Engine, db: Database, history: History) -> None:
    last = chain(db, history.case)[-1]
    forged = {**last, "pos": last["pos"] + 1, "prev_seq": last["seq"], "prev_hash": last["hash"],
              "timer_id": None, "trigger": "heal", "from_state": "isolated", "to_state": "healed",
              "reason": "forged", "data": {"on": "2025-03-09"}, "changes": {"state": "healed"},
              "at": last["at"] + timedelta(hours=1), "recorded_at": last["recorded_at"] + timedelta(hours=1)}
    seq = insert_entry(db, forged)
    assert seq > last["seq"]
    assert chain(db, history.case)[-1]["seq"] == seq
    assert head(db, history.case)[1] == last["seq"]  # the forger did not move the head
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == seq
    assert problems(report) == [(seq, "inserted", history.case)]


def test_an_entry_of_an_object_that_does_not_exist_is_named(engine: Engine, db: Database,
                                                            history: History) -> None:
    template = chain(db, history.other_case)[0]
    ghost = {**template, "object_id": 999, "pos": 1, "prev_seq": None, "prev_hash": GENESIS, "timer_id": None}
    seq = insert_entry(db, ghost)
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == seq
    assert problems(report) == [(seq, "inserted", "case-999")]


def test_an_entry_of_a_missing_object_below_the_existing_ids_is_named(engine: Engine, db: Database,
                                                                      history: History) -> None:
    template = chain(db, history.case)[0]
    ghost = {**template, "object_id": 0, "pos": 1, "prev_seq": None, "prev_hash": GENESIS, "timer_id": None}
    seq = insert_entry(db, ghost)
    report = engine.audit_verify()
    assert (report["intact"], report["first_bad_seq"]) == (False, seq)
    assert problems(report) == [(seq, "inserted", "case-0")]


def test_a_chain_of_entries_for_an_unknown_kind_is_named_by_its_first(engine: Engine, db: Database,
                                                                      history: History) -> None:
    template = chain(db, history.case)[0]
    first = {**template, "object_kind": "widget", "object_id": 1, "pos": 1, "prev_seq": None,
             "prev_hash": GENESIS, "timer_id": None}
    first_seq = insert_entry(db, first)
    second = {**template, "object_kind": "widget", "object_id": 1, "pos": 2, "prev_seq": first_seq,
              "prev_hash": entry_hash(first), "timer_id": None}
    insert_entry(db, second)
    report = engine.audit_verify()
    assert (report["intact"], report["first_bad_seq"]) == (False, first_seq)
    assert problems(report) == [(first_seq, "inserted", "widget-1")]


# ---- reordered -------------------------------------------------------------------------------------------------


def test_two_swapped_entries_of_one_object_are_named_by_the_smaller_seq(engine: Engine, db: Database,
                                                                        history: History) -> None:
    case = chain(db, history.case)
    a, b = case[1]["seq"], case[3]["seq"]
    swap_seqs(db, a, b)
    assert [e["seq"] for e in chain(db, history.case)][1:4] == [b, case[2]["seq"], a]
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == min(a, b) == a
    assert {p["problem"] for p in report["problems"]} == {"reordered"}
    assert {p["object"] for p in report["problems"]} == {history.case}


def test_two_swapped_adjacent_entries_including_the_last_are_named(engine: Engine, db: Database,
                                                                   history: History) -> None:
    *_, before_last, last = chain(db, history.case)
    swap_seqs(db, before_last["seq"], last["seq"])
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == before_last["seq"]
    assert {p["problem"] for p in report["problems"]} == {"reordered"}


def test_swapped_entries_of_two_objects_are_named_by_the_smaller_seq(engine: Engine, db: Database,
                                                                     history: History) -> None:
    case_entry = chain(db, history.case)[2]  # consent: a middle entry
    person_entry = chain(db, history.neighbour)[0]  # the neighbour's only entry (so also its head's)
    assert case_entry["seq"] != person_entry["seq"]
    swap_seqs(db, case_entry["seq"], person_entry["seq"])
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == min(case_entry["seq"], person_entry["seq"])
    assert {p["problem"] for p in report["problems"]} == {"reordered"}
    assert {p["object"] for p in report["problems"]} == {history.case, history.neighbour}


def test_swapped_middle_entries_of_two_workflow_objects_are_named(engine: Engine, db: Database,
                                                                  history: History) -> None:
    case_entry = chain(db, history.case)[3]
    contact_entry = chain(db, history.contact)[1]
    swap_seqs(db, case_entry["seq"], contact_entry["seq"])
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == min(case_entry["seq"], contact_entry["seq"])
    assert {p["problem"] for p in report["problems"]} == {"reordered"}
    assert {p["object"] for p in report["problems"]} == {history.case, history.contact}


def test_an_entry_moved_to_a_new_seq_is_named_by_its_old_seq(engine: Engine, db: Database,
                                                             history: History) -> None:
    middle = chain(db, history.case)[2]
    spare = max_seq(db) + 10
    set_fields(db, middle["seq"], seq=spare)
    report = engine.audit_verify()
    assert report["intact"] is False
    assert report["first_bad_seq"] == middle["seq"]
    assert {p["problem"] for p in report["problems"]} == {"reordered"}


def test_a_second_entry_at_a_taken_position_is_named(engine: Engine, db: Database, history: History) -> None:
    case = chain(db, history.case)
    with tampering(db) as connection:  # the unique index makes a fork impossible: drop it first
        connection.execute(text("DROP INDEX uq_audit_object_pos"))
    original = case[2]
    fork = {**original, "reason": "the other version", "prev_seq": case[1]["seq"], "prev_hash": case[1]["hash"]}
    seq = insert_entry(db, fork)
    assert [e["pos"] for e in chain(db, history.case)].count(original["pos"]) == 2
    report = engine.audit_verify()
    assert (report["intact"], report["first_bad_seq"]) == (False, seq)
    assert problems(report) == [(seq, "inserted", history.case)]
    assert f"already has one at seq {original['seq']}" in report["problems"][0]["detail"]


def test_a_forged_entry_before_the_first_is_named(engine: Engine, db: Database, history: History) -> None:
    first = chain(db, history.case)[0]
    seq = insert_entry(db, {**first, "pos": 0, "reason": "before it all began"})
    report = engine.audit_verify()
    assert (report["intact"], report["first_bad_seq"]) == (False, seq)
    assert problems(report) == [(seq, "inserted", history.case)]


def test_entries_whose_object_row_was_deleted_are_named_by_the_first(engine: Engine, db: Database,
                                                                     history: History) -> None:
    entries = chain(db, history.other_case)
    assert len(entries) == 2
    objects = engine.audit_verify()["objects"]
    with db.engine.begin() as connection:  # case-2 sits between case-1 and the end: a gap among the rows
        connection.execute(text("DELETE FROM timers WHERE object_kind = 'case' AND object_id = :id"),
                           {"id": pk(history.other_case)})
        connection.execute(text("DELETE FROM cases WHERE id = :id"), {"id": pk(history.other_case)})
    report = engine.audit_verify()
    assert (report["intact"], report["first_bad_seq"], report["objects"]) == (False, entries[0]["seq"], objects - 1)
    assert problems(report) == [(entries[0]["seq"], "inserted", history.other_case)]


def test_an_object_whose_history_and_head_are_gone_is_reported_without_a_seq(engine: Engine, db: Database,
                                                                            history: History) -> None:
    [only] = chain(db, history.neighbour)
    delete_entry(db, only["seq"])
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE persons SET audit_pos = NULL, audit_seq = NULL, audit_hash = NULL "
                                "WHERE id = :id"), {"id": pk(history.neighbour)})
    report = engine.audit_verify()
    assert (report["intact"], report["problem_count"]) == (False, 1)
    assert problems(report) == [(None, "deleted", history.neighbour)]
    assert report["first_bad_seq"] is None  # no entry to name


def test_rewriting_the_last_entry_and_its_head_together_is_beyond_verify(engine: Engine, db: Database,
                                                                         history: History) -> None:
    # The documented limit: whoever can write every table can rewrite a chain's end and its head consistently.
    last = chain(db, history.case)[-1]
    new_hash = rewrite_and_rehash(db, last["seq"], reason="rewritten with the head")
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE cases SET audit_hash = :h WHERE id = :id"),
                           {"h": new_hash, "id": pk(history.case)})
    assert_clean(engine.audit_verify())


def test_the_problem_list_keeps_the_earliest_but_counts_them_all(engine: Engine, db: Database, history: History,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "MAX_PROBLEMS", 2)
    edited = [chain(db, history.contact)[-1], chain(db, history.case)[-1], chain(db, history.case)[1]]
    for entry in edited:
        set_fields(db, entry["seq"], reason="edited")
    report = engine.audit_verify()
    seqs = sorted(e["seq"] for e in edited)
    assert report["problem_count"] == 3
    assert [p["seq"] for p in report["problems"]] == seqs[:2]
    assert report["first_bad_seq"] == seqs[0]


# ---- several kinds at once -------------------------------------------------------------------------------------


def test_every_kind_of_damage_is_counted_and_the_earliest_is_first(engine: Engine, db: Database,
                                                                   history: History) -> None:
    case, contact = chain(db, history.case), chain(db, history.contact)
    set_fields(db, contact[-1]["seq"], reason="edited")
    delete_entry(db, case[2]["seq"])
    ghost = {**case[0], "object_id": 999, "pos": 1, "prev_seq": None, "prev_hash": GENESIS, "timer_id": None}
    ghost_seq = insert_entry(db, ghost)
    report = engine.audit_verify()
    assert report["problem_count"] == 3
    assert sorted(problems(report)) == sorted([
        (contact[-1]["seq"], "modified", history.contact), (case[2]["seq"], "deleted", history.case),
        (ghost_seq, "inserted", "case-999")])
    assert report["first_bad_seq"] == min(contact[-1]["seq"], case[2]["seq"])
    assert [p["seq"] for p in report["problems"]] == sorted(p["seq"] for p in report["problems"])


# ---- verify only reads ---------------------------------------------------------------------------------------


def test_verify_changes_nothing_intact_or_not(engine: Engine, db: Database, history: History) -> None:
    before = contents(db)
    assert_clean(engine.audit_verify())
    assert contents(db) == before
    delete_entry(db, chain(db, history.case)[2]["seq"])
    tampered = contents(db)
    assert tampered != before
    assert engine.audit_verify()["intact"] is False
    assert contents(db) == tampered


# ---- the command line ------------------------------------------------------------------------------------------


def test_the_cli_says_intact_and_exits_0_on_an_untouched_log(cli_db: str, history: History) -> None:
    result = cli(cli_db, "audit", "verify")
    assert result.exit_code == 0, describe(result)
    assert "intact" in result.stdout and "NOT" not in result.stdout + result.stderr
    report = doc(cli_db, "audit", "verify")
    assert_clean(report)


def test_the_cli_says_not_intact_and_exits_3_after_tampering(cli_db: str, db: Database, engine: Engine,
                                                             history: History) -> None:
    middle = chain(db, history.case)[3]
    set_fields(db, middle["seq"], reason="tampered")
    result = cli(cli_db, "audit", "verify")
    assert result.exit_code == 3, describe(result)
    assert "NOT intact" in result.stdout + result.stderr
    assert f"first bad seq {middle['seq']}" in result.stdout
    assert history.case in result.stdout and "modified" in result.stdout

    as_json = cli(cli_db, "audit", "verify", "--json")
    assert as_json.exit_code == 3, describe(as_json)
    report = json.loads(as_json.stdout)
    assert report["intact"] is False
    assert report["first_bad_seq"] == middle["seq"]
    assert problems(report) == [(middle["seq"], "modified", history.case)]
    assert report == engine.audit_verify()


def test_the_cli_names_a_deleted_entry(cli_db: str, db: Database, history: History) -> None:
    last = chain(db, history.contact)[-1]
    delete_entry(db, last["seq"])
    before = contents(db)
    as_json = cli(cli_db, "audit", "verify", "--json")
    assert as_json.exit_code == 3, describe(as_json)
    report = json.loads(as_json.stdout)
    assert (report["intact"], report["first_bad_seq"]) == (False, last["seq"])
    assert problems(report) == [(last["seq"], "deleted", history.contact)]
    assert contents(db) == before


def test_the_cli_reports_an_object_without_history_and_exits_3(cli_db: str, db: Database, history: History) -> None:
    [only] = chain(db, history.neighbour)
    delete_entry(db, only["seq"])
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE persons SET audit_pos = NULL, audit_seq = NULL, audit_hash = NULL "
                                "WHERE id = :id"), {"id": pk(history.neighbour)})
    result = cli(cli_db, "audit", "verify")
    assert result.exit_code == 3, describe(result)
    assert "NOT intact: 1 problem(s)" in result.stdout
    assert f"seq -  deleted   {history.neighbour}: {history.neighbour} has no audit history at all" in result.stdout
    # No seq to name: the summary line says so as the problem line does ('-'), not with Python's None.
    assert "None" not in result.stdout, result.stdout
