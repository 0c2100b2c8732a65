"""The audit log's anchor (issue 19, item 4) on both backends: a log of a few objects is checkpointed with a signed
anchor, then tampered with in raw SQL past the append-only triggers (``tests.test_audit_verify``'s tools); every
kind of tampering is caught with the anchor, and the consistent rewrite of a whole chain and its head is caught
*only* with it (plain ``audit verify`` passes). A changed anchor file is refused. Also the CLI's commands."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update

from engine import anchor as anchoring
from engine.clock import SimulatedClock
from engine.core import Engine
from persistence.audit import entry_hash
from persistence.database import Database
from tests.conftest import START
from tests.helpers import confirmed, contents, person, pk, suspected
from tests.test_audit_verify import (
    AUDIT,
    HEAD_TABLES,
    assert_clean,
    chain,
    delete_entry,
    head,
    max_seq,
    problems,
    set_fields,
    swap_seqs,
    tampering,
)
from tests.test_cli import cli, describe

STAFF = "staff:test"
AUDITOR = "auditor:test"


@dataclass(frozen=True)
class Log:
    case: str
    contact: str
    patient: str
    partner: str
    key: Any  # the Ed25519 private key
    anchor: dict[str, Any]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    return anchoring.write_key_pair(str(tmp_path / "keys"))


def make(engine: Engine, keys: dict[str, str], actor: str = AUDITOR) -> tuple[dict[str, Any], dict[str, Any]]:
    """Make an anchor through the engine; returns (what make_anchor returned, the anchor file's document)."""
    written: list[dict[str, Any]] = []

    def write(document: dict[str, Any]) -> str:
        written.append(json.loads(json.dumps(document)))  # exactly what the file would hold
        return "anchor.json"

    made = anchoring.make_anchor(engine.runtime, actor, anchoring.load_private_key(keys["private_key"]), write)
    return made, written[0]


@pytest.fixture
def log(engine: Engine, clock: SimulatedClock, keys: dict[str, str]) -> Log:
    """Two persons, a confirmed case with fired timers, a contact, a discarded case; then the checkpoint."""
    patient = person(engine, "REF-PATIENT", born=date(1990, 1, 1))
    partner = person(engine, "REF-PARTNER")
    case = confirmed(engine, patient, onset="2025-03-01", pcr_on="2025-03-02")
    engine.apply(case, "consent", data={"tracing": True}, actor=STAFF)
    contact = engine.open("contact", "add", person=partner, actor=STAFF, data={
        "case": case, "exposed": date(2025, 3, 1), "kind": "sexual", "risk": None, "reason": None,
        "anonymous_via_doctor": False})["id"]
    engine.apply(case, "isolate", data={"mode": "home"}, actor=STAFF, reason="lesions covered at home")
    other = suspected(engine, partner, onset="2025-03-02")
    engine.apply(other, "discard", actor=STAFF, reason="PCR negative")
    for days in (1, 3):
        clock.set(START + timedelta(days=days))
        engine.fire_due()
    _, document = make(engine, keys)
    return Log(case, contact, patient, partner, anchoring.load_private_key(keys["private_key"]), document)


def check(engine: Engine, document: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    return anchoring.verify_log(engine.runtime, document, anchoring.load_public_key(keys["public_key"]))


# ---- the checkpoint ------------------------------------------------------------------------------------------


def test_the_anchor_holds_every_chains_last_entry_and_is_recorded_on_the_auditors_chain(
        engine: Engine, db: Database, log: Log, keys: dict[str, str]) -> None:
    document = log.anchor
    assert list(document) == list(anchoring.ANCHOR_FIELDS)
    with db.engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(select(AUDIT).order_by(AUDIT.c.seq))]
    anchored = [r for r in rows if r["seq"] <= document["max_seq"]]
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for row in anchored:
        last[(row["object_kind"], row["object_id"])] = row
    assert document["heads"] == [{"kind": k, "id": i, "pos": r["pos"], "seq": r["seq"], "hash": r["hash"]}
                                 for (k, i), r in sorted(last.items())]
    assert document["max_seq"] == max(r["seq"] for r in anchored)
    case_chain = chain(db, log.case)
    assert {"kind": "case", "id": pk(log.case), "pos": len(case_chain), "seq": case_chain[-1]["seq"],
            "hash": case_chain[-1]["hash"]} in document["heads"]
    assert document["public_key"] == anchoring.raw_hex(log.key.public_key())
    # The anchor is itself an entry, on the auditor's own chain, after the checkpoint: root and max_seq, no key.
    entry = rows[-1]
    assert entry["seq"] > document["max_seq"]  # (PostgreSQL's sequence may skip numbers)
    assert (entry["object_kind"], entry["trigger"], entry["actor"], entry["role"]) == (
        "user", "anchored", AUDITOR, "auditor")
    assert entry["data"] == {"merkle_root": document["merkle_root"], "max_seq": document["max_seq"],
                             "chains": len(document["heads"]), "public_key": document["public_key"]}
    assert "PRIVATE" not in json.dumps(entry, default=str)
    assert head(db, f"user-{entry['object_id']}")[1] == entry["seq"]
    assert_clean(engine.audit_verify())
    report = check(engine, document, keys)
    assert_clean(report)
    assert report["anchor"] == {"made_at": "2025-03-06T08:00:00+01:00", "max_seq": document["max_seq"],
                                "chains": len(document["heads"]), "merkle_root": document["merkle_root"]}
    assert report["entries"] == sum(h["pos"] for h in document["heads"])


def test_the_merkle_root_pairs_left_to_right_and_promotes_an_odd_last_node() -> None:
    heads = [{"kind": "case", "id": n, "pos": 1, "seq": n, "hash": "ab" * 32} for n in (1, 2, 3)]
    leaves = [hashlib.sha256(b"\x00" + anchoring.canonical_json(h)).digest() for h in heads]
    left = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    assert anchoring.merkle_root(heads) == hashlib.sha256(b"\x01" + left + leaves[2]).hexdigest()
    assert anchoring.merkle_root(heads[:1]) == leaves[0].hex()
    assert anchoring.merkle_root([]) == hashlib.sha256(b"").hexdigest()
    # Never paired with itself: three heads and the same three with the last repeated give different roots.
    assert anchoring.merkle_root(heads) != anchoring.merkle_root([*heads, heads[2]])


def test_staff_may_not_make_an_anchor(engine: Engine, db: Database, keys: dict[str, str]) -> None:
    from workflows.errors import NotPermitted

    with pytest.raises(NotPermitted):
        make(engine, keys, actor=STAFF)
    with db.engine.connect() as connection:
        assert connection.execute(select(AUDIT.c.trigger).order_by(AUDIT.c.seq.desc())).first()[0] == "refused"


def test_an_admin_may_make_an_anchor(engine: Engine, keys: dict[str, str]) -> None:
    made, document = make(engine, keys, actor="admin:test")
    assert made["merkle_root"] == document["merkle_root"] and made["chains"] == len(document["heads"])


def test_entries_appended_after_the_checkpoint_are_fine(engine: Engine, db: Database, clock: SimulatedClock,
                                                       log: Log, keys: dict[str, str]) -> None:
    engine.apply(log.case, "isolate", data={"mode": "hospital"}, actor=STAFF, reason="admitted")
    person(engine, "REF-NEW")
    clock.set(START + timedelta(days=6))
    engine.fire_due()
    assert max_seq(db) > log.anchor["max_seq"] + 2
    assert_clean(check(engine, log.anchor, keys))
    assert_clean(engine.audit_verify())


# ---- each kind of tampering after the checkpoint -------------------------------------------------------------


def test_a_modified_entry_is_named(engine: Engine, db: Database, log: Log, keys: dict[str, str]) -> None:
    entry = chain(db, log.case)[1]
    set_fields(db, entry["seq"], reason="nothing to see here")
    report = check(engine, log.anchor, keys)
    assert (report["intact"], report["first_bad_seq"]) == (False, entry["seq"])
    assert problems(report) == [(entry["seq"], "modified", log.case)]


def test_a_deleted_entry_is_named(engine: Engine, db: Database, log: Log, keys: dict[str, str]) -> None:
    entry = chain(db, log.contact)[1]
    delete_entry(db, entry["seq"])
    report = check(engine, log.anchor, keys)
    assert report["intact"] is False
    assert report["first_bad_seq"] == entry["seq"]
    assert (entry["seq"], "deleted", log.contact) in problems(report)
    # And the count of entries up to the checkpoint says one is gone.
    assert (log.anchor["max_seq"], "deleted", anchoring.WHOLE_LOG) in problems(report)


def test_an_entry_inserted_into_a_chain_is_named(engine: Engine, db: Database, log: Log,
                                                 keys: dict[str, str]) -> None:
    """A forged entry at #2 of the case, every later entry moved one place on and re-hashed, the head moved:
    the entry at the anchored last position is another one now."""
    entries = chain(db, log.case)
    first = entries[0]
    with tampering(db) as connection:
        for entry in reversed(entries[1:]):  # make room at #2 (the unique index holds (kind, id, pos))
            connection.execute(update(AUDIT).where(AUDIT.c.seq == entry["seq"]).values(pos=entry["pos"] + 100))
        forged = {**{k: v for k, v in first.items() if k not in ("seq", "hash")}, "pos": 2, "prev_seq": first["seq"],
                  "prev_hash": first["hash"], "trigger": "note", "reason": "a forged note"}
        forged["hash"] = entry_hash(forged)
        seq = int(connection.execute(insert(AUDIT).returning(AUDIT.c.seq), forged).scalar_one())
        prev_seq, prev_hash = seq, forged["hash"]
        for entry in entries[1:]:
            moved = {**entry, "pos": entry["pos"] + 1, "prev_seq": prev_seq, "prev_hash": prev_hash}
            moved["hash"] = entry_hash(moved)
            connection.execute(update(AUDIT).where(AUDIT.c.seq == entry["seq"]).values(
                pos=moved["pos"], prev_seq=prev_seq, prev_hash=prev_hash, hash=moved["hash"]))
            prev_seq, prev_hash = entry["seq"], moved["hash"]
        connection.execute(text("UPDATE cases SET audit_pos = :p, audit_hash = :h WHERE id = :id"),
                           {"p": len(entries) + 1, "h": prev_hash, "id": pk(log.case)})
    report = check(engine, log.anchor, keys)
    assert report["intact"] is False
    found = problems(report)
    assert all(obj == log.case for _, _, obj in found), found
    assert (entries[-2]["seq"], "modified", log.case) in found  # the anchored last entry's place holds another


def test_an_entry_inserted_below_the_checkpoint_is_named_by_the_count(engine: Engine, db: Database, log: Log,
                                                                     keys: dict[str, str]) -> None:
    """An entry claiming a sequence number below the checkpoint's, of an object no chain of the anchor holds."""
    first = chain(db, log.patient)[0]
    forged = {**first, "object_id": 9999, "seq": -5}
    forged["hash"] = entry_hash(forged)
    with tampering(db) as connection:
        connection.execute(insert(AUDIT), forged)
    report = check(engine, log.anchor, keys)
    assert report["intact"] is False
    assert (-5, "inserted", "person-9999") in problems(report)
    assert (log.anchor["max_seq"], "inserted", anchoring.WHOLE_LOG) in problems(report)


def test_two_reordered_entries_are_named(engine: Engine, db: Database, log: Log, keys: dict[str, str]) -> None:
    entries = chain(db, log.case)
    a, b = entries[1]["seq"], entries[2]["seq"]
    swap_seqs(db, a, b)
    report = check(engine, log.anchor, keys)
    assert report["intact"] is False
    assert {p for _, p, obj in problems(report) if obj == log.case} == {"reordered"}


def rewrite_whole_chain(db: Database, object_id: str, from_pos: int, **values: Any) -> None:
    """The attack ``audit verify`` cannot see: change entry ``from_pos`` of a chain, re-hash it and every later
    entry (each one's prev_hash the new hash of the one before), and move the row's head to the new last hash."""
    entries = chain(db, object_id)
    kind = object_id.rsplit("-", 1)[0]
    with tampering(db) as connection:
        prev_hash = entries[from_pos - 2]["hash"] if from_pos > 1 else None
        for entry in entries[from_pos - 1:]:
            changed = {**entry, **(values if entry["pos"] == from_pos else {})}
            if prev_hash is not None:
                changed["prev_hash"] = prev_hash
            changed["hash"] = entry_hash(changed)
            connection.execute(update(AUDIT).where(AUDIT.c.seq == entry["seq"]).values(
                **(values if entry["pos"] == from_pos else {}), prev_hash=changed["prev_hash"], hash=changed["hash"]))
            prev_hash = changed["hash"]
        connection.execute(text(f"UPDATE {HEAD_TABLES[kind]} SET audit_hash = :h WHERE id = :id"),
                           {"h": prev_hash, "id": pk(object_id)})


def test_a_consistent_rewrite_of_a_whole_chain_and_its_head_is_caught_only_with_the_anchor(
        engine: Engine, db: Database, log: Log, keys: dict[str, str]) -> None:
    before = chain(db, log.case)
    rewrite_whole_chain(db, log.case, 4, reason="nothing happened", data={"mode": "none"})
    after = chain(db, log.case)
    assert after[3]["reason"] == "nothing happened" and after[-1]["hash"] != before[-1]["hash"]
    assert_clean(engine.audit_verify())  # the hole the anchor closes: the chain and its head agree
    report = check(engine, log.anchor, keys)
    assert report["intact"] is False
    assert problems(report) == [(before[-1]["seq"], "modified", log.case)]
    assert report["first_bad_seq"] == before[-1]["seq"]


# ---- a tampered anchor file ----------------------------------------------------------------------------------


def refused(engine: Engine, document: dict[str, Any], public_key: Any) -> str:
    from workflows.errors import RuleRefused

    before = contents(engine.db)
    with pytest.raises(RuleRefused) as caught:
        anchoring.verify_log(engine.runtime, document, public_key)
    assert caught.value.exit_code == 3
    assert contents(engine.db) == before
    return str(caught.value)


def test_a_changed_head_is_refused(engine: Engine, log: Log, keys: dict[str, str]) -> None:
    document = json.loads(json.dumps(log.anchor))
    document["heads"][0]["hash"] = "0" * 64
    assert "signature does not verify" in refused(engine, document, log.key.public_key())


def test_a_changed_root_is_refused(engine: Engine, log: Log) -> None:
    document = {**log.anchor, "merkle_root": "f" * 64}
    assert "signature does not verify" in refused(engine, document, log.key.public_key())


def test_a_root_that_does_not_match_its_heads_is_refused_even_when_signed(engine: Engine, log: Log) -> None:
    document = {**log.anchor, "heads": log.anchor["heads"][1:]}
    body = {k: v for k, v in document.items() if k != "signature"}
    document["signature"] = log.key.sign(anchoring.canonical_json(body)).hex()
    assert "merkle root does not match its heads" in refused(engine, document, log.key.public_key())


def test_a_wrong_public_key_is_refused(engine: Engine, log: Log, tmp_path: Path) -> None:
    other = anchoring.write_key_pair(str(tmp_path / "other"))
    assert "made with another key" in refused(engine, log.anchor, anchoring.load_public_key(other["public_key"]))


def test_an_anchor_re_signed_with_the_forgers_own_key_is_refused(engine: Engine, db: Database, log: Log,
                                                                 keys: dict[str, str], tmp_path: Path) -> None:
    """The rewriter makes a fresh anchor of the rewritten log with a key of their own: the auditor's public key
    is not the one it names."""
    rewrite_whole_chain(db, log.case, 2, reason="rewritten")
    forger = anchoring.write_key_pair(str(tmp_path / "forger"))
    _, forged = make(engine, forger)
    assert "made with another key" in refused(engine, forged, anchoring.load_public_key(keys["public_key"]))


# ---- the command line ----------------------------------------------------------------------------------------


def test_the_cli_makes_keys_anchors_and_verifies(cli_db: str, db: Database, engine: Engine, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    person(engine, "REF-CLI")
    folder = tmp_path / "pair"
    result = cli(cli_db, "audit", "anchor-key", "--output", str(folder))
    assert result.exit_code == 0, describe(result)
    private, public = folder / "anchor.key", folder / "anchor.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = cli(cli_db, "audit", "anchor-key", "--output", str(folder))
    assert again.exit_code == 2 and "never overwritten" in again.stderr, describe(again)

    monkeypatch.chdir(tmp_path)
    made = cli(cli_db, "audit", "anchor", "--key", str(private), "--actor", AUDITOR)
    assert made.exit_code == 0, describe(made)
    [file] = list(tmp_path.glob("anchor-*.json"))
    document = json.loads(file.read_text())
    assert file.name == "anchor-20250303T070000Z.json"
    assert f"anchor written to {file.name}" in made.stdout
    assert f"merkle root {document['merkle_root']}" in made.stdout
    assert f"{len(document['heads'])} chains up to seq {document['max_seq']}" in made.stdout
    as_json = cli(cli_db, "audit", "anchor", "--key", str(private), "--actor", AUDITOR, "--output", "second.json",
                  "--json")
    assert as_json.exit_code == 0, describe(as_json)
    assert json.loads(as_json.stdout)["output"] == "second.json"

    ok = cli(cli_db, "audit", "verify", "--anchor", str(file), "--public-key", str(public))
    assert ok.exit_code == 0, describe(ok)
    assert ok.stdout.startswith("intact: every entry up to seq")

    rewrite_whole_chain(db, "person-1", 1, reason="rewritten")
    assert cli(cli_db, "audit", "verify").exit_code == 0
    caught = cli(cli_db, "audit", "verify", "--anchor", str(file), "--public-key", str(public), "--json")
    assert caught.exit_code == 3, describe(caught)
    assert problems(json.loads(caught.stdout))[0][1:] == ("modified", "person-1")

    document["max_seq"] += 1
    (tmp_path / "changed.json").write_text(json.dumps(document))
    tampered = cli(cli_db, "audit", "verify", "--anchor", "changed.json", "--public-key", str(public))
    assert tampered.exit_code == 3 and "signature does not verify" in tampered.stderr, describe(tampered)


def test_the_cli_refuses_bad_usage_with_exit_2_and_staff_with_exit_3(cli_db: str, db: Database,
                                                                      tmp_path: Path) -> None:
    keys = anchoring.write_key_pair(str(tmp_path / "k"))
    before = contents(db)
    alone = cli(cli_db, "audit", "verify", "--anchor", "anchor.json")
    assert alone.exit_code == 2 and "--public-key" in alone.stderr, describe(alone)
    missing = cli(cli_db, "audit", "verify", "--anchor", str(tmp_path / "none.json"), "--public-key",
                  keys["public_key"])
    assert missing.exit_code == 2 and "cannot read --anchor" in missing.stderr, describe(missing)
    (tmp_path / "junk.json").write_text('{"some": "json"}')
    junk = cli(cli_db, "audit", "verify", "--anchor", str(tmp_path / "junk.json"), "--public-key", keys["public_key"])
    assert junk.exit_code == 2 and "not an mpoxflow anchor" in junk.stderr, describe(junk)
    wrong = cli(cli_db, "audit", "anchor", "--key", keys["public_key"], "--actor", AUDITOR,
                "--output", str(tmp_path / "a.json"))
    assert wrong.exit_code == 2 and "--key" in wrong.stderr, describe(wrong)
    assert contents(db) == before
    staff = cli(cli_db, "audit", "anchor", "--key", keys["private_key"], "--actor", STAFF,
                "--output", str(tmp_path / "b.json"))
    assert staff.exit_code == 3, describe(staff)
    assert not (tmp_path / "b.json").exists()
