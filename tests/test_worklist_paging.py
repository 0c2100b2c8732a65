"""The worklist at scale (issue 15 item 5): `due --limit N --after CURSOR --kind K --task NAME`,
`GET /api/due?limit=&after=&kind=&task=` and the worklist page read the worklist a page at a time, in its order (due
instant, then timer id), filtered, ordered and limited in the database over the partial indexes of open tasks
(migration 0011). Storage behaviour on both backends; the CLI, the API and the page on SQLite.

The worklist these tests page through: cases confirmed at three instants (three tasks each, several due at the same
instant, so the timer id breaks ties), contacts of one of them (two tasks each), a day later so that the cases'
notifications are missed, one notified in time (done, gone), one missed task resolved (gone), and one timer parked as
failed in the middle of the order (an operator's task).
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert
from typer.testing import CliRunner

from engine.core import Engine
from engine.queries import DEFAULT_PAGE, decode_cursor, encode_cursor
from entry.cli import app
from persistence.database import Database
from persistence.models import Timer
from persistence.repository import SHOWN_WHEN_ARMED
from scheduler.firing import advance_simulated_clock
from tests.helpers import confirmed, person, pk
from workflows.errors import UsageError
from workflows.limits import MAX_LIMIT

T = datetime.fromisoformat
STAFF = "staff:test"
TIMERS = Timer.__table__
runner = CliRunner()


def contact(engine: Engine, case_id: str, ref: str, exposed: date = date(2025, 3, 2)) -> str:
    return engine.open("contact", "add", person=person(engine, ref), actor=STAFF, data={
        "case": case_id, "exposed": exposed, "kind": "household", "risk": None, "reason": None,
        "anonymous_via_doctor": False})["id"]


def failed_timer(db: Database, *, object_id: int, due_at: datetime, kind: str = "case",
                 name: str = "phone_notification_due") -> int:
    """A timer the worker parked as failed (after its five attempts), as `Firing` leaves it."""
    with db.engine.begin() as connection:
        return int(connection.execute(insert(TIMERS).returning(TIMERS.c.id), {
            "object_kind": kind, "object_id": object_id, "name": name, "due_at": due_at, "rule": "SST-mpox-7.1 §3.1",
            "task": None, "overdue_at": None, "status": "failed", "attempts": 5, "armed_at": due_at,
            "closed_at": due_at, "satisfied_at": None, "note": None, "last_error": "NotFound"}).scalar_one())


def mixed_worklist(engine: Engine, db: Database, clock: Any) -> dict[str, Any]:
    """The worklist of the module's docstring; returns what the tests look up in it."""
    cases = []
    for at in ("2025-03-03T08:00:00+01:00", "2025-03-03T10:00:00+01:00", "2025-03-03T18:30:00+01:00"):
        clock.set(T(at))
        cases += [confirmed(engine, person(engine, f"REF-{at}-{n}")) for n in range(2)]
    engine.apply(cases[0], "consent", data={"tracing": True}, actor=STAFF)
    contacts = [contact(engine, cases[0], f"REF-CONTACT-{n}") for n in range(3)]
    engine.apply(cases[1], "notify", data={"channel": "written"}, actor=STAFF)  # done in time: leaves the list
    advance_simulated_clock(engine, T("2025-03-04T12:00:00+01:00"))  # written notifications of the first 4 missed
    missed = [i for i in engine.worklist() if i["missed"]]
    engine.resolve_task(missed[0]["timer"], "not-reachable", actor=STAFF, reason="no answer")  # resolved: gone
    failed = failed_timer(db, object_id=pk(cases[2]), due_at=T("2025-03-04T09:00:00+01:00"))
    return {"cases": cases, "contacts": contacts, "failed": f"timer-{failed}", "resolved": missed[0]["timer"]}


def order_key(item: dict[str, Any]) -> tuple[datetime, int]:
    return T(item["due_at"]), pk(item["timer"])


