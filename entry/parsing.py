"""Turning what people type into typed values, with messages that say what to type instead.
Shared by every entry point so the CLI and HTTP accept the same things."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from workflows.calendar import DANISH
from workflows.errors import UsageError, field
from workflows.limits import (  # noqa: F401  (the shared limits, re-exported for the entry points)
    MAX_DAYS,
    MAX_HOURS,
    MAX_LIMIT,
    MAX_NAME,
    MAX_NOTE,
    MAX_REF,
    check_count,
    check_instant,
    shown,
)


def parse_date(text: str, what: str) -> date:
    """A Danish calendar date, ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError as error:
        raise UsageError(f"{what} '{text[:40]}' is not a real date: use YYYY-MM-DD, e.g. 2025-03-14") from error


def day_bound(text: str, name: str, *, end: bool = False) -> datetime:
    """A Danish day, ``YYYY-MM-DD``, as the instant it starts (``end``: the next day's 00:00, so that the day is
    whole, a 23- or 25-hour day at a clock change too). UsageError naming the field ``name`` (each entry point
    names it its way: ``--since``, ``since``)."""
    what = field(name)
    day = parse_date(text, what)
    refused = UsageError(f"{what} {day.isoformat()} is out of range: give a date from 1900 to 2199")
    try:
        bound = datetime.combine(day + timedelta(days=1) if end else day, time(0, 0), tzinfo=DANISH).astimezone(UTC)
        return check_instant(bound, what)
    except (OverflowError, ValueError, UsageError):
        raise refused from None


def parse_instant(text: str, what: str) -> datetime:
    """An ISO 8601 instant; without an offset it is read as Danish local time, and a bare date as 00:00."""
    raw = text.strip()
    try:
        if len(raw) == 10:
            return check_instant(datetime.combine(date.fromisoformat(raw), time(0, 0), tzinfo=DANISH), what)
        value = datetime.fromisoformat(raw)
    except ValueError as error:
        raise UsageError(
            f"{what} '{text[:40]}' is not an instant: use ISO 8601, e.g. 2025-03-14T09:00:00+01:00"
        ) from error
    return check_instant(value if value.tzinfo is not None else value.replace(tzinfo=DANISH), what)


def parse_list(text: str | None, allowed: Iterable[str], what: str) -> list[str]:
    """A comma-separated list whose items must each be one of ``allowed``; order kept, duplicates dropped."""
    if text is None:
        return []
    allowed = tuple(allowed)
    items: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item not in allowed:
            raise UsageError(f"unknown {what} '{item}': use a comma-separated list of {', '.join(allowed)}")
        if item not in items:
            items.append(item)
    return items


def parse_choice(text: str, allowed: Iterable[str], what: str) -> str:
    allowed = tuple(allowed)
    if text not in allowed:
        raise UsageError(f"unknown {what} '{shown(text)}': use one of {', '.join(allowed)}")
    return text


#: The longest path a command writes to (one the system could not open anyway is refused before anything is read).
MAX_PATH = 4096


def new_file(path: str, flag: str, what: str) -> Any:
    """The path of a file a command writes that is not there yet (``what`` is never written over a file: it may
    hold personal data). UsageError naming ``flag`` for an empty, overlong or NUL path, an existing file or a folder
    that is not there, before anything is read or recorded."""
    from pathlib import Path

    if "\x00" in path or not path.strip() or len(path) > MAX_PATH:
        raise UsageError(f"{flag}: give the path of a new file")
    target = Path(path)
    if target.exists():
        raise UsageError(f"{flag} {shown(path)} exists already: {what} is never written over a file; give a new "
                         "file name")
    if not target.parent.is_dir():
        raise UsageError(f"{flag} {shown(path)}: its folder does not exist")
    return target
