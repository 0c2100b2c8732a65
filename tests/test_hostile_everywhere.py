"""Issue 13's table of hostile values, driven through **every** CLI command and **every** API operation.

The commands are read from the Typer application and the operations from ``/openapi.json``, so a new command or
operation is covered without touching this file. Each hostile value replaces one argument, option or body field of
a request that is otherwise well formed, in a database with a person (the reference and birth date that must never
reach a log), a confirmed case, a contact and a course. Every one must be refused with its exit status (2, 3 or 4;
never 0 or a traceback) or 4xx with the JSON error body, write nothing, and put neither the reference nor the birth
date in the answer or the log. Both backends.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entry.cli import app
from persistence.database import Database
from tests.helpers import contents
from tests.test_cli import add_person, cli, describe, ok
from tests.test_hostile_input import BORN, REF, assert_no_personal_data, logs  # noqa: F401 - logs: a fixture
from workflows.case import CHANNELS, CLADES, ISOLATION_MODES, WORK
from workflows.contact import EXPOSURE_KINDS, RISKS

#: Hostile input is handled by each database in its own way (NUL, lengths, unique keys): both backends.
pytestmark = [pytest.mark.both_backends, pytest.mark.slow]

HUGE = "h" * 200_000
NUL = "a\x00b"
BAD_IDS = ["case-١", "case-" + "9" * 20, "x' OR '1'='1 <script>"]
BAD_DATES = ["0001-01-01", "2025-02-30"]
#: A date in the future: malformed (2) where a bound refuses it, or refused by the rule that an event cannot be after
#: today (3).
FUTURE = "9999-12-31"
BAD_NUMBERS = ["-1", "9" * 20, "nan"]
BAD_TEXT = [NUL, HUGE]
BAD_CHOICES = ["<script>", NUL]

# ---- the command line ------------------------------------------------------------------------------------------

#: Commands left out, and why.
NOT_DRIVEN = {"demo": "runs on a throwaway database of its own, never the one given"}

#: A well-formed contact list for the import commands' FILE (issue 18).
IMPORT_FILE = Path(tempfile.mkdtemp(prefix="mpoxflow-hostile-")) / "kontakter.csv"
IMPORT_FILE.write_bytes(b"CPR;Eksponeringsdato;Kontakttype\nHOSTILE-1;02.03.2025;husstand\n")
#: A well-formed anchor key for `audit anchor --key` (issue 19), and a folder for `audit anchor-key --output`.
ANCHOR_KEY = IMPORT_FILE.parent / "anchor.key"
ANCHOR_KEY.write_bytes(Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
#: A well-formed value for each argument (by parameter name) and each required option of the commands.
ARGUMENTS = {"path": str(IMPORT_FILE), "import_id": "import-1",
             "object_id": "case-1", "case_id": "case-1", "contact_id": "contact-1", "course_id": "course-1",
             "timer_id": "timer-1", "person_id": "person-1", "token": "token-1", "name": "staff:test",
             "what": "cases", "kind": "case", "ids": "contact-1", "unit": "Danmark", "user": "staff:test",
             "url": "http://127.0.0.1:9/hook", "webhook": "webhook-1", "retention_kind": "person"}
ARGUMENTS["cluster"] = "cluster-1"  # mpoxflow chains CLUSTER (issue 21 item 2)
REQUIRED = {"--person": "person-2", "--case": "case-1", "--pcr-on": "2025-03-03", "--on": "2025-03-05",
            "--exposed": "2025-03-02", "--onset": "2025-03-04", "--symptoms": "rash", "--kind": EXPOSURE_KINDS[0],
            "--mode": ISOLATION_MODES[0], "--channel": CHANNELS[0], "--tracing": "yes", "--clade": CLADES[0],
            "--decision": "not-indicated", "--work": WORK[0], "--risk": RISKS[0], "--indication": "pep",
            "--outcome": "not-needed", "--format": "jsonl", "--role": "staff", "--label": "hostile",
            "--ref": "NEW-REF", "--parent": "Danmark", "--rule": "parent", "--text": "a note",
            "--events": "case.confirmed", "--key": str(ANCHOR_KEY), "--output": str(IMPORT_FILE.parent / "keys"),
            # workflow migrate (issue 20): the product's definition, to itself (refused: it declares no migration)
            "--from": "contact@SST-mpox-7.1", "--to": "contact@SST-mpox-7.1",
            "--email": "name@example.dk"}  # advice send (issue 21 item 4)
ID_OPTIONS = {"--person", "--case", "--contact", "--entity"}
DATE_OPTIONS = {"--pcr-on", "--on", "--exposed", "--onset", "--born", "--last-dose-on", "--criterion-on", "--as-of",
                "--since", "--until", "--to", "--simulated-clock"}
NUMBER_OPTIONS = {"--within", "--limit", "--days", "--hours", "--if-version", "--doses-elsewhere", "--poll",
                  "--batch", "--max-attempts", "--backoff", "--port", "--years", "--retention-every",
                  "--anchor-every"}
CHOICE_OPTIONS = {"--mode", "--channel", "--tracing", "--clade", "--decision", "--work", "--risk", "--indication",
                  "--outcome", "--format", "--role", "--kind", "--symptoms", "--criteria", "--exposure", "--state",
                  "--rule", "--by"}
#: Options whose value is not data: where to write, where to listen.
NOT_DATA = {"--json", "--output", "--host", "--forwarded-allow-ips", "--admin"}
#: Ids the CLI also accepts as a name (a user), so a bad one may be "no such user" (4) or malformed (2).
ID_EXITS = {2, 4}


def _commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    yield from walk(typer.main.get_command(app), ())


COMMANDS = [(path, command) for path, command in _commands() if " ".join(path) not in NOT_DRIVEN]


def _hostile_argvs(path: tuple[str, ...], command: Any) -> Iterator[tuple[list[str], set[int], str]]:
    """(argv, the exit statuses allowed, what was made hostile) for one command."""
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.is_flag]
    base_args = [ARGUMENTS[p.name] for p in arguments]
    base_opts = {p.opts[0]: REQUIRED[p.opts[0]] for p in options if p.required}
    actor = ["--actor", "admin:test" if path[0] in ("user", "init", "unit") else "staff:test"] if any(
        p.opts[0] == "--actor" for p in options) else []

    def argv(args: list[str], opts: dict[str, str]) -> list[str]:
        flat = [part for name, value in opts.items() for part in (name, value)]
        if "--actor" not in opts:
            flat += actor
        with_json = any(p.opts[0] == "--json" for p in command.params if p.param_type_name == "option")
        return [*path, *args, *flat, *(["--json"] if with_json else [])]

    for index, argument in enumerate(arguments):
        if path == ("unit", "add"):  # a new unit's name is free text: any text but a too long or control one
            for bad in BAD_TEXT:
                args = list(base_args)
                args[index] = bad
                yield argv(args, base_opts), {2}, argument.name
            continue
        for bad in BAD_IDS + [NUL]:
            args = list(base_args)
            args[index] = bad
            yield argv(args, base_opts), ID_EXITS, argument.name
    for option in options:
        name = option.opts[0]
        if name in NOT_DATA:
            continue
        if name in ID_OPTIONS:
            values, exits = BAD_IDS + [NUL], ID_EXITS
        elif name in DATE_OPTIONS:
            for bad in BAD_DATES:
                yield argv(base_args, {**base_opts, name: bad}), {2}, name
            values, exits = [FUTURE], {2, 3}
        elif name in NUMBER_OPTIONS:
            values, exits = BAD_NUMBERS, {2}
        elif name in CHOICE_OPTIONS:
            values, exits = BAD_CHOICES, {2}
        elif name == "--actor":
            values, exits = BAD_TEXT, {2, 3}  # not a user: refused
        else:  # free text kept in the record
            values, exits = BAD_TEXT, {2}
        for bad in values:
            yield argv(base_args, {**base_opts, name: bad}), exits, name


@pytest.fixture
def full_db(cli_db: str) -> str:
    """person-1 (REF, born BORN) with case-1 confirmed and consenting to tracing; person-2 its contact-1;
    person-3 with a PrEP course-1 offered; the scheduler's timers armed; token-1 for staff:test."""
    add_person(cli_db, REF, "--born", BORN)
    add_person(cli_db, "REF-P2")
    add_person(cli_db, "REF-P3")
    ok(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-02-28", "--confirmed", "--pcr-on",
       "2025-03-02", "--actor", "staff:test")
    ok(cli_db, "case", "consent", "case-1", "--tracing", "yes", "--actor", "staff:test")
    ok(cli_db, "contact", "add", "--case", "case-1", "--person", "person-2", "--exposed", "2025-03-02", "--kind",
       "sexual", "--actor", "staff:test")
    ok(cli_db, "vaccine", "offer", "--person", "person-3", "--indication", "prep", "--criteria",
       "individual_assessment", "--assessed-by", "dr. Lund", "--actor", "staff:test")
    ok(cli_db, "user", "token", "staff:test", "--label", "the lab system", "--actor", "admin:test")
    return cli_db


