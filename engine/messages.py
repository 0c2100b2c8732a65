"""Messages to people (issue 21 item 4): an advice sheet sent by e-mail, or marked as given by phone or letter.

- ``send`` (staff of the object's units): the sheet is checked (it must be one the object has, as ``advice``
  makes it), a row of ``advice_messages`` is queued and the object's chain gets ``advice_queued`` in the same
  transaction. The address is kept in the row only while the message waits: it never goes into a log, an audit
  entry, an event or an error message, and it is set to NULL in the transaction that records the message sent
  (or failed for good).
- ``given`` (staff of the object's units): the sheet was given by phone or letter; nothing is sent, the row is
  ``given`` and the chain gets ``advice_given``.
- Delivery (``deliver_pass``, run by the worker's delivery thread beside the webhooks'): due messages are leased
  (``claim``, as ``engine.webhooks`` leases events: PostgreSQL ``FOR UPDATE SKIP LOCKED``), the sheet is made
  anew from the object (its dates as of the sending; no personal data on it), handed to the ``Gateway``, and the
  outcome recorded (``record``) with its audit entry, ``advice_sent`` or ``advice_failed`` with the attempt's
  number, in one transaction. A failure the gateway calls passing (the server down, a 4xx answer) is tried again
  after ``engine.webhooks.Backoff``, for as long as it takes; one it calls permanent (``Undeliverable``: the
  server refused the address) fails the message for good.

Never twice: a message is sent at most once. Its lease is taken in one transaction and the outcome written in
the next; if the worker dies between the server accepting the message and that commit, nobody knows whether it
went out. Such a message (still ``queued`` with its lease run out) is never sent again: the next claim marks it
``failed`` ("interrupted: the outcome is unknown"), audited, so staff see it and decide (send again, or phone).
The message carries a ``Message-ID`` of its own (``<message-N@mpoxflow>``), the same for every attempt. A send
that outlasts its lease (``engine.webhooks.LEASE``, 60 s) is likewise recorded as interrupted, never sent again.

Gateways: ``SmtpGateway`` (the standard library's ``smtplib``, configured by ``MPOXFLOW_SMTP_*``) is the real
one. ``SmsGateway`` is only the interface an SMS provider would implement: there is no SMS gateway in mpoxflow,
and a message queued for ``sms`` is refused when queued (``send`` takes e-mail only).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import Table, and_, insert, or_, select, update

from engine import advice
from engine.uow import Actor, unit_of_work
from engine.views import instant
from engine.webhooks import LEASE, Backoff, lease_owner
from persistence.audit import Head
from persistence.models import AdviceMessage
from persistence.repository import format_id, parse_id
from workflows.errors import NotFound, UsageError
from workflows.limits import check_text, shown
from workflows.registry import BY_NAME

log = structlog.get_logger("mpoxflow.messages")

MESSAGES = cast(Table, AdviceMessage.__table__)
#: Channels a sheet is sent by (the worker) and channels it is given by (staff; nothing sent).
SENT_BY = ("email",)
GIVEN_BY = ("phone", "letter")
CHANNELS = ("email", "sms", "phone", "letter")
#: The worker's actor on the object's chain when it records an attempt (acts for the object's unit).
WORKER = Actor("worker:messages", "timer")
MAX_ADDRESS = 254
#: A plain address: local part and a domain with a dot, no spaces, no display name, no second ``@``.
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
INTERRUPTED = "interrupted: the worker stopped while sending, so the outcome is unknown; it is not sent again"


class Undeliverable(Exception):  # noqa: N818 - a gateway's answer, not a bug
    """A gateway's permanent refusal (the address refused): the message fails for good, no retry."""


@dataclass(frozen=True)
class Outgoing:
    """What a gateway sends: the address, the subject, the sheet's text, its PDF (None: WeasyPrint missing), and
    the message's own id (the same on every attempt)."""

    message: str
    to: str
    subject: str
    body: str
    pdf: bytes | None
    pdf_name: str

    @property
    def message_id(self) -> str:
        return f"<{self.message}@mpoxflow>"


