"""The ``mpoxflow`` command line: the contract in ``../shared/CLI.md``.

Exit status: 0 done; 2 wrong usage; 3 refused by a rule; 4 no such object; 5 conflict. With ``--json`` a
command prints exactly one JSON document on stdout (on failure: ``{"error": ..., "exit_code": ...}``).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

# First of the project's modules: entry.logs imports structlog (before the engine does) without Rich.
from entry.logs import LOG_FORMATS, configure_logging

# isort: split

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

import entry.advice_cli
import entry.chains_cli
import entry.overview_cli
from engine.accounts import Accounts
from engine.auditing import EXPORT_FORMATS
from engine.bootstrap import database_url, default_actor, init_database, open_engine
from engine.core import ADMIN_ROLES, TASK_OUTCOMES, TIMER_STATUSES, Engine, RetryPolicy
from engine.notes import ATTEMPT_KINDS, CHANNELS, HARD_TO_REACH_AFTER, OUTCOMES
from engine.views import instant
from entry import coercion, events_cli, workflow_cli
from entry.operations import LISTABLE, run_operation
from entry.parsing import (
    MAX_DAYS,
    check_count,
    day_bound,
    new_file,
    parse_choice,
    parse_date,
    parse_instant,
    parse_list,
    shown,
)
from persistence.database import Database, StorageError
from scheduler import firing
from workflows.errors import MpoxflowError, UsageError
from workflows.operations import Field, Operation, rendered
from workflows.registry import OPERATIONS, PROFILES, WORKFLOWS

coercion.install()  # typer coerces this CLI's plain parameters without loading pydantic


class _JsonUsageErrors(TyperGroup):
    """With ``--json``, a usage error the parser finds (a missing or malformed option) is also printed as one
    JSON document on stdout, like every other error; the usual message still goes to stderr, exit status 2."""

    def invoke(self, ctx: Any) -> Any:
        wants_json = "--json" in [*ctx._protected_args, *ctx.args]
        try:
            return super().invoke(ctx)
        except TyperException as error:
            code = getattr(error, "exit_code", 1)
            if wants_json and code == UsageError.exit_code and hasattr(error, "format_message"):
                typer.echo(json.dumps({"error": error.format_message(), "exit_code": code, "rule": None}))
            raise


app = typer.Typer(
    cls=_JsonUsageErrors,
    name="mpoxflow",
    help="Mpox case and contact management by SST's guideline (Retningslinjer for håndtering af mpox, v7.1).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
clock_app = typer.Typer(help="The simulated clock of a training database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(clock_app, name="clock")

Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
Actor = Annotated[
    str | None, typer.Option("--actor", help="Who makes the change (default $MPOXFLOW_ACTOR, else your user name).")
]
Reason = Annotated[str | None, typer.Option("--reason", help="Why: goes into the audit entry.")]
ReadAs = Annotated[
    str | None, typer.Option("--as", metavar="USER", help="Read as this user: only what their units may see "
                             "(default $MPOXFLOW_ACTOR, else your user name).")
]
IfVersion = Annotated[
    int | None,
    typer.Option("--if-version", help="Refuse with exit 5 unless the object is still at this version."),
]



@dataclass
class Options:
    db: str | None


def _options(ctx: typer.Context) -> Options:
    return ctx.find_root().obj  # type: ignore[no-any-return]


@app.callback()
def main_options(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Database URL (default $MPOXFLOW_DATABASE_URL, else ./mpoxflow.db).",
                     show_default=False),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="json or console (default: json unless on a terminal).")
    ] = None,
) -> None:
    if log_format is not None and log_format not in LOG_FORMATS:
        raise typer.BadParameter(f"{log_format!r}: use json or console", param_hint="--log-format")
    configure_logging(log_format)
    ctx.obj = Options(db=db)


# ---- running a command ---------------------------------------------------------------------------------------


def cli_flag(field: str) -> str:
    """How a declared field is named on the command line: ``assessed_by`` is ``--assessed-by``."""
    return "--" + field.replace("_", "-")


def _actor(actor: str | None) -> str:
    return actor or default_actor()


def _run(as_json: bool, action: Callable[[], Any], render: Callable[[Any], str],
         name_of: Callable[[str], str] = cli_flag) -> None:
    """Run ``action``; print its result as JSON or as text; turn errors into a message (fields named by
    ``name_of``: the command's options) and an exit status."""
    try:
        result = action()
    except MpoxflowError as error:
        message = error.render(name_of)
        typer.echo(f"mpoxflow: {message}", err=True)
        if as_json:
            typer.echo(json.dumps({"error": message, "exit_code": error.exit_code, "rule": error.rule,
                                   "key": error.key, "options": [name_of(f) for f in error.fields],
                                   "params": error.params}, ensure_ascii=False))
        raise typer.Exit(error.exit_code) from None
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        text = render(result)
        if text:
            typer.echo(text)


def _engine(ctx: typer.Context, first_admin: str | None = None) -> Engine:
    """The engine for this command; its database connections are closed when the command ends."""
    engine = open_engine(_options(ctx).db, first_admin=first_admin)
    ctx.find_root().call_on_close(engine.db.dispose)
    # One command: its reads of personal data share an id, each person once, written as each call returns; one
    # shown without a --as reader is read by whoever runs the command (issue 19 item 3).
    engine.reads.begin(via="cli", reader=default_actor())
    return engine


def _reader(ctx: typer.Context, as_user: str | None) -> Engine:
    """The engine for a reading command, reading as ``as_user``: only the objects of their units and the units
    below them (issue 17)."""
    return _engine(ctx).viewing_as(_actor(as_user))


# ---- rendering -----------------------------------------------------------------------------------------------


_HEADER_KEYS = ("id", "kind", "state", "workflow", "version", "timers", "as_of", "audit_seq")


def render_object(view: dict[str, Any]) -> str:
    head = f"{view['id']}  {view.get('state') or view.get('status') or view.get('kind')}"
    if "workflow" in view:
        head += f"  ({view['workflow']}, version {view['version']})"
    if view.get("as_of"):
        head += f"  as of {view['as_of']} (rebuilt from the audit log up to seq {view['audit_seq']})"
    lines = [head]
    for key, value in view.items():
        if key in _HEADER_KEYS or value in (None, [], False):
            continue
        shown = ", ".join(_item(v) for v in value) if isinstance(value, list) else value
        lines.append(f"  {key:<20} {shown}")
    if view.get("timers"):
        lines.append("  timers:")
        for t in view["timers"]:
            extra = "  done " + t["satisfied_at"] if t.get("satisfied_at") else ""
            if t.get("outcome"):
                extra += f"  resolved {t['outcome']} {t['resolved_at']}"
            lines.append(f"    {t['id']:<10} {t['name']:<26} {t['due_at']}  {t['status']}{extra}  ({t['rule']})")
    return "\n".join(lines)


def _item(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(str(v) for v in value.values())
    return str(value)


def render_rows(rows: list[dict[str, Any]], columns: list[str], empty: str) -> str:
    if not rows:
        return empty
    table = [columns] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def render_audit(entries: list[dict[str, Any]]) -> str:
    return render_rows(
        [{**e, "change": f"{e['from'] or '∅'} → {e['to'] or '∅'}", "by": f"{e['actor']} ({e['role']})"}
         for e in entries],
        ["seq", "at", "object", "trigger", "change", "by", "rule", "reason"],
        "no audit entries",
    )


def render_timeline(entries: list[dict[str, Any]]) -> str:
    """One object's life, a paragraph per entry: when, what, who, why, under which rule, what it armed."""
    lines = [f"{entries[0]['object']}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"]
    for e in entries:
        change = e["to"] if e["from"] == e["to"] or e["from"] is None else f"{e['from']} → {e['to']}"
        lines.append(f"#{e['pos']:<3} {e['at']}  {e['trigger']}" + (f"  {change}" if change else "")
                     + f"  by {e['actor']} ({e['role']})" + (f"  [{e['rule']}]" if e["rule"] else ""))
        if e["reason"]:
            lines.append(f"       why: {e['reason']}")
        if e.get("changes"):
            changed = [f"{k}={_cell(v)}" for k, v in e["changes"].items() if k != "state" and v not in (None, [])]
            if changed:
                lines.append("       set: " + ", ".join(changed))
        for t in e["timers_armed"]:
            lines.append(f"       armed {t['name']} due {t['due_at']} ({t['rule']})")
        for t in e["timers_cancelled"]:
            lines.append(f"       cancelled {t['name']}: {t['why']}")
        for t in e["timers_done"]:
            lines.append(f"       done: {t['name']}")
    return "\n".join(lines)


def render_verify(r: dict[str, Any]) -> str:
    if r["intact"]:
        return f"intact: {r['entries']} entries of {r['objects']} objects, every hash chain whole"
    first = r["first_bad_seq"] if r["first_bad_seq"] is not None else "- (no entry left to name)"
    lines = [f"NOT intact: {r['problem_count']} problem(s) in {r['entries']} entries; first bad seq {first}"]
    lines += [f"  seq {p['seq'] if p['seq'] is not None else '-'}  {p['problem']:<9} {p['object']}: {p['detail']}"
              for p in r["problems"]]
    return "\n".join(lines)


def render_replay(r: dict[str, Any]) -> str:
    if r["matches"]:
        return f"the log rebuilds all {r['objects']} objects exactly as the tables hold them"
    lines = [f"{len(r['differences'])} difference(s) between the log and the tables ({r['objects']} objects):"]
    lines += [f"  {d['object']}  {d['field']}: log {d['log']!r}, table {d['table']!r}" for d in r["differences"]]
    return "\n".join(lines)


def render_fired(result: dict[str, Any]) -> str:
    lines = [f"clock at {result['now']}"]
    for f in result["fired"]:
        lines.append(f"  {f['fired_at']}  {f['timer']} {f['name']} on {f['object']}: "
                     f"{f['from']} → {f['to']} ({f['status']})")
    return "\n".join(lines)


# ---- init, db, clock -----------------------------------------------------------------------------------------


@app.command()
def init(
    ctx: typer.Context,
    simulated_clock: Annotated[
        str | None, typer.Option("--simulated-clock", help="Start a training database on a simulated clock at "
                                                           "this instant (ISO 8601; local time if no offset).")
    ] = None,
    admin: Annotated[
        str | None, typer.Option("--admin", help="The first admin of a new database (default $MPOXFLOW_ACTOR, "
                                                 "else your user name).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Create or upgrade the database; with --simulated-clock it keeps its own "now". A new database gets its
    first admin (--admin) and the scheduler's `timer` user."""

    def action() -> dict[str, Any]:
        start = parse_instant(simulated_clock, "--simulated-clock") if simulated_clock else None
        with Database(database_url(_options(ctx).db)) as db:
            init_database(db, start)
            url, revision = db.engine.url.render_as_string(hide_password=True), db.schema_revision()
        engine = _engine(ctx, first_admin=admin)
        return {"database": url, "revision": revision, "simulated": engine.clock.simulated,
                "now": instant(engine.clock.now()), "users": engine.users()}

    _run(as_json, action, lambda r: f"database ready at revision {r['revision']}"
         + (f", simulated clock at {r['now']}" if r["simulated"] else ", real time"))


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, as_json: Json = False) -> None:
    """Apply every migration not applied yet."""

    def action() -> dict[str, Any]:
        with Database(database_url(_options(ctx).db)) as db:
            applied = db.upgrade()
            return {"revision": db.schema_revision(), "upgraded": applied}

    _run(as_json, action, lambda r: f"schema at revision {r['revision']}" + (" (upgraded)" if r["upgraded"] else ""))


@clock_app.command("show")
def clock_show(ctx: typer.Context, as_json: Json = False) -> None:
    """Print the simulated clock's now."""

    def action() -> dict[str, Any]:
        clock = _engine(ctx).simulated_clock
        return {"now": instant(clock.now()), "simulated": True}

    _run(as_json, action, lambda r: r["now"])


@clock_app.command("advance")
def clock_advance(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option("--to", help="Move to this instant.")] = None,
    days: Annotated[int | None, typer.Option("--days", help="Move forward this many days.")] = None,
    hours: Annotated[int | None, typer.Option("--hours", help="Move forward this many hours.")] = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Move the simulated clock forward, firing every timer that falls due on the way, each at its own due
    instant, in due order. --days counts Danish calendar days (same local time of day), --hours real hours."""

    def action() -> dict[str, Any]:
        target = parse_instant(to, "--to") if to is not None else None
        return firing.clock_advance(_engine(ctx), _actor(actor), to=target, days=days, hours=hours)

    _run(as_json, action, render_fired)


# ---- the change operations, made from their declarations (workflows.registry.OPERATIONS) -----------------------

#: The Typer group of each kind's operations (``case confirm`` is in ``case``), helped by its profile's summary.
OPERATION_GROUPS = {p.group: typer.Typer(help=p.summary, no_args_is_help=True) for p in PROFILES.values()}
for _name, _group_app in OPERATION_GROUPS.items():
    app.add_typer(_group_app, name=_name)


def option_name(op: Operation, name: str) -> str:
    """How the operation ``op`` names its field ``name`` on the command line (``--pcr-on``); a field it does not
    declare (named in a help text about another command) is named the same way."""
    return cli_flag(name)


def _option(op: Operation, field: Field) -> tuple[Any, Any, Any]:
    """The annotation, Typer parameter and default of one declared field's option."""
    flag = option_name(op, field.name)
    text = rendered(field.help, lambda name: option_name(op, name)) or None
    if field.type == "flag":
        if field.default is None:  # three-way: set, unset, or left as it is
            name = flag.removeprefix("--")
            return bool | None, typer.Option(f"--{name}/--not-{name}", help=text, show_default=False), None
        return bool, typer.Option(flag, help=text), bool(field.default)
    kind: Any = int if field.type == "count" else str
    default = field.default if field.type == "choice" else None
    if field.required:
        return kind, typer.Option(flag, help=text), inspect.Parameter.empty
    return kind | None, typer.Option(flag, help=text), default


def _parsed(op: Operation, field: Field, value: Any) -> Any:
    """A typed value of one field from what was typed; raises UsageError saying what to type instead."""
    if value is None or field.type in ("flag", "count", "id", "text", "note"):
        return value
    flag = option_name(op, field.name)
    if field.type == "date":
        return parse_date(value, flag)
    if field.type == "choice":
        return parse_choice(value, field.choices, field.noun)
    if field.type == "yesno":
        return parse_choice(value, ("yes", "no"), field.noun) == "yes"
    items = parse_list(value, field.choices, field.noun)
    fewest = field.bounds[0]
    if fewest and len(items) < fewest:
        raise UsageError(f"{flag} needs at least one of " + ", ".join(field.choices))
    return items


def operation_command(op: Operation, group: typer.Typer) -> None:
    """Add to ``group`` one Typer command for a declared operation: an option per field (plus ``ID`` for a change
    of an existing object, ``--actor``, ``--reason``, ``--if-version``, ``--json``), parsed, prepared and run by the
    engine."""
    P = inspect.Parameter
    id_name = f"{op.kind}_id"
    params = [P("ctx", P.KEYWORD_ONLY, annotation=typer.Context)]
    if not op.creates:
        params.append(P(id_name, P.KEYWORD_ONLY, annotation=Annotated[
            str, typer.Argument(metavar="ID", help=op.id_help)]))
    for field in op.fields:
        kind, option, default = _option(op, field)
        params.append(P(field.name, P.KEYWORD_ONLY, annotation=Annotated[kind, option], default=default))
    reason = Reason if op.reason_help is None else Annotated[str | None, typer.Option("--reason",
                                                                                       help=op.reason_help)]
    params += [P("actor", P.KEYWORD_ONLY, annotation=Actor, default=None),
               P("reason", P.KEYWORD_ONLY, annotation=reason, default=None)]
    if op.versioned:
        params.append(P("if_version", P.KEYWORD_ONLY, annotation=IfVersion, default=None))
    params.append(P("as_json", P.KEYWORD_ONLY, annotation=Json, default=False))

    def command(**given: Any) -> None:
        ctx: typer.Context = given["ctx"]

        def action() -> dict[str, Any]:
            values = {f.name: _parsed(op, f, given[f.name]) for f in op.fields}
            return run_operation(_engine(ctx), op, {**values, "reason": given["reason"]},
                                 actor=_actor(given["actor"]), object_id=given.get(id_name),
                                 if_version=given.get("if_version"))

        _run(given["as_json"], action, render_object, lambda name: option_name(op, name))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = op.operation_id
    group.command(op.verb, help=rendered(op.help, lambda name: option_name(op, name)))(command)


def _group(name: str) -> typer.Typer:
    """The Typer group ``name`` of operations; a workflow's new group is added to ``mpoxflow`` when first seen."""
    if name not in OPERATION_GROUPS:
        OPERATION_GROUPS[name] = typer.Typer(help=f"The {name} workflow's changes.", no_args_is_help=True)
        app.add_typer(OPERATION_GROUPS[name], name=name)
    return OPERATION_GROUPS[name]


for _declared in OPERATIONS:
    operation_command(_declared, _group(_declared.group))

# ---- bulk import (issue 18) ----------------------------------------------------------------------------------

import_app = typer.Typer(
    help="Bulk import of persons, close contacts and cases from a CSV or XLSX file: every row goes through the "
         "same rules and audit as the typed command; a report says per row created, already present, refused "
         "(with the rule and the message) or skipped.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")

ImportFile = Annotated[str, typer.Argument(metavar="FILE", help="A .csv (UTF-8 or Windows-1252, ; or , "
                                           "separated) or .xlsx file with a header row.")]
MapOption = Annotated[list[str] | None, typer.Option(
    "--map", metavar="COLUMN=FIELD", help="Which field a column is, when its header is not one the import knows "
    "(repeat for several; COLUMN= leaves a column out). Fields: the options of the typed command (ref, born, "
    "exposed, kind, risk, reason, onset, symptoms, criteria, confirmed, pcr_on, ...).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Run every row and report what would happen; write "
                                      "nothing at all.")]
AllOrNothing = Annotated[bool, typer.Option("--all-or-nothing", help="One transaction: if any row is refused, "
                                            "nothing is written (exit 3); the report still answers every row.")]
ReportOut = Annotated[str | None, typer.Option("--report", metavar="OUT", help="Write the file again with the "
                                               "result columns (Resultat, Id, Regel, Besked), in its own format, "
                                               "to correct the refused rows and import again.")]


def _read_file(path: str) -> bytes:
    """The file's bytes; UsageError (exit 2) for one that cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (OSError, ValueError) as error:
        why = getattr(error, "strerror", None) or "not a file name"
        raise UsageError(f"FILE '{shown(path)}' cannot be read ({why}): give the path of a .csv or .xlsx "
                         "file") from None


def _check_report(path: str | None) -> None:
    """UsageError (exit 2) before anything is imported when ``--report OUT`` cannot be written."""
    if path is None:
        return
    try:
        with open(path, "ab"):
            pass
    except (OSError, ValueError) as error:
        why = getattr(error, "strerror", None) or "not a file name"
        raise UsageError(f"--report '{shown(path)}' cannot be written ({why}): give a file in a folder you "
                         "may write to") from None


def _write_report(path: str, data: bytes) -> None:
    _check_report(path)
    with open(path, "wb") as handle:
        handle.write(data)


def render_import(view: dict[str, Any]) -> str:
    """The rows that need a look (refused, and notes), then the summary line."""
    lines = []
    for row in view["rows"]:
        ids = " ".join(row["ids"]) or " ".join(i for i in (row["person"], row["object"]) if i)
        if row["result"] == "refused":
            lines.append(f"row {row['row']}: refused: {row['message']}")
        elif row["note"] and row["result"] != "skipped":
            lines.append(f"row {row['row']}: {row['result']} {ids}: {row['note']}")
    c = view["counts"]
    summary = (f"{c['created']} created, {c['present']} already present, {c['refused']} refused, "
               f"{c['skipped']} skipped")
    if view["dry_run"]:
        lines.append(f"dry run, nothing written: {summary}")
    elif not view["written"]:
        lines.append(f"nothing written (--all-or-nothing, {c['refused']} refused): {summary}")
    else:
        lines.append(f"{view['id']}: {summary}")
    return "\n".join(lines)


def _import(ctx: typer.Context, kind: str, path: str, case: str | None, mapping: list[str] | None,
            dry_run: bool, all_or_nothing: bool, report: str | None, actor: str | None, reason: str | None,
            as_json: bool) -> None:
    from engine import imports

    refused = False

    def action() -> dict[str, Any]:
        nonlocal refused
        _check_report(report)
        content = _read_file(path)
        request = imports.Request(
            kind=kind, content=content, filename=os.path.basename(path), actor=_actor(actor), reason=reason,
            case=case, mapping=imports.parse_mapping(mapping or []), dry_run=dry_run,
            all_or_nothing=all_or_nothing)
        engine = _engine(ctx)
        if sys.stderr.isatty():
            with typer.progressbar(length=imports.count_rows(content, path), label="importing",
                                   file=sys.stderr) as bar:
                view = imports.run_import(engine, request, name_of=cli_flag, progress=bar.update)
        else:
            view = imports.run_import(engine, request, name_of=cli_flag)
        if report is not None:
            _write_report(report, imports.report_download(engine, content, path, view["rows"], actor=_actor(actor),
                                                          written=view["written"] and not view["dry_run"]))
        refused = all_or_nothing and view["counts"]["refused"] > 0
        return view

    _run(as_json, action, render_import)
    if refused:
        typer.echo("mpoxflow: --all-or-nothing: a row was refused, so nothing was written; correct the "
                   "refused rows (see each row's rule and message, or --report OUT) and import again", err=True)
        raise typer.Exit(3)


@import_app.command("contacts")
def import_contacts(
    ctx: typer.Context,
    path: ImportFile,
    case: Annotated[str | None, typer.Option("--case", help="The confirmed case the contacts are of (case-N).")]
    = None,
    mapping: MapOption = None, dry_run: DryRun = False, all_or_nothing: AllOrNothing = False,
    report: ReportOut = None, actor: Actor = None, reason: Reason = None, as_json: Json = False,
) -> None:
    """Import close contacts of a case (`contact add` per row, the person registered first when new: `person
    add`). Columns: the reference (CPR, CPR-nr., Personnummer, Reference), the exposure date (Eksponeringsdato,
    Dato for eksponering, Sidste eksponering), the kind (Kontakttype, Type: husstand, seksuel, ...), optionally
    Risiko and Begrundelse (a clinician's assessment; needed for sundhedspersonale med værnemidler, §5.1) and
    Fødselsdato. Dates dd.mm.åååå, dd-mm-åååå, d/m/åååå or åååå-mm-dd. A row whose contact (same case, person
    and exposure) exists already is "already present": importing a file again creates nothing twice. By default
    every valid row is imported, each on its own (a refused row never undoes another).

    Exit 0 when the import ran, even with refused rows; 3 with --all-or-nothing when a row was refused (nothing
    written); 2 for a file or mapping that cannot be read; 4 for an unknown case."""
    _import(ctx, "contacts", path, case, mapping, dry_run, all_or_nothing, report, actor, reason, as_json)


@import_app.command("persons")
def import_persons(
    ctx: typer.Context, path: ImportFile, mapping: MapOption = None, dry_run: DryRun = False,
    all_or_nothing: AllOrNothing = False, report: ReportOut = None, actor: Actor = None, reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Import persons (`person add` per row): the reference (CPR, Reference), optionally Fødselsdato, Gravid,
    Immunsupprimeret (ja/nej), ... A person whose reference is registered already is "already present".

    Exit 0 when the import ran, even with refused rows; 3 with --all-or-nothing when a row was refused (nothing
    written); 2 for a file or mapping that cannot be read."""
    _import(ctx, "persons", path, None, mapping, dry_run, all_or_nothing, report, actor, reason, as_json)


@import_app.command("cases")
def import_cases(
    ctx: typer.Context, path: ImportFile, mapping: MapOption = None, dry_run: DryRun = False,
    all_or_nothing: AllOrNothing = False, report: ReportOut = None, actor: Actor = None, reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Import cases (`case open` per row, the person registered first when new): the reference, Symptomdebut,
    Symptomer and Kriterier (a suspected case, §1.1), or Bekræftet (ja) with PCR-dato (a case confirmed by PCR).
    A row whose person has a case with the same onset is "already present".

    Exit 0 when the import ran, even with refused rows; 3 with --all-or-nothing when a row was refused (nothing
    written); 2 for a file or mapping that cannot be read."""
    _import(ctx, "cases", path, None, mapping, dry_run, all_or_nothing, report, actor, reason, as_json)


@import_app.command("show")
def import_show(
    ctx: typer.Context,
    import_id: Annotated[str, typer.Argument(metavar="ID", help="The import's id (import-N).")],
    report: ReportOut = None,
    as_json: Json = False,
) -> None:
    """An earlier import's report (every row's answer); --report OUT writes it as the file with its result
    columns."""
    from engine import imports

    def action() -> dict[str, Any]:
        _check_report(report)
        engine = _engine(ctx)
        record = imports.load_import(engine, import_id)
        if report is not None:
            _write_report(report, imports.report_download(engine, record.content, record.filename, record.report,
                                                          delimiter=record.options.get("delimiter")))
        return imports.import_view(record)

    _run(as_json, action, render_import)


@import_app.command("list")
def import_list(ctx: typer.Context, as_json: Json = False) -> None:
    """The imports, newest first, with their counts."""
    from engine import imports

    def render(rows: list[dict[str, Any]]) -> str:
        return render_rows([{**r, **r["counts"]} for r in rows],
                           ["id", "what", "created_at", "actor", "rows", "created", "present", "refused", "skipped"],
                           "no imports")

    _run(as_json, lambda: imports.list_imports(_engine(ctx)), render)


# ---- reading -------------------------------------------------------------------------------------------------


@app.command()
def show(
    ctx: typer.Context,
    object_id: Annotated[str, typer.Argument(metavar="ID", help="Any id: case-N, person-N, timer-N, user-N.")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="A case, contact or course as it was at this instant, rebuilt "
                                                 "from the audit log.")
    ] = None,
    break_glass: Annotated[
        str | None, typer.Option("--break-glass", metavar="REASON", help="Read an object outside your units: why "
                                 "(recorded in its audit log).")
    ] = None,
    as_user: ReadAs = None,
    as_json: Json = False,
) -> None:
    """Show one object, with its timers; with --as-of, as it was then. An object outside your units needs
    --break-glass REASON (the reading is recorded in its audit log)."""

    def action() -> dict[str, Any]:
        when = parse_instant(as_of, "--as-of") if as_of else None
        engine = _reader(ctx, as_user)
        if break_glass is not None:
            if when is not None:
                raise UsageError("--break-glass shows the object as it is: drop --as-of")
            return engine.read_outside(object_id, actor=_actor(as_user), reason=break_glass)
        return engine.show(object_id, as_of=when)

    _run(as_json, action, render_object)


@app.command("list")
def list_objects(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(metavar="|".join(LISTABLE), help="What to list.")],
    state: Annotated[str | None, typer.Option("--state", help="Only objects in this state.")] = None,
    as_user: ReadAs = None,
    as_json: Json = False,
) -> None:
    """List persons or workflow objects (those of your units and the units below them)."""

    def action() -> list[dict[str, Any]]:
        kind = LISTABLE.get(parse_choice(what, LISTABLE, "listing"))
        assert kind is not None
        return _reader(ctx, as_user).list(kind, state)

    def render(rows: list[dict[str, Any]]) -> str:
        return render_rows(rows, list(PROFILES[LISTABLE[what]].columns), f"no {what}")

    _run(as_json, action, render)


@app.command()
def due(
    ctx: typer.Context,
    within: Annotated[int | None, typer.Option("--within", help="Only tasks due within this many days.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Page: at most this many items, and the cursor of the "
                                              "next page (default 100 with --after).")] = None,
    after: Annotated[str | None, typer.Option("--after", metavar="CURSOR", help="Page: the items after this "
                                              "cursor (the `next` a page printed).")] = None,
    kind: Annotated[str | None, typer.Option("--kind", metavar="case|contact|course",
                                             help="Only tasks of this kind of object.")] = None,
    task: Annotated[str | None, typer.Option("--task", metavar="TIMER_NAME", help="Only tasks of this timer "
                                             "name (inform_due, dose2_due, ...).")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only my work: assigned to me, or unassigned in one of my "
                                       "units.")] = False,
    unit: Annotated[str | None, typer.Option("--unit", metavar="UNIT", help="Only the work of this unit and the "
                                             "units below it.")] = None,
    as_user: ReadAs = None,
    as_json: Json = False,
) -> None:
    """The staff worklist: what needs doing, soonest first, overdue marked. With --limit or --after, one page of
    it: --json prints {"items": [...], "next": CURSOR or null}; pass --after CURSOR for the page after.

    Only the work of your units and the units below them; --mine: yours; --unit U: that unit's. Open cases and
    contacts with 3 or more failed contact attempts since the last one that reached the person follow in a
    section HARD TO REACH (not with --task; on a page, on the first; with --json, the whole list ends with them,
    as items with "hard_to_reach": true, and a page is the API's page: tasks only).

    Examples: `mpoxflow due --within 1`, `mpoxflow due --kind contact --task inform_due --limit 50`,
    `mpoxflow due --mine`."""
    paged = limit is not None or after is not None

    def action() -> Any:
        if within is not None and not 0 <= within <= MAX_DAYS:
            raise UsageError(f"--within takes a number of days from 0 to {MAX_DAYS}")
        days = timedelta(days=within) if within is not None else None
        engine = _reader(ctx, as_user)
        if paged:
            page = engine.worklist_page(days, limit=limit, after=after, kind=kind, task=task, mine=mine, unit=unit)
            if after is None and not as_json:
                first_page_hard.extend(_hard_to_reach(engine, kind, task))
                first_page_changed.extend(_changed_since_sent(engine, kind, task))
            return page
        return (engine.worklist(days, kind=kind, task=task, mine=mine, unit=unit) + _hard_to_reach(engine, kind, task)
                + _changed_since_sent(engine, kind, task))

    first_page_hard: list[dict[str, Any]] = []  # a page's JSON stays the API's page: the section is in its text
    first_page_changed: list[dict[str, Any]] = []

    def render(result: Any) -> str:
        rows = result["items"] if paged else [r for r in result
                                              if not r.get("hard_to_reach") and not r.get("changed_since_sent")]
        text = render_rows(
            [{**r, "mark": "MISSED" if r.get("missed") else "OVERDUE" if r["overdue"] else ""} for r in rows],
            ["mark", "due_at", "timer", "object", "task", "rule", "unit_name", "assignee_name"], "nothing due",
        )
        hard = first_page_hard if paged else [r for r in result if r.get("hard_to_reach")]
        if hard:
            text += "\n\n" + render_hard_to_reach(hard)
        changed = first_page_changed if paged else [r for r in result if r.get("changed_since_sent")]
        if changed:
            text += "\n\n" + render_changed_since_sent(changed)
        if paged and result["next"]:
            given = [f"--{k} {v}" for k, v in (("within", within), ("kind", kind), ("task", task), ("unit", unit))
                     if v is not None] + (["--mine"] if mine else [])
            text += f"\nnext page: mpoxflow due {' '.join([*given, f'--limit {len(rows)}'])} --after {result['next']}"
        return text

    _run(as_json, action, render)


task_app = typer.Typer(help="Staff tasks: record what happened to a missed one.", no_args_is_help=True)
app.add_typer(task_app, name="task")


@task_app.command("resolve")
def task_resolve(
    ctx: typer.Context,
    timer_id: Annotated[str, typer.Argument(metavar="TIMER", help="The task's timer (timer-N, from `due`).")],
    outcome: Annotated[str, typer.Option("--outcome", help="|".join(TASK_OUTCOMES))],
    actor: Actor = None,
    reason: Annotated[str | None, typer.Option("--reason", help="What happened (required): goes onto the task "
                                                                "and into the audit entry.")] = None,
    as_json: Json = False,
) -> None:
    """Record what happened to a task whose deadline passed undone (it stays MISSED in `due` until then):
    done-late, not-reachable, declined or not-needed. A task not yet due can be resolved as not-reachable,
    declined or not-needed. A missed task is never recorded as done."""

    def action() -> dict[str, Any]:
        return _engine(ctx).resolve_task(timer_id, parse_choice(outcome, TASK_OUTCOMES, "outcome"),
                                         actor=_actor(actor), reason=reason)

    _run(as_json, action, render_object)


def _hard_to_reach(engine: Engine, kind: str | None, task: str | None) -> list[dict[str, Any]]:
    """The hard-to-reach objects `due` lists after its tasks (none when it lists one task's timers only)."""
    if task is not None or (kind is not None and kind not in ATTEMPT_KINDS):
        return []
    return [i for i in engine.hard_to_reach() if kind is None or i["kind"] == kind]


def render_hard_to_reach(items: list[dict[str, Any]]) -> str:
    return (f"HARD TO REACH ({HARD_TO_REACH_AFTER} or more failed contact attempts since the last that reached the "
            "person)\n" + render_rows(items, ["object", "state", "failed_attempts", "last_attempt_at", "last_channel",
                                              "last_outcome", "rule"], ""))


def _changed_since_sent(engine: Engine, kind: str | None, task: str | None) -> list[dict[str, Any]]:
    """The cases `due` lists after its tasks whose written notification (§3.1) no longer holds them (none when it
    lists one task's timers, or another kind's)."""
    if task is not None or kind not in (None, "case"):
        return []
    return engine.changed_since_sent()


def render_changed_since_sent(items: list[dict[str, Any]]) -> str:
    rows = [{**i, "changed": ", ".join(c["field"] for c in i["changes"])} for i in items]
    return ("CHANGED SINCE SENT (the written notification no longer holds the case: make a new document with "
            "`mpoxflow case document CASE` and send it)\n"
            + render_rows(rows, ["object", "state", "document", "sent_at", "changed", "rule"], ""))


def render_document(view: dict[str, Any]) -> str:
    sent = f"sent {view['sent_at']} by {view['sent_by']}" if view.get("sent_at") else "not sent yet"
    return (f"{view['id']}  written notification of {view['case']} ({view['rule']}), made {view['made_at']} by "
            f"{view['made_by']} from version {view['case_version']}; {sent}\n  sha256 {view['content_hash']}\n"
            f"  send it: mpoxflow case notify {view['case']} --channel written --document {view['id']}")


@_group("case").command("document")
def case_document(
    ctx: typer.Context,
    case_id: Annotated[str, typer.Argument(metavar="CASE", help="The confirmed case (case-N).")],
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Make the written notification (SST-mpox-7.1 §3.1) of a confirmed case as a FHIR document Bundle, from the
    case as it is now (document-N, with the SHA-256 of its content); its printable page is /documents/document-N.
    Record its sending with `case notify CASE --channel written --document document-N`."""
    _run(as_json, lambda: _engine(ctx).make_document(case_id, actor=_actor(actor), reason=reason), render_document)


REPORT_FORMATS = ("json", "html")


@_group("person").command("report")
def person_report(
    ctx: typer.Context,
    person_id: Annotated[str, typer.Argument(metavar="ID", help="The person (person-N).")],
    fmt: Annotated[str, typer.Option("--format", help="json (the default) or html (a standalone printable "
                                                     "document in Danish).")] = "json",
    output: Annotated[str | None, typer.Option("--output", metavar="FILE", help="Write the report to this new "
                                               "file (never overwritten); default stdout.")] = None,
    as_user: ReadAs = None,
    as_json: Json = False,
) -> None:
    """Everything mpoxflow holds about a person (GDPR art. 15): their facts, cases, contact records, courses, their
    deadlines, notes, notification documents, the audit entries about them and who received their data; only
    that person's data (a case's close contacts as their number and kinds). Made by auditors, and by staff and
    admins whose units hold one of the person's objects; recorded on the person's audit chain (trigger
    `reported`). JSON on stdout; --format html --output FILE writes the printable document."""

    made: dict[str, str] = {}

    def action() -> dict[str, Any]:
        if fmt not in REPORT_FORMATS:
            raise UsageError(f"--format '{shown(fmt)}' is not a format of the report: use json or html")
        chosen = fmt
        if as_json and chosen == "html" and output is None:
            raise UsageError("--json prints the report as JSON: drop --format html, or write the HTML document "
                             "with --output FILE")
        target = new_file(output, "--output", "a report") if output is not None else None
        report = _reader(ctx, as_user).person_report(person_id, actor=_actor(as_user), fmt=chosen)
        if chosen == "html":
            from entry.web.person_report import render_document

            made["text"] = render_document(report)
        else:
            made["text"] = json.dumps(report, ensure_ascii=False, indent=2)
        if target is None:
            return report  # printed as it is (--json), or as its text (render)
        _write_new(target, made["text"])
        made["output"] = str(target)
        return {"person": report["person"], "format": chosen, "output": str(target),
                "audit_seq": report["audit_seq"], "counts": report["counts"]}

    def render(result: dict[str, Any]) -> str:
        if "output" not in made:
            return made["text"]
        return (f"{result['person']}: report written to {result['output']} ({result['format']}); recorded in "
                f"the audit log as seq {result['audit_seq']}")

    _run(as_json, action, render)


def _write_new(target: Any, text: str) -> None:
    try:
        with target.open("x", encoding="utf-8") as out:
            out.write(text if text.endswith("\n") else text + "\n")
    except OSError as error:
        raise UsageError(f"--output {shown(str(target))}: cannot write there ({error.strerror}): the report was "
                         "made and recorded; give a new file you may write") from None


def render_note(view: dict[str, Any]) -> str:
    what = view["kind"] if view["kind"] == "note" else f"attempt ({view['channel']}, {view['outcome']})"
    text = (f"{view['id']}  {what} on {view['object']}  by {view['actor']} at {view['at']}  "
            f"(audit seq {view['audit_seq']})")
    if view["kind"] == "attempt":
        text += f"\n  failed attempts since the last that reached the person: {view['failed_attempts']}"
        if view["hard_to_reach"]:
            text += "  HARD TO REACH"
        if view["informed"]:
            text += f"\n  the contact is informed (§5.5): {view['state']}"
    return text


@app.command()
def note(
    ctx: typer.Context,
    object_id: Annotated[str, typer.Argument(metavar="ID", help="The case, contact, course or person (case-N, "
                                                                "person-N).")],
    text: Annotated[str | None, typer.Option("--text", help="The note (required; up to 2000 characters). It is "
                                                            "kept in the notes; the audit entry names the note, never "
                                                            "its text.")] = None,
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Write a note on a case, contact, course or person: append-only, audited, shown in its timeline."""
    _run(as_json, lambda: _engine(ctx).note(object_id, text=text or "", actor=_actor(actor), reason=reason),
         render_note)


@app.command()
def attempt(
    ctx: typer.Context,
    object_id: Annotated[str, typer.Argument(metavar="ID", help="The case or contact (case-N, contact-N).")],
    channel: Annotated[str, typer.Option("--channel", help="|".join(CHANNELS))],
    outcome: Annotated[str, typer.Option("--outcome", help="|".join(OUTCOMES))],
    reason: Annotated[str | None, typer.Option("--reason", help="How it went (required): goes into the audit "
                                                                "entry.")] = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Record an attempt to reach the person of a case or contact. One that reached the person of a contact still
    to inform does the inform task (§5.5); 3 failed attempts since the last that reached the person list it in
    `due` as HARD TO REACH."""

    def action() -> dict[str, Any]:
        return _engine(ctx).attempt(object_id, channel=channel, outcome=outcome, actor=_actor(actor), reason=reason)

    _run(as_json, action, render_note)


audit_app = typer.Typer(
    help="The transition log: who changed what, when, why, under which rule; verified, replayed, exported.",
    invoke_without_command=True,
)
app.add_typer(audit_app, name="audit")


@audit_app.callback()
def audit(
    ctx: typer.Context,
    entity: Annotated[str | None, typer.Option("--entity", help="Only this object's entries (case-3, user-2).")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor's entries.")] = None,
    trigger: Annotated[str | None, typer.Option("--trigger", help="Only this trigger (confirm, refused, ...).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Entries at or after this instant.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Entries at or before this instant.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the newest N matching entries.")] = None,
    unit: Annotated[str | None, typer.Option("--unit", metavar="UNIT", help="Only entries of users acting "
                                             "through this unit or one below it.")] = None,
    as_user: ReadAs = None,
    as_json: Json = False,
) -> None:
    """List audit entries, oldest first (filters combine). Subcommands verify, replay, export, timeline."""
    if ctx.invoked_subcommand is not None:
        return

    def action() -> list[dict[str, Any]]:
        return _reader(ctx, as_user).audit(
            entity=entity, actor=actor, trigger=trigger, limit=limit, unit=unit,
            since=parse_instant(since, "--since") if since else None,
            until=parse_instant(until, "--until") if until else None,
        )

    _run(as_json, action, render_audit)


def _exit_3_unless(ok_key: str, as_json: Json, action: Callable[[], dict[str, Any]],
                   render: Callable[[dict[str, Any]], str]) -> None:
    """Run a check; print its report; exit 3 when it found something (the report is the output either way)."""
    outcome: dict[str, Any] = {}

    def run() -> dict[str, Any]:
        outcome.update(action())
        return outcome

    _run(as_json, run, render)
    if outcome and not outcome[ok_key]:
        raise typer.Exit(3)


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    anchor: Annotated[str | None, typer.Option("--anchor", metavar="FILE", help="Also prove every entry up to "
                                               "this anchor's checkpoint unchanged (with --public-key).")] = None,
    public_key: Annotated[str | None, typer.Option("--public-key", metavar="PUB.pem", help="The public key of "
                                                   "the pair that signed --anchor.")] = None,
    as_json: Json = False,
) -> None:
    """Check every object's hash chain: exit 0 when intact, 3 when an entry was modified, deleted, inserted or
    reordered (the report names the first bad sequence number). With --anchor: against a signed checkpoint (exit
    3 also for an anchor file that was changed)."""
    if anchor is None and public_key is None:
        _exit_3_unless("intact", as_json, lambda: _engine(ctx).audit_verify(), render_verify)
        return

    def action() -> dict[str, Any]:
        from engine import anchor as anchoring

        if anchor is None or public_key is None:
            raise UsageError("--anchor and --public-key go together: give the anchor file and the public key "
                             "(anchor.pub) of the pair that signed it")
        key = anchoring.load_public_key(public_key)
        document = anchoring.read_anchor(anchor)
        return anchoring.verify_log(_engine(ctx).runtime, document, key)

    _exit_3_unless("intact", as_json, action, render_anchor_verify)


def render_anchor_verify(r: dict[str, Any]) -> str:
    a = r["anchor"]
    against = f"the anchor made {a['made_at']} ({a['chains']} chains up to seq {a['max_seq']}, root {a['merkle_root']})"
    if r["intact"]:
        return f"intact: every entry up to seq {a['max_seq']} is as {against} recorded it"
    return f"NOT as {against} recorded it\n" + render_verify(r)


@audit_app.command("anchor")
def audit_anchor(
    ctx: typer.Context,
    key: Annotated[str, typer.Option("--key", metavar="PRIVATE.pem", help="The Ed25519 private key (anchor.key of "
                                     "`audit anchor-key`), kept outside the database.")],
    output: Annotated[str | None, typer.Option("--output", "-o", metavar="FILE", help="Write the anchor here "
                                               "(default: anchor-<UTC instant>.json in this directory).")] = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Write a signed checkpoint of every audit chain's head (a Merkle root, Ed25519): hand it to an auditor;
    `audit verify --anchor FILE --public-key PUB.pem` proves later that nothing up to it changed."""

    def action() -> dict[str, Any]:
        from engine import anchor as anchoring

        private = anchoring.load_private_key(key)

        def write(document: dict[str, Any]) -> str:
            path = output or anchoring.anchor_file_name(document)
            try:
                return anchoring.write_anchor(document, path)
            except FileExistsError:
                raise UsageError(f"{path} exists already: an anchor is never overwritten; give another "
                                 "--output") from None
            except OSError as error:
                raise UsageError(f"cannot write {path}: {error.strerror}; give another --output") from error

        return anchoring.make_anchor(_engine(ctx).runtime, _actor(actor), private, write)

    def render(r: dict[str, Any]) -> str:
        return (f"anchor written to {r['output']}\nmerkle root {r['merkle_root']}\n"
                f"{r['chains']} chains up to seq {r['max_seq']} (recorded as seq {r['audit_seq']})")

    _run(as_json, action, render)


@audit_app.command("anchor-key")
def audit_anchor_key(
    output: Annotated[str, typer.Option("--output", "-o", metavar="DIR", help="The directory for anchor.key "
                                        "(mode 0600) and anchor.pub; keep anchor.key off the database's host.")],
    as_json: Json = False,
) -> None:
    """Make an Ed25519 key pair for `audit anchor`: anchor.key (PKCS#8 PEM) and anchor.pub (give it to auditors)."""

    def action() -> dict[str, Any]:
        from engine import anchor as anchoring

        return anchoring.write_key_pair(output)

    _run(as_json, action, lambda r: f"private key {r['private_key']} (mode 0600)\npublic key {r['public_key']} "
                                    f"({r['public_key_hex']})")


@audit_app.command("replay")
def audit_replay(
    ctx: typer.Context,
    check: Annotated[bool, typer.Option("--check", help="Compare with the tables; exit 3 on any difference.")] = False,
    as_json: Json = False,
) -> None:
    """Rebuild every case, contact and course from the log alone; with --check, list where the tables differ."""
    if not check:
        raise typer.BadParameter("replay only checks for now: run `mpoxflow audit replay --check`",
                                 param_hint="--check")
    _exit_3_unless("matches", as_json, lambda: _engine(ctx).audit_replay(), render_replay)


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")],
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")] = None,
    as_user: ReadAs = None,
) -> None:
    """Stream the whole log, oldest first, with a header (fields: README, "Audit export")."""

    def action() -> dict[str, Any]:
        if fmt not in EXPORT_FORMATS:  # before --output is opened (and emptied)
            raise UsageError(f"'{fmt}' is not an export format: use --format jsonl or --format csv")
        engine = _reader(ctx, as_user)
        if output is None:
            return {"entries": engine.audit_export(fmt, sys.stdout)}
        try:
            with open(output, "w", encoding="utf-8", newline="") as out:
                return {"entries": engine.audit_export(fmt, out), "output": output}
        except OSError as error:
            raise UsageError(f"cannot write {output}: {error.strerror}; give another --output") from error

    def render(r: dict[str, Any]) -> str:
        return f"{r['entries']} entries written to {r['output']}" if "output" in r else ""

    _run(False, action, render)


@audit_app.command("timeline")
def audit_timeline(
    ctx: typer.Context,
    object_id: Annotated[str, typer.Argument(metavar="ID", help="case-N, contact-N, course-N, person-N, user-N.")],
    as_user: ReadAs = None,
    as_json: Json = False,
) -> None:
    """One object's life, entry by entry: what happened, who did it, why, under which rule."""
    _run(as_json, lambda: _reader(ctx, as_user).audit_timeline(object_id), render_timeline)


# ---- reads of personal data (issue 19 item 3) ----------------------------------------------------------------


def render_reads(result: dict[str, Any]) -> str:
    if result["by"] == "person":
        return render_rows(result["items"], ["person", "reads", "users", "first", "last"], "no reads")
    if result["by"] == "user":
        return render_rows(result["items"], ["user", "reads", "persons", "first", "last"], "no reads")
    return render_rows(result["items"], ["at", "actor", "role", "person", "what", "via", "request"], "no reads")


@app.command("reads")
def reads_command(
    ctx: typer.Context,
    person: Annotated[str | None, typer.Option("--person", metavar="ID", help="Only reads of this person "
                                               "(person-N).")] = None,
    user: Annotated[str | None, typer.Option("--user", metavar="NAME", help="Only reads by this user (or "
                                             "webhook-N).")] = None,
    since: Annotated[str | None, typer.Option("--since", metavar="DATE", help="From this Danish day (YYYY-MM-DD, "
                                              "the whole day).")] = None,
    until: Annotated[str | None, typer.Option("--until", metavar="DATE", help="To this Danish day (YYYY-MM-DD, "
                                              "the whole day).")] = None,
    by: Annotated[str | None, typer.Option("--by", metavar="person|user", help="A summary per person (reads, by "
                                           "how many users, first, last) or per user (reads of how many "
                                           "persons).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most N rows (or summary lines).")] = 100,
    as_user: ReadAs = None,
    as_json: Json = False,
) -> None:
    """Who was shown which person's reference or birth date (the read log), newest first, or summed up per
    person or per user (auditors and admins). Internal ids only: reading it is not itself logged."""

    def action() -> list[dict[str, Any]] | dict[str, Any]:
        since_at = day_bound(since, "since") if since is not None else None
        before = day_bound(until, "until", end=True) if until is not None else None
        result = _reader(ctx, as_user).read_log(person=person, user=user, since=since_at, before=before, by=by,
                                                limit=limit)
        return result if not as_json else result["items"]

    _run(as_json, action, render_reads)


user_app = typer.Typer(help="Users and their roles: staff act, auditors read, admins manage users.",
                       no_args_is_help=True)
app.add_typer(user_app, name="user")


def _password(from_stdin: bool) -> str:
    """The new password: one line of stdin with --password-stdin, else prompted twice without echo."""
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UsageError("--password-stdin read no password: pipe one line, e.g. from a secrets manager")
        return line
    try:
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))
    except typer.Abort:
        raise UsageError("no password given: type it at the prompt, or pipe it with --password-stdin "
                         "(--no-password for a user that uses API tokens only)") from None


PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of "
                                                                      "stdin instead of prompting.")]


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user name actors give with --actor and log in with.")],
    role: Annotated[str, typer.Option("--role", help="staff, auditor or admin.")],
    password_stdin: PasswordStdin = False,
    no_password: Annotated[bool, typer.Option("--no-password", help="No password login (a system that uses "
                                                                    "API tokens: `mpoxflow user token`).")] = False,
    unit: Annotated[list[str] | None, typer.Option("--unit", metavar="UNIT[:lead]", help="A unit the user works "
                                                   "in (repeat for several; `:lead` to lead it). Required once "
                                                   "there is more than the root unit.")] = None,
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Add a user (admins only); the password is prompted (twice, not echoed) and stored as an argon2 hash."""

    def action() -> dict[str, Any]:
        if no_password and password_stdin:
            raise UsageError("--no-password and --password-stdin contradict each other: give one")
        engine = _engine(ctx)
        engine.check_new_user(name, role)  # before the prompt: a bad name, role or actor asks for nothing
        engine.authorize(_actor(actor), "user add", ADMIN_ROLES)
        engine.check_units(unit or [])
        password = None if no_password else _password(password_stdin)
        return Accounts(engine).add_user(name, role, password, actor=_actor(actor), reason=reason,
                                         units=unit or [])

    _run(as_json, action, lambda u: f"{u['id']}  {u['name']}  {u['role']}")


@user_app.command("password")
def user_password(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Whose password: your own, or anyone's for an admin.")],
    password_stdin: PasswordStdin = False,
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Set a user's password (prompted twice, not echoed): your own, or anyone's as an admin."""

    def action() -> dict[str, Any]:
        password = _password(password_stdin)
        return Accounts(_engine(ctx)).set_password(name, password, actor=_actor(actor), reason=reason)

    _run(as_json, action, lambda r: f"password set for {r['id']} ({r['name']})")


@user_app.command("list")
def user_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List the users and their roles."""
    _run(as_json, lambda: _engine(ctx).users(),
         lambda rows: render_rows(rows, ["id", "name", "role", "password", "created_at", "disabled_at"], "no users"))


@user_app.command("token")
def user_token(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user the system acts as.")],
    label: Annotated[str, typer.Option("--label", help="Which system uses it (shown in `user tokens`).")],
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Issue an API token for a system acting as a user (admins only). The secret is printed once; send it as
    `Authorization: Bearer SECRET`."""
    _run(as_json, lambda: Accounts(_engine(ctx)).issue_token(name, label, actor=_actor(actor), reason=reason),
         lambda t: f"{t['id']} for {t['user']} ({t['role']}): {t['secret']}\n"
                   "keep it secret: it is shown only now")


@user_app.command("tokens")
def user_tokens(ctx: typer.Context, as_json: Json = False) -> None:
    """List the API tokens (never their secrets)."""
    _run(as_json, lambda: Accounts(_engine(ctx)).tokens(),
         lambda rows: render_rows(rows, ["id", "user", "label", "created_at", "revoked_at"], "no tokens"))


@user_app.command("revoke")
def user_revoke(
    ctx: typer.Context,
    token: Annotated[str, typer.Argument(metavar="TOKEN", help="The token's id (token-N).")],
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Revoke an API token (admins only): it stops working at once, on every server."""
    _run(as_json, lambda: Accounts(_engine(ctx)).revoke_token(token, actor=_actor(actor), reason=reason),
         lambda t: f"{t['id']} revoked at {t['revoked_at']}")


@user_app.command("disable")
def user_disable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user to disable.")],
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Disable a user (admins only): their sessions and tokens stop at once; they cannot log in or act."""
    _run(as_json, lambda: Accounts(_engine(ctx)).set_disabled(name, True, actor=_actor(actor), reason=reason),
         lambda u: f"{u['id']} ({u['name']}) disabled at {u['disabled_at']}")


@user_app.command("enable")
def user_enable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The disabled user to enable again.")],
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Enable a disabled user again (admins only): their unrevoked tokens work again; they log in anew."""
    _run(as_json, lambda: Accounts(_engine(ctx)).set_disabled(name, False, actor=_actor(actor), reason=reason),
         lambda u: f"{u['id']} ({u['name']}) enabled")


@user_app.command("role")
def user_role(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Whose role.")],
    role: Annotated[str, typer.Option("--role", help="staff, auditor or admin.")],
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Change a user's role (admins only, not your own); it applies to their next request."""
    _run(as_json, lambda: Accounts(_engine(ctx)).set_role(name, role, actor=_actor(actor), reason=reason),
         lambda u: f"{u['id']} ({u['name']}) is now {u['role']}")


# ---- units, assignment (issue 17) ----------------------------------------------------------------------------

unit_app = typer.Typer(help="Organisational units: the tree, who works in which, where new work goes.",
                       no_args_is_help=True)
app.add_typer(unit_app, name="unit")


def render_units(rows: list[dict[str, Any]]) -> str:
    lines = []
    for u in rows:
        members = ", ".join(m["name"] + (" (lead)" if m["role"] == "lead" else "")
                            + (" [disabled]" if m["disabled"] else "") for m in u["members"])
        lines.append(f"{'  ' * u['depth']}{u['id']}  {u['name']}" + (f"  — {members}" if members else ""))
    return "\n".join(lines)


@unit_app.command("add")
def unit_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The unit's name (e.g. 'Region Hovedstaden').")],
    parent: Annotated[str, typer.Option("--parent", metavar="UNIT", help="The unit above it (a name or unit-N).")],
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Add a unit under another (admins only)."""
    _run(as_json, lambda: _engine(ctx).add_unit(name, parent=parent, actor=_actor(actor), reason=reason),
         lambda u: f"{u['id']}  {u['path']}")


@unit_app.command("list")
def unit_list(ctx: typer.Context, as_json: Json = False) -> None:
    """The units as a tree, each with its members (leads marked)."""
    _run(as_json, lambda: _engine(ctx).list_units(), render_units)


@unit_app.command("member")
def unit_member(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(metavar="UNIT", help="The unit (a name or unit-N).")],
    user: Annotated[str, typer.Argument(metavar="USER", help="The user's name.")],
    role: Annotated[str, typer.Option("--role", help="member or lead.")] = "member",
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Make a user a member (or a lead) of a unit, or change their role there (admins only)."""
    _run(as_json, lambda: _engine(ctx).set_member(unit, user, role=parse_choice(role, ("member", "lead"), "role"),
                                                  actor=_actor(actor), reason=reason),
         lambda m: f"{m['name']} is a {m['role']} of {m['unit_name']} ({m['unit']})")


@unit_app.command("leave")
def unit_leave(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(metavar="UNIT", help="The unit (a name or unit-N).")],
    user: Annotated[str, typer.Argument(metavar="USER", help="The user's name.")],
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """End a user's membership of a unit (admins only); their work there goes back to the unit's pool."""
    _run(as_json, lambda: _engine(ctx).remove_member(unit, user, actor=_actor(actor), reason=reason),
         lambda m: f"{m['name']} left {m['unit_name']}; back to its pool: {', '.join(m['returned']) or 'nothing'}")


def render_placements(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['kind']:8} {r['rule']}" + (f" {r['unit_name']} ({r['unit']})" if r["unit"] else "")
                     + ("  round-robin" if r["round_robin"] else "") for r in rows)


@unit_app.command("rules")
def unit_rules(ctx: typer.Context, as_json: Json = False) -> None:
    """Where each kind's new objects go: `parent` (the unit of the case a contact belongs to, of the contact a
    course belongs to), `creator` (the creating user's first unit) or `unit` (a configured one); round-robin
    assigns each to the unit's member who has waited longest."""
    _run(as_json, lambda: _engine(ctx).placements(), render_placements)


@unit_app.command("rule")
def unit_rule(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="case|contact|course", help="Which kind of object.")],
    rule: Annotated[str, typer.Option("--rule", help="parent, creator or unit.")],
    unit: Annotated[str | None, typer.Option("--unit", metavar="UNIT", help="With --rule unit: the unit.")] = None,
    round_robin: Annotated[bool | None, typer.Option("--round-robin/--no-round-robin", help="Deal new objects out "
                                                     "among the unit's members in turn.")] = None,
    actor: Actor = None,
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Change where a kind's new objects go (admins only)."""
    _run(as_json, lambda: _engine(ctx).set_placement(kind, rule, unit=unit, round_robin=round_robin,
                                                     actor=_actor(actor), reason=reason),
         lambda r: render_placements([r]))


Ids = Annotated[list[str] | None, typer.Argument(metavar="[ID]...", help="The objects (case-N, contact-N, "
                                                 "course-N); or select them with the filters.")]
FKind = Annotated[str | None, typer.Option("--kind", metavar="case|contact|course",
                                           help="Filter: every object of this kind (in your units) that the "
                                           "other filters select.")]
FState = Annotated[list[str] | None, typer.Option("--state", help="Filter: in this state (repeat for several).")]
FInUnit = Annotated[str | None, typer.Option("--in-unit", metavar="UNIT", help="Filter: of this unit and those "
                                             "below it.")]
FUnassigned = Annotated[bool, typer.Option("--unassigned", help="Filter: assigned to nobody.")]
FOfUser = Annotated[str | None, typer.Option("--of-user", metavar="USER", help="Filter: assigned to this user.")]
FLimit = Annotated[int, typer.Option("--limit", help="Filter: at most this many (1 to 1000).")]
MoveReason = Annotated[str | None, typer.Option("--reason", help="Why (required): goes into each audit entry.")]


def render_moved(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['id']}  {r['unit']}  {r['assignee'] or 'unassigned'}" for r in rows)


@app.command()
def assign(
    ctx: typer.Context,
    ids: Ids = None,
    unit: Annotated[str | None, typer.Option("--unit", metavar="UNIT", help="Within this unit (default: each "
                                             "object's own; one of your units or below).")] = None,
    user: Annotated[str | None, typer.Option("--user", metavar="USER", help="To this member of the unit "
                                             "(none: back to the unit's unassigned pool).")] = None,
    kind: FKind = None, state: FState = None, in_unit: FInUnit = None, unassigned: FUnassigned = False,
    of_user: FOfUser = None, limit: FLimit = 1000,
    actor: Actor = None,
    reason: MoveReason = None,
    as_json: Json = False,
) -> None:
    """Assign work: to a member of the unit (--user), or back to its pool (no --user). Leads deal work out; a
    member takes unassigned work for themselves and gives their own back. Changes no clinical state.

    Examples: `mpoxflow assign contact-4 --user anna --reason "ringer i dag"`,
    `mpoxflow assign --kind contact --state exposed --unassigned --in-unit "STPS Øst" --user bo --reason ...`."""
    _run(as_json, lambda: _engine(ctx).assign(
        ids or [], unit=unit, user=user, kind=kind, states=state or [], in_unit=in_unit, unassigned=unassigned,
        of_user=of_user, limit=limit, actor=_actor(actor), reason=reason), render_moved)


@app.command()
def transfer(
    ctx: typer.Context,
    ids: Ids = None,
    unit: Annotated[str | None, typer.Option("--unit", metavar="UNIT", help="The unit that takes the work over "
                                             "(any unit).")] = None,
    user: Annotated[str | None, typer.Option("--user", metavar="USER", help="To this member of that unit "
                                             "(none: its unassigned pool).")] = None,
    kind: FKind = None, state: FState = None, in_unit: FInUnit = None, unassigned: FUnassigned = False,
    of_user: FOfUser = None, limit: FLimit = 1000,
    actor: Actor = None,
    reason: MoveReason = None,
    as_json: Json = False,
) -> None:
    """Hand work over to another unit (leads and admins): the objects leave your units' lists. Changes no
    clinical state."""

    _run(as_json, lambda: _engine(ctx).transfer(
        ids or [], unit=unit, user=user, kind=kind, states=state or [], in_unit=in_unit, unassigned=unassigned,
        of_user=of_user, limit=limit, actor=_actor(actor), reason=reason), render_moved)


DIAGRAM_FORMATS = ("text", "mermaid")


@app.command()
def diagram(
    kind: Annotated[list[str] | None, typer.Argument(
        metavar=f"{'|'.join(WORKFLOWS)} | A B", help="Which workflow; with --diff, the two definitions A and B "
        "(names like contact@SST-mpox-7.1).", show_default=False)] = None,
    diff: Annotated[bool, typer.Option(
        "--diff", help="What changed from definition A to definition B: the states, transitions, guards, timers and "
        "cited sections added, removed or changed.")] = False,
    output: Annotated[str | None, typer.Option("--format", metavar="|".join(DIAGRAM_FORMATS),
                                        help="With --diff: text (default), or a Mermaid state diagram with the "
                                             "added, removed and changed elements styled.",
                                        show_default=False)] = None,
    as_json: Json = False,
) -> None:
    """Print a workflow as a Mermaid state diagram, drawn from its definition; with `--diff A B`, what changed
    from definition A to definition B."""
    names = list(kind or [])

    def action() -> dict[str, Any]:
        from engine.bootstrap import definitions_from_env

        definitions_from_env()  # a deployment's definitions beside the product's
        chosen = parse_choice(output or "text", DIAGRAM_FORMATS, "format")
        if diff:
            return _definition_diff(names, chosen)
        if len(names) != 1:
            raise UsageError(f"name one workflow ({', '.join(WORKFLOWS)}), or compare two definitions with "
                             "--diff A B")
        if output == "text":
            raise UsageError("a workflow's diagram is Mermaid: --format text goes with --diff A B")
        from workflows.registry import BY_NAME

        definition = BY_NAME.get(names[0]) or WORKFLOWS[parse_choice(names[0], WORKFLOWS, "workflow")]
        return {"workflow": definition.name, "mermaid": definition.mermaid()}

    _run(as_json, action, lambda r: r.get("shown", r.get("mermaid", "")))


def _definition_diff(names: list[str], output: str) -> dict[str, Any]:
    """``diagram --diff A B``: the two definitions by name from the registry, compared (``workflows.diff``)."""
    from workflows import diff as compare
    from workflows.limits import shown
    from workflows.registry import BY_NAME

    if len(names) != 2:
        raise UsageError(f"--diff compares two definitions: give A and B (one of {', '.join(sorted(BY_NAME))}), "
                         f"not {len(names)} name(s)")
    found = []
    for which, name in zip(("A", "B"), names, strict=True):
        if name not in BY_NAME:
            raise UsageError(f"--diff {which}: unknown workflow definition '{shown(name)}': use one of "
                             f"{', '.join(sorted(BY_NAME))}")
        found.append(BY_NAME[name])
    old, new = found
    if old.kind != new.kind:
        raise UsageError(f"--diff A B compares two definitions of one workflow: A is a {old.kind} definition, B a "
                         f"{new.kind} one")
    result = compare.diff(old, new)
    shown_as = compare.mermaid(result, old, new) if output == "mermaid" else compare.text(result)
    return {**result.as_dict(), "format": output, "shown": shown_as}


timers_app = typer.Typer(help="The timers: what an operator checks.", invoke_without_command=True)
app.add_typer(timers_app, name="timers")


@timers_app.callback()
def timers_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="|".join(TIMER_STATUSES))] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, soonest first.")] = 1000,
    as_user: ReadAs = None,
    as_json: Json = False,
) -> None:
    """List timers, soonest first; `mpoxflow timers status` for the counts."""
    if ctx.invoked_subcommand is not None:
        return

    def render(rows: list[dict[str, Any]]) -> str:
        return render_rows(rows, ["id", "object", "name", "due_at", "status", "attempts", "last_error"], "no timers")

    _run(as_json, lambda: _reader(ctx, as_user).timers(status, limit), render)


