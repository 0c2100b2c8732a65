"""The one way the benches fill a database: units the engine made, copied in bulk.

A *unit* is a person and the workflow objects the engine made for them, read back as stored through the product's
``Repository``: every column of their rows (the tables of ``persistence.models``), their timers and their audit
entries. ``templates`` has the engine make a few units on a scratch SQLite database, through its public calls
(``add_person``, ``open``, ``apply``) on a simulated clock. ``Seeder.add`` writes copies of them: new ids (and
every id inside the rows and entries moved with them: ``person_id``, ``timer-7`` in an entry), a new reference,
and the entries chained again after their object's head with the product's own ``Head.link`` (canonical JSON,
SHA-256), each row carrying its new head. The seeder writes no column of its own: a column the engine writes
appears in the copies as it appears in the template, so the seeder cannot go stale when a column is added.

Without ``history`` a copy is its rows as they stand: no audit entries, empty heads, pending timers only (what
the dose forecast and the timer firing read, and all they need).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Table, func, insert, select

from engine.clock import SimulatedClock
from engine.core import Engine
from persistence.audit import Head
from persistence.database import Database
from persistence.models import OBJECT_MODELS, AuditEntry, Person, Timer
from persistence.repository import ID_KINDS, Repository

#: Units written per batch: their entries are interleaved step by step, as objects' histories interleave in a log.
BATCH = 2000
#: An entry's chain fields, which ``Head.link`` gives a copy afresh.
CHAIN = ("seq", "format", "pos", "prev_seq", "prev_hash", "hash")
_ID = re.compile(rf"({'|'.join(ID_KINDS)})-(\d+)")
_TABLES: dict[str, Table] = {"person": Person.__table__, **{k: m.__table__ for k, m in OBJECT_MODELS.items()},
                             "timer": Timer.__table__}  # type: ignore[dict-item]
_AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Unit:
    """A person's rows as stored: the person, its objects ``(kind, row)``, their timers, and the person's and
    objects' audit entries by sequence number."""

    person: dict[str, Any]
    objects: list[tuple[str, dict[str, Any]]]
    timers: list[dict[str, Any]]
    entries: list[dict[str, Any]]

    @property
    def pk(self) -> int:
        """The id of the unit's first object (its person's when it has none)."""
        return int(self.objects[0][1]["id"] if self.objects else self.person["id"])

    @property
    def state(self) -> str | None:
        return self.objects[0][1]["state"] if self.objects else None

    def rows(self) -> list[tuple[str, dict[str, Any]]]:
        """``(kind, row)`` of the person, the objects, the timers (``timer``) and the entries (``entry``)."""
        return [("person", self.person), *self.objects, *(("timer", t) for t in self.timers),
                *(("entry", e) for e in self.entries)]

    @property
    def pending(self) -> list[str]:
        """The names of its pending timers."""
        return sorted(t["name"] for t in self.timers if t["status"] == "pending")


def capture(db: Database, person_pk: int) -> Unit:
    """The unit of person ``person_pk`` as the database holds it, read through the product's ``Repository``."""
    with db.reading() as session:
        repo = Repository(session)
        person = dict(repo.head_row("person", person_pk)._mapping)
        objects = [(kind, dict(repo.head_row(kind, obj.id)._mapping))
                   for kind in OBJECT_MODELS for obj in repo.objects_linked(kind, "person_id", person_pk)]
        timers = [dict(t._mapping) for kind, row in objects for t in repo.object_timers(kind, row["id"])]
        owners = [("person", person_pk), *((kind, row["id"]) for kind, row in objects)]
        entries = sorted((dict(e._mapping) for kind, pk in owners for e in repo.object_history(kind, pk)),
                         key=lambda e: e["seq"])
    return Unit(person, objects, timers, entries)