class Gateway(Protocol):
    """Sends one message; returns when the far side accepted it, raises on failure (``Undeliverable``: for
    good; anything else: tried again later)."""

    def send(self, message: Outgoing) -> None: ...


class SmsGateway(Gateway, Protocol):
    """The interface an SMS provider's gateway would implement (``Outgoing.body`` as the text, no PDF). mpoxflow
    has none: ``send`` refuses the ``sms`` channel until one is written and configured."""


def check_address(address: str | None) -> str:
    """A plain e-mail address (``name@example.dk``). UsageError naming ``--email`` otherwise (the address is not
    echoed: it is personal data)."""
    text = (address or "").strip()
    if not text or len(text) > MAX_ADDRESS or not _ADDRESS.match(text):
        raise UsageError("⟦email⟧ must be one plain e-mail address such as name@example.dk (no name, no spaces, "
                         "no second @)")
    return text


def check_channel(channel: str | None, allowed: tuple[str, ...], flag: str = "channel") -> str:
    value = (channel or "").strip()
    if value not in allowed:
        raise UsageError(f"'{shown(value)}' is no channel here: use {' or '.join(allowed)} (⟦{flag}⟧)")
    return value


def message_pk(message_id: str | int) -> int:
    text = str(message_id).strip()
    number = text.removeprefix("message-")
    if not (number.isascii() and number.isdigit()) or len(number) > 9:
        raise UsageError(f"'{shown(text)}' is no message id: give one as message-1")
    return int(number)


@dataclass(frozen=True)
class Claim:
    """One message leased to a worker."""

    pk: int
    kind: str
    object_id: int
    sheet: str
    language: str
    channel: str
    to: str
    attempt: int
    owner: str

    @property
    def message(self) -> str:
        return format_id("message", self.pk)


