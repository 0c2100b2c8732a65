"""An anchor for the audit log (issue 19, item 4): a signed checkpoint of every chain's head, kept outside the
database, that proves later that nothing up to it was changed.

``audit verify`` checks each object's chain against itself and the head on the object's row; someone who can
write every table may rewrite a whole chain *and* its head consistently, and verify passes (``persistence.audit``,
"Limits"). An anchor closes that hole: it copies every head, read from the log itself, out of the database and
signs the copy with an Ed25519 key the database never holds. Rewriting a chain after the checkpoint changes the
hash of the entry at the anchored position, which the anchor names; re-signing the anchor needs the private key.

**The anchor file** (JSON, ``mpoxflow_anchor`` 1): ``made_at`` (the engine clock's instant, Danish local time with
offset), ``max_seq`` (the log's highest sequence number then), ``heads`` (one per chain, sorted by kind and id:
``{"kind", "id", "pos", "seq", "hash"}`` of its last entry), ``merkle_root``, ``public_key`` (the raw 32-byte
Ed25519 public key, hex) and ``signature`` (hex, over the canonical JSON of every other field).

**Canonical JSON**: compact, key-sorted, ASCII (``persistence.audit.canonical``'s rules). **The Merkle tree**
(RFC 6962's domain separation): a leaf is ``SHA-256(0x00 || canonical JSON of a head)``, a node
``SHA-256(0x01 || left || right)``; a level with an odd count promotes its last node unchanged to the next level
(it is never paired with itself, so two different lists of heads cannot give the same root); no heads at all:
``SHA-256()`` of nothing. The root lets a system that keeps only the root check one chain's head with its path.

**Verification** (``verify_anchor``): the file is refused (exit 3) when its signature does not verify with the
public key the auditor holds, or its root does not match its heads. Then, for every anchored head, the entries
at positions 1 to the anchored one are walked by ``persistence.audit.verify_object`` against the anchored head
(the same checks ``audit verify`` makes, against a head the database cannot rewrite); and every entry with a
sequence number up to ``max_seq`` must belong to an anchored position (their count is the sum of the anchored
positions): an entry inserted before the checkpoint is named. Entries appended after the checkpoint are not its
business (``audit verify`` checks them against the rows' heads).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine.uow import ADMIN_ROLES, TIMER_USER, Runtime, unit_of_work
from engine.views import instant
from persistence.audit import Head, Problem, Verification, grouped, verify_object
from persistence.repository import Repository, format_id
from workflows.errors import RuleRefused, UsageError
from workflows.limits import shown

#: The anchor file's format number (``mpoxflow_anchor``).
ANCHOR_FORMAT = 1
#: Who may make an anchor: those who verify the log (auditors) and admins, and the scheduler's user (the worker's
#: scheduled anchor, issue 19: ``engine.uow.SCHEDULED_JOBS``).
ANCHOR_ROLES = ("auditor", *ADMIN_ROLES, TIMER_USER)
#: The fields of an anchor file, in the order they are written (``signature`` covers all the others).
ANCHOR_FIELDS = ("mpoxflow_anchor", "made_at", "max_seq", "heads", "merkle_root", "public_key", "signature")
HEAD_FIELDS = ("kind", "id", "pos", "seq", "hash")
#: The file names ``audit anchor-key`` writes in its directory.
PRIVATE_NAME, PUBLIC_NAME = "anchor.key", "anchor.pub"
#: Who names a problem that belongs to no one chain (the count of entries up to the checkpoint).
WHOLE_LOG = "audit_log"

log = structlog.get_logger("mpoxflow.engine")


def canonical_json(value: Any) -> bytes:
    """Compact, key-sorted, ASCII JSON: the bytes that are hashed and signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


# ---- the Merkle root -----------------------------------------------------------------------------------------


def leaf_hash(head: Mapping[str, Any]) -> bytes:
    """A head's leaf: ``SHA-256(0x00 || canonical JSON of its five fields)``."""
    return hashlib.sha256(b"\x00" + canonical_json({name: head[name] for name in HEAD_FIELDS})).digest()


def merkle_root(heads: Iterable[Mapping[str, Any]]) -> str:
    """The root over ``heads`` (in the order given: sorted by kind and id), hex. A node is ``SHA-256(0x01 ||
    left || right)``; an odd level's last node goes up unchanged; no heads: ``SHA-256`` of nothing."""
    level = [leaf_hash(head) for head in heads]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0].hex()


