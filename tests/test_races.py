"""Issue 13 items 6-7: races that broke a rule. Real parallel processes on PostgreSQL (forked, bounded, started
together at a barrier) for course offers, case opens and wrong-password logins; single-process refusals on both
backends with the database unchanged."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from engine import accounts
from engine.accounts import MAX_FAILURES_PER_NAME, Accounts
from engine.clock import SimulatedClock
from engine.core import Engine
from entry.cli import app
from persistence.database import Database
from persistence.models import LoginFailure
from tests.conftest import PASSWORD, START
from tests.helpers import contents, person, suspected
from workflows.errors import GuardRefused, NotAuthenticated, TooManyAttempts

STAFF = "staff:test"
PREP = {"indication": "prep", "contact": None, "criteria": ["msm_sti_24w"], "assessed_by": None,
        "criterion_on": date(2025, 2, 20)}
SUSPECTED = {"onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]}
#: How long a child may take (bounded: a hung child fails the test, it never hangs it).
CHILD_TIMEOUT_S = 20

_fork = multiprocessing.get_context("fork")


def _child(url: str, job: str, arg: str, barrier: Any, results: Any) -> None:
    """One parallel attempt in its own process with its own database connection; puts (outcome, detail)."""
    database = Database(url)
    try:
        engine = Engine(database, SimulatedClock(START))
        barrier.wait(CHILD_TIMEOUT_S)
        try:
            if job == "offer":
                done = engine.open("course", "offer", person=arg, data=PREP, actor=STAFF)["id"]
            elif job == "case":
                done = engine.open("case", "open", person=arg, data=SUSPECTED, actor=STAFF)["id"]
            else:
                done = Accounts(engine).login(arg, "wrong wrong wrong", "10.0.0.7")[0].name
            results.put(("ok", done))
        except Exception as error:  # noqa: BLE001 - the parent asserts what each child ended with
            results.put((type(error).__name__, getattr(error, "exit_code", None)))
    finally:
        database.dispose()


def in_parallel(url: str, job: str, arg: str, n: int) -> list[tuple[str, Any]]:
    barrier, results = _fork.Barrier(n), _fork.Queue()
    children = [_fork.Process(target=_child, args=(url, job, arg, barrier, results)) for _ in range(n)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=CHILD_TIMEOUT_S) for _ in children]
    for child in children:
        child.join(CHILD_TIMEOUT_S)
        assert child.exitcode == 0
    return outcomes


# ---- real parallel processes on PostgreSQL ---------------------------------------------------------------------


def test_ten_parallel_course_offers_for_one_person_make_exactly_one_course(pg_url: str) -> None:
    with Database(pg_url) as database:
        who = person(Engine(database, SimulatedClock(START)), "REF-PAR-COURSE")
    outcomes = in_parallel(pg_url, "offer", who, 10)
    assert [o for o in outcomes if o[0] == "ok"] == [("ok", "course-1")], outcomes
    # every loser is a clear refusal (3) or a conflict (5), never a crash
    assert {o for o in outcomes if o[0] != "ok"} <= {("GuardRefused", 3), ("Conflict", 5)}, outcomes
    with Database(pg_url) as database:
        assert [c["id"] for c in Engine(database, SimulatedClock(START)).list("course")] == ["course-1"]


def test_ten_parallel_case_opens_for_one_person_make_exactly_one_case(pg_url: str) -> None:
    with Database(pg_url) as database:
        who = person(Engine(database, SimulatedClock(START)), "REF-PAR-CASE")
    outcomes = in_parallel(pg_url, "case", who, 10)
    assert [o for o in outcomes if o[0] == "ok"] == [("ok", "case-1")], outcomes
    assert {o for o in outcomes if o[0] != "ok"} <= {("GuardRefused", 3), ("Conflict", 5)}, outcomes
    with Database(pg_url) as database:
        engine = Engine(database, SimulatedClock(START))
        assert [c["id"] for c in engine.list("case")] == ["case-1"]
        # one case, so one set of deadlines
        assert engine.audit_replay()["matches"]


def test_twenty_parallel_wrong_passwords_check_at_most_the_limit(pg_url: str) -> None:
    outcomes = in_parallel(pg_url, "login", "nurse:holm", 20)
    checked = [o for o in outcomes if o[0] == "NotAuthenticated"]
    limited = [o for o in outcomes if o[0] == "TooManyAttempts"]
    assert len(checked) == MAX_FAILURES_PER_NAME and len(limited) == 20 - MAX_FAILURES_PER_NAME, outcomes
    with Database(pg_url) as database:
        with database.reading() as session:
            assert session.scalar(select(func.count()).select_from(LoginFailure)) == MAX_FAILURES_PER_NAME
        engine = Engine(database, SimulatedClock(START))
        assert len(engine.audit(trigger="login_failed")) == MAX_FAILURES_PER_NAME


# ---- refusals, one process, both backends ----------------------------------------------------------------------


def test_a_second_open_case_is_refused_naming_the_open_one_and_nothing_is_written(
        engine: Engine, db: Database) -> None:
    who = person(engine, "REF-DUP")
    first = suspected(engine, who)
    before = contents(db)
    for trigger, data in (("open", SUSPECTED), ("open_confirmed", {**SUSPECTED, "pcr_on": date(2025, 3, 2)})):
        with pytest.raises(GuardRefused) as refused:
            engine.open("case", trigger, person=who, data=data, actor=STAFF)
        assert refused.value.exit_code == 3
        assert f"already has an open case, {first} (suspected)" in refused.value.message
        assert "second_case_reason" in refused.value.message
    assert contents(db) == before


@pytest.mark.parametrize("state", ["confirmed", "isolated", "healed"])
def test_every_open_state_counts_and_a_closed_case_does_not(engine: Engine, db: Database, state: str) -> None:
    who = person(engine, "REF-OPEN")
    case = suspected(engine, who)
    engine.apply(case, "confirm", data={"pcr_on": date(2025, 3, 2)}, actor=STAFF)
    if state in ("isolated", "healed"):
        engine.apply(case, "isolate", data={"mode": "home"}, actor=STAFF)
    if state == "healed":
        engine.apply(case, "heal", data={"on": date(2025, 3, 3)}, actor=STAFF)
    assert engine.show(case)["state"] == state
    before = contents(db)
    with pytest.raises(GuardRefused, match=f"{case} \\({state}\\)"):
        engine.open("case", "open", person=who, data=SUSPECTED, actor=STAFF)
    assert contents(db) == before

    other = person(engine, "REF-DISCARDED")
    gone = suspected(engine, other)
    engine.apply(gone, "discard", actor=STAFF)
    assert engine.open("case", "open", person=other, data=SUSPECTED, actor=STAFF)["id"] != gone


def test_a_second_case_with_a_reason_is_opened_and_the_reason_is_audited(cli_db: str) -> None:
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, ["--db", cli_db, *args, "--json"])

    who = json.loads(cli("person", "add", "--ref", "REF-REINFECT").stdout)["id"]
    args = ("case", "open", "--person", who, "--onset", "2025-03-01", "--symptoms", "rash", "--criteria", "msm")
    first = json.loads(cli(*args).stdout)["id"]
    refused = cli(*args)
    assert refused.exit_code == 3, refused.stdout
    assert first in json.loads(refused.stdout)["error"]
    blank = cli(*args, "--second-case-reason", "  ")
    assert blank.exit_code == 2 and "--second-case-reason" in blank.stdout
    second = cli(*args, "--second-case-reason", "re-infection: new lesions after the first case healed")
    assert second.exit_code == 0, second.stdout
    case = json.loads(second.stdout)["id"]
    assert case != first
    [entry] = json.loads(cli("audit", "--entity", case).stdout)
    assert entry["data"]["second_case_reason"] == "re-infection: new lesions after the first case healed"
    assert entry["reason"] == "re-infection: new lesions after the first case healed"


def test_the_api_refuses_a_duplicate_case_with_409_and_takes_second_case_reason(
        client_for: Callable[..., Any]) -> None:
    client = client_for(STAFF)
    headers = {"X-CSRF-Token": client.csrf}
    who = client.post("/api/persons", json={"ref": "REF-API-DUP"}, headers=headers).json()["id"]
    body = {"person": who, "onset": "2025-03-01", "symptoms": ["rash"], "criteria": ["msm"]}
    first = client.post("/api/cases", json=body, headers=headers)
    assert first.status_code in (200, 201), first.text
    refused = client.post("/api/cases", json=body, headers=headers)
    assert refused.status_code == 409, refused.text
    error = refused.json()
    assert (error["exit_code"], error["status"]) == (3, 409) and first.json()["id"] in error["message"]
    second = client.post("/api/cases", json={**body, "second_case_reason": "re-infection"}, headers=headers)
    assert second.status_code in (200, 201), second.text


def test_contact_symptoms_of_a_person_with_an_open_case_are_refused_and_without_one_open_a_case(
        engine: Engine, db: Database) -> None:
    index = suspected(engine, person(engine, "REF-INDEX"))
    engine.apply(index, "confirm", data={"pcr_on": date(2025, 3, 2)}, actor=STAFF)
    engine.apply(index, "consent", data={"tracing": True}, actor=STAFF)
    already, fresh = person(engine, "REF-ALREADY"), person(engine, "REF-FRESH")
    own = suspected(engine, already)
    contacts = {who: engine.open("contact", "add", person=who, actor=STAFF, data={
        "case": index, "exposed": date(2025, 3, 1), "kind": "sexual"})["id"] for who in (already, fresh)}
    symptoms = {"onset": date(2025, 3, 3), "symptoms": ["rash"]}
    before = contents(db)
    with pytest.raises(GuardRefused) as refused:
        engine.apply(contacts[already], "symptoms", data=symptoms, actor=STAFF)
    assert f"already has an open case, {own}" in refused.value.message
    assert "record the symptoms on it" in refused.value.message
    assert contents(db) == before
    engine.apply(contacts[fresh], "symptoms", data=symptoms, actor=STAFF)
    [spawned] = [c for c in engine.list("case") if c["id"] not in (index, own)]
    assert engine.show(spawned["id"])["state"] == "suspected"


def test_a_parallel_offer_after_the_first_committed_is_refused_with_the_course_rule(
        engine: Engine, db: Database) -> None:
    who = person(engine, "REF-COURSE")
    engine.open("course", "offer", person=who, data=PREP, actor=STAFF)
    before = contents(db)
    with pytest.raises(GuardRefused, match="has a course under way") as refused:
        engine.open("course", "offer", person=who, data=PREP, actor=STAFF)
    assert refused.value.exit_code == 3
    assert contents(db) == before


# ---- logins ----------------------------------------------------------------------------------------------------


def test_a_locked_name_still_lets_its_owner_in_from_another_address_slowly(engine: Engine, db: Database) -> None:
    logins = Accounts(engine)
    for _ in range(MAX_FAILURES_PER_NAME):
        with pytest.raises(NotAuthenticated):
            logins.login("nurse:holm", "guess guess guess", "203.0.113.9")
    before = contents(db)
    with pytest.raises(TooManyAttempts) as locked:  # the attacker's address is locked out for the window
        logins.login("nurse:holm", PASSWORD, "203.0.113.9")
    assert locked.value.retry_after > 14 * 60
    with pytest.raises(TooManyAttempts) as slowed:  # another address: one attempt a minute once the name is hit
        logins.login("nurse:holm", PASSWORD, "198.51.100.4")
    assert 1 <= slowed.value.retry_after <= 61
    assert contents(db) == before

    wall = engine.wall_clock
    later = wall.now() + accounts.SLOW_ATTEMPT_INTERVAL
    engine.wall_clock = type("Later", (), {"now": staticmethod(lambda: later)})()
    try:
        who, _ = logins.login("nurse:holm", PASSWORD, "198.51.100.4")
    finally:
        engine.wall_clock = wall
    assert who.name == "nurse:holm"
    with db.reading() as session:  # the right password clears the name's failures
        assert session.scalar(select(func.count()).select_from(LoginFailure)) == 0


def test_a_right_password_after_wrong_ones_logs_in_and_withdraws_its_count(engine: Engine, db: Database) -> None:
    logins = Accounts(engine)
    with pytest.raises(NotAuthenticated):
        logins.login("nurse:ida", "guess guess guess", "10.1.1.1")
    assert logins.login("nurse:ida", PASSWORD, "10.1.1.1")[0].name == "nurse:ida"
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(LoginFailure)) == 0
    assert [e["trigger"] for e in engine.audit(trigger="login")] == ["login"]


def test_serve_trusts_x_forwarded_for_only_from_the_proxies_named(
        cli_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    runner = CliRunner()
    assert runner.invoke(app, ["--db", cli_db, "serve"]).exit_code == 0
    assert runner.invoke(app, ["--db", cli_db, "serve", "--forwarded-allow-ips", "10.0.0.1, 10.0.0.2"]).exit_code == 0
    assert [(c["proxy_headers"], c["forwarded_allow_ips"]) for c in calls] == [
        (False, ""), (True, "10.0.0.1,10.0.0.2")]

    # what Uvicorn then does with a forged header from 127.0.0.1 (its own default would trust it)
    from uvicorn.config import Config
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    config = Config(lambda scope, receive, send: None, proxy_headers=False, forwarded_allow_ips="")
    config.load()
    assert not isinstance(config.loaded_app, ProxyHeadersMiddleware)
