"""Messages to people (issue 21 item 4): a contact's advice sheet e-mailed through a local SMTP server (aiosmtpd on
a free port) with the right subject, body and PDF and no other person's data; a server that is down makes the
worker retry after the backoff (the engine's clock moved by hand) and send once it is up; a new worker on the same
database never sends it again, nor one interrupted mid-send; every attempt audited, ``audit verify`` holds; bad
inputs refused with the database unchanged."""

from __future__ import annotations

import email
import email.policy
import io
import json
import socket
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, text

from engine.clock import SimulatedClock
from engine.core import Engine
from engine.messages import Messages, SmtpGateway, SmtpSettings, check_address, deliver_pass
from entry.web.advice import pdf as render_pdf
from persistence.database import Database
from persistence.models import AdviceMessage
from tests.helpers import contents, person
from tests.test_audit_verify import assert_clean
from workflows.errors import NotPermitted, RuleRefused, UsageError

pytestmark = pytest.mark.both_backends

STAFF = "staff:test"
CASE_REF, CONTACT_REF, BORN = "0101901234", "1212851234", date(1987, 6, 5)
ADDRESS = "kontakt.person@example.dk"
D = date.fromisoformat


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Inbox:
    """An aiosmtpd handler keeping every message it accepts (envelope recipients and the raw message)."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.received.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"


class Server:
    """A local SMTP server on a fixed free port, started and stopped by the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def gateway(self) -> SmtpGateway:
        return SmtpGateway(SmtpSettings.from_env({"MPOXFLOW_SMTP_HOST": "127.0.0.1",
                                                  "MPOXFLOW_SMTP_PORT": str(self.port),
                                                  "MPOXFLOW_SMTP_FROM": "mpox@sst.example.dk"}) or _none())


def _none() -> SmtpSettings:
    raise AssertionError("settings expected")


@pytest.fixture
def smtp() -> Iterator[Server]:
    server = Server()
    yield server
    server.stop()


def contact(engine: Engine, clock: SimulatedClock) -> str:
    """A contact last exposed on 2025-10-20 (its 21 days end on 2025-11-10: across the end of summer time)."""
    clock.set(datetime.fromisoformat("2025-10-21T09:00:00+02:00"))
    case_id = engine.open("case", "open", person=person(engine, CASE_REF, born=BORN), actor=STAFF, data={
        "onset": D("2025-10-18"), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    engine.apply(case_id, "confirm", data={"pcr_on": D("2025-10-20")}, actor=STAFF)
    engine.apply(case_id, "consent", data={"tracing": True}, actor=STAFF)
    return str(engine.open("contact", "add", person=person(engine, CONTACT_REF, born=BORN), actor=STAFF,
                           data={"case": case_id, "exposed": D("2025-10-20"), "kind": "sexual"})["id"])


def advance(clock: SimulatedClock, by: timedelta) -> None:
    clock.set(clock.now() + by)


def entries(db: Database, trigger_prefix: str = "advice_") -> list[dict[str, Any]]:
    with db.engine.connect() as connection:
        found = [dict(r._mapping) for r in connection.execute(text(
            "SELECT object_kind, object_id, trigger, actor, rule, data FROM audit_log WHERE trigger LIKE :p "
            "ORDER BY seq"),
            {"p": trigger_prefix + "%"})]
    for entry in found:
        if isinstance(entry["data"], str):
            entry["data"] = json.loads(entry["data"])
    return found


def rows(db: Database) -> list[Any]:
    with db.engine.connect() as connection:
        return list(connection.execute(select(AdviceMessage.__table__).order_by(AdviceMessage.id)))


def raw_everywhere(db: Database) -> str:
    """Every audit entry, event and message row as text (where an address or a reference must never be)."""
    with db.engine.connect() as connection:
        found = [str(tuple(r)) for table in ("audit_log", "events", "advice_messages")
                 for r in connection.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(found)


def test_the_sheet_is_e_mailed_once_with_its_text_and_pdf_and_no_personal_data(
        engine: Engine, db: Database, clock: SimulatedClock, smtp: Server) -> None:
    contact_id = contact(engine, clock)
    queued = Messages(engine).send(contact_id, "contact", "email", to=ADDRESS, actor=STAFF, reason="informed")
    assert (queued["status"], queued["channel"], queued["sheet"]) == ("queued", "email", "contact")
    assert "address" not in queued and ADDRESS not in str(queued)
    smtp.start()
    messages = Messages(engine)
    assert deliver_pass(messages, smtp.gateway, pdf=render_pdf) == 1
    assert len(smtp.inbox.received) == 1
    recipients, raw = smtp.inbox.received[0]
    assert recipients == [ADDRESS]
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert mail["Subject"] == "Råd til dig, der er nær kontakt til en person med mpox"
    assert mail["Message-ID"] == f"<{queued['id']}@mpoxflow>"
    body = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "til og med mandag den 10. november 2025" in body  # the last day: 2025-10-20 + 21 days
    attachments = list(mail.iter_attachments())
    assert [a.get_content_type() for a in attachments] == ["application/pdf"]
    pdf_bytes = attachments[0].get_content()
    assert pdf_bytes.startswith(b"%PDF")
    from pypdf import PdfReader

    pdf_text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf_bytes)).pages)
    assert "10. november 2025" in " ".join(pdf_text.split())
    everything = raw.decode("utf-8", "replace") + pdf_text
    for secret in (CASE_REF, CONTACT_REF, "1987", "05-06", "case-"):
        assert secret not in everything, secret
    # Sent: the address purged from the row, the attempt audited on the contact's chain, never the address.
    [row] = rows(db)
    assert (row.status, row.attempts, row.address, row.last_error) == ("sent", 1, None, None)
    assert [(e["trigger"], e["object_kind"]) for e in entries(db)] == [("advice_queued", "contact"),
                                                                       ("advice_sent", "contact")]
    # Each cites the section the contact's sheet gives the advice of (§5.5).
    assert [e["rule"] for e in entries(db)] == ["SST-mpox-7.1 §5.5", "SST-mpox-7.1 §5.5"]
    assert ADDRESS not in raw_everywhere(db) and CONTACT_REF not in raw_everywhere(db)
    with db.engine.connect() as connection:
        types = [t for (t,) in connection.execute(text("SELECT type FROM events WHERE type LIKE '%advice%' "
                                                       "ORDER BY seq"))]
    assert types == ["contact.advice_queued", "contact.advice_sent"]
    # Nothing more to send: a second pass sends nothing.
    assert deliver_pass(messages, smtp.gateway, pdf=render_pdf) == 0
    assert len(smtp.inbox.received) == 1
    assert_clean(engine.audit_verify())


