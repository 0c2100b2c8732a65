"""What changed between two definitions (issue 20 item 3): ``workflows.diff``, ``mpoxflow diagram --diff A B`` (text
and Mermaid) and the diagram page's ``?diff=B``, against the test successor of the contact workflow
(``tests/successor.py``: 14 days of monitoring, a new state, a removed transition and guard); a definition against
itself is empty."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from entry.cli import app
from tests.successor import SUCCESSOR, registered  # noqa: F401 (the fixture)
from tests.test_cli import describe
from tests.test_web_pages import STAFF, error_box, main
from workflows import diff
from workflows.contact import CONTACT
from workflows.definition import WorkflowDefinition
from workflows.registry import BY_NAME, WORKFLOWS

OLD, NEW = "contact@SST-mpox-7.1", "contact@SST-mpox-7.1-r2"
OLD_Q, NEW_Q = "contact%40SST-mpox-7.1", "contact%40SST-mpox-7.1-r2"
SUMMARY_21 = "21 days after the last exposure without symptoms: released"
SUMMARY_14 = "14 days after the last exposure without symptoms: released"

EXPECTED_TEXT = f"""\
{OLD} → {NEW}
states:
  + follow_up
transitions:
  + call: monitored → follow_up
  + migrated: exposed → exposed
  + migrated: monitored → monitored
  + migrated: released → released
  + migrated: symptomatic → symptomatic
  + monitoring_ends: follow_up → released
  - expose: released → exposed
  ~ monitoring_ends: exposed → released: summary '{SUMMARY_21}' → '{SUMMARY_14}'
  ~ monitoring_ends: monitored → released: summary '{SUMMARY_21}' → '{SUMMARY_14}'
guards:
  + migrated: not_anonymous
  - add: anonymous_only_when_declined
timers:
  ~ monitoring_ends: period 21 days → 14 days
