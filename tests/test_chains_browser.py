"""A chain of transmission in the system's Chromium (issue 21 item 2): the graph of a cluster is drawn (inline
SVG, laid out by Graphviz), and a node links to its object's page. The fixtures are the other browser tests'."""

from __future__ import annotations

import re
from datetime import date

import pytest
from playwright.sync_api import Page, expect

from engine.bootstrap import open_engine
from tests import test_e2e_browser as e2e
from tests.test_accessibility import blocking_violations
from tests.test_e2e_browser import ARTIFACTS, Served, log_in

playwright = e2e.playwright
browser = e2e.browser
served = e2e.served
context = e2e.context
page = e2e.page

pytestmark = pytest.mark.slow


def test_a_chain_graph_is_drawn_and_its_nodes_link_to_their_objects(page: Page, served: Served, cli_db: str) -> None:
    engine = open_engine(cli_db)
    try:
        engine.apply(served.case, "confirm", data={"pcr_on": date(2025, 3, 2)}, actor="staff:test")
        engine.apply(served.case, "consent", data={"tracing": True}, actor="staff:test")
        contact = engine.open("contact", "add", person=served.contact_person, actor="staff:test", data={
            "case": served.case, "exposed": date(2025, 3, 2), "kind": "household"})["id"]
    finally:
        engine.db.dispose()
    log_in(page, "staff:test")
    page.get_by_role("navigation").get_by_role("link", name="Chains of transmission").click()
    expect(page.locator('#clusters tr[data-cluster="cluster-1"]')).to_contain_text("active")
    page.get_by_role("link", name="cluster-1", exact=True).click()
    expect(page).to_have_url(re.compile(r"/chains/cluster-1$"))
    graph = page.locator('#chain-graph svg[data-layout="graphviz"]')
    expect(graph).to_be_visible()
    expect(page.locator(f"#chain-graph #node-{served.case}")).to_contain_text("confirmed")
    expect(page.locator("#chain-graph g.edge.exposure")).to_contain_text("02.03.2025")
    assert graph.bounding_box()["width"] > 100  # drawn, not an empty box
    assert blocking_violations(page) == []  # axe-core: the drawing's links and the legend pass
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "chain-cluster-1.png", full_page=True)
    page.locator(f'#chain-graph a[href="/objects/{contact}"]').click()
    expect(page).to_have_url(re.compile(rf"/objects/{contact}$"))
    expect(page.locator("#state")).to_have_text("exposed")
