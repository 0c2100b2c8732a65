"""Readable on a phone and in print, and accessible (issue 16, items 7 and 8), in the system's Chromium.

Every page, as each role (staff, auditor, admin), at desktop (1280 px) and phone (390 px) width: no horizontal
scrolling and no critical or serious axe-core violation (axe-core as ``axe-playwright-python`` bundles it, run
inside the page). A case's and a contact's page printed: no navigation and no forms, the facts, deadlines and
timeline on A4. The state diagrams laid out by Graphviz, their edge labels not overlapping as the browser draws
them. A staff flow with the keyboard alone. Screenshots (and the printed PDFs) go to ``tests/artifacts/``.

The browser and the served application are ``tests/test_e2e_browser.py``'s fixtures.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from html import escape as _html
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect

from entry.web import diagram, i18n
from tests import test_e2e_browser as e2e
from tests.test_e2e_browser import ARTIFACTS, TIMEOUT_MS, Served, log_in
from workflows.registry import WORKFLOWS

# The browser and the served application: the end-to-end tests' fixtures, shared (found by these names).
playwright = e2e.playwright
browser = e2e.browser
served = e2e.served

WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
ROLES = {"staff": "staff:test", "auditor": "auditor:test", "admin": "admin:test"}
BLOCKING = ("critical", "serious")

# ---- the world the pages show ----------------------------------------------------------------------------------


def api(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body, headers={"X-CSRF-Token": client.csrf})
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def world(served: Served, client_for: Callable[..., Any]) -> Served:
    """``served``'s case confirmed, consenting, with a household contact, its written notification sent and the
    clade given since (changed since sent); a third person on a PrEP course; the clock two days on."""
    staff = client_for("staff:test")
    api(staff, f"/api/cases/{served.case}/confirm", {"pcr_on": "2025-03-03"})
    api(staff, f"/api/cases/{served.case}/consent", {"tracing": True})
    contact = api(staff, "/api/contacts", {"case": served.case, "person": served.contact_person,
                                           "exposed": "2025-03-02", "kind": "household"})
    assert contact["id"] == "contact-1"
    person = api(staff, "/api/persons", {"ref": "A11Y-COURSE"})
    course = api(staff, "/api/courses", {"person": person["id"], "indication": "prep",
                                         "criteria": ["msm_two_partners_12w"], "criterion_on": "2025-02-20"})
    assert course["id"] == "course-1"
    # The case's written notification (§3.1), sent; then the clade given: the case is changed since sent.
    document = api(staff, f"/api/cases/{served.case}/document", {})
    assert document["id"] == "document-1"
    api(staff, f"/api/cases/{served.case}/notify", {"channel": "written", "document": "document-1"})
    api(staff, f"/api/cases/{served.case}/clade", {"clade": "IIb"})
    # Two days on: tasks missed (their resolve forms on the worklist and the pages), days gone by in the calendar.
    moved = staff.post("/clock/advance", data={"amount": "2", "unit": "days", "csrf_token": staff.csrf})
    assert moved.status_code == 303, moved.text
    # An import of persons (issue 18): its report page and the history of imports.
    rows = "CPR;Fødselsdato\nA11Y-IMPORT-1;01.02.1990\n\nA11Y-IMPORT-2;31.02.1990\n".encode()
    imported = staff.post("/import", data={"csrf_token": staff.csrf, "what": "persons"},
                          files={"file": ("personer.csv", rows, "text/csv")})
    assert (imported.status_code, imported.headers.get("location")) == (303, "/import/import-1"), imported.text
    return served


def pages(served: Served) -> list[str]:
    """Every page a logged-in user reaches: the worklist, the lists, an object of each kind, the new-object forms,
    the calendar, the diagrams, the audit desk (filtered by Danish dates, its checks, an object as it was), the
    account and the users (an admin's; a refusal to the others), the import's form, an import's report and the
    history of imports, a person's own copy (GDPR art. 15), the read log (an auditor's and an admin's; a refusal to
    staff)."""
    return ["/worklist", "/list/cases", "/list/contacts", "/list/courses", "/list/persons",
            f"/objects/{served.case}", "/objects/contact-1", "/objects/course-1", f"/objects/{served.case_person}",
            "/documents/document-1", f"/persons/{served.case_person}/report",
            "/new/person_add", "/new/case_open", "/new/contact_add", "/new/vaccine_offer", "/calendar",
            *(f"/diagrams/{kind}" for kind in WORKFLOWS), "/audit", "/audit?verify=1", "/audit?replay=1",
            f"/audit?entity={served.case}&fra=03.03.2025&til=05.03.2025",
            f"/audit/as-of?object={served.case}&at=04.03.2025",
            "/account", "/users", "/import", "/import/import-1", "/imports", "/reads", "/reads?by=person"]


# ---- what is checked on each page ------------------------------------------------------------------------------


AXE = Axe()


def blocking_violations(page: Page) -> list[str]:
    """axe-core's critical and serious violations on the page as it is now: rule, impact, first nodes."""
    results = AXE.run(page, options={"resultTypes": ["violations"]})
    found = []
    for violation in results.response["violations"]:
        if violation["impact"] in BLOCKING:
            targets = "; ".join(" ".join(node["target"]) for node in violation["nodes"][:3])
            found.append(f"{violation['id']} ({violation['impact']}, {len(violation['nodes'])}x): {targets}")
    return found


def overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0: no horizontal scrolling)."""
    width: int = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    return width


WIDEST = """() => Array.from(document.querySelectorAll("body *"))
  .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
  .filter((el) => !Array.from(el.children).some((c) => c.getBoundingClientRect().right > window.innerWidth + 0.5))
  .slice(0, 3).map((el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.name ? `[name=${el.name}]` : ""))
  .join(", ")"""


def widest(page: Page) -> str:
    """The first elements (deepest) that reach past the window's right edge."""
    found: str = page.evaluate(WIDEST)
    return found


def slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"


@pytest.fixture
def new_context(browser: Browser, served: Served) -> Iterator[Callable[[str], BrowserContext]]:
    made: list[BrowserContext] = []

    def make(width: str) -> BrowserContext:
        w, h = WIDTHS[width]
        context = browser.new_context(base_url=served.base_url, viewport={"width": w, "height": h},
                                      locale="da-DK", timezone_id="Europe/Copenhagen")
        context.set_default_timeout(TIMEOUT_MS)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


#: Set (to anything) to keep a full-page screenshot of every page checked, for a person to look through; without it
#: a screenshot is kept of a page that has a problem only (a full-page PNG of every page, both widths, three roles
#: was a third of these tests' time).
ALL_SHOTS = bool(os.environ.get("MPOXFLOW_A11Y_SHOTS"))


def check(page: Page, label: str, problems: list[str], shots: str) -> None:
    """``page`` as loaded now: its width and axe; a full-page screenshot under ``shots`` when it has a problem (or
    ``MPOXFLOW_A11Y_SHOTS`` is set)."""
    found = len(problems)
    wider = overflow(page)
    if wider > 0:
        problems.append(f"{label}: {wider} px wider than the window (horizontal scrolling): {widest(page)}")
    for violation in blocking_violations(page):
        problems.append(f"{label}: axe {violation}")
    if ALL_SHOTS or len(problems) > found:
        page.screenshot(path=ARTIFACTS / f"{shots}.png", full_page=True)