@timers_app.command("status")
def timers_status(ctx: typer.Context, as_json: Json = False) -> None:
    """Pending, overdue and failed counts, and the oldest lateness: what an operator checks first."""

    def render(r: dict[str, Any]) -> str:
        return (f"pending {r['pending']}  overdue {r['overdue']}  failed {r['failed']}  "
                f"oldest lateness {r['oldest_lateness_seconds']} s  (now {r['now']})")

    _run(as_json, lambda: _engine(ctx).timer_status(), render)


#: The worker's bounds: a poll of at most an hour, a first retry within a day, at most 10,000 timers per
#: transaction and 100 tries before a timer is parked.
MAX_POLL_SECONDS = 3600.0
MAX_BACKOFF_SECONDS = 86_400.0
MAX_BATCH = 10_000
MAX_ATTEMPTS = 100


def check_seconds(value: float, flag: str, *, low: float, high: float) -> float:
    if not math.isfinite(value) or not low <= value <= high:
        raise UsageError(f"{flag} {value}: give a number of seconds from {low:g} to {high:g}")
    return value


@app.command()
def worker(
    ctx: typer.Context,
    poll: Annotated[float, typer.Option("--poll", help="Safety poll for timers armed elsewhere, seconds.")] = 30.0,
    batch: Annotated[int, typer.Option("--batch", help="Timers fired per transaction.")] = 100,
    max_attempts: Annotated[int, typer.Option("--max-attempts", help="Tries of a failing timer before it is "
                                                                     "parked as failed.")] = 5,
    backoff: Annotated[float, typer.Option("--backoff", help="First retry after this many seconds; "
                                                             "doubling.")] = 30.0,
    exit_when_idle: Annotated[bool, typer.Option("--exit-when-idle", help="Stop once nothing is due (for cron "
                                                                          "and catch-up runs).")] = False,
    retention_every: Annotated[float, typer.Option("--retention-every", metavar="HOURS", help="Run `retention "
                                                   "purge` this often (first at start-up).")] = 24.0,
    no_retention: Annotated[bool, typer.Option("--no-retention", help="Do not run the retention purge (another "
                                               "worker or a cron job does).")] = False,
    anchor_key: Annotated[str | None, typer.Option("--anchor-key", metavar="FILE", help="Also make an anchor of "
                                                   "the audit log on a schedule, signed with this Ed25519 private "
                                                   "key (with --anchor-dir).")] = None,
    anchor_dir: Annotated[str | None, typer.Option("--anchor-dir", metavar="DIR", help="The folder each anchor "
                                                   "file is written to (anchor-<UTC instant>.json).")] = None,
    anchor_every: Annotated[float, typer.Option("--anchor-every", metavar="HOURS", help="Make an anchor this "
                                                "often (first at start-up).")] = 24.0,
) -> None:
    """Run the scheduler in the foreground: fire timers as they fall due, until SIGINT/SIGTERM; run the retention
    purge (and, with --anchor-key and --anchor-dir, the audit log's anchor) on a schedule."""
    from scheduler.worker import AnchorSchedule, Worker, check_anchor_dir, check_job_hours

    if not os.environ.get("MPOXFLOW_LOG_LEVEL"):
        root = ctx.find_root().params
        configure_logging(root.get("log_format"), "info")

    def action() -> dict[str, Any]:
        check_seconds(poll, "--poll", low=0.1, high=MAX_POLL_SECONDS)
        check_seconds(backoff, "--backoff", low=0, high=MAX_BACKOFF_SECONDS)
        check_count(batch, "--batch", low=1, high=MAX_BATCH)
        check_count(max_attempts, "--max-attempts", low=1, high=MAX_ATTEMPTS)
        policy = RetryPolicy(max_attempts=max_attempts, first_backoff=timedelta(seconds=backoff))
        try:
            every = check_job_hours(retention_every, "--retention-every")
            anchor_interval = check_job_hours(anchor_every, "--anchor-every")
        except ValueError as error:
            raise UsageError(str(error)) from None
        anchor = None
        if (anchor_key is None) != (anchor_dir is None):
            raise UsageError("--anchor-key and --anchor-dir go together: give the private key (anchor.key of "
                             "`audit anchor-key`) and the folder the anchors are written to")
        if anchor_key is not None and anchor_dir is not None:
            from engine import anchor as anchoring

            key = anchoring.load_private_key(anchor_key)  # its refusals name ⟦key⟧: --anchor-key here
            try:
                folder = check_anchor_dir(anchor_dir)
            except ValueError as error:
                raise UsageError(f"--anchor-dir {error}") from None
            anchor = AnchorSchedule(key, folder, anchor_interval)
        runner = Worker(_engine(ctx), poll_seconds=poll, batch=batch, policy=policy, exit_when_idle=exit_when_idle,
                        retention_every=None if no_retention else every, anchor=anchor)
        runner.advice_pdf = entry.advice_cli.pdf_of  # issue 21 item 4: the advice e-mails' PDF
        return {"fired": runner.run()}

    _run(False, action, lambda r: "", lambda f: "--anchor-key" if f == "key" else cli_flag(f))


