"""Bulk import of persons, close contacts and cases from a CSV or XLSX file (issue 18), through the engine.

A contact list arrives as a spreadsheet from a venue or a ward. Each of its rows goes through the **same engine
operation as the typed command** (``Engine.add_person``, ``Engine.open("contact", "add", ...)``,
``Engine.open("case", "open", ...)``, with the data the declared operation prepares), so every rule, refusal and
audit entry is the one the command line would give. What this module adds:

- reading the file (``read_table``): CSV (UTF-8 with or without a byte-order mark, else Windows-1252; ``;`` or
  ``,`` sniffed: Danish Excel writes ``;``) or XLSX (openpyxl, read-only; date cells are dates);
- mapping its columns to the operation's fields (``map_columns``): Danish and English header names, compared
  without case, spaces, punctuation or accents, the declared field names and labels, and ``--map Column=field``;
- reading each cell (``dd.mm.åååå``, ``dd-mm-åååå``, ``d/m/åååå``, ``åååå-mm-dd``; ``ja``/``nej``; Danish exposure
  kinds, risks, symptoms and criteria);
- matching by reference: a person registered already is reused; a row whose object exists already (a contact of
  the case and person with the same exposure, a case of the person with the same onset, a person) is
  ``present`` and creates nothing, so re-running a file creates nothing twice;
- the report: per row ``created`` (the ids made), ``present``, ``refused`` (the rule and the engine's message,
  naming the file's column instead of the option where the field came from one) or ``skipped`` (an empty row);
- the transaction (``Engine`` units of work run inside a batch, ``engine.uow.batch``, each in a savepoint). A row
  is atomic: a refused contact leaves no person behind. By default the valid rows are imported and each row's
  work is kept on its own (rows are committed in chunks of ``CHUNK``, each row in its savepoint: a row's refusal
  never undoes another's). ``all_or_nothing``: one transaction, any refused row and nothing is written (the
  report still answers every row). ``dry_run``: the rows run in one transaction that is rolled back: nothing
  written, not even the import's record, and the report is the one the real run would give.
- the record: the ``imports`` row (the file, its options, the counts and the per-row report, which holds row
  numbers, results, ids, rules and messages, never a reference) and one audit entry on the importing user's
  chain (the import's id and the counts), in the same transaction.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import structlog

from engine import units
from engine.uow import Runtime, UnitOfWork, audit_refusal, batch
from engine.views import jsonable
from persistence.audit import Head
from persistence.models import Import
from persistence.repository import format_id, not_found, parse_id
from workflows.case import CLADES, CRITERIA, SYMPTOMS
from workflows.contact import EXPOSURE_KINDS, RISKS
from workflows.errors import (
    MpoxflowError,
    NotFound,
    NotPermitted,
    RuleRefused,
    UsageError,
    as_declared,
    because,
)
from workflows.limits import MAX_ID, check_text, shown
from workflows.operations import Field, Operation
from workflows.registry import BY_OPERATION

log = structlog.get_logger("mpoxflow.imports")

#: What can be imported, and the operation each row goes through.
KINDS: dict[str, str] = {"contacts": "contact add", "persons": "person add", "cases": "case open"}
#: A row's result.
RESULTS = ("created", "present", "refused", "skipped")
#: Rows kept in one transaction before it commits (the default mode; each row in a savepoint of its own): a commit
#: per row would cost an fsync per row on SQLite; 200 rows hold the write lock for about a second, so staff changes
#: made meanwhile wait that long at most (SQLite), and the rows' persons stay locked no longer (PostgreSQL).
CHUNK = 200
#: The largest file and the most rows one import takes (a contact list, not a national register).
MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100_000
#: The columns a report adds to the file (Danish first, as the staff who correct it read them).
REPORT_COLUMNS = ("Resultat", "Id", "Regel", "Besked")

#: The person's facts a row may carry (``person add``'s fields), in every kind of import.
PERSON_FIELDS = tuple(f.name for f in BY_OPERATION["person add"].fields)
#: The fields of each kind of import: the person's, then the operation's own (its ``person`` and ``case`` come from
#: the row's reference and ``--case``), and the row's reason.
FIELDS: dict[str, tuple[str, ...]] = {
    "persons": (*PERSON_FIELDS, "reason"),
    "contacts": (*PERSON_FIELDS, "exposed", "kind", "risk", "anonymous_via_doctor", "reason"),
    "cases": (*PERSON_FIELDS, "onset", "symptoms", "symptom_note", "criteria", "confirmed", "pcr_on", "clade",
              "second_case_reason", "reason"),
}
#: The columns a file must have, by kind.
REQUIRED: dict[str, tuple[str, ...]] = {"persons": ("ref",), "contacts": ("ref", "exposed", "kind"),
                                        "cases": ("ref",)}

#: Header names each field is known by besides its name and its declared Danish and English labels (compared as
#: ``normal`` makes them).
HEADERS: dict[str, tuple[str, ...]] = {
    "ref": ("CPR", "CPR-nr.", "CPR-nummer", "Personnummer", "Reference", "Ref", "Person", "Personreference",
            "Patient-id"),
    "born": ("Fødselsdato", "Født", "Fødselsdag", "Birth date", "Date of birth", "DOB", "Born on"),
    "exposed": ("Eksponeret", "Eksponeringsdato", "Dato for eksponering", "Sidste eksponering", "Exposure date",
                "Exposed", "Exposed on", "Last exposure", "Dato"),
    "kind": ("Kontakttype", "Type", "Eksponering", "Eksponeringstype", "Exposure", "Exposure kind", "Contact type"),
    "risk": ("Risiko", "Risikovurdering", "Risk", "Risk level"),
    "reason": ("Begrundelse", "Årsag", "Reason", "Note"),
    "onset": ("Symptomdebut", "Debut", "Debutdato", "Onset", "Onset date", "Symptom onset"),
    "symptoms": ("Symptomer", "Symptoms"),
    "criteria": ("Kriterier", "Epidemiologiske kriterier", "Criteria"),
    "confirmed": ("Bekræftet", "PCR-bekræftet", "Confirmed"),
    "pcr_on": ("PCR-dato", "PCR dato", "Dato for PCR", "Positiv PCR", "PCR date", "PCR"),
    "clade": ("Klade", "Clade"),
    "pregnant": ("Gravid", "Pregnant"),
    "immunocompromised": ("Immunsupprimeret", "Immunsvækket", "Immunocompromised"),
}

#: Cell values by their Danish (and looser English) words, per kind of value, as ``normal`` makes them.
KIND_WORDS = {
    "husstand": "household", "husstandskontakt": "household", "samboende": "household",
    "seksuel": "sexual", "seksuelkontakt": "sexual", "seksualpartner": "sexual", "sex": "sexual",
    "slimhinde": "mucosa_or_broken_skin", "slimhindeellerbeskadigethud": "mucosa_or_broken_skin",
    "beskadigethud": "mucosa_or_broken_skin",
    "stik": "sharps", "stikskade": "sharps", "stiklaesion": "sharps", "skarpe": "sharps",
    "rengoring": "cleaning",
    "intakthud": "intact_skin", "hud": "intact_skin",
    "passager": "passenger_8h", "passager8timer": "passenger_8h", "passager8t": "passenger_8h",
    "sundhedspersonaleudenvaernemidler": "healthcare_no_ppe",
    "sundhedspersonaleudenvaernemiddel": "healthcare_no_ppe",
    "sundhedspersonalemedvaernemidler": "healthcare_with_ppe",
    "sundhedspersonalemedvaernemiddel": "healthcare_with_ppe",
    "ansigttilansigt": "face_to_face",
}
RISK_WORDS = {"hoj": "high", "middel": "medium", "mellem": "medium", "moderat": "medium", "lav": "low"}
SYMPTOM_WORDS = {
    "udslaet": "rash", "blaerer": "rash", "feber": "fever", "hovedpine": "headache", "muskelsmerter": "myalgia",
    "rygsmerter": "back_pain", "traethed": "fatigue", "haevedelymfeknuder": "lymphadenopathy",
    "lymfeknudesvulst": "lymphadenopathy", "proktitis": "proctitis", "kulderystelser": "chills", "andet": "other",
}
CRITERION_WORDS = {"epidemiologiskforbindelse": "epi_link", "kontakt": "epi_link", "rejse": "travel",
                   "flerepartnere": "multiple_partners", "mandsomharsexmedmaend": "msm"}
YES = frozenset({"ja", "j", "x", "1", "yes", "y", "true", "sand"})
NO = frozenset({"nej", "n", "0", "no", "false", "falsk", ""})

#: A CPR number's digits (a reference a workbook holds as a number of one digit less lost its leading zero).
CPR_DIGITS = 10
#: The date forms a file may use: ``dd.mm.åååå``, ``dd-mm-åååå``, ``d/m/åååå``, and ISO.
DMY = re.compile(r"^(\d{1,2})[.\-/](\d{1,2})[.\-/](\d{4})$")
YMD = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")


# ---- reading the file -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A file as read: its format, its header, and its data rows by their row number in the file (the header is
    row 1, as a spreadsheet numbers them), each cell a text or (XLSX) a date, a number or None. A CSV's delimiter
    and encoding are kept so that its report is written the same way."""

    format: str
    header: list[str]
    rows: list[tuple[int, list[Any]]]
    delimiter: str = ";"
    encoding: str = "utf-8"
    bom: bool = False