def test_a_server_that_is_down_is_retried_after_the_backoff_and_a_restart_never_sends_twice(
        engine: Engine, db: Database, clock: SimulatedClock, smtp: Server, database_url: str) -> None:
    contact_id = contact(engine, clock)
    Messages(engine).send(contact_id, None, "email", to=ADDRESS, actor=STAFF)
    messages = Messages(engine)
    # The server is down: the attempt fails, is audited, and waits 10 s (the first backoff).
    assert deliver_pass(messages, smtp.gateway) == 1
    [row] = rows(db)
    assert (row.status, row.attempts, row.address) == ("queued", 1, ADDRESS)
    assert row.last_error.startswith("ConnectionRefusedError") and ADDRESS not in row.last_error
    failed = entries(db)[-1]
    assert failed["trigger"] == "advice_failed" and failed["data"]["attempt"] == 1
    assert deliver_pass(messages, smtp.gateway) == 0  # not due yet: nothing tried
    smtp.start()
    advance(clock, timedelta(seconds=9))
    assert deliver_pass(messages, smtp.gateway) == 0
    advance(clock, timedelta(seconds=1))
    assert deliver_pass(messages, smtp.gateway) == 1
    assert len(smtp.inbox.received) == 1
    [row] = rows(db)
    assert (row.status, row.attempts, row.address) == ("sent", 2, None)
    sent = entries(db)[-1]
    assert (sent["trigger"], sent["data"]["attempt"], sent["actor"]) == ("advice_sent", 2, "worker:messages")
    # A restart: a new engine and worker on the same database send nothing again, even much later.
    with Database(database_url) as again:
        later = SimulatedClock(clock.now() + timedelta(days=1))
        fresh = Engine(again, later)
        assert deliver_pass(Messages(fresh), smtp.gateway, owner="another:1") == 0
    assert len(smtp.inbox.received) == 1
    assert_clean(engine.audit_verify())


