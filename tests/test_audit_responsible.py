"""Who was responsible, from the log alone (issue 17): after a case is assigned within its unit and then
transferred to another unit, the case as of an instant before, between and after each names the unit and the
assignee it had then (the engine on both backends, and the auditor's page); the desk filters by the acting unit
(the entries of users who acted through that unit or one below it) and shows each entry's unit, and the export
takes the same filter.
"""

from __future__ import annotations

import html
import io
import json
import re
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from engine.core import Engine
from workflows.calendar import DANISH
from workflows.errors import NotFound

ADMIN = "admin:test"
STAFF = "staff:test"
NURSE = "nurse:holm"
REGION = "Region Hovedstaden"
DEPARTMENT = "Hvidovre Hospital Infektionsmedicinsk Afdeling"
STPS = "Styrelsen for Patientsikkerhed"
#: The instants of the history, Copenhagen time: the case opened, assigned, transferred, then confirmed there.
OPENED = datetime(2025, 3, 3, 9, 0, tzinfo=DANISH)
ASSIGNED = datetime(2025, 3, 3, 10, 0, tzinfo=DANISH)
TRANSFERRED = datetime(2025, 3, 3, 11, 0, tzinfo=DANISH)
CONFIRMED = datetime(2025, 3, 3, 12, 0, tzinfo=DANISH)


