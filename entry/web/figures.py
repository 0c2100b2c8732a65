"""The overview's figures drawn with matplotlib on the server (issue 21 item 1): SVG for the page, PNG, SVG and
PDF files for the report, with the words in the current language (``entry.web.i18n``: Danish first).

matplotlib is imported inside the functions that draw (Agg, no display), never when this module is imported: the
CLI's light commands import nothing of it. The SVG inlined in the page has no script and no ``style`` (neither
element nor attribute: matplotlib's style attributes become SVG presentation attributes, its ``<style>`` rule the
root's inherited ``stroke-linejoin``/``stroke-linecap``), and its ids are prefixed with the figure's name so that
several figures share one page: the pages' Content-Security-Policy lets it through.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from engine.overview import CURVE_CLADES, CURVE_STATES, Figure, csv_text
from entry.web import i18n
from entry.web.i18n import N_
from workflows.calendar import to_local

#: Each figure's title (msgids).
TITLES = {
    "curve": N_("Epidemic curve: cases by week of symptom onset, by state"),
    "curve_clade": N_("Epidemic curve: cases by week of symptom onset, by clade"),
    "monitoring": N_("Contacts under monitoring per day, the coming 3 weeks"),
    "pep": N_("PEP windows closing in the next 72 hours"),
    "doses": N_("Doses 2 due per day, the coming 8 weeks"),
    "missed": N_("Deadlines missed per week"),
}
#: The tables' and the CSV files' column names (msgids); states and clades are named as the pages name them.
HEADERS = {
    "week": N_("Week"), "from": N_("Monday"), "total": N_("Total"), "date": N_("Date"),
    "contacts": N_("Contacts under monitoring"), "object": N_("Object"), "kind": N_("Kind"),
    "closes_at": N_("Window closes"), "last_day": N_("Last day"), "timer": N_("Timer"),
    "doses_due": N_("Doses 2 due"), "missed": N_("Missed"), "unresolved": N_("Not resolved yet"),
    "unknown": N_("clade not known"),
}
#: The colours of the states (the suspected ones also hatched: they are marked), clades and series.
STATE_COLOURS = {"suspected": "#f2c14e", "confirmed": "#d1495b", "isolated": "#8f2d56", "healed": "#66a182",
                 "closed": "#7d8597", "deceased": "#2e2e2e"}
CLADE_COLOURS = {"I": "#4f6d7a", "Ia": "#2a9d8f", "Ib": "#8ab17d", "II": "#e9c46a", "IIa": "#f4a261",
                 "IIb": "#e76f51", "unknown": "#bdbdbd"}
FORMATS = ("png", "svg", "pdf")
#: The kinds of object in the PEP table, as the page names them (msgids; the CSV keeps the ids' own words).
KINDS = {"contact": N_("close contact"), "course": N_("vaccination course")}


def header(column: str) -> str:
    """A column's name in the current language."""
    if column in CURVE_STATES:
        return i18n.state(column)
    if column in HEADERS:
        return i18n.gettext(HEADERS[column])
    return column  # a clade's own name


def headers(figure: Figure) -> dict[str, str]:
    return {c: header(c) for c in figure.columns}


def csv_of(figure: Figure, lang: str | None = None) -> str:
    """The figure's CSV with its column names in ``lang`` (the current language when None)."""
    if lang is not None:
        i18n.activate(lang)
    return csv_text(figure, headers(figure))


def _cell(column: str, value: Any) -> Any:
    """A value as the page's table shows it: kinds in words, days and instants the Danish way."""
    if column == "kind":
        return i18n.gettext(KINDS[value])
    if column in ("date", "from", "last_day"):
        return date.fromisoformat(value).strftime("%d.%m.%Y")
    if column == "closes_at":
        return to_local(datetime.fromisoformat(value)).strftime("%d.%m.%Y kl. %H.%M")
    return value


def table(figure: Figure, limit: int | None = None) -> list[list[Any]]:
    """The figure's rows (the first ``limit``) as the page's table shows them: a value per column, in order."""
    return [[_cell(c, row.get(c)) for c in figure.columns] for row in figure.rows[:limit]]


# ---- drawing -------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "mpoxflow", "font.family": "DejaVu Sans",
                         "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _short(day: str) -> str:
    """``24.03``: a Danish day without its year."""
    parsed = date.fromisoformat(day)
    return f"{parsed.day:02d}.{parsed.month:02d}"


