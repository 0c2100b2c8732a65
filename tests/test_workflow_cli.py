"""``mpoxflow workflow list`` and ``workflow migrate`` on the command line (issue 20): the report as text and as
JSON, the dry run writing nothing, the refusals with their exit status, and a deployment's definitions loaded from
``MPOXFLOW_DEFINITIONS`` in a process of its own (as the worker, the server and the CLI load them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN
from tests.successor import SUCCESSOR, registered  # noqa: F401 (the fixture)
from tests.test_cli import add_person, cli, doc, ok, open_confirmed, refused, snapshot
from workflows.contact import CONTACT

ROOT = Path(__file__).resolve().parent.parent
OLD, NEW = CONTACT.name, SUCCESSOR.name
#: The command line as the console script runs it.
MAIN = "import sys; from entry.cli import main; sys.argv[0] = 'mpoxflow'; main()"


def contact(url: str, case: str, exposed: str = "2025-03-01") -> str:
    return str(doc(url, "contact", "add", "--case", case, "--person", add_person(url, f"REF-C-{exposed}"),
                   "--exposed", exposed, "--kind", "household", "--actor", "staff:test")["id"])


def story(url: str) -> tuple[str, str]:
    case = open_confirmed(url, add_person(url), onset="2025-02-28", pcr_on="2025-03-02")
    ok(url, "case", "consent", case, "--tracing", "yes", "--actor", "staff:test")
    return case, contact(url, case)


def test_migrate_prints_each_object_and_a_dry_run_writes_nothing(cli_db: str, registered: Any) -> None:  # noqa: F811
    _, contact_id = story(cli_db)
    before = snapshot(cli_db)
    dry = ok(cli_db, "workflow", "migrate", "--from", OLD, "--to", NEW, "--dry-run", "--actor", ADMIN)
    assert snapshot(cli_db) == before
    # Exposed on 2025-03-01: 21 days end at 00:00 on 2025-03-23, 14 days at 00:00 on 2025-03-16.
    assert dry.stdout.splitlines()[:4] == [
        f"{OLD} → {NEW}: 1 migrated, 0 not migrated, of 1 open  (dry run: nothing was written)",
        f"  {contact_id}  exposed → exposed",
        "      - monitoring_ends 2025-03-23T00:00:00+01:00 (timer-4, cancelled)",
        "      + monitoring_ends 2025-03-16T00:00:00+01:00",
    ]
    report = doc(cli_db, "workflow", "migrate", "--from", OLD, "--to", NEW, "--actor", ADMIN, "--reason",
                 "revision 2: 14 days")
    assert report["counts"] == {"considered": 1, "migrated": 1, "not_migrated": 0}
    assert report["migrated"][0]["armed"] == [{"name": "monitoring_ends", "due_at": "2025-03-16T00:00:00+01:00",
                                               "task": None}]
    shown = doc(cli_db, "show", contact_id)
    assert shown["workflow"] == NEW
    entry = doc(cli_db, "audit", "--entity", contact_id)[-1]
    assert (entry["trigger"], entry["reason"], entry["actor"]) == ("migrated", "revision 2: 14 days", ADMIN)
    assert doc(cli_db, "audit", "verify")["intact"]


def test_migrate_refusals_name_the_flag_and_write_nothing(cli_db: str, registered: Any) -> None:  # noqa: F811
    story(cli_db)
    unknown = refused(cli_db, "workflow", "migrate", "--from", "contact@x", "--to", NEW, "--actor", ADMIN, code=2)
    assert "--from contact@x is not a workflow definition loaded here" in unknown.stderr
    where = refused(cli_db, "workflow", "migrate", "--from", OLD, "--to", NEW, "--where", "state=gone", "--actor",
                    ADMIN, code=2)
    assert "--where state=gone: contact@SST-mpox-7.1 has no such state" in where.stderr
    backwards = refused(cli_db, "workflow", "migrate", "--from", NEW, "--to", OLD, "--actor", ADMIN, code=3)
    assert f"{OLD} declares no migration from {NEW}" in backwards.stderr
    # Only admins migrate: the refusal itself is audited (on the user's chain), nothing else is written.
    staff = cli(cli_db, "workflow", "migrate", "--from", OLD, "--to", NEW, "--actor", "staff:test")
    assert staff.exit_code == 3 and "workflow migrate" in staff.stderr
    assert doc(cli_db, "show", "contact-1")["workflow"] == OLD
    missing = cli(cli_db, "workflow", "migrate", "--to", NEW, "--actor", ADMIN)
    assert missing.exit_code == 2 and "--from" in missing.stderr


def test_workflow_list_shows_the_definitions_side_by_side(registered: Any) -> None:  # noqa: F811
    rows = {r["name"]: r for r in json.loads(ok("sqlite://", "workflow", "list", "--json").stdout)}
    assert rows[NEW] == {"name": NEW, "kind": "contact", "version": "SST-mpox-7.1", "revision": 2,
                         "shipped": False, "migrates_from": OLD} | {k: v for k, v in rows[NEW].items()
                                                                    if k not in ("name", "kind", "version",
                                                                                 "revision", "shipped",
                                                                                 "migrates_from")}
    assert rows[OLD]["shipped"] is True


def run(*args: str, definitions: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPOXFLOW_")}
    env.update(MPOXFLOW_ACTOR=ADMIN, PYTHONPATH=str(ROOT))
    if definitions is not None:
        env["MPOXFLOW_DEFINITIONS"] = definitions
    return subprocess.run([sys.executable, "-c", MAIN, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_process_loads_a_deployments_definitions_and_refuses_to_run_objects_it_cannot(cli_db: str) -> None:
    _, contact_id = story(cli_db)
    moved = run("--db", cli_db, "workflow", "migrate", "--from", OLD, "--to", NEW, "--json",
                definitions="tests.successor:SUCCESSORS")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["counts"]["migrated"] == 1
    # A process that does not load the successor does not fire or change the object under another definition.
    before = snapshot(cli_db)
    advance = run("--db", cli_db, "clock", "advance", "--days", "30", definitions=None)
    assert advance.returncode == 2
    assert f"objects run under {NEW}, which this process has not loaded" in advance.stderr
    change = run("--db", cli_db, "contact", "inform", contact_id, definitions=None)
    assert change.returncode == 3
    assert f"{NEW} is not loaded here" in change.stderr
    assert snapshot(cli_db) == before
    wrong = run("--db", cli_db, "workflow", "list", definitions="tests.successor")
    assert wrong.returncode == 2 and "MPOXFLOW_DEFINITIONS: 'tests.successor': name a definition as " \
                                     "module:ATTRIBUTE" in wrong.stderr
    loaded = run("--db", cli_db, "clock", "advance", "--days", "30", definitions="tests.successor:SUCCESSORS")
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(run("--db", cli_db, "show", contact_id, "--json",
                          definitions="tests.successor:SUCCESSORS").stdout)["state"] == "released"


def test_an_objects_page_links_the_diagram_of_its_own_definition(cli_db: str, client_for: Any,
                                                                   registered: Any) -> None:  # noqa: F811
    _, contact_id = story(cli_db)
    ok(cli_db, "workflow", "migrate", "--from", OLD, "--to", NEW, "--actor", ADMIN)
    staff = client_for("staff:test")
    page = staff.get(f"/objects/{contact_id}").text
    link = "/diagrams/contact?definition=contact%40SST-mpox-7.1-r2"
    assert f'href="{link}"' in page
    diagram = staff.get(link)
    assert diagram.status_code == 200
    # The successor's own diagram: its new state, and its objects counted in its states.
    assert re.search(r'<td data-state="exposed">1</td>', diagram.text)
    assert '<td data-state="follow_up">0</td>' in diagram.text
    assert re.search(r'<td data-state="exposed">0</td>', staff.get("/diagrams/contact").text)
    unknown = staff.get("/diagrams/contact", params={"definition": "contact@x"})
    assert unknown.status_code == 422
    assert "Der er ingen contact-arbejdsgangsdefinition contact@x" in unknown.text