class Messages:
    """Sending and giving advice sheets (``engine.core.Engine.messages``)."""

    def __init__(self, engine: Any, backoff: Backoff | None = None) -> None:
        self.engine = engine
        self.runtime = engine.runtime
        self.backoff = backoff or Backoff()

    # ---- staff ---------------------------------------------------------------------------------------------

    def send(self, object_id: str, sheet: str | None, channel: str = "email", *, to: str | None, actor: str,
             reason: str | None = None, language: str | None = "da") -> dict[str, Any]:
        """Queue the sheet for sending to ``to``; returns the message's view (never the address). UsageError (a
        bad channel, address, sheet name or language), RuleRefused (a sheet the object does not have), NotFound,
        OutsideUnits, NotPermitted (audited)."""
        if channel == "sms":
            raise UsageError("there is no SMS gateway in mpoxflow yet: send the sheet by e-mail (⟦email⟧) or mark "
                             "it given by phone or letter")
        check_channel(channel, SENT_BY)
        address = check_address(to)
        return self._queue(object_id, sheet, channel, address, actor, reason, language, "advice_queued")

    def given(self, object_id: str, sheet: str | None, channel: str, *, actor: str, reason: str | None = None,
              language: str | None = "da") -> dict[str, Any]:
        """Record that the sheet was given by phone or letter (nothing is sent); returns the message's view."""
        check_channel(channel, GIVEN_BY)
        return self._queue(object_id, sheet, channel, None, actor, reason, language, "advice_given")

    def _queue(self, object_id: str, sheet: str | None, channel: str, address: str | None, actor: str,
               reason: str | None, language: str | None, trigger: str) -> dict[str, Any]:
        if reason is not None:
            check_text(reason, "reason")
        language = advice.check_language(language)
        # The sheet's name, a kind with sheets, one the object has, an object in the actor's units: refused here.
        made = self._make(object_id, sheet, language, viewer=actor)
        kind, pk = parse_id(object_id)
        label = format_id(kind, pk)
        with unit_of_work(self.runtime, actor, "advice " + ("send" if address else "given"), label) as uow:
            from engine import units

            row = uow.repo.load_object(kind, pk)
            units.check_acts_on(uow, kind, pk, row.unit_id, "advice")
            now = uow.now()
            message = int(uow.session.execute(insert(MESSAGES).returning(MESSAGES.c.id), {
                "object_kind": kind, "object_id": pk, "sheet": made.name, "language": language,
                "channel": channel, "status": "queued" if address else "given", "address": address,
                "attempts": 0, "next_attempt_at": None, "lease_until": None, "lease_owner": None,
                "last_error": None, "created_by": uow.actor.name, "created_at": now,
                "sent_at": None if address else now}).scalar_one())
            seq = uow.audit(
                Head.of(row), kind=kind, pk=pk, workflow=row.workflow, trigger=trigger, from_state=row.state,
                to_state=row.state, actor=uow.actor, reason=(reason or "").strip() or None, now=now,
                rule=advice.sheet_rule(made.guideline, made.name),
                data={"message": format_id("message", message), "sheet": made.name, "language": language,
                      "channel": channel}, changes=None, unit=units.acting_unit(uow, uow.actor, row.unit_id)).seq
            uow.save_clock()
            view = self._view(uow.session.execute(select(MESSAGES).where(MESSAGES.c.id == message)).one())
            uow.commit()
        log.info(trigger, object=label, message=view["id"], channel=channel, audit_seq=seq)
        return {**view, "audit_seq": seq}

    def of(self, object_id: str, *, actor: str) -> list[dict[str, Any]]:
        """The messages of an object, oldest first (never an address), as ``actor`` may read the object."""
        kind, pk = parse_id(object_id)
        before = self.runtime.viewer
        try:
            self.engine.viewing_as(actor).show(format_id(kind, pk))
        finally:
            self.runtime.viewer = before
        with self.runtime.db.reading() as session:
            return [self._view(r) for r in session.execute(select(MESSAGES).where(
                MESSAGES.c.object_kind == kind, MESSAGES.c.object_id == pk).order_by(MESSAGES.c.id))]

    @staticmethod
    def _view(row: Any) -> dict[str, Any]:
        return {"id": format_id("message", row.id), "object": format_id(row.object_kind, row.object_id),
                "sheet": row.sheet, "language": row.language, "channel": row.channel, "status": row.status,
                "attempts": row.attempts, "next_attempt_at": instant(row.next_attempt_at),
                "last_error": row.last_error, "created_by": row.created_by, "created_at": instant(row.created_at),
                "sent_at": instant(row.sent_at)}

    # ---- the worker ----------------------------------------------------------------------------------------

    def claim(self, owner: str, limit: int = 20) -> list[Claim]:
        """Fail the interrupted messages (leased, lease run out: never sent again), then lease up to ``limit`` due
        ones to ``owner``, oldest first."""
        postgresql = self.runtime.db.backend == "postgresql"
        with unit_of_work(self.runtime) as uow:
            session, now = uow.session, uow.now()
            lost = select(MESSAGES).where(MESSAGES.c.status == "queued", MESSAGES.c.lease_until.is_not(None),
                                          MESSAGES.c.lease_until <= now).order_by(MESSAGES.c.id)
            if postgresql:
                lost = lost.with_for_update(skip_locked=True)
            for row in list(session.execute(lost)):
                self._outcome(uow, row, row.attempts + 1, sent=False, error=INTERRUPTED, final=True)
            due = (select(MESSAGES).where(
                MESSAGES.c.status == "queued", MESSAGES.c.channel.in_(SENT_BY), MESSAGES.c.lease_until.is_(None),
                or_(MESSAGES.c.next_attempt_at.is_(None), MESSAGES.c.next_attempt_at <= now))
                .order_by(MESSAGES.c.id).limit(limit))
            if postgresql:
                due = due.with_for_update(skip_locked=True)
            rows = list(session.execute(due))
            if rows:
                session.execute(update(MESSAGES).where(MESSAGES.c.id.in_([r.id for r in rows])).values(
                    lease_until=now + LEASE, lease_owner=owner))
            uow.commit()
        return [Claim(pk=r.id, kind=r.object_kind, object_id=r.object_id, sheet=r.sheet, language=r.language,
                      channel=r.channel, to=r.address or "", attempt=r.attempts + 1, owner=owner) for r in rows]

    def record(self, claim: Claim, *, sent: bool, error: str | None, final: bool = False) -> None:
        """The attempt's outcome and its audit entry, in one transaction: sent (the address purged), failed for
        now (tried again after the backoff) or for good (``final``: the address purged). A message no longer
        leased to ``claim.owner`` is left alone."""
        with unit_of_work(self.runtime) as uow:
            row = uow.session.execute(select(MESSAGES).where(
                MESSAGES.c.id == claim.pk, MESSAGES.c.status == "queued",
                MESSAGES.c.lease_owner == claim.owner)).one_or_none()
            if row is None:
                return
            self._outcome(uow, row, claim.attempt, sent=sent, error=error, final=final)
            uow.commit()

    def _outcome(self, uow: Any, row: Any, attempt: int, *, sent: bool, error: str | None, final: bool) -> None:
        now = uow.now()
        values: dict[str, Any] = {"attempts": attempt, "lease_until": None, "lease_owner": None,
                                  "last_error": None if error is None else error[:500]}
        if sent:
            values.update(status="sent", sent_at=now, address=None, next_attempt_at=None)
        elif final:
            values.update(status="failed", address=None, next_attempt_at=None)
        else:
            values.update(next_attempt_at=now + self.backoff.after(attempt))
        uow.session.execute(update(MESSAGES).where(MESSAGES.c.id == row.id).values(**values))
        target = uow.repo.load_object(row.object_kind, row.object_id)
        data: dict[str, Any] = {"message": format_id("message", row.id), "sheet": row.sheet,
                                "channel": row.channel, "attempt": attempt}
        if not sent:
            data.update(error=values["last_error"], retry=None if final else instant(values["next_attempt_at"]))
        uow.audit(Head.of(target), kind=row.object_kind, pk=row.object_id, workflow=target.workflow,
                  trigger="advice_sent" if sent else "advice_failed", from_state=target.state,
                  to_state=target.state, actor=WORKER, reason=None, now=now,
                  rule=advice.sheet_rule(BY_NAME[target.workflow].version, row.sheet), data=data, changes=None,
                  unit=target.unit_id)

    def next_attempt(self) -> datetime | None:
        with self.runtime.db.reading() as session:
            value: datetime | None = session.execute(
                select(MESSAGES.c.next_attempt_at).where(and_(MESSAGES.c.status == "queued",
                                                              MESSAGES.c.next_attempt_at.is_not(None)))
                .order_by(MESSAGES.c.next_attempt_at).limit(1)).scalar()
        return value

    def _make(self, object_id: str, sheet: str | None, language: str, *, viewer: str | None) -> advice.Sheet:
        """The sheet as ``viewer`` may read the object (None: the worker, everything); the engine's viewer is
        restored after."""
        before = self.runtime.viewer
        try:
            return advice.make(self.engine.viewing_as(viewer), object_id, sheet, language)
        finally:
            self.runtime.viewer = before

    def outgoing(self, claim: Claim, pdf: Callable[[advice.Sheet], bytes] | None) -> Outgoing:
        """The message of a claim: the sheet made anew (as of now; no personal data on it), its text as the body,
        its title as the subject, its PDF attached when ``pdf`` is given."""
        made = self._make(format_id(claim.kind, claim.object_id), claim.sheet, claim.language, viewer=None)
        attachment = None
        if pdf is not None:
            try:
                attachment = pdf(made)
            except (ImportError, OSError) as error:  # WeasyPrint (or its libraries) missing: the text alone
                log.warning("advice_pdf_unavailable", message=claim.message, error=type(error).__name__)
        return Outgoing(message=claim.message, to=claim.to, subject=made.title, body=advice.plain_text(made),
                        pdf=attachment, pdf_name=f"{made.name}-{made.object}.pdf")


