"""``mpoxflow advice ID`` (issue 21 item 3): an object's advice sheet as text, JSON or a PDF; ``mpoxflow advice
send ID --email ADDRESS`` and ``mpoxflow advice given ID --channel phone|letter`` (item 4, ``engine.messages``):
the sheet e-mailed by the worker, or recorded as given (``advice`` with an ID and no subcommand is ``advice show``).

The sheet (``engine.advice``) is read as ``--as`` may read the object (its units); it shows no personal data, so
nothing is recorded. ``--pdf FILE`` writes the same content as the page's PDF (WeasyPrint, imported only then).
``entry.cli`` registers this with its own runner (``register``), so this module imports nothing of it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from entry.cli_types import ActorOf, ActorOption, EngineOf, Json, Reason, Run
from entry.parsing import new_file
from workflows.errors import UsageError
from workflows.limits import shown


def pdf_of(sheet: Any) -> bytes:
    """A sheet's PDF for the worker's e-mails (``Worker.advice_pdf``): WeasyPrint imported only when one is sent."""
    from entry.web.advice import pdf

    return pdf(sheet)


class _ShowByDefault(TyperGroup):
    """``advice ID ...`` is ``advice show ID ...``: the sheet stays one word away, as before ``send`` and
    ``given`` came."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return list(super().parse_args(ctx, args))


Sheet = Annotated[str | None, typer.Option("--sheet", metavar="NAME", help="suspected, confirmed, contact or pep "
                                           "(default: the object's one sheet).")]
Lang = Annotated[str | None, typer.Option("--lang", metavar="da|en", help="The sheet's language (default da).")]
ObjectId = Annotated[str, typer.Argument(metavar="ID", help="A case, contact or course (case-7).")]


def register(app: typer.Typer, run: Run, engine_of: EngineOf, actor_of: ActorOf) -> None:
    """Add ``advice`` to ``app``; ``run`` is the CLI's runner (errors to exit statuses), ``engine_of`` opens the
    command's engine, ``actor_of`` resolves ``--as``."""
    group = typer.Typer(cls=_ShowByDefault, no_args_is_help=True,
                        help="Advice sheets: shown, sent by e-mail, or recorded as given by phone or letter.")
    app.add_typer(group, name="advice")

    @group.command("send")
    def send_command(
        ctx: typer.Context, object_id: ObjectId,
        email: Annotated[str, typer.Option("--email", metavar="ADDRESS", help="Where the worker sends the sheet "
                                           "(kept only until it is sent; never logged or audited).")],
        sheet: Sheet = None, lang: Lang = None, actor: ActorOption = None, reason: Reason = None,
        as_json: Json = False,
    ) -> None:
        """Queue the sheet for e-mail to the person: the worker sends it (its text, the PDF attached), retries
        while the server is down, and never sends it twice; each attempt is audited on the object."""
        from engine.messages import Messages

        def action() -> Any:
            return Messages(engine_of(ctx)).send(object_id, sheet, "email", to=email, actor=actor_of(actor),
                                                 reason=reason, language=lang)

        run(as_json, action, lambda m: f"{m['object']}: {m['sheet']} queued for e-mail as {m['id']}")

    @group.command("given")
    def given_command(
        ctx: typer.Context, object_id: ObjectId,
        channel: Annotated[str, typer.Option("--channel", metavar="phone|letter", help="How it was given.")],
        sheet: Sheet = None, lang: Lang = None, actor: ActorOption = None, reason: Reason = None,
        as_json: Json = False,
    ) -> None:
        """Record that the sheet was given by phone or letter (nothing is sent); audited on the object."""
        from engine.messages import Messages

        def action() -> Any:
            return Messages(engine_of(ctx)).given(object_id, sheet, channel, actor=actor_of(actor), reason=reason,
                                                  language=lang)

        run(as_json, action, lambda m: f"{m['object']}: {m['sheet']} recorded as given by {m['channel']} "
                                       f"({m['id']})")

    @group.command("show")
    def advice_command(
        ctx: typer.Context,
        object_id: ObjectId,
        sheet: Sheet = None,
        lang: Lang = None,
        pdf: Annotated[str | None, typer.Option("--pdf", metavar="FILE", help="Write the sheet as a PDF to this new "
                                                "file instead of printing it.")] = None,
        as_user: Annotated[str | None, typer.Option("--as", metavar="USER", help="Read as this user: only what "
                                                    "their units may see (default $MPOXFLOW_ACTOR).")] = None,
        as_json: Json = False,
    ) -> None:
        """Print the advice sheet of a case, contact or course (SST-mpox-7.1 §2.2, §4.1, §5.5, §6.2): the
        guideline's advice to the person, with the object's own dates, each paragraph citing its section; no
        personal data."""
        from engine import advice

        def action() -> Any:
            advice.check_language(lang)
            target = new_file(pdf, "--pdf", "a sheet") if pdf is not None else None
            engine = engine_of(ctx).viewing_as(actor_of(as_user))
            made = advice.make(engine, object_id, sheet, lang)
            if target is None:
                return made
            from entry.web.advice import pdf as render_pdf

            data = render_pdf(made)
            try:
                with target.open("xb") as out:
                    out.write(data)
            except OSError as error:
                raise UsageError(f"--pdf {shown(str(target))}: cannot write there ({error.strerror}): give another "
                                 "file") from error
            return {"sheet": made.name, "object": made.object, "language": made.language, "pdf": str(target),
                    "bytes": len(data)}

        def render(result: Any) -> str:
            if isinstance(result, dict):
                return f"{result['object']}: {result['sheet']} ({result['language']}) written to {result['pdf']}"
            return advice.plain_text(result)

        def as_dict(result: Any) -> Any:
            return result if isinstance(result, dict) else result.as_dict()

        run(as_json, lambda: as_dict(action()) if as_json else action(), render)