def _ticks(ax: Any, labels: list[str], most: int = 16) -> None:
    step = max(1, -(-len(labels) // most))
    ax.set_xticks(range(0, len(labels), step))
    ax.set_xticklabels(labels[::step], rotation=45, ha="right")


def _bars(ax: Any, series: list[tuple[list[int], str, str | None, str | None]]) -> list[Any]:
    """Columns side by side, stacked in ``series`` order ((heights, colour, label, hatch) each): one step patch
    per series (``stairs``), not one rectangle per column, so that drawing costs the same for 8 weeks as for 56
    days. Returns the legend's handles (a swatch per series drawn that has a label)."""
    from matplotlib.patches import Patch

    handles: list[Any] = []
    if not series or not series[0][0]:
        return handles
    edges = [i - 0.5 for i in range(len(series[0][0]) + 1)]
    bottom = [0] * len(series[0][0])
    for heights, colour, label, hatch in series:
        if not any(heights):
            continue
        top = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.stairs(top, edges, baseline=bottom, fill=True, color=colour, hatch=hatch,
                  edgecolor="#7a5c00" if hatch else None, linewidth=0.5 if hatch else 0)
        if label:
            handles.append(Patch(facecolor=colour, hatch=hatch, edgecolor="#7a5c00" if hatch else colour,
                                 label=label))
        bottom = top
    ax.set_xlim(edges[0], edges[-1])
    return handles


def _stacked(ax: Any, figure: Figure, series: Iterable[str], colours: dict[str, str], hatched: str | None) -> None:
    handles = _bars(ax, [([row[name] for row in figure.rows], colours[name], header(name),
                          "///" if name == hatched else None) for name in series])
    _ticks(ax, [row["week"] for row in figure.rows])
    ax.set_xlabel(i18n.gettext("ISO week of symptom onset (no onset: PCR sample date)"))
    ax.set_ylabel(i18n.gettext("Cases"))
    if any(row["total"] for row in figure.rows):
        ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _draw(plt: Any, figure: Figure) -> Any:
    drawn, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    if figure.name == "curve":
        _stacked(ax, figure, CURVE_STATES, STATE_COLOURS, hatched="suspected")
    elif figure.name == "curve_clade":
        _stacked(ax, figure, CURVE_CLADES, CLADE_COLOURS, hatched=None)
    elif figure.name in ("monitoring", "doses"):
        key = "contacts" if figure.name == "monitoring" else "doses_due"
        _bars(ax, [([row[key] for row in figure.rows], "#3d5a80" if key == "contacts" else "#2a9d8f", None,
                    None)])
        _ticks(ax, [_short(row["date"]) for row in figure.rows], most=21 if key == "contacts" else 28)
        ax.set_xlabel(i18n.gettext("Day"))
        ax.set_ylabel(header(key))
    elif figure.name == "pep":
        closing = figure.meta["closing"]  # (instant, contacts, courses) per closing instant: a few midnights
        labels = [to_local(datetime.fromisoformat(at)).strftime("%d.%m kl. %H.%M") for at, _, _ in closing]
        contacts = [c for _, c, _ in closing]
        courses = [k for _, _, k in closing]
        handles = _bars(ax, [(contacts, "#ee6c4d", i18n.gettext("contacts"), None),
                             (courses, "#3d5a80", i18n.gettext("courses"), None)])
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_xlabel(i18n.gettext("Window closes (Danish time)"))
        ax.set_ylabel(i18n.gettext("PEP windows"))
        if labels:
            ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            ax.text(0.5, 0.5, i18n.gettext("No PEP window closes in the next 72 hours."), ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_xticks([])
    elif figure.name == "missed":
        # The missed ones resolved since, and on them those not resolved yet.
        handles = _bars(ax, [([row["unresolved"] for row in figure.rows], "#d1495b", header("unresolved"), None),
                             ([row["missed"] - row["unresolved"] for row in figure.rows], "#adb5bd",
                              i18n.gettext("Resolved since"), None)])
        _ticks(ax, [row["week"] for row in figure.rows])
        ax.set_xlabel(i18n.gettext("ISO week of the deadline"))
        ax.set_ylabel(i18n.gettext("Deadlines missed"))
        if figure.rows:
            ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if not figure.rows and figure.name != "pep":
        ax.text(0.5, 0.5, i18n.gettext("Nothing to show."), ha="center", va="center", transform=ax.transAxes)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(bottom=0)
    ax.set_title(i18n.gettext(TITLES[figure.name]), loc="left", fontsize=10)
    drawn.subplots_adjust(left=0.08, right=0.8, top=0.9, bottom=0.24)  # the legend to the right
    return drawn


def forget_drawings() -> None:
    """Forget the SVG drawn for the page (the benchmark's cold drawing)."""
    _inline.cache_clear()


def render(figure: Figure, fmt: str) -> bytes:
    """The figure as a PNG, SVG or PDF file."""
    plt = _pyplot()
    drawn = _draw(plt, figure)
    try:
        out = io.BytesIO()
        drawn.savefig(out, format=fmt, metadata=_metadata(fmt))
        return out.getvalue()
    finally:
        plt.close(drawn)


def _metadata(fmt: str) -> dict[str, Any] | None:
    """No creation date in the files (the same numbers give the same file)."""
    if fmt == "svg":
        return {"Date": None}
    if fmt == "pdf":
        return {"CreationDate": None}
    return None


def pdf(figures: Iterable[Figure]) -> bytes:
    """Every figure, one page each, in one PDF (matplotlib's ``PdfPages``)."""
    plt = _pyplot()
    from matplotlib.backends.backend_pdf import PdfPages

    out = io.BytesIO()
    with PdfPages(out, metadata={"Title": "mpoxflow", "CreationDate": None}) as pages:
        for figure in figures:
            drawn = _draw(plt, figure)
            try:
                pages.savefig(drawn)
            finally:
                plt.close(drawn)
    return out.getvalue()


# ---- the SVG the page inlines --------------------------------------------------------------------------------

_STYLE_ELEMENT = re.compile(r"<style[^>]*>.*?</style>", re.S)
_STYLE_ATTRIBUTE = re.compile(r'\sstyle="([^"]*)"')
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.S)
_ID = re.compile(r'\bid="([^"]+)"')
_PROPERTY = re.compile(r"^[a-z-]+$")


def _attributes(match: re.Match[str]) -> str:
    """``style="fill: #fff; stroke: none"`` as presentation attributes ``fill="#fff" stroke="none"``."""
    out = []
    for declaration in match[1].split(";"):
        name, _, value = declaration.partition(":")
        name, value = name.strip(), value.strip().replace('"', "'")
        if name and _PROPERTY.match(name) and value:
            out.append(f' {name}="{value}"')
    return "".join(out)


def inline_svg(figure: Figure) -> str:
    """The figure as SVG to put inside the page: no script, no style element or attribute, its ids its own.
    Drawn once per language and numbers (``drawn``): a page shown again with the same numbers is not drawn
    again."""
    if figure.name == "pep":  # drawn from its counts per closing instant (its rows may be the first few only)
        values: tuple[tuple[Any, ...], ...] = ()
        closing = tuple(figure.meta["closing"])
    else:
        values, closing = tuple(tuple(row.get(c) for c in figure.columns) for row in figure.rows), ()
    return _inline(figure.name, figure.columns, values, closing, i18n.current())


@functools.lru_cache(maxsize=64)
def _inline(name: str, columns: tuple[str, ...], values: tuple[tuple[Any, ...], ...],
            closing: tuple[tuple[str, int, int], ...], language: str) -> str:
    figure = Figure(name, columns, [dict(zip(columns, row, strict=True)) for row in values],
                    {"closing": list(closing)})
    text = render(figure, "svg").decode()
    text = _METADATA.sub("", _STYLE_ELEMENT.sub("", _PROLOG.sub("", text, count=1)))
    text = _STYLE_ATTRIBUTE.sub(_attributes, text)
    prefix = f"fig-{figure.name}-"
    ids = set(_ID.findall(text))
    text = _ID.sub(lambda m: f'id="{prefix}{m[1]}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m[1]})" if m[1] in ids else m[0], text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m[1]}"' if m[1] in ids else m[0], text)
    # The page's width, its own proportions (the viewBox): no horizontal scrolling on a phone.
    text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 width="100%"', text, count=1)
    title = i18n.gettext(TITLES[figure.name]).replace('"', "&quot;")
    return text.replace("<svg ", f'<svg role="img" aria-label="{title}" class="figure" stroke-linejoin="round" '
                        'stroke-linecap="butt" ', 1).strip()