# ---- keys ----------------------------------------------------------------------------------------------------


def raw_hex(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, hex (what an anchor names)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def write_key_pair(directory: str) -> dict[str, str]:
    """A new Ed25519 key pair in ``directory`` (made if missing): ``anchor.key`` (PKCS#8 PEM, unencrypted, mode
    0600, created exclusively: an existing key is never overwritten) and ``anchor.pub`` (SubjectPublicKeyInfo
    PEM). UsageError when a file is there already or cannot be written."""
    folder = Path(directory)
    private, public = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    for path in (private, public):
        if path.exists():
            raise UsageError(f"{path} exists already: a key pair is never overwritten; give another ⟦output⟧ "
                             "directory (old anchors stay verifiable with their old public key)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
        os.chmod(private, 0o600)  # whatever the umask
        with open(public, "xb") as out:
            out.write(pub)
    except OSError as error:
        raise UsageError(f"cannot write the key pair in {directory}: {error.strerror}; give another "
                         "⟦output⟧ directory") from error
    return {"private_key": str(private), "public_key": str(public), "public_key_hex": raw_hex(key.public_key())}


def anchor_file_name(document: Mapping[str, Any], *, precise: bool = False) -> str:
    """An anchor's default file name, ``anchor-<UTC instant>.json`` (UTC: no name twice at the autumn's DST change);
    ``precise``: with microseconds (the worker's folder, where one anchor may follow another within a second)."""
    made_at = datetime.fromisoformat(document["made_at"]).astimezone(UTC)
    return f"anchor-{made_at:%Y%m%dT%H%M%S%fZ}.json" if precise else f"anchor-{made_at:%Y%m%dT%H%M%SZ}.json"


def write_anchor(document: Mapping[str, Any], path: str) -> str:
    """Write ``document`` to a new file ``path`` (created exclusively: an anchor is never overwritten); returns the
    path. FileExistsError or OSError to the caller, who names what to do in its own terms."""
    with open(path, "x", encoding="utf-8") as out:
        json.dump(document, out, indent=2)
        out.write("\n")
    return path


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {flag} {shown(path)}: {error.strerror}") from error
    except ValueError as error:  # a NUL in the name
        raise UsageError(f"cannot read {flag} {shown(path)}: that is not a file name") from error


def load_private_key(path: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path`` (``--key``). UsageError otherwise (nothing of the file
    is echoed)."""
    try:
        key = serialization.load_pem_private_key(_read(path, "⟦key⟧"), password=None)
    except (ValueError, TypeError) as error:
        raise UsageError(f"⟦key⟧ {path} is not an unencrypted PEM private key: make one with `mpoxflow audit "
                         "anchor-key ⟦output⟧ DIR`") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"⟦key⟧ {path} is not an Ed25519 key: make one with `mpoxflow audit anchor-key`")
    return key


def load_public_key(path: str) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file ``path`` (``--public-key``). UsageError otherwise."""
    try:
        key = serialization.load_pem_public_key(_read(path, "⟦public_key⟧"))
    except (ValueError, TypeError) as error:
        raise UsageError(f"⟦public_key⟧ {path} is not a PEM public key (the anchor.pub of `mpoxflow audit "
                         "anchor-key`)") from error
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"⟦public_key⟧ {path} is not an Ed25519 public key")
    return key


def read_anchor(path: str) -> dict[str, Any]:
    """An anchor file as written (``--anchor``): UsageError when it cannot be read, is not JSON or has not the
    anchor's shape (its content is checked by ``verify_anchor``)."""
    try:
        document = json.loads(_read(path, "⟦anchor⟧"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"⟦anchor⟧ {path} is not JSON: give the file `mpoxflow audit anchor` wrote") from error
    _check_shape(document, path)
    return dict(document)


def _check_shape(document: Any, path: str) -> None:
    def bad(what: str) -> UsageError:
        return UsageError(f"⟦anchor⟧ {path} is not an mpoxflow anchor ({what}): give the file `mpoxflow audit "
                          "anchor` wrote")

    if not isinstance(document, dict) or document.get("mpoxflow_anchor") != ANCHOR_FORMAT:
        raise bad(f'no "mpoxflow_anchor": {ANCHOR_FORMAT}')
    if set(document) != set(ANCHOR_FIELDS):
        raise bad(f"its fields are not {', '.join(ANCHOR_FIELDS)}")
    if not isinstance(document["max_seq"], int) or not isinstance(document["heads"], list):
        raise bad("max_seq is no number or heads no list")
    for head in document["heads"]:
        if (not isinstance(head, dict) or set(head) != set(HEAD_FIELDS) or not isinstance(head["kind"], str)
                or not isinstance(head["hash"], str)
                or not all(isinstance(head[n], int) and not isinstance(head[n], bool) for n in ("id", "pos", "seq"))):
            raise bad("a head is not {kind, id, pos, seq, hash}")
    if not all(isinstance(document[n], str) for n in ("made_at", "merkle_root", "public_key", "signature")):
        raise bad("made_at, merkle_root, public_key and signature are texts")


# ---- the checkpoint ------------------------------------------------------------------------------------------


def checkpoint(repo: Repository, key: Ed25519PrivateKey, made_at: datetime) -> dict[str, Any]:
    """The signed anchor of the log as ``repo`` sees it: every chain's last entry (read from the log, not from
    the rows' heads), the highest sequence number, the Merkle root, the public key and the signature."""
    heads = [{"kind": row["object_kind"], "id": row["object_id"], "pos": row["pos"], "seq": row["seq"],
              "hash": row["hash"]} for row in repo.audit_chain_ends()]
    heads.sort(key=lambda h: (h["kind"], h["id"]))
    body: dict[str, Any] = {
        "mpoxflow_anchor": ANCHOR_FORMAT, "made_at": instant(made_at), "max_seq": repo.audit_max_seq(),
        "heads": heads, "merkle_root": merkle_root(heads), "public_key": raw_hex(key.public_key()),
    }
    signature = key.sign(canonical_json(body)).hex()
    return {name: body[name] if name != "signature" else signature for name in ANCHOR_FIELDS}


def make_anchor(runtime: Runtime, actor: str, key: Ed25519PrivateKey,
                write: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """``audit anchor``: checkpoint the log, hand the anchor to ``write`` (which stores it outside the database
    and returns where), and record on the actor's own chain that an anchor was made (trigger ``anchored``: its
    root, max_seq, chain count and where it went; never key material), all in one unit of work: when ``write``
    fails nothing is recorded. On PostgreSQL the log is locked against writers while its end is read
    (``Repository.lock_audit_log``), so no entry below ``max_seq`` can commit after the checkpoint.
    NotPermitted (exit 3) for staff."""
    with unit_of_work(runtime, actor, "audit anchor", None, ANCHOR_ROLES) as uow:
        repo = uow.repo
        repo.lock_audit_log()
        now = uow.now()
        anchor = checkpoint(repo, key, now)
        where = write(anchor)
        user = repo.user_by_name(uow.actor.name)
        assert user is not None  # authorized: the actor is a user
        entry = uow.audit(
            Head.of(repo.head_row("user", user.id)), kind="user", pk=user.id, workflow=None, trigger="anchored",
            from_state=None, to_state=None, actor=uow.actor, reason=None, now=now, rule=None,
            data={"merkle_root": anchor["merkle_root"], "max_seq": anchor["max_seq"],
                  "chains": len(anchor["heads"]), "public_key": anchor["public_key"]},
            changes=None,
        )
        uow.commit()
    log.info("audit_anchored", user=format_id("user", user.id), max_seq=anchor["max_seq"],
             chains=len(anchor["heads"]), merkle_root=anchor["merkle_root"])
    return {"output": where, "made_at": anchor["made_at"], "max_seq": anchor["max_seq"],
            "chains": len(anchor["heads"]), "merkle_root": anchor["merkle_root"], "public_key": anchor["public_key"],
            "audit_seq": entry.seq}


# ---- verification --------------------------------------------------------------------------------------------


def check_anchor(anchor: Mapping[str, Any], public_key: Ed25519PublicKey) -> None:
    """Refuse (RuleRefused, exit 3) an anchor that is not what the holder of ``public_key`` signed: made with
    another key, a signature that does not verify (a changed head, max_seq, instant or root), or a root that does
    not match its heads."""
    given = raw_hex(public_key)
    if anchor["public_key"] != given:
        raise RuleRefused(f"the anchor was made with another key (public key {anchor['public_key'][:16]}…, "
                          f"⟦public_key⟧ is {given[:16]}…): verify it with the public key of the pair that made it")
    body = {name: anchor[name] for name in ANCHOR_FIELDS if name != "signature"}
    try:
        public_key.verify(bytes.fromhex(anchor["signature"]), canonical_json(body))
    except (InvalidSignature, ValueError):
        raise RuleRefused("the anchor's signature does not verify with ⟦public_key⟧: the file was changed after "
                          "it was signed (a head, max_seq, made_at or the root); ask for the copy the auditor "
                          "was given") from None
    if merkle_root(anchor["heads"]) != anchor["merkle_root"]:
        raise RuleRefused("the anchor's merkle root does not match its heads: the file is not what was "
                          "checkpointed")


@dataclass(frozen=True)
class Anchored:
    pos: int
    seq: int
    hash: str


def verify_anchor(repo: Repository, anchor: Mapping[str, Any], public_key: Ed25519PublicKey) -> dict[str, Any]:
    """``audit verify --anchor``: refuse a tampered anchor (``check_anchor``), then prove that every entry up to
    the checkpoint is unchanged. The report is ``audit verify``'s (problems named by object and sequence number)
    plus the anchor checked."""
    check_anchor(anchor, public_key)
    heads: dict[tuple[str, int], Anchored] = {
        (h["kind"], h["id"]): Anchored(h["pos"], h["seq"], h["hash"]) for h in anchor["heads"]}
    report = Verification()
    for kind in sorted({kind for kind, _ in heads}):
        _verify_kind(repo, kind, heads, report)
    max_seq = int(anchor["max_seq"])
    counted = 0
    for entry in repo.stream_audit_through(max_seq):
        counted += 1
        anchored = heads.get((entry["object_kind"], entry["object_id"]))
        if anchored is None or entry["pos"] > anchored.pos:
            label = format_id(entry["object_kind"], entry["object_id"])
            report.add(Problem(entry["seq"], "inserted", label,
                               f"entry #{entry['pos']} (seq {entry['seq']}) is not in the history the anchor "
                               "checkpointed: " + (f"its chain ended at #{anchored.pos} (seq {anchored.seq})"
                                                   if anchored else f"the anchor holds no chain of {label}")))
    expected = sum(h.pos for h in heads.values())
    if counted != expected:
        report.add(Problem(max_seq, "deleted" if counted < expected else "inserted", WHOLE_LOG,
                           f"the log holds {counted} entries up to seq {max_seq}; the anchor's chains hold "
                           f"{expected}"))
    view = report.view()
    return {**view, "anchor": {"made_at": anchor["made_at"], "max_seq": max_seq, "chains": len(heads),
                               "merkle_root": anchor["merkle_root"]}}


def _verify_kind(repo: Repository, kind: str, heads: Mapping[tuple[str, int], Anchored],
                 report: Verification) -> None:
    """Walk each anchored chain of ``kind`` (positions 1 to the anchored one) against its anchored head."""
    wanted = sorted(pk for k, pk in heads if k == kind)
    chains: Iterator[tuple[Any, list[Any]]] = grouped(repo.stream_chains(kind), "object_id")
    current = next(chains, None)
    for pk in wanted:
        while current is not None and current[0] < pk:
            current = next(chains, None)  # not anchored: made after the checkpoint, or counted as inserted
        entries = current[1] if current is not None and current[0] == pk else []
        anchored = heads[(kind, pk)]
        verify_object(format_id(kind, pk), (dict(e) for e in entries if e["pos"] <= anchored.pos),
                      Head(anchored.pos, anchored.seq, anchored.hash), report)
    for _ in chains:
        pass  # read to its end: a server-side cursor is closed only then


def verify_log(runtime: Runtime, anchor: Mapping[str, Any], public_key: Ed25519PublicKey) -> dict[str, Any]:
    """``verify_anchor`` on one snapshot of ``runtime``'s database (as ``audit verify`` reads), logged."""
    with runtime.db.snapshot() as session:
        report = verify_anchor(Repository(session), anchor, public_key)
    log.info("audit_anchor_verified", intact=report["intact"], problems=report["problem_count"],
             first_bad_seq=report["first_bad_seq"], max_seq=report["anchor"]["max_seq"])
    return report
