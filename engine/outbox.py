"""Reading the events outbox (``engine.events``): who may, a page of events after a seq, and following new ones.

Events are the whole database's (every unit's objects), so reading them takes a user who sees everything: an
auditor, or a user who is a member of the root unit (issue 17: the root is above every unit). Anyone else is
refused (NotPermitted, exit 3 / 403), and the refusal is audited as every refusal is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from engine import events
from engine.units import scope_of
from engine.uow import Runtime, refusals_audited
from persistence.repository import Repository
from workflows.errors import NotPermitted


def check_reader(runtime: Runtime, actor: str) -> None:
    """NotPermitted (audited) unless ``actor`` sees every unit."""
    with refusals_audited(runtime), runtime.db.reading() as session:
        scope = scope_of(Repository(session), actor, reading=True)
        if not scope.everything:
            raise NotPermitted(
                f"'events' refused for {actor}: events are every unit's, so only an auditor or a member of the "
                "root unit reads them; ask an admin. This refusal is recorded in the audit log",
                actor=actor, role=scope.role, user=scope.user_id, command="events", target=None)


def read(runtime: Runtime, *, actor: str, after: int | None = 0, limit: int | None = 100,
         types: str | list[str] | None = None) -> list[dict[str, Any]]:
    """Up to ``limit`` events after seq ``after``, oldest first, of ``types`` (a comma-separated string or a
    list; empty: all). UsageError for a bad ``after``, ``limit`` or type, NotPermitted (see the module)."""
    wanted = types if isinstance(types, list) else events.parse_types(types, "⟦type⟧")
    start = events.check_after(after, "⟦after⟧")
    count = events.check_limit(limit, "⟦limit⟧")
    check_reader(runtime, actor)
    with runtime.db.reading() as session:
        return [events.view(row) for row in events.read(session, after=start, limit=count, types=wanted)]


def follow(runtime: Runtime, *, actor: str, after: int | None = 0, types: str | None = None,
           limit: int | None = None, wait: Callable[[float], bool] | None = None,
           stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Every event after ``after``, oldest first, then each new one as it commits, until ``stop()`` is true (or
    ``limit`` events were given). ``wait(seconds)`` waits for new events, returning early when told of one
    (PostgreSQL: a ``LISTEN`` on ``events.EVENTS_CHANNEL``; by default a plain poll every half second)."""
    wanted = events.parse_types(types, "⟦type⟧")
    seq = events.check_after(after, "⟦after⟧")
    left = None if limit is None else events.check_limit(limit, "⟦limit⟧")
    check_reader(runtime, actor)
    pause = wait or _sleep
    while stop is None or not stop():
        page = events.MAX_LIMIT if left is None else left
        with runtime.db.reading() as session:
            # The newest first, then what is wanted up to it: everything up to it has committed (seq is in commit
            # order), so the stream may go on from it even when none of it was of the wanted types.
            newest = events.last_seq(session)
            rows = events.read(session, after=seq, until=newest, limit=page, types=wanted)
        for row in rows:
            yield events.view(row)
            seq = row.seq
            if left is not None:
                left -= 1
                if left == 0:
                    return
        if len(rows) < page:
            seq = max(seq, newest)
            pause(0.5)


def _sleep(seconds: float) -> bool:
    import time

    time.sleep(seconds)
    return False
