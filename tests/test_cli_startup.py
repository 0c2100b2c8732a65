"""What a command loads, and the shortcuts that keep it light behaving exactly as the whole application.

A command runs in a real ``mpoxflow`` process (a wrapper that runs ``entry.cli.main`` as the console script does,
then reports the modules the process had imported): showing an object and a transition load no web framework,
no pydantic, no Alembic, no Rich, no password hashing and no holiday library. The shortcuts (typer's parameters
coerced without pydantic, only the command that runs built) are checked against what typer does without them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer._adapters import build_adapter
from typer.models import OptionInfo
from typer.testing import CliRunner

from entry import cli, coercion
from tests.test_cli import add_person, doc, open_suspected

ROOT = Path(__file__).resolve().parent.parent
#: Runs the command line as the console script does, then prints (last, on stderr) its exit status and modules.
WRAPPER = """
import json, sys
sys.argv = ["mpoxflow", *sys.argv[1:]]
from entry.cli import main
try:
    main()
    status = 0
except SystemExit as done:
    status = done.code
sys.stdout.flush()
print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
"""
#: What a command that shows or changes an object must not load.
HEAVY = ("fastapi", "pydantic", "pydantic_core", "alembic", "starlette", "uvicorn", "jinja2", "rich", "pwdlib",
         "argon2", "holidays", "apscheduler", "multipart", "psycopg", "sqlalchemy.dialects.postgresql")
PG_DIALECT = "sqlalchemy.dialects.postgresql"


def run_process(*args: str) -> tuple[Any, set[str]]:
    """``mpoxflow ARGS`` in a process of its own (stderr not a terminal: JSON logs): its JSON output and the
    top-level packages it had imported (and the PostgreSQL dialect, when it had)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPOXFLOW_")}
    env["MPOXFLOW_ACTOR"] = "staff:test"
    done = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["status"] == 0, done.stderr
    loaded = {name.split(".")[0] for name in report["modules"]}
    return json.loads(done.stdout), loaded | ({PG_DIALECT} & set(report["modules"]))


@pytest.mark.slow
def test_showing_and_changing_an_object_loads_nothing_heavy(cli_db):
    case = open_suspected(cli_db, add_person(cli_db))
    shown, loaded = run_process("--db", cli_db, "show", case, "--json")
    assert (shown["id"], shown["state"]) == (case, "suspected")
    assert {"sqlalchemy", "typer", "structlog", "engine", "persistence"} <= loaded  # it did run the engine
    assert sorted(loaded.intersection(HEAVY)) == []

    changed, loaded = run_process("--db", cli_db, "case", "confirm", case, "--pcr-on", "2025-03-03", "--json")
    assert (changed["id"], changed["state"]) == (case, "confirmed")
    assert "phone_notification_due" in {t["name"] for t in changed["timers"]}  # the deadline asks for holidays
    assert sorted(loaded.intersection(HEAVY)) == []
    assert doc(cli_db, "show", case)["state"] == "confirmed"


# ---- typer's parameters, coerced without pydantic ------------------------------------------------------------

CERTAIN = [(str, "abc"), (str, ""), (str, "a\x00b"), (str, "\udcff"), (str, "é 1"), (int, "12"), (int, "007"),
           (int, "-0"), (int, "+5"), (int, "9" * 18), (float, "30"), (float, "0.5"), (float, "-0"), (float, "+1.5"),
           (float, "007.50")]
UNSURE = [(int, "1_000"), (int, " 5"), (int, "5 "), (int, "١٢"), (int, "1e3"), (int, "9" * 19), (int, "abc"),
          (int, ""), (float, "1e3"), (float, "inf"), (float, "nan"), (float, ".5"), (float, "1."), (bool, "yes"),
          (int, 5.0), (str, 5)]


@pytest.mark.parametrize(("annotation", "value"), CERTAIN)
def test_a_certain_value_is_what_typers_adapter_makes_of_it(annotation, value):
    expected = build_adapter(annotation, OptionInfo()).validate_python(value)
    made = coercion.plain(annotation, value)
    assert (type(made), made) == (type(expected), expected)
    if annotation is float:
        assert str(made) == str(expected)  # -0.0 stays -0.0


@pytest.mark.parametrize(("annotation", "value"), UNSURE)
def test_any_other_value_is_left_to_typer(annotation, value):
    assert coercion.plain(annotation, value) is coercion._UNSURE


def test_the_plain_coercion_is_installed_once_and_typer_still_answers_what_it_is_not_sure_of(cli_db):
    from typer import core

    assert coercion.install() is True
    assert core.build_runtime_param.mpoxflow_plain is True  # type: ignore[attr-defined]
    assert coercion.install() is True  # again: not wrapped twice
    runner = CliRunner()
    lax = runner.invoke(cli.app, ["--db", cli_db, "timers", "--limit", " 1", "--json"])
    assert lax.exit_code == 0, lax.stdout + lax.stderr  # pydantic's lax int: as typer accepts it
    wrong = runner.invoke(cli.app, ["--db", cli_db, "timers", "--limit", "1e3", "--json"])
    assert wrong.exit_code == 2
    assert "Input should be a valid integer" in wrong.stderr
    assert json.loads(wrong.stdout)["exit_code"] == 2


