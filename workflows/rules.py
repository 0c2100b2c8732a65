"""Citations of the guideline: *Retningslinjer for håndtering af mpox*, v7.1, 18 Feb 2025."""

from __future__ import annotations

import re

GUIDELINE = "SST-mpox-7.1"
#: The form of a citation: a version of the guideline and a section (``SST-mpox-7.1 §2.2.1``). A definition of a
#: later version cites that version's sections (``SST-mpox-8.0 §5.5``) in the same form.
CITATION = re.compile(r"SST-mpox-\d+(?:\.\d+)* §\d+(?:\.\d+)*")


def cite(section: str) -> str:
    """``cite("§3.1")`` -> ``"SST-mpox-7.1 §3.1"``: the form every transition, guard, timer and audit entry uses."""
    return f"{GUIDELINE} {section}"


def cites_a_section(rule: object) -> bool:
    """Whether ``rule`` is a citation of a section of the guideline, in the form ``cite`` makes."""
    return isinstance(rule, str) and CITATION.fullmatch(rule) is not None


def section_of(rule: str) -> str:
    """The section a citation names, without the guideline's version: ``"SST-mpox-7.1 §3.1"`` -> ``"§3.1"``."""
    return rule[rule.index("§"):] if "§" in rule else rule
