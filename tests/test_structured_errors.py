"""Issue 14, items 3 and 5: refusals are structured (rule, message key, params, the fields they name) and each entry
point names a field in its own terms; one exception hierarchy carries the exit status and the HTTP status."""

from __future__ import annotations

import ast
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from engine.core import Engine
from entry.web.app import error_body
from persistence.database import DuplicateKey, StorageError
from tests.helpers import person
from tests.test_cli import cli, describe
from workflows import errors
from workflows.errors import (
    Conflict,
    GuardRefused,
    MpoxflowError,
    NotAuthenticated,
    NotFound,
    NotPermitted,
    OutsideUnits,
    RuleRefused,
    TooManyAttempts,
    TriggerNotAllowed,
    UsageError,
    field,
)

ROOT = Path(__file__).resolve().parent.parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def _string_literals_outside_docstrings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("package", ["workflows", "engine", "scheduler"])
def test_no_command_line_flag_is_written_in_the_rules(package: str) -> None:
    files = sorted((ROOT / package).glob("*.py"))
    assert len(files) >= 3, files
    found = [(path.name, line, text) for path in files for line, text in _string_literals_outside_docstrings(path)
             if FLAG.search(text)]
    assert found == []


def test_every_error_carries_its_exit_status_http_status_and_code() -> None:
    expected = {UsageError: (2, 422, "usage"), RuleRefused: (3, 409, "refused"), GuardRefused: (3, 409, "refused"),
                NotFound: (4, 404, "not_found"), Conflict: (5, 409, "conflict"),
                NotPermitted: (3, 403, "not_permitted"), NotAuthenticated: (3, 401, "not_authenticated"),
                TooManyAttempts: (3, 429, "too_many_attempts"), StorageError: (1, 503, "storage"),
                DuplicateKey: (3, 409, "refused"), OutsideUnits: (3, 403, "outside_units")}
    for cls, (exit_code, status, code) in expected.items():
        assert (cls.exit_code, cls.http_status, cls.code) == (exit_code, status, code), cls
    # Every error class of the hierarchy is in the table.
    declared = {obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, MpoxflowError)}
    assert declared - {MpoxflowError, TriggerNotAllowed} <= set(expected)


def test_a_field_is_named_by_each_entry_point_in_its_own_terms() -> None:
    refusal = GuardRefused(f"give who assessed it with {field('assessed_by')} ({field('assessment_note')} too)",
                           rule="SST-mpox-7.1 §6.2", key="pep_needs_assessor")
    assert refusal.fields == ("assessed_by", "assessment_note")
    assert refusal.message == "give who assessed it with assessed_by (assessment_note too)"
    assert refusal.render(lambda name: "--" + name.replace("_", "-")) == (
        "give who assessed it with --assessed-by (--assessment-note too)")
    assert refusal.render({"assessed_by": "Vurderet af", "assessment_note": "Vurdering"}.__getitem__) == (
        "give who assessed it with Vurderet af (Vurdering too)")
    body = error_body(refusal)
    assert (body["status"], body["error"], body["key"], body["rule"]) == (409, "refused", "pep_needs_assessor",
                                                                         "SST-mpox-7.1 §6.2")
    assert "\u27e6" not in body["message"]


def test_a_guard_refusal_carries_the_guard_as_its_key(engine: Engine) -> None:
    case = engine.open("case", "open", person=person(engine), actor="staff:test", data={
        "onset": date(2025, 3, 1), "symptoms": ["rash", "fever"], "criteria": ["msm"]})["id"]
    with pytest.raises(GuardRefused) as refused:
        engine.apply(case, "isolate", data={"mode": "covered"}, actor="staff:test")
    assert refused.value.key == "covered_needs_no_general_symptoms"
    assert "mode" in refused.value.fields and refused.value.rule == "SST-mpox-7.1 §4.1"
    assert refused.value.params == {"object": case, "trigger": "isolate", "state": "suspected",
                                    "fields": list(refused.value.fields),
                                    # the refusal's parts, for a page to say it in Danish (issue 16)
                                    "template": refused.value.params["template"],
                                    "values": {"case": case, "symptoms": ["fever"]}}
    assert refused.value.params["template"].startswith("%(case)s has general symptoms (%(symptoms)s)")
    with pytest.raises(TriggerNotAllowed) as not_allowed:
        engine.apply(case, "heal", data={"on": date(2025, 3, 5)}, actor="staff:test")
    assert not_allowed.value.key == "trigger_not_allowed"
    assert not_allowed.value.params["state"] == "suspected" and not_allowed.value.params["trigger"] == "heal"


def test_the_cli_and_the_api_name_the_same_field_each_their_way(cli_db: str, client_for: Any) -> None:
    cli(cli_db, "person", "add", "--ref", "R-1", "--actor", "staff:test")
    cli(cli_db, "case", "open", "--person", "person-1", "--onset", "2025-03-01", "--symptoms", "rash,fever",
        "--criteria", "msm", "--actor", "staff:test")
    result = cli(cli_db, "case", "isolate", "case-1", "--mode", "covered", "--actor", "staff:test", "--json")
    assert result.exit_code == 3, describe(result)
    assert "(--mode home)" in json.loads(result.stdout)["error"] and "--mode home" in result.stderr
    staff = client_for("staff:test")
    answer = staff.post("/api/cases/case-1/isolate", json={"mode": "covered"}, headers={"X-CSRF-Token": staff.csrf})
    assert answer.status_code == 409
    body = answer.json()
    assert "mode" in body["fields"] and body["params"]["trigger"] == "isolate"
    assert body["params"]["object"] == "case-1" and body["params"]["state"] == "suspected"
    assert "--mode" in json.loads(result.stdout)["options"]
    assert "(mode home)" in answer.json()["message"] and "--mode" not in answer.json()["message"]


def test_the_read_log_names_its_fields_each_entry_point_its_way(cli_db: str, client_for: Any) -> None:
    """Issue 19 item 3: `reads` and `GET /api/reads` refuse a bad day naming the field (--since, since), a
    summary that is none naming --by; and staff are refused with the key of a refusal."""
    result = cli(cli_db, "reads", "--since", "2025-02-30", "--as", "auditor:test", "--json")
    assert result.exit_code == 2, describe(result)
    error = json.loads(result.stdout)
    assert error["options"] == ["--since"] and "--since" in error["error"] and error["key"] == "usage"
    result = cli(cli_db, "reads", "--by", "unit", "--as", "auditor:test", "--json")
    assert result.exit_code == 2 and json.loads(result.stdout)["options"] == ["--by"], describe(result)
    answer = client_for("auditor:test").get("/api/reads", params={"until": "2025-02-30"})
    assert answer.status_code == 422 and answer.json()["fields"] == ["until"], answer.text
    assert "--until" not in answer.json()["message"]
    refused = client_for("staff:test").get("/api/reads")
    assert refused.status_code == 403 and refused.json()["error"] == "not_permitted"
    assert refused.json()["params"]["template"].startswith("the read log")