# ---- every page, each role, both widths ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("role", list(ROLES))
def test_every_page_fits_a_phone_and_has_no_serious_axe_violation(
        role: str, world: Served, new_context: Callable[[str], BrowserContext]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob(f"a11y-{role}-*.png"):
        old.unlink()
    problems: list[str] = []
    checked = 0
    for width in WIDTHS:
        page = new_context(width).new_page()
        page.goto("/login")
        check(page, f"{width} /login", problems, f"a11y-{role}-{width}-00-login")
        log_in(page, ROLES[role])
        for n, path in enumerate(pages(world), start=1):
            response = page.goto(path)
            assert response is not None
            refused = (path == "/users" and role != "admin") or (path.startswith("/reads") and role == "staff")
            expected = 403 if refused else 200
            assert response.status == expected, f"{path} as {role}: {response.status}"
            check(page, f"{width} {path}", problems, f"a11y-{role}-{width}-{n:02d}-{slug(path)}")
            checked += 1
        # An audit entry's detail (its data, changes, timers and hashes): the case's confirmation, from the desk.
        page.goto(f"/audit?entity={world.case}&trigger=confirm")
        page.locator("a.entry-link").first.click()
        expect(page).to_have_url(re.compile(r"/audit/entries/\d+$"))
        check(page, f"{width} an audit entry", problems, f"a11y-{role}-{width}-98-audit-entry")
        if role != "auditor":  # a form sent with a field missing: its error tied to the field
            page.goto("/new/person_add")
            page.locator("form#person_add [required]").evaluate_all("els => els.forEach(e => e.required = false)")
            page.locator("form#person_add button[type=submit]").click()
            field = page.locator("form#person_add [name=ref]")
            expect(field).to_have_attribute("aria-invalid", "true")
            described = (field.get_attribute("aria-describedby") or "").split()
            assert "person_add-ref-error" in described, described
            expect(page.locator("#person_add-ref-error")).to_be_visible()
            check(page, f"{width} a refused form", problems, f"a11y-{role}-{width}-99-refused-form")
    assert checked == 2 * len(pages(world))
    assert not problems, "\n".join(problems)


# ---- print -----------------------------------------------------------------------------------------------------


A4_PRINTABLE = 718  # CSS pixels across A4 less 10 mm margins (190 mm at 96 px per inch)


@pytest.mark.slow
def test_a_case_and_a_contact_print_without_navigation_or_forms_on_a4(
        world: Served, new_context: Callable[[str], BrowserContext]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_context("desktop").new_page()
    log_in(page, "staff:test")
    for path in (f"/objects/{world.case}", "/objects/contact-1"):
        page.goto(path)
        assert page.locator("main form").count() > 0  # on screen, the actions
        expect(page.locator("header nav")).to_be_visible()
        page.emulate_media(media="print")
        page.set_viewport_size({"width": A4_PRINTABLE, "height": 1000})
        expect(page.locator("header")).to_be_hidden()
        expect(page.locator("header nav")).to_be_hidden()
        expect(page.locator(".skip")).to_be_hidden()
        for form in page.locator("form").all():
            expect(form).to_be_hidden()
        assert page.locator("button:visible").count() == 0
        for part in ("#facts", "#timers", "#timeline"):
            expect(page.locator(part)).to_be_visible()
        expect(page.locator("#timeline")).to_contain_text("staff:test")
        assert overflow(page) <= 0, f"{path} printed is wider than A4: {widest(page)}"
        page.pdf(path=str(ARTIFACTS / f"print-{slug(path)}.pdf"), format="A4", print_background=True)
        page.screenshot(path=ARTIFACTS / f"print-{slug(path)}.png", full_page=True)
        page.emulate_media(media="screen")
        page.set_viewport_size({"width": 1280, "height": 900})
        expect(page.locator("header nav")).to_be_visible()


def test_a_persons_report_prints_each_section_on_a_page_of_its_own(
        world: Served, new_context: Callable[[str], BrowserContext]) -> None:
    """A person's own copy (GDPR art. 15, issue 19) printed: no navigation (neither the site's nor the report's
    links), each of its six sections from a new A4 page."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_context("desktop").new_page()
    log_in(page, "staff:test")
    page.goto(f"/persons/{world.case_person}/report")
    expect(page.locator("nav.report-links")).to_be_visible()
    page.emulate_media(media="print")
    page.set_viewport_size({"width": A4_PRINTABLE, "height": 1000})
    for hidden in ("header", "header nav", "nav.report-links", ".skip"):
        expect(page.locator(hidden)).to_be_hidden()
    sections = page.locator("section.part")
    assert sections.count() == 6
    breaks = sections.evaluate_all("els => els.map(e => getComputedStyle(e).breakBefore)")
    assert breaks == ["auto"] + ["page"] * 5, breaks
    expect(page.locator("#log")).to_contain_text("staff:test")
    assert overflow(page) <= 0, f"the report printed is wider than A4: {widest(page)}"
    pdf = page.pdf(path=str(ARTIFACTS / "print-person-report.pdf"), format="A4", print_background=True)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 6


# ---- the state diagrams ----------------------------------------------------------------------------------------


BOXES = """() => {
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const union = (els) => els.map(box).reduce((a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]),
                                                        Math.max(a[2], b[2]), Math.max(a[3], b[3])]);
  const svg = document.querySelector("svg.diagram");
  return {
    layout: svg.dataset.layout,
    labels: Array.from(svg.querySelectorAll("g.edge")).filter((g) => g.querySelector("text"))
      .map((g) => ({edge: g.querySelector("title").textContent, box: union(Array.from(g.querySelectorAll("text"))),
                    text: Array.from(g.querySelectorAll("text")).map((t) => t.textContent)})),
    states: Array.from(svg.querySelectorAll("g.node")).map((g) => ({state: g.id.replace(/^state_/, ""),
                                                                    box: box(g.querySelector("path, polygon"))})),
  };
}"""


def intersect(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(WORKFLOWS))
def test_a_state_diagram_is_laid_out_by_graphviz_with_no_label_over_another_or_over_a_state(
        kind: str, world: Served, new_context: Callable[[str], BrowserContext]) -> None:
    page = new_context("desktop").new_page()
    log_in(page, "staff:test")
    page.goto(f"/diagrams/{kind}")
    drawn = page.evaluate(BOXES)
    assert drawn["layout"] == "graphviz"
    definition = WORKFLOWS[kind]
    assert sorted(s["state"] for s in drawn["states"]) == sorted(["new", *definition.states])
    labels = drawn["labels"]
    assert labels, "no labelled transition drawn"
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            assert not intersect(a["box"], b["box"]), f"{a['edge']} {a['text']} overlaps {b['edge']} {b['text']}"
        for state in drawn["states"]:
            assert not intersect(a["box"], state["box"]), f"{a['edge']} {a['text']} lies on {state['state']}"
    page.screenshot(path=ARTIFACTS / f"diagram-{kind}.png", full_page=True)


def test_each_state_is_one_node_with_its_count_and_each_moving_trigger_labels_an_edge() -> None:
    definition = WORKFLOWS["case"]
    counts = {"suspected": 3, "confirmed": 1}
    i18n.activate("da")  # the counts in the page's language: Danish by default
    danish = diagram.svg(definition, counts)
    assert re.search(r'<g id="state_suspected".*?3 objekter</text>', danish, re.S)
    assert re.search(r'<g id="state_confirmed".*?1 objekt</text>', danish, re.S)
    i18n.activate("en")
    try:
        drawn = diagram.svg(definition, counts)
        shown = {spec.trigger: i18n.trigger(spec.trigger) for spec in definition.transitions}
    finally:
        i18n.activate(None)
    assert drawn.startswith("<svg ") and 'data-layout="graphviz"' in drawn and 'role="img"' in drawn
    assert "<script" not in drawn and "style=" not in drawn and "<!--" not in drawn and "<?xml" not in drawn
    for state in ["new", *definition.states]:
        assert drawn.count(f'<g id="state_{state}" class="node state">') == 1, state
    assert re.search(r'<g id="state_suspected".*?3 objects</text>', drawn, re.S)
    assert re.search(r'<g id="state_confirmed".*?1 object</text>', drawn, re.S)
    assert re.search(r'<g id="state_healed".*?0 objects</text>', drawn, re.S)
    edge_text = " ".join(re.findall(r'<g id="edge\d+" class="edge transition">.*?</g>', drawn, re.S))
    for spec in definition.transitions:
        if spec.dest is not None:
            assert f">{_html(shown[spec.trigger])} " in edge_text, spec.trigger  # by its English name
    assert definition.mermaid().startswith("---")  # the Mermaid text stays as it was


def test_without_graphviz_the_diagram_page_says_so_and_still_counts(
        client_for: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagram, "DOT", "mpoxflow-no-such-dot")
    staff = client_for("staff:test")
    response = staff.get("/diagrams/case")
    assert response.status_code == 200
    assert 'id="diagram-missing"' in response.text and "apt-get install graphviz" in response.text
    assert "<svg" not in response.text
    assert '<td data-state="suspected">0</td>' in response.text and "stateDiagram" in response.text


# ---- the keyboard alone ----------------------------------------------------------------------------------------


def tab_to(page: Page, selector: str, limit: int = 80) -> None:
    """Press Tab until the focused element matches ``selector``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} is not reached with Tab within {limit} presses")


