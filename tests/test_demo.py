"""The demo is the main job: its story must run to the ends the guideline gives it."""

from entry.demo import run_demo


def test_the_demo_runs_every_case_and_contact_through_its_timers():
    result = run_demo()
    assert {c["id"]: c["state"] for c in result["cases"]} == {
        "case-1": "closed", "case-2": "discarded", "case-3": "closed", "case-4": "closed"}
    assert {c["id"]: c["state"] for c in result["contacts"]} == {
        "contact-1": "symptomatic", "contact-2": "released", "contact-3": "released"}
    assert {c["id"]: (c["state"], c["doses_planned"], c["dose1_on"], c["dose2_on"]) for c in result["courses"]} == {
        "course-1": ("completed", 2, "2025-03-04", "2025-04-01"),  # PEP inside 4 days, dose 2 28 days later
        "course-2": ("completed", 1, "2025-03-04", None),  # born 1965: one dose (§6.4)
    }
    released = {e["object"]: e["at"] for e in result["timeline"] if e["trigger"] == "monitoring_ends"}
    # contact-3: last exposure 2025-02-28; contact-2 re-exposed on 2025-03-04, so its release moved to 03-26.
    assert released == {"contact-3": "2025-03-22T00:00:00+01:00", "contact-2": "2025-03-26T00:00:00+01:00"}
    became = next(e for e in result["timeline"] if e["object"] == "case-4" and e["trigger"] == "open")
    assert became["reason"] == "from contact-1: symptoms"
    changes = [e for e in result["timeline"] if e["object"].split("-")[0] in ("case", "contact", "course")]
    assert all(e["rule"].startswith("SST-mpox-7.1 §") for e in changes)
    # The auditor's attempt is refused, recorded on the auditor's own chain, and the log checks out.
    refused = [e for e in result["timeline"] if e["trigger"] == "refused"]
    assert [(e["actor"], e["role"], e["data"]) for e in refused] == [
        ("auditor:lis", "auditor", {"command": "case discard", "object": "case-1"})]
    assert (result["verify"]["intact"], result["verify"]["first_bad_seq"]) == (True, None)
    assert result["verify"]["entries"] == len(result["timeline"])
    assert (result["replay"]["matches"], result["replay"]["objects"]) == (True, 9)
    assert "hash chains intact; replay matches the tables" in result["text"]
    assert "contact-2  expose" in result["text"]
    # A deadline passed undone is missed, never done, and stays so until someone records what happened (issue 12).
    missed = [(e["object"], e["trigger"]) for e in result["timeline"] if (e["data"] or {}).get("outcome") == "missed"]
    assert ("contact-3", "pep_assessment_due") in missed and ("case-1", "written_notification_due") in missed
    [resolved] = [e for e in result["timeline"] if e["trigger"] == "resolve"]
    assert (resolved["object"], resolved["actor"], resolved["data"]["outcome"], resolved["data"]["name"]) == (
        "contact-3", "stps:maria", "declined", "pep_assessment_due")
    late = next(e for e in result["timeline"] if e["object"] == "case-1" and e["trigger"] == "notify"
                and e["data"] == {"channel": "written"})
    assert [d["outcome"] for d in late["timers_done"]] == ["done-late"]
    assert "contact-3  resolve" in result["text"] and "MISSED: not done in time" in result["text"]


def test_demo_serve_opens_the_story_with_open_work_and_demo_logins(tmp_path):
    from fastapi.testclient import TestClient

    from entry.demo import DEMO_PASSWORD, _open_work, build_demo
    from entry.web.server import create_app

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = build_demo(url, DEMO_PASSWORD)
    _open_work(engine)
    engine.db.dispose()
    app = create_app(url)
    with TestClient(app, follow_redirects=False) as staff, TestClient(app, follow_redirects=False) as auditor:
        assert staff.post("/api/login", json={"name": "staff:anna", "password": DEMO_PASSWORD}).status_code == 200
        tasks = {(t["object"], t["name"]) for t in staff.get("/api/due").json()}
        # The new outbreak on the demo's last day: notifications owed, three contacts to inform, PEP to assess.
        assert {("case-5", "phone_notification_due"), ("case-5", "written_notification_due")} <= tasks
        assert {name for _, name in tasks} >= {"inform_due", "pep_assessment_due"}
        assert len([1 for _, name in tasks if name == "inform_due"]) == 3
        page = staff.get("/worklist").text
        # The one-click action for the phone notification, in Danish (issue 16 item 1), and the demo's last day.
        assert "Telefonisk anmeldelse til STPS udført" in page and "01.07.2025" in page
        assert auditor.post("/api/login", json={"name": "auditor:lis", "password": DEMO_PASSWORD}).status_code == 200
        assert 'id="confirm"' in staff.get("/objects/case-6").text  # the suspected case: staff may confirm it
        assert 'id="confirm"' not in auditor.get("/objects/case-6").text
        # The department's new contacts are its own work, not yet STPS's: the tracer sees none of case-5's.
    with TestClient(app, follow_redirects=False) as tracer:
        assert tracer.post("/api/login", json={"name": "stps:maria", "password": DEMO_PASSWORD}).status_code == 200
        assert not [t for t in tracer.get("/api/due").json() if t.get("case") == "case-5" or t["object"] == "case-5"]
    app.state.web.db.dispose()


