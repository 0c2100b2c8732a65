"""A workflow's state diagram as inline SVG, laid out by Graphviz's ``dot`` on the server (no script, no build step).

Each state is a node showing how many objects are in it now; each transition that moves is an edge labelled with
its trigger and section (one edge per pair of states, its triggers one per line); transitions that keep the state
(recording a fact, a deadline) are listed beside the drawing (``internal``). ``dot`` places the labels so that they
do not overlap. The SVG is made once per definition and counts and kept (``dot`` is a process of ~50 ms); it has no
script and no style attribute, so the pages' Content-Security-Policy lets it through.

``dot`` comes from Debian's ``graphviz`` package. When it is missing, ``svg`` returns ``""`` and the page says so
(the Mermaid text and the tables are drawn all the same); ``scripts/test`` installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from html import escape
from typing import Any

from entry.web import i18n
from entry.web.i18n import N_, ngettext
from workflows.definition import NEW, WorkflowDefinition
from workflows.diff import DefinitionDiff
from workflows.rules import section_of

#: The Graphviz program that lays the diagrams out (looked up on PATH when the page is drawn).
DOT = "dot"
DOT_TIMEOUT = 10.0  # seconds
#: The font dot measures labels with and the page draws them in (a sans-serif every Debian has).
FONT = "DejaVu Sans"


class DotMissing(RuntimeError):
    """Graphviz's ``dot`` is not installed (or failed): the diagram cannot be laid out."""


def objects(n: int) -> str:
    return ngettext("%(num)d object", "%(num)d objects", n) % {"num": n}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _html(text: str) -> str:
    return escape(text, quote=True)


def edge_labels(definition: WorkflowDefinition,
                trigger_text: Callable[[str], str] = i18n.trigger) -> dict[tuple[str, str], list[str]]:
    """Each pair of states a transition moves between, with its labels (trigger in the page's language, section,
    ⏱ for a timer's)."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for spec in definition.transitions:
        if spec.dest is None:
            continue
        label = f"{trigger_text(spec.trigger)} {section_of(spec.rule)}" + (" ⏱" if spec.timed else "")
        for source in spec.source:
            if label not in edges[(source, spec.dest)]:
                edges[(source, spec.dest)].append(label)
    return edges


def dot_source(definition: WorkflowDefinition, counts: dict[str, int],
               count_text: Callable[[int], str] = objects) -> str:
    """The diagram in Graphviz's language: left to right, final states drawn with a thick border."""
    lines = [f"digraph {_quote(definition.name)} {{",
             f'  graph [rankdir=LR nodesep=0.5 ranksep=0.9 fontname="{FONT}" bgcolor="transparent"];',
             f'  node [shape=box style="rounded,filled" fillcolor="#dde8f3" color="#345" fontname="{FONT}" '
             'fontsize=13 margin="0.2,0.08"];',
             f'  edge [color="#555" fontname="{FONT}" fontsize=11 fontcolor="#222"];']
    for state in [NEW, *definition.states]:
        final = state in definition.final
        text = f"<B>{_html(i18n.state(state))}</B>"
        if state != NEW:
            text += f'<BR/><FONT POINT-SIZE="11">{_html(count_text(counts.get(state, 0)))}</FONT>'
        fill = "#eeeeee" if state == NEW else ("#e6e6e6" if final else "#dde8f3")
        lines.append(f'  {_quote(state)} [id={_quote("state_" + state)} class="state" label=<{text}> '
                     f'fillcolor="{fill}" penwidth={3 if final else 1.2}];')
    for (source, dest), labels in edge_labels(definition).items():
        label = "\\n".join(t.replace("\\", "\\\\").replace('"', '\\"') for t in labels)
        lines.append(f'  {_quote(source)} -> {_quote(dest)} [label="{label}" class="transition"];')
    lines.append("}")
    return "\n".join(lines)


def available() -> bool:
    return shutil.which(DOT) is not None


