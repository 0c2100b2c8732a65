"""Webhooks (issue 18): subscriptions to events, and their delivery state, at least once and in order per object.

A subscription (admins only; every change audited on the admin's own chain) names a URL, the event types it wants
(``engine.events``), the role it is delivered as, and a secret its bodies are signed with. It gets the events that
commit from the moment it is made. What the delivery keeps, per webhook and object (``webhook_objects``): the last
event delivered and the next to send. An object's next event is sent only once its previous one was delivered to
that webhook (order per object); other objects go on meanwhile. A failed attempt is recorded
(``webhook_deliveries``) and tried again after an exponential backoff with a cap (``Backoff``), for as long as it
takes: an event is never skipped; it waits until it is delivered, or the subscription is removed.

One pass of delivery (``scheduler.delivery``) is three short transactions around the HTTP requests, none held
open while a request is made:

1. ``scan``: per active webhook (PostgreSQL: its row locked ``FOR NO KEY UPDATE SKIP LOCKED``, so one worker
   scans it at a time), the wanted events after its ``scanned_seq`` up to the newest are brought in: an object
   with nothing pending gets its first as ``next_seq``. ``seq`` is in commit order, so nothing below the newest can
   commit later and the scan never misses one.
2. ``claim``: due objects (next attempt due, no live lease) are leased to this worker for ``LEASE`` (PostgreSQL:
   ``FOR UPDATE SKIP LOCKED``; SQLite: the writing transaction holds the database), so two workers never send the
   same event to the same webhook at once. A worker killed mid-request leaves its lease to run out: the event is
   sent again (at least once).
3. ``record``: the attempt is written; on success the object's next wanted event becomes ``next_seq`` (the
   webhook's row is read ``FOR SHARE``, so a scan cannot pass between); on failure the attempt count and the next
   attempt's instant move on.

Instants (the lease, the backoff, an attempt's ``at``) are read from the engine's clock, so tests move it by hand.
"""

from __future__ import annotations

import os
import secrets as secrets_module
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, and_, bindparam, func, insert, or_, select, update

from engine import events, reads
from engine.uow import ADMIN_ROLES, Runtime, check_actor, unit_of_work
from engine.views import instant
from persistence.audit import Head
from persistence.models import OBJECT_MODELS, Event, Person, Webhook, WebhookDelivery, WebhookObject
from persistence.repository import format_id
from workflows.errors import NotFound, RuleRefused, UsageError
from workflows.limits import check_text, shown

WEBHOOKS = cast(Table, Webhook.__table__)
OBJECTS = cast(Table, WebhookObject.__table__)
DELIVERIES = cast(Table, WebhookDelivery.__table__)
EVENTS = cast(Table, Event.__table__)
#: How long a worker holds an event it is sending (longer than a request may take: ``scheduler.delivery``).
LEASE = timedelta(seconds=60)