def file_format(content: bytes, filename: str) -> str:
    """``xlsx`` for a workbook (by its name or its zip signature), ``csv`` otherwise. UsageError for an old
    ``.xls`` workbook, which openpyxl cannot read."""
    name = filename.lower()
    if name.endswith(".xls") or content[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise UsageError(because("%(file)s is an old Excel workbook (.xls): save it as .xlsx or as CSV and import "
                                 "that", file=_shown_name(filename)))
    return "xlsx" if name.endswith(".xlsx") or content[:4] == b"PK\x03\x04" else "csv"


def read_table(content: bytes, filename: str) -> Table:
    """The file's header and rows. UsageError (exit 2) for an empty file, one too large, a workbook that cannot be
    read, a file with no header or more than ``MAX_ROWS`` rows."""
    if len(content) > MAX_BYTES:
        raise UsageError(because("the file is %(size)s bytes: at most %(limit)s; split it into smaller files",
                                 size=len(content), limit=MAX_BYTES))
    if not content.strip():
        raise UsageError(because("%(file)s is empty: it needs a header row and a row per person",
                                 file=_shown_name(filename)))
    table = _read_xlsx(content, filename) if file_format(content, filename) == "xlsx" else _read_csv(content)
    if not any(table.header):
        raise UsageError(because("%(file)s has no header row: its first row names the columns (e.g. CPR; "
                                 "Eksponeringsdato; Kontakttype)", file=_shown_name(filename)))
    if len(table.rows) > MAX_ROWS:
        raise UsageError(because("the file has %(rows)s rows: at most %(limit)s; split it", rows=len(table.rows),
                                 limit=MAX_ROWS))
    return table


def _shown_name(filename: str) -> str:
    """A file's name as a message shows it (its last part, shortened)."""
    return shown(re.split(r"[\\/]", filename)[-1] or "the file")


def _stored_name(filename: str) -> str:
    """A file's name as its import keeps it: its last part, printable, at most 255 characters."""
    name = re.split(r"[\\/]", filename)[-1] or "import"
    return "".join(ch if ch.isprintable() else "?" for ch in name)[:255]


def _read_csv(content: bytes) -> Table:
    bom = content.startswith(b"\xef\xbb\xbf")
    try:
        text, encoding = content.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = content.decode("cp1252", errors="replace"), "cp1252"
    delimiter = _delimiter(text)
    records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    if not records:
        return Table("csv", [], [], delimiter, encoding, bom)
    header = [cell.strip() for cell in records[0]]
    rows = [(number, list(cells)) for number, cells in enumerate(records[1:], start=2)]
    return Table("csv", header, rows, delimiter, encoding, bom)


def _delimiter(text: str) -> str:
    """``;`` (Danish Excel), ``,`` or a tab, as the first lines use them (``csv.Sniffer``), else the one the header
    line has most of."""
    sample = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=";,\t").delimiter
    except csv.Error:
        first = text.splitlines()[0] if text.splitlines() else ""
        return max(";,\t", key=first.count)


