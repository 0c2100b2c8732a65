"""Chains of transmission (issue 21 item 2) through the interfaces: ``mpoxflow chains`` (text and JSON, one
cluster, as another reader, refusals) and the pages ``/chains`` and ``/chains/{cluster}`` in Danish, with the
graph inline as SVG (no script, no style attribute) whose nodes link to their objects."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from engine.bootstrap import open_engine
from tests.test_chains import population
from tests.test_cli import doc, ok, refused
from tests.test_units import tree


@pytest.fixture
def chains_db(cli_db: str) -> Iterator[str]:
    engine = open_engine(cli_db)
    try:
        population(engine)
    finally:
        engine.db.dispose()
    yield cli_db


def test_the_cli_lists_the_clusters_as_text_and_json(chains_db: str) -> None:
    assert doc(chains_db, "chains") == [
        {"id": "cluster-2", "cases": 4, "contacts": 5, "outside": 0, "first_onset": "2025-03-04",
         "last_onset": "2025-03-06", "active": True},
        {"id": "cluster-1", "cases": 1, "contacts": 1, "outside": 0, "first_onset": "2025-02-10",
         "last_onset": "2025-02-10", "active": False},
    ]
    assert ok(chains_db, "chains").stdout.splitlines() == [
        "id         status  cases  contacts  outside  first_onset  last_onset",
        "cluster-2  active  4      5         0        2025-03-04   2025-03-06",
        "cluster-1  ended   1      1         0        2025-02-10   2025-02-10",
    ]


def test_the_cli_shows_one_clusters_nodes_and_edges(chains_db: str) -> None:
    one = doc(chains_db, "chains", "cluster-1")
    assert one == {"id": "cluster-1", "cases": 1, "contacts": 1, "outside": 0, "first_onset": "2025-02-10",
                   "last_onset": "2025-02-10", "active": False,
                   "nodes": [{"id": "case-1", "kind": "case", "state": "deceased", "onset": "2025-02-10",
                              "onset_from": "onset"},
                             {"id": "contact-1", "kind": "contact", "state": "released", "case": "case-1"}],
                   "edges": [{"from": "case-1", "to": "contact-1", "link": "exposure", "on": "2025-02-11",
                              "kind": "sexual"}]}
    text = ok(chains_db, "chains", "cluster-2").stdout
    assert text.splitlines()[0] == "cluster-2  active  4 case(s), 5 contact(s)  onset 2025-03-04 to 2025-03-06"
    assert "contact-2  case-3     became           2025-03-06  -" in text
    assert "case-2     case-5     possible_source  2025-03-04  -" in text
    assert "case-4     case     suspected    2025-03-06  -" in text
    assert "REF" not in text and "person-" not in text  # ids of cases and contacts only


def test_the_cli_reads_as_another_user_and_refuses_what_is_no_cluster(chains_db: str) -> None:
    engine = open_engine(chains_db)
    try:
        tree(engine)
    finally:
        engine.db.dispose()
    assert doc(chains_db, "chains", "--as", "member:sj") == []  # Sjælland has none of these
    error = refused(chains_db, "chains", "cluster-x", code=2).stdout
    assert "'cluster-x' is not a cluster id" in error
    assert "cluster-3" in refused(chains_db, "chains", "cluster-3", code=4).stdout


def _no_inline_code(page: str) -> None:
    assert "<script>" not in page and not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert not re.search(r"\sstyle=", page) and "<style" not in page and " on" + "click=" not in page


def test_the_pages_list_the_clusters_and_draw_one_in_danish(chains_db: str, client_for) -> None:
    staff = client_for("staff:test")
    listing = staff.get("/chains")
    assert listing.status_code == 200
    page = listing.text
    _no_inline_code(page)
    assert '<a href="/chains">Smittekæder</a>' in page and "<h1>Smittekæder</h1>" in page
    rows = re.findall(r'<tr data-cluster="(cluster-\d+)" data-active="(yes|no)">(.*?)</tr>', page, re.S)
    assert [(c, a) for c, a, _ in rows] == [("cluster-2", "yes"), ("cluster-1", "no")]
    assert [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td>(.*?)</td>", rows[0][2])] == [
        "cluster-2", "aktiv", "4", "5", "0", "04.03.2025", "06.03.2025"]
    assert "afsluttet" in rows[1][2] and "10.02.2025" in rows[1][2]

    drawn = staff.get("/chains/cluster-2")
    assert drawn.status_code == 200
    page = drawn.text
    _no_inline_code(page)
    assert "<h1>Smittekæde cluster-2</h1>" in page
    svg = re.search(r'<div class="diagram-box" id="chain-graph">(<svg .*?</svg>)', page, re.S)
    assert svg is not None, "the graph is drawn inline"
    graph = svg[1]
    assert 'role="group"' in graph and 'aria-label="Smittekæde cluster-2"' in graph and "xlink" not in graph
    # Every case and contact is a node linking to its page, with its state in Danish words.
    for node in ("case-2", "case-3", "case-4", "case-5", "contact-2", "contact-3", "contact-4", "contact-5",
                 "contact-6"):
        assert re.search(rf'<g id="node-{node}" class="node \w+">.*?<a href="/objects/{node}"', graph, re.S), node
    assert re.search(r'<g id="node-case-2" class="node case">.*?>bekræftet</text>', graph, re.S)
    assert re.search(r'<g id="node-case-4" class="node case">.*?>mistænkt</text>', graph, re.S)
    assert re.search(r'<g id="node-contact-2" class="node contact">.*?<ellipse', graph, re.S)
    # The edges carry the exposure's date and kind in Danish, and what the other links are.
    edges = " ".join(re.findall(r'<g id="edge\d+" class="edge (?:exposure|became|source|possible_source)">.*?</g>',
                                graph, re.S))
    for text in ("05.03.2025", "husstandskontakt", "blev tilfælde", "smittekilde", "mulig smittekilde"):
        assert f">{text}</text>" in edges, text
    # The legend names every state a case can be drawn in, and the table lists the nodes and links.
    legend = re.search(r'<ul class="legend" id="legend".*?</ul>', page, re.S)[0]
    for word in ("mistænkt", "bekræftet", "isoleret", "helet", "afsluttet", "afkræftet", "død", "Kontakt"):
        assert word in legend, word
    assert '<tr data-node="case-3"><td><a href="/objects/case-3">case-3</a></td><td>Tilfælde</td>' in page
    assert re.search(r'<tr data-link="possible_source"><td>case-2</td><td>case-5</td><td>mulig smittekilde</td>'
                     r'<td>04.03.2025</td>', page)
    assert "REF" not in page and "person-" not in page.split('<div id="content"')[1]


def test_an_unknown_or_malformed_cluster_is_a_4xx_page(chains_db: str, client_for) -> None:
    staff = client_for("staff:test")
    assert staff.get("/chains/cluster-3").status_code == 404
    refused = staff.get("/chains/nonsense")
    assert refused.status_code == 422 and "er ikke et klynge-id" in refused.text


def test_without_graphviz_the_page_says_so_and_the_tables_are_whole(chains_db: str, client_for, monkeypatch) -> None:
    from entry.web import diagram

    monkeypatch.setattr(diagram, "DOT", "no-such-dot-program")
    page = client_for("staff:test").get("/chains/cluster-1").text
    assert 'id="diagram-missing"' in page and 'id="chain-graph"' not in page and 'data-layout="graphviz"' not in page
    assert '<tr data-node="contact-1"><td><a href="/objects/contact-1">contact-1</a></td><td>Kontakt</td>' in page
    assert re.search(r'<tr data-link="exposure"><td>case-1</td><td>contact-1</td><td>seksualpartner</td>'
                     r'<td>11.02.2025</td>', page)
