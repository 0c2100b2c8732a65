"""``mpoxflow demo``: a small outbreak on a throwaway simulated-clock SQLite database, run through its timers
and printed as a timeline of every transition with its actor and rule.

The demo's organisation (issue 17) is the national response's: Styrelsen for Patientsikkerhed (STPS) with its two
contact-tracing teams, and the five regions, each with its infection-medicine department(s), three with a
vaccination clinic. The case workers work at Hvidovre's infection medicine (a case is placed in its creator's
unit), STPS traces the contacts (the department's lead hands them over), the vaccination clinic gives the doses
(the courses' placement rule names it), and a suspected case found by tracing goes back to the department."""

from __future__ import annotations

import contextlib
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from engine import accounts
from engine.accounts import Accounts
from engine.bootstrap import init_database, open_engine
from engine.core import Engine
from entry.parsing import parse_instant
from persistence.database import Database
from scheduler.firing import advance_simulated_clock
from workflows.calendar import to_local
from workflows.errors import NotPermitted

START = "2025-03-03T08:00:00+01:00"
ADMIN = "admin:demo"
#: The demo's units, each under its parent (the root, ``Danmark``, is every database's).
STPS = "Styrelsen for Patientsikkerhed"
TRACING_EAST, TRACING_WEST = "STPS Smitteopsporing Øst", "STPS Smitteopsporing Vest"
CAPITAL = "Region Hovedstaden"
HVIDOVRE = "Hvidovre Hospital Infektionsmedicinsk Afdeling"
RIGSHOSPITALET = "Rigshospitalet Infektionsmedicinsk Klinik"
CLINIC = "Hvidovre Hospital Vaccinationsklinik"
UNITS = {
    STPS: "Danmark", TRACING_EAST: STPS, TRACING_WEST: STPS,
    CAPITAL: "Danmark", RIGSHOSPITALET: CAPITAL, HVIDOVRE: CAPITAL, CLINIC: CAPITAL,
    "Region Sjælland": "Danmark",
    "Sjællands Universitetshospital Roskilde Infektionsmedicinsk Afdeling": "Region Sjælland",
    "Region Syddanmark": "Danmark",
    "Odense Universitetshospital Infektionsmedicinsk Afdeling": "Region Syddanmark",
    "Odense Universitetshospital Vaccinationsklinik": "Region Syddanmark",
    "Region Midtjylland": "Danmark",
    "Aarhus Universitetshospital Infektionssygdomme": "Region Midtjylland",
    "Aarhus Universitetshospital Vaccinationsklinik": "Region Midtjylland",
    "Region Nordjylland": "Danmark",
    "Aalborg Universitetshospital Infektionsmedicinsk Afdeling": "Region Nordjylland",
}
#: The demo's users, their roles and units (``UNIT:lead``: a lead there): case workers and a doctor at Hvidovre's
#: infection medicine, the region's lead and a doctor at Rigshospitalet, STPS tracing staff and their lead, the
#: vaccination clinic's nurse, and an auditor who may only read.
USERS = {"staff:anna": ("staff", [HVIDOVRE]), "staff:jonas": ("staff", [HVIDOVRE]),
         "stps:maria": ("staff", [TRACING_EAST]), "nurse:holm": ("staff", [CLINIC]),
         "doctor:lund": ("staff", [HVIDOVRE]), "auditor:lis": ("auditor", ["Danmark"]),
         "region:karen": ("staff", [f"{CAPITAL}:lead"]), "region:peter": ("staff", [RIGSHOSPITALET]),
         "stps:ole": ("staff", [f"{STPS}:lead"]), "stps:sofie": ("staff", [TRACING_WEST])}
#: The password of every demo user in `mpoxflow demo --serve` (a throwaway training database).
DEMO_PASSWORD = "mpoxflow-demo"


def _at(engine: Engine, instant: str) -> None:
    advance_simulated_clock(engine, parse_instant(instant, "demo"))