def _read_xlsx(content: bytes, filename: str) -> Table:
    from zipfile import BadZipFile

    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (BadZipFile, KeyError, ValueError, OSError) as error:
        raise UsageError(because("%(file)s cannot be read as an XLSX workbook: save it again from Excel as .xlsx, "
                                 "or as CSV", file=_shown_name(filename))) from error
    try:
        sheet = workbook.worksheets[0]
        records = [list(r) for r in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()
    while records and all(_empty(c) for c in records[-1]):
        records.pop()
    if not records:
        return Table("xlsx", [], [])
    header = [_text(cell).strip() for cell in records[0]]
    while header and not header[-1]:
        header.pop()
    rows = [(number, cells[:len(header)]) for number, cells in enumerate(records[1:], start=2)]
    return Table("xlsx", header, rows)


def _empty(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _text(cell: Any) -> str:
    """A cell as text: an integral number without ``.0`` (a reference typed as a number)."""
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, datetime):
        return cell.date().isoformat()
    if isinstance(cell, date):
        return cell.isoformat()
    return str(cell)


# ---- mapping the columns ------------------------------------------------------------------------------------------


def normal(text: str) -> str:
    """A header or a word as compared: no case, accents, spaces or punctuation (``CPR-nr.`` is ``cprnr``,
    ``Født`` is ``fodt``, ``Sundhedspersonale med værnemidler`` is ``sundhedspersonalemedvaernemidler``)."""
    text = text.replace("ø", "o").replace("Ø", "o").replace("æ", "ae").replace("Æ", "ae")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if ch.isalnum() and not unicodedata.combining(ch)).casefold()


def _operation(kind: str) -> Operation:
    return BY_OPERATION[KINDS[kind]]


@functools.lru_cache(maxsize=256)
def _declared(kind: str, name: str) -> Field | None:
    """The declared field ``name`` of ``kind``'s rows (a person's, or the operation's own)."""
    if name in PERSON_FIELDS:
        return BY_OPERATION["person add"].field(name)
    return _operation(kind).field(name)


def known_headers(kind: str) -> dict[str, str]:
    """Every header name (as ``normal`` makes it) a field of ``kind`` is known by: its name, its declared labels,
    and ``HEADERS``. A name two fields share goes to the operation's own field (``Person``: the reference)."""
    known: dict[str, str] = {}
    for name in FIELDS[kind]:
        declared = _declared(kind, name)
        names = [name, *HEADERS.get(name, ())]
        if declared is not None:
            names += [declared.label_da or "", declared.label_en or ""]
        for text in names:
            if normal(text):
                known.setdefault(normal(text), name)
    for name, headers in HEADERS.items():  # the explicit names win over a label that happens to be the same
        if name in FIELDS[kind]:
            for text in headers:
                known[normal(text)] = name
    return known


@dataclass(frozen=True)
class Columns:
    """Which column of the file is which field (by position), and which columns are left out."""

    fields: dict[int, str]
    header: list[str]
    ignored: list[str] = field(default_factory=list)

    def empty(self, cells: list[Any]) -> bool:
        """A row with nothing in it but (an earlier report's) result columns."""
        return all(_empty(c) for i, c in enumerate(cells)
                   if i >= len(self.header) or self.header[i] not in REPORT_COLUMNS)

    def column_of(self, name: str) -> str | None:
        """The header of the column ``name`` comes from, if it comes from one."""
        return next((self.header[i] for i, f in self.fields.items() if f == name), None)

    def view(self) -> dict[str, str]:
        return {self.header[i]: f for i, f in sorted(self.fields.items())}


