"""``mpoxflow events`` and ``mpoxflow webhook ...`` (issue 18): the outbox as JSON Lines, and subscriptions.

``entry.cli`` registers these with its own runner (``register``), so this module imports nothing of it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from entry.cli_types import ActorOf, ActorOption, EngineOf, Json, Reason, Run

webhook_app = typer.Typer(help="Webhooks: events POSTed to other systems, signed, at least once, in order per "
                               "object (admins only).", no_args_is_help=True)


def _line(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _waiter(engine: Any) -> tuple[Callable[[float], bool] | None, Callable[[], None]]:
    """PostgreSQL: a wait that a commit of new events ends at once (LISTEN), and how to close it; SQLite: none
    (the stream polls)."""
    if engine.db.backend != "postgresql":
        return None, lambda: None
    from engine.events import EVENTS_CHANNEL

    connection = engine.db.listener(EVENTS_CHANNEL)

    def wait(seconds: float) -> bool:
        return any(True for _ in connection.notifies(timeout=seconds, stop_after=1))

    return wait, connection.close


def register(app: typer.Typer, run: Run, engine_of: EngineOf, actor_of: ActorOf,
             render_rows: Callable[[list[dict[str, Any]], list[str], str], str]) -> None:
    """Add ``events`` and the ``webhook`` group to ``app``; ``run`` is the CLI's runner (errors to exit
    statuses), ``engine_of`` opens the command's engine, ``actor_of`` resolves ``--actor``/``--as``,
    ``render_rows`` prints a table."""

    @app.command("events")
    def events_command(
        ctx: typer.Context,
        after: Annotated[int, typer.Option("--after", help="Only events after this seq (the last one you saw).")] = 0,
        follow: Annotated[bool, typer.Option("--follow", help="Keep streaming new events as they commit, until "
                                                             "interrupted.")] = False,
        type_: Annotated[str | None, typer.Option("--type", metavar="T,...", help="Only these event types "
                                                  "(comma-separated; case.* for a kind's).")] = None,
        limit: Annotated[int | None, typer.Option("--limit", help="At most this many events (default 100 "
                                                  "without --follow, 1 to 1000).")] = None,
        types: Annotated[bool, typer.Option("--types", help="List the event types, one per line.")] = False,
        as_user: Annotated[str | None, typer.Option("--as", metavar="USER", help="Read as this user (an auditor "
                                                    "or a member of the root unit; default $MPOXFLOW_ACTOR).")] = None,
    ) -> None:
        """Print events (transitions, assignments, timer firings) as JSON Lines, oldest first; internal ids
        only. With --follow, new ones as they commit."""
        from engine import events, outbox

        if types:
            typer.echo("\n".join(events.event_types()))
            return

        def action() -> None:
            engine = engine_of(ctx)
            actor = actor_of(as_user)
            if not follow:
                for event in outbox.read(engine.runtime, actor=actor, after=after, limit=limit, types=type_):
                    _line(event)
                return
            outbox.check_reader(engine.runtime, actor)
            wait, close = _waiter(engine)
            try:
                for event in outbox.follow(engine.runtime, actor=actor, after=after, types=type_, limit=limit,
                                           wait=wait):
                    _line(event)
            except (KeyboardInterrupt, BrokenPipeError):
                pass  # interrupted, or the reader went away (`| head`): the stream simply ends
            finally:
                close()

        run(False, action, lambda r: "")

    app.add_typer(webhook_app, name="webhook")

    def hooks(ctx: typer.Context, engine: Any = None) -> Any:
        from engine.webhooks import Webhooks

        return Webhooks((engine or engine_of(ctx)).runtime)

    @webhook_app.command("add")
    def webhook_add(
        ctx: typer.Context,
        url: Annotated[str, typer.Argument(help="Where the events are POSTed (http:// or https://).")],
        events_: Annotated[str, typer.Option("--events", metavar="T,...", help="The event types to deliver "
                                             "(`mpoxflow events --types`; * for all).")],
        secret_from_stdin: Annotated[bool, typer.Option("--secret-from-stdin", help="Read the signing secret from "
                                                        "the first line of stdin (else one is made and printed "
                                                        "once).")] = False,
        role: Annotated[str, typer.Option("--role", help="The role it is delivered as: staff, auditor or "
                                          "admin.")] = "staff",
        personal_data: Annotated[bool, typer.Option("--personal-data", help="Carry the person's id and reference "
                                                    "(staff or admin subscriptions only).")] = False,
        actor: ActorOption = None,
        reason: Reason = None,
        as_json: Json = False,
    ) -> None:
        """Subscribe a URL to events (admins only; audited)."""

        def action() -> dict[str, Any]:
            from workflows.errors import UsageError

            secret = None
            if secret_from_stdin:
                secret = sys.stdin.readline().strip()
                if not secret:
                    raise UsageError("--secret-from-stdin read no secret: pipe it on the first line of stdin")
            view: dict[str, Any] = hooks(ctx).add(url, events_, actor=actor_of(actor), secret=secret, role=role,
                                                  personal_data=personal_data, reason=reason)
            return view

        def render(view: dict[str, Any]) -> str:
            text = f"{view['id']}  {view['url']}  {','.join(view['events'])}  as {view['role']}"
            if "secret" in view:
                text += f"\nsigning secret: {view['secret']}\nkeep it secret: it is shown only now"
            return text

        run(as_json, action, render, _flag)

    @webhook_app.command("list")
    def webhook_list(ctx: typer.Context, actor: ActorOption = None, as_json: Json = False) -> None:
        """The subscriptions (never their secrets), removed ones too, with how many objects wait for delivery."""
        run(as_json, lambda: hooks(ctx).subscriptions(actor=actor_of(actor)),
            lambda rows: render_rows(rows, ["id", "url", "events", "role", "personal_data", "active", "waiting",
                                            "created_by", "created_at"], "no webhooks"))

    @webhook_app.command("remove")
    def webhook_remove(
        ctx: typer.Context,
        webhook: Annotated[str, typer.Argument(help="The webhook (webhook-1).")],
        actor: ActorOption = None,
        reason: Reason = None,
        as_json: Json = False,
    ) -> None:
        """Stop delivering to a webhook (admins only; audited). Its attempts stay visible."""
        run(as_json, lambda: hooks(ctx).remove(webhook, actor=actor_of(actor), reason=reason),
            lambda v: f"{v['id']} removed", _flag)

    @webhook_app.command("deliveries")
    def webhook_deliveries(
        ctx: typer.Context,
        webhook: Annotated[str | None, typer.Argument(help="Only this webhook's attempts.")] = None,
        event: Annotated[int | None, typer.Option("--event", metavar="SEQ", help="Only this event's.")] = None,
        failed: Annotated[bool, typer.Option("--failed", help="Only failed attempts.")] = False,
        limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first (1 to 1000).")] = 100,
        actor: ActorOption = None,
        as_json: Json = False,
    ) -> None:
        """Every delivery attempt, newest first: outcome, HTTP status, error, duration (admins only)."""
        run(as_json, lambda: hooks(ctx).deliveries(actor=actor_of(actor), webhook=webhook, event=event,
                                                   failed=failed, limit=limit),
            lambda rows: render_rows(rows, ["id", "webhook", "event", "attempt", "at", "outcome", "http_status",
                                            "error", "duration_ms"], "no delivery attempts"), _flag)

    @webhook_app.command("deliver")
    def webhook_deliver(
        ctx: typer.Context,
        once: Annotated[bool, typer.Option("--once", help="One delivery pass, then exit (the worker delivers "
                                                         "continuously).")] = False,
        limit: Annotated[int | None, typer.Option("--limit", help="At most this many attempts.")] = None,
        as_json: Json = False,
    ) -> None:
        """Deliver what is due to the webhooks now, as the worker does (for operators and tests)."""

        def action() -> dict[str, Any]:
            from scheduler.delivery import deliver_pass
            from workflows.errors import UsageError

            if not once:
                raise UsageError("give --once (continuous delivery is the worker's: `mpoxflow worker`)")
            if limit is not None and limit < 1:
                raise UsageError("--limit is a number of attempts: give 1 or more")
            engine = engine_of(ctx)
            engine.persist_clock = False
            return {"attempts": deliver_pass(hooks(ctx, engine), engine.clock, limit=limit)}

        run(as_json, action, lambda r: f"{r['attempts']} attempt(s)")


def _flag(field: str) -> str:
    """Option names as this group's commands spell them (``personal_data`` is ``--personal-data``; ``url`` is the
    URL argument)."""
    return "URL" if field == "url" else "--" + field.replace("_", "-")