@lru_cache(maxsize=64)
def _layout(source: str, dot: str) -> str:
    program = shutil.which(dot)
    if program is None:
        raise DotMissing(f"Graphviz's {dot} is not installed")
    try:
        done = subprocess.run([program, "-Tsvg"], input=source.encode(), capture_output=True, check=True,
                              timeout=DOT_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as error:
        raise DotMissing(f"Graphviz's {dot} failed: {type(error).__name__}") from error
    return done.stdout.decode()


_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TITLE = re.compile(r"<title>([^<]*)</title>")
_SIZE = re.compile(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"')


def svg(definition: WorkflowDefinition, counts: dict[str, int], count_text: Callable[[int], str] = objects,
        title: str | None = None) -> str:
    """The inline SVG of ``definition`` with ``counts`` per state, or ``""`` when Graphviz is missing."""
    try:
        drawn = _layout(dot_source(definition, counts, count_text), DOT)
    except DotMissing:
        return ""
    drawn = _COMMENT.sub("", _PROLOG.sub("", drawn, count=1)).strip()
    # dot titles each node and edge by its name (a tooltip): the states in the page's language there too.
    shown = {_html(state): _html(i18n.state(state)) for state in [NEW, *definition.states]}
    drawn = _TITLE.sub(lambda m: "<title>" + "&#45;&gt;".join(shown.get(part, part) for part in
                                                              m[1].split("&#45;&gt;")) + "</title>", drawn)
    name = title or f"{definition.name} state diagram"
    # Its own size in CSS pixels (dot's points are 4/3 px); the stylesheet lets it shrink to the page's width.
    drawn = _SIZE.sub(lambda m: f'<svg width="{round(float(m[1]) * 4 / 3)}" height="{round(float(m[2]) * 4 / 3)}" '
                      f'role="img" aria-label="{_html(name)}" class="diagram" data-layout="graphviz"',
                      drawn, count=1)
    return drawn.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "", 1)


def internal(definition: WorkflowDefinition) -> list[dict[str, str]]:
    """The transitions that keep the state: what they record, from which states, under which rule."""
    return [{"trigger": s.trigger, "states": ", ".join(s.source), "rule": s.rule, "summary": s.summary,
             "by": "timer" if s.timed else "another object's change" if s.internal else "staff"}
            for s in definition.transitions if s.dest is None]


# ---- what changed between two definitions (issue 20 item 3) ------------------------------------------------------

#: The kinds of element and the changes, as a page names them.
DIFF_ELEMENTS = {"state": N_("State"), "transition": N_("Transition"), "guard": N_("Guard"), "timer": N_("Timer"),
                 "section": N_("Cited section")}
DIFF_CHANGES = {"added": N_("added"), "removed": N_("removed"), "changed": N_("changed")}
DIFF_ATTRIBUTES = {"final": N_("final state"), "rule": N_("rule"), "summary": N_("what"),
                   "timed": N_("fired by a timer"), "internal": N_("pulled by another object"),
                   "chosen by when": N_("chosen by the object's facts"), "period": N_("period"),
                   "counts from": N_("counts from")}


def _value(value: Any) -> str:
    """An attribute's value in the page's language: a period in days or hours, a flag yes/no, a text translated."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return str(i18n.term("yes" if value else "no"))
    if isinstance(value, timedelta):
        if value % timedelta(days=1) == timedelta(0):
            return ngettext("%(num)d day", "%(num)d days", value.days) % {"num": value.days}
        hours = round(value.total_seconds() / 3600)
        return ngettext("%(num)d hour", "%(num)d hours", hours) % {"num": hours}
    return i18n.gettext(str(value))


def diff_rows(result: DefinitionDiff) -> list[dict[str, Any]]:
    """The changes as the diagram page's table lists them, in the page's language."""
    rows = []
    for change in result.changes:
        if change.element == "state":
            what = i18n.state(change.name)
        elif change.element == "transition":
            what = (f"{i18n.trigger(change.name)}: {i18n.state(str(change.source))} → "
                    f"{i18n.state(str(change.dest))}")
        elif change.element == "guard":
            what = f"{i18n.trigger(str(change.trigger))}: {change.name}"
        elif change.element == "timer":
            what = i18n.trigger(change.name)
        else:
            what = change.name
        rows.append({
            "element": i18n.gettext(DIFF_ELEMENTS[change.element]), "change": change.change,
            "change_text": i18n.gettext(DIFF_CHANGES[change.change]), "what": what,
            "details": [(i18n.gettext(DIFF_ATTRIBUTES.get(a, a)), _value(b), _value(c)) for a, b, c in change.details],
        })
    return rows