def parse_mapping(given: Sequence[str]) -> dict[str, str | None]:
    """``--map`` values ``Column=field`` (``Column=`` leaves the column out) as {column: field or None}.
    UsageError for one without ``=``."""
    mapping: dict[str, str | None] = {}
    for item in given:
        column, sep, name = item.partition("=")
        if not sep or not column.strip():
            raise UsageError(because("⟦map⟧ '%(item)s' is not Column=field: e.g. \"Dato for kontakt=exposed\" "
                                     "(Column= leaves a column out)", item=shown(item)))
        mapping[column.strip()] = name.strip().removeprefix("--").replace("-", "_") or None
    return mapping


def map_columns(kind: str, header: list[str], mapping: Mapping[str, str | None] | None = None) -> Columns:
    """Which column is which field: ``mapping`` first (a column by its header, compared as ``normal`` makes it),
    then the known header names. UsageError (exit 2) for a mapping to an unknown field or of a column the file
    does not have, two columns for one field, or a required column missing (saying how to map it)."""
    if kind not in KINDS:
        raise UsageError(because("cannot import '%(kind)s': import %(kinds)s", kind=shown(kind),
                                 kinds=list(KINDS)))
    allowed = FIELDS[kind]
    by_normal: dict[str, int] = {}
    for i, name in enumerate(header):
        if normal(name):
            by_normal.setdefault(normal(name), i)
    chosen: dict[int, str | None] = {}
    for column, wanted in (mapping or {}).items():
        if wanted is not None and wanted not in allowed:
            raise UsageError(because("⟦map⟧ %(column)s=%(field)s: a %(kind)s file has no field '%(field)s'; map to "
                                     "one of %(fields)s", column=shown(column), field=shown(wanted), kind=kind,
                                     fields=list(allowed)))
        index = by_normal.get(normal(column))
        if index is None:
            raise UsageError(because("⟦map⟧ %(column)s: the file has no column '%(column)s'; its columns are "
                                     "%(columns)s", column=shown(column), columns=[shown(h) for h in header if h]))
        chosen[index] = wanted
    known = known_headers(kind)
    for i, heading in enumerate(header):
        if heading in REPORT_COLUMNS and i not in chosen:
            chosen[i] = None  # an earlier report's columns: a corrected report imports again
        elif i not in chosen and normal(heading) in known:
            chosen[i] = known[normal(heading)]
    fields: dict[int, str] = {}
    for i, chosen_field in sorted(chosen.items()):
        if chosen_field is None:
            continue
        name = chosen_field
        other = next((header[j] for j, f in fields.items() if f == name), None)
        if other is not None:
            raise UsageError(because("the columns '%(first)s' and '%(second)s' are both %(field)s: leave one out "
                                     "with ⟦map⟧ \"%(second)s=\"", first=shown(other), second=shown(header[i]),
                                     field=name))
        fields[i] = name
    missing = [name for name in REQUIRED[kind] if name not in fields.values()]
    if missing:
        examples = {"ref": "CPR", "exposed": "Eksponeringsdato", "kind": "Kontakttype"}
        raise UsageError(because("the file has no column for %(missing)s (its columns: %(columns)s): name the "
                                 "column %(examples)s, or map yours with ⟦map⟧ \"Your column=%(first)s\"",
                                 missing=missing, columns=[shown(h) for h in header if h] or ["none"],
                                 examples=[f"'{examples.get(m, m)}'" for m in missing], first=missing[0]))
    ignored = [h for i, h in enumerate(header) if i not in fields and h and h not in REPORT_COLUMNS]
    return Columns(fields, list(header), ignored)


# ---- reading a cell -------------------------------------------------------------------------------------------


