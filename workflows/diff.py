"""What changed between two workflow definitions (issue 20 item 3): the states, transitions, guards, timers and cited
sections added, removed or changed from ``old`` to ``new``. Pure: it reads the two definitions' tables only.

Each element has a key that survives a change of its attributes, so a change shows as *changed* rather than as one
removed and one added:

- a state by its name (changed: whether it is final);
- a transition by (trigger, source, destination), one per source state (changed: its rule, summary, whether a timer
  or another object fires it, whether ``when`` chooses it); an internal transition's destination is its source;
- a guard by its transition's trigger and the guard's name (the function's, with the fields a factory's guard
  names: ``named(decided_by)``; changed: the rule it cites);
- a timer by its name (changed: its rule, its period, what it counts from);
- a cited section by its citation (``SST-mpox-7.1 §5.5``): added or removed only.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from workflows.definition import NEW, Guard, WorkflowDefinition
from workflows.rules import section_of

#: The kinds of element compared, in the order they are listed.
ELEMENTS = ("state", "transition", "guard", "timer", "section")
#: What happened to an element, in the order listed within a kind.
CHANGES = ("added", "removed", "changed")
_MARK = {"added": "+", "removed": "-", "changed": "~"}
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Change:
    """One element added, removed or changed. ``name`` is the state, trigger, guard, timer or citation; a
    transition's ``source`` and ``dest``, a guard's ``trigger``; ``details`` the attributes that changed, each
    ``(attribute, before, after)`` with raw values (a period is a ``timedelta``)."""

    element: str
    change: str
    name: str
    source: str | None = None
    dest: str | None = None
    trigger: str | None = None
    details: tuple[tuple[str, Any, Any], ...] = ()

    @property
    def label(self) -> str:
        """The element as the text lists it: ``expose: released → exposed``, ``add: named(decided_by)``."""
        if self.element == "transition":
            return f"{self.name}: {self.source} → {self.dest}"
        if self.element == "guard":
            return f"{self.trigger}: {self.name}"
        return self.name

    def as_dict(self) -> dict[str, Any]:
        return {"element": self.element, "change": self.change, "name": self.name, "source": self.source,
                "dest": self.dest, "trigger": self.trigger,
                "details": [{"attribute": a, "before": shown(b), "after": shown(c)} for a, b, c in self.details]}


@dataclass(frozen=True)
class DefinitionDiff:
    """The changes from ``old`` to ``new`` (definition names), in the order of ``ELEMENTS`` then ``CHANGES``."""

    old: str
    new: str
    changes: tuple[Change, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def of(self, element: str, change: str | None = None) -> list[Change]:
        return [c for c in self.changes if c.element == element and (change is None or c.change == change)]

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.old, "to": self.new, "changes": [c.as_dict() for c in self.changes]}


def shown(value: Any) -> Any:
    """An attribute's value in words: a period as days or hours, a flag as yes/no; None stays None."""
    if isinstance(value, timedelta):
        if value % timedelta(days=1) == timedelta(0):
            days = value.days
            return f"{days} day" if days == 1 else f"{days} days"
        hours = round(value.total_seconds() / 3600)
        return f"{hours} hour" if hours == 1 else f"{hours} hours"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def guard_name(guard: Guard) -> str:
    """A guard's name: its function's (``pep_needs_assessor``); a guard a factory made adds the identifiers it was
    made with (``named(decided_by)``, ``date_between_onset_and_today(on)``)."""
    check = guard.check
    qualname = getattr(check, "__qualname__", "") or "guard"
    base = qualname.split(".<locals>")[0].strip("_") or "guard"
    if "<locals>" not in qualname:
        return base
    made_with = [c.cell_contents for c in (getattr(check, "__closure__", None) or ())
                 if isinstance(c.cell_contents, str) and _IDENTIFIER.fullmatch(c.cell_contents)]
    return f"{base}({','.join(made_with)})" if made_with else base


def _states(d: WorkflowDefinition) -> dict[str, dict[str, Any]]:
    return {s: {"final": s in d.final} for s in d.states}


def _transitions(d: WorkflowDefinition) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (trigger, source, dest): the rules and summaries of its rows (several when ``when`` chooses), in order."""
    rows: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for spec in d.transitions:
        for source in spec.source:
            rows[(spec.trigger, source, spec.dest or source)].append(spec)
    return {key: {"rule": "; ".join(dict.fromkeys(s.rule for s in specs)),
                  "summary": "; ".join(dict.fromkeys(s.summary for s in specs)),
                  "timed": any(s.timed for s in specs), "internal": any(s.internal for s in specs),
                  "chosen by when": any(s.when is not None for s in specs)}
            for key, specs in rows.items()}


def _guards(d: WorkflowDefinition) -> dict[tuple[str, str], dict[str, Any]]:
    rules: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
    for spec in d.transitions:
        for guard in spec.guards:
            rules[(spec.trigger, guard_name(guard))][guard.rule] = None
    return {key: {"rule": "; ".join(found)} for key, found in rules.items()}


def _timers(d: WorkflowDefinition) -> dict[str, dict[str, Any]]:
    return {t.name: {"rule": t.rule, "period": t.period, "counts from": t.after} for t in d.timers.values()}


def sections(d: WorkflowDefinition) -> set[str]:
    """Every citation a definition makes: its transitions', guards' and timers'."""
    cited = {spec.rule for spec in d.transitions}
    cited |= {g.rule for spec in d.transitions for g in spec.guards}
    cited |= {t.rule for t in d.timers.values()}
    return cited


Details = tuple[tuple[str, Any, Any], ...]


