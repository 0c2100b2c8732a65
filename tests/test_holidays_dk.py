"""Danish public holidays: the table kept in ``engine.holidays_dk`` is what the ``holidays`` library answers, and
years outside it are asked of the library."""

from __future__ import annotations

from datetime import date, timedelta

from holidays.countries.denmark import Denmark

from engine import holidays_dk
from engine.holidays_dk import FIRST_YEAR, LAST_YEAR, danish_holiday


def test_the_table_is_what_the_library_answers():
    """Every day of every year the table holds is a holiday by the table exactly when it is by the library. On a
    failure, replace ``TABLE``'s text in engine/holidays_dk.py with ``library_table()``'s."""
    assert holidays_dk.TABLE.strip() == holidays_dk.library_table()
    assert sorted(holidays_dk._ROWS) == list(range(FIRST_YEAR, LAST_YEAR + 1))
    for year in range(FIRST_YEAR, LAST_YEAR + 1):
        library = set(Denmark(years=year))
        day, found = date(year, 1, 1), set()
        while day.year == year:
            if danish_holiday(day):
                found.add(day)
            day += timedelta(days=1)
        assert found == library, year
        assert 10 <= len(found) <= 11, year


def test_known_holidays_and_years_outside_the_table():
    assert danish_holiday(date(2025, 4, 17))  # Skærtorsdag
    assert danish_holiday(date(2025, 6, 9))  # Anden pinsedag
    assert not danish_holiday(date(2025, 6, 5))  # Grundlovsdag: not a public holiday (the library's optional)
    assert danish_holiday(date(2023, 5, 5))  # Store bededag, the last one
    assert not danish_holiday(date(2024, 4, 26))  # abolished from 2024
    for year in (1900, FIRST_YEAR - 1, LAST_YEAR + 1):
        assert holidays_dk._year(year) == frozenset(Denmark(years=year)), year
        assert danish_holiday(date(year, 12, 25)) and not danish_holiday(date(year, 12, 27))