def templates(build: Callable[[Callable[[datetime], Engine]], list[str]], users: Iterable[str]) -> list[Unit]:
    """Units made by the engine: ``build(at)`` makes them, ``at(instant)`` giving an engine on a simulated clock at
    that instant, on a scratch SQLite database whose first admin ``bench:admin`` registered ``users`` (staff);
    returns the units of the person ids ``build`` returns, in order. The database is removed afterwards."""
    from bench.harness import make_users

    with tempfile.TemporaryDirectory(prefix="bench_templates_") as directory:
        db = Database(f"sqlite:///{Path(directory) / 'templates.db'}")
        try:
            db.upgrade()
            first = Engine(db, SimulatedClock(datetime.fromisoformat("2000-01-01T00:00:00+00:00")))
            make_users(first, *users)
            made = build(lambda instant: Engine(db, SimulatedClock(instant), first.settings))
            return [capture(db, int(person.removeprefix("person-"))) for person in made]
        finally:
            db.dispose()


def _moved(value: Any, ids: dict[str, dict[int, int]]) -> Any:
    """``value`` with every id of the unit in it moved to the copy's: ``kind-N`` texts, ``kind_id`` numbers."""
    if isinstance(value, str):
        found = _ID.fullmatch(value)
        if found and int(found[2]) in ids.get(found[1], {}):
            return f"{found[1]}-{ids[found[1]][int(found[2])]}"
        return value
    if isinstance(value, dict):
        return {k: ids[k[:-3]].get(v, v) if k.endswith("_id") and k[:-3] in ids and isinstance(v, int)
                else _moved(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, ids) for v in value]
    return value


