"""Every workflow definition by kind, and the versions an object may have started under."""

from __future__ import annotations

from workflows.case import CASE
from workflows.contact import CONTACT
from workflows.course import COURSE
from workflows.definition import WorkflowDefinition

WORKFLOWS: dict[str, WorkflowDefinition] = {w.kind: w for w in (CASE, CONTACT, COURSE)}
#: Definitions by their versioned name (``case@SST-mpox-7.1``): an object runs under the version it started with.
BY_NAME: dict[str, WorkflowDefinition] = {w.name: w for w in WORKFLOWS.values()}
