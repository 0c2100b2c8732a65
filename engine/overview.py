"""The outbreak at a glance (issue 21 item 1): the overview's figures as numbers, for the reader's units, at the
clock's now, in Danish calendar days (``workflows.calendar``).

Each figure is a ``Figure``: its name, its columns and its rows (a list of dicts), from one or two set-based
queries (grouped in the database; never one per object):

* ``curve``: cases by ISO week of symptom onset (a case without onset: its PCR sample date), one column per state
  (discarded cases are no cases: left out), ``suspected`` among them; ``curve_clade``: the same weeks by clade;
* ``monitoring``: contacts under monitoring per day over the coming 3 weeks (their pending ``monitoring_ends``
  falling after that day: it already follows each contact's definition, and only exposed or monitored contacts
  have one pending);
* ``pep``: the PEP windows closing in the next 72 hours (pending ``pep_window_closes`` of contacts and courses);
* ``doses``: doses 2 due per day for 8 weeks (the calendar's count, ``engine.queries._due_per_day``);
* ``missed``: deadlines missed per ISO week of their due instant, and how many of them are not resolved yet.

``csv_text`` writes a figure as CSV (UTF-8, a header row; the column names given, e.g. Danish).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, select

from engine.queries import _due_per_day
from engine.units import reader_scope
from engine.uow import Runtime
from engine.views import instant
from persistence.models import Case, Timer
from persistence.repository import Repository
from workflows.calendar import local_date, local_midnight

CASES: Table = Case.__table__  # type: ignore[assignment]
TIMERS: Table = Timer.__table__  # type: ignore[assignment]

#: The case states the curve stacks, in the order drawn (bottom first); discarded cases are left out (§2.2.1).
CURVE_STATES = ("suspected", "confirmed", "isolated", "healed", "closed", "deceased")
#: The clades the second view stacks (``workflows.case.CLADES``), and ``unknown`` for a case without one yet.
CURVE_CLADES = ("I", "Ia", "Ib", "II", "IIa", "IIb", "unknown")
MONITORING_DAYS = 21
#: The farthest a monitoring end can lie ahead of today (any definition's period after a last exposure today).
MAX_MONITORING_DAYS = 400
PEP_HOURS = 72
DOSE_WEEKS = 8
#: The figures, in the order the page and the report show them.
NAMES = ("curve", "curve_clade", "monitoring", "pep", "doses", "missed")


@dataclass(frozen=True)
class Figure:
    """One figure's numbers: ``rows`` of the ``columns`` (keys), and what else the drawing needs (``meta``)."""

    name: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)