def test_the_demo_has_the_national_response_as_its_units_and_every_object_in_one():
    from entry.demo import CAPITAL, CLINIC, HVIDOVRE, STPS, TRACING_EAST, TRACING_WEST

    result = run_demo()
    units = {u["name"]: u for u in result["units"]}
    parent = {name: u["parent_name"] for name, u in units.items()}
    assert parent["Danmark"] is None and parent[STPS] == "Danmark"
    assert parent[TRACING_EAST] == parent[TRACING_WEST] == STPS
    regions = {"Region Hovedstaden", "Region Sjælland", "Region Syddanmark", "Region Midtjylland",
               "Region Nordjylland"}
    assert {name for name, p in parent.items() if p == "Danmark"} == regions | {STPS}
    # Each region has an infection-medicine department; at least two have a vaccination clinic.
    for region in regions:
        below = [name for name, p in parent.items() if p == region]
        assert any("Infektion" in name for name in below), region
    clinics = {parent[name] for name in parent if "Vaccinationsklinik" in name}
    assert len(clinics) >= 2 and clinics <= regions
    assert units[HVIDOVRE]["path"] == f"Danmark › {CAPITAL} › {HVIDOVRE}"
    members = {(m["name"], name, m["role"]) for name, u in units.items() for m in u["members"]}
    assert {("staff:anna", HVIDOVRE, "member"), ("stps:maria", TRACING_EAST, "member"),
            ("region:karen", CAPITAL, "lead"), ("stps:ole", STPS, "lead"), ("nurse:holm", CLINIC, "member"),
            ("stps:sofie", TRACING_WEST, "member")} <= members
    ids = {u["name"]: u["id"] for u in result["units"]}
    users = {e["data"].get("assignee") for e in result["timeline"] if e["trigger"] in ("assign", "transfer")}
    assert None not in {o["unit"] for o in result["cases"] + result["contacts"] + result["courses"]}
    owners = {o["id"]: (o["unit"], o["assignee"]) for o in result["cases"] + result["contacts"] + result["courses"]}
    assert {k: u for k, (u, _) in owners.items()} == {
        "case-1": ids[HVIDOVRE], "case-2": ids[HVIDOVRE], "case-3": ids[HVIDOVRE], "case-4": ids[HVIDOVRE],
        "contact-1": ids[TRACING_EAST], "contact-2": ids[HVIDOVRE], "contact-3": ids[TRACING_EAST],
        "course-1": ids[CLINIC], "course-2": ids[CLINIC]}  # the courses by the placement rule: the clinic
    assigned = {k for k, (_, a) in owners.items() if a is not None}
    assert assigned == {"case-3", "case-4", "contact-1", "contact-2", "contact-3"} and len(users) >= 3
    # The handovers are audited transitions that change no state, with the rule that names who does what.
    moves = [e for e in result["timeline"] if e["trigger"] in ("assign", "transfer")]
    assert all(e["from"] == e["to"] and e["rule"] == "SST-mpox-7.1 §5.5" and e["reason"] for e in moves)
    assert {e["actor"] for e in moves if e["trigger"] == "transfer"} == {"region:karen", "stps:ole"}
    # Every entry records the unit its actor acted through: the tracer's are the tracing team's.
    assert {e["unit"] for e in result["timeline"] if e["actor"] == "stps:maria"} == {ids[TRACING_EAST]}
    assert result["verify"]["intact"] and result["replay"]["matches"]
    assert f"→ {TRACING_EAST}, stps:maria" in result["text"] and f"→ {HVIDOVRE}, staff:anna" in result["text"]