def lease_owner() -> str:
    """Who holds a lease (a webhook delivery's, an e-mail's): this host and process."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"
#: Roles a subscription may be delivered as; the person's reference goes only to these.
ROLES = ("staff", "auditor", "admin")
PERSONAL_DATA_ROLES = ("staff", "admin")
#: A secret given by the admin is at least this long (a generated one is 64 hex digits).
MIN_SECRET = 16
MAX_URL = 2048
#: How many events one scan of a webhook brings in.
SCAN_BATCH = 1000


@dataclass(frozen=True)
class Backoff:
    """After the n-th failed attempt the next is ``first * 2**(n-1)`` later, at most ``cap``; never given up."""

    first: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(hours=1)

    def after(self, attempts: int) -> timedelta:
        wait: timedelta = self.first * 2 ** min(attempts - 1, 32)
        return min(self.cap, wait)


@dataclass(frozen=True)
class Claim:
    """One event leased to a worker for one webhook: what to send and where."""

    webhook: int
    url: str
    secret: str
    seq: int
    kind: str
    object_id: int
    attempt: int
    owner: str
    body: dict[str, Any]

    @property
    def delivery(self) -> str:
        """The delivery's id (``X-Mpoxflow-Delivery``): the same for every attempt of one event to one webhook, so
        a receiver recognises a repeat."""
        return f"webhook-{self.webhook}.event-{self.seq}"


def check_url(url: str) -> str:
    """An http(s) URL with a host, as ``webhook add`` takes it. UsageError naming URL otherwise (not echoed in
    full: it may carry a token)."""
    text = check_text(url.strip(), "url") if url else ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(text) > MAX_URL or " " in text:
        raise UsageError(f"⟦url⟧ must be an http:// or https:// address with a host, at most {MAX_URL} characters "
                         f"(got '{shown(text, 24)}')")
    return text


def check_reason(reason: str | None) -> None:
    """A reason too long or with control characters is a usage error before anything is authorized or read."""
    if reason:
        check_text(reason, "reason")


def webhook_pk(webhook_id: str | int) -> int:
    """``webhook-3`` or ``3`` -> 3. UsageError otherwise."""
    text = str(webhook_id).strip()
    number = text.removeprefix("webhook-")
    if not (number.isascii() and number.isdigit()) or len(number) > 9:
        raise UsageError(f"'{shown(text)}' is no webhook id: give one `mpoxflow webhook list` shows (webhook-1)")
    return int(number)


class Webhooks:
    """Subscriptions (admins only) and their delivery state."""

    def __init__(self, runtime: Runtime, backoff: Backoff | None = None) -> None:
        self.runtime = runtime
        self.backoff = backoff or Backoff()

    # ---- subscriptions -------------------------------------------------------------------------------------

    def add(self, url: str, types: str | list[str], *, actor: str, secret: str | None = None, role: str = "staff",
            personal_data: bool = False, reason: str | None = None) -> dict[str, Any]:
        """Subscribe ``url`` to ``types``; returns its view, with ``secret`` when one was generated (shown only
        now). UsageError (a bad URL, type, role or secret; personal data for an auditor), NotPermitted."""
        check_reason(reason)
        target = check_url(url)
        wanted = types if isinstance(types, list) else events.parse_types(types, "⟦events⟧")
        if not wanted:
            raise UsageError("give ⟦events⟧ the event types to deliver, comma-separated (case.confirmed, "
                             "contact.symptomatic, ...; `case.*` for a kind's; `*` for all)")
        if role not in ROLES:
            raise UsageError(f"'{shown(role)}' is no role a webhook is delivered as: use staff, auditor or admin "
                             "(⟦role⟧)")
        if personal_data and role not in PERSONAL_DATA_ROLES:
            raise UsageError("an auditor's subscription never carries the person's reference: drop "
                             "⟦personal_data⟧ or deliver it as staff (⟦role⟧)")
        generated = secret is None
        if secret is None:
            secret = secrets_module.token_hex(32)
        secret = secret.strip()
        if len(secret) < MIN_SECRET or len(secret) > 128 or not secret.isprintable():
            raise UsageError(f"the secret must be {MIN_SECRET} to 128 printable characters (⟦secret⟧)")
        with unit_of_work(self.runtime, actor, "webhook add", None, ADMIN_ROLES) as uow:
            now = uow.now()
            pk = int(uow.session.execute(insert(WEBHOOKS).returning(WEBHOOKS.c.id), {
                "url": target, "event_types": wanted, "secret": secret, "role": role,
                "personal_data": personal_data, "created_by": uow.actor.name, "created_at": now, "active": True,
                "removed_at": None, "scanned_seq": events.last_seq(uow.session)}).scalar_one())
            self._audit(uow, "webhook_add", pk, reason, {
                "webhook": format_id("webhook", pk), "host": urlsplit(target).hostname, "events": wanted,
                "role": role, "personal_data": personal_data, "secret": "generated" if generated else "given"})
            view = self._view(uow.session.execute(select(WEBHOOKS).where(WEBHOOKS.c.id == pk)).one())
            uow.commit()
        return {**view, "secret": secret} if generated else view

    def remove(self, webhook_id: str | int, *, actor: str, reason: str | None = None) -> dict[str, Any]:
        """Stop a subscription: nothing more is delivered to it (its history stays). NotFound, RuleRefused when it
        is removed already, NotPermitted."""
        check_reason(reason)
        pk = webhook_pk(webhook_id)
        with unit_of_work(self.runtime, actor, "webhook remove", format_id("webhook", pk), ADMIN_ROLES) as uow:
            row = uow.session.execute(select(WEBHOOKS).where(WEBHOOKS.c.id == pk)).one_or_none()
            if row is None:
                raise NotFound(format_id("webhook", pk), "webhook", hint="`mpoxflow webhook list` shows them")
            if not row.active:
                raise RuleRefused(f"{format_id('webhook', pk)} was removed already: nothing to change")
            now = uow.now()
            uow.session.execute(update(WEBHOOKS).where(WEBHOOKS.c.id == pk).values(active=False, removed_at=now))
            self._audit(uow, "webhook_remove", pk, reason, {"webhook": format_id("webhook", pk)})
            view = self._view(uow.session.execute(select(WEBHOOKS).where(WEBHOOKS.c.id == pk)).one())
            uow.commit()
        return view

    def subscriptions(self, *, actor: str) -> list[dict[str, Any]]:
        """Every subscription (removed ones too), never its secret; with how many events wait for it."""
        check_actor(self.runtime, actor, "webhook list", ADMIN_ROLES)
        with self.runtime.db.reading() as session:
            waiting: dict[int, int] = dict(session.execute(
                select(OBJECTS.c.webhook_id, func.count()).where(OBJECTS.c.next_seq.is_not(None))
                .group_by(OBJECTS.c.webhook_id)).all())
            return [{**self._view(row), "waiting": int(waiting.get(row.id, 0))}
                    for row in session.execute(select(WEBHOOKS).order_by(WEBHOOKS.c.id))]

    def deliveries(self, *, actor: str, webhook: str | int | None = None, event: int | None = None,
                   failed: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Delivery attempts, newest first: of one webhook, of one event, only the failed ones."""
        query = select(DELIVERIES).order_by(DELIVERIES.c.id.desc()).limit(events.check_limit(limit, "⟦limit⟧"))
        if webhook is not None:
            query = query.where(DELIVERIES.c.webhook_id == webhook_pk(webhook))
        if event is not None:
            query = query.where(DELIVERIES.c.event_seq == events.check_after(event, "⟦event⟧"))
        if failed:
            query = query.where(DELIVERIES.c.outcome == "failed")
        check_actor(self.runtime, actor, "webhook deliveries", ADMIN_ROLES)
        with self.runtime.db.reading() as session:
            return [delivery_view(row) for row in session.execute(query)]

    @staticmethod
    def _view(row: Any) -> dict[str, Any]:
        return {"id": format_id("webhook", row.id), "url": row.url, "events": list(row.event_types),
                "role": row.role, "personal_data": bool(row.personal_data), "active": bool(row.active),
                "created_by": row.created_by, "created_at": instant(row.created_at),
                "removed_at": instant(row.removed_at), "scanned_seq": row.scanned_seq}

    @staticmethod
    def _audit(uow: Any, trigger: str, pk: int, reason: str | None, data: dict[str, Any]) -> None:
        """A change of a subscription, on the acting admin's own chain (a webhook has no chain of its own)."""
        user = uow.repo.user_by_name(uow.actor.name)
        uow.audit(Head.of(uow.repo.head_row("user", user.id)), kind="user", pk=user.id, workflow=None,
                  trigger=trigger, from_state=None, to_state=None, actor=uow.actor, reason=reason, now=uow.now(),
                  rule=None, data=data, changes=None)

    # ---- delivery state ------------------------------------------------------------------------------------

    def active(self) -> list[int]:
        with self.runtime.db.reading() as session:
            return [int(pk) for pk in session.execute(
                select(WEBHOOKS.c.id).where(WEBHOOKS.c.active.is_(True)).order_by(WEBHOOKS.c.id)).scalars()]

    def scan(self, webhook: int) -> bool:
        """Bring the wanted events after the webhook's ``scanned_seq`` (up to ``SCAN_BATCH``) into its delivery
        state; True when more are left to scan. Nothing when another worker is scanning it (PostgreSQL)."""
        postgresql = self.runtime.db.backend == "postgresql"
        with unit_of_work(self.runtime) as uow:
            session = uow.session
            query = select(WEBHOOKS).where(WEBHOOKS.c.id == webhook, WEBHOOKS.c.active.is_(True))
            if postgresql:
                query = query.with_for_update(skip_locked=True, key_share=True)
            hook = session.execute(query).one_or_none()
            if hook is None:
                return False
            newest = events.last_seq(session)
            if newest <= hook.scanned_seq:
                return False
            rows = events.read(session, after=hook.scanned_seq, until=newest, limit=SCAN_BATCH,
                               types=list(hook.event_types))
            reached = rows[-1].seq if len(rows) == SCAN_BATCH else newest
            first: dict[tuple[str, int], int] = {}
            for row in rows:
                first.setdefault((row.object_kind, row.object_id), row.seq)
            self._bring_in(session, webhook, first)
            session.execute(update(WEBHOOKS).where(WEBHOOKS.c.id == webhook).values(scanned_seq=reached))
            uow.commit()
        return reached < newest

    @staticmethod
    def _bring_in(session: Any, webhook: int, first: dict[tuple[str, int], int]) -> int:
        """Objects with nothing pending get their first new event as ``next_seq``; objects seen for the first time
        get a row. Objects with an event pending keep it (their next is found when it is delivered)."""
        if not first:
            return 0
        known: dict[tuple[str, int], Any] = {}
        for kind in {k for k, _ in first}:
            pks = [pk for k, pk in first if k == kind]
            for row in session.execute(select(OBJECTS).where(
                    OBJECTS.c.webhook_id == webhook, OBJECTS.c.object_kind == kind, OBJECTS.c.object_id.in_(pks))):
                known[(kind, row.object_id)] = row
        new = [{"webhook_id": webhook, "object_kind": k, "object_id": pk, "delivered_seq": 0, "next_seq": seq,
                "attempts": 0, "next_attempt_at": None, "lease_until": None, "lease_owner": None}
               for (k, pk), seq in first.items() if (k, pk) not in known]
        idle = [{"w": webhook, "k": k, "o": pk, "seq": seq} for (k, pk), seq in first.items()
                if (k, pk) in known and known[(k, pk)].next_seq is None]
        if new:
            session.execute(insert(OBJECTS), new)
        if idle:
            session.execute(update(OBJECTS).where(
                OBJECTS.c.webhook_id == _bind("w"), OBJECTS.c.object_kind == _bind("k"),
                OBJECTS.c.object_id == _bind("o"), OBJECTS.c.next_seq.is_(None)).values(
                next_seq=_bind("seq"), attempts=0, next_attempt_at=None), idle)
        return len(new) + len(idle)

    def claim(self, owner: str, limit: int = 20) -> list[Claim]:
        """Lease up to ``limit`` due events (one per webhook and object) to ``owner``, oldest first."""
        postgresql = self.runtime.db.backend == "postgresql"
        with unit_of_work(self.runtime) as uow:
            session, now = uow.session, uow.now()
            query = (select(OBJECTS, WEBHOOKS.c.url, WEBHOOKS.c.secret, WEBHOOKS.c.personal_data,
                            WEBHOOKS.c.role)
                     .join(WEBHOOKS, WEBHOOKS.c.id == OBJECTS.c.webhook_id)
                     .where(WEBHOOKS.c.active.is_(True), OBJECTS.c.next_seq.is_not(None),
                            or_(OBJECTS.c.next_attempt_at.is_(None), OBJECTS.c.next_attempt_at <= now),
                            or_(OBJECTS.c.lease_until.is_(None), OBJECTS.c.lease_until <= now))
                     .order_by(OBJECTS.c.next_seq).limit(limit))
            if postgresql:
                query = query.with_for_update(skip_locked=True, of=OBJECTS)
            due = list(session.execute(query))
            if not due:
                return []
            session.execute(update(OBJECTS).where(
                OBJECTS.c.webhook_id == _bind("w"), OBJECTS.c.object_kind == _bind("k"),
                OBJECTS.c.object_id == _bind("o")).values(lease_until=now + LEASE, lease_owner=owner),
                [{"w": r.webhook_id, "k": r.object_kind, "o": r.object_id} for r in due])
            by_seq = {row.seq: row for row in session.execute(
                select(EVENTS).where(EVENTS.c.seq.in_([r.next_seq for r in due])))}
            people = _people(session, [r for r in due if r.personal_data])
            claims = [Claim(webhook=r.webhook_id, url=r.url, secret=r.secret, seq=r.next_seq, kind=r.object_kind,
                            object_id=r.object_id, attempt=r.attempts + 1, owner=owner,
                            body=_body(r.webhook_id, by_seq[r.next_seq],
                                       people.get((r.object_kind, r.object_id)) if r.personal_data else None))
                      for r in due]
            _record_reads(session, [(c, r.role) for c, r in zip(claims, due, strict=True) if "person" in c.body],
                          now, self.runtime.wall_clock.now())
            uow.commit()
        return claims

    def record(self, claim: Claim, *, delivered: bool, status: int | None, error: str | None,
               duration_ms: int) -> None:
        """Write one attempt and move the object's delivery state on (see the module's docstring). A lease that
        ran out and was taken by another worker meanwhile: the attempt is written, the state left to that one."""
        postgresql = self.runtime.db.backend == "postgresql"
        with unit_of_work(self.runtime) as uow:
            session, now = uow.session, uow.now()
            session.execute(insert(DELIVERIES), {
                "webhook_id": claim.webhook, "event_seq": claim.seq, "attempt": claim.attempt, "at": now,
                "outcome": "delivered" if delivered else "failed", "http_status": status,
                "error": None if error is None else error[:500], "duration_ms": max(0, duration_ms)})
            mine = and_(OBJECTS.c.webhook_id == claim.webhook, OBJECTS.c.object_kind == claim.kind,
                        OBJECTS.c.object_id == claim.object_id, OBJECTS.c.next_seq == claim.seq,
                        OBJECTS.c.lease_owner == claim.owner)
            if delivered:
                hook_query = select(WEBHOOKS.c.scanned_seq, WEBHOOKS.c.event_types).where(
                    WEBHOOKS.c.id == claim.webhook)
                if postgresql:
                    hook_query = hook_query.with_for_update(read=True)
                hook = session.execute(hook_query).one()
                following = [r.seq for r in events.read(
                    session, after=claim.seq, until=hook.scanned_seq, limit=1, types=list(hook.event_types),
                    object_=(claim.kind, claim.object_id))]
                session.execute(update(OBJECTS).where(mine).values(
                    delivered_seq=claim.seq, next_seq=following[0] if following else None, attempts=0,
                    next_attempt_at=None, lease_until=None, lease_owner=None))
            else:
                session.execute(update(OBJECTS).where(mine).values(
                    attempts=claim.attempt, next_attempt_at=now + self.backoff.after(claim.attempt),
                    lease_until=None, lease_owner=None))
            uow.commit()

    def next_attempt(self) -> datetime | None:
        """The earliest instant a waiting event is due to be tried again (None: none waits for a retry)."""
        with self.runtime.db.reading() as session:
            value: datetime | None = session.execute(
                select(OBJECTS.c.next_attempt_at).where(OBJECTS.c.next_seq.is_not(None),
                                                       OBJECTS.c.next_attempt_at.is_not(None))
                .order_by(OBJECTS.c.next_attempt_at).limit(1)).scalar()
        return value