@pytest.mark.slow
def test_staff_log_in_open_a_case_and_confirm_it_with_the_keyboard_alone(
        served: Served, new_context: Callable[[str], BrowserContext]) -> None:
    page = new_context("desktop").new_page()
    page.goto("/login")
    page.keyboard.press("Tab")  # the first stop: the skip link, which leads to the content
    assert page.evaluate("document.activeElement.matches('a.skip')")
    expect(page.locator("a.skip")).to_be_in_viewport()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "content"
    tab_to(page, "input[name=name]")
    page.keyboard.type("staff:test")
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/worklist$"))

    tab_to(page, 'nav a[href="/list/cases"]')
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/list/cases$"))
    # The state filter acts on its button, never on an arrow key.
    tab_to(page, "select[name=state]")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(page).to_have_url(re.compile(r"/list/cases$"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.matches('form:has(#state-filter-state) button')")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/list/cases\?state=confirmed$"))
    expect(page.locator("#listing")).not_to_contain_text(served.case)
    page.goto("/list/cases")

    tab_to(page, f'#listing a[href="/objects/{served.case}"]')
    page.keyboard.press("Enter")
    expect(page.locator("#state")).to_have_text("mistænkt")  # the pages in Danish (the browser's da-DK)
    tab_to(page, "form#confirm input[name=pcr_on]")
    page.keyboard.type("03.03.2025")  # a date field is text: dd.mm.åååå, typed
    expect(page.locator("form#confirm input[name=pcr_on]")).to_have_value("03.03.2025")
    tab_to(page, "form#confirm button[type=submit]")
    page.keyboard.press("Space")
    expect(page.locator("#state")).to_have_text("bekræftet")
    expect(page.locator("[role=status]")).to_contain_text("bekræftet")
    expect(page.locator("#timeline")).to_contain_text("mistænkt → bekræftet")
    expect(page.locator("#facts tr", has_text="Dato for positiv PCR")).to_contain_text("03.03.2025")
    page.screenshot(path=ARTIFACTS / "keyboard-case-confirmed.png", full_page=True)