def expected_worklist(engine: Engine, within: timedelta | None = None) -> list[str]:
    """The worklist's timer ids as the rules define it, worked out here from every timer (`timers`): parked as
    failed; or a task neither done nor resolved that is missed, or pending or fired (and due within)."""
    until = engine.clock.now() + within if within is not None else None
    ids = []
    for t in engine.timers(limit=MAX_LIMIT):
        open_task = t.get("task") and t["satisfied_at"] is None and t.get("resolved_at") is None
        # A contact's PEP assessment is on the worklist from the moment it is armed, whatever `within` (issue 16).
        due = until is None or T(t["due_at"]) <= until or (t["name"] in SHOWN_WHEN_ARMED and t["status"] == "pending")
        if t["status"] == "failed" or (open_task and (t["status"] == "missed" or
                                                      (t["status"] in ("pending", "fired") and due))):
            ids.append((T(t["due_at"]), pk(t["id"]), t["id"]))
    return [i for _, _, i in sorted(ids)]


def pages(engine: Engine, limit: int | None, **filters: Any) -> list[dict[str, Any]]:
    """Every page from the first, following `next`."""
    found, after = [], None
    while True:
        page = engine.worklist_page(limit=limit, after=after, **filters)
        found.append(page)
        if page["next"] is None:
            return found
        after = page["next"]


# ---- the order, and every item once across pages ------------------------------------------------------------