def test_a_message_interrupted_mid_send_is_never_sent_again(engine: Engine, db: Database, clock: SimulatedClock,
                                                            smtp: Server) -> None:
    """The worker leased it and died (the server may have accepted it): when its lease runs out it is failed,
    audited, and not sent again (at most once)."""
    contact_id = contact(engine, clock)
    Messages(engine).send(contact_id, None, "email", to=ADDRESS, actor=STAFF)
    messages = Messages(engine)
    [claim] = messages.claim("dead:1")
    assert claim.to == ADDRESS and claim.attempt == 1
    smtp.start()
    assert deliver_pass(messages, smtp.gateway, owner="alive:2") == 0  # leased to the dead one
    advance(clock, timedelta(seconds=61))
    assert deliver_pass(messages, smtp.gateway, owner="alive:2") == 0
    assert smtp.inbox.received == []
    [row] = rows(db)
    assert (row.status, row.address) == ("failed", None) and row.last_error.startswith("interrupted")
    assert entries(db)[-1]["trigger"] == "advice_failed"
    messages.record(claim, sent=True, error=None)  # the dead worker's late outcome changes nothing
    assert rows(db)[0].status == "failed"
    assert_clean(engine.audit_verify())


def test_given_by_phone_is_recorded_and_nothing_is_sent(engine: Engine, db: Database, clock: SimulatedClock,
                                                        smtp: Server) -> None:
    contact_id = contact(engine, clock)
    given = Messages(engine).given(contact_id, "contact", "phone", actor=STAFF)
    assert (given["status"], given["channel"]) == ("given", "phone")
    smtp.start()
    assert deliver_pass(Messages(engine), smtp.gateway) == 0
    assert smtp.inbox.received == []
    [entry] = entries(db)
    assert entry["trigger"] == "advice_given" and entry["data"]["channel"] == "phone"
    assert [m["status"] for m in Messages(engine).of(contact_id, actor=STAFF)] == ["given"]


@pytest.mark.parametrize(("change", "error"), [
    ({"to": "not an address"}, UsageError),
    ({"to": "a@b@example.dk"}, UsageError),
    ({"to": "Name <name@example.dk>"}, UsageError),
    ({"sheet": "nonsense"}, UsageError),
    ({"sheet": "pep"}, RuleRefused),  # a sheet the contact does not have
    ({"channel": "sms"}, UsageError),  # no SMS gateway
    ({"channel": "phone"}, UsageError),  # given, not sent
    ({"actor": "auditor:test"}, NotPermitted),
    ({"actor": "nobody:here"}, NotPermitted),
])
def test_bad_inputs_are_refused_and_change_nothing(engine: Engine, db: Database, clock: SimulatedClock,
                                                   change: dict[str, Any], error: type[Exception]) -> None:
    contact_id = contact(engine, clock)
    before = contents(db)
    arguments: dict[str, Any] = {"sheet": "contact", "channel": "email", "to": ADDRESS, "actor": STAFF, **change}
    with pytest.raises(error) as refused:
        Messages(engine).send(contact_id, arguments.pop("sheet"), arguments.pop("channel"), **arguments)
    assert ADDRESS not in str(refused.value) and "not an address" not in str(refused.value)
    after = contents(db)
    if error is NotPermitted:  # a refusal is audited on the user's chain: nothing else changes
        after = {k: v for k, v in after.items() if k not in ("audit_log", "users", "events")}
        before = {k: v for k, v in before.items() if k not in ("audit_log", "users", "events")}
    assert after == before


def test_addresses() -> None:
    assert check_address(" name.surname+mpox@sub.example.dk ") == "name.surname+mpox@sub.example.dk"
    for bad in ("", "name", "name@", "@example.dk", "name@localhost", "na me@example.dk", "name@exa_mple.dk",
                "x" * 250 + "@example.dk"):
        with pytest.raises(UsageError):
            check_address(bad)


