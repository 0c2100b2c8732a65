"""Issue 18, part 4: webhooks. A real HTTP receiver on 127.0.0.1 (a process of its own, ``tests/receiver.py``),
killed and restarted mid-stream, gets every event, none lost, in order per object, each signed; a worker killed
mid-delivery delivers again (at least once) and never skips; every attempt is visible to admins; the backoff reads
the engine's clock (moved by hand here); non-admins are refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from engine.core import Engine
from engine.webhooks import LEASE, Backoff, Webhooks
from persistence.database import Database
from persistence.models import Event, WebhookObject
from scheduler.delivery import deliver_pass
from tests.conftest import ADMIN, START
from tests.helpers import person, pk, suspected
from workflows.errors import NotPermitted, UsageError

pytestmark = pytest.mark.both_backends

ROOT = Path(__file__).resolve().parent.parent
STAFF = "staff:test"
CPR = "0101901234"
SECRET = "a-shared-secret-of-the-receiver"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Receiver:
    """``tests/receiver.py`` on a fixed port, started, killed (SIGKILL) and started again by the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.log = tmp_path / f"received-{self.port}.jsonl"
        self.log.touch()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/mpox"

    def start(self, *mode: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "receiver.py"), str(self.port),
                                      str(self.log), *mode], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def requests(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    made = Receiver(tmp_path)
    yield made
    made.kill()


def verify(secret: str, body: str, header: str, now: int, tolerance: int = 300) -> bool:
    """What the module's documentation tells a receiver to do."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    if abs(now - int(parts["t"])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def event_seqs(db: Database) -> list[tuple[int, str, int]]:
    table = Event.__table__
    with db.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(
            select(table.c.seq, table.c.object_kind, table.c.object_id).order_by(table.c.seq))]


def drain(hooks: Webhooks, clock: Any, passes: int = 50) -> int:
    total = 0
    for _ in range(passes):
        sent = deliver_pass(hooks, clock)
        total += sent
        if not sent:
            return total
    pytest.fail("delivery did not settle")


def assert_delivered_in_order(got: list[dict[str, Any]], db: Database, secret: str) -> None:
    """Every event to the receiver at least once; per object, the first receipt of each in seq order; signed."""
    first_seen: list[int] = []
    by_object: dict[str, list[int]] = {}
    for request in got:
        body = json.loads(request["body"])
        headers = {k.lower(): v for k, v in request["headers"].items()}
        stamp = int(headers["x-mpoxflow-signature"].split(",")[0][2:])
        assert verify(secret, request["body"], headers["x-mpoxflow-signature"], now=stamp)
        assert not verify("another secret entirely", request["body"], headers["x-mpoxflow-signature"], now=stamp)
        assert not verify(secret, request["body"], headers["x-mpoxflow-signature"], now=stamp + 301)  # replayed
        assert headers["x-mpoxflow-event"] == body["event"]["type"]
        assert headers["x-mpoxflow-delivery"] == body["delivery"] == f"webhook-1.event-{body['event']['seq']}"
        assert headers["content-type"] == "application/json"
        seq = body["event"]["seq"]
        if seq not in first_seen:
            first_seen.append(seq)
            by_object.setdefault(body["event"]["object"], []).append(seq)
    assert sorted(first_seen) == [s for s, _, _ in event_seqs(db)]  # none lost
    for seqs in by_object.values():
        assert seqs == sorted(seqs)  # order per object
    assert CPR not in "".join(r["body"] for r in got)


# ---- the engine's delivery, a receiver killed and restarted --------------------------------------------------


def test_a_receiver_killed_and_restarted_mid_stream_gets_every_event_in_order_per_object(engine, clock, receiver):
    hooks = Webhooks(engine.runtime)
    receiver.start()
    hook = hooks.add(receiver.url, "*", actor=ADMIN, secret=SECRET, reason="STPS' dashboard")
    assert hook["id"] == "webhook-1" and "secret" not in hook  # a secret given is never printed back
    cases = [suspected(engine, person(engine, CPR if i == 0 else f"W{i}")) for i in range(3)]
    for case_id in cases:
        engine.apply(case_id, "confirm", data={"pcr_on": START.date()}, actor=STAFF)
    assert deliver_pass(hooks, clock, limit=4) == 4
    assert len(receiver.requests()) == 4

    receiver.kill()  # mid-stream
    for case_id in cases:
        engine.apply(case_id, "notify", data={"channel": "phone"}, actor=STAFF)
    tried = deliver_pass(hooks, clock)
    assert tried == 3  # each object's next event, once: refused connections
    failed = hooks.deliveries(actor=ADMIN, failed=True)
    assert len(failed) == 3
    assert all(f["outcome"] == "failed" and f["http_status"] is None and f["attempt"] == 1 for f in failed)
    assert all("ConnectionRefusedError" in f["error"] for f in failed)
    # The backoff (10 s, doubling) reads the engine's clock: nothing is tried again before it.
    assert deliver_pass(hooks, clock) == 0
    clock.set(START + timedelta(seconds=9))
    assert deliver_pass(hooks, clock) == 0
    clock.set(START + timedelta(seconds=10))
    assert deliver_pass(hooks, clock) == 3
    assert {f["attempt"] for f in hooks.deliveries(actor=ADMIN, failed=True)} == {1, 2}
    assert hooks.subscriptions(actor=ADMIN)[0]["waiting"] == 3  # nothing skipped: they wait

    receiver.start()
    clock.set(START + timedelta(seconds=30))
    assert drain(hooks, clock) == 9 - 4
    got = receiver.requests()
    assert len(got) == 9  # each exactly once here: every failed attempt had no answer
    assert_delivered_in_order(got, engine.db, SECRET)
    stamps = {int(json.loads(r["body"])["event"]["seq"]): r["headers"]["X-Mpoxflow-Signature"] for r in got}
    assert stamps[9].startswith(f"t={int((START + timedelta(seconds=30)).timestamp())},")  # the engine's clock
    assert hooks.subscriptions(actor=ADMIN)[0]["waiting"] == 0
    delivered = hooks.deliveries(actor=ADMIN)
    assert len(delivered) == 9 + 6
    assert all(d["duration_ms"] >= 0 for d in delivered)
    assert [d["http_status"] for d in delivered if d["outcome"] == "delivered"] == [200] * 9


def test_an_objects_next_event_waits_for_the_earlier_one_while_other_objects_go_on(engine, clock, receiver):
    hooks = Webhooks(engine.runtime, Backoff(first=timedelta(seconds=10), cap=timedelta(seconds=40)))
    hook = hooks.add(receiver.url, "case.suspected,case.confirmed", actor=ADMIN, secret=SECRET)
    first = suspected(engine, person(engine, "O1"))
    engine.apply(first, "confirm", data={"pcr_on": START.date()}, actor=STAFF)
    # Down: the first object's first event fails again and again (capped backoff); its second is never sent first.
    at = START
    for attempt, wait in ((1, 10), (2, 20), (3, 40), (4, 40)):
        assert deliver_pass(hooks, clock) == 1
        [last] = hooks.deliveries(actor=ADMIN, limit=1)
        assert (last["event"], last["attempt"], last["outcome"]) == (1, attempt, "failed")
        at += timedelta(seconds=wait)
        with engine.db.engine.connect() as connection:
            state = connection.execute(select(WebhookObject.__table__)).one()
        assert (state.next_seq, state.attempts, state.next_attempt_at) == (1, attempt, at)
        clock.set(at)
    receiver.start()
    second = suspected(engine, person(engine, "O2"))  # another object: not held up by the first
    assert drain(hooks, clock) == 3
    got = [json.loads(r["body"])["event"] for r in receiver.requests()]
    assert [(e["object"], e["type"]) for e in got] == [
        (first, "case.suspected"), (second, "case.suspected"), (first, "case.confirmed")]
    assert hooks.remove(hook["id"], actor=ADMIN, reason="replaced")["active"] is False
    engine.apply(second, "confirm", data={"pcr_on": START.date()}, actor=STAFF)
    assert drain(hooks, clock) == 0  # a removed subscription gets nothing more


def test_personal_data_goes_only_to_a_subscription_whose_role_may_see_it(engine, clock, receiver):
    hooks = Webhooks(engine.runtime)
    receiver.start()
    with pytest.raises(UsageError, match="auditor"):
        hooks.add(receiver.url, "*", actor=ADMIN, role="auditor", personal_data=True)
    hooks.add(receiver.url, "case.suspected", actor=ADMIN, secret=SECRET, role="staff", personal_data=True)
    person_id = person(engine, CPR)
    suspected(engine, person_id)
    assert drain(hooks, clock) == 1
    [got] = receiver.requests()
    assert json.loads(got["body"])["person"] == {"id": person_id, "ref": CPR}
    # The attempts' record holds no personal data either.
    assert CPR not in json.dumps(hooks.deliveries(actor=ADMIN))


def test_subscriptions_are_for_admins_and_every_change_is_audited(engine, receiver):
    hooks = Webhooks(engine.runtime)
    for attempt in (lambda: hooks.add(receiver.url, "*", actor=STAFF), lambda: hooks.subscriptions(actor=STAFF),
                    lambda: hooks.deliveries(actor=STAFF), lambda: hooks.remove("webhook-1", actor=STAFF)):
        with pytest.raises(NotPermitted):
            attempt()
    for url in ("ftp://example.org/x", "http:///nohost", "not a url"):
        with pytest.raises(UsageError, match="url"):
            hooks.add(url, "*", actor=ADMIN)
    with pytest.raises(UsageError, match="no event type"):
        hooks.add(receiver.url, "case.confirmed,case.bogus", actor=ADMIN)
    made = hooks.add(receiver.url + "?token=xyz", "case.confirmed", actor=ADMIN, reason="SSI")
    assert len(made["secret"]) == 64  # generated, shown once
    assert "secret" not in json.dumps(hooks.subscriptions(actor=ADMIN)).replace('"secret"', "")
    hooks.remove(made["id"], actor=ADMIN, reason="done")
    entries = [e for e in engine.audit(actor=ADMIN) if e["trigger"].startswith("webhook_")]
    assert [(e["trigger"], e["data"]["webhook"]) for e in entries] == [("webhook_add", "webhook-1"),
                                                                       ("webhook_remove", "webhook-1")]
    assert entries[0]["data"]["host"] == "127.0.0.1" and "xyz" not in json.dumps(entries)
    assert made["secret"] not in json.dumps(engine.audit())
    assert engine.audit_verify()["intact"] is True


def test_an_event_leased_to_one_worker_is_not_claimed_by_another(engine, clock, receiver):
    hooks = Webhooks(engine.runtime)
    hooks.add(receiver.url, "*", actor=ADMIN, secret=SECRET)
    for i in range(3):
        suspected(engine, person(engine, f"L{i}"))
    for webhook in hooks.active():
        hooks.scan(webhook)
    mine = hooks.claim("worker-a", limit=2)
    theirs = hooks.claim("worker-b", limit=10)
    assert len(mine) == 2 and len(theirs) == 1
    assert not {c.seq for c in mine} & {c.seq for c in theirs}
    assert hooks.claim("worker-c") == []
    clock.set(START + LEASE)  # a lease that ran out (its worker died): claimed again
    assert sorted(c.seq for c in hooks.claim("worker-c")) == [1, 2, 3]


def test_postgresql_workers_skip_the_events_another_is_claiming(pg_url, receiver):
    from engine.clock import SimulatedClock

    database = Database(pg_url)
    engine = Engine(database, SimulatedClock(START))
    try:
        hooks = Webhooks(engine.runtime)
        hooks.add(receiver.url, "*", actor=ADMIN, secret=SECRET)
        for i in range(2):
            suspected(engine, person(engine, f"S{i}"))
        hooks.scan(hooks.active()[0])
        with database.engine.connect() as other:
            # Another worker in the middle of its claim: the first object's row locked.
            other.execute(text("SELECT * FROM webhook_objects WHERE object_id = :pk FOR UPDATE"), {"pk": 1})
            started = time.monotonic()
            claimed = hooks.claim("worker-b")
            assert time.monotonic() - started < 5  # skipped, not waited for
            assert [c.object_id for c in claimed] == [2]
            other.rollback()
        assert [c.object_id for c in hooks.claim("worker-c")] == [1]
    finally:
        database.dispose()


# ---- processes: the CLI, a worker killed mid-delivery ----------------------------------------------------------


def cli(url: str, *args: str, actor: str = ADMIN, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPOXFLOW_ACTOR": actor}
    env.pop("MPOXFLOW_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", "from entry.cli import main; main()", "--db", url, *args],
                          cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def test_a_worker_killed_mid_delivery_delivers_again_and_never_skips(cli_db, receiver, tmp_path):
    receiver.start("hang")  # takes the first request and never answers
    added = cli(cli_db, "webhook", "add", receiver.url, "--events", "*", "--secret-from-stdin", "--json",
                stdin=SECRET + "\n")
    assert added.returncode == 0, added.stderr
    assert "secret" not in json.loads(added.stdout)
    person_id = json.loads(cli(cli_db, "person", "add", "--ref", CPR, "--json").stdout)["id"]
    made = cli(cli_db, "case", "open", "--person", person_id, "--onset", "2025-03-01", "--symptoms", "rash",
               "--criteria", "msm", "--json")
    assert made.returncode == 0, made.stderr + made.stdout
    case_id = json.loads(made.stdout)["id"]
    assert cli(cli_db, "case", "confirm", case_id, "--pcr-on", "2025-03-03").returncode == 0

    env = {k: v for k, v in os.environ.items() if k != "MPOXFLOW_LOG_LEVEL"}
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen([sys.executable, "-c", "from entry.cli import main; main()", "--db", cli_db,
                                   "--log-format", "json", "worker", "--poll", "1"], cwd=ROOT, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for(lambda: len(receiver.requests()) == 1, "the worker's first request")
            worker.send_signal(signal.SIGKILL)  # mid-delivery: the request taken, no answer yet
            worker.wait(10)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    receiver.kill()
    receiver.start()
    assert json.loads(cli(cli_db, "webhook", "deliveries", "--json").stdout) == []  # nothing was recorded
    # Its lease holds until it runs out (the engine's clock): then the event is sent again, and the next after it.
    assert json.loads(cli(cli_db, "webhook", "deliver", "--once", "--json").stdout) == {"attempts": 0}
    moved = cli(cli_db, "clock", "advance", "--to", (START + LEASE + timedelta(seconds=1)).isoformat())
    assert moved.returncode == 0, moved.stderr
    assert json.loads(cli(cli_db, "webhook", "deliver", "--once", "--json").stdout) == {"attempts": 2}
    got = receiver.requests()
    ids = [r["headers"]["X-Mpoxflow-Delivery"] for r in got]
    assert ids == ["webhook-1.event-1", "webhook-1.event-1", "webhook-1.event-2"]  # at least once, never skipped
    with Database(cli_db) as db:
        assert_delivered_in_order(got, db, SECRET)
    shown = json.loads(cli(cli_db, "webhook", "deliveries", "webhook-1", "--json").stdout)
    assert [(d["event"], d["attempt"], d["outcome"], d["http_status"]) for d in shown] == [
        (2, 1, "delivered", 200), (1, 1, "delivered", 200)]
    assert json.loads(cli(cli_db, "webhook", "deliveries", "--event", "2", "--json").stdout)[0]["event"] == 2
    assert json.loads(cli(cli_db, "webhook", "deliveries", "--failed", "--json").stdout) == []


def test_the_webhook_commands_refuse_non_admins_and_bad_input(cli_db, receiver):
    refused = cli(cli_db, "webhook", "add", receiver.url, "--events", "*", actor=STAFF)
    assert refused.returncode == 3 and "admin" in refused.stderr
    assert cli(cli_db, "webhook", "deliveries", actor=STAFF).returncode == 3
    assert cli(cli_db, "webhook", "list", actor="auditor:test").returncode == 3
    bad = cli(cli_db, "webhook", "add", "gopher://x", "--events", "*")
    assert bad.returncode == 2 and "URL" in bad.stderr
    bad = cli(cli_db, "webhook", "add", receiver.url, "--events", "case.nope")
    assert bad.returncode == 2 and "--events" in bad.stderr
    assert cli(cli_db, "webhook", "remove", "webhook-9").returncode == 4
    added = cli(cli_db, "webhook", "add", receiver.url, "--events", "case.confirmed")
    assert added.returncode == 0 and "shown only now" in added.stdout
    listed = cli(cli_db, "webhook", "list")
    assert "webhook-1" in listed.stdout and "case.confirmed" in listed.stdout
    secret = added.stdout.split("signing secret: ")[1].split()[0]
    assert secret not in listed.stdout
    assert cli(cli_db, "webhook", "remove", "webhook-1").returncode == 0
    assert cli(cli_db, "webhook", "remove", "webhook-1").returncode == 3
    assert pk("webhook-1") == 1


# ---- the web: GET /api/events, the admins' page --------------------------------------------------------------


def test_the_events_api_pages_after_a_seq_for_a_token_and_refuses_a_reader_of_one_unit(web_app, client_for):
    from fastapi.testclient import TestClient

    from engine.accounts import Accounts

    engine = web_app.state.web.engine()
    case_id = suspected(engine, person(engine, CPR))
    engine.apply(case_id, "confirm", data={"pcr_on": START.date()}, actor=STAFF)
    token = Accounts(engine).issue_token("auditor:test", "STPS' dashboard", actor=ADMIN, reason=None)["secret"]
    with TestClient(web_app) as system:
        answer = system.get("/api/events", params={"after": 1}, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        assert [(e["seq"], e["type"], e["object"]) for e in answer.json()] == [(2, "case.confirmed", case_id)]
        assert CPR not in answer.text
        assert system.get("/api/events", params={"limit": 0},
                          headers={"Authorization": f"Bearer {token}"}).status_code == 422
        assert system.get("/api/events").status_code == 401
    engine.add_unit("Region Syd", parent="Danmark", actor=ADMIN)
    engine.add_user("staff:syd", "staff", actor=ADMIN, password_hash="x", units=["Region Syd"])
    regional = Accounts(engine).issue_token("staff:syd", "regional", actor=ADMIN, reason=None)["secret"]
    with TestClient(web_app) as system:
        refused = system.get("/api/events", headers={"Authorization": f"Bearer {regional}"})
        assert refused.status_code == 403 and "root unit" in refused.text


def test_the_webhooks_page_shows_subscriptions_and_attempts_in_danish_to_admins_only(web_app, client_for, receiver):
    engine = web_app.state.web.engine()
    hooks = Webhooks(engine.runtime)
    hooks.add(receiver.url, "case.suspected", actor=ADMIN, secret=SECRET)
    suspected(engine, person(engine, "P1"))
    assert deliver_pass(hooks, engine.clock) == 1  # the receiver is down: a failed attempt
    page = client_for(ADMIN).get("/webhooks")
    assert page.status_code == 200
    assert "Webhooks" in page.text and "Seneste leveringsforsøg" in page.text
    assert receiver.url in page.text and "case.suspected" in page.text
    assert 'data-outcome="failed"' in page.text and "mislykkedes" in page.text
    assert SECRET not in page.text
    assert 'href="/webhooks"' in client_for(ADMIN).get("/worklist").text
    assert client_for(STAFF).get("/webhooks").status_code == 403
    assert 'href="/webhooks"' not in client_for(STAFF).get("/worklist").text