def parse_date_cell(value: Any, name: str) -> date:
    """A date cell: a workbook's date, or ``dd.mm.åååå``, ``dd-mm-åååå``, ``d/m/åååå``, ``åååå-mm-dd``."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _text(value).strip()
    match, ymd = DMY.match(text), YMD.match(text)
    try:
        if match:
            return date(int(match[3]), int(match[2]), int(match[1]))
        if ymd:
            return date(int(ymd[1]), int(ymd[2]), int(ymd[3]))
    except ValueError:
        pass
    raise UsageError(because("⟦%(field)s⟧ '%(text)s' is not a date: write dd.mm.åååå (e.g. 14.03.2025) or "
                             "åååå-mm-dd", field=name, text=shown(text)))


@functools.lru_cache(maxsize=64)
def _by_normal(allowed: tuple[str, ...]) -> dict[str, str]:
    """The allowed values by their ``normal`` form (``healthcarewithppe``: ``healthcare_with_ppe``)."""
    return {normal(value): value for value in allowed}


def _choice(text: str, name: str, allowed: Sequence[str], words: Mapping[str, str]) -> str:
    key = normal(text)
    found = _by_normal(tuple(allowed)).get(key) or words.get(key)
    if found is not None:
        return found
    raise UsageError(because("⟦%(field)s⟧ '%(text)s' is not one of %(allowed)s", field=name, text=shown(text),
                             allowed=list(allowed)))


def _choices(text: str, name: str, allowed: Sequence[str], words: Mapping[str, str]) -> list[str]:
    items: list[str] = []
    for part in re.split(r"[,;/+]|\bog\b|\band\b", text):
        if part.strip():
            item = _choice(part, name, allowed, words)
            if item not in items:
                items.append(item)
    return items


#: The value words of the choice fields.
CHOICES: dict[str, tuple[Sequence[str], Mapping[str, str]]] = {
    "kind": (EXPOSURE_KINDS, KIND_WORDS), "risk": (RISKS, RISK_WORDS), "clade": (CLADES, {}),
    "symptoms": (SYMPTOMS, SYMPTOM_WORDS), "criteria": (CRITERIA, CRITERION_WORDS),
}


def parse_cell(kind: str, name: str, value: Any) -> Any:
    """A cell's value as the field ``name`` takes it (None for an empty cell). UsageError naming the field."""
    if _empty(value):
        return None
    if name == "ref" and isinstance(value, (int, float)) and not isinstance(value, bool):
        # A CPR number that a spreadsheet stored as a number lost its leading zero (010190-1234 as 101901234).
        text = _text(value)
        return text.zfill(CPR_DIGITS) if text.isdigit() and len(text) == CPR_DIGITS - 1 else text
    declared = _declared(kind, name)
    kind_of = declared.type if declared is not None else "note"
    if kind_of == "date":
        return parse_date_cell(value, name)
    text = _text(value).strip()
    if kind_of == "flag":
        if normal(text) in YES:
            return True
        if normal(text) in NO:
            return False
        raise UsageError(because("⟦%(field)s⟧ '%(text)s': write ja or nej", field=name, text=shown(text)))
    if kind_of == "count":
        if not text.isdigit() or len(text) > 2:
            raise UsageError(because("⟦%(field)s⟧ '%(text)s' is not a number", field=name, text=shown(text)))
        return int(text)
    if kind_of == "choice":
        allowed, words = CHOICES.get(name, (declared.choices if declared else (), {}))
        return _choice(text, name, allowed, words)
    if kind_of == "choices":
        allowed, words = CHOICES.get(name, (declared.choices if declared else (), {}))
        return _choices(text, name, allowed, words)
    return text


# ---- the import -------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One row's answer."""

    row: int
    result: str
    ids: list[str] = field(default_factory=list)
    person: str | None = None
    object: str | None = None
    rule: str | None = None
    message: str | None = None
    note: str | None = None
    error: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return {"row": self.row, "result": self.result, "ids": self.ids, "person": self.person,
                "object": self.object, "rule": self.rule, "message": self.message, "note": self.note,
                "error": self.error}


@dataclass(frozen=True)
class Request:
    """What to import and how (the options as the user gave them)."""

    kind: str
    content: bytes
    filename: str
    actor: str
    reason: str | None = None
    case: str | None = None
    mapping: Mapping[str, str | None] = field(default_factory=dict)
    dry_run: bool = False
    all_or_nothing: bool = False