def test_the_command_line_sends_and_gives_and_refuses_bad_inputs(cli_db: str) -> None:
    from tests.test_cli import cli, ok

    ok(cli_db, "person", "add", "--ref", CASE_REF, "--born", "1987-06-05", "--actor", STAFF)
    ok(cli_db, "person", "add", "--ref", CONTACT_REF, "--actor", STAFF)
    ok(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-02-28", "--confirmed", "--pcr-on",
       "2025-03-02", "--actor", STAFF)
    ok(cli_db, "case", "consent", "case-1", "--tracing", "yes", "--actor", STAFF)
    ok(cli_db, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-02", "--kind",
       "household", "--actor", STAFF)
    assert "til og med søndag den 23. marts 2025" in ok(cli_db, "advice", "contact-1", "--as", STAFF).stdout
    with Database(cli_db) as database:
        before = contents(database)
    for args, code in ((["--email", "nope"], 2), (["--email", ADDRESS, "--sheet", "nope"], 2),
                       (["--email", ADDRESS, "--sheet", "pep"], 3),
                       (["--email", ADDRESS, "--actor", "auditor:test"], 3), ([], 2)):
        done = cli(cli_db, "advice", "send", "contact-1", *args, *([] if "--actor" in args else ["--actor", STAFF]))
        assert done.exit_code == code, (args, done.output)
        assert ADDRESS not in done.output
    assert cli(cli_db, "advice", "send", "contact-9", "--email", ADDRESS, "--actor", STAFF).exit_code == 4
    assert cli(cli_db, "advice", "given", "contact-1", "--channel", "email", "--actor", STAFF).exit_code == 2
    with Database(cli_db) as database:
        after = contents(database)
    strip = ("audit_log", "users", "events")  # the refused actor's refusal is audited on their chain
    assert {k: v for k, v in after.items() if k not in strip} == {k: v for k, v in before.items() if k not in strip}
    sent = ok(cli_db, "advice", "send", "contact-1", "--email", ADDRESS, "--actor", STAFF, "--json")
    assert json.loads(sent.stdout)["status"] == "queued" and ADDRESS not in sent.stdout
    given = ok(cli_db, "advice", "given", "contact-1", "--channel", "letter", "--actor", STAFF, "--json")
    assert json.loads(given.stdout)["channel"] == "letter"
    with Database(cli_db) as database:
        assert [(r.channel, r.status) for r in rows(database)] == [("email", "queued"), ("letter", "given")]


def test_only_staff_of_the_objects_units_send_or_give_its_sheet(engine: Engine, db: Database) -> None:
    from tests.test_notes import two_regions
    from workflows.errors import OutsideUnits

    case_id = two_regions(engine)  # a suspected case of Region Syd's
    before = contents(db)
    with pytest.raises(OutsideUnits):
        Messages(engine).send(case_id, "suspected", "email", to=ADDRESS, actor="nord:staff")
    with pytest.raises(OutsideUnits):
        Messages(engine).given(case_id, "suspected", "letter", actor="nord:staff")
    strip = ("audit_log", "users")  # at most the refusals, on the refused user's own chain
    assert {k: v for k, v in contents(db).items() if k not in strip} == {
        k: v for k, v in before.items() if k not in strip}
    assert engine.runtime.viewer is None  # the engine's viewer is left as it was
    sent = Messages(engine).send(case_id, "suspected", "email", to=ADDRESS, actor="syd:staff")
    assert (sent["object"], sent["status"]) == (case_id, "queued")
    assert [(e["trigger"], e["actor"]) for e in entries(db)] == [("advice_queued", "syd:staff")]


def test_the_running_worker_sends_a_queued_e_mail_with_its_pdf(engine: Engine, db: Database, clock: SimulatedClock,
                                                              smtp: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's delivery thread, configured by MPOXFLOW_SMTP_*, sends what is queued (once)."""
    import threading
    import time

    from entry.advice_cli import pdf_of
    from scheduler.worker import Worker

    contact_id = contact(engine, clock)
    Messages(engine).send(contact_id, None, "email", to=ADDRESS, actor=STAFF)
    smtp.start()
    for name, value in (("HOST", "127.0.0.1"), ("PORT", str(smtp.port)), ("FROM", "mpox@sst.example.dk")):
        monkeypatch.setenv(f"MPOXFLOW_SMTP_{name}", value)
    worker = Worker(engine, poll_seconds=0.2, batch=10)
    worker.advice_pdf = pdf_of
    thread = threading.Thread(target=lambda: worker.run(install_signals=False), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not smtp.inbox.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert len(smtp.inbox.received) == 1
    mail = email.message_from_bytes(smtp.inbox.received[0][1], policy=email.policy.default)
    assert [a.get_content_type() for a in mail.iter_attachments()] == ["application/pdf"]
    assert [(r.status, r.address) for r in rows(db)] == [("sent", None)]