@app.command()
def demo(
    serve_it: Annotated[bool, typer.Option("--serve", help="Open the demo data in the web application instead "
                                                          "(until Ctrl-C).")] = False,
    host: Annotated[str, typer.Option("--host", help="With --serve: the address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="With --serve: the port.")] = 8000,
    as_json: Json = False,
) -> None:
    """Run a realistic outbreak on a throwaway simulated-clock database and print its timeline; with --serve,
    open it in the web application."""
    from entry.demo import run_demo, serve_demo

    if serve_it:
        _run(False, lambda: serve_demo(host, port), lambda r: "")
        return
    _run(as_json, run_demo, lambda r: r["text"])


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port.")] = 8000,
    with_worker: Annotated[bool, typer.Option("--with-worker", help="Also run the scheduler in this process "
                                                                    "(a one-machine setup).")] = False,
    secure_cookies: Annotated[bool, typer.Option("--secure-cookies", help="Mark cookies Secure (serving "
                                                                          "behind HTTPS).")] = False,
    forwarded_allow_ips: Annotated[str | None, typer.Option(
        "--forwarded-allow-ips", help="Comma-separated addresses of trusted reverse proxies: only from these is "
                                      "X-Forwarded-For taken as the client's address (the login rate limit counts "
                                      "per address). Default none: the connecting address counts.")] = None,
) -> None:
    """Serve the HTTP API (/api, schema at /openapi.json) and the web application with Uvicorn. Stateless:
    run several against one PostgreSQL database."""
    import uvicorn

    from entry.web.server import create_app

    if not os.environ.get("MPOXFLOW_LOG_LEVEL"):
        configure_logging(ctx.find_root().params.get("log_format"), "info")

    def action() -> None:
        if not 0 < port < 65536:
            raise UsageError(f"--port {port} is not a port: use 1 to 65535")
        app = create_app(_options(ctx).db, with_worker=with_worker, secure_cookies=secure_cookies)
        trusted = ",".join(a.strip() for a in (forwarded_allow_ips or "").split(",") if a.strip())
        # Uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise: only from the proxies named here.
        uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=bool(trusted),
                    forwarded_allow_ips=trusted or "")

    _run(False, action, lambda r: "")