def test_the_worklist_is_in_due_order_with_missed_and_failed_items_in_their_place(engine, db, clock):
    made = mixed_worklist(engine, db, clock)
    items = engine.worklist()
    assert [i["timer"] for i in items] == expected_worklist(engine)
    assert items == sorted(items, key=order_key)
    statuses = {(i["missed"], bool(i.get("failed"))) for i in items}
    assert statuses == {(True, False), (False, False), (False, True)}  # missed, open, failed ones all there
    # Missed and failed items are not moved to the front or the end: the failed timer (due at 09:00 on the second
    # day) sits between the written notifications missed at 08:00 and at 10:00, and open tasks due later follow.
    failed_at = [i["timer"] for i in items].index(made["failed"])
    assert items[failed_at - 1]["missed"] and items[failed_at + 1]["missed"]
    assert (items[failed_at - 1]["due_at"], items[failed_at + 1]["due_at"]) == ("2025-03-04T08:00:00+01:00",
                                                                              "2025-03-04T10:00:00+01:00")
    assert not items[-1]["missed"] and not items[-1].get("failed")
    assert made["resolved"] not in {i["timer"] for i in items}
    # Ties on the due instant are broken by the timer's number, not its text (timer-10 after timer-9).
    assert len({i["due_at"] for i in items}) < len(items)


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
def test_pages_list_every_item_exactly_once_in_order(engine, db, clock, limit):
    mixed_worklist(engine, db, clock)
    whole = engine.worklist()
    walked = pages(engine, limit)
    assert [i for page in walked for i in page["items"]] == whole
    assert all(len(page["items"]) == limit for page in walked[:-1])
    assert 0 < len(walked[-1]["items"]) <= limit  # no empty page at the end
    assert len(walked) == -(-len(whole) // limit)


def test_items_added_or_done_between_pages_keep_every_other_item_exactly_once(engine, db, clock):
    made = mixed_worklist(engine, db, clock)
    before = engine.worklist()
    first = engine.worklist_page(limit=5)
    assert first["items"] == before[:5]
    # Meanwhile: a new case (its tasks due after the cursor), a failed timer due before the cursor, and a task
    # on the next page done.
    later_case = confirmed(engine, person(engine, "REF-LATER"))
    early = failed_timer(db, object_id=pk(made["cases"][0]), due_at=T("2025-03-01T00:00:00+01:00"))
    done = next(i for i in before[5:] if i["name"] == "inform_due")
    engine.apply(done["object"], "inform", actor=STAFF)
    rest = [i for page in pages_after(engine, first["next"], 5) for i in page["items"]]
    walked = first["items"] + rest
    # Every item there at the start and still open is listed once, in order; the new case's tasks are listed
    # in their place after the cursor; the one due before the cursor is not (it is on the first page now).
    ids = [i["timer"] for i in walked]
    assert len(ids) == len(set(ids))
    assert ids == [i for i in expected_worklist(engine) if i != f"timer-{early}"]
    assert {i["timer"] for i in before} - {done["timer"]} <= set(ids)
    assert {i["object"] for i in rest if i["object"] == later_case} == {later_case}
    assert f"timer-{early}" not in ids and done["timer"] not in ids
    assert engine.worklist_page(limit=5)["items"][0]["timer"] == f"timer-{early}"


def pages_after(engine: Engine, after: str, limit: int) -> list[dict[str, Any]]:
    found = []
    while after is not None:
        page = engine.worklist_page(limit=limit, after=after)
        found.append(page)
        after = page["next"]
    return found


def test_a_page_of_the_tasks_due_within_some_days(engine, db, clock):
    mixed_worklist(engine, db, clock)
    for days in (0, 1, 30):
        within = timedelta(days=days)
        assert [i["timer"] for p in pages(engine, 2, within=within) for i in p["items"]] == \
            expected_worklist(engine, within) == [i["timer"] for i in engine.worklist(within)]
    assert engine.worklist_page(within=timedelta(0), limit=1000)["items"] == engine.worklist(timedelta(0))


def test_without_a_limit_a_page_holds_the_default_number(engine, db, clock):
    mixed_worklist(engine, db, clock)
    page = engine.worklist_page()
    assert page["items"] == engine.worklist()[:DEFAULT_PAGE] and page["next"] is None
    assert engine.worklist_page(after=engine.worklist_page(limit=1)["next"])["items"] == engine.worklist()[1:]


# ---- filters ----------------------------------------------------------------------------------------------


def test_filters_by_kind_and_by_task_in_the_database(engine, db, clock):
    made = mixed_worklist(engine, db, clock)
    whole = engine.worklist()
    contacts = [i for i in whole if i["object"].startswith("contact-")]
    assert {i["object"] for i in contacts} == set(made["contacts"])
    assert engine.worklist(kind="contact") == contacts
    cases = engine.worklist(kind="case")
    assert cases == [i for i in whole if i["object"].startswith("case-")]
    assert made["failed"] in {i["timer"] for i in cases}  # a failed timer is of its object's kind
    assert engine.worklist(kind="course") == []
    informs = engine.worklist(task="inform_due")
    assert informs == [i for i in whole if i["name"] == "inform_due"] and len(informs) == 3
    phone = engine.worklist(kind="case", task="phone_notification_due")
    assert phone == [i for i in whole if i["name"] == "phone_notification_due"]
    assert made["failed"] in {i["timer"] for i in phone}
    for filters in ({"kind": "contact"}, {"task": "written_notification_due"},
                    {"kind": "case", "task": "phone_notification_due"}):
        assert [i for p in pages(engine, 2, **filters) for i in p["items"]] == engine.worklist(**filters)


def test_the_page_query_reads_the_worklist_indexes(engine, db, clock):
    """Each arm of the page's query is a range of an index over open tasks (or, for the failed timers, of
    ix_timers_status_due): what PostgreSQL's EXPLAIN and SQLite's EXPLAIN QUERY PLAN name."""
    mixed_worklist(engine, db, clock)
    prefix = "EXPLAIN QUERY PLAN " if db.backend == "sqlite" else "EXPLAIN "
    plans: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute", retval=True)
    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> Any:
        if statement.lstrip().startswith("SELECT worklist."):
            if db.backend == "postgresql":
                # The tables are tiny, so the planner's choice among plans of equal cost follows the statistics:
                # ask whether the indexes can serve each arm in order (no sequential scan, bitmap or sort).
                for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                    cursor.execute(f"SET LOCAL {setting} = off")
            cursor.execute(prefix + statement, parameters)
            plans.append("\n".join(str(row[-1] if db.backend == "sqlite" else row[0]) for row in cursor.fetchall()))
        return statement, parameters

    try:
        for filters, index in (({}, "ix_timers_worklist"), ({"kind": "contact"}, "ix_timers_worklist_kind"),
                               ({"task": "inform_due"}, "ix_timers_worklist_task")):
            first = engine.worklist_page(limit=2, **filters)
            engine.worklist_page(limit=2, after=first["next"], **filters)
            for plan in plans[-2:]:
                if db.backend == "sqlite":
                    assert plan.count(f"{index} ") + plan.count(f"{index}\n") >= 3 or plan.count(index) >= 3, plan
                else:
                    # On tables this small PostgreSQL's pick among the three open-task indexes (the kind's, the
                    # task's, the plain one with a filter) is a tie its statistics break: any of them, no scan.
                    assert plan.count("ix_timers_worklist") >= 3 and "Seq Scan" not in plan, plan
                assert "ix_timers_status_due" in plan, plan
    finally:
        event.remove(db.engine, "before_cursor_execute", explain)
    assert len(plans) == 6


# ---- refusals ---------------------------------------------------------------------------------------------


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("after", [
    "", "x", "not a cursor", "%%%", cursor_of("2:0:1"), cursor_of("1:abc:1"), cursor_of("1:0:-1"),
    cursor_of("1:0:99999999999"), cursor_of("1:99999999999999999:1"), cursor_of("1:-99999999999999999:1"),
    cursor_of("1:0:1\n"), "A" * 65, "éé", cursor_of("1:0:1") + "\x00",
])
def test_a_bad_cursor_is_refused_naming_after(engine, db, clock, after):
    mixed_worklist(engine, db, clock)
    with pytest.raises(UsageError, match="^after is not a cursor of this worklist") as refused:
        engine.worklist_page(limit=2, after=after)
    assert refused.value.fields == ("after",)


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, True, 2.5, "3"])
def test_a_bad_limit_is_refused_naming_limit(engine, limit):
    with pytest.raises(UsageError, match="^limit"):
        engine.worklist_page(limit=limit)


