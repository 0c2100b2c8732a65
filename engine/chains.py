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

Everything is read in two queries (the cases' and the contacts' link columns, as plain rows) after the reader's
scope, whatever the number of objects; the components are found by union-find in memory, over integer nodes (a
case ``2 * id``, a contact ``2 * id + 1``) and edges kept in parallel lists, so that few objects are made per node
(``bench/chains.py``).

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
ACTIVE_CASE_STATES = frozenset(OPEN_STATES)
ACTIVE_CONTACT_STATES = frozenset(("exposed", "monitored", "symptomatic"))
#: The kinds of link, in the order a cluster's edges are listed.
LINKS = ("exposure", "became", "source", "possible_source")
EXPOSURE, BECAME, SOURCE, POSSIBLE_SOURCE = range(4)
CLUSTER_ID = re.compile(r"cluster-(\d{1,10})")
_CASE_ID = re.compile(r"case-(\d{1,10})")


def _case(pk: int) -> int:
    return pk << 1


def _contact(pk: int) -> int:
    return pk << 1 | 1


def node_id(node: int) -> str:
    return f"{'contact' if node & 1 else 'case'}-{node >> 1}"


@dataclass
class _Graph:
    """The whole graph as read. Cases: ``(state, onset on the chain, onset given, unit)``; contacts: ``(state,
    case id, unit)``, by id. Edge ``i``: ``source[i] -> target[i]``, its link (an index of ``LINKS``), date and
    kind, and ``owner[i]``, the node the link belongs to."""

    cases: dict[int, tuple[str, date | None, bool, int]] = field(default_factory=dict)
    contacts: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    parent: dict[int, int] = field(default_factory=dict)
    source: list[int] = field(default_factory=list)
    target: list[int] = field(default_factory=list)
    link: list[int] = field(default_factory=list)
    on: list[date | None] = field(default_factory=list)
    kind: list[str | None] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)

    def find(self, node: int) -> int:
        parent = self.parent
        while (up := parent[node]) != node:
            parent[node] = parent[up]  # path halving
            node = parent[node]
        return node

    def add(self, source: int, target: int, link: int, on: date | None, kind: str | None, owner: int) -> None:
        parent = self.parent
        if source not in parent or target not in parent:
            return
        self.source.append(source)
        self.target.append(target)
        self.link.append(link)
        self.on.append(on)
        self.kind.append(kind)
        self.owner.append(owner)
        a, b = self.find(source), self.find(target)
        if a != b:
            parent[max(a, b)] = min(a, b)

    def unit(self, node: int) -> int:
        return (self.contacts[node >> 1][2] if node & 1 else self.cases[node >> 1][3]) or 1


def _case_pk(text: Any) -> int | None:
    found = _CASE_ID.fullmatch(text) if isinstance(text, str) else None
    return int(found[1]) if found else None


def _day(text: Any) -> date | None:
    try:
        return date.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


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
            root = graph.find(_case(pk))
            cluster = next(c for c in _clusters(graph, root) if c.root == root)
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
        cases, contacts, parent = graph.cases, graph.contacts, graph.parent
        with self.runtime.db.reading() as session:
            scope = reader_scope(Repository(session), self.runtime.viewer)
            connection = session.connection()
            case_rows = connection.execute(select(
                Case.id, Case.state, Case.onset, Case.pcr_on, Case.source_case, Case.sources, Case.from_contact,
                Case.unit_id).order_by(Case.id)).all()
            contact_rows = connection.execute(select(
                Contact.id, Contact.state, Contact.case_id, Contact.last_exposure_on, Contact.exposure_kind,
                Contact.became_case, Contact.symptoms_onset, Contact.unit_id).order_by(Contact.id)).all()
        for pk, state, onset, pcr_on, *_, unit in case_rows:
            cases[pk] = (state, onset or pcr_on, onset is not None, unit)
            parent[pk << 1] = pk << 1
        for pk, state, case_pk, *_, unit in contact_rows:
            contacts[pk] = (state, case_pk, unit)
            parent[pk << 1 | 1] = pk << 1 | 1
        add = graph.add
        for pk, _state, case_pk, last_on, kind, became_case, symptoms_on, _unit in contact_rows:
            node = pk << 1 | 1
            add(case_pk << 1, node, EXPOSURE, last_on, kind, node)
            if became_case is not None and (became := _case_pk(became_case)) is not None:
                add(node, became << 1, BECAME, symptoms_on, None, node)
        for pk, _state, _onset, _pcr, source_case, sources, from_contact, _unit in case_rows:
            node = pk << 1
            if source_case is not None and (source := _case_pk(source_case)) is not None and source != pk:
                via = contacts.get(from_contact) if from_contact is not None else None
                if via is None or via[1] != source:
                    add(source << 1, node, SOURCE, None, None, node)
            for recorded in sources or ():
                possible = _case_pk(recorded.get("case")) if isinstance(recorded, dict) else None
                if possible is not None and possible != pk:
                    add(possible << 1, node, POSSIBLE_SOURCE, _day(recorded.get("on")), None, node)
        return graph, scope


