"""Events and webhooks on the web (issue 18): ``GET /api/events`` for systems with a token, and the admins' page
``/webhooks`` (the subscriptions and their recent delivery attempts; subscriptions are made on the command line).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from engine import events, outbox
from engine.core import ADMIN_ROLES
from engine.webhooks import Webhooks
from entry.web import i18n
from entry.web.app import ERROR_RESPONSES
from entry.web.pages import Eng, Who, render, request_language

api_router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
router = APIRouter(include_in_schema=False, dependencies=[Depends(request_language)])

#: An attempt's outcome as the page names it.
OUTCOME_NAMES = {"delivered": i18n.N_("delivered"), "failed": i18n.N_("failed")}
#: How many attempts the page shows, newest first.
RECENT = 50


@api_router.get("/events", operation_id="events", tags=["events"])
def events_api(who: Who, engine: Eng, after: Annotated[int, Query(ge=0, le=events.MAX_SEQ)] = 0,
               limit: Annotated[int, Query(ge=1, le=events.MAX_LIMIT)] = 100,
               type: Annotated[str | None, Query(max_length=2000)] = None,  # noqa: A002 - the CLI's --type
               ) -> list[dict[str, Any]]:
    """Events after seq `after`, oldest first (transitions, assignments, timer firings; internal ids only):
    page on with the last seq you got. `type`: comma-separated event types. For an auditor or a member of the
    root unit."""
    return outbox.read(engine.runtime, actor=who.name, after=after, limit=limit, types=type)


@router.get("/webhooks")
def webhooks_page(request: Request, who: Who, engine: Eng) -> Response:
    """The subscriptions and their recent attempts (admins only; the refusal is audited)."""
    engine.authorize(who.name, "webhook list", ADMIN_ROLES)
    hooks = Webhooks(engine.runtime)
    return render(request, "webhooks.html", hooks=hooks.subscriptions(actor=who.name),
                  deliveries=hooks.deliveries(actor=who.name, limit=RECENT), outcome_names=OUTCOME_NAMES)
