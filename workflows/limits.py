"""The bounds of what mpoxflow accepts, in one place: the CLI's parsing (``entry.parsing``), the HTTP API's and the
pages' request bodies (``entry.web.operations``) and the engine (for callers of the Python API) all use these.

- Ids are ``kind-<ASCII digits>`` within the database's integer range (``MAX_ID``).
- Instants (``as_of``, ``since``, ``until``, ``clock advance``'s ``to``, ``simulated_clock``) lie between
  ``EARLIEST_INSTANT`` and ``LATEST_INSTANT``; the simulated clock cannot be moved past ``LATEST_INSTANT``, so no
  timer's due instant can overflow.
- Day and hour counts (``due``'s ``within``, ``clock advance``'s ``days`` and ``hours``) are at most ``MAX_DAYS`` /
  ``MAX_HOURS``; the ``limit`` of ``timers`` and ``audit`` between 1 and ``MAX_LIMIT``.
- Clinical dates: a birth date from ``EARLIEST_BIRTH``; onset, exposure, PCR, dose and the other event dates not
  more than ``CLINICAL_LOOKBACK_YEARS`` years before today.
- Text: one maximum length per field (``TEXT_LIMITS``, ``MAX_NOTE`` for any other free text); NUL and other control
  characters (except tab and newline in notes) are refused.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from workflows.errors import UsageError, because, field

#: PostgreSQL's INTEGER, the type of every id column.
MAX_ID = 2**31 - 1
EARLIEST_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(2200, 1, 1, tzinfo=UTC)
#: About 100 years.
MAX_DAYS = 36_600
MAX_HOURS = MAX_DAYS * 24
MAX_LIMIT = 100_000
EARLIEST_BIRTH = date(1900, 1, 1)
CLINICAL_LOOKBACK_YEARS = 5

#: A person's external reference (e.g. a CPR number): the column is 64 characters.
MAX_REF = 64
#: A person's name as the record keeps it: an assessor, who decided a discharge, a user name.
MAX_NAME = 128
#: A reason, a note, a justification: any other free text.
MAX_NOTE = 2000
TEXT_LIMITS: dict[str, int] = {
    "ref": MAX_REF, "actor": MAX_NAME, "label": MAX_NAME, "assessed_by": MAX_NAME, "decided_by": MAX_NAME,
    "name": MAX_NAME, "trigger": MAX_NAME, "reason": MAX_NOTE,
    # Units and users named on assignment and reading (issue 17).
    "unit": MAX_NAME, "parent": MAX_NAME, "in_unit": MAX_NAME, "user": MAX_NAME, "of_user": MAX_NAME, "as": MAX_NAME,
}
#: Free-text fields that may span lines.
MULTILINE = frozenset({"reason", "symptom_note", "assessment_note", "indication_note", "justification",
                       "special_reason"})
#: Data fields holding the date of a clinical event (checked against ``CLINICAL_LOOKBACK_YEARS``).
CLINICAL_DATES = frozenset({"onset", "exposed", "pcr_on", "on", "criterion_on", "last_dose_on",
                            "last_dose_elsewhere_on"})


def flag(name: str) -> str:
    """A field named in a refusal: each entry point renders it in its own terms (``--pcr-on``, ``pcr_on``)."""
    return field(name)


def shown(text: str, width: int = 40) -> str:
    """A value as an error message may repeat it: printable, and short (a megabyte is not echoed back)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text[:width]) + ("..." if len(text) > width else "")


def text_limit(field: str) -> int:
    return TEXT_LIMITS.get(field, MAX_NOTE)


def check_text(value: str, field: str) -> str:
    """UsageError for text longer than the field's limit or with control characters; the value is not echoed."""
    limit = text_limit(field)
    if len(value) > limit:
        raise UsageError(because("%(field)s is %(length)s characters long: at most %(limit)s", field=flag(field),
                                 length=len(value), limit=limit))
    allowed = "\t\n\r" if field in MULTILINE else ""
    for ch in value:
        if ch not in allowed and unicodedata.category(ch) in ("Cc", "Cs"):
            raise UsageError(because("%(field)s contains a control character (U+%(code)s): remove it",
                                     field=flag(field), code=f"{ord(ch):04X}"))
    return value


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def check_instant(value: datetime, what: str) -> datetime:
    try:
        inside = EARLIEST_INSTANT <= value <= LATEST_INSTANT
    except OverflowError:  # year 1 or 9999 with an offset: not comparable in UTC
        inside = False
    if not inside:
        raise UsageError(f"{what} {value.isoformat()} is out of range: give an instant from "
                         f"{EARLIEST_INSTANT.date()} to {LATEST_INSTANT.date()}")
    return value


def check_born(value: date, field: str = "born") -> date:
    if value < EARLIEST_BIRTH:
        raise UsageError(because("the birth date is before %(earliest)s: correct the date (%(field)s)",
                                 earliest=EARLIEST_BIRTH, field=flag(field)))
    return value


def check_clinical_date(value: date, field: str, today: date) -> date:
    earliest = _years_before(today, CLINICAL_LOOKBACK_YEARS)
    if value < earliest:
        raise UsageError(because("%(field)s %(value)s is more than %(years)s years ago (before %(earliest)s): "
                                 "correct the date", field=flag(field), value=value, years=CLINICAL_LOOKBACK_YEARS,
                                 earliest=earliest))
    return value


def check_count(value: int | None, what: str, *, low: int, high: int) -> int | None:
    if value is not None and not low <= value <= high:
        raise UsageError(f"{what} {value}: give a number from {low} to {high}")
    return value


def check_data(data: Mapping[str, Any], today: date) -> None:
    """Every text and date of a change's data, by field name (lists of text item by item)."""
    for name, value in data.items():
        if isinstance(value, str):
            check_text(value, name)
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, str):
                    check_text(item, name)
        elif isinstance(value, date) and not isinstance(value, datetime):
            if name == "born":
                check_born(value)
            elif name in CLINICAL_DATES:
                check_clinical_date(value, name, today)
