"""What auditors run over the log: verification of every object's hash chain, replay of every object from its
entries alone compared with the tables, an object as it was at an instant, and the streamed export.

Every read here streams (``Repository.stream_*``): memory holds one object's history at a time, never the log.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import SimpleNamespace
from typing import IO, Any

from engine.views import audit_view, instant, jsonable, object_view
from persistence.audit import (
    BOOKKEEPING,
    Head,
    Rebuilt,
    Verification,
    entry_hash,
    fold,
    grouped,
    verify_object,
)
from persistence.models import OBJECT_MODELS, ROOT_UNIT
from persistence.repository import HEAD_MODELS, Repository, format_id
from workflows.calendar import to_local
from workflows.errors import NotFound, UsageError
from workflows.registry import BY_NAME

#: The export's fields, in order: the audit_log columns, exactly (documented in README, "Audit export").
EXPORT_FIELDS = (
    "seq", "format", "object_kind", "object_id", "pos", "prev_seq", "prev_hash", "hash", "timer_id", "workflow",
    "trigger", "from_state", "to_state", "actor", "role", "reason", "at", "recorded_at", "rule", "data", "changes",
    "timers_armed", "timers_cancelled", "timers_done", "unit_id",
)
#: Fields holding JSON documents (a JSON text in a CSV cell).
JSON_FIELDS = ("data", "changes", "timers_armed", "timers_cancelled", "timers_done")
INSTANT_FIELDS = ("at", "recorded_at")
INTEGER_FIELDS = ("seq", "format", "object_id", "pos", "prev_seq", "timer_id", "unit_id")
EXPORT_FORMATS = ("jsonl", "csv")
#: What the auditor's desk exports a filtered view as: the two above, a CSV Danish Excel opens as it is
#: (semicolons, UTF-8 with a BOM, Danish local dates and times) and an Excel workbook.
DESK_FORMATS = ("jsonl", "csv", "excel-csv", "xlsx")
#: Danish local date and time as Excel in a Danish locale reads them (the offset left out: see README).
EXCEL_INSTANT = "%d.%m.%Y %H:%M:%S"
XLSX_INSTANT = "dd.mm.yyyy hh:mm:ss"
#: Text a spreadsheet would read as a formula starts with one of these; such a cell gets a leading apostrophe.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ---- verify --------------------------------------------------------------------------------------------------


def _merge(entries: Iterator[Any], rows: Iterator[Any]) -> Iterator[tuple[int, list[Any], Any | None]]:
    """(object id, its entries, its row) for every id in either stream; both are sorted by id."""
    row = next(rows, None)
    for pk, group in grouped(entries, "object_id"):
        while row is not None and row["id"] < pk:
            yield row["id"], [], row
            row = next(rows, None)
        if row is not None and row["id"] == pk:
            yield pk, group, row
            row = next(rows, None)
        else:
            yield pk, group, None
    while row is not None:
        yield row["id"], [], row
        row = next(rows, None)


def verify(repo: Repository) -> Verification:
    """Check every object's chain against itself and its head; see ``persistence.audit`` for what is caught."""
    report = Verification()
    for kind in sorted(HEAD_MODELS):
        for pk, entries, row in _merge(repo.stream_chains(kind), repo.stream_rows(kind)):
            if kind == "unit" and pk == ROOT_UNIT and not entries and row is not None and row["audit_pos"] is None:
                continue  # the root unit is the schema's (migration 0013): it has a history once changed
            verify_object(format_id(kind, pk), entries, None if row is None else Head.of(row), report)
    for (kind, pk), entries in grouped(_keyed(repo.stream_foreign_entries()), "key"):
        verify_object(f"{kind}-{pk}", entries, None, report)
    return report


