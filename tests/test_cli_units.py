"""Units, assignment and access by unit on the command line (issue 17): `unit`, `assign`, `transfer`, reading
as a user (`--as`), `due --mine`/`--unit`, `audit --unit`, `show --break-glass`, and their exit statuses."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import cli, doc, ok, snapshot

pytestmark = pytest.mark.both_backends

ADMIN = "admin:test"
PASSWORD = "correct horse battery"


@pytest.fixture
def regions(cli_db: str) -> str:
    for name, parent in (("Region Hovedstaden", "Danmark"), ("Region Sjælland", "Danmark"), ("STPS", "Danmark")):
        doc(cli_db, "unit", "add", name, "--parent", parent, "--actor", ADMIN)
    for name, unit in (("lead:h", "Region Hovedstaden:lead"), ("member:h", "Region Hovedstaden"),
                       ("member:sj", "Region Sjælland"), ("member:stps", "STPS")):
        result = _with_stdin(cli_db, ["user", "add", name, "--role", "staff", "--password-stdin", "--unit", unit,
                                      "--actor", ADMIN])
        assert result.exit_code == 0, result.stderr
    return cli_db


def _with_stdin(url: str, args: list[str]):  # type: ignore[no-untyped-def]
    from entry.cli import app
    from tests.test_cli import runner

    return runner.invoke(app, ["--db", url, *args], input=PASSWORD + "\n")


def confirmed_case(url: str, actor: str, ref: str) -> str:
    person = doc(url, "person", "add", "--ref", ref, "--actor", actor)["id"]
    case = doc(url, "case", "open", "--person", person, "--onset", "2025-03-01", "--symptoms", "rash",
               "--criteria", "msm", "--actor", actor)["id"]
    ok(url, "case", "confirm", case, "--pcr-on", "2025-03-03", "--actor", actor)
    ok(url, "case", "consent", case, "--tracing", "yes", "--actor", actor)
    return str(case)


def contact(url: str, actor: str, case: str, ref: str) -> str:
    person = doc(url, "person", "add", "--ref", ref, "--actor", actor)["id"]
    return str(doc(url, "contact", "add", "--case", case, "--person", person, "--exposed", "2025-03-02",
                   "--kind", "sexual", "--actor", actor)["id"])


def test_unit_add_and_list_show_the_tree_with_members(regions):
    units = doc(regions, "unit", "list")
    assert [(u["name"], u["depth"]) for u in units] == [("Danmark", 0), ("Region Hovedstaden", 1),
                                                        ("Region Sjælland", 1), ("STPS", 1)]
    assert {m["name"]: m["role"] for m in units[1]["members"]} == {"lead:h": "lead", "member:h": "member"}
    text = ok(regions, "unit", "list").stdout
    assert "  unit-2  Region Hovedstaden  — lead:h (lead), member:h" in text
    # Refusals: a non-admin, an unknown parent, a taken name, a user without a unit once there are several.
    assert cli(regions, "unit", "add", "X", "--parent", "Danmark", "--actor", "member:h").exit_code == 3
    missing = cli(regions, "unit", "add", "X", "--parent", "Atlantis", "--actor", ADMIN)
    assert missing.exit_code == 4 and "unit list" in missing.stderr
    assert cli(regions, "unit", "add", "STPS", "--parent", "Danmark", "--actor", ADMIN).exit_code == 3
    before = snapshot(regions)
    nounit = _with_stdin(regions, ["user", "add", "someone", "--role", "staff", "--password-stdin", "--actor",
                                   ADMIN])
    assert nounit.exit_code == 2 and "--unit" in nounit.stderr
    assert snapshot(regions) == before


def test_reading_as_a_user_shows_only_their_units_and_breaking_the_glass_is_audited(regions):
    case = confirmed_case(regions, "member:sj", "SJ-1")
    assert doc(regions, "list", "cases", "--as", "member:h") == []
    assert [c["id"] for c in doc(regions, "list", "cases", "--as", "member:sj")] == [case]
    assert [c["id"] for c in doc(regions, "list", "cases")] == [case]  # the first admin: a lead of the root
    shown = cli(regions, "show", case, "--as", "member:h")
    assert shown.exit_code == 3 and "--break-glass" in shown.stderr and "Region Sjælland" in shown.stderr
    assert cli(regions, "audit", "timeline", case, "--as", "member:h").exit_code == 3
    view = doc(regions, "show", case, "--as", "member:h", "--break-glass", "patienten er indlagt her")
    assert view["id"] == case
    entry = doc(regions, "audit", "--entity", case)[-1]
    assert (entry["trigger"], entry["actor"], entry["reason"]) == ("break_glass", "member:h",
                                                                   "patienten er indlagt her")
    acted = cli(regions, "case", "isolate", case, "--mode", "home", "--actor", "member:h")
    assert acted.exit_code == 3 and "outside your units" in acted.stderr
    nobody = cli(regions, "list", "cases", "--as", "nobody")
    assert nobody.exit_code == 3 and "--as" in nobody.stderr


def test_assign_and_transfer_with_due_mine_and_audit_unit(regions):
    case = confirmed_case(regions, "lead:h", "H-1")
    c1, c2 = contact(regions, "lead:h", case, "H-2"), contact(regions, "lead:h", case, "H-3")
    mine = doc(regions, "due", "--mine", "--as", "member:h")
    assert {c1, c2} <= {i["object"] for i in mine}  # unassigned work of the unit is every member's
    refused = cli(regions, "assign", c1, "--user", "lead:h", "--reason", "x", "--actor", "member:h")
    assert refused.exit_code == 3 and "leads" in refused.stderr
    done = doc(regions, "assign", c1, "--user", "member:h", "--reason", "ringer i dag", "--actor", "member:h")
    assert [d["id"] for d in done] == [c1]
    assert {i["object"] for i in doc(regions, "due", "--mine", "--as", "lead:h")} & {c1} == set()
    noreason = cli(regions, "assign", c2, "--user", "member:h", "--actor", "lead:h")
    assert noreason.exit_code == 2 and "--reason" in noreason.stderr
    notransfer = cli(regions, "transfer", c2, "--reason", "x", "--actor", "lead:h")
    assert notransfer.exit_code == 2 and "--unit" in notransfer.stderr
    moved = doc(regions, "transfer", c2, "--unit", "STPS", "--user", "member:stps", "--reason", "STPS opsporer",
                "--actor", "lead:h")
    assert moved[0]["unit"] == doc(regions, "unit", "list")[3]["id"]
    assert [i["object"] for i in doc(regions, "due", "--mine", "--as", "member:stps") if i["object"] == c2]
    assert doc(regions, "due", "--unit", "STPS", "--as", "member:h") == []
    assert cli(regions, "show", c2, "--as", "member:h").exit_code == 3
    text = ok(regions, "due", "--as", "member:h").stdout
    assert "Region Hovedstaden" in text and "member:h" in text
    by_unit = doc(regions, "audit", "--unit", "Region Hovedstaden", "--trigger", "transfer")
    assert [e["object"] for e in by_unit] == [c2]
    # c1 is assigned, c2 transferred: nothing is left unassigned in Region H, and saying so is a refusal.
    bulk = cli(regions, "assign", "--kind", "contact", "--unassigned", "--in-unit", "Region Hovedstaden",
               "--reason", "ingen", "--actor", "lead:h")
    assert bulk.exit_code == 3 and "no object matches" in bulk.stderr
    assert ok(regions, "audit", "verify").exit_code == 0
    assert ok(regions, "audit", "replay", "--check").exit_code == 0


def test_unit_rules_and_membership_changes(regions):
    rules = doc(regions, "unit", "rules")
    assert [(r["kind"], r["rule"]) for r in rules] == [("case", "creator"), ("contact", "parent"),
                                                       ("course", "parent")]
    changed = doc(regions, "unit", "rule", "contact", "--rule", "unit", "--unit", "STPS", "--round-robin",
                  "--actor", ADMIN)
    assert (changed["rule"], changed["unit_name"], changed["round_robin"]) == ("unit", "STPS", True)
    bad = cli(regions, "unit", "rule", "contact", "--rule", "unit", "--actor", ADMIN)
    assert bad.exit_code == 2 and "--unit" in bad.stderr
    case = confirmed_case(regions, "lead:h", "H-1")
    c = contact(regions, "lead:h", case, "H-2")
    shown = json.loads(ok(regions, "show", c, "--json").stdout)
    users = {u["name"]: u["id"] for u in doc(regions, "user", "list")}
    assert shown["assignee"] == users["member:stps"]  # round-robin in STPS: its only member
    ok(regions, "unit", "member", "Region Sjælland", "member:stps", "--actor", ADMIN)
    left = doc(regions, "unit", "leave", "STPS", "member:stps", "--actor", ADMIN, "--reason", "orlov")
    assert left["returned"] == [c]
    assert json.loads(ok(regions, "show", c, "--json").stdout)["assignee"] is None
    last = cli(regions, "unit", "leave", "Region Sjælland", "member:sj", "--actor", ADMIN)
    assert last.exit_code == 3 and "only unit" in last.stderr
