"""Chains of transmission (issue 21 item 2): the clusters of cases and contacts the engine's own links make.

The graph: nodes are the cases and the contacts; its edges are the links the engine keeps (ids only, no person):

* ``exposure``: a case to each of its contacts (``Contact.case_id``), with the contact's last exposure date and
  that exposure's kind (``last_exposure_on``, ``exposure_kind``);
* ``became``: a contact to the case its symptoms opened (``Contact.became_case``, §5.5), on the symptoms' onset;
* ``source``: a case's source case (``Case.source_case``) when no contact of that source case stands between them
  (a case a contact became has its source through that contact already: that path is drawn, not a second edge);
* ``possible_source``: a possible source a case recorded (``case source``, §5.2: ``Case.sources``), on its date.

Edges point the way the infection went (source to exposed). A cluster is a connected component of the graph,
directions ignored; its id is ``cluster-N``, N the lowest case id in it (every component has a case: a contact
is always a case's), the same for every reader and as long as no other cluster joins it.

Everything is read in two queries (the cases' and the contacts' link columns) after the reader's scope, whatever
the number of objects; the components are found by union-find in memory.

A reader sees the objects of their units only (``engine.units``). The components are found over the whole graph;
of a cluster, a reader sees its nodes in their units; each group of its other nodes that hang together (a
connected part of the cluster outside the reader's units) is drawn as one anonymous node, ``outside-N``, "outside
your units": no id, kind, state or date of it, and an edge to it carries its date and kind only when the object
the link belongs to (the contact of an exposure or of a case it became, the case of a source) is the reader's.
Counts, onsets and whether the cluster is active are the reader's nodes' alone. A cluster none of whose nodes is
the reader's is not listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select

from engine.units import Scope, reader_scope
from engine.uow import Runtime
from persistence.models import Case, Contact
from persistence.repository import Repository
from workflows.case import OPEN_STATES
from workflows.errors import NotFound, UsageError, because
from workflows.limits import MAX_ID, shown

#: A cluster is active while any of its cases is open (suspected, confirmed, isolated, or healed within its 12
#: weeks) or any of its contacts is still exposed, monitored or symptomatic (Decision).
ACTIVE_CASE_STATES = OPEN_STATES
ACTIVE_CONTACT_STATES = ("exposed", "monitored", "symptomatic")
#: The kinds of link, in the order a cluster's edges are listed.
LINKS = ("exposure", "became", "source", "possible_source")
CLUSTER_ID = re.compile(r"cluster-(\d{1,10})")
_CASE_ID = re.compile(r"case-(\d{1,10})")

Node = tuple[str, int]  # ("case", 3), ("contact", 7)
#: (from, to, link, on, kind, owner: the node the link belongs to)
Edge = tuple[Node, Node, str, date | None, str | None, Node]


@dataclass
class _Graph:
    """The whole graph as read: each node's row, the edges (with the node the link belongs to)."""

    cases: dict[int, Any] = field(default_factory=dict)
    contacts: dict[int, Any] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    parent: dict[Node, Node] = field(default_factory=dict)

    def find(self, node: Node) -> Node:
        parent = self.parent
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return root

    def union(self, a: Node, b: Node) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra > rb:
                ra, rb = rb, ra
            self.parent[rb] = ra

    def link(self, source: Node, target: Node, link: str, on: date | None, kind: str | None, owner: Node) -> None:
        if source in self.parent and target in self.parent:
            self.edges.append((source, target, link, on, kind, owner))
            self.union(source, target)


def _case_pk(text: Any) -> int | None:
    found = _CASE_ID.fullmatch(text) if isinstance(text, str) else None
    return int(found[1]) if found else None


def _day(text: Any) -> date | None:
    try:
        return date.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _onset(case: Any) -> date | None:
    """A case's onset on the chain: symptom onset, else (a case confirmed by PCR without symptoms) the sample."""
    return case.onset or case.pcr_on  # type: ignore[no-any-return]


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def node_id(node: Node) -> str:
    return f"{node[0]}-{node[1]}"


