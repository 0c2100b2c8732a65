"""``mpoxflow workflow ...`` (issue 20): the workflow definitions loaded side by side, which one a new object starts
under (``workflow default``), and the migration of open objects to a later one (``workflow migrate``).

``entry.cli`` registers these with its own runner (``register``), so this module imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from entry.cli_types import ActorOf, ActorOption, EngineOf, Json, Reason, Run

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
    def workflow_list(ctx: typer.Context, as_json: Json = False) -> None:
        """The workflow definitions loaded: the product's, and those MPOXFLOW_DEFINITIONS adds; `default` marks
        the one each kind's new objects start under now (`mpoxflow workflow defaults`)."""

        def render(rows: list[dict[str, Any]]) -> str:
            return render_rows(rows, ["name", "kind", "revision", "shipped", "migrates_from", "default"],
                               "no definitions")

        def listed() -> list[dict[str, Any]]:
            in_force = engine_of(ctx).workflow_defaults_in_force()
            return [{**row, "default": in_force.get(row["kind"]) == row["name"]} for row in definitions_view()]

        run(as_json, listed, render)

    # ---- which definition a new object starts under (workflow default) ---------------------------------------

    #: How ``workflow default`` names the fields a refusal names: its arguments, and ``--from``.
    default_flags = {"kind": "KIND", "definition": "NAME", "effective_from": "--from"}

    def default_flag(name: str) -> str:
        return default_flags.get(name) or "--" + name.replace("_", "-")

    def render_set(view: dict[str, Any]) -> str:
        return (f"new {view['kind']} objects start under {view['definition']} from {view['effective_from']} "
                f"({view['status']}; until then {view['before']}): {view['id']}, audit seq {view['audit_seq']}")

    def render_defaults(rows: list[dict[str, Any]]) -> str:
        lines = []
        for row in rows:
            status = row["status"] + ("" if row["loaded"] else ", not loaded here")
            since = "the product's own" if row["product"] else f"from {row['effective_from']}"
            set_by = "" if row["product"] else f"  set {row['set_at']} by {row['set_by']}"
            why = f"  ({row['reason']})" if row.get("reason") else ""
            marker = "*" if row["in_force"] else " "
            lines.append(f"{marker} {row['kind']:8} {row['definition']:28} {since:36} {status:22}{set_by}{why}"
                         .rstrip())
        return "\n".join(lines)

    @workflow_app.command("default")
    def workflow_default(
        ctx: typer.Context,
        kind: Annotated[str, typer.Argument(metavar="KIND", help="case, contact or course.")],
        name: Annotated[str, typer.Argument(metavar="NAME", help="The definition new objects of the kind start "
                                            "under, as `mpoxflow workflow list` names it (contact@SST-mpox-7.1-r2).")],
        effective_from: Annotated[str | None, typer.Option(
            "--from", metavar="INSTANT", help="From when: an ISO 8601 instant (without an offset: Danish local "
            "time; a bare date: its 00:00), now or later. Default: now.")] = None,
        actor: ActorOption = None,
        reason: Reason = None,
        as_json: Json = False,
    ) -> None:
        """Choose which definition new objects of a kind start under, from now or from a later instant (admins
        only; audited). Objects already made keep running under their own definition."""
        from entry.parsing import parse_instant

        def action() -> dict[str, Any]:
            since = None if effective_from is None else parse_instant(effective_from, "--from")
            return dict(engine_of(ctx).set_workflow_default(kind, name, effective_from=since, actor=actor_of(actor),
                                                            reason=reason))

        run(as_json, action, render_set, name_of=default_flag)

    @workflow_app.command("defaults")
    def workflow_defaults(ctx: typer.Context, as_json: Json = False) -> None:
        """Which definition each kind's new objects start under, and since when: the product's own, then every
        default set (who set it, when and why), the one in force now marked."""
        run(as_json, lambda: engine_of(ctx).workflow_defaults(), render_defaults)

    # ---- migrating open objects (workflow migrate) -----------------------------------------------------------

    @workflow_app.command("migrate")
    def workflow_migrate(
        ctx: typer.Context,
        source: Annotated[str, typer.Option("--from", metavar="A", help="The definition the objects run under now "
                                            "(contact@SST-mpox-7.1).", show_default=False)],
        target: Annotated[str, typer.Option("--to", metavar="B", help="The later definition to move them to; it "
                                            "declares the migration from A (`mpoxflow diagram --diff A B`).",
                                            show_default=False)],
        where: Annotated[list[str] | None, typer.Option(
            "--where", metavar="FIELD=VALUE[,VALUE...]", help="Only these objects: state=monitored, "
            "id=contact-3,contact-7, unit=unit-2 (repeat for several conditions: all must hold).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be migrated, and how, and "
                                              "write nothing.")] = False,
        actor: ActorOption = None,
        reason: Reason = None,
        as_json: Json = False,
    ) -> None:
        """Move the open objects of definition A to definition B (admins only): each one audited as a `migrated`
        transition, with the state B maps it to and the timers B's rules compute from its facts; print each
        object's change and each object that cannot move, with the reason."""

        def action() -> dict[str, Any]:
            report: dict[str, Any] = engine_of(ctx).migrate(source, target, where=where or [], dry_run=dry_run,
                                                           actor=actor_of(actor), reason=reason)
            return report

        run(as_json, action, render_migration)


def render_migration(report: dict[str, Any]) -> str:
    """The migration's report as text: a summary line, then each object migrated (its state, facts and timers),
    then each object not migrated with its reason."""
    counts = report["counts"]
    lines = [f"{report['from']} → {report['to']}: {counts['migrated']} migrated, {counts['not_migrated']} not "
             f"migrated, of {counts['considered']} open" + ("  (dry run: nothing was written)"
                                                            if report["dry_run"] else "")]
    for item in report["migrated"]:
        lines.append(f"  {item['object']}  {item['from_state']} → {item['to_state']}")
        for name, value in sorted(item["changes"].items()):
            lines.append(f"      {name}: {value}")
        for timer in item["cancelled"]:
            lines.append(f"      - {timer['name']} {timer['due_at']} ({timer['timer']}, cancelled)")
        for timer in item["armed"]:
            lines.append(f"      + {timer['name']} {timer['due_at']}")
        for timer in item["kept"]:
            lines.append(f"      = {timer['name']} {timer['due_at']} ({timer['timer']})")
    if report["not_migrated"]:
        lines.append("not migrated:")
        lines.extend(f"  {item['object']}  {item['state'] or '-'}: {item['reason']}" for item in report["not_migrated"])
    return "\n".join(lines)