def test_every_command_is_driven() -> None:
    driven = {" ".join(path) for path, _ in COMMANDS}
    assert len(driven) >= 50 and {"case confirm", "vaccine dose", "user add", "audit export", "worker"} <= driven
    assert {"retention set", "retention due", "retention purge"} <= driven  # issue 19
    for path, command in COMMANDS:
        data = [p for p in command.params if p.param_type_name == "argument"
                or not p.is_flag and p.opts[0] not in NOT_DATA]
        assert bool(list(_hostile_argvs(path, command))) == bool(data), path  # every one with data is driven


#: The commands in groups, so that the test workers share them.
GROUPS = 6


@pytest.mark.parametrize("group", range(GROUPS))
def test_hostile_values_through_every_command(full_db: str, group: int, logs: Callable[[], str]) -> None:  # noqa: F811
    watched = Database(full_db)
    tried = 0
    try:
        before = contents(watched)
        for path, command in COMMANDS[group::GROUPS]:
            for args, exits, what in _hostile_argvs(path, command):
                result = cli(full_db, *args)
                shown = [a if len(a) < 80 else f"<{len(a)} characters>" for a in args]
                assert result.exit_code in exits, (shown, what, describe(result)[:2000])
                assert "Traceback" not in result.stderr and len(result.stderr) < 4000, (shown, result.stderr[:500])
                if "--json" in args:
                    error = json.loads(result.stdout)
                    assert error["exit_code"] == result.exit_code, (shown, error)
                assert HUGE not in result.stdout + result.stderr, shown  # a huge value is not echoed
                assert_no_personal_data(result.stdout, result.stderr)
                assert contents(watched) == before, (shown, what)
                tried += 1
    finally:
        watched.dispose()
    assert tried >= 60, tried
    assert_no_personal_data(logs())