def _story(engine: Engine) -> None:
    d = date.fromisoformat
    anna, jonas = "staff:anna", "staff:jonas"
    p1 = engine.add_person(ref="DEMO-0001", born=d("1988-05-02"), actor=anna)["id"]
    p2 = engine.add_person(ref="DEMO-0002", born=d("1995-11-17"), actor=anna)["id"]
    p3 = engine.add_person(ref="DEMO-0003", born=d("1979-01-30"), immunocompromised=True, actor=jonas)["id"]
    partner = engine.add_person(ref="DEMO-0004", born=d("1990-07-12"), actor=anna)["id"]
    flatmate = engine.add_person(ref="DEMO-0005", born=d("1985-02-03"), actor=anna)["id"]
    colleague = engine.add_person(ref="DEMO-0006", born=d("1972-09-21"), actor=anna)["id"]
    older = engine.add_person(ref="DEMO-0007", born=d("1965-04-18"), actor=jonas)["id"]
    karen, ole = "region:karen", "stps:ole"

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
    # Contact tracing by STPS (§5.2): the case consents; three close contacts (§5.1) with their Table 1 risk.
    engine.apply(c1, "consent", data={"tracing": True}, actor=anna, reason="consents to STPS tracing")
    k_partner = engine.open("contact", "add", person=partner, actor=anna, reason="named by case-1", data={
        "case": c1, "exposed": d("2025-03-01"), "kind": "sexual"})["id"]
    k_flatmate = engine.open("contact", "add", person=flatmate, actor=anna, reason="shares the flat", data={
        "case": c1, "exposed": d("2025-03-02"), "kind": "household"})["id"]
    k_colleague = engine.open("contact", "add", person=colleague, actor=anna, reason="same office", data={
        "case": c1, "exposed": d("2025-02-28"), "kind": "face_to_face"})["id"]
    # The contacts are opened in the case's unit; the region's lead hands them over to STPS's tracing team (§5.2),
    # two of them to its tracer, the third to the team's pool, where the team's lead deals it out.
    engine.transfer([k_partner, k_colleague], unit=TRACING_EAST, user="stps:maria", actor=karen,
                    reason="contact tracing by STPS (§5.2)")
    engine.transfer([k_flatmate], unit=TRACING_EAST, actor=karen, reason="contact tracing by STPS (§5.2)")
    engine.assign([k_flatmate], user="stps:maria", actor=ole, reason="the tracer of case-1's contacts")
    engine.apply(k_partner, "inform", actor="stps:maria", reason="phoned")
    engine.apply(k_colleague, "inform", actor="stps:maria", reason="phoned")
    # Tuesday: c2's PCR is negative; c1's written notification was forgotten: missed at 10:30 (never done);
    # the late SEI2 at 14:00 resolves it as done late.
    _at(engine, "2025-03-04T09:00:00+01:00")
    engine.apply(c2, "discard", actor=jonas, reason="PCR negative")
    _at(engine, "2025-03-04T14:00:00+01:00")
    engine.apply(c1, "notify", data={"channel": "written"}, actor=anna, reason="SEI2 sent late")
    engine.apply(c1, "sample_sent", data={"on": d("2025-03-04")}, actor=anna, reason="to SSI for sequencing (§2.4)")
    # The flatmate was informed a day late, and slept at the flat again: the monitoring is extended (§5.5).
    engine.apply(k_flatmate, "inform", actor="stps:maria", reason="reached on the second try")
    engine.apply(k_flatmate, "expose", data={"exposed": d("2025-03-04"), "kind": "household"}, actor="stps:maria",
                 reason="stayed another night")
    # PEP for the flatmate inside the optimal 4 days (§6.2), off-label: consent, indication, justification. STPS
    # refers the contact to infection medicine for the assessment; the course goes to the vaccination clinic.
    engine.transfer([k_flatmate], unit=HVIDOVRE, user="doctor:lund", actor=ole,
                    reason="PEP assessment at infection medicine (§6.2)")
    pep = engine.open("course", "offer", person=flatmate, actor="doctor:lund", reason="assessed at infection medicine",
                      data={"indication": "pep", "contact": k_flatmate, "criteria": [],
                            "assessed_by": "doctor:lund"})["id"]
    engine.apply(pep, "dose", actor="nurse:holm", reason="dose 1", data={
        "on": d("2025-03-04"), "consent": True, "indication_note": "household contact, high risk (Table 1)",
        "justification": "within 4 days of exposure", "assessed_by": None})
    # PrEP for a man born 1965 (§6.1): counted as smallpox-vaccinated, so one dose is enough (§6.4).
    prep = engine.open("course", "offer", person=older, actor="doctor:lund", reason="PrEP consultation", data={
        "indication": "prep", "contact": None, "criteria": ["msm_two_partners_12w"], "assessed_by": None,
        "criterion_on": d("2025-02-15")})["id"]
    engine.apply(prep, "dose", actor="nurse:holm", reason="the one dose", data={
        "on": d("2025-03-04"), "consent": False, "indication_note": None, "justification": None,
        "assessed_by": None})
    # Wednesday evening: a case confirmed after working hours elsewhere, registered directly.
    _at(engine, "2025-03-05T18:30:00+01:00")
    c3 = engine.open("case", "open_confirmed", person=p3, actor=jonas, reason="PCR positive, immunocompromised",
                     data={"onset": d("2025-03-01"), "pcr_on": d("2025-03-05"), "symptoms": ["rash", "proctitis"],
                           "criteria": []})["id"]
    engine.assign([c3], user=jonas, actor=jonas, reason="my admission")
    engine.apply(c3, "notify", data={"channel": "phone"}, actor=jonas, reason="phoned STPS on-call")
    engine.apply(c3, "isolate", data={"mode": "hospital"}, actor=jonas, reason="admitted, infection medicine")
    engine.apply(c3, "notify", data={"channel": "written"}, actor=jonas, reason="SEI2")
    engine.apply(c3, "sample_sent", data={"on": d("2025-03-05")}, actor=jonas, reason="to SSI for sequencing")
    # Friday: the partner develops symptoms and becomes a suspected case himself (§5.5, §2).
    _at(engine, "2025-03-07T10:00:00+01:00")
    c4 = engine.apply(k_partner, "symptoms", data={"onset": d("2025-03-07"),
                                                   "symptoms": ["rash", "lymphadenopathy"]},
                      actor="stps:maria", reason="called the hotline")["became_case"]
    # The new suspected case is opened in the tracer's unit; STPS's lead hands it to the department (§2).
    engine.transfer([c4], unit=HVIDOVRE, user=anna, actor=ole, reason="suspected case: to infection medicine")
    _at(engine, "2025-03-08T09:00:00+01:00")
    engine.apply(c4, "confirm", data={"pcr_on": d("2025-03-08"), "clade": "IIb"}, actor=anna, reason="PCR positive")
    engine.apply(c4, "notify", data={"channel": "phone"}, actor=anna, reason="phoned STPS")
    engine.apply(c4, "notify", data={"channel": "written"}, actor=anna, reason="SEI2")
    engine.apply(c4, "sample_sent", data={"on": d("2025-03-08")}, actor=anna, reason="to SSI for sequencing")
    engine.apply(c4, "isolate", data={"mode": "home"}, actor=anna,
                 reason="swollen lymph nodes, a general symptom: self-isolation at home (§4.1)")
    # Healing, then twelve weeks of condom advice (§4.1) close both cases on their own.
    _at(engine, "2025-03-20T12:00:00+01:00")
    engine.apply(c1, "heal", data={"on": d("2025-03-20")}, actor=anna, reason="scabs fallen off")
    # The colleague's PEP assessment was never recorded: its deadline (day 14) passed, so it is missed, never
    # done, until someone records what happened.
    missed = next(t["id"] for t in engine.show(k_colleague)["timers"] if t["status"] == "missed")
    engine.resolve_task(missed, "declined", actor="stps:maria",
                        reason="PEP was offered by phone on 5 March; the colleague declined it")
    _at(engine, "2025-03-28T12:00:00+01:00")
    engine.apply(c4, "heal", data={"on": d("2025-03-28")}, actor=anna, reason="scabs fallen off")
    # Dose 2 of the flatmate's PEP, 28 days after dose 1 (§6.4).
    _at(engine, "2025-04-01T10:00:00+02:00")
    engine.apply(pep, "dose", actor="nurse:holm", reason="dose 2", data={
        "on": d("2025-04-01"), "consent": False, "indication_note": None, "justification": None,
        "assessed_by": None})
    _at(engine, "2025-04-02T12:00:00+02:00")
    engine.apply(c3, "heal", data={"on": d("2025-04-01")}, actor=jonas, reason="discharged healed")
    _at(engine, "2025-07-01T00:00:00+02:00")


