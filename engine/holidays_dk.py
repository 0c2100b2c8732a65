"""Danish public holidays, for the §3.1 daytime window ("straks, inden for dagstid"): the ``holidays`` library's
calendar of Denmark (Easter, Ascension and Whitsun move each year), asked one year at a time and kept.

The library is imported on first use, and only its Danish calendar: importing the whole package costs about half a
second, which every command would pay before it starts; only a confirmation (and its phone deadline) needs it.
"""

from __future__ import annotations

from datetime import date
from functools import cache


@cache
def _year(year: int) -> frozenset[date]:
    from holidays.countries.denmark import Denmark

    return frozenset(Denmark(years=year))  # type: ignore[no-untyped-call]


def danish_holiday(day: date) -> bool:
    """Is ``day`` a Danish public holiday (helligdag)?"""
    return day in _year(day.year)
