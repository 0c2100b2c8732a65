"""structlog set-up for the entry points: JSON lines when not on a terminal, readable lines on one.
Events carry internal ids only; personal data (names, CPR numbers, references) is never logged.

Import this module before anything imports structlog (``entry.cli`` does, first of all): structlog's package
imports its console renderer, and that imports Rich whenever Rich is installed (some 8% of a command's time), for
the renderer's tracebacks. This console renderer never draws one (``drop_statement_parameters`` turns an exception
into text before it, to scrub it) and JSON lines need nothing of Rich, so structlog is imported here as if Rich
were not installed.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from types import ModuleType
from typing import Any


def _structlog_without_rich() -> ModuleType:
    """structlog, imported without Rich unless something imported either already (then as it is)."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog as already

        return already
    sys.modules["rich"] = None  # type: ignore[assignment]  # "import rich" raises ImportError: structlog does without
    try:
        import structlog as made
    finally:
        if "rich" in sys.modules and sys.modules["rich"] is None:
            del sys.modules["rich"]
    return made


structlog = _structlog_without_rich()

LOG_FORMATS = ("json", "console")

#: What in an exception's text may quote a value a statement was given: SQLAlchemy's "[parameters: ...]" (when
#: an engine was made without ``hide_parameters``), PostgreSQL's "DETAIL:  Key (ref)=(...) already exists" and
#: "Failing row contains (...)".
_PARAMETERS = re.compile(r"\[parameters: .*$|^\s*DETAIL:.*$|Key \(.*\)=\(.*\)|Failing row contains \(.*\)",
                         re.MULTILINE)


def scrub(text: str) -> str:
    """``text`` without the values a database statement was given."""
    return _PARAMETERS.sub("[values hidden]", text)


def drop_statement_parameters(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """A structlog processor: an event's exception (``exc_info``, or its text already formatted) and its text
    fields lose any statement parameters and driver details that quote a value."""
    if event_dict.get("exc_info"):
        event_dict = structlog.processors.format_exc_info(_logger, _method, event_dict)
    for key, value in event_dict.items():
        if isinstance(value, str) and ("parameters:" in value or "DETAIL:" in value or "Key (" in value
                                       or "Failing row" in value):
            event_dict[key] = scrub(value)
    return event_dict


def configure_logging(log_format: str | None = None, level: str | None = None) -> None:
    """``log_format``: json or console (default: console on a terminal, json otherwise). ``level``: default
    ``$MPOXFLOW_LOG_LEVEL``, else warning, so a command's own output is not drowned in events."""
    chosen = log_format or ("console" if sys.stderr.isatty() else "json")
    if chosen not in LOG_FORMATS:
        raise ValueError(f"log format {chosen!r}: use json or console")
    level_name = (level or os.environ.get("MPOXFLOW_LOG_LEVEL") or "warning").upper()
    renderer = structlog.processors.JSONRenderer() if chosen == "json" else structlog.dev.ConsoleRenderer()
    # APScheduler logs through the standard library; its routine notes (a poll skipped while a pass still runs)
    # are not an operator's business, its errors are.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_statement_parameters,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping().get(level_name, 30)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
