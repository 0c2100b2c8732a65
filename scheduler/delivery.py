"""Webhook delivery (issue 18): POST each leased event, signed, and record the attempt (``engine.webhooks``).

The request: ``POST`` of the JSON body (``{"delivery", "webhook", "event"[, "person"]}``) with
``Content-Type: application/json``, ``X-Mpoxflow-Event`` (the type), ``X-Mpoxflow-Delivery`` (the same for every
attempt of one event to one webhook: a receiver drops a repeat by it) and ``X-Mpoxflow-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>``. A 2xx answer is delivered; anything else (an
answer of another status, a refused connection, a timeout after ``TIMEOUT_SECONDS``) is a failed attempt, tried
again with backoff. Redirects are not followed (a 3xx is a failure: the subscription's URL is the one to fix).

The HTTP client is the standard library's ``http.client`` (no dependency, an explicit timeout on connect and
read, nothing followed behind the subscriber's back). What an attempt records as its error is the exception's type
and message or the status: never the response body, never a header, never the event's content.

A receiver verifies a request like this (refusing stale timestamps as replays)::

    import hashlib, hmac

    def verify(secret: bytes, body: bytes, header: str, now: float, tolerance: int = 300) -> bool:
        # now: the receiver's clock, in Unix seconds
        parts = dict(item.split("=", 1) for item in header.split(","))
        t, v1 = parts["t"], parts["v1"]
        if abs(now - int(t)) > tolerance:      # older than 5 minutes (or from the future): refuse
            return False
        expected = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, v1)
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from engine.clock import Clock
from engine.webhooks import Claim, Webhooks, lease_owner

log = structlog.get_logger("mpoxflow.delivery")

#: Connect and read timeout of one request (well under ``engine.webhooks.LEASE``).
TIMEOUT_SECONDS = 10.0
#: Events leased per claim.
CLAIM_BATCH = 20


@dataclass(frozen=True)
class Answer:
    """What one attempt came to."""

    delivered: bool
    status: int | None
    error: str | None
    duration_ms: int


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Mpoxflow-Signature`` header's value."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = TIMEOUT_SECONDS) -> Answer:
    """POST ``body`` to ``url``; never raises for what the network or the receiver does."""
    parts = urlsplit(url)
    started = time.monotonic()
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = kind(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={**headers, "Content-Length": str(len(body))})
        response = connection.getresponse()
        response.read(65536)  # drained, never kept
        status = response.status
        ok = 200 <= status < 300
        return Answer(ok, status, None if ok else f"HTTP {status}", _ms(started))
    except (TimeoutError, OSError, http.client.HTTPException) as error:
        return Answer(False, None, f"{type(error).__name__}: {str(error)[:200]}", _ms(started))
    finally:
        connection.close()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


Sender = Callable[[str, bytes, dict[str, str]], Answer]


def deliver_pass(webhooks: Webhooks, clock: Clock, *, owner: str | None = None, send: Sender | None = None,
                 limit: int | None = None, stop: Callable[[], bool] | None = None) -> int:
    """One delivery pass: scan every active webhook, then claim, send and record until nothing is due (or
    ``limit`` attempts were made, or ``stop()``); returns the attempts made. ``clock`` gives the signature's
    timestamp (the engine's, as the lease and the backoff)."""
    me = owner or lease_owner()
    sender = send or post
    for webhook in webhooks.active():
        while webhooks.scan(webhook):
            pass
    attempts = 0
    while stop is None or not stop():
        claims = webhooks.claim(me, CLAIM_BATCH if limit is None else min(CLAIM_BATCH, limit - attempts))
        if not claims:
            break
        for claim in claims:
            answer = _send(claim, clock, sender)
            webhooks.record(claim, delivered=answer.delivered, status=answer.status, error=answer.error,
                            duration_ms=answer.duration_ms)
            attempts += 1
            if answer.delivered:
                log.info("webhook_delivered", webhook=f"webhook-{claim.webhook}", event_seq=claim.seq,
                         attempt=claim.attempt)
            else:
                log.warning("webhook_failed", webhook=f"webhook-{claim.webhook}", event_seq=claim.seq,
                            attempt=claim.attempt, error=answer.error)
        if limit is not None and attempts >= limit:
            break
    return attempts


def _send(claim: Claim, clock: Clock, sender: Sender) -> Answer:
    body = encode(claim.body)
    headers = {
        "Content-Type": "application/json", "User-Agent": "mpoxflow-webhooks",
        "X-Mpoxflow-Event": str(claim.body["event"]["type"]), "X-Mpoxflow-Delivery": claim.delivery,
        "X-Mpoxflow-Signature": signature(claim.secret, int(clock.now().timestamp()), body),
    }
    return sender(claim.url, body, headers)