class Importer:
    """Runs an import's rows through the engine (see the module's docstring)."""

    def __init__(self, engine: Any, request: Request, *, name_of: Callable[[str], str] = as_declared,
                 progress: Callable[[int], None] | None = None) -> None:
        self.engine = engine
        self.runtime: Runtime = engine.runtime
        self.request = request
        self.name_of = name_of
        self.progress = progress
        self.case_pk: int | None = None
        #: Persons by reference, and the case's contacts by person (their id and exposures: date, kind).
        self.persons: dict[str, int] = {}
        self.contacts: dict[int, tuple[int, set[tuple[Any, Any]]]] = {}

    # -- preparing

    def prepare(self) -> tuple[Table, Columns]:
        """Read and map the file, check the case. UsageError (exit 2), NotFound (exit 4) for an unknown case."""
        request = self.request
        if request.kind not in KINDS:
            raise UsageError(because("cannot import '%(kind)s': import %(kinds)s", kind=shown(request.kind),
                                     kinds=list(KINDS)))
        check_text(request.actor, "actor")
        if request.reason is not None:
            check_text(request.reason, "reason")  # the rows' entries carry it: refused once, before any row
        table = read_table(request.content, request.filename)
        columns = map_columns(request.kind, table.header, request.mapping)
        if request.kind == "contacts":
            if not request.case:
                raise UsageError(because("importing contacts needs their case: give ⟦case⟧ case-N"))
            _, self.case_pk = parse_id(request.case, kind="case")
            with self.runtime.db.reading() as session:
                from persistence.repository import Repository

                Repository(session).load_object("case", self.case_pk)
        elif request.case:
            raise UsageError(because("⟦case⟧ goes with an import of contacts"))
        return table, columns

    def run(self) -> dict[str, Any]:
        """Import; returns the import's view (its id, counts and every row's answer)."""
        table, columns = self.prepare()
        request = self.request
        command = f"import {request.kind}"
        started = self.runtime.clock.now()
        outcomes: list[Outcome] = []
        record: Import | None = None
        rows = table.rows
        if request.dry_run or request.all_or_nothing:
            with batch(self.runtime, request.actor, command) as uow:
                self._load(uow, table, columns)
                outcomes = [self._row(uow, number, cells, columns) for number, cells in rows]
                counts = _counts(outcomes)
                if not request.dry_run and not counts["refused"]:
                    record = self._record(uow, table, columns, outcomes, started)
                    uow.commit()
        else:
            chunks = [rows[i:i + CHUNK] for i in range(0, len(rows), CHUNK)] or [[]]
            for index, chunk in enumerate(chunks):
                with batch(self.runtime, request.actor, command) as uow:
                    if index == 0:
                        self._load(uow, table, columns)
                    outcomes += [self._row(uow, number, cells, columns) for number, cells in chunk]
                    if index == len(chunks) - 1:
                        # The last chunk commits with the import's record and its audit entry.
                        record = self._record(uow, table, columns, outcomes, started)
                    uow.commit()
        counts = _counts(outcomes)
        written = record is not None
        log.info("import", kind=request.kind, dry_run=request.dry_run, all_or_nothing=request.all_or_nothing,
                 written=written, **{"import": format_id("import", record.id) if record else None}, **counts)
        return {
            "id": format_id("import", record.id) if record else None, "kind": "import", "what": request.kind,
            "format": table.format, "dry_run": request.dry_run, "all_or_nothing": request.all_or_nothing,
            "written": written, "case": format_id("case", self.case_pk) if self.case_pk else None,
            "columns": columns.view(), "ignored": columns.ignored, "counts": counts,
            "rows": [o.view() for o in outcomes],
        }

    # -- one row

    def _row(self, uow: UnitOfWork, number: int, cells: list[Any], columns: Columns) -> Outcome:
        """One row in a savepoint of its own: all of it is kept, or (refused) none of it."""
        try:
            if columns.empty(cells):
                return Outcome(number, "skipped", note="empty row")
            values = self._values(cells, columns)
            with uow.savepoint():
                outcome = self._do_row(uow, number, values)
            self._remember(outcome, values)
            return outcome
        except NotPermitted as refused:
            audit_refusal(self.runtime, refused)  # in the batch, now that the row's savepoint is rolled back
            return self._refused(number, refused, columns)
        except MpoxflowError as error:
            return self._refused(number, error, columns)
        finally:
            if self.progress is not None:
                self.progress(1)

    def _remember(self, outcome: Outcome, values: Mapping[str, Any]) -> None:
        """What a row made, for the rows after it (once its savepoint is kept)."""
        if outcome.person is not None:
            self.persons[str(values["ref"]).strip()] = parse_id(outcome.person, kind="person")[1]
        if self.request.kind == "contacts" and outcome.object is not None:
            person_pk = parse_id(outcome.person or "", kind="person")[1]
            pk = parse_id(outcome.object, kind="contact")[1]
            _, seen = self.contacts.get(person_pk, (pk, set()))
            self.contacts[person_pk] = (pk, seen | {(jsonable(values.get("exposed")), values.get("kind"))})

    def _load(self, uow: UnitOfWork, table: Table, columns: Columns) -> None:
        """The persons the file's references name, and the case's contacts, read once (each row then asks these,
        kept up to date as rows are kept). A case outside the actor's units refuses the whole import, once
        (OutsideUnits, audited), rather than every row."""
        from sqlalchemy import select

        from persistence.models import Contact, Person

        if self.case_pk is not None:
            case = uow.repo.load_object("case", self.case_pk)
            units.check_acts_on(uow, "case", self.case_pk, case.unit_id, "contact add")

        index = next(i for i, f in columns.fields.items() if f == "ref")
        refs = sorted({str(parse_cell(self.request.kind, "ref", cells[index]) or "").strip()
                       for _, cells in table.rows if index < len(cells)} - {""})
        for start in range(0, len(refs), 500):
            found = uow.session.execute(select(Person.id, Person.ref).where(Person.ref.in_(refs[start:start + 500])))
            self.persons.update({ref: pk for pk, ref in found if ref is not None})
        if self.case_pk is not None:
            rows = uow.session.execute(select(Contact.id, Contact.person_id, Contact.exposures, Contact.exposed_on,
                                              Contact.exposure_kind).where(Contact.case_id == self.case_pk))
            for pk, person_pk, exposures, exposed_on, kind in rows:
                seen = {(e.get("on"), e.get("kind")) for e in exposures or []} or {(jsonable(exposed_on), kind)}
                self.contacts[person_pk] = (pk, seen)

    def _values(self, cells: list[Any], columns: Columns) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for index, name in columns.fields.items():
            value = cells[index] if index < len(cells) else None
            values[name] = parse_cell(self.request.kind, name, value)
        if not values.get("ref"):
            raise UsageError(because("⟦ref⟧ is empty: give the person's reference (CPR) in each row"))
        return values

    def _refused(self, number: int, error: MpoxflowError, columns: Columns) -> Outcome:
        def named(name: str) -> str:
            column = columns.column_of("ref" if name == "person" else name)
            return f'"{column}"' if column is not None else self.name_of(name)

        return Outcome(number, "refused", rule=error.rule, message=error.render(named),
                       error={"code": error.code, "key": error.key, "template": error.template,
                              "params": jsonable(error.params), "guard": type(error).__name__ == "GuardRefused",
                              "exit_code": error.exit_code,
                              "columns": {f: c for f in error.fields if (c := columns.column_of(
                                  "ref" if f == "person" else f)) is not None}})

    def _reason(self, number: int, values: Mapping[str, Any]) -> str:
        """The audit entry's reason of a row's changes: the row's own, else the import's, else which row."""
        return str(values.get("reason") or self.request.reason or f"bulk import, row {number}")

    def _do_row(self, uow: UnitOfWork, number: int, values: dict[str, Any]) -> Outcome:
        outcome = Outcome(number, "created")
        person_pk = self.persons.get(str(values["ref"]).strip())
        if person_pk is not None:
            outcome.person = format_id("person", person_pk)
        else:
            person_values = {k: values.get(k) for k in PERSON_FIELDS}
            _, data = BY_OPERATION["person add"].prepare({**person_values, "reason": None})
            made = self.engine.add_person(**data, actor=self.request.actor, reason=self._reason(number, values))
            outcome.person = made["id"]
            outcome.ids.append(made["id"])
            person_pk = parse_id(made["id"], kind="person")[1]
        kind = self.request.kind
        if kind == "persons":
            if not outcome.ids:
                outcome.result, outcome.note = "present", "the person is registered already"
            return outcome
        existing = self._existing(uow, kind, person_pk, values)
        if existing is not None:
            outcome.result, outcome.object = "present", existing
            outcome.note = ("the contact has this exposure already" if kind == "contacts"
                            else "the person has a case with this onset already")
            return outcome
        op = _operation(kind)
        given = {**{f.name: values.get(f.name) for f in op.fields}, "person": outcome.person,
                 "reason": values.get("reason")}
        if kind == "contacts":
            assert self.case_pk is not None
            given["case"] = format_id("case", self.case_pk)
        trigger, data = op.prepare(given)
        assert trigger is not None
        data.pop("person", None)
        reason = values.get("reason") or (data.get(op.reason_from) if op.reason_from else None)
        view = self.engine.open(op.kind, trigger, person=outcome.person, data=data, actor=self.request.actor,
                                reason=reason or self._reason(number, values))
        outcome.object = view["id"]
        outcome.ids.append(view["id"])
        if view.get("pep_window") == "closed":
            outcome.note = "PEP window closed: more than 14 days since the exposure (SST-mpox-7.1 §6.2)"
        return outcome

    def _existing(self, uow: UnitOfWork, kind: str, person_pk: int, values: Mapping[str, Any]) -> str | None:
        """The object a row would create, if it exists already: the case's contact for the person with this
        exposure (its date and kind), or the person's case with this onset (or PCR date)."""
        if kind == "contacts":
            pk, seen = self.contacts.get(person_pk, (None, set()))
            same = (jsonable(values.get("exposed")), values.get("kind")) in seen
            return format_id("contact", pk) if pk is not None and same else None
        onset, pcr_on = values.get("onset"), values.get("pcr_on")
        for pk in uow.repo.objects_of_person("case", person_pk, CASE_STATES):
            row = uow.repo.load_object("case", pk)
            if (onset is not None and row.onset == onset) or (onset is None and pcr_on is not None
                                                              and row.pcr_on == pcr_on):
                return format_id("case", pk)
        return None

    # -- the record

    def _record(self, uow: UnitOfWork, table: Table, columns: Columns, outcomes: list[Outcome],
                started: datetime) -> Import:
        """The ``imports`` row and its audit entry on the importing user's chain, in the unit's transaction."""
        request = self.request
        now = uow.now()
        counts = _counts(outcomes)
        options = {"case": format_id("case", self.case_pk) if self.case_pk else None, "map": dict(request.mapping),
                   "columns": columns.view(), "all_or_nothing": request.all_or_nothing, "delimiter": table.delimiter,
                   "encoding": table.encoding, "bom": table.bom, "reason": request.reason}
        record = Import(kind=request.kind, filename=_stored_name(request.filename), format=table.format,
                        content=request.content, options=options, dry_run=False, actor=uow.actor.name,
                        created_at=started, finished_at=now, counts=counts, report=[o.view() for o in outcomes])
        uow.session.add(record)
        uow.session.flush()
        user = uow.repo.user_by_name(uow.actor.name)
        assert user is not None
        uow.audit(
            Head.of(uow.repo.head_row("user", user.id)), kind="user", pk=user.id, workflow=None, trigger="import",
            from_state=None, to_state=None, actor=uow.actor, reason=request.reason, now=now,
            rule=_operation(request.kind).rule,
            data={"import": format_id("import", record.id), "kind": request.kind, "counts": counts,
                  "all_or_nothing": request.all_or_nothing, "case": options["case"]},
            changes=None,
        )
        return record


