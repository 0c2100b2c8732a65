"""The audit log's integrity: each entry's canonical content and hash, the per-object hash chain, verification,
and the fold that rebuilds an object from its entries alone (replay, ``show --as-of``).

The chain is per object, not global: entry #n of ``case-3`` carries the hash and the sequence number of entry
#n-1 of ``case-3``, and ``case-3``'s row keeps its last entry's position, sequence number and hash (its *head*),
written in the same transaction. A transition already writes its object's row, so the chain adds no row that
every worker must lock; a global chain would make every writer wait for the previous entry's hash. The
unique index ``(object_kind, object_id, pos)`` makes a fork (two entries claiming the same place) impossible.

What each check catches (``verify``):

* **modified**: an entry whose content no longer matches its hash, or whose successor (or the object's head)
  holds a different hash for it (the entry was rewritten and re-hashed);
* **deleted**: a gap in an object's positions (the successor names the missing entry's sequence number), a
  head pointing past the last entry, an object with no history;
* **inserted**: an entry past the object's head, a second entry at one position, entries of an unknown object;
* **reordered**: an entry whose sequence number is not the one its successor (or the head) recorded for it.

The sequence number itself is not hashed (it is assigned by the database on insert); it is protected by the
successor's ``prev_seq`` and by the head. Limits: someone who can write every table may rewrite a whole chain
and its head consistently; only a copy of the heads kept elsewhere (an export) shows that.

The content formats are frozen: ``FORMAT`` 1 hashes ``HASHED``; format 2 (migration 0013, issue 17) also the
acting user's unit (``unit_id``). Changing what is hashed means a new format number, never an edit: an entry is
checked by the fields of its own format.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FORMAT = 2
#: Entries written before the hash chain existed, chained by the migration that added it (no ``changes``).
LEGACY_FORMAT = 0
GENESIS = "0" * 64
#: The fields an entry's hash covers, in a fixed order (the JSON is also key-sorted).
HASHED = (
    "format", "object_kind", "object_id", "pos", "prev_seq", "prev_hash", "timer_id", "workflow", "trigger",
    "from_state", "to_state", "actor", "role", "reason", "at", "recorded_at", "rule", "data", "changes",
    "timers_armed", "timers_cancelled", "timers_done",
)
#: The fields each format's hash covers (format 0 entries were chained by migration 0007 as format 1's).
HASHED_BY_FORMAT = {0: HASHED, 1: HASHED, 2: (*HASHED, "unit_id")}
#: How many problems ``verify`` keeps (the earliest by sequence number); the count is always complete.
MAX_PROBLEMS = 1000
#: The trigger of a retention purge's entries (issue 19): on a purged object, its ``changes`` are the columns
#: cleared, its ``data["timers"]`` the timers whose free text (``note``, ``resolution``) was removed and its
#: ``data["tasks_closed"]`` the missed tasks nobody had resolved, closed as not needed.
PURGED = "purged"
#: The outcome the purge gives the missed tasks nobody resolved (its entry's ``data["tasks_closed"]``).
PURGED_TASK_OUTCOME = "not-needed"


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} in an audit entry")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash is taken over: its ``HASHED`` fields as compact, key-sorted, ASCII JSON,
    instants in UTC with microseconds (``2025-03-03T07:00:00.000000Z``)."""
    fields = HASHED_BY_FORMAT.get(entry.get("format", FORMAT), HASHED)
    content = {name: _canonical_value(entry[name]) for name in fields}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical content, hex."""
    return hashlib.sha256(canonical(entry)).hexdigest()


@dataclass(frozen=True)
class Head:
    """The last entry of one object's chain: its position, sequence number and hash."""

    pos: int
    seq: int | None
    hash: str

    @classmethod
    def of(cls, row: Any) -> Head:
        """The head kept on an object's row (columns ``audit_pos``, ``audit_seq``, ``audit_hash``)."""
        if getattr(row, "audit_pos", None) is None:
            return cls(0, None, GENESIS)
        return cls(row.audit_pos, row.audit_seq, row.audit_hash)

    def link(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` of a new entry, chained after this head: position, predecessor, format and hash."""
        linked = {**values, "format": FORMAT, "pos": self.pos + 1, "prev_seq": self.seq, "prev_hash": self.hash}
        linked["hash"] = entry_hash(linked)
        return linked


# ---- verification ------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Problem:
    """One broken link: the first sequence number it makes suspect, what kind of damage, and where."""

    seq: int
    kind: str  # modified, deleted, inserted, reordered
    object: str
    detail: str

    def view(self) -> dict[str, Any]:
        # seq 0: no entry to name (an object whose whole history is gone)
        return {"seq": self.seq or None, "problem": self.kind, "object": self.object, "detail": self.detail}


@dataclass
class Verification:
    """What ``audit verify`` found. ``problems`` keeps the earliest ``MAX_PROBLEMS`` by sequence number."""

    entries: int = 0
    objects: int = 0
    problem_count: int = 0
    _heap: list[tuple[int, int, Problem]] = field(default_factory=list)
    _n: int = 0

    def add(self, problem: Problem) -> None:
        self.problem_count += 1
        self._n += 1
        item = (-problem.seq, -self._n, problem)  # a max-heap on seq: the latest is dropped first
        if len(self._heap) < MAX_PROBLEMS:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    @property
    def problems(self) -> list[Problem]:
        return sorted((p for _, _, p in self._heap), key=lambda p: (p.seq, p.object, p.kind))

    @property
    def intact(self) -> bool:
        return self.problem_count == 0

    def view(self) -> dict[str, Any]:
        problems = self.problems
        return {
            "intact": self.intact,
            "entries": self.entries,
            "objects": self.objects,
            "first_bad_seq": next((p.seq for p in problems if p.seq), None),
            "problem_count": self.problem_count,
            "problems": [p.view() for p in problems],
        }


def verify_object(label: str, entries: Iterable[Mapping[str, Any]], head: Head | None, report: Verification) -> None:
    """Walk one object's entries (ordered by position, then sequence number) against its head (None: no row
    holds one) and report every broken link."""
    expect_pos, prev_hash, prev_seq, last, first = 1, GENESIS, None, None, None
    for entry in entries:
        report.entries += 1
        seq = entry["seq"]
        first = seq if first is None else min(first, seq)
        if entry_hash(entry) != entry["hash"]:
            report.add(Problem(seq, "modified", label, f"entry #{entry['pos']}'s content does not match its hash"))
        if entry["pos"] < expect_pos:
            report.add(Problem(seq, "inserted", label,
                               f"a second entry #{entry['pos']} (the chain already has one at seq {last})"))
            continue
        if entry["pos"] > expect_pos:
            missing = (f"#{expect_pos}" if entry["pos"] == expect_pos + 1
                       else f"#{expect_pos} to #{entry['pos'] - 1}")
            named = entry["prev_seq"] if entry["prev_seq"] is not None else seq
            report.add(Problem(named, "deleted", label,
                               f"entry {missing} is missing: entry #{entry['pos']} (seq {seq}) follows "
                               f"seq {entry['prev_seq']}, which is not in the chain"))
        elif entry["prev_hash"] != prev_hash:
            report.add(Problem(last if last is not None else seq, "modified", label,
                               f"entry #{expect_pos - 1} (seq {last}) was rewritten: entry #{entry['pos']} "
                               f"(seq {seq}) holds a different hash for it"))
        elif entry["prev_seq"] != prev_seq:
            report.add(Problem(min(s for s in (entry["prev_seq"], prev_seq) if s is not None), "reordered", label,
                               f"entry #{expect_pos - 1} was recorded as seq {entry['prev_seq']} but is at seq "
                               f"{prev_seq}"))
        if last is not None and seq < last:
            report.add(Problem(seq, "reordered", label,
                               f"entry #{entry['pos']} is at seq {seq}, before its predecessor at seq {last}"))
        expect_pos, prev_hash, prev_seq, last = entry["pos"] + 1, entry["hash"], seq, seq
    if head is None:
        if last is not None:
            report.add(Problem(first if first is not None else last, "inserted", label,
                               f"there is no {label}: its entries belong to no object"))
        return
    report.objects += 1
    last_pos = expect_pos - 1
    if head.pos == 0 and last_pos == 0:
        report.add(Problem(0, "deleted", label, f"{label} has no audit history at all"))
    elif head.pos > last_pos:
        report.add(Problem(head.seq or 0, "deleted", label,
                           f"its last entry #{head.pos} (seq {head.seq}) is missing; the chain ends at "
                           f"#{last_pos}" + (f" (seq {last})" if last is not None else "")))
    elif head.pos < last_pos:
        report.add(Problem(last if last is not None else 0, "inserted", label,
                           f"entries after #{head.pos} (its recorded last, seq {head.seq}) are not part of its "
                           f"history: the chain goes on to #{last_pos} (seq {last})"))
    elif head.hash != prev_hash:
        report.add(Problem(last or 0, "modified", label,
                           f"its last entry #{last_pos} (seq {last}) was rewritten: the head holds another hash"))
    elif head.seq != last:
        report.add(Problem(min(s for s in (head.seq, last) if s is not None), "reordered", label,
                           f"its last entry was recorded as seq {head.seq} but is at seq {last}"))


# ---- replay --------------------------------------------------------------------------------------------------

#: Object columns that ``changes`` never carries: bookkeeping the fold derives itself.
BOOKKEEPING = ("id", "version", "created_at", "updated_at", "audit_pos", "audit_seq", "audit_hash")
#: Columns added after objects were written, with the value the migration gave every existing object: what the
#: fold starts from (migration 0013: the root unit, nobody assigned, no failed contact attempts).
ADDED_LATER = {"unit_id": 1, "assignee_id": None, "failed_attempts": 0}


@dataclass
class Rebuilt:
    """An object as its entries describe it."""

    kind: str
    id: int
    values: dict[str, Any] = field(default_factory=dict)  # column -> JSON value (state, person_id, facts)
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    timers: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: False when part of the history predates recorded changes (format 0): only the state is known.
    complete: bool = True
    entries: int = 0
    last_at: datetime | None = None

    @property
    def state(self) -> str | None:
        state = self.values.get("state")
        return None if state is None else str(state)


def timer_id_of(text: str) -> int:
    return int(str(text).removeprefix("timer-"))


def fold(kind: str, pk: int, entries: Iterable[Mapping[str, Any]]) -> Rebuilt:
    """Apply one object's entries, in chain order, to an empty object."""
    obj = Rebuilt(kind, pk, values=dict(ADDED_LATER))
    for entry in entries:
        apply_entry(obj, entry)
    return obj


def apply_entry(obj: Rebuilt, entry: Mapping[str, Any]) -> None:
    """One entry's effect on the rebuilt object: its recorded changes, its state, its timers."""
    at = entry["at"]
    obj.entries += 1
    obj.last_at = at
    changes = entry.get("changes")
    legacy = entry.get("format", FORMAT) == LEGACY_FORMAT
    data = entry.get("data") or {}
    timer = entry.get("timer_id")
    outcome = data.get("outcome") if timer is not None else None
    if legacy:
        obj.complete = False
        outcome = _legacy_outcome(entry) if timer is not None else None
        if outcome in (None, "fired") and entry.get("to_state") is not None:
            obj.version += 1
            obj.created_at = obj.created_at or at
            obj.updated_at = at
    elif changes is not None:
        obj.values.update(changes)
        obj.version += 1
        obj.created_at = obj.created_at or at
        obj.updated_at = at
    if entry.get("to_state") is not None:
        obj.values["state"] = entry["to_state"]
    if timer is not None and timer in obj.timers:
        fired = obj.timers[timer]
        fired["status"] = outcome or "fired"
        if outcome == "skipped":
            fired["note"] = data.get("note")
        elif outcome == "failed":
            fired["attempts"] = data.get("attempts", 0)
            fired["last_error"] = data.get("error")
    for cancelled in entry.get("timers_cancelled") or []:
        pk = timer_id_of(cancelled["timer"])
        if pk in obj.timers:
            obj.timers[pk].update(status="cancelled", note=cancelled.get("why"))
    for done in entry.get("timers_done") or []:
        pk = timer_id_of(done["timer"])
        if pk in obj.timers:
            if done.get("outcome"):  # a missed task completed late: resolved, never done
                obj.timers[pk].update(outcome=done["outcome"], resolved_at=at, resolution=done.get("resolution"))
            else:
                obj.timers[pk]["satisfied_at"] = at
    if entry.get("trigger") == "resolve" and timer is None and data.get("timer"):
        pk = timer_id_of(data["timer"])
        if pk in obj.timers:
            obj.timers[pk].update(outcome=data.get("outcome"), resolved_at=at, resolution=entry.get("reason"))
    if entry.get("trigger") == PURGED and timer is None:
        for purged in data.get("timers") or []:
            pk = timer_id_of(purged)
            if pk in obj.timers:
                obj.timers[pk].update(note=None, resolution=None)
        for closed in data.get("tasks_closed") or []:
            pk = timer_id_of(closed)
            if pk in obj.timers:
                obj.timers[pk].update(outcome=PURGED_TASK_OUTCOME, resolved_at=at, resolution=None)
    for armed in entry.get("timers_armed") or []:
        pk = timer_id_of(armed["timer"])
        obj.timers[pk] = {
            "id": pk, "name": armed["name"], "due_at": armed["due_at"], "rule": armed.get("rule"),
            "task": armed.get("task"), "overdue_at": armed.get("overdue_at"), "status": "pending",
            "note": None, "satisfied_at": None, "attempts": 0, "last_error": None,
            "outcome": None, "resolved_at": None, "resolution": None,
        }


def _legacy_outcome(entry: Mapping[str, Any]) -> str:
    reason = entry.get("reason") or ""
    if reason.startswith("skipped:"):
        return "skipped"
    if reason.startswith("parked as failed"):
        return "failed"
    return "fired"


def grouped(rows: Iterable[Any], key: str) -> Iterator[tuple[Any, list[Any]]]:
    """Consecutive rows sharing ``key`` (rows sorted by it), one group at a time: constant memory per group."""
    current: Any = object()
    group: list[Any] = []
    for row in rows:
        value = row[key]
        if value != current and group:
            yield current, group
            group = []
        current = value
        group.append(row)
    if group:
        yield current, group
