"""How a kind of object describes itself to the entry points: its command group and what the group is for, its
collection's name, the columns its list shows, the objects it belongs to, and what it puts on the calendar.

Each workflow module (and ``workflows.person``) declares one :class:`Profile`; ``workflows.registry`` collects
them, and the CLI's groups and ``list`` tables, the API's collections, the pages' navigation, an object page's
related objects and the calendar are made from them. Pure: the standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CalendarCount:
    """A pending timer counted per Danish day on the calendar: ``timer`` of the profile's kind, counted under
    ``key`` (``doses_due``). ``day_before``: the timer fires at 00:00 after the day it marks (the last day of a
    window, §5.5), so it counts for the day that ends there. ``legend`` and ``cell`` are the page's words (the
    legend says what is counted and cites the rule; the cell follows the day's number)."""

    timer: str
    key: str
    legend: str
    cell: str
    day_before: bool = False


@dataclass(frozen=True)
class Profile:
    """What an entry point needs to show a kind of object, besides its operations.

    ``group`` is the CLI's command group of its operations (``vaccine`` for courses) and ``summary`` that group's
    help; ``collection`` names it in lists, URLs and the API (``cases``), ``title`` in the pages' navigation.
    ``columns`` are the keys of the object's view a ``list`` table shows, in order. ``belongs_to`` names, by kind,
    the column that links an object to another (a contact's ``case_id``): the other object's page lists it.
    ``calendar``: the timers the calendar counts per day."""

    kind: str
    group: str
    summary: str
    collection: str
    title: str
    columns: tuple[str, ...]
    belongs_to: Mapping[str, str] = field(default_factory=dict)
    calendar: tuple[CalendarCount, ...] = ()