def deliver_pass(messages: Messages, gateway: Gateway, *, pdf: Callable[[advice.Sheet], bytes] | None = None,
                 owner: str | None = None, limit: int | None = None,
                 stop: Callable[[], bool] | None = None) -> int:
    """One pass: claim, send and record until nothing is due (or ``limit`` attempts, or ``stop()``); returns the
    attempts made. What an attempt records as its error is the exception's type and SMTP code, never the address."""
    me = owner or lease_owner()
    attempts = 0
    while stop is None or not stop():
        claims = messages.claim(me, 20 if limit is None else min(20, limit - attempts))
        if not claims:
            break
        for claim in claims:
            try:
                gateway.send(messages.outgoing(claim, pdf))
            except Undeliverable as error:
                messages.record(claim, sent=False, error=f"undeliverable: {error}", final=True)
                log.warning("advice_failed", message=claim.message, attempt=claim.attempt, final=True)
            except NotFound:
                messages.record(claim, sent=False, error="the object is gone", final=True)
            except Exception as error:  # noqa: BLE001 - any failure of the server: tried again later
                messages.record(claim, sent=False, error=describe(error))
                log.warning("advice_failed", message=claim.message, attempt=claim.attempt, error=describe(error))
            else:
                messages.record(claim, sent=True, error=None)
                log.info("advice_sent", message=claim.message, attempt=claim.attempt)
            attempts += 1
        if limit is not None and attempts >= limit:
            break
    return attempts