# ---- retention (issue 19): how long personal data is kept, what falls due, the purge ---------------------------

retention_app = typer.Typer(help="Personal data kept no longer than needed: the schedule per kind, what falls due, "
                                 "and the purge (the worker runs it daily).", no_args_is_help=True)
app.add_typer(retention_app, name="retention")


def render_retention_rules(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['kind']:7} {r['period']} {r['unit']:5}  ({r['rule']}; default {r['default']} {r['unit']})"
                     f"  from {r['counted_from']}" + (f"  set {r['updated_at']} by {r['updated_by']}"
                                                       if r["updated_at"] else "") for r in rows)


@retention_app.command("rules")
def retention_rules(ctx: typer.Context, as_json: Json = False) -> None:
    """Each kind's retention period: person (years after the last of their cases, contacts and courses ended),
    import (days after the import finished)."""
    _run(as_json, lambda: _engine(ctx).retention_rules(), render_retention_rules)


@retention_app.command("set")
def retention_set(
    ctx: typer.Context,
    retention_kind: Annotated[str, typer.Argument(metavar="KIND", help="person or import.")],
    years: Annotated[int | None, typer.Option("--years", help="A person's period, in years (1 to 100).")] = None,
    days: Annotated[int | None, typer.Option("--days", help="An import's period, in days (1 to 3650).")] = None,
    actor: Actor = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required): goes into the audit entry.")] = None,
    as_json: Json = False,
) -> None:
    """Change a kind's retention period (admins only; audited)."""
    _run(as_json, lambda: _engine(ctx).set_retention(retention_kind, years=years, days=days, actor=_actor(actor),
                                                     reason=reason),
         lambda r: render_retention_rules([r]) + f"\n(recorded as seq {r['audit_seq']})",
         lambda f: "KIND" if f == "kind" else cli_flag(f))