@pytest.mark.parametrize(("filters", "named"), [
    ({"kind": "person"}, "^kind 'person'"), ({"kind": "timer"}, "^kind"), ({"task": "nothing_due"}, "^task"),
    ({"kind": "course", "task": "inform_due"}, "^task 'inform_due' is not the name of a timer of a course"),
])
def test_an_unknown_kind_or_task_is_refused(engine, filters, named):
    for call in (lambda: engine.worklist(**filters), lambda: engine.worklist_page(limit=2, **filters)):
        with pytest.raises(UsageError, match=named):
            call()


def test_a_cursor_is_internal_values_only():
    item = {"due_at": "2025-03-03T17:00:00+01:00", "timer": "timer-42"}
    cursor = encode_cursor(item)
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)) == b"1:1741017600000000:42"
    assert decode_cursor(cursor) == (T("2025-03-03T16:00:00+00:00"), 42)


# ---- the CLI, the API and the page agree ------------------------------------------------------------------


def cli(url: str, *args: str) -> Any:
    return runner.invoke(app, ["--db", url, *args], catch_exceptions=False)


def test_the_cli_and_the_api_page_alike(cli_db, client_for):
    with Database(cli_db) as db:
        from engine.bootstrap import engine_on
        from workflows.definition import Settings

        engine = engine_on(db, Settings())
        made = mixed_worklist(engine, db, engine.simulated_clock)
        engine.save_clock()
        whole = engine.worklist()
    staff = client_for(STAFF)
    assert staff.get("/api/due").json() == whole  # without limit: the whole list, as before
    for filters, flags in (({}, []), ({"kind": "contact"}, ["--kind", "contact"]),
                           ({"task": "phone_notification_due"}, ["--task", "phone_notification_due"])):
        by_api, by_cli, after = [], [], None
        while True:
            api = staff.get("/api/due", params={"limit": 2, **filters, **({"after": after} if after else {})})
            assert api.status_code == 200, api.text
            done = cli(cli_db, "due", "--limit", "2", *flags, *(["--after", after] if after else []), "--json")
            assert done.exit_code == 0, done.output
            assert json.loads(done.stdout) == api.json()
            by_api += api.json()["items"]
            by_cli += json.loads(done.stdout)["items"]
            after = api.json()["next"]
            if after is None:
                break
        assert by_api == by_cli == [i for i in whole if all(
            (i["object"].split("-")[0] if k == "kind" else i["name"]) == v for k, v in filters.items())]
    text = cli(cli_db, "due", "--limit", "3", "--kind", "case").stdout
    assert "MISSED" in text and "next page: mpoxflow due --kind case --limit 3 --after " in text
    assert made["failed"] in cli(cli_db, "due", "--task", "phone_notification_due").stdout


