"""Citations of the guideline: *Retningslinjer for håndtering af mpox*, v7.1, 18 Feb 2025."""

from __future__ import annotations

GUIDELINE = "SST-mpox-7.1"


def cite(section: str) -> str:
    """``cite("§3.1")`` -> ``"SST-mpox-7.1 §3.1"``: the form every transition, guard, timer and audit entry uses."""
    return f"{GUIDELINE} {section}"