class Seeder:
    """Writes copies of units into one database, one transaction per ``add``, ids numbered on from the largest in
    each table (read again at every ``add``: the engine may write between two, but nothing may write the tables an
    ``add`` writes while it runs)."""

    def __init__(self, db: Database, prefix: str = "BENCH") -> None:
        self.db, self.prefix = db, prefix
        self._plans: dict[int, tuple[Unit, dict[int, list[str]]]] = {}

    def add(self, units: Iterable[Unit], *, history: bool = True,
            adjust: Callable[[Unit], None] | None = None) -> list[int]:
        """Copies of ``units`` (one per item; repeat a unit to copy it often), each changed by ``adjust`` (given
        the copy, new ids in place, before its entries are chained) when given; returns each copy's ``pk``."""
        made: list[int] = []
        written: set[Table] = set()
        with self.db.engine.begin() as connection:
            last = {kind: int(connection.scalar(select(func.coalesce(func.max(t.c.id), 0))))
                    for kind, t in _TABLES.items()}
            seq = int(connection.scalar(select(func.coalesce(func.max(_AUDIT.c.seq), 0))))
            items = iter(units)
            while batch := list(islice(items, BATCH)):
                copies = [self._copy(unit, last, history, adjust) for unit in batch]
                seq = self._chain(copies, seq)
                rows: dict[Table, list[dict[str, Any]]] = {table: [] for table in (*_TABLES.values(), _AUDIT)}
                for copy in copies:
                    for kind, row in copy.rows():
                        rows[_TABLES.get(kind, _AUDIT)].append(row)
                written |= {table for table, values in rows.items() if self._write(connection, table, values)}
                made += [c.pk for c in copies]
            if self.db.backend == "postgresql":
                # The serial columns go on after the explicit values; only those written (a worker may be taking
                # audit sequence numbers meanwhile), and never back.
                for table in written:
                    column = "seq" if table is _AUDIT else "id"
                    serial = f"pg_get_serial_sequence('{table.name}', '{column}')"
                    connection.exec_driver_sql(f"SELECT setval({serial}, greatest((SELECT max({column}) FROM "
                                               f"{table.name}), pg_sequence_last_value({serial}::regclass)))")
        return made

    def _copy(self, unit: Unit, last: dict[str, int], history: bool, adjust: Callable[[Unit], None] | None) -> Unit:
        timers = unit.timers if history else [t for t in unit.timers if t["status"] == "pending"]
        ids: dict[str, dict[int, int]] = {kind: {} for kind in _TABLES}
        for kind, row in [("person", unit.person), *unit.objects, *(("timer", t) for t in timers)]:
            last[kind] += 1
            ids[kind][row["id"]] = last[kind]
        plan = self._plan(unit)

        def moved(kind: str, row: dict[str, Any]) -> dict[str, Any]:
            copy = {**row, **_moved({k: row[k] for k in plan[id(row)]}, ids)}
            if kind in _TABLES:
                copy["id"] = ids[kind][row["id"]]
                if not history and kind != "timer":
                    copy.update(audit_pos=None, audit_seq=None, audit_hash=None)
            if "object_kind" in row:  # a timer or an entry: its object's id goes with the object's kind
                copy["object_id"] = ids[row["object_kind"]][row["object_id"]]
            return copy

        person = {**moved("person", unit.person), "ref": f"{self.prefix}-{ids['person'][unit.person['id']]}"}
        copy = Unit(person, [(kind, moved(kind, row)) for kind, row in unit.objects],
                    [moved("timer", t) for t in timers], [moved("entry", e) for e in unit.entries] if history else [])
        if adjust is not None:
            adjust(copy)
        return copy

    def _plan(self, unit: Unit) -> dict[int, list[str]]:
        """For each row and entry of ``unit`` (by ``id()``), the keys whose values hold ids of the unit, found once
        per unit by moving every id to one no row has."""
        known = self._plans.get(id(unit))
        if known is None or known[0] is not unit:
            probe: dict[str, dict[int, int]] = {kind: {} for kind in _TABLES}
            for kind, row in unit.rows():
                if kind != "entry":
                    probe[kind][row["id"]] = -row["id"]
            keys = {id(row): [k for k, v in row.items() if k not in ("id", "object_id", *CHAIN)
                              and _moved({k: v}, probe) != {k: v}] for _, row in unit.rows()}
            known = self._plans[id(unit)] = (unit, keys)
        return known[1]

    @staticmethod
    def _chain(copies: list[Unit], seq: int) -> int:
        """Chain every copy's entries after its objects' heads (all empty: a copy starts its own chains), step by
        step across the batch, and put the heads on the rows; returns the last sequence number given."""
        owners = {(kind, row["id"]): row for c in copies for kind, row in [("person", c.person), *c.objects]}
        heads = dict.fromkeys(owners, Head.of(None))
        for step in range(max((len(c.entries) for c in copies), default=0)):
            for copy in copies:
                if step < len(copy.entries):
                    entry = copy.entries[step]
                    key = (entry["object_kind"], entry["object_id"])
                    seq += 1
                    linked = heads[key].link(entry)
                    heads[key] = Head(linked["pos"], seq, linked["hash"])
                    copy.entries[step] = {**linked, "seq": seq}
        for key, head in heads.items():
            if head.seq is not None:
                owners[key].update(audit_pos=head.pos, audit_seq=head.seq, audit_hash=head.hash)
        return seq

    def _write(self, connection: Any, table: Table, rows: list[dict[str, Any]]) -> bool:
        """Rows through the columns' own types: ``executemany`` on SQLite, ``COPY`` on PostgreSQL; any written?"""
        if not rows:
            return False
        if self.db.backend != "postgresql":
            connection.execute(insert(table), rows)
            return True
        dialect = connection.dialect
        columns = [(c.name, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in table.columns]
        names = ", ".join(f'"{name}"' for name, _ in columns)
        with (connection.connection.driver_connection.cursor() as cursor,
              cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy):
            for row in rows:
                copy.write_row([row[n] if p is None else p(row[n]) for n, p in columns])
        return True


def repeat(units: list[Unit], count: int) -> Iterator[Unit]:
    """``count`` units cycling through ``units``."""
    return (units[i % len(units)] for i in range(count))

