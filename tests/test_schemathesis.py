"""Issue 13: Schemathesis against ``/openapi.json``, bounded (a few examples per operation, every operation): no
request the schema allows, however odd, ends in a 5xx, on SQLite and PostgreSQL, and every answer is one the schema
documents (its status code, its content type, its body against the documented model: the 401/403/404/409/422/429
errors all have the ``ErrorBody``). The caller is a member of staff with an API token (every workflow operation is
open to it; the admins' operations answer 403, documented too)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.accounts import Accounts
from engine.bootstrap import open_engine

EXAMPLES = 8
#: What each answer is checked for: every answer's status and content type documented, its body matching.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def staff_token(cli_db: str) -> str:
    engine = open_engine(cli_db)
    try:
        return str(Accounts(engine).issue_token("staff:test", "schemathesis", actor="admin:test")["secret"])
    finally:
        engine.db.dispose()


@pytest.mark.slow
@pytest.mark.both_backends
def test_no_request_the_schema_allows_ends_in_a_server_error_and_every_answer_is_documented(
        web_app: Any, staff_token: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", web_app)
    headers = {"Authorization": f"Bearer {staff_token}"}
    tried: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tried.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None, database=None)
        def no_server_error(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS)
            assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                                response.text[:300])
            content_type = " ".join(response.headers.get("content-type") or [])
            if response.status_code >= 400 and content_type.startswith("application/json"):
                body = response.json()
                assert {"error", "message", "exit_code", "status"} <= set(body), (case.formatted_path, body)

        no_server_error()
    assert len(tried) >= 50, tried  # every operation of the API was tried


def test_every_operation_documents_its_errors_with_the_error_body(web_app: Any) -> None:
    schema = web_app.openapi()
    operations = [(path, method, spec) for path, methods in schema["paths"].items()
                  for method, spec in methods.items()]
    assert len(operations) >= 50
    for path, method, spec in operations:
        for status in ("401", "403", "404", "409", "422", "429"):
            answer = spec["responses"].get(status)
            assert answer, (method, path, status)
            documented = answer["content"]["application/json"]["schema"]
            assert documented == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    body = schema["components"]["schemas"]["ErrorBody"]
    assert {"error", "message", "rule", "exit_code", "status"} <= set(body["required"])
