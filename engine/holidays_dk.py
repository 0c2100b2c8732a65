"""Danish public holidays, for the §3.1 daytime window ("straks, inden for dagstid"): the ``holidays`` library's
calendar of Denmark (Easter, Ascension and Whitsun move each year), asked one year at a time and kept."""

from __future__ import annotations

from datetime import date
from functools import cache

import holidays


@cache
def _year(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("DK", years=year))


def danish_holiday(day: date) -> bool:
    """Is ``day`` a Danish public holiday (helligdag)?"""
    return day in _year(day.year)