def build_demo(url: str, password: str | None = None) -> Engine:
    """The demo database at ``url``: its users (with ``password`` for the web application, if given) and the
    story run through its timers."""
    with Database(url) as fresh:
        init_database(fresh, parse_instant(START, "demo"))
    engine = open_engine(url, first_admin=ADMIN)
    for name, parent in UNITS.items():
        engine.add_unit(name, parent=parent, actor=ADMIN, reason="the national mpox response")
    # Doses are given at the vaccination clinic: a course goes there, whoever offers it (§6).
    engine.set_placement("course", "unit", unit=CLINIC, actor=ADMIN, reason="doses at the vaccination clinic")
    hashed = accounts.password_hash.hash(password) if password else None
    for name, (role, units) in USERS.items():
        engine.add_user(name, role, actor=ADMIN, reason="demo team", password_hash=hashed, units=units)
    if password:
        Accounts(engine).set_password(ADMIN, password, actor=ADMIN, reason="demo team")
    _story(engine)
    return engine


def _open_work(engine: Engine) -> None:
    """For the web application: a new outbreak on the demo's last day, so the worklist, the case pages and the
    calendar have work in them (a confirmed case not yet notified, contacts to inform, PEP windows, a dose 2): the
    contacts in the department's pool, to be handed over to STPS."""
    d = date.fromisoformat
    anna, maria = "staff:anna", "stps:maria"
    day = to_local(engine.clock.now()).date()
    case_person = engine.add_person(ref="DEMO-0101", born=d("1991-03-09"), actor=anna)["id"]
    case = engine.open("case", "open", person=case_person, actor=anna, reason="seen at the clinic", data={
        "onset": day - timedelta(days=3), "symptoms": ["rash", "fever"], "criteria": ["msm"]})["id"]
    engine.apply(case, "confirm", data={"pcr_on": day, "clade": "IIb"}, actor=anna, reason="PCR positive")
    engine.apply(case, "consent", data={"tracing": True}, actor=anna, reason="consents to STPS tracing")
    for n, (kind, days_ago) in enumerate((("sexual", 2), ("household", 1), ("intact_skin", 3)), start=1):
        contact_person = engine.add_person(ref=f"DEMO-01{10 + n}", born=d("1990-01-01"), actor=maria)["id"]
        engine.open("contact", "add", person=contact_person, actor=anna, reason="named by the case", data={
            "case": case, "exposed": day - timedelta(days=days_ago), "kind": kind})
    suspected = engine.add_person(ref="DEMO-0120", born=d("1983-08-15"), actor=anna)["id"]
    engine.open("case", "open", person=suspected, actor=anna, reason="referred by GP", data={
        "onset": day - timedelta(days=1), "symptoms": ["lymphadenopathy", "fever"], "criteria": ["travel"]})