def make_history(engine: Engine) -> dict[str, Any]:
    """The units, a nurse of the department, and a case opened by the staff member (placed in the root, their
    unit), assigned to them by the admin, transferred to the department's nurse, and confirmed by the nurse."""
    clock = engine.simulated_clock
    clock.set(OPENED - timedelta(minutes=30))
    region = engine.add_unit(REGION, parent="Danmark", actor=ADMIN)["id"]
    department = engine.add_unit(DEPARTMENT, parent=REGION, actor=ADMIN)["id"]
    stps = engine.add_unit(STPS, parent="Danmark", actor=ADMIN)["id"]
    engine.set_member(DEPARTMENT, NURSE, actor=ADMIN)
    engine.remove_member("Danmark", NURSE, actor=ADMIN)
    person = engine.add_person(ref="REF-RESPONSIBLE", actor=STAFF)["id"]
    clock.set(OPENED)
    case = engine.open("case", "open", person=person, actor=STAFF, data={
        "onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    clock.set(ASSIGNED)
    engine.assign([case], user=STAFF, actor=ADMIN, reason="the case worker on duty")
    clock.set(TRANSFERRED)
    engine.transfer([case], unit=DEPARTMENT, user=NURSE, actor=ADMIN, reason="treated at Hvidovre")
    clock.set(CONFIRMED)
    engine.apply(case, "confirm", data={"pcr_on": date(2025, 3, 3)}, actor=NURSE)
    users = {u["name"]: u["id"] for u in engine.users()}
    return {"case": case, "region": region, "department": department, "stps": stps, "users": users}


#: (instant, whose the case was then: the unit's key in the history and the assignee's name).
ANSWERS = [
    (OPENED + timedelta(minutes=1), "root", None),
    (ASSIGNED - timedelta(minutes=1), "root", None),
    (ASSIGNED + timedelta(minutes=1), "root", STAFF),
    (TRANSFERRED - timedelta(minutes=1), "root", STAFF),
    (TRANSFERRED + timedelta(minutes=1), "department", NURSE),
    (CONFIRMED + timedelta(hours=1), "department", NURSE),
]


def test_as_of_names_the_unit_and_the_assignee_before_between_and_after_an_assignment_and_a_transfer(
        engine: Engine) -> None:
    made = make_history(engine)
    units = {"root": "unit-1", "department": made["department"]}
    for when, unit, assignee in ANSWERS:
        view = engine.show(made["case"], as_of=when)
        assert (view["unit"], view["assignee"]) == (units[unit], made["users"].get(assignee)), when
    now = engine.show(made["case"])
    assert (now["unit"], now["assignee"], now["state"]) == (made["department"], made["users"][NURSE], "confirmed")
    assert engine.audit_verify()["intact"] and engine.audit_replay()["matches"]


def test_the_log_filters_by_the_acting_unit_and_below_it(engine: Engine) -> None:
    made = make_history(engine)
    # The nurse acts through the department alone: the confirm is the department's (and the region's, above it).
    for unit in (DEPARTMENT, REGION, made["region"]):
        page = engine.audit_page(unit=unit)["items"]
        assert [(e["trigger"], e["actor"], e["unit"]) for e in page] == [("confirm", NURSE, made["department"])]
    everything = engine.audit_page(limit=500)["items"]
    assert {e["unit"] for e in everything if e["actor"] in (ADMIN, STAFF)} == {"unit-1"}
    assert {e["seq"] for e in engine.audit_page(unit="Danmark", limit=500)["items"]} == \
        {e["seq"] for e in everything if e["unit"] is not None}
    assert engine.audit_page(unit=STPS)["items"] == []
    with pytest.raises(NotFound):
        engine.audit_page(unit="Region Atlantis")
    out = io.StringIO()
    assert engine.audit_export("jsonl", out, unit=DEPARTMENT) == 1
    assert [json.loads(line).get("trigger") for line in out.getvalue().splitlines()[1:]] == ["confirm"]


# ---- the pages ---------------------------------------------------------------------------------------------


def cell(page: str, cell_id: str) -> str:
    found = re.search(rf'id="{cell_id}"[^>]*>(.*?)</td>', page, re.S)
    assert found, page[-3000:]
    return html.unescape(re.sub(r"<[^>]+>", "", found[1])).strip()


def test_the_as_of_page_answers_who_was_responsible_in_danish(client_for: Any) -> None:
    engine: Engine = client_for().app.state.web.engine()
    made = make_history(engine)
    auditor = client_for("auditor:test")
    paths = {"root": "Danmark", "department": f"Danmark › {REGION} › {DEPARTMENT}"}
    for when, unit, assignee in ANSWERS:
        page = auditor.get("/audit/as-of", params={"object": made["case"], "at": f"{when:%d.%m.%Y %H.%M}"})
        assert page.status_code == 200, page.text[-2000:]
        assert "Ansvarlig enhed" in page.text and "Tildelt" in page.text
        assert cell(page.text, "responsible-unit") == paths[unit], when
        assert cell(page.text, "assignee") == (assignee or "ingen (enhedens fælles pulje)"), when
        assert 'data-fact="unit"' not in page.text and 'data-fact="assignee"' not in page.text
    english = auditor.get("/audit/as-of", params={"object": made["case"], "at": f"{CONFIRMED:%d.%m.%Y %H.%M}"},
                          headers={"Accept-Language": "en"})
    assert "Responsible unit" in english.text and "Assigned to" in english.text


def test_the_desk_filters_by_the_acting_unit_and_shows_each_entrys_unit(client_for: Any) -> None:
    engine: Engine = client_for().app.state.web.engine()
    made = make_history(engine)
    auditor = client_for("auditor:test")
    desk = auditor.get("/audit", params={"unit": made["department"]})
    assert desk.status_code == 200
    rows = re.findall(r'<tr data-seq="(\d+)">(.*?)</tr>', desk.text, re.S)
    assert len(rows) == 1 and "confirm" in rows[0][1] or "bekræft" in rows[0][1].lower()
    assert f'data-unit="{made["department"]}">{DEPARTMENT}</a>' in rows[0][1]
    assert f'<option value="{made["department"]}" selected>Danmark › {REGION} › {DEPARTMENT}</option>' in desk.text
    assert "Handlende enhed" in desk.text
    entry = auditor.get(f"/audit/entries/{rows[0][0]}")
    assert cell(entry.text, "unit") == DEPARTMENT
    whole = auditor.get("/audit")
    assert 'data-unit="unit-1">Danmark</a>' in whole.text
    assert auditor.get("/audit", params={"unit": made["stps"]}).text.count("<tr data-seq=") == 0
    wrong = auditor.get("/audit", params={"unit": "unit-999"})
    assert wrong.status_code == 422 and 'id="error-unit"' in wrong.text and "Vælg en enhed fra listen." in wrong.text
    export = auditor.get("/audit/export", params={"unit": made["department"], "format": "jsonl"})
    assert export.status_code == 200 and len(export.text.splitlines()) == 2
    api = auditor.get("/api/audit/export", params={"unit": DEPARTMENT})
    assert api.status_code == 200 and [json.loads(line).get("trigger") for line in api.text.splitlines()[1:]] == \
        ["confirm"]
    assert auditor.get("/api/audit/export", params={"unit": "Region Atlantis"}).status_code == 404
    listed = auditor.get("/api/audit", params={"unit": REGION}).json()
    assert [(e["trigger"], e["unit"]) for e in listed] == [("confirm", made["department"])]