# ---- the HTTP API ----------------------------------------------------------------------------------------------

#: A well-formed value for each path parameter and each required body field, by name.
PATH_VALUES = {"object_id": "case-1", "timer_id": "timer-1", "token_id": "token-1", "name": "staff:test",
               "what": "cases", "kind": "case", "unit": "unit-1", "user": "staff:test"}
BODY_VALUES = {"person": "person-2", "case": "case-1", "contact": "contact-1", "onset": "2025-03-04",
               "pcr_on": "2025-03-03", "on": "2025-03-05", "exposed": "2025-03-02", "ref": "NEW-REF",
               "password": "a long enough password 1", "label": "hostile", "reason": "because"}


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, spec) for path, methods in schema["paths"].items()
            for method, spec in methods.items()]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _kind(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The non-null alternative of an optional field."""
    node = _resolve(schema, node)
    for alternative in node.get("anyOf", []):
        if alternative.get("type") != "null":
            return _resolve(schema, alternative)
    return node


def _well_formed(schema: dict[str, Any], name: str, node: dict[str, Any]) -> Any:
    node = _kind(schema, node)
    if name in BODY_VALUES:
        return BODY_VALUES[name]
    if "enum" in node:
        return node["enum"][0]
    if node.get("type") == "array":
        item = _kind(schema, node.get("items", {}))
        return [item["enum"][0]] if "enum" in item else ["x"]
    return {"boolean": False, "integer": 1, "string": "x"}.get(node.get("type", "string"), "x")


def _hostile_for(node: dict[str, Any]) -> list[Any]:
    kind = node.get("type")
    if node.get("format") == "date":
        return BAD_DATES + [NUL]
    if kind == "integer":
        return [-1, 10**20, "١"]
    if kind == "boolean":
        return ["<script>"]
    if kind == "array":
        return [[NUL], ["<script>"] * 20_000, NUL]
    if "enum" in node:
        return BAD_CHOICES
    return BAD_TEXT


def _hostile_requests(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any] | None, dict[str, Any],
                                                                 str]]:
    """(method, path, body, query, what was made hostile) for every operation."""
    for method, template, spec in _operations(schema):
        if template in ("/api/login",):  # its own limit: a failed login is counted (tests/test_races.py)
            continue
        params = spec.get("parameters", [])
        path_params = [p["name"] for p in params if p["in"] == "path"]
        query = [p for p in params if p["in"] == "query"]
        body_schema = spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        body_node = _resolve(schema, body_schema) if body_schema else None
        properties = body_node.get("properties", {}) if body_node else {}
        required = set(body_node.get("required", [])) if body_node else set()
        base_body = {name: _well_formed(schema, name, node) for name, node in properties.items() if name in required}

        def path_with(values: dict[str, str], template: str = template) -> str:
            return re.sub(r"\{(\w+)\}", lambda m: quote(values[m.group(1)], safe=""), template)

        base_path = {name: PATH_VALUES[name] for name in path_params}
        for name in path_params:
            for bad in BAD_IDS + [NUL]:
                yield method, path_with({**base_path, name: bad}), base_body if body_node else None, {}, name
        for parameter in query:
            node = _kind(schema, parameter.get("schema", {}))
            values = BAD_DATES if parameter["name"] in ("as_of", "since", "until") else _hostile_for(node)
            values = [v[:20_000] if isinstance(v, str) else v for v in values]  # what a URL can carry
            for bad in values:
                yield method, path_with(base_path), base_body if body_node else None, {parameter["name"]: bad}, \
                    parameter["name"]
        for name, node in properties.items():
            node = _kind(schema, node)
            values = BAD_IDS + [NUL] if name in ("person", "case", "contact") else _hostile_for(node)
            if name in BODY_VALUES and name not in ("person", "case", "contact") and node.get("type") == "string" \
                    and node.get("format") != "date":
                values = BAD_TEXT
            for bad in values:
                yield method, path_with(base_path), {**base_body, name: bad}, {}, name


def test_every_operation_is_driven(web_app: Any) -> None:
    schema = web_app.openapi()
    operations = {(m, p) for m, p, _ in _operations(schema)}
    driven = {(m, re.sub(r"/(case|timer|token)-1\b|/staff:test|/cases\b(?=$)|/case$", "", p))
              for m, p, *_ in _hostile_requests(schema)}
    assert len(operations) >= 50
    assert len(driven) >= 40, driven


@pytest.mark.parametrize("group", range(GROUPS))
def test_hostile_values_through_every_operation(full_db: str, client_for: Any, web_app: Any, group: int,
                                                logs: Callable[[], str]) -> None:  # noqa: F811
    staff = client_for("staff:test")
    admin = client_for("admin:test")
    requests = list(_hostile_requests(web_app.openapi()))[group::GROUPS]
    watched = Database(full_db)
    before = contents(watched)
    for method, path, body, query, what in requests:
        # An admin's operations by the admin; one's own password by its owner (who must give the current one).
        own_password = path.endswith("/password")
        caller = admin if path.startswith(("/api/users", "/api/tokens", "/api/units")) and not own_password else staff
        if method == "GET":
            response = caller.get(path, params=query)
        else:
            response = caller.post(path, params=query, json=body,
                                   headers={"X-CSRF-Token": caller.csrf} if caller.csrf else {})
        shown = (method, path[:80], what)
        assert 400 <= response.status_code < 500, (shown, response.status_code, response.text[:500])
        error = response.json()
        assert {"error", "message", "rule", "exit_code", "status"} <= set(error), (shown, error)
        assert error["status"] == response.status_code and error["exit_code"] in (2, 3, 4, 5), (shown, error)
        assert len(response.content) < 5_000, (shown, len(response.content))
        assert_no_personal_data(response.text)
        after = contents(watched)
        if response.status_code in (403, 429) and what == "current_password":
            # A wrong current password is a refusal audited on the user's chain and a failed login counted
            # (tests/test_web_safety.py); nothing else may change.
            kept = ("audit_log", "users", "login_failures")
            assert {t: r for t, r in after.items() if t not in kept} == {
                t: r for t, r in before.items() if t not in kept}, shown
            before = after
        assert after == before, shown
    watched.dispose()
    assert len(requests) >= 60
    assert_no_personal_data(logs())