def describe(error: BaseException) -> str:
    """An attempt's error without personal data: the exception's type and, from an SMTP answer, its code."""
    code = getattr(error, "smtp_code", None)
    errno = getattr(error, "errno", None)
    detail = f" (SMTP {code})" if code is not None else f" (errno {errno})" if errno is not None else ""
    return f"{type(error).__name__}{detail}"


# ---- e-mail ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpSettings | None:
        """From ``MPOXFLOW_SMTP_HOST``, ``_PORT`` (25), ``_FROM``, ``_USER``, ``_PASSWORD``, ``_STARTTLS`` (1/0);
        None when no host is set (no e-mail is sent: queued messages wait). UsageError for a bad port or sender."""
        env = os.environ if env is None else env
        host = env.get("MPOXFLOW_SMTP_HOST", "").strip()
        if not host:
            return None
        port_text = env.get("MPOXFLOW_SMTP_PORT", "25").strip()
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError("MPOXFLOW_SMTP_PORT must be a port number (1-65535)")
        sender = env.get("MPOXFLOW_SMTP_FROM", "").strip()
        if not _ADDRESS.match(sender):
            raise UsageError("MPOXFLOW_SMTP_FROM must be the e-mail address messages are sent from")
        return cls(host=host, port=int(port_text), sender=sender, user=env.get("MPOXFLOW_SMTP_USER") or None,
                   password=env.get("MPOXFLOW_SMTP_PASSWORD") or None,
                   starttls=env.get("MPOXFLOW_SMTP_STARTTLS", "0").strip().lower() in ("1", "true", "yes"))


class SmtpGateway:
    """E-mail through an SMTP server (``smtplib``): the sheet's text as the body, its PDF attached."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def compose(self, message: Outgoing) -> Any:
        from email.message import EmailMessage
        from email.utils import formatdate

        mail = EmailMessage()
        mail["From"] = self.settings.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = message.message_id
        mail.set_content(message.body)
        if message.pdf is not None:
            mail.add_attachment(message.pdf, maintype="application", subtype="pdf", filename=message.pdf_name)
        return mail

    def send(self, message: Outgoing) -> None:
        import smtplib

        mail = self.compose(message)
        s = self.settings
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as client:
                if s.starttls:
                    import ssl

                    client.starttls(context=ssl.create_default_context())
                if s.user:
                    client.login(s.user, s.password or "")
                client.send_message(mail)
        except smtplib.SMTPRecipientsRefused as error:
            codes = sorted({code for code, _ in error.recipients.values()})
            if any(500 <= code < 600 for code in codes):
                raise Undeliverable(f"the server refused the address (SMTP {codes[0]})") from None
            raise
        except smtplib.SMTPResponseException as error:
            if 500 <= error.smtp_code < 600 and error.smtp_code not in (530, 535):
                raise Undeliverable(f"the server refused the message (SMTP {error.smtp_code})") from None
            raise