@pytest.mark.parametrize(("args", "params", "named"), [
    (["--after", "nope"], {"after": "nope"}, "after"),
    (["--limit", "0"], {"limit": 0}, "limit"),
    (["--limit", str(MAX_LIMIT + 1)], {"limit": MAX_LIMIT + 1}, "limit"),
    (["--kind", "person"], {"kind": "person"}, "kind"),
    (["--task", "nothing_due"], {"task": "nothing_due"}, "task"),
])
def test_the_cli_and_the_api_refuse_a_bad_page_naming_the_option(cli_db, client_for, args, params, named):
    done = cli(cli_db, "due", *args, "--json")
    assert done.exit_code == 2
    assert f"--{named}" in done.stderr
    staff = client_for(STAFF)
    answer = staff.get("/api/due", params=params)
    assert answer.status_code == 422
    assert answer.json()["message"].startswith(f"{named}")
    assert answer.json()["exit_code"] == 2


def test_the_worklist_page_shows_one_page_and_links_the_next(cli_db, client_for, monkeypatch):
    from engine.bootstrap import engine_on
    from entry.web import pages as web_pages
    from tests.test_web_pages import worklist_rows
    from workflows.definition import Settings

    with Database(cli_db) as db:
        engine = engine_on(db, Settings())
        mixed_worklist(engine, db, engine.simulated_clock)
        engine.save_clock()
        # The page shows what falls due by the end of the next 7 days (from tomorrow, Danish time).
        shown = [(i["object"], i["name"]) for i in engine.worklist() if T(i["due_at"]) < T("2025-03-12T00:00:00+01:00")
                 or (i["name"] in SHOWN_WHEN_ARMED and not i["missed"])]
        second = engine.worklist_page(limit=4)["next"]
    assert len(shown) > 8
    monkeypatch.setattr(web_pages, "WORKLIST_PAGE", 4)
    staff = client_for(STAFF)
    staff.headers["Accept-Language"] = "en"  # the page's English words (the Danish pages are tests/test_i18n.py's)
    seen, path, count = [], "/worklist", 0
    while path:
        page = staff.get(path)
        assert page.status_code == 200
        assert ("First page" in page.text) == (count > 0)
        rows = [(o, n) for section in worklist_rows(page.text).values() for o, n, _ in section]
        # Each page holds the next 4 in the worklist's order, in its sections (missed, overdue, today, week).
        assert sorted(rows) == sorted(shown[4 * count:4 * count + 4])
        seen += rows
        more = re.search(r'<p class="more"><a href="([^"]+)" rel="next">More tasks</a>', page.text)
        path = html.unescape(more[1]) if more else None
        count += 1
    assert sorted(seen) == sorted(shown)
    assert count == -(-len(shown) // 4)
    second_page = worklist_rows(staff.get("/worklist", params={"after": second}).text)
    assert [(o, n) for section in second_page.values() for o, n, _ in section] == seen[4:8]
    assert "First page" in staff.get("/worklist", params={"after": second}).text
    refused = staff.get("/worklist", params={"after": "nope"})
    assert refused.status_code == 422 and "is not a cursor of this worklist" in refused.text