# ---- only the command that runs is built -----------------------------------------------------------------------


def names(application: typer.Typer) -> tuple[list[str], list[str | None]]:
    return ([cli._name(c) for c in application.registered_commands],
            [g.name for g in application.registered_groups])


def test_only_the_command_named_is_built_and_anything_less_plain_gets_the_whole_application():
    assert names(cli.only_for(["--db", "x.db", "show", "case-1", "--json"])) == (["show"], [])
    assert names(cli.only_for(["--db=x.db", "--log-format", "json", "list", "cases"])) == (["list"], [])
    confirm = cli.only_for(["case", "confirm", "case-1", "--pcr-on", "2025-03-03"])
    assert names(confirm) == ([], ["case"])
    assert names(confirm.registered_groups[0].typer_instance) == (["confirm"], [])
    groups = {g.name: g.typer_instance for g in cli.app.registered_groups}
    for args in (["timers", "--limit", "1"], ["case"], ["case", "--help"], ["audit", "--entity", "case-1"]):
        assert cli.only_for(args).registered_groups[0].typer_instance is groups[args[0]], args  # the whole group
    for args in ([], ["--help"], ["--db"], ["--bogus", "show"], ["shw"], ["--db", "x.db"]):
        assert cli.only_for(args) is cli.app, args
    assert len(cli.app.registered_commands) > 5 and len(cli.app.registered_groups) > 5  # the whole is untouched


def test_the_root_options_that_take_a_value_are_the_ones_skipped():
    root = typer.main.get_command(cli.app)
    taking_a_value = sorted(opt for p in root.params if not getattr(p, "is_flag", False) for opt in p.opts)
    assert taking_a_value == sorted(cli.ROOT_VALUE_OPTIONS)


@pytest.mark.parametrize("args", [
    ["show", "{case}", "--json"],
    ["show", "{case}"],
    ["show", "case-999", "--json"],
    ["show", "--help"],
    ["case", "confirm", "case-999", "--pcr-on", "2025-03-03", "--json"],
    ["case", "confirm", "{case}", "--json"],
    ["case", "confirm", "{case}", "--pcr-on", "2025-13-03", "--json"],
    ["case", "cnfirm"],
    ["case"],
    ["case", "--help"],
    ["timers", "--limit", "1", "--json"],
    ["timers", "status", "--json"],
    ["audit", "verify", "--json"],
    ["list", "cases", "--json"],
    ["shw", "case-1"],
    ["--help"],
    [],
])
def test_the_light_application_answers_as_the_whole_one(cli_db, args):
    case = open_suspected(cli_db, add_person(cli_db))
    argv = ["--db", cli_db, *(arg.format(case=case) for arg in args)] if args != ["--help"] and args else args
    runner = CliRunner()
    whole = runner.invoke(cli.app, argv, env={"MPOXFLOW_ACTOR": "staff:test"})
    light = runner.invoke(cli.only_for(argv), argv, env={"MPOXFLOW_ACTOR": "staff:test"})
    assert (light.exit_code, light.stdout, light.stderr) == (whole.exit_code, whole.stdout, whole.stderr)
    assert whole.stdout + whole.stderr


# ---- structlog without Rich ------------------------------------------------------------------------------------

#: Logs through the console renderer (colours forced) an event, an exception and a statement's parameters, with
#: Rich imported first (as structlog finds it when it is installed) or not.
CONSOLE = """
import sys
if sys.argv[1] == "rich":
    import rich.console
from entry.logs import configure_logging
configure_logging("console", "info")
import structlog
print("rich" in sys.modules)
log = structlog.get_logger("test")
log.info("transition", object="case-1", n=3, timers=["a", "b"], reason=None)
try:
    {}["case-1"]
except KeyError:
    log.exception("failed", object="case-1")
log.warning("statement", error="[parameters: ('REF-1',)]")
"""


def console_lines(mode: str) -> tuple[bool, list[str]]:
    env = {**os.environ, "FORCE_COLOR": "1"}
    done = subprocess.run([sys.executable, "-c", CONSOLE, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    without_time = [line.split("Z", 1)[-1] if line[:1] == "\x1b" else line for line in done.stderr.splitlines()]
    return done.stdout.strip() == "True", without_time


@pytest.mark.slow
def test_the_console_renderer_writes_the_same_lines_without_rich():
    with_rich, expected = console_lines("rich")
    without, lines = console_lines("plain")
    assert (with_rich, without) == (True, False)
    assert lines == expected
    text = "\n".join(lines)
    assert "transition" in text and "KeyError: 'case-1'" in text and "[values hidden]" in text
    assert "REF-1" not in text