def iso_week(day: date) -> str:
    """``2025-W13``: the ISO year and week of a Danish calendar day."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _weeks(first: date, last: date) -> list[date]:
    """The Mondays from ``first``'s week to ``last``'s."""
    monday = first - timedelta(days=first.weekday())
    weeks = []
    while monday <= last:
        weeks.append(monday)
        monday += timedelta(days=7)
    return weeks


def _units_clause(column: Any, units: list[int] | None) -> list[Any]:
    return [] if units is None else [column.in_(units)]


class Overview:
    """The overview's figures over ``runtime``'s database, for ``runtime.viewer``'s units (all: no viewer)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def figures(self, *, pep_rows: int | None = None) -> dict[str, Figure]:
        """Every figure by name (``NAMES``), from one read-only session. ``pep_rows``: list at most so many PEP
        windows, the soonest (a page's table); their counts per closing instant (``meta["closing"]``) and
        ``meta["total"]`` are of them all."""
        now = self.runtime.clock.now()
        today = local_date(now)
        with self.runtime.db.reading() as session:
            repo = Repository(session)
            scope = reader_scope(repo, self.runtime.viewer)
            units = None if scope is None else sorted(scope.units or ())
            curve, by_clade = self._curve(repo, today, units)
            return {"curve": curve, "curve_clade": by_clade, "monitoring": self._monitoring(repo, today, units),
                    "pep": self._pep(repo, now, units, pep_rows), "doses": self._doses(repo, today, units),
                    "missed": self._missed(repo, today, units)}

    # ---- the figures --------------------------------------------------------------------------------------

    def _curve(self, repo: Repository, today: date, units: list[int] | None) -> tuple[Figure, Figure]:
        day = func.coalesce(CASES.c.onset, CASES.c.pcr_on).label("day")
        query = (select(day, CASES.c.state, CASES.c.clade, func.count().label("n"))
                 .where(CASES.c.state != "discarded", *_units_clause(CASES.c.unit_id, units))
                 .group_by(day, CASES.c.state, CASES.c.clade))
        by_state: dict[date, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CURVE_STATES, 0))
        by_clade: dict[date, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CURVE_CLADES, 0))
        undated = 0
        for row in repo.session.execute(query):
            if row.day is None:
                undated += int(row.n)
                continue
            onset = row.day if isinstance(row.day, date) else date.fromisoformat(str(row.day))
            monday = onset - timedelta(days=onset.weekday())
            by_state[monday][row.state] += int(row.n)
            clade = row.clade if row.clade in CURVE_CLADES else "unknown"
            by_clade[monday][clade] += int(row.n)
        weeks = _weeks(min(by_state), max(max(by_state), today)) if by_state else []
        meta = {"undated": undated}
        empty_states, empty_clades = dict.fromkeys(CURVE_STATES, 0), dict.fromkeys(CURVE_CLADES, 0)
        states = Figure("curve", ("week", "from", *CURVE_STATES, "total"), [
            {"week": iso_week(w), "from": w.isoformat(), **by_state.get(w, empty_states),
             "total": sum(by_state.get(w, empty_states).values())} for w in weeks], meta)
        clades = Figure("curve_clade", ("week", "from", *CURVE_CLADES, "total"), [
            {"week": iso_week(w), "from": w.isoformat(), **by_clade.get(w, empty_clades),
             "total": sum(by_clade.get(w, empty_clades).values())} for w in weeks], meta)
        return states, clades

    def _monitoring(self, repo: Repository, today: date, units: list[int] | None) -> Figure:
        """A contact counts on day D when its pending ``monitoring_ends`` falls after D (at or after 00:00 on D+1:
        a timer at 00:00 on D+1 makes D its last day of monitoring). Only an exposed or monitored contact has one
        pending: every transition out of those states cancels it (§5.5: symptoms) or is its firing (released), so
        the timers alone are counted, grouped by due instant in the database (the calendar's query,
        ``Repository.timer_forecast``: each end falls at a local midnight, so there are as many groups as days)."""
        days = [today + timedelta(days=i) for i in range(MONITORING_DAYS)]
        since = local_midnight(days[0] + timedelta(days=1))
        # No monitoring ends later than its period after the last exposure, which is not after today.
        until = local_midnight(today + timedelta(days=MAX_MONITORING_DAYS))
        ends = list(repo.timer_forecast("contact", "monitoring_ends", since, until, units))
        rows = []
        for day in days:
            after = local_midnight(day + timedelta(days=1))
            rows.append({"date": day.isoformat(), "contacts": sum(n for at, n in ends if at >= after)})
        return Figure("monitoring", ("date", "contacts"), rows)

    def _pep(self, repo: Repository, now: datetime, units: list[int] | None, limit: int | None) -> Figure:
        until = now + timedelta(hours=PEP_HOURS)
        found = []
        counted: dict[datetime, dict[str, int]] = defaultdict(lambda: {"contact": 0, "course": 0})
        for kind in ("contact", "course"):  # one query each: equalities first, as ``ix_timers_forecast`` serves
            for at, n in repo.timer_forecast(kind, "pep_window_closes", now, until, units):
                counted[at][kind] += n
            query = (select(TIMERS.c.id, TIMERS.c.object_kind, TIMERS.c.object_id, TIMERS.c.due_at)
                     .where(TIMERS.c.object_kind == kind, TIMERS.c.name == "pep_window_closes",
                            TIMERS.c.status == "pending", TIMERS.c.due_at >= now, TIMERS.c.due_at < until,
                            *_units_clause(TIMERS.c.unit_id, units))
                     .order_by(TIMERS.c.due_at, TIMERS.c.id))
            found += list(repo.session.execute(query if limit is None else query.limit(limit)))
        shown: dict[datetime, tuple[str | None, str]] = {}  # each closing instant printed once (they are few)
        rows = []
        for row in sorted(found, key=lambda r: (r.due_at, r.id))[:limit]:
            if row.due_at not in shown:
                at = row.due_at
                shown[row.due_at] = (instant(at), local_date(at - timedelta(microseconds=1)).isoformat())
            closes_at, last_day = shown[row.due_at]
            rows.append({"object": f"{row.object_kind}-{row.object_id}", "kind": row.object_kind,
                         "closes_at": closes_at, "last_day": last_day, "timer": f"timer-{row.id}"})
        closing = [(instant(at), n["contact"], n["course"]) for at, n in sorted(counted.items())]
        return Figure("pep", ("object", "kind", "closes_at", "last_day", "timer"), rows,
                      {"from": instant(now), "until": instant(until), "closing": closing,
                       "total": sum(c + k for _, c, k in closing)})

    def _doses(self, repo: Repository, today: date, units: list[int] | None) -> Figure:
        days = [today + timedelta(days=i) for i in range(7 * DOSE_WEEKS)]
        due = _due_per_day(repo, "course", "dose2_due", days, units=units)
        return Figure("doses", ("date", "doses_due"), [{"date": d.isoformat(), "doses_due": n} for d, n in due.items()])

    def _missed(self, repo: Repository, today: date, units: list[int] | None) -> Figure:
        open_ = TIMERS.c.resolved_at.is_(None).label("open")
        query = (select(TIMERS.c.due_at, open_, func.count().label("n"))
                 .where(TIMERS.c.status == "missed", *_units_clause(TIMERS.c.unit_id, units))
                 .group_by(TIMERS.c.due_at, open_))
        missed: dict[date, list[int]] = defaultdict(lambda: [0, 0])
        for row in repo.session.execute(query):
            day = local_date(row.due_at)
            monday = day - timedelta(days=day.weekday())
            missed[monday][0] += int(row.n)
            if row.open:
                missed[monday][1] += int(row.n)
        weeks = _weeks(min(missed), max(max(missed), today)) if missed else []
        return Figure("missed", ("week", "from", "missed", "unresolved"), [
            {"week": iso_week(w), "from": w.isoformat(), "missed": missed[w][0] if w in missed else 0,
             "unresolved": missed[w][1] if w in missed else 0} for w in weeks])


def csv_text(figure: Figure, headers: Mapping[str, str] | None = None) -> str:
    """The figure as CSV: a header row (``headers``: each column's name, e.g. in Danish; else its key), then its
    rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([(headers or {}).get(c, c) for c in figure.columns])
    for row in figure.rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in figure.columns])
    return out.getvalue()