def _compare(old: dict[Any, dict[str, Any]], new: dict[Any, dict[str, Any]]) -> Iterator[tuple[str, Any, Details]]:
    for key in sorted(new.keys() - old.keys()):
        yield "added", key, ()
    for key in sorted(old.keys() - new.keys()):
        yield "removed", key, ()
    for key in sorted(old.keys() & new.keys()):
        details = tuple((a, old[key][a], new[key][a]) for a in old[key] if old[key][a] != new[key][a])
        if details:
            yield "changed", key, details


def diff(old: WorkflowDefinition, new: WorkflowDefinition) -> DefinitionDiff:
    """What changed from ``old`` to ``new``: empty when they declare the same workflow."""
    changes: list[Change] = []
    for change, name, details in _compare(_states(old), _states(new)):
        changes.append(Change("state", change, name, details=details))
    for change, (trigger, source, dest), details in _compare(_transitions(old), _transitions(new)):
        changes.append(Change("transition", change, trigger, source=source, dest=dest, details=details))
    for change, (trigger, name), details in _compare(_guards(old), _guards(new)):
        changes.append(Change("guard", change, name, trigger=trigger, details=details))
    for change, name, details in _compare(_timers(old), _timers(new)):
        changes.append(Change("timer", change, name, details=details))
    cited_old, cited_new = sections(old), sections(new)
    changes += [Change("section", "added", s) for s in sorted(cited_new - cited_old, key=_section_order)]
    changes += [Change("section", "removed", s) for s in sorted(cited_old - cited_new, key=_section_order)]
    order = {(e, c): i for i, (e, c) in enumerate((e, c) for e in ELEMENTS for c in CHANGES)}
    changes.sort(key=lambda c: order[(c.element, c.change)])  # stable: sorted by key within each group
    return DefinitionDiff(old.name, new.name, tuple(changes))


def _section_order(rule: str) -> tuple[str, tuple[int, ...]]:
    numbers = section_of(rule).lstrip("§")
    return rule.split(" §")[0], tuple(int(n) for n in numbers.split(".") if n.isdigit())


# ---- the text and the Mermaid diagram ----------------------------------------------------------------------------


def text(result: DefinitionDiff) -> str:
    """The diff as text: one line per element, ``+`` added, ``-`` removed, ``~`` changed (with before → after)."""
    lines = [f"{result.old} → {result.new}"]
    if not result:
        return lines[0] + ": no differences"
    plural = {"state": "states", "transition": "transitions", "guard": "guards", "timer": "timers",
              "section": "cited sections"}
    for element in ELEMENTS:
        listed = result.of(element)
        if not listed:
            continue
        lines.append(f"{plural[element]}:")
        for c in listed:
            line = f"  {_MARK[c.change]} {c.label}"
            if c.details:
                line += ": " + "; ".join(f"{a} {_quoted(b)} → {_quoted(d)}" for a, b, d in c.details)
            lines.append(line)
    return "\n".join(lines)


def _quoted(value: Any) -> str:
    """A value in a line of the diff: a text quoted, a period or flag in words, nothing as ``(none)``."""
    if value is None or value == "":
        return "(none)"
    return f"'{value}'" if isinstance(value, str) else str(shown(value))


def mermaid(result: DefinitionDiff, old: WorkflowDefinition, new: WorkflowDefinition) -> str:
    """Both definitions in one Mermaid state diagram: the states and the transitions that move of either, the
    added ones styled ``added``, the removed ``removed``, the changed ``changed`` (``classDef``; a transition's label
    is marked ``+``, ``-`` or ``~``, Mermaid styling only states). Guards, timers and sections changed follow as
    Mermaid comments (``%%``)."""
    status: dict[tuple[str, ...], str] = {}
    for c in result.changes:
        if c.element == "state":
            status[("state", c.name)] = c.change
        elif c.element == "transition":
            status[("transition", c.name, str(c.source), str(c.dest))] = c.change
    lines = ["---", f"title: {result.old} → {result.new}", "---", "stateDiagram-v2",
             "    classDef added fill:#dafbe1,stroke:#1a7f37,stroke-width:2px,color:#0f3d1f",
             "    classDef removed fill:#ffebe9,stroke:#cf222e,stroke-width:2px,stroke-dasharray:5 5,color:#5c1014",
             "    classDef changed fill:#fff8c5,stroke:#9a6700,stroke-width:2px,color:#3d2a00"]
    states = list(dict.fromkeys([*new.states, *old.states]))
    for state in states:
        lines.append(f"    state {state}")
    rows = {**_moving(old), **_moving(new)}  # the new definition's rule and timer mark win
    for (trigger, source, dest), spec in sorted(rows.items(), key=lambda r: (states.index(r[0][2])
                                                                            if r[0][2] in states else -1, r[0])):
        change = status.get(("transition", trigger, source, dest))
        mark = f"{_MARK[change]} " if change else ""
        timer = " ⏱" if spec.timed else ""
        start = "[*]" if source == NEW else source
        lines.append(f"    {start} --> {dest} : {mark}{trigger} ({section_of(spec.rule)}){timer}")
    for state in states:
        in_new, in_old = state in new.final, state in old.final
        if in_new or in_old:
            lines.append(f"    {state} --> [*]")
    for state in states:
        change = status.get(("state", state))
        if change:
            lines.append(f"    class {state} {change}")
    for c in result.changes:
        if c.element in ("guard", "timer", "section"):
            detail = "; ".join(f"{a} {_quoted(b)} → {_quoted(d)}" for a, b, d in c.details)
            lines.append(f"    %% {c.element} {_MARK[c.change]} {c.label}" + (f": {detail}" if detail else ""))
    return "\n".join(lines)


def _moving(d: WorkflowDefinition) -> dict[tuple[str, str, str], Any]:
    return {(spec.trigger, source, spec.dest): spec
            for spec in d.transitions if spec.dest is not None for source in spec.source}