@dataclass
class _Cluster:
    """One connected component: its union-find root, its nodes and the indexes of its edges."""

    root: int
    nodes: list[int] = field(default_factory=list)
    edges: list[int] = field(default_factory=list)

    @property
    def lowest_case(self) -> int:
        return min(n for n in self.nodes if not n & 1) >> 1


def _clusters(graph: _Graph, only: int | None = None) -> list[_Cluster]:
    """The components (``only``: the one of that root)."""
    found: dict[int, _Cluster] = {}
    find = graph.find
    for node in graph.parent:
        root = find(node)
        if only is not None and root != only:
            continue
        cluster = found.get(root)
        if cluster is None:
            cluster = found[root] = _Cluster(root)
        cluster.nodes.append(node)
    for i, source in enumerate(graph.source):
        cluster = found.get(find(source))
        if cluster is not None:
            cluster.edges.append(i)
    return list(found.values())


def _summary(graph: _Graph, cluster: _Cluster, scope: Scope | None) -> tuple[dict[str, Any], set[int]]:
    """A cluster's summary as the reader sees it, and the reader's nodes of it."""
    inside = set(cluster.nodes) if scope is None else {n for n in cluster.nodes if scope.covers(graph.unit(n))}
    cases = [graph.cases[n >> 1] for n in inside if not n & 1]
    onsets = [c[1] for c in cases if c[1] is not None]
    active = any(c[0] in ACTIVE_CASE_STATES for c in cases) or any(
        graph.contacts[n >> 1][0] in ACTIVE_CONTACT_STATES for n in inside if n & 1)
    groups = _outside_groups(graph, cluster, inside) if len(inside) < len(cluster.nodes) else {}
    return {"id": f"cluster-{cluster.lowest_case}", "cases": len(cases), "contacts": len(inside) - len(cases),
            "outside": len(set(groups.values())), "first_onset": _iso(min(onsets, default=None)),
            "last_onset": _iso(max(onsets, default=None)), "active": active}, inside


def _drawn(graph: _Graph, cluster: _Cluster, inside: set[int]) -> dict[str, Any]:
    """The reader's nodes and the anonymous ones, and the edges between them (each once)."""
    groups = _outside_groups(graph, cluster, inside)
    names = {g: f"outside-{i}" for i, g in enumerate(sorted(set(groups.values()), key=_order_node), start=1)}

    def shown_as(node: int) -> str:
        return node_id(node) if node in inside else names[groups[node]]

    nodes: list[dict[str, Any]] = []
    for node in sorted(inside, key=_order_node):
        if node & 1:
            state, case_pk, _ = graph.contacts[node >> 1]
            nodes.append({"id": node_id(node), "kind": "contact", "state": state, "case": f"case-{case_pk}"})
        else:
            state, onset, given, _ = graph.cases[node >> 1]
            nodes.append({"id": node_id(node), "kind": "case", "state": state, "onset": _iso(onset),
                          "onset_from": "onset" if given else "pcr_on" if onset else None})
    nodes += [{"id": name, "kind": "outside", "state": None} for name in names.values()]
    edges: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for i in cluster.edges:
        source, target = graph.source[i], graph.target[i]
        if source not in inside and target not in inside:
            continue  # within a part outside the reader's units: not shown
        mine = graph.owner[i] in inside
        edge = {"from": shown_as(source), "to": shown_as(target), "link": LINKS[graph.link[i]],
                "on": _iso(graph.on[i]) if mine else None, "kind": graph.kind[i] if mine else None}
        key = tuple(edge.values())
        if key not in seen:
            seen.add(key)
            edges.append(edge)
    edges.sort(key=lambda e: (LINKS.index(e["link"]), e["on"] or "~", _order(e["from"]), _order(e["to"])))
    return {"nodes": nodes, "edges": edges}


def _order_node(node: int) -> tuple[int, int]:
    """Cases before contacts, each by id."""
    return node & 1, node >> 1


def _order(text: str) -> tuple[str, int]:
    kind, _, number = text.rpartition("-")
    return kind, int(number)


def _outside_groups(graph: _Graph, cluster: _Cluster, inside: set[int]) -> dict[int, int]:
    """Each node of ``cluster`` outside the reader's units, mapped to its group: the lowest node of the part of
    the cluster outside the reader's units that it hangs together with (by edges between two such nodes)."""
    parent = {n: n for n in cluster.nodes if n not in inside}
    if not parent:
        return {}

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for i in cluster.edges:
        source, target = graph.source[i], graph.target[i]
        if source in parent and target in parent:
            a, b = find(source), find(target)
            if a != b:
                parent[max(a, b, key=_order_node)] = min(a, b, key=_order_node)
    return {n: find(n) for n in parent}