def render_retention_due(r: dict[str, Any]) -> str:
    lines = [f"{i['id']:12} {'DUE NOW' if i['due_now'] else 'due':7} {i['due_at']} (last day {i['last_day']})  "
             f"{i['rule']}, from {i['counted_from']} {i['start_on']}" for i in r["items"]]
    return "\n".join(lines) or f"nothing falls due within {r['within_weeks']} weeks (until {r['until']})"


@retention_app.command("due")
def retention_due(
    ctx: typer.Context,
    within: Annotated[int, typer.Option("--within", metavar="WEEKS", help="How many weeks ahead (0 to 520).")] = 8,
    as_user: ReadAs = None,
    as_json: Json = False,
) -> None:
    """The warning list: every person (by id, never the reference) and import whose data falls due within WEEKS
    weeks, with the rule, the date it counts from and the due date (auditors and admins)."""
    _run(as_json, lambda: _engine(ctx).retention_due(within_weeks=within, actor=_actor(as_user)),
         render_retention_due)


def render_purge(r: dict[str, Any]) -> str:
    verb = "would purge" if r["dry_run"] else "purged"
    lines = []
    for p in r["persons"]:
        c = p["counts"]
        lines.append(f"{verb} {p['person']} ({p['rule']}, from {p['counted_from']} {p['start_on']}): "
                     f"{c['columns']} columns on {c['objects'] + 1} objects, {c['timers']} timers' texts, "
                     f"{c['notes']} notes, {c['documents']} documents, {c['tasks_closed']} missed tasks closed"
                     + (f"; receipt seq {p['audit_seq']}" if p["audit_seq"] else ""))
    for i in r["imports"]:
        lines.append(f"{verb} {i['import']} ({i['rule']}): its file ({i['removed']['bytes']} bytes) and "
                     f"{i['removed']['links']} links to persons" + (f"; seq {i['audit_seq']}" if i["audit_seq"]
                                                                      else ""))
    lines += [f"skipped {s['id']}: {s['why']}" for s in r["skipped"]]
    return "\n".join(lines) or f"nothing is due (now {r['now']})"