#: A case the person has that a row with the same onset matches (any but a discarded one).
CASE_STATES = ("suspected", "confirmed", "isolated", "healed", "closed", "deceased")


def _counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    counts = {result: 0 for result in RESULTS}
    for o in outcomes:
        counts[o.result] += 1
    return {**counts, "rows": len(outcomes)}


def run_import(engine: Any, request: Request, *, name_of: Callable[[str], str] = as_declared,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Import ``request``'s file (see the module's docstring); returns the import's view. Raises UsageError for a
    bad file or mapping, NotFound for an unknown case, NotPermitted (audited) for an actor who may not import;
    a row's refusal is in its answer, never raised."""
    return Importer(engine, request, name_of=name_of, progress=progress).run()


def count_rows(content: bytes, filename: str) -> int:
    """How many data rows a file has (for a progress bar); 0 when it cannot be read (the import says why)."""
    try:
        return len(read_table(content, filename).rows)
    except MpoxflowError:
        return 0


# ---- an earlier import, and the report as a file ---------------------------------------------------------------


def import_pk(import_id: str) -> int:
    """``import-7`` (or ``7``) -> 7. NotFound otherwise."""
    text = import_id.strip().removeprefix("import-")
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_ID:
        raise NotFound(shown(import_id), "import", hint="`mpoxflow import list` shows the imports.")
    return int(text)


