"""Each change operation is declared once (``workflows.registry.OPERATIONS``) and every entry point derives from it:
a new operation is one declaration, and shows in the CLI, the OpenAPI schema and a web form with no other code."""

from __future__ import annotations

from datetime import date

import pytest
import typer
from fastapi import APIRouter, FastAPI
from typer.testing import CliRunner

from entry.cli import operation_command, option_name
from entry.web.api import add_operation
from entry.web.operations import OPERATIONS as BODIES
from entry.web.operations import Operation as WithBody
from entry.web.operations import body_model
from entry.web.pages import form_fields, label_of
from workflows.errors import UsageError, field
from workflows.operations import Field, Operation
from workflows.registry import OPERATIONS, TASK_ACTIONS, WORKFLOWS

#: A small operation no workflow has: declared here and nowhere else.
NOTE = Operation(
    "case note", "case", "note", "a note on the case", f"Write a note on the case, dated with {field('on')}.",
    fields=(Field("text", "note", "What was noted.", "Notat", "Note", required=True),
            Field("on", "date", "The day it is about, YYYY-MM-DD.", "Dato", "On", required=True),
            Field("channel", "choice", "phone | written", "Kanal", "Channel", choices=("phone", "written"))),
    id_help="The case's id (case-N).",
)


def test_a_new_operation_is_one_declaration_in_the_cli_the_openapi_schema_and_a_form() -> None:
    group = typer.Typer()
    operation_command(NOTE, group)
    app = typer.Typer()
    app.add_typer(group, name="case")
    runner = CliRunner()
    shown = runner.invoke(app, ["case", "note", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert shown.exit_code == 0, shown.output
    for expected in ("ID", "--text", "--on", "--channel", "--actor", "--reason", "--if-version", "--json",
                     "What was noted.", "dated with --on"):
        assert expected in shown.output
    wrong = runner.invoke(app, ["case", "note", "case-1", "--text", "x", "--on", "2025-02-30"])
    assert wrong.exit_code == 2 and "--on '2025-02-30' is not a real date" in wrong.output

    router = APIRouter(prefix="/api")
    add_operation(WithBody(NOTE, body_model(NOTE)), router)
    api = FastAPI()
    api.include_router(router)
    schema = api.openapi()
    endpoint = schema["paths"]["/api/cases/{object_id}/note"]["post"]
    assert endpoint["operationId"] == "case_note"
    body = schema["components"]["schemas"]["CaseNote"]
    assert set(body["properties"]) == {"reason", "if_version", "text", "on", "channel"}
    assert set(body["required"]) == {"text", "on"} and body["additionalProperties"] is False
    assert body["properties"]["channel"]["anyOf"][0]["enum"] == ["phone", "written"]
    assert body["properties"]["text"]["maxLength"] == 2000

    fields = {f.name: f for f in form_fields(WithBody(NOTE, body_model(NOTE)), {"if_version": 3})}
    assert (fields["text"].label, fields["text"].input, fields["text"].required) == ("Notat", "textarea", True)
    assert (fields["on"].input, fields["channel"].input) == ("date", "select")
    # The declared choices, in order, each with its Danish term (the value posted, the term shown).
    assert fields["channel"].choices == (("phone", "telefonisk (STPS)"), ("written", "skriftlig (SSI og STPS)"))
    assert (fields["if_version"].input, fields["if_version"].value) == ("hidden", 3)
    assert fields["reason"].label == "Begrundelse"


def test_a_refusal_names_a_field_as_each_entry_point_does() -> None:
    refusal = UsageError(f"give {field('on')} and {field('reason')}")
    web = WithBody(NOTE, body_model(NOTE))
    assert refusal.render(lambda name: option_name(NOTE, name)) == "give --on and --reason"
    assert refusal.message == "give on and reason"
    assert refusal.render(label_of(web)) == "give Dato and Begrundelse"


def test_every_declared_operation_fits_its_workflow_and_is_an_endpoint_and_a_command() -> None:
    assert len(OPERATIONS) == 28 and len({op.name for op in OPERATIONS}) == 28
    for op in OPERATIONS:
        assert op.field("reason") is not None
        for declared in op.fields:
            assert declared.label_da and declared.label_en, (op.name, declared.name)
            assert declared.type != "choice" or declared.choices, (op.name, declared.name)
        if op.trigger is not None and op.custom_prepare is None:
            assert WORKFLOWS[op.kind].has_trigger(op.trigger), op.name
    assert [op.operation_id for op in BODIES] == [op.operation_id for op in OPERATIONS]
    for timer, (op, _task) in TASK_ACTIONS.items():  # a task's action is an operation of the task's workflow
        kinds = {k for k, w in WORKFLOWS.items() if any(s.trigger == timer for s in w.transitions)}
        assert kinds and (op.kind in kinds or op.creates), (timer, op.name)


def test_case_open_and_vaccine_offer_prepare_refuse_with_declared_field_names() -> None:
    case_open = next(op for op in OPERATIONS if op.name == "case open")
    with pytest.raises(UsageError) as refused:
        case_open.prepare({"person": "person-1", "pcr_on": date(2025, 3, 3)})
    assert refused.value.fields == ("pcr_on", "clade", "confirmed")
    trigger, data = case_open.prepare({"person": "person-1", "confirmed": True, "pcr_on": date(2025, 3, 3)})
    assert trigger == "open_confirmed" and data["pcr_on"] == date(2025, 3, 3) and "person" not in data