class Chains:
    """The chains of transmission as ``Runtime.viewer`` may see them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def clusters(self) -> list[dict[str, Any]]:
        """Every cluster the reader sees a node of: ``id``, ``cases``, ``contacts``, ``outside`` (anonymous nodes),
        ``first_onset`` and ``last_onset`` (of its cases, ISO dates or None) and ``active``; active ones first,
        then by last onset, newest first (none last), then by id."""
        graph, scope = self._read()
        found = [_summary(graph, cluster, scope)[0] for cluster in _clusters(graph)]
        listed = [c for c in found if c["cases"] or c["contacts"]]
        listed.sort(key=lambda c: (not c["active"], c["last_onset"] is None,
                                   -date.fromisoformat(c["last_onset"]).toordinal() if c["last_onset"] else 0,
                                   int(c["id"].removeprefix("cluster-"))))
        return listed

    def cluster(self, cluster_id: str) -> dict[str, Any]:
        """One cluster: its summary (``clusters``'), its ``nodes`` and its ``edges``. UsageError for a text that
        is no cluster id; NotFound for one there is none of among the reader's."""
        found = CLUSTER_ID.fullmatch(cluster_id) if isinstance(cluster_id, str) else None
        if found is None or int(found[1]) > MAX_ID:
            raise UsageError(because("'%(given)s' is not a cluster id: give one as `mpoxflow chains` lists them "
                                     "(cluster-N, N its lowest case id)", given=shown(str(cluster_id))))
        graph, scope = self._read()
        pk = int(found[1])
        if pk in graph.cases:
            root = graph.find(("case", pk))
            cluster = next(c for c in _clusters(graph) if c.root == root)
            if cluster.lowest_case == pk:
                summary, inside = _summary(graph, cluster, scope)
                if summary["cases"] or summary["contacts"]:
                    return {**summary, **_drawn(graph, cluster, inside)}
        raise NotFound(cluster_id, "cluster", hint=because(
            "`mpoxflow chains` lists the clusters you may see (a cluster takes the id of its lowest case: when "
            "another joins it, it may be listed under that one's)"))

    # ---- reading --------------------------------------------------------------------------------------------

    def _read(self) -> tuple[_Graph, Scope | None]:
        graph = _Graph()
        with self.runtime.db.reading() as session:
            scope = reader_scope(Repository(session), self.runtime.viewer)
            for row in session.execute(select(Case.id, Case.state, Case.onset, Case.pcr_on, Case.source_case,
                                              Case.sources, Case.from_contact, Case.unit_id)):
                graph.cases[row.id] = row
                graph.parent[("case", row.id)] = ("case", row.id)
            for row in session.execute(select(Contact.id, Contact.state, Contact.case_id, Contact.last_exposure_on,
                                              Contact.exposure_kind, Contact.became_case, Contact.symptoms_onset,
                                              Contact.unit_id)):
                graph.contacts[row.id] = row
                graph.parent[("contact", row.id)] = ("contact", row.id)
        for pk, contact in sorted(graph.contacts.items()):
            node: Node = ("contact", pk)
            graph.link(("case", contact.case_id), node, "exposure", contact.last_exposure_on, contact.exposure_kind,
                       node)
            became = _case_pk(contact.became_case)
            if became is not None:
                graph.link(node, ("case", became), "became", contact.symptoms_onset, None, node)
        for pk, case in sorted(graph.cases.items()):
            node = ("case", pk)
            source = _case_pk(case.source_case)
            via = graph.contacts.get(case.from_contact) if case.from_contact is not None else None
            if source is not None and source != pk and (via is None or via.case_id != source):
                graph.link(("case", source), node, "source", None, None, node)
            for recorded in case.sources or ():
                possible = _case_pk(recorded.get("case")) if isinstance(recorded, dict) else None
                if possible is not None and possible != pk:
                    graph.link(("case", possible), node, "possible_source", _day(recorded.get("on")), None, node)
        return graph, scope


@dataclass
class _Cluster:
    """One connected component: its union-find root, its nodes and its edges."""

    root: Node
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    @property
    def lowest_case(self) -> int:
        return min(p for k, p in self.nodes if k == "case")


def _clusters(graph: _Graph) -> list[_Cluster]:
    found: dict[Node, _Cluster] = {}
    for node in graph.parent:
        root = graph.find(node)
        cluster = found.get(root)
        if cluster is None:
            cluster = found[root] = _Cluster(root)
        cluster.nodes.append(node)
    for edge in graph.edges:
        found[graph.find(edge[0])].edges.append(edge)
    return list(found.values())


def _row(graph: _Graph, node: Node) -> Any:
    return (graph.cases if node[0] == "case" else graph.contacts)[node[1]]


def _summary(graph: _Graph, cluster: _Cluster, scope: Scope | None) -> tuple[dict[str, Any], set[Node]]:
    """A cluster's summary as the reader sees it, and the reader's nodes of it."""
    inside = {n for n in cluster.nodes if scope is None or scope.covers(_row(graph, n).unit_id)}
    cases = [graph.cases[p] for k, p in inside if k == "case"]
    onsets = [d for d in (_onset(c) for c in cases) if d is not None]
    active = any(c.state in ACTIVE_CASE_STATES for c in cases) or any(
        graph.contacts[p].state in ACTIVE_CONTACT_STATES for k, p in inside if k == "contact")
    groups = _outside_groups(cluster, inside) if len(inside) < len(cluster.nodes) else {}
    return {"id": f"cluster-{cluster.lowest_case}", "cases": len(cases), "contacts": len(inside) - len(cases),
            "outside": len(set(groups.values())), "first_onset": _iso(min(onsets, default=None)),
            "last_onset": _iso(max(onsets, default=None)), "active": active}, inside


def _drawn(graph: _Graph, cluster: _Cluster, inside: set[Node]) -> dict[str, Any]:
    """The reader's nodes and the anonymous ones, and the edges between them (each once)."""
    groups = _outside_groups(cluster, inside)
    names = {g: f"outside-{i}" for i, g in enumerate(sorted(set(groups.values())), start=1)}

    def shown_as(node: Node) -> str:
        return node_id(node) if node in inside else names[groups[node]]

    nodes: list[dict[str, Any]] = []
    for node in sorted(inside):
        row = _row(graph, node)
        if node[0] == "case":
            nodes.append({"id": node_id(node), "kind": "case", "state": row.state, "onset": _iso(_onset(row)),
                          "onset_from": "onset" if row.onset else "pcr_on" if row.pcr_on else None})
        else:
            nodes.append({"id": node_id(node), "kind": "contact", "state": row.state, "case": f"case-{row.case_id}"})
    nodes += [{"id": name, "kind": "outside", "state": None} for name in names.values()]
    edges: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for source, target, link, on, kind, owner in cluster.edges:
        if source not in inside and target not in inside:
            continue  # within the part outside the reader's units: not shown
        mine = owner in inside
        edge = {"from": shown_as(source), "to": shown_as(target), "link": link,
                "on": _iso(on) if mine else None, "kind": kind if mine else None}
        key = tuple(edge.values())
        if key not in seen:
            seen.add(key)
            edges.append(edge)
    edges.sort(key=lambda e: (LINKS.index(e["link"]), e["on"] or "~", _order(e["from"]), _order(e["to"])))
    return {"nodes": nodes, "edges": edges}


def _order(text: str) -> tuple[str, int]:
    kind, _, number = text.rpartition("-")
    return kind, int(number)


def _outside_groups(cluster: _Cluster, inside: set[Node]) -> dict[Node, Node]:
    """Each node of ``cluster`` outside the reader's units, mapped to its group: the lowest node of the part of
    the cluster outside the reader's units that it hangs together with (by edges between two such nodes)."""
    parent = {n: n for n in cluster.nodes if n not in inside}
    if not parent:
        return {}

    def find(node: Node) -> Node:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for source, target, *_ in cluster.edges:
        if source in parent and target in parent:
            a, b = find(source), find(target)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {n: find(n) for n in parent}