def serve_demo(host: str, port: int, password: str = DEMO_PASSWORD) -> None:
    """``mpoxflow demo --serve``: the demo's data in the web application, on a throwaway database."""
    import uvicorn

    from entry.web.server import create_app

    with tempfile.TemporaryDirectory(prefix="mpoxflow-demo-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'demo.db'}"
        engine = build_demo(url, password)
        _open_work(engine)
        engine.db.dispose()
        print(f"mpoxflow demo: http://{host}:{port}/  log in as staff:anna (staff at {HVIDOVRE}), region:karen "
              f"(lead of {CAPITAL}), stps:maria (STPS tracing), auditor:lis (auditor) or admin:demo (admin), password "
              f"{password!r}. Ctrl-C stops it and deletes the data.", flush=True)
        uvicorn.run(create_app(url), host=host, port=port, log_level="warning")


def run_demo(directory: str | None = None) -> dict[str, Any]:
    """Run the story; return the timeline (the audit log) and its text."""
    with tempfile.TemporaryDirectory(prefix="mpoxflow-demo-") as scratch:
        url = f"sqlite:///{Path(directory or scratch) / 'demo.db'}"
        engine = build_demo(url)
        with contextlib.suppress(NotPermitted):  # an auditor reads, never changes: the refusal itself is audited
            engine.apply("case-1", "discard", actor="auditor:lis", reason="trying to change a case")
        timeline = engine.audit()
        cases = engine.list("case")
        contacts = engine.list("contact")
        courses = engine.list("course")
        verified = engine.audit_verify()
        replayed = engine.audit_replay()
        units = engine.list_units()
        users = {u["id"]: u["name"] for u in engine.users()}
        engine.db.dispose()
    names = {u["id"]: u["name"] for u in units}
    lines = ["mpoxflow demo: a simulated outbreak, every transition with its actor and rule", ""]
    for e in timeline:
        when = datetime.fromisoformat(e["at"])
        outcome = (e["data"] or {}).get("outcome") if e["trigger"] != "resolve" else None
        change = ("MISSED: not done in time" if outcome == "missed"
                  else f"task {e['data']['outcome']}" if e["trigger"] == "resolve"
                  else f"{e['from'] or '∅'} → {e['to'] or '∅'}" if e["from"] != e["to"]
                  else f"stays {e['to']}" if e["to"] else "registered" if e["trigger"] in ("register", "add")
                  else "nothing changed")
        if any(d.get("outcome") == "done-late" for d in e["timers_done"]):
            change = "done late: " + change
        if e["object"].startswith("unit-") and e["trigger"] == "add":
            change = names.get(e["object"], e["object"])
        if e["trigger"] in ("assign", "transfer"):
            data = e["data"] or {}
            change = f"→ {names.get(data.get('unit'), data.get('unit'))}" + (
                f", {users.get(data['assignee'], data['assignee'])}" if data.get("assignee") else ", its pool")
        lines.append(
            f"{to_local(when):%Y-%m-%d %H:%M %z}  {e['object']:<10} {e['trigger']:<26} {change:<32} "
            f"{e['actor'] + ' (' + e['role'] + ')':<40} {e['rule'] or ''}"
        )
    lines += ["", "final states: " + ", ".join(f"{c['id']} {c['state']}" for c in cases + contacts + courses)]
    lines.append(f"audit log: {verified['entries']} entries, hash chains "
                 + ("intact" if verified["intact"] else f"BROKEN at seq {verified['first_bad_seq']}")
                 + "; replay " + ("matches the tables" if replayed["matches"]
                                  else f"differs in {len(replayed['differences'])} places"))
    return {"timeline": timeline, "cases": cases, "contacts": contacts, "courses": courses, "verify": verified,
            "replay": replayed, "units": units, "text": "\n".join(lines)}