def _keyed(rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for row in rows:
        yield {**row, "key": (row["object_kind"], row["object_id"])}


# ---- replay --------------------------------------------------------------------------------------------------


def replay(repo: Repository) -> tuple[int, list[dict[str, Any]]]:
    """Rebuild every case, contact and course from the log alone and compare it with the tables. Returns
    (objects compared, differences), each difference ``{"object", "field", "log", "table"}``."""
    differences: list[dict[str, Any]] = []
    count = 0
    for kind in OBJECT_MODELS:
        timers = grouped(repo.stream_timers(kind), "object_id")
        pending_timers = next(timers, None)
        for pk, entries, row in _merge(repo.stream_chains(kind), repo.stream_rows(kind)):
            count += 1
            own: list[Any] = []
            while pending_timers is not None and pending_timers[0] <= pk:
                if pending_timers[0] == pk:
                    own = pending_timers[1]
                else:
                    differences.extend(_orphans(kind, *pending_timers))
                pending_timers = next(timers, None)
            differences.extend(compare(kind, pk, fold(kind, pk, entries), row, own))
        while pending_timers is not None:
            differences.extend(_orphans(kind, *pending_timers))
            pending_timers = next(timers, None)
    return count, differences


def _orphans(kind: str, pk: int, timers: list[Any]) -> list[dict[str, Any]]:
    """Timer rows of an object that neither the log nor the tables have."""
    return [_diff(f"{format_id(kind, pk)} timer-{t['id']}", "timer", None, t["name"]) for t in timers]


def compare(kind: str, pk: int, rebuilt: Rebuilt, row: Any | None, timers: list[Any]) -> list[dict[str, Any]]:
    """Where the tables differ from what the log says of one object."""
    label = format_id(kind, pk)
    if row is None:
        return [_diff(label, "object", f"{rebuilt.entries} entries", None)]
    if rebuilt.entries == 0:
        return [_diff(label, "object", None, "a row with no audit entries")]
    found = [_diff(label, "state", rebuilt.state, row["state"])] if rebuilt.state != row["state"] else []
    if not rebuilt.complete:
        return found  # written before changes were recorded (format 0): the state is all the log knows
    for column in row:
        if column in BOOKKEEPING or column == "state":
            continue
        logged, stored = rebuilt.values.get(column), jsonable(row[column])
        if logged != stored:
            found.append(_diff(label, column, logged, stored))
    for name, logged, stored in (("version", rebuilt.version, row["version"]),
                                 ("created_at", instant(rebuilt.created_at), instant(row["created_at"])),
                                 ("updated_at", instant(rebuilt.updated_at), instant(row["updated_at"]))):
        if logged != stored:
            found.append(_diff(label, name, logged, stored))
    tables = {t["id"]: t for t in timers}
    for timer_pk in sorted(set(tables) | set(rebuilt.timers)):
        tlabel = f"{label} timer-{timer_pk}"
        logged_timer, table_timer = rebuilt.timers.get(timer_pk), tables.get(timer_pk)
        if logged_timer is None or table_timer is None:
            found.append(_diff(tlabel, "timer", None if logged_timer is None else logged_timer["name"],
                               None if table_timer is None else table_timer["name"]))
            continue
        for field in ("name", "status", "rule", "outcome", "resolution"):
            if logged_timer[field] != table_timer[field]:
                found.append(_diff(tlabel, field, logged_timer[field], table_timer[field]))
        for field in ("due_at", "satisfied_at", "resolved_at"):
            logged_at = logged_timer[field]
            logged_text = instant(logged_at) if isinstance(logged_at, datetime) else logged_at
            if logged_text != instant(table_timer[field]):
                found.append(_diff(tlabel, field, logged_text, instant(table_timer[field])))
    return found


def _diff(label: str, field: str, logged: Any, stored: Any) -> dict[str, Any]:
    return {"object": label, "field": field, "log": logged, "table": stored}


# ---- as of an instant ----------------------------------------------------------------------------------------


def as_of(repo: Repository, kind: str, pk: int, when: datetime) -> dict[str, Any]:
    """The object's view (``show``'s shape) as its entries up to ``when`` describe it."""
    label = format_id(kind, pk)
    history = repo.object_history(kind, pk, until=when)
    if not history:
        everything = repo.object_history(kind, pk)
        if not everything:
            raise NotFound(label, kind, hint=f"List them with `mpoxflow list {kind}s`.")
        raise NotFound(label, kind, hint=f"{label} did not exist yet at {instant(when)}: it was created at "
                                         f"{instant(everything[0].at)}.")
    rebuilt = fold(kind, pk, (dict(e._mapping) for e in history))
    if not rebuilt.complete:
        raise UsageError(
            f"{label}'s history was recorded before audit format 1 (it holds no changes), so only its state "
            f"({rebuilt.state}) is known at {instant(when)}: see `mpoxflow audit timeline {label}`"
        )
    values = rebuilt.values
    definition = BY_NAME[str(values["workflow"])]
    facts = {f.name: values.get(f.name) for f in dataclasses.fields(definition.facts)}
    row = SimpleNamespace(
        id=pk, state=rebuilt.state, workflow=values["workflow"], person_id=values["person_id"],
        version=rebuilt.version, created_at=rebuilt.created_at, updated_at=rebuilt.updated_at, **facts,
        # Whose it was then (issue 17): the unit and the assignee as the log's assign and transfer entries left
        # them (an object written before migration 0013 belongs to the root unit).
        unit_id=values.get("unit_id", ROOT_UNIT), assignee_id=values.get("assignee_id"),
        failed_attempts=values.get("failed_attempts", 0),
    )
    timers = [
        SimpleNamespace(
            id=t["id"], name=t["name"], due_at=datetime.fromisoformat(t["due_at"]), status=t["status"],
            rule=t["rule"], object_kind=kind, object_id=pk, task=t["task"], satisfied_at=t["satisfied_at"],
            note=t["note"], attempts=t["attempts"], next_attempt_at=None, last_error=t["last_error"],
            outcome=t["outcome"], resolved_at=_at(t["resolved_at"]), resolution=t["resolution"],
        )
        for t in rebuilt.timers.values()
    ]
    timers.sort(key=lambda t: (t.due_at, t.id))
    view = object_view(kind, row, timers)  # type: ignore[arg-type]
    return {**view, "as_of": instant(when), "audit_seq": history[-1].seq}


def _at(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


# ---- one entry ----------------------------------------------------------------------------------------------


def entry_detail(repo: Repository, seq: int) -> dict[str, Any]:
    """One entry (``audit_view``'s shape plus ``prev_hash``), with what it changed: for each column it wrote,
    the value before (its object's chain folded up to the entry before it) and after; the state's change; the
    entries before and after it in its object's chain; whether its hash still matches its content."""
    row = repo.audit_entry(seq)
    if row is None:
        raise NotFound(str(seq), "audit entry", hint="Audit entries are numbered by seq: see the auditor's desk.")
    entry = dict(row._mapping)
    before = fold(entry["object_kind"], entry["object_id"],
                  (dict(e._mapping) for e in repo.object_history(entry["object_kind"], entry["object_id"],
                                                                  before_pos=entry["pos"])))
    changes = [{"field": name, "before": before.values.get(name), "after": value, "known": before.complete}
               for name, value in sorted((entry["changes"] or {}).items())]
    following = repo.audit_at_pos(entry["object_kind"], entry["object_id"], entry["pos"] + 1)
    return {**audit_view(row), "prev_hash": entry["prev_hash"], "format": entry["format"], "changed": changes,
            "next_seq": None if following is None else following.seq,
            "hash_matches": entry_hash(entry) == entry["hash"]}


# ---- export --------------------------------------------------------------------------------------------------


def export_record(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One entry as exported: every column, instants in Danish local time with their offset."""
    return {name: instant(entry[name]) if name in INSTANT_FIELDS else entry[name] for name in EXPORT_FIELDS}


def export(repo: Repository, fmt: str, out: IO[str], *, exported_at: datetime,
           entries: Iterable[Mapping[str, Any]] | None = None) -> int:
    """Write the whole log (or ``entries``, a filtered view in sequence order) to ``out``, one entry at a time;
    returns the number written. JSON Lines: a header object, then one object per entry. CSV: a header row, then
    one row per entry, JSON documents as JSON text, NULL as an empty cell. ``excel-csv``: the same rows for a
    spreadsheet in a Danish locale (UTF-8 with a BOM, ``;`` between cells, CRLF, instants as Danish local
    ``dd.mm.åååå tt:mm:ss``, a text that would read as a formula behind an apostrophe)."""
    if fmt not in EXPORT_FORMATS and fmt != "excel-csv":
        raise UsageError(f"'{fmt}' is not an export format: use jsonl or csv")
    rows = repo.stream_audit() if entries is None else entries
    count = 0
    if fmt == "jsonl":
        out.write(json.dumps({"mpoxflow_audit_export": 1, "exported_at": instant(exported_at),
                              "fields": list(EXPORT_FIELDS)}) + "\n")
        for entry in rows:
            out.write(json.dumps(export_record(entry), ensure_ascii=False) + "\n")
            count += 1
        return count
    if fmt == "excel-csv":
        out.write("\ufeff")
        excel = csv.writer(out, delimiter=";", lineterminator="\r\n")
        excel.writerow(EXPORT_FIELDS)
        for entry in rows:
            excel.writerow([_excel_cell(name, entry[name]) for name in EXPORT_FIELDS])
            count += 1
        return count
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    for entry in rows:
        record = export_record(entry)
        writer.writerow(["" if record[n] is None else json.dumps(record[n], ensure_ascii=False)
                         if n in JSON_FIELDS else record[n] for n in EXPORT_FIELDS])
        count += 1
    return count


def _excel_cell(name: str, value: Any) -> Any:
    """One cell of the Excel-friendly CSV."""
    if value is None:
        return ""
    if name in INSTANT_FIELDS:
        return to_local(value).strftime(EXCEL_INSTANT)
    if name in JSON_FIELDS:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def export_xlsx(entries: Iterable[Mapping[str, Any]], out: IO[bytes]) -> int:
    """The entries (in sequence order) as an Excel workbook written to ``out``: one sheet, a header row of the
    export's fields, one row per entry, instants as Danish local date-times, JSON documents as JSON text, every
    text a text (never a formula). openpyxl's write-only mode: rows go to a temporary file as they come, so
    memory stays flat. Returns the number written."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheet = book.create_sheet("audit_log")
    sheet.append(list(EXPORT_FIELDS))
    count = 0
    for entry in entries:
        row: list[Any] = []
        for name in EXPORT_FIELDS:
            value = entry[name]
            if value is None:
                row.append(None)
                continue
            if name in INSTANT_FIELDS:
                cell = WriteOnlyCell(sheet, value=to_local(value).replace(tzinfo=None))
                cell.number_format = XLSX_INSTANT
            else:
                cell = WriteOnlyCell(sheet, value=json.dumps(value, ensure_ascii=False) if name in JSON_FIELDS
                                     else value)
                if isinstance(cell.value, str):
                    cell.data_type = "s"  # openpyxl reads a leading "=" as a formula otherwise
            row.append(cell)
        sheet.append(row)
        count += 1
    book.save(out)
    return count


def read_export(lines: Iterable[str], fmt: str) -> Iterator[dict[str, Any]]:
    """Entries back from an export, typed as the database holds them (instants aware, JSON parsed): what
    ``persistence.audit.entry_hash`` needs to check them again."""
    if fmt == "jsonl":
        it = iter(lines)
        header = json.loads(next(it))
        if header.get("mpoxflow_audit_export") != 1:
            raise UsageError("not an mpoxflow audit export (its first line is not the export header)")
        for line in it:
            record = json.loads(line)
            yield {**record, **{n: datetime.fromisoformat(record[n]) for n in INSTANT_FIELDS}}
        return
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) != EXPORT_FIELDS:
        raise UsageError("not an mpoxflow audit export (its header row is not the documented field list)")
    for raw in reader:
        yield {name: _cell(name, raw[name]) for name in EXPORT_FIELDS}


def _cell(name: str, cell: str) -> Any:
    if cell == "":
        return None
    if name in JSON_FIELDS:
        return json.loads(cell)
    if name in INSTANT_FIELDS:
        return datetime.fromisoformat(cell)
    if name in INTEGER_FIELDS:
        return int(cell)
    return cell