def _bind(name: str) -> Any:
    return bindparam(name)


def _people(session: Any, rows: list[Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """The person of each object (id and reference), for subscriptions that may carry it."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for kind in {r.object_kind for r in rows}:
        table = cast(Table, OBJECT_MODELS[kind].__table__)
        persons = cast(Table, Person.__table__)
        pks = [r.object_id for r in rows if r.object_kind == kind]
        for object_pk, person_pk, ref in session.execute(
                select(table.c.id, table.c.person_id, persons.c.ref)
                .join(persons, persons.c.id == table.c.person_id).where(table.c.id.in_(pks))):
            found[(kind, object_pk)] = {"id": format_id("person", person_pk), "ref": ref}
    return found


def _record_reads(session: Any, carrying: list[tuple[Claim, str]], at: datetime, recorded_at: datetime) -> None:
    """The deliveries that carry a person's reference are reads of personal data (issue 19 item 3, ``what``
    ``webhook``, the webhook its reader, via the worker), recorded with their lease, before they are sent."""
    if not carrying or not reads.RECORDING:
        return
    reads.insert_reads(session, [
        {"at": at, "recorded_at": recorded_at, "actor": format_id("webhook", claim.webhook), "role": role,
         "unit_id": None, "person_id": reads.person_pk(claim.body["person"]["id"]), "what": "webhook",
         "via": "worker", "request_id": f"{claim.delivery}.attempt-{claim.attempt}"}
        for claim, role in carrying])


def _body(webhook: int, event: Any, person: dict[str, Any] | None) -> dict[str, Any]:
    """What is POSTed: the delivery's id, the webhook, the event (internal ids only) and, for a subscription
    that may carry it, the person."""
    body: dict[str, Any] = {"delivery": f"webhook-{webhook}.event-{event.seq}",
                            "webhook": format_id("webhook", webhook), "event": events.view(event)}
    if person is not None:
        body["person"] = person
    return body


def delivery_view(row: Any) -> dict[str, Any]:
    return {"id": format_id("delivery", row.id), "webhook": format_id("webhook", row.webhook_id),
            "event": row.event_seq, "attempt": row.attempt, "at": instant(row.at), "outcome": row.outcome,
            "http_status": row.http_status, "error": row.error, "duration_ms": row.duration_ms}