def import_view(record: Import, *, with_rows: bool = True) -> dict[str, Any]:
    """An import as stored: who, what, when, the options and counts, and (``with_rows``) every row's answer."""
    view = {"id": format_id("import", record.id), "kind": "import", "what": record.kind, "format": record.format,
            "filename": record.filename, "actor": record.actor, "created_at": jsonable(record.created_at),
            "finished_at": jsonable(record.finished_at), "dry_run": record.dry_run,
            "all_or_nothing": bool(record.options.get("all_or_nothing")), "case": record.options.get("case"),
            "written": True, "columns": record.options.get("columns", {}), "counts": record.counts}
    purged = getattr(record, "purged_at", None)
    if purged is not None:  # issue 19: its file and the report's links to persons deleted
        view["purged_at"] = jsonable(purged)
    if with_rows:
        view["rows"] = record.report
    return view


def load_import(engine: Any, import_id: str) -> Import:
    """The stored import. NotFound."""
    pk = import_pk(import_id)
    with engine.runtime.db.reading() as session:
        record: Import | None = session.get(Import, pk)
    if record is None:
        raise not_found(format_id("import", pk), "import")
    return record


def list_imports(engine: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The newest imports first, without their rows."""
    from sqlalchemy import select

    with engine.runtime.db.reading() as session:
        records = session.scalars(select(Import).order_by(Import.id.desc()).limit(limit)).all()
    return [import_view(r, with_rows=False) for r in records]


def report_cells(row: Mapping[str, Any]) -> list[str]:
    """The report columns' values of one row: result, ids (or the object found), rule, message (and note)."""
    ids = row.get("ids") or [i for i in (row.get("person"), row.get("object")) if i]
    message = " ".join(t for t in (row.get("message"), row.get("note")) if t)
    return [str(row.get("result") or ""), " ".join(ids), str(row.get("rule") or ""), message]


def report_file(content: bytes | None, filename: str, report: Sequence[Mapping[str, Any]],
                delimiter: str | None = None) -> bytes:
    """The imported file with the report's columns (``REPORT_COLUMNS``) added, in its own format: a CSV with its
    delimiter and encoding (and byte-order mark), or an XLSX workbook. A row keeps its place; a column of an earlier
    report is replaced, so a corrected report can be imported and reported again. RuleRefused for an import whose
    file a retention purge deleted (issue 19)."""
    if content is None:
        raise RuleRefused(because("the file of this import was deleted under its retention rule: its report can no "
                                  "longer be written as the file; its counts and each row's result are kept"),
                          key="import_purged")
    table = read_table(content, filename)
    by_row = {int(r["row"]): r for r in report}
    keep = [i for i, h in enumerate(table.header) if h not in REPORT_COLUMNS]
    header = [table.header[i] for i in keep] + list(REPORT_COLUMNS)
    lines: list[list[Any]] = [header]
    for number, cells in table.rows:
        row = by_row.get(number)
        padded = cells + [None] * (len(table.header) - len(cells))
        lines.append([padded[i] for i in keep] + (report_cells(row) if row else ["", "", "", ""]))
    if table.format == "xlsx":
        return _xlsx(lines)
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter or table.delimiter, lineterminator="\r\n")
    for line in lines:
        writer.writerow(["" if c is None else _text(c) for c in line])
    text = out.getvalue()
    data = text.encode(table.encoding, errors="replace")
    return (b"\xef\xbb\xbf" + data) if table.bom else data


def report_download(engine: Any, content: bytes, filename: str, report: Sequence[Mapping[str, Any]], *,
                    delimiter: str | None = None, actor: str | None = None, written: bool = True) -> bytes:
    """``report_file``, and a read of personal data (``engine.reads``: ``import``) of every registered person its
    rows name: the file holds their references. ``actor``: who gets it (default: the engine's reader);
    ``written`` False (a dry run, a refused all-or-nothing import): the persons its rows made were not kept."""
    data = report_file(content, filename, report, delimiter=delimiter)
    engine.reads.shown("import", report_persons(report, written=written), actor=actor)
    return data


def report_persons(report: Sequence[Mapping[str, Any]], *, written: bool = True) -> list[str]:
    """The persons a report's rows name (the person found or made; ``written`` False: found only)."""
    found = []
    for row in report:
        made = set(row.get("ids") or ())
        for value in (row.get("person"), *made):
            if isinstance(value, str) and value.startswith("person-") and (written or value not in made):
                found.append(value)
    return found


def _xlsx(lines: list[list[Any]]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Import")
    for line in lines:
        cells = []
        for value in line:
            cell = WriteOnlyCell(sheet, value=value)
            if isinstance(value, str) and value.startswith("="):
                cell.data_type = "s"  # text, never a formula
            elif isinstance(value, date):
                cell.number_format = "DD.MM.YYYY"
            cells.append(cell)
        sheet.append(cells)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def iter_outcomes(view: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The rows of an import's view."""
    yield from view.get("rows", [])
