"""structlog set-up for the entry points: JSON lines when not on a terminal, readable lines on one.
Events carry internal ids only; personal data (names, CPR numbers, references) is never logged."""

from __future__ import annotations

import logging
import os
import sys

import structlog

LOG_FORMATS = ("json", "console")


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
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping().get(level_name, 30)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
