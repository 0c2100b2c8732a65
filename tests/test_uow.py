"""The unit of work (engine/uow.py), on both backends: it keeps its work only when committed, an error rolls it
back even after ``commit()``, and a refused actor's unit never runs while the refusal itself is audited."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core import ADMIN_ROLES, Engine
from engine.uow import UnitOfWork
from persistence.audit import Head
from persistence.database import Database
from tests.helpers import contents, person
from workflows.errors import NotPermitted


def note(uow: UnitOfWork, person_id: int) -> int:
    """An audit entry on a person's chain, as a change appends one; returns its sequence number."""
    head = uow.audit(Head.of(uow.repo.head_row("person", person_id)), kind="person", pk=person_id, workflow=None,
                     trigger="update", from_state=None, to_state=None, actor=uow.actor, reason="checked",
                     now=uow.now(), rule=None, data={}, changes={})
    assert head.seq is not None
    return head.seq


def test_a_unit_of_work_left_without_commit_writes_nothing(engine: Engine, db: Database) -> None:
    pk = int(person(engine).split("-")[1])
    before = contents(db)
    with engine.unit_of_work("staff:test", "person update", f"person-{pk}") as uow:
        seq = note(uow, pk)
        assert uow.repo.head_row("person", pk).audit_seq == seq  # written, inside the transaction
    assert contents(db) == before


def test_a_committed_unit_of_work_keeps_its_work_and_the_chain_stays_whole(engine: Engine, db: Database) -> None:
    person_id = person(engine)
    pk = int(person_id.split("-")[1])
    with engine.unit_of_work("staff:test", "person update", person_id) as uow:
        seq = note(uow, pk)
        uow.commit()
    entry = engine.audit(entity=person_id)[-1]
    assert (entry["seq"], entry["actor"], entry["role"], entry["reason"]) == (seq, "staff:test", "staff", "checked")
    assert engine.audit_verify()["intact"] is True


def test_an_error_after_commit_still_rolls_back(engine: Engine, db: Database) -> None:
    pk = int(person(engine).split("-")[1])
    before = contents(db)
    with pytest.raises(RuntimeError, match="after the commit was asked for"), \
            engine.unit_of_work("staff:test", "person update") as uow:
        note(uow, pk)
        uow.commit()
        raise RuntimeError("after the commit was asked for")
    assert contents(db) == before


def test_a_refused_actor_never_gets_a_unit_and_the_refusal_is_on_their_chain(engine: Engine, db: Database) -> None:
    before = contents(db)
    ran: list[Any] = []
    with pytest.raises(NotPermitted) as refused, \
            engine.unit_of_work("auditor:test", "person update", "person-9", ADMIN_ROLES):
        ran.append(True)
    assert ran == []
    assert "auditors read, verify and export the log but change nothing" in refused.value.message
    after = contents(db)
    assert {t: rows for t, rows in after.items() if t not in ("audit_log", "users")} == \
        {t: rows for t, rows in before.items() if t not in ("audit_log", "users")}
    [entry] = engine.audit(trigger="refused")
    assert (entry["object"], entry["actor"], entry["role"]) == (f"user-{refused.value.user}", "auditor:test", "auditor")
    assert entry["data"] == {"command": "person update", "object": "person-9"}
    assert engine.audit_verify()["intact"] is True


def test_a_unit_opened_without_an_actor_has_none_to_record(engine: Engine) -> None:
    with engine.unit_of_work() as uow, pytest.raises(RuntimeError, match="without an actor"):
        _ = uow.actor
