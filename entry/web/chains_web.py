"""The chains of transmission on the web (issue 21 item 2): ``/chains`` lists the clusters, ``/chains/{cluster}``
draws one, laid out by Graphviz's ``dot`` as the workflow diagrams are (``entry.web.diagram``), with the table of
its nodes and edges.

The drawing is inline SVG with no script and no style attribute (the pages' Content-Security-Policy lets it
through): cases are boxes filled by their state, each with its state in words too (and a legend), contacts
ellipses, the parts of the cluster outside the reader's units grey dashed boxes; every case and contact links to
its page (``/objects/ID``); each edge carries its date and kind. Ids only, no person. A cluster of more than
``MAX_DRAWN`` nodes is listed, not drawn (``dot`` would take long and the drawing would be unreadable).
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from engine.chains import Chains
from entry.web import diagram, i18n
from entry.web.i18n import N_
from entry.web.pages import Eng, Who, dk_date, render, request_language

router = APIRouter(include_in_schema=False, dependencies=[Depends(request_language)])

#: The most nodes a drawing has: a bigger cluster is shown as its tables.
MAX_DRAWN = 400
#: A case's fill by state (the legend shows each with its word; the node says its state in words too).
CASE_COLOURS = {
    "suspected": "#fde68a", "confirmed": "#f87171", "isolated": "#fb923c", "healed": "#86efac",
    "closed": "#e5e7eb", "discarded": "#ffffff", "deceased": "#a3a3a3",
}
CONTACT_COLOUR = "#dbeafe"
OUTSIDE_COLOUR = "#f3f4f6"
#: How each kind of link is named (an exposure by its kind), and drawn.
LINK_NAMES = {"exposure": N_("exposure"), "became": N_("became a case"), "source": N_("source case"),
              "possible_source": N_("possible source")}
LINK_STYLES = {"exposure": "solid", "became": "bold", "source": "dashed", "possible_source": "dotted"}
OUTSIDE = N_("outside your units")


def _html(text: str) -> str:
    return escape(text, quote=True)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def link_text(edge: dict[str, Any]) -> str:
    """An edge's words in the page's language: an exposure's kind, else what the link is."""
    if edge["link"] == "exposure" and edge["kind"]:
        return str(i18n.term(edge["kind"]))
    return i18n.gettext(LINK_NAMES[edge["link"]])


def dot_source(cluster: dict[str, Any]) -> str:
    """The cluster in Graphviz's language, top to bottom the way the infection went."""
    font = diagram.FONT
    lines = [f"digraph {_quote(cluster['id'])} {{",
             f'  graph [rankdir=TB nodesep=0.35 ranksep=0.55 fontname="{font}" bgcolor="transparent"];',
             f'  node [fontname="{font}" fontsize=12 color="#333344" margin="0.12,0.05"];',
             f'  edge [color="#555555" fontname="{font}" fontsize=10 fontcolor="#222222"];']
    for node in cluster["nodes"]:
        if node["kind"] == "outside":
            text = f"<I>{_html(i18n.gettext(OUTSIDE))}</I>"
            lines.append(f'  {_quote(node["id"])} [id={_quote("node-" + node["id"])} class="outside" shape=box '
                         f'style="dashed,filled" fillcolor="{OUTSIDE_COLOUR}" label=<{text}>];')
            continue
        text = f"<B>{_html(node['id'])}</B><BR/>{_html(i18n.state(node['state']))}"
        if node["kind"] == "case":
            if node.get("onset"):
                text += f'<BR/><FONT POINT-SIZE="10">{_html(dk_date(node["onset"]))}</FONT>'
            shape = (f'shape=box style="rounded,filled" fillcolor="{CASE_COLOURS.get(node["state"], "#ffffff")}" '
                     f'penwidth=1.4')
        else:
            shape = f'shape=ellipse style=filled fillcolor="{CONTACT_COLOUR}"'
        lines.append(f'  {_quote(node["id"])} [id={_quote("node-" + node["id"])} class="{node["kind"]}" {shape} '
                     f'label=<{text}> href={_quote("/objects/" + node["id"])}];')
    for edge in cluster["edges"]:
        label = "\\n".join(part.replace("\\", "\\\\").replace('"', '\\"') for part in
                           ([dk_date(edge["on"])] if edge["on"] else []) + [link_text(edge)])
        lines.append(f'  {_quote(edge["from"])} -> {_quote(edge["to"])} [label="{label}" '
                     f'style={LINK_STYLES[edge["link"]]} class="{edge["link"]}"];')
    lines.append("}")
    return "\n".join(lines)


_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_SIZE = re.compile(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"')
_XLINK_TITLE = re.compile(r' xlink:title="[^"]*"')


def svg(cluster: dict[str, Any]) -> str:
    """The inline SVG of ``cluster``, or ``""`` when Graphviz is missing (or the cluster is too big to draw)."""
    if len(cluster["nodes"]) > MAX_DRAWN:
        return ""
    try:
        drawn = diagram._layout(dot_source(cluster), diagram.DOT)  # noqa: SLF001 - the diagrams' cached runner
    except diagram.DotMissing:
        return ""
    drawn = _COMMENT.sub("", _PROLOG.sub("", drawn, count=1)).strip()
    name = i18n.gettext("Chain of transmission %(cluster)s") % {"cluster": cluster["id"]}
    drawn = _SIZE.sub(lambda m: f'<svg width="{round(float(m[1]) * 4 / 3)}" height="{round(float(m[2]) * 4 / 3)}" '
                      f'role="group" aria-label="{_html(name)}" class="diagram chain" data-layout="graphviz"',
                      drawn, count=1)
    # Links as SVG 2 has them (``href``): the page declares no xlink namespace; each node's <title> says its id.
    drawn = _XLINK_TITLE.sub("", drawn).replace(" xlink:href=", " href=")
    drawn = drawn.replace("&#45;", "-")  # dot writes each hyphen of an id as a character reference: plain ones
    return drawn.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "", 1)


def legend() -> list[dict[str, str]]:
    """The states a case can be drawn in, each with its fill."""
    return [{"state": state, "colour": colour} for state, colour in CASE_COLOURS.items()]


@router.get("/chains")
def chains_page(request: Request, who: Who, engine: Eng) -> Response:
    """The clusters the user may see: active first, then by last onset."""
    return render(request, "chains.html", clusters=Chains(engine.runtime).clusters())


@router.get("/chains/{cluster_id}")
def chain_page(request: Request, cluster_id: str, who: Who, engine: Eng) -> Response:
    """One cluster: its graph, and the table of its nodes and edges."""
    cluster = Chains(engine.runtime).cluster(cluster_id)
    too_big = len(cluster["nodes"]) > MAX_DRAWN
    return render(request, "chain.html", cluster=cluster, svg=svg(cluster), too_big=too_big,
                  max_drawn=MAX_DRAWN, legend=legend(), contact_colour=CONTACT_COLOUR,
                  outside_colour=OUTSIDE_COLOUR, link_text=link_text, link_names=LINK_NAMES)