cited sections:
  + SST-mpox-7.1 §2.1
  - SST-mpox-7.1 §5.4"""

runner = CliRunner()


def test_the_successor_differs_by_exactly_what_it_changes() -> None:
    result = diff.diff(CONTACT, SUCCESSOR)
    assert (result.old, result.new) == (OLD, NEW)
    assert [(c.element, c.change, c.label, c.details) for c in result.changes] == [
        ("state", "added", "follow_up", ()),
        ("transition", "added", "call: monitored → follow_up", ()),
        *(("transition", "added", f"migrated: {s} → {s}", ()) for s in ("exposed", "monitored", "released",
                                                                          "symptomatic")),
        ("transition", "added", "monitoring_ends: follow_up → released", ()),
        ("transition", "removed", "expose: released → exposed", ()),
        ("transition", "changed", "monitoring_ends: exposed → released", (("summary", SUMMARY_21, SUMMARY_14),)),
        ("transition", "changed", "monitoring_ends: monitored → released", (("summary", SUMMARY_21, SUMMARY_14),)),
        ("guard", "added", "migrated: not_anonymous", ()),
        ("guard", "removed", "add: anonymous_only_when_declined", ()),
        ("timer", "changed", "monitoring_ends", (("period", timedelta(days=21), timedelta(days=14)),)),
        ("section", "added", "SST-mpox-7.1 §2.1", ()),
        ("section", "removed", "SST-mpox-7.1 §5.4", ()),
    ]
    assert diff.text(result) == EXPECTED_TEXT
    # Backwards, every addition is a removal and every change runs the other way.
    back = diff.diff(SUCCESSOR, CONTACT)
    assert [(c.element, c.change, c.label) for c in back.of("state") + back.of("section")] == [
        ("state", "removed", "follow_up"), ("section", "added", "SST-mpox-7.1 §5.4"),
        ("section", "removed", "SST-mpox-7.1 §2.1")]
    assert back.of("timer")[0].details == (("period", timedelta(days=14), timedelta(days=21)),)


def test_a_definition_against_itself_is_empty() -> None:
    for definition in WORKFLOWS.values():
        result = diff.diff(definition, definition)
        assert not result and result.changes == ()
        assert diff.text(result) == f"{definition.name} → {definition.name}: no differences"
        assert "class " not in diff.mermaid(result, definition, definition)  # nothing styled
    assert not diff.diff(SUCCESSOR, SUCCESSOR)


def test_a_changed_final_state_guard_rule_and_timer_show_as_changed() -> None:
    from dataclasses import replace

    from workflows.rules import cite

    changed = WorkflowDefinition(
        kind="contact", version="SST-mpox-7.1", revision=3, facts=CONTACT.facts, states=CONTACT.states,
        final=("released",),  # and no longer left by a new exposure
        transitions=[replace(s, guards=tuple(replace(g, rule=cite("§5.2"))
                                             if diff.guard_name(g) == "not_the_case_itself" else g
                                             for g in s.guards)) if s.trigger == "add" else s
                     for s in CONTACT.transitions if not (s.trigger == "expose" and s.source == ("released",))],
        timers=[replace(t, after="the day of the first exposure") if t.name == "pep_window_closes" else t
                for t in CONTACT.timers.values()],
        identity=CONTACT.identity, identity_rule=CONTACT.identity_rule,
    )
    result = diff.diff(CONTACT, changed)
    assert [(c.label, c.details) for c in result.of("state")] == [("released", (("final", False, True),))]
    assert [(c.label, c.details) for c in result.of("guard")] == [
        ("add: not_the_case_itself", (("rule", "SST-mpox-7.1 §5.1", "SST-mpox-7.1 §5.2"),))]
    assert [(c.label, c.details) for c in result.of("timer")] == [
        ("pep_window_closes", (("counts from", "the day of the exposure", "the day of the first exposure"),))]
    assert "  ~ released: final no → yes" in diff.text(result)


def test_the_mermaid_diff_styles_what_was_added_removed_and_changed() -> None:
    result = diff.diff(CONTACT, SUCCESSOR)
    drawn = diff.mermaid(result, CONTACT, SUCCESSOR)
    lines = drawn.splitlines()
    assert lines[:4] == ["---", f"title: {OLD} → {NEW}", "---", "stateDiagram-v2"]
    assert {line.split()[1] for line in lines if line.strip().startswith("classDef")} == {"added", "removed",
                                                                                          "changed"}
    assert [line.strip() for line in lines if line.strip().startswith("class ")] == ["class follow_up added"]
    assert "    monitored --> follow_up : + call (§2.1)" in lines
    assert "    follow_up --> released : + monitoring_ends (§5.5) ⏱" in lines
    assert "    released --> exposed : - expose (§5.5)" in lines  # removed, drawn from the old definition
    assert "    exposed --> released : ~ monitoring_ends (§5.5) ⏱" in lines
    assert "    exposed --> monitored : inform (§5.5)" in lines  # unchanged: unmarked
    assert "    [*] --> exposed : add (§5.1)" in lines
    assert "    %% timer ~ monitoring_ends: period 21 days → 14 days" in lines
    assert "    %% guard - add: anonymous_only_when_declined" in lines
    assert "    %% section + SST-mpox-7.1 §2.1" in lines and "    %% section - SST-mpox-7.1 §5.4" in lines


# ---- the command line ---------------------------------------------------------------------------------------------


def test_diagram_diff_prints_the_changes(registered: WorkflowDefinition) -> None:  # noqa: F811
    result = runner.invoke(app, ["diagram", "--diff", OLD, NEW])
    assert result.exit_code == 0, describe(result)
    assert result.stdout == EXPECTED_TEXT + "\n"
    as_mermaid = runner.invoke(app, ["diagram", "--diff", OLD, NEW, "--format", "mermaid"])
    assert as_mermaid.exit_code == 0, describe(as_mermaid)
    assert as_mermaid.stdout == diff.mermaid(diff.diff(CONTACT, SUCCESSOR), CONTACT, SUCCESSOR) + "\n"
    as_json = json.loads(runner.invoke(app, ["diagram", "--diff", OLD, NEW, "--json"]).stdout)
    assert (as_json["from"], as_json["to"], as_json["format"]) == (OLD, NEW, "text")
    assert {"element": "timer", "change": "changed", "name": "monitoring_ends", "source": None, "dest": None,
            "trigger": None, "details": [{"attribute": "period", "before": "21 days", "after": "14 days"}]} \
        in as_json["changes"]
    same = runner.invoke(app, ["diagram", "--diff", NEW, NEW])
    assert same.exit_code == 0 and same.stdout == f"{NEW} → {NEW}: no differences\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--diff", "contact@SST-mpox-9", OLD],
     "--diff A: unknown workflow definition 'contact@SST-mpox-9': use one of case@SST-mpox-7.1, "
     "contact@SST-mpox-7.1, course@SST-mpox-7.1"),
    (["--diff", OLD, NEW],  # not registered outside the fixture
     f"--diff B: unknown workflow definition '{NEW}': use one of case@SST-mpox-7.1, contact@SST-mpox-7.1, "
     "course@SST-mpox-7.1"),
    (["--diff", "case@SST-mpox-7.1", OLD],
     "--diff A B compares two definitions of one workflow: A is a case definition, B a contact one"),
    (["--diff", OLD, OLD, "--format", "svg"], "unknown format 'svg': use one of text, mermaid"),
    (["contact", "--diff", OLD, OLD], "--diff compares two definitions: give A and B (one of case@SST-mpox-7.1, "
     "contact@SST-mpox-7.1, course@SST-mpox-7.1), not 3 name(s)"),
    (["--diff", OLD], "--diff compares two definitions: give A and B (one of case@SST-mpox-7.1, "
     "contact@SST-mpox-7.1, course@SST-mpox-7.1), not 1 name(s)"),
    ([], "name one workflow (case, contact, course), or compare two definitions with --diff A B"),
    (["case", "contact"], "name one workflow (case, contact, course), or compare two definitions with --diff A B"),
    (["case", "--format", "text"], "a workflow's diagram is Mermaid: --format text goes with --diff A B"),
    (["case", "--format", "bad\x00"], "unknown format 'bad?': use one of text, mermaid"),
])
def test_diagram_diff_refuses_what_it_cannot_compare(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["diagram", *args])
    assert result.exit_code == 2, describe(result)
    assert result.stdout == ""
    assert result.stderr == f"mpoxflow: {message}\n"


# ---- the diagram page -------------------------------------------------------------------------------------------


def rows(page: str) -> list[tuple[str, str, str, str]]:
    table = re.search(r'<table id="changes-table">(.*?)</table>', page, re.S)
    assert table, main(page)
    found = []
    for row in re.findall(r'<tr class="change-[a-z]+" data-change="[a-z]+">(.*?)</tr>', table.group(1), re.S):
        cells = [" ".join(html.unescape(re.sub(r"<br>", " | ", c)).split())
                 for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        found.append(tuple(cells))
    return found  # type: ignore[return-value]


def test_the_diagram_page_shows_what_changed(client_for: Any, registered: WorkflowDefinition) -> None:  # noqa: F811
    staff = client_for(STAFF)
    plain = staff.get("/diagrams/contact").text
    assert 'id="changes"' not in plain
    assert f'href="/diagrams/contact?definition={OLD_Q}&amp;diff={NEW_Q}">{NEW}</a>' in plain  # offered
    assert f'href="/diagrams/contact?definition={NEW_Q}">{NEW}</a>' in plain  # its own diagram
    page = staff.get("/diagrams/contact", params={"diff": NEW})
    assert page.status_code == 200
    assert f"Hvad er ændret fra {OLD} til {NEW}" in page.text
    summary_da = "21 dage efter seneste eksponering uden symptomer: afsluttet"
    assert rows(page.text) == [
        ("Tilstand", "tilføjet", "follow_up", ""),  # the test successor's words are not in the catalog
        ("Overgang", "tilføjet", "call: selvmonitorering → follow_up", ""),
        *(("Overgang", "tilføjet", f"flyttet til nye regler: {s} → {s}", "") for s in ("eksponeret",
                                                                                     "selvmonitorering",
                                                                                     "afsluttet",
                                                                                     "symptomer")),
        ("Overgang", "tilføjet", "selvmonitorering slutter: follow_up → afsluttet", ""),
        ("Overgang", "fjernet", "ny eksponering: afsluttet → eksponeret", ""),
        ("Overgang", "ændret", "selvmonitorering slutter: eksponeret → afsluttet",
         f"hvad: {summary_da} → {SUMMARY_14}"),
        ("Overgang", "ændret", "selvmonitorering slutter: selvmonitorering → afsluttet",
         f"hvad: {summary_da} → {SUMMARY_14}"),
        ("Betingelse", "tilføjet", "flyttet til nye regler: not_anonymous", ""),
        ("Betingelse", "fjernet", "registreret: anonymous_only_when_declined", ""),
        ("Tidsfrist", "ændret", "selvmonitorering slutter", "periode: 21 dage → 14 dage"),
        ("Citeret afsnit", "tilføjet", "SST-mpox-7.1 §2.1", ""),
        ("Citeret afsnit", "fjernet", "SST-mpox-7.1 §5.4", ""),
    ]
    assert "class follow_up added" in page.text  # the Mermaid diff beside the table
    # In English, as the user's browser asks.
    staff.headers["Accept-Language"] = "en"
    english = rows(staff.get("/diagrams/contact", params={"diff": NEW}).text)
    assert [r[:2] for r in english[:2]] == [("State", "added"), ("Transition", "added")]
    assert english[12] == ("Timer", "changed", "self-monitoring ends", "period: 21 days → 14 days")
    # Against itself: nothing changed.
    same = staff.get("/diagrams/contact", params={"diff": OLD}).text
    assert 'id="no-changes"' in same and 'id="changes-table"' not in same


def test_the_diagram_page_refuses_an_unknown_or_foreign_definition(client_for: Any) -> None:
    staff = client_for(STAFF)
    unknown = staff.get("/diagrams/contact", params={"diff": "contact@SST-mpox-9"})
    assert unknown.status_code == 422
    assert error_box(unknown.text) == ("Der findes ingen forløbsdefinition contact@SST-mpox-9 at sammenligne med: "
                                       f"vælg en af {OLD}. Intet blev ændret.")
    foreign = staff.get("/diagrams/contact", params={"diff": "case@SST-mpox-7.1"})
    assert foreign.status_code == 422
    assert error_box(foreign.text) == ("case@SST-mpox-7.1 er en definition af et andet forløb: sammenlign med en "
                                       f"af {OLD}. Intet blev ændret.")
    hostile = staff.get("/diagrams/contact", params={"diff": "<script>alert(1)</script>\x00" + "x" * 5000})
    assert hostile.status_code == 422
    assert "<script>alert" not in hostile.text  # escaped, cut short, the NUL shown as ?
    assert error_box(hostile.text).startswith("Der findes ingen forløbsdefinition <script>alert(1)</script>?xxx")
    assert len(error_box(hostile.text)) < 200
    assert NEW not in BY_NAME  # the fixture removed it
