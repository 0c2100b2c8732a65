"""``mpoxflow workflow ...`` (issue 20): the workflow definitions loaded side by side, which one a new object starts
under (``workflow default``), and the migration of open objects to a later one (``workflow migrate``).

``entry.cli`` registers these with its own runner (``register``), so this module imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

Run = Callable[..., None]
EngineOf = Callable[[typer.Context], Any]
ActorOf = Callable[[str | None], str]

Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who makes the change (default $MPOXFLOW_ACTOR, else your user name).")
]
Reason = Annotated[str | None, typer.Option("--reason", help="Why: goes into the audit entry.")]

workflow_app = typer.Typer(help="The workflow definitions: which are loaded, which one new objects start under, "
                                "and migrating open objects to a later one.", no_args_is_help=True)


def definitions_view() -> list[dict[str, Any]]:
    """Every loaded definition: its name, kind, guideline version and revision, whether the product ships it, and
    the definition it migrates from."""
    from engine.bootstrap import definitions_from_env
    from workflows.registry import SHIPPED, WORKFLOWS, definitions_of

    definitions_from_env()
    return [{"name": d.name, "kind": d.kind, "version": d.version, "revision": d.revision,
             "shipped": d.name in SHIPPED,
             "migrates_from": d.migrates_from.name if d.migrates_from is not None else None}
            for kind in WORKFLOWS for d in definitions_of(kind)]


def register(app: typer.Typer, run: Run, engine_of: EngineOf, actor_of: ActorOf,
             render_rows: Callable[[list[dict[str, Any]], list[str], str], str]) -> None:
    """Add the ``workflow`` group to ``app``; ``run`` is the CLI's runner (errors to exit statuses),
    ``engine_of`` opens the command's engine, ``actor_of`` resolves ``--actor``, ``render_rows`` prints a
    table."""
    app.add_typer(workflow_app, name="workflow")

    @workflow_app.command("list")
    def workflow_list(as_json: Json = False) -> None:
        """The workflow definitions loaded: the product's, and those MPOXFLOW_DEFINITIONS adds."""

        def render(rows: list[dict[str, Any]]) -> str:
            return render_rows(rows, ["name", "kind", "revision", "shipped", "migrates_from"], "no definitions")

        run(as_json, definitions_view, render)

    # ---- which definition a new object starts under (workflow default) ---------------------------------------

    # ---- migrating open objects (workflow migrate) -----------------------------------------------------------
