"""What the command-line modules registered by ``entry.cli`` share (``events_cli``, ``workflow_cli``): the types of
the runner, engine and actor callables ``entry.cli`` hands them, and the options every command takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

Run = Callable[..., None]
EngineOf = Callable[[typer.Context], Any]
ActorOf = Callable[[str | None], str]

Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who makes the change (default $MPOXFLOW_ACTOR, else your user name).")
]
Reason = Annotated[str | None, typer.Option("--reason", help="Why: goes into the audit entry.")]
