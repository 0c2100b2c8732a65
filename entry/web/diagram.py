"""A workflow's state diagram as inline SVG, drawn from its definition on the server (no script, no build step).

States stand in columns by their distance from creation; each transition that moves is an arrow labelled with its
trigger and section; transitions that keep the state (recording a fact, a deadline) are listed beside it. Each
state shows how many objects are in it now.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from html import escape

from workflows.definition import NEW, WorkflowDefinition

BOX_W, BOX_H, COL_GAP, ROW_GAP, MARGIN = 150, 54, 110, 40, 30


@dataclass(frozen=True)
class Box:
    state: str
    x: int
    y: int


def layout(definition: WorkflowDefinition) -> dict[str, Box]:
    """Columns by shortest distance from ``new`` along moving transitions; rows in the definition's order."""
    depth = {NEW: 0}
    frontier = [NEW]
    while frontier:
        following = []
        for state in frontier:
            for spec in definition.transitions:
                if state in spec.source and spec.dest is not None and spec.dest not in depth:
                    depth[spec.dest] = depth[state] + 1
                    following.append(spec.dest)
        frontier = following
    columns: dict[int, list[str]] = defaultdict(list)
    for state in [NEW, *definition.states]:
        columns[depth.get(state, max(depth.values()) + 1)].append(state)
    tallest = max(len(c) for c in columns.values())
    boxes = {}
    for column, states in columns.items():
        offset = (tallest - len(states)) * (BOX_H + ROW_GAP) // 2
        for row, state in enumerate(states):
            boxes[state] = Box(state, MARGIN + column * (BOX_W + COL_GAP), MARGIN + offset + row * (BOX_H + ROW_GAP))
    return boxes


def svg(definition: WorkflowDefinition, counts: dict[str, int]) -> str:
    boxes = layout(definition)
    width = max(b.x for b in boxes.values()) + BOX_W + MARGIN
    height = max(b.y for b in boxes.values()) + BOX_H + MARGIN
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for spec in definition.transitions:
        if spec.dest is None:
            continue
        label = f"{spec.trigger} {spec.rule.removeprefix('SST-mpox-7.1 ')}" + (" ⏱" if spec.timed else "")
        for source in spec.source:
            if label not in edges[(source, spec.dest)]:
                edges[(source, spec.dest)].append(label)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{escape(definition.name)} state diagram" class="diagram">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>']
    for (source, dest), labels in edges.items():
        a, b = boxes[source], boxes[dest]
        if source == dest:  # a loop: an arc above the box
            x, y = a.x + BOX_W // 2, a.y
            parts.append(f'<path d="M{x - 20},{y} C{x - 40},{y - 40} {x + 40},{y - 40} {x + 20},{y}" fill="none" '
                         f'stroke="#555" marker-end="url(#arrow)"/>')
            parts.append(_label(x, y - 34, labels))
            continue
        x1, y1 = a.x + BOX_W, a.y + BOX_H // 2
        x2, y2 = b.x, b.y + BOX_H // 2
        if b.x <= a.x:  # backwards: leave from the bottom, come in from below
            x1, y1, x2, y2 = a.x + BOX_W // 2, a.y + BOX_H, b.x + BOX_W // 2, b.y + BOX_H
            bend = max(y1, y2) + 50
            parts.append(f'<path d="M{x1},{y1} C{x1},{bend} {x2},{bend} {x2},{y2}" fill="none" stroke="#555" '
                         f'marker-end="url(#arrow)"/>')
            parts.append(_label((x1 + x2) // 2, bend - 8, labels))
            continue
        mid = (x1 + x2) // 2
        parts.append(f'<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" fill="none" stroke="#555" '
                     f'marker-end="url(#arrow)"/>')
        parts.append(_label(mid, (y1 + y2) // 2 - 6, labels))
    for box in boxes.values():
        final = box.state in definition.final
        fill = "#eee" if box.state == NEW else ("#dde8f3" if not final else "#e6e6e6")
        parts.append(f'<g class="state" data-state="{escape(box.state)}"><rect x="{box.x}" y="{box.y}" '
                     f'width="{BOX_W}" height="{BOX_H}" rx="10" fill="{fill}" stroke="#345" '
                     f'stroke-width="{3 if final else 1.5}"/>')
        parts.append(f'<text x="{box.x + BOX_W // 2}" y="{box.y + 22}" text-anchor="middle" font-weight="bold">'
                     f'{escape(box.state)}</text>')
        if box.state != NEW:
            n = counts.get(box.state, 0)
            parts.append(f'<text x="{box.x + BOX_W // 2}" y="{box.y + 42}" text-anchor="middle" class="count">'
                         f'{n} {"object" if n == 1 else "objects"}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def _label(x: int, y: int, labels: list[str]) -> str:
    lines = "".join(f'<tspan x="{x}" dy="{0 if i == 0 else 13}">{escape(t)}</tspan>' for i, t in enumerate(labels))
    return f'<text x="{x}" y="{y - 13 * (len(labels) - 1)}" text-anchor="middle" font-size="11" fill="#333">' \
           f'{lines}</text>'


def internal(definition: WorkflowDefinition) -> list[dict[str, str]]:
    """The transitions that keep the state: what they record, from which states, under which rule."""
    return [{"trigger": s.trigger, "states": ", ".join(s.source), "rule": s.rule, "summary": s.summary,
             "by": "timer" if s.timed else "another object's change" if s.internal else "staff"}
            for s in definition.transitions if s.dest is None]