@retention_app.command("purge")
def retention_purge(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be purged; write nothing.")] = False,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Purge every person and import due now: the reference, birth date and identifying free text go, the
    pseudonymous clinical record and the whole audit log stay; each purge is an audited receipt (admins only)."""
    _run(as_json, lambda: _engine(ctx).purge(actor=_actor(actor), dry_run=dry_run), render_purge)


# ---- FHIR (issue 18): the resources of ``engine.fhir``, read as --as USER -------------------------------------

fhir_app = typer.Typer(help="FHIR R4 resources (read only): one as JSON, or a bulk export as NDJSON.",
                       no_args_is_help=True)
app.add_typer(fhir_app, name="fhir")


def _fhir_reader(ctx: typer.Context, as_user: str | None) -> Any:
    from engine.fhir import FhirReader, viewer_role

    engine = _reader(ctx, as_user)
    return FhirReader(engine, viewer_role(engine))


@fhir_app.command("show")
def fhir_show(
    ctx: typer.Context,
    object_id: Annotated[str, typer.Argument(metavar="ID", help="person-N (Patient), case-N (Condition), contact-N "
                                            "(Observation), course-N (ImmunizationRecommendation), "
                                            "course-N-dose-K (Immunization), timer-N (Task), document-N (Bundle), "
                                            "or Type/id.")],
    as_user: ReadAs = None,
) -> None:
    """Print one FHIR resource as JSON (a person's CPR identifier only for a role that sees it on the pages)."""

    def action() -> dict[str, Any]:
        from engine.fhir import resource_address

        resource_type, resource_id = resource_address(object_id)
        return _fhir_reader(ctx, as_user).read(resource_type, resource_id)  # type: ignore[no-any-return]

    _run(True, action, lambda r: "")


@fhir_app.command("export")
def fhir_export(
    ctx: typer.Context,
    types: Annotated[str | None, typer.Option("--type", help="Only these resource types, comma-separated "
                                              "(Patient,Condition,Observation,ImmunizationRecommendation,"
                                              "Immunization,Task,AuditEvent; default all).")] = None,
    output: Annotated[str | None, typer.Option("--output", metavar="DIR|FILE", help="A directory (one TYPE.ndjson "
                                               "per resource type, as a Bulk Data export) or a file (every "
                                               "resource); default stdout.")] = None,
    as_user: ReadAs = None,
) -> None:
    """Every FHIR resource you may read as NDJSON (one JSON resource a line): to stdout, a file, or a directory
    with one file per resource type."""
    from pathlib import Path

    def action() -> dict[str, int]:
        from engine.fhir import check_types

        wanted = check_types((types or "").split(","))
        reader = _fhir_reader(ctx, as_user)
        try:
            return write(reader, wanted)
        except OSError as error:
            raise UsageError(f"--output {output}: cannot write there ({error.strerror}): give a directory or a "
                             "file you may write") from None

    def write(reader: Any, wanted: set[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        target = Path(output) if output else None
        if target is not None and (target.is_dir() or output.endswith(("/", "\\"))):
            target.mkdir(parents=True, exist_ok=True)
            files: dict[str, Any] = {}
            try:
                for resource in reader.export(wanted):
                    kind = resource["resourceType"]
                    if kind not in files:
                        files[kind] = (target / f"{kind}.ndjson").open("w", encoding="utf-8")
                    files[kind].write(json.dumps(resource, ensure_ascii=False) + "\n")
                    counts[kind] = counts.get(kind, 0) + 1
            finally:
                for f in files.values():
                    f.close()
            return counts
        out = target.open("w", encoding="utf-8") if target is not None else sys.stdout
        try:
            for resource in reader.export(wanted):
                out.write(json.dumps(resource, ensure_ascii=False) + "\n")
                counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
        finally:
            if target is not None:
                out.close()
        return counts

    def render(counts: dict[str, int]) -> str:
        if not output:
            return ""
        return "\n".join(f"{kind}: {n}" for kind, n in sorted(counts.items())) or "nothing to export"

    _run(False, action, render)


# Events and webhooks (issue 18), in a module of their own.
events_cli.register(app, _run, _engine, _actor, render_rows)
# Workflow definitions side by side, the default of new objects, migrations (issue 20).
workflow_cli.register(app, _run, _engine, _actor, render_rows)
# Advice sheets (issue 21), in a module of their own.
entry.advice_cli.register(app, _run, _engine, _actor)
# Chains of transmission (issue 21 item 2), in a module of their own.
entry.chains_cli.register(app, _run, _engine, _actor, render_rows)
# The outbreak at a glance as files (issue 21 item 1), in a module of its own.
entry.overview_cli.register(app, _run, _engine, _actor)


#: The options of ``mpoxflow`` itself (before the command) that take a value.
ROOT_VALUE_OPTIONS = ("--db", "--log-format")


def _name(command: Any) -> str:
    return command.name or typer.main.get_command_name(command.callback.__name__)


def only_for(args: list[str], application: typer.Typer = app, value_options: tuple[str, ...] = ROOT_VALUE_OPTIONS,
             ) -> typer.Typer:
    """``application`` with only the command (or group) that ``args`` runs, and of a group only the subcommand
    named next, when that is plain to see: typer builds every command's parser before it parses anything (some
    8% of a short command's time for this CLI's fifty-odd), and a command needs only its own. Anything less plain
    (no command, ``--help``, an option it does not know before the command, a name it does not know) gets the
    whole application, so help, errors and suggestions are typer's own."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option.split("=", 1)[0] not in value_options:
            return application
        if "=" not in option:
            if not rest:
                return application
            rest.pop(0)
    if not rest:
        return application
    commands = [c for c in application.registered_commands if _name(c) == rest[0]]
    groups = [g for g in application.registered_groups if g.name == rest[0]]
    if len(commands) + len(groups) != 1:
        return application
    light = copy.copy(application)
    light.registered_commands, light.registered_groups = commands, groups
    if groups and groups[0].typer_instance is not None:
        group = copy.copy(groups[0])
        group.typer_instance = only_for(rest[1:], groups[0].typer_instance, ())
        light.registered_groups = [group]
    return light


def main() -> None:
    """The console script."""
    try:
        only_for(sys.argv[1:])()
    except StorageError as error:  # pragma: no cover - raised outside _run only while opening the database
        print(f"mpoxflow: {error.render(cli_flag)}", file=sys.stderr)
        sys.exit(error.exit_code)
