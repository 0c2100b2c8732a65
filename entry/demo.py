"""``mpoxflow demo``: a small outbreak on a throwaway simulated-clock SQLite database, run through its timers
and printed as a timeline of every transition with its actor and rule."""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

from engine.bootstrap import init_database, open_engine
from engine.core import Engine
from entry.parsing import parse_instant
from persistence.database import Database
from scheduler.firing import advance_simulated_clock
from workflows.calendar import to_local

START = "2025-03-03T08:00:00+01:00"


def _at(engine: Engine, instant: str) -> None:
    advance_simulated_clock(engine, parse_instant(instant, "demo"))


def _story(engine: Engine) -> None:
    d = date.fromisoformat
    anna, jonas = "staff:anna", "staff:jonas"
    p1 = engine.add_person(ref="DEMO-0001", born=d("1988-05-02"), actor=anna)["id"]
    p2 = engine.add_person(ref="DEMO-0002", born=d("1995-11-17"), actor=anna)["id"]
    p3 = engine.add_person(ref="DEMO-0003", born=d("1979-01-30"), immunocompromised=True, actor=jonas)["id"]

    # Monday: a suspected case and a second suspicion the same morning.
    c1 = engine.open("case", "open", person=p1, actor=anna, reason="seen at dermato-venereology", data={
        "onset": d("2025-02-28"), "symptoms": ["rash", "fever"], "criteria": ["msm", "multiple_partners"]})["id"]
    c2 = engine.open("case", "open", person=p2, actor=anna, reason="referred by GP", data={
        "onset": d("2025-03-02"), "symptoms": ["lymphadenopathy", "fatigue"], "criteria": ["travel"]})["id"]
    _at(engine, "2025-03-03T10:30:00+01:00")
    engine.apply(c1, "confirm", data={"pcr_on": d("2025-03-03"), "clade": "IIb"}, actor=anna,
                 reason="PCR positive")
    _at(engine, "2025-03-03T11:00:00+01:00")
    engine.apply(c1, "notify", data={"channel": "phone"}, actor=anna, reason="phoned STPS")
    engine.apply(c1, "isolate", data={"mode": "home"}, actor=anna, reason="general symptoms: home isolation")
    # Tuesday: c2's PCR is negative; c1's written notification was forgotten and goes overdue at 10:30.
    _at(engine, "2025-03-04T09:00:00+01:00")
    engine.apply(c2, "discard", actor=jonas, reason="PCR negative")
    _at(engine, "2025-03-04T14:00:00+01:00")
    engine.apply(c1, "notify", data={"channel": "written"}, actor=anna, reason="SEI2 sent late")
    # Wednesday evening: a case confirmed after working hours elsewhere, registered directly.
    _at(engine, "2025-03-05T18:30:00+01:00")
    c3 = engine.open("case", "open_confirmed", person=p3, actor=jonas, reason="PCR positive, immunocompromised",
                     data={"onset": d("2025-03-01"), "pcr_on": d("2025-03-05"), "symptoms": ["rash", "proctitis"],
                           "criteria": []})["id"]
    engine.apply(c3, "notify", data={"channel": "phone"}, actor=jonas, reason="phoned STPS on-call")
    engine.apply(c3, "isolate", data={"mode": "hospital"}, actor=jonas, reason="admitted, infection medicine")
    engine.apply(c3, "notify", data={"channel": "written"}, actor=jonas, reason="SEI2")
    # Healing, then twelve weeks of condom advice (§4.1) close both cases on their own.
    _at(engine, "2025-03-20T12:00:00+01:00")
    engine.apply(c1, "heal", data={"on": d("2025-03-20")}, actor=anna, reason="scabs fallen off")
    _at(engine, "2025-04-02T12:00:00+02:00")
    engine.apply(c3, "heal", data={"on": d("2025-04-01")}, actor=jonas, reason="discharged healed")
    _at(engine, "2025-07-01T00:00:00+02:00")


def run_demo(directory: str | None = None) -> dict[str, Any]:
    """Run the story; return the timeline (the audit log) and its text."""
    with tempfile.TemporaryDirectory(prefix="mpoxflow-demo-") as scratch:
        url = f"sqlite:///{Path(directory or scratch) / 'demo.db'}"
        init_database(Database(url), parse_instant(START, "demo"))
        engine = open_engine(url)
        _story(engine)
        timeline = engine.audit()
        cases = engine.list("case")
        engine.db.dispose()
    lines = ["mpoxflow demo: a simulated outbreak, every transition with its actor and rule", ""]
    for e in timeline:
        when = datetime.fromisoformat(e["at"])
        change = (f"{e['from'] or '∅'} → {e['to'] or '∅'}" if e["from"] != e["to"]
                  else f"stays {e['to']}" if e["to"] else "registered")
        lines.append(
            f"{to_local(when):%Y-%m-%d %H:%M %z}  {e['object']:<9} {e['trigger']:<25} {change:<24} "
            f"{e['actor']:<32} {e['rule'] or ''}"
        )
    lines += ["", "final states: " + ", ".join(f"{c['id']} {c['state']}" for c in cases)]
    return {"timeline": timeline, "cases": cases, "text": "\n".join(lines)}
