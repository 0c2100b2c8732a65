"""``mpoxflow report`` (issue 21 item 1): the overview's figures as files, for a reader's units.

One file per figure (PNG, SVG or both), one PDF with every figure a page (``overview.pdf``), and each figure's
numbers as CSV (UTF-8 with a header; column names in ``--lang``, Danish by default). ``entry.cli`` registers it
with its own runner (``register``), so this module imports nothing of it; matplotlib is imported when the
command draws, never when the CLI starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

Run = Callable[..., None]
EngineOf = Callable[[typer.Context], Any]
ActorOf = Callable[[str | None], str]

FORMATS = {"png": ("png",), "svg": ("svg",), "both": ("png", "svg")}
#: The PDF with every figure, one a page.
PDF_NAME = "overview.pdf"


def write_report(engine: Any, out: Path, formats: tuple[str, ...], lang: str) -> list[str]:
    """The report's files in ``out`` (made when missing); returns their names, in the order written."""
    from engine.overview import Overview
    from entry.web import figures, i18n

    i18n.activate(lang)
    computed = Overview(engine.runtime).figures()
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for name, figure in computed.items():
        for fmt in formats:
            (out / f"{name}.{fmt}").write_bytes(figures.render(figure, fmt))
            written.append(f"{name}.{fmt}")
        (out / f"{name}.csv").write_text(figures.csv_of(figure), encoding="utf-8", newline="")
        written.append(f"{name}.csv")
    (out / PDF_NAME).write_bytes(figures.pdf(computed.values()))
    written.append(PDF_NAME)
    return written


def register(app: typer.Typer, run: Run, engine_of: EngineOf, actor_of: ActorOf) -> None:
    """Add ``report`` to ``app``; ``run`` is the CLI's runner (errors to exit statuses), ``engine_of`` opens the
    command's engine, ``actor_of`` resolves ``--as``."""

    @app.command("report")
    def report_command(
        ctx: typer.Context,
        out: Annotated[str, typer.Option("--output", "--out", metavar="DIR", help="The folder the files are "
                                         "written to (made when missing).")],
        fmt: Annotated[str, typer.Option("--format", help="png, svg or both: the figures' own files (the PDF and "
                                         "the CSV files are always written).")] = "png",
        lang: Annotated[str, typer.Option("--lang", help="da or en: the words on the figures and the CSV files' "
                                          "column names.")] = "da",
        as_user: Annotated[str | None, typer.Option("--as", metavar="USER", help="Read as this user: only what "
                                                    "their units may see (default $MPOXFLOW_ACTOR, else your user "
                                                    "name).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")] = False,
    ) -> None:
        """The overview's figures (epidemic curve, contacts under monitoring, PEP windows closing, doses 2 due,
        deadlines missed) as PNG/SVG files, one PDF and CSV files, for the reader's units at the clock's now."""

        def action() -> dict[str, Any]:
            from workflows.errors import UsageError
            from workflows.limits import shown

            if fmt not in FORMATS:
                raise UsageError(f"⟦format⟧ '{shown(fmt)}' is not a format of the report: use png, svg or both")
            if lang not in ("da", "en"):
                raise UsageError(f"⟦lang⟧ '{shown(lang)}' is not a language of the report: use da or en")
            target = Path(out)
            if target.exists() and not target.is_dir():
                raise UsageError(f"⟦output⟧ {shown(out)} is a file: give a folder (it is made when missing)")
            engine = engine_of(ctx).viewing_as(actor_of(as_user))
            return {"out": str(target), "files": write_report(engine, target, FORMATS[fmt], lang)}

        run(as_json, action, lambda r: "\n".join(str(Path(r["out"]) / name) for name in r["files"]), _flag)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")
