from tests.helpers import confirmed, contents, person


def test_a_confirmed_case_is_stored_with_its_audit_and_timers(engine, db):
    case_id = confirmed(engine, person(engine))
    tables = contents(db)
    assert len(tables["cases"]) == 1
    assert [t for t in tables["timers"] if t[3] in ("phone_notification_due", "written_notification_due")]
    assert engine.show(case_id)["state"] == "confirmed"
    assert [e["trigger"] for e in engine.audit(entity=case_id)] == ["open", "confirm"]
