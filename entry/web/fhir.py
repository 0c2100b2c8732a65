"""FHIR R4 over HTTP (issue 18, reading only): ``/fhir/metadata``, a resource by type and id, ``AuditEvent?entity=``,
``Patient/{id}/$everything`` and ``$export`` (NDJSON, streamed). The resources are ``engine.fhir``'s; logging in is
the API's (a bearer token or the session cookie), and every read is the user's (only their units' objects).

Answers are ``application/fhir+json``; every error is an ``OperationOutcome`` with the API's status (401 not logged
in, 403 outside the user's units, 404 no such resource, 422 a malformed search). The routes are left out of
``/openapi.json``: what they answer is described by the CapabilityStatement, as FHIR clients expect.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from engine.fhir import JSON_TYPE, NDJSON_TYPE, FhirReader, capability_statement, check_types, operation_outcome
from engine.views import instant
from entry.web.app import drop_reads, request_engine, require_login
from workflows.errors import MpoxflowError, OutsideUnits

router = APIRouter(prefix="/fhir", include_in_schema=False)


def fhir_json(resource: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(resource, ensure_ascii=False), status_code=status_code, media_type=JSON_TYPE,
                    headers=headers)


def outcome_response(error: MpoxflowError, request: Request | None = None) -> Response:
    """An error as an OperationOutcome with its HTTP status (401 with the bearer challenge); what the request read
    is not recorded (the answer shows nothing of it)."""
    if request is not None:
        drop_reads(request)
    if isinstance(error, OutsideUnits):
        from entry.web.api import over_http

        error = over_http(error)
    headers = {"WWW-Authenticate": 'Bearer realm="mpoxflow"'} if error.http_status == 401 else None
    return fhir_json(operation_outcome(error), error.http_status, headers)


def reader_of(request: Request) -> FhirReader:
    """The logged-in user's reader (NotAuthenticated without a login), Bundles' URLs under this server's."""
    login = require_login(request)
    return FhirReader(request_engine(request), login.role, base=str(request.base_url).rstrip("/") + "/fhir")


def answer(request: Request, build: Callable[[FhirReader], Any]) -> Response:
    try:
        return fhir_json(build(reader_of(request)))
    except MpoxflowError as error:
        return outcome_response(error, request)


@router.get("/metadata")
def metadata(request: Request) -> Response:
    """The CapabilityStatement (no login needed: FHIR clients read it first)."""
    try:
        now = instant(request_engine(request).clock.now())
    except MpoxflowError as error:
        return outcome_response(error, request)
    return fhir_json(capability_statement(str(now)))


@router.get("/AuditEvent")
def audit_events(request: Request) -> Response:
    """``AuditEvent?entity=case-1`` (or ``entity=Condition/case-1``): the object's audit entries, a searchset."""
    entity = request.query_params.get("entity")
    return answer(request, lambda reader: reader.audit_events(entity))


@router.get("/Patient/{person_id}/$everything")
def everything(request: Request, person_id: str) -> Response:
    return answer(request, lambda reader: reader.everything(person_id))


@router.get("/$export")
def export(request: Request) -> Response:
    """Every resource the user may read as NDJSON, one per line (``_type=Patient,Condition`` some types only),
    streamed: the simple form of the Bulk Data export, answered at once rather than kicked off."""
    try:
        reader = reader_of(request)
        types = check_types((request.query_params.get("_type") or "").split(","))
        resources = reader.export(types)
        # The first resource is read now: the Patients' reads are recorded before the answer starts (a read that
        # cannot be recorded is then a 503, not an answer cut off), issue 19 item 3.
        first = next(resources, None)
    except MpoxflowError as error:
        return outcome_response(error, request)

    def lines() -> Iterator[bytes]:
        for resource in itertools.chain([] if first is None else [first], resources):
            yield (json.dumps(resource, ensure_ascii=False) + "\n").encode()

    return StreamingResponse(lines(), media_type=NDJSON_TYPE)


@router.get("/{resource_type}/{resource_id}")
def read(request: Request, resource_type: str, resource_id: str) -> Response:
    return answer(request, lambda reader: reader.read(resource_type, resource_id))
